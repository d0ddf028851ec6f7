/*
 * inventory.h - the device inventory: what the company's MDM knows.
 *
 * Pure: a feed (bytes) in, an immutable, refcounted snapshot out. The proxy
 * fetches the feed (file or HTTP), calls inventory_parse() off the hot path
 * and publishes the snapshot with an atomic pointer swap; readers take no
 * lock. A snapshot is never changed after inventory_parse() returns. The
 * format is documented in docs/device-trust.md.
 */
#ifndef ZT_INVENTORY_H
#define ZT_INVENTORY_H

#include <stddef.h>
#include <stdint.h>

#include "device_id.h"

#define INVENTORY_MAX_RECORDS 1000000
#define INVENTORY_MAX_BYTES (512u * 1024 * 1024) /* whole feed */
#define INVENTORY_MAX_LINE (64 * 1024)           /* one NDJSON line */
#define INVENTORY_SERIAL_MAX 128
#define INVENTORY_OWNER_MAX 256
#define INVENTORY_PLATFORM_MAX 32
#define INVENTORY_OS_VERSION_MAX 64
#define INVENTORY_MODEL_MAX 128
#define INVENTORY_MAX_ATTRS 64     /* extra fields per record */
#define INVENTORY_ATTR_NAME_MAX 64 /* [A-Za-z0-9_.-] */
#define INVENTORY_ATTR_VALUE_MAX 1024

struct inventory;        /* opaque, immutable snapshot */
struct inventory_record; /* opaque, owned by its snapshot */

enum inventory_status {
    INVENTORY_STATUS_NONE = 0, /* only as "no override" (see score.h) */
    INVENTORY_STATUS_ACTIVE,
    INVENTORY_STATUS_LOST,
    INVENTORY_STATUS_STOLEN,
    INVENTORY_STATUS_RETIRED
};

enum inventory_attr_type {
    INVENTORY_ATTR_STRING = 0,
    INVENTORY_ATTR_INTEGER,
    INVENTORY_ATTR_REAL,
    INVENTORY_ATTR_BOOL
};

/* An extra field of a record. Pointers live as long as the snapshot. */
struct inventory_attr {
    const char *name;
    enum inventory_attr_type type;
    const char *str; /* STRING: the value (NUL terminated, no NUL inside) */
    int64_t i;       /* INTEGER; also BOOL as 0/1 */
    double real;     /* REAL */
};

/* Flags for inventory_parse(). */
#define INVENTORY_ALLOW_EMPTY 0x1 /* accept 0 records even if prev had some */

/*
 * Parse, validate and index a feed: a JSON array of record objects, or
 * NDJSON (one object per line; blank lines ignored), told apart by the
 * first non-space byte ('[' or '{'). Strict: any bad record refuses the
 * whole feed, and so do duplicate device ids.
 *
 * prev (may be NULL) is the snapshot in use: a feed with no records is
 * refused when prev has records, unless flags has INVENTORY_ALLOW_EMPTY;
 * the new version is prev's + 1. now (Unix seconds) is recorded as the load
 * time. On success returns 0 and *out (refcount 1: inventory_unref()). On
 * failure returns -1, leaves *out untouched, and writes one line into err
 * naming the record and field, e.g.
 *   inventory: $[17].status: expected "active", "lost", "stolen" or "retired", got "gone"
 *   inventory: line 18: $.managed: expected true or false, got "yes"
 */
int inventory_parse(const char *data, size_t len, const struct inventory *prev, unsigned flags,
                    int64_t now, struct inventory **out, char *err, size_t errlen);

/* Take / drop a reference. Thread-safe; the last unref frees. NULL ok. */
struct inventory *inventory_ref(struct inventory *inv);
void inventory_unref(struct inventory *inv);

size_t inventory_count(const struct inventory *inv);
int64_t inventory_loaded_at(const struct inventory *inv); /* the now given to _parse */
uint64_t inventory_version(const struct inventory *inv);  /* 1, 2, ... per successful load */
/* SHA-256 of the feed bytes: equal hashes, equal feeds. out holds 32 bytes. */
void inventory_hash(const struct inventory *inv, unsigned char out[32]);
/* The same as lower-case hex: out holds 65 bytes. */
void inventory_hash_hex(const struct inventory *inv, char out[65]);

/*
 * O(1) lookup by device id (len bytes, no NUL needed). NULL: not in the
 * inventory. The record lives as long as the snapshot.
 */
const struct inventory_record *inventory_lookup(const struct inventory *inv, const char *id,
                                                size_t len);
/* Records in feed order, for listings: 0 <= i < inventory_count(). */
const struct inventory_record *inventory_record_at(const struct inventory *inv, size_t i);

const char *inventory_record_id(const struct inventory_record *r);
const char *inventory_record_serial(const struct inventory_record *r);
const char *inventory_record_owner(const struct inventory_record *r);
const char *inventory_record_platform(const struct inventory_record *r); /* lower case */
const char *inventory_record_os_version(const struct inventory_record *r);
const char *inventory_record_model(const struct inventory_record *r);
enum inventory_status inventory_record_status(const struct inventory_record *r);
int inventory_record_managed(const struct inventory_record *r);      /* 1 or 0 */
int64_t inventory_record_enrolled(const struct inventory_record *r); /* Unix seconds */

/* Extra fields, in feed order. 0 or -1 (i out of range). */
size_t inventory_record_attr_count(const struct inventory_record *r);
int inventory_record_attr_at(const struct inventory_record *r, size_t i,
                             struct inventory_attr *out);
/* Extra field by exact name. 0, or -1 if the record has no such field. */
int inventory_record_attr_find(const struct inventory_record *r, const char *name,
                               struct inventory_attr *out);

/*
 * A record's attributes as text, for a caller that copies them per request
 * (the verdict of devtrust_evaluate()), prepared once when the snapshot is
 * parsed: "platform", "os_version", "model", "managed" ("true"/"false"),
 * then the extra fields in feed order (a null field is absent), integers
 * as "%lld", reals as "%.17g", booleans "true"/"false". Strings are NUL
 * terminated and live as long as the snapshot; lengths leave the NUL out.
 * inventory_record_texts() fills out[] with up to max of them, the first
 * being "platform", and returns how many it filled; a record has at most
 * INVENTORY_TEXT_MAX.
 */
#define INVENTORY_TEXT_MAX (INVENTORY_MAX_ATTRS + 4)
struct inventory_text {
    const char *name;
    const char *value;
    size_t name_len;
    size_t value_len;
};
size_t inventory_record_texts(const struct inventory_record *r, struct inventory_text *out,
                              size_t max);
/* strlen(inventory_record_owner(r)), precomputed. */
size_t inventory_record_owner_len(const struct inventory_record *r);

/* "active", "lost", "stolen", "retired" ("none" for NONE). */
const char *inventory_status_name(enum inventory_status s);
/* The reverse, for the admin API: 0, or -1 for anything else (incl. "none"). */
int inventory_status_parse(const char *s, enum inventory_status *out);

#endif
