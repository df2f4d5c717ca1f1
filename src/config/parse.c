/*
 * config/parse.c: statements of postern.conf into struct config.  Every
 * error is collected as "FILE:LINE: message" so one run reports them all.
 * Here: the parser itself, the statement table, the global settings and
 * tables; each other area has its file parse_<area>.c.  Knows nothing of
 * sockets or SMTP: addresses are only checked for form.
 */
#include "config/config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config_private.h"
#include "log/log.h"
#include "util/util.h"

void
cfg_err(struct cfg_parser *p, int line, const char *fmt, ...)
{
	va_list ap;
	char *msg;

	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) == -1)
		fatal("vasprintf: out of memory");
	va_end(ap);
	util_buf_printf(&p->errs, "%s:%d: %s\n", p->name, line, msg);
	free(msg);
}

/* Quote user text for a message; the result lives until the next call. */
const char *
cfg_q(const char *s)
{
	static __thread char *last;

	free(last);
	last = cfg_quote(s);
	return last;
}

/*
 * Check that a statement has between min and max argument words (max < 0:
 * no limit) and no list punctuation; report otherwise.
 */
bool
cfg_nargs(struct cfg_parser *p, const struct cfg_line *ln, size_t min,
    size_t max, const char *usage)
{
	size_t n = ln->ntoks - 1;

	for (size_t i = 1; i < ln->ntoks; i++)
		if (ln->toks[i].kind != CFG_TOK_WORD) {
			cfg_err(p, ln->lineno, "%s: unexpected '%s' (usage: "
			    "%s)", ln->toks[0].text, ln->toks[i].text, usage);
			return false;
		}
	if (n < min) {
		cfg_err(p, ln->lineno, "%s: missing argument (usage: %s)",
		    ln->toks[0].text, usage);
		return false;
	}
	if (n > max) {
		cfg_err(p, ln->lineno, "%s: too many arguments (usage: %s)",
		    ln->toks[0].text, usage);
		return false;
	}
	return true;
}

/* Report a second statement of a kind that may appear once. */
bool
cfg_once(struct cfg_parser *p, const struct cfg_line *ln, int *seen,
    const char *what)
{
	if (*seen != 0) {
		cfg_err(p, ln->lineno, "duplicate %s (first at line %d)",
		    what, *seen);
		return false;
	}
	*seen = ln->lineno;
	return true;
}

bool
cfg_opt_once(struct cfg_parser *p, const struct cfg_line *ln,
    const char *what, const char *const *names, const char *o,
    unsigned *seen)
{
	for (unsigned k = 0; names[k] != NULL; k++)
		if (strcmp(o, names[k]) == 0) {
			ASSERT(k < 32);
			if (*seen & (1u << k)) {
				cfg_err(p, ln->lineno, "%s%s%s given twice",
				    what != NULL ? what : "",
				    what != NULL ? ": " : "", o);
				return false;
			}
			*seen |= 1u << k;
		}
	return true;
}

/* 1..max octets of letters, digits, '-', '.' and '_'. */
static bool
cfg_is_word(const char *s, size_t max)
{
	size_t n = strlen(s);

	if (n == 0 || n > max)
		return false;
	for (; *s != '\0'; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		    (*s >= '0' && *s <= '9') || *s == '-' || *s == '.' ||
		    *s == '_'))
			return false;
	return true;
}

const char *
cfg_domain_why(const char *s, bool utf8)
{
	size_t n = strlen(s), label = 0;

	if (n == 0)
		return "is empty";
	/* RFC 1035 2.3.4: 255 octets on the wire, 253 written out. */
	if (n > 253)
		return "is longer than 253 octets";
	for (size_t i = 0; i <= n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '.' || c == '\0') {
			/* RFC 1123 2.1, RFC 5321 4.1.2: Let-dig [Ldh-str] */
			if (label == 0)
				return "has an empty label (a '.' at either "
				    "end, or two together)";
			if (label > 63)
				return "has a label longer than 63 octets";
			if (s[i - label] == '-' || s[i - 1] == '-')
				return "has a label that starts or ends with "
				    "'-'";
			label = 0;
			continue;
		}
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '-' || (utf8 && c >= 0x80)))
			return utf8 ? "has a character other than letters, "
			    "digits, '-', '.' and UTF-8" : "has a character "
			    "other than letters, digits, '-' and '.'";
		label++;
	}
	return NULL;
}

/* Names of tables, actions and accounts. */
bool
cfg_is_name(const char *s)
{
	return cfg_is_word(s, 64);
}

static void
cfg_st_hostname(struct cfg_parser *p, const struct cfg_line *ln)
{
	if (!cfg_nargs(p, ln, 1, 1, "hostname NAME"))
		return;
	if (!cfg_once(p, ln, &p->seen_hostname, "hostname"))
		return;
	/* It goes on the wire in the greeting and EHLO reply. */
	const char *why = cfg_domain_why(ln->toks[1].text, false);
	if (why != NULL) {
		cfg_err(p, ln->lineno, "hostname: %s %s", cfg_q(ln->toks[1].text),
		    why);
		return;
	}
	free(p->c->hostname);
	p->c->hostname = xstrdup(ln->toks[1].text);
}

#define CFG_SPOOL_USAGE "spool PATH [keep DIR [max SIZE]]"
static const struct cfg_size_range cfg_keep_max = { 1 << 20, 1ULL << 50,
    "1M..1048576G" };

static const struct cfg_size_range cfg_log_size = { 64 << 10, 1ULL << 40,
    "64k..1024G, or off" };

/* "spool log-size SIZE|off" */
static void
cfg_st_spool_log(struct cfg_parser *p, const struct cfg_line *ln)
{
	uint64_t size = 0;
	size_t i = 1;

	if (!cfg_nargs(p, ln, 2, 2, "spool log-size SIZE|off"))
		return;
	if (strcmp(ln->toks[2].text, "off") != 0 &&
	    !cfg_size_opt(p, ln, &i, &cfg_log_size, &size))
		return;
	if (cfg_once(p, ln, &p->seen_spool_log, "spool log-size"))
		p->c->spool_log_size = size;
}

/* "spool PATH [keep DIR [max SIZE]]" */
static void
cfg_st_spool(struct cfg_parser *p, const struct cfg_line *ln)
{
	struct config *c = p->c;
	uint64_t max = 1ULL << 30;
	size_t i = 4;

	if (ln->ntoks > 1 && ln->toks[1].kind == CFG_TOK_WORD &&
	    strcmp(ln->toks[1].text, "log-size") == 0) {
		cfg_st_spool_log(p, ln);
		return;
	}
	if (!cfg_nargs(p, ln, 1, 5, CFG_SPOOL_USAGE))
		return;
	if (ln->ntoks > 2 && (ln->ntoks < 4 ||
	    strcmp(ln->toks[2].text, "keep") != 0 ||
	    ln->toks[3].text[0] == '\0' || (ln->ntoks > 4 &&
	    strcmp(ln->toks[4].text, "max") != 0))) {
		cfg_err(p, ln->lineno, "spool: usage: %s", CFG_SPOOL_USAGE);
		return;
	}
	if (ln->ntoks > 4 && !cfg_size_opt(p, ln, &i, &cfg_keep_max, &max))
		return;
	if (ln->toks[1].text[0] == '\0') {
		cfg_err(p, ln->lineno, "spool: empty path");
		return;
	}
	if (!cfg_once(p, ln, &p->seen_spool, "spool"))
		return;
	free(c->spool);
	c->spool = xstrdup(ln->toks[1].text);
	if (ln->ntoks > 2) {
		c->spool_keep = xstrdup(ln->toks[3].text);
		c->spool_keep_max = max;
	}
}

bool
cfg_size_opt(struct cfg_parser *p, const struct cfg_line *ln, size_t *ip,
    const struct cfg_size_range *r, uint64_t *out)
{
	const char *name = ln->toks[*ip].text;

	if (*ip + 1 >= ln->ntoks || ln->toks[*ip + 1].kind != CFG_TOK_WORD ||
	    util_parse_size(ln->toks[*ip + 1].text, out) == -1 ||
	    *out < r->min || *out > r->max) {
		cfg_err(p, ln->lineno, "%s %s: expected a size in %s",
		    ln->toks[0].text, name, r->text);
		return false;
	}
	*ip += 2;
	return true;
}

#define CFG_TRANSLOG_USAGE "transaction-log DIR [commands|replies] " \
	"[data [SIZE]] [max-file SIZE] [max-total SIZE]"
static const struct cfg_size_range cfg_tl_data = { 1, 1ULL << 30, "1..1G" };
static const struct cfg_size_range cfg_tl_file = { 4096, 1ULL << 40,
    "4k..1024G" };
static const struct cfg_size_range cfg_tl_total = { 4096, 1ULL << 50,
    "4k..1048576G" };

/* "pid-file PATH" */
static void
cfg_st_pid_file(struct cfg_parser *p, const struct cfg_line *ln)
{
	if (!cfg_nargs(p, ln, 1, 1, "pid-file PATH") ||
	    !cfg_once(p, ln, &p->seen_pid_file, "pid-file"))
		return;
	if (ln->toks[1].text[0] == '\0') {
		cfg_err(p, ln->lineno, "pid-file: empty path");
		return;
	}
	free(p->c->pid_file);
	p->c->pid_file = xstrdup(ln->toks[1].text);
}

static void
cfg_st_translog(struct cfg_parser *p, const struct cfg_line *ln)
{
	static const char *const opts[] = { "commands", "replies", "data",
	    "max-file", "max-total", NULL };
	struct config_translog t = p->c->translog;
	unsigned seen = 0;

	if (!cfg_nargs(p, ln, 1, 9, CFG_TRANSLOG_USAGE))
		return;
	for (size_t i = 2; i < ln->ntoks; ) {
		const char *w = ln->toks[i].text;
		if (!cfg_opt_once(p, ln, "transaction-log", opts, w, &seen))
			return;
		if ((seen & 3) == 3) {	/* commands and replies */
			cfg_err(p, ln->lineno, "transaction-log: commands and "
			    "replies: give one, or neither to log both sides");
			return;
		}
		if (strcmp(w, "commands") == 0 || strcmp(w, "replies") == 0) {
			t.commands = w[0] == 'c';
			t.replies = w[0] == 'r';
			i++;
		} else if (strcmp(w, "data") == 0) {
			t.data_max = 1 << 20;
			if (i + 1 < ln->ntoks && util_parse_size(
			    ln->toks[i + 1].text, &t.data_max) == 0) {
				if (!cfg_size_opt(p, ln, &i, &cfg_tl_data,
				    &t.data_max))
					return;
			} else
				i++;
		} else if (strcmp(w, "max-file") == 0) {
			if (!cfg_size_opt(p, ln, &i, &cfg_tl_file, &t.file_max))
				return;
		} else if (strcmp(w, "max-total") == 0) {
			if (!cfg_size_opt(p, ln, &i, &cfg_tl_total,
			    &t.total_max))
				return;
		} else {
			cfg_err(p, ln->lineno, "transaction-log: unknown option "
			    "%s (usage: %s)", cfg_q(w), CFG_TRANSLOG_USAGE);
			return;
		}
	}
	if (t.file_max > t.total_max) {
		cfg_err(p, ln->lineno, "transaction-log: max-file is larger "
		    "than max-total");
		return;
	}
	if (ln->toks[1].text[0] == '\0') {
		cfg_err(p, ln->lineno, "transaction-log: empty path");
		return;
	}
	if (!cfg_once(p, ln, &p->seen_translog, "transaction-log"))
		return;
	t.dir = xstrdup(ln->toks[1].text);
	p->c->translog = t;
}

/* "user NAME" / "group NAME": whom to run as after binding (as root). */
static void
cfg_st_user_group(struct cfg_parser *p, const struct cfg_line *ln)
{
	bool is_user = strcmp(ln->toks[0].text, "user") == 0;
	char **dst = is_user ? &p->c->user : &p->c->group;

	if (!cfg_nargs(p, ln, 1, 1, is_user ? "user NAME" : "group NAME"))
		return;
	if (!cfg_once(p, ln, is_user ? &p->seen_user : &p->seen_group,
	    ln->toks[0].text))
		return;
	if (!cfg_is_name(ln->toks[1].text)) {
		cfg_err(p, ln->lineno, "%s: %s is not a valid name",
		    ln->toks[0].text, cfg_q(ln->toks[1].text));
		return;
	}
	free(*dst);
	*dst = xstrdup(ln->toks[1].text);
}

/* "workers N [pack|spread]": event loops, one per core by default. */
static void
cfg_st_workers(struct cfg_parser *p, const struct cfg_line *ln)
{
	uint64_t n;

	if (!cfg_nargs(p, ln, 1, 2, "workers N [pack|spread]"))
		return;
	if (!cfg_once(p, ln, &p->seen_workers, "workers"))
		return;
	if (util_parse_size(ln->toks[1].text, &n) == -1 ||
	    strspn(ln->toks[1].text, "0123456789") != strlen(ln->toks[1].text)
	    || n < 1 || n > 256) {
		cfg_err(p, ln->lineno, "workers: %s is not a number in 1..256",
		    cfg_q(ln->toks[1].text));
		return;
	}
	p->c->workers = (unsigned)n;
	if (ln->ntoks == 3) {
		const char *how = ln->toks[2].text;
		if (strcmp(how, "spread") != 0 && strcmp(how, "pack") != 0)
			cfg_err(p, ln->lineno, "workers: %s is not pack or "
			    "spread", cfg_q(how));
		p->c->workers_spread = strcmp(how, "spread") == 0;
	}
}

/* "pipelining strict|loose": message text before the 354 (RFC 2920 3.1). */
static void
cfg_st_pipelining(struct cfg_parser *p, const struct cfg_line *ln)
{
	const char *how;

	if (!cfg_nargs(p, ln, 1, 1, "pipelining strict|loose") ||
	    !cfg_once(p, ln, &p->seen_pipelining, "pipelining"))
		return;
	how = ln->toks[1].text;
	if (strcmp(how, "strict") != 0 && strcmp(how, "loose") != 0)
		cfg_err(p, ln->lineno, "pipelining: %s is not strict or loose",
		    cfg_q(how));
	p->c->pipelining_loose = strcmp(how, "loose") == 0;
}

/*
 * "early-talker close|continue [greeting|replies]": a client that talks
 * when it must wait: before the greeting, or before any reply too.
 */
static void
cfg_st_early_talker(struct cfg_parser *p, const struct cfg_line *ln)
{
	const char *how, *when;

	if (!cfg_nargs(p, ln, 1, 2, "early-talker close|continue "
	    "[greeting|replies]") ||
	    !cfg_once(p, ln, &p->seen_early_talker, "early-talker"))
		return;
	how = ln->toks[1].text;
	when = ln->ntoks > 2 ? ln->toks[2].text : "greeting";
	if (strcmp(how, "close") != 0 && strcmp(how, "continue") != 0)
		cfg_err(p, ln->lineno, "early-talker: %s is not close or "
		    "continue", cfg_q(how));
	if (strcmp(when, "greeting") != 0 && strcmp(when, "replies") != 0)
		cfg_err(p, ln->lineno, "early-talker: %s is not greeting or "
		    "replies", cfg_q(when));
	p->c->early_talker_continue = strcmp(how, "continue") == 0;
	p->c->early_talker_replies = strcmp(when, "replies") == 0;
}

static void
cfg_st_greeting(struct cfg_parser *p, const struct cfg_line *ln)
{
	if (!cfg_nargs(p, ln, 1, 1, "greeting \"TEXT\""))
		return;
	if (!cfg_once(p, ln, &p->seen_greeting, "greeting"))
		return;
	/* It goes on the wire after "220 ": RFC 5321 4.2 textstring. */
	const char *s = ln->toks[1].text;
	if (strlen(s) > 200) {
		cfg_err(p, ln->lineno, "greeting: longer than 200 bytes");
		return;
	}
	for (const char *q = s; *q != '\0'; q++)
		if ((unsigned char)*q < 0x20 || (unsigned char)*q > 0x7e) {
			cfg_err(p, ln->lineno, "greeting: only printable "
			    "ASCII is allowed");
			return;
		}
	free(p->c->greeting);
	p->c->greeting = xstrdup(s);
}




int
cfg_defined_in(const struct cfg_parser *p, const char *kw, const char *name,
    size_t from, size_t to)
{
	for (size_t i = from; i < to; i++) {
		const struct cfg_line *ln = &p->lines[i];
		if (ln->ntoks >= 1 && ln->toks[0].kind == CFG_TOK_WORD &&
		    strcmp(ln->toks[0].text, kw) == 0 && (name == NULL ||
		    (ln->ntoks >= 2 && ln->toks[1].kind == CFG_TOK_WORD &&
		    strcmp(ln->toks[1].text, name) == 0)))
			return ln->lineno;
	}
	return 0;
}

int
cfg_defined_later(const struct cfg_parser *p, const char *kw,
    const char *name)
{
	return cfg_defined_in(p, kw, name, p->cur + 1, p->nlines);
}

void
cfg_err_undefined(struct cfg_parser *p, const struct cfg_line *ln,
    const char *what, const char *kw, const char *name)
{
	int later = cfg_defined_later(p, kw, name);

	if (cfg_defined_in(p, kw, name, 0, p->cur) != 0)
		return;		/* refused there, with an error of its own */
	if (later != 0)
		cfg_err(p, ln->lineno, "%s: %s %s is defined later, at line "
		    "%d; define it before use", what, kw, cfg_q(name), later);
	else
		cfg_err(p, ln->lineno, "%s: %s %s is not defined (define it "
		    "with \"%s\" before use)", what, kw, cfg_q(name), kw);
}

/* Parse "{ a, b, c }" from toks[i]; NULL-terminated owned keys or NULL. */
char **
cfg_parse_list(struct cfg_parser *p, const struct cfg_line *ln, size_t i,
    const char *what)
{
	char **items = NULL;
	size_t n = 0;
	bool want_item = true;

	ASSERT(ln->toks[i].kind == CFG_TOK_LBRACE);
	for (i++; i < ln->ntoks; i++) {
		const struct cfg_tok *t = &ln->toks[i];
		if (t->kind == CFG_TOK_RBRACE)
			break;
		if (want_item && t->kind == CFG_TOK_WORD) {
			if (t->text[0] == '\0') {
				cfg_err(p, ln->lineno, "%s: empty key in list",
				    what);
				goto fail;
			}
			items = xreallocarray(items, n + 2, sizeof(*items));
			items[n++] = xstrdup(t->text);
			items[n] = NULL;
			want_item = false;
		} else if (!want_item && t->kind == CFG_TOK_COMMA) {
			want_item = true;
		} else {
			cfg_err(p, ln->lineno, "%s: expected %s in list", what,
			    want_item ? "a key" : "',' or '}'");
			goto fail;
		}
	}
	if (i >= ln->ntoks) {
		cfg_err(p, ln->lineno, "%s: missing '}' (a list must end on "
		    "the line where it starts)", what);
		goto fail;
	}
	if (i + 1 < ln->ntoks) {
		cfg_err(p, ln->lineno, "%s: unexpected text after '}'", what);
		goto fail;
	}
	if (n == 0) {
		cfg_err(p, ln->lineno, "%s: empty list", what);
		goto fail;
	}
	return items;
fail:
	for (size_t k = 0; k < n; k++)
		free(items[k]);
	free(items);
	return NULL;
}

static const struct cfg_statement {
	const char	*keyword;
	void		(*fn)(struct cfg_parser *, const struct cfg_line *);
} cfg_statements[] = {
	{ "hostname",		cfg_st_hostname },
	{ "spool",		cfg_st_spool },
	{ "greeting",		cfg_st_greeting },
	{ "pipelining",		cfg_st_pipelining },
	{ "early-talker",	cfg_st_early_talker },
	{ "listen",		cfg_st_listen },
	{ "log",		cfg_st_log },
	{ "transaction-log",	cfg_st_translog },
	{ "limit",		cfg_st_limit },
	{ "trusted",		cfg_st_trusted },
	{ "table",		cfg_st_table },
	{ "action",		cfg_st_action },
	{ "account",		cfg_st_relay_account },
	{ "upstream",		cfg_st_upstream },
	{ "match",		cfg_st_match },
	{ "user",		cfg_st_user_group },
	{ "group",		cfg_st_user_group },
	{ "workers",		cfg_st_workers },
	{ "auth",		cfg_st_auth },
	{ "auth-guard",		cfg_st_auth_guard },
	{ "alias",		cfg_st_alias },
	{ "sender-login",	cfg_st_sender_login },
	{ "sender-auth",	cfg_st_sender_auth },
	{ "maildir-root",	cfg_st_maildir_root },
	{ "tls",		cfg_st_tls },
	{ "queue",		cfg_st_queue },
	{ "on",			cfg_st_on },
	{ "state",		cfg_st_state },
	{ "lua",		cfg_st_lua },
	{ "pid-file",		cfg_st_pid_file },
	{ "bind-retry",		cfg_st_bind_retry },
	{ "metrics",		cfg_st_metrics },
	{ NULL,			NULL },
};

const char *
config_keyword(size_t i)
{
	return i < sizeof(cfg_statements) / sizeof(cfg_statements[0]) ?
	    cfg_statements[i].keyword : NULL;
}

/* Remember where the statement is, for config_line_of(). */
static void
cfg_note_stmt(struct config *c, const struct cfg_line *ln)
{
	struct config_stmt *st;

	c->stmts = xreallocarray(c->stmts, c->nstmts + 1, sizeof(*c->stmts));
	st = &c->stmts[c->nstmts++];
	st->word = xstrdup(ln->toks[0].text);
	st->word2 = ln->ntoks > 1 && ln->toks[1].text != NULL ?
	    xstrdup(ln->toks[1].text) : NULL;
	st->line = ln->lineno;
}

int
config_line_of(const struct config *c, const char *word, const char *word2)
{
	for (size_t i = 0; i < c->nstmts; i++) {
		const struct config_stmt *st = &c->stmts[i];
		if (strcmp(st->word, word) == 0 && (word2 == NULL ||
		    (st->word2 != NULL && strcmp(st->word2, word2) == 0)))
			return st->line;
	}
	return 0;
}

static void
cfg_statement(struct cfg_parser *p, const struct cfg_line *ln)
{
	if (ln->lexerr != NULL) {
		cfg_err(p, ln->lineno, "%s", ln->lexerr);
		return;
	}
	if (ln->ntoks == 0)
		return;
	if (ln->toks[0].kind != CFG_TOK_WORD || ln->toks[0].quoted) {
		cfg_err(p, ln->lineno, "expected a keyword at the start of "
		    "the line");
		return;
	}
	for (const struct cfg_statement *st = cfg_statements;
	    st->keyword != NULL; st++)
		if (strcmp(ln->toks[0].text, st->keyword) == 0) {
			cfg_note_stmt(p->c, ln);
			st->fn(p, ln);
			return;
		}
	cfg_err(p, ln->lineno, "unknown keyword %s", cfg_q(ln->toks[0].text));
}

static void
cfg_defaults(struct config *c)
{
	char host[256];

	if (gethostname(host, sizeof(host)) == -1 || host[0] == '\0' ||
	    memchr(host, '\0', sizeof(host)) == NULL)
		c->hostname = xstrdup("localhost");
	else
		c->hostname = xstrdup(host);
	c->spool = xstrdup("var/spool");
	c->spool_log_size = 64ULL << 20;
	c->log_facility = xstrdup("mail");
	c->log_level = LOG_LVL_INFO;
	c->log_file_keep = 5;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	c->workers = ncpu < 1 ? 1 : ncpu > 256 ? 256 : (unsigned)ncpu;
	cfg_limit_defaults(c);
	cfg_queue_defaults(c);
	c->tls_session_lifetime_s = 3600;
	c->translog = (struct config_translog){ .commands = true,
	    .replies = true, .file_max = 16ULL << 20, .total_max = 1ULL << 30 };
	cfg_accounts_defaults(c);
	cfg_ops_defaults(c);
}

struct config *
cfg_parser_config(struct cfg_parser *p)
{
	return p->c;
}

const struct cfg_line *
cfg_peek_line(struct cfg_parser *p)
{
	return p->cur + 1 < p->nlines ? &p->lines[p->cur + 1] : NULL;
}

void
cfg_take_line(struct cfg_parser *p)
{
	if (p->cur + 1 < p->nlines)
		p->cur++;
}

/* Split text into lexed lines; count table and action statements. */
static void
cfg_split(struct cfg_parser *p, const char *text, size_t *ntables,
    size_t *nactions)
{
	const char *s = text;
	int lineno = 0;

	*ntables = *nactions = 0;
	while (*s != '\0') {
		const char *nl = strchr(s, '\n');
		size_t len = nl != NULL ? (size_t)(nl - s) : strlen(s);
		p->lines = xreallocarray(p->lines, p->nlines + 1,
		    sizeof(*p->lines));
		struct cfg_line *ln = &p->lines[p->nlines++];
		cfg_lex_line(s, len, ++lineno, ln);
		if (ln->ntoks > 0 && ln->toks[0].kind == CFG_TOK_WORD) {
			if (strcmp(ln->toks[0].text, "table") == 0)
				(*ntables)++;
			else if (strcmp(ln->toks[0].text, "action") == 0)
				(*nactions)++;
		}
		s += len;
		if (*s == '\n')
			s++;
	}
}

struct config *
config_parse(const char *name, const char *text, char **errs_out)
{
	struct cfg_parser p = { 0 };
	struct config *c = xcalloc(1, sizeof(*c));
	size_t ntables, nactions;

	p.name = name;
	p.c = c;
	c->path = xstrdup(name);
	cfg_defaults(c);
	cfg_split(&p, text, &ntables, &nactions);
	/*
	 * Rules borrow pointers into these arrays, so they never move: room
	 * for every table and action statement is made up front.
	 */
	c->tables = xcalloc(ntables + 1, sizeof(*c->tables));
	c->actions = xcalloc(nactions + 1, sizeof(*c->actions));
	for (p.cur = 0; p.cur < p.nlines; p.cur++)
		cfg_statement(&p, &p.lines[p.cur]);

	int last = p.nlines > 0 ? p.lines[p.nlines - 1].lineno : 1;
	cfg_listen_check(&p, last);
	/* Proxy listeners relay; only the others need rules. */
	bool routes = false;
	for (size_t i = 0; i < c->nlistens; i++)
		routes |= c->listens[i].proxy == NULL;
	if (c->nrules == 0 && (routes || c->nlistens == 0) &&
	    cfg_defined_in(&p, "match", NULL, 0, p.nlines) == 0)
		cfg_err(&p, last, "no match rule, so no mail can be accepted "
		    "(add one, like \"match to domain example.org action "
		    "NAME\")");
	for (size_t i = 0; i < p.nlines; i++)
		cfg_line_clear(&p.lines[i]);
	free(p.lines);
	cfg_q("");	/* keep the last quote from looking leaked */
	if (p.errs.len > 0) {
		*errs_out = xstrdup(util_buf_cstr(&p.errs));
		util_buf_clear(&p.errs);
		config_free(&c);
		return NULL;
	}
	*errs_out = NULL;
	return c;
}

/* The line of text[len] (counting from 1). */
static int
cfg_line_at(const char *text, size_t len)
{
	int line = 1;

	for (size_t i = 0; i < len; i++)
		line += text[i] == '\n';
	return line;
}

struct config *
config_load(const char *path, char **errs_out)
{
	struct util_buf b = { 0 };
	char chunk[8192];
	const char *z;
	size_t n;
	FILE *f;

	if ((f = fopen(path, "r")) == NULL) {
		*errs_out = xasprintf("%s:0: cannot open: %s\n", path,
		    strerror(errno));
		return NULL;
	}
	/* Stop early: /dev/zero or an endless pipe must not fill memory. */
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
		if ((z = memchr(chunk, '\0', n)) != NULL) {
			util_buf_add(&b, chunk, (size_t)(z - chunk));
			*errs_out = xasprintf("%s:%d: NUL byte in the file\n",
			    path, cfg_line_at(b.data, b.len));
			goto fail;
		}
		if (n > CONFIG_FILE_MAX - b.len) {
			util_buf_add(&b, chunk, CONFIG_FILE_MAX - b.len);
			*errs_out = xasprintf("%s:%d: the file is larger than "
			    "%u MiB, the most a configuration may be\n", path,
			    cfg_line_at(b.data, b.len), CONFIG_FILE_MAX >> 20);
			goto fail;
		}
		util_buf_add(&b, chunk, n);
	}
	if (ferror(f)) {
		*errs_out = xasprintf("%s:0: cannot read: %s\n", path,
		    strerror(errno));
		goto fail;
	}
	fclose(f);
	struct config *c = config_parse(path, util_buf_cstr(&b), errs_out);
	util_buf_clear(&b);
	return c;
fail:
	fclose(f);
	util_buf_clear(&b);
	return NULL;
}

void
config_free(struct config **cp)
{
	struct config *c = *cp;

	if (c == NULL)
		return;
	free(c->path);
	free(c->hostname);
	free(c->spool);
	free(c->spool_keep);
	free(c->greeting);
	free(c->log_facility);
	free(c->translog.dir);
	free(c->log_file);
	free(c->pid_file);
	free(c->metrics_addr);
	free(c->user);
	free(c->group);
	free(c->trusted);
	cfg_listen_free(c);
	cfg_accounts_free(c);
	for (size_t i = 0; i < c->ntables; i++)
		cfg_table_clear(&c->tables[i]);
	free(c->tables);
	cfg_relay_free(c);	/* before the actions it looks into */
	cfg_agent_free(c);
	cfg_proxy_free(c);
	cfg_route_free(c);
	cfg_chain_free(c);
	for (size_t i = 0; i < c->nstmts; i++) {
		free(c->stmts[i].word);
		free(c->stmts[i].word2);
	}
	free(c->stmts);
	free(c);
	*cp = NULL;
}

bool
config_has_tls(const struct config *c)
{
	return c->ntls_certs > 0 || c->tls_selfsigned_dir != NULL;
}

const struct config_action *
config_action_find(const struct config *c, const char *name)
{
	for (size_t i = 0; i < c->nactions; i++)
		if (strcmp(c->actions[i].name, name) == 0)
			return &c->actions[i];
	return NULL;
}

const struct config_table *
config_table_find(const struct config *c, const char *name)
{
	for (size_t i = 0; i < c->ntables; i++)
		if (strcmp(c->tables[i].name, name) == 0)
			return &c->tables[i];
	return NULL;
}
