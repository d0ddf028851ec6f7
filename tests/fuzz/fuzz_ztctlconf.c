/*
 * fuzz_ztctlconf.c - ztctl's two small parsers of local files from untrusted
 * bytes: the config file (config_parse) and the token file (token_parse) of
 * tools/admin_cmd.c, compiled in here with tools/util.c.
 *
 * A config that parses is an object of known keys with non-empty strings; a
 * refusal always says why. A token that parses is 16..1024 printable
 * characters without spaces, found in the input. Never crash, never leak.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../tools/admin_cmd.c"
#include "../../tools/util.c"

/* ztctl.c (with main()) is not compiled in. */
int ztctl_help(FILE *out, const char *cmd)
{
    (void)out;
    (void)cmd;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512] = "";
    json_t *cfg = config_parse((const char *)data, size, err, sizeof(err));
    char *text, *tok;

    if (cfg == NULL) {
        if (err[0] == '\0')
            abort();
    } else {
        const char *k;
        json_t *v;
        if (!json_is_object(cfg))
            abort();
        json_object_foreach(cfg, k, v)
        {
            size_t i;
            for (i = 0; cfg_keys[i] != NULL && strcmp(cfg_keys[i], k) != 0; i++)
                ;
            if (cfg_keys[i] == NULL || !json_is_string(v) || json_string_length(v) == 0)
                abort();
        }
        json_decref(cfg);
    }

    if (size > 4095)
        size = 4095; /* what read_token() reads */
    text = malloc(size + 1);
    if (text == NULL)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    err[0] = '\0';
    tok = token_parse(text, err, sizeof(err));
    if (tok == NULL) {
        if (err[0] == '\0')
            abort();
    } else {
        size_t i, n = strlen(tok);
        if (n < TOKEN_MIN || n > TOKEN_MAX || memmem(data, size, tok, n) == NULL)
            abort();
        for (i = 0; i < n; i++)
            if (tok[i] <= ' ' || tok[i] > '~')
                abort();
        free(tok);
    }
    free(text);
    return 0;
}
