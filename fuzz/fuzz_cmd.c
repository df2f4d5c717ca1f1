/*
 * fuzz/fuzz_cmd.c: the command side of smtp/: command lines through
 * smtp_cmd_parse() and a whole session fed in two pieces.  The first byte
 * picks the options (PENDING decisions, STARTTLS, small limits, the cut).
 */
#include "smtp/smtp.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fz {
	bool		pending;
	unsigned	verdicts;	/* rotates decisions */
	enum smtp_verdict pend_v;
};

static void
fz_send(void *ctx, const char *buf, size_t len)
{
	(void)ctx;
	/* Every reply is whole lines: "ddd" then ' ' or '-', CRLF. */
	if (len < 5 || buf[len - 2] != '\r' || buf[len - 1] != '\n' ||
	    memchr(buf, '\n', len - 1) != NULL)
		abort();
}

static enum smtp_verdict
fz_decide(void *ctx, const struct smtp_event *ev, struct smtp_reply *r)
{
	struct fz *f = ctx;
	enum smtp_verdict v;

	if (ev->arg == NULL)
		abort();
	(void)strlen(ev->arg);
	v = (f->verdicts++ % 7 == 6) ? SMTP_REJECT : SMTP_OK;
	r->code = v == SMTP_REJECT ? 550 : 0;
	if (f->pending) {
		f->pend_v = v;
		return SMTP_PENDING;
	}
	return v;
}

static int
fz_body(void *ctx, const char *buf, size_t len)
{
	(void)ctx;
	if (len == 0 || memchr(buf, '\r', len) != NULL)
		abort();
	return 0;
}

static const struct smtp_hooks fz_hooks = {
	.send_cb = fz_send, .decide_cb = fz_decide, .body_cb = fz_body,
};

static void
fz_drive(struct smtp_session *s, struct fz *f, const char *in, size_t len)
{
	size_t off = 0, n;

	for (;;) {
		if (smtp_session_is_waiting(s)) {
			smtp_session_resume(s, f->pend_v, NULL);
			continue;
		}
		if (off == len || smtp_session_is_closing(s))
			return;
		n = smtp_session_feed(s, in + off, len - off);
		if (n > len - off)
			abort();
		off += n;
		if (n == 0 && !smtp_session_is_waiting(s)) {
			/* after STARTTLS: drop the rest, as conn/ does */
			smtp_session_tls_started(s);
			return;
		}
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct smtp_params p = {
		.lim = { .line_max = 1000, .msg_max = 4096, .rcpt_max = 4,
		    .err_max = 20 },
		.hostname = "fuzz.example",
	};
	struct fz f = { 0 };
	struct smtp_session *s;
	const char *in = (const char *)data + 1, *line, *lf;
	size_t len, cut;
	struct smtp_cmd c;

	if (size < 1)
		return 0;
	f.pending = data[0] & 1;
	p.starttls = data[0] & 2;
	if (data[0] & 4)
		p.lim.line_max = 80;
	len = size - 1;
	cut = len == 0 ? 0 : (data[0] >> 3) * len / 31;
	if (cut > len)
		cut = len;

	/* the line parser on each line */
	for (line = in; line < in + len; line = lf + 1) {
		lf = memchr(line, '\n', (size_t)(in + len - line));
		if (lf == NULL)
			lf = in + len;
		if (smtp_cmd_parse(line, (size_t)(lf - line), &c) == 1 &&
		    (c.arg_len > (size_t)(lf - line) ||
		    (c.arg_len > 0 && (c.arg < line || c.arg + c.arg_len > lf))))
			abort();
	}

	s = smtp_session_new(&p, &fz_hooks, &f);
	smtp_session_start(s);
	if (smtp_session_is_waiting(s))
		smtp_session_resume(s, SMTP_OK, NULL);
	fz_drive(s, &f, in, cut);
	fz_drive(s, &f, in + cut, len - cut);
	(void)smtp_session_rcpt_count(s);
	smtp_session_free(&s);
	return 0;
}
