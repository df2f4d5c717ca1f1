/*
 * config/parse_agent.c: the statements of the actions that turn mail into
 * something else: "action NAME webhook URL [OPTIONS]", "action NAME reply
 * text|command|lua|webhook ...", "action NAME pass-through ADDR", "action
 * NAME pipe PROGRAM ARGS... [OPTIONS]" and "action NAME lmtp SPEC
 * [OPTIONS]".  Only checks form; deliver/ reads files and connects.
 */
#include "config/config.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config/config_private.h"
#include "util/util.h"

static const char *const cfg_lmtp_steps[6] = { "connect", "greeting",
	"command", "data-init", "data-block", "data-term" };

/* ---- freeing ---- */

static void
cfg_strv_free(char **v)
{
	for (size_t i = 0; v != NULL && v[i] != NULL; i++)
		free(v[i]);
	free(v);
}

static void
cfg_hook_free(struct config_hook *h)
{
	if (h == NULL)
		return;
	free(h->url);
	free(h->method);
	free(h->template_path);
	cfg_strv_free(h->headers);
	free(h->ca_file);
	free(h);
}

void
cfg_agent_free(struct config *c)
{
	for (size_t i = 0; i < c->nactions; i++) {
		struct config_action *a = &c->actions[i];

		cfg_hook_free(a->hook);
		if (a->reply != NULL) {
			free(a->reply->path);
			free(a->reply->function);
			cfg_strv_free(a->reply->argv);
			cfg_hook_free(a->reply->hook);
			free(a->reply->user);
			free(a->reply->from_name);
			free(a->reply);
		}
		free(a->pass_to);
		if (a->pipe != NULL) {
			cfg_strv_free(a->pipe->argv);
			free(a->pipe->user);
			free(a->pipe);
		}
		if (a->lmtp != NULL) {
			free(a->lmtp->spec);
			free(a->lmtp->unix_path);
			free(a->lmtp->host);
			free(a->lmtp);
		}
	}
}

/* ---- small values ---- */

/* "<NAME>" naming a defined table; NULL after an error. */
static const struct config_table *
cfg_agent_table(struct cfg_parser *p, const struct cfg_line *ln,
    const char *opt, const struct cfg_tok *t)
{
	size_t n = strlen(t->text);
	const struct config_table *ct;
	char *name;

	if (t->quoted || n < 3 || t->text[0] != '<' || t->text[n - 1] != '>') {
		cfg_err(p, ln->lineno, "%s: expected <TABLE>", opt);
		return NULL;
	}
	name = xstrndup(t->text + 1, n - 2);
	if ((ct = config_table_find(cfg_parser_config(p), name)) == NULL)
		cfg_err_undefined(p, ln, opt, "table", name);
	free(name);
	return ct;
}

static int
cfg_agent_dur(struct cfg_parser *p, const struct cfg_line *ln,
    const char *opt, const char *s, uint64_t min, uint64_t max,
    uint64_t *out)
{
	if (util_parse_duration_ms(s, out) == -1 || *out < min || *out > max) {
		cfg_err(p, ln->lineno, "%s: %s is not a duration in %llus..%llus",
		    opt, cfg_q(s), (unsigned long long)(min / 1000),
		    (unsigned long long)(max / 1000));
		return -1;
	}
	return 0;
}

static int
cfg_agent_size(struct cfg_parser *p, const struct cfg_line *ln,
    const char *opt, const char *s, uint64_t min, uint64_t max,
    uint64_t *out)
{
	if (util_parse_size(s, out) == -1 || *out < min || *out > max) {
		cfg_err(p, ln->lineno, "%s: %s is not a size in %llu..%llu",
		    opt, cfg_q(s), (unsigned long long)min,
		    (unsigned long long)max);
		return -1;
	}
	return 0;
}

/* An absolute program path (there is no PATH search). */
static int
cfg_agent_program(struct cfg_parser *p, const struct cfg_line *ln,
    const char *what, const char *path)
{
	if (path[0] != '/') {
		cfg_err(p, ln->lineno, "%s: %s: the path must be absolute",
		    what, cfg_q(path));
		return -1;
	}
	return 0;
}

/* ---- webhook options ---- */

static int
cfg_hook_url(struct cfg_parser *p, const struct cfg_line *ln,
    struct config_hook *h, const char *url)
{
	if ((strncasecmp(url, "http://", 7) != 0 &&
	    strncasecmp(url, "https://", 8) != 0) ||
	    strpbrk(url, " \t\r\n") != NULL || strlen(url) > 2000 ||
	    url[strcspn(url, ":") + 3] == '\0') {
		cfg_err(p, ln->lineno, "webhook: %s is not an http:// or "
		    "https:// URL", cfg_q(url));
		return -1;
	}
	h->url = xstrdup(url);
	h->method = xstrdup("POST");
	h->sync_ms = 30000;
	return 0;
}

/* RFC 9110 5.1: a field name is a token. */
static bool
cfg_hook_is_token(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) &&
		    strchr("!#$%&'*+-.^_`|~", s[i]) == NULL)
			return false;
	return n > 0;
}

/*
 * The fields postern writes itself, and those that frame the request
 * (RFC 9110 5.3: a second Content-Type or Idempotency-Key contradicts
 * ours; a Content-Length or Transfer-Encoding of our own making would
 * let the body be read as a next request).
 */
static bool
cfg_hook_is_ours(const char *name, size_t n)
{
	static const char *const ours[] = { "Host", "Content-Length",
	    "Transfer-Encoding", "Connection", "Keep-Alive", "TE", "Trailer",
	    "Upgrade", "Expect", "Content-Type", "Idempotency-Key", NULL };

	for (size_t i = 0; ours[i] != NULL; i++)
		if (strlen(ours[i]) == n && strncasecmp(name, ours[i], n) == 0)
			return true;
	return n >= 10 && strncasecmp(name, "X-Postern-", 10) == 0;
}

static int
cfg_hook_header(struct cfg_parser *p, const struct cfg_line *ln,
    struct config_hook *h, const char *v)
{
	size_t n = strcspn(v, ":");

	if (v[n] != ':' || !cfg_hook_is_token(v, n) ||
	    strpbrk(v, "\r\n") != NULL) {
		cfg_err(p, ln->lineno, "header: %s is not \"Name: value\"",
		    cfg_q(v));
		return -1;
	}
	if (cfg_hook_is_ours(v, n)) {
		cfg_err(p, ln->lineno, "header: %.*s is postern's own (not "
		    "Host, Content-Length, Transfer-Encoding, Connection, "
		    "Keep-Alive, TE, Trailer, Upgrade, Expect, Content-Type, "
		    "Idempotency-Key, X-Postern-*)", (int)n, v);
		return -1;
	}
	h->headers = xreallocarray(h->headers, h->nheaders + 2,
	    sizeof(*h->headers));
	h->headers[h->nheaders++] = xstrdup(v);
	h->headers[h->nheaders] = NULL;
	return 0;
}

static int
cfg_hook_format(struct cfg_parser *p, const struct cfg_line *ln,
    struct config_hook *h, size_t *i)
{
	const char *f = ln->toks[*i + 1].text;

	if (strcmp(f, "json") == 0)
		h->format = CONFIG_HOOK_JSON;
	else if (strcmp(f, "raw") == 0)
		h->format = CONFIG_HOOK_RAW;
	else if (strcmp(f, "template") == 0 && *i + 2 < ln->ntoks &&
	    ln->toks[*i + 2].text[0] != '\0') {
		h->format = CONFIG_HOOK_TEMPLATE;
		free(h->template_path);
		h->template_path = xstrdup(ln->toks[*i + 2].text);
		(*i)++;
	} else {
		cfg_err(p, ln->lineno, "format: json, raw or template "
		    "\"FILE\"");
		return -1;
	}
	return 0;
}

/*
 * One webhook option at toks[*i] (advanced past it): 1 taken, 0 not a
 * webhook option, -1 after an error.
 */
static int
cfg_hook_opt(struct cfg_parser *p, const struct cfg_line *ln,
    struct config_hook *h, size_t *i)
{
	static const struct { const char *opt; int nargs; } opts[] = {
		{ "method", 1 }, { "format", 1 }, { "header", 1 },
		{ "auth", 1 }, { "secret", 1 }, { "ca", 1 },
		{ "no-verify", 0 }, { "timeout", 1 }, { "response-max", 1 },
		{ "text-max", 1 }, { "attachments", 1 }, { "sync", 0 },
		{ NULL, 0 },
	};
	const struct cfg_tok *t = &ln->toks[*i];
	const char *a1;
	size_t k;
	int rc = 0;

	for (k = 0; opts[k].opt != NULL; k++)
		if (!t->quoted && strcmp(t->text, opts[k].opt) == 0)
			break;
	if (opts[k].opt == NULL)
		return 0;
	if (*i + (size_t)opts[k].nargs >= ln->ntoks) {
		cfg_err(p, ln->lineno, "%s: missing argument", opts[k].opt);
		return -1;
	}
	a1 = opts[k].nargs > 0 ? ln->toks[*i + 1].text : "";
	switch (k) {
	case 0:
		if (strcmp(a1, "POST") != 0 && strcmp(a1, "PUT") != 0) {
			cfg_err(p, ln->lineno, "method: POST or PUT");
			return -1;
		}
		free(h->method);
		h->method = xstrdup(a1);
		break;
	case 1:
		rc = cfg_hook_format(p, ln, h, i);
		break;
	case 2:
		rc = cfg_hook_header(p, ln, h, a1);
		break;
	case 3:
	case 4:
		if ((*(k == 3 ? &h->auth : &h->secret) = cfg_agent_table(p, ln,
		    opts[k].opt, &ln->toks[*i + 1])) == NULL)
			rc = -1;
		break;
	case 5:
		free(h->ca_file);
		h->ca_file = xstrdup(a1);
		break;
	case 6:
		h->no_verify = true;
		break;
	case 7:
		rc = cfg_agent_dur(p, ln, "timeout", a1, 1000, 3600000,
		    &h->timeout_ms);
		break;
	case 8:
		rc = cfg_agent_size(p, ln, "response-max", a1, 1, 64u << 20,
		    &h->response_max);
		break;
	case 9:
		rc = cfg_agent_size(p, ln, "text-max", a1, 1, 64u << 20,
		    &h->text_max);
		break;
	case 10:
		rc = cfg_agent_size(p, ln, "attachments", a1, 0, 1u << 30,
		    &h->attach_max);
		break;
	case 11:
		h->sync = true;
		/* "sync DUR": the bound of DATA's wait, when one follows. */
		if (*i + 1 < ln->ntoks && !ln->toks[*i + 1].quoted &&
		    util_parse_duration_ms(ln->toks[*i + 1].text,
		    &h->sync_ms) == 0) {
			if (cfg_agent_dur(p, ln, "sync", ln->toks[*i + 1].text,
			    1000, 600000, &h->sync_ms) == -1)
				return -1;
			(*i)++;
		}
		break;
	}
	*i += 1 + (size_t)opts[k].nargs;
	return rc == -1 ? -1 : 1;
}

/* ---- reply options, taken from the end of the line ---- */

enum { RO_FROM_NAME, RO_PERIOD, RO_TIMEOUT, RO_USER, RO_FUNCTION };
static const char *const cfg_reply_opts[] = { "from-name", "period",
	"timeout", "user", "function", NULL };

/* The reply option toks[i] names (unquoted), or -1. */
static int
cfg_reply_opt_at(const struct cfg_line *ln, size_t i)
{
	if (ln->toks[i].quoted || ln->toks[i].kind != CFG_TOK_WORD)
		return -1;
	for (int k = 0; cfg_reply_opts[k] != NULL; k++)
		if (strcmp(ln->toks[i].text, cfg_reply_opts[k]) == 0)
			return k;
	return -1;
}

/* A control character but tab (0x00-0x1f, 0x7f) in s? */
static bool
cfg_has_ctl(const char *s)
{
	for (; *s != '\0'; s++)
		if (((unsigned char)*s < 0x20 && *s != '\t') || *s == 0x7f)
			return true;
	return false;
}

static int
cfg_reply_opt(struct cfg_parser *p, const struct cfg_line *ln,
    struct config_reply *r, int k, const char *v)
{
	switch (k) {
	case RO_FROM_NAME:
		if (strlen(v) > 200 || cfg_has_ctl(v)) {
			cfg_err(p, ln->lineno, "from-name: one line of at most "
			    "200 bytes, no control characters");
			return -1;
		}
		free(r->from_name);
		r->from_name = xstrdup(v);
		return 0;
	case RO_PERIOD:
		return cfg_agent_dur(p, ln, "period", v, 1000, 365ull * 86400000,
		    &r->period_ms);
	case RO_TIMEOUT:
		return cfg_agent_dur(p, ln, "timeout", v, 1000, 3600000,
		    &r->timeout_ms);
	case RO_USER:
		free(r->user);
		r->user = xstrdup(v);
		return 0;
	default:
		if (!cfg_is_name(v) || strchr(v, '-') != NULL ||
		    strchr(v, '.') != NULL) {
			cfg_err(p, ln->lineno, "function: %s is not a Lua name",
			    cfg_q(v));
			return -1;
		}
		free(r->function);
		r->function = xstrdup(v);
		return 0;
	}
}

/* NULL-terminated copy of the words toks[from..to). */
static char **
cfg_agent_words(const struct cfg_line *ln, size_t from, size_t to)
{
	char **v = xcalloc(to - from + 1, sizeof(*v));

	for (size_t i = from; i < to; i++)
		v[i - from] = xstrdup(ln->toks[i].text);
	return v;
}

/* ---- the statements ---- */

static int
cfg_action_webhook(struct cfg_parser *p, const struct cfg_line *ln,
    struct config_hook **out, size_t i)
{
	/* All but header, which may add several fields. */
	static const char *const once[] = { "method", "format", "auth",
	    "secret", "ca", "no-verify", "timeout", "response-max",
	    "text-max", "attachments", "sync", NULL };
	struct config_hook *h = *out = xcalloc(1, sizeof(*h));
	unsigned seen = 0;
	int rc;

	if (i >= ln->ntoks) {
		cfg_err(p, ln->lineno, "webhook: missing the URL");
		return -1;
	}
	if (cfg_hook_url(p, ln, h, ln->toks[i].text) == -1)
		return -1;
	for (i++; i < ln->ntoks;) {
		if (!ln->toks[i].quoted && !cfg_opt_once(p, ln, "webhook",
		    once, ln->toks[i].text, &seen))
			return -1;
		if ((rc = cfg_hook_opt(p, ln, h, &i)) == -1)
			return -1;
		if (rc == 0) {
			cfg_err(p, ln->lineno, "webhook: unknown option %s "
			    "(method, format, header, auth, secret, ca, "
			    "no-verify, timeout, response-max, text-max, "
			    "attachments, sync)", cfg_q(ln->toks[i].text));
			return -1;
		}
	}
	for (size_t k = 0; h->auth != NULL && k < h->nheaders; k++)
		if (strncasecmp(h->headers[k], "Authorization:", 14) == 0) {
			cfg_err(p, ln->lineno, "webhook: auth sets the "
			    "Authorization header: not both");
			return -1;
		}
	if (h->format == CONFIG_HOOK_RAW && h->attach_max != 0) {
		cfg_err(p, ln->lineno, "webhook: attachments is for format "
		    "json or template");
		return -1;
	}
	return 0;
}

/* The trailing reply options, from the end back; *end_out: where they
 * start.  0, or -1 after an error. */
static int
cfg_reply_tail(struct cfg_parser *p, const struct cfg_line *ln,
    struct config_reply *r, size_t first, size_t *end_out)
{
	size_t end = ln->ntoks;
	unsigned seen = 0;
	int k;

	while (end >= first + 2 && (k = cfg_reply_opt_at(ln, end - 2)) != -1) {
		if (!cfg_opt_once(p, ln, "reply", cfg_reply_opts,
		    ln->toks[end - 2].text, &seen) ||
		    cfg_reply_opt(p, ln, r, k, ln->toks[end - 1].text) == -1)
			return -1;
		end -= 2;
	}
	*end_out = end;
	return 0;
}

static const char cfg_reply_usage[] = "reply text \"FILE\" | reply command "
	"\"PROGRAM\" [ARG...] | reply lua \"FILE\" | reply webhook \"URL\" "
	"[webhook options], then [from-name TEXT] [period DUR] (command: "
	"[timeout DUR] [user U]; lua: [function NAME])";

static int
cfg_action_reply(struct cfg_parser *p, const struct cfg_line *ln,
    struct config_reply **out)
{
	static const char *const kinds[] = { "text", "command", "lua",
	    "webhook", NULL };
	struct config_reply *r = *out = xcalloc(1, sizeof(*r));
	size_t end, k;

	for (k = 0; kinds[k] != NULL && ln->ntoks > 4; k++)
		if (strcmp(ln->toks[3].text, kinds[k]) == 0)
			break;
	if (ln->ntoks <= 4 || kinds[k] == NULL) {
		cfg_err(p, ln->lineno, "usage: %s", cfg_reply_usage);
		return -1;
	}
	r->kind = (enum config_reply_kind)k;
	if (r->kind == CONFIG_REPLY_WEBHOOK) {
		/* Its reply options first, then the webhook's. */
		if (cfg_reply_tail(p, ln, r, 5, &end) == -1)
			return -1;
		struct cfg_line cut = *ln;

		cut.ntoks = end;
		if (cfg_action_webhook(p, &cut, &r->hook, 4) == -1)
			return -1;
		if (r->hook->sync || r->user != NULL || r->function != NULL) {
			cfg_err(p, ln->lineno, "reply webhook: sync, user and "
			    "function are not for it");
			return -1;
		}
		return 0;
	}
	if (cfg_reply_tail(p, ln, r, 5, &end) == -1)
		return -1;
	if ((r->kind != CONFIG_REPLY_COMMAND && end != 5) ||
	    (r->user != NULL && r->kind != CONFIG_REPLY_COMMAND) ||
	    (r->function != NULL && r->kind != CONFIG_REPLY_LUA)) {
		cfg_err(p, ln->lineno, "usage: %s", cfg_reply_usage);
		return -1;
	}
	if (r->kind == CONFIG_REPLY_COMMAND) {
		if (cfg_agent_program(p, ln, "reply command",
		    ln->toks[4].text) == -1)
			return -1;
		r->argv = cfg_agent_words(ln, 4, end);
	} else {
		r->path = xstrdup(ln->toks[4].text);
		if (r->kind == CONFIG_REPLY_LUA && r->function == NULL)
			r->function = xstrdup("reply");
	}
	return 0;
}

static int
cfg_action_pass(struct cfg_parser *p, const struct cfg_line *ln,
    char **out)
{
	const char *to = ln->ntoks == 4 ? ln->toks[3].text : "";
	const char *at = strrchr(to, '@');

	if (at == NULL || at == to || at[1] == '\0' ||
	    strpbrk(to, " \t<>\r\n") != NULL) {
		cfg_err(p, ln->lineno, "pass-through needs one address "
		    "(action NAME pass-through \"user@domain\")");
		return -1;
	}
	*out = xstrdup(to);
	return 0;
}

/*
 * "pipe PROGRAM [ARG...] [user U] [timeout DUR]": the first unquoted
 * "user" or "timeout" after the program starts the options, each given
 * once with its value; a program argument of that name is quoted.
 */
static int
cfg_action_pipe(struct cfg_parser *p, const struct cfg_line *ln,
    struct config_pipe **out)
{
	static const char *const opts[] = { "user", "timeout", NULL };
	static const char usage[] = "usage: pipe \"PROGRAM\" [ARG...] "
	    "[user U] [timeout DUR]";
	struct config_pipe *pp = *out = xcalloc(1, sizeof(*pp));
	size_t end = 4, i;
	unsigned seen = 0;

	if (ln->ntoks < 4 || ln->toks[3].text[0] == '\0') {
		cfg_err(p, ln->lineno, "%s", usage);
		return -1;
	}
	while (end < ln->ntoks && (ln->toks[end].quoted ||
	    (strcmp(ln->toks[end].text, "user") != 0 &&
	    strcmp(ln->toks[end].text, "timeout") != 0)))
		end++;
	for (i = end; i < ln->ntoks; i += 2) {
		const char *o = ln->toks[i].text;
		if (ln->toks[i].quoted || (strcmp(o, "user") != 0 &&
		    strcmp(o, "timeout") != 0)) {
			cfg_err(p, ln->lineno, "pipe: %s after the options "
			    "(program arguments come before user and timeout; "
			    "%s)", cfg_q(o), usage);
			return -1;
		}
		if (!cfg_opt_once(p, ln, "pipe", opts, o, &seen))
			return -1;
		if (i + 1 >= ln->ntoks) {
			cfg_err(p, ln->lineno, "pipe: %s needs a value (a "
			    "program argument of that name is quoted)", o);
			return -1;
		}
		const char *v = ln->toks[i + 1].text;
		if (o[0] == 'u')
			pp->user = xstrdup(v);
		else if (cfg_agent_dur(p, ln, "timeout", v, 1000, 86400000,
		    &pp->timeout_ms) == -1)
			return -1;
	}
	if (cfg_agent_program(p, ln, "pipe", ln->toks[3].text) == -1)
		return -1;
	pp->argv = cfg_agent_words(ln, 3, end);
	return 0;
}

/* "unix:/PATH", "HOST:PORT" or "[IPv6]:PORT" into l. */
static int
cfg_lmtp_spec(struct cfg_parser *p, const struct cfg_line *ln,
    struct config_lmtp *l, const char *spec)
{
	const char *colon = strrchr(spec, ':');
	char *end;
	long port;

	l->spec = xstrdup(spec);
	if (strncmp(spec, "unix:", 5) == 0) {
		if (spec[5] != '/' || strlen(spec + 5) > 100) {
			cfg_err(p, ln->lineno, "lmtp: %s: the socket path must "
			    "be absolute (at most 100 bytes)", cfg_q(spec));
			return -1;
		}
		l->unix_path = xstrdup(spec + 5);
		return 0;
	}
	port = colon != NULL ? strtol(colon + 1, &end, 10) : 0;
	if (colon == NULL || colon == spec || colon[1] == '\0' ||
	    *end != '\0' || port < 1 || port > 65535) {
		cfg_err(p, ln->lineno, "lmtp: %s is not \"unix:/PATH\" or "
		    "\"HOST:PORT\"", cfg_q(spec));
		return -1;
	}
	if (spec[0] == '[' && colon[-1] == ']')
		l->host = xstrndup(spec + 1, (size_t)(colon - spec - 2));
	else
		l->host = xstrndup(spec, (size_t)(colon - spec));
	l->port = (int)port;
	return 0;
}

static int
cfg_action_lmtp(struct cfg_parser *p, const struct cfg_line *ln,
    struct config_lmtp **out)
{
	struct config_lmtp *l = *out = xcalloc(1, sizeof(*l));
	size_t i;

	if (ln->ntoks < 4 || cfg_lmtp_spec(p, ln, l, ln->toks[3].text) == -1) {
		if (ln->ntoks < 4)
			cfg_err(p, ln->lineno, "usage: lmtp \"unix:/PATH\" | "
			    "\"HOST:PORT\" [timeout STEP DUR]...");
		return -1;
	}
	for (i = 4; i + 2 < ln->ntoks &&
	    strcmp(ln->toks[i].text, "timeout") == 0; i += 3) {
		size_t k;

		for (k = 0; k < 6; k++)
			if (strcmp(ln->toks[i + 1].text, cfg_lmtp_steps[k]) ==
			    0)
				break;
		if (k == 6) {
			cfg_err(p, ln->lineno, "timeout: unknown step %s "
			    "(connect, greeting, command, data-init, "
			    "data-block, data-term)",
			    cfg_q(ln->toks[i + 1].text));
			return -1;
		}
		if (cfg_agent_dur(p, ln, "timeout", ln->toks[i + 2].text, 1000,
		    3600000, &l->timeouts_ms[k]) == -1)
			return -1;
	}
	if (i != ln->ntoks) {
		cfg_err(p, ln->lineno, "lmtp: unexpected %s (only \"timeout "
		    "STEP DUR\" options)", cfg_q(ln->toks[i].text));
		return -1;
	}
	return 0;
}

void
cfg_st_action_agent(struct cfg_parser *p, const struct cfg_line *ln,
    enum config_action_kind kind)
{
	struct config *c = cfg_parser_config(p);
	struct config_action a = { .kind = kind };
	const char *name = ln->toks[1].text;
	const struct config_action *old;

	if (ln->toks[1].kind != CFG_TOK_WORD || !cfg_is_name(name)) {
		cfg_err(p, ln->lineno, "action: bad name %s (letters, digits, "
		    "'_', '-', '.')", cfg_q(name));
		return;
	}
	if ((old = config_action_find(c, name)) != NULL) {
		cfg_err(p, ln->lineno, "duplicate action %s (first at line "
		    "%d)", cfg_q(name), old->line);
		return;
	}
	for (size_t i = 3; i < ln->ntoks; i++)
		if (ln->toks[i].kind != CFG_TOK_WORD) {
			cfg_err(p, ln->lineno, "action %s: unexpected "
			    "punctuation", name);
			return;
		}
	switch (kind) {
	case CONFIG_ACTION_WEBHOOK:
		(void)cfg_action_webhook(p, ln, &a.hook, 3);
		break;
	case CONFIG_ACTION_REPLY:
		(void)cfg_action_reply(p, ln, &a.reply);
		break;
	case CONFIG_ACTION_PASS_THROUGH:
		(void)cfg_action_pass(p, ln, &a.pass_to);
		break;
	case CONFIG_ACTION_PIPE:
		(void)cfg_action_pipe(p, ln, &a.pipe);
		break;
	default:
		(void)cfg_action_lmtp(p, ln, &a.lmtp);
		break;
	}
	a.name = xstrdup(name);
	a.line = ln->lineno;
	/* Room for every action line was made before parsing; a bad line
	 * is freed with the config, which fails. */
	c->actions[c->nactions++] = a;
}
