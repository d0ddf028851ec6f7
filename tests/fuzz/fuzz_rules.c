/*
 * fuzz_rules.c - the rules compiler and evaluator on arbitrary bytes: never
 * crash, never leak, refuse with a message, and evaluate whatever compiles
 * against a few fixed contexts (plus explain, text and JSON).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>

#include "directory.h"
#include "policy.h"

static struct directory *dir;

static const char dir_json[] =
    "{\"groups\":{\"staff\":{},\"finance\":{\"member_of\":[\"staff\"]},\"eng\":{}},"
    "\"users\":{\"alice@corp.example\":{\"groups\":[\"finance\"],\"subject\":\"u1\"}}}";

static void run(const struct policy *p, int variant)
{
    static struct policy_attr attrs[] = {{"platform", "linux"}, {"managed", "true"}};
    struct policy_decision d;
    struct policy_ctx c;
    char buf[2048];
    json_t *j;
    size_t i;

    policy_ctx_init(&c);
    c.route_index = variant % 3 - 1;
    c.route = variant == 3 ? "payroll" : NULL;
    c.identity = variant != 1;
    c.user = "u1";
    c.email = "alice@corp.example";
    c.auth_time = 1779271200 - 600 * variant;
    c.mfa = variant & 1;
    c.dir = variant == 2 ? NULL : dir;
    if (c.dir != NULL)
        directory_user_groups(dir, c.user, c.email, &c.groups, &c.ngroups);
    c.device_tier = variant;
    c.device_score = 20 * variant;
    c.device_owner = variant == 0 ? "alice@corp.example" : NULL;
    c.device_attrs = attrs;
    c.ndevice_attrs = (size_t)variant % 3;
    c.device_stale = variant == 2;
    c.ip_family = variant == 3 ? AF_INET6 : AF_INET;
    if (variant == 3)
        inet_pton(AF_INET6, "2001:db8::7", c.ip);
    else
        inet_pton(AF_INET, "10.1.2.3", c.ip);
    memcpy(c.country, variant == 1 ? "KP" : "DE", 3);
    c.method = variant == 2 ? NULL : "GET";
    c.path = variant == 1 ? "/" : "/api/v1/x/users";
    c.now = 1779271200 + 3600 * 5 * variant;

    policy_eval(p, &c, &d);
    if (d.rule_id == NULL || d.nreasons > POLICY_REASONS_MAX || d.nmonitor > POLICY_MONITOR_MAX)
        abort();
    for (i = 0; i < d.nreasons; i++)
        if (strlen(policy_decision_reason(&d, i)) >= POLICY_REASON_BUF)
            abort();
    if (policy_explain(p, &c, buf, sizeof(buf)) != d.effect || strlen(buf) >= sizeof(buf))
        abort();
    j = policy_explain_json(p, &c);
    json_decref(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const routes[] = {"wiki", "payroll", "api"};
    struct policy_compile_opts o;
    struct policy *p;
    char err[512];
    int v;

    if (dir == NULL) {
        dir = directory_parse(dir_json, sizeof(dir_json) - 1, "fuzz", err, sizeof(err));
        if (dir == NULL)
            abort();
    }
    memset(&o, 0, sizeof(o));
    o.name = "fuzz.json";
    o.routes = routes;
    o.nroutes = 3;
    o.dir = dir;
    err[0] = '\0';
    p = policy_compile((const char *)data, size, &o, err, sizeof(err));
    if (p == NULL) {
        if (err[0] == '\0')
            abort(); /* every refusal must say why */
        /* lint mode: no route list, no directory */
        p = policy_compile((const char *)data, size, NULL, err, sizeof(err));
        if (p == NULL)
            return 0;
    }
    for (v = 0; v < 4; v++)
        run(p, v);
    policy_unref(p);
    return 0;
}
