/*
 * decisions.h - the ring of recent decisions (docs/admin-api.md,
 * "Decisions" and "what-if").
 *
 * Every decision decide.c makes is recorded right after authz_evaluate():
 * a fixed-size copy of what the rules saw (route, method, path, user,
 * device tier/score/attributes/owner/staleness, client address, country,
 * the user's groups as evaluated, auth time, MFA) and what they answered
 * (effect, rule, reasons, monitor results). The admin API lists them
 * (GET /api/v1/decisions) and replays them against a proposed rules
 * document (POST /api/v1/whatif).
 *
 * Storage: one ring per worker, each with its own mutex (only its worker
 * writes it, so the lock is uncontended on the hot path; a reader takes it
 * for one slot copy at a time). Slots are preallocated by decisions_start():
 * recording allocates nothing and copies bounded fields into the slot's own
 * buffer. A field that does not fit is left empty and the record is marked
 * incomplete (a what-if replay skips it: it would not see what the live
 * decision saw).
 *
 * Module state is global (one ring set per process). decisions_start() and
 * decisions_stop() run on the main thread while no worker records;
 * decisions_record() on any worker; the readers on any thread.
 */
#ifndef ZT_DECISIONS_H
#define ZT_DECISIONS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <jansson.h>

#include "policy.h"

struct authz_input;
struct authz_result;
struct devtrust_verdict;

#define DECISIONS_MAX 10000000 /* total capacity at most */
#define DECISIONS_BLOB 2048    /* bytes of strings per record */
#define DECISIONS_PATH_MAX 256 /* path bytes kept (longer: cut, record incomplete) */
#define DECISIONS_ATTRS_MAX 32 /* device attributes kept */
#define DECISIONS_LIMIT_MAX 1000

/*
 * Allocate the rings: capacity records in total (0: recording is off),
 * split evenly over nrings rings (one per worker; at least 1). Records
 * already there are dropped. 0, or -1 (out of memory, or capacity above
 * DECISIONS_MAX) with nothing recording.
 */
int decisions_start(size_t capacity, size_t nrings);

/* Free the rings. No worker may be recording. */
void decisions_stop(void);

/* Total capacity in use (0: off). */
size_t decisions_capacity(void);

/*
 * Record one decision into ring (the worker's id; taken modulo the ring
 * count). in, v (may be NULL) and r are what decide.c passed to and got from
 * authz_evaluate(); request_id may be NULL. Copies, never keeps pointers.
 * No allocation, no I/O; a no-op while recording is off.
 */
void decisions_record(unsigned ring, const char *request_id, const struct authz_input *in,
                      const struct devtrust_verdict *v, const struct authz_result *r);

/* A recorded decision as the readers see it. Plain data; the strings are
 * never NULL ("" when unknown) and valid only during the callback. */
struct decision_monitor {
    const char *rule_id;
    enum policy_effect rule_effect;
    int matched; /* 1 matched, 0 not, 2 would step up */
    enum policy_effect would_decide;
};

struct decision {
    int64_t time_ms; /* Unix milliseconds */
    const char *request_id;
    const char *route, *method, *path;
    int path_cut; /* path longer than DECISIONS_PATH_MAX: cut */
    int has_identity;
    const char *user_sub, *user_email;
    int64_t auth_time;
    int mfa;
    const char *device_id;
    const char *tier_name; /* "" unknown */
    int tier;              /* ordinal in the rules' tiers, -1 unknown */
    int score;             /* 0..100, -1 unknown */
    int device_stale;      /* what the rules were told (inventory or posture stale) */
    int inventory_stale, posture_stale;
    const char *owner;  /* "" unknown */
    const char *status; /* device status after overrides, "" unknown */
    size_t nattrs;
    struct policy_attr attrs[DECISIONS_ATTRS_MAX]; /* as passed to the rules */
    const char *client_ip, *country;
    const char *groups; /* "eng,staff" as evaluated */
    int groups_cut;     /* the user had more groups than were evaluated into the list */
    enum policy_effect effect;
    const char *rule_id;
    size_t nreasons;
    const char *reasons[POLICY_REASONS_MAX];
    size_t nmonitor;
    struct decision_monitor monitor[POLICY_MONITOR_MAX];
    int incomplete; /* a field was cut or left out: not replayable as is */
};

/* Return DECISIONS_STOP to end a walk early. */
#define DECISIONS_CONTINUE 0
#define DECISIONS_STOP 1
typedef int (*decisions_cb)(const struct decision *d, void *arg);

/*
 * Walk every ring, newest first overall (merged by record time), calling
 * cb for each record until it returns DECISIONS_STOP. Records written while
 * walking are not seen; records overwritten while walking end their ring's
 * part of the walk. Takes each ring's mutex only to copy one slot; cb runs
 * without any lock. Returns the number of records passed to cb, or -1 when
 * out of memory.
 */
long decisions_walk(decisions_cb cb, void *arg);

/* The filters of GET /decisions: NULL (or "") matches anything. user
 * matches the subject or the e-mail (case-insensitive); effect is "allow",
 * "deny" or "step_up". */
struct decisions_filter {
    const char *user, *device, *route, *effect;
};
int decisions_match(const struct decisions_filter *f, const struct decision *d);

/* The JSON object of one record as GET /decisions lists it (caller owns). */
json_t *decisions_to_json(const struct decision *d);

/*
 * Fill an authz_input from a record, for a replay with
 * authz_evaluate_policy(): attrs (DECISIONS_ATTRS_MAX entries) and peer
 * are its storage. The recorded groups and country override the live
 * directory and GeoIP; the recorded client address is the peer.
 */
void decisions_input(const struct decision *d, struct authz_input *in, struct policy_attr *attrs,
                     struct sockaddr_storage *peer);

/* ---- what-if: replay recorded inputs against a proposed policy -------- */

struct whatif; /* opaque accumulator */

/* evaluate: decide one record's inputs with the proposed rules; NULL uses
 * authz_evaluate_policy(p, ...). Sets *rule to the deciding rule id
 * (valid until the next call). Returns the new effect. */
typedef enum policy_effect (*whatif_eval_cb)(const struct policy *p, const struct decision *d,
                                             const char **rule, void *arg);

struct whatif *whatif_new(const struct policy *p, whatif_eval_cb eval, void *arg);
void whatif_free(struct whatif *w);
/* Replay one record. 0, or -1 when out of memory. */
int whatif_add(struct whatif *w, const struct decision *d);
/*
 * The answer (caller owns):
 *   {"replayed": n, "skipped": k,
 *    "gains":  [{"route","user","device","count","was","now","rule"}],
 *    "losses": [...],
 *    "by_route": {"wiki": {"gains": 1, "losses": 0, "unchanged": 11}}}
 * gains: was deny/step_up, now allow; losses: was allow, now deny/step_up;
 * grouped by (route, user, device, was, now), the most frequent first;
 * by_route counts records. NULL when out of memory.
 */
json_t *whatif_result(const struct whatif *w);

/* The same in one call over an array of records. */
json_t *whatif_replay(const struct policy *p, const struct decision *recs, size_t n,
                      whatif_eval_cb eval, void *arg);

#endif
