/*
 * proxy/reply.c: the upstream's replies, read incrementally (RFC 5321
 * 4.2): "NNN-" lines then one "NNN " line, one code throughout.  Each line
 * is kept as it will be relayed: byte for byte when legal, otherwise made
 * legal (CRLF line ends, text cut to 512 octets with its CRLF, bytes
 * outside printable ASCII and HT shown as '?').  Pure: no sockets.
 */
#include "proxy/proxy_private.h"

#include <string.h>

void
proxy_reply_init(struct proxy_reply *r)
{
	util_buf_reset(&r->wire);
	r->code = 0;
	r->nlines = 0;
	r->line_len = 0;
	r->raw_len = 0;
	r->err = NULL;
}

void
proxy_reply_clear(struct proxy_reply *r)
{
	util_buf_clear(&r->wire);
}

/* The line in r->line is whole: check it, keep it.  1 last, 0 more, -1. */
static int
proxy_reply_line(struct proxy_reply *r)
{
	const char *l = r->line;
	size_t n = r->line_len;

	if (n < 3 || l[0] < '2' || l[0] > '5' || l[1] < '0' || l[1] > '9' ||
	    l[2] < '0' || l[2] > '9' || (n > 3 && l[3] != ' ' &&
	    l[3] != '-')) {
		r->err = "a reply line without a code";
		return -1;
	}
	int code = (l[0] - '0') * 100 + (l[1] - '0') * 10 + (l[2] - '0');
	if (r->code != 0 && code != r->code) {
		r->err = "reply codes differ within one reply";
		return -1;
	}
	if (++r->nlines > PROXY_REPLY_LINES_MAX) {
		r->err = "a reply of too many lines";
		return -1;
	}
	r->code = code;
	util_buf_add(&r->wire, l, 3);
	util_buf_add(&r->wire, n > 3 ? &l[3] : " ", 1);
	for (size_t i = 4; i < n; i++) {
		unsigned char c = (unsigned char)l[i];
		char out = (c == '\t' || (c >= 0x20 && c < 0x7f)) ? (char)c :
		    '?';
		util_buf_add(&r->wire, &out, 1);
	}
	if (n == 3)
		r->wire.len--;	/* "250" alone stays "250" */
	util_buf_add(&r->wire, "\r\n", 2);
	return n == 3 || l[3] == ' ' ? 1 : 0;
}

int
proxy_reply_feed(struct proxy_reply *r, const char *buf, size_t len,
    size_t *used_out)
{
	size_t i = 0;

	*used_out = 0;
	if (r->err != NULL)
		return -1;
	while (i < len) {
		const char *lf = memchr(buf + i, '\n', len - i);
		size_t take = lf != NULL ? (size_t)(lf - (buf + i)) : len - i;
		size_t room = sizeof(r->line) - r->line_len;

		/* Beyond the line's room the rest is dropped (cut). */
		memcpy(r->line + r->line_len, buf + i, take < room ? take : room);
		r->line_len += take < room ? take : room;
		r->raw_len += take;
		i += take;
		if (r->raw_len > PROXY_REPLY_RAW_MAX) {
			r->err = "a reply line that does not end";
			return -1;
		}
		if (lf == NULL)
			break;
		i++;	/* the LF */
		/* CRLF; a bare LF is taken too, and relayed as CRLF. */
		if (r->line_len == r->raw_len && r->line_len > 0 &&
		    r->line[r->line_len - 1] == '\r')
			r->line_len--;
		/* RFC 5321 4.5.3.1.5: 512 octets with the CRLF. */
		if (r->line_len > PROXY_REPLY_LINE_MAX - 2)
			r->line_len = PROXY_REPLY_LINE_MAX - 2;
		int rc = proxy_reply_line(r);
		r->line_len = r->raw_len = 0;
		if (rc == -1)
			return -1;
		if (rc == 1) {
			*used_out = i;
			return 1;
		}
	}
	*used_out = i;
	return 0;
}

/* Line k of the reply (0-based), without code, separator and CRLF. */
bool
proxy_reply_text(const struct proxy_reply *r, unsigned k, const char **text_out,
    size_t *len_out)
{
	const char *p = r->wire.data, *end = p + r->wire.len;

	for (unsigned i = 0; p < end; i++) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		if (nl == NULL)
			return false;
		if (i == k) {
			size_t n = (size_t)(nl - p) - 1;	/* the CR */
			*text_out = n > 4 ? p + 4 : p + n;
			*len_out = n > 4 ? n - 4 : 0;
			return true;
		}
		p = nl + 1;
	}
	return false;
}
