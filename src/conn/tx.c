/*
 * conn/tx.c: one transaction's content on its way to the spool.  Content is
 * gathered in memory and written by the worker pool in large pieces, so the
 * event loop never touches the disk; at most one job per transaction runs
 * at a time, which keeps the writes in order.  Knows nothing of SMTP.
 */
#include "conn/conn_private.h"

#include <event2/event.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "deliver/deliver.h"
#include "log/log.h"
#include "metrics/metrics.h"
#include "queue/queue.h"
#include "spool/spool.h"
#include "util/util.h"

#define TX_FLUSH_AT	(64 * 1024)	/* hand content to a worker from here */
#define TX_BACKLOG_MAX	(1024 * 1024)	/* stop reading the client from here */
#define TX_FIRST_BUF	(16 * 1024)	/* most messages fit: no regrowth */

enum tx_job { TXJ_NONE, TXJ_WRITE, TXJ_COMMIT, TXJ_FAST, TXJ_ABORT,
	TXJ_SYNC, TXJ_KEEP };

struct conn_tx {
	struct conn_ctx		*ctx;		/* borrowed: outlives every tx */
	const struct conn_tx_ops *ops;
	void			*arg;		/* the connection; NULL once released */
	struct spool_env	 env;
	struct spool_msg	*msg;		/* owned; NULL before conn_tx_begin() */
	struct util_buf		 pending;	/* content not handed to a worker yet */
	struct util_buf		 inflight;	/* content a worker is writing */
	struct event		*done_ev;	/* owned: a job's completion, on the loop */
	enum tx_job		 job;		/* the running job */
	int			 job_rc;	/* set by the worker */
	bool			 commit_wanted;
	bool			 committed;
	bool			 failed;	/* a write failed: never commit */
	bool			 full;		/* ...because the disk was full */
	bool			 spooled;	/* some content went to the spool */
	bool			 whole;		/* the commit's job has it all */
	bool			 delivered;	/* the fast path delivered it all */
	const char		*keep_suffix;	/* static: not committed, kept as
						   "<qid><suffix>.eml"; NULL: not */
	char			*hostname;	/* owned: for Maildir names */
	struct util_buf		 head;		/* replaces head_old bytes */
	size_t			 head_off, head_old;
	bool			 head_set;
	char			 err[256];	/* why the last job failed */
	struct util_buf		 log_lines;	/* the job's, for the loop to log */
	/* Sync mode: the web service answers for the one recipient. */
	void			*sync_runtime;	/* borrowed from the conn's rt */
	uint64_t		 sync_ms;
	char			*sync_path;	/* owned: the content, spooled */
	struct deliver_origin	 sync_origin;
	struct deliver_rcpt_status sync_st;	/* the outcome */
	bool			 sync_pending;	/* after the running write */
	atomic_bool		 sync_cancel;	/* the request's: cancel it */
	const char		*sync_left;	/* static: why the client will not
						   hear the outcome; NULL */
};

static void	conn_tx_job_done_cb(evutil_socket_t fd, short what, void *arg);

struct conn_tx *
conn_tx_new(struct conn_ctx *ctx, const struct conn_tx_ops *ops, void *arg)
{
	struct conn_tx *tx = xcalloc(1, sizeof(*tx));

	tx->ctx = ctx;
	tx->ops = ops;
	tx->arg = arg;
	tx->done_ev = event_new(ctx->base, -1, 0, conn_tx_job_done_cb, tx);
	ctx->ntx++;
	return tx;
}

struct spool_env *
conn_tx_env(struct conn_tx *tx)
{
	return &tx->env;
}

void
conn_tx_begin(struct conn_tx *tx, const char *qid, const char *hostname)
{
	ASSERT(tx->msg == NULL);
	tx->hostname = xstrdup(hostname);
	util_strlcpy(tx->env.qid, qid, sizeof(tx->env.qid));
	tx->msg = spool_msg_new(tx->ctx->spool, qid);
}

/*
 * Deliver every recipient of m, st[i] for each: those of a kind that takes
 * several copies at once together (identical Maildir copies share one
 * write and one commit), the others one by one.
 */
static void
conn_tx_fast_deliver(const struct spool_env *env, struct deliver_msg *m,
    struct deliver_rcpt_status *st)
{
	size_t nr = env->nrcpts;
	const struct deliver_kind **ks = xcalloc(nr, sizeof(*ks));
	const char **args = xcalloc(nr, sizeof(*args));
	size_t *idx = xcalloc(nr, sizeof(*idx));
	struct deliver_rcpt_status *gst = xcalloc(nr, sizeof(*gst));
	bool *sent = xcalloc(nr, sizeof(*sent));

	for (size_t i = 0; i < nr; i++)
		ks[i] = deliver_kind_find(env->rcpts[i].action);
	for (size_t i = 0; i < nr; i++) {
		const char *addr = env->rcpts[i].addr, *err;
		size_t n = 0;

		if (sent[i])
			continue;
		if (ks[i]->deliver_copies == NULL) {
			m->rcpt_idx = i;	/* fast_path: one copy each */
			(void)ks[i]->deliver(NULL, env->rcpts[i].arg, m, &addr,
			    1, &st[i], &err);
			continue;
		}
		for (size_t j = i; j < nr; j++)
			if (!sent[j] && ks[j] == ks[i]) {
				args[n] = env->rcpts[j].arg;
				idx[n++] = j;
				sent[j] = true;
			}
		ks[i]->deliver_copies(args, idx, n, m, gst);
		for (size_t g = 0; g < n; g++)
			st[idx[g]] = gst[g];
	}
	free(sent);
	free(gst);
	free(idx);
	free(args);
	free(ks);
}

/* A fast-path job from its copies' writes to its end (conn_tx_fast). */
struct conn_tx_fast {
	struct conn_tx			*tx;
	struct deliver_msg		 m;
	struct deliver_rcpt_status	*st;	/* each recipient's */
	struct deliver_unsynced		 later;	/* copies not named yet */
	uint64_t			 start_ns;
};

static void	conn_tx_job_end(void *arg, int rc, const char *err);

/*
 * f's copies noted as written into tmp/ without a sync become durable:
 * with their record in the spool log (rc 0, its sequence seq), their
 * names in new/; where the log has none (rc 1: not taken; -1: its write
 * failed), their names, then an fsync of each (one that fails is taken
 * back and its recipient deferred).  A copy that cannot be named is
 * deferred; if its record was written, a start after a crash before the
 * next checkpoint delivers it all the same.
 */
static void
conn_tx_fast_named(struct conn_tx_fast *f, int rc, uint64_t seq)
{
	struct conn_tx *tx = f->tx;
	struct deliver_unsynced *u = &f->later;
	struct deliver_rcpt_status *st = f->st;
	const char *err;

	/* Only now into new/: a crash before the record leaves no name. */
	deliver_maildir_publish(u, &f->m, st);
	if (rc == 0) {
		spool_log_named(tx->ctx->spool, seq);
		return;
	}
	if (rc == -1)
		log_event(LOG_LVL_WARN, "spool-error", tx->env.sid,
		    tx->env.qid, "why=\"spool log: write failed\"");
	for (size_t i = 0; i < u->n; i++)
		if (st[u->v[i].rcpt].result == DELIVER_OK &&
		    deliver_maildir_sync(u->v[i].path, &err) == -1) {
			st[u->v[i].rcpt] = (struct deliver_rcpt_status){
			    .result = DELIVER_TEMPFAIL };
			util_strlcpy(st[u->v[i].rcpt].text, err,
			    sizeof(st[0].text));
		}
}

/*
 * The end of a fast-path job, its copies settled: each recipient's
 * outcome logged; what was not delivered spooled and committed as usual,
 * with the copies made recorded as done.  f is freed.
 */
static int
conn_tx_fast_finish(struct conn_tx_fast *f, const char **err_out)
{
	struct conn_tx *tx = f->tx;
	struct spool_env *env = &tx->env;
	struct deliver_rcpt_status *st = f->st;
	size_t ndone = 0;
	uint64_t start_ns = f->start_ns;
	const char *err;
	int rc;

	deliver_unsynced_clear(&f->later);
	free(f);
	for (size_t i = 0; i < env->nrcpts; i++) {
		const struct spool_rcpt *r = &env->rcpts[i];
		char safe[600], to[600], why[400];

		log_safe_word_into(safe, sizeof(safe), r->addr,
		    strlen(r->addr));
		if (st[i].result != DELIVER_OK) {
			log_event(LOG_LVL_WARN, "deferred", env->sid, env->qid,
			    "rcpt=<%s> action=%s why=\"%s\"", safe, r->action,
			    log_safe_into(why, sizeof(why), st[i].text,
			    strlen(st[i].text)));
			metrics_inc(MET_DELIVERIES, metrics_action(r->action),
			    MET_R_DEFERRED);
			continue;
		}
		metrics_inc(MET_DELIVERIES, metrics_action(r->action),
		    MET_R_DELIVERED);
		env->rcpts[i].done = true;
		ndone++;
		log_event(LOG_LVL_INFO, "delivered", env->sid, env->qid,
		    "rcpt=<%s> action=%s to=%s", safe, r->action,
		    log_safe_word_into(to, sizeof(to), r->arg != NULL ?
		    r->arg : "-", r->arg != NULL ? strlen(r->arg) : 1));
	}
	free(st);
	if (ndone == env->nrcpts) {
		tx->delivered = true;
		/* The copies are the commit: the spool's latency. */
		metrics_observe_ns(MET_SPOOL_COMMIT_SECONDS, 0,
		    metrics_now_ns() - start_ns);
		if (spool_keeps(tx->ctx->spool) && spool_keep_content(
		    tx->ctx->spool, env->qid, "", tx->inflight.data,
		    tx->inflight.len, &err) == -1)
			log_event(LOG_LVL_WARN, "keep-error", env->sid,
			    env->qid, "why=\"%s\"", err);
		return 0;
	}
	spool_msg_whole(tx->msg, tx->inflight.data, tx->inflight.len);
	if (spool_msg_commit(tx->msg, env, err_out) == -1)
		return -1;
	/* Accepted now; a crash before these marks finds the copies made. */
	for (size_t i = 0; i < env->nrcpts; i++)
		if (env->rcpts[i].done &&
		    (rc = spool_mark_done(tx->ctx->spool, env->qid, i,
		    &err)) == -1)
			log_event(LOG_LVL_WARN, "spool-error", env->sid,
			    env->qid, "why=\"%s\"", err);
	return 0;
}

/*
 * The spool log's answer for the record of f's copies, on the thread that
 * wrote it (maybe f's own, before spool_log_append returned): the job
 * goes on there and ends.
 */
static void
conn_tx_fast_logged(void *arg, int rc, uint64_t seq)
{
	struct conn_tx_fast *f = arg;
	struct conn_tx *tx = f->tx;
	struct util_buf *was = log_divert(&tx->log_lines);
	const char *err = NULL;

	conn_tx_fast_named(f, rc, seq);
	rc = conn_tx_fast_finish(f, &err);
	log_divert(was);
	conn_tx_job_end(tx, rc, err);
}

/*
 * The commit fast path (docs/architecture.md): every recipient is a
 * Maildir (or discarded) and the whole message is still in memory, so the
 * delivery is the commit: one record in the spool log for all the copies
 * (or one durable write per message and file system), and no spool at
 * all.  What cannot be delivered now is spooled and committed as usual.
 * Runs on a worker, with the job's lines diverted (was: where they went
 * before).  Its rc, or 1: the spool log's callback takes the job on
 * (conn_tx_fast_logged), and tx is no longer this thread's.
 */
static int
conn_tx_fast(struct conn_tx *tx, struct util_buf *was, const char **err_out)
{
	struct spool_env *env = &tx->env;
	struct conn_tx_fast *f = xcalloc(1, sizeof(*f));
	struct spool_log_copy *cs;
	struct spool_log_msg lm = { .qid = env->qid,
	    .received = env->received, .sender = env->sender,
	    .content = tx->inflight.data, .content_len = tx->inflight.len };
	int rc;

	f->tx = tx;
	f->start_ns = metrics_now_ns();
	f->m = (struct deliver_msg){
		.content = tx->inflight.data,
		.content_len = tx->inflight.len,
		.fresh = true,		/* a new qid: nothing to find */
		.return_path = env->sender,
		.smtputf8 = env->smtputf8,
		.qid = env->qid,
		.received = env->received,
		.hostname = tx->hostname,
	};
	f->st = xcalloc(env->nrcpts, sizeof(*f->st));
	if (spool_log_on(tx->ctx->spool))
		f->m.unsynced = &f->later;
	conn_tx_fast_deliver(env, &f->m, f->st);
	if (f->later.n == 0)
		return conn_tx_fast_finish(f, err_out);
	cs = xcalloc(f->later.n, sizeof(*cs));
	lm.hdr = f->later.hdr = deliver_maildir_hdr(&f->m);
	lm.copies = cs;
	lm.ncopies = f->later.n;
	for (size_t i = 0; i < f->later.n; i++)
		cs[i] = (struct spool_log_copy){ f->later.v[i].path,
		    env->rcpts[f->later.v[i].rcpt].addr, f->later.v[i].dev };
	log_divert(was);	/* the callback's lines are its own */
	rc = spool_log_append(tx->ctx->spool, &lm, conn_tx_fast_logged, f);
	free(cs);
	if (rc == 0)
		return 1;
	log_divert(&tx->log_lines);
	conn_tx_fast_named(f, 1, 0);
	return conn_tx_fast_finish(f, err_out);
}

static bool
conn_tx_can_fast(const struct conn_tx *tx)
{
	if (tx->spooled || tx->failed || tx->env.nrcpts == 0)
		return false;
	for (size_t i = 0; i < tx->env.nrcpts; i++) {
		const struct deliver_kind *k =
		    deliver_kind_find(tx->env.rcpts[i].action);
		if (k == NULL || !k->fast_path)
			return false;
	}
	return true;
}

/* The whole message is in memory: put the new head in front of the rest. */
static void
conn_tx_edit_inflight(struct conn_tx *tx)
{
	struct util_buf *b = &tx->inflight, n = { 0 };
	size_t end = tx->head_off + tx->head_old;

	ASSERT(end <= b->len);
	util_buf_add(&n, b->data, tx->head_off);
	util_buf_add(&n, tx->head.data, tx->head.len);
	util_buf_add(&n, b->data + end, b->len - end);
	util_buf_clear(b);
	*b = n;
	tx->head_set = false;
}

/* The web service answered (on its client's thread): back to the loop. */
static void
conn_tx_synced(void *arg, const struct deliver_rcpt_status *st)
{
	struct conn_tx *tx = arg;

	tx->sync_st = *st;
	event_active(tx->done_ev, EV_TIMEOUT, 1);
}

/*
 * Sync mode, on a worker: the content as the commit would have it (its
 * header edits made), in memory or in the spool's msg/ file, goes to the
 * web service; the job ends when it answers.  -1 when it cannot start.
 */
static int
conn_tx_sync_run(struct conn_tx *tx, const char **err_out)
{
	struct spool_env *env = &tx->env;
	struct deliver_msg m = { .return_path = env->sender,
	    .smtputf8 = env->smtputf8, .qid = env->qid,
	    .received = env->received, .hostname = tx->hostname,
	    .origin = &tx->sync_origin };

	if (!tx->spooled) {
		if (tx->head_set)
			conn_tx_edit_inflight(tx);
		m.content = tx->inflight.data != NULL ? tx->inflight.data : "";
		m.content_len = tx->inflight.len;
	} else {
		if (tx->inflight.len > 0 && spool_msg_write(tx->msg,
		    tx->inflight.data, tx->inflight.len, err_out) == -1)
			return -1;
		if (tx->head_set && spool_msg_replace(tx->msg, tx->head_off,
		    tx->head_old, tx->head.data, tx->head.len, err_out) == -1)
			return -1;
		tx->head_set = false;
		tx->sync_path = spool_content_path(tx->ctx->spool, env->qid);
		m.content_path = tx->sync_path;
	}
	tx->sync_origin = (struct deliver_origin){ .client_ip =
	    env->client_ip, .helo = env->helo, .tls = env->tls,
	    .auth_user = env->auth_user,
	    .rcpts = (const char *const *)&env->rcpts[0].addr, .nrcpts = 1 };
	/* Cancelled once a stop's grace is over, as queue deliveries are,
	   and once the client left (conn_tx_client_left). */
	struct deliver_sync_waiter wt = { .timeout_ms = tx->sync_ms,
	    .stop_fd = tx->ctx->stop_fd, .cancel = &tx->sync_cancel,
	    .done_cb = conn_tx_synced, .arg = tx };

	return deliver_webhook_sync(tx->sync_runtime, &m, env->rcpts[0].addr,
	    &wt, err_out);
}

/* A message not committed, kept all the same: the rest of it, then a copy. */
static void
conn_tx_keep_run(struct conn_tx *tx)
{
	const char *err = NULL;

	if ((tx->inflight.len > 0 && spool_msg_write(tx->msg,
	    tx->inflight.data, tx->inflight.len, &err) == -1) ||
	    spool_msg_keep(tx->msg, tx->keep_suffix, &err) == -1)
		log_event(LOG_LVL_WARN, "keep-error", tx->env.sid, tx->env.qid,
		    "why=\"%s\"", err);
}

/* Runs on a worker: the only code that touches msg and inflight meanwhile. */
static void
conn_tx_job_run(void *arg)
{
	struct conn_tx *tx = arg;
	const char *err = NULL;
	int rc = 0;
	/* The job's log lines go out with the loop's, in its next write. */
	struct util_buf *was = log_divert(&tx->log_lines);

	switch (tx->job) {
	case TXJ_WRITE:
		rc = spool_msg_write(tx->msg, tx->inflight.data,
		    tx->inflight.len, &err);
		break;
	case TXJ_COMMIT:
		if (tx->whole) {
			/* All in memory: the edit made there, and the
			   commit writes it (or the log keeps it). */
			if (tx->head_set)
				conn_tx_edit_inflight(tx);
			spool_msg_whole(tx->msg, tx->inflight.data,
			    tx->inflight.len);
		} else {
			if (tx->inflight.len > 0)
				rc = spool_msg_write(tx->msg,
				    tx->inflight.data, tx->inflight.len, &err);
			if (rc == 0 && tx->head_set)
				rc = spool_msg_replace(tx->msg, tx->head_off,
				    tx->head_old, tx->head.data, tx->head.len,
				    &err);
			if (rc != 0)
				break;
		}
		log_divert(was);
		if ((rc = spool_msg_commit_async(tx->msg, &tx->env,
		    conn_tx_job_end, tx, &err)) == 1)
			return;		/* conn_tx_job_end() ends it */
		log_divert(&tx->log_lines);
		break;
	case TXJ_FAST:
		if (tx->head_set)
			conn_tx_edit_inflight(tx);
		if ((rc = conn_tx_fast(tx, was, &err)) == 1)
			return;		/* conn_tx_fast_logged() goes on */
		break;
	case TXJ_KEEP:
		conn_tx_keep_run(tx);
		/* FALLTHROUGH */
	case TXJ_ABORT:
		spool_msg_free(&tx->msg);
		break;
	case TXJ_SYNC:
		rc = conn_tx_sync_run(tx, &err);
		if (rc == 0) {
			log_divert(was);
			return;		/* conn_tx_synced() goes on */
		}
		break;
	case TXJ_NONE:
		ASSERT(!"job without a kind");
	}
	log_divert(was);	/* before the loop may read them */
	conn_tx_job_end(tx, rc, err);
}

/*
 * tx's job is over (its lines no longer diverted), on whichever thread
 * ended it (a spooled commit's outcome too): the loop takes it on.
 */
static void
conn_tx_job_end(void *arg, int rc, const char *err)
{
	struct conn_tx *tx = arg;

	tx->job_rc = rc;
	if (rc == -1) {
		util_strlcpy(tx->err, err != NULL ? err : "spool error",
		    sizeof(tx->err));
		tx->full = spool_err_is_full();
	}
	event_active(tx->done_ev, EV_TIMEOUT, 1);
}

static void
conn_tx_start(struct conn_tx *tx, enum tx_job kind)
{
	struct util_buf swap;

	ASSERT(tx->job == TXJ_NONE);
	swap = tx->inflight;		/* empty: reuse its memory next time */
	tx->inflight = tx->pending;
	tx->pending = swap;
	util_buf_reset(&tx->pending);
	tx->job = kind;
	if (kind == TXJ_COMMIT)
		tx->whole = !tx->spooled;
	if (kind == TXJ_WRITE || kind == TXJ_COMMIT)
		tx->spooled = true;
	util_pool_submit_held(tx->ctx->pool, conn_tx_job_run, tx);
}

static void
conn_tx_free(struct conn_tx *tx)
{
	spool_msg_free(&tx->msg);	/* committed or never written: no disk work */
	spool_env_clear(&tx->env);
	util_buf_clear(&tx->pending);
	util_buf_clear(&tx->inflight);
	free(tx->hostname);
	free(tx->sync_path);
	util_buf_clear(&tx->head);
	util_buf_clear(&tx->log_lines);
	event_free(tx->done_ev);
	tx->ctx->ntx--;
	free(tx);
}

/* Released and idle: remove uncommitted content off the loop, then free. */
static void
conn_tx_dispose(struct conn_tx *tx)
{
	if (tx->msg != NULL && !tx->committed)
		conn_tx_start(tx, tx->keep_suffix != NULL && !tx->failed &&
		    spool_keeps(tx->ctx->spool) ? TXJ_KEEP : TXJ_ABORT);
	else
		conn_tx_free(tx);
}

/* The commit is over (rc 0: the message is accepted). */
static void
conn_tx_committed(struct conn_tx *tx, int rc)
{
	tx->committed = rc == 0;
	if (tx->committed) {
		struct util_buf st = { 0 };
		char safe[400], from[600];
		for (size_t i = 0; i < tx->env.nstate; i++)
			util_buf_printf(&st, "%s%s=%s", i > 0 ? " " : "",
			    tx->env.state[2 * i], tx->env.state[2 * i + 1]);
		log_event(LOG_LVL_INFO, "accepted", tx->env.sid, tx->env.qid,
		    "size=%ju rcpts=%zu from=<%s> state=\"%s\"",
		    (uintmax_t)tx->env.size, tx->env.nrcpts,
		    log_safe_word_into(from, sizeof(from), tx->env.sender,
		    strlen(tx->env.sender)),
		    log_safe_into(safe, sizeof(safe), st.len > 0 ?
		    st.data : "", st.len));
		util_buf_clear(&st);
		metrics_inc(MET_MSG_ACCEPTED, 0, 0);
		metrics_add(MET_MSG_BYTES, 0, 0, tx->env.size);
		if (!tx->delivered)
			queue_submit(tx->ctx->queue, tx->env.qid);
	}
	if (tx->arg == NULL)
		conn_tx_dispose(tx);
	else	/* last: the connection may release and free tx */
		tx->ops->committed_cb(tx->arg, rc, tx->err);
}

/*
 * The sync request's outcome, logged once, heard or not.  When the client
 * left before its reply, anything but a 2xx that came first is the
 * cancellation: the service's answer no longer decides anything.
 */
static void
conn_tx_sync_settle(struct conn_tx *tx)
{
	struct deliver_rcpt_status *st = &tx->sync_st;
	const struct spool_env *env = &tx->env;
	const char *result = st->result == DELIVER_OK ? "delivered" :
	    st->result == DELIVER_PERMFAIL ? "refused" : "deferred";
	char safe[300], why[sizeof(st->text) * 4];

	if (tx->sync_left != NULL && st->result != DELIVER_OK) {
		util_strjoin(st->text, sizeof(st->text), "4.4.1 ",
		    tx->sync_left, NULL);
		st->result = DELIVER_TEMPFAIL;
		result = "cancelled";
	}
	/* The status text is the service's answer as it wrote it, or ours. */
	log_event(st->result == DELIVER_OK || tx->sync_left != NULL ?
	    LOG_LVL_INFO : LOG_LVL_WARN, "sync-webhook", env->sid, env->qid,
	    "rcpt=<%s> result=%s why=\"%s\"", log_safe_word_into(safe,
	    sizeof(safe), env->rcpts[0].addr, strlen(env->rcpts[0].addr)),
	    result, log_safe_into(why, sizeof(why), st->text,
	    strlen(st->text)));
}

static void
conn_tx_job_done_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn_tx *tx = arg;
	enum tx_job kind = tx->job;

	(void)fd;
	(void)what;
	log_put(tx->log_lines.data, tx->log_lines.len);
	util_buf_reset(&tx->log_lines);
	tx->job = TXJ_NONE;
	util_buf_reset(&tx->inflight);
	if (kind == TXJ_ABORT || kind == TXJ_KEEP) {
		conn_tx_free(tx);
		return;
	}
	if (kind == TXJ_SYNC) {
		/* Never committed: the content goes with the transaction. */
		if (tx->job_rc == -1) {
			snprintf(tx->sync_st.text, sizeof(tx->sync_st.text),
			    "4.3.0 %s", tx->err);
			tx->sync_st.result = DELIVER_TEMPFAIL;
		}
		conn_tx_sync_settle(tx);
		if (tx->arg == NULL)
			conn_tx_dispose(tx);
		else
			tx->ops->synced_cb(tx->arg, &tx->sync_st);
		return;
	}
	if (tx->job_rc == -1 && !tx->failed) {
		tx->failed = true;
		log_event(LOG_LVL_ERROR, "spool-error", tx->env.sid,
		    tx->env.qid, "why=\"%s\"", tx->err);
	}
	if (tx->sync_pending && tx->failed) {
		tx->job = TXJ_SYNC;	/* reported as the sync job's failure */
		tx->job_rc = -1;
		tx->sync_pending = false;
		conn_tx_job_done_cb(-1, 0, tx);
		return;
	}
	if (kind == TXJ_COMMIT || kind == TXJ_FAST ||
	    (tx->commit_wanted && tx->failed)) {
		conn_tx_committed(tx, tx->failed ? -1 : 0);
		return;
	}
	if (tx->arg == NULL) {
		conn_tx_dispose(tx);
		return;
	}
	if (tx->sync_pending) {
		tx->sync_pending = false;
		conn_tx_start(tx, TXJ_SYNC);
	} else if (tx->commit_wanted)
		conn_tx_start(tx, TXJ_COMMIT);	/* spooled already: no fast path */
	else if (tx->pending.len >= TX_FLUSH_AT && !tx->failed)
		conn_tx_start(tx, TXJ_WRITE);
	tx->ops->drained_cb(tx->arg);
}

int
conn_tx_write(struct conn_tx *tx, const char *buf, size_t len)
{
	ASSERT(tx->msg != NULL);
	if (tx->failed)
		return -1;
	if (tx->pending.cap == 0)
		util_buf_reserve(&tx->pending, TX_FIRST_BUF);
	util_buf_add(&tx->pending, buf, len);
	tx->env.size += len;
	if (tx->job == TXJ_NONE && tx->pending.len >= TX_FLUSH_AT)
		conn_tx_start(tx, TXJ_WRITE);
	return 0;
}

bool
conn_tx_failed(const struct conn_tx *tx)
{
	return tx->failed;
}

void
conn_tx_refusal(const struct conn_tx *tx, struct smtp_reply *r)
{
	if (tx->full) {
		r->code = 452;
		util_strlcpy(r->text, "4.3.1 Insufficient system storage, try "
		    "again later", sizeof(r->text));
	} else {
		r->code = 451;
		util_strlcpy(r->text, "4.3.0 Local error in processing, try "
		    "again later", sizeof(r->text));
	}
}

bool
conn_tx_flushed(const struct conn_tx *tx)
{
	return tx->job == TXJ_NONE && tx->pending.len == 0;
}

bool
conn_tx_flush(struct conn_tx *tx)
{
	if (tx->job == TXJ_NONE && tx->pending.len > 0 && !tx->failed)
		conn_tx_start(tx, TXJ_WRITE);
	return conn_tx_flushed(tx);
}

const char *
conn_tx_memory(const struct conn_tx *tx, size_t *len_out)
{
	if (tx->spooled || tx->failed || tx->job != TXJ_NONE ||
	    tx->head_set)
		return NULL;
	*len_out = tx->pending.len;
	return tx->pending.data != NULL ? tx->pending.data : "";
}

char *
conn_tx_path(const struct conn_tx *tx)
{
	return spool_content_path(tx->ctx->spool, tx->env.qid);
}

bool
conn_tx_backlogged(const struct conn_tx *tx)
{
	return tx->pending.len >= TX_BACKLOG_MAX;
}

void
conn_tx_commit(struct conn_tx *tx)
{
	ASSERT(tx->msg != NULL && !tx->commit_wanted);
	tx->commit_wanted = true;
	if (tx->job != TXJ_NONE)
		return;		/* the running write starts the commit */
	if (tx->failed) {
		/* Report on the loop, never from inside the caller. */
		tx->job = TXJ_COMMIT;
		tx->job_rc = -1;
		event_active(tx->done_ev, EV_TIMEOUT, 1);
		return;
	}
	conn_tx_start(tx, conn_tx_can_fast(tx) ? TXJ_FAST : TXJ_COMMIT);
}

bool
conn_tx_committing(const struct conn_tx *tx)
{
	return tx->commit_wanted;
}

void
conn_tx_sync(struct conn_tx *tx, void *runtime, uint64_t timeout_ms)
{
	ASSERT(tx->msg != NULL && !tx->commit_wanted &&
	    tx->env.nrcpts == 1);
	tx->commit_wanted = true;	/* no more content, no commit either */
	tx->sync_runtime = runtime;
	tx->sync_ms = timeout_ms;
	if (tx->job != TXJ_NONE) {
		tx->sync_pending = true;	/* the running write starts it */
		return;
	}
	conn_tx_start(tx, TXJ_SYNC);
}

void
conn_tx_client_left(struct conn_tx *tx, const char *why)
{
	if (tx->sync_left != NULL)
		return;		/* the first reason stands */
	tx->sync_left = why;
	if (tx->sync_runtime != NULL)
		deliver_webhook_sync_cancel(tx->sync_runtime,
		    &tx->sync_cancel);
	else	/* a request to come is cancelled as it starts */
		atomic_store(&tx->sync_cancel, true);
}

void
conn_tx_set_head(struct conn_tx *tx, size_t offset, size_t old_len,
    struct util_buf *head)
{
	ASSERT(!tx->commit_wanted && offset + old_len <= tx->env.size);
	tx->head_off = offset;
	util_buf_clear(&tx->head);
	tx->head = *head;
	*head = (struct util_buf){ 0 };
	tx->head_old = old_len;
	tx->head_set = true;
	tx->env.size = tx->env.size - old_len + tx->head.len;
}

void
conn_tx_keep_uncommitted(struct conn_tx *tx, const char *suffix)
{
	tx->keep_suffix = suffix;
}

void
conn_tx_release(struct conn_tx **txp)
{
	struct conn_tx *tx = *txp;

	if (tx == NULL)
		return;
	*txp = NULL;
	tx->arg = NULL;
	if (tx->job == TXJ_SYNC)
		conn_tx_client_left(tx, "the session ended before its reply");
	if (tx->job == TXJ_NONE)
		conn_tx_dispose(tx);
	/* else: the job's completion disposes of it */
}
