/*
 * config/parse_table.c: tables and what reads users and mailboxes from
 * them: "table", "auth", "auth-guard", "alias", "sender-login",
 * "sender-auth", "maildir-root", and the maildir action's path and owner.
 * Only the form is checked here: nothing is opened or connected to.
 */
#include "config/config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config_private.h"
#include "util/util.h"

#define CFG_TABLE_POOL		4
#define CFG_TABLE_TIMEOUT_MS	5000
#define CFG_TABLE_CACHE_MS	10000

bool
cfg_redis_addr_ok(const char *s)
{
	const char *colon = strrchr(s, ':');
	char *end;
	long port = colon != NULL ? strtol(colon + 1, &end, 10) : 0;

	return colon != NULL && colon != s && *end == '\0' && port >= 1 &&
	    port <= 65535;
}

/* "<NAME>" naming a table defined above; NULL after reporting. */
const struct config_table *
cfg_table_ref(struct cfg_parser *p, const struct cfg_line *ln,
    const char *word, const char *what)
{
	size_t n = strlen(word);
	const struct config_table *t;

	if (n < 3 || word[0] != '<' || word[n - 1] != '>') {
		cfg_err(p, ln->lineno, "%s: expected a table name in <>, like "
		    "<users>, not %s", what, cfg_q(word));
		return NULL;
	}
	char *name = xstrndup(word + 1, n - 2);
	if ((t = config_table_find(cfg_parser_config(p), name)) == NULL)
		cfg_err_undefined(p, ln, what, "table", name);
	free(name);
	return t;
}

static bool
cfg_is_table_ref(const char *w)
{
	size_t n = strlen(w);

	return n >= 3 && w[0] == '<' && w[n - 1] == '>';
}

/* ----- table ----- */

static const struct {
	const char		*prefix;
	enum config_table_kind	 kind;
} cfg_table_kinds[] = {
	{ "file:", CONFIG_TABLE_FILE },
	{ "sqlite:", CONFIG_TABLE_SQLITE },
	{ "pgsql:", CONFIG_TABLE_PGSQL },
	{ "redis:", CONFIG_TABLE_REDIS },
};

static bool
cfg_table_is_network(enum config_table_kind k)
{
	return k == CONFIG_TABLE_PGSQL || k == CONFIG_TABLE_REDIS;
}

/* A duration option in lo..hi; "off" gives 0 when off_ok. */
static bool
cfg_table_dur(struct cfg_parser *p, const struct cfg_line *ln,
    const char *what, const char *opt, const char *v, uint64_t lo,
    uint64_t hi, bool off_ok, uint64_t *out)
{
	if (off_ok && strcmp(v, "off") == 0) {
		*out = 0;
		return true;
	}
	if (util_parse_duration_ms(v, out) == -1 || *out < lo || *out > hi) {
		cfg_err(p, ln->lineno, "%s: %s: expected a duration from "
		    "%llums to %llus%s, not %s", what, opt,
		    (unsigned long long)lo, (unsigned long long)hi / 1000,
		    off_ok ? " or off" : "", cfg_q(v));
		return false;
	}
	return true;
}

/* Each table option may be given once. */
static const char *const cfg_table_opt_names[] = { "set", "query", "prefix",
	"pool", "timeout", "cache", "negative-cache", NULL };

/* The options after "KIND:ARG"; false after reporting. */
static bool
cfg_table_opts(struct cfg_parser *p, const struct cfg_line *ln, size_t i,
    struct config_table *t, const char *what)
{
	bool sql = t->kind == CONFIG_TABLE_SQLITE ||
	    t->kind == CONFIG_TABLE_PGSQL;
	unsigned seen = 0;

	for (; i < ln->ntoks; i += 2) {
		const char *o = ln->toks[i].text;
		const char *v = i + 1 < ln->ntoks ? ln->toks[i + 1].text : NULL;
		if (!cfg_opt_once(p, ln, what, cfg_table_opt_names, o, &seen))
			return false;
		if (t->kind == CONFIG_TABLE_REDIS && strcmp(o, "set") == 0) {
			t->redis_set = true;
			i--;
			continue;
		}
		if (v == NULL) {
			cfg_err(p, ln->lineno, "%s: %s needs a value", what,
			    cfg_q(o));
			return false;
		}
		if (sql && strcmp(o, "query") == 0) {
			if (strstr(v, "$1") == NULL) {
				cfg_err(p, ln->lineno, "%s: the query must take "
				    "the key as the parameter $1", what);
				return false;
			}
			free(t->query);
			t->query = xstrdup(v);
		} else if (t->kind == CONFIG_TABLE_REDIS &&
		    strcmp(o, "prefix") == 0) {
			free(t->prefix);
			t->prefix = xstrdup(v);
		} else if (strcmp(o, "pool") == 0) {
			char *end;
			long n = strtol(v, &end, 10);
			if (*end != '\0' || n < 1 || n > 64) {
				cfg_err(p, ln->lineno, "%s: pool: expected "
				    "1..64 connections", what);
				return false;
			}
			t->pool = (unsigned)n;
		} else if (strcmp(o, "timeout") == 0) {
			if (!cfg_table_dur(p, ln, what, o, v, 10, 60000, false,
			    &t->timeout_ms))
				return false;
		} else if (strcmp(o, "cache") == 0) {
			if (!cfg_table_dur(p, ln, what, o, v, 1, 86400000, true,
			    &t->cache_ms))
				return false;
		} else if (strcmp(o, "negative-cache") == 0) {
			if (!cfg_table_dur(p, ln, what, o, v, 1, 86400000, true,
			    &t->neg_cache_ms))
				return false;
		} else {
			cfg_err(p, ln->lineno, "%s: unknown option %s (%s)",
			    what, cfg_q(o), sql ? "query, pool, timeout, "
			    "cache, negative-cache" : t->kind ==
			    CONFIG_TABLE_REDIS ? "prefix, set, pool, timeout, "
			    "cache, negative-cache" : "pool, timeout, cache, "
			    "negative-cache");
			return false;
		}
	}
	if (sql && t->query == NULL) {
		cfg_err(p, ln->lineno, "%s: needs query \"SELECT ... $1 ...\"",
		    what);
		return false;
	}
	return true;
}

/* "KIND:ARG" (or "passwd") at toks[2] and the options after it. */
static bool
cfg_table_backend(struct cfg_parser *p, const struct cfg_line *ln,
    struct config_table *t, const char *what)
{
	const char *w = ln->toks[2].text;
	size_t k;

	for (size_t i = 2; i < ln->ntoks; i++)
		if (ln->toks[i].kind != CFG_TOK_WORD) {
			cfg_err(p, ln->lineno, "%s: unexpected punctuation",
			    what);
			return false;
		}
	if (strcmp(w, "passwd") == 0 || strcmp(w, "passwd:") == 0) {
		t->kind = CONFIG_TABLE_PASSWD;
		t->cache_ms = t->neg_cache_ms = CFG_TABLE_CACHE_MS;
		return cfg_table_opts(p, ln, 3, t, what);
	}
	for (k = 0; k < sizeof(cfg_table_kinds) / sizeof(cfg_table_kinds[0]);
	    k++)
		if (strncmp(w, cfg_table_kinds[k].prefix,
		    strlen(cfg_table_kinds[k].prefix)) == 0)
			break;
	if (k == sizeof(cfg_table_kinds) / sizeof(cfg_table_kinds[0])) {
		cfg_err(p, ln->lineno, "%s: expected \"{ key, ... }\", "
		    "file:PATH, passwd, sqlite:PATH, pgsql:\"CONNINFO\" or "
		    "redis:HOST:PORT", what);
		return false;
	}
	t->kind = cfg_table_kinds[k].kind;
	w += strlen(cfg_table_kinds[k].prefix);
	if (*w == '\0') {
		cfg_err(p, ln->lineno, "%s: empty %s", what, t->kind ==
		    CONFIG_TABLE_FILE ? "file path" : "argument");
		return false;
	}
	if (t->kind == CONFIG_TABLE_FILE && ln->ntoks > 3) {
		cfg_err(p, ln->lineno, "%s: a file table takes no options",
		    what);
		return false;
	}
	if (t->kind == CONFIG_TABLE_REDIS && !cfg_redis_addr_ok(w)) {
		cfg_err(p, ln->lineno, "%s: redis wants HOST:PORT", what);
		return false;
	}
	t->path = xstrdup(w);
	if (t->kind != CONFIG_TABLE_FILE)
		t->cache_ms = t->neg_cache_ms = CFG_TABLE_CACHE_MS;
	if (!cfg_table_is_network(t->kind) && t->kind != CONFIG_TABLE_SQLITE)
		return true;
	return cfg_table_opts(p, ln, 3, t, what);
}

void
cfg_st_table(struct cfg_parser *p, const struct cfg_line *ln)
{
	const char *usage = "table NAME { key, ... } | table NAME KIND:ARG "
	    "[OPTIONS]";
	struct config *c = cfg_parser_config(p);
	struct config_table t = { .pool = CFG_TABLE_POOL,
	    .timeout_ms = CFG_TABLE_TIMEOUT_MS };

	if (ln->ntoks < 3) {
		cfg_err(p, ln->lineno, "table: missing argument (usage: %s)",
		    usage);
		return;
	}
	const char *name = ln->toks[1].text;
	if (ln->toks[1].kind != CFG_TOK_WORD || !cfg_is_name(name)) {
		cfg_err(p, ln->lineno, "table: bad name (letters, digits, "
		    "'_', '-', '.'; usage: %s)", usage);
		return;
	}
	char *what = xasprintf("table %s", name);
	const struct config_table *old = config_table_find(c, name);
	if (old != NULL) {
		cfg_err(p, ln->lineno, "duplicate table %s (first at line %d)",
		    cfg_q(name), old->line);
		goto fail;
	}
	if (ln->toks[2].kind == CFG_TOK_LBRACE) {
		if ((t.items = cfg_parse_list(p, ln, 2, what)) == NULL)
			goto fail;
		t.kind = CONFIG_TABLE_INLINE;
	} else if (ln->toks[2].kind != CFG_TOK_WORD) {
		cfg_err(p, ln->lineno, "%s: unexpected '%s' (usage: %s)", what,
		    ln->toks[2].text, usage);
		goto fail;
	} else if (!cfg_table_backend(p, ln, &t, what))
		goto fail;
	t.name = xstrdup(name);
	t.line = ln->lineno;
	c->tables[c->ntables++] = t;	/* room counted before parsing */
	free(what);
	return;
fail:
	cfg_table_clear(&t);
	free(what);
}

void
cfg_table_clear(struct config_table *t)
{
	free(t->name);
	free(t->path);
	free(t->query);
	free(t->prefix);
	for (char **it = t->items; it != NULL && *it != NULL; it++)
		free(*it);
	free(t->items);
	memset(t, 0, sizeof(*t));
}

/* ----- auth, auth-guard ----- */

void
cfg_st_auth(struct cfg_parser *p, const struct cfg_line *ln)
{
	struct config *c = cfg_parser_config(p);
	struct config_auth a = { .line = ln->lineno };

	if (!cfg_nargs(p, ln, 1, 2, "auth pam [SERVICE] | auth <TABLE>"))
		return;
	const char *w = ln->toks[1].text;
	if (strcmp(w, "pam") == 0 && !ln->toks[1].quoted) {
		const char *svc = ln->ntoks == 3 ? ln->toks[2].text : "postern";
		if (!cfg_is_name(svc)) {
			cfg_err(p, ln->lineno, "auth pam: bad service name %s",
			    cfg_q(svc));
			return;
		}
		a.pam_service = xstrdup(svc);
	} else {
		if (ln->ntoks != 2) {
			cfg_err(p, ln->lineno, "auth: too many arguments "
			    "(usage: auth <TABLE>)");
			return;
		}
		if ((a.table = cfg_table_ref(p, ln, w, "auth")) == NULL)
			return;
	}
	c->auths = xreallocarray(c->auths, c->nauths + 1, sizeof(*c->auths));
	c->auths[c->nauths++] = a;
}

/* "N/PERIOD": failures in a window. */
static bool
cfg_guard_rate(const char *s, struct config_guard *g)
{
	const char *slash = strchr(s, '/');
	char *end;
	long n;

	if (slash == NULL)
		return false;
	n = strtol(s, &end, 10);
	if (end != slash || n < 1 || n > 100000 ||
	    util_parse_duration_ms(slash + 1, &g->period_ms) == -1 ||
	    g->period_ms < 1000 || g->period_ms > 7ull * 86400 * 1000)
		return false;
	g->max = (unsigned)n;
	return true;
}

void
cfg_st_auth_guard(struct cfg_parser *p, const struct cfg_line *ln)
{
	const char *usage = "auth-guard off | auth-guard N/PERIOD [ban DUR] "
	    "[tarpit DUR]";
	struct config_guard *g = &cfg_parser_config(p)->auth_guard;

	if (!cfg_nargs(p, ln, 1, 5, usage))
		return;
	if (strcmp(ln->toks[1].text, "off") == 0) {
		if (ln->ntoks != 2)
			cfg_err(p, ln->lineno, "auth-guard off takes nothing "
			    "more");
		g->max = 0;
		return;
	}
	if (!cfg_guard_rate(ln->toks[1].text, g)) {
		cfg_err(p, ln->lineno, "auth-guard: expected N/PERIOD (1..100000 "
		    "failures in 1s..7d), like 5/15m, or off");
		return;
	}
	for (size_t i = 2; i < ln->ntoks; i += 2) {
		const char *o = ln->toks[i].text;
		if (i + 1 >= ln->ntoks || (strcmp(o, "ban") != 0 &&
		    strcmp(o, "tarpit") != 0)) {
			cfg_err(p, ln->lineno, "auth-guard: usage: %s", usage);
			return;
		}
		if (o[0] == 'b' ? !cfg_table_dur(p, ln, "auth-guard", o,
		    ln->toks[i + 1].text, 1000, 30ull * 86400 * 1000, false,
		    &g->ban_ms) : !cfg_table_dur(p, ln, "auth-guard", o,
		    ln->toks[i + 1].text, 0, 60000, true, &g->tarpit_ms))
			return;
	}
}

/* ----- alias, sender-login, sender-auth, maildir-root ----- */

void
cfg_st_alias(struct cfg_parser *p, const struct cfg_line *ln)
{
	const char *usage = "alias <TABLE>... [depth N] [targets N]";
	struct config *c = cfg_parser_config(p);

	if (!cfg_nargs(p, ln, 1, 16, usage))
		return;
	if (c->naliases > 0) {
		cfg_err(p, ln->lineno, "duplicate alias statement (name every "
		    "alias table on one line, in order)");
		return;
	}
	for (size_t i = 1; i < ln->ntoks; i++) {
		const char *w = ln->toks[i].text;
		if (strcmp(w, "depth") == 0 || strcmp(w, "targets") == 0) {
			char *end;
			long n = i + 1 < ln->ntoks ?
			    strtol(ln->toks[i + 1].text, &end, 10) : 0;
			bool depth = w[0] == 'd';
			if (n < 1 || *end != '\0' || n > (depth ? 32 : 10000)) {
				cfg_err(p, ln->lineno, "alias: %s: expected "
				    "1..%d", w, depth ? 32 : 10000);
				return;
			}
			*(depth ? &c->alias_depth : &c->alias_targets) =
			    (unsigned)n;
			i++;
			continue;
		}
		const struct config_table *t = cfg_table_ref(p, ln, w,
		    "alias");
		if (t == NULL)
			return;
		c->aliases = xreallocarray(c->aliases, c->naliases + 1,
		    sizeof(*c->aliases));
		c->aliases[c->naliases++] = t;
	}
	if (c->naliases == 0)
		cfg_err(p, ln->lineno, "alias: no table (usage: %s)", usage);
}

void
cfg_st_sender_login(struct cfg_parser *p, const struct cfg_line *ln)
{
	struct config *c = cfg_parser_config(p);

	if (!cfg_nargs(p, ln, 1, 1, "sender-login <TABLE>"))
		return;
	if (c->sender_login != NULL) {
		cfg_err(p, ln->lineno, "duplicate sender-login");
		return;
	}
	c->sender_login = cfg_table_ref(p, ln, ln->toks[1].text,
	    "sender-login");
}

void
cfg_st_sender_auth(struct cfg_parser *p, const struct cfg_line *ln)
{
	struct config *c = cfg_parser_config(p);
	size_t nd = 0, nt = 0;
	const char *why;

	if (!cfg_nargs(p, ln, 1, 64, "sender-auth DOMAIN|<TABLE>..."))
		return;
	if (c->sender_auth != NULL || c->sender_auth_tables != NULL) {
		cfg_err(p, ln->lineno, "duplicate sender-auth (name every "
		    "domain on one line)");
		return;
	}
	c->sender_auth = xcalloc(ln->ntoks, sizeof(*c->sender_auth));
	c->sender_auth_tables = xcalloc(ln->ntoks,
	    sizeof(*c->sender_auth_tables));
	for (size_t i = 1; i < ln->ntoks; i++) {
		const char *w = ln->toks[i].text;
		if (cfg_is_table_ref(w)) {
			const struct config_table *t = cfg_table_ref(p, ln, w,
			    "sender-auth");
			if (t != NULL)
				c->sender_auth_tables[nt++] = t;
		} else if (w[0] == '\0' || strchr(w, '@') != NULL ||
		    strchr(w, ' ') != NULL)
			cfg_err(p, ln->lineno, "sender-auth: %s is not a "
			    "domain", cfg_q(w));
		else if (util_idna_alabel(w, &c->sender_auth[nd], &why) ==
		    -1)
			cfg_err(p, ln->lineno, "sender-auth: %s is not a "
			    "valid internationalized domain name (%s)",
			    cfg_q(w), why);
		else
			nd++;	/* in its A-label form, as route/ compares */
	}
}

void
cfg_st_maildir_root(struct cfg_parser *p, const struct cfg_line *ln)
{
	struct config *c = cfg_parser_config(p);

	if (!cfg_nargs(p, ln, 1, 32, "maildir-root PATH..."))
		return;
	if (c->maildir_roots != NULL) {
		cfg_err(p, ln->lineno, "duplicate maildir-root (name every "
		    "folder on one line)");
		return;
	}
	c->maildir_roots = xcalloc(ln->ntoks, sizeof(*c->maildir_roots));
	for (size_t i = 1; i < ln->ntoks; i++) {
		const char *w = ln->toks[i].text;
		if (w[0] != '/' || strstr(w, "/..") != NULL || strcmp(w, "/") ==
		    0) {
			cfg_err(p, ln->lineno, "maildir-root: %s must be an "
			    "absolute folder other than / without \"..\"",
			    cfg_q(w));
			continue;
		}
		c->maildir_roots[i - 1] = xstrdup(w);
	}
}

int
config_maildir_path_check(const struct config_action *a, const char *path,
    const char **why_out)
{
	bool owned = a->owner != NULL || a->owner_table != NULL;

	if (path[0] == '~' && !owned) {
		*why_out = "a path starting with ~ needs \"as USER\" or "
		    "\"as <TABLE>\" (whose home it is)";
		return -1;
	}
	if (path[0] != '/' && path[0] != '~' && owned) {
		*why_out = "a maildir delivered as its owner needs an "
		    "absolute path or ~";
		return -1;
	}
	return 0;
}

/*
 * The rest of "action NAME maildir PATH|<TABLE> [as USER|<TABLE>]" from
 * toks[3]; the template is checked by check_fn.  0, or -1 after reporting.
 */
int
cfg_action_maildir(struct cfg_parser *p, const struct cfg_line *ln,
    struct config_action *a, int (*check_fn)(const char *, char **))
{
	const char *name = ln->toks[1].text, *path, *owner_why;
	char *why, *what = xasprintf("action %s", name);
	int rc = -1;

	if ((ln->ntoks != 4 && ln->ntoks != 6) || (ln->ntoks == 6 &&
	    strcmp(ln->toks[4].text, "as") != 0)) {
		cfg_err(p, ln->lineno, "%s: usage: action NAME maildir "
		    "\"PATH\"|<TABLE> [as USER|<TABLE>]", what);
		goto out;
	}
	path = ln->toks[3].text;
	if (!ln->toks[3].quoted && cfg_is_table_ref(path)) {
		if ((a->path_table = cfg_table_ref(p, ln, path, what)) == NULL)
			goto out;
	} else if (path[0] == '\0') {
		cfg_err(p, ln->lineno, "%s: empty maildir path", what);
		goto out;
	} else if (check_fn(path, &why) == -1) {
		cfg_err(p, ln->lineno, "%s: maildir path: %s", what, why);
		free(why);
		goto out;
	} else
		a->path = xstrdup(path);
	if (ln->ntoks == 6) {
		const char *o = ln->toks[5].text;
		if (cfg_is_table_ref(o)) {
			if ((a->owner_table = cfg_table_ref(p, ln, o, what)) ==
			    NULL)
				goto out;
			if (a->owner_table->kind != CONFIG_TABLE_PASSWD) {
				cfg_err(p, ln->lineno, "%s: as <%s>: the owner "
				    "table must be a passwd table", what,
				    a->owner_table->name);
				goto out;
			}
		} else if (!cfg_is_name(o) || strcmp(o, "root") == 0) {
			cfg_err(p, ln->lineno, "%s: as %s: expected a user "
			    "name (not root) or a passwd <TABLE>", what,
			    cfg_q(o));
			goto out;
		} else
			a->owner = xstrdup(o);
	}
	if (a->path != NULL && config_maildir_path_check(a, a->path,
	    &owner_why) == -1) {
		cfg_err(p, ln->lineno, "%s: %s", what, owner_why);
		goto out;
	}
	rc = 0;
out:
	free(what);
	if (rc == -1) {
		free(a->path);
		free(a->owner);
		a->path = a->owner = NULL;
	}
	return rc;
}

/* ----- defaults, checks, free ----- */

void
cfg_accounts_defaults(struct config *c)
{
	c->alias_depth = 8;
	c->alias_targets = 100;
	c->auth_guard.max = 5;
	c->auth_guard.period_ms = 15 * 60 * 1000;
	c->auth_guard.ban_ms = 60 * 60 * 1000;
	c->auth_guard.tarpit_ms = 1000;
}

void
cfg_accounts_free(struct config *c)
{
	for (size_t i = 0; i < c->nauths; i++)
		free(c->auths[i].pam_service);
	free(c->auths);
	free(c->aliases);
	for (char **d = c->sender_auth; d != NULL && *d != NULL; d++)
		free(*d);
	free(c->sender_auth);
	free(c->sender_auth_tables);
	for (char **d = c->maildir_roots; d != NULL && *d != NULL; d++)
		free(*d);
	free(c->maildir_roots);
	for (size_t i = 0; i < c->nactions; i++)
		free(c->actions[i].owner);
}

bool
config_needs_priv(const struct config *c)
{
	for (size_t i = 0; i < c->nauths; i++)
		if (c->auths[i].table == NULL)
			return true;
	for (size_t i = 0; i < c->nactions; i++)
		if (c->actions[i].owner != NULL ||
		    c->actions[i].owner_table != NULL)
			return true;
	return false;
}
