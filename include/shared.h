/*
 * shared.h - shared state for replicas in Redis (docs/deploy.md, "Redis").
 *
 * With a "redis" section, the writes of one replica - posture reports,
 * session revocations, device status overrides and rules put through the
 * admin API - are stored in Redis and announced on one pub/sub channel;
 * every other replica applies them to its own embedded state (which stays
 * the one every request reads: a request never waits for Redis). Without
 * the section every function here is a no-op and nothing changes.
 *
 * Keys (P is redis.prefix, default "ztproxy:"):
 *   P posture       hash  device id -> the stored report (posture_to_json())
 *   P revocations   hash  "u:<subject>" / "s:<hex session id>" -> Unix time
 *   P overrides     hash  device id -> "active" | "lost" | "stolen" | "retired"
 *   P rules         string: the last rules message (below)
 *   P events        the channel: one message per write
 *
 * A message is one JSON object (shared_msg_parse()):
 *   {"origin": "<replica id>", "type": "posture", "report": "<stored report>"}
 *   {"origin", "type": "revoke", "user": "<subject>" | "session": "<hex>", "at": N}
 *   {"origin", "type": "override", "device": "<id>", "status": "<status>" | null}
 *   {"origin", "type": "rules", "id": "<unique>", "author", "comment", "document": "<text>"}
 * A replica ignores its own messages (origin) and never republishes what it
 * applies, so a write travels once.
 *
 * Threads: two hiredis connections (commands, SUBSCRIBE) live on the main
 * thread's loop; they reconnect by themselves with a backoff. The
 * shared_publish_*() functions may be called from any thread: they queue
 * the write (bounded) and wake the main loop with event_active(); no hiredis
 * call ever runs elsewhere. Writes queued while Redis is away are flushed,
 * in order, when it comes back; on every (re)connect the replica reads the
 * whole state back from Redis so it converges with the others.
 */
#ifndef ZT_SHARED_H
#define ZT_SHARED_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct conf;
struct json_t;

#define SHARED_QUEUE_MAX 10000 /* writes waiting for Redis; the oldest is dropped beyond */
#define SHARED_MSG_MAX (33u * 1024 * 1024) /* the largest message (a rules document escaped) */

/* ---- the pure part: messages ---------------------------------------------- */

enum shared_type {
    SHARED_POSTURE = 1,
    SHARED_REVOKE,
    SHARED_OVERRIDE,
    SHARED_RULES,
};

/* A parsed message. The strings point into root (owned): valid until
 * shared_msg_reset(). Absent optional strings are NULL. */
struct shared_msg {
    struct json_t *root;
    enum shared_type type;
    const char *origin;
    const char *report; /* POSTURE: the stored report */
    size_t report_len;
    const char *user;     /* REVOKE: a subject, or NULL */
    const char *session;  /* REVOKE: 2 * SESSION_ID_LEN hex digits, or NULL */
    const char *provider; /* REVOKE by a back-channel logout: the provider, with */
    const char *sid;      /* the provider's session id, or with user (all of the user's
                             sessions from that provider) */
    int64_t at;           /* REVOKE: Unix seconds */
    const char *device;   /* OVERRIDE */
    const char *status;   /* OVERRIDE: NULL clears */
    const char *id;       /* RULES */
    const char *author;   /* RULES */
    const char *comment;  /* RULES: "" when none */
    const char *document;
    size_t document_len;
};

/*
 * Parse a message (untrusted bytes: another replica, or whoever can write to
 * Redis). Strict: unknown keys, wrong types, missing keys and over-long
 * values are refused. 0 and *out (release with shared_msg_reset()), or -1,
 * *out empty, and one line in err, e.g. "shared: $.at: expected an integer".
 */
int shared_msg_parse(const char *data, size_t len, struct shared_msg *out, char *err,
                     size_t errlen);
void shared_msg_reset(struct shared_msg *m);

/* ---- the runtime (main thread unless said otherwise) ------------------------ */

/* Start once on base (the main loop, created after evthread_use_pthreads()).
 * No redis section: 0 and nothing else. Connecting is asynchronous: Redis
 * being down at start is not an error. 0, or -1 and err (out of memory). */
int shared_start(struct event_base *base, const struct conf *c, char *err, size_t errlen);
/* SIGHUP: the running connections are kept; a changed (added, removed or
 * edited) redis section is logged as needing a restart. */
void shared_reconfigure(const struct conf *c);
/* Close both connections, drop what is still queued (logged), free all. */
void shared_stop(void);

/* Any thread. No-ops without a redis section. Each queues one write:
 * the stored posture report (posture_to_json() text); a revocation of
 * subject (or, subject NULL, of session id) at Unix time at; an override
 * (status NULL: cleared); a rules document with its author and comment. */
void shared_publish_posture(const char *report, size_t len);
void shared_publish_revoke(const char *subject, const uint8_t *id, int64_t at);
/* A back-channel logout: the sessions of provider session sid, or (sid NULL)
 * of subject, from that provider only. */
void shared_publish_revoke_scoped(const char *provider, const char *sid, const char *subject,
                                  int64_t at);
void shared_publish_override(const char *device_id, const char *status);
void shared_publish_rules(const char *text, size_t len, const char *author, const char *comment);

/* For /readyz and logs. Plain data. */
struct shared_stats {
    int configured;
    int connected;      /* both connections up and subscribed */
    int64_t down_since; /* Unix seconds, 0 when connected or never connected */
    uint64_t connects;
    uint64_t disconnects;
    uint64_t errors;    /* failed connects, error replies, bad messages */
    uint64_t published; /* writes sent to Redis */
    uint64_t received;  /* messages from other replicas applied */
    uint64_t dropped;   /* writes dropped: queue full */
    size_t queued;      /* writes waiting for Redis */
    char last_error[256];
};
void shared_stats(int64_t now, struct shared_stats *out);

#endif
