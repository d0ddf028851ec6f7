/*
 * fuzz_cookie.c - session_cookie_open() on untrusted cookie values, with a
 * fixed in-memory key ring; the seeds in corpus/cookie/ were sealed with
 * these keys at 1700000000 (valid, expired, idle, other device, ...).
 *
 * Invariants checked beyond "no crash, no leak": a result is one of the
 * enum; the session is filled exactly when the tag verified; an accepted
 * cookie re-seals and re-opens to the same session; a cookie for one name
 * never opens under another; nothing but a "b1." value opens as a blob.
 *
 * An input starting with a NUL byte (never a valid cookie) is instead taken
 * as a plaintext record: it is sealed with the "new" key exactly as the
 * wire format says (docs/sessions.md) and then opened, so the record decoder
 * behind the tag is fuzzed too, not only the base64 and AEAD gate.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "session.h"

static const char ring_json[] =
    "[{\"id\":\"old\",\"key\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\",\"created\":1},"
    "{\"id\":\"new\",\"key\":\"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\",\"created\":2},"
    "{\"id\":\"gone\",\"key\":\"MTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTE=\",\"created\":3,"
    "\"retired\":true}]";

#define NOW 1700000100 /* the seeds were sealed at 1700000000 */

static struct session_keyring *ring;

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Seal plain[0..n) with the "new" key; out holds 3 + 4/3 * (n + 32) + 4. */
static size_t forge(const uint8_t *plain, size_t n, char *out)
{
    static const uint8_t key[32] = "0123456789abcdef0123456789abcdef";
    static const uint8_t nonce[12] = "fuzz-nonce!";
    uint8_t md[32], raw[4096], aad[64], kidin[19 + 32];
    unsigned int mdlen;
    uint32_t acc = 0;
    size_t i, o = 0;
    int len, bits = 0;
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();

    memcpy(kidin, "ztproxy-session-kid", 19);
    memcpy(kidin + 19, key, 32);
    if (c == NULL || EVP_Digest(kidin, sizeof(kidin), md, &mdlen, EVP_sha256(), NULL) != 1)
        abort();
    memcpy(raw, md, 4);
    memcpy(raw + 4, nonce, 12);
    memcpy(aad, md, 4);
    memcpy(aad + 4, "ztproxy-session-v1ztsession", 27);
    if (EVP_EncryptInit_ex2(c, EVP_aes_256_gcm(), key, nonce, NULL) != 1 ||
        EVP_EncryptUpdate(c, NULL, &len, aad, 31) != 1 ||
        (n > 0 && EVP_EncryptUpdate(c, raw + 16, &len, plain, (int)n) != 1) ||
        EVP_EncryptFinal_ex(c, raw + 16 + n, &len) != 1 ||
        EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, 16, raw + 16 + n) != 1)
        abort();
    EVP_CIPHER_CTX_free(c);
    memcpy(out, "v1.", 3);
    o = 3;
    for (i = 0; i < 16 + n + 16; i++) {
        acc = acc << 8 | raw[i];
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            out[o++] = b64url[(acc >> bits) & 63];
        }
    }
    if (bits > 0)
        out[o++] = b64url[(acc << (6 - bits)) & 63];
    return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint8_t zero[sizeof(struct session)];
    uint8_t thumb[SESSION_THUMBPRINT_LEN];
    struct session s, again;
    char cookie[SESSION_COOKIE_MAX];
    size_t len;
    int reseal;
    enum session_result r, r2;

    if (ring == NULL) {
        char err[256];
        if (session_keyring_parse(ring_json, sizeof(ring_json) - 1, "fuzz", &ring, err,
                                  sizeof(err)) == -1)
            abort();
    }
    memset(thumb, 0xaa, sizeof(thumb));
    if (size > 0 && data[0] == 0) {
        static char forged[3 + 4 * (2048 + 32) / 3 + 8];
        if (size - 1 > 2048)
            return 0;
        len = forge(data + 1, size - 1, forged);
        data = (const uint8_t *)forged;
        size = len;
    }
    /* The same bytes as a sealed blob: a session cookie never is one. */
    {
        static uint8_t blob[SESSION_BLOB_MAX];
        size_t blen = 0;
        if (session_blob_open(ring, "ztsession", (const char *)data, size, blob, sizeof(blob),
                              &blen) == 0 &&
            (size < 3 || memcmp(data, "b1.", 3) != 0))
            abort();
    }
    r = session_cookie_open(ring, "ztsession", (const char *)data, size, NOW, thumb, &s, &reseal);
    switch (r) {
    case SESSION_OK:
    case SESSION_WRONG_DEVICE:
    case SESSION_EXPIRED:
    case SESSION_IDLE_EXPIRED:
        if (s.subject[0] == '\0' || s.provider[0] == '\0' || s.namr > SESSION_AMR_MAX)
            abort();
        break;
    case SESSION_MALFORMED:
    case SESSION_UNKNOWN_KEY:
    case SESSION_BAD_TAG:
        if (memcmp(&s, zero, sizeof(s)) != 0 || reseal != 0)
            abort();
        break;
    default:
        abort();
    }
    if (r != SESSION_OK) {
        if (reseal != 0)
            abort();
        return 0;
    }
    if (session_cookie_open(ring, "other", (const char *)data, size, NOW, thumb, &again, NULL) !=
        SESSION_BAD_TAG)
        abort();
    if (session_cookie_seal(ring, "ztsession", &s, cookie, sizeof(cookie), &len) != 0)
        abort();
    r2 = session_cookie_open(ring, "ztsession", cookie, len, NOW, thumb, &again, NULL);
    if (r2 != SESSION_OK || memcmp(&s, &again, sizeof(s)) != 0)
        abort();
    if (reseal) {
        session_touch(&s, NOW, 3600);
        if (session_cookie_seal(ring, "ztsession", &s, cookie, sizeof(cookie), &len) != 0)
            abort();
    }
    return 0;
}
