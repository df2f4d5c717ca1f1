/* tests/unit/chain/cases_framework.c: included by test_chain.c. */

struct fw_step {
	enum smtp_stage	 st;
	const char	*arg;
	const char	*want;		/* h_show() */
};
struct fw_case {
	const char	*label;
	const char	*chains;
	struct fw_step	 steps[6];
	const char	*want_trace;
};

#define S(st, arg, want)	{ SMTP_STAGE_##st, arg, want }

static const struct fw_case fw_cases[] = {
	{ "order, all continue",
	    "on rcpt { probe a; probe b }\non rcpt {\nprobe c\n}\n",
	    { S(RCPT, "x@y.org", "ok") }, "a,b,c" },
	{ "empty stage",
	    "on rcpt { probe a }\n",
	    { S(HELO, "h", "ok"), S(MAIL, "s@t.org", "ok") }, "" },
	{ "accept stops the chain",
	    "on rcpt { probe a accept; probe b reject 550 }\n",
	    { S(RCPT, "x@y.org", "ok") }, "a" },
	{ "reject stops the chain, template",
	    "on rcpt { probe a; reject 550 5.1.1 \"no %{rcpt.user} at "
	    "%{rcpt.domain}\"; probe c }\n",
	    { S(RCPT, "x@y.org", "550 5.1.1 no x at y.org") }, "a" },
	{ "reject 4xx with derived esc",
	    "on mail { probe a reject 451 }\n",
	    { S(MAIL, "s@t.org", "451 4.7.1 Try again later") }, "a" },
	{ "reject default",
	    "on helo { reject }\n",
	    { S(HELO, "h", "550 5.7.1 Rejected by policy") }, "" },
	{ "async reject",
	    "on rcpt { probe a async 20 reject 554 5.7.1 go-away; probe b }\n",
	    { S(RCPT, "x@y.org", "554 5.7.1 go-away") }, "a" },
	{ "async continue then sync",
	    "on rcpt { probe a async 5; probe b async 5; probe c }\n",
	    { S(RCPT, "x@y.org", "ok") }, "a,b,c" },
	{ "delay then continue",
	    "on helo { probe a delay 50; probe b }\n",
	    { S(HELO, "h", "ok") }, "a,b" },
	{ "disconnect 421 default",
	    "on helo { probe a disconnect 0 }\n",
	    { S(HELO, "h", "close 421 4.4.2 mx.test closing connection") },
	    "a" },
	{ "disconnect 521",
	    "on connect { probe a disconnect 521 }\n",
	    { S(CONNECT, "", "close 521 5.3.2 mx.test closing connection") },
	    "a" },
	{ "disconnect builtin",
	    "on mail { disconnect 421 4.7.0 bye \"%{sender}\" }\n",
	    { S(MAIL, "s@t.org", "close 421 4.7.0 bye s@t.org") }, "" },
	{ "handler failure: tempfail by default",
	    "on rcpt { probe a fail; probe b }\n",
	    { S(RCPT, "x@y.org", "451 4.3.0 Local error in processing, try "
	    "again later") }, "a" },
	{ "on-error accept goes on",
	    "on rcpt { probe a fail on-error accept; probe b reject 550 "
	    "5.1.1 x }\n",
	    { S(RCPT, "x@y.org", "550 5.1.1 x") }, "a,b" },
	{ "on-error reject",
	    "on rcpt { probe a on-error reject fail }\n",
	    { S(RCPT, "x@y.org", "550 5.7.1 Rejected by policy") }, "a" },
	{ "bad code from a handler is 451",
	    "on rcpt { probe a reject 250 }\n",
	    { S(RCPT, "x@y.org", "451 4.3.0 Local error in processing, try "
	    "again later") }, "a" },
	{ "bad esc from a handler is 451",
	    "on rcpt { probe a reject 550 4.1.1 x }\n",
	    { S(RCPT, "x@y.org", "451 4.3.0 Local error in processing, try "
	    "again later") }, "a" },
	{ "helo and sender shared with later stages",
	    "on rcpt { reject 550 5.7.1 \"%{helo} %{sender} %{client.ip} "
	    "%{hostname} %{nope}.\" }\n",
	    { S(HELO, "client.example", "ok"), S(MAIL, "s@t.org", "ok"),
	    S(RCPT, "x@y.org", "550 5.7.1 client.example s@t.org 192.0.2.7 "
	    "mx.test .") }, "" },
	{ "peer text in a template made printable",
	    "on helo { reject 550 5.7.1 \"[%{helo}]\" }\n",
	    { S(HELO, "a\r\nb\x7f", "550 5.7.1 [a??b?]") }, "" },
	{ "session tag seen at rcpt",
	    "on helo { tag score=7 }\non rcpt { reject 550 5.7.1 "
	    "\"s=%{session.score} t=%{tx.t}\" }\non mail { tag t=1 }\n",
	    { S(HELO, "h", "ok"), S(MAIL, "a@b.org", "ok"),
	    S(RCPT, "x@y.org", "550 5.7.1 s=7 t=1") }, "" },
	{ "tx tag cleared at the next MAIL",
	    "on rcpt { tag t=1 }\non data { reject 550 5.7.1 \"t=%{tx.t}\" }\n",
	    { S(MAIL, "a@b.org", "ok"), S(RCPT, "x@y.org", "ok"),
	    S(MAIL, "a@b.org", "ok"), S(DATA, "", "550 5.7.1 t=") }, "" },
	{ "nomail at connect",
	    "on connect { nomail }\n",
	    { S(CONNECT, "", "close 521 5.3.2 mx.test does not accept mail") },
	    "" },
	{ "nomail every-command",
	    "on connect { nomail every-command }\n",
	    { S(CONNECT, "", "ok"), S(HELO, "h", "521 5.3.2 mx.test does "
	    "not accept mail"), S(MAIL, "a@b.org", "521 5.3.2 mx.test does "
	    "not accept mail"), S(QUIT, "", "ok") }, "" },
	{ "nomail after-data: tags the session, refuses nothing itself",
	    "on mail { nomail after-data }\non rcpt { reject 550 5.7.1 "
	    "\"nomail=%{session.nomail}\" }\n",
	    { S(CONNECT, "", "ok"), S(MAIL, "a@b.org", "ok"), S(RCPT,
	    "x@y.org", "550 5.7.1 nomail=after-data") }, "" },
	{ "trap: the right order passes",
	    "on connect { trap }\n",
	    { S(CONNECT, "", "ok"), S(HELO, "h", "ok"), S(MAIL, "a@b.org",
	    "ok"), S(RCPT, "x@y.org", "ok"), S(RCPT, "z@y.org", "ok"),
	    S(DATA, "", "ok") }, "" },
	{ "trap: MAIL before HELO",
	    "on connect { trap }\n",
	    { S(CONNECT, "", "ok"), S(MAIL, "a@b.org", "close 550 5.5.1 "
	    "Command out of sequence, closing connection") }, "" },
	{ "trap: a second HELO",
	    "on connect { trap }\n",
	    { S(CONNECT, "", "ok"), S(HELO, "h", "ok"), S(HELO, "h",
	    "close 550 5.5.1 Command out "
	    "of sequence, closing connection") }, "" },
	{ "trap: MAIL before the message's end",
	    "on connect { trap }\n",
	    { S(CONNECT, "", "ok"), S(HELO, "h", "ok"), S(MAIL, "a@b.org",
	    "ok"), S(RCPT, "x@y.org", "ok"), S(DATA, "", "ok"), S(MAIL,
	    "a@b.org", "close 550 5.5.1 Command out of sequence, closing "
	    "connection") }, "" },
	{ "trap: STARTTLS",
	    "on connect { trap }\n",
	    { S(CONNECT, "", "ok"), S(HELO, "h", "ok"), S(STARTTLS, "",
	    "close 550 5.5.1 Command out of sequence, closing connection") },
	    "" },
};

static void
test_framework_cases(void **state)
{
	int failed = 0;

	(void)state;
	for (size_t i = 0; i < sizeof(fw_cases) / sizeof(fw_cases[0]); i++) {
		const struct fw_case *c = &fw_cases[i];
		struct h h;
		h_open(&h, c->chains);
		for (size_t k = 0; k < 6 && c->steps[k].want != NULL; k++) {
			struct chain_result r = h_run(&h, c->steps[k].st,
			    c->steps[k].arg, NULL);
			if (strcmp(h_show(&r), c->steps[k].want) != 0) {
				print_error("case \"%s\" step %zu: got \"%s\", "
				    "want \"%s\"\n", c->label, k, h_show(&r),
				    c->steps[k].want);
				failed++;
				break;
			}
		}
		if (strcmp(trace, c->want_trace) != 0) {
			print_error("case \"%s\": ran \"%s\", want \"%s\"\n",
			    c->label, trace, c->want_trace);
			failed++;
		}
		h_close(&h);
	}
	if (failed > 0)
		fail_msg("%d framework case(s) failed", failed);
}

/* A handler that answers later makes chain_run PENDING; DONE otherwise. */
static void
test_pending_and_done(void **state)
{
	struct h h;
	bool pending;

	(void)state;
	h_open(&h, "on helo { probe a }\non mail { probe b async 1 }\n"
	    "on rcpt { probe c delay 1 }\n");
	h_run(&h, SMTP_STAGE_HELO, "h", &pending);
	assert_false(pending);
	h_run(&h, SMTP_STAGE_MAIL, "a@b.org", &pending);
	assert_true(pending);
	h_run(&h, SMTP_STAGE_RCPT, "a@b.org", &pending);
	assert_true(pending);
	h_close(&h);
}

static void
test_delay_duration(void **state)
{
	struct h h;

	(void)state;
	h_open(&h, "on helo { tarpit 300ms }\n");
	uint64_t t0 = util_now_ms();
	struct chain_result r = h_run(&h, SMTP_STAGE_HELO, "h", NULL);
	uint64_t took = util_now_ms() - t0;
	assert_string_equal(h_show(&r), "ok");
	if (took < 290 || took > 2000)
		fail_msg("case \"tarpit 300ms\": took %llu ms",
		    (unsigned long long)took);
	h_close(&h);
}

/* A tarpitted session does not hold up another one on the same loop. */
static void
test_tarpit_other_session(void **state)
{
	struct h h;
	struct got g = { 0 };
	struct chain_result res;

	(void)state;
	h_open(&h, "on helo { tarpit 2s }\non mail { probe fast }\n");
	assert_int_equal(chain_run(h.cs, &(struct smtp_event){
	    .stage = SMTP_STAGE_HELO, .arg = "slow" }, got_cb, &g, &res),
	    CHAIN_PENDING);
	struct chain_session_info info = { .sid = "t2", .ip = "192.0.2.8",
	    .hostname = "mx.test" };
	struct chain_session *other = chain_session_new(h.set, h.loop, &info);
	uint64_t t0 = util_now_ms();
	assert_int_equal(chain_run(other, &(struct smtp_event){
	    .stage = SMTP_STAGE_MAIL, .arg = "a@b.org" }, got_cb, &g, &res),
	    CHAIN_DONE);
	assert_true(util_now_ms() - t0 < 100);
	assert_false(g.done);
	chain_session_free(&other);
	h_close(&h);	/* frees the tarpitted session: no callback after */
	assert_false(g.done);
}

static void
test_call_timeout(void **state)
{
	struct h h;

	(void)state;
	h_open_opts(&h, "on rcpt { probe a never }\n", "127.0.0.1:9", 100);
	struct chain_result r = h_run(&h, SMTP_STAGE_RCPT, "x@y.org", NULL);
	assert_string_equal(h_show(&r), "451 4.3.0 Local error in processing, "
	    "try again later");
	h_close(&h);
	h_open_opts(&h, "on rcpt { probe a never on-error accept }\n",
	    "127.0.0.1:9", 100);
	r = h_run(&h, SMTP_STAGE_RCPT, "x@y.org", NULL);
	assert_string_equal(h_show(&r), "ok");
	h_close(&h);
}

/* Freed while a handler is pending: cancelled, no callback, no leak. */
static void
test_free_while_pending(void **state)
{
	struct h h;
	struct got g = { 0 };
	struct chain_result res;

	(void)state;
	h_open(&h, "on rcpt { probe a never }\non disconnect { probe d async "
	    "5 }\n");
	assert_int_equal(chain_run(h.cs, &(struct smtp_event){
	    .stage = SMTP_STAGE_RCPT, .arg = "x@y.org" }, got_cb, &g, &res),
	    CHAIN_PENDING);
	h_close(&h);
	assert_false(g.done);
	assert_string_equal(trace, "a,d");
}

static void
test_disposition(void **state)
{
	struct h h;
	const char *action = NULL;

	(void)state;
	h_open(&h, "on rcpt { quarantine quar }\non data { discard }\n");
	h_run(&h, SMTP_STAGE_MAIL, "a@b.org", NULL);
	assert_int_equal(chain_session_disposition(h.cs, &action),
	    CHAIN_DISP_DELIVER);
	struct chain_result r = h_run(&h, SMTP_STAGE_RCPT, "x@y.org", NULL);
	assert_true(r.accepted);
	assert_int_equal(chain_session_disposition(h.cs, &action),
	    CHAIN_DISP_QUARANTINE);
	assert_string_equal(action, "quar");
	h_run(&h, SMTP_STAGE_DATA, "", NULL);
	assert_int_equal(chain_session_disposition(h.cs, &action),
	    CHAIN_DISP_DISCARD);
	chain_session_tx_reset(h.cs);
	assert_int_equal(chain_session_disposition(h.cs, &action),
	    CHAIN_DISP_DELIVER);
	h_close(&h);
}

/* The header chain runs when the blank line arrives; eom applies it. */
static void
test_header_chain(void **state)
{
	static const char msg[] = "From: a@b.org\nSubject: hi\n\nbody\n";
	struct h h;

	(void)state;
	for (size_t cut = 0; cut <= sizeof(msg) - 1; cut++) {
		h_open(&h, "on header { probe h async 5 reject 554 5.7.1 "
		    "spam; }\non eom { probe e }\n");
		h_run(&h, SMTP_STAGE_MAIL, "a@b.org", NULL);
		h_run(&h, SMTP_STAGE_RCPT, "x@y.org", NULL);
		h_run(&h, SMTP_STAGE_DATA, "", NULL);
		chain_session_body(h.cs, msg, cut);
		chain_session_body(h.cs, msg + cut, sizeof(msg) - 1 - cut);
		size_t len;
		const char *hdr = chain_session_headers(h.cs, &len);
		if (hdr == NULL || len != 26 || memcmp(hdr, msg, len) != 0)
			fail_msg("case \"cut %zu\": header block %zu bytes",
			    cut, len);
		struct smtp_event ev = { .stage = SMTP_STAGE_EOM, .size = 33 };
		struct chain_result r = h_run_ev(&h, &ev, NULL);
		if (strcmp(h_show(&r), "554 5.7.1 spam") != 0 ||
		    strcmp(trace, "h") != 0)
			fail_msg("case \"cut %zu\": got \"%s\" ran \"%s\"",
			    cut, h_show(&r), trace);
		h_close(&h);
	}
	/* Passing headers: the eom chain runs after them. */
	h_open(&h, "on header { probe h }\non eom { probe e reject 550 "
	    "5.7.1 \"size %{size}\" }\n");
	h_run(&h, SMTP_STAGE_DATA, "", NULL);
	chain_session_body(h.cs, "Subject: x\n", 11);	/* no blank line */
	struct smtp_event ev = { .stage = SMTP_STAGE_EOM, .size = 11 };
	struct chain_result r = h_run_ev(&h, &ev, NULL);
	assert_string_equal(h_show(&r), "550 5.7.1 size 11");
	assert_string_equal(trace, "h,e");
	h_close(&h);
}

static void
test_kv_limits(void **state)
{
	struct h h;
	const char *k, *v;

	(void)state;
	h_open(&h, "");
	assert_int_equal(chain_kv_set(h.cs, CHAIN_SCOPE_SESSION, "a", "1"), 0);
	assert_int_equal(chain_kv_set(h.cs, CHAIN_SCOPE_SESSION, "b", "2"), 0);
	assert_int_equal(chain_kv_set(h.cs, CHAIN_SCOPE_SESSION, "a", "3"), 0);
	assert_true(chain_kv_at(h.cs, CHAIN_SCOPE_SESSION, 0, &k, &v));
	assert_string_equal(k, "a");
	assert_string_equal(v, "3");
	assert_int_equal(chain_kv_set(h.cs, CHAIN_SCOPE_SESSION, "a", NULL),
	    0);
	assert_null(chain_kv_get(h.cs, CHAIN_SCOPE_SESSION, "a"));
	assert_int_equal(chain_kv_set(h.cs, CHAIN_SCOPE_SESSION, "bad key",
	    "x"), -1);
	assert_int_equal(chain_kv_set(h.cs, CHAIN_SCOPE_SESSION, "k",
	    "line\nbreak"), -1);
	for (int i = 0; i < 70; i++) {
		char key[16];
		snprintf(key, sizeof(key), "k%d", i);
		int rc = chain_kv_set(h.cs, CHAIN_SCOPE_TX, key, "v");
		if (rc != (i < 64 ? 0 : -1))
			fail_msg("case \"entry %d\": got %d", i, rc);
	}
	h_close(&h);
}

/* data/X.conf: the config (after the common prefix) -> data/X.err. */
static void
test_golden(void **state)
{
	static const char *const names[] = { "on_syntax", "on_handlers",
	    "on_reputation" };
	int failed = 0;

	(void)state;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		char path[128], *errs = NULL;
		struct util_buf in = { 0 }, want = { 0 };
		snprintf(path, sizeof(path), "data/%s.conf", names[i]);
		FILE *f = fopen(path, "r");
		assert_non_null(f);
		char buf[4096];
		size_t n;
		util_buf_addstr(&in, h_prefix);
		while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
			util_buf_add(&in, buf, n);
		fclose(f);
		snprintf(path, sizeof(path), "data/%s.err", names[i]);
		f = fopen(path, "r");
		assert_non_null(f);
		while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
			util_buf_add(&want, buf, n);
		fclose(f);
		struct config *c = config_parse(names[i], util_buf_cstr(&in),
		    &errs);
		if (c != NULL) {
			struct chain_set *set = chain_set_new(c, &errs);
			chain_set_unref(&set);
			config_free(&c);
		}
		const char *got = errs != NULL ? errs : "";
		if (strcmp(got, util_buf_cstr(&want)) != 0) {
			print_error("case \"%s\": got\n%s\nwant\n%s\n",
			    names[i], got, util_buf_cstr(&want));
			failed++;
		}
		free(errs);
		util_buf_clear(&in);
		util_buf_clear(&want);
	}
	if (failed > 0)
		fail_msg("%d golden case(s) differ", failed);
}

#define FRAMEWORK_TESTS \
	cmocka_unit_test(test_framework_cases), \
	cmocka_unit_test(test_pending_and_done), \
	cmocka_unit_test(test_delay_duration), \
	cmocka_unit_test(test_tarpit_other_session), \
	cmocka_unit_test(test_call_timeout), \
	cmocka_unit_test(test_free_while_pending), \
	cmocka_unit_test(test_disposition), \
	cmocka_unit_test(test_header_chain), \
	cmocka_unit_test(test_kv_limits), \
	cmocka_unit_test(test_golden),
