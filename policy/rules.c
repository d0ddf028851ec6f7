/*
 * rules.c - the rules compiler: parse, validate completely, compile.
 *
 * Validation is strict (unknown keys, wrong types, unknown tiers, routes,
 * groups and time zones, malformed values are all errors) and the first error
 * is reported with the rule id and its JSON path. Nothing is half-built: on
 * any error the partial policy is freed and NULL is returned.
 *
 * Values are compiled once here so evaluation never parses: tiers become
 * ordinals or bit masks, CIDRs binary prefixes, countries 16-bit codes,
 * groups interned ids, time windows minutes plus a loaded zone, globs
 * pre-split segments, and string sets sorted arrays for binary search.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "directory.h"
#include "policy.h"
#include "policy_impl.h"
#include "tz.h"

static const char *const default_tiers[] = {"untrusted", "identified", "basic", "trusted", "high"};

/* ISO 3166-1 alpha-2 (officially assigned), plus XK (Kosovo, used by GeoIP). */
static const char iso3166[] =
    "ADAEAFAGAIALAMAOAQARASATAUAWAXAZBABBBDBEBFBGBHBIBJBLBMBNBOBQBRBSBTBVBWBYBZCACCCDCFCGCHCI"
    "CKCLCMCNCOCRCUCVCWCXCYCZDEDJDKDMDODZECEEEGEHERESETFIFJFKFMFOFRGAGBGDGEGFGGGHGIGLGMGNGPGQ"
    "GRGSGTGUGWGYHKHMHNHRHTHUIDIEILIMINIOIQIRISITJEJMJOJPKEKGKHKIKMKNKPKRKWKYKZLALBLCLILKLRLS"
    "LTLULVLYMAMCMDMEMFMGMHMKMLMMMNMOMPMQMRMSMTMUMVMWMXMYMZNANCNENFNGNINLNONPNRNUNZOMPAPEPFPG"
    "PHPKPLPMPNPRPSPTPWPYQARERORSRURWSASBSCSDSESGSHSISJSKSLSMSNSOSRSSSTSVSXSYSZTCTDTFTGTHTJTK"
    "TLTMTNTOTRTTTVTWTZUAUGUMUSUYUZVAVCVEVGVIVNVUWFWSXKYEYTZAZMZW";

static const char *const day_names[7] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};

/* ---- arena --------------------------------------------------------------- */

struct arena_chunk {
    struct arena_chunk *next;
    size_t used, cap;
    max_align_t data[];
};

static void *arena_alloc(struct policy *p, size_t n)
{
    struct arena_chunk *c = p->arena;
    void *r;

    n = (n + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
    if (n == 0)
        n = sizeof(max_align_t);
    if (c == NULL || c->cap - c->used < n) {
        size_t cap = n > 65536 ? n : 65536;
        c = malloc(sizeof(*c) + cap);
        if (c == NULL)
            return NULL;
        c->cap = cap;
        c->used = 0;
        c->next = p->arena;
        p->arena = c;
    }
    r = (char *)c->data + c->used;
    c->used += n;
    memset(r, 0, n);
    return r;
}

static char *arena_strdup(struct policy *p, const char *s, size_t len)
{
    char *r = arena_alloc(p, len + 1);
    if (r != NULL) {
        memcpy(r, s, len);
        r[len] = '\0';
    }
    return r;
}

static void policy_free(struct policy *p)
{
    size_t i;

    if (p == NULL)
        return;
    for (i = 0; i < p->ntzs; i++)
        tz_free(p->tzs[i]);
    free(p->tzs);
    free(p->conds);
    free(p->kids);
    while (p->arena != NULL) {
        struct arena_chunk *n = p->arena->next;
        free(p->arena);
        p->arena = n;
    }
    free(p);
}

/* ---- compile context and messages ------------------------------------------ */

struct cc {
    struct policy *p;
    const struct policy_compile_opts *o;
    const char *name;
    char *err;
    size_t errlen;
    int failed;
    char path[768];
    size_t plen;
    size_t conds_cap, kids_cap;
    /* growable lists while compiling */
    const char **routes;
    size_t nroutes, routes_cap;
    const char **groups;
    size_t ngroups, groups_cap;
};

static int cfail(struct cc *cc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int cfail(struct cc *cc, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (cc->failed)
        return -1;
    cc->failed = 1;
    if (cc->errlen == 0)
        return -1;
    n = snprintf(cc->err, cc->errlen, "%s: %s: ", cc->name, cc->path);
    if (n < 0 || (size_t)n >= cc->errlen)
        return -1;
    va_start(ap, fmt);
    vsnprintf(cc->err + n, cc->errlen - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

static size_t cpush(struct cc *cc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Append to the JSON path; returns the old length for cpop(). */
static size_t cpush(struct cc *cc, const char *fmt, ...)
{
    size_t old = cc->plen;
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(cc->path + old, sizeof(cc->path) - old, fmt, ap);
    va_end(ap);
    if (n > 0)
        cc->plen = old + (size_t)n < sizeof(cc->path) ? old + (size_t)n : sizeof(cc->path) - 1;
    return old;
}

static void cpop(struct cc *cc, size_t old)
{
    cc->plen = old;
    cc->path[old] = '\0';
}

/* Error at path + suffix. */
#define CFAIL_AT(cc, suffix, ...) (cpush((cc), "%s", (suffix)), cfail((cc), __VA_ARGS__))

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
    case JSON_NULL:
        return "null";
    }
    return "something else";
}

/* Shortened, printable copy of untrusted text for a message. */
static const char *shown(const char *s, char *buf, size_t len)
{
    size_t i, o = 0;

    for (i = 0; s[i] != '\0' && o + 5 < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            buf[o++] = '\\';
        buf[o++] = c < 0x20 || c == 0x7f ? '?' : (char)c;
    }
    if (s[i] != '\0') {
        buf[o++] = '.';
        buf[o++] = '.';
        buf[o++] = '.';
    }
    buf[o] = '\0';
    return buf;
}

/* "a, b, c" of a list, for "known: ..." hints. */
static const char *list_text(const char *const *v, size_t n, char *buf, size_t len)
{
    size_t i, o = 0;

    buf[0] = '\0';
    for (i = 0; i < n && o + 1 < len; i++) {
        int w = snprintf(buf + o, len - o, "%s%s", i > 0 ? ", " : "", v[i]);
        if (w < 0 || (size_t)w >= len - o) {
            if (len > 4)
                memcpy(buf + len - 4, "...", 4);
            break;
        }
        o += (size_t)w;
    }
    return buf;
}

/* The string value of v, or an error at the current path. */
static const char *get_str(struct cc *cc, json_t *v, size_t *len)
{
    if (!json_is_string(v)) {
        cfail(cc, "expected a string, got %s", type_name(v));
        return NULL;
    }
    *len = json_string_length(v);
    if (*len != strlen(json_string_value(v))) {
        cfail(cc, "string contains a NUL byte");
        return NULL;
    }
    if (*len > POLICY_STRING_MAX) {
        cfail(cc, "string longer than %d bytes", POLICY_STRING_MAX);
        return NULL;
    }
    return json_string_value(v);
}

/* obj must be an object whose keys are all in allowed (NULL-terminated). */
static int check_keys(struct cc *cc, json_t *obj, const char *const *allowed)
{
    const char *key;
    json_t *val;
    char known[256], b[80];

    if (!json_is_object(obj))
        return cfail(cc, "expected an object, got %s", type_name(obj));
    json_object_foreach(obj, key, val)
    {
        size_t i, n = 0;
        int ok = 0;
        for (i = 0; allowed[i] != NULL; i++) {
            ok |= strcmp(key, allowed[i]) == 0;
            n++;
        }
        if (!ok) {
            cpush(cc, ".%s", shown(key, b, sizeof(b)));
            return cfail(cc, "unknown key (expected %s)",
                         list_text(allowed, n, known, sizeof(known)));
        }
    }
    return 0;
}

/* Object with exactly one of the keys in allowed: returns it, NULL on error. */
static const char *one_key(struct cc *cc, json_t *obj, const char *const *allowed, json_t **val)
{
    char known[256];
    size_t n = 0;
    const char *k;

    while (allowed[n] != NULL)
        n++;
    if (check_keys(cc, obj, allowed) == -1)
        return NULL;
    if (json_object_size(obj) != 1) {
        cfail(cc, "expected exactly one of: %s", list_text(allowed, n, known, sizeof(known)));
        return NULL;
    }
    json_object_foreach(obj, k, *val)
    {
        return k;
    }
    return NULL;
}

/* ---- growable arrays --------------------------------------------------------- */

static int cond_new(struct cc *cc, uint8_t op, uint32_t *idx)
{
    struct policy *p = cc->p;

    if (p->nconds == cc->conds_cap) {
        size_t cap = cc->conds_cap == 0 ? 256 : cc->conds_cap * 2;
        struct cond *n = realloc(p->conds, cap * sizeof(*n));
        if (n == NULL)
            return cfail(cc, "out of memory");
        p->conds = n;
        cc->conds_cap = cap;
    }
    if (p->nconds >= UINT32_MAX / 2)
        return cfail(cc, "too many conditions");
    memset(&p->conds[p->nconds], 0, sizeof(p->conds[0]));
    p->conds[p->nconds].op = op;
    *idx = (uint32_t)p->nconds++;
    return 0;
}

static int kids_add(struct cc *cc, const uint32_t *k, size_t n, uint32_t *first)
{
    struct policy *p = cc->p;

    if (p->nkids + n > cc->kids_cap) {
        size_t cap = cc->kids_cap == 0 ? 256 : cc->kids_cap;
        uint32_t *nk;
        while (cap < p->nkids + n)
            cap *= 2;
        nk = realloc(p->kids, cap * sizeof(*nk));
        if (nk == NULL)
            return cfail(cc, "out of memory");
        p->kids = nk;
        cc->kids_cap = cap;
    }
    memcpy(p->kids + p->nkids, k, n * sizeof(*k));
    *first = (uint32_t)p->nkids;
    p->nkids += n;
    return 0;
}

static int list_push(struct cc *cc, const char ***v, size_t *n, size_t *cap, const char *s)
{
    if (*n == *cap) {
        size_t nc = *cap == 0 ? 16 : *cap * 2;
        const char **nv = realloc(*v, nc * sizeof(**v));
        if (nv == NULL)
            return cfail(cc, "out of memory");
        *v = nv;
        *cap = nc;
    }
    (*v)[(*n)++] = s;
    return 0;
}

/* ---- value checkers: validate s (at the current path), write normal form ---- */

typedef int (*value_check_cb)(struct cc *cc, const char *s, size_t len, char *out);

static int chk_user(struct cc *cc, const char *s, size_t len, char *out)
{
    size_t i;

    if (len == 0 || len > 255)
        return cfail(cc, "expected a user (subject) of 1..255 bytes");
    for (i = 0; i < len; i++) {
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return cfail(cc, "control character in user");
        out[i] = s[i];
    }
    return 0;
}

static int chk_domain(struct cc *cc, const char *s, size_t len, char *out)
{
    size_t i;
    char b[80];

    if (len == 0 || len > 253 || s[0] == '.' || s[len - 1] == '.')
        return cfail(cc, "invalid domain \"%s\"", shown(s, b, sizeof(b)));
    for (i = 0; i < len; i++) {
        char c = s[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c + 32);
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.'))
            return cfail(cc, "invalid domain \"%s\" (letters, digits, '-' and '.')",
                         shown(s, b, sizeof(b)));
        out[i] = c;
    }
    return 0;
}

static int chk_email(struct cc *cc, const char *s, size_t len, char *out)
{
    const char *at = memchr(s, '@', len);
    size_t i;
    char b[80];

    if (len < 3 || len > 320 || at == NULL || at == s || at == s + len - 1 ||
        memchr(at + 1, '@', len - (size_t)(at + 1 - s)) != NULL)
        return cfail(cc, "invalid email \"%s\"", shown(s, b, sizeof(b)));
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c == 0x7f)
            return cfail(cc, "invalid email \"%s\"", shown(s, b, sizeof(b)));
        out[i] = c >= 'A' && c <= 'Z' ? (char)(c + 32) : (char)c;
    }
    return 0;
}

static int chk_method(struct cc *cc, const char *s, size_t len, char *out)
{
    size_t i;
    char b[80];

    if (len == 0 || len > 32)
        return cfail(cc, "invalid method \"%s\"", shown(s, b, sizeof(b)));
    for (i = 0; i < len; i++) {
        char c = s[i];
        if (c >= 'a' && c <= 'z')
            return cfail(cc, "methods are case-sensitive and upper case: \"%s\"",
                         shown(s, b, sizeof(b)));
        if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_'))
            return cfail(cc, "invalid method \"%s\"", shown(s, b, sizeof(b)));
        out[i] = c;
    }
    return 0;
}

static int chk_any(struct cc *cc, const char *s, size_t len, char *out)
{
    (void)cc;
    memcpy(out, s, len);
    return 0;
}

struct sidx {
    const char *s;
    size_t i;
};

static int cmp_sidx(const void *a, const void *b)
{
    const struct sidx *x = a, *y = b;
    int r = strcmp(x->s, y->s);
    if (r != 0)
        return r;
    return x->i < y->i ? -1 : x->i > y->i;
}

/* A JSON array of strings -> sorted, unique, normalised, in the arena. */
static int parse_strlist(struct cc *cc, json_t *arr, value_check_cb chk, const char ***out,
                         uint32_t *nout)
{
    struct sidx *tmp = NULL;
    const char **v = NULL;
    size_t i, n;
    json_t *e;
    int rc = -1;

    if (!json_is_array(arr))
        return cfail(cc, "expected an array of strings, got %s", type_name(arr));
    n = json_array_size(arr);
    if (n == 0)
        return cfail(cc, "empty list");
    if (n > POLICY_LIST_MAX)
        return cfail(cc, "more than %d values", POLICY_LIST_MAX);
    tmp = calloc(n, sizeof(*tmp));
    v = arena_alloc(cc->p, n * sizeof(*v));
    if (tmp == NULL || v == NULL) {
        cfail(cc, "out of memory");
        goto out;
    }
    json_array_foreach(arr, i, e)
    {
        size_t old = cpush(cc, "[%zu]", i), len;
        const char *s = get_str(cc, e, &len);
        char *norm;
        if (s == NULL)
            goto out;
        norm = arena_alloc(cc->p, len + 1);
        if (norm == NULL) {
            cfail(cc, "out of memory");
            goto out;
        }
        if (chk(cc, s, len, norm) == -1)
            goto out;
        tmp[i].s = norm;
        tmp[i].i = i;
        cpop(cc, old);
    }
    qsort(tmp, n, sizeof(*tmp), cmp_sidx);
    for (i = 0; i < n; i++) {
        if (i > 0 && strcmp(tmp[i].s, tmp[i - 1].s) == 0) {
            char b[80];
            cpush(cc, "[%zu]", tmp[i].i);
            cfail(cc, "\"%s\" is listed twice", shown(tmp[i].s, b, sizeof(b)));
            goto out;
        }
        v[i] = tmp[i].s;
    }
    *out = v;
    *nout = (uint32_t)n;
    rc = 0;
out:
    free(tmp);
    return rc;
}

/* "x" or {"in": ["x", ...]} */
static int parse_str_or_in(struct cc *cc, json_t *v, value_check_cb chk, struct cond *c)
{
    const char **strs = NULL;
    static const char *const keys[] = {"in", NULL};
    json_t *in;
    size_t old;

    if (json_is_string(v)) {
        size_t len;
        const char *s = get_str(cc, v, &len);
        char *norm;
        if (s == NULL)
            return -1;
        norm = arena_alloc(cc->p, len + 1);
        strs = arena_alloc(cc->p, sizeof(*strs));
        if (norm == NULL || strs == NULL)
            return cfail(cc, "out of memory");
        if (chk(cc, s, len, norm) == -1)
            return -1;
        strs[0] = norm;
        c->u.strs = strs;
        c->n = 1;
        c->single = 1;
        return 0;
    }
    if (!json_is_object(v))
        return cfail(cc, "expected a string or {\"in\": [...]}, got %s", type_name(v));
    if (one_key(cc, v, keys, &in) == NULL)
        return -1;
    old = cpush(cc, ".in");
    if (parse_strlist(cc, in, chk, &strs, &c->n) == -1)
        return -1;
    cpop(cc, old);
    c->u.strs = strs;
    return 0;
}

/* ---- tiers, groups, routes, zones --------------------------------------------- */

static int tier_lookup(struct cc *cc, json_t *v, int64_t *ord)
{
    char b[80], known[512];
    size_t i, len;
    const char *s = get_str(cc, v, &len);

    if (s == NULL)
        return -1;
    for (i = 0; i < cc->p->ntiers; i++) {
        if (strcmp(cc->p->tiers[i], s) == 0) {
            *ord = (int64_t)i;
            return 0;
        }
    }
    return cfail(cc, "unknown tier \"%s\" (known: %s)", shown(s, b, sizeof(b)),
                 list_text(cc->p->tiers, cc->p->ntiers, known, sizeof(known)));
}

static int group_intern(struct cc *cc, json_t *v, uint32_t *id)
{
    size_t i, len;
    const char *s = get_str(cc, v, &len);
    char b[80];
    uint32_t dummy;

    if (s == NULL)
        return -1;
    if (len == 0 || len > DIRECTORY_NAME_MAX)
        return cfail(cc, "invalid group name");
    for (i = 0; i < cc->ngroups; i++) {
        if (strcmp(cc->groups[i], s) == 0) {
            *id = (uint32_t)i;
            return 0;
        }
    }
    if (cc->o->dir != NULL && directory_group_find(cc->o->dir, s, &dummy) == -1)
        return cfail(cc, "unknown group \"%s\" (not in the directory)", shown(s, b, sizeof(b)));
    if (cc->ngroups >= DIRECTORY_GROUPS_MAX)
        return cfail(cc, "too many groups");
    s = arena_strdup(cc->p, s, len);
    if (s == NULL || list_push(cc, &cc->groups, &cc->ngroups, &cc->groups_cap, s) == -1)
        return cfail(cc, "out of memory");
    *id = (uint32_t)(cc->ngroups - 1);
    return 0;
}

static int route_lookup(struct cc *cc, json_t *v, uint32_t *idx)
{
    size_t i, len;
    const char *s = get_str(cc, v, &len);
    char b[80], known[512];

    if (s == NULL)
        return -1;
    for (i = 0; i < cc->nroutes; i++) {
        if (strcmp(cc->routes[i], s) == 0) {
            *idx = (uint32_t)i;
            return 0;
        }
    }
    if (cc->o->routes != NULL)
        return cfail(cc, "unknown route \"%s\" (known: %s)", shown(s, b, sizeof(b)),
                     list_text(cc->routes, cc->nroutes, known, sizeof(known)));
    if (len == 0 || len > 128)
        return cfail(cc, "invalid route name");
    if (cc->nroutes >= 65536)
        return cfail(cc, "too many routes");
    s = arena_strdup(cc->p, s, len);
    if (s == NULL || list_push(cc, &cc->routes, &cc->nroutes, &cc->routes_cap, s) == -1)
        return cfail(cc, "out of memory");
    *idx = (uint32_t)(cc->nroutes - 1);
    return 0;
}

static int tz_intern(struct cc *cc, json_t *v, uint32_t *idx)
{
    struct policy *p = cc->p;
    size_t i, len;
    const char *s = get_str(cc, v, &len);
    char b[80], terr[300];
    struct tz *z, **nt;

    if (s == NULL)
        return -1;
    for (i = 0; i < p->ntzs; i++) {
        if (strcmp(tz_name(p->tzs[i]), s) == 0) {
            *idx = (uint32_t)i;
            return 0;
        }
    }
    if (!tz_name_valid(s))
        return cfail(cc, "invalid time zone name \"%s\"", shown(s, b, sizeof(b)));
    if (p->ntzs >= 1024)
        return cfail(cc, "more than 1024 time zones");
    z = tz_load(cc->o->zoneinfo_dir, s, terr, sizeof(terr));
    if (z == NULL)
        return cfail(cc, "%s", terr);
    nt = realloc(p->tzs, (p->ntzs + 1) * sizeof(*nt));
    if (nt == NULL) {
        tz_free(z);
        return cfail(cc, "out of memory");
    }
    p->tzs = nt;
    p->tzs[p->ntzs] = z;
    *idx = (uint32_t)p->ntzs++;
    return 0;
}

/* ---- values ------------------------------------------------------------------ */

static int chk_country(struct cc *cc, const char *s, size_t len, char *out)
{
    size_t i;
    char b[80];

    if (len == 7 && strcmp(s, "unknown") == 0) {
        memcpy(out, s, len);
        return 0;
    }
    if (len == 2 && s[0] >= 'A' && s[0] <= 'Z' && s[1] >= 'A' && s[1] <= 'Z') {
        for (i = 0; i + 1 < sizeof(iso3166); i += 2) {
            if (iso3166[i] == s[0] && iso3166[i + 1] == s[1]) {
                memcpy(out, s, len);
                return 0;
            }
        }
        return cfail(cc, "\"%s\" is not an ISO 3166 country code", shown(s, b, sizeof(b)));
    }
    return cfail(cc,
                 "invalid country \"%s\" (ISO 3166 alpha-2 in upper case, e.g. \"DE\", or "
                 "\"unknown\")",
                 shown(s, b, sizeof(b)));
}

static int cmp_u16(const void *a, const void *b)
{
    uint16_t x = *(const uint16_t *)a, y = *(const uint16_t *)b;
    return x < y ? -1 : x > y;
}

static int compile_country(struct cc *cc, json_t *v, struct cond *c)
{
    uint16_t *codes;
    uint32_t i;

    if (parse_str_or_in(cc, v, chk_country, c) == -1)
        return -1;
    codes = arena_alloc(cc->p, c->n * sizeof(*codes));
    if (codes == NULL)
        return cfail(cc, "out of memory");
    for (i = 0; i < c->n; i++) {
        const char *s = c->u.strs[i];
        codes[i] = strcmp(s, "unknown") == 0 ? 0 : (uint16_t)((uint8_t)s[0] << 8 | (uint8_t)s[1]);
    }
    qsort(codes, c->n, sizeof(*codes), cmp_u16);
    c->u.countries = codes;
    return 0;
}

static int parse_cidr(struct cc *cc, const char *s, size_t len, struct cidr *out)
{
    char buf[64], b[80];
    const char *slash = memchr(s, '/', len);
    size_t alen = slash != NULL ? (size_t)(slash - s) : len;
    long bits;
    int i, max;

    memset(out, 0, sizeof(*out));
    if (alen == 0 || alen >= sizeof(buf))
        goto bad;
    memcpy(buf, s, alen);
    buf[alen] = '\0';
    if (inet_pton(AF_INET, buf, out->addr) == 1) {
        out->family = 4;
        max = 32;
    } else if (inet_pton(AF_INET6, buf, out->addr) == 1) {
        out->family = 6;
        max = 128;
    } else {
        goto bad;
    }
    bits = max;
    if (slash != NULL) {
        const char *d = slash + 1;
        size_t dl = len - alen - 1;
        if (dl == 0 || dl > 3 || (dl > 1 && d[0] == '0'))
            goto bad;
        bits = 0;
        for (size_t k = 0; k < dl; k++) {
            if (d[k] < '0' || d[k] > '9')
                goto bad;
            bits = bits * 10 + (d[k] - '0');
        }
        if (bits > max)
            goto bad;
    }
    out->bits = (uint8_t)bits;
    for (i = 0; i < max / 8; i++) {
        int keep = (int)bits - i * 8;
        uint8_t m = keep >= 8 ? 0xff : keep <= 0 ? 0 : (uint8_t)(0xff << (8 - keep));
        if ((out->addr[i] & (uint8_t)~m) != 0)
            return cfail(cc, "\"%s\" has bits set after the /%ld prefix", shown(s, b, sizeof(b)),
                         bits);
    }
    return 0;
bad:
    return cfail(cc, "invalid CIDR \"%s\" (e.g. \"10.0.0.0/8\", \"2001:db8::/32\")",
                 shown(s, b, sizeof(b)));
}

static int compile_ip(struct cc *cc, json_t *v, struct cond *c)
{
    static const char *const keys[] = {"in", NULL};
    struct cidr *cidrs;
    json_t *in, *e;
    size_t i, len, old;
    const char *s;

    if (json_is_string(v)) {
        cidrs = arena_alloc(cc->p, sizeof(*cidrs));
        s = get_str(cc, v, &len);
        if (s == NULL)
            return -1;
        if (cidrs == NULL)
            return cfail(cc, "out of memory");
        if (parse_cidr(cc, s, len, cidrs) == -1)
            return -1;
        c->u.cidrs = cidrs;
        c->n = 1;
        c->single = 1;
        return 0;
    }
    if (!json_is_object(v))
        return cfail(cc, "expected a CIDR string or {\"in\": [...]}, got %s", type_name(v));
    if (one_key(cc, v, keys, &in) == NULL)
        return -1;
    old = cpush(cc, ".in");
    if (!json_is_array(in))
        return cfail(cc, "expected an array of CIDRs, got %s", type_name(in));
    if (json_array_size(in) == 0)
        return cfail(cc, "empty list");
    if (json_array_size(in) > POLICY_LIST_MAX)
        return cfail(cc, "more than %d values", POLICY_LIST_MAX);
    cidrs = arena_alloc(cc->p, json_array_size(in) * sizeof(*cidrs));
    if (cidrs == NULL)
        return cfail(cc, "out of memory");
    json_array_foreach(in, i, e)
    {
        size_t o2 = cpush(cc, "[%zu]", i);
        s = get_str(cc, e, &len);
        if (s == NULL || parse_cidr(cc, s, len, &cidrs[i]) == -1)
            return -1;
        cpop(cc, o2);
    }
    cpop(cc, old);
    c->u.cidrs = cidrs;
    c->n = (uint32_t)json_array_size(in);
    return 0;
}

static int day_index(const char *s, size_t len)
{
    int d;

    if (len != 3)
        return -1;
    for (d = 0; d < 7; d++)
        if (memcmp(s, day_names[d], 3) == 0)
            return d;
    return -1;
}

/* "mon", "mon-fri", "fri-mon" (wraps) -> bits; dup: a day already in *mask. */
static int parse_days_item(struct cc *cc, const char *s, size_t len, uint8_t *mask)
{
    char b[80];
    int a, z, d;
    uint8_t m = 0;

    if (len == 3) {
        a = z = day_index(s, 3);
    } else if (len == 7 && s[3] == '-') {
        a = day_index(s, 3);
        z = day_index(s + 4, 3);
    } else {
        a = z = -1;
    }
    if (a < 0 || z < 0)
        return cfail(cc,
                     "invalid days \"%s\" (a day sun, mon, tue, wed, thu, fri, sat or a range "
                     "such as \"mon-fri\")",
                     shown(s, b, sizeof(b)));
    if (a == z && len == 7)
        return cfail(cc, "range \"%s\" starts and ends on the same day", shown(s, b, sizeof(b)));
    for (d = a;; d = (d + 1) % 7) {
        m |= (uint8_t)(1u << d);
        if (d == z)
            break;
    }
    if ((*mask & m) != 0)
        return cfail(cc, "\"%s\" repeats a day already listed", shown(s, b, sizeof(b)));
    *mask |= m;
    return 0;
}

static int parse_hhmm(struct cc *cc, json_t *v, int allow24, uint16_t *out)
{
    size_t len;
    const char *s = get_str(cc, v, &len);
    char b[80];
    int h, m;

    if (s == NULL)
        return -1;
    if (len != 5 || s[2] != ':' || s[0] < '0' || s[0] > '9' || s[1] < '0' || s[1] > '9' ||
        s[3] < '0' || s[3] > '5' || s[4] < '0' || s[4] > '9')
        return cfail(cc, "expected \"HH:MM\" (24-hour), got \"%s\"", shown(s, b, sizeof(b)));
    h = (s[0] - '0') * 10 + (s[1] - '0');
    m = (s[3] - '0') * 10 + (s[4] - '0');
    if (h > 24 || (h == 24 && (m != 0 || !allow24)))
        return cfail(cc, "\"%s\" is not a time of day%s", shown(s, b, sizeof(b)),
                     allow24 ? "" : " (24:00 is only allowed as the end)");
    *out = (uint16_t)(h * 60 + m);
    return 0;
}

static int compile_time(struct cc *cc, json_t *v, struct cond *c)
{
    static const char *const keys[] = {"days", "between", "tz", NULL};
    struct twin *w = arena_alloc(cc->p, sizeof(*w));
    json_t *days = json_object_get(v, "days"), *btw = json_object_get(v, "between");
    json_t *tz = json_object_get(v, "tz");
    size_t old, i, len;
    const char *s;

    if (w == NULL)
        return cfail(cc, "out of memory");
    if (check_keys(cc, v, keys) == -1)
        return -1;
    if (tz == NULL)
        return CFAIL_AT(cc, ".tz", "required key is missing (e.g. \"Europe/Berlin\", \"UTC\")");
    if (days == NULL && btw == NULL)
        return cfail(cc, "expected \"days\", \"between\" or both");
    w->days = 0x7f;
    if (days != NULL) {
        old = cpush(cc, ".days");
        w->days = 0;
        if (json_is_string(days)) {
            s = get_str(cc, days, &len);
            if (s == NULL || parse_days_item(cc, s, len, &w->days) == -1)
                return -1;
        } else if (json_is_array(days)) {
            json_t *e;
            if (json_array_size(days) == 0)
                return cfail(cc, "empty list");
            if (json_array_size(days) > 7)
                return cfail(cc, "more than 7 entries");
            json_array_foreach(days, i, e)
            {
                size_t o2 = cpush(cc, "[%zu]", i);
                s = get_str(cc, e, &len);
                if (s == NULL || parse_days_item(cc, s, len, &w->days) == -1)
                    return -1;
                cpop(cc, o2);
            }
        } else {
            return cfail(cc, "expected \"mon-fri\" or a list of days, got %s", type_name(days));
        }
        cpop(cc, old);
    }
    w->start = 0;
    w->end = 1440;
    if (btw != NULL) {
        old = cpush(cc, ".between");
        if (!json_is_array(btw) || json_array_size(btw) != 2)
            return cfail(cc, "expected [\"HH:MM\", \"HH:MM\"] (start, end)");
        cpush(cc, "[0]");
        if (parse_hhmm(cc, json_array_get(btw, 0), 0, &w->start) == -1)
            return -1;
        cpop(cc, old);
        cpush(cc, ".between[1]");
        if (parse_hhmm(cc, json_array_get(btw, 1), 1, &w->end) == -1)
            return -1;
        cpop(cc, old);
        if (w->start == w->end)
            return CFAIL_AT(cc, ".between", "empty time window (start equals end)");
        if (w->end == 1440 && w->start == 0)
            return CFAIL_AT(cc, ".between",
                            "the window is the whole day: leave \"between\" out instead");
    }
    old = cpush(cc, ".tz");
    if (tz_intern(cc, tz, &w->tz) == -1)
        return -1;
    cpop(cc, old);
    c->u.win = w;
    return 0;
}

static int parse_duration(struct cc *cc, json_t *v, int64_t *secs)
{
    size_t len, i;
    const char *s = get_str(cc, v, &len);
    char b[80];
    int64_t n = 0, mul;

    if (s == NULL)
        return -1;
    for (i = 0; i < len && s[i] >= '0' && s[i] <= '9' && i < 9; i++)
        n = n * 10 + (s[i] - '0');
    if (i == 0 || i + 1 != len)
        goto bad;
    switch (s[i]) {
    case 's':
        mul = 1;
        break;
    case 'm':
        mul = 60;
        break;
    case 'h':
        mul = 3600;
        break;
    case 'd':
        mul = 86400;
        break;
    default:
        goto bad;
    }
    n *= mul;
    if (n < 1 || n > 90 * 86400)
        return cfail(cc, "duration \"%s\" out of range (1s..90d)", shown(s, b, sizeof(b)));
    *secs = n;
    return 0;
bad:
    return cfail(cc, "expected a duration such as \"30s\", \"15m\", \"8h\", \"1d\", got \"%s\"",
                 shown(s, b, sizeof(b)));
}

static int compile_path(struct cc *cc, json_t *v, struct cond *c)
{
    static const char *const keys[] = {"prefix", "glob", NULL};
    json_t *pv;
    const char *k = one_key(cc, v, keys, &pv), *s;
    size_t len, i, nseg = 0, old;
    struct gseg *segs;
    char b[80];

    if (k == NULL)
        return -1;
    old = cpush(cc, ".%s", k);
    s = get_str(cc, pv, &len);
    if (s == NULL)
        return -1;
    if (len == 0 || s[0] != '/')
        return cfail(cc, "a path starts with '/': \"%s\"", shown(s, b, sizeof(b)));
    for (i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch <= 0x20 || ch == 0x7f || ch == '?' || ch == '#' || ch == '\\')
            return cfail(cc,
                         "invalid character in path \"%s\" (the path is matched without "
                         "its query)",
                         shown(s, b, sizeof(b)));
    }
    if (strcmp(k, "prefix") == 0) {
        if (strchr(s, '*') != NULL)
            return cfail(cc, "'*' in a prefix: use \"glob\"");
        while (len > 1 && s[len - 1] == '/')
            len--; /* "/admin/" means the /admin subtree, like "/admin" */
        c->op = OP_PATH_PREFIX;
        c->str = arena_strdup(cc->p, s, len);
        c->slen = len;
        if (c->str == NULL)
            return cfail(cc, "out of memory");
        cpop(cc, old);
        return 0;
    }
    c->op = OP_PATH_GLOB;
    for (i = 0; i < len; i++)
        nseg += s[i] == '/';
    if (nseg > 64)
        return cfail(cc, "more than 64 segments");
    segs = arena_alloc(cc->p, nseg * sizeof(*segs));
    c->str = arena_strdup(cc->p, s, len);
    if (segs == NULL || c->str == NULL)
        return cfail(cc, "out of memory");
    nseg = 0;
    for (i = 1; i <= len;) {
        size_t j = i;
        while (j < len && c->str[j] != '/')
            j++;
        segs[nseg].s = c->str + i;
        segs[nseg].len = (uint32_t)(j - i);
        if (j - i == 2 && c->str[i] == '*' && c->str[i + 1] == '*')
            segs[nseg].kind = 2;
        else if (memchr(c->str + i, '*', j - i) != NULL)
            segs[nseg].kind = 1;
        if (segs[nseg].kind == 1 && strstr(c->str + i, "**") != NULL &&
            (size_t)(strstr(c->str + i, "**") - (c->str + i)) < j - i)
            return cfail(cc, "'**' must be a whole segment (\"/a/**/b\"): \"%s\"",
                         shown(s, b, sizeof(b)));
        nseg++;
        i = j + 1;
    }
    c->u.segs = segs;
    c->n = (uint32_t)nseg;
    c->slen = len;
    cpop(cc, old);
    return 0;
}

static int attr_name_ok(const char *s, size_t len)
{
    size_t i;

    if (len == 0 || len > 64)
        return 0;
    for (i = 0; i < len; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '-' || ch == '.'))
            return 0;
    }
    return 1;
}

static int compile_attr(struct cc *cc, json_t *v, struct cond *c)
{
    static const char *const keys[] = {"name", "equals", "in", "is", NULL};
    json_t *name = json_object_get(v, "name"), *eq, *in, *is;
    size_t len, old, nops;
    const char *s;

    if (check_keys(cc, v, keys) == -1)
        return -1;
    if (name == NULL)
        return CFAIL_AT(cc, ".name", "required key is missing");
    old = cpush(cc, ".name");
    s = get_str(cc, name, &len);
    if (s == NULL)
        return -1;
    if (!attr_name_ok(s, len))
        return cfail(cc, "invalid attribute name (1..64 of [A-Za-z0-9_.-])");
    c->name = arena_strdup(cc->p, s, len);
    if (c->name == NULL)
        return cfail(cc, "out of memory");
    cpop(cc, old);
    eq = json_object_get(v, "equals");
    in = json_object_get(v, "in");
    is = json_object_get(v, "is");
    nops = (eq != NULL) + (in != NULL) + (is != NULL);
    if (nops != 1)
        return cfail(cc, "expected \"name\" and exactly one of: equals, in, is");
    if (is != NULL) {
        if (!json_is_boolean(is))
            return CFAIL_AT(cc, ".is", "expected true or false, got %s", type_name(is));
        c->op = OP_ATTR_IS;
        c->num = json_is_true(is);
        return 0;
    }
    c->op = OP_ATTR_IN;
    if (eq != NULL) {
        const char **strs = arena_alloc(cc->p, sizeof(*strs));
        old = cpush(cc, ".equals");
        s = get_str(cc, eq, &len);
        if (s == NULL)
            return -1;
        if (strs == NULL || (strs[0] = arena_strdup(cc->p, s, len)) == NULL)
            return cfail(cc, "out of memory");
        c->u.strs = strs;
        c->n = 1;
        c->single = 1;
        cpop(cc, old);
        return 0;
    }
    old = cpush(cc, ".in");
    {
        const char **strs = NULL;
        if (parse_strlist(cc, in, chk_any, &strs, &c->n) == -1)
            return -1;
        c->u.strs = strs;
    }
    cpop(cc, old);
    return 0;
}

static int compile_tier(struct cc *cc, json_t *v, struct cond *c)
{
    static const char *const keys[] = {"at_least", "at_most", "in", NULL};
    json_t *tv, *e;
    const char *k;
    size_t old, i;

    if (json_is_string(v)) {
        c->op = OP_TIER_EQ;
        return tier_lookup(cc, v, &c->num);
    }
    if (!json_is_object(v))
        return cfail(cc, "expected a tier name or {\"at_least\"|\"at_most\"|\"in\": ...}, got %s",
                     type_name(v));
    k = one_key(cc, v, keys, &tv);
    if (k == NULL)
        return -1;
    old = cpush(cc, ".%s", k);
    if (strcmp(k, "in") == 0) {
        c->op = OP_TIER_IN;
        if (!json_is_array(tv))
            return cfail(cc, "expected an array of tier names, got %s", type_name(tv));
        if (json_array_size(tv) == 0)
            return cfail(cc, "empty list");
        json_array_foreach(tv, i, e)
        {
            int64_t ord;
            size_t o2 = cpush(cc, "[%zu]", i);
            if (tier_lookup(cc, e, &ord) == -1)
                return -1;
            if (c->mask & (1ull << ord))
                return cfail(cc, "tier \"%s\" is listed twice", cc->p->tiers[ord]);
            c->mask |= 1ull << ord;
            cpop(cc, o2);
        }
    } else {
        c->op = strcmp(k, "at_least") == 0 ? OP_TIER_MIN : OP_TIER_MAX;
        if (tier_lookup(cc, tv, &c->num) == -1)
            return -1;
    }
    cpop(cc, old);
    return 0;
}

static int compile_score(struct cc *cc, json_t *v, struct cond *c)
{
    static const char *const keys[] = {"at_least", "at_most", NULL};
    json_t *sv;
    const char *k;

    if (!json_is_object(v))
        return cfail(cc, "expected {\"at_least\": N} or {\"at_most\": N}, got %s", type_name(v));
    k = one_key(cc, v, keys, &sv);
    if (k == NULL)
        return -1;
    cpush(cc, ".%s", k);
    if (!json_is_integer(sv) || json_integer_value(sv) < 0 || json_integer_value(sv) > 100)
        return cfail(cc, "expected an integer 0..100");
    c->op = strcmp(k, "at_least") == 0 ? OP_SCORE_MIN : OP_SCORE_MAX;
    c->num = json_integer_value(sv);
    return 0;
}

static int compile_group(struct cc *cc, json_t *v, struct cond *c)
{
    static const char *const keys[] = {"any_of", "all_of", NULL};
    uint32_t *ids;
    json_t *gv, *e;
    const char *k;
    size_t old, i, j;

    c->op = OP_GROUP_ANY;
    if (json_is_string(v)) {
        ids = arena_alloc(cc->p, sizeof(*ids));
        if (ids == NULL)
            return cfail(cc, "out of memory");
        if (group_intern(cc, v, &ids[0]) == -1)
            return -1;
        c->u.groups = ids;
        c->n = 1;
        c->single = 1;
        return 0;
    }
    if (!json_is_object(v))
        return cfail(cc, "expected a group name or {\"any_of\"|\"all_of\": [...]}, got %s",
                     type_name(v));
    k = one_key(cc, v, keys, &gv);
    if (k == NULL)
        return -1;
    old = cpush(cc, ".%s", k);
    if (strcmp(k, "all_of") == 0)
        c->op = OP_GROUP_ALL;
    if (!json_is_array(gv))
        return cfail(cc, "expected an array of group names, got %s", type_name(gv));
    if (json_array_size(gv) == 0)
        return cfail(cc, "empty list");
    if (json_array_size(gv) > POLICY_LIST_MAX)
        return cfail(cc, "more than %d values", POLICY_LIST_MAX);
    ids = arena_alloc(cc->p, json_array_size(gv) * sizeof(*ids));
    if (ids == NULL)
        return cfail(cc, "out of memory");
    json_array_foreach(gv, i, e)
    {
        size_t o2 = cpush(cc, "[%zu]", i);
        if (group_intern(cc, e, &ids[i]) == -1)
            return -1;
        for (j = 0; j < i; j++)
            if (ids[j] == ids[i])
                return cfail(cc, "group \"%s\" is listed twice", cc->groups[ids[i]]);
        cpop(cc, o2);
    }
    c->u.groups = ids;
    c->n = (uint32_t)json_array_size(gv);
    cpop(cc, old);
    return 0;
}

static int compile_auth(struct cc *cc, json_t *v, struct cond *c)
{
    static const char *const keys[] = {"max", "mfa", NULL};
    json_t *mx = json_object_get(v, "max"), *mfa = json_object_get(v, "mfa");
    size_t old;

    if (check_keys(cc, v, keys) == -1)
        return -1;
    if (mx == NULL && mfa == NULL)
        return cfail(cc, "expected \"max\" (e.g. \"15m\"), \"mfa\": true, or both");
    c->num = -1;
    if (mx != NULL) {
        old = cpush(cc, ".max");
        if (parse_duration(cc, mx, &c->num) == -1)
            return -1;
        cpop(cc, old);
    }
    if (mfa != NULL) {
        if (!json_is_true(mfa))
            return CFAIL_AT(cc, ".mfa",
                            "expected true (leave \"mfa\" out when MFA is not "
                            "required)");
        c->flag = 1;
    }
    return 0;
}

static const char *const cond_keys[] = {"all",
                                        "any",
                                        "not",
                                        "user",
                                        "email",
                                        "email_domain",
                                        "group",
                                        "device_tier",
                                        "device_score",
                                        "device_attr",
                                        "device_owner_is_user",
                                        "country",
                                        "ip",
                                        "time",
                                        "method",
                                        "path",
                                        "auth_age",
                                        NULL};

static int compile_cond(struct cc *cc, json_t *v, int depth, uint32_t *out);

static int compile_list(struct cc *cc, json_t *arr, int depth, struct cond *tmpl, uint32_t idx)
{
    uint32_t *k = NULL;
    size_t i, n;
    json_t *e;
    int rc = -1;

    if (!json_is_array(arr))
        return cfail(cc, "expected an array of conditions, got %s", type_name(arr));
    n = json_array_size(arr);
    if (n == 0)
        return cfail(cc, "empty list (an empty \"all\"/\"any\" is ambiguous: write the "
                         "conditions)");
    if (n > POLICY_LIST_MAX)
        return cfail(cc, "more than %d conditions", POLICY_LIST_MAX);
    k = calloc(n, sizeof(*k));
    if (k == NULL)
        return cfail(cc, "out of memory");
    json_array_foreach(arr, i, e)
    {
        size_t old = cpush(cc, "[%zu]", i);
        if (compile_cond(cc, e, depth + 1, &k[i]) == -1)
            goto out;
        cpop(cc, old);
    }
    if (kids_add(cc, k, n, &tmpl->first) == -1)
        goto out;
    tmpl->n = (uint32_t)n;
    cc->p->conds[idx] = *tmpl;
    rc = 0;
out:
    free(k);
    return rc;
}

static int compile_cond(struct cc *cc, json_t *v, int depth, uint32_t *out)
{
    struct cond c;
    json_t *val = NULL;
    const char *k;
    uint32_t idx = 0;
    size_t old;
    int rc = -1;

    if (depth > POLICY_DEPTH_MAX)
        return cfail(cc, "conditions nested deeper than %d", POLICY_DEPTH_MAX);
    if (!json_is_object(v))
        return cfail(cc, "expected a condition (an object with one key), got %s", type_name(v));
    if (json_object_size(v) != 1) {
        char known[512];
        if (check_keys(cc, v, cond_keys) == -1)
            return -1;
        return cfail(cc, "a condition has exactly one key (%s); combine several with \"all\"",
                     json_object_size(v) == 0
                         ? list_text(cond_keys, sizeof(cond_keys) / sizeof(cond_keys[0]) - 1, known,
                                     sizeof(known))
                         : "found more");
    }
    k = one_key(cc, v, cond_keys, &val);
    if (k == NULL)
        return -1;
    if (cond_new(cc, OP_ALL, &idx) == -1)
        return -1;
    memset(&c, 0, sizeof(c));
    old = cpush(cc, ".%s", k);
    if (strcmp(k, "all") == 0 || strcmp(k, "any") == 0) {
        c.op = k[1] == 'l' ? OP_ALL : OP_ANY;
        if (compile_list(cc, val, depth, &c, idx) == -1)
            return -1;
        cpop(cc, old);
        *out = idx;
        return 0;
    }
    if (strcmp(k, "not") == 0) {
        uint32_t kid;
        c.op = OP_NOT;
        if (compile_cond(cc, val, depth + 1, &kid) == -1)
            return -1;
        if (kids_add(cc, &kid, 1, &c.first) == -1)
            return -1;
        c.n = 1;
        rc = 0;
    } else if (strcmp(k, "user") == 0) {
        c.op = OP_USER;
        rc = parse_str_or_in(cc, val, chk_user, &c);
    } else if (strcmp(k, "email") == 0) {
        c.op = OP_EMAIL;
        rc = parse_str_or_in(cc, val, chk_email, &c);
    } else if (strcmp(k, "email_domain") == 0) {
        c.op = OP_DOMAIN;
        rc = parse_str_or_in(cc, val, chk_domain, &c);
    } else if (strcmp(k, "method") == 0) {
        c.op = OP_METHOD;
        rc = parse_str_or_in(cc, val, chk_method, &c);
    } else if (strcmp(k, "group") == 0) {
        rc = compile_group(cc, val, &c);
    } else if (strcmp(k, "device_tier") == 0) {
        rc = compile_tier(cc, val, &c);
    } else if (strcmp(k, "device_score") == 0) {
        rc = compile_score(cc, val, &c);
    } else if (strcmp(k, "device_attr") == 0) {
        rc = compile_attr(cc, val, &c);
    } else if (strcmp(k, "device_owner_is_user") == 0) {
        c.op = OP_OWNER;
        rc = json_is_true(val) ? 0
                               : cfail(cc, "expected true (to require the opposite, wrap it in "
                                           "\"not\")");
    } else if (strcmp(k, "country") == 0) {
        c.op = OP_COUNTRY;
        rc = compile_country(cc, val, &c);
    } else if (strcmp(k, "ip") == 0) {
        c.op = OP_IP;
        rc = compile_ip(cc, val, &c);
    } else if (strcmp(k, "time") == 0) {
        c.op = OP_TIME;
        rc = json_is_object(val)
                 ? compile_time(cc, val, &c)
                 : cfail(cc, "expected {\"days\", \"between\", \"tz\"}, got %s", type_name(val));
    } else if (strcmp(k, "path") == 0) {
        rc = json_is_object(val)
                 ? compile_path(cc, val, &c)
                 : cfail(cc, "expected {\"prefix\": ...} or {\"glob\": ...}, got %s",
                         type_name(val));
    } else if (strcmp(k, "auth_age") == 0) {
        c.op = OP_AUTH;
        rc = json_is_object(val)
                 ? compile_auth(cc, val, &c)
                 : cfail(cc, "expected {\"max\": \"15m\", \"mfa\": true}, got %s", type_name(val));
    }
    if (rc == -1)
        return -1;
    cc->p->conds[idx] = c;
    cpop(cc, old);
    *out = idx;
    return 0;
}

/* ---- rules ------------------------------------------------------------------------ */

static int id_valid(const char *s, size_t len)
{
    size_t i;

    if (len == 0 || len > POLICY_ID_MAX)
        return 0;
    for (i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-'))
            return 0;
    }
    return strcmp(s, "default-deny") != 0;
}

static uint64_t hash_s(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    while (*s != '\0') {
        h ^= (unsigned char)*s++;
        h *= 1099511628211ULL;
    }
    return h;
}

struct idset {
    uint32_t *tab; /* rule index + 1 */
    size_t mask;
};

static int compile_rule(struct cc *cc, json_t *r, size_t i, struct idset *ids, uint32_t **routes,
                        size_t *nroutes)
{
    static const char *const keys[] = {"id",          "effect",       "route", "mode",
                                       "description", "deny_message", "when",  NULL};
    struct policy *p = cc->p;
    struct rule *rule = &p->rules[i];
    json_t *idv, *eff, *route, *mode, *desc, *dm, *when;
    const char *s;
    size_t len, old, slot;
    char b[80];

    *routes = NULL;
    *nroutes = 0;
    cpush(cc, "$.rules[%zu]", i);
    if (!json_is_object(r))
        return cfail(cc, "expected a rule (an object), got %s", type_name(r));
    idv = json_object_get(r, "id");
    if (idv == NULL)
        return CFAIL_AT(cc, ".id", "required key is missing");
    old = cpush(cc, ".id");
    s = get_str(cc, idv, &len);
    if (s == NULL)
        return -1;
    if (!id_valid(s, len))
        return cfail(cc, "invalid id \"%s\" (1..%d of [a-z0-9_.-], not \"default-deny\")",
                     shown(s, b, sizeof(b)), POLICY_ID_MAX);
    for (slot = hash_s(s) & ids->mask; ids->tab[slot] != 0; slot = (slot + 1) & ids->mask) {
        if (strcmp(p->rules[ids->tab[slot] - 1].id, s) == 0)
            return cfail(cc, "duplicate id \"%s\" (also $.rules[%u])", s, ids->tab[slot] - 1);
    }
    ids->tab[slot] = (uint32_t)i + 1;
    rule->id = arena_strdup(p, s, len);
    if (rule->id == NULL)
        return cfail(cc, "out of memory");
    cpop(cc, old);
    cpush(cc, " (id \"%s\")", rule->id);
    if (check_keys(cc, r, keys) == -1)
        return -1;

    eff = json_object_get(r, "effect");
    if (eff == NULL)
        return CFAIL_AT(cc, ".effect", "required key is missing (\"allow\" or \"deny\")");
    if (!json_is_string(eff) || (strcmp(json_string_value(eff), "allow") != 0 &&
                                 strcmp(json_string_value(eff), "deny") != 0))
        return CFAIL_AT(cc, ".effect", "expected \"allow\" or \"deny\"");
    rule->effect = json_string_value(eff)[0] == 'a' ? POLICY_ALLOW : POLICY_DENY;

    mode = json_object_get(r, "mode");
    if (mode != NULL) {
        if (!json_is_string(mode) || (strcmp(json_string_value(mode), "enforce") != 0 &&
                                      strcmp(json_string_value(mode), "monitor") != 0))
            return CFAIL_AT(cc, ".mode", "expected \"enforce\" or \"monitor\"");
        rule->monitor = json_string_value(mode)[0] == 'm';
    }

    desc = json_object_get(r, "description");
    if (desc != NULL) {
        old = cpush(cc, ".description");
        if (get_str(cc, desc, &len) == NULL)
            return -1;
        cpop(cc, old);
    }
    dm = json_object_get(r, "deny_message");
    if (dm != NULL) {
        old = cpush(cc, ".deny_message");
        if (rule->effect != POLICY_DENY)
            return cfail(cc, "only a deny rule has a deny_message");
        s = get_str(cc, dm, &len);
        if (s == NULL)
            return -1;
        rule->deny_message = arena_strdup(p, s, len);
        if (rule->deny_message == NULL)
            return cfail(cc, "out of memory");
        cpop(cc, old);
    }

    route = json_object_get(r, "route");
    if (route != NULL) {
        char text[512];
        size_t n = json_is_array(route) ? json_array_size(route) : 1, k, j;
        json_t *e;
        old = cpush(cc, ".route");
        if (!json_is_string(route) && !json_is_array(route))
            return cfail(cc, "expected a route name or a list of them, got %s", type_name(route));
        if (n == 0)
            return cfail(cc, "empty list (leave \"route\" out to apply to every route)");
        if (n > 65536)
            return cfail(cc, "too many routes");
        *routes = calloc(n, sizeof(**routes));
        if (*routes == NULL)
            return cfail(cc, "out of memory");
        for (k = 0; k < n; k++) {
            size_t o2 = json_is_array(route) ? cpush(cc, "[%zu]", k) : cc->plen;
            e = json_is_array(route) ? json_array_get(route, k) : route;
            if (route_lookup(cc, e, &(*routes)[k]) == -1)
                return -1;
            for (j = 0; j < k; j++)
                if ((*routes)[j] == (*routes)[k])
                    return cfail(cc, "route \"%s\" is listed twice", cc->routes[(*routes)[k]]);
            cpop(cc, o2);
        }
        *nroutes = n;
        text[0] = '\0';
        for (k = 0, len = 0; k < n && len + 1 < sizeof(text); k++) {
            int w = snprintf(text + len, sizeof(text) - len, "%s%s", k > 0 ? ", " : "",
                             cc->routes[(*routes)[k]]);
            if (w < 0)
                break;
            len += (size_t)w;
            if (len >= sizeof(text))
                len = sizeof(text) - 1;
        }
        rule->routes_text = arena_strdup(p, text, len);
        if (rule->routes_text == NULL)
            return cfail(cc, "out of memory");
        cpop(cc, old);
    }

    when = json_object_get(r, "when");
    if (when == NULL)
        return CFAIL_AT(cc, ".when", "required key is missing");
    old = cpush(cc, ".when");
    if (compile_cond(cc, when, 1, &rule->root) == -1)
        return -1;
    cpop(cc, old);
    return 0;
}

static int setup_tiers(struct cc *cc)
{
    const char *const *t = cc->o->tiers != NULL ? cc->o->tiers : default_tiers;
    size_t n = cc->o->tiers != NULL ? cc->o->ntiers : 5, i, j;
    const char **v;

    if (n == 0 || n > POLICY_TIERS_MAX)
        return cfail(cc, "between 1 and %d device tiers are needed", POLICY_TIERS_MAX);
    v = arena_alloc(cc->p, n * sizeof(*v));
    if (v == NULL)
        return cfail(cc, "out of memory");
    for (i = 0; i < n; i++) {
        if (t[i] == NULL || t[i][0] == '\0' || strlen(t[i]) > 64)
            return cfail(cc, "invalid device tier name");
        for (j = 0; j < i; j++)
            if (strcmp(t[i], t[j]) == 0)
                return cfail(cc, "device tier \"%s\" listed twice", t[i]);
        v[i] = arena_strdup(cc->p, t[i], strlen(t[i]));
        if (v[i] == NULL)
            return cfail(cc, "out of memory");
    }
    cc->p->tiers = v;
    cc->p->ntiers = n;
    return 0;
}

static int setup_routes(struct cc *cc)
{
    size_t i, j;

    for (i = 0; cc->o->routes != NULL && i < cc->o->nroutes; i++) {
        const char *s = cc->o->routes[i];
        if (s == NULL)
            return cfail(cc, "route name missing");
        for (j = 0; j < i; j++)
            if (strcmp(s, cc->routes[j]) == 0)
                return cfail(cc, "route \"%s\" listed twice", s);
        s = arena_strdup(cc->p, s, strlen(s));
        if (s == NULL || list_push(cc, &cc->routes, &cc->nroutes, &cc->routes_cap, s) == -1)
            return cfail(cc, "out of memory");
    }
    return 0;
}

/* Per-route ordered rule lists. rroutes[i]/nrr[i]: the routes of rule i (none: all). */
/* Mark in seen[] every policy group named in the condition tree at ci. */
static void cond_groups(const struct policy *p, uint32_t ci, uint8_t *seen, int depth)
{
    const struct cond *c = &p->conds[ci];
    uint32_t i;

    if (depth > POLICY_DEPTH_MAX + 1)
        return; /* the compiler refused deeper trees already */
    switch (c->op) {
    case OP_ALL:
    case OP_ANY:
    case OP_NOT:
        for (i = 0; i < c->n; i++)
            cond_groups(p, p->kids[c->first + i], seen, depth + 1);
        break;
    case OP_GROUP_ANY:
    case OP_GROUP_ALL:
        for (i = 0; i < c->n; i++)
            seen[c->u.groups[i]] = 1;
        break;
    default:
        break;
    }
}

/* Per route: the groups its rules (scoped or not, monitor ones too) name,
 * for policy_route_group(). */
static int route_groups(struct cc *cc)
{
    struct policy *p = cc->p;
    uint8_t *seen = calloc(p->ngroups + 1, 1);
    size_t r, i, n;
    uint32_t *ids;

    if (seen == NULL)
        return cfail(cc, "out of memory");
    for (r = 0; r <= p->nroutes; r++) {
        memset(seen, 0, p->ngroups + 1);
        for (i = 0; i < p->rr[r].nall; i++)
            cond_groups(p, p->rules[p->rr[r].all[i]].root, seen, 0);
        for (i = 0, n = 0; i < p->ngroups; i++)
            n += seen[i];
        ids = arena_alloc(p, (n + 1) * sizeof(*ids));
        if (ids == NULL) {
            free(seen);
            return cfail(cc, "out of memory");
        }
        for (i = 0, n = 0; i < p->ngroups; i++)
            if (seen[i])
                ids[n++] = (uint32_t)i;
        p->rr[r].groups = ids;
        p->rr[r].ngroups = (uint32_t)n;
    }
    free(seen);
    return 0;
}

static int build_routes(struct cc *cc, uint32_t **rroutes, const size_t *nrr)
{
    struct policy *p = cc->p;
    size_t nb = p->nroutes + 1, i, r, k;
    struct route_rules *rr = arena_alloc(p, nb * sizeof(*rr));
    uint32_t *cnt[4];

    if (rr == NULL)
        return cfail(cc, "out of memory");
    /* Count, allocate, fill. */
    for (i = 0; i < p->nrules; i++) {
        const struct rule *ru = &p->rules[i];
        for (r = 0; r < nb; r++) {
            int applies = nrr[i] == 0;
            for (k = 0; !applies && k < nrr[i]; k++)
                applies = rroutes[i][k] == r;
            if (!applies)
                continue;
            rr[r].nall++;
            if (ru->monitor)
                rr[r].nmonitor++;
            else if (ru->effect == POLICY_DENY)
                rr[r].ndeny++;
            else
                rr[r].nallow++;
        }
    }
    for (r = 0; r < nb; r++) {
        cnt[0] = arena_alloc(p, rr[r].ndeny * sizeof(uint32_t));
        cnt[1] = arena_alloc(p, rr[r].nallow * sizeof(uint32_t));
        cnt[2] = arena_alloc(p, rr[r].nmonitor * sizeof(uint32_t));
        cnt[3] = arena_alloc(p, rr[r].nall * sizeof(uint32_t));
        if (cnt[0] == NULL || cnt[1] == NULL || cnt[2] == NULL || cnt[3] == NULL)
            return cfail(cc, "out of memory");
        rr[r].deny = cnt[0];
        rr[r].allow = cnt[1];
        rr[r].monitor = cnt[2];
        rr[r].all = cnt[3];
        rr[r].ndeny = rr[r].nallow = rr[r].nmonitor = rr[r].nall = 0;
    }
    for (i = 0; i < p->nrules; i++) {
        const struct rule *ru = &p->rules[i];
        for (r = 0; r < nb; r++) {
            int applies = nrr[i] == 0;
            for (k = 0; !applies && k < nrr[i]; k++)
                applies = rroutes[i][k] == r;
            if (!applies)
                continue;
            ((uint32_t *)rr[r].all)[rr[r].nall++] = (uint32_t)i;
            if (ru->monitor)
                ((uint32_t *)rr[r].monitor)[rr[r].nmonitor++] = (uint32_t)i;
            else if (ru->effect == POLICY_DENY)
                ((uint32_t *)rr[r].deny)[rr[r].ndeny++] = (uint32_t)i;
            else
                ((uint32_t *)rr[r].allow)[rr[r].nallow++] = (uint32_t)i;
        }
    }
    p->rr = rr;
    return route_groups(cc);
}

/* cond.ptext of the leaves under ci: "<rule id>: " + cond.rtext. */
static int prefix_reasons(struct policy *p, uint32_t ci, const char *id, size_t idlen)
{
    struct cond *c = &p->conds[ci];
    uint32_t i;
    int k;

    if (c->op == OP_ALL || c->op == OP_ANY || c->op == OP_NOT) {
        for (i = 0; i < (c->op == OP_NOT ? 1 : c->n); i++)
            if (prefix_reasons(p, p->kids[c->first + i], id, idlen) == -1)
                return -1;
        return 0;
    }
    for (k = 0; k < 2; k++) {
        char *t;
        size_t n = idlen + 2 + c->rlen[k];
        if (c->rtext[k] == NULL || n > UINT16_MAX)
            continue;
        t = arena_alloc(p, n + 1);
        if (t == NULL)
            return -1;
        memcpy(t, id, idlen);
        memcpy(t + idlen, ": ", 2);
        memcpy(t + idlen + 2, c->rtext[k], c->rlen[k] + 1u);
        c->ptext[k] = t;
        c->plen[k] = (uint16_t)n;
    }
    return 0;
}

struct policy *policy_compile(const char *text, size_t len, const struct policy_compile_opts *o,
                              char *err, size_t errlen)
{
    static const struct policy_compile_opts none;
    static const char *const top_keys[] = {"version", "rules", NULL};
    struct cc cc;
    struct policy *p = NULL;
    struct idset ids = {NULL, 0};
    uint32_t **rroutes = NULL;
    size_t *nrr = NULL, i, n = 0;
    int k;
    json_error_t jerr;
    json_t *root = NULL, *rules, *ver;
    const char **v;

    memset(&cc, 0, sizeof(cc));
    cc.o = o != NULL ? o : &none;
    cc.name = cc.o->name != NULL ? cc.o->name : "rules";
    cc.err = err;
    cc.errlen = errlen;
    cc.path[0] = '$';
    cc.plen = 1;
    if (errlen > 0)
        err[0] = '\0';

    p = calloc(1, sizeof(*p));
    if (p == NULL) {
        cfail(&cc, "out of memory");
        goto err;
    }
    cc.p = p;
    root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        cc.failed = 1;
        if (errlen > 0)
            snprintf(err, errlen, "%s:%d:%d: JSON syntax error: %s", cc.name, jerr.line,
                     jerr.column, jerr.text);
        goto err;
    }
    if (setup_tiers(&cc) == -1 || setup_routes(&cc) == -1)
        goto err;
    if (check_keys(&cc, root, top_keys) == -1)
        goto err;
    ver = json_object_get(root, "version");
    p->version = "";
    if (ver != NULL) {
        size_t vl;
        const char *vs;
        cpush(&cc, ".version");
        vs = get_str(&cc, ver, &vl);
        if (vs == NULL)
            goto err;
        if (vl > 128) {
            cfail(&cc, "longer than 128 bytes");
            goto err;
        }
        p->version = arena_strdup(p, vs, vl);
        if (p->version == NULL) {
            cfail(&cc, "out of memory");
            goto err;
        }
        cpop(&cc, 1);
    }
    rules = json_object_get(root, "rules");
    if (rules == NULL) {
        CFAIL_AT(&cc, ".rules", "required key is missing");
        goto err;
    }
    if (!json_is_array(rules)) {
        CFAIL_AT(&cc, ".rules", "expected an array of rules, got %s", type_name(rules));
        goto err;
    }
    n = json_array_size(rules);
    if (n > POLICY_RULES_MAX) {
        CFAIL_AT(&cc, ".rules", "more than %d rules", POLICY_RULES_MAX);
        goto err;
    }
    p->rules = arena_alloc(p, (n + 1) * sizeof(*p->rules));
    rroutes = calloc(n + 1, sizeof(*rroutes));
    nrr = calloc(n + 1, sizeof(*nrr));
    ids.mask = 15;
    while (ids.mask + 1 < n * 2)
        ids.mask = ids.mask * 2 + 1;
    ids.tab = calloc(ids.mask + 1, sizeof(*ids.tab));
    if (p->rules == NULL || rroutes == NULL || nrr == NULL || ids.tab == NULL) {
        cfail(&cc, "out of memory");
        goto err;
    }
    for (i = 0; i < n; i++) {
        cpop(&cc, 0);
        if (compile_rule(&cc, json_array_get(rules, i), i, &ids, &rroutes[i], &nrr[i]) == -1)
            goto err;
        p->nrules = i + 1;
    }
    cpop(&cc, 0);
    cpush(&cc, "$");

    /* Routes and groups become immutable arrays in the arena. */
    v = arena_alloc(p, (cc.nroutes + 1) * sizeof(*v));
    if (v == NULL) {
        cfail(&cc, "out of memory");
        goto err;
    }
    if (cc.nroutes > 0)
        memcpy(v, cc.routes, cc.nroutes * sizeof(*v));
    p->routes = v;
    p->nroutes = cc.nroutes;
    v = arena_alloc(p, (cc.ngroups + 1) * sizeof(*v));
    p->group_dir_id = arena_alloc(p, (cc.ngroups + 1) * sizeof(uint32_t));
    if (v == NULL || p->group_dir_id == NULL) {
        cfail(&cc, "out of memory");
        goto err;
    }
    if (cc.ngroups > 0)
        memcpy(v, cc.groups, cc.ngroups * sizeof(*v));
    p->groups = v;
    p->ngroups = cc.ngroups;
    if (cc.o->dir != NULL) {
        for (i = 0; i < p->ngroups; i++)
            if (directory_group_find(cc.o->dir, p->groups[i], &p->group_dir_id[i]) == -1)
                p->group_dir_id[i] = UINT32_MAX;
        p->dir_serial = directory_serial(cc.o->dir);
        if (p->ngroups <= POLICY_GROUPSET_MAX) {
            p->ndir_groups = directory_group_count(cc.o->dir);
            p->dir_to_pg = arena_alloc(p, (p->ndir_groups + 1) * sizeof(uint16_t));
            if (p->dir_to_pg == NULL) {
                cfail(&cc, "out of memory");
                goto err;
            }
            for (i = 0; i < p->ngroups; i++)
                if (p->group_dir_id[i] != UINT32_MAX)
                    p->dir_to_pg[p->group_dir_id[i]] = (uint16_t)(i + 1);
        }
    }
    for (i = 0; i < p->nconds; i++) {
        char vt[256];
        size_t vl = policy_cond_vtext(p, &p->conds[i], vt, sizeof(vt));
        p->conds[i].vtext = arena_strdup(p, vt, vl < sizeof(vt) ? vl : sizeof(vt) - 1);
        if (p->conds[i].vtext == NULL) {
            cfail(&cc, "out of memory");
            goto err;
        }
        for (k = 0; k < 2; k++) {
            size_t rl = policy_cond_rtext(p, &p->conds[i], k, vt, sizeof(vt));
            if (rl == 0 || rl >= sizeof(vt))
                continue;
            p->conds[i].rtext[k] = arena_strdup(p, vt, rl);
            p->conds[i].rlen[k] = (uint16_t)rl;
            if (p->conds[i].rtext[k] == NULL) {
                cfail(&cc, "out of memory");
                goto err;
            }
        }
    }
    for (i = 0; i < p->nconds; i++) {
        struct cond *c = &p->conds[i];
        const char **it;
        uint16_t *il;
        char vt[256];
        uint32_t j;
        if ((c->op != OP_METHOD && c->op != OP_ATTR_IN) || c->n > POLICY_ITEXT_MAX)
            continue;
        it = arena_alloc(p, c->n * sizeof(*it));
        il = arena_alloc(p, c->n * sizeof(*il));
        if (it == NULL || il == NULL) {
            cfail(&cc, "out of memory");
            goto err;
        }
        for (j = 0; j < c->n; j++) {
            size_t l = policy_cond_itext(p, c, j, vt, sizeof(vt));
            if (l == 0 || l >= sizeof(vt) || (it[j] = arena_strdup(p, vt, l)) == NULL)
                break;
            il[j] = (uint16_t)l;
        }
        if (j == c->n) {
            c->itext = it;
            c->ilen = il;
        }
    }
    for (i = 0; i < p->nrules; i++) {
        struct rule *ru = &p->rules[i];
        const struct cond *rc = &p->conds[ru->root];
        ru->idlen = (uint16_t)strlen(ru->id);
        if (prefix_reasons(p, ru->root, ru->id, ru->idlen) == -1) {
            cfail(&cc, "out of memory");
            goto err;
        }
        ru->pre = UINT32_MAX;
        if (rc->op == OP_GROUP_ANY)
            ru->pre = ru->root;
        else if (rc->op == OP_ALL && rc->n > 0 && p->conds[p->kids[rc->first]].op == OP_GROUP_ANY)
            ru->pre = p->kids[rc->first];
        if (ru->pre != UINT32_MAX && p->conds[ru->pre].n <= 4) {
            const struct cond *gc = &p->conds[ru->pre];
            for (k = 0; k < (int)gc->n; k++)
                ru->pre_g[k] = (uint16_t)gc->u.groups[k];
            ru->npre_g = (uint8_t)gc->n;
        }
    }
    if (build_routes(&cc, rroutes, nrr) == -1)
        goto err;
    policy_eval_prepare(p);
    atomic_init(&p->refs, 1);
    goto out;
err:
    if (errlen > 0 && err[0] == '\0')
        snprintf(err, errlen, "%s: invalid rules", cc.name);
    policy_free(p);
    p = NULL;
out:
    if (rroutes != NULL)
        for (i = 0; i < n; i++)
            free(rroutes[i]);
    free(rroutes);
    free(nrr);
    free(ids.tab);
    free(cc.routes);
    free(cc.groups);
    json_decref(root);
    return p;
}

struct policy *policy_load(const char *file, const struct policy_compile_opts *o, char *err,
                           size_t errlen)
{
    struct policy_compile_opts oo;
    struct policy *p = NULL;
    struct stat st;
    char *buf = NULL;
    size_t got;
    FILE *f;

    if (o != NULL)
        oo = *o;
    else
        memset(&oo, 0, sizeof(oo));
    if (oo.name == NULL)
        oo.name = file;
    f = fopen(file, "re");
    if (f == NULL) {
        snprintf(err, errlen, "%s: cannot open: %s", file, strerror(errno));
        return NULL;
    }
    if (fstat(fileno(f), &st) == -1 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s: not a regular file", file);
        goto out;
    }
    if ((uint64_t)st.st_size > POLICY_FILE_MAX) {
        snprintf(err, errlen, "%s: larger than %u bytes", file, POLICY_FILE_MAX);
        goto out;
    }
    buf = malloc((size_t)st.st_size + 1);
    if (buf == NULL) {
        snprintf(err, errlen, "%s: out of memory", file);
        goto out;
    }
    got = fread(buf, 1, (size_t)st.st_size, f);
    if (ferror(f)) {
        snprintf(err, errlen, "%s: read error", file);
        goto out;
    }
    p = policy_compile(buf, got, &oo, err, errlen);
out:
    free(buf);
    fclose(f);
    return p;
}

struct policy *policy_ref(struct policy *p)
{
    if (p != NULL)
        atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
    return p;
}

void policy_unref(struct policy *p)
{
    if (p == NULL)
        return;
    if (atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) == 1)
        policy_free(p);
}

const char *policy_version(const struct policy *p)
{
    return p->version;
}

size_t policy_rule_count(const struct policy *p)
{
    return p->nrules;
}

size_t policy_route_count(const struct policy *p)
{
    return p->nroutes;
}

int policy_route_index(const struct policy *p, const char *name)
{
    size_t i;

    if (name == NULL)
        return -1;
    for (i = 0; i < p->nroutes; i++)
        if (strcmp(p->routes[i], name) == 0)
            return (int)i;
    return -1;
}

int policy_tier_index(const struct policy *p, const char *name)
{
    size_t i;

    if (name == NULL)
        return -1;
    for (i = 0; i < p->ntiers; i++)
        if (strcmp(p->tiers[i], name) == 0)
            return (int)i;
    return -1;
}

const char *policy_tier_name(const struct policy *p, int ordinal)
{
    return ordinal >= 0 && (size_t)ordinal < p->ntiers ? p->tiers[ordinal] : NULL;
}
