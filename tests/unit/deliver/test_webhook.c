/*
 * Unit tests of the webhook action (deliver/webhook.c, payload.c) against
 * server.py (a Python http.server that records every request): the JSON
 * payload of a MIME message in every encoding, raw and template bodies,
 * the idempotency key, the signature checked over what the server got,
 * and each kind of answer as a delivery outcome.
 */
#include "deliver/deliver.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "../http/srv.h"
#include "util/util.h"

#define SERVER	"../http/server.py"
#define MIXED	"../mime/data/mixed.eml"

static struct http_client *hc;

static const char *const rcpts[] = { "bridge@example.org",
    "other@example.org" };
static const struct deliver_origin origin = { .client_ip = "127.0.0.1",
    .helo = "app.local", .tls = "TLSv1.3", .auth_user = "app",
    .rcpts = rcpts, .nrcpts = 2 };

static struct deliver_msg
spooled(const char *path)
{
	struct deliver_msg m = { .content_path = path,
	    .return_path = "app@example.org", .qid = "Q7a", .received =
	    1700000000, .hostname = "mx.example.org", .origin = &origin };

	return m;
}

/* One request to s at path; the server's record of it (new ref). */
static json_t *
post(struct srv *s, struct deliver_webhook_opts *o, const char *path,
    const struct deliver_msg *m, struct deliver_rcpt_status *st,
    enum deliver_result want)
{
	char *url = xasprintf("%s%s", s->base, path);
	const char *err = NULL;
	json_t *recs, *rec;
	enum deliver_result r;

	o->url = url;
	r = deliver_webhook(hc, o, m, "bridge@example.org", st, &err);
	if (r != want)
		fail_msg("%s: got %d (%s), want %d", path, r, st->text, want);
	free(url);
	recs = srv_records(s);
	rec = json_incref(json_array_get(recs, json_array_size(recs) - 1));
	json_decref(recs);
	return rec;
}

static void
test_json_payload(void **state)
{
	struct deliver_webhook_opts o = { .format = DELIVER_WEBHOOK_JSON,
	    .limits = { .attach_max = 100000 } };
	struct deliver_msg m = spooled(MIXED);
	struct deliver_rcpt_status st;
	struct srv s;
	json_t *rec, *doc, *att;
	char *body;

	(void)state;
	srv_start(&s, SERVER, NULL, NULL);
	rec = post(&s, &o, "/hook", &m, &st, DELIVER_OK);
	assert_string_equal(st.text, "2.0.0 HTTP 200");
	assert_string_equal(rec_str(rec, "method"), "POST");
	assert_string_equal(rec_header(rec, "content-type"),
	    "application/json");
	assert_string_equal(rec_header(rec, "idempotency-key"),
	    "Q7a/bridge@example.org");
	assert_string_equal(rec_header(rec, "x-postern-envelope-from"),
	    "app@example.org");
	assert_null(rec_header(rec, "x-postern-signature"));
	body = rec_body(rec, NULL);
	doc = json_loads(body, 0, NULL);
	assert_non_null(doc);
	/* RFC 2047, quoted-printable, base64, all in UTF-8. */
	assert_string_equal(json_string_value(json_object_get(doc,
	    "subject")), "Café menu €5");
	assert_string_equal(json_string_value(json_object_get(doc, "from")),
	    "Jörg Müller <jorg@example.org>");
	assert_string_equal(json_string_value(json_object_get(doc, "text")),
	    "Bonjour, voilà le menu €. Soft break.");
	assert_string_equal(json_string_value(json_object_get(doc, "html")),
	    "<p>Bonjour, voilà</p>");
	att = json_array_get(json_object_get(doc, "attachments"), 0);
	assert_string_equal(json_string_value(json_object_get(att,
	    "filename")), "grüße.png");
	assert_int_equal(json_integer_value(json_object_get(att, "size")),
	    1032);
	assert_non_null(json_object_get(att, "content_base64"));
	assert_string_equal(json_string_value(json_object_get(doc, "qid")),
	    "Q7a");
	assert_string_equal(json_string_value(json_object_get(
	    json_object_get(doc, "envelope"), "rcpt")), "bridge@example.org");
	assert_int_equal(json_array_size(json_object_get(json_object_get(doc,
	    "envelope"), "recipients")), 2);
	assert_string_equal(json_string_value(json_object_get(
	    json_object_get(doc, "client"), "helo")), "app.local");
	assert_string_equal(json_string_value(json_object_get(
	    json_object_get(doc, "client"), "tls")), "TLSv1.3");
	assert_string_equal(json_string_value(json_object_get(doc,
	    "received_at")), "2023-11-14T22:13:20Z");
	json_decref(doc);
	free(body);
	json_decref(rec);
	srv_stop(&s);
}

static void
test_raw_and_template(void **state)
{
	char *err = NULL;
	static const char tpl_text[] = "{\"name\": \"%{from}\", "
	    "\"reply\": \"%{text}\", \"to\": %{envelope.rcpt}}";
	struct mime_tpl *tpl = mime_tpl_new(tpl_text, sizeof(tpl_text) - 1,
	    MIME_TPL_JSON, (const char *const[]){ "envelope", NULL }, &err);
	struct deliver_webhook_opts raw = { .format = DELIVER_WEBHOOK_RAW,
	    .method = "PUT" };
	struct deliver_webhook_opts t = { .format = DELIVER_WEBHOOK_TEMPLATE,
	    .tpl = tpl, .method = "PUT" };
	struct deliver_msg m = spooled(MIXED);
	struct deliver_rcpt_status st;
	struct srv s;
	json_t *rec;
	char *body, *file;
	size_t len, flen;
	FILE *f;

	(void)state;
	assert_non_null(tpl);
	srv_start(&s, SERVER, NULL, NULL);
	rec = post(&s, &raw, "/raw", &m, &st, DELIVER_OK);
	assert_string_equal(rec_str(rec, "method"), "PUT");
	assert_string_equal(rec_header(rec, "content-type"), "message/rfc822");
	body = rec_body(rec, &len);
	/* The spooled file, each LF as CRLF, nothing else changed. */
	assert_non_null(f = fopen(MIXED, "r"));
	file = xmalloc(2 * 65536);
	flen = 0;
	for (int c; (c = fgetc(f)) != EOF;) {
		if (c == '\n')
			file[flen++] = '\r';
		file[flen++] = (char)c;
	}
	fclose(f);
	assert_int_equal(len, flen);
	assert_memory_equal(body, file, len);
	free(file);
	free(body);
	json_decref(rec);

	rec = post(&s, &t, "/tpl", &m, &st, DELIVER_OK);
	body = rec_body(rec, NULL);
	assert_string_equal(body, "{\"name\": \"Jörg Müller <jorg@example."
	    "org>\", \"reply\": \"Bonjour, voilà le menu €. Soft break.\", "
	    "\"to\": \"bridge@example.org\"}");
	free(body);
	json_decref(rec);
	srv_stop(&s);
	mime_tpl_free(&tpl);
}

static void
test_signature(void **state)
{
	struct deliver_webhook_opts o = { .format = DELIVER_WEBHOOK_RAW,
	    .secret = "s3cret", .secret_len = 6 };
	struct deliver_msg m = spooled(MIXED);
	struct deliver_rcpt_status st;
	struct srv s;
	json_t *rec;
	char *body, want[65];
	const char *sig;
	long long ts;
	uint64_t len;
	const char *err = NULL;
	size_t blen;

	(void)state;
	srv_start(&s, SERVER, NULL, NULL);
	rec = post(&s, &o, "/signed", &m, &st, DELIVER_OK);
	sig = rec_header(rec, "x-postern-signature");
	assert_non_null(sig);
	assert_int_equal(sscanf(sig, "t=%lld,", &ts), 1);
	assert_true(ts > 1700000000);
	/* Recompute over what the server received. */
	body = rec_body(rec, &blen);
	assert_int_equal(http_body_scan(&(struct http_body){ .data = body,
	    .len = blen }, "s3cret", 6, ts, &len, want, &err), 0);
	assert_non_null(strstr(sig, ",v1="));
	assert_string_equal(strstr(sig, ",v1=") + 4, want);
	free(body);
	json_decref(rec);
	srv_stop(&s);
}

static void
test_outcomes(void **state)
{
	static const struct {
		const char		*path;
		enum deliver_result	 want;
		const char		*text;
		uint64_t		 retry_ms;
	} cases[] = {
		{ "/status/201", DELIVER_OK, "2.0.0 HTTP 201", 0 },
		{ "/status/500", DELIVER_TEMPFAIL, "4.3.0 HTTP 500: status 500",
		  0 },
		{ "/status/503?retry-after=30", DELIVER_TEMPFAIL,
		  "4.3.0 HTTP 503: status 503", 30000 },
		{ "/status/429?retry-after=7", DELIVER_TEMPFAIL,
		  "4.3.0 HTTP 429: status 429", 7000 },
		{ "/status/408", DELIVER_TEMPFAIL, "4.3.0 HTTP 408", 0 },
		{ "/status/404", DELIVER_PERMFAIL, "5.3.0 HTTP 404: status 404",
		  0 },
		{ "/status/403", DELIVER_PERMFAIL, "5.7.1 HTTP 403", 0 },
		{ "/status/413", DELIVER_PERMFAIL, "5.3.4 HTTP 413", 0 },
		{ "/status/301", DELIVER_PERMFAIL, "5.3.0 HTTP 301", 0 },
	};
	struct deliver_webhook_opts o = { .format = DELIVER_WEBHOOK_RAW };
	struct deliver_msg m = spooled(MIXED);
	struct srv s;
	char *key0 = NULL;

	(void)state;
	srv_start(&s, SERVER, NULL, NULL);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct deliver_rcpt_status st;
		json_t *rec = post(&s, &o, cases[i].path, &m, &st,
		    cases[i].want);

		if (strncmp(st.text, cases[i].text, strlen(cases[i].text)) !=
		    0 || st.retry_after_ms != cases[i].retry_ms)
			fail_msg("case \"%s\": got \"%s\" retry %llu",
			    cases[i].path, st.text,
			    (unsigned long long)st.retry_after_ms);
		/* Every attempt carries the same key. */
		if (key0 == NULL)
			key0 = xstrdup(rec_header(rec, "idempotency-key"));
		assert_string_equal(rec_header(rec, "idempotency-key"), key0);
		json_decref(rec);
	}
	free(key0);
	srv_stop(&s);
	/* Nobody there: later, with the reason. */
	{
		struct deliver_rcpt_status st;
		const char *err = NULL;

		o.url = s.base;		/* the server is gone */
		assert_int_equal(deliver_webhook(hc, &o, &m, "a@example.org",
		    &st, &err), DELIVER_TEMPFAIL);
		assert_int_equal(strncmp(st.text, "4.4.1 ", 6), 0);
		/* A spool file gone: later too. */
		m.content_path = "/nonexistent/msg";
		assert_int_equal(deliver_webhook(hc, &o, &m, "a@example.org",
		    &st, &err), DELIVER_TEMPFAIL);
		assert_non_null(strstr(st.text, "No such file"));
	}
}

/* The answer's first line is kept as written, cut whole in UTF-8. */
static void
test_answer_text(void **state)
{
	char long_body[300];
	static const struct {
		const char	*label;
		long		 status;
		const char	*body;
		const char	*want;
	} cases[] = {
		{ "quote, backslash, 8-bit", 404,
		  "no \"such\" \\ channel \x01 caf\xc3\xa9 \xff\r\nmore",
		  "5.3.0 HTTP 404: no \"such\" \\ channel \x01 caf\xc3\xa9 "
		  "\xff" },
		{ "cut before a character", 503, NULL,
		  "4.3.0 HTTP 503: " },	/* 199 'a', then "..." */
	};

	(void)state;
	/* 199 octets, then an e-acute across the 200th and 201st. */
	memset(long_body, 'a', 199);
	memcpy(long_body + 199, "\xc3\xa9 tail", sizeof("\xc3\xa9 tail"));
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct http_result res = { .status = cases[i].status,
		    .retry_after_s = -1 };
		struct deliver_rcpt_status st;
		char want[512];

		res.body = (char *)(cases[i].body != NULL ? cases[i].body :
		    long_body);
		res.body_len = strlen(res.body);
		if (cases[i].body != NULL)
			util_strlcpy(want, cases[i].want, sizeof(want));
		else
			snprintf(want, sizeof(want), "%s%.199s...",
			    cases[i].want, long_body);
		(void)deliver_webhook_outcome(&res, &st);
		if (strcmp(st.text, want) != 0)
			fail_msg("case \"%s\": got \"%s\", want \"%s\"",
			    cases[i].label, st.text, want);
	}
}

static int
setup(void **state)
{
	const char *err = NULL;

	(void)state;
	hc = http_client_new(&err);
	return hc != NULL ? 0 : -1;
}

static int
teardown(void **state)
{
	(void)state;
	http_client_free(&hc);
	return 0;
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_json_payload, srv_cleanup),
		cmocka_unit_test_teardown(test_raw_and_template, srv_cleanup),
		cmocka_unit_test_teardown(test_signature, srv_cleanup),
		cmocka_unit_test_teardown(test_outcomes, srv_cleanup),
		cmocka_unit_test(test_answer_text),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, setup, teardown);
}
