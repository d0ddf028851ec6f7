/*
 * admin_rules.h - the admin API's rules endpoints and their history
 * (docs/admin-api.md, "Rules" and "Explain"), behind the listener
 * (admin.h). Main thread only.
 *
 * History: every version of the rules the proxy ran, one file per version
 * under state_dir/rules-history/ (NNNNNNNN.json: version, author, time,
 * comment, rules_version, rules, document), written atomically. Version
 * numbers only grow. At start an empty history gets the rules file as
 * version 1 (author "file"); whenever the live rules differ from the newest
 * version (the file was edited by hand and reloaded), that change is
 * recorded as a new version by "file" before any rules call is answered.
 * Without a state_dir the history lives in memory only.
 */
#ifndef ZT_ADMIN_RULES_H
#define ZT_ADMIN_RULES_H

#include <stddef.h>
#include <stdint.h>

#include "admin_int.h"

struct conf;

#define ADMIN_RULES_HISTORY_MAX 100000 /* versions kept */
#define ADMIN_COMMENT_MAX 1024

/* Open (or create) the history for c. 0, or -1 and err. No policy
 * section: 0, and the rules endpoints answer 409. */
int admin_rules_start(const struct conf *c, char *err, size_t errlen);
void admin_rules_stop(void);

/* /rules... (get, validate, put, history, diff, rollback) */
void admin_rules(const struct admin_call *c, struct admin_reply *out);
/* /explain */
void admin_explain(const struct admin_call *c, struct admin_reply *out);

/*
 * Rules put on another replica (include/shared.h): validate text, record it
 * in this replica's history as a new version (local version numbers; the
 * author gets " (via redis)", the comment is kept) and install it, in the
 * same all-or-nothing order as a put. Without an admin listener (no history
 * here) it is only installed. Not published again. 0, or -1 and err.
 */
int admin_rules_received(const char *text, size_t len, const char *author, const char *comment,
                         int64_t now, char *err, size_t errlen);

/* The newest history version (0: none), for /readyz. */
long admin_rules_version(void);

#endif
