/*
 * table/table_mem.c: the memory kinds.  An inline table is a set of keys
 * from the config; a "file:" table is a key/value file that a thread of
 * its own re-reads when it changes (stat at most once a recheck period),
 * so no event loop ever touches the disk.  Keys are kept lower-cased in an
 * open-addressing hash; readers take a read lock, a reload swaps the maps.
 */
#include "table/table.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include "config/config.h"
#include "log/log.h"
#include "metrics/metrics.h"
#include "table/table_private.h"
#include "util/util.h"

struct mem_ent {
	char	*key;		/* owned, lower-cased; NULL: empty slot */
	char	*value;		/* owned; "" when none */
};

/* Open addressing, linear probing, at most half full. */
struct mem_map {
	struct mem_ent	*ents;	/* owned array of cap slots */
	size_t		 cap;	/* a power of two, or 0 */
	size_t		 n;
};

/* What identifies the file we read: a change in any means re-read it. */
struct mem_ident {
	dev_t		dev;
	ino_t		ino;
	off_t		size;
	struct timespec	mtime, ctime;
};

struct mem {
	struct table		*t;		/* borrowed: owner */
	pthread_rwlock_t	 lock;		/* keys and domains */
	struct mem_map		 keys;
	struct mem_map		 domains;	/* domains of "x@dom" keys */
	/* file tables: the reload thread and its state */
	pthread_t		 thread;
	bool			 have_thread;
	pthread_mutex_t		 mu;		/* stop, recheck_ms */
	pthread_cond_t		 cv;
	bool			 stop;
	uint64_t		 recheck_ms;
	struct mem_ident	 ident;		/* of the contents we hold */
	struct mem_ident	 bad;		/* last version we failed on */
	bool			 have_bad;
	bool			 stat_failed;	/* warned that stat failed */
};

static uint64_t
mem_hash(const char *s)
{
	uint64_t h = 1469598103934665603ULL;	/* FNV-1a */

	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;
		if (c >= 'A' && c <= 'Z')
			c = (unsigned char)(c - 'A' + 'a');
		h = (h ^ c) * 1099511628211ULL;
	}
	return h;
}

/* The slot holding key, or the empty slot where it would go. */
static struct mem_ent *
mem_map_slot(const struct mem_map *m, const char *key)
{
	size_t i = (size_t)mem_hash(key) & (m->cap - 1);

	while (m->ents[i].key != NULL && strcasecmp(m->ents[i].key, key) != 0)
		i = (i + 1) & (m->cap - 1);
	return &m->ents[i];
}

static const struct mem_ent *
mem_map_get(const struct mem_map *m, const char *key)
{
	if (m->cap == 0)
		return NULL;
	const struct mem_ent *e = mem_map_slot(m, key);
	return e->key != NULL ? e : NULL;
}

static void
mem_map_grow(struct mem_map *m)
{
	struct mem_map old = *m;

	m->cap = old.cap == 0 ? 16 : old.cap * 2;
	m->ents = xcalloc(m->cap, sizeof(*m->ents));
	for (size_t i = 0; i < old.cap; i++)
		if (old.ents[i].key != NULL)
			*mem_map_slot(m, old.ents[i].key) = old.ents[i];
	free(old.ents);
}

/* Add key (copied, lower-cased) and value; false if key was there: kept. */
static bool
mem_map_put(struct mem_map *m, const char *key, const char *value)
{
	if (m->n + 1 > m->cap / 2)
		mem_map_grow(m);
	struct mem_ent *e = mem_map_slot(m, key);
	if (e->key != NULL)
		return false;
	e->key = util_strlower(xstrdup(key));
	e->value = xstrdup(value);
	m->n++;
	return true;
}

static void
mem_map_clear(struct mem_map *m)
{
	for (size_t i = 0; i < m->cap; i++) {
		free(m->ents[i].key);
		free(m->ents[i].value);
	}
	free(m->ents);
	memset(m, 0, sizeof(*m));
}

/* Add a key and, for "user@dom" and "@dom", its domain. */
static bool
mem_add(struct mem_map *keys, struct mem_map *domains, const char *key,
    const char *value)
{
	const char *at = strrchr(key, '@');

	if (!mem_map_put(keys, key, value))
		return false;
	if (at != NULL && at[1] != '\0')
		(void)mem_map_put(domains, at + 1, "");
	return true;
}

static void
mem_ident_of(const struct stat *st, struct mem_ident *id)
{
	memset(id, 0, sizeof(*id));
	id->dev = st->st_dev;
	id->ino = st->st_ino;
	id->size = st->st_size;
	id->mtime = st->st_mtim;
	id->ctime = st->st_ctim;
}

static bool
mem_ident_eq(const struct mem_ident *a, const struct mem_ident *b)
{
	return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
	    a->mtime.tv_sec == b->mtime.tv_sec &&
	    a->mtime.tv_nsec == b->mtime.tv_nsec &&
	    a->ctime.tv_sec == b->ctime.tv_sec &&
	    a->ctime.tv_nsec == b->ctime.tv_nsec;
}

/*
 * Parse one line of a table file into keys: "key value", "key: value",
 * "key"; blank lines and lines starting with '#' are skipped.
 */
static void
mem_parse_line(struct mem *m, char *line, unsigned lineno,
    struct mem_map *keys, struct mem_map *domains)
{
	size_t len = strlen(line);
	char *key, *value, *end;

	while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r' ||
	    line[len - 1] == ' ' || line[len - 1] == '\t'))
		line[--len] = '\0';
	key = line + strspn(line, " \t");
	if (*key == '\0' || *key == '#')
		return;
	end = key + strcspn(key, " \t");
	value = end + strspn(end, " \t");
	*end = '\0';
	if (end > key + 1 && end[-1] == ':')
		end[-1] = '\0';		/* "key: value" */
	if (!mem_add(keys, domains, key, value))
		log_msg(LOG_LVL_WARN, "table=%s file=%s line=%u: duplicate key, "
		    "the first is kept", m->t->name, m->t->path, lineno);
}

/* Read the file into fresh maps; 0, or -1 with *err_out. */
static int
mem_read(struct mem *m, struct mem_map *keys, struct mem_map *domains,
    struct mem_ident *id, const char **err_out)
{
	const char *path = m->t->path;
	struct stat st;
	char *line = NULL;
	size_t cap = 0;
	unsigned lineno = 0;
	FILE *f;

	memset(keys, 0, sizeof(*keys));
	memset(domains, 0, sizeof(*domains));
	if ((f = fopen(path, "r")) == NULL)
		goto fail;
	if (fstat(fileno(f), &st) == -1)
		goto fail;
	if (!S_ISREG(st.st_mode)) {
		errno = EINVAL;
		goto fail;
	}
	mem_ident_of(&st, id);
	errno = 0;
	while (getline(&line, &cap, f) != -1)
		mem_parse_line(m, line, ++lineno, keys, domains);
	if (ferror(f))
		goto fail;
	free(line);
	fclose(f);
	return 0;
fail:
	*err_out = util_err("table %s: %s: %s", m->t->name, path,
	    errno == EINVAL ? "not a regular file" : strerror(errno));
	free(line);
	if (f != NULL)
		fclose(f);
	mem_map_clear(keys);
	mem_map_clear(domains);
	return -1;
}

/* On the reload thread: re-read the file if it changed. */
static void
mem_refresh(struct mem *m)
{
	struct mem_map keys, domains, old_keys, old_domains;
	struct mem_ident id;
	struct stat st;
	const char *err;

	if (stat(m->t->path, &st) == -1) {
		if (!m->stat_failed) {
			log_msg(LOG_LVL_WARN, "table=%s stat(%s): %s; keeping "
			    "the old contents", m->t->name, m->t->path,
			    strerror(errno));
			metrics_inc(MET_TABLE_ERRORS, 0, 0);
		}
		m->stat_failed = true;
		return;
	}
	m->stat_failed = false;
	mem_ident_of(&st, &id);
	if (mem_ident_eq(&id, &m->ident) ||
	    (m->have_bad && mem_ident_eq(&id, &m->bad)))
		return;
	if (mem_read(m, &keys, &domains, &id, &err) == -1) {
		/* Warn once per version of the file, not once a second. */
		log_msg(LOG_LVL_WARN, "%s; keeping the old contents", err);
		metrics_inc(MET_TABLE_ERRORS, 0, 0);
		m->bad = id;
		m->have_bad = true;
		return;
	}
	pthread_rwlock_wrlock(&m->lock);
	old_keys = m->keys;
	old_domains = m->domains;
	m->keys = keys;
	m->domains = domains;
	pthread_rwlock_unlock(&m->lock);
	mem_map_clear(&old_keys);
	mem_map_clear(&old_domains);
	m->ident = id;
	m->have_bad = false;
	log_msg(LOG_LVL_INFO, "table=%s file=%s reloaded keys=%zu",
	    m->t->name, m->t->path, keys.n);
}

static void *
mem_reload_main(void *arg)
{
	struct mem *m = arg;
	struct timespec ts;

	pthread_mutex_lock(&m->mu);
	while (!m->stop) {
		uint64_t ms = m->recheck_ms > 10 ? m->recheck_ms : 10;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += (time_t)(ms / 1000);
		ts.tv_nsec += (long)(ms % 1000) * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&m->cv, &m->mu, &ts);
		if (m->stop)
			break;
		pthread_mutex_unlock(&m->mu);
		mem_refresh(m);
		pthread_mutex_lock(&m->mu);
	}
	pthread_mutex_unlock(&m->mu);
	return NULL;
}

static struct mem *
mem_new(struct table *t)
{
	struct mem *m = xcalloc(1, sizeof(*m));

	m->t = t;
	m->recheck_ms = 1000;
	if (pthread_rwlock_init(&m->lock, NULL) != 0 ||
	    pthread_mutex_init(&m->mu, NULL) != 0 ||
	    pthread_cond_init(&m->cv, NULL) != 0)
		fatal("pthread init failed");
	t->priv = m;
	return m;
}

static int
mem_inline_open(struct table *t, const char **err_out)
{
	struct mem *m = mem_new(t);

	(void)err_out;
	for (char **it = t->items; it != NULL && *it != NULL; it++)
		(void)mem_add(&m->keys, &m->domains, *it, "");
	return 0;
}

static int
mem_file_open(struct table *t, const char **err_out)
{
	struct mem *m = mem_new(t);

	if (mem_read(m, &m->keys, &m->domains, &m->ident, err_out) == -1)
		return -1;
	if (pthread_create(&m->thread, NULL, mem_reload_main, m) != 0)
		fatal("table %s: cannot start its reload thread", t->name);
	m->have_thread = true;
	return 0;
}

static void
mem_close(struct table *t)
{
	struct mem *m = t->priv;

	if (m == NULL)
		return;
	if (m->have_thread) {
		pthread_mutex_lock(&m->mu);
		m->stop = true;
		pthread_cond_signal(&m->cv);
		pthread_mutex_unlock(&m->mu);
		pthread_join(m->thread, NULL);
	}
	mem_map_clear(&m->keys);
	mem_map_clear(&m->domains);
	pthread_rwlock_destroy(&m->lock);
	pthread_mutex_destroy(&m->mu);
	pthread_cond_destroy(&m->cv);
	free(m);
	t->priv = NULL;
}

static int
mem_get(struct table *t, void *conn, const char *key, uint64_t deadline_ms,
    struct table_values *out, const char **err_out)
{
	struct mem *m = t->priv;
	const struct mem_ent *e;

	(void)conn;
	(void)deadline_ms;
	(void)err_out;
	pthread_rwlock_rdlock(&m->lock);
	if ((e = mem_map_get(&m->keys, key)) != NULL)
		table_values_add(out, e->value, strlen(e->value));
	pthread_rwlock_unlock(&m->lock);
	return e != NULL;
}

static bool
mem_has_domain(struct table *t, const char *domain)
{
	struct mem *m = t->priv;
	bool found;

	pthread_rwlock_rdlock(&m->lock);
	found = mem_map_get(&m->domains, domain) != NULL;
	pthread_rwlock_unlock(&m->lock);
	return found;
}

void
table_set_recheck_ms(struct table *t, uint64_t ms)
{
	struct mem *m = t->priv;

	pthread_mutex_lock(&m->mu);
	m->recheck_ms = ms;
	pthread_cond_signal(&m->cv);
	pthread_mutex_unlock(&m->mu);
}

const struct table_engine table_inline_engine = {
	.name = "inline", .memory = true, .open_fn = mem_inline_open,
	.close_fn = mem_close, .get_fn = mem_get,
	.has_domain_fn = mem_has_domain,
};

const struct table_engine table_file_engine = {
	.name = "file", .memory = true, .open_fn = mem_file_open,
	.close_fn = mem_close, .get_fn = mem_get,
	.has_domain_fn = mem_has_domain,
};
