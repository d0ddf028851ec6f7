/*
 * fuzz_conf.c - the configuration loader must reject garbage cleanly:
 * never crash, never leak, always explain.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct conf *c = NULL;
    char err[512];

    err[0] = '\0';
    if (conf_parse((const char *)data, size, "fuzz.json", "/nonexistent", CONF_NO_FS, &c, err,
                   sizeof(err)) == 0) {
        if (c == NULL || c->nroutes == 0 || c->nlisteners == 0)
            abort();
        (void)conf_route_match(c, "app.test", 8, "/", 1);
        conf_unref(c);
    } else if (err[0] == '\0' || c != NULL) {
        abort(); /* every refusal must say why */
    }
    return 0;
}
