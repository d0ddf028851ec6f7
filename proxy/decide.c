/*
 * decide.c - the per-request decision: device trust, then the rules.
 *
 * Runs on the worker after the identity is settled (sso.c) and before the
 * request is forwarded. Everything it reads is an immutable snapshot (the
 * inventory, the posture store, the rules, the directory, GeoIP): no
 * network, no file I/O, no lock held across an evaluation. Every decision
 * is written to the audit log; a deny gets a page that says what failed
 * and how to fix it; a step-up goes back to the identity provider.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <jansson.h>

#include "authz.h"
#include "decisions.h"
#include "devtrust.h"
#include "log.h"
#include "metrics.h"
#include "proxy_int.h"
#include "sbuf.h"
#include "session.h"

static void html_escape(struct sbuf *b, const char *s)
{
    for (; *s != '\0'; s++) {
        switch (*s) {
        case '<':
            sbuf_lit(b, "&lt;");
            break;
        case '>':
            sbuf_lit(b, "&gt;");
            break;
        case '&':
            sbuf_lit(b, "&amp;");
            break;
        case '"':
            sbuf_lit(b, "&quot;");
            break;
        case '\'':
            sbuf_lit(b, "&#39;");
            break;
        default:
            sbuf_add(b, s, 1);
        }
    }
}

/* snprintf(dst, size, "%s", src) without the formatting machinery (per
 * request): truncates, always terminates. */
static void copy_str(char *dst, size_t size, const char *src)
{
    size_t n = strnlen(src, size - 1);

    memcpy(dst, src, n);
    dst[n] = '\0';
}

static int wants_json(const struct http_request *req)
{
    size_t i;

    for (i = 0; i < req->nheaders; i++) {
        const struct http_header *h = &req->headers[i];
        if (header_is(h, "accept") && h->value_len >= 16 &&
            memmem(h->value, h->value_len, "application/json", 16) != NULL &&
            memmem(h->value, h->value_len, "text/html", 9) == NULL)
            return 1;
    }
    return 0;
}

static const struct http_header *find_hdr(const struct http_request *req, const char *lower)
{
    size_t i;

    for (i = 0; i < req->nheaders; i++)
        if (header_is(&req->headers[i], lower))
            return &req->headers[i];
    return NULL;
}

/* The deny page: what failed and what to do, never rule internals beyond
 * what the configuration allows (deny_details). */
static void respond_deny(struct conn *c, const struct http_request *req,
                         const struct devtrust_verdict *v, const struct authz_result *r,
                         int details)
{
    const struct policy_decision *d = r != NULL ? &r->decision : NULL;
    const char *msg =
        d != NULL && d->deny_message != NULL && d->deny_message[0] ? d->deny_message : NULL;
    struct sbuf b;
    char buf[8192];
    size_t i;

    sbuf_init(&b, buf, sizeof(buf));
    c->error = "denied by policy";
    if (wants_json(req)) {
        json_t *o = json_object(), *reasons = json_array(), *checks = json_array();
        char *txt;

        json_object_set_new(o, "error", json_string("access_denied"));
        json_object_set_new(o, "request_id", json_string(c->reqid));
        if (msg != NULL)
            json_object_set_new(o, "message", json_string(msg));
        if (details && d != NULL) {
            json_object_set_new(o, "rule", json_string(d->rule_id));
            for (i = 0; i < d->nreasons; i++)
                json_array_append_new(reasons, json_string(policy_decision_reason(d, i)));
        }
        for (i = 0; i < v->nfailing; i++) {
            json_t *ck = json_object();
            json_object_set_new(ck, "check", json_string(v->failing[i].id));
            json_object_set_new(ck, "remediation", json_string(v->failing[i].remediation));
            json_array_append_new(checks, ck);
        }
        json_object_set_new(o, "reasons", reasons);
        json_object_set_new(o, "device_tier", json_string(v->tier_name));
        json_object_set_new(o, "failing_checks", checks);
        txt = json_dumps(o, JSON_COMPACT);
        json_decref(o);
        conn_respond_local(c, 403, "Cache-Control: no-store\r\n", "application/json", txt,
                           strlen(txt), 1);
        free(txt);
        return;
    }
    sbuf_lit(&b, "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Access denied"
                 "</title></head><body><h1>Access denied</h1>\n");
    if (msg != NULL) {
        sbuf_lit(&b, "<p>");
        html_escape(&b, msg);
        sbuf_lit(&b, "</p>\n");
    } else {
        sbuf_lit(&b, "<p>The access rules do not allow this request.</p>\n");
    }
    if (v->nfailing > 0) {
        sbuf_lit(&b, "<p>Your device (trust tier <b>");
        html_escape(&b, v->tier_name);
        sbuf_lit(&b, "</b>) needs attention:</p>\n<ul>\n");
        for (i = 0; i < v->nfailing; i++) {
            sbuf_lit(&b, "<li>");
            html_escape(&b, v->failing[i].remediation[0] ? v->failing[i].remediation
                                                         : v->failing[i].id);
            sbuf_lit(&b, "</li>\n");
        }
        sbuf_lit(&b, "</ul>\n");
    }
    if (details && d != NULL && d->nreasons > 0) {
        sbuf_lit(&b, "<p>Why:</p>\n<ul>\n");
        for (i = 0; i < d->nreasons; i++) {
            sbuf_lit(&b, "<li>");
            html_escape(&b, policy_decision_reason(d, i));
            sbuf_lit(&b, "</li>\n");
        }
        sbuf_lit(&b, "</ul>\n");
    }
    sbuf_lit(&b, "<p><small>ztproxy &middot; request id ");
    sbuf_str(&b, c->reqid);
    sbuf_lit(&b, "</small></p></body></html>\n");
    conn_respond_local(c, 403, "Cache-Control: no-store\r\n", "text/html; charset=utf-8", b.p,
                       b.len, 1);
    sbuf_free(&b);
}

/* The rules' view of this request: fills in (attrs is its storage). */
static void build_input(struct conn *c, const struct devtrust_verdict *v, const char *sub,
                        const char *email, int has_identity, int64_t auth_time, int mfa,
                        const char *xff, size_t xff_len, int64_t now, struct authz_input *in,
                        struct policy_attr *attrs)
{
    size_t i, na = 0;

    for (i = 0; i < v->nattrs && na < DEVTRUST_MAX_ATTRS; i++) {
        attrs[na].name = v->attrs[i].name;
        attrs[na].value = v->attrs[i].value;
        na++;
    }
    /* The inventory status (after admin overrides) is an attribute too. */
    if (v->status[0] != '\0') {
        attrs[na].name = "status";
        attrs[na].value = v->status;
        na++;
    }
    memset(in, 0, sizeof(*in));
    in->route = c->route->name;
    in->user_sub = sub;
    in->user_email = email;
    in->has_identity = has_identity;
    in->auth_time = auth_time;
    in->mfa = mfa;
    in->device_id = c->peer.device_id;
    in->device_tier = authz_tier_index(v->tier_name);
    in->device_score = v->score;
    in->device_stale = v->inventory_stale || v->posture_stale;
    in->device_owner = v->owner[0] ? v->owner : NULL;
    in->attrs = attrs;
    in->nattrs = na;
    in->peer = (const struct sockaddr *)&c->peer_addr;
    in->xff = xff;
    in->xff_len = xff_len;
    in->method = c->method;
    in->path = c->path;
    in->path_len = c->path_len;
    in->now = now;
    in->groups_budget = c->gen->conf->assertion_groups_budget;
}

enum decide_verdict decide_request(struct conn *c, const struct http_request *req)
{
    struct worker *w = c->w;
    struct devtrust_verdict *v = &w->verdict;
    struct authz_result *r = &w->authz;
    const char *user = NULL, *sub = NULL, *email = NULL;
    int64_t auth_time = 0;
    int mfa = 0, has_identity = sso_identity(c, &sub, &email, &auth_time, &mfa);
    int64_t now = (int64_t)time(NULL);

    if (has_identity)
        user = email != NULL && email[0] ? email : sub;
    w->groups[0] = '\0';
    if (!authz_enabled()) {
        /* No rules: only the tier is used (X-ZT-Device-Tier, the assertion). */
        devtrust_evaluate_brief(c->peer.device_id, user, now, v);
        copy_str(w->tier_name, sizeof(w->tier_name), v->tier_name);
        return DECIDE_ALLOW;
    }
    devtrust_evaluate(c->peer.device_id, user, now, v);
    copy_str(w->tier_name, sizeof(w->tier_name), v->tier_name);
    {
        struct authz_input in;
        struct policy_attr attrs[DEVTRUST_MAX_ATTRS + 1];
        const struct http_header *xff = find_hdr(req, "x-forwarded-for");

        build_input(c, v, sub, email, has_identity, auth_time, mfa, xff ? xff->value : NULL,
                    xff ? xff->value_len : 0, now, &in, attrs);
        if (c->websocket && xff != NULL)
            snprintf(c->ws_xff, sizeof(c->ws_xff), "%.*s", (int)xff->value_len, xff->value);
        authz_evaluate(&in, r);
        metrics_decision(c->route->name, (int)r->decision.effect, r->decision.rule_id, r->eval_ns);
        decisions_record((unsigned)w->id, c->reqid, &in, v, r);
        authz_audit(w->auditbuf, c->reqid, &in, v, r);
    }
    /* The upstream learns only the groups the route's rules name, unless
     * the route opted into all ("forward_groups"). */
    copy_str(w->groups, sizeof(w->groups),
             c->route->forward_groups_all ? r->groups : r->route_groups);
    switch (r->decision.effect) {
    case POLICY_ALLOW:
        return DECIDE_ALLOW;
    case POLICY_STEP_UP:
        if (sso_step_up(c, req, r->decision.step_up_max_age, r->decision.step_up_mfa) ==
            SSO_HANDLED)
            return DECIDE_HANDLED;
        respond_deny(c, req, v, r, authz_deny_details());
        return DECIDE_HANDLED;
    default: {
        /* The query may carry tokens: diagnostics show the path only. */
        const char *q = memchr(c->path, '?', c->path_len);
        size_t plen = q != NULL ? (size_t)(q - c->path) : c->path_len;

        log_info("policy: deny %s %s%.*s for %s on device %s (rule %s, request %s)", c->method,
                 c->host, (int)(plen > 200 ? 200 : plen), c->path, user ? user : "-",
                 c->peer.device_id, r->decision.rule_id, c->reqid);
        respond_deny(c, req, v, r, authz_deny_details());
        return DECIDE_HANDLED;
    }
    }
}

int decide_tunnel_recheck(struct conn *c)
{
    struct worker *w = c->w;
    struct devtrust_verdict *v = &w->verdict;
    struct authz_result *r = &w->authz;
    const char *user = NULL, *sub = NULL, *email = NULL;
    int64_t auth_time = 0;
    int mfa = 0, has_identity = sso_identity(c, &sub, &email, &auth_time, &mfa);
    int64_t now = (int64_t)time(NULL);
    struct authz_input in;
    struct policy_attr attrs[DEVTRUST_MAX_ATTRS + 1];

    if (sso_still_valid(c, now) == -1)
        return -1;
    if (!authz_enabled())
        return 0;
    if (has_identity)
        user = email != NULL && email[0] ? email : sub;
    devtrust_evaluate(c->peer.device_id, user, now, v);
    build_input(c, v, sub, email, has_identity, auth_time, mfa, c->ws_xff[0] ? c->ws_xff : NULL,
                strlen(c->ws_xff), now, &in, attrs);
    authz_evaluate(&in, r);
    if (r->decision.effect == POLICY_ALLOW)
        return 0;
    /* Only a change of answer is worth an audit line. */
    authz_audit(w->auditbuf, c->reqid, &in, v, r);
    log_info("policy: websocket of %s on device %s closed: now %s by rule %s (request %s)",
             user ? user : "-", c->peer.device_id, policy_effect_name(r->decision.effect),
             r->decision.rule_id, c->reqid);
    return -1;
}

void decide_upstream_headers(struct conn *c, struct sbuf *out)
{
    struct worker *w = c->w;

    sbuf_lit(out, "X-ZT-Device-Tier: ");
    sbuf_str(out, w->tier_name[0] ? w->tier_name : "untrusted");
    sbuf_lit(out, "\r\n");
    if (w->groups[0] != '\0') {
        sbuf_lit(out, "X-ZT-Groups: ");
        sbuf_str(out, w->groups);
        sbuf_lit(out, "\r\n");
    }
}
