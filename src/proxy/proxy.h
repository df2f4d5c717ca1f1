/*
 * proxy/proxy.h: proxy sessions, the upstream side of a connection on a
 * proxy listener.  The client side stays the listener's own (smtp/ reads
 * it, every stage's chain runs there); a proxy session is asked to relay
 * each command the chains let through, and answers with the upstream's
 * reply as it goes on the wire.  It picks the upstream (the listener's,
 * by the client's TLS name, or by the first recipient's domain), connects
 * when the first command needs it, speaks TLS and the PROXY protocol to
 * it, filters its EHLO list, and sends the content as canonical DATA.
 * Knows nothing of the spool.
 */
#ifndef POSTERN_PROXY_H
#define POSTERN_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "smtp/smtp.h"

struct config;
struct config_upstream;
struct event_base;
struct table;
struct table_loop;

/* Every upstream of a configuration, resolved and with its TLS context. */
struct proxy_set;
/*
 * Build the upstreams of cfg (borrowed: it must outlive the set): host
 * names are resolved now, so start-up and reload only.  NULL with
 * *err_out (util_err(): "FILE:LINE: upstream NAME: ...").  Immutable once made; shared by every loop.
 */
struct proxy_set *proxy_set_new(const struct config *cfg,
	    const char **err_out);
void	proxy_set_free(struct proxy_set **sp);

/*
 * An event loop's upstream connections that are ending: each has had its
 * QUIT and waits a moment for the reply, whether or not its session is
 * still there.  One per loop, on the loop's thread.
 */
struct proxy_loop;
struct proxy_loop *proxy_loop_new(void);
/* Close every connection still ending, at once (the loop is going away). */
void	proxy_loop_free(struct proxy_loop **plp);

/* What a session needs; everything borrowed for the session's life. */
struct proxy_session_info {
	struct event_base	*base;
	struct proxy_loop	*loop;		/* base's: links after QUIT */
	const struct proxy_set	*set;
	const struct config_upstream *up;	/* the listener's upstream */
	struct table		*by_sni;	/* TLS name -> upstream, or NULL */
	struct table		*by_rcpt;	/* domain -> upstream, or NULL */
	struct table_loop	*tables;	/* answers of the two; NULL
						   when there are none */
	const char		*sid;
	const char		*hostname;	/* ours, in our own replies */
	const char		*client_ip;	/* for the PROXY header */
	int			 client_port;
	const char		*local_ip;	/* the address the client reached */
	int			 local_port;
	bool			 starttls;	/* the listener offers STARTTLS */
	bool			 auth;		/* AUTH is relayed to the upstream */
	bool			 auth_plaintext; /* ... and offered before TLS */
	uint64_t		 size_max;	/* our message size limit */
};

struct proxy_hooks {
	/*
	 * The answer to a proxy_session_relay() that returned 1: the verdict
	 * and code for the session, and the reply as it goes to the client
	 * (len octets of CRLF-terminated lines, borrowed for the call).
	 */
	void	(*answer_cb)(void *arg, enum smtp_verdict v, int code,
		    const char *raw, size_t len);
	/*
	 * The upstream is gone while the client waits on nothing (between
	 * commands, or sending content): the session must end, 421 4.4.2.
	 */
	void	(*lost_cb)(void *arg);
	/* Room for content again, after proxy_session_backlogged(). */
	void	(*drained_cb)(void *arg);
	/* Transcripts: a line sent to (true) or read from the upstream. */
	void	(*trace_cb)(void *arg, bool to_upstream, const char *line,
		    size_t len);
};

struct proxy_session;
struct proxy_session *proxy_session_new(const struct proxy_session_info *info,
	    const struct proxy_hooks *hooks, void *arg);
/*
 * Ends the upstream connection (QUIT, its reply left to info->loop, or the
 * close at once in the middle of a command or content); sets *psp to NULL.
 */
void	proxy_session_free(struct proxy_session **psp);

enum proxy_cmd {
	PROXY_CMD_HELO,		/* HELO or EHLO (esmtp) */
	PROXY_CMD_AUTH,		/* arg: the user, secret: the password */
	PROXY_CMD_MAIL,
	PROXY_CMD_RCPT,		/* arg: the recipient's address */
	PROXY_CMD_DATA,		/* DATA (or the first BDAT): a 354 comes */
	PROXY_CMD_EOM,		/* the end of the content */
	PROXY_CMD_QUIT,
};

/* One command of the client's, as the chains let it through. */
struct proxy_request {
	enum proxy_cmd	 cmd;
	const char	*line;		/* the client's line, no CRLF: sent as
					   it came (HELO..QUIT but AUTH) */
	const char	*arg;		/* HELO: the name; RCPT: the address;
					   AUTH: the user */
	bool		 esmtp;		/* HELO: it was EHLO */
	const char	*secret;	/* AUTH: the password; copied */
	const char	*held_path;	/* EOM: the content is in this file
					   (LF line ends), DATA not sent yet */
	const char	*head;		/* EOM held: head_len octets that take
					   the place of the file's first */
	size_t		 head_len;	/* head_old octets (a filter's header
					   edits) */
	size_t		 head_old;
};

/*
 * Relay rq.  Returns 0 when the session answers it itself with its own
 * reply (nothing goes up: an EHLO before the upstream is known, a MAIL
 * before the recipient picks it, a QUIT with no upstream), 1 when
 * answer_cb tells later, never from inside this call.  One request at a
 * time.
 */
int	proxy_session_relay(struct proxy_session *ps,
	    const struct proxy_request *rq);
/*
 * Content after the 354 of a relayed DATA, as smtp/ decodes it (LF line
 * ends); it goes up as canonical DATA.  0, or -1 when no DATA is open.
 */
int	proxy_session_body(struct proxy_session *ps, const char *buf,
	    size_t len);
/* Too much content waits for the upstream: stop reading the client. */
bool	proxy_session_backlogged(struct proxy_session *ps);
/*
 * The client's transaction ended without an end of data it wants
 * relayed (RSET, a refusal, an error in the content): the upstream's
 * ends too (RSET, or mid-DATA the connection is dropped, so that it
 * never sees an end).
 */
void	proxy_session_reset(struct proxy_session *ps);
/* The client's TLS is up; sni: the name it asked for ("" for none). */
void	proxy_session_client_tls(struct proxy_session *ps, const char *sni);

#endif
