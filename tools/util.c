/*
 * util.c - ztctl's argument parser and value parsers (times, durations,
 * integers, comma lists). Pure apart from printing usage errors to stderr.
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ztctl.h"

/* ---- command line ------------------------------------------------------------------ */

void ztctl_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "ztctl%s%s: ", cmd != NULL ? " " : "", cmd != NULL ? cmd : "");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry 'ztctl help%s%s'.\n", cmd != NULL ? " " : "", cmd != NULL ? cmd : "");
}

void ztctl_optp_init(struct ztctl_optp *p, const char *cmd, int argc, char **argv)
{
    memset(p, 0, sizeof(*p));
    p->cmd = cmd;
    p->argc = argc;
    p->argv = argv;
}

static int add_pos(struct ztctl_optp *p, const char *a)
{
    if (p->npos == ZTCTL_POS_MAX) {
        ztctl_usage_error(p->cmd, "too many arguments");
        return -1;
    }
    p->pos[p->npos++] = a;
    return 0;
}

int ztctl_opt_next(struct ztctl_optp *p, const struct ztctl_optdef *defs, int *id, const char **val)
{
    while (p->i < p->argc) {
        const char *a = p->argv[p->i++];
        const char *eq;
        size_t nlen;
        const struct ztctl_optdef *d;

        if (p->dashdash || a[0] != '-' || a[1] == '\0') {
            if (add_pos(p, a) == -1)
                return -1;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            p->dashdash = 1;
            continue;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            *id = ZTCTL_OPT_HELP;
            *val = NULL;
            return 1;
        }
        /* "--name=value"; short options ("-v") are flags and stand alone. */
        eq = a[1] == '-' ? strchr(a, '=') : NULL;
        nlen = eq != NULL ? (size_t)(eq - a) : strlen(a);
        for (d = defs; d != NULL && d->name != NULL; d++)
            if (strlen(d->name) == nlen && memcmp(d->name, a, nlen) == 0)
                break;
        if (d == NULL || d->name == NULL) {
            ztctl_usage_error(p->cmd, "unknown option '%.*s'", (int)nlen, a);
            return -1;
        }
        *id = d->id;
        if (!d->has_arg) {
            if (eq != NULL) {
                ztctl_usage_error(p->cmd, "option '%s' takes no value", d->name);
                return -1;
            }
            *val = NULL;
            return 1;
        }
        if (eq != NULL) {
            *val = eq + 1;
        } else if (p->i < p->argc) {
            *val = p->argv[p->i++];
        } else {
            ztctl_usage_error(p->cmd, "option '%s' needs a value", d->name);
            return -1;
        }
        return 1;
    }
    return 0;
}

int ztctl_opt_once(struct ztctl_optp *p, const char *name, const char **dst, const char *val)
{
    if (*dst != NULL) {
        ztctl_usage_error(p->cmd, "option '%s' given twice", name);
        return -1;
    }
    *dst = val;
    return 0;
}

int ztctl_strv_add(struct ztctl_strv *l, const char *s, size_t max)
{
    char *c;

    if (l->n >= max)
        return -1;
    if (l->n == l->cap) {
        size_t ncap = l->cap == 0 ? 8 : l->cap * 2;
        char **nv = realloc(l->v, ncap * sizeof(*nv));
        if (nv == NULL)
            return -1;
        l->v = nv;
        l->cap = ncap;
    }
    c = strdup(s);
    if (c == NULL)
        return -1;
    l->v[l->n++] = c;
    return 0;
}

int ztctl_strv_split(struct ztctl_strv *l, const char *s, size_t max, char *err, size_t errlen)
{
    const char *p = s;
    char item[1024];

    for (;;) {
        const char *end = strchr(p, ',');
        size_t n = end != NULL ? (size_t)(end - p) : strlen(p);

        if (n == 0) {
            snprintf(err, errlen, "empty item in list \"%s\"", s);
            return -1;
        }
        if (n >= sizeof(item)) {
            snprintf(err, errlen, "item too long in list");
            return -1;
        }
        memcpy(item, p, n);
        item[n] = '\0';
        if (ztctl_strv_add(l, item, max) == -1) {
            snprintf(err, errlen, "too many items (at most %zu) or out of memory", max);
            return -1;
        }
        if (end == NULL)
            break;
        p = end + 1;
    }
    return 0;
}

void ztctl_strv_reset(struct ztctl_strv *l)
{
    size_t i;

    for (i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof(*l));
}

/* ---- values ------------------------------------------------------------------------ */

/* Exactly n decimal digits. */
static int digits(const char **pp, int n, int *out)
{
    const char *p = *pp;
    int v = 0, i;

    for (i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        v = v * 10 + (p[i] - '0');
    }
    *pp = p + n;
    *out = v;
    return 0;
}

static int is_leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    int64_t era, yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

int ztctl_time_parse(const char *s, int64_t *t)
{
    static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    const char *p = s;
    int y, mo, d, h, mi, sec, oh = 0, om = 0, sign = 0;
    int64_t v;

    if (digits(&p, 4, &y) == -1 || *p++ != '-' || digits(&p, 2, &mo) == -1 || *p++ != '-' ||
        digits(&p, 2, &d) == -1)
        return -1;
    if (*p != 'T' && *p != 't' && *p != ' ')
        return -1;
    p++;
    if (digits(&p, 2, &h) == -1 || *p++ != ':' || digits(&p, 2, &mi) == -1 || *p++ != ':' ||
        digits(&p, 2, &sec) == -1)
        return -1;
    if (*p == '.') {
        p++;
        if (*p < '0' || *p > '9')
            return -1;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        sign = *p == '-' ? -1 : 1;
        p++;
        if (digits(&p, 2, &oh) == -1 || *p++ != ':' || digits(&p, 2, &om) == -1)
            return -1;
    } else {
        return -1;
    }
    if (*p != '\0')
        return -1;
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] + (mo == 2 && is_leap(y)) || h > 23 ||
        mi > 59 || sec > 60 || oh > 23 || om > 59)
        return -1;
    /* A leap second (:60) has no unix time of its own: it becomes the next second. */
    v = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec;
    v -= (int64_t)sign * (oh * 3600 + om * 60);
    *t = v;
    return 0;
}

int ztctl_duration_parse(const char *s, int64_t *secs)
{
    static const char units[] = "dhms";
    static const int64_t mult[] = {86400, 3600, 60, 1};
    const char *p = s;
    int64_t total = 0;
    int last = -1;

    if (*p == '\0')
        return -1;
    while (*p != '\0') {
        int64_t n = 0;
        const char *u;
        int k;

        if (*p < '0' || *p > '9')
            return -1;
        while (*p >= '0' && *p <= '9') {
            n = n * 10 + (*p - '0');
            if (n > 3650LL * 86400)
                return -1;
            p++;
        }
        u = *p != '\0' ? strchr(units, *p) : NULL;
        if (u == NULL)
            return -1;
        k = (int)(u - units);
        if (k <= last) /* each unit once, largest first: "1h30m" */
            return -1;
        last = k;
        total += n * mult[k];
        if (total > 3650LL * 86400)
            return -1;
        p++;
    }
    *secs = total;
    return 0;
}

int ztctl_long_parse(const char *s, long min, long max, long *out)
{
    char *end;
    long v;

    if (s[0] == '\0' || (s[0] != '-' && (s[0] < '0' || s[0] > '9')))
        return -1;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

const char *ztctl_quote(const char *s, char *out, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = 0;

    if (len < 8) {
        if (len > 0)
            out[0] = '\0';
        return out;
    }
    out[n++] = '"';
    for (; *s != '\0'; s++) {
        unsigned char ch = (unsigned char)*s;
        char e[5];
        size_t el;

        if (ch == '"' || ch == '\\') {
            e[0] = '\\';
            e[1] = (char)ch;
            el = 2;
        } else if (ch < 0x20 || ch == 0x7f) {
            e[0] = '\\';
            e[1] = 'x';
            e[2] = hex[ch >> 4];
            e[3] = hex[ch & 15];
            el = 4;
        } else {
            e[0] = (char)ch; /* UTF-8 passes through */
            el = 1;
        }
        if (n + el + 5 > len) { /* room for ...", NUL */
            memcpy(out + n, "...", 3);
            n += 3;
            break;
        }
        memcpy(out + n, e, el);
        n += el;
    }
    out[n++] = '"';
    out[n] = '\0';
    return out;
}
