/*
 * proxy/proxy_private.h: what the files of proxy/ share: the upstream
 * reply reader and the EHLO filter (pure, for tests and fuzzers too), the
 * PROXY header, the resolved upstreams, and one upstream connection.
 */
#ifndef POSTERN_PROXY_PRIVATE_H
#define POSTERN_PROXY_PRIVATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sys/socket.h>

#include "deliver/deliver.h"
#include "proxy/proxy.h"
#include "util/util.h"

/* ----- replies (reply.c) ----- */

/* RFC 5321 4.5.3.1.5: a reply line is 512 octets with code and CRLF. */
#define PROXY_REPLY_LINE_MAX	512
/* A line is cut to the above; one longer than this is an error. */
#define PROXY_REPLY_RAW_MAX	(16 * 1024)
/* RFC 5321 sets no count; an EHLO list is a few dozen at most. */
#define PROXY_REPLY_LINES_MAX	200

/* One reply being read; reset with proxy_reply_init() for the next. */
struct proxy_reply {
	int		 code;		/* 0 before the first line */
	unsigned	 nlines;
	struct util_buf	 wire;		/* the lines as relayed, with CRLF */
	char		 line[PROXY_REPLY_LINE_MAX];	/* being read */
	size_t		 line_len;	/* octets kept of it */
	size_t		 raw_len;	/* octets read of it */
	const char	*err;		/* static: why it is no reply */
};
void	proxy_reply_init(struct proxy_reply *r);
void	proxy_reply_clear(struct proxy_reply *r);
/*
 * Read from buf[0..len).  1: a reply is whole (*used_out octets taken,
 * the rest is the next one's); 0: all taken, more is needed; -1: not a
 * reply (r->err), and it stays so.
 */
int	proxy_reply_feed(struct proxy_reply *r, const char *buf, size_t len,
	    size_t *used_out);
/* Line k's text (after "NNN-"), borrowed from r->wire; false: no line k. */
bool	proxy_reply_text(const struct proxy_reply *r, unsigned k,
	    const char **text_out, size_t *len_out);

/* ----- EHLO (ehlo.c) ----- */

/* What an upstream's EHLO reply offers. */
struct proxy_caps {
	bool		 esmtp;		/* a 2xx reply to EHLO */
	bool		 starttls, pipelining, chunking, eightbit, smtputf8;
	bool		 auth_plain, auth_login;
	bool		 has_size;
	uint64_t	 size_max;	/* 0: none given */
};
void	proxy_caps_parse(const struct proxy_reply *r, struct proxy_caps *out);

struct proxy_ehlo_opts {
	bool		 starttls;	/* we offer STARTTLS now */
	bool		 auth;		/* we relay AUTH now */
	uint64_t	 size_max;	/* our limit; 0: none */
};
/*
 * The EHLO reply the client gets out of the upstream's (2xx): its first
 * line, then its lines of PIPELINING, 8BITMIME, SMTPUTF8,
 * ENHANCEDSTATUSCODES and CHUNKING as they are, its SIZE when within
 * ours (else ours), then STARTTLS and AUTH PLAIN LOGIN as o says.
 */
void	proxy_ehlo_filter(const struct proxy_reply *r,
	    const struct proxy_ehlo_opts *o, struct util_buf *out);

/* The PROXY header sent first upstream (util_proxyhdr_write). */
#define PROXY_HEADER_MAX	(UTIL_PROXYHDR_V1_MAX + 1)

/* ----- the upstreams (set.c) ----- */

struct tls_client;
struct config_upstream;

/* RFC 5321 4.5.3.2 client timeouts, as a relay's (config "timeout"). */
enum proxy_to { PROXY_TO_CONNECT, PROXY_TO_GREETING, PROXY_TO_COMMAND,
	PROXY_TO_DATA_INIT, PROXY_TO_DATA_BLOCK, PROXY_TO_DATA_TERM,
	PROXY_TO_COUNT };

struct proxy_upstream {
	const struct config_upstream *cfg;	/* borrowed */
	struct sockaddr_storage	*addrs;		/* owned: where to connect, in
						   order */
	socklen_t		*addrlens;	/* owned */
	size_t			 naddrs;
	struct tls_client	*tls;		/* owned */
	uint64_t		 to_ms[PROXY_TO_COUNT];
};
/* The upstream named name, or NULL. */
const struct proxy_upstream *proxy_set_find(const struct proxy_set *s,
	    const char *name);

/* ----- one upstream connection (link.c) ----- */

struct proxy_link;
struct proxy_link_ops {
	/* A whole reply (the greeting first), borrowed for the call. */
	void	(*reply_cb)(void *arg, const struct proxy_reply *r);
	/* The link is dead (connect, close, timeout, TLS, a bad reply). */
	void	(*fail_cb)(void *arg, const char *why);
	/* The STARTTLS handshake is over. */
	void	(*tls_cb)(void *arg);
	/* What waited to be written fell to PROXY_LINK_LOW or below. */
	void	(*drain_cb)(void *arg);
	void	(*trace_cb)(void *arg, bool out, const char *line, size_t len);
};
#define PROXY_LINK_HIGH	(256 * 1024)	/* content waiting: stop feeding */
#define PROXY_LINK_LOW	(64 * 1024)	/* ... and go on from here */

/*
 * Connect to up (the header, n octets, goes first when n > 0; then TLS for
 * smtp+tls://, sni or the host as the name) and wait for the greeting.
 * Everything after this reports through ops, never from inside a call.
 */
struct proxy_link *proxy_link_new(struct event_base *base,
	    const struct proxy_upstream *up, const struct proxy_link_ops *ops,
	    void *arg, const char *header, size_t n, const char *sni);
/*
 * Free l (NULL is fine); inside one of its callbacks it goes once the
 * callback returns, and no other callback comes.  Sets *lp to NULL.
 */
void	proxy_link_free(struct proxy_link **lp);
/*
 * Send a command line (no CRLF; secret: traced as "VERB [secret]", a line
 * of one word as "[secret]") and wait up to to_ms for its reply.
 */
void	proxy_link_command(struct proxy_link *l, const char *line, size_t len,
	    uint64_t to_ms, bool secret);
/* Content octets (no reply due); bounded by the data-block timeout. */
void	proxy_link_write(struct proxy_link *l, const void *p, size_t n);
/* A reply is due within to_ms (after the content's end). */
void	proxy_link_expect(struct proxy_link *l, uint64_t to_ms);
/*
 * The end of l (NULL is fine): QUIT, then the close when its reply comes or
 * after PROXY_LINK_QUIT_MS, kept meanwhile by loop, with no callback to the
 * caller.  A link that cannot take a command now (connecting, a reply or a
 * handshake under way, failed) closes at once; so must one in the middle
 * of content, which the caller knows of (proxy_link_free).  Sets *lp to
 * NULL.
 */
void	proxy_link_quit(struct proxy_link **lp, struct proxy_loop *loop);
#define PROXY_LINK_QUIT_MS	2000	/* the longest wait for QUIT's reply */
/* Octets waiting to be written. */
size_t	proxy_link_backlog(const struct proxy_link *l);
/* After the 220 to STARTTLS: the handshake, sni as the name. */
void	proxy_link_starttls(struct proxy_link *l, const char *sni);
bool	proxy_link_is_tls(const struct proxy_link *l);
/* "host[ip]:port" for log lines. */
const char *proxy_link_peer(const struct proxy_link *l);

/* ----- the session (session.c, route.c, content.c) ----- */

/* What the reply due from the upstream is for. */
enum ps_step {
	PS_IDLE,	/* nothing is due */
	PS_GREET,	/* the greeting */
	PS_EHLO,	/* EHLO with the client's name, while setting up */
	PS_HELO,	/* HELO, when the upstream refused EHLO */
	PS_STARTTLS,
	PS_TLS,		/* the handshake after its 220 */
	PS_REPLAY,	/* the client's MAIL again: a recipient picked it */
	PS_RSET,	/* ours: the client's transaction ended */
	PS_CMD,		/* the client's command: the reply is relayed */
	PS_AUTH,	/* AUTH PLAIN without its response: 334 lets it go */
	PS_DATA_HELD,	/* DATA before a held message */
	PS_CONTENT,	/* a held message going up */
	PS_DOT,		/* the end of the content */
};

struct event;
struct table_req;

struct proxy_session {
	struct proxy_session_info info;		/* strings borrowed */
	const struct proxy_hooks *hooks;
	void			*hook_arg;
	const struct proxy_upstream *def;	/* the listener's */
	char			*client_sni;	/* owned; NULL before TLS */
	bool			 client_tls;
	char			*helo;		/* owned: the client's name */
	struct util_buf		 mail_line;	/* the client's MAIL */
	/* the upstream */
	struct proxy_link	*link;		/* owned, or NULL */
	const struct proxy_upstream *up;	/* the link's */
	const struct proxy_upstream *sni_up;	/* the TLS name's, once known */
	enum ps_step		 step;
	bool			 greeted, hello_done, up_esmtp, tls_declined;
	bool			 relayed;	/* the client has this one's EHLO */
	bool			 up_tx;		/* it has the client's MAIL */
	bool			 up_data;	/* content is going up */
	bool			 rset_due;
	bool			 ehlo_fresh;	/* ehlo is this request's EHLO */
	struct proxy_reply	 ehlo;		/* its last EHLO reply */
	struct proxy_caps	 caps;
	/* the request */
	bool			 active;
	bool			 in_relay;	/* answers wait for the loop */
	enum proxy_cmd		 cmd;
	bool			 esmtp;		/* HELO: it is EHLO */
	struct util_buf		 line;		/* the client's line (AUTH: the
						   PLAIN response, wiped) */
	char			*arg;		/* owned copy of rq->arg */
	const struct proxy_upstream *target;	/* chosen for it */
	struct table_req	*lookup;
	unsigned		 spelling;	/* proxy-rcpt: the domain's
						   next one to look up */
	/* content */
	struct deliver_canon	 canon;
	bool			 want_drain;	/* the client waits for room */
	char			*held_path;	/* owned: EOM of a held message */
	int			 held_fd;	/* -1: none open */
	uint64_t		 held_off;
	struct util_buf		 held_head;	/* goes before held_off */
	/* an answer that waits for the loop */
	struct event		*later_ev;	/* owned */
	enum smtp_verdict	 later_v;
	int			 later_code;
	struct util_buf		 later_raw;
	unsigned		 busy;		/* hooks under way */
	bool			 doomed;	/* freed inside a hook */
};

/* session.c */
void	ps_advance(struct proxy_session *ps);
void	ps_answer(struct proxy_session *ps, enum smtp_verdict v, int code,
	    const char *raw, size_t len);
/* Our own reply: "code text" with text printf'd. */
void	ps_answer_own(struct proxy_session *ps, enum smtp_verdict v, int code,
	    const char *fmt, ...) UTIL_PRINTF(4, 5);
void	ps_drop_link(struct proxy_session *ps);
/* route.c: the upstream of the request.  True: ps->target is set; false:
 * wait (a lookup is under way, or the request was answered). */
bool	ps_route(struct proxy_session *ps);
/* content.c */
void	ps_content_begin(struct proxy_session *ps);
/* The 354 to DATA for a held message: send it from its file. */
void	ps_held_start(struct proxy_session *ps);
void	ps_held_pump(struct proxy_session *ps);
/* The content is all up: the end, and its reply is due. */
void	ps_content_end(struct proxy_session *ps);

#endif
