/*
 * tests/unit/http/srv.c: start and stop server.py (a Python http.server
 * that records every request) for the unit tests of http/ and deliver/.
 */
#include "srv.h"

#include <openssl/evp.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "util/util.h"

extern char **environ;

static pid_t	 srv_pids[4];	/* running servers, killed after each test */

void
srv_start(struct srv *s, const char *script, const char *cert,
    const char *key)
{
	char *argv[] = { "/usr/bin/python3", (char *)script, s->record,
	    (char *)cert, (char *)key, NULL };
	posix_spawn_file_actions_t fa;
	int p[2];
	char line[32] = "";
	ssize_t n;

	snprintf(s->record, sizeof(s->record), "/tmp/http-rec-%d-%ld",
	    (int)getpid(), (long)util_now_ms());
	assert_int_equal(pipe(p), 0);
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, p[1], 1);
	posix_spawn_file_actions_addclose(&fa, p[0]);
	assert_int_equal(posix_spawn(&s->pid, argv[0], &fa, NULL, argv,
	    environ), 0);
	posix_spawn_file_actions_destroy(&fa);
	for (size_t i = 0; i < 4; i++)
		if (srv_pids[i] == 0) {
			srv_pids[i] = s->pid;
			break;
		}
	close(p[1]);
	/* The port, once bound: the whole line. */
	for (size_t len = 0; strchr(line, '\n') == NULL &&
	    len < sizeof(line) - 1; len += (size_t)n) {
		n = read(p[0], line + len, sizeof(line) - 1 - len);
		assert_true(n > 0);
	}
	close(p[0]);
	s->port = atoi(line);
	assert_true(s->port > 0);
	snprintf(s->base, sizeof(s->base), "%s://127.0.0.1:%d",
	    cert != NULL ? "https" : "http", s->port);
}

static void
srv_kill(pid_t pid)
{
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
	for (size_t i = 0; i < 4; i++)
		if (srv_pids[i] == pid)
			srv_pids[i] = 0;
}

void
srv_stop(struct srv *s)
{
	srv_kill(s->pid);
	unlink(s->record);
}

int
srv_cleanup(void **state)
{
	(void)state;
	for (size_t i = 0; i < 4; i++)
		if (srv_pids[i] != 0)
			srv_kill(srv_pids[i]);
	return 0;
}

json_t *
srv_records(const struct srv *s)
{
	json_t *all = json_array();
	FILE *f = fopen(s->record, "r");
	char *line = NULL;
	size_t cap = 0;

	while (f != NULL && getline(&line, &cap, f) > 0)
		json_array_append_new(all, json_loads(line, 0, NULL));
	free(line);
	if (f != NULL)
		fclose(f);
	return all;
}

const char *
rec_str(const json_t *rec, const char *key)
{
	return json_string_value(json_object_get(rec, key));
}

const char *
rec_header(const json_t *rec, const char *name)
{
	return json_string_value(json_object_get(json_object_get(rec,
	    "headers"), name));
}

char *
rec_body(const json_t *rec, size_t *len_out)
{
	const char *b64 = rec_str(rec, "body");
	size_t n = strlen(b64);
	char *out = xmalloc(n + 1);
	int len = EVP_DecodeBlock((unsigned char *)out,
	    (const unsigned char *)b64, (int)n);

	while (n > 0 && b64[n - 1] == '=') {	/* padding decodes to 0s */
		n--;
		len--;
	}
	out[len > 0 ? len : 0] = '\0';
	if (len_out != NULL)
		*len_out = len > 0 ? (size_t)len : 0;
	return out;
}
