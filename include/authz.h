/*
 * authz.h - the authorization runtime: live rules, directory and GeoIP
 * around the pure rules engine (policy.h), per-request evaluation, audit.
 *
 * What it does (docs/policy.md, "Operating rules"):
 *   - loads the rules file, the group directory (a file, or an http(s) URL
 *     polled through httpc) and the GeoIP database, and publishes them as
 *     one immutable, refcounted snapshot;
 *   - watches the files (stat() once a second from a timer on the main
 *     loop: inode, size, mtime, ctime) and polls the URL; a loader thread
 *     reads, parses, compiles and publishes, so no loop ever waits for it;
 *   - a bad file keeps the last good snapshot, logs why and counts it;
 *   - per request, on any worker: authz_evaluate() resolves the client
 *     address (X-Forwarded-For only from trusted_proxies), looks up the
 *     country, the user's live groups, and asks policy_eval(). No lock is
 *     held across it and nothing is allocated: each thread keeps a
 *     reference to the snapshot it last used and only swaps it (a short
 *     mutex) when a newer one has been published;
 *   - owns the audit log writer (auditlog.h): started, reopened and stopped
 *     with the runtime, to the config's policy.audit_log.
 *
 * Without a "policy" section there are no rules: authz_enabled() is 0 and
 * the proxy lets every verified device and identity through (logged as a
 * warning at start).
 *
 * authz_start(), _reconfigure() and _stop() run on the main thread; the
 * rest on any thread once authz_start() returned.
 */
#ifndef ZT_AUTHZ_H
#define ZT_AUTHZ_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <jansson.h>

#include "policy.h"

struct conf;
struct event_base;
struct evbuffer;
struct devtrust_verdict;
struct directory;

#define AUTHZ_GROUPS_MAX 4096 /* bytes of out->groups, NUL included */
#define AUTHZ_ERR_MAX 1024    /* room for any error line of this module */
#define AUTHZ_XFF_HOPS_MAX 32 /* X-Forwarded-For entries walked from the right */
#define AUTHZ_PATH_MAX 8192   /* longer paths: path conditions are unknown (fail closed) */

/*
 * For --check and before a reload is accepted: compile the rules file
 * against the config's routes, the device-trust tiers and the directory
 * (when the directory is a file), and open the GeoIP database. Errors name
 * the file and the JSON path (policy_compile()'s line). No section: 0.
 * Does file I/O: main thread, never a worker loop. 0, or -1 and err.
 */
int authz_validate(const struct conf *c, char *err, size_t errlen);

/*
 * Start, once, on the main thread; main_base is its loop (the file timer
 * and the directory poller run there). Loads the rules, a file directory
 * and the GeoIP database now: a failure is returned (-1, err) and nothing
 * runs. A URL directory is fetched in the background; until it arrives no
 * user is in any group. Starts the loader and audit log threads.
 */
int authz_start(struct event_base *main_base, const struct conf *c, char *err, size_t errlen);

/*
 * SIGHUP with a new config (it passed authz_validate()): re-reads the rules,
 * a file directory and the GeoIP database now and swaps them in together
 * with the new routes, tiers and trusted proxies; reopens the audit log
 * (log rotation). A changed directory URL keeps the current directory until
 * the new URL delivers. On failure (-1, err) everything running is kept.
 * Adding or removing the section turns the rules on or off.
 */
int authz_reconfigure(const struct conf *c, char *err, size_t errlen);

/*
 * authz_reconfigure() in two steps, so that the loading can run off the
 * main thread (main.c does it on its low-priority reload thread):
 *
 * authz_prepare() loads and validates everything c names (the same checks
 * as authz_validate()) on the calling thread, any thread, while the running
 * state goes on; an input that did not change is not loaded again: rules
 * whose text, routes, tiers and directory are the running ones keep the
 * running compiled policy, a file directory with the running bytes
 * (SHA-256) and a GeoIP file with the running device, inode, size, mtime
 * and ctime are shared too (refcounted). 0 and *out, or -1 and err.
 *
 * authz_commit() (main thread) swaps *p in as authz_reconfigure() does and
 * frees p whatever happens; -1 and err if it could not (the running state
 * is kept). authz_prepared_free() drops an uncommitted one (any thread).
 */
struct authz_prepared;
int authz_prepare(const struct conf *c, struct authz_prepared **out, char *err, size_t errlen);
int authz_commit(struct authz_prepared *p, char *err, size_t errlen);
void authz_prepared_free(struct authz_prepared *p);

/* Main thread: stop the timers, the loader and the audit writer (flushing
 * it), drop every snapshot. authz_start() may follow. */
void authz_stop(void);

/* Is a policy configured? 0: no rules, allow every verified request. */
int authz_enabled(void);
/* policy.deny_details: may the deny page show the rule and its reasons? */
int authz_deny_details(void);
/* Changes whenever the rules, the directory or the GeoIP database change
 * (for re-evaluating long-lived connections such as websockets). */
uint64_t authz_generation(void);

/* One request. Zero it, then fill in what is known. Strings are
 * NUL-terminated unless a length is given, and only read during the call. */
struct authz_input {
    const char *route; /* route name (from the config) */
    const char *user_sub, *user_email;
    int has_identity; /* 1: user_sub/user_email are a verified login */
    int64_t auth_time;
    int mfa;
    const char *device_id;
    int device_tier;  /* ordinal (authz_tier_index()); -1 unknown */
    int device_score; /* 0..100, -1 unknown */
    int device_stale; /* device trust data too old: device conditions fail closed */
    const char *device_owner;
    const struct policy_attr *attrs;
    size_t nattrs;
    const struct sockaddr *peer; /* TCP peer (AF_INET/AF_INET6), NULL unknown */
    /* X-Forwarded-For as sent (several header lines joined with ","), or
     * NULL. Believed only when peer is in trusted_proxies; then the client
     * is the right-most address that is not a trusted proxy. */
    const char *xff;
    size_t xff_len;
    const char *method;
    const char *path; /* normalised, NUL-terminated (path_len = strlen); a query is cut off */
    size_t path_len;
    int64_t now; /* Unix seconds */
    /* Bytes of group names for out->groups (X-ZT-Groups); 0: all that fit
     * in AUTHZ_GROUPS_MAX - 1. Whole names only: a name that does not fit
     * is left out and counted in groups_dropped. */
    size_t groups_budget;
    /* Admin dry-runs (explain, what-if). NULL: the live directory / GeoIP.
     * groups_override: comma-separated group names used instead of the
     * directory's (names the directory does not know are ignored: nobody
     * can be in them; needs has_identity like any group condition).
     * country_override: ISO alpha-2 (or "unknown") instead of the lookup. */
    const char *groups_override;
    const char *country_override;
};

/*
 * The outcome. Strings in decision (rule id, version, deny message,
 * monitor rule ids) point into the rules snapshot this thread holds: valid
 * until this thread's next authz_evaluate() or authz_thread_release().
 */
struct authz_result {
    struct policy_decision decision;
    char client_ip[48]; /* "" when not known (a bad X-Forwarded-For from a trusted proxy) */
    char country[8];    /* ISO alpha-2, "unknown" (not found / no GeoIP), "" no address */
    uint32_t asn;       /* 0: not known (the database has no ASN data) */
    char groups[AUTHZ_GROUPS_MAX]; /* "eng,staff": the user's live groups, sorted */
    size_t groups_dropped;
    /* The subset of the user's groups that the rules applying to the route
     * name (policy_route_group()), sorted, same budget: what the upstream
     * receives unless the route says "forward_groups": "all", so an app
     * does not learn every group of every user. */
    char route_groups[AUTHZ_GROUPS_MAX];
    size_t route_groups_dropped;
    uint64_t eval_ns;
};

/*
 * Decide one request (any thread, lock-free on the common path, no
 * allocation). Without a policy: ALLOW by rule "no-policy"; before
 * authz_start() or after authz_stop(): DENY by "authz-not-running". Every
 * request is evaluated: nothing is cached between requests.
 */
void authz_evaluate(const struct authz_input *in, struct authz_result *out);

/*
 * The same with the rules p instead of the live ones (explain, what-if):
 * the live directory, GeoIP and settings resolve the context. p must come
 * from authz_compile_text() (or be the live rules); the route is matched
 * by name. Strings in out->decision point into p.
 */
void authz_evaluate_policy(const struct policy *p, const struct authz_input *in,
                           struct authz_result *out);

/*
 * Explain (policy_explain_json()) in with p, or the live rules when p is
 * NULL, resolving the context exactly like authz_evaluate() (address,
 * country, groups and their overrides). out gets the resolved client
 * address, country, groups and the decision (its strings are valid while p,
 * or this thread's snapshot, is). A new object (caller owns), or NULL with
 * err ("no policy configured", out of memory).
 */
json_t *authz_explain_json(const struct policy *p, const struct authz_input *in,
                           struct authz_result *out, char *err, size_t errlen);

/*
 * Compile a proposed rules document against the live routes, tiers and
 * directory without publishing it. A policy (refcount 1; policy_unref()),
 * or NULL and one line in err ("rules: $.rules[0] (id \"a\").when: ...").
 * Main thread (loads time zones); thread-safe.
 */
struct policy *authz_compile_text(const char *text, size_t len, char *err, size_t errlen);

/*
 * Validate a proposed rules document and report every error found as a new
 * JSON array in *errors (caller owns; [] when valid) of
 *   {"rule": "<id>"|null, "path": "$.rules[3].when.all[1]", "message": "..."}
 * What is found: a JSON syntax error alone (nothing else can be checked);
 * else the first top-level error (unknown key, bad "version", "rules" not
 * an array); the first error of each rule (every rule is compiled on its
 * own against the live routes, tiers and directory); duplicate ids; and,
 * when none of these was found, the whole document's first error (limits).
 * 0 valid, 1 invalid, -1 out of memory / no policy configured (*errors
 * then holds one entry saying so).
 */
int authz_validate_text(const char *text, size_t len, json_t **errors);

/*
 * Validate, compile and publish text as the live rules (the next
 * authz_evaluate() on any thread uses them) and replace the rules file
 * atomically (temporary file, fsync, rename, fsync of the folder), so a
 * restart or SIGHUP keeps them; the file watcher then sees the same bytes
 * and does nothing. Serialised with every other load. 0, or -1 with one
 * line in err and nothing changed (neither the file nor the live rules).
 */
int authz_install_rules(const char *text, size_t len, char *err, size_t errlen);

/* The live rules: a copy of the text they were compiled from (caller frees)
 * and its length, or NULL when there is no policy (or out of memory). */
char *authz_rules_text(size_t *len);

/* Is user (a subject or e-mail) in group (directly or nested) in the live
 * directory? 1 yes, 0 no (no directory, no such user or group). */
int authz_user_in_group(const char *user, const char *group);

/* Tier name (device trust) -> ordinal in the live rules' tiers, -1 unknown. */
int authz_tier_index(const char *name);

/*
 * Append the audit line of a decision to buf (a worker's own buffer; hand
 * it over with auditlog_submit()). v, if not NULL, gives the tier name and
 * the failing device checks. Same thread as the authz_evaluate() that
 * produced r. Nothing when the audit log is off.
 */
void authz_audit(struct evbuffer *buf, const char *request_id, const struct authz_input *in,
                 const struct devtrust_verdict *v, const struct authz_result *r);

/* Drop this thread's snapshot reference (a worker that exits; threads that
 * end release it anyway through a thread-specific destructor). */
void authz_thread_release(void);

/*
 * The admin API (proxy/admin_data.c). authz_directory_ref(): a reference to
 * the live directory snapshot (directory_unref() it), NULL when none is
 * loaded. authz_directory_reload(): re-read the directory file now and
 * publish it before returning (the next request sees it), rebinding the
 * rules like a reload from the file timer does. Main thread (file I/O).
 * 0, or -1 and err (not a file directory, unreadable, refused: the last
 * good one stays).
 */
struct directory *authz_directory_ref(void);
int authz_directory_reload(char *err, size_t errlen);

/* For /metrics and /readyz. */
struct authz_stats {
    int enabled;
    uint64_t generation;
    size_t rules;
    char rules_version[129];
    uint64_t rules_loads, rules_refused;
    int directory_loaded;
    size_t directory_users, directory_groups;
    char directory_version[129];
    uint64_t directory_loads, directory_refused, directory_unchanged, directory_fetch_errors;
    uint64_t directory_rebind_failures; /* rules naming a group the directory lost */
    int64_t directory_fresh_at;         /* Unix s: last loaded or confirmed unchanged, 0 never */
    int geoip_loaded;
    uint64_t geoip_loads, geoip_refused;
    char last_error[AUTHZ_ERR_MAX]; /* the last refusal or fetch error, "" none */
};
void authz_stats(struct authz_stats *out);

#endif
