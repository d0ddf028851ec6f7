/*
 * tz.h - named time zones from the system tz database, thread-safe.
 *
 * glibc converts to local time through a process-global zone (TZ/tzset), so
 * it cannot answer "what time is it in Europe/Berlin" from several threads at
 * once. This module reads a TZif file (RFC 8536, version 2 or later: the
 * 64-bit section and the POSIX TZ footer) into an immutable object; after
 * loading, tz_local() is pure, takes no lock and allocates nothing.
 *
 * Instants after the last transition in the file use the footer rule (for
 * example "CET-1CEST,M3.5.0,M10.5.0/3"), so the answer stays right for any
 * year. Leap-second records are ignored (unix time has no leap seconds).
 */
#ifndef ZT_TZ_H
#define ZT_TZ_H

#include <stddef.h>
#include <stdint.h>

#define TZ_NAME_MAX 255
#define TZ_DEFAULT_DIR "/usr/share/zoneinfo"

struct tz; /* opaque, immutable */

/* Local wall time of an instant in a zone. */
struct tz_local {
    int64_t year;
    int month;         /* 1..12 */
    int mday;          /* 1..31 */
    int wday;          /* 0 = Sunday .. 6 = Saturday */
    int hour;          /* 0..23 */
    int minute;        /* 0..59 */
    int second;        /* 0..59 */
    int minute_of_day; /* hour * 60 + minute */
    int32_t utoff;     /* seconds east of UTC in effect */
    int isdst;
};

/*
 * Is name an acceptable zone name? 1..TZ_NAME_MAX bytes of [A-Za-z0-9/_+-.],
 * no leading '/', no empty component, no "." or ".." component. Returns 1 or 0.
 * (Only a syntax check: whether the zone exists is tz_load()'s business.)
 */
int tz_name_valid(const char *name);

/*
 * Load zone name from dir (NULL: TZ_DEFAULT_DIR). Returns a new zone (free
 * with tz_free()), or NULL with a one-line reason in err (e.g. `unknown time
 * zone "Europe/Berln"`). Reads one file; call it at load time, never on a
 * request path.
 */
struct tz *tz_load(const char *dir, const char *name, char *err, size_t errlen);

/*
 * Parse TZif bytes (untrusted: fuzzable). name is kept for tz_name().
 * Returns a new zone or NULL with a reason in err.
 */
struct tz *tz_parse(const unsigned char *data, size_t len, const char *name, char *err,
                    size_t errlen);

/* The name given to tz_load()/tz_parse(). Valid while the zone lives. */
const char *tz_name(const struct tz *z);

/* Convert unix time t to local wall time in z. Pure; 0 ok, -1 if t is out of
 * the supported range (|year| beyond +-1e9). */
int tz_local(const struct tz *z, int64_t t, struct tz_local *out);

void tz_free(struct tz *z);

#endif
