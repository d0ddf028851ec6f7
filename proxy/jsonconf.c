/*
 * jsonconf.c - shared pieces of the strict configuration readers.
 */
#include <stdio.h>
#include <string.h>

#include "jsonconf.h"

const char *jsonconf_type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "something else";
}

int jsonconf_check_keys(const json_t *obj, const char *const *allowed, char *key, size_t keylen)
{
    const char *k;
    json_t *val;
    size_t i;

    if (!json_is_object(obj))
        return -1;
    json_object_foreach((json_t *)obj, k, val)
    {
        int ok = 0;
        for (i = 0; allowed[i] != NULL && !ok; i++)
            ok = strcmp(k, allowed[i]) == 0;
        if (!ok) {
            snprintf(key, keylen, "%s", k);
            return 1;
        }
    }
    return 0;
}
