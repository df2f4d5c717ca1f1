/*
 * Unit tests of reply agents (deliver/agent.c, memo.c) and pass-through
 * mailboxes (passthrough.c): what they put in the queue (recorded by an
 * inject hook and read back with the MIME parser), the RFC 3834 rules,
 * one reply per sender per period in a real state store, agents that
 * fail, hang or ask for later, and web services (server.py).
 */
#include "deliver/deliver.h"
#include "deliver/deliver_private.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "../http/srv.h"
#include "chain/chain.h"
#include "config/config.h"
#include "util/util.h"

#define AGENT	"nyc-weather@example.org"

static char	 tdir[] = "/tmp/test_agent.XXXXXX";

/* ---- the queue, as the agents see it ---- */

struct queued {
	char		*sender, *rcpt;
	struct util_buf	 content;
};
static struct queued	 q[8];
static size_t		 nq;
static bool		 q_refuse;	/* the next inject fails */

static int
rec_inject(void *arg, const char *sender, const char *rcpt,
    const char *head, size_t head_len, const struct deliver_msg *src,
    uint64_t src_off, const char **err_out)
{
	struct queued *e;

	(void)arg;
	if (q_refuse) {
		q_refuse = false;
		*err_out = "spool full";
		return -1;
	}
	assert_true(nq < 8);
	e = &q[nq++];
	e->sender = xstrdup(sender);
	e->rcpt = xstrdup(rcpt);
	util_buf_add(&e->content, head, head_len);
	if (src != NULL) {
		FILE *f = fopen(src->content_path, "r");
		char buf[4096];
		size_t n;

		assert_non_null(f);
		fseek(f, (long)src_off, SEEK_SET);
		while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
			util_buf_add(&e->content, buf, n);
		fclose(f);
	}
	util_buf_cstr(&e->content);
	return 0;
}

static const struct deliver_inject injector = { rec_inject, NULL };

static void
q_clear(void)
{
	for (size_t i = 0; i < nq; i++) {
		free(q[i].sender);
		free(q[i].rcpt);
		util_buf_clear(&q[i].content);
	}
	nq = 0;
	q_refuse = false;
}

static int
q_cleanup(void **state)
{
	q_clear();
	return srv_cleanup(state);
}

/* A message file from sender with extra header fields. */
static char *
message(const char *name, const char *from, const char *extra)
{
	char *path = xasprintf("%s/%s", tdir, name);
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fprintf(f, "Received: from client by mx; Mon, 1 Jan 2024 00:00:00 "
	    "+0000\nFrom: Ann Lee <%s>\nTo: %s\n"
	    "Subject: =?utf-8?q?M=C3=A9t=C3=A9o?= tomorrow?\n"
	    "Message-ID: <ask.1@example.net>\n%s\nWill it rain?\n", from, AGENT,
	    extra);
	fclose(f);
	return path;
}

static struct deliver_msg
msg_of(const char *path, const char *sender)
{
	struct deliver_msg m = { .content_path = path, .return_path = sender,
	    .qid = "QA1", .received = 1700000000,
	    .hostname = "mx.example.org", .inject = &injector };

	return m;
}

/* The queued reply, parsed; checks what every reply must be. */
static struct mime_msg *
reply_of(size_t i, const char *to)
{
	struct mime_msg *r;

	assert_true(i < nq);
	assert_string_equal(q[i].sender, "");		/* null sender */
	assert_string_equal(q[i].rcpt, to);
	r = mime_parse_mem(q[i].content.data, q[i].content.len, NULL);
	assert_null(r->parse_error);
	assert_string_equal(r->from_list.v[0].address, AGENT);
	assert_string_equal(r->to_list.v[0].address, to);
	assert_string_equal(mime_msg_header(r, "Auto-Submitted"),
	    "auto-replied");
	assert_string_equal(r->in_reply_to, "ask.1@example.net");
	return r;
}

static struct deliver_agent *
agent_new(struct deliver_agent_opts *o)
{
	const char *err = NULL;
	struct deliver_agent *a = deliver_agent_new(o, "memory:", &err);

	if (a == NULL)
		fail_msg("agent: %s", err);
	return a;
}

static enum deliver_result
run(struct deliver_agent *a, const char *file, const char *sender,
    const char *extra, struct deliver_rcpt_status *st)
{
	char *path = message(file, sender[0] != '\0' ? sender :
	    "ann@example.net", extra);
	struct deliver_msg m = msg_of(path, sender);
	const char *err = NULL;
	enum deliver_result r = deliver_agent_run(a, &m, AGENT, st, &err);

	free(path);
	return r;
}

/* ---- cases ---- */

static void
test_canned(void **state)
{
	static const char text[] = "Hello %{addresses.from.0.name}, you "
	    "asked \"%{subject}\".\n";
	char *err = NULL;
	struct mime_tpl *tpl = mime_tpl_new(text, sizeof(text) - 1,
	    MIME_TPL_TEXT, (const char *const[]){ "agent", NULL }, &err);
	struct deliver_agent_opts o = { .kind = DELIVER_AGENT_TEXT,
	    .text = tpl, .from_name = "NYC Weather" };
	struct deliver_agent *a = agent_new(&o);
	struct deliver_rcpt_status st;
	struct mime_msg *r;

	(void)state;
	assert_int_equal(run(a, "m1", "ann@example.net", "", &st),
	    DELIVER_OK);
	assert_string_equal(st.text, "2.0.0 answered");
	r = reply_of(0, "ann@example.net");
	assert_string_equal(r->subject, "Re: Météo tomorrow?");
	assert_string_equal(r->from_list.v[0].name, "NYC Weather");
	assert_string_equal(r->text.s, "Hello Ann Lee, you asked \"Météo "
	    "tomorrow?\".\n");
	mime_msg_free(&r);
	/* One reply per sender per period. */
	assert_int_equal(run(a, "m2", "ann@example.net", "", &st),
	    DELIVER_OK);
	assert_string_equal(st.text, "2.0.0 answered already in this period");
	assert_int_equal(nq, 1);
	/* Another sender gets one. */
	assert_int_equal(run(a, "m3", "bob@example.net", "", &st),
	    DELIVER_OK);
	assert_int_equal(nq, 2);
	deliver_agent_free(&a);
	mime_tpl_free(&tpl);
}

static void
test_never_answered(void **state)
{
	static const struct {
		const char	*label, *sender, *extra, *why;
	} cases[] = {
		{ "auto-submitted", "ann@example.net",
		  "Auto-Submitted: auto-generated\n",
		  "2.0.0 not answered: auto-submitted message" },
		{ "list", "ann@example.net", "List-Id: <l.example.net>\n",
		  "2.0.0 not answered: mailing list message" },
		{ "bulk", "ann@example.net", "Precedence: bulk\n",
		  "2.0.0 not answered: bulk or list precedence" },
		{ "null sender", "", "",
		  "2.0.0 not answered: null sender" },
		{ "daemon", "mailer-daemon@example.net", "",
		  "2.0.0 not answered: automated sender" },
	};
	static const char text[] = "x";
	char *err = NULL;
	struct mime_tpl *tpl = mime_tpl_new(text, 1, MIME_TPL_TEXT, NULL,
	    &err);
	struct deliver_agent_opts o = { .kind = DELIVER_AGENT_TEXT,
	    .text = tpl };
	struct deliver_agent *a = agent_new(&o);

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct deliver_rcpt_status st;

		if (run(a, "n", cases[i].sender, cases[i].extra, &st) !=
		    DELIVER_OK || strcmp(st.text, cases[i].why) != 0)
			fail_msg("case \"%s\": got \"%s\"", cases[i].label,
			    st.text);
	}
	assert_int_equal(nq, 0);
	deliver_agent_free(&a);
	mime_tpl_free(&tpl);
}

static void
script(const char *name, const char *text)
{
	char *path = xasprintf("%s/%s", tdir, name);
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	chmod(path, 0755);
	free(path);
}

static void
test_command(void **state)
{
	static const struct {
		const char		*label, *body;
		enum deliver_result	 want;
		const char		*text;	/* st.text starts so */
		size_t			 queued;
	} cases[] = {
		{ "a text reply", "import json, sys\nd = json.load(sys.stdin)\n"
		  "print('Rain for', d['agent'], 'asked by', d['envelope']"
		  "['sender'], 'about', d['subject'])\n", DELIVER_OK,
		  "2.0.0 answered", 1 },
		{ "a MIME reply", "import sys\nsys.stdin.read()\n"
		  "print('Subject: Forecast\\nMIME-Version: 1.0\\n"
		  "Content-Type: text/html; charset=utf-8\\n\\n<b>rain</b>')\n",
		  DELIVER_OK, "2.0.0 answered", 1 },
		{ "silence", "import sys\nsys.stdin.read()\n", DELIVER_OK,
		  "2.0.0 no reply", 0 },
		{ "asks for later", "import sys\nprint('busy', file=sys.stderr)"
		  "\nsys.exit(75)\n", DELIVER_TEMPFAIL, "4.3.0 ", 0 },
		{ "fails", "import sys\nprint('no forecast', file=sys.stderr)\n"
		  "sys.exit(1)\n", DELIVER_OK, "2.0.0 agent failed, no reply: ",
		  0 },
		{ "crashes", "import os, signal\nos.kill(os.getpid(), "
		  "signal.SIGSEGV)\n", DELIVER_TEMPFAIL, "4.3.0 ", 0 },
		{ "hangs", "import time\ntime.sleep(30)\n", DELIVER_TEMPFAIL,
		  "4.3.0 ", 0 },
	};
	char *prog = xasprintf("%s/agent.py", tdir);
	char *argv[] = { prog, NULL };

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct deliver_agent_opts o = { .kind = DELIVER_AGENT_COMMAND,
		    .argv = argv, .timeout_ms = 2000 };
		struct deliver_agent *a = agent_new(&o);
		struct deliver_rcpt_status st;
		char *sender = xasprintf("s%zu@example.net", i);
		char *body = xasprintf("#!/usr/bin/python3\n%s", cases[i].body);
		uint64_t t0 = util_now_ms();

		unlink(prog);
		script("agent.py", body);
		q_clear();
		if (run(a, "c", sender, "", &st) != cases[i].want ||
		    strncmp(st.text, cases[i].text, strlen(cases[i].text)) !=
		    0 || nq != cases[i].queued)
			fail_msg("case \"%s\": got %d \"%s\", %zu queued",
			    cases[i].label, st.result, st.text, nq);
		assert_true(util_now_ms() - t0 < 10000);
		if (i == 0) {
			struct mime_msg *r = reply_of(0, sender);

			assert_non_null(strstr(r->text.s, "Rain for "
			    AGENT " asked by s0@example.net about Météo"));
			mime_msg_free(&r);
		} else if (i == 1) {
			struct mime_msg *r = reply_of(0, sender);

			assert_string_equal(r->subject, "Forecast");
			assert_string_equal(r->html.s, "<b>rain</b>\n");
			mime_msg_free(&r);
		}
		free(body);
		free(sender);
		deliver_agent_free(&a);
	}
	free(prog);
}

/* A retry after a failed queueing answers: the memory was given back. */
static void
test_queue_refuses(void **state)
{
	static const char text[] = "ok";
	char *err = NULL;
	struct mime_tpl *tpl = mime_tpl_new(text, 2, MIME_TPL_TEXT, NULL,
	    &err);
	struct deliver_agent_opts o = { .kind = DELIVER_AGENT_TEXT,
	    .text = tpl };
	struct deliver_agent *a = agent_new(&o);
	struct deliver_rcpt_status st;

	(void)state;
	q_refuse = true;
	assert_int_equal(run(a, "r1", "retry@example.net", "", &st),
	    DELIVER_TEMPFAIL);
	assert_string_equal(st.text, "4.3.0 reply not queued: spool full");
	assert_int_equal(run(a, "r2", "retry@example.net", "", &st),
	    DELIVER_OK);
	assert_string_equal(st.text, "2.0.0 answered");
	assert_int_equal(nq, 1);
	deliver_agent_free(&a);
	mime_tpl_free(&tpl);
}

static void
test_webhook_agent(void **state)
{
	static const struct {
		const char		*path;
		enum deliver_result	 want;
		const char		*subject, *text, *html;
	} cases[] = {
		{ "/reply/json", DELIVER_OK, "Weather for " AGENT,
		  "Sunny in NYC, dear Ann Lee <w0@example.net>",
		  "<p>Sunny in <b>NYC</b></p>" },
		{ "/reply/text", DELIVER_OK, "Re: Météo tomorrow?",
		  "Sunny, Météo tomorrow?\n", NULL },
		{ "/reply/mime", DELIVER_OK, "From MIME", "A MIME body\n",
		  NULL },
		{ "/reply/empty", DELIVER_OK, NULL, NULL, NULL },
		{ "/status/503", DELIVER_TEMPFAIL, NULL, NULL, NULL },
		{ "/status/400", DELIVER_OK, NULL, NULL, NULL },
	};
	struct srv s;

	(void)state;
	srv_start(&s, "../http/server.py", NULL, NULL);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *url = xasprintf("%s%s", s.base, cases[i].path);
		struct config_hook h = { .url = url, .method = "POST" };
		const char *err = NULL;
		struct deliver_hook *hook = deliver_hook_new(&h, "weather",
		    true, &err);
		struct deliver_agent_opts o = { .kind = DELIVER_AGENT_WEBHOOK,
		    .hook = hook };
		struct deliver_agent *a = agent_new(&o);
		struct deliver_rcpt_status st;
		char *sender = xasprintf("w%zu@example.net", i);

		q_clear();
		if (run(a, "w", sender, "", &st) != cases[i].want)
			fail_msg("case \"%s\": got \"%s\"", cases[i].path,
			    st.text);
		assert_int_equal(nq, cases[i].subject != NULL);
		if (nq == 1) {
			struct mime_msg *r = reply_of(0, sender);

			assert_string_equal(r->subject, cases[i].subject);
			assert_string_equal(r->text.s, cases[i].text);
			if (cases[i].html != NULL)
				assert_string_equal(r->html.s, cases[i].html);
			mime_msg_free(&r);
		}
		deliver_agent_free(&a);
		deliver_hook_free(&hook);
		free(sender);
		free(url);
	}
	srv_stop(&s);
}

static void
test_lua(void **state)
{
	static const struct {
		const char	*label, *body, *text;	/* st.text prefix */
		size_t		 queued;
	} cases[] = {
		{ "a table", "function reply(msg)\n"
		  "  return { subject = 'Forecast for ' .. msg.agent,\n"
		  "    text = 'Rain, ' .. msg.addresses.from[1].name .. '.',\n"
		  "    html = '<p>Rain</p>' }\nend\n", "2.0.0 answered", 1 },
		{ "a string", "function reply(msg) return 'Rain about ' .. "
		  "msg.subject end\n", "2.0.0 answered", 1 },
		{ "nothing", "function reply(msg) return nil end\n",
		  "2.0.0 no reply", 0 },
		{ "an error", "function reply(msg) error('no data') end\n",
		  "2.0.0 agent failed, no reply: ", 0 },
		{ "a loop", "function reply(msg) while true do end end\n",
		  "2.0.0 agent failed, no reply: ", 0 },
		{ "no io", "function reply(msg) return io.open('/etc/passwd')"
		  " end\n", "2.0.0 agent failed, no reply: ", 0 },
	};
	char *path = xasprintf("%s/agent.lua", tdir);

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct deliver_rcpt_status st;
		char *err = NULL, *sender = xasprintf("l%zu@example.net", i);
		struct chain_lua_box *box;
		FILE *f = fopen(path, "w");

		fputs(cases[i].body, f);
		fclose(f);
		box = chain_lua_box_new(NULL, path, "reply", &err);
		if (box == NULL)
			fail_msg("case \"%s\": %s", cases[i].label, err);
		struct deliver_agent_opts o = { .kind = DELIVER_AGENT_LUA,
		    .lua = box };
		struct deliver_agent *a = agent_new(&o);

		q_clear();
		if (run(a, "l", sender, "", &st) != DELIVER_OK ||
		    strncmp(st.text, cases[i].text, strlen(cases[i].text)) !=
		    0 || nq != cases[i].queued)
			fail_msg("case \"%s\": got \"%s\", %zu queued",
			    cases[i].label, st.text, nq);
		if (i == 0) {
			struct mime_msg *r = reply_of(0, sender);

			assert_string_equal(r->subject, "Forecast for " AGENT);
			assert_string_equal(r->text.s, "Rain, Ann Lee.");
			assert_string_equal(r->html.s, "<p>Rain</p>");
			mime_msg_free(&r);
		}
		deliver_agent_free(&a);
		chain_lua_box_free(&box);
		free(sender);
	}
	/* Errors in the script are config errors. */
	{
		char *err = NULL;
		FILE *f = fopen(path, "w");

		fputs("function other() end\n", f);
		fclose(f);
		assert_null(chain_lua_box_new(NULL, path, "reply", &err));
		assert_non_null(strstr(err, "no function \"reply\""));
		free(err);
	}
	free(path);
}

static void
test_passthrough(void **state)
{
	static const struct {
		const char	*label, *extra_subject, *want;
	} cases[] = {
		{ "prefixed", "Subject: Help with =?utf-8?q?caf=C3=A9?=\n",
		  "Subject: [support@] Help with =?utf-8?q?caf=C3=A9?=\n" },
		{ "once", "Subject: [support@] again\n",
		  "Subject: [support@] again\n" },
		{ "folded", "Subject: a long\n subject\n",
		  "Subject: [support@] a long\n subject\n" },
		{ "added", "", "Subject: [support@]\n" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *path = xasprintf("%s/p%zu", tdir, i);
		FILE *f = fopen(path, "w");
		struct deliver_msg m = msg_of(path, "ann@example.net");
		struct deliver_rcpt_status st;
		const char *err = NULL;
		const char *body;

		fprintf(f, "From: ann@example.net\n%sX-Other: kept\n\n"
		    "Body\n\nwith a blank line.\n", cases[i].extra_subject);
		fclose(f);
		q_clear();
		assert_int_equal(deliver_passthrough("help@desk.example", &m,
		    "Support@example.org", &st, &err), DELIVER_OK);
		assert_int_equal(nq, 1);
		assert_string_equal(q[0].sender, "ann@example.net");
		assert_string_equal(q[0].rcpt, "help@desk.example");
		if (strstr(q[0].content.data, cases[i].want) == NULL)
			fail_msg("case \"%s\": %s", cases[i].label,
			    q[0].content.data);
		assert_int_equal(strncmp(q[0].content.data, "From: ann@", 10),
		    0);
		assert_non_null(strstr(q[0].content.data, "X-Other: kept\n"));
		/* The body as it was, from the blank line on. */
		body = strstr(q[0].content.data, "\n\nBody\n\nwith a "
		    "blank line.\n");
		assert_non_null(body);
		assert_int_equal(strlen(body), 27);
		free(path);
	}
}

static int
setup(void **state)
{
	(void)state;
	return mkdtemp(tdir) != NULL ? 0 : -1;
}

static int
teardown(void **state)
{
	char *cmd = xasprintf("rm -rf %s", tdir);
	int rc = system(cmd);

	(void)state;
	free(cmd);
	q_clear();
	return rc == 0 ? 0 : -1;
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_canned, q_cleanup),
		cmocka_unit_test_teardown(test_never_answered, q_cleanup),
		cmocka_unit_test_teardown(test_command, q_cleanup),
		cmocka_unit_test_teardown(test_queue_refuses, q_cleanup),
		cmocka_unit_test_teardown(test_webhook_agent, q_cleanup),
		cmocka_unit_test_teardown(test_lua, q_cleanup),
		cmocka_unit_test_teardown(test_passthrough, q_cleanup),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, setup, teardown);
}
