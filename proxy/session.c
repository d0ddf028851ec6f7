/*
 * session.c - sealed session cookies, the key ring and the revocation store.
 *
 * Cookie value: "v1." base64url-nopad( kid[4] | nonce[12] | ciphertext | tag[16] )
 * AES-256-GCM through EVP, AAD = kid | "ztproxy-session-v1" | cookie name.
 * Blobs (short-lived login state) are sealed the same way as "b1." with the
 * AAD label "ztproxy-blob-v1".
 * The plaintext is a fixed-order binary record (see plain_encode()); the
 * provider's session id is an optional trailing string, absent when empty,
 * so cookies sealed before it existed still open unchanged. Opening
 * a cookie is one base64 decode, one AEAD open and a bounds-checked walk,
 * with no allocation and no lock (docs/sessions.md).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "fileio.h"
#include "log.h"
#include "session.h"

#define KID_LEN 4
#define NONCE_LEN 12
#define TAG_LEN 16
#define KEY_LEN 32
#define KEY_ID_MAX 64
#define KEYFILE_MAX (64 * 1024)

#define AAD_CONTEXT "ztproxy-session-v1"
#define AAD_CONTEXT_LEN (sizeof(AAD_CONTEXT) - 1)
#define COOKIE_PREFIX "v1."
#define COOKIE_PREFIX_LEN 3
#define BLOB_PREFIX "b1." /* same length as COOKIE_PREFIX */
#define BLOB_CONTEXT "ztproxy-blob-v1"
#define BLOB_CONTEXT_LEN (sizeof(BLOB_CONTEXT) - 1)

/* Plaintext: id | thumbprint | 5 times | provider | subject | email | acr |
 * namr | amr... [ | sid ]; strings are a length byte and the bytes; sid is
 * present only when non-empty. */
#define PLAIN_FIXED (SESSION_ID_LEN + SESSION_THUMBPRINT_LEN + 5 * 8)
#define PLAIN_MAX                                                                                  \
    (PLAIN_FIXED + 1 + SESSION_PROVIDER_MAX + 1 + SESSION_SUBJECT_MAX + 1 + SESSION_EMAIL_MAX +    \
     1 + SESSION_ACR_MAX + 1 + SESSION_AMR_MAX * (1 + SESSION_AMR_ITEM_MAX) + 1 + SESSION_SID_MAX)
#define PLAIN_MIN (PLAIN_FIXED + 1 + 1 + 1 + 1 + 1 + 1 + 1) /* provider and subject non-empty */
#define RAW_MAX (KID_LEN + NONCE_LEN + PLAIN_MAX + TAG_LEN)
#define RAW_MIN (KID_LEN + NONCE_LEN + PLAIN_MIN + TAG_LEN)
#define B64_LEN(n) (((n) / 3) * 4 + ((n) % 3 == 0 ? 0 : (n) % 3 + 1))

_Static_assert(COOKIE_PREFIX_LEN + B64_LEN(RAW_MAX) + 1 == SESSION_COOKIE_MAX,
               "SESSION_COOKIE_MAX must be the longest sealed cookie");
_Static_assert(COOKIE_PREFIX_LEN + B64_LEN(KID_LEN + NONCE_LEN + SESSION_BLOB_MAX + TAG_LEN) + 1 ==
                   SESSION_BLOB_SEALED_MAX,
               "SESSION_BLOB_SEALED_MAX must be the longest sealed blob");
_Static_assert(SESSION_SUBJECT_MAX <= 255 && SESSION_EMAIL_MAX <= 255 &&
                   SESSION_PROVIDER_MAX <= 255 && SESSION_ACR_MAX <= 255 &&
                   SESSION_AMR_ITEM_MAX <= 255 && SESSION_AMR_MAX <= 255 && SESSION_SID_MAX <= 255,
               "lengths are one byte on the wire");

/* Chrome caps cookie lifetimes at 400 days; so do we, which also keeps every
 * now + lifetime far from overflowing. */
#define LIFETIME_MAX (400LL * 86400)
#define TIME_MAX (1LL << 40) /* year ~36800: a sanity bound on every time field */

/* ---- small helpers --------------------------------------------------- */

const char *session_result_str(enum session_result r)
{
    switch (r) {
    case SESSION_OK:
        return "ok";
    case SESSION_MALFORMED:
        return "malformed";
    case SESSION_UNKNOWN_KEY:
        return "unknown_key";
    case SESSION_BAD_TAG:
        return "bad_tag";
    case SESSION_WRONG_DEVICE:
        return "wrong_device";
    case SESSION_EXPIRED:
        return "expired";
    case SESSION_IDLE_EXPIRED:
        return "idle_expired";
    case SESSION_REVOKED:
        return "revoked";
    }
    return "unknown";
}

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* A session string: at most max bytes, no control characters (they would
 * end up in headers and logs). Non-ASCII bytes pass: UTF-8 is the IdP's. */
static int str_ok(const char *s, size_t len, size_t max, int may_be_empty)
{
    size_t i;

    if (len > max || (len == 0 && !may_be_empty))
        return 0;
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            return 0;
    }
    return 1;
}

/* Length of the NUL-terminated string in a fixed array, or size if the
 * array holds no NUL (which no valid session has). */
static size_t field_len(const char *s, size_t size)
{
    return strnlen(s, size);
}

static int copy_field(char *dst, size_t size, const char *src, int may_be_empty)
{
    size_t len = src != NULL ? strlen(src) : 0;

    if (!str_ok(src != NULL ? src : "", len, size - 1, may_be_empty))
        return -1;
    if (len > 0)
        memcpy(dst, src, len);
    dst[len] = '\0';
    return 0;
}

/* ---- base64 ---------------------------------------------------------- */

static const char b64url_alpha[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
static const char b64std_alpha[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Decoding tables, built once: the 6-bit value, or 0xff for "not in the
 * alphabet". */
static uint8_t b64url_dec[256], b64std_dec[256];
static pthread_once_t b64_once = PTHREAD_ONCE_INIT;

static void b64_tables(void)
{
    int i;

    memset(b64url_dec, 0xff, sizeof(b64url_dec));
    memset(b64std_dec, 0xff, sizeof(b64std_dec));
    for (i = 0; i < 64; i++) {
        b64url_dec[(unsigned char)b64url_alpha[i]] = (uint8_t)i;
        b64std_dec[(unsigned char)b64std_alpha[i]] = (uint8_t)i;
    }
}

/* Encode without padding; out must hold B64_LEN(n) bytes. */
static size_t b64_encode(const uint8_t *in, size_t n, char *out, const char *alpha)
{
    size_t i, o = 0;

    for (i = 0; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = alpha[v >> 18];
        out[o++] = alpha[(v >> 12) & 63];
        out[o++] = alpha[(v >> 6) & 63];
        out[o++] = alpha[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = alpha[v >> 18];
        out[o++] = alpha[(v >> 12) & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = alpha[v >> 18];
        out[o++] = alpha[(v >> 12) & 63];
        out[o++] = alpha[(v >> 6) & 63];
    }
    return o;
}

/*
 * Strict decode of unpadded base64: every character in the alphabet, no
 * impossible length, and the unused low bits of the last character zero,
 * so each byte string has exactly one accepted encoding (flipping any
 * character changes the bytes). -1 or the decoded length (<= outmax).
 */
static long b64_decode(const char *in, size_t n, uint8_t *restrict out, size_t outmax, int url)
{
    const uint8_t *restrict t;
    const unsigned char *restrict p = (const unsigned char *)in;
    size_t i, o = 0, full = n / 4 * 4;
    unsigned bad = 0; /* any 0xff from the table: a character outside the alphabet */
    uint32_t v;

    if (n % 4 == 1 || n / 4 * 3 + (n % 4 == 0 ? 0 : n % 4 - 1) > outmax)
        return -1;
    pthread_once(&b64_once, b64_tables);
    t = url ? b64url_dec : b64std_dec;
    /* The hot loop checks validity once at the end, not per character. */
    for (i = 0; i < full; i += 4) {
        unsigned a = t[p[i]], b = t[p[i + 1]], c = t[p[i + 2]], d = t[p[i + 3]];
        bad |= a | b | c | d;
        v = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6 | d;
        out[o] = (uint8_t)(v >> 16);
        out[o + 1] = (uint8_t)(v >> 8);
        out[o + 2] = (uint8_t)v;
        o += 3;
    }
    if (n - full >= 2) {
        unsigned a = t[p[i]], b = t[p[i + 1]], c = n - full == 3 ? t[p[i + 2]] : 0;
        bad |= a | b | c;
        /* canonical: the unused low bits of the last character are zero */
        if (n - full == 2 ? (b & 15) != 0 : (c & 3) != 0)
            return -1;
        v = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6;
        out[o++] = (uint8_t)(v >> 16);
        if (n - full == 3)
            out[o++] = (uint8_t)(v >> 8);
    }
    if (bad & 0x80)
        return -1;
    return (long)o;
}

/* Standard base64 with the usual '=' padding (what `openssl rand -base64`
 * prints), strict. */
static long b64std_decode_padded(const char *in, size_t n, uint8_t *out, size_t outmax)
{
    if (n % 4 != 0)
        return -1;
    if (n >= 1 && in[n - 1] == '=')
        n--;
    if (n >= 1 && in[n - 1] == '=')
        n--;
    return b64_decode(in, n, out, outmax, 0);
}

/* ---- session fields -------------------------------------------------- */

static int session_times_valid(const struct session *s);

static int session_valid(const struct session *s)
{
    size_t i;

    if (!str_ok(s->provider, field_len(s->provider, sizeof(s->provider)), SESSION_PROVIDER_MAX,
                0) ||
        !str_ok(s->subject, field_len(s->subject, sizeof(s->subject)), SESSION_SUBJECT_MAX, 0) ||
        !str_ok(s->email, field_len(s->email, sizeof(s->email)), SESSION_EMAIL_MAX, 1) ||
        !str_ok(s->acr, field_len(s->acr, sizeof(s->acr)), SESSION_ACR_MAX, 1) ||
        !str_ok(s->sid, field_len(s->sid, sizeof(s->sid)), SESSION_SID_MAX, 1))
        return 0;
    if (s->namr > SESSION_AMR_MAX)
        return 0;
    for (i = 0; i < s->namr; i++)
        if (!str_ok(s->amr[i], field_len(s->amr[i], sizeof(s->amr[i])), SESSION_AMR_ITEM_MAX, 0))
            return 0;
    return session_times_valid(s);
}

static int session_times_valid(const struct session *s)
{
    if (s->auth_time < 0 || s->auth_time > TIME_MAX || s->issued_at < 0 ||
        s->issued_at > TIME_MAX || s->expires_at <= s->issued_at || s->expires_at > TIME_MAX ||
        s->seen_at < s->issued_at || s->idle_expires_at <= s->seen_at ||
        s->idle_expires_at > TIME_MAX)
        return 0;
    return 1;
}

int session_init(struct session *s, const struct session_login *in, int64_t now, int64_t lifetime,
                 int64_t idle_timeout)
{
    size_t i;

    memset(s, 0, sizeof(*s));
    if (in->thumbprint == NULL || in->namr > SESSION_AMR_MAX || (in->namr > 0 && in->amr == NULL) ||
        now < 0 || now > TIME_MAX || lifetime <= 0 || lifetime > LIFETIME_MAX ||
        idle_timeout <= 0 || idle_timeout > LIFETIME_MAX || in->auth_time < 0 ||
        in->auth_time > TIME_MAX)
        goto err;
    if (copy_field(s->provider, sizeof(s->provider), in->provider, 0) == -1 ||
        copy_field(s->subject, sizeof(s->subject), in->subject, 0) == -1 ||
        copy_field(s->email, sizeof(s->email), in->email, 1) == -1 ||
        copy_field(s->acr, sizeof(s->acr), in->acr, 1) == -1 ||
        copy_field(s->sid, sizeof(s->sid), in->sid, 1) == -1)
        goto err;
    for (i = 0; i < in->namr; i++)
        if (in->amr[i] == NULL || copy_field(s->amr[i], sizeof(s->amr[i]), in->amr[i], 0) == -1)
            goto err;
    s->namr = in->namr;
    if (RAND_bytes(s->id, sizeof(s->id)) != 1) {
        log_ssl_errors("session: RAND_bytes");
        goto err;
    }
    memcpy(s->thumbprint, in->thumbprint, SESSION_THUMBPRINT_LEN);
    s->auth_time = in->auth_time;
    s->issued_at = now;
    s->seen_at = now;
    s->expires_at = now + lifetime;
    s->idle_expires_at = now + idle_timeout;
    return 0;
err:
    memset(s, 0, sizeof(*s));
    return -1;
}

void session_touch(struct session *s, int64_t now, int64_t idle_timeout)
{
    if (idle_timeout <= 0 || idle_timeout > LIFETIME_MAX || now < s->seen_at || now > TIME_MAX)
        return; /* seal refuses nothing new: the old times stay valid */
    s->seen_at = now;
    s->idle_expires_at = now + idle_timeout;
}

static void put64(uint8_t *p, int64_t v)
{
    uint64_t u = (uint64_t)v;
    int i;

    for (i = 7; i >= 0; i--) {
        p[i] = (uint8_t)u;
        u >>= 8;
    }
}

static int64_t get64(const uint8_t *p)
{
    uint64_t u = 0;
    int i;

    for (i = 0; i < 8; i++)
        u = u << 8 | p[i];
    return (int64_t)u;
}

static size_t put_str(uint8_t *p, const char *s, size_t size)
{
    size_t len = field_len(s, size);

    p[0] = (uint8_t)len;
    memcpy(p + 1, s, len);
    return 1 + len;
}

/* s must be session_valid(); out holds PLAIN_MAX bytes. */
static size_t plain_encode(const struct session *s, uint8_t *out)
{
    size_t o = 0, i;

    memcpy(out + o, s->id, SESSION_ID_LEN);
    o += SESSION_ID_LEN;
    memcpy(out + o, s->thumbprint, SESSION_THUMBPRINT_LEN);
    o += SESSION_THUMBPRINT_LEN;
    put64(out + o, s->auth_time);
    put64(out + o + 8, s->issued_at);
    put64(out + o + 16, s->expires_at);
    put64(out + o + 24, s->seen_at);
    put64(out + o + 32, s->idle_expires_at);
    o += 40;
    o += put_str(out + o, s->provider, sizeof(s->provider));
    o += put_str(out + o, s->subject, sizeof(s->subject));
    o += put_str(out + o, s->email, sizeof(s->email));
    o += put_str(out + o, s->acr, sizeof(s->acr));
    out[o++] = (uint8_t)s->namr;
    for (i = 0; i < s->namr; i++)
        o += put_str(out + o, s->amr[i], sizeof(s->amr[i]));
    if (s->sid[0] != '\0')
        o += put_str(out + o, s->sid, sizeof(s->sid));
    return o;
}

static int get_str(const uint8_t *p, size_t n, size_t *off, char *dst, size_t size)
{
    size_t len;

    if (*off >= n)
        return -1;
    len = p[*off];
    if (len > size - 1 || n - *off - 1 < len || !str_ok((const char *)p + *off + 1, len, len, 1))
        return -1;
    memcpy(dst, p + *off + 1, len);
    dst[len] = '\0';
    *off += 1 + len;
    return 0;
}

/* Decode and validate; 0 ok, -1 malformed. */
static int plain_decode(const uint8_t *p, size_t n, struct session *s)
{
    size_t off = PLAIN_FIXED, i;

    if (n < PLAIN_MIN || n > PLAIN_MAX)
        return -1;
    memcpy(s->id, p, SESSION_ID_LEN);
    memcpy(s->thumbprint, p + SESSION_ID_LEN, SESSION_THUMBPRINT_LEN);
    p += SESSION_ID_LEN + SESSION_THUMBPRINT_LEN;
    s->auth_time = get64(p);
    s->issued_at = get64(p + 8);
    s->expires_at = get64(p + 16);
    s->seen_at = get64(p + 24);
    s->idle_expires_at = get64(p + 32);
    p -= SESSION_ID_LEN + SESSION_THUMBPRINT_LEN;
    if (get_str(p, n, &off, s->provider, sizeof(s->provider)) == -1 ||
        get_str(p, n, &off, s->subject, sizeof(s->subject)) == -1 ||
        get_str(p, n, &off, s->email, sizeof(s->email)) == -1 ||
        get_str(p, n, &off, s->acr, sizeof(s->acr)) == -1 || off >= n)
        return -1;
    s->namr = p[off++];
    if (s->namr > SESSION_AMR_MAX)
        return -1;
    for (i = 0; i < s->namr; i++)
        if (get_str(p, n, &off, s->amr[i], sizeof(s->amr[i])) == -1)
            return -1;
    /* The optional sid: present means non-empty (one encoding per session). */
    if (off < n && (get_str(p, n, &off, s->sid, sizeof(s->sid)) == -1 || s->sid[0] == '\0'))
        return -1;
    /* get_str() checked every string's bytes; the non-empty ones: */
    if (off != n || s->provider[0] == '\0' || s->subject[0] == '\0' || !session_times_valid(s))
        return -1;
    for (i = 0; i < s->namr; i++)
        if (s->amr[i][0] == '\0')
            return -1;
    return 0;
}

/* ---- key ring -------------------------------------------------------- */

struct session_key {
    char id[KEY_ID_MAX + 1]; /* as in the file */
    uint8_t kid[KID_LEN];    /* on the wire: SHA-256("ztproxy-session-kid" | key)[0..4] */
    uint8_t key[KEY_LEN];
    int64_t created;
    int retired;
};

struct session_keyring {
    atomic_int refs;
    EVP_CIPHER *cipher; /* fetched once: no implicit fetch per cookie */
    size_t current;     /* index of the sealing key */
    size_t nkeys;
    struct session_key keys[SESSION_KEYRING_MAX];
};

static void keyring_free(struct session_keyring *ring)
{
    EVP_CIPHER_free(ring->cipher);
    OPENSSL_cleanse(ring->keys, sizeof(ring->keys));
    free(ring);
}

struct session_keyring *session_keyring_ref(struct session_keyring *ring)
{
    atomic_fetch_add_explicit(&ring->refs, 1, memory_order_relaxed);
    return ring;
}

void session_keyring_unref(struct session_keyring *ring)
{
    if (ring == NULL)
        return;
    if (atomic_fetch_sub_explicit(&ring->refs, 1, memory_order_acq_rel) == 1)
        keyring_free(ring);
}

const char *session_keyring_current(const struct session_keyring *ring)
{
    return ring->keys[ring->current].id;
}

static int key_id_ok(const char *s, size_t len)
{
    size_t i;

    if (len == 0 || len > KEY_ID_MAX)
        return 0;
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.'))
            return 0;
    }
    return 1;
}

static int derive_kid(const uint8_t key[KEY_LEN], uint8_t kid[KID_LEN])
{
    static const char label[] = "ztproxy-session-kid";
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ret = -1;

    if (ctx == NULL)
        goto out;
    if (EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1 ||
        EVP_DigestUpdate(ctx, label, sizeof(label) - 1) != 1 ||
        EVP_DigestUpdate(ctx, key, KEY_LEN) != 1 || EVP_DigestFinal_ex(ctx, md, &mdlen) != 1)
        goto out;
    memcpy(kid, md, KID_LEN);
    ret = 0;
out:
    if (ret == -1)
        log_ssl_errors("session: SHA-256");
    EVP_MD_CTX_free(ctx);
    OPENSSL_cleanse(md, sizeof(md));
    return ret;
}

/* Wipe a JSON string we own in place before it is freed: it held a key. */
static void json_wipe_string(json_t *v)
{
    if (json_is_string(v))
        OPENSSL_cleanse((char *)json_string_value(v), json_string_length(v));
}

static int keyring_entry(json_t *e, size_t i, const char *name, struct session_key *k, char *err,
                         size_t errlen)
{
    static const char *const allowed[] = {"id", "key", "created", "retired", NULL};
    const char *key;
    json_t *v, *jid, *jkey, *jcreated, *jretired;
    uint8_t buf[KEY_LEN + 3];
    long n;
    size_t j;
    int ret = -1;

    if (!json_is_object(e)) {
        set_err(err, errlen, "%s: [%zu]: expected an object", name, i);
        return -1;
    }
    json_object_foreach(e, key, v)
    {
        for (j = 0; allowed[j] != NULL; j++)
            if (strcmp(key, allowed[j]) == 0)
                break;
        if (allowed[j] == NULL) {
            set_err(err, errlen, "%s: [%zu].%s: unknown key", name, i, key);
            return -1;
        }
    }
    jid = json_object_get(e, "id");
    jkey = json_object_get(e, "key");
    jcreated = json_object_get(e, "created");
    jretired = json_object_get(e, "retired");
    if (!json_is_string(jid) || !key_id_ok(json_string_value(jid), json_string_length(jid))) {
        set_err(err, errlen, "%s: [%zu].id: expected 1..%d characters of A-Z a-z 0-9 . _ -", name,
                i, KEY_ID_MAX);
        goto out;
    }
    memcpy(k->id, json_string_value(jid), json_string_length(jid) + 1);
    if (!json_is_string(jkey)) {
        set_err(err, errlen, "%s: [%zu].key: expected a base64 string of %d bytes", name, i,
                KEY_LEN);
        goto out;
    }
    n = b64std_decode_padded(json_string_value(jkey), json_string_length(jkey), buf, sizeof(buf));
    if (n != KEY_LEN) {
        set_err(err, errlen,
                "%s: [%zu].key: expected standard base64 of exactly %d bytes "
                "(openssl rand -base64 %d)",
                name, i, KEY_LEN, KEY_LEN);
        goto out;
    }
    memcpy(k->key, buf, KEY_LEN);
    if (!json_is_integer(jcreated) || json_integer_value(jcreated) < 0 ||
        json_integer_value(jcreated) > TIME_MAX) {
        set_err(err, errlen, "%s: [%zu].created: expected Unix seconds (an integer >= 0)", name, i);
        goto out;
    }
    k->created = json_integer_value(jcreated);
    if (jretired != NULL && !json_is_boolean(jretired)) {
        set_err(err, errlen, "%s: [%zu].retired: expected true or false", name, i);
        goto out;
    }
    k->retired = json_is_true(jretired);
    if (derive_kid(k->key, k->kid) == -1) {
        set_err(err, errlen, "%s: [%zu]: cannot derive the key id", name, i);
        goto out;
    }
    ret = 0;
out:
    OPENSSL_cleanse(buf, sizeof(buf));
    return ret;
}

int session_keyring_parse(const char *text, size_t len, const char *name,
                          struct session_keyring **out, char *err, size_t errlen)
{
    struct session_keyring *ring = NULL;
    json_error_t jerr;
    json_t *root = NULL, *e;
    size_t i, j;
    int have = 0, ret = -1;

    root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        set_err(err, errlen, "%s:%d: %s", name, jerr.line, jerr.text);
        goto out;
    }
    if (!json_is_array(root) || json_array_size(root) == 0 ||
        json_array_size(root) > SESSION_KEYRING_MAX) {
        set_err(err, errlen, "%s: expected an array of 1..%d keys", name, SESSION_KEYRING_MAX);
        goto out;
    }
    ring = calloc(1, sizeof(*ring));
    if (ring == NULL) {
        set_err(err, errlen, "%s: out of memory", name);
        goto out;
    }
    for (i = 0; i < json_array_size(root); i++) {
        struct session_key *k = &ring->keys[i];

        e = json_array_get(root, i);

        if (keyring_entry(e, i, name, k, err, errlen) == -1)
            goto out;
        ring->nkeys = i + 1;
        for (j = 0; j < i; j++) {
            if (strcmp(ring->keys[j].id, k->id) == 0) {
                set_err(err, errlen, "%s: [%zu].id: \"%s\" is used twice", name, i, k->id);
                goto out;
            }
            if (memcmp(ring->keys[j].kid, k->kid, KID_LEN) == 0) {
                set_err(err, errlen, "%s: [%zu].key: same key as \"%s\"", name, i,
                        ring->keys[j].id);
                goto out;
            }
        }
        /* The newest active key seals; on a tie the later entry wins. */
        if (!k->retired && (!have || k->created >= ring->keys[ring->current].created)) {
            ring->current = i;
            have = 1;
        }
    }
    if (!have) {
        set_err(err, errlen, "%s: no active key: at least one must have \"retired\": false", name);
        goto out;
    }
    ring->cipher = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
    if (ring->cipher == NULL) {
        log_ssl_errors("session: AES-256-GCM");
        set_err(err, errlen, "%s: AES-256-GCM is not available", name);
        goto out;
    }
    atomic_init(&ring->refs, 1);
    *out = ring;
    ring = NULL;
    ret = 0;
out:
    if (root != NULL) {
        for (i = 0; i < json_array_size(root); i++)
            json_wipe_string(json_object_get(json_array_get(root, i), "key"));
        json_decref(root);
    }
    if (ring != NULL)
        keyring_free(ring);
    return ret;
}

int session_keyring_load(const char *file, struct session_keyring **out, char *err, size_t errlen)
{
    struct stat st;
    char *text = NULL;
    size_t n = 0;
    ssize_t r;
    int fd, ret = -1;

    fd = open(file, O_RDONLY | O_CLOEXEC); /* symlinks ok: mounted secrets use them */
    if (fd == -1) {
        set_err(err, errlen, "%s: %s", file, strerror(errno));
        return -1;
    }
    if (fstat(fd, &st) == -1) {
        set_err(err, errlen, "%s: %s", file, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        set_err(err, errlen, "%s: not a regular file", file);
        goto out;
    }
    if (st.st_mode & 077) {
        set_err(err, errlen,
                "%s: holds session keys and must not be accessible by group or others "
                "(mode %03o; chmod 600)",
                file, (unsigned)(st.st_mode & 0777));
        goto out;
    }
    if (st.st_size > KEYFILE_MAX) {
        set_err(err, errlen, "%s: larger than %d bytes", file, KEYFILE_MAX);
        goto out;
    }
    text = malloc(KEYFILE_MAX + 1);
    if (text == NULL) {
        set_err(err, errlen, "%s: out of memory", file);
        goto out;
    }
    for (;;) {
        r = read(fd, text + n, KEYFILE_MAX + 1 - n);
        if (r == -1 && errno == EINTR)
            continue;
        if (r == -1) {
            set_err(err, errlen, "%s: %s", file, strerror(errno));
            goto out;
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n > KEYFILE_MAX) {
            set_err(err, errlen, "%s: larger than %d bytes", file, KEYFILE_MAX);
            goto out;
        }
    }
    ret = session_keyring_parse(text, n, file, out, err, errlen);
out:
    if (text != NULL) {
        OPENSSL_cleanse(text, KEYFILE_MAX + 1);
        free(text);
    }
    close(fd);
    return ret;
}

/* fsync the directory holding path, so a rename or link in it is durable. */
static int fsync_parent(const char *path)
{
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    int fd, ret;

    if (slash == NULL) {
        dir[0] = '.';
        dir[1] = '\0';
    } else if (slash == path) {
        dir[0] = '/';
        dir[1] = '\0';
    } else {
        if ((size_t)(slash - path) >= sizeof(dir))
            return -1;
        memcpy(dir, path, (size_t)(slash - path));
        dir[slash - path] = '\0';
    }
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd == -1)
        return -1;
    ret = fsync(fd);
    close(fd);
    return ret;
}

int session_keyring_generate(const char *file, char *err, size_t errlen)
{
    uint8_t key[KEY_LEN];
    char b64[B64_LEN(KEY_LEN) + 3], text[256], tmp[PATH_MAX];
    struct stat st;
    size_t bl;
    int fd = -1, n, ret = -1;
    long long now = (long long)time(NULL);

    if (lstat(file, &st) == 0)
        return 0;
    if (errno != ENOENT) {
        set_err(err, errlen, "%s: %s", file, strerror(errno));
        return -1;
    }
    n = snprintf(tmp, sizeof(tmp), "%s.tmp.XXXXXX", file);
    if (n < 0 || (size_t)n >= sizeof(tmp)) {
        set_err(err, errlen, "%s: path too long", file);
        return -1;
    }
    if (RAND_bytes(key, sizeof(key)) != 1) {
        log_ssl_errors("session: RAND_bytes");
        set_err(err, errlen, "%s: no random bytes", file);
        goto out;
    }
    bl = b64_encode(key, sizeof(key), b64, b64std_alpha);
    while (bl % 4 != 0)
        b64[bl++] = '=';
    b64[bl] = '\0';
    n = snprintf(text, sizeof(text),
                 "[\n  {\"id\": \"k%lld\", \"key\": \"%s\", \"created\": %lld, \"retired\": false}"
                 "\n]\n",
                 now, b64, now);
    if (n < 0 || (size_t)n >= sizeof(text)) {
        set_err(err, errlen, "%s: internal error", file);
        goto out;
    }
    fd = mkstemp(tmp); /* mode 0600 */
    if (fd == -1) {
        set_err(err, errlen, "%s: %s", tmp, strerror(errno));
        goto out;
    }
    if (fchmod(fd, 0600) == -1 || fileio_write_all(fd, text, (size_t)n) == -1 || fsync(fd) == -1) {
        set_err(err, errlen, "%s: %s", tmp, strerror(errno));
        goto out;
    }
    /* link(2) never replaces: if another process created the file first,
     * its key stays and ours is dropped. */
    if (link(tmp, file) == -1 && errno != EEXIST) {
        set_err(err, errlen, "%s: %s", file, strerror(errno));
        goto out;
    }
    (void)fsync_parent(file);
    ret = 0;
out:
    if (fd != -1) {
        close(fd);
        unlink(tmp);
    }
    OPENSSL_cleanse(key, sizeof(key));
    OPENSSL_cleanse(b64, sizeof(b64));
    OPENSSL_cleanse(text, sizeof(text));
    return ret;
}

/* ---- sealing and opening --------------------------------------------- */

/*
 * One cipher context per thread, reused for every cookie: opening then
 * allocates nothing. Freed when the thread exits.
 */
static pthread_key_t tl_key;
static pthread_once_t tl_once = PTHREAD_ONCE_INIT;
static int tl_ok;

static void tl_free(void *p)
{
    EVP_CIPHER_CTX_free(p);
}

static void tl_init(void)
{
    tl_ok = pthread_key_create(&tl_key, tl_free) == 0;
}

/* *owned: the caller frees the context (no thread-local slot). */
static EVP_CIPHER_CTX *cipher_ctx(int *owned)
{
    EVP_CIPHER_CTX *ctx = NULL;

    *owned = 0;
    pthread_once(&tl_once, tl_init);
    if (tl_ok)
        ctx = pthread_getspecific(tl_key);
    if (ctx != NULL)
        return ctx;
    ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL)
        return NULL;
    if (!tl_ok || pthread_setspecific(tl_key, ctx) != 0)
        *owned = 1;
    return ctx;
}

/* The first use of a context sets the cipher; later ones only re-key it,
 * which skips OpenSSL's reset and parameter plumbing. */
static int cipher_init(EVP_CIPHER_CTX *ctx, const struct session_keyring *ring, const uint8_t *key,
                       const uint8_t *nonce, int enc)
{
    const EVP_CIPHER *c = EVP_CIPHER_CTX_get0_cipher(ctx) == NULL ? ring->cipher : NULL;

    return EVP_CipherInit_ex2(ctx, c, key, nonce, enc, NULL);
}

/* What a sealed value is: its text prefix, its AAD label, its size bounds.
 * Session cookies and blobs differ in all three, so neither can be passed
 * off as the other. */
struct sealed_kind {
    const char *prefix; /* 3 characters */
    const char *label;
    size_t label_len;
    size_t plain_min, plain_max;
};

static const struct sealed_kind kind_session = {COOKIE_PREFIX, AAD_CONTEXT, AAD_CONTEXT_LEN,
                                                PLAIN_MIN, PLAIN_MAX};
static const struct sealed_kind kind_blob = {BLOB_PREFIX, BLOB_CONTEXT, BLOB_CONTEXT_LEN, 0,
                                             SESSION_BLOB_MAX};

#define AAD_MAX (KID_LEN + AAD_CONTEXT_LEN + SESSION_NAME_MAX)
#define SEALED_RAW_MAX (KID_LEN + NONCE_LEN + SESSION_BLOB_MAX + TAG_LEN)
_Static_assert(BLOB_CONTEXT_LEN <= AAD_CONTEXT_LEN, "AAD buffer fits both labels");
_Static_assert(SESSION_BLOB_MAX >= PLAIN_MAX, "one raw buffer size fits both kinds");

static size_t make_aad(uint8_t *aad, const struct sealed_kind *kind, const uint8_t kid[KID_LEN],
                       const char *name, size_t nlen)
{
    memcpy(aad, kid, KID_LEN);
    memcpy(aad + KID_LEN, kind->label, kind->label_len);
    memcpy(aad + KID_LEN + kind->label_len, name, nlen);
    return KID_LEN + kind->label_len + nlen;
}

static int name_ok(const char *name, size_t *len)
{
    *len = strnlen(name, SESSION_NAME_MAX + 1);
    return key_id_ok(name, *len) && *len <= SESSION_NAME_MAX;
}

/* Seal plain[0..plen) with the newest key as prefix + base64url(...) into
 * buf (NUL-terminated). 0 ok, -1 buf too small or OpenSSL failed. */
static int seal_raw(const struct session_keyring *ring, const struct sealed_kind *kind,
                    const char *name, size_t nlen, const uint8_t *plain, size_t plen, char *buf,
                    size_t buflen, size_t *outlen)
{
    const struct session_key *k = &ring->keys[ring->current];
    uint8_t raw[SEALED_RAW_MAX], aad[AAD_MAX];
    EVP_CIPHER_CTX *ctx = NULL;
    size_t aadlen, o;
    int owned = 0, n, fin, ret = -1;

    if (plen > kind->plain_max ||
        buflen < COOKIE_PREFIX_LEN + B64_LEN(KID_LEN + NONCE_LEN + plen + TAG_LEN) + 1)
        return -1;
    memcpy(raw, k->kid, KID_LEN);
    if (RAND_bytes(raw + KID_LEN, NONCE_LEN) != 1)
        goto ssl_err;
    aadlen = make_aad(aad, kind, k->kid, name, nlen);
    ctx = cipher_ctx(&owned);
    if (ctx == NULL)
        goto ssl_err;
    if (cipher_init(ctx, ring, k->key, raw + KID_LEN, 1) != 1 ||
        EVP_EncryptUpdate(ctx, NULL, &n, aad, (int)aadlen) != 1 ||
        (plen > 0 &&
         (EVP_EncryptUpdate(ctx, raw + KID_LEN + NONCE_LEN, &n, plain, (int)plen) != 1 ||
          (size_t)n != plen)) ||
        EVP_EncryptFinal_ex(ctx, raw + KID_LEN + NONCE_LEN + plen, &fin) != 1 || fin != 0 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, TAG_LEN,
                            raw + KID_LEN + NONCE_LEN + plen) != 1)
        goto ssl_err;
    memcpy(buf, kind->prefix, COOKIE_PREFIX_LEN);
    o = COOKIE_PREFIX_LEN;
    o += b64_encode(raw, KID_LEN + NONCE_LEN + plen + TAG_LEN, buf + o, b64url_alpha);
    buf[o] = '\0';
    if (outlen != NULL)
        *outlen = o;
    ret = 0;
    goto out;
ssl_err:
    log_ssl_errors("session: seal");
out:
    if (owned)
        EVP_CIPHER_CTX_free(ctx);
    return ret;
}

static const struct session_key *keyring_find(const struct session_keyring *ring,
                                              const uint8_t *kid)
{
    size_t i;

    for (i = 0; i < ring->nkeys; i++)
        if (!ring->keys[i].retired && memcmp(ring->keys[i].kid, kid, KID_LEN) == 0)
            return &ring->keys[i];
    return NULL;
}

/* Check format, key id and tag; the plaintext goes to plain (which holds
 * kind->plain_max bytes) and its length to *plen. OK, MALFORMED,
 * UNKNOWN_KEY or BAD_TAG. */
static enum session_result open_raw(const struct session_keyring *ring,
                                    const struct sealed_kind *kind, const char *name,
                                    const char *value, size_t len, uint8_t *plain, size_t *plen)
{
    uint8_t raw[SEALED_RAW_MAX], aad[AAD_MAX];
    const struct session_key *k;
    EVP_CIPHER_CTX *ctx = NULL;
    enum session_result res = SESSION_BAD_TAG;
    size_t nlen, aadlen, clen;
    long rawlen;
    int owned = 0, n, fin;

    if (len < COOKIE_PREFIX_LEN ||
        len > COOKIE_PREFIX_LEN + B64_LEN(KID_LEN + NONCE_LEN + kind->plain_max + TAG_LEN) ||
        memcmp(value, kind->prefix, COOKIE_PREFIX_LEN) != 0 || !name_ok(name, &nlen))
        return SESSION_MALFORMED;
    rawlen = b64_decode(value + COOKIE_PREFIX_LEN, len - COOKIE_PREFIX_LEN, raw, sizeof(raw), 1);
    if (rawlen < (long)(KID_LEN + NONCE_LEN + kind->plain_min + TAG_LEN))
        return SESSION_MALFORMED;
    k = keyring_find(ring, raw);
    if (k == NULL)
        return SESSION_UNKNOWN_KEY;
    clen = (size_t)rawlen - KID_LEN - NONCE_LEN - TAG_LEN;
    aadlen = make_aad(aad, kind, raw, name, nlen);
    ctx = cipher_ctx(&owned);
    if (ctx == NULL) {
        log_ssl_errors("session: open");
        return SESSION_BAD_TAG; /* fail closed */
    }
    if (cipher_init(ctx, ring, k->key, raw + KID_LEN, 0) != 1 ||
        EVP_DecryptUpdate(ctx, NULL, &n, aad, (int)aadlen) != 1 ||
        (clen > 0 &&
         (EVP_DecryptUpdate(ctx, plain, &n, raw + KID_LEN + NONCE_LEN, (int)clen) != 1 ||
          (size_t)n != clen)) ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, TAG_LEN,
                            raw + KID_LEN + NONCE_LEN + clen) != 1 ||
        EVP_DecryptFinal_ex(ctx, plain + clen, &fin) != 1) {
        ERR_clear_error(); /* a bad tag is an answer, not an error to log */
        OPENSSL_cleanse(plain, clen);
        goto out;
    }
    *plen = clen;
    res = SESSION_OK;
out:
    if (owned)
        EVP_CIPHER_CTX_free(ctx);
    return res;
}

int session_cookie_seal(const struct session_keyring *ring, const char *name,
                        const struct session *s, char *buf, size_t buflen, size_t *outlen)
{
    uint8_t plain[PLAIN_MAX];
    size_t nlen, plen;
    int ret;

    if (!name_ok(name, &nlen) || !session_valid(s))
        return -1;
    plen = plain_encode(s, plain);
    ret = seal_raw(ring, &kind_session, name, nlen, plain, plen, buf, buflen, outlen);
    OPENSSL_cleanse(plain, sizeof(plain));
    return ret;
}

enum session_result session_cookie_open(const struct session_keyring *ring, const char *name,
                                        const char *value, size_t len, int64_t now,
                                        const uint8_t thumb[SESSION_THUMBPRINT_LEN],
                                        struct session *out, int *reseal)
{
    uint8_t plain[PLAIN_MAX];
    enum session_result res;
    size_t plen = 0;

    memset(out, 0, sizeof(*out));
    if (reseal != NULL)
        *reseal = 0;
    res = open_raw(ring, &kind_session, name, value, len, plain, &plen);
    if (res != SESSION_OK)
        return res;
    if (plain_decode(plain, plen, out) == -1) {
        memset(out, 0, sizeof(*out));
        return SESSION_MALFORMED;
    }
    /* Device binding first: a stolen cookie is worth an audit line even
     * when it has expired. */
    if (CRYPTO_memcmp(out->thumbprint, thumb, SESSION_THUMBPRINT_LEN) != 0)
        return SESSION_WRONG_DEVICE;
    return session_check_times(out, now, reseal);
}

enum session_result session_check_times(const struct session *s, int64_t now, int *reseal)
{
    if (reseal != NULL)
        *reseal = 0;
    if (now >= s->expires_at)
        return SESSION_EXPIRED;
    if (now >= s->idle_expires_at)
        return SESSION_IDLE_EXPIRED;
    /* Rolling idle expiry: re-seal once more than half the idle window has
     * passed, and only if that can still extend the session. */
    if (reseal != NULL && (now - s->seen_at) * 2 > s->idle_expires_at - s->seen_at &&
        s->idle_expires_at < s->expires_at)
        *reseal = 1;
    return SESSION_OK;
}

int session_blob_seal(const struct session_keyring *ring, const char *name, const void *blob,
                      size_t len, char *buf, size_t buflen)
{
    size_t nlen;

    if (!name_ok(name, &nlen) || len > SESSION_BLOB_MAX || (len > 0 && blob == NULL))
        return -1;
    return seal_raw(ring, &kind_blob, name, nlen, blob, len, buf, buflen, NULL);
}

int session_blob_open(const struct session_keyring *ring, const char *name, const char *value,
                      size_t len, void *out, size_t outmax, size_t *outlen)
{
    uint8_t plain[SESSION_BLOB_MAX];
    size_t plen = 0;
    int ret = -1;

    if (open_raw(ring, &kind_blob, name, value, len, plain, &plen) != SESSION_OK)
        goto out;
    if (plen > outmax)
        goto out;
    if (plen > 0)
        memcpy(out, plain, plen);
    *outlen = plen;
    ret = 0;
out:
    OPENSSL_cleanse(plain, plen);
    return ret;
}

/* ---- Set-Cookie ------------------------------------------------------ */

/* RFC 6265 cookie-octet */
static int cookie_value_ok(const char *v)
{
    for (; *v != '\0'; v++) {
        unsigned char c = (unsigned char)*v;
        if (c < 0x21 || c > 0x7e || c == '"' || c == ',' || c == ';' || c == '\\')
            return 0;
    }
    return 1;
}

int session_set_cookie(char *buf, size_t buflen, const char *name, const char *value,
                       int64_t max_age)
{
    size_t nlen;
    int n;

    if (!name_ok(name, &nlen) || !cookie_value_ok(value) || max_age < 0)
        return -1;
    n = snprintf(buf, buflen, "__Host-%s=%s; Path=/; Max-Age=%lld; Secure; HttpOnly; SameSite=Lax",
                 name, value, (long long)max_age);
    if (n < 0 || (size_t)n >= buflen)
        return -1;
    return 0;
}

int session_clear_cookie(char *buf, size_t buflen, const char *name)
{
    return session_set_cookie(buf, buflen, name, "", 0);
}

/* ---- revocation store ------------------------------------------------ */

/*
 * Readers (workers, every request) take the read side of a writer-preferring
 * rwlock for two hash lookups; the single writer holds the write side only
 * to swap a slot or a table pointer. Tables are rebuilt outside the lock.
 * An atomic count lets readers skip the lock while nothing is revoked.
 */
#define REV_MAX 1000000
#define REV_FILE "revocations.log"
#define REV_LINE_MAX 1024

struct rev_id {
    uint8_t id[SESSION_ID_LEN];
    int64_t at;
    int used;
};

/*
 * The users table also holds the back-channel logout entries, told apart by
 * the key: a plain subject (every provider), REV_SID provider REV_SEP sid
 * (one provider session) or REV_PUSER provider REV_SEP subject (a subject
 * at one provider). Subjects, providers and sids never hold control
 * characters, so the three kinds cannot collide.
 */
#define REV_SID '\x01'
#define REV_PUSER '\x02'
#define REV_SEP '\x01'
#define REV_KEY_MAX (2 + SESSION_PROVIDER_MAX + SESSION_SID_MAX)
_Static_assert(SESSION_SID_MAX >= SESSION_SUBJECT_MAX, "REV_KEY_MAX fits both kinds");

struct rev_user {
    char *subject; /* the key (see above); NULL: empty slot */
    uint64_t hash;
    int64_t at;
};

struct rev_ids {
    struct rev_id *slots;
    size_t cap, n; /* cap is a power of two, n <= cap / 2 */
};

struct rev_users {
    struct rev_user *slots;
    size_t cap, n;
};

struct session_revocations {
    pthread_rwlock_t lock;
    pthread_mutex_t wlock; /* serialises writers */
    atomic_size_t count;
    /* Bumped by every change a reader could see (rev_wunlock()): lets a
     * connection that checked a session skip the check until it moves. */
    atomic_uint_fast64_t gen;
    struct rev_ids ids;
    struct rev_users users;
    size_t nscoped; /* scoped keys ever added (a hint to skip two lookups) */
    uint64_t seed;
    int64_t max_lifetime;
    char *path, *tmp;
    int fd;
    int unsaved; /* an entry in memory did not reach the log: rewrite it whole */
};

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static uint64_t id_hash(const struct session_revocations *rs, const uint8_t *id)
{
    uint64_t a, b;

    memcpy(&a, id, 8);
    memcpy(&b, id + 8, 8);
    return mix64(a ^ rs->seed) ^ mix64(b + rs->seed);
}

static uint64_t user_hash(const struct session_revocations *rs, const char *s, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ULL ^ rs->seed;
    size_t i;

    for (i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ULL;
    }
    return mix64(h);
}

static struct rev_id *ids_find(const struct session_revocations *rs, const struct rev_ids *t,
                               const uint8_t *id)
{
    size_t i;

    if (t->cap == 0)
        return NULL;
    for (i = id_hash(rs, id) & (t->cap - 1);; i = (i + 1) & (t->cap - 1)) {
        if (!t->slots[i].used)
            return NULL;
        if (memcmp(t->slots[i].id, id, SESSION_ID_LEN) == 0)
            return &t->slots[i];
    }
}

static struct rev_user *users_find(const struct session_revocations *rs, const struct rev_users *t,
                                   const char *s, size_t len)
{
    uint64_t h;
    size_t i;

    if (t->cap == 0)
        return NULL;
    h = user_hash(rs, s, len);
    for (i = h & (t->cap - 1);; i = (i + 1) & (t->cap - 1)) {
        if (t->slots[i].subject == NULL)
            return NULL;
        if (t->slots[i].hash == h && strncmp(t->slots[i].subject, s, len) == 0 &&
            t->slots[i].subject[len] == '\0')
            return &t->slots[i];
    }
}

/* Insert into a table known to have room; no lookup. */
static void ids_put(const struct session_revocations *rs, struct rev_ids *t, const uint8_t *id,
                    int64_t at)
{
    size_t i;

    for (i = id_hash(rs, id) & (t->cap - 1); t->slots[i].used; i = (i + 1) & (t->cap - 1))
        ;
    memcpy(t->slots[i].id, id, SESSION_ID_LEN);
    t->slots[i].at = at;
    t->slots[i].used = 1;
    t->n++;
}

static void users_put(struct rev_users *t, char *subject, uint64_t h, int64_t at)
{
    size_t i;

    for (i = h & (t->cap - 1); t->slots[i].subject != NULL; i = (i + 1) & (t->cap - 1))
        ;
    t->slots[i].subject = subject;
    t->slots[i].hash = h;
    t->slots[i].at = at;
    t->n++;
}

static size_t table_cap(size_t n)
{
    size_t cap = 16;

    while (cap < n * 2 + 2)
        cap *= 2;
    return cap;
}

/* Build a copy of src keeping entries with at > cutoff, sized for n more. */
static int ids_rebuild(const struct session_revocations *rs, const struct rev_ids *src,
                       struct rev_ids *dst, int64_t cutoff, size_t more)
{
    size_t i;

    dst->n = 0;
    dst->cap = table_cap(src->n + more);
    dst->slots = calloc(dst->cap, sizeof(*dst->slots));
    if (dst->slots == NULL)
        return -1;
    for (i = 0; i < src->cap; i++)
        if (src->slots[i].used && src->slots[i].at > cutoff)
            ids_put(rs, dst, src->slots[i].id, src->slots[i].at);
    return 0;
}

/* Like ids_rebuild(); the kept subjects move to dst, the dropped ones stay
 * in src (freed by users_free_dropped()). */
static int users_rebuild(const struct rev_users *src, struct rev_users *dst, int64_t cutoff,
                         size_t more)
{
    size_t i;

    dst->n = 0;
    dst->cap = table_cap(src->n + more);
    dst->slots = calloc(dst->cap, sizeof(*dst->slots));
    if (dst->slots == NULL)
        return -1;
    for (i = 0; i < src->cap; i++)
        if (src->slots[i].subject != NULL && src->slots[i].at > cutoff)
            users_put(dst, src->slots[i].subject, src->slots[i].hash, src->slots[i].at);
    return 0;
}

static void users_free_dropped(struct rev_users *old, int64_t cutoff)
{
    size_t i;

    for (i = 0; i < old->cap; i++)
        if (old->slots[i].subject != NULL && old->slots[i].at <= cutoff)
            free(old->slots[i].subject);
    free(old->slots);
}

/* End a write section: the generation moves before readers may look. */
static void rev_wunlock(struct session_revocations *rs)
{
    atomic_fetch_add_explicit(&rs->gen, 1, memory_order_release);
    pthread_rwlock_unlock(&rs->lock);
}

static void publish_count(struct session_revocations *rs)
{
    atomic_store_explicit(&rs->count, rs->ids.n + rs->users.n, memory_order_release);
}

/* Writer side, wlock held. Insert or raise the time of an id. */
static int rev_add_id(struct session_revocations *rs, const uint8_t *id, int64_t at)
{
    struct rev_id *e = ids_find(rs, &rs->ids, id);
    struct rev_ids grown, old;

    if (e != NULL) {
        if (at > e->at) {
            pthread_rwlock_wrlock(&rs->lock);
            e->at = at;
            rev_wunlock(rs);
        }
        return 0;
    }
    if (rs->ids.n + rs->users.n >= REV_MAX)
        return -1;
    if ((rs->ids.n + 1) * 2 > rs->ids.cap) {
        if (ids_rebuild(rs, &rs->ids, &grown, INT64_MIN, 1) == -1)
            return -1;
        ids_put(rs, &grown, id, at);
        pthread_rwlock_wrlock(&rs->lock);
        old = rs->ids;
        rs->ids = grown;
        publish_count(rs);
        rev_wunlock(rs);
        free(old.slots);
        return 0;
    }
    pthread_rwlock_wrlock(&rs->lock);
    ids_put(rs, &rs->ids, id, at);
    publish_count(rs);
    rev_wunlock(rs);
    return 0;
}

static int rev_add_user(struct session_revocations *rs, const char *subject, int64_t at)
{
    size_t len = strlen(subject);
    struct rev_user *e = users_find(rs, &rs->users, subject, len);
    struct rev_users grown, old;
    char *copy;

    if (e != NULL) {
        if (at > e->at) {
            pthread_rwlock_wrlock(&rs->lock);
            e->at = at;
            rev_wunlock(rs);
        }
        return 0;
    }
    if (rs->ids.n + rs->users.n >= REV_MAX)
        return -1;
    copy = strdup(subject);
    if (copy == NULL)
        return -1;
    if ((rs->users.n + 1) * 2 > rs->users.cap) {
        if (users_rebuild(&rs->users, &grown, INT64_MIN, 1) == -1) {
            free(copy);
            return -1;
        }
        users_put(&grown, copy, user_hash(rs, subject, len), at);
        pthread_rwlock_wrlock(&rs->lock);
        old = rs->users;
        rs->users = grown;
        if (subject[0] == REV_SID || subject[0] == REV_PUSER)
            rs->nscoped++;
        publish_count(rs);
        rev_wunlock(rs);
        free(old.slots); /* subjects moved */
        return 0;
    }
    pthread_rwlock_wrlock(&rs->lock);
    users_put(&rs->users, copy, user_hash(rs, subject, len), at);
    if (subject[0] == REV_SID || subject[0] == REV_PUSER)
        rs->nscoped++;
    publish_count(rs);
    rev_wunlock(rs);
    return 0;
}

/* Build a scoped key (REV_SID or REV_PUSER) into buf (REV_KEY_MAX + 1);
 * returns its length. Both parts must have passed str_ok(). */
static size_t rev_key(char *buf, char kind, const char *provider, const char *rest)
{
    size_t pl = strlen(provider), rl = strlen(rest);

    buf[0] = kind;
    memcpy(buf + 1, provider, pl);
    buf[1 + pl] = REV_SEP;
    memcpy(buf + 2 + pl, rest, rl);
    buf[2 + pl + rl] = '\0';
    return 2 + pl + rl;
}

/* Reader side, read lock held: revoked at s's provider, by subject or sid. */
static int rev_scoped_revoked(const struct session_revocations *rs, const struct session *s)
{
    char key[REV_KEY_MAX + 1];
    const struct rev_user *u;
    size_t n;

    if (rs->nscoped == 0 || s->provider[0] == '\0')
        return 0;
    n = rev_key(key, REV_PUSER, s->provider, s->subject);
    u = users_find(rs, &rs->users, key, n);
    if (u != NULL && s->issued_at <= u->at)
        return 1;
    if (s->sid[0] == '\0')
        return 0;
    n = rev_key(key, REV_SID, s->provider, s->sid);
    u = users_find(rs, &rs->users, key, n);
    return u != NULL && s->issued_at <= u->at;
}

enum session_result session_revocations_check(struct session_revocations *rs,
                                              const struct session *s)
{
    const struct rev_user *u;
    enum session_result res = SESSION_OK;

    if (atomic_load_explicit(&rs->count, memory_order_acquire) == 0)
        return SESSION_OK;
    pthread_rwlock_rdlock(&rs->lock);
    if (ids_find(rs, &rs->ids, s->id) != NULL) {
        res = SESSION_REVOKED;
    } else {
        u = users_find(rs, &rs->users, s->subject, field_len(s->subject, sizeof(s->subject)));
        /* Whole seconds: a session issued in the second of the revocation
         * is revoked too (fail closed). */
        if (u != NULL && s->issued_at <= u->at)
            res = SESSION_REVOKED;
        else if (rev_scoped_revoked(rs, s))
            res = SESSION_REVOKED;
    }
    pthread_rwlock_unlock(&rs->lock);
    return res;
}

uint64_t session_revocations_generation(struct session_revocations *rs)
{
    return atomic_load_explicit(&rs->gen, memory_order_acquire);
}

size_t session_revocations_count(struct session_revocations *rs)
{
    return atomic_load_explicit(&rs->count, memory_order_acquire);
}

/* ---- the log file ---------------------------------------------------- */

static const char hexdig[] = "0123456789abcdef";

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int subject_plain(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.' || c == '~' || c == '@' || c == '+' || c == ':' || c == '|';
}

/* "id <time> <32 hex>\n" or "user <time> <percent-encoded subject>\n".
 * buf holds REV_LINE_MAX; returns the length. */
static size_t rev_format_id(char *buf, const uint8_t *id, int64_t at)
{
    char hex[SESSION_ID_LEN * 2 + 1];
    size_t i;
    int n;

    for (i = 0; i < SESSION_ID_LEN; i++) {
        hex[2 * i] = hexdig[id[i] >> 4];
        hex[2 * i + 1] = hexdig[id[i] & 15];
    }
    hex[sizeof(hex) - 1] = '\0';
    n = snprintf(buf, REV_LINE_MAX, "id %lld %s\n", (long long)at, hex);
    return (size_t)n;
}

/* Percent-encode s up to its end or stop into buf + o; returns the new o. */
static size_t pct_put(char *buf, size_t o, const char *s, char stop)
{
    for (; *s != '\0' && *s != stop; s++) {
        unsigned char c = (unsigned char)*s;
        if (subject_plain(c)) {
            buf[o++] = (char)c;
        } else {
            buf[o++] = '%';
            buf[o++] = hexdig[c >> 4];
            buf[o++] = hexdig[c & 15];
        }
    }
    return o;
}

/* A users-table key: "user <time> <subject>", or for the scoped kinds
 * "sid <time> <provider> <sid>" and "puser <time> <provider> <subject>"
 * (each part percent-encoded, so a space only separates). */
static size_t rev_format_user(char *buf, const char *subject, int64_t at)
{
    const char *kind = subject[0] == REV_SID ? "sid" : subject[0] == REV_PUSER ? "puser" : "user";
    size_t o;
    int n;

    n = snprintf(buf, REV_LINE_MAX, "%s %lld ", kind, (long long)at);
    o = (size_t)n;
    if (subject[0] == REV_SID || subject[0] == REV_PUSER) {
        subject++;
        o = pct_put(buf, o, subject, REV_SEP);
        buf[o++] = ' ';
        subject = strchr(subject, REV_SEP) + 1;
    }
    o = pct_put(buf, o, subject, '\0');
    buf[o++] = '\n';
    buf[o] = '\0';
    return o;
}
_Static_assert(sizeof("user  \n") + 20 + 3 * SESSION_SUBJECT_MAX < REV_LINE_MAX,
               "a user line fits");
_Static_assert(sizeof("puser   \n") + 20 + 3 * (SESSION_PROVIDER_MAX + SESSION_SID_MAX) <
                   REV_LINE_MAX,
               "a scoped line fits");

static int parse_time(const char **p, int64_t *out)
{
    int64_t v = 0;
    const char *s = *p;

    if (*s < '0' || *s > '9')
        return -1;
    while (*s >= '0' && *s <= '9') {
        if (v > TIME_MAX)
            return -1;
        v = v * 10 + (*s - '0');
        s++;
    }
    if (v > TIME_MAX)
        return -1;
    *out = v;
    *p = s;
    return 0;
}

/* Percent-decode from *p up to stop or the end into dst (at most max bytes,
 * non-empty, no control characters). 0 ok, -1 bad. */
static int pct_get(const char **p, char stop, char *dst, size_t max)
{
    size_t n = 0;
    int hi, lo;

    for (; **p != '\0' && **p != stop; (*p)++) {
        unsigned char c = (unsigned char)**p;
        if (n >= max)
            return -1;
        if (c == '%') {
            hi = hexval((unsigned char)(*p)[1]);
            lo = hi < 0 ? -1 : hexval((unsigned char)(*p)[2]);
            if (lo < 0)
                return -1;
            c = (unsigned char)(hi << 4 | lo);
            *p += 2;
        }
        dst[n++] = (char)c;
    }
    dst[n] = '\0';
    return str_ok(dst, n, max, 0) && strlen(dst) == n ? 0 : -1;
}

/* "sid <time> <provider> <sid>" or "puser <time> <provider> <subject>". */
static int rev_parse_scoped(struct session_revocations *rs, const char *line, const char **why)
{
    char provider[SESSION_PROVIDER_MAX + 1], rest[SESSION_SID_MAX + 1], key[REV_KEY_MAX + 1];
    int sid = line[0] == 's';
    const char *p = line + (sid ? 4 : 6);
    int64_t at;

    *why = sid ? "expected \"sid <unix time> <provider> <sid>\""
               : "expected \"puser <unix time> <provider> <subject>\"";
    if (parse_time(&p, &at) == -1 || *p++ != ' ' ||
        pct_get(&p, ' ', provider, SESSION_PROVIDER_MAX) == -1 || *p++ != ' ' ||
        pct_get(&p, '\0', rest, sid ? SESSION_SID_MAX : SESSION_SUBJECT_MAX) == -1)
        return -1;
    rev_key(key, sid ? REV_SID : REV_PUSER, provider, rest);
    if (rev_add_user(rs, key, at) == -1) {
        *why = "out of memory or store full";
        return -1;
    }
    return 0;
}

/* Parse one complete line (without its newline) into the tables. */
static int rev_parse_line(struct session_revocations *rs, const char *line, const char **why)
{
    uint8_t id[SESSION_ID_LEN];
    char subject[SESSION_SUBJECT_MAX + 1];
    const char *p;
    int64_t at;
    size_t i, n = 0;
    int hi, lo;

    if (strncmp(line, "id ", 3) == 0) {
        p = line + 3;
        if (parse_time(&p, &at) == -1 || *p++ != ' ') {
            *why = "expected \"id <unix time> <32 hex digits>\"";
            return -1;
        }
        for (i = 0; i < SESSION_ID_LEN; i++) {
            hi = hexval((unsigned char)p[2 * i]);
            lo = hi < 0 ? -1 : hexval((unsigned char)p[2 * i + 1]);
            if (lo < 0) {
                *why = "expected \"id <unix time> <32 hex digits>\"";
                return -1;
            }
            id[i] = (uint8_t)(hi << 4 | lo);
        }
        if (p[2 * SESSION_ID_LEN] != '\0') {
            *why = "expected \"id <unix time> <32 hex digits>\"";
            return -1;
        }
        if (rev_add_id(rs, id, at) == -1) {
            *why = "out of memory or store full";
            return -1;
        }
        return 0;
    }
    if (strncmp(line, "user ", 5) == 0) {
        p = line + 5;
        if (parse_time(&p, &at) == -1 || *p++ != ' ') {
            *why = "expected \"user <unix time> <subject>\"";
            return -1;
        }
        for (; *p != '\0'; p++) {
            unsigned char c = (unsigned char)*p;
            if (n >= SESSION_SUBJECT_MAX) {
                *why = "subject too long";
                return -1;
            }
            if (c == '%') {
                hi = hexval((unsigned char)p[1]);
                lo = hi < 0 ? -1 : hexval((unsigned char)p[2]);
                if (lo < 0) {
                    *why = "bad %-escape in subject";
                    return -1;
                }
                c = (unsigned char)(hi << 4 | lo);
                p += 2;
            }
            subject[n++] = (char)c;
        }
        subject[n] = '\0';
        if (!str_ok(subject, n, SESSION_SUBJECT_MAX, 0) || strlen(subject) != n) {
            *why = "empty subject or control characters in it";
            return -1;
        }
        if (rev_add_user(rs, subject, at) == -1) {
            *why = "out of memory or store full";
            return -1;
        }
        return 0;
    }
    if (strncmp(line, "sid ", 4) == 0 || strncmp(line, "puser ", 6) == 0)
        return rev_parse_scoped(rs, line, why);
    *why = "expected a line starting with \"id \", \"user \", \"sid \" or \"puser \"";
    return -1;
}

static int rev_load(struct session_revocations *rs, char *err, size_t errlen)
{
    FILE *f;
    char *line = NULL;
    size_t cap = 0, lineno = 0;
    ssize_t n;
    const char *why = NULL;
    int ret = -1;

    f = fopen(rs->path, "re");
    if (f == NULL) {
        if (errno == ENOENT)
            return 0;
        set_err(err, errlen, "%s: %s", rs->path, strerror(errno));
        return -1;
    }
    for (;;) {
        errno = 0;
        n = getline(&line, &cap, f);
        if (n == -1) {
            if (errno != 0) {
                set_err(err, errlen, "%s: %s", rs->path, strerror(errno));
                goto out;
            }
            break;
        }
        lineno++;
        if (line[n - 1] != '\n') {
            /* The last line, cut short by a crash while it was appended:
             * that revocation never returned success, so it is dropped. */
            log_warnx("%s:%zu: ignoring a truncated last line", rs->path, lineno);
            break;
        }
        line[n - 1] = '\0';
        if ((size_t)n > REV_LINE_MAX || strlen(line) != (size_t)n - 1) {
            set_err(err, errlen, "%s:%zu: line too long or has a NUL byte", rs->path, lineno);
            goto out;
        }
        if (rev_parse_line(rs, line, &why) == -1) {
            set_err(err, errlen, "%s:%zu: %s", rs->path, lineno, why);
            goto out;
        }
    }
    ret = 0;
out:
    free(line);
    fclose(f);
    return ret;
}

/* Writer side. Write every live entry to a temp file, fsync, rename over
 * the log, fsync the directory, and reopen the log for appending. */
static int rev_rewrite(struct session_revocations *rs)
{
    char line[REV_LINE_MAX];
    size_t i, n;
    int fd, newfd = -1, ret = -1;

    fd = open(rs->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd == -1) {
        log_warn("%s", rs->tmp);
        return -1;
    }
    for (i = 0; i < rs->ids.cap; i++) {
        if (!rs->ids.slots[i].used)
            continue;
        n = rev_format_id(line, rs->ids.slots[i].id, rs->ids.slots[i].at);
        if (fileio_write_all(fd, line, n) == -1)
            goto werr;
    }
    for (i = 0; i < rs->users.cap; i++) {
        if (rs->users.slots[i].subject == NULL)
            continue;
        n = rev_format_user(line, rs->users.slots[i].subject, rs->users.slots[i].at);
        if (fileio_write_all(fd, line, n) == -1)
            goto werr;
    }
    if (fsync(fd) == -1)
        goto werr;
    if (rename(rs->tmp, rs->path) == -1)
        goto werr;
    (void)fsync_parent(rs->path);
    newfd = open(rs->path, O_WRONLY | O_APPEND | O_CLOEXEC);
    if (newfd == -1) {
        /* The old descriptor now names a replaced file: appending to it
         * would lose revocations silently. Fail them loudly instead. */
        log_warn("%s", rs->path);
        if (rs->fd != -1)
            close(rs->fd);
        rs->fd = -1;
        goto out;
    }
    if (rs->fd != -1)
        close(rs->fd);
    rs->fd = newfd;
    ret = 0;
    goto out;
werr:
    log_warn("%s", rs->tmp);
    unlink(rs->tmp);
out:
    close(fd);
    return ret;
}

static int rev_append(struct session_revocations *rs, const char *line, size_t n)
{
    off_t end;

    if (rs->unsaved || rs->fd == -1) {
        /* An earlier entry is in memory only (full disk, say): write the
         * whole store, this entry included, so it is not lost either. */
        if (rev_rewrite(rs) == -1) {
            rs->unsaved = 1;
            log_warnx("%s: revocation not persisted", rs->path);
            return -1;
        }
        rs->unsaved = 0;
        return 0;
    }
    end = lseek(rs->fd, 0, SEEK_END);
    if (end == -1 || fileio_write_all(rs->fd, line, n) == -1 || fdatasync(rs->fd) == -1) {
        log_warn("%s: revocation not persisted", rs->path);
        /* A full disk can take half a line: the next revocation would be
         * glued onto it and the log refused at the next start. Cut it. */
        if (end != -1 && ftruncate(rs->fd, end) == -1)
            log_warn("%s: truncate", rs->path);
        rs->unsaved = 1;
        return -1;
    }
    return 0;
}

static int rev_prune(struct session_revocations *rs, int64_t now)
{
    struct rev_ids ids, oldids;
    struct rev_users users, oldusers;
    int64_t cutoff = now - rs->max_lifetime; /* at <= cutoff: every match has expired */

    if (ids_rebuild(rs, &rs->ids, &ids, cutoff, 0) == -1)
        return -1;
    if (users_rebuild(&rs->users, &users, cutoff, 0) == -1) {
        free(ids.slots);
        return -1;
    }
    pthread_rwlock_wrlock(&rs->lock);
    oldids = rs->ids;
    oldusers = rs->users;
    rs->ids = ids;
    rs->users = users;
    publish_count(rs);
    rev_wunlock(rs);
    free(oldids.slots);
    users_free_dropped(&oldusers, cutoff);
    return 0;
}

static int path_join(char **out, const char *dir, const char *file)
{
    size_t n = strlen(dir) + 1 + strlen(file) + 1;

    *out = malloc(n);
    if (*out == NULL)
        return -1;
    snprintf(*out, n, "%s/%s", dir, file);
    return 0;
}

int session_revocations_open(const char *dir, int64_t max_lifetime, int64_t now,
                             struct session_revocations **out, char *err, size_t errlen)
{
    struct session_revocations *rs;
    pthread_rwlockattr_t attr;

    if (max_lifetime <= 0 || max_lifetime > LIFETIME_MAX) {
        set_err(err, errlen, "%s: max session lifetime out of range", dir);
        return -1;
    }
    rs = calloc(1, sizeof(*rs));
    if (rs == NULL) {
        set_err(err, errlen, "%s: out of memory", dir);
        return -1;
    }
    rs->fd = -1;
    rs->max_lifetime = max_lifetime;
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&rs->lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    pthread_mutex_init(&rs->wlock, NULL);
    atomic_init(&rs->count, 0);
    atomic_init(&rs->gen, 1);
    if (RAND_bytes((unsigned char *)&rs->seed, sizeof(rs->seed)) != 1) {
        log_ssl_errors("session: RAND_bytes");
        set_err(err, errlen, "%s: no random bytes", dir);
        goto err;
    }
    if (path_join(&rs->path, dir, REV_FILE) == -1 ||
        path_join(&rs->tmp, dir, REV_FILE ".tmp") == -1) {
        set_err(err, errlen, "%s: out of memory", dir);
        goto err;
    }
    if (rev_load(rs, err, errlen) == -1)
        goto err;
    if (rev_prune(rs, now) == -1) {
        set_err(err, errlen, "%s: out of memory", dir);
        goto err;
    }
    /* Compacting also drops a truncated last line, so the next append
     * starts on a line of its own. */
    if (rev_rewrite(rs) == -1) {
        set_err(err, errlen, "%s: cannot write: %s", rs->path, strerror(errno));
        goto err;
    }
    *out = rs;
    return 0;
err:
    session_revocations_free(rs);
    return -1;
}

int session_revoke_id(struct session_revocations *rs, const uint8_t id[SESSION_ID_LEN], int64_t now)
{
    char line[REV_LINE_MAX];
    size_t n;
    int ret = -1;

    if (now < 0 || now > TIME_MAX)
        return -1;
    pthread_mutex_lock(&rs->wlock);
    if (rev_add_id(rs, id, now) == -1)
        goto out;
    n = rev_format_id(line, id, now);
    ret = rev_append(rs, line, n);
out:
    pthread_mutex_unlock(&rs->wlock);
    return ret;
}

int session_revoke_user(struct session_revocations *rs, const char *subject, int64_t now)
{
    char line[REV_LINE_MAX];
    size_t n, len = strnlen(subject, SESSION_SUBJECT_MAX + 1);
    int ret = -1;

    if (now < 0 || now > TIME_MAX || !str_ok(subject, len, SESSION_SUBJECT_MAX, 0))
        return -1;
    pthread_mutex_lock(&rs->wlock);
    if (rev_add_user(rs, subject, now) == -1)
        goto out;
    n = rev_format_user(line, subject, now);
    ret = rev_append(rs, line, n);
out:
    pthread_mutex_unlock(&rs->wlock);
    return ret;
}

static int revoke_scoped(struct session_revocations *rs, char kind, const char *provider,
                         const char *rest, size_t rest_max, int64_t now)
{
    char line[REV_LINE_MAX], key[REV_KEY_MAX + 1];
    size_t n;
    int ret = -1;

    if (now < 0 || now > TIME_MAX || provider == NULL || rest == NULL ||
        !str_ok(provider, strnlen(provider, SESSION_PROVIDER_MAX + 1), SESSION_PROVIDER_MAX, 0) ||
        !str_ok(rest, strnlen(rest, rest_max + 1), rest_max, 0))
        return -1;
    rev_key(key, kind, provider, rest);
    pthread_mutex_lock(&rs->wlock);
    if (rev_add_user(rs, key, now) == -1)
        goto out;
    n = rev_format_user(line, key, now);
    ret = rev_append(rs, line, n);
out:
    pthread_mutex_unlock(&rs->wlock);
    return ret;
}

int session_revoke_sid(struct session_revocations *rs, const char *provider, const char *sid,
                       int64_t now)
{
    return revoke_scoped(rs, REV_SID, provider, sid, SESSION_SID_MAX, now);
}

int session_revoke_provider_user(struct session_revocations *rs, const char *provider,
                                 const char *subject, int64_t now)
{
    return revoke_scoped(rs, REV_PUSER, provider, subject, SESSION_SUBJECT_MAX, now);
}

int session_revocations_expire(struct session_revocations *rs, int64_t now)
{
    int ret = -1;

    pthread_mutex_lock(&rs->wlock);
    if (rev_prune(rs, now) == 0)
        ret = rev_rewrite(rs);
    if (ret == 0)
        rs->unsaved = 0;
    pthread_mutex_unlock(&rs->wlock);
    return ret;
}

void session_revocations_foreach(struct session_revocations *rs, session_revocation_cb fn,
                                 void *arg)
{
    char key[REV_KEY_MAX + 1];
    size_t i;

    pthread_mutex_lock(&rs->wlock);
    for (i = 0; i < rs->ids.cap; i++)
        if (rs->ids.slots[i].used)
            fn(arg, rs->ids.slots[i].id, NULL, NULL, NULL, rs->ids.slots[i].at);
    for (i = 0; i < rs->users.cap; i++) {
        const char *k = rs->users.slots[i].subject, *sep;
        size_t pl;

        if (k == NULL)
            continue;
        if (k[0] != REV_SID && k[0] != REV_PUSER) {
            fn(arg, NULL, k, NULL, NULL, rs->users.slots[i].at);
            continue;
        }
        sep = strchr(k + 1, REV_SEP);
        pl = sep != NULL ? (size_t)(sep - (k + 1)) : 0;
        if (sep == NULL || pl == 0 || strlen(k) >= sizeof(key))
            continue;
        memcpy(key, k + 1, pl);
        key[pl] = '\0';
        if (k[0] == REV_SID)
            fn(arg, NULL, NULL, key, sep + 1, rs->users.slots[i].at);
        else
            fn(arg, NULL, sep + 1, key, NULL, rs->users.slots[i].at);
    }
    pthread_mutex_unlock(&rs->wlock);
}

void session_revocations_free(struct session_revocations *rs)
{
    size_t i;

    if (rs == NULL)
        return;
    if (rs->fd != -1)
        close(rs->fd);
    free(rs->ids.slots);
    for (i = 0; i < rs->users.cap; i++)
        free(rs->users.slots[i].subject);
    free(rs->users.slots);
    pthread_rwlock_destroy(&rs->lock);
    pthread_mutex_destroy(&rs->wlock);
    free(rs->path);
    free(rs->tmp);
    free(rs);
}
