/*
 * directory.h - who is in which group: an immutable, refcounted snapshot.
 *
 * Source JSON (jansson, duplicate keys rejected, unknown keys are errors):
 *
 *   { "version": "2026-05-01",                        (optional)
 *     "groups": { "staff":   {},
 *                 "eng":     { "member_of": ["staff"] },
 *                 "finance": { "member_of": ["staff"], "description": "..." } },
 *     "users":  { "alice@corp.example": { "groups": ["eng"], "subject": "00u1abc" },
 *                 "bob@corp.example":   { "groups": ["finance"] } } }
 *
 *  - Every group must be declared under "groups" (a typo in a user's group
 *    list is an error, not a new group). "member_of" nests groups: a member
 *    of "eng" is also a member of "staff" and of whatever "staff" is a member
 *    of. A cycle is an error that names it ("a -> b -> a").
 *  - Users are keyed by email (compared case-insensitively: stored lower
 *    case); "subject" is the IdP's stable "sub" and is an optional second key
 *    (compared exactly). Lookups try the subject first, then the email.
 *  - Group names: 1..DIRECTORY_NAME_MAX bytes, printable, no ',' (the group
 *    list travels in the comma-separated X-ZT-Groups header), no leading or
 *    trailing space. Emails: 3..320 bytes with one '@'. Subjects: 1..255
 *    printable bytes.
 *  - Limits: DIRECTORY_USERS_MAX users, DIRECTORY_GROUPS_MAX groups, and at
 *    most DIRECTORY_MEMBERSHIPS_MAX (user, group) pairs after flattening.
 *
 * Nesting is flattened at load: each user maps to the sorted array of the ids
 * of every group they are in, directly or through nesting. Group ids are
 * 0..n-1 in the order of the sorted group names; they are only meaningful
 * within one snapshot (directory_serial() tells snapshots apart).
 */
#ifndef ZT_DIRECTORY_H
#define ZT_DIRECTORY_H

#include <stddef.h>
#include <stdint.h>

#define DIRECTORY_USERS_MAX 1000000
#define DIRECTORY_GROUPS_MAX 65536
#define DIRECTORY_MEMBERSHIPS_MAX (32u * 1024 * 1024)
#define DIRECTORY_NAME_MAX 256
#define DIRECTORY_EMAIL_MAX 320
#define DIRECTORY_SUBJECT_MAX 255
#define DIRECTORY_FILE_MAX (256u * 1024 * 1024)

struct directory; /* opaque, immutable after it is returned */

/*
 * Parse directory JSON. name is used in messages. Returns a snapshot with
 * refcount 1 (release with directory_unref()), or NULL with one line in err:
 * "name: $.users["alice@corp.example"].groups[1]: unknown group "stafff"".
 */
struct directory *directory_parse(const char *text, size_t len, const char *name, char *err,
                                  size_t errlen);

/* Read FILE (at most DIRECTORY_FILE_MAX bytes) and directory_parse() it. */
struct directory *directory_load(const char *file, char *err, size_t errlen);

/* Take / drop a reference (atomic; any thread). Unref of NULL is a no-op. */
struct directory *directory_ref(struct directory *d);
void directory_unref(struct directory *d);

/* Process-unique number of this snapshot (never reused while the process runs). */
uint64_t directory_serial(const struct directory *d);

/* The optional "version" string, or "" when absent. */
const char *directory_version(const struct directory *d);

size_t directory_user_count(const struct directory *d);
size_t directory_group_count(const struct directory *d);

/* Group name -> id. 0 and *id set, or -1 when there is no such group. */
int directory_group_find(const struct directory *d, const char *name, uint32_t *id);

/* Group id -> name (NULL if out of range). Valid while d is referenced. */
const char *directory_group_name(const struct directory *d, uint32_t id);

/*
 * The flattened groups of a user: by subject first (exact), then by email
 * (case-insensitive); either may be NULL. Returns 0 and sets *ids (sorted
 * ascending, no duplicates, valid while d is referenced) and *n; returns -1
 * and sets *ids = NULL, *n = 0 when the user is not in the directory.
 * Lock-free and allocation-free.
 */
int directory_user_groups(const struct directory *d, const char *subject, const char *email,
                          const uint32_t **ids, size_t *n);

/*
 * Listing, as the source was written (not flattened): the groups id is
 * directly a member_of (sorted ids), and user i (0..user_count-1) with its
 * own groups (sorted ids). Pointers are valid while d is referenced.
 * 0, or -1 when id / i is out of range.
 */
int directory_group_parents(const struct directory *d, uint32_t id, const uint32_t **ids,
                            size_t *n);
int directory_user_at(const struct directory *d, size_t i, const char **email, const char **subject,
                      const uint32_t **ids, size_t *n);

/* Is group id in the sorted id array? (binary search) */
int directory_ids_contain(const uint32_t *ids, size_t n, uint32_t id);

#endif
