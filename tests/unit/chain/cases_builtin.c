/* tests/unit/chain/cases_builtin.c: included by test_chain.c. */

/* One step: a new session from ip (when set), then a stage. */
struct bi_step {
	const char	*ip;		/* NULL: same session */
	enum smtp_stage	 st;
	const char	*arg;
	const char	*want;
	unsigned	 sleep_ms;	/* before the step */
	const char	*want_kv;	/* "session.k=v" / "tx.k=v", or NULL */
};
struct bi_case {
	const char	*label;
	const char	*chains;
	struct bi_step	 steps[8];
};

#define B(ip, st, arg, want)	{ ip, SMTP_STAGE_##st, arg, want, 0, NULL }
#define BS(ms, ip, st, arg, want) { ip, SMTP_STAGE_##st, arg, want, ms, NULL }
#define BK(ip, st, arg, want, kv) { ip, SMTP_STAGE_##st, arg, want, 0, kv }
#define LISTED	"554 5.7.1 Service unavailable; client [192.0.2.7] listed"
#define GREY	"451 4.7.1 Greylisted, try again in 1 seconds"
#define RATE	"450 4.7.1 Rate limit exceeded, slow down"
#define REP_LOW	"550 5.7.1 Rejected for poor reputation"

static const struct bi_case bi_cases[] = {
	{ "dnsbl listed, then from the cache", "on connect { dnsbl bl.test }\n",
	    { BK(NULL, CONNECT, "", LISTED, "session.dnsbl.bl.test=127.0.0.2"),
	    B("192.0.2.7", CONNECT, "", LISTED),
	    B("192.0.2.8", CONNECT, "", "ok") } },
	{ "dnsbl match list", "on connect { dnsbl bl.test match 127.0.0.4 }\n",
	    { B(NULL, CONNECT, "", "ok"),
	    B("192.0.2.9", CONNECT, "", "554 5.7.1 Service unavailable; "
	    "client [192.0.2.9] listed") } },
	{ "dnsbl tag only", "on connect { dnsbl bl.test tag }\n",
	    { BK(NULL, CONNECT, "", "ok", "session.dnsbl.bl.test=127.0.0.2") } },
	{ "dnsbl own reply", "on rcpt { dnsbl bl.test 550 5.7.1 "
	    "\"%{client.ip} is listed\" }\n",
	    { B(NULL, RCPT, "a@b.org", "550 5.7.1 192.0.2.7 is listed") } },
	{ "rhsbl on the sender domain", "on mail { rhsbl rhs.test }\n",
	    { B(NULL, MAIL, "x@spam.example", "554 5.7.1 Service unavailable; "
	    "sender domain listed"), B(NULL, MAIL, "x@good.example", "ok"),
	    B(NULL, MAIL, "", "ok") } },
	{ "fcrdns pass", "on connect { fcrdns require }\n"
	    "on helo { reject 550 5.7.1 \"%{client.rdns}\" }\n",
	    { BK(NULL, CONNECT, "", "ok", "session.fcrdns=pass"),
	    B(NULL, HELO, "h", "550 5.7.1 mail.example.net") } },
	{ "fcrdns mismatch", "on connect { fcrdns require }\n",
	    { B("192.0.2.9", CONNECT, "", "450 4.7.25 Client host rejected: "
	    "cannot find your hostname, [192.0.2.9]") } },
	{ "fcrdns no PTR, tag only", "on connect { fcrdns }\n",
	    { BK("192.0.2.10", CONNECT, "", "ok", "session.fcrdns=fail") } },
	{ "greylist: 451, 451, pass after the delay, network whitelisted",
	    "on rcpt { greylist delay 1s lifetime 1h }\n",
	    { B(NULL, MAIL, "s@t.org", "ok"),
	    BK(NULL, RCPT, "a@b.org", GREY, "tx.greylist=deferred"),
	    B(NULL, RCPT, "a@b.org", GREY),
	    BS(1100, NULL, RCPT, "a@b.org", "ok"),
	    B("192.0.2.99", MAIL, "other@t.org", "ok"),
	    BK(NULL, RCPT, "c@b.org", "ok", "tx.greylist=pass") } },
	{ "greylist: a different sender is a new triplet",
	    "on rcpt { greylist delay 1h lifetime 2h }\n",
	    { B(NULL, MAIL, "s@t.org", "ok"),
	    B(NULL, RCPT, "a@b.org", "451 4.7.1 Greylisted, try again in 3600 "
	    "seconds"), B(NULL, MAIL, "", "ok"),
	    B(NULL, RCPT, "a@b.org", "451 4.7.1 Greylisted, try again in 3600 "
	    "seconds") } },
	{ "ratelimit per ip at connect", "on connect { ratelimit 2/1h per ip }\n",
	    { B(NULL, CONNECT, "", "ok"), B("192.0.2.7", CONNECT, "", "ok"),
	    B("192.0.2.7", CONNECT, "", "close 421 4.7.0 Rate limit exceeded, "
	    "slow down"), B("192.0.2.8", CONNECT, "", "ok") } },
	{ "ratelimit window ages out", "on helo { ratelimit 2/1s per helo }\n",
	    { B(NULL, HELO, "h1", "ok"), B(NULL, HELO, "h1", "ok"),
	    B(NULL, HELO, "h1", RATE), B(NULL, HELO, "h2", "ok"),
	    BS(2100, NULL, HELO, "h1", "ok") } },
	{ "ratelimit per sender and rcpt",
	    "on mail { ratelimit 1/1h per sender }\non rcpt { ratelimit 1/1h "
	    "per rcpt 452 4.5.3 \"too many for %{rcpt}\" }\n",
	    { B(NULL, MAIL, "s@t.org", "ok"), B(NULL, RCPT, "a@b.org", "ok"),
	    B(NULL, RCPT, "a@b.org", "452 4.5.3 too many for a@b.org"),
	    B(NULL, MAIL, "s@t.org", RATE) } },
	{ "ratelimit: each handler counts its own runs",
	    "on connect { ratelimit 100/1h per ip }\n"
	    "on mail { ratelimit 2/1h per ip }\n"
	    "on mail { ratelimit 3/1h per ip 451 4.7.1 third }\n",
	    { B(NULL, CONNECT, "", "ok"), B(NULL, MAIL, "s@t.org", "ok"),
	    B(NULL, MAIL, "s@t.org", "ok"), B(NULL, MAIL, "s@t.org", RATE) } },
	{ "penalty: no valid recipient counts against the IP",
	    "on connect { ratelimit 3/1h per ip }\non disconnect { penalty 5 "
	    "}\n",
	    { B(NULL, CONNECT, "", "ok"), B(NULL, MAIL, "s@t.org", "ok"),
	    B("192.0.2.7", CONNECT, "", "close 421 4.7.0 Rate limit "
	    "exceeded, slow down") } },
	{ "verify", "on rcpt { verify <users> }\n",
	    { B(NULL, RCPT, "alice@example.org", "ok"),
	    B(NULL, RCPT, "Bob@Example.org", "ok"),
	    B(NULL, RCPT, "eve@example.org", "550 5.1.1 <eve@example.org>: "
	    "Recipient address rejected: User unknown") } },
	{ "size per sender domain", "on mail { size 1k sender @big.example }\n",
	    { B(NULL, MAIL, "a@big.example", "552 5.3.4 Message size exceeds "
	    "the limit for this address"), B(NULL, MAIL, "a@other.example",
	    "ok") } },
	{ "ban, then banned at connect", "on connect { banned }\n"
	    "on helo { ban 1h }\n",
	    { B(NULL, CONNECT, "", "ok"), B(NULL, HELO, "h", "ok"),
	    B("192.0.2.7", CONNECT, "", "close 554 5.7.1 192.0.2.7 is banned "
	    "for a while"), B("192.0.2.8", CONNECT, "", "ok") } },
	{ "trap with a ban", "on connect { banned; trap ban 1h }\n",
	    { B(NULL, CONNECT, "", "ok"), B(NULL, RCPT, "a@b.org", "close 550 "
	    "5.5.1 Command out of sequence, closing connection"),
	    B("192.0.2.7", CONNECT, "", "close 554 5.7.1 192.0.2.7 is banned "
	    "for a while") } },
	{ "spf pass, fail, softfail, none", "on mail { spf }\n",
	    { BK(NULL, MAIL, "a@pass.example", "ok", "tx.spf=pass"),
	    B(NULL, MAIL, "a@fail.example", "550 5.7.23 SPF check failed for "
	    "fail.example from 192.0.2.7"),
	    BK(NULL, MAIL, "a@soft.example", "ok", "tx.spf=softfail"),
	    BK(NULL, MAIL, "a@none.example", "ok", "tx.spf=none") } },
	{ "spf reject-softfail", "on mail { spf reject-softfail }\n",
	    { B(NULL, MAIL, "a@soft.example", "550 5.7.23 SPF softfail for "
	    "soft.example from 192.0.2.7") } },
	{ "reputation check: missing scores read as 0, domain once known",
	    "on helo { reputation check }\n"
	    "on mail { reputation check below 0 }\n",
	    { BK(NULL, HELO, "h", "ok", "session.rep.ip=0"),
	    BK(NULL, HELO, "h", "ok", "session.rep.domain=(none)"),
	    BK(NULL, MAIL, "s@t.org", "ok", "session.rep.domain=0"),
	    BK(NULL, MAIL, "", "ok", "session.rep.domain=(none)") } },
	/* No MAIL in the first session: its end costs nothing (session.c). */
	{ "reputation add -3 ip, then below -2 refuses that IP only",
	    "on rcpt { reputation add -3 ip }\n"
	    "on mail { reputation check below -2 }\n",
	    { B(NULL, RCPT, "a@b.org", "ok"),
	    BK("192.0.2.7", MAIL, "s@t.org", REP_LOW, "session.rep.ip=-3"),
	    BK("192.0.2.8", MAIL, "s@u.org", "ok", "session.rep.ip=0"),
	    BK(NULL, MAIL, "s@u.org", "ok", "session.rep.domain=0") } },
	{ "reputation add on the domain, case-insensitive; own reply",
	    "on mail { reputation check below 0 451 4.7.1 "
	    "\"low %{session.rep.ip}/%{session.rep.domain}\" }\n"
	    "on rcpt { reputation add -5 domain }\n",
	    { B(NULL, MAIL, "a@Bad.Example", "ok"),
	    B(NULL, RCPT, "x@y.org", "ok"),
	    BK(NULL, MAIL, "a@Bad.Example", "451 4.7.1 low 0/-5",
	    "session.rep.domain=-5"),
	    B("192.0.2.8", MAIL, "b@bad.EXAMPLE", "451 4.7.1 low 0/-6"),
	    B("192.0.2.9", MAIL, "c@good.example", "ok") } },
	{ "reputation add both (the IP alone before MAIL); N itself passes",
	    "on helo { reputation add 2 }\n"
	    "on mail { reputation add -1 both; reputation check below -1 }\n",
	    { B(NULL, HELO, "h", "ok"),
	    BK(NULL, MAIL, "s@t.org", "ok", "session.rep.ip=1"),
	    BK(NULL, MAIL, "s@t.org", REP_LOW, "session.rep.domain=-2") } },
	{ "reputation check at connect: 421 closes",
	    "on connect { reputation check below 0 }\n"
	    "on helo { reputation add -1 }\n",
	    { B(NULL, CONNECT, "", "ok"), B(NULL, HELO, "h", "ok"),
	    B("192.0.2.7", CONNECT, "", "close 421 4.7.0 mx.test poor "
	    "reputation, try again later"),
	    B("192.0.2.8", CONNECT, "", "ok") } },
};

static const char *const spf_zone[] = {
	"pass.example v=spf1 ip4:192.0.2.0/24 -all",
	"fail.example v=spf1 -all",
	"soft.example v=spf1 ~all",
	NULL,
};

/* "session.k=v": does the session hold it? */
static bool
bi_kv_ok(struct h *h, const char *want, char *got, size_t gotsz)
{
	const char *eq = strchr(want, '=');
	char name[128], buf[64];

	util_snprintf(name, sizeof(name), "%.*s", (int)(eq - want), want);
	const char *v = chain_session_get(h->cs, name, buf, sizeof(buf));
	util_snprintf(got, gotsz, "%s=%s", name, v != NULL ? v : "(none)");
	return strcmp(got, want) == 0;
}

static void
test_builtin_cases(void **state)
{
	struct dnsd d;
	int failed = 0;

	(void)state;
	chain_spf_set_test_zone(spf_zone);
	dnsd_bind(&d);
	for (size_t i = 0; i < sizeof(bi_cases) / sizeof(bi_cases[0]); i++) {
		const struct bi_case *c = &bi_cases[i];
		struct h h;
		h_open_opts(&h, c->chains, d.resolver, 0);
		dnsd_attach(&d, h.base);
		for (size_t k = 0; k < 8 && c->steps[k].want != NULL; k++) {
			const struct bi_step *s = &c->steps[k];
			char got[400];
			if (s->sleep_ms > 0)
				usleep(s->sleep_ms * 1000);
			if (s->ip != NULL)
				h_session(&h, s->ip);
			struct smtp_event ev = { .stage = s->st,
			    .arg = s->arg, .size = s->st == SMTP_STAGE_MAIL ?
			    2000 : 0 };
			struct chain_result r = h_run_ev(&h, &ev, NULL);
			if (strcmp(h_show(&r), s->want) != 0) {
				print_error("case \"%s\" step %zu: got \"%s\", "
				    "want \"%s\"\n", c->label, k, h_show(&r),
				    s->want);
				failed++;
				break;
			}
			if (s->want_kv != NULL && !bi_kv_ok(&h, s->want_kv,
			    got, sizeof(got))) {
				print_error("case \"%s\" step %zu: got %s, "
				    "want %s\n", c->label, k, got, s->want_kv);
				failed++;
				break;
			}
		}
		h_close(&h);
		event_free(d.ev);
	}
	close(d.fd);
	chain_spf_set_test_zone(NULL);
	if (failed > 0)
		fail_msg("%d builtin case(s) failed", failed);
}

/* A cached DNS answer is not asked again. */
static void
test_dnsbl_cache(void **state)
{
	struct dnsd d;
	struct h h;

	(void)state;
	dnsd_bind(&d);
	h_open_opts(&h, "on connect { dnsbl bl.test }\n", d.resolver, 0);
	dnsd_attach(&d, h.base);
	h_run(&h, SMTP_STAGE_CONNECT, "", NULL);
	int q = d.queries;
	assert_int_equal(q, 1);
	h_session(&h, "192.0.2.7");
	h_run(&h, SMTP_STAGE_CONNECT, "", NULL);
	assert_int_equal(d.queries, q);
	h_close(&h);
	dnsd_stop(&d);
}

/* soft-invalid: the unknown recipient gets 250 but no delivery. */
static void
test_verify_soft(void **state)
{
	struct h h;

	(void)state;
	h_open(&h, "on rcpt { verify <users> soft-invalid }\n");
	struct chain_result r = h_run(&h, SMTP_STAGE_RCPT, "eve@example.org",
	    NULL);
	assert_string_equal(h_show(&r), "ok");
	assert_true(r.no_deliver);
	r = h_run(&h, SMTP_STAGE_RCPT, "alice@example.org", NULL);
	assert_false(r.no_deliver);
	h_close(&h);
}

/* Header checks and the per-subject rate, fed through the body. */
static void
test_header_checks(void **state)
{
	static const struct {
		const char *label, *chains, *msg, *want;
	} cases[] = {
		{ "required present", "on header { header require From,Date }\n",
		    "From: a\nDate: x\n\nb\n", "ok" },
		{ "required missing", "on header { header require From,Date }\n",
		    "From: a\n\nb\n", "550 5.6.0 Message lacks a Date: header "
		    "field" },
		{ "duplicate subject", "on header { header unique Subject,From "
		    "}\n", "Subject: a\nFrom: x\nsubject: b\n\n",
		    "550 5.6.0 Message has 2 Subject: header fields" },
		{ "block too big", "on header { header max-size 10 }\n",
		    "Subject: this is long\n\nbody\n",
		    "552 5.3.4 Message header block too large" },
		{ "size at eom", "on eom { size 10 }\n", "Subject: x\n\nbody "
		    "more than ten\n", "552 5.3.4 Message size exceeds the limit "
		    "for this address" },
	};
	int failed = 0;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct h h;
		h_open(&h, cases[i].chains);
		h_run(&h, SMTP_STAGE_MAIL, "a@b.org", NULL);
		h_run(&h, SMTP_STAGE_DATA, "", NULL);
		chain_session_body(h.cs, cases[i].msg, strlen(cases[i].msg));
		struct smtp_event ev = { .stage = SMTP_STAGE_EOM,
		    .size = strlen(cases[i].msg) };
		struct chain_result r = h_run_ev(&h, &ev, NULL);
		if (strcmp(h_show(&r), cases[i].want) != 0) {
			print_error("case \"%s\": got \"%s\", want \"%s\"\n",
			    cases[i].label, h_show(&r), cases[i].want);
			failed++;
		}
		h_close(&h);
	}
	/* ratelimit per subject: the second message with it is refused. */
	struct h h;
	h_open(&h, "on header { ratelimit 1/1h per subject }\n");
	const char *want[] = { "ok", RATE, "ok" };
	const char *msgs[] = { "Subject: Buy\n now\n\nx\n",
	    "Subject: Buy now\n\ny\n", "Subject: other\n\nz\n" };
	for (int m = 0; m < 3; m++) {
		h_run(&h, SMTP_STAGE_MAIL, "a@b.org", NULL);
		h_run(&h, SMTP_STAGE_DATA, "", NULL);
		chain_session_body(h.cs, msgs[m], strlen(msgs[m]));
		struct smtp_event ev = { .stage = SMTP_STAGE_EOM, .size = 5 };
		struct chain_result r = h_run_ev(&h, &ev, NULL);
		if (strcmp(h_show(&r), want[m]) != 0) {
			print_error("case \"subject %d\": got \"%s\", want "
			    "\"%s\"\n", m, h_show(&r), want[m]);
			failed++;
		}
		chain_session_tx_reset(h.cs);
	}
	h_close(&h);
	if (failed > 0)
		fail_msg("%d header case(s) failed", failed);
}

/* A store that cannot answer: reputation lets the client through. */
static void
test_reputation_fail_open(void **state)
{
	struct h h;

	(void)state;
	h_store = "redis:127.0.0.1:1";		/* nothing listens there */
	h_open(&h, "on mail { reputation check below 1000 }\n");
	h_store = "memory:";
	chain_kv_set(h.cs, CHAIN_SCOPE_SESSION, "rep.ip", "5");
	struct chain_result r = h_run(&h, SMTP_STAGE_MAIL, "s@t.org", NULL);
	if (strcmp(h_show(&r), "ok") != 0)
		fail_msg("case \"store down\": got \"%s\", want \"ok\"",
		    h_show(&r));
	/* No stale or invented score is left for later handlers. */
	assert_null(chain_kv_get(h.cs, CHAIN_SCOPE_SESSION, "rep.ip"));
	assert_null(chain_kv_get(h.cs, CHAIN_SCOPE_SESSION, "rep.domain"));
	h_close(&h);
}

/* The network of a client: greylisting and "per ip" keys group by it. */
static void
test_ip_net(void **state)
{
	static const struct { const char *ip, *want; } cases[] = {
		{ "192.0.2.77", "192.0.2.0/24" },
		{ "2001:db8::1", "2001:db8::/64" },
		{ "2001:0db8:0000:0000:1234::9", "2001:db8::/64" },
		{ "2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64" },
	};
	char buf[64];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		chain_ip_net(cases[i].ip, buf, sizeof(buf));
		if (strcmp(buf, cases[i].want) != 0)
			fail_msg("case \"%s\": got %s, want %s", cases[i].ip,
			    buf, cases[i].want);
	}
}

#define BUILTIN_TESTS \
	cmocka_unit_test(test_ip_net), \
	cmocka_unit_test(test_builtin_cases), \
	cmocka_unit_test(test_dnsbl_cache), \
	cmocka_unit_test(test_verify_soft), \
	cmocka_unit_test(test_header_checks), \
	cmocka_unit_test(test_reputation_fail_open),
