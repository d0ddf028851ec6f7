/*
 * devtrust.h - the device-trust runtime: the inventory feed (file or URL),
 * posture reports from the agents, admin overrides, and per-request scoring.
 *
 * Builds on the pure modules inventory.h, posture.h and score.h and adds
 * the I/O and threads around them (docs/device-trust.md, "Runtime"):
 *
 *   - the main thread's event loop polls the feed (stat() of a file once a
 *     second, or HTTP through httpc) and hands the bytes to a loader thread,
 *     which parses them and publishes an immutable, refcounted snapshot;
 *   - workers call devtrust_evaluate() and devtrust_posture_submit() per
 *     request: they take only short mutexes that no slow operation holds,
 *     and never do file or network I/O; each worker keeps its last
 *     verdicts (64 per thread, freed with devtrust_thread_release() or at
 *     thread exit), reused only while every input is the same, so a change
 *     still takes effect on the very next request;
 *   - a writer thread appends posture reports and grace state to
 *     state_dir/posture.log (fsync'd, compacted on start and when it grows)
 *     and rewrites state_dir/overrides.json.
 *
 * Module state is global (one device-trust runtime per process).
 * devtrust_start(), _reconfigure() and _stop() are called from the main
 * thread only; the rest from any thread once devtrust_start() returned.
 */
#ifndef ZT_DEVTRUST_H
#define ZT_DEVTRUST_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct conf;

#define DEVTRUST_MAX_FAILING 16
#define DEVTRUST_MAX_ATTRS 24
#define DEVTRUST_MAX_DEVICES 1000000 /* devices with posture, grace or override state */
#define DEVTRUST_ERR_MAX 512         /* room for any error string of this module */

/*
 * Validate the config's "device_trust" section (c->device_trust; NULL means
 * defaults: no inventory). Errors read "file: $.device_trust.x.y: what".
 * No I/O beyond checking that the files named exist and are readable (and
 * that key and token files are private). 0, or -1 and one line in err.
 */
int devtrust_validate(const struct conf *c, char *err, size_t errlen);

/*
 * Start, once, on the main thread, with base the main thread's loop:
 * load state_dir/posture.log and overrides.json (compacting the log), load
 * a file feed now, start polling the feed source on base, start the loader
 * and writer threads. A feed that cannot be loaded at start is not fatal:
 * the proxy runs with no inventory (checks that need it fail closed) and
 * devtrust_feed_status() says why. An unusable state_dir is fatal.
 * Needs libevent thread support (evthread_use_pthreads()) enabled before
 * base was created. 0, or -1 and err.
 */
int devtrust_start(struct event_base *base, const struct conf *c, char *err, size_t errlen);

/*
 * Apply a reloaded config (SIGHUP, main thread): scoring, rate limit,
 * max_stale, allow_empty, format at once; a changed feed source (file, url
 * or any of its fetch options) is restarted, keeping the last good snapshot
 * until the new source delivers. Removing the section drops the inventory.
 * A changed state_dir needs a restart (logged). c must have passed
 * devtrust_validate(). 0, or -1 and err (the running config is kept).
 */
int devtrust_reconfigure(const struct conf *c, char *err, size_t errlen);

/* Main thread: stop polling, join the loader, flush and join the writer,
 * free everything. devtrust_start() may be called again afterwards. */
void devtrust_stop(void);

/* Drop the calling thread's references to the published snapshots (a
 * worker that exits; threads that end release them anyway). */
void devtrust_thread_release(void);

/* The verdict on one device for one request. Plain data: no pointers. */
struct devtrust_verdict {
    int known; /* in the inventory */
    int tier;  /* ordinal in the configured tiers */
    char tier_name[32];
    int score;           /* 0-100 */
    int inventory_stale; /* the last good feed is older than max_stale (or none loaded): checks
                            that need it failed closed */
    int posture_stale;   /* the latest report fails a posture_max_age check */
    char status[16];     /* active/lost/stolen/retired/"" (after any admin override) */
    char owner[256];
    /* Failures that count (not those still in their grace period), the most
     * important first; at most DEVTRUST_MAX_FAILING. */
    size_t nfailing;
    struct {
        char id[48];
        char remediation[256];
        int hard;
    } failing[DEVTRUST_MAX_FAILING];
    /* platform, os_version, model, managed ("true"/"false"), then the feed's
     * extra fields in feed order; an extra field whose name or value does not
     * fit is left out (absent, never truncated). Numbers are decimal. */
    size_t nattrs;
    struct {
        char name[48];
        char value[128];
    } attrs[DEVTRUST_MAX_ATTRS];
};

/*
 * Per request, any thread, never blocks on I/O: score device_id (from the
 * certificate; NULL or "" is an unknown device) for user (the signed-in
 * user's e-mail or subject, for owner_is_user; NULL: none) at now (Unix
 * seconds). May record grace state (queued for the writer).
 */
void devtrust_evaluate(const char *device_id, const char *user, int64_t now,
                       struct devtrust_verdict *out);

/*
 * The same evaluation (and the same grace bookkeeping), but out gets only
 * known, tier, tier_name, score, the stale flags, status and owner:
 * nfailing and nattrs are 0 and failing[] and attrs[] are not filled. For
 * a request that needs the tier alone (no rules configured: the tier goes
 * to the upstream, nothing else is read); it saves copying the failing
 * checks' remediation texts and the attributes.
 */
void devtrust_evaluate_brief(const char *device_id, const char *user, int64_t now,
                             struct devtrust_verdict *out);

/*
 * A posture report POSTed by the agent over the device's own mTLS
 * connection; device_id is the certificate's. Checks, in this order:
 *   413  len > POSTURE_MAX_BYTES (before any parsing)
 *   429  more than rate_limit_per_minute reports from this device (token
 *        bucket: a burst of that many, then one every 60/N s); every
 *        attempt counts, good or bad
 *   400  posture_parse() refused it: err is its line, naming the field
 *   403  the report's device_id names another device
 *   503  the store is full (DEVTRUST_MAX_DEVICES) or the writer is too far
 *        behind (queue full): nothing was stored, the agent should retry
 * 0: stored in memory (the next evaluate sees it) and queued for disk.
 * err gets one line for every non-zero answer (the 400 body).
 */
int devtrust_posture_submit(const char *device_id, const char *body, size_t len, int64_t now,
                            char *err, size_t errlen);

/*
 * The same, for a caller that must not acknowledge a report before it is
 * on disk. With a state_dir, a report that passes every check is stored in
 * memory (in force at once), queued for posture.log, and
 * DEVTRUST_PENDING is returned: cb(cb_arg, ok) is then called exactly once,
 * from the writer thread, after the batch holding it was written and
 * fsync'd (ok 1) or could not be written (ok 0: the disk is full or
 * read-only; the report stays in memory but must not be acknowledged, the
 * agent retries). Without a state_dir, 0 as above and cb is never called.
 * Any other answer: cb is never called.
 */
#define DEVTRUST_PENDING 1
typedef void (*devtrust_persisted_cb)(void *arg, int ok);
int devtrust_posture_submit_cb(const char *device_id, const char *body, size_t len, int64_t now,
                               devtrust_persisted_cb cb, void *cb_arg, char *err, size_t errlen);

/*
 * A report another replica accepted (include/shared.h): text as
 * posture_to_json() wrote it, device_id inside. It was checked against the
 * certificate by the replica that received it; here it is validated again
 * (posture_from_json()) and stored unless this replica already holds a
 * newer (received_at) or the same report. Not rate limited, not published
 * again. 0 stored, 1 kept the one held, -1 and err.
 */
int devtrust_posture_store(const char *report, size_t len, char *err, size_t errlen);

/*
 * Admin override: status "active", "lost", "stolen" or "retired", or NULL
 * to clear. Takes effect on the next evaluate; persisted to
 * state_dir/overrides.json by the writer thread. 0, or -1 and err.
 */
int devtrust_set_override(const char *device_id, const char *status, char *err, size_t errlen);
/* The same, and overrides.json is written and fsync'd before it returns
 * (blocking: the admin API, never a worker loop). -1 and err also when the
 * state directory cannot take it: the override applies in memory, but must
 * not be acknowledged (a device marked stolen would be trusted again after
 * a restart). */
int devtrust_set_override_sync(const char *device_id, const char *status, char *err, size_t errlen);

/*
 * The admin API (main thread; not for workers: these walk the inventory and
 * the store). Each device is scored as for its owner (owner_is_user holds)
 * at now, without recording grace state.
 *
 * devtrust_list(): every device of the live inventory, in feed order, then
 * every device known only from its own state (a posture report or an
 * override). cb gets a summary valid during the call and returns non-zero
 * to stop. 0, or -1 (not started, out of memory).
 *
 * devtrust_device(): one device: cb (may be NULL) gets its summary, and
 * *detail a new object (caller owns) {"checks": [{"id", "type", "ok",
 * "points", "weight", "hard", "remediation", "in_grace", "reason"?,
 * "grace_until"?}], "inventory": {the feed record} | null, "posture":
 * {the latest report, "received"} | null}. 0; 1 when the device is neither
 * in the inventory nor has any state; -1 (not started, invalid id, out of
 * memory).
 */
struct devtrust_summary {
    const char *id;
    const struct devtrust_verdict *v;
    int in_inventory;
    int has_posture;
    int64_t posture_received; /* Unix seconds of the latest report, 0: none */
    int override;             /* an admin status override is set */
};
typedef int (*devtrust_list_cb)(const struct devtrust_summary *s, void *arg);
int devtrust_list(int64_t now, devtrust_list_cb cb, void *arg);
struct json_t;
int devtrust_device(const char *device_id, int64_t now, devtrust_list_cb cb, void *arg,
                    struct json_t **detail);

/* For /readyz: feed age in seconds since it was last confirmed (-1: no
 * inventory loaded), records, last error ("" when the last attempt was good). */
void devtrust_feed_status(int64_t now, int64_t *age, size_t *records, char *err, size_t errlen);

/* For /metrics. */
struct devtrust_stats {
    int configured;           /* a feed source is configured */
    int64_t feed_age;         /* as devtrust_feed_status() */
    int inventory_stale;      /* feed_age > max_stale, or nothing loaded */
    size_t records;           /* devices in the live snapshot */
    uint64_t version;         /* of the live snapshot, 0: none */
    uint64_t loads_ok;        /* new snapshots published */
    uint64_t loads_unchanged; /* 304, or the same bytes again: freshness renewed */
    uint64_t loads_refused;   /* feeds the parser refused (last good kept) */
    uint64_t fetch_errors;    /* file unreadable, HTTP errors, timeouts */
    uint64_t posture_accepted;
    uint64_t posture_refused;     /* 400, 403, 413 */
    uint64_t posture_limited;     /* 429 */
    uint64_t posture_unavailable; /* 503 */
    uint64_t persist_errors;      /* write/fsync failures (state kept in memory) */
    size_t devices;               /* devices with posture/grace/override state */
    char feed_error[DEVTRUST_ERR_MAX];
};
void devtrust_stats(int64_t now, struct devtrust_stats *out);

#endif
