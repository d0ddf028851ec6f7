/*
 * session.h - sealed, device-bound session cookies, the key ring that seals
 * them, and the revocation store that can kill them early.
 *
 * A session cookie is "v1." + base64url(kid | nonce | AES-256-GCM(fields) |
 * tag). It names the user and the SHA-256 thumbprint of the device
 * certificate the login happened on; over any other certificate it is
 * refused (SESSION_WRONG_DEVICE). It carries no groups or roles: those are
 * looked up live on every request. docs/sessions.md has the whole story.
 *
 * Threads: a key ring is an immutable refcounted snapshot, so any number of
 * workers may open and seal with it at once. The revocation store is read
 * by every worker and written by one thread (see session_revocations_*).
 * struct session is plain caller storage: opening never allocates.
 */
#ifndef ZT_SESSION_H
#define ZT_SESSION_H

#include <stddef.h>
#include <stdint.h>

/* Hard limits. Every field is checked against them when sealing and again
 * when opening; a longer value is refused, never truncated. */
#define SESSION_ID_LEN 16         /* random session id, bytes */
#define SESSION_THUMBPRINT_LEN 32 /* SHA-256 of the device certificate (DER) */
#define SESSION_SUBJECT_MAX 255   /* OIDC "sub" is at most 255 ASCII characters */
#define SESSION_EMAIL_MAX 254     /* RFC 5321 path limit */
#define SESSION_PROVIDER_MAX 63   /* identity provider name from the config */
#define SESSION_ACR_MAX 127
#define SESSION_AMR_MAX 8       /* entries */
#define SESSION_AMR_ITEM_MAX 31 /* bytes per entry */
#define SESSION_NAME_MAX 64     /* cookie name, without the "__Host-" prefix */
#define SESSION_SID_MAX 255     /* the provider's session id ("sid" of the ID token) */

/* Longest cookie value session_cookie_seal() can produce, and so the longest
 * value session_cookie_open() accepts, plus the NUL: size seal buffers with
 * it. Anything longer is SESSION_MALFORMED before it is decoded. */
#define SESSION_COOKIE_MAX 1786
/* Largest blob session_blob_seal() takes, and the longest sealed value plus
 * the NUL: with "__Host-" and a name it stays under the 4096 bytes browsers
 * keep per cookie. */
#define SESSION_BLOB_MAX 2944
#define SESSION_BLOB_SEALED_MAX 3972
/* Room for a whole Set-Cookie value built by session_set_cookie(), for a
 * session cookie or a sealed blob. */
#define SESSION_SET_COOKIE_MAX (SESSION_BLOB_SEALED_MAX + SESSION_NAME_MAX + 128)

/* The key ring holds at most this many keys (retired ones included). */
#define SESSION_KEYRING_MAX 64

/*
 * One login, bound to one device. Strings are NUL-terminated UTF-8 without
 * control characters; times are Unix seconds.
 *
 * Invariants (checked by session_cookie_seal() and session_cookie_open()):
 * issued_at <= seen_at < idle_expires_at and issued_at < expires_at.
 */
struct session {
    uint8_t id[SESSION_ID_LEN];
    char provider[SESSION_PROVIDER_MAX + 1]; /* which identity provider issued the login */
    char subject[SESSION_SUBJECT_MAX + 1];   /* never empty */
    char email[SESSION_EMAIL_MAX + 1];       /* may be empty */
    char acr[SESSION_ACR_MAX + 1];           /* may be empty */
    char amr[SESSION_AMR_MAX][SESSION_AMR_ITEM_MAX + 1];
    size_t namr;
    int64_t auth_time;       /* when the user authenticated at the provider */
    int64_t issued_at;       /* when the proxy issued the session */
    int64_t expires_at;      /* absolute end: valid while now < expires_at */
    int64_t seen_at;         /* when the cookie was last (re)sealed */
    int64_t idle_expires_at; /* seen_at + idle timeout: valid while now < this */
    uint8_t thumbprint[SESSION_THUMBPRINT_LEN];
    /* The provider's session id ("sid" claim of the ID token) the login came
     * from; empty when the provider sent none. Back-channel logout by sid
     * revokes exactly the sessions carrying it. */
    char sid[SESSION_SID_MAX + 1];
};

/* What the SSO callback learned. Strings are copied; email, acr and sid may
 * be NULL; amr may be NULL when namr is 0. */
struct session_login {
    const char *provider;
    const char *subject;
    const char *email;
    const char *acr;
    const char *const *amr;
    size_t namr;
    int64_t auth_time;
    const uint8_t *thumbprint; /* SESSION_THUMBPRINT_LEN bytes */
    const char *sid;           /* the provider's session id, at most SESSION_SID_MAX */
};

/*
 * Why a cookie was or was not accepted. Callers branch on it: WRONG_DEVICE is
 * audit-logged as a possible stolen cookie, EXPIRED and IDLE_EXPIRED send the
 * user to log in again, the rest are refused quietly.
 */
enum session_result {
    SESSION_OK = 0,
    SESSION_MALFORMED,    /* bad prefix, base64, length or field encoding */
    SESSION_UNKNOWN_KEY,  /* key id not in the ring (never existed or retired) */
    SESSION_BAD_TAG,      /* authentication failed: tampered or foreign */
    SESSION_WRONG_DEVICE, /* sealed for another device certificate */
    SESSION_EXPIRED,      /* past the absolute expiry */
    SESSION_IDLE_EXPIRED, /* not used for longer than the idle timeout */
    SESSION_REVOKED,      /* by id or by user, see session_revocations_check() */
};

/* A short stable name for logs and audit reasons: "ok", "bad_tag", ... */
const char *session_result_str(enum session_result r);

/*
 * Start a session: copies and validates the login, draws a random id
 * (RAND_bytes), issued_at = seen_at = now, expires_at = now + lifetime,
 * idle_expires_at = now + idle_timeout. 0 ok; -1 if a field is missing,
 * too long or has control characters, a lifetime is not positive, or the
 * random generator failed (s is then zeroed).
 */
int session_init(struct session *s, const struct session_login *in, int64_t now, int64_t lifetime,
                 int64_t idle_timeout);

/* Mark the session used at now: seen_at = now, idle_expires_at = now +
 * idle_timeout. Call it before re-sealing when open asked for it. */
void session_touch(struct session *s, int64_t now, int64_t idle_timeout);

/* ---- key ring -------------------------------------------------------- */

struct session_keyring; /* opaque, immutable, refcounted */

/*
 * Parse key file text (a JSON array, see docs/sessions.md) without touching
 * the filesystem. name is used in messages. On success returns 0 and *out
 * (refcount 1, free with session_keyring_unref()); on failure returns -1,
 * leaves *out untouched and writes one line "name: what" into err.
 */
int session_keyring_parse(const char *text, size_t len, const char *name,
                          struct session_keyring **out, char *err, size_t errlen);

/* Read FILE and session_keyring_parse() it. The file must be a regular file
 * that neither group nor others can access (0600 or 0400), else -1. A reload
 * is a new load; a failed reload should keep the old ring. */
int session_keyring_load(const char *file, struct session_keyring **out, char *err, size_t errlen);

/* Create FILE (mode 0600) holding one fresh key from RAND_bytes, unless it
 * exists already (then it is left alone). 0 ok, -1 with a message in err. */
int session_keyring_generate(const char *file, char *err, size_t errlen);

struct session_keyring *session_keyring_ref(struct session_keyring *ring);
/* Drop a reference; the last one wipes the keys (OPENSSL_cleanse). NULL ok. */
void session_keyring_unref(struct session_keyring *ring);

/* The id (as in the file) of the key that seals, for logs. */
const char *session_keyring_current(const struct session_keyring *ring);

/* ---- cookies --------------------------------------------------------- */

/*
 * Seal s with the ring's newest key into buf as a NUL-terminated cookie
 * value. name is the cookie name without "__Host-" (it is authenticated, so
 * a value cannot be moved to another cookie). 0 ok (and *outlen, if not
 * NULL, is the length); -1 if s breaks a limit or an invariant, buf is
 * smaller than needed (SESSION_COOKIE_MAX always fits) or OpenSSL failed.
 */
int session_cookie_seal(const struct session_keyring *ring, const char *name,
                        const struct session *s, char *buf, size_t buflen, size_t *outlen);

/*
 * Open and check an untrusted cookie value (value[0..len), need not be
 * NUL-terminated) presented at time now over a connection whose client
 * certificate has SHA-256 thumbprint thumb.
 *
 * Checks, in order: format (MALFORMED), key id (UNKNOWN_KEY), tag (BAD_TAG),
 * field encoding (MALFORMED), device (WRONG_DEVICE), absolute expiry
 * (EXPIRED), idle expiry (IDLE_EXPIRED). The device is checked before the
 * times so a stolen cookie is reported as such even when it is old.
 *
 * out is caller storage. It is filled whenever the tag verified and the
 * fields decoded (OK, WRONG_DEVICE, EXPIRED, IDLE_EXPIRED: the audit log
 * wants to know whose cookie it was) and zeroed otherwise.
 *
 * *reseal (may be NULL) is set to 1 on OK when more than half of the idle
 * window has passed since the cookie was sealed: the caller should
 * session_touch() it, seal it again and send it with Set-Cookie. Else 0.
 * No allocation, no lock; safe from any thread.
 */
enum session_result session_cookie_open(const struct session_keyring *ring, const char *name,
                                        const char *value, size_t len, int64_t now,
                                        const uint8_t thumb[SESSION_THUMBPRINT_LEN],
                                        struct session *out, int *reseal);

/*
 * The time checks session_cookie_open() ends with, for a session opened
 * earlier (a connection that keeps the session it opened, proxy/sso.c):
 * SESSION_EXPIRED, SESSION_IDLE_EXPIRED or SESSION_OK at now, and *reseal
 * (may be NULL) exactly as session_cookie_open() would set it for the same
 * cookie at now. Pure; any thread.
 */
enum session_result session_check_times(const struct session *s, int64_t now, int *reseal);

/*
 * Sealed blobs: opaque bytes (the SSO login state: state, nonce, PKCE
 * verifier, return path) sealed with the same ring as "b1." + base64url(kid
 * | nonce | ciphertext | tag), AAD = kid | "ztproxy-blob-v1" | name. A blob
 * is never accepted as a session cookie nor the reverse. Blobs carry no
 * time: the caller puts one inside and checks it.
 *
 * seal: blob[0..len), len <= SESSION_BLOB_MAX, into buf as a NUL-terminated
 * value (SESSION_BLOB_SEALED_MAX always fits). 0 ok, -1 bad name, too long,
 * buf too small or OpenSSL failed.
 * open: 0 and the bytes in out[0..*outlen) (outmax: room in out); -1 for
 * anything else (malformed, unknown key, tampered, larger than outmax).
 */
int session_blob_seal(const struct session_keyring *ring, const char *name, const void *blob,
                      size_t len, char *buf, size_t buflen);
int session_blob_open(const struct session_keyring *ring, const char *name, const char *value,
                      size_t len, void *out, size_t outmax, size_t *outlen);

/*
 * Build a Set-Cookie header value into buf:
 *   __Host-<name>=<value>; Path=/; Max-Age=<max_age>; Secure; HttpOnly; SameSite=Lax
 * max_age is normally expires_at - now (the idle expiry is enforced from
 * inside the cookie). 0 ok, -1 if name or value has characters a cookie
 * cannot carry, max_age is negative, or buf is too small.
 */
int session_set_cookie(char *buf, size_t buflen, const char *name, const char *value,
                       int64_t max_age);
/* The same with an empty value and Max-Age=0: the browser drops the cookie. */
int session_clear_cookie(char *buf, size_t buflen, const char *name);

/* ---- revocation store ------------------------------------------------ */

struct session_revocations; /* opaque */

/*
 * Open the store kept in dir/revocations.log (dir must exist; the file is
 * created 0600). Entries older than max_lifetime (the longest absolute
 * session lifetime in use) are dropped: every session they could match has
 * expired by then. A last line without its newline (a crash mid-append) is
 * ignored; any other bad line is an error "file:line: what". The surviving
 * entries are written back compacted (temp file, fsync, rename). On success
 * returns 0 and *out (free with session_revocations_free()); else -1.
 */
int session_revocations_open(const char *dir, int64_t max_lifetime, int64_t now,
                             struct session_revocations **out, char *err, size_t errlen);

/*
 * Revoke one session, or every session of subject issued at or before now.
 * Writer side: call from one thread at a time. The entry is live for
 * readers before the call returns, then appended to the log and fsync'd
 * (a blocking write: not from a worker's event loop). 0 ok; -1 if the entry
 * could not be persisted (it still applies until the process exits), the
 * subject is empty or too long, or the store is full (1,000,000 entries).
 */
int session_revoke_id(struct session_revocations *rs, const uint8_t id[SESSION_ID_LEN],
                      int64_t now);
int session_revoke_user(struct session_revocations *rs, const char *subject, int64_t now);

/*
 * OpenID Connect Back-Channel Logout. session_revoke_sid(): every session
 * issued at or before now from the provider session sid of provider (the
 * logout token carried "sid"). session_revoke_provider_user(): every session
 * of subject issued at or before now by provider (the token carried only
 * "sub"); sessions of the same subject from other providers stay. Same
 * writer rules and results as session_revoke_user(); -1 also when provider,
 * sid or subject is empty, too long or has control characters.
 */
int session_revoke_sid(struct session_revocations *rs, const char *provider, const char *sid,
                       int64_t now);
int session_revoke_provider_user(struct session_revocations *rs, const char *provider,
                                 const char *subject, int64_t now);

/* Drop entries older than max_lifetime and rewrite the log compacted.
 * Writer side. 0 ok, -1 if the rewrite failed (memory is still pruned). */
int session_revocations_expire(struct session_revocations *rs, int64_t now);

/*
 * Every live entry, for replicas (proxy/shared.c republishes them at start,
 * so a revocation acknowledged while Redis was down survives a crash of
 * this replica for the others too). Exactly one of id, subject and
 * (provider, sid) / (provider, subject) is set: fn(arg, id, NULL, NULL,
 * NULL, at) for a session id, fn(arg, NULL, subject, NULL, NULL, at) for a
 * subject everywhere, fn(arg, NULL, NULL, provider, sid, at) for a provider
 * session, fn(arg, NULL, subject, provider, NULL, at) for a subject at one
 * provider. Writer side (the store is not changed meanwhile).
 */
typedef void (*session_revocation_cb)(void *arg, const uint8_t *id, const char *subject,
                                      const char *provider, const char *sid, int64_t at);
void session_revocations_foreach(struct session_revocations *rs, session_revocation_cb fn,
                                 void *arg);

/* Number of live entries (ids + users), for metrics and tests. */
size_t session_revocations_count(struct session_revocations *rs);

/*
 * A number that changes (grows) with every change to rs that a check could
 * see: a revocation added or raised, entries pruned. A reader that saw
 * generation G, then got SESSION_OK from session_revocations_check() for a
 * session, may treat that session as still unrevoked while the generation
 * is still G (read it before the check). Acquire semantics; any thread.
 */
uint64_t session_revocations_generation(struct session_revocations *rs);

/* SESSION_REVOKED if s's id is revoked, or its subject (everywhere or at
 * s->provider) or its provider session (s->provider, s->sid) was revoked at
 * or after s->issued_at, else SESSION_OK. Reader side: any thread, any time. */
enum session_result session_revocations_check(struct session_revocations *rs,
                                              const struct session *s);

/* Close the log and free everything. NULL ok. No reader may still use it. */
void session_revocations_free(struct session_revocations *rs);

#endif
