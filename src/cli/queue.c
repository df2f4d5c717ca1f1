/*
 * cli/queue.c: `postern queue`: list and show what the spool holds (read
 * straight from the spool folders), and flush, hold, release and delete
 * through the running server's control socket (queue/control.c); when no
 * server runs, hold, release and delete act on the spool directly.
 */
#include "cli/cli.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config/config.h"
#include "queue/queue.h"
#include "spool/spool.h"
#include "util/util.h"

static const char usage_queue[] =
    "usage: postern queue [-c FILE] COMMAND [--json] [ID]\n"
    "\n"
    "  list [--json]     messages waiting in the spool, with each pending\n"
    "                    recipient and its last error ('!': on hold)\n"
    "  show [--json] ID  one message: envelope and every recipient's status\n"
    "  flush [ID]        try ID (or every message not on hold) now\n"
    "  hold ID           deliver nothing of ID until released\n"
    "  release ID        undo hold; ID is tried at once\n"
    "  delete ID         remove ID from the spool, without any bounce\n"
    "\n"
    "The spool is the one FILE names (default $POSTERN_CONFIG or "
    CLI_DEFAULT_CONFIG ").\nflush, hold, release and delete go through "
    "the running server\n(<spool>/control.sock).\n";

const char *
cli_default_config(void)
{
	const char *p = getenv("POSTERN_CONFIG");

	return p != NULL && *p != '\0' ? p : CLI_DEFAULT_CONFIG;
}

int
cli_mailq(const char *config)
{
	/* getopt permutes argv but never writes the strings. */
	char *argv[] = { "queue", "-c", (char *)config, "list", NULL };

	return cli_queue(4, argv);
}

/* ---- JSON -------------------------------------------------------------- */

/*
 * s as a JSON string.  RFC 8259 8.1: JSON is UTF-8, so valid UTF-8 passes
 * as it is and each byte that is not part of it (an upstream's reply may
 * hold any) becomes U+FFFD, written \ufffd.
 */
static void
json_str(FILE *f, const char *s)
{
	const unsigned char *p = (const unsigned char *)s, *end;
	size_t k;

	if (s == NULL) {
		fputs("null", f);
		return;
	}
	end = p + strlen(s);
	fputc('"', f);
	for (; p < end; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(f, "\\%c", *p);
		else if (*p < 0x20 || *p == 0x7f)
			fprintf(f, "\\u%04x", *p);
		else if (*p < 0x80)
			fputc(*p, f);
		else if ((k = util_utf8_len(p, end)) == 0)
			fputs("\\ufffd", f);
		else {
			fwrite(p, 1, k, f);
			p += k - 1;
		}
	}
	fputc('"', f);
}

static const char *
rcpt_state(const struct spool_rcpt *r)
{
	if (r->failed)
		return "failed";
	if (r->done)
		return "delivered";
	return r->attempts > 0 ? "deferred" : "pending";
}

/* damage: why the message is damaged, or NULL. */
static void
json_msg(FILE *f, const struct spool_env *e, const char *damage)
{
	fprintf(f, "{\"queue_id\":");
	json_str(f, e->qid);
	fputs(",\"damaged\":", f);
	json_str(f, damage);
	fprintf(f, ",\"arrival_time\":%" PRId64 ",\"size\":%" PRIu64
	    ",\"sender\":", e->received, e->size);
	json_str(f, e->sender);
	fprintf(f, ",\"held\":%s,\"delay_warned\":%s,\"client_ip\":",
	    e->held ? "true" : "false", e->warned ? "true" : "false");
	json_str(f, e->client_ip);
	fputs(",\"recipients\":[", f);
	for (size_t i = 0; i < e->nrcpts; i++) {
		const struct spool_rcpt *r = &e->rcpts[i];
		fprintf(f, "%s{\"address\":", i > 0 ? "," : "");
		json_str(f, r->addr);
		fputs(",\"action\":", f);
		json_str(f, r->action);
		fputs(",\"destination\":", f);
		json_str(f, r->arg);
		fprintf(f, ",\"status\":\"%s\",\"attempts\":%u,"
		    "\"next_attempt\":", rcpt_state(r), r->attempts);
		if (!r->done && r->next_ms > 0)
			fprintf(f, "%" PRIu64, r->next_ms / 1000);
		else
			fputs("null", f);
		fputs(",\"last_error\":", f);
		json_str(f, r->last_err);
		fputs(",\"dsn_status\":", f);
		json_str(f, r->status[0] != '\0' ? r->status : NULL);
		fprintf(f, ",\"bounced\":%s}", r->bounced ? "true" : "false");
	}
	fputs("]}", f);
}

/* ---- human output ------------------------------------------------------ */

static void
fmt_time(char *buf, size_t size, int64_t t)
{
	time_t tt = (time_t)t;
	struct tm tm;

	localtime_r(&tt, &tm);
	if (strftime(buf, size, "%a %b %e %H:%M:%S", &tm) == 0)
		util_strlcpy(buf, "?", size);
}

/* Peer or error text on a terminal: no control bytes. */
static void
print_safe(FILE *f, const char *s)
{
	for (; s != NULL && *s != '\0'; s++)
		fputc((unsigned char)*s < 0x20 || *s == 0x7f ? '?' : *s, f);
}

/* damage: why e is damaged (marked '?'; '!': on hold), or NULL. */
static void
human_list_entry(const struct spool_env *e, const char *damage)
{
	char when[64];

	fmt_time(when, sizeof(when), e->received);
	printf("%-17s%c %8" PRIu64 " %-20s  ", e->qid, damage != NULL ? '?' :
	    e->held ? '!' : ' ', e->size, when);
	print_safe(stdout, e->sender[0] != '\0' ? e->sender :
	    "MAILER-DAEMON");
	putchar('\n');
	if (damage != NULL) {
		printf("%8s(damaged: ", "");
		print_safe(stdout, damage);
		printf(")\n");
	}
	for (size_t i = 0; i < e->nrcpts; i++) {
		const struct spool_rcpt *r = &e->rcpts[i];
		if (r->done && !(r->failed && !r->bounced))
			continue;
		if (r->last_err != NULL) {
			printf("%8s(", "");
			print_safe(stdout, r->last_err);
			printf(")\n");
		}
		printf("%50s", "");
		print_safe(stdout, r->addr);
		putchar('\n');
	}
	putchar('\n');
}

static void
human_show(const struct spool_env *e, const char *damage)
{
	char when[64];

	fmt_time(when, sizeof(when), e->received);
	printf("Queue ID:    %s\n", e->qid);
	printf("State:       %s", damage != NULL ? "damaged: " :
	    e->held ? "on hold" : "queued");
	print_safe(stdout, damage);
	putchar('\n');
	printf("Sender:      <");
	print_safe(stdout, e->sender);
	printf(">\nArrival:     %s\nSize:        %" PRIu64 " octets\n",
	    when, e->size);
	if (e->client_ip != NULL) {
		printf("Client:      ");
		print_safe(stdout, e->client_ip);
		if (e->helo != NULL) {
			printf(" (helo ");
			print_safe(stdout, e->helo);
			putchar(')');
		}
		putchar('\n');
	}
	printf("Recipients:\n");
	for (size_t i = 0; i < e->nrcpts; i++) {
		const struct spool_rcpt *r = &e->rcpts[i];
		printf("  <");
		print_safe(stdout, r->addr);
		printf(">  %s ", r->action);
		print_safe(stdout, r->arg != NULL ? r->arg : "-");
		printf("\n    %s", rcpt_state(r));
		if (r->attempts > 0)
			printf(", %u attempt%s", r->attempts,
			    r->attempts == 1 ? "" : "s");
		if (!r->done && r->next_ms > 0) {
			fmt_time(when, sizeof(when),
			    (int64_t)(r->next_ms / 1000));
			printf(", next %s", when);
		}
		if (r->failed)
			printf(", status %s%s", r->status,
			    r->bounced ? ", reported" : "");
		putchar('\n');
		if (r->last_err != NULL) {
			printf("    ");
			print_safe(stdout, r->last_err);
			putchar('\n');
		}
	}
}

/* ---- commands ---------------------------------------------------------- */

/* What list and show print: the envelope, or why it is damaged. */
struct queue_item {
	struct spool_env env;		/* qid only when unreadable */
	bool		 loaded;
	char		*damage;	/* owned: why, or NULL */
};

static void
queue_item_clear(struct queue_item *it)
{
	spool_env_clear(&it->env);
	free(it->damage);
	it->damage = NULL;
}

static bool
queue_is_gone(struct spool *sp, const char *qid)
{
	struct spool_env e;
	const char *err = NULL;

	if (spool_env_load(sp, qid, &e, &err) == -1)
		return errno == ENOENT;
	spool_env_clear(&e);
	return false;
}

/*
 * Load qid; 0, or -1 when it is gone (delivered meanwhile: its envelope
 * goes first, so content missing after a load may be that too).
 */
static int
queue_item_load(struct spool *sp, const char *qid, struct queue_item *it)
{
	const char *err = NULL;

	memset(it, 0, sizeof(*it));
	if (spool_env_load(sp, qid, &it->env, &err) == -1) {
		if (errno == ENOENT)
			return -1;
		it->damage = xstrdup(err);
		util_strlcpy(it->env.qid, qid, sizeof(it->env.qid));
		return 0;
	}
	it->loaded = true;
	if (spool_content_check(sp, &it->env, &err) == 0)
		return 0;
	it->damage = xstrdup(err);
	if (queue_is_gone(sp, qid)) {
		queue_item_clear(it);
		return -1;
	}
	return 0;
}

static void
human_item(const struct queue_item *it)
{
	if (it->loaded) {
		human_list_entry(&it->env, it->damage);
		return;
	}
	printf("%-17s? %8s %-20s  ?\n%8s(damaged: ", it->env.qid, "-", "-",
	    "");
	print_safe(stdout, it->damage);
	printf(")\n\n");
}

static void
json_item(FILE *f, const struct queue_item *it)
{
	if (!it->loaded) {
		fputs("{\"queue_id\":", f);
		json_str(f, it->env.qid);
		fputs(",\"damaged\":", f);
		json_str(f, it->damage);
		fputc('}', f);
		return;
	}
	json_msg(f, &it->env, it->damage);
}

static int
queue_list(struct spool *sp, bool json)
{
	const char *err = NULL;
	uint64_t kbytes = 0;
	size_t n, shown = 0, damaged = 0;
	char **qids;

	if (spool_list_readonly(sp, &qids, &n, &err) == -1) {
		fprintf(stderr, "postern queue: %s\n", err);
		return 1;
	}
	if (json)
		putchar('[');
	for (size_t i = 0; i < n; i++) {
		struct queue_item it;
		if (queue_item_load(sp, qids[i], &it) == 0) {
			if (json) {
				if (shown > 0)
					putchar(',');
				json_item(stdout, &it);
			} else {
				if (shown == 0)
					printf("-Queue ID-------- --Size-- "
					    "----Arrival Time----  "
					    "-Sender/Recipient-------\n");
				human_item(&it);
			}
			kbytes += (it.env.size + 1023) / 1024;
			shown++;
			damaged += it.damage != NULL;
			queue_item_clear(&it);
		}
		free(qids[i]);
	}
	free(qids);
	if (json)
		printf("]\n");
	else if (shown == 0)
		printf("Mail queue is empty\n");
	else
		printf("-- %" PRIu64 " Kbytes in %zu Request%s.\n", kbytes,
		    shown, shown == 1 ? "" : "s");
	if (damaged == 0)
		return 0;
	fprintf(stderr, "postern queue: %zu damaged message%s in the spool, "
	    "not delivered\n", damaged, damaged == 1 ? "" : "s");
	return 1;
}

/* "postern queue: QID: why" on stderr; 1, the exit status. */
static int
queue_say(const char *qid, const char *why)
{
	fputs("postern queue: ", stderr);
	print_safe(stderr, qid);
	fprintf(stderr, ": %s\n", why);
	return 1;
}

static int
queue_show(struct spool *sp, const char *qid, bool json)
{
	struct queue_item it;
	int rc;

	if (queue_item_load(sp, qid, &it) == -1)
		return queue_say(qid, "no such message");
	if (json) {
		json_item(stdout, &it);
		putchar('\n');
	} else if (it.loaded)
		human_show(&it.env, it.damage);
	else {
		printf("Queue ID:    %s\nState:       damaged: ", qid);
		print_safe(stdout, it.damage);
		putchar('\n');
	}
	rc = it.damage != NULL ? 1 : 0;
	queue_item_clear(&it);
	return rc;
}

static int
queue_no_server(void)
{
	fprintf(stderr, "postern queue: flush: the server is not running; "
	    "the queue is tried when it starts\n");
	return 1;
}

/* No spool folder yet (no server ever ran on it): an empty queue. */
static int
queue_no_spool(const char *verb, const char *qid, bool json)
{
	if (strcmp(verb, "list") == 0) {
		puts(json ? "[]" : "Mail queue is empty");
		return 0;
	}
	if (strcmp(verb, "flush") == 0)
		return queue_no_server();
	return queue_say(qid, "no such message");
}

/* No server: hold, release and delete act on the spool itself. */
static int
queue_offline(struct spool *sp, const char *verb, const char *qid)
{
	struct spool_env e;
	const char *err = NULL;
	int rc;

	if (strcmp(verb, "flush") == 0)
		return queue_no_server();
	/* A damaged message may be held or deleted too. */
	if (spool_env_load(sp, qid, &e, &err) == -1 && errno == ENOENT)
		return queue_say(qid, "no such message");
	spool_env_clear(&e);
	if (strcmp(verb, "delete") == 0)
		rc = spool_remove(sp, qid, &err);
	else
		rc = spool_mark_flag(sp, qid, strcmp(verb, "hold") == 0 ?
		    SPOOL_FLAG_HOLD : SPOOL_FLAG_RELEASE, &err);
	if (rc == -1)
		return queue_say(qid, err);
	printf("%s: %s\n", qid, strcmp(verb, "delete") == 0 ? "deleted" :
	    strcmp(verb, "hold") == 0 ? "on hold" : "released");
	return 0;
}

static int
queue_command(struct spool *sp, const char *verb, const char *qid)
{
	char cmd[128], *reply = NULL;
	const char *err = NULL;

	(void)util_snprintf(cmd, sizeof(cmd), "%s%s%s", verb,
	    qid != NULL ? " " : "", qid != NULL ? qid : "");
	if (queue_control_request(spool_dir(sp), cmd, &reply, &err) == -1) {
		if (errno == EACCES || errno == EPERM) {
			cli_spool_denied("postern queue", spool_dir(sp), err,
			    "");
			return 1;
		}
		if (errno != ENOENT && errno != ECONNREFUSED) {
			fprintf(stderr, "postern queue: %s\n", err);
			return 1;
		}
		/*
		 * No socket, or nobody on it: no server, unless one holds the
		 * spool all the same (stopping, or its socket removed).  The
		 * shared lock also keeps a server from starting meanwhile.
		 */
		if (spool_lock_shared(sp, &err) == -1) {
			fprintf(stderr, "postern queue: %s: %s%s\n", verb, err,
			    errno == EWOULDBLOCK ? ", which does not answer "
			    "(stopping?); nothing done" : "");
			return 1;
		}
		return queue_offline(sp, verb, qid);
	}
	if (strncmp(reply, "ok", 2) != 0) {
		fprintf(stderr, "postern queue: %s%s%s\n", qid != NULL ? qid :
		    "", qid != NULL ? ": " : "", strncmp(reply, "error: ", 7)
		    == 0 ? reply + 7 : reply);
		free(reply);
		return 1;
	}
	free(reply);
	if (strcmp(verb, "flush") == 0)
		printf("%s\n", qid != NULL ? "flushed" :
		    "queue flushed");
	else
		printf("%s: %s\n", qid, strcmp(verb, "delete") == 0 ?
		    "deleted" : strcmp(verb, "hold") == 0 ? "on hold" :
		    "released");
	return 0;
}

int
cli_queue(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *path = cli_default_config(), *verb, *qid;
	struct config *cfg;
	struct spool *sp;
	struct stat st;
	const char *err = NULL;
	char *errs = NULL, *abs;
	bool json = false;
	int ch, rc;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "c:jh", opts, NULL)) != -1)
		switch (ch) {
		case 'c':
			path = optarg;
			break;
		case 'j':
			json = true;
			break;
		case 'h':
			fputs(usage_queue, stdout);
			return 0;
		default:
			fputs(usage_queue, stderr);
			return 2;
		}
	if (optind >= argc) {
		fputs(usage_queue, stderr);
		return 2;
	}
	verb = argv[optind];
	qid = optind + 1 < argc ? argv[optind + 1] : NULL;
	bool want_id = strcmp(verb, "show") == 0 || strcmp(verb, "hold") == 0 ||
	    strcmp(verb, "release") == 0 || strcmp(verb, "delete") == 0;
	bool known = want_id || strcmp(verb, "list") == 0 ||
	    strcmp(verb, "flush") == 0;
	if (!known || (want_id && qid == NULL) || argc - optind > 2 ||
	    (strcmp(verb, "list") == 0 && qid != NULL)) {
		fprintf(stderr, "postern queue: %s ", known ?
		    "bad arguments for" : "unknown command");
		print_safe(stderr, verb);
		fprintf(stderr, "\n%s", usage_queue);
		return 2;
	}
	/* Whatever the command: only a queue id names a spool file. */
	if (qid != NULL && !spool_qid_ok(qid))
		return queue_say(qid, "not a queue id");
	if ((abs = cli_enter_config_dir(path, &err)) == NULL) {
		fprintf(stderr, "postern queue: %s\n", err);
		return 1;
	}
	cfg = config_load(abs, &errs);
	free(abs);
	if (cfg == NULL) {
		fputs(errs, stderr);
		free(errs);
		fprintf(stderr, "postern queue: %s: configuration has errors\n",
		    path);
		return 1;
	}
	/*
	 * A spool not made yet holds nothing: make none (it would be ours,
	 * not the server's).  Root acts as the spool's owner, so that the
	 * folders spool_open makes are the server's too.
	 */
	if (stat(cfg->spool, &st) == -1 && errno == ENOENT) {
		rc = queue_no_spool(verb, qid, json);
		config_free(&cfg);
		return rc;
	}
	if (cli_become_spool_owner(cfg->spool, &err) == -1) {
		fprintf(stderr, "postern queue: %s\n", err);
		config_free(&cfg);
		return 1;
	}
	/* One this user may not use: say so, not which call failed first. */
	if (faccessat(AT_FDCWD, cfg->spool, R_OK | X_OK, AT_EACCESS) == -1 &&
	    (errno == EACCES || errno == EPERM)) {
		cli_spool_denied("postern queue", cfg->spool, util_err("%s: %s",
		    cfg->spool, strerror(errno)), "");
		config_free(&cfg);
		return 1;
	}
	/* Or one of its folders (a spool folder others may enter). */
	if ((sp = spool_open(cfg->spool, &err)) == NULL) {
		if (errno == EACCES || errno == EPERM)
			cli_spool_denied("postern queue", cfg->spool, err, "");
		else
			fprintf(stderr, "postern queue: spool %s: %s\n",
			    cfg->spool, err);
		config_free(&cfg);
		return 1;
	}
	if (strcmp(verb, "list") == 0 || strcmp(verb, "show") == 0) {
		/* A running server writes out what it holds in memory
		   first; without one, nothing is held. */
		char *reply = NULL;
		if (queue_control_request(spool_dir(sp), "writeout", &reply,
		    &err) == 0)
			free(reply);
		rc = verb[0] == 'l' ? queue_list(sp, json) :
		    queue_show(sp, qid, json);
	} else
		rc = queue_command(sp, verb, qid);
	spool_close(&sp);
	config_free(&cfg);
	return rc;
}
