/*
 * log/translog.c: per-session transaction logs for research use.  The
 * event loops only queue records (a copy and a timestamp, under one
 * mutex); a writer thread of its own makes the files, writes the lines,
 * keeps each file under its cap and the folder under its total (oldest
 * removed first, util_capdir; a folder removed meanwhile is made again).
 * A queue that grows past TL_QUEUE_MAX drops records and says so in the
 * file: the loops never wait for the disk, and a full disk costs lines,
 * never a session.
 */
#include "log/log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define TL_QUEUE_MAX	(16 * 1024 * 1024)	/* bytes queued, all files */
#define TL_NOTE_ROOM	128	/* kept under the file cap for its note */

enum tl_kind { TL_OPEN, TL_LINE, TL_DATA, TL_CLOSE };

static const char *const tl_marks[] = {
	[LOG_TL_IN] = ">", [LOG_TL_OUT] = "<", [LOG_TL_DATA] = "D",
	[LOG_TL_EOD] = ".", [LOG_TL_NOTE] = "#", [LOG_TL_UP_OUT] = "}",
	[LOG_TL_UP_IN] = "{",
};

/* One folder: its cap on the total. */
struct tl_dir {
	char			*path;		/* owned */
	struct util_capdir	*cap;		/* owned */
	struct tl_dir		*next;
};

struct log_translog {
	/* The loop's side (the session's thread only). */
	struct log_translog_writer *w;		/* borrowed */
	struct log_translog_opts o;		/* o.dir owned */
	char			 name[160];	/* the file's name */
	uint64_t		 data_logged;	/* content bytes queued */
	bool			 data_cut;	/* data_max reached */
	/* The writer's side. */
	FILE			*f;		/* NULL: not open, or broken */
	struct tl_dir		*dir;		/* borrowed from w->dirs */
	struct util_capfile	*cf;		/* owned by dir->cap */
	uint64_t		 written;
	bool			 capped;	/* file_max reached */
	bool			 dirty;		/* written since the last flush */
	struct util_buf		 partial;	/* content line not ended yet */
	uint64_t		 partial_us;	/* when it started */
	/* Both sides, under w->mu. */
	uint64_t		 dropped;	/* bytes the queue had no room for */
};

struct tl_rec {
	struct log_translog	*t;
	enum tl_kind		 kind;
	enum log_tl_mark	 mark;
	uint64_t		 us;		/* wall clock, microseconds */
	size_t			 len;
	struct tl_rec		*next;
	char			 bytes[];
};

struct log_translog_writer {
	pthread_mutex_t		 mu;
	pthread_cond_t		 cv;
	pthread_t		 thread;
	bool			 started, stop;
	struct tl_rec		*head, *tail;
	size_t			 queued;	/* bytes in the queue */
	/* The writer thread's own. */
	struct tl_dir		*dirs;
	struct log_translog	**dirty;
	size_t			 ndirty, dirty_cap;
	struct util_buf		 safe;		/* a line, escaped */
};

/* ----- the loops' side ----- */

static void	*tl_main(void *arg);

static void
tl_push(struct log_translog *t, enum tl_kind kind, enum log_tl_mark mark,
    const char *bytes, size_t len)
{
	struct log_translog_writer *w = t->w;
	struct tl_rec *r;
	bool always = kind == TL_OPEN || kind == TL_CLOSE;

	pthread_mutex_lock(&w->mu);
	if (!always && len > TL_QUEUE_MAX - w->queued) {
		t->dropped += len;
		pthread_mutex_unlock(&w->mu);
		return;
	}
	pthread_mutex_unlock(&w->mu);
	r = xmalloc(sizeof(*r) + len);
	r->t = t;
	r->kind = kind;
	r->mark = mark;
	r->us = util_wall_us();
	r->len = len;
	r->next = NULL;
	if (len > 0)
		memcpy(r->bytes, bytes, len);
	pthread_mutex_lock(&w->mu);
	if (!w->started) {
		if (pthread_create(&w->thread, NULL, tl_main, w) != 0)
			fatal("pthread_create: cannot start the transaction "
			    "log writer");
		w->started = true;
	}
	if (w->tail != NULL)
		w->tail->next = r;
	else {
		w->head = r;
		pthread_cond_signal(&w->cv);
	}
	w->tail = r;
	w->queued += len;
	pthread_mutex_unlock(&w->mu);
}

struct log_translog_writer *
log_translog_writer_new(void)
{
	struct log_translog_writer *w = xcalloc(1, sizeof(*w));

	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv, NULL);
	return w;
}

struct log_translog *
log_translog_open(struct log_translog_writer *w,
    const struct log_translog_opts *o, const char *ip, const char *sid)
{
	struct log_translog *t = xcalloc(1, sizeof(*t));
	char stamp[32], safeip[64];
	time_t now = time(NULL);
	struct tm tm;

	t->w = w;
	t->o = *o;
	t->o.dir = xstrdup(o->dir);
	gmtime_r(&now, &tm);
	strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%S", &tm);
	util_strlcpy(safeip, ip, sizeof(safeip));
	for (char *p = safeip; *p != '\0'; p++)
		if (*p == ':')
			*p = '_';	/* IPv6: keep file names portable */
	(void)util_snprintf(t->name, sizeof(t->name), "%s-%s-%s.log", stamp,
	    safeip, sid);
	tl_push(t, TL_OPEN, LOG_TL_NOTE, NULL, 0);
	return t;
}

void
log_translog_line(struct log_translog *t, enum log_tl_mark mark,
    const char *line, size_t len)
{
	if (t == NULL)
		return;
	if ((mark == LOG_TL_IN || mark == LOG_TL_UP_OUT) && !t->o.commands)
		return;
	if ((mark == LOG_TL_OUT || mark == LOG_TL_UP_IN) && !t->o.replies)
		return;
	while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
		len--;
	tl_push(t, TL_LINE, mark, line, len);
}

void
log_translog_data(struct log_translog *t, const char *buf, size_t len)
{
	char note[96];

	if (t == NULL || t->o.data_max == 0 || t->data_cut)
		return;
	if (len > t->o.data_max - t->data_logged) {
		len = (size_t)(t->o.data_max - t->data_logged);
		t->data_cut = true;
	}
	if (len > 0)
		tl_push(t, TL_DATA, LOG_TL_DATA, buf, len);
	t->data_logged += len;
	if (t->data_cut) {
		int n = snprintf(note, sizeof(note), "data cut at %ju octets",
		    (uintmax_t)t->o.data_max);
		tl_push(t, TL_LINE, LOG_TL_NOTE, note, (size_t)n);
	}
}

void
log_translog_end_data(struct log_translog *t, uint64_t size)
{
	char text[64];
	int n;

	if (t == NULL || t->o.data_max == 0)
		return;
	n = snprintf(text, sizeof(text), "end of data, %ju octets",
	    (uintmax_t)size);
	tl_push(t, TL_LINE, LOG_TL_EOD, text, (size_t)n);
	t->data_logged = 0;
	t->data_cut = false;
}

void
log_translog_close(struct log_translog **tp)
{
	if (*tp == NULL)
		return;
	tl_push(*tp, TL_CLOSE, LOG_TL_NOTE, NULL, 0);	/* the writer frees it */
	*tp = NULL;
}

/* ----- the writer thread ----- */

static void
tl_warn(const struct log_translog *t, const char *call, int err)
{
	log_msg(LOG_LVL_WARN, "transaction-log %s(%s/%s): %s; the rest of "
	    "this session's log is dropped", call, t->o.dir, t->name,
	    strerror(err));
}

/* The cap of t's folder, made when the folder is first seen. */
static struct tl_dir *
tl_dir_find(struct log_translog_writer *w, const struct log_translog *t)
{
	struct tl_dir *d;
	const char *err = NULL;

	for (d = w->dirs; d != NULL; d = d->next)
		if (strcmp(d->path, t->o.dir) == 0) {
			util_capdir_set_max(d->cap, t->o.total_max);
			return d;
		}
	struct util_capdir *cap = util_capdir_new(t->o.dir, t->o.total_max,
	    &err);
	if (cap == NULL) {
		log_msg(LOG_LVL_WARN, "transaction-log folder %s", err);
		return NULL;
	}
	d = xcalloc(1, sizeof(*d));
	d->path = xstrdup(t->o.dir);
	d->cap = cap;
	d->next = w->dirs;
	w->dirs = d;
	return d;
}

static void
tl_open(struct log_translog_writer *w, struct log_translog *t)
{
	int flags = O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW;
	int fd;

	if ((t->dir = tl_dir_find(w, t)) == NULL)
		return;
	fd = openat(util_capdir_fd(t->dir->cap), t->name, flags, 0600);
	if (fd == -1 && util_capdir_remade(t->dir->cap))
		fd = openat(util_capdir_fd(t->dir->cap), t->name, flags, 0600);
	if (fd == -1 || (t->f = fdopen(fd, "w")) == NULL) {
		tl_warn(t, "open", errno);
		if (fd != -1)
			close(fd);
		return;
	}
	t->cf = util_capdir_open(t->dir->cap, t->name);
}

/* Write one whole line (text already made safe where it must be). */
static void
tl_write(struct log_translog_writer *w, struct log_translog *t, uint64_t us,
    enum log_tl_mark mark, const char *text, size_t len)
{
	char stamp[40];
	time_t sec = (time_t)(us / 1000000);
	struct tm tm;
	size_t need;

	if (t->f == NULL || t->capped)
		return;
	gmtime_r(&sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
	/* "STAMP.uuuuuuZ MARK TEXT\n" */
	need = strlen(stamp) + 8 + strlen(tl_marks[mark]) + len + 3;
	if (need > t->o.file_max - TL_NOTE_ROOM - t->written) {
		t->capped = true;
		text = "file size cap reached: the rest is not logged";
		len = strlen(text);
		mark = LOG_TL_NOTE;
		need = strlen(stamp) + 8 + strlen(tl_marks[mark]) + len + 3;
	}
	if (fprintf(t->f, "%s.%06uZ %s ", stamp, (unsigned)(us % 1000000),
	    tl_marks[mark]) < 0 || fwrite(text, 1, len, t->f) != len ||
	    putc('\n', t->f) == EOF) {
		tl_warn(t, "write", errno);
		fclose(t->f);
		t->f = NULL;
		return;
	}
	t->written += need;
	util_capdir_grow(t->dir->cap, t->cf, need);
	if (!t->dirty) {
		t->dirty = true;
		if (w->ndirty == w->dirty_cap) {
			w->dirty_cap = w->dirty_cap * 2 + 8;
			w->dirty = xreallocarray(w->dirty, w->dirty_cap,
			    sizeof(*w->dirty));
		}
		w->dirty[w->ndirty++] = t;
	}
}

/* Content bytes, LF line ends: one "D" line per content line, raw. */
static void
tl_data(struct log_translog_writer *w, struct log_translog *t, uint64_t us,
    const char *p, size_t len)
{
	while (len > 0) {
		const char *lf = memchr(p, '\n', len);
		size_t n = lf != NULL ? (size_t)(lf - p) : len;
		if (t->partial.len == 0)
			t->partial_us = us;
		util_buf_add(&t->partial, p, n);
		if (lf == NULL)
			return;
		tl_write(w, t, t->partial_us, LOG_TL_DATA, t->partial.data !=
		    NULL ? t->partial.data : "", t->partial.len);
		util_buf_reset(&t->partial);
		p += n + 1;
		len -= n + 1;
	}
}

static void
tl_flush_partial(struct log_translog_writer *w, struct log_translog *t)
{
	if (t->partial.len > 0)
		tl_write(w, t, t->partial_us, LOG_TL_DATA, t->partial.data,
		    t->partial.len);
	util_buf_reset(&t->partial);
}

static void
tl_close(struct log_translog_writer *w, struct log_translog *t)
{
	tl_flush_partial(w, t);
	for (size_t i = 0; i < w->ndirty; i++)
		if (w->dirty[i] == t)
			w->dirty[i] = w->dirty[--w->ndirty];
	if (t->f != NULL && fclose(t->f) == EOF)
		tl_warn(t, "close", errno);
	if (t->dir != NULL)
		util_capdir_close(t->dir->cap, &t->cf);
	util_buf_clear(&t->partial);
	free((char *)t->o.dir);
	free(t);
}

static void
tl_run(struct log_translog_writer *w, struct tl_rec *r, uint64_t dropped)
{
	struct log_translog *t = r->t;
	char note[80];

	if (dropped > 0) {
		int n = snprintf(note, sizeof(note), "%ju octets not logged: "
		    "the writer was behind", (uintmax_t)dropped);
		tl_write(w, t, r->us, LOG_TL_NOTE, note, (size_t)n);
	}
	switch (r->kind) {
	case TL_OPEN:
		tl_open(w, t);
		break;
	case TL_LINE:
		tl_flush_partial(w, t);		/* a line ends the content's */
		/* Whole: at most four octets a byte, and the room to spare
		 * log_safe_into wants, so it never cuts. */
		util_buf_reset(&w->safe);
		util_buf_reserve(&w->safe, 4 * r->len + 8);
		log_safe_into(w->safe.data, w->safe.cap, r->bytes, r->len);
		tl_write(w, t, r->us, r->mark, w->safe.data,
		    strlen(w->safe.data));
		break;
	case TL_DATA:
		tl_data(w, t, r->us, r->bytes, r->len);
		break;
	case TL_CLOSE:
		tl_close(w, t);
		break;
	}
}

static void
tl_flush(struct log_translog_writer *w)
{
	for (size_t i = 0; i < w->ndirty; i++) {
		struct log_translog *t = w->dirty[i];
		t->dirty = false;
		if (t->f != NULL && fflush(t->f) == EOF) {
			tl_warn(t, "write", errno);
			fclose(t->f);
			t->f = NULL;
		}
	}
	w->ndirty = 0;
}

static void *
tl_main(void *arg)
{
	struct log_translog_writer *w = arg;

	pthread_mutex_lock(&w->mu);
	for (;;) {
		while (w->head == NULL && !w->stop)
			pthread_cond_wait(&w->cv, &w->mu);
		if (w->head == NULL)
			break;
		struct tl_rec *r = w->head;
		w->head = r->next;
		if (w->head == NULL)
			w->tail = NULL;
		w->queued -= r->len;
		uint64_t dropped = r->t->dropped;
		r->t->dropped = 0;
		bool last = w->head == NULL;
		pthread_mutex_unlock(&w->mu);
		tl_run(w, r, dropped);
		free(r);
		if (last)
			tl_flush(w);	/* the queue ran dry: to the kernel */
		pthread_mutex_lock(&w->mu);
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

void
log_translog_writer_free(struct log_translog_writer **wp)
{
	struct log_translog_writer *w = *wp;

	if (w == NULL)
		return;
	pthread_mutex_lock(&w->mu);
	w->stop = true;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
	if (w->started)
		pthread_join(w->thread, NULL);	/* it wrote everything */
	while (w->dirs != NULL) {
		struct tl_dir *d = w->dirs;
		w->dirs = d->next;
		util_capdir_free(&d->cap);
		free(d->path);
		free(d);
	}
	free(w->dirty);
	util_buf_clear(&w->safe);
	pthread_cond_destroy(&w->cv);
	pthread_mutex_destroy(&w->mu);
	free(w);
	*wp = NULL;
}
