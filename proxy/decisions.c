/*
 * decisions.c - the ring of recent decisions and the what-if replay
 * (include/decisions.h).
 *
 * A slot is plain fixed-size storage: numbers, and one buffer of
 * NUL-terminated strings addressed by 16-bit offsets. Offset 0 is always
 * an empty string, so a field that does not fit points there. Recording
 * is a handful of bounded memcpy()s under the ring's own mutex, which
 * only the ring's worker takes on the hot path.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "authz.h"
#include "decisions.h"
#include "devtrust.h"

/* Fixed string fields of a slot, in blob order. */
enum dec_field {
    DF_REQID = 0,
    DF_ROUTE,
    DF_METHOD,
    DF_PATH,
    DF_SUB,
    DF_EMAIL,
    DF_DEVICE,
    DF_TIER,
    DF_OWNER,
    DF_STATUS,
    DF_CLIENT,
    DF_COUNTRY,
    DF_GROUPS,
    DF_RULE,
    DF_N
};

#define DEC_PREFETCH 640 /* bytes of a slot a typical record touches */

#define DSF_IDENTITY 0x01
#define DSF_MFA 0x02
#define DSF_DEV_STALE 0x04
#define DSF_INV_STALE 0x08
#define DSF_POST_STALE 0x10
#define DSF_PATH_CUT 0x20
#define DSF_GROUPS_CUT 0x40
#define DSF_INCOMPLETE 0x80

struct dec_slot {
    int64_t time_ns; /* realtime: display and the merge order */
    int64_t auth_time;
    int32_t score;
    int16_t tier;
    uint8_t effect;
    uint8_t flags;
    uint8_t nattrs, nreasons, nmonitor;
    uint16_t len;
    uint16_t off[DF_N];
    uint16_t attrs_off, reasons_off, monitor_off;
    struct {
        uint8_t rule_effect, matched, would;
    } mon[POLICY_MONITOR_MAX];
    char blob[DECISIONS_BLOB];
};

struct dec_ring {
    pthread_mutex_t mtx;
    uint64_t head; /* records ever written; slot of record n is n % cap */
    size_t cap;
    struct dec_slot *slots;
    char pad[64];
};

static struct dec_ring *rings;
static size_t nrings, total_cap;
static _Atomic int recording;

int decisions_start(size_t capacity, size_t n)
{
    size_t i, per;

    decisions_stop();
    if (capacity == 0)
        return 0;
    if (capacity > DECISIONS_MAX)
        return -1;
    if (n == 0)
        n = 1;
    if (n > capacity)
        n = capacity;
    per = (capacity + n - 1) / n;
    rings = calloc(n, sizeof(*rings));
    if (rings == NULL)
        return -1;
    for (i = 0; i < n; i++) {
        rings[i].slots = calloc(per, sizeof(struct dec_slot));
        if (rings[i].slots == NULL) {
            nrings = i;
            decisions_stop();
            return -1;
        }
        rings[i].cap = per;
        pthread_mutex_init(&rings[i].mtx, NULL);
    }
    nrings = n;
    total_cap = per * n;
    atomic_store(&recording, 1);
    return 0;
}

void decisions_stop(void)
{
    size_t i;

    atomic_store(&recording, 0);
    for (i = 0; i < nrings; i++) {
        pthread_mutex_destroy(&rings[i].mtx);
        free(rings[i].slots);
    }
    free(rings);
    rings = NULL;
    nrings = 0;
    total_cap = 0;
}

size_t decisions_capacity(void)
{
    return total_cap;
}

/* ---- recording ---------------------------------------------------------- */

/*
 * Copy str (at most max bytes; the first n when it has no NUL before) to
 * the end of the blob, NUL-terminated. One pass and no libc call: the
 * strings are short and this runs on every request. Returns the offset,
 * 0 (the empty string) for NULL or "", -1 when it does not fit (nothing
 * kept). *cut: longer than max, the first max bytes were kept.
 */
static int dec_copy(struct dec_slot *s, const char *str, size_t max, int *cut)
{
    size_t avail = sizeof(s->blob) - s->len, lim;
    char *d = s->blob + s->len, *end;
    int off = s->len;

    if (str == NULL || str[0] == '\0')
        return 0;
    if (avail < 2)
        return -1; /* not even one byte and its NUL */
    lim = max < avail - 1 ? max : avail - 1;
    /* one pass: copies up to and including the NUL */
    end = memccpy(d, str, '\0', lim + 1);
    if (end == NULL) {
        if (lim < max)
            return -1;
        *cut = 1;
        d[lim] = '\0';
        end = d + lim + 1;
    }
    s->len = (uint16_t)(s->len + (size_t)(end - d));
    return off;
}

/* The whole of str (at most max bytes, "" too), or -1 and nothing kept. */
static int dec_raw(struct dec_slot *s, const char *str, size_t max)
{
    size_t avail = sizeof(s->blob) - s->len, lim;
    char *d = s->blob + s->len, *end;

    if (avail < 1)
        return -1;
    lim = max < avail - 1 ? max : avail - 1;
    end = memccpy(d, str, '\0', lim + 1);
    if (end == NULL)
        return -1;
    s->len = (uint16_t)(s->len + (size_t)(end - d));
    return 0;
}

/* A field the replay needs: when it does not fit, the record is incomplete. */
static uint16_t dec_put(struct dec_slot *s, const char *str, size_t max, int *cut)
{
    int off = dec_copy(s, str, max, cut);

    if (off < 0) {
        s->flags |= DSF_INCOMPLETE;
        return 0;
    }
    return (uint16_t)off;
}

static void dec_fill(struct dec_slot *s, int64_t t, const char *reqid, const struct authz_input *in,
                     const struct devtrust_verdict *v, const struct authz_result *r)
{
    const struct policy_decision *d = &r->decision;
    int cut = 0, dummy = 0;
    size_t i;

    s->time_ns = t;
    s->auth_time = in->auth_time;
    s->score = in->device_score;
    s->tier = (int16_t)in->device_tier;
    s->effect = (uint8_t)d->effect;
    s->flags = 0;
    s->blob[0] = '\0';
    s->len = 1;
    if (in->has_identity)
        s->flags |= DSF_IDENTITY;
    if (in->mfa)
        s->flags |= DSF_MFA;
    if (in->device_stale)
        s->flags |= DSF_DEV_STALE;
    if (v != NULL && v->inventory_stale)
        s->flags |= DSF_INV_STALE;
    if (v != NULL && v->posture_stale)
        s->flags |= DSF_POST_STALE;
    if (r->groups_dropped > 0)
        s->flags |= DSF_GROUPS_CUT | DSF_INCOMPLETE;

    s->off[DF_REQID] = dec_put(s, reqid, 64, &dummy);
    s->off[DF_ROUTE] = dec_put(s, in->route, 128, &cut);
    s->off[DF_METHOD] = dec_put(s, in->method, 32, &cut);
    /* The rules see the path without its query (which may hold secrets). */
    s->off[DF_PATH] = 0;
    if (in->path != NULL && in->path_len > 0) {
        const char *q = memchr(in->path, '?', in->path_len);
        size_t plen = q != NULL ? (size_t)(q - in->path) : in->path_len;
        int pcut = 0;

        if (plen > DECISIONS_PATH_MAX) {
            plen = DECISIONS_PATH_MAX;
            s->flags |= DSF_PATH_CUT | DSF_INCOMPLETE;
        }
        /* the path is not NUL-terminated at the '?': copy exactly plen */
        s->off[DF_PATH] = dec_put(s, in->path, plen, &pcut);
    }
    s->off[DF_SUB] = in->has_identity ? dec_put(s, in->user_sub, 320, &cut) : 0;
    s->off[DF_EMAIL] = in->has_identity ? dec_put(s, in->user_email, 320, &cut) : 0;
    s->off[DF_DEVICE] = dec_put(s, in->device_id, 128, &cut);
    s->off[DF_TIER] = dec_put(s, v != NULL ? v->tier_name : NULL, 31, &cut);
    s->off[DF_OWNER] = dec_put(s, in->device_owner, 320, &cut);
    s->off[DF_STATUS] = dec_put(s, v != NULL ? v->status : NULL, 15, &cut);
    s->off[DF_CLIENT] = dec_put(s, r->client_ip, 47, &dummy);
    s->off[DF_COUNTRY] = dec_put(s, r->country, 7, &dummy);
    s->off[DF_GROUPS] = dec_put(s, r->groups, sizeof(r->groups) - 1, &cut);
    s->off[DF_RULE] = dec_put(s, d->rule_id, POLICY_ID_MAX, &dummy);

    s->attrs_off = s->len;
    s->nattrs = 0;
    for (i = 0; i < in->nattrs && i < DECISIONS_ATTRS_MAX; i++) {
        uint16_t mark = s->len;

        if (dec_raw(s, in->attrs[i].name, 64) == -1 || dec_raw(s, in->attrs[i].value, 1024) == -1) {
            s->len = mark;
            break;
        }
        s->nattrs++;
    }
    if (s->nattrs < in->nattrs)
        s->flags |= DSF_INCOMPLETE;

    /* Reasons and monitor ids are for people: when they do not fit they
     * are left out, and the record stays replayable. */
    s->reasons_off = s->len;
    s->nreasons = 0;
    for (i = 0; i < d->nreasons; i++) {
        const char *rs = policy_decision_reason(d, i);

        if (rs == NULL || rs[0] == '\0' || dec_copy(s, rs, POLICY_REASON_BUF, &dummy) <= 0)
            break;
        s->nreasons++;
    }
    s->monitor_off = s->len;
    s->nmonitor = 0;
    for (i = 0; i < d->nmonitor && i < POLICY_MONITOR_MAX; i++) {
        const struct policy_monitor_result *m = &d->monitor[i];

        if (m->rule_id == NULL || dec_copy(s, m->rule_id, POLICY_ID_MAX, &dummy) <= 0)
            break;
        s->mon[i].rule_effect = (uint8_t)m->rule_effect;
        s->mon[i].matched = (uint8_t)m->matched;
        s->mon[i].would = (uint8_t)m->would_decide;
        s->nmonitor++;
    }
    if (cut)
        s->flags |= DSF_INCOMPLETE;
}

void decisions_record(unsigned ring, const char *request_id, const struct authz_input *in,
                      const struct devtrust_verdict *v, const struct authz_result *r)
{
    struct dec_ring *rg;
    struct timespec ts;
    const char *next;
    size_t k;

    if (!atomic_load_explicit(&recording, memory_order_relaxed))
        return;
    clock_gettime(CLOCK_REALTIME, &ts);
    rg = &rings[ring % nrings];
    pthread_mutex_lock(&rg->mtx);
    dec_fill(&rg->slots[rg->head % rg->cap], (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec,
             request_id, in, v, r);
    rg->head++;
    /* The next slot is cold (the ring is larger than the caches): ask for
     * the lines a typical record uses now, so the next request, usually
     * microseconds away, does not wait for them. */
    next = (const char *)&rg->slots[rg->head % rg->cap];
    for (k = 0; k < DEC_PREFETCH; k += 64)
        __builtin_prefetch(next + k, 1, 0);
    pthread_mutex_unlock(&rg->mtx);
}

/* ---- reading -------------------------------------------------------------- */

static void dec_view(const struct dec_slot *s, struct decision *d)
{
    const char *p;
    size_t i;

    memset(d, 0, sizeof(*d));
    d->time_ms = s->time_ns / 1000000;
    d->request_id = s->blob + s->off[DF_REQID];
    d->route = s->blob + s->off[DF_ROUTE];
    d->method = s->blob + s->off[DF_METHOD];
    d->path = s->blob + s->off[DF_PATH];
    d->path_cut = (s->flags & DSF_PATH_CUT) != 0;
    d->has_identity = (s->flags & DSF_IDENTITY) != 0;
    d->user_sub = s->blob + s->off[DF_SUB];
    d->user_email = s->blob + s->off[DF_EMAIL];
    d->auth_time = s->auth_time;
    d->mfa = (s->flags & DSF_MFA) != 0;
    d->device_id = s->blob + s->off[DF_DEVICE];
    d->tier_name = s->blob + s->off[DF_TIER];
    d->tier = s->tier;
    d->score = s->score;
    d->device_stale = (s->flags & DSF_DEV_STALE) != 0;
    d->inventory_stale = (s->flags & DSF_INV_STALE) != 0;
    d->posture_stale = (s->flags & DSF_POST_STALE) != 0;
    d->owner = s->blob + s->off[DF_OWNER];
    d->status = s->blob + s->off[DF_STATUS];
    d->client_ip = s->blob + s->off[DF_CLIENT];
    d->country = s->blob + s->off[DF_COUNTRY];
    d->groups = s->blob + s->off[DF_GROUPS];
    d->groups_cut = (s->flags & DSF_GROUPS_CUT) != 0;
    d->effect = (enum policy_effect)s->effect;
    d->rule_id = s->blob + s->off[DF_RULE];
    d->incomplete = (s->flags & DSF_INCOMPLETE) != 0;
    p = s->blob + s->attrs_off;
    for (i = 0; i < s->nattrs; i++) {
        d->attrs[i].name = p;
        p += strlen(p) + 1;
        d->attrs[i].value = p;
        p += strlen(p) + 1;
    }
    d->nattrs = s->nattrs;
    p = s->blob + s->reasons_off;
    for (i = 0; i < s->nreasons && i < POLICY_REASONS_MAX; i++) {
        d->reasons[i] = p;
        p += strlen(p) + 1;
    }
    d->nreasons = i;
    p = s->blob + s->monitor_off;
    for (i = 0; i < s->nmonitor; i++) {
        d->monitor[i].rule_id = p;
        p += strlen(p) + 1;
        d->monitor[i].rule_effect = (enum policy_effect)s->mon[i].rule_effect;
        d->monitor[i].matched = s->mon[i].matched;
        d->monitor[i].would_decide = (enum policy_effect)s->mon[i].would;
    }
    d->nmonitor = s->nmonitor;
}

/* Per ring during a walk: the next record to look at and a copy of it. */
struct dec_cursor {
    uint64_t next; /* record number; valid while have */
    int have;
    struct dec_slot slot;
};

/* Copy record c->next of ring rg into c->slot, if it is still there. */
static void dec_cursor_load(struct dec_ring *rg, struct dec_cursor *c)
{
    pthread_mutex_lock(&rg->mtx);
    c->have = c->next < rg->head && rg->head - c->next <= rg->cap;
    if (c->have)
        memcpy(&c->slot, &rg->slots[c->next % rg->cap], sizeof(c->slot));
    pthread_mutex_unlock(&rg->mtx);
}

long decisions_walk(decisions_cb cb, void *arg)
{
    struct dec_cursor *cur;
    struct decision *view;
    long count = 0;
    size_t i;

    if (nrings == 0)
        return 0;
    cur = calloc(nrings, sizeof(*cur));
    view = malloc(sizeof(*view));
    if (cur == NULL || view == NULL) {
        free(cur);
        free(view);
        return -1;
    }
    for (i = 0; i < nrings; i++) {
        pthread_mutex_lock(&rings[i].mtx);
        cur[i].have = rings[i].head > 0;
        cur[i].next = rings[i].head - 1;
        pthread_mutex_unlock(&rings[i].mtx);
        if (cur[i].have)
            dec_cursor_load(&rings[i], &cur[i]);
    }
    for (;;) {
        size_t best = nrings;

        for (i = 0; i < nrings; i++)
            if (cur[i].have && (best == nrings || cur[i].slot.time_ns > cur[best].slot.time_ns))
                best = i;
        if (best == nrings)
            break;
        dec_view(&cur[best].slot, view);
        count++;
        if (cb(view, arg) == DECISIONS_STOP)
            break;
        if (cur[best].next == 0)
            cur[best].have = 0;
        else {
            cur[best].next--;
            dec_cursor_load(&rings[best], &cur[best]);
        }
    }
    free(view);
    free(cur);
    return count;
}

int decisions_match(const struct decisions_filter *f, const struct decision *d)
{
    if (f->user != NULL && f->user[0] != '\0' && strcmp(d->user_sub, f->user) != 0 &&
        strcasecmp(d->user_email, f->user) != 0)
        return 0;
    if (f->device != NULL && f->device[0] != '\0' && strcmp(d->device_id, f->device) != 0)
        return 0;
    if (f->route != NULL && f->route[0] != '\0' && strcmp(d->route, f->route) != 0)
        return 0;
    if (f->effect != NULL && f->effect[0] != '\0' &&
        strcmp(policy_effect_name(d->effect), f->effect) != 0)
        return 0;
    return 1;
}

/* A string, or null when empty or not UTF-8 (a path may hold any bytes). */
static json_t *dec_str_or_null(const char *s)
{
    json_t *v = s[0] != '\0' ? json_string(s) : NULL;

    return v != NULL ? v : json_null();
}

json_t *decisions_to_json(const struct decision *d)
{
    json_t *o = json_object(), *a;
    char t[80];
    time_t sec = (time_t)(d->time_ms / 1000);
    struct tm tm;
    size_t i;

    if (o == NULL)
        return NULL;
    gmtime_r(&sec, &tm);
    snprintf(t, sizeof(t), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(d->time_ms % 1000));
    json_object_set_new(o, "time", json_string(t));
    json_object_set_new(o, "request_id", dec_str_or_null(d->request_id));
    json_object_set_new(o, "route", dec_str_or_null(d->route));
    json_object_set_new(o, "method", dec_str_or_null(d->method));
    json_object_set_new(o, "path", dec_str_or_null(d->path));
    json_object_set_new(o, "user", dec_str_or_null(d->user_sub));
    json_object_set_new(o, "email", dec_str_or_null(d->user_email));
    json_object_set_new(o, "device", dec_str_or_null(d->device_id));
    json_object_set_new(o, "tier", dec_str_or_null(d->tier_name));
    json_object_set_new(o, "score", d->score >= 0 ? json_integer(d->score) : json_null());
    json_object_set_new(o, "status", dec_str_or_null(d->status));
    json_object_set_new(o, "owner", dec_str_or_null(d->owner));
    json_object_set_new(o, "device_stale", json_boolean(d->device_stale));
    json_object_set_new(o, "client_ip", dec_str_or_null(d->client_ip));
    json_object_set_new(o, "country", dec_str_or_null(d->country));
    a = json_array();
    if (d->groups[0] != '\0') {
        const char *p = d->groups, *c;
        while ((c = strchr(p, ',')) != NULL) {
            json_array_append_new(a, json_stringn(p, (size_t)(c - p)));
            p = c + 1;
        }
        json_array_append_new(a, json_string(p));
    }
    json_object_set_new(o, "groups", a);
    json_object_set_new(o, "mfa", json_boolean(d->mfa));
    json_object_set_new(o, "auth_time",
                        d->has_identity && d->auth_time > 0 ? json_integer(d->auth_time)
                                                            : json_null());
    json_object_set_new(o, "effect", json_string(policy_effect_name(d->effect)));
    json_object_set_new(o, "rule", dec_str_or_null(d->rule_id));
    a = json_array();
    for (i = 0; i < d->nreasons; i++)
        json_array_append_new(a, json_string(d->reasons[i]));
    json_object_set_new(o, "reasons", a);
    a = json_array();
    for (i = 0; i < d->nmonitor; i++) {
        const struct decision_monitor *m = &d->monitor[i];
        json_t *mo = json_object();

        json_object_set_new(mo, "rule", json_string(m->rule_id));
        json_object_set_new(mo, "matched", json_boolean(m->matched == 1));
        json_object_set_new(mo, "would_decide", json_string(policy_effect_name(m->would_decide)));
        json_array_append_new(a, mo);
    }
    json_object_set_new(o, "monitor", a);
    return o;
}

void decisions_input(const struct decision *d, struct authz_input *in, struct policy_attr *attrs,
                     struct sockaddr_storage *peer)
{
    struct sockaddr_in *v4 = (struct sockaddr_in *)peer;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)peer;
    size_t i;

    for (i = 0; i < d->nattrs; i++)
        attrs[i] = d->attrs[i];
    memset(in, 0, sizeof(*in));
    in->route = d->route;
    in->has_identity = d->has_identity;
    if (d->has_identity) {
        in->user_sub = d->user_sub[0] != '\0' ? d->user_sub : NULL;
        in->user_email = d->user_email[0] != '\0' ? d->user_email : NULL;
        in->auth_time = d->auth_time;
        in->mfa = d->mfa;
    }
    in->device_id = d->device_id[0] != '\0' ? d->device_id : NULL;
    in->device_tier = d->tier;
    in->device_score = d->score;
    in->device_stale = d->device_stale;
    in->device_owner = d->owner[0] != '\0' ? d->owner : NULL;
    in->attrs = attrs;
    in->nattrs = d->nattrs;
    in->method = d->method[0] != '\0' ? d->method : NULL;
    in->path = d->path[0] != '\0' ? d->path : NULL;
    in->path_len = strlen(d->path);
    in->now = d->time_ms / 1000;
    /* What the live decision saw, not what the directory and GeoIP say now. */
    in->groups_override = d->groups;
    in->country_override = d->country;
    /* The recorded client address is the peer (no X-Forwarded-For: it was
     * already resolved). */
    memset(peer, 0, sizeof(*peer));
    if (inet_pton(AF_INET, d->client_ip, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        in->peer = (const struct sockaddr *)peer;
    } else if (inet_pton(AF_INET6, d->client_ip, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        in->peer = (const struct sockaddr *)peer;
    }
}

/* ---- what-if -------------------------------------------------------------- */

struct whatif {
    const struct policy *p;
    whatif_eval_cb eval;
    void *arg;
    size_t replayed, skipped;
    json_t *changes;  /* key -> {"route", ..., "count"} */
    json_t *by_route; /* route -> {"gains", "losses", "unchanged"} */
    int oom;
};

/* The default evaluator: the proxy's own, with the recorded context. */
static enum policy_effect whatif_eval_authz(const struct policy *p, const struct decision *d,
                                            const char **rule, void *arg)
{
    struct authz_input in;
    struct policy_attr attrs[DECISIONS_ATTRS_MAX];
    struct sockaddr_storage peer;
    struct authz_result *r = arg;

    decisions_input(d, &in, attrs, &peer);
    authz_evaluate_policy(p, &in, r);
    *rule = r->decision.rule_id;
    return r->decision.effect;
}

struct whatif *whatif_new(const struct policy *p, whatif_eval_cb eval, void *arg)
{
    struct whatif *w = calloc(1, sizeof(*w));

    if (w == NULL)
        return NULL;
    w->p = p;
    w->eval = eval;
    w->arg = arg;
    if (eval == NULL) {
        w->eval = whatif_eval_authz;
        w->arg = malloc(sizeof(struct authz_result)); /* too big for a stack */
    }
    w->changes = json_object();
    w->by_route = json_object();
    if (w->changes == NULL || w->by_route == NULL || w->arg == NULL) {
        if (eval != NULL)
            w->arg = NULL;
        whatif_free(w);
        return NULL;
    }
    return w;
}

void whatif_free(struct whatif *w)
{
    if (w == NULL)
        return;
    if (w->eval == whatif_eval_authz)
        free(w->arg);
    json_decref(w->changes);
    json_decref(w->by_route);
    free(w);
}

static int whatif_count(json_t *o, const char *key, json_int_t by)
{
    json_t *v = json_object_get(o, key);

    if (v == NULL)
        return json_object_set_new(o, key, json_integer(by));
    return json_integer_set(v, json_integer_value(v) + by);
}

int whatif_add(struct whatif *w, const struct decision *d)
{
    const char *rule = NULL, *user, *kind;
    enum policy_effect now;
    json_t *rt, *ch;
    char *key = NULL;
    size_t klen;

    if (d->incomplete) {
        w->skipped++;
        return 0;
    }
    now = w->eval(w->p, d, &rule, w->arg);
    w->replayed++;
    rt = json_object_get(w->by_route, d->route);
    if (rt == NULL) {
        rt = json_pack("{s:i,s:i,s:i}", "gains", 0, "losses", 0, "unchanged", 0);
        if (rt == NULL || json_object_set_new(w->by_route, d->route, rt) == -1)
            goto oom;
    }
    if (now == POLICY_ALLOW && d->effect != POLICY_ALLOW)
        kind = "gains";
    else if (now != POLICY_ALLOW && d->effect == POLICY_ALLOW)
        kind = "losses";
    else
        kind = "unchanged"; /* deny <-> step_up: access did not change */
    if (whatif_count(rt, kind, 1) == -1)
        goto oom;
    if (strcmp(kind, "unchanged") == 0)
        return 0;
    user = d->user_email[0] != '\0' ? d->user_email : d->user_sub;
    /* Fields joined with a separator no route, user or device id contains. */
    klen = strlen(d->route) + strlen(user) + strlen(d->device_id) + 32;
    key = malloc(klen);
    if (key == NULL)
        goto oom;
    snprintf(key, klen, "%s\x1f%s\x1f%s\x1f%s\x1f%d\x1f%d", kind, d->route, user, d->device_id,
             (int)d->effect, (int)now);
    ch = json_object_get(w->changes, key);
    if (ch == NULL) {
        ch = json_object();
        if (ch == NULL || json_object_set_new(w->changes, key, ch) == -1)
            goto oom;
        json_object_set_new(ch, "route", json_string(d->route));
        json_object_set_new(ch, "user", user[0] != '\0' ? json_string(user) : json_null());
        json_object_set_new(ch, "device",
                            d->device_id[0] != '\0' ? json_string(d->device_id) : json_null());
        json_object_set_new(ch, "count", json_integer(0));
        json_object_set_new(ch, "was", json_string(policy_effect_name(d->effect)));
        json_object_set_new(ch, "now", json_string(policy_effect_name(now)));
        json_object_set_new(ch, "rule", json_string(rule != NULL ? rule : ""));
        json_object_set_new(ch, "was_rule", json_string(d->rule_id));
        json_object_set_new(ch, "gain", json_boolean(kind[0] == 'g'));
    }
    if (whatif_count(ch, "count", 1) == -1)
        goto oom;
    free(key);
    return 0;
oom:
    free(key);
    w->oom = 1;
    return -1;
}

static int whatif_cmp(const void *a, const void *b)
{
    const json_t *x = *(const json_t *const *)a, *y = *(const json_t *const *)b;
    json_int_t cx = json_integer_value(json_object_get(x, "count"));
    json_int_t cy = json_integer_value(json_object_get(y, "count"));
    int r;

    if (cx != cy)
        return cx > cy ? -1 : 1;
    r = strcmp(json_string_value(json_object_get(x, "route")),
               json_string_value(json_object_get(y, "route")));
    if (r != 0)
        return r;
    r = strcmp(
        json_is_string(json_object_get(x, "user")) ? json_string_value(json_object_get(x, "user"))
                                                   : "",
        json_is_string(json_object_get(y, "user")) ? json_string_value(json_object_get(y, "user"))
                                                   : "");
    if (r != 0)
        return r;
    return strcmp(json_is_string(json_object_get(x, "device"))
                      ? json_string_value(json_object_get(x, "device"))
                      : "",
                  json_is_string(json_object_get(y, "device"))
                      ? json_string_value(json_object_get(y, "device"))
                      : "");
}

json_t *whatif_result(const struct whatif *w)
{
    json_t *out = NULL, *gains, *losses, **list = NULL, *v;
    const char *k;
    size_t n = 0, i;

    if (w->oom)
        return NULL;
    list = calloc(json_object_size(w->changes) + 1, sizeof(*list));
    if (list == NULL)
        return NULL;
    json_object_foreach(w->changes, k, v) list[n++] = v;
    qsort(list, n, sizeof(*list), whatif_cmp);
    gains = json_array();
    losses = json_array();
    for (i = 0; i < n && gains != NULL && losses != NULL; i++) {
        json_t *c = json_deep_copy(list[i]);
        int gain = json_is_true(json_object_get(c, "gain"));

        json_object_del(c, "gain");
        json_array_append_new(gain ? gains : losses, c);
    }
    free(list);
    out = json_pack("{s:I,s:I,s:o,s:o,s:O}", "replayed", (json_int_t)w->replayed, "skipped",
                    (json_int_t)w->skipped, "gains", gains, "losses", losses, "by_route",
                    w->by_route);
    return out;
}

json_t *whatif_replay(const struct policy *p, const struct decision *recs, size_t n,
                      whatif_eval_cb eval, void *arg)
{
    struct whatif *w = whatif_new(p, eval, arg);
    json_t *out = NULL;
    size_t i;

    if (w == NULL)
        return NULL;
    for (i = 0; i < n; i++)
        if (whatif_add(w, &recs[i]) == -1)
            break;
    if (i == n)
        out = whatif_result(w);
    whatif_free(w);
    return out;
}
