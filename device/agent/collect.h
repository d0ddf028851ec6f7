/*
 * collect.h - what ztagent measures about the Linux device it runs on.
 *
 * Every collector reads system files relative to a root directory ("/" in
 * production, a fake tree in tests), so the same code runs against both.
 * Nothing is guessed: a fact that cannot be established is POSTURE_UNKNOWN
 * (or -1 for the numbers, "unknown" for the OS strings). Each collector logs
 * why it decided what it did at debug level (ztagent -v).
 *
 * The result is a struct posture (include/posture.h): the same plain data
 * the proxy parses the report into, so the report and the parser share one
 * contract. docs/ztagent.md documents each field's source.
 */
#ifndef ZT_AGENT_COLLECT_H
#define ZT_AGENT_COLLECT_H

#include <stddef.h>
#include <stdint.h>

#include "posture.h"

#define ZTAGENT_VERSION "0.1.0"

#define COLLECT_NFT_TIMEOUT_MS 5000        /* `nft -j list ruleset` is killed after this */
#define COLLECT_NFT_OUTPUT_MAX (16u << 20) /* ruleset JSON read at most */
#define COLLECT_FILE_MAX (1u << 20)        /* any one system file read at most */

/* /etc/os-release ID and VERSION_ID; "unknown" for either one that is absent or invalid. */
void collect_os(const char *root, struct posture *p);

/* uname(2) release when root is "/", else root/proc/sys/kernel/osrelease; "" if unknown. */
void collect_kernel(const char *root, struct posture *p);

/* Is the filesystem mounted on / on a dm-crypt device (through LVM, RAID, partitions)? */
enum posture_tri collect_disk_encryption(const char *root);

/* Are iptables (legacy) tables loaded, or does the nftables ruleset filter anything? */
enum posture_tri collect_firewall(const char *root);

/* Is an idle screen lock enforced by the system dconf policy (GNOME)? */
enum posture_tri collect_screen_lock(const char *root);

/* Does APT install updates unattended (APT::Periodic::Unattended-Upgrade)? */
enum posture_tri collect_auto_updates(const char *root);

/* Whole days since the package database last changed; -1 if unknown. */
int32_t collect_days_since_patch(const char *root, int64_t now);

/* Seconds since boot from root/proc/uptime; -1 if unknown (the key is then omitted). */
int64_t collect_uptime(const char *root);

/* All of the above, with collected_at = now and agent_version = ZTAGENT_VERSION. */
void collect_all(const char *root, int64_t now, struct posture *out);

/*
 * The report for POST /.zt/device/posture (docs/posture.md): a NUL terminated
 * JSON object, indented when pretty is non-zero. Returns a string the caller
 * frees with free(), or NULL on allocation failure or if p cannot be
 * represented (e.g. collected_at out of range).
 */
char *collect_report_json(const struct posture *p, int pretty);

#endif
