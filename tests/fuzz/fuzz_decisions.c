/*
 * fuzz_decisions.c - the decisions ring's record format (proxy/decisions.c):
 * the input is split at NUL bytes into the strings of one decision (route,
 * method, path, user, e-mail, device, owner, tier, status, client address,
 * country, groups, rule, reasons, attribute names and values), recorded,
 * read back and turned into JSON and into a replay input. Invariants: a
 * recorded field reads back as it went in, or cut to its bound (then the
 * record says so), or left out (the record is incomplete); nothing reads
 * or writes outside a slot; the JSON is always built.
 *
 * Built by CMake with -DZT_FUZZ=ON (build-fuzz/fuzz_decisions), then
 *   build-fuzz/fuzz_decisions -max_total_time=120 tests/fuzz/corpus/decisions
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "authz.h"
#include "decisions.h"
#include "devtrust.h"

#define NFIELDS 40

struct check {
    const struct authz_input *in;
    const struct authz_result *r;
    int seen;
};

/* a kept field equals its source, or is a prefix of it and the record is
 * not whole */
static void same_or_cut(const char *got, const char *want, int whole)
{
    size_t n = strlen(got);

    if (want == NULL) {
        if (got[0] != '\0')
            abort();
        return;
    }
    if (strcmp(got, want) == 0)
        return;
    if (whole || strncmp(got, want, n) != 0)
        abort();
}

static int check_cb(const struct decision *d, void *arg)
{
    struct check *c = arg;
    struct authz_input in;
    struct policy_attr attrs[DECISIONS_ATTRS_MAX];
    struct sockaddr_storage peer;
    json_t *j;
    size_t i;

    c->seen++;
    same_or_cut(d->route, c->in->route, !d->incomplete);
    same_or_cut(d->user_email, c->in->has_identity ? c->in->user_email : NULL, !d->incomplete);
    same_or_cut(d->device_id, c->in->device_id, !d->incomplete);
    same_or_cut(d->groups, c->r->groups, !d->incomplete);
    if (strlen(d->path) > DECISIONS_PATH_MAX || d->nattrs > c->in->nattrs ||
        d->nreasons > c->r->decision.nreasons)
        abort();
    if (!d->incomplete && d->nattrs != c->in->nattrs)
        abort();
    for (i = 0; i < d->nattrs; i++)
        if (strcmp(d->attrs[i].name, c->in->attrs[i].name) != 0 ||
            strcmp(d->attrs[i].value, c->in->attrs[i].value) != 0)
            abort();
    j = decisions_to_json(d);
    if (j == NULL)
        abort();
    json_decref(j);
    decisions_input(d, &in, attrs, &peer);
    if (in.nattrs != d->nattrs || in.groups_override == NULL)
        abort();
    return DECISIONS_STOP;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int started;
    static struct authz_result r;
    char *buf = malloc(size + 1);
    const char *f[NFIELDS];
    struct policy_attr attrs[DEVTRUST_MAX_ATTRS + 1];
    struct authz_input in;
    struct devtrust_verdict v;
    struct check c;
    size_t n = 0, i, o = 0, na;

    if (buf == NULL)
        return 0;
    if (!started) {
        if (decisions_start(4, 1) == -1)
            abort();
        started = 1;
    }
    memcpy(buf, data, size);
    buf[size] = '\0';
    for (i = 0; i < NFIELDS; i++)
        f[i] = "";
    while (n < NFIELDS && o <= size) {
        f[n++] = buf + o;
        o += strlen(buf + o) + 1;
    }
    memset(&in, 0, sizeof(in));
    memset(&r, 0, sizeof(r));
    memset(&v, 0, sizeof(v));
    in.route = f[0];
    in.method = f[1];
    in.path = f[2];
    in.path_len = strlen(f[2]);
    in.has_identity = f[3][0] != '\0';
    in.user_sub = f[3];
    in.user_email = f[4];
    in.device_id = f[5];
    in.device_owner = f[6][0] != '\0' ? f[6] : NULL;
    in.device_tier = (int)(size % 7) - 1;
    in.device_score = (int)(size % 102) - 1;
    snprintf(v.tier_name, sizeof(v.tier_name), "%s", f[7]);
    snprintf(v.status, sizeof(v.status), "%s", f[8]);
    snprintf(r.client_ip, sizeof(r.client_ip), "%s", f[9]);
    snprintf(r.country, sizeof(r.country), "%s", f[10]);
    snprintf(r.groups, sizeof(r.groups), "%s", f[11]);
    r.decision.effect = (enum policy_effect)(size % 3);
    r.decision.rule_id = f[12];
    /* two reasons in the decision's own buffer */
    for (i = 0; i < 2; i++) {
        size_t l = strlen(f[13 + i]);
        if ((size_t)r.decision.reason_used + l + 1 > sizeof(r.decision.reason_buf))
            break;
        r.decision.reason_off[i] = r.decision.reason_used;
        memcpy(r.decision.reason_buf + r.decision.reason_used, f[13 + i], l + 1);
        r.decision.reason_used = (uint16_t)(r.decision.reason_used + l + 1);
        r.decision.nreasons++;
    }
    for (na = 0; na < (NFIELDS - 15) / 2 && na < DEVTRUST_MAX_ATTRS; na++) {
        attrs[na].name = f[15 + 2 * na];
        attrs[na].value = f[16 + 2 * na];
    }
    in.attrs = attrs;
    in.nattrs = na;
    decisions_record(0, f[12], &in, &v, &r);
    c.in = &in;
    c.r = &r;
    c.seen = 0;
    if (decisions_walk(check_cb, &c) < 1 || c.seen != 1)
        abort();
    free(buf);
    return 0;
}
