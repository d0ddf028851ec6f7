/*
 * inventory.c - parse an MDM inventory feed into an indexed, immutable snapshot.
 *
 * The feed decides who gets in, so it is parsed strictly: one bad record,
 * one duplicate id, or an unexpectedly empty feed refuses the whole feed and
 * the proxy keeps the last good snapshot. A half-applied feed would be worse
 * than a stale one.
 *
 * Why not jansson here: on the reference machine json_loadb() alone takes
 * ~0.9 s of CPU for a 100,000-record (30 MB) feed, and freeing the tree
 * another 0.1-0.5 s, which leaves nothing of the 1 s budget. Records are
 * flat objects of scalars (nested values are refused anyway), so a small
 * strict scanner does the job without building a tree: strings without
 * escapes are used in place, and nothing is allocated per value. It accepts
 * a subset of what jansson accepts (the feed fuzzer checks exactly that).
 *
 * Layout: records in feed order in one array; every string in one pool
 * (records hold offsets, so the pool can grow while parsing); the id index
 * is an open-addressing table (linear probing, load <= 1/2) of (hash,
 * record) pairs. Keys come from the MDM and the device CA, not from
 * anonymous clients, so an unkeyed hash (FNV-1a) is acceptable here.
 */
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "inventory.h"
#include "posture.h"

struct inventory_attr_slot {
    uint32_t name;     /* pool offset */
    uint32_t str;      /* pool offset, STRING only */
    uint8_t type;      /* enum inventory_attr_type */
    uint8_t name_len;  /* set by texts_prepare(), as are: */
    uint16_t text_len; /* the value as text (inventory_record_texts()) */
    uint32_t text;     /* pool offset of that text (not for BOOL) */
    int64_t i;
    double real;
};

struct inventory_record {
    const struct inventory *inv;
    uint32_t hash;
    uint32_t id, serial, owner, platform, os_version, model; /* pool offsets */
    uint32_t attr_first;
    uint16_t id_len;
    uint16_t attr_count;
    uint8_t status; /* enum inventory_status */
    uint8_t managed;
    /* Lengths, set by texts_prepare(). */
    uint16_t owner_len;
    uint8_t platform_len, os_version_len, model_len;
    int64_t enrolled;
};

/* The id's offset and length sit in the slot: a lookup touches the slot and the id only. */
struct inventory_slot {
    uint32_t hash;
    uint32_t rec; /* record number + 1; 0 is empty */
    uint32_t id;  /* pool offset of the id */
    uint32_t id_len;
};

struct inventory {
    atomic_int refs;
    size_t n, nmax;
    struct inventory_record *recs;
    struct inventory_attr_slot *attrs;
    size_t nattrs, attrs_cap;
    char *pool;
    size_t pool_len, pool_cap;
    struct inventory_slot *slots;
    size_t mask;
    int64_t loaded_at;
    uint64_t version;
    unsigned char hash[32];
};

/* Where a record came from, for error messages. */
struct inventory_loc {
    int ndjson;
    size_t index; /* record number */
    size_t line;  /* NDJSON line, 1-based */
};

/* Longest decoded string kept; longer ones are measured, then refused by the field checks. */
#define INV_STR_MAX INVENTORY_ATTR_VALUE_MAX

struct inventory_ctx {
    struct inventory *inv;
    const char *data;       /* the whole feed, for line and column numbers */
    const char *line_start; /* NDJSON: the current line */
    uint32_t *lines;        /* NDJSON line per record, for duplicate errors */
    char *err;
    size_t errlen;
    char kbuf[INV_STR_MAX + 1]; /* decoded key (when it had escapes) */
    char vbuf[INV_STR_MAX + 1]; /* decoded string value (likewise) */
};

/* A scanned JSON value. Containers are never scanned: every field refuses them. */
enum inv_jtype {
    INV_J_STRING = 0,
    INV_J_INTEGER,
    INV_J_REAL,
    INV_J_TRUE,
    INV_J_FALSE,
    INV_J_NULL,
    INV_J_OBJECT,
    INV_J_ARRAY
};

struct inv_jval {
    enum inv_jtype type;
    const char *s; /* STRING: decoded bytes; NULL if longer than INV_STR_MAX */
    size_t n;      /* STRING: decoded length */
    int64_t i;
    double d;
    const char *raw; /* the token as written, for messages */
    size_t rawn;
};

struct inv_lex {
    const char *p, *end;
    const char *errpos; /* set with what on a syntax error */
    const char *what;
};

static int inv_fail(struct inventory_ctx *cx, const struct inventory_loc *loc, const char *field,
                    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/*
 * "inventory: $[17].status: ..." for an array feed,
 * "inventory: line 18: $.status: ..." for NDJSON, "inventory: $: ..." for
 * the feed as a whole (loc NULL).
 */
static int inv_fail(struct inventory_ctx *cx, const struct inventory_loc *loc, const char *field,
                    const char *fmt, ...)
{
    va_list ap;
    int n;

    if (cx->err == NULL || cx->errlen == 0)
        return -1;
    if (loc == NULL)
        n = snprintf(cx->err, cx->errlen, "inventory: $%s: ", field);
    else if (loc->ndjson)
        n = snprintf(cx->err, cx->errlen, "inventory: line %zu: $%s: ", loc->line, field);
    else
        n = snprintf(cx->err, cx->errlen, "inventory: $[%zu]%s: ", loc->index, field);
    if (n < 0 || (size_t)n >= cx->errlen)
        return -1;
    va_start(ap, fmt);
    vsnprintf(cx->err + n, cx->errlen - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

/* A syntax error found by the scanner, with its line (array feeds) and column. */
static int inv_syntax(struct inventory_ctx *cx, const struct inventory_loc *loc,
                      const struct inv_lex *lx)
{
    const char *pos = lx->errpos ? lx->errpos : lx->p, *q, *ls = cx->data;
    size_t line = 1;

    if (loc != NULL && loc->ndjson)
        return inv_fail(cx, loc, "", "JSON syntax error at column %zu: %s",
                        (size_t)(pos - cx->line_start) + 1, lx->what);
    for (q = cx->data; q < pos; q++) {
        if (*q == '\n') {
            line++;
            ls = q + 1;
        }
    }
    return inv_fail(cx, loc, "", "JSON syntax error at line %zu column %zu: %s", line,
                    (size_t)(pos - ls) + 1, lx->what);
}

static int lex_error(struct inv_lex *lx, const char *pos, const char *what);

/* A syntax error at the scanner's position. */
static int inv_syntax_at(struct inventory_ctx *cx, const struct inventory_loc *loc,
                         struct inv_lex *lx, const char *what)
{
    lex_error(lx, lx->p, what);
    return inv_syntax(cx, loc, lx);
}

/* What a value was, for "got ...": the token as written (truncated), or its kind. */
static const char *inv_describe(const struct inv_jval *v, char *out, size_t len)
{
    size_t i, n;

    if (v->type == INV_J_OBJECT)
        return "an object";
    if (v->type == INV_J_ARRAY)
        return "an array";
    n = v->rawn < len - 1 ? v->rawn : len - 1;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v->raw[i];
        out[i] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    out[n] = '\0';
    if (v->rawn > n && n >= 3)
        memcpy(out + n - 3, "...", 3);
    return out;
}

/* ---- scanner ----------------------------------------------------------- */

static int lex_error(struct inv_lex *lx, const char *pos, const char *what)
{
    lx->errpos = pos;
    lx->what = what;
    return -1;
}

static void lex_ws(struct inv_lex *lx)
{
    while (lx->p < lx->end && (*lx->p == ' ' || *lx->p == '\t' || *lx->p == '\n' || *lx->p == '\r'))
        lx->p++;
}

static int hex4(const char *p, unsigned *out)
{
    unsigned v = 0;
    int i;

    for (i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

/* Length of a valid UTF-8 sequence at p (RFC 3629: no overlongs, no surrogates), or 0. */
static size_t utf8_len(const unsigned char *p, const unsigned char *end)
{
    size_t n, i;
    unsigned char lo = 0x80, hi = 0xbf;

    if (p[0] >= 0xc2 && p[0] <= 0xdf)
        n = 2;
    else if (p[0] >= 0xe0 && p[0] <= 0xef)
        n = 3;
    else if (p[0] >= 0xf0 && p[0] <= 0xf4)
        n = 4;
    else
        return 0;
    if ((size_t)(end - p) < n)
        return 0;
    if (p[0] == 0xe0)
        lo = 0xa0;
    else if (p[0] == 0xed)
        hi = 0x9f;
    else if (p[0] == 0xf0)
        lo = 0x90;
    else if (p[0] == 0xf4)
        hi = 0x8f;
    if (p[1] < lo || p[1] > hi)
        return 0;
    for (i = 2; i < n; i++)
        if (p[i] < 0x80 || p[i] > 0xbf)
            return 0;
    return n;
}

static void put(char *buf, size_t cap, size_t *o, unsigned char c)
{
    if (*o < cap)
        buf[*o] = (char)c;
    (*o)++;
}

/*
 * A string at lx->p (the opening quote). Without escapes the result points
 * into the input; otherwise it is decoded into buf (cap bytes; longer
 * strings are measured and *s is NULL).
 */
static int lex_string(struct inv_lex *lx, char *buf, size_t cap, const char **s, size_t *n)
{
    const char *p = lx->p + 1, *end = lx->end, *start = p;
    size_t o, k;
    unsigned cp, lo;

    while (p < end) {
        unsigned char c = (unsigned char)*p;
        if (c == '"') {
            *s = start;
            *n = (size_t)(p - start);
            lx->p = p + 1;
            return 0;
        }
        if (c == '\\' || c < 0x20 || c >= 0x80)
            break;
        p++;
    }
    o = (size_t)(p - start);
    memcpy(buf, start, o < cap ? o : cap);
    while (p < end) {
        unsigned char c = (unsigned char)*p;
        if (c == '"') {
            *s = o <= cap ? buf : NULL;
            *n = o;
            lx->p = p + 1;
            return 0;
        }
        if (c < 0x20)
            return lex_error(lx, p, "control character in a string");
        if (c >= 0x80) {
            k = utf8_len((const unsigned char *)p, (const unsigned char *)end);
            if (k == 0)
                return lex_error(lx, p, "invalid UTF-8 in a string");
            while (k--)
                put(buf, cap, &o, (unsigned char)*p++);
            continue;
        }
        if (c != '\\') {
            put(buf, cap, &o, c);
            p++;
            continue;
        }
        if (end - p < 2)
            return lex_error(lx, p, "unterminated string");
        switch (p[1]) {
        case '"':
        case '\\':
        case '/':
            put(buf, cap, &o, (unsigned char)p[1]);
            p += 2;
            continue;
        case 'b':
            put(buf, cap, &o, '\b');
            p += 2;
            continue;
        case 'f':
            put(buf, cap, &o, '\f');
            p += 2;
            continue;
        case 'n':
            put(buf, cap, &o, '\n');
            p += 2;
            continue;
        case 'r':
            put(buf, cap, &o, '\r');
            p += 2;
            continue;
        case 't':
            put(buf, cap, &o, '\t');
            p += 2;
            continue;
        case 'u':
            break;
        default:
            return lex_error(lx, p, "invalid escape in a string");
        }
        if (end - p < 6 || hex4(p + 2, &cp) == -1)
            return lex_error(lx, p, "invalid \\u escape");
        p += 6;
        if (cp >= 0xdc00 && cp <= 0xdfff)
            return lex_error(lx, p - 6, "unpaired surrogate in a \\u escape");
        if (cp >= 0xd800 && cp <= 0xdbff) {
            if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || hex4(p + 2, &lo) == -1 ||
                lo < 0xdc00 || lo > 0xdfff)
                return lex_error(lx, p - 6, "unpaired surrogate in a \\u escape");
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            p += 6;
        }
        if (cp == 0)
            return lex_error(lx, p - 6, "\\u0000 is not allowed");
        if (cp < 0x80) {
            put(buf, cap, &o, (unsigned char)cp);
        } else if (cp < 0x800) {
            put(buf, cap, &o, (unsigned char)(0xc0 | (cp >> 6)));
            put(buf, cap, &o, (unsigned char)(0x80 | (cp & 0x3f)));
        } else if (cp < 0x10000) {
            put(buf, cap, &o, (unsigned char)(0xe0 | (cp >> 12)));
            put(buf, cap, &o, (unsigned char)(0x80 | ((cp >> 6) & 0x3f)));
            put(buf, cap, &o, (unsigned char)(0x80 | (cp & 0x3f)));
        } else {
            put(buf, cap, &o, (unsigned char)(0xf0 | (cp >> 18)));
            put(buf, cap, &o, (unsigned char)(0x80 | ((cp >> 12) & 0x3f)));
            put(buf, cap, &o, (unsigned char)(0x80 | ((cp >> 6) & 0x3f)));
            put(buf, cap, &o, (unsigned char)(0x80 | (cp & 0x3f)));
        }
    }
    return lex_error(lx, lx->p, "unterminated string");
}

static int is_digit(const char *p, const char *end)
{
    return p < end && *p >= '0' && *p <= '9';
}

/* RFC 8259 number grammar; integers must fit int64, reals must be finite. */
static int lex_number(struct inv_lex *lx, struct inv_jval *v)
{
    const char *p = lx->p, *end = lx->end, *start = p;
    char tmp[64];
    int real = 0, neg = 0;
    uint64_t u = 0;
    size_t n;

    if (*p == '-') {
        neg = 1;
        p++;
    }
    if (!is_digit(p, end))
        return lex_error(lx, start, "invalid number");
    if (*p == '0') {
        p++;
    } else {
        while (is_digit(p, end))
            p++;
    }
    if (p < end && *p == '.') {
        p++;
        if (!is_digit(p, end))
            return lex_error(lx, start, "invalid number");
        while (is_digit(p, end))
            p++;
        real = 1;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (!is_digit(p, end))
            return lex_error(lx, start, "invalid number");
        while (is_digit(p, end))
            p++;
        real = 1;
    }
    n = (size_t)(p - start);
    v->raw = start;
    v->rawn = n;
    lx->p = p;
    if (!real) {
        const char *q;
        for (q = start + neg; q < p; q++) {
            if (u > (UINT64_MAX - 9) / 10)
                return lex_error(lx, start, "integer out of range");
            u = u * 10 + (uint64_t)(*q - '0');
        }
        if (u > (uint64_t)INT64_MAX + (uint64_t)neg)
            return lex_error(lx, start, "integer out of range");
        v->type = INV_J_INTEGER;
        v->i = neg ? (int64_t)(0 - u) : (int64_t)u;
        return 0;
    }
    if (n >= sizeof(tmp))
        return lex_error(lx, start, "number too long");
    memcpy(tmp, start, n);
    tmp[n] = '\0';
    v->type = INV_J_REAL;
    v->d = strtod(tmp, NULL);
    if (!isfinite(v->d))
        return lex_error(lx, start, "real number overflow");
    return 0;
}

/* One value at lx->p. Containers are recognised, not scanned. */
static int lex_value(struct inv_lex *lx, char *buf, size_t cap, struct inv_jval *v)
{
    const char *p = lx->p;
    size_t left = (size_t)(lx->end - p);

    memset(v, 0, sizeof(*v));
    v->raw = p;
    if (left == 0)
        return lex_error(lx, p, "expected a value");
    switch (*p) {
    case '"':
        v->type = INV_J_STRING;
        if (lex_string(lx, buf, cap, &v->s, &v->n) == -1)
            return -1;
        v->rawn = (size_t)(lx->p - p);
        return 0;
    case '{':
        v->type = INV_J_OBJECT;
        v->rawn = 1;
        return 0;
    case '[':
        v->type = INV_J_ARRAY;
        v->rawn = 1;
        return 0;
    case 't':
        if (left >= 4 && memcmp(p, "true", 4) == 0) {
            v->type = INV_J_TRUE;
            v->rawn = 4;
            lx->p += 4;
            return 0;
        }
        break;
    case 'f':
        if (left >= 5 && memcmp(p, "false", 5) == 0) {
            v->type = INV_J_FALSE;
            v->rawn = 5;
            lx->p += 5;
            return 0;
        }
        break;
    case 'n':
        if (left >= 4 && memcmp(p, "null", 4) == 0) {
            v->type = INV_J_NULL;
            v->rawn = 4;
            lx->p += 4;
            return 0;
        }
        break;
    default:
        if (*p == '-' || (*p >= '0' && *p <= '9'))
            return lex_number(lx, v);
        break;
    }
    return lex_error(lx, p, "expected a value");
}

/* ---- records ----------------------------------------------------------- */

static uint32_t inv_hash(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    size_t i;

    for (i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ULL;
    }
    return (uint32_t)(h ^ (h >> 32));
}

/* Append n bytes and a NUL to the pool; the offset, or UINT32_MAX on failure. */
static uint32_t pool_add(struct inventory *inv, const char *s, size_t n)
{
    size_t need = inv->pool_len + n + 1, off;
    char *p;

    if (need > UINT32_MAX - 1)
        return UINT32_MAX;
    if (need > inv->pool_cap) {
        size_t cap = inv->pool_cap ? inv->pool_cap : 4096;
        while (cap < need)
            cap *= 2;
        if (cap > UINT32_MAX)
            cap = UINT32_MAX;
        p = realloc(inv->pool, cap);
        if (p == NULL)
            return UINT32_MAX;
        inv->pool = p;
        inv->pool_cap = cap;
    }
    off = inv->pool_len;
    memcpy(inv->pool + off, s, n);
    inv->pool[off + n] = '\0';
    inv->pool_len = need;
    return (uint32_t)off;
}

static int valid_device_id(const char *s, size_t n)
{
    size_t i;

    if (n == 0 || n > DEVICE_ID_MAX)
        return 0;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == ':' || c == '-'))
            return 0;
    }
    return 1;
}

/* [A-Za-z0-9._-] (attribute names, platform). */
static int valid_token(const char *s, size_t n, size_t max)
{
    size_t i;

    if (s == NULL || n == 0 || n > max)
        return 0;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

/* No control characters (UTF-8 above 0x7f is fine); spaces if allowed. */
static int valid_text(const char *s, size_t n, int spaces)
{
    size_t i;

    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f || (c == ' ' && !spaces))
            return 0;
    }
    return 1;
}

enum inv_field {
    IF_ID = 0,
    IF_SERIAL,
    IF_OWNER,
    IF_MANAGED,
    IF_STATUS,
    IF_PLATFORM,
    IF_OS_VERSION,
    IF_MODEL,
    IF_ENROLLED,
    IF_COUNT
};

/* As JSON path suffixes; the name is path + 1. */
static const char *const inv_fields[IF_COUNT] = {
    ".id",       ".serial",     ".owner", ".managed",  ".status",
    ".platform", ".os_version", ".model", ".enrolled",
};
static const uint8_t inv_field_len[IF_COUNT] = {2, 6, 5, 7, 6, 8, 10, 5, 8};

static const char *const inv_status_names[] = {"none", "active", "lost", "stolen", "retired"};

/* A string field: type, length (bytes) and character checks, then into the pool. */
static int take_string(struct inventory_ctx *cx, const struct inventory_loc *loc, const char *field,
                       const struct inv_jval *v, size_t min, size_t max, int spaces, uint32_t *off)
{
    char got[48];

    if (v->type != INV_J_STRING)
        return inv_fail(cx, loc, field, "expected a string, got %s",
                        inv_describe(v, got, sizeof(got)));
    if (v->n < min || v->n > max || v->s == NULL)
        return inv_fail(cx, loc, field, "expected %zu to %zu bytes, got %zu", min, max, v->n);
    if (!valid_text(v->s, v->n, spaces))
        return inv_fail(cx, loc, field, "control characters%s are not allowed",
                        spaces ? "" : " and spaces");
    *off = pool_add(cx->inv, v->s, v->n);
    if (*off == UINT32_MAX)
        return inv_fail(cx, loc, field, "out of memory");
    return 0;
}

/* Names of this record's extra fields so far (pool offsets), to refuse duplicates. */
struct inv_keys {
    size_t n;
    uint32_t off[INVENTORY_MAX_ATTRS];
    uint16_t len[INVENTORY_MAX_ATTRS];
};

static int take_attr(struct inventory_ctx *cx, const struct inventory_loc *loc,
                     struct inventory_record *r, struct inv_keys *keys, const char *key,
                     size_t klen, const struct inv_jval *v)
{
    struct inventory *inv = cx->inv;
    struct inventory_attr_slot *a;
    char field[INVENTORY_ATTR_NAME_MAX + 8], got[48];
    uint32_t name;
    size_t i;

    /* The path for messages, printable and bounded (no snprintf: this runs per field). */
    field[0] = '.';
    for (i = 0; key != NULL && i < klen && i < INVENTORY_ATTR_NAME_MAX; i++)
        field[i + 1] = key[i] >= 0x20 && key[i] < 0x7f ? key[i] : '?';
    field[i + 1] = '\0';
    if (!valid_token(key, klen, INVENTORY_ATTR_NAME_MAX))
        return inv_fail(cx, loc, field,
                        "extra field names must be 1-%d characters of [A-Za-z0-9._-]",
                        INVENTORY_ATTR_NAME_MAX);
    for (i = 0; i < keys->n; i++)
        if (keys->len[i] == klen && memcmp(inv->pool + keys->off[i], key, klen) == 0)
            return inv_fail(cx, loc, field, "duplicate key");
    if (keys->n >= INVENTORY_MAX_ATTRS)
        return inv_fail(cx, loc, field, "more than %d extra fields", INVENTORY_MAX_ATTRS);
    name = pool_add(inv, key, klen);
    if (name == UINT32_MAX)
        return inv_fail(cx, loc, field, "out of memory");
    keys->off[keys->n] = name;
    keys->len[keys->n] = (uint16_t)klen;
    keys->n++;
    /* null means "the MDM does not know": the attribute is absent. */
    if (v->type == INV_J_NULL)
        return 0;
    if (inv->nattrs == inv->attrs_cap) {
        size_t cap = inv->attrs_cap ? inv->attrs_cap * 2 : 1024;
        void *p = cap > UINT32_MAX ? NULL : realloc(inv->attrs, cap * sizeof(*inv->attrs));
        if (p == NULL)
            return inv_fail(cx, loc, field, "out of memory");
        inv->attrs = p;
        inv->attrs_cap = cap;
    }
    a = &inv->attrs[inv->nattrs];
    memset(a, 0, sizeof(*a));
    a->name = name;
    switch (v->type) {
    case INV_J_STRING:
        a->type = INVENTORY_ATTR_STRING;
        if (take_string(cx, loc, field, v, 0, INVENTORY_ATTR_VALUE_MAX, 1, &a->str) == -1)
            return -1;
        break;
    case INV_J_INTEGER:
        a->type = INVENTORY_ATTR_INTEGER;
        a->i = v->i;
        break;
    case INV_J_REAL:
        a->type = INVENTORY_ATTR_REAL;
        a->real = v->d;
        break;
    case INV_J_TRUE:
    case INV_J_FALSE:
        a->type = INVENTORY_ATTR_BOOL;
        a->i = v->type == INV_J_TRUE;
        break;
    default:
        return inv_fail(cx, loc, field,
                        "expected a string, number, boolean or null (nested objects and arrays "
                        "are not supported), got %s",
                        inv_describe(v, got, sizeof(got)));
    }
    if (r->attr_count == 0)
        r->attr_first = (uint32_t)inv->nattrs;
    r->attr_count++;
    inv->nattrs++;
    return 0;
}

static int take_field(struct inventory_ctx *cx, const struct inventory_loc *loc,
                      struct inventory_record *r, enum inv_field f, const struct inv_jval *v)
{
    struct inventory *inv = cx->inv;
    const char *field = inv_fields[f];
    enum inventory_status st;
    char got[48], stbuf[16];
    size_t i;

    switch (f) {
    case IF_ID:
        if (v->type != INV_J_STRING || !valid_device_id(v->s, v->s ? v->n : 0))
            return inv_fail(cx, loc, field, "expected 1-%d characters of [A-Za-z0-9._:-], got %s",
                            DEVICE_ID_MAX, inv_describe(v, got, sizeof(got)));
        r->id = pool_add(inv, v->s, v->n);
        if (r->id == UINT32_MAX)
            return inv_fail(cx, loc, field, "out of memory");
        r->id_len = (uint16_t)v->n;
        r->hash = inv_hash(v->s, v->n);
        return 0;
    case IF_SERIAL:
        return take_string(cx, loc, field, v, 0, INVENTORY_SERIAL_MAX, 1, &r->serial);
    case IF_OWNER:
        return take_string(cx, loc, field, v, 1, INVENTORY_OWNER_MAX, 0, &r->owner);
    case IF_MODEL:
        return take_string(cx, loc, field, v, 0, INVENTORY_MODEL_MAX, 1, &r->model);
    case IF_OS_VERSION:
        return take_string(cx, loc, field, v, 1, INVENTORY_OS_VERSION_MAX, 0, &r->os_version);
    case IF_PLATFORM:
        if (v->type != INV_J_STRING || !valid_token(v->s, v->n, INVENTORY_PLATFORM_MAX))
            return inv_fail(cx, loc, field,
                            "expected 1-%d characters of [A-Za-z0-9._-] like \"linux\", got %s",
                            INVENTORY_PLATFORM_MAX, inv_describe(v, got, sizeof(got)));
        r->platform = pool_add(inv, v->s, v->n);
        if (r->platform == UINT32_MAX)
            return inv_fail(cx, loc, field, "out of memory");
        /* Lower case, so "macOS" in a feed matches "macos" in the scoring config. */
        for (i = r->platform; inv->pool[i] != '\0'; i++)
            if (inv->pool[i] >= 'A' && inv->pool[i] <= 'Z')
                inv->pool[i] = (char)(inv->pool[i] - 'A' + 'a');
        return 0;
    case IF_MANAGED:
        if (v->type != INV_J_TRUE && v->type != INV_J_FALSE)
            return inv_fail(cx, loc, field, "expected true or false, got %s",
                            inv_describe(v, got, sizeof(got)));
        r->managed = v->type == INV_J_TRUE;
        return 0;
    case IF_STATUS:
        if (v->type != INV_J_STRING || v->s == NULL || v->n >= sizeof(stbuf))
            goto bad_status;
        memcpy(stbuf, v->s, v->n);
        stbuf[v->n] = '\0';
        if (inventory_status_parse(stbuf, &st) == -1)
            goto bad_status;
        r->status = (uint8_t)st;
        return 0;
    bad_status:
        return inv_fail(cx, loc, field,
                        "expected \"active\", \"lost\", \"stolen\" or \"retired\", got %s",
                        inv_describe(v, got, sizeof(got)));
    case IF_ENROLLED:
        if (v->type != INV_J_STRING || v->s == NULL ||
            posture_time_parse(v->s, v->n, &r->enrolled) == -1)
            return inv_fail(cx, loc, field,
                            "expected an RFC 3339 time like \"2024-05-01T12:00:00Z\", got %s",
                            inv_describe(v, got, sizeof(got)));
        return 0;
    case IF_COUNT:
        break;
    }
    return inv_fail(cx, loc, field, "internal error");
}

/* Insert record k into the index; -1 (with the error) on a duplicate id. */
static int index_insert(struct inventory_ctx *cx, const struct inventory_loc *loc, size_t k)
{
    struct inventory *inv = cx->inv;
    const struct inventory_record *r = &inv->recs[k], *o;
    size_t i = r->hash & inv->mask;

    while (inv->slots[i].rec != 0) {
        o = &inv->recs[inv->slots[i].rec - 1];
        if (inv->slots[i].hash == r->hash && o->id_len == r->id_len &&
            memcmp(inv->pool + o->id, inv->pool + r->id, r->id_len) == 0) {
            if (loc->ndjson)
                return inv_fail(cx, loc, ".id", "duplicate device id \"%s\" (also on line %u)",
                                inv->pool + r->id, cx->lines[inv->slots[i].rec - 1]);
            return inv_fail(cx, loc, ".id", "duplicate device id \"%s\" (also at $[%u])",
                            inv->pool + r->id, inv->slots[i].rec - 1);
        }
        i = (i + 1) & inv->mask;
    }
    inv->slots[i].hash = r->hash;
    inv->slots[i].rec = (uint32_t)k + 1;
    inv->slots[i].id = r->id;
    inv->slots[i].id_len = r->id_len;
    return 0;
}

/* One record: lx->p is at its '{'; on success lx->p is just past its '}'. */
static int take_record(struct inventory_ctx *cx, const struct inventory_loc *loc,
                       struct inv_lex *lx)
{
    struct inventory *inv = cx->inv;
    struct inventory_record *r;
    struct inv_keys keys;
    struct inv_jval v;
    const char *key;
    unsigned seen = 0;
    size_t klen;
    int f;

    if (inv->n >= inv->nmax)
        return inv_fail(cx, NULL, "", "more than %d records", INVENTORY_MAX_RECORDS);
    r = &inv->recs[inv->n];
    memset(r, 0, sizeof(*r));
    r->inv = inv;
    keys.n = 0;
    lx->p++;
    lex_ws(lx);
    if (lx->p < lx->end && *lx->p == '}') {
        lx->p++;
        goto done;
    }
    for (;;) {
        if (lx->p >= lx->end || *lx->p != '"')
            return inv_syntax_at(cx, loc, lx, "expected a key string");
        if (lex_string(lx, cx->kbuf, INV_STR_MAX, &key, &klen) == -1)
            return inv_syntax(cx, loc, lx);
        lex_ws(lx);
        if (lx->p >= lx->end || *lx->p != ':')
            return inv_syntax_at(cx, loc, lx, "expected ':'");
        lx->p++;
        lex_ws(lx);
        if (lex_value(lx, cx->vbuf, INV_STR_MAX, &v) == -1)
            return inv_syntax(cx, loc, lx);
        for (f = 0; f < IF_COUNT; f++)
            if (key != NULL && inv_field_len[f] == klen &&
                memcmp(key, inv_fields[f] + 1, klen) == 0)
                break;
        if (f == IF_COUNT) {
            if (take_attr(cx, loc, r, &keys, key, klen, &v) == -1)
                return -1;
        } else {
            if (seen & (1u << f))
                return inv_fail(cx, loc, inv_fields[f], "duplicate key");
            seen |= 1u << f;
            if (take_field(cx, loc, r, (enum inv_field)f, &v) == -1)
                return -1;
        }
        lex_ws(lx);
        if (lx->p < lx->end && *lx->p == ',') {
            lx->p++;
            lex_ws(lx);
            continue;
        }
        if (lx->p < lx->end && *lx->p == '}') {
            lx->p++;
            break;
        }
        return inv_syntax_at(cx, loc, lx, "expected ',' or '}'");
    }
done:
    for (f = 0; f < IF_COUNT; f++) {
        if (!(seen & (1u << f)))
            return inv_fail(cx, loc, inv_fields[f], "required field is missing");
    }
    if (index_insert(cx, loc, inv->n) == -1)
        return -1;
    inv->n++;
    return 0;
}

/* A record position that is not an object: say what it was. */
static int not_an_object(struct inventory_ctx *cx, const struct inventory_loc *loc,
                         struct inv_lex *lx)
{
    struct inv_jval v;
    char got[48];

    if (lex_value(lx, cx->vbuf, INV_STR_MAX, &v) == -1)
        return inv_syntax(cx, loc, lx);
    return inv_fail(cx, loc, "", "expected an object, got %s", inv_describe(&v, got, sizeof(got)));
}

/* Allocate records and the index for at most nmax records. */
static int inv_alloc(struct inventory_ctx *cx, size_t nmax, int ndjson)
{
    struct inventory *inv = cx->inv;
    size_t cap = 16;

    if (nmax > INVENTORY_MAX_RECORDS)
        nmax = INVENTORY_MAX_RECORDS;
    while (cap < nmax * 2)
        cap *= 2;
    inv->recs = calloc(nmax ? nmax : 1, sizeof(*inv->recs));
    inv->slots = calloc(cap, sizeof(*inv->slots));
    if (ndjson)
        cx->lines = calloc(nmax ? nmax : 1, sizeof(*cx->lines));
    if (inv->recs == NULL || inv->slots == NULL || (ndjson && cx->lines == NULL))
        return inv_fail(cx, NULL, "", "out of memory");
    inv->nmax = nmax;
    inv->mask = cap - 1;
    return 0;
}

static size_t count_byte(const char *p, size_t len, char c)
{
    const char *end = p + len;
    size_t n = 0;

    while ((p = memchr(p, c, (size_t)(end - p))) != NULL) {
        n++;
        p++;
    }
    return n;
}

static int parse_array(struct inventory_ctx *cx, const char *data, size_t len)
{
    struct inventory_loc loc = {0, 0, 0};
    struct inv_lex lx = {data, data + len, NULL, NULL};

    /* Every record has a '{': a cheap upper bound for the allocation. */
    if (inv_alloc(cx, count_byte(data, len, '{'), 0) == -1)
        return -1;
    lex_ws(&lx);
    lx.p++; /* the '[' */
    lex_ws(&lx);
    if (lx.p < lx.end && *lx.p == ']') {
        lx.p++;
        goto end;
    }
    for (;;) {
        loc.index = cx->inv->n;
        if (lx.p >= lx.end)
            return inv_syntax_at(cx, NULL, &lx, "expected a record, got the end of the feed");
        if (*lx.p != '{')
            return not_an_object(cx, &loc, &lx);
        if (take_record(cx, &loc, &lx) == -1)
            return -1;
        lex_ws(&lx);
        if (lx.p < lx.end && *lx.p == ',') {
            lx.p++;
            lex_ws(&lx);
            continue;
        }
        if (lx.p < lx.end && *lx.p == ']') {
            lx.p++;
            break;
        }
        return inv_syntax_at(cx, NULL, &lx, "expected ',' or ']'");
    }
end:
    lex_ws(&lx);
    if (lx.p != lx.end)
        return inv_syntax_at(cx, NULL, &lx, "data after the end of the array");
    return 0;
}

static int is_blank(const char *s, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
            return 0;
    return 1;
}

static int parse_ndjson(struct inventory_ctx *cx, const char *data, size_t len)
{
    struct inventory_loc loc = {1, 0, 0};
    const char *p, *end = data + len, *nl;
    struct inv_lex lx;
    size_t n;

    /* One record per line at most: a cheap upper bound for the allocation. */
    if (inv_alloc(cx, count_byte(data, len, '\n') + 1, 1) == -1)
        return -1;
    for (p = data; p < end; p += n + 1) {
        nl = memchr(p, '\n', (size_t)(end - p));
        n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        loc.line++;
        if (is_blank(p, n))
            continue;
        loc.index = cx->inv->n;
        if (n > INVENTORY_MAX_LINE)
            return inv_fail(cx, &loc, "", "line is %zu bytes, the limit is %d", n,
                            INVENTORY_MAX_LINE);
        cx->line_start = p;
        lx.p = p;
        lx.end = p + n;
        lx.errpos = NULL;
        lx.what = NULL;
        lex_ws(&lx);
        if (*lx.p != '{')
            return not_an_object(cx, &loc, &lx);
        if (loc.index < cx->inv->nmax)
            cx->lines[loc.index] = (uint32_t)loc.line;
        if (take_record(cx, &loc, &lx) == -1)
            return -1;
        lex_ws(&lx);
        if (lx.p != lx.end)
            return inv_syntax_at(cx, &loc, &lx, "data after the record (one object per line)");
    }
    return 0;
}

/*
 * Once per snapshot: the lengths and the text of every value that
 * inventory_record_texts() hands out per request. 0, or -1 (out of memory).
 */
static int texts_prepare(struct inventory *inv)
{
    char num[64];
    size_t k, j;
    int n;

    for (k = 0; k < inv->n; k++) {
        struct inventory_record *r = &inv->recs[k];
        r->owner_len = (uint16_t)strlen(inv->pool + r->owner);
        r->platform_len = (uint8_t)strlen(inv->pool + r->platform);
        r->os_version_len = (uint8_t)strlen(inv->pool + r->os_version);
        r->model_len = (uint8_t)strlen(inv->pool + r->model);
        for (j = 0; j < r->attr_count; j++) {
            struct inventory_attr_slot *a = &inv->attrs[r->attr_first + j];
            a->name_len = (uint8_t)strlen(inv->pool + a->name);
            n = 0;
            switch ((enum inventory_attr_type)a->type) {
            case INVENTORY_ATTR_STRING:
                a->text = a->str;
                a->text_len = (uint16_t)strlen(inv->pool + a->str);
                continue;
            case INVENTORY_ATTR_BOOL:
                a->text_len = a->i ? 4 : 5;
                continue;
            case INVENTORY_ATTR_INTEGER:
                n = snprintf(num, sizeof(num), "%lld", (long long)a->i);
                break;
            case INVENTORY_ATTR_REAL:
                n = snprintf(num, sizeof(num), "%.17g", a->real);
                break;
            }
            if (n < 0 || (size_t)n >= sizeof(num))
                return -1;
            a->text = pool_add(inv, num, (size_t)n);
            if (a->text == UINT32_MAX)
                return -1;
            a->text_len = (uint16_t)n;
        }
    }
    return 0;
}

static void inventory_free(struct inventory *inv)
{
    if (inv == NULL)
        return;
    free(inv->recs);
    free(inv->attrs);
    free(inv->pool);
    free(inv->slots);
    free(inv);
}

int inventory_parse(const char *data, size_t len, const struct inventory *prev, unsigned flags,
                    int64_t now, struct inventory **out, char *err, size_t errlen)
{
    struct inventory_ctx cx;
    struct inventory *inv;
    size_t i = 0;
    unsigned int hlen = 0;
    int rc = -1;

    memset(&cx, 0, sizeof(cx));
    cx.data = data;
    cx.err = err;
    cx.errlen = errlen;
    inv = calloc(1, sizeof(*inv));
    if (inv == NULL)
        return inv_fail(&cx, NULL, "", "out of memory");
    cx.inv = inv;
    atomic_init(&inv->refs, 1);
    inv->loaded_at = now;
    inv->version = prev ? prev->version + 1 : 1;
    if (len > INVENTORY_MAX_BYTES) {
        inv_fail(&cx, NULL, "", "the feed is %zu bytes, the limit is %u", len, INVENTORY_MAX_BYTES);
        goto err;
    }
    while (i < len && (data[i] == ' ' || data[i] == '\t' || data[i] == '\r' || data[i] == '\n'))
        i++;
    if (i == len) {
        /* Nothing at all is an empty feed (and subject to the check below). */
        if (inv_alloc(&cx, 0, 0) == -1)
            goto err;
    } else if (data[i] == '[') {
        if (parse_array(&cx, data, len) == -1)
            goto err;
    } else if (data[i] == '{') {
        if (parse_ndjson(&cx, data, len) == -1)
            goto err;
    } else {
        inv_fail(&cx, NULL, "", "expected a JSON array of records or NDJSON objects");
        goto err;
    }
    /* An empty feed usually means a broken export, not a company with no devices. */
    if (inv->n == 0 && prev != NULL && prev->n > 0 && !(flags & INVENTORY_ALLOW_EMPTY)) {
        inv_fail(&cx, NULL, "",
                 "the feed has no devices but the current inventory has %zu; refusing it "
                 "(set allow_empty to accept an empty inventory)",
                 prev->n);
        goto err;
    }
    if (EVP_Digest(data, len, inv->hash, &hlen, EVP_sha256(), NULL) != 1 || hlen != 32) {
        inv_fail(&cx, NULL, "", "cannot hash the feed");
        goto err;
    }
    if (texts_prepare(inv) == -1) {
        inv_fail(&cx, NULL, "", "out of memory");
        goto err;
    }
    /* Give back the slack of the growable arrays. */
    if (inv->pool_len > 0 && inv->pool_len < inv->pool_cap) {
        char *p = realloc(inv->pool, inv->pool_len);
        if (p != NULL) {
            inv->pool = p;
            inv->pool_cap = inv->pool_len;
        }
    }
    *out = inv;
    inv = NULL;
    rc = 0;
err:
    free(cx.lines);
    inventory_free(inv);
    return rc;
}

struct inventory *inventory_ref(struct inventory *inv)
{
    if (inv != NULL)
        atomic_fetch_add_explicit(&inv->refs, 1, memory_order_relaxed);
    return inv;
}

void inventory_unref(struct inventory *inv)
{
    if (inv == NULL)
        return;
    if (atomic_fetch_sub_explicit(&inv->refs, 1, memory_order_acq_rel) == 1)
        inventory_free(inv);
}

size_t inventory_count(const struct inventory *inv)
{
    return inv->n;
}

int64_t inventory_loaded_at(const struct inventory *inv)
{
    return inv->loaded_at;
}

uint64_t inventory_version(const struct inventory *inv)
{
    return inv->version;
}

void inventory_hash(const struct inventory *inv, unsigned char out[32])
{
    memcpy(out, inv->hash, 32);
}

void inventory_hash_hex(const struct inventory *inv, char out[65])
{
    static const char hx[] = "0123456789abcdef";
    int i;

    for (i = 0; i < 32; i++) {
        out[2 * i] = hx[inv->hash[i] >> 4];
        out[2 * i + 1] = hx[inv->hash[i] & 15];
    }
    out[64] = '\0';
}

const struct inventory_record *inventory_lookup(const struct inventory *inv, const char *id,
                                                size_t len)
{
    uint32_t h;
    size_t i;

    if (inv == NULL || id == NULL || len == 0 || len > DEVICE_ID_MAX)
        return NULL;
    h = inv_hash(id, len);
    for (i = h & inv->mask; inv->slots[i].rec != 0; i = (i + 1) & inv->mask) {
        const struct inventory_slot *sl = &inv->slots[i];
        if (sl->hash == h && sl->id_len == len && memcmp(inv->pool + sl->id, id, len) == 0)
            return &inv->recs[sl->rec - 1];
    }
    return NULL;
}

const struct inventory_record *inventory_record_at(const struct inventory *inv, size_t i)
{
    return i < inv->n ? &inv->recs[i] : NULL;
}

const char *inventory_record_id(const struct inventory_record *r)
{
    return r->inv->pool + r->id;
}

const char *inventory_record_serial(const struct inventory_record *r)
{
    return r->inv->pool + r->serial;
}

const char *inventory_record_owner(const struct inventory_record *r)
{
    return r->inv->pool + r->owner;
}

const char *inventory_record_platform(const struct inventory_record *r)
{
    return r->inv->pool + r->platform;
}

const char *inventory_record_os_version(const struct inventory_record *r)
{
    return r->inv->pool + r->os_version;
}

const char *inventory_record_model(const struct inventory_record *r)
{
    return r->inv->pool + r->model;
}

enum inventory_status inventory_record_status(const struct inventory_record *r)
{
    return (enum inventory_status)r->status;
}

int inventory_record_managed(const struct inventory_record *r)
{
    return r->managed;
}

int64_t inventory_record_enrolled(const struct inventory_record *r)
{
    return r->enrolled;
}

size_t inventory_record_attr_count(const struct inventory_record *r)
{
    return r->attr_count;
}

static void attr_fill(const struct inventory *inv, const struct inventory_attr_slot *a,
                      struct inventory_attr *out)
{
    out->name = inv->pool + a->name;
    out->type = (enum inventory_attr_type)a->type;
    out->str = a->type == INVENTORY_ATTR_STRING ? inv->pool + a->str : NULL;
    out->i = a->i;
    out->real = a->real;
}

int inventory_record_attr_at(const struct inventory_record *r, size_t i, struct inventory_attr *out)
{
    if (i >= r->attr_count)
        return -1;
    attr_fill(r->inv, &r->inv->attrs[r->attr_first + i], out);
    return 0;
}

int inventory_record_attr_find(const struct inventory_record *r, const char *name,
                               struct inventory_attr *out)
{
    const struct inventory *inv = r->inv;
    size_t i;

    for (i = 0; i < r->attr_count; i++) {
        const struct inventory_attr_slot *a = &inv->attrs[r->attr_first + i];
        if (strcmp(inv->pool + a->name, name) == 0) {
            attr_fill(inv, a, out);
            return 0;
        }
    }
    return -1;
}

size_t inventory_record_texts(const struct inventory_record *r, struct inventory_text *out,
                              size_t max)
{
    const struct inventory *inv = r->inv;
    const char *pool = inv->pool;
    size_t n = 0, j;

    if (max < 4) {
        struct inventory_text tmp[4];
        n = inventory_record_texts(r, tmp, 4);
        n = n < max ? n : max;
        memcpy(out, tmp, n * sizeof(*out));
        return n;
    }
    out[0].name = "platform";
    out[0].name_len = 8;
    out[0].value = pool + r->platform;
    out[0].value_len = r->platform_len;
    out[1].name = "os_version";
    out[1].name_len = 10;
    out[1].value = pool + r->os_version;
    out[1].value_len = r->os_version_len;
    out[2].name = "model";
    out[2].name_len = 5;
    out[2].value = pool + r->model;
    out[2].value_len = r->model_len;
    out[3].name = "managed";
    out[3].name_len = 7;
    out[3].value = r->managed ? "true" : "false";
    out[3].value_len = r->managed ? 4 : 5;
    for (n = 4, j = 0; j < r->attr_count && n < max; j++, n++) {
        const struct inventory_attr_slot *a = &inv->attrs[r->attr_first + j];
        out[n].name = pool + a->name;
        out[n].name_len = a->name_len;
        if (a->type == INVENTORY_ATTR_BOOL)
            out[n].value = a->i ? "true" : "false";
        else
            out[n].value = pool + a->text;
        out[n].value_len = a->text_len;
    }
    return n;
}

size_t inventory_record_owner_len(const struct inventory_record *r)
{
    return r->owner_len;
}

const char *inventory_status_name(enum inventory_status s)
{
    if ((unsigned)s < sizeof(inv_status_names) / sizeof(inv_status_names[0]))
        return inv_status_names[s];
    return "invalid";
}

int inventory_status_parse(const char *s, enum inventory_status *out)
{
    size_t i;

    for (i = 1; i < sizeof(inv_status_names) / sizeof(inv_status_names[0]); i++) {
        if (strcmp(s, inv_status_names[i]) == 0) {
            *out = (enum inventory_status)i;
            return 0;
        }
    }
    return -1;
}
