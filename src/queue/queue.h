/*
 * queue/queue.h: takes committed messages from the spool and delivers each
 * pending recipient through deliver/, on worker threads; retries temporary
 * failures with backoff; removes the spool entry once every recipient is
 * durably done.  Knows nothing of the wire format of each action.
 */
#ifndef POSTERN_QUEUE_H
#define POSTERN_QUEUE_H

struct spool;
struct queue;

/* Start nthreads delivery workers over sp (borrowed). */
struct queue *queue_new(struct spool *sp, const char *hostname,
	    unsigned nthreads);
/* Hand over a committed message; thread-safe, never blocks on the disk. */
void	queue_submit(struct queue *q, const char *qid);
/* Submit every committed message found in the spool (start-up recovery). */
void	queue_recover(struct queue *q);
/* Wait until nothing is being delivered or due now (tests, shutdown). */
void	queue_drain(struct queue *q);
/* Stop the workers after their current delivery and free. */
void	queue_free(struct queue **qp);

#endif
