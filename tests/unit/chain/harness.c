/* tests/unit/chain/harness.c: included by test_chain.c. */
static const char h_prefix[] =
    "hostname mx.test\n"
    "listen 127.0.0.1:2525\n"
    "action local maildir \"/tmp/x/%{rcpt.user}\"\n"
    "action quar maildir \"/tmp/q\"\n"
    "match any action local\n"
    "table users { alice@example.org, bob@example.org }\n"
    "state memory\n";

/* The state store of the next h_open (a test may point it elsewhere). */
static const char *h_store = "memory:";

/* Build everything from chains (config text); abort the test on errors. */
static void
h_open_opts(struct h *h, const char *chains, const char *resolver,
    uint64_t call_timeout_ms)
{
	char *text = xasprintf("%s%s", h_prefix, chains);
	char *errs = NULL;
	const char *err = NULL;

	memset(h, 0, sizeof(*h));
	h->base = event_base_new();
	h->cfg = config_parse("test.conf", text, &errs);
	free(text);
	if (h->cfg == NULL)
		fail_msg("config: %s", errs);
	h->set = chain_set_new(h->cfg, &errs);
	if (h->set == NULL)
		fail_msg("chains: %s", errs);
	struct chain_loop_opts o = { .resolver = resolver,
	    .store = h_store, .call_timeout_ms = call_timeout_ms };
	h->loop = chain_loop_new(h->base, h->cfg, &o, &err);
	if (h->loop == NULL)
		fail_msg("loop: %s", err);
	struct chain_session_info info = { .sid = "t1", .ip = "192.0.2.7",
	    .port = 40000, .hostname = "mx.test" };
	h->cs = chain_session_new(h->set, h->loop, &info);
	trace[0] = '\0';
}

static void
h_open(struct h *h, const char *chains)
{
	h_open_opts(h, chains, "127.0.0.1:9", 0);
}

/* A new session from ip (the old one ends, its disconnect chain runs). */
static void
h_session(struct h *h, const char *ip)
{
	struct chain_session_info info = { .sid = "t2", .ip = ip,
	    .port = 40001, .hostname = "mx.test" };

	chain_session_free(&h->cs);
	h->cs = chain_session_new(h->set, h->loop, &info);
}

static void
h_close(struct h *h)
{
	chain_session_free(&h->cs);
	/* Let detached disconnect runs and store answers finish. */
	for (uint64_t end = util_now_ms() + 60; util_now_ms() < end;
	    usleep(1000))
		event_base_loop(h->base, EVLOOP_NONBLOCK);
	chain_set_unref(&h->set);
	chain_loop_free(&h->loop);
	event_base_loop(h->base, EVLOOP_NONBLOCK);
	config_free(&h->cfg);
	event_base_free(h->base);
}

struct got {
	bool			done;
	int			calls;
	struct chain_result	res;
};

static void
got_cb(void *arg, const struct chain_result *res)
{
	struct got *g = arg;

	g->done = true;
	g->calls++;
	g->res = *res;
}

/* Run a stage to its end (deadline 5 s); *pending_out: it went async. */
static struct chain_result
h_run_ev(struct h *h, const struct smtp_event *ev, bool *pending_out)
{
	struct got g = { 0 };
	struct chain_result res;

	enum chain_status s = chain_run(h->cs, ev, got_cb, &g, &res);
	if (pending_out != NULL)
		*pending_out = s == CHAIN_PENDING;
	if (s == CHAIN_DONE) {
		assert_int_equal(g.calls, 0);
		return res;
	}
	if (g.done)
		fail_msg("done_cb called from inside chain_run");
	uint64_t end = util_now_ms() + 5000;
	while (!g.done && util_now_ms() < end)
		event_base_loop(h->base, EVLOOP_ONCE);
	if (!g.done)
		fail_msg("stage %s: no answer within 5 s",
		    chain_stage_name(ev->stage));
	assert_int_equal(g.calls, 1);
	return g.res;
}

static struct chain_result
h_run(struct h *h, enum smtp_stage st, const char *arg, bool *pending_out)
{
	struct smtp_event ev = { .stage = st, .arg = arg, .esmtp = true };

	return h_run_ev(h, &ev, pending_out);
}

/* "250" for OK with the default reply, else "CODE TEXT" or "close CODE". */
static const char *
h_show(const struct chain_result *r)
{
	static char buf[600];

	if (r->verdict == SMTP_OK && r->reply.code == 0)
		return "ok";
	util_snprintf(buf, sizeof(buf), "%s%d %s", r->verdict == SMTP_CLOSE ?
	    "close " : "", r->reply.code, r->reply.text);
	return buf;
}
