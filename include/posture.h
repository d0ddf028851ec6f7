/*
 * posture.h - posture reports: what the agent on a device says about itself.
 *
 * Pure: bytes in, a fixed-size struct out. No clock (the caller passes now),
 * no I/O, no globals. The schema is documented in docs/posture.md.
 *
 * struct posture is public on purpose (like struct conf): it is plain data
 * the proxy keeps one of per device, copies by value and persists. It holds
 * no pointers, so it never refers back into the request that carried it.
 */
#ifndef ZT_POSTURE_H
#define ZT_POSTURE_H

#include <stddef.h>
#include <stdint.h>

#include "device_id.h"

#define POSTURE_MAX_BYTES 16384        /* a report larger than this is refused */
#define POSTURE_MAX_SKEW_S 300         /* collected_at at most 5 min in the future */
#define POSTURE_MAX_AGE_S (30 * 86400) /* and at most 30 days in the past */
#define POSTURE_MAX_DAYS_SINCE_PATCH 36500
#define POSTURE_MAX_UPTIME_S 3153600000LL /* 100 years */
#define POSTURE_AGENT_VERSION_MAX 31
#define POSTURE_OS_NAME_MAX 31
#define POSTURE_OS_VERSION_MAX 63
#define POSTURE_KERNEL_MAX 127
#define POSTURE_JSON_MAX 2048 /* posture_to_json() never needs more */
#define POSTURE_TIME_MAX 32   /* posture_time_format() output, with the NUL */

/* A yes/no fact the agent may not be able to establish. */
enum posture_tri {
    POSTURE_UNKNOWN = 0, /* "unknown": scored as failing, never guessed */
    POSTURE_NO,
    POSTURE_YES
};

struct posture {
    int has_device_id; /* device_id was present in the report */
    char device_id[DEVICE_ID_MAX + 1];
    int64_t collected_at; /* Unix seconds (fraction dropped), from the agent */
    int64_t received_at;  /* Unix seconds, the now passed to posture_parse() */
    char agent_version[POSTURE_AGENT_VERSION_MAX + 1];
    char os_name[POSTURE_OS_NAME_MAX + 1];       /* lower case: "debian", "macos" */
    char os_version[POSTURE_OS_VERSION_MAX + 1]; /* "12.4" */
    char kernel[POSTURE_KERNEL_MAX + 1];         /* "" when not reported */
    enum posture_tri disk_encryption;
    enum posture_tri firewall;
    enum posture_tri screen_lock;
    enum posture_tri auto_updates;
    int32_t days_since_patch; /* -1: "unknown" */
    int64_t uptime_seconds;   /* -1: not reported */
};

/*
 * Parse and validate a report POSTed by an agent. now is the receive time
 * (Unix seconds): it becomes out->received_at and bounds collected_at (at
 * most POSTURE_MAX_SKEW_S ahead, at most POSTURE_MAX_AGE_S behind).
 * Returns 0 and fills *out, or -1, leaves *out unspecified and writes one
 * line into err, e.g.
 *   posture: $.disk_encryption: expected true, false or "unknown", got 3
 * If the report names a device_id, the caller must check that it equals the
 * id of the certificate the report came over.
 */
int posture_parse(const char *data, size_t len, int64_t now, struct posture *out, char *err,
                  size_t errlen);

/*
 * Serialise for the state directory: one JSON object, no newline, NUL
 * terminated, the report schema plus "received_at". buf should hold
 * POSTURE_JSON_MAX bytes. Returns the length written (without the NUL), or
 * -1 if buf is too small or p is not valid.
 */
int posture_to_json(const struct posture *p, char *buf, size_t len);

/*
 * Read back a line written by posture_to_json(). Same strict validation as
 * posture_parse() except the clock checks (a persisted report may be old:
 * staleness is the scorer's business). 0, or -1 with err set.
 */
int posture_from_json(const char *data, size_t len, struct posture *out, char *err, size_t errlen);

/*
 * RFC 3339 date-time ("2024-05-01T12:00:00Z", "...T14:00:00.25+02:00",
 * years 0001-9999) to Unix seconds, fraction dropped. n is the length of s.
 * 0, or -1 if s is not exactly one valid timestamp.
 */
int posture_time_parse(const char *s, size_t n, int64_t *out);

/* Unix seconds to "YYYY-MM-DDTHH:MM:SSZ". out holds POSTURE_TIME_MAX. 0 or -1. */
int posture_time_format(int64_t t, char *out, size_t len);

#endif
