/*
 * auditlog_test.c - the audit log: lines, the hash chain, and its verifier
 * finding an edited, removed, reordered or cut line at the right number.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <jansson.h>
#include <openssl/evp.h>

#include "auditlog.h"
#include "policy.h"

static char tmpdir[256];
static char logpath[300];

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/zt-audit-XXXXXX");
    if (mkdtemp(tmpdir) == NULL)
        return -1;
    snprintf(logpath, sizeof(logpath), "%s/audit.log", tmpdir);
    return 0;
}

static int teardown(void **state)
{
    char cmd[400];

    (void)state;
    auditlog_stop();
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Write n decision lines numbered from first through the writer thread. */
static void write_lines(int first, int n)
{
    struct evbuffer *b = evbuffer_new();
    struct policy_decision d;
    int i;

    memset(&d, 0, sizeof(d));
    d.effect = POLICY_DENY;
    d.rule_id = "default-deny";
    d.version = "v1";
    for (i = 0; i < n; i++) {
        struct auditlog_entry e;
        char rid[32], path[64];

        snprintf(rid, sizeof(rid), "req-%d", first + i);
        snprintf(path, sizeof(path), "/doc/%d?token=secret", first + i);
        memset(&e, 0, sizeof(e));
        e.time_ms = 1770000000123LL + first + i;
        e.request_id = rid;
        e.user = "00u1";
        e.email = "alice@corp.example";
        e.device = "dev-1";
        e.tier = "trusted";
        e.score = 80;
        e.client = "127.0.0.2";
        e.country = "DE";
        e.route = "wiki";
        e.method = "GET";
        e.path = path;
        e.path_len = strlen(path);
        e.decision = &d;
        e.eval_ns = 1234;
        auditlog_append(b, &e);
    }
    auditlog_submit(b);
    assert_int_equal(evbuffer_get_length(b), 0);
    evbuffer_free(b);
    auditlog_flush();
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;

    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    *len = (size_t)n;
    return buf;
}

/* Split into at most 64 lines (pointers into buf, newlines replaced). */
static size_t split_lines(char *buf, char **lines)
{
    size_t n = 0;
    char *p = buf, *nl;

    while ((nl = strchr(p, '\n')) != NULL && n < 64) {
        *nl = '\0';
        lines[n++] = p;
        p = nl + 1;
    }
    return n;
}

static void join_lines(const char *path, char **lines, size_t n)
{
    FILE *f = fopen(path, "wb");
    size_t i;

    assert_non_null(f);
    for (i = 0; i < n; i++)
        fprintf(f, "%s\n", lines[i]);
    fclose(f);
}

/* The lines of the records in b (drained) as text in out (NUL-terminated);
 * returns the length. Malformed records are added to *bad, or fail the
 * test when bad is NULL. */
static size_t format_text(struct evbuffer *b, char *out, size_t cap, uint64_t *bad)
{
    struct evbuffer *lines = evbuffer_new();
    uint64_t nbad = 0;
    size_t n;

    assert_non_null(lines);
    auditlog_format(b, lines, &nbad);
    assert_int_equal(evbuffer_get_length(b), 0);
    if (bad != NULL)
        *bad += nbad;
    else
        assert_int_equal(nbad, 0);
    n = evbuffer_get_length(lines);
    assert_true(n < cap);
    evbuffer_remove(lines, out, n);
    out[n] = '\0';
    evbuffer_free(lines);
    return n;
}

static int verify(char *err, size_t errlen)
{
    return auditlog_verify_file(logpath, err, errlen);
}

static void make_log(int n)
{
    char err[256];

    assert_int_equal(auditlog_start(logpath, err, sizeof(err)), 0);
    write_lines(1, n);
    auditlog_stop();
}

static void test_chain_verifies(void **state)
{
    char err[256], *buf, *lines[64];
    size_t len, n, i;
    json_error_t jerr;

    (void)state;
    make_log(5);
    assert_int_equal(verify(err, sizeof(err)), 0);
    assert_non_null(strstr(err, "5 lines, last hash "));
    buf = slurp(logpath, &len);
    n = split_lines(buf, lines);
    assert_int_equal(n, 5);
    assert_memory_equal(lines[0], "{\"prev\":\"" AUDITLOG_GENESIS "\",\"hash\":\"", 83);
    for (i = 0; i < n; i++) {
        json_t *o = json_loads(lines[i], JSON_REJECT_DUPLICATES, &jerr);
        char rid[32];

        assert_non_null(o);
        snprintf(rid, sizeof(rid), "req-%zu", i + 1);
        assert_string_equal(json_string_value(json_object_get(o, "request_id")), rid);
        snprintf(rid, sizeof(rid), "2026-02-02T02:40:00.%03zuZ", 124 + i);
        assert_string_equal(json_string_value(json_object_get(o, "time")), rid);
        assert_string_equal(json_string_value(json_object_get(o, "effect")), "deny");
        assert_string_equal(json_string_value(json_object_get(o, "rule")), "default-deny");
        assert_string_equal(json_string_value(json_object_get(o, "version")), "v1");
        assert_string_equal(json_string_value(json_object_get(o, "country")), "DE");
        assert_int_equal(json_integer_value(json_object_get(o, "score")), 80);
        assert_true(json_is_array(json_object_get(o, "reasons")));
        assert_true(json_is_array(json_object_get(o, "monitor")));
        assert_true(json_real_value(json_object_get(o, "eval_us")) > 1.2);
        /* the query (which may carry a token) never reaches the log */
        assert_null(strstr(lines[i], "secret"));
        assert_null(strstr(lines[i], "?"));
        json_decref(o);
    }
    free(buf);
}

/* An edited line fails its own hash: found at that line. */
static void test_edit_detected(void **state)
{
    char err[256], *buf, *lines[64], *p;
    size_t len, n;

    (void)state;
    make_log(5);
    buf = slurp(logpath, &len);
    n = split_lines(buf, lines);
    p = strstr(lines[2], "\"deny\"");
    assert_non_null(p);
    memcpy(p, "\"allo\"", 6);
    join_lines(logpath, lines, n);
    assert_int_equal(verify(err, sizeof(err)), 3);
    assert_non_null(strstr(err, "altered"));
    free(buf);
}

/* An edit whose "hash" was recomputed breaks the link of the next line. */
static void test_edit_rehashed_detected(void **state)
{
    char err[256], *buf, *lines[64], *p, hex[65], tmp[4096];
    unsigned char h[32];
    unsigned int hl;
    size_t len, n, i;

    (void)state;
    make_log(5);
    buf = slurp(logpath, &len);
    n = split_lines(buf, lines);
    p = strstr(lines[2], "\"deny\"");
    memcpy(p, "\"allo\"", 6);
    /* hash = SHA-256 of the line without its "hash" member (75 + 74 bytes) */
    snprintf(tmp, sizeof(tmp), "%.75s%s", lines[2], lines[2] + 149);
    EVP_Digest(tmp, strlen(tmp), h, &hl, EVP_sha256(), NULL);
    for (i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", h[i]);
    memcpy(lines[2] + 83, hex, 64);
    join_lines(logpath, lines, n);
    assert_int_equal(verify(err, sizeof(err)), 4);
    assert_non_null(strstr(err, "does not match line 3"));
    free(buf);
}

static void test_remove_detected(void **state)
{
    char err[256], *buf, *lines[64];
    size_t len, n;

    (void)state;
    make_log(5);
    buf = slurp(logpath, &len);
    n = split_lines(buf, lines);
    memmove(&lines[2], &lines[3], (n - 3) * sizeof(char *));
    join_lines(logpath, lines, n - 1);
    assert_int_equal(verify(err, sizeof(err)), 3);
    assert_non_null(strstr(err, "removed, inserted or reordered"));
    free(buf);
}

static void test_remove_first_detected(void **state)
{
    char err[256], *buf, *lines[64];
    size_t len, n;

    (void)state;
    make_log(3);
    buf = slurp(logpath, &len);
    n = split_lines(buf, lines);
    join_lines(logpath, lines + 1, n - 1);
    assert_int_equal(verify(err, sizeof(err)), 1);
    assert_non_null(strstr(err, "genesis"));
    free(buf);
}

static void test_reorder_detected(void **state)
{
    char err[256], *buf, *lines[64], *t;
    size_t len, n;

    (void)state;
    make_log(5);
    buf = slurp(logpath, &len);
    n = split_lines(buf, lines);
    t = lines[1];
    lines[1] = lines[2];
    lines[2] = t;
    join_lines(logpath, lines, n);
    assert_int_equal(verify(err, sizeof(err)), 2);
    free(buf);
}

static void test_inserted_line_detected(void **state)
{
    char err[256], *buf, *lines[64];
    size_t len, n;

    (void)state;
    make_log(4);
    buf = slurp(logpath, &len);
    n = split_lines(buf, lines);
    memmove(&lines[3], &lines[2], (n - 2) * sizeof(char *));
    lines[2] = "{\"time\":\"2026-01-01T00:00:00.000Z\",\"effect\":\"allow\"}";
    join_lines(logpath, lines, n + 1);
    assert_int_equal(verify(err, sizeof(err)), 3);
    assert_non_null(strstr(err, "not an audit line"));
    free(buf);
}

/* Appending to an existing file continues its chain. */
static void test_append_continues_chain(void **state)
{
    char err[256], *buf, *lines[64];
    size_t len, n;

    (void)state;
    make_log(3);
    assert_int_equal(auditlog_start(logpath, err, sizeof(err)), 0);
    write_lines(4, 2);
    auditlog_stop();
    assert_int_equal(verify(err, sizeof(err)), 0);
    buf = slurp(logpath, &len);
    n = split_lines(buf, lines);
    assert_int_equal(n, 5);
    /* line 4's prev is line 3's hash */
    assert_memory_equal(lines[3] + 9, lines[2] + 83, 64);
    free(buf);
}

/* Log rotation: the old file ends its chain, the new one starts at genesis,
 * and both verify. */
static void test_reopen_rotation(void **state)
{
    char err[256], rotated[320], *buf;
    size_t len;

    (void)state;
    snprintf(rotated, sizeof(rotated), "%s.1", logpath);
    assert_int_equal(auditlog_start(logpath, err, sizeof(err)), 0);
    assert_true(auditlog_enabled());
    write_lines(1, 3);
    assert_int_equal(rename(logpath, rotated), 0);
    assert_int_equal(auditlog_reopen(logpath, err, sizeof(err)), 0);
    write_lines(4, 2);
    auditlog_stop();
    assert_int_equal(auditlog_verify_file(rotated, err, sizeof(err)), 0);
    assert_non_null(strstr(err, "3 lines"));
    assert_int_equal(verify(err, sizeof(err)), 0);
    assert_non_null(strstr(err, "2 lines"));
    buf = slurp(logpath, &len);
    assert_memory_equal(buf + 9, AUDITLOG_GENESIS, 64);
    free(buf);
    /* a reopen to a place that cannot be opened keeps the old one */
    assert_int_equal(auditlog_start(logpath, err, sizeof(err)), 0);
    assert_int_equal(auditlog_reopen("/nonexistent/dir/audit.log", err, sizeof(err)), -1);
    assert_non_null(strstr(err, "cannot open"));
    write_lines(6, 1);
    auditlog_stop();
    assert_int_equal(verify(err, sizeof(err)), 0);
    assert_non_null(strstr(err, "3 lines"));
}

/* A crash mid-line: the verifier points at it; the writer terminates it
 * and chains on, so the damage stays visible at that line only. */
static void test_unterminated_line(void **state)
{
    char err[256], *buf;
    size_t len;
    FILE *f;

    (void)state;
    make_log(2);
    f = fopen(logpath, "ab");
    fputs("{\"prev\":\"00", f);
    fclose(f);
    assert_int_equal(verify(err, sizeof(err)), 3);
    assert_non_null(strstr(err, "unterminated"));
    assert_int_equal(auditlog_start(logpath, err, sizeof(err)), 0);
    write_lines(3, 2);
    auditlog_stop();
    assert_int_equal(verify(err, sizeof(err)), 3);
    assert_non_null(strstr(err, "not an audit line"));
    /* the lines after it chain to it: remove it and line 3 is found bad */
    buf = slurp(logpath, &len);
    assert_int_equal(auditlog_verify_buf(buf, len, err, sizeof(err)), 3);
    free(buf);
}

/* The writer takes lines where they lie in the submitted buffer's chunks:
 * the same lines submitted in one chunk, or cut into 7-byte chunks (most
 * lines across two or more), give a byte-identical file; a malformed line
 * between them is dropped either way. */
static void test_lines_across_chunks(void **state)
{
    static const size_t cuts[] = {0, 7, 1};
    struct evbuffer *b = evbuffer_new();
    struct policy_decision d;
    char err[256], *want = NULL, *got, *text;
    size_t tlen, wlen = 0, glen, k, off;
    int i;

    (void)state;
    assert_non_null(b);
    memset(&d, 0, sizeof(d));
    d.effect = POLICY_ALLOW;
    d.rule_id = "r1";
    d.version = "v1";
    for (i = 0; i < 6; i++) {
        struct auditlog_entry e;
        char rid[32];

        if (i == 3)
            evbuffer_add(b, "not json\n", 9);
        snprintf(rid, sizeof(rid), "chunk-%d", i);
        memset(&e, 0, sizeof(e));
        e.time_ms = 1770000000000LL + i;
        e.request_id = rid;
        e.device = "dev-1";
        e.score = 10 * i;
        e.route = "wiki";
        e.method = "GET";
        e.path = "/a";
        e.path_len = 2;
        e.decision = &d;
        auditlog_append(b, &e);
    }
    tlen = evbuffer_get_length(b);
    text = malloc(tlen);
    assert_non_null(text);
    assert_int_equal(evbuffer_remove(b, text, tlen), (int)tlen);
    for (k = 0; k < sizeof(cuts) / sizeof(cuts[0]); k++) {
        unlink(logpath);
        assert_int_equal(auditlog_start(logpath, err, sizeof(err)), 0);
        for (off = 0; off < tlen;) {
            size_t n = cuts[k] == 0 || tlen - off < cuts[k] ? tlen - off : cuts[k];
            struct evbuffer *piece = evbuffer_new();

            evbuffer_add(piece, text + off, n); /* a chunk of its own */
            evbuffer_add_buffer(b, piece);
            evbuffer_free(piece);
            off += n;
        }
        auditlog_submit(b);
        auditlog_flush();
        auditlog_stop();
        assert_int_equal(verify(err, sizeof(err)), 0);
        assert_non_null(strstr(err, "6 lines, last hash "));
        got = slurp(logpath, &glen);
        if (want == NULL) {
            want = got;
            wlen = glen;
            assert_non_null(strstr(want, "\"request_id\":\"chunk-5\""));
            assert_null(strstr(want, "not json"));
        } else {
            assert_int_equal(glen, wlen);
            assert_memory_equal(got, want, wlen);
            free(got);
        }
    }
    free(want);
    free(text);
    evbuffer_free(b);
}

static void test_verify_buf_and_errors(void **state)
{
    char err[256];

    (void)state;
    assert_int_equal(auditlog_verify_buf("", 0, err, sizeof(err)), 0);
    assert_non_null(strstr(err, "0 lines"));
    assert_int_equal(auditlog_verify_buf("garbage\n", 8, err, sizeof(err)), 1);
    assert_int_equal(auditlog_verify_buf("\n", 1, err, sizeof(err)), 1);
    assert_int_equal(auditlog_verify_file("/nonexistent/audit.log", err, sizeof(err)), -1);
    assert_non_null(strstr(err, "cannot open"));
}

/* Every byte value at every position of a string (the escaper looks at
 * eight bytes at a time): the line is valid JSON and the value comes back
 * as written, or with U+FFFD for a byte that is not UTF-8. */
static void test_escaping_every_byte(void **state)
{
    struct evbuffer *b = evbuffer_new();
    struct auditlog_entry e;
    char user[24], want[32], line[4096];
    json_t *o;
    json_error_t jerr;

    (void)state;
    for (int c = 1; c < 256; c++) {
        for (size_t pos = 0; pos < 20; pos++) {
            size_t n;

            memset(user, 'a' + (int)(pos % 26), 20);
            user[pos] = (char)c;
            user[20] = '\0';
            memset(&e, 0, sizeof(e));
            e.user = user;
            e.score = -1;
            auditlog_append(b, &e);
            n = format_text(b, line, sizeof(line), NULL);
            assert_null(memchr(line, '\n', n - 1));
            o = json_loads(line, 0, &jerr);
            if (o == NULL)
                fail_msg("byte 0x%02x at %zu: %s: %s", c, pos, jerr.text, line);
            memcpy(want, user, 21);
            if (c >= 0x80) { /* a lone byte >= 0x80 is never valid UTF-8 */
                memcpy(want + pos, "\xef\xbf\xbd", 3);
                memcpy(want + pos + 3, user + pos + 1, 20 - pos);
            }
            assert_string_equal(json_string_value(json_object_get(o, "user")), want);
            json_decref(o);
        }
    }
    evbuffer_free(b);
}

/* Strings are escaped: one decision stays one line of valid JSON. */
static void test_escaping(void **state)
{
    struct evbuffer *b = evbuffer_new();
    struct policy_decision d;
    struct auditlog_entry e;
    const char *failing[] = {"disk_encryption", "os\"version"};
    char line[4096];
    size_t n;
    json_t *o, *a;
    json_error_t jerr;

    (void)state;
    memset(&d, 0, sizeof(d));
    d.effect = POLICY_STEP_UP;
    d.rule_id = "payroll";
    d.version = "";
    d.step_up_max_age = 900;
    d.step_up_mfa = 1;
    memset(&e, 0, sizeof(e));
    e.time_ms = 0;
    e.user = "a\nb\"c\\";
    e.email = "j\xc3\xb6rg@corp.example"; /* valid UTF-8 stays */
    e.device = "dev\xff\x01";             /* invalid byte and a control */
    e.score = -1;
    e.path = "/x";
    e.path_len = 2;
    e.decision = &d;
    e.failing = failing;
    e.nfailing = 2;
    e.asn = 64500;
    auditlog_append(b, &e);
    n = format_text(b, line, sizeof(line), NULL);
    assert_int_equal(line[n - 1], '\n');
    assert_null(memchr(line, '\n', n - 1));
    o = json_loads(line, 0, &jerr);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "user")), "a\nb\"c\\");
    assert_string_equal(json_string_value(json_object_get(o, "email")), "j\xc3\xb6rg@corp.example");
    assert_string_equal(json_string_value(json_object_get(o, "device")), "dev\xef\xbf\xbd\x01");
    assert_true(json_is_null(json_object_get(o, "score")));
    assert_true(json_is_null(json_object_get(o, "request_id")));
    assert_string_equal(json_string_value(json_object_get(o, "effect")), "step_up");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(o, "step_up"), "max_age")),
                     900);
    assert_int_equal(json_integer_value(json_object_get(o, "asn")), 64500);
    assert_string_equal(json_string_value(json_object_get(o, "time")), "1970-01-01T00:00:00.000Z");
    a = json_object_get(o, "device_failing");
    assert_int_equal(json_array_size(a), 2);
    assert_string_equal(json_string_value(json_array_get(a, 1)), "os\"version");
    json_decref(o);
    evbuffer_free(b);
}

/* A decision with every member the line can have, as the line it was
 * before records (byte for byte), built from a record that no longer
 * depends on the entry: the entry's strings change after the append. */
static void set_monitor(struct policy_decision *d, size_t i, const char *rule_id,
                        enum policy_effect effect, int matched, enum policy_effect would)
{
    d->monitor[i].rule_id = rule_id;
    d->monitor[i].rule_effect = effect;
    d->monitor[i].matched = matched;
    d->monitor[i].would_decide = would;
}

static void golden_decision(struct policy_decision *d)
{
    memset(d, 0, sizeof(*d));
    d->effect = POLICY_STEP_UP;
    d->rule_id = "payroll";
    d->version = "2026-05-20.1";
    d->step_up_max_age = 900;
    d->step_up_mfa = 1;
    memcpy(d->reason_buf, "payroll: auth_age 1200 > 900\0mfa \"required\"", 44);
    d->reason_off[0] = 0;
    d->reason_off[1] = 29;
    d->reason_used = 44;
    d->nreasons = 2;
    d->reasons_dropped = 3;
    d->nmonitor = 4;
    set_monitor(d, 0, "new-geo", POLICY_DENY, 1, POLICY_DENY);
    /* Not matched: listed by id only, in order, under monitor_unmatched. */
    set_monitor(d, 1, "quiet \"one\"", POLICY_DENY, 0, POLICY_STEP_UP);
    set_monitor(d, 2, "mfa-all", POLICY_ALLOW, 2, POLICY_STEP_UP);
    set_monitor(d, 3, "quiet-2", POLICY_ALLOW, 0, POLICY_STEP_UP);
    d->monitor_dropped = 1;
}

static void test_record_golden(void **state)
{
    static const char want_head[] =
        "{\"time\":\"2026-02-02T02:40:00.123Z\",\"request_id\":\"a1b2c3d4-17\",\"user\":\"00u1\","
        "\"email\":\"j\xc3\xb6rg@corp.example\",\"device\":\"dev\\ufffd\\u0001\","
        "\"tier\":\"trusted\",\"score\":82,\"client\":\"192.0.2.10\",\"country\":\"DE\","
        "\"asn\":64500,\"route\":\"payroll\",\"method\":\"GET\",\"path\":\"/";
    static const char want_tail[] =
        "\",\"path_cut\":true,\"effect\":\"step_up\",\"rule\":\"payroll\",\"reasons\":"
        "[\"payroll: auth_age 1200 > 900\",\"mfa \\\"required\\\"\"],\"reasons_dropped\":3,"
        "\"step_up\":{\"max_age\":900,\"mfa\":true},\"version\":\"2026-05-20.1\",\"monitor\":"
        "[{\"rule\":\"new-geo\",\"effect\":\"deny\",\"matched\":true,\"would_decide\":\"deny\"},"
        "{\"rule\":\"mfa-all\",\"effect\":\"allow\",\"matched\":\"step_up\",\"would_decide\":"
        "\"step_up\"}],\"monitor_unmatched\":[\"quiet \\\"one\\\"\",\"quiet-2\"],"
        "\"monitor_dropped\":1,\"device_failing\":[\"disk_encryption\","
        "\"os\\\"version\",\"\"],\"eval_us\":0.840}\n";
    struct evbuffer *b = evbuffer_new();
    struct policy_decision d;
    struct auditlog_entry e;
    const char *failing[] = {"disk_encryption", "os\"version", NULL};
    char path[1100], user[8], want[4096], line[4096];
    size_t n, wn;

    (void)state;
    assert_non_null(b);
    golden_decision(&d);
    memset(&e, 0, sizeof(e));
    e.time_ms = 1770000000123LL;
    e.request_id = "a1b2c3d4-17";
    snprintf(user, sizeof(user), "00u1");
    e.user = user;
    e.email = "j\xc3\xb6rg@corp.example";
    e.device = "dev\xff\x01";
    e.tier = "trusted";
    e.score = 82;
    e.client = "192.0.2.10";
    e.country = "DE";
    e.asn = 64500;
    e.route = "payroll";
    e.method = "GET";
    memset(path, 'p', sizeof(path)); /* 1,099 bytes: cut at AUDITLOG_PATH_MAX */
    path[0] = '/';
    path[1090] = '?';
    e.path = path;
    e.path_len = 1099;
    e.decision = &d;
    e.failing = failing;
    e.nfailing = 3;
    e.eval_ns = 840;
    auditlog_append(b, &e);
    /* The record is a copy: what the entry pointed to may change now. */
    memset(path, 'x', sizeof(path));
    memset(user, 'y', 4);
    memset(d.reason_buf, 'z', 44);
    d.monitor[0].rule_id = "changed";
    failing[0] = "changed";
    n = format_text(b, line, sizeof(line), NULL);
    wn = sizeof(want_head) - 1;
    memcpy(want, want_head, wn);
    memset(want + wn, 'p', AUDITLOG_PATH_MAX - 1);
    wn += AUDITLOG_PATH_MAX - 1;
    memcpy(want + wn, want_tail, sizeof(want_tail));
    wn += sizeof(want_tail) - 1;
    assert_int_equal(n, wn);
    assert_string_equal(line, want);
    evbuffer_free(b);
}

/* One small decision's record bytes (malloc'd) and its line. */
static unsigned char *small_record(int i, size_t *len, char *line, size_t cap)
{
    struct evbuffer *b = evbuffer_new(), *c = evbuffer_new();
    struct policy_decision d;
    struct auditlog_entry e;
    unsigned char *rec;
    char rid[32];

    assert_non_null(b);
    assert_non_null(c);
    golden_decision(&d);
    snprintf(rid, sizeof(rid), "rec-%d", i);
    memset(&e, 0, sizeof(e));
    e.time_ms = 1770000000000LL + i;
    e.request_id = rid;
    e.device = "dev-1";
    e.score = i;
    e.path = "/a";
    e.path_len = 2;
    e.decision = &d;
    auditlog_append(b, &e);
    *len = evbuffer_get_length(b);
    rec = malloc(*len);
    assert_non_null(rec);
    evbuffer_copyout(b, rec, *len);
    format_text(b, line, cap, NULL);
    evbuffer_free(b);
    evbuffer_free(c);
    return rec;
}

/* Malformed records are counted and skipped; the good ones around them
 * come out as they would alone. Offsets: the 8-byte header (total length
 * at 4), then the numbers (effect at 8 + 49), then the first string's
 * u16 length at 8 + 56. */
static void test_malformed_records(void **state)
{
    struct evbuffer *b = evbuffer_new();
    char want[8][1024], all[8192], got[8192];
    unsigned char *r[8], *x;
    size_t len[8], i, n;
    uint32_t l;
    uint64_t bad = 0;

    (void)state;
    assert_non_null(b);
    for (i = 0; i < 8; i++)
        r[i] = small_record((int)i, &len[i], want[i], sizeof(want[i]));
    evbuffer_add(b, r[0], len[0]);
    evbuffer_add(b, "not a record\n", 13); /* 1: skipped to the next header */
    evbuffer_add(b, r[1], len[1]);
    r[2][8 + 49] = 9; /* 2: no such effect */
    evbuffer_add(b, r[2], len[2]);
    r[3][8 + 56] = 0xfe; /* 3: a string longer than the record */
    r[3][8 + 57] = 0x7f;
    evbuffer_add(b, r[3], len[3]);
    evbuffer_add(b, r[4], len[4]);
    x = malloc(len[5] + 3); /* 4: bytes after the last member */
    assert_non_null(x);
    memcpy(x, r[5], len[5]);
    memcpy(x + len[5], "abc", 3);
    l = (uint32_t)len[5] + 3;
    memcpy(x + 4, &l, 4);
    evbuffer_add(b, x, len[5] + 3);
    free(x);
    evbuffer_add(b, r[6], len[6]);
    evbuffer_add(b, r[7], len[7] - 5); /* 5: cut short at the end */
    n = format_text(b, got, sizeof(got), &bad);
    assert_int_equal(bad, 5);
    snprintf(all, sizeof(all), "%s%s%s%s", want[0], want[1], want[4], want[6]);
    assert_int_equal(n, strlen(all));
    assert_string_equal(got, all);
    for (i = 0; i < 8; i++)
        free(r[i]);
    evbuffer_free(b);
}

/* Every truncation and every byte changed to a few values: never a crash
 * (the ASan build), never more than one line per record, and every line
 * is one line. */
static void test_records_mutated(void **state)
{
    static const unsigned char vals[] = {0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff};
    struct evbuffer *b = evbuffer_new(), *lines = evbuffer_new();
    char want[1024];
    unsigned char *rec, *m;
    size_t len, i, k;

    (void)state;
    assert_non_null(b);
    assert_non_null(lines);
    rec = small_record(1, &len, want, sizeof(want));
    m = malloc(len);
    assert_non_null(m);
    for (i = 0; i < len; i++) {
        uint64_t bad = 0;

        evbuffer_add(b, rec, i); /* cut short */
        assert_int_equal(auditlog_format(b, lines, &bad), 0);
        assert_int_equal(bad, i > 0 ? 1 : 0);
        for (k = 0; k < sizeof(vals); k++) {
            size_t got, nl;
            char *text;

            memcpy(m, rec, len);
            m[i] = vals[k];
            bad = 0;
            evbuffer_add(b, m, len);
            got = auditlog_format(b, lines, &bad);
            assert_true(got + bad >= 1 && got <= 1);
            nl = evbuffer_get_length(lines);
            text = (char *)evbuffer_pullup(lines, -1);
            if (got == 1) {
                assert_true(nl > 2 && text[0] == '{' && text[nl - 1] == '\n');
                assert_null(memchr(text, '\n', nl - 1));
            } else {
                assert_int_equal(nl, 0);
            }
            /* The same mutant after the good record in one batch (the
             * writer's memo holds the good record's members then): the
             * good line, then exactly what the mutant gave alone. */
            {
                char *alone = malloc(nl + 1);
                uint64_t bad2 = 0;
                size_t got2, nl2;

                assert_non_null(alone);
                if (nl > 0) /* text is NULL for an empty buffer */
                    memcpy(alone, text, nl);
                evbuffer_drain(lines, nl);
                evbuffer_add(b, rec, len);
                evbuffer_add(b, m, len);
                got2 = auditlog_format(b, lines, &bad2);
                assert_int_equal(got2, 1 + got);
                assert_int_equal(bad2, bad);
                nl2 = evbuffer_get_length(lines);
                text = (char *)evbuffer_pullup(lines, -1);
                assert_int_equal(nl2, strlen(want) + nl);
                assert_memory_equal(text, want, strlen(want));
                if (nl > 0)
                    assert_memory_equal(text + strlen(want), alone, nl);
                evbuffer_drain(lines, nl2);
                free(alone);
            }
        }
    }
    free(m);
    free(rec);
    evbuffer_free(b);
    evbuffer_free(lines);
}

/* Records that share some members and differ in others, in one batch:
 * each line is the line its record gives alone (the writer reuses the
 * text of members equal to the record before's, and only those). */
static void test_batch_same_as_alone(void **state)
{
    static const char *users[] = {"alice", "bob", NULL};
    static const char *paths[] = {"/a", "/b"};
    struct evbuffer *b = evbuffer_new(), *one = evbuffer_new();
    char alone[32][2048], got[65536], all[65536];
    struct policy_decision d;
    struct auditlog_entry e;
    const char *failing[] = {"disk", "os"};
    size_t i, n, pos = 0;

    (void)state;
    assert_non_null(b);
    assert_non_null(one);
    for (i = 0; i < 32; i++) {
        golden_decision(&d);
        memset(&e, 0, sizeof(e));
        e.time_ms = 1770000000000LL + (int64_t)i;
        e.request_id = "r";
        e.user = users[i / 2 % 3];
        e.device = "dev-1";
        e.score = i % 8 < 6 ? 50 : 51;
        e.asn = i % 16 < 12 ? 0 : 64500;
        e.route = "app";
        e.method = "GET";
        e.path = paths[i / 3 % 2];
        e.path_len = 2;
        if (i % 5 == 4)
            d.effect = POLICY_DENY;
        if (i % 7 == 6)
            d.reason_buf[0] = 'P';
        if (i % 9 == 8)
            d.monitor[1].matched = 1;
        if (i % 11 != 10)
            e.decision = &d;
        e.failing = failing;
        e.nfailing = i % 4 == 3 ? 1 : 2;
        e.eval_ns = i;
        auditlog_append(b, &e);
        auditlog_append(one, &e);
        format_text(one, alone[i], sizeof(alone[i]), NULL);
        n = strlen(alone[i]);
        assert_true(pos + n < sizeof(all));
        memcpy(all + pos, alone[i], n + 1);
        pos += n;
    }
    n = format_text(b, got, sizeof(got), NULL);
    assert_int_equal(n, pos);
    assert_string_equal(got, all);
    evbuffer_free(b);
    evbuffer_free(one);
}

/* An entry whose record would pass AUDITLOG_RECORD_MAX is dropped and
 * counted, decision or admin; the lines around it are written and chain. */
static void test_oversize_entry(void **state)
{
    struct evbuffer *b = evbuffer_new(), *lines;
    struct auditlog_entry e;
    struct auditlog_stats st;
    char err[256], *big, *buf, *text[64];
    uint64_t bad = 0;
    size_t len;

    (void)state;
    assert_non_null(b);
    big = malloc(AUDITLOG_RECORD_MAX + 1);
    assert_non_null(big);
    memset(big, 'u', AUDITLOG_RECORD_MAX);
    big[AUDITLOG_RECORD_MAX] = '\0';
    memset(&e, 0, sizeof(e));
    e.user = big;
    e.score = -1;
    auditlog_append(b, &e);
    assert_true(evbuffer_get_length(b) < 64); /* a marker, not the string */
    auditlog_append_admin(b, 1770000000500LL, "token:ops", "rules put", big);
    assert_true(evbuffer_get_length(b) < 64);
    lines = evbuffer_new();
    assert_non_null(lines);
    assert_int_equal(auditlog_format(b, lines, &bad), 0);
    assert_int_equal(bad, 2);
    assert_int_equal(evbuffer_get_length(b), 0);
    assert_int_equal(evbuffer_get_length(lines), 0);
    evbuffer_free(lines);

    assert_int_equal(auditlog_start(logpath, err, sizeof(err)), 0);
    write_lines(1, 1);
    auditlog_append(b, &e);
    auditlog_append_admin(b, 1770000000500LL, "token:ops", "rules put", big);
    auditlog_append_admin(b, 1770000000600LL, "token:ops", "rules rollback", NULL);
    auditlog_submit(b);
    auditlog_flush();
    write_lines(2, 1);
    auditlog_stats(&st);
    assert_int_equal(st.lines, 3);
    assert_int_equal(st.dropped, 2);
    auditlog_stop();
    assert_int_equal(verify(err, sizeof(err)), 0);
    buf = slurp(logpath, &len);
    assert_int_equal(split_lines(buf, text), 3);
    assert_non_null(strstr(text[0], "\"request_id\":\"req-1\""));
    assert_non_null(strstr(text[1], "\"what\":\"rules rollback\""));
    assert_non_null(strstr(text[2], "\"request_id\":\"req-2\""));
    free(buf);
    free(big);
    evbuffer_free(b);
}

/* "off" writes nothing, and submit drops quietly. */
static void test_off(void **state)
{
    char err[256];
    struct auditlog_stats s;

    (void)state;
    assert_int_equal(auditlog_start("off", err, sizeof(err)), 0);
    assert_false(auditlog_enabled());
    write_lines(1, 2);
    auditlog_stats(&s);
    assert_int_equal(s.lines, 0);
    assert_int_equal(auditlog_reopen(logpath, err, sizeof(err)), 0);
    assert_true(auditlog_enabled());
    write_lines(1, 2);
    auditlog_stats(&s);
    assert_int_equal(s.lines, 2);
    assert_int_equal(strlen(s.head), 64);
    auditlog_stop();
    assert_int_equal(verify(err, sizeof(err)), 0);
}

/* Admin events are chained with the decisions around them. */
static void test_admin_event(void **state)
{
    char err[256], *buf, *lines[64];
    struct evbuffer *b;
    json_error_t jerr;
    json_t *o;
    size_t len;

    (void)state;
    assert_int_equal(auditlog_start(logpath, err, sizeof(err)), 0);
    write_lines(1, 1);
    b = evbuffer_new();
    assert_non_null(b);
    auditlog_append_admin(b, 1770000000500LL, "token:ops", "rules put",
                          "{\"version\":8,\"comment\":\"a \\\"quoted\\\" why\"}");
    auditlog_append_admin(b, 1770000000600LL, "cert:\"odd\"\nname", "rules rollback", NULL);
    /* a detail that is not one line of JSON text is written as null */
    auditlog_append_admin(b, 1770000000700LL, "token:ops", "x", "{\n}");
    auditlog_submit(b);
    evbuffer_free(b);
    auditlog_flush();
    write_lines(2, 1);
    auditlog_stop();
    assert_int_equal(verify(err, sizeof(err)), 0);
    assert_non_null(strstr(err, "5 lines"));
    buf = slurp(logpath, &len);
    assert_int_equal(split_lines(buf, lines), 5);
    o = json_loads(lines[1], JSON_REJECT_DUPLICATES, &jerr);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "event")), "admin");
    assert_string_equal(json_string_value(json_object_get(o, "actor")), "token:ops");
    assert_string_equal(json_string_value(json_object_get(o, "what")), "rules put");
    assert_string_equal(json_string_value(json_object_get(o, "time")), "2026-02-02T02:40:00.500Z");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(o, "detail"), "version")),
                     8);
    json_decref(o);
    o = json_loads(lines[2], JSON_REJECT_DUPLICATES, &jerr);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "actor")), "cert:\"odd\"\nname");
    assert_true(json_is_null(json_object_get(o, "detail")));
    json_decref(o);
    o = json_loads(lines[3], JSON_REJECT_DUPLICATES, &jerr);
    assert_non_null(o);
    assert_true(json_is_null(json_object_get(o, "detail")));
    json_decref(o);
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_chain_verifies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_edit_detected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_edit_rehashed_detected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_remove_detected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_remove_first_detected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reorder_detected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_inserted_line_detected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_append_continues_chain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen_rotation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unterminated_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lines_across_chunks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_verify_buf_and_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_escaping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_escaping_every_byte, setup, teardown),
        cmocka_unit_test_setup_teardown(test_off, setup, teardown),
        cmocka_unit_test_setup_teardown(test_admin_event, setup, teardown),
        cmocka_unit_test_setup_teardown(test_record_golden, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_records, setup, teardown),
        cmocka_unit_test_setup_teardown(test_records_mutated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_same_as_alone, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oversize_entry, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
