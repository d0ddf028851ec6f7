/*
 * posture.c - parse, validate and persist agent posture reports.
 *
 * A report is untrusted input from the network (the agent is authenticated
 * by its certificate, but the bytes are still whatever it sent). Every key
 * is known, every value type-checked and bounded; the first error is
 * reported with its JSON path. Nothing in struct posture points into the
 * input.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "posture.h"

enum posture_mode {
    POSTURE_MODE_REPORT = 0, /* from an agent: clock checks, no received_at */
    POSTURE_MODE_STATE       /* from the state directory: received_at, no clock checks */
};

static int posture_fail(char *err, size_t errlen, const char *jpath, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int posture_fail(char *err, size_t errlen, const char *jpath, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (err == NULL || errlen == 0)
        return -1;
    n = snprintf(err, errlen, "posture: %s: ", jpath);
    if (n < 0 || (size_t)n >= errlen)
        return -1;
    va_start(ap, fmt);
    vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

/*
 * What the value was, for "got ..." in errors: scalars as compact JSON
 * (truncated), containers by kind. Never more than fits in out.
 */
static const char *posture_json_describe(const json_t *v, char *out, size_t len)
{
    char *s;

    if (json_is_object(v))
        return "an object";
    if (json_is_array(v))
        return "an array";
    s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    if (s == NULL)
        return "a value";
    if (strlen(s) >= len && len > 4) {
        memcpy(out, s, len - 4);
        memcpy(out + len - 4, "...", 4);
    } else {
        snprintf(out, len, "%s", s);
    }
    free(s);
    return out;
}

/* ---- RFC 3339 ---------------------------------------------------------- */

static int digits(const char *s, int n, int *out)
{
    int i, v = 0;

    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

static int is_leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    int64_t era;
    unsigned yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = (unsigned)(y - era * 400);
    doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    int64_t era;
    unsigned doe, yoe, doy, mp;

    z += 719468;
    era = (z >= 0 ? z : z - 146096) / 146097;
    doe = (unsigned)(z - era * 146097);
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

int posture_time_parse(const char *s, size_t n, int64_t *out)
{
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int y, mo, d, h, mi, sec, oh = 0, om = 0, sign = 0, dim;
    size_t i = 19;

    /* YYYY-MM-DDTHH:MM:SS is 19 bytes; the shortest valid form adds "Z". */
    if (s == NULL || n < 20 || n > 64)
        return -1;
    if (digits(s, 4, &y) || s[4] != '-' || digits(s + 5, 2, &mo) || s[7] != '-' ||
        digits(s + 8, 2, &d) || (s[10] != 'T' && s[10] != 't') || digits(s + 11, 2, &h) ||
        s[13] != ':' || digits(s + 14, 2, &mi) || s[16] != ':' || digits(s + 17, 2, &sec))
        return -1;
    if (y < 1 || mo < 1 || mo > 12 || h > 23 || mi > 59 || sec > 60)
        return -1;
    dim = mdays[mo - 1] + (mo == 2 && is_leap(y));
    if (d < 1 || d > dim)
        return -1;
    if (s[i] == '.') {
        size_t start = ++i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == start || i - start > 9)
            return -1;
    }
    if (i >= n)
        return -1;
    if (s[i] == 'Z' || s[i] == 'z') {
        i++;
    } else if (s[i] == '+' || s[i] == '-') {
        sign = s[i] == '+' ? 1 : -1;
        if (n - i != 6 || digits(s + i + 1, 2, &oh) || s[i + 3] != ':' ||
            digits(s + i + 4, 2, &om) || oh > 23 || om > 59)
            return -1;
        i += 6;
    } else {
        return -1;
    }
    if (i != n)
        return -1;
    /* A leap second (:60) is accepted and lands on the next second. */
    *out = days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 + (int64_t)h * 3600 +
           (int64_t)mi * 60 + sec - (int64_t)sign * (oh * 3600 + om * 60);
    return 0;
}

int posture_time_format(int64_t t, char *out, size_t len)
{
    int64_t days, y, rem;
    unsigned m, d;
    int n;

    /* 0001-01-01 .. 9999-12-31 */
    if (t < -62135596800LL || t > 253402300799LL)
        return -1;
    days = t >= 0 ? t / 86400 : -((-t + 86399) / 86400);
    rem = t - days * 86400;
    civil_from_days(days, &y, &m, &d);
    n = snprintf(out, len, "%04lld-%02u-%02uT%02lld:%02lld:%02lldZ", (long long)y, m, d,
                 (long long)(rem / 3600), (long long)(rem / 60 % 60), (long long)(rem % 60));
    if (n < 0 || (size_t)n >= len)
        return -1;
    return 0;
}

/* ---- field checks ------------------------------------------------------ */

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

/* "1.2.3", up to four numeric components, optionally "-rc1" or "+build.5". */
static int valid_agent_version(const char *s, size_t n)
{
    size_t i = 0;
    int comps = 0;

    if (n == 0 || n > POSTURE_AGENT_VERSION_MAX)
        return 0;
    for (;;) {
        size_t start = i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == start || i - start > 9)
            return 0;
        comps++;
        if (i < n && s[i] == '.' && comps < 4) {
            i++;
            continue;
        }
        break;
    }
    if (i == n)
        return 1;
    if (s[i] != '-' && s[i] != '+')
        return 0;
    if (++i == n)
        return 0;
    for (; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '-' || c == '+'))
            return 0;
    }
    return 1;
}

/* [A-Za-z0-9._-], stored lower case so "macOS" and "macos" are one name. */
static int valid_os_name(const char *s, size_t n)
{
    size_t i;

    if (n == 0 || n > POSTURE_OS_NAME_MAX)
        return 0;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

/* Printable ASCII; spaces only if allowed. */
static int valid_printable(const char *s, size_t n, int spaces)
{
    size_t i;

    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c > 0x7e || c < 0x20 || (c == ' ' && !spaces))
            return 0;
    }
    return 1;
}

/* ---- decoding ---------------------------------------------------------- */

struct posture_ctx {
    char *err;
    size_t errlen;
};

static int get_string(struct posture_ctx *cx, json_t *v, const char *jpath, const char **s,
                      size_t *n)
{
    char got[48];

    if (!json_is_string(v))
        return posture_fail(cx->err, cx->errlen, jpath, "expected a string, got %s",
                            posture_json_describe(v, got, sizeof(got)));
    *s = json_string_value(v);
    *n = json_string_length(v);
    return 0;
}

static int get_time(struct posture_ctx *cx, json_t *v, const char *jpath, int64_t *out)
{
    const char *s;
    size_t n;
    char got[48];

    if (get_string(cx, v, jpath, &s, &n) == -1)
        return -1;
    if (posture_time_parse(s, n, out) == -1)
        return posture_fail(cx->err, cx->errlen, jpath,
                            "expected an RFC 3339 time like \"2024-05-01T12:00:00Z\", got %s",
                            posture_json_describe(v, got, sizeof(got)));
    return 0;
}

static int get_tri(struct posture_ctx *cx, json_t *v, const char *jpath, enum posture_tri *out)
{
    char got[48];

    if (json_is_true(v)) {
        *out = POSTURE_YES;
    } else if (json_is_false(v)) {
        *out = POSTURE_NO;
    } else if (json_is_string(v) && strcmp(json_string_value(v), "unknown") == 0 &&
               json_string_length(v) == 7) {
        *out = POSTURE_UNKNOWN;
    } else {
        return posture_fail(cx->err, cx->errlen, jpath,
                            "expected true, false or \"unknown\", got %s",
                            posture_json_describe(v, got, sizeof(got)));
    }
    return 0;
}

static int decode_os(struct posture_ctx *cx, json_t *os, struct posture *p)
{
    const char *key, *s;
    json_t *v;
    size_t n, i;
    char jpath[64], got[48];
    int have_name = 0, have_version = 0;

    if (!json_is_object(os))
        return posture_fail(cx->err, cx->errlen, "$.os", "expected an object, got %s",
                            posture_json_describe(os, got, sizeof(got)));
    json_object_foreach(os, key, v)
    {
        if (strcmp(key, "name") == 0) {
            if (get_string(cx, v, "$.os.name", &s, &n) == -1)
                return -1;
            if (!valid_os_name(s, n))
                return posture_fail(cx->err, cx->errlen, "$.os.name",
                                    "expected 1-%d characters of [A-Za-z0-9._-], got %s",
                                    POSTURE_OS_NAME_MAX,
                                    posture_json_describe(v, got, sizeof(got)));
            for (i = 0; i < n; i++)
                p->os_name[i] = (char)(s[i] >= 'A' && s[i] <= 'Z' ? s[i] - 'A' + 'a' : s[i]);
            p->os_name[n] = '\0';
            have_name = 1;
        } else if (strcmp(key, "version") == 0) {
            if (get_string(cx, v, "$.os.version", &s, &n) == -1)
                return -1;
            if (n == 0 || n > POSTURE_OS_VERSION_MAX || !valid_printable(s, n, 0))
                return posture_fail(cx->err, cx->errlen, "$.os.version",
                                    "expected 1-%d printable characters without spaces, got %s",
                                    POSTURE_OS_VERSION_MAX,
                                    posture_json_describe(v, got, sizeof(got)));
            memcpy(p->os_version, s, n);
            p->os_version[n] = '\0';
            have_version = 1;
        } else if (strcmp(key, "kernel") == 0) {
            if (get_string(cx, v, "$.os.kernel", &s, &n) == -1)
                return -1;
            if (n > POSTURE_KERNEL_MAX || !valid_printable(s, n, 1))
                return posture_fail(cx->err, cx->errlen, "$.os.kernel",
                                    "expected at most %d printable characters, got %s",
                                    POSTURE_KERNEL_MAX, posture_json_describe(v, got, sizeof(got)));
            memcpy(p->kernel, s, n);
            p->kernel[n] = '\0';
        } else {
            snprintf(jpath, sizeof(jpath), "$.os.%.40s", key);
            return posture_fail(cx->err, cx->errlen, jpath, "unknown key");
        }
    }
    if (!have_name)
        return posture_fail(cx->err, cx->errlen, "$.os.name", "required key is missing");
    if (!have_version)
        return posture_fail(cx->err, cx->errlen, "$.os.version", "required key is missing");
    return 0;
}

/* Keys of the report, in the order they are written back. */
enum posture_key {
    PK_DEVICE_ID = 0,
    PK_COLLECTED_AT,
    PK_RECEIVED_AT,
    PK_AGENT_VERSION,
    PK_OS,
    PK_DISK_ENCRYPTION,
    PK_FIREWALL,
    PK_SCREEN_LOCK,
    PK_AUTO_UPDATES,
    PK_DAYS_SINCE_PATCH,
    PK_UPTIME_SECONDS,
    PK_COUNT
};

static const char *const posture_keys[PK_COUNT] = {
    "device_id",    "collected_at",     "received_at",    "agent_version",
    "os",           "disk_encryption",  "firewall",       "screen_lock",
    "auto_updates", "days_since_patch", "uptime_seconds",
};

static int decode_key(struct posture_ctx *cx, enum posture_key k, json_t *v, struct posture *p)
{
    char jpath[64], got[48];
    const char *s;
    size_t n;

    snprintf(jpath, sizeof(jpath), "$.%s", posture_keys[k]);
    switch (k) {
    case PK_DEVICE_ID:
        if (get_string(cx, v, jpath, &s, &n) == -1)
            return -1;
        if (!valid_device_id(s, n))
            return posture_fail(cx->err, cx->errlen, jpath,
                                "expected 1-%d characters of [A-Za-z0-9._:-], got %s",
                                DEVICE_ID_MAX, posture_json_describe(v, got, sizeof(got)));
        memcpy(p->device_id, s, n);
        p->device_id[n] = '\0';
        p->has_device_id = 1;
        return 0;
    case PK_COLLECTED_AT:
        return get_time(cx, v, jpath, &p->collected_at);
    case PK_RECEIVED_AT:
        return get_time(cx, v, jpath, &p->received_at);
    case PK_AGENT_VERSION:
        if (get_string(cx, v, jpath, &s, &n) == -1)
            return -1;
        if (!valid_agent_version(s, n))
            return posture_fail(cx->err, cx->errlen, jpath,
                                "expected a version like \"1.2.3\", got %s",
                                posture_json_describe(v, got, sizeof(got)));
        memcpy(p->agent_version, s, n);
        p->agent_version[n] = '\0';
        return 0;
    case PK_OS:
        return decode_os(cx, v, p);
    case PK_DISK_ENCRYPTION:
        return get_tri(cx, v, jpath, &p->disk_encryption);
    case PK_FIREWALL:
        return get_tri(cx, v, jpath, &p->firewall);
    case PK_SCREEN_LOCK:
        return get_tri(cx, v, jpath, &p->screen_lock);
    case PK_AUTO_UPDATES:
        return get_tri(cx, v, jpath, &p->auto_updates);
    case PK_DAYS_SINCE_PATCH:
        if (json_is_string(v) && strcmp(json_string_value(v), "unknown") == 0 &&
            json_string_length(v) == 7) {
            p->days_since_patch = -1;
            return 0;
        }
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            json_integer_value(v) > POSTURE_MAX_DAYS_SINCE_PATCH)
            return posture_fail(
                cx->err, cx->errlen, jpath, "expected an integer 0..%d or \"unknown\", got %s",
                POSTURE_MAX_DAYS_SINCE_PATCH, posture_json_describe(v, got, sizeof(got)));
        p->days_since_patch = (int32_t)json_integer_value(v);
        return 0;
    case PK_UPTIME_SECONDS:
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            json_integer_value(v) > POSTURE_MAX_UPTIME_S)
            return posture_fail(cx->err, cx->errlen, jpath, "expected an integer 0..%lld, got %s",
                                (long long)POSTURE_MAX_UPTIME_S,
                                posture_json_describe(v, got, sizeof(got)));
        p->uptime_seconds = json_integer_value(v);
        return 0;
    case PK_COUNT:
        break;
    }
    return posture_fail(cx->err, cx->errlen, jpath, "internal error");
}

static int posture_decode(const char *data, size_t len, enum posture_mode mode, int64_t now,
                          struct posture *out, char *err, size_t errlen)
{
    struct posture_ctx cx = {err, errlen};
    struct posture p;
    json_error_t jerr;
    json_t *root = NULL, *v;
    const char *key;
    char jpath[64], got[48];
    int seen[PK_COUNT] = {0};
    int k, rc = -1;

    memset(&p, 0, sizeof(p));
    p.days_since_patch = -1;
    p.uptime_seconds = -1;
    if (len > POSTURE_MAX_BYTES) {
        posture_fail(err, errlen, "$", "report is %zu bytes, the limit is %d", len,
                     POSTURE_MAX_BYTES);
        goto err;
    }
    root = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        posture_fail(err, errlen, "$", "JSON syntax error at line %d column %d: %s", jerr.line,
                     jerr.column, jerr.text);
        goto err;
    }
    if (!json_is_object(root)) {
        posture_fail(err, errlen, "$", "expected an object, got %s",
                     posture_json_describe(root, got, sizeof(got)));
        goto err;
    }
    json_object_foreach(root, key, v)
    {
        for (k = 0; k < PK_COUNT; k++)
            if (strcmp(key, posture_keys[k]) == 0)
                break;
        /* received_at is ours, never the agent's to claim. */
        if (k == PK_COUNT || (k == PK_RECEIVED_AT && mode == POSTURE_MODE_REPORT)) {
            snprintf(jpath, sizeof(jpath), "$.%.40s", key);
            posture_fail(err, errlen, jpath, "unknown key");
            goto err;
        }
        /* A key with an embedded NUL must not pass as a known one. */
        if (strlen(key) != strlen(posture_keys[k])) {
            posture_fail(err, errlen, "$", "unknown key");
            goto err;
        }
        if (decode_key(&cx, (enum posture_key)k, v, &p) == -1)
            goto err;
        seen[k] = 1;
    }
    for (k = 0; k < PK_COUNT; k++) {
        if (seen[k] || k == PK_DEVICE_ID || k == PK_UPTIME_SECONDS ||
            (k == PK_RECEIVED_AT && mode == POSTURE_MODE_REPORT))
            continue;
        snprintf(jpath, sizeof(jpath), "$.%s", posture_keys[k]);
        posture_fail(err, errlen, jpath, "required key is missing");
        goto err;
    }
    if (mode == POSTURE_MODE_REPORT) {
        if (p.collected_at > now + POSTURE_MAX_SKEW_S) {
            posture_fail(err, errlen, "$.collected_at",
                         "is %lld s in the future (the limit is %d s of clock skew)",
                         (long long)(p.collected_at - now), POSTURE_MAX_SKEW_S);
            goto err;
        }
        if (p.collected_at < now - POSTURE_MAX_AGE_S) {
            posture_fail(err, errlen, "$.collected_at", "is %lld days old (the limit is %d days)",
                         (long long)((now - p.collected_at) / 86400), POSTURE_MAX_AGE_S / 86400);
            goto err;
        }
        p.received_at = now;
    }
    *out = p;
    rc = 0;
err:
    json_decref(root);
    return rc;
}

int posture_parse(const char *data, size_t len, int64_t now, struct posture *out, char *err,
                  size_t errlen)
{
    return posture_decode(data, len, POSTURE_MODE_REPORT, now, out, err, errlen);
}

int posture_from_json(const char *data, size_t len, struct posture *out, char *err, size_t errlen)
{
    return posture_decode(data, len, POSTURE_MODE_STATE, 0, out, err, errlen);
}

static json_t *tri_json(enum posture_tri t)
{
    switch (t) {
    case POSTURE_YES:
        return json_true();
    case POSTURE_NO:
        return json_false();
    case POSTURE_UNKNOWN:
        break;
    }
    return json_string("unknown");
}

/* json_object_set_new() that remembers a failure instead of returning it. */
static void set_new(json_t *o, const char *key, json_t *v, int *bad)
{
    if (v == NULL || json_object_set_new(o, key, v) == -1)
        *bad = 1;
}

int posture_to_json(const struct posture *p, char *buf, size_t len)
{
    json_t *o = NULL, *os = NULL;
    char ct[POSTURE_TIME_MAX], rt[POSTURE_TIME_MAX];
    size_t n;
    int bad = 0, rc = -1;

    if (posture_time_format(p->collected_at, ct, sizeof(ct)) == -1 ||
        posture_time_format(p->received_at, rt, sizeof(rt)) == -1)
        goto err;
    o = json_object();
    os = json_object();
    if (o == NULL || os == NULL)
        goto err;
    if (p->has_device_id)
        set_new(o, "device_id", json_string(p->device_id), &bad);
    set_new(o, "collected_at", json_string(ct), &bad);
    set_new(o, "received_at", json_string(rt), &bad);
    set_new(o, "agent_version", json_string(p->agent_version), &bad);
    set_new(os, "name", json_string(p->os_name), &bad);
    set_new(os, "version", json_string(p->os_version), &bad);
    if (p->kernel[0] != '\0')
        set_new(os, "kernel", json_string(p->kernel), &bad);
    set_new(o, "os", os, &bad);
    os = NULL; /* owned by o from here, even on failure */
    set_new(o, "disk_encryption", tri_json(p->disk_encryption), &bad);
    set_new(o, "firewall", tri_json(p->firewall), &bad);
    set_new(o, "screen_lock", tri_json(p->screen_lock), &bad);
    set_new(o, "auto_updates", tri_json(p->auto_updates), &bad);
    set_new(o, "days_since_patch",
            p->days_since_patch < 0 ? json_string("unknown") : json_integer(p->days_since_patch),
            &bad);
    if (p->uptime_seconds >= 0)
        set_new(o, "uptime_seconds", json_integer(p->uptime_seconds), &bad);
    if (bad)
        goto err;
    n = json_dumpb(o, buf, len, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (n == 0 || n >= len)
        goto err;
    buf[n] = '\0';
    rc = (int)n;
err:
    json_decref(os);
    json_decref(o);
    return rc;
}
