/*
 * score.c - the device trust scorer and its configuration.
 *
 * The config is validated once, completely, with JSON-path errors; the
 * scorer then works on fixed arrays only: no allocation, no clock, no
 * globals, so it can run on every request and be tested exhaustively.
 *
 * Failing closed is the rule throughout: a missing or "unknown" input fails
 * the check that needs it; it is never assumed to pass.
 */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "score.h"

enum score_check_type {
    SCORE_CHECK_STATUS_ACTIVE = 0,
    SCORE_CHECK_MANAGED,
    SCORE_CHECK_OWNER_IS_USER,
    SCORE_CHECK_POSTURE_MAX_AGE,
    SCORE_CHECK_DISK_ENCRYPTION,
    SCORE_CHECK_FIREWALL,
    SCORE_CHECK_SCREEN_LOCK,
    SCORE_CHECK_AUTO_UPDATES,
    SCORE_CHECK_OS_VERSION_MIN,
    SCORE_CHECK_PATCH_AGE_MAX,
    SCORE_CHECK_AGENT_VERSION_MIN,
    SCORE_CHECK_COUNT
};

/* Per type: its name, its parameter key (NULL: none) and what to tell the person. */
static const struct {
    const char *name;
    const char *param;
    const char *remediation;
} check_types[SCORE_CHECK_COUNT] = {
    {"status_active", NULL, "This device is not active in the device inventory; contact IT."},
    {"managed", NULL, "This device is not managed; enroll it in device management."},
    {"owner_is_user", NULL, "This device is registered to someone else; use your own device."},
    {"posture_max_age", "max_age",
     "The device agent has not reported recently; make sure ztagent is running."},
    {"disk_encryption", NULL, "Turn on full-disk encryption."},
    {"firewall", NULL, "Turn on the firewall."},
    {"screen_lock", NULL, "Turn on the screen lock."},
    {"auto_updates", NULL, "Turn on automatic updates."},
    {"os_version_min", "min", "Update the operating system."},
    {"patch_age_max", "max_days", "Install the latest security updates."},
    {"agent_version_min", "min", "Update the device agent (ztagent)."},
};

static const char remediation_unknown[] =
    "This device is not in the device inventory; enroll it or contact IT.";
static const char remediation_lost[] = "This device is reported lost or stolen; contact IT.";

/*
 * The policy used when the section is absent, and the source of defaults
 * for keys missing from it. Kept in sync with docs/device-trust.md.
 */
static const char default_policy[] =
    "{\"tiers\":[{\"name\":\"untrusted\",\"min_score\":0},"
    "{\"name\":\"identified\",\"min_score\":20},"
    "{\"name\":\"basic\",\"min_score\":40},"
    "{\"name\":\"trusted\",\"min_score\":70},"
    "{\"name\":\"high\",\"min_score\":90}],"
    "\"remediation_tier\":\"identified\","
    "\"unknown_device_tier\":\"untrusted\","
    "\"checks\":["
    "{\"id\":\"inventory_active\",\"type\":\"status_active\",\"hard\":true},"
    "{\"id\":\"fresh_posture\",\"type\":\"posture_max_age\",\"max_age\":\"24h\",\"hard\":true},"
    "{\"id\":\"managed\",\"type\":\"managed\",\"weight\":20},"
    "{\"id\":\"disk\",\"type\":\"disk_encryption\",\"weight\":25},"
    "{\"id\":\"fw\",\"type\":\"firewall\",\"weight\":10},"
    "{\"id\":\"lock\",\"type\":\"screen_lock\",\"weight\":10},"
    "{\"id\":\"os\",\"type\":\"os_version_min\",\"weight\":15,\"min\":{\"linux\":\"6.1\","
    "\"debian\":\"12\",\"ubuntu\":\"22.04\",\"macos\":\"14.0\",\"windows\":\"10.0.19045\"}},"
    "{\"id\":\"patch\",\"type\":\"patch_age_max\",\"max_days\":30,\"grace\":\"7d\","
    "\"weight\":10},"
    "{\"id\":\"agent\",\"type\":\"agent_version_min\",\"min\":\"1.0.0\",\"weight\":5},"
    "{\"id\":\"autoupd\",\"type\":\"auto_updates\",\"weight\":5}]}";

struct score_os_min {
    char key[SCORE_NAME_MAX + 1];
    char version[SCORE_VERSION_MAX + 1];
};

struct score_check {
    char id[SCORE_NAME_MAX + 1];
    enum score_check_type type;
    int weight;
    int hard;
    int64_t grace; /* seconds; 0: none */
    char remediation[SCORE_REMEDIATION_MAX + 1];
    size_t id_len, remediation_len;  /* set by config_finish() */
    int64_t max_age;                 /* posture_max_age, seconds */
    int max_days;                    /* patch_age_max */
    char min[SCORE_VERSION_MAX + 1]; /* agent_version_min */
    size_t nos;                      /* os_version_min */
    struct score_os_min os[SCORE_OS_MIN_MAX];
};

struct score_tier {
    char name[SCORE_NAME_MAX + 1];
    int min_score;
};

struct score_config {
    atomic_int refs;
    size_t ntiers;
    struct score_tier tiers[SCORE_MAX_TIERS];
    int remediation_tier;
    int unknown_device_tier;
    int total_weight; /* 0 or 100 */
    size_t nchecks;
    struct score_check checks[SCORE_MAX_CHECKS];
    /* Bit i for check i, set by config_finish(): the scorer walks these. */
    uint32_t all_mask;
    uint32_t age_mask;   /* posture_max_age: evaluated first */
    uint32_t hard_mask;  /* hard */
    uint32_t grace_mask; /* with a grace period */
};

struct score_ctx {
    const char *name;
    char *err;
    size_t errlen;
};

static int score_fail(struct score_ctx *cx, const char *jpath, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int score_fail(struct score_ctx *cx, const char *jpath, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (cx->err == NULL || cx->errlen == 0)
        return -1;
    n = snprintf(cx->err, cx->errlen, "%s: %s: ", cx->name, jpath);
    if (n < 0 || (size_t)n >= cx->errlen)
        return -1;
    va_start(ap, fmt);
    vsnprintf(cx->err + n, cx->errlen - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

static const char *score_describe(const json_t *v, char *out, size_t len)
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

/* ---- versions and durations --------------------------------------------- */

int score_version_cmp(const char *a, const char *b, int *out)
{
    const char *pa = a, *pb = b;

    if (a == NULL || b == NULL || *a < '0' || *a > '9' || *b < '0' || *b > '9')
        return -1;
    /* Component by component; a missing component is 0 ("12" == "12.0"). */
    for (;;) {
        const char *sa, *sb;
        size_t la, lb;
        int more_a = *pa >= '0' && *pa <= '9', more_b = *pb >= '0' && *pb <= '9';

        if (!more_a && !more_b)
            break;
        while (*pa == '0' && pa[1] >= '0' && pa[1] <= '9')
            pa++;
        while (*pb == '0' && pb[1] >= '0' && pb[1] <= '9')
            pb++;
        sa = pa;
        sb = pb;
        while (*pa >= '0' && *pa <= '9')
            pa++;
        while (*pb >= '0' && *pb <= '9')
            pb++;
        la = (size_t)(pa - sa);
        lb = (size_t)(pb - sb);
        /* An absent component compares as "0". */
        if (la == 0) {
            sa = "0";
            la = 1;
        }
        if (lb == 0) {
            sb = "0";
            lb = 1;
        }
        /* Without leading zeros, a longer number is a larger one: no overflow. */
        if (la != lb) {
            *out = la < lb ? -1 : 1;
            return 0;
        }
        if (memcmp(sa, sb, la) != 0) {
            *out = memcmp(sa, sb, la) < 0 ? -1 : 1;
            return 0;
        }
        /* Step over a dot only if a digit follows it. */
        if (*pa == '.' && pa[1] >= '0' && pa[1] <= '9')
            pa++;
        if (*pb == '.' && pb[1] >= '0' && pb[1] <= '9')
            pb++;
    }
    *out = 0;
    return 0;
}

/* "90s", "15m", "24h", "7d" -> seconds. 0, or -1. */
static int score_duration_parse(const char *s, int64_t *out)
{
    int64_t n = 0, mult;
    const char *p = s;

    if (*p < '0' || *p > '9')
        return -1;
    while (*p >= '0' && *p <= '9') {
        if (n > 100000000)
            return -1;
        n = n * 10 + (*p - '0');
        p++;
    }
    if (strcmp(p, "s") == 0)
        mult = 1;
    else if (strcmp(p, "m") == 0)
        mult = 60;
    else if (strcmp(p, "h") == 0)
        mult = 3600;
    else if (strcmp(p, "d") == 0)
        mult = 86400;
    else
        return -1;
    *out = n * mult;
    return 0;
}

/* ---- config ------------------------------------------------------------- */

static int valid_name(const char *s, size_t n)
{
    size_t i;

    if (n == 0 || n > SCORE_NAME_MAX)
        return 0;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

static int get_name(struct score_ctx *cx, json_t *v, const char *jpath, char *out)
{
    char got[48];

    if (!json_is_string(v) || !valid_name(json_string_value(v), json_string_length(v)))
        return score_fail(cx, jpath, "expected 1-%d characters of [a-z0-9_-], got %s",
                          SCORE_NAME_MAX, score_describe(v, got, sizeof(got)));
    memcpy(out, json_string_value(v), json_string_length(v) + 1);
    return 0;
}

static int get_duration(struct score_ctx *cx, json_t *v, const char *jpath, int64_t min,
                        int64_t max, int64_t *out)
{
    char got[48];
    int64_t s = -1;

    if (json_is_integer(v))
        s = json_integer_value(v);
    else if (!json_is_string(v) || score_duration_parse(json_string_value(v), &s) == -1)
        s = -1;
    if (s < min || s > max)
        return score_fail(cx, jpath,
                          "expected a duration %llds..%llds like \"90s\", \"15m\", \"24h\", "
                          "\"7d\" or seconds, got %s",
                          (long long)min, (long long)max, score_describe(v, got, sizeof(got)));
    *out = s;
    return 0;
}

static int get_version(struct score_ctx *cx, json_t *v, const char *jpath, char *out)
{
    char got[48];
    int cmp;

    if (!json_is_string(v) || json_string_length(v) == 0 ||
        json_string_length(v) > SCORE_VERSION_MAX ||
        score_version_cmp(json_string_value(v), "0", &cmp) == -1)
        return score_fail(cx, jpath,
                          "expected a version like \"1.2.3\" (at most %d characters), "
                          "got %s",
                          SCORE_VERSION_MAX, score_describe(v, got, sizeof(got)));
    memcpy(out, json_string_value(v), json_string_length(v) + 1);
    return 0;
}

static int parse_tiers(struct score_ctx *cx, struct score_config *c, json_t *arr, const char *base)
{
    char p[128], got[48];
    const char *key;
    json_t *t, *v;
    size_t i, j;

    snprintf(p, sizeof(p), "%s.tiers", base);
    if (!json_is_array(arr) || json_array_size(arr) == 0 || json_array_size(arr) > SCORE_MAX_TIERS)
        return score_fail(cx, p, "expected an array of 1 to %d tiers, got %s", SCORE_MAX_TIERS,
                          score_describe(arr, got, sizeof(got)));
    json_array_foreach(arr, i, t)
    {
        struct score_tier *tier = &c->tiers[i];
        int have_name = 0, have_min = 0;

        snprintf(p, sizeof(p), "%s.tiers[%zu]", base, i);
        if (!json_is_object(t))
            return score_fail(cx, p, "expected an object, got %s",
                              score_describe(t, got, sizeof(got)));
        json_object_foreach(t, key, v)
        {
            snprintf(p, sizeof(p), "%s.tiers[%zu].%.40s", base, i, key);
            if (strcmp(key, "name") == 0) {
                if (get_name(cx, v, p, tier->name) == -1)
                    return -1;
                have_name = 1;
            } else if (strcmp(key, "min_score") == 0) {
                if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 100)
                    return score_fail(cx, p, "expected an integer 0..100, got %s",
                                      score_describe(v, got, sizeof(got)));
                tier->min_score = (int)json_integer_value(v);
                have_min = 1;
            } else {
                return score_fail(cx, p, "unknown key");
            }
        }
        snprintf(p, sizeof(p), "%s.tiers[%zu].%s", base, i, have_name ? "min_score" : "name");
        if (!have_name || !have_min)
            return score_fail(cx, p, "required key is missing");
        snprintf(p, sizeof(p), "%s.tiers[%zu].min_score", base, i);
        if (i == 0 && tier->min_score != 0)
            return score_fail(cx, p,
                              "the first (lowest) tier must have min_score 0, so every "
                              "score has a tier");
        if (i > 0 && tier->min_score <= c->tiers[i - 1].min_score)
            return score_fail(cx, p, "tiers must be in ascending order of min_score: %d after %d",
                              tier->min_score, c->tiers[i - 1].min_score);
        for (j = 0; j < i; j++) {
            if (strcmp(c->tiers[j].name, tier->name) == 0) {
                snprintf(p, sizeof(p), "%s.tiers[%zu].name", base, i);
                return score_fail(cx, p, "duplicate tier name \"%s\"", tier->name);
            }
        }
    }
    c->ntiers = json_array_size(arr);
    return 0;
}

static int parse_os_min(struct score_ctx *cx, struct score_check *ck, json_t *v, const char *p)
{
    char q[256], got[48];
    const char *key;
    json_t *ver;

    if (!json_is_object(v) || json_object_size(v) == 0 || json_object_size(v) > SCORE_OS_MIN_MAX)
        return score_fail(cx, p,
                          "expected an object of 1 to %d \"os or platform\": \"min version\" "
                          "pairs, got %s",
                          SCORE_OS_MIN_MAX, score_describe(v, got, sizeof(got)));
    json_object_foreach(v, key, ver)
    {
        struct score_os_min *m = &ck->os[ck->nos];

        snprintf(q, sizeof(q), "%s.%.40s", p, key);
        if (!valid_name(key, strlen(key)))
            return score_fail(cx, q, "OS and platform names are 1-%d characters of [a-z0-9_-]",
                              SCORE_NAME_MAX);
        memcpy(m->key, key, strlen(key) + 1);
        if (get_version(cx, ver, q, m->version) == -1)
            return -1;
        ck->nos++;
    }
    return 0;
}

static int parse_check(struct score_ctx *cx, struct score_config *c, json_t *o, size_t idx,
                       const char *base)
{
    struct score_check *ck = &c->checks[idx];
    char p[160], got[48];
    const char *key, *param;
    json_t *v;
    size_t i;
    int t, have_param = 0;

    snprintf(p, sizeof(p), "%s.checks[%zu]", base, idx);
    if (!json_is_object(o))
        return score_fail(cx, p, "expected an object, got %s", score_describe(o, got, sizeof(got)));
    /* The type decides which other keys are allowed: read it first. */
    v = json_object_get(o, "type");
    snprintf(p, sizeof(p), "%s.checks[%zu].type", base, idx);
    if (v == NULL)
        return score_fail(cx, p, "required key is missing");
    for (t = 0; t < SCORE_CHECK_COUNT; t++)
        if (json_is_string(v) && strcmp(json_string_value(v), check_types[t].name) == 0)
            break;
    if (t == SCORE_CHECK_COUNT)
        return score_fail(cx, p,
                          "unknown check type %s (expected status_active, managed, owner_is_user, "
                          "posture_max_age, disk_encryption, firewall, screen_lock, auto_updates, "
                          "os_version_min, patch_age_max or agent_version_min)",
                          score_describe(v, got, sizeof(got)));
    ck->type = (enum score_check_type)t;
    param = check_types[t].param;
    snprintf(ck->remediation, sizeof(ck->remediation), "%s", check_types[t].remediation);
    json_object_foreach(o, key, v)
    {
        snprintf(p, sizeof(p), "%s.checks[%zu].%.40s", base, idx, key);
        if (strcmp(key, "type") == 0) {
            continue;
        } else if (strcmp(key, "id") == 0) {
            if (get_name(cx, v, p, ck->id) == -1)
                return -1;
            if (strcmp(ck->id, "device_unknown") == 0 || strcmp(ck->id, "device_lost") == 0)
                return score_fail(cx, p, "\"%s\" is reserved", ck->id);
        } else if (strcmp(key, "weight") == 0) {
            if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 100)
                return score_fail(cx, p, "expected an integer 0..100, got %s",
                                  score_describe(v, got, sizeof(got)));
            ck->weight = (int)json_integer_value(v);
        } else if (strcmp(key, "hard") == 0) {
            if (!json_is_boolean(v))
                return score_fail(cx, p, "expected true or false, got %s",
                                  score_describe(v, got, sizeof(got)));
            ck->hard = json_is_true(v);
        } else if (strcmp(key, "remediation") == 0) {
            const char *s = json_string_value(v);
            if (!json_is_string(v) || json_string_length(v) == 0 ||
                json_string_length(v) > SCORE_REMEDIATION_MAX)
                return score_fail(cx, p, "expected a string of 1 to %d bytes, got %s",
                                  SCORE_REMEDIATION_MAX, score_describe(v, got, sizeof(got)));
            for (i = 0; s[i] != '\0'; i++)
                if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
                    return score_fail(cx, p, "control characters are not allowed");
            memcpy(ck->remediation, s, json_string_length(v) + 1);
        } else if (strcmp(key, "grace") == 0) {
            if (get_duration(cx, v, p, 0, 365 * 86400, &ck->grace) == -1)
                return -1;
        } else if (param != NULL && strcmp(key, param) == 0) {
            have_param = 1;
            switch (ck->type) {
            case SCORE_CHECK_POSTURE_MAX_AGE:
                if (get_duration(cx, v, p, 1, 365 * 86400, &ck->max_age) == -1)
                    return -1;
                break;
            case SCORE_CHECK_PATCH_AGE_MAX:
                if (!json_is_integer(v) || json_integer_value(v) < 0 ||
                    json_integer_value(v) > POSTURE_MAX_DAYS_SINCE_PATCH)
                    return score_fail(cx, p, "expected an integer 0..%d, got %s",
                                      POSTURE_MAX_DAYS_SINCE_PATCH,
                                      score_describe(v, got, sizeof(got)));
                ck->max_days = (int)json_integer_value(v);
                break;
            case SCORE_CHECK_AGENT_VERSION_MIN:
                if (get_version(cx, v, p, ck->min) == -1)
                    return -1;
                break;
            case SCORE_CHECK_OS_VERSION_MIN:
                if (parse_os_min(cx, ck, v, p) == -1)
                    return -1;
                break;
            default:
                break;
            }
        } else {
            return score_fail(cx, p, "unknown key for a %s check", check_types[t].name);
        }
    }
    if (ck->id[0] == '\0') {
        snprintf(p, sizeof(p), "%s.checks[%zu].id", base, idx);
        return score_fail(cx, p, "required key is missing");
    }
    if (param != NULL && !have_param) {
        snprintf(p, sizeof(p), "%s.checks[%zu].%s", base, idx, param);
        return score_fail(cx, p, "required key is missing");
    }
    for (i = 0; i < idx; i++) {
        if (strcmp(c->checks[i].id, ck->id) == 0) {
            snprintf(p, sizeof(p), "%s.checks[%zu].id", base, idx);
            return score_fail(cx, p, "duplicate check id \"%s\" (also $.checks[%zu])", ck->id, i);
        }
    }
    return 0;
}

static int parse_checks(struct score_ctx *cx, struct score_config *c, json_t *arr, const char *base)
{
    char p[128], got[48];
    size_t i, ngrace = 0;
    json_t *o;

    snprintf(p, sizeof(p), "%s.checks", base);
    if (!json_is_array(arr) || json_array_size(arr) > SCORE_MAX_CHECKS)
        return score_fail(cx, p, "expected an array of at most %d checks, got %s", SCORE_MAX_CHECKS,
                          score_describe(arr, got, sizeof(got)));
    json_array_foreach(arr, i, o)
    {
        if (parse_check(cx, c, o, i, base) == -1)
            return -1;
        c->total_weight += c->checks[i].weight;
        ngrace += c->checks[i].grace > 0;
    }
    c->nchecks = json_array_size(arr);
    /*
     * Required, not normalised: thresholds are written against 0..100, and a
     * weight should read as the points it costs.
     */
    if (c->total_weight != 0 && c->total_weight != 100)
        return score_fail(cx, p, "the weights add up to %d; they must add up to 100 (or all be 0)",
                          c->total_weight);
    if (ngrace > SCORE_MAX_GRACE)
        return score_fail(cx, p, "%zu checks have a grace period, the limit is %d", ngrace,
                          SCORE_MAX_GRACE);
    return 0;
}

static int parse_tier_ref(struct score_ctx *cx, const struct score_config *c, json_t *v,
                          const char *p, int *out)
{
    char got[48];
    int t;

    t = json_is_string(v) ? score_config_tier_find(c, json_string_value(v)) : -1;
    if (t < 0)
        return score_fail(cx, p, "expected the name of a tier, got %s",
                          score_describe(v, got, sizeof(got)));
    *out = t;
    return 0;
}

static int parse_section(struct score_ctx *cx, struct score_config *c, const json_t *sec,
                         const json_t *def, const char *base)
{
    static const char *const keys[] = {"tiers", "remediation_tier", "unknown_device_tier", "checks",
                                       NULL};
    char p[128], got[48];
    const char *key;
    json_t *v;
    size_t i;

    if (!json_is_object(sec))
        return score_fail(cx, base, "expected an object, got %s",
                          score_describe(sec, got, sizeof(got)));
    json_object_foreach((json_t *)sec, key, v)
    {
        for (i = 0; keys[i] != NULL; i++)
            if (strcmp(key, keys[i]) == 0)
                break;
        if (keys[i] == NULL) {
            snprintf(p, sizeof(p), "%s.%.40s", base, key);
            return score_fail(cx, p, "unknown key");
        }
    }
    v = json_object_get(sec, "tiers");
    if (parse_tiers(cx, c, v ? v : json_object_get(def, "tiers"), base) == -1)
        return -1;
    v = json_object_get(sec, "checks");
    if (parse_checks(cx, c, v ? v : json_object_get(def, "checks"), base) == -1)
        return -1;
    /* Tier references default to the built-in names only with the built-in tiers. */
    snprintf(p, sizeof(p), "%s.remediation_tier", base);
    v = json_object_get(sec, "remediation_tier");
    if (v == NULL && json_object_get(sec, "tiers") == NULL)
        v = json_object_get(def, "remediation_tier");
    if (v == NULL)
        c->remediation_tier = 0;
    else if (parse_tier_ref(cx, c, v, p, &c->remediation_tier) == -1)
        return -1;
    snprintf(p, sizeof(p), "%s.unknown_device_tier", base);
    v = json_object_get(sec, "unknown_device_tier");
    if (v == NULL)
        c->unknown_device_tier = 0;
    else if (parse_tier_ref(cx, c, v, p, &c->unknown_device_tier) == -1)
        return -1;
    return 0;
}

/* What the scorer needs precomputed: string lengths and the check masks. */
static void config_finish(struct score_config *c)
{
    size_t i;

    c->all_mask = c->age_mask = c->hard_mask = c->grace_mask = 0;
    for (i = 0; i < c->nchecks; i++) {
        struct score_check *ck = &c->checks[i];
        uint32_t bit = 1u << i;

        ck->id_len = strlen(ck->id);
        ck->remediation_len = strlen(ck->remediation);
        c->all_mask |= bit;
        if (ck->type == SCORE_CHECK_POSTURE_MAX_AGE)
            c->age_mask |= bit;
        if (ck->hard)
            c->hard_mask |= bit;
        if (ck->grace > 0)
            c->grace_mask |= bit;
    }
}

int score_config_from_json(const struct json_t *section, const char *name, const char *jpath,
                           struct score_config **out, char *err, size_t errlen)
{
    struct score_ctx cx = {name ? name : "config", err, errlen};
    struct score_config *c = NULL;
    json_t *def = NULL;
    json_error_t jerr;
    int rc = -1;

    def = json_loads(default_policy, 0, &jerr);
    c = calloc(1, sizeof(*c));
    if (def == NULL || c == NULL) {
        score_fail(&cx, jpath ? jpath : "$", "out of memory");
        goto err;
    }
    atomic_init(&c->refs, 1);
    if (parse_section(&cx, c, section ? section : def, def, jpath ? jpath : "$") == -1)
        goto err;
    config_finish(c);
    *out = c;
    c = NULL;
    rc = 0;
err:
    free(c);
    json_decref(def);
    return rc;
}

int score_config_parse(const char *text, size_t len, const char *name, struct score_config **out,
                       char *err, size_t errlen)
{
    struct score_ctx cx = {name ? name : "config", err, errlen};
    json_error_t jerr;
    json_t *root;
    int rc;

    if (text == NULL || len == 0)
        return score_config_from_json(NULL, name, "$", out, err, errlen);
    root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL)
        return score_fail(&cx, "$", "JSON syntax error at line %d column %d: %s", jerr.line,
                          jerr.column, jerr.text);
    rc = score_config_from_json(root, name, "$", out, err, errlen);
    json_decref(root);
    return rc;
}

struct score_config *score_config_ref(struct score_config *cfg)
{
    if (cfg != NULL)
        atomic_fetch_add_explicit(&cfg->refs, 1, memory_order_relaxed);
    return cfg;
}

void score_config_unref(struct score_config *cfg)
{
    if (cfg != NULL && atomic_fetch_sub_explicit(&cfg->refs, 1, memory_order_acq_rel) == 1)
        free(cfg);
}

size_t score_config_tier_count(const struct score_config *cfg)
{
    return cfg->ntiers;
}

const char *score_config_tier_name(const struct score_config *cfg, size_t ordinal)
{
    return ordinal < cfg->ntiers ? cfg->tiers[ordinal].name : NULL;
}

int score_config_tier_min(const struct score_config *cfg, size_t ordinal)
{
    return ordinal < cfg->ntiers ? cfg->tiers[ordinal].min_score : -1;
}

int score_config_tier_find(const struct score_config *cfg, const char *name)
{
    size_t i;

    for (i = 0; i < cfg->ntiers; i++)
        if (strcmp(cfg->tiers[i].name, name) == 0)
            return (int)i;
    return -1;
}

size_t score_config_check_count(const struct score_config *cfg)
{
    return cfg->nchecks;
}

int score_config_check_at(const struct score_config *cfg, size_t i, struct score_check_info *out)
{
    const struct score_check *ck;

    if (i >= cfg->nchecks)
        return -1;
    ck = &cfg->checks[i];
    out->id = ck->id;
    out->type = check_types[ck->type].name;
    out->weight = ck->weight;
    out->hard = ck->hard;
    out->grace = ck->grace;
    out->remediation = ck->remediation;
    return 0;
}

/* ---- scoring ------------------------------------------------------------ */

const char *score_reason_name(enum score_reason r)
{
    switch (r) {
    case SCORE_REASON_FAILED:
        return "failed";
    case SCORE_REASON_UNKNOWN:
        return "unknown";
    case SCORE_REASON_NO_POSTURE:
        return "no_posture";
    case SCORE_REASON_STALE_POSTURE:
        return "stale_posture";
    case SCORE_REASON_NO_RECORD:
        return "no_record";
    case SCORE_REASON_STALE_INVENTORY:
        return "stale_inventory";
    case SCORE_REASON_NO_USER:
        return "no_user";
    case SCORE_REASON_LOST:
        return "lost";
    }
    return "invalid";
}

/* The check result: -1 passes, else the enum score_reason it fails with. */
#define SCORE_PASS (-1)

static int eval_tri(enum posture_tri t)
{
    if (t == POSTURE_YES)
        return SCORE_PASS;
    return t == POSTURE_NO ? SCORE_REASON_FAILED : SCORE_REASON_UNKNOWN;
}

/* version >= min? */
static int eval_min_version(const char *version, const char *min)
{
    int cmp;

    if (version[0] == '\0' || score_version_cmp(version, min, &cmp) == -1)
        return SCORE_REASON_UNKNOWN;
    return cmp >= 0 ? SCORE_PASS : SCORE_REASON_FAILED;
}

/*
 * Keys of the min map name an OS (matched against the report's os.name,
 * compared with os.version) or a platform (matched against the inventory
 * platform, or the os.name without a record). The key "linux" compares the
 * kernel: the distribution version says little about it. Every matching
 * key must pass; no matching key at all fails as unknown.
 */
static int eval_os(const struct score_check *ck, const struct posture *p,
                   const struct inventory_record *rec)
{
    const char *platform = rec ? inventory_record_platform(rec) : p->os_name;
    int matched = 0, worst = SCORE_PASS, r;
    size_t i;

    for (i = 0; i < ck->nos; i++) {
        const struct score_os_min *m = &ck->os[i];
        if (strcmp(m->key, p->os_name) != 0 && strcmp(m->key, platform) != 0)
            continue;
        matched = 1;
        r = eval_min_version(strcmp(m->key, "linux") == 0 ? p->kernel : p->os_version, m->version);
        if (r == SCORE_REASON_FAILED || (r == SCORE_REASON_UNKNOWN && worst == SCORE_PASS))
            worst = r;
    }
    return matched ? worst : SCORE_REASON_UNKNOWN;
}

static int owner_matches(const char *owner, const struct score_input *in)
{
    if (in->user_email != NULL && strcasecmp(owner, in->user_email) == 0)
        return 1;
    return in->user_subject != NULL && strcmp(owner, in->user_subject) == 0;
}

/* A check that reads the inventory record. */
static int eval_inventory_check(const struct score_check *ck, const struct score_input *in,
                                enum inventory_status status)
{
    if (in->record == NULL)
        return SCORE_REASON_NO_RECORD;
    if (in->inventory_stale)
        return SCORE_REASON_STALE_INVENTORY;
    switch (ck->type) {
    case SCORE_CHECK_STATUS_ACTIVE:
        return status == INVENTORY_STATUS_ACTIVE ? SCORE_PASS : SCORE_REASON_FAILED;
    case SCORE_CHECK_MANAGED:
        return inventory_record_managed(in->record) ? SCORE_PASS : SCORE_REASON_FAILED;
    case SCORE_CHECK_OWNER_IS_USER:
        if (in->user_email == NULL && in->user_subject == NULL)
            return SCORE_REASON_NO_USER;
        return owner_matches(inventory_record_owner(in->record), in) ? SCORE_PASS
                                                                     : SCORE_REASON_FAILED;
    default:
        break;
    }
    return SCORE_REASON_UNKNOWN;
}

static int posture_age_fails(const struct score_check *ck, const struct posture *p, int64_t now)
{
    /* The older of "measured" and "received": a skewed agent clock earns nothing. */
    int64_t t = p->collected_at < p->received_at ? p->collected_at : p->received_at;

    return now - t > ck->max_age;
}

/* A check that reads the posture report (already known to exist and be fresh). */
static int eval_posture_check(const struct score_check *ck, const struct score_input *in)
{
    const struct posture *p = in->posture;

    switch (ck->type) {
    case SCORE_CHECK_POSTURE_MAX_AGE:
        return posture_age_fails(ck, p, in->now) ? SCORE_REASON_STALE_POSTURE : SCORE_PASS;
    case SCORE_CHECK_DISK_ENCRYPTION:
        return eval_tri(p->disk_encryption);
    case SCORE_CHECK_FIREWALL:
        return eval_tri(p->firewall);
    case SCORE_CHECK_SCREEN_LOCK:
        return eval_tri(p->screen_lock);
    case SCORE_CHECK_AUTO_UPDATES:
        return eval_tri(p->auto_updates);
    case SCORE_CHECK_OS_VERSION_MIN:
        return eval_os(ck, p, in->record);
    case SCORE_CHECK_PATCH_AGE_MAX:
        if (p->days_since_patch < 0)
            return SCORE_REASON_UNKNOWN;
        return p->days_since_patch <= ck->max_days ? SCORE_PASS : SCORE_REASON_FAILED;
    case SCORE_CHECK_AGENT_VERSION_MIN:
        return eval_min_version(p->agent_version, ck->min);
    default:
        break;
    }
    return SCORE_REASON_UNKNOWN;
}

static const struct score_grace_entry *grace_find(const struct score_grace *g, const char *id)
{
    size_t i;

    for (i = 0; g != NULL && i < g->n && i < SCORE_MAX_GRACE; i++)
        if (strcmp(g->e[i].check, id) == 0)
            return &g->e[i];
    return NULL;
}

static int is_inventory_check(enum score_check_type t)
{
    return t == SCORE_CHECK_STATUS_ACTIVE || t == SCORE_CHECK_MANAGED ||
           t == SCORE_CHECK_OWNER_IS_USER;
}

/*
 * Is a failing check still within its grace? Without a grace state, grace
 * is not applied (a caller that keeps no state must not get endless grace).
 */
static int in_grace(const struct score_check *ck, const struct score_input *in, int64_t *until)
{
    const struct score_grace_entry *e;

    if (ck->grace <= 0 || in->grace == NULL)
        return 0;
    e = grace_find(in->grace, ck->id);
    /* Not yet recorded: it starts failing now. */
    *until = (e ? e->since : in->now) + ck->grace;
    return in->now <= *until;
}

static void add_failure(struct score_result *res, const char *id, size_t id_len,
                        const char *remediation, size_t remediation_len, int reason, int hard,
                        int weight, int grace, int64_t until)
{
    struct score_failure *f;

    if (res->nfailed >= SCORE_MAX_FAILURES)
        return;
    f = &res->failed[res->nfailed++];
    f->id = id;
    f->remediation = remediation;
    f->reason = (enum score_reason)reason;
    f->hard = hard;
    f->weight = grace ? 0 : weight;
    f->in_grace = grace;
    f->grace_until = grace ? until : 0;
    f->id_len = id_len;
    f->remediation_len = remediation_len;
}

/* The lowest set bit's index; m != 0. */
static unsigned low_bit(uint32_t m)
{
    return (unsigned)__builtin_ctz(m);
}

/*
 * Check i failed with reason r: record it and whether it is still within
 * its grace period (in_grace(), inlined for the common no-grace case).
 */
static void note_failure(const struct score_config *cfg, const struct score_input *in, unsigned i,
                         int r, uint32_t *fail, uint32_t *graced, int8_t *reason, int64_t *until)
{
    uint32_t bit = 1u << i;

    *fail |= bit;
    reason[i] = (int8_t)r;
    if ((cfg->grace_mask & bit) && in->grace != NULL && in_grace(&cfg->checks[i], in, &until[i]))
        *graced |= bit;
}

/* A time after which the result may change: keep the earliest. */
static void valid_until_min(struct score_result *res, int64_t t)
{
    if (t < res->valid_until)
        res->valid_until = t;
}

/*
 * Checks are walked as bit masks (config_finish()): only failing checks
 * leave a trace (reason[], until[] are written for those alone), and the
 * list is built from the masks in config order.
 */
void score_eval(const struct score_config *cfg, const struct score_input *in,
                struct score_result *res)
{
    enum inventory_status status = INVENTORY_STATUS_NONE;
    int8_t reason[SCORE_MAX_CHECKS];
    int64_t until[SCORE_MAX_CHECKS];
    uint32_t fail = 0, graced = 0, m, counted, hard;
    int lost_weight = 0, hard_fail, posture_stale = 0, tier, r;
    unsigned i;

    res->score = 0;
    res->flags = 0;
    res->stale = 0;
    res->nfailed = 0;
    res->raw_failing = 0;
    res->valid_until = INT64_MAX;

    if (in->override != INVENTORY_STATUS_NONE)
        status = in->override;
    else if (in->record != NULL)
        status = inventory_record_status(in->record);

    /* Pass 1: freshness, which decides whether the report may be read at all. */
    for (m = cfg->age_mask; m != 0; m &= m - 1) {
        i = low_bit(m);
        r = in->posture == NULL ? SCORE_REASON_NO_POSTURE : eval_posture_check(&cfg->checks[i], in);
        if (r != SCORE_PASS) {
            note_failure(cfg, in, i, r, &fail, &graced, reason, until);
            if (!(graced & (1u << i)) && in->posture != NULL)
                posture_stale = 1;
        } else {
            /* Fresh until now - t > max_age (posture_age_fails()). */
            const struct posture *p = in->posture;
            int64_t t = p->collected_at < p->received_at ? p->collected_at : p->received_at;
            valid_until_min(res, t + cfg->checks[i].max_age);
        }
    }
    /* Pass 2: everything else. */
    for (m = cfg->all_mask & ~cfg->age_mask; m != 0; m &= m - 1) {
        const struct score_check *ck;
        i = low_bit(m);
        ck = &cfg->checks[i];
        if (is_inventory_check(ck->type))
            r = eval_inventory_check(ck, in, status);
        else if (in->posture == NULL)
            r = SCORE_REASON_NO_POSTURE;
        else if (posture_stale)
            r = SCORE_REASON_STALE_POSTURE;
        else
            r = eval_posture_check(ck, in);
        if (r != SCORE_PASS)
            note_failure(cfg, in, i, r, &fail, &graced, reason, until);
    }

    /* The device-level verdicts come first in the list: they matter most. */
    if (status == INVENTORY_STATUS_LOST || status == INVENTORY_STATUS_STOLEN) {
        res->flags |= SCORE_F_LOST;
        add_failure(res, "device_lost", sizeof("device_lost") - 1, remediation_lost,
                    sizeof(remediation_lost) - 1, SCORE_REASON_LOST, 1, 0, 0, 0);
    }
    if (in->record == NULL) {
        res->flags |= SCORE_F_UNKNOWN_DEVICE;
        add_failure(res, "device_unknown", sizeof("device_unknown") - 1, remediation_unknown,
                    sizeof(remediation_unknown) - 1, SCORE_REASON_NO_RECORD, 1, 0, 0, 0);
    }
    res->raw_failing = fail;
    /* A grace period holds while now <= until (in_grace()). */
    for (m = graced; m != 0; m &= m - 1)
        valid_until_min(res, until[low_bit(m)]);
    /* Failures that count (not in grace) cost their weight. */
    counted = fail & ~graced;
    for (m = counted; m != 0; m &= m - 1)
        lost_weight += cfg->checks[low_bit(m)].weight;
    /* Hard failures before soft ones, each in config order. */
    hard = counted & cfg->hard_mask;
    hard_fail = hard != 0;
    for (m = hard; m != 0; m &= m - 1) {
        const struct score_check *ck;
        i = low_bit(m);
        ck = &cfg->checks[i];
        add_failure(res, ck->id, ck->id_len, ck->remediation, ck->remediation_len, reason[i], 1,
                    ck->weight, 0, 0);
    }
    for (m = fail & ~hard; m != 0; m &= m - 1) {
        const struct score_check *ck;
        int g;
        i = low_bit(m);
        ck = &cfg->checks[i];
        g = (graced >> i) & 1;
        add_failure(res, ck->id, ck->id_len, ck->remediation, ck->remediation_len, reason[i],
                    ck->hard, ck->weight, g, g ? until[i] : 0);
    }

    /* total_weight is the sum of all weights (0 or 100). */
    res->score = cfg->total_weight == 0 ? 100 : cfg->total_weight - lost_weight;
    for (tier = (int)cfg->ntiers - 1; tier > 0; tier--)
        if (cfg->tiers[tier].min_score <= res->score)
            break;
    if (in->record == NULL && tier > cfg->unknown_device_tier)
        tier = cfg->unknown_device_tier;
    if (hard_fail) {
        res->flags |= SCORE_F_HARD_FAIL;
        if (in->record == NULL)
            tier = 0;
        else if (tier > cfg->remediation_tier)
            tier = cfg->remediation_tier;
    }
    if (res->flags & SCORE_F_LOST)
        tier = 0;
    if (in->posture == NULL)
        res->flags |= SCORE_F_NO_POSTURE;
    if (posture_stale)
        res->flags |= SCORE_F_STALE_POSTURE;
    if (in->inventory_stale)
        res->flags |= SCORE_F_STALE_INVENTORY;
    res->stale = posture_stale || in->inventory_stale;
    res->tier = tier;
    res->tier_name = cfg->tiers[tier].name;
}

/* ---- grace state -------------------------------------------------------- */

void score_grace_init(struct score_grace *g)
{
    memset(g, 0, sizeof(*g));
}

int score_grace_update(const struct score_config *cfg, struct score_grace *g,
                       const struct score_result *res, int64_t now)
{
    struct score_grace next;
    const struct score_grace_entry *e;
    uint32_t want;
    size_t i;
    int changed;

    /*
     * The usual answer, without building anything: unchanged when exactly
     * the failing graced checks have an entry (what the rebuild below
     * would find: the same count, every id present, since kept).
     */
    want = res->raw_failing & cfg->grace_mask;
    if ((size_t)__builtin_popcount(want) == g->n) {
        for (; want != 0; want &= want - 1)
            if (grace_find(g, cfg->checks[low_bit(want)].id) == NULL)
                break;
        if (want == 0)
            return 0;
    }
    /* Rebuilt from the config, so entries of removed checks drop out. */
    score_grace_init(&next);
    for (i = 0; i < cfg->nchecks && next.n < SCORE_MAX_GRACE; i++) {
        const struct score_check *ck = &cfg->checks[i];
        if (ck->grace <= 0 || !(res->raw_failing & (1u << i)))
            continue;
        e = grace_find(g, ck->id);
        memcpy(next.e[next.n].check, ck->id, sizeof(ck->id));
        next.e[next.n].since = e ? e->since : now;
        next.n++;
    }
    changed = next.n != g->n;
    for (i = 0; !changed && i < next.n; i++) {
        e = grace_find(g, next.e[i].check);
        changed = e == NULL || e->since != next.e[i].since;
    }
    if (changed)
        *g = next;
    return changed;
}

int score_grace_to_json(const struct score_grace *g, char *buf, size_t len)
{
    char t[POSTURE_TIME_MAX];
    size_t i, off = 0;
    int n;

    if (len < 3)
        return -1;
    buf[off++] = '{';
    for (i = 0; i < g->n && i < SCORE_MAX_GRACE; i++) {
        if (!valid_name(g->e[i].check, strnlen(g->e[i].check, sizeof(g->e[i].check))) ||
            posture_time_format(g->e[i].since, t, sizeof(t)) == -1)
            return -1;
        n = snprintf(buf + off, len - off, "%s\"%s\":\"%s\"", i ? "," : "", g->e[i].check, t);
        if (n < 0 || (size_t)n >= len - off)
            return -1;
        off += (size_t)n;
    }
    if (off + 2 > len)
        return -1;
    buf[off++] = '}';
    buf[off] = '\0';
    return (int)off;
}

int score_grace_from_json(const char *data, size_t len, struct score_grace *g, char *err,
                          size_t errlen)
{
    struct score_ctx cx = {"grace", err, errlen};
    struct score_grace tmp;
    json_error_t jerr;
    json_t *root, *v;
    const char *key;
    char p[64], got[48];
    int rc = -1;

    score_grace_init(&tmp);
    root = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL)
        return score_fail(&cx, "$", "JSON syntax error at line %d column %d: %s", jerr.line,
                          jerr.column, jerr.text);
    if (!json_is_object(root)) {
        score_fail(&cx, "$", "expected an object, got %s", score_describe(root, got, sizeof(got)));
        goto err;
    }
    if (json_object_size(root) > SCORE_MAX_GRACE) {
        score_fail(&cx, "$", "more than %d entries", SCORE_MAX_GRACE);
        goto err;
    }
    json_object_foreach(root, key, v)
    {
        struct score_grace_entry *e = &tmp.e[tmp.n];
        snprintf(p, sizeof(p), "$.%.40s", key);
        if (!valid_name(key, strlen(key))) {
            score_fail(&cx, p, "expected a check id");
            goto err;
        }
        if (!json_is_string(v) ||
            posture_time_parse(json_string_value(v), json_string_length(v), &e->since) == -1) {
            score_fail(&cx, p, "expected an RFC 3339 time, got %s",
                       score_describe(v, got, sizeof(got)));
            goto err;
        }
        memcpy(e->check, key, strlen(key) + 1);
        tmp.n++;
    }
    *g = tmp;
    rc = 0;
err:
    json_decref(root);
    return rc;
}
