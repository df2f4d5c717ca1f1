/*
 * smtp/smtp.h: the server side of the SMTP dialogue (RFC 5321 with ESMTP,
 * PIPELINING, SIZE, 8BITMIME, ENHANCEDSTATUSCODES, SMTPUTF8, CHUNKING).
 * Pure: no sockets, no disk, no clock.  Bytes from the peer go in through
 * smtp_session_feed(); replies come out through hooks->send_cb; every stage
 * asks hooks->decide_cb, the single decision point that routing and the
 * handler chains plug into.
 */
#ifndef POSTERN_SMTP_H
#define POSTERN_SMTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct smtp_limits {
	size_t		line_max;	/* octets incl. CRLF; default 1000 (RFC 5321 4.5.3.1.6) */
	uint64_t	msg_max;	/* message octets (CRLF counted as 2, after unstuffing) */
	unsigned	rcpt_max;	/* per transaction; default 100 */
	unsigned	err_max;	/* protocol errors before 421 and close; default 10 */
};

/* What the session offers; the strings are borrowed for the session's life. */
struct smtp_params {
	struct smtp_limits	 lim;
	const char		*hostname;	/* in greeting, EHLO, 221, 421 */
	const char		*greeting;	/* text after "220 hostname "; NULL: "ESMTP postern" */
	bool			 starttls;	/* advertise STARTTLS (until TLS is on) */
	bool			 tls_active;	/* session runs over TLS already */
	bool			 require_tls;	/* before TLS: 530 to all but EHLO,
						   HELO, STARTTLS, NOOP, RSET, QUIT */
	bool			 auth;		/* offer AUTH PLAIN LOGIN (RFC 4954) */
	bool			 auth_plaintext; /* ... also before TLS */
	bool			 sync_data;	/* RFC 2920 3.1: text sent before
						   the 354 is 554 and the close */
	bool			 sync_replies;	/* a client that sends before a
						   reply it must wait for is an
						   early talker: early_talker_cb */
};

enum smtp_stage {
	SMTP_STAGE_CONNECT,	/* before the greeting */
	SMTP_STAGE_HELO,	/* HELO or EHLO; ev->arg is the name */
	SMTP_STAGE_STARTTLS,	/* OK: session sends 220 and stops feeding */
	SMTP_STAGE_AUTH,	/* reserved for AUTH */
	SMTP_STAGE_MAIL,	/* ev->arg is the reverse-path ("" for <>) */
	SMTP_STAGE_RCPT,	/* ev->arg is the forward-path */
	SMTP_STAGE_DATA,	/* DATA before 354, or the first BDAT of a transaction */
	SMTP_STAGE_HEADER,	/* reserved: end of the header block */
	SMTP_STAGE_EOM,		/* after the final dot / BDAT LAST, before the reply */
	SMTP_STAGE_QUIT,
	SMTP_STAGE_DISCONNECT,	/* reserved */
	SMTP_STAGE_COUNT
};

/* Parameters of MAIL FROM (RFC 1870, 6152, 6531). */
enum smtp_body { SMTP_BODY_UNSPEC, SMTP_BODY_7BIT, SMTP_BODY_8BITMIME,
	SMTP_BODY_BINARYMIME };

struct smtp_event {
	enum smtp_stage	 stage;
	const char	*arg;		/* borrowed, valid during the call; see stage */
	uint64_t	 size;		/* MAIL: declared SIZE= (0 none); EOM: octets */
	enum smtp_body	 body;		/* MAIL */
	bool		 smtputf8;	/* MAIL */
	bool		 esmtp;		/* HELO stage: EHLO (true) or HELO */
	const char	*secret;	/* AUTH: the password (arg: the user),
					   wiped after the call: copy it */
};

enum smtp_verdict {
	SMTP_OK,	/* proceed; the stage's default reply unless reply_out->code != 0 */
	SMTP_REJECT,	/* send reply_out (4xx/5xx); the command has no effect */
	SMTP_CLOSE,	/* send reply_out (or 421 if code == 0), then close */
	SMTP_PENDING,	/* answer later through smtp_session_resume() */
};

#define SMTP_REPLY_TEXT_MAX	512
struct smtp_reply {
	int	code;				/* 0: default reply of the stage */
	char	text[SMTP_REPLY_TEXT_MAX];	/* starts with the enhanced code, e.g. "5.1.1 Unknown user" */
};

struct smtp_hooks {
	/* Bytes to write to the peer (whole reply lines, CRLF-terminated). */
	void	(*send_cb)(void *ctx, const char *buf, size_t len);
	/* The single decision point; see enum smtp_verdict. */
	enum smtp_verdict (*decide_cb)(void *ctx, const struct smtp_event *ev,
		    struct smtp_reply *reply_out);
	/*
	 * Message content as it is decoded: dot-unstuffed, every line ending
	 * in a single LF (CRLF on the wire).  Not called once an error is
	 * latched.  A return of -1 latches a local error (451 4.3.0 at end).
	 */
	int	(*body_cb)(void *ctx, const char *buf, size_t len);
	/* The transaction is gone (RSET, HELO, refused DATA or content, after
	 * EOM). */
	void	(*reset_cb)(void *ctx);
	/*
	 * Optional: every command line, before its sequence checks
	 * (session-wide policies such as "reject every command").  verb is
	 * upper-case, "UNKNOWN" for a line that is no command we know.  OK
	 * goes on (an unknown one is a 500); REJECT/CLOSE send reply_out
	 * instead of running the command.  Never PENDING.
	 */
	enum smtp_verdict (*command_cb)(void *ctx, const char *verb,
		    struct smtp_reply *reply_out);
	/*
	 * Optional: are there bytes from the peer beyond those fed so far
	 * (read but not fed, or not read yet)?  Asked when DATA would say
	 * 354, with params.sync_data, and before a reply the client must
	 * wait for, with early_talker_cb.
	 */
	bool	(*input_pending_cb)(void *ctx);
	/*
	 * Optional, with params.sync_replies: the client sent more before
	 * a reply it must wait for: the greeting, the reply to a command
	 * that ends a group (RFC 2920 3.1: EHLO, HELO, VRFY, EXPN, NOOP;
	 * and AUTH), or to any command of a client that was not offered
	 * PIPELINING (HELO, or before EHLO).  STARTTLS and DATA have rules of their own; QUIT closes.
	 * when says which ("before the greeting", "before the reply to
	 * EHLO", "before the 354 reply").  True: the session answers 554
	 * 5.5.0 instead of that reply and closes; false: it goes on.
	 */
	bool	(*early_talker_cb)(void *ctx, const char *when);
	/*
	 * Optional: one line per command and reply for transaction logs.
	 * A SASL answer is traced as SMTP_TRACE_AUTH_ANSWER, never as sent,
	 * an AUTH command without what follows its mechanism, and a line
	 * over line_max (refused unread) as SMTP_TRACE_LINE_TOO_LONG.
	 */
	void	(*trace_cb)(void *ctx, bool from_peer, const char *line,
		    size_t len);
};

#define SMTP_TRACE_AUTH_ANSWER	"[AUTH response]"
#define SMTP_TRACE_LINE_TOO_LONG "[line too long]"

struct smtp_session;

/* A new session; nothing is sent until smtp_session_start(). */
struct smtp_session *smtp_session_new(const struct smtp_params *p,
	    const struct smtp_hooks *hooks, void *ctx);
void	smtp_session_free(struct smtp_session **sp);

/* Run the CONNECT stage and send the greeting (or the refusal). */
void	smtp_session_start(struct smtp_session *s);

/*
 * Feed bytes from the peer.  Returns how many were consumed; fewer than len
 * when the session waits for a PENDING decision, after an accepted STARTTLS
 * (the caller must discard the rest, RFC 3207 4.2), or once it is closing.
 * The caller keeps the rest and feeds it again after smtp_session_resume().
 */
size_t	smtp_session_feed(struct smtp_session *s, const char *buf, size_t len);

/* Give the answer to a PENDING decision (same meaning as decide_cb's). */
void	smtp_session_resume(struct smtp_session *s, enum smtp_verdict v,
	    const struct smtp_reply *reply);

/*
 * smtp_session_resume(), with the reply given as it goes on the wire: raw
 * (len octets of whole "code-text"/"code text" lines, each ending in CRLF,
 * code as given) replaces the one reply the stage would send, so a reply
 * relayed from another server reaches the peer byte for byte.  The caller
 * vouches for the lines (a relay checks and cleans them first); raw is
 * borrowed for the call.  Not the form of raw: the stage's own reply.
 */
void	smtp_session_resume_raw(struct smtp_session *s, enum smtp_verdict v,
	    int code, const char *raw, size_t len);

/* True while a PENDING decision is outstanding. */
bool	smtp_session_is_waiting(const struct smtp_session *s);
/* True once the session wants the connection closed after the last reply. */
bool	smtp_session_is_closing(const struct smtp_session *s);
/*
 * Command lines (AUTH answers too) read so far, wrapping: a change tells
 * the caller that a whole line arrived (a command deadline restarts).
 */
uint32_t smtp_session_lines(const struct smtp_session *s);
/* True between 354 (or the first BDAT) and the end of the message. */
bool	smtp_session_in_data(const struct smtp_session *s);
/*
 * True from a message's end (the final dot, the end of BDAT LAST's chunk)
 * until the last line of a reply goes out: that reply answers the
 * message's end, not its text or a command.
 */
bool	smtp_session_at_eom(const struct smtp_session *s);
/*
 * For reset_cb: true when the transaction goes with its content begun and
 * no end-of-message stage run for it (the content refused, or a reset
 * between BDAT chunks); *size_out: its octets so far, CRLF counted 2.
 */
bool	smtp_session_content_dropped(const struct smtp_session *s,
	    uint64_t *size_out);

/*
 * Send "code text" and close (timeouts, shutdown).  text has the esc; a
 * 421 gets the host name after it when text does not start with it.
 */
void	smtp_session_close_with(struct smtp_session *s, int code,
	    const char *text);

/*
 * After the TLS handshake, of STARTTLS or of implicit TLS (then before
 * smtp_session_start()): forget EHLO and the transaction (RFC 3207 4.2).
 */
void	smtp_session_tls_started(struct smtp_session *s);

/* Facts, valid until the next feed/resume; NULL or 0 when not known yet. */
const char *smtp_session_helo(const struct smtp_session *s);
bool	smtp_session_is_esmtp(const struct smtp_session *s);
/* Some command or DATA line ended in a bare LF or CR (and was refused). */
bool	smtp_session_saw_bare_eol(const struct smtp_session *s);
const char *smtp_session_sender(const struct smtp_session *s); /* "" for <> */
unsigned smtp_session_rcpt_count(const struct smtp_session *s);
const char *smtp_session_rcpt(const struct smtp_session *s, unsigned i);
bool	smtp_session_smtputf8(const struct smtp_session *s);
/* The authenticated identity, or NULL. */
const char *smtp_session_auth_user(const struct smtp_session *s);
enum smtp_body smtp_session_body_type(const struct smtp_session *s);

/* ----- parsers, exposed for tests and fuzzers ----- */

enum smtp_verb {
	SMTP_VERB_UNKNOWN, SMTP_VERB_HELO, SMTP_VERB_EHLO, SMTP_VERB_MAIL,
	SMTP_VERB_RCPT, SMTP_VERB_DATA, SMTP_VERB_BDAT, SMTP_VERB_RSET,
	SMTP_VERB_NOOP, SMTP_VERB_QUIT, SMTP_VERB_VRFY, SMTP_VERB_EXPN,
	SMTP_VERB_HELP, SMTP_VERB_STARTTLS, SMTP_VERB_AUTH,
};

/* One command line without its CRLF.  Views into the line. */
struct smtp_cmd {
	enum smtp_verb	 verb;
	const char	*arg;		/* after the verb and one space; "" if none */
	size_t		 arg_len;
};
/* Split a command line (CRLF removed).  1 ok, -1 not a command. */
int	smtp_cmd_parse(const char *line, size_t len, struct smtp_cmd *out);

#define SMTP_LOCAL_MAX	64	/* RFC 5321 4.5.3.1.1 */
#define SMTP_DOMAIN_MAX	255	/* RFC 5321 4.5.3.1.2 */
#define SMTP_PATH_MAX	256	/* RFC 5321 4.5.3.1.3 */
struct smtp_addr {
	/*
	 * Canonical, so one mailbox has one spelling: a Quoted-string that
	 * could be a Dot-string loses its quotes and backslashes
	 * ("b\ob" is bob); one that needs them keeps the quotes, with only
	 * '"' and '\' escaped.  The case is kept.
	 */
	char	local[SMTP_LOCAL_MAX + 3];
	char	domain[SMTP_DOMAIN_MAX + 1];	/* lower-cased; "" for <> */
	/* "local@domain", or "" for <>; room for postmaster@ any hostname */
	char	addr[sizeof("postmaster@") + SMTP_DOMAIN_MAX];
};
/*
 * Parse "<path>" at the start of s (source route dropped); *end_out points
 * after '>'.  allow_null accepts "<>".  1 ok, -1 with *err_out set.
 */
int	smtp_addr_parse(const char *s, size_t len, bool allow_null,
	    struct smtp_addr *out, const char **end_out, const char **err_out);
/*
 * RFC 5321 4.1.1.3: "<Postmaster>" without a domain is this host's
 * postmaster: out becomes postmaster@hostname, the host name lower-cased
 * (at most SMTP_DOMAIN_MAX octets).
 */
void	smtp_addr_postmaster(const char *hostname, struct smtp_addr *out);

#endif
