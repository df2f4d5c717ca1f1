/*
 * Unit tests of metrics/: counts from many threads add up (also after the
 * threads end), labels and their clamping, histogram buckets, gauges, and
 * the exposition text line by line.
 */
#include "metrics/metrics.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#define THREADS		8
#define PER_THREAD	100000

static void *
count_cb(void *arg)
{
	(void)arg;
	for (int i = 0; i < PER_THREAD; i++) {
		metrics_inc(MET_CONN_ACCEPTED, 0, 0);
		metrics_add(MET_MSG_BYTES, 0, 0, 3);
	}
	return NULL;
}

/* The value of the line "name{labels} value" in text, or -1. */
static double
sample(const char *text, const char *series)
{
	size_t n = strlen(series);

	for (const char *l = text; l != NULL && *l != '\0'; ) {
		if (strncmp(l, series, n) == 0 && l[n] == ' ')
			return strtod(l + n + 1, NULL);
		l = strchr(l, '\n');
		l = l != NULL ? l + 1 : NULL;
	}
	return -1;
}

struct want {
	const char	*series;
	double		 value;
};

/* Each series of cases has its value in text. */
static void
check_samples(const char *text, const struct want *cases, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (sample(text, cases[i].series) != cases[i].value)
			fail_msg("case \"%s\": got %g, want %g", cases[i].series,
			    sample(text, cases[i].series), cases[i].value);
}

static char *
render(void)
{
	struct util_buf b = { 0 };

	metrics_render(&b);
	util_buf_add(&b, "", 1);
	return b.data;
}

static void
test_threads_add_up(void **state)
{
	pthread_t t[THREADS];
	uint64_t before = metrics_counter_sum(MET_CONN_ACCEPTED, 0, 0);

	(void)state;
	for (int i = 0; i < THREADS; i++)
		assert_int_equal(pthread_create(&t[i], NULL, count_cb, NULL), 0);
	for (int i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	/* Every thread has ended: its counts live on. */
	assert_int_equal(metrics_counter_sum(MET_CONN_ACCEPTED, 0, 0) - before,
	    THREADS * PER_THREAD);
	char *text = render();
	assert_true(sample(text, "postern_connections_accepted_total") >=
	    THREADS * PER_THREAD);
	assert_true(sample(text, "postern_received_bytes_total") >=
	    3.0 * THREADS * PER_THREAD);
	free(text);
}

static void
test_labels(void **state)
{
	static const char *const kinds[] = { "dnsbl", "lua" };
	(void)state;
	metrics_set_handler_kinds(kinds, 2);
	metrics_inc(MET_REPLIES_REFUSED, MET_ST_RCPT, 1);
	metrics_inc(MET_REPLIES_REFUSED, MET_ST_RCPT, 1);
	metrics_inc(MET_REPLIES_REFUSED, MET_ST_MAIL, 0);
	metrics_inc(MET_CHAIN_VERDICTS, 1, MET_V_REJECT);
	metrics_inc(MET_DELIVERIES, MET_A_RELAY, MET_R_DEFERRED);
	metrics_inc(MET_AUTH, 1, 0);
	metrics_inc(MET_SPOOL_LOG_COMMITS, MET_SL_FULL, 0);
	/* Out of range: counted as the last value, never out of bounds. */
	metrics_inc(MET_TLS_SESSIONS, 99, 0);
	char *text = render();
	static const struct want cases[] = {
		{ "postern_smtp_refusals_total{stage=\"rcpt\",class=\"5xx\"}", 2 },
		{ "postern_smtp_refusals_total{stage=\"mail\",class=\"4xx\"}", 1 },
		{ "postern_smtp_refusals_total{stage=\"rcpt\",class=\"4xx\"}", 0 },
		{ "postern_chain_verdicts_total{handler=\"lua\",verdict=\"reject\"}", 1 },
		/* Handler kinds never seen are left out. */
		{ "postern_chain_verdicts_total{handler=\"dnsbl\",verdict=\"reject\"}", -1 },
		{ "postern_deliveries_total{action=\"relay\",result=\"deferred\"}", 1 },
		{ "postern_auth_total{result=\"failure\"}", 1 },
		{ "postern_spool_log_commits_total{result=\"full\"}", 1 },
		{ "postern_spool_log_commits_total{result=\"too-large\"}", 0 },
		{ "postern_tls_sessions_total{version=\"other\"}", 1 },
	};
	check_samples(text, cases, sizeof(cases) / sizeof(cases[0]));
	assert_non_null(strstr(text, "# TYPE postern_smtp_refusals_total "
	    "counter\n"));
	free(text);
}

static void
test_histogram(void **state)
{
	(void)state;
	metrics_observe_ns(MET_SPOOL_COMMIT_SECONDS, 0, 50000);	/* 0.05 ms */
	metrics_observe_ns(MET_SPOOL_COMMIT_SECONDS, 0, 700000);	/* 0.7 ms */
	metrics_observe_ns(MET_SPOOL_COMMIT_SECONDS, 0, 60000000000ULL);
	char *text = render();
	static const struct want cases[] = {
		{ "postern_spool_commit_duration_seconds_bucket{le=\"0.0001\"}", 1 },
		{ "postern_spool_commit_duration_seconds_bucket{le=\"0.0005\"}", 1 },
		{ "postern_spool_commit_duration_seconds_bucket{le=\"0.001\"}", 2 },
		{ "postern_spool_commit_duration_seconds_bucket{le=\"30\"}", 2 },
		{ "postern_spool_commit_duration_seconds_bucket{le=\"+Inf\"}", 3 },
		{ "postern_spool_commit_duration_seconds_count", 3 },
	};
	check_samples(text, cases, sizeof(cases) / sizeof(cases[0]));
	double sum = sample(text, "postern_spool_commit_duration_seconds_sum");
	assert_true(sum > 60.0007 && sum < 60.0008);
	free(text);
}

static void
gauge_cb(void *arg, struct metrics_out *out)
{
	metrics_gauge(out, "postern_queue_messages", "Queued", "state=\"a\"",
	    *(double *)arg);
	metrics_gauge(out, "postern_queue_messages", "Queued", "state=\"b\"",
	    2);
}

static void
test_gauges(void **state)
{
	double v = 7;

	(void)state;
	metrics_gauge_register(gauge_cb, &v);
	char *text = render();
	assert_true(sample(text, "postern_queue_messages{state=\"a\"}") == 7);
	assert_true(sample(text, "postern_queue_messages{state=\"b\"}") == 2);
	/* One HELP and TYPE for both samples. */
	char *first = strstr(text, "# TYPE postern_queue_messages gauge\n");
	assert_non_null(first);
	assert_null(strstr(first + 1, "# TYPE postern_queue_messages"));
	assert_true(sample(text, "process_open_fds") >= 3);
	assert_true(sample(text, "process_resident_memory_bytes") > 1e6);
	free(text);
	metrics_gauge_unregister(gauge_cb, &v);
	text = render();
	assert_null(strstr(text, "postern_queue_messages"));
	free(text);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_threads_add_up),
		cmocka_unit_test(test_labels),
		cmocka_unit_test(test_histogram),
		cmocka_unit_test(test_gauges),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
