/*
 * metrics/metrics.c: the families, the per-thread shards and the text a
 * scrape gets.  A thread's shard is made on its first count and linked
 * into a list under a mutex (once per thread); its counts are written by
 * that thread alone and read, relaxed, by the scrape.  When a thread ends
 * its counts are added to the retired shard, so totals never go back.
 */
#include "metrics/metrics.h"

#include <dirent.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MET_NBUCKETS	14	/* finite buckets; +Inf is the count */

/* Upper bounds of the histogram buckets, in nanoseconds. */
static const uint64_t met_bucket_ns[MET_NBUCKETS] = {
	100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000,
	25000000, 50000000, 100000000, 250000000, 1000000000, 5000000000ULL,
	30000000000ULL,
};

struct met_family {
	const char		*name;
	const char		*help;
	const char		*label1, *label2;	/* NULL: fewer labels */
	const char *const	*values1, *const *values2;
	unsigned		 n1, n2;		/* label values (>= 1) */
	bool			 runtime;	/* label1's values named at run
						   time: METRICS_DIM rows */
};

static const char *const met_refusals[] = { "connections",
	"connections-per-ip", "connection-rate" };
static const char *const met_tls[] = { "TLSv1.2", "TLSv1.3", "other" };
static const char *const met_stages[] = { "connect", "helo", "starttls",
	"auth", "mail", "rcpt", "data", "header", "eom", "quit", "disconnect",
	"command" };
static const char *const met_classes[] = { "4xx", "5xx" };
static const char *const met_verdicts[] = { "continue", "accept", "reject",
	"disconnect", "delay", "discard", "quarantine", "tag", "failure" };
static const char *const met_actions[] = { "maildir", "discard", "relay",
	"mx", "forward", "other" };
static const char *const met_results[] = { "delivered", "deferred",
	"failed" };
static const char *const met_stores[] = { "sqlite", "redis", "memory" };
static const char *const met_auth[] = { "success", "failure" };
static const char *const met_proxy_failures[] = { "unavailable", "refused",
	"lost", "protocol" };
static const char *const met_spool_log[] = { "logged", "too-large", "full",
	"failed" };

#define N(a)	(unsigned)(sizeof(a) / sizeof((a)[0]))

static struct met_family met_counters[MET_NCOUNTERS] = {
	[MET_CONN_ACCEPTED] = { "postern_connections_accepted_total",
	    "Connections admitted", NULL, NULL, NULL, NULL, 1, 1, false },
	[MET_CONN_REFUSED] = { "postern_connections_refused_total",
	    "Connections refused at once (421), by the limit that refused "
	    "them", "reason", NULL, met_refusals, NULL, N(met_refusals), 1,
	    false },
	[MET_TLS_SESSIONS] = { "postern_tls_sessions_total",
	    "TLS handshakes completed (STARTTLS or implicit TLS), by version",
	    "version", NULL, met_tls, NULL, N(met_tls), 1, false },
	[MET_TLS_RESUMED] = { "postern_tls_resumed_total",
	    "TLS handshakes that resumed a session (no private-key "
	    "operation), by version", "version", NULL, met_tls, NULL,
	    N(met_tls), 1, false },
	[MET_MSG_ACCEPTED] = { "postern_messages_accepted_total",
	    "Messages accepted (the final 250)", NULL, NULL, NULL, NULL, 1,
	    1, false },
	[MET_MSG_BYTES] = { "postern_received_bytes_total",
	    "Octets of the messages accepted", NULL, NULL, NULL, NULL, 1, 1,
	    false },
	[MET_REPLIES_REFUSED] = { "postern_smtp_refusals_total",
	    "4xx and 5xx replies, by the stage of the dialogue (command: "
	    "others, such as syntax errors)", "stage", "class", met_stages,
	    met_classes, N(met_stages), N(met_classes), false },
	[MET_CHAIN_VERDICTS] = { "postern_chain_verdicts_total",
	    "Verdicts of handler chains, by handler kind", "handler",
	    "verdict", NULL, met_verdicts, 0, N(met_verdicts), true },
	[MET_DELIVERIES] = { "postern_deliveries_total",
	    "Delivery attempts of one recipient, by action and result",
	    "action", "result", met_actions, met_results, N(met_actions),
	    N(met_results), false },
	[MET_STORE_ERRORS] = { "postern_state_store_errors_total",
	    "Operations of the state store that failed", "engine", NULL,
	    met_stores, NULL, N(met_stores), 1, false },
	[MET_TABLE_ERRORS] = { "postern_table_errors_total",
	    "Table lookups that failed (a backend unavailable) and table "
	    "files that could not be read", NULL, NULL, NULL, NULL, 1, 1,
	    false },
	[MET_AUTH] = { "postern_auth_total", "SMTP AUTH attempts, by result",
	    "result", NULL, met_auth, NULL, N(met_auth), 1, false },
	[MET_PROXY_SESSIONS] = { "postern_proxy_sessions_total",
	    "Connections admitted on proxy listeners", NULL, NULL, NULL, NULL,
	    1, 1, false },
	[MET_PROXY_FAILURES] = { "postern_proxy_upstream_failures_total",
	    "Upstream connections of proxy sessions that failed, by why",
	    "reason", NULL, met_proxy_failures, NULL, N(met_proxy_failures),
	    1, false },
	[MET_SPOOL_LOG_COMMITS] = { "postern_spool_log_commits_total",
	    "Commits that tried the spool log, by result (all but logged "
	    "were fsynced instead)", "result", NULL, met_spool_log, NULL,
	    N(met_spool_log), 1, false },
};

static struct met_family met_histograms[MET_NHISTOGRAMS] = {
	[MET_CHAIN_SECONDS] = { "postern_chain_handler_duration_seconds",
	    "Time from a handler's start to its verdict", "handler", NULL,
	    NULL, NULL, 0, 1, true },
	[MET_SPOOL_COMMIT_SECONDS] = { "postern_spool_commit_duration_seconds",
	    "Time to make an accepted message durable, on its disk worker: "
	    "in the spool, or in its Maildirs on the fast path", NULL, NULL, NULL, NULL, 1, 1, false },
};

/* One label value's histogram. */
struct met_hist {
	_Atomic uint64_t	 bucket[MET_NBUCKETS];	/* not cumulative */
	_Atomic uint64_t	 count;
	_Atomic uint64_t	 sum_ns;
};

/*
 * Where each family starts in a shard: label values of a family are rows
 * of n2 slots, METRICS_DIM rows for a label named at run time.
 */
static unsigned met_cbase[MET_NCOUNTERS + 1], met_hbase[MET_NHISTOGRAMS + 1];

struct metrics_shard {
	struct metrics_shard	*next;
	struct met_hist		*h;		/* met_hbase[MET_NHISTOGRAMS] */
	_Atomic uint64_t	 c[];		/* met_cbase[MET_NCOUNTERS] */
};

__thread struct metrics_shard *metrics_tls_shard;

static pthread_mutex_t met_mu = PTHREAD_MUTEX_INITIALIZER;
static struct metrics_shard *met_shards;	/* live threads' (met_mu) */
static struct metrics_shard *met_retired;	/* ended threads' (met_mu) */
static pthread_key_t met_key;
static pthread_once_t met_once = PTHREAD_ONCE_INIT;

struct met_gauge {
	metrics_gauge_cb	*cb;
	void			*arg;
	struct met_gauge	*next;
};
/* Its own lock: a gauge takes the locks of what it reads (srv->mu), and a
 * thread holding those may make its shard (met_mu). */
static pthread_mutex_t met_gauge_mu = PTHREAD_MUTEX_INITIALIZER;
static struct met_gauge *met_gauges;		/* met_gauge_mu */

static unsigned
met_rows(const struct met_family *f)
{
	return f->runtime ? METRICS_DIM : f->n1;
}

static struct metrics_shard *
met_shard_alloc(void)
{
	struct metrics_shard *s = xcalloc(1, sizeof(*s) +
	    met_cbase[MET_NCOUNTERS] * sizeof(s->c[0]));

	s->h = xcalloc(met_hbase[MET_NHISTOGRAMS], sizeof(*s->h));
	return s;
}

static void
met_shard_free(struct metrics_shard *s)
{
	free(s->h);
	free(s);
}

static void
met_add_into(struct metrics_shard *dst, struct metrics_shard *src)
{
	for (size_t k = 0; k < met_cbase[MET_NCOUNTERS]; k++)
		dst->c[k] += atomic_load_explicit(&src->c[k],
		    memory_order_relaxed);
	for (size_t i = 0; i < met_hbase[MET_NHISTOGRAMS]; i++) {
		struct met_hist *d = &dst->h[i], *s = &src->h[i];
		for (size_t b = 0; b < MET_NBUCKETS; b++)
			d->bucket[b] += atomic_load_explicit(&s->bucket[b],
			    memory_order_relaxed);
		d->count += atomic_load_explicit(&s->count,
		    memory_order_relaxed);
		d->sum_ns += atomic_load_explicit(&s->sum_ns,
		    memory_order_relaxed);
	}
}

/* A thread ends: keep its counts in the retired shard. */
static void
met_thread_end(void *arg)
{
	struct metrics_shard *s = arg, **pp;

	pthread_mutex_lock(&met_mu);
	for (pp = &met_shards; *pp != NULL && *pp != s; pp = &(*pp)->next)
		;
	if (*pp != NULL)
		*pp = s->next;
	met_add_into(met_retired, s);
	pthread_mutex_unlock(&met_mu);
	met_shard_free(s);
}

/* The layout of a shard, once. */
static void
met_init(void)
{
	for (size_t c = 0; c < MET_NCOUNTERS; c++)
		met_cbase[c + 1] = met_cbase[c] + met_rows(&met_counters[c]) *
		    met_counters[c].n2;
	for (size_t h = 0; h < MET_NHISTOGRAMS; h++)
		met_hbase[h + 1] = met_hbase[h] +
		    met_rows(&met_histograms[h]);
	met_retired = met_shard_alloc();
	if (pthread_key_create(&met_key, met_thread_end) != 0)
		fatal("metrics: pthread_key_create failed");
}

struct metrics_shard *
metrics_shard_make(void)
{
	struct metrics_shard *s;

	pthread_once(&met_once, met_init);
	s = met_shard_alloc();
	pthread_setspecific(met_key, s);
	pthread_mutex_lock(&met_mu);
	s->next = met_shards;
	met_shards = s;
	pthread_mutex_unlock(&met_mu);
	metrics_tls_shard = s;
	return s;
}

void
metrics_set_handler_kinds(const char *const *names, size_t n)
{
	unsigned k = n < METRICS_DIM ? (unsigned)n : METRICS_DIM;

	met_counters[MET_CHAIN_VERDICTS].values1 = names;
	met_counters[MET_CHAIN_VERDICTS].n1 = k;
	met_histograms[MET_CHAIN_SECONDS].values1 = names;
	met_histograms[MET_CHAIN_SECONDS].n1 = k;
}

unsigned
metrics_action(const char *kind)
{
	for (unsigned i = 0; i < MET_A_OTHER; i++)
		if (strcmp(kind, met_actions[i]) == 0)
			return i;
	return MET_A_OTHER;
}

static unsigned
met_clamp(unsigned v, unsigned n)
{
	return n == 0 ? 0 : v < n ? v : n - 1;
}

_Atomic uint64_t *
metrics_counter_slot(struct metrics_shard *s, enum metrics_counter c,
    unsigned i, unsigned j)
{
	const struct met_family *f = &met_counters[c];

	return &s->c[met_cbase[c] + met_clamp(i, met_rows(f)) * f->n2 +
	    met_clamp(j, f->n2)];
}

void
metrics_observe_ns(enum metrics_histogram h, unsigned i, uint64_t ns)
{
	struct metrics_shard *s = metrics_tls_shard;
	struct met_hist *mh;
	size_t b = 0;

	if (s == NULL)
		s = metrics_shard_make();
	mh = &s->h[met_hbase[h] + met_clamp(i, met_rows(&met_histograms[h]))];
	while (b < MET_NBUCKETS && ns > met_bucket_ns[b])
		b++;
	if (b < MET_NBUCKETS)
		atomic_store_explicit(&mh->bucket[b], atomic_load_explicit(
		    &mh->bucket[b], memory_order_relaxed) + 1,
		    memory_order_relaxed);
	atomic_store_explicit(&mh->count, atomic_load_explicit(&mh->count,
	    memory_order_relaxed) + 1, memory_order_relaxed);
	atomic_store_explicit(&mh->sum_ns, atomic_load_explicit(&mh->sum_ns,
	    memory_order_relaxed) + ns, memory_order_relaxed);
}

uint64_t
metrics_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Every shard summed into one (met_mu held). */
static struct metrics_shard *
met_sum(void)
{
	struct metrics_shard *sum = met_shard_alloc();

	met_add_into(sum, met_retired);
	for (struct metrics_shard *s = met_shards; s != NULL; s = s->next)
		met_add_into(sum, s);
	return sum;
}

uint64_t
metrics_counter_sum(enum metrics_counter c, unsigned i, unsigned j)
{
	pthread_once(&met_once, met_init);
	pthread_mutex_lock(&met_mu);
	struct metrics_shard *sum = met_sum();
	pthread_mutex_unlock(&met_mu);
	uint64_t v = *metrics_counter_slot(sum, c, i, j);
	met_shard_free(sum);
	return v;
}

/* ----- the text ----- */

struct metrics_out {
	struct util_buf	*b;
	const char	*last;		/* the gauge whose HELP was written */
};

static void
met_head(struct util_buf *b, const char *name, const char *help,
    const char *type)
{
	util_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name,
	    type);
}

static void
met_render_counters(struct util_buf *b, struct metrics_shard *sum)
{
	for (size_t c = 0; c < MET_NCOUNTERS; c++) {
		const struct met_family *f = &met_counters[c];
		met_head(b, f->name, f->help, "counter");
		for (unsigned i = 0; i < f->n1; i++)
			for (unsigned j = 0; j < f->n2; j++) {
				uint64_t v = *metrics_counter_slot(sum, c, i,
				    j);
				/* Handler kinds x verdicts: those seen. */
				if (f->runtime && v == 0)
					continue;
				util_buf_addstr(b, f->name);
				if (f->label1 != NULL)
					util_buf_printf(b, "{%s=\"%s\"",
					    f->label1, f->values1[i]);
				if (f->label2 != NULL)
					util_buf_printf(b, ",%s=\"%s\"",
					    f->label2, f->values2[j]);
				util_buf_printf(b, "%s %" PRIu64 "\n",
				    f->label1 != NULL ? "}" : "", v);
			}
	}
}

static void
met_render_histogram(struct util_buf *b, const struct met_family *f,
    const struct met_hist *h, unsigned i)
{
	char lab[128] = "";
	uint64_t cum = 0;

	if (f->label1 != NULL)
		util_snprintf(lab, sizeof(lab), "%s=\"%s\",", f->label1,
		    f->values1[i]);
	for (size_t k = 0; k < MET_NBUCKETS; k++) {
		cum += h->bucket[k];
		util_buf_printf(b, "%s_bucket{%sle=\"%g\"} %" PRIu64 "\n",
		    f->name, lab, (double)met_bucket_ns[k] / 1e9, cum);
	}
	util_buf_printf(b, "%s_bucket{%sle=\"+Inf\"} %" PRIu64 "\n", f->name,
	    lab, (uint64_t)h->count);
	lab[strlen(lab) > 0 ? strlen(lab) - 1 : 0] = '\0';	/* the comma */
	util_buf_printf(b, "%s_sum%s%s%s %.9f\n", f->name, lab[0] ? "{" : "",
	    lab, lab[0] ? "}" : "", (double)h->sum_ns / 1e9);
	util_buf_printf(b, "%s_count%s%s%s %" PRIu64 "\n", f->name,
	    lab[0] ? "{" : "", lab, lab[0] ? "}" : "", (uint64_t)h->count);
}

void
metrics_gauge(struct metrics_out *out, const char *name, const char *help,
    const char *labels, double value)
{
	if (out->last == NULL || strcmp(out->last, name) != 0)
		met_head(out->b, name, help, strstr(name, "_total") != NULL ?
		    "counter" : "gauge");
	out->last = name;
	util_buf_printf(out->b, "%s%s%s%s %.17g\n", name, labels != NULL ?
	    "{" : "", labels != NULL ? labels : "", labels != NULL ? "}" : "",
	    value);
}

void
metrics_gauge_register(metrics_gauge_cb *cb, void *arg)
{
	struct met_gauge *g = xcalloc(1, sizeof(*g));

	g->cb = cb;
	g->arg = arg;
	pthread_mutex_lock(&met_gauge_mu);
	struct met_gauge **pp = &met_gauges;
	while (*pp != NULL)
		pp = &(*pp)->next;
	*pp = g;			/* in registration order */
	pthread_mutex_unlock(&met_gauge_mu);
}

void
metrics_gauge_unregister(metrics_gauge_cb *cb, void *arg)
{
	pthread_mutex_lock(&met_gauge_mu);
	for (struct met_gauge **pp = &met_gauges; *pp != NULL; )
		if ((*pp)->cb == cb && (*pp)->arg == arg) {
			struct met_gauge *g = *pp;
			*pp = g->next;
			free(g);
		} else
			pp = &(*pp)->next;
	pthread_mutex_unlock(&met_gauge_mu);
}

/*
 * From /proc/self/stat, in clock ticks: the CPU time, user and system, and
 * the start time after boot.  0 for those it cannot read.
 */
static void
met_read_stat(unsigned long long *ut_out, unsigned long long *st_out,
    unsigned long long *start_out)
{
	char line[1024], *p;
	FILE *f;

	*ut_out = *st_out = *start_out = 0;
	if ((f = fopen("/proc/self/stat", "re")) == NULL)
		return;
	/* After "(comm)": state and 10 fields, then utime stime; the start
	   time is the 22nd field. */
	if (fgets(line, sizeof(line), f) != NULL &&
	    (p = strrchr(line, ')')) != NULL &&
	    sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u "
	    "%llu %llu %*d %*d %*d %*d %*d %*d %llu", ut_out, st_out,
	    start_out) != 3)
		*ut_out = *st_out = *start_out = 0;
	fclose(f);
}

static double met_start_s;		/* process_start_time_seconds */
static pthread_once_t met_start_once = PTHREAD_ONCE_INIT;

/*
 * The start time since the epoch, worked out once: the boot time (now
 * less the time since boot) moves a little from one reading of the clocks
 * to the next, and a start time that moves looks like a restart.
 */
static void
met_start_init(void)
{
	unsigned long long ut, st, start;
	struct timespec now, up;

	met_read_stat(&ut, &st, &start);
	clock_gettime(CLOCK_REALTIME, &now);
	clock_gettime(CLOCK_BOOTTIME, &up);
	met_start_s = (double)(now.tv_sec - up.tv_sec) +
	    (double)(now.tv_nsec - up.tv_nsec) / 1e9 +
	    (double)start / (double)sysconf(_SC_CLK_TCK);
}

/* The standard process gauges: memory, descriptors, CPU, start time. */
static void
met_render_process(struct metrics_out *out)
{
	long page = sysconf(_SC_PAGESIZE), ticks = sysconf(_SC_CLK_TCK);
	unsigned long long size = 0, rss = 0, ut, st, start;
	FILE *f;
	DIR *d;
	size_t nfd = 0;

	pthread_once(&met_start_once, met_start_init);
	if ((f = fopen("/proc/self/statm", "re")) != NULL) {
		if (fscanf(f, "%llu %llu", &size, &rss) != 2)
			rss = 0;
		fclose(f);
	}
	met_read_stat(&ut, &st, &start);
	if ((d = opendir("/proc/self/fd")) != NULL) {
		for (struct dirent *e; (e = readdir(d)) != NULL; )
			nfd += e->d_name[0] != '.';
		closedir(d);
		nfd--;			/* the one opendir holds */
	}
	metrics_gauge(out, "process_resident_memory_bytes", "Resident memory",
	    NULL, (double)rss * (double)page);
	metrics_gauge(out, "process_virtual_memory_bytes", "Virtual memory",
	    NULL, (double)size * (double)page);
	metrics_gauge(out, "process_open_fds", "Open file descriptors", NULL,
	    (double)nfd);
	metrics_gauge(out, "process_cpu_seconds_total", "User and system CPU "
	    "time", NULL, (double)(ut + st) / (double)ticks);
	metrics_gauge(out, "process_start_time_seconds", "Start time, since "
	    "the epoch", NULL, met_start_s);
}

void
metrics_render(struct util_buf *b)
{
	struct metrics_out out = { b, NULL };

	pthread_once(&met_once, met_init);
	pthread_mutex_lock(&met_mu);
	struct metrics_shard *sum = met_sum();
	pthread_mutex_unlock(&met_mu);
	met_render_counters(b, sum);
	for (size_t h = 0; h < MET_NHISTOGRAMS; h++) {
		const struct met_family *f = &met_histograms[h];
		met_head(b, f->name, f->help, "histogram");
		for (unsigned i = 0; i < f->n1; i++)
			if (!f->runtime || sum->h[met_hbase[h] + i].count > 0)
				met_render_histogram(b, f,
				    &sum->h[met_hbase[h] + i], i);
	}
	met_shard_free(sum);
	met_render_process(&out);
	pthread_mutex_lock(&met_gauge_mu);
	for (struct met_gauge *g = met_gauges; g != NULL; g = g->next)
		g->cb(g->arg, &out);
	pthread_mutex_unlock(&met_gauge_mu);
}
