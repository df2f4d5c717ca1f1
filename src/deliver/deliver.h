/*
 * deliver/deliver.h: one file per action kind; each delivery blocks (worker
 * threads only).  An *err_out string lives in a thread-local buffer (or is
 * static): valid until the next deliver call on the same thread.  Knows
 * nothing of the listener side.
 */
#ifndef POSTERN_DELIVER_H
#define POSTERN_DELIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct deliver_msg {
	const char	*content_path;	/* spooled content, LF line ends */
	const char	*return_path;	/* envelope sender, "" for <> */
	const char	*qid;
	size_t		 rcpt_idx;
	int64_t		 received;	/* epoch seconds */
	const char	*hostname;	/* for Maildir unique names */
};

enum deliver_result { DELIVER_OK, DELIVER_TEMPFAIL, DELIVER_PERMFAIL };

/*
 * Deliver one copy into the Maildir at folder (created with tmp/ new/ cur/
 * if missing): "Return-Path: <sender>" then the content, written to tmp/
 * under a name derived from qid and rcpt_idx, fsynced, renamed into new/,
 * new/ fsynced.  If that name is already in new/ or cur/ (a delivery
 * before a crash), nothing is written and DELIVER_OK is returned: exactly
 * once per recipient.  *err_out says why on failure.
 */
enum deliver_result deliver_maildir(const char *folder,
	    const struct deliver_msg *m, const char **err_out);

#endif
