/*
 * collect.c - posture collectors for Linux (see collect.h, docs/ztagent.md).
 *
 * Each collector reads root-relative files and says UNKNOWN when the files
 * do not settle the question: a report the proxy scores must never claim
 * more than the agent saw. The only process started is nft (firewall),
 * with a fixed environment, no stdin and a timeout.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "collect.h"
#include "log.h"

#define COLLECT_BLOCK_DEPTH_MAX 8 /* dm on md on dm ... deeper is not a real stack */
#define COLLECT_NAME_MAX 255

/* ---- files under root ---------------------------------------------------- */

/* root + rel ("/etc/os-release") into out. 0, or -1 if it does not fit. */
static int collect_path(const char *root, const char *rel, char *out, size_t len)
{
    size_t rl = strlen(root);
    int n;

    while (rl > 0 && root[rl - 1] == '/')
        rl--;
    n = snprintf(out, len, "%.*s%s", (int)rl, root, rel);
    if (n < 0 || (size_t)n >= len)
        return -1;
    return 0;
}

/* The live system ("/", "//"): only then are uname(2) and /proc of this process meaningful. */
static int collect_root_is_live(const char *root)
{
    if (root[0] != '/')
        return 0;
    while (*root == '/')
        root++;
    return *root == '\0';
}

static int collect_exists(const char *root, const char *rel)
{
    char path[PATH_MAX];
    struct stat st;

    if (collect_path(root, rel, path, sizeof(path)) == -1)
        return 0;
    return stat(path, &st) == 0;
}

/*
 * Read a whole root-relative file (procfs files report size 0, so read to
 * EOF). Returns a NUL-terminated heap copy (free()) and its length in *lenp,
 * or NULL with errno set (EFBIG when larger than COLLECT_FILE_MAX).
 */
static char *collect_slurp(const char *root, const char *rel, size_t *lenp)
{
    char path[PATH_MAX];
    char *buf = NULL, *nb;
    size_t len = 0, cap = 0;
    ssize_t r;
    int fd = -1, saved;

    if (collect_path(root, rel, path, sizeof(path)) == -1) {
        errno = ENAMETOOLONG;
        return NULL;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd == -1)
        return NULL;
    for (;;) {
        if (cap - len < 4096) {
            if (cap >= COLLECT_FILE_MAX) {
                errno = EFBIG;
                goto err;
            }
            cap = cap == 0 ? 8192 : cap * 2;
            nb = realloc(buf, cap + 1);
            if (nb == NULL)
                goto err;
            buf = nb;
        }
        r = read(fd, buf + len, cap - len);
        if (r == -1 && errno == EINTR)
            continue;
        if (r == -1)
            goto err;
        if (r == 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    buf[len] = '\0';
    if (lenp != NULL)
        *lenp = len;
    return buf;
err:
    saved = errno;
    free(buf);
    if (fd != -1)
        close(fd);
    errno = saved;
    return NULL;
}

/* Copy src into dst (dstlen bytes) whole, or not at all: 0 or -1. */
static int collect_copy(char *dst, size_t dstlen, const char *src)
{
    size_t n = strlen(src);

    if (n >= dstlen)
        return -1;
    memcpy(dst, src, n + 1);
    return 0;
}

/* Trim trailing whitespace in place. */
static void collect_rtrim(char *s)
{
    size_t n = strlen(s);

    while (n > 0 && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
}

/* A single sysfs/procfs line (first line of the file, trimmed) into out. 0 or -1. */
static int collect_read_line(const char *root, const char *rel, char *out, size_t len)
{
    char *text, *nl;
    int rc = -1;

    text = collect_slurp(root, rel, NULL);
    if (text == NULL)
        return -1;
    nl = strchr(text, '\n');
    if (nl != NULL)
        *nl = '\0';
    collect_rtrim(text);
    if (strlen(text) < len) {
        memcpy(out, text, strlen(text) + 1);
        rc = 0;
    }
    free(text);
    return rc;
}

/* A device or db name that is safe to put into a path: no '/', not "." or "..". */
static int collect_name_ok(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > COLLECT_NAME_MAX || strchr(s, '/') != NULL)
        return 0;
    return strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

static int collect_strcmp_sort(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * The names in a root-relative directory, sorted bytewise, without "." and
 * "..", at most max. Returns the count and a heap array of heap strings in
 * *out (collect_names_free()), or -1 with errno set.
 */
static int collect_list_dir(const char *root, const char *rel, size_t max, char ***out)
{
    char path[PATH_MAX];
    struct dirent *de;
    char **names = NULL, **nn;
    size_t n = 0, cap = 0, i;
    DIR *d;
    int saved;

    *out = NULL;
    if (collect_path(root, rel, path, sizeof(path)) == -1) {
        errno = ENAMETOOLONG;
        return -1;
    }
    d = opendir(path);
    if (d == NULL)
        return -1;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (n == max) {
            errno = E2BIG;
            goto err;
        }
        if (n == cap) {
            cap = cap == 0 ? 16 : cap * 2;
            nn = realloc(names, cap * sizeof(*names));
            if (nn == NULL)
                goto err;
            names = nn;
        }
        names[n] = strdup(de->d_name);
        if (names[n] == NULL)
            goto err;
        n++;
    }
    closedir(d);
    if (n > 0)
        qsort(names, n, sizeof(*names), collect_strcmp_sort);
    *out = names;
    return (int)n;
err:
    saved = errno;
    for (i = 0; i < n; i++)
        free(names[i]);
    free(names);
    closedir(d);
    errno = saved;
    return -1;
}

static void collect_names_free(char **names, int n)
{
    int i;

    for (i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

/* ---- os ------------------------------------------------------------------ */

/*
 * The value of KEY in os-release text (shell-style KEY=value lines, value
 * optionally in single or double quotes), the last assignment winning.
 * 0, or -1 if absent or longer than len - 1.
 */
static int collect_osrelease_get(const char *text, const char *key, char *out, size_t len)
{
    size_t klen = strlen(key), n;
    const char *line = text, *p, *eol;
    int found = -1;

    while (*line != '\0') {
        eol = strchr(line, '\n');
        if (eol == NULL)
            eol = line + strlen(line);
        p = line;
        while (p < eol && (*p == ' ' || *p == '\t'))
            p++;
        if ((size_t)(eol - p) > klen && strncmp(p, key, klen) == 0 && p[klen] == '=') {
            char q = 0;

            p += klen + 1;
            if (p < eol && (*p == '"' || *p == '\''))
                q = *p++;
            n = 0;
            found = 0;
            while (p < eol && (q == 0 || *p != q)) {
                if (q == '"' && *p == '\\' && p + 1 < eol)
                    p++;
                if (n + 1 >= len) {
                    found = -1;
                    break;
                }
                out[n++] = *p++;
            }
            if (found == 0) {
                out[n] = '\0';
                if (q == 0)
                    collect_rtrim(out);
            }
        }
        line = *eol == '\0' ? eol : eol + 1;
    }
    return found;
}

/* os.name: 1-31 of [A-Za-z0-9._-] (docs/posture.md). */
static int collect_os_name_ok(const char *s)
{
    size_t i, n = strlen(s);

    if (n == 0 || n > POSTURE_OS_NAME_MAX)
        return 0;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!(isalnum(c) || c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

/* os.version: 1-63 printable, no spaces. */
static int collect_os_version_ok(const char *s)
{
    size_t i, n = strlen(s);

    if (n == 0 || n > POSTURE_OS_VERSION_MAX)
        return 0;
    for (i = 0; i < n; i++) {
        if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
            return 0;
    }
    return 1;
}

void collect_os(const char *root, struct posture *p)
{
    char id[256], ver[256];
    char *text;
    size_t i;

    snprintf(p->os_name, sizeof(p->os_name), "unknown");
    snprintf(p->os_version, sizeof(p->os_version), "unknown");
    /* os-release(5): /etc/os-release, falling back to /usr/lib/os-release. */
    text = collect_slurp(root, "/etc/os-release", NULL);
    if (text == NULL)
        text = collect_slurp(root, "/usr/lib/os-release", NULL);
    if (text == NULL) {
        log_debug("os: no /etc/os-release or /usr/lib/os-release: unknown");
        return;
    }
    if (collect_osrelease_get(text, "ID", id, sizeof(id)) == 0 && collect_os_name_ok(id)) {
        for (i = 0; id[i] != '\0'; i++)
            id[i] = (char)tolower((unsigned char)id[i]);
        collect_copy(p->os_name, sizeof(p->os_name), id);
    } else {
        log_debug("os: os-release has no valid ID: name unknown");
    }
    /* Rolling releases (Arch, Debian sid) have no VERSION_ID: unknown, not "rolling". */
    if (collect_osrelease_get(text, "VERSION_ID", ver, sizeof(ver)) == 0 &&
        collect_os_version_ok(ver))
        collect_copy(p->os_version, sizeof(p->os_version), ver);
    else
        log_debug("os: os-release has no valid VERSION_ID: version unknown");
    free(text);
}

void collect_kernel(const char *root, struct posture *p)
{
    struct utsname u;
    char rel[256];
    size_t i;

    p->kernel[0] = '\0';
    if (collect_root_is_live(root)) {
        if (uname(&u) == -1) {
            log_warn("kernel: uname");
            return;
        }
        snprintf(rel, sizeof(rel), "%s", u.release);
    } else if (collect_read_line(root, "/proc/sys/kernel/osrelease", rel, sizeof(rel)) == -1) {
        log_debug("kernel: no /proc/sys/kernel/osrelease under the root: omitted");
        return;
    }
    if (strlen(rel) > POSTURE_KERNEL_MAX)
        return;
    for (i = 0; rel[i] != '\0'; i++) {
        if ((unsigned char)rel[i] < 0x20 || (unsigned char)rel[i] >= 0x7f)
            return;
    }
    collect_copy(p->kernel, sizeof(p->kernel), rel);
}

/* ---- disk encryption ----------------------------------------------------- */

/* Combining the layers below a block device: one plain layer makes the whole plain. */
struct collect_tally {
    int yes, no, unknown;
};

static void collect_tally_add(struct collect_tally *t, enum posture_tri v)
{
    if (v == POSTURE_YES)
        t->yes++;
    else if (v == POSTURE_NO)
        t->no++;
    else
        t->unknown++;
}

static enum posture_tri collect_tally_result(const struct collect_tally *t)
{
    if (t->no > 0)
        return POSTURE_NO;
    if (t->unknown > 0 || t->yes == 0)
        return POSTURE_UNKNOWN;
    return POSTURE_YES;
}

/*
 * Is block device name (as in /sys/class/block) encrypted? A dm-crypt
 * target (dm/uuid "CRYPT-...") is; other layers (LVM, md RAID, multipath)
 * are as encrypted as all of their slaves; a partition or a disk with no
 * layer above the hardware is not; anything else (loop, zram, nbd) is
 * unknown.
 */
static enum posture_tri collect_block_encrypted(const char *root, const char *name, int depth)
{
    struct collect_tally t = {0, 0, 0};
    char rel[PATH_MAX], uuid[512];
    char **slaves = NULL;
    enum posture_tri v = POSTURE_UNKNOWN;
    int n = 0, i, is_dm;

    if (depth > COLLECT_BLOCK_DEPTH_MAX || !collect_name_ok(name)) {
        log_debug("disk_encryption: %s: too deep or bad name: unknown", name);
        return POSTURE_UNKNOWN;
    }
    snprintf(rel, sizeof(rel), "/sys/class/block/%s", name);
    if (!collect_exists(root, rel)) {
        log_debug("disk_encryption: no %s: unknown", rel);
        return POSTURE_UNKNOWN;
    }
    snprintf(rel, sizeof(rel), "/sys/class/block/%s/dm/uuid", name);
    is_dm = collect_read_line(root, rel, uuid, sizeof(uuid)) == 0;
    if (is_dm && strncmp(uuid, "CRYPT-", 6) == 0) {
        log_debug("disk_encryption: %s is dm-crypt (%.*s...)", name, 12, uuid);
        return POSTURE_YES;
    }
    snprintf(rel, sizeof(rel), "/sys/class/block/%s/slaves", name);
    n = collect_list_dir(root, rel, 256, &slaves);
    if (n == -1 && errno != ENOENT) {
        log_debug("disk_encryption: cannot list %s: unknown", rel);
        return POSTURE_UNKNOWN;
    }
    if (n > 0) {
        for (i = 0; i < n; i++)
            collect_tally_add(&t, collect_block_encrypted(root, slaves[i], depth + 1));
        collect_names_free(slaves, n);
        v = collect_tally_result(&t);
        log_debug("disk_encryption: %s has %d slave(s): %s", name, n,
                  v == POSTURE_YES  ? "encrypted"
                  : v == POSTURE_NO ? "plain"
                                    : "unknown");
        return v;
    }
    collect_names_free(slaves, n);
    if (is_dm) {
        /* A device-mapper target with no slaves (dm-zero, ...): not a disk we can judge. */
        log_debug("disk_encryption: %s is device-mapper (%s) without slaves: unknown", name, uuid);
        return POSTURE_UNKNOWN;
    }
    if (strncmp(name, "loop", 4) == 0) {
        /* The backing file lives on some other filesystem: not followed. */
        log_debug("disk_encryption: %s is a loop device: unknown", name);
        return POSTURE_UNKNOWN;
    }
    snprintf(rel, sizeof(rel), "/sys/class/block/%s/partition", name);
    if (collect_exists(root, rel)) {
        log_debug("disk_encryption: %s is a plain partition", name);
        return POSTURE_NO;
    }
    snprintf(rel, sizeof(rel), "/sys/class/block/%s/device", name);
    if (collect_exists(root, rel)) {
        log_debug("disk_encryption: %s is a plain disk", name);
        return POSTURE_NO;
    }
    log_debug("disk_encryption: %s is neither a partition nor a disk: unknown", name);
    return POSTURE_UNKNOWN;
}

/* The mount on "/" (the last one listed wins: it is the one on top). */
struct collect_mount {
    int found;
    unsigned maj, min;
    char fstype[64];
    char source[512];
};

/* Undo the octal escapes of mountinfo (\040 is a space) in place. */
static void collect_mount_unescape(char *s)
{
    char *w = s;

    while (*s != '\0') {
        if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
            s[3] >= '0' && s[3] <= '7') {
            *w++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
            s += 4;
        } else {
            *w++ = *s++;
        }
    }
    *w = '\0';
}

/* Split a line into at most max space-separated fields (in place). */
static int collect_split(char *line, char **f, int max)
{
    int n = 0;
    char *p = line;

    while (*p != '\0' && n < max) {
        while (*p == ' ' || *p == '\t')
            *p++ = '\0';
        if (*p == '\0')
            break;
        f[n++] = p;
        while (*p != '\0' && *p != ' ' && *p != '\t')
            p++;
    }
    return n;
}

/*
 * proc_pid_mountinfo(5): "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw".
 * The optional fields end at "-"; fstype and source follow.
 */
static void collect_mountinfo_root(char *text, struct collect_mount *m)
{
    char *line = text, *eol, *f[64];
    int n, i;

    while (*line != '\0') {
        eol = strchr(line, '\n');
        if (eol != NULL)
            *eol = '\0';
        n = collect_split(line, f, 64);
        if (n >= 7) {
            collect_mount_unescape(f[4]);
            for (i = 6; i < n && strcmp(f[i], "-") != 0; i++)
                ;
            if (strcmp(f[4], "/") == 0 && i + 2 < n &&
                sscanf(f[2], "%u:%u", &m->maj, &m->min) == 2) {
                m->found = 1;
                snprintf(m->fstype, sizeof(m->fstype), "%s", f[i + 1]);
                collect_mount_unescape(f[i + 2]);
                snprintf(m->source, sizeof(m->source), "%s", f[i + 2]);
            }
        }
        if (eol == NULL)
            break;
        line = eol + 1;
    }
}

/* /proc/mounts (fstab format), when there is no mountinfo: no device numbers. */
static void collect_mounts_root(char *text, struct collect_mount *m)
{
    char *line = text, *eol, *f[8];
    int n;

    while (*line != '\0') {
        eol = strchr(line, '\n');
        if (eol != NULL)
            *eol = '\0';
        n = collect_split(line, f, 8);
        if (n >= 3) {
            collect_mount_unescape(f[1]);
            if (strcmp(f[1], "/") == 0) {
                m->found = 1;
                m->maj = 0;
                m->min = 0;
                snprintf(m->fstype, sizeof(m->fstype), "%s", f[2]);
                collect_mount_unescape(f[0]);
                snprintf(m->source, sizeof(m->source), "%s", f[0]);
            }
        }
        if (eol == NULL)
            break;
        line = eol + 1;
    }
}

/* The /sys/class/block name of device MAJ:MIN, from /sys/dev/block/MAJ:MIN/uevent DEVNAME. */
static int collect_block_by_devnum(const char *root, unsigned maj, unsigned min, char *out,
                                   size_t len)
{
    char rel[128], *text, *p, *eol;
    int rc = -1;

    snprintf(rel, sizeof(rel), "/sys/dev/block/%u:%u/uevent", maj, min);
    text = collect_slurp(root, rel, NULL);
    if (text == NULL)
        return -1;
    for (p = text; p != NULL && *p != '\0'; p = eol == NULL ? NULL : eol + 1) {
        eol = strchr(p, '\n');
        if (eol != NULL)
            *eol = '\0';
        if (strncmp(p, "DEVNAME=", 8) == 0 && strlen(p + 8) < len) {
            snprintf(out, len, "%s", p + 8);
            rc = collect_name_ok(out) ? 0 : -1;
            break;
        }
    }
    free(text);
    return rc;
}

/* The dm-N whose dm/name is mapper_name (/dev/mapper/<mapper_name>). */
static int collect_block_by_dm_name(const char *root, const char *mapper_name, char *out,
                                    size_t len)
{
    char rel[PATH_MAX], dmname[256];
    char **names = NULL;
    int n, i, rc = -1;

    n = collect_list_dir(root, "/sys/class/block", 65536, &names);
    for (i = 0; i < n && rc == -1; i++) {
        if (strncmp(names[i], "dm-", 3) != 0)
            continue;
        snprintf(rel, sizeof(rel), "/sys/class/block/%s/dm/name", names[i]);
        if (collect_read_line(root, rel, dmname, sizeof(dmname)) == 0 &&
            strcmp(dmname, mapper_name) == 0 && strlen(names[i]) < len) {
            snprintf(out, len, "%s", names[i]);
            rc = 0;
        }
    }
    collect_names_free(names, n);
    return rc;
}

/* The /sys/class/block name for a mount source such as /dev/mapper/root or /dev/sda2. */
static int collect_block_by_source(const char *root, const char *source, char *out, size_t len)
{
    char path[PATH_MAX], real[PATH_MAX], rel[PATH_MAX];
    const char *base;

    if (strncmp(source, "/dev/mapper/", 12) == 0)
        return collect_block_by_dm_name(root, source + 12, out, len);
    if (strncmp(source, "/dev/", 5) != 0)
        return -1;
    base = strrchr(source, '/') + 1;
    snprintf(rel, sizeof(rel), "/sys/class/block/%s", base);
    if (!collect_name_ok(base) || !collect_exists(root, rel)) {
        /* /dev/disk/by-uuid/... and friends are symlinks to the real node. */
        if (collect_path(root, source, path, sizeof(path)) == -1 || realpath(path, real) == NULL)
            return -1;
        base = strrchr(real, '/') + 1;
        snprintf(rel, sizeof(rel), "/sys/class/block/%s", base);
        if (!collect_name_ok(base) || !collect_exists(root, rel))
            return -1;
    }
    if (strlen(base) >= len)
        return -1;
    snprintf(out, len, "%s", base);
    return 0;
}

/*
 * btrfs may span devices and mountinfo names only one of them: every device
 * in /sys/fs/btrfs/<fsid>/devices/ must be encrypted.
 */
static enum posture_tri collect_btrfs_encrypted(const char *root, const char *dev)
{
    struct collect_tally t = {0, 0, 0};
    char rel[PATH_MAX];
    char **fsids = NULL, **devs = NULL;
    int nf, nd = -1, i, j;

    nf = collect_list_dir(root, "/sys/fs/btrfs", 4096, &fsids);
    for (i = 0; i < nf && nd == -1; i++) {
        snprintf(rel, sizeof(rel), "/sys/fs/btrfs/%s/devices/%s", fsids[i], dev);
        if (!collect_name_ok(fsids[i]) || !collect_exists(root, rel))
            continue;
        snprintf(rel, sizeof(rel), "/sys/fs/btrfs/%s/devices", fsids[i]);
        nd = collect_list_dir(root, rel, 256, &devs);
        if (nd == -1)
            break;
        for (j = 0; j < nd; j++)
            collect_tally_add(&t, collect_block_encrypted(root, devs[j], 0));
        collect_names_free(devs, nd);
    }
    collect_names_free(fsids, nf);
    if (nd <= 0)
        return collect_block_encrypted(root, dev, 0);
    return collect_tally_result(&t);
}

enum posture_tri collect_disk_encryption(const char *root)
{
    struct collect_mount m;
    char dev[COLLECT_NAME_MAX + 1];
    char *text;
    enum posture_tri v = POSTURE_UNKNOWN;

    memset(&m, 0, sizeof(m));
    text = collect_slurp(root, "/proc/self/mountinfo", NULL);
    if (text != NULL) {
        collect_mountinfo_root(text, &m);
    } else {
        text = collect_slurp(root, "/proc/mounts", NULL);
        if (text != NULL)
            collect_mounts_root(text, &m);
    }
    free(text);
    if (!m.found) {
        log_debug("disk_encryption: no mount on / in /proc/self/mountinfo or /proc/mounts: "
                  "unknown");
        return POSTURE_UNKNOWN;
    }
    if (m.maj != 0) {
        if (collect_block_by_devnum(root, m.maj, m.min, dev, sizeof(dev)) == -1) {
            log_debug("disk_encryption: / is on %u:%u, not in /sys/dev/block: unknown", m.maj,
                      m.min);
            return POSTURE_UNKNOWN;
        }
    } else if (strncmp(m.source, "/dev/", 5) == 0) {
        /* btrfs reports an anonymous device number; its source names the disk. */
        if (collect_block_by_source(root, m.source, dev, sizeof(dev)) == -1) {
            log_debug("disk_encryption: / is %s on %s, no block device found: unknown", m.fstype,
                      m.source);
            return POSTURE_UNKNOWN;
        }
    } else {
        /* overlay (containers), tmpfs, nfs, 9p, virtiofs, zfs: no block device to judge. */
        log_debug("disk_encryption: / is %s on %s, not a block device: unknown", m.fstype,
                  m.source);
        return POSTURE_UNKNOWN;
    }
    if (strcmp(m.fstype, "btrfs") == 0)
        v = collect_btrfs_encrypted(root, dev);
    else
        v = collect_block_encrypted(root, dev, 0);
    log_debug("disk_encryption: / is %s on %s: %s", m.fstype, dev,
              v == POSTURE_YES  ? "encrypted"
              : v == POSTURE_NO ? "not encrypted"
                                : "unknown");
    return v;
}

/* ---- firewall -------------------------------------------------------------- */

static int64_t collect_mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * Run argv (argv[0] an absolute path) with stdin and stderr on /dev/null, a
 * fixed environment and the default signal mask, and collect its stdout (at
 * most max bytes). Returns 0 with the wait status in *status and a
 * NUL-terminated heap buffer in *out (free()), or -1 if it could not run,
 * overflowed or timed out (then the child is killed and reaped).
 */
static int collect_run(char *const argv[], int timeout_ms, size_t max, char **out, int *status)
{
    static char *const envp[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C", NULL};
    int pfd[2] = {-1, -1}, devnull = -1, rc = -1, wst = 0, killed = 0;
    int64_t deadline = collect_mono_ms() + timeout_ms, left;
    char *buf = NULL, *nb;
    size_t len = 0, cap = 0;
    struct pollfd pf;
    sigset_t none;
    pid_t pid = -1, w;
    ssize_t r;

    *out = NULL;
    sigemptyset(&none);
    devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull == -1 || pipe2(pfd, O_CLOEXEC) == -1)
        goto done;
    pid = fork();
    if (pid == -1)
        goto done;
    if (pid == 0) {
        /* Only async-signal-safe calls from here to execve. */
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        if (dup2(devnull, 0) == -1 || dup2(pfd[1], 1) == -1 || dup2(devnull, 2) == -1)
            _exit(127);
        execve(argv[0], argv, envp);
        _exit(127);
    }
    close(pfd[1]);
    pfd[1] = -1;
    for (;;) {
        left = deadline - collect_mono_ms();
        if (left <= 0) {
            killed = 1;
            break;
        }
        pf.fd = pfd[0];
        pf.events = POLLIN;
        pf.revents = 0;
        r = poll(&pf, 1, (int)left);
        if (r == -1 && errno == EINTR)
            continue;
        if (r == -1) {
            killed = 1;
            break;
        }
        if (r == 0)
            continue;
        if (cap - len < 65536) {
            if (cap >= max) {
                killed = 1; /* more than we are willing to read */
                break;
            }
            cap = cap == 0 ? 65536 : cap * 2;
            nb = realloc(buf, cap + 1);
            if (nb == NULL) {
                killed = 1;
                break;
            }
            buf = nb;
        }
        r = read(pfd[0], buf + len, cap - len);
        if (r == -1 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    /* stdout is closed; give the child the rest of the deadline to exit. */
    while (!killed) {
        w = waitpid(pid, &wst, WNOHANG);
        if (w == pid)
            break;
        if (w == -1 && errno != EINTR) {
            killed = 1;
            break;
        }
        if (collect_mono_ms() >= deadline) {
            killed = 1;
            break;
        }
        poll(NULL, 0, 10);
    }
    if (killed) {
        kill(pid, SIGKILL);
        while (waitpid(pid, &wst, 0) == -1 && errno == EINTR)
            ;
        goto done;
    }
    if (buf == NULL) {
        buf = malloc(1);
        if (buf == NULL)
            goto done;
    }
    buf[len] = '\0';
    *out = buf;
    buf = NULL;
    *status = wst;
    rc = 0;
done:
    free(buf);
    if (pfd[0] != -1)
        close(pfd[0]);
    if (pfd[1] != -1)
        close(pfd[1]);
    if (devnull != -1)
        close(devnull);
    return rc;
}

/*
 * Legacy iptables: /proc/net/ip{,6}_tables_names lists the x_tables tables
 * in use. A "filter" table is a host firewall (its rules are only readable
 * with CAP_NET_ADMIN, so presence is what we can see); no file means the
 * legacy modules are not loaded.
 */
static enum posture_tri collect_firewall_legacy(const char *root)
{
    static const char *const files[] = {"/proc/net/ip_tables_names", "/proc/net/ip6_tables_names"};
    enum posture_tri v = POSTURE_NO;
    char *text, *line, *eol;
    size_t i;

    for (i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        text = collect_slurp(root, files[i], NULL);
        if (text == NULL) {
            if (errno != ENOENT) {
                log_debug("firewall: cannot read %s (%s): legacy tables unknown", files[i],
                          strerror(errno));
                v = POSTURE_UNKNOWN;
            }
            continue;
        }
        for (line = text; line != NULL && *line != '\0'; line = eol == NULL ? NULL : eol + 1) {
            eol = strchr(line, '\n');
            if (eol != NULL)
                *eol = '\0';
            collect_rtrim(line);
            if (strcmp(line, "filter") == 0) {
                log_debug("firewall: %s lists a filter table", files[i]);
                free(text);
                return POSTURE_YES;
            }
        }
        free(text);
    }
    return v;
}

/* A base chain hooked on input: (family, table, chain). */
struct collect_chain {
    const char *family, *table, *name;
};

static int collect_json_streq(json_t *o, const char *key, const char *want)
{
    const char *s = json_string_value(json_object_get(o, key));

    return s != NULL && strcmp(s, want) == 0;
}

/*
 * nft -j list ruleset (libnftables-json(5)): the host filters when a base
 * chain on the input hook drops by default or holds at least one rule (the
 * jumps of ufw and firewalld live there). Rules only in forward/NAT chains
 * (Docker) are not a host firewall.
 */
static enum posture_tri collect_nft_eval(const char *text)
{
    struct collect_chain chains[64];
    json_error_t jerr;
    json_t *root, *arr, *item, *o;
    size_t i, nchains = 0, k;
    enum posture_tri v = POSTURE_NO;

    root = json_loads(text, 0, &jerr);
    arr = json_object_get(root, "nftables");
    if (!json_is_array(arr)) {
        log_debug("firewall: nft -j output is not a ruleset: unknown");
        json_decref(root);
        return POSTURE_UNKNOWN;
    }
    json_array_foreach(arr, i, item)
    {
        o = json_object_get(item, "chain");
        if (!json_is_object(o) || !collect_json_streq(o, "hook", "input"))
            continue;
        if (collect_json_streq(o, "policy", "drop")) {
            log_debug("firewall: nft input chain %s has policy drop",
                      json_string_value(json_object_get(o, "name")));
            v = POSTURE_YES;
            goto out;
        }
        if (nchains < sizeof(chains) / sizeof(chains[0])) {
            chains[nchains].family = json_string_value(json_object_get(o, "family"));
            chains[nchains].table = json_string_value(json_object_get(o, "table"));
            chains[nchains].name = json_string_value(json_object_get(o, "name"));
            if (chains[nchains].family && chains[nchains].table && chains[nchains].name)
                nchains++;
        }
    }
    json_array_foreach(arr, i, item)
    {
        o = json_object_get(item, "rule");
        if (!json_is_object(o))
            continue;
        for (k = 0; k < nchains; k++) {
            if (collect_json_streq(o, "family", chains[k].family) &&
                collect_json_streq(o, "table", chains[k].table) &&
                collect_json_streq(o, "chain", chains[k].name)) {
                log_debug("firewall: nft input chain %s %s %s has rules", chains[k].family,
                          chains[k].table, chains[k].name);
                v = POSTURE_YES;
                goto out;
            }
        }
    }
    log_debug("firewall: nft ruleset has no rule or drop policy on the input hook");
out:
    json_decref(root);
    return v;
}

static enum posture_tri collect_firewall_nft(const char *root)
{
    static const char *const bins[] = {"/usr/sbin/nft", "/sbin/nft"};
    char path[PATH_MAX], a1[] = "-j", a2[] = "list", a3[] = "ruleset";
    char *argv[] = {path, a1, a2, a3, NULL};
    char *out = NULL;
    enum posture_tri v;
    int status = 0, found = 0;
    size_t i;

    for (i = 0; i < sizeof(bins) / sizeof(bins[0]) && !found; i++) {
        if (collect_path(root, bins[i], path, sizeof(path)) == 0 && access(path, X_OK) == 0)
            found = 1;
    }
    if (!found) {
        log_debug("firewall: no nft binary: nftables unknown");
        return POSTURE_UNKNOWN;
    }
    if (collect_run(argv, COLLECT_NFT_TIMEOUT_MS, COLLECT_NFT_OUTPUT_MAX, &out, &status) == -1) {
        log_debug("firewall: %s did not finish (timeout, output too large or not runnable): "
                  "unknown",
                  path);
        return POSTURE_UNKNOWN;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        /* Typically "Operation not permitted": listing needs CAP_NET_ADMIN. */
        log_debug("firewall: %s -j list ruleset failed (status %d; needs CAP_NET_ADMIN): "
                  "unknown",
                  path, status);
        free(out);
        return POSTURE_UNKNOWN;
    }
    v = collect_nft_eval(out);
    free(out);
    return v;
}

enum posture_tri collect_firewall(const char *root)
{
    enum posture_tri legacy, nft;

    legacy = collect_firewall_legacy(root);
    if (legacy == POSTURE_YES)
        return POSTURE_YES;
    nft = collect_firewall_nft(root);
    if (nft == POSTURE_YES)
        return POSTURE_YES;
    if (legacy == POSTURE_NO && nft == POSTURE_NO)
        return POSTURE_NO;
    return POSTURE_UNKNOWN;
}

/* ---- screen lock ------------------------------------------------------------ */

/* A dconf key the system policy may set and lock (-1: not set). */
struct collect_dconf {
    long lock_enabled; /* org/gnome/desktop/screensaver/lock-enabled: 0 or 1 */
    long idle_delay;   /* org/gnome/desktop/session/idle-delay: seconds, 0 = never */
    int lock_enabled_locked, idle_delay_locked;
};

/* "true"/"false", or "uint32 300"/"300" into *out. 0 or -1. */
static int collect_dconf_value(const char *v, int is_bool, long *out)
{
    char *end;
    long n;

    while (*v == ' ')
        v++;
    if (is_bool) {
        if (strcmp(v, "true") == 0)
            *out = 1;
        else if (strcmp(v, "false") == 0)
            *out = 0;
        else
            return -1;
        return 0;
    }
    if (strncmp(v, "uint32 ", 7) == 0)
        v += 7;
    errno = 0;
    n = strtol(v, &end, 10);
    if (errno != 0 || end == v || *end != '\0' || n < 0)
        return -1;
    *out = n;
    return 0;
}

/*
 * One keyfile of a dconf system db. Only sets a value this db has not set
 * yet from a later-sorted file (the caller reads files last-first, as
 * dconf-compile lets later files win) and only if no higher db set it.
 */
static void collect_dconf_keyfile(char *text, long *lock_enabled, long *idle_delay)
{
    char section[256] = "", *line, *eol, *eq;
    long v;

    for (line = text; line != NULL && *line != '\0'; line = eol == NULL ? NULL : eol + 1) {
        eol = strchr(line, '\n');
        if (eol != NULL)
            *eol = '\0';
        while (*line == ' ' || *line == '\t')
            line++;
        collect_rtrim(line);
        if (line[0] == '#' || line[0] == '\0')
            continue;
        if (line[0] == '[') {
            snprintf(section, sizeof(section), "%s", line);
            continue;
        }
        eq = strchr(line, '=');
        if (eq == NULL)
            continue;
        *eq = '\0';
        collect_rtrim(line);
        if (strcmp(section, "[org/gnome/desktop/screensaver]") == 0 &&
            strcmp(line, "lock-enabled") == 0 && *lock_enabled == -1 &&
            collect_dconf_value(eq + 1, 1, &v) == 0)
            *lock_enabled = v;
        if (strcmp(section, "[org/gnome/desktop/session]") == 0 &&
            strcmp(line, "idle-delay") == 0 && *idle_delay == -1 &&
            collect_dconf_value(eq + 1, 0, &v) == 0)
            *idle_delay = v;
    }
}

static void collect_dconf_locks(char *text, struct collect_dconf *d)
{
    char *line, *eol;

    for (line = text; line != NULL && *line != '\0'; line = eol == NULL ? NULL : eol + 1) {
        eol = strchr(line, '\n');
        if (eol != NULL)
            *eol = '\0';
        while (*line == ' ' || *line == '\t')
            line++;
        collect_rtrim(line);
        if (strcmp(line, "/org/gnome/desktop/screensaver/lock-enabled") == 0)
            d->lock_enabled_locked = 1;
        if (strcmp(line, "/org/gnome/desktop/session/idle-delay") == 0)
            d->idle_delay_locked = 1;
    }
}

/* One system db (/etc/dconf/db/<db>.d): its keyfiles and its locks. */
static void collect_dconf_db(const char *root, const char *db, struct collect_dconf *d)
{
    char rel[PATH_MAX], *text;
    char **files = NULL;
    long lock_enabled = -1, idle_delay = -1;
    int n, i;

    snprintf(rel, sizeof(rel), "/etc/dconf/db/%s.d", db);
    n = collect_list_dir(root, rel, 1024, &files);
    for (i = n - 1; i >= 0; i--) {
        snprintf(rel, sizeof(rel), "/etc/dconf/db/%s.d/%s", db, files[i]);
        text = collect_slurp(root, rel, NULL);
        if (text == NULL)
            continue; /* "locks" is a directory */
        collect_dconf_keyfile(text, &lock_enabled, &idle_delay);
        free(text);
    }
    collect_names_free(files, n);
    /* Databases listed first in the profile take precedence. */
    if (d->lock_enabled == -1)
        d->lock_enabled = lock_enabled;
    if (d->idle_delay == -1)
        d->idle_delay = idle_delay;
    snprintf(rel, sizeof(rel), "/etc/dconf/db/%s.d/locks", db);
    files = NULL;
    n = collect_list_dir(root, rel, 1024, &files);
    for (i = 0; i < n; i++) {
        snprintf(rel, sizeof(rel), "/etc/dconf/db/%s.d/locks/%s", db, files[i]);
        text = collect_slurp(root, rel, NULL);
        if (text == NULL)
            continue;
        collect_dconf_locks(text, d);
        free(text);
    }
    collect_names_free(files, n);
}

/*
 * Only an enforced policy is a fact about the device: a user may change
 * unlocked settings at will, and their own dconf db is not ours to read. So
 * the screen lock is "true" when the system dconf profile sets and locks
 * both lock-enabled=true and a non-zero idle-delay, "false" when it locks
 * either off, and "unknown" otherwise (including servers without a desktop).
 */
enum posture_tri collect_screen_lock(const char *root)
{
    struct collect_dconf d = {-1, -1, 0, 0};
    char *text, *line, *eol;
    int dbs = 0;

    text = collect_slurp(root, "/etc/dconf/profile/user", NULL);
    if (text == NULL) {
        log_debug("screen_lock: no /etc/dconf/profile/user (no enforced desktop policy): unknown");
        return POSTURE_UNKNOWN;
    }
    for (line = text; line != NULL && *line != '\0'; line = eol == NULL ? NULL : eol + 1) {
        eol = strchr(line, '\n');
        if (eol != NULL)
            *eol = '\0';
        collect_rtrim(line);
        if (strncmp(line, "system-db:", 10) == 0 && collect_name_ok(line + 10)) {
            collect_dconf_db(root, line + 10, &d);
            dbs++;
        }
    }
    free(text);
    if ((d.lock_enabled_locked && d.lock_enabled == 0) ||
        (d.idle_delay_locked && d.idle_delay == 0)) {
        log_debug("screen_lock: dconf policy locks the screen lock off");
        return POSTURE_NO;
    }
    if (d.lock_enabled_locked && d.lock_enabled == 1 && d.idle_delay_locked && d.idle_delay > 0) {
        log_debug("screen_lock: dconf policy enforces a lock after %ld s idle", d.idle_delay);
        return POSTURE_YES;
    }
    log_debug("screen_lock: %d dconf system db(s) do not enforce lock-enabled and idle-delay: "
              "unknown",
              dbs);
    return POSTURE_UNKNOWN;
}

/* ---- automatic updates ------------------------------------------------------ */

struct collect_apt {
    char unattended[32]; /* APT::Periodic::Unattended-Upgrade; "" = not set */
    char enable[32];     /* APT::Periodic::Enable */
};

/*
 * apt.conf(5) syntax: `A::B::C "v";` and the scoped form `A { B { C "v"; }; };`,
 * comments `//`, `#` and C-style. Keys are case-insensitive; later
 * assignments win. #include and #clear are not followed (treated as comments).
 */
static void collect_apt_parse(const char *s, struct collect_apt *a)
{
    char scope[512] = "", word[256] = "", key[800];
    size_t marks[16], depth = 0, n;
    int have_word = 0;

    while (*s != '\0') {
        if (isspace((unsigned char)*s)) {
            s++;
        } else if ((s[0] == '/' && s[1] == '/') || s[0] == '#') {
            s += strcspn(s, "\n");
        } else if (s[0] == '/' && s[1] == '*') {
            const char *e = strstr(s + 2, "*/");
            s = e == NULL ? s + strlen(s) : e + 2;
        } else if (*s == '{') {
            /* Enter scope "word"; a scope deeper than we track is ignored whole. */
            if (have_word && depth < sizeof(marks) / sizeof(marks[0])) {
                marks[depth++] = strlen(scope);
                n = strlen(scope);
                snprintf(scope + n, sizeof(scope) - n, "%s::", word);
            } else if (depth < sizeof(marks) / sizeof(marks[0])) {
                marks[depth++] = strlen(scope);
            }
            have_word = 0;
            s++;
        } else if (*s == '}') {
            if (depth > 0)
                scope[marks[--depth]] = '\0';
            have_word = 0;
            s++;
        } else if (*s == ';') {
            have_word = 0;
            s++;
        } else if (*s == '"') {
            const char *e = strchr(s + 1, '"');
            size_t vlen = e == NULL ? strlen(s + 1) : (size_t)(e - s - 1);

            if (have_word) {
                snprintf(key, sizeof(key), "%s%s", scope, word);
                if (strcasecmp(key, "APT::Periodic::Unattended-Upgrade") == 0)
                    snprintf(a->unattended, sizeof(a->unattended), "%.*s", (int)vlen, s + 1);
                else if (strcasecmp(key, "APT::Periodic::Enable") == 0)
                    snprintf(a->enable, sizeof(a->enable), "%.*s", (int)vlen, s + 1);
            }
            have_word = 0;
            s = e == NULL ? s + strlen(s) : e + 1;
        } else {
            n = strcspn(s, " \t\r\n{};\"");
            snprintf(word, sizeof(word), "%.*s", (int)n, s);
            have_word = 1;
            s += n;
        }
    }
}

/* apt reads apt.conf.d files named only [A-Za-z0-9_.-], without or with a ".conf" extension. */
static int collect_apt_part_ok(const char *name)
{
    const char *dot = strchr(name, '.');
    size_t i;

    for (i = 0; name[i] != '\0'; i++) {
        unsigned char c = (unsigned char)name[i];
        if (!(isalnum(c) || c == '_' || c == '-' || c == '.'))
            return 0;
    }
    if (dot == NULL)
        return 1;
    i = strlen(name);
    return i > 5 && strcmp(name + i - 5, ".conf") == 0;
}

/* "0", "1", "7": the APT::Periodic interval in days; -1 if not a number. */
static long collect_apt_days(const char *v)
{
    char *end;
    long n;

    errno = 0;
    n = strtol(v, &end, 10);
    if (errno != 0 || end == v || *end != '\0' || n < 0)
        return -1;
    return n;
}

enum posture_tri collect_auto_updates(const char *root)
{
    struct collect_apt a;
    char rel[PATH_MAX], *text;
    char **parts = NULL;
    long uu, en;
    int n, i;

    if (!collect_exists(root, "/usr/bin/apt-get")) {
        log_debug("auto_updates: no /usr/bin/apt-get (not an APT system): unknown");
        return POSTURE_UNKNOWN;
    }
    memset(&a, 0, sizeof(a));
    /* apt reads the parts directory in order, then apt.conf itself. */
    n = collect_list_dir(root, "/etc/apt/apt.conf.d", 4096, &parts);
    for (i = 0; i < n; i++) {
        if (!collect_apt_part_ok(parts[i]))
            continue;
        snprintf(rel, sizeof(rel), "/etc/apt/apt.conf.d/%s", parts[i]);
        text = collect_slurp(root, rel, NULL);
        if (text == NULL)
            continue;
        collect_apt_parse(text, &a);
        free(text);
    }
    collect_names_free(parts, n);
    text = collect_slurp(root, "/etc/apt/apt.conf", NULL);
    if (text != NULL)
        collect_apt_parse(text, &a);
    free(text);

    en = a.enable[0] == '\0' ? 1 : collect_apt_days(a.enable);
    uu = a.unattended[0] == '\0' ? 0 : collect_apt_days(a.unattended);
    if (en == -1 || uu == -1) {
        log_debug("auto_updates: APT::Periodic values \"%s\"/\"%s\" are not numbers: unknown",
                  a.enable, a.unattended);
        return POSTURE_UNKNOWN;
    }
    if (en == 0 || uu == 0) {
        log_debug("auto_updates: APT::Periodic::%s is %s",
                  en == 0 ? "Enable" : "Unattended-Upgrade",
                  en != 0 && a.unattended[0] == '\0' ? "not set (off)" : "\"0\" (off)");
        return POSTURE_NO;
    }
    /* apt.systemd.daily runs it only if it is installed. */
    if (!collect_exists(root, "/usr/bin/unattended-upgrade")) {
        log_debug("auto_updates: Unattended-Upgrade is on but unattended-upgrades is not "
                  "installed");
        return POSTURE_NO;
    }
    log_debug("auto_updates: unattended-upgrades every %ld day(s)", uu);
    return POSTURE_YES;
}

/* ---- patch age, uptime -------------------------------------------------------- */

int32_t collect_days_since_patch(const char *root, int64_t now)
{
    static const char *const dbs[] = {"/var/lib/dpkg/status", "/var/lib/rpm/rpmdb.sqlite",
                                      "/var/lib/rpm/Packages"};
    char path[PATH_MAX];
    struct stat st;
    int64_t age;
    size_t i;

    for (i = 0; i < sizeof(dbs) / sizeof(dbs[0]); i++) {
        if (collect_path(root, dbs[i], path, sizeof(path)) == -1 || stat(path, &st) == -1)
            continue;
        age = now - (int64_t)st.st_mtime;
        /* A database from the future by more than a day: the clock is wrong, not the patch. */
        if (age < -86400 || age / 86400 > POSTURE_MAX_DAYS_SINCE_PATCH) {
            log_debug("days_since_patch: %s mtime is implausible: unknown", dbs[i]);
            return -1;
        }
        log_debug("days_since_patch: %s changed %lld s ago", dbs[i], (long long)age);
        return age < 0 ? 0 : (int32_t)(age / 86400);
    }
    log_debug("days_since_patch: no package database: unknown");
    return -1;
}

int64_t collect_uptime(const char *root)
{
    char line[256], *end;
    double up;

    if (collect_read_line(root, "/proc/uptime", line, sizeof(line)) == -1)
        return -1;
    errno = 0;
    up = strtod(line, &end);
    if (errno != 0 || end == line || (*end != ' ' && *end != '\0') || !isfinite(up) || up < 0 ||
        up > (double)POSTURE_MAX_UPTIME_S)
        return -1;
    return (int64_t)up;
}

/* ---- the report ------------------------------------------------------------------ */

void collect_all(const char *root, int64_t now, struct posture *out)
{
    memset(out, 0, sizeof(*out));
    out->collected_at = now;
    snprintf(out->agent_version, sizeof(out->agent_version), "%s", ZTAGENT_VERSION);
    collect_os(root, out);
    collect_kernel(root, out);
    out->disk_encryption = collect_disk_encryption(root);
    out->firewall = collect_firewall(root);
    out->screen_lock = collect_screen_lock(root);
    out->auto_updates = collect_auto_updates(root);
    out->days_since_patch = collect_days_since_patch(root, now);
    out->uptime_seconds = collect_uptime(root);
}

static json_t *collect_tri_json(enum posture_tri v)
{
    if (v == POSTURE_YES)
        return json_true();
    if (v == POSTURE_NO)
        return json_false();
    return json_string("unknown");
}

/* json_object_set_new() that remembers a failure (it steals v either way). */
static void collect_set(json_t *o, const char *key, json_t *v, int *bad)
{
    if (v == NULL || json_object_set_new(o, key, v) == -1)
        *bad = 1;
}

char *collect_report_json(const struct posture *p, int pretty)
{
    char when[POSTURE_TIME_MAX];
    json_t *o = NULL, *os = NULL;
    char *out = NULL;
    int bad = 0;

    if (posture_time_format(p->collected_at, when, sizeof(when)) == -1)
        return NULL;
    o = json_object();
    os = json_object();
    if (o == NULL || os == NULL)
        goto done;
    if (p->has_device_id)
        collect_set(o, "device_id", json_string(p->device_id), &bad);
    collect_set(o, "collected_at", json_string(when), &bad);
    collect_set(o, "agent_version", json_string(p->agent_version), &bad);
    collect_set(os, "name", json_string(p->os_name), &bad);
    collect_set(os, "version", json_string(p->os_version), &bad);
    if (p->kernel[0] != '\0')
        collect_set(os, "kernel", json_string(p->kernel), &bad);
    collect_set(o, "os", os, &bad);
    os = NULL; /* owned by o from here, even on failure */
    collect_set(o, "disk_encryption", collect_tri_json(p->disk_encryption), &bad);
    collect_set(o, "firewall", collect_tri_json(p->firewall), &bad);
    collect_set(o, "screen_lock", collect_tri_json(p->screen_lock), &bad);
    collect_set(o, "auto_updates", collect_tri_json(p->auto_updates), &bad);
    collect_set(
        o, "days_since_patch",
        p->days_since_patch < 0 ? json_string("unknown") : json_integer(p->days_since_patch), &bad);
    if (p->uptime_seconds >= 0)
        collect_set(o, "uptime_seconds", json_integer(p->uptime_seconds), &bad);
    if (!bad)
        out = json_dumps(o, pretty ? JSON_INDENT(2) : JSON_COMPACT);
done:
    json_decref(os);
    json_decref(o);
    return out;
}
