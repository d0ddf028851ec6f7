/*
 * feedcache.c - the last good URL inventory feed in the state directory
 * (include/feedcache.h, docs/device-trust.md "Feed cache").
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "fileio.h"
#include "feedcache.h"

#define TIME_MAX (1LL << 40)

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

static int text_ok(const char *s, size_t len)
{
    size_t i;

    for (i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return 0;
    return 1;
}

/* A string member into dst (size max + 1); absent is "" when optional. */
static int get_text(json_t *o, const char *key, int optional, char *dst, size_t max,
                    const char *name, char *err, size_t errlen)
{
    json_t *v = json_object_get(o, key);
    size_t len;

    dst[0] = '\0';
    if (v == NULL && optional)
        return 0;
    if (!json_is_string(v)) {
        set_err(err, errlen, "%s: $.%s: expected a string", name, key);
        return -1;
    }
    len = json_string_length(v);
    if ((!optional && len == 0) || len > max || !text_ok(json_string_value(v), len) ||
        strlen(json_string_value(v)) != len) {
        set_err(err, errlen, "%s: $.%s: expected %s1..%zu bytes without control characters", name,
                key, optional ? "0 or " : "", max);
        return -1;
    }
    memcpy(dst, json_string_value(v), len + 1);
    return 0;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

int feedcache_meta_parse(const char *text, size_t len, const char *name, struct feedcache_meta *out,
                         char *err, size_t errlen)
{
    static const char *const keys[] = {"url",    "etag", "last_modified", "fetched_at", "length",
                                       "sha256", NULL};
    json_error_t jerr;
    json_t *o, *v;
    const char *k, *hex;
    size_t i;
    int ret = -1;

    memset(out, 0, sizeof(*out));
    if (len > FEEDCACHE_META_MAX) {
        set_err(err, errlen, "%s: larger than %d bytes", name, FEEDCACHE_META_MAX);
        return -1;
    }
    o = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (o == NULL) {
        set_err(err, errlen, "%s: line %d: %s", name, jerr.line, jerr.text);
        return -1;
    }
    if (!json_is_object(o)) {
        set_err(err, errlen, "%s: $: expected an object", name);
        goto out;
    }
    json_object_foreach(o, k, v)
    {
        for (i = 0; keys[i] != NULL; i++)
            if (strcmp(k, keys[i]) == 0)
                break;
        if (keys[i] == NULL) {
            set_err(err, errlen, "%s: $.%s: unknown key", name, k);
            goto out;
        }
    }
    if (get_text(o, "url", 0, out->url, FEEDCACHE_URL_MAX, name, err, errlen) == -1 ||
        get_text(o, "etag", 1, out->etag, FEEDCACHE_VALIDATOR_MAX, name, err, errlen) == -1 ||
        get_text(o, "last_modified", 1, out->last_modified, FEEDCACHE_VALIDATOR_MAX, name, err,
                 errlen) == -1)
        goto out;
    v = json_object_get(o, "fetched_at");
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > TIME_MAX) {
        set_err(err, errlen, "%s: $.fetched_at: expected Unix seconds (an integer >= 0)", name);
        goto out;
    }
    out->fetched_at = json_integer_value(v);
    v = json_object_get(o, "length");
    if (!json_is_integer(v) || json_integer_value(v) < 0) {
        set_err(err, errlen, "%s: $.length: expected an integer >= 0", name);
        goto out;
    }
    out->length = (uint64_t)json_integer_value(v);
    v = json_object_get(o, "sha256");
    hex = json_string_value(v);
    if (hex == NULL || json_string_length(v) != 64) {
        set_err(err, errlen, "%s: $.sha256: expected 64 lower-case hex digits", name);
        goto out;
    }
    for (i = 0; i < 32; i++) {
        int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            set_err(err, errlen, "%s: $.sha256: expected 64 lower-case hex digits", name);
            goto out;
        }
        out->sha256[i] = (unsigned char)(hi << 4 | lo);
    }
    ret = 0;
out:
    json_decref(o);
    if (ret == -1)
        memset(out, 0, sizeof(*out));
    return ret;
}

/* ---- files ------------------------------------------------------------- */

/* tmp, fsync, rename, fsync the directory. 0 or -1 (errno). */
static int write_atomic(const char *dir, const char *name, const char *data, size_t len)
{
    char path[PATH_MAX], tmp[PATH_MAX];
    int fd, rc = -1, saved;

    if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path) ||
        (size_t)snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", dir, name) >= sizeof(tmp)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd == -1)
        return -1;
    if (fileio_write_all(fd, data, len) == 0 && fsync(fd) == 0)
        rc = 0;
    if (close(fd) == -1)
        rc = -1;
    if (rc == 0 && rename(tmp, path) == -1)
        rc = -1;
    if (rc == 0) {
        int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd == -1 || fsync(dfd) == -1)
            rc = -1;
        if (dfd != -1)
            close(dfd);
    }
    if (rc == -1) {
        saved = errno;
        unlink(tmp);
        errno = saved;
    }
    return rc;
}

/* Read dir/name whole (a regular file of at most max bytes) into a
 * NUL-terminated malloc'd buffer. 0 ok, 1 missing, -1 error (errno). */
static int read_whole(const char *dir, const char *name, size_t max, char **out, size_t *outlen)
{
    char path[PATH_MAX];
    struct stat st;
    char *buf = NULL;
    size_t len = 0;
    int fd, saved;

    *out = NULL;
    if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd == -1)
        return errno == ENOENT ? 1 : -1;
    if (fstat(fd, &st) == -1)
        goto err;
    if (!S_ISREG(st.st_mode)) {
        errno = EINVAL;
        goto err;
    }
    if ((uint64_t)st.st_size > max) {
        errno = EFBIG;
        goto err;
    }
    buf = malloc((size_t)st.st_size + 1);
    if (buf == NULL)
        goto err;
    while (len < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + len, (size_t)st.st_size - len);
        if (n == -1 && errno == EINTR)
            continue;
        if (n == -1)
            goto err;
        if (n == 0)
            break; /* shrank: the length check of the caller refuses it */
        len += (size_t)n;
    }
    buf[len] = '\0';
    close(fd);
    *out = buf;
    *outlen = len;
    return 0;
err:
    saved = errno;
    free(buf);
    close(fd);
    errno = saved;
    return -1;
}

static int sha256(const char *data, size_t len, unsigned char out[32])
{
    unsigned int n = 0;

    return EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) == 1 && n == 32 ? 0 : -1;
}

static int meta_write(const char *dir, const struct feedcache_meta *m, char *err, size_t errlen)
{
    static const char hexdig[] = "0123456789abcdef";
    char hex[65], *text;
    json_t *o;
    size_t i;
    int rc;

    for (i = 0; i < 32; i++) {
        hex[2 * i] = hexdig[m->sha256[i] >> 4];
        hex[2 * i + 1] = hexdig[m->sha256[i] & 15];
    }
    hex[64] = '\0';
    o = json_pack("{s:s,s:s,s:s,s:I,s:I,s:s}", "url", m->url, "etag", m->etag, "last_modified",
                  m->last_modified, "fetched_at", (json_int_t)m->fetched_at, "length",
                  (json_int_t)m->length, "sha256", hex);
    text = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (text == NULL) {
        set_err(err, errlen, "%s/%s: out of memory", dir, FEEDCACHE_META);
        return -1;
    }
    rc = write_atomic(dir, FEEDCACHE_META, text, strlen(text));
    if (rc == -1)
        set_err(err, errlen, "%s/%s: %s", dir, FEEDCACHE_META, strerror(errno));
    free(text);
    return rc;
}

/* Copy an optional validator; -1 if it cannot be stored. */
static int copy_validator(char *dst, const char *v)
{
    size_t len = v != NULL ? strlen(v) : 0;

    if (len > FEEDCACHE_VALIDATOR_MAX || !text_ok(v != NULL ? v : "", len))
        return -1;
    memcpy(dst, v != NULL ? v : "", len + 1);
    return 0;
}

int feedcache_save(const char *dir, const char *url, const char *etag, const char *last_modified,
                   int64_t fetched_at, const char *body, size_t len, char *err, size_t errlen)
{
    struct feedcache_meta m;
    size_t ulen = strlen(url);

    memset(&m, 0, sizeof(m));
    if (ulen == 0 || ulen > FEEDCACHE_URL_MAX || !text_ok(url, ulen) || fetched_at < 0 ||
        fetched_at > TIME_MAX) {
        set_err(err, errlen, "%s: feed cache: bad URL or time", dir);
        return -1;
    }
    memcpy(m.url, url, ulen + 1);
    /* Validators we cannot keep are dropped: the first poll is then a
     * plain GET, which is always correct. */
    if (copy_validator(m.etag, etag) == -1)
        m.etag[0] = '\0';
    if (copy_validator(m.last_modified, last_modified) == -1)
        m.last_modified[0] = '\0';
    m.fetched_at = fetched_at;
    m.length = len;
    if (sha256(body, len, m.sha256) == -1) {
        set_err(err, errlen, "%s: feed cache: cannot hash the body", dir);
        return -1;
    }
    if (write_atomic(dir, FEEDCACHE_BODY, body, len) == -1) {
        set_err(err, errlen, "%s/%s: %s", dir, FEEDCACHE_BODY, strerror(errno));
        return -1;
    }
    return meta_write(dir, &m, err, errlen);
}

static int meta_read(const char *dir, struct feedcache_meta *m, char *err, size_t errlen)
{
    char name[PATH_MAX], *text = NULL;
    size_t len = 0;
    int r = read_whole(dir, FEEDCACHE_META, FEEDCACHE_META_MAX, &text, &len);

    snprintf(name, sizeof(name), "%s/%s", dir, FEEDCACHE_META);
    if (r == 1)
        return 1;
    if (r == -1) {
        set_err(err, errlen, "%s: %s", name, strerror(errno));
        return -1;
    }
    r = feedcache_meta_parse(text, len, name, m, err, errlen);
    free(text);
    return r;
}

int feedcache_touch(const char *dir, const char *url, const char *etag, const char *last_modified,
                    int64_t fetched_at, char *err, size_t errlen)
{
    struct feedcache_meta m;
    int r = meta_read(dir, &m, err, errlen);

    if (r != 0)
        return r;
    if (strcmp(m.url, url) != 0)
        return 1;
    if (fetched_at < m.fetched_at || fetched_at > TIME_MAX)
        return 0; /* never make the cache look older, nor absurd */
    m.fetched_at = fetched_at;
    if (etag != NULL && copy_validator(m.etag, etag) == -1)
        m.etag[0] = '\0';
    if (last_modified != NULL && copy_validator(m.last_modified, last_modified) == -1)
        m.last_modified[0] = '\0';
    return meta_write(dir, &m, err, errlen);
}

int feedcache_load(const char *dir, const char *url, size_t max, struct feedcache_meta *meta,
                   char **body, size_t *len, char *err, size_t errlen)
{
    unsigned char hash[32];
    char *buf = NULL;
    size_t n = 0;
    int r;

    *body = NULL;
    *len = 0;
    r = meta_read(dir, meta, err, errlen);
    if (r != 0)
        return r;
    if (strcmp(meta->url, url) != 0)
        return 2;
    if (meta->length > max) {
        set_err(err, errlen, "%s/%s: $.length: %llu bytes, more than the feed limit of %zu", dir,
                FEEDCACHE_META, (unsigned long long)meta->length, max);
        return -1;
    }
    r = read_whole(dir, FEEDCACHE_BODY, max, &buf, &n);
    if (r == 1)
        return 1;
    if (r == -1) {
        set_err(err, errlen, "%s/%s: %s", dir, FEEDCACHE_BODY, strerror(errno));
        return -1;
    }
    if (n != meta->length || sha256(buf, n, hash) == -1 ||
        memcmp(hash, meta->sha256, sizeof(hash)) != 0) {
        set_err(err, errlen, "%s/%s: does not match %s (length or SHA-256): not used", dir,
                FEEDCACHE_BODY, FEEDCACHE_META);
        free(buf);
        return -1;
    }
    *body = buf;
    *len = n;
    return 0;
}
