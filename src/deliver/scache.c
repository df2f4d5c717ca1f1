/*
 * deliver/scache.c: the outbound session cache.  An SMTP session whose
 * transaction is over waits here, idle, for the next message to the same
 * server with the same settings (the key smtpc.c makes), so that message
 * goes out without a new connection, greeting, EHLO, TLS handshake and
 * AUTH.  A session is kept for a short idle time, then closed with QUIT
 * by the cache's own thread; the oldest goes when the cache is full; an
 * action's sessions go when its runtime does (reload, stop).  Knows
 * nothing of SMTP transactions or of the queue.
 */
#include "deliver/deliver.h"
#include "deliver/deliver_private.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#include "tls/tls.h"
#include "util/util.h"

#define SCACHE_QUIT_MS	100	/* the most a close waits for QUIT's reply */

struct scache_ent {
	struct scache_ent *next;	/* newest first */
	char		*key;		/* owned */
	const void	*owner;
	uint64_t	 expires_ms;	/* monotonic */
	struct smtpc_idle s;
};

static struct {
	pthread_mutex_t	  mu;
	pthread_cond_t	  cv;		/* an entry to close, or stop */
	struct scache_ent *kept;	/* idle, newest first */
	struct scache_ent *closing;	/* taken out, for the thread to close */
	size_t		  nkept;
	unsigned	  users;	/* scache_ref calls not undone */
	bool		  running;	/* the thread exists */
	bool		  stop;
	uint64_t	  wake_ms;	/* the thread sleeps until then; 0:
					   it runs, and looks at every entry */
	pthread_t	  thread;
} sc = { .mu = PTHREAD_MUTEX_INITIALIZER };

static pthread_once_t sc_once = PTHREAD_ONCE_INIT;

static void
sc_init(void)
{
	pthread_condattr_t ca;

	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&sc.cv, &ca);
	pthread_condattr_destroy(&ca);
}

void
scache_close(struct smtpc_idle *s)
{
	char line[512];

	if (s->c.fd != -1 && dconn_write(&s->c, "QUIT\r\n", 6,
	    SCACHE_QUIT_MS) == 0)
		/* Read the 221 so the close is a FIN, not a reset. */
		(void)dconn_readline(&s->c, line, sizeof(line),
		    SCACHE_QUIT_MS);
	dconn_close(&s->c);
	tls_client_free(&s->tc_own);
}

char *
scache_key(const struct deliver_smtp_opts *o, const char *helo)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	char pass[33] = "";

	/* The password only as a digest: a changed one is a new identity. */
	if (o->user != NULL && o->pass != NULL && EVP_Digest(o->pass,
	    strlen(o->pass), md, &mdlen, EVP_sha256(), NULL) == 1)
		for (unsigned int i = 0; i < mdlen && i < 16; i++)
			snprintf(pass + 2 * i, 3, "%02x", md[i]);
	return xasprintf("%p %s %d %s %d %p %s %d %s %s %s %s",
	    o->reuse->owner, o->host != NULL ? o->host : "", o->port,
	    o->unix_path != NULL ? o->unix_path : "", (int)o->tls,
	    (const void *)o->tls_ctx, o->tls_name != NULL ? o->tls_name : "",
	    (int)o->no_verify, o->ca_file != NULL ? o->ca_file : "", helo,
	    o->user != NULL ? o->user : "", pass);
}

static void
sc_ent_free(struct scache_ent *e)
{
	scache_close(&e->s);
	free(e->key);
	free(e);
}

/* Move the entries pick says to the closing list (under the lock). */
static void
sc_move(bool (*pick)(const struct scache_ent *, const void *),
    const void *arg)
{
	for (struct scache_ent **p = &sc.kept; *p != NULL;) {
		struct scache_ent *e = *p;
		if (!pick(e, arg)) {
			p = &e->next;
			continue;
		}
		*p = e->next;
		e->next = sc.closing;
		sc.closing = e;
		sc.nkept--;
	}
}

static bool
sc_pick_expired(const struct scache_ent *e, const void *now)
{
	return e->expires_ms <= *(const uint64_t *)now;
}

static bool
sc_pick_owner(const struct scache_ent *e, const void *owner)
{
	return e->owner == owner;
}

static bool
sc_pick_all(const struct scache_ent *e, const void *arg)
{
	(void)e;
	(void)arg;
	return true;
}

/* Close the closing list, the lock released meanwhile. */
static void
sc_close_taken(void)
{
	while (sc.closing != NULL) {
		struct scache_ent *list = sc.closing;
		sc.closing = NULL;
		pthread_mutex_unlock(&sc.mu);
		while (list != NULL) {
			struct scache_ent *nx = list->next;
			sc_ent_free(list);
			list = nx;
		}
		pthread_mutex_lock(&sc.mu);
	}
}

static void *
sc_main(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&sc.mu);
	for (;;) {
		uint64_t now = util_now_ms(), next = now + 60000;
		sc_move(sc.stop ? sc_pick_all : sc_pick_expired, &now);
		sc_close_taken();
		/*
		 * The stop may have come while the lock was released above,
		 * after a session was put: go round until none is kept.
		 */
		if (sc.stop && sc.kept == NULL)
			break;
		if (sc.stop)
			continue;
		for (struct scache_ent *e = sc.kept; e != NULL; e = e->next)
			if (e->expires_ms < next)
				next = e->expires_ms;
		struct timespec ts = { .tv_sec = (time_t)(next / 1000),
		    .tv_nsec = (long)(next % 1000) * 1000000 };
		if (sc.closing == NULL) {
			sc.wake_ms = next;
			pthread_cond_timedwait(&sc.cv, &sc.mu, &ts);
			sc.wake_ms = 0;
		}
	}
	pthread_mutex_unlock(&sc.mu);
	return NULL;
}

void
scache_ref(void)
{
	pthread_once(&sc_once, sc_init);
	pthread_mutex_lock(&sc.mu);
	sc.users++;
	pthread_mutex_unlock(&sc.mu);
}

void
scache_unref(void)
{
	bool join = false;

	pthread_mutex_lock(&sc.mu);
	if (sc.users > 0 && --sc.users == 0 && sc.running) {
		sc.stop = true;
		pthread_cond_signal(&sc.cv);
		join = true;
	}
	pthread_mutex_unlock(&sc.mu);
	if (!join)
		return;
	pthread_join(sc.thread, NULL);
	pthread_mutex_lock(&sc.mu);
	sc.running = sc.stop = false;
	pthread_mutex_unlock(&sc.mu);
}

bool
scache_take(const char *key, struct smtpc_idle *out)
{
	struct scache_ent *e = NULL;

	pthread_once(&sc_once, sc_init);
	pthread_mutex_lock(&sc.mu);
	for (struct scache_ent **p = &sc.kept; *p != NULL; p = &(*p)->next)
		if (strcmp((*p)->key, key) == 0) {
			e = *p;
			*p = e->next;
			sc.nkept--;
			break;
		}
	pthread_mutex_unlock(&sc.mu);
	if (e == NULL)
		return false;
	*out = e->s;
	free(e->key);
	free(e);
	return true;
}

void
scache_put(const char *key, const struct deliver_reuse *r,
    struct smtpc_idle *s)
{
	struct scache_ent *e = xcalloc(1, sizeof(*e));
	int rc;

	pthread_once(&sc_once, sc_init);
	e->key = xstrdup(key);
	e->owner = r->owner;
	e->expires_ms = util_now_ms() + r->idle_ms;
	e->s = *s;
	dconn_init(&s->c);
	s->tc_own = NULL;
	pthread_mutex_lock(&sc.mu);
	if (sc.users == 0 || sc.stop) {
		/* Nobody will take it, and no thread would close it. */
		pthread_mutex_unlock(&sc.mu);
		sc_ent_free(e);
		return;
	}
	if (!sc.running) {
		if ((rc = pthread_create(&sc.thread, NULL, sc_main, NULL)) != 0)
			fatal("session cache: pthread_create: %s",
			    strerror(rc));
		sc.running = true;
	}
	e->next = sc.kept;
	sc.kept = e;
	sc.nkept++;
	/* Full: the oldest (the list's tail) goes. */
	for (struct scache_ent **p = &sc.kept; sc.nkept > r->cache_max &&
	    *p != NULL;) {
		if ((*p)->next != NULL) {
			p = &(*p)->next;
			continue;
		}
		(*p)->next = sc.closing;
		sc.closing = *p;
		*p = NULL;
		sc.nkept--;
		p = &sc.kept;
	}
	/*
	 * Only when the thread has something to do before it wakes anyway:
	 * a session to close, or this one expiring first.  Kept sessions go
	 * and come back once per message.
	 */
	if (sc.closing != NULL || e->expires_ms < sc.wake_ms)
		pthread_cond_signal(&sc.cv);
	pthread_mutex_unlock(&sc.mu);
}

void
scache_drop(const void *owner)
{
	pthread_once(&sc_once, sc_init);
	pthread_mutex_lock(&sc.mu);
	sc_move(sc_pick_owner, owner);
	if (sc.closing != NULL)
		pthread_cond_signal(&sc.cv);
	pthread_mutex_unlock(&sc.mu);
}
