/*
 * Unit tests of the scripted handlers of chain/: "lua" (every verdict at
 * every stage, shared state, facts, headers and the message at eom, the
 * sandbox, the instruction budget and memory cap, config errors) and
 * "program" (exit codes, timeout, stdin, environment, argv without a
 * shell).  Scripts and programs are written to a fresh temporary folder.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <event2/event.h>
#include <event2/thread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "chain/chain.h"
#include "config/config.h"
#include "util/util.h"

#include "harness.h"

static char trace[64];		/* the harness resets it */
static char tmpdir[64];

#include "harness.c"

/* Write a file under tmpdir; returns its path (caller frees). */
static char *
put_file(const char *name, const char *text, mode_t mode)
{
	char *path = xasprintf("%s/%s", tmpdir, name);
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	chmod(path, mode);
	return path;
}

static const char msg_text[] =
    "From: a@example.org\nSubject: spam offer\n\nline one\nline two\n";

/* Walk a session from connect to st; every earlier stage must pass. */
static struct chain_result
walk_to(struct h *h, enum smtp_stage st, const char *label)
{
	static const enum smtp_stage order[] = { SMTP_STAGE_CONNECT,
	    SMTP_STAGE_HELO, SMTP_STAGE_MAIL, SMTP_STAGE_RCPT,
	    SMTP_STAGE_DATA, SMTP_STAGE_HEADER, SMTP_STAGE_EOM,
	    SMTP_STAGE_QUIT };
	static const char *const args[] = { "", "h.example",
	    "s@example.org", "r@example.net", "", "", "", "" };
	struct chain_result r = { 0 };

	for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
		if (order[i] == SMTP_STAGE_HEADER) {
			/* the header chain's verdict shows at eom */
			chain_session_body(h->cs, msg_text,
			    sizeof(msg_text) - 1);
			if (st == SMTP_STAGE_HEADER)
				st = SMTP_STAGE_EOM;
			continue;
		}
		if (order[i] == SMTP_STAGE_EOM) {
			char *p = put_file("msg", msg_text, 0644);
			chain_session_set_message_file(h->cs, p, 0);
			free(p);
		}
		struct smtp_event ev = { .stage = order[i], .arg = args[i],
		    .esmtp = true, .size = sizeof(msg_text) - 1 };
		r = h_run_ev(h, &ev, NULL);
		if (order[i] == SMTP_STAGE_RCPT && r.verdict == SMTP_OK)
			chain_session_rcpt_accepted(h->cs, args[i]);
		if (order[i] == st)
			return r;
		if (strcmp(h_show(&r), "ok") != 0)
			fail_msg("case \"%s\": stage %s before the one tested "
			    "gave %s", label, chain_stage_name(order[i]),
			    h_show(&r));
	}
	fail_msg("case \"%s\": stage not reached", label);
	return r;
}

/* ----- lua ----- */

struct lua_vcase {
	const char	*ret;		/* the Lua expression returned */
	const char	*want;		/* prefix of h_show() */
	bool		 tx_only;	/* discard/quarantine */
	int		 disp;		/* want disposition, or -1 */
	const char	*kv;		/* "tx.k=v" / "session.k=v" or NULL */
};

static const struct lua_vcase lua_vcases[] = {
	{ "nil", "ok", false, -1, NULL },
	{ "\"continue\"", "ok", false, -1, NULL },
	{ "\"accept\"", "ok", false, -1, NULL },
	{ "{\"reject\", 550, \"5.7.1\", \"no thanks\"}",
	    "550 5.7.1 no thanks", false, -1, NULL },
	{ "{\"reject\", 451, \"4.7.1\", \"later %{client.ip}\"}",
	    "451 4.7.1 later 192.0.2.7", false, -1, NULL },
	{ "{\"reject\", 250, \"2.0.0\", \"bad\"}", "451 4.3.0", false, -1,
	    NULL },
	{ "{\"delay\", 30}", "ok", false, -1, NULL },
	{ "\"disconnect\"", "close 421", false, -1, NULL },
	{ "{\"disconnect\", 521, \"5.3.2\", \"gone\"}", "close 521 5.3.2 gone",
	    false, -1, NULL },
	{ "\"discard\"", "ok", true, CHAIN_DISP_DISCARD, NULL },
	{ "{\"quarantine\", \"quar\"}", "ok", true, CHAIN_DISP_QUARANTINE,
	    NULL },
	{ "{\"tag\", \"k\", \"v1\", \"session\"}", "ok", false, -1,
	    "session.k=v1" },
	{ "{\"reject\", 550, \"5.7.1\", \"caf\\195\\169\"}", "451 4.3.0",
	    false, -1, NULL },
	{ "{\"reject\", 550, \"5.7.1\", \"a\\r\\n250 ok\"}", "451 4.3.0",
	    false, -1, NULL },
	{ "42", "451 4.3.0", false, -1, NULL },
	{ "\"bogus\"", "451 4.3.0", false, -1, NULL },
};

static void
test_lua_verdicts(void **state)
{
	static const enum smtp_stage stages[] = { SMTP_STAGE_CONNECT,
	    SMTP_STAGE_HELO, SMTP_STAGE_MAIL, SMTP_STAGE_RCPT,
	    SMTP_STAGE_DATA, SMTP_STAGE_HEADER, SMTP_STAGE_EOM,
	    SMTP_STAGE_QUIT };
	int failed = 0;

	(void)state;
	for (size_t s = 0; s < sizeof(stages) / sizeof(stages[0]); s++)
		for (size_t i = 0; i < sizeof(lua_vcases) /
		    sizeof(lua_vcases[0]); i++) {
			const struct lua_vcase *c = &lua_vcases[i];
			const char *sn = chain_stage_name(stages[s]);
			bool tx = stages[s] >= SMTP_STAGE_MAIL &&
			    stages[s] <= SMTP_STAGE_EOM;
			if (c->tx_only && !tx)
				continue;
			char *src = xasprintf("function %s(f, st)\n"
			    "  return %s\nend\n", sn, c->ret);
			char *path = put_file("v.lua", src, 0644);
			char *chains = xasprintf("on %s { lua \"%s\" }\n", sn,
			    path);
			char label[160];
			snprintf(label, sizeof(label), "%s returns %s", sn,
			    c->ret);
			struct h h;
			h_open(&h, chains);
			struct chain_result r = walk_to(&h, stages[s], label);
			const char *got = h_show(&r);
			const char *action;
			if (strncmp(got, c->want, strlen(c->want)) != 0) {
				print_error("case \"%s\": got %s, want %s\n",
				    label, got, c->want);
				failed++;
			} else if (c->disp != -1 && (int)
			    chain_session_disposition(h.cs, &action) !=
			    c->disp) {
				print_error("case \"%s\": disposition %d, "
				    "want %d\n", label, (int)
				    chain_session_disposition(h.cs, &action),
				    c->disp);
				failed++;
			} else if (c->kv != NULL) {
				char buf[64];
				const char *eq = strchr(c->kv, '=');
				snprintf(buf, sizeof(buf), "%.*s",
				    (int)(eq - c->kv), c->kv);
				const char *v = chain_session_get(h.cs, buf,
				    buf, sizeof(buf));
				if (v == NULL || strcmp(v, eq + 1) != 0) {
					print_error("case \"%s\": %s is %s\n",
					    label, c->kv, v != NULL ? v :
					    "unset");
					failed++;
				}
			}
			/* (the header chain's accept is not carried to eom) */
			if (strcmp(c->ret, "\"accept\"") == 0 && !r.accepted &&
			    stages[s] != SMTP_STAGE_HEADER) {
				print_error("case \"%s\": not accepted\n",
				    label);
				failed++;
			}
			h_close(&h);
			free(chains);
			free(path);
			free(src);
		}
	if (failed > 0)
		fail_msg("%d lua verdict case(s) failed", failed);
}

/* State set at connect and rcpt is seen at eom; facts reach the script. */
static void
test_lua_state_and_facts(void **state)
{
	static const char src[] =
	    "function connect(f, st)\n"
	    "  st.session.set(\"seen\", f.client.ip .. \"/\" .. f[\"client.ip\"])\n"
	    "end\n"
	    "function helo(f, st)\n"
	    "  st.session.set(\"helo\", f.helo)\n"
	    "end\n"
	    "function rcpt(f, st)\n"
	    "  st.tx.set(\"who\", f.sender .. \">\" .. f.rcpt)\n"
	    "  return {\"tag\", \"score\", \"7.5\"}\n"
	    "end\n"
	    "function header(f, st)\n"
	    "  if f.headers:find(\"Subject: spam\", 1, true) then\n"
	    "    st.tx.set(\"hdr\", \"spam\")\n"
	    "  end\n"
	    "end\n"
	    "function eom(f, st)\n"
	    "  local n = 0\n"
	    "  for line in f.lines() do n = n + 1 end\n"
	    "  return {\"reject\", 550, \"5.7.1\", st.session.get(\"seen\") ..\n"
	    "    \" \" .. st.session.get(\"helo\") .. \" \" .. st.tx.get(\"who\")\n"
	    "    .. \" \" .. st.tx.get(\"score\") .. \" \" .. st.tx.get(\"hdr\")\n"
	    "    .. \" \" .. n .. \" \" .. tostring(st.tx.get(\"none\"))\n"
	    "    .. \" \" .. f.nrcpts .. \" \" .. f.size}\n"
	    "end\n";
	char *path = put_file("state.lua", src, 0644);
	char *chains = xasprintf("on connect { lua \"%s\" }\n"
	    "on helo { lua \"%s\" }\non rcpt { lua \"%s\" }\n"
	    "on header { lua \"%s\" }\non eom { lua \"%s\" }\n", path, path,
	    path, path, path);
	struct h h;

	(void)state;
	h_open(&h, chains);
	struct chain_result r = walk_to(&h, SMTP_STAGE_EOM, "state");
	assert_string_equal(h_show(&r), "550 5.7.1 192.0.2.7/192.0.2.7 "
	    "h.example s@example.org>r@example.net 7.5 spam 5 nil 1 59");
	h_close(&h);
	free(chains);
	free(path);
}

/* One function for every stage with "function NAME". */
static void
test_lua_function_name(void **state)
{
	char *path = put_file("named.lua", "function check(f)\n"
	    "  if f.stage == \"mail\" then return {\"reject\", 550, "
	    "\"5.7.1\", \"at \" .. f.stage} end\nend\n", 0644);
	char *chains = xasprintf("on helo { lua \"%s\" function check }\n"
	    "on mail { lua \"%s\" function check }\n", path, path);
	struct h h;

	(void)state;
	h_open(&h, chains);
	struct chain_result r = walk_to(&h, SMTP_STAGE_MAIL, "named");
	assert_string_equal(h_show(&r), "550 5.7.1 at mail");
	h_close(&h);
	free(chains);
	free(path);
}

struct lua_scase {
	const char	*label;
	const char	*src;		/* defines connect() */
	const char	*opts;		/* after the file name */
	const char	*want;
};

static const struct lua_scase lua_scases[] = {
	{ "io, os, require, load, dofile are nil",
	    "function connect() return {\"reject\", 550, \"5.7.1\", "
	    "type(io)..type(os)..type(require)..type(load)..type(dofile)} end",
	    "", "550 5.7.1 nilnilnilnilnil" },
	{ "allow-unsafe gives them back",
	    "function connect() return {\"reject\", 550, \"5.7.1\", "
	    "type(io)..type(os)..type(require)..type(load)} end",
	    "allow-unsafe", "550 5.7.1 tabletablefunctionfunction" },
	{ "string, table, math, utf8 are there",
	    "function connect() return {\"reject\", 550, \"5.7.1\", "
	    "string.upper(\"x\")..table.concat({1,2})..math.max(3,4)..utf8.char(65)} end",
	    "", "550 5.7.1 X124A" },
	{ "a loop forever hits the budget",
	    "function connect() while true do end end", "",
	    "451 4.3.0" },
	{ "catching the budget error with pcall does not help",
	    "function connect() while true do pcall(function() "
	    "while true do end end) end end", "",
	    "451 4.3.0" },
	{ "a small budget",
	    "function connect() local x = 0 for i = 1, 100000 do x = x + i "
	    "end end", "budget 1000", "451 4.3.0" },
	{ "patterns work as Lua's, as functions and methods",
	    "function connect() local s = \"k=v; a=b\" local n = 0 "
	    "for k, v in s:gmatch(\"(%w+)=(%w+)\") do n = n + 1 end "
	    "return {\"reject\", 550, \"5.7.1\", string.find(s, \"a=\", 1, "
	    "true) .. s:match(\"^(%w+)\") .. s:gsub(\"%s\", \"_\") .. n} end",
	    "", "550 5.7.1 6kk=v;_a=b2" },
	{ "a backtracking pattern is refused, not run for hours",
	    "function connect() return string.find(string.rep(\"a\", 3000), "
	    "\".-.-.-.-.-.-.-.-b\") end", "", "451 4.3.0" },
	{ "so is a method call on a long subject",
	    "function connect() local s = string.rep(\"a\", 100000) "
	    "return s:gsub(\"a-a-b\", \"\") end", "", "451 4.3.0" },
	{ "a plain search answers as Lua's matcher does",
	    "function connect() local bad = 0 "
	    "local function two(a, b) return tostring(a) .. tostring(b) end "
	    "for _, s in ipairs({\"aabab\", \"a\\0ba\\0b\", \"\"}) do "
	    "for _, p in ipairs({\"\", \"a\", \"ab\", \"ba\", \"aab\", "
	    "\"b\\0\", \"x\", \"a.b\", \"%a\"}) do "
	    "local e = p:gsub(\"%p\", \"%%%0\") "
	    "for i = -7, 7 do "
	    "if two(s:find(p, i, true)) ~= two(s:find(\"()\" .. e, i)) "
	    "then bad = bad + 1 end "
	    "if e == p and p ~= \"\" and two(s:match(p, i)) ~= "
	    "two(s:match(\"(\" .. p .. \")\", i)) then bad = bad + 1 end "
	    "end end end "
	    "return {\"reject\", 550, \"5.7.1\", \"bad \" .. bad} end",
	    "", "550 5.7.1 bad 0" },
	{ "plain searches are linear, so is a match without specials",
	    "function connect() local s = string.rep(\"a\", 1000000) .. \"b\" "
	    "local p = string.rep(\"a\", 500000) .. \"b\" "
	    "return {\"reject\", 550, \"5.7.1\", s:find(p, 1, true) .. "
	    "\" \" .. #s:match(p)} end", "", "550 5.7.1 500001 500001" },
	{ "the pattern steps are the handler call's, not each call's",
	    "function connect() local s = string.rep(\"a\", 3000) "
	    "while true do pcall(string.find, s, \".-.-.-.-b\") end end",
	    "", "451 4.3.0" },
	{ "sorting long strings is charged by their length",
	    "function connect() local s, t = string.rep(\"a\", 100000), {} "
	    "for i = 1, 100000 do t[i] = s end table.sort(t) end", "",
	    "451 4.3.0" },
	{ "sorting short strings is not refused",
	    "function connect() local t = {} for i = 1, 10000 do "
	    "t[i] = string.format(\"%08d\", (i * 7919) % 10007) end "
	    "table.sort(t) return {\"reject\", 550, \"5.7.1\", t[1] .. t[10000]} "
	    "end", "", "550 5.7.1 0000000100010006" },
	{ "allocating without end hits the memory cap",
	    "function connect() local t = {} local i = 0 while true do "
	    "i = i + 1 t[i] = string.rep(\"x\", 4096) .. i end end",
	    "budget 1000000000 memory 4M", "451 4.3.0" },
	{ "one big string hits the memory cap",
	    "function connect() local s = string.rep(\"x\", 64 * 1024 * 1024) "
	    "return {\"reject\", 550, \"5.7.1\", #s} end", "",
	    "451 4.3.0" },
	{ "a runtime error", "function connect() local x = nil; "
	    "return x.y end", "", "451 4.3.0" },
	{ "a runtime error with on-error accept",
	    "function connect() error(\"boom\") end", "on-error accept",
	    "ok" },
	{ "a runtime error with on-error reject (554 at connect)",
	    "function connect() error(\"boom\") end", "on-error reject",
	    "554 5.7.1" },
	{ "globals stay within the script's _ENV",
	    "x = 1 function connect() return {\"reject\", 550, \"5.7.1\", "
	    "tostring(_G.x)..tostring(rawget(_G, \"print\"))} end", "",
	    "550 5.7.1 1nil" },
};

static void
test_lua_sandbox(void **state)
{
	int failed = 0;

	(void)state;
	for (size_t i = 0; i < sizeof(lua_scases) / sizeof(lua_scases[0]);
	    i++) {
		const struct lua_scase *c = &lua_scases[i];
		char *path = put_file("sb.lua", c->src, 0644);
		char *chains = xasprintf("on connect { lua \"%s\" %s }\n",
		    path, c->opts);
		struct h h;
		h_open(&h, chains);
		uint64_t t0 = util_now_ms();
		struct chain_result r = h_run(&h, SMTP_STAGE_CONNECT, "",
		    NULL);
		const char *got = h_show(&r);
		if (strncmp(got, c->want, strlen(c->want)) != 0) {
			print_error("case \"%s\": got %s, want %s\n",
			    c->label, got, c->want);
			failed++;
		}
		if (util_now_ms() - t0 > 3000) {
			print_error("case \"%s\": took %llu ms\n", c->label,
			    (unsigned long long)(util_now_ms() - t0));
			failed++;
		}
		/* The state is usable (or rebuilt) for the next session. */
		h_session(&h, "192.0.2.8");
		r = h_run(&h, SMTP_STAGE_CONNECT, "", NULL);
		if (strncmp(h_show(&r), c->want, strlen(c->want)) != 0) {
			print_error("case \"%s\" again: got %s\n", c->label,
			    h_show(&r));
			failed++;
		}
		h_close(&h);
		free(chains);
		free(path);
	}
	if (failed > 0)
		fail_msg("%d sandbox case(s) failed", failed);
}

/* "lua budget N memory SIZE allow-unsafe": defaults for every handler. */
static void
test_lua_global_config(void **state)
{
	char *path = put_file("glob.lua", "function connect()\n"
	    "  local x = 0 for i = 1, 100000 do x = x + i end\n"
	    "  return {\"reject\", 550, \"5.7.1\", type(io) .. x}\nend\n",
	    0644);
	struct {
		const char	*label, *global, *opts, *want;
	} cases[] = {
		{ "defaults", "", "", "550 5.7.1 nil5000050000" },
		{ "global allow-unsafe", "lua allow-unsafe\n", "",
		    "550 5.7.1 table5000050000" },
		{ "global budget", "lua budget 2000\n", "", "451 4.3.0" },
		{ "the handler's budget wins", "lua budget 2000\n",
		    "budget 10M", "550 5.7.1 nil5000050000" },
		{ "the handler's memory wins", "lua memory 64k\n",
		    "memory 16M", "550 5.7.1 nil5000050000" },
	};
	int failed = 0;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *chains = xasprintf("%son connect { lua \"%s\" %s }\n",
		    cases[i].global, path, cases[i].opts);
		struct h h;
		h_open(&h, chains);
		struct chain_result r = h_run(&h, SMTP_STAGE_CONNECT, "",
		    NULL);
		if (strncmp(h_show(&r), cases[i].want,
		    strlen(cases[i].want)) != 0) {
			print_error("case \"%s\": got %s, want %s\n",
			    cases[i].label, h_show(&r), cases[i].want);
			failed++;
		}
		h_close(&h);
		free(chains);
	}
	/* A bad "lua" line is a config error. */
	char *errs = NULL;
	char *text = xasprintf("%slua budget 5\n", h_prefix);
	struct config *cfg = config_parse("test.conf", text, &errs);
	if (cfg != NULL || errs == NULL || strstr(errs, "lua: bad") == NULL)
		fail_msg("case \"lua budget 5\": got \"%s\"",
		    errs != NULL ? errs : "(accepted)");
	free(errs);
	free(text);
	free(path);
	if (failed > 0)
		fail_msg("%d global config case(s) failed", failed);
}

/* Config errors: FILE:LINE of the script, a missing function, no file. */
static void
test_lua_config_errors(void **state)
{
	struct {
		const char	*label;
		const char	*src;		/* NULL: no file */
		const char	*opts;
		const char	*want;		/* in the message */
	} cases[] = {
		{ "syntax error", "function connect()\n  return (\nend\n", "",
		    "bad.lua:3:" },
		{ "no connect function", "function helo() end\n", "",
		    "no function \"connect\"" },
		{ "no named function", "function connect() end\n",
		    "function nope", "no function \"nope\"" },
		{ "error at load", "error(\"at load\")\n", "",
		    "bad.lua:1: at load" },
		{ "forever at load", "while true do end\n", "",
		    "instruction budget" },
		{ "no file", NULL, "", "cannot read" },
		{ "bad option", "function connect() end\n", "budget x",
		    "usage: lua" },
		{ "bytecode refused", "\033Lua", "", "attempt to load a binary" },
	};
	int failed = 0;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *path = cases[i].src != NULL ? put_file("bad.lua",
		    cases[i].src, 0644) : xasprintf("%s/none.lua", tmpdir);
		char *text = xasprintf("%son connect { lua \"%s\" %s }\n",
		    h_prefix, path, cases[i].opts);
		char *errs = NULL;
		struct config *cfg = config_parse("test.conf", text, &errs);
		if (cfg == NULL)
			fail_msg("case \"%s\": config: %s", cases[i].label,
			    errs);
		struct chain_set *set = chain_set_new(cfg, &errs);
		if (set != NULL || errs == NULL ||
		    strstr(errs, cases[i].want) == NULL ||
		    strncmp(errs, "test.conf:", 10) != 0) {
			print_error("case \"%s\": got \"%s\", want \"%s\"\n",
			    cases[i].label, errs != NULL ? errs : "(none)",
			    cases[i].want);
			failed++;
		}
		chain_set_unref(&set);
		free(errs);
		config_free(&cfg);
		free(text);
		free(path);
	}
	if (failed > 0)
		fail_msg("%d config error case(s) failed", failed);
}

/* Two loops (as two workers would) run the same set at once. */
struct lua_thr {
	struct chain_set	*set;
	const struct config	*cfg;
	int			 ok;
};

static void *
lua_thr_main(void *arg)
{
	struct lua_thr *t = arg;
	struct event_base *base = event_base_new();
	struct chain_loop_opts o = { .resolver = "127.0.0.1:9",
	    .store = "memory:" };
	const char *err;
	struct chain_loop *loop = chain_loop_new(base, t->cfg, &o, &err);
	struct chain_session_info info = { .sid = "t", .ip = "192.0.2.7",
	    .port = 1, .hostname = "mx.test" };

	for (int i = 0; i < 200; i++) {
		struct chain_session *cs = chain_session_new(t->set, loop,
		    &info);
		struct smtp_event ev = { .stage = SMTP_STAGE_CONNECT,
		    .arg = "" };
		struct chain_result r;
		if (chain_run(cs, &ev, NULL, NULL, &r) == CHAIN_DONE &&
		    r.reply.code == 550)
			t->ok++;
		chain_session_free(&cs);
		event_base_loop(base, EVLOOP_NONBLOCK);
	}
	chain_loop_free(&loop);
	event_base_loop(base, EVLOOP_NONBLOCK);
	event_base_free(base);
	return NULL;
}

static void
test_lua_threads(void **state)
{
	char *path = put_file("thr.lua", "n = 0\nfunction connect()\n"
	    "  n = n + 1\n  local s = 0\n  for i = 1, 1000 do s = s + i end\n"
	    "  return {\"reject\", 550, \"5.7.1\", \"n\" .. n .. \" \" .. s}\n"
	    "end\n", 0644);
	char *chains = xasprintf("on connect { lua \"%s\" }\n", path);
	struct h h;
	struct lua_thr t[4];
	pthread_t th[4];

	(void)state;
	h_open(&h, chains);
	for (int i = 0; i < 4; i++) {
		t[i] = (struct lua_thr){ h.set, h.cfg, 0 };
		pthread_create(&th[i], NULL, lua_thr_main, &t[i]);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		if (t[i].ok != 200)
			fail_msg("case \"thread %d\": %d of 200 answers", i,
			    t[i].ok);
	}
	h_close(&h);
	free(chains);
	free(path);
}

/* ----- program ----- */

struct prog_case {
	const char	*label;
	const char	*script;	/* body after "#!/bin/sh\n" */
	const char	*args;		/* after the path in the config */
	enum smtp_stage	 stage;
	const char	*want;		/* prefix of h_show() */
	int		 disp;		/* -1: not checked */
};

static const struct prog_case prog_cases[] = {
	{ "exit 0 continues", "exit 0\n", "", SMTP_STAGE_MAIL, "ok", -1 },
	{ "exit 1 rejects with the first line",
	    "echo 'go away'; echo second; exit 1\n", "", SMTP_STAGE_MAIL,
	    "550 5.7.1 go away", -1 },
	{ "exit 1 without output", "exit 1\n", "", SMTP_STAGE_MAIL,
	    "550 5.7.1 Rejected by policy", -1 },
	{ "exit 2 tempfails", "echo 'busy'; exit 2\n", "", SMTP_STAGE_RCPT,
	    "451 4.7.1 busy", -1 },
	{ "exit 3 discards", "exit 3\n", "", SMTP_STAGE_RCPT, "ok",
	    CHAIN_DISP_DISCARD },
	{ "exit 4 accepts", "exit 4\n", "", SMTP_STAGE_HELO, "ok", -1 },
	{ "exit 5 is a failure", "exit 5\n", "", SMTP_STAGE_HELO,
	    "451 4.3.0", -1 },
	{ "a signal is a failure", "kill -9 $$\n", "", SMTP_STAGE_HELO,
	    "451 4.3.0", -1 },
	{ "output is sanitised and bounded",
	    "printf 'a\\001b %%{client.ip} \\351'; exit 1\n", "",
	    SMTP_STAGE_MAIL, "550 5.7.1 a?b %(client.ip} ?", -1 },
	{ "timeout kills", "sleep 20\nexit 0\n", "timeout 300ms",
	    SMTP_STAGE_MAIL, "451 4.3.0", -1 },
	{ "timeout with on-error accept", "sleep 20\n",
	    "timeout 200ms on-error accept", SMTP_STAGE_MAIL, "ok", -1 },
	{ "stdin has the message at eom",
	    "head -n 2 | tail -n 1; exit 1\n", "", SMTP_STAGE_EOM,
	    "550 5.7.1 Subject: spam offer", -1 },
	{ "stdin is empty before eom", "echo \"[$(cat)]\"; exit 1\n", "",
	    SMTP_STAGE_MAIL, "550 5.7.1 []", -1 },
	{ "the environment has the facts",
	    "echo \"$POSTERN_CLIENT_IP $POSTERN_HELO $POSTERN_SENDER "
	    "$POSTERN_RCPT $POSTERN_STAGE $POSTERN_SID [$HOME$USER]\"; exit 1\n",
	    "", SMTP_STAGE_RCPT,
	    "550 5.7.1 192.0.2.7 h.example s@example.org r@example.net rcpt "
	    "t1 []", -1 },
	{ "recipients at eom", "echo \"$POSTERN_RCPTS $POSTERN_SIZE\"; "
	    "exit 2\n", "", SMTP_STAGE_EOM, "451 4.7.1 r@example.net 59",
	    -1 },
	{ "arguments reach the program literally, no shell",
	    "printf '%s|' \"$@\"; exit 1\n",
	    "\"a;echo pwned\" \"$(id)\" \"x y\" \"`ls`\"", SMTP_STAGE_MAIL,
	    "550 5.7.1 a;echo pwned|$(id)|x y|`ls`|", -1 },
};

static void
test_program(void **state)
{
	int failed = 0;

	(void)state;
	for (size_t i = 0; i < sizeof(prog_cases) / sizeof(prog_cases[0]);
	    i++) {
		const struct prog_case *c = &prog_cases[i];
		char *body = xasprintf("#!/bin/sh\n%s", c->script);
		char *path = put_file("prog.sh", body, 0755);
		char *chains = xasprintf("on %s { program \"%s\" %s }\n",
		    chain_stage_name(c->stage), path, c->args);
		struct h h;
		const char *action;
		h_open(&h, chains);
		uint64_t t0 = util_now_ms();
		struct chain_result r = walk_to(&h, c->stage, c->label);
		const char *got = h_show(&r);
		if (strncmp(got, c->want, strlen(c->want)) != 0) {
			print_error("case \"%s\": got %s, want %s\n",
			    c->label, got, c->want);
			failed++;
		} else if (c->disp != -1 && (int)chain_session_disposition(
		    h.cs, &action) != c->disp) {
			print_error("case \"%s\": wrong disposition\n",
			    c->label);
			failed++;
		}
		if (util_now_ms() - t0 > 3000) {
			print_error("case \"%s\": took %llu ms\n", c->label,
			    (unsigned long long)(util_now_ms() - t0));
			failed++;
		}
		h_close(&h);
		free(chains);
		free(path);
		free(body);
	}
	if (failed > 0)
		fail_msg("%d program case(s) failed", failed);
}

/* The loop keeps running while a program works. */
static void
test_program_off_loop(void **state)
{
	char *path = put_file("slow.sh", "#!/bin/sh\nsleep 0.3\nexit 1\n",
	    0755);
	char *chains = xasprintf("on mail { program \"%s\" }\n", path);
	struct h h;
	bool pending = false;

	(void)state;
	h_open(&h, chains);
	uint64_t t0 = util_now_ms();
	struct smtp_event ev = { .stage = SMTP_STAGE_MAIL, .arg = "a@b.org" };
	struct chain_result res;
	struct got g = { 0 };
	enum chain_status s = chain_run(h.cs, &ev, got_cb, &g, &res);
	assert_int_equal(s, CHAIN_PENDING);
	if (util_now_ms() - t0 > 100)
		fail_msg("case \"spawn\": chain_run blocked %llu ms",
		    (unsigned long long)(util_now_ms() - t0));
	(void)pending;
	while (!g.done && util_now_ms() < t0 + 5000)
		event_base_loop(h.base, EVLOOP_ONCE);
	assert_true(g.done);
	assert_string_equal(h_show(&g.res), "550 5.7.1 Rejected by policy");
	/* A session that leaves while its program runs: no answer, no hang. */
	h_session(&h, "192.0.2.9");
	g = (struct got){ 0 };
	assert_int_equal(chain_run(h.cs, &ev, got_cb, &g, &res),
	    CHAIN_PENDING);
	h_session(&h, "192.0.2.10");
	assert_false(g.done);
	h_close(&h);
	free(chains);
	free(path);
}

/*
 * A program's own timeout bounds it, not the loop's call timeout (60 s,
 * 200 ms here): one that answers within its own passes, one past it
 * fails when its own runs out.
 */
static void
test_program_own_timeout(void **state)
{
	char *path = put_file("slow.sh", "#!/bin/sh\nsleep 0.6\nexit 1\n",
	    0755);
	const char *const args[][2] = {
		{ "timeout 2s", "550 5.7.1 Rejected by policy" },
		{ "timeout 400ms", "451 4.3.0" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(args) / sizeof(args[0]); i++) {
		char *chains = xasprintf("on mail { program \"%s\" %s }\n",
		    path, args[i][0]);
		struct h h;
		h_open_opts(&h, chains, "127.0.0.1:9", 200);
		struct chain_result r = h_run(&h, SMTP_STAGE_MAIL, "a@b.org",
		    NULL);
		const char *got = h_show(&r);
		if (strncmp(got, args[i][1], strlen(args[i][1])) != 0)
			fail_msg("program %s: got %s, want %s", args[i][0], got,
			    args[i][1]);
		h_close(&h);
		free(chains);
	}
	free(path);
}

static void
test_program_config_errors(void **state)
{
	const char *const cases[][2] = {
		{ "program \"relative/path\"", "must be absolute" },
		{ "program \"/nonexistent/prog\"", "No such file" },
		{ "program", "usage: program" },
		{ "program \"/bin/true\" timeout never", "bad timeout" },
	};
	int failed = 0;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *text = xasprintf("%son mail { %s }\n", h_prefix,
		    cases[i][0]);
		char *errs = NULL;
		struct config *cfg = config_parse("test.conf", text, &errs);
		if (cfg == NULL)
			fail_msg("case \"%s\": config: %s", cases[i][0], errs);
		struct chain_set *set = chain_set_new(cfg, &errs);
		if (set != NULL || errs == NULL ||
		    strstr(errs, cases[i][1]) == NULL) {
			print_error("case \"%s\": got \"%s\"\n", cases[i][0],
			    errs != NULL ? errs : "(none)");
			failed++;
		}
		chain_set_unref(&set);
		free(errs);
		config_free(&cfg);
		free(text);
	}
	if (failed > 0)
		fail_msg("%d program config case(s) failed", failed);
}

int
main(void)
{
	evthread_use_pthreads();
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/postern-chain-ext-XXXXXX");
	if (mkdtemp(tmpdir) == NULL)
		return 1;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lua_verdicts),
		cmocka_unit_test(test_lua_state_and_facts),
		cmocka_unit_test(test_lua_function_name),
		cmocka_unit_test(test_lua_sandbox),
		cmocka_unit_test(test_lua_config_errors),
		cmocka_unit_test(test_lua_global_config),
		cmocka_unit_test(test_lua_threads),
		cmocka_unit_test(test_program),
		cmocka_unit_test(test_program_off_loop),
		cmocka_unit_test(test_program_own_timeout),
		cmocka_unit_test(test_program_config_errors),
	};
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	char *cmd[] = { "rm", "-rf", tmpdir, NULL };
	pid_t pid = fork();
	if (pid == 0) {
		execv("/bin/rm", cmd);
		_exit(127);
	}
	waitpid(pid, NULL, 0);
	return rc;
}
