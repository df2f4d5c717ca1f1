/*
 * http/body.c: request bodies read out in chunks, a spooled file with each
 * LF sent as CRLF; their length and their HMAC-SHA256 signature (OpenSSL
 * EVP_MAC) over exactly the bytes that go out.  Knows nothing of curl.
 */
#include "http/http.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "http/http_private.h"
#include "util/util.h"

static __thread char	 http_errbuf[300];

static const char *
http_body_err(const char *call, const char *path)
{
	snprintf(http_errbuf, sizeof(http_errbuf), "%s(%s): %s", call, path,
	    strerror(errno));
	return http_errbuf;
}

int
http_reader_open(struct http_reader *rd, const struct http_body *b,
    const char **err_out)
{
	memset(rd, 0, sizeof(*rd));
	rd->b = b;
	rd->fd = -1;
	if (b->data != NULL || b->path == NULL)
		return 0;
	if ((rd->fd = open(b->path, O_RDONLY | O_CLOEXEC)) == -1) {
		*err_out = http_body_err("open", b->path);
		return -1;
	}
	rd->buf = xmalloc(HTTP_READ_CHUNK);
	return 0;
}

/* Refill buf from the file; false at the end or on error (*err_out). */
static bool
http_reader_fill(struct http_reader *rd, const char **err_out)
{
	ssize_t n;

	do
		n = read(rd->fd, rd->buf, HTTP_READ_CHUNK);
	while (n == -1 && errno == EINTR);
	if (n == -1) {
		*err_out = http_body_err("read", rd->b->path);
		return false;
	}
	rd->eof = n == 0;
	rd->len = (size_t)n;
	rd->off = 0;
	return n > 0;
}

/* Copy from buf to out, each LF as CRLF when asked; returns the count. */
static size_t
http_reader_copy(struct http_reader *rd, char *out, size_t cap)
{
	size_t n = 0;

	if (!rd->b->crlf) {
		n = rd->len - rd->off < cap ? rd->len - rd->off : cap;
		memcpy(out, rd->buf + rd->off, n);
		rd->off += n;
		return n;
	}
	while (n < cap && rd->off < rd->len) {
		char c = rd->buf[rd->off];

		if (c == '\n' && !rd->cr_sent) {
			out[n++] = '\r';
			rd->cr_sent = true;
			continue;
		}
		out[n++] = c;
		rd->cr_sent = false;
		rd->off++;
	}
	return n;
}

ssize_t
http_reader_read(struct http_reader *rd, char *out, size_t cap,
    const char **err_out)
{
	size_t n = 0;

	if (rd->b->data != NULL || rd->b->path == NULL) {
		size_t left = rd->b->data != NULL ? rd->b->len - rd->pos : 0;

		n = left < cap ? left : cap;
		if (n > 0)
			memcpy(out, rd->b->data + rd->pos, n);
		rd->pos += n;
		return (ssize_t)n;
	}
	while (n < cap) {
		if (rd->off == rd->len) {
			if (rd->eof)
				break;
			if (!http_reader_fill(rd, err_out)) {
				if (!rd->eof)
					return -1;
				break;
			}
		}
		n += http_reader_copy(rd, out + n, cap - n);
	}
	return (ssize_t)n;
}

void
http_reader_close(struct http_reader *rd)
{
	if (rd->fd != -1)
		close(rd->fd);
	rd->fd = -1;
	free(rd->buf);
	rd->buf = NULL;
}

/* ---- length and signature ---- */

static EVP_MAC_CTX *
http_hmac_new(const void *key, size_t keylen)
{
	EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	EVP_MAC_CTX *ctx = mac != NULL ? EVP_MAC_CTX_new(mac) : NULL;
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
		    (char *)"SHA256", 0),
		OSSL_PARAM_construct_end(),
	};

	EVP_MAC_free(mac);	/* the context keeps its own reference */
	if (ctx != NULL && EVP_MAC_init(ctx, key, keylen, params) != 1) {
		EVP_MAC_CTX_free(ctx);
		ctx = NULL;
	}
	return ctx;
}

static void
http_hex(const unsigned char *in, size_t n, char *out)
{
	static const char hex[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = hex[in[i] >> 4];
		out[2 * i + 1] = hex[in[i] & 15];
	}
	out[2 * n] = '\0';
}

int
http_body_scan(const struct http_body *b, const void *key, size_t keylen,
    int64_t ts, uint64_t *len_out, char *sig_out, const char **err_out)
{
	struct http_reader rd;
	EVP_MAC_CTX *ctx = NULL;
	uint64_t total = 0;
	char *buf = NULL;
	ssize_t n;
	int rc = -1;

	if (http_reader_open(&rd, b, err_out) == -1)
		return -1;
	if (key != NULL) {
		char pre[32];
		int np = snprintf(pre, sizeof(pre), "%lld.", (long long)ts);

		if ((ctx = http_hmac_new(key, keylen)) == NULL) {
			*err_out = "HMAC-SHA256 is not available";
			goto done;
		}
		EVP_MAC_update(ctx, (unsigned char *)pre, (size_t)np);
	}
	buf = xmalloc(HTTP_READ_CHUNK);
	while ((n = http_reader_read(&rd, buf, HTTP_READ_CHUNK, err_out)) > 0) {
		total += (uint64_t)n;
		if (ctx != NULL)
			EVP_MAC_update(ctx, (unsigned char *)buf, (size_t)n);
	}
	if (n == -1)
		goto done;
	if (ctx != NULL) {
		unsigned char md[32];
		size_t mdlen = 0;

		EVP_MAC_final(ctx, md, &mdlen, sizeof(md));
		http_hex(md, mdlen, sig_out);
	}
	*len_out = total;
	rc = 0;
done:
	free(buf);
	EVP_MAC_CTX_free(ctx);
	http_reader_close(&rd);
	return rc;
}
