/*
 * session_test.c - sealed cookies, key ring, Set-Cookie and revocations,
 * through the public API of include/session.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "session.h"

#define T0 1700000000LL
#define LIFETIME (12 * 3600)
#define IDLE 3600
#define NAME "ztsession"

/* Two fixed keys: "old" (created 1) and "new" (created 2). */
#define KEY_OLD                                                                                    \
    "{\"id\":\"old\",\"key\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\",\"created\":1"
#define KEY_NEW                                                                                    \
    "{\"id\":\"new\",\"key\":\"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\",\"created\":2"

static const uint8_t thumb_a[SESSION_THUMBPRINT_LEN] = {0xaa, 1, 2, 3};
static const uint8_t thumb_b[SESSION_THUMBPRINT_LEN] = {0xbb, 1, 2, 3};

static struct session_keyring *ring_from(const char *json)
{
    struct session_keyring *ring = NULL;
    char err[256] = "";

    if (session_keyring_parse(json, strlen(json), "test", &ring, err, sizeof(err)) == -1)
        fail_msg("keyring: %s", err);
    return ring;
}

static void make_session(struct session *s, int64_t now)
{
    static const char *const amr[] = {"pwd", "otp"};
    struct session_login in = {
        .provider = "corp",
        .subject = "00u1abcdef",
        .email = "alice@corp.example",
        .acr = "urn:corp:mfa",
        .amr = amr,
        .namr = 2,
        .auth_time = now - 5,
        .thumbprint = thumb_a,
    };

    assert_int_equal(session_init(s, &in, now, LIFETIME, IDLE), 0);
}

static size_t seal(const struct session_keyring *ring, const struct session *s, char *buf)
{
    size_t len = 0;

    assert_int_equal(session_cookie_seal(ring, NAME, s, buf, SESSION_COOKIE_MAX, &len), 0);
    assert_int_equal(strlen(buf), len);
    return len;
}

static enum session_result open_at(const struct session_keyring *ring, const char *c, size_t len,
                                   int64_t now, const uint8_t *thumb, struct session *out,
                                   int *reseal)
{
    return session_cookie_open(ring, NAME, c, len, now, thumb, out, reseal);
}

/* base64url (no padding) for re-encoding tampered bytes. */
static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static size_t b64_dec(const char *in, size_t n, uint8_t *out)
{
    uint32_t acc = 0;
    size_t i, o = 0;
    int bits = 0;

    for (i = 0; i < n; i++) {
        const char *p = strchr(b64, in[i]);
        assert_non_null(p);
        acc = acc << 6 | (uint32_t)(p - b64);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    return o;
}

static size_t b64_enc(const uint8_t *in, size_t n, char *out)
{
    uint32_t acc = 0;
    size_t i, o = 0;
    int bits = 0;

    for (i = 0; i < n; i++) {
        acc = acc << 8 | in[i];
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            out[o++] = b64[(acc >> bits) & 63];
        }
    }
    if (bits > 0)
        out[o++] = b64[(acc << (6 - bits)) & 63];
    out[o] = '\0';
    return o;
}

/* ---- round trip ----------------------------------------------------- */

static void long_str(char *buf, size_t n, char c)
{
    memset(buf, c, n);
    buf[n] = '\0';
}

static void test_round_trip(void **state)
{
    static char sub[SESSION_SUBJECT_MAX + 1], email[SESSION_EMAIL_MAX + 1],
        prov[SESSION_PROVIDER_MAX + 1], acr[SESSION_ACR_MAX + 1], item[SESSION_AMR_ITEM_MAX + 1],
        sid[SESSION_SID_MAX + 1];
    static const char *amr_max[SESSION_AMR_MAX];
    static const char *const amr2[] = {"hwk", "pin"};
    struct session_login cases[4];
    struct session_keyring *ring = ring_from("[" KEY_OLD "}," KEY_NEW "}]");
    struct session s, out;
    char cookie[SESSION_COOKIE_MAX];
    size_t i, len;
    int reseal = -1;

    (void)state;
    long_str(sub, SESSION_SUBJECT_MAX, 's');
    long_str(email, SESSION_EMAIL_MAX, 'e');
    long_str(prov, SESSION_PROVIDER_MAX, 'p');
    long_str(acr, SESSION_ACR_MAX, 'a');
    long_str(item, SESSION_AMR_ITEM_MAX, 'm');
    long_str(sid, SESSION_SID_MAX, 'i');
    for (i = 0; i < SESSION_AMR_MAX; i++)
        amr_max[i] = item;
    memset(cases, 0, sizeof(cases));
    /* minimal: no email, acr or amr */
    cases[0] = (struct session_login){.provider = "p", .subject = "x", .thumbprint = thumb_a};
    /* typical, with UTF-8 */
    cases[1] = (struct session_login){.provider = "corp",
                                      .subject = "J\xc3\xbcrgen",
                                      .email = "j@corp.example",
                                      .acr = "1",
                                      .amr = amr2,
                                      .namr = 2,
                                      .auth_time = T0 - 100,
                                      .thumbprint = thumb_a,
                                      .sid = "9c1e-idp-session"};
    /* every field at its maximum */
    cases[2] = (struct session_login){.provider = prov,
                                      .subject = sub,
                                      .email = email,
                                      .acr = acr,
                                      .amr = amr_max,
                                      .namr = SESSION_AMR_MAX,
                                      .auth_time = T0,
                                      .thumbprint = thumb_a,
                                      .sid = sid};
    cases[3] = cases[1];
    cases[3].email = "";
    cases[3].sid = "";
    for (i = 0; i < 4; i++) {
        assert_int_equal(session_init(&s, &cases[i], T0, LIFETIME, IDLE), 0);
        len = seal(ring, &s, cookie);
        assert_memory_equal(cookie, "v1.", 3);
        assert_int_equal(open_at(ring, cookie, len, T0 + 1, thumb_a, &out, &reseal), SESSION_OK);
        assert_int_equal(reseal, 0);
        assert_memory_equal(&out, &s, sizeof(s));
        assert_string_equal(out.sid, cases[i].sid != NULL ? cases[i].sid : "");
        if (i == 2) /* the largest session is exactly the largest cookie */
            assert_int_equal(len, SESSION_COOKIE_MAX - 1);
    }
    /* two seals of one session differ (fresh nonce) but both open */
    {
        char c2[SESSION_COOKIE_MAX];
        size_t len2 = seal(ring, &s, c2);
        assert_int_equal(len2, len);
        assert_true(memcmp(c2, cookie, len) != 0);
        assert_int_equal(open_at(ring, c2, len2, T0, thumb_a, &out, NULL), SESSION_OK);
    }
    /* ids are random */
    {
        struct session s2;
        make_session(&s2, T0);
        make_session(&s, T0);
        assert_true(memcmp(s.id, s2.id, SESSION_ID_LEN) != 0);
    }
    assert_string_equal(session_keyring_current(ring), "new");
    session_keyring_unref(ring);
}

static void test_name_is_bound(void **state)
{
    struct session_keyring *ring = ring_from("[" KEY_NEW "}]");
    struct session s, out;
    char cookie[SESSION_COOKIE_MAX];
    size_t len;

    (void)state;
    make_session(&s, T0);
    len = seal(ring, &s, cookie);
    assert_int_equal(session_cookie_open(ring, "other", cookie, len, T0, thumb_a, &out, NULL),
                     SESSION_BAD_TAG);
    assert_int_equal(session_cookie_open(ring, NAME, cookie, len, T0, thumb_a, &out, NULL),
                     SESSION_OK);
    session_keyring_unref(ring);
}

/* ---- tampering ------------------------------------------------------ */

/* Every position, every byte value: never OK. With canonical base64 a
 * changed character always changes the bytes, even in the last one. */
static void test_tamper_every_char(void **state)
{
    struct session_keyring *ring = ring_from("[" KEY_NEW "}]");
    struct session s, out;
    char cookie[SESSION_COOKIE_MAX], t[SESSION_COOKIE_MAX];
    size_t len, i;
    int c, round;
    enum session_result r;

    (void)state;
    for (round = 0; round < 3; round++) { /* three lengths: every base64 remainder */
        make_session(&s, T0);
        snprintf(s.subject, sizeof(s.subject), "user%.*s", round, "xy");
        len = seal(ring, &s, cookie);
        for (i = 0; i < len; i++) {
            memcpy(t, cookie, len);
            for (c = 0; c < 256; c++) {
                t[i] = (char)c;
                if (t[i] == cookie[i])
                    continue;
                r = open_at(ring, t, len, T0, thumb_a, &out, NULL);
                if (r == SESSION_OK)
                    fail_msg("char %zu -> 0x%02x opened", i, (unsigned)c);
                /* chars 3..8 carry the key id */
                if (i >= 3 && i < 9)
                    assert_true(r == SESSION_UNKNOWN_KEY || r == SESSION_MALFORMED ||
                                r == SESSION_BAD_TAG);
                else
                    assert_true(r == SESSION_BAD_TAG || r == SESSION_MALFORMED);
                assert_int_equal(out.subject[0], '\0'); /* nothing leaks out */
            }
        }
    }
    session_keyring_unref(ring);
}

static void test_tamper_every_bit(void **state)
{
    struct session_keyring *ring = ring_from("[" KEY_NEW "}]");
    struct session s, out;
    char cookie[SESSION_COOKIE_MAX], t[SESSION_COOKIE_MAX];
    uint8_t raw[SESSION_COOKIE_MAX];
    size_t len, rawlen, i, tl;
    int bit;

    (void)state;
    make_session(&s, T0);
    len = seal(ring, &s, cookie);
    rawlen = b64_dec(cookie + 3, len - 3, raw);
    for (i = 0; i < rawlen; i++) {
        for (bit = 0; bit < 8; bit++) {
            raw[i] ^= (uint8_t)(1 << bit);
            memcpy(t, "v1.", 3);
            tl = 3 + b64_enc(raw, rawlen, t + 3);
            raw[i] ^= (uint8_t)(1 << bit);
            assert_int_equal(open_at(ring, t, tl, T0, thumb_a, &out, NULL),
                             i < 4 ? SESSION_UNKNOWN_KEY : SESSION_BAD_TAG);
        }
    }
    /* and unchanged bytes re-encoded still open: the helper is right */
    memcpy(t, "v1.", 3);
    tl = 3 + b64_enc(raw, rawlen, t + 3);
    assert_int_equal(open_at(ring, t, tl, T0, thumb_a, &out, NULL), SESSION_OK);
    session_keyring_unref(ring);
}

static void test_truncate_and_extend(void **state)
{
    struct session_keyring *ring = ring_from("[" KEY_NEW "}]");
    struct session s, out;
    char cookie[SESSION_COOKIE_MAX + 8], t[SESSION_COOKIE_MAX + 8];
    size_t len, i;
    enum session_result r;
    const char *extra[] = {"A", "AA", "AAA", "AAAA", "=", "==", ".", " "};

    (void)state;
    make_session(&s, T0);
    len = seal(ring, &s, cookie);
    for (i = 0; i < len; i++) {
        r = open_at(ring, cookie, i, T0, thumb_a, &out, NULL);
        assert_true(r == SESSION_MALFORMED || r == SESSION_BAD_TAG);
        if (i < 3 + 170) /* shorter than the smallest record */
            assert_int_equal(r, SESSION_MALFORMED);
    }
    for (i = 0; i < sizeof(extra) / sizeof(extra[0]); i++) {
        snprintf(t, sizeof(t), "%s%s", cookie, extra[i]);
        r = open_at(ring, t, strlen(t), T0, thumb_a, &out, NULL);
        assert_true(r == SESSION_MALFORMED || r == SESSION_BAD_TAG);
    }
    session_keyring_unref(ring);
}

struct malformed_case {
    const char *value;
    enum session_result expect;
};

static void test_malformed(void **state)
{
    static const struct malformed_case cases[] = {
        {"", SESSION_MALFORMED},
        {"v1", SESSION_MALFORMED},
        {"v1.", SESSION_MALFORMED},
        {"v2.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
         "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
         "AAAAAAAAAAAAAAAA",
         SESSION_MALFORMED},
        /* valid base64 of the right size, unknown key id */
        {"v1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
         "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
         "AAAAAAAAAAAAAAAA",
         SESSION_UNKNOWN_KEY},
        {"v1.AAAA AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
         "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
         "AAAAAAAAAAAAAAAA",
         SESSION_MALFORMED},
        {"v1.AAAA+AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
         "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
         "AAAAAAAAAAAAAAAA",
         SESSION_MALFORMED},
        {"v1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
         "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
         "AAAAAAAAAAAAAAAA==",
         SESSION_MALFORMED},
        {"v1.\xff\xfe", SESSION_MALFORMED},
    };
    struct session_keyring *ring = ring_from("[" KEY_NEW "}]");
    struct session out;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        enum session_result r =
            open_at(ring, cases[i].value, strlen(cases[i].value), T0, thumb_a, &out, NULL);
        if (r != cases[i].expect)
            fail_msg("case %zu: got %s, want %s", i, session_result_str(r),
                     session_result_str(cases[i].expect));
    }
    session_keyring_unref(ring);
}

/* ---- the documented wire format (docs/sessions.md), built by hand ---- */

struct plain {
    uint8_t b[2048];
    size_t n;
};

static void p_bytes(struct plain *p, const void *v, size_t n)
{
    memcpy(p->b + p->n, v, n);
    p->n += n;
}

static void p_u64(struct plain *p, int64_t v)
{
    int i;

    for (i = 7; i >= 0; i--)
        p->b[p->n++] = (uint8_t)((uint64_t)v >> (8 * i));
}

static void p_str(struct plain *p, const char *s, size_t n)
{
    p->b[p->n++] = (uint8_t)n;
    p_bytes(p, s, n);
}

/* Seal arbitrary plaintext with KEY_NEW exactly as the format says. */
static size_t forge(const struct plain *p, char *out)
{
    static const uint8_t key[32] = "0123456789abcdef0123456789abcdef";
    uint8_t md[32], raw[4096], aad[128];
    unsigned int mdlen;
    EVP_MD_CTX *mctx = EVP_MD_CTX_new();
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    size_t aadlen;
    int n;

    assert_int_equal(EVP_DigestInit_ex(mctx, EVP_sha256(), NULL), 1);
    EVP_DigestUpdate(mctx, "ztproxy-session-kid", 19);
    EVP_DigestUpdate(mctx, key, 32);
    EVP_DigestFinal_ex(mctx, md, &mdlen);
    EVP_MD_CTX_free(mctx);
    memcpy(raw, md, 4);
    assert_int_equal(RAND_bytes(raw + 4, 12), 1);
    memcpy(aad, md, 4);
    memcpy(aad + 4, "ztproxy-session-v1" NAME, 18 + strlen(NAME));
    aadlen = 4 + 18 + strlen(NAME);
    assert_int_equal(EVP_EncryptInit_ex2(c, EVP_aes_256_gcm(), key, raw + 4, NULL), 1);
    assert_int_equal(EVP_EncryptUpdate(c, NULL, &n, aad, (int)aadlen), 1);
    assert_int_equal(EVP_EncryptUpdate(c, raw + 16, &n, p->b, (int)p->n), 1);
    assert_int_equal(EVP_EncryptFinal_ex(c, raw + 16 + p->n, &n), 1);
    assert_int_equal(EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, 16, raw + 16 + p->n), 1);
    EVP_CIPHER_CTX_free(c);
    memcpy(out, "v1.", 3);
    return 3 + b64_enc(raw, 16 + p->n + 16, out + 3);
}

enum wire_bug {
    W_NONE,
    W_TRAILING_BYTE, /* also: an empty sid, which is encoded by its absence */
    W_SID_OVERRUNS,
    W_CTL_IN_SID,
    W_SHORT,
    W_SUBJECT_OVERRUNS,
    W_EMPTY_SUBJECT,
    W_EMPTY_PROVIDER,
    W_NUL_IN_SUBJECT,
    W_CTL_IN_EMAIL,
    W_DEL_IN_ACR,
    W_EMAIL_TOO_LONG,
    W_PROVIDER_TOO_LONG,
    W_TOO_MANY_AMR,
    W_EMPTY_AMR,
    W_EXPIRES_NOT_AFTER_ISSUED,
    W_IDLE_NOT_AFTER_SEEN,
    W_SEEN_BEFORE_ISSUED,
    W_NEGATIVE_TIME,
    W_HUGE_TIME,
};

static void build(struct plain *p, enum wire_bug bug)
{
    char filler[300];
    int64_t iat = T0, exp = T0 + LIFETIME, seen = T0, idle = T0 + IDLE, auth = T0 - 5;
    int i;

    memset(filler, 'z', sizeof(filler));
    p->n = 0;
    p_bytes(p, "0123456789abcdef", 16);
    p_bytes(p, thumb_a, 32);
    if (bug == W_EXPIRES_NOT_AFTER_ISSUED)
        exp = iat;
    if (bug == W_IDLE_NOT_AFTER_SEEN)
        idle = seen;
    if (bug == W_SEEN_BEFORE_ISSUED)
        seen = iat - 1;
    if (bug == W_NEGATIVE_TIME)
        auth = -1;
    if (bug == W_HUGE_TIME)
        exp = INT64_MAX;
    p_u64(p, auth);
    p_u64(p, iat);
    p_u64(p, exp);
    p_u64(p, seen);
    p_u64(p, idle);
    if (bug == W_EMPTY_PROVIDER)
        p_str(p, "", 0);
    else if (bug == W_PROVIDER_TOO_LONG)
        p_str(p, filler, SESSION_PROVIDER_MAX + 1);
    else
        p_str(p, "corp", 4);
    if (bug == W_SUBJECT_OVERRUNS) {
        p_str(p, "alice", 5);
        p->b[p->n - 6] = 200; /* length says more than there is */
        return;
    }
    if (bug == W_EMPTY_SUBJECT)
        p_str(p, "", 0);
    else if (bug == W_NUL_IN_SUBJECT)
        p_str(p, "ali\0ce", 6);
    else
        p_str(p, "alice", 5);
    if (bug == W_CTL_IN_EMAIL)
        p_str(p, "a@b\r\nX: y", 9);
    else if (bug == W_EMAIL_TOO_LONG)
        p_str(p, filler, SESSION_EMAIL_MAX + 1);
    else
        p_str(p, "alice@corp.example", 18);
    if (bug == W_DEL_IN_ACR)
        p_str(p, "mfa\x7f", 4);
    else
        p_str(p, "mfa", 3);
    if (bug == W_SHORT)
        return; /* no amr count */
    if (bug == W_TOO_MANY_AMR) {
        p->b[p->n++] = SESSION_AMR_MAX + 1;
        for (i = 0; i < SESSION_AMR_MAX + 1; i++)
            p_str(p, "pwd", 3);
        return;
    }
    p->b[p->n++] = 2;
    p_str(p, "pwd", 3);
    if (bug == W_EMPTY_AMR)
        p_str(p, "", 0);
    else
        p_str(p, "otp", 3);
    if (bug == W_TRAILING_BYTE)
        p->b[p->n++] = 0;
    if (bug == W_SID_OVERRUNS) {
        p->b[p->n++] = 255;
        p_bytes(p, filler, 254); /* the length says one more than there is */
    }
    if (bug == W_CTL_IN_SID)
        p_str(p, "s\x01d", 3);
    if (bug == W_HUGE_TIME + 1) /* not a bug: a cookie with a sid */
        p_str(p, "idp-sid-1", 9);
}

static void test_wire_format(void **state)
{
    struct session_keyring *ring = ring_from("[" KEY_NEW "}]");
    struct session out;
    struct plain p;
    char cookie[4096];
    size_t len;
    int bug;
    enum session_result r;

    (void)state;
    build(&p, W_NONE);
    len = forge(&p, cookie);
    assert_int_equal(open_at(ring, cookie, len, T0, thumb_a, &out, NULL), SESSION_OK);
    assert_memory_equal(out.id, "0123456789abcdef", 16);
    assert_string_equal(out.provider, "corp");
    assert_string_equal(out.subject, "alice");
    assert_string_equal(out.email, "alice@corp.example");
    assert_string_equal(out.acr, "mfa");
    assert_int_equal(out.namr, 2);
    assert_string_equal(out.amr[0], "pwd");
    assert_string_equal(out.amr[1], "otp");
    assert_int_equal(out.auth_time, T0 - 5);
    assert_int_equal(out.issued_at, T0);
    assert_int_equal(out.expires_at, T0 + LIFETIME);
    assert_int_equal(out.seen_at, T0);
    assert_int_equal(out.idle_expires_at, T0 + IDLE);
    assert_memory_equal(out.thumbprint, thumb_a, 32);
    /* the format before sid existed (W_NONE) opens with an empty sid; the
     * same record with a trailing sid carries it */
    assert_string_equal(out.sid, "");
    build(&p, (enum wire_bug)(W_HUGE_TIME + 1));
    len = forge(&p, cookie);
    assert_int_equal(open_at(ring, cookie, len, T0, thumb_a, &out, NULL), SESSION_OK);
    assert_string_equal(out.subject, "alice");
    assert_string_equal(out.sid, "idp-sid-1");
    /* authentic but invalid records are refused, never half-read */
    for (bug = W_NONE + 1; bug <= W_HUGE_TIME; bug++) {
        build(&p, (enum wire_bug)bug);
        len = forge(&p, cookie);
        r = open_at(ring, cookie, len, T0, thumb_a, &out, NULL);
        if (r != SESSION_MALFORMED)
            fail_msg("bug %d: got %s", bug, session_result_str(r));
        assert_int_equal(out.subject[0], '\0');
    }
    session_keyring_unref(ring);
}

static void test_oversize(void **state)
{
    static char big[SESSION_COOKIE_MAX * 4];
    static char sub[SESSION_SUBJECT_MAX + 2], item[SESSION_AMR_ITEM_MAX + 2];
    static const char *amr[SESSION_AMR_MAX + 1];
    struct session_keyring *ring = ring_from("[" KEY_NEW "}]");
    struct session s, out;
    struct session_login in = {.provider = "p", .subject = "x", .thumbprint = thumb_a};
    char cookie[SESSION_COOKIE_MAX];
    size_t i, len;

    (void)state;
    /* a cookie value longer than any we seal is refused before decoding */
    memcpy(big, "v1.", 3);
    memset(big + 3, 'A', sizeof(big) - 4);
    for (i = SESSION_COOKIE_MAX - 2; i < SESSION_COOKIE_MAX + 4; i++)
        assert_int_not_equal(open_at(ring, big, i, T0, thumb_a, &out, NULL), SESSION_OK);
    assert_int_equal(open_at(ring, big, SESSION_COOKIE_MAX, T0, thumb_a, &out, NULL),
                     SESSION_MALFORMED);
    assert_int_equal(open_at(ring, big, sizeof(big) - 1, T0, thumb_a, &out, NULL),
                     SESSION_MALFORMED);

    /* every field limit, on both sides */
    long_str(sub, SESSION_SUBJECT_MAX, 's');
    in.subject = sub;
    assert_int_equal(session_init(&s, &in, T0, LIFETIME, IDLE), 0);
    long_str(sub, SESSION_SUBJECT_MAX + 1, 's');
    assert_int_equal(session_init(&s, &in, T0, LIFETIME, IDLE), -1);
    in.subject = "";
    assert_int_equal(session_init(&s, &in, T0, LIFETIME, IDLE), -1);
    in.subject = "a\nb";
    assert_int_equal(session_init(&s, &in, T0, LIFETIME, IDLE), -1);
    in.subject = "x";
    in.provider = NULL;
    assert_int_equal(session_init(&s, &in, T0, LIFETIME, IDLE), -1);
    in.provider = "p";
    long_str(item, SESSION_AMR_ITEM_MAX, 'm');
    for (i = 0; i < SESSION_AMR_MAX + 1; i++)
        amr[i] = item;
    in.amr = amr;
    in.namr = SESSION_AMR_MAX;
    assert_int_equal(session_init(&s, &in, T0, LIFETIME, IDLE), 0);
    in.namr = SESSION_AMR_MAX + 1;
    assert_int_equal(session_init(&s, &in, T0, LIFETIME, IDLE), -1);
    in.namr = 1;
    long_str(item, SESSION_AMR_ITEM_MAX + 1, 'm');
    assert_int_equal(session_init(&s, &in, T0, LIFETIME, IDLE), -1);
    in.namr = 0;
    assert_int_equal(session_init(&s, &in, T0, 0, IDLE), -1);
    assert_int_equal(session_init(&s, &in, T0, LIFETIME, 0), -1);
    assert_int_equal(session_init(&s, &in, T0, 400LL * 86400, IDLE), 0);
    assert_int_equal(session_init(&s, &in, T0, 400LL * 86400 + 1, IDLE), -1);

    /* a session broken after init is refused by seal */
    make_session(&s, T0);
    memset(s.subject, 'x', sizeof(s.subject)); /* no NUL */
    assert_int_equal(session_cookie_seal(ring, NAME, &s, cookie, sizeof(cookie), NULL), -1);
    make_session(&s, T0);
    s.idle_expires_at = s.seen_at;
    assert_int_equal(session_cookie_seal(ring, NAME, &s, cookie, sizeof(cookie), NULL), -1);
    make_session(&s, T0);
    s.namr = SESSION_AMR_MAX + 1;
    assert_int_equal(session_cookie_seal(ring, NAME, &s, cookie, sizeof(cookie), NULL), -1);

    /* the output buffer: exact size fits, one less does not */
    make_session(&s, T0);
    len = seal(ring, &s, cookie);
    assert_int_equal(session_cookie_seal(ring, NAME, &s, cookie, len + 1, NULL), 0);
    assert_int_equal(session_cookie_seal(ring, NAME, &s, cookie, len, NULL), -1);
    /* bad cookie names */
    assert_int_equal(session_cookie_seal(ring, "", &s, cookie, sizeof(cookie), NULL), -1);
    assert_int_equal(session_cookie_seal(ring, "a;b", &s, cookie, sizeof(cookie), NULL), -1);
    session_keyring_unref(ring);
}

/* ---- device binding and time ---------------------------------------- */

static void test_wrong_device(void **state)
{
    struct session_keyring *ring = ring_from("[" KEY_NEW "}]");
    struct session s, out;
    char cookie[SESSION_COOKIE_MAX];
    uint8_t t[SESSION_THUMBPRINT_LEN];
    size_t len, i;

    (void)state;
    make_session(&s, T0);
    len = seal(ring, &s, cookie);
    assert_int_equal(open_at(ring, cookie, len, T0, thumb_b, &out, NULL), SESSION_WRONG_DEVICE);
    assert_string_equal(out.subject, s.subject); /* for the audit line */
    /* any single differing byte */
    for (i = 0; i < SESSION_THUMBPRINT_LEN; i++) {
        memcpy(t, thumb_a, sizeof(t));
        t[i] ^= 0x80;
        assert_int_equal(open_at(ring, cookie, len, T0, t, &out, NULL), SESSION_WRONG_DEVICE);
    }
    /* reported even when the cookie is also expired */
    assert_int_equal(open_at(ring, cookie, len, T0 + LIFETIME, thumb_b, &out, NULL),
                     SESSION_WRONG_DEVICE);
    session_keyring_unref(ring);
}

struct time_case {
    int64_t now; /* offset from T0 */
    enum session_result expect;
    int reseal;
};

static void test_expiry_boundaries(void **state)
{
    static const struct time_case cases[] = {
        {0, SESSION_OK, 0},
        {IDLE / 2, SESSION_OK, 0},     /* exactly half the idle window: not yet */
        {IDLE / 2 + 1, SESSION_OK, 1}, /* more than half: re-seal */
        {IDLE - 1, SESSION_OK, 1},
        {IDLE, SESSION_IDLE_EXPIRED, 0},
        {IDLE + 1, SESSION_IDLE_EXPIRED, 0},
        {LIFETIME - 1, SESSION_IDLE_EXPIRED, 0},
        {LIFETIME, SESSION_EXPIRED, 0}, /* absolute expiry wins over idle */
        {-1, SESSION_OK, 0},            /* clock a bit behind the issuer */
    };
    struct session_keyring *ring = ring_from("[" KEY_NEW "}]");
    struct session s, out;
    char cookie[SESSION_COOKIE_MAX];
    size_t len, i;
    int reseal;

    (void)state;
    make_session(&s, T0);
    len = seal(ring, &s, cookie);
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        enum session_result r =
            open_at(ring, cookie, len, T0 + cases[i].now, thumb_a, &out, &reseal);
        if (r != cases[i].expect || reseal != cases[i].reseal)
            fail_msg("case %zu (+%lld): got %s/%d", i, (long long)cases[i].now,
                     session_result_str(r), reseal);
    }
    session_keyring_unref(ring);
}

/* Rolling: a user active every 40 minutes stays logged in until the
 * absolute expiry, and the cookie is re-sealed only every other request. */
static void test_rolling_idle(void **state)
{
    struct session_keyring *ring = ring_from("[" KEY_NEW "}]");
    struct session s, out;
    char cookie[SESSION_COOKIE_MAX];
    size_t len;
    int64_t now;
    int reseal, reseals = 0, requests = 0;

    (void)state;
    make_session(&s, T0);
    len = seal(ring, &s, cookie);
    for (now = T0; now < T0 + LIFETIME; now += 20 * 60) {
        assert_int_equal(open_at(ring, cookie, len, now, thumb_a, &out, &reseal), SESSION_OK);
        requests++;
        if (reseal) {
            reseals++;
            session_touch(&out, now, IDLE);
            assert_int_equal(out.idle_expires_at, now + IDLE);
            len = seal(ring, &out, cookie);
        }
    }
    assert_int_equal(requests, LIFETIME / (20 * 60));
    assert_true(reseals <= requests / 2 + 1);
    assert_int_equal(open_at(ring, cookie, len, T0 + LIFETIME, thumb_a, &out, &reseal),
                     SESSION_EXPIRED);
    /* close to the absolute expiry, re-sealing cannot help: not asked */
    make_session(&s, T0);
    s.expires_at = T0 + IDLE;
    len = seal(ring, &s, cookie);
    assert_int_equal(open_at(ring, cookie, len, T0 + IDLE - 1, thumb_a, &out, &reseal), SESSION_OK);
    assert_int_equal(reseal, 0);
    session_keyring_unref(ring);
}

/* ---- key ring -------------------------------------------------------- */

static void test_rotation(void **state)
{
    struct session_keyring *r1 = ring_from("[" KEY_OLD "}]");
    struct session_keyring *r2 = ring_from("[" KEY_OLD "}," KEY_NEW "}]");
    struct session_keyring *r3 = ring_from("[" KEY_OLD ",\"retired\":true}," KEY_NEW "}]");
    struct session_keyring *r4 = ring_from("[" KEY_NEW "}," KEY_OLD ",\"retired\":false}]");
    struct session s, out;
    char c1[SESSION_COOKIE_MAX], c2[SESSION_COOKIE_MAX];
    size_t l1, l2;

    (void)state;
    make_session(&s, T0);
    l1 = seal(r1, &s, c1);
    assert_string_equal(session_keyring_current(r1), "old");
    /* a new key is added: old cookies still open, new ones use the new key */
    assert_string_equal(session_keyring_current(r2), "new");
    assert_int_equal(open_at(r2, c1, l1, T0, thumb_a, &out, NULL), SESSION_OK);
    l2 = seal(r2, &s, c2);
    assert_int_equal(open_at(r2, c2, l2, T0, thumb_a, &out, NULL), SESSION_OK);
    assert_int_equal(open_at(r1, c2, l2, T0, thumb_a, &out, NULL), SESSION_UNKNOWN_KEY);
    /* the old key is retired: its cookies are refused */
    assert_int_equal(open_at(r3, c1, l1, T0, thumb_a, &out, NULL), SESSION_UNKNOWN_KEY);
    assert_int_equal(open_at(r3, c2, l2, T0, thumb_a, &out, NULL), SESSION_OK);
    /* "newest" is by created, not by position */
    assert_string_equal(session_keyring_current(r4), "new");
    /* a ring outlives its holders' reload */
    session_keyring_ref(r2);
    session_keyring_unref(r2);
    assert_int_equal(open_at(r2, c1, l1, T0, thumb_a, &out, NULL), SESSION_OK);
    session_keyring_unref(r1);
    session_keyring_unref(r2);
    session_keyring_unref(r3);
    session_keyring_unref(r4);
    session_keyring_unref(NULL);
}

struct ring_case {
    const char *text;
    const char *expect; /* substring of the error */
};

static void test_keyring_errors(void **state)
{
    static const struct ring_case cases[] = {
        {"", "test:"},
        {"{}", "expected an array of 1..64 keys"},
        {"[]", "expected an array of 1..64 keys"},
        {"[1]", "[0]: expected an object"},
        {"[" KEY_NEW ",\"x\":1}]", "[0].x: unknown key"},
        {"[{\"key\":\"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\",\"created\":1}]", "[0].id"},
        {"[{\"id\":\"a b\",\"key\":\"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\","
         "\"created\":1}]",
         "[0].id"},
        {"[{\"id\":\"a\",\"key\":\"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNk\",\"created\":1}]",
         "[0].key: expected standard base64 of exactly 32 bytes"},
        {"[{\"id\":\"a\",\"key\":\"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWYx\","
         "\"created\":1}]",
         "[0].key"},
        {"[{\"id\":\"a\",\"key\":\"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY\",\"created\":1}]",
         "[0].key"},
        {"[{\"id\":\"a\",\"key\":\"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWZ=\","
         "\"created\":1}]",
         "[0].key"}, /* non-canonical last character */
        {"[{\"id\":\"a\",\"key\":\"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"}]",
         "[0].created"},
        {"[{\"id\":\"a\",\"key\":\"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\","
         "\"created\":\"2024\"}]",
         "[0].created"},
        {"[" KEY_NEW ",\"retired\":\"no\"}]", "[0].retired: expected true or false"},
        {"[" KEY_NEW ",\"retired\":true}]", "no active key"},
        {"[" KEY_NEW "}," KEY_NEW "}]", "[1].id: \"new\" is used twice"},
        {"[" KEY_NEW "},{\"id\":\"copy\",\"key\":\"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\","
         "\"created\":3}]",
         "[1].key: same key as \"new\""},
        {"[" KEY_NEW ",\"id\":\"dup\"}]", "test:"}, /* duplicate JSON key */
    };
    struct session_keyring *ring;
    char err[256];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ring = NULL;
        err[0] = '\0';
        if (session_keyring_parse(cases[i].text, strlen(cases[i].text), "test", &ring, err,
                                  sizeof(err)) != -1)
            fail_msg("case %zu: accepted", i);
        assert_null(ring);
        if (strstr(err, cases[i].expect) == NULL)
            fail_msg("case %zu: \"%s\" does not contain \"%s\"", i, err, cases[i].expect);
    }
}

static char tmpdir[64];

static int setup_tmpdir(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/zt_session_test.XXXXXX");
    return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

static int teardown_tmpdir(void **state)
{
    char cmd[128];

    (void)state;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static void write_file(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");

    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(chmod(path, mode), 0);
}

static void test_keyfile_permissions(void **state)
{
    static const struct {
        mode_t mode;
        int ok;
    } cases[] = {{0600, 1}, {0400, 1}, {0640, 0}, {0604, 0}, {0644, 0}, {0660, 0}, {0610, 0}};
    struct session_keyring *ring;
    char path[128], err[256];
    size_t i;

    (void)state;
    snprintf(path, sizeof(path), "%s/keys.json", tmpdir);
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        write_file(path, "[" KEY_NEW "}]", cases[i].mode);
        ring = NULL;
        err[0] = '\0';
        if (cases[i].ok) {
            assert_int_equal(session_keyring_load(path, &ring, err, sizeof(err)), 0);
            assert_string_equal(session_keyring_current(ring), "new");
            session_keyring_unref(ring);
        } else {
            assert_int_equal(session_keyring_load(path, &ring, err, sizeof(err)), -1);
            assert_null(ring);
            assert_non_null(strstr(err, "must not be accessible by group or others"));
            assert_non_null(strstr(err, "chmod 600"));
        }
    }
    /* a symlink to a private file is fine (mounted secrets are symlinks);
     * the mode that counts is the target's */
    {
        char link[160];
        snprintf(link, sizeof(link), "%s/keys-link.json", tmpdir);
        write_file(path, "[" KEY_NEW "}]", 0600);
        assert_int_equal(symlink(path, link), 0);
        assert_int_equal(session_keyring_load(link, &ring, err, sizeof(err)), 0);
        session_keyring_unref(ring);
        assert_int_equal(chmod(path, 0644), 0);
        assert_int_equal(session_keyring_load(link, &ring, err, sizeof(err)), -1);
        unlink(link);
    }
    /* a missing file and a directory */
    assert_int_equal(session_keyring_load("/nonexistent/keys.json", &ring, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "No such file"));
    assert_int_equal(session_keyring_load(tmpdir, &ring, err, sizeof(err)), -1);
    unlink(path);
}

static void test_keyring_generate(void **state)
{
    struct session_keyring *ring = NULL, *ring2 = NULL;
    struct session s, out;
    struct stat st;
    char path[128], err[256] = "", cookie[SESSION_COOKIE_MAX];
    size_t len;

    (void)state;
    snprintf(path, sizeof(path), "%s/gen.json", tmpdir);
    assert_int_equal(session_keyring_generate(path, err, sizeof(err)), 0);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(session_keyring_load(path, &ring, err, sizeof(err)), 0);
    /* a second call keeps the existing key: cookies stay valid */
    assert_int_equal(session_keyring_generate(path, err, sizeof(err)), 0);
    assert_int_equal(session_keyring_load(path, &ring2, err, sizeof(err)), 0);
    make_session(&s, T0);
    len = seal(ring, &s, cookie);
    assert_int_equal(open_at(ring2, cookie, len, T0, thumb_a, &out, NULL), SESSION_OK);
    session_keyring_unref(ring);
    session_keyring_unref(ring2);
    /* no directory */
    assert_int_equal(session_keyring_generate("/nonexistent/k.json", err, sizeof(err)), -1);
    unlink(path);
}

/* ---- sealed blobs ---------------------------------------------------- */

static void test_blob(void **state)
{
    static uint8_t in[SESSION_BLOB_MAX + 1], out[SESSION_BLOB_MAX + 1];
    static char sealed[SESSION_BLOB_SEALED_MAX + 8], t[SESSION_BLOB_SEALED_MAX + 8];
    struct session_keyring *r1 = ring_from("[" KEY_OLD "}]");
    struct session_keyring *r2 = ring_from("[" KEY_OLD "}," KEY_NEW "}]");
    struct session_keyring *r3 = ring_from("[" KEY_OLD ",\"retired\":true}," KEY_NEW "}]");
    static const size_t sizes[] = {0, 1, 2, 3, 100, SESSION_BLOB_MAX};
    struct session s, so;
    char cookie[SESSION_COOKIE_MAX];
    size_t i, j, n, len;
    int c;

    (void)state;
    for (i = 0; i < sizeof(in); i++)
        in[i] = (uint8_t)(i * 7 + 3);
    for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        assert_int_equal(session_blob_seal(r2, "zt_login", in, sizes[i], sealed, sizeof(sealed)),
                         0);
        len = strlen(sealed);
        assert_memory_equal(sealed, "b1.", 3);
        assert_true(len < SESSION_BLOB_SEALED_MAX);
        if (sizes[i] == SESSION_BLOB_MAX)
            assert_int_equal(len, SESSION_BLOB_SEALED_MAX - 1);
        n = 9999;
        assert_int_equal(session_blob_open(r2, "zt_login", sealed, len, out, sizes[i], &n), 0);
        assert_int_equal(n, sizes[i]);
        assert_memory_equal(out, in, n);
        if (sizes[i] > 0) /* no room */
            assert_int_equal(session_blob_open(r2, "zt_login", sealed, len, out, sizes[i] - 1, &n),
                             -1);
        /* bound to its name, and to the ring */
        assert_int_equal(session_blob_open(r2, "zt_other", sealed, len, out, sizeof(out), &n), -1);
        assert_int_equal(session_blob_open(r1, "zt_login", sealed, len, out, sizeof(out), &n), -1);
    }
    /* one size more than the limit is refused */
    assert_int_equal(
        session_blob_seal(r2, "zt_login", in, SESSION_BLOB_MAX + 1, sealed, sizeof(sealed)), -1);
    /* the output buffer: exact fits, one less does not */
    assert_int_equal(session_blob_seal(r2, "zt_login", in, 100, sealed, sizeof(sealed)), 0);
    len = strlen(sealed);
    assert_int_equal(session_blob_seal(r2, "zt_login", in, 100, sealed, len + 1), 0);
    assert_int_equal(session_blob_seal(r2, "zt_login", in, 100, sealed, len), -1);
    assert_int_equal(session_blob_seal(r2, "a b", in, 100, sealed, sizeof(sealed)), -1);
    /* every character, every value: never opens */
    assert_int_equal(session_blob_seal(r2, "zt_login", in, 40, sealed, sizeof(sealed)), 0);
    len = strlen(sealed);
    for (i = 0; i < len; i++) {
        memcpy(t, sealed, len);
        for (c = 0; c < 256; c++) {
            t[i] = (char)c;
            if (t[i] != sealed[i])
                assert_int_equal(session_blob_open(r2, "zt_login", t, len, out, sizeof(out), &n),
                                 -1);
        }
    }
    for (j = 0; j < len; j++)
        assert_int_equal(session_blob_open(r2, "zt_login", sealed, j, out, sizeof(out), &n), -1);
    /* rotation as for cookies */
    assert_int_equal(session_blob_seal(r1, "zt_login", in, 40, sealed, sizeof(sealed)), 0);
    len = strlen(sealed);
    assert_int_equal(session_blob_open(r2, "zt_login", sealed, len, out, sizeof(out), &n), 0);
    assert_int_equal(session_blob_open(r3, "zt_login", sealed, len, out, sizeof(out), &n), -1);
    /* a blob is not a cookie and a cookie is not a blob, even under one name */
    make_session(&s, T0);
    len = seal(r2, &s, cookie);
    assert_int_equal(session_blob_open(r2, NAME, cookie, len, out, sizeof(out), &n), -1);
    memcpy(t, cookie, len);
    memcpy(t, "b1.", 3);
    assert_int_equal(session_blob_open(r2, NAME, t, len, out, sizeof(out), &n), -1);
    assert_int_equal(session_blob_seal(r2, NAME, in, 200, sealed, sizeof(sealed)), 0);
    len = strlen(sealed);
    memcpy(sealed, "v1.", 3);
    assert_int_equal(open_at(r2, sealed, len, T0, thumb_a, &so, NULL), SESSION_BAD_TAG);
    session_keyring_unref(r1);
    session_keyring_unref(r2);
    session_keyring_unref(r3);
}

/* ---- Set-Cookie ------------------------------------------------------ */

static void test_set_cookie(void **state)
{
    char buf[SESSION_SET_COOKIE_MAX], small[40];

    (void)state;
    assert_int_equal(session_set_cookie(buf, sizeof(buf), NAME, "v1.abc-_", 3600), 0);
    assert_string_equal(buf, "__Host-ztsession=v1.abc-_; Path=/; Max-Age=3600; Secure; "
                             "HttpOnly; SameSite=Lax");
    assert_int_equal(session_clear_cookie(buf, sizeof(buf), NAME), 0);
    assert_string_equal(buf,
                        "__Host-ztsession=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Lax");
    assert_int_equal(session_set_cookie(small, sizeof(small), NAME, "v1.abc", 3600), -1);
    assert_int_equal(session_set_cookie(buf, sizeof(buf), NAME, "a;b", 1), -1);
    assert_int_equal(session_set_cookie(buf, sizeof(buf), NAME, "a b", 1), -1);
    assert_int_equal(session_set_cookie(buf, sizeof(buf), NAME, "a\r\nX: y", 1), -1);
    assert_int_equal(session_set_cookie(buf, sizeof(buf), "bad name", "v", 1), -1);
    assert_int_equal(session_set_cookie(buf, sizeof(buf), "a=b", "v", 1), -1);
    assert_int_equal(session_set_cookie(buf, sizeof(buf), NAME, "v", -1), -1);
    assert_int_equal(session_clear_cookie(buf, sizeof(buf), ""), -1);
}

static void test_set_cookie_fits_largest(void **state)
{
    char value[SESSION_COOKIE_MAX], buf[SESSION_SET_COOKIE_MAX], name[SESSION_NAME_MAX + 2];

    (void)state;
    memset(value, 'A', sizeof(value) - 1);
    value[sizeof(value) - 1] = '\0';
    long_str(name, SESSION_NAME_MAX, 'n');
    assert_int_equal(session_set_cookie(buf, sizeof(buf), name, value, INT64_MAX), 0);
    long_str(name, SESSION_NAME_MAX + 1, 'n');
    assert_int_equal(session_set_cookie(buf, sizeof(buf), name, value, 1), -1);
}

/* session_check_times() gives what session_cookie_open() gives for the same
 * cookie, at every second around each boundary (a connection that keeps the
 * opened session relies on it). */
static void test_check_times_matches_open(void **state)
{
    struct session_keyring *ring = ring_from("[" KEY_NEW "}]");
    struct session s, out;
    char cookie[SESSION_COOKIE_MAX];
    size_t len;
    int64_t idle_times[] = {T0 + 1, T0 + IDLE / 2, T0 + IDLE - 1};
    const int64_t times[] = {T0 - 1,           T0,
                             T0 + 1,           T0 + IDLE / 2 - 1,
                             T0 + IDLE / 2,    T0 + IDLE / 2 + 1,
                             T0 + IDLE - 1,    T0 + IDLE,
                             T0 + IDLE + 1,    T0 + LIFETIME,
                             T0 + LIFETIME + 1};

    (void)state;
    make_session(&s, T0);
    len = seal(ring, &s, cookie);
    for (size_t i = 0; i < sizeof(times) / sizeof(times[0]); i++) {
        int r1 = -1, r2 = -1;
        enum session_result a = open_at(ring, cookie, len, times[i], thumb_a, &out, &r1);
        enum session_result b = session_check_times(&s, times[i], &r2);

        assert_int_equal(a, b);
        assert_int_equal(r1, r2);
    }
    assert_int_equal(session_check_times(&s, T0 + IDLE, NULL), SESSION_IDLE_EXPIRED);
    assert_int_equal(session_check_times(&s, T0 + IDLE - 1, NULL), SESSION_OK);
    /* absolute expiry wins, also after touches */
    for (size_t i = 0; i < sizeof(idle_times) / sizeof(idle_times[0]); i++) {
        struct session x = s;
        int r = -1;

        session_touch(&x, idle_times[i], IDLE);
        len = seal(ring, &x, cookie);
        assert_int_equal(
            open_at(ring, cookie, len, idle_times[i] + IDLE / 2 + 1, thumb_a, &out, &r),
            session_check_times(&x, idle_times[i] + IDLE / 2 + 1, NULL));
        assert_int_equal(r, 1);
    }
    s.expires_at = T0 + 10;
    assert_int_equal(session_check_times(&s, T0 + 9, NULL), SESSION_OK);
    assert_int_equal(session_check_times(&s, T0 + 10, NULL), SESSION_EXPIRED);
    session_keyring_unref(ring);
}

/* ---- revocations ----------------------------------------------------- */

static struct session_revocations *rev_open(int64_t now)
{
    struct session_revocations *rs = NULL;
    char err[256] = "";

    if (session_revocations_open(tmpdir, LIFETIME, now, &rs, err, sizeof(err)) == -1)
        fail_msg("open: %s", err);
    return rs;
}

static void rev_reset(void)
{
    char path[128];

    snprintf(path, sizeof(path), "%s/revocations.log", tmpdir);
    unlink(path);
}

static void append_raw(const char *text)
{
    char path[128];
    int fd;

    snprintf(path, sizeof(path), "%s/revocations.log", tmpdir);
    fd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0600);
    assert_true(fd != -1);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

/* Every change a check could see moves the generation; checks do not. */
static void test_revocations_generation(void **state)
{
    struct session_revocations *rs;
    struct session a;
    uint64_t g0, g;

    (void)state;
    rev_reset();
    rs = rev_open(T0);
    make_session(&a, T0);
    g0 = session_revocations_generation(rs);
    assert_int_equal(session_revocations_check(rs, &a), SESSION_OK);
    assert_true(session_revocations_generation(rs) == g0);
    assert_int_equal(session_revoke_id(rs, a.id, T0 + 10), 0);
    g = session_revocations_generation(rs);
    assert_true(g > g0);
    assert_int_equal(session_revoke_id(rs, a.id, T0 + 20), 0); /* raised */
    assert_true(session_revocations_generation(rs) > g);
    g = session_revocations_generation(rs);
    assert_int_equal(session_revoke_user(rs, "bob", T0 + 20), 0);
    assert_true(session_revocations_generation(rs) > g);
    g = session_revocations_generation(rs);
    assert_int_equal(session_revoke_sid(rs, "corp", "sid-1", T0 + 20), 0);
    assert_true(session_revocations_generation(rs) > g);
    g = session_revocations_generation(rs);
    assert_int_equal(session_revoke_provider_user(rs, "corp", "carol", T0 + 20), 0);
    assert_true(session_revocations_generation(rs) > g);
    g = session_revocations_generation(rs);
    assert_int_equal(session_revocations_expire(rs, T0 + 20 + 2 * LIFETIME), 0);
    assert_true(session_revocations_generation(rs) > g);
    session_revocations_free(rs);
}

static void test_revoke_id(void **state)
{
    struct session_revocations *rs;
    struct session a, b;

    (void)state;
    rev_reset();
    rs = rev_open(T0);
    make_session(&a, T0);
    make_session(&b, T0);
    assert_int_equal(session_revocations_check(rs, &a), SESSION_OK);
    assert_int_equal(session_revoke_id(rs, a.id, T0 + 10), 0);
    assert_int_equal(session_revocations_check(rs, &a), SESSION_REVOKED);
    assert_int_equal(session_revocations_check(rs, &b), SESSION_OK);
    assert_int_equal(session_revoke_id(rs, a.id, T0 + 20), 0); /* again: still one */
    assert_int_equal(session_revocations_count(rs), 1);
    session_revocations_free(rs);
    /* a restart forgets nothing */
    rs = rev_open(T0 + 30);
    assert_int_equal(session_revocations_count(rs), 1);
    assert_int_equal(session_revocations_check(rs, &a), SESSION_REVOKED);
    assert_int_equal(session_revocations_check(rs, &b), SESSION_OK);
    session_revocations_free(rs);
}

struct user_case {
    const char *subject;
    int64_t issued; /* offset from the revocation */
    enum session_result expect;
};

static void test_revoke_user(void **state)
{
    static const struct user_case cases[] = {
        {"alice", -100, SESSION_REVOKED},
        {"alice", 0, SESSION_REVOKED}, /* same second: fail closed */
        {"alice", 1, SESSION_OK},      /* logged in again afterwards */
        {"alic", -100, SESSION_OK},
        {"alice2", -100, SESSION_OK},
        {"weird name %41\xc3\xa9", -1, SESSION_REVOKED},
        {"weird name %41\xc3\xa9", 1, SESSION_OK},
        {"weird name A\xc3\xa9", -1, SESSION_OK},
    };
    const int64_t at = T0 + 1000;
    struct session_revocations *rs;
    struct session s;
    size_t i;
    int pass;

    (void)state;
    rev_reset();
    rs = rev_open(T0);
    assert_int_equal(session_revoke_user(rs, "alice", at), 0);
    assert_int_equal(session_revoke_user(rs, "weird name %41\xc3\xa9", at), 0);
    assert_int_equal(session_revoke_user(rs, "", at), -1);
    assert_int_equal(session_revoke_user(rs, "a\nb", at), -1);
    for (pass = 0; pass < 2; pass++) {
        for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
            make_session(&s, at + cases[i].issued);
            snprintf(s.subject, sizeof(s.subject), "%s", cases[i].subject);
            if (session_revocations_check(rs, &s) != cases[i].expect)
                fail_msg("pass %d case %zu: wrong answer", pass, i);
        }
        /* the second pass runs on the store reloaded from disk */
        session_revocations_free(rs);
        rs = rev_open(at + 5);
        assert_int_equal(session_revocations_count(rs), 2);
    }
    /* a later revocation of the same user moves the time forward */
    assert_int_equal(session_revoke_user(rs, "alice", at + 50), 0);
    make_session(&s, at + 10);
    assert_int_equal(session_revocations_check(rs, &s), SESSION_OK); /* subject differs */
    snprintf(s.subject, sizeof(s.subject), "alice");
    assert_int_equal(session_revocations_check(rs, &s), SESSION_REVOKED);
    assert_int_equal(session_revocations_count(rs), 2);
    session_revocations_free(rs);
}

/* Back-channel logout: by provider session (sid) and by subject at one
 * provider, both surviving a reopen of the log. */
static void test_revoke_sid_and_provider_user(void **state)
{
    const int64_t at = T0 + 1000;
    char line[600], longsid[SESSION_SID_MAX + 2];
    struct session_revocations *rs;
    struct session s;
    int pass;

    (void)state;
    rev_reset();
    rs = rev_open(T0);
    assert_int_equal(session_revoke_sid(rs, "corp", "sid 1%\xc3\xa9", at), 0);
    assert_int_equal(session_revoke_provider_user(rs, "partners", "bob", at), 0);
    /* refused: empty, control characters, too long */
    assert_int_equal(session_revoke_sid(rs, "corp", "", at), -1);
    assert_int_equal(session_revoke_sid(rs, "", "x", at), -1);
    assert_int_equal(session_revoke_sid(rs, "corp", "a\nb", at), -1);
    long_str(longsid, SESSION_SID_MAX + 1, 'i');
    assert_int_equal(session_revoke_sid(rs, "corp", longsid, at), -1);
    assert_int_equal(session_revoke_provider_user(rs, "corp", "", at), -1);
    for (pass = 0; pass < 2; pass++) {
        make_session(&s, at - 10); /* corp, 00u1abcdef, no sid */
        assert_int_equal(session_revocations_check(rs, &s), SESSION_OK);
        snprintf(s.sid, sizeof(s.sid), "sid 1%%\xc3\xa9");
        assert_int_equal(session_revocations_check(rs, &s), SESSION_REVOKED);
        snprintf(s.sid, sizeof(s.sid), "sid 2"); /* the user's other provider session */
        assert_int_equal(session_revocations_check(rs, &s), SESSION_OK);
        snprintf(s.sid, sizeof(s.sid), "sid 1%%\xc3\xa9");
        snprintf(s.provider, sizeof(s.provider), "partners"); /* same sid, other provider */
        assert_int_equal(session_revocations_check(rs, &s), SESSION_OK);
        make_session(&s, at + 1); /* logged in again after the logout */
        snprintf(s.sid, sizeof(s.sid), "sid 1%%\xc3\xa9");
        assert_int_equal(session_revocations_check(rs, &s), SESSION_OK);
        /* sub at one provider: bob at partners, not bob at corp */
        make_session(&s, at);
        snprintf(s.subject, sizeof(s.subject), "bob");
        assert_int_equal(session_revocations_check(rs, &s), SESSION_OK);
        snprintf(s.provider, sizeof(s.provider), "partners");
        assert_int_equal(session_revocations_check(rs, &s), SESSION_REVOKED);
        /* a subject named like a key is just a subject */
        snprintf(s.subject, sizeof(s.subject), "partners bob");
        assert_int_equal(session_revocations_check(rs, &s), SESSION_OK);
        session_revocations_free(rs);
        rs = rev_open(at + 5);
        assert_int_equal(session_revocations_count(rs), 2);
    }
    session_revocations_free(rs);
    /* the log lines, and a bad one of each kind */
    {
        FILE *f;
        char path[128];
        int found = 0;

        snprintf(path, sizeof(path), "%s/revocations.log", tmpdir);
        f = fopen(path, "r");
        assert_non_null(f);
        while (fgets(line, sizeof(line), f) != NULL) {
            if (strcmp(line, "puser 1700001000 partners bob\n") == 0 ||
                strcmp(line, "sid 1700001000 corp sid%201%25%c3%a9\n") == 0)
                found++;
        }
        fclose(f);
        assert_int_equal(found, 2);
    }
    {
        static const char *const bad[] = {
            "sid 1700001000 corp\n", "sid 1700001000  x\n",         "sid x corp s\n",
            "puser 1700001000 p \n", "sid 1700001000 corp a%0ab\n", "puser 1700001000 p%zz x\n",
        };
        size_t i;
        char err[256];

        for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            rev_reset();
            append_raw(bad[i]);
            rs = NULL;
            assert_int_equal(session_revocations_open(tmpdir, LIFETIME, T0, &rs, err, sizeof(err)),
                             -1);
            assert_non_null(strstr(err, ":1: "));
        }
        rev_reset();
    }
}

static void test_revocations_truncated_line(void **state)
{
    struct session_revocations *rs;
    struct session a, b;

    (void)state;
    rev_reset();
    rs = rev_open(T0);
    make_session(&a, T0);
    make_session(&b, T0);
    assert_int_equal(session_revoke_id(rs, a.id, T0), 0);
    session_revocations_free(rs);
    append_raw("id 1700000000 0011223344"); /* crash mid-append */
    rs = rev_open(T0);
    assert_int_equal(session_revocations_count(rs), 1);
    assert_int_equal(session_revocations_check(rs, &a), SESSION_REVOKED);
    /* the next append starts on its own line */
    assert_int_equal(session_revoke_id(rs, b.id, T0), 0);
    session_revocations_free(rs);
    rs = rev_open(T0);
    assert_int_equal(session_revocations_count(rs), 2);
    assert_int_equal(session_revocations_check(rs, &b), SESSION_REVOKED);
    session_revocations_free(rs);
}

struct badlog_case {
    const char *text;
    const char *expect;
};

static void test_revocations_bad_log(void **state)
{
    static const struct badlog_case cases[] = {
        {"id 1700000000 00112233445566778899aabbccddeeff\nbogus\n", "revocations.log:2:"},
        {"id 1700000000 00112233445566778899aabbccddeef\n", "revocations.log:1: expected \"id"},
        {"id 1700000000 00112233445566778899aabbccddeeff0\n", "revocations.log:1:"},
        {"id -5 00112233445566778899aabbccddeeff\n", "revocations.log:1:"},
        {"user 1700000000 \n", "revocations.log:1: empty subject"},
        {"user 1700000000 a%0ab\n", "revocations.log:1: empty subject or control"},
        {"user 1700000000 a%zz\n", "revocations.log:1: bad %-escape"},
        {"user 99999999999999999999 a\n", "revocations.log:1:"},
    };
    struct session_revocations *rs;
    char err[256];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        rev_reset();
        append_raw(cases[i].text);
        rs = NULL;
        err[0] = '\0';
        assert_int_equal(session_revocations_open(tmpdir, LIFETIME, T0, &rs, err, sizeof(err)), -1);
        assert_null(rs);
        if (strstr(err, cases[i].expect) == NULL)
            fail_msg("case %zu: \"%s\" does not contain \"%s\"", i, err, cases[i].expect);
    }
    rev_reset();
    assert_int_equal(
        session_revocations_open("/nonexistent/dir", LIFETIME, T0, &rs, err, sizeof(err)), -1);
}

static void test_revocations_expire(void **state)
{
    struct session_revocations *rs;
    struct session a;

    (void)state;
    rev_reset();
    rs = rev_open(T0);
    make_session(&a, T0);
    assert_int_equal(session_revoke_id(rs, a.id, T0), 0);
    assert_int_equal(session_revoke_user(rs, "bob", T0 + 100), 0);
    /* both sides of the lifetime boundary */
    assert_int_equal(session_revocations_expire(rs, T0 + LIFETIME - 1), 0);
    assert_int_equal(session_revocations_count(rs), 2);
    assert_int_equal(session_revocations_expire(rs, T0 + LIFETIME), 0);
    assert_int_equal(session_revocations_count(rs), 1);
    assert_int_equal(session_revocations_check(rs, &a), SESSION_OK);
    session_revocations_free(rs);
    /* the rewrite persisted; reopening later drops the rest */
    rs = rev_open(T0 + LIFETIME);
    assert_int_equal(session_revocations_count(rs), 1);
    session_revocations_free(rs);
    rs = rev_open(T0 + 100 + LIFETIME);
    assert_int_equal(session_revocations_count(rs), 0);
    session_revocations_free(rs);
    session_revocations_free(NULL);
}

/* Many entries: tables grow, every entry stays findable. */
static void test_revocations_many(void **state)
{
    struct session_revocations *rs;
    struct session s;
    char sub[32];
    int i;

    (void)state;
    rev_reset();
    rs = rev_open(T0);
    make_session(&s, T0);
    for (i = 0; i < 300; i++) {
        s.id[0] = (uint8_t)i;
        s.id[1] = (uint8_t)(i >> 8);
        assert_int_equal(session_revoke_id(rs, s.id, T0), 0);
        snprintf(sub, sizeof(sub), "user%d", i);
        assert_int_equal(session_revoke_user(rs, sub, T0), 0);
    }
    assert_int_equal(session_revocations_count(rs), 600);
    session_revocations_free(rs);
    rs = rev_open(T0);
    assert_int_equal(session_revocations_count(rs), 600);
    for (i = 0; i < 300; i++) {
        s.id[0] = (uint8_t)i;
        s.id[1] = (uint8_t)(i >> 8);
        snprintf(s.subject, sizeof(s.subject), "nobody");
        assert_int_equal(session_revocations_check(rs, &s), SESSION_REVOKED);
        s.id[2] ^= 1;
        assert_int_equal(session_revocations_check(rs, &s), SESSION_OK);
        s.id[2] ^= 1;
        snprintf(s.subject, sizeof(s.subject), "user%d", i);
        s.id[3] ^= 1;
        assert_int_equal(session_revocations_check(rs, &s), SESSION_REVOKED);
        s.id[3] ^= 1;
    }
    session_revocations_free(rs);
}

/* Readers on worker threads while the main thread writes (run under TSan). */
struct reader_arg {
    struct session_revocations *rs;
    atomic_int *stop;
    int errors;
};

static void *reader(void *p)
{
    struct reader_arg *a = p;
    struct session s;

    make_session(&s, T0);
    s.id[15] = 0xee; /* never revoked */
    while (!atomic_load(a->stop))
        if (session_revocations_check(a->rs, &s) != SESSION_OK)
            a->errors++;
    return NULL;
}

static void test_revocations_threads(void **state)
{
    struct session_revocations *rs;
    struct reader_arg args[2];
    pthread_t th[2];
    atomic_int stop;
    uint8_t id[SESSION_ID_LEN] = {0};
    char sub[32];
    int i;

    (void)state;
    rev_reset();
    rs = rev_open(T0);
    atomic_init(&stop, 0);
    for (i = 0; i < 2; i++) {
        args[i] = (struct reader_arg){.rs = rs, .stop = &stop, .errors = 0};
        assert_int_equal(pthread_create(&th[i], NULL, reader, &args[i]), 0);
    }
    for (i = 0; i < 200; i++) {
        id[0] = (uint8_t)i;
        assert_int_equal(session_revoke_id(rs, id, T0), 0);
        snprintf(sub, sizeof(sub), "u%d", i);
        assert_int_equal(session_revoke_user(rs, sub, T0), 0);
        if (i % 50 == 0)
            assert_int_equal(session_revocations_expire(rs, T0), 0);
    }
    atomic_store(&stop, 1);
    for (i = 0; i < 2; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].errors, 0);
    }
    assert_int_equal(session_revocations_count(rs), 400);
    session_revocations_free(rs);
}

/* Opening from several threads at once (thread-local cipher contexts). */
static void *opener(void *p)
{
    const struct session_keyring *ring = p;
    struct session s, out;
    char cookie[SESSION_COOKIE_MAX];
    size_t len = 0;
    int i;
    intptr_t bad = 0;

    make_session(&s, T0);
    if (session_cookie_seal(ring, NAME, &s, cookie, sizeof(cookie), &len) != 0)
        return (void *)1;
    for (i = 0; i < 2000; i++)
        if (open_at(ring, cookie, len, T0, thumb_a, &out, NULL) != SESSION_OK)
            bad++;
    return (void *)bad;
}

static void test_open_threads(void **state)
{
    struct session_keyring *ring = ring_from("[" KEY_OLD "}," KEY_NEW "}]");
    pthread_t th[4];
    void *ret;
    int i;

    (void)state;
    for (i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&th[i], NULL, opener, ring), 0);
    for (i = 0; i < 4; i++) {
        pthread_join(th[i], &ret);
        assert_null(ret);
    }
    session_keyring_unref(ring);
}

static void test_result_str(void **state)
{
    (void)state;
    assert_string_equal(session_result_str(SESSION_OK), "ok");
    assert_string_equal(session_result_str(SESSION_MALFORMED), "malformed");
    assert_string_equal(session_result_str(SESSION_UNKNOWN_KEY), "unknown_key");
    assert_string_equal(session_result_str(SESSION_BAD_TAG), "bad_tag");
    assert_string_equal(session_result_str(SESSION_WRONG_DEVICE), "wrong_device");
    assert_string_equal(session_result_str(SESSION_EXPIRED), "expired");
    assert_string_equal(session_result_str(SESSION_IDLE_EXPIRED), "idle_expired");
    assert_string_equal(session_result_str(SESSION_REVOKED), "revoked");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_name_is_bound),
        cmocka_unit_test(test_tamper_every_char),
        cmocka_unit_test(test_tamper_every_bit),
        cmocka_unit_test(test_truncate_and_extend),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_wire_format),
        cmocka_unit_test(test_oversize),
        cmocka_unit_test(test_wrong_device),
        cmocka_unit_test(test_expiry_boundaries),
        cmocka_unit_test(test_rolling_idle),
        cmocka_unit_test(test_rotation),
        cmocka_unit_test(test_keyring_errors),
        cmocka_unit_test(test_keyfile_permissions),
        cmocka_unit_test(test_keyring_generate),
        cmocka_unit_test(test_blob),
        cmocka_unit_test(test_set_cookie),
        cmocka_unit_test(test_set_cookie_fits_largest),
        cmocka_unit_test(test_check_times_matches_open),
        cmocka_unit_test(test_revocations_generation),
        cmocka_unit_test(test_revoke_id),
        cmocka_unit_test(test_revoke_user),
        cmocka_unit_test(test_revoke_sid_and_provider_user),
        cmocka_unit_test(test_revocations_truncated_line),
        cmocka_unit_test(test_revocations_bad_log),
        cmocka_unit_test(test_revocations_expire),
        cmocka_unit_test(test_revocations_many),
        cmocka_unit_test(test_revocations_threads),
        cmocka_unit_test(test_open_threads),
        cmocka_unit_test(test_result_str),
    };

    return cmocka_run_group_tests(tests, setup_tmpdir, teardown_tmpdir);
}
