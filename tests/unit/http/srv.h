/*
 * tests/unit/http/srv.h: server.py for unit tests: a Python http.server
 * on 127.0.0.1 that records every request (see its docstring for what
 * each path answers).
 */
#ifndef POSTERN_TEST_SRV_H
#define POSTERN_TEST_SRV_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct srv {
	pid_t		 pid;
	int		 port;
	char		 record[64];	/* its record file */
	char		 base[64];	/* "http://127.0.0.1:PORT" */
};

/* Start script (server.py); HTTPS with cert and key unless NULL. */
void	srv_start(struct srv *s, const char *script, const char *cert,
	    const char *key);
void	srv_stop(struct srv *s);
/* A cmocka teardown: no server is left behind, even by a failed test. */
int	srv_cleanup(void **state);
/* The requests recorded so far, as a JSON array (new reference). */
json_t	*srv_records(const struct srv *s);
const char *rec_str(const json_t *rec, const char *key);
/* A request header (lower-case name), or NULL. */
const char *rec_header(const json_t *rec, const char *name);
/* The request body, decoded (malloc'd, NUL-terminated). */
char	*rec_body(const json_t *rec, size_t *len_out);

#endif
