/* TLS 1.2 for connections with mbedtls over memory buffers: forward-secret AEAD suites only. */
#ifndef TS_TLS_H
#define TS_TLS_H
#include <stddef.h>

#include "core/buf.h"

struct tls_ctx;
struct tls_conn;

/* Loads a PEM chain and key. NULL with a one-line reason in err on failure. */
struct tls_ctx *tls_ctx_new(const char *cert_file, const char *key_file, char *err, size_t errlen);
struct tls_ctx *tls_ctx_free(struct tls_ctx *ctx);          /* accepts NULL, returns NULL */

struct tls_conn *tls_conn_new(struct tls_ctx *ctx);        /* NULL on OOM */
struct tls_conn *tls_conn_free(struct tls_conn *c);        /* accepts NULL, returns NULL */

/* Feeds ciphertext from the socket. Appends decrypted application bytes to plain and any
 * handshake/alert bytes that must go back to the peer to out. Returns 0, or negative when the
 * session is dead (bad handshake, bad record, peer close_notify): the caller then closes. */
int tls_conn_feed(struct tls_conn *c, const char *in, size_t n, struct buf *plain, struct buf *out);

/* Encrypts application bytes, appending records to out. 0 or negative. */
int tls_conn_encrypt(struct tls_conn *c, const char *plain, size_t n, struct buf *out);

const char *tls_version_string(void);                      /* linked mbedtls version */
#endif
