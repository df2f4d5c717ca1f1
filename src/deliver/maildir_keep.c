/*
 * deliver/maildir_keep.c: the Maildirs each thread keeps open between
 * deliveries, least recently used out first: at most DELIVER_MD_THREAD_FDS
 * descriptors a thread, and all threads together at most the process's
 * limit (deliver_maildir_keep_limit).  Each use checks first that the
 * folder path still leads to what is kept (see maildir.c).  Knows nothing
 * of how a copy is written.
 */
#include "deliver/deliver.h"
#include "deliver/deliver_private.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/util.h"

/* This thread's Maildirs: each holds new/, and tmp/ once written through. */
struct md_keep {
	struct deliver_md_dir	*d[DELIVER_MD_THREAD_FDS];
	size_t			 n;
	size_t			 fds;	/* held by d[0..n) */
	uint64_t		 tick;	/* for least recently used */
};

static _Atomic size_t	md_keep_total;	/* all threads' fds kept */
static _Atomic size_t	md_keep_max = DELIVER_MD_KEEP_MAX;
static pthread_key_t	md_keep_key;
static pthread_once_t	md_keep_once = PTHREAD_ONCE_INIT;

void
deliver_maildir_keep_limit(size_t fds)
{
	atomic_store(&md_keep_max, fds < DELIVER_MD_KEEP_MAX ? fds :
	    DELIVER_MD_KEEP_MAX);
}

static size_t
md_dir_fds(const struct deliver_md_dir *d)
{
	return (d->new_fd != -1) + (d->tmp_fd != -1);
}

static void
md_dir_free(struct deliver_md_dir *d)
{
	if (d->new_fd != -1)
		close(d->new_fd);
	if (d->tmp_fd != -1)
		close(d->tmp_fd);
	free(d->folder);
	free(d->new_path);
	free(d);
}

/* Take d out of k (its descriptors no longer count); d stays open. */
static void
md_keep_remove(struct md_keep *k, struct deliver_md_dir *d)
{
	for (size_t i = 0; i < k->n; i++)
		if (k->d[i] == d) {
			k->d[i] = k->d[--k->n];
			k->fds -= md_dir_fds(d);
			atomic_fetch_sub(&md_keep_total, md_dir_fds(d));
			d->kept = false;
			return;
		}
}

static void
md_keep_free(void *arg)
{
	struct md_keep *k = arg;

	while (k->n > 0) {
		struct deliver_md_dir *d = k->d[0];

		md_keep_remove(k, d);
		md_dir_free(d);
	}
	free(k);
}

static void
md_keep_init(void)
{
	if (pthread_key_create(&md_keep_key, md_keep_free) != 0)
		fatal("pthread_key_create failed");
}

static struct md_keep *
md_keep_get(void)
{
	struct md_keep *k;

	pthread_once(&md_keep_once, md_keep_init);
	if ((k = pthread_getspecific(md_keep_key)) == NULL) {
		k = xcalloc(1, sizeof(*k));
		pthread_setspecific(md_keep_key, k);
	}
	return k;
}

/* Close k's least recently used Maildir not in use: false if none. */
static bool
md_keep_evict(struct md_keep *k)
{
	struct deliver_md_dir *old = NULL;

	for (size_t i = 0; i < k->n; i++)
		if (!k->d[i]->busy && (old == NULL ||
		    k->d[i]->used < old->used))
			old = k->d[i];
	if (old == NULL)
		return false;
	md_keep_remove(k, old);
	md_dir_free(old);
	return true;
}

/* Room for want more descriptors in k (counted now), evicting: bool. */
static bool
md_keep_fit(struct md_keep *k, size_t want)
{
	for (;;) {
		if (k->fds + want <= DELIVER_MD_THREAD_FDS) {
			size_t was = atomic_fetch_add(&md_keep_total, want);

			if (was + want <= atomic_load(&md_keep_max)) {
				k->fds += want;
				return true;
			}
			atomic_fetch_sub(&md_keep_total, want);
		}
		if (!md_keep_evict(k))
			return false;
	}
}

/*
 * The folder path's new/ must be our new/ (the path followed as an open
 * follows it, symlinks to the folder included; new itself not): a
 * directory has one parent, so the folder then leads to the Maildir we
 * hold, whatever its inode number.  Our descriptor keeps new/ alive, so
 * its number cannot have been reused meanwhile.
 */
static bool
md_dir_is_current(const struct deliver_md_dir *d)
{
	struct stat st;

	return fstatat(AT_FDCWD, d->new_path, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	    st.st_dev == d->dev && st.st_ino == d->new_ino;
}

struct deliver_md_dir *
deliver_md_find(const char *folder)
{
	struct md_keep *k = md_keep_get();
	struct deliver_md_dir *d = NULL;

	/* A lowered limit (a reload) shrinks the kept ones as they are used. */
	while (atomic_load(&md_keep_total) > atomic_load(&md_keep_max) &&
	    md_keep_evict(k))
		;
	for (size_t i = 0; i < k->n && d == NULL; i++)
		if (!k->d[i]->busy && strcmp(k->d[i]->folder, folder) == 0)
			d = k->d[i];
	if (d == NULL)
		return NULL;
	if (!md_dir_is_current(d)) {
		md_keep_remove(k, d);
		md_dir_free(d);
		return NULL;
	}
	d->busy = true;
	d->used = ++k->tick;
	return d;
}

struct deliver_md_dir *
deliver_md_add(const char *folder, int new_fd, int tmp_fd, bool ordered,
    const struct stat *new_st)
{
	struct md_keep *k = md_keep_get();
	struct deliver_md_dir *d = xcalloc(1, sizeof(*d));

	d->folder = xstrdup(folder);
	d->new_path = xasprintf("%s/new", folder);
	d->new_fd = new_fd;
	d->tmp_fd = tmp_fd;
	d->dev = new_st->st_dev;
	d->new_ino = new_st->st_ino;
	d->ordered = ordered;
	d->busy = true;
	d->used = ++k->tick;
	if (md_keep_fit(k, md_dir_fds(d))) {
		/* Each holds one at least: room for the descriptors is room
		 * in d[]. */
		k->d[k->n++] = d;
		d->kept = true;
	}
	return d;
}

int
deliver_md_tmp(struct deliver_md_dir *d)
{
	struct md_keep *k = md_keep_get();

	if (d->tmp_fd != -1)
		return d->tmp_fd;
	/* No room for one more: this one goes after its delivery. */
	if (d->kept && !md_keep_fit(k, 1))
		md_keep_remove(k, d);
	/* new/ was just checked to be the folder's: its parent is ours. */
	d->tmp_fd = openat(d->new_fd, "../tmp", O_RDONLY | O_DIRECTORY |
	    O_NOFOLLOW | O_CLOEXEC);
	if (d->tmp_fd == -1 && d->kept) {
		k->fds--;
		atomic_fetch_sub(&md_keep_total, 1);
	}
	return d->tmp_fd;
}

void
deliver_md_release(struct deliver_md_dir **dp, bool keep)
{
	struct deliver_md_dir *d = *dp;

	if (d == NULL)
		return;
	*dp = NULL;
	d->busy = false;
	if (keep && d->kept)
		return;
	if (d->kept)
		md_keep_remove(md_keep_get(), d);
	md_dir_free(d);
}
