/*
 * tz.c - a small TZif (RFC 8536) reader with the POSIX TZ footer rule.
 *
 * Only the version 2+ 64-bit data block is used (the 32-bit block is skipped;
 * version 1 files are refused: they end in 2038 and have no footer rule).
 * Lookups binary-search the transition table; instants after the last
 * transition are computed from the footer rule, instants before the first
 * one use time type 0 (RFC 8536 section 3.2).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tz.h"

#define TZ_FILE_MAX (512 * 1024)
#define TZ_TIMECNT_MAX 100000
#define TZ_LIMIT_T ((int64_t)1 << 55) /* keeps every sum below far from overflow */

enum tz_date_kind { TZ_DATE_JULIAN1 = 0, TZ_DATE_JULIAN0, TZ_DATE_MWD };

struct tz_date {
    enum tz_date_kind kind;
    int n;        /* Jn: 1..365, n: 0..365 */
    int m, w, d;  /* Mm.w.d */
    int32_t time; /* seconds after local midnight, -167h..167h */
};

struct tz_rule {
    int32_t std_off; /* seconds east of UTC */
    int32_t dst_off;
    int has_dst;
    struct tz_date start, end;
};

struct tz_type {
    int32_t utoff;
    int isdst;
};

struct tz {
    char *name;
    int64_t *times; /* ascending */
    uint8_t *idx;   /* type index per transition */
    size_t ntimes;
    struct tz_type *types;
    size_t ntypes;
    int has_rule;
    struct tz_rule rule;
};

static void tz_err(char *err, size_t errlen, const char *name, const char *what)
{
    if (errlen > 0)
        snprintf(err, errlen, "time zone \"%s\": %s", name, what);
}

int tz_name_valid(const char *name)
{
    size_t len, i, comp = 0;

    if (name == NULL)
        return 0;
    len = strlen(name);
    if (len == 0 || len > TZ_NAME_MAX || name[0] == '/')
        return 0;
    for (i = 0; i <= len; i++) {
        char c = name[i];
        if (c == '/' || c == '\0') {
            /* component is name[i-comp .. i) */
            if (comp == 0)
                return 0;
            if (comp == 1 && name[i - 1] == '.')
                return 0;
            if (comp == 2 && name[i - 1] == '.' && name[i - 2] == '.')
                return 0;
            comp = 0;
            continue;
        }
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '+' || c == '-' || c == '.'))
            return 0;
        comp++;
    }
    return 1;
}

/* ---- civil calendar (proleptic Gregorian, days since 1970-01-01) --------- */

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0)))
        q--;
    return q;
}

static int64_t days_from_civil(int64_t y, int m, int d)
{
    int64_t era, yoe, doy, doe;

    y -= m <= 2;
    era = floor_div(y, 400);
    yoe = y - era * 400;
    doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
    int64_t era, doe, yoe, doy, mp;

    z += 719468;
    era = floor_div(z, 146097);
    doe = z - era * 146097;
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

static int is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int month_days(int64_t y, int m)
{
    static const int md[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap(y) ? 29 : md[m - 1];
}

/* ---- POSIX TZ footer ---------------------------------------------------- */

static const char *rule_name(const char *s)
{
    const char *p = s;

    if (*p == '<') {
        p++;
        while (*p != '\0' && *p != '>') {
            if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
                  (*p >= '0' && *p <= '9') || *p == '+' || *p == '-'))
                return NULL;
            p++;
        }
        if (*p != '>' || p - s < 4)
            return NULL;
        return p + 1;
    }
    while ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z'))
        p++;
    return p - s >= 3 ? p : NULL;
}

static const char *rule_num(const char *s, int min, int max, int *out)
{
    int v = 0, n = 0;

    while (*s >= '0' && *s <= '9' && n < 4) {
        v = v * 10 + (*s - '0');
        s++;
        n++;
    }
    if (n == 0 || v < min || v > max)
        return NULL;
    *out = v;
    return s;
}

/* [+-]hh[:mm[:ss]] -> seconds; hours up to maxh. */
static const char *rule_hms(const char *s, int maxh, int32_t *out)
{
    int sign = 1, h = 0, m = 0, sec = 0;

    if (*s == '+' || *s == '-') {
        sign = *s == '-' ? -1 : 1;
        s++;
    }
    s = rule_num(s, 0, maxh, &h);
    if (s == NULL)
        return NULL;
    if (*s == ':') {
        s = rule_num(s + 1, 0, 59, &m);
        if (s == NULL)
            return NULL;
        if (*s == ':') {
            s = rule_num(s + 1, 0, 59, &sec);
            if (s == NULL)
                return NULL;
        }
    }
    *out = (int32_t)(sign * (h * 3600 + m * 60 + sec));
    return s;
}

static const char *rule_date(const char *s, struct tz_date *d)
{
    if (*s == 'J') {
        d->kind = TZ_DATE_JULIAN1;
        s = rule_num(s + 1, 1, 365, &d->n);
    } else if (*s == 'M') {
        d->kind = TZ_DATE_MWD;
        s = rule_num(s + 1, 1, 12, &d->m);
        if (s == NULL || *s != '.')
            return NULL;
        s = rule_num(s + 1, 1, 5, &d->w);
        if (s == NULL || *s != '.')
            return NULL;
        s = rule_num(s + 1, 0, 6, &d->d);
    } else {
        d->kind = TZ_DATE_JULIAN0;
        s = rule_num(s, 0, 365, &d->n);
    }
    if (s == NULL)
        return NULL;
    d->time = 2 * 3600;
    if (*s == '/')
        s = rule_hms(s + 1, 167, &d->time);
    return s;
}

/* Parse a POSIX TZ string (as in a TZif footer). 0 ok, -1 malformed. */
static int rule_parse(const char *s, struct tz_rule *r)
{
    int32_t off;

    memset(r, 0, sizeof(*r));
    s = rule_name(s);
    if (s == NULL)
        return -1;
    s = rule_hms(s, 24, &off);
    if (s == NULL)
        return -1;
    r->std_off = -off; /* POSIX offsets are west of UTC */
    if (*s == '\0')
        return 0;
    s = rule_name(s);
    if (s == NULL)
        return -1;
    r->has_dst = 1;
    r->dst_off = r->std_off + 3600;
    if (*s != ',' && *s != '\0') {
        s = rule_hms(s, 24, &off);
        if (s == NULL)
            return -1;
        r->dst_off = -off;
    }
    if (*s != ',')
        return -1; /* no default rule: a DST zone must say when */
    s = rule_date(s + 1, &r->start);
    if (s == NULL || *s != ',')
        return -1;
    s = rule_date(s + 1, &r->end);
    if (s == NULL || *s != '\0')
        return -1;
    return 0;
}

/* Day (since the epoch) on which date d falls in year y. */
static int64_t rule_day(const struct tz_date *d, int64_t y)
{
    int64_t first;
    int wd1, day;

    switch (d->kind) {
    case TZ_DATE_JULIAN1:
        return days_from_civil(y, 1, 1) + d->n - 1 + (is_leap(y) && d->n >= 60);
    case TZ_DATE_JULIAN0:
        return days_from_civil(y, 1, 1) + d->n;
    case TZ_DATE_MWD:
        break;
    }
    first = days_from_civil(y, d->m, 1);
    wd1 = (int)(((first % 7) + 11) % 7); /* 1970-01-01 was a Thursday (4) */
    day = 1 + (d->d - wd1 + 7) % 7 + (d->w - 1) * 7;
    while (day > month_days(y, d->m))
        day -= 7;
    return first + day - 1;
}

static void rule_apply(const struct tz_rule *r, int64_t t, int32_t *utoff, int *isdst)
{
    int64_t y, s, e;
    int m, d, dst;

    *utoff = r->std_off;
    *isdst = 0;
    if (!r->has_dst)
        return;
    civil_from_days(floor_div(t + r->std_off, 86400), &y, &m, &d);
    s = rule_day(&r->start, y) * 86400 + r->start.time - r->std_off;
    e = rule_day(&r->end, y) * 86400 + r->end.time - r->dst_off;
    if (s < e)
        dst = t >= s && t < e;
    else
        dst = !(t >= e && t < s);
    if (dst) {
        *utoff = r->dst_off;
        *isdst = 1;
    }
}

/* ---- TZif ---------------------------------------------------------------- */

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int64_t be64(const unsigned char *p)
{
    return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4));
}

struct tzif_counts {
    uint32_t isut, isstd, leap, time, type, chars;
};

static int tzif_header(const unsigned char *p, size_t len, int *version, struct tzif_counts *c)
{
    if (len < 44 || memcmp(p, "TZif", 4) != 0)
        return -1;
    *version = p[4] == 0 ? 1 : p[4] - '0';
    c->isut = be32(p + 20);
    c->isstd = be32(p + 24);
    c->leap = be32(p + 28);
    c->time = be32(p + 32);
    c->type = be32(p + 36);
    c->chars = be32(p + 40);
    if (c->time > TZ_TIMECNT_MAX || c->type == 0 || c->type > 256 || c->chars == 0 ||
        c->chars > 4096 || c->leap > 1000 || (c->isut != 0 && c->isut != c->type) ||
        (c->isstd != 0 && c->isstd != c->type))
        return -1;
    return 0;
}

static size_t tzif_block_len(const struct tzif_counts *c, size_t tsize)
{
    return (size_t)c->time * tsize + c->time + (size_t)c->type * 6 + c->chars +
           (size_t)c->leap * (tsize + 4) + c->isstd + c->isut;
}

void tz_free(struct tz *z)
{
    if (z == NULL)
        return;
    free(z->name);
    free(z->times);
    free(z->idx);
    free(z->types);
    free(z);
}

struct tz *tz_parse(const unsigned char *data, size_t len, const char *name, char *err,
                    size_t errlen)
{
    struct tz *z = NULL;
    struct tzif_counts c;
    const unsigned char *p, *end = data + len;
    int version;
    size_t i, blen;
    char footer[128];
    const char *why = "not a TZif file";

    if (tzif_header(data, len, &version, &c) == -1)
        goto err;
    why = "TZif version 1 (no 64-bit data): not supported";
    if (version < 2)
        goto err;
    why = "truncated TZif file";
    blen = tzif_block_len(&c, 4);
    if (blen > len - 44)
        goto err;
    p = data + 44 + blen;
    if (tzif_header(p, (size_t)(end - p), &version, &c) == -1)
        goto err;
    p += 44;
    blen = tzif_block_len(&c, 8);
    if (blen > (size_t)(end - p))
        goto err;

    why = "out of memory";
    z = calloc(1, sizeof(*z));
    if (z == NULL)
        goto err;
    z->name = strdup(name != NULL ? name : "");
    z->times = calloc(c.time + 1, sizeof(*z->times));
    z->idx = calloc(c.time + 1, 1);
    z->types = calloc(c.type, sizeof(*z->types));
    if (z->name == NULL || z->times == NULL || z->idx == NULL || z->types == NULL)
        goto err;
    z->ntimes = c.time;
    z->ntypes = c.type;

    why = "malformed TZif data";
    for (i = 0; i < c.time; i++) {
        z->times[i] = be64(p + i * 8);
        if (i > 0 && z->times[i] <= z->times[i - 1])
            goto err;
    }
    p += (size_t)c.time * 8;
    for (i = 0; i < c.time; i++) {
        z->idx[i] = p[i];
        if (p[i] >= c.type)
            goto err;
    }
    p += c.time;
    for (i = 0; i < c.type; i++) {
        int32_t off = (int32_t)be32(p + i * 6);
        if (off < -25 * 3600 || off > 26 * 3600 || p[i * 6 + 4] > 1 || p[i * 6 + 5] >= c.chars)
            goto err;
        z->types[i].utoff = off;
        z->types[i].isdst = p[i * 6 + 4];
    }
    p += blen - (size_t)c.time * 9;

    /* Footer: "\n" TZ-string "\n". */
    why = "missing TZif footer";
    if (p >= end || *p != '\n')
        goto err;
    p++;
    for (i = 0; p + i < end && p[i] != '\n'; i++)
        if (i + 1 >= sizeof(footer))
            goto err;
    if (p + i >= end)
        goto err;
    memcpy(footer, p, i);
    footer[i] = '\0';
    if (i > 0) {
        why = "unsupported TZ rule in the TZif footer";
        if (rule_parse(footer, &z->rule) == -1)
            goto err;
        z->has_rule = 1;
    }
    return z;
err:
    tz_err(err, errlen, name != NULL ? name : "", why);
    tz_free(z);
    return NULL;
}

struct tz *tz_load(const char *dir, const char *name, char *err, size_t errlen)
{
    char path[TZ_NAME_MAX + 512];
    unsigned char *buf = NULL;
    struct tz *z = NULL;
    struct stat st;
    size_t got = 0;
    int fd = -1, n;

    if (!tz_name_valid(name)) {
        if (errlen > 0)
            snprintf(err, errlen, "invalid time zone name \"%s\"", name != NULL ? name : "");
        goto out;
    }
    n = snprintf(path, sizeof(path), "%s/%s", dir != NULL ? dir : TZ_DEFAULT_DIR, name);
    if (n < 0 || (size_t)n >= sizeof(path)) {
        tz_err(err, errlen, name, "path too long");
        goto out;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd == -1 || fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
        if (errlen > 0)
            snprintf(err, errlen, "unknown time zone \"%s\" (not in %s)", name,
                     dir != NULL ? dir : TZ_DEFAULT_DIR);
        goto out;
    }
    if (st.st_size <= 0 || st.st_size > TZ_FILE_MAX) {
        tz_err(err, errlen, name, "not a TZif file");
        goto out;
    }
    buf = malloc((size_t)st.st_size);
    if (buf == NULL) {
        tz_err(err, errlen, name, "out of memory");
        goto out;
    }
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
        if (r == -1 && errno == EINTR)
            continue;
        if (r <= 0) {
            tz_err(err, errlen, name, "read error");
            goto out;
        }
        got += (size_t)r;
    }
    z = tz_parse(buf, got, name, err, errlen);
out:
    free(buf);
    if (fd != -1)
        close(fd);
    return z;
}

const char *tz_name(const struct tz *z)
{
    return z->name;
}

int tz_local(const struct tz *z, int64_t t, struct tz_local *out)
{
    int32_t utoff;
    int isdst, m, d;
    int64_t lt, days, secs, y;

    if (t > TZ_LIMIT_T || t < -TZ_LIMIT_T)
        return -1;
    if (z->ntimes == 0 || t >= z->times[z->ntimes - 1]) {
        if (z->has_rule) {
            rule_apply(&z->rule, t, &utoff, &isdst);
        } else {
            const struct tz_type *ty = &z->types[z->ntimes == 0 ? 0 : z->idx[z->ntimes - 1]];
            utoff = ty->utoff;
            isdst = ty->isdst;
        }
    } else if (t < z->times[0]) {
        utoff = z->types[0].utoff;
        isdst = z->types[0].isdst;
    } else {
        /* largest i with times[i] <= t */
        size_t lo = 0, hi = z->ntimes - 1;
        while (hi - lo > 1) {
            size_t mid = lo + (hi - lo) / 2;
            if (z->times[mid] <= t)
                lo = mid;
            else
                hi = mid;
        }
        utoff = z->types[z->idx[lo]].utoff;
        isdst = z->types[z->idx[lo]].isdst;
    }
    lt = t + utoff;
    days = floor_div(lt, 86400);
    secs = lt - days * 86400;
    civil_from_days(days, &y, &m, &d);
    out->year = y;
    out->month = m;
    out->mday = d;
    out->wday = (int)(((days % 7) + 11) % 7);
    out->hour = (int)(secs / 3600);
    out->minute = (int)(secs / 60 % 60);
    out->second = (int)(secs % 60);
    out->minute_of_day = out->hour * 60 + out->minute;
    out->utoff = utoff;
    out->isdst = isdst;
    return 0;
}
