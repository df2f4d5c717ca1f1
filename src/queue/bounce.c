/*
 * queue/bounce.c: bounces and delay warnings.  The recipients that failed
 * (or still wait past the delay warning) are reported to the sender in an
 * RFC 3464 DSN (built by dsn.c), itself a new message from <> committed
 * to the spool and routed like any other; each report is recorded so it
 * goes out once.
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

#define QUEUE_HEADERS_MAX	(64 * 1024)	/* original headers in a DSN */



/* The header block of the content (up to the first empty line), malloc'd. */
static char *
queue_read_headers(const char *path, size_t *len_out)
{
	char *buf = xmalloc(QUEUE_HEADERS_MAX + 1);
	size_t len = 0;
	ssize_t n;
	int fd;

	*len_out = 0;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
		free(buf);
		return NULL;
	}
	while (len < QUEUE_HEADERS_MAX &&
	    (n = read(fd, buf + len, QUEUE_HEADERS_MAX - len)) != 0) {
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			break;
		len += (size_t)n;
	}
	close(fd);
	buf[len] = '\0';
	for (size_t i = 0; i + 1 < len; i++)
		if (buf[i] == '\n' && buf[i + 1] == '\n') {
			len = i + 1;
			break;
		}
	*len_out = len;
	return buf;
}

/*
 * Build and commit a DSN about recipients idx[0..n) of env to its sender,
 * routed like any message.  0 when it is queued or cannot ever be sent (no
 * route: logged); -1 when a retry may work (a spool error).
 */
static int
queue_send_dsn(struct queue *q, const struct spool_env *env,
    const size_t *idx, size_t n, bool delayed)
{
	struct spool_env b = { 0 };
	struct util_buf content = { 0 };
	struct spool_msg *m = NULL;
	char *path, *hdrs, boundary[64];
	const char *err = NULL, *kind = delayed ? "delay" : "failure";
	char sender[256], why[400];
	size_t hlen;
	int rc = -1;
	struct queue_opts o;

	queue_opts_now(q, &o);
	log_safe_word_into(sender, sizeof(sender), env->sender,
	    strlen(env->sender));
	/* Never bounce a bounce, nor to nobody. */
	if (env->sender[0] == '\0')
		return 0;
	if (q->o.route == NULL || q->o.route(q->o.route_arg, "", env->sender,
	    &b, &err) == -1) {
		spool_env_clear(&b);
		/* A table that did not answer: the DSN waits, it is not lost. */
		bool later = q->o.route != NULL && err[0] == '4';
		if (q->o.route == NULL)
			err = "no router";
		log_event(LOG_LVL_WARN, later ? "dsn-deferred" : "dsn-dropped",
		    env->sid, env->qid, "kind=%s to=<%s> why=\"%s\"", kind,
		    sender, log_safe_into(why, sizeof(why), err, strlen(err)));
		return later ? -1 : 0;
	}
	spool_new_qid(q->sp, b.qid);
	b.sender = xstrdup("");
	b.received = (int64_t)(util_wall_us() / 1000000);
	path = spool_content_path(q->sp, env->qid);
	hdrs = queue_read_headers(path, &hlen);
	free(path);
	(void)util_snprintf(boundary, sizeof(boundary), "=_%s/%s", b.qid,
	    o.hostname);
	struct queue_dsn d = {
		.reporting_mta = o.hostname, .env = env, .idx = idx,
		.n = n, .delayed = delayed, .headers = hdrs != NULL ? hdrs : "",
		.headers_len = hlen, .now = b.received,
		.retry_until = env->received +
		    (int64_t)(o.lifetime_ms / 1000),
		.qid = b.qid, .boundary = boundary,
	};
	queue_dsn_build(&d, &content);
	free(hdrs);
	/*
	 * A global DSN is an SMTPUTF8 message by its type (RFC 6533 4),
	 * whatever its header block holds.
	 */
	b.smtputf8 = b.smtputf8_needed = queue_dsn_is_global(&d);
	b.size = content.len;
	for (size_t i = 0; i < content.len; i++)
		if ((unsigned char)content.data[i] >= 0x80)
			b.body_8bit = true;
	m = spool_msg_new(q->sp, b.qid);
	if (spool_msg_write(m, content.data, content.len, &err) == -1 ||
	    spool_msg_commit(m, &b, &err) == -1) {
		log_event(LOG_LVL_ERROR, "queue", env->sid, env->qid,
		    "cannot queue the %s DSN why=\"%s\"", kind, err);
		goto out;
	}
	log_event(LOG_LVL_INFO, "dsn", env->sid, env->qid,
	    "kind=%s to=<%s> rcpts=%zu dsn_qid=%s", kind, sender, n, b.qid);
	queue_submit(q, b.qid);
	rc = 0;
out:
	spool_msg_free(&m);
	util_buf_clear(&content);
	spool_env_clear(&b);
	return rc;
}

/* Bounce the failures not reported yet; record each as reported. */
void
queue_bounce(struct queue *q, struct spool_env *env)
{
	size_t *idx = xcalloc(env->nrcpts + 1, sizeof(*idx)), n = 0;
	const char *err = NULL;

	for (size_t i = 0; i < env->nrcpts; i++)
		if (env->rcpts[i].failed && !env->rcpts[i].bounced)
			idx[n++] = i;
	if (n > 0 && env->sender[0] == '\0')
		log_event(LOG_LVL_INFO, "dsn-skipped", env->sid, env->qid,
		    "why=\"null sender: never bounce a bounce\" rcpts=%zu", n);
	if (n > 0 && queue_send_dsn(q, env, idx, n, false) == 0)
		for (size_t k = 0; k < n; k++) {
			/*
			 * XXX: a crash between the DSN's commit and these
			 * records sends the DSN twice; never zero times.
			 */
			if (spool_mark_bounced(q->sp, env->qid, idx[k],
			    &err) == -1)
				log_event(LOG_LVL_ERROR, "queue", env->sid,
				    env->qid, "cannot record the bounce "
				    "why=\"%s\"", err);
			else
				env->rcpts[idx[k]].bounced = true;
		}
	free(idx);
}

/* Once past delay_warning, tell the sender which recipients still wait. */
void
queue_warn_delay(struct queue *q, struct spool_env *env, uint64_t now)
{
	size_t *idx, n = 0;
	const char *err = NULL;
	uint64_t received_ms = (uint64_t)env->received * 1000;
	struct queue_opts o;

	queue_opts_now(q, &o);
	if (o.delay_warning_ms == 0 || env->warned ||
	    env->sender[0] == '\0' || now < received_ms ||
	    now - received_ms < o.delay_warning_ms ||
	    now - received_ms >= o.lifetime_ms)
		return;
	idx = xcalloc(env->nrcpts + 1, sizeof(*idx));
	for (size_t i = 0; i < env->nrcpts; i++)
		if (!env->rcpts[i].done && env->rcpts[i].attempts > 0)
			idx[n++] = i;
	if (n > 0 && queue_send_dsn(q, env, idx, n, true) == 0) {
		if (spool_mark_flag(q->sp, env->qid, SPOOL_FLAG_WARNED,
		    &err) == -1)
			log_event(LOG_LVL_ERROR, "queue", env->sid, env->qid,
			    "cannot record the delay warning why=\"%s\"",
			    err);
		env->warned = true;
	}
	free(idx);
}
