/*
 * tls.c - server and upstream TLS contexts.
 *
 * The server context requires a client certificate that chains to the
 * device CA, is within its validity, is not on the CRL, and carries the
 * clientAuth extended key usage explicitly (OpenSSL alone accepts a
 * certificate without any EKU; a device certificate must say what it is
 * for). With "unauthenticated": "enroll_page" the handshake completes
 * anyway and the connection is marked unverified: the proxy then answers
 * only its enroll page on it.
 *
 * Session resumption. A resumable session carries, in its app data, the
 * identity of the device CA and of the CRL its certificate was last checked
 * against (struct sess_app). Resuming under another device CA is refused (full
 * handshake); under another CRL the certificate is checked against the
 * current CRL first, and a revoked one gets a full handshake (which then
 * fails): both before the session is accepted, in the session callbacks.
 * Where sessions live ("session_cache"):
 *   - "server" (default): in this process (a table shared by every worker and
 *     every configuration generation, bounded, each TLS 1.3 session used
 *     once). The TLS 1.3 ticket or TLS 1.2 session id only names the entry, so
 *     resuming costs no decoding of the certificate from the ticket - which
 *     is most of the CPU of a ticket-based resumption with OpenSSL 3.0.
 *   - "tickets": encrypted into the ticket, with rotating keys (below).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "log.h"
#include "tls.h"

struct tls_server {
    SSL_CTX *ctx;
    X509_STORE *store; /* owned by ctx */
    enum conf_unauth unauth;
    enum device_id_source devid_source;
    char *devid_prefix;
    /* Identifies the device CA bundle: sessions issued under another CA are
     * not resumed (carried in the ticket's app data). */
    unsigned char ca_id[16];
    /* Identifies the CRL file's contents (all zero without a CRL). */
    unsigned char crl_id[16];
    int crl_check;
    /* Digest of everything verification uses from the store (every CA
     * certificate and CRL as loaded, in store order), and the earliest
     * nextUpdate of the CRLs (0: none). Two generations with the same
     * digest give the same verdict on a certificate until that time (or
     * until a CA certificate expires, whichever comes first). */
    unsigned char trust_id[32];
    time_t crl_expires;
    int counted; /* in sc_servers */
    /* CRLs whose full check (signature included) passed, with the issuer
     * certificate it passed against (see zt_check_crl). Written under
     * crl_mtx, read without it: an entry is complete before ncrl_ok
     * counts it, and never changes after. */
    pthread_mutex_t crl_mtx;
    struct {
        const X509_CRL *crl;
        const X509 *issuer;
    } crl_ok[8];
    atomic_uint ncrl_ok;
};

/* A session's app data: what its certificate was last verified against. */
struct sess_app {
    unsigned char ca_id[16];
    unsigned char crl_id[16]; /* all zero: not known to be checked */
};

/* Per-SSL verification outcome, kept in ex_data as an intptr: 0 = none,
 * X509 verify error + 1, or one of our own reasons below (negative). */
static int tls_ex_verify_err = -1;
#define TLS_VERR_CA_LEAF ((intptr_t)-1)

/* The reason for a verification outcome kept in tls_ex_verify_err. */
static const char *verr_string(intptr_t verr)
{
    if (verr == TLS_VERR_CA_LEAF)
        return "CA certificate (basicConstraints CA:TRUE) used as a device certificate";
    return X509_verify_cert_error_string((long)(verr - 1));
}
/* Per-SSL: non-NULL when the resumed session's certificate was found not
 * revoked by the current CRL in a session callback. */
static int tls_ex_revchk = -1;

static const char tls12_ciphers[] = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                                    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
                                    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

/* ---- session ticket keys ------------------------------------------------
 * One ring per process, shared by all contexts so that a reload does not
 * invalidate every session. The newest key encrypts; the previous one still
 * decrypts (and asks for a renewed ticket) for one more lifetime. */

struct ticket_key {
    unsigned char name[16];
    unsigned char aes[32];
    unsigned char hmac[32];
    time_t created;
    int valid;
};

static pthread_mutex_t ticket_mtx = PTHREAD_MUTEX_INITIALIZER;
static struct ticket_key ticket_cur, ticket_prev;
static uint64_t ticket_lifetime_s = 3600;

static int ticket_key_make(struct ticket_key *k)
{
    if (RAND_bytes(k->name, sizeof(k->name)) != 1 || RAND_bytes(k->aes, sizeof(k->aes)) != 1 ||
        RAND_bytes(k->hmac, sizeof(k->hmac)) != 1)
        return -1;
    k->created = time(NULL);
    k->valid = 1;
    return 0;
}

/* Called with ticket_mtx held. */
static void ticket_rotate_locked(time_t now)
{
    struct ticket_key k;

    if (ticket_cur.valid && (uint64_t)(now - ticket_cur.created) < ticket_lifetime_s)
        return;
    if (ticket_key_make(&k) == -1)
        return; /* keep the current key rather than fail handshakes */
    OPENSSL_cleanse(&ticket_prev, sizeof(ticket_prev));
    ticket_prev = ticket_cur;
    ticket_cur = k;
    OPENSSL_cleanse(&k, sizeof(k));
    log_debug("tls: session ticket key rotated");
}

static int ticket_key_cb(SSL *s, unsigned char key_name[16], unsigned char *iv,
                         EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
    struct ticket_key k;
    OSSL_PARAM params[3];
    char digest[] = "SHA256";
    time_t now = time(NULL);
    int rc = 1;

    pthread_mutex_lock(&ticket_mtx);
    ticket_rotate_locked(now);
    if (enc) {
        k = ticket_cur;
    } else if (ticket_cur.valid && CRYPTO_memcmp(key_name, ticket_cur.name, 16) == 0) {
        k = ticket_cur;
    } else if (ticket_prev.valid && CRYPTO_memcmp(key_name, ticket_prev.name, 16) == 0 &&
               (uint64_t)(now - ticket_prev.created) < 2 * ticket_lifetime_s) {
        k = ticket_prev;
        rc = 2; /* decrypts, but issue a ticket under the current key */
    } else {
        pthread_mutex_unlock(&ticket_mtx);
        return 0; /* unknown or retired key: full handshake */
    }
    pthread_mutex_unlock(&ticket_mtx);

    if (!k.valid)
        return enc ? -1 : 0;
    params[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, k.hmac, sizeof(k.hmac));
    params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0);
    params[2] = OSSL_PARAM_construct_end();
    if (enc) {
        memcpy(key_name, k.name, 16);
        if (RAND_bytes(iv, EVP_MAX_IV_LENGTH) != 1 ||
            EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k.aes, iv) != 1)
            rc = -1;
    } else {
        if (EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k.aes, iv) != 1)
            rc = -1;
    }
    if (rc != -1 && EVP_MAC_CTX_set_params(hctx, params) != 1)
        rc = -1;
    (void)s;
    OPENSSL_cleanse(&k, sizeof(k));
    return rc;
}

/* ---- CRL checks ----------------------------------------------------------
 * OpenSSL checks a CRL completely - the issuer's cRLSign usage, scope, path,
 * time and the CRL's signature - in every chain verification, so every full
 * handshake verified the same CRL signature again (a tenth of its CPU). The
 * CRLs in a context's store never change (a new CRL file is a new context),
 * so once the whole check has passed for a CRL and an issuer certificate,
 * the next handshakes redo only the part that changes with time: lastUpdate
 * and nextUpdate (an expired CRL still refuses every certificate). Only
 * plain CRLs are remembered: no issuing distribution point (whose scope
 * depends on the certificate checked) and no delta. Anything else, and
 * every check outside a handshake, is OpenSSL's own check. The lookup of the
 * certificate in the CRL (revoked or not) is never skipped. */

static X509_STORE_CTX_check_crl_fn openssl_check_crl;

/* The issuer certificate OpenSSL's check uses, when the checked
 * certificate's issuer is in the chain; NULL otherwise. */
static const X509 *crl_issuer_of(X509_STORE_CTX *xs)
{
    X509 *ci = X509_STORE_CTX_get0_current_issuer(xs);
    STACK_OF(X509) *chain = X509_STORE_CTX_get0_chain(xs);
    int depth = X509_STORE_CTX_get_error_depth(xs);

    if (ci != NULL)
        return ci;
    if (chain != NULL && depth >= 0 && depth < sk_X509_num(chain) - 1)
        return sk_X509_value(chain, depth + 1);
    return NULL;
}

static int crl_rememberable(const X509_CRL *crl)
{
    return X509_CRL_get_ext_by_NID(crl, NID_issuing_distribution_point, -1) < 0 &&
           X509_CRL_get_ext_by_NID(crl, NID_delta_crl, -1) < 0;
}

/* The time part of OpenSSL's check, errors reported the way it does. */
static int crl_time_ok(X509_STORE_CTX *xs, X509_CRL *crl)
{
    const ASN1_TIME *last = X509_CRL_get0_lastUpdate(crl);
    const ASN1_TIME *next = X509_CRL_get0_nextUpdate(crl);
    int err = X509_V_OK, cmp;

    cmp = last != NULL ? X509_cmp_current_time(last) : 0;
    if (cmp == 0)
        err = X509_V_ERR_ERROR_IN_CRL_LAST_UPDATE_FIELD;
    else if (cmp > 0)
        err = X509_V_ERR_CRL_NOT_YET_VALID;
    else if (next != NULL) {
        cmp = X509_cmp_current_time(next);
        if (cmp == 0)
            err = X509_V_ERR_ERROR_IN_CRL_NEXT_UPDATE_FIELD;
        else if (cmp < 0)
            err = X509_V_ERR_CRL_HAS_EXPIRED;
    }
    if (err == X509_V_OK)
        return 1;
    X509_STORE_CTX_set_error(xs, err);
    return X509_STORE_CTX_get_verify_cb(xs)(0, xs);
}

static int zt_check_crl(X509_STORE_CTX *xs, X509_CRL *crl)
{
    SSL *ssl = X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
    struct tls_server *ts = ssl != NULL ? SSL_get_app_data(ssl) : NULL;
    const X509 *issuer = crl_issuer_of(xs);
    unsigned n, i;
    int prev, rc;

    if (ts != NULL && issuer != NULL) {
        n = atomic_load_explicit(&ts->ncrl_ok, memory_order_acquire);
        for (i = 0; i < n; i++)
            if (ts->crl_ok[i].crl == crl && ts->crl_ok[i].issuer == issuer)
                return crl_time_ok(xs, crl);
    }
    /* OpenSSL's check; remembered only when it passed without any error
     * (in enroll_page mode the verify callback lets errors through). */
    prev = X509_STORE_CTX_get_error(xs);
    X509_STORE_CTX_set_error(xs, X509_V_OK);
    rc = openssl_check_crl(xs, crl);
    if (rc == 1 && X509_STORE_CTX_get_error(xs) == X509_V_OK && ts != NULL && issuer != NULL &&
        crl_rememberable(crl)) {
        pthread_mutex_lock(&ts->crl_mtx);
        n = atomic_load_explicit(&ts->ncrl_ok, memory_order_relaxed);
        for (i = 0; i < n; i++)
            if (ts->crl_ok[i].crl == crl && ts->crl_ok[i].issuer == issuer)
                break;
        if (i == n && n < sizeof(ts->crl_ok) / sizeof(ts->crl_ok[0])) {
            ts->crl_ok[n].crl = crl;
            ts->crl_ok[n].issuer = issuer;
            atomic_store_explicit(&ts->ncrl_ok, n + 1, memory_order_release);
        }
        pthread_mutex_unlock(&ts->crl_mtx);
    }
    if (X509_STORE_CTX_get_error(xs) == X509_V_OK)
        X509_STORE_CTX_set_error(xs, prev);
    return rc;
}

/* OpenSSL's own check_crl, as an X509_STORE_CTX gets it by default. */
static int openssl_check_crl_find(void)
{
    X509_STORE *st = X509_STORE_new();
    X509_STORE_CTX *xs = X509_STORE_CTX_new();

    if (st != NULL && xs != NULL && X509_STORE_CTX_init(xs, st, NULL, NULL) == 1)
        openssl_check_crl = X509_STORE_CTX_get_check_crl(xs);
    X509_STORE_CTX_free(xs);
    X509_STORE_free(st);
    return openssl_check_crl != NULL ? 0 : -1;
}

/* ---- resumption checks ----------------------------------------------------- */

/* Is cert on the current CRL (or is there no usable CRL)? 0 no, -1 yes/unknown. */
static int cert_revoked(struct tls_server *ts, X509 *cert, char *reason, size_t len)
{
    X509_STORE_CTX *xs = X509_STORE_CTX_new();
    STACK_OF(X509_CRL) *crls = NULL;
    int i, rc = 0;

    if (xs == NULL || X509_STORE_CTX_init(xs, ts->store, cert, NULL) != 1) {
        snprintf(reason, len, "cannot check revocation (resumed session)");
        rc = -1;
        goto out;
    }
    crls = X509_STORE_CTX_get1_crls(xs, X509_get_issuer_name(cert));
    if (crls == NULL || sk_X509_CRL_num(crls) == 0) {
        snprintf(reason, len, "unable to get certificate CRL (resumed session)");
        rc = -1;
        goto out;
    }
    for (i = 0; i < sk_X509_CRL_num(crls); i++) {
        X509_REVOKED *rev = NULL;
        if (X509_CRL_get0_by_cert(sk_X509_CRL_value(crls, i), &rev, cert) == 1) {
            snprintf(reason, len, "certificate revoked (resumed session)");
            rc = -1;
            goto out;
        }
    }
out:
    sk_X509_CRL_pop_free(crls, X509_CRL_free);
    X509_STORE_CTX_free(xs);
    return rc;
}

/* May session ss be resumed on s? Issued under the current device CA, and its
 * certificate not revoked: known from its app data when it was checked
 * against the current CRL, else checked now. 0 yes (and s is marked as
 * checked), -1 no: a full handshake verifies the certificate again. */
static int sess_acceptable(struct tls_server *ts, SSL *s, SSL_SESSION *ss)
{
    void *data = NULL;
    size_t len = 0;
    struct sess_app app;
    X509 *cert;
    char why[160];

    if (SSL_SESSION_get0_ticket_appdata(ss, &data, &len) != 1 || len != sizeof(app))
        return -1;
    memcpy(&app, data, sizeof(app));
    if (CRYPTO_memcmp(app.ca_id, ts->ca_id, sizeof(app.ca_id)) != 0)
        return -1; /* issued under another device CA */
    cert = SSL_SESSION_get0_peer(ss);
    if (cert != NULL && (X509_cmp_current_time(X509_get0_notAfter(cert)) < 0 ||
                         X509_cmp_current_time(X509_get0_notBefore(cert)) > 0))
        return -1; /* outside its validity: the full handshake says why */
    if (ts->crl_check && CRYPTO_memcmp(app.crl_id, ts->crl_id, sizeof(app.crl_id)) != 0) {
        if (cert == NULL || cert_revoked(ts, cert, why, sizeof(why)) == -1) {
            log_debug("tls: session not resumed: %s", cert == NULL ? "no certificate" : why);
            return -1;
        }
    }
    SSL_set_ex_data(s, tls_ex_revchk, (void *)1);
    return 0;
}

/* The app data of a new session of s: the device CA, and the CRL when the
 * handshake verified the certificate (or resumed a checked session). */
static int sess_app_set(struct tls_server *ts, SSL *s, SSL_SESSION *sess)
{
    struct sess_app app;

    memset(&app, 0, sizeof(app));
    memcpy(app.ca_id, ts->ca_id, sizeof(app.ca_id));
    if (SSL_get_ex_data(s, tls_ex_verify_err) == NULL && SSL_get_verify_result(s) == X509_V_OK &&
        (!SSL_session_reused(s) || SSL_get_ex_data(s, tls_ex_revchk) != NULL))
        memcpy(app.crl_id, ts->crl_id, sizeof(app.crl_id));
    return SSL_SESSION_set1_ticket_appdata(sess, &app, sizeof(app));
}

/* The ticket carries the CA and CRL identities it was issued under. */
static int ticket_gen_cb(SSL *s, void *arg)
{
    struct tls_server *ts = arg;
    SSL_SESSION *sess = SSL_get0_session(s);

    if (sess == NULL)
        return 0;
    return sess_app_set(ts, s, sess);
}

/* ---- server-side session cache ------------------------------------------------
 * One table per process: the workers' contexts and every configuration
 * generation share it (a reload does not log every device out of its TLS
 * session). A hash of session ids with a FIFO for eviction; each entry holds
 * one reference to its SSL_SESSION. At most sc_max sessions (tls.session_cache_size;
 * about 11 KiB each with the client's certificates as OpenSSL holds them
 * parsed — measured with a leaf and its CA sent). A TLS 1.3 session is taken out when it
 * is resumed (single use: the client gets a new one); a TLS 1.2 session id is
 * reusable until it expires. */

#define SC_BUCKETS 16384u
/* The latest configuration's tls.session_cache_size (the table is one per
 * process); lowering it evicts the oldest entries as new ones come in. */
static atomic_uint sc_max = 20480u;

struct sc_ent {
    struct sc_ent *hnext;       /* bucket chain */
    struct sc_ent *prev, *next; /* FIFO, oldest first */
    SSL_SESSION *sess;
    time_t expires;
    unsigned int idlen;
    unsigned char id[SSL_MAX_SSL_SESSION_ID_LENGTH];
};

static pthread_mutex_t sc_mtx = PTHREAD_MUTEX_INITIALIZER;
static struct sc_ent *sc_tab[SC_BUCKETS];
static struct sc_ent *sc_head, *sc_tail;
static size_t sc_count;
static atomic_int sc_servers; /* live tls_server objects: the table is emptied with the last */

static uint32_t sc_hash(const unsigned char *id, unsigned int len)
{
    uint32_t h = 2166136261u;
    unsigned int i;

    for (i = 0; i < len; i++)
        h = (h ^ id[i]) * 16777619u;
    return h % SC_BUCKETS;
}

/* Called with sc_mtx held; returns the session reference to drop. */
static SSL_SESSION *sc_unlink(struct sc_ent *e)
{
    struct sc_ent **pp = &sc_tab[sc_hash(e->id, e->idlen)];
    SSL_SESSION *s = e->sess;

    while (*pp != NULL && *pp != e)
        pp = &(*pp)->hnext;
    if (*pp == e)
        *pp = e->hnext;
    if (e->prev != NULL)
        e->prev->next = e->next;
    else
        sc_head = e->next;
    if (e->next != NULL)
        e->next->prev = e->prev;
    else
        sc_tail = e->prev;
    sc_count--;
    free(e);
    return s;
}

static struct sc_ent *sc_find(const unsigned char *id, unsigned int len)
{
    struct sc_ent *e;

    for (e = sc_tab[sc_hash(id, len)]; e != NULL; e = e->hnext)
        if (e->idlen == len && memcmp(e->id, id, len) == 0)
            return e;
    return NULL;
}

static int sc_new_cb(SSL *s, SSL_SESSION *sess)
{
    struct tls_server *ts = SSL_get_app_data(s);
    SSL_SESSION *drop[3] = {NULL, NULL, NULL};
    const unsigned char *id;
    unsigned int len = 0;
    struct sc_ent *e, *old;
    time_t now = time(NULL);
    int n = 0, i;

    id = SSL_SESSION_get_id(sess, &len);
    if (ts == NULL || len == 0 || len > SSL_MAX_SSL_SESSION_ID_LENGTH ||
        sess_app_set(ts, s, sess) != 1)
        return 0;
    e = calloc(1, sizeof(*e));
    if (e == NULL)
        return 0;
    /* A copy (the certificate is shared, not copied): OpenSSL marks the
     * connection's own session "not resumable" when the connection ends
     * without a close_notify, which most clients do and which TLS 1.3 no
     * longer treats as a reason to forget a session. */
    sess = SSL_SESSION_dup(sess);
    if (sess == NULL) {
        free(e);
        return 0;
    }
    memcpy(e->id, id, len);
    e->idlen = len;
    e->sess = sess;
    e->expires = now + (time_t)SSL_SESSION_get_timeout(sess);
    pthread_mutex_lock(&sc_mtx);
    old = sc_find(id, len);
    if (old != NULL)
        drop[n++] = sc_unlink(old);
    /* the oldest entry goes when the table is full, or when it has expired */
    while (sc_head != NULL && n < 3 &&
           (sc_count >= atomic_load(&sc_max) || sc_head->expires <= now))
        drop[n++] = sc_unlink(sc_head);
    if (sc_count >= atomic_load(&sc_max)) {
        pthread_mutex_unlock(&sc_mtx);
        free(e);
        for (i = 0; i < n; i++)
            SSL_SESSION_free(drop[i]);
        SSL_SESSION_free(sess);
        return 0;
    }
    e->hnext = sc_tab[sc_hash(id, len)];
    sc_tab[sc_hash(id, len)] = e;
    e->prev = sc_tail;
    if (sc_tail != NULL)
        sc_tail->next = e;
    else
        sc_head = e;
    sc_tail = e;
    sc_count++;
    pthread_mutex_unlock(&sc_mtx);
    for (i = 0; i < n; i++)
        SSL_SESSION_free(drop[i]);
    return 0; /* OpenSSL drops its own reference */
}

static SSL_SESSION *sc_get_cb(SSL *s, const unsigned char *id, int len, int *copy)
{
    struct tls_server *ts = SSL_get_app_data(s);
    int once = SSL_version(s) == TLS1_3_VERSION;
    SSL_SESSION *sess = NULL, *drop = NULL;
    struct sc_ent *e;

    *copy = 0;
    if (ts == NULL || len <= 0 || len > SSL_MAX_SSL_SESSION_ID_LENGTH)
        return NULL;
    pthread_mutex_lock(&sc_mtx);
    e = sc_find(id, (unsigned int)len);
    if (e != NULL && e->expires <= time(NULL)) {
        drop = sc_unlink(e);
    } else if (e != NULL && once) {
        sess = sc_unlink(e); /* single use: the table's reference goes to OpenSSL */
    } else if (e != NULL) {
        sess = e->sess;
        SSL_SESSION_up_ref(sess);
    }
    pthread_mutex_unlock(&sc_mtx);
    SSL_SESSION_free(drop);
    if (sess != NULL && !once) {
        /* the connection gets its own copy (see sc_new_cb) */
        SSL_SESSION *c = SSL_SESSION_dup(sess);
        SSL_SESSION_free(sess);
        sess = c;
    }
    if (sess != NULL && sess_acceptable(ts, s, sess) == -1) {
        SSL_SESSION_free(sess);
        return NULL;
    }
    return sess;
}

static void sc_flush(void)
{
    pthread_mutex_lock(&sc_mtx);
    while (sc_head != NULL)
        SSL_SESSION_free(sc_unlink(sc_head));
    pthread_mutex_unlock(&sc_mtx);
}

static SSL_TICKET_RETURN ticket_dec_cb(SSL *s, SSL_SESSION *ss, const unsigned char *keyname,
                                       size_t keyname_length, SSL_TICKET_STATUS status, void *arg)
{
    struct tls_server *ts = arg;

    (void)keyname;
    (void)keyname_length;
    switch (status) {
    case SSL_TICKET_SUCCESS:
    case SSL_TICKET_SUCCESS_RENEW:
        if (sess_acceptable(ts, s, ss) == -1)
            return SSL_TICKET_RETURN_IGNORE_RENEW; /* full handshake */
        /* A TLS 1.3 client uses a ticket once: without a fresh one its next
         * connection would need a full handshake. A TLS 1.2 ticket is reused:
         * renewed only when its key is no longer the current one. */
        if (SSL_version(s) == TLS1_3_VERSION || status == SSL_TICKET_SUCCESS_RENEW)
            return SSL_TICKET_RETURN_USE_RENEW;
        return SSL_TICKET_RETURN_USE;
    case SSL_TICKET_EMPTY:
    case SSL_TICKET_NO_DECRYPT:
        return SSL_TICKET_RETURN_IGNORE_RENEW;
    default:
        return SSL_TICKET_RETURN_ABORT;
    }
}

int tls_init(void)
{
    if (OPENSSL_init_ssl(OPENSSL_INIT_LOAD_SSL_STRINGS | OPENSSL_INIT_LOAD_CRYPTO_STRINGS, NULL) !=
        1)
        return -1;
    if (tls_ex_verify_err == -1)
        tls_ex_verify_err = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    if (tls_ex_revchk == -1)
        tls_ex_revchk = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    if (openssl_check_crl == NULL && openssl_check_crl_find() == -1)
        return -1;
    return tls_ex_verify_err == -1 || tls_ex_revchk == -1 ? -1 : 0;
}

static int verify_cb(int ok, X509_STORE_CTX *xs)
{
    SSL *ssl = X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
    struct tls_server *ts = SSL_get_app_data(ssl);
    int depth = X509_STORE_CTX_get_error_depth(xs);
    intptr_t own = 0; /* one of our own reasons (TLS_VERR_*), not OpenSSL's */

    if (ok && depth == 0) {
        X509 *cert = X509_STORE_CTX_get_current_cert(xs);
        uint32_t flags = X509_get_extension_flags(cert);
        /* Require the clientAuth EKU explicitly, not just "no EKU". */
        if (!(flags & EXFLAG_XKUSAGE) || !(X509_get_extended_key_usage(cert) & XKU_SSL_CLIENT)) {
            X509_STORE_CTX_set_error(xs, X509_V_ERR_INVALID_PURPOSE);
            ok = 0;
        } else if (X509_check_ca(cert) != 0) {
            /* OpenSSL's SSL client purpose does not look at the leaf's
             * basicConstraints: a CA certificate (which can mint devices)
             * is never a device. */
            X509_STORE_CTX_set_error(xs, X509_V_ERR_APPLICATION_VERIFICATION);
            own = TLS_VERR_CA_LEAF;
            ok = 0;
        }
    }
    if (!ok) {
        int e = X509_STORE_CTX_get_error(xs);
        if (SSL_get_ex_data(ssl, tls_ex_verify_err) == NULL)
            SSL_set_ex_data(ssl, tls_ex_verify_err, (void *)(own != 0 ? own : (intptr_t)(e + 1)));
        if (ts != NULL && ts->unauth == CONF_UNAUTH_ENROLL_PAGE)
            return 1; /* complete the handshake; the connection stays unverified */
    }
    return ok;
}

static int alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
    unsigned int i = 0;

    (void)ssl;
    (void)arg;
    while (i < inlen) {
        unsigned int n = in[i];
        if (i + 1 + n > inlen)
            break;
        if (n == 8 && memcmp(in + i + 1, "http/1.1", 8) == 0) {
            *out = in + i + 1;
            *outlen = (unsigned char)n;
            return SSL_TLSEXT_ERR_OK;
        }
        i += 1 + n;
    }
    /* No common protocol: proceed without ALPN (an h2-only client then
     * fails on its own terms rather than with a fatal alert from us). */
    return SSL_TLSEXT_ERR_NOACK;
}

/* "cfg.json: $.tls.key: /etc/zt/server.key: what: OpenSSL's reason" */
static void ssl_err_at(char *err, size_t errlen, const char *conf, const char *jpath,
                       const char *file, const char *what)
{
    unsigned long e = ERR_peek_last_error();
    char buf[200];

    if (e != 0) {
        ERR_error_string_n(e, buf, sizeof(buf));
        snprintf(err, errlen, "%s: %s: \"%s\": %s: %s", conf, jpath, file, what, buf);
    } else {
        snprintf(err, errlen, "%s: %s: \"%s\": %s", conf, jpath, file, what);
    }
    ERR_clear_error();
}

static void ssl_err_string(char *err, size_t errlen, const char *file, const char *what)
{
    unsigned long e = ERR_peek_last_error();
    char buf[200];

    if (e != 0) {
        ERR_error_string_n(e, buf, sizeof(buf));
        snprintf(err, errlen, "%s: %s: %s", file, what, buf);
    } else {
        snprintf(err, errlen, "%s: %s", file, what);
    }
    ERR_clear_error();
}

static int file_identity(const char *file, unsigned char out[16], char *err, size_t errlen,
                         const char *what);

static int load_crls(X509_STORE *store, const char *conf, const char *file, char *err,
                     size_t errlen)
{
    BIO *b = BIO_new_file(file, "r");
    X509_CRL *crl;
    int n = 0;

    if (b == NULL) {
        ssl_err_at(err, errlen, conf, "$.tls.crl", file, "cannot open CRL");
        return -1;
    }
    while ((crl = PEM_read_bio_X509_CRL(b, NULL, NULL, NULL)) != NULL) {
        const ASN1_TIME *next = X509_CRL_get0_nextUpdate(crl);
        if (next != NULL && X509_cmp_current_time(next) < 0)
            log_warnx("tls: CRL in %s is past its nextUpdate: every client certificate will be "
                      "refused until it is renewed",
                      file);
        if (X509_STORE_add_crl(store, crl) != 1) {
            X509_CRL_free(crl);
            BIO_free(b);
            ssl_err_at(err, errlen, conf, "$.tls.crl", file, "cannot use CRL");
            return -1;
        }
        X509_CRL_free(crl);
        n++;
    }
    BIO_free(b);
    ERR_clear_error();
    if (n == 0) {
        snprintf(err, errlen, "%s: $.tls.crl: \"%s\": no PEM CRL found", conf, file);
        return -1;
    }
    return 0;
}

/* trust_id and crl_expires of a store, from the objects it holds. */
static int store_identity(struct tls_server *ts)
{
    STACK_OF(X509_OBJECT) *objs = X509_STORE_get0_objects(ts->store);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned int mdlen = 0;
    int i, ok = md != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1;

    ts->crl_expires = 0;
    for (i = 0; ok && i < sk_X509_OBJECT_num(objs); i++) {
        X509_OBJECT *o = sk_X509_OBJECT_value(objs, i);
        unsigned char d[EVP_MAX_MD_SIZE];
        unsigned int dlen = 0;
        unsigned char type = (unsigned char)X509_OBJECT_get_type(o);
        X509_CRL *crl = X509_OBJECT_get0_X509_CRL(o);
        X509 *x = X509_OBJECT_get0_X509(o);

        const ASN1_TIME *until;
        struct tm tm;

        if (x != NULL) {
            ok = X509_digest(x, EVP_sha256(), d, &dlen) == 1;
            until = X509_get0_notAfter(x);
        } else if (crl != NULL) {
            ok = X509_CRL_digest(crl, EVP_sha256(), d, &dlen) == 1;
            until = X509_CRL_get0_nextUpdate(crl);
        } else {
            continue;
        }
        if (until == NULL || ASN1_TIME_to_tm(until, &tm) != 1) {
            ts->crl_expires = 1; /* unknown: always verify in full */
        } else {
            time_t t = timegm(&tm);
            if (ts->crl_expires == 0 || t < ts->crl_expires)
                ts->crl_expires = t;
        }
        ok = ok && EVP_DigestUpdate(md, &type, 1) == 1 && EVP_DigestUpdate(md, d, dlen) == 1;
    }
    ok = ok && EVP_DigestFinal_ex(md, ts->trust_id, &mdlen) == 1 && mdlen == 32;
    EVP_MD_CTX_free(md);
    return ok ? 0 : -1;
}

static int file_identity(const char *file, unsigned char out[16], char *err, size_t errlen,
                         const char *what)
{
    unsigned char md[32], buf[4096];
    unsigned int mdlen = 0;
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    FILE *f = fopen(file, "rb");
    size_t n;
    int rc = -1;

    if (f == NULL || m == NULL || EVP_DigestInit_ex(m, EVP_sha256(), NULL) != 1) {
        snprintf(err, errlen, "%s: cannot read %s", file, what);
        goto out;
    }
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
        EVP_DigestUpdate(m, buf, n);
    if (EVP_DigestFinal_ex(m, md, &mdlen) != 1)
        goto out;
    memcpy(out, md, 16);
    rc = 0;
out:
    if (f != NULL)
        fclose(f);
    EVP_MD_CTX_free(m);
    return rc;
}

/*
 * The certificate chain we send. When the certificate file holds only the
 * server's own certificate, OpenSSL completes the chain from the verify store
 * (the device CA, with its CRL) in every handshake: a whole X509_verify_cert
 * with two signature checks (the server certificate's and the CRL's), about
 * a sixth of the CPU of a full handshake. Build that same chain once here and
 * switch the per-handshake building off. Whatever could not be built (a
 * server certificate from another CA) is sent as it was: the leaf alone. A
 * file that carries its own chain is sent as it is (auto-chaining never
 * applied to it).
 */
static void server_chain_once(SSL_CTX *ctx)
{
    STACK_OF(X509) *chain = NULL;

    if (SSL_CTX_get0_chain_certs(ctx, &chain) == 1 && (chain == NULL || sk_X509_num(chain) == 0))
        (void)SSL_CTX_build_cert_chain(ctx, SSL_BUILD_CHAIN_FLAG_IGNORE_ERROR |
                                                SSL_BUILD_CHAIN_FLAG_CLEAR_ERROR);
    ERR_clear_error();
    SSL_CTX_set_mode(ctx, SSL_MODE_NO_AUTO_CHAIN);
}

struct tls_server *tls_server_new(const struct conf *c, char *err, size_t errlen)
{
    struct tls_server *ts = calloc(1, sizeof(*ts));
    STACK_OF(X509_NAME) * cas;
    X509_VERIFY_PARAM *vp;
    SSL_CTX *ctx;
    static const unsigned char sid_ctx[] = "ztproxy";

    if (ts == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&ts->crl_mtx, NULL);
    atomic_init(&ts->ncrl_ok, 0);
    ts->unauth = c->tls_unauthenticated;
    ts->devid_source = c->devid_source;
    ts->devid_prefix = strdup(c->devid_prefix);
    pthread_mutex_lock(&ticket_mtx);
    ticket_lifetime_s = c->tls_ticket_key_lifetime_ms / 1000;
    pthread_mutex_unlock(&ticket_mtx);

    ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        ssl_err_string(err, errlen, "tls", "cannot create context");
        goto err;
    }
    ts->ctx = ctx;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_NO_COMPRESSION);
    /* No SSL_MODE_RELEASE_BUFFERS (a malloc and a free of ~17 KiB per
     * record): proxy.c gives an idle connection's buffers back itself
     * (conn_tls_trim), right after the handshake and after a second
     * without a request. */
    /* One read(2) per batch of records rather than two per record (header,
     * then body); proxy.c starts the records this leaves in OpenSSL's
     * buffer (bev_tls_pending), which bufferevent_openssl would not. */
    SSL_CTX_set_read_ahead(ctx, 1);
    /* Level 2 whatever the system's openssl.cnf says: client keys of at
     * least 112 bits of security (RSA/DSA >= 2048, EC >= 224) and no SHA-1
     * (or MD5) signature in the client's chain: "EE certificate key too
     * weak", "CA signature digest algorithm too weak". */
    SSL_CTX_set_security_level(ctx, 2);
    if (SSL_CTX_set_cipher_list(ctx, tls12_ciphers) != 1 ||
        SSL_CTX_set1_groups_list(ctx, "X25519:P-256:P-384") != 1) {
        ssl_err_string(err, errlen, "tls", "cannot set ciphers");
        goto err;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, c->tls_certificate) != 1) {
        ssl_err_at(err, errlen, c->path, "$.tls.certificate", c->tls_certificate,
                   "cannot load server certificate");
        goto err;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, c->tls_key, SSL_FILETYPE_PEM) != 1) {
        ssl_err_at(err, errlen, c->path, "$.tls.key", c->tls_key, "cannot load server key");
        goto err;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        ssl_err_at(err, errlen, c->path, "$.tls.key", c->tls_key,
                   "key does not match the server certificate");
        goto err;
    }
    if (SSL_CTX_load_verify_locations(ctx, c->tls_device_ca, NULL) != 1) {
        ssl_err_at(err, errlen, c->path, "$.tls.device_ca", c->tls_device_ca,
                   "cannot load device CA");
        goto err;
    }
    cas = SSL_load_client_CA_file(c->tls_device_ca);
    if (cas == NULL) {
        ssl_err_at(err, errlen, c->path, "$.tls.device_ca", c->tls_device_ca,
                   "no CA certificate found");
        goto err;
    }
    SSL_CTX_set_client_CA_list(ctx, cas);
    if (file_identity(c->tls_device_ca, ts->ca_id, err, errlen, "device CA") == -1)
        goto err;
    ts->store = SSL_CTX_get_cert_store(ctx);
    if (c->tls_crl != NULL) {
        if (load_crls(ts->store, c->path, c->tls_crl, err, errlen) == -1 ||
            file_identity(c->tls_crl, ts->crl_id, err, errlen, "CRL") == -1)
            goto err;
        X509_STORE_set_flags(ts->store, X509_V_FLAG_CRL_CHECK);
        X509_STORE_set_check_crl(ts->store, zt_check_crl);
        ts->crl_check = 1;
    }
    if (store_identity(ts) == -1) {
        snprintf(err, errlen, "%s: $.tls.device_ca: cannot digest the device CA and CRL", c->path);
        goto err;
    }
    server_chain_once(ctx);
    vp = SSL_CTX_get0_param(ctx);
    X509_VERIFY_PARAM_set_purpose(vp, X509_PURPOSE_SSL_CLIENT);
    X509_VERIFY_PARAM_set_depth(vp, 4);
    SSL_CTX_set_verify(ctx,
                       c->tls_unauthenticated == CONF_UNAUTH_REJECT
                           ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT
                           : SSL_VERIFY_PEER,
                       verify_cb);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, NULL);
    SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1);
    /* Stateless tickets only: no server-side cache to share or lock. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    if (c->tls_session_tickets && c->tls_session_cache_server)
        atomic_store(&sc_max, c->tls_session_cache_size);
    if (c->tls_session_tickets && c->tls_session_cache_server) {
        /* TLS 1.3 tickets and TLS 1.2 session ids that name an entry of the
         * process-wide table (SSL_OP_NO_TICKET makes TLS 1.3 tickets
         * stateful). Sessions live as long as a ticket key would. */
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
        SSL_CTX_set_num_tickets(ctx, 1);
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER | SSL_SESS_CACHE_NO_INTERNAL |
                                                SSL_SESS_CACHE_NO_AUTO_CLEAR);
        SSL_CTX_set_timeout(ctx, (long)(2 * (c->tls_ticket_key_lifetime_ms / 1000)));
        SSL_CTX_sess_set_new_cb(ctx, sc_new_cb);
        SSL_CTX_sess_set_get_cb(ctx, sc_get_cb);
        /* No remove callback: OpenSSL would drop the session of every
         * connection closed without a close_notify (most clients), as TLS 1.2
         * once required. Sessions leave the table when used (TLS 1.3), when
         * they expire or are evicted, or when they fail the checks. */
    } else if (c->tls_session_tickets) {
        SSL_CTX_set_num_tickets(ctx, 1);
        SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_key_cb);
        SSL_CTX_set_session_ticket_cb(ctx, ticket_gen_cb, ticket_dec_cb, ts);
    } else {
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
        SSL_CTX_set_num_tickets(ctx, 0);
    }
    pthread_mutex_lock(&ticket_mtx);
    ticket_rotate_locked(time(NULL));
    pthread_mutex_unlock(&ticket_mtx);
    atomic_fetch_add(&sc_servers, 1);
    ts->counted = 1;
    return ts;
err:
    tls_server_free(ts);
    return NULL;
}

void tls_server_free(struct tls_server *ts)
{
    if (ts == NULL)
        return;
    SSL_CTX_free(ts->ctx);
    free(ts->devid_prefix);
    pthread_mutex_destroy(&ts->crl_mtx);
    if (ts->counted && atomic_fetch_sub(&sc_servers, 1) == 1)
        sc_flush(); /* the last context is gone (exit): nothing can resume */
    free(ts);
}

SSL *tls_server_ssl_new(struct tls_server *ts)
{
    SSL *ssl = SSL_new(ts->ctx);

    if (ssl == NULL)
        return NULL;
    SSL_set_app_data(ssl, ts);
    return ssl;
}

/* Resumed sessions skip chain verification: re-check what can change since
 * the session was issued - the validity period, and revocation unless a
 * session callback found the certificate not revoked by the current CRL
 * (checked says so). */
static int recheck_resumed(struct tls_server *ts, X509 *cert, int checked, char *reason, size_t len)
{
    if (X509_cmp_current_time(X509_get0_notAfter(cert)) < 0) {
        snprintf(reason, len, "certificate has expired (resumed session)");
        return -1;
    }
    if (X509_cmp_current_time(X509_get0_notBefore(cert)) > 0) {
        snprintf(reason, len, "certificate is not yet valid (resumed session)");
        return -1;
    }
    if (checked ||
        !(X509_VERIFY_PARAM_get_flags(X509_STORE_get0_param(ts->store)) & X509_V_FLAG_CRL_CHECK))
        return 0;
    return cert_revoked(ts, cert, reason, len);
}

void tls_server_peer(struct tls_server *ts, SSL *ssl, struct tls_peer *out)
{
    X509 *cert = SSL_get0_peer_certificate(ssl);
    const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    intptr_t verr = (intptr_t)SSL_get_ex_data(ssl, tls_ex_verify_err);
    const char *why = NULL;

    out->verified = 0;
    out->device_id[0] = '\0';
    out->reason[0] = '\0';
    out->resumed = SSL_session_reused(ssl);
    snprintf(out->sni, sizeof(out->sni), "%s", sni != NULL ? sni : "");
    if (cert == NULL) {
        snprintf(out->reason, sizeof(out->reason), "no client certificate");
        return;
    }
    if (verr != 0 || SSL_get_verify_result(ssl) != X509_V_OK) {
        snprintf(out->reason, sizeof(out->reason), "%s",
                 verr != 0 ? verr_string(verr)
                           : X509_verify_cert_error_string(SSL_get_verify_result(ssl)));
        return;
    }
    if (out->resumed && recheck_resumed(ts, cert, SSL_get_ex_data(ssl, tls_ex_revchk) != NULL,
                                        out->reason, sizeof(out->reason)) == -1)
        return;
    if (device_id_from_cert(cert, ts->devid_source, ts->devid_prefix, out->device_id, &why) == -1) {
        snprintf(out->reason, sizeof(out->reason), "cannot read device id: %s", why);
        out->device_id[0] = '\0';
        return;
    }
    if (device_cert_thumbprint(cert, out->thumbprint) == -1) {
        snprintf(out->reason, sizeof(out->reason), "cannot compute certificate thumbprint");
        return;
    }
    out->verified = 1;
}

int tls_server_recheck(struct tls_server *ts, const struct tls_server *was, SSL *ssl, char *reason,
                       size_t len)
{
    X509 *cert = SSL_get0_peer_certificate(ssl);
    STACK_OF(X509) *chain = SSL_get_peer_cert_chain(ssl);
    X509_STORE_CTX *xs;
    int ok;

    if (cert == NULL) {
        snprintf(reason, len, "no client certificate");
        return -1;
    }
    /* The same CAs and CRLs as when the connection was verified (a reload
     * that changed something else): the verdict can only have changed with
     * the clock, so check the certificate's validity period and that no CRL
     * is past its nextUpdate and no CA certificate past its notAfter;
     * anything else gets the full verification. */
    if (was != NULL && CRYPTO_memcmp(was->trust_id, ts->trust_id, sizeof(ts->trust_id)) == 0 &&
        ts->crl_check == was->crl_check && (ts->crl_expires == 0 || time(NULL) < ts->crl_expires) &&
        X509_cmp_current_time(X509_get0_notBefore(cert)) < 0 &&
        X509_cmp_current_time(X509_get0_notAfter(cert)) > 0)
        return 0;
    xs = X509_STORE_CTX_new();
    if (xs == NULL || X509_STORE_CTX_init(xs, ts->store, cert, chain) != 1) {
        X509_STORE_CTX_free(xs);
        snprintf(reason, len, "cannot re-verify the certificate");
        return -1;
    }
    X509_STORE_CTX_set_purpose(xs, X509_PURPOSE_SSL_CLIENT);
    ok = X509_verify_cert(xs);
    if (ok != 1)
        snprintf(reason, len, "%s (after reload)",
                 X509_verify_cert_error_string(X509_STORE_CTX_get_error(xs)));
    X509_STORE_CTX_free(xs);
    return ok == 1 ? 0 : -1;
}

void tls_handshake_error(SSL *ssl, unsigned long e, char *buf, size_t len)
{
    intptr_t verr = ssl != NULL ? (intptr_t)SSL_get_ex_data(ssl, tls_ex_verify_err) : 0;

    if (verr != 0) {
        snprintf(buf, len, "%s", verr_string(verr));
        ERR_clear_error();
        return;
    }
    if (e == 0)
        e = ERR_peek_last_error();
    if (e != 0) {
        const char *r = ERR_reason_error_string(e);
        if (ERR_GET_REASON(e) == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE)
            snprintf(buf, len, "no client certificate");
        else
            snprintf(buf, len, "%s", r != NULL ? r : "TLS error");
    } else {
        snprintf(buf, len, "connection closed during handshake");
    }
    ERR_clear_error();
}

SSL_CTX *tls_upstream_ctx_new(const struct conf *c, size_t idx, char *err, size_t errlen)
{
    const struct conf_route *r = &c->routes[idx];
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    char jpath[64];

    if (ctx == NULL) {
        ssl_err_string(err, errlen, "tls", "cannot create upstream context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    if (r->upstream_verify) {
        int ok = r->upstream_ca != NULL ? SSL_CTX_load_verify_locations(ctx, r->upstream_ca, NULL)
                                        : SSL_CTX_set_default_verify_paths(ctx);
        if (ok != 1) {
            snprintf(jpath, sizeof(jpath), "$.routes[%zu].upstream_tls.ca", idx);
            ssl_err_at(err, errlen, c->path, jpath,
                       r->upstream_ca ? r->upstream_ca : "system store", "cannot load upstream CA");
            SSL_CTX_free(ctx);
            return NULL;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    return ctx;
}
