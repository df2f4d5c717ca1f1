/*
 * deliver/pipe.c: the pipe action: one recipient's copy on a program's
 * stdin, as dovecot-lda and procmail expect it (Return-Path: and
 * Delivered-To: first), the argv expanded per recipient, never a shell;
 * the exit status read as sysexits(3).  Knows nothing of the queue.
 */
#include "deliver/deliver.h"
#include "deliver/deliver_private.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"
#include "util/util.h"

#define PIPE_TIMEOUT_DEFAULT_MS	(10u * 60 * 1000)
#define PIPE_EX_TEMPFAIL	75

static const char *const pipe_vars[] = {
	"rcpt", "rcpt.user", "rcpt.domain", "sender", "qid", NULL
};

/* Length of a known "%{name}" at p, or 0. */
static size_t
pipe_var_at(const char *p, size_t *which)
{
	for (size_t i = 0; pipe_vars[i] != NULL; i++) {
		size_t n = strlen(pipe_vars[i]);

		if (strncmp(p, "%{", 2) == 0 && strncmp(p + 2, pipe_vars[i],
		    n) == 0 && p[2 + n] == '}') {
			*which = i;
			return n + 3;
		}
	}
	return 0;
}

int
deliver_pipe_check_arg(const char *tpl, const char **err_out)
{
	size_t which;

	for (const char *p = tpl; *p != '\0'; p++) {
		if (*p != '%')
			continue;
		if (p[1] == '%') {
			p++;
			continue;
		}
		size_t n = pipe_var_at(p, &which);

		if (n == 0) {
			*err_out = util_err("\"%s\": unknown variable (known: "
			    "%%{rcpt} %%{rcpt.user} %%{rcpt.domain} "
			    "%%{sender} %%{qid}, %%%% for %%)", tpl);
			return -1;
		}
		p += n - 1;
	}
	return 0;
}

static const char *
pipe_value(size_t which, const struct deliver_msg *m, const char *rcpt,
    char *buf, size_t bufsz)
{
	const char *at = strrchr(rcpt, '@');

	switch (which) {
	case 0:
		return rcpt;
	case 1:
		snprintf(buf, bufsz, "%.*s", (int)(at != NULL ? at - rcpt :
		    (ptrdiff_t)strlen(rcpt)), rcpt);
		return buf;
	case 2:
		return at != NULL ? at + 1 : "";
	case 3:
		return m->return_path != NULL ? m->return_path : "";
	default:
		return m->qid != NULL ? m->qid : "";
	}
}

/*
 * One argument for rcpt (malloc'd), or NULL with *err_out: a value may
 * not start an argument with "-", where a program would read an option.
 */
static char *
pipe_expand(const char *tpl, const struct deliver_msg *m, const char *rcpt,
    const char **err_out)
{
	struct util_buf b = { 0 };
	char buf[512];
	size_t which, n;

	for (const char *p = tpl; *p != '\0'; p++) {
		if (p[0] == '%' && p[1] == '%') {
			util_buf_add(&b, "%", 1);
			p++;
		} else if ((n = pipe_var_at(p, &which)) != 0) {
			const char *v = pipe_value(which, m, rcpt, buf,
			    sizeof(buf));

			if (b.len == 0 && v[0] == '-') {
				util_buf_clear(&b);
				*err_out = "5.1.3 the address would start a "
				    "program argument with \"-\"";
				return NULL;
			}
			util_buf_addstr(&b, v);
			p += n - 1;
		} else {
			util_buf_add(&b, p, 1);
		}
	}
	char *arg = xstrdup(util_buf_cstr(&b));

	util_buf_clear(&b);
	return arg;
}

static void
pipe_strv_free(char **v)
{
	for (size_t i = 0; v != NULL && v[i] != NULL; i++)
		free(v[i]);
	free(v);
}

/* The clean environment of the program. */
static char **
pipe_env(const struct deliver_msg *m, const char *rcpt)
{
	const char *at = strrchr(rcpt, '@');
	char **env = xcalloc(8, sizeof(*env));
	size_t n = 0;

	env[n++] = xstrdup("PATH=/usr/bin:/bin");
	env[n++] = xasprintf("SENDER=%s", m->return_path != NULL ?
	    m->return_path : "");
	env[n++] = xasprintf("RECIPIENT=%s", rcpt);
	env[n++] = xasprintf("LOCAL=%.*s", (int)(at != NULL ? at - rcpt :
	    (ptrdiff_t)strlen(rcpt)), rcpt);
	env[n++] = xasprintf("DOMAIN=%s", at != NULL ? at + 1 : "");
	env[n++] = xasprintf("POSTERN_QID=%s", m->qid != NULL ? m->qid : "");
	return env;
}

/* sysexits(3) to RFC 3463, after Postfix's table. */
static const char *
pipe_esc(int code)
{
	switch (code) {
	case 65: return "5.6.0";	/* EX_DATAERR */
	case 67: return "5.1.1";	/* EX_NOUSER */
	case 68: return "5.1.2";	/* EX_NOHOST */
	case 73: return "5.2.0";	/* EX_CANTCREAT */
	case 76: return "5.5.0";	/* EX_PROTOCOL */
	case 77: return "5.7.0";	/* EX_NOPERM */
	case 78: return "5.3.5";	/* EX_CONFIG */
	default: return "5.3.0";
	}
}

static enum deliver_result
pipe_outcome(const struct deliver_pipe_opts *o,
    const struct deliver_prog_result *res, struct deliver_rcpt_status *st)
{
	const char *line = res->err_line;

	if (res->stopped) {
		snprintf(st->text, sizeof(st->text), "4.3.0 %s cut short: "
		    "postern is stopping", o->argv[0]);
		return DELIVER_TEMPFAIL;
	}
	if (res->timed_out) {
		snprintf(st->text, sizeof(st->text), "4.3.0 %s timed out "
		    "after %llu ms", o->argv[0], (unsigned long long)
		    (o->timeout_ms != 0 ? o->timeout_ms :
		    PIPE_TIMEOUT_DEFAULT_MS));
		return DELIVER_TEMPFAIL;
	}
	if (res->exit_code == -1) {
		snprintf(st->text, sizeof(st->text), "4.3.0 %s killed by "
		    "signal %d", o->argv[0], res->signal);
		return DELIVER_TEMPFAIL;
	}
	if (res->exit_code == 0)
		return DELIVER_OK;
	if (res->exit_code == PIPE_EX_TEMPFAIL) {
		snprintf(st->text, sizeof(st->text), "4.3.0 %s", line[0] !=
		    '\0' ? line : "temporary failure (EX_TEMPFAIL)");
		return DELIVER_TEMPFAIL;
	}
	if (line[0] != '\0')
		snprintf(st->text, sizeof(st->text), "%s %s (exit status %d)",
		    pipe_esc(res->exit_code), line, res->exit_code);
	else
		snprintf(st->text, sizeof(st->text), "%s %s exited with "
		    "status %d", pipe_esc(res->exit_code), o->argv[0],
		    res->exit_code);
	return DELIVER_PERMFAIL;
}

enum deliver_result
deliver_pipe(const struct deliver_pipe_opts *o, const struct deliver_msg *m,
    const char *rcpt, struct deliver_rcpt_status *st, const char **err_out)
{
	size_t argc = 0;
	char **argv, **env, *head;
	struct deliver_prog_result res;
	enum deliver_result r = DELIVER_PERMFAIL;
	const char *err = NULL;

	memset(st, 0, sizeof(*st));
	while (o->argv[argc] != NULL)
		argc++;
	argv = xcalloc(argc + 1, sizeof(*argv));
	for (size_t i = 0; i < argc; i++)
		if ((argv[i] = pipe_expand(o->argv[i], m, rcpt, &err)) ==
		    NULL) {
			util_strlcpy(st->text, err, sizeof(st->text));
			goto out;
		}
	env = pipe_env(m, rcpt);
	head = xasprintf("Return-Path: <%s>\nDelivered-To: %s\n",
	    m->return_path != NULL ? m->return_path : "", rcpt);
	struct deliver_prog p = { .argv = argv, .envp = env, .user = o->user,
	    .server_user = o->server_user, .timeout_ms = o->timeout_ms != 0 ?
	    o->timeout_ms : PIPE_TIMEOUT_DEFAULT_MS, .head = head,
	    .head_len = strlen(head), .body = m->content,
	    .body_len = m->content_len, .body_path = m->content_path };

	if (deliver_prog_run(&p, &res, &err) == -1) {
		/* Ours or the config's to fix: the mail waits meanwhile. */
		snprintf(st->text, sizeof(st->text), "4.3.0 %s", err);
		r = DELIVER_TEMPFAIL;
	} else {
		r = pipe_outcome(o, &res, st);
		deliver_prog_result_clear(&res);
	}
	free(head);
	pipe_strv_free(env);
out:
	pipe_strv_free(argv);
	st->result = r;
	if (r != DELIVER_OK)
		*err_out = util_err("%s", st->text);
	return r;
}

/* ---- the pipe kind ---- */

int
deliver_pipe_check(const struct config *c, const struct config_action *a,
    const char **err_out)
{
	for (char **v = a->pipe->argv; *v != NULL; v++)
		if (deliver_pipe_check_arg(*v, err_out) == -1)
			return -1;
	return deliver_prog_check(a->pipe->argv[0], a->pipe->user, c->user,
	    c->group, err_out);
}

void *
deliver_pipe_open(const struct config *c, const struct config_action *a,
    const char **err_out)
{
	struct deliver_pipe_opts *o;

	if (deliver_pipe_check(c, a, err_out) == -1)
		return NULL;
	o = xcalloc(1, sizeof(*o));
	o->argv = a->pipe->argv;
	o->user = a->pipe->user;
	o->server_user = c->user;
	o->timeout_ms = a->pipe->timeout_ms;
	return o;
}

void
deliver_pipe_close(void *runtime)
{
	free(runtime);
}

enum deliver_result
deliver_pipe_kind(void *runtime, const char *arg, const struct deliver_msg *m,
    const char *const *rcpts, size_t n, struct deliver_rcpt_status *st_out,
    const char **err_out)
{
	const char *err = NULL;

	(void)arg;
	for (size_t i = 0; i < n; i++)
		(void)deliver_pipe(runtime, m, rcpts[i], &st_out[i], &err);
	return deliver_status_summary(st_out, n, err_out);
}
