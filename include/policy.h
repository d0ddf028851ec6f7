/*
 * policy.h - the rules engine: parse, validate, compile, evaluate, explain.
 *
 * Pure: text and structs in, decisions out. No sockets, no clock (the caller
 * passes "now"), no globals. The language is documented in docs/policy.md.
 *
 * Life cycle: policy_compile() (or policy_load()) validates a rules file
 * completely and compiles it into an immutable, refcounted struct policy.
 * A file that fails validation never produces a policy: NULL comes back with
 * one line naming the rule and the JSON path. Publish the policy with an
 * atomic pointer swap; readers take a reference (policy_ref()) for as long as
 * they use strings that point into it.
 *
 * Evaluation (policy_eval()) takes no lock and allocates nothing: the caller
 * fills a struct policy_ctx and provides the struct policy_decision.
 *
 * Decision procedure for a request on route R (docs/policy.md has the long
 * form): the rules that apply are the rules scoped to R plus the unscoped
 * ones, in file order. Monitor-mode rules never change the decision.
 *   1. If any enforce-mode deny rule matches: DENY (the first such rule).
 *   2. Else, the first enforce-mode allow rule that matches: ALLOW.
 *   3. Else, the first enforce-mode allow rule that fails only because of its
 *      auth_age conditions (age too old or MFA missing) - every other
 *      condition holds: STEP_UP with that rule's demand (max_age, MFA).
 *   4. Else: DENY by "default-deny".
 */
#ifndef ZT_POLICY_H
#define ZT_POLICY_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <jansson.h>

struct directory;

#define POLICY_ID_MAX 64        /* rule id length */
#define POLICY_TIERS_MAX 32     /* device tiers */
#define POLICY_RULES_MAX 100000 /* rules in one file */
#define POLICY_DEPTH_MAX 32     /* nesting of all/any/not */
#define POLICY_LIST_MAX 10000   /* values in one "in"/"any_of"/... list */
#define POLICY_STRING_MAX 1024  /* any string value */
#define POLICY_FILE_MAX (16u * 1024 * 1024)

#define POLICY_REASONS_MAX 16  /* reasons kept in a decision */
#define POLICY_REASON_BUF 1024 /* bytes for their text */
#define POLICY_MONITOR_MAX 16  /* monitor-mode results kept in a decision */

struct policy; /* opaque, immutable, refcounted */

/* Inputs of the compiler besides the text. Zero-initialise, then set. */
struct policy_compile_opts {
    const char *name; /* file name for messages; NULL: "rules" */
    /* Device tiers, lowest first. NULL: untrusted, identified, basic, trusted, high. */
    const char *const *tiers;
    size_t ntiers;
    /* Route names known to the proxy config. With a list, a rule naming another
     * route is an error and route index i is routes[i]. NULL: any route name
     * is accepted, indexed in order of first appearance (for linting). */
    const char *const *routes;
    size_t nroutes;
    /* Directory snapshot: when given, every group named in the rules must
     * exist in it, and group conditions are bound to its ids (evaluation with
     * the same snapshot then needs no name lookup). NULL: not checked. */
    const struct directory *dir;
    const char *zoneinfo_dir; /* NULL: /usr/share/zoneinfo */
};

/*
 * Validate and compile rules text. Returns a policy with refcount 1, or NULL
 * with one line in err, for example:
 *   rules.json: $.rules[3] (id "payroll").when.all[1].device_tier.at_least:
 *   unknown tier "hgh" (known: untrusted, identified, basic, trusted, high)
 * Loads the time zones the rules name (file reads): call at load time.
 */
struct policy *policy_compile(const char *text, size_t len, const struct policy_compile_opts *o,
                              char *err, size_t errlen);

/* Read FILE (at most POLICY_FILE_MAX bytes) and policy_compile() it; o->name
 * defaults to FILE. */
struct policy *policy_load(const char *file, const struct policy_compile_opts *o, char *err,
                           size_t errlen);

struct policy *policy_ref(struct policy *p); /* atomic; returns p */
void policy_unref(struct policy *p);         /* NULL is a no-op */

/* The file's "version" string, or "" (valid while p is referenced). */
const char *policy_version(const struct policy *p);
size_t policy_rule_count(const struct policy *p);
size_t policy_route_count(const struct policy *p);
/* Route name -> index (0..policy_route_count()-1), -1 when unknown. */
int policy_route_index(const struct policy *p, const char *name);

/*
 * The i-th (0, 1, ... until NULL) group named by the rules that apply to a
 * route: the rules scoped to it and the unscoped ones, monitor-mode rules
 * included, in any condition (group, any_of, all_of, inside all/any/not).
 * The route is route_index if valid, else the name route (NULL or unknown:
 * the unscoped rules only). The name points into p. The proxy forwards
 * only these groups to the route's upstream (route "forward_groups").
 */
const char *policy_route_group(const struct policy *p, int route_index, const char *route,
                               size_t i);
/* Tier name -> ordinal (0 = lowest), -1 when unknown. */
int policy_tier_index(const struct policy *p, const char *name);
/* Tier ordinal -> name, NULL when out of range. */
const char *policy_tier_name(const struct policy *p, int ordinal);

/* ---- evaluation --------------------------------------------------------- */

/* A device attribute (inventory/posture): name and value as strings;
 * booleans are "true"/"false". */
struct policy_attr {
    const char *name;
    const char *value;
};

/*
 * One request. Fill with policy_ctx_init() then set what is known. Strings
 * are NUL-terminated and only read during the call. Everything unknown fails
 * closed: a condition on data that is absent does not hold.
 */
struct policy_ctx {
    /* Route: route_index if >= 0, else route (name) if not NULL; a route the
     * policy does not know gets the unscoped rules only. */
    int route_index;
    const char *route;

    int identity;     /* 1: a user is authenticated (user/email valid) */
    const char *user; /* "sub" */
    const char *email;
    int64_t auth_time; /* unix seconds of the login */
    int mfa;           /* 1: the login used MFA */

    /* Groups: the user's sorted group ids from directory_user_groups() on
     * dir. With dir NULL the user has no groups. */
    const struct directory *dir;
    const uint32_t *groups;
    size_t ngroups;

    const char *device_id;
    int device_tier;          /* ordinal (policy_tier_index()), -1 unknown */
    int device_score;         /* 0..100, -1 unknown */
    const char *device_owner; /* email or subject of the owner, NULL unknown */
    const struct policy_attr *device_attrs;
    size_t ndevice_attrs;
    int device_stale; /* 1: device trust data too old: device_* fail closed */

    /* Client address: family AF_INET (addr[0..3]) or AF_INET6 (16 bytes,
     * v4-mapped addresses match IPv4 CIDRs); 0 unknown. */
    int ip_family;
    uint8_t ip[16];
    char country[8]; /* ISO 3166 alpha-2 upper case, or "unknown" / "" */

    const char *method; /* "GET" */
    const char *path;   /* normalised path (http_path_normalize), no query */

    int64_t now; /* unix seconds */
};

/* Defaults: no route, no identity, tier/score unknown, no address. */
void policy_ctx_init(struct policy_ctx *c);
/* Set ip_family/ip from a struct sockaddr (AF_INET/AF_INET6). 0 or -1. */
int policy_ctx_set_addr(struct policy_ctx *c, const struct sockaddr *sa);

enum policy_effect { POLICY_DENY = 0, POLICY_ALLOW, POLICY_STEP_UP };

/* What a monitor-mode rule did. */
struct policy_monitor_result {
    const char *rule_id;             /* points into the policy */
    enum policy_effect rule_effect;  /* the rule's own effect */
    int matched;                     /* 1 matched, 0 not, 2 would step up */
    enum policy_effect would_decide; /* decision had this rule been enforced */
};

/*
 * The outcome. Caller storage; policy_eval() resets it. Pointers point into
 * the policy (valid while it is referenced) or into this struct's own buffer
 * (reasons: read them with policy_decision_reason(); do not copy the struct
 * while reading reasons through saved pointers).
 */
struct policy_decision {
    enum policy_effect effect;
    const char *rule_id;      /* deciding rule, or "default-deny" */
    const char *deny_message; /* deciding rule's deny_message, or NULL */
    const char *version;      /* rules version ("" if none) */

    /* Step-up demand (effect == POLICY_STEP_UP): re-authenticate so that the
     * login is at most max_age seconds old (-1: any age) and, if mfa, with MFA.
     * The proxy sends max_age / acr_values to the identity provider. */
    int64_t step_up_max_age;
    int step_up_mfa;

    size_t nreasons;
    size_t reasons_dropped; /* reasons that did not fit */
    uint16_t reason_used;   /* bytes of reason_buf in use */
    uint16_t reason_off[POLICY_REASONS_MAX];
    char reason_buf[POLICY_REASON_BUF];

    size_t nmonitor;
    size_t monitor_dropped;
    struct policy_monitor_result monitor[POLICY_MONITOR_MAX];
};

/*
 * Decide. Lock-free, allocation-free, safe from any number of threads on the
 * same policy. Returns the effect (also in d->effect). Reasons: for ALLOW the
 * conditions that held in the deciding rule; for a deny rule the conditions
 * that made it match; for STEP_UP the auth_age conditions that failed; for
 * default-deny the first failing condition of each allow rule on the route.
 */
enum policy_effect policy_eval(const struct policy *p, const struct policy_ctx *c,
                               struct policy_decision *d);

/* Reason i (0..nreasons-1), NUL-terminated, or NULL. */
const char *policy_decision_reason(const struct policy_decision *d, size_t i);

/* "allow", "deny", "step_up". */
const char *policy_effect_name(enum policy_effect e);

/*
 * Explain: evaluate like policy_eval() and describe, for every rule that
 * applies to the route (in file order), whether it matched and each
 * condition's outcome, without short-circuiting. Text into buf (always
 * NUL-terminated; cut with "..." if too small). Returns the decision's effect.
 */
enum policy_effect policy_explain(const struct policy *p, const struct policy_ctx *c, char *buf,
                                  size_t len);

/*
 * The same as a new JSON object (caller owns; json_decref()):
 *   {"decision": "deny", "rule": "default-deny", "reasons": [...],
 *    "step_up": {...}?, "monitor": [...],
 *    "rules": [{"id", "effect", "mode", "result": "match"|"no_match"|"step_up",
 *               "conditions": [{"ok": true, "reason": "..."}]}]}
 * NULL on allocation failure.
 */
json_t *policy_explain_json(const struct policy *p, const struct policy_ctx *c);

#endif
