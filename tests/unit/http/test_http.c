/*
 * Unit tests of http/: requests as a real server (server.py, Python's
 * http.server) records them, statuses and Retry-After, timeouts, refused
 * connections, response bounds, TLS verification, many requests at once,
 * shutdown with requests in flight, a request cancelled; bodies with CRLF line ends read at
 * every chunk size, and their HMAC-SHA256 signature.
 */
#include "http/http.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "http/http_private.h"
#include "srv.h"
#include "util/util.h"

static struct http_client *client;

static void
test_post_memory(void **state)
{
	struct srv s;
	const char *hdrs[] = { "X-Postern-Test: yes", NULL };
	const char body[] = "{\"a\": \"é\"}";
	struct http_request r = { .content_type = "application/json",
	    .headers = hdrs, .body = { .data = body, .len = sizeof(body) - 1 },
	    .body_len = sizeof(body) - 1, .bearer = "t0ken" };
	struct http_result res;
	json_t *recs, *rec;
	char *url, *got;

	(void)state;
	srv_start(&s, "server.py", NULL, NULL);
	url = xasprintf("%s/hook?x=1", s.base);
	r.url = url;
	http_perform(client, &r, &res);
	assert_int_equal(res.err, HTTP_OK);
	assert_int_equal(res.status, 200);
	assert_string_equal(res.body, "ok");
	assert_string_equal(res.content_type, "text/plain");
	assert_int_equal(res.retry_after_s, -1);
	assert_false(http_result_retryable(&res));
	http_result_clear(&res);
	recs = srv_records(&s);
	assert_int_equal(json_array_size(recs), 1);
	rec = json_array_get(recs, 0);
	assert_string_equal(rec_str(rec, "method"), "POST");
	assert_string_equal(rec_str(rec, "path"), "/hook?x=1");
	assert_string_equal(rec_header(rec, "content-type"),
	    "application/json");
	assert_string_equal(rec_header(rec, "x-postern-test"), "yes");
	assert_string_equal(rec_header(rec, "authorization"), "Bearer t0ken");
	assert_string_equal(rec_header(rec, "user-agent"), "postern");
	assert_null(rec_header(rec, "expect"));
	got = rec_body(rec, NULL);
	assert_string_equal(got, body);
	free(got);
	json_decref(recs);
	free(url);
	srv_stop(&s);
}

static void
test_put_file_crlf(void **state)
{
	static const char lf[] = "a\nb\n\nc";
	struct srv s;
	char path[] = "/tmp/http-body-XXXXXX";
	int fd = mkstemp(path);
	struct http_request r = { .method = "PUT",
	    .body = { .path = path, .crlf = true }, .user = "ann",
	    .pass = "s3cret" };
	struct http_result res;
	const char *err = NULL;
	json_t *recs, *rec;
	char *got;

	(void)state;
	assert_int_equal(write(fd, lf, sizeof(lf) - 1), sizeof(lf) - 1);
	close(fd);
	assert_int_equal(http_body_scan(&r.body, NULL, 0, 0, &r.body_len,
	    NULL, &err), 0);
	assert_int_equal(r.body_len, 9);
	srv_start(&s, "server.py", NULL, NULL);
	r.url = s.base;
	http_perform(client, &r, &res);
	assert_int_equal(res.status, 200);
	http_result_clear(&res);
	recs = srv_records(&s);
	rec = json_array_get(recs, 0);
	assert_string_equal(rec_str(rec, "method"), "PUT");
	assert_string_equal(rec_header(rec, "content-length"), "9");
	/* "ann:s3cret" */
	assert_string_equal(rec_header(rec, "authorization"),
	    "Basic YW5uOnMzY3JldA==");
	got = rec_body(rec, NULL);
	assert_string_equal(got, "a\r\nb\r\n\r\nc");
	free(got);
	json_decref(recs);
	srv_stop(&s);
	unlink(path);
}

static void
test_statuses(void **state)
{
	static const struct {
		const char	*path;
		long		 status;
		bool		 retry;
		int64_t		 after_min, after_max;
	} cases[] = {
		{ "/status/201", 201, false, -1, -1 },
		{ "/status/302", 302, false, -1, -1 },	/* not followed */
		{ "/status/404", 404, false, -1, -1 },
		{ "/status/422", 422, false, -1, -1 },
		{ "/status/408", 408, true, -1, -1 },
		{ "/status/500", 500, true, -1, -1 },
		{ "/status/503?retry-after=120", 503, true, 120, 120 },
		{ "/status/429?retry-after=7", 429, true, 7, 7 },
		{ "/status/429?retry-after=DATE", 429, true, 50, 61 },
		{ "/status/429?retry-after=soon", 429, true, -1, -1 },
	};
	struct srv s;

	(void)state;
	srv_start(&s, "server.py", NULL, NULL);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct http_request r = { 0 };
		struct http_result res;
		char date[64], *url;
		time_t later = time(NULL) + 60;

		strftime(date, sizeof(date), "%a,%%20%d%%20%b%%20%Y%%20"
		    "%H:%M:%S%%20GMT", gmtime(&later));
		url = xasprintf("%s%s", s.base, cases[i].path);
		if (strstr(url, "DATE") != NULL) {
			char *u2 = xasprintf("%.*s%s", (int)(strstr(url,
			    "DATE") - url), url, date);

			free(url);
			url = u2;
		}
		r.url = url;
		http_perform(client, &r, &res);
		if (res.err != HTTP_OK || res.status != cases[i].status ||
		    http_result_retryable(&res) != cases[i].retry ||
		    res.retry_after_s < cases[i].after_min ||
		    res.retry_after_s > cases[i].after_max)
			fail_msg("case \"%s\": err %d status %ld retry %d "
			    "after %lld", cases[i].path, res.err, res.status,
			    http_result_retryable(&res),
			    (long long)res.retry_after_s);
		http_result_clear(&res);
		free(url);
	}
	srv_stop(&s);
}

static void
test_failures(void **state)
{
	struct srv s;
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sin = { .sin_family = AF_INET,
	    .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sin);
	char closed[64], slow[96], big[96];
	uint64_t t0;
	struct http_result res;

	(void)state;
	/* A port nobody listens on. */
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	getsockname(fd, (struct sockaddr *)&sin, &sl);
	snprintf(closed, sizeof(closed), "http://127.0.0.1:%d/",
	    ntohs(sin.sin_port));
	close(fd);
	http_perform(client, &(struct http_request){ .url = closed }, &res);
	assert_int_equal(res.err, HTTP_ERR_CONNECT);
	assert_int_equal(res.status, 0);
	assert_true(http_result_retryable(&res));
	http_result_clear(&res);

	srv_start(&s, "server.py", NULL, NULL);
	snprintf(slow, sizeof(slow), "%s/slow/3000", s.base);
	t0 = util_now_ms();
	http_perform(client, &(struct http_request){ .url = slow,
	    .timeout_ms = 300 }, &res);
	assert_int_equal(res.err, HTTP_ERR_TIMEOUT);
	assert_true(util_now_ms() - t0 < 2500);
	assert_true(http_result_retryable(&res));
	http_result_clear(&res);

	snprintf(big, sizeof(big), "%s/big/100000", s.base);
	http_perform(client, &(struct http_request){ .url = big,
	    .response_max = 1000 }, &res);
	assert_int_equal(res.err, HTTP_ERR_TOO_BIG);
	assert_int_equal(res.status, 200);	/* what the server said */
	assert_true(res.body_len <= 1000);
	assert_string_equal(res.text, "response larger than 1000 bytes");
	http_result_clear(&res);
	http_perform(client, &(struct http_request){ .url = big,
	    .response_max = 100000 }, &res);
	assert_int_equal(res.err, HTTP_OK);
	assert_int_equal(res.body_len, 100000);
	http_result_clear(&res);

	/* A body file that went away. */
	http_perform(client, &(struct http_request){ .url = s.base,
	    .body = { .path = "/nonexistent/body" }, .body_len = 5 }, &res);
	assert_int_equal(res.err, HTTP_ERR_BODY);
	assert_string_equal(res.text, "open(/nonexistent/body): No such file "
	    "or directory");
	http_result_clear(&res);
	srv_stop(&s);

	/* Only http and https. */
	http_perform(client, &(struct http_request){ .url = "file:///etc/"
	    "passwd" }, &res);
	assert_int_equal(res.err, HTTP_ERR_OTHER);
	assert_int_equal(res.status, 0);
	http_result_clear(&res);
}

static void
test_tls(void **state)
{
	static const struct {
		const char	*label;
		const char	*ca;
		bool		 no_verify;
		enum http_err	 want;
	} cases[] = {
		{ "verified by default", NULL, false, HTTP_ERR_TLS },
		{ "ca FILE", "cert.pem", false, HTTP_OK },
		{ "no-verify", NULL, true, HTTP_OK },
	};
	struct srv s;

	(void)state;
	assert_int_equal(system("openssl req -x509 -newkey ec -pkeyopt "
	    "ec_paramgen_curve:prime256v1 -nodes -keyout key.pem -out "
	    "cert.pem -days 2 -subj /CN=localhost -addext "
	    "subjectAltName=IP:127.0.0.1 2>/dev/null"), 0);
	srv_start(&s, "server.py", "cert.pem", "key.pem");
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct http_result res;

		http_perform(client, &(struct http_request){ .url = s.base,
		    .ca_file = cases[i].ca, .no_verify = cases[i].no_verify },
		    &res);
		if (res.err != cases[i].want)
			fail_msg("case \"%s\": err %d (%s)", cases[i].label,
			    res.err, res.text);
		http_result_clear(&res);
	}
	srv_stop(&s);
	unlink("cert.pem");
	unlink("key.pem");
}

/* ---- many at once, and shutdown ---- */

struct counter {
	pthread_mutex_t	 mu;
	pthread_cond_t	 cv;
	int		 done, ok;
	char		 last[320];
};

static void
count_cb(void *arg, struct http_result *res)
{
	struct counter *c = arg;

	pthread_mutex_lock(&c->mu);
	c->done++;
	if (res->err == HTTP_OK && res->status == 200)
		c->ok++;
	else if (c->last[0] == '\0')	/* the first failure */
		snprintf(c->last, sizeof(c->last), "err %d status %ld: %s",
		    (int)res->err, res->status, res->text);
	pthread_cond_signal(&c->cv);
	pthread_mutex_unlock(&c->mu);
	http_result_clear(res);
}

static void
count_wait(struct counter *c, int n)
{
	pthread_mutex_lock(&c->mu);
	while (c->done < n)
		pthread_cond_wait(&c->cv, &c->mu);
	pthread_mutex_unlock(&c->mu);
}

static void
test_many_at_once(void **state)
{
	struct counter c = { PTHREAD_MUTEX_INITIALIZER,
	    PTHREAD_COND_INITIALIZER, 0, 0, "" };
	struct srv s;
	char url[96];
	json_t *recs;

	(void)state;
	srv_start(&s, "server.py", NULL, NULL);
	snprintf(url, sizeof(url), "%s/slow/200", s.base);
	for (int i = 0; i < 30; i++)
		http_submit(client, &(struct http_request){ .url = url,
		    .body = { .data = "x", .len = 1 }, .body_len = 1 },
		    count_cb, &c);
	count_wait(&c, 30);
	if (c.ok != 30)
		fail_msg("%d of 30 answered 200; first error: %s", c.ok, c.last);
	recs = srv_records(&s);
	assert_int_equal(json_array_size(recs), 30);
	json_decref(recs);
	srv_stop(&s);
}

static void
test_shutdown_in_flight(void **state)
{
	struct counter c = { PTHREAD_MUTEX_INITIALIZER,
	    PTHREAD_COND_INITIALIZER, 0, 0, "" };
	const char *err = NULL;
	struct http_client *own = http_client_new(&err);
	struct srv s;
	char url[96];
	uint64_t t0;

	(void)state;
	assert_non_null(own);
	srv_start(&s, "server.py", NULL, NULL);
	snprintf(url, sizeof(url), "%s/slow/5000", s.base);
	http_submit(own, &(struct http_request){ .url = url }, count_cb, &c);
	/* Wait until the server has the request. */
	for (int i = 0; i < 500; i++) {
		json_t *recs = srv_records(&s);
		size_t n = json_array_size(recs);

		json_decref(recs);
		if (n > 0)
			break;
		usleep(10000);
	}
	t0 = util_now_ms();
	http_client_free(&own);
	assert_null(own);
	assert_true(util_now_ms() - t0 < 2000);
	assert_int_equal(c.done, 1);
	assert_int_equal(c.ok, 0);
	assert_string_equal(c.last, "err 6 status 0: shutting down");
	srv_stop(&s);
}

/*
 * A request cancelled through its flag (http_cancel): one whose flag was
 * set before it went out never reaches the server; one the server holds
 * ends at once, well before the client's one-second wake-up.
 */
static void
test_cancel(void **state)
{
	static const struct {
		const char	*label;
		bool		 before;	/* cancelled before it went out */
	} cases[] = {
		{ "before it went out", true },
		{ "in flight", false },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct counter c = { PTHREAD_MUTEX_INITIALIZER,
		    PTHREAD_COND_INITIALIZER, 0, 0, "" };
		atomic_bool flag = cases[i].before;
		struct srv s;
		char url[96];
		size_t seen = 0;
		uint64_t t0;
		json_t *recs;

		srv_start(&s, "server.py", NULL, NULL);
		snprintf(url, sizeof(url), "%s/slow/5000", s.base);
		http_submit(client, &(struct http_request){ .url = url,
		    .cancel = &flag }, count_cb, &c);
		/* Wait until the server has the request (or surely would). */
		for (int n = 0; n < 50 && seen == 0; n++) {
			usleep(10000);
			recs = srv_records(&s);
			seen = json_array_size(recs);
			json_decref(recs);
		}
		if (seen != (cases[i].before ? 0 : 1))
			fail_msg("case \"%s\": the server saw %zu requests",
			    cases[i].label, seen);
		t0 = util_now_ms();
		http_cancel(client, &flag);
		count_wait(&c, 1);
		if (!cases[i].before && util_now_ms() - t0 >= 500)
			fail_msg("case \"%s\": ended after %ju ms",
			    cases[i].label, (uintmax_t)(util_now_ms() - t0));
		if (strcmp(c.last, "err 6 status 0: cancelled") != 0)
			fail_msg("case \"%s\": got \"%s\", want a "
			    "cancellation", cases[i].label, c.last);
		srv_stop(&s);
	}
}

/* ---- bodies ---- */

static void
test_reader_every_chunk_size(void **state)
{
	static const char lf[] = "\nline one\n\nlast without LF";
	static const char want[] = "\r\nline one\r\n\r\nlast without LF";
	char path[] = "/tmp/http-body-XXXXXX";
	int fd = mkstemp(path);
	struct http_body b = { .path = path, .crlf = true };

	(void)state;
	assert_int_equal(write(fd, lf, sizeof(lf) - 1), sizeof(lf) - 1);
	close(fd);
	for (size_t cap = 1; cap <= sizeof(want); cap++) {
		struct http_reader rd;
		const char *err = NULL;
		char out[sizeof(want) + 8];
		size_t len = 0;
		ssize_t n;

		assert_int_equal(http_reader_open(&rd, &b, &err), 0);
		while ((n = http_reader_read(&rd, out + len, cap, &err)) > 0)
			len += (size_t)n;
		http_reader_close(&rd);
		assert_int_equal(n, 0);
		if (len != sizeof(want) - 1 || memcmp(out, want, len) != 0)
			fail_msg("chunk size %zu: got %.*s", cap, (int)len, out);
	}
	unlink(path);
}

static void
test_signature(void **state)
{
	static const char lf[] = "a\nb\n\nc";
	char path[] = "/tmp/http-body-XXXXXX";
	int fd = mkstemp(path);
	const struct {
		const char	*label;
		struct http_body b;
		uint64_t	 len;
		const char	*sig;	/* from Python's hmac module */
	} cases[] = {
		{ "file with CRLF", { .path = path, .crlf = true }, 9,
		  "50f3044f534efbc01dbfb9c31539d0dfaa29b59297e3ce48f4021e41a91a6ba2" },
		{ "memory", { .data = "{\"a\":1}", .len = 7 }, 7,
		  "fd5a70e965043f7df6309c2c3b5ff5a8ffa99b1f5175e9a311459e73c4634d4a" },
		{ "empty", { 0 }, 0,
		  "a41477217e3df2b1b8136c15426d0502a324637a746b1d6de41039df7afb3955" },
	};

	(void)state;
	assert_int_equal(write(fd, lf, sizeof(lf) - 1), sizeof(lf) - 1);
	close(fd);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char sig[65] = "";
		uint64_t len = 99;
		const char *err = NULL;

		if (http_body_scan(&cases[i].b, "k3y", 3, 1700000000, &len,
		    sig, &err) == -1)
			fail_msg("case \"%s\": %s", cases[i].label, err);
		if (len != cases[i].len || strcmp(sig, cases[i].sig) != 0)
			fail_msg("case \"%s\": len %llu sig %s",
			    cases[i].label, (unsigned long long)len, sig);
	}
	unlink(path);
	{
		struct http_body gone = { .path = path };
		uint64_t len;
		const char *err = NULL;

		assert_int_equal(http_body_scan(&gone, NULL, 0, 0, &len, NULL,
		    &err), -1);
		assert_non_null(strstr(err, "No such file"));
	}
}

static int
setup(void **state)
{
	const char *err = NULL;

	(void)state;
	client = http_client_new(&err);
	return client != NULL ? 0 : -1;
}

static int
teardown(void **state)
{
	(void)state;
	http_client_free(&client);
	return 0;
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_post_memory, srv_cleanup),
		cmocka_unit_test_teardown(test_put_file_crlf, srv_cleanup),
		cmocka_unit_test_teardown(test_statuses, srv_cleanup),
		cmocka_unit_test_teardown(test_failures, srv_cleanup),
		cmocka_unit_test_teardown(test_tls, srv_cleanup),
		cmocka_unit_test_teardown(test_many_at_once, srv_cleanup),
		cmocka_unit_test_teardown(test_shutdown_in_flight, srv_cleanup),
		cmocka_unit_test_teardown(test_cancel, srv_cleanup),
		cmocka_unit_test_teardown(test_reader_every_chunk_size, srv_cleanup),
		cmocka_unit_test_teardown(test_signature, srv_cleanup),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, setup, teardown);
}
