/*
 * Unit tests of route/: first match wins, each kind of condition, unknown
 * user versus relay denied, and maildir template expansion with hostile
 * addresses.
 */
#include "route/route.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "config/config.h"
#include "log/log.h"
#include "util/util.h"

static const char route_conf[] =
    "listen 127.0.0.1:2525\n"
    "table vip { boss@example.org, @vip.example }\n"
    "table users file:data/users.txt\n"
    "table senders { friend@else.example, @trusted.example }\n"
    "action first discard\n"
    "action second discard\n"
    "action partner discard\n"
    "action filetab discard\n"
    "action viptab discard\n"
    "action sendertab discard\n"
    "action fromaddr discard\n"
    "action domain discard\n"
    "action mixed discard\n"
    "match to \"boss@example.org\" action first\n"
    "match to \"boss@example.org\" action second\n"
    "match to domain example.org from domain Partner.Example action partner\n"
    "match to <users> action filetab\n"
    "match to <vip> action viptab\n"
    "match from <senders> to domain shared.example action sendertab\n"
    "match from alerts@mon.example action fromaddr\n"
    "match to domain EXAMPLE.org action domain\n"
    "match to alice@Mixed.Example action mixed\n";

#define HIT(a)		a, 0
#define MISS(m)		NULL, m

static void
test_find(void **state)
{
	static const struct {
		const char	*name, *sender, *rcpt, *want;
		enum route_miss	 miss;
	} cases[] = {
		{ "address rule", "x@y.example", "boss@example.org", HIT("first") },
		{ "first match wins, any case", "x@y.example", "BOSS@Example.ORG", HIT("first") },
		{ "from domain", "a@partner.example", "joe@example.org", HIT("partner") },
		{ "from domain, any case", "a@PARTNER.EXAMPLE", "joe@example.org", HIT("partner") },
		{ "from domain never matches <>", "", "joe@example.org", HIT("domain") },
		{ "from domain is the domain, not a suffix", "a@x.partner.example", "joe@example.org", HIT("domain") },
		{ "file table address", "x@y.example", "Alice@File.Example", HIT("filetab") },
		{ "file table catch-all", "x@y.example", "anyone@catch.example", HIT("filetab") },
		{ "inline table address", "x@y.example", "boss@example.org", HIT("first") },
		{ "inline table catch-all", "x@y.example", "z@VIP.example", HIT("viptab") },
		{ "from table address", "friend@else.example", "u@shared.example", HIT("sendertab") },
		{ "from table catch-all", "x@trusted.example", "u@shared.example", HIT("sendertab") },
		{ "from table and <>", "", "u@shared.example", MISS(ROUTE_UNKNOWN_USER) },
		{ "from table, stranger", "s@x.example", "u@shared.example", MISS(ROUTE_UNKNOWN_USER) },
		{ "from address", "Alerts@mon.example", "a@elsewhere.example", HIT("fromaddr") },
		{ "from address is whole", "xalerts@mon.example", "a@elsewhere.example", MISS(ROUTE_RELAY_DENIED) },
		{ "foreign domain", "x@y.example", "a@elsewhere.example", MISS(ROUTE_RELAY_DENIED) },
		{ "subdomain is foreign", "x@y.example", "joe@sub.example.org", MISS(ROUTE_RELAY_DENIED) },
		{ "to address, any case", "x@y.example", "ALICE@mixed.example", HIT("mixed") },
		{ "domain of a to address is ours", "x@y.example", "bob@mixed.example", MISS(ROUTE_UNKNOWN_USER) },
		{ "domain of a file table key is ours", "x@y.example", "bob@file.example", MISS(ROUTE_UNKNOWN_USER) },
		{ "domain of an inline table key is ours", "x@y.example", "nobody@vip.example", HIT("viptab") },
		{ "no domain at all", "x@y.example", "postmaster", MISS(ROUTE_RELAY_DENIED) },
		{ "empty local part", "x@y.example", "@example.org", HIT("domain") },
	};
	char *errs = NULL;
	const char *err = NULL;

	(void)state;
	struct config *c = config_parse("route", route_conf, &errs);
	if (c == NULL)
		fail_msg("config: %s", errs);
	struct router *r = route_new(c, &err);
	if (r == NULL)
		fail_msg("route_new: %s", err);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		enum route_miss miss = (enum route_miss)-1;
		const struct config_action *a = route_find(r, cases[i].sender,
		    cases[i].rcpt, &miss);
		const char *got = a != NULL ? a->name :
		    miss == ROUTE_UNKNOWN_USER ? "unknown-user" :
		    miss == ROUTE_RELAY_DENIED ? "relay-denied" : "?";
		const char *want = cases[i].want != NULL ? cases[i].want :
		    cases[i].miss == ROUTE_UNKNOWN_USER ? "unknown-user" :
		    "relay-denied";
		if (strcmp(got, want) != 0)
			fail_msg("case \"%s\": got %s, want %s", cases[i].name,
			    got, want);
	}
	route_free(&r);
	assert_null(r);
	route_free(&r);
	config_free(&c);
}

/* "from local", "from authenticated", "from ip CIDR": who hands it over. */
static void
test_client_conditions(void **state)
{
	static const struct {
		const char	*name;
		const char	*ip;		/* NULL: local submission */
		const char	*auth;
		const char	*want;		/* action, or NULL: relay denied */
	} cases[] = {
		{ "loopback v4 relays", "127.0.0.1", NULL, "out" },
		{ "loopback 127/8", "127.1.2.3", NULL, "out" },
		{ "loopback v6", "::1", NULL, "out" },
		{ "local submission", NULL, NULL, "out" },
		{ "authenticated stranger", "203.0.113.9", "alice", "auth" },
		{ "trusted /24", "192.0.2.77", NULL, "net" },
		{ "outside the /24", "192.0.3.1", NULL, NULL },
		{ "v6 /32 inside", "2001:db8:ffff::1", NULL, "net6" },
		{ "v6 /32 outside", "2001:db9::1", NULL, NULL },
		{ "odd prefix /25 in", "198.51.100.127", NULL, "odd" },
		{ "odd prefix /25 out", "198.51.100.128", NULL, NULL },
		{ "stranger", "203.0.113.9", NULL, NULL },
	};
	char *errs = NULL;
	const char *err = NULL;
	enum route_miss miss;

	(void)state;
	struct config *c = config_parse("client", "listen 127.0.0.1:25\n"
	    "action out discard\naction auth discard\naction net discard\n"
	    "action net6 discard\naction odd discard\n"
	    "match from local action out\n"
	    "match from authenticated action auth\n"
	    "match from ip 192.0.2.9/24 action net\n"
	    "match from ip 2001:db8::/32 action net6\n"
	    "match from ip 198.51.100.0/25 action odd\n", &errs);
	if (c == NULL)
		fail_msg("config: %s", errs);
	struct router *r = route_new(c, &err);
	assert_non_null(r);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct route_client cl = { cases[i].ip, cases[i].auth };
		const struct config_action *a = route_find_client(r,
		    cases[i].ip == NULL ? NULL : &cl, "s@x.example",
		    "u@far.example", &miss);
		const char *got = a != NULL ? a->name : "(relay denied)";
		const char *want = cases[i].want != NULL ? cases[i].want :
		    "(relay denied)";
		if (strcmp(got, want) != 0 || (a == NULL &&
		    miss != ROUTE_RELAY_DENIED))
			fail_msg("case \"%s\": got %s, want %s", cases[i].name,
			    got, want);
	}
	route_free(&r);
	config_free(&c);

	static const char *const bad[] = { "from ip 300.1.1.1",
	    "from ip 10.0.0.0/33", "from ip ::1/129", "from ip", "from ip x/8",
	    "from ip 10.0.0.0/" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char *text = xasprintf("listen 127.0.0.1:25\naction a discard\n"
		    "match %s action a\n", bad[i]);
		errs = NULL;
		c = config_parse("bad", text, &errs);
		if (c != NULL || errs == NULL || strstr(errs, "bad:3:") == NULL)
			fail_msg("case \"%s\": accepted or wrong line: %s",
			    bad[i], errs != NULL ? errs : "(none)");
		config_free(&c);
		free(errs);
		free(text);
	}
}

static void
test_any_and_errors(void **state)
{
	char *errs = NULL;
	const char *err = NULL;
	enum route_miss miss;

	(void)state;
	struct config *c = config_parse("any", "listen 127.0.0.1:25\n"
	    "action all discard\naction never discard\n"
	    "match any action all\nmatch to domain x.example action never\n",
	    &errs);
	assert_non_null(c);
	struct router *r = route_new(c, &err);
	assert_non_null(r);
	assert_string_equal(route_find(r, "", "a@b.example", &miss)->name,
	    "all");
	assert_string_equal(route_find(r, "s@t", "a@x.example", &miss)->name,
	    "all");
	route_free(&r);
	config_free(&c);

	/* A missing table file fails route_new, naming the file. */
	c = config_parse("bad", "listen 127.0.0.1:25\n"
	    "table t file:data/no-such-file\naction a discard\n"
	    "match to <t> action a\n", &errs);
	assert_non_null(c);
	assert_null(route_new(c, &err));
	assert_non_null(strstr(err, "data/no-such-file"));
	config_free(&c);
}

static void
test_expand(void **state)
{
	static const struct { const char *tmpl, *rcpt, *want; } cases[] = {
		{ "var/mail/%{rcpt.user}/Maildir", "Alice@Example.org", "var/mail/alice/Maildir" },
		{ "%{rcpt.domain}/%{rcpt.user}", "../../etc@example.org", "example.org/_._.._etc" },
		{ "%{rcpt.domain}/%{rcpt.user}", "a/b@x.example", "x.example/a_b" },
		{ "%{rcpt.user}", ".hidden@x", "_hidden" },
		{ "%{rcpt.user}", "..@x", "_." },
		{ "%{rcpt.user}", "@example.org", "_" },
		{ "%{rcpt.user}", "jos\xc3\xa9@x", "jos__" },
		{ "%{rcpt.user}", "\"a@b\"@ex.org", "_a_b_" },
		{ "%{rcpt.user}", "a b\tc\\d:e", "a_b_c_d_e" },
		{ "%{rcpt.user}", "keep.these+tag=x_y-z@x", "keep.these+tag=x_y-z" },
		{ "%{rcpt.domain}", "u@../..", "_._.." },
		{ "%{rcpt.domain}", "u@EX/AMPLE", "ex_ample" },
		{ "%{rcpt.domain}", "postmaster", "_" },
		{ "%{rcpt.domain}", "u@", "_" },
		{ "%{rcpt}", "A+Tag@EX.org", "a+tag@ex.org" },
		{ "%{rcpt}", "../x@/etc", "_._x@_etc" },
		{ "%{rcpt}", "", "_@_" },
		{ "100%%/%{rcpt.user}%%", "u@x", "100%/u%" },
		{ "plain", "u@x", "plain" },
		{ "", "u@x", "" },
	};
	static const char *const bad[] = { "%{bad}", "%x", "%{rcpt", "x%",
	    "%{}", "%{rcpt.user}%{RCPT}", "%{ rcpt}" };

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *out = NULL;
		const char *err = NULL;
		if (route_expand(cases[i].tmpl, cases[i].rcpt, &out, &err) ==
		    -1)
			fail_msg("case \"%s\" \"%s\": error %s", cases[i].tmpl,
			    cases[i].rcpt, err);
		if (strcmp(out, cases[i].want) != 0)
			fail_msg("case \"%s\" \"%s\": got \"%s\", want \"%s\"",
			    cases[i].tmpl, cases[i].rcpt, out, cases[i].want);
		free(out);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char *out = NULL;
		const char *err = NULL;
		if (route_expand(bad[i], "u@x", &out, &err) != -1)
			fail_msg("case \"%s\": got \"%s\", want an error",
			    bad[i], out);
		assert_non_null(err);
		assert_null(out);
	}
}

/* Every byte value in the local part: never '/', never a leading '.'. */
static void
test_expand_every_byte(void **state)
{
	(void)state;
	for (int c = 1; c < 256; c++) {
		char rcpt[8] = { (char)c, (char)c, '@', (char)c, '\0' };
		char *out = NULL;
		const char *err = NULL;
		assert_int_equal(route_expand("%{rcpt.user}|%{rcpt.domain}",
		    rcpt, &out, &err), 0);
		if (c == '@') {
			free(out);	/* "@@@" splits differently */
			continue;
		}
		if (strlen(out) != 4 || out[0] == '.' || out[3] == '.' ||
		    strchr(out, '/') != NULL)
			fail_msg("case byte 0x%02x: got \"%s\"", c, out);
		for (const char *p = out; *p != '\0'; p++)
			if ((unsigned char)*p >= 0x80 || (*p >= 'A' &&
			    *p <= 'Z'))
				fail_msg("case byte 0x%02x: got \"%s\"", c, out);
		free(out);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_find),
		cmocka_unit_test(test_any_and_errors),
		cmocka_unit_test(test_client_conditions),
		cmocka_unit_test(test_expand),
		cmocka_unit_test(test_expand_every_byte),
	};
	log_init(false, NULL, LOG_LVL_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
