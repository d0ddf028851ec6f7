/*
 * tls.h - the TLS side of the data plane: server contexts that require and
 * verify device certificates, session tickets with rotating keys, and client
 * contexts for https:// upstreams.
 */
#ifndef ZT_TLS_H
#define ZT_TLS_H

#include <stddef.h>

#include <openssl/ssl.h>

#include "conf.h"
#include "device_id.h"

struct tls_server; /* opaque */

/* Global set-up once per process (ex_data indexes, ticket key ring). */
int tls_init(void);

/*
 * OpenSSL 3.0 only: have certificates' EC public keys decoded by OpenSSL's
 * direct (pre-provider) decoder instead of a decoder chain built per
 * certificate (~1 M instructions each; proxy/tls_ecdecode.c says why and
 * how). Call once at start, before any thread. Returns 1 when enabled,
 * 0 when not needed (another OpenSSL version), -1 on failure.
 */
int tls_ec_decode_shortcut(void);

/*
 * Build the server context for a configuration: certificate and key, device
 * CA, CRL, protocol and cipher policy, ALPN, tickets. On failure returns NULL
 * and writes "file: what went wrong" into err. Free with tls_server_free().
 */
struct tls_server *tls_server_new(const struct conf *c, char *err, size_t errlen);
void tls_server_free(struct tls_server *ts);

/* A new server-side SSL for an accepted connection; NULL on failure. */
SSL *tls_server_ssl_new(struct tls_server *ts);

/* What the handshake established about the peer. */
struct tls_peer {
    int verified; /* 1: a valid device certificate, id read */
    char device_id[DEVICE_ID_MAX + 1];
    unsigned char thumbprint[32]; /* SHA-256 of the certificate (DER) */
    char reason[160];             /* when not verified: why (for the log) */
    char sni[256];                /* server name the client asked for, "" if none */
    int resumed;
};

/*
 * After the handshake completed: check the outcome (including, for resumed
 * sessions, revocation and validity against the current CRL and clock) and
 * read the device id and thumbprint — once per connection.
 */
void tls_server_peer(struct tls_server *ts, SSL *ssl, struct tls_peer *out);

/*
 * An open connection after a reload: verify its certificate again against
 * ts (the new device CA and CRL). 0 still valid, -1 with reason (revoked,
 * expired, another CA). was is the configuration the connection was last
 * verified under (or NULL): when its CA certificates and CRLs are the same
 * objects as ts's, only the clock is checked (the certificate's validity
 * period, no CRL past its nextUpdate, no CA certificate past its notAfter)
 * instead of a full verification.
 */
int tls_server_recheck(struct tls_server *ts, const struct tls_server *was, SSL *ssl, char *reason,
                       size_t len);

/*
 * After a failed handshake: the most precise reason available (the
 * certificate verification error, else the OpenSSL error code sslerr, as
 * collected by the caller, else the error queue). Clears the error queue.
 */
void tls_handshake_error(SSL *ssl, unsigned long sslerr, char *buf, size_t len);

/* Client context for the https:// upstream of c->routes[idx]; NULL and err
 * on failure. */
SSL_CTX *tls_upstream_ctx_new(const struct conf *c, size_t idx, char *err, size_t errlen);

#endif
