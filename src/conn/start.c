/*
 * conn/start.c: a connection's start, up to its greeting: its session id,
 * the connect log line and the transaction log, its chain session and
 * expanded greeting, the SMTP session and the socket's bufferevent, the
 * session's time limit.  Then the greeting (on an implicit TLS listener
 * once the handshake is over, handshake.c): at once, or after a delay
 * that shows up early talkers, who are refused or kept waiting.  Knows
 * nothing of the dialogue that follows (conn.c, stage.c).
 */
#include "conn/conn.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>

#include "chain/chain.h"
#include "config/config.h"
#include "conn/conn_private.h"
#include "log/log.h"
#include "smtp/smtp.h"
#include "tls/tls.h"

/* The session's time limit; once closing, its last reply's (conn.c). */
static void
conn_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;

	(void)fd;
	(void)what;
	conn_timeout(c, c->closing ? "last reply not taken in time" :
	    "session time limit exceeded");
}

/*
 * The greeting is a template: expand it with this connection's facts, in
 * its chain session or, without chains, in one made for this alone (it
 * runs nothing, so it needs no loop).  A cut expansion is still sent.
 */
static void
conn_expand_greeting(struct conn *c, const struct config *cfg,
    const struct chain_session_info *info)
{
	struct chain_session *cs = c->cs;

	if (cfg->greeting == NULL || strstr(cfg->greeting, "%{") == NULL)
		return;
	if (cs == NULL)
		cs = chain_session_new(c->rt->chains, NULL, info);
	(void)chain_expand(cs, cfg->greeting, c->greeting,
	    sizeof(c->greeting));
	c->params.greeting = c->greeting;
	if (cs != c->cs)
		chain_session_free(&cs);
}

/* A chain session when the config has chains; the greeting expanded. */
static void
conn_chain_start(struct conn *c, struct conn_ctx *ctx,
    const struct config *cfg, int fd, const struct conn_origin *origin)
{
	const char *err = NULL;
	bool any = false;

	for (unsigned st = 0; st < SMTP_STAGE_COUNT; st++)
		any |= chain_set_has(c->rt->chains, (enum smtp_stage)st);
	/*
	 * Our own address, for the "local.ip" and "local.port" facts: the
	 * one the client reached, behind a load balancer too.
	 */
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char lip[INET6_ADDRSTRLEN] = "";
	int lport = 0;
	if (origin != NULL && origin->local_ip != NULL) {
		util_strlcpy(lip, origin->local_ip, sizeof(lip));
		lport = origin->local_port;
	} else if ((any || cfg->greeting != NULL) &&
	    getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
		(void)util_sockaddr_text((struct sockaddr *)&ss, lip, &lport);
	struct chain_session_info info = { .sid = c->sid, .ip = c->ip,
	    .port = c->port, .local_ip = lip[0] != '\0' ? lip : NULL,
	    .local_port = lport, .hostname = cfg->hostname };
	/* AUTH (its guard counts in the store) and tables need it too. */
	if ((any || cfg->nauths > 0 || conn_rt_has_remote(c->rt)) &&
	    (c->chain_loop = conn_chain_take(ctx, &err)) == NULL) {
		log_event(LOG_LVL_ERROR, "chain-error", c->sid, NULL,
		    "why=\"%s\"", err);
		c->chain_broken = true;	/* 421 at connect */
		return;
	}
	if (any)
		c->cs = chain_session_new(c->rt->chains, c->chain_loop,
		    &info);
	conn_expand_greeting(c, cfg, &info);
}

static void
conn_greet(struct conn *c)
{
	c->started = true;
	smtp_session_start(c->smtp);
	conn_process_input(c);
	conn_check_close(c);	/* a refusal at connect closes at once */
}

static void
conn_greet_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	conn_greet(arg);
}

/*
 * Bytes before a delayed greeting.  "early-talker close": refuse and hang
 * up now.  "continue": the bytes wait in the socket for the greeting.
 */
void
conn_early_talker(struct conn *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	char text[300];

	conn_note_early_talker(c, "before the greeting",
	    evbuffer_get_length(in));
	if (conn_cfg(c)->early_talker_continue) {
		conn_read_disable(c);	/* until the greeting */
		return;
	}
	evbuffer_drain(in, evbuffer_get_length(in));
	evtimer_del(c->greet_ev);
	c->started = true;
	util_snprintf(text, sizeof(text), "5.5.0 %s Protocol error: talked "
	    "before the greeting", conn_cfg(c)->hostname);
	smtp_session_close_with(c->smtp, 554, text);
	conn_check_close(c);
}

/* The session's transaction log, which begins by saying who came. */
static void
conn_translog_open(struct conn *c, const struct conn_origin *origin)
{
	const struct config_translog *ct = &conn_cfg(c)->translog;
	struct log_translog_opts o = { .dir = ct->dir,
	    .commands = ct->commands, .replies = ct->replies,
	    .data_max = ct->data_max, .file_max = ct->file_max,
	    .total_max = ct->total_max };
	char note[200];
	int n;

	c->translog = log_translog_open(c->ctx->tlw, &o, c->ip, c->sid);
	if (origin != NULL && origin->via_ip != NULL)
		n = snprintf(note, sizeof(note), "connect ip=%s port=%d via=%s "
		    "proxy=v%d", c->ip, c->port, origin->via_ip,
		    origin->version);
	else
		n = snprintf(note, sizeof(note), "connect ip=%s port=%d",
		    c->ip, c->port);
	log_translog_line(c->translog, LOG_TL_NOTE, note, (size_t)n);
}

/*
 * Session ids: a random 64-bit start drawn once per process, then a
 * counter, so ids never repeat across restarts or between loops.
 */
static void
conn_make_sid(char *sid, size_t sidsz)
{
	static atomic_uint_fast64_t next;
	static const char digits[] = "0123456789abcdefghijklmnopqrstuvwxyz";
	uint64_t n;
	char tmp[16];
	size_t i = 0;

	if (atomic_load(&next) == 0) {
		uint64_t seed = 0;
		if (getrandom(&seed, sizeof(seed), 0) != sizeof(seed))
			seed = util_wall_us();
		uint_fast64_t zero = 0;
		atomic_compare_exchange_strong(&next, &zero, seed | 1);
	}
	n = atomic_fetch_add(&next, 1);
	do {
		tmp[i++] = digits[n % 36];
		n /= 36;
	} while (n != 0 && i < sizeof(tmp));
	for (size_t j = 0; j < i && j + 1 < sidsz; j++)
		sid[j] = tmp[i - 1 - j];
	sid[i < sidsz ? i : sidsz - 1] = '\0';
}

void
conn_new(struct conn_ctx *ctx, int fd, const struct sockaddr *sa,
    socklen_t salen, size_t listen_idx, const struct conn_origin *origin)
{
	struct conn *c = xcalloc(1, sizeof(*c));
	const struct config *cfg;

	(void)salen;
	c->ctx = ctx;
	c->rt = conn_rt_ref(ctx->rt);
	cfg = conn_cfg(c);
	ASSERT(listen_idx < cfg->nlistens);
	c->lcfg = &cfg->listens[listen_idx];
	c->tls = c->rt->tls_listen[listen_idx];
	c->start_ms = util_now_ms();
	conn_make_sid(c->sid, sizeof(c->sid));
	c->ipv6 = util_sockaddr_text(sa, c->ip, &c->port);
	ctx->nconns++;
	c->next = ctx->conns;
	if (c->next != NULL)
		c->next->prev = c;
	ctx->conns = c;
	if (origin != NULL && origin->via_ip != NULL)
		log_event(LOG_LVL_INFO, "connect", c->sid, NULL, "ip=%s "
		    "port=%d via=%s proxy=v%d loop=%u", c->ip, c->port,
		    origin->via_ip, origin->version, ctx->loop_idx);
	else
		log_event(LOG_LVL_INFO, "connect", c->sid, NULL, "ip=%s "
		    "port=%d loop=%u", c->ip, c->port, ctx->loop_idx);
	if (cfg->translog.dir != NULL)
		conn_translog_open(c, origin);

	c->params.lim.line_max = cfg->limits.line_max;
	c->params.lim.msg_max = cfg->limits.msg_max;
	c->params.lim.rcpt_max = cfg->limits.rcpt_max;
	c->params.lim.err_max = cfg->limits.err_max;
	c->params.hostname = cfg->hostname;
	c->params.greeting = cfg->greeting;
	conn_chain_start(c, ctx, cfg, fd, origin);
	c->params.starttls = c->tls != NULL && !c->lcfg->no_starttls &&
	    !c->lcfg->implicit_tls;
	c->params.tls_active = false;
	c->params.require_tls = c->lcfg->require_tls;
	/* On a proxy listener, AUTH is the upstream's to check. */
	c->params.auth = c->lcfg->auth && (cfg->nauths > 0 ||
	    c->lcfg->proxy != NULL);
	c->params.auth_plaintext = c->lcfg->auth_plaintext;
	c->params.sync_data = !cfg->pipelining_loose;
	c->params.sync_replies = cfg->early_talker_replies;
	c->smtp = smtp_session_new(&c->params, &conn_smtp_hooks, c);
	if (c->lcfg->proxy != NULL)
		conn_proxy_start(c, fd, origin);

	/*
	 * Replies go out in one write per batch, without the small-packet
	 * delay: TCP_NODELAY, which fd has from its listening socket.
	 */
	SSL *ssl = c->lcfg->implicit_tls ? tls_server_ssl_new(c->tls) : NULL;
	if (ssl != NULL)
		c->bev = bufferevent_openssl_socket_new(ctx->base, fd, ssl,
		    BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
	else {
		c->bev = bufferevent_socket_new(ctx->base, fd,
		    BEV_OPT_CLOSE_ON_FREE);
		c->plain_fd = true;
		conn_read_plain_start(c, fd);
	}
	conn_bev_attach(c);
	c->deadline_ev = evtimer_new(ctx->base, conn_deadline_cb, c);
	conn_deadline_init(c);
	struct timeval tv = util_timeval_ms(cfg->limits.session_ms);
	evtimer_add(c->deadline_ev, &tv);

	if (c->lcfg->implicit_tls) {
		/* The greeting waits for the handshake (conn_tls_done). */
		if (ssl == NULL) {
			log_event(LOG_LVL_ERROR, "tls-error", c->sid, NULL,
			    "why=\"no TLS context\"");
			c->peer_gone = true;
			conn_free(c);
			return;
		}
		conn_hs_deadline(c);
		bufferevent_enable(c->bev, EV_READ | EV_WRITE);
		return;
	}
	conn_greet_start(c);
}

void
conn_greet_start(struct conn *c)
{
	uint64_t delay_ms = conn_cfg(c)->limits.greeting_delay_ms;

	if (delay_ms == 0) {
		conn_greet(c);
		return;
	}
	/* Listen before speaking: early talkers give themselves away. */
	struct timeval gtv = util_timeval_ms(delay_ms);
	c->greet_ev = evtimer_new(c->ctx->base, conn_greet_cb, c);
	evtimer_add(c->greet_ev, &gtv);
	conn_read_enable(c);
	/* Under TLS, bytes may have come with the handshake's last. */
	if (evbuffer_get_length(bufferevent_get_input(c->bev)) > 0)
		conn_early_talker(c);
}
