/*
 * jsonconf.h - small helpers shared by the strict JSON configuration
 * readers (proxy/conf.c, proxy/devtrust.c): type names for messages and the
 * unknown-key check. Pure: no I/O.
 */
#ifndef ZT_JSONCONF_H
#define ZT_JSONCONF_H

#include <stddef.h>

#include <jansson.h>

/* "an object", "a string", ... for "expected X, got Y" messages. */
const char *jsonconf_type_name(const json_t *v);

/*
 * Every key of obj must be in the NULL-terminated allowed list.
 * Returns 0 ok; -1 obj is not an object; 1 an unknown key, whose name is
 * copied into key[0..keylen) (NUL-terminated, truncated if needed).
 */
int jsonconf_check_keys(const json_t *obj, const char *const *allowed, char *key, size_t keylen);

#endif
