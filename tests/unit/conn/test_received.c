/*
 * Unit tests of conn/received.c: the exact bytes of the Received: header
 * for each branch of the builder (protocol names, TLS, recipients, HELO
 * and DNS name filtering, IPv6) and its date in zones with and without
 * daylight saving time, on both sides of a change.
 */
#include "conn/conn_private.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

static void
set_tz(const char *tz)
{
	setenv("TZ", tz, 1);
	tzset();
}

/* Build r's header and compare it with want, byte for byte. */
static void
check(const struct conn_received *r, const char *want)
{
	struct util_buf b = { 0 };
	char got[2048];

	util_buf_addstr(&b, "X");	/* the header appends to what is there */
	conn_received_build(&b, r);
	assert_true(b.len < sizeof(got));
	memcpy(got, b.data, b.len);
	got[b.len] = '\0';
	util_buf_clear(&b);
	assert_int_equal(strlen(got), strlen(want) + 1);
	assert_memory_equal(got, "X", 1);
	assert_string_equal(got + 1, want);
}

static void
test_esmtp_plain(void **state)
{
	(void)state;
	set_tz("UTC");
	struct conn_received r = { .helo = "client.example.org", .ip =
	    "192.0.2.7", .hostname = "mx.example.net", .protocol = "ESMTP",
	    .qid = "4Q2kF7mXc1zA", .single_rcpt = "user@example.net",
	    .when = 1780000000 };
	check(&r, "Received: from client.example.org (unknown [192.0.2.7])\n"
	    "\tby mx.example.net (postern) with ESMTP id 4Q2kF7mXc1zA\n"
	    "\tfor <user@example.net>; Thu, 28 May 2026 20:26:40 +0000\n");
}

static void
test_esmtps_tls_many_rcpts(void **state)
{
	(void)state;
	set_tz("Europe/Berlin");
	struct conn_received r = { .helo = "[192.0.2.9]", .rdns =
	    "host9.example.org", .ip = "192.0.2.9", .hostname = "mx.example.net",
	    .protocol = "ESMTPS", .qid = "Q1", .tls =
	    "version=TLSv1.3 cipher=TLS_AES_256_GCM_SHA384 bits=256",
	    .when = 1780000001 };
	check(&r, "Received: from [192.0.2.9] (host9.example.org [192.0.2.9])\n"
	    "\t(version=TLSv1.3 cipher=TLS_AES_256_GCM_SHA384 bits=256)\n"
	    "\tby mx.example.net (postern) with ESMTPS id Q1; "
	    "Thu, 28 May 2026 22:26:41 +0200\n");
}

static void
test_esmtpa_winter(void **state)
{
	(void)state;
	set_tz("Europe/Berlin");
	struct conn_received r = { .helo = "a", .ip = "10.0.0.1", .hostname =
	    "h", .protocol = "ESMTPA", .qid = "Q2", .tls = "",
	    .single_rcpt = "x@y", .when = 1767225600 };
	check(&r, "Received: from a (unknown [10.0.0.1])\n"
	    "\tby h (postern) with ESMTPA id Q2\n"
	    "\tfor <x@y>; Thu, 01 Jan 2026 01:00:00 +0100\n");
}

static void
test_utf8_ipv6_half_hour_zone(void **state)
{
	(void)state;
	set_tz("Asia/Kolkata");
	struct conn_received r = { .helo = "[IPv6:2001:db8::1]", .rdns =
	    "v6.example.org", .ip = "2001:db8::1", .ipv6 = true, .hostname =
	    "mx.example.net", .protocol = "UTF8SMTPSA", .qid = "Q3", .tls =
	    "version=TLSv1.2 cipher=ECDHE-RSA-AES128-GCM-SHA256 bits=128",
	    .single_rcpt = "\xc3\xa9l\xc3\xa8ve@example.net",
	    .when = 1000000000 };
	check(&r, "Received: from [IPv6:2001:db8::1] (v6.example.org "
	    "[IPv6:2001:db8::1])\n"
	    "\t(version=TLSv1.2 cipher=ECDHE-RSA-AES128-GCM-SHA256 bits=128)\n"
	    "\tby mx.example.net (postern) with UTF8SMTPSA id Q3\n"
	    "\tfor <\xc3\xa9l\xc3\xa8ve@example.net>; "
	    "Sun, 09 Sep 2001 07:16:40 +0530\n");
}

static void
test_smtp_no_helo_negative_zone(void **state)
{
	(void)state;
	set_tz("America/St_Johns");
	struct conn_received r = { .helo = NULL, .ip = "203.0.113.5",
	    .hostname = "mx", .protocol = "SMTP", .qid = "Q4",
	    .when = 1783000000 };
	/* Newfoundland summer time: -0230; in winter -0330. */
	check(&r, "Received: from unknown (unknown [203.0.113.5])\n"
	    "\tby mx (postern) with SMTP id Q4; "
	    "Thu, 02 Jul 2026 11:16:40 -0230\n");
	r.when = 1769000000;
	r.helo = "";
	r.protocol = "UTF8SMTP";
	check(&r, "Received: from unknown (unknown [203.0.113.5])\n"
	    "\tby mx (postern) with UTF8SMTP id Q4; "
	    "Wed, 21 Jan 2026 09:23:20 -0330\n");
}

static void
test_helo_and_rdns_filtered(void **state)
{
	(void)state;
	set_tz("UTC");
	struct conn_received r = { .helo = "evil\r\nX-Injected: 1 (x) \xff_ok",
	    .rdns = "bad name\t.example", .ip = "198.51.100.1", .hostname = "mx",
	    .protocol = "ESMTP", .qid = "Q5", .when = 0 };
	check(&r, "Received: from evil??X-Injected:?1??x???_ok "
	    "(bad?name?.example [198.51.100.1])\n"
	    "\tby mx (postern) with ESMTP id Q5; "
	    "Thu, 01 Jan 1970 00:00:00 +0000\n");
}

static void
test_long_helo_cut(void **state)
{
	char helo[400], want[1024];

	(void)state;
	set_tz("UTC");
	memset(helo, 'h', sizeof(helo) - 1);
	helo[sizeof(helo) - 1] = '\0';
	struct conn_received r = { .helo = helo, .ip = "192.0.2.1",
	    .hostname = "mx", .protocol = "ESMTP", .qid = "Q6",
	    .when = 4102444799 };
	snprintf(want, sizeof(want), "Received: from %.255s (unknown "
	    "[192.0.2.1])\n\tby mx (postern) with ESMTP id Q6; "
	    "Thu, 31 Dec 2099 23:59:59 +0000\n", helo);
	check(&r, want);
}

/* Consecutive seconds across the spring and autumn changes in Berlin. */
static void
test_dst_changes(void **state)
{
	static const struct { int64_t t; const char *date; } c[] = {
		{ 1774745999, "Sun, 29 Mar 2026 01:59:59 +0100" },
		{ 1774746000, "Sun, 29 Mar 2026 03:00:00 +0200" },
		{ 1774746000, "Sun, 29 Mar 2026 03:00:00 +0200" },
		{ 1792889999, "Sun, 25 Oct 2026 02:59:59 +0200" },
		{ 1792890000, "Sun, 25 Oct 2026 02:00:00 +0100" },
		{ 1792889999, "Sun, 25 Oct 2026 02:59:59 +0200" },
		{ 951782400, "Tue, 29 Feb 2000 01:00:00 +0100" },
	};
	char want[256];

	(void)state;
	set_tz("Europe/Berlin");
	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		struct conn_received r = { .helo = "h", .ip = "192.0.2.1",
		    .hostname = "mx", .protocol = "ESMTP", .qid = "Q7",
		    .when = c[i].t };
		snprintf(want, sizeof(want), "Received: from h (unknown "
		    "[192.0.2.1])\n\tby mx (postern) with ESMTP id Q7; %s\n",
		    c[i].date);
		check(&r, want);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_esmtp_plain),
		cmocka_unit_test(test_esmtps_tls_many_rcpts),
		cmocka_unit_test(test_esmtpa_winter),
		cmocka_unit_test(test_utf8_ipv6_half_hour_zone),
		cmocka_unit_test(test_smtp_no_helo_negative_zone),
		cmocka_unit_test(test_helo_and_rdns_filtered),
		cmocka_unit_test(test_long_helo_cut),
		cmocka_unit_test(test_dst_changes),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
