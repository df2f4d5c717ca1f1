/*
 * tls/client.c: the client context for outbound connections (relay):
 * trust anchors, verification, SNI and the name check.  Knows nothing of
 * sockets or SMTP.
 */
#include "tls/tls.h"
#include "tls/tls_private.h"

#include <arpa/inet.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "util/util.h"

struct tls_client {
	SSL_CTX		*ctx;		/* owned */
	bool		 verify;
};

struct tls_client *
tls_client_new(const struct tls_client_opts *o, const char **err_out)
{
	static const struct tls_client_opts defaults;
	struct tls_client *c;
	SSL_CTX	*ctx;
	int	 minv;

	if (o == NULL)
		o = &defaults;
	if (tls_parse_version(o->min_version, &minv, err_out) == -1)
		return NULL;
	if (o->ca_file != NULL && access(o->ca_file, R_OK) == -1) {
		*err_out = util_err("ca_file %s: %s", o->ca_file,
		    strerror(errno));
		return NULL;
	}
	if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL) {
		*err_out = tls_err_ssl("SSL_CTX_new");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, minv);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION |
	    SSL_OP_NO_COMPRESSION);
	/*
	 * No SSL_MODE_RELEASE_BUFFERS, as on the server side: remaking the
	 * record buffers around every record costs CPU (5% a relayed
	 * message), and relaying peaked at the same memory with it as
	 * without (the freed buffers stay in the allocator's heaps).
	 */
	if (!o->no_verify) {
		ERR_clear_error();
		if (o->ca_file != NULL && SSL_CTX_load_verify_locations(ctx,
		    o->ca_file, NULL) != 1) {
			*err_out = tls_err_ssl("ca_file %s", o->ca_file);
			SSL_CTX_free(ctx);
			return NULL;
		}
		if (o->ca_file == NULL &&
		    SSL_CTX_set_default_verify_paths(ctx) != 1) {
			*err_out = tls_err_ssl("system CA store");
			SSL_CTX_free(ctx);
			return NULL;
		}
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	} else
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	c = xcalloc(1, sizeof(*c));
	c->ctx = ctx;
	c->verify = !o->no_verify;
	return c;
}

void
tls_client_free(struct tls_client **cp)
{
	struct tls_client *c = *cp;

	if (c == NULL)
		return;
	*cp = NULL;
	SSL_CTX_free(c->ctx);
	free(c);
}

SSL *
tls_client_ssl_new(struct tls_client *c, const char *servername)
{
	unsigned char ip[16];
	bool	 is_ip;
	SSL	*ssl;

	if (servername != NULL && (*servername == '\0' ||
	    strlen(servername) > 253))
		return NULL;
	if ((ssl = SSL_new(c->ctx)) == NULL)
		fatal("SSL_new: %s", tls_err_ssl("out of memory"));
	SSL_set_connect_state(ssl);
	if (servername == NULL)
		return ssl;
	is_ip = inet_pton(AF_INET, servername, ip) == 1 ||
	    inet_pton(AF_INET6, servername, ip) == 1;
	/* RFC 6066 3: literal IPv4 and IPv6 addresses are not permitted. */
	if (!is_ip && SSL_set_tlsext_host_name(ssl, servername) != 1)
		goto fail;
	if (c->verify) {
		/* RFC 6125 6.4.3: "*" stands for a whole label only. */
		SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
		if (SSL_set1_host(ssl, servername) != 1)
			goto fail;
	}
	return ssl;
fail:
	ERR_clear_error();
	SSL_free(ssl);
	return NULL;
}
