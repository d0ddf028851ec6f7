/*
 * audit_cmd.c - "ztctl audit verify FILE": check the hash chain of the
 * tamper-evident audit log.
 *
 * The verifier lives in the audit log module (include/auditlog.h):
 *   int auditlog_verify_file(const char *path, char *err, size_t errlen);
 * returns 0 when every line carries the hash of the one before it, or the
 * 1-based number of the first bad line (an edited, removed or reordered line)
 * with the reason in err, or -1 when the file cannot be read.
 */
#include <stdio.h>
#include <string.h>

#include "auditlog.h"
#include "ztctl.h"

static const struct ztctl_optdef verify_opts[] = {{NULL, 0, 0}};

static int audit_verify(int argc, char **argv)
{
    struct ztctl_optp p;
    const char *val;
    char err[1024] = "";
    int id, rc, bad;

    ztctl_optp_init(&p, "audit verify", argc, argv);
    while ((rc = ztctl_opt_next(&p, verify_opts, &id, &val)) == 1) {
        if (id == ZTCTL_OPT_HELP) {
            ztctl_help(stdout, "audit verify");
            return ZTCTL_EXIT_OK;
        }
    }
    if (rc == -1)
        return ZTCTL_EXIT_USAGE;
    if (p.npos != 1) {
        ztctl_usage_error(p.cmd, p.npos == 0 ? "missing FILE" : "too many arguments");
        return ZTCTL_EXIT_USAGE;
    }
    bad = auditlog_verify_file(p.pos[0], err, sizeof(err));
    if (bad == 0) {
        /* err reads "N lines, last hash H": keep H elsewhere to anchor the chain */
        printf("ok: %s: %s\n", p.pos[0], err[0] != '\0' ? err : "hash chain intact");
        return ZTCTL_EXIT_OK;
    }
    if (bad > 0)
        fprintf(stderr, "%s:%d: %s\n", p.pos[0], bad, err[0] != '\0' ? err : "bad line");
    else
        fprintf(stderr, "%s: %s\n", p.pos[0], err[0] != '\0' ? err : "cannot verify");
    return ZTCTL_EXIT_FAIL;
}

int ztctl_audit_main(int argc, char **argv)
{
    if (argc == 0) {
        ztctl_usage_error("audit", "missing subcommand (verify)");
        return ZTCTL_EXIT_USAGE;
    }
    if (strcmp(argv[0], "-h") == 0 || strcmp(argv[0], "--help") == 0) {
        ztctl_help(stdout, "audit");
        return ZTCTL_EXIT_OK;
    }
    if (strcmp(argv[0], "verify") == 0)
        return audit_verify(argc - 1, argv + 1);
    ztctl_usage_error("audit", "unknown subcommand '%s'", argv[0]);
    return ZTCTL_EXIT_USAGE;
}
