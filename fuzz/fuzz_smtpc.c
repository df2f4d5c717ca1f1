/*
 * fuzz/fuzz_smtpc.c: what an SMTP server answers the outbound client.  The
 * input is the server's byte stream, read through a socket with the
 * client's own line reader (dconn_readline) and gathered into replies
 * (smtpc_reply_line); each reply's lines are also read as an EHLO reply's
 * extensions.  Aborts on a reply with a code outside 200..599, a text (kept
 * raw) that overruns its buffer or holds a line end, or lines that do not
 * end in LF.
 */
#include "deliver/deliver_private.h"
#include "util/util.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
fz_check(const struct smtpc_reply *r)
{
	struct smtpc_caps caps;

	if (r->code < 200 || r->code > 599 || r->lines.len == 0 ||
	    r->lines.data[r->lines.len - 1] != '\n' ||
	    memchr(r->text, '\0', sizeof(r->text)) == NULL)
		abort();
	if (strchr(r->text, '\n') != NULL)
		abort();
	smtpc_caps_parse(r->lines.data, r->lines.len, &caps);
	if (!caps.has_size && caps.size_max != 0)
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct smtpc_reply r = { 0 };
	struct dconn c;
	char line[1024];
	const char *why;
	int sv[2], n, rc = 0;

	/* A socket buffer holds the whole input: no writer thread needed. */
	if (size > 65536 || socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == -1)
		return 0;
	if (write(sv[1], data, size) != (ssize_t)size)
		abort();
	close(sv[1]);
	dconn_init(&c);
	c.fd = sv[0];
	smtpc_reply_reset(&r);
	while ((n = dconn_readline(&c, line, sizeof(line), 1000)) > 0) {
		rc = smtpc_reply_line(&r, line, (size_t)n, &why);
		if (rc == -1 && why == NULL)
			abort();
		if (rc == -1)
			break;		/* the client gives up on the server */
		if (rc == 1) {
			fz_check(&r);
			smtpc_reply_reset(&r);
		}
	}
	dconn_close(&c);
	util_buf_clear(&r.lines);
	return 0;
}
