/*
 * priv/priv_private.h: the wire between postern (client.c) and the helper
 * (helper.c).  One SOCK_SEQPACKET datagram per request and per answer: a
 * header, then NUL-terminated strings; a delivery carries the message's
 * file descriptor (SCM_RIGHTS).  Requests are at most PRIV_MSG_MAX bytes.
 */
#ifndef POSTERN_PRIV_PRIVATE_H
#define POSTERN_PRIV_PRIVATE_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>

#define PRIV_MSG_MAX		8192
#define PRIV_TIMEOUT_MS		15000	/* one request, in the helper */
#define PRIV_CHILDREN_MAX	32	/* requests at once */

enum priv_type { PRIV_AUTH = 1, PRIV_DELIVER = 2, PRIV_OPEN = 3 };

struct priv_hdr {
	uint32_t	id;
	uint32_t	type;		/* enum priv_type; answers: 0 */
	int32_t		rc;		/* answers: the result */
	uint32_t	nstr;		/* strings after the header */
};

/* AUTH strings: service, user, password.  Answer rc: 1, 0, -1. */
/* DELIVER strings: owner, folder, return path, qid, hostname, rcpt index,
 * received (epoch s), fresh ("1"/"0").  Answer rc: enum deliver_result or
 * -1; one string: the error text. */
/* OPEN strings: a path, one of the files named at start.  Answer rc: 0
 * with the file open for reading (SCM_RIGHTS), or -1 and the error text. */

/* Attach fd to mh (SCM_RIGHTS) in cbuf, CMSG_SPACE(sizeof(int)) octets. */
static inline void
priv_attach_fd(struct msghdr *mh, char *cbuf, int fd)
{
	struct cmsghdr *cm;

	mh->msg_control = cbuf;
	mh->msg_controllen = CMSG_SPACE(sizeof(int));
	cm = CMSG_FIRSTHDR(mh);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof(int));
}

/*
 * What the configuration the helper started with allows it, fixed from
 * then on: the helper trusts postern with nothing more.  The lists are
 * NULL-terminated; the strings are the keeper's copy of the configuration.
 */
struct priv_allow {
	char		**roots;	/* "maildir-root" folders */
	char		**files;	/* what PRIV_OPEN may open */
	char		**owners;	/* the "as USER" names */
	char		**templates;	/* the path templates of "as" actions */
	bool		  owner_table;	/* an "as <TABLE>": ordinary accounts */
	uid_t		  uid_min;	/* ordinary accounts: UID_MIN..UID_MAX */
	uid_t		  uid_max;	/*   of /etc/login.defs, read as root */
};

/* helper.c: the keeper's loop (never returns); a is its own from here. */
void	priv_keeper_main(int ctl, struct priv_allow *a)
	    __attribute__((noreturn));

#endif
