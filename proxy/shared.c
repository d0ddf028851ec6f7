/*
 * shared.c - shared state for replicas in Redis (include/shared.h,
 * docs/deploy.md "Redis").
 *
 * Two hiredis async connections on the main loop: "cmd" stores the writes,
 * publishes them and reads the state back on (re)connect; "sub" only
 * SUBSCRIBEs. Other threads queue writes under q_mtx and wake the main loop
 * with event_active(ev_flush). Everything else here runs on the main thread.
 *
 * Redis is a replication path, never a dependency of a request: every
 * request reads the embedded state, so Redis going away degrades
 * propagation, not service (docs/operations.md).
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <hiredis/adapters/libevent.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "admin_rules.h"
#include "authz.h"
#include "conf.h"
#include "devtrust.h"
#include "log.h"
#include "policy.h"
#include "posture.h"
#include "proxy.h"
#include "session.h"
#include "shared.h"

#define SH_BACKOFF_MIN_MS 100
#define SH_BACKOFF_MAX_MS 5000
#define SH_SUBJECT_MAX 255
#define SH_COMMENT_MAX 1024
#define SH_AUTHOR_MAX 512

/* ---- messages (pure) ------------------------------------------------------ */

static int sh_fail(char *err, size_t errlen, const char *path, const char *what)
{
    snprintf(err, errlen, "shared: %s: %s", path, what);
    return -1;
}

/* A string member of o, 1..max bytes, no NUL. NULL if absent; *bad on any
 * other problem. */
static const char *sh_str(json_t *o, const char *key, size_t max, int allow_empty, int *bad)
{
    json_t *v = json_object_get(o, key);
    size_t n;

    if (v == NULL)
        return NULL;
    if (!json_is_string(v)) {
        *bad = 1;
        return NULL;
    }
    n = json_string_length(v);
    if ((n == 0 && !allow_empty) || n > max || strlen(json_string_value(v)) != n) {
        *bad = 1;
        return NULL;
    }
    return json_string_value(v);
}

static int sh_keys_ok(json_t *o, const char *const *allowed, const char **unknown)
{
    const char *k;
    json_t *v;
    size_t i;

    json_object_foreach(o, k, v)
    {
        for (i = 0; allowed[i] != NULL; i++)
            if (strcmp(allowed[i], k) == 0)
                break;
        if (allowed[i] == NULL) {
            *unknown = k;
            return 0;
        }
    }
    return 1;
}

static int sh_hex_ok(const char *s, size_t n)
{
    size_t i;

    if (strlen(s) != n)
        return 0;
    for (i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

void shared_msg_reset(struct shared_msg *m)
{
    json_decref(m->root);
    memset(m, 0, sizeof(*m));
}

int shared_msg_parse(const char *data, size_t len, struct shared_msg *out, char *err, size_t errlen)
{
    static const char *const k_posture[] = {"origin", "type", "report", NULL};
    static const char *const k_revoke[] = {"origin",   "type", "user", "session",
                                           "provider", "sid",  "at",   NULL};
    static const char *const k_override[] = {"origin", "type", "device", "status", NULL};
    static const char *const k_rules[] = {"origin",  "type",     "id", "author",
                                          "comment", "document", NULL};
    struct shared_msg m;
    const char *type, *unknown = NULL;
    const char *const *keys;
    json_error_t jerr;
    char path[300];
    json_t *v;
    int bad = 0;

    memset(out, 0, sizeof(*out));
    memset(&m, 0, sizeof(m));
    if (len > SHARED_MSG_MAX)
        return sh_fail(err, errlen, "$", "message too large");
    m.root = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
    if (m.root == NULL) {
        snprintf(err, errlen, "shared: $: not JSON: %s", jerr.text);
        return -1;
    }
    if (!json_is_object(m.root)) {
        sh_fail(err, errlen, "$", "expected an object");
        goto err;
    }
    m.origin = sh_str(m.root, "origin", 64, 0, &bad);
    if (m.origin == NULL || bad) {
        sh_fail(err, errlen, "$.origin", "expected a string of 1..64 bytes");
        goto err;
    }
    type = sh_str(m.root, "type", 16, 0, &bad);
    if (type == NULL || bad) {
        sh_fail(err, errlen, "$.type",
                "expected \"posture\", \"revoke\", \"override\" or \"rules\"");
        goto err;
    }
    if (strcmp(type, "posture") == 0) {
        m.type = SHARED_POSTURE;
        keys = k_posture;
    } else if (strcmp(type, "revoke") == 0) {
        m.type = SHARED_REVOKE;
        keys = k_revoke;
    } else if (strcmp(type, "override") == 0) {
        m.type = SHARED_OVERRIDE;
        keys = k_override;
    } else if (strcmp(type, "rules") == 0) {
        m.type = SHARED_RULES;
        keys = k_rules;
    } else {
        sh_fail(err, errlen, "$.type",
                "expected \"posture\", \"revoke\", \"override\" or \"rules\"");
        goto err;
    }
    if (!sh_keys_ok(m.root, keys, &unknown)) {
        snprintf(path, sizeof(path), "$.%.200s", unknown);
        sh_fail(err, errlen, path, "unknown key");
        goto err;
    }
    switch (m.type) {
    case SHARED_POSTURE:
        m.report = sh_str(m.root, "report", POSTURE_JSON_MAX, 0, &bad);
        if (m.report == NULL || bad) {
            sh_fail(err, errlen, "$.report", "expected a stored posture report (a string)");
            goto err;
        }
        m.report_len = strlen(m.report);
        break;
    case SHARED_REVOKE:
        m.user = sh_str(m.root, "user", SH_SUBJECT_MAX, 0, &bad);
        if (bad) {
            sh_fail(err, errlen, "$.user", "expected a subject of 1..255 bytes");
            goto err;
        }
        m.session = sh_str(m.root, "session", 2 * SESSION_ID_LEN, 0, &bad);
        if (bad || (m.session != NULL && !sh_hex_ok(m.session, 2 * SESSION_ID_LEN))) {
            sh_fail(err, errlen, "$.session", "expected 32 lower-case hex digits");
            goto err;
        }
        m.provider = sh_str(m.root, "provider", SESSION_PROVIDER_MAX, 0, &bad);
        if (bad) {
            sh_fail(err, errlen, "$.provider", "expected a provider name of 1..63 bytes");
            goto err;
        }
        m.sid = sh_str(m.root, "sid", SESSION_SID_MAX, 0, &bad);
        if (bad) {
            sh_fail(err, errlen, "$.sid", "expected a provider session id of 1..255 bytes");
            goto err;
        }
        if ((m.user != NULL) + (m.session != NULL) + (m.sid != NULL) != 1) {
            sh_fail(err, errlen, "$", "expected exactly one of \"user\", \"session\" and \"sid\"");
            goto err;
        }
        if ((m.sid != NULL && m.provider == NULL) || (m.session != NULL && m.provider != NULL)) {
            sh_fail(err, errlen, "$.provider",
                    m.sid != NULL ? "a \"sid\" needs its \"provider\""
                                  : "not allowed with \"session\"");
            goto err;
        }
        v = json_object_get(m.root, "at");
        if (!json_is_integer(v) || json_integer_value(v) < 1 ||
            json_integer_value(v) > 253402300799LL) {
            sh_fail(err, errlen, "$.at", "expected Unix seconds (a positive integer)");
            goto err;
        }
        m.at = (int64_t)json_integer_value(v);
        break;
    case SHARED_OVERRIDE:
        m.device = sh_str(m.root, "device", DEVICE_ID_MAX, 0, &bad);
        if (m.device == NULL || bad) {
            sh_fail(err, errlen, "$.device", "expected a device id");
            goto err;
        }
        v = json_object_get(m.root, "status");
        if (v == NULL || (!json_is_null(v) && !json_is_string(v))) {
            sh_fail(err, errlen, "$.status", "expected a status string or null");
            goto err;
        }
        if (json_is_string(v)) {
            m.status = json_string_value(v);
            if (strcmp(m.status, "active") != 0 && strcmp(m.status, "lost") != 0 &&
                strcmp(m.status, "stolen") != 0 && strcmp(m.status, "retired") != 0) {
                sh_fail(err, errlen, "$.status",
                        "expected \"active\", \"lost\", \"stolen\", \"retired\" or null");
                goto err;
            }
        }
        break;
    case SHARED_RULES:
        m.id = sh_str(m.root, "id", 128, 0, &bad);
        if (m.id == NULL || bad) {
            sh_fail(err, errlen, "$.id", "expected a string of 1..128 bytes");
            goto err;
        }
        m.author = sh_str(m.root, "author", SH_AUTHOR_MAX, 0, &bad);
        if (m.author == NULL || bad) {
            sh_fail(err, errlen, "$.author", "expected a string of 1..512 bytes");
            goto err;
        }
        m.comment = sh_str(m.root, "comment", SH_COMMENT_MAX, 1, &bad);
        if (m.comment == NULL || bad) {
            sh_fail(err, errlen, "$.comment", "expected a string of at most 1024 bytes");
            goto err;
        }
        m.document = sh_str(m.root, "document", POLICY_FILE_MAX, 0, &bad);
        if (m.document == NULL || bad) {
            sh_fail(err, errlen, "$.document", "expected the rules document (a string)");
            goto err;
        }
        m.document_len = strlen(m.document);
        break;
    }
    *out = m;
    return 0;
err:
    json_decref(m.root);
    return -1;
}

/* ---- the queue (any thread) ---------------------------------------------- */

/* One write: a storage command and the message to publish. */
struct sh_item {
    struct sh_item *next;
    int argc;      /* of the storage command */
    char *argv[4]; /* key is given without the prefix */
    size_t argvlen[4];
    char *msg;
    size_t msglen;
};

static pthread_mutex_t q_mtx = PTHREAD_MUTEX_INITIALIZER;
static struct sh_item *q_head, *q_tail;
static size_t q_len;
static atomic_int sh_enabled;
static struct event *ev_flush; /* set before sh_enabled, freed after it is cleared */

/* Stats (under q_mtx). */
static struct shared_stats st;

static void item_free(struct sh_item *it)
{
    int i;

    if (it == NULL)
        return;
    for (i = 0; i < it->argc; i++)
        free(it->argv[i]);
    free(it->msg);
    free(it);
}

/* The replica's random id, set once in shared_start(). */
static char origin[33];

static void sh_enqueue(struct sh_item *it)
{
    struct sh_item *drop = NULL;
    uint64_t dropped = 0;

    pthread_mutex_lock(&q_mtx);
    if (q_len >= SHARED_QUEUE_MAX) {
        drop = q_head;
        q_head = drop->next;
        if (q_head == NULL)
            q_tail = NULL;
        q_len--;
        dropped = ++st.dropped;
    }
    it->next = NULL;
    if (q_tail != NULL)
        q_tail->next = it;
    else
        q_head = it;
    q_tail = it;
    q_len++;
    pthread_mutex_unlock(&q_mtx);
    if (drop != NULL) {
        /* Logged at 1, 2, 4, 8... drops: a long outage must not flood the log. */
        if ((dropped & (dropped - 1)) == 0)
            log_warnx("redis: %d writes wait for Redis: the oldest was dropped (%" PRIu64
                      " so far; other replicas will not see them)",
                      SHARED_QUEUE_MAX, dropped);
        item_free(drop);
    }
    event_active(ev_flush, EV_TIMEOUT, 0);
}

/* Build an item: storage command (cmd, key, field, value; field/value may be
 * NULL) and the message object (stolen). NULL on out of memory. */
static struct sh_item *item_new(const char *cmd, const char *key, const char *field,
                                size_t field_len, const char *value, size_t value_len, json_t *msg)
{
    struct sh_item *it = calloc(1, sizeof(*it));
    const char *parts[4] = {cmd, key, field, value};
    size_t lens[4] = {strlen(cmd), strlen(key), field_len, value_len};
    int i;

    if (it == NULL || msg == NULL)
        goto err;
    json_object_set_new(msg, "origin", json_string(origin));
    it->msg = json_dumps(msg, JSON_COMPACT);
    if (it->msg == NULL)
        goto err;
    it->msglen = strlen(it->msg);
    for (i = 0; i < 4 && parts[i] != NULL; i++) {
        it->argv[i] = malloc(lens[i] + 1);
        if (it->argv[i] == NULL)
            goto err;
        memcpy(it->argv[i], parts[i], lens[i]);
        it->argv[i][lens[i]] = '\0';
        it->argvlen[i] = lens[i];
        it->argc = i + 1;
    }
    json_decref(msg);
    return it;
err:
    json_decref(msg);
    item_free(it);
    log_warnx("redis: out of memory: a write is not shared");
    return NULL;
}

void shared_publish_posture(const char *report, size_t len)
{
    struct posture p;
    struct sh_item *it;
    char err[256];

    if (!atomic_load(&sh_enabled))
        return;
    if (posture_from_json(report, len, &p, err, sizeof(err)) == -1 || !p.has_device_id) {
        log_warnx("redis: a posture report is not shared: %s", err);
        return;
    }
    it = item_new("HSET", "posture", p.device_id, strlen(p.device_id), report, len,
                  json_pack("{s:s,s:s%}", "type", "posture", "report", report, len));
    if (it != NULL)
        sh_enqueue(it);
}

void shared_publish_revoke(const char *subject, const uint8_t *id, int64_t at)
{
    char field[2 + SH_SUBJECT_MAX + 1], hex[2 * SESSION_ID_LEN + 1], val[24];
    struct sh_item *it;
    json_t *msg;
    int i;

    if (!atomic_load(&sh_enabled))
        return;
    if (subject != NULL) {
        if (strlen(subject) > SH_SUBJECT_MAX)
            return;
        snprintf(field, sizeof(field), "u:%s", subject);
        msg = json_pack("{s:s,s:s,s:I}", "type", "revoke", "user", subject, "at", (json_int_t)at);
    } else {
        for (i = 0; i < SESSION_ID_LEN; i++)
            snprintf(hex + 2 * i, 3, "%02x", id[i]);
        snprintf(field, sizeof(field), "s:%s", hex);
        msg = json_pack("{s:s,s:s,s:I}", "type", "revoke", "session", hex, "at", (json_int_t)at);
    }
    snprintf(val, sizeof(val), "%" PRId64, at);
    it = item_new("HSET", "revocations", field, strlen(field), val, strlen(val), msg);
    if (it != NULL)
        sh_enqueue(it);
}

void shared_publish_override(const char *device_id, const char *status)
{
    struct sh_item *it;

    if (!atomic_load(&sh_enabled))
        return;
    if (status != NULL)
        it = item_new(
            "HSET", "overrides", device_id, strlen(device_id), status, strlen(status),
            json_pack("{s:s,s:s,s:s}", "type", "override", "device", device_id, "status", status));
    else
        it =
            item_new("HDEL", "overrides", device_id, strlen(device_id), NULL, 0,
                     json_pack("{s:s,s:s,s:n}", "type", "override", "device", device_id, "status"));
    if (it != NULL)
        sh_enqueue(it);
}

static char last_rules_id[129]; /* main thread: the rules message last applied or sent */
static uint64_t rules_seq;

void shared_publish_rules(const char *text, size_t len, const char *author, const char *comment)
{
    struct sh_item *it;
    char id[128];

    if (!atomic_load(&sh_enabled))
        return;
    /* Called by the admin API, on the main thread. */
    snprintf(id, sizeof(id), "%s-%" PRIu64 "-%lld", origin, ++rules_seq, (long long)time(NULL));
    snprintf(last_rules_id, sizeof(last_rules_id), "%s", id);
    it = item_new("SET", "rules", NULL, 0, NULL, 0,
                  json_pack("{s:s,s:s,s:s,s:s,s:s%}", "type", "rules", "id", id, "author",
                            author != NULL ? author : "unknown", "comment",
                            comment != NULL ? comment : "", "document", text, len));
    if (it == NULL)
        return;
    /* The stored value is the message itself: a replica that was away
     * reads it back with the same parser. */
    it->argv[2] = malloc(it->msglen + 1);
    if (it->argv[2] == NULL) {
        item_free(it);
        return;
    }
    memcpy(it->argv[2], it->msg, it->msglen + 1);
    it->argvlen[2] = it->msglen;
    it->argc = 3;
    sh_enqueue(it);
}

/* ---- connections (main thread) ------------------------------------------- */

struct sh_conn {
    const char *name;
    redisAsyncContext *ac;
    int up;         /* connected (and, for sub, subscribed) */
    int backoff_ms; /* next retry delay */
    struct event *retry;
    struct event *timeout;                     /* connect timeout */
    struct evdns_getaddrinfo_request *dns_req; /* resolving the host name */
};

static struct {
    struct event_base *base;
    char *host;
    int port;
    char *password;
    char *prefix;
    uint64_t connect_timeout_ms;
    struct sh_conn cmd, sub;
    struct evdns_base *dns; /* NULL: the address is numeric */
    int sessions;           /* identity is configured: revocations apply */
    int64_t lifetime;       /* session lifetime (s): older revocations are moot */
    json_t *revoked;        /* "u:<subject>"/"s:<hex>" -> time applied from Redis */
    struct event *ev_ping;
    int ping_pending;
    int64_t ping_sent_ms;
    int stopping;
    int was_connected; /* for the "reconnected" log line */
} sh;

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sh_set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void sh_set_error(const char *fmt, ...)
{
    va_list ap;

    pthread_mutex_lock(&q_mtx);
    va_start(ap, fmt);
    vsnprintf(st.last_error, sizeof(st.last_error), fmt, ap);
    va_end(ap);
    st.errors++;
    pthread_mutex_unlock(&q_mtx);
}

static void sh_key(char *buf, size_t len, const char *suffix)
{
    snprintf(buf, len, "%s%s", sh.prefix, suffix);
}

static void sh_update_connected(void)
{
    int up = sh.cmd.up && sh.sub.up;

    pthread_mutex_lock(&q_mtx);
    if (up && !st.connected) {
        st.connected = 1;
        st.down_since = 0;
        st.connects++;
    } else if (!up && st.connected) {
        st.connected = 0;
        st.down_since = (int64_t)time(NULL);
        st.disconnects++;
    }
    pthread_mutex_unlock(&q_mtx);
}

static void sh_connect(struct sh_conn *c);

static void sh_schedule_retry(struct sh_conn *c)
{
    struct timeval tv;

    if (sh.stopping)
        return;
    tv.tv_sec = c->backoff_ms / 1000;
    tv.tv_usec = (c->backoff_ms % 1000) * 1000;
    event_add(c->retry, &tv);
    c->backoff_ms *= 2;
    if (c->backoff_ms > SH_BACKOFF_MAX_MS)
        c->backoff_ms = SH_BACKOFF_MAX_MS;
}

static void sh_lost(struct sh_conn *c, const char *why)
{
    int was = sh.cmd.up && sh.sub.up;

    c->ac = NULL;
    c->up = 0;
    event_del(c->timeout);
    if (c == &sh.cmd)
        sh.ping_pending = 0;
    sh_update_connected();
    if (was && !sh.stopping)
        log_warnx("redis %s:%d: connection lost (%s): replicas keep serving from their own "
                  "state; changes are queued until Redis is back",
                  sh.host, sh.port, why);
    sh_schedule_retry(c);
}

static void sh_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sh_connect(arg);
}

static struct sh_conn *sh_conn_of(const redisAsyncContext *ac)
{
    if (ac == sh.cmd.ac && ac != NULL)
        return &sh.cmd;
    if (ac == sh.sub.ac && ac != NULL)
        return &sh.sub;
    return NULL;
}

/* Close c now (outside any hiredis callback). c->ac is cleared first, so
 * the disconnect callback redisAsyncFree() may call finds no connection:
 * the bookkeeping is done here, once. */
static void sh_drop(struct sh_conn *c, const char *why)
{
    redisAsyncContext *ac = c->ac;

    if (ac == NULL)
        return;
    c->ac = NULL;
    redisAsyncFree(ac);
    sh_lost(c, why);
}

static void sh_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    struct sh_conn *c = arg;

    (void)fd;
    (void)what;
    if (c->ac == NULL || c->up)
        return;
    sh_set_error("connect to %s:%d timed out", sh.host, sh.port);
    sh_drop(c, "connect timeout");
}

static void sh_disconnect_cb(const redisAsyncContext *ac, int status)
{
    struct sh_conn *c = sh_conn_of(ac);

    if (c == NULL)
        return;
    if (status != REDIS_OK)
        sh_set_error("%s", ac->errstr);
    sh_lost(c, status == REDIS_OK ? "closed" : ac->errstr);
}

/* Error replies are logged; NULL (the connection went away) is not ours to log. */
static void sh_reply_check(redisAsyncContext *ac, void *r, void *priv)
{
    redisReply *reply = r;

    (void)ac;
    if (reply != NULL && reply->type == REDIS_REPLY_ERROR) {
        sh_set_error("%s: %.200s", (const char *)priv, reply->str);
        log_warnx("redis: %s: %.200s", (const char *)priv, reply->str);
    }
}

static void sh_became_up(void);
static void sh_flush(void);

/* The command connection counts as up only once AUTH (when configured)
 * succeeded: a write sent before would be refused and lost. */
static void sh_cmd_up(void)
{
    sh.cmd.up = 1;
    sh.cmd.backoff_ms = SH_BACKOFF_MIN_MS;
    sh_became_up();
    sh_flush();
}

static void sh_auth_cb(redisAsyncContext *ac, void *r, void *priv)
{
    redisReply *reply = r;

    if (reply == NULL || sh_conn_of(ac) == NULL)
        return;
    if (reply->type == REDIS_REPLY_ERROR) {
        sh_set_error("AUTH refused: %.200s", reply->str);
        log_warnx("redis %s:%d: AUTH refused: %.200s", sh.host, sh.port, reply->str);
        redisAsyncDisconnect(ac);
        return;
    }
    if (priv == &sh.cmd)
        sh_cmd_up();
}

/* ---- applying what others wrote (main thread) ---------------------------- */

static void sh_apply_rules(const struct shared_msg *m)
{
    char err[AUTHZ_ERR_MAX];
    size_t cur_len = 0;
    char *cur;

    if (strcmp(m->id, last_rules_id) == 0)
        return;
    snprintf(last_rules_id, sizeof(last_rules_id), "%s", m->id);
    cur = authz_rules_text(&cur_len);
    if (cur != NULL && cur_len == m->document_len && memcmp(cur, m->document, cur_len) == 0) {
        free(cur);
        return;
    }
    free(cur);
    if (admin_rules_received(m->document, m->document_len, m->author, m->comment,
                             (int64_t)time(NULL), err, sizeof(err)) == -1) {
        sh_set_error("rules from another replica not installed: %.200s", err);
        log_warnx("redis: rules %s by %s from another replica not installed: %s", m->id, m->author,
                  err);
        return;
    }
    log_info("redis: installed rules %s by %s from another replica", m->id, m->author);
}

/* The hash field of a back-channel logout: "j:" and a small JSON object
 * (provider and sid or subject may hold any byte). NULL: out of memory. */
static char *sh_scoped_field(const char *provider, const char *sid, const char *subject)
{
    json_t *o = sid != NULL ? json_pack("{s:s,s:s}", "p", provider, "s", sid)
                            : json_pack("{s:s,s:s}", "p", provider, "u", subject);
    char *j = o != NULL ? json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    char *f = NULL;

    json_decref(o);
    if (j != NULL && (f = malloc(strlen(j) + 3)) != NULL)
        snprintf(f, strlen(j) + 3, "j:%s", j);
    free(j);
    return f;
}

void shared_publish_revoke_scoped(const char *provider, const char *sid, const char *subject,
                                  int64_t at)
{
    struct sh_item *it;
    char val[24], *field;
    json_t *msg;

    if (!atomic_load(&sh_enabled) || provider == NULL || (sid == NULL) == (subject == NULL))
        return;
    field = sh_scoped_field(provider, sid, subject);
    if (field == NULL)
        return;
    msg =
        json_pack("{s:s,s:s,s:s,s:I}", "type", "revoke", "provider", provider,
                  sid != NULL ? "sid" : "user", sid != NULL ? sid : subject, "at", (json_int_t)at);
    snprintf(val, sizeof(val), "%" PRId64, at);
    it = item_new("HSET", "revocations", field, strlen(field), val, strlen(val), msg);
    free(field);
    if (it != NULL)
        sh_enqueue(it);
}

/* Like sh_revoke() for a back-channel logout (field from sh_scoped_field()). */
static int sh_revoke_scoped(const char *field, const char *provider, const char *sid,
                            const char *subject, int64_t at, int from_load, char *err,
                            size_t errlen)
{
    json_t *seen;
    char key[128];

    if (!sh.sessions)
        return 0;
    if (sh.lifetime > 0 && at < (int64_t)time(NULL) - sh.lifetime) {
        if (from_load && sh.cmd.up) {
            sh_key(key, sizeof(key), "revocations");
            redisAsyncCommand(sh.cmd.ac, sh_reply_check, (void *)"expiring a revocation",
                              "HDEL %s %s", key, field);
        }
        return 0;
    }
    seen = json_object_get(sh.revoked, field);
    if (seen != NULL && json_integer_value(seen) >= at)
        return 0;
    if (proxy_revoke_scoped_apply(provider, sid, subject, at, err, errlen) == -1)
        return -1;
    if (sh.revoked != NULL)
        json_object_set_new(sh.revoked, field, json_integer(at));
    return 0;
}

/*
 * Apply a revocation from Redis once: a reconnect reads the whole hash back,
 * and re-applying each entry would append it to revocations.log again.
 * Entries older than the session lifetime can match no live session: they
 * are skipped (and, read back, deleted from Redis). 0, or -1 and err.
 */
static int sh_revoke(const char *field, const char *subject, const uint8_t *id, int64_t at,
                     int from_load, char *err, size_t errlen)
{
    json_t *seen;
    char key[128];

    if (!sh.sessions)
        return 0; /* no identity here: no sessions to revoke */
    if (sh.lifetime > 0 && at < (int64_t)time(NULL) - sh.lifetime) {
        if (from_load && sh.cmd.up) {
            sh_key(key, sizeof(key), "revocations");
            redisAsyncCommand(sh.cmd.ac, sh_reply_check, (void *)"expiring a revocation",
                              "HDEL %s %s", key, field);
        }
        return 0;
    }
    seen = json_object_get(sh.revoked, field);
    if (seen != NULL && json_integer_value(seen) >= at)
        return 0;
    if (proxy_revoke_apply(subject, id, at, err, errlen) == -1)
        return -1;
    if (sh.revoked != NULL)
        json_object_set_new(sh.revoked, field, json_integer(at));
    return 0;
}

static int sh_unhex(const char *hex, uint8_t *out)
{
    int i;

    for (i = 0; i < SESSION_ID_LEN; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1)
            return -1;
        out[i] = (uint8_t)v;
    }
    return 0;
}

/* Apply a message; from_load: read back on (re)connect, not announced. */
static void sh_apply(const struct shared_msg *m, int from_load)
{
    char err[512];
    uint8_t id[SESSION_ID_LEN];
    char field[2 + SH_SUBJECT_MAX + 1];
    int rc = 0;

    if (!from_load && strcmp(m->origin, origin) == 0)
        return; /* our own write */
    switch (m->type) {
    case SHARED_POSTURE:
        rc = devtrust_posture_store(m->report, m->report_len, err, sizeof(err)) == -1 ? -1 : 0;
        break;
    case SHARED_REVOKE:
        if (m->provider != NULL) {
            char *f = sh_scoped_field(m->provider, m->sid, m->sid == NULL ? m->user : NULL);
            if (f == NULL) {
                snprintf(err, sizeof(err), "out of memory");
                rc = -1;
                break;
            }
            rc = sh_revoke_scoped(f, m->provider, m->sid, m->sid == NULL ? m->user : NULL, m->at,
                                  from_load, err, sizeof(err));
            free(f);
            break;
        }
        if (m->session != NULL && sh_unhex(m->session, id) == -1) {
            snprintf(err, sizeof(err), "bad session id");
            rc = -1;
            break;
        }
        snprintf(field, sizeof(field), "%s:%s", m->user != NULL ? "u" : "s",
                 m->user != NULL ? m->user : m->session);
        rc = sh_revoke(field, m->user, m->user == NULL ? id : NULL, m->at, from_load, err,
                       sizeof(err));
        break;
    case SHARED_OVERRIDE:
        rc = devtrust_set_override(m->device, m->status, err, sizeof(err));
        break;
    case SHARED_RULES:
        sh_apply_rules(m);
        break;
    }
    if (rc == -1) {
        sh_set_error("a change from another replica was not applied: %.200s", err);
        log_warnx("redis: a change from another replica was not applied: %s", err);
        return;
    }
    if (!from_load) {
        pthread_mutex_lock(&q_mtx);
        st.received++;
        pthread_mutex_unlock(&q_mtx);
    }
}

static void sh_apply_bytes(const char *data, size_t len, int from_load)
{
    struct shared_msg m;
    char err[512];

    if (shared_msg_parse(data, len, &m, err, sizeof(err)) == -1) {
        sh_set_error("%s", err);
        log_warnx("redis: message refused: %s", err);
        return;
    }
    sh_apply(&m, from_load);
    shared_msg_reset(&m);
}

enum sh_load { LOAD_POSTURE = 1, LOAD_REVOCATIONS, LOAD_OVERRIDES, LOAD_RULES };

static void sh_load_cb(redisAsyncContext *ac, void *r, void *priv)
{
    enum sh_load what = (enum sh_load)(intptr_t)priv;
    redisReply *reply = r;
    char err[512];
    size_t i;

    (void)ac;
    if (reply == NULL)
        return;
    if (reply->type == REDIS_REPLY_ERROR) {
        sh_set_error("reading the state: %.200s", reply->str);
        log_warnx("redis: reading the state: %.200s", reply->str);
        return;
    }
    if (what == LOAD_RULES) {
        if (reply->type == REDIS_REPLY_STRING)
            sh_apply_bytes(reply->str, reply->len, 1);
        return;
    }
    if (reply->type != REDIS_REPLY_ARRAY)
        return;
    for (i = 0; i + 1 < reply->elements; i += 2) {
        const redisReply *f = reply->element[i], *v = reply->element[i + 1];
        int rc = 0;

        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            continue;
        if (what == LOAD_POSTURE) {
            rc = devtrust_posture_store(v->str, v->len, err, sizeof(err)) == -1 ? -1 : 0;
        } else if (what == LOAD_OVERRIDES) {
            rc = devtrust_set_override(f->str, v->str, err, sizeof(err));
        } else if (what == LOAD_REVOCATIONS) {
            char *end;
            long long at = strtoll(v->str, &end, 10);
            uint8_t id[SESSION_ID_LEN];

            if (*end != '\0' || at < 1) {
                snprintf(err, sizeof(err), "%s: bad time", f->str);
                rc = -1;
            } else if (strncmp(f->str, "u:", 2) == 0 && f->len > 2 &&
                       f->len <= 2 + SH_SUBJECT_MAX) {
                rc = sh_revoke(f->str, f->str + 2, NULL, at, 1, err, sizeof(err));
            } else if (strncmp(f->str, "j:", 2) == 0) {
                json_t *o = json_loadb(f->str + 2, f->len - 2, JSON_REJECT_DUPLICATES, NULL);
                const char *p = json_string_value(json_object_get(o, "p"));
                const char *s = json_string_value(json_object_get(o, "s"));
                const char *u = json_string_value(json_object_get(o, "u"));

                if (p == NULL || (s == NULL) == (u == NULL) || json_object_size(o) != 2 ||
                    strlen(p) > SESSION_PROVIDER_MAX ||
                    strlen(s != NULL ? s : u) > (s != NULL ? SESSION_SID_MAX : SH_SUBJECT_MAX)) {
                    snprintf(err, sizeof(err), "bad revocation field");
                    rc = -1;
                } else {
                    rc = sh_revoke_scoped(f->str, p, s, u, at, 1, err, sizeof(err));
                }
                json_decref(o);
            } else if (strncmp(f->str, "s:", 2) == 0 && sh_hex_ok(f->str + 2, 2 * SESSION_ID_LEN) &&
                       sh_unhex(f->str + 2, id) == 0) {
                rc = sh_revoke(f->str, NULL, id, at, 1, err, sizeof(err));
            } else {
                snprintf(err, sizeof(err), "bad revocation field");
                rc = -1;
            }
        }
        if (rc == -1) {
            sh_set_error("reading the state: %.200s", err);
            log_warnx("redis: reading the state: %s", err);
        }
    }
}

/* Read the whole state back: after our own queued writes (same connection,
 * so Redis has them first), before anything newer arrives on sub. */
static void sh_load_state(void)
{
    char key[128];

    if (!sh.cmd.up)
        return;
    sh_key(key, sizeof(key), "posture");
    redisAsyncCommand(sh.cmd.ac, sh_load_cb, (void *)(intptr_t)LOAD_POSTURE, "HGETALL %s", key);
    sh_key(key, sizeof(key), "revocations");
    redisAsyncCommand(sh.cmd.ac, sh_load_cb, (void *)(intptr_t)LOAD_REVOCATIONS, "HGETALL %s", key);
    sh_key(key, sizeof(key), "overrides");
    redisAsyncCommand(sh.cmd.ac, sh_load_cb, (void *)(intptr_t)LOAD_OVERRIDES, "HGETALL %s", key);
    sh_key(key, sizeof(key), "rules");
    redisAsyncCommand(sh.cmd.ac, sh_load_cb, (void *)(intptr_t)LOAD_RULES, "GET %s", key);
}

/* Send what is queued (main thread, cmd connected). */
static void sh_flush(void)
{
    char key[128], chan[128];
    struct sh_item *it;
    uint64_t n = 0;

    sh_key(chan, sizeof(chan), "events");
    while (sh.cmd.up) {
        const char *argv[4];
        size_t lens[4];
        int i;

        pthread_mutex_lock(&q_mtx);
        it = q_head;
        if (it != NULL) {
            q_head = it->next;
            if (q_head == NULL)
                q_tail = NULL;
            q_len--;
        }
        pthread_mutex_unlock(&q_mtx);
        if (it == NULL)
            break;
        sh_key(key, sizeof(key), it->argv[1]);
        for (i = 0; i < it->argc; i++) {
            argv[i] = i == 1 ? key : it->argv[i];
            lens[i] = i == 1 ? strlen(key) : it->argvlen[i];
        }
        redisAsyncCommandArgv(sh.cmd.ac, sh_reply_check, (void *)"storing a change", it->argc, argv,
                              lens);
        redisAsyncCommand(sh.cmd.ac, sh_reply_check, (void *)"publishing a change", "PUBLISH %s %b",
                          chan, it->msg, it->msglen);
        item_free(it);
        n++;
    }
    pthread_mutex_lock(&q_mtx);
    st.published += n;
    pthread_mutex_unlock(&q_mtx);
}

static void sh_flush_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    sh_flush();
}

static void sh_became_up(void)
{
    size_t queued;

    if (!(sh.cmd.up && sh.sub.up))
        return;
    sh_update_connected();
    pthread_mutex_lock(&q_mtx);
    queued = q_len;
    pthread_mutex_unlock(&q_mtx);
    log_info("redis %s:%d: %s (shared state: flushing %zu queued writes, reading the state back)",
             sh.host, sh.port, sh.was_connected ? "reconnected" : "connected", queued);
    sh.was_connected = 1;
    sh_flush();
    sh_load_state();
}

static void sh_message_cb(redisAsyncContext *ac, void *r, void *priv)
{
    redisReply *reply = r;
    const redisReply *kind;

    (void)ac;
    (void)priv;
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements != 3)
        return;
    kind = reply->element[0];
    if (kind->type != REDIS_REPLY_STRING)
        return;
    if (strcmp(kind->str, "subscribe") == 0) {
        sh.sub.up = 1;
        sh.sub.backoff_ms = SH_BACKOFF_MIN_MS;
        sh_became_up();
        return;
    }
    if (strcmp(kind->str, "message") == 0 && reply->element[2]->type == REDIS_REPLY_STRING)
        sh_apply_bytes(reply->element[2]->str, reply->element[2]->len, 0);
}

static void sh_connect_cb(const redisAsyncContext *cac, int status)
{
    struct sh_conn *c = sh_conn_of(cac);
    redisAsyncContext *ac = (redisAsyncContext *)cac;
    char chan[128];

    if (c == NULL)
        return;
    event_del(c->timeout);
    if (status != REDIS_OK) {
        /* hiredis frees the context after this callback. */
        sh_set_error("connect to %s:%d: %s", sh.host, sh.port, cac->errstr);
        if (c->backoff_ms == SH_BACKOFF_MIN_MS) /* the first of a series */
            log_warnx("redis %s:%d: cannot connect (%s connection): %s; retrying", sh.host, sh.port,
                      c->name, cac->errstr);
        c->ac = NULL;
        sh_lost(c, cac->errstr);
        return;
    }
    if (sh.password != NULL)
        redisAsyncCommand(ac, sh_auth_cb, c, "AUTH %s", sh.password);
    if (c == &sh.cmd) {
        if (sh.password == NULL)
            sh_cmd_up();
    } else {
        sh_key(chan, sizeof(chan), "events");
        redisAsyncCommand(ac, sh_message_cb, NULL, "SUBSCRIBE %s", chan);
    }
}

static void sh_connect_ip(struct sh_conn *c, const char *ip)
{
    struct timeval tv;
    redisAsyncContext *ac;

    if (sh.stopping || c->ac != NULL)
        return;
    ac = redisAsyncConnect(ip, sh.port);
    if (ac == NULL || ac->err) {
        sh_set_error("connect to %s:%d: %s", sh.host, sh.port,
                     ac != NULL ? ac->errstr : "out of memory");
        if (ac != NULL)
            redisAsyncFree(ac);
        sh_schedule_retry(c);
        return;
    }
    if (redisLibeventAttach(ac, sh.base) != REDIS_OK) {
        redisAsyncFree(ac);
        sh_schedule_retry(c);
        return;
    }
    c->ac = ac;
    redisAsyncSetConnectCallback(ac, sh_connect_cb);
    redisAsyncSetDisconnectCallback(ac, sh_disconnect_cb);
    tv.tv_sec = (time_t)(sh.connect_timeout_ms / 1000);
    tv.tv_usec = (suseconds_t)(sh.connect_timeout_ms % 1000) * 1000;
    event_add(c->timeout, &tv);
}

static void sh_dns_cb(int result, struct evutil_addrinfo *res, void *arg)
{
    struct sh_conn *c = arg;
    char ip[INET6_ADDRSTRLEN] = "";
    struct evutil_addrinfo *ai;

    c->dns_req = NULL;
    if (result == EVUTIL_EAI_CANCEL) {
        if (res != NULL)
            evutil_freeaddrinfo(res);
        return;
    }
    /* IPv4 first (Redis often listens on IPv4 only), else IPv6. */
    for (ai = result == 0 ? res : NULL; ai != NULL && ip[0] == '\0'; ai = ai->ai_next)
        if (ai->ai_family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)ai->ai_addr)->sin_addr, ip, sizeof(ip));
    for (ai = result == 0 ? res : NULL; ai != NULL && ip[0] == '\0'; ai = ai->ai_next)
        if (ai->ai_family == AF_INET6)
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr, ip, sizeof(ip));
    if (res != NULL)
        evutil_freeaddrinfo(res);
    if (ip[0] == '\0') {
        sh_set_error("cannot resolve %s: %s", sh.host,
                     result != 0 ? evutil_gai_strerror(result) : "no address");
        if (c->backoff_ms == SH_BACKOFF_MIN_MS)
            log_warnx("redis %s:%d: cannot resolve the name: %s; retrying", sh.host, sh.port,
                      result != 0 ? evutil_gai_strerror(result) : "no address");
        sh_schedule_retry(c);
        return;
    }
    sh_connect_ip(c, ip);
}

/* Every attempt resolves a host name again (asynchronously: evdns on the
 * main loop), so a Redis that moved (a new Service IP) is followed. */
static void sh_connect(struct sh_conn *c)
{
    struct evutil_addrinfo hints;
    struct evdns_getaddrinfo_request *req;

    if (sh.stopping || c->ac != NULL || c->dns_req != NULL)
        return;
    if (sh.dns == NULL) {
        sh_connect_ip(c, sh.host);
        return;
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    /* The callback may run before this returns (cached, or an error). */
    req = evdns_getaddrinfo(sh.dns, sh.host, NULL, &hints, sh_dns_cb, c);
    if (req != NULL)
        c->dns_req = req;
}

static void sh_pong_cb(redisAsyncContext *ac, void *r, void *priv)
{
    (void)ac;
    (void)r;
    (void)priv;
    sh.ping_pending = 0;
}

/* A Redis that stops answering (paused, network gone without a RST) is
 * found by a PING a second: no answer within connect_timeout closes both
 * connections, which then reconnect. */
static void sh_ping_cb(evutil_socket_t fd, short what, void *arg)
{

    (void)fd;
    (void)what;
    (void)arg;
    if (!sh.cmd.up)
        return;
    if (sh.ping_pending) {
        if (now_ms() - sh.ping_sent_ms <= (int64_t)sh.connect_timeout_ms)
            return;
        sh_set_error("%s:%d does not answer", sh.host, sh.port);
        log_warnx("redis %s:%d: no answer for %" PRIu64 " ms: reconnecting", sh.host, sh.port,
                  sh.connect_timeout_ms);
        sh_drop(&sh.cmd, "no answer");
        sh_drop(&sh.sub, "no answer");
        return;
    }
    sh.ping_pending = 1;
    sh.ping_sent_ms = now_ms();
    redisAsyncCommand(sh.cmd.ac, sh_pong_cb, NULL, "PING");
}

/* ---- start, stop, stats --------------------------------------------------- */

static int sh_conn_init(struct sh_conn *c, const char *name)
{
    memset(c, 0, sizeof(*c));
    c->name = name;
    c->backoff_ms = SH_BACKOFF_MIN_MS;
    c->retry = evtimer_new(sh.base, sh_retry_cb, c);
    c->timeout = evtimer_new(sh.base, sh_timeout_cb, c);
    return c->retry != NULL && c->timeout != NULL ? 0 : -1;
}

/*
 * At start, every revocation this replica holds goes out again: one that
 * was acknowledged while Redis was down sat in the queue, in memory, and a
 * crash before Redis came back would have kept it from the other replicas
 * for good. They apply each (field, at) once (sh.revoked); so does this
 * replica when it reads the hash back.
 */
static void sh_republish_cb(void *arg, const uint8_t *id, const char *subject, const char *provider,
                            const char *sid, int64_t at)
{
    char hex[2 * SESSION_ID_LEN + 1], buf[2 + SH_SUBJECT_MAX + 1], *field = NULL;
    size_t *n = arg;
    int i;

    if (sh.lifetime > 0 && at < (int64_t)time(NULL) - sh.lifetime)
        return;
    if (provider != NULL) {
        field = sh_scoped_field(provider, sid, subject);
        shared_publish_revoke_scoped(provider, sid, subject, at);
    } else if (subject != NULL) {
        if (strlen(subject) > SH_SUBJECT_MAX)
            return;
        snprintf(buf, sizeof(buf), "u:%s", subject);
        shared_publish_revoke(subject, NULL, at);
    } else {
        for (i = 0; i < SESSION_ID_LEN; i++)
            snprintf(hex + 2 * i, 3, "%02x", id[i]);
        snprintf(buf, sizeof(buf), "s:%s", hex);
        shared_publish_revoke(NULL, id, at);
    }
    if (sh.revoked != NULL)
        json_object_set_new(sh.revoked, field != NULL ? field : buf, json_integer(at));
    free(field);
    (*n)++;
}

int shared_start(struct event_base *base, const struct conf *c, char *err, size_t errlen)
{
    struct timeval one_s = {1, 0};
    unsigned char rnd[16];
    int i;

    if (c->redis_address == NULL)
        return 0;
    memset(&sh, 0, sizeof(sh));
    sh.base = base;
    sh.host = strdup(c->redis_host);
    sh.port = c->redis_port;
    sh.prefix = strdup(c->redis_prefix);
    sh.password = c->redis_password != NULL ? strdup(c->redis_password) : NULL;
    sh.connect_timeout_ms = c->redis_connect_timeout_ms;
    sh.sessions = c->nproviders > 0;
    sh.lifetime = (int64_t)(c->session_lifetime_ms / 1000);
    sh.revoked = json_object();
    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        snprintf(err, errlen, "redis: no randomness for the replica id");
        return -1;
    }
    for (i = 0; i < 16; i++)
        snprintf(origin + 2 * i, 3, "%02x", rnd[i]);
    {
        struct in6_addr a6;
        struct in_addr a4;

        if (inet_pton(AF_INET, sh.host != NULL ? sh.host : "", &a4) != 1 &&
            inet_pton(AF_INET6, sh.host != NULL ? sh.host : "", &a6) != 1) {
            /* Reads resolv.conf now, at start; lookups are asynchronous. */
            sh.dns = evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
            if (sh.dns == NULL) {
                snprintf(err, errlen, "redis: %s: cannot set up the DNS resolver", sh.host);
                return -1;
            }
        }
    }
    ev_flush = event_new(base, -1, 0, sh_flush_cb, NULL);
    sh.ev_ping = event_new(base, -1, EV_PERSIST, sh_ping_cb, NULL);
    if (sh.host == NULL || sh.prefix == NULL || sh.revoked == NULL ||
        (c->redis_password != NULL && sh.password == NULL) || ev_flush == NULL ||
        sh.ev_ping == NULL || sh_conn_init(&sh.cmd, "command") == -1 ||
        sh_conn_init(&sh.sub, "subscribe") == -1) {
        snprintf(err, errlen, "redis: out of memory");
        return -1;
    }
    event_add(sh.ev_ping, &one_s);
    pthread_mutex_lock(&q_mtx);
    memset(&st, 0, sizeof(st));
    st.configured = 1;
    st.down_since = (int64_t)time(NULL);
    pthread_mutex_unlock(&q_mtx);
    atomic_store(&sh_enabled, 1);
    log_info("redis %s:%d: shared state on (prefix \"%s\", replica %s)", sh.host, sh.port,
             sh.prefix, origin);
    if (sh.sessions) {
        size_t n = 0;
        proxy_revocations_foreach(sh_republish_cb, &n);
        if (n > 0)
            log_info("redis: %zu revocations held here are shared again", n);
    }
    sh_connect(&sh.sub);
    sh_connect(&sh.cmd);
    return 0;
}

static int sh_str_differs(const char *a, const char *b)
{
    if (a == NULL || b == NULL)
        return a != b;
    return strlen(a) != strlen(b) || CRYPTO_memcmp(a, b, strlen(a)) != 0;
}

void shared_reconfigure(const struct conf *c)
{
    int running = atomic_load(&sh_enabled);

    if (!running && c->redis_address == NULL)
        return;
    if (running && c->redis_address != NULL && strcmp(sh.host, c->redis_host) == 0 &&
        sh.port == c->redis_port && strcmp(sh.prefix, c->redis_prefix) == 0 &&
        sh.connect_timeout_ms == c->redis_connect_timeout_ms &&
        !sh_str_differs(sh.password, c->redis_password))
        return;
    log_warnx("redis: the \"redis\" section changed: it applies at the next restart (keeping %s)",
              running ? "the running connection" : "no shared state");
}

static void sh_conn_free(struct sh_conn *c)
{
    redisAsyncContext *ac = c->ac;

    if (c->dns_req != NULL) {
        evdns_getaddrinfo_cancel(c->dns_req);
        c->dns_req = NULL;
    }
    if (ac != NULL) {
        c->ac = NULL;
        c->up = 0;
        redisAsyncFree(ac);
    }
    if (c->retry != NULL)
        event_free(c->retry);
    if (c->timeout != NULL)
        event_free(c->timeout);
    c->retry = c->timeout = NULL;
}

void shared_stop(void)
{
    struct sh_item *it;
    size_t n = 0;

    if (!atomic_load(&sh_enabled))
        return;
    atomic_store(&sh_enabled, 0);
    sh.stopping = 1;
    sh_conn_free(&sh.cmd);
    sh_conn_free(&sh.sub);
    if (sh.ev_ping != NULL)
        event_free(sh.ev_ping);
    if (sh.dns != NULL)
        evdns_base_free(sh.dns, 0);
    json_decref(sh.revoked);
    pthread_mutex_lock(&q_mtx);
    while ((it = q_head) != NULL) {
        q_head = it->next;
        item_free(it);
        n++;
    }
    q_tail = NULL;
    q_len = 0;
    st.configured = 0;
    pthread_mutex_unlock(&q_mtx);
    if (n > 0)
        log_warnx("redis: %zu writes were still waiting for Redis at exit: not shared", n);
    if (ev_flush != NULL)
        event_free(ev_flush);
    ev_flush = NULL;
    free(sh.host);
    free(sh.prefix);
    if (sh.password != NULL) {
        OPENSSL_cleanse(sh.password, strlen(sh.password));
        free(sh.password);
    }
    memset(&sh, 0, sizeof(sh));
}

void shared_stats(int64_t now, struct shared_stats *out)
{
    (void)now;
    pthread_mutex_lock(&q_mtx);
    *out = st;
    out->queued = q_len;
    pthread_mutex_unlock(&q_mtx);
}
