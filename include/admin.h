/*
 * admin.h - the admin API listener (docs/admin-api.md).
 *
 * Its own TLS listener on the main thread's loop (libevent evhttp over
 * bufferevent_openssl): the proxy's server certificate, a client
 * certificate requested (not required) and verified against
 * admin.client_ca, TLS 1.2 or later. Every /api/ request needs an admin
 * credential (an admin certificate whose identity the live directory puts
 * in one of admin.admin_groups, or a token of admin.token_file): none is
 * 401, a wrong one 403. Writes must be JSON and same-origin (CSRF). Bodies
 * are limited to ADMIN_BODY_MAX bytes.
 *
 * Serves /healthz, /readyz, the rules, explain and history endpoints
 * itself (admin_rules.h), the endpoint groups of admin_int.h, and the
 * console's static files from admin.console_dir. Handlers run on the main
 * loop: the data plane (worker loops) never waits for them.
 *
 * Main thread only. Without an "admin" section nothing is started.
 */
#ifndef ZT_ADMIN_H
#define ZT_ADMIN_H

#include <stddef.h>

struct event_base;
struct conf;

#define ADMIN_BODY_MAX (4u * 1024 * 1024)
#define ADMIN_TIMEOUT_S 30 /* per request: read, handle, write */

/*
 * Start after authz_start() and devtrust_start() (the rules history and
 * /readyz read them). Binds the listener, loads the token file, opens the
 * rules history in state_dir. 0 (also when c has no admin section), or -1
 * and one line in err (nothing is left running).
 */
int admin_start(struct event_base *main_base, const struct conf *c, char *err, size_t errlen);

/*
 * SIGHUP with a new config: a new certificate, client CA, groups, token
 * file, console folder take effect for new connections; a changed listen
 * address rebinds; adding or removing the section starts or stops the
 * listener. On failure (-1, err) the running listener is kept.
 */
int admin_reconfigure(const struct conf *c, char *err, size_t errlen);

/* Close the listener and every admin connection; free everything. */
void admin_stop(void);

#endif
