/*
 * config/parse_action.c: "action NAME KIND ...": the one table of action
 * kinds, each with its keyword (as written, and as the spool keeps it) and
 * the parser of its statement; here the local kinds (maildir, discard),
 * in parse_relay.c the outbound ones, in parse_agent.c webhook, reply,
 * pass-through, pipe and lmtp.  What each kind does is
 * deliver/kind.c's.
 */
#include "config/config.h"

#include <stdlib.h>
#include <string.h>

#include "config/config_private.h"
#include "util/util.h"

#define CFG_ACTION_LOCAL_USAGE "action NAME maildir \"PATH\"|<TABLE> [as " \
	"USER|<TABLE>] | action NAME discard"

static void	cfg_action_local(struct cfg_parser *p,
		    const struct cfg_line *ln, enum config_action_kind kind);

static const struct cfg_action_kind {
	const char		*name;
	enum config_action_kind	 kind;
	void			(*parse)(struct cfg_parser *p,
				    const struct cfg_line *ln,
				    enum config_action_kind kind);
} cfg_action_kinds[] = {
	{ "maildir",		CONFIG_ACTION_MAILDIR,	cfg_action_local },
	{ "discard",		CONFIG_ACTION_DISCARD,	cfg_action_local },
	{ "relay",		CONFIG_ACTION_RELAY,	cfg_st_action_remote },
	{ "mx",			CONFIG_ACTION_MX,	cfg_st_action_remote },
	{ "forward",		CONFIG_ACTION_FORWARD,	cfg_st_action_remote },
	{ "relay-by-sender",	CONFIG_ACTION_RELAY_BY_SENDER,
	    cfg_st_action_remote },
	{ "webhook",		CONFIG_ACTION_WEBHOOK,	cfg_st_action_agent },
	{ "reply",		CONFIG_ACTION_REPLY,	cfg_st_action_agent },
	{ "pass-through",	CONFIG_ACTION_PASS_THROUGH,
	    cfg_st_action_agent },
	{ "pipe",		CONFIG_ACTION_PIPE,	cfg_st_action_agent },
	{ "lmtp",		CONFIG_ACTION_LMTP,	cfg_st_action_agent },
};
#define CFG_NKINDS	(sizeof(cfg_action_kinds) / sizeof(cfg_action_kinds[0]))

static const struct cfg_action_kind *
cfg_action_kind_find(const char *name)
{
	for (size_t i = 0; i < CFG_NKINDS; i++)
		if (strcmp(cfg_action_kinds[i].name, name) == 0)
			return &cfg_action_kinds[i];
	return NULL;
}

const char *
config_action_kind_name(enum config_action_kind kind)
{
	for (size_t i = 0; i < CFG_NKINDS; i++)
		if (cfg_action_kinds[i].kind == kind)
			return cfg_action_kinds[i].name;
	return NULL;
}

bool
config_action_kind_find(const char *name, enum config_action_kind *kind_out)
{
	const struct cfg_action_kind *k = cfg_action_kind_find(name);

	if (k == NULL)
		return false;
	*kind_out = k->kind;
	return true;
}

/*
 * Check a maildir path template: %{rcpt}, %{rcpt.user}, %{rcpt.domain} and
 * %% only.  route_expand() applies the same rules.
 */
static int
cfg_check_template(const char *s, char **why_out)
{
	static const char *const vars[] = { "rcpt", "rcpt.user",
	    "rcpt.domain", NULL };

	for (; *s != '\0'; s++) {
		if (*s != '%')
			continue;
		if (s[1] == '%') {
			s++;
			continue;
		}
		if (s[1] != '{') {
			*why_out = xstrdup("'%' must start %{...} (write %% "
			    "for a literal %)");
			return -1;
		}
		const char *end = strchr(s, '}');
		if (end == NULL) {
			*why_out = xstrdup("unterminated %{");
			return -1;
		}
		size_t n = (size_t)(end - s - 2);
		size_t i;
		for (i = 0; vars[i] != NULL; i++)
			if (strlen(vars[i]) == n &&
			    strncmp(s + 2, vars[i], n) == 0)
				break;
		if (vars[i] == NULL) {
			char *v = xstrndup(s, (size_t)(end - s + 1));
			char *q = cfg_quote(v);
			*why_out = xasprintf("unknown variable %s (%%{rcpt}, "
			    "%%{rcpt.user}, %%{rcpt.domain})", q);
			free(q);
			free(v);
			return -1;
		}
		s = end;
	}
	return 0;
}

/*
 * "action NAME" and at most three more words, NAME new and well-formed: how
 * a local kind's statement starts (and one of an unknown kind).  False
 * after an error.
 */
static bool
cfg_action_head(struct cfg_parser *p, const struct cfg_line *ln)
{
	const char *name;
	const struct config_action *old;

	if (!cfg_nargs(p, ln, 2, 5, CFG_ACTION_LOCAL_USAGE))
		return false;
	name = ln->toks[1].text;
	if (!cfg_is_name(name)) {
		cfg_err(p, ln->lineno, "action: bad name %s (letters, digits, "
		    "'_', '-', '.')", cfg_q(name));
		return false;
	}
	if ((old = config_action_find(p->c, name)) != NULL) {
		cfg_err(p, ln->lineno, "duplicate action %s (first at line "
		    "%d)", cfg_q(name), old->line);
		return false;
	}
	return true;
}

/* "action NAME maildir PATH|<TABLE> [as OWNER]" and "action NAME discard". */
static void
cfg_action_local(struct cfg_parser *p, const struct cfg_line *ln,
    enum config_action_kind kind)
{
	struct config_action a = { .kind = kind };
	const char *name = ln->toks[1].text;

	if (!cfg_action_head(p, ln))
		return;
	if (kind == CONFIG_ACTION_MAILDIR) {
		if (cfg_action_maildir(p, ln, &a, cfg_check_template) == -1)
			return;
	} else if (ln->ntoks != 3) {
		cfg_err(p, ln->lineno, "action %s: discard takes no argument",
		    name);
		return;
	}
	a.name = xstrdup(name);
	a.line = ln->lineno;
	p->c->actions[p->c->nactions++] = a;	/* room counted before */
}

void
cfg_st_action(struct cfg_parser *p, const struct cfg_line *ln)
{
	const struct cfg_action_kind *k = NULL;
	struct util_buf kinds = { 0 };

	if (ln->ntoks >= 3 && ln->toks[2].kind == CFG_TOK_WORD)
		k = cfg_action_kind_find(ln->toks[2].text);
	if (k != NULL) {
		k->parse(p, ln, k->kind);
		return;
	}
	if (!cfg_action_head(p, ln))
		return;
	for (size_t i = 0; i < CFG_NKINDS; i++)
		util_buf_printf(&kinds, "%s%s", i > 0 ? ", " : "",
		    cfg_action_kinds[i].name);
	cfg_err(p, ln->lineno, "action %s: unknown kind %s (%s)",
	    ln->toks[1].text, cfg_q(ln->toks[2].text), util_buf_cstr(&kinds));
	util_buf_clear(&kinds);
}
