/*
 * deliver/stop.c: the descriptor that cuts a thread's deliveries short (a
 * queue that stops).  Every blocking wait in deliver/ watches it beside
 * what it waits for.  Knows nothing of who makes it readable.
 */
#include "deliver/deliver.h"
#include "deliver/deliver_private.h"

#include <errno.h>
#include <poll.h>

#include "util/util.h"

static __thread int deliver_stop = -1;

void
deliver_stop_fd_set(int fd)
{
	deliver_stop = fd;
}

int
deliver_stop_fd(void)
{
	return deliver_stop;
}

bool
deliver_is_stopped(void)
{
	struct pollfd pfd = { .fd = deliver_stop, .events = POLLIN };

	if (deliver_stop == -1)
		return false;
	while (poll(&pfd, 1, 0) == -1)
		if (errno != EINTR)
			return false;
	return (pfd.revents & POLLIN) != 0;
}

bool
deliver_sleep(uint64_t ms)
{
	uint64_t deadline = util_now_ms() + ms;

	for (;;) {
		uint64_t now = util_now_ms();
		if (now >= deadline)
			return true;
		uint64_t left = deadline - now;
		struct pollfd pfd = { .fd = deliver_stop, .events = POLLIN };
		int r = poll(&pfd, 1, left > 60000 ? 60000 : (int)left);
		if (r == 1 && (pfd.revents & POLLIN) != 0)
			return false;
		if (r == -1 && errno != EINTR)
			return true;
	}
}
