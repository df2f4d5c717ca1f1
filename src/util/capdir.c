/*
 * util/capdir.c: a folder of files with a cap on their total size, oldest
 * removed first (transaction logs, kept messages).  Files being written
 * count but are never removed; a whole file over the cap on its own is
 * refused.  A folder removed while in use is made again.  Thread-safe.
 * Blocks on the disk: for threads that may block, never an event loop.
 */
#include "util/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct util_capfile {
	char			*name;		/* owned */
	uint64_t		 size;
	int64_t			 mtime_ns;	/* for the first ordering only */
	bool			 busy;		/* being written: never removed */
	struct util_capfile	*prev, *next;	/* oldest first */
};

struct util_capdir {
	pthread_mutex_t		 mu;
	char			*path;		/* owned */
	int			 dirfd;
	uint64_t		 max_bytes;
	uint64_t		 total;
	uint64_t		 removed;	/* files removed, ever */
	struct util_capfile	*head, *tail;
};

static void
util_capdir_append(struct util_capdir *d, struct util_capfile *f)
{
	f->prev = d->tail;
	f->next = NULL;
	if (d->tail != NULL)
		d->tail->next = f;
	else
		d->head = f;
	d->tail = f;
	d->total += f->size;
}

static void
util_capdir_forget(struct util_capdir *d, struct util_capfile *f)
{
	if (f->prev != NULL)
		f->prev->next = f->next;
	else
		d->head = f->next;
	if (f->next != NULL)
		f->next->prev = f->prev;
	else
		d->tail = f->prev;
	d->total -= f->size;
	free(f->name);
	free(f);
}

/* Remove the oldest files not being written until the total fits (mu held). */
static void
util_capdir_prune(struct util_capdir *d)
{
	struct util_capfile *f = d->head, *next;

	for (; f != NULL && d->total > d->max_bytes; f = next) {
		next = f->next;
		if (f->busy)
			continue;
		if (unlinkat(d->dirfd, f->name, 0) == -1 && errno != ENOENT)
			continue;	/* not ours to remove: leave it */
		util_capdir_forget(d, f);
		d->removed++;
	}
}

static int
util_capfile_cmp(const void *a, const void *b)
{
	const struct util_capfile *x = *(struct util_capfile *const *)a;
	const struct util_capfile *y = *(struct util_capfile *const *)b;

	if (x->mtime_ns != y->mtime_ns)
		return x->mtime_ns < y->mtime_ns ? -1 : 1;
	return strcmp(x->name, y->name);
}

/* What the folder holds already: its regular files, oldest first. */
static void
util_capdir_scan(struct util_capdir *d)
{
	struct util_capfile **v = NULL;
	size_t n = 0;
	struct dirent *e;
	struct stat st;
	int fd = dup(d->dirfd);
	DIR *dir = fd == -1 ? NULL : fdopendir(fd);

	if (dir == NULL) {
		if (fd != -1)
			close(fd);
		return;
	}
	while ((e = readdir(dir)) != NULL) {
		if (fstatat(d->dirfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) ==
		    -1 || !S_ISREG(st.st_mode))
			continue;
		struct util_capfile *f = xcalloc(1, sizeof(*f));
		f->name = xstrdup(e->d_name);
		f->size = (uint64_t)st.st_size;
		f->mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 +
		    st.st_mtim.tv_nsec;
		v = xreallocarray(v, n + 1, sizeof(*v));
		v[n++] = f;
	}
	closedir(dir);
	if (n > 0)
		qsort(v, n, sizeof(*v), util_capfile_cmp);
	for (size_t i = 0; i < n; i++)
		util_capdir_append(d, v[i]);
	free(v);
}

struct util_capdir *
util_capdir_new(const char *dir, uint64_t max_bytes, const char **err_out)
{
	struct util_capdir *d;
	int fd;

	if (util_mkdirs(dir, 0700) == -1 || (fd = open(dir, O_RDONLY |
	    O_DIRECTORY | O_CLOEXEC)) == -1) {
		*err_out = util_err("%s: %s", dir, strerror(errno));
		return NULL;
	}
	d = xcalloc(1, sizeof(*d));
	pthread_mutex_init(&d->mu, NULL);
	d->path = xstrdup(dir);
	d->dirfd = fd;
	d->max_bytes = max_bytes;
	util_capdir_scan(d);
	util_capdir_prune(d);
	return d;
}

void
util_capdir_set_max(struct util_capdir *d, uint64_t max_bytes)
{
	pthread_mutex_lock(&d->mu);
	d->max_bytes = max_bytes;
	util_capdir_prune(d);
	pthread_mutex_unlock(&d->mu);
}

struct util_capfile *
util_capdir_open(struct util_capdir *d, const char *name)
{
	struct util_capfile *f = xcalloc(1, sizeof(*f));

	f->name = xstrdup(name);
	f->busy = true;
	pthread_mutex_lock(&d->mu);
	util_capdir_append(d, f);
	pthread_mutex_unlock(&d->mu);
	return f;
}

void
util_capdir_grow(struct util_capdir *d, struct util_capfile *f, uint64_t n)
{
	pthread_mutex_lock(&d->mu);
	f->size += n;
	d->total += n;
	if (d->total > d->max_bytes)
		util_capdir_prune(d);
	pthread_mutex_unlock(&d->mu);
}

void
util_capdir_close(struct util_capdir *d, struct util_capfile **fp)
{
	if (*fp == NULL)
		return;
	pthread_mutex_lock(&d->mu);
	(*fp)->busy = false;
	util_capdir_prune(d);
	pthread_mutex_unlock(&d->mu);
	*fp = NULL;
}

int
util_capdir_add(struct util_capdir *d, const char *name, uint64_t size,
    const char **err_out)
{
	struct util_capfile *f;

	pthread_mutex_lock(&d->mu);
	/* It would push every other file out, then go itself. */
	if (size > d->max_bytes) {
		*err_out = util_err("%s/%s: %ju octets, more than the folder's "
		    "cap of %ju", d->path, name, (uintmax_t)size,
		    (uintmax_t)d->max_bytes);
		pthread_mutex_unlock(&d->mu);
		return -1;
	}
	f = xcalloc(1, sizeof(*f));
	f->name = xstrdup(name);
	f->size = size;
	util_capdir_append(d, f);
	util_capdir_prune(d);
	pthread_mutex_unlock(&d->mu);
	return 0;
}

bool
util_capdir_remade(struct util_capdir *d)
{
	struct stat st;
	int fd = -1, e;

	if (errno != ENOENT)
		return false;
	pthread_mutex_lock(&d->mu);
	if (fstat(d->dirfd, &st) == -1 || st.st_nlink != 0) {
		pthread_mutex_unlock(&d->mu);
		errno = ENOENT;		/* the folder is there: not its fault */
		return false;
	}
	/*
	 * dup3 replaces the descriptor in one step: a thread between
	 * util_capdir_fd() and its openat() uses the old folder or the new
	 * one, never another file.
	 */
	if (util_mkdirs(d->path, 0700) == -1 || (fd = open(d->path, O_RDONLY |
	    O_DIRECTORY | O_CLOEXEC)) == -1 || dup3(fd, d->dirfd,
	    O_CLOEXEC) == -1) {
		e = errno;
		if (fd != -1)
			close(fd);
		pthread_mutex_unlock(&d->mu);
		errno = e;
		return false;
	}
	close(fd);
	/* What the folder held went with it; files being written count
	 * until they are closed. */
	for (struct util_capfile *f = d->head, *next; f != NULL; f = next) {
		next = f->next;
		if (!f->busy)
			util_capdir_forget(d, f);
	}
	util_capdir_scan(d);
	util_capdir_prune(d);
	pthread_mutex_unlock(&d->mu);
	return true;
}

int
util_capdir_fd(const struct util_capdir *d)
{
	return d->dirfd;
}

const char *
util_capdir_path(const struct util_capdir *d)
{
	return d->path;
}

uint64_t
util_capdir_total(struct util_capdir *d, uint64_t *removed_out)
{
	uint64_t t;

	pthread_mutex_lock(&d->mu);
	t = d->total;
	if (removed_out != NULL)
		*removed_out = d->removed;
	pthread_mutex_unlock(&d->mu);
	return t;
}

void
util_capdir_free(struct util_capdir **dp)
{
	struct util_capdir *d = *dp;

	if (d == NULL)
		return;
	while (d->head != NULL)
		util_capdir_forget(d, d->head);
	close(d->dirfd);
	pthread_mutex_destroy(&d->mu);
	free(d->path);
	free(d);
	*dp = NULL;
}
