/*
 * config/parse_log.c: where log lines go and how they look: "log stderr",
 * "log syslog [FACILITY]", "log file PATH [size SIZE [count N]]" (one of
 * the three), "log level LEVEL", "log format text|json".
 */
#include "config/config.h"

#include <stdlib.h>
#include <string.h>

#include "config/config_private.h"
#include "util/util.h"

#define CFG_LOG_USAGE	"log stderr | log syslog [FACILITY] | log file PATH " \
	"[size SIZE [count N]] | log level error|warn|info|debug | " \
	"log format text|json"
#define CFG_LOG_SIZE_MIN	(64u * 1024)
#define CFG_LOG_SIZE_MAX	(1ULL << 40)
#define CFG_LOG_KEEP_MAX	100

static void
cfg_log_syslog(struct cfg_parser *p, const struct cfg_line *ln)
{
	static const char *const facilities[] = { "mail", "daemon", "user",
	    "local0", "local1", "local2", "local3", "local4", "local5",
	    "local6", "local7", NULL };
	size_t i;

	p->c->log_syslog = true;
	if (ln->ntoks == 2)
		return;
	for (i = 0; facilities[i] != NULL; i++)
		if (strcmp(ln->toks[2].text, facilities[i]) == 0)
			break;
	if (facilities[i] == NULL) {
		cfg_err(p, ln->lineno, "log syslog: unknown facility %s (mail, "
		    "daemon, user, local0..local7)", cfg_q(ln->toks[2].text));
		return;
	}
	free(p->c->log_facility);
	p->c->log_facility = xstrdup(facilities[i]);
}

/* "log file PATH [size SIZE [count N]]" */
static void
cfg_log_file(struct cfg_parser *p, const struct cfg_line *ln)
{
	struct config *c = p->c;
	uint64_t v;

	if (ln->ntoks != 3 && ln->ntoks != 5 && ln->ntoks != 7) {
		cfg_err(p, ln->lineno, "log file: usage: log file PATH [size "
		    "SIZE [count N]]");
		return;
	}
	if (ln->toks[2].text[0] == '\0') {
		cfg_err(p, ln->lineno, "log file: empty path");
		return;
	}
	free(c->log_file);
	c->log_file = xstrdup(ln->toks[2].text);
	if (ln->ntoks >= 5 && (strcmp(ln->toks[3].text, "size") != 0 ||
	    util_parse_size(ln->toks[4].text, &v) == -1 ||
	    v < CFG_LOG_SIZE_MIN || v > CFG_LOG_SIZE_MAX)) {
		cfg_err(p, ln->lineno, "log file: expected size SIZE (64k..1T) "
		    "after the path, not %s", cfg_q(strcmp(ln->toks[3].text,
		    "size") != 0 ? ln->toks[3].text : ln->toks[4].text));
		return;
	}
	if (ln->ntoks >= 5)
		c->log_file_size = v;
	if (ln->ntoks == 7 && (strcmp(ln->toks[5].text, "count") != 0 ||
	    util_parse_size(ln->toks[6].text, &v) == -1 ||
	    v > CFG_LOG_KEEP_MAX)) {
		cfg_err(p, ln->lineno, "log file: expected count N (0..%d) "
		    "after the size, not %s", CFG_LOG_KEEP_MAX,
		    cfg_q(strcmp(ln->toks[5].text, "count") != 0 ?
		    ln->toks[5].text : ln->toks[6].text));
		return;
	}
	if (ln->ntoks == 7)
		c->log_file_keep = (unsigned)v;
}

static void
cfg_log_level(struct cfg_parser *p, const struct cfg_line *ln)
{
	static const char *const levels[] = { "error", "warn", "info",
	    "debug", NULL };

	if (!cfg_nargs(p, ln, 2, 2, CFG_LOG_USAGE) ||
	    !cfg_once(p, ln, &p->seen_log_level, "log level"))
		return;
	for (int i = 0; levels[i] != NULL; i++)
		if (strcmp(ln->toks[2].text, levels[i]) == 0) {
			p->c->log_level = i;
			return;
		}
	cfg_err(p, ln->lineno, "log level: unknown level %s (error, warn, "
	    "info, debug)", cfg_q(ln->toks[2].text));
}

static void
cfg_log_format(struct cfg_parser *p, const struct cfg_line *ln)
{
	const char *f;

	if (!cfg_nargs(p, ln, 2, 2, CFG_LOG_USAGE) ||
	    !cfg_once(p, ln, &p->seen_log_format, "log format"))
		return;
	f = ln->toks[2].text;
	if (strcmp(f, "json") != 0 && strcmp(f, "text") != 0) {
		cfg_err(p, ln->lineno, "log format: %s is not text or json",
		    cfg_q(f));
		return;
	}
	p->c->log_json = strcmp(f, "json") == 0;
}

void
cfg_st_log(struct cfg_parser *p, const struct cfg_line *ln)
{
	const char *what;

	if (!cfg_nargs(p, ln, 1, 6, CFG_LOG_USAGE))
		return;
	what = ln->toks[1].text;
	if (strcmp(what, "level") == 0)
		cfg_log_level(p, ln);
	else if (strcmp(what, "format") == 0)
		cfg_log_format(p, ln);
	else if (strcmp(what, "stderr") != 0 && strcmp(what, "syslog") != 0 &&
	    strcmp(what, "file") != 0)
		cfg_err(p, ln->lineno, "log: unknown setting %s (usage: %s)",
		    cfg_q(what), CFG_LOG_USAGE);
	else if (strcmp(what, "file") != 0 && ln->ntoks >
	    (strcmp(what, "stderr") == 0 ? 2u : 3u))
		cfg_err(p, ln->lineno, "%s: too many arguments (usage: %s)",
		    ln->toks[0].text, CFG_LOG_USAGE);
	else if (!cfg_once(p, ln, &p->seen_log_dest, "log destination"))
		return;
	else if (strcmp(what, "file") == 0)
		cfg_log_file(p, ln);
	else if (strcmp(what, "syslog") == 0)
		cfg_log_syslog(p, ln);
}
