/* smtpload.c: an SMTP load client for bench/run.  N messages over C
 * concurrent connections, a new connection per message, each one EHLO,
 * [STARTTLS, EHLO,] MAIL, RCPT x R, DATA, QUIT; every reply checked, every
 * wait bounded by the socket timeouts.  With -R each of the C threads
 * offers the TLS session of its previous connection, as an MTA with a
 * session cache does.  Prints "messages=N seconds=S handshakes=H
 * resumed=R", then with -t "tls=PROTOCOL/CIPHER/GROUP/KEY/SIGNATURE"
 * (what the full handshakes negotiated: the server's key type and size or
 * curve, the signature it made) and "tls_differ=D", how many handshakes
 * negotiated something else than the first one did. */
#include "benchio.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <openssl/err.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/x509.h>

struct load_opts {
	struct sockaddr_in addr;
	long	 messages;
	int	 sessions;
	int	 rcpts;
	long	 length;
	int	 tls;
	int	 resume;
	int	 timeout_s;
	const char *from;
	const char *to;
};

static struct load_opts opts = {
	.messages = 100, .sessions = 1, .rcpts = 1, .length = 4096,
	.timeout_s = 60, .from = "bench@bench.test", .to = "user@bench.test",
};
static SSL_CTX *load_ctx;
static char *load_body;
static size_t load_body_len;
static atomic_long load_next;
static atomic_long load_done;
static atomic_int load_failed;
static atomic_long load_handshakes;
static atomic_long load_resumed;
static pthread_mutex_t load_err_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t load_tls_lock = PTHREAD_MUTEX_INITIALIZER;
static char load_tls_seen[256];		/* the first handshake's terms */
static long load_tls_differ;

static void
load_usage(void)
{
	fprintf(stderr, "usage: smtpload [-t [-R]] [-m messages] [-s sessions] "
	    "[-r rcpts] [-l length] [-f from] [-T to] [-w timeout_s] "
	    "IP:PORT\n");
	exit(2);
}

/* The first failure is printed; the others only stop their threads. */
static int
load_fail(long msg, const char *what, const char *line)
{
	pthread_mutex_lock(&load_err_lock);
	if (atomic_fetch_add(&load_failed, 1) == 0)	/* what: no CRLF */
		fprintf(stderr, "smtpload: message %ld: %.*s%s%s\n", msg,
		    (int)strcspn(what, "\r\n"), what, line != NULL ? ": " : "",
		    line != NULL ? line : "");
	pthread_mutex_unlock(&load_err_lock);
	return -1;
}

/* Read one whole reply; its code must start with want. */
static int
load_expect(struct bconn *c, long msg, const char *step, char want)
{
	char line[BIO_LINE_MAX];
	size_t n;

	for (;;) {
		int r = bconn_read_line(c, line, &n);

		if (r != 1) {
			char what[128];

			snprintf(what, sizeof(what), "%s: %s", step, r == 0 ?
			    "connection closed" : strerror(errno));
			return load_fail(msg, what, NULL);
		}
		if (n < 3 || line[0] != want)
			return load_fail(msg, step, line);
		if (n == 3 || line[3] == ' ')
			return 0;
	}
}

static int
load_cmd(struct bconn *c, long msg, const char *cmd, char want)
{
	if (bconn_write(c, cmd, strlen(cmd)) == -1)
		return load_fail(msg, "write", cmd);
	return load_expect(c, msg, cmd, want);
}

static int
load_envelope(struct bconn *c, long msg)
{
	char cmd[600];

	snprintf(cmd, sizeof(cmd), "MAIL FROM:<%s>\r\n", opts.from);
	if (load_cmd(c, msg, cmd, '2') == -1)
		return -1;
	for (int i = 1; i <= opts.rcpts; i++) {
		if (opts.rcpts == 1)
			snprintf(cmd, sizeof(cmd), "RCPT TO:<%s>\r\n", opts.to);
		else
			snprintf(cmd, sizeof(cmd), "RCPT TO:<%d%s>\r\n", i,
			    opts.to);
		if (load_cmd(c, msg, cmd, '2') == -1)
			return -1;
	}
	return 0;
}

/* "RSA-2048" or "EC-P-256": the type and size or curve of the server's
 * certificate key. */
static void
load_peer_key(SSL *ssl, char *out, size_t cap)
{
	X509 *cert = SSL_get0_peer_certificate(ssl);
	EVP_PKEY *pk = cert != NULL ? X509_get0_pubkey(cert) : NULL;
	char group[64];
	size_t glen;

	if (pk == NULL) {
		snprintf(out, cap, "none");
		return;
	}
	if (EVP_PKEY_get_group_name(pk, group, sizeof(group), &glen) == 1) {
		/* prime256v1 by its NIST name, P-256 */
		const char *nist = EC_curve_nid2nist(OBJ_sn2nid(group));

		snprintf(out, cap, "%s-%s", EVP_PKEY_get0_type_name(pk),
		    nist != NULL ? nist : group);
	}
	else
		snprintf(out, cap, "%s-%d", EVP_PKEY_get0_type_name(pk),
		    EVP_PKEY_get_bits(pk));
}

/* The signature the server made with its key, by name. */
static const char *
load_sig_name(int nid)
{
	switch (nid) {
	case NID_undef:		return "none";
	case EVP_PKEY_EC:	return "ECDSA";
	case EVP_PKEY_RSA_PSS:	return "RSA-PSS";
	case EVP_PKEY_RSA:	return "RSA-PKCS1";
	default:		return OBJ_nid2sn(nid);
	}
}

/* The terms of a full handshake as one word; noted if they are the
 * first, counted if they differ from the first.  (A resumed one has no
 * signature: it is not compared.) */
static void
load_note_terms(SSL *ssl)
{
	char key[96], terms[sizeof(load_tls_seen)];
	int group = SSL_get_negotiated_group(ssl), sig = NID_undef,
	    md = NID_undef;

	load_peer_key(ssl, key, sizeof(key));
	SSL_get_peer_signature_type_nid(ssl, &sig);
	SSL_get_peer_signature_nid(ssl, &md);
	snprintf(terms, sizeof(terms), "%s/%s/%s/%s/%s+%s",
	    SSL_get_version(ssl), SSL_CIPHER_get_name(
	    SSL_get_current_cipher(ssl)), group > 0 ? OBJ_nid2sn(group &
	    ~TLSEXT_nid_unknown) : "none", key, load_sig_name(sig), md != NID_undef ? OBJ_nid2sn(md) :
	    "none");
	pthread_mutex_lock(&load_tls_lock);
	if (load_tls_seen[0] == '\0')
		memcpy(load_tls_seen, terms, sizeof(terms));
	else if (strcmp(load_tls_seen, terms) != 0)
		load_tls_differ++;
	pthread_mutex_unlock(&load_tls_lock);
}

/* STARTTLS and the handshake, offering *sess (kept in resume mode). */
static int
load_starttls(struct bconn *c, long msg, SSL_SESSION **sess)
{
	if (load_cmd(c, msg, "STARTTLS\r\n", '2') == -1)
		return -1;
	if (bconn_tls(c, load_ctx, 0, *sess) == -1)
		return load_fail(msg, "TLS handshake", NULL);
	atomic_fetch_add(&load_handshakes, 1);
	if (SSL_session_reused(c->ssl))
		atomic_fetch_add(&load_resumed, 1);
	else
		load_note_terms(c->ssl);
	return load_cmd(c, msg, "EHLO bench.client\r\n", '2');
}

static int
load_session(struct bconn *c, long msg, SSL_SESSION **sess)
{
	if (load_expect(c, msg, "greeting", '2') == -1 ||
	    load_cmd(c, msg, "EHLO bench.client\r\n", '2') == -1)
		return -1;
	if (opts.tls && load_starttls(c, msg, sess) == -1)
		return -1;
	if (load_envelope(c, msg) == -1 ||
	    load_cmd(c, msg, "DATA\r\n", '3') == -1)
		return -1;
	if (bconn_write(c, load_body, load_body_len) == -1)
		return load_fail(msg, "write", "message text");
	if (load_expect(c, msg, "end of data", '2') == -1 ||
	    load_cmd(c, msg, "QUIT\r\n", '2') == -1)
		return -1;
	if (c->ssl == NULL)
		return 0;
	SSL_shutdown(c->ssl);
	/* The newest session (TLS 1.3: the ticket that came with the
	 * replies) for the next connection. */
	if (opts.resume) {
		SSL_SESSION_free(*sess);
		*sess = SSL_get1_session(c->ssl);
	}
	return 0;
}

static int
load_one(long msg, SSL_SESSION **sess)
{
	struct bconn c;
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	int one = 1;

	if (fd == -1)
		return load_fail(msg, "socket", strerror(errno));
	bconn_init(&c, fd);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (bconn_timeouts(fd, opts.timeout_s) == -1 ||
	    connect(fd, (struct sockaddr *)&opts.addr,
	    sizeof(opts.addr)) == -1) {
		load_fail(msg, "connect", strerror(errno));
		bconn_clear(&c);
		return -1;
	}
	int r = load_session(&c, msg, sess);
	bconn_clear(&c);
	return r;
}

static void *
load_thread(void *arg)
{
	SSL_SESSION *sess = NULL;

	(void)arg;
	for (;;) {
		long msg = atomic_fetch_add(&load_next, 1);

		if (msg >= opts.messages || atomic_load(&load_failed) != 0)
			break;
		if (load_one(msg, &sess) == -1)
			break;
		atomic_fetch_add(&load_done, 1);
	}
	SSL_SESSION_free(sess);
	ERR_clear_error();
	return NULL;
}

/* The peer's certificate is taken as it is (SSL_VERIFY_NONE): skip
 * building and checking its chain. */
static int
load_no_chain(X509_STORE_CTX *store, void *arg)
{
	(void)store;
	(void)arg;
	return 1;
}

/* Headers, then lines of 78 characters up to length octets, the final dot:
 * the same text for every message. */
static void
load_make_body(void)
{
	size_t cap = (size_t)opts.length + 4096;
	int n;

	load_body = malloc(cap);
	if (load_body == NULL) {
		perror("malloc");
		exit(1);
	}
	n = snprintf(load_body, cap, "From: <%s>\r\nTo: <%s>\r\n"
	    "Subject: bench\r\nMessage-ID: <%ld@bench.client>\r\n\r\n",
	    opts.from, opts.to, (long)getpid());
	load_body_len = (size_t)n;
	while (load_body_len + 80 <= (size_t)opts.length + (size_t)n) {
		memset(load_body + load_body_len, 'x', 78);
		memcpy(load_body + load_body_len + 78, "\r\n", 2);
		load_body_len += 80;
	}
	memcpy(load_body + load_body_len, ".\r\n", 3);
	load_body_len += 3;
}

static void
load_parse_addr(const char *arg)
{
	char host[64];
	const char *colon = strrchr(arg, ':');

	if (colon == NULL || (size_t)(colon - arg) >= sizeof(host))
		load_usage();
	memcpy(host, arg, (size_t)(colon - arg));
	host[colon - arg] = '\0';
	opts.addr.sin_family = AF_INET;
	opts.addr.sin_port = htons((unsigned short)atoi(colon + 1));
	if (inet_pton(AF_INET, host, &opts.addr.sin_addr) != 1)
		load_usage();
}

static void
load_parse(int argc, char **argv)
{
	int ch;

	while ((ch = getopt(argc, argv, "tRm:s:r:l:f:T:w:")) != -1) {
		switch (ch) {
		case 't': opts.tls = 1; break;
		case 'R': opts.resume = 1; break;
		case 'm': opts.messages = atol(optarg); break;
		case 's': opts.sessions = atoi(optarg); break;
		case 'r': opts.rcpts = atoi(optarg); break;
		case 'l': opts.length = atol(optarg); break;
		case 'f': opts.from = optarg; break;
		case 'T': opts.to = optarg; break;
		case 'w': opts.timeout_s = atoi(optarg); break;
		default: load_usage();
		}
	}
	if (optind != argc - 1 || (opts.resume && !opts.tls) ||
	    opts.messages < 1 || opts.sessions < 1 ||
	    opts.sessions > 10000 || opts.rcpts < 1 || opts.rcpts > 1000 ||
	    opts.length < 0 || opts.timeout_s < 1 || strlen(opts.from) > 256 ||
	    strlen(opts.to) > 256)
		load_usage();
	load_parse_addr(argv[optind]);
}

int
main(int argc, char **argv)
{
	struct timespec t0, t1;
	pthread_t *th;

	load_parse(argc, argv);
	load_make_body();
	load_ctx = SSL_CTX_new(TLS_client_method());
	if (load_ctx == NULL) {
		bconn_perror("SSL_CTX_new");
		return 1;
	}
	/* Benchmark peers use self-signed certificates: no verification,
	 * and none of its work either (OpenSSL builds and checks the chain
	 * even under SSL_VERIFY_NONE unless this callback takes over). */
	SSL_CTX_set_verify(load_ctx, SSL_VERIFY_NONE, NULL);
	SSL_CTX_set_cert_verify_callback(load_ctx, load_no_chain, NULL);
	SSL_CTX_set_session_cache_mode(load_ctx, SSL_SESS_CACHE_OFF);
	bconn_ctx_tune(load_ctx);
	th = calloc((size_t)opts.sessions, sizeof(*th));
	if (th == NULL)
		return 1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 0; i < opts.sessions; i++)
		if (pthread_create(&th[i], NULL, load_thread, NULL) != 0) {
			fprintf(stderr, "smtpload: pthread_create failed\n");
			return 1;
		}
	for (int i = 0; i < opts.sessions; i++)
		pthread_join(th[i], NULL);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	printf("messages=%ld seconds=%.3f handshakes=%ld resumed=%ld\n",
	    atomic_load(&load_done), (double)(t1.tv_sec - t0.tv_sec) +
	    (double)(t1.tv_nsec - t0.tv_nsec) / 1e9,
	    atomic_load(&load_handshakes), atomic_load(&load_resumed));
	if (opts.tls)
		printf("tls=%s tls_differ=%ld\n", load_tls_seen[0] != '\0' ?
		    load_tls_seen : "none", load_tls_differ);
	free(th);
	free(load_body);
	SSL_CTX_free(load_ctx);
	return atomic_load(&load_failed) != 0 ? 1 : 0;
}
