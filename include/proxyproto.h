/*
 * proxyproto.h - the PROXY protocol version 2 header (HAProxy's binary
 * format, https://www.haproxy.org/download/2.6/doc/proxy-protocol.txt),
 * as sent by a load balancer in front of ztproxy before the TLS handshake.
 *
 * Pure: bytes in, result out. No sockets, no clock, no allocation, no
 * globals, so it is unit-tested and fuzzed (tests/fuzz/fuzz_proxyproto.c).
 *
 * Incremental: call proxyproto_parse() with everything received so far
 * (always from the first byte). It answers
 *   PROXYPROTO_MORE   not enough bytes yet; *need is how many bytes the
 *                     buffer must hold before another call can progress
 *                     (16 until the fixed part is complete, then the whole
 *                     header). A caller that reads exactly *need - len more
 *                     bytes never reads past the header, so what follows
 *                     (the TLS ClientHello) stays in the socket.
 *   PROXYPROTO_DONE   a complete, valid header of out->len bytes.
 *   PROXYPROTO_ERROR  not a valid v2 header; err says what and where
 *                     ("byte 12: ..."). Returned as early as the first
 *                     wrong byte: a peer that starts with a TLS record is
 *                     refused after one byte, not after a timeout.
 *
 * Only version 2 is accepted. A v1 text header ("PROXY TCP4 ...") is an
 * error that says so: configure the load balancer with send-proxy-v2.
 *
 * Accepted: command PROXY with family TCP over IPv4 or IPv6 (the client
 * address and port are returned), and command LOCAL (a connection the
 * balancer made itself, e.g. a health check: the addresses are ignored,
 * the connection's own endpoints stand). Refused: PROXY with an
 * unspecified, UNIX or datagram family (the client address would be
 * unknown - fail closed), unknown versions, commands or families, a
 * length beyond max, an address block longer than the length, TLVs that
 * overrun the header, and a PP2_TYPE_CRC32C TLV that does not match. Other
 * TLVs are skipped (bounds-checked, counted).
 */
#ifndef ZT_PROXYPROTO_H
#define ZT_PROXYPROTO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "conf.h"

#define PROXYPROTO_FIXED_LEN 16    /* signature (12), ver/cmd, fam/proto, length (2) */
#define PROXYPROTO_MAX_HEADER 4096 /* default bound on a whole header, TLVs included */
#define PROXYPROTO_ERR_MAX 160     /* room for any error line of this module */

enum proxyproto_status { PROXYPROTO_MORE = 0, PROXYPROTO_DONE, PROXYPROTO_ERROR };

enum proxyproto_command { PROXYPROTO_CMD_LOCAL = 0, PROXYPROTO_CMD_PROXY = 1 };

struct proxyproto_header {
    enum proxyproto_command command;
    /* PROXY: the client (src) and the address it connected to (dst),
     * sockaddr_in or sockaddr_in6 with the port set; addrlen their size.
     * LOCAL: src.ss_family == AF_UNSPEC and addrlen 0. */
    struct sockaddr_storage src;
    struct sockaddr_storage dst;
    socklen_t addrlen;
    size_t len;   /* the whole header: PROXYPROTO_FIXED_LEN + its length field */
    size_t ntlvs; /* TLVs seen (and skipped) */
};

/*
 * Parse buf[0..len) as the start of a v2 header no longer than max bytes
 * (PROXYPROTO_FIXED_LEN..65551; PROXYPROTO_MAX_HEADER is a good default).
 * out is filled on DONE only; *need is set on MORE (and DONE: out->len);
 * err (errlen bytes, PROXYPROTO_ERR_MAX is enough) on ERROR. Never reads
 * beyond buf[len - 1].
 */
enum proxyproto_status proxyproto_parse(const void *buf, size_t len, size_t max,
                                        struct proxyproto_header *out, size_t *need, char *err,
                                        size_t errlen);

/*
 * Is peer (AF_INET or AF_INET6; an IPv4-mapped IPv6 address counts as the
 * IPv4 address) inside one of nets[0..n)? 1 yes, 0 no (also for other
 * families and n == 0).
 */
int proxyproto_peer_trusted(const struct sockaddr *peer, const struct conf_cidr *nets, size_t n);

#endif
