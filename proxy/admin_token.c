/*
 * admin_token.c - the admin token file (include/admin_token.h).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "admin_token.h"

struct admin_token {
    char name[ADMIN_TOKEN_NAME_MAX + 1];
    unsigned char digest[32];
};

struct admin_tokens {
    size_t n;
    struct admin_token *t;
};

static int at_digest(const char *s, size_t len, unsigned char *out)
{
    unsigned int n = 0;

    return EVP_Digest(s, len, out, &n, EVP_sha256(), NULL) == 1 && n == 32 ? 0 : -1;
}

static int at_name_ok(const char *s, size_t n)
{
    size_t i;

    if (n == 0 || n > ADMIN_TOKEN_NAME_MAX)
        return 0;
    for (i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '.' || ch == '-'))
            return 0;
    }
    return 1;
}

void admin_tokens_free(struct admin_tokens *t)
{
    if (t == NULL)
        return;
    if (t->t != NULL)
        OPENSSL_cleanse(t->t, t->n * sizeof(*t->t));
    free(t->t);
    free(t);
}

struct admin_tokens *admin_tokens_parse(const char *text, size_t len, const char *name, char *err,
                                        size_t errlen)
{
    struct admin_tokens *t = calloc(1, sizeof(*t));
    size_t off = 0, lineno = 0, i;

    if (t == NULL) {
        snprintf(err, errlen, "%s: out of memory", name);
        return NULL;
    }
    if (len > ADMIN_TOKEN_FILE_MAX) {
        snprintf(err, errlen, "%s: larger than %u bytes", name, ADMIN_TOKEN_FILE_MAX);
        goto err;
    }
    while (off < len) {
        const char *line = text + off, *nl = memchr(line, '\n', len - off), *colon;
        size_t ll = nl != NULL ? (size_t)(nl - line) : len - off, nlen, tlen;
        struct admin_token *nt;

        off += ll + (nl != NULL);
        lineno++;
        if (ll > 0 && line[ll - 1] == '\r')
            ll--;
        if (ll == 0 || line[0] == '#')
            continue;
        colon = memchr(line, ':', ll);
        if (colon == NULL) {
            snprintf(err, errlen, "%s:%zu: expected \"name:token\"", name, lineno);
            goto err;
        }
        nlen = (size_t)(colon - line);
        tlen = ll - nlen - 1;
        if (!at_name_ok(line, nlen)) {
            snprintf(err, errlen, "%s:%zu: expected a name of 1..%d of [A-Za-z0-9_.-] before ':'",
                     name, lineno, ADMIN_TOKEN_NAME_MAX);
            goto err;
        }
        if (tlen < ADMIN_TOKEN_MIN || tlen > ADMIN_TOKEN_MAX) {
            snprintf(err, errlen, "%s:%zu: the token of \"%.*s\" must be %d..%d bytes", name,
                     lineno, (int)nlen, line, ADMIN_TOKEN_MIN, ADMIN_TOKEN_MAX);
            goto err;
        }
        for (i = 0; i < tlen; i++) {
            unsigned char ch = (unsigned char)colon[1 + i];
            if (ch <= 0x20 || ch >= 0x7f) {
                snprintf(err, errlen,
                         "%s:%zu: the token of \"%.*s\" must be printable ASCII without spaces",
                         name, lineno, (int)nlen, line);
                goto err;
            }
        }
        for (i = 0; i < t->n; i++) {
            if (strlen(t->t[i].name) == nlen && memcmp(t->t[i].name, line, nlen) == 0) {
                snprintf(err, errlen, "%s:%zu: the name \"%.*s\" is used twice", name, lineno,
                         (int)nlen, line);
                goto err;
            }
        }
        if (t->n >= ADMIN_TOKENS_MAX) {
            snprintf(err, errlen, "%s:%zu: more than %d tokens", name, lineno, ADMIN_TOKENS_MAX);
            goto err;
        }
        nt = realloc(t->t, (t->n + 1) * sizeof(*t->t));
        if (nt == NULL) {
            snprintf(err, errlen, "%s: out of memory", name);
            goto err;
        }
        t->t = nt;
        memcpy(t->t[t->n].name, line, nlen);
        t->t[t->n].name[nlen] = '\0';
        if (at_digest(colon + 1, tlen, t->t[t->n].digest) == -1) {
            snprintf(err, errlen, "%s: SHA-256 failed", name);
            goto err;
        }
        for (i = 0; i < t->n; i++) {
            if (CRYPTO_memcmp(t->t[i].digest, t->t[t->n].digest, 32) == 0) {
                snprintf(err, errlen, "%s:%zu: \"%s\" has the same token as \"%s\"", name, lineno,
                         t->t[t->n].name, t->t[i].name);
                OPENSSL_cleanse(t->t[t->n].digest, 32);
                goto err;
            }
        }
        t->n++;
    }
    return t;
err:
    admin_tokens_free(t);
    return NULL;
}

size_t admin_tokens_count(const struct admin_tokens *t)
{
    return t != NULL ? t->n : 0;
}

const char *admin_tokens_match(const struct admin_tokens *t, const char *token, size_t len)
{
    unsigned char d[32];
    const char *found = NULL;
    size_t i;

    if (t == NULL || token == NULL || len < ADMIN_TOKEN_MIN || len > ADMIN_TOKEN_MAX)
        return NULL;
    if (at_digest(token, len, d) == -1)
        return NULL;
    /* Every entry is compared: the time does not depend on which one (if
     * any) matches. */
    for (i = 0; i < t->n; i++) {
        int eq = CRYPTO_memcmp(d, t->t[i].digest, sizeof(d)) == 0;
        if (eq && found == NULL)
            found = t->t[i].name;
    }
    OPENSSL_cleanse(d, sizeof(d));
    return found;
}
