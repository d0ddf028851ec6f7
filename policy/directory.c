/*
 * directory.c - the group directory: parse, validate, flatten nesting, index.
 *
 * Everything is computed at load: a request only hashes a key and reads a
 * sorted array. Strings live in one blob (offsets, not pointers), so a
 * million users cost a handful of allocations, and freeing is quick.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "directory.h"

#define NO_SUBJECT UINT32_MAX

struct directory {
    _Atomic unsigned refs;
    uint64_t serial;
    char *blob; /* all strings, NUL-terminated, addressed by offset */
    size_t blob_len, blob_cap;
    uint32_t version_off;

    size_t ngroups;
    uint32_t *group_name; /* blob offsets, in id order (sorted by name) */
    uint32_t *group_tab;  /* hash: id + 1, 0 empty */
    size_t group_mask;

    size_t nusers;
    uint32_t *user_email;   /* blob offsets, lower case */
    uint32_t *user_subject; /* blob offsets or NO_SUBJECT */
    size_t *user_off;       /* into members */
    uint32_t *user_n;
    uint32_t *members; /* concatenated sorted id arrays */
    size_t nmembers;
    uint32_t *email_tab; /* hash: user index + 1 */
    uint32_t *subject_tab;
    size_t user_mask;

    /* As written, for listing (directory_group_parents(), _user_direct()):
     * each group's member_of ids and each user's own group ids, sorted. */
    size_t *parent_off; /* per group, into parents */
    uint32_t *parent_n;
    uint32_t *parents;
    size_t *direct_off; /* per user, into direct */
    uint32_t *direct_n;
    uint32_t *direct;
    size_t ndirect, direct_cap;
};

static _Atomic uint64_t directory_serial_next = 1;
static const uint32_t no_ids[1];

struct dctx {
    const char *name;
    char *err;
    size_t errlen;
    int failed;
};

static int dir_fail(struct dctx *cx, const char *jpath, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int dir_fail(struct dctx *cx, const char *jpath, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (cx->failed || cx->errlen == 0)
        return -1;
    cx->failed = 1;
    n = snprintf(cx->err, cx->errlen, "%s: %s: ", cx->name, jpath);
    if (n < 0 || (size_t)n >= cx->errlen)
        return -1;
    va_start(ap, fmt);
    vsnprintf(cx->err + n, cx->errlen - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
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
    case JSON_NULL:
        return "null";
    }
    return "something else";
}

/* base["key"] with the key escaped and shortened, for messages. */
static void path_key(char *buf, size_t len, const char *base, const char *key)
{
    char k[120];
    size_t i, o = 0;

    for (i = 0; key[i] != '\0' && o + 4 < sizeof(k); i++) {
        unsigned char c = (unsigned char)key[i];
        if (c == '"' || c == '\\')
            k[o++] = '\\';
        k[o++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    if (key[i] != '\0') {
        k[o > 3 ? o - 3 : 0] = '\0';
        snprintf(buf, len, "%s[\"%s...\"]", base, k);
        return;
    }
    k[o] = '\0';
    snprintf(buf, len, "%s[\"%s\"]", base, k);
}

static uint64_t hash_str(const char *s, int fold)
{
    uint64_t h = 1469598103934665603ULL;

    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (fold && c >= 'A' && c <= 'Z')
            c = (unsigned char)(c + 32);
        h ^= c;
        h *= 1099511628211ULL;
    }
    return h ^ (h >> 29);
}

static const char *blob_str(const struct directory *d, uint32_t off)
{
    return d->blob + off;
}

static int blob_add(struct directory *d, const char *s, int lower, uint32_t *off)
{
    size_t n = strlen(s) + 1, i;

    if (d->blob_len + n > d->blob_cap) {
        size_t cap = d->blob_cap == 0 ? 4096 : d->blob_cap;
        char *nb;
        while (cap < d->blob_len + n)
            cap *= 2;
        if (cap > UINT32_MAX)
            return -1;
        nb = realloc(d->blob, cap);
        if (nb == NULL)
            return -1;
        d->blob = nb;
        d->blob_cap = cap;
    }
    *off = (uint32_t)d->blob_len;
    for (i = 0; i < n; i++)
        d->blob[d->blob_len + i] = lower ? (char)tolower((unsigned char)s[i]) : s[i];
    d->blob_len += n;
    return 0;
}

static size_t tab_size(size_t n)
{
    size_t cap = 16;
    while (cap < n * 2)
        cap *= 2;
    return cap;
}

static int valid_group_name(const char *s, size_t len)
{
    size_t i;

    if (len == 0 || len > DIRECTORY_NAME_MAX || len != strlen(s) || s[0] == ' ' ||
        s[len - 1] == ' ')
        return 0;
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f || c == ',')
            return 0;
    }
    return 1;
}

static int valid_email(const char *s, size_t len)
{
    const char *at = strchr(s, '@');
    size_t i;

    if (len < 3 || len > DIRECTORY_EMAIL_MAX || len != strlen(s) || at == NULL || at == s ||
        at[1] == '\0' || strchr(at + 1, '@') != NULL)
        return 0;
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c == 0x7f || c == ',')
            return 0;
    }
    return 1;
}

static int valid_subject(const char *s, size_t len)
{
    size_t i;

    if (len == 0 || len > DIRECTORY_SUBJECT_MAX || len != strlen(s))
        return 0;
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            return 0;
    }
    return 1;
}

int directory_group_find(const struct directory *d, const char *name, uint32_t *id)
{
    size_t i;

    if (d == NULL || name == NULL || d->ngroups == 0)
        return -1;
    for (i = hash_str(name, 0) & d->group_mask; d->group_tab[i] != 0; i = (i + 1) & d->group_mask) {
        uint32_t g = d->group_tab[i] - 1;
        if (strcmp(blob_str(d, d->group_name[g]), name) == 0) {
            *id = g;
            return 0;
        }
    }
    return -1;
}

static int check_keys(struct dctx *cx, const char *jpath, json_t *obj, const char *const *allowed)
{
    const char *key;
    json_t *val;
    char p[256];

    if (!json_is_object(obj))
        return dir_fail(cx, jpath, "expected an object, got %s", type_name(obj));
    json_object_foreach(obj, key, val)
    {
        size_t i;
        int ok = 0;
        for (i = 0; allowed[i] != NULL; i++)
            ok |= strcmp(key, allowed[i]) == 0;
        if (!ok) {
            snprintf(p, sizeof(p), "%s.%s", jpath, key);
            return dir_fail(cx, p, "unknown key (expected one of: %s%s%s%s%s)", allowed[0],
                            allowed[1] != NULL ? ", " : "", allowed[1] != NULL ? allowed[1] : "",
                            allowed[1] != NULL && allowed[2] != NULL ? ", " : "",
                            allowed[1] != NULL && allowed[2] != NULL ? allowed[2] : "");
        }
    }
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Resolve an array of group names (jpath names the array) into ids. */
static int group_list(struct dctx *cx, struct directory *d, json_t *arr, const char *jpath,
                      uint32_t **out, size_t *nout)
{
    size_t i;
    json_t *v;
    char p[512];
    uint32_t *ids = NULL;

    *out = NULL;
    *nout = 0;
    if (!json_is_array(arr))
        return dir_fail(cx, jpath, "expected an array of group names, got %s", type_name(arr));
    if (json_array_size(arr) > DIRECTORY_GROUPS_MAX)
        return dir_fail(cx, jpath, "more than %d groups", DIRECTORY_GROUPS_MAX);
    ids = calloc(json_array_size(arr) + 1, sizeof(*ids));
    if (ids == NULL)
        return dir_fail(cx, jpath, "out of memory");
    json_array_foreach(arr, i, v)
    {
        snprintf(p, sizeof(p), "%s[%zu]", jpath, i);
        if (!json_is_string(v)) {
            dir_fail(cx, p, "expected a group name (string), got %s", type_name(v));
            goto err;
        }
        if (directory_group_find(d, json_string_value(v), &ids[i]) == -1) {
            dir_fail(cx, p, "unknown group \"%.100s\" (declare it under $.groups)",
                     json_string_value(v));
            goto err;
        }
        for (size_t j = 0; j < i; j++) {
            if (ids[j] == ids[i]) {
                dir_fail(cx, p, "group \"%.100s\" is listed twice", json_string_value(v));
                goto err;
            }
        }
    }
    *out = ids;
    *nout = json_array_size(arr);
    return 0;
err:
    free(ids);
    return -1;
}

struct gnode {
    uint32_t *parents;
    size_t nparents;
    uint32_t *closure; /* sorted, includes self */
    size_t nclosure;
    int state; /* 0 new, 1 on the DFS stack, 2 done */
};

static void gnodes_free(struct gnode *g, size_t n)
{
    size_t i;

    if (g == NULL)
        return;
    for (i = 0; i < n; i++) {
        free(g[i].parents);
        free(g[i].closure);
    }
    free(g);
}

/* Closure of g: itself plus the closures of its parents (all computed). */
static int closure_build(struct gnode *gs, uint32_t g, uint32_t *mark, uint32_t stamp,
                         size_t *total)
{
    struct gnode *n = &gs[g];
    size_t cap = 1, i, j;

    for (i = 0; i < n->nparents; i++)
        cap += gs[n->parents[i]].nclosure;
    n->closure = malloc(cap * sizeof(uint32_t));
    if (n->closure == NULL)
        return -1;
    n->closure[n->nclosure++] = g;
    mark[g] = stamp;
    for (i = 0; i < n->nparents; i++) {
        const struct gnode *p = &gs[n->parents[i]];
        for (j = 0; j < p->nclosure; j++) {
            if (mark[p->closure[j]] != stamp) {
                mark[p->closure[j]] = stamp;
                n->closure[n->nclosure++] = p->closure[j];
            }
        }
    }
    qsort(n->closure, n->nclosure, sizeof(uint32_t), cmp_u32);
    *total += n->nclosure;
    return 0;
}

/* Depth-first over member_of edges without recursion; reports a cycle by name. */
static int groups_flatten(struct dctx *cx, struct directory *d, struct gnode *gs, uint32_t *mark)
{
    uint32_t *stack = NULL;
    size_t *next = NULL, sp, total = 0, root;
    uint32_t stamp = 0;
    int rc = -1;

    stack = malloc(d->ngroups * sizeof(*stack));
    next = malloc(d->ngroups * sizeof(*next));
    if (stack == NULL || next == NULL) {
        dir_fail(cx, "$.groups", "out of memory");
        goto out;
    }
    for (root = 0; root < d->ngroups; root++) {
        if (gs[root].state != 0)
            continue;
        sp = 0;
        stack[sp] = (uint32_t)root;
        next[sp++] = 0;
        gs[root].state = 1;
        while (sp > 0) {
            uint32_t g = stack[sp - 1];
            if (next[sp - 1] < gs[g].nparents) {
                uint32_t p = gs[g].parents[next[sp - 1]++];
                if (gs[p].state == 1) {
                    char cyc[1024], jp[512];
                    size_t k = 0, o = 0;
                    while (stack[k] != p)
                        k++;
                    for (; k < sp && o < sizeof(cyc) - 200; k++)
                        o += (size_t)snprintf(cyc + o, sizeof(cyc) - o, "%.100s -> ",
                                              blob_str(d, d->group_name[stack[k]]));
                    snprintf(cyc + o, sizeof(cyc) - o, "%.100s", blob_str(d, d->group_name[p]));
                    path_key(jp, sizeof(jp), "$.groups", blob_str(d, d->group_name[g]));
                    strncat(jp, ".member_of", sizeof(jp) - strlen(jp) - 1);
                    dir_fail(cx, jp, "group nesting has a cycle: %s", cyc);
                    goto out;
                }
                if (gs[p].state == 0) {
                    gs[p].state = 1;
                    stack[sp] = p;
                    next[sp++] = 0;
                }
                continue;
            }
            if (closure_build(gs, g, mark, ++stamp, &total) == -1) {
                dir_fail(cx, "$.groups", "out of memory");
                goto out;
            }
            if (total > DIRECTORY_MEMBERSHIPS_MAX) {
                dir_fail(cx, "$.groups", "group nesting too large (more than %u memberships)",
                         DIRECTORY_MEMBERSHIPS_MAX);
                goto out;
            }
            gs[g].state = 2;
            sp--;
        }
    }
    rc = 0;
out:
    free(stack);
    free(next);
    return rc;
}

static int index_add(uint32_t *tab, size_t mask, uint64_t h, uint32_t idx)
{
    size_t i;

    for (i = h & mask; tab[i] != 0; i = (i + 1) & mask)
        ;
    tab[i] = idx + 1;
    return 0;
}

static int user_find(const struct directory *d, const uint32_t *tab, const char *key, int fold,
                     const uint32_t *offs)
{
    size_t i;

    if (d->nusers == 0)
        return -1;
    for (i = hash_str(key, fold) & d->user_mask; tab[i] != 0; i = (i + 1) & d->user_mask) {
        uint32_t u = tab[i] - 1;
        const char *s = blob_str(d, offs[u]);
        if (fold ? strcasecmp(s, key) == 0 : strcmp(s, key) == 0)
            return (int)u;
    }
    return -1;
}

static void directory_free(struct directory *d)
{
    if (d == NULL)
        return;
    free(d->blob);
    free(d->group_name);
    free(d->group_tab);
    free(d->user_email);
    free(d->user_subject);
    free(d->user_off);
    free(d->user_n);
    free(d->members);
    free(d->email_tab);
    free(d->subject_tab);
    free(d->parent_off);
    free(d->parent_n);
    free(d->parents);
    free(d->direct_off);
    free(d->direct_n);
    free(d->direct);
    free(d);
}

/* Keep the groups' member_of lists (after parse_groups()). */
static int parents_keep(struct directory *d, const struct gnode *gs)
{
    size_t i, total = 0;

    for (i = 0; i < d->ngroups; i++)
        total += gs[i].nparents;
    d->parent_off = calloc(d->ngroups + 1, sizeof(*d->parent_off));
    d->parent_n = calloc(d->ngroups + 1, sizeof(*d->parent_n));
    d->parents = calloc(total + 1, sizeof(*d->parents));
    if (d->parent_off == NULL || d->parent_n == NULL || d->parents == NULL)
        return -1;
    total = 0;
    for (i = 0; i < d->ngroups; i++) {
        d->parent_off[i] = total;
        d->parent_n[i] = (uint32_t)gs[i].nparents;
        if (gs[i].nparents > 0) {
            memcpy(d->parents + total, gs[i].parents, gs[i].nparents * sizeof(uint32_t));
            qsort(d->parents + total, gs[i].nparents, sizeof(uint32_t), cmp_u32);
        }
        total += gs[i].nparents;
    }
    return 0;
}

/* Keep user u's own group list (ids, any order; sorted here). */
static int direct_keep(struct directory *d, size_t u, const uint32_t *ids, size_t n)
{
    if (d->ndirect + n > d->direct_cap) {
        size_t ncap = d->direct_cap == 0 ? 1024 : d->direct_cap;
        uint32_t *nd;
        while (ncap < d->ndirect + n)
            ncap *= 2;
        nd = realloc(d->direct, ncap * sizeof(uint32_t));
        if (nd == NULL)
            return -1;
        d->direct = nd;
        d->direct_cap = ncap;
    }
    if (n > 0) {
        memcpy(d->direct + d->ndirect, ids, n * sizeof(uint32_t));
        qsort(d->direct + d->ndirect, n, sizeof(uint32_t), cmp_u32);
    }
    d->direct_off[u] = d->ndirect;
    d->direct_n[u] = (uint32_t)n;
    d->ndirect += n;
    return 0;
}

static int parse_groups(struct dctx *cx, struct directory *d, json_t *groups, struct gnode **out)
{
    static const char *const gkeys[] = {"member_of", "description", NULL};
    const char **names = NULL;
    struct gnode *gs = NULL;
    const char *key;
    json_t *val;
    size_t i = 0;
    char p[512];
    int rc = -1;

    if (groups != NULL && !json_is_object(groups))
        return dir_fail(cx, "$.groups", "expected an object, got %s", type_name(groups));
    d->ngroups = groups != NULL ? json_object_size(groups) : 0;
    if (d->ngroups > DIRECTORY_GROUPS_MAX)
        return dir_fail(cx, "$.groups", "more than %d groups", DIRECTORY_GROUPS_MAX);
    names = calloc(d->ngroups + 1, sizeof(*names));
    gs = calloc(d->ngroups + 1, sizeof(*gs));
    d->group_name = calloc(d->ngroups + 1, sizeof(*d->group_name));
    d->group_mask = tab_size(d->ngroups) - 1;
    d->group_tab = calloc(d->group_mask + 1, sizeof(*d->group_tab));
    if (names == NULL || gs == NULL || d->group_name == NULL || d->group_tab == NULL) {
        dir_fail(cx, "$.groups", "out of memory");
        goto out;
    }
    if (groups != NULL) {
        json_object_foreach(groups, key, val)
        {
            if (!valid_group_name(key, strlen(key))) {
                path_key(p, sizeof(p), "$.groups", key);
                dir_fail(cx, p,
                         "invalid group name (1..%d printable bytes, no ',', no leading or "
                         "trailing space)",
                         DIRECTORY_NAME_MAX);
                goto out;
            }
            names[i++] = key;
        }
    }
    qsort(names, d->ngroups, sizeof(*names), cmp_str);
    for (i = 0; i < d->ngroups; i++) {
        if (blob_add(d, names[i], 0, &d->group_name[i]) == -1) {
            dir_fail(cx, "$.groups", "out of memory");
            goto out;
        }
        index_add(d->group_tab, d->group_mask, hash_str(names[i], 0), (uint32_t)i);
    }
    for (i = 0; i < d->ngroups; i++) {
        json_t *g = json_object_get(groups, names[i]);
        json_t *mo, *desc;
        path_key(p, sizeof(p), "$.groups", names[i]);
        if (check_keys(cx, p, g, gkeys) == -1)
            goto out;
        desc = json_object_get(g, "description");
        if (desc != NULL && !json_is_string(desc)) {
            strncat(p, ".description", sizeof(p) - strlen(p) - 1);
            dir_fail(cx, p, "expected a string, got %s", type_name(desc));
            goto out;
        }
        mo = json_object_get(g, "member_of");
        if (mo != NULL) {
            strncat(p, ".member_of", sizeof(p) - strlen(p) - 1);
            if (group_list(cx, d, mo, p, &gs[i].parents, &gs[i].nparents) == -1)
                goto out;
        }
    }
    *out = gs;
    gs = NULL;
    rc = 0;
out:
    gnodes_free(gs, d->ngroups);
    free(names);
    return rc;
}

static int parse_users(struct dctx *cx, struct directory *d, json_t *users, struct gnode *gs,
                       uint32_t *mark)
{
    static const char *const ukeys[] = {"groups", "subject", "name", NULL};
    const char *key;
    json_t *val;
    size_t u = 0, cap = 0;
    uint32_t stamp = 0x80000000u, *tmp = NULL;
    char p[512];
    int rc = -1;

    if (users == NULL)
        return dir_fail(cx, "$.users", "required key is missing");
    if (!json_is_object(users))
        return dir_fail(cx, "$.users", "expected an object keyed by email, got %s",
                        type_name(users));
    d->nusers = json_object_size(users);
    if (d->nusers > DIRECTORY_USERS_MAX)
        return dir_fail(cx, "$.users", "more than %d users", DIRECTORY_USERS_MAX);
    d->user_email = calloc(d->nusers + 1, sizeof(uint32_t));
    d->user_subject = calloc(d->nusers + 1, sizeof(uint32_t));
    d->user_off = calloc(d->nusers + 1, sizeof(size_t));
    d->user_n = calloc(d->nusers + 1, sizeof(uint32_t));
    d->user_mask = tab_size(d->nusers) - 1;
    d->email_tab = calloc(d->user_mask + 1, sizeof(uint32_t));
    d->subject_tab = calloc(d->user_mask + 1, sizeof(uint32_t));
    d->direct_off = calloc(d->nusers + 1, sizeof(size_t));
    d->direct_n = calloc(d->nusers + 1, sizeof(uint32_t));
    tmp = malloc((d->ngroups + 1) * sizeof(uint32_t));
    if (d->user_email == NULL || d->user_subject == NULL || d->user_off == NULL ||
        d->user_n == NULL || d->email_tab == NULL || d->subject_tab == NULL ||
        d->direct_off == NULL || d->direct_n == NULL || tmp == NULL) {
        dir_fail(cx, "$.users", "out of memory");
        goto out;
    }
    json_object_foreach(users, key, val)
    {
        json_t *g, *sub, *nm;
        uint32_t *direct = NULL;
        size_t ndirect = 0, n = 0, i, j;

        path_key(p, sizeof(p), "$.users", key);
        if (!valid_email(key, strlen(key))) {
            dir_fail(cx, p, "expected an email address as the key");
            goto out;
        }
        if (user_find(d, d->email_tab, key, 1, d->user_email) != -1) {
            dir_fail(cx, p, "duplicate user (emails are compared case-insensitively)");
            goto out;
        }
        if (check_keys(cx, p, val, ukeys) == -1)
            goto out;
        if (blob_add(d, key, 1, &d->user_email[u]) == -1) {
            dir_fail(cx, p, "out of memory");
            goto out;
        }
        d->user_subject[u] = NO_SUBJECT;
        nm = json_object_get(val, "name");
        if (nm != NULL && !json_is_string(nm)) {
            strncat(p, ".name", sizeof(p) - strlen(p) - 1);
            dir_fail(cx, p, "expected a string, got %s", type_name(nm));
            goto out;
        }
        sub = json_object_get(val, "subject");
        if (sub != NULL) {
            size_t plen = strlen(p);
            strncat(p, ".subject", sizeof(p) - plen - 1);
            if (!json_is_string(sub) ||
                !valid_subject(json_string_value(sub), json_string_length(sub))) {
                dir_fail(cx, p, "expected a subject: 1..%d printable bytes", DIRECTORY_SUBJECT_MAX);
                goto out;
            }
            if (user_find(d, d->subject_tab, json_string_value(sub), 0, d->user_subject) != -1) {
                dir_fail(cx, p, "subject \"%.100s\" is used by another user",
                         json_string_value(sub));
                goto out;
            }
            if (blob_add(d, json_string_value(sub), 0, &d->user_subject[u]) == -1) {
                dir_fail(cx, p, "out of memory");
                goto out;
            }
            p[plen] = '\0';
        }
        g = json_object_get(val, "groups");
        if (g != NULL) {
            strncat(p, ".groups", sizeof(p) - strlen(p) - 1);
            if (group_list(cx, d, g, p, &direct, &ndirect) == -1)
                goto out;
        }
        stamp++;
        for (i = 0; i < ndirect; i++) {
            const struct gnode *gn = &gs[direct[i]];
            for (j = 0; j < gn->nclosure; j++) {
                if (mark[gn->closure[j]] != stamp) {
                    mark[gn->closure[j]] = stamp;
                    tmp[n++] = gn->closure[j];
                }
            }
        }
        if (direct_keep(d, u, direct, ndirect) == -1) {
            free(direct);
            dir_fail(cx, "$.users", "out of memory");
            goto out;
        }
        free(direct);
        qsort(tmp, n, sizeof(uint32_t), cmp_u32);
        if (d->nmembers + n > DIRECTORY_MEMBERSHIPS_MAX) {
            dir_fail(cx, "$.users", "more than %u memberships after nesting",
                     DIRECTORY_MEMBERSHIPS_MAX);
            goto out;
        }
        if (d->nmembers + n > cap) {
            size_t ncap = cap == 0 ? 1024 : cap;
            uint32_t *nm2;
            while (ncap < d->nmembers + n)
                ncap *= 2;
            nm2 = realloc(d->members, ncap * sizeof(uint32_t));
            if (nm2 == NULL) {
                dir_fail(cx, "$.users", "out of memory");
                goto out;
            }
            d->members = nm2;
            cap = ncap;
        }
        if (n > 0)
            memcpy(d->members + d->nmembers, tmp, n * sizeof(uint32_t));
        d->user_off[u] = d->nmembers;
        d->user_n[u] = (uint32_t)n;
        d->nmembers += n;
        index_add(d->email_tab, d->user_mask, hash_str(blob_str(d, d->user_email[u]), 1),
                  (uint32_t)u);
        if (d->user_subject[u] != NO_SUBJECT)
            index_add(d->subject_tab, d->user_mask, hash_str(blob_str(d, d->user_subject[u]), 0),
                      (uint32_t)u);
        u++;
    }
    rc = 0;
out:
    free(tmp);
    return rc;
}

struct directory *directory_parse(const char *text, size_t len, const char *name, char *err,
                                  size_t errlen)
{
    static const char *const tkeys[] = {"version", "groups", "users", NULL};
    struct dctx cx = {name != NULL ? name : "directory", err, errlen, 0};
    struct directory *d = NULL;
    struct gnode *gs = NULL;
    uint32_t *mark = NULL;
    json_error_t jerr;
    json_t *root = NULL, *ver;

    if (errlen > 0)
        err[0] = '\0';
    root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        if (errlen > 0)
            snprintf(err, errlen, "%s:%d:%d: JSON syntax error: %s", cx.name, jerr.line,
                     jerr.column, jerr.text);
        goto err;
    }
    if (check_keys(&cx, "$", root, tkeys) == -1)
        goto err;
    d = calloc(1, sizeof(*d));
    if (d == NULL) {
        dir_fail(&cx, "$", "out of memory");
        goto err;
    }
    ver = json_object_get(root, "version");
    if (ver != NULL && (!json_is_string(ver) || json_string_length(ver) > 128 ||
                        json_string_length(ver) != strlen(json_string_value(ver)))) {
        dir_fail(&cx, "$.version", "expected a string of at most 128 bytes");
        goto err;
    }
    if (blob_add(d, ver != NULL ? json_string_value(ver) : "", 0, &d->version_off) == -1) {
        dir_fail(&cx, "$", "out of memory");
        goto err;
    }
    if (parse_groups(&cx, d, json_object_get(root, "groups"), &gs) == -1)
        goto err;
    mark = calloc(d->ngroups + 1, sizeof(*mark));
    if (mark == NULL) {
        dir_fail(&cx, "$.groups", "out of memory");
        goto err;
    }
    if (groups_flatten(&cx, d, gs, mark) == -1)
        goto err;
    if (parents_keep(d, gs) == -1) {
        dir_fail(&cx, "$.groups", "out of memory");
        goto err;
    }
    if (parse_users(&cx, d, json_object_get(root, "users"), gs, mark) == -1)
        goto err;
    atomic_init(&d->refs, 1);
    d->serial = atomic_fetch_add(&directory_serial_next, 1);
    gnodes_free(gs, d->ngroups);
    free(mark);
    json_decref(root);
    return d;
err:
    if (errlen > 0 && err[0] == '\0')
        snprintf(err, errlen, "%s: invalid directory", cx.name);
    if (d != NULL)
        gnodes_free(gs, d->ngroups);
    free(mark);
    directory_free(d);
    json_decref(root);
    return NULL;
}

struct directory *directory_load(const char *file, char *err, size_t errlen)
{
    struct directory *d = NULL;
    struct stat st;
    char *buf = NULL;
    size_t got;
    FILE *f;

    f = fopen(file, "re");
    if (f == NULL) {
        snprintf(err, errlen, "%s: cannot open: %s", file, strerror(errno));
        return NULL;
    }
    if (fstat(fileno(f), &st) == -1 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s: not a regular file", file);
        goto out;
    }
    if ((uint64_t)st.st_size > DIRECTORY_FILE_MAX) {
        snprintf(err, errlen, "%s: larger than %u bytes", file, DIRECTORY_FILE_MAX);
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
    d = directory_parse(buf, got, file, err, errlen);
out:
    free(buf);
    fclose(f);
    return d;
}

struct directory *directory_ref(struct directory *d)
{
    if (d != NULL)
        atomic_fetch_add_explicit(&d->refs, 1, memory_order_relaxed);
    return d;
}

void directory_unref(struct directory *d)
{
    if (d == NULL)
        return;
    if (atomic_fetch_sub_explicit(&d->refs, 1, memory_order_acq_rel) == 1)
        directory_free(d);
}

uint64_t directory_serial(const struct directory *d)
{
    return d->serial;
}

const char *directory_version(const struct directory *d)
{
    return blob_str(d, d->version_off);
}

size_t directory_user_count(const struct directory *d)
{
    return d->nusers;
}

size_t directory_group_count(const struct directory *d)
{
    return d->ngroups;
}

const char *directory_group_name(const struct directory *d, uint32_t id)
{
    return id < d->ngroups ? blob_str(d, d->group_name[id]) : NULL;
}

int directory_user_groups(const struct directory *d, const char *subject, const char *email,
                          const uint32_t **ids, size_t *n)
{
    int u = -1;

    *ids = NULL;
    *n = 0;
    if (d == NULL)
        return -1;
    if (subject != NULL && subject[0] != '\0')
        u = user_find(d, d->subject_tab, subject, 0, d->user_subject);
    if (u == -1 && email != NULL && email[0] != '\0')
        u = user_find(d, d->email_tab, email, 1, d->user_email);
    if (u == -1)
        return -1;
    /* members is NULL when nobody is in any group: never offset a NULL pointer */
    *ids = d->user_n[u] > 0 ? d->members + d->user_off[u] : no_ids;
    *n = d->user_n[u];
    return 0;
}

int directory_ids_contain(const uint32_t *ids, size_t n, uint32_t id)
{
    size_t lo = 0, hi = n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (ids[mid] == id)
            return 1;
        if (ids[mid] < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

int directory_group_parents(const struct directory *d, uint32_t id, const uint32_t **ids, size_t *n)
{
    *ids = no_ids;
    *n = 0;
    if (d == NULL || id >= d->ngroups)
        return -1;
    if (d->parent_n[id] > 0)
        *ids = d->parents + d->parent_off[id];
    *n = d->parent_n[id];
    return 0;
}

int directory_user_at(const struct directory *d, size_t i, const char **email, const char **subject,
                      const uint32_t **ids, size_t *n)
{
    if (d == NULL || i >= d->nusers)
        return -1;
    *email = blob_str(d, d->user_email[i]);
    *subject = d->user_subject[i] != NO_SUBJECT ? blob_str(d, d->user_subject[i]) : NULL;
    *ids = d->direct_n[i] > 0 ? d->direct + d->direct_off[i] : no_ids;
    *n = d->direct_n[i];
    return 0;
}
