/*
 * jwt.c - JWKS parsing, JWT verification and the proxy's signed assertion.
 *
 * Division of labour: cjose verifies and makes every signature. This file
 * decides, before cjose sees the token, which key may be used with which
 * algorithm, because that is where JWT libraries have historically been
 * broken (alg "none", HMAC keyed with an RSA public key, keys embedded in
 * the token, signatures of the wrong length reaching unchecked code).
 * The token's three parts are decoded here with a strict base64url decoder
 * so that non-canonical encodings are refused and the header and payload
 * can be parsed with JSON_REJECT_DUPLICATES (two "sub" members would let two
 * parsers disagree on who the user is); cjose_jws_import then re-reads the
 * same bytes, and its plaintext must equal ours.
 *
 * Nothing here logs, reads the clock or touches the network. The signer is
 * the one part that does file I/O, at load time only.
 */
#include "jwt.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjose/cjose.h>
#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

/* NumericDate values beyond 9999-12-31T23:59:59Z are refused, so that
 * exp + skew and friends can never overflow. */
#define JWT_TIME_MAX INT64_C(253402300799)

#define RSA_MIN_BITS 2048
#define RSA_MAX_BITS 8192 /* bounds the cost of one verification */
#define P256_COORD 32
#define PEM_FILE_MAX (16 * 1024)

static void errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void errf(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ---- base64url (RFC 4648 section 5, no padding, canonical) -------------- */

static int b64u_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

/* Decoded size of len base64url characters, or (size_t)-1 for a length no
 * encoding can have. */
static size_t b64u_decoded_len(size_t len)
{
    if (len % 4 == 1)
        return (size_t)-1;
    return len / 4 * 3 + (len % 4 ? len % 4 - 1 : 0);
}

/*
 * Strict decoder: only the 64 URL-safe characters, no padding, no
 * whitespace, and the unused low bits of the last character must be zero
 * (so every byte string has exactly one accepted encoding). out needs
 * b64u_decoded_len(len) bytes. 0 or -1.
 */
static int b64u_decode(const char *in, size_t len, unsigned char *out, size_t *outlen)
{
    const unsigned char *p = (const unsigned char *)in;
    size_t i = 0, o = 0;
    uint32_t acc;
    int v[4];

    if (b64u_decoded_len(len) == (size_t)-1)
        return -1;
    for (; i + 4 <= len; i += 4) {
        for (int k = 0; k < 4; k++) {
            v[k] = b64u_value(p[i + k]);
            if (v[k] < 0)
                return -1;
        }
        acc = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        out[o++] = (unsigned char)(acc >> 16);
        out[o++] = (unsigned char)(acc >> 8);
        out[o++] = (unsigned char)acc;
    }
    if (len - i >= 2) {
        size_t rest = len - i;

        for (size_t k = 0; k < rest; k++) {
            v[k] = b64u_value(p[i + k]);
            if (v[k] < 0)
                return -1;
        }
        if (rest == 2) {
            if (v[1] & 0x0f)
                return -1;
            out[o++] = (unsigned char)(v[0] << 2 | v[1] >> 4);
        } else {
            if (v[2] & 0x03)
                return -1;
            out[o++] = (unsigned char)(v[0] << 2 | v[1] >> 4);
            out[o++] = (unsigned char)((v[1] & 0x0f) << 4 | v[2] >> 2);
        }
    }
    *outlen = o;
    return 0;
}

/* Encode; out needs (len * 4 + 2) / 3 + 1 bytes and is NUL-terminated.
 * Returns the length written. */
static size_t b64u_encode(const unsigned char *in, size_t len, char *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t i = 0, o = 0;

    for (; i + 3 <= len; i += 3) {
        uint32_t acc = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];

        out[o++] = tab[acc >> 18 & 63];
        out[o++] = tab[acc >> 12 & 63];
        out[o++] = tab[acc >> 6 & 63];
        out[o++] = tab[acc & 63];
    }
    if (len - i == 1) {
        out[o++] = tab[in[i] >> 2];
        out[o++] = tab[(in[i] & 3) << 4];
    } else if (len - i == 2) {
        out[o++] = tab[in[i] >> 2];
        out[o++] = tab[(in[i] & 3) << 4 | in[i + 1] >> 4];
        out[o++] = tab[(in[i + 1] & 15) << 2];
    }
    out[o] = '\0';
    return o;
}

/* Any byte below 0x20 or DEL: such strings are refused wherever they could
 * end up in a header, a log line or a lookup key. */
static int has_control(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c < 0x20 || c == 0x7f)
            return 1;
    }
    return 0;
}

/* ---- key sets ---------------------------------------------------------- */

struct jwt_key {
    char kid[JWT_KID_MAX + 1]; /* "" when the JWK has none */
    unsigned algs;             /* JWT_ALG_* this key may verify */
    size_t sig_len;            /* exact signature length: modulus bytes, or 64 */
    cjose_jwk_t *jwk;          /* public key; only read after the set is built */
};

struct jwt_keyset {
    atomic_int refs;
    size_t nkeys;
    struct jwt_key keys[]; /* nkeys entries */
};

static unsigned alg_bit(const char *alg)
{
    if (strcmp(alg, "RS256") == 0)
        return JWT_ALG_RS256;
    if (strcmp(alg, "PS256") == 0)
        return JWT_ALG_PS256;
    if (strcmp(alg, "ES256") == 0)
        return JWT_ALG_ES256;
    return 0;
}

static const char *alg_text(unsigned bit)
{
    switch (bit) {
    case JWT_ALG_RS256:
        return "RS256";
    case JWT_ALG_PS256:
        return "PS256";
    case JWT_ALG_ES256:
        return "ES256";
    default:
        return "";
    }
}

/* Decode a base64url JWK member into a fresh buffer. NULL when absent, not
 * a string, malformed, or longer than max bytes. */
static unsigned char *jwk_member_decode(json_t *k, const char *name, size_t max, size_t *len)
{
    json_t *v = json_object_get(k, name);
    const char *s;
    size_t slen, cap;
    unsigned char *buf;

    if (!json_is_string(v))
        return NULL;
    s = json_string_value(v);
    slen = json_string_length(v);
    cap = b64u_decoded_len(slen);
    if (cap == (size_t)-1 || cap == 0 || cap > max)
        return NULL;
    buf = malloc(cap);
    if (buf == NULL)
        return NULL;
    if (b64u_decode(s, slen, buf, len) == -1) {
        free(buf);
        return NULL;
    }
    return buf;
}

/* Check the RSA members ourselves: cjose does not bound the key size or the
 * exponent. Sets *sig_len to the modulus length in bytes. NULL or a reason. */
static const char *jwk_check_rsa(json_t *k, size_t *sig_len)
{
    const char *why = NULL;
    unsigned char *n = NULL, *e = NULL;
    size_t nlen = 0, elen = 0, off = 0, bits;

    n = jwk_member_decode(k, "n", RSA_MAX_BITS / 8 + 1, &nlen);
    e = jwk_member_decode(k, "e", 8, &elen);
    if (n == NULL || e == NULL) {
        why = "RSA key without a valid n or e";
        goto out;
    }
    while (off < nlen && n[off] == 0)
        off++;
    if (off == nlen) {
        why = "RSA modulus is zero";
        goto out;
    }
    bits = (nlen - off - 1) * 8;
    for (unsigned char top = n[off]; top != 0; top >>= 1)
        bits++;
    if (bits < RSA_MIN_BITS) {
        why = "RSA key shorter than 2048 bits";
        goto out;
    }
    if (bits > RSA_MAX_BITS) {
        why = "RSA key longer than 8192 bits";
        goto out;
    }
    /* e = 1 would make every padded message its own signature. */
    if ((e[elen - 1] & 1) == 0 || (elen == 1 && e[0] < 3)) {
        why = "RSA exponent is even or smaller than 3";
        goto out;
    }
    *sig_len = nlen - off;
out:
    free(n);
    free(e);
    return why;
}

static const char *jwk_check_ec(json_t *k)
{
    const char *why = NULL;
    json_t *crv = json_object_get(k, "crv");
    unsigned char *x = NULL, *y = NULL;
    size_t xlen = 0, ylen = 0;

    if (!json_is_string(crv) || strcmp(json_string_value(crv), "P-256") != 0)
        return "EC key not on curve P-256";
    x = jwk_member_decode(k, "x", P256_COORD, &xlen);
    y = jwk_member_decode(k, "y", P256_COORD, &ylen);
    if (x == NULL || y == NULL || xlen != P256_COORD || ylen != P256_COORD)
        why = "EC key without a valid x or y";
    free(x);
    free(y);
    return why;
}

/* Judge one JWK and import it into *key. NULL on success, else a static
 * reason for skipping it. */
static const char *jwk_load(json_t *k, struct jwt_key *key)
{
    static const char *const private_members[] = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"};
    json_t *kty, *use, *ops, *alg, *kid;
    const char *why;
    unsigned algs;
    size_t sig_len = 0;
    char *text;
    cjose_jwk_t *jwk;
    cjose_err cerr;

    if (!json_is_object(k))
        return "not a JSON object";
    kid = json_object_get(k, "kid");
    if (kid != NULL) {
        if (!json_is_string(kid))
            return "kid is not a string";
        if (json_string_length(kid) > JWT_KID_MAX)
            return "kid too long";
        if (has_control(json_string_value(kid), json_string_length(kid)))
            return "kid has a control character";
        memcpy(key->kid, json_string_value(kid), json_string_length(kid) + 1);
    }
    kty = json_object_get(k, "kty");
    if (!json_is_string(kty))
        return "kty missing";
    use = json_object_get(k, "use");
    if (use != NULL && (!json_is_string(use) || strcmp(json_string_value(use), "sig") != 0))
        return "use is not \"sig\"";
    ops = json_object_get(k, "key_ops");
    if (ops != NULL) {
        size_t i;
        json_t *op;
        int verify = 0;

        if (!json_is_array(ops))
            return "key_ops is not an array";
        json_array_foreach(ops, i, op)
        {
            if (json_is_string(op) && strcmp(json_string_value(op), "verify") == 0)
                verify = 1;
        }
        if (!verify)
            return "key_ops does not include \"verify\"";
    }
    for (size_t i = 0; i < sizeof(private_members) / sizeof(private_members[0]); i++) {
        if (json_object_get(k, private_members[i]) != NULL)
            return "private key material in a public key set";
    }

    if (strcmp(json_string_value(kty), "RSA") == 0) {
        algs = JWT_ALG_RS256 | JWT_ALG_PS256;
        why = jwk_check_rsa(k, &sig_len);
    } else if (strcmp(json_string_value(kty), "EC") == 0) {
        algs = JWT_ALG_ES256;
        sig_len = 2 * P256_COORD;
        why = jwk_check_ec(k);
    } else if (strcmp(json_string_value(kty), "oct") == 0) {
        return "symmetric key (kty oct) never verifies tokens";
    } else {
        return "unsupported kty";
    }
    if (why != NULL)
        return why;

    alg = json_object_get(k, "alg");
    if (alg != NULL) {
        unsigned bit = json_is_string(alg) ? alg_bit(json_string_value(alg)) : 0;

        if (bit == 0)
            return "alg is not RS256, PS256 or ES256";
        if ((bit & algs) == 0)
            return "alg does not fit the key type";
        algs = bit;
    }

    text = json_dumps(k, JSON_COMPACT);
    if (text == NULL)
        return "out of memory";
    memset(&cerr, 0, sizeof(cerr));
    jwk = cjose_jwk_import(text, strlen(text), &cerr);
    free(text);
    if (jwk == NULL)
        return "key refused by cjose";
    if (cjose_jwk_get_kty(jwk, &cerr) !=
        (algs == JWT_ALG_ES256 ? CJOSE_JWK_KTY_EC : CJOSE_JWK_KTY_RSA)) {
        cjose_jwk_release(jwk);
        return "key type changed on import";
    }
    key->algs = algs;
    key->sig_len = sig_len;
    key->jwk = jwk;
    return NULL;
}

int jwt_keyset_parse(const char *json, size_t len, jwt_keyset_skip_cb skip, void *arg,
                     struct jwt_keyset **out, char *err, size_t errlen)
{
    struct jwt_keyset *ks = NULL;
    json_t *root = NULL, *keys, *k;
    json_error_t jerr;
    size_t i, n;
    int rc = -1;

    if (len > JWT_JWKS_MAX_SIZE) {
        errf(err, errlen, "JWKS document larger than %d bytes", JWT_JWKS_MAX_SIZE);
        goto out;
    }
    root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        errf(err, errlen, "JWKS is not valid JSON: %s (offset %d)", jerr.text, jerr.position);
        goto out;
    }
    keys = json_object_get(root, "keys");
    if (!json_is_object(root) || !json_is_array(keys)) {
        errf(err, errlen, "JWKS is not an object with a \"keys\" array");
        goto out;
    }
    n = json_array_size(keys);
    if (n > JWT_JWKS_MAX_KEYS) {
        errf(err, errlen, "JWKS has %zu keys, more than %d", n, JWT_JWKS_MAX_KEYS);
        goto out;
    }
    ks = calloc(1, sizeof(*ks) + n * sizeof(ks->keys[0]));
    if (ks == NULL) {
        errf(err, errlen, "out of memory");
        goto out;
    }
    json_array_foreach(keys, i, k)
    {
        struct jwt_key *key = &ks->keys[ks->nkeys];
        const char *why = jwk_load(k, key);

        for (size_t j = 0; why == NULL && j < ks->nkeys; j++) {
            if (key->kid[0] != '\0' && strcmp(ks->keys[j].kid, key->kid) == 0) {
                why = "kid repeated (the first key with it is kept)";
                cjose_jwk_release(key->jwk);
            }
        }
        if (why != NULL) {
            if (skip != NULL)
                skip(arg, i, key->kid, why);
            memset(key, 0, sizeof(*key));
            continue;
        }
        ks->nkeys++;
    }
    if (ks->nkeys == 0) {
        errf(err, errlen, "JWKS has no usable key (of %zu)", n);
        goto out;
    }
    atomic_init(&ks->refs, 1);
    *out = ks;
    ks = NULL;
    rc = 0;
out:
    if (ks != NULL) {
        for (i = 0; i < ks->nkeys; i++)
            cjose_jwk_release(ks->keys[i].jwk);
        free(ks);
    }
    json_decref(root);
    return rc;
}

struct jwt_keyset *jwt_keyset_ref(struct jwt_keyset *ks)
{
    atomic_fetch_add_explicit(&ks->refs, 1, memory_order_relaxed);
    return ks;
}

void jwt_keyset_unref(struct jwt_keyset *ks)
{
    if (ks == NULL)
        return;
    if (atomic_fetch_sub_explicit(&ks->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (size_t i = 0; i < ks->nkeys; i++)
        cjose_jwk_release(ks->keys[i].jwk);
    free(ks);
}

size_t jwt_keyset_count(const struct jwt_keyset *ks)
{
    return ks->nkeys;
}

/* ---- verification ------------------------------------------------------ */

const char *jwt_result_name(enum jwt_result r)
{
    static const char *const names[] = {
        [JWT_OK] = "ok",
        [JWT_ERR_INTERNAL] = "internal",
        [JWT_ERR_TOO_LARGE] = "too_large",
        [JWT_ERR_FORMAT] = "format",
        [JWT_ERR_BASE64] = "base64",
        [JWT_ERR_HEADER] = "header",
        [JWT_ERR_ALG_NONE] = "alg_none",
        [JWT_ERR_ALG_HMAC] = "alg_hmac",
        [JWT_ERR_ALG_UNSUPPORTED] = "alg_unsupported",
        [JWT_ERR_HEADER_KEY_REF] = "header_key_ref",
        [JWT_ERR_CRIT] = "crit",
        [JWT_ERR_NO_SIGNATURE] = "no_signature",
        [JWT_ERR_KID_MISSING] = "kid_missing",
        [JWT_ERR_UNKNOWN_KID] = "unknown_kid",
        [JWT_ERR_KEY_MISMATCH] = "key_mismatch",
        [JWT_ERR_SIGNATURE] = "signature",
        [JWT_ERR_PAYLOAD] = "payload",
        [JWT_ERR_CLAIM] = "claim",
        [JWT_ERR_ISSUER] = "issuer",
        [JWT_ERR_AUDIENCE] = "audience",
        [JWT_ERR_AZP] = "azp",
        [JWT_ERR_EXP_MISSING] = "exp_missing",
        [JWT_ERR_EXPIRED] = "expired",
        [JWT_ERR_NOT_YET_VALID] = "not_yet_valid",
        [JWT_ERR_IAT_FUTURE] = "iat_future",
        [JWT_ERR_NONCE] = "nonce",
        [JWT_ERR_TOKEN_TYPE] = "token_type",
    };

    if ((unsigned)r >= sizeof(names) / sizeof(names[0]) || names[r] == NULL)
        return "unknown";
    return names[r];
}

/* A string claim copied into struct jwt_claims, with its three refusals. */
struct str_claim {
    const char *name;
    size_t off, cap;
    const char *not_string, *too_long, *control;
};

#define STR_CLAIM(n, field)                                                                        \
    {                                                                                              \
#n, offsetof(struct jwt_claims, field), sizeof(((struct jwt_claims *)0)->field),           \
            "claim " #n " is not a string", "claim " #n " is too long",                            \
            "claim " #n " has a control character"                                                 \
    }

static const struct str_claim str_claims[] = {
    STR_CLAIM(iss, iss),     STR_CLAIM(azp, azp),     STR_CLAIM(sub, sub),
    STR_CLAIM(email, email), STR_CLAIM(name, name),   STR_CLAIM(acr, acr),
    STR_CLAIM(sid, sid),     STR_CLAIM(nonce, nonce), STR_CLAIM(jti, jti),
};

/* A NumericDate claim with its refusals. */
struct time_claim {
    const char *name;
    size_t off, has_off; /* has_off: (size_t)-1 for exp (no flag) */
    const char *not_number, *range;
};

#define TIME_CLAIM(n, has)                                                                         \
    {                                                                                              \
#n, offsetof(struct jwt_claims, n), has, "claim " #n " is not a number",                   \
            "claim " #n " is out of range"                                                         \
    }

static const struct time_claim time_claims[] = {
    TIME_CLAIM(exp, (size_t)-1),
    TIME_CLAIM(iat, offsetof(struct jwt_claims, has_iat)),
    TIME_CLAIM(nbf, offsetof(struct jwt_claims, has_nbf)),
    TIME_CLAIM(auth_time, offsetof(struct jwt_claims, has_auth_time)),
};

/* Copy a string into dst[cap]; the error cases return the reason. */
static const char *copy_string(json_t *v, char *dst, size_t cap, const char *not_string,
                               const char *too_long, const char *control)
{
    size_t len;

    if (!json_is_string(v))
        return not_string;
    len = json_string_length(v);
    if (len >= cap)
        return too_long;
    if (has_control(json_string_value(v), len))
        return control;
    memcpy(dst, json_string_value(v), len + 1);
    return NULL;
}

static const char *claims_copy(json_t *pl, struct jwt_claims *out, int *has_exp)
{
    const char *why;
    json_t *v, *e;
    size_t i;

    for (i = 0; i < sizeof(str_claims) / sizeof(str_claims[0]); i++) {
        const struct str_claim *c = &str_claims[i];

        v = json_object_get(pl, c->name);
        if (v == NULL)
            continue;
        why = copy_string(v, (char *)out + c->off, c->cap, c->not_string, c->too_long, c->control);
        if (why != NULL)
            return why;
    }
    for (i = 0; i < sizeof(time_claims) / sizeof(time_claims[0]); i++) {
        const struct time_claim *c = &time_claims[i];
        int64_t t;

        v = json_object_get(pl, c->name);
        if (v == NULL)
            continue;
        if (json_is_integer(v)) {
            t = json_integer_value(v);
        } else if (json_is_real(v)) {
            double d = json_real_value(v);

            if (!isfinite(d) || d < 0 || d > (double)JWT_TIME_MAX)
                return c->range;
            t = (int64_t)floor(d);
        } else {
            return c->not_number;
        }
        if (t < 0 || t > JWT_TIME_MAX)
            return c->range;
        *(int64_t *)((char *)out + c->off) = t;
        if (c->has_off != (size_t)-1)
            *(int *)((char *)out + c->has_off) = 1;
        else
            *has_exp = 1;
    }

    v = json_object_get(pl, "email_verified");
    out->email_verified = json_is_boolean(v) ? json_is_true(v) : -1;

    v = json_object_get(pl, "amr");
    if (v != NULL) {
        if (!json_is_array(v))
            return "claim amr is not an array";
        if (json_array_size(v) > JWT_AMR_MAX)
            return "claim amr has too many values";
        json_array_foreach(v, i, e)
        {
            why =
                copy_string(e, out->amr[i], sizeof(out->amr[i]), "claim amr has a non-string",
                            "claim amr has a value too long", "claim amr has a control character");
            if (why != NULL)
                return why;
        }
        out->namr = json_array_size(v);
    }

    /* Groups are only reported, so damage is dropped, not refused. */
    v = json_object_get(pl, "groups");
    if (v != NULL && !json_is_array(v))
        out->groups_truncated = 1;
    json_array_foreach(v, i, e)
    {
        if (out->ngroups == JWT_GROUPS_MAX ||
            copy_string(e, out->groups[out->ngroups], sizeof(out->groups[0]), "", "", "") != NULL)
            out->groups_truncated = 1;
        else
            out->ngroups++;
    }

    v = json_object_get(pl, "cnf");
    if (v != NULL) {
        json_t *x5t;
        unsigned char tp[32];
        size_t tplen;

        if (!json_is_object(v))
            return "claim cnf is not an object";
        x5t = json_object_get(v, "x5t#S256");
        if (x5t != NULL) {
            /* A binding we cannot read must not be mistaken for no binding. */
            if (!json_is_string(x5t) || json_string_length(x5t) != JWT_X5T_S256_LEN ||
                b64u_decode(json_string_value(x5t), JWT_X5T_S256_LEN, tp, &tplen) == -1 ||
                tplen != sizeof(tp))
                return "claim cnf.x5t#S256 is malformed";
            memcpy(out->cnf_x5t_s256, json_string_value(x5t), JWT_X5T_S256_LEN + 1);
            out->has_cnf_x5t_s256 = 1;
        }
    }
    return NULL;
}

#define BACKCHANNEL_LOGOUT_EVENT "http://schemas.openid.net/event/backchannel-logout"

static int is_logout_token(json_t *pl)
{
    return json_object_get(json_object_get(pl, "events"), BACKCHANNEL_LOGOUT_EVENT) != NULL;
}

/* OpenID Connect Back-Channel Logout 1.0, section 2.6 (after iss, aud and
 * the times have been checked). */
static enum jwt_result logout_check(json_t *pl, const struct jwt_claims *out, const char **why)
{
    json_t *ev = json_object_get(pl, "events");

    if (!json_is_object(ev) || !json_is_object(json_object_get(ev, BACKCHANNEL_LOGOUT_EVENT))) {
        *why = "not a logout token (no back-channel logout event)";
        return JWT_ERR_TOKEN_TYPE;
    }
    if (json_object_get(pl, "nonce") != NULL) {
        *why = "logout token has a nonce";
        return JWT_ERR_NONCE;
    }
    if (!out->has_iat) {
        *why = "logout token without iat";
        return JWT_ERR_CLAIM;
    }
    if (out->jti[0] == '\0') {
        *why = "logout token without jti";
        return JWT_ERR_CLAIM;
    }
    if (out->sub[0] == '\0' && out->sid[0] == '\0') {
        *why = "logout token names neither sub nor sid";
        return JWT_ERR_CLAIM;
    }
    return JWT_OK;
}

/* Check the claims of an authenticated payload. */
static enum jwt_result claims_check(json_t *pl, const struct jwt_expect *x, int64_t skew,
                                    struct jwt_claims *out, const char **why)
{
    json_t *aud, *v;
    size_t naud = 0, i;
    const char *matched = NULL;
    int has_exp = 0;

    *why = claims_copy(pl, out, &has_exp);
    if (*why != NULL)
        return JWT_ERR_CLAIM;

    if (out->iss[0] == '\0' || strcmp(out->iss, x->issuer) != 0) {
        *why = out->iss[0] == '\0' ? "iss missing" : "iss is not the expected issuer";
        return JWT_ERR_ISSUER;
    }

    aud = json_object_get(pl, "aud");
    if (json_is_string(aud)) {
        naud = 1;
        for (i = 0; i < x->naudiences && matched == NULL; i++) {
            if (strcmp(json_string_value(aud), x->audiences[i]) == 0)
                matched = x->audiences[i];
        }
    } else if (json_is_array(aud)) {
        naud = json_array_size(aud);
        if (naud > JWT_AUD_MAX) {
            *why = "aud has too many values";
            return JWT_ERR_AUDIENCE;
        }
        json_array_foreach(aud, i, v)
        {
            if (!json_is_string(v)) {
                *why = "aud has a value that is not a string";
                return JWT_ERR_AUDIENCE;
            }
            for (size_t j = 0; j < x->naudiences && matched == NULL; j++) {
                if (strcmp(json_string_value(v), x->audiences[j]) == 0)
                    matched = x->audiences[j];
            }
        }
    } else {
        *why = aud == NULL ? "aud missing" : "aud is neither a string nor an array";
        return JWT_ERR_AUDIENCE;
    }
    if (matched == NULL) {
        *why = "aud does not contain an accepted audience";
        return JWT_ERR_AUDIENCE;
    }
    if (strlen(matched) >= sizeof(out->aud)) {
        *why = "accepted audience too long";
        return JWT_ERR_AUDIENCE;
    }
    memcpy(out->aud, matched, strlen(matched) + 1);

    if (x->azp != NULL) {
        if (json_object_get(pl, "azp") == NULL && naud > 1) {
            *why = "azp missing while aud has several values";
            return JWT_ERR_AZP;
        }
        if (json_object_get(pl, "azp") != NULL && strcmp(out->azp, x->azp) != 0) {
            *why = "azp is not the expected client";
            return JWT_ERR_AZP;
        }
    }

    if (!has_exp) {
        *why = "exp missing";
        return JWT_ERR_EXP_MISSING;
    }
    if (out->exp + skew <= x->now) {
        *why = "token expired (exp + skew <= now)";
        return JWT_ERR_EXPIRED;
    }
    if (out->has_nbf && out->nbf - skew > x->now) {
        *why = "token not yet valid (nbf - skew > now)";
        return JWT_ERR_NOT_YET_VALID;
    }
    if (out->has_iat && out->iat - skew > x->now) {
        *why = "token issued in the future (iat - skew > now)";
        return JWT_ERR_IAT_FUTURE;
    }

    if (x->logout_token)
        return logout_check(pl, out, why);
    if (is_logout_token(pl)) {
        *why = "a logout token is not a login token";
        return JWT_ERR_TOKEN_TYPE;
    }

    if (x->nonce != NULL) {
        size_t want = strlen(x->nonce), have = strlen(out->nonce);

        if (json_object_get(pl, "nonce") == NULL) {
            *why = "nonce missing";
            return JWT_ERR_NONCE;
        }
        if (want != have || CRYPTO_memcmp(x->nonce, out->nonce, want) != 0) {
            *why = "nonce does not match the login";
            return JWT_ERR_NONCE;
        }
    }

    if (out->sub[0] == '\0') {
        *why = "sub missing or empty";
        return JWT_ERR_CLAIM;
    }
    return JWT_OK;
}

/* The header checks: what a token may ask of us before any key is used. */
static enum jwt_result header_check(json_t *h, unsigned allowed, int logout, unsigned *alg,
                                    const char **kid, const char **why)
{
    static const struct {
        const char *name, *why;
    } key_refs[] = {
        {"jku", "header names a key URL (jku)"},
        {"x5u", "header names a certificate URL (x5u)"},
        {"jwk", "header embeds a key (jwk)"},
        {"x5c", "header embeds a certificate chain (x5c)"},
    };
    json_t *a, *k, *t;
    const char *s;

    if (!json_is_object(h)) {
        *why = "header is not a JSON object";
        return JWT_ERR_HEADER;
    }
    a = json_object_get(h, "alg");
    if (!json_is_string(a)) {
        *why = "header alg missing or not a string";
        return JWT_ERR_HEADER;
    }
    s = json_string_value(a);
    if (strcasecmp(s, "none") == 0) {
        *why = "alg none (unsigned token)";
        return JWT_ERR_ALG_NONE;
    }
    if (strcasecmp(s, "HS256") == 0 || strcasecmp(s, "HS384") == 0 || strcasecmp(s, "HS512") == 0) {
        *why = "alg HMAC (HS256/384/512) is never accepted";
        return JWT_ERR_ALG_HMAC;
    }
    *alg = alg_bit(s);
    if ((*alg & allowed) == 0) {
        *why = "alg not in the allow-list";
        return JWT_ERR_ALG_UNSUPPORTED;
    }
    for (size_t i = 0; i < sizeof(key_refs) / sizeof(key_refs[0]); i++) {
        if (json_object_get(h, key_refs[i].name) != NULL) {
            *why = key_refs[i].why;
            return JWT_ERR_HEADER_KEY_REF;
        }
    }
    if (json_object_get(h, "crit") != NULL) {
        *why = "header has crit (no extension is supported)";
        return JWT_ERR_CRIT;
    }
    t = json_object_get(h, "typ");
    if (t != NULL && !json_is_string(t)) {
        *why = "header typ is not a string";
        return JWT_ERR_HEADER;
    }
    if (!logout && t != NULL &&
        (strcasecmp(json_string_value(t), "logout+jwt") == 0 ||
         strcasecmp(json_string_value(t), "application/logout+jwt") == 0)) {
        *why = "typ logout+jwt where a login token was expected";
        return JWT_ERR_TOKEN_TYPE;
    }
    k = json_object_get(h, "kid");
    *kid = NULL;
    if (k != NULL) {
        if (!json_is_string(k)) {
            *why = "header kid is not a string";
            return JWT_ERR_HEADER;
        }
        /* Such a kid cannot be in any key set: say so, without prompting
         * the caller to refetch the JWKS. */
        if (json_string_length(k) > JWT_KID_MAX ||
            has_control(json_string_value(k), json_string_length(k))) {
            *why = "header kid too long or with a control character";
            return JWT_ERR_HEADER;
        }
        *kid = json_string_value(k);
    }
    return JWT_OK;
}

static enum jwt_result json_refusal(const json_error_t *e, enum jwt_result r, const char *dup,
                                    const char *bad, const char **why)
{
    *why = json_error_code(e) == json_error_duplicate_key ? dup : bad;
    return r;
}

enum jwt_result jwt_verify(const char *token, size_t len, const struct jwt_keyset *ks,
                           const struct jwt_expect *x, struct jwt_claims *out, const char **reason)
{
    enum jwt_result r = JWT_ERR_INTERNAL;
    const char *why = "internal error", *kid = NULL, *dot1, *dot2;
    const struct jwt_key *key = NULL;
    unsigned char *buf = NULL, *hdr, *pl, *sig;
    size_t max, hlen, plen, slen, hb, pb, sb, hcap, pcap, scap;
    json_t *h = NULL, *p = NULL;
    json_error_t jerr;
    cjose_jws_t *jws = NULL;
    cjose_err cerr;
    uint8_t *cj_pl = NULL;
    size_t cj_plen = 0;
    unsigned alg = 0, allowed;
    int64_t skew;

    memset(out, 0, sizeof(*out));
    out->email_verified = -1;
    max = x->max_token_size == 0 ? JWT_TOKEN_MAX_DEFAULT : x->max_token_size;
    if (max > JWT_TOKEN_MAX_HARD)
        max = JWT_TOKEN_MAX_HARD;
    allowed = x->algs == 0 ? JWT_ALG_ALL : x->algs & JWT_ALG_ALL;
    skew = x->skew < 0 ? 0 : x->skew > JWT_SKEW_MAX ? JWT_SKEW_MAX : x->skew;

    if (x->issuer == NULL || x->naudiences == 0 || x->audiences == NULL) {
        why = "verifier has no issuer or audience configured";
        goto out;
    }
    if (len > max) {
        r = JWT_ERR_TOO_LARGE;
        why = "token larger than the limit";
        goto out;
    }
    if (token == NULL || len == 0) {
        r = JWT_ERR_FORMAT;
        why = "empty token";
        goto out;
    }

    r = JWT_ERR_FORMAT;
    dot1 = memchr(token, '.', len);
    if (dot1 == NULL) {
        why = "token has one part, not three";
        goto out;
    }
    dot2 = memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token));
    if (dot2 == NULL) {
        why = "token has two parts: signature stripped";
        goto out;
    }
    if (memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token)) != NULL) {
        why = "token has more than three parts (JWE or garbage)";
        goto out;
    }
    hb = (size_t)(dot1 - token);
    pb = (size_t)(dot2 - dot1 - 1);
    sb = len - (size_t)(dot2 + 1 - token);
    if (hb == 0) {
        why = "token header part is empty";
        goto out;
    }
    if (pb == 0) {
        why = "token payload part is empty (detached payload)";
        goto out;
    }

    r = JWT_ERR_BASE64;
    hcap = b64u_decoded_len(hb);
    pcap = b64u_decoded_len(pb);
    scap = b64u_decoded_len(sb);
    if (hcap == (size_t)-1 || pcap == (size_t)-1 || scap == (size_t)-1) {
        why = "a token part has an impossible base64url length";
        goto out;
    }
    buf = malloc(hcap + pcap + scap + 1);
    if (buf == NULL) {
        r = JWT_ERR_INTERNAL;
        why = "out of memory";
        goto out;
    }
    hdr = buf;
    pl = hdr + hcap;
    sig = pl + pcap;
    if (b64u_decode(token, hb, hdr, &hlen) == -1) {
        why = "token header is not base64url";
        goto out;
    }
    if (b64u_decode(dot1 + 1, pb, pl, &plen) == -1) {
        why = "token payload is not base64url";
        goto out;
    }
    if (b64u_decode(dot2 + 1, sb, sig, &slen) == -1) {
        why = "token signature is not base64url";
        goto out;
    }

    h = json_loadb((const char *)hdr, hlen, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (h == NULL) {
        r = json_refusal(&jerr, JWT_ERR_HEADER, "header has a duplicate member",
                         "header is not valid JSON", &why);
        goto out;
    }
    r = header_check(h, allowed, x->logout_token, &alg, &kid, &why);
    if (r != JWT_OK)
        goto out;

    if (slen == 0) {
        r = JWT_ERR_NO_SIGNATURE;
        why = "signature part is empty (stripped signature)";
        goto out;
    }

    if (ks == NULL) {
        r = JWT_ERR_UNKNOWN_KID;
        why = "no provider key set loaded yet";
        goto out;
    }
    if (kid != NULL) {
        for (size_t i = 0; i < ks->nkeys && key == NULL; i++) {
            if (ks->keys[i].kid[0] != '\0' && strcmp(ks->keys[i].kid, kid) == 0)
                key = &ks->keys[i];
        }
        if (key == NULL) {
            r = JWT_ERR_UNKNOWN_KID;
            why = "kid not in the provider's key set";
            goto out;
        }
    } else if (ks->nkeys == 1) {
        key = &ks->keys[0];
    } else {
        r = JWT_ERR_KID_MISSING;
        why = "kid missing and the key set has several keys";
        goto out;
    }
    if ((key->algs & alg) == 0) {
        r = JWT_ERR_KEY_MISMATCH;
        why = "alg does not fit the key (kty, curve or the key's alg)";
        goto out;
    }
    /* cjose 0.6.2 trusts the length of RSA and EC signatures: check it. */
    if (slen != key->sig_len) {
        r = JWT_ERR_SIGNATURE;
        why = "signature length does not fit the key";
        goto out;
    }

    memset(&cerr, 0, sizeof(cerr));
    jws = cjose_jws_import(token, len, &cerr);
    if (jws == NULL) {
        r = JWT_ERR_FORMAT;
        why = "token refused by the JWS parser";
        goto out;
    }
    if (!cjose_jws_verify(jws, key->jwk, &cerr)) {
        r = JWT_ERR_SIGNATURE;
        why = "signature does not verify";
        goto out;
    }
    /* From here on the payload is authenticated. Both decoders must have
     * read the same bytes, or one of them is wrong. */
    if (!cjose_jws_get_plaintext(jws, &cj_pl, &cj_plen, &cerr) || cj_plen != plen ||
        memcmp(cj_pl, pl, plen) != 0) {
        r = JWT_ERR_INTERNAL;
        why = "payload decoders disagree";
        goto out;
    }

    p = json_loadb((const char *)pl, plen, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (p == NULL || !json_is_object(p)) {
        if (p == NULL)
            r = json_refusal(&jerr, JWT_ERR_PAYLOAD, "payload has a duplicate member",
                             "payload is not valid JSON", &why);
        else {
            r = JWT_ERR_PAYLOAD;
            why = "payload is not a JSON object";
        }
        goto out;
    }
    memcpy(out->alg, alg_text(alg), strlen(alg_text(alg)) + 1);
    if (kid != NULL)
        memcpy(out->kid, kid, strlen(kid) + 1);
    r = claims_check(p, x, skew, out, &why);
    if (r == JWT_OK)
        why = "ok";
out:
    if (r != JWT_OK) {
        memset(out, 0, sizeof(*out));
        out->email_verified = -1;
    }
    if (reason != NULL)
        *reason = why;
    cjose_jws_release(jws);
    json_decref(h);
    json_decref(p);
    free(buf);
    return r;
}

int jwt_cnf_x5t_match(const char *x5t_s256, const unsigned char tp[32])
{
    unsigned char want[32];
    size_t n = 0;
    int eq;

    if (x5t_s256 == NULL || strlen(x5t_s256) != JWT_X5T_S256_LEN ||
        b64u_decode(x5t_s256, JWT_X5T_S256_LEN, want, &n) == -1 || n != sizeof(want))
        return 0;
    eq = CRYPTO_memcmp(want, tp, sizeof(want)) == 0;
    return eq;
}

/* ---- signing key ring -------------------------------------------------- */

struct signer_key {
    char kid[JWT_X5T_S256_LEN + 1]; /* RFC 7638 thumbprint */
    char x[JWT_X5T_S256_LEN + 1];   /* base64url public coordinates */
    char y[JWT_X5T_S256_LEN + 1];
    cjose_jwk_t *jwk; /* private key */
};

struct jwt_signer {
    atomic_int refs;
    size_t nkeys;
    struct signer_key *keys; /* keys[0] signs */
    char *jwks;
    size_t jwks_len;
};

static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1; /* encrypted keys are refused, and nothing prompts on a tty */
}

static int bn_param32(const EVP_PKEY *pk, const char *name, unsigned char out[P256_COORD])
{
    BIGNUM *bn = NULL;
    int rc = -1;

    if (EVP_PKEY_get_bn_param(pk, name, &bn) == 1 && BN_num_bytes(bn) <= P256_COORD &&
        BN_bn2binpad(bn, out, P256_COORD) == P256_COORD)
        rc = 0;
    BN_clear_free(bn);
    return rc;
}

/* Turn an EC P-256 EVP_PKEY into a cjose private JWK and its public JWK
 * members. 0 or -1. */
static int signer_key_from_pkey(const EVP_PKEY *pk, struct signer_key *k, char *err, size_t errlen,
                                const char *path)
{
    unsigned char d[P256_COORD], x[P256_COORD], y[P256_COORD], md[SHA256_DIGEST_LENGTH];
    char group[32], thumb[160];
    cjose_jwk_ec_keyspec spec;
    cjose_err cerr;
    int n, rc = -1;

    if (!EVP_PKEY_is_a(pk, "EC") ||
        EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                       NULL) != 1 ||
        (strcmp(group, "prime256v1") != 0 && strcmp(group, "P-256") != 0)) {
        errf(err, errlen, "%s: not an EC P-256 private key", path);
        goto out;
    }
    if (bn_param32(pk, OSSL_PKEY_PARAM_PRIV_KEY, d) == -1 ||
        bn_param32(pk, OSSL_PKEY_PARAM_EC_PUB_X, x) == -1 ||
        bn_param32(pk, OSSL_PKEY_PARAM_EC_PUB_Y, y) == -1) {
        errf(err, errlen, "%s: cannot read the EC key parameters", path);
        goto out;
    }
    memset(&spec, 0, sizeof(spec));
    spec.crv = CJOSE_JWK_EC_P_256;
    spec.d = d;
    spec.dlen = sizeof(d);
    spec.x = x;
    spec.xlen = sizeof(x);
    spec.y = y;
    spec.ylen = sizeof(y);
    memset(&cerr, 0, sizeof(cerr));
    k->jwk = cjose_jwk_create_EC_spec(&spec, &cerr);
    if (k->jwk == NULL) {
        errf(err, errlen, "%s: cjose refused the key", path);
        goto out;
    }
    b64u_encode(x, sizeof(x), k->x);
    b64u_encode(y, sizeof(y), k->y);
    /* RFC 7638: members in lexicographic order, no whitespace. */
    n = snprintf(thumb, sizeof(thumb),
                 "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}", k->x, k->y);
    if (n < 0 || (size_t)n >= sizeof(thumb) ||
        SHA256((unsigned char *)thumb, (size_t)n, md) == NULL) {
        errf(err, errlen, "%s: cannot compute the key thumbprint", path);
        goto out;
    }
    b64u_encode(md, sizeof(md), k->kid);
    rc = 0;
out:
    OPENSSL_cleanse(d, sizeof(d));
    if (rc == -1 && k->jwk != NULL) {
        cjose_jwk_release(k->jwk);
        k->jwk = NULL;
    }
    return rc;
}

/* Read one private key file: must be a regular file, not a symlink, and
 * not accessible to group or others. */
static int signer_key_load(const char *path, struct signer_key *k, char *err, size_t errlen)
{
    unsigned char *text = NULL;
    EVP_PKEY *pk = NULL;
    BIO *bio = NULL;
    struct stat st;
    ssize_t n;
    size_t got = 0;
    int fd, rc = -1;

    fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd == -1) {
        errf(err, errlen, "%s: %s", path, strerror(errno));
        goto out;
    }
    if (fstat(fd, &st) == -1) {
        errf(err, errlen, "%s: %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        errf(err, errlen, "%s: not a regular file", path);
        goto out;
    }
    if ((st.st_mode & 077) != 0) {
        errf(err, errlen, "%s: private key is accessible to group or others (chmod 600)", path);
        goto out;
    }
    if (st.st_size > PEM_FILE_MAX) {
        errf(err, errlen, "%s: larger than %d bytes", path, PEM_FILE_MAX);
        goto out;
    }
    text = malloc(PEM_FILE_MAX);
    if (text == NULL) {
        errf(err, errlen, "%s: out of memory", path);
        goto out;
    }
    while (got < PEM_FILE_MAX) {
        n = read(fd, text + got, PEM_FILE_MAX - got);
        if (n == -1 && errno == EINTR)
            continue;
        if (n == -1) {
            errf(err, errlen, "%s: %s", path, strerror(errno));
            goto out;
        }
        if (n == 0)
            break;
        got += (size_t)n;
    }
    bio = BIO_new_mem_buf(text, (int)got);
    if (bio == NULL) {
        errf(err, errlen, "%s: out of memory", path);
        goto out;
    }
    pk = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
    if (pk == NULL) {
        errf(err, errlen, "%s: not an unencrypted PEM private key", path);
        goto out;
    }
    rc = signer_key_from_pkey(pk, k, err, errlen, path);
out:
    if (text != NULL) {
        OPENSSL_cleanse(text, PEM_FILE_MAX);
        free(text);
    }
    BIO_free(bio);
    EVP_PKEY_free(pk);
    if (fd != -1)
        close(fd);
    return rc;
}

int jwt_signer_key_generate(const char *path, char *err, size_t errlen)
{
    EVP_PKEY *pk = NULL;
    BIO *bio = NULL;
    int fd, rc = -1;

    /* "prime256v1", not "P-256": the name both the provider and the direct
     * EC method (tls_ec_decode_shortcut) know */
    pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "prime256v1");
    if (pk == NULL) {
        errf(err, errlen, "%s: EC key generation failed", path);
        return -1;
    }
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd == -1) {
        errf(err, errlen, "%s: %s", path, strerror(errno));
        goto out;
    }
    /* 0600 whatever the umask was. */
    if (fchmod(fd, 0600) == -1) {
        errf(err, errlen, "%s: %s", path, strerror(errno));
        goto out;
    }
    bio = BIO_new_fd(fd, BIO_NOCLOSE);
    if (bio == NULL || PEM_write_bio_PrivateKey(bio, pk, NULL, NULL, 0, NULL, NULL) != 1 ||
        BIO_flush(bio) != 1) {
        errf(err, errlen, "%s: cannot write the key", path);
        goto out;
    }
    if (fsync(fd) == -1) {
        errf(err, errlen, "%s: %s", path, strerror(errno));
        goto out;
    }
    rc = 0;
out:
    BIO_free(bio);
    EVP_PKEY_free(pk);
    if (fd != -1) {
        if (close(fd) == -1 && rc == 0) {
            errf(err, errlen, "%s: %s", path, strerror(errno));
            rc = -1;
        }
        if (rc == -1)
            unlink(path);
    }
    return rc;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int is_pem_name(const char *name)
{
    size_t n = strlen(name);

    return name[0] != '.' && n > 4 && strcmp(name + n - 4, ".pem") == 0;
}

/* List dir's *.pem names, sorted. 0 or -1. */
static int signer_list(const char *dir, char ***names, size_t *n, char *err, size_t errlen)
{
    DIR *d;
    struct dirent *de;
    char **v = NULL;
    size_t cnt = 0;
    int rc = -1;

    d = opendir(dir);
    if (d == NULL) {
        errf(err, errlen, "%s: %s", dir, strerror(errno));
        return -1;
    }
    v = calloc(JWT_JWKS_MAX_KEYS, sizeof(*v));
    if (v == NULL) {
        errf(err, errlen, "%s: out of memory", dir);
        goto out;
    }
    for (errno = 0, de = readdir(d); de != NULL; errno = 0, de = readdir(d)) {
        if (!is_pem_name(de->d_name))
            continue;
        if (cnt == JWT_JWKS_MAX_KEYS) {
            errf(err, errlen, "%s: more than %d key files", dir, JWT_JWKS_MAX_KEYS);
            goto out;
        }
        v[cnt] = strdup(de->d_name);
        if (v[cnt] == NULL) {
            errf(err, errlen, "%s: out of memory", dir);
            goto out;
        }
        cnt++;
    }
    if (errno != 0) {
        errf(err, errlen, "%s: %s", dir, strerror(errno));
        goto out;
    }
    qsort(v, cnt, sizeof(*v), name_cmp);
    *names = v;
    *n = cnt;
    v = NULL;
    rc = 0;
out:
    if (v != NULL) {
        for (size_t i = 0; i < cnt; i++)
            free(v[i]);
        free(v);
    }
    closedir(d);
    return rc;
}

static void signer_free(struct jwt_signer *s)
{
    for (size_t i = 0; i < s->nkeys; i++)
        cjose_jwk_release(s->keys[i].jwk);
    free(s->keys);
    free(s->jwks);
    free(s);
}

static char *signer_jwks_build(const struct jwt_signer *s)
{
    json_t *root, *arr;
    char *text = NULL;

    root = json_object();
    arr = json_array();
    if (root == NULL || arr == NULL || json_object_set(root, "keys", arr) == -1)
        goto out;
    for (size_t i = 0; i < s->nkeys; i++) {
        json_t *k = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "kty", "EC", "crv", "P-256",
                              "x", s->keys[i].x, "y", s->keys[i].y, "kid", s->keys[i].kid, "use",
                              "sig", "alg", "ES256");

        if (k == NULL || json_array_append_new(arr, k) == -1)
            goto out;
    }
    text = json_dumps(root, JSON_COMPACT);
out:
    json_decref(arr);
    json_decref(root);
    return text;
}

int jwt_signer_load(const char *dir, unsigned flags, struct jwt_signer **out, char *err,
                    size_t errlen)
{
    struct jwt_signer *s = NULL;
    char **names = NULL, path[4096];
    size_t n = 0, i;
    int rc = -1;

    if (signer_list(dir, &names, &n, err, errlen) == -1)
        return -1;
    if (n == 0 && (flags & JWT_SIGNER_CREATE)) {
        char stamp[32];
        time_t now = time(NULL);
        struct tm tm;

        if (gmtime_r(&now, &tm) == NULL ||
            strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm) == 0 ||
            (size_t)snprintf(path, sizeof(path), "%s/assertion-%s.pem", dir, stamp) >=
                sizeof(path)) {
            errf(err, errlen, "%s: cannot name a new key", dir);
            goto out;
        }
        if (jwt_signer_key_generate(path, err, errlen) == -1)
            goto out;
        names[0] = strdup(path + strlen(dir) + 1);
        if (names[0] == NULL) {
            errf(err, errlen, "%s: out of memory", dir);
            goto out;
        }
        n = 1;
    }
    if (n == 0) {
        errf(err, errlen, "%s: no *.pem signing key", dir);
        goto out;
    }
    s = calloc(1, sizeof(*s));
    if (s == NULL || (s->keys = calloc(n, sizeof(*s->keys))) == NULL) {
        errf(err, errlen, "%s: out of memory", dir);
        goto out;
    }
    /* The name that sorts last signs: it goes first. */
    for (i = 0; i < n; i++) {
        struct signer_key *k = &s->keys[s->nkeys];
        const char *name = names[n - 1 - i];

        if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path)) {
            errf(err, errlen, "%s: path too long", dir);
            goto out;
        }
        if (signer_key_load(path, k, err, errlen) == -1)
            goto out;
        s->nkeys++;
        for (size_t j = 0; j + 1 < s->nkeys; j++) {
            if (strcmp(s->keys[j].kid, k->kid) == 0) {
                errf(err, errlen, "%s: the same key is in another file", path);
                goto out;
            }
        }
    }
    s->jwks = signer_jwks_build(s);
    if (s->jwks == NULL) {
        errf(err, errlen, "%s: cannot build the JWKS", dir);
        goto out;
    }
    s->jwks_len = strlen(s->jwks);
    atomic_init(&s->refs, 1);
    *out = s;
    s = NULL;
    rc = 0;
out:
    if (s != NULL)
        signer_free(s);
    for (i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return rc;
}

struct jwt_signer *jwt_signer_ref(struct jwt_signer *s)
{
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    return s;
}

void jwt_signer_unref(struct jwt_signer *s)
{
    if (s == NULL)
        return;
    if (atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1)
        signer_free(s);
}

const char *jwt_signer_kid(const struct jwt_signer *s)
{
    return s->keys[0].kid;
}

const char *jwt_signer_jwks_json(const struct jwt_signer *s, size_t *len)
{
    if (len != NULL)
        *len = s->jwks_len;
    return s->jwks;
}

/* ---- assertions -------------------------------------------------------- */

#define CACHE_SLOTS 8
#define CACHE_KEY_MAX 4096
#define CACHE_REUSE_MAX 10

struct cache_slot {
    char *key; /* claims but iat/exp/jti, the lifetime and the kid */
    size_t key_len;
    char *token;
    size_t token_len;
    int64_t iat;
};

struct jwt_assertion_cache {
    int reuse;
    struct cache_slot slots[CACHE_SLOTS];
    char scratch[CACHE_KEY_MAX];
};

struct jwt_assertion_cache *jwt_assertion_cache_new(int reuse)
{
    struct jwt_assertion_cache *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return NULL;
    c->reuse = reuse < 0 ? 0 : reuse > CACHE_REUSE_MAX ? CACHE_REUSE_MAX : reuse;
    return c;
}

void jwt_assertion_cache_free(struct jwt_assertion_cache *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < CACHE_SLOTS; i++) {
        free(c->slots[i].key);
        free(c->slots[i].token);
    }
    free(c);
}

/* Append one length-prefixed field, so that no two inputs share a key:
 * '+' (or '-' for NULL), the length in decimal, ':', then the bytes. */
static int key_put(char *buf, size_t *off, const char *s)
{
    size_t len = s == NULL ? 0 : strlen(s), v = len, n = 0, need;
    char num[24];

    do {
        num[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    need = 1 + n + 1 + len;
    if (need >= CACHE_KEY_MAX - *off)
        return -1;
    buf[(*off)++] = s == NULL ? '-' : '+';
    while (n > 0)
        buf[(*off)++] = num[--n];
    buf[(*off)++] = ':';
    memcpy(buf + *off, s == NULL ? "" : s, len);
    *off += len;
    return 0;
}

/* Build the cache key in c->scratch. Its length, or 0 when it does not fit
 * (that assertion is then not cached). */
static size_t cache_key(struct jwt_assertion_cache *c, const struct jwt_signer *s,
                        const struct jwt_assertion *a)
{
    char life[16];
    size_t off = 0;

    snprintf(life, sizeof(life), "%d", a->lifetime);
    if (key_put(c->scratch, &off, s->keys[0].kid) == -1 || key_put(c->scratch, &off, life) == -1 ||
        key_put(c->scratch, &off, a->iss) == -1 || key_put(c->scratch, &off, a->aud) == -1 ||
        key_put(c->scratch, &off, a->sub) == -1 || key_put(c->scratch, &off, a->email) == -1 ||
        key_put(c->scratch, &off, a->device) == -1 ||
        key_put(c->scratch, &off, a->device_tier) == -1)
        return 0;
    for (size_t i = 0; i < a->ngroups; i++) {
        if (key_put(c->scratch, &off, a->groups[i]) == -1)
            return 0;
    }
    return off;
}

int jwt_assertion_reusable(int64_t iat, int64_t now, int lifetime, int reuse)
{
    /* A clock that went back, an entry older than reuse, or one that has
     * used up half its lifetime: sign anew. So a reused assertion always
     * has more than half of its lifetime left, and never an exp in the past. */
    return now >= iat && now - iat < reuse && (now - iat) * 2 < lifetime;
}

static int cache_lookup(struct jwt_assertion_cache *c, size_t klen, int64_t now, int lifetime,
                        char *out, size_t outlen, size_t *toklen, int64_t *iat)
{
    for (size_t i = 0; i < CACHE_SLOTS; i++) {
        struct cache_slot *sl = &c->slots[i];

        if (sl->key == NULL || sl->key_len != klen || memcmp(sl->key, c->scratch, klen) != 0)
            continue;
        if (!jwt_assertion_reusable(sl->iat, now, lifetime, c->reuse) || sl->token_len >= outlen)
            return -1;
        memcpy(out, sl->token, sl->token_len + 1);
        *toklen = sl->token_len;
        *iat = sl->iat;
        return 0;
    }
    return -1;
}

static void cache_store(struct jwt_assertion_cache *c, size_t klen, int64_t iat, const char *token,
                        size_t token_len)
{
    struct cache_slot *sl = &c->slots[0];
    char *key, *tok;

    for (size_t i = 0; i < CACHE_SLOTS; i++) {
        struct cache_slot *cand = &c->slots[i];

        if (cand->key != NULL && cand->key_len == klen &&
            memcmp(cand->key, c->scratch, klen) == 0) {
            sl = cand; /* replace the stale entry for the same claims */
            break;
        }
        if (cand->key == NULL || cand->iat < sl->iat)
            sl = cand;
        if (cand->key == NULL)
            break;
    }
    key = malloc(klen);
    tok = malloc(token_len + 1);
    if (key == NULL || tok == NULL) {
        free(key);
        free(tok);
        return; /* caching is an optimisation */
    }
    memcpy(key, c->scratch, klen);
    memcpy(tok, token, token_len + 1);
    free(sl->key);
    free(sl->token);
    sl->key = key;
    sl->key_len = klen;
    sl->token = tok;
    sl->token_len = token_len;
    sl->iat = iat;
}

static int assertion_valid(const struct jwt_assertion *a)
{
    if (a->iss == NULL || a->aud == NULL || a->sub == NULL || a->device == NULL ||
        a->device_tier == NULL || (a->ngroups > 0 && a->groups == NULL))
        return 0;
    if (a->lifetime < 1 || a->lifetime > JWT_ASSERTION_MAX_LIFETIME)
        return 0;
    if (a->now < 0 || a->now > JWT_TIME_MAX - JWT_ASSERTION_MAX_LIFETIME)
        return 0;
    for (size_t i = 0; i < a->ngroups; i++) {
        if (a->groups[i] == NULL)
            return 0;
    }
    return 1;
}

int jwt_assertion_sign(const struct jwt_signer *s, const struct jwt_assertion *a,
                       struct jwt_assertion_cache *cache, char *out, size_t outlen, size_t *toklen)
{
    int64_t iat;

    return jwt_assertion_sign_iat(s, a, cache, out, outlen, toklen, &iat);
}

int jwt_assertion_sign_iat(const struct jwt_signer *s, const struct jwt_assertion *a,
                           struct jwt_assertion_cache *cache, char *out, size_t outlen,
                           size_t *toklen, int64_t *iat)
{
    json_t *claims = NULL, *groups = NULL;
    cjose_header_t *hdr = NULL;
    cjose_jws_t *jws = NULL;
    cjose_err cerr;
    unsigned char rnd[16];
    char jti[32], *payload = NULL;
    const char *ser = NULL;
    size_t klen = 0, len;
    int rc = -1;

    if (!assertion_valid(a) || outlen == 0)
        return -1;
    if (cache != NULL && cache->reuse > 0) {
        klen = cache_key(cache, s, a);
        if (klen > 0 &&
            cache_lookup(cache, klen, a->now, a->lifetime, out, outlen, toklen, iat) == 0)
            return 0;
    }

    if (RAND_bytes(rnd, sizeof(rnd)) != 1)
        goto out;
    b64u_encode(rnd, sizeof(rnd), jti);
    groups = json_array();
    if (groups == NULL)
        goto out;
    for (size_t i = 0; i < a->ngroups; i++) {
        if (json_array_append_new(groups, json_string(a->groups[i])) == -1)
            goto out;
    }
    /* json_pack refuses (returns NULL for) strings that are not UTF-8. */
    claims = json_pack("{s:s, s:s, s:s}", "iss", a->iss, "aud", a->aud, "sub", a->sub);
    if (claims == NULL)
        goto out;
    if (a->email != NULL && json_object_set_new(claims, "email", json_string(a->email)) == -1)
        goto out;
    if (json_object_set(claims, "groups", groups) == -1 ||
        json_object_set_new(claims, "device", json_string(a->device)) == -1 ||
        json_object_set_new(claims, "device_tier", json_string(a->device_tier)) == -1 ||
        json_object_set_new(claims, "iat", json_integer(a->now)) == -1 ||
        json_object_set_new(claims, "exp", json_integer(a->now + a->lifetime)) == -1 ||
        json_object_set_new(claims, "jti", json_string(jti)) == -1)
        goto out;
    payload = json_dumps(claims, JSON_COMPACT);
    if (payload == NULL)
        goto out;

    memset(&cerr, 0, sizeof(cerr));
    hdr = cjose_header_new(&cerr);
    if (hdr == NULL || !cjose_header_set(hdr, CJOSE_HDR_ALG, CJOSE_HDR_ALG_ES256, &cerr) ||
        !cjose_header_set(hdr, "typ", "JWT", &cerr) ||
        !cjose_header_set(hdr, CJOSE_HDR_KID, s->keys[0].kid, &cerr))
        goto out;
    jws = cjose_jws_sign(s->keys[0].jwk, hdr, (const uint8_t *)payload, strlen(payload), &cerr);
    if (jws == NULL || !cjose_jws_export(jws, &ser, &cerr))
        goto out;
    len = strlen(ser);
    if (len >= outlen || len > JWT_ASSERTION_MAX)
        goto out;
    memcpy(out, ser, len + 1);
    *toklen = len;
    *iat = a->now;
    if (klen > 0)
        cache_store(cache, klen, a->now, out, len);
    rc = 0;
out:
    cjose_jws_release(jws);
    cjose_header_release(hdr);
    free(payload);
    json_decref(claims);
    json_decref(groups);
    return rc;
}
