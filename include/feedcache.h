/*
 * feedcache.h - the last good inventory feed fetched from a URL, kept in the
 * state directory, so that a proxy restarted while the feed server is down
 * still knows the devices (for as long as max_stale allows).
 *
 * Two files in the state directory, both 0600:
 *   inventory-feed.cache  the body exactly as fetched (JSON or NDJSON)
 *   inventory-feed.meta   one JSON object describing it:
 *     {"url": "...", "etag": "...", "last_modified": "...",
 *      "fetched_at": 1700000000, "length": 1234, "sha256": "<64 hex>"}
 * The body is written first, then the meta (each atomically: temp file,
 * fsync, rename, fsync of the directory). The meta names the body's length
 * and SHA-256, so a crash between the two leaves a pair that is refused at
 * load, never a body with another body's validators or age.
 *
 * fetched_at is when the body was last confirmed current by the server (a
 * 200 with it, or a 304 for it): a cache loaded at start keeps that age, so
 * max_stale still fails closed across a restart.
 *
 * Threads: every function does blocking file I/O. Call them from a loader
 * thread or at start, never from an event loop. No globals.
 */
#ifndef ZT_FEEDCACHE_H
#define ZT_FEEDCACHE_H

#include <stddef.h>
#include <stdint.h>

#define FEEDCACHE_BODY "inventory-feed.cache"
#define FEEDCACHE_META "inventory-feed.meta"
#define FEEDCACHE_URL_MAX 2048       /* bytes of the feed URL */
#define FEEDCACHE_VALIDATOR_MAX 1024 /* bytes of an ETag or Last-Modified value */
#define FEEDCACHE_META_MAX 8192      /* bytes of the meta file */

struct feedcache_meta {
    char url[FEEDCACHE_URL_MAX + 1];
    char etag[FEEDCACHE_VALIDATOR_MAX + 1];          /* "" none */
    char last_modified[FEEDCACHE_VALIDATOR_MAX + 1]; /* "" none */
    int64_t fetched_at;                              /* Unix seconds */
    uint64_t length;                                 /* bytes of the body */
    unsigned char sha256[32];                        /* of the body */
};

/*
 * Parse meta file text (untrusted: it is read back from disk). Strict: an
 * object with exactly the keys above (etag and last_modified may be absent
 * or ""), strings without control characters within the limits, fetched_at
 * an integer 0..2^40, length an integer >= 0, sha256 64 lower-case hex
 * digits. 0 and *out filled; -1 with "name: $.key: what was expected" in
 * err (out is then zeroed).
 */
int feedcache_meta_parse(const char *text, size_t len, const char *name, struct feedcache_meta *out,
                         char *err, size_t errlen);

/*
 * Store body[0..len) fetched from url with its validators (NULL or "":
 * none) as confirmed at fetched_at, replacing any earlier cache. 0 ok, -1
 * with the reason in err (the previous cache may then be gone or stale,
 * never mismatched: see above).
 */
int feedcache_save(const char *dir, const char *url, const char *etag, const char *last_modified,
                   int64_t fetched_at, const char *body, size_t len, char *err, size_t errlen);

/*
 * The server confirmed the cached body again (a 304, or a 200 with the same
 * bytes): rewrite only the meta with fetched_at and, when not NULL, new
 * validators. Only if the meta is for url. 0 ok, 1 no usable cache for url
 * (nothing written), -1 with err.
 */
int feedcache_touch(const char *dir, const char *url, const char *etag, const char *last_modified,
                    int64_t fetched_at, char *err, size_t errlen);

/*
 * Load the cache for url: the meta into *meta and the body into *body
 * (malloc'd, NUL-terminated, caller frees; *len its length). max: the
 * largest body accepted. 0 ok; 1 no cache (either file missing); 2 a cache
 * for another URL (ignored); -1 unusable (bad meta, wrong length or hash,
 * too big, unreadable) with the reason in err. On anything but 0, *body is
 * NULL.
 */
int feedcache_load(const char *dir, const char *url, size_t max, struct feedcache_meta *meta,
                   char **body, size_t *len, char *err, size_t errlen);

#endif
