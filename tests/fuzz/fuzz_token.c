/*
 * fuzz_token.c - tokens and JWKS documents from untrusted bytes.
 *
 * Each input is tried as a token against a fixed key set (as a login token
 * and as a back-channel logout token) and as a JWKS document; a JWKS that
 * parses is then used to verify a fixed valid token. Mutated tokens almost
 * never get past the signature, so each input is also signed (by cjose,
 * with a key made at start-up) as the payload of a token, which reaches the
 * claim checks with arbitrary authenticated bytes. Never crash, never
 * leak, and keep the API's promises: a reason always, claims cleared on
 * refusal, a subject and exp on acceptance.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjose/cjose.h>

#include "jwt.h"

/* Public keys only; the corpus tokens were signed with the private halves,
 * which were thrown away. */
static const char fixed_jwks[] =
    "{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"fz-rsa\",\"e\":\"AQAB\",\"n\":\"iL8_7qCIHI7Qjrp3RU"
    "X1IG_U2NddRCR8bbenfdzSoEsZFfUmdCgt_T76kzsc-Z5hKZPryPmA7fD7vAgowu6eFwST5LlBL2_ZvsF1kVS5Nq"
    "5uQhUdDCOEPLobs2Wr2HROkLThv-uuH67stZjBg1Quf0zBsOzv_SGUyHxtqLQLZirFL2oJLBCm72Yo1Bp-h8JQu8"
    "MgDrgjEhhrbfR0PhKF8cv67zVsxGFRMlPoKkoCe5Hb8bS8j3ohHPnXiIJt_ssGBs2bjs8ZGkazSRXLuLTAEizghW"
    "hyAj4ZDtrbWzMRwEHFeox9YdUm4WXGmEOIxG0MwATCEBKtKjU1JFy6jJyzdQ\"},{\"kty\":\"EC\",\"kid\":"
    "\"fz-ec\",\"crv\":\"P-256\",\"x\":\"mW-Pz-JmupCyl8qUjAM5xiEotsK2Vept-aLt5voyN14\",\"y\":"
    "\"faWhQ9VEeaL-JX2CB0-ltX-6Bji9nx-pPRbfLpFoyiA\"}]}";

static const char fixed_token[] =
    "eyJhbGciOiJFUzI1NiIsImtpZCI6ImZ6LWVjIiwidHlwIjoiSldUIn0."
    "eyJpc3MiOiJodHRwczovL2lkcC5mdXp6IiwiYXVkIjoienRwcm94eSIsInN1YiI6ImFsaWNlIiwiZW1haWwiOiJhQGIuYy"
    "IsImVtYWlsX3ZlcmlmaWVkIjp0cnVlLCJpYXQiOjE3MDAwMDAwMDAsImV4cCI6MTcwMDAwMzYwMCwibmJmIjoxNjk5OTk5"
    "OTkwLCJub25jZSI6Im4xIiwiYW1yIjpbInB3ZCIsIm90cCJdLCJncm91cHMiOlsic3RhZmYiXSwic2lkIjoiczEiLCJjbm"
    "YiOnsieDV0I1MyNTYiOiJxODN2RWpSV2VKcTgzdkVqUldlSnE4M3ZFalJXZUpxODN2RWpSV2VKcTgwIn19."
    "fR03R78KF4qYVdHc2t1VIVPLdhYuJtZylj-FxDimeT5A_Zo2HcdV-SVRMGm_enoRKmadJQZOK5VtgT9gUl8czg";

static struct jwt_keyset *keys, *self_keys;
static cjose_jwk_t *self_key;

static void check(const char *tok, size_t len, const struct jwt_keyset *ks, int logout)
{
    static const char *const auds[] = {"ztproxy", "other"};
    struct jwt_expect x;
    struct jwt_claims c;
    const char *why = NULL;
    enum jwt_result r;

    memset(&x, 0, sizeof(x));
    x.issuer = "https://idp.fuzz";
    x.audiences = auds;
    x.naudiences = 2;
    x.azp = logout ? NULL : "ztproxy";
    x.nonce = logout ? NULL : "n1";
    x.logout_token = logout;
    x.now = 1700000100;
    x.skew = 60;
    r = jwt_verify(tok, len, ks, &x, &c, &why);
    if (why == NULL || jwt_result_name(r) == NULL)
        abort();
    if (r == JWT_OK) {
        if ((!logout && c.sub[0] == '\0') || c.exp + 60 <= x.now || c.alg[0] == '\0')
            abort();
    } else if (c.sub[0] != '\0' || c.exp != 0 || c.ngroups != 0) {
        abort();
    }
    if (c.has_cnf_x5t_s256) {
        unsigned char tp[32] = {0};

        (void)jwt_cnf_x5t_match(c.cnf_x5t_s256, tp);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct jwt_keyset *ks = NULL;
    char err[256];

    if (keys == NULL) {
        char *pub, doc[512];

        if (jwt_keyset_parse(fixed_jwks, strlen(fixed_jwks), NULL, NULL, &keys, err, sizeof(err)) ==
            -1)
            abort();
        self_key = cjose_jwk_create_EC_random(CJOSE_JWK_EC_P_256, NULL);
        if (self_key == NULL || !cjose_jwk_set_kid(self_key, "fz-self", 7, NULL))
            abort();
        pub = cjose_jwk_to_json(self_key, false, NULL);
        if (pub == NULL)
            abort();
        snprintf(doc, sizeof(doc), "{\"keys\":[%s]}", pub);
        free(pub);
        if (jwt_keyset_parse(doc, strlen(doc), NULL, NULL, &self_keys, err, sizeof(err)) == -1)
            abort();
    }
    if (size > 0 && size <= 8192) {
        cjose_header_t *h = cjose_header_new(NULL);
        cjose_jws_t *jws = NULL;
        const char *tok = NULL;

        if (h != NULL && cjose_header_set(h, CJOSE_HDR_ALG, CJOSE_HDR_ALG_ES256, NULL) &&
            cjose_header_set(h, CJOSE_HDR_KID, "fz-self", NULL))
            jws = cjose_jws_sign(self_key, h, data, size, NULL);
        if (jws != NULL && cjose_jws_export(jws, &tok, NULL)) {
            check(tok, strlen(tok), self_keys, 0);
            check(tok, strlen(tok), self_keys, 1);
        }
        cjose_jws_release(jws);
        cjose_header_release(h);
    }
    check((const char *)data, size, keys, 0);
    check((const char *)data, size, keys, 1);

    err[0] = '\0';
    if (jwt_keyset_parse((const char *)data, size, NULL, NULL, &ks, err, sizeof(err)) == 0) {
        if (jwt_keyset_count(ks) == 0 || jwt_keyset_count(ks) > JWT_JWKS_MAX_KEYS)
            abort();
        check(fixed_token, strlen(fixed_token), ks, 0);
        jwt_keyset_unref(ks);
    } else if (err[0] == '\0' || ks != NULL) {
        abort(); /* every refusal must say why */
    }
    return 0;
}
