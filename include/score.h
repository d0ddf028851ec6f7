/*
 * score.h - device trust scoring: inventory record + posture -> score and tier.
 *
 * Pure: the caller passes every input, the clock included. score_eval()
 * allocates nothing and touches no globals, so it runs per request. The
 * policy (tiers, checks, weights) is a config section, documented with its
 * defaults in docs/device-trust.md.
 */
#ifndef ZT_SCORE_H
#define ZT_SCORE_H

#include <stddef.h>
#include <stdint.h>

#include "inventory.h"
#include "posture.h"

struct json_t; /* jansson */

#define SCORE_MAX_TIERS 8
#define SCORE_MAX_CHECKS 32
#define SCORE_MAX_FAILURES (SCORE_MAX_CHECKS + 2) /* + device_unknown, device_lost */
#define SCORE_MAX_GRACE 8                         /* checks with a grace period */
#define SCORE_NAME_MAX 31                         /* check ids and tier names */
#define SCORE_REMEDIATION_MAX 255
#define SCORE_VERSION_MAX 31
#define SCORE_OS_MIN_MAX 16 /* entries in an os_version_min "min" map */
#define SCORE_GRACE_JSON_MAX 512

struct score_config; /* opaque, immutable, refcounted */

/*
 * Parse the scoring section from JSON text. text NULL (or len 0) means the
 * section is absent: the built-in default policy. Keys missing from the
 * section take their defaults. name prefixes errors. Returns 0 and *out
 * (refcount 1: score_config_unref()), or -1 with *out untouched and one line
 * in err, e.g. "ztproxy.json: $.checks[2].weight: expected an integer 0..100, got -5".
 */
int score_config_parse(const char *text, size_t len, const char *name, struct score_config **out,
                       char *err, size_t errlen);

/*
 * The same from an already parsed jansson value (a section of the proxy
 * config). section NULL: defaults. jpath is the section's path for errors,
 * e.g. "$.device_trust". The section is only read, never kept.
 */
int score_config_from_json(const struct json_t *section, const char *name, const char *jpath,
                           struct score_config **out, char *err, size_t errlen);

struct score_config *score_config_ref(struct score_config *cfg);
void score_config_unref(struct score_config *cfg); /* NULL ok */

/* Tiers, ordinal 0 (lowest) .. count - 1. */
size_t score_config_tier_count(const struct score_config *cfg);
const char *score_config_tier_name(const struct score_config *cfg,
                                   size_t ordinal);                        /* NULL: out of range */
int score_config_tier_min(const struct score_config *cfg, size_t ordinal); /* -1: out of range */
int score_config_tier_find(const struct score_config *cfg, const char *name); /* ordinal or -1 */

/* The configured checks, in config order (for the admin API's breakdown).
 * Strings point into the config. 0, or -1 when i is out of range. */
struct score_check_info {
    const char *id;
    const char *type; /* "disk_encryption", ... */
    int weight;
    int hard;
    int64_t grace; /* seconds, 0: none */
    const char *remediation;
};
size_t score_config_check_count(const struct score_config *cfg);
int score_config_check_at(const struct score_config *cfg, size_t i, struct score_check_info *out);

/*
 * Per-device grace state: when each graced check started failing. The caller
 * owns it (one per device), updates it after each score_eval() with
 * score_grace_update() and persists it with score_grace_to_json(). Entries
 * are keyed by check id, so they survive config reloads that reorder checks.
 */
struct score_grace_entry {
    char check[SCORE_NAME_MAX + 1];
    int64_t since; /* Unix seconds: first seen failing */
};

struct score_grace {
    size_t n;
    struct score_grace_entry e[SCORE_MAX_GRACE];
};

void score_grace_init(struct score_grace *g);

enum score_reason {
    SCORE_REASON_FAILED = 0,      /* the value is known and does not pass */
    SCORE_REASON_UNKNOWN,         /* "unknown", unparseable, or no minimum for this OS */
    SCORE_REASON_NO_POSTURE,      /* no posture report for this device */
    SCORE_REASON_STALE_POSTURE,   /* the report fails a posture_max_age check */
    SCORE_REASON_NO_RECORD,       /* the device is not in the inventory */
    SCORE_REASON_STALE_INVENTORY, /* the feed is older than its max_stale */
    SCORE_REASON_NO_USER,         /* owner_is_user without a user */
    SCORE_REASON_LOST             /* device_lost: lost or stolen */
};

/* "failed", "unknown", "no_posture", ... for logs and explain output. */
const char *score_reason_name(enum score_reason r);

struct score_input {
    const struct inventory_record *record; /* NULL: not in the inventory */
    enum inventory_status override;        /* admin override; INVENTORY_STATUS_NONE: none */
    int inventory_stale;                   /* the feed is older than its max_stale */
    const struct posture *posture;         /* NULL: no report */
    int64_t now;                           /* Unix seconds */
    const char *user_email;                /* for owner_is_user; NULL: unknown */
    const char *user_subject;              /* likewise */
    const struct score_grace *grace;       /* NULL: grace periods are not applied */
};

struct score_failure {
    const char *id;          /* check id, or "device_unknown" / "device_lost" */
    const char *remediation; /* what the person should do */
    enum score_reason reason;
    int hard;               /* a hard requirement (caps the tier) */
    int weight;             /* points it costs (0 while in grace) */
    int in_grace;           /* failing but within its grace period: not counted */
    int64_t grace_until;    /* in_grace: counts from after this time */
    size_t id_len;          /* strlen(id), precomputed */
    size_t remediation_len; /* strlen(remediation), precomputed */
};

#define SCORE_F_UNKNOWN_DEVICE 0x01  /* not in the inventory */
#define SCORE_F_LOST 0x02            /* lost or stolen (feed or override) */
#define SCORE_F_HARD_FAIL 0x04       /* a hard requirement failed (outside grace) */
#define SCORE_F_NO_POSTURE 0x08      /* no posture report */
#define SCORE_F_STALE_POSTURE 0x10   /* the report is too old */
#define SCORE_F_STALE_INVENTORY 0x20 /* the inventory feed is too old */

/*
 * Pointers in a result point into the config: keep a reference to the
 * config for as long as you use the result.
 */
struct score_result {
    int score;             /* 0..100 */
    int tier;              /* ordinal */
    const char *tier_name; /* into the config */
    unsigned flags;        /* SCORE_F_* */
    int stale;             /* an input was stale (posture or inventory) */
    size_t nfailed;        /* failures, the most important first */
    struct score_failure failed[SCORE_MAX_FAILURES];
    uint32_t raw_failing; /* bit i: check i fails, grace ignored (for score_grace_update) */
    /*
     * The clock's part: with every other input the same, the result holds
     * for any now' in [now, valid_until] (a passing posture_max_age check
     * or a grace period ends after it). INT64_MAX: no time-dependent input.
     */
    int64_t valid_until;
};

/*
 * Score one device. Never fails and never allocates: every input may be
 * missing and is then scored as failing, never guessed. Rules, in order:
 * score = sum of the weights of passing checks (100 if no weights);
 * tier = highest tier whose min_score <= score; not in the inventory ->
 * at most unknown_device_tier; a failed hard check -> at most
 * remediation_tier (the lowest tier if not in the inventory); lost or
 * stolen (override first, then the feed) -> the lowest tier.
 */
void score_eval(const struct score_config *cfg, const struct score_input *in,
                struct score_result *res);

/*
 * After score_eval(): start the clock for graced checks that began failing
 * and forget those that pass (or are no longer configured). res must come
 * from score_eval() with the same cfg; now is the same time. Returns 1 if g
 * changed (persist it), 0 if not.
 */
int score_grace_update(const struct score_config *cfg, struct score_grace *g,
                       const struct score_result *res, int64_t now);

/*
 * Grace state as one JSON object, {"disk":"2024-05-01T12:00:00Z",...}, NUL
 * terminated, no newline. buf should hold SCORE_GRACE_JSON_MAX bytes.
 * Returns the length, or -1 if it does not fit.
 */
int score_grace_to_json(const struct score_grace *g, char *buf, size_t len);
/* The reverse; strict. 0, or -1 with err set. */
int score_grace_from_json(const char *data, size_t len, struct score_grace *g, char *err,
                          size_t errlen);

/*
 * Compare dotted versions numerically per component ("10.0.19045" >
 * "10.0.9999", "12" == "12.0"). Reading stops at the first character that
 * is neither a digit nor a dot after a digit ("6.1.0-18-amd64" is 6.1.0).
 * Sets *out to -1, 0 or 1 and returns 0; returns -1 if either does not
 * start with a digit.
 */
int score_version_cmp(const char *a, const char *b, int *out);

#endif
