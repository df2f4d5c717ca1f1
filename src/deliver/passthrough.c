/*
 * deliver/passthrough.c: the pass-through action: a mailbox whose mail is
 * sent on to one target, its Subject prefixed "[mailbox@] " so the target
 * sees where it came in, everything else as it was (the body is copied
 * from the spool as it is, never parsed).  The copy goes into the queue
 * with the same sender and is routed like any message.  Knows nothing of the queue but its inject hook.
 */
#include "deliver/deliver.h"
#include "deliver/deliver_private.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "config/config.h"
#include "util/util.h"

#define PASS_HEADER_MAX	(1024u * 1024)	/* a header block longer is odd */
#define PASS_HOPS_MAX	50	/* Received: fields: more is a loop, as forward's */

/*
 * The header block of m, its blank line included, into hdr; *len_out its
 * length.  0, or -1 with *err_out (unreadable, or no end within bound).
 */
static int
pass_header(const struct deliver_msg *m, struct util_buf *hdr,
    const char **err_out)
{
	char buf[8192];
	int fd = -1;
	ssize_t n;

	if (m->content_path != NULL &&
	    (fd = open(m->content_path, O_RDONLY | O_CLOEXEC)) == -1) {
		*err_out = util_err("open(%s): %s", m->content_path,
		    strerror(errno));
		return -1;
	}
	for (size_t off = 0; hdr->len < PASS_HEADER_MAX;) {
		if (fd == -1) {
			n = (ssize_t)(m->content_len - off);
			if ((size_t)n > sizeof(buf))
				n = sizeof(buf);
			memcpy(buf, m->content + off, (size_t)n);
			off += (size_t)n;
		} else if ((n = read(fd, buf, sizeof(buf))) == -1) {
			*err_out = util_err("read(%s): %s", m->content_path,
			    strerror(errno));
			close(fd);
			return -1;
		}
		util_buf_add(hdr, buf, (size_t)n);
		char *end = NULL;

		util_buf_cstr(hdr);
		if (hdr->len > 0 && hdr->data[0] == '\n')
			end = hdr->data;	/* no header fields at all */
		else if ((end = strstr(hdr->data, "\n\n")) != NULL)
			end++;
		if (end != NULL || n == 0) {
			/* Up to the blank line; a message without a body ends
			 * its header where the content ends. */
			hdr->len = end != NULL ? (size_t)(end - hdr->data) + 1 :
			    hdr->len;
			if (fd != -1)
				close(fd);
			return 0;
		}
	}
	if (fd != -1)
		close(fd);
	*err_out = "5.6.0 header longer than 1 MiB";
	return -1;
}

/* The Received: fields of hdr: the hops the message has made. */
static unsigned
pass_hops(const struct util_buf *hdr)
{
	const char *p = hdr->data, *end = hdr->data + hdr->len;
	unsigned n = 0;

	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *next = nl != NULL ? nl + 1 : end;

		if (util_hdr_is(p, (size_t)(next - p), "Received"))
			n++;
		p = next;
	}
	return n;
}

/* hdr with its Subject prefixed by prefix (or one added), into out. */
static void
pass_rewrite(const struct util_buf *hdr, const char *prefix,
    struct util_buf *out)
{
	const char *p = hdr->data, *end = hdr->data + hdr->len;
	bool done = false;

	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t ll = nl != NULL ? (size_t)(nl - p) + 1 : (size_t)(end - p);

		if (ll == 1 && *p == '\n') {	/* the blank line */
			if (!done)
				util_buf_printf(out, "Subject: %s\n", prefix);
			util_buf_add(out, p, ll);
			return;
		}
		if (!done && util_hdr_is(p, ll, "Subject")) {
			const char *v = (const char *)memchr(p, ':', ll) + 1;

			while (v < p + ll && (*v == ' ' || *v == '\t'))
				v++;
			util_buf_addstr(out, "Subject: ");
			/* Once: a copy coming back keeps one prefix. */
			if (strncmp(v, prefix, strlen(prefix)) != 0)
				util_buf_printf(out, "%s ", prefix);
			util_buf_add(out, v, (size_t)(p + ll - v));
			done = true;
		} else {
			util_buf_add(out, p, ll);
		}
		p += ll;
	}
	if (!done)
		util_buf_printf(out, "Subject: %s\n", prefix);
}

enum deliver_result
deliver_passthrough(const char *target, const struct deliver_msg *m,
    const char *rcpt, struct deliver_rcpt_status *st, const char **err_out)
{
	struct util_buf hdr = { 0 }, head = { 0 };
	const char *at = strrchr(rcpt, '@');
	char *prefix;
	const char *err = NULL;

	memset(st, 0, sizeof(*st));
	st->result = DELIVER_TEMPFAIL;
	if (m->inject == NULL) {
		err = "4.3.0 no queue to put the copy in";
		goto out;
	}
	if (pass_header(m, &hdr, &err) == -1) {
		st->result = strncmp(err, "5.", 2) == 0 ? DELIVER_PERMFAIL :
		    DELIVER_TEMPFAIL;
		goto out;
	}
	/* RFC 5321 6.3: a copy that keeps coming back is a loop. */
	if (pass_hops(&hdr) > PASS_HOPS_MAX) {
		st->result = DELIVER_PERMFAIL;
		err = util_err("5.4.6 mail forwarding loop: %u Received: "
		    "header fields (limit %u)", pass_hops(&hdr), PASS_HOPS_MAX);
		goto out;
	}
	/* The mailbox as configured: local parts compare without case. */
	prefix = util_strlower(xasprintf("[%.*s@]", (int)(at != NULL ?
	    at - rcpt : (ptrdiff_t)strlen(rcpt)), rcpt));
	pass_rewrite(&hdr, prefix, &head);
	free(prefix);
	/* The queue adds a Received: field: loops stay countable. */
	switch (m->inject->fn(m->inject->arg, m->return_path != NULL ?
	    m->return_path : "", target, head.data, head.len, m, hdr.len,
	    &err)) {
	case 0:
		st->result = DELIVER_OK;
		snprintf(st->text, sizeof(st->text), "2.0.0 passed on to <%s>",
		    target);
		break;
	case -2:
		st->result = DELIVER_PERMFAIL;
		snprintf(st->text, sizeof(st->text), "5.1.1 pass-through "
		    "target <%s> has no route: %s", target, err);
		err = st->text;
		break;
	default:
		break;
	}
out:
	if (st->result != DELIVER_OK) {
		snprintf(st->text, sizeof(st->text), "%s%s", strncmp(err,
		    "4.", 2) == 0 || strncmp(err, "5.", 2) == 0 ? "" :
		    "4.3.0 ", err);
		*err_out = util_err("%s", st->text);
	}
	util_buf_clear(&hdr);
	util_buf_clear(&head);
	return st->result;
}

/* ---- the pass-through kind: its runtime is its target ---- */

void *
deliver_passthrough_open(const struct config *c,
    const struct config_action *a, const char **err_out)
{
	(void)c;
	(void)err_out;
	return xstrdup(a->pass_to);
}

void
deliver_passthrough_close(void *runtime)
{
	free(runtime);
}

enum deliver_result
deliver_passthrough_kind(void *runtime, const char *arg,
    const struct deliver_msg *m, const char *const *rcpts, size_t n,
    struct deliver_rcpt_status *st_out, const char **err_out)
{
	const char *err = NULL;

	(void)arg;
	for (size_t i = 0; i < n; i++)
		(void)deliver_passthrough(runtime, m, rcpts[i], &st_out[i],
		    &err);
	return deliver_status_summary(st_out, n, err_out);
}
