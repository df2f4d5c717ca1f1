/*
 * Unit tests of spool/: the envelope format (round trip, strict parser at
 * every truncation point), commit and load on real files in a mkdtemp
 * folder, done-records, and crash recovery by spool_list.
 */
#include "spool/spool.h"
#include "spool/spool_private.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

static char *
mkdir_tmp(void)
{
	char tmpl[] = "/tmp/test_spool.XXXXXX";

	assert_non_null(mkdtemp(tmpl));
	return xstrdup(tmpl);
}

static void
rm_rf(const char *path)
{
	char *cmd = xasprintf("rm -rf '%s'", path);

	assert_int_equal(system(cmd), 0);
	free(cmd);
}

static bool
exists(const char *dir, const char *sub, const char *name)
{
	char *p = xasprintf("%s/%s/%s", dir, sub, name);
	struct stat st;
	bool rc = lstat(p, &st) == 0;

	free(p);
	return rc;
}

static size_t
count_entries(const char *dir, const char *sub)
{
	char *p = xasprintf("%s/%s", dir, sub);
	DIR *d = opendir(p);
	struct dirent *de;
	size_t n = 0;

	assert_non_null(d);
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	free(p);
	return n;
}

static void
put_file(const char *dir, const char *sub, const char *name, const char *s)
{
	char *p = xasprintf("%s/%s/%s", dir, sub, name);
	FILE *f = fopen(p, "w");

	assert_non_null(f);
	fputs(s, f);
	assert_int_equal(fclose(f), 0);
	free(p);
}

static char *
read_path(const char *path, size_t *len_out)
{
	FILE *f = fopen(path, "rb");
	struct util_buf b = { 0 };
	char buf[4096];
	size_t n;

	assert_non_null(f);
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
		util_buf_add(&b, buf, n);
	fclose(f);
	*len_out = b.len;
	util_buf_cstr(&b);
	return b.data;
}

/* An envelope full of hostile peer text. */
static void
hostile_env(struct spool_env *e, const char *qid)
{
	memset(e, 0, sizeof(*e));
	util_strlcpy(e->qid, qid, sizeof(e->qid));
	e->sid = xstrdup("s1");
	e->received = 1700000000;
	e->sender = xstrdup("we ird%20\"x\"@ex\xc3\xa9.org");
	e->client_ip = xstrdup("192.0.2.1");
	e->helo = xstrdup("evil\nrcpt x@y maildir /etc\n%00 \x01\x7f\xff -");
	e->tls = xstrdup("TLSv1.3");
	e->auth_user = xstrdup("app user\nauth root");
	e->smtputf8 = true;
	e->body_8bit = false;
	e->size = 12345;
	spool_env_add_rcpt(e, "a@example.org", "maildir", "/var/mail/a dir");
	spool_env_add_rcpt(e, "-", "discard", NULL);
	spool_env_add_rcpt(e, "b\r\n@x", "maildir", "-");
	spool_env_add_rcpt(e, "c@x", "maildir", "");
	spool_env_add_state(e, "tx.spam.score", "7.5");
	spool_env_add_state(e, "session.note", "a b\nstate x y\n%");
}

static void
assert_str_or_null(const char *label, const char *got, const char *want)
{
	if ((got == NULL) != (want == NULL) ||
	    (got != NULL && strcmp(got, want) != 0))
		fail_msg("field %s: got \"%s\", want \"%s\"", label,
		    got != NULL ? got : "(null)", want != NULL ? want : "(null)");
}

static void
assert_env_equal(const struct spool_env *got, const struct spool_env *want)
{
	assert_string_equal(got->qid, want->qid);
	assert_str_or_null("sid", got->sid, want->sid);
	assert_true(got->received == want->received);
	assert_str_or_null("sender", got->sender, want->sender);
	assert_str_or_null("client_ip", got->client_ip, want->client_ip);
	assert_str_or_null("helo", got->helo, want->helo);
	assert_str_or_null("tls", got->tls, want->tls);
	assert_str_or_null("auth", got->auth_user, want->auth_user);
	assert_int_equal(got->smtputf8, want->smtputf8);
	assert_int_equal(got->smtputf8_needed, want->smtputf8_needed);
	assert_int_equal(got->body_8bit, want->body_8bit);
	assert_true(got->size == want->size);
	assert_int_equal(got->nrcpts, want->nrcpts);
	for (size_t i = 0; i < got->nrcpts; i++) {
		assert_str_or_null("addr", got->rcpts[i].addr,
		    want->rcpts[i].addr);
		assert_str_or_null("action", got->rcpts[i].action,
		    want->rcpts[i].action);
		assert_str_or_null("arg", got->rcpts[i].arg, want->rcpts[i].arg);
	}
	assert_int_equal(got->nstate, want->nstate);
	for (size_t i = 0; i < 2 * got->nstate; i++)
		assert_str_or_null("state", got->state[i], want->state[i]);
}

static void
test_env_format_round_trip(void **state)
{
	struct spool_env e, got = { 0 };
	struct util_buf b = { 0 };
	const char *why = NULL;
	size_t lines = 0;

	(void)state;
	hostile_env(&e, "Q1");
	spool_env_format(&e, &b);
	/*
	 * Hostile text never adds a line: 11 fixed records, tls and auth,
	 * 4 rcpts, 2 state records and end.
	 */
	for (size_t i = 0; i < b.len; i++) {
		unsigned char c = (unsigned char)b.data[i];
		if (c == '\n')
			lines++;
		else if (c < 0x20 || c > 0x7e)
			fail_msg("raw byte 0x%02x in envelope", c);
	}
	assert_int_equal(lines, 19);
	if (spool_env_parse(b.data, b.len, &got, &why) == -1)
		fail_msg("parse: %s", why);
	assert_env_equal(&got, &e);
	spool_env_clear(&got);

	/* Every truncation of a valid file is an error, never a crash. */
	for (size_t cut = 0; cut < b.len; cut++) {
		memset(&got, 0, sizeof(got));
		if (spool_env_parse(b.data, cut, &got, &why) != -1)
			fail_msg("cut %zu of %zu: parsed", cut, b.len);
	}

	/* A global DSN's smtputf8_needed comes back, smtputf8 with it. */
	e.smtputf8_needed = true;
	util_buf_reset(&b);
	spool_env_format(&e, &b);
	memset(&got, 0, sizeof(got));
	if (spool_env_parse(b.data, b.len, &got, &why) == -1)
		fail_msg("parse: %s", why);
	assert_env_equal(&got, &e);
	spool_env_clear(&got);
	util_buf_clear(&b);
	spool_env_clear(&e);
}

static void
test_env_parse_strict(void **state)
{
#define HEAD "v 1\nqid Q1\nsid -\nreceived 5\nsender %\nclient_ip -\n" \
	"helo -\nsmtputf8 0\nbody_8bit 0\nsize 3\n"
	static const struct { const char *name, *in; int rc; } cases[] = {
		{ "minimal", HEAD "end\n", 0 },
		{ "one rcpt", HEAD "rcpt a@b discard -\nend\n", 0 },
		{ "state", HEAD "state tx.k v\nend\n", 0 },
		{ "state without value", HEAD "state tx.k\nend\n", -1 },
		{ "state null", HEAD "state tx.k -\nend\n", -1 },
		{ "no version", "qid Q1\nend\n", -1 },
		{ "version 2", "v 2\nend\n", -1 },
		{ "missing end", HEAD, -1 },
		{ "data after end", HEAD "end\nx\n", -1 },
		{ "no final LF", HEAD "end", -1 },
		{ "CRLF", "v 1\r\n", -1 },
		{ "unknown key", HEAD "color red\nend\n", -1 },
		{ "repeated key", HEAD "size 4\nend\n", -1 },
		{ "missing key", "v 1\nqid Q1\nend\n", -1 },
		{ "double space", HEAD "rcpt a@b  discard -\nend\n", -1 },
		{ "rcpt 2 fields", HEAD "rcpt a@b discard\nend\n", -1 },
		{ "rcpt 4 fields", HEAD "rcpt a@b discard - x\nend\n", -1 },
		{ "rcpt null addr", HEAD "rcpt - discard -\nend\n", -1 },
		{ "rcpt empty action", HEAD "rcpt a % -\nend\n", -1 },
		{ "bad escape", HEAD "rcpt a%4 discard -\nend\n", -1 },
		{ "bad hex", HEAD "rcpt a%zz discard -\nend\n", -1 },
		{ "escaped NUL", HEAD "rcpt a%00 discard -\nend\n", -1 },
		{ "raw high byte", HEAD "rcpt a\xff discard -\nend\n", -1 },
		{ "raw tab", HEAD "rcpt a\tb discard -\nend\n", -1 },
		{ "bad number", "v 1\nqid Q1\nsid -\nreceived -5\nsender %\n"
		    "client_ip -\nhelo -\nsmtputf8 0\nbody_8bit 0\nsize 3\n"
		    "end\n", -1 },
		{ "bool 2", "v 1\nqid Q1\nsid -\nreceived 5\nsender %\n"
		    "client_ip -\nhelo -\nsmtputf8 0\nbody_8bit 2\nsize 3\n"
		    "end\n", -1 },
		{ "smtputf8 2", "v 1\nqid Q1\nsid -\nreceived 5\nsender %\n"
		    "client_ip -\nhelo -\nsmtputf8 2\nbody_8bit 0\nsize 3\n"
		    "end\n", 0 },
		{ "smtputf8 3", "v 1\nqid Q1\nsid -\nreceived 5\nsender %\n"
		    "client_ip -\nhelo -\nsmtputf8 3\nbody_8bit 0\nsize 3\n"
		    "end\n", -1 },
		{ "size overflow", "v 1\nqid Q1\nsid -\nreceived 5\nsender %\n"
		    "client_ip -\nhelo -\nsmtputf8 0\nbody_8bit 0\n"
		    "size 99999999999999999999\nend\n", -1 },
		{ "bad qid", "v 1\nqid Q/1\nsid -\nreceived 5\nsender %\n"
		    "client_ip -\nhelo -\nsmtputf8 0\nbody_8bit 0\nsize 3\n"
		    "end\n", -1 },
		{ "null sender", "v 1\nqid Q1\nsid -\nreceived 5\nsender -\n"
		    "client_ip -\nhelo -\nsmtputf8 0\nbody_8bit 0\nsize 3\n"
		    "end\n", -1 },
		{ "empty line", HEAD "\nend\n", -1 },
		{ "tls and auth", HEAD "tls TLSv1.2\nauth ann\nend\n", 0 },
		{ "tls twice", HEAD "tls TLSv1.2\ntls TLSv1.3\nend\n", -1 },
		{ "auth null", HEAD "auth -\nend\n", -1 },
		{ "auth 2 fields", HEAD "auth a b\nend\n", -1 },
	};
#undef HEAD
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct spool_env e = { 0 };
		const char *why = "(none)";
		int rc = spool_env_parse(cases[i].in, strlen(cases[i].in), &e,
		    &why);
		if (rc != cases[i].rc)
			fail_msg("case \"%s\": got %d (%s), want %d",
			    cases[i].name, rc, why, cases[i].rc);
		spool_env_clear(&e);
	}
	/* A NUL byte inside is refused, too. */
	struct spool_env e = { 0 };
	const char *why;
	assert_int_equal(spool_env_parse("v 1\n\0", 5, &e, &why), -1);
}

static void
test_done_parse(void **state)
{
	static const struct { const char *name, *in; int rc; unsigned want; }
	    cases[] = {
		{ "empty", "", 0, 0 },
		{ "one", "done 1\n", 0, 2 },
		{ "two", "done 0\ndone 2\n", 0, 5 },
		{ "torn last", "done 0\ndone 2", 0, 1 },
		{ "repeat", "done 0\ndone 0\n", 0, 1 },
		{ "out of range", "done 3\n", -1, 0 },
		{ "garbage", "dome 0\n", -1, 0 },
		{ "no number", "done \n", -1, 0 },
		{ "sign", "done -1\n", -1, 0 },
	};
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct spool_env e = { 0 };
		const char *why = "(none)";
		unsigned got = 0;

		for (int r = 0; r < 3; r++)
			spool_env_add_rcpt(&e, "a@b", "discard", NULL);
		int rc = spool_done_parse(cases[i].in, strlen(cases[i].in), &e,
		    &why);
		for (int r = 0; r < 3; r++)
			got |= e.rcpts[r].done ? 1u << r : 0;
		if (rc != cases[i].rc || (rc == 0 && got != cases[i].want))
			fail_msg("case \"%s\": got rc=%d mask=%u (%s), want "
			    "rc=%d mask=%u", cases[i].name, rc, got, why,
			    cases[i].rc, cases[i].want);
		spool_env_clear(&e);
	}
}

struct qid_run {
	struct spool	*sp;
	char		 (*out)[SPOOL_QID_MAX];
	size_t		 n;
};

static void *
qid_thread(void *arg)
{
	struct qid_run *r = arg;

	for (size_t i = 0; i < r->n; i++)
		spool_new_qid(r->sp, r->out[i]);
	return NULL;
}

static int
qid_cmp(const void *a, const void *b)
{
	return strcmp(a, b);
}

static void
test_qid_unique(void **state)
{
	enum { NT = 4, PER = 5000 };
	static char qids[NT * PER][SPOOL_QID_MAX];
	struct qid_run runs[NT];
	pthread_t th[NT];

	(void)state;
	for (int t = 0; t < NT; t++) {
		runs[t] = (struct qid_run){ NULL, qids + t * PER, PER };
		assert_int_equal(pthread_create(&th[t], NULL, qid_thread,
		    &runs[t]), 0);
	}
	for (int t = 0; t < NT; t++)
		pthread_join(th[t], NULL);
	for (size_t i = 0; i < NT * PER; i++)
		if (!spool_qid_is_valid(qids[i]))
			fail_msg("qid \"%s\" is not valid", qids[i]);
	qsort(qids, NT * PER, SPOOL_QID_MAX, qid_cmp);
	for (size_t i = 1; i < NT * PER; i++)
		if (strcmp(qids[i - 1], qids[i]) == 0)
			fail_msg("qid \"%s\" twice", qids[i]);
}

/* Write content in pieces, commit env; returns the content. */
static void
commit_msg(struct spool *sp, const struct spool_env *env, const char *content)
{
	struct spool_msg *m = spool_msg_new(sp, env->qid);
	const char *err = NULL;
	size_t len = strlen(content);

	for (size_t off = 0; off < len; off += 7)
		if (spool_msg_write(m, content + off, len - off < 7 ?
		    len - off : 7, &err) == -1)
			fail_msg("write: %s", err);
	if (spool_msg_commit(m, env, &err) == -1)
		fail_msg("commit: %s", err);
	spool_msg_free(&m);
	assert_null(m);
}

static void
simple_env(struct spool_env *e, const char *qid, size_t nrcpts)
{
	memset(e, 0, sizeof(*e));
	util_strlcpy(e->qid, qid, sizeof(e->qid));
	e->sender = xstrdup("s@example.org");
	e->received = 1700000000;
	for (size_t i = 0; i < nrcpts; i++)
		spool_env_add_rcpt(e, "r@example.org", "discard", NULL);
}

static void
test_commit_load_round_trip(void **state)
{
	static const char content[] =
	    "Received: from x\nSubject: hi\n\nbody\n\x00\xff\n.\n";
	char *dir = mkdir_tmp(), *path, *got_content, qid[SPOOL_QID_MAX];
	struct spool_env e, got;
	const char *err = NULL;
	struct spool *sp;
	size_t len;

	(void)state;
	sp = spool_open(dir, &err);
	if (sp == NULL)
		fail_msg("spool_open: %s", err);
	assert_string_equal(spool_dir(sp), dir);
	spool_new_qid(sp, qid);
	hostile_env(&e, qid);
	struct spool_msg *m = spool_msg_new(sp, qid);
	assert_int_equal(spool_msg_write(m, content, sizeof(content) - 1,
	    &err), 0);
	/* Received under its final name; no envelope names it yet. */
	assert_true(exists(dir, "msg", qid));
	assert_false(exists(dir, "env", qid));
	assert_int_equal(count_entries(dir, "tmp"), 0);
	assert_int_equal(spool_msg_commit(m, &e, &err), 0);
	spool_msg_free(&m);
	assert_int_equal(count_entries(dir, "tmp"), 0);
	assert_true(exists(dir, "msg", qid));
	assert_true(exists(dir, "env", qid));

	if (spool_env_load(sp, qid, &got, &err) == -1)
		fail_msg("load: %s", err);
	assert_env_equal(&got, &e);
	for (size_t i = 0; i < got.nrcpts; i++)
		assert_false(got.rcpts[i].done);
	spool_env_clear(&got);

	path = spool_content_path(sp, qid);
	got_content = read_path(path, &len);
	assert_int_equal(len, sizeof(content) - 1);
	assert_memory_equal(got_content, content, len);
	free(got_content);
	free(path);

	/* A message without content bytes is still committed (empty file). */
	spool_env_clear(&e);
	simple_env(&e, "Empty1", 1);
	m = spool_msg_new(sp, "Empty1");
	assert_int_equal(spool_msg_commit(m, &e, &err), 0);
	spool_msg_free(&m);
	assert_true(exists(dir, "msg", "Empty1"));

	spool_env_clear(&e);
	spool_close(&sp);
	assert_null(sp);
	rm_rf(dir);
	free(dir);
}

/* qid committed from content whole in memory; the envelope in *e. */
static void
commit_whole(struct spool *sp, const char *qid, const char *content,
    struct spool_env *e)
{
	const char *err = NULL;
	struct spool_msg *m = spool_msg_new(sp, qid);

	simple_env(e, qid, 1);
	e->size = strlen(content);
	spool_msg_whole(m, content, strlen(content));
	if (spool_msg_commit(m, e, &err) == -1)
		fail_msg("commit %s: %s", qid, err);
	spool_msg_free(&m);
}

/* Is sub/qid a file holding exactly want? */
static bool
holds(const char *dir, const char *sub, const char *qid, const char *want)
{
	char *p = xasprintf("%s/%s/%s", dir, sub, qid), *got;
	size_t len;
	bool rc;

	got = read_path(p, &len);
	rc = got != NULL && len == strlen(want) && memcmp(got, want, len) == 0;
	free(got);
	free(p);
	return rc;
}

/*
 * Where the spool log commits a message whose content came whole, it has
 * no file until something needs one: its removal leaves nothing behind, a
 * status record, the checkpoint and a stop each write its files first.
 */
static void
test_unwritten_messages(void **state)
{
	static const char content[] = "Subject: kept\n\nbody\n";
	char *dir = mkdir_tmp(), *mem;
	struct spool_env e, got;
	const char *err = NULL;
	struct spool *sp;
	size_t len;

	(void)state;
	sp = spool_open(dir, &err);
	if (sp == NULL)
		fail_msg("spool_open: %s", err);
	/* The logic alone, wherever /tmp is: what a power cut leaves is
	   tested on a journaled ext4 (tests/integration/test_spool_log.py). */
	sp->ordered = true;
	if (spool_log_open(sp, 1u << 20, &err) == -1)
		fail_msg("spool_log_open: %s", err);

	/* Committed by its record: no file, loaded and read from memory. */
	commit_whole(sp, "U1", content, &e);
	assert_false(exists(dir, "msg", "U1"));
	assert_false(exists(dir, "env", "U1"));
	assert_int_equal(spool_env_load(sp, "U1", &got, &err), 0);
	assert_env_equal(&got, &e);
	assert_int_equal(spool_content_load(sp, &got, &mem, &len, &err), 0);
	assert_non_null(mem);
	assert_int_equal(len, strlen(content));
	assert_memory_equal(mem, content, len);
	free(mem);
	spool_env_clear(&got);
	/* Removed so: nothing to unlink, nothing made. */
	assert_int_equal(spool_remove(sp, "U1", &err), 0);
	assert_false(exists(dir, "msg", "U1"));
	assert_false(exists(dir, "env", "U1"));
	assert_int_equal(spool_env_load(sp, "U1", &got, &err), -1);
	assert_int_equal(errno, ENOENT);
	spool_env_clear(&e);

	/* A flag comes with the files, written first. */
	commit_whole(sp, "U2", content, &e);
	assert_int_equal(spool_mark_flag(sp, "U2", SPOOL_FLAG_HOLD, &err), 0);
	assert_true(holds(dir, "msg", "U2", content));
	assert_true(exists(dir, "env", "U2"));
	assert_int_equal(spool_content_load(sp, &e, &mem, &len, &err), 0);
	assert_null(mem);	/* read from its file now */
	spool_env_clear(&e);

	/* A recipient's outcomes are kept with it in memory, made durable
	   by the log: no file, and a load reads them.  Its files written,
	   done/ holds them too, and loads read them there. */
	commit_whole(sp, "U5", content, &e);
	assert_int_equal(spool_mark_deferred(sp, "U5", 0, 1, 1, "4.0.0 later",
	    &err), 0);
	assert_int_equal(spool_mark_done(sp, "U5", 0, &err), 0);
	assert_false(exists(dir, "env", "U5"));
	assert_false(exists(dir, "done", "U5"));
	assert_int_equal(spool_env_load(sp, "U5", &got, &err), 0);
	assert_true(got.rcpts[0].done);
	assert_int_equal(got.rcpts[0].attempts, 1);
	spool_env_clear(&got);
	assert_int_equal(spool_content_write(sp, "U5", &err), 0);
	assert_true(holds(dir, "done", "U5",
	    "defer 0 1 1 4.0.0%20later\ndone 0\n"));
	assert_true(holds(dir, "msg", "U5", content));
	assert_int_equal(spool_env_load(sp, "U5", &got, &err), 0);
	assert_true(got.rcpts[0].done);
	spool_env_clear(&got);
	/* From the file now: emptied, the load says so. */
	put_file(dir, "done", "U5", "");
	assert_int_equal(spool_env_load(sp, "U5", &got, &err), 0);
	assert_false(got.rcpts[0].done);
	spool_env_clear(&got);
	spool_env_clear(&e);

	/* A held line taken back (nothing made it durable): the other
	   stays, in its place. */
	commit_whole(sp, "U6", content, &e);
	assert_true(spool_unwritten_line(sp, "U6", "done 0\n", 7));
	assert_true(spool_unwritten_line(sp, "U6", "bounced 0\n", 10));
	spool_unwritten_unline(sp, "U6", "done 0\n", 7);
	assert_int_equal(spool_env_load(sp, "U6", &got, &err), 0);
	assert_false(got.rcpts[0].done);
	assert_true(got.rcpts[0].bounced);
	spool_env_clear(&got);
	assert_int_equal(spool_remove(sp, "U6", &err), 0);
	spool_env_clear(&e);

	/* The checkpoint (each second) writes the others. */
	commit_whole(sp, "U3", content, &e);
	spool_env_clear(&e);
	for (int i = 0; i < 100 && !exists(dir, "env", "U3"); i++)
		usleep(50 * 1000);
	assert_true(holds(dir, "msg", "U3", content));

	/* So does a stop, for those it finds unwritten. */
	commit_whole(sp, "U4", content, &e);
	spool_env_clear(&e);
	spool_close(&sp);
	assert_true(holds(dir, "msg", "U4", content));
	assert_true(exists(dir, "env", "U4"));

	/* The next start: U1's record replays nothing, the rest are whole. */
	sp = spool_open(dir, &err);
	assert_non_null(sp);
	sp->ordered = true;
	assert_int_equal(spool_log_open(sp, 1u << 20, &err), 0);
	char **qids;
	size_t n;
	assert_int_equal(spool_list(sp, &qids, &n, &err), 0);
	assert_int_equal(n, 4);
	for (size_t i = 0; i < n; i++) {
		assert_string_not_equal(qids[i], "U1");
		free(qids[i]);
	}
	free(qids);
	assert_false(exists(dir, "msg", "U1"));
	spool_close(&sp);
	rm_rf(dir);
	free(dir);
}

/* A filter's header edit: the bytes in the middle change, all else stays. */
static void
test_replace_before_commit(void **state)
{
	static const char content[] =
	    "Received: x\nSubject: old\n\nbody\n";
	static const char want[] =
	    "Received: x\nX-New: 1\nSubject: new\n\nbody\n";
	char *dir = mkdir_tmp(), *path, *got, qid[SPOOL_QID_MAX];
	struct spool_env e;
	const char *err = NULL;
	struct spool *sp = spool_open(dir, &err);
	size_t len;

	(void)state;
	assert_non_null(sp);
	spool_new_qid(sp, qid);
	simple_env(&e, qid, 1);
	struct spool_msg *m = spool_msg_new(sp, qid);
	assert_int_equal(spool_msg_write(m, content, 12, &err), 0);
	assert_int_equal(spool_msg_write(m, content + 12,
	    sizeof(content) - 13, &err), 0);
	/* "Subject: old\n" at 12 becomes two lines. */
	if (spool_msg_replace(m, 12, 13, "X-New: 1\nSubject: new\n", 22,
	    &err) == -1)
		fail_msg("replace: %s", err);
	/* Past the end: refused, the message is untouched. */
	assert_int_equal(spool_msg_replace(m, 30, 99, "x", 1, &err), -1);
	assert_int_equal(spool_msg_commit(m, &e, &err), 0);
	spool_msg_free(&m);
	assert_int_equal(count_entries(dir, "tmp"), 0);
	path = spool_content_path(sp, qid);
	got = read_path(path, &len);
	assert_int_equal(len, sizeof(want) - 1);
	assert_memory_equal(got, want, len);
	free(got);
	free(path);
	spool_env_clear(&e);
	spool_close(&sp);
	rm_rf(dir);
	free(dir);
}

static void
test_uncommitted_removed(void **state)
{
	char *dir = mkdir_tmp();
	const char *err = NULL;
	struct spool *sp = spool_open(dir, &err), *sp2;
	struct spool_msg *m;
	char **qids;
	size_t n;

	(void)state;
	assert_non_null(sp);
	/* Freed without commit: gone. */
	m = spool_msg_new(sp, "A1");
	assert_int_equal(spool_msg_write(m, "abc", 3, &err), 0);
	assert_true(exists(dir, "msg", "A1"));
	spool_msg_free(&m);
	assert_false(exists(dir, "msg", "A1"));
	assert_int_equal(count_entries(dir, "tmp"), 0);

	/* Being received right now (locked): spool_list leaves it alone... */
	m = spool_msg_new(sp, "B1");
	assert_int_equal(spool_msg_write(m, "abc", 3, &err), 0);
	sp2 = spool_open(dir, &err);
	assert_non_null(sp2);
	assert_int_equal(spool_list(sp2, &qids, &n, &err), 0);
	assert_int_equal(n, 0);
	free(qids);
	assert_true(exists(dir, "msg", "B1"));
	/* ...and commit still works after the sweep. */
	struct spool_env e;
	simple_env(&e, "B1", 1);
	assert_int_equal(spool_msg_commit(m, &e, &err), 0);
	spool_msg_free(&m);
	spool_env_clear(&e);

	/* Leftovers of a dead process (no lock): spool_list removes them. */
	put_file(dir, "msg", "C1", "partial");
	put_file(dir, "tmp", "C2.new", "edited");
	assert_int_equal(spool_list(sp2, &qids, &n, &err), 0);
	assert_int_equal(n, 1);
	assert_string_equal(qids[0], "B1");
	free(qids[0]);
	free(qids);
	assert_false(exists(dir, "msg", "C1"));
	assert_false(exists(dir, "tmp", "C2.new"));

	spool_close(&sp2);
	spool_close(&sp);
	rm_rf(dir);
	free(dir);
}

static void
test_crash_recovery(void **state)
{
	char *dir = mkdir_tmp(), *p;
	const char *err = NULL;
	struct spool *sp = spool_open(dir, &err);
	struct spool_env e;
	struct timespec ts[2];
	char **qids;
	size_t n;

	(void)state;
	assert_non_null(sp);
	/* Two committed messages, the second one older. */
	simple_env(&e, "New1", 1);
	commit_msg(sp, &e, "new\n");
	spool_env_clear(&e);
	simple_env(&e, "Old1", 2);
	commit_msg(sp, &e, "old\n");
	spool_env_clear(&e);
	p = xasprintf("%s/env/Old1", dir);
	ts[0].tv_sec = ts[1].tv_sec = 1000000;
	ts[0].tv_nsec = ts[1].tv_nsec = 0;
	assert_int_equal(utimensat(AT_FDCWD, p, ts, 0), 0);
	free(p);

	/* What a kill -9 at each commit step leaves behind. */
	put_file(dir, "msg", "Step1", "being received, or received");
	put_file(dir, "tmp", "Step1e.new", "a filter's edits");
	put_file(dir, "msg", "Step2", "content, envelope being written");
	put_file(dir, "env", "Step2.tmp", "v 1\n");
	put_file(dir, "env", "Step3", "v 1\n");	/* content's name lost */
	put_file(dir, "done", "Gone1", "done 0\n");	/* removal cut short */
	/* Records prove it accepted: its content was lost since. */
	put_file(dir, "env", "Lost1", "v 1\n");
	put_file(dir, "done", "Lost1", "done 0\n");
	spool_close(&sp);

	sp = spool_open(dir, &err);	/* the restart */
	assert_non_null(sp);
	assert_int_equal(spool_list(sp, &qids, &n, &err), 0);
	assert_int_equal(n, 3);
	assert_string_equal(qids[0], "Old1");
	assert_string_equal(qids[1], "New1");
	assert_string_equal(qids[2], "Lost1");	/* kept: damaged */
	assert_null(qids[3]);
	for (size_t i = 0; i < n; i++)
		free(qids[i]);
	free(qids);
	static const char *const gone[][2] = {
		{ "msg", "Step1" }, { "tmp", "Step1e.new" }, { "msg", "Step2" },
		{ "env", "Step2.tmp" }, { "env", "Step3" }, { "done", "Gone1" },
	};
	for (size_t i = 0; i < sizeof(gone) / sizeof(gone[0]); i++)
		if (exists(dir, gone[i][0], gone[i][1]))
			fail_msg("case \"%s/%s\": still there, want removed",
			    gone[i][0], gone[i][1]);
	assert_true(exists(dir, "msg", "Old1"));
	assert_true(exists(dir, "msg", "New1"));
	assert_true(exists(dir, "env", "Lost1"));
	assert_true(exists(dir, "done", "Lost1"));

	/* Removal takes everything; a second removal is harmless. */
	assert_int_equal(spool_mark_done(sp, "Old1", 0, &err), 0);
	assert_int_equal(spool_remove(sp, "Old1", &err), 0);
	assert_int_equal(spool_remove(sp, "Old1", &err), 0);
	assert_false(exists(dir, "env", "Old1"));
	assert_false(exists(dir, "msg", "Old1"));
	assert_false(exists(dir, "done", "Old1"));
	spool_close(&sp);
	rm_rf(dir);
	free(dir);
}

/*
 * What a crash (kill -9, or a power cut) during spool_remove can leave,
 * when the removal is the record of the message's last delivery: the
 * envelope's unlink is made durable before anything else goes, then the
 * content and the status records go in either order.  Where the envelope
 * is still there the message is listed whole, with the earlier
 * recipients' records (the last one is delivered again, as after a crash
 * before its done-record); where it is not, nothing is listed and every
 * leftover is removed.
 */
static void
test_removal_crash_states(void **state)
{
	static const struct {
		const char *name;
		size_t nrcpts;		/* rcpt 0 has a done-record if 2 */
		const char *unlinked[3];	/* subs, NULL-terminated */
		bool listed;
	} cases[] = {
		{ "envelope unlink not durable", 2, { NULL }, true },
		{ "envelope gone", 2, { "env", NULL }, false },
		{ "envelope and content gone", 2, { "env", "msg", NULL },
		    false },
		{ "envelope and records gone", 2, { "env", "done", NULL },
		    false },
		{ "everything gone", 2, { "env", "msg", "done" }, false },
		{ "one recipient, not durable", 1, { NULL }, true },
		{ "one recipient, envelope gone", 1, { "env", NULL }, false },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *dir = mkdir_tmp(), *p, *got;
		const char *err = NULL;
		struct spool *sp = spool_open(dir, &err);
		struct spool_env e;
		char **qids;
		size_t n, len;

		assert_non_null(sp);
		simple_env(&e, "R1", cases[i].nrcpts);
		commit_msg(sp, &e, "r1\n");
		spool_env_clear(&e);
		if (cases[i].nrcpts == 2)
			assert_int_equal(spool_mark_done(sp, "R1", 0, &err), 0);
		for (size_t k = 0; k < 3 && cases[i].unlinked[k] != NULL; k++) {
			p = xasprintf("%s/%s/R1", dir, cases[i].unlinked[k]);
			assert_int_equal(unlink(p), 0);
			free(p);
		}
		spool_close(&sp);

		sp = spool_open(dir, &err);	/* the restart */
		assert_non_null(sp);
		assert_int_equal(spool_list(sp, &qids, &n, &err), 0);
		if (n != (cases[i].listed ? 1u : 0u))
			fail_msg("case \"%s\": %zu listed, want %d",
			    cases[i].name, n, cases[i].listed);
		for (size_t k = 0; k < n; k++)
			free(qids[k]);
		free(qids);
		if (!cases[i].listed) {
			if (exists(dir, "msg", "R1") ||
			    exists(dir, "done", "R1"))
				fail_msg("case \"%s\": leftovers not removed",
				    cases[i].name);
			spool_close(&sp);
			rm_rf(dir);
			free(dir);
			continue;
		}
		assert_int_equal(spool_env_load(sp, "R1", &e, &err), 0);
		if (e.rcpts[0].done != (cases[i].nrcpts == 2) ||
		    e.rcpts[cases[i].nrcpts - 1].done)
			fail_msg("case \"%s\": records not as before the "
			    "removal", cases[i].name);
		spool_env_clear(&e);
		p = spool_content_path(sp, "R1");
		got = read_path(p, &len);
		assert_string_equal(got, "r1\n");
		free(got);
		free(p);
		spool_close(&sp);
		rm_rf(dir);
		free(dir);
	}
}

static void
test_mark_done_persists(void **state)
{
	char *dir = mkdir_tmp();
	const char *err = NULL;
	struct spool *sp = spool_open(dir, &err);
	struct spool_env e, got;

	(void)state;
	assert_non_null(sp);
	simple_env(&e, "D1", 3);
	commit_msg(sp, &e, "x\n");
	spool_env_clear(&e);
	assert_int_equal(spool_mark_done(sp, "D1", 2, &err), 0);
	spool_close(&sp);

	sp = spool_open(dir, &err);
	assert_non_null(sp);
	assert_int_equal(spool_env_load(sp, "D1", &got, &err), 0);
	assert_false(got.rcpts[0].done);
	assert_false(got.rcpts[1].done);
	assert_true(got.rcpts[2].done);
	spool_env_clear(&got);

	/* A torn record (crash mid-append) is dropped, not glued onto. */
	char *p = xasprintf("%s/done/D1", dir);
	FILE *f = fopen(p, "a");
	assert_non_null(f);
	fputs("done 1", f);
	fclose(f);
	assert_int_equal(spool_env_load(sp, "D1", &got, &err), 0);
	assert_false(got.rcpts[1].done);
	spool_env_clear(&got);
	assert_int_equal(spool_mark_done(sp, "D1", 0, &err), 0);
	assert_int_equal(spool_env_load(sp, "D1", &got, &err), 0);
	assert_true(got.rcpts[0].done);
	assert_false(got.rcpts[1].done);
	assert_true(got.rcpts[2].done);
	spool_env_clear(&got);
	size_t len;
	char *s = read_path(p, &len);
	assert_string_equal(s, "done 2\ndone 0\n");
	free(s);
	free(p);

	/* A done-record for a recipient that does not exist: an error. */
	assert_int_equal(spool_mark_done(sp, "D1", 7, &err), 0);
	assert_int_equal(spool_env_load(sp, "D1", &got, &err), -1);
	assert_non_null(strstr(err, "done/D1"));

	/* Malformed or missing envelopes: errors, no crash. */
	put_file(dir, "env", "Bad1", "v 1\nqid Bad1\nhelo \x01\nend\n");
	assert_int_equal(spool_env_load(sp, "Bad1", &got, &err), -1);
	assert_int_equal(spool_env_load(sp, "Nope", &got, &err), -1);
	assert_string_equal(err, "read(env/Nope): No such file or directory");
	assert_int_equal(spool_env_load(sp, "../x", &got, &err), -1);
	assert_int_equal(spool_mark_done(sp, "a/b", 0, &err), -1);
	assert_int_equal(spool_remove(sp, "", &err), -1);

	spool_close(&sp);
	rm_rf(dir);
	free(dir);
}

/* Status records: parse table; each case on three recipients. */
static void
test_status_parse(void **state)
{
	static const struct {
		const char *name, *in;
		int rc;
		const char *want;	/* per rcpt: D done, F failed+done,
					   B bounced, d deferred, - none;
					   then "h" held, "w" warned */
	} cases[] = {
		{ "defer", "defer 1 3 1700000000123 mkdir%3A%20no\n", 0,
		    "-d-" },
		{ "defer then done", "defer 0 1 5 x\ndone 0\n", 0, "D--" },
		{ "fail", "fail 2 5.1.1 550%205.1.1%20unknown\n", 0, "--F" },
		{ "fail bounced", "fail 0 4.4.7 expired\nbounced 0\n", 0,
		    "B--" },
		{ "flags", "hold\nwarned\n", 0, "---hw" },
		{ "hold release", "hold\nrelease\n", 0, "---" },
		{ "torn defer", "defer 1 3 17000", 0, "---" },
		{ "defer short", "defer 1 3 5\n", -1, "" },
		{ "defer attempts big", "defer 1 99999999999 5 x\n", -1, "" },
		{ "defer bad escape", "defer 1 1 5 %G0\n", -1, "" },
		{ "fail no why", "fail 1 5.0.0\n", -1, "" },
		{ "fail long status", "fail 1 5.0.0.0.0.0.0.0.0.0 x\n", -1,
		    "" },
		{ "bounced range", "bounced 3\n", -1, "" },
		{ "unknown", "held\n", -1, "" },
		{ "flag with arg", "hold 1\n", -1, "" },
		{ "double space", "done  1\n", -1, "" },
		{ "NUL", "done 1\0\n", -1, "" },
	};
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct spool_env e = { 0 };
		const char *why = "(none)";
		char got[8] = { 0 };
		size_t n = 0, len = strlen(cases[i].in);

		if (strcmp(cases[i].name, "NUL") == 0)
			len = 8;
		for (int r = 0; r < 3; r++)
			spool_env_add_rcpt(&e, "a@b", "discard", NULL);
		int rc = spool_done_parse(cases[i].in, len, &e, &why);
		for (int r = 0; r < 3 && rc == 0; r++) {
			const struct spool_rcpt *x = &e.rcpts[r];
			got[n++] = x->bounced ? 'B' : x->failed ? 'F' :
			    x->done ? 'D' : x->attempts > 0 ? 'd' : '-';
		}
		if (e.held)
			got[n++] = 'h';
		if (e.warned)
			got[n++] = 'w';
		if (rc != cases[i].rc || (rc == 0 &&
		    strcmp(got, cases[i].want) != 0))
			fail_msg("case \"%s\": got rc=%d \"%s\" (%s), want "
			    "rc=%d \"%s\"", cases[i].name, rc, got, why,
			    cases[i].rc, cases[i].want);
		if (strcmp(cases[i].name, "defer") == 0 &&
		    (e.rcpts[1].attempts != 3 ||
		    e.rcpts[1].next_ms != 1700000000123ULL ||
		    strcmp(e.rcpts[1].last_err, "mkdir: no") != 0))
			fail_msg("case \"defer\": got attempts=%u next=%ju "
			    "err=%s", e.rcpts[1].attempts,
			    (uintmax_t)e.rcpts[1].next_ms, e.rcpts[1].last_err);
		if (strcmp(cases[i].name, "fail") == 0 &&
		    (strcmp(e.rcpts[2].status, "5.1.1") != 0 ||
		    strcmp(e.rcpts[2].last_err, "550 5.1.1 unknown") != 0))
			fail_msg("case \"fail\": got status=%s err=%s",
			    e.rcpts[2].status, e.rcpts[2].last_err);
		spool_env_clear(&e);
	}
}

/* Every status written survives a close and reopen (a restart). */
static void
test_status_persists(void **state)
{
	char *dir = mkdir_tmp();
	const char *err = NULL;
	struct spool *sp = spool_open(dir, &err);
	struct spool_env e, got;

	(void)state;
	assert_non_null(sp);
	simple_env(&e, "S1", 4);
	commit_msg(sp, &e, "x\n");
	spool_env_clear(&e);
	assert_int_equal(spool_mark_deferred(sp, "S1", 0, 1, 1000, "first",
	    &err), 0);
	assert_int_equal(spool_mark_deferred(sp, "S1", 0, 2, 2000,
	    "line\r\nInjected: header % and spaces", &err), 0);
	assert_int_equal(spool_mark_failed(sp, "S1", 1, "5.1.1",
	    "550 5.1.1 no such user", &err), 0);
	assert_int_equal(spool_mark_bounced(sp, "S1", 1, &err), 0);
	assert_int_equal(spool_mark_failed(sp, "S1", 2, "4.4.7", "", &err),
	    0);
	assert_int_equal(spool_mark_flag(sp, "S1", SPOOL_FLAG_WARNED, &err),
	    0);
	assert_int_equal(spool_mark_flag(sp, "S1", SPOOL_FLAG_HOLD, &err), 0);
	assert_int_equal(spool_mark_done(sp, "S1", 3, &err), 0);
	spool_close(&sp);

	sp = spool_open(dir, &err);		/* the restart */
	assert_non_null(sp);
	assert_int_equal(spool_env_load(sp, "S1", &got, &err), 0);
	assert_false(got.rcpts[0].done);
	assert_int_equal(got.rcpts[0].attempts, 2);
	assert_int_equal(got.rcpts[0].next_ms, 2000);
	assert_string_equal(got.rcpts[0].last_err,
	    "line\r\nInjected: header % and spaces");
	assert_true(got.rcpts[1].done && got.rcpts[1].failed &&
	    got.rcpts[1].bounced);
	assert_string_equal(got.rcpts[1].status, "5.1.1");
	assert_true(got.rcpts[2].failed && !got.rcpts[2].bounced);
	assert_string_equal(got.rcpts[2].last_err, "(unknown)");
	assert_true(got.rcpts[3].done && !got.rcpts[3].failed);
	assert_true(got.held && got.warned);
	spool_env_clear(&got);
	assert_int_equal(spool_mark_flag(sp, "S1", SPOOL_FLAG_RELEASE, &err),
	    0);
	assert_int_equal(spool_env_load(sp, "S1", &got, &err), 0);
	assert_false(got.held);
	spool_env_clear(&got);
	assert_true(spool_qid_ok("S1"));
	assert_false(spool_qid_ok("../S1"));
	assert_int_equal(spool_mark_flag(sp, "a/b", SPOOL_FLAG_HOLD, &err),
	    -1);
	spool_close(&sp);
	rm_rf(dir);
	free(dir);
}

static void
test_write_error_reported(void **state)
{
	char *dir = mkdir_tmp(), big[4096];
	const char *err = NULL;
	struct spool *sp = spool_open(dir, &err);
	struct rlimit old, lim = { 1024, 1024 };
	struct spool_msg *m;
	int rc = 0;

	(void)state;
	assert_non_null(sp);
	memset(big, 'x', sizeof(big));
	/* RLIMIT_FSIZE stands in for a full disk: the write fails (EFBIG). */
	signal(SIGXFSZ, SIG_IGN);
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	lim.rlim_max = old.rlim_max;
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
	m = spool_msg_new(sp, "F1");
	for (int i = 0; i < 4 && rc == 0; i++)
		rc = spool_msg_write(m, big, sizeof(big), &err);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	assert_int_equal(rc, -1);
	assert_string_equal(err, "write(msg/F1): File too large");
	spool_msg_free(&m);
	assert_false(exists(dir, "msg", "F1"));
	spool_close(&sp);

	/* A spool folder that cannot be made. */
	char *bad = xasprintf("%s/file", dir);
	put_file(dir, "", "file", "x");
	assert_null(spool_open(bad, &err));
	assert_non_null(strstr(err, "Not a directory"));
	free(bad);
	rm_rf(dir);
	free(dir);
}

/*
 * kill -9 during a stream of commits: every message whose commit returned
 * (reported through the pipe) is listed after the restart, complete.
 */
static void
test_sigkill_during_commits(void **state)
{
	char *dir = mkdir_tmp();
	const char *err = NULL;
	struct util_buf acked = { 0 };
	int pfd[2];
	pid_t pid;

	(void)state;
	assert_int_equal(pipe(pfd), 0);
	pid = fork();
	assert_true(pid != -1);
	if (pid == 0) {
		struct spool *csp = spool_open(dir, &err);
		close(pfd[0]);
		if (csp == NULL)
			_exit(1);
		for (;;) {
			struct spool_env e;
			char qid[SPOOL_QID_MAX], line[SPOOL_QID_MAX + 1];

			spool_new_qid(csp, qid);
			simple_env(&e, qid, 2);
			e.size = 4000;
			struct spool_msg *m = spool_msg_new(csp, qid);
			char body[100];
			memset(body, 'x', sizeof(body));
			body[99] = '\n';
			for (int i = 0; i < 40; i++)
				spool_msg_write(m, body, sizeof(body), &err);
			if (spool_msg_commit(m, &e, &err) == 0) {
				snprintf(line, sizeof(line), "%s\n", qid);
				write(pfd[1], line, strlen(line));
			}
			spool_msg_free(&m);
			spool_env_clear(&e);
		}
	}
	close(pfd[1]);
	/* Let it commit a few dozen, then kill it at an arbitrary point. */
	char buf[4096];
	size_t lines = 0;
	while (lines < 40) {
		ssize_t n = read(pfd[0], buf, sizeof(buf));
		assert_true(n > 0);
		util_buf_add(&acked, buf, (size_t)n);
		for (ssize_t i = 0; i < n; i++)
			lines += buf[i] == '\n';
	}
	kill(pid, SIGKILL);
	assert_int_equal(waitpid(pid, NULL, 0), pid);
	ssize_t n;
	while ((n = read(pfd[0], buf, sizeof(buf))) > 0)
		util_buf_add(&acked, buf, (size_t)n);
	close(pfd[0]);

	struct spool *sp = spool_open(dir, &err);
	char **qids;
	size_t nq;
	assert_non_null(sp);
	assert_int_equal(spool_list(sp, &qids, &nq, &err), 0);
	assert_int_equal(count_entries(dir, "tmp"), 0);
	char *save = NULL, *text = util_buf_cstr(&acked);
	for (char *q = strtok_r(text, "\n", &save); q != NULL;
	    q = strtok_r(NULL, "\n", &save)) {
		bool found = false;
		for (size_t i = 0; i < nq && !found; i++)
			found = strcmp(qids[i], q) == 0;
		if (!found)
			fail_msg("acknowledged %s lost after kill -9", q);
	}
	/* Whatever is listed is whole. */
	for (size_t i = 0; i < nq; i++) {
		struct spool_env e;
		struct stat st;
		char *p = spool_content_path(sp, qids[i]);
		if (spool_env_load(sp, qids[i], &e, &err) == -1)
			fail_msg("listed %s: %s", qids[i], err);
		assert_int_equal(stat(p, &st), 0);
		assert_int_equal(st.st_size, 4000);
		spool_env_clear(&e);
		free(p);
		free(qids[i]);
	}
	free(qids);
	assert_int_equal(count_entries(dir, "msg"), nq);
	util_buf_clear(&acked);
	spool_close(&sp);
	rm_rf(dir);
	free(dir);
}

/* ---- the spool log's records (logrec.c) ---- */

/* Record i of a test log: qid "Q<i>", one or two copies. */
static unsigned char *
log_rec(int i, uint64_t seq, uint32_t epoch, size_t *len_out)
{
	static char qid[16], body[64], path[2][64];
	struct spool_logcopy cs[2] = {
		{ path[0], "bob@example.org" }, { path[1], "ann@example.org" } };
	struct spool_logrec r = { .received = 1700000000 + i, .sender =
	    "a@example.net", .hdr = "Return-Path: <a@example.net>\n",
	    .copies = cs, .ncopies = 1 + (size_t)(i % 2) };
	unsigned char *b;

	snprintf(qid, sizeof(qid), "Q%d", i);
	snprintf(body, sizeof(body), "Subject: %d\n\nbody %d\n", i, i);
	snprintf(path[0], sizeof(path[0]), "/m/bob/new/%d.Q%d_0.h", i, i);
	snprintf(path[1], sizeof(path[1]), "/m/ann/new/%d.Q%d_1.h", i, i);
	util_strlcpy(r.qid, qid, sizeof(r.qid));
	r.content = body;
	r.content_len = strlen(body);
	*len_out = spool_logrec_size(&r);
	assert_int_equal(*len_out % 8, 0);
	b = xmalloc(*len_out);
	spool_logrec_encode(&r, b);
	spool_logrec_seal(b, seq, epoch);
	return b;
}

static void
test_logrec_round_trip(void **state)
{
	struct spool_logrec r;
	size_t len;
	unsigned char *b = log_rec(3, 42, 7, &len);

	(void)state;
	assert_int_equal(spool_logrec_decode(b, len, 42, 7, &r), 1);
	assert_int_equal(r.len, len);
	assert_string_equal(r.qid, "Q3");
	assert_int_equal(r.received, 1700000003);
	assert_string_equal(r.sender, "a@example.net");
	assert_string_equal(r.hdr, "Return-Path: <a@example.net>\n");
	assert_int_equal(r.ncopies, 2);
	assert_string_equal(r.copies[0].path, "/m/bob/new/3.Q3_0.h");
	assert_string_equal(r.copies[1].addr, "ann@example.org");
	assert_int_equal(r.content_len, strlen("Subject: 3\n\nbody 3\n"));
	assert_memory_equal(r.content, "Subject: 3\n\nbody 3\n",
	    r.content_len);
	spool_logrec_clear(&r);
	/* Another sequence number or epoch: a stale record. */
	assert_int_equal(spool_logrec_decode(b, len, 43, 7, &r), 0);
	assert_int_equal(spool_logrec_decode(b, len, 42, 6, &r), 0);
	/* Torn: every shorter read is refused. */
	for (size_t n = 0; n < len; n++)
		assert_int_equal(spool_logrec_decode(b, n, 42, 7, &r), 0);
	/* Any byte changed fails the checksum (or the magic). */
	for (size_t i = 0; i < len; i++) {
		b[i] ^= 0x20;
		assert_int_equal(spool_logrec_decode(b, len, 42, 7, &r), 0);
		b[i] ^= 0x20;
	}
	assert_int_equal(spool_logrec_decode(b, len, 42, 7, &r), 1);
	spool_logrec_clear(&r);
	free(b);
}

/*
 * encode writes every byte of the record, whatever the buffer held: the
 * fields the seal fills in later and the padding to 8 bytes are zeros.
 */
static void
test_logrec_encode_every_byte(void **state)
{
	struct spool_logcopy cs[1] = { { "/m/bob/new/1.Q1_0.h", "b@x" } };
	struct spool_logrec r = { .received = 1700000000, .sender = "a@x",
	    .hdr = "Return-Path: <a@x>\n", .copies = cs, .ncopies = 1,
	    .content = "Subject: s\n\nbody\n", .content_len = 17 };
	unsigned char a[512], b[512];
	size_t len, end;

	(void)state;
	util_strlcpy(r.qid, "Q1", sizeof(r.qid));
	len = spool_logrec_size(&r);
	end = 48 + 2 + 3 + 19 + 4 + 19 + 3 + 17;
	assert_int_equal(len, (end + 7) & ~(size_t)7);
	assert_true(len > end);		/* there is padding */
	memset(a, 0x00, sizeof(a));
	memset(b, 0xa5, sizeof(b));
	spool_logrec_encode(&r, a);
	spool_logrec_encode(&r, b);
	assert_memory_equal(a, b, len);
	for (size_t i = 8; i < 20; i++)
		assert_int_equal(b[i], 0);
	for (size_t i = end; i < len; i++)
		assert_int_equal(b[i], 0);
	assert_int_equal(b[len], 0xa5);		/* nothing past the record */
	assert_memory_equal(b + end - 17, r.content, 17);
}

/* A record of kind k with no copies: qid, the header's place, content. */
static unsigned char *
log_rec_bare(enum spool_logrec_kind k, const char *qid, const char *hdr,
    const char *content, uint64_t seq, size_t *len_out)
{
	struct spool_logrec r = { .kind = k, .sender = "", .hdr =
	    (char *)hdr, .content = content, .content_len = strlen(content) };
	unsigned char *b;

	util_strlcpy(r.qid, qid, sizeof(r.qid));
	*len_out = spool_logrec_size(&r);
	b = xmalloc(*len_out);
	spool_logrec_encode(&r, b);
	spool_logrec_seal(b, seq, 1);
	return b;
}

/* Seal b (len bytes) again after a change: its checksum made good. */
static void
log_reseal(unsigned char *b, size_t len, uint64_t seq)
{
	uint32_t body = spool_crc32c(0, b + 24, len - 24);

	for (int i = 0; i < 4; i++)	/* little-endian, as stored */
		b[20 + i] = (unsigned char)(body >> (8 * i));
	spool_logrec_seal(b, seq, 1);
}

static void
test_logrec_kinds(void **state)
{
	const char *env = "v 1\nqid QS1\n", *body = "Subject: s\n\nbody\n";
	struct spool_logrec r;
	unsigned char *b;
	size_t len;

	(void)state;
	/* A spooled message: its envelope's and content's bytes. */
	b = log_rec_bare(SPOOL_LR_SPOOLED, "QS1", env, body, 5, &len);
	assert_int_equal(len, spool_logrec_spooled_size(3, strlen(env),
	    strlen(body)));
	assert_int_equal(spool_logrec_decode(b, len, 5, 1, &r), 1);
	assert_int_equal(r.kind, SPOOL_LR_SPOOLED);
	assert_string_equal(r.qid, "QS1");
	assert_string_equal(r.hdr, env);
	assert_int_equal(r.ncopies, 0);
	assert_memory_equal(r.content, body, strlen(body));
	spool_logrec_clear(&r);
	/* Resealed as it was, it decodes; with a copy count, not. */
	log_reseal(b, len, 5);
	assert_int_equal(spool_logrec_decode(b, len, 5, 1, &r), 1);
	spool_logrec_clear(&r);
	b[34] = 1;
	log_reseal(b, len, 5);
	assert_int_equal(spool_logrec_decode(b, len, 5, 1, &r), 0);
	free(b);
	/* A removal: the queue id alone. */
	b = log_rec_bare(SPOOL_LR_REMOVED, "QS1", "", "", 6, &len);
	assert_int_equal(spool_logrec_decode(b, len, 6, 1, &r), 1);
	assert_int_equal(r.kind, SPOOL_LR_REMOVED);
	assert_string_equal(r.qid, "QS1");
	spool_logrec_clear(&r);
	free(b);
	/* A line for done/: the queue id and the line; with content, no
	   record. */
	b = log_rec_bare(SPOOL_LR_LINE, "QS1", "done 3\n", "", 8, &len);
	assert_int_equal(spool_logrec_decode(b, len, 8, 1, &r), 1);
	assert_int_equal(r.kind, SPOOL_LR_LINE);
	assert_string_equal(r.qid, "QS1");
	assert_string_equal(r.hdr, "done 3\n");
	spool_logrec_clear(&r);
	free(b);
	b = log_rec_bare(SPOOL_LR_LINE, "QS1", "done 3\n", "x", 8, &len);
	assert_int_equal(spool_logrec_decode(b, len, 8, 1, &r), 0);
	free(b);
	/* A "removal" with content is no record. */
	b = log_rec_bare(SPOOL_LR_REMOVED, "QS1", "", "x", 6, &len);
	assert_int_equal(spool_logrec_decode(b, len, 6, 1, &r), 0);
	free(b);
	/* An unknown magic is no record either. */
	b = log_rec_bare(SPOOL_LR_SPOOLED, "QS1", env, body, 7, &len);
	b[3] = 'Z';
	log_reseal(b, len, 7);
	assert_int_equal(spool_logrec_decode(b, len, 7, 1, &r), 0);
	free(b);
}

static void
test_logrec_crc32c(void **state)
{
	(void)state;
	/* The check value of CRC-32C (RFC 3720, B.4). */
	assert_int_equal(spool_crc32c(0, "123456789", 9), 0xe3069283u);
	assert_int_equal(spool_crc32c(spool_crc32c(0, "1234", 4), "56789", 5),
	    0xe3069283u);
	assert_int_equal(spool_crc32c_table(0, "123456789", 9), 0xe3069283u);
	/* The CPU's instruction and the table agree at every length. */
	for (size_t n = 0; n < 300; n++) {
		unsigned char b[300];
		for (size_t i = 0; i < n; i++)
			b[i] = (unsigned char)(i * 131 + n);
		assert_int_equal(spool_crc32c(7, b, n),
		    spool_crc32c_table(7, b, n));
	}
}

struct log_seen {
	char	qids[16][8];
	size_t	n;
};

static void
log_seen_cb(const struct spool_logrec *r, void *arg)
{
	struct log_seen *s = arg;

	util_strlcpy(s->qids[s->n++], r->qid, sizeof(s->qids[0]));
}

/* Put record i (seq, epoch) at off of img; its length. */
static size_t
log_put(unsigned char *img, size_t off, int i, uint64_t seq, uint32_t epoch)
{
	size_t len;
	unsigned char *b = log_rec(i, seq, epoch, &len);

	memcpy(img + off, b, len);
	free(b);
	return len;
}

static void
test_log_scan(void **state)
{
	enum { SZ = 4096 + 2048 };
	unsigned char *img = xcalloc(1, SZ);
	struct log_seen s = { 0 };
	size_t off = 4096, mid, end;

	(void)state;
	/* Three records of epoch 2 from seq 5; then garbage, then one torn. */
	off += log_put(img, off, 0, 5, 2);
	mid = off;
	off += log_put(img, off, 1, 6, 2);
	off += log_put(img, off, 2, 7, 2);
	end = off;
	memset(img + off, 0xa5, 64);
	assert_int_equal(spool_log_scan(img, SZ, 4096, 4096, 5, 2,
	    log_seen_cb, &s, &off), 3);
	assert_int_equal(off, end);
	assert_string_equal(s.qids[2], "Q2");
	/* A whole record of seq 8 follows, then a torn one: the torn ends. */
	off = end + log_put(img, end, 3, 8, 2);
	log_put(img, off, 4, 9, 2);
	img[off + 60] ^= 1;
	s.n = 0;
	assert_int_equal(spool_log_scan(img, SZ, 4096, 4096, 5, 2,
	    log_seen_cb, &s, NULL), 4);
	/* From a checkpoint in the middle. */
	s.n = 0;
	assert_int_equal(spool_log_scan(img, SZ, 4096, mid, 6, 2,
	    log_seen_cb, &s, NULL), 3);
	assert_string_equal(s.qids[0], "Q1");
	/* A bad checksum in the middle ends the scan there. */
	img[mid + 30] ^= 1;
	s.n = 0;
	assert_int_equal(spool_log_scan(img, SZ, 4096, 4096, 5, 2,
	    log_seen_cb, &s, NULL), 1);
	/* Records of another epoch are stale. */
	s.n = 0;
	assert_int_equal(spool_log_scan(img, SZ, 4096, 4096, 5, 3,
	    log_seen_cb, &s, NULL), 0);
	free(img);
}

static void
test_log_scan_wraps(void **state)
{
	enum { SZ = 4096 + 1024 };
	unsigned char *img = xcalloc(1, SZ);
	struct log_seen s = { 0 };
	size_t len, off;
	unsigned char *b = log_rec(0, 1, 1, &len);

	(void)state;
	free(b);
	/* Seq 10 near the end; seq 11 did not fit after it: at the start. */
	off = SZ - len - 8;
	log_put(img, off, 0, 10, 1);
	log_put(img, 4096, 2, 11, 1);
	/* No room after seq 10: the scan goes on at the start. */
	assert_int_equal(spool_log_scan(img, SZ, 4096, off, 10, 1,
	    log_seen_cb, &s, NULL), 2);
	assert_string_equal(s.qids[1], "Q2");
	free(img);
}

static void
test_loghdr_round_trip(void **state)
{
	struct spool_loghdr h = { .epoch = 3, .gen = 9, .seq = 77,
	    .off = 8192, .size = 1 << 20 }, out;
	unsigned char b[64];

	(void)state;
	spool_loghdr_encode(&h, b);
	assert_int_equal(spool_loghdr_decode(b, &out), 1);
	assert_int_equal(out.epoch, 3);
	assert_int_equal(out.gen, 9);
	assert_int_equal(out.seq, 77);
	assert_int_equal(out.off, 8192);
	assert_int_equal(out.size, 1 << 20);
	b[20] ^= 4;
	assert_int_equal(spool_loghdr_decode(b, &out), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_env_format_round_trip),
		cmocka_unit_test(test_replace_before_commit),
		cmocka_unit_test(test_env_parse_strict),
		cmocka_unit_test(test_done_parse),
		cmocka_unit_test(test_status_parse),
		cmocka_unit_test(test_status_persists),
		cmocka_unit_test(test_qid_unique),
		cmocka_unit_test(test_commit_load_round_trip),
		cmocka_unit_test(test_unwritten_messages),
		cmocka_unit_test(test_uncommitted_removed),
		cmocka_unit_test(test_crash_recovery),
		cmocka_unit_test(test_removal_crash_states),
		cmocka_unit_test(test_mark_done_persists),
		cmocka_unit_test(test_write_error_reported),
		cmocka_unit_test(test_sigkill_during_commits),
		cmocka_unit_test(test_logrec_round_trip),
		cmocka_unit_test(test_logrec_encode_every_byte),
		cmocka_unit_test(test_logrec_kinds),
		cmocka_unit_test(test_logrec_crc32c),
		cmocka_unit_test(test_log_scan),
		cmocka_unit_test(test_log_scan_wraps),
		cmocka_unit_test(test_loghdr_round_trip),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
