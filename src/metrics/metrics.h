/*
 * metrics/metrics.h: counters and latency histograms for Prometheus, and
 * the HTTP endpoint that serves them.  Each thread counts into its own
 * shard with plain (relaxed atomic) stores, so counting takes no lock and
 * shares no cache line; a scrape sums the shards.  Knows nothing of SMTP:
 * the families and their label values are named here, the callers say
 * which one moved.
 */
#ifndef POSTERN_METRICS_H
#define POSTERN_METRICS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/util.h"

/* Counter families; a family has up to two labels (METRICS_DIM each). */
enum metrics_counter {
	MET_CONN_ACCEPTED,	/* connections admitted */
	MET_CONN_REFUSED,	/* [enum metrics_refusal] */
	MET_TLS_SESSIONS,	/* [enum metrics_tls] handshakes done */
	MET_TLS_RESUMED,	/* [enum metrics_tls] of them, sessions resumed */
	MET_MSG_ACCEPTED,	/* messages accepted (250 after the data) */
	MET_MSG_BYTES,		/* octets of accepted messages */
	MET_REPLIES_REFUSED,	/* [enum metrics_stage][4xx=0, 5xx=1] */
	MET_CHAIN_VERDICTS,	/* [handler kind][enum metrics_verdict] */
	MET_DELIVERIES,		/* [enum metrics_action][enum metrics_result] */
	MET_STORE_ERRORS,	/* [enum metrics_store] */
	MET_TABLE_ERRORS,	/* table files that could not be read */
	MET_AUTH,		/* [0 success, 1 failure] */
	MET_PROXY_SESSIONS,	/* connections on proxy listeners */
	MET_PROXY_FAILURES,	/* [enum metrics_proxy_failure] upstreams */
	MET_SPOOL_LOG_COMMITS,	/* [enum metrics_spool_log] commits that
				   tried the spool log */
	MET_NCOUNTERS
};

/* Histogram families, in seconds; [label] as for counters. */
enum metrics_histogram {
	MET_CHAIN_SECONDS,	/* [handler kind] start to verdict */
	MET_SPOOL_COMMIT_SECONDS, /* a spool or Maildir commit, on its worker */
	MET_NHISTOGRAMS
};

#define METRICS_DIM	40	/* label values per label, at most */

enum metrics_refusal { MET_REFUSED_TOTAL, MET_REFUSED_PER_IP,
	MET_REFUSED_RATE };
enum metrics_tls { MET_TLS_12, MET_TLS_13, MET_TLS_OTHER };
/* The stages of the dialogue, in smtp/'s order, then "command". */
enum metrics_stage { MET_ST_CONNECT, MET_ST_HELO, MET_ST_STARTTLS,
	MET_ST_AUTH, MET_ST_MAIL, MET_ST_RCPT, MET_ST_DATA, MET_ST_HEADER,
	MET_ST_EOM, MET_ST_QUIT, MET_ST_DISCONNECT, MET_ST_COMMAND };
enum metrics_verdict { MET_V_CONTINUE, MET_V_ACCEPT, MET_V_REJECT,
	MET_V_DISCONNECT, MET_V_DELAY, MET_V_DISCARD, MET_V_QUARANTINE,
	MET_V_TAG, MET_V_FAILURE };
enum metrics_action { MET_A_MAILDIR, MET_A_DISCARD, MET_A_RELAY, MET_A_MX,
	MET_A_FORWARD, MET_A_OTHER };
enum metrics_result { MET_R_DELIVERED, MET_R_DEFERRED, MET_R_FAILED };
/* The action label of an action kind's name ("maildir", ...; else other). */
unsigned metrics_action(const char *kind);
enum metrics_store { MET_STORE_SQLITE, MET_STORE_REDIS, MET_STORE_MEMORY };
/* Why a proxy's upstream failed a session: no connection or greeting, a
 * refusal while setting up, gone after that, or a reply out of protocol. */
enum metrics_proxy_failure { MET_PX_UNAVAILABLE, MET_PX_REFUSED,
	MET_PX_LOST, MET_PX_PROTOCOL };
/* What became of a commit that tried the spool log: its record made
 * durable there, or fsyncs instead: the record larger than the log takes,
 * no room before the checkpoint, or the log's write failed (then or
 * earlier). */
enum metrics_spool_log { MET_SL_LOGGED, MET_SL_TOO_LARGE, MET_SL_FULL,
	MET_SL_FAILED };

/*
 * Name the values of a label given at run time: the handler kinds of
 * MET_CHAIN_VERDICTS and MET_CHAIN_SECONDS (at most METRICS_DIM).  Call at
 * start-up, before anything counts; names are borrowed for good.
 */
void	metrics_set_handler_kinds(const char *const *names, size_t n);

/* One thread's counts. */
struct metrics_shard;
/* The calling thread's shard, made on its first use. */
struct metrics_shard *metrics_shard_make(void);
extern __thread struct metrics_shard *metrics_tls_shard;

/* The slots of a shard, for the inline functions below. */
_Atomic uint64_t *metrics_counter_slot(struct metrics_shard *s,
	    enum metrics_counter c, unsigned i, unsigned j);

/* Add n to counter c with label values i and j (0 when the family has
 * fewer labels).  Values out of range are counted as the last one. */
static inline void
metrics_add(enum metrics_counter c, unsigned i, unsigned j, uint64_t n)
{
	struct metrics_shard *s = metrics_tls_shard;
	_Atomic uint64_t *slot;

	if (s == NULL)
		s = metrics_shard_make();
	slot = metrics_counter_slot(s, c, i, j);
	/* Only this thread writes the slot: no read-modify-write needed. */
	atomic_store_explicit(slot, atomic_load_explicit(slot,
	    memory_order_relaxed) + n, memory_order_relaxed);
}

static inline void
metrics_inc(enum metrics_counter c, unsigned i, unsigned j)
{
	metrics_add(c, i, j, 1);
}

/* Record one duration (nanoseconds) in histogram h, label value i. */
void	metrics_observe_ns(enum metrics_histogram h, unsigned i, uint64_t ns);
/* A monotonic clock in nanoseconds, for durations. */
uint64_t metrics_now_ns(void);

/*
 * Gauges: on every scrape, cb appends lines for its gauges to out with
 * metrics_gauge() (on the scrape thread: take your own locks).
 */
struct metrics_out;
typedef void metrics_gauge_cb(void *arg, struct metrics_out *out);
void	metrics_gauge_register(metrics_gauge_cb *cb, void *arg);
void	metrics_gauge_unregister(metrics_gauge_cb *cb, void *arg);
/*
 * One gauge sample: name (with its HELP text the first time it is given)
 * and labels ("state=\"held\"" or NULL).
 */
void	metrics_gauge(struct metrics_out *out, const char *name,
	    const char *help, const char *labels, double value);

/* The whole exposition (text format 0.0.4) into b. */
void	metrics_render(struct util_buf *b);
/* A counter summed over every shard (for tests). */
uint64_t metrics_counter_sum(enum metrics_counter c, unsigned i, unsigned j);

/*
 * The HTTP endpoint, on a thread of its own: GET /metrics, and GET
 * /healthz, which answers 200 when health_cb returns NULL, else 503 and
 * the text it returns.  fd: a bound, listening TCP socket (ownership
 * passes).  NULL with *err_out when it cannot start.
 */
typedef const char *metrics_health_cb(void *arg);
struct metrics_http;
struct metrics_http *metrics_http_new(int fd, metrics_health_cb *health,
	    void *health_arg, const char **err_out);
/* Stop the thread, close the socket. */
void	metrics_http_free(struct metrics_http **hp);

#endif
