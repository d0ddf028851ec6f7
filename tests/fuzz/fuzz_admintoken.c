/*
 * fuzz_admintoken.c - the admin API's token file from untrusted bytes.
 *
 * Parse the input as a token file; on success every line that parsed must
 * match its own token and no other, and the input itself (as a token) must
 * never match unless it is one. Never crash, never leak.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin_token.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    char err[512];
    struct admin_tokens *t = admin_tokens_parse(text, size, "fuzz.tokens", err, sizeof(err));
    size_t off = 0;

    if (t == NULL) {
        if (err[0] == '\0')
            abort(); /* a refusal always says why */
        return 0;
    }
    /* Every "name:token" line that is not a comment must match its name. */
    while (off < size) {
        const char *line = text + off, *nl = memchr(line, '\n', size - off), *colon, *name;
        size_t ll = nl != NULL ? (size_t)(nl - line) : size - off;

        off += ll + (nl != NULL);
        if (ll > 0 && line[ll - 1] == '\r')
            ll--;
        if (ll == 0 || line[0] == '#')
            continue;
        colon = memchr(line, ':', ll);
        if (colon == NULL)
            abort(); /* the parser accepted a line without ':' */
        name = admin_tokens_match(t, colon + 1, ll - (size_t)(colon - line) - 1);
        if (name == NULL || strlen(name) != (size_t)(colon - line) ||
            memcmp(name, line, strlen(name)) != 0)
            abort();
    }
    (void)admin_tokens_match(t, text, size);
    admin_tokens_free(t);
    return 0;
}
