/*
 * tls/server.c: the server context: loading certificate/key pairs, checking
 * them, and choosing one by the SNI name of each handshake.  Knows nothing
 * of sockets, libevent or SMTP.
 *
 * Each pair gets its own SSL_CTX, all configured alike, but for a pair with
 * the names of an earlier one and a key of another type (ECDSA beside RSA),
 * which joins that one's; SSL objects are made from the default one
 * (ctxs[0]), and the servername callback switches an SSL to the chosen
 * SSL_CTX.  The struct tls_server is owned by ctxs[0] (ex_data), so it
 * lives exactly as long as the last SSL made from it: a handshake in
 * progress when the owner frees it on reload is safe.
 */
#include "tls/tls.h"
#include "tls/tls_private.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "log/log.h"
#include "util/util.h"

#define TLS_NAME_MAX	253	/* RFC 1035 2.3.4, without a trailing dot */

struct tls_name {
	char		*name;		/* owned; lower case, may be "*.x.y" */
	SSL_CTX		*ctx;		/* borrowed from tls_server.ctxs */
};

struct tls_server {
	SSL_CTX		**ctxs;		/* ctxs[0] borrowed (it owns us), the
					   rest owned; one per set of names */
	unsigned	 *kinds;	/* owned; per ctx, its keys' types (a
					   bit each, tls_key_kind()) */
	size_t		  nctxs;
	struct tls_name	 *names;	/* owned; in certificate order */
	size_t		  nnames;
};

static int		tls_server_exidx = -1;
static pthread_once_t	tls_server_once = PTHREAD_ONCE_INIT;

static void
tls_server_destroy(struct tls_server *t)
{
	if (t == NULL)
		return;
	for (size_t i = 1; i < t->nctxs; i++)
		SSL_CTX_free(t->ctxs[i]);
	for (size_t i = 0; i < t->nnames; i++)
		free(t->names[i].name);
	free(t->names);
	free(t->ctxs);
	free(t->kinds);
	free(t);
}

/* ex_data free callback: ctxs[0] is going away, and so is its server. */
static void
tls_server_exfree_cb(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx,
    long argl, void *argp)
{
	(void)parent;
	(void)ad;
	(void)idx;
	(void)argl;
	(void)argp;
	tls_server_destroy(ptr);
}

static void
tls_server_exidx_init(void)
{
	tls_server_exidx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL,
	    tls_server_exfree_cb);
	ASSERT(tls_server_exidx != -1);
}

/* Is s a name we can store and compare: printable, no space, not too long? */
static bool
tls_name_is_ok(const unsigned char *s, size_t len)
{
	if (len == 0 || len > TLS_NAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		if (s[i] <= ' ' || s[i] >= 0x7f)
			return false;
	return true;
}

static void
tls_server_add_name(struct tls_server *t, const unsigned char *s, size_t len,
    SSL_CTX *ctx)
{
	struct tls_name *n;

	t->names = xreallocarray(t->names, t->nnames + 1, sizeof(*t->names));
	n = &t->names[t->nnames++];
	n->name = util_strlower(xstrndup((const char *)s, len));
	/* "example.org." and "example.org" are the same name. */
	if (len > 1 && n->name[len - 1] == '.')
		n->name[len - 1] = '\0';
	n->ctx = ctx;
}

/*
 * The names leaf answers for: its subjectAltName DNS entries, or its CN
 * when it has none (RFC 6125 6.4.4).  Returns how many were added.
 */
static size_t
tls_server_add_cert_names(struct tls_server *t, X509 *leaf, SSL_CTX *ctx)
{
	GENERAL_NAMES *gens;
	const ASN1_STRING *a;
	X509_NAME *subj;
	size_t	 added = 0;
	int	 i;

	gens = X509_get_ext_d2i(leaf, NID_subject_alt_name, NULL, NULL);
	for (i = 0; gens != NULL && i < sk_GENERAL_NAME_num(gens); i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);

		if (g->type != GEN_DNS)
			continue;
		a = g->d.dNSName;
		if (!tls_name_is_ok(ASN1_STRING_get0_data(a),
		    (size_t)ASN1_STRING_length(a)))
			continue;
		tls_server_add_name(t, ASN1_STRING_get0_data(a),
		    (size_t)ASN1_STRING_length(a), ctx);
		added++;
	}
	GENERAL_NAMES_free(gens);
	if (added > 0)
		return added;
	subj = X509_get_subject_name(leaf);
	i = X509_NAME_get_index_by_NID(subj, NID_commonName, -1);
	if (i < 0)
		return 0;
	a = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, i));
	if (!tls_name_is_ok(ASN1_STRING_get0_data(a),
	    (size_t)ASN1_STRING_length(a)))
		return 0;
	tls_server_add_name(t, ASN1_STRING_get0_data(a),
	    (size_t)ASN1_STRING_length(a), ctx);
	return 1;
}

static SSL_CTX *
tls_server_find(const struct tls_server *t, const char *name)
{
	for (size_t i = 0; i < t->nnames; i++)
		if (strcmp(t->names[i].name, name) == 0)
			return t->names[i].ctx;
	return NULL;
}

/*
 * The context for the SNI name sni: exact name first, then a wildcard
 * standing for the first label only (RFC 6125 6.4.3: "*" matches one whole
 * label), then the default.
 */
static SSL_CTX *
tls_server_pick(const struct tls_server *t, const char *sni)
{
	char	 name[TLS_NAME_MAX + 3];	/* room for "*." in front */
	char	*dot;
	size_t	 len = strlen(sni);
	SSL_CTX	*ctx;

	if (len > 1 && sni[len - 1] == '.')
		len--;
	if (len == 0 || len > TLS_NAME_MAX)
		return t->ctxs[0];
	memcpy(name + 1, sni, len);
	name[len + 1] = '\0';
	util_strlower(name + 1);
	if ((ctx = tls_server_find(t, name + 1)) != NULL)
		return ctx;
	dot = strchr(name + 1, '.');
	if (dot == NULL || dot == name + 1 || dot[1] == '\0')
		return t->ctxs[0];
	dot[-1] = '*';
	if ((ctx = tls_server_find(t, dot - 1)) != NULL)
		return ctx;
	return t->ctxs[0];
}

/*
 * Runs once per handshake, after the ClientHello extensions are parsed and
 * before a certificate is chosen.  RFC 6066 3: an unknown name gets the
 * default certificate rather than an unrecognized_name alert, since an
 * SMTP client that cannot verify anyway is better served by TLS than not.
 */
static int
tls_server_sni_cb(SSL *ssl, int *alert, void *arg)
{
	const struct tls_server *t = arg;
	const char *sni;
	SSL_CTX *ctx;

	sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	if (sni == NULL)
		return SSL_TLSEXT_ERR_NOACK;
	ctx = tls_server_pick(t, sni);
	if (ctx != SSL_get_SSL_CTX(ssl) && SSL_set_SSL_CTX(ssl, ctx) == NULL) {
		*alert = SSL_AD_INTERNAL_ERROR;
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	}
	/* Acknowledged, so OpenSSL keeps the name for tls_session_info(). */
	return SSL_TLSEXT_ERR_OK;
}

/*
 * Resumption for lifetime_s: stateless tickets with the process's keys
 * (tls/ticket.c; shared by every thread, kept across reloads), one per
 * handshake (an SMTP client makes one connection at a time to us), and a
 * bounded server-side cache for TLS 1.2 clients without ticket support.
 * 0: none, every handshake full.
 */
static void
tls_server_ctx_resumption(SSL_CTX *ctx, unsigned lifetime_s)
{
	static const unsigned char sid_ctx[] = "postern";

	if (lifetime_s == 0) {
		SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
		SSL_CTX_set_num_tickets(ctx, 0);
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
		return;
	}
	SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
	SSL_CTX_sess_set_cache_size(ctx, 4096);
	SSL_CTX_set_timeout(ctx, (long)lifetime_s);
	SSL_CTX_set_num_tickets(ctx, 1);
	if (SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, tls_ticket_cb) != 1)
		fatal("SSL_CTX_set_tlsext_ticket_key_evp_cb: %s",
		    tls_err_ssl("tickets"));
}

/* A context with every setting but the certificate. */
static SSL_CTX *
tls_server_ctx_new(const struct tls_server_opts *o, int min_version,
    struct tls_server_fault *f, const char **err_out)
{
	SSL_CTX	*ctx;

	if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL) {
		*err_out = tls_err_ssl("SSL_CTX_new");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, min_version);
	/*
	 * No renegotiation (a cheap way for a client to make us work), our
	 * cipher order, no compression (CRIME).
	 */
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION |
	    SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_COMPRESSION);
	/*
	 * No SSL_MODE_RELEASE_BUFFERS: freeing and remaking the record
	 * buffers around every record cost 5% more CPU a message, and an
	 * idle session held more memory with it than without (42 against
	 * 37 KiB: the freed buffers stay in the allocator's heaps).
	 */
	if (o->ciphers != NULL && SSL_CTX_set_cipher_list(ctx,
	    o->ciphers) != 1) {
		*err_out = tls_err_ssl("ciphers \"%.200s\"", o->ciphers);
		f->part = TLS_PART_CIPHERS;
		goto fail;
	}
	if (o->ciphersuites != NULL && SSL_CTX_set_ciphersuites(ctx,
	    o->ciphersuites) != 1) {
		*err_out = tls_err_ssl("ciphersuites \"%.200s\"",
		    o->ciphersuites);
		f->part = TLS_PART_CIPHERSUITES;
		goto fail;
	}
	tls_server_ctx_resumption(ctx, o->session_lifetime_s);
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

static int	(*tls_opener)(void *arg, const char *path,
		    const char **err_out);
static void	*tls_opener_arg;

void
tls_server_set_opener(int (*fn)(void *arg, const char *path,
    const char **err_out), void *arg)
{
	tls_opener = fn;
	tls_opener_arg = arg;
}

/* Open path for reading as a BIO; NULL with "<what> <path>: <errno>". */
static BIO *
tls_open(const char *what, const char *path, const char **err_out)
{
	const char *why = NULL;
	struct stat st;
	FILE	*fp;
	BIO	*b;
	int	 fd;

	if (path == NULL || *path == '\0') {
		*err_out = util_err("%s: no file given", what);
		return NULL;
	}
	if ((fp = fopen(path, "r")) == NULL && errno == EACCES &&
	    tls_opener != NULL) {
		if ((fd = tls_opener(tls_opener_arg, path, &why)) == -1) {
			*err_out = util_err("%s %s: %s", what, path, why);
			return NULL;
		}
		if ((fp = fdopen(fd, "r")) == NULL)
			close(fd);
	}
	if (fp == NULL) {
		*err_out = util_err("%s %s: %s", what, path, strerror(errno));
		return NULL;
	}
	/* fopen opens a folder for reading; its read fails obscurely. */
	if (fstat(fileno(fp), &st) == 0 && S_ISDIR(st.st_mode)) {
		fclose(fp);
		*err_out = util_err("%s %s: %s", what, path, strerror(EISDIR));
		return NULL;
	}
	if ((b = BIO_new_fp(fp, BIO_CLOSE)) == NULL)
		fatal("BIO_new_fp: out of memory");
	return b;
}

/* Read the leaf and the chain after it from cs->cert_path. */
static int
tls_read_chain(const char *path, X509 **leaf_out, STACK_OF(X509) **chain_out,
    const char **err_out)
{
	STACK_OF(X509) *chain = NULL;
	X509	*leaf, *x;
	BIO	*b;
	unsigned long e;

	if ((b = tls_open("cert", path, err_out)) == NULL)
		return -1;
	ERR_clear_error();
	leaf = PEM_read_bio_X509(b, NULL, tls_no_passphrase_cb, NULL);
	if (leaf == NULL) {
		*err_out = tls_err_ssl("cert %s: no PEM certificate", path);
		goto fail;
	}
	if ((chain = sk_X509_new_null()) == NULL)
		fatal("sk_X509_new_null: out of memory");
	while ((x = PEM_read_bio_X509(b, NULL, tls_no_passphrase_cb,
	    NULL)) != NULL)
		if (sk_X509_push(chain, x) == 0)
			fatal("sk_X509_push: out of memory");
	/* The loop ends at end of file, or at a damaged certificate. */
	e = ERR_peek_last_error();
	if (ERR_GET_LIB(e) == ERR_LIB_PEM &&
	    ERR_GET_REASON(e) == PEM_R_NO_START_LINE)
		ERR_clear_error();
	else if (e != 0) {
		*err_out = tls_err_ssl("cert %s: bad chain certificate %d",
		    path, sk_X509_num(chain) + 2);
		goto fail;
	}
	BIO_free(b);
	*leaf_out = leaf;
	*chain_out = chain;
	return 0;
fail:
	BIO_free(b);
	X509_free(leaf);
	sk_X509_pop_free(chain, X509_free);
	return -1;
}

static EVP_PKEY *
tls_read_key(const char *path, const char **err_out)
{
	EVP_PKEY *k;
	BIO	*b;

	if ((b = tls_open("key", path, err_out)) == NULL)
		return NULL;
	ERR_clear_error();
	/* A passphrase-protected key fails here rather than prompting. */
	k = PEM_read_bio_PrivateKey(b, NULL, tls_no_passphrase_cb, NULL);
	if (k == NULL)
		*err_out = tls_err_ssl("key %s: no usable PEM private key",
		    path);
	BIO_free(b);
	return k;
}

/*
 * Can a handshake of ctx use a DSA key?  Only TLS 1.2 with a DSS cipher,
 * which OpenSSL's default list leaves out; TLS 1.3 signs with none.
 */
static bool
tls_ctx_takes_dsa(SSL_CTX *ctx)
{
	STACK_OF(SSL_CIPHER) *cs = SSL_CTX_get_ciphers(ctx);
	long min = SSL_CTX_get_min_proto_version(ctx);

	if (min != 0 && min > TLS1_2_VERSION)
		return false;
	for (int i = 0; cs != NULL && i < sk_SSL_CIPHER_num(cs); i++)
		if (SSL_CIPHER_get_auth_nid(sk_SSL_CIPHER_value(cs, i)) ==
		    NID_auth_dss)
			return true;
	return false;
}

/* Load cs into ctx and return the leaf (owned by the caller) or NULL. */
static X509 *
tls_server_load_pair(SSL_CTX *ctx, const struct tls_cert_spec *cs,
    const char **err_out)
{
	STACK_OF(X509) *chain = NULL;
	EVP_PKEY *key = NULL;
	X509	*leaf = NULL;

	if (tls_read_chain(cs->cert_path, &leaf, &chain, err_out) == -1)
		return NULL;
	if ((key = tls_read_key(cs->key_path, err_out)) == NULL)
		goto fail;
	if (X509_check_private_key(leaf, key) != 1) {
		ERR_clear_error();
		*err_out = util_err("key does not match certificate %s (key %s)",
		    cs->cert_path, cs->key_path);
		goto fail;
	}
	/* Also applies the security level (key size, signature digest). */
	if (SSL_CTX_use_cert_and_key(ctx, leaf, key, chain, 1) != 1) {
		*err_out = tls_err_ssl("cert %s", cs->cert_path);
		goto fail;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		*err_out = tls_err_ssl("key does not match certificate %s "
		    "(key %s)", cs->cert_path, cs->key_path);
		goto fail;
	}
	if (EVP_PKEY_get_base_id(key) == EVP_PKEY_DSA &&
	    !tls_ctx_takes_dsa(ctx)) {
		*err_out = util_err("cert %s: a DSA key, which no handshake "
		    "can use: TLS 1.3 has no DSA, and TLS 1.2's DSS ciphers "
		    "are off unless tls ciphers names them; use an RSA, "
		    "ECDSA or Ed25519 key", cs->cert_path);
		goto fail;
	}
	if (X509_cmp_current_time(X509_get0_notAfter(leaf)) < 0)
		log_msg(LOG_LVL_WARN, "tls cert=%s expired", cs->cert_path);
	EVP_PKEY_free(key);
	sk_X509_pop_free(chain, X509_free);
	return leaf;
fail:
	EVP_PKEY_free(key);
	X509_free(leaf);
	sk_X509_pop_free(chain, X509_free);
	return NULL;
}

/* A bit for the type of ctx's (last loaded) key; 0: one we never pair. */
static unsigned
tls_key_kind(SSL_CTX *ctx)
{
	switch (EVP_PKEY_get_base_id(SSL_CTX_get0_privatekey(ctx))) {
	case EVP_PKEY_RSA:	return 1;
	case EVP_PKEY_RSA_PSS:	return 2;
	case EVP_PKEY_EC:	return 4;
	case EVP_PKEY_ED25519:	return 8;
	case EVP_PKEY_ED448:	return 16;
	default:		return 0;
	}
}

/* Are the names from first on (one pair's) exactly those of ctx? */
static bool
tls_server_same_names(const struct tls_server *t, size_t first, SSL_CTX *ctx)
{
	size_t	 n = 0;

	for (size_t i = 0; i < first; i++)
		if (t->names[i].ctx == ctx)
			n++;
	if (n == 0 || n != t->nnames - first)
		return false;
	for (size_t i = first; i < t->nnames; i++) {
		bool	 found = false;

		for (size_t j = 0; j < first && !found; j++)
			found = t->names[j].ctx == ctx &&
			    strcmp(t->names[j].name, t->names[i].name) == 0;
		if (!found)
			return false;
	}
	return true;
}

/*
 * The pair just loaded into the last context, its names from first on:
 * when an earlier context answers exactly those names with a key of
 * another type (RSA and ECDSA, say), the pair joins it, and each
 * handshake gets the one the client's signature algorithms allow (ours
 * in OpenSSL's order: ECDSA first).  1 joined (the last context is gone),
 * 0 not, -1 with *err_out.
 */
static int
tls_server_join(struct tls_server *t, size_t first, const char **err_out)
{
	SSL_CTX	*ctx = t->ctxs[t->nctxs - 1];
	STACK_OF(X509) *chain = NULL;
	unsigned kind = tls_key_kind(ctx);

	t->kinds[t->nctxs - 1] = kind;
	for (size_t k = 0; kind != 0 && k + 1 < t->nctxs; k++) {
		if ((t->kinds[k] & kind) != 0 ||
		    !tls_server_same_names(t, first, t->ctxs[k]))
			continue;
		SSL_CTX_get0_chain_certs(ctx, &chain);
		if (SSL_CTX_use_cert_and_key(t->ctxs[k],
		    SSL_CTX_get0_certificate(ctx), SSL_CTX_get0_privatekey(ctx),
		    chain, 0) != 1) {
			*err_out = tls_err_ssl("second key type for the names "
			    "of certificate %zu", k + 1);
			return -1;
		}
		t->kinds[k] |= kind;
		while (t->nnames > first)
			free(t->names[--t->nnames].name);
		SSL_CTX_free(ctx);	/* never ctxs[0]: k is before it */
		t->ctxs[--t->nctxs] = NULL;
		return 1;
	}
	return 0;
}

/* The protocol version and session lifetime of o: 0, or -1 with *f set. */
static int
tls_server_version(const struct tls_server_opts *o, int *minv_out,
    struct tls_server_fault *f, const char **err_out)
{
	if (tls_parse_version(o->min_version, minv_out, err_out) == -1) {
		f->part = TLS_PART_MIN_VERSION;
		return -1;
	}
	if (o->session_lifetime_s > TLS_TICKET_ROTATE_MS / 1000) {
		f->part = TLS_PART_LIFETIME;
		*err_out = util_err("session lifetime %us is above %llus",
		    o->session_lifetime_s, TLS_TICKET_ROTATE_MS / 1000);
		return -1;
	}
	return 0;
}

int
tls_server_check_settings(const struct tls_server_opts *o,
    struct tls_server_fault *fault_out, const char **err_out)
{
	SSL_CTX	*ctx;
	int	 minv;

	pthread_once(&tls_server_once, tls_server_exidx_init);
	*fault_out = (struct tls_server_fault){ TLS_PART_CERT, 0 };
	if (tls_server_version(o, &minv, fault_out, err_out) == -1 ||
	    (ctx = tls_server_ctx_new(o, minv, fault_out, err_out)) == NULL)
		return -1;
	SSL_CTX_free(ctx);
	return 0;
}

struct tls_server *
tls_server_new(const struct tls_server_opts *o,
    struct tls_server_fault *fault_out, const char **err_out)
{
	struct tls_server_fault fault = { TLS_PART_CERT, 0 }, *f = fault_out !=
	    NULL ? fault_out : &fault;
	struct tls_server *t;
	int	 minv;
	X509	*leaf;

	pthread_once(&tls_server_once, tls_server_exidx_init);
	*f = fault;
	if (o == NULL || o->ncerts == 0 || o->certs == NULL) {
		*err_out = util_err("no certificate given");
		return NULL;
	}
	if (tls_server_version(o, &minv, f, err_out) == -1)
		return NULL;
	t = xcalloc(1, sizeof(*t));
	t->ctxs = xcalloc(o->ncerts, sizeof(*t->ctxs));
	t->kinds = xcalloc(o->ncerts, sizeof(*t->kinds));
	for (size_t i = 0; i < o->ncerts; i++) {
		const struct tls_cert_spec *cs = &o->certs[i];
		SSL_CTX	*ctx;
		size_t	 first = t->nnames;
		int	 joined;

		f->cert = i;
		ctx = tls_server_ctx_new(o, minv, f, err_out);
		if (ctx == NULL)
			goto fail;
		t->ctxs[t->nctxs++] = ctx;
		if ((leaf = tls_server_load_pair(ctx, cs, err_out)) == NULL)
			goto fail;
		if (cs->name != NULL && *cs->name != '\0') {
			if (!tls_name_is_ok((const unsigned char *)cs->name,
			    strlen(cs->name))) {
				X509_free(leaf);
				*err_out = util_err("cert %s: bad name "
				    "\"%.64s\"", cs->cert_path, cs->name);
				goto fail;
			}
			tls_server_add_name(t, (const unsigned char *)cs->name,
			    strlen(cs->name), ctx);
		} else
			(void)tls_server_add_cert_names(t, leaf, ctx);
		X509_free(leaf);
		if ((joined = tls_server_join(t, first, err_out)) == -1)
			goto fail;
		if (joined == 0 && t->nnames == first && i > 0)
			log_msg(LOG_LVL_WARN, "tls cert=%s has no DNS name; "
			    "SNI never selects it", cs->cert_path);
	}
	SSL_CTX_set_tlsext_servername_callback(t->ctxs[0], tls_server_sni_cb);
	SSL_CTX_set_tlsext_servername_arg(t->ctxs[0], t);
	if (SSL_CTX_set_ex_data(t->ctxs[0], tls_server_exidx, t) != 1)
		fatal("SSL_CTX_set_ex_data: out of memory");
	return t;
fail:
	if (t->nctxs > 0)
		SSL_CTX_free(t->ctxs[0]);	/* no ex_data yet */
	tls_server_destroy(t);
	return NULL;
}

void
tls_server_free(struct tls_server **tp)
{
	struct tls_server *t = *tp;

	if (t == NULL)
		return;
	*tp = NULL;
	/* The last reference to ctxs[0] (ours or an SSL's) frees t. */
	SSL_CTX_free(t->ctxs[0]);
}

SSL *
tls_server_ssl_new(struct tls_server *t)
{
	SSL	*ssl;

	if ((ssl = SSL_new(t->ctxs[0])) == NULL)
		fatal("SSL_new: %s", tls_err_ssl("out of memory"));
	SSL_set_accept_state(ssl);
	return ssl;
}
