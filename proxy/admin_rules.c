/*
 * admin_rules.c - rules, history, diff, rollback and explain of the admin
 * API (include/admin_rules.h, docs/admin-api.md).
 *
 * Everything here runs on the main thread (the admin listener's loop), one
 * request at a time: two puts can never interleave. A put is applied in an
 * order that never leaves half of it behind: validate; write the new
 * history file; authz_install_rules() (rules file + live rules, itself
 * all-or-nothing); only then the version is in memory. A failed install
 * removes the history file again.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "admin_int.h"
#include "admin_rules.h"
#include "authz.h"
#include "conf.h"
#include "devtrust.h"
#include "jsonconf.h"
#include "linediff.h"
#include "log.h"
#include "policy.h"
#include "shared.h"

#define AR_FILE_MAX (POLICY_FILE_MAX + 64 * 1024)

struct ar_version {
    long version;
    char *author;
    int64_t time;
    char *comment;
    char *rules_version;
    size_t rules;
    json_t *doc;
};

static struct {
    int enabled;          /* a policy is configured */
    char *dir;            /* state_dir/rules-history, NULL: in memory only */
    struct ar_version *v; /* oldest first */
    size_t n, cap;
} ar;

/* ---- small helpers -------------------------------------------------------------- */

static void ar_time_text(int64_t t, char *out, size_t len)
{
    time_t s = (time_t)t;
    struct tm tm;

    if (gmtime_r(&s, &tm) == NULL)
        memset(&tm, 0, sizeof(tm));
    snprintf(out, len, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* RFC 3339 ("2026-11-30T09:30:00Z", "...+01:00", fractions ignored) or Unix
 * seconds (a JSON integer). 0 and *out, or -1. */
static int ar_time_parse(const json_t *v, int64_t *out)
{
    int y, mo, d, h, mi, s, n = 0, oh = 0, om = 0, sign = 0;
    const char *p;
    struct tm tm;

    if (json_is_integer(v)) {
        if (json_integer_value(v) < 0 || json_integer_value(v) > 253402300799LL)
            return -1;
        *out = json_integer_value(v);
        return 0;
    }
    if (!json_is_string(v))
        return -1;
    p = json_string_value(v);
    if (sscanf(p, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &s, &n) != 6 || n != 19)
        return -1;
    p += n;
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p))
            return -1;
        while (isdigit((unsigned char)*p))
            p++;
    }
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        sign = *p == '-' ? -1 : 1;
        if (sscanf(p + 1, "%2d:%2d%n", &oh, &om, &n) != 2 || n != 5 || oh > 23 || om > 59)
            return -1;
        p += 1 + n;
    } else {
        return -1;
    }
    if (*p != '\0' || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || s > 60)
        return -1;
    memset(&tm, 0, sizeof(tm));
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = s;
    *out = (int64_t)timegm(&tm) - sign * (oh * 3600 + om * 60);
    return 0;
}

static const char *ar_doc_version(const json_t *doc)
{
    const json_t *v = json_object_get(doc, "version");

    return json_is_string(v) ? json_string_value(v) : "";
}

static size_t ar_doc_rules(const json_t *doc)
{
    return json_array_size(json_object_get(doc, "rules"));
}

static void ar_version_free(struct ar_version *v)
{
    free(v->author);
    free(v->comment);
    free(v->rules_version);
    json_decref(v->doc);
    memset(v, 0, sizeof(*v));
}

static struct ar_version *ar_find(long version)
{
    size_t i;

    for (i = 0; i < ar.n; i++)
        if (ar.v[i].version == version)
            return &ar.v[i];
    return NULL;
}

static struct ar_version *ar_latest(void)
{
    return ar.n > 0 ? &ar.v[ar.n - 1] : NULL;
}

static json_t *ar_version_json(const struct ar_version *v, int with_doc)
{
    char t[80];
    json_t *j;

    ar_time_text(v->time, t, sizeof(t));
    j = json_pack("{s:I,s:s,s:s,s:s,s:s,s:I}", "version", (json_int_t)v->version, "author",
                  v->author, "time", t, "comment", v->comment, "rules_version", v->rules_version,
                  "rules", (json_int_t)v->rules);
    if (j != NULL && with_doc && json_object_set(j, "document", v->doc) == -1) {
        json_decref(j);
        j = NULL;
    }
    return j;
}

/* ---- the history on disk ---------------------------------------------------------- */

static int ar_write_atomic(const char *path, const char *text, size_t len, char *err, size_t errlen)
{
    char tmp[4200];
    size_t off = 0;
    int fd, dfd;

    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd == -1) {
        snprintf(err, errlen, "%.300s: %s", tmp, strerror(errno));
        return -1;
    }
    while (off < len) {
        ssize_t n = write(fd, text + off, len - off);
        if (n == -1 && errno == EINTR)
            continue;
        if (n <= 0) {
            snprintf(err, errlen, "%.300s: write: %s", tmp, strerror(errno));
            close(fd);
            unlink(tmp);
            return -1;
        }
        off += (size_t)n;
    }
    if (fsync(fd) == -1 || close(fd) == -1 || rename(tmp, path) == -1) {
        snprintf(err, errlen, "%.300s: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    dfd = open(ar.dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd != -1) {
        (void)fsync(dfd);
        close(dfd);
    }
    return 0;
}

static void ar_file_name(long version, char *out, size_t len)
{
    snprintf(out, len, "%s/%08ld.json", ar.dir, version);
}

static int ar_persist(const struct ar_version *v, char *err, size_t errlen)
{
    char path[4096], *text;
    json_t *j;
    int rc;

    if (ar.dir == NULL)
        return 0;
    j = ar_version_json(v, 1);
    text = j != NULL ? json_dumps(j, JSON_INDENT(2)) : NULL;
    json_decref(j);
    if (text == NULL) {
        snprintf(err, errlen, "rules history: out of memory");
        return -1;
    }
    ar_file_name(v->version, path, sizeof(path));
    rc = ar_write_atomic(path, text, strlen(text), err, errlen);
    free(text);
    return rc;
}

/* Add v (takes its members) as the newest version. */
static int ar_push(struct ar_version *v, char *err, size_t errlen)
{
    if (ar.n == ar.cap) {
        size_t cap = ar.cap ? ar.cap * 2 : 16;
        struct ar_version *nv = realloc(ar.v, cap * sizeof(*nv));
        if (nv == NULL) {
            snprintf(err, errlen, "rules history: out of memory");
            return -1;
        }
        ar.v = nv;
        ar.cap = cap;
    }
    ar.v[ar.n++] = *v;
    memset(v, 0, sizeof(*v));
    return 0;
}

/* A new version record (not yet in the history). */
static int ar_version_make(struct ar_version *v, long version, const char *author,
                           const char *comment, json_t *doc, int64_t now)
{
    memset(v, 0, sizeof(*v));
    v->version = version;
    v->author = strdup(author);
    v->comment = strdup(comment != NULL ? comment : "");
    v->rules_version = strdup(ar_doc_version(doc));
    v->rules = ar_doc_rules(doc);
    v->time = now;
    v->doc = json_incref(doc);
    if (v->author == NULL || v->comment == NULL || v->rules_version == NULL) {
        ar_version_free(v);
        return -1;
    }
    return 0;
}

static int ar_load_one(const char *path, long version, char *err, size_t errlen)
{
    static const char *const keys[] = {"version", "author",        "time",     "comment",
                                       "rules",   "rules_version", "document", NULL};
    struct ar_version v;
    json_error_t jerr;
    json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr), *doc;
    char key[64];
    int64_t t;

    memset(&v, 0, sizeof(v));
    if (j == NULL) {
        snprintf(err, errlen, "%s:%d:%d: %s", path, jerr.line, jerr.column, jerr.text);
        return -1;
    }
    if (jsonconf_check_keys(j, keys, key, sizeof(key)) != 0) {
        snprintf(err, errlen, "%s: $%s%s: unknown key (or not an object)", path,
                 json_is_object(j) ? "." : "", json_is_object(j) ? key : "");
        goto fail;
    }
    if (json_integer_value(json_object_get(j, "version")) != version) {
        snprintf(err, errlen, "%s: $.version: expected %ld (the file name)", path, version);
        goto fail;
    }
    if (!json_is_string(json_object_get(j, "author")) ||
        !json_is_string(json_object_get(j, "comment"))) {
        snprintf(err, errlen, "%s: $.author, $.comment: expected strings", path);
        goto fail;
    }
    if (ar_time_parse(json_object_get(j, "time"), &t) == -1) {
        snprintf(err, errlen, "%s: $.time: expected an RFC 3339 time", path);
        goto fail;
    }
    doc = json_object_get(j, "document");
    if (!json_is_object(doc) || !json_is_array(json_object_get(doc, "rules"))) {
        snprintf(err, errlen, "%s: $.document: expected a rules document", path);
        goto fail;
    }
    if (ar_version_make(&v, version, json_string_value(json_object_get(j, "author")),
                        json_string_value(json_object_get(j, "comment")), doc, t) == -1 ||
        ar_push(&v, err, errlen) == -1) {
        snprintf(err, errlen, "%s: out of memory", path);
        goto fail;
    }
    json_decref(j);
    return 0;
fail:
    ar_version_free(&v);
    json_decref(j);
    return -1;
}

static int ar_cmp(const void *a, const void *b)
{
    long x = ((const struct ar_version *)a)->version, y = ((const struct ar_version *)b)->version;

    return x < y ? -1 : x > y;
}

static int ar_load_dir(char *err, size_t errlen)
{
    struct dirent *de;
    DIR *d = opendir(ar.dir);
    char path[4096];
    int rc = 0;

    if (d == NULL) {
        snprintf(err, errlen, "%s: %s", ar.dir, strerror(errno));
        return -1;
    }
    while (rc == 0 && (de = readdir(d)) != NULL) {
        size_t n = strlen(de->d_name), i;
        long version;

        if (n < 6 || strcmp(de->d_name + n - 5, ".json") != 0)
            continue;
        for (i = 0; i < n - 5 && isdigit((unsigned char)de->d_name[i]); i++)
            ;
        if (i != n - 5 || n - 5 > 15)
            continue; /* not ours (NNNNNNNN.json) */
        version = strtol(de->d_name, NULL, 10);
        if (version < 1)
            continue;
        if (ar.n >= ADMIN_RULES_HISTORY_MAX) {
            snprintf(err, errlen, "%s: more than %d versions", ar.dir, ADMIN_RULES_HISTORY_MAX);
            rc = -1;
            break;
        }
        snprintf(path, sizeof(path), "%s/%s", ar.dir, de->d_name);
        rc = ar_load_one(path, version, err, errlen);
    }
    closedir(d);
    if (rc == 0 && ar.n > 1)
        qsort(ar.v, ar.n, sizeof(*ar.v), ar_cmp);
    return rc;
}

/*
 * The live rules must be the newest version: if they are not (the file was
 * changed by hand and reloaded, or this is the first start), record them
 * as a new version by "file". 0, or -1 and err.
 */
static int ar_sync(int64_t now, char *err, size_t errlen)
{
    struct ar_version v, *last = ar_latest();
    json_error_t jerr;
    json_t *doc;
    size_t len;
    char *text = authz_rules_text(&len);
    int rc = -1;

    if (text == NULL) {
        snprintf(err, errlen, "the live rules are not loaded");
        return -1;
    }
    doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (doc == NULL) {
        snprintf(err, errlen, "the live rules cannot be read back: %s", jerr.text);
        return -1;
    }
    if (last != NULL && json_equal(last->doc, doc)) {
        json_decref(doc);
        return 0;
    }
    if (ar_version_make(&v, last != NULL ? last->version + 1 : 1, "file",
                        last != NULL ? "the rules file was changed outside the admin API"
                                     : "the rules file at start",
                        doc, now) == -1) {
        snprintf(err, errlen, "rules history: out of memory");
        goto out;
    }
    if (ar_persist(&v, err, errlen) == -1 || ar_push(&v, err, errlen) == -1)
        goto out;
    log_info("admin: rules history: version %ld recorded from the rules file",
             ar_latest()->version);
    rc = 0;
out:
    ar_version_free(&v);
    json_decref(doc);
    return rc;
}

int admin_rules_start(const struct conf *c, char *err, size_t errlen)
{
    size_t n;

    memset(&ar, 0, sizeof(ar));
    if (c->policy_rules == NULL)
        return 0;
    ar.enabled = 1;
    if (c->state_dir != NULL) {
        n = strlen(c->state_dir) + sizeof("/rules-history");
        ar.dir = malloc(n);
        if (ar.dir == NULL) {
            snprintf(err, errlen, "rules history: out of memory");
            return -1;
        }
        snprintf(ar.dir, n, "%s/rules-history", c->state_dir);
        if (mkdir(ar.dir, 0700) == -1 && errno != EEXIST) {
            snprintf(err, errlen, "rules history: %s: %s", ar.dir, strerror(errno));
            goto fail;
        }
        if (ar_load_dir(err, errlen) == -1)
            goto fail;
    } else {
        log_warnx("admin: no state_dir: the rules history is kept in memory only");
    }
    if (ar_sync((int64_t)time(NULL), err, errlen) == -1)
        goto fail;
    return 0;
fail:
    admin_rules_stop();
    return -1;
}

void admin_rules_stop(void)
{
    size_t i;

    for (i = 0; i < ar.n; i++)
        ar_version_free(&ar.v[i]);
    free(ar.v);
    free(ar.dir);
    memset(&ar, 0, sizeof(ar));
}

long admin_rules_version(void)
{
    return ar.n > 0 ? ar.v[ar.n - 1].version : 0;
}

/* ---- endpoints ------------------------------------------------------------------- */

/* Strict body: an object with only the allowed keys. 0, or -1 with a 400. */
static int ar_body_keys(const struct admin_call *c, const char *const *keys,
                        struct admin_reply *out)
{
    char key[200];
    int rc;

    if (c->body == NULL) {
        admin_error(out, 400, "bad_request", "$: a JSON object body is required");
        return -1;
    }
    rc = jsonconf_check_keys(c->body, keys, key, sizeof(key));
    if (rc == -1) {
        admin_error(out, 400, "bad_request", "$: expected an object, got %s",
                    jsonconf_type_name(c->body));
        return -1;
    }
    if (rc == 1) {
        admin_error(out, 400, "bad_request", "$.%s: unknown key", key);
        return -1;
    }
    return 0;
}

static int ar_opt_comment(const struct admin_call *c, const char **comment, struct admin_reply *out)
{
    const json_t *v = json_object_get(c->body, "comment");

    *comment = NULL;
    if (v == NULL)
        return 0;
    if (!json_is_string(v) || json_string_length(v) > ADMIN_COMMENT_MAX ||
        strlen(json_string_value(v)) != json_string_length(v)) {
        admin_error(out, 400, "bad_request", "$.comment: expected a string of at most %d bytes",
                    ADMIN_COMMENT_MAX);
        return -1;
    }
    *comment = json_string_value(v);
    return 0;
}

/* The document as the rules file's text (pretty, key order kept). */
static char *ar_doc_text(const json_t *doc, size_t *len)
{
    char *t = json_dumps(doc, JSON_INDENT(2)), *r;
    size_t n;

    if (t == NULL)
        return NULL;
    n = strlen(t);
    r = realloc(t, n + 2);
    if (r == NULL) {
        free(t);
        return NULL;
    }
    r[n] = '\n';
    r[n + 1] = '\0';
    *len = n + 1;
    return r;
}

/* Validate text: 1 valid; 0 invalid (out is the 422); -1 other (out set). */
static int ar_validate(const char *text, size_t len, struct admin_reply *out)
{
    json_t *errors = NULL;
    int rc = authz_validate_text(text, len, &errors);

    if (rc == 0) {
        json_decref(errors);
        return 1;
    }
    if (rc == 1) {
        out->status = 422;
        json_decref(out->body);
        out->body =
            json_pack("{s:b,s:s,s:s,s:o}", "ok", 0, "error", "invalid_rules", "message",
                      "the rules document is not valid (nothing was changed)", "errors", errors);
        return 0;
    }
    admin_error(out, 500, "internal", "%s",
                json_string_value(json_object_get(json_array_get(errors, 0), "message")) != NULL
                    ? json_string_value(json_object_get(json_array_get(errors, 0), "message"))
                    : "validation failed");
    json_decref(errors);
    return -1;
}

/* Validate, record and install doc as a new version. */
static void ar_apply(const struct admin_call *c, json_t *doc, const char *comment, const char *what,
                     long base_version, long rollback_of, struct admin_reply *out)
{
    char err[AUTHZ_ERR_MAX], path[4096];
    struct ar_version v;
    size_t len = 0;
    char *text = NULL;
    json_t *detail;

    memset(&v, 0, sizeof(v));
    if (!json_is_object(doc)) {
        admin_error(out, 400, "bad_request", "$.document: expected a rules document (an object)");
        return;
    }
    if (ar_sync(c->now, err, sizeof(err)) == -1) {
        admin_error(out, 500, "internal", "%s", err);
        return;
    }
    if (base_version > 0 && base_version != admin_rules_version()) {
        admin_error(out, 409, "conflict",
                    "base_version %ld is not the live version %ld (reload and retry)", base_version,
                    admin_rules_version());
        if (out->body != NULL)
            json_object_set_new(out->body, "version", json_integer(admin_rules_version()));
        return;
    }
    text = ar_doc_text(doc, &len);
    if (text == NULL) {
        admin_error(out, 500, "internal", "out of memory");
        return;
    }
    if (ar_validate(text, len, out) != 1)
        goto out;
    if (ar_version_make(&v, admin_rules_version() + 1, c->actor, comment, doc, c->now) == -1) {
        admin_error(out, 500, "internal", "out of memory");
        goto out;
    }
    if (ar_persist(&v, err, sizeof(err)) == -1) {
        admin_error(out, 500, "internal", "the history cannot be written (nothing changed): %s",
                    err);
        goto out;
    }
    if (authz_install_rules(text, len, err, sizeof(err)) == -1) {
        if (ar.dir != NULL) {
            ar_file_name(v.version, path, sizeof(path));
            unlink(path);
        }
        admin_error(out, 500, "internal", "the rules were not installed (nothing changed): %s",
                    err);
        goto out;
    }
    if (ar_push(&v, err, sizeof(err)) == -1) {
        /* Installed and on disk: the next start reads it back. */
        admin_error(out, 500, "internal", "%s", err);
        goto out;
    }
    detail = json_pack("{s:I,s:s,s:I,s:s}", "version", (json_int_t)ar_latest()->version,
                       "rules_version", ar_latest()->rules_version, "rules",
                       (json_int_t)ar_latest()->rules, "comment", ar_latest()->comment);
    if (detail != NULL && rollback_of > 0)
        json_object_set_new(detail, "rollback_to", json_integer(rollback_of));
    admin_audit(c, what, detail);
    json_decref(detail);
    shared_publish_rules(text, len, c->actor, comment);
    out->status = 200;
    json_decref(out->body);
    out->body =
        json_pack("{s:I,s:s,s:I}", "version", (json_int_t)ar_latest()->version, "rules_version",
                  ar_latest()->rules_version, "rules", (json_int_t)ar_latest()->rules);
out:
    ar_version_free(&v);
    free(text);
}

int admin_rules_received(const char *text, size_t len, const char *author, const char *comment,
                         int64_t now, char *err, size_t errlen)
{
    struct ar_version v;
    json_error_t jerr;
    json_t *doc, *errors = NULL;
    char path[4096], who[600];
    int rc = -1;

    memset(&v, 0, sizeof(v));
    if (!ar.enabled) {
        /* No admin listener (or no policy) here: no history to record. */
        return authz_install_rules(text, len, err, errlen);
    }
    doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(doc)) {
        snprintf(err, errlen, "$: expected a rules document: %s", doc == NULL ? jerr.text : "");
        goto out;
    }
    if (authz_validate_text(text, len, &errors) != 0) {
        snprintf(err, errlen, "the rules document is not valid here: %s",
                 json_string_value(json_object_get(json_array_get(errors, 0), "message")) != NULL
                     ? json_string_value(json_object_get(json_array_get(errors, 0), "message"))
                     : "validation failed");
        goto out;
    }
    if (ar_sync(now, err, errlen) == -1)
        goto out;
    snprintf(who, sizeof(who), "%s (via redis)", author);
    if (ar_version_make(&v, admin_rules_version() + 1, who, comment, doc, now) == -1) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    if (ar_persist(&v, err, errlen) == -1)
        goto out;
    if (authz_install_rules(text, len, err, errlen) == -1) {
        if (ar.dir != NULL) {
            ar_file_name(v.version, path, sizeof(path));
            unlink(path);
        }
        goto out;
    }
    if (ar_push(&v, err, errlen) == -1)
        goto out;
    rc = 0;
out:
    ar_version_free(&v);
    json_decref(errors);
    json_decref(doc);
    return rc;
}

static int ar_long_param(const char *s, long *out)
{
    char *end;
    long v;

    if (s == NULL || *s == '\0' || !isdigit((unsigned char)*s))
        return -1;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < 1)
        return -1;
    *out = v;
    return 0;
}

/* Rule id -> rule of a document (first occurrence). */
static json_t *ar_rule_map(const json_t *doc)
{
    json_t *m = json_object(), *r;
    size_t i;

    if (m == NULL)
        return NULL;
    json_array_foreach(json_object_get(doc, "rules"), i, r)
    {
        const json_t *id = json_object_get(r, "id");
        if (json_is_string(id) && json_object_get(m, json_string_value(id)) == NULL)
            json_object_set(m, json_string_value(id), r);
    }
    return m;
}

static json_t *ar_ids(const json_t *doc, const json_t *other, int changed_only)
{
    json_t *out = json_array(), *r;
    size_t i;

    if (out == NULL)
        return NULL;
    json_array_foreach(json_object_get(doc, "rules"), i, r)
    {
        const json_t *id = json_object_get(r, "id");
        const json_t *o;

        if (!json_is_string(id))
            continue;
        o = json_object_get(other, json_string_value(id));
        if ((!changed_only && o == NULL) || (changed_only && o != NULL && !json_equal(o, r)))
            json_array_append(out, (json_t *)id);
    }
    return out;
}

static void ar_diff(const struct admin_call *c, struct admin_reply *out)
{
    const struct ar_version *a, *b;
    long from, to;
    char *ta = NULL, *tb = NULL, *d = NULL, la[64], lb[64];
    json_t *ma = NULL, *mb = NULL;

    if (ar_long_param(c->query(c, "from"), &from) == -1 ||
        ar_long_param(c->query(c, "to"), &to) == -1) {
        admin_error(out, 400, "bad_request", "expected ?from=<version>&to=<version>");
        return;
    }
    a = ar_find(from);
    b = ar_find(to);
    if (a == NULL || b == NULL) {
        admin_error(out, 404, "not_found", "no version %ld in the history", a == NULL ? from : to);
        return;
    }
    ta = json_dumps(a->doc, JSON_INDENT(2) | JSON_SORT_KEYS);
    tb = json_dumps(b->doc, JSON_INDENT(2) | JSON_SORT_KEYS);
    snprintf(la, sizeof(la), "version %ld", from);
    snprintf(lb, sizeof(lb), "version %ld", to);
    d = ta != NULL && tb != NULL ? linediff_unified(ta, tb, la, lb, 3) : NULL;
    ma = ar_rule_map(a->doc);
    mb = ar_rule_map(b->doc);
    if (d == NULL || ma == NULL || mb == NULL) {
        admin_error(out, 500, "internal", "out of memory");
    } else {
        out->status = 200;
        out->body = json_pack("{s:I,s:I,s:s,s:{s:o,s:o,s:o}}", "from", (json_int_t)from, "to",
                              (json_int_t)to, "diff", d, "rules", "added", ar_ids(b->doc, ma, 0),
                              "removed", ar_ids(a->doc, mb, 0), "changed", ar_ids(b->doc, ma, 1));
    }
    free(ta);
    free(tb);
    free(d);
    json_decref(ma);
    json_decref(mb);
}

void admin_rules(const struct admin_call *c, struct admin_reply *out)
{
    static const char *const put_keys[] = {"document", "comment", "base_version", NULL};
    static const char *const rb_keys[] = {"version", "comment", NULL};
    const char *sub = c->sub, *m = c->method, *comment;
    char err[AUTHZ_ERR_MAX], cm[128];
    struct ar_version *v;
    long n, base = 0;

    if (!ar.enabled) {
        admin_error(out, 409, "no_policy",
                    "no \"policy\" section is configured: there are no "
                    "rules to manage");
        return;
    }
    /* Record a hand edit before anything is answered or changed. */
    if (ar_sync(c->now, err, sizeof(err)) == -1) {
        admin_error(out, 500, "internal", "%s", err);
        return;
    }
    if (strcmp(sub, "") == 0) {
        if (strcmp(m, "GET") == 0) {
            out->status = 200;
            out->body = ar_version_json(ar_latest(), 1);
            if (out->body == NULL)
                admin_error(out, 500, "internal", "out of memory");
            return;
        }
        if (strcmp(m, "PUT") != 0) {
            admin_error(out, 405, "method_not_allowed", "/rules: GET or PUT");
            return;
        }
        if (ar_body_keys(c, put_keys, out) == -1 || ar_opt_comment(c, &comment, out) == -1)
            return;
        if (json_object_get(c->body, "document") == NULL) {
            admin_error(out, 400, "bad_request", "$.document: required key is missing");
            return;
        }
        if (json_object_get(c->body, "base_version") != NULL) {
            const json_t *bv = json_object_get(c->body, "base_version");
            if (!json_is_integer(bv) || json_integer_value(bv) < 1) {
                admin_error(out, 400, "bad_request",
                            "$.base_version: expected a version number (an integer >= 1)");
                return;
            }
            base = (long)json_integer_value(bv);
        }
        ar_apply(c, json_object_get(c->body, "document"), comment, "rules put", base, 0, out);
        return;
    }
    if (strcmp(sub, "/validate") == 0) {
        char *text;
        size_t len = 0;

        if (strcmp(m, "POST") != 0) {
            admin_error(out, 405, "method_not_allowed", "/rules/validate: POST");
            return;
        }
        if (c->body == NULL) {
            admin_error(out, 400, "bad_request", "$: a rules document is required");
            return;
        }
        text = json_dumps(c->body, JSON_INDENT(2));
        if (text == NULL) {
            admin_error(out, 500, "internal", "out of memory");
            return;
        }
        len = strlen(text);
        if (ar_validate(text, len, out) == 1) {
            out->status = 200;
            out->body = json_pack("{s:b,s:I}", "ok", 1, "rules", (json_int_t)ar_doc_rules(c->body));
        }
        free(text);
        return;
    }
    if (strcmp(sub, "/history") == 0) {
        json_t *list = json_array();
        size_t i;

        if (strcmp(m, "GET") != 0) {
            admin_error(out, 405, "method_not_allowed", "/rules/history: GET");
            json_decref(list);
            return;
        }
        for (i = ar.n; list != NULL && i-- > 0;)
            json_array_append_new(list, ar_version_json(&ar.v[i], 0));
        out->status = 200;
        out->body = json_pack("{s:o}", "versions", list);
        return;
    }
    if (strncmp(sub, "/history/", 9) == 0) {
        if (strcmp(m, "GET") != 0) {
            admin_error(out, 405, "method_not_allowed", "/rules/history/<version>: GET");
            return;
        }
        if (ar_long_param(sub + 9, &n) == -1) {
            admin_error(out, 400, "bad_request", "expected /rules/history/<version number>");
            return;
        }
        v = ar_find(n);
        if (v == NULL) {
            admin_error(out, 404, "not_found", "no version %ld in the history", n);
            return;
        }
        out->status = 200;
        out->body = ar_version_json(v, 1);
        return;
    }
    if (strcmp(sub, "/diff") == 0) {
        if (strcmp(m, "GET") != 0) {
            admin_error(out, 405, "method_not_allowed", "/rules/diff: GET");
            return;
        }
        ar_diff(c, out);
        return;
    }
    if (strcmp(sub, "/rollback") == 0) {
        const json_t *jv;

        if (strcmp(m, "POST") != 0) {
            admin_error(out, 405, "method_not_allowed", "/rules/rollback: POST");
            return;
        }
        if (ar_body_keys(c, rb_keys, out) == -1 || ar_opt_comment(c, &comment, out) == -1)
            return;
        jv = json_object_get(c->body, "version");
        if (!json_is_integer(jv) || json_integer_value(jv) < 1) {
            admin_error(out, 400, "bad_request", "$.version: expected a version number");
            return;
        }
        n = (long)json_integer_value(jv);
        v = ar_find(n);
        if (v == NULL) {
            admin_error(out, 404, "not_found", "no version %ld in the history", n);
            return;
        }
        snprintf(cm, sizeof(cm), "rollback to version %ld", n);
        ar_apply(c, v->doc, comment != NULL ? comment : cm, "rules rollback", 0, n, out);
        return;
    }
    admin_error(out, 404, "not_found", "no such endpoint: /rules%s", sub);
}

/* ---- explain ------------------------------------------------------------------------ */

static int ar_ctx_string(const json_t *ctx, const char *key, const char **out,
                         struct admin_reply *reply)
{
    const json_t *v = json_object_get(ctx, key);

    *out = NULL;
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > 1024 ||
        strlen(json_string_value(v)) != json_string_length(v)) {
        admin_error(reply, 400, "bad_request",
                    "$.context.%s: expected a non-empty string (at most 1024 bytes)", key);
        return -1;
    }
    *out = json_string_value(v);
    return 0;
}

void admin_explain(const struct admin_call *c, struct admin_reply *out)
{
    static const char *const keys[] = {"context", "document", NULL};
    static const char *const ckeys[] = {"user",     "email",  "device", "ip",    "country",
                                        "time",     "route",  "method", "path",  "mfa",
                                        "auth_age", "groups", "tier",   "score", NULL};
    const char *user = NULL, *email = NULL, *device = NULL, *ip = NULL, *country = NULL,
               *route = NULL, *method = NULL, *path = NULL, *tier = NULL, *age = NULL;
    struct policy_attr attrs[DEVTRUST_MAX_ATTRS + 1];
    struct devtrust_verdict *dv = NULL;
    struct sockaddr_storage ss;
    struct authz_input in;
    struct authz_result *r = NULL;
    struct policy *p = NULL;
    char err[AUTHZ_ERR_MAX], key[64], groups[AUTHZ_GROUPS_MAX], when[80];
    json_t *ctx, *doc, *ex = NULL, *g, *resolved;
    int64_t now = c->now;
    uint64_t age_ms = 0;
    size_t i, na = 0, gl = 0;
    int rc;

    if (strcmp(c->sub, "") != 0) {
        admin_error(out, 404, "not_found", "no such endpoint: /explain%s", c->sub);
        return;
    }
    if (strcmp(c->method, "POST") != 0) {
        admin_error(out, 405, "method_not_allowed", "/explain: POST");
        return;
    }
    if (ar_body_keys(c, keys, out) == -1)
        return;
    ctx = json_object_get(c->body, "context");
    doc = json_object_get(c->body, "document");
    if (ctx == NULL) {
        admin_error(out, 400, "bad_request", "$.context: required key is missing");
        return;
    }
    rc = jsonconf_check_keys(ctx, ckeys, key, sizeof(key));
    if (rc != 0) {
        if (rc == 1)
            admin_error(out, 400, "bad_request", "$.context.%s: unknown key", key);
        else
            admin_error(out, 400, "bad_request", "$.context: expected an object");
        return;
    }
    if (ar_ctx_string(ctx, "user", &user, out) == -1 ||
        ar_ctx_string(ctx, "email", &email, out) == -1 ||
        ar_ctx_string(ctx, "device", &device, out) == -1 ||
        ar_ctx_string(ctx, "ip", &ip, out) == -1 ||
        ar_ctx_string(ctx, "country", &country, out) == -1 ||
        ar_ctx_string(ctx, "route", &route, out) == -1 ||
        ar_ctx_string(ctx, "method", &method, out) == -1 ||
        ar_ctx_string(ctx, "path", &path, out) == -1 ||
        ar_ctx_string(ctx, "tier", &tier, out) == -1 ||
        ar_ctx_string(ctx, "auth_age", &age, out) == -1)
        return;
    if (json_object_get(ctx, "time") != NULL &&
        ar_time_parse(json_object_get(ctx, "time"), &now) == -1) {
        admin_error(out, 400, "bad_request",
                    "$.context.time: expected an RFC 3339 time or Unix seconds");
        return;
    }
    if (json_object_get(ctx, "mfa") != NULL && !json_is_boolean(json_object_get(ctx, "mfa"))) {
        admin_error(out, 400, "bad_request", "$.context.mfa: expected true or false");
        return;
    }
    if (age != NULL && (conf_duration_parse(age, &age_ms) == -1 || age_ms / 1000 > (uint64_t)now)) {
        admin_error(out, 400, "bad_request",
                    "$.context.auth_age: expected a duration such as "
                    "\"10m\"");
        return;
    }
    if (country != NULL && strcmp(country, "unknown") != 0 &&
        (strlen(country) != 2 || !isupper((unsigned char)country[0]) ||
         !isupper((unsigned char)country[1]))) {
        admin_error(out, 400, "bad_request",
                    "$.context.country: expected an ISO 3166 alpha-2 code (\"DE\") or \"unknown\"");
        return;
    }
    if (path != NULL && path[0] != '/') {
        admin_error(out, 400, "bad_request", "$.context.path: expected a path starting with '/'");
        return;
    }
    memset(&ss, 0, sizeof(ss));
    if (ip != NULL) {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

        if (inet_pton(AF_INET, ip, &s4->sin_addr) == 1) {
            s4->sin_family = AF_INET;
        } else if (inet_pton(AF_INET6, ip, &s6->sin6_addr) == 1) {
            s6->sin6_family = AF_INET6;
        } else {
            admin_error(out, 400, "bad_request", "$.context.ip: expected an IPv4 or IPv6 address");
            return;
        }
    }
    g = json_object_get(ctx, "groups");
    groups[0] = '\0';
    if (g != NULL) {
        const json_t *e;

        if (!json_is_array(g)) {
            admin_error(out, 400, "bad_request", "$.context.groups: expected an array of names");
            return;
        }
        json_array_foreach(g, i, e)
        {
            size_t l = json_is_string(e) ? json_string_length(e) : 0;

            if (l == 0 || strchr(json_string_value(e), ',') != NULL ||
                strlen(json_string_value(e)) != l) {
                admin_error(out, 400, "bad_request",
                            "$.context.groups[%zu]: expected a group name (no ',')", i);
                return;
            }
            if (gl + l + 2 > sizeof(groups)) {
                admin_error(out, 400, "bad_request", "$.context.groups: too long");
                return;
            }
            if (gl > 0)
                groups[gl++] = ',';
            memcpy(groups + gl, json_string_value(e), l);
            gl += l;
            groups[gl] = '\0';
        }
    }
    if (!authz_enabled()) {
        admin_error(out, 409, "no_policy", "no \"policy\" section is configured");
        return;
    }
    if (doc != NULL) {
        char *text;
        size_t len;

        if (!json_is_object(doc)) {
            admin_error(out, 400, "bad_request", "$.document: expected a rules document");
            return;
        }
        text = ar_doc_text(doc, &len);
        if (text == NULL) {
            admin_error(out, 500, "internal", "out of memory");
            return;
        }
        rc = ar_validate(text, len, out);
        if (rc == 1)
            p = authz_compile_text(text, len, err, sizeof(err));
        free(text);
        if (rc != 1)
            return;
        if (p == NULL) {
            admin_error(out, 422, "invalid_rules", "%s", err);
            return;
        }
    }

    dv = calloc(1, sizeof(*dv));
    r = calloc(1, sizeof(*r));
    if (dv == NULL || r == NULL) {
        admin_error(out, 500, "internal", "out of memory");
        goto out;
    }
    memset(&in, 0, sizeof(in));
    in.route = route;
    in.user_sub = user;
    in.user_email = email;
    in.has_identity = user != NULL || email != NULL;
    in.mfa = json_is_true(json_object_get(ctx, "mfa"));
    in.auth_time = age != NULL ? now - (int64_t)(age_ms / 1000) : 0;
    in.device_tier = -1;
    in.device_score = -1;
    if (device != NULL) {
        devtrust_evaluate(device, email != NULL ? email : user, now, dv);
        for (i = 0; i < dv->nattrs && na < DEVTRUST_MAX_ATTRS; i++) {
            attrs[na].name = dv->attrs[i].name;
            attrs[na].value = dv->attrs[i].value;
            na++;
        }
        if (dv->status[0] != '\0') {
            attrs[na].name = "status";
            attrs[na].value = dv->status;
            na++;
        }
        in.device_id = device;
        in.device_tier = authz_tier_index(dv->tier_name);
        in.device_score = dv->score;
        in.device_stale = dv->inventory_stale || dv->posture_stale;
        in.device_owner = dv->owner[0] != '\0' ? dv->owner : NULL;
        in.attrs = attrs;
        in.nattrs = na;
    }
    if (tier != NULL) {
        in.device_tier = authz_tier_index(tier);
        if (in.device_tier < 0) {
            admin_error(out, 400, "bad_request", "$.context.tier: unknown tier \"%s\"", tier);
            goto out;
        }
        in.device_stale = 0;
    }
    if (json_object_get(ctx, "score") != NULL) {
        const json_t *sv = json_object_get(ctx, "score");
        if (!json_is_integer(sv) || json_integer_value(sv) < 0 || json_integer_value(sv) > 100) {
            admin_error(out, 400, "bad_request", "$.context.score: expected an integer 0..100");
            goto out;
        }
        in.device_score = (int)json_integer_value(sv);
        in.device_stale = 0;
    }
    in.peer = ip != NULL ? (const struct sockaddr *)&ss : NULL;
    in.method = method != NULL ? method : "GET";
    in.path = path != NULL ? path : "/";
    in.path_len = strlen(in.path);
    in.now = now;
    in.groups_override = g != NULL ? groups : NULL;
    in.country_override = country;

    ex = authz_explain_json(p, &in, r, err, sizeof(err));
    if (ex == NULL) {
        admin_error(out, 500, "internal", "%s", err);
        goto out;
    }
    ar_time_text(now, when, sizeof(when));
    resolved = json_pack("{s:s?,s:s?,s:s?,s:s?,s:i,s:s?,s:b,s:s?,s:s?,s:s,s:s?,s:s,s:s,s:b,s:s}",
                         "user", user, "email", email, "device", device, "tier",
                         in.device_tier >= 0 ? (tier != NULL ? tier : dv->tier_name) : NULL,
                         "score", in.device_score, "owner", in.device_owner, "device_stale",
                         in.device_stale, "ip", r->client_ip[0] ? r->client_ip : NULL, "country",
                         r->country[0] ? r->country : NULL, "time", when, "route", route, "method",
                         in.method, "path", in.path, "mfa", in.mfa, "groups", r->groups);
    if (resolved == NULL) {
        admin_error(out, 500, "internal", "out of memory");
        goto out;
    }
    {
        /* groups as a list, and how old the login is */
        json_t *gl_arr = json_array();
        const char *s = r->groups;

        while (gl_arr != NULL && *s != '\0') {
            const char *e = strchr(s, ',');
            size_t l = e != NULL ? (size_t)(e - s) : strlen(s);
            json_array_append_new(gl_arr, json_stringn(s, l));
            s += l + (e != NULL);
        }
        json_object_set_new(resolved, "groups", gl_arr != NULL ? gl_arr : json_null());
        if (age != NULL)
            json_object_set_new(resolved, "auth_age", json_string(age));
        json_object_set_new(resolved, "rules", json_string(p != NULL ? "proposed" : "live"));
    }
    json_object_set_new(ex, "context", resolved);
    out->status = 200;
    out->body = ex;
    ex = NULL;
out:
    json_decref(ex);
    policy_unref(p);
    free(dv);
    free(r);
}
