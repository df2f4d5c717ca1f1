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
 * What postern keeps open besides the connections, at most: what each disk
 * thread and each queue worker holds for the delivery it is making (a
 * Maildir being opened or a copy being written, and the first copy with
 * its Maildir: deliver/maildir.c), or an outbound connection; the Maildirs
 * kept open between deliveries (DELIVER_MD_KEEP_MAX for all threads, less
 * where the limit leaves less: net_size_nofile); the listen sockets; per
 * loop its event base's descriptors and its spare; and stdio, the log,
 * signals, the spool's folders, lock and control socket, the state store.
 */
#define NET_FDS_PER_WORKER	7
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

/* What postern keeps for itself under cfg, the kept Maildirs aside. */
static uint64_t
net_nofile_reserve(const struct config *cfg)
{
	uint64_t reserve;

	reserve = (uint64_t)(NET_DISK_THREADS + cfg->queue.concurrency) *
	    NET_FDS_PER_WORKER + (uint64_t)cfg->workers * (cfg->nlistens +
	    NET_FDS_PER_LOOP) + NET_FDS_FIXED;
	if (cfg->queue.reuse_time_ms > 0)	/* idle outbound sessions */
		reserve += cfg->queue.cache_size;
	return reserve;
}

void
net_size_nofile(const struct config *cfg)
{
	struct rlimit rl;
	uint64_t need = cfg->limits.conn_max * (1 + net_milters(cfg)) +
	    net_nofile_reserve(cfg);

	if (getrlimit(RLIMIT_NOFILE, &rl) == -1 || rl.rlim_cur == RLIM_INFINITY)
		return;
	/* Half of what is left: the rest stays spare for bursts. */
	deliver_maildir_keep_limit(rl.rlim_cur > need ?
	    (size_t)((rl.rlim_cur - need) / 2) : 0);
}

int
net_check_nofile(const struct config *cfg, const char **err_out)
{
	struct rlimit rl;
	uint64_t per_conn = 1 + net_milters(cfg), reserve, need;
	const char *why;
	int line;

	if (getrlimit(RLIMIT_NOFILE, &rl) == -1 || rl.rlim_max == RLIM_INFINITY)
		return 0;
	reserve = net_nofile_reserve(cfg);
	need = cfg->limits.conn_max * per_conn + reserve;
	if (need <= rl.rlim_max)
		return 0;
	why = util_err("limit connections %u needs %" PRIu64
	    " descriptors (%" PRIu64 " for the connections%s, %" PRIu64
	    " postern keeps for itself), but the descriptor limit is %" PRIu64
	    ": raise it (ulimit -n, systemd LimitNOFILE=) or lower limit "
	    "connections", cfg->limits.conn_max, need, need - reserve,
	    per_conn > 1 ? " and their milters" : "", reserve,
	    (uint64_t)rl.rlim_max);
	/* The statement, or the file when the default is too high. */
	line = config_line_of(cfg, "limit", "connections");
	*err_out = line > 0 ? util_err("%s:%d: %s", cfg->path, line, why) :
	    util_err("%s: %s", cfg->path, why);
	return -1;
}
