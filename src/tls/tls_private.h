/*
 * tls/tls_private.h: helpers shared by the files of tls/ only.
 */
#ifndef POSTERN_TLS_PRIVATE_H
#define POSTERN_TLS_PRIVATE_H

#include <openssl/ssl.h>

#include "util/util.h"

/*
 * util_err() of the text, with ": <reason>" appended from the OpenSSL
 * error queue (which is then emptied), or ": unknown error" when it is
 * empty.
 */
const char *tls_err_ssl(const char *fmt, ...) UTIL_PRINTF(1, 2);

/*
 * "TLSv1.2" or "TLSv1.3" (NULL or "": TLSv1.2) to a protocol version for
 * SSL_CTX_set_min_proto_version; 0 or -1 with *err_out.
 */
int	tls_parse_version(const char *s, int *out, const char **err_out);

/* A passphrase callback that refuses, so a locked key never prompts. */
int	tls_no_passphrase_cb(char *buf, int size, int rwflag, void *u);

#endif
