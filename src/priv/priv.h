/*
 * priv/priv.h: the small privileged helper.  Forked as root before the
 * privilege drop, it answers three questions over a socketpair, each in a
 * child process of its own: "is this user/password valid for PAM service
 * S", "write this message into this Maildir as its owner" (fork,
 * initgroups/setgid/setuid to the owner, write, fsync, report) and "open
 * this TLS certificate or key" (one the configuration named at start: a
 * reload reads renewed files the unprivileged user may not).  A keeper
 * process restarts the helper if it dies; a request it was working on
 * fails temporarily, never the server.  Knows nothing of SMTP or chains.
 */
#ifndef POSTERN_PRIV_H
#define POSTERN_PRIV_H

#include "deliver/deliver.h"

struct config;
struct event_base;
struct priv;
struct priv_req;

/*
 * Fork the keeper and the helper now: call as root, before any thread
 * starts.  What it may do is fixed from here on: the Maildir roots (cfg's
 * "maildir-root" folders; an owner's home is always allowed), the owners
 * and path templates of cfg's "as" actions, and the TLS files it may
 * open.  NULL with *err_out.
 */
struct priv *priv_start(const struct config *cfg, const char **err_out);
/* Stop the reader thread; the helpers end with the process. */
void	priv_free(struct priv **pp);

/* rc 1 valid, 0 refused (wrong password, unknown user), -1 unavailable. */
typedef void priv_auth_cb(void *arg, int rc);
/*
 * Check user/pass with PAM service on the helper.  cb(arg, rc) comes later
 * on base's loop, never from inside the call.  The password is wiped from
 * our memory before this returns.
 */
struct priv_req *priv_auth_start(struct priv *p, struct event_base *base,
	    const char *service, const char *user, const char *pass,
	    priv_auth_cb *cb, void *arg);
/* The asker goes away: cb will not be called.  Sets *reqp to NULL. */
void	priv_cancel(struct priv_req **reqp);

/*
 * Deliver m (content at m->content_path) into folder ("~" at its start is
 * the owner's home) as the system user owner.  Blocks: worker threads
 * only.  Returns as deliver_maildir(); DELIVER_TEMPFAIL when the helper is
 * unavailable, refuses the owner (one the configuration does not allow) or
 * the path (outside the roots, a dot folder, a symlink in it, a folder
 * someone else owns or may write to: *err_out names it).
 */
enum deliver_result priv_deliver(struct priv *p, const char *owner,
	    const char *folder, const struct deliver_msg *m,
	    const char **err_out);

/*
 * Open path for reading, as root: one of the "tls cert" files and keys
 * of the configuration the helper started with.  Blocks (the main thread,
 * at a reload).  The descriptor, or -1 with *err_out.
 */
int	priv_open(struct priv *p, const char *path, const char **err_out);

#endif
