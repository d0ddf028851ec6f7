/*
 * jwt.h - JSON Web Tokens: provider key sets, token verification, and the
 * assertion the proxy signs for upstreams.
 *
 * Pure core: bytes in, results out. Verification takes the clock as an
 * argument and never fetches anything (no jku/x5u, no JWKS refresh: the
 * caller owns the network and the refresh policy). Signatures are checked
 * and made by cjose, never by hand; this module decides which key and
 * algorithm cjose may use, and checks the claims.
 *
 * Threads: a struct jwt_keyset and a struct jwt_signer are immutable after
 * they are built and may be used by any number of threads at once; share
 * them through an atomic pointer and hold a reference (_ref/_unref) while in
 * use. A struct jwt_assertion_cache belongs to one thread.
 */
#ifndef ZT_JWT_H
#define ZT_JWT_H

#include <stddef.h>
#include <stdint.h>

/* ---- limits ------------------------------------------------------------ */

#define JWT_JWKS_MAX_SIZE (64 * 1024) /* bytes of a JWKS document */
#define JWT_JWKS_MAX_KEYS 64          /* entries in its "keys" array */
#define JWT_KID_MAX 128               /* bytes of a kid */
#define JWT_TOKEN_MAX_DEFAULT (16 * 1024)
#define JWT_TOKEN_MAX_HARD (64 * 1024) /* max_token_size is clamped to this */
#define JWT_SKEW_MAX 300               /* seconds; larger skews are clamped */
#define JWT_CLAIM_MAX 256              /* bytes of a copied string claim */
#define JWT_AMR_MAX 8                  /* amr values; more is refused */
#define JWT_AMR_LEN 32                 /* bytes of one amr value */
#define JWT_GROUPS_MAX 32              /* groups copied; the rest is dropped */
#define JWT_GROUP_LEN 128              /* bytes of one group; longer ones are dropped */
#define JWT_AUD_MAX 16                 /* entries of an aud array; more is refused */
#define JWT_X5T_S256_LEN 43            /* base64url of a SHA-256 digest, no padding */

/* Accepted signature algorithms (bit mask). Nothing else is ever accepted:
 * no "none", no HMAC, no RSA PKCS#1 with other hashes, no other curves. */
#define JWT_ALG_RS256 0x1u
#define JWT_ALG_PS256 0x2u
#define JWT_ALG_ES256 0x4u
#define JWT_ALG_ALL (JWT_ALG_RS256 | JWT_ALG_PS256 | JWT_ALG_ES256)

/* ---- key sets (JWKS) --------------------------------------------------- */

struct jwt_keyset; /* opaque, immutable, refcounted */

/* Called once for each key of a JWKS document that is skipped: index in the
 * "keys" array, its kid ("" when it has none) and a static reason. */
typedef void (*jwt_keyset_skip_cb)(void *arg, size_t index, const char *kid, const char *why);

/*
 * Parse a JWKS document (RFC 7517) from untrusted bytes. Usable keys are RSA
 * (2048..8192 bits, for RS256/PS256) and EC P-256 (for ES256) public keys
 * whose "use" is absent or "sig", whose "key_ops" (if any) include "verify"
 * and whose "alg" (if any) is RS256, PS256 or ES256. Any other key, a key
 * with private members, a malformed key and a repeated kid are skipped and
 * reported through skip (may be NULL). A document over JWT_JWKS_MAX_SIZE,
 * with more than JWT_JWKS_MAX_KEYS keys, that is not {"keys": [...]}, or
 * with no usable key is refused.
 *
 * Returns 0 and *out (refcount 1; release with jwt_keyset_unref()), or -1,
 * *out untouched, and a one-line reason in err.
 */
int jwt_keyset_parse(const char *json, size_t len, jwt_keyset_skip_cb skip, void *arg,
                     struct jwt_keyset **out, char *err, size_t errlen);

struct jwt_keyset *jwt_keyset_ref(struct jwt_keyset *ks); /* returns ks */
void jwt_keyset_unref(struct jwt_keyset *ks);             /* NULL is fine */

/* Number of usable keys (at least 1). */
size_t jwt_keyset_count(const struct jwt_keyset *ks);

/* ---- verification ------------------------------------------------------ */

enum jwt_result {
    JWT_OK = 0,
    JWT_ERR_INTERNAL,        /* allocation or library failure: fail closed */
    JWT_ERR_TOO_LARGE,       /* longer than max_token_size */
    JWT_ERR_FORMAT,          /* not exactly three dot-separated parts */
    JWT_ERR_BASE64,          /* a part is not canonical unpadded base64url */
    JWT_ERR_HEADER,          /* header: not a JSON object, duplicate or ill-typed member */
    JWT_ERR_ALG_NONE,        /* alg "none" (any case) */
    JWT_ERR_ALG_HMAC,        /* HS256/HS384/HS512: never, whatever the key */
    JWT_ERR_ALG_UNSUPPORTED, /* any other alg outside the allow-list */
    JWT_ERR_HEADER_KEY_REF,  /* jku, x5u, jwk or x5c: we never take keys from a token */
    JWT_ERR_CRIT,            /* crit: we implement no extension */
    JWT_ERR_NO_SIGNATURE,    /* empty signature part ("h.p.") */
    JWT_ERR_KID_MISSING,     /* no kid, and the key set has several keys */
    JWT_ERR_UNKNOWN_KID,     /* kid not in the key set: refetch the JWKS (rate-limited) */
    JWT_ERR_KEY_MISMATCH,    /* alg does not fit the key's kty/crv/alg */
    JWT_ERR_SIGNATURE,       /* signature does not verify */
    JWT_ERR_PAYLOAD,         /* payload: not a JSON object, or a duplicate member */
    JWT_ERR_CLAIM,           /* a claim is missing, ill-typed, too long or out of range */
    JWT_ERR_ISSUER,          /* iss missing or not ours */
    JWT_ERR_AUDIENCE,        /* aud missing or not containing an accepted audience */
    JWT_ERR_AZP,             /* azp missing (several audiences) or not ours */
    JWT_ERR_EXP_MISSING,     /* no exp */
    JWT_ERR_EXPIRED,         /* exp + skew <= now */
    JWT_ERR_NOT_YET_VALID,   /* nbf - skew > now */
    JWT_ERR_IAT_FUTURE,      /* iat - skew > now */
    JWT_ERR_NONCE,           /* nonce missing or not the expected one (or, in a logout
                              * token, present) */
    JWT_ERR_TOKEN_TYPE,      /* a logout token where a login token was expected, or the
                              * reverse */
};

/* What a token must satisfy. Strings are borrowed for the call only. */
struct jwt_expect {
    const char *issuer;           /* required; exact match */
    const char *const *audiences; /* accepted audiences (client ids, API names) */
    size_t naudiences;            /* at least 1 */
    const char *azp;              /* NULL: not checked. Else azp must equal it when present,
                                   * and must be present when aud has several values
                                   * (OpenID Connect Core 3.1.3.7) */
    const char *nonce;            /* NULL: not checked (bearer tokens); else must match */
    int logout_token;             /* 1: an OpenID Connect Back-Channel Logout token is
                                   * expected (see jwt_verify()) */
    unsigned algs;                /* JWT_ALG_* mask; 0 means JWT_ALG_ALL */
    int64_t now;                  /* seconds since the epoch */
    int64_t skew;                 /* allowed clock skew, seconds, 0..JWT_SKEW_MAX */
    size_t max_token_size;        /* 0: JWT_TOKEN_MAX_DEFAULT; at most JWT_TOKEN_MAX_HARD */
};

/*
 * The claims copied out of a verified token into caller storage (nothing
 * points into the token or the key set). Strings are NUL-terminated, ""
 * when absent; they never contain control characters (such a claim is
 * refused), so they are safe to log and to put into headers after the usual
 * header-value checks. Integers are 0 when absent; has_* tell.
 */
struct jwt_claims {
    char alg[8]; /* "RS256", "PS256" or "ES256" */
    char kid[JWT_KID_MAX + 1];
    char iss[JWT_CLAIM_MAX + 1];
    char aud[JWT_CLAIM_MAX + 1]; /* the accepted audience that matched */
    char azp[JWT_CLAIM_MAX + 1];
    char sub[JWT_CLAIM_MAX + 1]; /* never empty on JWT_OK */
    char email[JWT_CLAIM_MAX + 1];
    int email_verified; /* 1 true, 0 false, -1 absent or not a boolean */
    char name[JWT_CLAIM_MAX + 1];
    char acr[JWT_CLAIM_MAX + 1];
    char sid[JWT_CLAIM_MAX + 1]; /* provider session id (back-channel logout) */
    char nonce[JWT_CLAIM_MAX + 1];
    char jti[JWT_CLAIM_MAX + 1];
    char amr[JWT_AMR_MAX][JWT_AMR_LEN + 1];
    size_t namr;
    /* Groups as the provider put them: reported, never used to authorise
     * (groups come from the live directory). */
    char groups[JWT_GROUPS_MAX][JWT_GROUP_LEN + 1];
    size_t ngroups;
    int groups_truncated; /* some were dropped: too many, too long or not strings */
    /* RFC 8705 certificate binding: cnf.x5t#S256, checked for shape only;
     * compare it with jwt_cnf_x5t_match(). */
    char cnf_x5t_s256[JWT_X5T_S256_LEN + 1];
    int has_cnf_x5t_s256;
    int64_t iat, exp, nbf, auth_time;
    int has_iat, has_nbf, has_auth_time; /* exp is always present on JWT_OK */
};

/*
 * Verify a compact JWS token (an ID token or a bearer access token) of len
 * bytes against ks and exp, then check its claims. On JWT_OK *out holds the
 * claims. On any other result *out is cleared (all "", zeros) and nothing in
 * it may be used. *reason (if reason is not NULL) is always set to a static,
 * precise English reason for the audit log; it never contains token bytes.
 *
 * kid: a token with a kid uses exactly that key (JWT_ERR_UNKNOWN_KID when it
 * is not there: the caller may refetch the JWKS, at most once per interval,
 * and retry). A token without a kid is accepted only when the key set has
 * exactly one key (JWT_ERR_KID_MISSING otherwise). ks may be NULL (no JWKS
 * fetched yet): a well-formed token then gets JWT_ERR_UNKNOWN_KID.
 *
 * Token kinds: with exp->logout_token set, the token must be a Back-Channel
 * Logout 1.0 token: an "events" object with the member
 * "http://schemas.openid.net/event/backchannel-logout", no nonce, iat and
 * jti present, sub or sid present (sub may then be ""). Without it, a token
 * that carries that event or has typ "logout+jwt" is refused
 * (JWT_ERR_TOKEN_TYPE), so neither kind can stand in for the other. jti
 * replay is for the caller to track.
 *
 * Order of checks: size, shape, base64url, header (before any key is used),
 * key choice, signature (cjose), and only then the payload and the claims:
 * no unauthenticated payload byte is ever parsed.
 */
enum jwt_result jwt_verify(const char *token, size_t len, const struct jwt_keyset *ks,
                           const struct jwt_expect *exp, struct jwt_claims *out,
                           const char **reason);

/* Short stable name of a result ("ok", "expired", ...) for metrics labels. */
const char *jwt_result_name(enum jwt_result r);

/*
 * RFC 8705 certificate binding: does x5t_s256 (base64url, no padding, as in
 * cnf.x5t#S256) name the certificate whose SHA-256 thumbprint is tp?
 * Constant time in the thumbprint. 1 yes, 0 no (also for a malformed or
 * NULL x5t_s256).
 */
int jwt_cnf_x5t_match(const char *x5t_s256, const unsigned char tp[32]);

/* ---- the proxy's own assertion (X-ZT-Assertion) -------------------------- */

struct jwt_signer; /* opaque, immutable, refcounted */

#define JWT_SIGNER_CREATE 0x1 /* generate a key when the directory holds none */
#define JWT_ASSERTION_MAX_LIFETIME 60
#define JWT_ASSERTION_MAX 8192 /* bytes of a signed assertion; larger input is refused */

/*
 * Load the signing key ring from dir: every regular file named *.pem, each
 * an EC P-256 private key in PEM. A file readable or writable by group or
 * other, a symlink, or a key of another type is an error (the whole load
 * fails: a ring we cannot read completely is not a ring we publish). The
 * key whose file name sorts last signs; all are published in the JWKS, so
 * to rotate: add a newer file and reload; to retire a key: remove (or
 * rename away from *.pem) its file and reload. With JWT_SIGNER_CREATE and
 * no *.pem file, a key is generated into dir as
 * assertion-YYYYMMDDTHHMMSSZ.pem with mode 0600. At most JWT_JWKS_MAX_KEYS
 * files. Does file I/O: call at startup or reload, never on a loop.
 *
 * Returns 0 and *out (refcount 1; release with jwt_signer_unref()), or -1,
 * *out untouched, and a one-line reason in err.
 */
int jwt_signer_load(const char *dir, unsigned flags, struct jwt_signer **out, char *err,
                    size_t errlen);

/* Generate a new EC P-256 key into path (created 0600, never overwritten).
 * 0, or -1 with a reason in err. */
int jwt_signer_key_generate(const char *path, char *err, size_t errlen);

struct jwt_signer *jwt_signer_ref(struct jwt_signer *s); /* returns s */
void jwt_signer_unref(struct jwt_signer *s);             /* NULL is fine */

/* kid (RFC 7638 thumbprint) of the key that signs. Owned by s. */
const char *jwt_signer_kid(const struct jwt_signer *s);

/* The public JWKS of every key of the ring, the signing key first, for
 * /.zt/jwks.json. Built once at load: owned by s, valid while a reference
 * is held. *len (if not NULL) gets its length. */
const char *jwt_signer_jwks_json(const struct jwt_signer *s, size_t *len);

/* What the proxy asserts about a request. Strings are borrowed. */
struct jwt_assertion {
    const char *iss;           /* the proxy's identity, e.g. "https://ztproxy.corp.example" */
    const char *aud;           /* the route name */
    const char *sub;           /* user subject */
    const char *email;         /* NULL: omitted */
    const char *const *groups; /* live directory groups */
    size_t ngroups;
    const char *device;      /* device id */
    const char *device_tier; /* trust tier name */
    int64_t now;             /* iat */
    int lifetime;            /* exp - iat, 1..JWT_ASSERTION_MAX_LIFETIME seconds */
};

struct jwt_assertion_cache; /* opaque; owned by one thread */

/*
 * A small cache of signed assertions for one worker thread: an assertion
 * whose claims (everything but iat, exp and jti) and signing key are the
 * same as one signed less than reuse seconds ago is handed out again instead
 * of being signed anew, as long as less than half of its lifetime has
 * passed (jwt_assertion_reusable()): so it stays valid for more than
 * lifetime / 2 seconds, and never past its exp. reuse is clamped
 * to 0..10 seconds (0: the cache never hits). Free with
 * jwt_assertion_cache_free(). NULL on allocation failure.
 */
struct jwt_assertion_cache *jwt_assertion_cache_new(int reuse);
void jwt_assertion_cache_free(struct jwt_assertion_cache *c); /* NULL is fine */

/*
 * Sign an assertion with the signing key of s: header {alg ES256, typ JWT,
 * kid}, claims iss, aud, sub, email, groups, device, device_tier, iat, exp,
 * jti (128 random bits, base64url). cache may be NULL; it must belong to
 * the calling thread. Writes the NUL-terminated compact token into
 * out[0..outlen) and its length into *toklen.
 * Returns 0, or -1 (bad input, token longer than outlen - 1, library failure).
 */
int jwt_assertion_sign(const struct jwt_signer *s, const struct jwt_assertion *a,
                       struct jwt_assertion_cache *cache, char *out, size_t outlen, size_t *toklen);

/* The same, and *iat gets the token's iat: a->now when it was signed now,
 * earlier when the cache handed out one signed before (its exp is that
 * iat + a->lifetime). */
int jwt_assertion_sign_iat(const struct jwt_signer *s, const struct jwt_assertion *a,
                           struct jwt_assertion_cache *cache, char *out, size_t outlen,
                           size_t *toklen, int64_t *iat);

/*
 * May an assertion signed at iat with this lifetime (seconds) be handed out
 * again at now, with a reuse window of reuse seconds? Only while
 * iat <= now < iat + reuse and less than half of the lifetime has passed:
 * a reused assertion always has more than half of its lifetime left, so its
 * exp is never in the past (with lifetime 1 that means: the same second).
 * The worker cache above and the per-connection cache of proxy/sso.c both
 * use this rule.
 */
int jwt_assertion_reusable(int64_t iat, int64_t now, int lifetime, int reuse);

#endif
