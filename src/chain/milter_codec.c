/*
 * chain/milter_codec.c: milter packets in and out (see milter.h).
 */
#include "chain/milter.h"

#include <arpa/inet.h>
#include <string.h>

static void
milter_put_head(struct util_buf *b, char cmd, size_t len)
{
	uint32_t n = htonl((uint32_t)(len + 1));

	util_buf_add(b, &n, sizeof(n));
	util_buf_add(b, &cmd, 1);
}

void
milter_put(struct util_buf *b, char cmd, const void *data, size_t len)
{
	milter_put_head(b, cmd, len);
	if (len > 0)
		util_buf_add(b, data, len);
}

void
milter_put_strs(struct util_buf *b, char cmd, const char *const *strs,
    size_t n)
{
	size_t len = 0;

	for (size_t i = 0; i < n; i++)
		len += strlen(strs[i]) + 1;
	milter_put_head(b, cmd, len);
	for (size_t i = 0; i < n; i++)
		util_buf_add(b, strs[i], strlen(strs[i]) + 1);
}

void
milter_put_optneg(struct util_buf *b, uint32_t version, uint32_t actions,
    uint32_t proto)
{
	uint32_t w[3] = { htonl(version), htonl(actions), htonl(proto) };

	milter_put(b, MILTER_C_OPTNEG, w, sizeof(w));
}

void
milter_put_connect(struct util_buf *b, const char *host, const char *ip,
    int port)
{
	char family = strchr(ip, ':') != NULL ? '6' : '4';
	uint16_t p = htons((uint16_t)port);
	size_t len = strlen(host) + 1 + 1 + sizeof(p) + strlen(ip) + 1;

	milter_put_head(b, MILTER_C_CONNECT, len);
	util_buf_add(b, host, strlen(host) + 1);
	util_buf_add(b, &family, 1);
	util_buf_add(b, &p, sizeof(p));
	util_buf_add(b, ip, strlen(ip) + 1);
}

int
milter_get(const char *buf, size_t len, struct milter_reply *r, size_t *used,
    const char **err_out)
{
	uint32_t n;

	if (len < sizeof(n))
		return 0;
	memcpy(&n, buf, sizeof(n));
	n = ntohl(n);
	if (n == 0 || n > MILTER_PACKET_MAX) {
		*err_out = n == 0 ? "empty packet" : "packet too large";
		return -1;
	}
	if (len - sizeof(n) < n)
		return 0;
	r->cmd = buf[sizeof(n)];
	r->data = buf + sizeof(n) + 1;
	r->len = n - 1;
	*used = sizeof(n) + n;
	return 1;
}

int
milter_get_optneg(const struct milter_reply *r, uint32_t *version,
    uint32_t *actions, uint32_t *proto)
{
	uint32_t w[3];

	if (r->len < sizeof(w))
		return -1;
	memcpy(w, r->data, sizeof(w));
	*version = ntohl(w[0]);
	*actions = ntohl(w[1]);
	*proto = ntohl(w[2]);
	return 0;
}

int
milter_get_strs(const struct milter_reply *r, size_t skip, const char **out,
    size_t max)
{
	size_t n = 0;

	if (skip > r->len)
		return -1;
	for (size_t i = skip; i < r->len; ) {
		const char *nul = memchr(r->data + i, '\0', r->len - i);
		if (nul == NULL || n == max)
			return -1;
		out[n++] = r->data + i;
		i = (size_t)(nul - r->data) + 1;
	}
	return (int)n;
}

int
milter_get_u32(const struct milter_reply *r, uint32_t *out)
{
	if (r->len < sizeof(*out))
		return -1;
	memcpy(out, r->data, sizeof(*out));
	*out = ntohl(*out);
	return 0;
}
