/*
 * proxy.h - the data plane: worker threads, client connections, routing,
 * upstream pools, streaming relay.
 *
 * A "generation" bundles everything derived from one configuration (the
 * conf, the server TLS context, upstream TLS contexts). Workers hold a
 * reference to the generation they use; connections hold one to the
 * generation they were accepted under, so a reload never changes the rules
 * under an open connection.
 */
#ifndef ZT_PROXY_H
#define ZT_PROXY_H

#include <stddef.h>
#include <stdint.h>

#include "conf.h"
#include "session.h"

struct proxy_gen; /* opaque */

/*
 * Build a generation from a validated conf (takes a reference to it). Loads
 * certificates and keys. NULL with err on failure. Free with
 * proxy_gen_unref().
 */
struct proxy_gen *proxy_gen_new(struct conf *c, char *err, size_t errlen);
void proxy_gen_unref(struct proxy_gen *g);
/* The configuration of a generation (valid while the generation is). */
const struct conf *proxy_gen_conf(const struct proxy_gen *g);

/* Open listeners, start conf->workers worker threads. 0 or -1 (logged). */
int proxy_start(struct proxy_gen *g);
/* Hand a new generation to every worker (takes a reference per worker). */
void proxy_reload(struct proxy_gen *g);
/* Stop accepting; let in-flight requests finish within the grace period. */
void proxy_shutdown(void);
/* Say "not ready" from now on (/readyz answers 503), still serving: the
 * first step of a shutdown, while load balancers take the replica out. */
void proxy_mark_draining(void);
/* Was proxy_mark_draining() or proxy_shutdown() called? */
int proxy_draining(void);
/* Worker threads that have not finished yet (0 once every one drained). */
int proxy_workers_running(void);
/* Wait for every worker to exit. */
void proxy_join(void);

/* The session revocation store in c->state_dir (with identity configured):
 * open at start, close at exit. 0 or -1 with err. */
int proxy_revocations_open(const struct conf *c, char *err, size_t errlen);
void proxy_revocations_close(void);
/* Every revocation in the store (session_revocations_foreach()), under
 * the store's writer lock; nothing without identity. Main thread. */
void proxy_revocations_foreach(session_revocation_cb fn, void *arg);

/* Before the worker loops are freed (proxy_join()): revocations and posture
 * reports persisted after this are no longer answered on their connection
 * (nothing is left to answer them; they were not acknowledged). */
void proxy_replies_stop(void);

/*
 * Revoke every session of subject (issued until now), or, with subject
 * NULL, the session id (SESSION_ID_LEN bytes): live for the next request,
 * then appended to the store's log and fsync'd (blocking: the admin
 * listener's thread, never a worker loop). Serialised with the sign-out
 * writer. 0, or -1 and err (no identity configured; not persisted: it
 * applies until restart).
 */
int proxy_revoke(const char *subject, const uint8_t *id, char *err, size_t errlen);

/*
 * The same for a revocation another replica made at Unix time at (include/
 * shared.h): applied to the local store only, never published again.
 * Main thread. 0, or -1 and err as proxy_revoke().
 */
int proxy_revoke_apply(const char *subject, const uint8_t *id, int64_t at, char *err,
                       size_t errlen);
/* The same for a back-channel logout another replica received: the sessions
 * of provider session sid at provider, or (sid NULL) of subject at provider. */
int proxy_revoke_scoped_apply(const char *provider, const char *sid, const char *subject,
                              int64_t at, char *err, size_t errlen);

#endif
