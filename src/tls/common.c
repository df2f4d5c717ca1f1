/*
 * tls/common.c: error text, protocol versions and the summary of a finished
 * handshake; shared by the server and client sides.
 */
#include "tls/tls.h"
#include "tls/tls_private.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>

const char *
tls_err_ssl(const char *fmt, ...)
{
	char	reason[256];
	unsigned long e, last = 0;
	va_list	ap;
	const char *msg;

	va_start(ap, fmt);
	msg = util_verr(fmt, ap);
	va_end(ap);
	/* The last error queued is the closest to the cause we report. */
	while ((e = ERR_get_error()) != 0)
		last = e;
	if (last == 0)
		util_strlcpy(reason, "unknown error", sizeof(reason));
	else if (ERR_reason_error_string(last) != NULL)
		util_strlcpy(reason, ERR_reason_error_string(last),
		    sizeof(reason));
	else
		ERR_error_string_n(last, reason, sizeof(reason));
	return util_err("%s: %s", msg, reason);
}

int
tls_parse_version(const char *s, int *out, const char **err_out)
{
	if (s == NULL || *s == '\0' || strcmp(s, "TLSv1.2") == 0)
		*out = TLS1_2_VERSION;
	else if (strcmp(s, "TLSv1.3") == 0)
		*out = TLS1_3_VERSION;
	else {
		*err_out = util_err("bad min_version \"%.64s\" (want TLSv1.2 "
		    "or TLSv1.3)", s);
		return -1;
	}
	return 0;
}

int
tls_no_passphrase_cb(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)u;
	return -1;
}

void
tls_session_info(SSL *ssl, struct tls_info *out)
{
	const SSL_CIPHER *c;
	const char *s;

	memset(out, 0, sizeof(*out));
	util_strlcpy(out->protocol, SSL_get_version(ssl),
	    sizeof(out->protocol));
	if ((c = SSL_get_current_cipher(ssl)) != NULL) {
		util_strlcpy(out->cipher, SSL_CIPHER_get_name(c),
		    sizeof(out->cipher));
		out->bits = SSL_CIPHER_get_bits(c, NULL);
	}
	if ((s = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name)) != NULL)
		util_strlcpy(out->sni, s, sizeof(out->sni));
	out->resumed = SSL_session_reused(ssl) == 1;
}
