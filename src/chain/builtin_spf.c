/*
 * chain/builtin_spf.c: "spf" at mail (RFC 7208) with libspf2, whose look-ups
 * block, so each check runs on a worker thread and posts its answer back
 * to the session's loop.  The result and a Received-SPF: field become
 * transaction state ("spf", "spf.received"); the policy maps the result to
 * a verdict (RFC 7372 codes).
 */
#include "chain/chain_private.h"

#include <arpa/inet.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <spf2/spf.h>
#include <spf2/spf_dns_zone.h>

#include "chain/session.h"
#include "util/util.h"

struct spf {
	struct util_pool	*pool;		/* owned */
	bool			 reject_softfail;
	uint64_t		 ban_ms;	/* 0: no ban on fail */
};

/* Test hook: answer from these "domain TXT" records only (no DNS). */
static const char *const *spf_test_zone;

void
chain_spf_set_test_zone(const char *const *records)
{
	spf_test_zone = records;
}

static void *
spf_new(const struct chain_handler_args *a, char **err_out)
{
	struct spf *s = xcalloc(1, sizeof(*s));

	for (size_t i = 1; i < a->argc; i++) {
		if (strcmp(a->argv[i], "reject-softfail") == 0)
			s->reject_softfail = true;
		else if (strcmp(a->argv[i], "ban") == 0 && i + 1 < a->argc &&
		    chain_parse_lifetime_ms(a->argv[i + 1], &s->ban_ms) == 0)
			i++;
		else {
			free(s);
			*err_out = xstrdup("usage: spf [reject-softfail] [ban "
			    "DURATION]");
			return NULL;
		}
	}
	s->pool = util_pool_new(4, 0);
	return s;
}

static void
spf_free(void *inst)
{
	struct spf *s = inst;

	util_pool_free(&s->pool);
	free(s);
}

struct spf_job {
	struct chain_call	*call;
	const struct spf	*s;
	struct event		*ev;		/* owned: the way back */
	char			 ip[64];
	char			 helo[256];
	char			 sender[300];
	char			 hostname[256];
	/* results, written by the worker */
	SPF_result_t		 result;
	char			 received[512];
	char			 comment[256];
};

static SPF_server_t *
spf_server(void)
{
	if (spf_test_zone == NULL)
		return SPF_server_new(SPF_DNS_CACHE, 0);
	SPF_server_t *srv = SPF_server_new(SPF_DNS_ZONE, 0);
	for (const char *const *r = spf_test_zone; *r != NULL; r++) {
		const char *sp = strchr(*r, ' ');
		char dom[256];
		if (sp == NULL || (size_t)(sp - *r) >= sizeof(dom))
			continue;
		memcpy(dom, *r, (size_t)(sp - *r));
		dom[sp - *r] = '\0';
		SPF_dns_zone_add_str(srv->resolver, dom, ns_t_txt,
		    NETDB_SUCCESS, sp + 1);
	}
	return srv;
}

/* On a worker thread: the blocking part. */
static void
spf_work(void *arg)
{
	struct spf_job *j = arg;
	SPF_server_t *srv = spf_server();
	SPF_request_t *req = NULL;
	SPF_response_t *resp = NULL;

	j->result = SPF_RESULT_TEMPERROR;
	if (srv == NULL)
		goto out;
	SPF_server_set_rec_dom(srv, j->hostname);
	req = SPF_request_new(srv);
	if (SPF_request_set_ipv4_str(req, j->ip) != SPF_E_SUCCESS &&
	    SPF_request_set_ipv6_str(req, j->ip) != SPF_E_SUCCESS)
		goto out;
	if (j->helo[0] != '\0')
		SPF_request_set_helo_dom(req, j->helo);
	/* RFC 7208 2.4: a null reverse-path is checked as postmaster@HELO. */
	if (j->sender[0] != '\0')
		SPF_request_set_env_from(req, j->sender);
	SPF_request_query_mailfrom(req, &resp);
	if (resp != NULL) {
		j->result = SPF_response_result(resp);
		const char *r = SPF_response_get_received_spf_value(resp);
		util_strlcpy(j->received, r != NULL ? r : "",
		    sizeof(j->received));
		const char *c = SPF_response_get_smtp_comment(resp);
		util_strlcpy(j->comment, c != NULL ? c : "",
		    sizeof(j->comment));
	}
out:
	if (resp != NULL)
		SPF_response_free(resp);
	if (req != NULL)
		SPF_request_free(req);
	if (srv != NULL)
		SPF_server_free(srv);
	event_active(j->ev, EV_TIMEOUT, 1);
}

/* Back on the loop. */
static void
spf_back_cb(evutil_socket_t fd, short what, void *arg)
{
	struct spf_job *j = arg;
	struct chain_session *cs = chain_call_session(j->call);
	struct chain_verdict v;
	const char *res = SPF_strresult(j->result);

	(void)fd;
	(void)what;
	event_free(j->ev);
	if (cs != NULL) {
		char rcv[CHAIN_VALUE_MAX];
		for (char *p = j->received; *p != '\0'; p++)
			if ((unsigned char)*p < 0x20 ||
			    (unsigned char)*p > 0x7e)
				*p = ' ';
		util_strlcpy(rcv, j->received, sizeof(rcv));
		chain_kv_set(cs, CHAIN_SCOPE_TX, "spf", res);
		chain_kv_set(cs, CHAIN_SCOPE_TX, "spf.received", rcv);
	}
	chain_verdict_continue(&v);
	switch (j->result) {
	case SPF_RESULT_FAIL:
		/* RFC 7372 3.2: 5.7.23 for an SPF fail. */
		chain_verdict_reject(&v, 550, "5.7.23", "SPF check failed for "
		    "%{sender.domain} from %{client.ip}");
		if (j->s->ban_ms != 0 && cs != NULL)
			chain_session_ban(cs, j->s->ban_ms, "spf fail");
		break;
	case SPF_RESULT_SOFTFAIL:
		if (j->s->reject_softfail)
			chain_verdict_reject(&v, 550, "5.7.23", "SPF softfail "
			    "for %{sender.domain} from %{client.ip}");
		break;
	case SPF_RESULT_TEMPERROR:
		chain_verdict_reject(&v, 451, "4.7.24", "Temporary SPF error "
		    "for %{sender.domain}, try again later");
		break;
	default:
		break;
	}
	util_snprintf(v.why, sizeof(v.why), "spf=%s", res);
	chain_call_done(j->call, &v);
	free(j);
}

static enum chain_status
spf_run(void *inst, struct chain_call *call, struct chain_verdict *v)
{
	struct spf *s = inst;
	struct chain_session *cs = chain_call_session(call);
	struct spf_job *j = xcalloc(1, sizeof(*j));

	(void)v;
	j->call = call;
	j->s = s;
	util_strlcpy(j->ip, cs->ip, sizeof(j->ip));
	util_strlcpy(j->helo, cs->helo != NULL ? cs->helo : "",
	    sizeof(j->helo));
	util_strlcpy(j->sender, cs->sender != NULL ? cs->sender : "",
	    sizeof(j->sender));
	util_strlcpy(j->hostname, cs->hostname, sizeof(j->hostname));
	j->ev = event_new(cs->loop->base, -1, 0, spf_back_cb, j);
	util_pool_submit(s->pool, spf_work, j);
	return CHAIN_PENDING;
}

const struct chain_handler_ops chain_spf_ops[] = {
	{ "spf", CHAIN_STAGE_BIT(SMTP_STAGE_MAIL) |
	    CHAIN_STAGE_BIT(SMTP_STAGE_RCPT), spf_new, spf_free, spf_run,
	    NULL, NULL },
	{ NULL, 0, NULL, NULL, NULL, NULL, NULL },
};
