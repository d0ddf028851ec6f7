/*
 * proxyproto.c - the PROXY protocol v2 header parser (include/proxyproto.h).
 *
 * Layout (all integers big-endian):
 *
 *   0..11  signature  0D 0A 0D 0A 00 0D 0A 51 55 49 54 0A
 *   12     version (high nibble, 2) | command (low nibble: 0 LOCAL, 1 PROXY)
 *   13     family (high: 0 UNSPEC, 1 INET, 2 INET6, 3 UNIX)
 *          | transport (low: 0 UNSPEC, 1 STREAM, 2 DGRAM)
 *   14..15 length of what follows
 *   16..   address block (INET 12, INET6 36, UNIX 216 bytes), then TLVs:
 *          type (1), length (2), value
 *
 * Every check is made as soon as the bytes it needs are there, so a peer
 * that is not a load balancer (a TLS ClientHello starts with 0x16, an HTTP
 * request with a letter) is refused on its first byte.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "proxyproto.h"

static const uint8_t pp2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                    0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

#define PP2_FAM_UNSPEC 0x0
#define PP2_FAM_INET 0x1
#define PP2_FAM_INET6 0x2
#define PP2_FAM_UNIX 0x3
#define PP2_TRANS_STREAM 0x1
#define PP2_TYPE_CRC32C 0x03
#define PP2_MAX_LEN (PROXYPROTO_FIXED_LEN + 65535)

static const char *const fam_names[] = {"UNSPEC", "INET", "INET6", "UNIX"};
static const char *const trans_names[] = {"UNSPEC", "STREAM", "DGRAM"};

/* What the peer sent instead, for the message: the usual suspects. */
static const char *first_byte_hint(const uint8_t *b, size_t len)
{
    if (len >= 1 && b[0] == 0x16)
        return " (a TLS handshake record: the peer sent no PROXY header)";
    if (len >= 6 && memcmp(b, "PROXY ", 6) == 0)
        return " (a PROXY protocol v1 text header: only v2 is accepted, use send-proxy-v2)";
    if (len >= 1 && b[0] == 'P')
        return " (text: a PROXY protocol v1 header? only v2 is accepted)";
    if (len >= 1 && b[0] >= 'A' && b[0] <= 'Z')
        return " (text: plain HTTP? the peer sent no PROXY header)";
    return "";
}

static size_t fam_addr_len(unsigned fam)
{
    switch (fam) {
    case PP2_FAM_INET:
        return 12;
    case PP2_FAM_INET6:
        return 36;
    case PP2_FAM_UNIX:
        return 216;
    default:
        return 0;
    }
}

/* CRC-32C (Castagnoli, reflected 0x82F63B78), bitwise: headers are small. */
static uint32_t crc32c_update(uint32_t crc, const uint8_t *p, size_t n)
{
    size_t i;
    int k;

    for (i = 0; i < n; i++) {
        crc ^= p[i];
        for (k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
    }
    return crc;
}

/* The checksum of the header with the 4 value bytes at off zeroed. */
static uint32_t header_crc32c(const uint8_t *b, size_t len, size_t off)
{
    static const uint8_t zero[4] = {0, 0, 0, 0};
    uint32_t crc = 0xFFFFFFFFu;

    crc = crc32c_update(crc, b, off);
    crc = crc32c_update(crc, zero, 4);
    crc = crc32c_update(crc, b + off + 4, len - off - 4);
    return crc ^ 0xFFFFFFFFu;
}

enum proxyproto_status proxyproto_parse(const void *buf, size_t len, size_t max,
                                        struct proxyproto_header *out, size_t *need, char *err,
                                        size_t errlen)
{
    const uint8_t *b = buf;
    struct proxyproto_header h;
    size_t i, total, plen, alen, off;
    unsigned ver, cmd, fam, trans;

    if (max < PROXYPROTO_FIXED_LEN)
        max = PROXYPROTO_FIXED_LEN;
    if (max > PP2_MAX_LEN)
        max = PP2_MAX_LEN;
    /* The signature, byte by byte as it arrives. */
    for (i = 0; i < len && i < sizeof(pp2_sig); i++) {
        if (b[i] != pp2_sig[i]) {
            snprintf(err, errlen,
                     "byte %zu: expected the PROXY protocol v2 signature "
                     "(0D 0A 0D 0A 00 0D 0A 51 55 49 54 0A), got 0x%02X%s",
                     i, b[i], first_byte_hint(b, len));
            return PROXYPROTO_ERROR;
        }
    }
    if (len > 12) {
        ver = b[12] >> 4;
        cmd = b[12] & 0xF;
        if (ver != 2) {
            snprintf(err, errlen, "byte 12: version %u, expected 2", ver);
            return PROXYPROTO_ERROR;
        }
        if (cmd != PROXYPROTO_CMD_LOCAL && cmd != PROXYPROTO_CMD_PROXY) {
            snprintf(err, errlen, "byte 12: command %u, expected 0 (LOCAL) or 1 (PROXY)", cmd);
            return PROXYPROTO_ERROR;
        }
    }
    if (len > 13) {
        cmd = b[12] & 0xF;
        fam = b[13] >> 4;
        trans = b[13] & 0xF;
        if (fam > PP2_FAM_UNIX || trans > 2) {
            snprintf(err, errlen, "byte 13: address family %u / transport %u, expected 0-3 / 0-2",
                     fam, trans);
            return PROXYPROTO_ERROR;
        }
        /* LOCAL: the balancer's own connection, whatever the family says
         * (the spec: the receiver ignores it). PROXY: we must learn the
         * client's IP address, or refuse. */
        if (cmd == PROXYPROTO_CMD_PROXY &&
            !((fam == PP2_FAM_INET || fam == PP2_FAM_INET6) && trans == PP2_TRANS_STREAM)) {
            snprintf(err, errlen,
                     "byte 13: PROXY command with %s over %s, expected TCP over IPv4 or IPv6 "
                     "(the client address would be unknown)",
                     trans_names[trans], fam_names[fam]);
            return PROXYPROTO_ERROR;
        }
    }
    if (len < PROXYPROTO_FIXED_LEN) {
        *need = PROXYPROTO_FIXED_LEN;
        return PROXYPROTO_MORE;
    }
    cmd = b[12] & 0xF;
    fam = b[13] >> 4;
    plen = ((size_t)b[14] << 8) | b[15];
    total = PROXYPROTO_FIXED_LEN + plen;
    if (total > max) {
        snprintf(err, errlen, "bytes 14-15: length %zu makes a %zu-byte header, the limit is %zu",
                 plen, total, max);
        return PROXYPROTO_ERROR;
    }
    alen = fam_addr_len(fam);
    if (plen < alen) {
        snprintf(err, errlen,
                 "bytes 14-15: length %zu is shorter than the %zu-byte %s address block", plen,
                 alen, fam_names[fam]);
        return PROXYPROTO_ERROR;
    }
    if (len < total) {
        *need = total;
        return PROXYPROTO_MORE;
    }

    memset(&h, 0, sizeof(h));
    h.command = (enum proxyproto_command)cmd;
    h.len = total;
    if (cmd == PROXYPROTO_CMD_PROXY && fam == PP2_FAM_INET) {
        struct sockaddr_in *s = (struct sockaddr_in *)&h.src, *d = (struct sockaddr_in *)&h.dst;
        s->sin_family = d->sin_family = AF_INET;
        memcpy(&s->sin_addr, b + 16, 4);
        memcpy(&d->sin_addr, b + 20, 4);
        memcpy(&s->sin_port, b + 24, 2);
        memcpy(&d->sin_port, b + 26, 2);
        h.addrlen = sizeof(struct sockaddr_in);
    } else if (cmd == PROXYPROTO_CMD_PROXY) {
        struct sockaddr_in6 *s = (struct sockaddr_in6 *)&h.src, *d = (struct sockaddr_in6 *)&h.dst;
        s->sin6_family = d->sin6_family = AF_INET6;
        memcpy(&s->sin6_addr, b + 16, 16);
        memcpy(&d->sin6_addr, b + 32, 16);
        memcpy(&s->sin6_port, b + 48, 2);
        memcpy(&d->sin6_port, b + 50, 2);
        h.addrlen = sizeof(struct sockaddr_in6);
    } else {
        h.src.ss_family = AF_UNSPEC;
        h.dst.ss_family = AF_UNSPEC;
    }

    /* TLVs: skipped, but each must lie inside the header. */
    for (off = PROXYPROTO_FIXED_LEN + alen; off < total;) {
        size_t vlen;
        unsigned type;

        if (total - off < 3) {
            snprintf(err, errlen, "byte %zu: %zu bytes left, too short for a TLV (3 bytes)", off,
                     total - off);
            return PROXYPROTO_ERROR;
        }
        type = b[off];
        vlen = ((size_t)b[off + 1] << 8) | b[off + 2];
        if (vlen > total - off - 3) {
            snprintf(err, errlen,
                     "byte %zu: TLV type 0x%02X of %zu bytes overruns the header by %zu", off, type,
                     vlen, vlen - (total - off - 3));
            return PROXYPROTO_ERROR;
        }
        if (type == PP2_TYPE_CRC32C) {
            uint32_t want, got;
            if (vlen != 4) {
                snprintf(err, errlen, "byte %zu: CRC32C TLV of %zu bytes, expected 4", off, vlen);
                return PROXYPROTO_ERROR;
            }
            want = ((uint32_t)b[off + 3] << 24) | ((uint32_t)b[off + 4] << 16) |
                   ((uint32_t)b[off + 5] << 8) | b[off + 6];
            got = header_crc32c(b, total, off + 3);
            if (want != got) {
                snprintf(err, errlen, "byte %zu: CRC32C 0x%08X does not match the header (0x%08X)",
                         off, want, got);
                return PROXYPROTO_ERROR;
            }
        }
        h.ntlvs++;
        off += 3 + vlen;
    }
    *out = h;
    *need = total;
    return PROXYPROTO_DONE;
}

int proxyproto_peer_trusted(const struct sockaddr *peer, const struct conf_cidr *nets, size_t n)
{
    static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    uint8_t addr[16];
    int family;
    size_t i;

    if (peer == NULL)
        return 0;
    if (peer->sa_family == AF_INET) {
        family = AF_INET;
        memcpy(addr, &((const struct sockaddr_in *)peer)->sin_addr, 4);
    } else if (peer->sa_family == AF_INET6) {
        const uint8_t *a = ((const struct sockaddr_in6 *)peer)->sin6_addr.s6_addr;
        if (memcmp(a, v4mapped, 12) == 0) {
            family = AF_INET;
            memcpy(addr, a + 12, 4);
        } else {
            family = AF_INET6;
            memcpy(addr, a, 16);
        }
    } else {
        return 0;
    }
    for (i = 0; i < n; i++) {
        const struct conf_cidr *r = &nets[i];
        unsigned full = r->bits / 8, rest = r->bits % 8;

        if (r->family != family || r->bits > (family == AF_INET ? 32u : 128u))
            continue;
        if (memcmp(r->addr, addr, full) != 0)
            continue;
        if (rest != 0) {
            uint8_t m = (uint8_t)(0xff << (8 - rest));
            if ((r->addr[full] & m) != (addr[full] & m))
                continue;
        }
        return 1;
    }
    return 0;
}
