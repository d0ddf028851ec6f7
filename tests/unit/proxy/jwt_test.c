/*
 * jwt_test.c - JWKS parsing, token verification, certificate binding and
 * the signed assertion (public API only).
 *
 * Keys are generated here (OpenSSL EVP), turned into JWKs with cjose, and
 * valid tokens are signed with cjose; attack tokens are either signed the
 * same way (so that only the attack is wrong) or put together by hand.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include <cjose/cjose.h>
#include <jansson.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/sha.h>

#include "jwt.h"

#define NOW INT64_C(1700000000)
#define ISS "https://idp.test"
#define AUD "ztproxy"

/* Test keys: created once in main(). The "evil" keys share kids with the
 * published ones but are not published. */
static cjose_jwk_t *rsa1, *rsa_evil, *ec1, *ec_evil, *rsa_small;
static EVP_PKEY *rsa1_pkey;
static char *jwks_text;         /* {"keys": [rsa1, ec1]} */
static struct jwt_keyset *keys; /* parsed jwks_text */

static const char *const auds[] = {AUD};

static struct jwt_expect expect_default(void)
{
    struct jwt_expect x;

    memset(&x, 0, sizeof(x));
    x.issuer = ISS;
    x.audiences = auds;
    x.naudiences = 1;
    x.now = NOW;
    x.skew = 60;
    return x;
}

/* ---- key and token helpers -------------------------------------------- */

static uint8_t *bn_bytes(const EVP_PKEY *pk, const char *name, size_t *len, size_t pad)
{
    BIGNUM *bn = NULL;
    uint8_t *buf;
    size_t n;

    assert_int_equal(EVP_PKEY_get_bn_param(pk, name, &bn), 1);
    n = pad ? pad : (size_t)BN_num_bytes(bn);
    buf = malloc(n);
    assert_non_null(buf);
    assert_int_equal(BN_bn2binpad(bn, buf, (int)n), (int)n);
    BN_free(bn);
    *len = n;
    return buf;
}

static cjose_jwk_t *jwk_from_rsa(EVP_PKEY *pk, const char *kid)
{
    cjose_jwk_rsa_keyspec spec;
    cjose_jwk_t *jwk;

    memset(&spec, 0, sizeof(spec));
    spec.n = bn_bytes(pk, OSSL_PKEY_PARAM_RSA_N, &spec.nlen, 0);
    spec.e = bn_bytes(pk, OSSL_PKEY_PARAM_RSA_E, &spec.elen, 0);
    spec.d = bn_bytes(pk, OSSL_PKEY_PARAM_RSA_D, &spec.dlen, 0);
    spec.p = bn_bytes(pk, OSSL_PKEY_PARAM_RSA_FACTOR1, &spec.plen, 0);
    spec.q = bn_bytes(pk, OSSL_PKEY_PARAM_RSA_FACTOR2, &spec.qlen, 0);
    spec.dp = bn_bytes(pk, OSSL_PKEY_PARAM_RSA_EXPONENT1, &spec.dplen, 0);
    spec.dq = bn_bytes(pk, OSSL_PKEY_PARAM_RSA_EXPONENT2, &spec.dqlen, 0);
    spec.qi = bn_bytes(pk, OSSL_PKEY_PARAM_RSA_COEFFICIENT1, &spec.qilen, 0);
    jwk = cjose_jwk_create_RSA_spec(&spec, NULL);
    assert_non_null(jwk);
    assert_true(cjose_jwk_set_kid(jwk, kid, strlen(kid), NULL));
    free(spec.n);
    free(spec.e);
    free(spec.d);
    free(spec.p);
    free(spec.q);
    free(spec.dp);
    free(spec.dq);
    free(spec.qi);
    return jwk;
}

static cjose_jwk_t *gen_rsa(unsigned bits, const char *kid, EVP_PKEY **keep)
{
    EVP_PKEY *pk = EVP_RSA_gen(bits);
    cjose_jwk_t *jwk;

    assert_non_null(pk);
    jwk = jwk_from_rsa(pk, kid);
    if (keep != NULL)
        *keep = pk;
    else
        EVP_PKEY_free(pk);
    return jwk;
}

static cjose_jwk_t *gen_ec(const char *kid)
{
    EVP_PKEY *pk = EVP_EC_gen("P-256");
    cjose_jwk_ec_keyspec spec;
    cjose_jwk_t *jwk;

    assert_non_null(pk);
    memset(&spec, 0, sizeof(spec));
    spec.crv = CJOSE_JWK_EC_P_256;
    spec.d = bn_bytes(pk, OSSL_PKEY_PARAM_PRIV_KEY, &spec.dlen, 32);
    spec.x = bn_bytes(pk, OSSL_PKEY_PARAM_EC_PUB_X, &spec.xlen, 32);
    spec.y = bn_bytes(pk, OSSL_PKEY_PARAM_EC_PUB_Y, &spec.ylen, 32);
    jwk = cjose_jwk_create_EC_spec(&spec, NULL);
    assert_non_null(jwk);
    assert_true(cjose_jwk_set_kid(jwk, kid, strlen(kid), NULL));
    free(spec.d);
    free(spec.x);
    free(spec.y);
    EVP_PKEY_free(pk);
    return jwk;
}

/* The public JWK of k as a jansson object, with extra members merged in. */
static json_t *pub_jwk(const cjose_jwk_t *k, const char *extra_json)
{
    char *text = cjose_jwk_to_json(k, false, NULL);
    json_t *o;

    assert_non_null(text);
    o = json_loads(text, 0, NULL);
    assert_non_null(o);
    free(text);
    if (extra_json != NULL) {
        json_t *e = json_loads(extra_json, 0, NULL);

        assert_non_null(e);
        assert_int_equal(json_object_update(o, e), 0);
        json_decref(e);
    }
    return o;
}

/* {"keys": arr} as text; takes arr. */
static char *jwks_dump(json_t *arr)
{
    json_t *doc = json_pack("{s:o}", "keys", arr);
    char *text;

    assert_non_null(doc);
    text = json_dumps(doc, JSON_COMPACT);
    assert_non_null(text);
    json_decref(doc);
    return text;
}

static char *jwks_of(json_t *k1, json_t *k2)
{
    json_t *arr = json_array();
    char *text;

    if (k1 != NULL)
        json_array_append_new(arr, k1);
    if (k2 != NULL)
        json_array_append_new(arr, k2);
    text = jwks_dump(arr);
    return text;
}

static struct jwt_keyset *keyset_of(const char *text)
{
    struct jwt_keyset *ks = NULL;
    char err[256];

    assert_int_equal(jwt_keyset_parse(text, strlen(text), NULL, NULL, &ks, err, sizeof(err)), 0);
    return ks;
}

/* Sign payload with cjose. extra_name/extra_raw: one more header member
 * (raw JSON value), or NULL. kid NULL: no kid. Caller frees. */
static char *sign_ex(const cjose_jwk_t *k, const char *alg, const char *kid, const char *payload,
                     const char *extra_name, const char *extra_raw)
{
    cjose_header_t *h = cjose_header_new(NULL);
    cjose_jws_t *jws;
    const char *ser = NULL;
    char *out;

    assert_non_null(h);
    assert_true(cjose_header_set(h, CJOSE_HDR_ALG, alg, NULL));
    if (kid != NULL)
        assert_true(cjose_header_set(h, CJOSE_HDR_KID, kid, NULL));
    if (extra_name != NULL && extra_raw[0] == '"') {
        /* cjose_header_set_raw() only takes objects and arrays */
        char *str = strndup(extra_raw + 1, strlen(extra_raw) - 2);

        assert_true(cjose_header_set(h, extra_name, str, NULL));
        free(str);
    } else if (extra_name != NULL) {
        assert_true(cjose_header_set_raw(h, extra_name, extra_raw, NULL));
    }
    jws = cjose_jws_sign(k, h, (const uint8_t *)payload, strlen(payload), NULL);
    assert_non_null(jws);
    assert_true(cjose_jws_export(jws, &ser, NULL));
    out = strdup(ser);
    assert_non_null(out);
    cjose_jws_release(jws);
    cjose_header_release(h);
    return out;
}

static char *sign_tok(const cjose_jwk_t *k, const char *alg, const char *kid, const char *payload)
{
    return sign_ex(k, alg, kid, payload, NULL, NULL);
}

static char *b64u(const void *data, size_t len)
{
    char *out = NULL, *copy;
    size_t olen = 0;

    assert_true(cjose_base64url_encode(data, len, &out, &olen, NULL));
    copy = strndup(out, olen);
    free(out);
    return copy;
}

/* header.payload.sig from raw JSON texts and raw signature bytes. */
static char *craft(const char *hdr, const char *payload, const void *sig, size_t siglen)
{
    char *h = b64u(hdr, strlen(hdr)), *p = b64u(payload, strlen(payload));
    char *s = siglen ? b64u(sig, siglen) : strdup("");
    char *out = NULL;

    assert_true(asprintf(&out, "%s.%s.%s", h, p, s) > 0);
    free(h);
    free(p);
    free(s);
    return out;
}

/* Standard claims, valid at NOW. */
static char *claims(const char *extra)
{
    char *out = NULL;

    assert_true(asprintf(&out,
                         "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"sub\":\"alice\","
                         "\"iat\":%lld,\"exp\":%lld%s%s}",
                         (long long)NOW, (long long)NOW + 300, extra ? "," : "",
                         extra ? extra : "") > 0);
    return out;
}

static void check_tok(const char *tok, const struct jwt_expect *x, enum jwt_result want,
                      const char *want_why)
{
    struct jwt_claims c;
    const char *why = NULL;
    enum jwt_result r = jwt_verify(tok, strlen(tok), keys, x, &c, &why);

    if (r != want || (want_why != NULL && strcmp(why, want_why) != 0))
        fail_msg("want %s (%s), got %s (%s)", jwt_result_name(want), want_why ? want_why : "-",
                 jwt_result_name(r), why);
    assert_non_null(why);
    if (r != JWT_OK)
        assert_string_equal(c.sub, ""); /* cleared on refusal */
}

/* ---- valid tokens ------------------------------------------------------ */

static void test_valid_algs(void **state)
{
    struct jwt_expect x = expect_default();
    char *p = claims(NULL);
    char *t1 = sign_tok(rsa1, "RS256", "rsa1", p);
    char *t2 = sign_tok(rsa1, "PS256", "rsa1", p);
    char *t3 = sign_tok(ec1, "ES256", "ec1", p);
    struct jwt_claims c;
    const char *why;

    (void)state;
    check_tok(t1, &x, JWT_OK, "ok");
    check_tok(t2, &x, JWT_OK, "ok");
    check_tok(t3, &x, JWT_OK, "ok");
    assert_int_equal(jwt_verify(t3, strlen(t3), keys, &x, &c, &why), JWT_OK);
    assert_string_equal(c.alg, "ES256");
    assert_string_equal(c.kid, "ec1");
    assert_string_equal(c.sub, "alice");
    assert_string_equal(c.aud, AUD);
    assert_int_equal(c.exp, NOW + 300);
    /* the allow-list can be narrowed per verifier */
    x.algs = JWT_ALG_ES256;
    check_tok(t1, &x, JWT_ERR_ALG_UNSUPPORTED, "alg not in the allow-list");
    check_tok(t3, &x, JWT_OK, "ok");
    free(p);
    free(t1);
    free(t2);
    free(t3);
}

static void test_claims_copied(void **state)
{
    struct jwt_expect x = expect_default();
    unsigned char tp[32];
    char *x5t, *extra = NULL, *p, *t;
    struct jwt_claims c;
    const char *why;

    (void)state;
    memset(tp, 0xab, sizeof(tp));
    x5t = b64u(tp, sizeof(tp));
    assert_true(asprintf(&extra,
                         "\"email\":\"alice@corp.test\",\"email_verified\":true,"
                         "\"name\":\"Alice Liddell\",\"acr\":\"urn:mfa\",\"sid\":\"s-123\","
                         "\"nonce\":\"n-0S6\",\"auth_time\":%lld,\"nbf\":%lld,"
                         "\"amr\":[\"pwd\",\"otp\"],\"groups\":[\"staff\",\"eng\"],"
                         "\"azp\":\"ztproxy\",\"cnf\":{\"x5t#S256\":\"%s\"}",
                         (long long)NOW - 30, (long long)NOW - 10, x5t) > 0);
    p = claims(extra);
    t = sign_tok(rsa1, "RS256", "rsa1", p);
    x.nonce = "n-0S6";
    x.azp = AUD;
    assert_int_equal(jwt_verify(t, strlen(t), keys, &x, &c, &why), JWT_OK);
    assert_string_equal(why, "ok");
    assert_string_equal(c.iss, ISS);
    assert_string_equal(c.email, "alice@corp.test");
    assert_int_equal(c.email_verified, 1);
    assert_string_equal(c.name, "Alice Liddell");
    assert_string_equal(c.acr, "urn:mfa");
    assert_string_equal(c.sid, "s-123");
    assert_string_equal(c.nonce, "n-0S6");
    assert_string_equal(c.azp, AUD);
    assert_int_equal(c.has_auth_time, 1);
    assert_int_equal(c.auth_time, NOW - 30);
    assert_int_equal(c.has_nbf, 1);
    assert_int_equal(c.nbf, NOW - 10);
    assert_int_equal(c.has_iat, 1);
    assert_int_equal(c.iat, NOW);
    assert_int_equal(c.namr, 2);
    assert_string_equal(c.amr[0], "pwd");
    assert_string_equal(c.amr[1], "otp");
    assert_int_equal(c.ngroups, 2);
    assert_string_equal(c.groups[1], "eng");
    assert_int_equal(c.groups_truncated, 0);
    assert_int_equal(c.has_cnf_x5t_s256, 1);
    assert_string_equal(c.cnf_x5t_s256, x5t);
    assert_int_equal(jwt_cnf_x5t_match(c.cnf_x5t_s256, tp), 1);
    free(t);
    free(p);
    free(extra);

    /* absent optional claims read as absent */
    p = claims("\"email_verified\":\"true\"");
    t = sign_tok(ec1, "ES256", "ec1", p);
    x = expect_default();
    assert_int_equal(jwt_verify(t, strlen(t), keys, &x, &c, &why), JWT_OK);
    assert_int_equal(c.email_verified, -1);
    assert_int_equal(c.has_nbf, 0);
    assert_int_equal(c.has_auth_time, 0);
    assert_int_equal(c.has_cnf_x5t_s256, 0);
    assert_int_equal(c.namr, 0);
    assert_string_equal(c.email, "");
    free(t);
    free(p);
    free(x5t);
}

/* ---- attacks, each refused with its own reason ------------------------- */

struct attack {
    const char *label;
    char *tok;
    enum jwt_result want;
    const char *why; /* the exact reason */
};

static void run_attacks(struct attack *a, size_t n, const struct jwt_expect *x)
{
    struct jwt_claims c;

    for (size_t i = 0; i < n; i++) {
        const char *why = NULL;
        enum jwt_result r = jwt_verify(a[i].tok, strlen(a[i].tok), keys, x, &c, &why);

        if (r != a[i].want || strcmp(why, a[i].why) != 0)
            fail_msg("%s: want %s (%s), got %s (%s)", a[i].label, jwt_result_name(a[i].want),
                     a[i].why, jwt_result_name(r), why);
        assert_string_equal(c.sub, "");
        free(a[i].tok);
    }
}

static char *hs256_with_public_key(void)
{
    /* The classic confusion: the RSA public key (PEM, as a verifier that
     * feeds "the key" to HMAC would see it) used as the HMAC secret. */
    BIO *bio = BIO_new(BIO_s_mem());
    char *pem, *hdr64, *pl64, *input = NULL, *sig64, *tok = NULL;
    long pemlen;
    unsigned char mac[32];
    unsigned int maclen = 0;
    char *p = claims(NULL);
    const char *hs_hdr = "{\"alg\":\"HS256\",\"kid\":\"rsa1\"}";

    assert_int_equal(PEM_write_bio_PUBKEY(bio, rsa1_pkey), 1);
    pemlen = BIO_get_mem_data(bio, &pem);
    hdr64 = b64u(hs_hdr, strlen(hs_hdr));
    pl64 = b64u(p, strlen(p));
    assert_true(asprintf(&input, "%s.%s", hdr64, pl64) > 0);
    assert_non_null(
        HMAC(EVP_sha256(), pem, (int)pemlen, (unsigned char *)input, strlen(input), mac, &maclen));
    sig64 = b64u(mac, maclen);
    assert_true(asprintf(&tok, "%s.%s", input, sig64) > 0);
    BIO_free(bio);
    free(hdr64);
    free(pl64);
    free(input);
    free(sig64);
    free(p);
    return tok;
}

/* Replace the signature of tok with sig[0..len). */
static char *resign(const char *tok, const void *sig, size_t len)
{
    const char *dot = strrchr(tok, '.');
    char *s = b64u(sig, len), *out = NULL;

    assert_true(asprintf(&out, "%.*s.%s", (int)(dot - tok), tok, s) > 0);
    free(s);
    return out;
}

static void test_attacks(void **state)
{
    struct jwt_expect x = expect_default();
    char *p = claims(NULL), *good = sign_tok(rsa1, "RS256", "rsa1", p);
    char *good_ec = sign_tok(ec1, "ES256", "ec1", p);
    char *tampered, *stripped, *two, *four = NULL, *big, *dup;
    unsigned char zeros[64], junk[256];
    char *dup_payload;

    (void)state;
    memset(zeros, 0, sizeof(zeros));
    memset(junk, 0x5a, sizeof(junk));

    tampered = strdup(good);
    {
        /* flip one payload character: sub "alice" -> another encoding */
        char *d1 = strchr(tampered, '.');

        d1[5] = d1[5] == 'A' ? 'B' : 'A';
    }
    stripped = strdup(good);
    strrchr(stripped, '.')[1] = '\0'; /* "h.p." */
    two = strdup(good);
    *strrchr(two, '.') = '\0'; /* "h.p" */
    assert_true(asprintf(&four, "%s.abcd", good) > 0);
    big = malloc(100 * 1024 + 1);
    memset(big, 'A', 100 * 1024);
    big[100 * 1024] = '\0';
    big[100] = '.';
    big[200] = '.';
    assert_true(asprintf(&dup_payload,
                         "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"sub\":\"alice\","
                         "\"sub\":\"root\",\"exp\":%lld}",
                         (long long)NOW + 300) > 0);
    dup = sign_tok(rsa1, "RS256", "rsa1", dup_payload);

    struct attack a[] = {
        {"alg none", craft("{\"alg\":\"none\"}", p, "", 0), JWT_ERR_ALG_NONE,
         "alg none (unsigned token)"},
        {"HS256 keyed with the public key", hs256_with_public_key(), JWT_ERR_ALG_HMAC,
         "alg HMAC (HS256/384/512) is never accepted"},
        {"RS512", craft("{\"alg\":\"RS512\",\"kid\":\"rsa1\"}", p, junk, 256),
         JWT_ERR_ALG_UNSUPPORTED, "alg not in the allow-list"},
        {"jku", sign_ex(rsa1, "RS256", "rsa1", p, "jku", "\"https://evil.test/jwks\""),
         JWT_ERR_HEADER_KEY_REF, "header names a key URL (jku)"},
        {"x5u", sign_ex(rsa1, "RS256", "rsa1", p, "x5u", "\"https://evil.test/cert\""),
         JWT_ERR_HEADER_KEY_REF, "header names a certificate URL (x5u)"},
        {"embedded jwk", sign_ex(ec_evil, "ES256", "ec1", p, "jwk", "{\"kty\":\"EC\"}"),
         JWT_ERR_HEADER_KEY_REF, "header embeds a key (jwk)"},
        {"x5c", sign_ex(rsa1, "RS256", "rsa1", p, "x5c", "[\"MIIB\"]"), JWT_ERR_HEADER_KEY_REF,
         "header embeds a certificate chain (x5c)"},
        {"crit",
         craft("{\"alg\":\"RS256\",\"kid\":\"rsa1\",\"crit\":[\"b64\"],\"b64\":false}", p, junk,
               256),
         JWT_ERR_CRIT, "header has crit (no extension is supported)"},
        {"stripped signature", stripped, JWT_ERR_NO_SIGNATURE,
         "signature part is empty (stripped signature)"},
        {"two parts", two, JWT_ERR_FORMAT, "token has two parts: signature stripped"},
        {"four parts", four, JWT_ERR_FORMAT, "token has more than three parts (JWE or garbage)"},
        {"one part", strdup("eyJhbGciOiJSUzI1NiJ9"), JWT_ERR_FORMAT,
         "token has one part, not three"},
        {"empty header part", strdup(".e30.abcd"), JWT_ERR_FORMAT, "token header part is empty"},
        {"empty payload part", strdup("eyJhbGciOiJSUzI1NiJ9..abcd"), JWT_ERR_FORMAT,
         "token payload part is empty (detached payload)"},
        {"unknown kid", sign_tok(rsa_evil, "RS256", "rsa-new", p), JWT_ERR_UNKNOWN_KID,
         "kid not in the provider's key set"},
        {"kid missing", sign_tok(rsa1, "RS256", NULL, p), JWT_ERR_KID_MISSING,
         "kid missing and the key set has several keys"},
        {"ES256 header on an RSA key", craft("{\"alg\":\"ES256\",\"kid\":\"rsa1\"}", p, zeros, 64),
         JWT_ERR_KEY_MISMATCH, "alg does not fit the key (kty, curve or the key's alg)"},
        {"signature by another key", sign_tok(rsa_evil, "RS256", "rsa1", p), JWT_ERR_SIGNATURE,
         "signature does not verify"},
        {"tampered payload", tampered, JWT_ERR_SIGNATURE, "signature does not verify"},
        {"truncated signature", resign(good, junk, 255), JWT_ERR_SIGNATURE,
         "signature length does not fit the key"},
        {"ES256 r = s = 0", resign(good_ec, zeros, 64), JWT_ERR_SIGNATURE,
         "signature does not verify"},
        {"100 KB token", big, JWT_ERR_TOO_LARGE, "token larger than the limit"},
        {"non-base64url garbage", strdup("eyJhbGciOiJSUzI1NiJ9.e30.ab+/cd=="), JWT_ERR_BASE64,
         "token signature is not base64url"},
        {"bad header base64", strdup("eyJhbGciOiJSUzI1NiJ9@@@.e30.abcd"), JWT_ERR_BASE64,
         "token header is not base64url"},
        {"bad payload base64", strdup("eyJhbGciOiJSUzI1NiJ9.e3$.abcd"), JWT_ERR_BASE64,
         "token payload is not base64url"},
        {"impossible base64 length", strdup("eyJhbGciOiJSUzI1NiJ9.e30.abcde"), JWT_ERR_BASE64,
         "a token part has an impossible base64url length"},
        {"duplicate header member",
         craft("{\"alg\":\"RS256\",\"alg\":\"none\",\"kid\":\"rsa1\"}", p, junk, 256),
         JWT_ERR_HEADER, "header has a duplicate member"},
        {"header not JSON", craft("{\"alg\":", p, junk, 256), JWT_ERR_HEADER,
         "header is not valid JSON"},
        {"header not an object", craft("[\"RS256\"]", p, junk, 256), JWT_ERR_HEADER,
         "header is not a JSON object"},
        {"alg not a string", craft("{\"alg\":1}", p, junk, 256), JWT_ERR_HEADER,
         "header alg missing or not a string"},
        {"kid not a string", craft("{\"alg\":\"RS256\",\"kid\":7}", p, junk, 256), JWT_ERR_HEADER,
         "header kid is not a string"},
        {"duplicate claims", dup, JWT_ERR_PAYLOAD, "payload has a duplicate member"},
        {"payload not an object", sign_tok(rsa1, "RS256", "rsa1", "[1,2]"), JWT_ERR_PAYLOAD,
         "payload is not a JSON object"},
        {"payload not JSON", sign_tok(rsa1, "RS256", "rsa1", "{\"sub\""), JWT_ERR_PAYLOAD,
         "payload is not valid JSON"},
    };

    run_attacks(a, sizeof(a) / sizeof(a[0]), &x);
    free(p);
    free(good);
    free(good_ec);
    free(dup_payload);
}

/* alg none and HMAC in other spellings, and the r = s = 0 signature: the
 * last one must reach cjose and be refused there, not by a length check. */
static void test_attack_details(void **state)
{
    struct jwt_expect x = expect_default();
    char *p = claims(NULL), *t;
    unsigned char zeros[64], sig[256];
    const char *why;
    struct jwt_claims c;

    (void)state;
    memset(zeros, 0, sizeof(zeros));
    memset(sig, 1, sizeof(sig));
    t = craft("{\"alg\":\"NoNe\",\"kid\":\"rsa1\"}", p, sig, 256);
    check_tok(t, &x, JWT_ERR_ALG_NONE, "alg none (unsigned token)");
    free(t);
    t = craft("{\"alg\":\"hs512\",\"kid\":\"rsa1\"}", p, sig, 64);
    check_tok(t, &x, JWT_ERR_ALG_HMAC, NULL);
    free(t);
    t = craft("{\"alg\":\"ES256\",\"kid\":\"ec1\"}", p, zeros, 64);
    assert_int_equal(jwt_verify(t, strlen(t), keys, &x, &c, &why), JWT_ERR_SIGNATURE);
    assert_string_equal(why, "signature does not verify");
    free(t);
    /* other algs outside the list */
    static const char *const others[] = {"RS384", "PS512",    "ES384", "ES512",
                                         "EdDSA", "RSA-OAEP", "rs256", ""};
    for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
        char hdr[128];

        snprintf(hdr, sizeof(hdr), "{\"alg\":\"%s\",\"kid\":\"rsa1\"}", others[i]);
        t = craft(hdr, p, sig, 256);
        check_tok(t, &x, JWT_ERR_ALG_UNSUPPORTED, NULL);
        free(t);
    }
    /* RS256 header on the EC key; PS256 on an RSA key pinned to RS256 */
    t = craft("{\"alg\":\"RS256\",\"kid\":\"ec1\"}", p, sig, 256);
    check_tok(t, &x, JWT_ERR_KEY_MISMATCH, NULL);
    free(t);
    {
        json_t *k = pub_jwk(rsa1, "{\"alg\":\"RS256\",\"use\":\"sig\"}");
        char *text = jwks_of(k, NULL);
        struct jwt_keyset *pinned = keyset_of(text);
        char *ps = sign_tok(rsa1, "PS256", "rsa1", p), *rs = sign_tok(rsa1, "RS256", "rsa1", p);

        assert_int_equal(jwt_verify(ps, strlen(ps), pinned, &x, &c, &why), JWT_ERR_KEY_MISMATCH);
        assert_int_equal(jwt_verify(rs, strlen(rs), pinned, &x, &c, &why), JWT_OK);
        jwt_keyset_unref(pinned);
        free(text);
        free(ps);
        free(rs);
    }
    /* A signature by another EC key, and a non-canonical base64url tail
     * ("e31" decodes like "e30" if the spare bits are ignored). */
    t = sign_tok(ec_evil, "ES256", "ec1", p);
    check_tok(t, &x, JWT_ERR_SIGNATURE, "signature does not verify");
    free(t);
    t = strdup("eyJhbGciOiJSUzI1NiJ9.e31.abcd");
    check_tok(t, &x, JWT_ERR_BASE64, "token payload is not base64url");
    free(t);
    t = strdup("eyJhbGciOiJSUzI1NiJ9==.e30.abcd");
    check_tok(t, &x, JWT_ERR_BASE64, "token header is not base64url");
    free(t);
    free(p);
}

static void test_kid_rules(void **state)
{
    struct jwt_expect x = expect_default();
    char *p = claims(NULL), *t = sign_tok(ec1, "ES256", NULL, p);
    char *text = jwks_of(pub_jwk(ec1, NULL), NULL);
    struct jwt_keyset *one = keyset_of(text);
    struct jwt_claims c;
    const char *why;

    (void)state;
    /* without kid: refused with two keys, accepted with exactly one */
    check_tok(t, &x, JWT_ERR_KID_MISSING, "kid missing and the key set has several keys");
    assert_int_equal(jwt_verify(t, strlen(t), one, &x, &c, &why), JWT_OK);
    assert_string_equal(c.kid, "");
    free(t);
    /* with a kid, that kid must exist even if the set has one key */
    t = sign_tok(ec1, "ES256", "ec2", p);
    assert_int_equal(jwt_verify(t, strlen(t), one, &x, &c, &why), JWT_ERR_UNKNOWN_KID);
    assert_string_equal(why, "kid not in the provider's key set");
    free(t);
    /* no key set yet: fetch one */
    t = sign_tok(ec1, "ES256", "ec1", p);
    assert_int_equal(jwt_verify(t, strlen(t), NULL, &x, &c, &why), JWT_ERR_UNKNOWN_KID);
    assert_string_equal(why, "no provider key set loaded yet");
    free(t);
    /* a kid that can never be in a key set is not "unknown" (no refetch) */
    t = craft("{\"alg\":\"ES256\",\"kid\":\"a\\nb\"}", p, "x", 1);
    check_tok(t, &x, JWT_ERR_HEADER, "header kid too long or with a control character");
    free(t);
    jwt_keyset_unref(one);
    free(text);
    free(p);
}

static void test_size_limit(void **state)
{
    struct jwt_expect x = expect_default();
    char *p = claims(NULL), *t = sign_tok(rsa1, "RS256", "rsa1", p);
    size_t len = strlen(t);

    (void)state;
    x.max_token_size = len;
    check_tok(t, &x, JWT_OK, "ok");
    x.max_token_size = len - 1;
    check_tok(t, &x, JWT_ERR_TOO_LARGE, "token larger than the limit");
    /* the hard cap wins over a careless configuration */
    x.max_token_size = SIZE_MAX;
    {
        char *big = malloc(JWT_TOKEN_MAX_HARD + 2);

        memset(big, 'A', JWT_TOKEN_MAX_HARD + 1);
        big[JWT_TOKEN_MAX_HARD + 1] = '\0';
        check_tok(big, &x, JWT_ERR_TOO_LARGE, NULL);
        free(big);
    }
    free(t);
    free(p);
}

static char *tok_with(const char *extra_claims, const char *base)
{
    char *p = NULL, *t;

    if (base == NULL)
        p = claims(extra_claims);
    else
        p = strdup(base);
    t = sign_tok(ec1, "ES256", "ec1", p);
    free(p);
    return t;
}

static void test_issuer_audience(void **state)
{
    struct jwt_expect x = expect_default();
    static const char *const two[] = {"other-app", AUD};
    char *t;
    struct jwt_claims c;
    const char *why;

    (void)state;
    t = tok_with(NULL, "{\"iss\":\"https://evil.test\",\"aud\":\"ztproxy\",\"sub\":\"a\","
                       "\"exp\":1700000300}");
    check_tok(t, &x, JWT_ERR_ISSUER, "iss is not the expected issuer");
    free(t);
    t = tok_with(NULL, "{\"aud\":\"ztproxy\",\"sub\":\"a\",\"exp\":1700000300}");
    check_tok(t, &x, JWT_ERR_ISSUER, "iss missing");
    free(t);
    t = tok_with(NULL, "{\"iss\":\"https://idp.test/\",\"aud\":\"ztproxy\",\"sub\":\"a\","
                       "\"exp\":1700000300}");
    check_tok(t, &x, JWT_ERR_ISSUER, NULL); /* exact match: no trailing-slash games */
    free(t);
    t = tok_with(NULL, "{\"iss\":\"" ISS "\",\"aud\":\"other\",\"sub\":\"a\",\"exp\":1700000300}");
    check_tok(t, &x, JWT_ERR_AUDIENCE, "aud does not contain an accepted audience");
    free(t);
    t = tok_with(NULL, "{\"iss\":\"" ISS "\",\"sub\":\"a\",\"exp\":1700000300}");
    check_tok(t, &x, JWT_ERR_AUDIENCE, "aud missing");
    free(t);
    t = tok_with(NULL,
                 "{\"iss\":\"" ISS "\",\"aud\":[\"a\",\"b\"],\"sub\":\"a\",\"exp\":1700000300}");
    check_tok(t, &x, JWT_ERR_AUDIENCE, "aud does not contain an accepted audience");
    free(t);
    t = tok_with(NULL, "{\"iss\":\"" ISS "\",\"aud\":[\"a\",7],\"sub\":\"a\",\"exp\":1700000300}");
    check_tok(t, &x, JWT_ERR_AUDIENCE, "aud has a value that is not a string");
    free(t);
    t = tok_with(NULL, "{\"iss\":\"" ISS "\",\"aud\":{},\"sub\":\"a\",\"exp\":1700000300}");
    check_tok(t, &x, JWT_ERR_AUDIENCE, "aud is neither a string nor an array");
    free(t);

    /* several audiences: azp required when we expect one */
    t = tok_with(NULL, "{\"iss\":\"" ISS "\",\"aud\":[\"api\",\"ztproxy\"],\"sub\":\"a\","
                       "\"exp\":1700000300}");
    check_tok(t, &x, JWT_OK, "ok");
    x.azp = AUD;
    check_tok(t, &x, JWT_ERR_AZP, "azp missing while aud has several values");
    free(t);
    t = tok_with(NULL, "{\"iss\":\"" ISS "\",\"aud\":[\"api\",\"ztproxy\"],\"azp\":\"api\","
                       "\"sub\":\"a\",\"exp\":1700000300}");
    check_tok(t, &x, JWT_ERR_AZP, "azp is not the expected client");
    free(t);
    t = tok_with(NULL, "{\"iss\":\"" ISS "\",\"aud\":[\"api\",\"ztproxy\"],\"azp\":\"ztproxy\","
                       "\"sub\":\"a\",\"exp\":1700000300}");
    check_tok(t, &x, JWT_OK, "ok");
    free(t);
    /* single aud: azp optional */
    t = tok_with(NULL, NULL);
    check_tok(t, &x, JWT_OK, "ok");
    free(t);

    /* several accepted audiences: the one that matched is reported */
    x = expect_default();
    x.audiences = two;
    x.naudiences = 2;
    t = tok_with(NULL, "{\"iss\":\"" ISS "\",\"aud\":\"other-app\",\"sub\":\"a\","
                       "\"exp\":1700000300}");
    assert_int_equal(jwt_verify(t, strlen(t), keys, &x, &c, &why), JWT_OK);
    assert_string_equal(c.aud, "other-app");
    free(t);
}

/* Both sides of every time boundary, with and without skew. */
static void test_time_boundaries(void **state)
{
    struct jwt_expect x = expect_default();
    char extra[128], *t;
    const int64_t skews[] = {0, 60};

    (void)state;
    for (size_t i = 0; i < 2; i++) {
        int64_t s = skews[i];

        x.skew = s;
        /* exp = NOW + 300: valid while now < exp + skew */
        t = tok_with(NULL, NULL);
        x.now = NOW + 300 + s - 1;
        check_tok(t, &x, JWT_OK, "ok");
        x.now = NOW + 300 + s;
        check_tok(t, &x, JWT_ERR_EXPIRED, "token expired (exp + skew <= now)");
        free(t);

        /* nbf = NOW + 100: valid from nbf - skew */
        t = tok_with("\"nbf\":1700000100", NULL);
        x.now = NOW + 100 - s;
        check_tok(t, &x, JWT_OK, "ok");
        x.now = NOW + 100 - s - 1;
        check_tok(t, &x, JWT_ERR_NOT_YET_VALID, "token not yet valid (nbf - skew > now)");
        free(t);

        /* iat = NOW (from claims()): fine from iat - skew */
        t = tok_with(NULL, NULL);
        x.now = NOW - s;
        check_tok(t, &x, JWT_OK, "ok");
        x.now = NOW - s - 1;
        check_tok(t, &x, JWT_ERR_IAT_FUTURE, "token issued in the future (iat - skew > now)");
        free(t);
    }
    /* skew is clamped to JWT_SKEW_MAX */
    x.skew = 100000;
    x.now = NOW + 300 + JWT_SKEW_MAX;
    t = tok_with(NULL, NULL);
    check_tok(t, &x, JWT_ERR_EXPIRED, NULL);
    free(t);

    x = expect_default();
    snprintf(extra, sizeof(extra), "{\"iss\":\"%s\",\"aud\":\"%s\",\"sub\":\"a\"}", ISS, AUD);
    t = tok_with(NULL, extra);
    check_tok(t, &x, JWT_ERR_EXP_MISSING, "exp missing");
    free(t);
    t = tok_with(NULL, "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"sub\":\"a\",\"exp\":\"soon\"}");
    check_tok(t, &x, JWT_ERR_CLAIM, "claim exp is not a number");
    free(t);
    t = tok_with(NULL, "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"sub\":\"a\",\"exp\":1e300}");
    check_tok(t, &x, JWT_ERR_CLAIM, "claim exp is out of range");
    free(t);
    t = tok_with(NULL, "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"sub\":\"a\","
                       "\"exp\":9223372036854775807}");
    check_tok(t, &x, JWT_ERR_CLAIM, "claim exp is out of range");
    free(t);
    t = tok_with(NULL, "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"sub\":\"a\","
                       "\"exp\":1700000300.9}");
    check_tok(t, &x, JWT_OK, "ok"); /* NumericDate may be fractional */
    free(t);
}

static void test_nonce(void **state)
{
    struct jwt_expect x = expect_default();
    char *t = tok_with("\"nonce\":\"abc\"", NULL), *t2 = tok_with(NULL, NULL);

    (void)state;
    x.nonce = "abc";
    check_tok(t, &x, JWT_OK, "ok");
    x.nonce = "abd";
    check_tok(t, &x, JWT_ERR_NONCE, "nonce does not match the login");
    x.nonce = "ab";
    check_tok(t, &x, JWT_ERR_NONCE, "nonce does not match the login");
    check_tok(t2, &x, JWT_ERR_NONCE, "nonce missing");
    x.nonce = NULL; /* bearer tokens: not checked */
    check_tok(t2, &x, JWT_OK, "ok");
    free(t);
    free(t2);
}

static void test_claim_shapes(void **state)
{
    struct jwt_expect x = expect_default();
    char long_sub[JWT_CLAIM_MAX + 32], extra[JWT_CLAIM_MAX + 256], *t;
    struct jwt_claims c;
    const char *why;

    (void)state;
    /* sub: required, bounded (at the limit and one over), no controls */
    memset(long_sub, 's', sizeof(long_sub));
    long_sub[JWT_CLAIM_MAX] = '\0';
    snprintf(extra, sizeof(extra),
             "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"sub\":\"%s\","
             "\"exp\":1700000300}",
             long_sub);
    t = tok_with(NULL, extra);
    check_tok(t, &x, JWT_OK, "ok");
    free(t);
    long_sub[JWT_CLAIM_MAX] = 's';
    long_sub[JWT_CLAIM_MAX + 1] = '\0';
    snprintf(extra, sizeof(extra),
             "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"sub\":\"%s\","
             "\"exp\":1700000300}",
             long_sub);
    t = tok_with(NULL, extra);
    check_tok(t, &x, JWT_ERR_CLAIM, "claim sub is too long");
    free(t);
    t = tok_with(NULL, "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"exp\":1700000300}");
    check_tok(t, &x, JWT_ERR_CLAIM, "sub missing or empty");
    free(t);
    t = tok_with(NULL, "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"sub\":7,\"exp\":1700000300}");
    check_tok(t, &x, JWT_ERR_CLAIM, "claim sub is not a string");
    free(t);
    t = tok_with("\"email\":\"a@b\\r\\nX-ZT-User: root\"", NULL);
    check_tok(t, &x, JWT_ERR_CLAIM, "claim email has a control character");
    free(t);
    t = tok_with("\"sub\":\"x\\u0000y\"", NULL); /* also a duplicate sub: */
    check_tok(t, &x, JWT_ERR_PAYLOAD, NULL);
    free(t);
    t = tok_with(NULL, "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"sub\":\"x\\u0000y\","
                       "\"exp\":1700000300}");
    check_tok(t, &x, JWT_ERR_PAYLOAD, "payload is not valid JSON"); /* NUL never gets in */
    free(t);
    /* amr: bounded, all strings */
    t = tok_with("\"amr\":[\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\"]", NULL);
    check_tok(t, &x, JWT_OK, "ok");
    free(t);
    t = tok_with("\"amr\":[\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"9\"]", NULL);
    check_tok(t, &x, JWT_ERR_CLAIM, "claim amr has too many values");
    free(t);
    t = tok_with("\"amr\":\"pwd\"", NULL);
    check_tok(t, &x, JWT_ERR_CLAIM, "claim amr is not an array");
    free(t);
    /* groups: reported only, so damage is dropped and flagged */
    {
        char g[4096];
        size_t off = 0;

        off += (size_t)snprintf(g + off, sizeof(g) - off, "\"groups\":[7");
        for (int i = 0; i < JWT_GROUPS_MAX + 3; i++)
            off += (size_t)snprintf(g + off, sizeof(g) - off, ",\"g%d\"", i);
        snprintf(g + off, sizeof(g) - off, "]");
        t = tok_with(g, NULL);
        assert_int_equal(jwt_verify(t, strlen(t), keys, &x, &c, &why), JWT_OK);
        assert_int_equal(c.ngroups, JWT_GROUPS_MAX);
        assert_int_equal(c.groups_truncated, 1);
        assert_string_equal(c.groups[0], "g0");
        free(t);
    }
    /* cnf: a malformed binding is refused, never ignored */
    t = tok_with("\"cnf\":{\"x5t#S256\":\"tooshort\"}", NULL);
    check_tok(t, &x, JWT_ERR_CLAIM, "claim cnf.x5t#S256 is malformed");
    free(t);
    t = tok_with("\"cnf\":{\"x5t#S256\":\"q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq8=\"}", NULL);
    check_tok(t, &x, JWT_ERR_CLAIM, "claim cnf.x5t#S256 is malformed");
    free(t);
    t = tok_with("\"cnf\":[]", NULL);
    check_tok(t, &x, JWT_ERR_CLAIM, "claim cnf is not an object");
    free(t);
    t = tok_with("\"cnf\":{\"jkt\":\"abc\"}", NULL); /* other confirmation methods */
    assert_int_equal(jwt_verify(t, strlen(t), keys, &x, &c, &why), JWT_OK);
    assert_int_equal(c.has_cnf_x5t_s256, 0);
    free(t);
}

static void test_cnf_binding(void **state)
{
    unsigned char tp[32], other[32];
    char *s;

    (void)state;
    for (size_t i = 0; i < sizeof(tp); i++)
        tp[i] = (unsigned char)(i * 7 + 1);
    memcpy(other, tp, sizeof(tp));
    other[31] ^= 1;
    s = b64u(tp, sizeof(tp));
    assert_int_equal(strlen(s), JWT_X5T_S256_LEN);
    assert_int_equal(jwt_cnf_x5t_match(s, tp), 1);
    assert_int_equal(jwt_cnf_x5t_match(s, other), 0);
    assert_int_equal(jwt_cnf_x5t_match(NULL, tp), 0);
    assert_int_equal(jwt_cnf_x5t_match("", tp), 0);
    s[42] = '='; /* not base64url */
    assert_int_equal(jwt_cnf_x5t_match(s, tp), 0);
    free(s);
}

/* OpenID Connect Back-Channel Logout tokens, and that neither kind of token
 * can stand in for the other. */
static void test_logout_token(void **state)
{
#define EV "\"events\":{\"http://schemas.openid.net/event/backchannel-logout\":{}}"
#define BASE "\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"iat\":1700000000,\"exp\":1700000120"
    struct jwt_expect x = expect_default();
    struct jwt_claims c;
    const char *why;
    char *t, *p;

    (void)state;
    x.logout_token = 1;
    t = tok_with(NULL, "{" BASE ",\"jti\":\"j-1\",\"sub\":\"alice\",\"sid\":\"s-1\"," EV "}");
    assert_int_equal(jwt_verify(t, strlen(t), keys, &x, &c, &why), JWT_OK);
    assert_string_equal(c.jti, "j-1");
    assert_string_equal(c.sub, "alice");
    assert_string_equal(c.sid, "s-1");
    x.logout_token = 0; /* a logout token is no login */
    check_tok(t, &x, JWT_ERR_TOKEN_TYPE, "a logout token is not a login token");
    free(t);

    x.logout_token = 1;
    t = tok_with(NULL, "{" BASE ",\"jti\":\"j-1\",\"sid\":\"s-1\"," EV "}");
    assert_int_equal(jwt_verify(t, strlen(t), keys, &x, &c, &why), JWT_OK);
    assert_string_equal(c.sub, ""); /* sid alone is enough */
    free(t);
    t = tok_with(NULL, NULL); /* an ID token is no logout */
    check_tok(t, &x, JWT_ERR_TOKEN_TYPE, "not a logout token (no back-channel logout event)");
    free(t);
    t = tok_with(NULL, "{" BASE ",\"jti\":\"j\",\"sub\":\"a\",\"events\":{\"x\":{}}}");
    check_tok(t, &x, JWT_ERR_TOKEN_TYPE, "not a logout token (no back-channel logout event)");
    free(t);
    t = tok_with(NULL, "{" BASE ",\"jti\":\"j\",\"sub\":\"a\",\"nonce\":\"n\"," EV "}");
    check_tok(t, &x, JWT_ERR_NONCE, "logout token has a nonce");
    free(t);
    t = tok_with(NULL, "{" BASE ",\"sub\":\"a\"," EV "}");
    check_tok(t, &x, JWT_ERR_CLAIM, "logout token without jti");
    free(t);
    t = tok_with(NULL, "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"exp\":1700000120,"
                       "\"jti\":\"j\",\"sub\":\"a\"," EV "}");
    check_tok(t, &x, JWT_ERR_CLAIM, "logout token without iat");
    free(t);
    t = tok_with(NULL, "{" BASE ",\"jti\":\"j\"," EV "}");
    check_tok(t, &x, JWT_ERR_CLAIM, "logout token names neither sub nor sid");
    free(t);
    t = tok_with(NULL, "{" BASE ",\"jti\":\"j\",\"sub\":\"a\"," EV "}");
    x.now = 1700000120 + 60;
    check_tok(t, &x, JWT_ERR_EXPIRED, NULL); /* the usual checks apply */
    free(t);

    /* typ logout+jwt is refused where a login token is expected */
    x = expect_default();
    p = claims(NULL);
    t = sign_ex(ec1, "ES256", "ec1", p, "typ", "\"logout+jwt\"");
    check_tok(t, &x, JWT_ERR_TOKEN_TYPE, "typ logout+jwt where a login token was expected");
    x.logout_token = 1;
    check_tok(t, &x, JWT_ERR_TOKEN_TYPE, "not a logout token (no back-channel logout event)");
    free(t);
    t = sign_ex(ec1, "ES256", "ec1", p, "typ", "\"JWT\"");
    x.logout_token = 0;
    check_tok(t, &x, JWT_OK, "ok");
    free(t);
    free(p);
#undef EV
#undef BASE
}

/* ---- JWKS -------------------------------------------------------------- */

struct skips {
    size_t n;
    char why[16][96];
    size_t index[16];
};

static void record_skip(void *arg, size_t index, const char *kid, const char *why)
{
    struct skips *s = arg;

    (void)kid;
    if (s->n < 16) {
        snprintf(s->why[s->n], sizeof(s->why[0]), "%s", why);
        s->index[s->n] = index;
        s->n++;
    }
}

static void test_jwks_skips(void **state)
{
    static const struct {
        const char *extra; /* merged into rsa1's or ec1's public JWK */
        int ec;
        const char *why;
    } cases[] = {
        {"{\"use\":\"enc\"}", 0, "use is not \"sig\""},
        {"{\"key_ops\":[\"encrypt\"]}", 0, "key_ops does not include \"verify\""},
        {"{\"alg\":\"RS512\"}", 0, "alg is not RS256, PS256 or ES256"},
        {"{\"alg\":\"ES256\"}", 0, "alg does not fit the key type"},
        {"{\"d\":\"AAAA\"}", 1, "private key material in a public key set"},
        {"{\"crv\":\"P-384\"}", 1, "EC key not on curve P-256"},
        {"{\"x\":\"AAAA\"}", 1, "EC key without a valid x or y"},
        {"{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"}", 0, "private key material in a public key set"},
        {"{\"kty\":\"oct\"}", 0, "symmetric key (kty oct) never verifies tokens"},
        {"{\"kty\":\"OKP\"}", 0, "unsupported kty"},
        {"{\"kid\":5}", 0, "kid is not a string"},
        {"{\"e\":\"AQ\"}", 0, "RSA exponent is even or smaller than 3"},
        {"{\"e\":\"AQA\"}", 0, "RSA exponent is even or smaller than 3"},
        {"{\"n\":\"!!\"}", 0, "RSA key without a valid n or e"},
    };
    char err[256];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct skips s;
        struct jwt_keyset *ks = NULL;
        char *text = jwks_of(pub_jwk(cases[i].ec ? ec1 : rsa1, cases[i].extra),
                             pub_jwk(cases[i].ec ? rsa1 : ec1, NULL));

        memset(&s, 0, sizeof(s));
        assert_int_equal(
            jwt_keyset_parse(text, strlen(text), record_skip, &s, &ks, err, sizeof(err)), 0);
        assert_int_equal(jwt_keyset_count(ks), 1);
        if (s.n != 1 || strcmp(s.why[0], cases[i].why) != 0)
            fail_msg("case %zu: want skip \"%s\", got %zu skips (%s)", i, cases[i].why, s.n,
                     s.n ? s.why[0] : "-");
        assert_int_equal(s.index[0], 0);
        jwt_keyset_unref(ks);
        free(text);
    }

    /* a short RSA key, a repeated kid, an off-curve point */
    {
        struct skips s;
        struct jwt_keyset *ks = NULL;
        json_t *arr = json_array();
        json_t *offcurve = pub_jwk(ec1, "{\"kid\":\"off\"}");
        char *text;

        /* (x, y) = (x, x) is not on the curve */
        json_object_set(offcurve, "y", json_object_get(offcurve, "x"));
        json_array_append_new(arr, pub_jwk(rsa_small, NULL));
        json_array_append_new(arr, pub_jwk(rsa1, NULL));
        json_array_append_new(arr, pub_jwk(ec1, "{\"kid\":\"rsa1\"}"));
        json_array_append_new(arr, offcurve);
        text = jwks_dump(arr);
        memset(&s, 0, sizeof(s));
        assert_int_equal(
            jwt_keyset_parse(text, strlen(text), record_skip, &s, &ks, err, sizeof(err)), 0);
        assert_int_equal(jwt_keyset_count(ks), 1);
        assert_int_equal(s.n, 3);
        assert_string_equal(s.why[0], "RSA key shorter than 2048 bits");
        assert_string_equal(s.why[1], "kid repeated (the first key with it is kept)");
        assert_string_equal(s.why[2], "key refused by cjose");
        assert_int_equal(s.index[2], 3);
        jwt_keyset_unref(ks);
        free(text);
    }
}

static void test_jwks_limits(void **state)
{
    struct jwt_keyset *ks = NULL;
    char err[256], *text;
    json_t *arr;

    (void)state;
    /* 64 keys are fine, 65 are not */
    for (int n = 64; n <= 65; n++) {
        arr = json_array();
        for (int i = 0; i < n; i++) {
            char kid[32];

            snprintf(kid, sizeof(kid), "{\"kid\":\"k%d\"}", i);
            json_array_append_new(arr, pub_jwk(ec1, kid));
        }
        text = jwks_dump(arr);
        ks = NULL;
        if (n == 64) {
            assert_int_equal(
                jwt_keyset_parse(text, strlen(text), NULL, NULL, &ks, err, sizeof(err)), 0);
            assert_int_equal(jwt_keyset_count(ks), 64);
            jwt_keyset_unref(ks);
        } else {
            assert_int_equal(
                jwt_keyset_parse(text, strlen(text), NULL, NULL, &ks, err, sizeof(err)), -1);
            assert_null(ks);
            assert_non_null(strstr(err, "more than 64"));
        }
        free(text);
    }
    /* 64 KiB exactly is fine, one byte more is not */
    {
        size_t len = JWT_JWKS_MAX_SIZE;
        char *doc = malloc(len + 2);

        memset(doc, ' ', len + 1);
        memcpy(doc, jwks_text, strlen(jwks_text));
        ks = NULL;
        assert_int_equal(jwt_keyset_parse(doc, len, NULL, NULL, &ks, err, sizeof(err)), 0);
        jwt_keyset_unref(ks);
        ks = NULL;
        assert_int_equal(jwt_keyset_parse(doc, len + 1, NULL, NULL, &ks, err, sizeof(err)), -1);
        assert_null(ks);
        free(doc);
    }
    /* documents that are not a key set */
    static const char *const bad[] = {
        "",
        "[]",
        "{\"keys\":{}}",
        "{\"keys\":[]}",
        "{\"keys\":[{\"kty\":\"oct\",\"k\":\"AAAA\"}]}",
        "{\"keys\":[],\"keys\":[]}",
        "{\"keys\":[",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        ks = NULL;
        assert_int_equal(
            jwt_keyset_parse(bad[i], strlen(bad[i]), NULL, NULL, &ks, err, sizeof(err)), -1);
        assert_null(ks);
        assert_true(err[0] != '\0');
    }
    /* refcounting */
    ks = keyset_of(jwks_text);
    assert_ptr_equal(jwt_keyset_ref(ks), ks);
    jwt_keyset_unref(ks);
    assert_int_equal(jwt_keyset_count(ks), 2);
    jwt_keyset_unref(ks);
    jwt_keyset_unref(NULL);
}

/* ---- assertions -------------------------------------------------------- */

static char *tmpdir_new(void)
{
    char *d = strdup("/tmp/jwt_test.XXXXXX");

    assert_non_null(mkdtemp(d));
    return d;
}

static void tmpdir_free(char *d)
{
    char cmd[512];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d);
    assert_int_equal(system(cmd), 0);
    free(d);
}

static struct jwt_assertion assertion_default(const char *const *groups, size_t ngroups)
{
    struct jwt_assertion a;

    memset(&a, 0, sizeof(a));
    a.iss = "https://ztproxy.test";
    a.aud = "wiki";
    a.sub = "alice";
    a.email = "alice@corp.test";
    a.groups = groups;
    a.ngroups = ngroups;
    a.device = "laptop-42";
    a.device_tier = "trusted";
    a.now = NOW;
    a.lifetime = 30;
    return a;
}

static enum jwt_result verify_assertion(const struct jwt_signer *s, const char *tok, int64_t now,
                                        struct jwt_claims *c)
{
    static const char *const route[] = {"wiki"};
    struct jwt_expect x;
    struct jwt_keyset *ks = NULL;
    size_t len;
    const char *jwks = jwt_signer_jwks_json(s, &len), *why;
    char err[256];
    enum jwt_result r;

    assert_int_equal(jwt_keyset_parse(jwks, len, NULL, NULL, &ks, err, sizeof(err)), 0);
    memset(&x, 0, sizeof(x));
    x.issuer = "https://ztproxy.test";
    x.audiences = route;
    x.naudiences = 1;
    x.algs = JWT_ALG_ES256;
    x.now = now;
    x.skew = 0;
    r = jwt_verify(tok, strlen(tok), ks, &x, c, &why);
    jwt_keyset_unref(ks);
    return r;
}

static void test_assertion_round_trip(void **state)
{
    static const char *const groups[] = {"staff", "eng"};
    struct jwt_assertion a = assertion_default(groups, 2);
    struct jwt_signer *s = NULL;
    char *dir = tmpdir_new(), err[256], tok[JWT_ASSERTION_MAX], path[512];
    size_t toklen = 0;
    struct jwt_claims c;
    struct stat st;
    const char *dot;
    uint8_t *hdr = NULL;
    size_t hlen = 0;
    json_t *h;

    (void)state;
    /* no key and no JWT_SIGNER_CREATE: refused; with it: one is made, 0600 */
    assert_int_equal(jwt_signer_load(dir, 0, &s, err, sizeof(err)), -1);
    assert_null(s);
    assert_int_equal(jwt_signer_load(dir, JWT_SIGNER_CREATE, &s, err, sizeof(err)), 0);
    {
        char cmd[600];
        FILE *f;

        snprintf(cmd, sizeof(cmd), "ls %s/assertion-*.pem", dir);
        f = popen(cmd, "r");
        assert_non_null(f);
        assert_non_null(fgets(path, sizeof(path), f));
        pclose(f);
        path[strcspn(path, "\n")] = '\0';
    }
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(strlen(jwt_signer_kid(s)), 43);

    assert_int_equal(jwt_assertion_sign(s, &a, NULL, tok, sizeof(tok), &toklen), 0);
    assert_int_equal(toklen, strlen(tok));
    assert_int_equal(verify_assertion(s, tok, NOW, &c), JWT_OK);
    assert_string_equal(c.sub, "alice");
    assert_string_equal(c.email, "alice@corp.test");
    assert_string_equal(c.aud, "wiki");
    assert_string_equal(c.alg, "ES256");
    assert_string_equal(c.kid, jwt_signer_kid(s));
    assert_int_equal(c.ngroups, 2);
    assert_string_equal(c.groups[0], "staff");
    assert_int_equal(c.iat, NOW);
    assert_int_equal(c.exp, NOW + 30);
    assert_int_equal(verify_assertion(s, tok, NOW + 30, &c), JWT_ERR_EXPIRED);

    /* header: alg, typ, kid */
    dot = strchr(tok, '.');
    assert_true(cjose_base64url_decode(tok, (size_t)(dot - tok), &hdr, &hlen, NULL));
    h = json_loadb((const char *)hdr, hlen, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(h, "alg")), "ES256");
    assert_string_equal(json_string_value(json_object_get(h, "typ")), "JWT");
    assert_string_equal(json_string_value(json_object_get(h, "kid")), jwt_signer_kid(s));
    json_decref(h);
    free(hdr);

    /* the payload carries device, tier and a jti */
    {
        const char *dot2 = strchr(dot + 1, '.');
        uint8_t *pl = NULL;
        size_t plen = 0;
        json_t *p;

        assert_true(cjose_base64url_decode(dot + 1, (size_t)(dot2 - dot - 1), &pl, &plen, NULL));
        p = json_loadb((const char *)pl, plen, 0, NULL);
        assert_string_equal(json_string_value(json_object_get(p, "device")), "laptop-42");
        assert_string_equal(json_string_value(json_object_get(p, "device_tier")), "trusted");
        assert_int_equal(json_string_length(json_object_get(p, "jti")), 22);
        json_decref(p);
        free(pl);
    }

    /* input limits */
    a.lifetime = JWT_ASSERTION_MAX_LIFETIME;
    assert_int_equal(jwt_assertion_sign(s, &a, NULL, tok, sizeof(tok), &toklen), 0);
    a.lifetime = JWT_ASSERTION_MAX_LIFETIME + 1;
    assert_int_equal(jwt_assertion_sign(s, &a, NULL, tok, sizeof(tok), &toklen), -1);
    a.lifetime = 0;
    assert_int_equal(jwt_assertion_sign(s, &a, NULL, tok, sizeof(tok), &toklen), -1);
    a = assertion_default(groups, 2);
    a.sub = NULL;
    assert_int_equal(jwt_assertion_sign(s, &a, NULL, tok, sizeof(tok), &toklen), -1);
    a = assertion_default(groups, 2);
    assert_int_equal(jwt_assertion_sign(s, &a, NULL, tok, 64, &toklen), -1); /* too small */
    a.email = NULL;
    assert_int_equal(jwt_assertion_sign(s, &a, NULL, tok, sizeof(tok), &toklen), 0);
    assert_int_equal(verify_assertion(s, tok, NOW, &c), JWT_OK);
    assert_string_equal(c.email, "");

    jwt_signer_unref(s);
    tmpdir_free(dir);
}

static void test_signer_rotation(void **state)
{
    struct jwt_assertion a = assertion_default(NULL, 0);
    struct jwt_signer *s1 = NULL, *s2 = NULL, *s3 = NULL;
    char *dir = tmpdir_new(), err[256], path[512], tok[JWT_ASSERTION_MAX], kid1[64];
    size_t toklen, len;
    struct jwt_claims c;
    struct jwt_keyset *ks = NULL;
    const char *jwks;

    (void)state;
    snprintf(path, sizeof(path), "%s/assertion-20240101T000000Z.pem", dir);
    assert_int_equal(jwt_signer_key_generate(path, err, sizeof(err)), 0);
    assert_int_equal(jwt_signer_key_generate(path, err, sizeof(err)), -1); /* never overwrites */
    assert_int_equal(jwt_signer_load(dir, 0, &s1, err, sizeof(err)), 0);
    snprintf(kid1, sizeof(kid1), "%s", jwt_signer_kid(s1));
    assert_int_equal(jwt_assertion_sign(s1, &a, NULL, tok, sizeof(tok), &toklen), 0);

    /* a newer key: it signs, the old one is still published */
    snprintf(path, sizeof(path), "%s/assertion-20250101T000000Z.pem", dir);
    assert_int_equal(jwt_signer_key_generate(path, err, sizeof(err)), 0);
    assert_int_equal(jwt_signer_load(dir, JWT_SIGNER_CREATE, &s2, err, sizeof(err)), 0);
    assert_string_not_equal(jwt_signer_kid(s2), kid1);
    jwks = jwt_signer_jwks_json(s2, &len);
    assert_int_equal(jwt_keyset_parse(jwks, len, NULL, NULL, &ks, err, sizeof(err)), 0);
    assert_int_equal(jwt_keyset_count(ks), 2);
    jwt_keyset_unref(ks);
    assert_non_null(strstr(jwks, kid1));
    assert_true(strstr(jwks, jwt_signer_kid(s2)) < strstr(jwks, kid1)); /* signer first */
    assert_int_equal(verify_assertion(s2, tok, NOW, &c), JWT_OK);       /* old token, new JWKS */
    assert_string_equal(c.kid, kid1);

    /* retire the old key: its tokens no longer verify */
    snprintf(path, sizeof(path), "%s/assertion-20240101T000000Z.pem", dir);
    {
        char retired[600];

        snprintf(retired, sizeof(retired), "%s.retired", path);
        assert_int_equal(rename(path, retired), 0);
    }
    assert_int_equal(jwt_signer_load(dir, 0, &s3, err, sizeof(err)), 0);
    assert_int_equal(verify_assertion(s3, tok, NOW, &c), JWT_ERR_UNKNOWN_KID);

    /* permissions: a group-readable key file fails the whole load */
    snprintf(path, sizeof(path), "%s/assertion-20250101T000000Z.pem", dir);
    assert_int_equal(chmod(path, 0640), 0);
    {
        struct jwt_signer *s4 = NULL;

        assert_int_equal(jwt_signer_load(dir, 0, &s4, err, sizeof(err)), -1);
        assert_null(s4);
        assert_non_null(strstr(err, "group or others"));
    }
    assert_int_equal(chmod(path, 0600), 0);

    /* a non-EC key is refused */
    {
        EVP_PKEY *pk = EVP_RSA_gen(2048);
        FILE *f;
        struct jwt_signer *s4 = NULL;

        snprintf(path, sizeof(path), "%s/rsa.pem", dir);
        f = fopen(path, "w");
        assert_non_null(f);
        assert_int_equal(chmod(path, 0600), 0);
        assert_int_equal(PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL), 1);
        fclose(f);
        EVP_PKEY_free(pk);
        assert_int_equal(jwt_signer_load(dir, 0, &s4, err, sizeof(err)), -1);
        assert_non_null(strstr(err, "not an EC P-256 private key"));
        unlink(path);
    }
    /* garbage PEM */
    {
        FILE *f;
        struct jwt_signer *s4 = NULL;

        snprintf(path, sizeof(path), "%s/zzz.pem", dir);
        f = fopen(path, "w");
        assert_non_null(f);
        assert_int_equal(chmod(path, 0600), 0);
        fputs("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n", f);
        fclose(f);
        assert_int_equal(jwt_signer_load(dir, 0, &s4, err, sizeof(err)), -1);
        unlink(path);
    }
    assert_int_equal(jwt_signer_load("/nonexistent/dir", JWT_SIGNER_CREATE, &s1, err, sizeof(err)),
                     -1);

    assert_ptr_equal(jwt_signer_ref(s2), s2);
    jwt_signer_unref(s2);
    jwt_signer_unref(s1);
    jwt_signer_unref(s2);
    jwt_signer_unref(s3);
    jwt_signer_unref(NULL);
    tmpdir_free(dir);
}

static void test_assertion_cache(void **state)
{
    static const char *const g1[] = {"staff"};
    static const char *const g2[] = {"staff", "admin"};
    struct jwt_assertion a = assertion_default(g1, 1);
    struct jwt_signer *s = NULL;
    struct jwt_assertion_cache *cache = jwt_assertion_cache_new(5), *none;
    char *dir = tmpdir_new(), err[256], t1[JWT_ASSERTION_MAX], t2[JWT_ASSERTION_MAX];
    size_t n1, n2;
    struct jwt_claims c;

    (void)state;
    assert_non_null(cache);
    assert_int_equal(jwt_signer_load(dir, JWT_SIGNER_CREATE, &s, err, sizeof(err)), 0);
    assert_int_equal(jwt_assertion_sign(s, &a, cache, t1, sizeof(t1), &n1), 0);
    /* same claims within the window: the same token */
    a.now = NOW + 4;
    assert_int_equal(jwt_assertion_sign(s, &a, cache, t2, sizeof(t2), &n2), 0);
    assert_string_equal(t1, t2);
    assert_int_equal(n1, n2);
    /* still valid for lifetime - reuse seconds */
    assert_int_equal(verify_assertion(s, t2, NOW + 4, &c), JWT_OK);
    assert_int_equal(c.iat, NOW);
    /* any claim differs: a new token */
    a.groups = g2;
    a.ngroups = 2;
    assert_int_equal(jwt_assertion_sign(s, &a, cache, t2, sizeof(t2), &n2), 0);
    assert_string_not_equal(t1, t2);
    a = assertion_default(g1, 1);
    a.now = NOW + 1;
    a.device = "laptop-43";
    assert_int_equal(jwt_assertion_sign(s, &a, cache, t2, sizeof(t2), &n2), 0);
    assert_string_not_equal(t1, t2);
    /* "ab" + "c" is not "a" + "bc" */
    a = assertion_default(g1, 1);
    a.device = "laptop-4";
    a.device_tier = "2trusted";
    assert_int_equal(jwt_assertion_sign(s, &a, cache, t2, sizeof(t2), &n2), 0);
    assert_string_not_equal(t1, t2);
    /* at the end of the window: a new token */
    a = assertion_default(g1, 1);
    a.now = NOW + 5;
    assert_int_equal(jwt_assertion_sign(s, &a, cache, t2, sizeof(t2), &n2), 0);
    assert_string_not_equal(t1, t2);
    assert_int_equal(verify_assertion(s, t2, NOW + 5, &c), JWT_OK);
    assert_int_equal(c.iat, NOW + 5);
    /* a clock that went back: a new token */
    a.now = NOW;
    assert_int_equal(jwt_assertion_sign(s, &a, cache, t2, sizeof(t2), &n2), 0);
    assert_string_not_equal(t1, t2);
    /* fill every slot and more */
    for (int i = 0; i < 20; i++) {
        char sub[16];

        snprintf(sub, sizeof(sub), "user%d", i);
        a.sub = sub;
        assert_int_equal(jwt_assertion_sign(s, &a, cache, t2, sizeof(t2), &n2), 0);
    }
    /* reuse 0: never hits */
    none = jwt_assertion_cache_new(0);
    a = assertion_default(g1, 1);
    assert_int_equal(jwt_assertion_sign(s, &a, none, t1, sizeof(t1), &n1), 0);
    assert_int_equal(jwt_assertion_sign(s, &a, none, t2, sizeof(t2), &n2), 0);
    assert_string_not_equal(t1, t2);
    jwt_assertion_cache_free(none);
    jwt_assertion_cache_free(cache);
    jwt_assertion_cache_free(NULL);
    jwt_signer_unref(s);
    tmpdir_free(dir);
}

/* A cached assertion is never handed out past half its lifetime, so never
 * with an exp in the past, even when the lifetime is shorter than the reuse
 * window. */
static void test_assertion_cache_short_lifetime(void **state)
{
    static const char *const g1[] = {"staff"};
    struct jwt_assertion a = assertion_default(g1, 1);
    struct jwt_signer *s = NULL;
    struct jwt_assertion_cache *cache = jwt_assertion_cache_new(5);
    char *dir = tmpdir_new(), err[256], t1[JWT_ASSERTION_MAX], t2[JWT_ASSERTION_MAX];
    size_t n1, n2;
    int64_t iat = 0;
    struct jwt_claims c;

    (void)state;
    assert_non_null(cache);
    assert_int_equal(jwt_signer_load(dir, JWT_SIGNER_CREATE, &s, err, sizeof(err)), 0);
    a.lifetime = 3;
    assert_int_equal(jwt_assertion_sign_iat(s, &a, cache, t1, sizeof(t1), &n1, &iat), 0);
    assert_int_equal(iat, NOW);
    a.now = NOW + 1; /* 1 * 2 < 3: reused, exp NOW + 3 still ahead */
    assert_int_equal(jwt_assertion_sign_iat(s, &a, cache, t2, sizeof(t2), &n2, &iat), 0);
    assert_string_equal(t1, t2);
    assert_int_equal(iat, NOW);
    assert_int_equal(verify_assertion(s, t2, NOW + 1, &c), JWT_OK);
    assert_true(c.exp > NOW + 1);
    a.now = NOW + 2; /* half the lifetime gone: a new one */
    assert_int_equal(jwt_assertion_sign_iat(s, &a, cache, t2, sizeof(t2), &n2, &iat), 0);
    assert_string_not_equal(t1, t2);
    assert_int_equal(iat, NOW + 2);
    /* lifetime 1: only within the same second */
    a.lifetime = 1;
    a.now = NOW + 10;
    assert_int_equal(jwt_assertion_sign_iat(s, &a, cache, t1, sizeof(t1), &n1, &iat), 0);
    assert_int_equal(jwt_assertion_sign_iat(s, &a, cache, t2, sizeof(t2), &n2, &iat), 0);
    assert_string_equal(t1, t2);
    a.now = NOW + 11;
    assert_int_equal(jwt_assertion_sign_iat(s, &a, cache, t2, sizeof(t2), &n2, &iat), 0);
    assert_string_not_equal(t1, t2);
    /* the rule itself */
    assert_true(jwt_assertion_reusable(NOW, NOW, 60, 5));
    assert_true(jwt_assertion_reusable(NOW, NOW + 4, 60, 5));
    assert_false(jwt_assertion_reusable(NOW, NOW + 5, 60, 5));
    assert_false(jwt_assertion_reusable(NOW, NOW - 1, 60, 5));
    assert_false(jwt_assertion_reusable(NOW, NOW + 1, 2, 5));
    assert_true(jwt_assertion_reusable(NOW, NOW, 1, 5));
    assert_false(jwt_assertion_reusable(NOW, NOW, 60, 0));
    jwt_assertion_cache_free(cache);
    jwt_signer_unref(s);
    tmpdir_free(dir);
}

/* Results have distinct, stable names. */
static void test_result_names(void **state)
{
    (void)state;
    for (int i = JWT_OK; i <= JWT_ERR_TOKEN_TYPE; i++) {
        for (int j = i + 1; j <= JWT_ERR_TOKEN_TYPE; j++)
            assert_string_not_equal(jwt_result_name(i), jwt_result_name(j));
        assert_string_not_equal(jwt_result_name(i), "unknown");
    }
}

static int setup(void **state)
{
    json_t *arr;

    (void)state;
    rsa1 = gen_rsa(2048, "rsa1", &rsa1_pkey);
    rsa_evil = gen_rsa(2048, "rsa1", NULL);
    rsa_small = gen_rsa(1024, "small", NULL);
    ec1 = gen_ec("ec1");
    ec_evil = gen_ec("ec1");
    arr = json_array();
    json_array_append_new(arr, pub_jwk(rsa1, NULL));
    json_array_append_new(arr, pub_jwk(ec1, NULL));
    jwks_text = jwks_dump(arr);
    keys = keyset_of(jwks_text);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    jwt_keyset_unref(keys);
    free(jwks_text);
    cjose_jwk_release(rsa1);
    cjose_jwk_release(rsa_evil);
    cjose_jwk_release(rsa_small);
    cjose_jwk_release(ec1);
    cjose_jwk_release(ec_evil);
    EVP_PKEY_free(rsa1_pkey);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_algs),
        cmocka_unit_test(test_claims_copied),
        cmocka_unit_test(test_attacks),
        cmocka_unit_test(test_attack_details),
        cmocka_unit_test(test_kid_rules),
        cmocka_unit_test(test_size_limit),
        cmocka_unit_test(test_issuer_audience),
        cmocka_unit_test(test_time_boundaries),
        cmocka_unit_test(test_nonce),
        cmocka_unit_test(test_claim_shapes),
        cmocka_unit_test(test_cnf_binding),
        cmocka_unit_test(test_logout_token),
        cmocka_unit_test(test_jwks_skips),
        cmocka_unit_test(test_jwks_limits),
        cmocka_unit_test(test_assertion_round_trip),
        cmocka_unit_test(test_signer_rotation),
        cmocka_unit_test(test_assertion_cache),
        cmocka_unit_test(test_assertion_cache_short_lifetime),
        cmocka_unit_test(test_result_names),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
