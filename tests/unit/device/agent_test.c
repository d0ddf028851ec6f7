/*
 * agent_test.c - ztagent's collectors (device/agent/collect.c): the pure
 * parsers table-driven, the file collectors against fake trees, and the
 * report round-tripped through the proxy's own parser (posture_parse()).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <ftw.h>

#include <cmocka.h>

/* The agent is not in ztcore: include it to reach its statics. */
#include "../../../device/agent/collect.c"

#define NOW 1714564800 /* 2024-05-01T12:00:00Z */

/* ---- a fake root ---------------------------------------------------------- */

static char tree[PATH_MAX];

static void mkdirs(const char *path)
{
    char buf[PATH_MAX], *p;

    snprintf(buf, sizeof(buf), "%s", path);
    for (p = buf + 1; *p != '\0'; p++) {
        if (*p == '/') {
            *p = '\0';
            mkdir(buf, 0755);
            *p = '/';
        }
    }
    mkdir(buf, 0755);
}

static void mkdir_rel(const char *rel)
{
    char path[PATH_MAX];

    assert_int_equal(collect_path(tree, rel, path, sizeof(path)), 0);
    mkdirs(path);
}

static void put(const char *rel, const char *text)
{
    char path[PATH_MAX], dir[PATH_MAX], *slash;
    FILE *f;

    assert_int_equal(collect_path(tree, rel, path, sizeof(path)), 0);
    snprintf(dir, sizeof(dir), "%s", path);
    slash = strrchr(dir, '/');
    *slash = '\0';
    mkdirs(dir);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void put_mtime(const char *rel, int64_t t)
{
    char path[PATH_MAX];
    struct timeval tv[2] = {{(time_t)t, 0}, {(time_t)t, 0}};

    put(rel, "");
    assert_int_equal(collect_path(tree, rel, path, sizeof(path)), 0);
    assert_int_equal(utimes(path, tv), 0);
}

static int tree_setup(void **state)
{
    (void)state;
    snprintf(tree, sizeof(tree), "/tmp/zt-agent-test-XXXXXX");
    return mkdtemp(tree) == NULL ? -1 : 0;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int tree_teardown(void **state)
{
    (void)state;
    return nftw(tree, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- pure parsers ------------------------------------------------------------ */

#define FIFTY "01234567890123456789012345678901234567890123456789"

static void test_path_join(void **state)
{
    char out[64];

    (void)state;
    assert_int_equal(collect_path("/", "/etc/x", out, sizeof(out)), 0);
    assert_string_equal(out, "/etc/x");
    assert_int_equal(collect_path("/r//", "/etc/x", out, sizeof(out)), 0);
    assert_string_equal(out, "/r/etc/x");
    /* both sides of the limit: 63 characters fit in 64 bytes, 64 do not */
    assert_int_equal(collect_path("/r", "/" FIFTY "0123456789", out, sizeof(out)), 0);
    assert_int_equal(strlen(out), 63);
    assert_int_equal(collect_path("/r", "/" FIFTY "01234567890", out, sizeof(out)), -1);
    assert_true(collect_root_is_live("/"));
    assert_true(collect_root_is_live("//"));
    assert_false(collect_root_is_live("/tmp"));
}

static void test_osrelease(void **state)
{
    static const struct {
        const char *text, *key;
        int rc;
        const char *want;
    } cases[] = {
        {"ID=debian\n", "ID", 0, "debian"},
        {"ID_LIKE=debian\nID=ubuntu\n", "ID", 0, "ubuntu"},
        {"  ID=\"fedora\"  \n", "ID", 0, "fedora"},
        {"ID='opensuse-leap'\n", "ID", 0, "opensuse-leap"},
        {"NAME=\"a \\\"quoted\\\" b\"\n", "NAME", 0, "a \"quoted\" b"},
        {"ID=a\nID=b\n", "ID", 0, "b"},
        {"VERSION_ID=12   \n", "VERSION_ID", 0, "12"},
        {"#ID=x\n", "ID", -1, NULL},
        {"IDX=x\n", "ID", -1, NULL},
        {"", "ID", -1, NULL},
        {"ID=debian", "ID", 0, "debian"}, /* no final newline */
    };
    char out[64];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(collect_osrelease_get(cases[i].text, cases[i].key, out, sizeof(out)),
                         cases[i].rc);
        if (cases[i].rc == 0)
            assert_string_equal(out, cases[i].want);
    }
    /* too long for the buffer: not truncated into something else */
    assert_int_equal(collect_osrelease_get("ID=abcdefgh\n", "ID", out, 4), -1);
}

static void test_apt_parse(void **state)
{
    static const struct {
        const char *text, *uu, *en;
    } cases[] = {
        {"APT::Periodic::Unattended-Upgrade \"1\";", "1", ""},
        {"apt::periodic::unattended-upgrade \"7\";", "7", ""},
        {"APT { Periodic { Unattended-Upgrade \"1\"; Enable \"0\"; }; };", "1", "0"},
        {"APT::Periodic { Unattended-Upgrade \"1\"; };", "1", ""},
        {"// APT::Periodic::Unattended-Upgrade \"1\";\n", "", ""},
        {"# APT::Periodic::Unattended-Upgrade \"1\";\n", "", ""},
        {"/* APT::Periodic::Unattended-Upgrade \"1\"; */", "", ""},
        {"APT::Periodic::Unattended-Upgrade \"1\";\nAPT::Periodic::Unattended-Upgrade \"0\";", "0",
         ""},
        {"Other { Unattended-Upgrade \"1\"; };", "", ""},
        {"APT::Periodic::Unattended-Upgrade-Extra \"1\";", "", ""},
        {"}}};; \"x\" APT::Periodic::Unattended-Upgrade \"1\"", "1", ""}, /* junk survives */
        {"APT::Periodic::Unattended-Upgrade \"1", "1", ""},               /* unterminated */
    };
    struct collect_apt a;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        memset(&a, 0, sizeof(a));
        collect_apt_parse(cases[i].text, &a);
        assert_string_equal(a.unattended, cases[i].uu);
        assert_string_equal(a.enable, cases[i].en);
    }
    assert_true(collect_apt_part_ok("20auto-upgrades"));
    assert_true(collect_apt_part_ok("50local.conf"));
    assert_false(collect_apt_part_ok("20auto-upgrades.dpkg-old"));
    assert_false(collect_apt_part_ok("20auto-upgrades~"));
    assert_false(collect_apt_part_ok(".conf"));
}

static void test_nft_eval(void **state)
{
    static const struct {
        const char *json;
        enum posture_tri want;
    } cases[] = {
        {"{\"nftables\":[]}", POSTURE_NO},
        {"{\"nftables\":[{\"chain\":{\"family\":\"inet\",\"table\":\"f\",\"name\":\"in\","
         "\"hook\":\"input\",\"policy\":\"accept\"}}]}",
         POSTURE_NO},
        {"{\"nftables\":[{\"chain\":{\"family\":\"inet\",\"table\":\"f\",\"name\":\"in\","
         "\"hook\":\"input\",\"policy\":\"drop\"}}]}",
         POSTURE_YES},
        {"{\"nftables\":[{\"chain\":{\"family\":\"inet\",\"table\":\"f\",\"name\":\"in\","
         "\"hook\":\"input\",\"policy\":\"accept\"}},{\"rule\":{\"family\":\"inet\","
         "\"table\":\"f\",\"chain\":\"in\"}}]}",
         POSTURE_YES},
        /* a rule in a same-named chain of another family is not on the input hook */
        {"{\"nftables\":[{\"chain\":{\"family\":\"inet\",\"table\":\"f\",\"name\":\"in\","
         "\"hook\":\"input\",\"policy\":\"accept\"}},{\"rule\":{\"family\":\"ip\","
         "\"table\":\"f\",\"chain\":\"in\"}}]}",
         POSTURE_NO},
        {"{\"nftables\":[{\"chain\":{\"family\":\"ip\",\"table\":\"filter\",\"name\":\"FORWARD\","
         "\"hook\":\"forward\",\"policy\":\"drop\"}}]}",
         POSTURE_NO},
        {"table inet filter {", POSTURE_UNKNOWN},
        {"{\"other\":1}", POSTURE_UNKNOWN},
        {"", POSTURE_UNKNOWN},
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        assert_int_equal(collect_nft_eval(cases[i].json), cases[i].want);
}

static void test_mountinfo(void **state)
{
    char text[] = "22 1 0:21 / /proc rw - proc proc rw\n"
                  "26 1 8:2 / / rw,relatime shared:1 master:2 - ext4 /dev/sda2 rw\n"
                  "30 26 8:3 / /home rw - ext4 /dev/sda3 rw\n"
                  "31 26 0:40 / /with\\040space rw - tmpfs tmpfs rw\n"
                  "40 26 254:1 / / rw - xfs /dev/mapper/vg-root rw\n"; /* on top: wins */
    char bad[] = "26 1 8:2 / / rw\n";                                  /* no "-" */
    struct collect_mount m;

    (void)state;
    memset(&m, 0, sizeof(m));
    collect_mountinfo_root(text, &m);
    assert_true(m.found);
    assert_int_equal(m.maj, 254);
    assert_int_equal(m.min, 1);
    assert_string_equal(m.fstype, "xfs");
    assert_string_equal(m.source, "/dev/mapper/vg-root");
    memset(&m, 0, sizeof(m));
    collect_mountinfo_root(bad, &m);
    assert_false(m.found);
}

/* ---- collectors against a tree -------------------------------------------------- */

static void test_disk_luks_lvm(void **state)
{
    (void)state;
    put("/proc/self/mountinfo", "26 1 254:1 / / rw - ext4 /dev/mapper/vg-root rw\n");
    put("/sys/dev/block/254:1/uevent", "MAJOR=254\nMINOR=1\nDEVNAME=dm-1\n");
    put("/sys/class/block/dm-1/dm/uuid", "LVM-abc\n");
    put("/sys/class/block/dm-1/slaves/dm-0/dev", "254:0\n");
    put("/sys/class/block/dm-0/dm/uuid", "CRYPT-LUKS2-abc-sda3_crypt\n");
    put("/sys/class/block/dm-0/slaves/sda3/dev", "8:3\n");
    put("/sys/class/block/sda3/partition", "3\n");
    assert_int_equal(collect_disk_encryption(tree), POSTURE_YES);
    /* the LVM now also spans a plain partition: no longer all encrypted */
    put("/sys/class/block/dm-1/slaves/sdb1/dev", "8:17\n");
    put("/sys/class/block/sdb1/partition", "1\n");
    assert_int_equal(collect_disk_encryption(tree), POSTURE_NO);
    /* a slave we cannot judge (nbd) does not hide a plain one... */
    put("/sys/class/block/dm-1/slaves/nbd0/dev", "43:0\n");
    mkdir_rel("/sys/class/block/nbd0");
    assert_int_equal(collect_disk_encryption(tree), POSTURE_NO);
    /* ...but next to an encrypted one it makes the answer unknown */
    put("/sys/class/block/sdb1/dm/uuid", "CRYPT-PLAIN-sdb1\n");
    assert_int_equal(collect_disk_encryption(tree), POSTURE_UNKNOWN);
}

static void test_disk_cycle_is_bounded(void **state)
{
    (void)state;
    /* a sysfs that loops (it cannot, but the walk must still end) */
    put("/proc/self/mountinfo", "26 1 254:0 / / rw - ext4 /dev/dm-0 rw\n");
    put("/sys/dev/block/254:0/uevent", "DEVNAME=dm-0\n");
    put("/sys/class/block/dm-0/dm/uuid", "LVM-a\n");
    put("/sys/class/block/dm-0/slaves/dm-0/dev", "254:0\n");
    assert_int_equal(collect_disk_encryption(tree), POSTURE_UNKNOWN);
}

static void test_disk_bad_devname(void **state)
{
    (void)state;
    put("/proc/self/mountinfo", "26 1 8:2 / / rw - ext4 /dev/sda2 rw\n");
    put("/sys/dev/block/8:2/uevent", "DEVNAME=../../etc\n");
    assert_int_equal(collect_disk_encryption(tree), POSTURE_UNKNOWN);
}

static void test_auto_updates_tree(void **state)
{
    (void)state;
    assert_int_equal(collect_auto_updates(tree), POSTURE_UNKNOWN); /* no apt */
    put("/usr/bin/apt-get", "");
    assert_int_equal(collect_auto_updates(tree), POSTURE_NO); /* not configured */
    put("/etc/apt/apt.conf.d/20auto-upgrades", "APT::Periodic::Unattended-Upgrade \"1\";\n");
    assert_int_equal(collect_auto_updates(tree), POSTURE_NO); /* not installed */
    put("/usr/bin/unattended-upgrade", "");
    assert_int_equal(collect_auto_updates(tree), POSTURE_YES);
    put("/etc/apt/apt.conf", "APT::Periodic::Unattended-Upgrade \"0\";\n"); /* read last */
    assert_int_equal(collect_auto_updates(tree), POSTURE_NO);
    put("/etc/apt/apt.conf", "APT::Periodic::Unattended-Upgrade \"yes\";\n");
    assert_int_equal(collect_auto_updates(tree), POSTURE_UNKNOWN);
}

static void test_patch_age_limits(void **state)
{
    (void)state;
    assert_int_equal(collect_days_since_patch(tree, NOW), -1);
    put_mtime("/var/lib/dpkg/status", NOW - 86399);
    assert_int_equal(collect_days_since_patch(tree, NOW), 0);
    put_mtime("/var/lib/dpkg/status", NOW - 86400);
    assert_int_equal(collect_days_since_patch(tree, NOW), 1);
    put_mtime("/var/lib/dpkg/status", NOW + 86400); /* clock skew of a day: 0 */
    assert_int_equal(collect_days_since_patch(tree, NOW), 0);
    put_mtime("/var/lib/dpkg/status", NOW + 86401);
    assert_int_equal(collect_days_since_patch(tree, NOW), -1);
    put_mtime("/var/lib/dpkg/status", NOW - (int64_t)POSTURE_MAX_DAYS_SINCE_PATCH * 86400);
    assert_int_equal(collect_days_since_patch(tree, NOW), POSTURE_MAX_DAYS_SINCE_PATCH);
    put_mtime("/var/lib/dpkg/status", NOW - (int64_t)(POSTURE_MAX_DAYS_SINCE_PATCH + 1) * 86400);
    assert_int_equal(collect_days_since_patch(tree, NOW), -1);
}

static void test_uptime(void **state)
{
    static const struct {
        const char *text;
        int64_t want;
    } cases[] = {
        {"12345.67 99.00\n", 12345},
        {"0.00 0.00\n", 0},
        {"3153600000.00 1\n", 3153600000LL},
        {"3153600001.00 1\n", -1},
        {"-1.0 0\n", -1},
        {"abc\n", -1},
        {"nan 0\n", -1},
        {"12x 0\n", -1},
        {"", -1},
    };
    size_t i;

    (void)state;
    assert_int_equal(collect_uptime(tree), -1);
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        put("/proc/uptime", cases[i].text);
        assert_int_equal(collect_uptime(tree), cases[i].want);
    }
}

static void test_kernel(void **state)
{
    struct posture p;

    (void)state;
    collect_kernel(tree, &p);
    assert_string_equal(p.kernel, "");
    put("/proc/sys/kernel/osrelease", "6.1.0-18-amd64\n");
    collect_kernel(tree, &p);
    assert_string_equal(p.kernel, "6.1.0-18-amd64");
    put("/proc/sys/kernel/osrelease", "6.1\001bad\n");
    collect_kernel(tree, &p);
    assert_string_equal(p.kernel, "");
    collect_kernel("/", &p); /* uname(2) */
    assert_true(p.kernel[0] != '\0');
}

/* ---- the report parses with the proxy's parser ------------------------------------ */

static void roundtrip(const struct posture *in)
{
    struct posture out;
    char err[256] = "";
    char *json;
    int pretty;

    for (pretty = 0; pretty <= 1; pretty++) {
        json = collect_report_json(in, pretty);
        assert_non_null(json);
        if (posture_parse(json, strlen(json), in->collected_at + 5, &out, err, sizeof(err)) != 0)
            fail_msg("%s\n%s", err, json);
        assert_string_equal(out.os_name, in->os_name);
        assert_string_equal(out.os_version, in->os_version);
        assert_string_equal(out.kernel, in->kernel);
        assert_string_equal(out.agent_version, in->agent_version);
        assert_int_equal(out.collected_at, in->collected_at);
        assert_int_equal(out.disk_encryption, in->disk_encryption);
        assert_int_equal(out.firewall, in->firewall);
        assert_int_equal(out.screen_lock, in->screen_lock);
        assert_int_equal(out.auto_updates, in->auto_updates);
        assert_int_equal(out.days_since_patch, in->days_since_patch);
        assert_int_equal(out.uptime_seconds, in->uptime_seconds);
        assert_int_equal(out.has_device_id, 0);
        free(json);
    }
}

static void test_report_empty_tree(void **state)
{
    struct posture p;
    char *json;

    (void)state;
    collect_all(tree, NOW, &p);
    assert_string_equal(p.os_name, "unknown");
    assert_string_equal(p.os_version, "unknown");
    assert_string_equal(p.kernel, "");
    assert_int_equal(p.disk_encryption, POSTURE_UNKNOWN);
    assert_int_equal(p.firewall, POSTURE_UNKNOWN);
    assert_int_equal(p.screen_lock, POSTURE_UNKNOWN);
    assert_int_equal(p.auto_updates, POSTURE_UNKNOWN);
    assert_int_equal(p.days_since_patch, -1);
    assert_int_equal(p.uptime_seconds, -1);
    roundtrip(&p);
    json = collect_report_json(&p, 0);
    assert_non_null(json);
    assert_null(strstr(json, "kernel"));
    assert_null(strstr(json, "uptime_seconds"));
    assert_non_null(strstr(json, "\"days_since_patch\":\"unknown\""));
    free(json);
}

static void test_report_full_tree(void **state)
{
    struct posture p;

    (void)state;
    put("/etc/os-release", "ID=debian\nVERSION_ID=\"12\"\n");
    put("/proc/sys/kernel/osrelease", "6.1.0-18-amd64\n");
    put("/proc/uptime", "86400.5 1\n");
    put("/proc/self/mountinfo", "26 1 8:2 / / rw - ext4 /dev/sda2 rw\n");
    put("/sys/dev/block/8:2/uevent", "DEVNAME=sda2\n");
    put("/sys/class/block/sda2/partition", "2\n");
    put("/proc/net/ip_tables_names", "filter\n");
    put("/usr/bin/apt-get", "");
    put_mtime("/var/lib/dpkg/status", NOW - 3 * 86400);
    collect_all(tree, NOW, &p);
    assert_string_equal(p.os_name, "debian");
    assert_string_equal(p.os_version, "12");
    assert_string_equal(p.agent_version, ZTAGENT_VERSION);
    assert_int_equal(p.disk_encryption, POSTURE_NO);
    assert_int_equal(p.firewall, POSTURE_YES);
    assert_int_equal(p.auto_updates, POSTURE_NO);
    assert_int_equal(p.days_since_patch, 3);
    assert_int_equal(p.uptime_seconds, 86400);
    roundtrip(&p);
}

static void test_report_live(void **state)
{
    struct posture p;

    (void)state;
    collect_all("/", (int64_t)time(NULL), &p);
    roundtrip(&p);
}

static void test_report_bad_time(void **state)
{
    struct posture p;

    (void)state;
    memset(&p, 0, sizeof(p));
    p.collected_at = 253402300800LL; /* year 10000 */
    assert_null(collect_report_json(&p, 0));
}

#define TREE_TEST(f) cmocka_unit_test_setup_teardown(f, tree_setup, tree_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_path_join),
        cmocka_unit_test(test_osrelease),
        cmocka_unit_test(test_apt_parse),
        cmocka_unit_test(test_nft_eval),
        cmocka_unit_test(test_mountinfo),
        TREE_TEST(test_disk_luks_lvm),
        TREE_TEST(test_disk_cycle_is_bounded),
        TREE_TEST(test_disk_bad_devname),
        TREE_TEST(test_auto_updates_tree),
        TREE_TEST(test_patch_age_limits),
        TREE_TEST(test_uptime),
        TREE_TEST(test_kernel),
        TREE_TEST(test_report_empty_tree),
        TREE_TEST(test_report_full_tree),
        cmocka_unit_test(test_report_live),
        cmocka_unit_test(test_report_bad_time),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
