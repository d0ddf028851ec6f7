/*
 * admin_int.h - inside the admin API (docs/admin-api.md): the contract
 * between the listener (proxy/admin.c: TLS, credentials, CSRF, routing,
 * rules, explain, health) and the endpoint groups implemented elsewhere
 * (proxy/admin_data.c: what-if, devices, directory, sessions, decisions).
 *
 * Handlers run on the admin listener's thread (the main thread's loop).
 * They may do file I/O and CPU work (a what-if replay, a directory
 * rewrite): the data plane runs on the workers and never waits for them.
 * A handler never keeps pointers into the call after it returns.
 */
#ifndef ZT_ADMIN_INT_H
#define ZT_ADMIN_INT_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

struct conf;

/* One authenticated API call, already past credentials and CSRF checks. */
struct admin_call {
    const char *method; /* "GET", "POST", "PUT", "DELETE" */
    /* Path below "/api/v1", percent-decoded, no query: "/devices/dev-1/status".
     * sub is the part after the group's own prefix ("/dev-1/status" for the
     * "/devices" group, "" for exactly "/devices"). */
    const char *path;
    const char *sub;
    /* Query parameter by name (decoded), NULL when absent. */
    const char *(*query)(const struct admin_call *c, const char *name);
    void *query_arg;
    json_t *body;      /* parsed JSON body (borrowed), NULL when none */
    const char *actor; /* "cert:alice@corp.example" or "token:ops" */
    const struct conf *conf;
    int64_t now; /* Unix seconds */
};

/* A handler's answer: status and a JSON body it owns (admin.c sends and
 * frees it). body NULL: an empty body. */
struct admin_reply {
    int status;
    json_t *body;
};

/* Set out to {"error": code, "message": printf(fmt, ...)} with status. */
void admin_error(struct admin_reply *out, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Write an "admin" event to the audit log: who (c->actor), what ("device
 * status", "directory add", "session revoke", ...) and detail (borrowed,
 * copied). Nothing secret goes into detail. */
void admin_audit(const struct admin_call *c, const char *what, json_t *detail);

/* The endpoint groups of admin_data.c. Each answers every method and sub
 * path below its prefix (405 / 404 for the ones it does not serve). */
void admin_whatif(const struct admin_call *c, struct admin_reply *out);    /* /whatif */
void admin_devices(const struct admin_call *c, struct admin_reply *out);   /* /devices */
void admin_directory(const struct admin_call *c, struct admin_reply *out); /* /directory */
void admin_sessions(const struct admin_call *c, struct admin_reply *out);  /* /sessions */
void admin_decisions(const struct admin_call *c, struct admin_reply *out); /* /decisions */

#endif
