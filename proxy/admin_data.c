/*
 * admin_data.c - the admin API's data endpoints (docs/admin-api.md):
 * what-if, devices, directory, sessions and recent decisions.
 *
 * Runs on the admin listener's thread (proxy/admin.c routes here after the
 * credential and CSRF checks; proxy/admin_int.h is the contract). Handlers
 * may do file I/O (a directory rewrite, a revocation's fsync) and CPU work
 * (a what-if replay): the workers never wait for them. Every input is
 * checked strictly; a refusal names the field and what was expected.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "fileio.h"
#include "admin_int.h"
#include "authz.h"
#include "conf.h"
#include "decisions.h"
#include "devtrust.h"
#include "directory.h"
#include "log.h"
#include "posture.h"
#include "proxy.h"
#include "session.h"
#include "shared.h"

#define AD_LIMIT_DEFAULT 100
#define AD_LIMIT_MAX 1000
#define AD_COMMENT_MAX 1024
#define AD_DIRECTORY_MAX (64u * 1024 * 1024) /* a directory file we rewrite */

/* ---- small helpers -------------------------------------------------------- */

static int ad_method(const struct admin_call *c, const char *m)
{
    return strcmp(c->method, m) == 0;
}

static const char *ad_query(const struct admin_call *c, const char *name)
{
    return c->query != NULL ? c->query(c, name) : NULL;
}

/* limit=1..AD_LIMIT_MAX (default AD_LIMIT_DEFAULT). 0, or -1 with out set. */
static int ad_limit(const struct admin_call *c, struct admin_reply *out, size_t *limit)
{
    const char *s = ad_query(c, "limit");
    char *end;
    long v;

    *limit = AD_LIMIT_DEFAULT;
    if (s == NULL || s[0] == '\0')
        return 0;
    errno = 0;
    v = strtol(s, &end, 10);
    if (!isdigit((unsigned char)s[0]) || *end != '\0' || errno != 0 || v < 1 || v > AD_LIMIT_MAX) {
        admin_error(out, 400, "bad_query", "limit: expected an integer 1..%d", AD_LIMIT_MAX);
        return -1;
    }
    *limit = (size_t)v;
    return 0;
}

/* Keys of a body object: only those in allowed. 0, or -1 with out set. */
static int ad_body_keys(const struct admin_call *c, struct admin_reply *out,
                        const char *const *allowed)
{
    const char *key;
    json_t *v;
    size_t i;

    if (!json_is_object(c->body)) {
        admin_error(out, 400, "bad_body", "$: expected a JSON object");
        return -1;
    }
    json_object_foreach(c->body, key, v)
    {
        for (i = 0; allowed[i] != NULL; i++)
            if (strcmp(key, allowed[i]) == 0)
                break;
        if (allowed[i] == NULL) {
            admin_error(out, 400, "bad_body", "$.%.64s: unknown key", key);
            return -1;
        }
    }
    return 0;
}

/* An optional "comment": a string of at most AD_COMMENT_MAX bytes. */
static int ad_comment(const struct admin_call *c, struct admin_reply *out, const char **comment)
{
    json_t *v = json_object_get(c->body, "comment");

    *comment = NULL;
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_string(v) || json_string_length(v) > AD_COMMENT_MAX ||
        strlen(json_string_value(v)) != json_string_length(v)) {
        admin_error(out, 400, "bad_body", "$.comment: expected a string of at most %d bytes",
                    AD_COMMENT_MAX);
        return -1;
    }
    *comment = json_string_value(v);
    return 0;
}

static json_t *ad_time(int64_t t)
{
    char buf[POSTURE_TIME_MAX];

    if (t <= 0 || posture_time_format(t, buf, sizeof(buf)) != 0)
        return json_null();
    return json_string(buf);
}

/* ---- decisions ------------------------------------------------------------ */

struct ad_dec_walk {
    struct decisions_filter f;
    size_t limit;
    json_t *list;
};

static int ad_dec_cb(const struct decision *d, void *arg)
{
    struct ad_dec_walk *w = arg;

    if (!decisions_match(&w->f, d))
        return DECISIONS_CONTINUE;
    json_array_append_new(w->list, decisions_to_json(d));
    return json_array_size(w->list) >= w->limit ? DECISIONS_STOP : DECISIONS_CONTINUE;
}

void admin_decisions(const struct admin_call *c, struct admin_reply *out)
{
    struct ad_dec_walk w;

    if (c->sub[0] != '\0') {
        admin_error(out, 404, "not_found", "no such endpoint");
        return;
    }
    if (!ad_method(c, "GET")) {
        admin_error(out, 405, "method_not_allowed", "/decisions: GET only");
        return;
    }
    memset(&w, 0, sizeof(w));
    if (ad_limit(c, out, &w.limit) == -1)
        return;
    w.f.user = ad_query(c, "user");
    w.f.device = ad_query(c, "device");
    w.f.route = ad_query(c, "route");
    w.f.effect = ad_query(c, "effect");
    if (w.f.effect != NULL && w.f.effect[0] != '\0' && strcmp(w.f.effect, "allow") != 0 &&
        strcmp(w.f.effect, "deny") != 0 && strcmp(w.f.effect, "step_up") != 0) {
        admin_error(out, 400, "bad_query", "effect: expected \"allow\", \"deny\" or \"step_up\"");
        return;
    }
    w.list = json_array();
    if (w.list == NULL || decisions_walk(ad_dec_cb, &w) == -1) {
        json_decref(w.list);
        admin_error(out, 500, "internal", "out of memory");
        return;
    }
    out->status = 200;
    out->body =
        json_pack("{s:o,s:I}", "decisions", w.list, "capacity", (json_int_t)decisions_capacity());
}

/* ---- what-if -------------------------------------------------------------- */

static int ad_whatif_cb(const struct decision *d, void *arg)
{
    return whatif_add(arg, d) == -1 ? DECISIONS_STOP : DECISIONS_CONTINUE;
}

void admin_whatif(const struct admin_call *c, struct admin_reply *out)
{
    static const char *const keys[] = {"document", NULL};
    char err[AUTHZ_ERR_MAX];
    struct policy *p = NULL;
    struct whatif *w = NULL;
    json_t *doc, *res, *errors = NULL;
    char *text = NULL;

    if (c->sub[0] != '\0') {
        admin_error(out, 404, "not_found", "no such endpoint");
        return;
    }
    if (!ad_method(c, "POST")) {
        admin_error(out, 405, "method_not_allowed", "/whatif: POST only");
        return;
    }
    if (ad_body_keys(c, out, keys) == -1)
        return;
    if (!authz_enabled()) {
        admin_error(out, 409, "no_policy", "no policy configured (no \"policy\" section)");
        return;
    }
    doc = json_object_get(c->body, "document");
    if (!json_is_object(doc)) {
        admin_error(out, 400, "bad_body", "$.document: expected a rules document (an object)");
        return;
    }
    text = json_dumps(doc, JSON_COMPACT);
    if (text == NULL) {
        admin_error(out, 500, "internal", "out of memory");
        return;
    }
    p = authz_compile_text(text, strlen(text), err, sizeof(err));
    if (p == NULL) {
        admin_error(out, 422, "invalid_rules", "%s", err);
        if (authz_validate_text(text, strlen(text), &errors) != -1 && out->body != NULL)
            json_object_set_new(out->body, "errors", errors);
        else
            json_decref(errors);
        goto done;
    }
    w = whatif_new(p, NULL, NULL);
    if (w == NULL || decisions_walk(ad_whatif_cb, w) == -1 || (res = whatif_result(w)) == NULL) {
        admin_error(out, 500, "internal", "out of memory");
        goto done;
    }
    out->status = 200;
    out->body = res;
done:
    whatif_free(w);
    policy_unref(p);
    free(text);
}

/* ---- devices -------------------------------------------------------------- */

struct ad_dev_walk {
    const char *tier, *status, *owner;
    int stale; /* -1 any, 0 fresh only, 1 stale only */
    size_t limit;
    int64_t now;
    json_t *list;
};

static json_t *ad_device_json(const struct devtrust_summary *s, int64_t now)
{
    const struct devtrust_verdict *v = s->v;
    json_t *o = json_object(), *failing = json_array();
    size_t i;

    json_object_set_new(o, "id", json_string(s->id));
    json_object_set_new(o, "owner", v->owner[0] ? json_string(v->owner) : json_null());
    json_object_set_new(o, "status", v->status[0] ? json_string(v->status) : json_null());
    json_object_set_new(o, "override", json_boolean(s->override));
    json_object_set_new(o, "known", json_boolean(s->in_inventory));
    json_object_set_new(o, "tier", json_string(v->tier_name));
    json_object_set_new(o, "score", json_integer(v->score));
    for (i = 0; i < v->nfailing; i++)
        json_array_append_new(failing, json_string(v->failing[i].id));
    json_object_set_new(o, "failing", failing);
    json_object_set_new(
        o, "posture_age",
        s->has_posture ? json_integer(now > s->posture_received ? now - s->posture_received : 0)
                       : json_null());
    json_object_set_new(o, "posture_received", ad_time(s->posture_received));
    json_object_set_new(o, "posture_stale", json_boolean(v->posture_stale));
    json_object_set_new(o, "inventory_stale", json_boolean(v->inventory_stale));
    return o;
}

static int ad_dev_cb(const struct devtrust_summary *s, void *arg)
{
    struct ad_dev_walk *w = arg;
    const struct devtrust_verdict *v = s->v;
    int stale = v->posture_stale || v->inventory_stale || !s->has_posture;

    if (w->tier != NULL && strcmp(w->tier, v->tier_name) != 0)
        return 0;
    if (w->status != NULL && strcmp(w->status, v->status) != 0)
        return 0;
    if (w->owner != NULL && strcasecmp(w->owner, v->owner) != 0)
        return 0;
    if (w->stale != -1 && w->stale != stale)
        return 0;
    json_array_append_new(w->list, ad_device_json(s, w->now));
    return json_array_size(w->list) >= w->limit;
}

static const char *ad_nonempty(const char *s)
{
    return s != NULL && s[0] != '\0' ? s : NULL;
}

static void ad_devices_list(const struct admin_call *c, struct admin_reply *out)
{
    struct ad_dev_walk w;
    const char *stale = ad_nonempty(ad_query(c, "stale"));

    memset(&w, 0, sizeof(w));
    if (ad_limit(c, out, &w.limit) == -1)
        return;
    w.tier = ad_nonempty(ad_query(c, "tier"));
    w.status = ad_nonempty(ad_query(c, "status"));
    w.owner = ad_nonempty(ad_query(c, "owner"));
    w.stale = -1;
    if (stale != NULL) {
        if (strcmp(stale, "1") == 0 || strcmp(stale, "true") == 0) {
            w.stale = 1;
        } else if (strcmp(stale, "0") == 0 || strcmp(stale, "false") == 0) {
            w.stale = 0;
        } else {
            admin_error(out, 400, "bad_query", "stale: expected 1, 0, true or false");
            return;
        }
    }
    if (w.status != NULL && strcmp(w.status, "active") != 0 && strcmp(w.status, "lost") != 0 &&
        strcmp(w.status, "stolen") != 0 && strcmp(w.status, "retired") != 0) {
        admin_error(out, 400, "bad_query",
                    "status: expected \"active\", \"lost\", \"stolen\" or \"retired\"");
        return;
    }
    w.now = c->now;
    w.list = json_array();
    if (w.list == NULL || devtrust_list(c->now, ad_dev_cb, &w) == -1) {
        json_decref(w.list);
        admin_error(out, 503, "unavailable", "device trust is not running");
        return;
    }
    out->status = 200;
    out->body = json_pack("{s:o}", "devices", w.list);
}

struct ad_one {
    json_t *summary;
    int64_t now;
};

static int ad_one_cb(const struct devtrust_summary *s, void *arg)
{
    struct ad_one *o = arg;

    o->summary = ad_device_json(s, o->now);
    return 1;
}

/* The device's answer: its summary with the detail merged in. 0, 1 unknown, -1. */
static int ad_device_get(const char *id, int64_t now, json_t **res)
{
    struct ad_one one = {NULL, now};
    json_t *detail = NULL;
    int rc = devtrust_device(id, now, ad_one_cb, &one, &detail);

    *res = NULL;
    if (rc != 0 || one.summary == NULL) {
        json_decref(detail);
        json_decref(one.summary);
        return rc == 0 ? -1 : rc;
    }
    json_object_update(one.summary, detail);
    json_decref(detail);
    *res = one.summary;
    return 0;
}

static int ad_device_id_ok(const char *id, size_t n)
{
    size_t i;

    if (n == 0 || n > 128)
        return 0;
    for (i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)id[i];
        if (!(isalnum(ch) || ch == '.' || ch == '_' || ch == ':' || ch == '-'))
            return 0;
    }
    return 1;
}

static void ad_device_status(const struct admin_call *c, const char *id, struct admin_reply *out)
{
    static const char *const keys[] = {"status", "comment", NULL};
    const char *status = NULL, *comment;
    char err[DEVTRUST_ERR_MAX];
    json_t *st, *detail, *dev = NULL;

    if (ad_body_keys(c, out, keys) == -1 || ad_comment(c, out, &comment) == -1)
        return;
    st = json_object_get(c->body, "status");
    if (st == NULL || (!json_is_null(st) && !json_is_string(st))) {
        admin_error(out, 400, "bad_body",
                    "$.status: expected \"active\", \"lost\", \"stolen\", \"retired\" or null");
        return;
    }
    if (json_is_string(st)) {
        status = json_string_value(st);
        if (strcmp(status, "active") != 0 && strcmp(status, "lost") != 0 &&
            strcmp(status, "stolen") != 0 && strcmp(status, "retired") != 0) {
            admin_error(out, 400, "bad_body",
                        "$.status: expected \"active\", \"lost\", \"stolen\", \"retired\" or "
                        "null, got \"%.32s\"",
                        status);
            return;
        }
    }
    if (ad_device_get(id, c->now, &dev) == -1) {
        admin_error(out, 503, "unavailable", "device trust is not running");
        return;
    }
    if (devtrust_set_override_sync(id, status, err, sizeof(err)) == -1) {
        json_decref(dev);
        admin_error(out, 503, "unavailable", "%s", err);
        return;
    }
    detail = json_pack("{s:s,s:o,s:o}", "device", id, "status",
                       status != NULL ? json_string(status) : json_null(), "previous",
                       dev != NULL ? json_incref(json_object_get(dev, "status")) : json_null());
    if (detail != NULL && comment != NULL)
        json_object_set_new(detail, "comment", json_string(comment));
    admin_audit(c, "device status", detail);
    json_decref(detail);
    json_decref(dev);
    shared_publish_override(id, status);
    if (ad_device_get(id, c->now, &dev) != 0) {
        /* Cleared on a device nobody knows any more: nothing left to show. */
        out->status = 200;
        out->body = json_pack("{s:s,s:n}", "id", id, "status");
        return;
    }
    out->status = 200;
    out->body = dev;
}

void admin_devices(const struct admin_call *c, struct admin_reply *out)
{
    const char *sub = c->sub, *slash;
    char id[129];
    json_t *dev;
    size_t n;
    int rc;

    if (sub[0] == '\0') {
        if (!ad_method(c, "GET")) {
            admin_error(out, 405, "method_not_allowed", "/devices: GET only");
            return;
        }
        ad_devices_list(c, out);
        return;
    }
    if (sub[0] != '/') {
        admin_error(out, 404, "not_found", "no such endpoint");
        return;
    }
    sub++;
    slash = strchr(sub, '/');
    n = slash != NULL ? (size_t)(slash - sub) : strlen(sub);
    if (!ad_device_id_ok(sub, n)) {
        admin_error(out, 400, "bad_device_id", "device id: expected 1-128 of [A-Za-z0-9._:-]");
        return;
    }
    memcpy(id, sub, n);
    id[n] = '\0';
    if (slash == NULL) {
        if (!ad_method(c, "GET")) {
            admin_error(out, 405, "method_not_allowed", "/devices/<id>: GET only");
            return;
        }
        rc = ad_device_get(id, c->now, &dev);
        if (rc == 1) {
            admin_error(out, 404, "not_found",
                        "device \"%s\": not in the inventory and no posture or override", id);
            return;
        }
        if (rc == -1) {
            admin_error(out, 503, "unavailable", "device trust is not running");
            return;
        }
        out->status = 200;
        out->body = dev;
        return;
    }
    if (strcmp(slash, "/status") != 0) {
        admin_error(out, 404, "not_found", "no such endpoint");
        return;
    }
    if (!ad_method(c, "PUT")) {
        admin_error(out, 405, "method_not_allowed", "/devices/<id>/status: PUT only");
        return;
    }
    ad_device_status(c, id, out);
}

/* ---- directory ------------------------------------------------------------ */

static void ad_directory_get(const struct admin_call *c, struct admin_reply *out)
{
    struct directory *d = authz_directory_ref();
    json_t *groups = NULL, **members = NULL, **nested = NULL, *o;
    size_t ng, nu, i, k, n;
    const uint32_t *ids;
    const char *email, *subject;

    o = json_object();
    json_object_set_new(o, "source",
                        c->conf->policy_dir_file != NULL  ? json_string("file")
                        : c->conf->policy_dir_url != NULL ? json_string("url")
                                                          : json_null());
    json_object_set_new(o, "loaded", json_boolean(d != NULL));
    json_object_set_new(o, "version", d != NULL ? json_string(directory_version(d)) : json_null());
    groups = json_array();
    json_object_set_new(o, "groups", groups);
    if (d == NULL)
        goto done;
    ng = directory_group_count(d);
    nu = directory_user_count(d);
    json_object_set_new(o, "users", json_integer((json_int_t)nu));
    members = calloc(ng + 1, sizeof(*members));
    nested = calloc(ng + 1, sizeof(*nested));
    if (members == NULL || nested == NULL) {
        json_decref(o);
        o = NULL;
        goto done;
    }
    for (i = 0; i < ng; i++) {
        members[i] = json_array();
        nested[i] = json_array();
    }
    for (i = 0; i < nu; i++) {
        if (directory_user_at(d, i, &email, &subject, &ids, &n) == -1)
            break;
        for (k = 0; k < n; k++)
            json_array_append_new(members[ids[k]], json_string(email));
    }
    for (i = 0; i < ng; i++) {
        if (directory_group_parents(d, (uint32_t)i, &ids, &n) == -1)
            break;
        for (k = 0; k < n; k++)
            json_array_append_new(nested[ids[k]],
                                  json_string(directory_group_name(d, (uint32_t)i)));
    }
    for (i = 0; i < ng; i++) {
        json_t *g = json_object(), *parents = json_array();

        if (directory_group_parents(d, (uint32_t)i, &ids, &n) == 0)
            for (k = 0; k < n; k++)
                json_array_append_new(parents, json_string(directory_group_name(d, ids[k])));
        json_object_set_new(g, "name", json_string(directory_group_name(d, (uint32_t)i)));
        json_object_set_new(g, "members", members[i]);
        json_object_set_new(g, "groups", nested[i]);
        json_object_set_new(g, "member_of", parents);
        json_array_append_new(groups, g);
        members[i] = nested[i] = NULL;
    }
done:
    if (members != NULL && nested != NULL)
        for (i = 0; i < directory_group_count(d); i++) {
            json_decref(members[i]);
            json_decref(nested[i]);
        }
    free(members);
    free(nested);
    directory_unref(d);
    if (o == NULL) {
        admin_error(out, 500, "internal", "out of memory");
        return;
    }
    out->status = 200;
    out->body = o;
}

/* Replace path with text atomically: a temporary file beside it with the
 * same mode, fsync, rename, fsync of the folder. 0, or -1 with err. */
static int ad_write_atomic(const char *path, const char *text, size_t len, mode_t mode, char *err,
                           size_t errlen)
{
    char tmp[PATH_MAX], dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    int fd, rc = -1;

    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.admin.tmp", path) >= sizeof(tmp)) {
        snprintf(err, errlen, "%s: path too long", path);
        return -1;
    }
    if (slash == NULL)
        snprintf(dir, sizeof(dir), ".");
    else
        snprintf(dir, sizeof(dir), "%.*s", slash == path ? 1 : (int)(slash - path), path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode & 0777);
    if (fd == -1) {
        snprintf(err, errlen, "%.512s: %s", tmp, strerror(errno));
        return -1;
    }
    if (fchmod(fd, mode & 0777) == -1 || fileio_write_all(fd, text, len) == -1 || fsync(fd) == -1) {
        snprintf(err, errlen, "%.512s: %s", tmp, strerror(errno));
        close(fd);
        goto out;
    }
    if (close(fd) == -1) {
        snprintf(err, errlen, "%.512s: %s", tmp, strerror(errno));
        goto out;
    }
    if (rename(tmp, path) == -1) {
        snprintf(err, errlen, "%.512s: %s", path, strerror(errno));
        goto out;
    }
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd != -1) {
        (void)fsync(fd);
        close(fd);
    }
    return 0;
out:
    unlink(tmp);
    return rc;
}

/* The users entry for user: its key matched case-insensitively, or its
 * "subject". NULL and *key NULL when absent. */
static json_t *ad_dir_user(json_t *users, const char *user, const char **key)
{
    const char *k;
    json_t *v;

    *key = NULL;
    json_object_foreach(users, k, v)
    {
        if (strcasecmp(k, user) == 0) {
            *key = k;
            return v;
        }
    }
    json_object_foreach(users, k, v)
    {
        json_t *s = json_object_get(v, "subject");
        if (json_is_string(s) && strcmp(json_string_value(s), user) == 0) {
            *key = k;
            return v;
        }
    }
    return NULL;
}

static void ad_directory_edit(const struct admin_call *c, const char *group, const char *user,
                              int add, struct admin_reply *out)
{
    const char *file = c->conf->policy_dir_file, *key;
    char err[AUTHZ_ERR_MAX + 256];
    json_error_t jerr;
    json_t *root = NULL, *groups, *users, *u, *list, *detail;
    struct directory *check = NULL;
    struct stat st;
    char *text = NULL;
    size_t i;
    int changed = 0;

    if (file == NULL) {
        admin_error(out, 409, "not_a_file",
                    "the directory is not a local file (policy.directory.%s): edit it at its "
                    "source",
                    c->conf->policy_dir_url != NULL ? "url" : "file is not configured");
        return;
    }
    if (stat(file, &st) == -1 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size > AD_DIRECTORY_MAX) {
        admin_error(out, 500, "directory_unreadable",
                    "%s: not a readable regular file of at most "
                    "%u bytes",
                    file, AD_DIRECTORY_MAX);
        return;
    }
    root = json_load_file(file, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        admin_error(out, 500, "directory_unreadable", "%s:%d:%d: %s", file, jerr.line, jerr.column,
                    jerr.text);
        return;
    }
    groups = json_object_get(root, "groups");
    users = json_object_get(root, "users");
    if (!json_is_object(root) || !json_is_object(users) ||
        (groups != NULL && !json_is_object(groups))) {
        admin_error(out, 500, "directory_unreadable", "%s: $: not a directory document", file);
        goto done;
    }
    if (groups == NULL || json_object_get(groups, group) == NULL) {
        admin_error(out, 404, "unknown_group", "group \"%.256s\" is not declared in %s", group,
                    file);
        goto done;
    }
    u = ad_dir_user(users, user, &key);
    if (u == NULL && !add) {
        admin_error(out, 404, "not_member", "user \"%.320s\" is not in the directory", user);
        goto done;
    }
    if (u == NULL) {
        /* A new user: keyed by e-mail (the parser checks the form). */
        u = json_object();
        if (json_object_set_new(users, user, u) == -1) {
            admin_error(out, 500, "internal", "out of memory");
            goto done;
        }
        key = user;
    }
    if (!json_is_object(u)) {
        admin_error(out, 500, "directory_unreadable", "%s: $.users[\"%.320s\"]: not an object",
                    file, key);
        goto done;
    }
    list = json_object_get(u, "groups");
    if (list == NULL) {
        list = json_array();
        json_object_set_new(u, "groups", list);
    }
    if (!json_is_array(list)) {
        admin_error(out, 500, "directory_unreadable",
                    "%s: $.users[\"%.320s\"].groups: not an array", file, key);
        goto done;
    }
    for (i = 0; i < json_array_size(list); i++) {
        json_t *g = json_array_get(list, i);
        if (json_is_string(g) && strcmp(json_string_value(g), group) == 0)
            break;
    }
    if (add && i == json_array_size(list)) {
        json_array_append_new(list, json_string(group));
        changed = 1;
    } else if (!add && i < json_array_size(list)) {
        json_array_remove(list, i);
        changed = 1;
    } else if (!add) {
        admin_error(out, 404, "not_member", "user \"%.320s\" is not directly in group \"%.256s\"",
                    key, group);
        goto done;
    }
    if (changed) {
        text = json_dumps(root, JSON_INDENT(2));
        if (text == NULL) {
            admin_error(out, 500, "internal", "out of memory");
            goto done;
        }
        /* The result must be a directory the proxy accepts, or nothing changes. */
        check = directory_parse(text, strlen(text), file, err, sizeof(err));
        if (check == NULL) {
            admin_error(out, 422, "invalid_directory", "%s", err);
            goto done;
        }
        if (ad_write_atomic(file, text, strlen(text), st.st_mode, err, sizeof(err)) == -1) {
            admin_error(out, 500, "write_failed", "%s", err);
            goto done;
        }
        if (authz_directory_reload(err, sizeof(err)) == -1) {
            admin_error(out, 500, "reload_failed", "written, but not live: %s", err);
            goto done;
        }
        detail = json_pack("{s:s,s:s,s:s}", "group", group, "user", key, "file", file);
        admin_audit(c, add ? "directory add" : "directory remove", detail);
        json_decref(detail);
    }
    out->status = 200;
    out->body = json_pack("{s:s,s:s,s:b,s:b}", "group", group, "user", key, "member", add,
                          "changed", changed);
done:
    directory_unref(check);
    free(text);
    json_decref(root);
}

void admin_directory(const struct admin_call *c, struct admin_reply *out)
{
    const char *sub = c->sub, *m;
    char group[DIRECTORY_NAME_MAX + 1];
    size_t gl;

    if (sub[0] == '\0') {
        if (!ad_method(c, "GET")) {
            admin_error(out, 405, "method_not_allowed", "/directory: GET only");
            return;
        }
        ad_directory_get(c, out);
        return;
    }
    /* /groups/<group>/members/<user> (a group name may hold '/'). */
    m = strncmp(sub, "/groups/", 8) == 0 ? strstr(sub + 8, "/members/") : NULL;
    while (m != NULL && strstr(m + 1, "/members/") != NULL)
        m = strstr(m + 1, "/members/");
    if (m == NULL) {
        admin_error(out, 404, "not_found", "no such endpoint");
        return;
    }
    if (!ad_method(c, "PUT") && !ad_method(c, "DELETE")) {
        admin_error(out, 405, "method_not_allowed",
                    "/directory/groups/<group>/members/<user>: PUT or DELETE");
        return;
    }
    gl = (size_t)(m - (sub + 8));
    if (gl == 0 || gl > DIRECTORY_NAME_MAX || m[9] == '\0' || strlen(m + 9) > DIRECTORY_EMAIL_MAX) {
        admin_error(out, 400, "bad_path",
                    "expected /directory/groups/<group (1..%d bytes)>/members/<user e-mail "
                    "(at most %d bytes)>",
                    DIRECTORY_NAME_MAX, DIRECTORY_EMAIL_MAX);
        return;
    }
    memcpy(group, sub + 8, gl);
    group[gl] = '\0';
    ad_directory_edit(c, group, m + 9, ad_method(c, "PUT"), out);
}

/* ---- sessions ------------------------------------------------------------- */

static int ad_hex(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

void admin_sessions(const struct admin_call *c, struct admin_reply *out)
{
    static const char *const keys[] = {"user", "session_id", "comment", NULL};
    uint8_t id[SESSION_ID_LEN];
    const char *user = NULL, *comment;
    char err[256];
    json_t *u, *s, *detail;
    size_t i, n;

    if (strcmp(c->sub, "/revoke") != 0) {
        admin_error(out, 404, "not_found", "no such endpoint");
        return;
    }
    if (!ad_method(c, "POST")) {
        admin_error(out, 405, "method_not_allowed", "/sessions/revoke: POST only");
        return;
    }
    if (ad_body_keys(c, out, keys) == -1 || ad_comment(c, out, &comment) == -1)
        return;
    u = json_object_get(c->body, "user");
    s = json_object_get(c->body, "session_id");
    if ((u == NULL) == (s == NULL)) {
        admin_error(out, 400, "bad_body", "$: expected exactly one of \"user\" or \"session_id\"");
        return;
    }
    if (u != NULL) {
        user = json_is_string(u) ? json_string_value(u) : NULL;
        n = user != NULL ? json_string_length(u) : 0;
        for (i = 0; i < n; i++)
            if ((unsigned char)user[i] < 0x20 || user[i] == 0x7f)
                break;
        if (user == NULL || n == 0 || n > SESSION_SUBJECT_MAX || i != n || strlen(user) != n) {
            admin_error(out, 400, "bad_body",
                        "$.user: expected a subject (\"sub\"): 1..%d printable bytes",
                        SESSION_SUBJECT_MAX);
            return;
        }
    } else {
        const char *hex = json_is_string(s) ? json_string_value(s) : "";

        if (strlen(hex) != 2 * SESSION_ID_LEN) {
            admin_error(out, 400, "bad_body", "$.session_id: expected %d hex digits",
                        2 * SESSION_ID_LEN);
            return;
        }
        for (i = 0; i < SESSION_ID_LEN; i++) {
            int hi = ad_hex(hex[2 * i]), lo = ad_hex(hex[2 * i + 1]);
            if (hi < 0 || lo < 0) {
                admin_error(out, 400, "bad_body", "$.session_id: expected %d hex digits",
                            2 * SESSION_ID_LEN);
                return;
            }
            id[i] = (uint8_t)(hi << 4 | lo);
        }
    }
    if (c->conf->nproviders == 0) {
        admin_error(out, 409, "no_sessions", "sessions are not configured (no identity section)");
        return;
    }
    if (proxy_revoke(user, user == NULL ? id : NULL, err, sizeof(err)) == -1) {
        admin_error(out, 503, "revoke_failed", "%s", err);
        return;
    }
    detail = user != NULL ? json_pack("{s:s}", "user", user)
                          : json_pack("{s:s}", "session_id", json_string_value(s));
    if (detail != NULL && comment != NULL)
        json_object_set_new(detail, "comment", json_string(comment));
    admin_audit(c, "session revoke", detail);
    json_decref(detail);
    out->status = 200;
    out->body = user != NULL
                    ? json_pack("{s:b,s:s}", "revoked", 1, "user", user)
                    : json_pack("{s:b,s:s}", "revoked", 1, "session_id", json_string_value(s));
}
