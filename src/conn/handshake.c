/*
 * conn/handshake.c: TLS on a client connection.  STARTTLS drops what the
 * client sent after it unread and swaps the bufferevent for a TLS filter
 * over the same socket; a handshake, STARTTLS or implicit, gets a
 * deadline; once it is over, what it agreed goes to the session, the log
 * and the metrics, and an implicit TLS session goes on to its greeting.
 * A clean close ends TLS with close_notify, and what TLS says last (that,
 * or a failed handshake's alert) goes out before the socket closes.
 * Knows nothing of certificates and contexts (tls/).
 */
#include "conn/conn_private.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <string.h>

#include "chain/chain.h"
#include "log/log.h"
#include "metrics/metrics.h"
#include "smtp/smtp.h"
#include "tls/tls.h"

bool
conn_in_handshake(const struct conn *c)
{
	return c->hs_ev != NULL && evtimer_pending(c->hs_ev, NULL);
}

/*
 * STARTTLS was accepted and its 220 queued: whatever the client sent after
 * it is thrown away unread (RFC 3207 4.2; CVE-2011-0411), and the
 * handshake runs over the same socket, after the 220.
 */
void
conn_starttls(struct conn *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	struct bufferevent *tbev;
	SSL *ssl = tls_server_ssl_new(c->tls);

	conn_flush_out(c);	/* the 220, in plain text, before the swap */
	c->tls_pending = false;
	if (evbuffer_get_length(in) > 0)
		log_event(LOG_LVL_WARN, "starttls-injection", c->sid, NULL,
		    "dropped=%zu", evbuffer_get_length(in));
	evbuffer_drain(in, evbuffer_get_length(in));
	conn_read_plain_stop(c);	/* the filter reads through the socket's */
	tbev = ssl == NULL ? NULL : bufferevent_openssl_filter_new(c->ctx->base,
	    c->bev, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
	if (tbev == NULL) {
		log_event(LOG_LVL_ERROR, "tls-error", c->sid, NULL,
		    "why=\"cannot start TLS\"");
		if (ssl != NULL)
			SSL_free(ssl);
		smtp_session_close_with(c->smtp, 421, "4.7.0 TLS not "
		    "available, closing channel");
		return;
	}
	c->bev = tbev;		/* owns the socket bufferevent now */
	c->plain_fd = false;
	conn_bev_attach(c);
	conn_hs_deadline(c);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

static void
conn_hs_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;

	(void)fd;
	(void)what;
	log_event(LOG_LVL_INFO, "tls-error", c->sid, NULL,
	    "why=\"handshake timed out\"");
	c->peer_gone = true;	/* no channel to say 421 on */
	conn_free(c);
}

/* A handshake gets the idle timeout to finish, whatever the peer sends. */
void
conn_hs_deadline(struct conn *c)
{
	uint64_t ms = conn_cfg(c)->limits.idle_ms;
	struct timeval tv = util_timeval_ms(ms);

	if (c->hs_ev == NULL)
		c->hs_ev = evtimer_new(c->ctx->base, conn_hs_timeout_cb, c);
	evtimer_add(c->hs_ev, &tv);
}

/*
 * What the handshake agreed, to the session, the log and the metrics,
 * once, as soon as it is over.  That may be before its end is reported:
 * the STARTTLS filter reads on past a handshake's last message before it
 * says so, so a client that closes at once (close_notify, then its end of
 * file) is heard first (conn.c's event callback notes it then).
 */
void
conn_tls_note(struct conn *c)
{
	SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
	struct tls_info ti;
	char sni[300];
	unsigned version;

	if (ssl == NULL || c->params.tls_active || !SSL_is_init_finished(ssl))
		return;
	if (c->hs_ev != NULL)
		evtimer_del(c->hs_ev);
	tls_session_info(ssl, &ti);
	version = strcmp(ti.protocol, "TLSv1.3") == 0 ? MET_TLS_13 :
	    strcmp(ti.protocol, "TLSv1.2") == 0 ? MET_TLS_12 : MET_TLS_OTHER;
	c->params.tls_active = true;
	if (c->cs != NULL)
		chain_session_set_tls(c->cs, ti.protocol, ti.cipher, ti.sni);
	util_strlcpy(c->tls_proto, ti.protocol, sizeof(c->tls_proto));
	conn_proxy_tls(c, ti.sni);	/* routes by the name it asked for */
	util_snprintf(c->tls_desc, sizeof(c->tls_desc), "version=%s cipher=%s "
	    "bits=%d", ti.protocol, ti.cipher, ti.bits);
	log_event(LOG_LVL_INFO, "tls", c->sid, NULL, "proto=%s cipher=%s "
	    "bits=%d sni=\"%s\" resumed=%s", ti.protocol, ti.cipher, ti.bits,
	    log_safe_into(sni, sizeof(sni), ti.sni, strlen(ti.sni)),
	    ti.resumed ? "yes" : "no");
	metrics_inc(MET_TLS_SESSIONS, version, 0);
	if (ti.resumed)
		metrics_inc(MET_TLS_RESUMED, version, 0);
	/* The session learns of TLS either way: AUTH depends on it. */
	smtp_session_tls_started(c->smtp);
}

/* The handshake is over: note what was agreed and go on. */
void
conn_tls_done(struct conn *c)
{
	conn_tls_note(c);
	if (!c->started) {
		/*
		 * Implicit TLS: the greeting comes after the handshake, and
		 * greeting-delay counts from there (RFC 8314 3.3: TLS first,
		 * then SMTP as on any other port).
		 */
		conn_greet_start(c);
		return;
	}
	conn_process_input(c);
	conn_check_close(c);
}

/* The socket took TLS's last records, or failed: the close goes on. */
static void
conn_tls_under_write_cb(struct bufferevent *bev, void *arg)
{
	(void)bev;
	conn_check_close(arg);
}

static void
conn_tls_under_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct conn *c = arg;

	(void)bev;
	(void)what;
	c->peer_gone = true;
	conn_check_close(c);
}

bool
conn_tls_drain_under(struct conn *c)
{
	struct bufferevent *under = bufferevent_get_underlying(c->bev);

	if (under == NULL ||
	    evbuffer_get_length(bufferevent_get_output(under)) == 0)
		return false;
	if (c->hs_ev != NULL)
		evtimer_del(c->hs_ev);	/* a failed one's: over too */
	bufferevent_disable(c->bev, EV_READ | EV_WRITE);
	bufferevent_setcb(under, NULL, conn_tls_under_write_cb,
	    conn_tls_under_event_cb, c);
	bufferevent_enable(under, EV_WRITE);
	return true;
}

/*
 * RFC 8446 6.1: a session that ends cleanly ends its TLS with
 * close_notify, after its last reply.  OpenSSL also keeps a session in
 * its cache only when it was shut down, so a TLS 1.2 client without
 * tickets resumes it next time.  One try: what the socket does not take
 * in the last reply's short while is dropped with it.
 */
void
conn_tls_close(struct conn *c)
{
	SSL *ssl = bufferevent_openssl_get_ssl(c->bev);

	if (ssl == NULL || c->tls_ended || !c->params.tls_active ||
	    evbuffer_get_length(bufferevent_get_output(c->bev)) > 0)
		return;
	c->tls_ended = true;
	if (SSL_shutdown(ssl) < 0)
		ERR_clear_error();	/* the socket is gone: so be it */
	(void)conn_tls_drain_under(c);
}
