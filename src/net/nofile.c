/*
 * net/nofile.c: file descriptors.  The soft limit is raised to the hard
 * one at start; a configuration whose connections and what postern keeps
 * open for itself cannot fit in it is refused (run, check, reload).  Out
 * of descriptors all the same, the accept side pauses (listen.c).
 */
#include "net/net_private.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

#include "config/config.h"
#include "log/log.h"

/*
 * What postern keeps open besides the connections, at most: each disk
 * thread's kept Maildir (folder, tmp/, new/, cur/) with the file it writes
 * and the spool file it reads; the same for each queue worker (or an
 * outbound connection); the listen sockets; per loop its event base's
 * descriptors and its spare; and stdio, the log, signals, the spool's
 * folders, lock and control socket, the state store.
 */
#define NET_FDS_PER_WORKER	6
#define NET_FDS_PER_LOOP	4
#define NET_FDS_FIXED		32

void
net_raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) == -1)
			log_msg(LOG_LVL_WARN, "setrlimit(NOFILE): %s",
			    strerror(errno));
	}
}

/* Milter handlers: each session keeps a connection to each. */
static unsigned
net_milters(const struct config *cfg)
{
	unsigned n = 0;

	for (size_t st = 0; st < CONFIG_STAGE_COUNT; st++)
		for (size_t i = 0; i < cfg->chains[st].nhandlers; i++)
			n += strcmp(cfg->chains[st].handlers[i].argv[0],
			    "milter") == 0;
	return n;
}

int
net_check_nofile(const struct config *cfg, const char **err_out)
{
	struct rlimit rl;
	uint64_t per_conn = 1 + net_milters(cfg), reserve, need;

	if (getrlimit(RLIMIT_NOFILE, &rl) == -1 || rl.rlim_max == RLIM_INFINITY)
		return 0;
	reserve = (uint64_t)(NET_DISK_THREADS + cfg->queue.concurrency) *
	    NET_FDS_PER_WORKER + (uint64_t)cfg->workers * (cfg->nlistens +
	    NET_FDS_PER_LOOP) + NET_FDS_FIXED;
	if (cfg->queue.reuse_time_ms > 0)	/* idle outbound sessions */
		reserve += cfg->queue.cache_size;
	need = cfg->limits.conn_max * per_conn + reserve;
	if (need <= rl.rlim_max)
		return 0;
	*err_out = util_err("limit connections %u needs %" PRIu64
	    " descriptors (%" PRIu64 " for the connections%s, %" PRIu64
	    " postern keeps for itself), but the descriptor limit is %" PRIu64
	    ": raise it (ulimit -n, systemd LimitNOFILE=) or lower limit "
	    "connections", cfg->limits.conn_max, need, need - reserve,
	    per_conn > 1 ? " and their milters" : "", reserve,
	    (uint64_t)rl.rlim_max);
	return -1;
}
