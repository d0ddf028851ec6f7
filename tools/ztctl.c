/*
 * ztctl.c - the security team's command line for ztproxy: dispatch and help.
 *
 *   ztctl policy lint FILE       validate a rules file
 *   ztctl policy test FILE TESTS run a tests file of request contexts
 *   ztctl policy explain FILE .. decide one request and say why
 *   ztctl audit verify FILE      check the audit log's hash chain
 *
 * docs/ztctl.md is the manual; the help texts below are its short form.
 */
#include <stdio.h>
#include <string.h>

#include "ztctl.h"

#define CONN_HELP                                                                                  \
    "\n"                                                                                           \
    "Connection (flag, else environment, else --config FILE / ~/.config/ztctl/config.json):\n"     \
    "  --admin URL         admin listener (ZTCTL_ADMIN; default https://127.0.0.1:9443)\n"         \
    "  --token-file FILE   file holding an admin token, mode 0600 (ZTCTL_TOKEN_FILE)\n"            \
    "  --cert FILE --key FILE   admin client certificate (ZTCTL_CERT, ZTCTL_KEY)\n"                \
    "  --cacert FILE       CA of the proxy's server certificate (ZTCTL_CACERT)\n"                  \
    "  --json              print the API's answer as JSON\n"                                       \
    "Exit: 0 ok, 1 refused, invalid or not found, 2 usage error, 3 cannot connect\n"               \
    "(refused, TLS verification, credentials: 401/403, unusable token file).\n"

struct help {
    const char *cmd;
    const char *text;
};

static const struct help helps[] = {
    {"policy lint",
     "usage: ztctl policy lint FILE [--routes a,b,c] [--tiers t1,t2,...] [--directory DIR.json]\n"
     "\n"
     "Validate and compile a rules file exactly as the proxy does. Prints\n"
     "\"ok: N rules, version V\", or the error (file, rule id, JSON path) on stderr.\n"
     "\n"
     "  --routes a,b,c      route names of the proxy config: a rule naming another\n"
     "                      route is an error (default: any route name)\n"
     "  --tiers t1,t2,...   device tiers, lowest first\n"
     "                      (default: untrusted,identified,basic,trusted,high)\n"
     "  --directory FILE    group directory: every group the rules name must exist\n"
     "\n"
     "Exit: 0 valid, 1 invalid (or a file cannot be read), 2 usage error.\n"},
    {"policy test", "usage: ztctl policy test FILE TESTS [-v] [--routes ...] [--tiers ...] "
                    "[--directory DIR.json]\n"
                    "\n"
                    "Run the request contexts in the JSON file TESTS against the rules in FILE\n"
                    "and compare each decision with the expected effect (and rule). Prints every\n"
                    "failure with the decision's reasons, then \"N passed, M failed\".\n"
                    "Groups come from --directory when given, else from each test's \"groups\".\n"
                    "\n"
                    "  -v, --verbose       also print the tests that pass\n"
                    "  --routes, --tiers, --directory   as for 'ztctl policy lint'\n"
                    "\n"
                    "Exit: 0 all passed, 1 a test failed or a file is invalid, 2 usage error.\n"},
    {"policy explain",
     "usage: ztctl policy explain FILE [options] [--json]\n"
     "\n"
     "Decide one request and print the decision, its reasons and, for every rule\n"
     "on the route, each condition's outcome.\n"
     "\n"
     "  --route R           route name (default: none: unscoped rules only)\n"
     "  --user U            subject of the logged-in person; an email also sets --email\n"
     "  --email E           email of the person\n"
     "  --no-identity       nobody is logged in\n"
     "  --group G           a group of the person (repeatable; not with --directory)\n"
     "  --tier T            device tier          --score N      device score 0..100\n"
     "  --attr NAME=VALUE   device attribute (repeatable)\n"
     "  --owner O           registered owner of the device\n"
     "  --stale             the device trust data is stale\n"
     "  --ip A              client address       --country CC   GeoIP country or unknown\n"
     "  --at TIME           RFC 3339 time with offset, e.g. 2026-03-29T01:30:00+01:00\n"
     "                      (default: now)\n"
     "  --method M          HTTP method          --path P       request path\n"
     "  --auth-age D        age of the login (30s, 15m, 1h30m, 2d)\n"
     "  --auth-time TIME    time of the login (RFC 3339)\n"
     "  --mfa               the login used MFA\n"
     "  --json              print the explanation as JSON\n"
     "  --routes, --tiers, --directory   as for 'ztctl policy lint'\n"
     "\n"
     "Exit: 0 explained (whatever the decision), 1 invalid rules, 2 usage error.\n"},
    {"audit verify", "usage: ztctl audit verify FILE\n"
                     "\n"
                     "Check the hash chain of a tamper-evident audit log: an edited, removed or\n"
                     "reordered line is reported with its line number.\n"
                     "\n"
                     "Exit: 0 intact, 1 tampered or unreadable, 2 usage error.\n"},
    {"rules get", "usage: ztctl rules get [--version N] [-o FILE] [connection]\n"
                  "\n"
                  "Print the live rules document (or version N of the history); the\n"
                  "version, author, time and comment go to stderr. -o writes the document\n"
                  "to FILE instead.\n" CONN_HELP},
    {"rules validate", "usage: ztctl rules validate FILE [connection]\n"
                       "\n"
                       "Validate FILE on the proxy against its live routes, tiers and directory,\n"
                       "without applying it. Prints every error with its JSON path and rule;\n"
                       "exit 1 when the document is invalid.\n" CONN_HELP},
    {"rules put", "usage: ztctl rules put FILE -m COMMENT [--base-version N] [connection]\n"
                  "\n"
                  "Apply FILE as the live rules (live on the next request, kept in the\n"
                  "history with COMMENT). An invalid document changes nothing. With\n"
                  "--base-version, refused if the live version is no longer N.\n" CONN_HELP},
    {"rules history", "usage: ztctl rules history [connection]\n"
                      "\n"
                      "List the rules versions, newest first: version, time, author, number\n"
                      "of rules, comment.\n" CONN_HELP},
    {"rules diff", "usage: ztctl rules diff FROM TO [connection]\n"
                   "\n"
                   "Unified diff between two versions of the history, then the rule ids\n"
                   "added, removed and changed.\n" CONN_HELP},
    {"rules rollback", "usage: ztctl rules rollback VERSION [-m COMMENT] [connection]\n"
                       "\n"
                       "Apply version VERSION's document again, as a new version.\n" CONN_HELP},
    {"explain",
     "usage: ztctl explain [--rules FILE] --route R [--user U] [--device D] [options] "
     "[connection]\n"
     "\n"
     "Dry-run one request on the running proxy (its live device trust, directory\n"
     "and GeoIP) and print the decision, its reasons and every rule's conditions.\n"
     "\n"
     "  --rules FILE        decide with this proposed document instead of the live rules\n"
     "  --route R           route name             --user U      subject or e-mail\n"
     "  --email E           e-mail of the person   --device D    device id\n"
     "  --tier T            override the device tier   --score N   override the score\n"
     "  --group G           override the groups (repeatable)\n"
     "  --ip A              client address         --country CC  country or unknown\n"
     "  --time T            RFC 3339 time (default now)\n"
     "  --method M          HTTP method (GET)      --path P      request path (/)\n"
     "  --mfa               the login used MFA     --auth-age D  age of the login "
     "(15m)\n" CONN_HELP},
    {"whatif", "usage: ztctl whatif FILE [connection]\n"
               "\n"
               "Replay the recent decisions against the proposed rules in FILE and list\n"
               "who would gain and who would lose access, per route. Nothing changes.\n" CONN_HELP},
    {"devices list",
     "usage: ztctl devices list [--tier T] [--status S] [--owner O] [--stale] "
     "[--limit N] [connection]\n"
     "\n"
     "List devices: id, owner, status, tier, score, posture age, failing checks.\n"
     "--stale: only devices whose posture or inventory is stale or missing.\n" CONN_HELP},
    {"devices show", "usage: ztctl devices show ID [connection]\n"
                     "\n"
                     "One device: status, tier and score, every check with its points and\n"
                     "reason, posture and inventory state.\n" CONN_HELP},
    {"devices set-status",
     "usage: ztctl devices set-status ID lost|active|stolen|retired|clear -m COMMENT [connection]\n"
     "\n"
     "Set (or clear) a status override: persisted, effective on the device's next\n"
     "request.\n" CONN_HELP},
    {"sessions revoke", "usage: ztctl sessions revoke --user SUB | --session HEX [-m COMMENT] "
                        "[connection]\n"
                        "\n"
                        "Revoke every session of a subject issued until now, or one session\n"
                        "(32 hex digits). Effective on the next request.\n" CONN_HELP},
    {"decisions", "usage: ztctl decisions [--user U] [--device D] [--route R] [--effect E] "
                  "[--limit N] [connection]\n"
                  "\n"
                  "The most recent decisions, newest first, with the reasons of every\n"
                  "refusal. --effect: allow, deny or step_up; --limit 1..1000 (100).\n" CONN_HELP},
    {NULL, NULL},
};

static const char overview[] =
    "usage: ztctl COMMAND [ARGS]\n"
    "\n"
    "The security team's command line for ztproxy.\n"
    "\n"
    "Commands:\n"
    "  policy lint FILE          validate a rules file\n"
    "  policy test FILE TESTS    run a tests file of request contexts against the rules\n"
    "  policy explain FILE ...   decide one request and explain every rule\n"
    "  audit verify FILE         check the hash chain of an audit log\n"
    "\n"
    "Talking to a running proxy (its admin API):\n"
    "  rules get|validate|put|history|diff|rollback   the live rules and their history\n"
    "  explain ...               dry-run one request against the live or proposed rules\n"
    "  whatif FILE               who would gain or lose access with FILE's rules\n"
    "  devices list|show|set-status   devices, their trust and status overrides\n"
    "  sessions revoke ...       revoke a user's or one session\n"
    "  decisions ...             the most recent decisions\n"
    "  help [COMMAND]            show help (e.g. 'ztctl help policy test')\n"
    "\n"
    "Exit codes: 0 ok, 1 check failed or refused, 2 usage error, 3 out of memory or\n"
    "cannot connect to the admin API.\n"
    "Manual: docs/ztctl.md\n";

int ztctl_help(FILE *out, const char *cmd)
{
    const struct help *h;
    size_t n;
    int found = 0;

    if (cmd == NULL) {
        fputs(overview, out);
        return 0;
    }
    n = strlen(cmd);
    for (h = helps; h->cmd != NULL; h++) {
        if (strcmp(h->cmd, cmd) == 0) {
            fputs(h->text, out);
            return 0;
        }
    }
    /* A group ("policy"): every command in it. */
    for (h = helps; h->cmd != NULL; h++) {
        if (strncmp(h->cmd, cmd, n) == 0 && h->cmd[n] == ' ') {
            fprintf(out, "%s%s", found ? "\n" : "", h->text);
            found = 1;
        }
    }
    return found ? 0 : -1;
}

static int help_main(int argc, char **argv)
{
    char cmd[64];

    if (argc == 0) {
        ztctl_help(stdout, NULL);
        return ZTCTL_EXIT_OK;
    }
    if (argc > 2) {
        ztctl_usage_error("help", "too many arguments");
        return ZTCTL_EXIT_USAGE;
    }
    snprintf(cmd, sizeof(cmd), "%s%s%s", argv[0], argc == 2 ? " " : "", argc == 2 ? argv[1] : "");
    if (ztctl_help(stdout, cmd) == -1) {
        ztctl_usage_error(NULL, "no such command: '%s'", cmd);
        return ZTCTL_EXIT_USAGE;
    }
    return ZTCTL_EXIT_OK;
}

int main(int argc, char **argv)
{
    const char *c;

    if (argc < 2) {
        ztctl_help(stderr, NULL);
        return ZTCTL_EXIT_USAGE;
    }
    c = argv[1];
    if (strcmp(c, "-h") == 0 || strcmp(c, "--help") == 0)
        return help_main(0, NULL);
    if (strcmp(c, "help") == 0)
        return help_main(argc - 2, argv + 2);
    if (strcmp(c, "policy") == 0)
        return ztctl_policy_main(argc - 2, argv + 2);
    if (strcmp(c, "audit") == 0)
        return ztctl_audit_main(argc - 2, argv + 2);
    if (strcmp(c, "rules") == 0)
        return ztctl_rules_main(argc - 2, argv + 2);
    if (strcmp(c, "explain") == 0)
        return ztctl_explain_main(argc - 2, argv + 2);
    if (strcmp(c, "whatif") == 0)
        return ztctl_whatif_main(argc - 2, argv + 2);
    if (strcmp(c, "devices") == 0)
        return ztctl_devices_main(argc - 2, argv + 2);
    if (strcmp(c, "sessions") == 0)
        return ztctl_sessions_main(argc - 2, argv + 2);
    if (strcmp(c, "decisions") == 0)
        return ztctl_decisions_main(argc - 2, argv + 2);
    ztctl_usage_error(NULL, "unknown command '%s'", c);
    return ZTCTL_EXIT_USAGE;
}
