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
    "  help [COMMAND]            show help (e.g. 'ztctl help policy test')\n"
    "\n"
    "Exit codes: 0 ok, 1 check failed, 2 usage error, 3 out of memory.\n"
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
    ztctl_usage_error(NULL, "unknown command '%s'", c);
    return ZTCTL_EXIT_USAGE;
}
