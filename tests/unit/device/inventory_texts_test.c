/*
 * inventory_texts_test.c - the attribute text prepared at parse time
 * (inventory_record_texts(), inventory_record_owner_len()) says exactly
 * what the record accessors say, numbers formatted as "%lld" and "%.17g".
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "inventory.h"

#define T0 1714564800 /* 2024-05-01T12:00:00Z */

#define REC(ID, OWNER, MANAGED, X)                                                                 \
    "{\"id\":\"" ID "\",\"serial\":\"C02XYZ\",\"owner\":\"" OWNER "\",\"managed\":" MANAGED ","    \
    "\"status\":\"active\",\"platform\":\"macOS\",\"os_version\":\"14.4.1\",\"model\":\"X1\","     \
    "\"enrolled\":\"2024-01-02T03:04:05Z\"" X "}\n"

/* The text of one value the way the accessors give it. */
static void text_of(const struct inventory_attr *a, char *buf, size_t len)
{
    switch (a->type) {
    case INVENTORY_ATTR_STRING:
        snprintf(buf, len, "%s", a->str);
        break;
    case INVENTORY_ATTR_INTEGER:
        snprintf(buf, len, "%lld", (long long)a->i);
        break;
    case INVENTORY_ATTR_REAL:
        snprintf(buf, len, "%.17g", a->real);
        break;
    case INVENTORY_ATTR_BOOL:
        snprintf(buf, len, "%s", a->i ? "true" : "false");
        break;
    }
}

static void check_record(const struct inventory_record *r)
{
    struct inventory_text t[INVENTORY_TEXT_MAX], few[3];
    struct inventory_attr a;
    char want[2048];
    size_t n, i;

    assert_int_equal(inventory_record_owner_len(r), strlen(inventory_record_owner(r)));
    n = inventory_record_texts(r, t, INVENTORY_TEXT_MAX);
    assert_int_equal(n, 4 + inventory_record_attr_count(r));
    assert_string_equal(t[0].name, "platform");
    assert_string_equal(t[0].value, inventory_record_platform(r));
    assert_string_equal(t[1].name, "os_version");
    assert_string_equal(t[1].value, inventory_record_os_version(r));
    assert_string_equal(t[2].name, "model");
    assert_string_equal(t[2].value, inventory_record_model(r));
    assert_string_equal(t[3].name, "managed");
    assert_string_equal(t[3].value, inventory_record_managed(r) ? "true" : "false");
    for (i = 4; i < n; i++) {
        assert_int_equal(inventory_record_attr_at(r, i - 4, &a), 0);
        assert_string_equal(t[i].name, a.name);
        text_of(&a, want, sizeof(want));
        assert_string_equal(t[i].value, want);
    }
    for (i = 0; i < n; i++) {
        assert_int_equal(t[i].name_len, strlen(t[i].name));
        assert_int_equal(t[i].value_len, strlen(t[i].value));
    }
    /* max is respected, also below the four fixed ones */
    assert_int_equal(inventory_record_texts(r, few, 3), 3);
    assert_string_equal(few[2].name, "model");
    assert_int_equal(inventory_record_texts(r, t, 5), n < 5 ? n : 5);
}

static void test_texts(void **state)
{
    static const char feed[] = REC(
        "dev-1", "alice@corp.example", "true",
        ",\"department\":\"eng\",\"cost_center\":4711,\"ratio\":0.1,\"neg\":-9223372036854775807,"
        "\"big\":1e300,\"tiny\":-2.5e-308,\"zero\":-0.0,\"shared\":false,\"on\":true,"
        "\"note\":null,\"empty\":\"\",\"uni\":\"caf\\u00e9 \\\"q\\\"\"")
        REC("dev-2", "b", "false", "")
            REC("dev-3", "someone.with.a.rather.long.name@subsidiary.corp.example", "true",
                ",\"a_name_that_is_longer_than_forty_seven_characters_x\":1,\"v\":\""
                "0123456789012345678901234567890123456789012345678901234567890123456789"
                "0123456789012345678901234567890123456789012345678901234567890123456789\"");
    struct inventory *inv = NULL;
    char err[256] = "";
    size_t i;

    (void)state;
    assert_int_equal(inventory_parse(feed, strlen(feed), NULL, 0, T0, &inv, err, sizeof(err)), 0);
    assert_int_equal(inventory_count(inv), 3);
    for (i = 0; i < inventory_count(inv); i++)
        check_record(inventory_record_at(inv, i));
    {
        struct inventory_text t[INVENTORY_TEXT_MAX];
        const struct inventory_record *r = inventory_lookup(inv, "dev-1", 5);
        size_t n = inventory_record_texts(r, t, INVENTORY_TEXT_MAX);
        /* null is absent; the rest in feed order */
        assert_int_equal(n, 4 + 11);
        assert_string_equal(t[0].value, "macos");
        assert_string_equal(t[5].value, "4711");
        assert_string_equal(t[6].value, "0.10000000000000001");
        assert_string_equal(t[8].value, "1.0000000000000001e+300");
        assert_string_equal(t[11].name, "shared");
        assert_string_equal(t[11].value, "false");
        assert_string_equal(t[12].name, "on");
        assert_string_equal(t[12].value, "true");
        assert_string_equal(t[13].name, "empty");
        assert_int_equal(t[13].value_len, 0);
        assert_string_equal(t[14].value, "caf\xc3\xa9 \"q\"");
    }
    inventory_unref(inv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_texts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
