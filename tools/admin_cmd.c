/*
 * admin_cmd.c - ztctl's client of a running proxy's admin API
 * (docs/admin-api.md): rules get/validate/put/history/diff/rollback, explain,
 * whatif, devices list/show/set-status, sessions revoke, decisions.
 *
 * Connection: --admin URL, --token-file FILE or --cert FILE --key FILE,
 * --cacert FILE; else the environment (ZTCTL_ADMIN, ZTCTL_TOKEN_FILE,
 * ZTCTL_CERT, ZTCTL_KEY, ZTCTL_CACERT); else the config file (--config FILE,
 * ZTCTL_CONFIG, or ~/.config/ztctl/config.json when it exists) with the keys
 * "admin", "token_file", "cert", "key", "cacert". A token is never taken
 * from the command line (it would show in ps); its file must be private.
 *
 * One blocking libcurl easy handle per call: this is a command line tool.
 * Exit codes: 0 ok, 1 the API refused (its message is printed), 2 usage,
 * 3 cannot talk to the API (connection, TLS verification, credentials).
 */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ztctl.h"

#define RESP_MAX (64u * 1024 * 1024) /* largest answer read */
#define FILE_MAX (4u * 1024 * 1024)  /* the admin API refuses larger bodies */
#define TOKEN_MIN 16
#define TOKEN_MAX 1024
#define DEFAULT_ADMIN "https://127.0.0.1:9443"

enum {
    A_ADMIN = 1000,
    A_TOKEN_FILE,
    A_CERT,
    A_KEY,
    A_CACERT,
    A_CONFIG,
    A_JSON,
    /* per command */
    A_VERSION,
    A_OUT,
    A_COMMENT,
    A_BASE,
    A_RULES,
    A_ROUTE,
    A_USER,
    A_EMAIL,
    A_DEVICE,
    A_IP,
    A_COUNTRY,
    A_TIME,
    A_METHOD,
    A_PATH,
    A_MFA,
    A_AUTH_AGE,
    A_TIER,
    A_SCORE,
    A_GROUP,
    A_STATUS,
    A_OWNER,
    A_STALE,
    A_LIMIT,
    A_SESSION,
    A_EFFECT,
};

#define CONN_OPTS                                                                                  \
    {"--admin", A_ADMIN, 1}, {"--token-file", A_TOKEN_FILE, 1}, {"--cert", A_CERT, 1},             \
        {"--key", A_KEY, 1}, {"--cacert", A_CACERT, 1}, {"--config", A_CONFIG, 1},                 \
    {                                                                                              \
        "--json", A_JSON, 0                                                                        \
    }

struct conn {
    const char *cmd;
    const char *admin, *token_file, *cert, *key, *cacert, *config;
    char url[1024]; /* admin base URL without a trailing '/' */
    char *token;    /* from token_file; cleansed when done */
    json_t *cfg;    /* the config file: owns the strings taken from it */
    int json;
};

struct buf {
    char *p;
    size_t len, cap;
    int oom;
};

struct resp {
    long status;
    struct buf body;
    json_t *json; /* the body parsed, when it is JSON */
};

/* ---- small helpers ------------------------------------------------------------------- */

static void buf_add(struct buf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t nc = b->cap == 0 ? 256 : b->cap;
        char *np;
        while (nc < b->len + n + 1)
            nc *= 2;
        np = realloc(b->p, nc);
        if (np == NULL) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = nc;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void buf_str(struct buf *b, const char *s)
{
    buf_add(b, s, strlen(s));
}

/* s percent-encoded (a query value or a path segment). */
static void buf_esc(struct buf *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *s != '\0'; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '.' || ch == '_' || ch == '~') {
            buf_add(b, (const char *)&ch, 1);
        } else {
            char e[3] = {'%', hex[ch >> 4], hex[ch & 15]};
            buf_add(b, e, 3);
        }
    }
}

/* "&key=value" (or "?key=value" for the first one) when value is set. */
static void buf_query(struct buf *b, const char *key, const char *value)
{
    if (value == NULL)
        return;
    buf_str(b, strchr(b->p != NULL ? b->p : "", '?') != NULL ? "&" : "?");
    buf_str(b, key);
    buf_str(b, "=");
    buf_esc(b, value);
}

static void resp_reset(struct resp *r)
{
    free(r->body.p);
    json_decref(r->json);
    memset(r, 0, sizeof(*r));
}

static const char *jstr(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s != NULL ? s : "-";
}

/* A member as short text: strings as they are, numbers, booleans, null "-". */
static const char *jtext(const json_t *o, const char *key, char *out, size_t len)
{
    const json_t *v = json_object_get(o, key);

    if (json_is_string(v))
        snprintf(out, len, "%s", json_string_value(v));
    else if (json_is_integer(v))
        snprintf(out, len, "%lld", (long long)json_integer_value(v));
    else if (json_is_real(v))
        snprintf(out, len, "%g", json_real_value(v));
    else if (json_is_boolean(v))
        snprintf(out, len, "%s", json_is_true(v) ? "yes" : "no");
    else if (json_is_array(v)) {
        size_t i, n = 0;
        out[0] = '\0';
        for (i = 0; i < json_array_size(v) && n < len; i++) {
            const char *s = json_string_value(json_array_get(v, i));
            n += (size_t)snprintf(out + n, len - n, "%s%s", i ? "," : "", s != NULL ? s : "?");
        }
        if (i == 0)
            snprintf(out, len, "-");
    } else
        snprintf(out, len, "-");
    return out;
}

static int print_json(const json_t *v)
{
    char *t = json_dumps(v, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
    if (t == NULL) {
        fprintf(stderr, "ztctl: out of memory\n");
        return ZTCTL_EXIT_UNAVAILABLE;
    }
    printf("%s\n", t);
    free(t);
    return ZTCTL_EXIT_OK;
}

/* Read a whole file (at most FILE_MAX bytes). NULL after printing why. */
static char *read_file(const char *cmd, const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    struct buf b = {0};
    char chunk[8192];
    size_t n;

    if (f == NULL) {
        fprintf(stderr, "ztctl %s: %s: %s\n", cmd, path, strerror(errno));
        return NULL;
    }
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        buf_add(&b, chunk, n);
        if (b.len > FILE_MAX) {
            fprintf(stderr, "ztctl %s: %s: larger than %u bytes\n", cmd, path, FILE_MAX);
            fclose(f);
            free(b.p);
            return NULL;
        }
    }
    if (ferror(f) || b.oom) {
        fprintf(stderr, "ztctl %s: %s: %s\n", cmd, path, b.oom ? "out of memory" : "read error");
        fclose(f);
        free(b.p);
        return NULL;
    }
    fclose(f);
    if (b.p == NULL)
        buf_str(&b, "");
    *len = b.len;
    return b.p;
}

/* A JSON file (a rules document). NULL after printing "FILE:line:column: ...". */
static json_t *read_json_file(const char *cmd, const char *path)
{
    json_error_t e;
    size_t len;
    char *text = read_file(cmd, path, &len);
    json_t *v;

    if (text == NULL)
        return NULL;
    v = json_loadb(text, len, JSON_REJECT_DUPLICATES, &e);
    free(text);
    if (v == NULL) {
        fprintf(stderr, "ztctl %s: %s:%d:%d: %s\n", cmd, path, e.line, e.column, e.text);
        return NULL;
    }
    if (!json_is_object(v)) {
        fprintf(stderr, "ztctl %s: %s: $: expected a JSON object (a rules document)\n", cmd, path);
        json_decref(v);
        return NULL;
    }
    return v;
}

/* ---- connection settings --------------------------------------------------------------- */

/* 1 when the option was a connection option, 0 not, -1 usage error. */
static int conn_opt(struct ztctl_optp *p, struct conn *c, int id, const char *val)
{
    switch (id) {
    case A_ADMIN:
        return ztctl_opt_once(p, "--admin", &c->admin, val) == -1 ? -1 : 1;
    case A_TOKEN_FILE:
        return ztctl_opt_once(p, "--token-file", &c->token_file, val) == -1 ? -1 : 1;
    case A_CERT:
        return ztctl_opt_once(p, "--cert", &c->cert, val) == -1 ? -1 : 1;
    case A_KEY:
        return ztctl_opt_once(p, "--key", &c->key, val) == -1 ? -1 : 1;
    case A_CACERT:
        return ztctl_opt_once(p, "--cacert", &c->cacert, val) == -1 ? -1 : 1;
    case A_CONFIG:
        return ztctl_opt_once(p, "--config", &c->config, val) == -1 ? -1 : 1;
    case A_JSON:
        c->json = 1;
        return 1;
    default:
        return 0;
    }
}

static const char *const cfg_keys[] = {"admin", "token_file", "cert", "key", "cacert", NULL};

/*
 * The config file's text -> its object: only the keys of cfg_keys, each a
 * non-empty string. NULL with the reason in err ("$.tokn: unknown key ...",
 * "3:7: <syntax error>"). Pure: the fuzz target calls it.
 */
static json_t *config_parse(const char *text, size_t len, char *err, size_t errlen)
{
    json_error_t e;
    const char *k;
    json_t *v, *cfg = json_loadb(text, len, JSON_REJECT_DUPLICATES, &e);

    if (cfg == NULL) {
        snprintf(err, errlen, "%d:%d: %s", e.line, e.column, e.text);
        return NULL;
    }
    if (!json_is_object(cfg)) {
        snprintf(err, errlen, "$: expected an object");
        json_decref(cfg);
        return NULL;
    }
    json_object_foreach(cfg, k, v)
    {
        size_t i;
        for (i = 0; cfg_keys[i] != NULL; i++)
            if (strcmp(cfg_keys[i], k) == 0)
                break;
        if (cfg_keys[i] == NULL) {
            char q[128];
            snprintf(err, errlen, "$.%s: unknown key (known: admin, token_file, cert, key, cacert)",
                     strcspn(k, "\"\\ .[]") == strlen(k) && strlen(k) < 64
                         ? k
                         : ztctl_quote(k, q, sizeof(q)));
            json_decref(cfg);
            return NULL;
        }
        if (!json_is_string(v) || json_string_length(v) == 0 ||
            strlen(json_string_value(v)) != json_string_length(v)) {
            snprintf(err, errlen, "$.%s: expected a non-empty string", k);
            json_decref(cfg);
            return NULL;
        }
    }
    return cfg;
}

/* Load the config file: explicit (must exist) or the default (when it exists). */
static int conn_load_config(struct conn *c)
{
    const char *path = c->config != NULL ? c->config : getenv("ZTCTL_CONFIG");
    char def[1024], err[512];
    size_t len;
    char *text;

    if (path == NULL || path[0] == '\0') {
        const char *home = getenv("HOME");
        if (home == NULL || home[0] == '\0')
            return 0;
        snprintf(def, sizeof(def), "%s/.config/ztctl/config.json", home);
        if (access(def, F_OK) != 0)
            return 0;
        path = def;
    }
    if ((text = read_file(c->cmd, path, &len)) == NULL)
        return -1;
    c->cfg = config_parse(text, len, err, sizeof(err));
    free(text);
    if (c->cfg == NULL) {
        fprintf(stderr, "ztctl %s: config %s%s%s\n", c->cmd, path, err[0] == '$' ? ": " : ":", err);
        return -1;
    }
    return 0;
}

/* flag, else environment, else config file. */
static const char *pick(struct conn *c, const char *flag, const char *env, const char *key)
{
    const char *e;

    if (flag != NULL)
        return flag;
    e = getenv(env);
    if (e != NULL && e[0] != '\0')
        return e;
    return json_string_value(json_object_get(c->cfg, key));
}

/*
 * A token file's text (NUL-terminated, changed in place) -> the token: the
 * first line that is neither blank nor a '#' comment, TOKEN_MIN..TOKEN_MAX
 * printable characters without spaces. A malloc'd copy, or NULL with the
 * reason in err (never the token). Pure: the fuzz target calls it.
 */
static char *token_parse(char *data, char *err, size_t errlen)
{
    char *line, *end, *tok;

    for (line = data; *line != '\0'; line = end) {
        size_t len, i;
        end = line + strcspn(line, "\n");
        if (*end == '\n')
            *end++ = '\0';
        len = strlen(line);
        while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == ' ' || line[len - 1] == '\t'))
            line[--len] = '\0';
        while (*line == ' ' || *line == '\t')
            line++, len--;
        if (len == 0 || line[0] == '#')
            continue;
        for (i = 0; i < len; i++)
            if (line[i] <= ' ' || line[i] > '~')
                break;
        if (len < TOKEN_MIN || len > TOKEN_MAX || i < len) {
            snprintf(err, errlen,
                     "expected the token (%d-%d printable characters, no spaces) on its first "
                     "line",
                     TOKEN_MIN, TOKEN_MAX);
            return NULL;
        }
        tok = strdup(line);
        if (tok == NULL)
            snprintf(err, errlen, "out of memory");
        return tok;
    }
    snprintf(err, errlen, "no token in it");
    return NULL;
}

/* Read the token: the first line that is neither blank nor a '#' comment. */
static int read_token(struct conn *c)
{
    struct stat st;
    char data[4096], err[256];
    ssize_t n;
    int fd = open(c->token_file, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);

    if (fd == -1) {
        fprintf(stderr, "ztctl %s: token file %s: %s\n", c->cmd, c->token_file,
                errno == ELOOP ? "is a symbolic link" : strerror(errno));
        return -1;
    }
    if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
        fprintf(stderr, "ztctl %s: token file %s: not a regular file\n", c->cmd, c->token_file);
        close(fd);
        return -1;
    }
    if ((st.st_mode & 077) != 0) {
        fprintf(stderr,
                "ztctl %s: token file %s: readable or writable by group or others (mode %04o); "
                "it must be private: chmod 600 %s\n",
                c->cmd, c->token_file, (unsigned)(st.st_mode & 07777), c->token_file);
        close(fd);
        return -1;
    }
    n = read(fd, data, sizeof(data) - 1);
    close(fd);
    if (n < 0) {
        fprintf(stderr, "ztctl %s: token file %s: %s\n", c->cmd, c->token_file, strerror(errno));
        return -1;
    }
    data[n] = '\0';
    c->token = token_parse(data, err, sizeof(err));
    OPENSSL_cleanse(data, sizeof(data));
    if (c->token == NULL) {
        fprintf(stderr, "ztctl %s: token file %s: %s\n", c->cmd, c->token_file, err);
        return -1;
    }
    return 0;
}

/*
 * Settle the connection settings and read the token. Returns ZTCTL_EXIT_OK,
 * ZTCTL_EXIT_USAGE (missing or bad settings) or ZTCTL_EXIT_UNAVAILABLE (the
 * token file cannot be used): nothing has gone over the network yet.
 */
static int conn_resolve(struct conn *c)
{
    const char *admin;
    size_t n;

    if (conn_load_config(c) == -1)
        return ZTCTL_EXIT_USAGE;
    admin = pick(c, c->admin, "ZTCTL_ADMIN", "admin");
    c->token_file = pick(c, c->token_file, "ZTCTL_TOKEN_FILE", "token_file");
    c->cert = pick(c, c->cert, "ZTCTL_CERT", "cert");
    c->key = pick(c, c->key, "ZTCTL_KEY", "key");
    c->cacert = pick(c, c->cacert, "ZTCTL_CACERT", "cacert");
    if (admin == NULL)
        admin = DEFAULT_ADMIN;
    n = strlen(admin);
    while (n > 0 && admin[n - 1] == '/')
        n--;
    if (strncmp(admin, "https://", 8) != 0 || n <= 8 || n >= sizeof(c->url) ||
        strcspn(admin, " \t\r\n?#") < strlen(admin)) {
        ztctl_usage_error(c->cmd, "admin address '%s': expected https://HOST:PORT", admin);
        return ZTCTL_EXIT_USAGE;
    }
    memcpy(c->url, admin, n);
    c->url[n] = '\0';
    if ((c->cert == NULL) != (c->key == NULL)) {
        ztctl_usage_error(c->cmd, "--cert and --key go together");
        return ZTCTL_EXIT_USAGE;
    }
    if (c->token_file == NULL && c->cert == NULL) {
        ztctl_usage_error(c->cmd, "no credentials: give --token-file FILE (or ZTCTL_TOKEN_FILE) "
                                  "or --cert FILE --key FILE");
        return ZTCTL_EXIT_USAGE;
    }
    if (c->token_file != NULL && read_token(c) == -1)
        return ZTCTL_EXIT_UNAVAILABLE;
    return ZTCTL_EXIT_OK;
}

static void conn_reset(struct conn *c)
{
    if (c->token != NULL) {
        OPENSSL_cleanse(c->token, strlen(c->token));
        free(c->token);
    }
    json_decref(c->cfg);
    memset(c, 0, sizeof(*c));
}

/* ---- HTTP ------------------------------------------------------------------------------ */

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
    struct buf *b = arg;
    size_t n = size * nmemb;

    if (b->len + n > RESP_MAX)
        return 0;
    buf_add(b, data, n);
    return b->oom ? 0 : n;
}

static void why_no_connection(struct conn *c, CURLcode rc, const char *errbuf)
{
    const char *detail = errbuf[0] != '\0' ? errbuf : curl_easy_strerror(rc);

    switch (rc) {
    case CURLE_COULDNT_CONNECT:
        fprintf(stderr,
                "ztctl %s: cannot connect to %s: connection refused (is the admin "
                "listener running there?): %s\n",
                c->cmd, c->url, detail);
        break;
    case CURLE_COULDNT_RESOLVE_HOST:
        fprintf(stderr, "ztctl %s: cannot connect to %s: unknown host: %s\n", c->cmd, c->url,
                detail);
        break;
    case CURLE_OPERATION_TIMEDOUT:
        fprintf(stderr, "ztctl %s: cannot connect to %s: timed out: %s\n", c->cmd, c->url, detail);
        break;
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
        fprintf(stderr,
                "ztctl %s: cannot connect to %s: TLS verification of the server failed (check "
                "--cacert and the address): %s\n",
                c->cmd, c->url, detail);
        break;
    case CURLE_SSL_CERTPROBLEM:
        fprintf(stderr,
                "ztctl %s: cannot connect to %s: the client certificate or key cannot be used "
                "(--cert, --key): %s\n",
                c->cmd, c->url, detail);
        break;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
        fprintf(stderr,
                "ztctl %s: cannot connect to %s: TLS handshake failed (a client certificate "
                "the server does not accept?): %s\n",
                c->cmd, c->url, detail);
        break;
    default:
        fprintf(stderr, "ztctl %s: cannot talk to %s: %s\n", c->cmd, c->url, detail);
        break;
    }
}

/*
 * One call. body (len bytes) is sent as application/json when not NULL.
 * Returns ZTCTL_EXIT_OK with r filled (any status but 401/403), or
 * ZTCTL_EXIT_UNAVAILABLE after printing why (no connection, TLS, credentials).
 */
static int api_call(struct conn *c, const char *method, const char *path, const char *body,
                    size_t len, struct resp *r)
{
    char errbuf[CURL_ERROR_SIZE] = "";
    struct curl_slist *h = NULL, *nh;
    struct buf url = {0}, auth = {0};
    CURL *e = NULL;
    CURLcode rc;
    int ret = ZTCTL_EXIT_UNAVAILABLE;
    json_error_t je;
    char *ctype = NULL;

    memset(r, 0, sizeof(*r));
    buf_str(&url, c->url);
    buf_str(&url, path);
    if (c->token != NULL) {
        buf_str(&auth, "Authorization: Bearer ");
        buf_str(&auth, c->token);
    }
    e = curl_easy_init();
    if (e == NULL || url.oom || auth.oom)
        goto oom;
    if (auth.p != NULL) {
        if ((nh = curl_slist_append(h, auth.p)) == NULL)
            goto oom;
        h = nh;
    }
    if (body != NULL) {
        if ((nh = curl_slist_append(h, "Content-Type: application/json")) == NULL)
            goto oom;
        h = nh;
    }
    if ((nh = curl_slist_append(h, "Accept: application/json")) == NULL)
        goto oom;
    h = nh;
    curl_easy_setopt(e, CURLOPT_URL, url.p);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "https");
#endif
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT, 120L);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(e, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &r->body);
    if (c->cacert != NULL)
        curl_easy_setopt(e, CURLOPT_CAINFO, c->cacert);
    if (c->cert != NULL) {
        curl_easy_setopt(e, CURLOPT_SSLCERT, c->cert);
        curl_easy_setopt(e, CURLOPT_SSLKEY, c->key);
    }
    if (body != NULL) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    }
    rc = curl_easy_perform(e);
    if (r->body.oom)
        goto oom;
    if (rc == CURLE_WRITE_ERROR) {
        fprintf(stderr, "ztctl %s: the answer of %s is larger than %u bytes\n", c->cmd, c->url,
                RESP_MAX);
        goto out;
    }
    if (rc != CURLE_OK) {
        why_no_connection(c, rc, errbuf);
        goto out;
    }
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &r->status);
    curl_easy_getinfo(e, CURLINFO_CONTENT_TYPE, &ctype);
    if (ctype != NULL && strncmp(ctype, "application/json", 16) == 0 && r->body.p != NULL)
        r->json = json_loadb(r->body.p, r->body.len, 0, &je);
    if (r->status == 401 || r->status == 403) {
        const char *code = json_string_value(json_object_get(r->json, "error"));
        if (code != NULL && strcmp(code, "csrf") == 0) {
            fprintf(stderr, "ztctl %s: %s refused the call (403 csrf)\n", c->cmd, c->url);
        } else {
            fprintf(stderr, "ztctl %s: %s refused the credentials (%ld %s): %s\n", c->cmd, c->url,
                    r->status, code != NULL ? code : "",
                    r->status == 401   ? "no credential was accepted; give --token-file or "
                                         "an admin --cert/--key"
                    : c->token != NULL ? "the token is not valid"
                                       : "the certificate's identity is not in an admin group");
        }
        goto out;
    }
    ret = ZTCTL_EXIT_OK;
    goto out;
oom:
    fprintf(stderr, "ztctl %s: out of memory\n", c->cmd);
out:
    if (auth.p != NULL)
        OPENSSL_cleanse(auth.p, auth.len);
    free(auth.p);
    free(url.p);
    curl_slist_free_all(h);
    if (e != NULL)
        curl_easy_cleanup(e);
    if (ret != ZTCTL_EXIT_OK)
        resp_reset(r);
    return ret;
}

/* Call with a JSON body (caller keeps body). */
static int api_json(struct conn *c, const char *method, const char *path, const json_t *body,
                    struct resp *r)
{
    char *text = NULL;
    int rc;

    if (body != NULL) {
        text = json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (text == NULL) {
            fprintf(stderr, "ztctl %s: out of memory\n", c->cmd);
            return ZTCTL_EXIT_UNAVAILABLE;
        }
    }
    rc = api_call(c, method, path, text, text != NULL ? strlen(text) : 0, r);
    free(text);
    return rc;
}

/* A refusal the API answered: print its error and message. Returns 1. */
static int api_refused(struct conn *c, const struct resp *r)
{
    const char *code = json_string_value(json_object_get(r->json, "error"));
    const char *msg = json_string_value(json_object_get(r->json, "message"));

    if (c->json && r->json != NULL)
        print_json(r->json);
    if (code == NULL && msg == NULL)
        fprintf(stderr, "ztctl %s: HTTP %ld from %s%s%.200s\n", c->cmd, r->status, c->url,
                r->body.p != NULL ? ": " : "", r->body.p != NULL ? r->body.p : "");
    else
        fprintf(stderr, "ztctl %s: %ld %s%s%s\n", c->cmd, r->status, code != NULL ? code : "",
                msg != NULL ? ": " : "", msg != NULL ? msg : "");
    return ZTCTL_EXIT_FAIL;
}

/* Validation errors of a 422 answer: "FILE: PATH (rule ID): message", one a line. */
static void print_rule_errors(const char *file, const json_t *errs)
{
    size_t i;
    json_t *e;

    json_array_foreach(errs, i, e)
    {
        const char *rule = json_string_value(json_object_get(e, "rule"));
        fprintf(stderr, "%s: %s%s%s%s: %s\n", file, jstr(e, "path"), rule != NULL ? " (rule " : "",
                rule != NULL ? rule : "", rule != NULL ? ")" : "", jstr(e, "message"));
    }
}

/* The usual tail of a command: a 2xx answer printed raw with --json. */
static int need_json(struct conn *c, const struct resp *r)
{
    if (r->json == NULL) {
        fprintf(stderr, "ztctl %s: %s answered %ld without a JSON body\n", c->cmd, c->url,
                r->status);
        return -1;
    }
    return 0;
}

/* ---- option parsing shared by every command -------------------------------------------- */

/* Parse argv; cmd_opt handles the command's own options (returns 0 or -1). */
typedef int (*cmd_opt_fn)(struct ztctl_optp *p, void *st, int id, const char *val);

static int parse(struct ztctl_optp *p, struct conn *c, const char *cmd,
                 const struct ztctl_optdef *defs, int argc, char **argv, cmd_opt_fn fn, void *st,
                 size_t min_pos, size_t max_pos, const char *pos_names)
{
    const char *val;
    int id, rc, k;

    memset(c, 0, sizeof(*c));
    c->cmd = cmd;
    ztctl_optp_init(p, cmd, argc, argv);
    while ((rc = ztctl_opt_next(p, defs, &id, &val)) == 1) {
        if (id == ZTCTL_OPT_HELP) {
            ztctl_help(stdout, cmd);
            return 1;
        }
        k = conn_opt(p, c, id, val);
        if (k == -1)
            return -1;
        if (k == 1)
            continue;
        if (fn == NULL || fn(p, st, id, val) == -1)
            return -1;
    }
    if (rc == -1)
        return -1;
    if (p->npos < min_pos) {
        ztctl_usage_error(cmd, "missing %s", pos_names);
        return -1;
    }
    if (p->npos > max_pos) {
        ztctl_usage_error(cmd, "too many arguments");
        return -1;
    }
    return 0;
}

/* Common start: 0 go on, else the exit code to return. */
#define START(defs, fn, st, minp, maxp, names)                                                     \
    do {                                                                                           \
        int pr_ = parse(&p, &c, cmd, defs, argc, argv, fn, st, minp, maxp, names);                 \
        if (pr_ != 0)                                                                              \
            return pr_ == 1 ? ZTCTL_EXIT_OK : ZTCTL_EXIT_USAGE;                                    \
    } while (0)

static int version_arg(const char *cmd, const char *what, const char *s, long *v)
{
    if (ztctl_long_parse(s, 1, 2147483647L, v) == -1) {
        ztctl_usage_error(cmd, "%s '%s': expected a version number (1 or more)", what, s);
        return -1;
    }
    return 0;
}

/* ---- rules ------------------------------------------------------------------------------ */

struct rules_args {
    const char *version, *out, *comment, *base;
};

static int rules_opt(struct ztctl_optp *p, void *st, int id, const char *val)
{
    struct rules_args *a = st;
    switch (id) {
    case A_VERSION:
        return ztctl_opt_once(p, "--version", &a->version, val);
    case A_OUT:
        return ztctl_opt_once(p, "-o", &a->out, val);
    case A_COMMENT:
        return ztctl_opt_once(p, "-m", &a->comment, val);
    case A_BASE:
        return ztctl_opt_once(p, "--base-version", &a->base, val);
    default:
        return -1;
    }
}

static const struct ztctl_optdef get_opts[] = {
    CONN_OPTS, {"--version", A_VERSION, 1}, {"-o", A_OUT, 1}, {"--output", A_OUT, 1}, {NULL, 0, 0}};

static int rules_get(const char *cmd, int argc, char **argv)
{
    struct ztctl_optp p;
    struct conn c;
    struct rules_args a = {0};
    struct resp r;
    char path[64] = "/api/v1/rules";
    const json_t *doc;
    long v = 0;
    int rc;

    START(get_opts, rules_opt, &a, 0, 0, "");
    if (a.version != NULL && version_arg(cmd, "--version", a.version, &v) == -1)
        return ZTCTL_EXIT_USAGE;
    if (v > 0)
        snprintf(path, sizeof(path), "/api/v1/rules/history/%ld", v);
    if ((rc = conn_resolve(&c)) != 0 || (rc = api_call(&c, "GET", path, NULL, 0, &r)) != 0)
        goto done;
    if (r.status != 200) {
        rc = api_refused(&c, &r);
        goto done_r;
    }
    if (need_json(&c, &r) == -1 || !json_is_object(doc = json_object_get(r.json, "document"))) {
        fprintf(stderr, "ztctl %s: the answer has no rules document\n", cmd);
        rc = ZTCTL_EXIT_FAIL;
        goto done_r;
    }
    fprintf(stderr, "version %lld by %s at %s, %lld rules (rules version %s): %s\n",
            (long long)json_integer_value(json_object_get(r.json, "version")),
            jstr(r.json, "author"), jstr(r.json, "time"),
            (long long)json_integer_value(json_object_get(r.json, "rules")),
            jstr(r.json, "rules_version"), jstr(r.json, "comment"));
    if (a.out != NULL) {
        char tmp[4096];
        int n = snprintf(tmp, sizeof(tmp), "%s.tmp", a.out);
        if (n < 0 || (size_t)n >= sizeof(tmp) ||
            json_dump_file(doc, tmp, JSON_INDENT(2) | JSON_PRESERVE_ORDER) == -1 ||
            rename(tmp, a.out) == -1) {
            fprintf(stderr, "ztctl %s: cannot write %s: %s\n", cmd, a.out, strerror(errno));
            unlink(tmp);
            rc = ZTCTL_EXIT_FAIL;
            goto done_r;
        }
        printf("wrote version %lld to %s\n",
               (long long)json_integer_value(json_object_get(r.json, "version")), a.out);
        rc = ZTCTL_EXIT_OK;
    } else {
        rc = print_json(c.json ? r.json : doc);
    }
done_r:
    resp_reset(&r);
done:
    conn_reset(&c);
    return rc;
}

static const struct ztctl_optdef plain_opts[] = {CONN_OPTS, {NULL, 0, 0}};

static int rules_validate(const char *cmd, int argc, char **argv)
{
    struct ztctl_optp p;
    struct conn c;
    struct resp r;
    char *text = NULL;
    size_t len = 0;
    int rc;

    START(plain_opts, NULL, NULL, 1, 1, "FILE");
    if ((text = read_file(cmd, p.pos[0], &len)) == NULL)
        return ZTCTL_EXIT_FAIL;
    if ((rc = conn_resolve(&c)) != 0 ||
        (rc = api_call(&c, "POST", "/api/v1/rules/validate", text, len, &r)) != 0)
        goto done;
    if (c.json && r.json != NULL)
        print_json(r.json);
    if (r.status == 200) {
        if (!c.json)
            printf("ok: %s: %lld rules\n", p.pos[0],
                   (long long)json_integer_value(json_object_get(r.json, "rules")));
        rc = ZTCTL_EXIT_OK;
    } else if (r.status == 422) {
        print_rule_errors(p.pos[0], json_object_get(r.json, "errors"));
        fprintf(stderr, "%s: invalid (%zu errors)\n", p.pos[0],
                json_array_size(json_object_get(r.json, "errors")));
        rc = ZTCTL_EXIT_FAIL;
    } else if (r.status == 400 && json_object_get(r.json, "line") != NULL) {
        fprintf(stderr, "%s:%lld:%lld: %s\n", p.pos[0],
                (long long)json_integer_value(json_object_get(r.json, "line")),
                (long long)json_integer_value(json_object_get(r.json, "column")),
                jstr(r.json, "message"));
        rc = ZTCTL_EXIT_FAIL;
    } else {
        c.json = 0;
        rc = api_refused(&c, &r);
    }
    resp_reset(&r);
done:
    free(text);
    conn_reset(&c);
    return rc;
}

static const struct ztctl_optdef put_opts[] = {CONN_OPTS,
                                               {"-m", A_COMMENT, 1},
                                               {"--comment", A_COMMENT, 1},
                                               {"--base-version", A_BASE, 1},
                                               {NULL, 0, 0}};

/* Common answer of put and rollback. */
static int print_applied(struct conn *c, struct resp *r, const char *file)
{
    if (r->status == 200) {
        if (c->json)
            return print_json(r->json);
        printf("applied: version %lld (%lld rules, rules version %s)\n",
               (long long)json_integer_value(json_object_get(r->json, "version")),
               (long long)json_integer_value(json_object_get(r->json, "rules")),
               jstr(r->json, "rules_version"));
        return ZTCTL_EXIT_OK;
    }
    if (r->status == 422 && file != NULL) {
        if (c->json)
            print_json(r->json);
        print_rule_errors(file, json_object_get(r->json, "errors"));
        fprintf(stderr, "%s: invalid, nothing changed (%zu errors)\n", file,
                json_array_size(json_object_get(r->json, "errors")));
        return ZTCTL_EXIT_FAIL;
    }
    if (r->status == 409 && json_is_integer(json_object_get(r->json, "version"))) {
        if (c->json)
            print_json(r->json);
        fprintf(stderr, "ztctl %s: conflict: the live version is %lld now; nothing changed\n",
                c->cmd, (long long)json_integer_value(json_object_get(r->json, "version")));
        return ZTCTL_EXIT_FAIL;
    }
    return api_refused(c, r);
}

static int rules_put(const char *cmd, int argc, char **argv)
{
    struct ztctl_optp p;
    struct conn c;
    struct rules_args a = {0};
    struct resp r;
    json_t *doc = NULL, *body = NULL;
    long base = 0;
    int rc;

    START(put_opts, rules_opt, &a, 1, 1, "FILE");
    if (a.comment == NULL) {
        ztctl_usage_error(cmd, "missing -m COMMENT (why the rules change)");
        return ZTCTL_EXIT_USAGE;
    }
    if (a.base != NULL && version_arg(cmd, "--base-version", a.base, &base) == -1)
        return ZTCTL_EXIT_USAGE;
    if ((doc = read_json_file(cmd, p.pos[0])) == NULL)
        return ZTCTL_EXIT_FAIL;
    body = json_pack("{s:O,s:s}", "document", doc, "comment", a.comment);
    if (body == NULL ||
        (base > 0 && json_object_set_new(body, "base_version", json_integer(base)) == -1)) {
        fprintf(stderr, "ztctl %s: out of memory (or the comment is not UTF-8)\n", cmd);
        json_decref(body);
        json_decref(doc);
        return ZTCTL_EXIT_FAIL;
    }
    if ((rc = conn_resolve(&c)) == 0 &&
        (rc = api_json(&c, "PUT", "/api/v1/rules", body, &r)) == 0) {
        rc = print_applied(&c, &r, p.pos[0]);
        resp_reset(&r);
    }
    json_decref(body);
    json_decref(doc);
    conn_reset(&c);
    return rc;
}

static int rules_history(const char *cmd, int argc, char **argv)
{
    struct ztctl_optp p;
    struct conn c;
    struct resp r;
    json_t *v;
    size_t i;
    int rc;

    START(plain_opts, NULL, NULL, 0, 0, "");
    if ((rc = conn_resolve(&c)) != 0 ||
        (rc = api_call(&c, "GET", "/api/v1/rules/history", NULL, 0, &r)) != 0)
        goto done;
    if (r.status != 200)
        rc = api_refused(&c, &r);
    else if (need_json(&c, &r) == -1)
        rc = ZTCTL_EXIT_FAIL;
    else if (c.json)
        rc = print_json(r.json);
    else {
        printf("%-8s %-24s %-24s %5s  %s\n", "VERSION", "TIME", "AUTHOR", "RULES", "COMMENT");
        json_array_foreach(json_object_get(r.json, "versions"), i, v)
        {
            char t[64];
            printf("%-8lld %-24s %-24s %5s  %s\n",
                   (long long)json_integer_value(json_object_get(v, "version")), jstr(v, "time"),
                   jstr(v, "author"), jtext(v, "rules", t, sizeof(t)), jstr(v, "comment"));
        }
        rc = ZTCTL_EXIT_OK;
    }
    resp_reset(&r);
done:
    conn_reset(&c);
    return rc;
}

static void print_ids(const char *label, const json_t *a)
{
    size_t i;
    json_t *v;

    printf("%s:", label);
    if (json_array_size(a) == 0)
        printf(" (none)");
    json_array_foreach(a, i, v)
    {
        printf(" %s", json_string_value(v) ? json_string_value(v) : "?");
    }
    printf("\n");
}

static int rules_diff(const char *cmd, int argc, char **argv)
{
    struct ztctl_optp p;
    struct conn c;
    struct resp r;
    char path[128];
    long from, to;
    int rc;

    START(plain_opts, NULL, NULL, 2, 2, "FROM and TO (version numbers)");
    if (version_arg(cmd, "FROM", p.pos[0], &from) == -1 ||
        version_arg(cmd, "TO", p.pos[1], &to) == -1)
        return ZTCTL_EXIT_USAGE;
    snprintf(path, sizeof(path), "/api/v1/rules/diff?from=%ld&to=%ld", from, to);
    if ((rc = conn_resolve(&c)) != 0 || (rc = api_call(&c, "GET", path, NULL, 0, &r)) != 0)
        goto done;
    if (r.status != 200)
        rc = api_refused(&c, &r);
    else if (need_json(&c, &r) == -1)
        rc = ZTCTL_EXIT_FAIL;
    else if (c.json)
        rc = print_json(r.json);
    else {
        const char *d = json_string_value(json_object_get(r.json, "diff"));
        const json_t *ids = json_object_get(r.json, "rules");
        fputs(d != NULL ? d : "", stdout);
        if (d != NULL && d[0] != '\0' && d[strlen(d) - 1] != '\n')
            putchar('\n');
        print_ids("added", json_object_get(ids, "added"));
        print_ids("removed", json_object_get(ids, "removed"));
        print_ids("changed", json_object_get(ids, "changed"));
        rc = ZTCTL_EXIT_OK;
    }
    resp_reset(&r);
done:
    conn_reset(&c);
    return rc;
}

static const struct ztctl_optdef rollback_opts[] = {
    CONN_OPTS, {"-m", A_COMMENT, 1}, {"--comment", A_COMMENT, 1}, {NULL, 0, 0}};

static int rules_rollback(const char *cmd, int argc, char **argv)
{
    struct ztctl_optp p;
    struct conn c;
    struct rules_args a = {0};
    struct resp r;
    json_t *body;
    long v;
    int rc;

    START(rollback_opts, rules_opt, &a, 1, 1, "VERSION");
    if (version_arg(cmd, "VERSION", p.pos[0], &v) == -1)
        return ZTCTL_EXIT_USAGE;
    body = json_pack("{s:I}", "version", (json_int_t)v);
    if (body == NULL ||
        (a.comment != NULL && json_object_set_new(body, "comment", json_string(a.comment)) == -1)) {
        fprintf(stderr, "ztctl %s: out of memory (or the comment is not UTF-8)\n", cmd);
        json_decref(body);
        return ZTCTL_EXIT_FAIL;
    }
    if ((rc = conn_resolve(&c)) == 0 &&
        (rc = api_json(&c, "POST", "/api/v1/rules/rollback", body, &r)) == 0) {
        rc = print_applied(&c, &r, NULL);
        resp_reset(&r);
    }
    json_decref(body);
    conn_reset(&c);
    return rc;
}

int ztctl_rules_main(int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*fn)(const char *, int, char **);
    } subs[] = {{"get", rules_get},   {"validate", rules_validate},
                {"put", rules_put},   {"history", rules_history},
                {"diff", rules_diff}, {"rollback", rules_rollback}};
    char cmd[64];
    size_t i;

    if (argc == 0) {
        ztctl_usage_error("rules", "missing subcommand (get, validate, put, history, diff, "
                                   "rollback)");
        return ZTCTL_EXIT_USAGE;
    }
    if (strcmp(argv[0], "-h") == 0 || strcmp(argv[0], "--help") == 0) {
        ztctl_help(stdout, "rules");
        return ZTCTL_EXIT_OK;
    }
    for (i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
        if (strcmp(argv[0], subs[i].name) == 0) {
            snprintf(cmd, sizeof(cmd), "rules %s", subs[i].name);
            return subs[i].fn(cmd, argc - 1, argv + 1);
        }
    }
    ztctl_usage_error("rules", "unknown subcommand '%s'", argv[0]);
    return ZTCTL_EXIT_USAGE;
}

/* ---- explain and whatif ---------------------------------------------------------------- */

struct explain_args {
    const char *rules, *route, *user, *email, *device, *ip, *country, *time, *method, *path,
        *auth_age, *tier, *score;
    int mfa;
    struct ztctl_strv groups;
};

static int explain_opt(struct ztctl_optp *p, void *st, int id, const char *val)
{
    struct explain_args *a = st;
    switch (id) {
    case A_RULES:
        return ztctl_opt_once(p, "--rules", &a->rules, val);
    case A_ROUTE:
        return ztctl_opt_once(p, "--route", &a->route, val);
    case A_USER:
        return ztctl_opt_once(p, "--user", &a->user, val);
    case A_EMAIL:
        return ztctl_opt_once(p, "--email", &a->email, val);
    case A_DEVICE:
        return ztctl_opt_once(p, "--device", &a->device, val);
    case A_IP:
        return ztctl_opt_once(p, "--ip", &a->ip, val);
    case A_COUNTRY:
        return ztctl_opt_once(p, "--country", &a->country, val);
    case A_TIME:
        return ztctl_opt_once(p, "--time", &a->time, val);
    case A_METHOD:
        return ztctl_opt_once(p, "--method", &a->method, val);
    case A_PATH:
        return ztctl_opt_once(p, "--path", &a->path, val);
    case A_AUTH_AGE:
        return ztctl_opt_once(p, "--auth-age", &a->auth_age, val);
    case A_TIER:
        return ztctl_opt_once(p, "--tier", &a->tier, val);
    case A_SCORE:
        return ztctl_opt_once(p, "--score", &a->score, val);
    case A_MFA:
        a->mfa = 1;
        return 0;
    case A_GROUP:
        if (ztctl_strv_add(&a->groups, val, 256) == -1) {
            ztctl_usage_error(p->cmd, "too many --group options (at most 256)");
            return -1;
        }
        return 0;
    default:
        return -1;
    }
}

static const struct ztctl_optdef explain_opts[] = {CONN_OPTS,
                                                   {"--rules", A_RULES, 1},
                                                   {"--route", A_ROUTE, 1},
                                                   {"--user", A_USER, 1},
                                                   {"--email", A_EMAIL, 1},
                                                   {"--device", A_DEVICE, 1},
                                                   {"--ip", A_IP, 1},
                                                   {"--country", A_COUNTRY, 1},
                                                   {"--time", A_TIME, 1},
                                                   {"--at", A_TIME, 1},
                                                   {"--method", A_METHOD, 1},
                                                   {"--path", A_PATH, 1},
                                                   {"--auth-age", A_AUTH_AGE, 1},
                                                   {"--tier", A_TIER, 1},
                                                   {"--score", A_SCORE, 1},
                                                   {"--group", A_GROUP, 1},
                                                   {"--mfa", A_MFA, 0},
                                                   {NULL, 0, 0}};

static int set_str(json_t *o, const char *k, const char *v)
{
    return v == NULL ? 0 : json_object_set_new(o, k, json_string(v));
}

static void print_explain(const json_t *o)
{
    const json_t *ctx = json_object_get(o, "context");
    const json_t *rules = json_object_get(o, "rules");
    json_t *v, *cond;
    size_t i, j;
    char t1[64], t2[64], t3[1024];

    printf("decision: %s (rule %s)\n", jstr(o, "decision"), jstr(o, "rule"));
    printf("reasons:\n");
    json_array_foreach(json_object_get(o, "reasons"), i, v)
    {
        printf("  - %s\n", json_string_value(v) ? json_string_value(v) : "?");
    }
    if (json_array_size(json_object_get(o, "reasons")) == 0)
        printf("  (none)\n");
    if (ctx != NULL) {
        printf("context (%s rules):\n", jstr(ctx, "rules"));
        printf("  user %s  email %s  groups %s\n", jstr(ctx, "user"), jstr(ctx, "email"),
               jtext(ctx, "groups", t3, sizeof(t3)));
        printf("  device %s  tier %s  score %s  owner %s  stale %s\n", jstr(ctx, "device"),
               jstr(ctx, "tier"), jtext(ctx, "score", t1, sizeof(t1)), jstr(ctx, "owner"),
               jtext(ctx, "device_stale", t2, sizeof(t2)));
        printf("  ip %s  country %s  time %s\n", jstr(ctx, "ip"), jstr(ctx, "country"),
               jstr(ctx, "time"));
        printf("  route %s  %s %s  mfa %s  auth_age %s\n", jstr(ctx, "route"), jstr(ctx, "method"),
               jstr(ctx, "path"), jtext(ctx, "mfa", t1, sizeof(t1)),
               jtext(ctx, "auth_age", t2, sizeof(t2)));
    }
    printf("rules on the route:\n");
    if (json_array_size(rules) == 0)
        printf("  (none)\n");
    json_array_foreach(rules, i, v)
    {
        int monitor = strcmp(jstr(v, "mode"), "monitor") == 0;
        printf("  %s %s: %s%s\n", jstr(v, "id"), jstr(v, "effect"), jstr(v, "result"),
               monitor ? " (monitor only)" : "");
        json_array_foreach(json_object_get(v, "conditions"), j, cond)
        {
            json_int_t depth = json_integer_value(json_object_get(cond, "depth"));
            const char *res = jstr(cond, "result");
            int ind = (int)(depth > 0 && depth < 20 ? depth * 2 : 0);
            if (strcmp(res, "combinator") == 0)
                printf("      %*s%s\n", ind, "", jstr(cond, "text"));
            else
                printf("      %*s%-7s %s\n", ind, "", res, jstr(cond, "text"));
        }
    }
}

int ztctl_explain_main(int argc, char **argv)
{
    const char *cmd = "explain";
    struct ztctl_optp p;
    struct conn c;
    struct explain_args a;
    struct resp r;
    json_t *ctx = NULL, *body = NULL, *doc = NULL, *g;
    int64_t t;
    long score = -1;
    size_t i;
    int rc = ZTCTL_EXIT_USAGE, pr;

    memset(&a, 0, sizeof(a));
    pr = parse(&p, &c, cmd, explain_opts, argc, argv, explain_opt, &a, 0, 0, "");
    if (pr != 0) {
        ztctl_strv_reset(&a.groups);
        return pr == 1 ? ZTCTL_EXIT_OK : ZTCTL_EXIT_USAGE;
    }
    if (a.time != NULL && ztctl_time_parse(a.time, &t) == -1) {
        ztctl_usage_error(cmd, "--time '%s': expected an RFC 3339 time, e.g. 2026-11-30T09:30:00Z",
                          a.time);
        goto out;
    }
    if (a.auth_age != NULL && ztctl_duration_parse(a.auth_age, &t) == -1) {
        ztctl_usage_error(cmd, "--auth-age '%s': expected a duration (30s, 15m, 1h30m, 2d)",
                          a.auth_age);
        goto out;
    }
    if (a.score != NULL && ztctl_long_parse(a.score, 0, 100, &score) == -1) {
        ztctl_usage_error(cmd, "--score '%s': expected 0..100", a.score);
        goto out;
    }
    rc = ZTCTL_EXIT_FAIL;
    if (a.rules != NULL && (doc = read_json_file(cmd, a.rules)) == NULL)
        goto out;
    rc = ZTCTL_EXIT_UNAVAILABLE;
    ctx = json_object();
    body = json_object();
    if (ctx == NULL || body == NULL || set_str(ctx, "user", a.user) == -1 ||
        set_str(ctx, "email", a.email) == -1 || set_str(ctx, "device", a.device) == -1 ||
        set_str(ctx, "ip", a.ip) == -1 || set_str(ctx, "country", a.country) == -1 ||
        set_str(ctx, "time", a.time) == -1 || set_str(ctx, "route", a.route) == -1 ||
        set_str(ctx, "method", a.method) == -1 || set_str(ctx, "path", a.path) == -1 ||
        set_str(ctx, "auth_age", a.auth_age) == -1 || set_str(ctx, "tier", a.tier) == -1 ||
        (score >= 0 && json_object_set_new(ctx, "score", json_integer(score)) == -1) ||
        (a.mfa && json_object_set_new(ctx, "mfa", json_true()) == -1))
        goto oom;
    if (a.groups.n > 0) {
        if ((g = json_array()) == NULL || json_object_set_new(ctx, "groups", g) == -1)
            goto oom;
        for (i = 0; i < a.groups.n; i++)
            if (json_array_append_new(g, json_string(a.groups.v[i])) == -1)
                goto oom;
    }
    if (json_object_set(body, "context", ctx) == -1 ||
        (doc != NULL && json_object_set(body, "document", doc) == -1))
        goto oom;
    if ((rc = conn_resolve(&c)) != 0 ||
        (rc = api_json(&c, "POST", "/api/v1/explain", body, &r)) != 0)
        goto out;
    if (r.status == 422 && a.rules != NULL) {
        if (c.json)
            print_json(r.json);
        print_rule_errors(a.rules, json_object_get(r.json, "errors"));
        rc = ZTCTL_EXIT_FAIL;
    } else if (r.status != 200)
        rc = api_refused(&c, &r);
    else if (need_json(&c, &r) == -1)
        rc = ZTCTL_EXIT_FAIL;
    else if (c.json)
        rc = print_json(r.json);
    else {
        print_explain(r.json);
        rc = ZTCTL_EXIT_OK;
    }
    resp_reset(&r);
    goto out;
oom:
    fprintf(stderr, "ztctl %s: out of memory (or a value is not UTF-8)\n", cmd);
    rc = ZTCTL_EXIT_FAIL;
out:
    json_decref(ctx);
    json_decref(body);
    json_decref(doc);
    ztctl_strv_reset(&a.groups);
    conn_reset(&c);
    return rc;
}

static void print_changes(const char *label, const json_t *a)
{
    size_t i;
    json_t *v;
    char n[32];

    printf("%s:\n", label);
    if (json_array_size(a) == 0) {
        printf("  (none)\n");
        return;
    }
    printf("  %-16s %-28s %-16s %6s  %-8s %-8s %s\n", "ROUTE", "USER", "DEVICE", "COUNT", "WAS",
           "NOW", "RULE (was)");
    json_array_foreach(a, i, v)
    {
        printf("  %-16s %-28s %-16s %6s  %-8s %-8s %s (%s)\n", jstr(v, "route"), jstr(v, "user"),
               jstr(v, "device"), jtext(v, "count", n, sizeof(n)), jstr(v, "was"), jstr(v, "now"),
               jstr(v, "rule"), jstr(v, "was_rule"));
    }
}

int ztctl_whatif_main(int argc, char **argv)
{
    const char *cmd = "whatif";
    struct ztctl_optp p;
    struct conn c;
    struct resp r;
    json_t *doc, *body, *v;
    const char *k;
    char t1[32], t2[32], t3[32];
    int rc;

    START(plain_opts, NULL, NULL, 1, 1, "FILE");
    if ((doc = read_json_file(cmd, p.pos[0])) == NULL)
        return ZTCTL_EXIT_FAIL;
    body = json_pack("{s:o}", "document", doc);
    if (body == NULL) {
        fprintf(stderr, "ztctl %s: out of memory\n", cmd);
        return ZTCTL_EXIT_FAIL;
    }
    if ((rc = conn_resolve(&c)) != 0 ||
        (rc = api_json(&c, "POST", "/api/v1/whatif", body, &r)) != 0)
        goto done;
    if (r.status == 422) {
        if (c.json)
            print_json(r.json);
        print_rule_errors(p.pos[0], json_object_get(r.json, "errors"));
        rc = ZTCTL_EXIT_FAIL;
    } else if (r.status != 200)
        rc = api_refused(&c, &r);
    else if (need_json(&c, &r) == -1)
        rc = ZTCTL_EXIT_FAIL;
    else if (c.json)
        rc = print_json(r.json);
    else {
        printf("replayed %s recent decisions (skipped %s) against %s\n",
               jtext(r.json, "replayed", t1, sizeof(t1)), jtext(r.json, "skipped", t2, sizeof(t2)),
               p.pos[0]);
        print_changes("would gain access", json_object_get(r.json, "gains"));
        print_changes("would lose access", json_object_get(r.json, "losses"));
        printf("by route:\n");
        json_object_foreach(json_object_get(r.json, "by_route"), k, v)
        {
            printf("  %-16s gains %s  losses %s  unchanged %s\n", k,
                   jtext(v, "gains", t1, sizeof(t1)), jtext(v, "losses", t2, sizeof(t2)),
                   jtext(v, "unchanged", t3, sizeof(t3)));
        }
        rc = ZTCTL_EXIT_OK;
    }
    resp_reset(&r);
done:
    json_decref(body);
    conn_reset(&c);
    return rc;
}

/* ---- devices ---------------------------------------------------------------------------- */

struct dev_args {
    const char *tier, *status, *owner, *limit, *comment;
    int stale;
};

static int dev_opt(struct ztctl_optp *p, void *st, int id, const char *val)
{
    struct dev_args *a = st;
    switch (id) {
    case A_TIER:
        return ztctl_opt_once(p, "--tier", &a->tier, val);
    case A_STATUS:
        return ztctl_opt_once(p, "--status", &a->status, val);
    case A_OWNER:
        return ztctl_opt_once(p, "--owner", &a->owner, val);
    case A_LIMIT:
        return ztctl_opt_once(p, "--limit", &a->limit, val);
    case A_COMMENT:
        return ztctl_opt_once(p, "-m", &a->comment, val);
    case A_STALE:
        a->stale = 1;
        return 0;
    default:
        return -1;
    }
}

static const struct ztctl_optdef dev_list_opts[] = {CONN_OPTS,
                                                    {"--tier", A_TIER, 1},
                                                    {"--status", A_STATUS, 1},
                                                    {"--owner", A_OWNER, 1},
                                                    {"--limit", A_LIMIT, 1},
                                                    {"--stale", A_STALE, 0},
                                                    {NULL, 0, 0}};

static const char *const statuses[] = {"active", "lost", "stolen", "retired", NULL};

static int known_status(const char *s)
{
    size_t i;
    for (i = 0; statuses[i] != NULL; i++)
        if (strcmp(statuses[i], s) == 0)
            return 1;
    return 0;
}

static void print_device_row(const json_t *d)
{
    char score[32], failing[512], age[32], status[64];
    const json_t *ov = json_object_get(d, "override");

    snprintf(status, sizeof(status), "%s%s", jstr(d, "status"), json_is_true(ov) ? "*" : "");
    printf("%-24s %-26s %-9s %-11s %5s  %-8s %s\n", jstr(d, "id"), jstr(d, "owner"), status,
           jstr(d, "tier"), jtext(d, "score", score, sizeof(score)),
           jtext(d, "posture_age", age, sizeof(age)),
           jtext(d, "failing", failing, sizeof(failing)));
}

static int devices_list(const char *cmd, int argc, char **argv)
{
    struct ztctl_optp p;
    struct conn c;
    struct dev_args a = {0};
    struct resp r;
    struct buf path = {0};
    json_t *d;
    size_t i;
    long lim;
    int rc;

    START(dev_list_opts, dev_opt, &a, 0, 0, "");
    if (a.status != NULL && !known_status(a.status)) {
        ztctl_usage_error(cmd, "--status '%s': expected active, lost, stolen or retired", a.status);
        return ZTCTL_EXIT_USAGE;
    }
    if (a.limit != NULL && ztctl_long_parse(a.limit, 1, 1000, &lim) == -1) {
        ztctl_usage_error(cmd, "--limit '%s': expected 1..1000", a.limit);
        return ZTCTL_EXIT_USAGE;
    }
    buf_str(&path, "/api/v1/devices");
    buf_query(&path, "tier", a.tier);
    buf_query(&path, "status", a.status);
    buf_query(&path, "owner", a.owner);
    buf_query(&path, "stale", a.stale ? "1" : NULL);
    buf_query(&path, "limit", a.limit);
    if (path.oom) {
        free(path.p);
        fprintf(stderr, "ztctl %s: out of memory\n", cmd);
        return ZTCTL_EXIT_FAIL;
    }
    if ((rc = conn_resolve(&c)) != 0 || (rc = api_call(&c, "GET", path.p, NULL, 0, &r)) != 0)
        goto done;
    if (r.status != 200)
        rc = api_refused(&c, &r);
    else if (need_json(&c, &r) == -1)
        rc = ZTCTL_EXIT_FAIL;
    else if (c.json)
        rc = print_json(r.json);
    else {
        printf("%-24s %-26s %-9s %-11s %5s  %-8s %s\n", "DEVICE", "OWNER", "STATUS", "TIER",
               "SCORE", "POSTURE", "FAILING");
        json_array_foreach(json_object_get(r.json, "devices"), i, d)
        {
            print_device_row(d);
        }
        printf("(%zu devices; * = status override, POSTURE = seconds since the last report)\n",
               json_array_size(json_object_get(r.json, "devices")));
        rc = ZTCTL_EXIT_OK;
    }
    resp_reset(&r);
done:
    free(path.p);
    conn_reset(&c);
    return rc;
}

static void print_device(const json_t *d)
{
    const json_t *ov = json_object_get(d, "override");
    const json_t *checks = json_object_get(d, "checks");
    const json_t *posture = json_object_get(d, "posture");
    char t1[512], t2[64], t3[64];
    json_t *ck;
    size_t i;

    printf("device   %s\n", jstr(d, "id"));
    printf("owner    %s\n", jstr(d, "owner"));
    printf("status   %s%s\n", jstr(d, "status"), json_is_true(ov) ? " (override)" : "");
    printf("known    %s\n", jtext(d, "known", t1, sizeof(t1)));
    printf("tier     %s (score %s)\n", jstr(d, "tier"), jtext(d, "score", t2, sizeof(t2)));
    printf("failing  %s\n", jtext(d, "failing", t1, sizeof(t1)));
    printf("posture  %s, received %s, %s s ago%s\n",
           posture != NULL && !json_is_null(posture) ? "reported" : "none",
           jstr(d, "posture_received"), jtext(d, "posture_age", t2, sizeof(t2)),
           json_is_true(json_object_get(d, "posture_stale")) ? " (stale)" : "");
    printf("inventory %s%s\n",
           json_is_object(json_object_get(d, "inventory")) ? "record present" : "no record",
           json_is_true(json_object_get(d, "inventory_stale")) ? " (stale)" : "");
    if (json_array_size(checks) > 0) {
        printf("checks:\n  %-20s %-5s %7s %-5s %s\n", "CHECK", "OK", "POINTS", "HARD",
               "REASON / REMEDIATION");
        json_array_foreach(checks, i, ck)
        {
            const char *reason = json_string_value(json_object_get(ck, "reason"));
            const char *rem = json_string_value(json_object_get(ck, "remediation"));
            printf("  %-20s %-5s %3s/%-3s %-5s %s%s%s%s\n", jstr(ck, "id"),
                   json_is_true(json_object_get(ck, "ok")) ? "ok" : "FAIL",
                   jtext(ck, "points", t2, sizeof(t2)), jtext(ck, "weight", t3, sizeof(t3)),
                   json_is_true(json_object_get(ck, "hard")) ? "hard" : "",
                   reason != NULL ? reason : "",
                   json_is_true(json_object_get(ck, "in_grace")) ? " (in grace)" : "",
                   rem != NULL && !json_is_true(json_object_get(ck, "ok")) ? " - " : "",
                   rem != NULL && !json_is_true(json_object_get(ck, "ok")) ? rem : "");
        }
    }
}

static int devices_show(const char *cmd, int argc, char **argv)
{
    struct ztctl_optp p;
    struct conn c;
    struct resp r;
    struct buf path = {0};
    int rc;

    START(plain_opts, NULL, NULL, 1, 1, "ID");
    buf_str(&path, "/api/v1/devices/");
    buf_esc(&path, p.pos[0]);
    if (path.oom) {
        free(path.p);
        fprintf(stderr, "ztctl %s: out of memory\n", cmd);
        return ZTCTL_EXIT_FAIL;
    }
    if ((rc = conn_resolve(&c)) != 0 || (rc = api_call(&c, "GET", path.p, NULL, 0, &r)) != 0)
        goto done;
    if (r.status != 200)
        rc = api_refused(&c, &r);
    else if (need_json(&c, &r) == -1)
        rc = ZTCTL_EXIT_FAIL;
    else if (c.json)
        rc = print_json(r.json);
    else {
        print_device(r.json);
        rc = ZTCTL_EXIT_OK;
    }
    resp_reset(&r);
done:
    free(path.p);
    conn_reset(&c);
    return rc;
}

static const struct ztctl_optdef set_status_opts[] = {
    CONN_OPTS, {"-m", A_COMMENT, 1}, {"--comment", A_COMMENT, 1}, {NULL, 0, 0}};

static int devices_set_status(const char *cmd, int argc, char **argv)
{
    struct ztctl_optp p;
    struct conn c;
    struct dev_args a = {0};
    struct resp r;
    struct buf path = {0};
    json_t *body = NULL;
    const char *st;
    int rc;

    START(set_status_opts, dev_opt, &a, 2, 2, "ID and STATUS");
    st = p.pos[1];
    if (!known_status(st) && strcmp(st, "clear") != 0) {
        ztctl_usage_error(cmd, "status '%s': expected lost, active, stolen, retired or clear", st);
        return ZTCTL_EXIT_USAGE;
    }
    if (a.comment == NULL) {
        ztctl_usage_error(cmd, "missing -m COMMENT (why the status changes)");
        return ZTCTL_EXIT_USAGE;
    }
    buf_str(&path, "/api/v1/devices/");
    buf_esc(&path, p.pos[0]);
    buf_str(&path, "/status");
    body =
        json_pack("{s:o,s:s}", "status", strcmp(st, "clear") == 0 ? json_null() : json_string(st),
                  "comment", a.comment);
    if (path.oom || body == NULL) {
        fprintf(stderr, "ztctl %s: out of memory (or the comment is not UTF-8)\n", cmd);
        rc = ZTCTL_EXIT_FAIL;
        memset(&c, 0, sizeof(c));
        goto done;
    }
    if ((rc = conn_resolve(&c)) != 0 || (rc = api_json(&c, "PUT", path.p, body, &r)) != 0)
        goto done;
    if (r.status != 200)
        rc = api_refused(&c, &r);
    else if (need_json(&c, &r) == -1)
        rc = ZTCTL_EXIT_FAIL;
    else if (c.json)
        rc = print_json(r.json);
    else {
        printf("device %s: status %s%s, tier %s\n", jstr(r.json, "id"), jstr(r.json, "status"),
               json_is_true(json_object_get(r.json, "override")) ? " (override)" : " (no override)",
               jstr(r.json, "tier"));
        rc = ZTCTL_EXIT_OK;
    }
    resp_reset(&r);
done:
    json_decref(body);
    free(path.p);
    conn_reset(&c);
    return rc;
}

int ztctl_devices_main(int argc, char **argv)
{
    if (argc == 0) {
        ztctl_usage_error("devices", "missing subcommand (list, show, set-status)");
        return ZTCTL_EXIT_USAGE;
    }
    if (strcmp(argv[0], "-h") == 0 || strcmp(argv[0], "--help") == 0) {
        ztctl_help(stdout, "devices");
        return ZTCTL_EXIT_OK;
    }
    if (strcmp(argv[0], "list") == 0)
        return devices_list("devices list", argc - 1, argv + 1);
    if (strcmp(argv[0], "show") == 0)
        return devices_show("devices show", argc - 1, argv + 1);
    if (strcmp(argv[0], "set-status") == 0)
        return devices_set_status("devices set-status", argc - 1, argv + 1);
    ztctl_usage_error("devices", "unknown subcommand '%s'", argv[0]);
    return ZTCTL_EXIT_USAGE;
}

/* ---- sessions and decisions -------------------------------------------------------------- */

struct q_args {
    const char *user, *session, *device, *route, *effect, *limit, *comment;
};

static int q_opt(struct ztctl_optp *p, void *st, int id, const char *val)
{
    struct q_args *a = st;
    switch (id) {
    case A_USER:
        return ztctl_opt_once(p, "--user", &a->user, val);
    case A_SESSION:
        return ztctl_opt_once(p, "--session", &a->session, val);
    case A_DEVICE:
        return ztctl_opt_once(p, "--device", &a->device, val);
    case A_ROUTE:
        return ztctl_opt_once(p, "--route", &a->route, val);
    case A_EFFECT:
        return ztctl_opt_once(p, "--effect", &a->effect, val);
    case A_LIMIT:
        return ztctl_opt_once(p, "--limit", &a->limit, val);
    case A_COMMENT:
        return ztctl_opt_once(p, "-m", &a->comment, val);
    default:
        return -1;
    }
}

static const struct ztctl_optdef revoke_opts[] = {CONN_OPTS,
                                                  {"--user", A_USER, 1},
                                                  {"--session", A_SESSION, 1},
                                                  {"-m", A_COMMENT, 1},
                                                  {"--comment", A_COMMENT, 1},
                                                  {NULL, 0, 0}};

static int sessions_revoke(const char *cmd, int argc, char **argv)
{
    struct ztctl_optp p;
    struct conn c;
    struct q_args a = {0};
    struct resp r;
    json_t *body;
    size_t i;
    int rc;

    START(revoke_opts, q_opt, &a, 0, 0, "");
    if ((a.user == NULL) == (a.session == NULL)) {
        ztctl_usage_error(cmd, "give exactly one of --user SUB and --session HEX");
        return ZTCTL_EXIT_USAGE;
    }
    if (a.session != NULL) {
        for (i = 0; a.session[i] != '\0'; i++)
            if (!((a.session[i] >= '0' && a.session[i] <= '9') ||
                  (a.session[i] >= 'a' && a.session[i] <= 'f') ||
                  (a.session[i] >= 'A' && a.session[i] <= 'F')))
                break;
        if (i != 32 || a.session[i] != '\0') {
            ztctl_usage_error(cmd, "--session '%s': expected a session id of 32 hex digits",
                              a.session);
            return ZTCTL_EXIT_USAGE;
        }
    }
    body = a.user != NULL ? json_pack("{s:s}", "user", a.user)
                          : json_pack("{s:s}", "session_id", a.session);
    if (body == NULL ||
        (a.comment != NULL && json_object_set_new(body, "comment", json_string(a.comment)) == -1)) {
        json_decref(body);
        fprintf(stderr, "ztctl %s: out of memory (or a value is not UTF-8)\n", cmd);
        return ZTCTL_EXIT_FAIL;
    }
    if ((rc = conn_resolve(&c)) != 0 ||
        (rc = api_json(&c, "POST", "/api/v1/sessions/revoke", body, &r)) != 0)
        goto done;
    if (r.status != 200)
        rc = api_refused(&c, &r);
    else if (need_json(&c, &r) == -1)
        rc = ZTCTL_EXIT_FAIL;
    else if (c.json)
        rc = print_json(r.json);
    else {
        if (a.user != NULL)
            printf("revoked: every session of user %s issued until now\n", a.user);
        else
            printf("revoked: session %s\n", a.session);
        rc = ZTCTL_EXIT_OK;
    }
    resp_reset(&r);
done:
    json_decref(body);
    conn_reset(&c);
    return rc;
}

int ztctl_sessions_main(int argc, char **argv)
{
    if (argc == 0) {
        ztctl_usage_error("sessions", "missing subcommand (revoke)");
        return ZTCTL_EXIT_USAGE;
    }
    if (strcmp(argv[0], "-h") == 0 || strcmp(argv[0], "--help") == 0) {
        ztctl_help(stdout, "sessions");
        return ZTCTL_EXIT_OK;
    }
    if (strcmp(argv[0], "revoke") == 0)
        return sessions_revoke("sessions revoke", argc - 1, argv + 1);
    ztctl_usage_error("sessions", "unknown subcommand '%s'", argv[0]);
    return ZTCTL_EXIT_USAGE;
}

static const struct ztctl_optdef decisions_opts[] = {CONN_OPTS,
                                                     {"--user", A_USER, 1},
                                                     {"--device", A_DEVICE, 1},
                                                     {"--route", A_ROUTE, 1},
                                                     {"--effect", A_EFFECT, 1},
                                                     {"--limit", A_LIMIT, 1},
                                                     {NULL, 0, 0}};

int ztctl_decisions_main(int argc, char **argv)
{
    const char *cmd = "decisions";
    struct ztctl_optp p;
    struct conn c;
    struct q_args a = {0};
    struct resp r;
    struct buf path = {0};
    json_t *d, *reason;
    size_t i, j;
    long lim;
    int rc;

    START(decisions_opts, q_opt, &a, 0, 0, "");
    if (a.effect != NULL && strcmp(a.effect, "allow") != 0 && strcmp(a.effect, "deny") != 0 &&
        strcmp(a.effect, "step_up") != 0) {
        ztctl_usage_error(cmd, "--effect '%s': expected allow, deny or step_up", a.effect);
        return ZTCTL_EXIT_USAGE;
    }
    if (a.limit != NULL && ztctl_long_parse(a.limit, 1, 1000, &lim) == -1) {
        ztctl_usage_error(cmd, "--limit '%s': expected 1..1000", a.limit);
        return ZTCTL_EXIT_USAGE;
    }
    buf_str(&path, "/api/v1/decisions");
    buf_query(&path, "user", a.user);
    buf_query(&path, "device", a.device);
    buf_query(&path, "route", a.route);
    buf_query(&path, "effect", a.effect);
    buf_query(&path, "limit", a.limit);
    if (path.oom) {
        free(path.p);
        fprintf(stderr, "ztctl %s: out of memory\n", cmd);
        return ZTCTL_EXIT_FAIL;
    }
    if ((rc = conn_resolve(&c)) != 0 || (rc = api_call(&c, "GET", path.p, NULL, 0, &r)) != 0)
        goto done;
    if (r.status != 200)
        rc = api_refused(&c, &r);
    else if (need_json(&c, &r) == -1)
        rc = ZTCTL_EXIT_FAIL;
    else if (c.json)
        rc = print_json(r.json);
    else {
        printf("%-24s %-12s %-7s %-20s %-24s %-16s %s\n", "TIME", "ROUTE", "EFFECT", "RULE", "USER",
               "DEVICE", "REQUEST");
        json_array_foreach(json_object_get(r.json, "decisions"), i, d)
        {
            const char *email = json_string_value(json_object_get(d, "email"));
            printf("%-24s %-12s %-7s %-20s %-24s %-16s %s %s\n", jstr(d, "time"), jstr(d, "route"),
                   jstr(d, "effect"), jstr(d, "rule"), email != NULL ? email : jstr(d, "user"),
                   jstr(d, "device"), jstr(d, "method"), jstr(d, "path"));
            if (strcmp(jstr(d, "effect"), "allow") != 0)
                json_array_foreach(json_object_get(d, "reasons"), j, reason)
                {
                    printf("    - %s\n",
                           json_string_value(reason) ? json_string_value(reason) : "?");
                }
        }
        printf("(%zu decisions)\n", json_array_size(json_object_get(r.json, "decisions")));
        rc = ZTCTL_EXIT_OK;
    }
    resp_reset(&r);
done:
    free(path.p);
    conn_reset(&c);
    return rc;
}
