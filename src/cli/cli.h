/*
 * cli/cli.h: the subcommands main.c dispatches to, beyond run/check/version.
 */
#ifndef POSTERN_CLI_H
#define POSTERN_CLI_H

/* Config file when none is given: $POSTERN_CONFIG, else this. */
#define CLI_DEFAULT_CONFIG	"etc/postern.conf"

/* postern queue list|show|flush|hold|release|delete (cli/queue.c). */
int	cli_queue(int argc, char **argv);
/* postern send, also run as "sendmail" (cli/send.c). */
int	cli_send(int argc, char **argv);

/* The config path for -c/-C: $POSTERN_CONFIG, else CLI_DEFAULT_CONFIG. */
const char *cli_default_config(void);

#endif
