/*
 * deliver/maildir_sweep.c: removes what a crash leaves in the tmp/ of the
 * Maildirs we deliver into, as the Maildir convention says: a file in tmp/
 * not read or written for 36 hours is not supposed to be there.  Knows
 * nothing of the queue; maildir.c tells it which folders it uses and which
 * tmp/ names its deliveries are writing.
 *
 * A folder is swept on its first delivery after start, then hourly while
 * mail keeps coming (a folder with no delivery for an hour is forgotten
 * until the next one); one written as its owner, by the helper's child
 * that exits after it, is swept by that child at each delivery instead
 * (deliver_maildir_sweep_now).  One thread does it, off the event loops and the
 * delivery threads.  A pass reads at most MD_SWEEP_ENTRIES entries of one
 * tmp/ (a longer one goes on from there in a later pass) and then pauses
 * in proportion, so a huge tmp/ never takes the disk from deliveries.
 *
 * Our own deliveries are never raced: each registers its tmp/ name before
 * it creates the file and until the file is in new/, and the sweep checks
 * and unlinks under the same lock.  Other writers' files are judged by age
 * alone, as the convention says.
 */
#include "deliver/deliver.h"
#include "deliver/deliver_private.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log/log.h"
#include "util/util.h"

#define MD_TMP_MAX_AGE_S	(36 * 3600)	/* the Maildir convention */
#define MD_SWEEP_INTERVAL_MS	(3600 * 1000)	/* per folder in use */
#define MD_SWEEP_ENTRIES	1000		/* tmp/ entries per pass */
#define MD_SWEEP_FOLDERS_MAX	65536		/* folders remembered */
#define MD_SWEEP_SCAN_MS	(60 * 1000)	/* look for due folders */

struct md_folder {
	struct md_folder *next;		/* hash chain */
	struct md_folder *pnext;	/* the due list */
	char		*path;		/* owned: as deliver_maildir got it */
	uint64_t	 due_ms;	/* next pass */
	long		 resume;	/* telldir of a cut pass; 0: start */
	bool		 due;		/* on the due list */
	bool		 used;		/* delivered into since the last pass */
};

static struct {
	pthread_mutex_t	  mu;
	pthread_cond_t	  cv;		/* a folder is due, or stop */
	struct md_folder **buckets;	/* owned, nbuckets chains */
	size_t		  nbuckets, nfolders;
	struct md_folder *due_head, *due_tail;
	struct deliver_md_busy *busy;	/* deliveries writing tmp/ now */
	pthread_t	  thread;
	unsigned	  users;	/* sweeper_start calls not stopped */
	bool		  stop;
	uint64_t	  next_scan_ms;	/* hourly look for due folders */
} md_sw = { .mu = PTHREAD_MUTEX_INITIALIZER };

static pthread_once_t md_sw_once = PTHREAD_ONCE_INIT;

static void
md_sw_init(void)
{
	pthread_condattr_t ca;

	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&md_sw.cv, &ca);
	pthread_condattr_destroy(&ca);
	md_sw.nbuckets = 256;
	md_sw.buckets = xcalloc(md_sw.nbuckets, sizeof(*md_sw.buckets));
}

static size_t
md_hash(const char *s, size_t nbuckets)
{
	return util_hash_str(s) & (nbuckets - 1);
}

/* Double the buckets once there are more folders than buckets. */
static void
md_grow(void)
{
	size_t n = md_sw.nbuckets * 2;
	struct md_folder **b = xcalloc(n, sizeof(*b));

	for (size_t i = 0; i < md_sw.nbuckets; i++)
		for (struct md_folder *f = md_sw.buckets[i], *nx; f != NULL;
		    f = nx) {
			nx = f->next;
			size_t h = md_hash(f->path, n);
			f->next = b[h];
			b[h] = f;
		}
	free(md_sw.buckets);
	md_sw.buckets = b;
	md_sw.nbuckets = n;
}

static void
md_due_push(struct md_folder *f)
{
	f->due = true;
	f->pnext = NULL;
	if (md_sw.due_tail != NULL)
		md_sw.due_tail->pnext = f;
	else
		md_sw.due_head = f;
	md_sw.due_tail = f;
	pthread_cond_signal(&md_sw.cv);
}

/* The folder's entry, made (and due now) if new; NULL when full. */
static struct md_folder *
md_folder_get(const char *path)
{
	size_t h = md_hash(path, md_sw.nbuckets);
	struct md_folder *f;

	for (f = md_sw.buckets[h]; f != NULL; f = f->next)
		if (strcmp(f->path, path) == 0)
			return f;
	if (md_sw.nfolders >= MD_SWEEP_FOLDERS_MAX)
		return NULL;
	f = xcalloc(1, sizeof(*f));
	f->path = xstrdup(path);
	f->next = md_sw.buckets[h];
	md_sw.buckets[h] = f;
	if (++md_sw.nfolders > md_sw.nbuckets)
		md_grow();
	md_due_push(f);
	return f;
}

void
deliver_md_busy_enter(struct deliver_md_busy *b, const char *folder,
    const char *name)
{
	struct md_folder *f;

	pthread_once(&md_sw_once, md_sw_init);
	b->name = name;
	pthread_mutex_lock(&md_sw.mu);
	if ((f = md_folder_get(folder)) != NULL)
		f->used = true;
	b->next = md_sw.busy;
	md_sw.busy = b;
	pthread_mutex_unlock(&md_sw.mu);
}

void
deliver_md_busy_leave(struct deliver_md_busy *b)
{
	pthread_mutex_lock(&md_sw.mu);
	for (struct deliver_md_busy **p = &md_sw.busy; *p != NULL;
	    p = &(*p)->next)
		if (*p == b) {
			*p = b->next;
			break;
		}
	pthread_mutex_unlock(&md_sw.mu);
}

/* Remove tmp/name unless a delivery of ours is writing it.  True: gone. */
static bool
md_unlink_stale(int tfd, const char *name)
{
	bool busy = false, gone;

	pthread_mutex_lock(&md_sw.mu);
	for (struct deliver_md_busy *b = md_sw.busy; b != NULL; b = b->next)
		busy |= strcmp(b->name, name) == 0;
	gone = !busy && unlinkat(tfd, name, 0) == 0;
	pthread_mutex_unlock(&md_sw.mu);
	return gone;
}

/*
 * One pass over folder/tmp from *resume: at most MD_SWEEP_ENTRIES entries;
 * regular files neither read nor written for MD_TMP_MAX_AGE_S go.  *resume
 * is 0 when the pass got to the end.  Returns the entries read.
 */
static size_t
md_sweep_pass(const char *folder, long *resume, unsigned *removed_out)
{
	const int dflags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
	/* As a delivery opens it: the folder may be a symlink, tmp/ not. */
	int dfd = open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC), tfd;
	time_t cutoff = time(NULL) - MD_TMP_MAX_AGE_S;
	struct dirent *de;
	struct stat st;
	size_t n = 0;
	DIR *d;

	tfd = dfd != -1 ? openat(dfd, "tmp", dflags) : -1;
	if (dfd != -1)
		close(dfd);
	if (tfd == -1 || (d = fdopendir(tfd)) == NULL) {
		if (tfd != -1)
			close(tfd);
		*resume = 0;		/* gone or unreadable: nothing to do */
		return 0;
	}
	if (*resume != 0)
		seekdir(d, *resume);
	for (;;) {
		long pos = telldir(d);
		if (n == MD_SWEEP_ENTRIES) {
			*resume = pos;
			break;
		}
		if ((de = readdir(d)) == NULL) {
			*resume = 0;
			break;
		}
		n++;
		if (fstatat(tfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == -1 ||
		    !S_ISREG(st.st_mode) || st.st_mtime > cutoff ||
		    st.st_atime > cutoff)
			continue;
		if (md_unlink_stale(tfd, de->d_name))
			(*removed_out)++;
	}
	closedir(d);
	return n;
}

/* Wait on the sweeper's condition until deadline_ms (monotonic). */
static void
md_wait_until(uint64_t deadline_ms)
{
	struct timespec ts = { .tv_sec = (time_t)(deadline_ms / 1000),
	    .tv_nsec = (long)(deadline_ms % 1000) * 1000000 };

	pthread_cond_timedwait(&md_sw.cv, &md_sw.mu, &ts);
}

/*
 * Put folders whose time came on the due list; forget those with no
 * delivery since their last pass.  Only the sweeper frees entries.
 */
static void
md_scan(uint64_t now)
{
	for (size_t i = 0; i < md_sw.nbuckets; i++) {
		struct md_folder **p = &md_sw.buckets[i];
		while (*p != NULL) {
			struct md_folder *f = *p;
			if (f->due || f->due_ms > now) {
				p = &f->next;
			} else if (!f->used) {
				*p = f->next;
				md_sw.nfolders--;
				free(f->path);
				free(f);
			} else {
				md_due_push(f);
				p = &f->next;
			}
		}
	}
}

static void
md_sweep_log(const char *folder, unsigned removed)
{
	char esc[600];

	if (removed > 0)
		log_event(LOG_LVL_INFO, "maildir-clean", NULL, NULL,
		    "folder=\"%s\" removed=%u why=\"in tmp/, untouched for 36 "
		    "hours\"", log_safe_into(esc, sizeof(esc), folder,
		    strlen(folder)), removed);
}

/* Sweep the first due folder (lock held, dropped meanwhile). */
static void
md_sweep_next(void)
{
	struct md_folder *f = md_sw.due_head;
	unsigned removed = 0;
	long resume = f->resume;
	size_t n;

	if ((md_sw.due_head = f->pnext) == NULL)
		md_sw.due_tail = NULL;
	f->due = false;
	f->used = false;
	pthread_mutex_unlock(&md_sw.mu);
	n = md_sweep_pass(f->path, &resume, &removed);
	md_sweep_log(f->path, removed);
	pthread_mutex_lock(&md_sw.mu);
	f->resume = resume;
	if (resume != 0)
		md_due_push(f);		/* the rest of a long tmp/ */
	else
		f->due_ms = util_now_ms() + MD_SWEEP_INTERVAL_MS;
	/* About 10,000 entries a second at most, whatever wakes us. */
	uint64_t until = util_now_ms() + n / 10;
	while (!md_sw.stop && util_now_ms() < until)
		md_wait_until(until);
}

static void *
md_sweeper_main(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&md_sw.mu);
	while (!md_sw.stop) {
		uint64_t now = util_now_ms();
		if (md_sw.due_head != NULL)
			md_sweep_next();
		else if (now >= md_sw.next_scan_ms) {
			md_scan(now);
			md_sw.next_scan_ms = now + MD_SWEEP_SCAN_MS;
		} else
			md_wait_until(md_sw.next_scan_ms);
	}
	pthread_mutex_unlock(&md_sw.mu);
	return NULL;
}

void
deliver_maildir_sweeper_start(void)
{
	int rc;

	pthread_once(&md_sw_once, md_sw_init);
	pthread_mutex_lock(&md_sw.mu);
	if (md_sw.users++ == 0) {
		md_sw.stop = false;
		md_sw.next_scan_ms = util_now_ms() + MD_SWEEP_SCAN_MS;
		rc = pthread_create(&md_sw.thread, NULL, md_sweeper_main, NULL);
		if (rc != 0)
			fatal("maildir sweeper: pthread_create: %s",
			    strerror(rc));
	}
	pthread_mutex_unlock(&md_sw.mu);
}

void
deliver_maildir_sweeper_stop(void)
{
	bool join = false;

	pthread_mutex_lock(&md_sw.mu);
	if (md_sw.users > 0 && --md_sw.users == 0) {
		md_sw.stop = true;
		pthread_cond_signal(&md_sw.cv);
		join = true;
	}
	pthread_mutex_unlock(&md_sw.mu);
	if (join)
		pthread_join(md_sw.thread, NULL);
}

void
deliver_maildir_sweep_now(const char *folder)
{
	long resume = 0;
	unsigned removed = 0;

	pthread_once(&md_sw_once, md_sw_init);
	(void)md_sweep_pass(folder, &resume, &removed);
	md_sweep_log(folder, removed);
}
