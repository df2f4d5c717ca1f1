/*
 * metrics/http.c: the endpoint Prometheus scrapes, served by libevent's
 * evhttp on a thread and event loop of its own, so a scrape never waits
 * on (or delays) a session.  GET /metrics and GET /healthz; anything else
 * is 404, any other method 405 (413 when it carries a body: none is read),
 * HTTP/1.1 without exactly one Host 400, HTTP/0.x 505; the answer is
 * always HTTP/1.0 or HTTP/1.1.  A request line of HTTP/2 or later never
 * reaches us: evhttp (2.1) refuses it as it parses it, with its own 400
 * page, and has no hook to answer otherwise.  So does a request line (or
 * header section) over MET_HTTP_HEADERS_MAX, where RFC 9112 3 would have
 * 414 (URI Too Long).
 */
#include "metrics/metrics.h"

#include <sys/queue.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/http_struct.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define MET_HTTP_TIMEOUT_S	10
#define MET_HTTP_HEADERS_MAX	8192
#define MET_HTTP_PAUSE_MS	1000	/* no accept after a failed one */

struct metrics_http {
	pthread_t		 thread;
	struct event_base	*base;		/* owned */
	struct evhttp		*http;		/* owned; closes the socket */
	struct event		*stop_ev;	/* owned */
	struct evconnlistener	*lev;		/* evhttp's own */
	struct event		*resume_ev;	/* owned: accepts again */
	metrics_health_cb	*health;
	void			*health_arg;
};

static void
met_http_reply(struct evhttp_request *req, int code, const char *reason,
    const char *type, const char *body, size_t len)
{
	struct evbuffer *out = evbuffer_new();
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);

	if (out == NULL)
		fatal("evbuffer_new failed");
	evhttp_add_header(h, "Content-Type", type);
	evhttp_add_header(h, "Cache-Control", "no-store");
	if (evhttp_request_get_command(req) != EVHTTP_REQ_HEAD)
		evbuffer_add(out, body, len);
	evhttp_send_reply(req, code, reason, out);
	evbuffer_free(out);
}

/*
 * What is wrong with the request itself (RFC 9110 15.5.6, RFC 9112 2.3 and
 * 3.2): answered here, true; else false.  The answer's version is the
 * server's (evhttp would echo the request's).
 */
static bool
met_http_refused(struct evhttp_request *req)
{
	static const char text[] = "GET or HEAD /metrics or /healthz, "
	    "HTTP/1.x with one Host\n";
	enum evhttp_cmd_type m = evhttp_request_get_command(req);
	struct evkeyvalq *in = evhttp_request_get_input_headers(req);
	struct evkeyval *kv;
	bool major_ok = req->major == 1;
	int hosts = 0;

	if (!major_ok || req->minor > 1) {
		req->major = 1;
		req->minor = 1;
	}
	TAILQ_FOREACH(kv, in, next)
		hosts += strcasecmp(kv->key, "Host") == 0;
	if (!major_ok)
		met_http_reply(req, 505, "HTTP Version Not Supported",
		    "text/plain; charset=utf-8", text, sizeof(text) - 1);
	else if (m != EVHTTP_REQ_GET && m != EVHTTP_REQ_HEAD) {
		evhttp_add_header(evhttp_request_get_output_headers(req),
		    "Allow", "GET, HEAD");
		met_http_reply(req, 405, "Method Not Allowed",
		    "text/plain; charset=utf-8", text, sizeof(text) - 1);
	} else if (hosts > 1 || (hosts == 0 && req->minor == 1))
		met_http_reply(req, 400, "Bad Request",
		    "text/plain; charset=utf-8", text, sizeof(text) - 1);
	else
		return false;
	return true;
}

static void
met_http_metrics_cb(struct evhttp_request *req, void *arg)
{
	struct util_buf b = { 0 };

	(void)arg;
	if (met_http_refused(req))
		return;
	metrics_render(&b);
	met_http_reply(req, 200, "OK", "text/plain; version=0.0.4; "
	    "charset=utf-8", b.data != NULL ? b.data : "", b.len);
	util_buf_clear(&b);
}

static void
met_http_health_cb(struct evhttp_request *req, void *arg)
{
	struct metrics_http *h = arg;

	if (met_http_refused(req))
		return;
	const char *why = h->health != NULL ? h->health(h->health_arg) : NULL;
	char *text = why == NULL ? xstrdup("ok\n") : xasprintf("%s\n", why);

	met_http_reply(req, why == NULL ? 200 : 503, why == NULL ? "OK" :
	    "Service Unavailable", "text/plain; charset=utf-8", text,
	    strlen(text));
	free(text);
}

static void
met_http_other_cb(struct evhttp_request *req, void *arg)
{
	static const char body[] = "not found: GET /metrics or /healthz\n";

	(void)arg;
	if (met_http_refused(req))
		return;
	met_http_reply(req, 404, "Not Found", "text/plain; charset=utf-8",
	    body, sizeof(body) - 1);
}

static void
met_http_stop_cb(evutil_socket_t fd, short what, void *arg)
{
	struct metrics_http *h = arg;

	(void)fd;
	(void)what;
	event_base_loopbreak(h->base);
}

/*
 * accept(2) failed (out of descriptors, most likely): the socket stays
 * readable, so trying again at once would spin.  Accepts pause a while;
 * the SMTP listeners have descriptors of their own kept in reserve.
 */
static _Thread_local struct metrics_http *met_http_self;	/* its thread's */

static void
met_http_accept_error_cb(struct evconnlistener *lev, void *arg)
{
	struct timeval tv = util_timeval_ms(MET_HTTP_PAUSE_MS);

	(void)arg;			/* evhttp's, not ours */
	evconnlistener_disable(lev);
	evtimer_add(met_http_self->resume_ev, &tv);
}

static void
met_http_resume_cb(evutil_socket_t fd, short what, void *arg)
{
	struct metrics_http *h = arg;

	(void)fd;
	(void)what;
	evconnlistener_enable(h->lev);
}

static void *
met_http_main(void *arg)
{
	struct metrics_http *h = arg;

	met_http_self = h;
	if (event_base_dispatch(h->base) == -1)
		fatal("metrics: event_base_dispatch failed");
	return NULL;
}

struct metrics_http *
metrics_http_new(int fd, metrics_health_cb *health, void *health_arg,
    const char **err_out)
{
	struct metrics_http *h = xcalloc(1, sizeof(*h));
	struct evhttp_bound_socket *bound = NULL;

	h->health = health;
	h->health_arg = health_arg;
	if ((h->base = event_base_new()) == NULL ||
	    (h->http = evhttp_new(h->base)) == NULL)
		fatal("metrics: cannot make the HTTP server");
	/* Every method reaches the callbacks, which answer 405. */
	evhttp_set_allowed_methods(h->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD |
	    EVHTTP_REQ_POST | EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
	    EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE | EVHTTP_REQ_CONNECT |
	    EVHTTP_REQ_PATCH);
	evhttp_set_timeout(h->http, MET_HTTP_TIMEOUT_S);
	evhttp_set_max_headers_size(h->http, MET_HTTP_HEADERS_MAX);
	evhttp_set_max_body_size(h->http, 0);
	evhttp_set_cb(h->http, "/metrics", met_http_metrics_cb, h);
	evhttp_set_cb(h->http, "/healthz", met_http_health_cb, h);
	evhttp_set_gencb(h->http, met_http_other_cb, h);
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) == -1 ||
	    (bound = evhttp_accept_socket_with_handle(h->http, fd)) == NULL) {
		*err_out = util_err("metrics: cannot serve HTTP on the socket");
		close(fd);
		evhttp_free(h->http);
		event_base_free(h->base);
		free(h);
		return NULL;
	}
	h->stop_ev = event_new(h->base, -1, 0, met_http_stop_cb, h);
	h->resume_ev = evtimer_new(h->base, met_http_resume_cb, h);
	h->lev = evhttp_bound_socket_get_listener(bound);
	evconnlistener_set_error_cb(h->lev, met_http_accept_error_cb);
	if (pthread_create(&h->thread, NULL, met_http_main, h) != 0)
		fatal("metrics: pthread_create failed");
	return h;
}

void
metrics_http_free(struct metrics_http **hp)
{
	struct metrics_http *h = *hp;

	if (h == NULL)
		return;
	event_active(h->stop_ev, EV_TIMEOUT, 1);
	pthread_join(h->thread, NULL);
	evhttp_free(h->http);
	event_free(h->stop_ev);
	event_free(h->resume_ev);
	event_base_free(h->base);
	free(h);
	*hp = NULL;
}
