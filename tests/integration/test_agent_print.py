"""ztagent --print against fake root trees (docs/ztagent.md).

Builds a fake system under a temp dir (os-release, mountinfo and sysfs,
apt configuration, the dpkg database, dconf policy, an nft stub) and runs
`ztagent --print --root DIR`: every field must come from the tree, and what
the tree does not settle must be "unknown" (or absent where docs/posture.md
allows). Also: bad invocations exit 2 with a message that names the problem.

Environment: ZTAGENT_BIN (default $ZT_BUILD_DIR/ztagent, else
$ZT_SOURCE_DIR/build/ztagent).
"""

import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("ZT_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))
BUILD_DIR = os.environ.get("ZT_BUILD_DIR") or os.path.join(SOURCE_DIR, "build")
ZTAGENT_BIN = os.environ.get("ZTAGENT_BIN") or os.path.join(BUILD_DIR, "ztagent")

DAY = 86400

# docs/posture.md, the keys an agent may send.
TOP_KEYS = {"device_id", "collected_at", "agent_version", "os", "disk_encryption", "firewall",
            "screen_lock", "auto_updates", "days_since_patch", "uptime_seconds"}
REQUIRED = {"collected_at", "agent_version", "os", "disk_encryption", "firewall", "screen_lock",
            "auto_updates", "days_since_patch"}
TRI = ("disk_encryption", "firewall", "screen_lock", "auto_updates")


def check_schema(tc, r):
    """Assert r is a valid report by docs/posture.md (types and ranges)."""
    tc.assertLessEqual(set(r), TOP_KEYS, "unknown keys")
    tc.assertLessEqual(REQUIRED, set(r), "missing keys")
    tc.assertRegex(r["collected_at"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
    tc.assertRegex(r["agent_version"], r"^\d{1,9}(\.\d{1,9}){0,3}([-+][0-9A-Za-z.]+)?$")
    tc.assertLessEqual(len(r["agent_version"]), 31)
    tc.assertLessEqual(set(r["os"]), {"name", "version", "kernel"})
    tc.assertRegex(r["os"]["name"], r"^[A-Za-z0-9._-]{1,31}$")
    tc.assertRegex(r["os"]["version"], r"^[\x21-\x7e]{1,63}$")
    if "kernel" in r["os"]:
        tc.assertRegex(r["os"]["kernel"], r"^[\x20-\x7e]{0,127}$")
    for k in TRI:
        tc.assertIn(r[k], (True, False, "unknown"), k)
    d = r["days_since_patch"]
    tc.assertTrue(d == "unknown" or (type(d) is int and 0 <= d <= 36500), d)
    if "uptime_seconds" in r:
        u = r["uptime_seconds"]
        tc.assertTrue(type(u) is int and 0 <= u <= 3153600000, u)


class Tree:
    """A fake root directory."""

    def __init__(self, root):
        self.root = root

    def path(self, rel):
        return os.path.join(self.root, rel.lstrip("/"))

    def write(self, rel, text="", mode=None, mtime=None):
        p = self.path(rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w", encoding="utf-8") as f:
            f.write(text)
        if mode is not None:
            os.chmod(p, mode)
        if mtime is not None:
            os.utime(p, (mtime, mtime))
        return p

    def mkdir(self, rel):
        os.makedirs(self.path(rel), exist_ok=True)

    def remove(self, rel):
        p = self.path(rel)
        if os.path.isdir(p):
            shutil.rmtree(p)
        elif os.path.exists(p):
            os.unlink(p)

    # -- block devices ------------------------------------------------------

    def mount_root(self, majmin, fstype, source):
        self.write("/proc/self/mountinfo",
                   "21 26 0:20 / /sys rw,nosuid - sysfs sysfs rw\n"
                   "22 26 0:21 / /proc rw,nosuid - proc proc rw\n"
                   "26 1 %s / / rw,relatime shared:1 - %s %s rw,errors=remount-ro\n"
                   "27 26 0:25 / /run rw,nosuid shared:5 - tmpfs tmpfs rw,mode=755\n"
                   % (majmin, fstype, source))

    def disk(self, name, majmin):
        self.write("/sys/class/block/%s/device/vendor" % name, "ATA\n")
        self.mkdir("/sys/class/block/%s/slaves" % name)
        self.uevent(name, majmin, "disk")

    def partition(self, name, majmin):
        self.write("/sys/class/block/%s/partition" % name, "2\n")
        self.mkdir("/sys/class/block/%s/slaves" % name)
        self.uevent(name, majmin, "partition")

    def dm(self, name, majmin, uuid, dmname, slaves):
        self.write("/sys/class/block/%s/dm/uuid" % name, uuid + "\n")
        self.write("/sys/class/block/%s/dm/name" % name, dmname + "\n")
        self.mkdir("/sys/class/block/%s/slaves" % name)
        for s in slaves:
            self.write("/sys/class/block/%s/slaves/%s/dev" % (name, s), "0:0\n")
        self.uevent(name, majmin, "disk")

    def uevent(self, name, majmin, devtype):
        maj, mn = majmin.split(":")
        self.write("/sys/dev/block/%s/uevent" % majmin,
                   "MAJOR=%s\nMINOR=%s\nDEVNAME=%s\nDEVTYPE=%s\n" % (maj, mn, name, devtype))

    # -- a plain Debian server -------------------------------------------

    def debian(self, now):
        self.write("/etc/os-release",
                   '# comment\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n'
                   'NAME="Debian GNU/Linux"\nVERSION_ID="12"\nVERSION="12 (bookworm)"\n'
                   "ID=debian\nID_LIKE=\n")
        self.write("/proc/sys/kernel/osrelease", "6.1.0-18-amd64\n")
        self.write("/proc/uptime", "86400.55 170000.12\n")
        self.mount_root("8:2", "ext4", "/dev/sda2")
        self.disk("sda", "8:0")
        self.partition("sda2", "8:2")
        self.write("/usr/bin/apt-get", "", mode=0o755)
        self.write("/usr/bin/unattended-upgrade", "", mode=0o755)
        self.write("/etc/apt/apt.conf.d/20auto-upgrades",
                   'APT::Periodic::Update-Package-Lists "1";\n'
                   'APT::Periodic::Unattended-Upgrade "1";\n')
        self.write("/etc/apt/apt.conf.d/70debconf", '// comment\nDPkg::Pre-Install-Pkgs {"x";};\n')
        self.write("/var/lib/dpkg/status", "Package: libc6\nStatus: install ok installed\n",
                   mtime=now - 3 * DAY - 3600)

    def nft_stub(self, output=None, rc=0, sleep=0):
        """/usr/sbin/nft as a shell script printing output (JSON) and exiting rc."""
        script = "#!/bin/sh\n"
        if sleep:
            script += "sleep %d\n" % sleep
        script += "[ \"$1 $2 $3\" = \"-j list ruleset\" ] || exit 64\n"
        if output is not None:
            script += "cat <<'EOF'\n%s\nEOF\n" % json.dumps(output)
        script += "exit %d\n" % rc
        self.write("/usr/sbin/nft", script, mode=0o755)


def nft_ruleset(*items):
    return {"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}}]
            + list(items)}


def chain(name, hook=None, policy="accept", table="filter", family="inet"):
    c = {"family": family, "table": table, "name": name, "handle": 1}
    if hook:
        c.update({"type": "filter", "hook": hook, "prio": 0, "policy": policy})
    return {"chain": c}


def rule(chain_name, table="filter", family="inet"):
    return {"rule": {"family": family, "table": table, "chain": chain_name, "handle": 5,
                     "expr": [{"accept": None}]}}


def run_agent(*args, timeout=30, env=None):
    e = dict(os.environ)
    for k in list(e):
        if k.startswith("ZTAGENT_") or k == "CREDENTIALS_DIRECTORY":
            del e[k]
    if env:
        e.update(env)
    return subprocess.run([ZTAGENT_BIN] + list(args), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=timeout, env=e,
                          stdin=subprocess.DEVNULL)


class AgentCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not os.path.exists(ZTAGENT_BIN):
            raise RuntimeError("ztagent binary %s does not exist (build it first)" % ZTAGENT_BIN)

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="zt-agent-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.tree = Tree(os.path.join(self.dir, "root"))
        os.makedirs(self.tree.root)
        self.now = int(time.time())

    def report(self, *extra):
        r = run_agent("--print", "--root", self.tree.root, *extra)
        self.assertEqual(r.returncode, 0, r.stderr.decode(errors="replace"))
        rep = json.loads(r.stdout)
        check_schema(self, rep)
        return rep


class TestPrint(AgentCase):
    def test_plain_debian(self):
        self.tree.debian(self.now)
        r = self.report()
        self.assertEqual(r["os"], {"name": "debian", "version": "12", "kernel": "6.1.0-18-amd64"})
        self.assertIs(r["disk_encryption"], False)
        # No legacy tables and no nft binary in the tree: nftables unseen.
        self.assertEqual(r["firewall"], "unknown")
        self.assertEqual(r["screen_lock"], "unknown")
        self.assertIs(r["auto_updates"], True)
        self.assertEqual(r["days_since_patch"], 3)
        self.assertEqual(r["uptime_seconds"], 86400)
        self.assertNotIn("device_id", r)
        t = time.mktime(time.strptime(r["collected_at"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
        self.assertLess(abs(t - self.now), 120)

    def test_empty_tree_is_all_unknown(self):
        r = self.report()
        self.assertEqual(r["os"], {"name": "unknown", "version": "unknown"})  # no kernel key
        for k in TRI:
            self.assertEqual(r[k], "unknown", k)
        self.assertEqual(r["days_since_patch"], "unknown")
        self.assertNotIn("uptime_seconds", r)

    def test_os_release_fallback_and_rolling(self):
        self.tree.write("/usr/lib/os-release", "NAME=Arch\nID=arch\nBUILD_ID=rolling\n")
        r = self.report()
        self.assertEqual(r["os"]["name"], "arch")
        self.assertEqual(r["os"]["version"], "unknown")  # no VERSION_ID: not guessed

    def test_os_release_quoting_and_case(self):
        self.tree.write("/etc/os-release", "ID='Ubuntu'\nVERSION_ID=\"22.04\"\nID_LIKE=debian\n")
        r = self.report()
        self.assertEqual(r["os"]["name"], "ubuntu")
        self.assertEqual(r["os"]["version"], "22.04")

    def test_os_release_invalid_values(self):
        self.tree.write("/etc/os-release", 'ID="my distro"\nVERSION_ID="1 beta"\n')
        r = self.report()
        self.assertEqual(r["os"], {"name": "unknown", "version": "unknown"})

    def test_print_is_indented(self):
        self.tree.debian(self.now)
        out = run_agent("--print", "--root", self.tree.root).stdout.decode()
        self.assertTrue(out.startswith("{\n"))  # --print is indented for people


class TestDiskEncryption(AgentCase):
    def test_luks_under_lvm(self):
        # / on dm-1 (LVM) on dm-0 (LUKS2) on sda3
        self.tree.mount_root("254:1", "ext4", "/dev/mapper/vg-root")
        self.tree.disk("sda", "8:0")
        self.tree.partition("sda3", "8:3")
        self.tree.dm("dm-0", "254:0", "CRYPT-LUKS2-0123456789abcdef-sda3_crypt", "sda3_crypt",
                     ["sda3"])
        self.tree.dm("dm-1", "254:1", "LVM-abcdefABCDEF", "vg-root", ["dm-0"])
        self.assertIs(self.report()["disk_encryption"], True)

    def test_lvm_on_plain_partition(self):
        self.tree.mount_root("254:0", "xfs", "/dev/mapper/vg-root")
        self.tree.partition("sda2", "8:2")
        self.tree.dm("dm-0", "254:0", "LVM-abcdef", "vg-root", ["sda2"])
        self.assertIs(self.report()["disk_encryption"], False)

    def test_lvm_spanning_crypt_and_plain_is_false(self):
        self.tree.mount_root("254:2", "ext4", "/dev/mapper/vg-root")
        self.tree.partition("sda2", "8:2")
        self.tree.partition("sdb1", "8:17")
        self.tree.dm("dm-0", "254:0", "CRYPT-LUKS2-aa-c", "c", ["sda2"])
        self.tree.dm("dm-2", "254:2", "LVM-x", "vg-root", ["dm-0", "sdb1"])
        self.assertIs(self.report()["disk_encryption"], False)

    def test_overlay_root_is_unknown(self):
        self.tree.write("/proc/self/mountinfo",
                        "600 500 0:52 / / rw,relatime - overlay overlay rw,lowerdir=/l,upperdir=/u\n")
        self.assertEqual(self.report()["disk_encryption"], "unknown")

    def test_loop_and_unknown_devices(self):
        self.tree.mount_root("7:0", "squashfs", "/dev/loop0")
        self.tree.mkdir("/sys/class/block/loop0/slaves")
        self.tree.uevent("loop0", "7:0", "disk")
        self.assertEqual(self.report()["disk_encryption"], "unknown")

    def test_device_missing_from_sysfs_is_unknown(self):
        self.tree.mount_root("8:2", "ext4", "/dev/sda2")
        self.assertEqual(self.report()["disk_encryption"], "unknown")

    def test_btrfs_on_luks_by_source(self):
        # btrfs shows an anonymous device number; the source names the mapper device
        self.tree.mount_root("0:31", "btrfs", "/dev/mapper/luks-1234")
        self.tree.partition("nvme0n1p3", "259:3")
        self.tree.dm("dm-0", "254:0", "CRYPT-LUKS2-1234-luks-1234", "luks-1234", ["nvme0n1p3"])
        self.assertIs(self.report()["disk_encryption"], True)

    def test_btrfs_multi_device_one_plain(self):
        self.tree.mount_root("0:31", "btrfs", "/dev/mapper/luks-1")
        self.tree.partition("sda2", "8:2")
        self.tree.partition("sdb2", "8:18")
        self.tree.dm("dm-0", "254:0", "CRYPT-LUKS2-1-luks-1", "luks-1", ["sda2"])
        self.tree.write("/sys/fs/btrfs/f00d/devices/dm-0/x", "")
        self.tree.write("/sys/fs/btrfs/f00d/devices/sdb2/x", "")
        self.assertIs(self.report()["disk_encryption"], False)

    def test_proc_mounts_fallback(self):
        self.tree.write("/proc/mounts", "proc /proc proc rw 0 0\n/dev/sda2 / ext4 rw 0 0\n")
        self.tree.partition("sda2", "8:2")
        self.assertIs(self.report()["disk_encryption"], False)

    def test_escaped_mount_point_is_not_root(self):
        # "/\040" is the directory "/ ", not "/"
        self.tree.write("/proc/self/mountinfo", "26 1 8:2 / /\\040 rw - ext4 /dev/sda2 rw\n")
        self.tree.partition("sda2", "8:2")
        self.assertEqual(self.report()["disk_encryption"], "unknown")


class TestFirewall(AgentCase):
    def test_legacy_filter_table(self):
        self.tree.write("/proc/net/ip_tables_names", "nat\nfilter\n")
        self.assertIs(self.report()["firewall"], True)

    def test_nft_input_rules(self):
        self.tree.nft_stub(nft_ruleset({"table": {"family": "inet", "name": "filter"}},
                                       chain("input", "input"), rule("input")))
        self.assertIs(self.report()["firewall"], True)

    def test_nft_drop_policy(self):
        self.tree.nft_stub(nft_ruleset(chain("input", "input", policy="drop")))
        self.assertIs(self.report()["firewall"], True)

    def test_nft_empty_accept_chains_and_no_legacy_is_false(self):
        # Debian's stock /etc/nftables.conf: chains, no rules, policy accept.
        self.tree.nft_stub(nft_ruleset(chain("input", "input"), chain("forward", "forward"),
                                       chain("output", "output")))
        self.assertIs(self.report()["firewall"], False)

    def test_nft_docker_forward_rules_only_is_false(self):
        self.tree.write("/proc/net/ip_tables_names", "nat\n")
        self.tree.nft_stub(nft_ruleset(chain("FORWARD", "forward", table="filter", family="ip"),
                                       rule("FORWARD", family="ip"),
                                       chain("DOCKER", None, family="ip"),
                                       rule("DOCKER", family="ip")))
        self.assertIs(self.report()["firewall"], False)

    def test_nft_permission_denied_is_unknown(self):
        self.tree.nft_stub(None, rc=1)
        self.assertEqual(self.report()["firewall"], "unknown")

    def test_nft_garbage_is_unknown(self):
        self.tree.write("/usr/sbin/nft", "#!/bin/sh\necho 'table inet filter {'\n", mode=0o755)
        self.assertEqual(self.report()["firewall"], "unknown")

    def test_nft_timeout_is_unknown(self):
        self.tree.nft_stub(nft_ruleset(chain("input", "input", policy="drop")), sleep=20)
        t0 = time.monotonic()
        self.assertEqual(self.report()["firewall"], "unknown")
        self.assertLess(time.monotonic() - t0, 15)

    def test_unreadable_legacy_is_unknown(self):
        if os.geteuid() == 0:
            self.skipTest("root reads mode 000 files")
        self.tree.write("/proc/net/ip_tables_names", "", mode=0)
        self.tree.nft_stub(nft_ruleset())
        self.assertEqual(self.report()["firewall"], "unknown")


class TestScreenLock(AgentCase):
    def policy(self, lock="true", delay="uint32 300", locks=True):
        self.tree.write("/etc/dconf/profile/user", "user-db:user\nsystem-db:local\n")
        self.tree.write("/etc/dconf/db/local.d/00-screensaver",
                        "[org/gnome/desktop/session]\nidle-delay=%s\n\n"
                        "[org/gnome/desktop/screensaver]\nlock-enabled=%s\nlock-delay=uint32 0\n"
                        % (delay, lock))
        if locks:
            self.tree.write("/etc/dconf/db/local.d/locks/screensaver",
                            "/org/gnome/desktop/session/idle-delay\n"
                            "/org/gnome/desktop/screensaver/lock-enabled\n")

    def test_enforced(self):
        self.policy()
        self.assertIs(self.report()["screen_lock"], True)

    def test_enforced_off(self):
        self.policy(lock="false")
        self.assertIs(self.report()["screen_lock"], False)

    def test_enforced_never_idle(self):
        self.policy(delay="uint32 0")
        self.assertIs(self.report()["screen_lock"], False)

    def test_not_locked_is_unknown(self):
        # the user may change it: not a fact about the device
        self.policy(locks=False)
        self.assertEqual(self.report()["screen_lock"], "unknown")

    def test_later_keyfile_wins(self):
        self.policy()
        self.tree.write("/etc/dconf/db/local.d/99-override",
                        "[org/gnome/desktop/screensaver]\nlock-enabled=false\n")
        self.assertIs(self.report()["screen_lock"], False)


class TestAutoUpdates(AgentCase):
    def setUp(self):
        super().setUp()
        self.tree.debian(self.now)

    def test_off(self):
        self.tree.write("/etc/apt/apt.conf.d/20auto-upgrades",
                        'APT::Periodic::Update-Package-Lists "1";\n'
                        'APT::Periodic::Unattended-Upgrade "0";\n')
        self.assertIs(self.report()["auto_updates"], False)

    def test_absent_with_apt_is_false(self):
        self.tree.remove("/etc/apt/apt.conf.d/20auto-upgrades")
        self.assertIs(self.report()["auto_updates"], False)

    def test_no_apt_is_unknown(self):
        self.tree.remove("/usr/bin/apt-get")
        self.assertEqual(self.report()["auto_updates"], "unknown")

    def test_not_installed_is_false(self):
        self.tree.remove("/usr/bin/unattended-upgrade")
        self.assertIs(self.report()["auto_updates"], False)

    def test_scoped_syntax_and_comments(self):
        self.tree.write("/etc/apt/apt.conf.d/20auto-upgrades",
                        "/* block */ APT {\n  Periodic {\n    // line\n"
                        '    Unattended-Upgrade "1";\n  };\n};\n')
        self.assertIs(self.report()["auto_updates"], True)

    def test_later_part_wins_and_disabled_files_ignored(self):
        self.tree.write("/etc/apt/apt.conf.d/99-off", 'apt::periodic::unattended-upgrade "0";\n')
        self.tree.write("/etc/apt/apt.conf.d/99-on.dpkg-old",
                        'APT::Periodic::Unattended-Upgrade "1";\n')
        self.assertIs(self.report()["auto_updates"], False)

    def test_periodic_disabled(self):
        self.tree.write("/etc/apt/apt.conf", 'APT::Periodic::Enable "0";\n')
        self.assertIs(self.report()["auto_updates"], False)

    def test_non_numeric_is_unknown(self):
        self.tree.write("/etc/apt/apt.conf.d/20auto-upgrades",
                        'APT::Periodic::Unattended-Upgrade "always";\n')
        self.assertEqual(self.report()["auto_updates"], "unknown")


class TestPatchAge(AgentCase):
    def test_old(self):
        self.tree.write("/var/lib/dpkg/status", "", mtime=self.now - 400 * DAY - 5)
        self.assertEqual(self.report()["days_since_patch"], 400)

    def test_today(self):
        self.tree.write("/var/lib/dpkg/status", "", mtime=self.now - 60)
        self.assertEqual(self.report()["days_since_patch"], 0)

    def test_rpm(self):
        self.tree.write("/var/lib/rpm/rpmdb.sqlite", "", mtime=self.now - 10 * DAY - 5)
        self.assertEqual(self.report()["days_since_patch"], 10)

    def test_future_is_unknown(self):
        self.tree.write("/var/lib/dpkg/status", "", mtime=self.now + 10 * DAY)
        self.assertEqual(self.report()["days_since_patch"], "unknown")

    def test_missing_is_unknown(self):
        self.assertEqual(self.report()["days_since_patch"], "unknown")


class TestLiveSystem(unittest.TestCase):
    """Without --root: the real machine; whatever it says must be schema-valid."""

    def test_print_live(self):
        if not os.path.exists(ZTAGENT_BIN):
            self.skipTest("no binary")
        r = run_agent("--print")
        self.assertEqual(r.returncode, 0, r.stderr)
        rep = json.loads(r.stdout)
        check_schema(self, rep)
        self.assertEqual(rep["os"]["kernel"], os.uname().release)

    def test_verbose_explains(self):
        r = run_agent("--print", "-v")
        self.assertEqual(r.returncode, 0)
        err = r.stderr.decode()
        for k in ("disk_encryption:", "firewall:", "screen_lock:", "days_since_patch:"):
            self.assertIn(k, err)


class TestUsage(AgentCase):
    def bad(self, *args, want, env=None):
        r = run_agent(*args, env=env)
        err = r.stderr.decode(errors="replace")
        self.assertEqual(r.returncode, 2, "args %r: rc %d, stderr %r" % (args, r.returncode, err))
        self.assertIn(want, err)
        self.assertEqual(r.stdout, b"")
        self.assertNotIn("PRIVATE KEY", err)
        return err

    def keypair(self, name):
        key = os.path.join(self.dir, name + ".key")
        crt = os.path.join(self.dir, name + ".crt")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", crt,
                        "-days", "2", "-subj", "/CN=" + name],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.chmod(key, 0o600)
        return crt, key

    def test_unknown_option(self):
        self.bad("--bogus", want="unknown option --bogus")

    def test_missing_value(self):
        self.bad("--print", "--root", want="--root needs a value")

    def test_stray_argument(self):
        self.bad("--print", "extra", want='unexpected argument "extra"')

    def test_interval(self):
        self.bad("--interval", "abc", want='--interval: expected a whole number')
        self.bad("--interval", "5", want="from 10 to 86400")
        self.bad("--interval", "86401", want="from 10 to 86400")
        self.bad("--print", env={"ZTAGENT_INTERVAL": "x"}, want="ZTAGENT_INTERVAL")

    def test_timeout(self):
        self.bad("--timeout", "0", want="--timeout")

    def test_root(self):
        self.bad("--print", "--root", os.path.join(self.dir, "nope"), want="not a directory")
        self.bad("--print", "--root", "relative", want="absolute")

    def test_print_and_once(self):
        self.bad("--print", "--once", want="exclude each other")

    def test_url_required(self):
        crt, key = self.keypair("dev")
        self.bad("--once", "--cert", crt, "--key", key, want="--url is required")

    def test_bad_urls(self):
        crt, key = self.keypair("dev")
        self.bad("--once", "--url", "http://app.test/", "--cert", crt, "--key", key,
                 want="must start with https://")
        self.bad("--once", "--url", "not a url", "--cert", crt, "--key", key, want="--url")
        self.bad("--once", "--url", "https://", "--cert", crt, "--key", key, want="--url")

    def test_cert_key_required(self):
        self.bad("--once", "--url", "https://app.test/", want="--cert and --key are required")

    def test_missing_cert(self):
        _crt, key = self.keypair("dev")
        missing = os.path.join(self.dir, "missing.crt")
        err = self.bad("--once", "--url", "https://app.test/", "--cert", missing, "--key", key,
                       want="--cert " + missing)
        self.assertIn("No such file", err)

    def test_unreadable_or_bad_key(self):
        crt, key = self.keypair("dev")
        garbage = os.path.join(self.dir, "garbage.key")
        with open(garbage, "w") as f:
            f.write("-----BEGIN PRIVATE KEY-----\nnot base64 at all\n-----END PRIVATE KEY-----\n")
        self.bad("--once", "--url", "https://app.test/", "--cert", crt, "--key", garbage,
                 want="not an unencrypted PEM private key")
        self.bad("--once", "--url", "https://app.test/", "--cert", crt, "--key", crt,
                 want="not an unencrypted PEM private key")
        if os.geteuid() != 0:
            os.chmod(key, 0)
            self.bad("--once", "--url", "https://app.test/", "--cert", crt, "--key", key,
                     want="Permission denied")

    def test_key_of_another_cert(self):
        crt, _key = self.keypair("dev")
        _crt2, key2 = self.keypair("other")
        self.bad("--once", "--url", "https://app.test/", "--cert", crt, "--key", key2,
                 want="does not belong to the certificate")

    def test_bad_ca(self):
        crt, key = self.keypair("dev")
        self.bad("--once", "--url", "https://app.test/", "--cert", crt, "--key", key, "--ca", key,
                 want="--ca")

    def test_bad_resolve(self):
        self.bad("--print", "--resolve", "app.test:443", want="--resolve")
        self.bad("--print", "--resolve", "app.test:http:127.0.0.1", want="--resolve")

    def test_config_from_environment(self):
        crt, key = self.keypair("dev")
        # everything from ZTAGENT_*; the URL is bad, so this proves they were read
        self.bad("--once", env={"ZTAGENT_URL": "ftp://x/", "ZTAGENT_CERT": crt,
                                "ZTAGENT_KEY": key}, want="must start with https://")

    def test_credentials_directory(self):
        crt, key = self.keypair("dev")
        cred = os.path.join(self.dir, "cred")
        os.makedirs(cred)
        shutil.copy(crt, os.path.join(cred, "device.crt"))
        shutil.copy(key, os.path.join(cred, "device.key"))
        with open(os.path.join(cred, "ca.crt"), "w") as f:
            f.write("nothing\n")
        self.bad("--once", "--url", "https://app.test/",
                 env={"CREDENTIALS_DIRECTORY": cred}, want="--ca %s/ca.crt" % cred)

    def test_help_and_version(self):
        r = run_agent("--help")
        self.assertEqual(r.returncode, 0)
        self.assertIn(b"--print", r.stdout)
        r = run_agent("--version")
        self.assertEqual(r.returncode, 0)
        self.assertRegex(r.stdout.decode(), r"^ztagent \d+\.\d+\.\d+\n$")

    def test_network_failure_exit_1(self):
        crt, key = self.keypair("dev")
        import socket
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()  # nothing listens there now
        r = run_agent("--once", "--url", "https://app.test:%d/.zt/device/posture" % port,
                      "--resolve", "app.test:%d:127.0.0.1" % port, "--cert", crt, "--key", key,
                      "--timeout", "5")
        err = r.stderr.decode()
        self.assertEqual(r.returncode, 1, err)
        self.assertIn("https://app.test:%d/.zt/device/posture" % port, err)
        self.assertRegex(err, r"(?i)connect")


if __name__ == "__main__":
    unittest.main(verbosity=2)
