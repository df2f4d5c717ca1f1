/*
 * tls/ticket.c: the session ticket keys (RFC 5077 tickets of TLS 1.2, the
 * NewSessionTicket of TLS 1.3) of the whole process.  Every server context
 * of every loaded configuration encrypts tickets with the current key and
 * takes tickets made with it or with the previous one, so a session made on
 * one loop thread resumes on another, and one made before a reload resumes
 * after it.  Keys live in memory only: a restart costs every client one
 * full handshake.  Knows nothing of configurations or sockets.
 */
#include "tls/tls.h"
#include "tls/tls_private.h"

#include <pthread.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "util/util.h"

static struct {
	pthread_mutex_t		lock;
	struct tls_ticket_ring	ring;	/* all zero: no key made yet */
} tls_tickets = { .lock = PTHREAD_MUTEX_INITIALIZER };

static void
tls_ticket_key_make(struct tls_ticket_key *k, uint64_t now_ms)
{
	if (RAND_bytes(k->name, sizeof(k->name)) != 1 ||
	    RAND_bytes(k->aes, sizeof(k->aes)) != 1 ||
	    RAND_bytes(k->hmac, sizeof(k->hmac)) != 1)
		fatal("RAND_bytes: %s", tls_err_ssl("ticket key"));
	k->born_ms = now_ms;
}

/* Is k a key made at most max_age_ms before now_ms? */
static bool
tls_ticket_key_is_fresh(const struct tls_ticket_key *k, uint64_t now_ms,
    uint64_t max_age_ms)
{
	return k->born_ms != 0 && now_ms - k->born_ms < max_age_ms;
}

int
tls_ticket_ring_pick(struct tls_ticket_ring *r, uint64_t now_ms,
    const unsigned char *name, struct tls_ticket_key *out)
{
	if (!tls_ticket_key_is_fresh(&r->cur, now_ms, TLS_TICKET_ROTATE_MS)) {
		r->prev = r->cur;
		tls_ticket_key_make(&r->cur, now_ms);
	}
	if (name == NULL || memcmp(name, r->cur.name,
	    sizeof(r->cur.name)) == 0) {
		*out = r->cur;
		return 1;
	}
	/* Retired at most TLS_TICKET_ROTATE_MS ago: take it, issue anew. */
	if (memcmp(name, r->prev.name, sizeof(r->prev.name)) == 0 &&
	    tls_ticket_key_is_fresh(&r->prev, now_ms,
	    2 * TLS_TICKET_ROTATE_MS)) {
		*out = r->prev;
		return 2;
	}
	return 0;
}

/* Point the cipher and the MAC of a ticket at key k. */
static int
tls_ticket_key_use(const struct tls_ticket_key *k, unsigned char *iv,
    EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
	OSSL_PARAM params[3];

	params[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY,
	    (void *)k->hmac, sizeof(k->hmac));
	params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
	    (char *)"SHA256", 0);
	params[2] = OSSL_PARAM_construct_end();
	if (EVP_MAC_CTX_set_params(hctx, params) != 1)
		return -1;
	if (enc)
		return EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL,
		    k->aes, iv) == 1 ? 0 : -1;
	return EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k->aes,
	    iv) == 1 ? 0 : -1;
}

int
tls_ticket_cb(SSL *ssl, unsigned char *key_name, unsigned char *iv,
    EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
	struct tls_ticket_key k;
	int	 rc;

	(void)ssl;
	if (enc && RAND_bytes(iv, TLS_TICKET_IV_LEN) != 1)
		return -1;
	pthread_mutex_lock(&tls_tickets.lock);
	rc = tls_ticket_ring_pick(&tls_tickets.ring, util_now_ms(),
	    enc ? NULL : key_name, &k);
	pthread_mutex_unlock(&tls_tickets.lock);
	if (rc == 0)		/* an unknown or expired key: full handshake */
		return 0;
	if (enc)
		memcpy(key_name, k.name, sizeof(k.name));
	if (tls_ticket_key_use(&k, iv, cctx, hctx, enc) == -1)
		rc = -1;
	OPENSSL_cleanse(&k, sizeof(k));
	return rc;
}
