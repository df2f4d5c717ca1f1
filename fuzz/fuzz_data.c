/*
 * fuzz/fuzz_data.c: message content through a session in DATA (first
 * byte even) or as BDAT chunks (odd).  The input is fed twice, whole and
 * one byte at a time; the replies must be the same, the decoded bodies
 * agree (see fz_compare_bodies), and a body never holds a CR or NUL.
 * Every byte is consumed, except once the session closes itself (after
 * err_max protocol errors, e.g. BDATs out of sequence).
 */
#include "smtp/smtp.h"
#include "util/util.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fz {
	struct util_buf	out;
	struct util_buf	body;
};

static void
fz_send(void *ctx, const char *buf, size_t len)
{
	util_buf_add(&((struct fz *)ctx)->out, buf, len);
}

static int
fz_body(void *ctx, const char *buf, size_t len)
{
	if (memchr(buf, '\r', len) != NULL || memchr(buf, '\0', len) != NULL)
		abort();
	util_buf_add(&((struct fz *)ctx)->body, buf, len);
	return 0;
}

/* Messages are separated by a NUL, which no body can hold. */
static void
fz_reset(void *ctx)
{
	util_buf_add(&((struct fz *)ctx)->body, "", 1);
}

static const struct smtp_hooks fz_hooks = {
	.send_cb = fz_send, .body_cb = fz_body, .reset_cb = fz_reset,
};

/*
 * Message by message, the body fed whole is a prefix of the body fed byte
 * by byte: they differ only after an error, when what preceded it in the
 * same piece is not handed over.  Without an error they are equal, which
 * the replies (250 vs 554) already tell apart.
 */
static void
fz_compare_bodies(struct util_buf *a, struct util_buf *b)
{
	const char *pa = a->data, *pb = b->data;
	const char *ea = pa + a->len, *eb = pb + b->len;

	while (pa < ea && pb < eb) {
		const char *na = memchr(pa, '\0', (size_t)(ea - pa));
		const char *nb = memchr(pb, '\0', (size_t)(eb - pb));
		size_t la = (na != NULL ? na : ea) - pa;
		size_t lb = (nb != NULL ? nb : eb) - pb;

		if (la > lb || memcmp(pa, pb, la) != 0)
			abort();
		if ((na == NULL) != (nb == NULL))
			abort();
		if (na == NULL)
			return;
		pa = na + 1;
		pb = nb + 1;
	}
	if ((pa < ea) != (pb < eb) && pa < ea)
		abort();
}

static void
fz_run(struct fz *f, bool bdat, const char *in, size_t len, size_t step)
{
	struct smtp_params p = {
		.lim = { .line_max = 100, .msg_max = 2000 },
		.hostname = "fuzz.example",
	};
	struct smtp_session *s = smtp_session_new(&p, &fz_hooks, f);
	const char *pre = "EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n";
	char cmd[64];
	size_t off = 0, n, k;

	smtp_session_start(s);
	if (smtp_session_feed(s, pre, strlen(pre)) != strlen(pre))
		abort();
	if (!bdat) {
		if (smtp_session_feed(s, "DATA\r\n", 6) != 6)
			abort();
		while (off < len) {
			k = len - off < step ? len - off : step;
			n = smtp_session_feed(s, in + off, k);
			if (n == 0)
				break;
			off += n;
		}
	} else {
		/* chunks of up to 37 octets, the last one LAST */
		while (off <= len) {
			size_t chunk = len - off < 37 ? len - off : 37;
			bool lastc = off + chunk == len;

			snprintf(cmd, sizeof(cmd), "BDAT %zu%s\r\n", chunk,
			    lastc ? " LAST" : "");
			if (smtp_session_feed(s, cmd, strlen(cmd)) !=
			    strlen(cmd))
				break;
			for (size_t c = 0; c < chunk; c += n) {
				k = chunk - c < step ? chunk - c : step;
				n = smtp_session_feed(s, in + off + c, k);
				/*
				 * A chunk is read whole, unless the session
				 * closed itself (the error limit) on the way.
				 */
				if (n != k && !smtp_session_is_closing(s))
					abort();
				if (n != k)
					break;
			}
			off += chunk;
			if (lastc || smtp_session_is_closing(s))
				break;
		}
	}
	smtp_session_free(&s);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz a = { 0 }, b = { 0 };
	bool bdat;

	if (size < 1)
		return 0;
	bdat = data[0] & 1;
	fz_run(&a, bdat, (const char *)data + 1, size - 1, size);
	fz_run(&b, bdat, (const char *)data + 1, size - 1, 1);
	if (a.out.len != b.out.len || (a.out.len > 0 &&
	    memcmp(a.out.data, b.out.data, a.out.len) != 0))
		abort();
	fz_compare_bodies(&a.body, &b.body);
	util_buf_clear(&a.out);
	util_buf_clear(&a.body);
	util_buf_clear(&b.out);
	util_buf_clear(&b.body);
	return 0;
}
