/*
 * net/server.c: the server process.  The main thread binds the listeners
 * (listen.c), drops privileges (privdrop.c), opens the spool, starts the
 * queue (wiring.c) and the event loops (loop.c), and then only waits for
 * signals: SIGHUP loads a new configuration and posts it to each loop,
 * SIGTERM and SIGINT post a stop and the loops drain.  New connections are
 * admitted under limits counted across loops (admit.c) and steered to as
 * few loops as the load needs (steer.c).
 */
#include "net/net_private.h"

#include <errno.h>
#include <event2/thread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config.h"
#include "log/log.h"
#include "priv/priv.h"
#include "queue/queue.h"
#include "spool/spool.h"
#include "tls/tls.h"

/* ----- signals (main thread) ----- */

/* Where the log lines go and how they look, from cfg.  0 or -1. */
static int
net_log_setup(const struct config *cfg, const char **err_out)
{
	if (log_file_set(cfg->log_file, cfg->log_file_size,
	    cfg->log_file_keep, err_out) == -1)
		return -1;
	log_set_json(cfg->log_json);
	log_init(cfg->log_syslog, cfg->log_facility,
	    (enum log_level)cfg->log_level);
	return 0;
}

static void
net_post(struct net_server *srv, struct conn_rt *rt, bool listeners,
    bool stop)
{
	pthread_mutex_lock(&srv->mu);
	for (unsigned i = 0; i < srv->nloops; i++) {
		struct net_loop *loop = &srv->loops[i];
		if (rt != NULL) {
			conn_rt_unref(&loop->new_rt);
			loop->new_rt = conn_rt_ref(rt);
			atomic_store(&loop->rt_posted, true);
		}
		if (listeners)
			net_post_listeners(srv, loop);
		loop->stop |= stop;
		event_active(loop->wake_ev, EV_TIMEOUT, 1);
	}
	pthread_mutex_unlock(&srv->mu);
}

/*
 * A configuration let go for the last time, on any thread: a thread of its
 * own frees it, since that may wait on its tables' threads, up to a
 * lookup's timeout, and neither a loop nor the main thread (signals,
 * reloads) may wait for that.
 */
static void
net_rt_bury(void *arg, struct conn_rt *rt)
{
	struct net_server *srv = arg;

	pthread_mutex_lock(&srv->reap_mu);
	rt->reap_next = srv->graves;
	srv->graves = rt;
	pthread_cond_signal(&srv->reap_cv);
	pthread_mutex_unlock(&srv->reap_mu);
}

/* The reaper: frees what is buried until told to stop with none left. */
static void *
net_reaper_main(void *arg)
{
	struct net_server *srv = arg;

	pthread_mutex_lock(&srv->reap_mu);
	for (;;) {
		struct conn_rt *rt = srv->graves;

		if (rt == NULL) {
			if (srv->reap_stop)
				break;
			pthread_cond_wait(&srv->reap_cv, &srv->reap_mu);
			continue;
		}
		srv->graves = NULL;
		pthread_mutex_unlock(&srv->reap_mu);
		while (rt != NULL) {
			struct conn_rt *next = rt->reap_next;
			conn_rt_free(rt);
			rt = next;
		}
		pthread_mutex_lock(&srv->reap_mu);
	}
	pthread_mutex_unlock(&srv->reap_mu);
	return NULL;
}

/* Two optional strings are the same (or both are unset). */
static bool
net_same_str(const char *a, const char *b)
{
	return a == NULL || b == NULL ? a == b : strcmp(a, b) == 0;
}

/* READY=1 and a STATUS line: what we listen on, and why we say so. */
static void
net_notify_ready(struct net_server *srv, const char *why)
{
	net_notify(srv->notify_fd, "READY=1\nSTATUS=%s; accepting mail on %zu "
	    "address%s with %u loop%s", why, srv->nlistens,
	    srv->nlistens == 1 ? "" : "es", srv->nloops,
	    srv->nloops == 1 ? "" : "s");
}

/* Two optional lists of strings are the same. */
static bool
net_same_strv(char **a, char **b)
{
	while (a != NULL && b != NULL && *a != NULL && *b != NULL &&
	    strcmp(*a, *b) == 0)
		a++, b++;
	return (a == NULL || *a == NULL) && (b == NULL || *b == NULL);
}

/* *dst becomes a copy of the optional string v. */
static void
net_keep_str(char **dst, const char *v)
{
	free(*dst);
	*dst = v != NULL ? xstrdup(v) : NULL;
}

/* *dst becomes a copy of the optional list of strings v. */
static void
net_keep_strv(char ***dst, char **v)
{
	size_t n = 0;

	for (char **d = *dst; d != NULL && *d != NULL; d++)
		free(*d);
	free(*dst);
	*dst = NULL;
	if (v == NULL)
		return;
	while (v[n] != NULL)
		n++;
	*dst = xcalloc(n + 1, sizeof(**dst));
	for (size_t i = 0; i < n; i++)
		(*dst)[i] = xstrdup(v[i]);
}

/* What only a restart changes, as net_restart_only reports it. */
enum net_fixed {
	NET_FIXED_SPOOL		= 1 << 0,
	NET_FIXED_QUEUE		= 1 << 1,
	NET_FIXED_USER		= 1 << 2,
	NET_FIXED_GROUP		= 1 << 3,
	NET_FIXED_ROOTS		= 1 << 4,
	NET_FIXED_METRICS	= 1 << 5,
	NET_FIXED_PID_FILE	= 1 << 6,
	NET_FIXED_SPOOL_LOG	= 1 << 7,
};

static const char *const net_fixed_what[] = {
	"spool (and its keep folder) and workers change",
	"queue concurrency changes",
	"user changes",
	"group changes",
	"maildir-root changes",
	"metrics listen changes",
	"pid-file changes",
	"spool log-size changes",
};

/*
 * The settings only a restart applies: where the reloaded cfg differs from
 * what runs, the running value replaces its own, so the configuration in
 * force says what runs (and the next reload compares with that).  Returns
 * the differences, NET_FIXED_ bits, for the log once the reload is done.
 */
static unsigned
net_restart_only(const struct net_server *srv, struct config *cfg)
{
	const struct config *was = srv->rt->cfg;
	unsigned diff = 0;

	if (strcmp(cfg->spool, was->spool) != 0 ||
	    !net_same_str(cfg->spool_keep, was->spool_keep) ||
	    cfg->spool_keep_max != was->spool_keep_max ||
	    cfg->workers != was->workers ||
	    cfg->workers_spread != was->workers_spread)
		diff |= NET_FIXED_SPOOL;
	if (cfg->queue.concurrency != was->queue.concurrency)
		diff |= NET_FIXED_QUEUE;
	if (!net_same_str(cfg->user, was->user))
		diff |= NET_FIXED_USER;
	if (!net_same_str(cfg->group, was->group))
		diff |= NET_FIXED_GROUP;
	if (!net_same_strv(cfg->maildir_roots, was->maildir_roots))
		diff |= NET_FIXED_ROOTS;
	if (!net_same_str(cfg->metrics_addr, was->metrics_addr) ||
	    (cfg->metrics_addr != NULL &&
	    cfg->metrics_port != was->metrics_port))
		diff |= NET_FIXED_METRICS;
	/* postern run --pid-file wins over the file's. */
	if (!srv->pid_file_forced && !net_same_str(cfg->pid_file,
	    was->pid_file))
		diff |= NET_FIXED_PID_FILE;
	if (cfg->spool_log_size != was->spool_log_size)
		diff |= NET_FIXED_SPOOL_LOG;
	net_keep_str(&cfg->spool, was->spool);
	net_keep_str(&cfg->spool_keep, was->spool_keep);
	cfg->spool_keep_max = was->spool_keep_max;
	cfg->workers = was->workers;
	cfg->workers_spread = was->workers_spread;
	cfg->queue.concurrency = was->queue.concurrency;
	net_keep_str(&cfg->user, was->user);
	net_keep_str(&cfg->group, was->group);
	net_keep_strv(&cfg->maildir_roots, was->maildir_roots);
	net_keep_str(&cfg->metrics_addr, was->metrics_addr);
	cfg->metrics_port = was->metrics_port;
	net_keep_str(&cfg->pid_file, was->pid_file);
	cfg->spool_log_size = was->spool_log_size;
	return diff;
}

/* A reload that changes nothing: say why, and that the old one runs. */
static void
net_reload_refused(struct net_server *srv, const char *why)
{
	log_msg(LOG_LVL_ERROR, "reload failed: %s%skeeping the running "
	    "configuration", why != NULL ? why : "", why != NULL ? ": " : "");
	net_notify_ready(srv, "reload failed, running the previous "
	    "configuration");
}

/* One log line per error of errs ("FILE:LINE: message" lines; freed). */
static void
net_reload_log_errs(char *errs)
{
	char *save = NULL;

	for (char *line = strtok_r(errs, "\n", &save); line != NULL;
	    line = strtok_r(NULL, "\n", &save))
		log_msg(LOG_LVL_ERROR, "reload: %s", line);
	free(errs);
}

/*
 * A reload refused for errs (as net_reload_log_errs takes them): one
 * error is named in the refusal's line, as a bind's or the metrics
 * address's is; several come each in a line of their own before it.
 */
static void
net_reload_refused_errs(struct net_server *srv, char *errs)
{
	char *nl = strchr(errs, '\n');

	if (nl != NULL && nl[1] == '\0') {
		*nl = '\0';
		net_reload_refused(srv, errs);
		free(errs);
		return;
	}
	net_reload_log_errs(errs);
	net_reload_refused(srv, NULL);
}

static void
net_reload(struct net_server *srv)
{
	char *errs = NULL;
	const char *err = NULL;
	struct config *cfg;
	struct conn_rt *rt;
	struct queue_opts qo;
	unsigned fixed;

	net_notify(srv->notify_fd, "RELOADING=1\nMONOTONIC_USEC=%llu\n"
	    "STATUS=reloading %s", (unsigned long long)util_now_ms() * 1000,
	    srv->config_path);
	cfg = config_load(srv->config_path, &errs);
	if (cfg == NULL) {
		net_reload_log_errs(errs);
		net_reload_refused(srv, NULL);
		return;
	}
	/* What postern check and the next start would refuse in the file
	 * as written, what only a restart changes included (that keeps its
	 * running value below all the same). */
	if (net_check_reload(cfg, srv->rt->cfg, &errs) == -1) {
		config_free(&cfg);
		net_reload_refused_errs(srv, errs);
		return;
	}
	fixed = net_restart_only(srv, cfg);
	/* The endpoint is ours: a listener on it is refused for that, not
	 * as another process's address (net_listens_sync). */
	if (net_check_nofile(cfg, &err) == -1 ||
	    net_check_metrics(cfg, &err) == -1) {
		config_free(&cfg);
		net_reload_refused(srv, err);
		return;
	}
	if ((rt = conn_rt_new(cfg, &err)) == NULL) {
		net_reload_refused(srv, err);
		return;
	}
	conn_rt_set_reaper(rt, net_rt_bury, srv);
	/* Every new address bound, or none: never a server that hears
	 * nothing (docs/deploy.md). */
	if (net_listens_sync(srv, rt->cfg, &err) == -1) {
		net_reload_refused(srv, err);
		conn_rt_unref(&rt);
		return;
	}
	atomic_store(&srv->nlistening, (unsigned)srv->nlistens);
	if (net_log_setup(rt->cfg, &err) == -1)
		log_msg(LOG_LVL_ERROR, "reload: %s: logging as before", err);
	for (size_t i = 0; i < sizeof(net_fixed_what) /
	    sizeof(net_fixed_what[0]); i++)
		if (fixed & 1u << i)
			log_msg(LOG_LVL_WARN, "reload: %s only at restart",
			    net_fixed_what[i]);
	/* Retry times, lifetime, delay warning, limit per destination and
	 * hostname; its concurrency is the running one (above). */
	queue_opts_init(&qo, rt->cfg);
	(void)queue_reconfigure(srv->queue, &qo);
	net_post(srv, rt, true, false);
	pthread_mutex_lock(&srv->mu);	/* queue threads read srv->rt */
	conn_rt_unref(&srv->rt);
	srv->rt = rt;
	pthread_mutex_unlock(&srv->mu);
	net_size_nofile(rt->cfg);
	log_msg(LOG_LVL_INFO, "reload: configuration %s loaded",
	    srv->config_path);
	net_notify_ready(srv, "configuration reloaded");
}

static void
net_signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct net_server *srv = arg;
	const char *err = NULL;
	unsigned nconns;

	(void)what;
	if (srv->loops == NULL && sig != SIGUSR1) {
		/*
		 * Still binding (net_listen_first): SIGTERM and SIGINT end
		 * the wait; a SIGHUP neither ends nor shortens it (nor does
		 * logrotate's SIGUSR1, below): bind-retry's INTERVAL stays.
		 */
		if (sig == SIGHUP) {
			log_msg(LOG_LVL_INFO, "reload: not before every "
			    "address is bound");
			return;
		}
		srv->startup_signal = (int)sig;
		event_base_loopbreak(srv->base);
		return;
	}
	if (sig == SIGHUP) {
		net_reload(srv);
		return;
	}
	if (sig == SIGUSR1) {
		/* logrotate renamed the file: write to a new one. */
		if (!log_has_file())
			log_msg(LOG_LVL_INFO, "SIGUSR1: no log file to "
			    "reopen");
		else if (log_file_reopen(&err) == -1)
			log_msg(LOG_LVL_ERROR, "SIGUSR1: %s", err);
		else
			log_msg(LOG_LVL_INFO, "log file reopened");
		return;
	}
	pthread_mutex_lock(&srv->mu);	/* the loops count them */
	nconns = srv->nconns;
	pthread_mutex_unlock(&srv->mu);
	log_msg(LOG_LVL_INFO, "shutdown: signal %d, draining %u sessions",
	    (int)sig, nconns);
	atomic_store(&srv->stopping, true);
	/* Deliveries get the sessions' grace, then are cut short. */
	queue_shutdown(srv->queue, srv->rt->cfg->limits.shutdown_ms);
	net_notify(srv->notify_fd, "STOPPING=1\nSTATUS=stopping: draining %u "
	    "sessions", nconns);
	if (srv->balance_ev != NULL) {
		/* The loops close the listen sockets: no more steering. */
		event_del(srv->balance_ev);
		pthread_mutex_lock(&srv->mu);
		srv->balance_asleep = false;
		pthread_mutex_unlock(&srv->mu);
	}
	net_post(srv, NULL, false, true);
	event_base_loopbreak(srv->base);	/* then join the loops */
}

/* ----- life ----- */

/*
 * Root now, another user soon: a reload reads the certificates and keys
 * again as that user, and renewed files often belong to root alone (a
 * 0600 key).  The helper opens those for us, the ones named now only.
 */
static bool
net_tls_needs_root(const struct config *cfg)
{
	bool certs = cfg->ntls_certs > 0;

	for (size_t i = 0; i < cfg->nlistens; i++)
		certs = certs || cfg->listens[i].ncerts > 0;
	return certs && cfg->user != NULL && geteuid() == 0;
}

static int
net_tls_open(void *arg, const char *path, const char **err_out)
{
	return priv_open(arg, path, err_out);
}

/*
 * Bind every listen address at start-up.  An address in use (another
 * server still stopping) or not there yet (an interface coming up) is
 * tried again, "bind-retry" times, while signals are served: SIGTERM
 * then ends the process.  Any other failure, or the last one, is fatal.
 */
static void
net_listen_first(struct net_server *srv, const struct config *cfg)
{
	const char *err = NULL;

	for (unsigned n = 1; net_listens_sync(srv, cfg, &err) == -1; n++) {
		struct timeval tv = { (time_t)(cfg->bind_retry_ms / 1000),
		    (suseconds_t)(cfg->bind_retry_ms % 1000) * 1000 };
		bool again = srv->bind_errno == EADDRINUSE ||
		    srv->bind_errno == EADDRNOTAVAIL;

		if (!again || n > cfg->bind_retries)
			fatal("%s%s", err, again ? " (no more tries: "
			    "bind-retry)" : "");
		log_msg(LOG_LVL_WARN, "%s: trying again in %llu ms (%u of %u)",
		    err, (unsigned long long)cfg->bind_retry_ms, n,
		    cfg->bind_retries);
		net_notify(srv->notify_fd, "STATUS=%s: trying again (%u of "
		    "%u)\nEXTEND_TIMEOUT_USEC=%llu", err, n, cfg->bind_retries,
		    (unsigned long long)(cfg->bind_retry_ms + 30000) * 1000);
		event_base_loopexit(srv->base, &tv);
		event_base_dispatch(srv->base);
		if (srv->startup_signal != 0) {
			log_msg(LOG_LVL_INFO, "shutdown: signal %d before "
			    "every address was bound", srv->startup_signal);
			exit(0);
		}
	}
}

/*
 * How many disk workers run at once before a job waits for one of them:
 * the CPUs (at least two).  A worker waiting on the disk leaves its place.
 */
static unsigned
net_disk_maxrun(void)
{
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

	return ncpu < 2 ? 2 : ncpu > NET_DISK_THREADS ? NET_DISK_THREADS :
	    (unsigned)ncpu;
}

/* What libevent itself has to say goes to our log, not raw to stderr. */
static void
net_libevent_log_cb(int severity, const char *msg)
{
	char safe[512];

	log_msg(severity >= EVENT_LOG_ERR ? LOG_LVL_ERROR :
	    severity == EVENT_LOG_WARN ? LOG_LVL_WARN :
	    severity == EVENT_LOG_MSG ? LOG_LVL_INFO : LOG_LVL_DEBUG,
	    "libevent: %s", log_safe_into(safe, sizeof(safe), msg,
	    strlen(msg)));
}

/*
 * Start-up failed before cfg went to its runtime (conn_rt_new): free it
 * (nothing else holds it), then fatal with why.
 */
static void UTIL_NORETURN
net_start_fail(struct config *cfg, const char *why)
{
	char text[1024];

	(void)util_strlcpy(text, why, sizeof(text));
	config_free(&cfg);
	fatal("%s", text);
}

void
net_signals_reset(void)
{
	struct sigaction dfl = { .sa_handler = SIG_DFL };
	sigset_t none;

	sigemptyset(&dfl.sa_mask);
	sigaction(SIGCHLD, &dfl, NULL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
}

/*
 * The spool's files are 0600 in 0700 folders, but a spool folder others
 * may enter shows them the queue ids, the lock and the state store's name.
 * One the server makes is 0700; one an admin made otherwise is left as
 * it is (a package may set its mode), with a word at each start.
 */
static void
net_spool_mode_check(const char *spool)
{
	struct stat st;

	if (stat(spool, &st) == 0 && (st.st_mode & 077) != 0)
		log_msg(LOG_LVL_WARN, "spool %s is mode %03o: other local "
		    "users may look into it; make it 0700 (chmod 0700 %s)",
		    spool, (unsigned)(st.st_mode & 0777), spool);
}

struct net_server *
net_server_new(const char *config_path, struct config *cfg,
    const char *pid_file)
{
	struct net_server *srv;
	const char *err = NULL;
	char *errs = NULL;

	if (pid_file != NULL)
		net_keep_str(&cfg->pid_file, pid_file);
	/* What postern check finds, before anything is made or bound. */
	if (net_check_system(cfg, &errs) == -1) {
		err = util_err("%.*s", (int)strlen(errs) - 1, errs);
		free(errs);
		net_start_fail(cfg, err);
	}
	if (net_log_setup(cfg, &err) == -1)
		net_start_fail(cfg, util_err("%s:%d: %s", cfg->path,
		    config_line_of(cfg, "log", "file"), err));
	event_set_log_callback(net_libevent_log_cb);
	srv = xcalloc(1, sizeof(*srv));
	srv->metrics_fd = -1;
	srv->pid_file_forced = pid_file != NULL;
	srv->notify_fd = net_notify_open();
	/* First: a second instance stops here, before it binds anything. */
	if (cfg->pid_file != NULL &&
	    net_pidfile_open(cfg->pid_file, &err) == -1)
		net_start_fail(cfg, err);
	if (evthread_use_pthreads() == -1)
		net_start_fail(cfg, "libevent: no thread support");
	pthread_mutex_init(&srv->mu, NULL);
	pthread_mutex_init(&srv->reap_mu, NULL);
	pthread_cond_init(&srv->reap_cv, NULL);
	net_raise_nofile();
	signal(SIGPIPE, SIG_IGN);
	srv->config_path = xstrdup(config_path);
	/* Signals first: once a port answers, SIGTERM must drain, not kill. */
	srv->base = event_base_new();
	if (srv->base == NULL)
		fatal("event_base_new failed");
	srv->sig_term = evsignal_new(srv->base, SIGTERM, net_signal_cb, srv);
	srv->sig_int = evsignal_new(srv->base, SIGINT, net_signal_cb, srv);
	srv->sig_hup = evsignal_new(srv->base, SIGHUP, net_signal_cb, srv);
	srv->sig_usr1 = evsignal_new(srv->base, SIGUSR1, net_signal_cb, srv);
	event_add(srv->sig_usr1, NULL);
	event_add(srv->sig_term, NULL);
	event_add(srv->sig_int, NULL);
	event_add(srv->sig_hup, NULL);
	net_size_nofile(cfg);
	/* The privileged helper: forked as root, before any thread. */
	if ((config_needs_priv(cfg) || net_tls_needs_root(cfg)) &&
	    (srv->priv = priv_start(cfg, &err)) == NULL)
		net_start_fail(cfg, err);
	if (srv->priv != NULL)
		tls_server_set_opener(net_tls_open, srv->priv);
	if ((srv->rt = conn_rt_new(cfg, &err)) == NULL)
		fatal("%s", err);
	if (pthread_create(&srv->reaper, NULL, net_reaper_main, srv) != 0)
		fatal("pthread_create: cannot start the reaper");
	conn_rt_set_reaper(srv->rt, net_rt_bury, srv);
	cfg = srv->rt->cfg;
	srv->nloops = cfg->workers;
	if (srv->nloops > 1 && !cfg->workers_spread) {
		/* pack: loop 0 alone to begin with */
		srv->balance_ev = evtimer_new(srv->base, net_balance_cb, srv);
		srv->nopen = 1;
		srv->balance_asleep = true;
	}
	net_passed_take_all(&srv->passed);
	net_listen_first(srv, cfg);
	net_passed_close_rest(&srv->passed);
	atomic_store(&srv->nlistening, (unsigned)srv->nlistens);
	if (net_observe_bind(srv, cfg, &err) == -1)
		fatal("%s", err);
	/* Bound and read: no root from here on, before any client byte. */
	if (net_drop_privileges(cfg->user, cfg->group, &err) == -1)
		fatal("%s", err);
	if (geteuid() == 0)
		log_msg(LOG_LVL_WARN, "running as root: add a 'user' "
		    "statement to drop privileges");
	if ((srv->spool = spool_open(cfg->spool, &err)) == NULL)
		fatal("spool %s: %s", cfg->spool, err);
	/* One server per spool: a second one would deliver the same mail. */
	if (spool_lock(srv->spool, &err) == -1)
		fatal("%s", err);
	net_spool_mode_check(cfg->spool);
	/* What the log holds is made good before any client is served. */
	if (spool_log_open(srv->spool, cfg->spool_log_size, &err) == -1)
		fatal("%s", err);
	if (cfg->spool_keep != NULL && spool_keep_open(srv->spool,
	    cfg->spool_keep, cfg->spool_keep_max, &err) == -1)
		fatal("spool keep %s", err);
	srv->pool = util_pool_new(NET_DISK_THREADS, net_disk_maxrun());
	srv->tlw = log_translog_writer_new();
	struct queue_opts qo;

	queue_opts_init(&qo, cfg);
	qo.route = net_queue_route;
	qo.route_arg = srv;
	qo.deliver = net_queue_deliver;
	qo.deliver_arg = srv;
	qo.control = true;	/* <spool>/control.sock: postern queue, send */
	srv->queue = queue_new_opts(srv->spool, &qo);
	srv->loops = xcalloc(srv->nloops, sizeof(*srv->loops));
	for (unsigned i = 0; i < srv->nloops; i++)
		net_loop_init(srv, &srv->loops[i], i);
	queue_recover(srv->queue);
	return srv;
}

int
net_server_run(struct net_server *srv)
{
	for (unsigned i = 0; i < srv->nloops; i++)
		if (pthread_create(&srv->loops[i].thread, NULL, net_loop_main,
		    &srv->loops[i]) != 0)
			fatal("pthread_create: cannot start loop %u", i);
	log_msg(LOG_LVL_INFO, "postern started: hostname=%s spool=%s "
	    "workers=%u", srv->rt->cfg->hostname, srv->rt->cfg->spool,
	    srv->nloops);
	net_observe_start(srv);
	net_notify_ready(srv, "started");
	if (event_base_dispatch(srv->base) == -1)
		return 1;
	for (unsigned i = 0; i < srv->nloops; i++)
		pthread_join(srv->loops[i].thread, NULL);
	srv->ran = true;	/* "stopped" once the queue is too */
	return 0;
}

void
net_server_free(struct net_server **srvp)
{
	struct net_server *srv = *srvp;

	if (srv == NULL)
		return;
	net_observe_stop(srv);		/* its gauges read the queue */
	for (unsigned i = 0; i < srv->nloops; i++) {
		struct net_loop *loop = &srv->loops[i];
		conn_free_all(&loop->ctx);	/* none, unless a loop failed */
		net_loop_sync_levs(loop, NULL, 0);
	}
	util_pool_free(&srv->pool);		/* every disk job has ended */
	log_translog_writer_free(&srv->tlw);	/* every log was closed */
	queue_free(&srv->queue);		/* the rest waits in the spool */
	priv_free(&srv->priv);			/* while the loops' bases live */
	spool_close(&srv->spool);
	if (srv->ran)
		log_msg(LOG_LVL_INFO, "postern stopped");
	for (unsigned i = 0; i < srv->nloops; i++)
		net_loop_clear(&srv->loops[i]);
	free(srv->loops);
	for (size_t i = 0; i < srv->nlistens; i++) {
		free(srv->listens[i].addr);
		free(srv->listens[i].fds);
	}
	free(srv->listens);
	net_admit_clear(srv);
	event_free(srv->sig_term);
	event_free(srv->sig_int);
	event_free(srv->sig_hup);
	event_free(srv->sig_usr1);
	if (srv->balance_ev != NULL)
		event_free(srv->balance_ev);
	conn_rt_unref(&srv->rt);		/* every reference is gone */
	pthread_mutex_lock(&srv->reap_mu);
	srv->reap_stop = true;
	pthread_cond_signal(&srv->reap_cv);
	pthread_mutex_unlock(&srv->reap_mu);
	pthread_join(srv->reaper, NULL);
	pthread_cond_destroy(&srv->reap_cv);
	pthread_mutex_destroy(&srv->reap_mu);
	event_base_free(srv->base);
	pthread_mutex_destroy(&srv->mu);
	net_pidfile_close();
	if (srv->notify_fd != -1)
		close(srv->notify_fd);
	free(srv->config_path);
	free(srv);
	*srvp = NULL;
}
