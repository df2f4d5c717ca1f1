/*
 * config/config.h: postern.conf parsed into an immutable struct config.
 * Knows nothing of sockets or SMTP; other modules read the values.
 */
#ifndef POSTERN_CONFIG_H
#define POSTERN_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/util.h"

/* "tls cert "C" key "K" [name N]", globally or on a listener. */
struct config_tls_cert {
	char		*cert;		/* owned path */
	char		*key;		/* owned path */
	char		*name;		/* owned SNI name, or NULL: from the cert */
	int		 line;
};

/* "auth pam [SERVICE]" or "auth <TABLE>" (crypt(3) hashes). */
struct config_auth {
	const struct config_table *table;	/* borrowed; NULL: PAM */
	char			*pam_service;	/* owned: PAM; default "postern" */
	int			 line;
};

/* "auth-guard N/PERIOD [ban DUR] [tarpit DUR]" or "auth-guard off". */
struct config_guard {
	unsigned	 max;		/* failures per IP or user; 0: off */
	uint64_t	 period_ms;	/* counting window */
	uint64_t	 ban_ms;	/* the IP's time on the ban list */
	uint64_t	 tarpit_ms;	/* wait before each 535 */
};

struct config_upstream;

struct config_listen {
	char		*addr;		/* owned; numeric "127.0.0.1" or "::1" */
	int		 port;
	int		 line;		/* config line, for messages */
	bool		 implicit_tls;	/* "tls": handshake before the greeting */
	bool		 no_starttls;	/* "no-starttls" */
	bool		 require_tls;	/* "require-tls": 530 before STARTTLS */
	bool		 nomail;	/* "nomail": RFC 7504 521 at connect */
	bool		 nomail_after_data; /* "nomail after-data": the
					   message is taken, then 521 */
	bool		 auth;		/* "auth": offer AUTH (after TLS) */
	bool		 auth_plaintext; /* "auth-plaintext": also before TLS */
	bool		 sender_auth;	/* "sender-auth": a hosted sender needs
					   AUTH here */
	bool		 proxy_protocol; /* "proxy-protocol": a PROXY header
					   (v1 or v2) comes first */
	struct util_cidr *proxy_from;	/* owned: "from CIDR...": only these
					   peers send it; NULL: every peer */
	size_t		 nproxy_from;
	struct config_tls_cert *certs;	/* owned; this listener's own, or NULL */
	size_t		 ncerts;
	/* A proxy listener (parse_proxy.c): every session is relayed. */
	const struct config_upstream *proxy;	/* "proxy NAME|URL": borrowed
						   from upstreams; NULL: none */
	const struct config_table *proxy_sni;	/* "proxy-sni <T>": the TLS
						   name -> upstream NAME */
	const struct config_table *proxy_rcpt;	/* "proxy-rcpt <T>": the first
						   recipient's domain -> NAME */
};

struct config_limits {
	uint64_t	msg_max;		/* "limit message-size 35M"; default 35 MiB */
	unsigned	rcpt_max;		/* "limit recipients 100" */
	size_t		line_max;		/* "limit line-length 1000"; 512..65536 */
	unsigned	err_max;		/* "limit errors 10" */
	uint64_t	idle_ms;		/* "limit idle-timeout 5m": from a reply
						   to the end of the next command line */
	uint64_t	data_idle_ms;		/* "limit data-timeout 10m" (DATA block wait) */
	unsigned	data_rate_min;		/* "limit data-rate 500": octets/s that
						   keep data-timeout from running
						   down; 0: any octet renews it */
	uint64_t	session_ms;		/* "limit session-timeout 30m" */
	unsigned	conn_max;		/* "limit connections 1000" */
	unsigned	conn_per_ip_max;	/* "limit connections-per-ip 50" */
	uint64_t	shutdown_ms;		/* "limit shutdown-grace 30s": SIGTERM wait for DATA */
	unsigned	msgs_per_session_max;	/* "limit messages-per-session 1000" */
	unsigned	rcpts_per_session_max;	/* "limit recipients-per-session 1000" */
	uint64_t	greeting_delay_ms;	/* "limit greeting-delay 0s": early-talker wait */
	uint64_t	proxy_timeout_ms;	/* "limit proxy-timeout 5s": wait for
						   a PROXY header */
	unsigned	conn_rate_max;		/* "limit connection-rate N/PERIOD"; 0: off */
	uint64_t	conn_rate_window_ms;
};

/* Is ip (numeric) in one of cfg's trusted networks? */
struct config;
bool	config_is_trusted(const struct config *cfg, const char *ip);

enum config_table_kind { CONFIG_TABLE_INLINE, CONFIG_TABLE_FILE,
	CONFIG_TABLE_PASSWD, CONFIG_TABLE_SQLITE, CONFIG_TABLE_PGSQL,
	CONFIG_TABLE_REDIS };
/* "table NAME KIND:ARG [OPTIONS]"; parsed in parse_table.c. */
struct config_table {
	char			*name;		/* owned */
	enum config_table_kind	 kind;
	char			**items;	/* inline: owned keys, NULL-terminated */
	char			*path;		/* owned: file and sqlite: the path;
						   pgsql: conninfo; redis: HOST:PORT */
	char			*query;		/* owned: sqlite, pgsql: "... $1 ..." */
	char			*prefix;	/* owned: redis key prefix, or NULL */
	bool			 redis_set;	/* redis "set": SMEMBERS, not GET */
	unsigned		 pool;		/* "pool N": connections; default 4 */
	uint64_t		 timeout_ms;	/* "timeout DUR": per lookup; 5 s */
	uint64_t		 cache_ms;	/* "cache DUR|off": found keys */
	uint64_t		 neg_cache_ms;	/* "negative-cache DUR|off" */
	int			 line;
};

/* ---- outbound client: relay, mx, forward, accounts; parsed in
 * parse_relay.c ---- */
enum config_relay_tls {
	CONFIG_RELAY_PLAIN,		/* smtp:// */
	CONFIG_RELAY_STARTTLS,		/* smtp+starttls:// (required) */
	CONFIG_RELAY_TLS,		/* smtp+tls:// (implicit) */
};
/* Where and how to send: a relay action's or an account's options. */
struct config_relay {
	char			*url;		/* owned, as written */
	enum config_relay_tls	 tls;
	char			*host;		/* owned */
	int			 port;
	const struct config_table *auth;	/* borrowed: "auth <T>", entry for
						   host or "default": "user pass" */
	bool			 no_verify;	/* "no-verify" */
	char			*ca_file;	/* "ca FILE"; NULL: system store */
	char			*helo;		/* "helo NAME"; NULL: hostname */
	uint64_t		 timeouts_ms[6];	/* "timeout STEP DUR": connect,
						   greeting, command, data-init,
						   data-block, data-term; 0: default */
	/* POP-before-SMTP: "pop URL user U pass-table <T>" */
	char			*pop_url;	/* owned, or NULL: none */
	enum config_relay_tls	 pop_tls;	/* pop3://, pop3+stls://, pop3s:// */
	char			*pop_host;	/* owned */
	int			 pop_port;
	char			*pop_user;	/* owned */
	const struct config_table *pop_pass;	/* borrowed: entry for pop_user
						   is the password */
	uint64_t		 pop_interval_ms; /* "pop-interval DUR": re-login
						    after; default 60 s */
	uint64_t		 pop_wait_ms;	/* "pop-wait DUR": pause after a
						   login; default 0 */
	/* "rewrite return-path|reply-to|from ADDR" */
	char			*rw_return_path, *rw_reply_to, *rw_from;
	/* mx/forward: "resolver IP[:PORT]", "mx-hosts <T>" */
	char			*resolver;	/* owned, or NULL */
	const struct config_table *mx_hosts;	/* borrowed, or NULL */
};
struct config_account {
	char			*name;		/* owned */
	struct config_relay	 relay;
	int			 line;
};
/* relay-by-sender: "addr" or "@domain" or "default" -> account. */
struct config_sender_map {
	char			*key;		/* owned; its domain an A-label,
						   lower case */
	const struct config_account *account;	/* borrowed */
};
/* ---- end outbound client ---- */

/* ---- webhooks, agents, programs, LMTP: parsed in parse_agent.c ---- */
enum config_hook_format { CONFIG_HOOK_JSON, CONFIG_HOOK_RAW,
	CONFIG_HOOK_TEMPLATE };
/* "webhook URL [OPTIONS]", and the web service of "reply webhook". */
struct config_hook {
	char			*url;		/* owned: http:// or https:// */
	char			*method;	/* owned: "POST" or "PUT" */
	enum config_hook_format	 format;
	char			*template_path;	/* owned: "format template FILE" */
	char			**headers;	/* owned, NULL-terminated:
						   "header "Name: value"", no
						   name postern sets itself */
	size_t			 nheaders;
	const struct config_table *auth;	/* borrowed: "auth <T>": the entry
						   for the URL's host, else
						   "default": "bearer TOKEN" or
						   "basic USER PASSWORD" */
	const struct config_table *secret;	/* borrowed: "secret <T>": the
						   entry for the action's name,
						   else "default", signs */
	char			*ca_file;	/* owned, or NULL */
	bool			 no_verify;
	uint64_t		 timeout_ms;	/* "timeout DUR"; 0: 30 s */
	uint64_t		 response_max;	/* "response-max SIZE" (1..64M);
						   0: unset, 64k */
	uint64_t		 text_max;	/* "text-max SIZE" (1..64M); 0:
						   unset, 1M */
	uint64_t		 attach_max;	/* "attachments SIZE"; 0: none */
	bool			 sync;		/* "sync [DUR]": answer DATA */
	uint64_t		 sync_ms;	/* its bound; default 30 s */
};
enum config_reply_kind { CONFIG_REPLY_TEXT, CONFIG_REPLY_COMMAND,
	CONFIG_REPLY_LUA, CONFIG_REPLY_WEBHOOK };
/* "reply text|command|lua|webhook ... [OPTIONS]" */
struct config_reply {
	enum config_reply_kind	 kind;
	char			*path;		/* owned: text's or lua's FILE */
	char			*function;	/* owned: lua "function NAME" */
	char			**argv;		/* owned: command's, NULL-term. */
	struct config_hook	*hook;		/* owned: webhook's */
	char			*user;		/* owned: command "user U" */
	uint64_t		 timeout_ms;	/* command "timeout DUR" */
	char			*from_name;	/* owned: "from-name TEXT" */
	uint64_t		 period_ms;	/* "period DUR"; default 1d */
};
/* "pipe PROGRAM ARGS... [user U] [timeout DUR]" */
struct config_pipe {
	char			**argv;		/* owned, NULL-terminated */
	char			*user;		/* owned, or NULL */
	uint64_t		 timeout_ms;	/* 0: 10 min */
};
/* "lmtp unix:/PATH | HOST:PORT [timeout STEP DUR]..." */
struct config_lmtp {
	char			*spec;		/* owned, as written */
	char			*unix_path;	/* owned, or NULL: host and port */
	char			*host;		/* owned */
	int			 port;
	uint64_t		 timeouts_ms[6];	/* as config_relay's */
};
/* ---- end webhooks, agents, programs, LMTP ---- */
/*
 * A server a proxy listener relays to: "upstream NAME URL [OPTIONS]", or
 * the URL given on "listen ... proxy URL" (named by that URL, defaults).
 */
struct config_upstream {
	char			*name;		/* owned */
	struct config_relay	 relay;		/* URL and TLS as a relay's:
						   no-verify, ca, timeout */
	bool			 sni_pass;	/* "sni pass": the client's own
						   TLS name, when it sent one */
	char			*sni;		/* "sni NAME"; NULL: the host */
	int			 proxy_protocol; /* "proxy-protocol v1|v2": the
						   version sent; 0: none */
	int			 line;
};

enum config_action_kind { CONFIG_ACTION_MAILDIR, CONFIG_ACTION_DISCARD,
	CONFIG_ACTION_RELAY, CONFIG_ACTION_MX, CONFIG_ACTION_FORWARD,
	CONFIG_ACTION_RELAY_BY_SENDER, CONFIG_ACTION_WEBHOOK,
	CONFIG_ACTION_REPLY, CONFIG_ACTION_PASS_THROUGH, CONFIG_ACTION_PIPE,
	CONFIG_ACTION_LMTP };
/*
 * The keyword of an action kind ("maildir", "relay", ...), as written in
 * "action NAME KIND" and as the spool keeps it; NULL for no kind.
 */
const char *config_action_kind_name(enum config_action_kind kind);
/* The kind a keyword names; false when it names none. */
bool	config_action_kind_find(const char *name,
	    enum config_action_kind *kind_out);
struct config_action {
	char			*name;		/* owned */
	enum config_action_kind	 kind;
	char			*path;		/* maildir: owned template with %{..},
						   or NULL with path_table */
	const struct config_table *path_table;	/* maildir <TABLE>: the path is
						   the recipient's value */
	char			*owner;		/* maildir "as USER": owned */
	const struct config_table *owner_table;	/* maildir "as <TABLE>" (passwd):
						   the recipient's user */
	int			 line;
	/* ---- outbound client ---- */
	struct config_relay	*relay;		/* owned: relay, mx, forward */
	char			*forward_to;	/* owned: forward's address */
	struct config_sender_map *by_sender;	/* owned array: relay-by-sender */
	size_t			 nby_sender;
	/* ---- end outbound client ---- */
	struct config_hook	*hook;		/* owned: webhook */
	struct config_reply	*reply;		/* owned: reply */
	char			*pass_to;	/* owned: pass-through's target */
	struct config_pipe	*pipe;		/* owned: pipe */
	struct config_lmtp	*lmtp;		/* owned: lmtp */
};

enum config_cond_kind {
	CONFIG_COND_ANY,
	CONFIG_COND_TO_DOMAIN,		/* arg: domain (lower-cased) */
	CONFIG_COND_TO_ADDR,		/* arg: address (domain lower-cased) */
	CONFIG_COND_TO_TABLE,		/* table: recipient in table */
	CONFIG_COND_FROM_DOMAIN,
	CONFIG_COND_FROM_ADDR,
	CONFIG_COND_FROM_TABLE,
	CONFIG_COND_FROM_LOCAL,		/* client on a loopback address, or local submission */
	CONFIG_COND_FROM_AUTH,		/* the client authenticated (SMTP AUTH) */
	CONFIG_COND_FROM_IP,		/* client address in net/prefix */
	CONFIG_COND_TO_DOMAIN_TABLE,	/* table: recipient's domain in table */
	CONFIG_COND_FROM_DOMAIN_TABLE,	/* table: sender's domain in table */
};
struct config_cond {
	enum config_cond_kind	 kind;
	char			*arg;		/* owned, or NULL */
	const struct config_table *table;	/* borrowed from config->tables */
	struct util_cidr	 net;		/* FROM_IP: the network */
};
/* "match COND [COND...] action NAME": all conditions must hold. */
struct config_rule {
	struct config_cond	*conds;		/* owned array */
	size_t			 nconds;
	const struct config_action *action;	/* borrowed from config->actions */
	int			 line;
};

/* Queue: "queue ..." statements, parsed in parse_queue.c. */
struct config_queue {
	uint64_t	retry_min_ms;		/* "queue retry-min 30s" */
	uint64_t	retry_max_ms;		/* "queue retry-max 1h" */
	uint64_t	lifetime_ms;		/* "queue lifetime 5d" */
	uint64_t	delay_warning_ms;	/* "queue delay-warning 4h"; 0: off */
	unsigned	concurrency;		/* "queue concurrency 30": deliveries */
	unsigned	dest_concurrency;	/* "queue destination-concurrency 20" */
	uint64_t	reuse_time_ms;		/* "queue connection-reuse-time 2s":
						   idle outbound sessions kept;
						   0: off */
	unsigned	reuse_limit;		/* "queue connection-reuse-limit
						   100": messages per session */
	unsigned	cache_size;		/* "queue connection-cache-size 30":
						   idle sessions kept at once */
	int		seen[9];		/* parser only: line of each setting */
};

/* Handler chains and state store, parsed in parse_chain.c. */
#define CONFIG_STAGE_COUNT	11	/* connect..disconnect, smtp/'s order */
enum config_on_error { CONFIG_ONERR_TEMPFAIL, CONFIG_ONERR_ACCEPT,
	CONFIG_ONERR_REJECT };
struct config_handler {
	char		**argv;		/* owned, NULL-terminated; [0] the handler */
	size_t		 argc;		/* without "on-error X" */
	int		 on_error;	/* enum config_on_error; default tempfail */
	int		 line;
};
struct config_chain {
	struct config_handler	*handlers;	/* owned array, in file order */
	size_t			 nhandlers;
};

/*
 * "transaction-log DIR [commands|replies] [data [SIZE]] [max-file SIZE]
 * [max-total SIZE]"
 */
struct config_translog {
	char		*dir;		/* owned; NULL: off */
	bool		 commands;	/* command lines (default on) */
	bool		 replies;	/* reply lines (default on) */
	uint64_t	 data_max;	/* content per message; 0: none */
	uint64_t	 file_max;	/* default 16 MiB */
	uint64_t	 total_max;	/* the folder; default 1 GiB */
};

struct config {
	char			*path;		/* owned: the file read */
	char			*hostname;	/* "hostname"; default gethostname() */
	char			*spool;		/* "spool PATH"; default "var/spool" */
	char			*spool_keep;	/* "spool ... keep DIR": a copy of
						   each message there; NULL: off */
	uint64_t		 spool_keep_max; /* "... max SIZE": DIR in all;
						   default 1 GiB */
	uint64_t		 spool_log_size; /* "spool log-size SIZE|off":
						   the spool log; 0: off;
						   default 64 MiB */
	char			*greeting;	/* "greeting TEXT"; NULL: default */
	bool			 pipelining_loose; /* "pipelining loose": message
						   text before the 354 is read;
						   default strict: 554, close */
	bool			 early_talker_continue; /* "early-talker continue":
						   note it and go on; default
						   "close": 554, close */
	bool			 early_talker_replies; /* "early-talker ... replies":
						   also before any reply the
						   client must wait for; default
						   "greeting": before it only */
	bool			 log_syslog;	/* "log syslog [FACILITY]" / "log stderr" */
	char			*log_facility;	/* default "mail" */
	int			 log_level;	/* "log level error|warn|info|debug": enum log_level */
	struct config_translog	 translog;	/* "transaction-log DIR ..." */
	char			*log_file;	/* "log file PATH [size N count K]";
						   NULL: stderr or syslog */
	uint64_t		 log_file_size;	/* rotate past it; 0: never */
	unsigned		 log_file_keep;	/* rotated files kept; 5 */
	bool			 log_json;	/* "log format json"; default text */
	char			*pid_file;	/* "pid-file PATH"; NULL: none */
	unsigned		 bind_retries;	/* "bind-retry COUNT [INTERVAL]": a
						   busy address is tried again this
						   many times at start-up; 6 */
	uint64_t		 bind_retry_ms;	/* ... this far apart; 5 s */
	char			*metrics_addr;	/* "metrics listen [ADDR:PORT]
						   [public]"; NULL: no endpoint */
	int			 metrics_port;	/* default 9925 */
	char			*user;		/* "user NAME": run as, once bound (root only) */
	char			*group;		/* "group NAME"; NULL: the user's primary group */
	unsigned		 workers;	/* "workers N": event loops; default: CPUs */
	bool			 workers_spread; /* "workers N spread": the
						   kernel picks loops; default
						   "pack": as few as the load
						   needs */
	struct config_auth	*auths;		/* owned array: "auth pam|<TABLE>",
						   tried in order */
	size_t			 nauths;
	struct config_guard	 auth_guard;	/* "auth-guard ..." */
	const struct config_table **aliases;	/* owned array of borrowed:
						   "alias <T>..." */
	size_t			 naliases;
	unsigned		 alias_depth;	/* "alias ... depth N"; default 8 */
	unsigned		 alias_targets;	/* "alias ... targets N"; 100 */
	const struct config_table *sender_login; /* "sender-login <T>", or NULL */
	char			**sender_auth;	/* owned: "sender-auth" domains
						   (lower case), NULL-terminated */
	const struct config_table **sender_auth_tables; /* owned array of
						   borrowed, NULL-terminated */
	char			**maildir_roots; /* owned: "maildir-root", NULL-
						   terminated, or NULL */
	struct config_tls_cert	*tls_certs;	/* owned array: "tls cert"; [0] default */
	size_t			 ntls_certs;
	char			*tls_selfsigned_dir; /* "tls self-signed DIR" */
	char			*tls_min_version; /* "tls min-version"; NULL: TLSv1.2 */
	char			*tls_ciphers;	/* "tls ciphers"; NULL: OpenSSL's */
	char			*tls_ciphersuites; /* "tls ciphersuites" */
	unsigned		 tls_session_lifetime_s; /* "tls session-
						   lifetime"; 3600; 0: off */
	struct config_limits	 limits;
	struct util_cidr	*trusted;	/* owned array: "trusted CIDR...":
						   clients the per-address limits
						   skip; default loopback */
	size_t			 ntrusted;	/* 0: "trusted none" */
	struct config_queue	 queue;		/* "queue ..." */
	struct config_chain	 chains[CONFIG_STAGE_COUNT]; /* "on STAGE { }" */
	char			*chain_store;	/* "state sqlite PATH" ->
						   "sqlite:PATH"; NULL: default */
	char			*chain_resolver; /* "state resolver IP[:PORT]" */
	/* Lua handlers, parsed in parse_lua.c: "lua budget N
	   memory SIZE allow-unsafe"; 0 / false: the handler's defaults. */
	uint64_t		 lua_budget;	/* instructions per call */
	uint64_t		 lua_memory;	/* bytes per lua_State */
	bool			 lua_allow_unsafe; /* io, os, require, load */
	struct config_listen	*listens;	/* owned array */
	size_t			 nlistens;
	struct config_table	*tables;	/* owned array */
	size_t			 ntables;
	struct config_action	*actions;	/* owned array */
	size_t			 nactions;
	struct config_account	**accounts;	/* owned array of owned: "account"
						   (outbound client) */
	size_t			 naccounts;
	struct config_upstream	**upstreams;	/* owned array of owned:
						   "upstream", and URLs given on
						   "listen ... proxy" */
	size_t			 nupstreams;
	struct config_rule	*rules;		/* owned array, in file order */
	size_t			 nrules;
	struct config_stmt	*stmts;		/* owned array: every statement's
						   first words and line, in file
						   order (config_line_of) */
	size_t			 nstmts;
};

/* Where a statement is: its keyword, the word after it, its line. */
struct config_stmt {
	char	*word;		/* owned */
	char	*word2;		/* owned, or NULL */
	int	 line;
};

/* The largest configuration file read; a larger one is refused. */
#define CONFIG_FILE_MAX		(16u << 20)

/*
 * Parse the file at path.  On success returns the config and *errs_out is
 * NULL.  On failure returns NULL and *errs_out holds every error found, one
 * "FILE:LINE: message\n" line each (owned by the caller: free()).  Reading
 * stops at the first NUL byte or past CONFIG_FILE_MAX bytes (an error).
 */
struct config *config_load(const char *path, char **errs_out);
/* The same, from a string (name is used in messages). */
struct config *config_parse(const char *name, const char *text,
	    char **errs_out);
void	config_free(struct config **cp);

const struct config_action *config_action_find(const struct config *c,
	    const char *name);
const struct config_table *config_table_find(const struct config *c,
	    const char *name);
const struct config_upstream *config_upstream_find(const struct config *c,
	    const char *name);
/*
 * Whether a maildir path, a template or a table's value, fits action a:
 * one that starts with ~ needs an owner (whose home it is), and with one
 * it must be absolute or start with ~.  -1 with *why_out (static text).
 */
int	config_maildir_path_check(const struct config_action *a,
	    const char *path, const char **why_out);
/* True when the config delivers or authenticates through the privileged
 * helper ("auth pam", a maildir action with "as"). */
bool	config_needs_priv(const struct config *c);
/* True when the config gives TLS certificates (or makes a self-signed one). */
bool	config_has_tls(const struct config *c);
/*
 * The line of the first statement that starts with word (and word2 after
 * it, unless word2 is NULL): "limit" "connections", "log" "file"; 0 when
 * there is none.  For messages about a value found wrong after parsing.
 */
int	config_line_of(const struct config *c, const char *word,
	    const char *word2);

/*
 * The words the parser knows, for documentation checks: the i-th keyword
 * that starts a statement, the i-th NAME of "limit NAME", the i-th SETTING
 * of "queue SETTING"; NULL past the last.
 */
const char *config_keyword(size_t i);
const char *config_limit_name(size_t i);
const char *config_queue_setting(size_t i);

#endif
