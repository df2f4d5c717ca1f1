/*
 * http/http.h: the HTTP client shared by webhooks and reply agents.  One
 * thread per client runs libcurl's multi interface; requests come from any
 * thread and are answered on that thread through a callback, or waited for
 * by a worker thread.  No event loop ever waits on HTTP.  Also the request
 * bodies (memory, or a spooled file sent with CRLF line ends, streamed)
 * and the HMAC-SHA256 signature over them.  Knows nothing of SMTP.
 */
#ifndef POSTERN_HTTP_H
#define POSTERN_HTTP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HTTP_TIMEOUT_DEFAULT_MS		(30u * 1000)
#define HTTP_CONNECT_TIMEOUT_DEFAULT_MS	(10u * 1000)
#define HTTP_RESPONSE_MAX_DEFAULT	(64u * 1024)

/* A request body: in memory, or a file streamed as it is sent. */
struct http_body {
	const char	*data;		/* borrowed until the request is done;
					   NULL: path, or no body */
	size_t		 len;
	const char	*path;		/* a file, read as it goes out */
	bool		 crlf;		/* path: send each LF as CRLF (spooled
					   content to message/rfc822) */
};

/*
 * Bytes the body has as sent (*len_out), and when key is not NULL the
 * lower-case hex HMAC-SHA256 (65 bytes with the NUL) of "<ts>." followed
 * by those bytes into sig_out.  Reads a file body once.  0, or -1 with
 * *err_out (thread-local text).
 */
int	http_body_scan(const struct http_body *b, const void *key,
	    size_t keylen, int64_t ts, uint64_t *len_out, char *sig_out,
	    const char **err_out);

struct http_request {
	const char	*url;		/* http:// or https:// only */
	const char	*method;	/* "POST" or "PUT"; NULL: POST */
	const char	*content_type;	/* NULL: none sent */
	const char *const *headers;	/* "Name: value" (the value may be
					   empty), NULL-terminated */
	struct http_body body;
	uint64_t	 body_len;	/* as http_body_scan() measured it */
	const char	*bearer;	/* "Authorization: Bearer" token */
	const char	*user, *pass;	/* basic authentication */
	const char	*ca_file;	/* trust anchors; NULL: system store */
	bool		 no_verify;	/* skip certificate verification */
	uint64_t	 timeout_ms;	/* the whole exchange; 0: 30 s */
	uint64_t	 connect_timeout_ms;	/* 0: 10 s */
	size_t		 response_max;	/* response body kept; 0: 64 KiB */
	const atomic_bool *cancel;	/* borrowed until the request is done;
					   once true (http_cancel) it is
					   cancelled; NULL: never */
};

enum http_err {
	HTTP_OK,		/* a response came (any status) */
	HTTP_ERR_CONNECT,	/* no connection: refused, DNS, ... */
	HTTP_ERR_TIMEOUT,
	HTTP_ERR_TLS,		/* handshake or certificate */
	HTTP_ERR_TOO_BIG,	/* the response passed response_max */
	HTTP_ERR_BODY,		/* our body could not be read */
	HTTP_ERR_OTHER,		/* protocol error, shutdown, ... */
};

struct http_result {
	enum http_err	 err;
	long		 status;	/* HTTP status; 0 when none came */
	char		 text[256];	/* err: what went wrong, for logs */
	char		*body;		/* owned, NUL-terminated; may be "" */
	size_t		 body_len;
	char		*content_type;	/* owned, or NULL */
	int64_t		 retry_after_s;	/* Retry-After (seconds or a date,
					   from now); -1: none */
};
void	http_result_clear(struct http_result *r);

/*
 * Is the failure temporary by RFC 9110's lights: no response, a timeout,
 * 408, 429 or 5xx?  (A 2xx is not a failure; other statuses are final.)
 */
bool	http_result_retryable(const struct http_result *r);

struct http_client;

/* Start the client's thread.  NULL with *err_out (static text). */
struct http_client *http_client_new(const char **err_out);
/* Stop: what is still running ends with HTTP_ERR_OTHER; joins; frees. */
void	http_client_free(struct http_client **cp);

/*
 * Called once per request, on the client's thread: must not block.  res
 * is the callee's: it takes what it wants and calls http_result_clear().
 */
typedef void http_done_cb(void *arg, struct http_result *res);

/*
 * Start r (copied: r and its strings may go once this returns, except a
 * memory body, which must live until cb).  Thread-safe; never blocks.
 */
void	http_submit(struct http_client *c, const struct http_request *r,
	    http_done_cb *cb, void *arg);
/*
 * The same, but once stop_fd (borrowed; -1: none) is readable the request
 * is cancelled: cb gets HTTP_ERR_OTHER and no status within a moment.
 */
void	http_submit_until(struct http_client *c, const struct http_request *r,
	    int stop_fd, http_done_cb *cb, void *arg);
/*
 * Cancel the requests of c submitted with r->cancel == flag: *flag becomes
 * true, and each ends with HTTP_ERR_OTHER and no status at once, its
 * connection closed.  Thread-safe; never blocks.  c must still be alive;
 * a request already ended is left as it was.
 */
void	http_cancel(struct http_client *c, atomic_bool *flag);
/* Submit r and wait for the result (worker threads, never a loop). */
void	http_perform(struct http_client *c, const struct http_request *r,
	    struct http_result *out);
/*
 * The same, but once stop_fd (borrowed; -1: none) is readable the request
 * is cancelled: it ends with HTTP_ERR_OTHER and no status, whatever part
 * of the answer came, within a moment.
 */
void	http_perform_until(struct http_client *c, const struct http_request *r,
	    int stop_fd, struct http_result *out);

#endif
