/*
 * config/parse_chain.c: "on STAGE { handler args; ... }" blocks, which may
 * span lines, and the "state" statement (store engine, DNS resolver).
 * Only the shape is checked here; chain/ knows the handlers and checks
 * their names and arguments when it builds the chains.
 */
#include "config/config.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "config/config_private.h"
#include "util/util.h"

#define CFG_ON_USAGE	"on STAGE { HANDLER ARGS; ... }"

static const char *const cfg_stage_names[CONFIG_STAGE_COUNT] = {
	"connect", "helo", "starttls", "auth", "mail", "rcpt", "data",
	"header", "eom", "quit", "disconnect",
};

/* A handler being gathered from the words of one or more lines. */
struct cfg_hbuild {
	char	**argv;
	size_t	  argc;
	int	  line;
	bool	  glue;		/* after ',': the next word joins the last */
};

static void
cfg_hbuild_clear(struct cfg_hbuild *h)
{
	for (size_t i = 0; i < h->argc; i++)
		free(h->argv[i]);
	free(h->argv);
	memset(h, 0, sizeof(*h));
}

/* Take "on-error X" out of h; -1 (reported) when it is malformed. */
static int
cfg_on_error(struct cfg_parser *p, struct cfg_hbuild *h, int *out)
{
	*out = CONFIG_ONERR_TEMPFAIL;
	for (size_t i = 1; i < h->argc; i++) {
		if (strcmp(h->argv[i], "on-error") != 0)
			continue;
		const char *w = i + 1 < h->argc ? h->argv[i + 1] : NULL;
		if (w != NULL && strcmp(w, "accept") == 0)
			*out = CONFIG_ONERR_ACCEPT;
		else if (w != NULL && strcmp(w, "tempfail") == 0)
			*out = CONFIG_ONERR_TEMPFAIL;
		else if (w != NULL && strcmp(w, "reject") == 0)
			*out = CONFIG_ONERR_REJECT;
		else {
			cfg_err(p, h->line, "%s: on-error wants accept, "
			    "tempfail or reject%s%s", h->argv[0],
			    w != NULL ? ", not " : "", w != NULL ? cfg_q(w) :
			    "");
			return -1;
		}
		free(h->argv[i]);
		free(h->argv[i + 1]);
		memmove(&h->argv[i], &h->argv[i + 2],
		    (h->argc - i - 2) * sizeof(*h->argv));
		h->argc -= 2;
		h->argv[h->argc] = NULL;
		i--;
	}
	return 0;
}

/* The gathered handler (if any) joins chain ch. */
static void
cfg_hbuild_finish(struct cfg_parser *p, struct config_chain *ch,
    struct cfg_hbuild *h)
{
	int onerr;

	if (h->argc == 0)
		return;
	if (strcmp(h->argv[0], "on-error") == 0) {
		cfg_err(p, h->line, "on: on-error must follow a handler");
		cfg_hbuild_clear(h);
		return;
	}
	if (cfg_on_error(p, h, &onerr) == -1) {
		cfg_hbuild_clear(h);
		return;
	}
	ch->handlers = xreallocarray(ch->handlers, ch->nhandlers + 1,
	    sizeof(*ch->handlers));
	struct config_handler *ch_h = &ch->handlers[ch->nhandlers++];
	ch_h->argv = h->argv;
	ch_h->argc = h->argc;
	ch_h->on_error = onerr;
	ch_h->line = h->line;
	memset(h, 0, sizeof(*h));
}

static void
cfg_hbuild_word(struct cfg_hbuild *h, const char *w, int line)
{
	if (h->glue && h->argc > 0) {
		/* "require From, Date": a list stays one argument. */
		char *joined = xasprintf("%s%s", h->argv[h->argc - 1], w);
		free(h->argv[h->argc - 1]);
		h->argv[h->argc - 1] = joined;
		h->glue = false;
		return;
	}
	h->glue = false;
	if (h->argc == 0)
		h->line = line;
	h->argv = xreallocarray(h->argv, h->argc + 2, sizeof(*h->argv));
	h->argv[h->argc++] = xstrdup(w);
	h->argv[h->argc] = NULL;
}

/*
 * Feed the tokens of ln from index i.  Returns 1 when the closing brace was
 * seen, 0 when the block goes on, -1 on an error that ends it.
 */
static int
cfg_on_tokens(struct cfg_parser *p, const struct cfg_line *ln, size_t i,
    struct config_chain *ch, struct cfg_hbuild *h)
{
	for (; i < ln->ntoks; i++) {
		const struct cfg_tok *t = &ln->toks[i];
		switch (t->kind) {
		case CFG_TOK_WORD:
			cfg_hbuild_word(h, t->text, ln->lineno);
			break;
		case CFG_TOK_SEMI:
			cfg_hbuild_finish(p, ch, h);
			break;
		case CFG_TOK_RBRACE:
			cfg_hbuild_finish(p, ch, h);
			if (i + 1 < ln->ntoks) {
				cfg_err(p, ln->lineno, "on: unexpected text "
				    "after '}' (one statement a line)");
				return -1;
			}
			return 1;
		case CFG_TOK_COMMA:
			if (h->argc > 1 && !h->glue) {
				char *j = xasprintf("%s,",
				    h->argv[h->argc - 1]);
				free(h->argv[h->argc - 1]);
				h->argv[h->argc - 1] = j;
				h->glue = true;
				break;
			}
			cfg_err(p, ln->lineno, "on: unexpected ',' in a "
			    "handler (usage: %s)", CFG_ON_USAGE);
			cfg_hbuild_clear(h);
			return -1;
		case CFG_TOK_LBRACE:
			cfg_err(p, ln->lineno, "on: unexpected '{' in a "
			    "handler (usage: %s)", CFG_ON_USAGE);
			cfg_hbuild_clear(h);
			return -1;
		}
	}
	cfg_hbuild_finish(p, ch, h);	/* a line ends a handler */
	return 0;
}

void
cfg_st_on(struct cfg_parser *p, const struct cfg_line *ln)
{
	struct config *c = cfg_parser_config(p);
	struct cfg_hbuild h = { 0 };
	size_t st;

	if (ln->ntoks < 2 || ln->toks[1].kind != CFG_TOK_WORD) {
		cfg_err(p, ln->lineno, "on: missing stage (usage: %s)",
		    CFG_ON_USAGE);
		return;
	}
	for (st = 0; st < CONFIG_STAGE_COUNT; st++)
		if (strcmp(ln->toks[1].text, cfg_stage_names[st]) == 0)
			break;
	if (st == CONFIG_STAGE_COUNT) {
		cfg_err(p, ln->lineno, "on: unknown stage %s (connect, helo, "
		    "starttls, auth, mail, rcpt, data, header, eom, quit, "
		    "disconnect)", cfg_q(ln->toks[1].text));
		return;
	}
	if (ln->ntoks < 3 || ln->toks[2].kind != CFG_TOK_LBRACE) {
		cfg_err(p, ln->lineno, "on %s: expected '{' after the stage "
		    "(usage: %s)", cfg_stage_names[st], CFG_ON_USAGE);
		return;
	}
	int r = cfg_on_tokens(p, ln, 3, &c->chains[st], &h);
	while (r == 0) {
		const struct cfg_line *next = cfg_peek_line(p);
		/* A new "on" most likely means a forgotten '}'. */
		if (next == NULL || (next->ntoks > 0 &&
		    next->toks[0].kind == CFG_TOK_WORD &&
		    strcmp(next->toks[0].text, "on") == 0)) {
			cfg_err(p, ln->lineno, "on %s: missing '}' to close "
			    "the block opened here", cfg_stage_names[st]);
			break;
		}
		cfg_take_line(p);
		if (next->lexerr != NULL) {
			cfg_err(p, next->lineno, "%s", next->lexerr);
			continue;
		}
		r = cfg_on_tokens(p, next, 0, &c->chains[st], &h);
	}
	cfg_hbuild_clear(&h);
}

void
cfg_st_state(struct cfg_parser *p, const struct cfg_line *ln)
{
	static const char usage[] = "state sqlite PATH | state redis "
	    "HOST:PORT | state memory | state resolver IP[:PORT]";
	struct config *c = cfg_parser_config(p);

	if (!cfg_nargs(p, ln, 1, 2, usage))
		return;
	const char *what = ln->toks[1].text;
	const char *arg = ln->ntoks > 2 ? ln->toks[2].text : NULL;
	if (strcmp(what, "resolver") == 0) {
		if (arg == NULL || arg[0] == '\0') {
			cfg_err(p, ln->lineno, "state resolver: missing "
			    "address (usage: %s)", usage);
			return;
		}
		if (!cfg_resolver_ok(arg)) {
			cfg_err(p, ln->lineno, "state resolver: %s is not "
			    "IP[:PORT] with a numeric address (like 127.0.0.1 "
			    "or [::1]:53)", cfg_q(arg));
			return;
		}
		if (c->chain_resolver != NULL) {
			cfg_err(p, ln->lineno, "duplicate state resolver");
			return;
		}
		c->chain_resolver = xstrdup(arg);
		return;
	}
	bool mem = strcmp(what, "memory") == 0;
	if (!mem && strcmp(what, "sqlite") != 0 && strcmp(what, "redis") != 0) {
		cfg_err(p, ln->lineno, "state: unknown engine %s (usage: %s)",
		    cfg_q(what), usage);
		return;
	}
	if (mem != (arg == NULL) || (arg != NULL && arg[0] == '\0')) {
		cfg_err(p, ln->lineno, "state %s: %s (usage: %s)", what,
		    mem ? "takes no argument" : "missing argument", usage);
		return;
	}
	if (strcmp(what, "redis") == 0 && !cfg_redis_addr_ok(arg)) {
		cfg_err(p, ln->lineno, "state redis: wants HOST:PORT, not %s",
		    cfg_q(arg));
		return;
	}
	if (c->chain_store != NULL) {
		cfg_err(p, ln->lineno, "duplicate state engine");
		return;
	}
	c->chain_store = xasprintf("%s:%s", what, mem ? "" : arg);
}

void
cfg_chain_free(struct config *c)
{
	for (size_t st = 0; st < CONFIG_STAGE_COUNT; st++) {
		struct config_chain *ch = &c->chains[st];
		for (size_t i = 0; i < ch->nhandlers; i++) {
			for (size_t k = 0; k < ch->handlers[i].argc; k++)
				free(ch->handlers[i].argv[k]);
			free(ch->handlers[i].argv);
		}
		free(ch->handlers);
		ch->handlers = NULL;
		ch->nhandlers = 0;
	}
	free(c->chain_store);
	free(c->chain_resolver);
	c->chain_store = c->chain_resolver = NULL;
}
