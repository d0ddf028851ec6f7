/*
 * metrics_test.c - the per-worker counters, the histograms and the text
 * exposition: every rendered document is parsed back (HELP and TYPE before
 * each family, every sample `name{labels} value` of its family, buckets
 * cumulative and "+Inf" equal to _count) and the values are checked.
 *
 * The metrics are process-global and only grow, so each test uses its own
 * route names and rule ids; the table-filling test runs last.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include "metrics.h"
#include "policy.h"

#define NTHREADS 4

/* ---- a strict reader of the text format --------------------------------- */

struct sample {
    char name[128];
    char labels[512]; /* as written between the braces, "" without */
    double value;
};

struct doc {
    struct sample *s;
    size_t n, cap;
    char fam[128][128]; /* families in order */
    size_t nfam;
};

static int name_char(char ch, int first)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_' || ch == ':' ||
           (!first && ch >= '0' && ch <= '9');
}

/* Labels: name="value" pairs separated by commas, values escaped. */
static int labels_valid(const char *p, const char *end)
{
    while (p < end) {
        if (!name_char(*p, 1))
            return 0;
        while (p < end && name_char(*p, 0))
            p++;
        if (p + 2 > end || p[0] != '=' || p[1] != '"')
            return 0;
        p += 2;
        while (p < end && *p != '"') {
            if (*p == '\\') {
                if (p + 1 >= end || (p[1] != '\\' && p[1] != '"' && p[1] != 'n'))
                    return 0;
                p++;
            } else if (*p == '\n') {
                return 0;
            }
            p++;
        }
        if (p >= end)
            return 0;
        p++; /* closing quote */
        if (p < end) {
            if (*p != ',')
                return 0;
            p++;
        }
    }
    return 1;
}

static int is_suffix(const char *name, const char *family, const char *suffix)
{
    size_t fl = strlen(family);
    return strncmp(name, family, fl) == 0 && strcmp(name + fl, suffix) == 0;
}

/* Parse and check the whole document; fails the test on any violation. */
static void parse(const char *text, struct doc *d)
{
    char family[128] = "", type[32] = "", help_for[128] = "";
    size_t i;
    const char *p = text;

    memset(d, 0, sizeof(*d));
    assert_true(strlen(text) > 0);
    assert_true(text[strlen(text) - 1] == '\n');
    while (*p != '\0') {
        const char *nl = strchr(p, '\n');
        char line[1024];
        size_t len;

        assert_non_null(nl);
        len = (size_t)(nl - p);
        assert_true(len < sizeof(line));
        memcpy(line, p, len);
        line[len] = '\0';
        p = nl + 1;
        if (strncmp(line, "# HELP ", 7) == 0) {
            char *sp = strchr(line + 7, ' ');
            assert_non_null(sp);
            assert_true(sp[1] != '\0'); /* a help text */
            *sp = '\0';
            assert_true(strlen(line + 7) < sizeof(help_for));
            snprintf(help_for, sizeof(help_for), "%.127s", line + 7);
            for (i = 0; i < d->nfam; i++)
                assert_string_not_equal(d->fam[i], help_for); /* each family once */
            assert_true(d->nfam < 128);
            snprintf(d->fam[d->nfam++], sizeof(d->fam[0]), "%s", help_for);
            family[0] = '\0';
            continue;
        }
        if (strncmp(line, "# TYPE ", 7) == 0) {
            char *sp = strchr(line + 7, ' ');
            assert_non_null(sp);
            *sp = '\0';
            assert_string_equal(line + 7, help_for); /* HELP right before TYPE */
            assert_true(strcmp(sp + 1, "counter") == 0 || strcmp(sp + 1, "gauge") == 0 ||
                        strcmp(sp + 1, "histogram") == 0);
            assert_true(strlen(line + 7) < sizeof(family));
            snprintf(family, sizeof(family), "%.127s", line + 7);
            snprintf(type, sizeof(type), "%s", sp + 1);
            if (strcmp(type, "counter") == 0)
                assert_true(strlen(family) > 6 &&
                            strcmp(family + strlen(family) - 6, "_total") == 0);
            assert_true(strncmp(family, "ztproxy_", 8) == 0);
            continue;
        }
        assert_true(line[0] != '#');
        assert_true(family[0] != '\0'); /* a sample before any TYPE */
        {
            struct sample s;
            char *q = line, *brace, *sp, *endp;

            memset(&s, 0, sizeof(s));
            assert_true(name_char(*q, 1));
            while (name_char(*q, 0))
                q++;
            assert_true((size_t)(q - line) < sizeof(s.name));
            memcpy(s.name, line, (size_t)(q - line));
            if (*q == '{') {
                brace = strrchr(q, '}');
                assert_non_null(brace);
                assert_true(labels_valid(q + 1, brace));
                assert_true((size_t)(brace - q - 1) < sizeof(s.labels));
                memcpy(s.labels, q + 1, (size_t)(brace - q - 1));
                q = brace + 1;
            }
            assert_true(*q == ' ');
            sp = q + 1;
            s.value = strtod(sp, &endp);
            assert_true(endp != sp && *endp == '\0');
            assert_true(s.value >= 0);
            if (strcmp(type, "histogram") == 0)
                assert_true(is_suffix(s.name, family, "_bucket") ||
                            is_suffix(s.name, family, "_sum") ||
                            is_suffix(s.name, family, "_count"));
            else
                assert_string_equal(s.name, family);
            if (d->n == d->cap) {
                d->cap = d->cap ? 2 * d->cap : 256;
                d->s = realloc(d->s, d->cap * sizeof(*d->s));
                assert_non_null(d->s);
            }
            d->s[d->n++] = s;
        }
    }
}

static void doc_free(struct doc *d)
{
    free(d->s);
}

/* The value of name{labels}, or -1 when absent. */
static double get(const struct doc *d, const char *name, const char *labels)
{
    size_t i;

    for (i = 0; i < d->n; i++)
        if (strcmp(d->s[i].name, name) == 0 && strcmp(d->s[i].labels, labels) == 0)
            return d->s[i].value;
    return -1;
}

static void render(struct doc *d)
{
    struct evbuffer *b = evbuffer_new();
    char *text;
    size_t len;

    assert_non_null(b);
    metrics_render(b);
    len = evbuffer_get_length(b);
    text = malloc(len + 1);
    assert_non_null(text);
    evbuffer_remove(b, text, len);
    text[len] = '\0';
    evbuffer_free(b);
    parse(text, d);
    free(text);
}

/* Every histogram series: cumulative buckets, "+Inf" = _count, le ascending. */
static void check_histograms(const struct doc *d, const char *family)
{
    char bucket[160], count[160], sum[160];
    size_t i, nseries = 0;

    snprintf(bucket, sizeof(bucket), "%s_bucket", family);
    snprintf(count, sizeof(count), "%s_count", family);
    snprintf(sum, sizeof(sum), "%s_sum", family);
    for (i = 0; i < d->n; i++) {
        const struct sample *c = &d->s[i];
        char prefix[520], want[512];
        double prev = 0, prev_le = -1;
        size_t j;
        int inf = 0;

        if (strcmp(c->name, count) != 0)
            continue;
        nseries++;
        snprintf(prefix, sizeof(prefix), "%s%s", c->labels, c->labels[0] ? "," : "");
        for (j = 0; j < d->n; j++) {
            const struct sample *b = &d->s[j];
            const char *le;
            if (strcmp(b->name, bucket) != 0 || strncmp(b->labels, prefix, strlen(prefix)) != 0 ||
                strncmp(b->labels + strlen(prefix), "le=\"", 4) != 0)
                continue;
            le = b->labels + strlen(prefix) + 4;
            assert_false(inf); /* nothing after +Inf */
            assert_true(b->value >= prev);
            prev = b->value;
            if (strncmp(le, "+Inf\"", 5) == 0) {
                inf = 1;
                assert_true(b->value == c->value);
            } else {
                double v = strtod(le, NULL);
                assert_true(v > prev_le);
                prev_le = v;
            }
        }
        assert_true(inf);
        snprintf(want, sizeof(want), "%s", c->labels);
        assert_true(get(d, sum, want) >= 0);
    }
    assert_true(nseries > 0);
}

/* ---- tests -------------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    OPENSSL_init_ssl(OPENSSL_INIT_LOAD_SSL_STRINGS | OPENSSL_INIT_LOAD_CRYPTO_STRINGS, NULL);
    return metrics_init(NTHREADS);
}

static void test_format_and_fixed_families(void **state)
{
    static const char *const families[] = {"ztproxy_start_time_seconds",
                                           "ztproxy_connections_accepted_total",
                                           "ztproxy_connections_active",
                                           "ztproxy_tls_handshakes_total",
                                           "ztproxy_tls_handshakes_resumed_total",
                                           "ztproxy_tls_handshake_failures_total",
                                           "ztproxy_requests_total",
                                           "ztproxy_request_duration_seconds",
                                           "ztproxy_decisions_total",
                                           "ztproxy_policy_eval_duration_seconds",
                                           "ztproxy_upstream_errors_total",
                                           "ztproxy_config_reloads_total",
                                           "ztproxy_logins_total",
                                           "ztproxy_session_cookie_wrong_device_total",
                                           "ztproxy_bearer_refused_total",
                                           "ztproxy_log_records_dropped_total",
                                           "ztproxy_loader_raised_total",
                                           "ztproxy_rules",
                                           "ztproxy_rules_loads_total",
                                           "ztproxy_directory_loads_total",
                                           "ztproxy_directory_users",
                                           "ztproxy_directory_age_seconds",
                                           "ztproxy_geoip_loads_total",
                                           "ztproxy_inventory_feed_age_seconds",
                                           "ztproxy_inventory_stale",
                                           "ztproxy_inventory_devices",
                                           "ztproxy_inventory_loads_total",
                                           "ztproxy_posture_reports_total",
                                           "ztproxy_state_persist_errors_total"};
    struct doc d;
    size_t i, j;

    (void)state;
    render(&d);
    /* Every family is announced, even before its first sample. */
    assert_int_equal(d.nfam, sizeof(families) / sizeof(families[0]));
    for (i = 0; i < sizeof(families) / sizeof(families[0]); i++) {
        for (j = 0; j < d.nfam; j++)
            if (strcmp(d.fam[j], families[i]) == 0)
                break;
        if (j == d.nfam)
            fail_msg("family %s missing", families[i]);
    }
    /* Fixed label sets are always present, zero or not. */
    assert_true(get(&d, "ztproxy_tls_handshake_failures_total", "reason=\"revoked\"") == 0);
    assert_true(get(&d, "ztproxy_tls_handshake_failures_total", "reason=\"timeout\"") == 0);
    assert_true(get(&d, "ztproxy_config_reloads_total", "result=\"success\"") == 0);
    assert_true(get(&d, "ztproxy_config_reloads_total", "result=\"failure\"") == 0);
    assert_true(get(&d, "ztproxy_logins_total", "result=\"failure\"") == 0);
    assert_true(get(&d, "ztproxy_posture_reports_total", "result=\"limited\"") == 0);
    assert_true(get(&d, "ztproxy_rules_loads_total", "result=\"refused\"") == 0);
    assert_true(get(&d, "ztproxy_connections_active", "") == 0);
    assert_true(get(&d, "ztproxy_policy_eval_duration_seconds_count", "") == 0);
    assert_true(get(&d, "ztproxy_policy_eval_duration_seconds_bucket", "le=\"+Inf\"") == 0);
    /* Nothing seen yet: no labelled series, no ages of things not loaded. */
    assert_true(get(&d, "ztproxy_inventory_feed_age_seconds", "") == -1);
    assert_true(get(&d, "ztproxy_directory_age_seconds", "") == -1);
    for (i = 0; i < d.n; i++)
        assert_true(strncmp(d.s[i].name, "ztproxy_requests_total", 22) != 0);
    doc_free(&d);
}

static void test_label_escaping(void **state)
{
    struct timespec t0 = {5, 0}, t1 = {5, 1000};
    struct doc d;

    (void)state;
    metrics_request("we\"ird\\route\nx", 200, &t0, &t1);
    metrics_decision("we\"ird\\route\nx", POLICY_DENY, "q\"uote", 10);
    render(&d);
    assert_true(
        get(&d, "ztproxy_requests_total", "route=\"we\\\"ird\\\\route\\nx\",status=\"2xx\"") == 1);
    assert_true(
        get(&d, "ztproxy_request_duration_seconds_count", "route=\"we\\\"ird\\\\route\\nx\"") == 1);
    assert_true(get(&d, "ztproxy_decisions_total",
                    "route=\"we\\\"ird\\\\route\\nx\",effect=\"deny\",rule=\"q\\\"uote\"") == 1);
    check_histograms(&d, "ztproxy_request_duration_seconds");
    doc_free(&d);
}

static void test_requests_and_duration(void **state)
{
    struct timespec t0 = {1000, 0}, t_50us = {1000, 50000}, t_1ms = {1000, 1000000},
                    t_2s = {1002, 0}, t_back = {999, 0}, zero = {0, 0};
    struct doc d;

    (void)state;
    metrics_request("req-a", 200, &t0, &t_50us);
    metrics_request("req-a", 204, &t0, &t_1ms);
    metrics_request("req-a", 302, &t0, &t_2s);
    metrics_request("req-a", 503, &t0, &t_back); /* a clock going back counts as 0 */
    metrics_request("req-a", 0, &zero, &t0);     /* no response, no duration */
    metrics_request(NULL, 404, &t0, &t_50us);
    render(&d);
    assert_true(get(&d, "ztproxy_requests_total", "route=\"req-a\",status=\"2xx\"") == 2);
    assert_true(get(&d, "ztproxy_requests_total", "route=\"req-a\",status=\"3xx\"") == 1);
    assert_true(get(&d, "ztproxy_requests_total", "route=\"req-a\",status=\"5xx\"") == 1);
    assert_true(get(&d, "ztproxy_requests_total", "route=\"req-a\",status=\"none\"") == 1);
    assert_true(get(&d, "ztproxy_requests_total", "route=\"req-a\",status=\"4xx\"") == -1);
    assert_true(get(&d, "ztproxy_requests_total", "route=\"(none)\",status=\"4xx\"") >= 1);

    /* 0 and 50 us <= 0.0001; 1 ms <= 0.001; 2 s <= 2.5. */
    assert_true(
        get(&d, "ztproxy_request_duration_seconds_bucket", "route=\"req-a\",le=\"0.0001\"") == 2);
    assert_true(
        get(&d, "ztproxy_request_duration_seconds_bucket", "route=\"req-a\",le=\"0.0005\"") == 2);
    assert_true(
        get(&d, "ztproxy_request_duration_seconds_bucket", "route=\"req-a\",le=\"0.001\"") == 3);
    assert_true(get(&d, "ztproxy_request_duration_seconds_bucket", "route=\"req-a\",le=\"1\"") ==
                3);
    assert_true(get(&d, "ztproxy_request_duration_seconds_bucket", "route=\"req-a\",le=\"2.5\"") ==
                4);
    assert_true(get(&d, "ztproxy_request_duration_seconds_bucket", "route=\"req-a\",le=\"+Inf\"") ==
                4);
    assert_true(get(&d, "ztproxy_request_duration_seconds_count", "route=\"req-a\"") == 4);
    /* 50 us + 1 ms + 2 s */
    assert_true(get(&d, "ztproxy_request_duration_seconds_sum", "route=\"req-a\"") == 2.00105);
    check_histograms(&d, "ztproxy_request_duration_seconds");
    doc_free(&d);
}

/* The change of name{labels} between two documents. */
static double delta(const struct doc *before, const struct doc *after, const char *name,
                    const char *labels)
{
    double a = get(before, name, labels), b = get(after, name, labels);
    return b - (a < 0 ? 0 : a);
}

static void test_decisions(void **state)
{
    char rule[16];
    struct doc d, base;

    (void)state;
    render(&base);
    metrics_decision("dec-a", POLICY_ALLOW, "wiki-staff", 3000);
    metrics_decision("dec-a", POLICY_ALLOW, "wiki-staff", 800);
    metrics_decision("dec-a", POLICY_DENY, "default-deny", 20000);
    metrics_decision("dec-b", POLICY_STEP_UP, "payroll", 1500000);
    metrics_decision("dec-b", 17, "odd-effect", 0); /* out of range: deny */
    /* The same address with another id (a rules reload reusing memory). */
    snprintf(rule, sizeof(rule), "%s", "rule-one");
    metrics_decision("dec-c", POLICY_DENY, rule, 100);
    snprintf(rule, sizeof(rule), "%s", "rule-two");
    metrics_decision("dec-c", POLICY_DENY, rule, 100);
    metrics_decision("dec-c", POLICY_DENY, rule, 100);
    /* Too long for the table: "(other)". */
    metrics_decision("dec-c", POLICY_DENY,
                     "a-rule-id-that-is-longer-than-sixty-four-characters-which-is-never-valid",
                     100);
    render(&d);
    assert_true(get(&d, "ztproxy_decisions_total",
                    "route=\"dec-a\",effect=\"allow\",rule=\"wiki-staff\"") == 2);
    assert_true(get(&d, "ztproxy_decisions_total",
                    "route=\"dec-a\",effect=\"deny\",rule=\"default-deny\"") == 1);
    assert_true(get(&d, "ztproxy_decisions_total",
                    "route=\"dec-b\",effect=\"step_up\",rule=\"payroll\"") == 1);
    assert_true(get(&d, "ztproxy_decisions_total",
                    "route=\"dec-b\",effect=\"deny\",rule=\"odd-effect\"") == 1);
    assert_true(get(&d, "ztproxy_decisions_total",
                    "route=\"dec-c\",effect=\"deny\",rule=\"rule-one\"") == 1);
    assert_true(get(&d, "ztproxy_decisions_total",
                    "route=\"dec-c\",effect=\"deny\",rule=\"rule-two\"") == 2);
    assert_true(get(&d, "ztproxy_decisions_total",
                    "route=\"dec-c\",effect=\"deny\",rule=\"(other)\"") == 1);
    /* 100 ns x4, 0, 800 <= 1 us; 3 us <= 5 us; 20 us <= 25 us; 1.5 ms <= 2.5 ms. */
    assert_true(
        delta(&base, &d, "ztproxy_policy_eval_duration_seconds_bucket", "le=\"0.000001\"") == 6);
    assert_true(
        delta(&base, &d, "ztproxy_policy_eval_duration_seconds_bucket", "le=\"0.000005\"") == 7);
    assert_true(
        delta(&base, &d, "ztproxy_policy_eval_duration_seconds_bucket", "le=\"0.000025\"") == 8);
    assert_true(delta(&base, &d, "ztproxy_policy_eval_duration_seconds_bucket", "le=\"0.001\"") ==
                8);
    assert_true(delta(&base, &d, "ztproxy_policy_eval_duration_seconds_bucket", "le=\"0.0025\"") ==
                9);
    assert_true(delta(&base, &d, "ztproxy_policy_eval_duration_seconds_bucket", "le=\"+Inf\"") ==
                9);
    assert_true(delta(&base, &d, "ztproxy_policy_eval_duration_seconds_count", "") == 9);
    /* 3000 + 800 + 20000 + 1500000 + 0 + 4 x 100 ns */
    assert_true(delta(&base, &d, "ztproxy_policy_eval_duration_seconds_sum", "") == 0.0015242);
    check_histograms(&d, "ztproxy_policy_eval_duration_seconds");
    doc_free(&d);
    doc_free(&base);
}

static void test_events_and_upstream(void **state)
{
    struct doc d;
    double acc, act;

    (void)state;
    render(&d);
    acc = get(&d, "ztproxy_connections_accepted_total", "");
    act = get(&d, "ztproxy_connections_active", "");
    doc_free(&d);

    metrics_count(METRICS_CONN_ACCEPTED);
    metrics_count(METRICS_CONN_ACCEPTED);
    metrics_count(METRICS_CONN_ACCEPTED);
    metrics_count(METRICS_CONN_CLOSED);
    metrics_count(METRICS_RELOAD_BEGIN);
    metrics_count(METRICS_RELOAD_OK);
    metrics_count(METRICS_RELOAD_BEGIN); /* refused */
    metrics_count(METRICS_RELOAD_BEGIN); /* refused */
    metrics_count(METRICS_LOGIN_OK);
    metrics_count(METRICS_LOGIN_FAILED);
    metrics_count(METRICS_LOGIN_FAILED);
    metrics_count(METRICS_COOKIE_WRONG_DEVICE);
    metrics_count(METRICS_BEARER_REFUSED);
    metrics_add(METRICS_AUDIT_DROPPED, 5);
    metrics_add(METRICS_ACCESS_DROPPED, 7);
    metrics_count(METRICS_LOADER_RAISED);
    metrics_add(METRICS_ACCESS_DROPPED, 0);
    metrics_add(METRICS_EVENT_COUNT, 9); /* ignored */
    metrics_count(METRICS_EVENT_COUNT);  /* ignored */
    metrics_count((enum metrics_event) - 1);
    metrics_tls_handshake(1, 0, "");
    metrics_tls_handshake(1, 1, "");
    metrics_tls_handshake(0, 0, "no client certificate");
    metrics_tls_handshake(0, 0, "handshake timeout");
    metrics_tls_handshake(0, 0, "certificate revoked (resumed session)");
    metrics_upstream_error("up-a", METRICS_UP_CONNECT_FAILED);
    metrics_upstream_error("up-a", METRICS_UP_CONNECT_FAILED);
    metrics_upstream_error("up-a", METRICS_UP_RESPONSE_TIMEOUT);
    metrics_upstream_error("up-a", METRICS_UP_ERROR_COUNT); /* ignored */
    metrics_upstream_error(NULL, METRICS_UP_TLS);
    render(&d);
    assert_true(get(&d, "ztproxy_connections_accepted_total", "") == acc + 3);
    assert_true(get(&d, "ztproxy_connections_active", "") == act + 2);
    assert_true(get(&d, "ztproxy_config_reloads_total", "result=\"success\"") == 1);
    assert_true(get(&d, "ztproxy_config_reloads_total", "result=\"failure\"") == 2);
    assert_true(get(&d, "ztproxy_logins_total", "result=\"success\"") == 1);
    assert_true(get(&d, "ztproxy_logins_total", "result=\"failure\"") == 2);
    assert_true(get(&d, "ztproxy_session_cookie_wrong_device_total", "") == 1);
    assert_true(get(&d, "ztproxy_bearer_refused_total", "") == 1);
    assert_true(get(&d, "ztproxy_log_records_dropped_total", "log=\"audit\"") == 5);
    assert_true(get(&d, "ztproxy_log_records_dropped_total", "log=\"access\"") == 7);
    assert_true(get(&d, "ztproxy_loader_raised_total", "") == 1);
    assert_true(get(&d, "ztproxy_tls_handshakes_total", "") == 2);
    assert_true(get(&d, "ztproxy_tls_handshakes_resumed_total", "") == 1);
    assert_true(get(&d, "ztproxy_tls_handshake_failures_total", "reason=\"no_certificate\"") == 1);
    assert_true(get(&d, "ztproxy_tls_handshake_failures_total", "reason=\"timeout\"") == 1);
    assert_true(get(&d, "ztproxy_tls_handshake_failures_total", "reason=\"revoked\"") == 1);
    assert_true(get(&d, "ztproxy_tls_handshake_failures_total", "reason=\"expired\"") == 0);
    assert_true(
        get(&d, "ztproxy_upstream_errors_total", "route=\"up-a\",kind=\"connect_failed\"") == 2);
    assert_true(
        get(&d, "ztproxy_upstream_errors_total", "route=\"up-a\",kind=\"response_timeout\"") == 1);
    assert_true(get(&d, "ztproxy_upstream_errors_total", "route=\"up-a\",kind=\"tls\"") == -1);
    assert_true(get(&d, "ztproxy_upstream_errors_total", "route=\"(none)\",kind=\"tls\"") == 1);
    doc_free(&d);
}

/* The reasons tls.c and proxy.c produce, OpenSSL's texts included. */
static void test_tls_reason_labels(void **state)
{
    static const struct {
        long verr;
        const char *label;
    } verify[] = {
        {X509_V_ERR_CERT_REVOKED, "revoked"},
        {X509_V_ERR_CERT_HAS_EXPIRED, "expired"},
        {X509_V_ERR_CERT_NOT_YET_VALID, "not_yet_valid"},
        {X509_V_ERR_INVALID_PURPOSE, "no_client_auth_eku"},
        {X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY, "unknown_ca"},
        {X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT, "unknown_ca"},
        {X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT, "unknown_ca"},
        {X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN, "unknown_ca"},
        {X509_V_ERR_CERT_UNTRUSTED, "unknown_ca"},
        {X509_V_ERR_UNABLE_TO_GET_CRL, "crl_unavailable"},
        {X509_V_ERR_CRL_HAS_EXPIRED, "crl_unavailable"},
        {X509_V_ERR_CERT_SIGNATURE_FAILURE, "verify_failed"},
    };
    static const struct {
        const char *reason;
        const char *label;
    } text[] = {
        {"no client certificate", "no_certificate"},
        {"handshake timeout", "timeout"},
        {"connection closed during handshake", "closed"},
        {"unexpected eof while reading", "closed"},
        {"certificate revoked (resumed session)", "revoked"},
        {"certificate has expired (resumed session)", "expired"},
        {"certificate is not yet valid (resumed session)", "not_yet_valid"},
        {"cannot check revocation (resumed session)", "crl_unavailable"},
        {"unable to get certificate CRL (resumed session)", "crl_unavailable"},
        {"cannot read device id: no URI SAN with the prefix", "device_id"},
        {"no shared cipher", "protocol"},
        {"unsupported protocol", "protocol"},
        {"wrong version number", "protocol"},
        {"tlsv1 alert unknown ca", "protocol"},
        {"sslv3 alert bad certificate", "protocol"},
        {"", "protocol"},
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(verify) / sizeof(verify[0]); i++) {
        const char *r = X509_verify_cert_error_string(verify[i].verr);
        if (strcmp(metrics_tls_reason_label(r), verify[i].label) != 0)
            fail_msg("\"%s\" (%ld) -> %s, want %s", r, verify[i].verr, metrics_tls_reason_label(r),
                     verify[i].label);
    }
    for (i = 0; i < sizeof(text) / sizeof(text[0]); i++)
        if (strcmp(metrics_tls_reason_label(text[i].reason), text[i].label) != 0)
            fail_msg("\"%s\" -> %s, want %s", text[i].reason,
                     metrics_tls_reason_label(text[i].reason), text[i].label);
    assert_string_equal(metrics_tls_reason_label(NULL), "protocol");
    /* OpenSSL's own reason texts for the handshake errors tls.c passes on. */
    assert_string_equal(metrics_tls_reason_label(ERR_reason_error_string(
                            ERR_PACK(ERR_LIB_SSL, 0, SSL_R_NO_SHARED_CIPHER))),
                        "protocol");
    assert_string_equal(metrics_tls_reason_label(ERR_reason_error_string(
                            ERR_PACK(ERR_LIB_SSL, 0, SSL_R_UNSUPPORTED_PROTOCOL))),
                        "protocol");
    assert_string_equal(metrics_tls_reason_label(ERR_reason_error_string(
                            ERR_PACK(ERR_LIB_SSL, 0, SSL_R_UNEXPECTED_EOF_WHILE_READING))),
                        "closed");
}

/* Workers count into their own blocks while the main thread renders. */
struct worker_arg {
    int id;
    int n;
};

static void *worker(void *p)
{
    const struct worker_arg *a = p;
    struct timespec t0 = {10, 0}, t1 = {10, 300000};
    char rule[32];
    int i;

    metrics_thread_init(a->id);
    snprintf(rule, sizeof(rule), "mt-rule-%d", a->id % 2);
    for (i = 0; i < a->n; i++) {
        metrics_count(METRICS_CONN_ACCEPTED);
        metrics_tls_handshake(1, i & 1, "");
        metrics_request("mt", 200, &t0, &t1);
        metrics_decision("mt", POLICY_ALLOW, rule, 2000);
        metrics_count(METRICS_CONN_CLOSED);
    }
    return NULL;
}

static void test_threads(void **state)
{
    pthread_t thr[NTHREADS + 1];
    struct worker_arg args[NTHREADS + 1];
    struct doc d;
    double acc0, tls0, prev = 0;
    int i, rounds = 0;
    const int n = 20000;

    (void)state;
    render(&d);
    acc0 = get(&d, "ztproxy_connections_accepted_total", "");
    tls0 = get(&d, "ztproxy_tls_handshakes_total", "");
    doc_free(&d);
    /* NTHREADS workers, plus one thread out of range: the shared block. */
    for (i = 0; i <= NTHREADS; i++) {
        args[i].id = i == NTHREADS ? 1000 : i;
        args[i].n = n;
        assert_int_equal(pthread_create(&thr[i], NULL, worker, &args[i]), 0);
    }
    /* Render while they count: always well-formed, never going backwards. */
    for (rounds = 0; rounds < 20; rounds++) {
        double v;
        render(&d);
        v = get(&d, "ztproxy_requests_total", "route=\"mt\",status=\"2xx\"");
        assert_true(v >= prev || v == -1);
        if (v > prev)
            prev = v;
        check_histograms(&d, "ztproxy_policy_eval_duration_seconds");
        doc_free(&d);
    }
    for (i = 0; i <= NTHREADS; i++)
        pthread_join(thr[i], NULL);
    render(&d);
    assert_true(get(&d, "ztproxy_connections_accepted_total", "") ==
                acc0 + (double)(NTHREADS + 1) * n);
    assert_true(get(&d, "ztproxy_tls_handshakes_total", "") == tls0 + (double)(NTHREADS + 1) * n);
    assert_true(get(&d, "ztproxy_requests_total", "route=\"mt\",status=\"2xx\"") ==
                (double)(NTHREADS + 1) * n);
    assert_true(get(&d, "ztproxy_request_duration_seconds_bucket", "route=\"mt\",le=\"0.00025\"") ==
                0);
    assert_true(get(&d, "ztproxy_request_duration_seconds_bucket", "route=\"mt\",le=\"0.0005\"") ==
                (double)(NTHREADS + 1) * n);
    /* ids 0, 2, 4 (1000 is even) use mt-rule-0; 1, 3 mt-rule-1 */
    assert_true(get(&d, "ztproxy_decisions_total",
                    "route=\"mt\",effect=\"allow\",rule=\"mt-rule-0\"") == 3.0 * n);
    assert_true(get(&d, "ztproxy_decisions_total",
                    "route=\"mt\",effect=\"allow\",rule=\"mt-rule-1\"") == 2.0 * n);
    check_histograms(&d, "ztproxy_request_duration_seconds");
    doc_free(&d);
}

/* A worker finds names by address; after metrics_thread_names_changed()
 * (a new configuration) the same memory may hold another name. */
static void *reuse_worker(void *p)
{
    char route[16], rule[16];

    (void)p;
    metrics_thread_init(2);
    snprintf(route, sizeof(route), "%s", "reuse-r1");
    snprintf(rule, sizeof(rule), "%s", "reuse-k1");
    metrics_request(route, 200, NULL, NULL);
    metrics_decision(route, POLICY_ALLOW, rule, 10);
    metrics_request(route, 200, NULL, NULL); /* from the cache */
    snprintf(route, sizeof(route), "%s", "reuse-r2");
    snprintf(rule, sizeof(rule), "%s", "reuse-k2");
    metrics_thread_names_changed();
    metrics_request(route, 200, NULL, NULL);
    metrics_decision(route, POLICY_ALLOW, rule, 10);
    return NULL;
}

static void test_worker_names_changed(void **state)
{
    pthread_t t;
    struct doc d;

    (void)state;
    assert_int_equal(pthread_create(&t, NULL, reuse_worker, NULL), 0);
    pthread_join(t, NULL);
    render(&d);
    assert_true(get(&d, "ztproxy_requests_total", "route=\"reuse-r1\",status=\"2xx\"") == 2);
    assert_true(get(&d, "ztproxy_requests_total", "route=\"reuse-r2\",status=\"2xx\"") == 1);
    assert_true(get(&d, "ztproxy_decisions_total",
                    "route=\"reuse-r1\",effect=\"allow\",rule=\"reuse-k1\"") == 1);
    assert_true(get(&d, "ztproxy_decisions_total",
                    "route=\"reuse-r2\",effect=\"allow\",rule=\"reuse-k2\"") == 1);
    doc_free(&d);
}

/* The bounded tables: beyond them, "(other)". */
static void test_table_limits(void **state)
{
    char id[32];
    struct doc d;
    int i;

    (void)state;
    /* Fill the rule table: ids beyond it count as "(other)". */
    for (i = 0; i < METRICS_RULES_MAX + 10; i++) {
        snprintf(id, sizeof(id), "fill-%d", i);
        metrics_decision("lim", POLICY_DENY, id, 100);
    }
    metrics_decision("lim", POLICY_ALLOW, "fill-1", 100);
    render(&d);
    assert_true(
        get(&d, "ztproxy_decisions_total", "route=\"lim\",effect=\"deny\",rule=\"fill-0\"") == 1);
    assert_true(
        get(&d, "ztproxy_decisions_total", "route=\"lim\",effect=\"deny\",rule=\"(other)\"") >= 10);
    assert_true(
        get(&d, "ztproxy_decisions_total", "route=\"lim\",effect=\"allow\",rule=\"fill-1\"") == 1);
    doc_free(&d);

    /* Fill the series table: new (route, effect, rule) triples then count
     * under route "(other)", rule "(other)" with their effect. */
    for (i = 0; i < METRICS_DECISIONS_MAX; i++) {
        snprintf(id, sizeof(id), "fill-%d", i % 2000);
        metrics_decision(i % 4 == 0 ? "lim2" : "lim3", i % 3, id, 100);
    }
    metrics_decision("lim4", POLICY_STEP_UP, "fill-7", 100);
    render(&d);
    assert_true(get(&d, "ztproxy_decisions_total",
                    "route=\"(other)\",effect=\"step_up\",rule=\"(other)\"") >= 1);
    assert_true(get(&d, "ztproxy_decisions_total",
                    "route=\"lim4\",effect=\"step_up\",rule=\"fill-7\"") == -1);

    /* Routes: beyond the table, "(other)". */
    for (i = 0; i < METRICS_ROUTES_MAX + 5; i++) {
        snprintf(id, sizeof(id), "r-%d", i);
        metrics_request(id, 200, NULL, NULL);
    }
    doc_free(&d);
    render(&d);
    assert_true(get(&d, "ztproxy_requests_total", "route=\"(other)\",status=\"2xx\"") >= 5);
    assert_true(get(&d, "ztproxy_requests_total", "route=\"r-0\",status=\"2xx\"") == 1);
    doc_free(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format_and_fixed_families),
        cmocka_unit_test(test_label_escaping),
        cmocka_unit_test(test_requests_and_duration),
        cmocka_unit_test(test_decisions),
        cmocka_unit_test(test_events_and_upstream),
        cmocka_unit_test(test_tls_reason_labels),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_worker_names_changed),
        cmocka_unit_test(test_table_limits),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
