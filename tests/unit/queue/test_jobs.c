/*
 * Unit tests of queue/jobs.c, the scheduler's index, alone: the order in
 * which jobs become ready (forced first, then due time, then submission),
 * removal of any job, lookups by queue id, and the destinations' waiters:
 * one job made ready per released slot, first come first served, a job
 * waiting on two destinations woken by whichever frees first, a slot given
 * up by the job it was freed for going to the next one.
 */
#include "queue/jobs.h"
#include "util/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#define NOW	1000000		/* the tests' clock, epoch ms */
#define NEVER	UINT64_MAX

/* The qids of the jobs peek gives at now, each taken, joined by ' '. */
static void
take_all(struct queue_jobs *js, uint64_t now, char *out, size_t size)
{
	struct queue_job *j;
	uint64_t next;
	size_t len = 0;

	out[0] = '\0';
	while ((j = queue_jobs_peek(js, now, &next)) != NULL) {
		(void)queue_jobs_take(js, j);
		len += (size_t)snprintf(out + len, size - len, "%s%s",
		    len > 0 ? " " : "", j->qid);
		assert_true(len < size);
	}
}

struct order_case {
	const char	*label;
	const char	*qids[6];
	uint64_t	 due[6];	/* offset from NOW; NEVER: no timer */
	bool		 force[6];
	const char	*want;		/* taken at NOW, in order */
	uint64_t	 want_next;	/* then peek's next due */
};

static const struct order_case order_cases[] = {
	{ "earliest due first",
	  { "a", "b", "c" }, { 30, 10, 20 }, { 0 },
	  "", NOW + 10 },
	{ "due ones only, earliest first",
	  { "a", "b", "c", "d" }, { 0, 5, 0, 0 }, { 0 },
	  "a c d", NOW + 5 },
	{ "submission order among equal due times",
	  { "z", "y", "x", "w" }, { 0, 0, 0, 0 }, { 0 },
	  "z y x w", NEVER },
	{ "overdue before just due",
	  { "a", "b", "c" }, { 0, (uint64_t)-500, (uint64_t)-900 }, { 0 },
	  "c b a", NEVER },
	{ "forced first, whatever its due time",
	  { "a", "b", "c", "d" }, { 0, 3600, NEVER, 0 },
	  { false, true, true, false },
	  "b c a d", NEVER },
	{ "no timer, not forced: never by itself",
	  { "a", "b" }, { NEVER, 7 }, { 0 },
	  "", NOW + 7 },
};

static void
test_order(void **state)
{
	(void)state;
	for (size_t c = 0; c < sizeof(order_cases) / sizeof(*order_cases);
	    c++) {
		const struct order_case *tc = &order_cases[c];
		struct queue_jobs js;
		char got[128];
		uint64_t next;

		queue_jobs_init(&js, 20);
		for (size_t i = 0; i < 6 && tc->qids[i] != NULL; i++) {
			uint64_t due = tc->due[i] == NEVER ? NEVER :
			    NOW + tc->due[i];
			struct queue_job *j = queue_jobs_add(&js, tc->qids[i],
			    due);
			j->force = tc->force[i];
			assert_int_equal(queue_jobs_refile(&js, j), 0);
		}
		take_all(&js, NOW, got, sizeof(got));
		if (strcmp(got, tc->want) != 0)
			fail_msg("case \"%s\": got \"%s\", want \"%s\"",
			    tc->label, got, tc->want);
		assert_null(queue_jobs_peek(&js, NOW, &next));
		if (next != tc->want_next)
			fail_msg("case \"%s\": next due %ju, want %ju",
			    tc->label, (uintmax_t)next,
			    (uintmax_t)tc->want_next);
		queue_jobs_clear(&js);
	}
}

/*
 * Many jobs with scattered due times, a third of them removed from
 * anywhere in the heap: the rest come out in (due, submission) order and
 * the removed ones are gone from the index.
 */
static void
test_remove_any(void **state)
{
	enum { N = 3000 };
	struct queue_jobs js;
	struct queue_job *j;
	uint64_t prev_due = 0, prev_seq = 0, next;
	uint32_t rnd = 12345;
	char qid[SPOOL_QID_MAX];
	size_t taken = 0;

	(void)state;
	queue_jobs_init(&js, 20);
	for (int i = 0; i < N; i++) {
		rnd = rnd * 1103515245 + 12345;
		snprintf(qid, sizeof(qid), "q%d", i);
		(void)queue_jobs_add(&js, qid, NOW - 50 + (rnd >> 16) % 100);
	}
	for (int i = 0; i < N; i += 3) {
		snprintf(qid, sizeof(qid), "q%d", (i * 7) % N);
		assert_non_null(j = queue_jobs_find(&js, qid));
		assert_int_equal(queue_jobs_remove(&js, j), 0);
		assert_null(queue_jobs_find(&js, qid));
	}
	assert_int_equal(js.njobs, N - N / 3);
	while ((j = queue_jobs_peek(&js, NOW + 100, &next)) != NULL) {
		if (taken > 0 && (j->due_ms < prev_due ||
		    (j->due_ms == prev_due && j->seq < prev_seq)))
			fail_msg("%s (due %ju seq %ju) after due %ju seq %ju",
			    j->qid, (uintmax_t)j->due_ms, (uintmax_t)j->seq,
			    (uintmax_t)prev_due, (uintmax_t)prev_seq);
		prev_due = j->due_ms;
		prev_seq = j->seq;
		(void)queue_jobs_take(&js, j);
		assert_ptr_equal(queue_jobs_find(&js, j->qid), j);
		taken++;
	}
	assert_int_equal(taken, N - N / 3);
	queue_jobs_clear(&js);
}

/* names, NULL-terminated, as a run's blocked list (owned copies). */
static char **
blocked_list(const char *const *names, size_t *n_out)
{
	size_t n = 0;
	char **v;

	while (names[n] != NULL)
		n++;
	v = xcalloc(n + 1, sizeof(*v));
	for (size_t i = 0; i < n; i++)
		v[i] = xstrdup(names[i]);
	*n_out = n;
	return v;
}

/*
 * End the run of j (taken) with the destinations names (NULL-terminated)
 * at their limit and no timer: it waits for a slot.  Returns the jobs
 * woken.
 */
static unsigned
end_run(struct queue_jobs *js, struct queue_job *j, const char *const *names)
{
	size_t n;
	char **v = blocked_list(names, &n);
	unsigned woke;

	woke = queue_jobs_block(js, j, n > 0 ? v : NULL, n);
	if (n == 0)
		free(v);
	j->running = false;
	j->due_ms = NEVER;
	return woke + queue_jobs_refile(js, j);
}

/* Take j and end its run so. */
static unsigned
run_blocked(struct queue_jobs *js, struct queue_job *j,
    const char *const *names)
{
	(void)queue_jobs_take(js, j);
	return end_run(js, j, names);
}

/* The one ready job's qid ("" if none): it is taken. */
static const char *
take_one(struct queue_jobs *js)
{
	uint64_t next;
	struct queue_job *j = queue_jobs_peek(js, NOW, &next);

	if (j == NULL)
		return "";
	(void)queue_jobs_take(js, j);
	return j->qid;
}

static const char *const just_d[] = { "relay d", NULL };
static const char *const none[] = { NULL };

/* Two slots in use, five jobs waiting: each release readies one, in order. */
static void
test_waiters_one_per_slot(void **state)
{
	struct queue_jobs js;
	const char *qids[] = { "w1", "w2", "w3", "w4", "w5" };
	uint64_t next;

	(void)state;
	queue_jobs_init(&js, 2);
	assert_true(queue_jobs_acquire(&js, "relay d"));
	assert_true(queue_jobs_acquire(&js, "relay d"));
	assert_false(queue_jobs_acquire(&js, "relay d"));
	for (size_t i = 0; i < 5; i++)
		(void)queue_jobs_add(&js, qids[i], NOW);
	for (size_t i = 0; i < 5; i++)
		assert_int_equal(run_blocked(&js, queue_jobs_find(&js,
		    qids[i]), just_d), 0);
	assert_null(queue_jobs_peek(&js, NOW, &next));
	assert_int_equal(next, NEVER);

	assert_int_equal(queue_jobs_release(&js, "relay d"), 1);
	assert_string_equal(take_one(&js), "w1");
	assert_string_equal(take_one(&js), "");		/* only one */
	/* w1's run takes the slot and ends: w2 still waits. */
	assert_true(queue_jobs_acquire(&js, "relay d"));
	assert_int_equal(end_run(&js, queue_jobs_find(&js, "w1"), none), 0);
	assert_int_equal(queue_jobs_remove(&js, queue_jobs_find(&js, "w1")),
	    0);
	assert_string_equal(take_one(&js), "");

	/* Two releases: two jobs, first come first served. */
	assert_int_equal(queue_jobs_release(&js, "relay d"), 1);
	assert_int_equal(queue_jobs_release(&js, "relay d"), 1);
	assert_string_equal(take_one(&js), "w2");
	assert_string_equal(take_one(&js), "w3");
	assert_string_equal(take_one(&js), "");
	queue_jobs_clear(&js);
}

/* A job that waits on two destinations is woken once, by the first. */
static void
test_waiter_on_two_destinations(void **state)
{
	static const char *const d1_d2[] = { "relay d1", "relay d2", NULL };
	static const char *const d2[] = { "relay d2", NULL };
	struct queue_jobs js;

	(void)state;
	queue_jobs_init(&js, 1);
	assert_true(queue_jobs_acquire(&js, "relay d1"));
	assert_true(queue_jobs_acquire(&js, "relay d2"));
	(void)queue_jobs_add(&js, "both", NOW);
	(void)queue_jobs_add(&js, "other", NOW);
	assert_int_equal(run_blocked(&js, queue_jobs_find(&js, "both"), d1_d2),
	    0);
	assert_int_equal(run_blocked(&js, queue_jobs_find(&js, "other"), d2),
	    0);

	assert_int_equal(queue_jobs_release(&js, "relay d1"), 1);
	assert_string_equal(take_one(&js), "both");
	/* d2's slot goes to the job still waiting for it, not to "both". */
	assert_int_equal(queue_jobs_release(&js, "relay d2"), 1);
	assert_string_equal(take_one(&js), "other");
	assert_string_equal(take_one(&js), "");
	queue_jobs_clear(&js);
}

/*
 * A slot freed for a job that does not use it goes to the next waiter:
 * when the job is put on hold, and when its run ends without the slot.
 */
static void
test_unused_slot_passes_on(void **state)
{
	struct queue_jobs js;
	struct queue_job *a;

	(void)state;
	queue_jobs_init(&js, 1);
	assert_true(queue_jobs_acquire(&js, "relay d"));
	a = queue_jobs_add(&js, "a", NOW);
	(void)queue_jobs_add(&js, "b", NOW);
	(void)queue_jobs_add(&js, "c", NOW);
	assert_int_equal(run_blocked(&js, a, just_d), 0);
	assert_int_equal(run_blocked(&js, queue_jobs_find(&js, "b"), just_d),
	    0);
	assert_int_equal(run_blocked(&js, queue_jobs_find(&js, "c"), just_d),
	    0);

	assert_int_equal(queue_jobs_release(&js, "relay d"), 1);
	a->held = true;				/* a was woken, then held */
	assert_int_equal(queue_jobs_refile(&js, a), 1);
	assert_string_equal(take_one(&js), "b");
	/* b's run ends without taking the slot: c gets it. */
	assert_int_equal(end_run(&js, queue_jobs_find(&js, "b"), none), 1);
	assert_string_equal(take_one(&js), "c");
	assert_string_equal(take_one(&js), "");
	queue_jobs_clear(&js);
}

/*
 * A run that ends blocked on a destination that has a free slot by then
 * is ready at once; one blocked with a due time for its other recipients
 * is ready then, even while its destination is full.  A flushed job's
 * next run is forced.
 */
static void
test_blocked_edges(void **state)
{
	struct queue_jobs js;
	struct queue_job *j;
	uint64_t next;

	(void)state;
	queue_jobs_init(&js, 1);
	j = queue_jobs_add(&js, "late", NOW);
	assert_int_equal(run_blocked(&js, j, just_d), 0);
	assert_string_equal(take_one(&js), "late");

	assert_true(queue_jobs_acquire(&js, "relay d"));
	assert_int_equal(end_run(&js, j, just_d), 0);
	assert_null(queue_jobs_peek(&js, NOW, &next));
	j->due_ms = NOW + 60;
	assert_int_equal(queue_jobs_refile(&js, j), 0);
	assert_null(queue_jobs_peek(&js, NOW, &next));
	assert_int_equal(next, NOW + 60);
	assert_ptr_equal(queue_jobs_peek(&js, NOW + 60, &next), j);
	assert_false(queue_jobs_take(&js, j));
	/* Its run ended; the slot's release finds nobody waiting. */
	assert_int_equal(end_run(&js, j, none), 0);
	assert_int_equal(queue_jobs_release(&js, "relay d"), 0);
	assert_int_equal(js.dests.n, 0);	/* idle: forgotten */
	/* A flushed job's next run is forced, once. */
	j->flushed = true;
	j->due_ms = NOW;
	assert_int_equal(queue_jobs_refile(&js, j), 0);
	assert_ptr_equal(queue_jobs_peek(&js, NOW, &next), j);
	assert_true(queue_jobs_take(&js, j));
	assert_false(j->flushed);
	queue_jobs_clear(&js);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_order),
		cmocka_unit_test(test_remove_any),
		cmocka_unit_test(test_waiters_one_per_slot),
		cmocka_unit_test(test_waiter_on_two_destinations),
		cmocka_unit_test(test_unused_slot_passes_on),
		cmocka_unit_test(test_blocked_edges),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
