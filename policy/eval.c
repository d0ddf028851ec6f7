/*
 * eval.c - evaluate a compiled policy for one request; explain a decision.
 *
 * Conditions have four outcomes, not two:
 *   V_FALSE, V_TRUE;
 *   V_UNKNOWN: the data the condition needs is missing or stale (no identity,
 *     device trust data stale, unknown tier/score/country/address ...);
 *   V_STEP: an auth_age condition failed where logging in again would make it
 *     hold (only in allow rules, never under "not").
 * all/any/not combine them like Kleene logic with V_STEP between TRUE and
 * UNKNOWN: all = FALSE if any FALSE, else UNKNOWN if any UNKNOWN, else STEP
 * if any STEP, else TRUE; any = TRUE if any TRUE, else STEP if any STEP,
 * else UNKNOWN if any UNKNOWN, else FALSE; not swaps TRUE and FALSE and keeps
 * UNKNOWN. An allow rule matches only on TRUE; a deny rule matches on TRUE or
 * UNKNOWN. That is "fail closed" in both directions: missing data can never
 * grant access, and can never lift a deny - even through "not".
 *
 * The fast path formats nothing. Reasons are produced by evaluating the
 * deciding rule(s) a second time with a sink attached.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "directory.h"
#include "policy.h"
#include "policy_impl.h"
#include "tz.h"

enum { V_FALSE = 0, V_TRUE = 1, V_UNKNOWN = 2, V_STEP = 3 };

#define LINE_MAX_ 240

static const char *const day_abbr[7] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
static const char *const day_low[7] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};

struct fb {
    char b[LINE_MAX_ + 8];
    size_t n;
};

struct ev;
typedef void (*ev_emit_cb)(struct ev *e, int val, const char *text, size_t len);

struct ev {
    const struct policy *p;
    const struct policy_ctx *c;
    int full;   /* explain: evaluate every child (no short-circuit) */
    int neg;    /* parity of enclosing "not" */
    int stepok; /* auth_age may answer V_STEP (allow rule, not negated) */
    int depth;
    ev_emit_cb emit; /* NULL: fast path */
    void *arg;
    unsigned want; /* decision sink: which effective outcomes to keep */
    const char *prefix;
    size_t prefix_len;
    int64_t su_age; /* step-up demand of the current rule */
    int su_mfa;

    int bound;      /* c->dir is the snapshot the policy was compiled against */
    int gset_ready; /* gset holds the user's groups as policy group ids */
    int gfast;      /* identity, groups and a bound directory: group tests use gset */
    int fam;        /* 0, 4, 6 */
    int32_t ccode;  /* country as OP_COUNTRY codes: -1 not looked up, 0 unknown */
    uint8_t ip[16];

    /* While deciding, the allow rules' failing leaves are recorded so that a
     * default deny formats its reasons without evaluating the rules again. */
    int recording;
    uint32_t cur_rule;
    uint32_t nrec, rec_dropped;

    uint32_t attr_done; /* bit a: attr_val[a] holds the lookup of slot a */
    uint8_t mcode;      /* request method: 0 not looked up, 1 + method_id(), MCODE_OTHER */

    /* Not cleared by ev_init() (large): valid per the flags/indexes above. */
    struct {
        uint32_t idx; /* zone index + 1, 0: empty */
        int ok;
        struct tz_local l;
    } tzc[4]; /* local time per zone, computed once per request */
    uint64_t gset[POLICY_GROUPSET_MAX / 64];
    const char *attr_val[POLICY_ATTR_SLOTS]; /* attribute value or NULL (missing) */
    struct {
        uint32_t rule, cond;
        uint8_t neg, stepok, val;
    } rec[POLICY_REASONS_MAX];
};

/* ---- small formatter (untrusted values are cut and made printable) ------ */

static inline __attribute__((always_inline)) void fb_s(struct fb *f, const char *s)
{
    size_t n = strlen(s);

    if (n > LINE_MAX_ - f->n)
        n = LINE_MAX_ - f->n;
    memcpy(f->b + f->n, s, n);
    f->n += n;
    f->b[f->n] = '\0';
}

static void fb_v(struct fb *f, const char *s, size_t max)
{
    size_t i;

    for (i = 0; s[i] != '\0' && f->n < LINE_MAX_; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (i == max) {
            fb_s(f, "...");
            return;
        }
        f->b[f->n++] = ch < 0x20 || ch == 0x7f ? '?' : (char)ch;
    }
    f->b[f->n] = '\0';
}

static void fb_i(struct fb *f, int64_t v)
{
    char t[24];
    int i = 0, neg = v < 0;
    uint64_t u = neg ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;

    do {
        t[i++] = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (neg)
        t[i++] = '-';
    while (i > 0 && f->n < LINE_MAX_)
        f->b[f->n++] = t[--i];
    f->b[f->n] = '\0';
}

static void fb_2d(struct fb *f, int v)
{
    if (f->n + 2 <= LINE_MAX_) {
        f->b[f->n++] = (char)('0' + v / 10 % 10);
        f->b[f->n++] = (char)('0' + v % 10);
    }
    f->b[f->n] = '\0';
}

static void fb_dur(struct fb *f, int64_t s)
{
    static const struct {
        int64_t secs;
        const char *unit;
    } u[] = {{86400, "d"}, {3600, "h"}, {60, "m"}, {1, "s"}};
    int shown = 0;
    size_t i;

    if (s <= 0) {
        fb_s(f, "0s");
        return;
    }
    for (i = 0; i < 4 && shown < 2; i++) {
        if (s >= u[i].secs) {
            fb_i(f, s / u[i].secs);
            fb_s(f, u[i].unit);
            s %= u[i].secs;
            shown++;
        } else if (shown > 0) {
            break;
        }
    }
}

static void fb_strs(struct fb *f, const char *const *v, uint32_t n)
{
    uint32_t i;

    fb_s(f, "[");
    for (i = 0; i < n; i++) {
        if (i > 0)
            fb_s(f, ", ");
        if (i == 6 && n > 7) {
            fb_s(f, "... (");
            fb_i(f, n);
            fb_s(f, " in all)");
            break;
        }
        fb_v(f, v[i], 48);
    }
    fb_s(f, "]");
}

static void emit(struct ev *e, int val, struct fb *f)
{
    e->emit(e, val, f->b, f->n);
}

static int flip(int v)
{
    return v == V_TRUE ? V_FALSE : v == V_FALSE ? V_TRUE : v;
}

/* ---- context helpers ---------------------------------------------------------- */

static const struct tz_local *ev_local(struct ev *e, uint32_t tz)
{
    size_t i, slot = tz % 4;

    for (i = 0; i < 4; i++)
        if (e->tzc[i].idx == tz + 1)
            return e->tzc[i].ok ? &e->tzc[i].l : NULL;
    e->tzc[slot].idx = tz + 1;
    e->tzc[slot].ok = tz_local(e->p->tzs[tz], e->c->now, &e->tzc[slot].l) == 0;
    return e->tzc[slot].ok ? &e->tzc[slot].l : NULL;
}

static int bsearch_str(const char *const *v, uint32_t n, const char *s, int fold)
{
    uint32_t lo = 0, hi = n;

    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        /* Exact: the first bytes decide most comparisons with no call
         * (strcmp compares bytes as unsigned char too). */
        int r = fold ? strcasecmp(s, v[mid])
                : (unsigned char)s[0] != (unsigned char)v[mid][0]
                    ? (int)(unsigned char)s[0] - (int)(unsigned char)v[mid][0]
                    : strcmp(s, v[mid]);
        if (r == 0)
            return 1;
        if (r < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return 0;
}

/* Index of s in the sorted v (exact), -1 when absent. */
static int64_t bsearch_idx(const char *const *v, uint32_t n, const char *s)
{
    uint32_t lo = 0, hi = n;

    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        int r = strcmp(s, v[mid]);
        if (r == 0)
            return mid;
        if (r < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return -1;
}

/* bsearch_str() exact, with the common one-element list inline. */
static inline int strs_have(const char *const *v, uint32_t n, const char *s)
{
    if (n == 1)
        return s[0] == v[0][0] && strcmp(s, v[0]) == 0;
    return bsearch_str(v, n, s, 0);
}

/* Sorted id array membership: a short scan for the usual handful of groups. */
static int ids_contain(const uint32_t *ids, size_t n, uint32_t id)
{
    size_t i;

    if (n <= 16) {
        for (i = 0; i < n && ids[i] <= id; i++)
            if (ids[i] == id)
                return 1;
        return 0;
    }
    return directory_ids_contain(ids, n, id);
}

/* The user's groups as a bitset of the groups the rules name (bound
 * directory), once per request. */
static void gset_build(struct ev *e)
{
    const struct policy_ctx *c = e->c;
    size_t i;

    memset(e->gset, 0, (e->p->ngroups + 63) / 64 * sizeof(uint64_t));
    for (i = 0; i < c->ngroups; i++) {
        uint32_t g = c->groups[i];
        if (g < e->p->ndir_groups && e->p->dir_to_pg[g] != 0) {
            uint32_t b = e->p->dir_to_pg[g] - 1u;
            e->gset[b / 64] |= 1ull << (b % 64);
        }
    }
    e->gset_ready = 1;
}

/* Is the user in policy group pg? -1 unknown (no identity). */
static int in_group(struct ev *e, uint32_t pg)
{
    const struct policy_ctx *c = e->c;
    uint32_t id;

    if (!c->identity)
        return -1;
    if (c->dir == NULL || c->ngroups == 0)
        return 0;
    if (e->bound && e->p->dir_to_pg != NULL) {
        /* Once per request: the user's groups as a bitset of the groups the
         * rules name; every group test after that is one bit. */
        if (!e->gset_ready)
            gset_build(e);
        return (int)((e->gset[pg / 64] >> (pg % 64)) & 1);
    }
    if (e->bound)
        id = e->p->group_dir_id[pg];
    else if (directory_group_find(c->dir, e->p->groups[pg], &id) == -1)
        return 0;
    return id != UINT32_MAX && ids_contain(c->groups, c->ngroups, id);
}

/* The standard methods, compared as ids: a method condition's list becomes
 * a bit mask (cond.mask) and the request's method is looked up once. */
static const char *const std_methods[] = {"GET",   "HEAD",    "POST",    "PUT",  "DELETE",
                                          "PATCH", "OPTIONS", "CONNECT", "TRACE"};
#define NSTD_METHODS (sizeof(std_methods) / sizeof(std_methods[0]))
#define MCODE_OTHER (NSTD_METHODS + 1)

/* Index of s in std_methods (exact, case-sensitive), -1 for any other. */
static int method_id(const char *s)
{
    const char *m;
    size_t k;
    int i;

    switch (s[0]) {
    case 'G':
        i = 0;
        break;
    case 'H':
        i = 1;
        break;
    case 'P':
        i = s[1] == 'O' ? 2 : s[1] == 'U' ? 3 : 5;
        break;
    case 'D':
        i = 4;
        break;
    case 'O':
        i = 6;
        break;
    case 'C':
        i = 7;
        break;
    case 'T':
        i = 8;
        break;
    default:
        return -1;
    }
    m = std_methods[i];
    for (k = 0; m[k] != '\0' && m[k] == s[k]; k++)
        ;
    return m[k] == '\0' && s[k] == '\0' ? i : -1;
}

/* The request's method as e->mcode, looked up once (method not NULL). */
static inline unsigned ev_mcode(struct ev *e)
{
    if (e->mcode == 0) {
        int id = method_id(e->c->method);
        e->mcode = (uint8_t)(id < 0 ? MCODE_OTHER : (unsigned)id + 1);
    }
    return e->mcode;
}

static const char *attr_get(const struct policy_ctx *c, const char *name)
{
    size_t i;

    for (i = 0; i < c->ndevice_attrs; i++) {
        const char *n = c->device_attrs[i].name;

        /* The first byte first: most names differ there (a strcmp call each
         * was most of a device_attr condition's cost). */
        if (n != NULL && n[0] == name[0] && strcmp(n, name) == 0)
            return c->device_attrs[i].value;
    }
    return NULL;
}

/* attr_get() once per request and attribute name (slot c->aid). */
static inline const char *attr_cached(struct ev *e, const struct cond *c)
{
    const char *v;

    if (c->aid >= POLICY_ATTR_SLOTS)
        return attr_get(e->c, c->name);
    if (e->attr_done & (1u << c->aid))
        return e->attr_val[c->aid];
    v = attr_get(e->c, c->name);
    e->attr_val[c->aid] = v;
    e->attr_done |= 1u << c->aid;
    return v;
}

/* s equals "true" (is 1) or "false" (is 0), without a call. */
static inline int str_is_bool(const char *s, int64_t is)
{
    const char *t = is ? "true" : "false";
    size_t k;

    for (k = 0; t[k] != '\0' && t[k] == s[k]; k++)
        ;
    return t[k] == '\0' && s[k] == '\0';
}

static int cidr_match(const struct cidr *r, int fam, const uint8_t *ip)
{
    int full, rest;

    if ((fam == 4) != (r->family == 4))
        return 0;
    full = r->bits / 8;
    rest = r->bits % 8;
    for (int i = 0; i < full; i++) /* a few bytes: no call */
        if (r->addr[i] != ip[i])
            return 0;
    if (rest != 0) {
        uint8_t m = (uint8_t)(0xff << (8 - rest));
        if ((ip[full] & m) != r->addr[full])
            return 0;
    }
    return 1;
}

/* glob within one segment: '*' matches any run of characters. */
static int seg_glob(const char *p, size_t pn, const char *s, size_t sn)
{
    size_t pi = 0, si = 0, star = (size_t)-1, mark = 0;

    while (si < sn) {
        if (pi < pn && p[pi] == '*') {
            star = pi++;
            mark = si;
        } else if (pi < pn && p[pi] == s[si]) {
            pi++;
            si++;
        } else if (star != (size_t)-1) {
            pi = star + 1;
            si = ++mark;
        } else {
            return 0;
        }
    }
    while (pi < pn && p[pi] == '*')
        pi++;
    return pi == pn;
}

static int seg_match(const struct gseg *g, const char *s, size_t n)
{
    if (g->kind == 0)
        return g->len == n && memcmp(g->s, s, n) == 0;
    return seg_glob(g->s, g->len, s, n);
}

static const char *seg_next(const char *pos, size_t *len)
{
    const char *sl = strchr(pos, '/');
    *len = sl != NULL ? (size_t)(sl - pos) : strlen(pos);
    return sl != NULL ? sl + 1 : NULL;
}

/* Path glob over segments: "**" matches zero or more whole segments. Greedy
 * with one backtrack point: O(segments * pattern segments). */
static int path_glob(const struct gseg *segs, uint32_t n, const char *path)
{
    const char *pos = path + 1, *star_pos = NULL;
    uint32_t pi = 0, star = UINT32_MAX;
    size_t len;

    if (path[0] != '/')
        return 0;
    while (pos != NULL) {
        const char *next = seg_next(pos, &len);
        if (pi < n && segs[pi].kind == 2) {
            star = pi++;
            star_pos = pos;
        } else if (pi < n && seg_match(&segs[pi], pos, len)) {
            pi++;
            pos = next;
        } else if (star != UINT32_MAX) {
            pi = star + 1;
            seg_next(star_pos, &len);
            star_pos = star_pos[len] == '/' ? star_pos + len + 1 : NULL;
            pos = star_pos;
        } else {
            return 0;
        }
    }
    while (pi < n && segs[pi].kind == 2)
        pi++;
    return pi == n;
}

static int path_under(const char *path, const char *prefix, size_t plen)
{
    if (plen == 1)
        return path[0] == '/';
    if (path[1] != prefix[1]) /* both start with '/'; most prefixes differ next */
        return 0;
    return strncmp(path, prefix, plen) == 0 && (path[plen] == '\0' || path[plen] == '/');
}

/* ---- reasons for each leaf ---------------------------------------------------- */

/* Reasons are formatted off the hot path: keeping these out of line keeps
 * ev_leaf()'s frame small for the common, silent evaluation. */
#define COLD __attribute__((noinline, cold))

COLD static void r_missing(struct ev *e, int val, const char *what, const char *why)
{
    struct fb f;

    f.n = 0;
    fb_s(&f, what);
    fb_s(&f, ": ");
    fb_s(&f, why);
    emit(e, val, &f);
}

COLD static void r_strset(struct ev *e, int val, const char *what, const char *got,
                          const struct cond *c)
{
    struct fb f;

    f.n = 0;
    fb_s(&f, what);
    fb_s(&f, " ");
    fb_v(&f, got, 64);
    if (c->single)
        fb_s(&f, val == V_TRUE ? " == " : " != ");
    else
        fb_s(&f, val == V_TRUE ? " in " : " not in ");
    fb_s(&f, c->vtext);
    emit(e, val, &f);
}

COLD static void r_group(struct ev *e, int val, const struct cond *c, int64_t which)
{
    struct fb f;

    if (val == V_FALSE || val == V_TRUE) {
        if (c->rtext[val] != NULL) {
            e->emit(e, val, c->rtext[val], c->rlen[val]);
            return;
        }
    }
    f.n = 0;
    fb_s(&f, "group ");
    if (c->single) {
        fb_s(&f, c->vtext);
        fb_s(&f, val == V_TRUE ? ": member" : ": not a member");
        emit(e, val, &f);
        return;
    }
    fb_s(&f, c->op == OP_GROUP_ANY ? "any_of " : "all_of ");
    fb_s(&f, c->vtext);
    if (c->op == OP_GROUP_ANY && val == V_TRUE) {
        fb_s(&f, ": member of ");
        fb_s(&f, e->p->groups[c->u.groups[which]]);
    } else if (c->op == OP_GROUP_ANY) {
        fb_s(&f, ": not a member");
    } else if (val == V_TRUE) {
        fb_s(&f, ": member of all");
    } else {
        fb_s(&f, ": not a member of ");
        fb_s(&f, e->p->groups[c->u.groups[which]]);
    }
    emit(e, val, &f);
}

COLD static void r_tier(struct ev *e, int val, const struct cond *c)
{
    static const char *const ops[4][2] = {
        {" != ", " == "}, {" not in ", " in "}, {" < ", " >= "}, {" > ", " <= "}};
    struct fb f;

    f.n = 0;
    fb_s(&f, "device_tier ");
    fb_s(&f, policy_tier_name(e->p, e->c->device_tier));
    fb_s(&f, ops[c->op - OP_TIER_EQ][val == V_TRUE]);
    fb_s(&f, c->vtext);
    emit(e, val, &f);
}

COLD static void r_country(struct ev *e, int val, const struct cond *c)
{
    struct fb f;

    f.n = 0;
    fb_s(&f, "country ");
    fb_v(&f, e->c->country, 8);
    if (c->single)
        fb_s(&f, val == V_TRUE ? " == " : " != ");
    else
        fb_s(&f, val == V_TRUE ? " in " : " not in ");
    fb_s(&f, c->vtext);
    emit(e, val, &f);
}

static void fb_cidr(struct fb *f, const struct cidr *r)
{
    char a[INET6_ADDRSTRLEN];

    if (inet_ntop(r->family == 4 ? AF_INET : AF_INET6, r->addr, a, sizeof(a)) == NULL)
        return;
    fb_s(f, a);
    fb_s(f, "/");
    fb_i(f, r->bits);
}

COLD static void r_ip(struct ev *e, int val, const struct cond *c, int64_t which)
{
    struct fb f;
    char a[INET6_ADDRSTRLEN];

    f.n = 0;
    fb_s(&f, "ip ");
    if (inet_ntop(e->fam == 4 ? AF_INET : AF_INET6, e->ip, a, sizeof(a)) != NULL)
        fb_s(&f, a);
    if (val == V_TRUE) {
        fb_s(&f, " in ");
        fb_cidr(&f, &c->u.cidrs[which]);
    } else {
        fb_s(&f, " not in ");
        fb_s(&f, c->vtext);
    }
    emit(e, val, &f);
}

static void fb_days(struct fb *f, uint8_t days)
{
    int d, start = -1, first = 1;

    if (days == 0x7f) {
        fb_s(f, "every day");
        return;
    }
    /* print runs starting after a gap so "fri-mon" reads naturally */
    for (start = 0; start < 7; start++)
        if (!(days & (1u << ((start + 6) % 7))) && (days & (1u << start)))
            break;
    for (d = 0; d < 7;) {
        int day = (start + d) % 7, len = 0;
        if (!(days & (1u << day))) {
            d++;
            continue;
        }
        while (d + len < 7 && (days & (1u << ((start + d + len) % 7))))
            len++;
        if (!first)
            fb_s(f, ",");
        first = 0;
        fb_s(f, day_low[day]);
        if (len > 1) {
            fb_s(f, "-");
            fb_s(f, day_low[(day + len - 1) % 7]);
        }
        d += len;
    }
}

static void fb_hhmm(struct fb *f, int m)
{
    fb_2d(f, m / 60);
    fb_s(f, ":");
    fb_2d(f, m % 60);
}

COLD static void r_time(struct ev *e, int val, const struct cond *c, const struct tz_local *l)
{
    struct fb f;

    f.n = 0;
    fb_s(&f, "time ");
    if (l != NULL) {
        fb_s(&f, day_abbr[l->wday]);
        fb_s(&f, " ");
        fb_hhmm(&f, l->minute_of_day);
        fb_s(&f, " ");
    } else {
        fb_s(&f, "unknown ");
    }
    fb_s(&f, tz_name(e->p->tzs[c->u.win->tz]));
    fb_s(&f, val == V_TRUE ? " within " : " outside ");
    fb_s(&f, c->vtext);
    emit(e, val, &f);
}

/* The value part of a condition's reasons, computed once at compile time
 * (rules.c stores it in cond.vtext): names are trusted after validation, but
 * still cut and made printable here. */
size_t policy_cond_vtext(const struct policy *p, const struct cond *c, char *out, size_t len)
{
    struct fb f;
    uint32_t i, k = 0;

    f.n = 0;
    f.b[0] = '\0';
    switch (c->op) {
    case OP_USER:
    case OP_EMAIL:
    case OP_DOMAIN:
    case OP_METHOD:
    case OP_ATTR_IN:
        if (c->single && c->op == OP_ATTR_IN) {
            fb_s(&f, "\"");
            fb_v(&f, c->u.strs[0], 64);
            fb_s(&f, "\"");
        } else if (c->single) {
            fb_v(&f, c->u.strs[0], 64);
        } else {
            fb_strs(&f, c->u.strs, c->n);
        }
        break;
    case OP_GROUP_ANY:
    case OP_GROUP_ALL:
        if (c->single) {
            fb_v(&f, p->groups[c->u.groups[0]], 64);
            break;
        }
        fb_s(&f, "[");
        for (i = 0; i < c->n && i < 6; i++) {
            if (i > 0)
                fb_s(&f, ", ");
            fb_v(&f, p->groups[c->u.groups[i]], 48);
        }
        fb_s(&f, i < c->n ? ", ...]" : "]");
        break;
    case OP_TIER_EQ:
    case OP_TIER_MIN:
    case OP_TIER_MAX:
        fb_s(&f, p->tiers[c->num]);
        break;
    case OP_TIER_IN:
        fb_s(&f, "[");
        for (i = 0; i < p->ntiers; i++) {
            if (c->mask & (1ull << i)) {
                if (k++ > 0)
                    fb_s(&f, ", ");
                fb_s(&f, p->tiers[i]);
            }
        }
        fb_s(&f, "]");
        break;
    case OP_COUNTRY:
        if (!c->single)
            fb_s(&f, "[");
        for (i = 0; i < c->n; i++) {
            char cc[3] = {0, 0, 0};
            if (i > 0)
                fb_s(&f, ", ");
            if (i == 12) {
                fb_s(&f, "...");
                break;
            }
            cc[0] = (char)(c->u.countries[i] >> 8);
            cc[1] = (char)(c->u.countries[i] & 0xff);
            fb_s(&f, c->u.countries[i] == 0 ? "unknown" : cc);
        }
        if (!c->single)
            fb_s(&f, "]");
        break;
    case OP_IP:
        if (c->n == 1) {
            fb_cidr(&f, &c->u.cidrs[0]);
            break;
        }
        fb_s(&f, "[");
        for (i = 0; i < c->n && i < 4; i++) {
            if (i > 0)
                fb_s(&f, ", ");
            fb_cidr(&f, &c->u.cidrs[i]);
        }
        fb_s(&f, i < c->n ? ", ...]" : "]");
        break;
    case OP_TIME:
        fb_days(&f, c->u.win->days);
        if (c->u.win->start != 0 || c->u.win->end != 1440) {
            fb_s(&f, " ");
            fb_hhmm(&f, c->u.win->start);
            fb_s(&f, "-");
            fb_hhmm(&f, c->u.win->end);
        }
        break;
    default:
        break;
    }
    if (len > 0) {
        size_t n = f.n < len - 1 ? f.n : len - 1;
        memcpy(out, f.b, n);
        out[n] = '\0';
    }
    return f.n;
}

COLD static void r_attr(struct ev *e, int v, const struct cond *c, const char *val);

/* A reason formatted at compile time by the same code as at evaluation. */
struct capture {
    char *out;
    size_t len, n;
};

static void sink_capture(struct ev *e, int val, const char *text, size_t len)
{
    struct capture *k = e->arg;

    (void)val;
    k->n = 0;
    if (len < k->len) {
        memcpy(k->out, text, len);
        k->out[len] = '\0';
        k->n = len;
    }
}

size_t policy_cond_itext(const struct policy *p, const struct cond *c, uint32_t j, char *out,
                         size_t len)
{
    struct capture k = {out, len, 0};
    struct ev e;

    if ((c->op != OP_METHOD && c->op != OP_ATTR_IN) || c->vtext == NULL || j >= c->n)
        return 0;
    memset(&e, 0, offsetof(struct ev, tzc));
    e.p = p;
    e.emit = sink_capture;
    e.arg = &k;
    /* The request's value is the list's value j: the text is r_*()'s. */
    if (c->op == OP_METHOD)
        r_strset(&e, V_TRUE, "method", c->u.strs[j], c);
    else
        r_attr(&e, V_TRUE, c, c->u.strs[j]);
    return k.n;
}

size_t policy_cond_rtext(const struct policy *p, const struct cond *c, int val, char *out,
                         size_t len)
{
    struct fb f;

    if (c->op == OP_ATTR_IS && val == V_TRUE && c->vtext != NULL) {
        /* holds only with the value "true"/"false" itself */
        struct capture k = {out, len, 0};
        struct ev e;
        memset(&e, 0, offsetof(struct ev, tzc));
        e.p = p;
        e.emit = sink_capture;
        e.arg = &k;
        r_attr(&e, V_TRUE, c, c->num ? "true" : "false");
        return k.n;
    }
    if ((c->op != OP_GROUP_ANY && c->op != OP_GROUP_ALL) || c->vtext == NULL)
        return 0;
    f.n = 0;
    f.b[0] = '\0';
    /* The same text as r_group() formats for the outcomes that do not name
     * the group that decided. */
    if (c->single) {
        fb_s(&f, "group ");
        fb_s(&f, c->vtext);
        fb_s(&f, val == V_TRUE ? ": member" : ": not a member");
    } else if (c->op == OP_GROUP_ANY && val == V_FALSE) {
        fb_s(&f, "group any_of ");
        fb_s(&f, c->vtext);
        fb_s(&f, ": not a member");
    } else if (c->op == OP_GROUP_ALL && val == V_TRUE) {
        fb_s(&f, "group all_of ");
        fb_s(&f, c->vtext);
        fb_s(&f, ": member of all");
    } else {
        return 0;
    }
    if (f.n == 0 || f.n >= len)
        return 0;
    memcpy(out, f.b, f.n + 1);
    return f.n;
}

COLD static void r_score(struct ev *e, int v, const struct cond *c)
{
    struct fb f;

    f.n = 0;
    fb_s(&f, "device_score ");
    fb_i(&f, e->c->device_score);
    if (c->op == OP_SCORE_MIN)
        fb_s(&f, v ? " >= " : " < ");
    else
        fb_s(&f, v ? " <= " : " > ");
    fb_i(&f, c->num);
    emit(e, v, &f);
}

/* val NULL: the device has no such attribute */
COLD static void r_attr(struct ev *e, int v, const struct cond *c, const char *val)
{
    struct fb f;

    f.n = 0;
    fb_s(&f, "device_attr ");
    fb_s(&f, c->name);
    if (val == NULL) {
        fb_s(&f, ": missing");
        emit(e, v, &f);
        return;
    }
    fb_s(&f, " \"");
    fb_v(&f, val, 48);
    fb_s(&f, "\"");
    if (c->op == OP_ATTR_IS) {
        fb_s(&f, v ? " is " : " is not ");
        fb_s(&f, c->num ? "true" : "false");
    } else {
        if (c->single)
            fb_s(&f, v ? " == " : " != ");
        else
            fb_s(&f, v ? " in " : " not in ");
        fb_s(&f, c->vtext);
    }
    emit(e, v, &f);
}

COLD static void r_owner(struct ev *e, int v)
{
    struct fb f;

    f.n = 0;
    fb_s(&f, "device owner ");
    fb_v(&f, e->c->device_owner, 64);
    fb_s(&f, v ? " is the user" : " is not the user");
    emit(e, v, &f);
}

COLD static void r_path(struct ev *e, int v, const struct cond *c)
{
    struct fb f;

    f.n = 0;
    fb_s(&f, "path ");
    fb_v(&f, e->c->path, 96);
    if (c->op == OP_PATH_PREFIX)
        fb_s(&f, v ? " under " : " not under ");
    else
        fb_s(&f, v ? " matches " : " does not match ");
    fb_v(&f, c->str, 96);
    emit(e, v, &f);
}

COLD static void r_auth(struct ev *e, int val, const struct cond *c, int64_t age)
{
    struct fb f;

    f.n = 0;
    int age_ok = c->num < 0 || age <= c->num;

    fb_s(&f, "auth_age ");
    if (c->num >= 0) {
        fb_dur(&f, age);
        fb_s(&f, age_ok ? " <= " : " > ");
        fb_dur(&f, c->num);
    }
    if (c->flag) {
        if (c->num >= 0)
            fb_s(&f, ", ");
        fb_s(&f, e->c->mfa ? "mfa used" : "mfa not used (required)");
    }
    emit(e, val, &f);
}

/* ---- evaluation -------------------------------------------------------------- */

static int v_and(int a, int b)
{
    if (a == V_FALSE || b == V_FALSE)
        return V_FALSE;
    if (a == V_UNKNOWN || b == V_UNKNOWN)
        return V_UNKNOWN;
    if (a == V_STEP || b == V_STEP)
        return V_STEP;
    return V_TRUE;
}

static int v_or(int a, int b)
{
    if (a == V_TRUE || b == V_TRUE)
        return V_TRUE;
    if (a == V_STEP || b == V_STEP)
        return V_STEP;
    if (a == V_UNKNOWN || b == V_UNKNOWN)
        return V_UNKNOWN;
    return V_FALSE;
}

static int ev_cond(struct ev *e, uint32_t ci);

COLD static int ev_device_stale(struct ev *e, const char *what)
{
    if (e->emit != NULL)
        r_missing(e, V_UNKNOWN, what, "device trust data is stale");
    return V_UNKNOWN;
}

static int ev_leaf(struct ev *e, const struct cond *c)
{
    const struct policy_ctx *x = e->c;
    int v = V_FALSE;
    int64_t which = 0;
    uint32_t i;

    switch (c->op) {
    case OP_USER:
    case OP_EMAIL:
        if (!x->identity || (c->op == OP_USER ? x->user : x->email) == NULL) {
            if (e->emit != NULL)
                r_missing(e, V_UNKNOWN, c->op == OP_USER ? "user" : "email", "no identity");
            return V_UNKNOWN;
        }
        v = bsearch_str(c->u.strs, c->n, c->op == OP_USER ? x->user : x->email, c->op == OP_EMAIL);
        if (e->emit != NULL)
            r_strset(e, v, c->op == OP_USER ? "user" : "email",
                     c->op == OP_USER ? x->user : x->email, c);
        return v;
    case OP_DOMAIN: {
        const char *at = x->identity && x->email != NULL ? strrchr(x->email, '@') : NULL;
        if (at == NULL) {
            if (e->emit != NULL)
                r_missing(e, V_UNKNOWN, "email_domain", "no identity");
            return V_UNKNOWN;
        }
        v = bsearch_str(c->u.strs, c->n, at + 1, 1);
        if (e->emit != NULL)
            r_strset(e, v, "email_domain", at + 1, c);
        return v;
    }
    case OP_GROUP_ANY:
    case OP_GROUP_ALL:
        v = c->op == OP_GROUP_ALL;
        for (i = 0; i < c->n; i++) {
            int m = in_group(e, c->u.groups[i]);
            if (m < 0) {
                if (e->emit != NULL)
                    r_missing(e, V_UNKNOWN, "group", "no identity");
                return V_UNKNOWN;
            }
            if (c->op == OP_GROUP_ANY && m) {
                v = V_TRUE;
                which = i;
                break;
            }
            if (c->op == OP_GROUP_ALL && !m) {
                v = V_FALSE;
                which = i;
                break;
            }
        }
        if (e->emit != NULL)
            r_group(e, v, c, which);
        return v;
    case OP_TIER_EQ:
    case OP_TIER_IN:
    case OP_TIER_MIN:
    case OP_TIER_MAX:
        if (x->device_stale)
            return ev_device_stale(e, "device_tier");
        if (x->device_tier < 0 || (size_t)x->device_tier >= e->p->ntiers) {
            if (e->emit != NULL)
                r_missing(e, V_UNKNOWN, "device_tier", "unknown");
            return V_UNKNOWN;
        }
        if (c->op == OP_TIER_EQ)
            v = x->device_tier == c->num;
        else if (c->op == OP_TIER_MIN)
            v = x->device_tier >= c->num;
        else if (c->op == OP_TIER_MAX)
            v = x->device_tier <= c->num;
        else
            v = (c->mask >> x->device_tier) & 1;
        if (e->emit != NULL)
            r_tier(e, v, c);
        return v;
    case OP_SCORE_MIN:
    case OP_SCORE_MAX:
        if (x->device_stale)
            return ev_device_stale(e, "device_score");
        if (x->device_score < 0) {
            if (e->emit != NULL)
                r_missing(e, V_UNKNOWN, "device_score", "unknown");
            return V_UNKNOWN;
        }
        v = c->op == OP_SCORE_MIN ? x->device_score >= c->num : x->device_score <= c->num;
        if (e->emit != NULL)
            r_score(e, v, c);
        return v;
    case OP_ATTR_IN:
    case OP_ATTR_IS: {
        const char *val;
        if (x->device_stale)
            return ev_device_stale(e, "device_attr");
        val = attr_cached(e, c);
        if (val == NULL) {
            if (e->emit != NULL)
                r_attr(e, V_FALSE, c, NULL);
            return V_FALSE;
        }
        if (c->op == OP_ATTR_IS) {
            v = strcmp(val, c->num ? "true" : "false") == 0;
            if (e->emit != NULL && v == V_TRUE && c->rtext[V_TRUE] != NULL) {
                e->emit(e, v, c->rtext[V_TRUE], c->rlen[V_TRUE]);
                return v;
            }
        } else {
            which = bsearch_idx(c->u.strs, c->n, val);
            v = which >= 0;
            if (e->emit != NULL && v == V_TRUE && c->itext != NULL) {
                e->emit(e, v, c->itext[which], c->ilen[which]);
                return v;
            }
        }
        if (e->emit != NULL)
            r_attr(e, v, c, val);
        return v;
    }
    case OP_OWNER:
        if (x->device_stale)
            return ev_device_stale(e, "device_owner_is_user");
        if (!x->identity || x->device_owner == NULL || x->device_owner[0] == '\0') {
            if (e->emit != NULL)
                r_missing(e, V_UNKNOWN, "device_owner_is_user",
                          x->identity ? "device owner unknown" : "no identity");
            return V_UNKNOWN;
        }
        v = (x->email != NULL && strcasecmp(x->device_owner, x->email) == 0) ||
            (x->user != NULL && strcmp(x->device_owner, x->user) == 0);
        if (e->emit != NULL)
            r_owner(e, v);
        return v;
    case OP_COUNTRY: {
        uint16_t code;
        if (e->ccode < 0) {
            if (e->emit != NULL)
                r_missing(e, V_UNKNOWN, "country", "not looked up");
            return V_UNKNOWN;
        }
        code = (uint16_t)e->ccode;
        for (i = 0; i < c->n && !v; i++)
            v = c->u.countries[i] == code;
        if (e->emit != NULL)
            r_country(e, v, c);
        return v;
    }
    case OP_IP:
        if (e->fam == 0) {
            if (e->emit != NULL)
                r_missing(e, V_UNKNOWN, "ip", "client address unknown");
            return V_UNKNOWN;
        }
        for (i = 0; i < c->n && !v; i++) {
            v = cidr_match(&c->u.cidrs[i], e->fam, e->ip);
            which = i;
        }
        if (e->emit != NULL)
            r_ip(e, v, c, which);
        return v;
    case OP_TIME: {
        const struct twin *w = c->u.win;
        const struct tz_local *l = ev_local(e, w->tz);
        int m, d;
        if (l == NULL) {
            if (e->emit != NULL)
                r_time(e, V_UNKNOWN, c, NULL);
            return V_UNKNOWN;
        }
        m = l->minute_of_day;
        d = l->wday;
        if (w->start < w->end)
            v = ((w->days >> d) & 1) && m >= w->start && m < w->end;
        else /* crosses midnight: "days" names the day the window opens */
            v = (((w->days >> d) & 1) && m >= w->start) ||
                (((w->days >> ((d + 6) % 7)) & 1) && m < w->end);
        if (e->emit != NULL)
            r_time(e, v, c, l);
        return v;
    }
    case OP_METHOD:
        if (x->method == NULL) {
            if (e->emit != NULL)
                r_missing(e, V_UNKNOWN, "method", "unknown");
            return V_UNKNOWN;
        }
        which = bsearch_idx(c->u.strs, c->n, x->method);
        v = which >= 0;
        if (e->emit != NULL && v == V_TRUE && c->itext != NULL) {
            e->emit(e, v, c->itext[which], c->ilen[which]);
            return v;
        }
        if (e->emit != NULL)
            r_strset(e, v, "method", x->method, c);
        return v;
    case OP_PATH_PREFIX:
    case OP_PATH_GLOB:
        if (x->path == NULL || x->path[0] != '/') {
            if (e->emit != NULL)
                r_missing(e, V_UNKNOWN, "path", "unknown");
            return V_UNKNOWN;
        }
        if (c->op == OP_PATH_PREFIX)
            v = path_under(x->path, c->str, c->slen);
        else
            v = path_glob(c->u.segs, c->n, x->path);
        if (e->emit != NULL)
            r_path(e, v, c);
        return v;
    case OP_AUTH: {
        int64_t age = x->now - x->auth_time;
        if (age < 0)
            age = 0; /* a login "in the future" is clock skew: treat as fresh */
        if (e->stepok && !e->neg) {
            if (c->num >= 0 && (e->su_age < 0 || c->num < e->su_age))
                e->su_age = c->num;
            e->su_mfa |= c->flag;
        }
        if (!x->identity) {
            v = e->stepok && !e->neg ? V_STEP : V_UNKNOWN;
            if (e->emit != NULL)
                r_missing(e, v, "auth_age", "no identity (log in)");
            return v;
        }
        v = (c->num < 0 || age <= c->num) && (!c->flag || x->mfa);
        if (!v && e->stepok && !e->neg)
            v = V_STEP;
        if (e->emit != NULL)
            r_auth(e, v, c, age);
        return v;
    }
    default:
        break;
    }
    return V_UNKNOWN;
}

static void emit_struct(struct ev *e, const char *what)
{
    if (e->emit != NULL && e->full)
        e->emit(e, -1, what, strlen(what));
}

/* The silent evaluation of the cheapest, most common leaves, without the
 * call into ev_leaf(): the same outcomes as ev_leaf() with no sink. -1: not
 * handled here. */
static inline __attribute__((always_inline)) int leaf_quick(struct ev *e, const struct cond *c)
{
    const struct policy_ctx *x = e->c;
    uint32_t i;

    switch (c->op) {
    case OP_GROUP_ANY:
        if (!x->identity && c->n > 0)
            return V_UNKNOWN; /* in_group() of the first group */
        if (!e->gfast)
            return -1;
        if (!e->gset_ready)
            gset_build(e);
        for (i = 0; i < c->n; i++) {
            uint32_t pg = c->u.groups[i];
            if ((e->gset[pg / 64] >> (pg % 64)) & 1)
                return V_TRUE;
        }
        return V_FALSE;
    case OP_TIER_MIN:
    case OP_TIER_MAX:
    case OP_TIER_EQ:
        if (x->device_stale || x->device_tier < 0 || (size_t)x->device_tier >= e->p->ntiers)
            return V_UNKNOWN;
        return c->op == OP_TIER_MIN   ? x->device_tier >= c->num
               : c->op == OP_TIER_MAX ? x->device_tier <= c->num
                                      : x->device_tier == c->num;
    case OP_SCORE_MIN:
    case OP_SCORE_MAX:
        if (x->device_stale || x->device_score < 0)
            return V_UNKNOWN;
        return c->op == OP_SCORE_MIN ? x->device_score >= c->num : x->device_score <= c->num;
    case OP_COUNTRY:
        if (e->ccode < 0)
            return V_UNKNOWN;
        for (i = 0; i < c->n; i++)
            if (c->u.countries[i] == e->ccode)
                return V_TRUE;
        return V_FALSE;
    case OP_IP:
        if (e->fam == 0)
            return V_UNKNOWN;
        for (i = 0; i < c->n; i++)
            if (cidr_match(&c->u.cidrs[i], e->fam, e->ip))
                return V_TRUE;
        return V_FALSE;
    case OP_PATH_PREFIX:
        if (x->path == NULL || x->path[0] != '/')
            return V_UNKNOWN;
        return path_under(x->path, c->str, c->slen);
    case OP_METHOD:
        if (x->method == NULL)
            return V_UNKNOWN;
        if (ev_mcode(e) != MCODE_OTHER)
            return (int)((c->mask >> (e->mcode - 1)) & 1);
        return strs_have(c->u.strs, c->n, x->method);
    case OP_ATTR_IN:
    case OP_ATTR_IS: {
        const char *val;
        if (x->device_stale)
            return V_UNKNOWN;
        val = attr_cached(e, c);
        if (val == NULL)
            return V_FALSE;
        if (c->op == OP_ATTR_IS)
            return str_is_bool(val, c->num);
        return strs_have(c->u.strs, c->n, val);
    }
    case OP_GROUP_ALL:
        if (!x->identity && c->n > 0)
            return V_UNKNOWN; /* in_group() of the first group */
        return -1;
    default:
        return -1;
    }
}

/* A leaf: evaluate it (quickly when silent) and record it while deciding. */
static inline __attribute__((always_inline)) int ev_lit(struct ev *e, uint32_t ci,
                                                        const struct cond *c)
{
    int v;

    if (e->emit != NULL || (v = leaf_quick(e, c)) < 0)
        v = ev_leaf(e, c);
    if (e->recording) {
        int eff = e->neg ? flip(v) : v;
        if (eff == V_FALSE || eff == V_UNKNOWN) {
            if (e->nrec < POLICY_REASONS_MAX) {
                e->rec[e->nrec].rule = e->cur_rule;
                e->rec[e->nrec].cond = ci;
                e->rec[e->nrec].neg = (uint8_t)e->neg;
                e->rec[e->nrec].stepok = (uint8_t)e->stepok;
                e->rec[e->nrec].val = (uint8_t)v;
                e->nrec++;
            } else {
                e->rec_dropped++;
            }
        }
    }
    return v;
}

static int ev_cond(struct ev *e, uint32_t ci)
{
    const struct cond *c = &e->p->conds[ci];
    const uint32_t *k;
    int v, r;
    uint32_t i;

    switch (c->op) {
    case OP_ALL: {
        int64_t age = e->su_age;
        int mfa = e->su_mfa;
        k = e->p->kids + c->first;
        emit_struct(e, "all");
        e->depth++;
        v = V_TRUE;
        for (i = 0; i < c->n; i++) {
            r = ev_cond(e, k[i]);
            v = v_and(v, r);
            if (v == V_FALSE && !e->full)
                break;
        }
        e->depth--;
        if (v == V_FALSE || v == V_UNKNOWN) {
            e->su_age = age; /* a dead branch demands nothing */
            e->su_mfa = mfa;
        }
        return v;
    }
    case OP_ANY:
        k = e->p->kids + c->first;
        emit_struct(e, "any");
        e->depth++;
        v = V_FALSE;
        for (i = 0; i < c->n; i++) {
            r = ev_cond(e, k[i]);
            v = v_or(v, r);
            if (v == V_TRUE && !e->full)
                break;
        }
        e->depth--;
        return v;
    case OP_NOT:
        emit_struct(e, "not");
        e->depth++;
        e->neg ^= 1;
        v = ev_cond(e, e->p->kids[c->first]);
        e->neg ^= 1;
        e->depth--;
        return v == V_STEP ? V_FALSE : flip(v);
    default:
        return ev_lit(e, ci, c);
    }
}

/* The rule's prefilter: 1 when its group leaf is certainly V_FALSE (the user
 * is known and in none of its groups), which makes the rule V_FALSE; records
 * that leaf as the full evaluation would (it is the first leaf evaluated). */
static inline int ev_pre_false(struct ev *e, const struct rule *r)
{
    const struct policy_ctx *x = e->c;
    uint32_t i;

    if (e->gfast && r->npre_g != 0) {
        if (!e->gset_ready)
            gset_build(e);
        for (i = 0; i < r->npre_g; i++) {
            uint32_t pg = r->pre_g[i];
            if ((e->gset[pg / 64] >> (pg % 64)) & 1)
                return 0; /* member: evaluate in full */
        }
    } else if (!x->identity) {
        return 0; /* the leaf is V_UNKNOWN: evaluate in full */
    } else if (x->dir != NULL && x->ngroups != 0) {
        const struct cond *c = &e->p->conds[r->pre];
        {
            for (i = 0; i < c->n; i++)
                if (in_group(e, c->u.groups[i]) != 0)
                    return 0; /* member: evaluate in full */
        }
    }
    if (e->recording) {
        if (e->nrec < POLICY_REASONS_MAX) {
            e->rec[e->nrec].rule = e->cur_rule;
            e->rec[e->nrec].cond = r->pre;
            e->rec[e->nrec].neg = 0;
            e->rec[e->nrec].stepok = r->effect == POLICY_ALLOW;
            e->rec[e->nrec].val = V_FALSE;
            e->nrec++;
        } else {
            e->rec_dropped++;
        }
    }
    return 1;
}

/* 1 when the rule's guard leaf is certainly V_FALSE (then so is the rule),
 * recorded as the evaluation would; 0: evaluate the rule. */
static inline __attribute__((always_inline)) int ev_guard_false(struct ev *e, const struct rule *r)
{
    const struct policy_ctx *x = e->c;

    switch (r->guard) {
    case GUARD_METHOD:
        if (x->method == NULL)
            return 0;
        if (ev_mcode(e) == MCODE_OTHER || ((r->gbits >> (e->mcode - 1)) & 1))
            return 0;
        break;
    case GUARD_COUNTRY:
        if (e->ccode < 0 || ((r->gbits >> (e->ccode % 64)) & 1))
            return 0;
        break;
    case GUARD_PREFIX:
        /* path_under(): both start with '/', the prefix is longer */
        if (x->path == NULL || x->path[0] != '/' || x->path[1] == r->gch)
            return 0;
        break;
    case GUARD_GROUP:
        return ev_pre_false(e, r); /* records itself */
    default:
        return 0;
    }
    if (e->recording) {
        if (e->nrec < POLICY_REASONS_MAX) {
            e->rec[e->nrec].rule = e->cur_rule;
            e->rec[e->nrec].cond = r->gci;
            e->rec[e->nrec].neg = 0;
            e->rec[e->nrec].stepok = r->effect == POLICY_ALLOW;
            e->rec[e->nrec].val = V_FALSE;
            e->nrec++;
        } else {
            e->rec_dropped++;
        }
    }
    return 1;
}

/* The rule's outcome. Without explain (e->full), a leaf or an "all" of
 * leaves and negated leaves is walked in a loop: the same order, outcomes,
 * records and step-up demand as ev_cond() (depth only matters to explain). */
static int ev_rule(struct ev *e, const struct rule *r)
{
    const struct policy *p = e->p;
    const struct cond *c;
    const uint32_t *k;
    uint32_t i;
    int v;

    e->stepok = r->effect == POLICY_ALLOW;
    e->neg = 0;
    e->depth = 0;
    e->su_age = -1;
    e->su_mfa = 0;
    if (r->shape == RULE_TREE || e->full)
        return ev_cond(e, r->root);
    c = &p->conds[r->root];
    if (r->shape == RULE_LEAF)
        return ev_lit(e, r->root, c);
    k = p->kids + c->first;
    v = V_TRUE;
    for (i = 0; i < c->n && v != V_FALSE; i++) {
        const struct cond *kc = &p->conds[k[i]];
        int w;
        if (kc->op == OP_NOT) {
            uint32_t ki = p->kids[kc->first];
            e->neg = 1;
            w = ev_lit(e, ki, &p->conds[ki]);
            e->neg = 0;
            w = w == V_STEP ? V_FALSE : flip(w);
        } else {
            w = ev_lit(e, k[i], kc);
        }
        v = v_and(v, w);
    }
    if (v == V_FALSE || v == V_UNKNOWN) {
        e->su_age = -1; /* a dead branch demands nothing */
        e->su_mfa = 0;
    }
    return v;
}

void policy_eval_prepare(struct policy *p)
{
    const char *names[POLICY_ATTR_SLOTS];
    uint32_t nnames = 0, a, j;
    size_t i;

    for (i = 0; i < p->nconds; i++) {
        struct cond *c = &p->conds[i];
        if (c->op == OP_METHOD) {
            c->mask = 0;
            for (j = 0; j < c->n; j++) {
                int id = method_id(c->u.strs[j]);
                if (id >= 0)
                    c->mask |= 1ull << id;
            }
        } else if (c->op == OP_ATTR_IN || c->op == OP_ATTR_IS) {
            for (a = 0; a < nnames && strcmp(names[a], c->name) != 0; a++)
                ;
            if (a == nnames && nnames < POLICY_ATTR_SLOTS)
                names[nnames++] = c->name;
            c->aid = (uint16_t)a; /* POLICY_ATTR_SLOTS when the slots ran out */
        }
    }
    for (i = 0; i < p->nrules; i++) {
        struct rule *r = &p->rules[i];
        const struct cond *c = &p->conds[r->root];
        uint32_t gi = UINT32_MAX;
        const struct cond *g;
        if (c->op >= OP_USER)
            gi = r->root;
        else if (c->op == OP_ALL && c->n > 0)
            gi = p->kids[c->first];
        g = gi != UINT32_MAX ? &p->conds[gi] : NULL;
        r->guard = GUARD_NONE;
        if (g != NULL && g->op == OP_METHOD) {
            r->guard = GUARD_METHOD;
            r->gbits = g->mask;
        } else if (g != NULL && g->op == OP_COUNTRY) {
            r->guard = GUARD_COUNTRY;
            r->gbits = 0;
            for (j = 0; j < g->n; j++)
                r->gbits |= 1ull << (g->u.countries[j] % 64);
        } else if (g != NULL && g->op == OP_PATH_PREFIX && g->slen > 1) {
            r->guard = GUARD_PREFIX;
            r->gch = g->str[1];
        } else if (r->pre != UINT32_MAX) {
            r->guard = GUARD_GROUP; /* ev_pre_false() */
        }
        r->gci = gi;
        r->shape = RULE_TREE;
        if (c->op >= OP_USER) {
            r->shape = RULE_LEAF;
        } else if (c->op == OP_ALL) {
            r->shape = RULE_CONJ;
            for (j = 0; j < c->n; j++) {
                const struct cond *kc = &p->conds[p->kids[c->first + j]];
                if (kc->op == OP_NOT)
                    kc = &p->conds[p->kids[kc->first]];
                if (kc->op < OP_USER)
                    r->shape = RULE_TREE;
            }
        }
    }
}

static void ev_init(struct ev *e, const struct policy *p, const struct policy_ctx *c)
{
    size_t i;

    memset(e, 0, offsetof(struct ev, tzc));
    for (i = 0; i < 4; i++)
        e->tzc[i].idx = 0;
    e->p = p;
    e->c = c;
    e->bound = c->dir != NULL && p->dir_serial != 0 && p->dir_serial == directory_serial(c->dir);
    e->gfast = e->bound && c->identity && p->dir_to_pg != NULL && c->ngroups != 0;
    if (c->country[0] == '\0')
        e->ccode = -1;
    else if (strcmp(c->country, "unknown") == 0)
        e->ccode = 0;
    else if (c->country[1] != '\0' && c->country[2] == '\0')
        e->ccode = (uint8_t)c->country[0] << 8 | (uint8_t)c->country[1];
    else
        e->ccode = 0xffff; /* malformed: matches nothing listed */
    if (c->ip_family == AF_INET) {
        e->fam = 4;
        memcpy(e->ip, c->ip, 4);
    } else if (c->ip_family == AF_INET6) {
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(c->ip, mapped, 12) == 0) {
            e->fam = 4;
            memcpy(e->ip, c->ip + 12, 4);
        } else {
            e->fam = 6;
            memcpy(e->ip, c->ip, 16);
        }
    }
}

static const struct route_rules *ev_route(const struct policy *p, const struct policy_ctx *c)
{
    int r = c->route_index;

    if (r < 0 || (size_t)r >= p->nroutes)
        r = c->route != NULL ? policy_route_index(p, c->route) : -1;
    return &p->rr[r < 0 ? p->nroutes : (size_t)r];
}

const char *policy_route_group(const struct policy *p, int route_index, const char *route, size_t i)
{
    const struct route_rules *rr;

    if (route_index < 0 || (size_t)route_index >= p->nroutes)
        route_index = route != NULL ? policy_route_index(p, route) : -1;
    rr = &p->rr[route_index < 0 ? p->nroutes : (size_t)route_index];
    return i < rr->ngroups ? p->groups[rr->groups[i]] : NULL;
}

/* ---- decision ---------------------------------------------------------------- */

static void decision_add(struct policy_decision *d, const char *prefix, size_t prefix_len,
                         const char *text, size_t len)
{
    size_t off = 0, need, plen = prefix != NULL ? prefix_len + 2 : 0;

    if (d->nreasons > 0)
        off = d->reason_used;
    need = plen + len + 1;
    if (d->nreasons >= POLICY_REASONS_MAX || off + need > POLICY_REASON_BUF) {
        d->reasons_dropped++;
        return;
    }
    if (prefix != NULL) {
        memcpy(d->reason_buf + off, prefix, plen - 2);
        memcpy(d->reason_buf + off + plen - 2, ": ", 2);
    }
    memcpy(d->reason_buf + off + plen, text, len);
    d->reason_buf[off + plen + len] = '\0';
    d->reason_off[d->nreasons++] = (uint16_t)off;
    d->reason_used = (uint16_t)(off + need);
}

static void sink_decision(struct ev *e, int val, const char *text, size_t len)
{
    int eff;

    if (val < 0)
        return;
    eff = e->neg ? flip(val) : val;
    if (e->want & (1u << eff))
        decision_add(e->arg, e->prefix, e->prefix_len, text, len);
}

struct outcome {
    enum policy_effect effect;
    const struct rule *rule; /* NULL: default deny */
    int step_v;
    int64_t su_age;
    int su_mfa;
};

static void decide(struct ev *e, const struct route_rules *rr, struct outcome *o)
{
    const struct policy *p = e->p;
    const struct rule *step = NULL;
    uint32_t i;

    memset(o, 0, sizeof(*o));
    o->effect = POLICY_DENY;
    o->su_age = -1;
    for (i = 0; i < rr->ndeny; i++) {
        const struct rule *r = &p->rules[rr->deny[i]];
        int v;
        if (r->guard != GUARD_NONE && ev_guard_false(e, r))
            continue;
        v = ev_rule(e, r);
        if (v == V_TRUE || v == V_UNKNOWN) {
            o->rule = r;
            return;
        }
    }
    e->recording = 1;
    for (i = 0; i < rr->nallow; i++) {
        const struct rule *r = &p->rules[rr->allow[i]];
        int v;
        e->cur_rule = rr->allow[i];
        if (r->guard != GUARD_NONE && ev_guard_false(e, r))
            continue;
        v = ev_rule(e, r);
        if (v == V_TRUE) {
            o->effect = POLICY_ALLOW;
            o->rule = r;
            e->recording = 0;
            return;
        }
        if (v == V_STEP && step == NULL) {
            step = r;
            o->su_age = e->su_age;
            o->su_mfa = e->su_mfa;
        }
    }
    e->recording = 0;
    if (step != NULL) {
        o->effect = POLICY_STEP_UP;
        o->rule = step;
        return;
    }
    o->su_age = -1;
}

static enum policy_effect monitor_would(const struct outcome *o, const struct rule *r, int v)
{
    if (o->rule != NULL && o->effect == POLICY_DENY)
        return POLICY_DENY; /* an enforced deny wins over anything */
    if (r->effect == POLICY_DENY)
        return v == V_TRUE || v == V_UNKNOWN ? POLICY_DENY : o->effect;
    if (v == V_TRUE)
        return POLICY_ALLOW;
    if (v == V_STEP && o->effect != POLICY_ALLOW)
        return POLICY_STEP_UP;
    return o->effect;
}

static int monitor_matched(const struct rule *r, int v)
{
    if (v == V_TRUE || (v == V_UNKNOWN && r->effect == POLICY_DENY))
        return 1;
    return v == V_STEP ? 2 : 0;
}

static void reasons_fill(struct ev *e, const struct route_rules *rr, const struct outcome *o,
                         struct policy_decision *d)
{
    uint32_t i;

    e->emit = sink_decision;
    e->arg = d;
    if (o->rule != NULL) {
        e->prefix = NULL;
        e->want = o->effect == POLICY_ALLOW     ? 1u << V_TRUE
                  : o->effect == POLICY_STEP_UP ? 1u << V_STEP
                                                : (1u << V_TRUE) | (1u << V_UNKNOWN);
        (void)ev_rule(e, o->rule);
    } else {
        /* Default deny: format the failing leaves recorded while deciding
         * (each leaf is evaluated once more, with its rule's context). */
        e->want = (1u << V_FALSE) | (1u << V_UNKNOWN);
        for (i = 0; i < e->nrec; i++) {
            const struct rule *ru = &e->p->rules[e->rec[i].rule];
            const struct cond *lc = &e->p->conds[e->rec[i].cond];
            int v = e->rec[i].val;
            e->prefix = ru->id;
            e->prefix_len = ru->idlen;
            e->neg = e->rec[i].neg;
            e->stepok = e->rec[i].stepok;
            if ((v == V_FALSE || v == V_TRUE) && lc->ptext[v] != NULL) {
                /* the leaf's outcome does not depend on the request: the text
                 * formatted at compile time, rule id included */
                int eff = e->neg ? flip(v) : v;
                if (e->want & (1u << eff))
                    decision_add(d, NULL, 0, lc->ptext[v], lc->plen[v]);
                continue;
            }
            (void)ev_leaf(e, lc);
        }
        d->reasons_dropped += e->rec_dropped;
        if (rr->nallow == 0)
            decision_add(d, NULL, 0, "no allow rule applies to this route",
                         strlen("no allow rule applies to this route"));
    }
    e->emit = NULL;
}

static enum policy_effect eval_into(struct ev *e, const struct policy *p,
                                    const struct policy_ctx *c, struct policy_decision *d,
                                    struct outcome *o, const struct route_rules **rrp)
{
    const struct route_rules *rr = ev_route(p, c);
    uint32_t i;

    ev_init(e, p, c);
    d->nreasons = 0;
    d->reason_used = 0;
    d->reasons_dropped = 0;
    d->reason_buf[0] = '\0';
    d->nmonitor = 0;
    d->monitor_dropped = 0;
    d->version = p->version;

    decide(e, rr, o);
    d->effect = o->effect;
    d->rule_id = o->rule != NULL ? o->rule->id : "default-deny";
    d->deny_message = o->effect == POLICY_DENY && o->rule != NULL ? o->rule->deny_message : NULL;
    d->step_up_max_age = o->effect == POLICY_STEP_UP ? o->su_age : -1;
    d->step_up_mfa = o->effect == POLICY_STEP_UP ? o->su_mfa : 0;

    for (i = 0; i < rr->nmonitor; i++) {
        const struct rule *r = &p->rules[rr->monitor[i]];
        int v = r->guard != GUARD_NONE && ev_guard_false(e, r) ? V_FALSE : ev_rule(e, r);
        struct policy_monitor_result *m;
        if (d->nmonitor >= POLICY_MONITOR_MAX) {
            d->monitor_dropped++;
            continue;
        }
        m = &d->monitor[d->nmonitor++];
        m->rule_id = r->id;
        m->rule_effect = r->effect;
        m->matched = monitor_matched(r, v);
        m->would_decide = monitor_would(o, r, v);
    }
    reasons_fill(e, rr, o, d);
    *rrp = rr;
    return d->effect;
}

enum policy_effect policy_eval(const struct policy *p, const struct policy_ctx *c,
                               struct policy_decision *d)
{
    struct ev e;
    struct outcome o;
    const struct route_rules *rr;

    return eval_into(&e, p, c, d, &o, &rr);
}

const char *policy_decision_reason(const struct policy_decision *d, size_t i)
{
    return i < d->nreasons ? d->reason_buf + d->reason_off[i] : NULL;
}

const char *policy_effect_name(enum policy_effect e)
{
    switch (e) {
    case POLICY_ALLOW:
        return "allow";
    case POLICY_STEP_UP:
        return "step_up";
    case POLICY_DENY:
        break;
    }
    return "deny";
}

void policy_ctx_init(struct policy_ctx *c)
{
    memset(c, 0, sizeof(*c));
    c->route_index = -1;
    c->device_tier = -1;
    c->device_score = -1;
}

int policy_ctx_set_addr(struct policy_ctx *c, const struct sockaddr *sa)
{
    if (sa == NULL)
        return -1;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
        c->ip_family = AF_INET;
        memset(c->ip, 0, sizeof(c->ip));
        memcpy(c->ip, &in->sin_addr, 4);
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
        c->ip_family = AF_INET6;
        memcpy(c->ip, &in6->sin6_addr, 16);
        return 0;
    }
    return -1;
}

/* ---- explain ------------------------------------------------------------------ */

static const char *val_name(int v)
{
    switch (v) {
    case V_TRUE:
        return "true";
    case V_FALSE:
        return "false";
    case V_STEP:
        return "step_up";
    default:
        return "unknown";
    }
}

static const char *rule_result(const struct rule *r, int v)
{
    if (v == V_TRUE || (v == V_UNKNOWN && r->effect == POLICY_DENY))
        return "match";
    if (v == V_STEP)
        return "step_up";
    return v == V_UNKNOWN ? "no_match (data unknown)" : "no_match";
}

struct tbuf {
    char *b;
    size_t len, n;
    int cut;
};

static void tb_add(struct tbuf *t, const char *s, size_t n)
{
    if (t->len == 0)
        return;
    if (t->cut || t->n + n + 1 > t->len) {
        if (!t->cut) {
            size_t room = t->len - 1 - t->n;
            memcpy(t->b + t->n, s, room);
            t->n += room;
            if (t->len >= 5)
                memcpy(t->b + t->len - 5, "...\n", 4);
            t->cut = 1;
        }
        t->b[t->len - 1] = '\0';
        return;
    }
    memcpy(t->b + t->n, s, n);
    t->n += n;
    t->b[t->n] = '\0';
}

static void tb_s(struct tbuf *t, const char *s)
{
    tb_add(t, s, strlen(s));
}

static void sink_text(struct ev *e, int val, const char *text, size_t len)
{
    struct tbuf *t = e->arg;
    int i;

    for (i = 0; i < e->depth + 2; i++)
        tb_s(t, "  ");
    if (val >= 0) {
        tb_s(t, val == V_TRUE    ? "[true]    "
                : val == V_FALSE ? "[false]   "
                : val == V_STEP  ? "[step_up] "
                                 : "[unknown] ");
    }
    tb_add(t, text, len);
    tb_s(t, "\n");
}

enum policy_effect policy_explain(const struct policy *p, const struct policy_ctx *c, char *buf,
                                  size_t len)
{
    struct policy_decision d;
    struct tbuf t = {buf, len, 0, 0};
    const struct route_rules *rr;
    struct outcome o;
    struct ev e;
    struct fb f;

    f.n = 0;
    size_t i;

    if (len > 0)
        buf[0] = '\0';
    eval_into(&e, p, c, &d, &o, &rr);
    tb_s(&t, "decision: ");
    tb_s(&t, policy_effect_name(d.effect));
    tb_s(&t, " (rule ");
    tb_s(&t, d.rule_id);
    tb_s(&t, ")\n");
    if (d.effect == POLICY_STEP_UP) {
        f.n = 0;
        fb_s(&f, "step-up: max_age ");
        if (d.step_up_max_age >= 0)
            fb_i(&f, d.step_up_max_age);
        else
            fb_s(&f, "any");
        fb_s(&f, d.step_up_mfa ? "s, mfa required\n" : "s\n");
        tb_s(&t, f.b);
    }
    for (i = 0; i < d.nreasons; i++) {
        tb_s(&t, "  reason: ");
        tb_s(&t, policy_decision_reason(&d, i));
        tb_s(&t, "\n");
    }
    for (i = 0; i < d.nmonitor; i++) {
        tb_s(&t, "  monitor: ");
        tb_s(&t, d.monitor[i].rule_id);
        tb_s(&t, d.monitor[i].matched == 1   ? " matched"
                 : d.monitor[i].matched == 2 ? " would step up"
                                             : " did not match");
        tb_s(&t, ", would decide ");
        tb_s(&t, policy_effect_name(d.monitor[i].would_decide));
        tb_s(&t, "\n");
    }
    tb_s(&t, "rules:\n");
    e.full = 1;
    e.emit = sink_text;
    e.arg = &t;
    e.prefix = NULL;
    for (i = 0; i < rr->nall; i++) {
        const struct rule *r = &p->rules[rr->all[i]];
        int v;
        tb_s(&t, "  ");
        tb_s(&t, r->id);
        tb_s(&t, r->effect == POLICY_ALLOW ? " (allow, " : " (deny, ");
        tb_s(&t, r->monitor ? "monitor, " : "enforce, ");
        tb_s(&t, r->routes_text != NULL ? "routes: " : "all routes");
        if (r->routes_text != NULL)
            tb_s(&t, r->routes_text);
        tb_s(&t, ")\n");
        v = ev_rule(&e, r);
        tb_s(&t, "    => ");
        tb_s(&t, rule_result(r, v));
        tb_s(&t, "\n");
    }
    return d.effect;
}

/*
 * A JSON string of s[0..len) that never fails on bad bytes: reasons and
 * condition texts quote request values (a path, a user name) and may be cut
 * at a buffer's end, so they are not always valid UTF-8, which jansson
 * refuses. Each byte that does not start a valid UTF-8 sequence becomes
 * U+FFFD, so explain still answers and shows where the odd bytes were.
 */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
    size_t k, i;
    unsigned int cp;

    if (p[0] < 0x80)
        return 1;
    if (p[0] >= 0xc2 && p[0] <= 0xdf)
        k = 2, cp = p[0] & 0x1f;
    else if (p[0] >= 0xe0 && p[0] <= 0xef)
        k = 3, cp = p[0] & 0x0f;
    else if (p[0] >= 0xf0 && p[0] <= 0xf4)
        k = 4, cp = p[0] & 0x07;
    else
        return 0;
    if (n < k)
        return 0;
    for (i = 1; i < k; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    if ((k == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
        (k == 4 && (cp < 0x10000 || cp > 0x10ffff)))
        return 0;
    return k;
}

static json_t *json_text(const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    json_t *j = json_stringn(s, len);
    char *b;
    size_t i = 0, n = 0;

    if (j != NULL || s == NULL || len > (SIZE_MAX - 1) / 3)
        return j;
    b = malloc(len * 3 + 1);
    if (b == NULL)
        return NULL;
    while (i < len) {
        size_t k = utf8_seq(u + i, len - i);
        if (k == 0 || (k == 1 && u[i] == 0)) {
            memcpy(b + n, "\xef\xbf\xbd", 3);
            n += 3;
            i++;
            continue;
        }
        memcpy(b + n, s + i, k);
        n += k;
        i += k;
    }
    j = json_stringn(b, n);
    free(b);
    return j;
}

static json_t *json_text0(const char *s)
{
    return json_text(s, s != NULL ? strlen(s) : 0);
}

struct jsink {
    json_t *conds;
    int failed;
};

static void sink_json(struct ev *e, int val, const char *text, size_t len)
{
    struct jsink *j = e->arg;
    json_t *o;

    o = json_pack("{s:s, s:o, s:i}", "result", val < 0 ? "combinator" : val_name(val), "text",
                  json_text(text, len), "depth", e->depth);
    if (o == NULL || json_array_append_new(j->conds, o) == -1)
        j->failed = 1;
}

json_t *policy_explain_json(const struct policy *p, const struct policy_ctx *c)
{
    struct policy_decision d;
    const struct route_rules *rr;
    struct outcome o;
    struct ev e;
    json_t *root = NULL, *arr, *rules, *mon;
    struct jsink js = {NULL, 0};
    size_t i;

    eval_into(&e, p, c, &d, &o, &rr);
    arr = json_array();
    rules = json_array();
    mon = json_array();
    root = json_object();
    if (arr == NULL || rules == NULL || mon == NULL || root == NULL)
        goto err;
    for (i = 0; i < d.nreasons; i++)
        if (json_array_append_new(arr, json_text0(policy_decision_reason(&d, i))) == -1)
            goto err;
    for (i = 0; i < d.nmonitor; i++) {
        json_t *m = json_pack("{s:s, s:s, s:s}", "rule", d.monitor[i].rule_id, "result",
                              d.monitor[i].matched == 1   ? "match"
                              : d.monitor[i].matched == 2 ? "step_up"
                                                          : "no_match",
                              "would_decide", policy_effect_name(d.monitor[i].would_decide));
        if (m == NULL || json_array_append_new(mon, m) == -1)
            goto err;
    }
    if (json_object_set_new(root, "decision", json_string(policy_effect_name(d.effect))) == -1 ||
        json_object_set_new(root, "rule", json_string(d.rule_id)) == -1 ||
        json_object_set_new(root, "version", json_string(d.version)) == -1 ||
        json_object_set(root, "reasons", arr) == -1 ||
        json_object_set(root, "monitor", mon) == -1 || json_object_set(root, "rules", rules) == -1)
        goto err;
    if (d.deny_message != NULL &&
        json_object_set_new(root, "deny_message", json_text0(d.deny_message)) == -1)
        goto err;
    if (d.effect == POLICY_STEP_UP) {
        json_t *su =
            json_pack("{s:I, s:b}", "max_age", (json_int_t)d.step_up_max_age, "mfa", d.step_up_mfa);
        if (su == NULL || json_object_set_new(root, "step_up", su) == -1)
            goto err;
    }
    e.full = 1;
    e.emit = sink_json;
    e.arg = &js;
    for (i = 0; i < rr->nall; i++) {
        const struct rule *r = &p->rules[rr->all[i]];
        json_t *ro;
        int v;
        js.conds = json_array();
        if (js.conds == NULL)
            goto err;
        v = ev_rule(&e, r);
        ro = json_pack("{s:s, s:s, s:s, s:s, s:o}", "id", r->id, "effect",
                       r->effect == POLICY_ALLOW ? "allow" : "deny", "mode",
                       r->monitor ? "monitor" : "enforce", "result", rule_result(r, v),
                       "conditions", js.conds);
        js.conds = NULL;
        if (ro == NULL || js.failed) {
            /* a condition that could not be turned into JSON: ro holds the
             * rest and is not in the tree yet */
            json_decref(ro);
            goto err;
        }
        if (json_array_append_new(rules, ro) == -1)
            goto err;
    }
    json_decref(arr);
    json_decref(mon);
    json_decref(rules);
    return root;
err:
    json_decref(js.conds);
    json_decref(arr);
    json_decref(mon);
    json_decref(rules);
    json_decref(root);
    return NULL;
}
