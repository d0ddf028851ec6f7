/*
 * identity.c - device id and thumbprint from the client certificate.
 */
#include <string.h>

#include <openssl/evp.h>
#include <openssl/x509v3.h>

#include "device_id.h"

static int device_id_valid(const unsigned char *s, size_t n)
{
    size_t i;

    if (n == 0 || n > DEVICE_ID_MAX)
        return 0;
    for (i = 0; i < n; i++) {
        unsigned char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == ':' || c == '-'))
            return 0;
    }
    return 1;
}

static int from_san_uri(X509 *cert, const char *prefix, char *out, const char **why)
{
    GENERAL_NAMES *names;
    size_t plen = strlen(prefix);
    int i, found = 0, rc = -1;

    names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    if (names == NULL) {
        *why = "certificate has no subjectAltName";
        return -1;
    }
    *why = "no URI subjectAltName with the device prefix";
    for (i = 0; i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);
        const unsigned char *d;
        size_t n;

        if (gn->type != GEN_URI)
            continue;
        d = ASN1_STRING_get0_data(gn->d.uniformResourceIdentifier);
        n = (size_t)ASN1_STRING_length(gn->d.uniformResourceIdentifier);
        if (n < plen || memcmp(d, prefix, plen) != 0)
            continue;
        /* Two URIs with the prefix would make the identity ambiguous. */
        if (found) {
            *why = "more than one device URI in subjectAltName";
            rc = -1;
            break;
        }
        found = 1;
        if (!device_id_valid(d + plen, n - plen)) {
            *why = "device id in URI is empty, too long or has invalid characters";
            break;
        }
        memcpy(out, d + plen, n - plen);
        out[n - plen] = '\0';
        rc = 0;
    }
    GENERAL_NAMES_free(names);
    return rc;
}

static int from_subject_cn(X509 *cert, char *out, const char **why)
{
    X509_NAME *subj = X509_get_subject_name(cert);
    const ASN1_STRING *s;
    int idx;

    idx = X509_NAME_get_index_by_NID(subj, NID_commonName, -1);
    if (idx < 0) {
        *why = "certificate subject has no CN";
        return -1;
    }
    if (X509_NAME_get_index_by_NID(subj, NID_commonName, idx) >= 0) {
        *why = "certificate subject has more than one CN";
        return -1;
    }
    s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, idx));
    if (!device_id_valid(ASN1_STRING_get0_data(s), (size_t)ASN1_STRING_length(s))) {
        *why = "subject CN is empty, too long or has invalid characters";
        return -1;
    }
    memcpy(out, ASN1_STRING_get0_data(s), (size_t)ASN1_STRING_length(s));
    out[ASN1_STRING_length(s)] = '\0';
    return 0;
}

static int from_serial(X509 *cert, char *out, const char **why)
{
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL);
    char *hex;
    int rc = -1;

    if (bn == NULL) {
        *why = "cannot read serial number";
        return -1;
    }
    hex = BN_bn2hex(bn);
    if (hex != NULL && device_id_valid((unsigned char *)hex, strlen(hex))) {
        memcpy(out, hex, strlen(hex) + 1);
        rc = 0;
    } else {
        *why = "serial number unusable as device id";
    }
    OPENSSL_free(hex);
    BN_free(bn);
    return rc;
}

int device_id_from_cert(X509 *cert, enum device_id_source src, const char *prefix, char *out,
                        const char **why)
{
    if (cert == NULL) {
        *why = "no client certificate";
        return -1;
    }
    switch (src) {
    case DEVICE_ID_SAN_URI:
        return from_san_uri(cert, prefix, out, why);
    case DEVICE_ID_SUBJECT_CN:
        return from_subject_cn(cert, out, why);
    case DEVICE_ID_SERIAL:
        return from_serial(cert, out, why);
    }
    *why = "unknown device id source";
    return -1;
}

int device_cert_thumbprint(X509 *cert, unsigned char out[32])
{
    unsigned int n = 0;

    if (X509_digest(cert, EVP_sha256(), out, &n) != 1 || n != 32)
        return -1;
    return 0;
}

void device_thumbprint_hex(const unsigned char tp[32], char out[65])
{
    static const char hx[] = "0123456789abcdef";
    int i;

    for (i = 0; i < 32; i++) {
        out[2 * i] = hx[tp[i] >> 4];
        out[2 * i + 1] = hx[tp[i] & 15];
    }
    out[64] = '\0';
}
