/*
 * admin_token.h - the admin API's token file (docs/admin-api.md).
 *
 * Format: one "name:token" per line; blank lines and lines starting with
 * '#' are ignored; a trailing "\r" is dropped. name: 1..64 of
 * [A-Za-z0-9_.-], unique. token: ADMIN_TOKEN_MIN..ADMIN_TOKEN_MAX bytes of
 * printable ASCII without spaces (it travels in an Authorization header).
 * At most ADMIN_TOKENS_MAX lines with a token, ADMIN_TOKEN_FILE_MAX bytes.
 *
 * Only SHA-256 digests of the tokens are kept; a presented token is hashed
 * and compared with every digest in constant time (CRYPTO_memcmp over
 * equal-length digests, no early exit), so neither the length nor a prefix
 * of a token leaks through timing. Pure: bytes in, no I/O.
 */
#ifndef ZT_ADMIN_TOKEN_H
#define ZT_ADMIN_TOKEN_H

#include <stddef.h>

#define ADMIN_TOKEN_MIN 16
#define ADMIN_TOKEN_MAX 1024
#define ADMIN_TOKEN_NAME_MAX 64
#define ADMIN_TOKENS_MAX 1024
#define ADMIN_TOKEN_FILE_MAX (1024u * 1024)

struct admin_tokens; /* opaque, immutable */

/*
 * Parse a token file's bytes. name is used in messages. Returns a set
 * (free with admin_tokens_free()), or NULL with one line in err:
 * "admin.tokens:3: expected \"name:token\"". Never echoes a token.
 */
struct admin_tokens *admin_tokens_parse(const char *text, size_t len, const char *name, char *err,
                                        size_t errlen);
void admin_tokens_free(struct admin_tokens *t);

size_t admin_tokens_count(const struct admin_tokens *t);

/* The name of the token equal to token[0..len), or NULL (constant time in
 * the number of tokens; NULL t: no match). Valid while t is. */
const char *admin_tokens_match(const struct admin_tokens *t, const char *token, size_t len);

#endif
