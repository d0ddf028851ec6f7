/*
 * tz_test.c - the TZif reader against the C library's own conversion.
 *
 * localtime_r() under setenv("TZ")+tzset() is the oracle: this test is
 * single-threaded, which is the only place that is safe. Instants cover all
 * of 2026 (every 37 minutes), every minute of the DST transition days, and
 * 2040-2045 (after the last transition stored in the file: the footer rule).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "tz.h"

static const char *const zones[] = {
    "Europe/Berlin",    "America/New_York",  "Asia/Tokyo",   "UTC",
    "Australia/Sydney", "America/Sao_Paulo", "Asia/Kolkata", "Pacific/Chatham",
    "Europe/London",    "America/St_Johns"};

static int compare_at(const struct tz *z, int64_t t)
{
    struct tz_local l;
    struct tm tm;
    time_t tt = (time_t)t;

    if (tz_local(z, t, &l) != 0 || localtime_r(&tt, &tm) == NULL)
        return -1;
    if (l.year != tm.tm_year + 1900 || l.month != tm.tm_mon + 1 || l.mday != tm.tm_mday ||
        l.hour != tm.tm_hour || l.minute != tm.tm_min || l.second != tm.tm_sec ||
        l.wday != tm.tm_wday || l.utoff != tm.tm_gmtoff || l.isdst != (tm.tm_isdst > 0)) {
        print_error("%s t=%lld: got %lld-%02d-%02d %02d:%02d:%02d wd%d off%d dst%d, libc "
                    "%04d-%02d-%02d %02d:%02d:%02d wd%d off%ld dst%d\n",
                    tz_name(z), (long long)t, (long long)l.year, l.month, l.mday, l.hour, l.minute,
                    l.second, l.wday, (int)l.utoff, l.isdst, tm.tm_year + 1900, tm.tm_mon + 1,
                    tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, tm.tm_wday, tm.tm_gmtoff,
                    tm.tm_isdst);
        return -1;
    }
    return 0;
}

static void check_zone(const char *name)
{
    char err[256];
    struct tz *z = tz_load(NULL, name, err, sizeof(err));
    int64_t t;
    int bad = 0;

    if (z == NULL)
        fail_msg("%s", err);
    setenv("TZ", name, 1);
    tzset();
    /* 2026, every 37 minutes. */
    for (t = 1767225600 - 86400; t < 1798761600 + 86400 && bad < 5; t += 37 * 60 + 7)
        bad += compare_at(z, t) != 0;
    /* Each minute around the 2026 transitions (Mar 8, Mar 29, Oct 25, Nov 1, Apr 5, Oct 4). */
    static const int64_t days[] = {1772928000, 1774742400, 1792886400,
                                   1793491200, 1775347200, 1791072000};
    for (size_t i = 0; i < sizeof(days) / sizeof(days[0]); i++)
        for (t = days[i] - 86400; t < days[i] + 2 * 86400 && bad < 5; t += 60)
            bad += compare_at(z, t) != 0;
    /* 2040..2045 (footer rule in fat files) and the distant past. */
    for (t = 2208988800; t < 2398291200 && bad < 5; t += 3 * 3600 + 17)
        bad += compare_at(z, t) != 0;
    for (t = -2208988800; t < 0 && bad < 5; t += 86400 * 3 + 3601)
        bad += compare_at(z, t) != 0;
    tz_free(z);
    unsetenv("TZ");
    tzset();
    assert_int_equal(bad, 0);
}

static void test_against_libc(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(zones) / sizeof(zones[0]); i++)
        check_zone(zones[i]);
}

/* The Berlin and New York transition instants themselves, by hand. */
static void test_transitions_exact(void **state)
{
    char err[256];
    struct tz *b = tz_load(NULL, "Europe/Berlin", err, sizeof(err));
    struct tz *ny = tz_load(NULL, "America/New_York", err, sizeof(err));
    struct tz_local l;

    (void)state;
    assert_non_null(b);
    assert_non_null(ny);
    /* 2026-03-29 01:00:00Z: 02:00 CET becomes 03:00 CEST. */
    assert_int_equal(tz_local(b, 1774746000 - 1, &l), 0);
    assert_int_equal(l.minute_of_day, 1 * 60 + 59);
    assert_int_equal(l.isdst, 0);
    assert_int_equal(tz_local(b, 1774746000, &l), 0);
    assert_int_equal(l.minute_of_day, 3 * 60);
    assert_int_equal(l.utoff, 7200);
    assert_int_equal(l.wday, 0);
    /* 2026-10-25 01:00:00Z: 03:00 CEST becomes 02:00 CET. */
    assert_int_equal(tz_local(b, 1792890000 - 1, &l), 0);
    assert_int_equal(l.minute_of_day, 2 * 60 + 59);
    assert_int_equal(tz_local(b, 1792890000, &l), 0);
    assert_int_equal(l.minute_of_day, 2 * 60);
    assert_int_equal(l.utoff, 3600);
    /* 2026-03-08 07:00:00Z: 02:00 EST becomes 03:00 EDT. */
    assert_int_equal(tz_local(ny, 1772953200, &l), 0);
    assert_int_equal(l.minute_of_day, 3 * 60);
    assert_int_equal(l.utoff, -4 * 3600);
    /* 2026-11-01 06:00:00Z: 02:00 EDT becomes 01:00 EST. */
    assert_int_equal(tz_local(ny, 1793512800, &l), 0);
    assert_int_equal(l.minute_of_day, 1 * 60);
    assert_int_equal(l.utoff, -5 * 3600);
    /* Footer rule: 2100-03-28 01:00Z is the last Sunday of March 2100. */
    assert_int_equal(tz_local(b, 4109878800, &l), 0);
    assert_int_equal(l.isdst, 1);
    assert_int_equal(tz_local(b, 4109878799, &l), 0);
    assert_int_equal(l.isdst, 0);
    tz_free(b);
    tz_free(ny);
}

static void test_names(void **state)
{
    static const struct {
        const char *name;
        int ok;
    } cases[] = {
        {"Europe/Berlin", 1},
        {"UTC", 1},
        {"Etc/GMT+5", 1},
        {"America/Port-au-Prince", 1},
        {"", 0},
        {"/etc/passwd", 0},
        {"../etc/passwd", 0},
        {"Europe/../../x", 0},
        {"Europe//Berlin", 0},
        {"Europe/", 0},
        {"./UTC", 0},
        {"Europe/Ber lin", 0},
        {"Europe/Berlin\n", 0},
        {"..", 0},
        {"a/.", 0},
        {"...", 1},
    };
    char err[256];
    struct tz *z;

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        assert_int_equal(tz_name_valid(cases[i].name), cases[i].ok);
    assert_int_equal(tz_name_valid(NULL), 0);
    z = tz_load(NULL, "Europe/Berln", err, sizeof(err));
    assert_null(z);
    assert_string_equal(err, "unknown time zone \"Europe/Berln\" (not in /usr/share/zoneinfo)");
    z = tz_load(NULL, "../zoneinfo/UTC", err, sizeof(err));
    assert_null(z);
    assert_string_equal(err, "invalid time zone name \"../zoneinfo/UTC\"");
    z = tz_load(NULL, "Europe", err, sizeof(err)); /* a directory */
    assert_null(z);
}

static void test_parse_garbage(void **state)
{
    static const unsigned char v1[] = "TZif\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0"
                                      "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\1\0\0\0\4"
                                      "\0\0\0\0\0\0UTC\0";
    char err[256];

    (void)state;
    assert_null(tz_parse((const unsigned char *)"", 0, "x", err, sizeof(err)));
    assert_string_equal(err, "time zone \"x\": not a TZif file");
    assert_null(tz_parse(v1, sizeof(v1) - 1, "x", err, sizeof(err)));
    assert_string_equal(err, "time zone \"x\": TZif version 1 (no 64-bit data): not supported");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_against_libc),
        cmocka_unit_test(test_transitions_exact),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_parse_garbage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
