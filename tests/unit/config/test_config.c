/*
 * Unit tests of config/: the lexer, golden error files (data/X.conf gives
 * exactly data/X.err), parsed values, defaults and the range of each limit.
 * Set POSTERN_GOLDEN_UPDATE=1 to rewrite the .err files (then review them).
 */
#include "config/config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "config/config_private.h"
#include "log/log.h"
#include "util/util.h"

static char *
read_all(const char *path)
{
	struct util_buf b = { 0 };
	char chunk[4096];
	size_t n;
	FILE *f = fopen(path, "r");

	if (f == NULL)
		fail_msg("cannot open %s", path);
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		util_buf_add(&b, chunk, n);
	fclose(f);
	util_buf_add(&b, "", 1);
	return b.data;
}

static void
test_lexer(void **state)
{
	static const struct { const char *name, *in, *want; } cases[] = {
		{ "words", "hostname  mail.example\t", "[hostname] [mail.example]" },
		{ "comment", "a b # c d", "[a] [b]" },
		{ "hash in quotes", "greeting \"a # b\"", "[greeting] q[a # b]" },
		{ "escapes", "x \"a\\\"b\\\\c\"", "[x] q[a\"b\\c]" },
		{ "glued", "table t file:\"x y\"", "[table] [t] q[file:x y]" },
		{ "list", "t {a,b ,c}", "[t] { [a] , [b] , [c] }" },
		{ "empty quoted", "x \"\"", "[x] q[]" },
		{ "crlf", "a b\r", "[a] [b]" },
		{ "only comment", "   # nothing", "" },
		{ "unterminated", "greeting \"abc", "!unterminated quoted string" },
		{ "trailing backslash", "x \"abc\\", "!unterminated quoted string" },
		{ "bad escape", "x \"a\\tb\"", "!bad escape \"\\t\" in quoted string (only \\\" and \\\\ are allowed)" },
		{ "control", "x a\001b", "!control character 0x01 outside quotes" },
	};
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct cfg_line ln;
		struct util_buf b = { 0 };
		cfg_lex_line(cases[i].in, strlen(cases[i].in), 7, &ln);
		if (ln.lexerr != NULL)
			util_buf_printf(&b, "!%s", ln.lexerr);
		for (size_t k = 0; k < ln.ntoks; k++) {
			const struct cfg_tok *t = &ln.toks[k];
			if (k > 0)
				util_buf_addstr(&b, " ");
			if (t->kind == CFG_TOK_WORD)
				util_buf_printf(&b, "%s[%s]", t->quoted ? "q" :
				    "", t->text);
			else
				util_buf_addstr(&b, t->kind == CFG_TOK_LBRACE ?
				    "{" : t->kind == CFG_TOK_RBRACE ? "}" : ",");
		}
		util_buf_add(&b, "", 1);
		if (strcmp(b.data, cases[i].want) != 0 || ln.lineno != 7)
			fail_msg("case \"%s\": got '%s', want '%s'",
			    cases[i].name, b.data, cases[i].want);
		util_buf_clear(&b);
		cfg_line_clear(&ln);
	}
}

static void
test_golden(void **state)
{
	static const char *const names[] = { "syntax", "limits", "limits2", "listen", "tls",
	    "defs", "match", "empty", "dups", "good", "agents",
	    "translog", "spool", "ops", "proxy", "refused", "auth" };
	bool update = getenv("POSTERN_GOLDEN_UPDATE") != NULL;
	int failed = 0;

	(void)state;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		char conf[128], errf[128];
		char *errs = NULL;
		snprintf(conf, sizeof(conf), "data/%s.conf", names[i]);
		snprintf(errf, sizeof(errf), "data/%s.err", names[i]);
		struct config *c = config_load(conf, &errs);
		const char *got = errs != NULL ? errs : "";
		if (update) {
			FILE *f = fopen(errf, "w");
			assert_non_null(f);
			fputs(got, f);
			fclose(f);
		}
		char *want = read_all(errf);
		if (strcmp(got, want) != 0) {
			print_error("case \"%s\": got\n%s--- want\n%s---\n",
			    names[i], got, want);
			failed++;
		}
		/* A config comes back exactly when there is no error. */
		if ((c == NULL) != (want[0] != '\0')) {
			print_error("case \"%s\": config %s\n", names[i],
			    c == NULL ? "NULL" : "returned despite errors");
			failed++;
		}
		free(want);
		free(errs);
		config_free(&c);
		assert_null(c);
	}
	if (failed > 0)
		fail_msg("%d golden case(s) differ", failed);
}

static void
test_good_values(void **state)
{
	char *errs = NULL;
	struct config *c = config_load("data/good.conf", &errs);

	(void)state;
	if (c == NULL)
		fail_msg("good.conf: %s", errs);
	assert_string_equal(c->path, "data/good.conf");
	assert_string_equal(c->hostname, "Mail.Example.ORG");
	assert_string_equal(c->spool, "var/my spool");
	assert_string_equal(c->spool_keep, "var/kept");
	assert_int_equal(c->spool_keep_max, 2ULL << 30);
	assert_int_equal(c->spool_log_size, 32ULL << 20);
	assert_string_equal(c->greeting, "postern at your service");
	assert_true(c->pipelining_loose);
	assert_true(c->early_talker_continue);
	assert_true(c->early_talker_replies);
	assert_true(c->log_syslog);
	assert_string_equal(c->log_facility, "local3");
	assert_int_equal(c->log_level, LOG_LVL_DEBUG);
	assert_string_equal(c->translog.dir, "var/translog");
	assert_false(c->translog.commands);
	assert_true(c->translog.replies);
	assert_int_equal(c->translog.data_max, 64 << 10);
	assert_int_equal(c->translog.file_max, 1 << 20);
	assert_int_equal(c->translog.total_max, 10 << 20);

	assert_int_equal(c->nlistens, 3);
	assert_string_equal(c->listens[0].addr, "127.0.0.1");
	assert_int_equal(c->listens[0].port, 2525);
	assert_int_equal(c->listens[0].line, 5);
	assert_string_equal(c->listens[1].addr, "::1");
	assert_string_equal(c->listens[2].addr, "0.0.0.0");
	assert_int_equal(c->listens[2].port, 25);
	assert_false(c->listens[0].proxy_protocol);
	assert_true(c->listens[2].proxy_protocol);
	assert_true(c->listens[2].no_starttls);
	assert_int_equal(c->listens[2].nproxy_from, 2);
	assert_true(util_cidr_contains(&c->listens[2].proxy_from[0],
	    "10.9.8.7"));
	assert_true(util_cidr_contains(&c->listens[2].proxy_from[1],
	    "2001:db8::25"));
	assert_false(util_cidr_contains(&c->listens[2].proxy_from[0],
	    "192.0.2.1"));

	assert_int_equal(c->limits.msg_max, 10 << 20);
	assert_int_equal(c->limits.rcpt_max, 5);
	assert_int_equal(c->limits.line_max, 512);
	assert_int_equal(c->limits.err_max, 1000);
	assert_int_equal(c->limits.idle_ms, 1000);
	assert_int_equal(c->limits.data_idle_ms, 3600000);
	assert_int_equal(c->limits.session_ms, 86400000);
	assert_int_equal(c->limits.conn_max, 1);
	assert_int_equal(c->limits.conn_per_ip_max, 1000000);
	/* "trusted 192.0.2.0/24 2001:db8::7" */
	assert_int_equal(c->ntrusted, 2);
	assert_true(config_is_trusted(c, "192.0.2.200"));
	assert_true(config_is_trusted(c, "2001:db8::7"));
	assert_false(config_is_trusted(c, "127.0.0.1"));
	assert_false(config_is_trusted(c, "2001:db8::8"));
	assert_int_equal(c->limits.shutdown_ms, 0);

	assert_int_equal(c->ntables, 2);
	const struct config_table *users = config_table_find(c, "users");
	assert_non_null(users);
	assert_int_equal(users->kind, CONFIG_TABLE_INLINE);
	assert_string_equal(users->items[0], "alice@example.org");
	assert_string_equal(users->items[1], "Bob@Example.ORG");
	assert_string_equal(users->items[2], "@catch.example");
	assert_null(users->items[3]);
	const struct config_table *al = config_table_find(c, "aliases");
	assert_non_null(al);
	assert_int_equal(al->kind, CONFIG_TABLE_FILE);
	assert_string_equal(al->path, "aliases file.txt");
	assert_null(config_table_find(c, "nosuch"));

	assert_int_equal(c->nactions, 3);
	const struct config_action *local = config_action_find(c, "local");
	assert_non_null(local);
	assert_int_equal(local->kind, CONFIG_ACTION_MAILDIR);
	assert_string_equal(local->path,
	    "var/mail/%{rcpt.domain}/%{rcpt.user}/Maildir");
	const struct config_action *drop = config_action_find(c, "drop");
	assert_int_equal(drop->kind, CONFIG_ACTION_DISCARD);
	assert_null(drop->path);

	assert_int_equal(c->nrules, 5);
	const struct config_rule *r = c->rules;
	assert_int_equal(r[0].nconds, 1);
	assert_int_equal(r[0].conds[0].kind, CONFIG_COND_TO_ADDR);
	assert_string_equal(r[0].conds[0].arg, "Alice@example.org");
	assert_ptr_equal(r[0].action, local);
	assert_int_equal(r[0].line, 26);
	assert_int_equal(r[1].nconds, 2);
	assert_int_equal(r[1].conds[0].kind, CONFIG_COND_TO_ADDR);
	assert_string_equal(r[1].conds[0].arg, "alice@example.org");
	assert_int_equal(r[1].conds[1].kind, CONFIG_COND_FROM_DOMAIN);
	assert_string_equal(r[1].conds[1].arg, "sender.example");
	assert_int_equal(r[2].conds[0].kind, CONFIG_COND_TO_TABLE);
	assert_ptr_equal(r[2].conds[0].table, users);
	assert_int_equal(r[2].conds[1].kind, CONFIG_COND_FROM_TABLE);
	assert_ptr_equal(r[2].conds[1].table, al);
	assert_ptr_equal(r[2].action, config_action_find(c, "box"));
	assert_int_equal(r[3].conds[0].kind, CONFIG_COND_FROM_ADDR);
	assert_int_equal(r[3].conds[1].kind, CONFIG_COND_TO_DOMAIN);
	assert_string_equal(r[3].conds[1].arg, "example.net");
	assert_int_equal(r[4].conds[0].kind, CONFIG_COND_ANY);
	assert_null(r[4].conds[0].arg);
	config_free(&c);
}

static void
test_defaults(void **state)
{
	char *errs = NULL;
	struct config *c = config_parse("mini", "listen 127.0.0.1:25\n"
	    "action a discard\nmatch any action a", &errs);

	(void)state;
	if (c == NULL)
		fail_msg("mini: %s", errs);
	assert_non_null(c->hostname);
	assert_true(c->hostname[0] != '\0');
	assert_string_equal(c->spool, "var/spool");
	assert_null(c->spool_keep);
	assert_int_equal(c->spool_log_size, 64ULL << 20);
	assert_null(c->greeting);
	assert_false(c->log_syslog);
	assert_string_equal(c->log_facility, "mail");
	assert_int_equal(c->log_level, LOG_LVL_INFO);
	assert_null(c->translog.dir);
	assert_true(c->translog.commands && c->translog.replies);
	assert_int_equal(c->translog.data_max, 0);
	assert_int_equal(c->translog.file_max, 16 << 20);
	assert_int_equal(c->translog.total_max, 1 << 30);
	assert_false(c->workers_spread);	/* pack */
	assert_int_equal(c->limits.msg_max, 35 << 20);
	assert_int_equal(c->limits.rcpt_max, 100);
	assert_int_equal(c->limits.line_max, 1000);
	assert_int_equal(c->limits.err_max, 10);
	assert_int_equal(c->limits.idle_ms, 300000);
	assert_int_equal(c->limits.data_idle_ms, 600000);
	assert_int_equal(c->limits.session_ms, 1800000);
	assert_int_equal(c->limits.conn_max, 1000);
	assert_int_equal(c->limits.conn_per_ip_max, 50);
	/* Loopback is trusted unless the config says otherwise. */
	assert_true(config_is_trusted(c, "127.0.0.1"));
	assert_true(config_is_trusted(c, "127.9.8.7"));
	assert_true(config_is_trusted(c, "::1"));
	assert_false(config_is_trusted(c, "192.0.2.1"));
	assert_false(config_is_trusted(c, "::2"));
	assert_int_equal(c->limits.shutdown_ms, 30000);
	assert_int_equal(c->limits.data_rate_min, 500);
	assert_false(c->pipelining_loose);
	assert_false(c->early_talker_continue);
	assert_false(c->early_talker_replies);
	config_free(&c);
	config_free(&c);	/* a second free is harmless */
}

/* Each limit at its bounds: min and max accepted, one beyond refused. */
static void
test_limit_bounds(void **state)
{
	static const struct { const char *name, *val; bool ok; } cases[] = {
		{ "message-size", "1k", true }, { "message-size", "2G", true },
		{ "message-size", "1023", false },
		{ "message-size", "2147483649", false },
		{ "recipients", "1", true }, { "recipients", "100000", true },
		{ "recipients", "0", false }, { "recipients", "100001", false },
		{ "recipients", "1k", false },
		{ "line-length", "512", true }, { "line-length", "65536", true },
		{ "line-length", "511", false },
		{ "line-length", "65537", false },
		{ "errors", "1", true }, { "errors", "1000", true },
		{ "errors", "0", false }, { "errors", "1001", false },
		{ "idle-timeout", "1s", true }, { "idle-timeout", "1h", true },
		{ "idle-timeout", "999ms", false },
		{ "idle-timeout", "3600001ms", false },
		{ "data-timeout", "1s", true }, { "data-timeout", "60m", true },
		{ "data-timeout", "61m", false },
		{ "data-rate", "0", true }, { "data-rate", "100000000", true },
		{ "data-rate", "100000001", false }, { "data-rate", "5k", false },
		{ "session-timeout", "24h", true },
		{ "session-timeout", "1d", true },
		{ "session-timeout", "86401s", false },
		{ "connections", "1000000", true },
		{ "connections", "1000001", false },
		{ "connections-per-ip", "1", true },
		{ "connections-per-ip", "0", false },
		{ "shutdown-grace", "0", true }, { "shutdown-grace", "1h", true },
		{ "shutdown-grace", "3601s", false },
		{ "shutdown-grace", "-1", false },
	};
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *text = xasprintf("listen 127.0.0.1:25\naction a discard\n"
		    "match any action a\nlimit %s %s\n", cases[i].name,
		    cases[i].val);
		char *errs = NULL;
		struct config *c = config_parse("t", text, &errs);
		if ((c != NULL) != cases[i].ok)
			fail_msg("case \"limit %s %s\": got %s, want %s",
			    cases[i].name, cases[i].val, c ? "ok" : errs,
			    cases[i].ok ? "ok" : "an error");
		if (c == NULL && strncmp(errs, "t:4: limit ", 11) != 0)
			fail_msg("case \"limit %s %s\": got '%s'",
			    cases[i].name, cases[i].val, errs);
		free(errs);
		free(text);
		config_free(&c);
	}
}

/*
 * Parse a minimal config plus line (its line 4).  With want_err, that must
 * be the one error (NULL returned); else the config (the caller frees it).
 */
static struct config *
parse_case(const char *line, const char *want_err)
{
	char *text = xasprintf("listen 127.0.0.1:25\naction a discard\n"
	    "match any action a\n%s\n", line);
	char *errs = NULL;
	struct config *c = config_parse("t", text, &errs);

	free(text);
	if (want_err != NULL && (c != NULL || strcmp(errs, want_err) != 0))
		fail_msg("case \"%s\": got '%s'", line, c != NULL ? "ok" : errs);
	if (want_err == NULL && c == NULL)
		fail_msg("case \"%s\": %s", line, errs);
	free(errs);
	return c;
}

/* "tls session-lifetime DUR|off": seconds, 0 for off, 1 h by default. */
static void
test_tls_session_lifetime(void **state)
{
	static const struct {
		const char *line, *err; unsigned want_s;
	} cases[] = {
		{ "# none", NULL, 3600 },
		{ "tls session-lifetime 2h", NULL, 7200 },
		{ "tls session-lifetime 12h", NULL, 43200 },
		{ "tls session-lifetime 1s", NULL, 1 },
		{ "tls session-lifetime off", NULL, 0 },
		{ "tls session-lifetime 13h", "t:4: tls session-lifetime: "
		  "\"13h\" is not off or a duration in whole seconds "
		  "(1s..12h)\n", 0 },
		{ "tls session-lifetime 1500ms", "t:4: tls session-lifetime: "
		  "\"1500ms\" is not off or a duration in whole seconds "
		  "(1s..12h)\n", 0 },
		{ "tls session-lifetime 0", "t:4: tls session-lifetime: "
		  "\"0\" is not off or a duration in whole seconds "
		  "(1s..12h)\n", 0 },
		{ "tls session-lifetime", "t:4: tls session-lifetime: needs "
		  "one value\n", 0 },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct config *c = parse_case(cases[i].line, cases[i].err);

		if (c == NULL)
			continue;
		if (c->tls_session_lifetime_s != cases[i].want_s)
			fail_msg("case \"%s\": got %u", cases[i].line,
			    c->tls_session_lifetime_s);
		config_free(&c);
	}
}

/* "workers N [pack|spread]": the count and how connections go to loops. */
static void
test_workers(void **state)
{
	static const struct {
		const char *line, *err; unsigned n; bool spread;
	} cases[] = {
		{ "workers 1", NULL, 1, false },
		{ "workers 256", NULL, 256, false },
		{ "workers 4 pack", NULL, 4, false },
		{ "workers 4 spread", NULL, 4, true },
		{ "workers 0", "t:4: workers: \"0\" is not a number in 1..256\n",
		  0, false },
		{ "workers 257", "t:4: workers: \"257\" is not a number in "
		  "1..256\n", 0, false },
		{ "workers 4 even", "t:4: workers: \"even\" is not pack or "
		  "spread\n", 0, false },
		{ "workers 4 pack now", "t:4: workers: too many arguments "
		  "(usage: workers N [pack|spread])\n", 0, false },
	};
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct config *c = parse_case(cases[i].line, cases[i].err);
		if (c != NULL) {
			assert_int_equal(c->workers, cases[i].n);
			assert_int_equal(c->workers_spread, cases[i].spread);
		}
		config_free(&c);
	}
}

/* "bind-retry COUNT [INTERVAL]", "pid-file PATH", "metrics listen". */
static void
test_ops(void **state)
{
	static const struct {
		const char *line, *err; unsigned n; uint64_t ms;
		const char *pid;
	} cases[] = {
		{ "", NULL, 6, 5000, NULL },		/* the defaults */
		{ "bind-retry 0", NULL, 0, 5000, NULL },
		{ "bind-retry 1000 10m", NULL, 1000, 600000, NULL },
		{ "bind-retry 3 100ms", NULL, 3, 100, NULL },
		{ "pid-file /run/p.pid", NULL, 6, 5000, "/run/p.pid" },
		{ "bind-retry 1001", "t:4: bind-retry: bad count \"1001\" "
		  "(0..1000)\n", 0, 0, NULL },
		{ "bind-retry -1", "t:4: bind-retry: bad count \"-1\" "
		  "(0..1000)\n", 0, 0, NULL },
		{ "bind-retry 3 99ms", "t:4: bind-retry: bad interval \"99ms\" "
		  "(100ms..10m)\n", 0, 0, NULL },
		{ "bind-retry 3 601s", "t:4: bind-retry: bad interval \"601s\" "
		  "(100ms..10m)\n", 0, 0, NULL },
		{ "bind-retry 3 soon", "t:4: bind-retry: bad interval \"soon\" "
		  "(100ms..10m)\n", 0, 0, NULL },
		{ "bind-retry 3 1s x", "t:4: bind-retry: too many arguments "
		  "(usage: bind-retry COUNT [INTERVAL])\n", 0, 0, NULL },
		{ "pid-file \"\"", "t:4: pid-file: empty path\n", 0, 0, NULL },
		{ "metrics listen 0.0.0.0:9925", "t:4: metrics listen: 0.0.0.0 is "
		  "not a loopback address: add \"public\" to serve metrics to "
		  "other hosts\n", 0, 0, NULL },
		{ "metrics listen [::]:9925", "t:4: metrics listen: :: is not a "
		  "loopback address: add \"public\" to serve metrics to other "
		  "hosts\n", 0, 0, NULL },
		{ "metrics listen localhost:80", "t:4: metrics listen: "
		  "\"localhost:80\" is not ADDR:PORT with a numeric address "
		  "(like 127.0.0.1:2525 or [::1]:2525)\n", 0, 0, NULL },
		{ "metrics listen 127.0.0.1:1 public extra", "t:4: metrics: too "
		  "many arguments (usage: metrics listen [ADDR:PORT] [public])\n",
		  0, 0, NULL },
		{ "metrics serve", "t:4: metrics: usage: metrics listen "
		  "[ADDR:PORT] [public]\n", 0, 0, NULL },
	};
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct config *c = parse_case(cases[i].line, cases[i].err);
		if (c != NULL) {
			assert_int_equal(c->bind_retries, cases[i].n);
			assert_int_equal(c->bind_retry_ms, cases[i].ms);
			if (cases[i].pid == NULL)
				assert_null(c->pid_file);
			else
				assert_string_equal(c->pid_file, cases[i].pid);
		}
		config_free(&c);
	}
	static const struct {
		const char *line, *addr; int port;
	} metrics[] = {
		{ "", NULL, 0 },
		{ "metrics listen", "127.0.0.1", 9925 },
		{ "metrics listen [::1]:9100", "::1", 9100 },
		{ "metrics listen 127.0.0.2:9100", "127.0.0.2", 9100 },
		{ "metrics listen 0.0.0.0:9100 public", "0.0.0.0", 9100 },
		{ "metrics listen public", "127.0.0.1", 9925 },
	};
	for (size_t i = 0; i < sizeof(metrics) / sizeof(metrics[0]); i++) {
		struct config *c = parse_case(metrics[i].line, NULL);
		if (metrics[i].addr == NULL)
			assert_null(c->metrics_addr);
		else {
			assert_string_equal(c->metrics_addr, metrics[i].addr);
			assert_int_equal(c->metrics_port, metrics[i].port);
		}
		config_free(&c);
	}
}

/*
 * Lines refused with one FILE:LINE message: punctuation where a word must
 * be (no statement may look at it as text first), options given twice or
 * contradicting each other, host names and match domains and addresses
 * that are not well formed.
 */
static void
test_refused_lines(void **state)
{
	static const struct { const char *line, *err; } cases[] = {
		{ "metrics listen }", "t:4: metrics: unexpected '}' (usage: "
		  "metrics listen [ADDR:PORT] [public])\n" },
		{ "metrics listen 127.0.0.1:9925 ,", "t:4: metrics: unexpected "
		  "',' (usage: metrics listen [ADDR:PORT] [public])\n" },
		{ "metrics listen ;", "t:4: metrics: unexpected ';' (usage: "
		  "metrics listen [ADDR:PORT] [public])\n" },
		{ "table t , file:x.txt", "t:4: table t: unexpected ',' (usage: "
		  "table NAME { key, ... } | table NAME KIND:ARG [OPTIONS])\n" },
		{ "table t } { a }", "t:4: table t: unexpected '}' (usage: "
		  "table NAME { key, ... } | table NAME KIND:ARG [OPTIONS])\n" },
		{ "table t ;", "t:4: table t: unexpected ';' (usage: table NAME "
		  "{ key, ... } | table NAME KIND:ARG [OPTIONS])\n" },
		{ "listen 127.0.0.1:26 nomail nomail", "t:4: listen: nomail "
		  "given twice\n" },
		{ "listen 127.0.0.1:26 tls auth tls", "t:4: listen: tls given "
		  "twice\n" },
		{ "listen 127.0.0.1:26 auth auth-plaintext", "t:4: listen: auth "
		  "and auth-plaintext: give one (auth-plaintext offers AUTH "
		  "before TLS too)\n" },
		{ "transaction-log d commands replies", "t:4: transaction-log: "
		  "commands and replies: give one, or neither to log both "
		  "sides\n" },
		{ "transaction-log d data data", "t:4: transaction-log: data "
		  "given twice\n" },
		{ "transaction-log d max-file 8k max-file 16k", "t:4: "
		  "transaction-log: max-file given twice\n" },
		{ "table t passwd pool 2 pool 3", "t:4: table t: pool given "
		  "twice\n" },
		{ "table t redis:127.0.0.1:6379 set set", "t:4: table t: set "
		  "given twice\n" },
		{ "action p pipe \"/bin/cat\" timeout", "t:4: pipe: timeout "
		  "needs a value (a program argument of that name is quoted)\n" },
		{ "action p pipe \"/bin/cat\" timeout 5s timeout 6s", "t:4: "
		  "pipe: timeout given twice\n" },
		{ "action p pipe \"/bin/cat\" user a user b", "t:4: pipe: user "
		  "given twice\n" },
		{ "action p pipe \"/bin/cat\" user a \"-x\"", "t:4: pipe: \"-x\" "
		  "after the options (program arguments come before user and "
		  "timeout; usage: pipe \"PROGRAM\" [ARG...] [user U] [timeout "
		  "DUR])\n" },
		{ "action w webhook \"http://127.0.0.1/\" timeout 5s timeout 6s",
		  "t:4: webhook: timeout given twice\n" },
		{ "action r relay \"smtp://127.0.0.1\" helo a.example helo "
		  "b.example", "t:4: helo given twice\n" },
		{ "hostname .", "t:4: hostname: \".\" has an empty label (a '.' "
		  "at either end, or two together)\n" },
		{ "hostname a..b", "t:4: hostname: \"a..b\" has an empty label "
		  "(a '.' at either end, or two together)\n" },
		{ "hostname mail.example.", "t:4: hostname: \"mail.example.\" "
		  "has an empty label (a '.' at either end, or two together)\n" },
		{ "hostname -x-", "t:4: hostname: \"-x-\" has a label that "
		  "starts or ends with '-'\n" },
		{ "hostname a-.example", "t:4: hostname: \"a-.example\" has a "
		  "label that starts or ends with '-'\n" },
		{ "hostname mail_1.example", "t:4: hostname: \"mail_1.example\" "
		  "has a character other than letters, digits, '-' and '.'\n" },
		{ "hostname aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		  "aaaaaaaaa.org", "t:4: hostname: \"aaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...\" has a label longer "
		  "than 63 octets\n" },
		{ "match to domain *.example.org action a", "t:4: match: to "
		  "domain \"*.example.org\": no wildcards; write .example.org "
		  "to match every domain below example.org\n" },
		{ "match to domain \"exa mple.org\" action a", "t:4: match: to "
		  "domain \"exa mple.org\" has a character other than letters, "
		  "digits, '-', '.' and UTF-8\n" },
		{ "match to domain example..org action a", "t:4: match: to "
		  "domain \"example..org\" has an empty label (a '.' at either "
		  "end, or two together)\n" },
		{ "match from domain ..example.org action a", "t:4: match: from "
		  "domain \"..example.org\" after its leading '.' has an "
		  "empty label (a '.' at either end, or two together)\n" },
		{ "match to \"a@@b.org\" action a", "t:4: match: to \"a@@b.org\": "
		  "the domain \"@b.org\" has a character other than letters, "
		  "digits, '-', '.' and UTF-8 (expected domain D, \"user@domain\" "
		  "or <table>)\n" },
		{ "match to \"a..b@b.org\" action a", "t:4: match: to "
		  "\"a..b@b.org\": the local part is not letters, digits, "
		  "!#$%&'*+-/=?^_`{|}~ and single dots, nor a \"quoted string\", "
		  "followed by one '@' (expected domain D, \"user@domain\" or "
		  "<table>)\n" },
	};
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct config *c = parse_case(cases[i].line, cases[i].err);
		config_free(&c);
	}
	/* The longest names are fine; one octet more is refused by length. */
	char host[300];
	memset(host, 'a', 253);
	for (size_t k = 63; k < 253; k += 64)
		host[k] = '.';
	strcpy(host + 253, "");
	char *line = xasprintf("hostname %s", host);
	struct config *c = parse_case(line, NULL);
	assert_string_equal(c->hostname, host);
	config_free(&c);
	free(line);
	memset(host, 'a', 254);
	host[254] = '\0';
	line = xasprintf("hostname %s", host);
	char *want = xasprintf("t:4: hostname: \"%.64s...\" is longer than "
	    "253 octets\n", host);
	c = parse_case(line, want);
	config_free(&c);
	free(line);
	free(want);
}

/* A match domain, address and pipe line that pass, as they are kept. */
static void
test_match_forms(void **state)
{
	static const struct { const char *line, *arg; } cases[] = {
		{ "match to domain .Example.ORG action a", ".example.org" },
		/* Domains are held as A-labels (RFC 5891 5.4). */
		{ "match from domain b\xc3\xbc" "cher.example action a",
		  "xn--bcher-kva.example" },
		{ "match to domain .B\xc3\x9c" "CHER.example action a",
		  ".xn--bcher-kva.example" },
		{ "match to \"J\xc3\xb6rg@b\xc3\xbc" "cher.example\" action a",
		  "J\xc3\xb6rg@xn--bcher-kva.example" },
		{ "match to \"\\\"a b\\\"@Example.org\" action a",
		  "\"a b\"@example.org" },
		{ "match to \"first.last+tag@example.org\" action a",
		  "first.last+tag@example.org" },
	};
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct config *c = parse_case(cases[i].line, NULL);
		assert_int_equal(c->nrules, 2);
		assert_string_equal(c->rules[1].conds[0].arg, cases[i].arg);
		config_free(&c);
	}
	/* A program argument named like an option is quoted. */
	struct config *c = parse_case("action p pipe \"/bin/echo\" \"timeout\" "
	    "- user nobody timeout 5s", NULL);
	const struct config_action *a = config_action_find(c, "p");
	assert_string_equal(a->pipe->argv[1], "timeout");
	assert_string_equal(a->pipe->argv[2], "-");
	assert_null(a->pipe->argv[3]);
	assert_string_equal(a->pipe->user, "nobody");
	assert_int_equal(a->pipe->timeout_ms, 5000);
	config_free(&c);
}

/* "log file PATH [size SIZE [count N]]" and "log format text|json". */
static void
test_log_statements(void **state)
{
	static const struct {
		const char *line, *err, *file; uint64_t size; unsigned keep;
		bool json;
	} cases[] = {
		{ "log format json", NULL, NULL, 0, 5, true },
		{ "log format text", NULL, NULL, 0, 5, false },
		{ "log file /var/log/p.log", NULL, "/var/log/p.log", 0, 5, false },
		{ "log file p.log size 10M", NULL, "p.log", 10 << 20, 5, false },
		{ "log file p.log size 64k count 0", NULL, "p.log", 65536, 0,
		  false },
		{ "log format xml", "t:4: log format: \"xml\" is not text or "
		  "json\n", NULL, 0, 0, false },
		{ "log file p.log size 1k", "t:4: log file: expected size SIZE "
		  "(64k..1T) after the path, not \"1k\"\n", NULL, 0,
		  0, false },
		{ "log file p.log count 3", "t:4: log file: expected size SIZE "
		  "(64k..1T) after the path, not \"count\"\n", NULL, 0,
		  0, false },
		{ "log file p.log size 1M count 101", "t:4: log file: expected "
		  "count N (0..100) after the size, not \"101\"\n",
		  NULL, 0, 0, false },
		{ "log file p.log size", "t:4: log file: usage: log file PATH "
		  "[size SIZE [count N]]\n", NULL, 0, 0, false },
		{ "log file \"\"", "t:4: log file: empty path\n", NULL, 0, 0,
		  false },
	};
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct config *c = parse_case(cases[i].line, cases[i].err);
		if (c != NULL) {
			if (cases[i].file == NULL)
				assert_null(c->log_file);
			else
				assert_string_equal(c->log_file, cases[i].file);
			assert_int_equal(c->log_file_size, cases[i].size);
			assert_int_equal(c->log_file_keep, cases[i].keep);
			assert_int_equal(c->log_json, cases[i].json);
		}
		config_free(&c);
	}
	/* One destination: a file after syslog is a duplicate. */
	struct config *c = parse_case("log syslog\nlog file p.log",
	    "t:5: duplicate log destination (first at line 4)\n");
	config_free(&c);
}

/*
 * True when the manual documents name: a heading line of the scdoc source
 * (it starts with '*', not indented) holds "*NAME*" or "*NAME " (bold).
 */
static bool
man_documents(const char *man, const char *name)
{
	char *bold = xasprintf("*%s*", name), *open = xasprintf("*%s ", name);
	bool found = false;

	for (const char *l = man; *l != '\0' && !found; ) {
		const char *end = strchr(l, '\n');
		size_t len = end != NULL ? (size_t)(end - l) : strlen(l);
		char *line = xstrndup(l, len);
		found = line[0] == '*' && (strstr(line, bold) != NULL ||
		    strstr(line, open) != NULL);
		free(line);
		l += len + (end != NULL);
	}
	free(bold);
	free(open);
	return found;
}

/* Adds " PREFIXNAME" to missing when the manual has no entry for it. */
static void
man_check(const char *man, const char *prefix, const char *name,
    struct util_buf *missing)
{
	char *full = xasprintf("%s%s", prefix, name);

	if (!man_documents(man, full))
		util_buf_printf(missing, " \"%s\"", full);
	free(full);
}

/*
 * Every keyword the parser knows, every limit and every queue setting has
 * its entry in postern.conf(5): the lists come from the parser's own
 * tables, so a new statement without a manual entry fails here.
 */
static void
test_manual_documents_every_statement(void **state)
{
	char *man = read_all("../../../man/postern.conf.5.scd");
	struct util_buf missing = { 0 };
	const char *w;
	size_t n = 0;

	(void)state;
	for (size_t i = 0; (w = config_keyword(i)) != NULL; i++, n++)
		man_check(man, "", w, &missing);
	for (size_t i = 0; (w = config_limit_name(i)) != NULL; i++, n++)
		man_check(man, "limit ", w, &missing);
	for (size_t i = 0; (w = config_queue_setting(i)) != NULL; i++, n++)
		man_check(man, "queue ", w, &missing);
	assert_true(n > 40);		/* the lists are not empty */
	assert_false(man_documents(man, "frobnicate"));
	free(man);
	if (missing.len > 0) {
		print_error("postern.conf(5) has no entry for:%.*s\n",
		    (int)missing.len, missing.data);
		util_buf_clear(&missing);
		fail();
	}
	util_buf_clear(&missing);
}

/* An upstream's options and a proxy listener's references, as parsed. */
static void
test_proxy_values(void **state)
{
	const char *text = "table by-sni file:by-sni\n"
	    "upstream back smtp+starttls://10.0.0.5 no-verify timeout "
	    "greeting 10s sni pass proxy-protocol v1\n"
	    "upstream named smtp+tls://[::1]:4650 sni Mail.Example.org\n"
	    "tls self-signed certs\n"
	    "listen 127.0.0.1:25 proxy back proxy-sni <by-sni> auth\n"
	    "listen 127.0.0.1:26 proxy smtp://127.0.0.1:2600 proxy-rcpt "
	    "<by-sni>\n"
	    "listen 127.0.0.1:27\n"
	    "action a discard\nmatch any action a\n";
	char *errs = NULL;
	struct config *c = config_parse("t", text, &errs);
	const struct config_upstream *b, *n, *u;

	(void)state;
	if (c == NULL)
		fail_msg("%s", errs);
	assert_int_equal(c->nupstreams, 3);
	b = config_upstream_find(c, "back");
	n = config_upstream_find(c, "named");
	u = config_upstream_find(c, "smtp://127.0.0.1:2600");
	assert_non_null(b);
	assert_non_null(n);
	assert_non_null(u);
	assert_int_equal(b->relay.tls, CONFIG_RELAY_STARTTLS);
	assert_int_equal(b->relay.port, 587);
	assert_true(b->relay.no_verify);
	assert_int_equal(b->relay.timeouts_ms[1], 10000);
	assert_true(b->sni_pass);
	assert_null(b->sni);
	assert_int_equal(b->proxy_protocol, 1);
	assert_int_equal(n->relay.tls, CONFIG_RELAY_TLS);
	assert_string_equal(n->relay.host, "::1");
	assert_int_equal(n->relay.port, 4650);
	assert_string_equal(n->sni, "mail.example.org");
	assert_int_equal(n->proxy_protocol, 0);
	assert_int_equal(u->relay.tls, CONFIG_RELAY_PLAIN);
	assert_int_equal(u->relay.port, 2600);
	assert_ptr_equal(c->listens[0].proxy, b);
	assert_ptr_equal(c->listens[0].proxy_sni, config_table_find(c,
	    "by-sni"));
	assert_true(c->listens[0].auth);
	assert_ptr_equal(c->listens[1].proxy, u);
	assert_ptr_equal(c->listens[1].proxy_rcpt, c->listens[0].proxy_sni);
	assert_null(c->listens[2].proxy);
	config_free(&c);

	/* Only proxy listeners: nothing is routed, no match rule needed. */
	c = config_parse("t", "listen 127.0.0.1:25 proxy smtp://10.0.0.5\n",
	    &errs);
	if (c == NULL)
		fail_msg("%s", errs);
	config_free(&c);
	c = config_parse("t", "listen 127.0.0.1:25 proxy smtp://10.0.0.5\n"
	    "listen 127.0.0.1:26\n", &errs);
	assert_null(c);
	assert_non_null(strstr(errs, "t:2: no match rule"));
	free(errs);
}

static void
test_default_file(void **state)
{
	char *errs = NULL;
	struct config *c = config_load("../../../etc/postern.conf", &errs);

	(void)state;
	if (c == NULL)
		fail_msg("etc/postern.conf: %s", errs);
	assert_string_equal(c->hostname, "localhost");
	/* Relative to etc/: var/ at the top of the source tree. */
	assert_string_equal(c->spool, "../var/spool");
	assert_int_equal(c->nlistens, 1);
	assert_string_equal(c->listens[0].addr, "127.0.0.1");
	assert_int_equal(c->listens[0].port, 2525);
	assert_false(c->log_syslog);
	assert_int_equal(c->nrules, 1);
	assert_int_equal(c->rules[0].conds[0].kind, CONFIG_COND_TO_DOMAIN);
	assert_string_equal(c->rules[0].conds[0].arg, "localhost");
	assert_string_equal(c->rules[0].action->path,
	    "../var/mail/%{rcpt.user}/Maildir");
	/* The limits written out there are the defaults. */
	char *derrs = NULL;
	struct config *d = config_parse("d", "listen 127.0.0.1:25\n"
	    "action a discard\nmatch any action a\n", &derrs);
	assert_non_null(d);
	assert_memory_equal(&c->limits, &d->limits, sizeof(c->limits));
	config_free(&d);
	config_free(&c);
}

static void
test_load_errors(void **state)
{
	char *errs = NULL;

	(void)state;
	assert_null(config_load("data/no-such-file.conf", &errs));
	assert_string_equal(errs, "data/no-such-file.conf:0: cannot open: "
	    "No such file or directory\n");
	free(errs);
	/* A NUL byte in a file is reported with its line. */
	char path[] = "/tmp/postern-config-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd != -1);
	assert_int_equal(write(fd, "listen 127.0.0.1:25\nhost\0name x\n", 32),
	    32);
	close(fd);
	assert_null(config_load(path, &errs));
	char *want = xasprintf("%s:2: NUL byte in the file\n", path);
	assert_string_equal(errs, want);
	free(want);
	free(errs);
	unlink(path);
	/* Reading stops at the first NUL: /dev/zero is one line long. */
	assert_null(config_load("/dev/zero", &errs));
	assert_string_equal(errs, "/dev/zero:1: NUL byte in the file\n");
	free(errs);
	/* A file one byte over CONFIG_FILE_MAX is refused where it passes. */
	strcpy(path, "/tmp/postern-config-XXXXXX");
	fd = mkstemp(path);
	assert_true(fd != -1);
	char *big = xmalloc(CONFIG_FILE_MAX + 1);
	memset(big, '#', CONFIG_FILE_MAX + 1);
	for (size_t k = 1023; k < CONFIG_FILE_MAX; k += 1024)
		big[k] = '\n';
	assert_int_equal(write(fd, big, CONFIG_FILE_MAX + 1),
	    CONFIG_FILE_MAX + 1);
	close(fd);
	free(big);
	assert_null(config_load(path, &errs));
	want = xasprintf("%s:%u: the file is larger than 16 MiB, the most a "
	    "configuration may be\n", path, CONFIG_FILE_MAX / 1024 + 1);
	assert_string_equal(errs, want);
	free(want);
	free(errs);
	unlink(path);
	/* config_parse with no text at all: both missing pieces reported. */
	assert_null(config_parse("empty", "", &errs));
	assert_string_equal(errs, "empty:1: no listen statement (add one, "
	    "like \"listen 127.0.0.1:2525\")\nempty:1: no match rule, so no "
	    "mail can be accepted (add one, like \"match to domain "
	    "example.org action NAME\")\n");
	free(errs);
}

/* The values of the webhook, reply, pass-through, pipe and lmtp lines. */
static void
test_agent_values(void **state)
{
	static const char text[] =
	    "listen 127.0.0.1:2525\n"
	    "table keys file:keys.txt\n"
	    "action hook webhook \"https://api.example/v1\" method PUT format "
	    "template \"t.json\" header \"X-App: p\" secret <keys> timeout "
	    "10s attachments 2M sync 20s\n"
	    "action plain webhook http://127.0.0.1:1/x sync\n"
	    "action weather reply command \"/usr/bin/forecast\" NYC \"timeout\" "
	    "period 12h from-name \"NYC Weather\" user nobody\n"
	    "action scripted reply lua \"a.lua\"\n"
	    "action asked reply webhook http://127.0.0.1:9/a format json "
	    "period 1h\n"
	    "action desk pass-through help@desk.example\n"
	    "action lda pipe /usr/bin/lda -d \"%{rcpt.user}\" user vmail "
	    "timeout 2m\n"
	    "action dove lmtp \"unix:/run/dovecot/lmtp\" timeout data-term 1m\n"
	    "action dove2 lmtp \"[::1]:24\"\n"
	    "match any action hook\n";
	char *errs = NULL;
	struct config *c = config_parse("t", text, &errs);
	const struct config_action *a;

	(void)state;
	if (c == NULL)
		fail_msg("%s", errs);
	a = config_action_find(c, "hook");
	assert_int_equal(a->kind, CONFIG_ACTION_WEBHOOK);
	assert_string_equal(a->hook->method, "PUT");
	assert_int_equal(a->hook->format, CONFIG_HOOK_TEMPLATE);
	assert_string_equal(a->hook->template_path, "t.json");
	assert_string_equal(a->hook->headers[0], "X-App: p");
	assert_null(a->hook->headers[1]);
	assert_non_null(a->hook->secret);
	assert_int_equal(a->hook->timeout_ms, 10000);
	assert_int_equal(a->hook->attach_max, 2u << 20);
	assert_true(a->hook->sync);
	assert_int_equal(a->hook->sync_ms, 20000);
	a = config_action_find(c, "plain");
	assert_string_equal(a->hook->method, "POST");
	assert_int_equal(a->hook->format, CONFIG_HOOK_JSON);
	assert_int_equal(a->hook->sync_ms, 30000);
	a = config_action_find(c, "weather");
	assert_int_equal(a->reply->kind, CONFIG_REPLY_COMMAND);
	/* A quoted word is an argument, not an option. */
	assert_string_equal(a->reply->argv[0], "/usr/bin/forecast");
	assert_string_equal(a->reply->argv[1], "NYC");
	assert_string_equal(a->reply->argv[2], "timeout");
	assert_null(a->reply->argv[3]);
	assert_int_equal(a->reply->period_ms, 12 * 3600000);
	assert_string_equal(a->reply->from_name, "NYC Weather");
	assert_string_equal(a->reply->user, "nobody");
	a = config_action_find(c, "scripted");
	assert_string_equal(a->reply->function, "reply");
	a = config_action_find(c, "asked");
	assert_int_equal(a->reply->kind, CONFIG_REPLY_WEBHOOK);
	assert_string_equal(a->reply->hook->url, "http://127.0.0.1:9/a");
	assert_int_equal(a->reply->period_ms, 3600000);
	assert_string_equal(config_action_find(c, "desk")->pass_to,
	    "help@desk.example");
	a = config_action_find(c, "lda");
	assert_string_equal(a->pipe->argv[2], "%{rcpt.user}");
	assert_string_equal(a->pipe->user, "vmail");
	assert_int_equal(a->pipe->timeout_ms, 120000);
	a = config_action_find(c, "dove");
	assert_string_equal(a->lmtp->unix_path, "/run/dovecot/lmtp");
	assert_int_equal(a->lmtp->timeouts_ms[5], 60000);
	a = config_action_find(c, "dove2");
	assert_string_equal(a->lmtp->host, "::1");
	assert_int_equal(a->lmtp->port, 24);
	config_free(&c);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lexer),
		cmocka_unit_test(test_golden),
		cmocka_unit_test(test_agent_values),
		cmocka_unit_test(test_proxy_values),
		cmocka_unit_test(test_good_values),
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_limit_bounds),
		cmocka_unit_test(test_workers),
		cmocka_unit_test(test_tls_session_lifetime),
		cmocka_unit_test(test_ops),
		cmocka_unit_test(test_log_statements),
		cmocka_unit_test(test_manual_documents_every_statement),
		cmocka_unit_test(test_default_file),
		cmocka_unit_test(test_load_errors),
		cmocka_unit_test(test_refused_lines),
		cmocka_unit_test(test_match_forms),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
