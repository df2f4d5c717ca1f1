/*
 * proxy/content.c: the content on its way up, as canonical DATA (CRLF
 * lines, dot-stuffed, deliver_canon): as it arrives after a relayed 354,
 * or from the file a message was held in until its chains decided, read
 * a piece at a time as the upstream takes it.  Either way no more than
 * PROXY_LINK_HIGH octets wait for a slow upstream.
 */
#include "proxy/proxy_private.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"
#include "log/log.h"

#define PS_HELD_READ	(32 * 1024)

static int
ps_canon_put(void *arg, const void *p, size_t n)
{
	struct proxy_session *ps = arg;

	proxy_link_write(ps->link, p, n);
	return 0;
}

void
ps_content_begin(struct proxy_session *ps)
{
	ps->up_data = true;
	deliver_canon_init(&ps->canon, ps_canon_put, ps);
}

void
ps_content_end(struct proxy_session *ps)
{
	ps->step = PS_DOT;
	(void)deliver_canon_end(&ps->canon);
	proxy_link_expect(ps->link, ps->up->to_ms[PROXY_TO_DATA_TERM]);
}

int
proxy_session_body(struct proxy_session *ps, const char *buf, size_t len)
{
	if (ps->link == NULL || !ps->up_data || ps->step != PS_IDLE)
		return -1;
	return deliver_canon_feed(&ps->canon, buf, len);
}

bool
proxy_session_backlogged(struct proxy_session *ps)
{
	if (ps->link == NULL || !ps->up_data ||
	    proxy_link_backlog(ps->link) < PROXY_LINK_HIGH)
		return false;
	ps->want_drain = true;
	return true;
}

/* The held file cannot be read: the upstream must never see an end. */
static void
ps_held_failed(struct proxy_session *ps, const char *what)
{
	log_event(LOG_LVL_ERROR, "proxy-error", ps->info.sid, NULL,
	    "why=\"%s %s: %s\"", what, ps->held_path, strerror(errno));
	ps_drop_link(ps);
	ps_answer_own(ps, SMTP_REJECT, 451, "4.3.0 Local error in "
	    "processing, try again later");
}

void
ps_held_start(struct proxy_session *ps)
{
	ps_content_begin(ps);
	ps->held_fd = open(ps->held_path, O_RDONLY | O_CLOEXEC);
	if (ps->held_fd == -1) {
		ps_held_failed(ps, "open");
		return;
	}
	/* A filter's header edits take the place of the first octets. */
	if (ps->held_head.len > 0)
		(void)deliver_canon_feed(&ps->canon, ps->held_head.data,
		    ps->held_head.len);
	ps->step = PS_CONTENT;
	ps_held_pump(ps);
}

void
ps_held_pump(struct proxy_session *ps)
{
	char buf[PS_HELD_READ];

	while (proxy_link_backlog(ps->link) < PROXY_LINK_HIGH) {
		/* A page-cache read of the file just written, as Lua's and
		 * the milters' reads of it are. */
		ssize_t n = pread(ps->held_fd, buf, sizeof(buf),
		    (off_t)ps->held_off);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			ps_held_failed(ps, "read");
			return;
		}
		if (n == 0) {
			close(ps->held_fd);
			ps->held_fd = -1;
			ps_content_end(ps);
			return;
		}
		ps->held_off += (uint64_t)n;
		(void)deliver_canon_feed(&ps->canon, buf, (size_t)n);
	}
}
