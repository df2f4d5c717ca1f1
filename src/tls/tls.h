/*
 * tls/tls.h: OpenSSL 3 contexts for postern: the server side (certificates,
 * SNI selection), the client side for outbound relay (verification), and a
 * self-signed certificate maker so STARTTLS works out of the box.  Pure
 * OpenSSL: no libevent, no SMTP.  Callers wrap the SSL objects made here
 * (e.g. with bufferevent_openssl_socket_new()).
 *
 * Error text from *err_out comes from util_err(): it stays valid until the
 * thread's next error.
 */
#ifndef POSTERN_TLS_H
#define POSTERN_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/ssl.h>

/* A certificate and its key, both PEM files. */
struct tls_cert_spec {
	const char	*cert_path;	/* leaf first, then its chain */
	const char	*key_path;	/* unencrypted private key */
	/*
	 * The name (exact, or "*.example.org") this pair answers for in SNI;
	 * NULL: the subjectAltName DNS entries of the certificate, or its CN
	 * when it has no DNS entry.
	 */
	const char	*name;
};

struct tls_server_opts {
	const struct tls_cert_spec *certs;	/* borrowed; certs[0] is the
						   default for unknown names */
	size_t		 ncerts;		/* at least 1 */
	const char	*min_version;	/* "TLSv1.2" (NULL: default) or
					   "TLSv1.3" */
	const char	*ciphers;	/* TLS 1.2 list; NULL: OpenSSL's */
	const char	*ciphersuites;	/* TLS 1.3 suites; NULL: OpenSSL's */
	/*
	 * How long a session may be resumed (tickets whose keys every
	 * server context of the process shares, so they resume on any
	 * thread and across a reload; a cache for TLS 1.2 clients without
	 * tickets); 0: never, every handshake is full.  At most 12 h.
	 */
	unsigned	 session_lifetime_s;
};

/*
 * A server context: every certificate loaded and checked, with SNI
 * selection.  Immutable once made, so it may be shared by threads; on
 * reload the owner makes a new one and swaps it, and SSL objects made from
 * the old one keep it alive inside OpenSSL until they are freed.
 */
struct tls_server;

/*
 * Load every pair of o->certs (the paths are not kept) and build the
 * server context.  SNI picks a certificate by exact name, then by a
 * wildcard matching exactly one label ("*.example.org" matches
 * "a.example.org", not "a.b.example.org"), then certs[0].  A pair with
 * exactly the names of an earlier one and a key of another type (ECDSA
 * and RSA) is offered with it: each handshake gets the one the client's
 * signature algorithms allow, ECDSA first.  Returns NULL
 * with *err_out, e.g. "cert /path: No such file or directory" or
 * "key does not match certificate /path (key /path)", and with what is at
 * fault in *fault_out (unless NULL).
 */
struct tls_server_fault;
struct tls_server *tls_server_new(const struct tls_server_opts *o,
	    struct tls_server_fault *fault_out, const char **err_out);
/* What a failed tls_server_new() blames, so the caller can name its line. */
struct tls_server_fault {
	enum tls_server_part { TLS_PART_CERT, TLS_PART_MIN_VERSION,
		TLS_PART_CIPHERS, TLS_PART_CIPHERSUITES,
		TLS_PART_LIFETIME } part;
	size_t		 cert;		/* TLS_PART_CERT: index in o->certs */
};
/*
 * The settings of o alone (version, ciphers, suites, session lifetime),
 * its certificates ignored: what tls_server_new() would say of them when
 * no certificate is there yet.  0, or -1 with *err_out and *fault_out.
 */
int	tls_server_check_settings(const struct tls_server_opts *o,
	    struct tls_server_fault *fault_out, const char **err_out);
/* Free t (NULL is fine) and set *tp to NULL; live SSL objects stay valid. */
void	tls_server_free(struct tls_server **tp);
/*
 * Who opens a certificate or key the process may not read (EACCES: the
 * privileges were dropped): fn(arg, path, err_out) returns a descriptor
 * open for reading, or -1 with *err_out.  Set once, before any thread.
 */
void	tls_server_set_opener(int (*fn)(void *arg, const char *path,
	    const char **err_out), void *arg);
/*
 * A new server-side SSL (accept state) to hand to the connection; the
 * caller owns it (SSL_free, or BEV_OPT_CLOSE_ON_FREE).  Never NULL.
 */
SSL	*tls_server_ssl_new(struct tls_server *t);

/* What a finished handshake agreed; fixed buffers, always NUL-terminated. */
struct tls_info {
	char	protocol[16];	/* "TLSv1.3" */
	char	cipher[64];	/* "TLS_AES_256_GCM_SHA384" */
	int	bits;		/* secret bits of the cipher */
	/*
	 * The SNI name the client sent, "" when none.  Peer text: pass it
	 * through log_safe_into() before logging it.
	 */
	char	sni[256];
	bool	resumed;	/* an abbreviated handshake (a session resumed) */
};
/* Fill *out from ssl after its handshake (either side); "" for unknowns. */
void	tls_session_info(SSL *ssl, struct tls_info *out);

/*
 * Write a new EC P-256 key and a self-signed X.509 v3 certificate for
 * hostname (CN and SAN DNS:hostname, valid for 10 years, random serial) to
 * key_path (mode 0600) and cert_path (0644).  Each file is written to a
 * temporary name, fsynced and renamed into place.  0, or -1 with *err_out.
 */
int	tls_selfsigned_make(const char *hostname, const char *cert_path,
	    const char *key_path, const char **err_out);

struct tls_client_opts {
	/*
	 * Skip peer verification (opportunistic TLS).  The default, false,
	 * verifies the chain against ca_file or the system store, and the
	 * name given to tls_client_ssl_new().
	 */
	bool		 no_verify;
	const char	*ca_file;	/* PEM anchors; NULL: system store */
	const char	*min_version;	/* as for tls_server_opts */
};

/* A client context for outbound connections; immutable, shareable. */
struct tls_client;

/* o may be NULL (defaults).  NULL with *err_out (e.g. bad ca_file). */
struct tls_client *tls_client_new(const struct tls_client_opts *o,
	    const char **err_out);
void	tls_client_free(struct tls_client **cp);
/*
 * A new client-side SSL (connect state) for servername: sent as SNI
 * (unless it is an IP literal, RFC 6066 section 3) and, when verifying,
 * checked against the peer certificate (SSL_set1_host; an IP literal is
 * matched against the IP entries).  servername NULL: no SNI, and only the
 * chain is verified.  The caller owns the SSL.  NULL only when servername
 * is unusable (empty or longer than 253 bytes).
 */
SSL	*tls_client_ssl_new(struct tls_client *c, const char *servername);

#endif
