/*
 * fuzz/fuzz_reply.c: the proxy's reader of upstream replies on any bytes,
 * fed in pieces whose sizes the input picks, checking what a whole reply
 * promises (every line "NNN-" or "NNN " or "NNN", one code, at most 512
 * octets with its CRLF, only printable ASCII or HT), and the EHLO filter
 * on it keeping that shape.
 */
#include "proxy/proxy_private.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The relayed form: whole legal lines of one code, the last one last. */
static void
check_wire(const struct util_buf *w, int code)
{
	const char *p = w->data, *end = p + w->len;

	if (w->len == 0)
		abort();
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		if (nl == NULL || nl == p || nl[-1] != '\r' ||
		    nl - p + 1 > PROXY_REPLY_LINE_MAX || nl - p < 4)
			abort();
		if ((p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0') !=
		    code)
			abort();
		bool last = nl + 1 == end;
		if (nl - p > 4 && p[3] != (last ? ' ' : '-'))
			abort();
		if (nl - p == 4 && !last)
			abort();
		for (const char *q = p + 4; q < nl - 1; q++)
			if (*q != '\t' && (*q < 0x20 || *q > 0x7e))
				abort();
		p = nl + 1;
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proxy_reply r = { 0 };
	struct proxy_ehlo_opts o = { .starttls = true, .auth = true,
	    .size_max = 1000 };
	size_t off = 1, step = size > 0 ? (size_t)data[0] % 64 + 1 : 1;

	proxy_reply_init(&r);
	while (off < size) {
		size_t n = size - off < step ? size - off : step, used;
		int rc = proxy_reply_feed(&r, (const char *)data + off, n,
		    &used);
		if (used > n || (rc == 0 && used != n))
			abort();
		off += used;
		if (rc == -1) {
			if (r.err == NULL)
				abort();
			break;
		}
		if (rc == 1) {
			struct util_buf out = { 0 };
			struct proxy_caps caps;
			check_wire(&r.wire, r.code);
			proxy_caps_parse(&r, &caps);
			if (r.code / 100 == 2) {
				proxy_ehlo_filter(&r, &o, &out);
				check_wire(&out, r.code);
			}
			util_buf_clear(&out);
			proxy_reply_init(&r);
		}
	}
	proxy_reply_clear(&r);
	return 0;
}
