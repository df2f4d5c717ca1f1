/*
 * deliver/maildir_publish.c: the fast path of Maildir copies (see
 * maildir.c for the order of writes it relies on).  With m->unsynced set,
 * a copy in the one-commit order is written into tmp/ with no sync at
 * all and left there, and the copies to be linked to it are not made
 * yet; all are noted in m->unsynced (deliver_md_note).  The caller
 * records them durably (a record in the spool log that a start after a
 * crash replays), and only then names them in new/
 * (deliver_maildir_publish: the rename, the links), so a crash before
 * the record leaves no name in new/, empty or not, only a tmp/ file for
 * the sweep.  Where the log takes no record, the caller names them and
 * syncs each (deliver_maildir_sync).  Knows nothing of the spool log.
 *
 * Error strings come from util_err(): valid until the thread's next
 * error.
 */
#include "deliver/deliver.h"
#include "deliver/deliver_private.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/util.h"

void
deliver_md_note(const struct deliver_md_copy *c, struct deliver_unsynced *u,
    size_t src)
{
	struct deliver_unsynced_copy *v;

	u->v = xrealloc(u->v, (u->n + 1) * sizeof(*u->v));
	v = &u->v[u->n++];
	size_t pathsz = strlen(c->folder) + strlen(c->name) + 6;
	v->path = xmalloc(pathsz);
	util_strjoin(v->path, pathsz, c->folder, "/new/", c->name, NULL);
	v->folder = xstrdup(c->folder);
	v->name = xstrdup(c->name);
	v->dev = c->dev;
	v->rcpt = c->rcpt;
	v->src = src;
	v->held = c->hold;
}

void
deliver_unsynced_clear(struct deliver_unsynced *u)
{
	for (size_t i = 0; i < u->n; i++) {
		free(u->v[i].path);
		free(u->v[i].folder);
		free(u->v[i].name);
	}
	free(u->v);
	free(u->hdr);
	*u = (struct deliver_unsynced){ 0 };
}

int
deliver_maildir_sync(const char *path, const char **err_out)
{
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC), e;

	if (fd != -1 && util_fsync(fd) == 0) {
		close(fd);
		return 0;
	}
	e = errno;
	*err_out = util_err("fsync(%s): %s", path, strerror(e));
	if (fd != -1)
		close(fd);
	unlink(path);
	return -1;
}

/*
 * The context of noted copy v, its Maildir open (with tmp/ when want_tmp:
 * a held copy is renamed from there); false if it cannot be.
 */
static bool
md_reopen(struct deliver_md_copy *c, const struct deliver_unsynced_copy *v,
    bool want_tmp)
{
	const char *err;
	enum deliver_result r;

	*c = (struct deliver_md_copy){ .folder = v->folder, .out = -1,
	    .src = v->src, .later = true, .rcpt = v->rcpt };
	util_strlcpy(c->name, v->name, sizeof(c->name));
	if ((r = deliver_md_open(c, want_tmp, &err)) != DELIVER_OK) {
		deliver_md_set(c, r, err);
		return false;
	}
	return true;
}

/* Name held copy s in new/; its copy of tmp/ goes if that fails. */
static void
md_publish_src(struct deliver_md_copy *s)
{
	const char *err;
	enum deliver_result r;

	if (deliver_md_tmp(s->dir) == -1) {
		r = deliver_md_fail(&err, errno, "open", s->folder, "tmp",
		    NULL);
		deliver_md_set(s, r, err);
		return;
	}
	if (renameat(s->dir->tmp_fd, s->name, s->dir->new_fd, s->name) == 0)
		return;
	r = deliver_md_fail(&err, errno, "rename", s->folder, "tmp", s->name);
	unlinkat(s->dir->tmp_fd, s->name, 0);
	deliver_md_set(s, r, err);
}

static void
md_publish_status(const struct deliver_md_copy *c,
    struct deliver_rcpt_status *st)
{
	deliver_status_all(&st[c->rcpt], 1, c->r, c->r == DELIVER_OK ? NULL :
	    c->err);
}

void
deliver_maildir_publish(struct deliver_unsynced *u,
    const struct deliver_msg *m, struct deliver_rcpt_status *st)
{
	for (size_t i = 0; i < u->n; i++) {
		struct deliver_md_copy s;
		bool open;

		if (!u->v[i].held)
			continue;
		if ((open = md_reopen(&s, &u->v[i], true)))
			md_publish_src(&s);
		for (size_t j = i + 1; j < u->n; j++) {
			struct deliver_md_copy c;

			if (u->v[j].src != i)
				continue;
			/* As a link that fails: a copy of its own. */
			if (md_reopen(&c, &u->v[j], false) &&
			    (s.r != DELIVER_OK || linkat(s.dir->new_fd, s.name,
			    c.dir->new_fd, c.name, 0) == -1))
				deliver_md_place(&c, m);
			if (c.dir != NULL)
				deliver_md_close(&c, true);
			md_publish_status(&c, st);
		}
		if (open)
			deliver_md_close(&s, true);
		md_publish_status(&s, st);
	}
}
