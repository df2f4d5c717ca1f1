/*
 * Unit tests of tls/: a test CA and leaf certificates are made at start-up
 * in a temporary folder; real handshakes run in memory between a
 * tls_client SSL and a tls_server SSL over a BIO pair.
 */
#include "tls/tls.h"
#include "tls/tls_private.h"

#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "util/util.h"

static char	 tdir[64];			/* the temporary folder */
static X509	*ca_cert;
static EVP_PKEY	*ca_key;

/* A path in the temporary folder; a static buffer per slot. */
static const char *
tpath(int slot, const char *name)
{
	static char buf[8][256];

	ASSERT(slot >= 0 && slot < 8);
	ASSERT(util_snprintf(buf[slot], sizeof(buf[slot]), "%s/%s", tdir,
	    name) == 0);
	return buf[slot];
}

static void
add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX v3;
	X509_EXTENSION *e;

	X509V3_set_ctx_nodb(&v3);
	X509V3_set_ctx(&v3, issuer, x, NULL, NULL, 0);
	e = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
	ASSERT(e != NULL);
	ASSERT(X509_add_ext(x, e, -1) == 1);
	X509_EXTENSION_free(e);
}

static void
write_pem(const char *path, X509 *x, X509 *chain, EVP_PKEY *k)
{
	FILE	*fp = fopen(path, "w");

	ASSERT(fp != NULL);
	if (x != NULL)
		ASSERT(PEM_write_X509(fp, x) == 1);
	if (chain != NULL)
		ASSERT(PEM_write_X509(fp, chain) == 1);
	if (k != NULL)
		ASSERT(PEM_write_PrivateKey(fp, k, NULL, NULL, 0, NULL,
		    NULL) == 1);
	ASSERT(fclose(fp) == 0);
}

/*
 * A certificate for cn (with SAN value san when not NULL) signed by the
 * test CA, or the CA itself when issuer is NULL.  Writes <base>.pem and
 * <base>.key.  Returns the certificate (owned by the caller).
 */
static X509 *
make_cert_key(const char *base, const char *cn, const char *san,
    bool with_chain, EVP_PKEY **key_out, bool rsa)
{
	static long serial = 1;
	EVP_PKEY *k = rsa ? EVP_RSA_gen(2048) : EVP_EC_gen("P-256");
	X509	*x = X509_new(), *issuer = ca_cert;
	char	 name[128];

	ASSERT(k != NULL && x != NULL);
	ASSERT(X509_set_version(x, X509_VERSION_3) == 1);
	ASSERT(ASN1_INTEGER_set(X509_get_serialNumber(x), serial++) == 1);
	ASSERT(X509_gmtime_adj(X509_getm_notBefore(x), -3600) != NULL);
	ASSERT(X509_gmtime_adj(X509_getm_notAfter(x), 86400) != NULL);
	ASSERT(X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN",
	    MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0) == 1);
	ASSERT(X509_set_pubkey(x, k) == 1);
	if (issuer == NULL) {			/* the CA itself */
		ASSERT(X509_set_issuer_name(x, X509_get_subject_name(x)) == 1);
		add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE");
		add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign");
		add_ext(x, x, NID_subject_key_identifier, "hash");
		ASSERT(X509_sign(x, k, EVP_sha256()) > 0);
	} else {
		ASSERT(X509_set_issuer_name(x,
		    X509_get_subject_name(issuer)) == 1);
		add_ext(x, issuer, NID_basic_constraints, "CA:FALSE");
		add_ext(x, issuer, NID_ext_key_usage, "serverAuth");
		if (san != NULL)
			add_ext(x, issuer, NID_subject_alt_name, san);
		ASSERT(X509_sign(x, ca_key, EVP_sha256()) > 0);
	}
	ASSERT(util_snprintf(name, sizeof(name), "%s.pem", base) == 0);
	write_pem(tpath(7, name), x, with_chain ? ca_cert : NULL, NULL);
	ASSERT(util_snprintf(name, sizeof(name), "%s.key", base) == 0);
	write_pem(tpath(7, name), NULL, NULL, k);
	if (key_out != NULL)
		*key_out = k;
	else
		EVP_PKEY_free(k);
	return x;
}

/* The same, with an EC P-256 key. */
static X509 *
make_cert(const char *base, const char *cn, const char *san, bool with_chain,
    EVP_PKEY **key_out)
{
	return make_cert_key(base, cn, san, with_chain, key_out, false);
}

static int
group_setup(void **state)
{
	(void)state;
	ASSERT(util_strlcpy(tdir, "/tmp/postern-tls-XXXXXX",
	    sizeof(tdir)) == 0);
	ASSERT(mkdtemp(tdir) != NULL);
	ca_cert = make_cert("ca", "postern test CA", NULL, false, &ca_key);
	X509_free(make_cert("default", "default.example.com",
	    "DNS:default.example.com", false, NULL));
	X509_free(make_cert("mail", "mail.example.org",
	    "DNS:mail.example.org,DNS:smtp.example.org", true, NULL));
	X509_free(make_cert("wild", "*.example.net", "DNS:*.example.net",
	    false, NULL));
	X509_free(make_cert("cnonly", "cnonly.example.com", NULL, false,
	    NULL));
	X509_free(make_cert("other", "other.example.com",
	    "DNS:other.example.com", false, NULL));
	/* One name, an RSA and an ECDSA certificate (and a second ECDSA). */
	X509_free(make_cert_key("duo-rsa", "rsa.duo.example", "DNS:duo.example",
	    false, NULL, true));
	X509_free(make_cert("duo-ec", "ec.duo.example", "DNS:duo.example",
	    false, NULL));
	X509_free(make_cert("duo-ec2", "ec2.duo.example", "DNS:duo.example",
	    false, NULL));
	/* Not PEM at all. */
	write_pem(tpath(0, "empty.pem"), NULL, NULL, NULL);
	return 0;
}

static int
group_teardown(void **state)
{
	DIR	*d;
	struct dirent *de;

	(void)state;
	X509_free(ca_cert);
	EVP_PKEY_free(ca_key);
	/* Remove the flat folder and the one level below it (ss/). */
	if ((d = opendir(tdir)) != NULL) {
		while ((de = readdir(d)) != NULL) {
			if (de->d_name[0] == '.')
				continue;
			if (unlink(tpath(0, de->d_name)) == -1 &&
			    errno == EISDIR) {
				DIR *d2 = opendir(tpath(1, de->d_name));
				struct dirent *e2;
				char sub[600];

				while (d2 != NULL &&
				    (e2 = readdir(d2)) != NULL) {
					if (e2->d_name[0] == '.')
						continue;
					snprintf(sub, sizeof(sub), "%s/%s",
					    tpath(1, de->d_name), e2->d_name);
					unlink(sub);
				}
				if (d2 != NULL)
					closedir(d2);
				rmdir(tpath(1, de->d_name));
			}
		}
		closedir(d);
	}
	rmdir(tdir);
	return 0;
}

/* The default server: default, mail, wildcard, CN-only, override. */
static struct tls_server *
server_new_for(const char *min_version, const char *ciphers,
    const char *ciphersuites, unsigned lifetime_s)
{
	static char paths[10][256];
	const char *bases[] = { "default", "mail", "wild", "cnonly", "other" };
	struct tls_cert_spec specs[5];
	struct tls_server_opts o = { specs, 5, min_version, ciphers,
	    ciphersuites, lifetime_s };
	struct tls_server *t;
	const char *err = NULL;

	for (size_t i = 0; i < 5; i++) {
		snprintf(paths[2 * i], sizeof(paths[0]), "%s/%s.pem", tdir,
		    bases[i]);
		snprintf(paths[2 * i + 1], sizeof(paths[0]), "%s/%s.key", tdir,
		    bases[i]);
		specs[i].cert_path = paths[2 * i];
		specs[i].key_path = paths[2 * i + 1];
		specs[i].name = NULL;
	}
	specs[4].name = "override.example";
	t = tls_server_new(&o, NULL, &err);
	if (t == NULL)
		fail_msg("tls_server_new: %s", err);
	return t;
}

/* The same, with sessions resumable for an hour (the default). */
static struct tls_server *
server_new(const char *min_version, const char *ciphers,
    const char *ciphersuites)
{
	return server_new_for(min_version, ciphers, ciphersuites, 3600);
}

static struct tls_client *
client_new(bool verify, const char *ca_file)
{
	struct tls_client_opts o = { !verify, ca_file, NULL };
	struct tls_client *c;
	const char *err = NULL;

	if ((c = tls_client_new(&o, &err)) == NULL)
		fail_msg("tls_client_new: %s", err);
	return c;
}

/*
 * Connect cli and srv with a BIO pair and drive both handshakes, then send
 * one line each way.  0 when both finished, -1 when either failed.
 */
static int
pump(SSL *cli, SSL *srv)
{
	BIO	*bc, *bs;
	bool	 cdone = false, sdone = false;
	char	 buf[16];

	ASSERT(BIO_new_bio_pair(&bc, 0, &bs, 0) == 1);
	SSL_set_bio(cli, bc, bc);
	SSL_set_bio(srv, bs, bs);
	for (int i = 0; i < 50 && (!cdone || !sdone); i++) {	/* bounded */
		SSL	*s[2] = { cli, srv };
		bool	*done[2] = { &cdone, &sdone };

		for (int j = 0; j < 2; j++) {
			int	 r, e;

			if (*done[j])
				continue;
			if ((r = SSL_do_handshake(s[j])) == 1) {
				*done[j] = true;
				continue;
			}
			e = SSL_get_error(s[j], r);
			if (e != SSL_ERROR_WANT_READ &&
			    e != SSL_ERROR_WANT_WRITE) {
				ERR_clear_error();
				return -1;
			}
		}
	}
	if (!cdone || !sdone)
		return -1;
	/* The session carries data both ways. */
	if (SSL_write(cli, "EHLO x\r\n", 8) != 8 ||
	    SSL_read(srv, buf, sizeof(buf)) != 8 ||
	    memcmp(buf, "EHLO x\r\n", 8) != 0 ||
	    SSL_write(srv, "250 ok\r\n", 8) != 8 ||
	    SSL_read(cli, buf, sizeof(buf)) != 8 ||
	    memcmp(buf, "250 ok\r\n", 8) != 0)
		return -1;
	return 0;
}

/* CN of the certificate the client got, "" when none. */
static void
peer_cn(SSL *cli, char *buf, size_t bufsz)
{
	X509	*x = SSL_get0_peer_certificate(cli);

	buf[0] = '\0';
	if (x != NULL)
		X509_NAME_get_text_by_NID(X509_get_subject_name(x),
		    NID_commonName, buf, (int)bufsz);
}

/* Handshake, then the certificate's CN must be want_cn; frees both. */
static void
expect_cert(SSL *cli, SSL *srv, const char *label, const char *want_cn)
{
	char	 cn[128];

	if (pump(cli, srv) == -1)
		fail_msg("case \"%s\": handshake failed", label);
	peer_cn(cli, cn, sizeof(cn));
	if (strcmp(cn, want_cn) != 0)
		fail_msg("case \"%s\": got cert \"%s\", want \"%s\"", label,
		    cn, want_cn);
	SSL_free(cli);
	SSL_free(srv);
}

static void
test_sni_selection(void **state)
{
	static const struct {
		const char *label, *sni, *want_cn;
	} cases[] = {
		{ "exact", "mail.example.org", "mail.example.org" },
		{ "second SAN", "smtp.example.org", "mail.example.org" },
		{ "case-insensitive", "MAIL.Example.ORG", "mail.example.org" },
		{ "trailing dot", "mail.example.org.", "mail.example.org" },
		{ "wildcard one label", "a.example.net", "*.example.net" },
		{ "wildcard two labels", "a.b.example.net",
		    "default.example.com" },
		{ "wildcard needs a label", "example.net",
		    "default.example.com" },
		{ "unknown name", "nothing.example", "default.example.com" },
		{ "no SNI", NULL, "default.example.com" },
		{ "default by name", "default.example.com",
		    "default.example.com" },
		{ "CN without SAN", "cnonly.example.com",
		    "cnonly.example.com" },
		{ "name override", "override.example", "other.example.com" },
		{ "overridden SAN unused", "other.example.com",
		    "default.example.com" },
	};
	struct tls_server *t = server_new(NULL, NULL, NULL);
	struct tls_client *c = client_new(false, NULL);

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		SSL	*cli = tls_client_ssl_new(c, cases[i].sni);
		SSL	*srv = tls_server_ssl_new(t);

		if (cli == NULL)
			fail_msg("case \"%s\": tls_client_ssl_new failed",
			    cases[i].label);
		expect_cert(cli, srv, cases[i].label, cases[i].want_cn);
	}
	tls_client_free(&c);
	tls_server_free(&t);
	assert_null(c);
	assert_null(t);
}

static void
test_client_verify(void **state)
{
	static const struct {
		const char *label, *name;
		bool	 use_ca, want_ok;
		long	 want_verify;
	} cases[] = {
		{ "right name", "mail.example.org", true, true, X509_V_OK },
		{ "chain in cert file", "smtp.example.org", true, true,
		    X509_V_OK },
		{ "wildcard", "a.example.net", true, true, X509_V_OK },
		{ "wrong name", "nothing.example.org", true, false,
		    X509_V_ERR_HOSTNAME_MISMATCH },
		{ "wildcard two labels", "a.b.example.net", true, false,
		    X509_V_ERR_HOSTNAME_MISMATCH },
		{ "unknown CA", "a.example.net", false, false,
		    X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY },
		{ "unknown CA sent in chain", "mail.example.org", false, false,
		    X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN },
	};
	struct tls_server *t = server_new(NULL, NULL, NULL);
	struct tls_client *cca = client_new(true, tpath(0, "ca.pem"));
	struct tls_client *csys = client_new(true, NULL);

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		SSL	*cli = tls_client_ssl_new(cases[i].use_ca ? cca : csys,
		    cases[i].name);
		SSL	*srv = tls_server_ssl_new(t);
		bool	 ok;
		long	 v;

		assert_non_null(cli);
		ok = pump(cli, srv) == 0;
		v = SSL_get_verify_result(cli);
		if (ok != cases[i].want_ok || v != cases[i].want_verify)
			fail_msg("case \"%s\": got ok=%d verify=%ld (%s), "
			    "want ok=%d verify=%ld", cases[i].label, ok, v,
			    X509_verify_cert_error_string(v), cases[i].want_ok,
			    cases[i].want_verify);
		SSL_free(cli);
		SSL_free(srv);
	}
	tls_client_free(&cca);
	tls_client_free(&csys);
	tls_server_free(&t);
}

static void
test_versions_and_info(void **state)
{
	static const struct {
		const char *label, *server_min, *ciphers, *suites;
		int	 client_max;		/* 0: no limit */
		const char *sni;
		bool	 want_ok;
		const char *want_proto, *want_cipher;	/* NULL: any */
	} cases[] = {
		{ "1.3 default", NULL, NULL, NULL, 0, "mail.example.org",
		    true, "TLSv1.3", NULL },
		{ "1.2 client", NULL, NULL, NULL, TLS1_2_VERSION,
		    "mail.example.org", true, "TLSv1.2", NULL },
		{ "min 1.3 refuses 1.2 client", "TLSv1.3", NULL, NULL,
		    TLS1_2_VERSION, "mail.example.org", false, NULL, NULL },
		{ "min 1.3, 1.3 client", "TLSv1.3", NULL, NULL, 0, NULL, true,
		    "TLSv1.3", NULL },
		{ "ciphersuites", NULL, NULL, "TLS_CHACHA20_POLY1305_SHA256",
		    0, "a.example.net", true, "TLSv1.3",
		    "TLS_CHACHA20_POLY1305_SHA256" },
		{ "ciphers", NULL, "ECDHE-ECDSA-AES128-GCM-SHA256", NULL,
		    TLS1_2_VERSION, "a.example.net", true, "TLSv1.2",
		    "ECDHE-ECDSA-AES128-GCM-SHA256" },
	};
	struct tls_client *c = client_new(false, NULL);

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct tls_server *t = server_new(cases[i].server_min,
		    cases[i].ciphers, cases[i].suites);
		SSL	*cli = tls_client_ssl_new(c, cases[i].sni);
		SSL	*srv = tls_server_ssl_new(t);
		struct tls_info si, ci;
		const char *want_sni = cases[i].sni ? cases[i].sni : "";
		bool	 ok;

		if (cases[i].client_max != 0)
			SSL_set_max_proto_version(cli, cases[i].client_max);
		ok = pump(cli, srv) == 0;
		if (ok != cases[i].want_ok)
			fail_msg("case \"%s\": got ok=%d, want %d",
			    cases[i].label, ok, cases[i].want_ok);
		if (ok) {
			tls_session_info(srv, &si);
			tls_session_info(cli, &ci);
			if (strcmp(si.protocol, cases[i].want_proto) != 0 ||
			    strcmp(si.sni, want_sni) != 0 || si.bits < 128 ||
			    si.cipher[0] == '\0' ||
			    (cases[i].want_cipher != NULL &&
			    strcmp(si.cipher, cases[i].want_cipher) != 0))
				fail_msg("case \"%s\": got %s %s %d "
				    "sni=\"%s\", want %s %s sni=\"%s\"",
				    cases[i].label, si.protocol, si.cipher, si.bits, si.sni,
				    cases[i].want_proto,
				    cases[i].want_cipher ? cases[i].want_cipher
				    : "*", want_sni);
			/* Both ends agree. */
			if (strcmp(ci.protocol, si.protocol) != 0 ||
			    strcmp(ci.cipher, si.cipher) != 0 ||
			    ci.bits != si.bits)
				fail_msg("case \"%s\": client saw %s %s %d",
				    cases[i].label, ci.protocol, ci.cipher,
				    ci.bits);
		}
		SSL_free(cli);
		SSL_free(srv);
		tls_server_free(&t);
	}
	tls_client_free(&c);
}

/*
 * A second connection resumes the session, keeping its SNI name: on the
 * same server context, on a new one (a reload: the ticket keys are the
 * process's), and never with resumption off.
 */
static void
test_resumption(void **state)
{
	static const struct {
		const char *label;
		int	 version;
		bool	 reload;
		unsigned lifetime_s;
	} cases[] = {
		{ "TLS 1.2", TLS1_2_VERSION, false, 3600 },
		{ "TLS 1.3", TLS1_3_VERSION, false, 3600 },
		{ "TLS 1.2 after reload", TLS1_2_VERSION, true, 3600 },
		{ "TLS 1.3 after reload", TLS1_3_VERSION, true, 3600 },
		{ "TLS 1.2 off", TLS1_2_VERSION, false, 0 },
		{ "TLS 1.3 off", TLS1_3_VERSION, false, 0 },
	};
	struct tls_client *c = client_new(true, tpath(0, "ca.pem"));

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct tls_server *t = server_new_for(NULL, NULL, NULL,
		    cases[i].lifetime_s);
		SSL_SESSION *sess = NULL;

		for (int round = 0; round < 2; round++) {
			SSL	*cli = tls_client_ssl_new(c,
			    "mail.example.org");
			SSL	*srv;
			struct tls_info si;
			char	 cn[128];
			int	 want = round == 1 && cases[i].lifetime_s > 0;

			if (round == 1 && cases[i].reload) {
				tls_server_free(&t);
				t = server_new(NULL, NULL, NULL);
			}
			srv = tls_server_ssl_new(t);
			SSL_set_max_proto_version(cli, cases[i].version);
			if (sess != NULL)
				SSL_set_session(cli, sess);
			if (pump(cli, srv) == -1)
				fail_msg("case \"%s\" round %d: handshake "
				    "failed", cases[i].label, round);
			tls_session_info(srv, &si);
			peer_cn(cli, cn, sizeof(cn));
			if (SSL_session_reused(srv) != want ||
			    strcmp(si.sni, "mail.example.org") != 0 ||
			    strcmp(cn, "mail.example.org") != 0)
				fail_msg("case \"%s\" round %d: got reused=%d "
				    "sni=\"%s\" cert=\"%s\"", cases[i].label,
				    round, SSL_session_reused(srv), si.sni, cn);
			if (sess == NULL)
				sess = SSL_get1_session(cli);
			/* An unclean close makes a session unresumable. */
			SSL_shutdown(cli);
			SSL_shutdown(srv);
			SSL_free(cli);
			SSL_free(srv);
		}
		SSL_SESSION_free(sess);
		tls_server_free(&t);
	}
	tls_client_free(&c);
}

/*
 * Ticket keys: one encrypts for TLS_TICKET_ROTATE_MS, then decrypts (and
 * asks for a new ticket) for as long again, then is gone.
 */
static void
test_ticket_rotation(void **state)
{
	const uint64_t P = TLS_TICKET_ROTATE_MS, t0 = 1000;
	struct tls_ticket_ring r;
	struct tls_ticket_key k1, k2, k3, got;
	unsigned char unknown[16] = { 0 };

	(void)state;
	memset(&r, 0, sizeof(r));
	assert_int_equal(tls_ticket_ring_pick(&r, t0, NULL, &k1), 1);
	assert_int_equal(tls_ticket_ring_pick(&r, t0 + P - 1, NULL, &got), 1);
	assert_memory_equal(got.name, k1.name, sizeof(k1.name));
	assert_int_equal(tls_ticket_ring_pick(&r, t0 + P - 1, k1.name, &got),
	    1);
	assert_memory_equal(got.aes, k1.aes, sizeof(k1.aes));
	assert_int_equal(tls_ticket_ring_pick(&r, t0 + P - 1, unknown, &got),
	    0);
	/* Rotated: a new key encrypts, the old one still decrypts. */
	assert_int_equal(tls_ticket_ring_pick(&r, t0 + P, NULL, &k2), 1);
	assert_memory_not_equal(k2.name, k1.name, sizeof(k1.name));
	assert_memory_not_equal(k2.aes, k1.aes, sizeof(k1.aes));
	assert_int_equal(tls_ticket_ring_pick(&r, t0 + P, k1.name, &got), 2);
	assert_memory_equal(got.hmac, k1.hmac, sizeof(k1.hmac));
	assert_int_equal(tls_ticket_ring_pick(&r, t0 + 2 * P - 1, k1.name,
	    &got), 2);
	/* A decryption alone rotates too, and k1 is gone. */
	assert_int_equal(tls_ticket_ring_pick(&r, t0 + 2 * P, k1.name, &got),
	    0);
	assert_int_equal(tls_ticket_ring_pick(&r, t0 + 2 * P, k2.name, &got),
	    2);
	assert_int_equal(tls_ticket_ring_pick(&r, t0 + 2 * P, NULL, &k3), 1);
	assert_memory_not_equal(k3.name, k2.name, sizeof(k2.name));
	/* After a long idle spell the retired key is too old as well. */
	assert_int_equal(tls_ticket_ring_pick(&r, t0 + 10 * P, k3.name, &got),
	    0);
}

/*
 * RSA and ECDSA certificates for one name are offered together: the
 * client's signature algorithms pick one, ECDSA when it takes both; a
 * second ECDSA one for the same name adds nothing.  Other names still get
 * the default.
 */
static void
test_rsa_and_ecdsa(void **state)
{
	static const struct {
		const char *label, *sni, *sigalgs, *want_cn;
		int	 version;
	} cases[] = {
		{ "1.3 both", "duo.example", NULL, "ec.duo.example",
		  TLS1_3_VERSION },
		{ "1.3 RSA only", "duo.example",
		  "rsa_pss_rsae_sha256:rsa_pss_rsae_sha384", "rsa.duo.example",
		  TLS1_3_VERSION },
		{ "1.3 ECDSA only", "duo.example", "ecdsa_secp256r1_sha256",
		  "ec.duo.example", TLS1_3_VERSION },
		{ "1.2 RSA only", "duo.example", "RSA+SHA256",
		  "rsa.duo.example", TLS1_2_VERSION },
		{ "1.2 both", "duo.example", NULL, "ec.duo.example",
		  TLS1_2_VERSION },
		{ "other name", "mail.example.org", NULL, "mail.example.org",
		  TLS1_3_VERSION },
	};
	const char *stems[] = { "default", "duo-rsa", "duo-ec", "duo-ec2",
	    "mail" };
	static char paths[10][256];
	struct tls_cert_spec specs[5];
	struct tls_server_opts o = { specs, 5, NULL, NULL, NULL, 0 };
	struct tls_client *c = client_new(false, NULL);
	struct tls_server *t;
	const char *err = NULL;

	(void)state;
	for (size_t i = 0; i < 5; i++) {
		snprintf(paths[2 * i], sizeof(paths[0]), "%s/%s.pem", tdir,
		    stems[i]);
		snprintf(paths[2 * i + 1], sizeof(paths[0]), "%s/%s.key", tdir,
		    stems[i]);
		specs[i] = (struct tls_cert_spec){ paths[2 * i],
		    paths[2 * i + 1], NULL };
	}
	if ((t = tls_server_new(&o, NULL, &err)) == NULL)
		fail_msg("tls_server_new: %s", err);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		SSL	*cli = tls_client_ssl_new(c, cases[i].sni);
		SSL	*srv = tls_server_ssl_new(t);

		SSL_set_max_proto_version(cli, cases[i].version);
		if (cases[i].sigalgs != NULL)
			ASSERT(SSL_set1_sigalgs_list(cli,
			    cases[i].sigalgs) == 1);
		expect_cert(cli, srv, cases[i].label, cases[i].want_cn);
	}
	tls_server_free(&t);
	tls_client_free(&c);
}

/* Freeing the server while a handshake is under way must be safe (reload). */
static void
test_free_during_handshake(void **state)
{
	struct tls_server *t = server_new(NULL, NULL, NULL);
	struct tls_client *c = client_new(true, tpath(0, "ca.pem"));
	SSL	*srv = tls_server_ssl_new(t);
	SSL	*cli = tls_client_ssl_new(c, "a.example.net");
	char	 cn[128];

	(void)state;
	tls_server_free(&t);
	assert_null(t);
	assert_int_equal(pump(cli, srv), 0);
	peer_cn(cli, cn, sizeof(cn));
	assert_string_equal(cn, "*.example.net");
	SSL_free(cli);
	SSL_free(srv);
	tls_client_free(&c);
}

static void
test_errors(void **state)
{
	struct {
		const char *label, *cert, *key, *min, *ciphers, *want;
	} cases[] = {
		{ "missing cert", "nope.pem", "default.key", NULL, NULL,
		    "cert %s/nope.pem: No such file or directory" },
		{ "missing key", "default.pem", "nope.key", NULL, NULL,
		    "key %s/nope.key: No such file or directory" },
		{ "key mismatch", "mail.pem", "default.key", NULL, NULL,
		    "key does not match certificate %s/mail.pem "
		    "(key %s/default.key)" },
		{ "not a certificate", "default.key", "default.key", NULL,
		    NULL, "cert %s/default.key: no PEM certificate: " },
		{ "empty key file", "default.pem", "empty.pem", NULL, NULL,
		    "key %s/empty.pem: no usable PEM private key: " },
		{ "bad min_version", "default.pem", "default.key", "SSLv3",
		    NULL, "bad min_version \"SSLv3\" (want TLSv1.2 or "
		    "TLSv1.3)" },
		{ "bad ciphers", "default.pem", "default.key", NULL,
		    "NO-SUCH-CIPHER", "ciphers \"NO-SUCH-CIPHER\": " },
	};
	char	 cert[256], key[256], want[512];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct tls_cert_spec spec = { cert, key, NULL };
		struct tls_server_opts o = { &spec, 1, cases[i].min,
		    cases[i].ciphers, NULL, 0 };
		struct tls_server *t;
		const char *err = NULL;

		snprintf(cert, sizeof(cert), "%s/%s", tdir, cases[i].cert);
		snprintf(key, sizeof(key), "%s/%s", tdir, cases[i].key);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
		snprintf(want, sizeof(want), cases[i].want, tdir, tdir);
#pragma GCC diagnostic pop
		t = tls_server_new(&o, NULL, &err);
		if (t != NULL) {
			tls_server_free(&t);
			fail_msg("case \"%s\": got a server, want error",
			    cases[i].label);
		}
		/* Texts ending in ": " continue with OpenSSL's reason. */
		if (err == NULL || strncmp(err, want, strlen(want)) != 0 ||
		    (want[strlen(want) - 1] != ' ' && strcmp(err, want) != 0))
			fail_msg("case \"%s\": got \"%s\", want \"%s\"",
			    cases[i].label, err ? err : "(null)", want);
	}
	{
		struct tls_server_opts o = { NULL, 0, NULL, NULL, NULL, 0 };
		struct tls_client_opts co = { false, tpath(0, "nope.pem"),
		    NULL };
		const char *err = NULL;

		assert_null(tls_server_new(&o, NULL, &err));
		assert_string_equal(err, "no certificate given");
		assert_null(tls_client_new(&co, &err));
		snprintf(want, sizeof(want),
		    "ca_file %s/nope.pem: No such file or directory", tdir);
		assert_string_equal(err, want);
		co.ca_file = NULL;
		co.min_version = "TLSv1.1";
		assert_null(tls_client_new(&co, &err));
	}
}

static void
test_selfsigned(void **state)
{
	const char *host = "mx.test.example";
	const char *cert = tpath(2, "ss/cert.pem");
	const char *key = tpath(3, "ss/key.pem");
	const char *err = NULL;
	struct stat st;
	X509	*x;
	EVP_PKEY *pub;
	FILE	*fp;
	DIR	*d;
	struct dirent *de;
	int	 nfiles = 0;
	time_t	 nine_years = time(NULL) + 9 * 366 * 86400L;

	(void)state;
	assert_int_equal(mkdir(tpath(0, "ss"), 0700), 0);
	if (tls_selfsigned_make(host, cert, key, &err) == -1)
		fail_msg("tls_selfsigned_make: %s", err);
	/* Modes, and no temporary file left behind. */
	assert_int_equal(stat(key, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(stat(cert, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0644);
	assert_non_null(d = opendir(tpath(0, "ss")));
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			nfiles++;
	closedir(d);
	assert_int_equal(nfiles, 2);

	/* Self-signed v3, the SAN, ten years, a signature that verifies. */
	assert_non_null(fp = fopen(cert, "r"));
	assert_non_null(x = PEM_read_X509(fp, NULL, NULL, NULL));
	fclose(fp);
	assert_int_equal(X509_get_version(x), X509_VERSION_3);
	assert_int_equal(X509_NAME_cmp(X509_get_subject_name(x),
	    X509_get_issuer_name(x)), 0);
	assert_non_null(pub = X509_get0_pubkey(x));
	assert_int_equal(X509_verify(x, pub), 1);
	assert_int_equal(X509_check_host(x, host, 0, 0, NULL), 1);
	assert_int_equal(X509_check_host(x, "other.example", 0, 0, NULL), 0);
	assert_true(X509_cmp_time(X509_get0_notAfter(x), &nine_years) > 0);
	assert_true(ASN1_INTEGER_get(X509_get0_serialNumber(x)) != 0 ||
	    X509_get0_serialNumber(x)->length > 8);
	{
		/* It verifies as its own trust anchor for host. */
		X509_STORE *store = X509_STORE_new();
		X509_STORE_CTX *sc = X509_STORE_CTX_new();

		X509_STORE_add_cert(store, x);
		X509_STORE_CTX_init(sc, store, x, NULL);
		X509_VERIFY_PARAM_set1_host(X509_STORE_CTX_get0_param(sc),
		    host, 0);
		if (X509_verify_cert(sc) != 1)
			fail_msg("self-signed verify: %s",
			    X509_verify_cert_error_string(
			    X509_STORE_CTX_get_error(sc)));
		X509_STORE_CTX_free(sc);
		X509_STORE_free(store);
	}
	X509_free(x);

	/* It loads as a server certificate and a client can verify it. */
	{
		struct tls_cert_spec spec = { cert, key, NULL };
		struct tls_server_opts o = { &spec, 1, NULL, NULL, NULL, 0 };
		struct tls_server *t = tls_server_new(&o, NULL, &err);
		struct tls_client *c;
		SSL	*cli, *srv;

		if (t == NULL)
			fail_msg("tls_server_new(selfsigned): %s", err);
		c = client_new(true, cert);
		cli = tls_client_ssl_new(c, host);
		srv = tls_server_ssl_new(t);
		assert_int_equal(pump(cli, srv), 0);
		assert_int_equal(SSL_get_verify_result(cli), X509_V_OK);
		SSL_free(cli);
		SSL_free(srv);
		tls_client_free(&c);
		tls_server_free(&t);
	}

	/* Bad input and an unwritable place fail with a reason. */
	assert_int_equal(tls_selfsigned_make("", cert, key, &err), -1);
	assert_int_equal(tls_selfsigned_make("a b", cert, key, &err), -1);
	assert_int_equal(tls_selfsigned_make(host, tpath(4, "no/cert.pem"),
	    tpath(5, "no/key.pem"), &err), -1);
	assert_non_null(strstr(err, "No such file or directory"));
}

static void
test_client_names(void **state)
{
	struct tls_client *c = client_new(true, tpath(0, "ca.pem"));
	char	 longname[300];
	SSL	*ssl;

	(void)state;
	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	assert_null(tls_client_ssl_new(c, ""));
	assert_null(tls_client_ssl_new(c, longname));
	/* RFC 6066 3: no SNI for an IP literal. */
	assert_non_null(ssl = tls_client_ssl_new(c, "192.0.2.1"));
	assert_null(SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name));
	SSL_free(ssl);
	assert_non_null(ssl = tls_client_ssl_new(c, "mail.example.org"));
	assert_string_equal(SSL_get_servername(ssl,
	    TLSEXT_NAMETYPE_host_name), "mail.example.org");
	SSL_free(ssl);
	tls_client_free(&c);
	assert_null(c);
	tls_client_free(&c);			/* NULL is fine */
}

/* Both ends keep their record buffers for the connection's life. */
static void
test_buffers_kept(void **state)
{
	struct tls_server *t = server_new(NULL, NULL, NULL);
	struct tls_client *c = client_new(false, NULL);
	SSL	*cli = tls_client_ssl_new(c, "mail.example.org");
	SSL	*srv = tls_server_ssl_new(t);

	(void)state;
	assert_int_equal(pump(cli, srv), 0);
	assert_int_equal(SSL_get_mode(cli) & SSL_MODE_RELEASE_BUFFERS, 0);
	assert_int_equal(SSL_get_mode(srv) & SSL_MODE_RELEASE_BUFFERS, 0);
	SSL_free(cli);
	SSL_free(srv);
	tls_client_free(&c);
	tls_server_free(&t);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sni_selection),
		cmocka_unit_test(test_client_verify),
		cmocka_unit_test(test_versions_and_info),
		cmocka_unit_test(test_resumption),
		cmocka_unit_test(test_ticket_rotation),
		cmocka_unit_test(test_rsa_and_ecdsa),
		cmocka_unit_test(test_free_during_handshake),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_selfsigned),
		cmocka_unit_test(test_client_names),
		cmocka_unit_test(test_buffers_kept),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
