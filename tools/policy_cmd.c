/*
 * policy_cmd.c - "ztctl policy lint|test|explain": drive the pure rules
 * engine (include/policy.h) from the command line.
 *
 * Everything the proxy would do before asking the policy is done the same
 * way here, so a test passes here exactly when the proxy would decide the
 * same: the path goes through http_path_normalize(), groups come from the
 * directory snapshot (directory_user_groups()) when one is given, and the
 * rules are compiled with the same options (tiers, routes, directory).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <jansson.h>

#include "directory.h"
#include "http.h"
#include "policy.h"
#include "ztctl.h"

#define TESTS_FILE_MAX (64u * 1024 * 1024)
#define TESTS_MAX 100000
#define ERRORS_SHOWN_MAX 50
#define EXPLAIN_BUF_MIN (64u * 1024)
#define EXPLAIN_BUF_MAX (64u * 1024 * 1024)
#define GROUPS_MAX 10000
#define ATTRS_MAX 1000

enum {
    O_ROUTES = 1,
    O_TIERS,
    O_DIRECTORY,
    O_VERBOSE,
    O_ROUTE,
    O_USER,
    O_EMAIL,
    O_NO_IDENTITY,
    O_GROUP,
    O_TIER,
    O_SCORE,
    O_ATTR,
    O_OWNER,
    O_STALE,
    O_IP,
    O_COUNTRY,
    O_AT,
    O_METHOD,
    O_PATH,
    O_AUTH_AGE,
    O_AUTH_TIME,
    O_MFA,
    O_JSON,
};

#define COMMON_OPTS                                                                                \
    {"--routes", O_ROUTES, 1}, {"--tiers", O_TIERS, 1},                                            \
    {                                                                                              \
        "--directory", O_DIRECTORY, 1                                                              \
    }

static const struct ztctl_optdef lint_opts[] = {COMMON_OPTS, {NULL, 0, 0}};
static const struct ztctl_optdef test_opts[] = {
    COMMON_OPTS, {"--verbose", O_VERBOSE, 0}, {"-v", O_VERBOSE, 0}, {NULL, 0, 0}};
static const struct ztctl_optdef explain_opts[] = {
    COMMON_OPTS,
    {"--route", O_ROUTE, 1},
    {"--user", O_USER, 1},
    {"--email", O_EMAIL, 1},
    {"--no-identity", O_NO_IDENTITY, 0},
    {"--group", O_GROUP, 1},
    {"--tier", O_TIER, 1},
    {"--score", O_SCORE, 1},
    {"--attr", O_ATTR, 1},
    {"--owner", O_OWNER, 1},
    {"--stale", O_STALE, 0},
    {"--ip", O_IP, 1},
    {"--country", O_COUNTRY, 1},
    {"--at", O_AT, 1},
    {"--method", O_METHOD, 1},
    {"--path", O_PATH, 1},
    {"--auth-age", O_AUTH_AGE, 1},
    {"--auth-time", O_AUTH_TIME, 1},
    {"--mfa", O_MFA, 0},
    {"--json", O_JSON, 0},
    {NULL, 0, 0},
};

/* ---- options every policy command shares --------------------------------------------- */

struct common {
    const char *routes_arg;
    const char *tiers_arg;
    const char *dir_file;
    struct ztctl_strv routes;
    struct ztctl_strv tiers;
    struct directory *dir;
    struct policy *policy;
};

/* Handle a shared option. 1 handled, 0 not a shared option, -1 usage error. */
static int common_opt(struct ztctl_optp *p, struct common *c, int id, const char *val)
{
    switch (id) {
    case O_ROUTES:
        return ztctl_opt_once(p, "--routes", &c->routes_arg, val) == -1 ? -1 : 1;
    case O_TIERS:
        return ztctl_opt_once(p, "--tiers", &c->tiers_arg, val) == -1 ? -1 : 1;
    case O_DIRECTORY:
        return ztctl_opt_once(p, "--directory", &c->dir_file, val) == -1 ? -1 : 1;
    default:
        return 0;
    }
}

/* Split the lists (usage errors: exit 2). 0 or an exit code. */
static int common_lists(struct ztctl_optp *p, struct common *c)
{
    char err[256];

    if (c->routes_arg != NULL &&
        ztctl_strv_split(&c->routes, c->routes_arg, POLICY_RULES_MAX, err, sizeof(err)) == -1) {
        ztctl_usage_error(p->cmd, "--routes: %s", err);
        return ZTCTL_EXIT_USAGE;
    }
    if (c->tiers_arg != NULL &&
        ztctl_strv_split(&c->tiers, c->tiers_arg, POLICY_TIERS_MAX, err, sizeof(err)) == -1) {
        ztctl_usage_error(p->cmd, "--tiers: %s", err);
        return ZTCTL_EXIT_USAGE;
    }
    return 0;
}

/* Load the directory and compile the rules. 0 or an exit code (errors printed). */
static int common_load(struct common *c, const char *file)
{
    struct policy_compile_opts o;
    char err[2048];

    if (c->dir_file != NULL) {
        c->dir = directory_load(c->dir_file, err, sizeof(err));
        if (c->dir == NULL) {
            fprintf(stderr, "%s\n", err);
            return ZTCTL_EXIT_FAIL;
        }
    }
    memset(&o, 0, sizeof(o));
    o.name = file;
    if (c->tiers_arg != NULL) {
        o.tiers = (const char *const *)c->tiers.v;
        o.ntiers = c->tiers.n;
    }
    if (c->routes_arg != NULL) {
        o.routes = (const char *const *)c->routes.v;
        o.nroutes = c->routes.n;
    }
    o.dir = c->dir;
    c->policy = policy_load(file, &o, err, sizeof(err));
    if (c->policy == NULL) {
        fprintf(stderr, "%s\n", err);
        return ZTCTL_EXIT_FAIL;
    }
    return 0;
}

static void common_reset(struct common *c)
{
    policy_unref(c->policy);
    c->policy = NULL;
    directory_unref(c->dir);
    c->dir = NULL;
    ztctl_strv_reset(&c->routes);
    ztctl_strv_reset(&c->tiers);
}

/* ---- request context ------------------------------------------------------------------ */

/* The fields of a request context: key in a tests file, option of explain. */
enum field {
    F_ROUTE,
    F_USER,
    F_EMAIL,
    F_GROUPS,
    F_TIER,
    F_SCORE,
    F_ATTRS,
    F_OWNER,
    F_IP,
    F_COUNTRY,
    F_TIME,
    F_METHOD,
    F_PATH,
    F_AUTH_AGE,
    F_AUTH_TIME,
    F_MFA,
    F_IDENTITY,
    F_STALE,
    F_COUNT
};

static const char *const field_key[F_COUNT] = {
    "route",        "user",         "email",     "groups",  "device_tier", "device_score",
    "device_attrs", "device_owner", "ip",        "country", "time",        "method",
    "path",         "auth_age",     "auth_time", "mfa",     "identity",    "device_stale",
};

static const char *const field_opt[F_COUNT] = {
    "--route", "--user",     "--email",     "--group",   "--tier",        "--score",
    "--attr",  "--owner",    "--ip",        "--country", "--at",          "--method",
    "--path",  "--auth-age", "--auth-time", "--mfa",     "--no-identity", "--stale",
};

/* A request as given (strings point into the tests JSON or argv). */
struct spec {
    const char *s[F_COUNT]; /* string-valued fields; NULL: absent */
    long score;
    int has_score;
    int identity; /* -1: derived (1 when user or email is given) */
    int mfa;
    int stale;
    const char **groups; /* owned array, strings borrowed */
    size_t ngroups;
    int has_groups;
    struct policy_attr *attrs; /* owned array, strings borrowed */
    size_t nattrs;
};

/* A request ready for policy_eval(). */
struct built {
    struct policy_ctx ctx;
    char *path;             /* normalised path (owned) */
    struct directory *gdir; /* the groups given without a directory (owned) */
    uint32_t *gids;         /* owned */
    int64_t now;
};

static void spec_init(struct spec *s)
{
    memset(s, 0, sizeof(*s));
    s->identity = -1;
}

static void spec_reset(struct spec *s)
{
    free(s->groups);
    free(s->attrs);
    spec_init(s);
}

static void built_reset(struct built *b)
{
    free(b->path);
    directory_unref(b->gdir);
    free(b->gids);
    memset(b, 0, sizeof(*b));
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

    return x < y ? -1 : x > y;
}

/*
 * Groups given by name, without a directory: a one-off directory snapshot
 * that declares them, so the engine looks them up by name as it does with a
 * live directory (no nesting: the list is the user's complete set).
 */
static int groups_bind(struct built *b, const struct spec *s, char *err, size_t errlen)
{
    json_t *root = NULL, *groups = NULL;
    char *text = NULL;
    size_t i;
    int rc = -1;

    root = json_object();
    groups = json_object();
    if (root == NULL || groups == NULL)
        goto oom;
    for (i = 0; i < s->ngroups; i++)
        if (json_object_set_new(groups, s->groups[i], json_object()) == -1)
            goto oom;
    if (json_object_set(root, "groups", groups) == -1 ||
        json_object_set_new(root, "users", json_object()) == -1)
        goto oom;
    text = json_dumps(root, JSON_COMPACT);
    if (text == NULL)
        goto oom;
    b->gdir = directory_parse(text, strlen(text), "groups", err, errlen);
    if (b->gdir == NULL)
        goto out;
    b->gids = calloc(s->ngroups, sizeof(*b->gids));
    if (b->gids == NULL)
        goto oom;
    for (i = 0; i < s->ngroups; i++) {
        if (directory_group_find(b->gdir, s->groups[i], &b->gids[i]) == -1) {
            snprintf(err, errlen, "cannot bind group");
            goto out;
        }
    }
    qsort(b->gids, s->ngroups, sizeof(*b->gids), cmp_u32);
    b->ctx.dir = b->gdir;
    b->ctx.groups = b->gids;
    b->ctx.ngroups = s->ngroups;
    rc = 0;
    goto out;
oom:
    snprintf(err, errlen, "out of memory");
out:
    free(text);
    json_decref(groups);
    json_decref(root);
    return rc;
}

static int country_valid(const char *s)
{
    if (strcmp(s, "unknown") == 0)
        return 1;
    return strlen(s) == 2 && s[0] >= 'A' && s[0] <= 'Z' && s[1] >= 'A' && s[1] <= 'Z';
}

static void list_text(const char *const *v, size_t n, char *out, size_t len)
{
    size_t i, used = 0;

    if (len == 0)
        return;
    out[0] = '\0';
    for (i = 0; i < n && used + 1 < len; i++) {
        int w = snprintf(out + used, len - used, "%s%s", i > 0 ? ", " : "", v[i]);
        if (w < 0)
            break;
        used += (size_t)w;
    }
}

/*
 * Turn a spec into a context for policy_eval(). Returns 0, or -1 with the
 * offending field in *field and the reason in err.
 */
static int build(const struct common *c, const struct spec *s, struct built *b, enum field *field,
                 char *err, size_t errlen)
{
    const char *v;
    char q[256];

    memset(b, 0, sizeof(*b));
    policy_ctx_init(&b->ctx);

    *field = F_ROUTE;
    v = s->s[F_ROUTE];
    if (v != NULL && c->routes_arg != NULL) {
        size_t i;
        for (i = 0; i < c->routes.n && strcmp(c->routes.v[i], v) != 0; i++)
            ;
        if (i == c->routes.n) {
            char known[512];
            list_text((const char *const *)c->routes.v, c->routes.n, known, sizeof(known));
            snprintf(err, errlen, "unknown route %s (known: %s)", ztctl_quote(v, q, sizeof(q)),
                     known);
            return -1;
        }
    }
    b->ctx.route = v;

    b->ctx.user = s->s[F_USER];
    b->ctx.email = s->s[F_EMAIL];
    /* A subject that is an email is the email too, unless one is given. */
    if (b->ctx.email == NULL && b->ctx.user != NULL && strchr(b->ctx.user, '@') != NULL)
        b->ctx.email = b->ctx.user;
    b->ctx.identity =
        s->identity >= 0 ? s->identity : (b->ctx.user != NULL || b->ctx.email != NULL);

    *field = F_GROUPS;
    if (c->dir != NULL) {
        b->ctx.dir = c->dir;
        if (b->ctx.identity && directory_user_groups(c->dir, b->ctx.user, b->ctx.email,
                                                     &b->ctx.groups, &b->ctx.ngroups) == -1) {
            b->ctx.groups = NULL;
            b->ctx.ngroups = 0;
        }
    } else if (s->ngroups > 0 && groups_bind(b, s, err, errlen) == -1) {
        return -1;
    }

    *field = F_TIER;
    v = s->s[F_TIER];
    if (v != NULL) {
        b->ctx.device_tier = policy_tier_index(c->policy, v);
        if (b->ctx.device_tier < 0) {
            char known[512];
            const char *names[POLICY_TIERS_MAX];
            size_t n = 0;
            while (n < POLICY_TIERS_MAX && policy_tier_name(c->policy, (int)n) != NULL) {
                names[n] = policy_tier_name(c->policy, (int)n);
                n++;
            }
            list_text(names, n, known, sizeof(known));
            snprintf(err, errlen, "unknown tier %s (known: %s)", ztctl_quote(v, q, sizeof(q)),
                     known);
            return -1;
        }
    }
    *field = F_SCORE;
    if (s->has_score) {
        if (s->score < 0 || s->score > 100) {
            snprintf(err, errlen, "device score %ld out of range (0..100)", s->score);
            return -1;
        }
        b->ctx.device_score = (int)s->score;
    }
    b->ctx.device_attrs = s->attrs;
    b->ctx.ndevice_attrs = s->nattrs;
    b->ctx.device_owner = s->s[F_OWNER];
    b->ctx.device_stale = s->stale;

    *field = F_IP;
    v = s->s[F_IP];
    if (v != NULL) {
        if (inet_pton(AF_INET, v, b->ctx.ip) == 1) {
            b->ctx.ip_family = AF_INET;
        } else if (inet_pton(AF_INET6, v, b->ctx.ip) == 1) {
            b->ctx.ip_family = AF_INET6;
        } else {
            snprintf(err, errlen, "invalid IP address %s", ztctl_quote(v, q, sizeof(q)));
            return -1;
        }
    }
    *field = F_COUNTRY;
    v = s->s[F_COUNTRY];
    if (v != NULL) {
        if (!country_valid(v)) {
            snprintf(err, errlen,
                     "invalid country %s (ISO 3166 alpha-2 in upper case, e.g. \"DE\", or "
                     "\"unknown\")",
                     ztctl_quote(v, q, sizeof(q)));
            return -1;
        }
        snprintf(b->ctx.country, sizeof(b->ctx.country), "%s", v);
    }

    *field = F_TIME;
    v = s->s[F_TIME];
    if (v == NULL) {
        b->now = (int64_t)time(NULL);
    } else if (ztctl_time_parse(v, &b->now) == -1) {
        snprintf(err, errlen,
                 "invalid time %s (RFC 3339 with an offset, e.g. \"2026-03-29T01:30:00+01:00\")",
                 ztctl_quote(v, q, sizeof(q)));
        return -1;
    }
    b->ctx.now = b->now;

    *field = F_METHOD;
    v = s->s[F_METHOD];
    if (v != NULL) {
        if (v[0] == '\0' || strpbrk(v, " \t\r\n") != NULL) {
            snprintf(err, errlen, "invalid method %s", ztctl_quote(v, q, sizeof(q)));
            return -1;
        }
        b->ctx.method = v;
    }

    *field = F_PATH;
    v = s->s[F_PATH];
    if (v != NULL) {
        /* The rules see the normalised path without the query, as in the proxy. */
        size_t n = strcspn(v, "?#"), outn;
        const char *why = NULL;
        if (n == 0 || v[0] != '/') {
            snprintf(err, errlen, "invalid path %s (must start with '/')",
                     ztctl_quote(v, q, sizeof(q)));
            return -1;
        }
        b->path = malloc(n + 1);
        if (b->path == NULL) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        if (http_path_normalize(v, n, 0, b->path, &outn, &why) == -1) {
            snprintf(err, errlen, "invalid path %s: %s", ztctl_quote(v, q, sizeof(q)),
                     why != NULL ? why : "rejected");
            return -1;
        }
        b->ctx.path = b->path;
    }

    if (s->s[F_AUTH_AGE] != NULL && s->s[F_AUTH_TIME] != NULL) {
        *field = F_AUTH_TIME;
        snprintf(err, errlen, "give auth_age or auth_time, not both");
        return -1;
    }
    *field = F_AUTH_AGE;
    v = s->s[F_AUTH_AGE];
    if (v != NULL) {
        int64_t age;
        if (ztctl_duration_parse(v, &age) == -1) {
            snprintf(err, errlen, "invalid duration %s (e.g. \"30s\", \"15m\", \"1h30m\", \"2d\")",
                     ztctl_quote(v, q, sizeof(q)));
            return -1;
        }
        b->ctx.auth_time = b->now - age;
    }
    *field = F_AUTH_TIME;
    v = s->s[F_AUTH_TIME];
    if (v != NULL && ztctl_time_parse(v, &b->ctx.auth_time) == -1) {
        snprintf(err, errlen, "invalid time %s (RFC 3339 with an offset)",
                 ztctl_quote(v, q, sizeof(q)));
        return -1;
    }
    b->ctx.mfa = s->mfa;
    return 0;
}

/* ---- policy lint ------------------------------------------------------------------------ */

static int policy_lint(int argc, char **argv)
{
    struct ztctl_optp p;
    struct common c;
    const char *val;
    const char *ver;
    int id, rc;

    memset(&c, 0, sizeof(c));
    ztctl_optp_init(&p, "policy lint", argc, argv);
    while ((rc = ztctl_opt_next(&p, lint_opts, &id, &val)) == 1) {
        if (id == ZTCTL_OPT_HELP) {
            ztctl_help(stdout, p.cmd);
            return ZTCTL_EXIT_OK;
        }
        if (common_opt(&p, &c, id, val) == -1)
            return ZTCTL_EXIT_USAGE;
    }
    if (rc == -1)
        return ZTCTL_EXIT_USAGE;
    if (p.npos != 1) {
        ztctl_usage_error(p.cmd, p.npos == 0 ? "missing FILE" : "too many arguments");
        return ZTCTL_EXIT_USAGE;
    }
    rc = common_lists(&p, &c);
    if (rc == 0)
        rc = common_load(&c, p.pos[0]);
    if (rc == 0) {
        ver = policy_version(c.policy);
        printf("ok: %zu rule%s, version %s\n", policy_rule_count(c.policy),
               policy_rule_count(c.policy) == 1 ? "" : "s", ver[0] != '\0' ? ver : "(none)");
    }
    common_reset(&c);
    return rc;
}

/* ---- policy test -------------------------------------------------------------------------- */

struct tcase {
    const char *name;
    enum policy_effect expect;
    const char *expect_rule; /* NULL: any rule */
    struct spec spec;
    struct built b;
};

struct tfile {
    const char *file;
    const struct common *c;
    size_t nerrors;
};

static void tf_msg(struct tfile *t, const char *level, size_t i, const char *name,
                   const char *where, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* "tests.json: $[3] (name "x").context.ip: msg" */
static void tf_msg(struct tfile *t, const char *level, size_t i, const char *name,
                   const char *where, const char *fmt, ...)
{
    char q[160];
    va_list ap;

    if (level == NULL) {
        t->nerrors++;
        if (t->nerrors > ERRORS_SHOWN_MAX)
            return;
    }
    fprintf(stderr, "%s%s: $[%zu]", level != NULL ? level : "", t->file, i);
    if (name != NULL)
        fprintf(stderr, " (name %s)", ztctl_quote(name, q, sizeof(q)));
    fprintf(stderr, "%s: ", where);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* ".key" for plain keys, "[\"k y\"]" otherwise. */
static const char *key_path(const char *k, char *out, size_t len)
{
    size_t i;
    int plain = k[0] != '\0' && !(k[0] >= '0' && k[0] <= '9');
    char q[200];

    for (i = 0; k[i] != '\0' && plain; i++)
        plain = (k[i] >= 'a' && k[i] <= 'z') || (k[i] >= 'A' && k[i] <= 'Z') ||
                (k[i] >= '0' && k[i] <= '9') || k[i] == '_' || k[i] == '-';
    if (plain)
        snprintf(out, len, ".%s", k);
    else
        snprintf(out, len, "[%s]", ztctl_quote(k, q, sizeof(q)));
    return out;
}

static const char *type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    default:
        return "null";
    }
}

/* Unknown keys of obj: one error each. */
static void check_keys(struct tfile *t, size_t i, const char *name, const char *where, json_t *obj,
                       const char *const *known, const char *expected)
{
    const char *k;
    json_t *v;
    char kp[256], w[512];

    json_object_foreach(obj, k, v)
    {
        const char *const *kn;
        for (kn = known; *kn != NULL && strcmp(*kn, k) != 0; kn++)
            ;
        if (*kn == NULL) {
            snprintf(w, sizeof(w), "%s%s", where, key_path(k, kp, sizeof(kp)));
            tf_msg(t, NULL, i, name, w, "unknown key (expected %s)", expected);
        }
    }
}

static const char *const context_keys[F_COUNT + 1] = {
    "route",        "user",         "email",        "groups",   "device_tier",
    "device_score", "device_attrs", "device_owner", "ip",       "country",
    "time",         "method",       "path",         "auth_age", "auth_time",
    "mfa",          "identity",     "device_stale", NULL,
};

static void parse_context(struct tfile *t, size_t i, const char *name, json_t *ctx, struct spec *s)
{
    char w[512];
    int f;

    if (!json_is_object(ctx)) {
        tf_msg(t, NULL, i, name, ".context", "expected an object, got %s", type_name(ctx));
        return;
    }
    check_keys(t, i, name, ".context", ctx, context_keys,
               "route, user, email, groups, device_tier, device_score, device_attrs, "
               "device_owner, ip, country, time, method, path, auth_age, auth_time, mfa, "
               "identity, device_stale");
    for (f = 0; f < F_COUNT; f++) {
        json_t *v = json_object_get(ctx, field_key[f]);
        if (v == NULL)
            continue;
        snprintf(w, sizeof(w), ".context.%s", field_key[f]);
        switch (f) {
        case F_MFA:
        case F_IDENTITY:
        case F_STALE:
            if (!json_is_boolean(v)) {
                tf_msg(t, NULL, i, name, w, "expected true or false, got %s", type_name(v));
                break;
            }
            if (f == F_MFA)
                s->mfa = json_is_true(v);
            else if (f == F_IDENTITY)
                s->identity = json_is_true(v);
            else
                s->stale = json_is_true(v);
            break;
        case F_SCORE:
            if (!json_is_integer(v)) {
                tf_msg(t, NULL, i, name, w, "expected an integer 0..100, got %s", type_name(v));
                break;
            }
            if (json_integer_value(v) < 0 || json_integer_value(v) > 100) {
                tf_msg(t, NULL, i, name, w,
                       "device score %" JSON_INTEGER_FORMAT " out of range (0..100)",
                       json_integer_value(v));
                break;
            }
            s->score = (long)json_integer_value(v);
            s->has_score = 1;
            break;
        case F_GROUPS: {
            size_t j, k, n = json_array_size(v);
            if (!json_is_array(v)) {
                tf_msg(t, NULL, i, name, w, "expected an array of group names, got %s",
                       type_name(v));
                break;
            }
            s->has_groups = 1;
            if (n == 0)
                break;
            if (n > GROUPS_MAX) {
                tf_msg(t, NULL, i, name, w, "too many groups (at most %d)", GROUPS_MAX);
                break;
            }
            s->groups = calloc(n, sizeof(*s->groups));
            if (s->groups == NULL) {
                tf_msg(t, NULL, i, name, w, "out of memory");
                break;
            }
            for (j = 0; j < n; j++) {
                json_t *g = json_array_get(v, j);
                char wj[540];
                snprintf(wj, sizeof(wj), "%s[%zu]", w, j);
                if (!json_is_string(g) || json_string_length(g) == 0) {
                    tf_msg(t, NULL, i, name, wj, "expected a group name, got %s",
                           json_is_string(g) ? "an empty string" : type_name(g));
                    continue;
                }
                for (k = 0; k < s->ngroups; k++)
                    if (strcmp(s->groups[k], json_string_value(g)) == 0)
                        break;
                if (k < s->ngroups) {
                    char q[256];
                    tf_msg(t, NULL, i, name, wj, "group %s is listed twice",
                           ztctl_quote(json_string_value(g), q, sizeof(q)));
                    continue;
                }
                s->groups[s->ngroups++] = json_string_value(g);
            }
            break;
        }
        case F_ATTRS: {
            const char *k;
            json_t *av;
            size_t n = json_object_size(v);
            if (!json_is_object(v)) {
                tf_msg(t, NULL, i, name, w, "expected an object of attributes, got %s",
                       type_name(v));
                break;
            }
            if (n == 0)
                break;
            if (n > ATTRS_MAX) {
                tf_msg(t, NULL, i, name, w, "too many attributes (at most %d)", ATTRS_MAX);
                break;
            }
            s->attrs = calloc(n, sizeof(*s->attrs));
            if (s->attrs == NULL) {
                tf_msg(t, NULL, i, name, w, "out of memory");
                break;
            }
            json_object_foreach(v, k, av)
            {
                char kp[256], wk[800];
                snprintf(wk, sizeof(wk), "%s%s", w, key_path(k, kp, sizeof(kp)));
                if (k[0] == '\0') {
                    tf_msg(t, NULL, i, name, wk, "empty attribute name");
                } else if (json_is_string(av)) {
                    s->attrs[s->nattrs].name = k;
                    s->attrs[s->nattrs++].value = json_string_value(av);
                } else if (json_is_boolean(av)) {
                    s->attrs[s->nattrs].name = k;
                    s->attrs[s->nattrs++].value = json_is_true(av) ? "true" : "false";
                } else {
                    tf_msg(t, NULL, i, name, wk, "expected a string or a boolean, got %s",
                           type_name(av));
                }
            }
            break;
        }
        default:
            if (!json_is_string(v)) {
                tf_msg(t, NULL, i, name, w, "expected a string, got %s", type_name(v));
                break;
            }
            if (json_string_length(v) == 0 || json_string_length(v) > POLICY_STRING_MAX ||
                strlen(json_string_value(v)) != json_string_length(v)) {
                tf_msg(t, NULL, i, name, w, "expected 1..%d bytes without NUL", POLICY_STRING_MAX);
                break;
            }
            s->s[f] = json_string_value(v);
            break;
        }
    }
}

static int effect_parse(const char *s, enum policy_effect *e)
{
    if (strcmp(s, "allow") == 0)
        *e = POLICY_ALLOW;
    else if (strcmp(s, "deny") == 0)
        *e = POLICY_DENY;
    else if (strcmp(s, "step_up") == 0)
        *e = POLICY_STEP_UP;
    else
        return -1;
    return 0;
}

static void parse_expect(struct tfile *t, size_t i, const char *name, json_t *ex, struct tcase *tc)
{
    static const char *const keys[] = {"effect", "rule", NULL};
    json_t *v;

    if (!json_is_object(ex)) {
        tf_msg(t, NULL, i, name, ".expect", "expected an object, got %s", type_name(ex));
        return;
    }
    check_keys(t, i, name, ".expect", ex, keys, "effect, rule");
    v = json_object_get(ex, "effect");
    if (v == NULL)
        tf_msg(t, NULL, i, name, ".expect.effect", "required key is missing");
    else if (!json_is_string(v) || effect_parse(json_string_value(v), &tc->expect) == -1)
        tf_msg(t, NULL, i, name, ".expect.effect", "expected \"allow\", \"deny\" or \"step_up\"");
    v = json_object_get(ex, "rule");
    if (v != NULL) {
        if (!json_is_string(v) || json_string_length(v) == 0 ||
            json_string_length(v) > POLICY_ID_MAX)
            tf_msg(t, NULL, i, name, ".expect.rule", "expected a rule id (1..%d bytes)",
                   POLICY_ID_MAX);
        else
            tc->expect_rule = json_string_value(v);
    }
}

static json_t *tests_read(const char *file)
{
    json_error_t je;
    struct stat st;
    json_t *root;

    if (stat(file, &st) == -1) {
        fprintf(stderr, "%s: %s\n", file, strerror(errno));
        return NULL;
    }
    if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > TESTS_FILE_MAX) {
        fprintf(stderr, "%s: not a regular file of at most %u bytes\n", file, TESTS_FILE_MAX);
        return NULL;
    }
    root = json_load_file(file, JSON_REJECT_DUPLICATES, &je);
    if (root == NULL) {
        if (je.line > 0)
            fprintf(stderr, "%s:%d:%d: JSON syntax error: %s\n", file, je.line, je.column, je.text);
        else
            fprintf(stderr, "%s: %s\n", file, je.text);
    }
    return root;
}

/* Validate every case and build its context. Errors printed; returns their count. */
static size_t tests_parse(struct tfile *t, json_t *root, struct tcase *cases)
{
    static const char *const case_keys[] = {"name", "description", "context", "expect", NULL};
    size_t i, j;

    for (i = 0; i < json_array_size(root); i++) {
        json_t *tv = json_array_get(root, i), *v;
        struct tcase *tc = &cases[i];
        const char *name = NULL;
        enum field f;
        char err[1024], w[128];

        size_t before = t->nerrors;

        spec_init(&tc->spec);
        if (!json_is_object(tv)) {
            tf_msg(t, NULL, i, NULL, "", "expected a test object, got %s", type_name(tv));
            continue;
        }
        v = json_object_get(tv, "name");
        if (json_is_string(v) && json_string_length(v) > 0) {
            name = json_string_value(v);
            tc->name = name;
        }
        check_keys(t, i, name, "", tv, case_keys, "name, description, context, expect");
        if (v == NULL)
            tf_msg(t, NULL, i, NULL, ".name", "required key is missing");
        else if (name == NULL)
            tf_msg(t, NULL, i, NULL, ".name", "expected a non-empty string");
        for (j = 0; name != NULL && j < i; j++) {
            if (cases[j].name != NULL && strcmp(cases[j].name, name) == 0) {
                tf_msg(t, NULL, i, name, ".name", "duplicate name (also $[%zu])", j);
                before++; /* not a reason to skip checking the context */
                break;
            }
        }
        v = json_object_get(tv, "description");
        if (v != NULL && !json_is_string(v))
            tf_msg(t, NULL, i, name, ".description", "expected a string, got %s", type_name(v));
        v = json_object_get(tv, "expect");
        if (v == NULL)
            tf_msg(t, NULL, i, name, ".expect", "required key is missing");
        else
            parse_expect(t, i, name, v, tc);
        v = json_object_get(tv, "context");
        if (v == NULL) {
            tf_msg(t, NULL, i, name, ".context", "required key is missing");
            continue;
        }
        parse_context(t, i, name, v, &tc->spec);
        if (t->nerrors > before)
            continue; /* build only a case that is valid so far */
        if (tc->spec.has_groups && t->c->dir != NULL)
            tf_msg(t, "warning: ", i, name, ".context.groups",
                   "ignored: with --directory, groups come from the directory");
        if (build(t->c, &tc->spec, &tc->b, &f, err, sizeof(err)) == -1) {
            snprintf(w, sizeof(w), ".context.%s", field_key[f]);
            tf_msg(t, NULL, i, name, w, "%s", err);
            continue;
        }
        if (tc->b.ctx.route != NULL && t->c->routes_arg == NULL &&
            policy_route_index(t->c->policy, tc->b.ctx.route) < 0)
            tf_msg(t, "warning: ", i, name, ".context.route",
                   "no rule names route %s: only unscoped rules apply",
                   ztctl_quote(tc->b.ctx.route, err, sizeof(err)));
    }
    return t->nerrors;
}

static void print_decision_details(const struct policy_decision *d)
{
    size_t i;

    if (d->effect == POLICY_STEP_UP) {
        if (d->step_up_max_age >= 0)
            printf("  step-up: max_age %llds%s\n", (long long)d->step_up_max_age,
                   d->step_up_mfa ? ", mfa required" : "");
        else
            printf("  step-up: max_age any%s\n", d->step_up_mfa ? ", mfa required" : "");
    }
    for (i = 0; i < d->nreasons; i++)
        printf("  reason: %s\n", policy_decision_reason(d, i));
    if (d->reasons_dropped > 0)
        printf("  (%zu more reasons dropped)\n", d->reasons_dropped);
    for (i = 0; i < d->nmonitor; i++)
        printf("  monitor: %s %s, would decide %s\n", d->monitor[i].rule_id,
               d->monitor[i].matched == 1   ? "matched"
               : d->monitor[i].matched == 2 ? "would step up"
                                            : "did not match",
               policy_effect_name(d->monitor[i].would_decide));
}

static int tests_run(const struct common *c, struct tcase *cases, size_t n, int verbose)
{
    size_t i, passed = 0, failed = 0;

    for (i = 0; i < n; i++) {
        struct tcase *tc = &cases[i];
        struct policy_decision d;
        char q[256];
        int ok;

        policy_eval(c->policy, &tc->b.ctx, &d);
        ok = d.effect == tc->expect &&
             (tc->expect_rule == NULL || strcmp(tc->expect_rule, d.rule_id) == 0);
        if (ok) {
            passed++;
            if (verbose)
                printf("ok   %s: %s (rule %s)\n", ztctl_quote(tc->name, q, sizeof(q)),
                       policy_effect_name(d.effect), d.rule_id);
            continue;
        }
        failed++;
        printf("FAIL %s: expected %s", ztctl_quote(tc->name, q, sizeof(q)),
               policy_effect_name(tc->expect));
        if (tc->expect_rule != NULL)
            printf(" (rule %s)", tc->expect_rule);
        printf(", got %s (rule %s)\n", policy_effect_name(d.effect), d.rule_id);
        print_decision_details(&d);
    }
    printf("%zu passed, %zu failed\n", passed, failed);
    return failed == 0 ? ZTCTL_EXIT_OK : ZTCTL_EXIT_FAIL;
}

static int policy_test(int argc, char **argv)
{
    struct ztctl_optp p;
    struct common c;
    struct tfile t;
    struct tcase *cases = NULL;
    json_t *root = NULL;
    const char *val;
    size_t i, n = 0;
    int id, rc, verbose = 0;

    memset(&c, 0, sizeof(c));
    ztctl_optp_init(&p, "policy test", argc, argv);
    while ((rc = ztctl_opt_next(&p, test_opts, &id, &val)) == 1) {
        if (id == ZTCTL_OPT_HELP) {
            ztctl_help(stdout, p.cmd);
            return ZTCTL_EXIT_OK;
        }
        if (id == O_VERBOSE) {
            verbose = 1;
            continue;
        }
        if (common_opt(&p, &c, id, val) == -1)
            return ZTCTL_EXIT_USAGE;
    }
    if (rc == -1)
        return ZTCTL_EXIT_USAGE;
    if (p.npos != 2) {
        if (p.npos < 2)
            ztctl_usage_error(p.cmd, "missing %s", p.npos == 0 ? "FILE and TESTS" : "TESTS");
        else
            ztctl_usage_error(p.cmd, "too many arguments");
        return ZTCTL_EXIT_USAGE;
    }
    rc = common_lists(&p, &c);
    if (rc == 0)
        rc = common_load(&c, p.pos[0]);
    if (rc != 0)
        goto out;
    rc = ZTCTL_EXIT_FAIL;
    root = tests_read(p.pos[1]);
    if (root == NULL)
        goto out;
    if (!json_is_array(root)) {
        fprintf(stderr, "%s: $: expected an array of tests, got %s\n", p.pos[1], type_name(root));
        goto out;
    }
    n = json_array_size(root);
    if (n == 0 || n > TESTS_MAX) {
        fprintf(stderr, "%s: $: expected 1..%d tests, got %zu\n", p.pos[1], TESTS_MAX, n);
        goto out;
    }
    cases = calloc(n, sizeof(*cases));
    if (cases == NULL) {
        fprintf(stderr, "%s: out of memory\n", p.pos[1]);
        rc = ZTCTL_EXIT_UNAVAILABLE;
        goto out;
    }
    t.file = p.pos[1];
    t.c = &c;
    t.nerrors = 0;
    if (tests_parse(&t, root, cases) > 0) {
        if (t.nerrors > ERRORS_SHOWN_MAX)
            fprintf(stderr, "%s: %zu more errors\n", t.file, t.nerrors - ERRORS_SHOWN_MAX);
        fprintf(stderr, "%s: invalid tests file: no test was run\n", t.file);
        goto out;
    }
    rc = tests_run(&c, cases, n, verbose);
out:
    for (i = 0; cases != NULL && i < n; i++) {
        built_reset(&cases[i].b);
        spec_reset(&cases[i].spec);
    }
    free(cases);
    json_decref(root);
    common_reset(&c);
    return rc;
}

/* ---- policy explain ------------------------------------------------------------------------ */

struct explain_args {
    struct spec spec;
    struct ztctl_strv groups;
    struct ztctl_strv attrs; /* "name=value" copies, split in place */
    int json;
};

/* Parse a value-checked option straight away so that usage errors name it. */
static int explain_opt(struct ztctl_optp *p, struct explain_args *a, int id, const char *val)
{
    struct spec *s = &a->spec;
    int64_t t;

    switch (id) {
    case O_ROUTE:
        return ztctl_opt_once(p, "--route", &s->s[F_ROUTE], val);
    case O_USER:
        return ztctl_opt_once(p, "--user", &s->s[F_USER], val);
    case O_EMAIL:
        return ztctl_opt_once(p, "--email", &s->s[F_EMAIL], val);
    case O_TIER:
        return ztctl_opt_once(p, "--tier", &s->s[F_TIER], val);
    case O_OWNER:
        return ztctl_opt_once(p, "--owner", &s->s[F_OWNER], val);
    case O_IP:
        return ztctl_opt_once(p, "--ip", &s->s[F_IP], val);
    case O_COUNTRY:
        return ztctl_opt_once(p, "--country", &s->s[F_COUNTRY], val);
    case O_METHOD:
        return ztctl_opt_once(p, "--method", &s->s[F_METHOD], val);
    case O_PATH:
        return ztctl_opt_once(p, "--path", &s->s[F_PATH], val);
    case O_AT:
        if (ztctl_time_parse(val, &t) == -1) {
            ztctl_usage_error(p->cmd,
                              "--at: invalid time \"%s\" (RFC 3339 with an offset, e.g. "
                              "2026-03-29T01:30:00+01:00)",
                              val);
            return -1;
        }
        return ztctl_opt_once(p, "--at", &s->s[F_TIME], val);
    case O_AUTH_TIME:
        if (ztctl_time_parse(val, &t) == -1) {
            ztctl_usage_error(p->cmd, "--auth-time: invalid time \"%s\" (RFC 3339 with an offset)",
                              val);
            return -1;
        }
        return ztctl_opt_once(p, "--auth-time", &s->s[F_AUTH_TIME], val);
    case O_AUTH_AGE:
        if (ztctl_duration_parse(val, &t) == -1) {
            ztctl_usage_error(p->cmd, "--auth-age: invalid duration \"%s\" (e.g. 30s, 15m, 1h30m)",
                              val);
            return -1;
        }
        return ztctl_opt_once(p, "--auth-age", &s->s[F_AUTH_AGE], val);
    case O_SCORE:
        if (s->has_score) {
            ztctl_usage_error(p->cmd, "option '--score' given twice");
            return -1;
        }
        if (ztctl_long_parse(val, 0, 100, &s->score) == -1) {
            ztctl_usage_error(p->cmd, "--score: expected an integer 0..100, got \"%s\"", val);
            return -1;
        }
        s->has_score = 1;
        return 0;
    case O_GROUP:
        if (val[0] == '\0' || ztctl_strv_add(&a->groups, val, GROUPS_MAX) == -1) {
            ztctl_usage_error(p->cmd, "--group: empty or too many groups");
            return -1;
        }
        return 0;
    case O_ATTR:
        if (val[0] == '=' || strchr(val, '=') == NULL) {
            ztctl_usage_error(p->cmd, "--attr: expected NAME=VALUE, got \"%s\"", val);
            return -1;
        }
        if (ztctl_strv_add(&a->attrs, val, ATTRS_MAX) == -1) {
            ztctl_usage_error(p->cmd, "--attr: too many attributes");
            return -1;
        }
        return 0;
    case O_MFA:
        s->mfa = 1;
        return 0;
    case O_STALE:
        s->stale = 1;
        return 0;
    case O_NO_IDENTITY:
        s->identity = 0;
        return 0;
    case O_JSON:
        a->json = 1;
        return 0;
    default:
        ztctl_usage_error(p->cmd, "unexpected option");
        return -1;
    }
}

/* Groups and attributes: from the repeated options into the spec. 0 or -1. */
static int explain_lists(struct explain_args *a)
{
    size_t i;

    if (a->groups.n > 0) {
        a->spec.groups = calloc(a->groups.n, sizeof(*a->spec.groups));
        if (a->spec.groups == NULL)
            return -1;
        for (i = 0; i < a->groups.n; i++) {
            size_t j;
            for (j = 0; j < a->spec.ngroups; j++)
                if (strcmp(a->spec.groups[j], a->groups.v[i]) == 0)
                    break;
            if (j == a->spec.ngroups) /* a group given twice is the same group */
                a->spec.groups[a->spec.ngroups++] = a->groups.v[i];
        }
        a->spec.has_groups = 1;
    }
    if (a->attrs.n > 0) {
        a->spec.attrs = calloc(a->attrs.n, sizeof(*a->spec.attrs));
        if (a->spec.attrs == NULL)
            return -1;
        for (i = 0; i < a->attrs.n; i++) {
            char *eq = strchr(a->attrs.v[i], '=');
            *eq = '\0';
            a->spec.attrs[i].name = a->attrs.v[i];
            a->spec.attrs[i].value = eq + 1;
        }
        a->spec.nattrs = a->attrs.n;
    }
    return 0;
}

/* The user's groups as read from --directory (text mode: one line). */
static void print_dir_groups(const struct common *c, const struct policy_ctx *ctx)
{
    size_t i;

    if (!ctx->identity) {
        printf("directory: no identity, no groups\n");
        return;
    }
    if (ctx->groups == NULL) {
        printf("directory: user not in %s: no groups\n", c->dir_file);
        return;
    }
    printf("directory groups:");
    for (i = 0; i < ctx->ngroups; i++)
        printf("%s %s", i > 0 ? "," : "", directory_group_name(c->dir, ctx->groups[i]));
    printf("%s\n", ctx->ngroups == 0 ? " (none)" : "");
}

static int explain_print(const struct common *c, const struct built *b, int json)
{
    char *buf = NULL;
    size_t len;
    int rc = ZTCTL_EXIT_UNAVAILABLE;

    if (json) {
        json_t *o = policy_explain_json(c->policy, &b->ctx);
        char *text;
        if (o == NULL)
            goto oom;
        if (c->dir != NULL) {
            json_t *g = json_array();
            size_t i;
            for (i = 0; g != NULL && i < b->ctx.ngroups; i++)
                if (json_array_append_new(
                        g, json_string(directory_group_name(c->dir, b->ctx.groups[i]))) == -1)
                    break;
            if (g == NULL || i < b->ctx.ngroups || json_object_set_new(o, "groups", g) == -1) {
                json_decref(g);
                json_decref(o);
                goto oom;
            }
        }
        text = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        json_decref(o);
        if (text == NULL)
            goto oom;
        printf("%s\n", text);
        free(text);
        return ZTCTL_EXIT_OK;
    }
    if (c->dir != NULL)
        print_dir_groups(c, &b->ctx);
    /* policy_explain() cuts a long text with "...": grow until it fits. */
    for (len = EXPLAIN_BUF_MIN; len <= EXPLAIN_BUF_MAX; len *= 2) {
        char *nb = realloc(buf, len);
        if (nb == NULL)
            goto oom;
        buf = nb;
        policy_explain(c->policy, &b->ctx, buf, len);
        if (strlen(buf) + 1 < len)
            break;
    }
    fputs(buf, stdout);
    rc = ZTCTL_EXIT_OK;
    free(buf);
    return rc;
oom:
    free(buf);
    fprintf(stderr, "ztctl policy explain: out of memory\n");
    return rc;
}

static int policy_explain_cmd(int argc, char **argv)
{
    struct ztctl_optp p;
    struct common c;
    struct explain_args a;
    struct built b;
    const char *val;
    enum field f;
    char err[1024];
    int id, rc;

    memset(&c, 0, sizeof(c));
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    spec_init(&a.spec);
    ztctl_optp_init(&p, "policy explain", argc, argv);
    while ((rc = ztctl_opt_next(&p, explain_opts, &id, &val)) == 1) {
        int h;
        if (id == ZTCTL_OPT_HELP) {
            ztctl_help(stdout, p.cmd);
            rc = ZTCTL_EXIT_OK;
            goto out;
        }
        h = common_opt(&p, &c, id, val);
        if (h == 0)
            h = explain_opt(&p, &a, id, val) == -1 ? -1 : 1;
        if (h == -1) {
            rc = -1;
            break;
        }
    }
    if (rc == -1) {
        rc = ZTCTL_EXIT_USAGE;
        goto out;
    }
    if (p.npos != 1) {
        ztctl_usage_error(p.cmd, p.npos == 0 ? "missing FILE" : "too many arguments");
        rc = ZTCTL_EXIT_USAGE;
        goto out;
    }
    if (a.groups.n > 0 && c.dir_file != NULL) {
        ztctl_usage_error(p.cmd, "--group cannot be used with --directory (the directory "
                                 "gives the groups of --user/--email)");
        rc = ZTCTL_EXIT_USAGE;
        goto out;
    }
    if (a.spec.identity == 0 && (a.spec.s[F_USER] != NULL || a.spec.s[F_EMAIL] != NULL)) {
        ztctl_usage_error(p.cmd, "--no-identity cannot be used with --user or --email");
        rc = ZTCTL_EXIT_USAGE;
        goto out;
    }
    if (a.spec.s[F_AUTH_AGE] != NULL && a.spec.s[F_AUTH_TIME] != NULL) {
        ztctl_usage_error(p.cmd, "give --auth-age or --auth-time, not both");
        rc = ZTCTL_EXIT_USAGE;
        goto out;
    }
    if (explain_lists(&a) == -1) {
        fprintf(stderr, "ztctl policy explain: out of memory\n");
        rc = ZTCTL_EXIT_UNAVAILABLE;
        goto out;
    }
    rc = common_lists(&p, &c);
    if (rc == 0)
        rc = common_load(&c, p.pos[0]);
    if (rc != 0)
        goto out;
    if (build(&c, &a.spec, &b, &f, err, sizeof(err)) == -1) {
        ztctl_usage_error(p.cmd, "%s: %s", field_opt[f], err);
        rc = ZTCTL_EXIT_USAGE;
        goto out;
    }
    if (b.ctx.route != NULL && c.routes_arg == NULL &&
        policy_route_index(c.policy, b.ctx.route) < 0)
        fprintf(stderr, "warning: no rule names route %s: only unscoped rules apply\n",
                ztctl_quote(b.ctx.route, err, sizeof(err)));
    rc = explain_print(&c, &b, a.json);
out:
    built_reset(&b);
    spec_reset(&a.spec);
    ztctl_strv_reset(&a.groups);
    ztctl_strv_reset(&a.attrs);
    common_reset(&c);
    return rc;
}

/* ---- dispatch ------------------------------------------------------------------------------ */

int ztctl_policy_main(int argc, char **argv)
{
    if (argc == 0) {
        ztctl_usage_error("policy", "missing subcommand (lint, test, explain)");
        return ZTCTL_EXIT_USAGE;
    }
    if (strcmp(argv[0], "-h") == 0 || strcmp(argv[0], "--help") == 0) {
        ztctl_help(stdout, "policy");
        return ZTCTL_EXIT_OK;
    }
    if (strcmp(argv[0], "lint") == 0)
        return policy_lint(argc - 1, argv + 1);
    if (strcmp(argv[0], "test") == 0)
        return policy_test(argc - 1, argv + 1);
    if (strcmp(argv[0], "explain") == 0)
        return policy_explain_cmd(argc - 1, argv + 1);
    ztctl_usage_error("policy", "unknown subcommand '%s'", argv[0]);
    return ZTCTL_EXIT_USAGE;
}
