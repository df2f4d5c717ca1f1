/*
 * cli/main.c: the postern command: run, check, version, and the names it
 * answers to when installed as sendmail, mailq or newaliases.  Owns the
 * process start-up; protocol details live below.
 */
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "config/config.h"
#include "log/log.h"
#include "net/net.h"
#include "util/util.h"

#ifndef POSTERN_VERSION
#define POSTERN_VERSION	"0.1.0"	/* the build passes meson's version */
#endif

static const char usage_main[] =
    "usage: postern COMMAND [options]\n"
    "\n"
    "commands:\n"
    "  run [-c FILE]    run the server in the foreground\n"
    "  check [-c FILE]  check a configuration file; prints each error as\n"
    "                   FILE:LINE: message and exits 1, or exits 0 silently\n"
    "  queue COMMAND    list, show, flush, hold, release, delete queued mail\n"
    "  send [RCPT...]   queue a message read on stdin (also run as sendmail)\n"
    "  version          print the version\n"
    "\n"
    "FILE defaults to $POSTERN_CONFIG, else " CLI_DEFAULT_CONFIG ".\n"
    "'postern COMMAND --help' describes one command.\n";

static const char usage_run[] =
    "usage: postern run [-c FILE] [--log-level LEVEL] [--pid-file PATH]\n"
    "\n"
    "Run the server in the foreground with FILE (default $POSTERN_CONFIG,\n"
    "else " CLI_DEFAULT_CONFIG ").  Relative paths in FILE are relative\n"
    "to the folder of FILE.  Logs go where the configuration says (stderr\n"
    "by default).\n"
    "  --log-level LEVEL  error, warn, info or debug, whatever 'log level'\n"
    "                     says (also after a reload)\n"
    "  --pid-file PATH    write the process id to PATH (held locked while\n"
    "                     running: a second instance refuses to start)\n"
    "Signals: SIGTERM/SIGINT stop accepting, let messages in DATA finish\n"
    "(up to 'limit shutdown-grace'), answer 421 to the rest and exit 0;\n"
    "SIGHUP reloads the configuration (a bad one is logged and ignored).\n";

static const char usage_check[] =
    "usage: postern check [-c FILE]\n"
    "\n"
    "Check FILE (default $POSTERN_CONFIG, else " CLI_DEFAULT_CONFIG "):\n"
    "print every error as FILE:LINE: message and exit 1, or print nothing\n"
    "and exit 0.\n";

static const char usage_version[] =
    "usage: postern version\n\nPrint the version and exit.\n";

/* What the command line of run and check says. */
struct cli_args {
	const char	*config;
	int		 log_level;	/* enum log_level, or -1: the config's */
	const char	*pid_file;	/* or NULL: the config's */
};

/*
 * Parse "-c FILE", "--help" and (run) "--log-level LEVEL", "--pid-file
 * PATH"; exits on error.
 */
static void
cli_parse_args(int argc, char **argv, const char *usage, bool run,
    struct cli_args *a)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{ "log-level", required_argument, NULL, 'L' },
		{ "pid-file", required_argument, NULL, 'P' },
		{ NULL, 0, NULL, 0 },
	};
	int ch;

	a->config = cli_default_config();
	a->log_level = -1;
	a->pid_file = NULL;
	optind = 1;
	while ((ch = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			a->config = optarg;
			break;
		case 'h':
			fputs(usage, stdout);
			exit(0);
		case 'P':
			a->pid_file = optarg;
			if (run)
				break;
			fputs(usage, stderr);
			exit(2);
		case 'L':
			if (run && (a->log_level = log_level_parse(optarg)) ==
			    -1) {
				fprintf(stderr, "postern: --log-level: "
				    "'%s' is not one of error, warn, info, "
				    "debug\n", optarg);
				exit(2);
			}
			if (run)
				break;
			/* FALLTHROUGH */
		default:
			fputs(usage, stderr);
			exit(2);
		}
	}
	if (optind != argc) {
		fprintf(stderr, "postern: unexpected argument '%s'\n%s",
		    argv[optind], usage);
		exit(2);
	}
}

char *
cli_enter_config_dir(const char *path, const char **err_out)
{
	static char errbuf[1024];
	char *abs, *dir, *cwd;

	if (path[0] == '/')
		abs = xstrdup(path);
	else if ((cwd = getcwd(NULL, 0)) == NULL) {
		snprintf(errbuf, sizeof(errbuf), "%s: getcwd: %s", path,
		    strerror(errno));
		*err_out = errbuf;
		return NULL;
	} else {
		abs = xasprintf("%s/%s", strcmp(cwd, "/") == 0 ? "" : cwd,
		    path);
		free(cwd);
	}
	dir = xstrndup(abs, (size_t)(strrchr(abs, '/') - abs));
	if (chdir(dir[0] != '\0' ? dir : "/") == -1) {
		snprintf(errbuf, sizeof(errbuf), "%s: chdir(%s): %s", path,
		    dir[0] != '\0' ? dir : "/", strerror(errno));
		*err_out = errbuf;
		free(abs);
		abs = NULL;
	}
	free(dir);
	return abs;
}

int
cli_become_spool_owner(const char *spool, const char **err_out)
{
	static char errbuf[1024];
	struct stat st;

	if (geteuid() != 0 || stat(spool, &st) == -1 || st.st_uid == 0)
		return 0;
	if (setgroups(0, NULL) == -1 || setresgid(st.st_gid, st.st_gid,
	    st.st_gid) == -1 || setresuid(st.st_uid, st.st_uid,
	    st.st_uid) == -1) {
		snprintf(errbuf, sizeof(errbuf), "cannot act as the owner of "
		    "spool %s (uid %u): %s", spool, (unsigned)st.st_uid,
		    strerror(errno));
		*err_out = errbuf;
		return -1;
	}
	return 0;
}

void
cli_spool_denied(const char *cmd, const char *spool, const char *err,
    const char *tail)
{
	fprintf(stderr, "%s: access to the spool %s was denied (%s): run %s "
	    "as the spool's owner or as root%s\n", cmd, spool, err, cmd, tail);
}

static int
cli_check(int argc, char **argv)
{
	struct cli_args a;
	const char *err = NULL;
	char *errs = NULL, *path;
	struct config *cfg;

	cli_parse_args(argc, argv, usage_check, false, &a);
	if ((path = cli_enter_config_dir(a.config, &err)) == NULL) {
		printf("%s\n", err);
		return 1;
	}
	if ((cfg = config_load(path, &errs)) == NULL) {
		fputs(errs, stdout);
		free(errs);
		free(path);
		return 1;
	}
	/* Then what run would build from it, making nothing. */
	int rc = 0;
	if (net_check(cfg, &errs) == -1) {
		fputs(errs, stdout);
		rc = 1;
	}
	free(errs);
	config_free(&cfg);
	free(path);
	return rc;
}

static int
cli_run(int argc, char **argv)
{
	struct cli_args a;
	const char *err = NULL;
	char *errs = NULL, *path, *pid_file, *cwd = NULL;
	struct config *cfg;
	struct net_server *srv;
	int rc;

	net_signals_reset();
	cli_parse_args(argc, argv, usage_run, true, &a);
	if (a.log_level != -1)
		log_force_level((enum log_level)a.log_level);
	/* --pid-file is relative to where we were started, not the config. */
	pid_file = a.pid_file == NULL ? NULL : a.pid_file[0] == '/' ||
	    (cwd = getcwd(NULL, 0)) == NULL ? xstrdup(a.pid_file) :
	    xasprintf("%s/%s", cwd, a.pid_file);
	free(cwd);
	if ((path = cli_enter_config_dir(a.config, &err)) == NULL)
		fatal("%s", err);
	if ((cfg = config_load(path, &errs)) == NULL) {
		fputs(errs, stderr);
		free(errs);
		fatal("%s: configuration has errors", path);
	}
	srv = net_server_new(path, cfg, pid_file);
	free(pid_file);
	free(path);
	rc = net_server_run(srv);
	net_server_free(&srv);
	return rc;
}

int	main(int, char **);

int
main(int argc, char **argv)
{
	const char *base = strrchr(argv[0], '/') != NULL ?
	    strrchr(argv[0], '/') + 1 : argv[0];
	/* Installed under the names of the classic MTA commands. */
	if (strcmp(base, "sendmail") == 0)
		return cli_send(argc, argv);
	if (strcmp(base, "mailq") == 0)
		return cli_mailq(cli_default_config());
	if (strcmp(base, "newaliases") == 0)
		return cli_newaliases();
	if (argc < 2) {
		fputs(usage_main, stderr);
		return 2;
	}
	const char *cmd = argv[1];
	if (strcmp(cmd, "run") == 0)
		return cli_run(argc - 1, argv + 1);
	if (strcmp(cmd, "check") == 0)
		return cli_check(argc - 1, argv + 1);
	if (strcmp(cmd, "queue") == 0)
		return cli_queue(argc - 1, argv + 1);
	if (strcmp(cmd, "send") == 0)
		return cli_send(argc - 1, argv + 1);
	if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
		if (argc > 2 && strcmp(argv[2], "--help") == 0) {
			fputs(usage_version, stdout);
			return 0;
		}
		printf("postern %s\n", POSTERN_VERSION);
		return 0;
	}
	if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 ||
	    strcmp(cmd, "help") == 0) {
		fputs(usage_main, stdout);
		return 0;
	}
	fprintf(stderr, "postern: unknown command '%s'\n%s", cmd, usage_main);
	return 2;
}
