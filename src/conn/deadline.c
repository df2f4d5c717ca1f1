/*
 * conn/deadline.c: how long a client may take to send.  A command line
 * must arrive whole within idle-timeout of the reply before it (Postfix's
 * smtpd_per_request_deadline), so a byte a second never keeps a slot; in
 * DATA and BDAT each octet buys 1/data-rate seconds, up to data-timeout
 * ahead (smtpd_min_data_rate).  While we are the slow side (a decision
 * pending, the disk or a proxy's upstream behind, a TLS handshake) no
 * deadline runs.
 */
#include "conn/conn_private.h"

#include <event2/event.h>

#include "config/config.h"

/* What the client owes us now. */
static enum conn_read_mode
conn_read_mode_now(struct conn *c)
{
	if (!c->started || c->closing || smtp_session_is_closing(c->smtp) ||
	    smtp_session_is_waiting(c->smtp) || c->tls_pending ||
	    conn_in_handshake(c) ||
	    (c->tx != NULL && conn_tx_backlogged(c->tx)) ||
	    conn_proxy_backlogged(c))
		return CONN_READ_NONE;
	return c->in_data ? CONN_READ_DATA : CONN_READ_COMMAND;
}

/*
 * Make the timer fire no later than deadline (0: none).  The timer is
 * moved only when the deadline comes closer; when it fires early it
 * looks again, so extending a deadline octet by octet costs nothing.
 */
static void
conn_read_arm(struct conn *c, uint64_t deadline, uint64_t now)
{
	c->read_deadline_ms = deadline;
	if (deadline == 0) {
		if (c->read_fire_ms != 0)
			evtimer_del(c->read_ev);
		c->read_fire_ms = 0;
		return;
	}
	if (c->read_fire_ms != 0 && c->read_fire_ms <= deadline)
		return;
	struct timeval tv = util_timeval_ms(deadline > now ? deadline - now :
	    0);
	evtimer_add(c->read_ev, &tv);
	c->read_fire_ms = deadline;
}

static void
conn_read_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	uint64_t now = util_now_ms();

	(void)fd;
	(void)what;
	c->read_fire_ms = 0;
	if (c->read_deadline_ms == 0)
		return;
	if (now < c->read_deadline_ms) {
		conn_read_arm(c, c->read_deadline_ms, now);
		return;
	}
	c->read_deadline_ms = 0;
	conn_timeout(c, c->read_mode == CONN_READ_DATA ?
	    "message text too slow or stalled" :
	    "command line not received in time");
}

void
conn_deadline_init(struct conn *c)
{
	c->read_ev = evtimer_new(c->ctx->base, conn_read_deadline_cb, c);
}

void
conn_deadline_clear(struct conn *c)
{
	if (c->read_ev != NULL)
		event_free(c->read_ev);
	c->read_ev = NULL;
}

/* DATA: fed octets move the deadline on by fed/rate, at most a timeout. */
static uint64_t
conn_data_deadline(struct conn *c, size_t fed, uint64_t now)
{
	const struct config_limits *lim = &conn_cfg(c)->limits;
	uint64_t cap = now + lim->data_idle_ms, d = c->read_deadline_ms;

	if (lim->data_rate_min == 0)
		return fed > 0 ? cap : d;	/* every octet renews it */
	c->rate_credit_us += (uint64_t)fed * 1000000 / lim->data_rate_min;
	d += c->rate_credit_us / 1000;
	c->rate_credit_us %= 1000;
	return d < cap ? d : cap;
}

void
conn_deadline_update(struct conn *c, size_t fed)
{
	enum conn_read_mode mode = conn_read_mode_now(c);
	uint32_t lines = smtp_session_lines(c->smtp);
	uint64_t now = util_now_ms(), d = c->read_deadline_ms;

	if (mode == CONN_READ_NONE)
		d = 0;
	else if (mode != c->read_mode) {
		/* Our reply is out (or DATA began): the clock starts now. */
		d = now + (mode == CONN_READ_DATA ?
		    conn_cfg(c)->limits.data_idle_ms :
		    conn_cfg(c)->limits.idle_ms);
		c->rate_credit_us = 0;
	} else if (mode == CONN_READ_COMMAND && lines != c->read_lines)
		d = now + conn_cfg(c)->limits.idle_ms;	/* a whole line came */
	else if (mode == CONN_READ_DATA)
		d = conn_data_deadline(c, fed, now);
	c->read_mode = mode;
	c->read_lines = lines;
	conn_read_arm(c, d, now);
}
