/*
 * config/config_private.h: the line lexer, and the parser that the
 * statement files parse_<area>.c share; for them and config/'s tests.
 * Not for other modules.
 */
#ifndef POSTERN_CONFIG_PRIVATE_H
#define POSTERN_CONFIG_PRIVATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "util/util.h"

enum cfg_tok_kind {
	CFG_TOK_WORD,		/* bare word, or word and "quoted" parts glued */
	CFG_TOK_LBRACE,
	CFG_TOK_RBRACE,
	CFG_TOK_COMMA,
	CFG_TOK_SEMI,		/* ';' between handlers of an "on" block */
};

struct cfg_tok {
	enum cfg_tok_kind	 kind;
	char			*text;		/* owned; "{" "}" "," ";" for
						 * punctuation */
	bool			 quoted;	/* some part was in double quotes */
};

/* One line of the file, split into tokens. */
struct cfg_line {
	int			 lineno;
	struct cfg_tok		*toks;		/* owned array */
	size_t			 ntoks;
	char			*lexerr;	/* owned; NULL when the line lexed */
};

/*
 * Split one line (len bytes, no newline) into tokens.  '#' outside quotes
 * starts a comment; "..." takes \" and \\ escapes.  On a lexical error
 * ln->lexerr says why and the tokens are dropped.
 */
void	cfg_lex_line(const char *s, size_t len, int lineno,
	    struct cfg_line *ln);
void	cfg_line_clear(struct cfg_line *ln);

/* Copy of s (len bytes) escaped for an error message, at most ~64 bytes. */
char	*cfg_quote(const char *s);

/* Shared by parse.c and the statement files parse_<area>.c. */
struct config;
struct cfg_parser {
	const char		*name;		/* borrowed: file name for messages */
	struct config		*c;
	struct cfg_line		*lines;		/* owned */
	size_t			 nlines;
	size_t			 cur;		/* index into lines */
	struct util_buf		 errs;
	/* Line of the first statement of each kind, 0 when not seen yet. */
	int			 seen_hostname, seen_spool, seen_greeting;
	int			 seen_spool_log;
	int			 seen_log_dest, seen_log_level, seen_translog;
	int			 seen_user, seen_group, seen_workers, seen_auth;
	int			 seen_tls_selfsigned, seen_tls_minver;
	int			 seen_tls_ciphers, seen_tls_suites;
	int			 seen_tls_lifetime;
	int			 seen_conn_rate, seen_pipelining, seen_early_talker;
	int			 seen_pid_file, seen_bind_retry;
	int			 seen_log_format, seen_metrics;
	int			 seen_trusted;
	int			 seen_limit[24];	/* one per cfg_limits[] */
};

void	cfg_err(struct cfg_parser *p, int line, const char *fmt, ...)
	    __attribute__((format(printf, 3, 4)));
bool	cfg_nargs(struct cfg_parser *p, const struct cfg_line *ln, size_t min,
	    size_t max, const char *usage);
const char *cfg_q(const char *s);
struct config *cfg_parser_config(struct cfg_parser *p);
/* "NAME SIZE" at toks[*ip] within r (text for messages); *ip moves past. */
struct cfg_size_range {
	uint64_t	 min, max;
	const char	*text;		/* "4k..1G" */
};
bool	cfg_size_opt(struct cfg_parser *p, const struct cfg_line *ln,
	    size_t *ip, const struct cfg_size_range *r, uint64_t *out);
/* Report a second statement of a kind that may appear once. */
bool	cfg_once(struct cfg_parser *p, const struct cfg_line *ln, int *seen,
	    const char *what);
/*
 * An option o of a statement that may be given once: when o is one of
 * names (NULL-terminated, at most 32), report it given a second time
 * ("WHAT: o given twice", or without "WHAT: " when what is NULL).  seen: a bit per name, 0 at the start of the
 * line.  Words not in names pass.
 */
bool	cfg_opt_once(struct cfg_parser *p, const struct cfg_line *ln,
	    const char *what, const char *const *names, const char *o,
	    unsigned *seen);
/* The first of lines [from, to) that is "kw name ..." ("kw ..." for name
 * NULL): its line number, or 0. */
int	cfg_defined_in(const struct cfg_parser *p, const char *kw,
	    const char *name, size_t from, size_t to);
/* Does a later line define a table/action with this name?  Its line or 0. */
int	cfg_defined_later(const struct cfg_parser *p, const char *kw,
	    const char *name);
/*
 * The error for a reference to the kw (table, action, account) NAME that
 * is not there: "WHAT: kw NAME is defined later, at line N" or "is not
 * defined"; none when an earlier line defines it, as that line was refused
 * with an error of its own.
 */
void	cfg_err_undefined(struct cfg_parser *p, const struct cfg_line *ln,
	    const char *what, const char *kw, const char *name);
/* parse_listen.c: "listen", "tls", and what listeners need at the end */
/*
 * "127.0.0.1:25" or "[::1]:25" into a normalised numeric address (owned by
 * the caller) and port.  0, or -1 with *why (how s is wrong).
 */
int	cfg_parse_hostport(const char *s, char **addr_out, int *port_out,
	    const char **why);
/*
 * A nameserver "IP[:PORT]": "192.0.2.1", "192.0.2.1:53", "2001:db8::1",
 * "[2001:db8::1]" or "[2001:db8::1]:53".
 */
bool	cfg_resolver_ok(const char *s);
void	cfg_st_listen(struct cfg_parser *p, const struct cfg_line *ln);
void	cfg_st_tls(struct cfg_parser *p, const struct cfg_line *ln);
void	cfg_listen_check(struct cfg_parser *p, int last);
void	cfg_listen_free(struct config *c);
/* parse_limit.c: "limit NAME VALUE" */
void	cfg_st_limit(struct cfg_parser *p, const struct cfg_line *ln);
void	cfg_limit_defaults(struct config *c);
/* "trusted CIDR..." / "trusted none" */
void	cfg_st_trusted(struct cfg_parser *p, const struct cfg_line *ln);
/* parse_action.c: "action NAME KIND ...", the table of kinds */
void	cfg_st_action(struct cfg_parser *p, const struct cfg_line *ln);
/* parse_route.c: "match" rules */
void	cfg_st_match(struct cfg_parser *p, const struct cfg_line *ln);
void	cfg_route_free(struct config *c);
/* parse_log.c: "log stderr|syslog|file|level|format" */
void	cfg_st_log(struct cfg_parser *p, const struct cfg_line *ln);
/* parse_ops.c: running the process: "bind-retry", "metrics" */
void	cfg_st_bind_retry(struct cfg_parser *p, const struct cfg_line *ln);
void	cfg_st_metrics(struct cfg_parser *p, const struct cfg_line *ln);
void	cfg_ops_defaults(struct config *c);
/* parse_queue.c */
void	cfg_st_queue(struct cfg_parser *p, const struct cfg_line *ln);
void	cfg_queue_defaults(struct config *c);
/* parse_chain.c: "on STAGE { ... }" (may take the lines after), "state" */
void	cfg_st_on(struct cfg_parser *p, const struct cfg_line *ln);
void	cfg_st_state(struct cfg_parser *p, const struct cfg_line *ln);
void	cfg_st_lua(struct cfg_parser *p, const struct cfg_line *ln); /* parse_lua.c */
void	cfg_chain_free(struct config *c);
/* The line after the current statement's, or NULL; cfg_take_line eats it. */
const struct cfg_line *cfg_peek_line(struct cfg_parser *p);
void	cfg_take_line(struct cfg_parser *p);

/* parse_relay.c: outbound actions (relay, mx, forward, relay-by-sender) */
void	cfg_st_action_remote(struct cfg_parser *p, const struct cfg_line *ln,
	    enum config_action_kind kind);
void	cfg_st_relay_account(struct cfg_parser *p, const struct cfg_line *ln);
void	cfg_relay_free(struct config *c);

/* The URL of a relay or an upstream (smtp, smtp+starttls, smtp+tls) into
 * r; what names the statement in messages.  0, or -1 after reporting. */
struct config_relay;
struct config_upstream;
struct config_listen;
int	cfg_relay_smtp_url(struct cfg_parser *p, const struct cfg_line *ln,
	    const char *what, const char *url, struct config_relay *r);
/* An upstream's options from toks[i] on.  0, or -1 after reporting. */
int	cfg_relay_upstream_opts(struct cfg_parser *p, const struct cfg_line *ln,
	    size_t i, struct config_upstream *up);
void	cfg_relay_clear_upstream(struct config_upstream *up);

/* parse_proxy.c: "upstream", and the proxy options of a listener */
void	cfg_st_upstream(struct cfg_parser *p, const struct cfg_line *ln);
/* A proxy option at toks[*ip]: 1 taken (*ip past it), 0 not one, -1 bad. */
int	cfg_listen_proxy_opt(struct cfg_parser *p, const struct cfg_line *ln,
	    size_t *ip, struct config_listen *l);
/* At the end: what a proxy listener's options need of each other. */
void	cfg_proxy_check(struct cfg_parser *p, const struct config_listen *l,
	    bool has_tls);
void	cfg_proxy_free(struct config *c);

/* parse.c: "{ a, b, c }" from toks[i]; NULL-terminated owned keys or NULL */
char	**cfg_parse_list(struct cfg_parser *p, const struct cfg_line *ln,
	    size_t i, const char *what);

/* parse_table.c: tables, users and mailboxes */
struct config_table;
struct config_action;
void	cfg_st_table(struct cfg_parser *p, const struct cfg_line *ln);
void	cfg_st_auth(struct cfg_parser *p, const struct cfg_line *ln);
void	cfg_st_auth_guard(struct cfg_parser *p, const struct cfg_line *ln);
void	cfg_st_alias(struct cfg_parser *p, const struct cfg_line *ln);
void	cfg_st_sender_login(struct cfg_parser *p, const struct cfg_line *ln);
void	cfg_st_sender_auth(struct cfg_parser *p, const struct cfg_line *ln);
void	cfg_st_maildir_root(struct cfg_parser *p, const struct cfg_line *ln);
/*
 * Whether s is a Redis server's HOST:PORT (port 1..65535), as the redis
 * table and the redis state store open it.
 */
bool	cfg_redis_addr_ok(const char *s);
const struct config_table *cfg_table_ref(struct cfg_parser *p,
	    const struct cfg_line *ln, const char *word, const char *what);
int	cfg_action_maildir(struct cfg_parser *p, const struct cfg_line *ln,
	    struct config_action *a, int (*check_fn)(const char *, char **));
void	cfg_table_clear(struct config_table *t);
void	cfg_accounts_defaults(struct config *c);
void	cfg_accounts_free(struct config *c);

/* parse_agent.c: webhook, reply, pass-through, pipe, lmtp */
void	cfg_st_action_agent(struct cfg_parser *p, const struct cfg_line *ln,
	    enum config_action_kind kind);
void	cfg_agent_free(struct config *c);

/*
 * Why s is not a domain name, or NULL: labels of letters, digits and '-'
 * (not at either end; utf8: UTF-8 octets too, RFC 6531 3.3) of 1..63
 * octets, 253 in all.  The reason follows the name: "\"x\" is empty".
 */
const char *cfg_domain_why(const char *s, bool utf8);

/* Names of tables, actions and accounts: 1..64 of [A-Za-z0-9._-]. */
bool	cfg_is_name(const char *s);

#endif
