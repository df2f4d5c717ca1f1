/*
 * http/client.c: one thread per client running libcurl's multi interface
 * (connections are kept and reused across requests).  Requests are set up
 * on the caller's thread, handed over under a mutex, and finished on the
 * client's thread through their callback.  Only http and https; no
 * redirects are followed.  Knows nothing of what the requests carry.
 */
#include "http/http.h"

#include <curl/curl.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/http_private.h"
#include "util/util.h"

#define HTTP_POLL_MS		1000	/* the thread wakes at least this often */
#define HTTP_RETRY_AFTER_MAX_S	(7 * 86400)
#define HTTP_STOP_FDS_MAX	8	/* stop descriptors polled at once */

struct http_xfer {
	struct http_client	*c;		/* borrowed: our client */
	CURL			*easy;		/* owned */
	struct curl_slist	*hdrs;		/* owned */
	struct http_body	 body;		/* path: owned copy */
	struct http_reader	 rd;
	bool			 rd_open;
	const char		*rd_err;	/* why the body failed */
	size_t			 response_max;
	uint64_t		 timeout_ms;	/* the whole exchange */
	bool			 resent;	/* on a new connection */
	struct util_buf		 resp;
	bool			 too_big;
	char			 errbuf[CURL_ERROR_SIZE];
	http_done_cb		*cb;
	void			*arg;
	int			 stop_fd;	/* borrowed: readable, cancel
						   it; or -1 */
	const atomic_bool	*cancel;	/* borrowed: true, cancel it */
	struct http_xfer	*next, *prev;	/* pending or active list */
};

struct http_client {
	pthread_t		 thread;
	pthread_mutex_t		 mu;
	CURLM			*multi;		/* the thread's alone */
	struct http_xfer	*pending;	/* under mu: to be added */
	struct http_xfer	*active;	/* the thread's: running */
	bool			 stop;		/* under mu */
};

static pthread_once_t	 http_once = PTHREAD_ONCE_INIT;
static bool		 http_global_ok;

static void
http_global_init(void)
{
	http_global_ok = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
}

void
http_result_clear(struct http_result *r)
{
	free(r->body);
	free(r->content_type);
	r->body = NULL;
	r->content_type = NULL;
}

bool
http_result_retryable(const struct http_result *r)
{
	if (r->status == 0)
		return r->err != HTTP_OK;
	return r->status == 408 || r->status == 429 || r->status >= 500;
}

/* ---- curl callbacks (client thread) ---- */

static size_t
http_write_cb(char *data, size_t size, size_t nmemb, void *arg)
{
	struct http_xfer *x = arg;
	size_t n = size * nmemb;

	if (n > x->response_max - x->resp.len) {
		x->too_big = true;
		return 0;	/* CURLE_WRITE_ERROR: stop reading */
	}
	util_buf_add(&x->resp, data, n);
	return n;
}

static size_t
http_read_cb(char *out, size_t size, size_t nmemb, void *arg)
{
	struct http_xfer *x = arg;
	ssize_t n;

	if (!x->rd_open) {
		if (http_reader_open(&x->rd, &x->body, &x->rd_err) == -1)
			return CURL_READFUNC_ABORT;
		x->rd_open = true;
	}
	if ((n = http_reader_read(&x->rd, out, size * nmemb, &x->rd_err)) ==
	    -1)
		return CURL_READFUNC_ABORT;
	return (size_t)n;
}

/*
 * libcurl rewinds the body when it sends the request again on a new
 * connection (a kept one the server closed as it read the request): the
 * body is read afresh from its start.
 */
static int
http_seek_cb(void *arg, curl_off_t offset, int origin)
{
	struct http_xfer *x = arg;

	if (origin != SEEK_SET || offset != 0)
		return CURL_SEEKFUNC_CANTSEEK;
	if (x->rd_open) {
		http_reader_close(&x->rd);
		x->rd_open = false;
	}
	return CURL_SEEKFUNC_OK;
}

/* ---- setting a request up (caller's thread) ---- */

static void
http_setup_body(struct http_xfer *x, const struct http_request *r)
{
	CURL *e = x->easy;
	bool put = r->method != NULL && strcmp(r->method, "PUT") == 0;

	x->body = r->body;
	if (r->body.data == NULL && r->body.path != NULL)
		x->body.path = xstrdup(r->body.path);
	curl_easy_setopt(e, CURLOPT_READFUNCTION, http_read_cb);
	curl_easy_setopt(e, CURLOPT_READDATA, x);
	curl_easy_setopt(e, CURLOPT_SEEKFUNCTION, http_seek_cb);
	curl_easy_setopt(e, CURLOPT_SEEKDATA, x);
	if (put) {
		curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE,
		    (curl_off_t)r->body_len);
	} else {
		curl_easy_setopt(e, CURLOPT_POST, 1L);
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
		    (curl_off_t)r->body_len);
	}
}

/*
 * libcurl takes "Name:" with nothing after the colon for "send no Name";
 * a field whose value is empty is given to it as "Name;".
 */
static struct curl_slist *
http_header_add(struct curl_slist *l, const char *h)
{
	const char *colon = strchr(h, ':');
	char *semi;

	if (colon == NULL || colon[1 + strspn(colon + 1, " \t")] != '\0')
		return curl_slist_append(l, h);
	semi = xasprintf("%.*s;", (int)(colon - h), h);
	l = curl_slist_append(l, semi);
	free(semi);
	return l;
}

static void
http_setup_headers(struct http_xfer *x, const struct http_request *r)
{
	/* Send at once: no "Expect: 100-continue" wait. */
	x->hdrs = curl_slist_append(x->hdrs, "Expect:");
	if (r->content_type != NULL) {
		char *h = xasprintf("Content-Type: %s", r->content_type);

		x->hdrs = curl_slist_append(x->hdrs, h);
		free(h);
	}
	for (const char *const *h = r->headers; h != NULL && *h != NULL; h++)
		x->hdrs = http_header_add(x->hdrs, *h);
	curl_easy_setopt(x->easy, CURLOPT_HTTPHEADER, x->hdrs);
}

static void
http_setup_auth(CURL *e, const struct http_request *r)
{
	if (r->bearer != NULL) {
		curl_easy_setopt(e, CURLOPT_HTTPAUTH, (long)CURLAUTH_BEARER);
		curl_easy_setopt(e, CURLOPT_XOAUTH2_BEARER, r->bearer);
	} else if (r->user != NULL) {
		curl_easy_setopt(e, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
		curl_easy_setopt(e, CURLOPT_USERNAME, r->user);
		curl_easy_setopt(e, CURLOPT_PASSWORD,
		    r->pass != NULL ? r->pass : "");
	}
}

static struct http_xfer *
http_xfer_new(struct http_client *c, const struct http_request *r,
    http_done_cb *cb, void *arg)
{
	struct http_xfer *x = xcalloc(1, sizeof(*x));
	CURL *e = x->easy = curl_easy_init();

	ASSERT(e != NULL);
	x->c = c;
	x->cb = cb;
	x->arg = arg;
	x->stop_fd = -1;
	x->cancel = r->cancel;
	x->response_max = r->response_max != 0 ? r->response_max :
	    HTTP_RESPONSE_MAX_DEFAULT;
	curl_easy_setopt(e, CURLOPT_PRIVATE, x);
	curl_easy_setopt(e, CURLOPT_URL, r->url);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_USERAGENT, "postern");
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
	x->timeout_ms = r->timeout_ms != 0 ? r->timeout_ms :
	    HTTP_TIMEOUT_DEFAULT_MS;
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)x->timeout_ms);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)(
	    r->connect_timeout_ms != 0 ? r->connect_timeout_ms :
	    HTTP_CONNECT_TIMEOUT_DEFAULT_MS));
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, http_write_cb);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
	if (r->ca_file != NULL)
		curl_easy_setopt(e, CURLOPT_CAINFO, r->ca_file);
	if (r->no_verify) {
		curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
	}
	http_setup_auth(e, r);
	http_setup_headers(x, r);
	http_setup_body(x, r);
	return x;
}

/* ---- finishing (client thread) ---- */

static enum http_err
http_err_of(const struct http_xfer *x, CURLcode cc)
{
	switch (cc) {
	case CURLE_OK:
		return HTTP_OK;
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
	case CURLE_COULDNT_CONNECT:
		return HTTP_ERR_CONNECT;
	case CURLE_OPERATION_TIMEDOUT:
		return HTTP_ERR_TIMEOUT;
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_CERTPROBLEM:
		return HTTP_ERR_TLS;
	case CURLE_WRITE_ERROR:
		return x->too_big ? HTTP_ERR_TOO_BIG : HTTP_ERR_OTHER;
	case CURLE_ABORTED_BY_CALLBACK:
	case CURLE_READ_ERROR:
		return x->rd_err != NULL ? HTTP_ERR_BODY : HTTP_ERR_OTHER;
	default:
		return HTTP_ERR_OTHER;
	}
}

static void
http_result_fill(struct http_xfer *x, CURLcode cc, struct http_result *res)
{
	curl_off_t ra = 0;
	char *ct = NULL;

	memset(res, 0, sizeof(*res));
	res->err = http_err_of(x, cc);
	curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &res->status);
	if (res->err == HTTP_ERR_TOO_BIG)
		snprintf(res->text, sizeof(res->text),
		    "response larger than %zu bytes", x->response_max);
	else if (res->err == HTTP_ERR_BODY)
		snprintf(res->text, sizeof(res->text), "%s", x->rd_err);
	else if (res->err != HTTP_OK)
		snprintf(res->text, sizeof(res->text), "%s", x->errbuf[0] !=
		    '\0' ? x->errbuf : curl_easy_strerror(cc));
	if (res->status > 0 && res->status < 200) {
		/* An interim answer (1xx) alone is no answer at all. */
		char was[sizeof(res->text)];

		snprintf(was, sizeof(was), "%s", res->text);
		snprintf(res->text, sizeof(res->text), "HTTP %ld and no final "
		    "answer%s%.200s", res->status, was[0] != '\0' ? ": " : "", was);
		res->status = 0;
		if (res->err == HTTP_OK)
			res->err = HTTP_ERR_OTHER;
	}
	/* Both forms of RFC 9110 10.2.3, as seconds from now. */
	res->retry_after_s = -1;
	if (curl_easy_getinfo(x->easy, CURLINFO_RETRY_AFTER, &ra) ==
	    CURLE_OK && ra > 0)
		res->retry_after_s = ra > HTTP_RETRY_AFTER_MAX_S ?
		    HTTP_RETRY_AFTER_MAX_S : (int64_t)ra;
	if (curl_easy_getinfo(x->easy, CURLINFO_CONTENT_TYPE, &ct) ==
	    CURLE_OK && ct != NULL)
		res->content_type = xstrdup(ct);
	res->body_len = x->resp.len;
	res->body = x->resp.data != NULL ? util_buf_cstr(&x->resp) :
	    xstrdup("");
	x->resp.data = NULL;
}

static void
http_xfer_unlink(struct http_xfer **list, struct http_xfer *x)
{
	if (x->prev != NULL)
		x->prev->next = x->next;
	else
		*list = x->next;
	if (x->next != NULL)
		x->next->prev = x->prev;
	x->next = x->prev = NULL;
}

static void
http_xfer_push(struct http_xfer **list, struct http_xfer *x)
{
	x->prev = NULL;
	x->next = *list;
	if (*list != NULL)
		(*list)->prev = x;
	*list = x;
}

/* Call back with the outcome and free x (x must be in c->active). */
static void
http_finish(struct http_client *c, struct http_xfer *x, CURLcode cc,
    const char *why)
{
	struct http_result res;

	http_xfer_unlink(&c->active, x);
	curl_multi_remove_handle(c->multi, x->easy);
	http_result_fill(x, cc, &res);
	if (why != NULL) {
		/* Whatever came of the answer, it did not end: none came. */
		res.err = HTTP_ERR_OTHER;
		res.status = 0;
		snprintf(res.text, sizeof(res.text), "%s", why);
	}
	x->cb(x->arg, &res);
	curl_easy_cleanup(x->easy);
	curl_slist_free_all(x->hdrs);
	if (x->rd_open)
		http_reader_close(&x->rd);
	if (x->body.data == NULL)
		free((char *)x->body.path);
	util_buf_clear(&x->resp);
	free(x);
}

/*
 * A request on a kept connection that failed before any byte of an answer
 * came (the server closed it, a keep-alive timeout ending as the request
 * went out) is sent once more on a new connection, its body from the
 * start, within what is left of its timeout.  libcurl does that by itself
 * only when the close came before it had sent the whole request.  Never
 * after a new connection: that server read the request and failed it.  A
 * service that did take the first (its answer lost) knows the second by
 * its Idempotency-Key.  True: x runs again.
 */
static bool
http_resend(struct http_client *c, struct http_xfer *x, CURLcode cc)
{
	long conns = -1, head = -1;
	curl_off_t spent_us = 0;
	uint64_t spent_ms;

	if (x->resent || (cc != CURLE_SEND_ERROR && cc != CURLE_RECV_ERROR &&
	    cc != CURLE_GOT_NOTHING) || x->resp.len != 0)
		return false;
	if (curl_easy_getinfo(x->easy, CURLINFO_NUM_CONNECTS, &conns) !=
	    CURLE_OK || conns != 0 || curl_easy_getinfo(x->easy,
	    CURLINFO_HEADER_SIZE, &head) != CURLE_OK || head != 0 ||
	    curl_easy_getinfo(x->easy, CURLINFO_TOTAL_TIME_T, &spent_us) !=
	    CURLE_OK)
		return false;
	if ((spent_ms = (uint64_t)spent_us / 1000) >= x->timeout_ms)
		return false;
	curl_multi_remove_handle(c->multi, x->easy);
	if (x->rd_open) {
		http_reader_close(&x->rd);
		x->rd_open = false;
	}
	x->errbuf[0] = '\0';
	x->resent = true;
	curl_easy_setopt(x->easy, CURLOPT_FRESH_CONNECT, 1L);
	curl_easy_setopt(x->easy, CURLOPT_TIMEOUT_MS,
	    (long)(x->timeout_ms - spent_ms));
	curl_multi_add_handle(c->multi, x->easy);
	return true;
}

static void
http_reap(struct http_client *c)
{
	CURLMsg *m;
	CURLcode cc;
	int left;

	while ((m = curl_multi_info_read(c->multi, &left)) != NULL) {
		struct http_xfer *x = NULL;

		if (m->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &x);
		cc = m->data.result;
		if (!http_resend(c, x, cc))
			http_finish(c, x, cc, NULL);
	}
}

/* Take what was submitted; false once told to stop. */
static bool
http_take_pending(struct http_client *c)
{
	struct http_xfer *x;
	bool stop;

	pthread_mutex_lock(&c->mu);
	x = c->pending;
	c->pending = NULL;
	stop = c->stop;
	pthread_mutex_unlock(&c->mu);
	while (x != NULL) {
		struct http_xfer *next = x->next;

		http_xfer_push(&c->active, x);
		curl_multi_add_handle(c->multi, x->easy);
		x = next;
	}
	return !stop;
}

static bool
http_fd_readable(int fd)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };

	while (poll(&pfd, 1, 0) == -1)
		if (errno != EINTR)
			return false;
	return (pfd.revents & POLLIN) != 0;
}

/*
 * End the transfers whose waiter was stopped (its stop_fd readable) or
 * that were cancelled (http_cancel), a connection of theirs closed.
 */
static void
http_cancel_stopped(struct http_client *c)
{
	struct http_xfer *x = c->active, *next;

	for (; x != NULL; x = next) {
		next = x->next;
		if (x->stop_fd != -1 && http_fd_readable(x->stop_fd))
			http_finish(c, x, CURLE_OK,
			    "cancelled: postern is stopping");
		else if (x->cancel != NULL && atomic_load(x->cancel))
			http_finish(c, x, CURLE_OK, "cancelled");
	}
}

/* Wait for curl's sockets, and the stop descriptors of the transfers. */
static void
http_poll(struct http_client *c)
{
	struct curl_waitfd w[HTTP_STOP_FDS_MAX];
	unsigned n = 0;

	for (struct http_xfer *x = c->active; x != NULL; x = x->next) {
		unsigned i = 0;

		while (i < n && w[i].fd != x->stop_fd)
			i++;
		/* More than fit are seen at the next wake-up (a second). */
		if (x->stop_fd == -1 || i < n || n == HTTP_STOP_FDS_MAX)
			continue;
		w[n++] = (struct curl_waitfd){ .fd = x->stop_fd,
		    .events = CURL_WAIT_POLLIN };
	}
	curl_multi_poll(c->multi, w, n, HTTP_POLL_MS, NULL);
}

static void *
http_thread(void *arg)
{
	struct http_client *c = arg;
	int running;

	while (http_take_pending(c)) {
		/* First: a request cancelled as it came never goes out. */
		http_cancel_stopped(c);
		curl_multi_perform(c->multi, &running);
		http_reap(c);
		http_poll(c);
	}
	while (c->active != NULL)
		http_finish(c, c->active, CURLE_OK, "shutting down");
	return NULL;
}

/* ---- the client ---- */

struct http_client *
http_client_new(const char **err_out)
{
	struct http_client *c;

	pthread_once(&http_once, http_global_init);
	if (!http_global_ok) {
		*err_out = "curl_global_init failed";
		return NULL;
	}
	c = xcalloc(1, sizeof(*c));
	pthread_mutex_init(&c->mu, NULL);
	if ((c->multi = curl_multi_init()) == NULL) {
		*err_out = "curl_multi_init failed";
		goto fail;
	}
	if (pthread_create(&c->thread, NULL, http_thread, c) != 0) {
		*err_out = "pthread_create failed";
		curl_multi_cleanup(c->multi);
		goto fail;
	}
	return c;
fail:
	pthread_mutex_destroy(&c->mu);
	free(c);
	return NULL;
}

void
http_client_free(struct http_client **cp)
{
	struct http_client *c = *cp;

	if (c == NULL)
		return;
	*cp = NULL;
	pthread_mutex_lock(&c->mu);
	c->stop = true;
	pthread_mutex_unlock(&c->mu);
	curl_multi_wakeup(c->multi);
	pthread_join(c->thread, NULL);
	curl_multi_cleanup(c->multi);
	pthread_mutex_destroy(&c->mu);
	free(c);
}

void
http_submit_until(struct http_client *c, const struct http_request *r,
    int stop_fd, http_done_cb *cb, void *arg)
{
	struct http_xfer *x = http_xfer_new(c, r, cb, arg);

	x->stop_fd = stop_fd;
	pthread_mutex_lock(&c->mu);
	http_xfer_push(&c->pending, x);
	pthread_mutex_unlock(&c->mu);
	curl_multi_wakeup(c->multi);
}

void
http_cancel(struct http_client *c, atomic_bool *flag)
{
	atomic_store(flag, true);
	curl_multi_wakeup(c->multi);
}

void
http_submit(struct http_client *c, const struct http_request *r,
    http_done_cb *cb, void *arg)
{
	http_submit_until(c, r, -1, cb, arg);
}

/* ---- waiting for one ---- */

struct http_wait {
	pthread_mutex_t		 mu;
	pthread_cond_t		 cv;
	bool			 done;
	struct http_result	*out;
};

static void
http_wait_cb(void *arg, struct http_result *res)
{
	struct http_wait *w = arg;

	pthread_mutex_lock(&w->mu);
	*w->out = *res;		/* the result's memory moves to out */
	w->done = true;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

void
http_perform_until(struct http_client *c, const struct http_request *r,
    int stop_fd, struct http_result *out)
{
	struct http_wait w = { .out = out };

	pthread_mutex_init(&w.mu, NULL);
	pthread_cond_init(&w.cv, NULL);
	http_submit_until(c, r, stop_fd, http_wait_cb, &w);
	pthread_mutex_lock(&w.mu);
	while (!w.done)
		pthread_cond_wait(&w.cv, &w.mu);
	pthread_mutex_unlock(&w.mu);
	pthread_cond_destroy(&w.cv);
	pthread_mutex_destroy(&w.mu);
}

void
http_perform(struct http_client *c, const struct http_request *r,
    struct http_result *out)
{
	http_perform_until(c, r, -1, out);
}
