/*
 * conf.c - load and validate the JSON configuration.
 *
 * Validation is complete and strict: every object is checked against a key
 * table (unknown keys are errors), every value against its type and range,
 * files are checked to be readable (and secret files not to be readable by
 * others). The first error found is reported with its JSON path.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "conf.h"
#include "jsonconf.h"

struct conf_ctx {
    const char *name;
    const char *basedir;
    unsigned flags;
    char *err;
    size_t errlen;
    int failed;
};

static int conf_fail(struct conf_ctx *cx, const char *jpath, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int conf_fail(struct conf_ctx *cx, const char *jpath, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (cx->failed)
        return -1;
    cx->failed = 1;
    n = snprintf(cx->err, cx->errlen, "%s: %s: ", cx->name, jpath);
    if (n < 0 || (size_t)n >= cx->errlen)
        return -1;
    va_start(ap, fmt);
    vsnprintf(cx->err + n, cx->errlen - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

/* Every key of obj must be in the NULL-terminated allowed list. */
static int conf_check_keys(struct conf_ctx *cx, const char *jpath, json_t *obj,
                           const char *const *allowed)
{
    char key[200], p[256];
    int rc = jsonconf_check_keys(obj, allowed, key, sizeof(key));

    if (rc == -1)
        return conf_fail(cx, jpath, "expected an object, got %s", jsonconf_type_name(obj));
    if (rc == 1) {
        snprintf(p, sizeof(p), "%s.%s", jpath, key);
        return conf_fail(cx, p, "unknown key");
    }
    return 0;
}

static void jp(char *buf, size_t len, const char *base, const char *key)
{
    snprintf(buf, len, "%s.%s", base, key);
}

static int get_string(struct conf_ctx *cx, json_t *obj, const char *base, const char *key,
                      int required, const char *def, char **out)
{
    json_t *v = json_object_get(obj, key);
    char p[256];

    jp(p, sizeof(p), base, key);
    if (v == NULL) {
        if (required)
            return conf_fail(cx, p, "required key is missing");
        *out = def != NULL ? strdup(def) : NULL;
        return 0;
    }
    if (!json_is_string(v))
        return conf_fail(cx, p, "expected a string, got %s", jsonconf_type_name(v));
    if (json_string_length(v) != strlen(json_string_value(v)))
        return conf_fail(cx, p, "string contains a NUL byte");
    *out = strdup(json_string_value(v));
    return 0;
}

static int get_bool(struct conf_ctx *cx, json_t *obj, const char *base, const char *key, int def,
                    int *out)
{
    json_t *v = json_object_get(obj, key);
    char p[256];

    if (v == NULL) {
        *out = def;
        return 0;
    }
    jp(p, sizeof(p), base, key);
    if (!json_is_boolean(v))
        return conf_fail(cx, p, "expected true or false, got %s", jsonconf_type_name(v));
    *out = json_is_true(v);
    return 0;
}

static int get_int(struct conf_ctx *cx, json_t *obj, const char *base, const char *key,
                   long long min, long long max, long long def, long long *out)
{
    json_t *v = json_object_get(obj, key);
    char p[256];
    long long n;

    if (v == NULL) {
        *out = def;
        return 0;
    }
    jp(p, sizeof(p), base, key);
    if (!json_is_integer(v))
        return conf_fail(cx, p, "expected an integer %lld..%lld, got %s", min, max,
                         jsonconf_type_name(v));
    n = json_integer_value(v);
    if (n < min || n > max)
        return conf_fail(cx, p, "expected an integer %lld..%lld, got %lld", min, max, n);
    *out = n;
    return 0;
}

int conf_duration_parse(const char *s, uint64_t *ms)
{
    uint64_t n = 0, mult;
    const char *p = s;

    if (!isdigit((unsigned char)*p))
        return -1;
    while (isdigit((unsigned char)*p)) {
        if (n > UINT64_MAX / 10 - 10)
            return -1;
        n = n * 10 + (uint64_t)(*p - '0');
        p++;
    }
    if (strcmp(p, "ms") == 0)
        mult = 1;
    else if (strcmp(p, "s") == 0)
        mult = 1000;
    else if (strcmp(p, "m") == 0)
        mult = 60 * 1000;
    else if (strcmp(p, "h") == 0)
        mult = 3600 * 1000;
    else
        return -1;
    if (n > UINT64_MAX / mult)
        return -1;
    *ms = n * mult;
    return 0;
}

int conf_size_parse(const char *s, uint64_t *bytes)
{
    uint64_t n = 0, mult = 1;
    const char *p = s;

    if (!isdigit((unsigned char)*p))
        return -1;
    while (isdigit((unsigned char)*p)) {
        if (n > UINT64_MAX / 10 - 10)
            return -1;
        n = n * 10 + (uint64_t)(*p - '0');
        p++;
    }
    if (*p == '\0' || strcmp(p, "b") == 0)
        mult = 1;
    else if (strcmp(p, "k") == 0)
        mult = 1024;
    else if (strcmp(p, "m") == 0)
        mult = 1024 * 1024;
    else if (strcmp(p, "g") == 0)
        mult = 1024ULL * 1024 * 1024;
    else
        return -1;
    if (n > UINT64_MAX / mult)
        return -1;
    *bytes = n * mult;
    return 0;
}

/* A duration: "10s" etc., or a number of seconds. min/max in ms. */
static int get_duration(struct conf_ctx *cx, json_t *obj, const char *base, const char *key,
                        uint64_t min, uint64_t max, uint64_t def, uint64_t *out)
{
    json_t *v = json_object_get(obj, key);
    char p[256];
    uint64_t ms;

    if (v == NULL) {
        *out = def;
        return 0;
    }
    jp(p, sizeof(p), base, key);
    if (json_is_integer(v)) {
        if (json_integer_value(v) < 0 || json_integer_value(v) > 1000000000)
            return conf_fail(cx, p, "expected a duration, got %lld", json_integer_value(v));
        ms = (uint64_t)json_integer_value(v) * 1000;
    } else if (json_is_string(v)) {
        if (conf_duration_parse(json_string_value(v), &ms) == -1)
            return conf_fail(
                cx, p, "expected a duration like \"500ms\", \"10s\", \"2m\", \"1h\", got \"%s\"",
                json_string_value(v));
    } else {
        return conf_fail(cx, p, "expected a duration (string or seconds), got %s",
                         jsonconf_type_name(v));
    }
    if (ms < min || ms > max)
        return conf_fail(cx, p, "duration out of range %llums..%llums", (unsigned long long)min,
                         (unsigned long long)max);
    *out = ms;
    return 0;
}

static int get_size(struct conf_ctx *cx, json_t *obj, const char *base, const char *key,
                    uint64_t min, uint64_t max, uint64_t def, uint64_t *out)
{
    json_t *v = json_object_get(obj, key);
    char p[256];
    uint64_t n;

    if (v == NULL) {
        *out = def;
        return 0;
    }
    jp(p, sizeof(p), base, key);
    if (json_is_integer(v)) {
        if (json_integer_value(v) < 0)
            return conf_fail(cx, p, "expected a size, got %lld", json_integer_value(v));
        n = (uint64_t)json_integer_value(v);
    } else if (json_is_string(v)) {
        if (conf_size_parse(json_string_value(v), &n) == -1)
            return conf_fail(cx, p, "expected a size like \"16k\", \"1m\", \"1g\", got \"%s\"",
                             json_string_value(v));
    } else {
        return conf_fail(cx, p, "expected a size (string or bytes), got %s", jsonconf_type_name(v));
    }
    if (n < min || n > max)
        return conf_fail(cx, p, "size out of range %llu..%llu bytes", (unsigned long long)min,
                         (unsigned long long)max);
    *out = n;
    return 0;
}

/* Resolve a relative path against the config's directory. */
static char *conf_path(struct conf_ctx *cx, const char *p)
{
    char *out;
    size_t n;

    if (p[0] == '/' || cx->basedir == NULL || cx->basedir[0] == '\0')
        return strdup(p);
    n = strlen(cx->basedir) + strlen(p) + 2;
    out = malloc(n);
    if (out != NULL)
        snprintf(out, n, "%s/%s", cx->basedir, p);
    return out;
}

/* A file path value: resolved, and checked to be a readable regular file.
 * secret: must not be readable or writable by group or others. */
static int get_file(struct conf_ctx *cx, json_t *obj, const char *base, const char *key,
                    int required, int secret, char **out)
{
    char *raw = NULL, *full;
    char p[256];
    struct stat st;

    if (get_string(cx, obj, base, key, required, NULL, &raw) == -1)
        return -1;
    if (raw == NULL) {
        *out = NULL;
        return 0;
    }
    jp(p, sizeof(p), base, key);
    if (raw[0] == '\0') {
        free(raw);
        return conf_fail(cx, p, "expected a file path, got an empty string");
    }
    full = conf_path(cx, raw);
    free(raw);
    if (full == NULL)
        return conf_fail(cx, p, "out of memory");
    *out = full;
    if (cx->flags & CONF_NO_FS)
        return 0;
    if (stat(full, &st) == -1)
        return conf_fail(cx, p, "cannot read \"%s\": %s", full, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return conf_fail(cx, p, "\"%s\" is not a regular file", full);
    if (access(full, R_OK) == -1)
        return conf_fail(cx, p, "cannot read \"%s\": %s", full, strerror(errno));
    if (secret && (st.st_mode & 077))
        return conf_fail(cx, p,
                         "\"%s\" holds a private key and must not be accessible by group "
                         "or others (chmod 600)",
                         full);
    return 0;
}

/* "1.2.3.4:443" or "[::1]:443". */
static int parse_address(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
    char host[INET6_ADDRSTRLEN + 1];
    const char *colon, *hs, *he;
    char *end;
    long port;

    memset(ss, 0, sizeof(*ss));
    if (s[0] == '[') {
        hs = s + 1;
        he = strchr(hs, ']');
        if (he == NULL || he[1] != ':')
            return -1;
        colon = he + 1;
    } else {
        hs = s;
        colon = strrchr(s, ':');
        if (colon == NULL)
            return -1;
        he = colon;
    }
    if ((size_t)(he - hs) >= sizeof(host) || he == hs)
        return -1;
    memcpy(host, hs, (size_t)(he - hs));
    host[he - hs] = '\0';
    if (!isdigit((unsigned char)colon[1]))
        return -1;
    errno = 0;
    port = strtol(colon + 1, &end, 10);
    if (errno != 0 || *end != '\0' || port < 1 || port > 65535)
        return -1;
    if (s[0] == '[') {
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
        if (inet_pton(AF_INET6, host, &a6->sin6_addr) != 1)
            return -1;
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        *len = sizeof(*a6);
    } else {
        struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
        if (inet_pton(AF_INET, host, &a4->sin_addr) != 1)
            return -1;
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        *len = sizeof(*a4);
    }
    return 0;
}

static int valid_hostname(const char *h)
{
    size_t i, n = strlen(h);

    if (n == 0 || n > 253)
        return 0;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)h[i];
        if (!(isalnum(c) || c == '-' || c == '.' || c == '_'))
            return 0;
    }
    return 1;
}

static int parse_upstream(struct conf_ctx *cx, const char *p, struct conf_route *r)
{
    const char *s = r->upstream, *hs, *he, *portp;
    size_t n;
    char *end;
    long port;

    if (strncmp(s, "http://", 7) == 0) {
        r->upstream_tls = 0;
        hs = s + 7;
    } else if (strncmp(s, "https://", 8) == 0) {
        r->upstream_tls = 1;
        hs = s + 8;
    } else {
        return conf_fail(cx, p,
                         "expected \"http://host:port\" or \"https://host:port\", got \"%s\"", s);
    }
    if (*hs == '[') {
        he = strchr(hs, ']');
        if (he == NULL)
            return conf_fail(cx, p, "unterminated IPv6 literal in \"%s\"", s);
        portp = he + 1;
        hs++;
    } else {
        he = hs + strcspn(hs, ":/");
        portp = he;
    }
    n = (size_t)(he - hs);
    if (n == 0)
        return conf_fail(cx, p, "no host in \"%s\"", s);
    r->upstream_host = strndup(hs, n);
    if (*portp == ':') {
        errno = 0;
        port = strtol(portp + 1, &end, 10);
        if (!isdigit((unsigned char)portp[1]) || errno != 0 || port < 1 || port > 65535)
            return conf_fail(cx, p, "bad port in \"%s\"", s);
        portp = end;
    } else {
        port = r->upstream_tls ? 443 : 80;
    }
    if (*portp == '/' && portp[1] == '\0')
        portp++;
    if (*portp != '\0')
        return conf_fail(cx, p, "expected \"scheme://host:port\" without a path, got \"%s\"", s);
    r->upstream_port = (int)port;
    if (!valid_hostname(r->upstream_host) && strchr(r->upstream_host, ':') == NULL)
        return conf_fail(cx, p, "bad host name in \"%s\"", s);
    if (cx->flags & CONF_NO_FS)
        return 0;
    {
        struct addrinfo hints, *res = NULL;
        char ports[8];
        int rc;

        memset(&hints, 0, sizeof(hints));
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_family = AF_UNSPEC;
        snprintf(ports, sizeof(ports), "%d", r->upstream_port);
        /* Resolved once, at load: a reload (off the worker loops) re-resolves. */
        rc = getaddrinfo(r->upstream_host, ports, &hints, &res);
        if (rc != 0 || res == NULL)
            return conf_fail(cx, p, "cannot resolve \"%s\": %s", r->upstream_host,
                             gai_strerror(rc));
        memcpy(&r->upstream_addr, res->ai_addr, res->ai_addrlen);
        r->upstream_addrlen = res->ai_addrlen;
        freeaddrinfo(res);
    }
    return 0;
}

static int valid_route_name(const char *s)
{
    size_t i;

    if (s[0] == '\0' || strlen(s) > 64)
        return 0;
    for (i = 0; s[i] != '\0'; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!(islower(c) || isdigit(c) || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

/* Read a small secret file (mode 0600/0400) into a string without the
 * trailing newline. */
static int read_secret_file(struct conf_ctx *cx, const char *jpath, const char *file, char **out)
{
    char buf[4096];
    FILE *f;
    size_t n;

    if (cx->flags & CONF_NO_FS) {
        *out = strdup("fuzz");
        return 0;
    }
    f = fopen(file, "r");
    if (f == NULL)
        return conf_fail(cx, jpath, "cannot read \"%s\": %s", file, strerror(errno));
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
        buf[--n] = '\0';
    if (n == 0 || n >= sizeof(buf) - 1) {
        OPENSSL_cleanse(buf, sizeof(buf));
        return conf_fail(cx, jpath, "\"%s\" must hold one secret of 1-4094 bytes", file);
    }
    *out = strdup(buf);
    OPENSSL_cleanse(buf, sizeof(buf));
    return 0;
}

static int get_string_list(struct conf_ctx *cx, json_t *obj, const char *base, const char *key,
                           char ***out, size_t *nout)
{
    json_t *v = json_object_get(obj, key), *e;
    char p[256];
    size_t i;

    *out = NULL;
    *nout = 0;
    if (v == NULL)
        return 0;
    jp(p, sizeof(p), base, key);
    if (!json_is_array(v) || json_array_size(v) > 64)
        return conf_fail(cx, p, "expected an array of at most 64 strings");
    *out = calloc(json_array_size(v) + 1, sizeof(char *));
    if (*out == NULL)
        return conf_fail(cx, p, "out of memory");
    json_array_foreach(v, i, e)
    {
        if (!json_is_string(e) || json_string_length(e) == 0)
            return conf_fail(cx, p, "expected non-empty strings, item %zu is not", i);
        (*out)[i] = strdup(json_string_value(e));
        *nout = i + 1;
    }
    return 0;
}

static int parse_provider(struct conf_ctx *cx, struct conf *c, json_t *o, size_t idx,
                          struct conf_provider *pv)
{
    static const char *const keys[] = {
        "name", "issuer",     "client_id",        "client_secret_file", "scopes",
        "ca",   "clock_skew", "jwks_min_refresh", "bearer_audiences",   "mfa_acr",
        NULL};
    char base[64], p[256], *secret_file = NULL;
    size_t i;
    int rc;

    snprintf(base, sizeof(base), "$.identity.providers[%zu]", idx);
    if (conf_check_keys(cx, base, o, keys) == -1 ||
        get_string(cx, o, base, "name", 1, NULL, &pv->name) == -1)
        return -1;
    jp(p, sizeof(p), base, "name");
    if (!valid_route_name(pv->name))
        return conf_fail(cx, p, "expected 1-64 characters of [a-z0-9_-], got \"%s\"", pv->name);
    for (i = 0; i < idx; i++)
        if (strcmp(c->providers[i].name, pv->name) == 0)
            return conf_fail(cx, p, "duplicate provider name \"%s\"", pv->name);
    if (get_string(cx, o, base, "issuer", 1, NULL, &pv->issuer) == -1)
        return -1;
    jp(p, sizeof(p), base, "issuer");
    if ((strncmp(pv->issuer, "https://", 8) != 0 && strncmp(pv->issuer, "http://", 7) != 0) ||
        strpbrk(pv->issuer, " \"<>?#") != NULL)
        return conf_fail(cx, p, "expected an http(s):// URL without query or fragment, got \"%s\"",
                         pv->issuer);
    if (get_string(cx, o, base, "client_id", 1, NULL, &pv->client_id) == -1 ||
        get_file(cx, o, base, "client_secret_file", 1, 1, &secret_file) == -1)
        return -1;
    jp(p, sizeof(p), base, "client_secret_file");
    rc = read_secret_file(cx, p, secret_file, &pv->client_secret);
    free(secret_file);
    if (rc == -1)
        return -1;
    if (get_string(cx, o, base, "scopes", 0, "openid email profile", &pv->scopes) == -1 ||
        get_file(cx, o, base, "ca", 0, 0, &pv->ca) == -1 ||
        get_duration(cx, o, base, "clock_skew", 0, 600 * 1000, 60 * 1000, &pv->clock_skew_ms) ==
            -1 ||
        get_duration(cx, o, base, "jwks_min_refresh", 1000, 24 * 3600 * 1000ULL, 30 * 1000,
                     &pv->jwks_min_refresh_ms) == -1 ||
        get_string_list(cx, o, base, "bearer_audiences", &pv->bearer_audiences,
                        &pv->nbearer_audiences) == -1 ||
        get_string(cx, o, base, "mfa_acr", 0, "", &pv->mfa_acr) == -1)
        return -1;
    jp(p, sizeof(p), base, "scopes");
    if (strstr(pv->scopes, "openid") == NULL)
        return conf_fail(cx, p, "must include \"openid\"");
    if (pv->nbearer_audiences == 0) {
        pv->bearer_audiences = calloc(2, sizeof(char *));
        pv->bearer_audiences[0] = strdup(pv->client_id);
        pv->nbearer_audiences = 1;
    }
    return 0;
}

static int parse_identity(struct conf_ctx *cx, struct conf *c, json_t *o)
{
    static const char *const keys[] = {"providers", "session", "assertion", NULL};
    static const char *const skeys[] = {"cookie_name",  "keys",          "lifetime",
                                        "idle_timeout", "login_timeout", NULL};
    static const char *const akeys[] = {"keys_dir", "issuer", "lifetime", "groups_budget", NULL};
    json_t *v, *e, *empty = json_object();
    long long n;
    size_t i;
    int rc = -1;

    if (conf_check_keys(cx, "$.identity", o, keys) == -1)
        goto out;
    v = json_object_get(o, "providers");
    if (v == NULL || !json_is_array(v) || json_array_size(v) == 0 || json_array_size(v) > 16) {
        conf_fail(cx, "$.identity.providers", "expected an array of 1-16 provider objects");
        goto out;
    }
    c->providers = calloc(json_array_size(v), sizeof(*c->providers));
    json_array_foreach(v, i, e)
    {
        c->nproviders = i + 1;
        if (parse_provider(cx, c, e, i, &c->providers[i]) == -1)
            goto out;
    }
    v = json_object_get(o, "session");
    if (v == NULL)
        v = empty;
    if (conf_check_keys(cx, "$.identity.session", v, skeys) == -1 ||
        get_string(cx, v, "$.identity.session", "cookie_name", 0, "zt_session",
                   &c->session_cookie_name) == -1)
        goto out;
    for (i = 0; c->session_cookie_name[i] != '\0'; i++) {
        unsigned char ch = (unsigned char)c->session_cookie_name[i];
        if (!(isalnum(ch) || ch == '_' || ch == '-') || i >= 48) {
            conf_fail(cx, "$.identity.session.cookie_name",
                      "expected 1-48 characters of [A-Za-z0-9_-]");
            goto out;
        }
    }
    if (c->session_cookie_name[0] == '\0') {
        conf_fail(cx, "$.identity.session.cookie_name",
                  "expected 1-48 characters of [A-Za-z0-9_-]");
        goto out;
    }
    if (get_string(cx, v, "$.identity.session", "keys", 1, NULL, &c->session_keys) == -1)
        goto out;
    {
        char *full = conf_path(cx, c->session_keys);
        free(c->session_keys);
        c->session_keys = full;
    }
    if (get_duration(cx, v, "$.identity.session", "lifetime", 1000, 30 * 24 * 3600 * 1000ULL,
                     12 * 3600 * 1000ULL, &c->session_lifetime_ms) == -1 ||
        get_duration(cx, v, "$.identity.session", "idle_timeout", 1000, 30 * 24 * 3600 * 1000ULL,
                     3600 * 1000ULL, &c->session_idle_ms) == -1 ||
        get_duration(cx, v, "$.identity.session", "login_timeout", 10 * 1000, 3600 * 1000ULL,
                     600 * 1000ULL, &c->login_timeout_ms) == -1)
        goto out;
    v = json_object_get(o, "assertion");
    if (v == NULL)
        v = empty;
    if (conf_check_keys(cx, "$.identity.assertion", v, akeys) == -1 ||
        get_string(cx, v, "$.identity.assertion", "keys_dir", 1, NULL, &c->assertion_key) == -1 ||
        get_string(cx, v, "$.identity.assertion", "issuer", 0, "ztproxy", &c->assertion_issuer) ==
            -1 ||
        get_duration(cx, v, "$.identity.assertion", "lifetime", 1000, 60 * 1000, 60 * 1000,
                     &c->assertion_lifetime_ms) == -1 ||
        get_int(cx, v, "$.identity.assertion", "groups_budget", 0, 16384, 2048, &n) == -1)
        goto out;
    c->assertion_groups_budget = (size_t)n;
    {
        char *full = conf_path(cx, c->assertion_key);
        free(c->assertion_key);
        c->assertion_key = full;
    }
    rc = 0;
out:
    json_decref(empty);
    return rc;
}

static int parse_route_auth(struct conf_ctx *cx, struct conf *c, json_t *o, const char *base,
                            struct conf_route *r)
{
    static const char *const keys[] = {
        "provider", "mode", "bearer_bound", "user_header", "max_auth_age", "require_mfa", NULL};
    json_t *a = json_object_get(o, "auth"), *empty = json_object();
    char ab[96], p[256], *s = NULL;
    size_t i;
    int rc = -1;

    r->auth_provider = -1;
    r->auth_mode = CONF_AUTH_NONE;
    snprintf(ab, sizeof(ab), "%s.auth", base);
    if (a == NULL)
        a = empty;
    if (conf_check_keys(cx, ab, a, keys) == -1)
        goto out;
    if (get_string(cx, a, ab, "mode", 0, c->nproviders > 0 ? "any" : "none", &s) == -1)
        goto out;
    jp(p, sizeof(p), ab, "mode");
    if (strcmp(s, "none") == 0)
        r->auth_mode = CONF_AUTH_NONE;
    else if (strcmp(s, "session") == 0)
        r->auth_mode = CONF_AUTH_SESSION;
    else if (strcmp(s, "bearer") == 0)
        r->auth_mode = CONF_AUTH_BEARER;
    else if (strcmp(s, "any") == 0)
        r->auth_mode = CONF_AUTH_ANY;
    else {
        conf_fail(cx, p, "expected \"session\", \"bearer\", \"any\" or \"none\", got \"%s\"", s);
        goto out;
    }
    if (r->auth_mode != CONF_AUTH_NONE && c->nproviders == 0) {
        conf_fail(cx, p, "needs an identity provider in $.identity.providers");
        goto out;
    }
    free(s);
    s = NULL;
    if (get_string(cx, a, ab, "provider", 0, NULL, &s) == -1)
        goto out;
    if (r->auth_mode != CONF_AUTH_NONE) {
        r->auth_provider = 0;
        if (s != NULL) {
            r->auth_provider = -1;
            for (i = 0; i < c->nproviders; i++)
                if (strcmp(c->providers[i].name, s) == 0)
                    r->auth_provider = (int)i;
            if (r->auth_provider == -1) {
                jp(p, sizeof(p), ab, "provider");
                conf_fail(cx, p, "unknown provider \"%s\"", s);
                goto out;
            }
        }
    }
    free(s);
    s = NULL;
    if (get_bool(cx, a, ab, "bearer_bound", 0, &r->bearer_bound) == -1 ||
        get_string(cx, a, ab, "user_header", 0, "email", &s) == -1)
        goto out;
    if (strcmp(s, "email") == 0) {
        r->user_header = CONF_USER_EMAIL;
    } else if (strcmp(s, "subject") == 0) {
        r->user_header = CONF_USER_SUBJECT;
    } else {
        jp(p, sizeof(p), ab, "user_header");
        conf_fail(cx, p, "expected \"email\" or \"subject\", got \"%s\"", s);
        goto out;
    }
    if (get_duration(cx, a, ab, "max_auth_age", 0, 30 * 24 * 3600 * 1000ULL, 0,
                     &r->max_auth_age_ms) == -1 ||
        get_bool(cx, a, ab, "require_mfa", 0, &r->require_mfa) == -1)
        goto out;
    rc = 0;
out:
    free(s);
    json_decref(empty);
    return rc;
}

/* conf_route_match()'s key of a host: FNV-1a of its lower-case bytes,
 * the length in the low byte. fold: host may hold upper case (a request's
 * Host); route hosts are stored lower case already. */
static uint32_t route_key(const char *host, size_t len, int fold)
{
    uint32_t h = 2166136261u;
    size_t i;

    for (i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)host[i];
        if (fold && ch >= 'A' && ch <= 'Z')
            ch = (unsigned char)(ch - 'A' + 'a');
        h = (h ^ ch) * 16777619u;
    }
    return (h & ~(uint32_t)0xff) | (uint32_t)(len & 0xff);
}

/* Build conf_route_match()'s hash table: at least twice as many buckets as
 * routes. Routes of one host share a chain, in file order. */
static int route_index(struct conf *c)
{
    size_t i, nb = 16;

    while (nb < 2 * c->nroutes)
        nb *= 2;
    c->route_keys = calloc(c->nroutes, sizeof(*c->route_keys));
    c->route_next = calloc(c->nroutes, sizeof(*c->route_next));
    c->route_bucket = calloc(nb, sizeof(*c->route_bucket));
    if (c->route_keys == NULL || c->route_next == NULL || c->route_bucket == NULL)
        return -1;
    c->route_mask = (uint32_t)(nb - 1);
    for (i = c->nroutes; i-- > 0;) {
        uint32_t k = route_key(c->routes[i].host, strlen(c->routes[i].host), 0);
        uint32_t *b = &c->route_bucket[(k >> 8) & c->route_mask];

        c->route_keys[i] = k;
        c->route_next[i] = *b;
        *b = (uint32_t)(i + 1);
    }
    return 0;
}

static int parse_route(struct conf_ctx *cx, struct conf *c, json_t *o, size_t idx,
                       struct conf_route *r)
{
    static const char *const keys[] = {
        "name",         "host",          "path_prefix",    "upstream",
        "upstream_tls", "max_body_size", "websocket",      "allow_encoded_slash",
        "pool_size",    "auth",          "forward_groups", NULL};
    static const char *const tkeys[] = {"ca", "verify", "server_name", NULL};
    char base[64], p[256], *prefix = NULL;
    json_t *t;
    long long n;
    size_t i;

    snprintf(base, sizeof(base), "$.routes[%zu]", idx);
    if (conf_check_keys(cx, base, o, keys) == -1)
        return -1;
    if (get_string(cx, o, base, "name", 1, NULL, &r->name) == -1)
        return -1;
    jp(p, sizeof(p), base, "name");
    if (!valid_route_name(r->name))
        return conf_fail(cx, p, "expected 1-64 characters of [a-z0-9_-], got \"%s\"", r->name);
    for (i = 0; i < idx; i++)
        if (strcmp(c->routes[i].name, r->name) == 0)
            return conf_fail(cx, p, "duplicate route name \"%s\" (also $.routes[%zu])", r->name, i);
    if (get_string(cx, o, base, "host", 1, NULL, &r->host) == -1)
        return -1;
    jp(p, sizeof(p), base, "host");
    for (i = 0; r->host[i] != '\0'; i++)
        r->host[i] = (char)tolower((unsigned char)r->host[i]);
    if (!valid_hostname(r->host))
        return conf_fail(cx, p, "expected a host name without port, got \"%s\"", r->host);

    if (get_string(cx, o, base, "path_prefix", 0, "/", &prefix) == -1)
        return -1;
    jp(p, sizeof(p), base, "path_prefix");
    if (prefix[0] != '/') {
        free(prefix);
        return conf_fail(cx, p, "expected a path starting with \"/\"");
    }
    for (i = 0; prefix[i] != '\0'; i++) {
        unsigned char ch = (unsigned char)prefix[i];
        if (ch <= 0x20 || ch >= 0x7f || ch == '%' || ch == '?' || ch == '#' ||
            (ch == '/' && prefix[i + 1] == '/')) {
            free(prefix);
            return conf_fail(cx, p, "expected a normalised path (no %%, ?, #, //, spaces)");
        }
    }
    /* Stored without a trailing slash so matching is on whole segments. */
    r->path_prefix_len = strlen(prefix);
    while (r->path_prefix_len > 1 && prefix[r->path_prefix_len - 1] == '/')
        prefix[--r->path_prefix_len] = '\0';
    r->path_prefix = prefix;
    for (i = 0; i < idx; i++)
        if (strcmp(c->routes[i].host, r->host) == 0 &&
            strcmp(c->routes[i].path_prefix, r->path_prefix) == 0)
            return conf_fail(cx, p, "host \"%s\" with path prefix \"%s\" is already $.routes[%zu]",
                             r->host, r->path_prefix, i);

    if (get_string(cx, o, base, "upstream", 1, NULL, &r->upstream) == -1)
        return -1;
    jp(p, sizeof(p), base, "upstream");
    if (parse_upstream(cx, p, r) == -1)
        return -1;

    r->upstream_verify = 1;
    t = json_object_get(o, "upstream_tls");
    if (t != NULL) {
        char tb[96];
        snprintf(tb, sizeof(tb), "%s.upstream_tls", base);
        if (conf_check_keys(cx, tb, t, tkeys) == -1)
            return -1;
        if (!r->upstream_tls)
            return conf_fail(cx, tb, "only valid with an https:// upstream");
        if (get_file(cx, t, tb, "ca", 0, 0, &r->upstream_ca) == -1 ||
            get_bool(cx, t, tb, "verify", 1, &r->upstream_verify) == -1 ||
            get_string(cx, t, tb, "server_name", 0, NULL, &r->upstream_server_name) == -1)
            return -1;
    }
    if (r->upstream_server_name == NULL)
        r->upstream_server_name = strdup(r->upstream_host);

    if (get_size(cx, o, base, "max_body_size", 0, UINT64_MAX, c->limit_body_size,
                 &r->max_body_size) == -1 ||
        get_bool(cx, o, base, "websocket", 1, &r->websocket) == -1 ||
        get_bool(cx, o, base, "allow_encoded_slash", 0, &r->allow_encoded_slash) == -1 ||
        get_int(cx, o, base, "pool_size", 0, 4096, 64, &n) == -1)
        return -1;
    r->pool_size = (int)n;
    /* Which of the user's groups the upstream learns (X-ZT-Groups, the
     * assertion): by default only those the route's rules name. */
    {
        char *fg = NULL;
        int bad;

        if (get_string(cx, o, base, "forward_groups", 0, "referenced", &fg) == -1)
            return -1;
        jp(p, sizeof(p), base, "forward_groups");
        if (fg == NULL)
            return conf_fail(cx, p, "out of memory");
        r->forward_groups_all = strcmp(fg, "all") == 0;
        bad = !r->forward_groups_all && strcmp(fg, "referenced") != 0;
        if (bad)
            conf_fail(cx, p, "expected \"referenced\" or \"all\", got \"%s\"", fg);
        free(fg);
        if (bad)
            return -1;
    }
    return parse_route_auth(cx, c, o, base, r);
}

/* "10.0.0.0/8", "2001:db8::/32" or a bare address (a single host). Bits set
 * after the prefix are an error: they are almost always a typo. */
static int parse_cidr(const char *s, struct conf_cidr *out)
{
    char host[INET6_ADDRSTRLEN + 1];
    const char *slash = strchr(s, '/');
    size_t hl = slash != NULL ? (size_t)(slash - s) : strlen(s);
    unsigned max, i;
    long bits;
    char *end;

    memset(out, 0, sizeof(*out));
    if (hl == 0 || hl >= sizeof(host))
        return -1;
    memcpy(host, s, hl);
    host[hl] = '\0';
    if (inet_pton(AF_INET, host, out->addr) == 1) {
        out->family = AF_INET;
        max = 32;
    } else if (inet_pton(AF_INET6, host, out->addr) == 1) {
        out->family = AF_INET6;
        max = 128;
    } else {
        return -1;
    }
    out->bits = max;
    if (slash != NULL) {
        if (!isdigit((unsigned char)slash[1]))
            return -1;
        errno = 0;
        bits = strtol(slash + 1, &end, 10);
        if (errno != 0 || *end != '\0' || bits < 0 || bits > (long)max)
            return -1;
        out->bits = (unsigned)bits;
    }
    for (i = out->bits; i < max; i++)
        if (out->addr[i / 8] & (0x80u >> (i % 8)))
            return -2;
    return 0;
}

static int parse_policy(struct conf_ctx *cx, struct conf *c, json_t *o)
{
    static const char *const keys[] = {"rules",     "directory",    "geoip", "trusted_proxies",
                                       "audit_log", "deny_details", NULL};
    static const char *const dkeys[] = {"file", "url", "poll", "timeout", "ca", "bearer_token_file",
                                        NULL};
    json_t *d, *v, *e;
    char p[256];
    size_t i;

    if (conf_check_keys(cx, "$.policy", o, keys) == -1 ||
        get_file(cx, o, "$.policy", "rules", 1, 0, &c->policy_rules) == -1)
        return -1;

    d = json_object_get(o, "directory");
    if (d != NULL) {
        if (conf_check_keys(cx, "$.policy.directory", d, dkeys) == -1)
            return -1;
        if ((json_object_get(d, "file") != NULL) == (json_object_get(d, "url") != NULL))
            return conf_fail(cx, "$.policy.directory",
                             "expected exactly one of \"file\" or \"url\"");
        if (json_object_get(d, "file") != NULL) {
            static const char *const url_only[] = {"poll", "timeout", "ca", "bearer_token_file",
                                                   NULL};
            for (i = 0; url_only[i] != NULL; i++) {
                if (json_object_get(d, url_only[i]) != NULL) {
                    jp(p, sizeof(p), "$.policy.directory", url_only[i]);
                    return conf_fail(cx, p, "only valid with \"url\"");
                }
            }
            if (get_file(cx, d, "$.policy.directory", "file", 1, 0, &c->policy_dir_file) == -1)
                return -1;
        } else {
            if (get_string(cx, d, "$.policy.directory", "url", 1, NULL, &c->policy_dir_url) == -1)
                return -1;
            if ((strncmp(c->policy_dir_url, "https://", 8) != 0 &&
                 strncmp(c->policy_dir_url, "http://", 7) != 0) ||
                strpbrk(c->policy_dir_url, " \"<>\r\n\t") != NULL)
                return conf_fail(cx, "$.policy.directory.url",
                                 "expected an http:// or https:// URL, got \"%s\"",
                                 c->policy_dir_url);
            if (get_duration(cx, d, "$.policy.directory", "poll", 1000, 24 * 3600 * 1000ULL,
                             30 * 1000, &c->policy_dir_poll_ms) == -1 ||
                get_duration(cx, d, "$.policy.directory", "timeout", 100, 600 * 1000, 10 * 1000,
                             &c->policy_dir_timeout_ms) == -1 ||
                get_file(cx, d, "$.policy.directory", "ca", 0, 0, &c->policy_dir_ca) == -1 ||
                get_file(cx, d, "$.policy.directory", "bearer_token_file", 0, 1,
                         &c->policy_dir_token_file) == -1)
                return -1;
        }
    }

    if (get_file(cx, o, "$.policy", "geoip", 0, 0, &c->policy_geoip) == -1)
        return -1;

    v = json_object_get(o, "trusted_proxies");
    if (v != NULL) {
        if (!json_is_array(v) || json_array_size(v) > 64)
            return conf_fail(cx, "$.policy.trusted_proxies",
                             "expected an array of at most 64 addresses or CIDRs");
        c->policy_trusted_proxies = calloc(json_array_size(v) + 1, sizeof(struct conf_cidr));
        if (c->policy_trusted_proxies == NULL)
            return conf_fail(cx, "$.policy.trusted_proxies", "out of memory");
        json_array_foreach(v, i, e)
        {
            int rc;

            snprintf(p, sizeof(p), "$.policy.trusted_proxies[%zu]", i);
            if (!json_is_string(e))
                return conf_fail(cx, p, "expected a string, got %s", jsonconf_type_name(e));
            rc = parse_cidr(json_string_value(e), &c->policy_trusted_proxies[i]);
            if (rc == -2)
                return conf_fail(cx, p, "\"%s\" has bits set after the prefix",
                                 json_string_value(e));
            if (rc == -1)
                return conf_fail(cx, p,
                                 "expected an IPv4 or IPv6 address or CIDR (\"10.0.0.0/8\"), got "
                                 "\"%s\"",
                                 json_string_value(e));
            c->npolicy_trusted_proxies = i + 1;
        }
    }

    if (get_string(cx, o, "$.policy", "audit_log", 0, "stdout", &c->policy_audit_log) == -1)
        return -1;
    if (c->policy_audit_log[0] == '\0')
        return conf_fail(cx, "$.policy.audit_log",
                         "expected a file path, \"stdout\", \"stderr\" or \"off\"");
    if (strcmp(c->policy_audit_log, "stdout") != 0 && strcmp(c->policy_audit_log, "stderr") != 0 &&
        strcmp(c->policy_audit_log, "off") != 0) {
        char *full = conf_path(cx, c->policy_audit_log);
        if (full == NULL)
            return conf_fail(cx, "$.policy.audit_log", "out of memory");
        free(c->policy_audit_log);
        c->policy_audit_log = full;
    }
    return get_bool(cx, o, "$.policy", "deny_details", 0, &c->policy_deny_details);
}

/* A folder path value: resolved, and checked to be a readable directory. */
static int get_dir(struct conf_ctx *cx, json_t *obj, const char *base, const char *key, char **out)
{
    char *raw = NULL;
    char p[256];
    struct stat st;

    *out = NULL;
    if (get_string(cx, obj, base, key, 0, NULL, &raw) == -1 || raw == NULL)
        return cx->failed ? -1 : 0;
    jp(p, sizeof(p), base, key);
    if (raw[0] == '\0') {
        free(raw);
        return conf_fail(cx, p, "expected a folder path, got an empty string");
    }
    *out = conf_path(cx, raw);
    free(raw);
    if (*out == NULL)
        return conf_fail(cx, p, "out of memory");
    if (cx->flags & CONF_NO_FS)
        return 0;
    if (stat(*out, &st) == -1)
        return conf_fail(cx, p, "cannot read \"%s\": %s", *out, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return conf_fail(cx, p, "\"%s\" is not a folder", *out);
    if (access(*out, R_OK | X_OK) == -1)
        return conf_fail(cx, p, "cannot read \"%s\": %s", *out, strerror(errno));
    return 0;
}

/* "admin": the admin API listener (docs/admin-api.md). */
static int parse_admin(struct conf_ctx *cx, struct conf *c, json_t *o)
{
    static const char *const keys[] = {
        "listen", "client_ca", "admin_groups", "token_file", "console_dir", "decisions_ring", NULL};
    struct conf_listener *l;
    char p[256];
    long long n;
    size_t i;

    if (conf_check_keys(cx, "$.admin", o, keys) == -1)
        return -1;
    l = calloc(1, sizeof(*l));
    if (l == NULL)
        return conf_fail(cx, "$.admin", "out of memory");
    c->admin_listener = l;
    l->backlog = 128;
    if (get_string(cx, o, "$.admin", "listen", 0, "127.0.0.1:9443", &l->text) == -1)
        return -1;
    if (l->text == NULL)
        return conf_fail(cx, "$.admin", "out of memory");
    if (parse_address(l->text, &l->addr, &l->addrlen) == -1)
        return conf_fail(cx, "$.admin.listen",
                         "expected \"IPv4:port\" or \"[IPv6]:port\", got \"%s\"", l->text);
    for (i = 0; i < c->nlisteners; i++)
        if (c->listeners[i].addrlen == l->addrlen &&
            memcmp(&c->listeners[i].addr, &l->addr, l->addrlen) == 0)
            return conf_fail(cx, "$.admin.listen", "\"%s\" is also $.listen[%zu]", l->text, i);
    if (get_file(cx, o, "$.admin", "client_ca", 0, 0, &c->admin_client_ca) == -1)
        return -1;
    if (c->admin_client_ca == NULL) {
        c->admin_client_ca = strdup(c->tls_device_ca);
        if (c->admin_client_ca == NULL)
            return conf_fail(cx, "$.admin.client_ca", "out of memory");
    }
    if (get_string_list(cx, o, "$.admin", "admin_groups", &c->admin_groups, &c->nadmin_groups) ==
        -1)
        return -1;
    for (i = 0; i < c->nadmin_groups; i++) {
        const char *g = c->admin_groups[i];
        size_t k;

        snprintf(p, sizeof(p), "$.admin.admin_groups[%zu]", i);
        if (strlen(g) > 256)
            return conf_fail(cx, p, "expected a group name of 1..256 bytes");
        for (k = 0; g[k] != '\0'; k++)
            if ((unsigned char)g[k] < 0x20 || g[k] == 0x7f || g[k] == ',')
                return conf_fail(cx, p, "expected a group name (printable, no ',')");
    }
    if (get_file(cx, o, "$.admin", "token_file", 0, 1, &c->admin_token_file) == -1 ||
        get_dir(cx, o, "$.admin", "console_dir", &c->admin_console_dir) == -1 ||
        get_int(cx, o, "$.admin", "decisions_ring", 1, 1000000, 10000, &n) == -1)
        return -1;
    c->admin_decisions_ring = (size_t)n;
    return 0;
}

/* "redis": shared state for replicas (docs/deploy.md). A host name is
 * resolved asynchronously (evdns) before every connection attempt. */
static int parse_redis(struct conf_ctx *cx, struct conf *c, json_t *o)
{
    static const char *const keys[] = {"address", "password_file", "prefix", "connect_timeout",
                                       NULL};
    struct sockaddr_storage ss;
    socklen_t sslen;
    char *file = NULL, *colon, name[64];
    size_t i;
    int rc;

    if (conf_check_keys(cx, "$.redis", o, keys) == -1)
        return -1;
    if (get_string(cx, o, "$.redis", "address", 1, NULL, &c->redis_address) == -1)
        return -1;
    if (c->redis_address == NULL)
        return conf_fail(cx, "$.redis", "out of memory");
    c->redis_host = strdup(c->redis_address[0] == '[' ? c->redis_address + 1 : c->redis_address);
    if (c->redis_host == NULL)
        return conf_fail(cx, "$.redis.address", "out of memory");
    colon = strrchr(c->redis_host, ':');
    if (colon != NULL)
        *colon = '\0';
    /* "name:port": checked with a stand-in numeric host for the port. */
    if (colon == NULL ||
        (parse_address(c->redis_address, &ss, &sslen) == -1 &&
         (c->redis_address[0] == '[' || !valid_hostname(c->redis_host) ||
          snprintf(name, sizeof(name), "127.0.0.1:%s", colon + 1) >= (int)sizeof(name) ||
          parse_address(name, &ss, &sslen) == -1)))
        return conf_fail(cx, "$.redis.address",
                         "expected \"IPv4:port\", \"[IPv6]:port\" or \"hostname:port\", got "
                         "\"%s\"",
                         c->redis_address);
    c->redis_port = atoi(colon + 1);
    if (c->redis_address[0] == '[')
        colon[-1] = '\0';
    if (get_file(cx, o, "$.redis", "password_file", 0, 1, &file) == -1)
        return -1;
    if (file != NULL) {
        rc = read_secret_file(cx, "$.redis.password_file", file, &c->redis_password);
        free(file);
        if (rc == -1)
            return -1;
        for (i = 0; c->redis_password[i] != '\0'; i++)
            if ((unsigned char)c->redis_password[i] < 0x20)
                return conf_fail(cx, "$.redis.password_file",
                                 "expected one line of printable characters");
    }
    if (get_string(cx, o, "$.redis", "prefix", 0, "ztproxy:", &c->redis_prefix) == -1)
        return -1;
    if (c->redis_prefix == NULL)
        return conf_fail(cx, "$.redis.prefix", "out of memory");
    if (strlen(c->redis_prefix) > 64)
        return conf_fail(cx, "$.redis.prefix", "expected at most 64 bytes");
    for (i = 0; c->redis_prefix[i] != '\0'; i++)
        if ((unsigned char)c->redis_prefix[i] <= 0x20 || c->redis_prefix[i] == 0x7f)
            return conf_fail(cx, "$.redis.prefix",
                             "expected printable characters without spaces, byte %zu is not", i);
    return get_duration(cx, o, "$.redis", "connect_timeout", 100, 60 * 1000, 2000,
                        &c->redis_connect_timeout_ms);
}

static void route_free(struct conf_route *r)
{
    free(r->name);
    free(r->host);
    free(r->path_prefix);
    free(r->upstream);
    free(r->upstream_host);
    free(r->upstream_ca);
    free(r->upstream_server_name);
}

static void provider_free(struct conf_provider *pv)
{
    size_t i;

    free(pv->name);
    free(pv->issuer);
    free(pv->client_id);
    if (pv->client_secret != NULL) {
        OPENSSL_cleanse(pv->client_secret, strlen(pv->client_secret));
        free(pv->client_secret);
    }
    free(pv->scopes);
    free(pv->ca);
    for (i = 0; i < pv->nbearer_audiences; i++)
        free(pv->bearer_audiences[i]);
    free(pv->bearer_audiences);
    free(pv->mfa_acr);
}

static void conf_free(struct conf *c)
{
    size_t i;

    if (c == NULL)
        return;
    for (i = 0; i < c->nproviders; i++)
        provider_free(&c->providers[i]);
    free(c->providers);
    free(c->state_dir);
    free(c->redis_address);
    free(c->redis_host);
    if (c->redis_password != NULL) {
        OPENSSL_cleanse(c->redis_password, strlen(c->redis_password));
        free(c->redis_password);
    }
    free(c->redis_prefix);
    free(c->session_cookie_name);
    free(c->session_keys);
    free(c->assertion_key);
    free(c->assertion_issuer);
    for (i = 0; i < c->nlisteners; i++) {
        free(c->listeners[i].text);
        free(c->listeners[i].trusted_proxies);
    }
    free(c->listeners);
    for (i = 0; i < c->nroutes; i++)
        route_free(&c->routes[i]);
    free(c->routes);
    free(c->route_keys);
    free(c->route_bucket);
    free(c->route_next);
    free(c->path);
    free(c->tls_certificate);
    free(c->tls_key);
    free(c->tls_device_ca);
    free(c->tls_crl);
    free(c->tls_enroll_url);
    free(c->devid_prefix);
    free(c->access_log);
    free(c->basedir);
    json_decref(c->device_trust);
    free(c->policy_rules);
    free(c->policy_dir_file);
    free(c->policy_dir_url);
    free(c->policy_dir_ca);
    free(c->policy_dir_token_file);
    free(c->policy_geoip);
    free(c->policy_trusted_proxies);
    free(c->policy_audit_log);
    if (c->admin_listener != NULL)
        free(c->admin_listener->text);
    free(c->admin_listener);
    free(c->admin_client_ca);
    for (i = 0; i < c->nadmin_groups; i++)
        free(c->admin_groups[i]);
    free(c->admin_groups);
    free(c->admin_token_file);
    free(c->admin_console_dir);
    free(c);
}

struct conf *conf_ref(struct conf *c)
{
    atomic_fetch_add_explicit((_Atomic int *)&c->refs, 1, memory_order_relaxed);
    return c;
}

void conf_unref(struct conf *c)
{
    if (c == NULL)
        return;
    if (atomic_fetch_sub_explicit((_Atomic int *)&c->refs, 1, memory_order_acq_rel) == 1)
        conf_free(c);
}

/* $.listen[i].proxy_protocol and its trusted_proxies (docs/deploy.md). */
static int parse_listener_proxy(struct conf_ctx *cx, json_t *o, const char *base,
                                struct conf_listener *l)
{
    json_t *v, *e;
    char p[128];
    size_t i;

    if (get_bool(cx, o, base, "proxy_protocol", 0, &l->proxy_protocol) == -1)
        return -1;
    v = json_object_get(o, "trusted_proxies");
    if (v == NULL)
        return 0;
    jp(p, sizeof(p), base, "trusted_proxies");
    if (!l->proxy_protocol)
        return conf_fail(cx, p, "only valid with \"proxy_protocol\": true");
    if (!json_is_array(v) || json_array_size(v) == 0 || json_array_size(v) > 64)
        return conf_fail(cx, p, "expected an array of 1-64 addresses or CIDRs");
    l->trusted_proxies = calloc(json_array_size(v), sizeof(*l->trusted_proxies));
    if (l->trusted_proxies == NULL)
        return conf_fail(cx, p, "out of memory");
    json_array_foreach(v, i, e)
    {
        int rc;

        snprintf(p, sizeof(p), "%s.trusted_proxies[%zu]", base, i);
        if (!json_is_string(e))
            return conf_fail(cx, p, "expected a string, got %s", jsonconf_type_name(e));
        rc = parse_cidr(json_string_value(e), &l->trusted_proxies[i]);
        if (rc == -2)
            return conf_fail(cx, p, "\"%s\" has bits set after the prefix", json_string_value(e));
        if (rc == -1)
            return conf_fail(cx, p,
                             "expected an IPv4 or IPv6 address or CIDR (\"10.0.0.0/8\"), got "
                             "\"%s\"",
                             json_string_value(e));
        l->ntrusted_proxies = i + 1;
    }
    return 0;
}

/* A proxy_protocol listener without its own list trusts policy.trusted_proxies;
 * with neither, every connection would be refused: say so now. */
static int listeners_inherit_trusted(struct conf_ctx *cx, struct conf *c)
{
    char p[128];
    size_t i, n = c->npolicy_trusted_proxies;

    for (i = 0; i < c->nlisteners; i++) {
        struct conf_listener *l = &c->listeners[i];

        if (!l->proxy_protocol || l->ntrusted_proxies > 0)
            continue;
        snprintf(p, sizeof(p), "$.listen[%zu].proxy_protocol", i);
        if (n == 0)
            return conf_fail(cx, p,
                             "needs the load balancers' addresses: \"trusted_proxies\" in this "
                             "listener or in \"policy\"");
        l->trusted_proxies = calloc(n, sizeof(*l->trusted_proxies));
        if (l->trusted_proxies == NULL)
            return conf_fail(cx, p, "out of memory");
        memcpy(l->trusted_proxies, c->policy_trusted_proxies, n * sizeof(*l->trusted_proxies));
        l->ntrusted_proxies = n;
    }
    return 0;
}

static int parse_top(struct conf_ctx *cx, json_t *root, struct conf *c)
{
    static const char *const keys[] = {"listen",   "workers",   "tls",        "device_id",
                                       "timeouts", "limits",    "access_log", "log_level",
                                       "routes",   "state_dir", "identity",   "device_trust",
                                       "policy",   "admin",     "redis",      NULL};
    static const char *const lkeys[] = {"address", "backlog", "proxy_protocol", "trusted_proxies",
                                        NULL};
    static const char *const tkeys[] = {"certificate",
                                        "key",
                                        "device_ca",
                                        "crl",
                                        "unauthenticated",
                                        "enroll_url",
                                        "session_tickets",
                                        "ticket_key_lifetime",
                                        "session_cache",
                                        "session_cache_size",
                                        NULL};
    static const char *const dkeys[] = {"source", "prefix", NULL};
    static const char *const tokeys[] = {
        "handshake",         "header", "keepalive",      "body",           "upstream_connect",
        "upstream_response", "send",   "shutdown_grace", "shutdown_delay", NULL};
    static const char *const likeys[] = {"request_line", "header_size", "header_count",
                                         "body_size",    "connections", NULL};
    json_t *v, *o, *empty = json_object();
    char p[256], *s = NULL;
    long long n;
    uint64_t u;
    size_t i;
    int rc = -1;

    if (conf_check_keys(cx, "$", root, keys) == -1)
        goto out;

    /* listen */
    v = json_object_get(root, "listen");
    if (v == NULL) {
        conf_fail(cx, "$.listen", "required key is missing");
        goto out;
    }
    if (!json_is_array(v) || json_array_size(v) == 0 || json_array_size(v) > 16) {
        conf_fail(cx, "$.listen", "expected an array of 1-16 listener objects");
        goto out;
    }
    c->nlisteners = json_array_size(v);
    c->listeners = calloc(c->nlisteners, sizeof(*c->listeners));
    json_array_foreach(v, i, o)
    {
        char base[64];
        snprintf(base, sizeof(base), "$.listen[%zu]", i);
        if (conf_check_keys(cx, base, o, lkeys) == -1 ||
            get_string(cx, o, base, "address", 1, NULL, &c->listeners[i].text) == -1)
            goto out;
        jp(p, sizeof(p), base, "address");
        if (parse_address(c->listeners[i].text, &c->listeners[i].addr, &c->listeners[i].addrlen) ==
            -1) {
            conf_fail(cx, p, "expected \"IPv4:port\" or \"[IPv6]:port\", got \"%s\"",
                      c->listeners[i].text);
            goto out;
        }
        if (get_int(cx, o, base, "backlog", 1, 65535, 511, &n) == -1)
            goto out;
        c->listeners[i].backlog = (int)n;
        if (parse_listener_proxy(cx, o, base, &c->listeners[i]) == -1)
            goto out;
    }

    /* workers */
    v = json_object_get(root, "workers");
    if (v == NULL || (json_is_string(v) && strcmp(json_string_value(v), "auto") == 0)) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        c->workers = cores < 1 ? 1 : cores > 64 ? 64 : (int)cores;
    } else if (json_is_integer(v) && json_integer_value(v) >= 1 && json_integer_value(v) <= 64) {
        c->workers = (int)json_integer_value(v);
    } else {
        conf_fail(cx, "$.workers", "expected an integer 1..64 or \"auto\"");
        goto out;
    }

    /* tls */
    o = json_object_get(root, "tls");
    if (o == NULL) {
        conf_fail(cx, "$.tls", "required key is missing");
        goto out;
    }
    if (conf_check_keys(cx, "$.tls", o, tkeys) == -1 ||
        get_file(cx, o, "$.tls", "certificate", 1, 0, &c->tls_certificate) == -1 ||
        get_file(cx, o, "$.tls", "key", 1, 1, &c->tls_key) == -1 ||
        get_file(cx, o, "$.tls", "device_ca", 1, 0, &c->tls_device_ca) == -1 ||
        get_file(cx, o, "$.tls", "crl", 0, 0, &c->tls_crl) == -1 ||
        get_string(cx, o, "$.tls", "unauthenticated", 0, "reject", &s) == -1)
        goto out;
    if (strcmp(s, "reject") == 0) {
        c->tls_unauthenticated = CONF_UNAUTH_REJECT;
    } else if (strcmp(s, "enroll_page") == 0) {
        c->tls_unauthenticated = CONF_UNAUTH_ENROLL_PAGE;
    } else {
        conf_fail(cx, "$.tls.unauthenticated", "expected \"reject\" or \"enroll_page\", got \"%s\"",
                  s);
        goto out;
    }
    if (get_string(cx, o, "$.tls", "enroll_url", 0, NULL, &c->tls_enroll_url) == -1 ||
        get_bool(cx, o, "$.tls", "session_tickets", 1, &c->tls_session_tickets) == -1 ||
        get_duration(cx, o, "$.tls", "ticket_key_lifetime", 60 * 1000, 7 * 24 * 3600 * 1000ULL,
                     3600 * 1000, &c->tls_ticket_key_lifetime_ms) == -1)
        goto out;
    free(s);
    s = NULL;
    if (get_string(cx, o, "$.tls", "session_cache", 0, "server", &s) == -1)
        goto out;
    if (strcmp(s, "server") == 0 || strcmp(s, "tickets") == 0) {
        c->tls_session_cache_server = strcmp(s, "server") == 0;
    } else {
        conf_fail(cx, "$.tls.session_cache", "expected \"server\" or \"tickets\", got \"%s\"", s);
        goto out;
    }
    {
        long long size;
        if (get_int(cx, o, "$.tls", "session_cache_size", 1, 1000000, 20480, &size) == -1)
            goto out;
        c->tls_session_cache_size = (unsigned int)size;
    }
    if (c->tls_enroll_url != NULL && (strncmp(c->tls_enroll_url, "https://", 8) != 0 ||
                                      strpbrk(c->tls_enroll_url, "\"<>'") != NULL)) {
        conf_fail(cx, "$.tls.enroll_url",
                  "expected an https:// URL without quotes or angle brackets");
        goto out;
    }

    /* device_id */
    o = json_object_get(root, "device_id");
    if (o == NULL)
        o = empty;
    free(s);
    s = NULL;
    if (conf_check_keys(cx, "$.device_id", o, dkeys) == -1 ||
        get_string(cx, o, "$.device_id", "source", 0, "san_uri", &s) == -1 ||
        get_string(cx, o, "$.device_id", "prefix", 0, "urn:ztproxy:device:", &c->devid_prefix) ==
            -1)
        goto out;
    if (strcmp(s, "san_uri") == 0) {
        c->devid_source = DEVICE_ID_SAN_URI;
    } else if (strcmp(s, "subject_cn") == 0) {
        c->devid_source = DEVICE_ID_SUBJECT_CN;
    } else if (strcmp(s, "serial") == 0) {
        c->devid_source = DEVICE_ID_SERIAL;
    } else {
        conf_fail(cx, "$.device_id.source",
                  "expected \"san_uri\", \"subject_cn\" or \"serial\", got \"%s\"", s);
        goto out;
    }
    if (c->devid_source == DEVICE_ID_SAN_URI && c->devid_prefix[0] == '\0') {
        conf_fail(cx, "$.device_id.prefix", "expected a non-empty URI prefix");
        goto out;
    }

    /* timeouts */
    o = json_object_get(root, "timeouts");
    if (o == NULL)
        o = empty;
#define DUR(key, def, field)                                                                       \
    get_duration(cx, o, "$.timeouts", key, 100, 24 * 3600 * 1000ULL, def, &c->field)
    if (conf_check_keys(cx, "$.timeouts", o, tokeys) == -1 ||
        DUR("handshake", 10000, timeout_handshake_ms) == -1 ||
        DUR("header", 10000, timeout_header_ms) == -1 ||
        DUR("keepalive", 60000, timeout_keepalive_ms) == -1 ||
        DUR("body", 30000, timeout_body_ms) == -1 ||
        DUR("upstream_connect", 5000, timeout_upstream_connect_ms) == -1 ||
        DUR("upstream_response", 60000, timeout_upstream_response_ms) == -1 ||
        DUR("send", 60000, timeout_send_ms) == -1 ||
        DUR("shutdown_grace", 30000, timeout_shutdown_grace_ms) == -1 ||
        DUR("shutdown_delay", 0, timeout_shutdown_delay_ms) == -1)
        goto out;
#undef DUR

    /* limits */
    o = json_object_get(root, "limits");
    if (o == NULL)
        o = empty;
    if (conf_check_keys(cx, "$.limits", o, likeys) == -1)
        goto out;
    if (get_size(cx, o, "$.limits", "request_line", 64, 1024 * 1024, 8192, &u) == -1)
        goto out;
    c->limit_request_line = (size_t)u;
    if (get_size(cx, o, "$.limits", "header_size", 256, 1024 * 1024, 32768, &u) == -1)
        goto out;
    c->limit_header_size = (size_t)u;
    if (c->limit_request_line > c->limit_header_size) {
        conf_fail(cx, "$.limits.request_line", "must not exceed $.limits.header_size");
        goto out;
    }
    if (get_int(cx, o, "$.limits", "header_count", 1, 256, 100, &n) == -1)
        goto out;
    c->limit_header_count = (size_t)n;
    if (get_size(cx, o, "$.limits", "body_size", 0, UINT64_MAX, 1024ULL * 1024 * 1024,
                 &c->limit_body_size) == -1)
        goto out;
    if (get_int(cx, o, "$.limits", "connections", 1, 1000000, 10000, &n) == -1)
        goto out;
    c->limit_connections = (size_t)n;

    /* access_log, log_level */
    if (get_string(cx, root, "$", "access_log", 0, "stderr", &c->access_log) == -1)
        goto out;
    if (strcmp(c->access_log, "stderr") != 0 && strcmp(c->access_log, "off") != 0) {
        char *full = conf_path(cx, c->access_log);
        free(c->access_log);
        c->access_log = full;
    }
    free(s);
    s = NULL;
    if (get_string(cx, root, "$", "log_level", 0, "info", &s) == -1)
        goto out;
    if (log_level_parse(s, &c->log_level) == -1) {
        conf_fail(cx, "$.log_level", "expected \"debug\", \"info\" or \"warn\", got \"%s\"", s);
        goto out;
    }

    /* state_dir */
    if (get_string(cx, root, "$", "state_dir", 0, NULL, &c->state_dir) == -1)
        goto out;
    if (c->state_dir != NULL) {
        char *full = conf_path(cx, c->state_dir);
        struct stat st;
        free(c->state_dir);
        c->state_dir = full;
        if (!(cx->flags & CONF_NO_FS) && stat(full, &st) == 0 && !S_ISDIR(st.st_mode)) {
            conf_fail(cx, "$.state_dir", "\"%s\" is not a directory", full);
            goto out;
        }
    }

    /* device_trust: kept as JSON; devtrust_validate() checks the inside */
    v = json_object_get(root, "device_trust");
    if (v != NULL) {
        c->device_trust = json_deep_copy(v);
        if (c->device_trust == NULL) {
            conf_fail(cx, "$.device_trust", "out of memory");
            goto out;
        }
    }

    /* identity (before routes: routes name providers) */
    o = json_object_get(root, "identity");
    if (o != NULL) {
        if (parse_identity(cx, c, o) == -1)
            goto out;
        if (c->state_dir == NULL) {
            conf_fail(cx, "$.state_dir",
                      "required with $.identity (session revocations are kept there)");
            goto out;
        }
    }

    /* routes */
    v = json_object_get(root, "routes");
    if (v == NULL) {
        conf_fail(cx, "$.routes", "required key is missing");
        goto out;
    }
    if (!json_is_array(v) || json_array_size(v) == 0 || json_array_size(v) > 4096) {
        conf_fail(cx, "$.routes", "expected an array of 1-4096 route objects");
        goto out;
    }
    c->routes = calloc(json_array_size(v), sizeof(*c->routes));
    json_array_foreach(v, i, o)
    {
        c->nroutes = i + 1;
        if (parse_route(cx, c, o, i, &c->routes[i]) == -1)
            goto out;
    }
    if (route_index(c) == -1) {
        conf_fail(cx, "$.routes", "out of memory");
        goto out;
    }

    /* policy: the rules runtime (authz_validate() checks the files' contents) */
    o = json_object_get(root, "policy");
    if (o != NULL && parse_policy(cx, c, o) == -1)
        goto out;
    if (listeners_inherit_trusted(cx, c) == -1)
        goto out;

    /* admin: the admin API listener */
    o = json_object_get(root, "admin");
    if (o != NULL && parse_admin(cx, c, o) == -1)
        goto out;

    /* redis: shared state for replicas */
    o = json_object_get(root, "redis");
    if (o != NULL && parse_redis(cx, c, o) == -1)
        goto out;
    rc = 0;
out:
    free(s);
    json_decref(empty);
    return rc;
}

int conf_parse(const char *text, size_t len, const char *name, const char *basedir, unsigned flags,
               struct conf **out, char *err, size_t errlen)
{
    struct conf_ctx cx = {name, basedir, flags, err, errlen, 0};
    json_error_t jerr;
    json_t *root;
    struct conf *c;

    root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        snprintf(err, errlen, "%s:%d:%d: JSON syntax error: %s", name, jerr.line, jerr.column,
                 jerr.text);
        return -1;
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL) {
        json_decref(root);
        snprintf(err, errlen, "%s: out of memory", name);
        return -1;
    }
    c->refs = 1;
    c->path = strdup(name);
    c->basedir = strdup(basedir != NULL ? basedir : "");
    if (parse_top(&cx, root, c) == -1) {
        json_decref(root);
        conf_free(c);
        if (!cx.failed)
            snprintf(err, errlen, "%s: invalid configuration", name);
        return -1;
    }
    json_decref(root);
    *out = c;
    return 0;
}

int conf_load(const char *file, struct conf **out, char *err, size_t errlen)
{
    FILE *f;
    char *buf = NULL, *dir, *slash;
    size_t cap = 0, len = 0, n;
    int rc;

    f = fopen(file, "r");
    if (f == NULL) {
        snprintf(err, errlen, "%s: cannot open: %s", file, strerror(errno));
        return -1;
    }
    for (;;) {
        if (len == cap) {
            char *nb;
            if (cap >= 16 * 1024 * 1024) {
                snprintf(err, errlen, "%s: larger than 16 MiB", file);
                fclose(f);
                free(buf);
                return -1;
            }
            cap = cap ? cap * 2 : 65536;
            nb = realloc(buf, cap);
            if (nb == NULL) {
                fclose(f);
                free(buf);
                snprintf(err, errlen, "%s: out of memory", file);
                return -1;
            }
            buf = nb;
        }
        n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0)
            break;
    }
    if (ferror(f)) {
        snprintf(err, errlen, "%s: read error: %s", file, strerror(errno));
        fclose(f);
        free(buf);
        return -1;
    }
    fclose(f);
    dir = strdup(file);
    slash = strrchr(dir, '/');
    if (slash != NULL)
        *slash = '\0';
    else
        dir[0] = '\0';
    rc = conf_parse(buf, len, file, dir, 0, out, err, errlen);
    free(dir);
    free(buf);
    return rc;
}

const struct conf_route *conf_route_match(const struct conf *c, const char *host, size_t host_len,
                                          const char *path, size_t path_len)
{
    const struct conf_route *best = NULL;
    uint32_t key = route_key(host, host_len, 1), n;

    if (c->route_bucket == NULL)
        return NULL;
    for (n = c->route_bucket[(key >> 8) & c->route_mask]; n != 0; n = c->route_next[n - 1]) {
        const struct conf_route *r;
        size_t pl;

        if (c->route_keys[n - 1] != key)
            continue;
        r = &c->routes[n - 1];
        pl = r->path_prefix_len;
        if (strlen(r->host) != host_len || strncasecmp(r->host, host, host_len) != 0)
            continue;
        if (pl > 1) {
            /* Whole segments: "/api" matches "/api" and "/api/...", not "/apix". */
            if (path_len < pl || memcmp(path, r->path_prefix, pl) != 0)
                continue;
            if (path_len > pl && path[pl] != '/')
                continue;
        }
        if (best == NULL || pl > best->path_prefix_len)
            best = r;
    }
    return best;
}
