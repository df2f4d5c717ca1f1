/*
 * chain/milter_codec.c: milter packets in and out (see milter.h).
 */
#include "chain/milter.h"

#include <arpa/inet.h>
#include <stdlib.h>
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

int
milter_get_replycode(const struct milter_reply *r,
    struct milter_replycode *out)
{
	char line[MILTER_LINE_MAX];
	size_t n = strnlen(r->data, r->len), el;
	const char *text;

	memset(out, 0, sizeof(*out));
	if (n == r->len)
		return -1;		/* not a string */
	util_snprintf(line, sizeof(line), "%.*s", (int)strcspn(r->data,
	    "\r\n"), r->data);
	for (char *p = strstr(line, "%{"); p != NULL; p = strstr(p, "%{"))
		p[1] = '(';
	if (strlen(line) < 3 || line[0] < '4' || line[0] > '5' ||
	    line[1] < '0' || line[1] > '9' || line[2] < '0' || line[2] > '9' ||
	    (line[3] != '\0' && line[3] != ' ' && line[3] != '-'))
		return -1;
	out->code = atoi(line);
	text = line[3] != '\0' ? line + 4 : "";
	el = strcspn(text, " ");
	if (el > 0 && el < sizeof(out->esc) && text[0] == line[0] &&
	    text[1] == '.') {
		memcpy(out->esc, text, el);
		out->esc[el] = '\0';
		text += el + (text[el] == ' ');
	}
	util_strlcpy(out->text, text, sizeof(out->text));
	return 0;
}

/* An address argument: s[0] without its <> into out->addr. */
static int
milter_get_addr(const struct milter_reply *r, struct milter_mod *out)
{
	const char *s[2];
	size_t al;

	if (milter_get_strs(r, 0, s, 2) < 1)
		return -1;
	al = strlen(s[0]);
	if (al >= 2 && s[0][0] == '<' && s[0][al - 1] == '>') {
		s[0]++;
		al -= 2;
	}
	if (util_snprintf(out->addr, sizeof(out->addr), "%.*s", (int)al,
	    s[0]) == -1)
		return -1;
	out->value = out->addr;
	return 0;
}

int
milter_get_mod(const struct milter_reply *r, struct milter_mod *out)
{
	const char *s[2];

	memset(out, 0, sizeof(*out));
	out->cmd = r->cmd;
	switch (r->cmd) {
	case MILTER_R_ADDHEADER:
		if (milter_get_strs(r, 0, s, 2) != 2)
			return -1;
		break;
	case MILTER_R_INSHEADER:
	case MILTER_R_CHGHEADER:
		if (milter_get_u32(r, &out->idx) == -1 ||
		    milter_get_strs(r, 4, s, 2) != 2)
			return -1;
		break;
	case MILTER_R_CHGFROM:
	case MILTER_R_ADDRCPT:
	case MILTER_R_ADDRCPT_PAR:
	case MILTER_R_DELRCPT:
		return milter_get_addr(r, out);
	case MILTER_R_QUARANTINE:
		if (milter_get_strs(r, 0, s, 1) != 1)
			return -1;
		out->value = s[0];
		return 0;
	default:
		return -1;
	}
	out->name = s[0];
	out->value = s[1];
	return 0;
}
