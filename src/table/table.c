/*
 * table/table.c: lookup tables.  An inline table is a set of keys from the
 * config; a "file:" table is a key/value file, re-read when it changes.
 * Keys are kept lower-cased in an open-addressing hash; all look-ups take
 * the table's mutex.  Knows nothing of who asks.
 */
#include "table/table.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "config/config.h"
#include "log/log.h"
#include "table/table_private.h"
#include "util/util.h"

struct table_ent {
	char	*key;		/* owned, lower-cased; NULL: empty slot */
	char	*value;		/* owned; "" when none */
};

/* Open addressing, linear probing, at most half full. */
struct table_map {
	struct table_ent	*ents;	/* owned array of cap slots */
	size_t			 cap;	/* a power of two, or 0 */
	size_t			 n;
};

/* What identifies the file we read: a change in any means re-read it. */
struct table_ident {
	dev_t		dev;
	ino_t		ino;
	off_t		size;
	struct timespec	mtime, ctime;
};

struct table {
	char			*name;		/* owned */
	enum config_table_kind	 kind;
	char			*path;		/* owned; file tables */
	pthread_mutex_t		 mu;		/* guards everything below */
	struct table_map	 keys;
	struct table_map	 domains;	/* domains of "x@dom" keys */
	struct table_ident	 ident;		/* of the contents we hold */
	struct table_ident	 bad;		/* last version we failed on */
	bool			 have_bad;
	bool			 stat_failed;	/* warned that stat failed */
	uint64_t		 checked_ms;	/* monotonic, last stat */
	uint64_t		 recheck_ms;
};

static uint64_t
table_hash(const char *s)
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
static struct table_ent *
table_map_slot(const struct table_map *m, const char *key)
{
	size_t i = (size_t)table_hash(key) & (m->cap - 1);

	while (m->ents[i].key != NULL && strcasecmp(m->ents[i].key, key) != 0)
		i = (i + 1) & (m->cap - 1);
	return &m->ents[i];
}

static const struct table_ent *
table_map_get(const struct table_map *m, const char *key)
{
	if (m->cap == 0)
		return NULL;
	const struct table_ent *e = table_map_slot(m, key);
	return e->key != NULL ? e : NULL;
}

static void
table_map_grow(struct table_map *m)
{
	struct table_map old = *m;

	m->cap = old.cap == 0 ? 16 : old.cap * 2;
	m->ents = xcalloc(m->cap, sizeof(*m->ents));
	for (size_t i = 0; i < old.cap; i++)
		if (old.ents[i].key != NULL)
			*table_map_slot(m, old.ents[i].key) = old.ents[i];
	free(old.ents);
}

/* Add key (copied, lower-cased) and value; false if key was there: kept. */
static bool
table_map_put(struct table_map *m, const char *key, const char *value)
{
	if (m->n + 1 > m->cap / 2)
		table_map_grow(m);
	struct table_ent *e = table_map_slot(m, key);
	if (e->key != NULL)
		return false;
	e->key = util_strlower(xstrdup(key));
	e->value = xstrdup(value);
	m->n++;
	return true;
}

static void
table_map_clear(struct table_map *m)
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
table_add(struct table_map *keys, struct table_map *domains, const char *key,
    const char *value)
{
	const char *at = strrchr(key, '@');

	if (!table_map_put(keys, key, value))
		return false;
	if (at != NULL && at[1] != '\0')
		(void)table_map_put(domains, at + 1, "");
	return true;
}

static void
table_ident_of(const struct stat *st, struct table_ident *id)
{
	memset(id, 0, sizeof(*id));
	id->dev = st->st_dev;
	id->ino = st->st_ino;
	id->size = st->st_size;
	id->mtime = st->st_mtim;
	id->ctime = st->st_ctim;
}

static bool
table_ident_eq(const struct table_ident *a, const struct table_ident *b)
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
table_parse_line(struct table *t, char *line, unsigned lineno,
    struct table_map *keys, struct table_map *domains)
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
	if (!table_add(keys, domains, key, value))
		log_msg(LOG_LVL_WARN, "table=%s file=%s line=%u: duplicate key, "
		    "the first is kept", t->name, t->path, lineno);
}

/* Read t->path into fresh maps; 0, or -1 with *err_out. */
static int
table_read(struct table *t, struct table_map *keys,
    struct table_map *domains, struct table_ident *id, const char **err_out)
{
	struct stat st;
	char *line = NULL;
	size_t cap = 0;
	unsigned lineno = 0;
	FILE *f;

	memset(keys, 0, sizeof(*keys));
	memset(domains, 0, sizeof(*domains));
	if ((f = fopen(t->path, "r")) == NULL)
		goto fail;
	if (fstat(fileno(f), &st) == -1)
		goto fail;
	if (!S_ISREG(st.st_mode)) {
		errno = EINVAL;
		goto fail;
	}
	table_ident_of(&st, id);
	errno = 0;
	while (getline(&line, &cap, f) != -1)
		table_parse_line(t, line, ++lineno, keys, domains);
	if (ferror(f))
		goto fail;
	free(line);
	fclose(f);
	return 0;
fail:
	*err_out = util_err("table %s: %s: %s", t->name, t->path,
	    errno == EINVAL ? "not a regular file" : strerror(errno));
	free(line);
	if (f != NULL)
		fclose(f);
	table_map_clear(keys);
	table_map_clear(domains);
	return -1;
}

/* With t->mu held: re-read a file table if it changed (at most 1/s). */
static void
table_refresh(struct table *t)
{
	struct table_map keys, domains;
	struct table_ident id;
	struct stat st;
	const char *err;
	uint64_t now;

	if (t->kind != CONFIG_TABLE_FILE)
		return;
	now = util_now_ms();
	if (now - t->checked_ms < t->recheck_ms)
		return;
	t->checked_ms = now;
	if (stat(t->path, &st) == -1) {
		if (!t->stat_failed)
			log_msg(LOG_LVL_WARN, "table=%s stat(%s): %s; keeping "
			    "the old contents", t->name, t->path,
			    strerror(errno));
		t->stat_failed = true;
		return;
	}
	t->stat_failed = false;
	table_ident_of(&st, &id);
	if (table_ident_eq(&id, &t->ident) ||
	    (t->have_bad && table_ident_eq(&id, &t->bad)))
		return;
	if (table_read(t, &keys, &domains, &id, &err) == -1) {
		/* Warn once per version of the file, not once a second. */
		log_msg(LOG_LVL_WARN, "%s; keeping the old contents", err);
		t->bad = id;
		t->have_bad = true;
		return;
	}
	table_map_clear(&t->keys);
	table_map_clear(&t->domains);
	t->keys = keys;
	t->domains = domains;
	t->ident = id;
	t->have_bad = false;
	log_msg(LOG_LVL_INFO, "table=%s file=%s reloaded keys=%zu", t->name,
	    t->path, keys.n);
}

struct table *
table_open(const struct config_table *ct, const char **err_out)
{
	struct table *t = xcalloc(1, sizeof(*t));

	t->name = xstrdup(ct->name);
	t->kind = ct->kind;
	t->recheck_ms = 1000;
	if (pthread_mutex_init(&t->mu, NULL) != 0)
		fatal("pthread_mutex_init failed");
	switch (ct->kind) {
	case CONFIG_TABLE_INLINE:
		for (char **it = ct->items; it != NULL && *it != NULL; it++)
			(void)table_add(&t->keys, &t->domains, *it, "");
		break;
	case CONFIG_TABLE_FILE:
		t->path = xstrdup(ct->path);
		if (table_read(t, &t->keys, &t->domains, &t->ident,
		    err_out) == -1) {
			table_free(&t);
			return NULL;
		}
		t->checked_ms = util_now_ms();
		break;
	}
	return t;
}

void
table_free(struct table **tp)
{
	struct table *t = *tp;

	if (t == NULL)
		return;
	table_map_clear(&t->keys);
	table_map_clear(&t->domains);
	pthread_mutex_destroy(&t->mu);
	free(t->name);
	free(t->path);
	free(t);
	*tp = NULL;
}

bool
table_lookup(struct table *t, const char *key, char **value_out)
{
	const struct table_ent *e;

	pthread_mutex_lock(&t->mu);
	table_refresh(t);
	e = table_map_get(&t->keys, key);
	if (e != NULL && value_out != NULL)
		*value_out = xstrdup(e->value);
	pthread_mutex_unlock(&t->mu);
	return e != NULL;
}

bool
table_has_domain(struct table *t, const char *domain)
{
	bool found;

	pthread_mutex_lock(&t->mu);
	table_refresh(t);
	found = domain[0] != '\0' && table_map_get(&t->domains, domain) != NULL;
	pthread_mutex_unlock(&t->mu);
	return found;
}

void
table_set_recheck_ms(struct table *t, uint64_t ms)
{
	pthread_mutex_lock(&t->mu);
	t->recheck_ms = ms;
	pthread_mutex_unlock(&t->mu);
}
