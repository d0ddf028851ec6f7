/*
 * sso.h - single sign-on with OpenID Connect providers: provider metadata
 * and signing keys kept fresh off the hot path, and the per-generation
 * identity state (session key ring, assertion signer).
 *
 * The request-time part (login redirect, callback, sessions, bearer tokens,
 * the /.zt/ endpoints) lives inside the proxy module (proxy/sso.c) and uses
 * what this header exposes.
 */
#ifndef ZT_SSO_H
#define ZT_SSO_H

#include <stddef.h>
#include <stdint.h>

#include "conf.h"

struct event_base;
struct jwt_keyset;

/*
 * Start keeping the providers of c fresh: discovery document and JWKS are
 * fetched on base (the main thread's loop) now; discovery is re-read every
 * 5 seconds as a liveness probe and the JWKS every 10 minutes; failures are
 * retried with backoff. Providers are identified by issuer
 * and client id, so a reload that keeps a provider keeps its state.
 * Call again after a reload with the new conf. 0 or -1.
 */
int sso_registry_sync(struct event_base *base, const struct conf *c);
/* Stop fetching and free the registry (at exit, after the workers). */
void sso_registry_free(void);

/* Provider metadata from discovery: immutable, refcounted. */
struct sso_meta {
    int refs; /* atomic */
    char *authorization_endpoint;
    char *token_endpoint;
    char *end_session_endpoint; /* NULL if the provider has none */
    char *jwks_uri;
};

struct sso_provider; /* runtime state of one provider; lives until exit */

/* The runtime state for conf->providers[idx]; NULL if not synced. */
struct sso_provider *sso_provider_get(const struct conf *c, size_t idx);

/*
 * Take references to the current metadata and keys (either may be NULL when
 * not fetched yet; *error then says why, e.g. "discovery: connection
 * refused"). Release with sso_meta_unref() and jwt_keyset_unref().
 */
void sso_provider_snapshot(struct sso_provider *p, struct sso_meta **meta, struct jwt_keyset **keys,
                           char *error, size_t errlen);
void sso_meta_unref(struct sso_meta *m);

/* Is the provider answering? Discovery is re-read every 5 seconds (a cheap
 * probe); a failed probe or token call marks it down until one succeeds.
 * New logins are refused with a clear page while it is down. */
int sso_provider_up(struct sso_provider *p);
void sso_provider_mark_down(struct sso_provider *p);

/* --check: validate without creating key files. */
void sso_set_check_mode(int on);

/*
 * An unknown kid was seen: may this thread refetch the JWKS now? Returns 1
 * (and the caller must call sso_provider_jwks_done()) at most once per
 * jwks_min_refresh, 0 otherwise.
 */
int sso_provider_jwks_claim(struct sso_provider *p, uint64_t min_refresh_ms);
/* Publish a refetched key set (NULL: the fetch failed). Takes a reference. */
void sso_provider_jwks_done(struct sso_provider *p, struct jwt_keyset *keys);

#endif
