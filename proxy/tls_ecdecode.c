/*
 * tls_ecdecode.c - OpenSSL 3.0: decode EC public keys of certificates
 * without building a decoder chain each time.
 *
 * Every certificate a client sends is parsed with d2i_X509(), which in
 * OpenSSL 3.0 decodes its public key eagerly through
 * OSSL_DECODER_CTX_new_for_pkey(): a decoder chain built from scratch by
 * walking every decoder of every provider. Measured here with callgrind,
 * that is about 1.0 M instructions per certificate, ~2 M per full mutual-TLS
 * handshake (leaf + the CA certificate most clients send), a third of the
 * whole handshake. OpenSSL 3.1 caches the chain; Debian 12 ships 3.0.
 *
 * OpenSSL 3.0 takes its older, direct decoder (the EVP_PKEY_ASN1_METHOD of
 * the key type, ~0.1 M instructions) when an ENGINE is registered for the
 * key type's EVP_PKEY_METHOD (crypto/x509/x_pubkey.c, x509_pubkey_decode()).
 * This registers such an ENGINE for EC keys whose method is OpenSSL's own
 * built-in EC method (EVP_PKEY_meth_find(EVP_PKEY_EC)): no code of ours does
 * any cryptography, the same OpenSSL EC implementation signs, verifies and
 * derives; only the public-key decoding takes the direct route. It is done
 * once at start, before any thread, and only on OpenSSL 3.0.x.
 *
 * The ENGINE API is deprecated in 3.0, hence its own file.
 */
#define OPENSSL_SUPPRESS_DEPRECATED 1

#include <openssl/crypto.h>
#include <openssl/engine.h>
#include <openssl/evp.h>

#include "tls.h"

static const int ec_nids[] = {EVP_PKEY_EC};

static int ec_pkey_meths(ENGINE *e, EVP_PKEY_METHOD **pmeth, const int **nids, int nid)
{
    (void)e;
    if (pmeth == NULL) {
        *nids = ec_nids;
        return 1;
    }
    *pmeth = nid == EVP_PKEY_EC ? (EVP_PKEY_METHOD *)EVP_PKEY_meth_find(EVP_PKEY_EC) : NULL;
    return *pmeth != NULL;
}

int tls_ec_decode_shortcut(void)
{
    ENGINE *e;
    int ok;

    if (OpenSSL_version_num() >= 0x30100000L || OpenSSL_version_num() < 0x30000000L)
        return 0; /* not needed (3.1 caches decoders) or not applicable */
    if (EVP_PKEY_meth_find(EVP_PKEY_EC) == NULL)
        return -1;
    e = ENGINE_new();
    if (e == NULL)
        return -1;
    ok = ENGINE_set_id(e, "ztproxy-ec-decode") &&
         ENGINE_set_name(e, "ztproxy: OpenSSL's built-in EC method, direct public-key decoding") &&
         ENGINE_set_pkey_meths(e, ec_pkey_meths) && ENGINE_add(e) &&
         ENGINE_set_default_pkey_meths(e);
    ENGINE_free(e); /* the engine list and the default table hold their own references */
    return ok ? 1 : -1;
}
