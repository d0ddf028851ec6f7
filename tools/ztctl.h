/*
 * ztctl.h - pieces shared by the files of ztctl, the security team's command
 * line (tools/ztctl.c dispatches; policy_cmd.c and audit_cmd.c do the work;
 * util.c parses arguments, times and durations). Not a library: nothing here
 * is used outside tools/.
 */
#ifndef ZT_ZTCTL_H
#define ZT_ZTCTL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Exit codes (docs/ztctl.md). */
#define ZTCTL_EXIT_OK 0          /* valid, all tests passed, log intact */
#define ZTCTL_EXIT_FAIL 1        /* invalid input, a test failed, log tampered, I/O error */
#define ZTCTL_EXIT_USAGE 2       /* bad command line */
#define ZTCTL_EXIT_UNAVAILABLE 3 /* out of memory; admin API: cannot connect, TLS, credentials */

#define ZTCTL_POS_MAX 4 /* positional arguments of one command */

/* ---- command line --------------------------------------------------------------- */

/* One option of a command: "--name" (has_arg: takes a value, "--name V" or
 * "--name=V"). id is returned by ztctl_opt_next(). */
struct ztctl_optdef {
    const char *name;
    int id;
    int has_arg;
};

#define ZTCTL_OPT_HELP (-100) /* -h / --help, recognised by every command */

struct ztctl_optp {
    int argc;
    char **argv;
    int i;
    int dashdash;                   /* "--" seen: the rest is positional */
    const char *cmd;                /* "policy lint": used in messages */
    const char *pos[ZTCTL_POS_MAX]; /* positional arguments, in order */
    size_t npos;
};

/* Start parsing argv[0..argc-1] (the words after the command name). */
void ztctl_optp_init(struct ztctl_optp *p, const char *cmd, int argc, char **argv);

/*
 * Next option. Returns 1 with *id and *val (NULL for flags), 0 when the
 * arguments are used up (positionals are in p->pos), or -1 after printing a
 * usage error to stderr (unknown option, missing value, too many arguments).
 */
int ztctl_opt_next(struct ztctl_optp *p, const struct ztctl_optdef *defs, int *id,
                   const char **val);

/* Set *dst to val unless it was already set: then print "--name given twice"
 * and return -1. */
int ztctl_opt_once(struct ztctl_optp *p, const char *name, const char **dst, const char *val);

/* Print "ztctl CMD: msg" and "Try 'ztctl help CMD'." to stderr. */
void ztctl_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A list of strings (each a malloc'd copy). */
struct ztctl_strv {
    char **v;
    size_t n;
    size_t cap;
};

/* Append a copy of s. 0, or -1 on allocation failure or past max entries. */
int ztctl_strv_add(struct ztctl_strv *l, const char *s, size_t max);
/* Split "a,b,c" into l (appending). Empty items are errors. 0 or -1 with a
 * reason in err. */
int ztctl_strv_split(struct ztctl_strv *l, const char *s, size_t max, char *err, size_t errlen);
void ztctl_strv_reset(struct ztctl_strv *l);

/* ---- values ----------------------------------------------------------------------- */

/*
 * RFC 3339 date-time with an offset ("2026-03-29T01:30:00+01:00",
 * "2026-03-29T00:30:00Z"; fractions of a second are accepted and dropped)
 * -> unix seconds. 0, or -1 if s is not such a time or is out of range.
 */
int ztctl_time_parse(const char *s, int64_t *t);

/* "30s", "15m", "8h", "1d", "1h30m" -> seconds (at most 3650 days). 0 or -1. */
int ztctl_duration_parse(const char *s, int64_t *secs);

/* Decimal integer in [min, max], nothing else. 0 or -1. */
int ztctl_long_parse(const char *s, long min, long max, long *out);

/* s as a double-quoted string with '"', '\\' and non-printable bytes escaped,
 * cut to fit out (always NUL-terminated). Returns out. */
const char *ztctl_quote(const char *s, char *out, size_t len);

/* ---- commands ---------------------------------------------------------------------- */

/* argv[0] is the subcommand ("lint", "test", "explain"). Return an exit code. */
int ztctl_policy_main(int argc, char **argv);
int ztctl_audit_main(int argc, char **argv);

/* The admin API client (admin_cmd.c; docs/ztctl.md "Talking to a running
 * proxy"): argv[0] is the subcommand for rules, devices and sessions; explain,
 * whatif and decisions take their options directly. */
int ztctl_rules_main(int argc, char **argv);
int ztctl_explain_main(int argc, char **argv);
int ztctl_whatif_main(int argc, char **argv);
int ztctl_devices_main(int argc, char **argv);
int ztctl_sessions_main(int argc, char **argv);
int ztctl_decisions_main(int argc, char **argv);

/* Print the help of "policy lint", "audit verify", ..., or of a group
 * ("policy", "audit") or of everything (NULL). 0, or -1 if there is no such
 * command. */
int ztctl_help(FILE *out, const char *cmd);

#endif
