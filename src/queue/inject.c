/*
 * queue/inject.c: a new message made by a delivery (an agent's reply, a
 * pass-through copy) put into the spool and the queue, routed by the
 * match rules like any other: a Received: field of its own first, then
 * the content given.  Committed before the call returns, so the delivery
 * that made it can be recorded as done.
 */
#include "queue/queue_private.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log/log.h"
#include "spool/spool.h"
#include "util/util.h"

#define INJECT_CHUNK	(64u * 1024)

struct inject_copy {
	struct spool_msg	*m;
	struct spool_env	*env;
	const char		*err;
};

static int
inject_put(struct inject_copy *c, const char *p, size_t n)
{
	for (size_t i = 0; i < n && !c->env->body_8bit; i++)
		if ((unsigned char)p[i] >= 0x80)
			c->env->body_8bit = true;
	c->env->size += n;
	return spool_msg_write(c->m, p, n, &c->err);
}

/* src's content from off on.  0, or -1 with c->err. */
static int
inject_tail(struct inject_copy *c, const struct deliver_msg *src,
    uint64_t off)
{
	char *buf;
	ssize_t n;
	int fd, rc = 0;

	if (src->content_path == NULL)
		return off >= src->content_len ? 0 : inject_put(c,
		    src->content + off, src->content_len - off);
	if ((fd = open(src->content_path, O_RDONLY | O_CLOEXEC)) == -1) {
		c->err = util_err("open(%s): %s", src->content_path,
		    strerror(errno));
		return -1;
	}
	buf = xmalloc(INJECT_CHUNK);
	if (lseek(fd, (off_t)off, SEEK_SET) == -1)
		n = -1;
	else
		while ((n = read(fd, buf, INJECT_CHUNK)) > 0 &&
		    (rc = inject_put(c, buf, (size_t)n)) == 0)
			;
	if (n == -1) {
		c->err = util_err("read(%s): %s", src->content_path,
		    strerror(errno));
		rc = -1;
	}
	free(buf);
	close(fd);
	return rc;
}

int
queue_inject(struct queue *q, const char *sender, const char *rcpt,
    const char *head, size_t head_len, const struct deliver_msg *src,
    uint64_t src_off, const char **err_out)
{
	struct spool_env b = { 0 };
	struct inject_copy c = { .env = &b };
	char date[64], *recv = NULL;
	int rc = -1;
	struct queue_opts o;

	queue_opts_now(q, &o);
	/* Routed as SMTP recipients are: aliases and all. */
	if (q->o.route == NULL || q->o.route(q->o.route_arg, sender, rcpt, &b,
	    err_out) == -1) {
		spool_env_clear(&b);
		if (q->o.route == NULL) {
			*err_out = "no router";
			return -2;
		}
		/* A table that did not answer: later.  Else never. */
		return (*err_out)[0] == '4' ? -1 : -2;
	}
	spool_new_qid(q->sp, b.qid);
	b.sender = xstrdup(sender);
	/* A copy of src's content needs what src needed (RFC 6531 3.4). */
	b.smtputf8 = src != NULL && src->smtputf8;
	b.smtputf8_needed = src != NULL && src->smtputf8_needed;
	b.received = (int64_t)(util_wall_us() / 1000000);
	util_rfc5322_date(date, sizeof(date), b.received);
	recv = xasprintf("Received: by %s (postern) id %s\n\tfor <%s>; %s\n",
	    o.hostname, b.qid, rcpt, date);
	c.m = spool_msg_new(q->sp, b.qid);
	if (inject_put(&c, recv, strlen(recv)) == -1 ||
	    inject_put(&c, head, head_len) == -1 ||
	    (src != NULL && inject_tail(&c, src, src_off) == -1) ||
	    spool_msg_commit(c.m, &b, &c.err) == -1) {
		*err_out = c.err;
		goto out;
	}
	queue_submit(q, b.qid);
	rc = 0;
out:
	spool_msg_free(&c.m);
	spool_env_clear(&b);
	free(recv);
	return rc;
}

static int
queue_inject_cb(void *arg, const char *sender, const char *rcpt,
    const char *head, size_t head_len, const struct deliver_msg *src,
    uint64_t src_off, const char **err_out)
{
	return queue_inject(arg, sender, rcpt, head, head_len, src, src_off,
	    err_out);
}

void
queue_injector(struct queue *q, struct deliver_inject *out)
{
	out->fn = queue_inject_cb;
	out->arg = q;
}
