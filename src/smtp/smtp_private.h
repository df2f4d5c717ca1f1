/*
 * smtp/smtp_private.h: what the files of smtp/ share: the session, its one
 * state enum, the DATA/BDAT decoder and the parameter parsers.  Nothing
 * outside src/smtp/ (and its tests and fuzzers) includes this.
 */
#ifndef POSTERN_SMTP_PRIVATE_H
#define POSTERN_SMTP_PRIVATE_H

#include "smtp/smtp.h"
#include "util/util.h"

#define SMTP_DEF_LINE_MAX	1000	/* RFC 5321 4.5.3.1.6 */
#define SMTP_DEF_RCPT_MAX	100	/* RFC 5321 4.5.3.1.8 */
#define SMTP_DEF_ERR_MAX	10
#define SMTP_MIN_LINE_MAX	64
/* A command line over line_max is dropped up to this far, then cut. */
#define SMTP_LINE_DRAIN_MAX	(1024 * 1024)
/* RFC 5321 4.5.3.1.5: a reply line is at most 512 octets with code and CRLF. */
#define SMTP_REPLY_LINE_MAX	512

/*
 * The one state of the dialogue; only smtp_set_state() changes it.  A
 * transaction (MAIL..end of message) is MAIL, RCPT, DATA or BDAT.
 */
enum smtp_state {
	SMTP_ST_INIT,		/* before smtp_session_start() */
	SMTP_ST_REFUSED,	/* CONNECT refused: only QUIT (RFC 5321 3.1) */
	SMTP_ST_GREETED,	/* greeting sent, no HELO/EHLO yet */
	SMTP_ST_READY,		/* HELO/EHLO done, no transaction */
	SMTP_ST_MAIL,		/* MAIL accepted, no recipient yet */
	SMTP_ST_RCPT,		/* at least one recipient */
	SMTP_ST_DATA,		/* after 354: bytes go to the DATA decoder */
	SMTP_ST_BDAT,		/* reading a BDAT chunk */
	SMTP_ST_TLS,		/* 220 sent to STARTTLS; waiting for the handshake */
};

/* ----- decoder of message content (data.c) ----- */

enum smtp_dec_err {
	SMTP_DEC_OK,
	SMTP_DEC_BARE,		/* bare CR or bare LF */
	SMTP_DEC_NUL,
	SMTP_DEC_LONG,		/* a line over line_max incl. CRLF */
	SMTP_DEC_BIG,		/* more than msg_max octets */
	SMTP_DEC_LOCAL,		/* the sink failed */
};

enum smtp_dec_pos {
	SMTP_DEC_BOL,		/* at the start of a line */
	SMTP_DEC_TEXT,		/* inside a line */
	SMTP_DEC_CR,		/* after a CR inside a line */
	SMTP_DEC_DOT,		/* DATA: after a '.' at the start of a line */
	SMTP_DEC_DOT_CR,	/* DATA: after ".<CR>" at the start of a line */
};

/*
 * Decodes DATA (dot-stuffed, ends at CRLF.CRLF) or BDAT content (raw) into
 * LF-terminated lines for sink_cb.  Errors latch: the first one stays, the
 * sink is not called any more, and decoding goes on to find the end.
 */
struct smtp_dec {
	bool			 dot;		/* DATA (true) or BDAT */
	enum smtp_dec_pos	 pos;
	bool			 clean_bol;	/* last line ended in a real CRLF */
	size_t			 line_len;	/* octets of this line, unstuffed */
	size_t			 line_max;	/* incl. CRLF */
	uint64_t		 size;		/* octets so far, CRLF counted 2 */
	uint64_t		 msg_max;	/* 0: no limit */
	enum smtp_dec_err	 err;		/* latched */
	int			(*sink_cb)(void *ctx, const char *buf,
				    size_t len);
	void			*sink_ctx;	/* borrowed */
};

void	smtp_dec_init(struct smtp_dec *d, bool dot, size_t line_max,
	    uint64_t msg_max, int (*sink_cb)(void *, const char *, size_t),
	    void *sink_ctx);
/*
 * Decode up to len bytes.  Returns the bytes consumed: all of them, or (for
 * DATA) up to and including the final ".<CRLF>", then *end_out is true.
 */
size_t	smtp_dec_feed(struct smtp_dec *d, const char *buf, size_t len,
	    bool *end_out);
/* BDAT LAST: the content is over; a CR left pending is a bare CR. */
void	smtp_dec_finish(struct smtp_dec *d);
/* The reply of a latched error: code and text with its enhanced code. */
int	smtp_dec_err_reply(enum smtp_dec_err err, const char **text_out);

/* ----- parsers (parse.c) ----- */

/* One "keyword[=value]" of MAIL or RCPT (RFC 5321 4.1.2 esmtp-param). */
struct smtp_param {
	const char	*key;
	size_t		 key_len;
	const char	*val;		/* NULL when there is no '=' */
	size_t		 val_len;
};
/*
 * Take the next parameter from *pp (up to lim), skipping spaces; advances
 * *pp.  1 got one, 0 none left, -1 bad syntax.
 */
int	smtp_param_next(const char **pp, const char *lim,
	    struct smtp_param *out);

struct smtp_mail_params {
	uint64_t	 size;		/* SIZE=, 0 when absent */
	enum smtp_body	 body;
	bool		 smtputf8;
	bool		 auth;		/* AUTH= given (RFC 4954 5); ignored */
};
/*
 * Parse the parameters of MAIL FROM (p..lim, after the path).  esmtp: the
 * session said EHLO.  0 ok, or -1 with the reply in *code_out, *text_out.
 */
int	smtp_mail_params_parse(const char *p, const char *lim, bool esmtp,
	    uint64_t msg_max, struct smtp_mail_params *out, int *code_out,
	    const char **text_out);
/* Parse "n" or "n LAST" of BDAT (RFC 3030 2).  0 or -1. */
int	smtp_bdat_parse(const char *arg, size_t len, uint64_t *n_out,
	    bool *last_out);
/* True when s has a byte outside ASCII. */
bool	smtp_has_8bit(const char *s, size_t len);

/* ----- the session (session.c, command.c, reply.c) ----- */

enum smtp_auth_step {
	SMTP_AUTH_NONE,
	SMTP_AUTH_PLAIN,	/* 334 sent; the PLAIN response comes next */
	SMTP_AUTH_LOGIN_USER,	/* 334 Username: sent */
	SMTP_AUTH_LOGIN_PASS,	/* 334 Password: sent */
	SMTP_AUTH_CHECKING,	/* the AUTH stage is deciding */
	SMTP_AUTH_DONE,		/* authenticated as auth_user */
};

struct smtp_session {
	struct smtp_params	 p;		/* copy; strings borrowed */
	struct smtp_hooks	 hooks;		/* copy */
	void			*ctx;		/* borrowed: the hooks' */
	enum smtp_state		 state;
	bool			 closing;
	bool			 tls_active;
	bool			 esmtp;
	char			*helo;		/* owned; NULL before HELO */
	unsigned		 errors;	/* protocol errors so far */

	enum smtp_auth_step	 auth_step;
	char			*auth_user;	/* owned; the identity once DONE */

	/* Line reader: a partial command line, allocated only while used. */
	char			*line;		/* owned; line_max bytes */
	size_t			 line_len;
	bool			 line_drain;	/* dropping a too long line */
	bool			 line_bare_lf;	/* this line held a bare LF */
	bool			 saw_bare_eol;	/* some line lacked its CRLF */
	bool			 drain_cr;	/* draining: the last byte was CR */
	uint32_t		 drained;	/* octets dropped of a too long line */
	uint32_t		 lines;		/* command lines read (wraps) */
	const char		*must_wait;	/* static: the next reply is one
						   the client waits for (the
						   greeting, a verb), or NULL */
	size_t			 feed_rest;	/* fed bytes after the line being
						   run (0 outside a feed) */

	/* A PENDING decision and what it needs to finish. */
	bool			 waiting;
	const char		*raw_reply;	/* borrowed: resume_raw()'s reply,
						   sent instead of the next one */
	size_t			 raw_len;
	enum smtp_stage		 wait_stage;
	char			*st_str;	/* owned: HELO name, path */
	bool			 st_esmtp;
	struct smtp_mail_params	 st_mail;
	uint64_t		 st_chunk;	/* BDAT size */
	bool			 st_last;
	bool			 st_bdat;	/* DATA stage runs for BDAT */

	/* The transaction. */
	char			*sender;	/* owned; NULL before MAIL */
	struct smtp_mail_params	 mail;
	char			**rcpts;	/* owned */
	unsigned		 rcpt_count;
	unsigned		 rcpt_cap;
	bool			 bdat_tx;	/* BDAT started the content */
	struct smtp_dec		 dec;
	bool			 content_open;	/* its EOM stage not reached */
	bool			 at_eom;	/* its end read, not answered */

	/* The BDAT chunk being read. */
	uint64_t		 chunk_left;
	uint64_t		 chunk_size;
	bool			 chunk_last;
	bool			 chunk_drain;	/* refused: drop it, replied already */
	enum smtp_state		 chunk_ret;	/* the state after the chunk */
};

void	smtp_set_state(struct smtp_session *s, enum smtp_state st);
/* The peer sent more than the session has read (a feed's rest, or more). */
bool	smtp_input_pending(struct smtp_session *s);
/*
 * The peer sent more before a reply it must wait for (s->must_wait, or
 * what): early_talker_cb hears of it.  True when it wants the close: the
 * 554 is sent and the session closing.  reply.c.
 */
bool	smtp_early_talk(struct smtp_session *s, const char *what);

/* auth.c */
/* AUTH is offered now: configured, and under TLS or allowed without. */
bool	smtp_auth_offered(const struct smtp_session *s);
void	smtp_cmd_auth(struct smtp_session *s, const struct smtp_cmd *c);
void	smtp_auth_line(struct smtp_session *s, const char *line, size_t len);
/* An exchange under way ends, its user forgotten (not once authenticated). */
void	smtp_auth_reset(struct smtp_session *s);
void	smtp_done_auth(struct smtp_session *s, enum smtp_verdict v,
	    const struct smtp_reply *r);
/* Forget the transaction and tell the hooks (reset_cb). */
void	smtp_tx_reset(struct smtp_session *s);
void	smtp_mark_closing(struct smtp_session *s);

/*
 * Ask decide_cb.  Returns true when the caller applies *v now; false when
 * the decision is PENDING (s->waiting set) or a hook closed the session.
 */
bool	smtp_decide(struct smtp_session *s, const struct smtp_event *ev,
	    enum smtp_verdict *v, struct smtp_reply *r);
/* Apply a verdict of stage (synchronous or from smtp_session_resume()). */
void	smtp_stage_done(struct smtp_session *s, enum smtp_stage stage,
	    enum smtp_verdict v, struct smtp_reply *r);
/* Free the strings kept for a PENDING decision. */
void	smtp_staged_clear(struct smtp_session *s);

/* A mail transaction is open and has no content yet (MAIL or RCPT). */
bool	smtp_in_tx(const struct smtp_session *s);

/* transfer.c: DATA, BDAT and the end of a message (see command.c). */
void	smtp_cmd_data(struct smtp_session *s, const struct smtp_cmd *c);
void	smtp_cmd_bdat(struct smtp_session *s, const struct smtp_cmd *c);
void	smtp_done_data(struct smtp_session *s, enum smtp_verdict v,
	    const struct smtp_reply *r);
void	smtp_done_eom(struct smtp_session *s, enum smtp_verdict v,
	    const struct smtp_reply *r);

/* Run one command line (CRLF removed, already checked for CR/LF/NUL). */
void	smtp_command(struct smtp_session *s, const char *line, size_t len);
/* Bytes of DATA content / of a BDAT chunk; return the bytes consumed. */
size_t	smtp_data_feed(struct smtp_session *s, const char *buf, size_t len);
size_t	smtp_bdat_feed(struct smtp_session *s, const char *buf, size_t len);

/*
 * Send "code text"; a '\n' in text starts another line ("code-" before
 * all but the last).  Control and non-ASCII bytes become '?'.  A 421
 * names the host first (after the enhanced code) when text does not.
 */
void	smtp_reply(struct smtp_session *s, int code, const char *text);
void	smtp_replyf(struct smtp_session *s, int code, const char *fmt, ...)
	    UTIL_PRINTF(3, 4);
/* A protocol error: counted toward err_max; past it 421 and close. */
void	smtp_error(struct smtp_session *s, int code, const char *text);
/* Count an error; true (and 421 sent, closing) when past err_max. */
bool	smtp_count_error(struct smtp_session *s);
/* The reply of an OK verdict: r's when it is a 2xx, else the default. */
void	smtp_reply_ok(struct smtp_session *s, const struct smtp_reply *r,
	    int def_code, const char *def_text);
/*
 * The reply of REJECT (r's if 4xx/5xx; code 0: the default; else 451) or
 * CLOSE (r's if 4xx/5xx, else 421, then closing).
 */
void	smtp_reply_refusal(struct smtp_session *s, enum smtp_verdict v,
	    const struct smtp_reply *r, int def_code, const char *def_text);

/*
 * parse.c: how much of a command line (CRLF removed) a log may hold: all
 * of it, but of an AUTH line only "AUTH", its blanks and its mechanism.
 */
size_t	smtp_cmd_loggable(const char *line, size_t len);

#endif
