/*
 * device_id.h - who the device is, read from its client certificate.
 *
 * Pure: takes an X509, returns strings. Knows nothing of sockets or HTTP.
 */
#ifndef ZT_DEVICE_ID_H
#define ZT_DEVICE_ID_H

#include <stddef.h>

#include <openssl/x509.h>

#define DEVICE_ID_MAX 128

enum device_id_source {
    DEVICE_ID_SAN_URI = 0, /* URI SAN starting with a prefix; the id is the rest */
    DEVICE_ID_SUBJECT_CN,  /* the subject's common name */
    DEVICE_ID_SERIAL       /* the serial number, upper-case hex */
};

/*
 * Read the device id. out must hold DEVICE_ID_MAX + 1 bytes. An id must be
 * 1..DEVICE_ID_MAX characters of [A-Za-z0-9._:-]. Returns 0, or -1 with *why
 * set to a static reason (for the log line that refuses the connection).
 * prefix is only used for DEVICE_ID_SAN_URI.
 */
int device_id_from_cert(X509 *cert, enum device_id_source src, const char *prefix, char *out,
                        const char **why);

/* SHA-256 of the certificate's DER encoding: 32 bytes into out. 0 or -1. */
int device_cert_thumbprint(X509 *cert, unsigned char out[32]);

/* Lower-case hex of a thumbprint: out must hold 65 bytes. */
void device_thumbprint_hex(const unsigned char tp[32], char out[65]);

#endif
