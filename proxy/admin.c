/*
 * admin.c - the admin API listener (include/admin.h, docs/admin-api.md).
 *
 * One evhttp on the main loop, its connections wrapped in
 * bufferevent_openssl by the bevcb. Per request, in this order:
 *   /healthz, /readyz, /metrics (no credential: they hold no secrets);
 *   /api/...: credential (token, else certificate) -> 401/403; CSRF for
 *   writes -> 403; the JSON body -> 400; then the endpoint group;
 *   anything else: the console's static files, if configured.
 *
 * Settings live in one struct ad_cfg that a reconfigure replaces; a
 * connection's SSL was made from the SSL_CTX current when it was accepted.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/util.h>
#include <jansson.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "admin.h"
#include "admin_int.h"
#include "admin_rules.h"
#include "admin_token.h"
#include "auditlog.h"
#include "authz.h"
#include "conf.h"
#include "devtrust.h"
#include "log.h"
#include "metrics.h"
#include "proxy.h"
#include "shared.h"

#define AD_IDENTITY_MAX 320
#define AD_STATIC_MAX (8u * 1024 * 1024)

/* What a reconfigure replaces. */
struct ad_cfg {
    struct conf *conf; /* referenced */
    SSL_CTX *ctx;
    char origin[300]; /* "https://127.0.0.1:9443" */
};

struct ad_state {
    struct event_base *base;
    struct evhttp *http;
    evutil_socket_t fd;
    struct conf_listener listen; /* text points into cfg->conf */
    struct ad_cfg *cfg;
    /* the token file, re-read when it changes */
    char *tok_path;
    struct admin_tokens *tokens;
    struct stat tok_st;
    int tok_loaded;
};

static struct ad_state *ad;

/* ---- replies and audit (admin_int.h) ---------------------------------------- */

void admin_error(struct admin_reply *out, int status, const char *code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    json_decref(out->body);
    out->status = status;
    out->body = json_pack("{s:s,s:s}", "error", code, "message", msg);
}

void admin_audit(const struct admin_call *c, const char *what, json_t *detail)
{
    struct evbuffer *buf;
    struct timespec ts;
    char *dj = detail != NULL ? json_dumps(detail, JSON_COMPACT | JSON_SORT_KEYS) : NULL;

    log_info("admin: %s by %s", what, c->actor);
    if (auditlog_enabled()) {
        buf = evbuffer_new();
        if (buf != NULL) {
            clock_gettime(CLOCK_REALTIME, &ts);
            auditlog_append_admin(buf, (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000, c->actor,
                                  what, dj);
            auditlog_submit(buf);
            evbuffer_free(buf);
        } else {
            log_warnx("admin: out of memory: the audit line for \"%s\" by %s is lost", what,
                      c->actor);
        }
    }
    free(dj);
}

static void ad_send_json(struct evhttp_request *req, int status, json_t *body)
{
    struct evkeyvalq *oh = evhttp_request_get_output_headers(req);
    struct evbuffer *b = evbuffer_new();
    char *text = NULL;

    if (b == NULL) {
        evhttp_send_error(req, 500, NULL);
        json_decref(body);
        return;
    }
    if (body != NULL) {
        text = json_dumps(body, JSON_COMPACT);
        if (text == NULL) {
            status = 500;
            text = strdup("{\"error\":\"internal\",\"message\":\"out of memory\"}");
        }
        if (text != NULL) {
            evbuffer_add(b, text, strlen(text));
            evbuffer_add(b, "\n", 1);
        }
        evhttp_add_header(oh, "Content-Type", "application/json");
    }
    evhttp_add_header(oh, "Cache-Control", "no-store");
    evhttp_add_header(oh, "X-Content-Type-Options", "nosniff");
    evhttp_send_reply(req, status, NULL, b);
    evbuffer_free(b);
    free(text);
    json_decref(body);
}

static void ad_send_error(struct evhttp_request *req, int status, const char *code, const char *fmt,
                          ...) __attribute__((format(printf, 4, 5)));

static void ad_send_error(struct evhttp_request *req, int status, const char *code, const char *fmt,
                          ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    ad_send_json(req, status, json_pack("{s:s,s:s}", "error", code, "message", msg));
}

/* ---- credentials ---------------------------------------------------------------- */

/* Re-read the token file when its stat changed. A bad new file keeps the
 * tokens that were good (logged); a missing file: no tokens. */
static void ad_tokens_refresh(void)
{
    char err[512], *buf = NULL;
    struct admin_tokens *t;
    struct stat sb;
    ssize_t n;
    size_t len = 0;
    int fd;

    if (ad->tok_path == NULL)
        return;
    if (stat(ad->tok_path, &sb) == -1) {
        if (ad->tok_loaded || ad->tokens != NULL)
            log_warnx("admin: token file %s: %s: no token is accepted", ad->tok_path,
                      strerror(errno));
        admin_tokens_free(ad->tokens);
        ad->tokens = NULL;
        ad->tok_loaded = 0;
        return;
    }
    if (ad->tok_loaded && sb.st_ino == ad->tok_st.st_ino && sb.st_dev == ad->tok_st.st_dev &&
        sb.st_size == ad->tok_st.st_size && sb.st_mtim.tv_sec == ad->tok_st.st_mtim.tv_sec &&
        sb.st_mtim.tv_nsec == ad->tok_st.st_mtim.tv_nsec &&
        sb.st_ctim.tv_sec == ad->tok_st.st_ctim.tv_sec &&
        sb.st_ctim.tv_nsec == ad->tok_st.st_ctim.tv_nsec)
        return;
    ad->tok_st = sb;
    ad->tok_loaded = 1;
    if (!S_ISREG(sb.st_mode) || (sb.st_mode & 077) != 0 || sb.st_size > ADMIN_TOKEN_FILE_MAX) {
        log_warnx("admin: token file %s refused: it must be a private (chmod 600) regular file "
                  "of at most %u bytes; keeping the tokens loaded before",
                  ad->tok_path, ADMIN_TOKEN_FILE_MAX);
        return;
    }
    fd = open(ad->tok_path, O_RDONLY | O_CLOEXEC);
    buf = malloc((size_t)sb.st_size + 1);
    if (fd == -1 || buf == NULL) {
        log_warnx("admin: token file %s: cannot read it; keeping the tokens loaded before",
                  ad->tok_path);
        goto out;
    }
    while (len < (size_t)sb.st_size) {
        n = read(fd, buf + len, (size_t)sb.st_size - len);
        if (n == -1 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    t = admin_tokens_parse(buf, len, ad->tok_path, err, sizeof(err));
    if (t == NULL) {
        log_warnx("admin: token file refused, keeping the tokens loaded before: %s", err);
        goto out;
    }
    admin_tokens_free(ad->tokens);
    ad->tokens = t;
    log_info("admin: token file %s: %zu tokens", ad->tok_path, admin_tokens_count(t));
out:
    if (buf != NULL) {
        OPENSSL_cleanse(buf, (size_t)sb.st_size + 1);
        free(buf);
    }
    if (fd != -1)
        close(fd);
}

static int ad_printable(const char *s, size_t n)
{
    size_t i;

    if (n == 0 || n > AD_IDENTITY_MAX)
        return 0;
    for (i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
            return 0;
    return 1;
}

/* A verified client certificate's identity: SAN e-mail, else subject CN.
 * 0 and out, or -1 (none, not verified, unusable). */
static int ad_cert_identity(SSL *ssl, char *out, size_t len)
{
    X509 *x = ssl != NULL ? SSL_get0_peer_certificate(ssl) : NULL;
    GENERAL_NAMES *sans;
    X509_NAME *subj;
    int i, rc = -1;

    out[0] = '\0';
    if (x == NULL || SSL_get_verify_result(ssl) != X509_V_OK)
        return -1;
    sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    for (i = 0; sans != NULL && i < sk_GENERAL_NAME_num(sans) && rc == -1; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
        if (g->type == GEN_EMAIL) {
            const char *s = (const char *)ASN1_STRING_get0_data(g->d.rfc822Name);
            size_t n = (size_t)ASN1_STRING_length(g->d.rfc822Name);
            if (ad_printable(s, n) && n < len) {
                memcpy(out, s, n);
                out[n] = '\0';
                rc = 0;
            }
        }
    }
    GENERAL_NAMES_free(sans);
    if (rc == 0)
        return 0;
    subj = X509_get_subject_name(x);
    i = subj != NULL ? X509_NAME_get_index_by_NID(subj, NID_commonName, -1) : -1;
    if (i >= 0) {
        const ASN1_STRING *d = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, i));
        const char *s = (const char *)ASN1_STRING_get0_data(d);
        size_t n = (size_t)ASN1_STRING_length(d);
        if (ad_printable(s, n) && n < len) {
            memcpy(out, s, n);
            out[n] = '\0';
            return 0;
        }
    }
    return -1;
}

enum ad_auth { AD_AUTH_OK = 0, AD_AUTH_NONE, AD_AUTH_DENIED };

/* Who is calling: actor gets "token:<name>" or "cert:<identity>". */
static enum ad_auth ad_authenticate(struct evhttp_request *req, char *actor, size_t alen, char *why,
                                    size_t wlen)
{
    const char *auth = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    struct bufferevent *bev = evcon != NULL ? evhttp_connection_get_bufferevent(evcon) : NULL;
    SSL *ssl = bev != NULL ? bufferevent_openssl_get_ssl(bev) : NULL;
    const struct conf *c = ad->cfg->conf;
    char id[AD_IDENTITY_MAX + 1];
    size_t i;

    if (auth != NULL) {
        const char *name;

        if (strncasecmp(auth, "Bearer ", 7) != 0) {
            snprintf(why, wlen, "the Authorization header is not \"Bearer <token>\"");
            return AD_AUTH_NONE;
        }
        ad_tokens_refresh();
        name = admin_tokens_match(ad->tokens, auth + 7, strlen(auth + 7));
        if (name == NULL) {
            snprintf(why, wlen, "the token is not valid");
            return AD_AUTH_DENIED;
        }
        snprintf(actor, alen, "token:%s", name);
        return AD_AUTH_OK;
    }
    if (ad_cert_identity(ssl, id, sizeof(id)) == -1) {
        snprintf(why, wlen, "an admin client certificate or an admin token is required");
        return AD_AUTH_NONE;
    }
    /* Live, per request: leaving the group ends admin rights at once. */
    for (i = 0; i < c->nadmin_groups; i++) {
        if (authz_user_in_group(id, c->admin_groups[i]) == 1) {
            snprintf(actor, alen, "cert:%s", id);
            return AD_AUTH_OK;
        }
    }
    snprintf(why, wlen, "certificate \"%s\" is not in an admin group", id);
    return AD_AUTH_DENIED;
}

/* CSRF (docs/admin-api.md): a write must be JSON and, with an Origin, ours. */
static int ad_csrf_ok(struct evhttp_request *req, char *why, size_t wlen)
{
    struct evkeyvalq *h = evhttp_request_get_input_headers(req);
    const char *ct = evhttp_find_header(h, "Content-Type");
    const char *origin = evhttp_find_header(h, "Origin");
    size_t n;

    if (ct == NULL) {
        snprintf(why, wlen, "a write must send Content-Type: application/json");
        return 0;
    }
    n = strcspn(ct, "; \t");
    if (n != 16 || strncasecmp(ct, "application/json", 16) != 0) {
        snprintf(why, wlen, "a write must send Content-Type: application/json");
        return 0;
    }
    if (origin != NULL && strcmp(origin, ad->cfg->origin) != 0) {
        snprintf(why, wlen, "the Origin is not this admin listener's (%s)", ad->cfg->origin);
        return 0;
    }
    return 1;
}

/* ---- health --------------------------------------------------------------------- */

static void ad_readyz(struct evhttp_request *req)
{
    const struct conf *c = ad->cfg->conf;
    struct authz_stats as;
    struct devtrust_stats ds;
    struct shared_stats ss;
    json_t *reasons = json_array(), *body;
    int64_t now = (int64_t)time(NULL);
    int ready;

    authz_stats(&as);
    devtrust_stats(now, &ds);
    if (reasons == NULL) {
        ad_send_error(req, 500, "internal", "out of memory");
        return;
    }
    if (c->policy_rules != NULL && !as.enabled)
        json_array_append_new(reasons, json_string("the rules are not loaded"));
    if ((c->policy_dir_file != NULL || c->policy_dir_url != NULL) && !as.directory_loaded)
        json_array_append_new(reasons, json_string("the directory is not loaded"));
    if (ds.configured && ds.inventory_stale)
        json_array_append_new(reasons, json_string(ds.feed_age < 0
                                                       ? "the device inventory feed is not loaded"
                                                       : "the device inventory feed is stale"));
    if (proxy_draining())
        json_array_append_new(reasons, json_string("shutting down: draining the open requests"));
    ready = json_array_size(reasons) == 0;
    /* Redis away does not make a replica unready: every replica would fail
     * at once (an outage) while each can still serve from its own state.
     * It is "degraded" instead (docs/operations.md). */
    shared_stats(now, &ss);
    body = json_pack(
        "{s:b,s:o,s:{s:b,s:i,s:s,s:I},s:{s:b,s:i,s:s},s:{s:b,s:I,s:b,s:I}}", "ready", ready,
        "reasons", reasons, "rules", "loaded", as.enabled, "count", (int)as.rules, "version",
        as.rules_version, "history_version", (json_int_t)admin_rules_version(), "directory",
        "loaded", as.directory_loaded, "users", (int)as.directory_users, "version",
        as.directory_version, "device_trust", "configured", ds.configured, "feed_age",
        (json_int_t)ds.feed_age, "stale", ds.inventory_stale, "records", (json_int_t)ds.records);
    if (body == NULL) {
        ad_send_error(req, 500, "internal", "out of memory");
        return;
    }
    if (ss.configured) {
        char why[400];

        if (!ss.connected)
            snprintf(why, sizeof(why),
                     "redis unreachable for %llds (%s): serving from this replica's state, "
                     "changes are not shared until it is back",
                     (long long)(ss.down_since > 0 ? now - ss.down_since : 0), ss.last_error);
        json_object_set_new(body, "degraded", ss.connected ? json_false() : json_true());
        if (!ss.connected)
            json_object_set_new(body, "degraded_reasons", json_pack("[s]", why));
        json_object_set_new(
            body, "redis",
            json_pack("{s:b,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:s}", "connected", ss.connected,
                      "down_since", (json_int_t)ss.down_since, "connects", (json_int_t)ss.connects,
                      "disconnects", (json_int_t)ss.disconnects, "errors", (json_int_t)ss.errors,
                      "published", (json_int_t)ss.published, "received", (json_int_t)ss.received,
                      "dropped", (json_int_t)ss.dropped, "queued", (json_int_t)ss.queued,
                      "last_error", ss.last_error));
    }
    ad_send_json(req, ready ? 200 : 503, body);
}

/* ---- the API ---------------------------------------------------------------------- */

static const char *ad_query(const struct admin_call *c, const char *name)
{
    return evhttp_find_header((struct evkeyvalq *)c->query_arg, name);
}

static const char *ad_method_name(enum evhttp_cmd_type m)
{
    switch (m) {
    case EVHTTP_REQ_GET:
        return "GET";
    case EVHTTP_REQ_POST:
        return "POST";
    case EVHTTP_REQ_PUT:
        return "PUT";
    case EVHTTP_REQ_DELETE:
        return "DELETE";
    case EVHTTP_REQ_HEAD:
        return "HEAD";
    default:
        return NULL;
    }
}

typedef void (*ad_group_cb)(const struct admin_call *c, struct admin_reply *out);

static const struct {
    const char *prefix;
    ad_group_cb cb;
} ad_groups[] = {
    {"/rules", admin_rules},         {"/explain", admin_explain},     {"/whatif", admin_whatif},
    {"/devices", admin_devices},     {"/directory", admin_directory}, {"/sessions", admin_sessions},
    {"/decisions", admin_decisions},
};

static void ad_api(struct evhttp_request *req, const char *method, const char *path,
                   const char *query)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    struct evkeyvalq q;
    struct admin_call call;
    struct admin_reply reply = {0, NULL};
    char actor[AD_IDENTITY_MAX + 16], why[512];
    int write = strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0;
    size_t i, blen = evbuffer_get_length(in);
    json_t *body = NULL;

    TAILQ_INIT(&q);
    switch (ad_authenticate(req, actor, sizeof(actor), why, sizeof(why))) {
    case AD_AUTH_OK:
        break;
    case AD_AUTH_NONE:
        evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate",
                          "Bearer realm=\"ztproxy-admin\"");
        ad_send_error(req, 401, "unauthenticated", "%s", why);
        return;
    default:
        log_info("admin: %s %s refused: %s", method, path, why);
        ad_send_error(req, 403, "forbidden", "%s", why);
        return;
    }
    if (write && !ad_csrf_ok(req, why, sizeof(why))) {
        log_info("admin: %s %s by %s refused (csrf): %s", method, path, actor, why);
        ad_send_error(req, 403, "csrf", "%s", why);
        return;
    }
    if (strncmp(path, "/api/v1/", 8) != 0) {
        ad_send_error(req, 404, "not_found", "no such endpoint: %s", path);
        return;
    }
    if (blen > 0) {
        json_error_t jerr;
        const char *data;

        if (!write) {
            ad_send_error(req, 400, "bad_request", "a %s request has no body", method);
            return;
        }
        data = (const char *)evbuffer_pullup(in, -1);
        body = data != NULL ? json_loadb(data, blen, JSON_REJECT_DUPLICATES, &jerr) : NULL;
        if (body == NULL) {
            ad_send_json(req, 400,
                         json_pack("{s:s,s:s+,s:i,s:i,s:i}", "error", "bad_json", "message",
                                   "the body is not valid JSON: ", jerr.text, "line", jerr.line,
                                   "column", jerr.column, "position", jerr.position));
            return;
        }
    }
    if (evhttp_parse_query_str(query != NULL ? query : "", &q) == -1) {
        json_decref(body);
        ad_send_error(req, 400, "bad_request", "the query string cannot be parsed");
        return;
    }
    memset(&call, 0, sizeof(call));
    call.method = method;
    call.path = path + 7; /* "/api/v1" */
    call.query = ad_query;
    call.query_arg = &q;
    call.body = body;
    call.actor = actor;
    call.conf = ad->cfg->conf;
    call.now = (int64_t)time(NULL);
    for (i = 0; i < sizeof(ad_groups) / sizeof(ad_groups[0]); i++) {
        size_t pl = strlen(ad_groups[i].prefix);

        if (strncmp(call.path, ad_groups[i].prefix, pl) == 0 &&
            (call.path[pl] == '\0' || call.path[pl] == '/')) {
            call.sub = call.path + pl;
            ad_groups[i].cb(&call, &reply);
            break;
        }
    }
    if (i == sizeof(ad_groups) / sizeof(ad_groups[0]))
        admin_error(&reply, 404, "not_found", "no such endpoint: %s", path);
    if (reply.status < 100 || reply.status > 599) {
        json_decref(reply.body);
        reply.body = NULL;
        admin_error(&reply, 500, "internal", "the handler gave no answer");
    }
    ad_send_json(req, reply.status, reply.body);
    evhttp_clear_headers(&q);
    json_decref(body);
}

/* ---- the console's static files ---------------------------------------------------- */

static const char *ad_mime(const char *path)
{
    static const struct {
        const char *ext, *type;
    } t[] = {
        {".html", "text/html; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"},
        {".json", "application/json"},
        {".svg", "image/svg+xml"},
        {".png", "image/png"},
        {".ico", "image/x-icon"},
        {".txt", "text/plain; charset=utf-8"},
    };
    const char *dot = strrchr(path, '.');
    size_t i;

    for (i = 0; dot != NULL && i < sizeof(t) / sizeof(t[0]); i++)
        if (strcmp(dot, t[i].ext) == 0)
            return t[i].type;
    return "application/octet-stream";
}

static void ad_static(struct evhttp_request *req, const char *method, const char *path)
{
    const char *dir = ad->cfg->conf->admin_console_dir;
    struct evkeyvalq *oh = evhttp_request_get_output_headers(req);
    char full[4096];
    struct evbuffer *b;
    struct stat sb;
    size_t i;
    int fd;

    if (dir == NULL) {
        ad_send_error(req, 404, "not_found", "no such endpoint: %s", path);
        return;
    }
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        ad_send_error(req, 405, "method_not_allowed", "static files are read with GET");
        return;
    }
    /* Only plain names below the folder: no "..", no hidden files. */
    for (i = 0; path[i] != '\0'; i++) {
        unsigned char ch = (unsigned char)path[i];
        if (ch < 0x21 || ch > 0x7e || ch == '\\' || (ch == '.' && (i == 0 || path[i - 1] == '/'))) {
            ad_send_error(req, 404, "not_found", "no such file");
            return;
        }
    }
    if ((size_t)snprintf(full, sizeof(full), "%s%s%s", dir, path,
                         path[strlen(path) - 1] == '/' ? "index.html" : "") >= sizeof(full)) {
        ad_send_error(req, 404, "not_found", "no such file");
        return;
    }
    fd = open(full, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd == -1 || fstat(fd, &sb) == -1 || !S_ISREG(sb.st_mode) ||
        (uint64_t)sb.st_size > AD_STATIC_MAX) {
        if (fd != -1)
            close(fd);
        ad_send_error(req, 404, "not_found", "no such file");
        return;
    }
    b = evbuffer_new();
    while (b != NULL && evbuffer_get_length(b) < (size_t)sb.st_size) {
        int n = evbuffer_read(b, fd, (int)((size_t)sb.st_size - evbuffer_get_length(b)));

        if (n == -1 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
    }
    close(fd);
    if (b == NULL || evbuffer_get_length(b) != (size_t)sb.st_size) {
        if (b != NULL)
            evbuffer_free(b);
        ad_send_error(req, 500, "internal", "cannot read the file");
        return;
    }
    evhttp_add_header(oh, "Content-Type", ad_mime(full));
    evhttp_add_header(oh, "Cache-Control", "no-cache");
    evhttp_add_header(oh, "X-Content-Type-Options", "nosniff");
    evhttp_add_header(oh, "X-Frame-Options", "DENY");
    evhttp_add_header(oh, "Content-Security-Policy",
                      "default-src 'self'; frame-ancestors 'none'; form-action 'self'");
    evhttp_send_reply(req, 200, NULL, b);
    evbuffer_free(b);
}

/* /metrics: Prometheus text (metrics.h), no credential (loopback listener). */
static void ad_metrics(struct evhttp_request *req, const char *method)
{
    struct evkeyvalq *oh = evhttp_request_get_output_headers(req);
    struct evbuffer *b;

    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        ad_send_error(req, 405, "method_not_allowed", "metrics are read with GET");
        return;
    }
    b = evbuffer_new();
    if (b == NULL) {
        evhttp_send_error(req, 500, NULL);
        return;
    }
    metrics_render(b);
    evhttp_add_header(oh, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    evhttp_add_header(oh, "Cache-Control", "no-store");
    evhttp_send_reply(req, 200, NULL, b);
    evbuffer_free(b);
}

/* ---- dispatch ------------------------------------------------------------------------ */

static void ad_request(struct evhttp_request *req, void *arg)
{
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *method = ad_method_name(evhttp_request_get_command(req));
    const char *raw = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
    char *path = NULL;
    size_t plen = 0;

    (void)arg;
    if (method == NULL) {
        ad_send_error(req, 405, "method_not_allowed", "method not allowed");
        return;
    }
    if (raw == NULL || raw[0] != '/') {
        ad_send_error(req, 400, "bad_request", "the request target must be a path");
        return;
    }
    path = evhttp_uridecode(raw, 0, &plen);
    if (path == NULL || strlen(path) != plen) {
        ad_send_error(req, 400, "bad_request", "the path holds a NUL byte");
        free(path);
        return;
    }
    if (strcmp(path, "/healthz") == 0) {
        struct evbuffer *b = evbuffer_new();

        if (b != NULL) {
            evbuffer_add(b, "ok\n", 3);
            evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                              "text/plain; charset=utf-8");
            evhttp_send_reply(req, 200, NULL, b);
            evbuffer_free(b);
        } else {
            evhttp_send_error(req, 500, NULL);
        }
    } else if (strcmp(path, "/readyz") == 0) {
        ad_readyz(req);
    } else if (strcmp(path, "/metrics") == 0) {
        ad_metrics(req, method);
    } else if (strcmp(path, "/api") == 0 || strncmp(path, "/api/", 5) == 0) {
        ad_api(req, method, path, evhttp_uri_get_query(uri));
    } else {
        ad_static(req, method, path);
    }
    free(path);
    /* Do not keep a rules snapshot alive on this thread between calls. */
    authz_thread_release();
}

/* ---- TLS --------------------------------------------------------------------------- */

static struct bufferevent *ad_bevcb(struct event_base *base, void *arg)
{
    SSL *ssl;
    struct bufferevent *bev;

    (void)arg;
    ssl = SSL_new(ad->cfg->ctx);
    if (ssl == NULL)
        return NULL;
    bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                         BEV_OPT_CLOSE_ON_FREE);
    if (bev == NULL) {
        SSL_free(ssl);
        return NULL;
    }
    bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    return bev;
}

static int ad_ssl_err(char *err, size_t errlen, const struct conf *c, const char *what,
                      const char *file)
{
    unsigned long e = ERR_peek_last_error();
    char buf[256];

    ERR_error_string_n(e, buf, sizeof(buf));
    ERR_clear_error();
    snprintf(err, errlen, "%s: %s \"%s\": %s", c->path, what, file, e != 0 ? buf : "failed");
    return -1;
}

static SSL_CTX *ad_ctx_new(const struct conf *c, char *err, size_t errlen)
{
    static const unsigned char sid[] = "ztproxy-admin";
    STACK_OF(X509_NAME) * names;
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

    if (ctx == NULL) {
        ad_ssl_err(err, errlen, c, "admin TLS", "context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    if (SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20") != 1) {
        ad_ssl_err(err, errlen, c, "admin TLS", "ciphers");
        goto fail;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, c->tls_certificate) != 1) {
        ad_ssl_err(err, errlen, c, "$.tls.certificate", c->tls_certificate);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, c->tls_key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        ad_ssl_err(err, errlen, c, "$.tls.key", c->tls_key);
        goto fail;
    }
    if (SSL_CTX_load_verify_locations(ctx, c->admin_client_ca, NULL) != 1) {
        ad_ssl_err(err, errlen, c, "$.admin.client_ca", c->admin_client_ca);
        goto fail;
    }
    /* Admin certificates from the device CA are revoked like devices. */
    if (c->tls_crl != NULL && c->tls_device_ca != NULL &&
        strcmp(c->admin_client_ca, c->tls_device_ca) == 0) {
        X509_STORE *store = SSL_CTX_get_cert_store(ctx);
        X509_LOOKUP *lu = X509_STORE_add_lookup(store, X509_LOOKUP_file());

        if (lu == NULL || X509_load_crl_file(lu, c->tls_crl, X509_FILETYPE_PEM) <= 0) {
            ad_ssl_err(err, errlen, c, "$.tls.crl", c->tls_crl);
            goto fail;
        }
        X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK);
    }
    names = SSL_load_client_CA_file(c->admin_client_ca);
    if (names == NULL) {
        ad_ssl_err(err, errlen, c, "$.admin.client_ca", c->admin_client_ca);
        goto fail;
    }
    SSL_CTX_set_client_CA_list(ctx, names);
    /* Requested, not required: a token caller has no certificate. One that
     * is sent must verify (else the handshake fails). */
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_verify_depth(ctx, 8);
    SSL_CTX_set_session_id_context(ctx, sid, sizeof(sid) - 1);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(ctx, 0);
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

static void ad_cfg_free(struct ad_cfg *k)
{
    if (k == NULL)
        return;
    SSL_CTX_free(k->ctx);
    conf_unref(k->conf);
    free(k);
}

static struct ad_cfg *ad_cfg_new(const struct conf *c, char *err, size_t errlen)
{
    struct ad_cfg *k = calloc(1, sizeof(*k));

    if (k == NULL) {
        snprintf(err, errlen, "admin: out of memory");
        return NULL;
    }
    k->ctx = ad_ctx_new(c, err, errlen);
    if (k->ctx == NULL) {
        free(k);
        return NULL;
    }
    k->conf = conf_ref((struct conf *)c);
    snprintf(k->origin, sizeof(k->origin), "https://%s", c->admin_listener->text);
    return k;
}

/* ---- listener ------------------------------------------------------------------------ */

static evutil_socket_t ad_bind(const struct conf_listener *l, char *err, size_t errlen)
{
    evutil_socket_t fd = socket(l->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;

    if (fd == -1) {
        snprintf(err, errlen, "admin: listen %s: socket: %s", l->text, strerror(errno));
        return -1;
    }
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == -1 ||
        bind(fd, (const struct sockaddr *)&l->addr, l->addrlen) == -1 ||
        listen(fd, l->backlog) == -1) {
        snprintf(err, errlen, "admin: listen %s: %s", l->text, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static void ad_state_free(struct ad_state *s)
{
    if (s == NULL)
        return;
    if (s->http != NULL)
        evhttp_free(s->http); /* closes the bound socket and the connections */
    else if (s->fd != -1)
        close(s->fd);
    ad_cfg_free(s->cfg);
    admin_tokens_free(s->tokens);
    free(s->tok_path);
    free(s);
}

static struct ad_state *ad_state_new(struct event_base *base, const struct conf *c, char *err,
                                     size_t errlen)
{
    struct ad_state *s = calloc(1, sizeof(*s));

    if (s == NULL) {
        snprintf(err, errlen, "admin: out of memory");
        return NULL;
    }
    s->fd = -1;
    s->base = base;
    s->cfg = ad_cfg_new(c, err, errlen);
    if (s->cfg == NULL)
        goto fail;
    s->listen = *c->admin_listener;
    s->fd = ad_bind(c->admin_listener, err, errlen);
    if (s->fd == -1)
        goto fail;
    s->http = evhttp_new(base);
    if (s->http == NULL) {
        snprintf(err, errlen, "admin: out of memory");
        goto fail;
    }
    evhttp_set_bevcb(s->http, ad_bevcb, NULL);
    evhttp_set_gencb(s->http, ad_request, NULL);
    evhttp_set_max_body_size(s->http, ADMIN_BODY_MAX);
    evhttp_set_max_headers_size(s->http, 64 * 1024);
    evhttp_set_timeout(s->http, ADMIN_TIMEOUT_S);
    evhttp_set_allowed_methods(s->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE);
    if (evhttp_accept_socket_with_handle(s->http, s->fd) == NULL) {
        snprintf(err, errlen, "admin: listen %s: cannot accept", c->admin_listener->text);
        goto fail;
    }
    if (c->admin_token_file != NULL) {
        s->tok_path = strdup(c->admin_token_file);
        if (s->tok_path == NULL) {
            snprintf(err, errlen, "admin: out of memory");
            goto fail;
        }
    }
    return s;
fail:
    ad_state_free(s);
    return NULL;
}

/* The token file must load at start (later changes that fail keep the
 * old tokens). */
static int ad_tokens_first(struct ad_state *s, char *err, size_t errlen)
{
    struct ad_state *saved = ad;

    if (s->tok_path == NULL)
        return 0;
    ad = s;
    ad_tokens_refresh();
    ad = saved;
    if (s->tokens == NULL) {
        snprintf(err, errlen, "%s: $.admin.token_file: \"%s\" cannot be used (see the log)",
                 s->cfg->conf->path, s->tok_path);
        return -1;
    }
    return 0;
}

int admin_start(struct event_base *main_base, const struct conf *c, char *err, size_t errlen)
{
    struct ad_state *s;

    if (ad != NULL) {
        snprintf(err, errlen, "admin: already started");
        return -1;
    }
    if (c->admin_listener == NULL)
        return 0;
    s = ad_state_new(main_base, c, err, errlen);
    if (s == NULL)
        return -1;
    if (ad_tokens_first(s, err, errlen) == -1 || admin_rules_start(c, err, errlen) == -1) {
        ad_state_free(s);
        return -1;
    }
    ad = s;
    if (c->nadmin_groups == 0 && c->admin_token_file == NULL)
        log_warnx("admin: neither admin_groups nor token_file is configured: every API call "
                  "is refused");
    log_info("admin: listening on https://%s", c->admin_listener->text);
    return 0;
}

static int ad_streq(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

int admin_reconfigure(const struct conf *c, char *err, size_t errlen)
{
    struct event_base *base;
    struct ad_state *s;
    struct ad_cfg *k;
    int same_rules;

    if (ad == NULL && c->admin_listener == NULL)
        return 0;
    if (ad != NULL && c->admin_listener == NULL) {
        log_info("admin: the \"admin\" section was removed: the listener is closed");
        admin_stop();
        return 0;
    }
    if (ad == NULL) {
        snprintf(err, errlen, "admin: the \"admin\" section was added: restart to start it");
        return -1;
    }
    /* The history stays open unless where it lives (or whether there are
     * rules) changed. */
    same_rules = (ad->cfg->conf->policy_rules != NULL) == (c->policy_rules != NULL) &&
                 ad_streq(ad->cfg->conf->state_dir, c->state_dir);
    if (ad->listen.addrlen != c->admin_listener->addrlen ||
        memcmp(&ad->listen.addr, &c->admin_listener->addr, ad->listen.addrlen) != 0) {
        /* A new address: bind it first, so a failure keeps the old one. */
        base = ad->base;
        s = ad_state_new(base, c, err, errlen);
        if (s == NULL)
            return -1;
        if (ad_tokens_first(s, err, errlen) == -1) {
            ad_state_free(s);
            return -1;
        }
        ad_state_free(ad);
        ad = s;
        log_info("admin: listening on https://%s", c->admin_listener->text);
    } else {
        k = ad_cfg_new(c, err, errlen);
        if (k == NULL)
            return -1;
        ad_cfg_free(ad->cfg);
        ad->cfg = k;
        ad->listen = *c->admin_listener;
        free(ad->tok_path);
        ad->tok_path = c->admin_token_file != NULL ? strdup(c->admin_token_file) : NULL;
        admin_tokens_free(ad->tokens);
        ad->tokens = NULL;
        ad->tok_loaded = 0;
        ad_tokens_refresh();
    }
    if (same_rules)
        return 0;
    admin_rules_stop();
    if (admin_rules_start(c, err, errlen) == -1) {
        log_warnx("admin: the rules history cannot be opened, the rules endpoints are off "
                  "until it can: %s",
                  err);
        return -1;
    }
    return 0;
}

void admin_stop(void)
{
    if (ad == NULL)
        return;
    ad_state_free(ad);
    ad = NULL;
    admin_rules_stop();
}
