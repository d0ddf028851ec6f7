/*
 * policy_impl.h - the compiled form of a rules file, shared by rules.c (the
 * compiler) and eval.c (evaluation, explain). Private to policy/: nothing
 * outside this folder includes it.
 *
 * Everything hangs off struct policy and is immutable once policy_compile()
 * returns; all memory except the growable node arrays and the time zones
 * comes from one arena freed in one go.
 */
#ifndef ZT_POLICY_IMPL_H
#define ZT_POLICY_IMPL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "policy.h"
#include "tz.h"

enum cond_op {
    OP_ALL = 0,
    OP_ANY,
    OP_NOT,
    OP_USER,      /* strs: sorted, exact */
    OP_EMAIL,     /* strs: sorted, lower case; compared case-insensitively */
    OP_DOMAIN,    /* strs: sorted, lower case */
    OP_GROUP_ANY, /* groups: policy group ids */
    OP_GROUP_ALL,
    OP_TIER_EQ,  /* num: ordinal */
    OP_TIER_IN,  /* mask */
    OP_TIER_MIN, /* num */
    OP_TIER_MAX,
    OP_SCORE_MIN, /* num */
    OP_SCORE_MAX,
    OP_ATTR_IN, /* name + strs (equals is a one-element list) */
    OP_ATTR_IS, /* name + num (0/1) */
    OP_OWNER,
    OP_COUNTRY,     /* countries: sorted codes, 0 = "unknown" */
    OP_IP,          /* cidrs */
    OP_TIME,        /* win */
    OP_METHOD,      /* strs */
    OP_PATH_PREFIX, /* str, slen */
    OP_PATH_GLOB,   /* segs */
    OP_AUTH         /* num: max age seconds or -1; flag: mfa */
};

struct cidr {
    uint8_t family; /* 4 or 6 */
    uint8_t bits;
    uint8_t addr[16];
};

struct twin {
    uint8_t days;        /* bit d = weekday d (0 Sunday) */
    uint16_t start, end; /* minutes since midnight; end may be 1440 */
    uint32_t tz;         /* index into policy.tzs */
};

struct gseg {
    const char *s;
    uint32_t len;
    uint8_t kind; /* 0 literal, 1 has '*', 2 "**" */
};

struct cond {
    uint8_t op;
    uint8_t single; /* written as one value, not a list (messages) */
    uint8_t flag;   /* OP_AUTH: mfa required */
    uint32_t n;     /* children / values */
    uint32_t first; /* OP_ALL/ANY/NOT: index into policy.kids */
    int64_t num;
    uint64_t mask;
    const char *name;  /* OP_ATTR_*: attribute name */
    const char *str;   /* OP_PATH_*: the pattern as written */
    const char *vtext; /* the value(s) as shown in reasons, e.g. "[IR, KP]" */
    /* The whole reason for outcome V_FALSE (0) / V_TRUE (1) when it does not
     * depend on the request (group conditions), else NULL: formatted once at
     * compile time so that a decision's reasons cost a copy. */
    const char *rtext[2];
    uint16_t rlen[2];
    /* The same prefixed with "<rule id>: " (a default deny's reasons). */
    const char *ptext[2];
    uint16_t plen[2];
    size_t slen;
    /* Filled by policy_eval_prepare(): OP_ATTR_*: the attribute name's slot
     * in the per-request lookup cache (POLICY_ATTR_SLOTS: not cached). OP_METHOD:
     * mask holds bit i for each of the standard methods (eval.c) listed. */
    uint16_t aid;
    /* OP_METHOD, OP_ATTR_IN with at most POLICY_ITEXT_MAX values: the whole
     * reason for V_TRUE when the request's value is u.strs[j] (itext[j],
     * ilen[j]), formatted at compile time; else NULL. */
    const char *const *itext;
    const uint16_t *ilen;
    union {
        const char *const *strs;
        const uint32_t *groups;
        const uint16_t *countries;
        const struct cidr *cidrs;
        const struct gseg *segs;
        const struct twin *win;
    } u;
};

struct rule {
    const char *id;
    enum policy_effect effect; /* POLICY_ALLOW or POLICY_DENY */
    int monitor;
    const char *deny_message; /* NULL if none */
    const char *routes_text;  /* "wiki, payroll" or NULL (all routes) */
    uint32_t root;            /* cond index */
    /* Prefilter: a group leaf (OP_GROUP_ANY) the rule cannot match without -
     * the root itself or the first child of a root "all" - so that a user in
     * none of its groups is rejected with a few bit tests and the same
     * recorded reason as a full evaluation. UINT32_MAX: none. */
    uint32_t pre;
    uint16_t pre_g[4]; /* its policy group ids when at most 4, else npre_g 0 */
    uint8_t npre_g;
    uint16_t idlen; /* strlen(id) */
    /* Shape for the non-recursive evaluation (policy_eval_prepare()):
     * RULE_TREE any; RULE_LEAF the root is a leaf; RULE_CONJ the root is an
     * "all" of leaves and "not"s of leaves. */
    uint8_t shape;
    /* Guard (policy_eval_prepare()): a method, country or path prefix leaf
     * the rule cannot match without - the root or the first child of a root
     * "all" - tested first with no dispatch: GUARD_METHOD gbits is the
     * leaf's method mask, GUARD_COUNTRY a bloom filter of its codes (bit
     * code % 64), GUARD_PREFIX gch the prefix's second byte. When the test
     * says the leaf is V_FALSE, so is the rule, recorded as ev_cond() would
     * (the leaf is the first one evaluated). GUARD_GROUP: the group
     * prefilter (pre) instead. */
    uint8_t guard;
    char gch;
    uint32_t gci; /* the guard leaf */
    uint64_t gbits;
};

enum { RULE_TREE = 0, RULE_LEAF, RULE_CONJ };
enum { GUARD_NONE = 0, GUARD_METHOD, GUARD_COUNTRY, GUARD_PREFIX, GUARD_GROUP };

struct route_rules {
    const uint32_t *deny, *allow, *monitor, *all; /* rule indices, file order */
    uint32_t ndeny, nallow, nmonitor, nall;
    const uint32_t *groups; /* policy group ids named by the rules in all, ascending */
    uint32_t ngroups;
};

/* Device attribute names whose lookups are cached per request. */
#define POLICY_ATTR_SLOTS 32

/* Up to this many groups named in the rules, evaluation against the bound
 * directory builds a per-request bitset of the user's groups. */
#define POLICY_GROUPSET_MAX 1024

struct arena_chunk;

struct policy {
    _Atomic unsigned refs;
    struct arena_chunk *arena;
    const char *version;

    const char *const *tiers;
    size_t ntiers;

    const char *const *routes;
    size_t nroutes;
    struct route_rules *rr; /* nroutes + 1: the last is "unknown route" */

    struct rule *rules;
    size_t nrules;
    struct cond *conds;
    size_t nconds;
    uint32_t *kids;
    size_t nkids;

    const char *const *groups; /* names, by policy group id */
    size_t ngroups;
    uint32_t *group_dir_id; /* directory ids when bound */
    uint64_t dir_serial;    /* 0: not bound to a directory */
    uint16_t *dir_to_pg;    /* bound: directory id -> policy group id + 1 (0: unused) */
    size_t ndir_groups;

    struct tz **tzs;
    size_t ntzs;
};

/* eval.c: the per-condition and per-rule data of the fast evaluation
 * (cond.aid, cond.mask of OP_METHOD, rule.shape), once the conditions and
 * rules are complete. */
void policy_eval_prepare(struct policy *p);

#define POLICY_ITEXT_MAX 16

/* eval.c: cond.itext[j] (see there) into out; returns its length, 0 when
 * there is none or it does not fit. */
size_t policy_cond_itext(const struct policy *p, const struct cond *c, uint32_t j, char *out,
                         size_t len);

/* eval.c: the value text of a leaf (for cond.vtext); returns its length. */
size_t policy_cond_vtext(const struct policy *p, const struct cond *c, char *out, size_t len);

/* eval.c: the request-independent reason of a leaf for outcome val (V_FALSE 0
 * or V_TRUE 1), with c->vtext already set; 0 when the reason depends on the
 * request (then nothing is written). */
size_t policy_cond_rtext(const struct policy *p, const struct cond *c, int val, char *out,
                         size_t len);

#endif
