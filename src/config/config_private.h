/*
 * config/config_private.h: the line lexer shared by the parser and its
 * tests.  Not for other modules.
 */
#ifndef POSTERN_CONFIG_PRIVATE_H
#define POSTERN_CONFIG_PRIVATE_H

#include <stdbool.h>
#include <stddef.h>

enum cfg_tok_kind {
	CFG_TOK_WORD,		/* bare word, or word and "quoted" parts glued */
	CFG_TOK_LBRACE,
	CFG_TOK_RBRACE,
	CFG_TOK_COMMA,
	CFG_TOK_SEMI,		/* ';' between handlers of an "on" block */
};

struct cfg_tok {
	enum cfg_tok_kind	 kind;
	char			*text;		/* owned; NULL for punctuation */
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
struct cfg_parser;
struct config;
void	cfg_err(struct cfg_parser *p, int line, const char *fmt, ...)
	    __attribute__((format(printf, 3, 4)));
bool	cfg_nargs(struct cfg_parser *p, const struct cfg_line *ln, size_t min,
	    size_t max, const char *usage);
const char *cfg_q(const char *s);
struct config *cfg_parser_config(struct cfg_parser *p);
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
bool	cfg_relay_is_kind(const char *kind);
void	cfg_st_action_remote(struct cfg_parser *p, const struct cfg_line *ln);
void	cfg_st_relay_account(struct cfg_parser *p, const struct cfg_line *ln);
void	cfg_relay_free(struct config *c);

/* Names of tables, actions and accounts: 1..64 of [A-Za-z0-9._-]. */
bool	cfg_is_name(const char *s);

#endif
