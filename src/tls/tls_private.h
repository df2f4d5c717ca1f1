/*
 * tls/tls_private.h: helpers shared by the files of tls/ only.
 */
#ifndef POSTERN_TLS_PRIVATE_H
#define POSTERN_TLS_PRIVATE_H

#include <stdint.h>

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

/*
 * Session ticket keys (tls/ticket.c).  A key encrypts tickets for
 * TLS_TICKET_ROTATE_MS after it is made, then only decrypts them for as
 * long again; a session lifetime is at most TLS_TICKET_ROTATE_MS, so every
 * ticket still in its lifetime finds its key.
 */
#define TLS_TICKET_ROTATE_MS	(12ULL * 3600 * 1000)
#define TLS_TICKET_IV_LEN	16	/* AES-256-CBC */

struct tls_ticket_key {
	unsigned char	 name[16];	/* sent in the clear with the ticket */
	unsigned char	 aes[32];	/* AES-256-CBC of the ticket */
	unsigned char	 hmac[32];	/* HMAC-SHA256 over it */
	uint64_t	 born_ms;	/* monotonic ms when made; 0: none */
};

struct tls_ticket_ring {
	struct tls_ticket_key	cur;	/* encrypts */
	struct tls_ticket_key	prev;	/* retired: decrypts only */
};

/*
 * The key for a ticket at now_ms, rotating r first when cur is too old to
 * encrypt.  name NULL: the key to encrypt with, 1.  Otherwise the key of
 * that name: 1 for cur, 2 for prev (take the ticket and issue a new one),
 * 0 when r has no such key (any more).  *out gets a copy.
 */
int	tls_ticket_ring_pick(struct tls_ticket_ring *r, uint64_t now_ms,
	    const unsigned char *name, struct tls_ticket_key *out);

/* The ticket key callback of every server context (the process's keys). */
int	tls_ticket_cb(SSL *ssl, unsigned char *key_name, unsigned char *iv,
	    EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc);

#endif
