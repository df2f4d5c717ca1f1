/*
 * chain/handler_milter.c: 'milter "inet:PORT@HOST" | "unix:PATH"
 * [timeout DURATION]', a milter client speaking protocol version 6 to the
 * existing filter ecosystem (opendkim, rspamd, spamass-milter...).
 *
 * One connection per session and socket, shared by every chain the
 * handler sits in.  A run sends the filter whatever the conversation holds
 * that it has not seen yet, up to the running stage: a milter only in
 * "on eom" gets connect, helo, mail, rcpt, data, the headers, the body
 * and end-of-message then; one in "on rcpt" as well answers each RCPT
 * itself.  The filter's answer becomes the handler's verdict; its message
 * modifications at end-of-message go to the session (chain_session_add_mod),
 * pending until its final answer commits them (a failure drops them), and
 * the connection applies them before the 250.  Never blocks the loop:
 * the socket is a bufferevent, the body is read in bounded pieces and sent
 * only while the socket keeps up.  What is sent next is milter_steps.c's.
 */
#include "chain/chain_private.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "chain/milter.h"
#include "chain/milter_conn.h"
#include "chain/session.h"
#include "log/log.h"
#include "util/util.h"

#define MILTER_TIMEOUT_DEFAULT_MS	(30u * 1000)
#define MILTER_OUT_HIGH		(256 * 1024)	/* wait for the socket above */

/* What we let a filter do, and the steps it may skip or not answer. */
#define MILTER_ACTIONS	(MILTER_A_ADDHDRS | MILTER_A_ADDRCPT | \
	MILTER_A_DELRCPT | MILTER_A_CHGHDRS | MILTER_A_QUARANTINE | \
	MILTER_A_CHGFROM | MILTER_A_ADDRCPT_PAR)
#define MILTER_PROTO	(MILTER_P_NOCONNECT | MILTER_P_NOHELO | \
	MILTER_P_NOMAIL | MILTER_P_NORCPT | MILTER_P_NOBODY | \
	MILTER_P_NOHDRS | MILTER_P_NOEOH | MILTER_P_NR_HDR | \
	MILTER_P_NOUNKNOWN | MILTER_P_NODATA | MILTER_P_SKIP | \
	MILTER_P_NR_CONN | MILTER_P_NR_HELO | MILTER_P_NR_MAIL | \
	MILTER_P_NR_RCPT | MILTER_P_NR_DATA | MILTER_P_NR_UNKN | \
	MILTER_P_NR_EOH | MILTER_P_NR_BODY | MILTER_P_HDR_LEADSPC)

struct milter_inst {
	char			*spec;		/* as configured: the slot key */
	struct sockaddr_storage	 addr;
	socklen_t		 addrlen;
	uint64_t		 timeout_ms;
};

/* ----- instances ----- */

static void
milter_inst_free(void *inst)
{
	struct milter_inst *mi = inst;

	if (mi == NULL)
		return;
	free(mi->spec);
	free(mi);
}

/* "inet:PORT@HOST", "inet6:PORT@HOST", "unix:PATH" or "local:PATH". */
static int
milter_parse_spec(struct milter_inst *mi, const char *spec)
{
	const char *colon = strchr(spec, ':');
	size_t plen = colon != NULL ? (size_t)(colon - spec) : 0;

	memset(&mi->addr, 0, sizeof(mi->addr));
	if (colon == NULL)
		return -1;
	if ((plen == 4 && strncmp(spec, "unix", 4) == 0) ||
	    (plen == 5 && strncmp(spec, "local", 5) == 0)) {
		struct sockaddr_un *sun = (struct sockaddr_un *)&mi->addr;
		if (colon[1] != '/' || util_strlcpy(sun->sun_path, colon + 1,
		    sizeof(sun->sun_path)) == -1)
			return -1;
		sun->sun_family = AF_UNIX;
		mi->addrlen = sizeof(*sun);
		return 0;
	}
	bool v6 = plen == 5 && strncmp(spec, "inet6", 5) == 0;
	if (!v6 && (plen != 4 || strncmp(spec, "inet", 4) != 0))
		return -1;
	const char *at = strchr(colon, '@');
	char port[8], host[64];
	if (at == NULL || (size_t)(at - colon - 1) >= sizeof(port) ||
	    at == colon + 1 || util_strlcpy(host, at + 1, sizeof(host)) == -1)
		return -1;
	memcpy(port, colon + 1, (size_t)(at - colon - 1));
	port[at - colon - 1] = '\0';
	char *end;
	long p = strtol(port, &end, 10);
	if (*end != '\0' || p < 1 || p > 65535)
		return -1;
	if (strcmp(host, "localhost") == 0)
		util_strlcpy(host, v6 ? "::1" : "127.0.0.1", sizeof(host));
	/* "inet" is IPv4 and "inet6" IPv6, as in Sendmail's and Postfix's. */
	if (util_sockaddr_make(host, (int)p, &mi->addr, &mi->addrlen) == -1 ||
	    (mi->addr.ss_family == AF_INET6) != v6)
		return -1;
	return 0;
}

static void *
milter_inst_new(const struct chain_handler_args *a, char **err_out)
{
	struct milter_inst *mi = xcalloc(1, sizeof(*mi));

	mi->timeout_ms = MILTER_TIMEOUT_DEFAULT_MS;
	if (a->argc == 4 && strcmp(a->argv[2], "timeout") == 0) {
		if (util_parse_duration_ms(a->argv[3], &mi->timeout_ms) == -1 ||
		    mi->timeout_ms == 0 || mi->timeout_ms > 3600u * 1000) {
			*err_out = xasprintf("bad timeout \"%s\"", a->argv[3]);
			goto fail;
		}
	} else if (a->argc != 2) {
		*err_out = xstrdup("usage: milter \"inet:PORT@HOST\"|"
		    "\"unix:PATH\" [timeout DURATION]");
		goto fail;
	}
	if (milter_parse_spec(mi, a->argv[1]) == -1) {
		*err_out = xasprintf("bad milter socket \"%s\" (inet:PORT@IP, "
		    "inet6:PORT@IP or unix:/PATH)", a->argv[1]);
		goto fail;
	}
	mi->spec = xasprintf("milter:%s", a->argv[1]);
	return mi;
fail:
	milter_inst_free(mi);
	return NULL;
}

/* ----- the end of a run ----- */

static void
milter_finish(struct milter_conn *mc, const struct chain_verdict *v)
{
	struct chain_call *call = mc->call;

	mc->call = NULL;
	mc->await = 0;
	mc->write_wait = false;
	evtimer_del(mc->timer);
	if (call != NULL)
		chain_call_done(call, v);
}

/* The conversation is out of step: drop the socket, fail every later run. */
static void
milter_drop(struct milter_conn *mc)
{
	mc->state = MS_BROKEN;
	if (mc->bev != NULL) {
		bufferevent_free(mc->bev);
		mc->bev = NULL;
	}
}

/* The conversation is lost: fail this run and every later one. */
static void
milter_broken(struct milter_conn *mc, const char *why)
{
	struct chain_verdict v;

	log_event(LOG_LVL_WARN, "milter-error", chain_session_sid(mc->cs),
	    NULL, "milter=\"%s\" why=\"%s\"", mc->spec + 7, why);
	/* Its step did not complete: none of its edits take effect. */
	if (mc->call != NULL)
		chain_session_mods_drop(mc->cs);
	milter_drop(mc);
	chain_verdict_fail(&v, "milter %s: %s", mc->spec + 7, why);
	milter_finish(mc, &v);
}

static void
milter_tx_forget(struct milter_conn *mc)
{
	for (size_t i = 0; i < mc->nsent_rcpts; i++)
		free(mc->sent_rcpts[i]);
	free(mc->sent_rcpts);
	mc->sent_rcpts = NULL;
	mc->nsent_rcpts = 0;
	mc->tx_open = mc->tx_quiet = false;
	mc->sent_data = mc->sent_hdrs = mc->body_done = mc->sent_eom = false;
	mc->hdr_off = 0;
	mc->body_off = 0;
	if (mc->body_fd != -1) {
		close(mc->body_fd);
		mc->body_fd = -1;
	}
}

/*
 * Send until a reply is due, the socket is full, or nothing is left.
 * True when the run is over: mc may be gone then (the answer went out).
 */
static bool
milter_advance(struct milter_conn *mc)
{
	struct util_buf b = { 0 };
	const char *err = NULL;
	int r = 1;

	while (mc->await == 0 && r == 1) {
		if (evbuffer_get_length(bufferevent_get_output(mc->bev)) >
		    MILTER_OUT_HIGH) {
			mc->write_wait = true;
			milter_arm(mc);
			break;
		}
		r = milter_next(mc, &b, &err);
	}
	util_buf_clear(&b);
	if (r == -1) {
		milter_broken(mc, err);
		return true;
	}
	if (r == 0) {
		struct chain_verdict v;
		chain_verdict_continue(&v);
		milter_finish(mc, &v);
		return true;
	}
	return false;
}

/* ----- replies ----- */

/*
 * A command's answer is in.  The filter says nothing more before it is sent
 * the next command, so bytes already read behind that answer are a reply
 * nobody asked for (*err): left there, they would be taken as the next
 * command's.
 */
static bool
milter_said_more(struct milter_conn *mc, const char **err)
{
	if (evbuffer_get_length(bufferevent_get_input(mc->bev)) == 0)
		return false;
	*err = "reply nobody asked for";
	return true;
}

/* A step of the run is answered: send the next.  As milter_reply. */
static int
milter_step_answered(struct milter_conn *mc, const char **err)
{
	if (milter_said_more(mc, err))
		return -1;
	mc->await = 0;
	evtimer_del(mc->timer);
	return milter_advance(mc) ? 1 : 0;
}

/*
 * A quarantine: the reason is kept as tx.milter.quarantine, cut to what a
 * state value holds, a byte outside printable ASCII made '?' (logged
 * when it is not the filter's text byte for byte).
 */
static int
milter_quarantine(struct milter_conn *mc, const char *reason,
    const char **err)
{
	char kept[CHAIN_VALUE_MAX];
	size_t n = 0;

	for (; n + 1 < sizeof(kept) && reason[n] != '\0'; n++) {
		unsigned char ch = (unsigned char)reason[n];
		kept[n] = ch >= 0x20 && ch <= 0x7e ? (char)ch : '?';
	}
	kept[n] = '\0';
	if (strcmp(kept, reason) != 0)
		log_event(LOG_LVL_INFO, "milter", chain_session_sid(mc->cs),
		    NULL, "milter=\"%s\" note=\"quarantine reason of %zu "
		    "bytes kept as %zu printable characters\"", mc->spec + 7,
		    strlen(reason), strlen(kept));
	if (chain_kv_set(mc->cs, CHAIN_SCOPE_TX, "milter.quarantine",
	    kept) == -1) {
		*err = "no room left to keep the quarantine reason";
		return -1;
	}
	return 0;
}

/* A modification (only as an answer to end-of-message). */
static int
milter_mod(struct milter_conn *mc, const struct milter_reply *r,
    const char **err)
{
	struct milter_mod m;

	if (milter_get_mod(r, &m) == -1) {
		*err = "unexpected or malformed reply";
		return -1;
	}
	switch (m.cmd) {
	case MILTER_R_ADDHEADER:
	case MILTER_R_INSHEADER:
	case MILTER_R_CHGHEADER:
		return chain_session_add_mod(mc->cs, m.cmd ==
		    MILTER_R_ADDHEADER ? CHAIN_MOD_HDR_ADD : m.cmd ==
		    MILTER_R_INSHEADER ? CHAIN_MOD_HDR_INSERT :
		    CHAIN_MOD_HDR_CHANGE, m.idx, m.name, m.value, err);
	case MILTER_R_QUARANTINE:
		return milter_quarantine(mc, m.value, err);
	default:
		return chain_session_add_mod(mc->cs, m.cmd ==
		    MILTER_R_CHGFROM ? CHAIN_MOD_SENDER : m.cmd ==
		    MILTER_R_DELRCPT ? CHAIN_MOD_RCPT_DEL :
		    CHAIN_MOD_RCPT_ADD, 0, NULL, m.value, err);
	}
}

/*
 * One reply: 0 go on reading, 1 the run is over (mc may be gone), -1 with
 * *err when the filter broke the protocol.
 */
static int
milter_reply(struct milter_conn *mc, const struct milter_reply *r,
    const char **err)
{
	struct chain_verdict v;
	char was = mc->await;

	if (mc->state == MS_NEGOTIATING) {
		uint32_t ver, act, proto;
		if (r->cmd != MILTER_R_OPTNEG ||
		    milter_get_optneg(r, &ver, &act, &proto) == -1) {
			*err = "bad option negotiation";
			return -1;
		}
		/*
		 * Filters such as rspamd ask for every action whatever
		 * they are offered; only a step we cannot leave out, or an
		 * action actually taken (a body replacement, say), is an
		 * error.
		 */
		if (ver < MILTER_VERSION || (proto & ~(uint32_t)MILTER_PROTO)) {
			*err = ver < MILTER_VERSION ? "filter speaks a protocol "
			    "older than version 6" : "filter wants protocol "
			    "steps we do not offer";
			return -1;
		}
		if (act & ~(uint32_t)MILTER_ACTIONS)
			log_event(LOG_LVL_INFO, "milter", chain_session_sid(
			    mc->cs), NULL, "milter=\"%s\" note=\"asked for "
			    "actions 0x%x, offered 0x%x\"", mc->spec + 7, act,
			    MILTER_ACTIONS);
		mc->proto = proto;
		mc->state = MS_READY;
		return milter_step_answered(mc, err);
	}
	if (was == 0 || mc->call == NULL) {
		*err = "reply nobody asked for";
		return -1;
	}
	switch (r->cmd) {
	case MILTER_R_PROGRESS:
		milter_arm(mc);
		return 0;
	case MILTER_R_CONTINUE:
		if (was != MILTER_C_EOB)
			return milter_step_answered(mc, err);
		chain_verdict_continue(&v);	/* the message is over */
		break;
	case MILTER_R_SKIP:
		if (was != MILTER_C_BODY) {
			*err = "skip outside the body";
			return -1;
		}
		mc->body_done = true;
		return milter_step_answered(mc, err);
	case MILTER_R_ACCEPT:
		chain_verdict_continue(&v);
		if (was == MILTER_C_CONNECT || was == MILTER_C_HELO)
			mc->state = MS_ACCEPTED;
		else
			mc->tx_quiet = true;
		break;
	case MILTER_R_DISCARD:
		memset(&v, 0, sizeof(v));
		v.kind = CHAIN_DISCARD;
		mc->tx_quiet = true;
		break;
	case MILTER_R_REJECT:
		if (was == MILTER_C_CONNECT)
			chain_verdict_reject(&v, 554, "5.7.1", "Connection "
			    "rejected");
		else
			chain_verdict_reject(&v, 550, "5.7.1", "Command "
			    "rejected");
		break;
	case MILTER_R_TEMPFAIL:
		chain_verdict_reject(&v, 451, "4.7.1", "Please try again "
		    "later");
		break;
	case MILTER_R_REPLYCODE: {
		struct milter_replycode rc;
		if (milter_get_replycode(r, &rc) == -1) {
			*err = "bad reply code";
			return -1;
		}
		chain_verdict_reject(&v, rc.code, rc.esc, rc.text[0] != '\0' ?
		    rc.text : "Command rejected");
		break;
	}
	case MILTER_R_CONN_FAIL:
	case MILTER_R_SHUTDOWN:
		memset(&v, 0, sizeof(v));
		v.kind = CHAIN_DISCONNECT;
		v.code = 421;
		util_strlcpy(v.esc, "4.7.0", sizeof(v.esc));
		util_strlcpy(v.text, "Service unavailable, closing "
		    "transmission channel", sizeof(v.text));
		if (r->cmd == MILTER_R_SHUTDOWN)
			mc->state = MS_BROKEN;
		break;
	default:
		if (r->cmd == MILTER_R_REPLBODY) {
			*err = "body replacement is not supported";
			return -1;
		}
		if (was != MILTER_C_EOB) {
			*err = "unexpected or malformed reply";
			return -1;
		}
		return milter_mod(mc, r, err);
	}
	if (milter_said_more(mc, err))
		return -1;
	/*
	 * After its end-of-message answer the message is over for the filter,
	 * and its edits take effect.
	 */
	if (was == MILTER_C_EOB) {
		chain_session_mods_commit(mc->cs);
		milter_tx_forget(mc);
	}
	milter_finish(mc, &v);
	return 1;
}

static void
milter_read_cb(struct bufferevent *bev, void *arg)
{
	struct milter_conn *mc = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	struct util_buf pkt = { 0 };
	int rc = 0;

	/* Once a run is over, mc may be gone: touch nothing after it. */
	while (rc == 0) {
		struct milter_reply r;
		const char *err = NULL;
		size_t len = evbuffer_get_length(in), used = 0;
		/* milter_get reads the length and the command byte. */
		const char *p = (const char *)evbuffer_pullup(in,
		    len < 5 ? (ev_ssize_t)len : 5);
		if (p == NULL || (rc = milter_get(p, len, &r, &used, &err)) ==
		    0)
			break;
		if (rc == 1) {
			/* A copy, so the handling may free the bufferevent. */
			util_buf_reset(&pkt);
			util_buf_add(&pkt, evbuffer_pullup(in,
			    (ev_ssize_t)used), used);
			evbuffer_drain(in, used);
			milter_get(pkt.data, pkt.len, &r, &used, &err);
			rc = milter_reply(mc, &r, &err);
		}
		if (rc == -1)
			milter_broken(mc, err);
	}
	util_buf_clear(&pkt);
}

static void
milter_write_cb(struct bufferevent *bev, void *arg)
{
	struct milter_conn *mc = arg;

	(void)bev;
	if (mc->write_wait && mc->call != NULL) {
		mc->write_wait = false;
		evtimer_del(mc->timer);
		(void)milter_advance(mc);
	}
}

static void
milter_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct milter_conn *mc = arg;
	struct util_buf b = { 0 };

	(void)bev;
	if (what & BEV_EVENT_CONNECTED) {
		mc->state = MS_NEGOTIATING;
		milter_put_optneg(&b, MILTER_VERSION, MILTER_ACTIONS,
		    MILTER_PROTO);
		milter_send(mc, &b, MILTER_C_OPTNEG);
		util_buf_clear(&b);
		return;
	}
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
		char why[128];
		int e = EVUTIL_SOCKET_ERROR();
		util_snprintf(why, sizeof(why), "%s", what & BEV_EVENT_EOF ?
		    "connection closed by the filter" : mc->state ==
		    MS_CONNECTING ? strerror(e) : "connection error");
		milter_broken(mc, why);
	}
}

static void
milter_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct milter_conn *mc = arg;

	(void)fd;
	(void)what;
	milter_broken(mc, mc->state == MS_CONNECTING ? "connect timed out" :
	    "no answer in time");
}

/* ----- the session slot ----- */

static void
milter_conn_tx_reset(void *p)
{
	struct milter_conn *mc = p;
	struct util_buf b = { 0 };

	if (mc->call != NULL) {
		milter_drop(mc);	/* the run is being cleared */
		return;
	}
	if (mc->state == MS_READY && mc->tx_open) {
		milter_put(&b, MILTER_C_ABORT, NULL, 0);	/* no answer */
		bufferevent_write(mc->bev, b.data, b.len);
		util_buf_clear(&b);
	}
	milter_tx_forget(mc);
}

static void
milter_conn_free(void *p)
{
	struct milter_conn *mc = p;

	if (mc->bev != NULL) {
		/* Best effort: a filter likes to hear QUIT; never wait. */
		if (mc->state == MS_READY || mc->state == MS_ACCEPTED) {
			static const char quit[] = { 0, 0, 0, 1, MILTER_C_QUIT };
			evutil_socket_t fd = bufferevent_getfd(mc->bev);
			if (fd != -1 && evbuffer_get_length(
			    bufferevent_get_output(mc->bev)) == 0)
				(void)send(fd, quit, sizeof(quit),
				    MSG_NOSIGNAL | MSG_DONTWAIT);
		}
		bufferevent_free(mc->bev);
	}
	milter_tx_forget(mc);
	event_free(mc->timer);
	free(mc->sent_helo);
	free(mc->spec);
	free(mc);
}

static const struct chain_slot_ops milter_slot_ops = {
	.tx_reset_fn = milter_conn_tx_reset,
	.free_fn = milter_conn_free,
};

static struct milter_conn *
milter_conn_get(struct chain_session *cs, const struct milter_inst *mi)
{
	struct milter_conn *mc = chain_session_slot(cs, mi->spec);

	if (mc != NULL)
		return mc;
	mc = xcalloc(1, sizeof(*mc));
	mc->cs = cs;
	mc->spec = xstrdup(mi->spec);
	mc->body_fd = -1;
	mc->state = MS_IDLE;
	mc->timer = evtimer_new(chain_session_base(cs), milter_timer_cb, mc);
	if (chain_session_slot_set(cs, mi->spec, mc, &milter_slot_ops) == -1) {
		milter_conn_free(mc);
		return NULL;
	}
	return mc;
}

/* ----- running ----- */

/*
 * Each body piece is a packet of up to 64 KiB answered before the next goes
 * out: with Nagle's algorithm its tail would wait for the filter's delayed
 * ACK, some 40 ms a piece.
 */
static void
milter_nodelay(struct milter_conn *mc)
{
	int one = 1;

	(void)setsockopt(bufferevent_getfd(mc->bev), IPPROTO_TCP, TCP_NODELAY,
	    &one, sizeof(one));
}

static enum chain_status
milter_run(void *inst, struct chain_call *call, struct chain_verdict *v)
{
	const struct milter_inst *mi = inst;
	struct chain_session *cs = chain_call_session(call);
	struct milter_conn *mc = milter_conn_get(cs, mi);
	enum smtp_stage st = chain_call_stage(call);

	if (mc == NULL) {
		chain_verdict_fail(v, "too many milters in one session");
		return CHAIN_DONE;
	}
	if (mc->state == MS_BROKEN) {
		chain_verdict_fail(v, "milter %s: unavailable", mi->spec + 7);
		return CHAIN_DONE;
	}
	if (mc->state == MS_ACCEPTED || mc->call != NULL ||
	    (mc->tx_quiet && st >= SMTP_STAGE_MAIL && st <= SMTP_STAGE_EOM)) {
		if (mc->call != NULL)
			chain_verdict_fail(v, "milter %s: busy", mi->spec + 7);
		else
			chain_verdict_continue(v);
		return CHAIN_DONE;
	}
	/*
	 * The body starts past the header block kept (CHAIN_HDR_MAX): the
	 * filter cannot be shown this message whole, on any retry.  Its
	 * conversation stays in step: the transaction's end aborts it.
	 */
	if (st == SMTP_STAGE_EOM && chain_session_header_len(cs) < 0) {
		char text[64];
		util_snprintf(text, sizeof(text), "Message header block too "
		    "large (over %u KiB)", CHAIN_HDR_MAX / 1024);
		log_event(LOG_LVL_INFO, "milter", chain_session_sid(cs), NULL,
		    "milter=\"%s\" note=\"%s\"", mi->spec + 7, text);
		chain_verdict_reject(v, 552, "5.3.4", text);
		return CHAIN_DONE;
	}
	mc->call = call;
	*chain_call_data(call) = mc;
	mc->timeout_ms = mi->timeout_ms;
	mc->target = st;
	mc->cur_rcpt_sent = false;
	if (mc->state != MS_IDLE) {
		(void)milter_advance(mc);	/* may answer at once (early) */
		return CHAIN_PENDING;
	}
	mc->state = MS_CONNECTING;
	mc->bev = bufferevent_socket_new(chain_session_base(cs), -1,
	    BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(mc->bev, milter_read_cb, milter_write_cb,
	    milter_event_cb, mc);
	bufferevent_setwatermark(mc->bev, EV_WRITE, 64 * 1024, 0);
	bufferevent_enable(mc->bev, EV_READ | EV_WRITE);
	milter_arm(mc);
	if (bufferevent_socket_connect(mc->bev,
	    (const struct sockaddr *)&mi->addr, (int)mi->addrlen) == -1)
		milter_broken(mc, strerror(errno));
	else if (mi->addr.ss_family != AF_UNIX)
		milter_nodelay(mc);
	return CHAIN_PENDING;
}

static void
milter_cancel(void *inst, struct chain_call *call)
{
	struct milter_conn *mc = *chain_call_data(call);

	(void)inst;
	if (mc == NULL || mc->call != call)
		return;
	chain_session_mods_drop(mc->cs);	/* its step did not complete */
	mc->call = NULL;
	/* A reply is on its way: the conversation is out of step now. */
	if (mc->await != 0 || mc->state == MS_CONNECTING ||
	    mc->state == MS_NEGOTIATING)
		milter_drop(mc);
	mc->await = 0;
	evtimer_del(mc->timer);
}

/* The body goes to the filter from the message file. */
static bool
milter_reads_file(const void *inst)
{
	(void)inst;
	return true;
}

const struct chain_handler_ops chain_milter_ops[] = {
	{ .name = "milter",
	  .stages = CHAIN_STAGE_BIT(SMTP_STAGE_CONNECT) |
	    CHAIN_STAGE_BIT(SMTP_STAGE_HELO) | CHAIN_STAGE_BIT(SMTP_STAGE_MAIL) |
	    CHAIN_STAGE_BIT(SMTP_STAGE_RCPT) | CHAIN_STAGE_BIT(SMTP_STAGE_DATA) |
	    CHAIN_STAGE_BIT(SMTP_STAGE_HEADER) |
	    CHAIN_STAGE_BIT(SMTP_STAGE_EOM),
	  .new_fn = milter_inst_new, .free_fn = milter_inst_free,
	  .run_fn = milter_run, .cancel_fn = milter_cancel,
	  .reads_file_fn = milter_reads_file },
	{ .name = NULL },
};
