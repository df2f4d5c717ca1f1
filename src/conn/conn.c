/*
 * conn/conn.c: one client connection once it is under way.  Moves bytes
 * between the socket (a libevent bufferevent) and the SMTP dialogue (the
 * smtp hooks: replies out in batches, refusals logged and counted,
 * commands traced), and owns the socket's events, the timeouts, the close
 * and the free.  Its start is start.c's, TLS handshake.c's, the stages
 * stage.c's (conn_decide_cb()).  Knows nothing of how actions deliver.
 */
#include "conn/conn.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "chain/chain.h"
#include "config/config.h"
#include "conn/conn_private.h"
#include "log/log.h"
#include "metrics/metrics.h"
#include "route/route.h"
#include "smtp/smtp.h"
#include "tls/tls.h"

#define CONN_OUT_HIGH	(256 * 1024)	/* unsent replies that pause parsing */
#define CONN_OUT_BATCH	(16 * 1024)	/* replies gathered before a write */
#define CONN_LAST_FLUSH_MS 2000		/* a closing session's last reply */
#define CONN_CLIENT_LEFT "the client left before its reply"

/*
 * Count a refusal by the stage of the dialogue it answers, as its log
 * line names it: the greeting's place ("connect"), the command in hand
 * (its verb), or none ("command": an idle timeout's or a stop's 421, a
 * reply to a line too long, to an empty line, to a verb of no stage).  A
 * reply to DATA or BDAT, or a refusal while the text streams, is "data";
 * the reply to the message's end "eom".
 */
static void
conn_count_refusal(struct conn *c, char cls)
{
	static const struct { const char *verb; unsigned stage; } stages[] = {
		{ "EHLO", MET_ST_HELO }, { "HELO", MET_ST_HELO },
		{ "STARTTLS", MET_ST_STARTTLS }, { "AUTH", MET_ST_AUTH },
		{ "MAIL", MET_ST_MAIL }, { "RCPT", MET_ST_RCPT },
		{ "DATA", MET_ST_DATA }, { "BDAT", MET_ST_DATA },
		{ "QUIT", MET_ST_QUIT },
	};
	unsigned st = c->greeted ? MET_ST_COMMAND : MET_ST_CONNECT;

	for (size_t i = 0; i < sizeof(stages) / sizeof(stages[0]); i++)
		if (strcmp(c->last_verb, stages[i].verb) == 0)
			st = stages[i].stage;
	if (st == MET_ST_DATA && smtp_session_at_eom(c->smtp))
		st = MET_ST_EOM;
	metrics_inc(MET_REPLIES_REFUSED, st, cls == '5');
}

/* Log every refusal, whoever made it (smtp/ or a stage above). */
static void
conn_log_reply(struct conn *c, const char *buf, size_t len)
{
	char why[400], verb[4 * sizeof(c->last_verb)];
	const char *sp, *end = memchr(buf, '\r', len);
	size_t n = end != NULL ? (size_t)(end - buf) : len;

	if (n < 4 || (buf[0] != '4' && buf[0] != '5'))
		return;
	conn_count_refusal(c, buf[0]);
	sp = buf + 4;
	size_t esc_len = util_esc_len(sp);
	bool has_esc = esc_len > 0 && esc_len < n - 4 && sp[esc_len] == ' ';
	const char *text = has_esc ? sp + esc_len + 1 : sp;
	log_event(LOG_LVL_INFO, "reject", c->sid,
	    c->tx != NULL && conn_tx_env(c->tx)->qid[0] != '\0' ?
	    conn_tx_env(c->tx)->qid : NULL,
	    "stage=%s code=%.3s esc=%.*s why=\"%s\"",
	    !c->greeted ? "connect" : c->last_verb[0] == '\0' ? "command" :
	    log_safe_word_into(verb, sizeof(verb), c->last_verb,
	    strlen(c->last_verb)), buf,
	    has_esc ? (int)esc_len : 1, has_esc ? sp : "-",
	    log_safe_into(why, sizeof(why), text, n - (size_t)(text - buf)));
}

/*
 * Write the replies gathered in this turn at once: one write(2), or one
 * TLS record, for an EHLO reply or the answers to a pipelined group, not
 * one per line (with TCP_NODELAY, each small write would be a segment of
 * its own; without it, the second one waits for the peer's delayed ACK).
 */
void
conn_flush_out(struct conn *c)
{
	const char *buf = c->out.data;
	size_t len = c->out.len;

	if (len == 0)
		return;
	if (c->peer_gone) {
		util_buf_reset(&c->out);
		return;
	}
	/*
	 * Nothing queued before it: try the socket itself, which spares
	 * the write event's add and delete for the usual short batch.  What
	 * it does not take is queued as ever, so the order holds.
	 */
	if (c->plain_fd && evbuffer_get_length(bufferevent_get_output(c->bev))
	    == 0) {
		ssize_t n = send(bufferevent_getfd(c->bev), buf, len,
		    MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n > 0) {
			buf += n;
			len -= (size_t)n;
		}
	}
	if (len > 0)
		bufferevent_write(c->bev, buf, len);
	util_buf_reset(&c->out);
}

/*
 * The last line of a reply (buf holds whole lines) that answers what was
 * in hand: the greeting, or a command; a 334 or a 354 goes on with it.
 */
static bool
conn_reply_answers(const char *buf, size_t len)
{
	size_t i = len >= 2 ? len - 2 : 0;	/* before the last CRLF */

	while (i > 0 && buf[i - 1] != '\n')
		i--;
	return (len - i < 4 || buf[i + 3] != '-') && buf[i] != '3';
}

/*
 * Replies gather in c->out until the turn's end (conn_flush_out()).  One
 * after the answer to the command in hand answers none (a timeout's 421,
 * a stop's) until the next command line.
 */
static void
conn_send_cb(void *arg, const char *buf, size_t len)
{
	struct conn *c = arg;

	conn_log_reply(c, buf, len);
	if (conn_reply_answers(buf, len)) {
		c->greeted = true;
		c->last_verb[0] = '\0';
	}
	if (c->peer_gone)
		return;
	util_buf_add(&c->out, buf, len);
	if (c->out.len >= CONN_OUT_BATCH)
		conn_flush_out(c);
}

static void
conn_trace_cb(void *arg, bool from_peer, const char *line, size_t len)
{
	struct conn *c = arg;

	if (from_peer) {
		size_t n = 0;

		while (n < len && n < sizeof(c->last_verb) - 1 &&
		    line[n] != ' ' && line[n] != '\r' && line[n] != '\n') {
			char ch = line[n];
			c->last_verb[n++] = (ch >= 'a' && ch <= 'z') ?
			    (char)(ch - 32) : ch;
		}
		c->last_verb[n] = '\0';
		/* A SASL answer: what it gets is AUTH's outcome. */
		if (len == strlen(SMTP_TRACE_AUTH_ANSWER) &&
		    memcmp(line, SMTP_TRACE_AUTH_ANSWER, len) == 0)
			strcpy(c->last_verb, "AUTH");
		/* A line too long is no command of any stage. */
		if (len == strlen(SMTP_TRACE_LINE_TOO_LONG) &&
		    memcmp(line, SMTP_TRACE_LINE_TOO_LONG, len) == 0)
			c->last_verb[0] = '\0';
		if (c->px != NULL)
			conn_proxy_line(c, line, len);
		if (log_enabled(LOG_LVL_DEBUG)) {
			char safe[300];
			log_event(LOG_LVL_DEBUG, "command", c->sid, NULL,
			    "line=\"%s\"", log_safe_into(safe, sizeof(safe),
			    line, len));
		}
	}
	log_translog_line(c->translog, from_peer ? LOG_TL_IN : LOG_TL_OUT, line,
	    len);
}

/* Session-wide chain policies (nomail every-command, trap) on any command. */
static enum smtp_verdict
conn_command_cb(void *arg, const char *verb, struct smtp_reply *r)
{
	struct conn *c = arg;
	struct chain_result res;

	if (conn_proxy_refuses_auth(c, verb, r))
		return SMTP_REJECT;
	if (c->cs == NULL || chain_session_is_running(c->cs) ||
	    !chain_session_check_command(c->cs, verb, &res))
		return SMTP_OK;
	*r = res.reply;
	return res.verdict;
}

/*
 * Bytes from the peer beyond the feed under way: the rest of the input
 * buffer, what TLS holds decrypted or not, what the kernel holds.
 */
static bool
conn_input_pending_cb(void *arg)
{
	struct conn *c = arg;
	struct bufferevent *under = bufferevent_get_underlying(c->bev);
	SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
	int n = 0;

	if (evbuffer_get_length(bufferevent_get_input(c->bev)) > c->feeding)
		return true;
	if (ssl != NULL && SSL_pending(ssl) > 0)
		return true;
	if (under != NULL && evbuffer_get_length(bufferevent_get_input(under)))
		return true;
	return ioctl(bufferevent_getfd(under != NULL ? under : c->bev),
	    FIONREAD, &n) == 0 && n > 0;
}

/*
 * The client talked when it had to wait (before the greeting, or before
 * a reply it must wait for): a fact for every later stage, a log line and
 * a note in the transaction log, once per session.  bytes: how many it
 * sent, or SIZE_MAX when not known.
 */
void
conn_note_early_talker(struct conn *c, const char *when, size_t bytes)
{
	char note[120];
	int n;

	if (c->early_talker)
		return;
	c->early_talker = true;
	if (bytes != SIZE_MAX)
		log_event(LOG_LVL_WARN, "early-talker", c->sid, NULL, "ip=%s "
		    "bytes=%zu when=\"%s\"", c->ip, bytes, when);
	else
		log_event(LOG_LVL_WARN, "early-talker", c->sid, NULL, "ip=%s "
		    "when=\"%s\"", c->ip, when);
	if (c->cs != NULL)
		chain_session_set_early_talker(c->cs);
	n = snprintf(note, sizeof(note), "early talker: %s", when);
	log_translog_line(c->translog, LOG_TL_NOTE, note, (size_t)n);
}

/* The client did not wait for a reply (smtp/ saw it): close, or go on. */
static bool
conn_early_talker_cb(void *arg, const char *when)
{
	struct conn *c = arg;

	conn_note_early_talker(c, when, SIZE_MAX);
	return !conn_cfg(c)->early_talker_continue;
}

const struct smtp_hooks conn_smtp_hooks = {
	.send_cb = conn_send_cb,
	.decide_cb = conn_decide_cb,
	.body_cb = conn_body_cb,
	.reset_cb = conn_reset_cb,
	.trace_cb = conn_trace_cb,
	.command_cb = conn_command_cb,
	.input_pending_cb = conn_input_pending_cb,
	.early_talker_cb = conn_early_talker_cb,
};

/* ----- socket events ----- */

/*
 * A peer that does not read our replies; reading has its own deadlines.
 * Under a STARTTLS filter the socket's bufferevent watches: the filter's
 * write timeout runs while nothing waits to be written too, and an idle
 * session would hear of a write timeout instead of its 421.
 */
static void
conn_set_timeouts(struct conn *c)
{
	const struct config_limits *lim = &conn_cfg(c)->limits;
	uint64_t ms = c->in_data ? lim->data_idle_ms : lim->idle_ms;
	struct timeval tv = util_timeval_ms(ms);
	struct bufferevent *under = bufferevent_get_underlying(c->bev);

	bufferevent_set_timeouts(under != NULL ? under : c->bev, NULL, &tv);
}

/*
 * What the session waits for is called off (a credential check, a
 * lookup, a refused AUTH's tarpit, the upstream, the chain): nothing
 * answers it after this.  Its transaction stays, for the caller.
 */
static void
conn_call_off(struct conn *c)
{
	conn_auth_abandon(&c->auth_job);
	route_resolve_cancel(&c->route_q);
	if (c->tarpit_ev != NULL)
		evtimer_del(c->tarpit_ev);
	c->eom_flushing = false;
	conn_proxy_free(c);
	chain_session_free(&c->cs);	/* runs the disconnect chain */
}

void
conn_free(struct conn *c)
{
	struct conn_ctx *ctx = c->ctx;

	log_event(LOG_LVL_INFO, "disconnect", c->sid, NULL,
	    "ip=%s messages=%u duration_ms=%ju", c->ip, c->nmsgs,
	    (uintmax_t)(util_now_ms() - c->start_ms));
	conn_tx_release(&c->tx);
	conn_call_off(c);
	if (c->tarpit_ev != NULL)
		event_free(c->tarpit_ev);
	chain_loop_unref(&c->chain_loop);
	free(c->wait_arg);
	smtp_session_free(&c->smtp);
	util_buf_clear(&c->out);
	conn_read_plain_stop(c);	/* before the socket closes */
	bufferevent_free(c->bev);
	event_free(c->deadline_ev);
	conn_deadline_clear(c);
	if (c->greet_ev != NULL)
		event_free(c->greet_ev);
	if (c->flush_ev != NULL)
		event_free(c->flush_ev);
	if (c->hs_ev != NULL)
		event_free(c->hs_ev);
	log_translog_close(&c->translog);
	conn_rt_unref(&c->rt);
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		ctx->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	ctx->nconns--;
	if (ctx->closed_cb != NULL)
		ctx->closed_cb(ctx->closed_arg, c->ip);
	free(c);
}

static void
conn_flush_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	conn_check_close(arg);
}

/* Bytes not yet handed to the kernel, through a TLS filter if there is one. */
static size_t
conn_output_pending(struct conn *c)
{
	struct bufferevent *under = bufferevent_get_underlying(c->bev);
	size_t n = evbuffer_get_length(bufferevent_get_output(c->bev));

	if (under != NULL)
		n += evbuffer_get_length(bufferevent_get_output(under));
	return n;
}

/*
 * Shutdown: a session between commands gets 421 and closes; one in DATA or
 * waiting for a decision goes on (and is looked at again after each
 * event); one in a TLS handshake has no channel for a 421 and could not
 * finish the handshake without reading: it is dropped.  True when c was
 * freed.
 */
static bool
conn_shutdown_one(struct conn *c)
{
	if (c->closing || smtp_session_is_closing(c->smtp))
		return false;
	if (conn_in_handshake(c)) {
		log_event(LOG_LVL_INFO, "shutdown", c->sid, NULL,
		    "why=\"dropped in the TLS handshake\"");
		c->peer_gone = true;
		conn_free(c);
		return true;
	}
	if (!smtp_session_in_data(c->smtp) &&
	    !smtp_session_is_waiting(c->smtp))
		conn_close_stopping(c);
	return false;
}

void
conn_close_stopping(struct conn *c)
{
	smtp_session_close_with(c->smtp, 421,
	    "4.3.2 Service shutting down, closing channel");
}

void
conn_resume(struct conn *c, enum smtp_verdict v, const struct smtp_reply *r)
{
	if (v != SMTP_PENDING)
		smtp_session_resume(c->smtp, v, r);
	conn_process_input(c);
	conn_check_close(c);
}

/* After the peer's end of file: everything it sent has been answered. */
static bool
conn_answered_all(struct conn *c)
{
	return evbuffer_get_length(bufferevent_get_input(c->bev)) == 0 &&
	    !smtp_session_is_waiting(c->smtp) &&
	    (c->tx == NULL || !conn_tx_backlogged(c->tx)) &&
	    !conn_proxy_backlogged(c);
}

/*
 * A message's end is in others' hands (the commit, a sync action's web
 * service, a proxy's upstream): only their outcome answers it, as the
 * message may be accepted.
 */
static bool
conn_eom_out(const struct conn *c)
{
	return (c->tx != NULL && conn_tx_committing(c->tx)) ||
	    conn_proxy_eom_out(c);
}

/*
 * After the peer's end of file, a command (or the greeting, or a
 * message's end) still waiting on a handler, a lookup or a tarpit, with
 * nothing sent after it: the client hung up, it did not just shut its
 * side (it would have sent the rest first, QUIT at least), and nobody
 * will read the reply (RFC 5321 4.1.1.10).  Its session ends now and
 * frees its slot, not when the wait is over.  A QUIT in wait is that
 * rest itself: it still gets its 221.
 */
static bool
conn_client_left(struct conn *c)
{
	return c->rd_eof && !c->closing && smtp_session_is_waiting(c->smtp) &&
	    evbuffer_get_length(bufferevent_get_input(c->bev)) == 0 &&
	    !conn_eom_out(c) && strcmp(c->last_verb, "QUIT") != 0;
}

/* The last reply gets a short while, not the session's time. */
static void
conn_closing_start(struct conn *c)
{
	struct timeval tv = util_timeval_ms(CONN_LAST_FLUSH_MS);

	c->closing = true;
	conn_read_disable(c);
	evtimer_add(c->deadline_ev, &tv);
}

/* Free once the session is over and its last reply is on the wire. */
void
conn_check_close(struct conn *c)
{
	if (c->ctx->shutting_down && conn_shutdown_one(c))
		return;
	if (conn_client_left(c)) {
		log_event(LOG_LVL_INFO, "lost", c->sid, NULL, "why=\"%s\"",
		    CONN_CLIENT_LEFT);
		c->peer_gone = true;
		conn_free(c);
		return;
	}
	conn_flush_out(c);
	if (!c->closing && !smtp_session_is_closing(c->smtp) &&
	    !(c->rd_eof && conn_answered_all(c)))
		return;
	if (!c->closing && !smtp_session_is_closing(c->smtp) &&
	    smtp_session_in_data(c->smtp))
		log_event(LOG_LVL_INFO, "lost", c->sid, NULL,
		    "why=\"connection closed in DATA\"");
	if (!c->closing)
		conn_closing_start(c);
	if (!c->peer_gone)
		conn_tls_close(c);
	if (c->peer_gone || conn_output_pending(c) == 0) {
		conn_free(c);
		return;
	}
	if (bufferevent_get_underlying(c->bev) != NULL) {
		/*
		 * Under TLS our write callback fires when the filter hands its
		 * bytes down, not when the socket takes them: look again soon
		 * (the session deadline bounds a peer that never reads).
		 */
		struct timeval tv = { 0, 10000 };
		if (c->flush_ev == NULL)
			c->flush_ev = evtimer_new(c->ctx->base, conn_flush_cb,
			    c);
		evtimer_add(c->flush_ev, &tv);
	}
}

void
conn_process_input(struct conn *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	struct evbuffer *out = bufferevent_get_output(c->bev);
	size_t fed = 0;

	while (evbuffer_get_length(in) > 0 && !c->closing &&
	    !smtp_session_is_closing(c->smtp) &&
	    !smtp_session_is_waiting(c->smtp) &&
	    (c->tx == NULL || !conn_tx_backlogged(c->tx)) &&
	    !conn_proxy_backlogged(c) &&
	    evbuffer_get_length(out) + c->out.len < CONN_OUT_HIGH) {
		size_t n = evbuffer_get_contiguous_space(in);
		const char *p = (const char *)evbuffer_pullup(in, (ssize_t)n);
		c->feeding = n;
		size_t used = smtp_session_feed(c->smtp, p, n);
		c->feeding = 0;
		evbuffer_drain(in, used);
		fed += used;
		if (used < n)
			break;
	}
	conn_flush_out(c);
	if (smtp_session_in_data(c->smtp) != c->in_data) {
		c->in_data = !c->in_data;
		conn_set_timeouts(c);
	}
	if (c->tls_pending)
		conn_starttls(c);
	else if (!c->closing && !smtp_session_is_closing(c->smtp))
		conn_read_enable(c);
	conn_deadline_update(c, fed);
}

void
conn_readable(struct conn *c)
{
	if (!c->started) {
		conn_early_talker(c);
		return;
	}
	conn_process_input(c);
	conn_check_close(c);
}

static void
conn_read_cb(struct bufferevent *bev, void *arg)
{
	(void)bev;
	conn_readable(arg);
}

static void
conn_write_cb(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;

	(void)bev;
	if (!c->closing)
		conn_process_input(c);	/* output drained below its mark */
	conn_check_close(c);
}

/* 421 4.4.2 naming the limit that passed, and close. */
static void
conn_close_timed_out(struct conn *c, const char *why)
{
	char text[128];

	util_snprintf(text, sizeof(text), "4.4.2 %s Error: %s",
	    conn_cfg(c)->hostname, why);
	smtp_session_close_with(c->smtp, 421, text);
}

void
conn_timeout(struct conn *c, const char *why)
{
	log_event(LOG_LVL_INFO, "timeout", c->sid, NULL, "what=\"%s\"", why);
	if (c->closing || smtp_session_is_closing(c->smtp)) {
		c->peer_gone = true;	/* it does not even read: give up */
		conn_check_close(c);
		return;
	}
	/*
	 * A message's end with the commit, a sync web service or a proxy's
	 * upstream cannot be called off, and their answer may be that the
	 * message is taken: that answer is its reply, the 421 comes after
	 * it (conn_eom_answered).  Each of them ends in bounded time.
	 */
	if (smtp_session_is_waiting(c->smtp) && conn_eom_out(c)) {
		c->timed_out = why;
		return;
	}
	/*
	 * The 421 takes the place of the reply a command still waits for
	 * (the session's time limit, a write timeout): the wait is called
	 * off, or a chain that ends in the last reply's while could commit
	 * a message after it.
	 */
	if (smtp_session_is_waiting(c->smtp))
		conn_call_off(c);
	conn_close_timed_out(c, why);
	conn_check_close(c);
}

void
conn_eom_answered(struct conn *c)
{
	if (c->ctx->shutting_down)
		conn_close_stopping(c);
	else if (c->timed_out != NULL)
		conn_close_timed_out(c, c->timed_out);
}

static void
conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct conn *c = arg;

	(void)bev;
	if (what & BEV_EVENT_CONNECTED) {
		conn_tls_done(c);
		return;
	}
	if (what & BEV_EVENT_TIMEOUT) {
		conn_timeout(c, (what & BEV_EVENT_WRITING) ?
		    "write timeout" : "timeout exceeded");
		return;
	}
	conn_tls_note(c);	/* a handshake over, though not reported yet */
	if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR))
		conn_eof(c);
	else
		conn_lost(c);
}

/*
 * A client may send its last commands and shut its side down (a half
 * close) before it reads their replies: each is still answered, a message
 * it ended still gets its 250 (RFC 5321 4.1.1.10: no close before QUIT's
 * reply).  Then, or at once when nothing is left, the session closes; a
 * message cut short in DATA is lost as ever.  A client that closes with
 * nothing sent after its message, not even QUIT, has left before the
 * reply (RFC 5321 4.1.1.10: the server MUST cancel the pending
 * transaction): what still waits for a web service in sync mode is
 * cancelled, not answered for, and a command still waiting on a decision
 * is not answered at all (conn_client_left()).
 */
void
conn_eof(struct conn *c)
{
	if (!c->started || c->closing || c->tls_pending ||
	    conn_in_handshake(c)) {
		conn_lost(c);
		return;
	}
	c->rd_eof = true;
	if (c->tx != NULL &&
	    evbuffer_get_length(bufferevent_get_input(c->bev)) == 0)
		conn_tx_client_left(c->tx, CONN_CLIENT_LEFT);
	conn_read_disable(c);
	conn_check_close(c);
}

/*
 * Why TLS failed, if it did.  The TLS bufferevent keeps, newest last,
 * OpenSSL's error queue entries and also the SSL_get_error() kind of the
 * failure (a small number, no queue entry): the newest entry is the why;
 * a failure of the socket below TLS has no entry at all.
 */
static void
conn_log_tls_error(struct conn *c)
{
	unsigned long e, entry = 0;
	bool syscall = false;
	char buf[256];

	while ((e = bufferevent_get_openssl_error(c->bev)) != 0) {
		if (ERR_GET_LIB(e) == 0)
			syscall |= e == SSL_ERROR_SYSCALL;
		else if (entry == 0)
			entry = e;
	}
	if (entry != 0)
		ERR_error_string_n(entry, buf, sizeof(buf));
	else if (syscall)
		util_strlcpy(buf, "connection closed during TLS", sizeof(buf));
	else
		return;
	log_event(LOG_LVL_INFO, "tls-error", c->sid, NULL, "why=\"%s\"", buf);
}

/* EOF or error: nobody is left to answer. */
void
conn_lost(struct conn *c)
{
	conn_log_tls_error(c);
	if (c->tx != NULL)
		conn_tx_client_left(c->tx, CONN_CLIENT_LEFT);
	if (smtp_session_in_data(c->smtp))
		log_event(LOG_LVL_INFO, "lost", c->sid, NULL,
		    "why=\"connection closed in DATA\"");
	if (!c->closing) {
		/*
		 * What TLS said last (a failed handshake's alert) may wait
		 * under the STARTTLS filter: it gets the last reply's short
		 * while, and nothing of ours follows it.
		 */
		c->tls_ended = true;
		if (conn_tls_drain_under(c)) {
			conn_closing_start(c);
			conn_check_close(c);
			return;
		}
	}
	c->peer_gone = true;
	conn_free(c);
}

void
conn_bev_attach(struct conn *c)
{
	bufferevent_setcb(c->bev, conn_read_cb, conn_write_cb, conn_event_cb,
	    c);
	bufferevent_setwatermark(c->bev, EV_READ, 0, CONN_READ_HIGH);
	bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
	conn_set_timeouts(c);
}

void
conn_shutdown_all(struct conn_ctx *ctx)
{
	struct conn *c, *next;

	ASSERT(ctx->shutting_down);
	for (c = ctx->conns; c != NULL; c = next) {
		next = c->next;
		conn_check_close(c);	/* conn_shutdown_one() decides */
	}
}

/*
 * The grace is over.  A session still under way gets 421 4.3.2, as one
 * between commands got it when the stop began (RFC 5321 3.8: a server
 * forced to shut down SHOULD send 421, which may answer any command),
 * after what it waited for is called off, with the usual short while for
 * its last reply.  That is one whose greeting, command or message's end
 * waits on a handler, a lookup or a tarpit (the 421 in place of that
 * reply), one in a message's text or between two BDAT chunks (nothing
 * of that message was committed: the client reads the 421 when it next
 * reads).  One whose message is being committed is left to the commit
 * (a disk job the loop waits for anyway; a sync request is cancelled by
 * the stop now), whose reply then closes it: a 421 would deny a message
 * that may be accepted.  The rest go at once, silent: in a TLS
 * handshake, closing already, or with a message's end up at a proxy's
 * upstream.
 */
static void
conn_kill_one(struct conn *c)
{
	if (c->tx != NULL && conn_tx_committing(c->tx))
		return;
	if (c->closing || conn_in_handshake(c) || conn_eom_out(c)) {
		c->peer_gone = true;
		conn_free(c);
		return;
	}
	conn_call_off(c);
	conn_close_stopping(c);
	conn_check_close(c);
}

void
conn_kill_all(struct conn_ctx *ctx)
{
	struct conn *c, *next;

	for (c = ctx->conns; c != NULL; c = next) {
		next = c->next;
		conn_kill_one(c);
	}
}

void
conn_free_all(struct conn_ctx *ctx)
{
	while (ctx->conns != NULL) {
		ctx->conns->peer_gone = true;
		conn_free(ctx->conns);
	}
}
