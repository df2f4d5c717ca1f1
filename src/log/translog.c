/*
 * log/translog.c: per-session transaction logs, one file per session.
 * XXX: lines go through stdio's buffer and reach the kernel every 4 KiB or
 * at close, on the session's loop; it is an opt-in research mode and the
 * writes land in the page cache, never fsynced.
 */
#include "log/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <time.h>

struct log_translog {
	FILE	*f;
};

struct log_translog *
log_translog_open(const char *dir, const char *ip, const char *sid)
{
	char stamp[32], path[4096], safeip[64];
	time_t now = time(NULL);
	struct tm tm;
	FILE *f;

	gmtime_r(&now, &tm);
	strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%S", &tm);
	util_strlcpy(safeip, ip, sizeof(safeip));
	for (char *p = safeip; *p != '\0'; p++)
		if (*p == ':')
			*p = '_';	/* IPv6: keep file names portable */
	if (util_mkdirs(dir, 0700) == -1 ||
	    util_snprintf(path, sizeof(path), "%s/%s-%s-%s.log", dir, stamp,
	    safeip, sid) == -1 || (f = fopen(path, "we")) == NULL) {
		log_msg(LOG_LVL_WARN, "translog open(%s/...): %s", dir,
		    strerror(errno));
		return NULL;
	}
	struct log_translog *t = xcalloc(1, sizeof(*t));
	t->f = f;
	return t;
}

void
log_translog_line(struct log_translog *t, char dir, const char *line,
    size_t len)
{
	char stamp[40], safe[1200];
	struct timespec ts;
	struct tm tm;

	if (t == NULL)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
	while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
		len--;
	fprintf(t->f, "%s.%06ldZ %c %s\n", stamp, ts.tv_nsec / 1000, dir,
	    log_safe_into(safe, sizeof(safe), line, len));
}

void
log_translog_close(struct log_translog **tp)
{
	if (*tp == NULL)
		return;
	fclose((*tp)->f);
	free(*tp);
	*tp = NULL;
}
