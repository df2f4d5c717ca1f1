/*
 * chain/chain.h: handler chains per SMTP stage ("on rcpt { ... }"), the
 * session facts and key/value state they share, and the interface every
 * handler kind (builtins, Lua, milter, program) implements.  A chain never
 * blocks its event loop: a handler may answer later, and chain_run() then
 * reports through a callback.  Knows nothing of sockets or the spool.
 */
#ifndef POSTERN_CHAIN_H
#define POSTERN_CHAIN_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "smtp/smtp.h"

struct config;
struct event_base;
struct evdns_base;
struct store;
struct table_loop;
struct util_buf;

/* Stages are smtp/'s: SMTP_STAGE_CONNECT .. SMTP_STAGE_DISCONNECT. */
#define CHAIN_STAGE_BIT(st)	(1u << (unsigned)(st))
#define CHAIN_STAGES_ALL	((1u << SMTP_STAGE_COUNT) - 1)

/* "connect", "helo", ... "disconnect"; NULL when out of range. */
const char *chain_stage_name(enum smtp_stage st);
/* 0 and *out set, or -1 for an unknown name. */
int	chain_stage_parse(const char *name, enum smtp_stage *out);

/* ----- verdicts ----- */

enum chain_kind {
	CHAIN_CONTINUE,		/* next handler */
	CHAIN_ACCEPT,		/* stop the chain; the stage's default reply */
	CHAIN_REJECT,		/* code 4xx/5xx, esc, text; the command fails */
	CHAIN_DELAY,		/* wait delay_ms (a timer), then continue */
	CHAIN_DISCONNECT,	/* code 421 or 521 (0: 421), then close */
	CHAIN_DISCARD,		/* accept; the transaction delivers nothing */
	CHAIN_QUARANTINE,	/* accept; deliver to action `name` instead */
	CHAIN_TAG,		/* set name=value in a store, then continue */
	CHAIN_FAIL,		/* handler error: its on-error policy decides */
};

#define CHAIN_TEXT_MAX	400	/* reply text after expansion, without code */
#define CHAIN_KEY_MAX	64
#define CHAIN_VALUE_MAX	256

enum chain_scope { CHAIN_SCOPE_SESSION, CHAIN_SCOPE_TX };

/*
 * What one handler decided.  Handlers fill it; the framework validates it
 * (a reply from a script is outside input): a REJECT needs a 4xx/5xx
 * code, printable text of bounded length, else 451 4.3.0.
 */
struct chain_verdict {
	enum chain_kind	 kind;
	int		 code;			/* REJECT/DISCONNECT; 0: default */
	char		 esc[16];		/* "5.7.1"; "": derived from code */
	char		 text[CHAIN_TEXT_MAX];	/* may hold %{var}; "": default */
	uint64_t	 delay_ms;		/* DELAY */
	char		 name[CHAIN_KEY_MAX];	/* QUARANTINE: action; TAG: key */
	char		 value[CHAIN_VALUE_MAX];	/* TAG */
	enum chain_scope scope;			/* TAG */
	bool		 no_deliver;		/* RCPT accept/continue: accept
						   the recipient, never deliver
						   (verify soft-invalid) */
	char		 why[128];		/* FAIL, or a note for the log;
						   a refusal without one is
						   logged with its reply text */
};

/* Small constructors; text is a template ("%{client.ip}") or NULL. */
void	chain_verdict_continue(struct chain_verdict *v);
void	chain_verdict_reject(struct chain_verdict *v, int code,
	    const char *esc, const char *text);
/* A reject whose why (for the chain line) is not its reply text. */
void	chain_verdict_refuse(struct chain_verdict *v, int code,
	    const char *esc, const char *text, const char *why_fmt, ...)
	    __attribute__((format(printf, 5, 6)));
void	chain_verdict_fail(struct chain_verdict *v, const char *fmt, ...)
	    __attribute__((format(printf, 2, 3)));

/* ----- the result of running one stage's chain ----- */

struct chain_result {
	enum smtp_verdict verdict;	/* SMTP_OK, SMTP_REJECT or SMTP_CLOSE */
	struct smtp_reply reply;	/* code 0 with SMTP_OK: default reply */
	bool		 no_deliver;	/* RCPT: accept but never deliver */
	bool		 accepted;	/* a handler said ACCEPT (stop checks) */
};

enum chain_status { CHAIN_DONE, CHAIN_PENDING };

typedef void chain_done_cb(void *arg, const struct chain_result *res);

/* ----- configured chains (immutable, shared by sessions) ----- */

struct chain_set;

/*
 * Build every "on STAGE { ... }" of cfg: look up each handler and let it
 * parse its arguments.  Returns NULL with *errs_out ("FILE:LINE: message\n"
 * lines, caller frees) on any error.  An empty set is fine.  Reads files
 * (Lua scripts, tables): start-up and reload only.  Refcounted: the set
 * lives until its last session lets go.
 */
struct chain_set *chain_set_new(const struct config *cfg, char **errs_out);
struct chain_set *chain_set_ref(struct chain_set *set);
void	chain_set_unref(struct chain_set **setp);
/* True when the stage has at least one handler. */
bool	chain_set_has(const struct chain_set *set, enum smtp_stage st);
/*
 * True when a handler of the stage reads the message from its file
 * (a program, a milter, a Lua script that names facts.message): the
 * content must be on disk before that chain runs.  Other handlers see
 * the message in memory (chain_session_set_message_mem).
 */
bool	chain_set_reads_file(const struct chain_set *set,
	    enum smtp_stage st);

/*
 * What one event loop shares among its sessions: the loop, an evdns base,
 * the state store and lookup caches.  One per worker loop; free it after
 * its sessions.  err_out: a static message.
 */
struct chain_loop_opts {
	const char	*resolver;	/* "IP[:PORT]"; NULL: /etc/resolv.conf */
	const char	*store;		/* "sqlite:PATH", "redis:HOST:PORT",
					   "memory:"; NULL: from the config */
	uint64_t	 call_timeout_ms; /* a pending handler fails after;
					   0: 60 s */
};
struct chain_loop *chain_loop_new(struct event_base *base,
	    const struct config *cfg, const struct chain_loop_opts *opts,
	    const char **err_out);
/*
 * Sessions share a loop's chain state: each holds a reference, so a
 * reload can make a new one while running sessions keep theirs.  The
 * last unref frees it on a later turn of its loop (never under a
 * callback of its own store or resolver).  Loop thread only.
 */
struct chain_loop *chain_loop_ref(struct chain_loop *l);
void	chain_loop_unref(struct chain_loop **lp);
/* Free now, whatever the references (tests and tools that own it). */
void	chain_loop_free(struct chain_loop **lp);
/* True when l was made from the store and resolver cfg names. */
bool	chain_loop_is_for(const struct chain_loop *l,
	    const struct config *cfg);
struct store *chain_loop_store(struct chain_loop *l);
/* Where this loop hears table answers (table_lookup_start). */
struct table_loop *chain_loop_tables(struct chain_loop *l);

/* ----- one connection's view ----- */

struct chain_session_info {
	const char	*sid;		/* for log lines */
	const char	*ip;		/* numeric client address */
	int		 port;
	const char	*local_ip;	/* may be NULL */
	int		 local_port;
	const char	*hostname;	/* our name, for %{hostname} */
};

struct chain_session;

/*
 * A session under set on loop; takes a reference to set.  loop may be NULL
 * for a session that runs no chain (its facts and templates only).
 */
struct chain_session *chain_session_new(struct chain_set *set,
	    struct chain_loop *loop, const struct chain_session_info *info);
/*
 * The connection is gone: runs the disconnect chain (its handlers finish
 * detached), cancels any other pending handler, and sets *csp to NULL.
 * No done_cb is called after this.
 */
void	chain_session_free(struct chain_session **csp);

/*
 * Run the chain of ev->stage (helo name, sender, recipient from ev->arg;
 * sizes from ev->size).  CHAIN_DONE: *res_out holds the answer, done_cb is
 * not called.  CHAIN_PENDING: done_cb(cb_arg, res) comes later, from the
 * loop, never from inside this call; answer the smtp session PENDING.  One
 * run at a time per session.  A stage without handlers is CHAIN_DONE with
 * SMTP_OK at once.  At EOM it also waits for (and applies) the header
 * chain started by chain_session_body().
 */
enum chain_status chain_run(struct chain_session *cs,
	    const struct smtp_event *ev, chain_done_cb *done_cb, void *cb_arg,
	    struct chain_result *res_out);

/* True while a chain_run() answer is outstanding. */
bool	chain_session_is_running(const struct chain_session *cs);

/* ----- facts the connection reports ----- */

/*
 * TLS is up: its facts, and the session forgets what the client told it
 * before (RFC 3207 4.2): HELO, AUTH, and what handlers set in the session
 * store and disposition after the greeting, which go back to what connect
 * left, with the starttls stage's changes on top.
 */
void	chain_session_set_tls(struct chain_session *cs, const char *proto,
	    const char *cipher, const char *sni);
void	chain_session_set_auth(struct chain_session *cs, const char *user);
void	chain_session_set_early_talker(struct chain_session *cs);
/* The reverse DNS name, once known and forward-confirmed (or not). */
void	chain_session_set_rdns(struct chain_session *cs, const char *name,
	    bool confirmed);
/* A recipient got its 250 (after every check): counts as valid. */
void	chain_session_rcpt_accepted(struct chain_session *cs,
	    const char *rcpt);
/* A message was acknowledged (250 after the commit): reputation +1. */
void	chain_session_message_accepted(struct chain_session *cs);
/* A line of the dialogue lacked CRLF (kept as a fact for handlers). */
void	chain_session_set_bare_lf(struct chain_session *cs);
/*
 * Path of the spooled message, readable at the eom stage; the client's
 * content starts at offset (our trace headers come first).
 */
void	chain_session_set_message_file(struct chain_session *cs,
	    const char *path, uint64_t offset);
/*
 * The message in memory at the eom stage, for a chain that reads no file
 * (chain_set_reads_file): data is borrowed until the next call (NULL
 * clears it, offset then unused) or the end of the transaction; the
 * client's content starts at offset.
 */
void	chain_session_set_message_mem(struct chain_session *cs,
	    const char *data, size_t len, uint64_t offset);
/* That message, or NULL. */
const char *chain_session_message_mem(const struct chain_session *cs,
	    size_t *len_out, uint64_t *serial_out);
/*
 * Message content as smtp/ decodes it (LF line ends).  Collects the header
 * block and, at its end, starts the header chain; its verdict is applied
 * at the eom stage.  Cheap once the header block is over.
 */
void	chain_session_body(struct chain_session *cs, const char *buf,
	    size_t len);
/*
 * The transaction ended (RSET, HELO, new MAIL, a refused DATA or message,
 * after EOM): clear its state.  Under trap, a transaction that reached DATA
 * is a message over, so MAIL may come next.
 */
void	chain_session_tx_reset(struct chain_session *cs);

/*
 * Put the client IP on the ban list for ms (0: an hour), e.g. after failed
 * AUTH or a relay attempt; "banned" at connect then refuses it.
 */
void	chain_session_ban(struct chain_session *cs, uint64_t ms,
	    const char *why);
/* The state store key of ip's place on the ban list. */
void	chain_ban_key_of(const char *ip, char *buf, size_t bufsz);
/*
 * A failure the connection saw: a refused AUTH, or a recipient refused as
 * relaying.  Bans the client when a "ban ... on" handler asked for it.
 */
enum chain_failed { CHAIN_FAILED_AUTH, CHAIN_FAILED_RELAY };
#define CHAIN_FAILED_BIT(f)	(1u << (unsigned)(f))
void	chain_session_failed(struct chain_session *cs, enum chain_failed what);
/*
 * A command with no stage of its own (RSET, NOOP, VRFY, EXPN, HELP, an
 * unknown verb) arrived.  Returns true when the session must refuse it and
 * close (the strict dialogue of "trap", or "nomail every-command"):
 * *res_out then holds the reply (verdict SMTP_CLOSE or SMTP_REJECT).
 */
bool	chain_session_check_command(struct chain_session *cs,
	    const char *verb, struct chain_result *res_out);

/* ----- facts and state, for handlers and the connection ----- */

/*
 * The value of a fact or state key ("client.ip", "helo", "sender",
 * "sender.domain", "rcpt", "rcpt.domain", "rcpt.user", "rcpts", "nrcpts",
 * "size", "tls.proto", "tls.cipher", "tls.sni", "auth.user",
 * "client.rdns", "client.ptr", "client.port", "client.net", "local.ip",
 * "local.port", "hostname", "sid", "early-talker", "crlf", "esmtp",
 * "session.KEY", "tx.KEY").  Returns NULL when unknown; the pointer is
 * borrowed until the next change of the session (or points into buf).
 * The values made in buf are short (a number, a local part, a network);
 * "rcpts" is whole however long, never cut to fit buf.
 */
const char *chain_session_get(struct chain_session *cs, const char *name,
	    char *buf, size_t bufsz);

const char *chain_kv_get(const struct chain_session *cs,
	    enum chain_scope scope, const char *key);
/* Set (value NULL: delete).  Keys and values are bounded and printable. */
int	chain_kv_set(struct chain_session *cs, enum chain_scope scope,
	    const char *key, const char *value);
/* Entry i of a store in insertion order; false past the end. */
bool	chain_kv_at(const struct chain_session *cs, enum chain_scope scope,
	    size_t i, const char **key_out, const char **value_out);

/*
 * Expand %{name} in tmpl (names as for chain_session_get(); unknown ones
 * expand to ""), peer text made printable.  0, or -1 when truncated.
 */
int	chain_expand(struct chain_session *cs, const char *tmpl, char *buf,
	    size_t bufsz);

enum chain_disposition { CHAIN_DISP_DELIVER, CHAIN_DISP_DISCARD,
	CHAIN_DISP_QUARANTINE };
/* What the transaction's handlers decided; *action_out for QUARANTINE. */
enum chain_disposition chain_session_disposition(
	    const struct chain_session *cs, const char **action_out);

/* Loop resources for handlers; borrowed for the session's life. */
struct event_base *chain_session_base(struct chain_session *cs);
struct evdns_base *chain_session_dns(struct chain_session *cs);
struct store *chain_session_store(struct chain_session *cs);
const char *chain_session_sid(const struct chain_session *cs);
/*
 * The header block collected so far (LF ends); NULL before DATA.  Once
 * handlers have edited it (chain_session_add_mod), the block with their
 * edits applied in order, as it will be delivered: a handler sees the
 * edits of those before it.  Valid until the next edit or the end of the
 * transaction.
 */
const char *chain_session_headers(struct chain_session *cs, size_t *len_out);
const char *chain_session_message_file(const struct chain_session *cs);

/*
 * Reputation: add delta to the score of the client IP and of the sender's
 * domain (when known), kept in the store; fire and forget.
 */
void	chain_session_reputation(struct chain_session *cs, int delta);

/* ----- message modifications (a milter's, at eom) ----- */

enum chain_mod_kind {
	CHAIN_MOD_HDR_ADD,	/* append "name: value" to the header block */
	CHAIN_MOD_HDR_INSERT,	/* insert before header idx (0: the top) */
	CHAIN_MOD_HDR_CHANGE,	/* occurrence idx (1: the first) of name;
				   value "" deletes it; none: append */
	CHAIN_MOD_SENDER,	/* value: the new envelope sender */
	CHAIN_MOD_RCPT_ADD,	/* value: a recipient to add */
	CHAIN_MOD_RCPT_DEL,	/* value: a recipient to remove */
};

struct chain_mod {
	enum chain_mod_kind	 kind;
	unsigned		 idx;
	char			*name;	/* header mods; NULL otherwise */
	char			*value;	/* header value or bare address */
};

/*
 * Record a modification of the transaction (copies name and value; a
 * header name must be RFC 5322 ftext, a value has no CR and no NUL, an
 * address no blank and is empty only as the null sender; at most 1000).
 * -1 with *err_out (static text) when they are not acceptable.  It stays
 * pending until chain_session_mods_commit(): a handler's edits take effect
 * only when its step completes, and chain_session_mods_drop() forgets them
 * when it fails.  The connection applies the committed ones, in order,
 * before the message is acknowledged.
 */
int	chain_session_add_mod(struct chain_session *cs,
	    enum chain_mod_kind kind, unsigned idx, const char *name,
	    const char *value, const char **err_out);
/* Make the pending modifications part of the transaction. */
void	chain_session_mods_commit(struct chain_session *cs);
/* Forget the pending modifications; the committed ones stay. */
void	chain_session_mods_drop(struct chain_session *cs);
/* The committed modifications, borrowed until the transaction ends. */
const struct chain_mod *chain_session_mods(const struct chain_session *cs,
	    size_t *n_out);
/*
 * Length of the client's header block (LF ends, no empty line), found at
 * the message file's offset; -1 when it was longer than chains keep.
 * Known once the block is complete: when the header chain runs, and at
 * eom.  A message with no empty line is header only.
 */
int64_t	chain_session_header_len(const struct chain_session *cs);
/* The header block head (len octets) with the header mods applied. */
void	chain_headers_edit(const char *head, size_t len,
	    const struct chain_mod *mods, size_t nmods, struct util_buf *out);

/* ----- the handler interface (builtins, Lua, milter, program) ----- */

/*
 * Per-session data of a handler kind, kept across stages under a key
 * (a milter's connection): freed with the session; tx_reset_fn (may be
 * NULL) hears of the end of every transaction.
 */
struct chain_slot_ops {
	void	(*tx_reset_fn)(void *p);
	void	(*free_fn)(void *p);
};
void	*chain_session_slot(struct chain_session *cs, const char *key);
/* -1 when the session has no room for another slot. */
int	chain_session_slot_set(struct chain_session *cs, const char *key,
	    void *p, const struct chain_slot_ops *ops);

struct chain_call;		/* one run of one handler; opaque */

struct chain_handler_args {
	const char *const	*argv;	/* argv[0] is the handler name; on-error
					   already taken out */
	size_t			 argc;
	enum smtp_stage		 stage;	/* the chain it sits in */
	const struct config	*cfg;	/* borrowed for the call: tables, actions */
	const char		*file;	/* config file, for messages */
	int			 line;
};

struct chain_handler_ops {
	const char	*name;		/* the config word */
	unsigned	 stages;	/* CHAIN_STAGE_BIT() mask where allowed */
	/*
	 * Parse the arguments into an instance (immutable afterwards; shared
	 * by every loop's sessions, so keep per-run data in the call).
	 * NULL with *err_out (malloc'd message, no "FILE:LINE:") on error.
	 */
	void	*(*new_fn)(const struct chain_handler_args *a, char **err_out);
	void	 (*free_fn)(void *inst);
	/*
	 * Run on the session's loop.  Either fill *v and return CHAIN_DONE,
	 * or return CHAIN_PENDING and later call chain_call_done() exactly
	 * once, on the same loop (never from inside run_fn).
	 */
	enum chain_status (*run_fn)(void *inst, struct chain_call *call,
		    struct chain_verdict *v);
	/*
	 * Optional: the session is going away while run_fn is pending.
	 * Release what refers to call; chain_call_done() must not follow.
	 * Without cancel_fn, a late chain_call_done() is simply dropped.
	 */
	void	 (*cancel_fn)(void *inst, struct chain_call *call);
	/*
	 * Optional: true when this instance reads the message file at eom
	 * (chain_session_message_file); NULL: it never does.
	 */
	bool	 (*reads_file_fn)(const void *inst);
};

/* Handlers beyond the builtins (before chain_set_new; not thread-safe). */
void	chain_register(const struct chain_handler_ops *ops);
const struct chain_handler_ops *chain_handler_find(const char *name);

struct chain_session *chain_call_session(struct chain_call *call);
const struct smtp_event *chain_call_event(const struct chain_call *call);
enum smtp_stage chain_call_stage(const struct chain_call *call);
/* A private slot per call for the handler (freed by the handler). */
void	**chain_call_data(struct chain_call *call);
/* Finish a PENDING run; v is copied. */
void	chain_call_done(struct chain_call *call, const struct chain_verdict *v);
/*
 * A handler with a timeout of its own (program, milter) bounds its wait
 * itself: the run then waits ms (and a second's grace for the handler's
 * own failure) instead of the loop's call_timeout_ms.  From run_fn, or
 * again while pending to restart the wait (a milter's progress).
 */
void	chain_call_own_timeout(struct chain_call *call, uint64_t ms);

/* Parse "on-error" policy words; used by config checks and tests. */
enum chain_on_error { CHAIN_ONERR_TEMPFAIL, CHAIN_ONERR_ACCEPT,
	CHAIN_ONERR_REJECT };

/*
 * A Lua function in the handlers' sandbox (allow-list, the config's "lua
 * budget/memory/allow-unsafe" or 10M instructions and 32 MiB), called
 * with a JSON document as a table (lua_box.c; reply agents).  The script
 * at path is loaded now: NULL with *err_out (malloc'd) when it cannot be
 * read, does not load or has no function func.
 */
struct chain_lua_box;
struct chain_lua_box *chain_lua_box_new(const struct config *cfg,
	    const char *path, const char *func, char **err_out);
void	chain_lua_box_free(struct chain_lua_box **bp);
/*
 * Call func(arg): 0 with its value as JSON (*result_out, new reference:
 * strings, numbers, booleans, tables as objects or arrays, nil as null),
 * or -1 with *err_out (malloc'd, "script:line: message").  Thread-safe:
 * one call at a time per box.
 */
int	chain_lua_box_call(struct chain_lua_box *b, const json_t *arg,
	    json_t **result_out, char **err_out);

#endif
