/*
 * spool/fresh.c: the envelopes of messages committed by this process that
 * have no status record yet, kept in memory (up to SPOOL_FRESH_MAX), so
 * the queue's first load of such a message reads no file and looks for no
 * done/<qid>, and its removal unlinks no done/<qid>: none can exist.  A
 * message leaves at its first record (spool_append) or its removal.
 * Knows nothing of the queue.
 *
 * Why "no record" holds: a queue id is new at its commit (a done/ file
 * left by a crash is removed at the start, before any commit), every
 * record goes through spool_append, which forgets the message before it
 * writes, and no other process writes to a spool this one holds.
 */
#include "spool/spool.h"
#include "spool/spool_private.h"

#include <stdlib.h>
#include <string.h>

struct spool_fresh {
	struct spool_fresh	*next;
	char			 qid[SPOOL_QID_MAX];
	size_t			 len;
	char			 text[];	/* the envelope file's bytes */
};

static size_t
spool_fresh_slot(const char *qid)
{
	return util_hash_str(qid) % SPOOL_FRESH_SLOTS;
}

/* The entry of qid, or NULL; *pp_out: the link to it.  Locked. */
static struct spool_fresh *
spool_fresh_find(struct spool *sp, const char *qid,
    struct spool_fresh ***pp_out)
{
	struct spool_fresh **pp = &sp->fresh[spool_fresh_slot(qid)];

	for (; *pp != NULL; pp = &(*pp)->next)
		if (strcmp((*pp)->qid, qid) == 0)
			break;
	*pp_out = pp;
	return *pp;
}

void
spool_fresh_init(struct spool *sp)
{
	pthread_mutex_init(&sp->fresh_mu, NULL);
}

void
spool_fresh_clear(struct spool *sp)
{
	for (size_t i = 0; i < SPOOL_FRESH_SLOTS; i++)
		while (sp->fresh[i] != NULL) {
			struct spool_fresh *f = sp->fresh[i];
			sp->fresh[i] = f->next;
			free(f);
		}
	sp->nfresh = 0;
	pthread_mutex_destroy(&sp->fresh_mu);
}

void
spool_fresh_put(struct spool *sp, const char *qid, const char *text,
    size_t len)
{
	struct spool_fresh *f, **pp;

	pthread_mutex_lock(&sp->fresh_mu);
	if (sp->nfresh < SPOOL_FRESH_MAX &&
	    spool_fresh_find(sp, qid, &pp) == NULL) {
		f = xmalloc(sizeof(*f) + len);
		util_strlcpy(f->qid, qid, sizeof(f->qid));
		f->len = len;
		memcpy(f->text, text, len);
		f->next = NULL;
		*pp = f;
		sp->nfresh++;
	}
	pthread_mutex_unlock(&sp->fresh_mu);
}

char *
spool_fresh_get(struct spool *sp, const char *qid, size_t *len_out)
{
	struct spool_fresh *f, **pp;
	char *copy = NULL;

	pthread_mutex_lock(&sp->fresh_mu);
	if ((f = spool_fresh_find(sp, qid, &pp)) != NULL) {
		copy = xmalloc(f->len + 1);
		memcpy(copy, f->text, f->len);
		*len_out = f->len;
	}
	pthread_mutex_unlock(&sp->fresh_mu);
	return copy;
}

bool
spool_fresh_drop(struct spool *sp, const char *qid)
{
	struct spool_fresh *f, **pp;

	pthread_mutex_lock(&sp->fresh_mu);
	if ((f = spool_fresh_find(sp, qid, &pp)) != NULL) {
		*pp = f->next;
		sp->nfresh--;
	}
	pthread_mutex_unlock(&sp->fresh_mu);
	free(f);
	return f != NULL;
}
