/*
 * chain/milter_steps.c: what a milter is sent next.  A run sends the
 * filter, in protocol order, each step of the conversation it has not seen
 * yet, up to the running stage (connect, helo, mail, rcpt, data, headers,
 * end of headers, body pieces, end of message), leaving out what it
 * declined at negotiation.
 */
#include "chain/chain_private.h"

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chain/milter.h"
#include "chain/milter_conn.h"
#include "chain/session.h"
#include "util/util.h"

#define MILTER_BODY_READ	32767		/* raw bytes: <= 64 KiB as CRLF */

/* (Re)start the deadline of what we wait for. */
void
milter_arm(struct milter_conn *mc)
{
	struct timeval tv = util_timeval_ms(mc->timeout_ms);

	evtimer_add(mc->timer, &tv);
	if (mc->call != NULL)
		chain_call_own_timeout(mc->call, mc->timeout_ms);
}

void
milter_send(struct milter_conn *mc, struct util_buf *b, char await)
{
	bufferevent_write(mc->bev, b->data, b->len);
	util_buf_reset(b);
	mc->await = await;
	if (await != 0)
		milter_arm(mc);
}

/* A 'D' packet: macros name=value for the command cmd. */
static void
milter_put_macros(struct util_buf *b, char cmd, const char *const *kv,
    size_t n)
{
	struct util_buf d = { 0 };

	util_buf_add(&d, &cmd, 1);
	for (size_t i = 0; i + 1 < n; i += 2)
		if (kv[i + 1] != NULL) {
			util_buf_add(&d, kv[i], strlen(kv[i]) + 1);
			util_buf_add(&d, kv[i + 1], strlen(kv[i + 1]) + 1);
		}
	milter_put(b, MILTER_C_MACRO, d.data, d.len);
	util_buf_clear(&d);
}

static bool
milter_rcpt_sent(const struct milter_conn *mc, const char *rcpt)
{
	for (size_t i = 0; i < mc->nsent_rcpts; i++)
		if (strcmp(mc->sent_rcpts[i], rcpt) == 0)
			return true;
	return false;
}

static void
milter_put_rcpt(struct milter_conn *mc, struct util_buf *b, const char *rcpt)
{
	char addr[600];

	mc->sent_rcpts = xreallocarray(mc->sent_rcpts, mc->nsent_rcpts + 1,
	    sizeof(*mc->sent_rcpts));
	mc->sent_rcpts[mc->nsent_rcpts++] = xstrdup(rcpt);
	if (mc->proto & MILTER_P_NORCPT)
		return;
	const char *mac[] = { "{rcpt_addr}", rcpt };
	milter_put_macros(b, MILTER_C_RCPT, mac, 2);
	util_snprintf(addr, sizeof(addr), "<%s>", rcpt);
	const char *s = addr;
	milter_put_strs(b, MILTER_C_RCPT, &s, 1);
}

/*
 * The next header field from mc->hdr_off as name and value (the value
 * without the space after the colon, unless the filter wants it, and
 * without the last LF).  False when the block is over.
 */
static bool
milter_next_header(struct milter_conn *mc, const char *h, size_t len,
    struct util_buf *name, struct util_buf *value)
{
	while (mc->hdr_off < len) {
		size_t start = mc->hdr_off;
		size_t i = chain_header_field_end(h, len, start);
		mc->hdr_off = i;
		const char *colon = memchr(h + start, ':', i - start);
		if (colon == NULL || colon == h + start)
			continue;	/* not a field: nothing to say */
		const char *v = colon + 1;
		size_t vlen = (size_t)(h + i - v);
		if (vlen > 0 && v[vlen - 1] == '\n')
			vlen--;
		if (!(mc->proto & MILTER_P_HDR_LEADSPC) && vlen > 0 &&
		    *v == ' ') {
			v++;
			vlen--;
		}
		util_buf_reset(name);
		util_buf_reset(value);
		util_buf_add(name, h + start, (size_t)(colon - (h + start)));
		util_buf_add(value, v, vlen);
		util_buf_cstr(name);
		util_buf_cstr(value);
		return true;
	}
	return false;
}

/* Where the body starts in the message file; -1 when unknown. */
static int64_t
milter_body_start(struct chain_session *cs)
{
	int64_t hl = chain_session_header_len(cs);

	if (hl < 0)
		return -1;
	return (int64_t)cs->msg_offset + hl + (cs->hdr_ended ? 1 : 0);
}

/* The next piece of the body as a 'B' packet (LF made CRLF); 0 at the end. */
static int
milter_put_body(struct milter_conn *mc, struct util_buf *b, const char **err)
{
	char raw[MILTER_BODY_READ], out[2 * MILTER_BODY_READ];
	ssize_t n;
	size_t o = 0;

	if (mc->body_fd == -1) {
		const char *path = chain_session_message_file(mc->cs);
		int64_t start = milter_body_start(mc->cs);
		if (path == NULL || start < 0) {
			*err = path == NULL ? "no message file" :
			    "header block too long to find the body";
			return -1;
		}
		mc->body_fd = open(path, O_RDONLY | O_CLOEXEC);
		if (mc->body_fd == -1) {
			*err = "cannot open the message file";
			return -1;
		}
		mc->body_off = (uint64_t)start;
	}
	/* A page-cache read of the file just written, as Lua's reads are. */
	n = pread(mc->body_fd, raw, sizeof(raw), (off_t)mc->body_off);
	if (n == -1) {
		*err = "cannot read the message file";
		return -1;
	}
	if (n == 0)
		return 0;
	mc->body_off += (uint64_t)n;
	for (ssize_t i = 0; i < n; i++) {
		if (raw[i] == '\n')
			out[o++] = '\r';
		out[o++] = raw[i];
	}
	milter_put(b, MILTER_C_BODY, out, o);
	return 1;
}

/* A command without data, unless the filter declined it (skip). */
static int
milter_put_bare(struct milter_conn *mc, struct util_buf *b, char cmd,
    uint32_t skip, uint32_t noreply)
{
	if (!(mc->proto & skip)) {
		milter_put(b, cmd, NULL, 0);
		milter_send(mc, b, mc->proto & noreply ? 0 : cmd);
	}
	return 1;
}

/*
 * Send the next command the filter has not seen, up to the target stage.
 * 1 when something went out, 0 when there is nothing left, -1 on error.
 */
int
milter_next(struct milter_conn *mc, struct util_buf *b, const char **err)
{
	struct chain_session *cs = mc->cs;
	enum smtp_stage t = mc->target;
	bool in_tx = t >= SMTP_STAGE_MAIL && t <= SMTP_STAGE_EOM;
	char buf[600];

	if (!mc->sent_connect) {
		mc->sent_connect = true;
		if (mc->proto & MILTER_P_NOCONNECT)
			return 1;
		const char *mac[] = { "j", cs->hostname, "{daemon_name}",
		    "postern", "{client_addr}", cs->ip };
		milter_put_macros(b, MILTER_C_CONNECT, mac, 6);
		util_snprintf(buf, sizeof(buf), "[%s]", cs->ip);
		milter_put_connect(b, cs->rdns != NULL && cs->rdns_confirmed ?
		    cs->rdns : buf, cs->ip, cs->port);
		milter_send(mc, b, mc->proto & MILTER_P_NR_CONN ? 0 :
		    MILTER_C_CONNECT);
		return 1;
	}
	/*
	 * A new HELO name, or the first HELO over TLS whatever its name: the
	 * TLS macros go with it, as Postfix and Sendmail send them.
	 */
	if (t >= SMTP_STAGE_HELO && cs->helo != NULL && (mc->sent_helo ==
	    NULL || strcmp(mc->sent_helo, cs->helo) != 0 ||
	    mc->sent_helo_tls != (cs->tls_proto != NULL))) {
		free(mc->sent_helo);
		mc->sent_helo = xstrdup(cs->helo);
		mc->sent_helo_tls = cs->tls_proto != NULL;
		if (mc->proto & MILTER_P_NOHELO)
			return 1;
		const char *mac[] = { "{tls_version}", cs->tls_proto,
		    "{cipher}", cs->tls_cipher };
		milter_put_macros(b, MILTER_C_HELO, mac, 4);
		const char *s = cs->helo;
		milter_put_strs(b, MILTER_C_HELO, &s, 1);
		milter_send(mc, b, mc->proto & MILTER_P_NR_HELO ? 0 :
		    MILTER_C_HELO);
		return 1;
	}
	if (!in_tx || cs->sender == NULL || mc->tx_quiet)
		return 0;
	if (!mc->tx_open) {
		mc->tx_open = true;
		if (mc->proto & MILTER_P_NOMAIL)
			return 1;
		const char *mac[] = { "{mail_addr}", cs->sender,
		    "{auth_authen}", cs->auth_user };
		milter_put_macros(b, MILTER_C_MAIL, mac, 4);
		util_snprintf(buf, sizeof(buf), "<%s>", cs->sender);
		const char *s = buf;
		milter_put_strs(b, MILTER_C_MAIL, &s, 1);
		milter_send(mc, b, mc->proto & MILTER_P_NR_MAIL ? 0 :
		    MILTER_C_MAIL);
		return 1;
	}
	for (size_t i = 0; t >= SMTP_STAGE_RCPT && i < cs->nrcpts; i++)
		if (!milter_rcpt_sent(mc, cs->rcpts[i])) {
			milter_put_rcpt(mc, b, cs->rcpts[i]);
			milter_send(mc, b, mc->proto & (MILTER_P_NORCPT |
			    MILTER_P_NR_RCPT) ? 0 : MILTER_C_RCPT);
			return 1;
		}
	if (t == SMTP_STAGE_RCPT) {
		if (mc->cur_rcpt_sent || cs->rcpt == NULL)
			return 0;
		mc->cur_rcpt_sent = true;
		milter_put_rcpt(mc, b, cs->rcpt);
		milter_send(mc, b, mc->proto & (MILTER_P_NORCPT |
		    MILTER_P_NR_RCPT) ? 0 : MILTER_C_RCPT);
		return 1;
	}
	if (t < SMTP_STAGE_DATA)
		return 0;
	if (!mc->sent_data) {
		mc->sent_data = true;
		return milter_put_bare(mc, b, MILTER_C_DATA, MILTER_P_NODATA,
		    MILTER_P_NR_DATA);
	}
	if (t < SMTP_STAGE_HEADER)
		return 0;
	if (!mc->sent_hdrs) {
		size_t len;
		/* With the edits of the handlers before: libmilter's
		 * xxfi_header, "later filters will see header
		 * changes/additions made by earlier ones". */
		const char *h = chain_session_headers(cs, &len);
		struct util_buf name = { 0 }, value = { 0 };
		/* A block cut short by the size limit: its whole lines. */
		while (len > 0 && h[len - 1] != '\n')
			len--;
		bool more = !(mc->proto & MILTER_P_NOHDRS) && h != NULL &&
		    milter_next_header(mc, h, len, &name, &value);
		if (more) {
			const char *s[] = { name.data, value.data };
			milter_put_strs(b, MILTER_C_HEADER, s, 2);
		}
		util_buf_clear(&name);
		util_buf_clear(&value);
		if (more) {
			milter_send(mc, b, mc->proto & MILTER_P_NR_HDR ? 0 :
			    MILTER_C_HEADER);
			return 1;
		}
		mc->sent_hdrs = true;
		return milter_put_bare(mc, b, MILTER_C_EOH, MILTER_P_NOEOH,
		    MILTER_P_NR_EOH);
	}
	if (t < SMTP_STAGE_EOM || mc->sent_eom)
		return 0;
	if (!mc->body_done && !(mc->proto & MILTER_P_NOBODY)) {
		int r = milter_put_body(mc, b, err);
		if (r == -1)
			return -1;
		if (r == 1) {
			milter_send(mc, b, mc->proto & MILTER_P_NR_BODY ? 0 :
			    MILTER_C_BODY);
			return 1;
		}
	}
	mc->body_done = true;
	mc->sent_eom = true;
	milter_put(b, MILTER_C_EOB, NULL, 0);
	milter_send(mc, b, MILTER_C_EOB);
	return 1;
}

