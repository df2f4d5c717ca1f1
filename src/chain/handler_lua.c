/*
 * chain/handler_lua.c: 'lua "FILE" [function NAME] [budget N] [memory SIZE]
 * [allow-unsafe]' handlers.  The script is read and checked once per config
 * (chain_set_new; a SIGHUP rebuilds the set, so it is reloaded then).  Each
 * handler line gets its own lua_State per event loop, made on its first
 * call and keyed by the event_base, so every worker loop may run the script
 * at once and two lines never share globals.  The script
 * runs in its own _ENV built from an allow-list; each call has an
 * instruction budget and each state a memory cap.  Any error is a handler
 * FAIL (its on-error policy applies), never a crash.
 */
#include "chain/chain_private.h"

#include <ctype.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chain/lua_pattern.h"
#include "config/config.h"
#include "log/log.h"
#include "util/util.h"

#define HLUA_BUDGET_DEFAULT	1000000
#define HLUA_MEMORY_DEFAULT	(16u * 1024 * 1024)
#define HLUA_LINE_MAX		(64u * 1024)	/* eom lines iterator */

/* The per-state context: the sandbox's, and the running call. */
struct hlua_ctx {
	struct chain_lua_ctx	 box;		/* first: the allocator's ud */
	struct chain_session	*cs;		/* during a call only */
	/* what the protected trampolines work on */
	const struct hlua_inst	*li;
	const char		*fn;
	enum smtp_stage		 stage;
	struct chain_verdict	*v;
};

struct hlua_loop_state {
	const void		*base;		/* key: the event_base */
	lua_State		*L;
	struct hlua_ctx		*ctx;
};

struct hlua_inst {
	char			*path;
	char			*chunkname;	/* "@path": messages say path:line */
	char			*func;		/* NULL: the stage's name */
	char			*src;		/* the script, read once */
	size_t			 srclen;
	int			 budget;
	size_t			 mem_cap;
	bool			 unsafe;
	pthread_mutex_t		 mu;		/* guards states */
	struct hlua_loop_state	**states;	/* one per loop; stable */
	size_t			 nstates;
};

/* ----- the postern API and state ----- */

static struct chain_session *
hlua_cs(lua_State *L)
{
	struct hlua_ctx *c;

	lua_getallocf(L, (void **)&c);
	if (c->cs == NULL)
		luaL_error(L, "no session outside a handler call");
	return c->cs;
}

/* state.session.get(key) / state.tx.get(key)  [-1, +1, e] */
static int
hlua_state_get(lua_State *L)
{
	enum chain_scope sc = (enum chain_scope)lua_tointeger(L,
	    lua_upvalueindex(1));
	const char *key = luaL_checkstring(L, 1);
	const char *v = chain_kv_get(hlua_cs(L), sc, key);

	if (v == NULL)
		lua_pushnil(L);				/* [nil] */
	else
		lua_pushstring(L, v);			/* [v] */
	return 1;
}

/* state.X.set(key, value|nil) -> true or false  [-2, +1, e] */
static int
hlua_state_set(lua_State *L)
{
	enum chain_scope sc = (enum chain_scope)lua_tointeger(L,
	    lua_upvalueindex(1));
	size_t klen, vlen = 0;
	const char *key = luaL_checklstring(L, 1, &klen);
	const char *val = lua_isnoneornil(L, 2) ? NULL :
	    luaL_tolstring(L, 2, &vlen);		/* [key val str] */

	/* A NUL would end the C string there: refused, never cut. */
	if (strlen(key) != klen || (val != NULL && strlen(val) != vlen)) {
		lua_pushboolean(L, 0);
		return 1;
	}
	lua_pushboolean(L, chain_kv_set(hlua_cs(L), sc, key, val) == 0);
	return 1;
}

/*
 * The eom line iterator over the message file, in a userdata (counted in
 * the state's memory).  It keeps no descriptor: a script may keep any
 * number of iterators, so each read of the next chunk opens the file and
 * closes it again.
 */
struct hlua_flines {
	off_t		off;		/* of buf[0] in the file */
	size_t		pos, len;	/* buf[pos..len) not yet returned */
	bool		eof;
	char		buf[8192];
	char		path[];		/* the message's file */
};

/* The next chunk of the file into fl->buf; -1 when it cannot be read. */
static int
hlua_flines_fill(struct hlua_flines *fl)
{
	int fd = open(fl->path, O_RDONLY | O_CLOEXEC);
	ssize_t got;

	if (fd == -1)
		return -1;
	got = pread(fd, fl->buf, sizeof(fl->buf), fl->off + (off_t)fl->len);
	close(fd);
	if (got == -1)
		return -1;
	fl->off += (off_t)fl->len;
	fl->pos = 0;
	fl->len = (size_t)got;
	fl->eof = got == 0;
	return 0;
}

/* The next line, without its LF (at most HLUA_LINE_MAX).  [-0, +1, e] */
static int
hlua_lines_next(lua_State *L)
{
	struct hlua_flines *fl = luaL_checkudata(L, lua_upvalueindex(1),
	    "postern.file");
	const char *now = chain_session_message_file(hlua_cs(L));
	luaL_Buffer b;
	size_t n = 0;

	/* Kept past its message: that message is gone, so is the iterator. */
	if (fl->eof || now == NULL || strcmp(now, fl->path) != 0)
		return 0;
	luaL_buffinit(L, &b);			/* [buf?] */
	for (;;) {
		if (fl->pos == fl->len && hlua_flines_fill(fl) == -1)
			return luaL_error(L, "cannot read the message");
		if (fl->eof) {
			if (n == 0)
				return 0;
			break;
		}
		size_t take = fl->len - fl->pos < HLUA_LINE_MAX - n ?
		    fl->len - fl->pos : HLUA_LINE_MAX - n;
		const char *p = fl->buf + fl->pos, *nl = memchr(p, '\n', take);
		if (nl != NULL)
			take = (size_t)(nl - p);
		luaL_addlstring(&b, p, take);
		fl->pos += take + (nl != NULL ? 1 : 0);
		n += take;
		if (nl != NULL || n == HLUA_LINE_MAX)
			break;
	}
	luaL_pushresult(&b);			/* [line] */
	return 1;
}

/* The eom line iterator over the message in memory.  [-0, +1, e] */
struct hlua_mlines {
	uint64_t	serial;		/* the message it walks */
	size_t		off;
};

static int
hlua_mlines_next(lua_State *L)
{
	struct hlua_mlines *m = luaL_checkudata(L, lua_upvalueindex(1),
	    "postern.mlines");
	size_t len, n;
	uint64_t serial;
	const char *d = chain_session_message_mem(hlua_cs(L), &len, &serial);

	/* Kept past its message: that message is gone, so is the iterator. */
	if (d == NULL || serial != m->serial || m->off >= len)
		return 0;
	n = len - m->off < HLUA_LINE_MAX ? len - m->off : HLUA_LINE_MAX;
	const char *p = d + m->off, *nl = memchr(p, '\n', n);
	if (nl != NULL)
		n = (size_t)(nl - p);
	lua_pushlstring(L, p, n);			/* [line] */
	m->off += n + (nl != NULL ? 1 : 0);
	return 1;
}

/* facts.lines(): an iterator over the message's lines.  [-0, +1, e] */
static int
hlua_lines(lua_State *L)
{
	struct chain_session *cs = hlua_cs(L);
	const char *path = chain_session_message_file(cs);
	size_t len;
	uint64_t serial;
	struct hlua_flines *fl;

	if (path == NULL) {
		if (chain_session_message_mem(cs, &len, &serial) == NULL)
			return luaL_error(L, "no message before eom");
		struct hlua_mlines *m = lua_newuserdatauv(L, sizeof(*m), 0);
		m->serial = serial;			/* [ud] */
		m->off = 0;
		luaL_setmetatable(L, "postern.mlines");
		lua_pushcclosure(L, hlua_mlines_next, 1);	/* [iter] */
		return 1;
	}
	len = strlen(path);
	fl = lua_newuserdatauv(L, sizeof(*fl) + len + 1, 0);	/* [ud] */
	memset(fl, 0, sizeof(*fl));
	memcpy(fl->path, path, len + 1);
	luaL_setmetatable(L, "postern.file");
	lua_pushcclosure(L, hlua_lines_next, 1);		/* [iter] */
	return 1;
}

/* ----- states ----- */

static void
hlua_loop_state_close(struct hlua_loop_state *s)
{
	if (s->L != NULL)
		lua_close(s->L);
	free(s->ctx);
	s->L = NULL;
	s->ctx = NULL;
}

/*
 * Build _ENV and run the script in it; in protected mode, so running out
 * of memory is an error, not a panic.  [-0, +0, e]
 */
static int
hlua_open_tramp(lua_State *L)
{
	struct hlua_ctx *c;

	lua_getallocf(L, (void **)&c);
	const struct hlua_inst *li = c->li;
	luaL_openlibs(L);				/* [] */
	chain_lua_bound_patterns(L, (uint64_t)li->budget *
	    CHAIN_LUA_PATTERN_STEPS);
	luaL_newmetatable(L, "postern.file");		/* [mt] */
	lua_pop(L, 1);					/* [] */
	luaL_newmetatable(L, "postern.mlines");		/* [mt] */
	lua_pop(L, 1);					/* [] */
	chain_lua_env_push(L, li->unsafe);		/* [env] */
	chain_lua_run_chunk(L, li->src, li->srclen, li->chunkname); /* [env] */
	return 0;
}

/* A new state with the script run in its sandbox; -1 with *err_out. */
static int
hlua_state_open(const struct hlua_inst *li, struct hlua_loop_state *s,
    char **err_out)
{
	struct hlua_ctx *c = xcalloc(1, sizeof(*c));
	lua_State *L;

	c->box.cap = li->mem_cap;
	c->box.budget = li->budget;
	c->box.path = li->path;
	c->li = li;
	s->ctx = c;
	s->L = L = lua_newstate(chain_lua_alloc, c);
	if (L == NULL) {
		*err_out = xstrdup("cannot create a Lua state");
		goto fail;
	}
	lua_pushcfunction(L, hlua_open_tramp);		/* [f] */
	if (chain_lua_pcall(L, 0, err_out) != LUA_OK)	/* [] or [err] */
		goto fail;
	return 0;
fail:
	hlua_loop_state_close(s);
	return -1;
}

/* The state of this loop, made on first use.  NULL with *err_out. */
static struct hlua_loop_state *
hlua_state_for(struct hlua_inst *li, const void *base, char **err_out)
{
	struct hlua_loop_state *s = NULL;

	pthread_mutex_lock(&li->mu);
	for (size_t i = 0; i < li->nstates; i++)
		if (li->states[i]->base == base) {
			s = li->states[i];
			break;
		}
	if (s == NULL) {
		li->states = xreallocarray(li->states, li->nstates + 1,
		    sizeof(*li->states));
		s = li->states[li->nstates++] = xcalloc(1, sizeof(*s));
		s->base = base;
	}
	pthread_mutex_unlock(&li->mu);
	/* Only this loop's thread touches *s from here on. */
	if (s->L == NULL && hlua_state_open(li, s, err_out) == -1)
		return NULL;
	return s;
}

/* ----- config ----- */

static void
hlua_free(void *inst)
{
	struct hlua_inst *li = inst;

	if (li == NULL)
		return;
	for (size_t i = 0; i < li->nstates; i++) {
		hlua_loop_state_close(li->states[i]);
		free(li->states[i]);
	}
	free(li->states);
	pthread_mutex_destroy(&li->mu);
	free(li->path);
	free(li->chunkname);
	free(li->func);
	free(li->src);
	free(li);
}

static void *
hlua_new(const struct chain_handler_args *a, char **err_out)
{
	struct hlua_inst *li = xcalloc(1, sizeof(*li));
	struct util_buf b = { 0 };
	uint64_t n;

	pthread_mutex_init(&li->mu, NULL);
	/* Defaults: the config's "lua ..." line, else ours. */
	li->budget = a->cfg->lua_budget != 0 ? (int)a->cfg->lua_budget :
	    HLUA_BUDGET_DEFAULT;
	li->mem_cap = a->cfg->lua_memory != 0 ? (size_t)a->cfg->lua_memory :
	    HLUA_MEMORY_DEFAULT;
	li->unsafe = a->cfg->lua_allow_unsafe;
	if (a->argc < 2 || a->argv[1][0] == '\0')
		goto usage;
	/* A relative FILE is relative to the config file's folder. */
	const char *slash = a->file != NULL ? strrchr(a->file, '/') : NULL;
	if (a->argv[1][0] != '/' && slash != NULL)
		li->path = xasprintf("%.*s/%s", (int)(slash - a->file),
		    a->file, a->argv[1]);
	else
		li->path = xstrdup(a->argv[1]);
	li->chunkname = xasprintf("@%s", li->path);
	for (size_t i = 2; i < a->argc; i++) {
		const char *w = a->argv[i];
		if (strcmp(w, "allow-unsafe") == 0 ||
		    strcmp(w, "lua-allow-unsafe") == 0)
			li->unsafe = true;
		else if (i + 1 >= a->argc)
			goto usage;
		else if (strcmp(w, "function") == 0 && li->func == NULL &&
		    chain_lua_name_ok(a->argv[i + 1]))
			li->func = xstrdup(a->argv[++i]);
		else if ((strcmp(w, "budget") == 0 ||
		    strcmp(w, "lua-budget") == 0) &&
		    util_parse_size(a->argv[i + 1], &n) == 0 && n >= 1000 &&
		    n <= 1000000000) {
			li->budget = (int)n;
			i++;
		} else if ((strcmp(w, "memory") == 0 ||
		    strcmp(w, "lua-memory") == 0) &&
		    util_parse_size(a->argv[i + 1], &n) == 0 &&
		    n >= 64 * 1024 && n <= 1024u * 1024 * 1024) {
			li->mem_cap = (size_t)n;
			i++;
		} else
			goto usage;
	}
	if (chain_lua_read(li->path, &li->src, &li->srclen, err_out) == -1)
		goto fail;

	/* Load and run it once now: syntax errors are config errors. */
	struct hlua_loop_state s = { 0 };
	const char *fn = li->func != NULL ? li->func :
	    chain_stage_name(a->stage);
	if (hlua_state_open(li, &s, err_out) == -1)
		goto fail;
	lua_getfield(s.L, LUA_REGISTRYINDEX, CHAIN_LUA_ENV_KEY); /* [env] */
	lua_getfield(s.L, -1, fn);			/* [env f] */
	bool ok = lua_isfunction(s.L, -1);
	hlua_loop_state_close(&s);
	if (!ok) {
		*err_out = xasprintf("%s: no function \"%s\"", li->path, fn);
		goto fail;
	}
	return li;
usage:
	*err_out = xstrdup("usage: lua \"FILE\" [function NAME] [budget N] "
	    "[memory SIZE] [allow-unsafe] (budget 1000..1000000000, memory "
	    "64k..1G)");
fail:
	util_buf_clear(&b);
	hlua_free(li);
	return NULL;
}

/* ----- a call ----- */

static void
hlua_set_fact(lua_State *L, struct chain_session *cs, const char *name,
    const char *field)
{
	char buf[4096];
	const char *v = chain_session_get(cs, name, buf, sizeof(buf));

	if (v == NULL)
		return;
	lua_pushstring(L, v);				/* [t v] */
	lua_setfield(L, -2, field);			/* [t] */
}

/* Push the facts table.  [-0, +1, m] */
static void
hlua_push_facts(lua_State *L, struct chain_session *cs, enum smtp_stage st)
{
	size_t hlen;
	const char *h;

	lua_newtable(L);				/* [t] */
	for (const char *const *n = chain_fact_names; *n != NULL; n++)
		hlua_set_fact(L, cs, *n, *n);
	lua_newtable(L);				/* [t client] */
	hlua_set_fact(L, cs, "client.ip", "ip");
	hlua_set_fact(L, cs, "client.port", "port");
	hlua_set_fact(L, cs, "client.rdns", "rdns");
	lua_setfield(L, -2, "client");			/* [t] */
	lua_newtable(L);				/* [t tls] */
	hlua_set_fact(L, cs, "tls.proto", "proto");
	hlua_set_fact(L, cs, "tls.cipher", "cipher");
	hlua_set_fact(L, cs, "tls.sni", "sni");
	lua_setfield(L, -2, "tls");			/* [t] */
	lua_pushstring(L, chain_stage_name(st));	/* [t stage] */
	lua_setfield(L, -2, "stage");			/* [t] */
	if ((st == SMTP_STAGE_HEADER || st == SMTP_STAGE_EOM) &&
	    (h = chain_session_headers(cs, &hlen)) != NULL) {
		lua_pushlstring(L, h, hlen);		/* [t hdrs] */
		lua_setfield(L, -2, "headers");		/* [t] */
	}
	if (st == SMTP_STAGE_EOM && chain_session_message_file(cs) != NULL) {
		lua_pushstring(L, chain_session_message_file(cs));
		lua_setfield(L, -2, "message");		/* [t] */
	}
	if (st == SMTP_STAGE_EOM && (chain_session_message_file(cs) != NULL ||
	    chain_session_message_mem(cs, &hlen, NULL) != NULL)) {
		lua_pushcfunction(L, hlua_lines);	/* [t f] */
		lua_setfield(L, -2, "lines");		/* [t] */
	}
}

/* Push { get = f, set = f } for scope.  [-0, +1, m] */
static void
hlua_push_scope(lua_State *L, enum chain_scope sc)
{
	lua_newtable(L);				/* [t] */
	lua_pushinteger(L, sc);				/* [t sc] */
	lua_pushcclosure(L, hlua_state_get, 1);		/* [t get] */
	lua_setfield(L, -2, "get");			/* [t] */
	lua_pushinteger(L, sc);				/* [t sc] */
	lua_pushcclosure(L, hlua_state_set, 1);		/* [t set] */
	lua_setfield(L, -2, "set");			/* [t] */
}

/*
 * Copy the string at idx whole into dst; false when it is no string (or
 * number), holds a NUL or does not fit: the answer is then refused, never
 * sent or stored cut short (the cut copy of a long one is only for the
 * log).  [-0, +0, m]
 */
static bool
hlua_copy_string(lua_State *L, int idx, char *dst, size_t dstsz)
{
	size_t len = 0;

	dst[0] = '\0';
	if (!lua_isstring(L, idx))
		return false;
	const char *s = lua_tolstring(L, idx, &len);
	if (strlen(s) != len)
		return false;
	return util_strlcpy(dst, s, dstsz) == 0;
}

/* Field i of the table at the top into dst as hlua_copy_string does; an
 * absent field leaves dst as it is.  [-0, +0, m] */
static bool
hlua_copy_field(lua_State *L, int i, char *dst, size_t dstsz)
{
	bool ok = true;

	if (lua_rawgeti(L, -1, i) != LUA_TNIL)		/* [r x] */
		ok = hlua_copy_string(L, -1, dst, dstsz);
	lua_pop(L, 1);					/* [r] */
	return ok;
}

/*
 * Field i of the table at the top as an integer: dflt when it is absent,
 * bad when it is there but no whole number (550.5, "x", a table).
 */
static lua_Integer
hlua_int_field(lua_State *L, int i, lua_Integer dflt, lua_Integer bad)
{
	int isnum = 0;

	int t = lua_rawgeti(L, -1, i);			/* [r x] */
	lua_Integer n = lua_tointegerx(L, -1, &isnum);
	lua_pop(L, 1);					/* [r] */
	return t == LUA_TNIL ? dflt : isnum ? n : bad;
}

/* {"reject"|"disconnect", code, esc, text} into v; a code not a whole
 * number in 400..599, or a field too long, with a NUL or not a string,
 * leaves v->code -1, which run.c refuses as a bad reply.  A code left out
 * stays 0: run.c gives the stage's default. */
static void
hlua_reply(lua_State *L, bool tbl, bool disc, struct chain_verdict *v)
{
	bool given = false;
	lua_Integer code = 0;

	if (tbl) {
		given = lua_rawgeti(L, -1, 2) != LUA_TNIL;	/* [r x] */
		lua_pop(L, 1);					/* [r] */
		code = hlua_int_field(L, 2, 0, -1);
	}
	/* Checked before it is narrowed to an int: 2^32 + 550 is no 550;
	 * and a 0 given is no code, not the default. */
	chain_verdict_reject(v, !given ? 0 : code >= 400 && code <= 599 ?
	    (int)code : -1, NULL, NULL);
	if (tbl && (!hlua_copy_field(L, 3, v->esc, sizeof(v->esc)) ||
	    !hlua_copy_field(L, 4, v->text, sizeof(v->text))))
		v->code = -1;
	if (disc)
		v->kind = CHAIN_DISCONNECT;
}

/* The verdict from the value at the top.  [-0, +0, -] */
static void
hlua_verdict(lua_State *L, const char *path, enum smtp_stage stage,
    struct chain_verdict *v)
{
	char word[32] = "";
	bool tbl = lua_istable(L, -1);

	chain_verdict_continue(v);
	if (lua_isnil(L, -1))
		return;
	if (!tbl && lua_type(L, -1) != LUA_TSTRING) {
		chain_verdict_fail(v, "%s: bad verdict (a %s)", path,
		    luaL_typename(L, -1));
		return;
	}
	if (!(tbl ? hlua_copy_field(L, 1, word, sizeof(word)) :
	    hlua_copy_string(L, -1, word, sizeof(word)))) {
		chain_verdict_fail(v, "%s: bad verdict word", path);
		return;
	}
	if (strcmp(word, "continue") == 0)
		return;
	if (strcmp(word, "accept") == 0)
		v->kind = CHAIN_ACCEPT;
	else if (strcmp(word, "discard") == 0)
		v->kind = CHAIN_DISCARD;
	else if (strcmp(word, "reject") == 0 || strcmp(word, "disconnect") ==
	    0) {
		hlua_reply(L, tbl, word[0] == 'd', v);
	} else if (strcmp(word, "delay") == 0 && tbl) {
		lua_Integer ms = hlua_int_field(L, 2, -1, -1);
		if (ms < 0)
			chain_verdict_fail(v, "%s: delay needs ms", path);
		else {
			v->kind = CHAIN_DELAY;
			v->delay_ms = (uint64_t)ms;
			util_strlcpy(v->why, "lua", sizeof(v->why));
		}
	} else if (strcmp(word, "quarantine") == 0 && tbl) {
		v->kind = CHAIN_QUARANTINE;
		if (!hlua_copy_field(L, 2, v->name, sizeof(v->name)))
			chain_verdict_fail(v, "%s: quarantine action not a "
			    "string of at most %d characters", path,
			    CHAIN_KEY_MAX - 1);
		else if (v->name[0] == '\0')
			chain_verdict_fail(v, "%s: quarantine needs an action",
			    path);
	} else if (strcmp(word, "tag") == 0 && tbl) {
		char sc[16] = "";
		v->kind = CHAIN_TAG;
		if (!hlua_copy_field(L, 2, v->name, sizeof(v->name)) ||
		    !hlua_copy_field(L, 3, v->value, sizeof(v->value))) {
			chain_verdict_fail(v, "%s: tag key longer than %d or "
			    "value longer than %d characters, or not a string "
			    "with no NUL", path, CHAIN_KEY_MAX - 1,
			    CHAIN_VALUE_MAX - 1);
			return;
		}
		bool sc_ok = hlua_copy_field(L, 4, sc, sizeof(sc));
		v->scope = strcmp(sc, "session") == 0 ? CHAIN_SCOPE_SESSION :
		    strcmp(sc, "tx") == 0 ? CHAIN_SCOPE_TX :
		    stage >= SMTP_STAGE_MAIL && stage <= SMTP_STAGE_EOM ?
		    CHAIN_SCOPE_TX : CHAIN_SCOPE_SESSION;
		if (!sc_ok || (sc[0] != '\0' && strcmp(sc, "session") != 0 &&
		    strcmp(sc, "tx") != 0))
			chain_verdict_fail(v, "%s: tag scope not \"session\" "
			    "or \"tx\"", path);
		else if (v->name[0] == '\0')
			chain_verdict_fail(v, "%s: tag needs a key", path);
	} else
		chain_verdict_fail(v, "%s: unknown verdict \"%s\"", path,
		    word);
}

/*
 * Call the stage's function with (facts, state) and turn its answer into
 * *c->v; in protected mode.  [-0, +0, e]
 */
static int
hlua_run_tramp(lua_State *L)
{
	struct hlua_ctx *c;

	lua_getallocf(L, (void **)&c);
	lua_getfield(L, LUA_REGISTRYINDEX, CHAIN_LUA_ENV_KEY);	/* [env] */
	lua_getfield(L, -1, c->fn);			/* [env f] */
	if (!lua_isfunction(L, -1)) {
		chain_verdict_continue(c->v);
		return 0;
	}
	hlua_push_facts(L, c->cs, c->stage);		/* [env f facts] */
	lua_newtable(L);				/* [env f facts state] */
	hlua_push_scope(L, CHAIN_SCOPE_SESSION);	/* [.. state s] */
	lua_setfield(L, -2, "session");			/* [.. state] */
	hlua_push_scope(L, CHAIN_SCOPE_TX);		/* [.. state t] */
	lua_setfield(L, -2, "tx");			/* [.. state] */
	chain_lua_budget_arm(L);
	lua_call(L, 2, 1);				/* [env r] */
	chain_lua_budget_disarm(L);
	hlua_verdict(L, c->box.path, c->stage, c->v);	/* [env r] */
	return 0;
}

static enum chain_status
hlua_run(void *inst, struct chain_call *call, struct chain_verdict *v)
{
	struct hlua_inst *li = inst;
	struct chain_session *cs = chain_call_session(call);
	enum smtp_stage st = chain_call_stage(call);
	const char *fn = li->func != NULL ? li->func : chain_stage_name(st);
	char *err = NULL;
	struct hlua_loop_state *s = hlua_state_for(li, chain_session_base(cs),
	    &err);

	chain_verdict_continue(v);
	/* facts.headers would be cut short: refused, as header does. */
	if ((st == SMTP_STAGE_HEADER || st == SMTP_STAGE_EOM) &&
	    chain_header_block_refuse(cs, v))
		goto log;
	if (s == NULL) {
		chain_verdict_fail(v, "%s", err);
		free(err);
		goto log;
	}
	lua_State *L = s->L;
	struct hlua_ctx *c = s->ctx;
	c->cs = cs;
	c->fn = fn;
	c->stage = st;
	c->v = v;
	c->box.over_budget = false;
	lua_settop(L, 0);				/* [] */
	lua_pushcfunction(L, hlua_run_tramp);		/* [f] */
	int rc = chain_lua_pcall(L, 0, &err);		/* [] or [err] */
	if (rc != LUA_OK) {
		chain_verdict_fail(v, "%s", err);
		free(err);
	}
	c->cs = NULL;
	c->v = NULL;
	lua_settop(L, 0);				/* [] */
	if (rc != LUA_OK) {
		/* Start clean: drop whatever the script piled up. */
		if (c->box.over_budget || rc == LUA_ERRMEM ||
		    c->box.used > li->mem_cap / 2)
			hlua_loop_state_close(s);
		else
			lua_gc(L, LUA_GCCOLLECT);
	}
log:
	/* run.c logs a FAIL with v->why (script:line: message). */
	return CHAIN_DONE;
}

/*
 * The level of a long bracket opening at p ("[[", "[=[", ...): the number
 * of '=', or -1 when p opens none.
 */
static int
hlua_long_open(const char *p, const char *end)
{
	int n = 0;

	if (p >= end || *p != '[')
		return -1;
	for (p++; p < end && *p == '='; p++)
		n++;
	return p < end && *p == '[' ? n : -1;
}

/* Past the long bracket of level n closing at or after p; end if none. */
static const char *
hlua_long_close(const char *p, const char *end, int n)
{
	for (; p < end; p++) {
		const char *q = p + 1;
		int k = 0;

		if (*p != ']')
			continue;
		while (q < end && *q == '=' && k < n) {
			q++;
			k++;
		}
		if (k == n && q < end && *q == ']')
			return q + 1;
	}
	return end;
}

/* Does [p, end) hold "message" as a word of its own? */
static bool
hlua_has_word(const char *p, const char *end)
{
	static const char word[] = "message";
	const size_t wl = sizeof(word) - 1;

	for (const char *q = p; q + wl <= end; q++) {
		if (memcmp(q, word, wl) != 0)
			continue;
		bool before = q > p && (isalnum((unsigned char)q[-1]) ||
		    q[-1] == '_');
		bool after = q + wl < end && (isalnum((unsigned char)q[wl]) ||
		    q[wl] == '_');
		if (!before && !after)
			return true;
	}
	return false;
}

/*
 * A script that names "message" (facts.message, facts["message"]: in its
 * code or in any string) gets the message on disk at eom; facts.lines()
 * works from memory too.  Comments do not count: a script that only says
 * "message" in them keeps the delivery in memory.  Strings are skipped as
 * Lua reads them, so a "--" inside one starts no comment.
 */
static bool
hlua_reads_file(const void *inst)
{
	const struct hlua_inst *li = inst;
	const char *p = li->src, *end = li->src + li->srclen, *code = p;
	int lvl;

	while (p < end) {
		if (*p == '"' || *p == '\'') {
			char q = *p++;

			while (p < end && *p != q && *p != '\n')
				p += *p == '\\' && p + 1 < end ? 2 : 1;
			p += p < end;
		} else if ((lvl = hlua_long_open(p, end)) >= 0) {
			p = hlua_long_close(p + lvl + 2, end, lvl);
		} else if (p + 1 < end && p[0] == '-' && p[1] == '-') {
			if (hlua_has_word(code, p))
				return true;
			p += 2;
			if ((lvl = hlua_long_open(p, end)) >= 0)
				p = hlua_long_close(p + lvl + 2, end, lvl);
			else
				while (p < end && *p != '\n')
					p++;
			code = p;
		} else
			p++;
	}
	return hlua_has_word(code, end);
}

const struct chain_handler_ops chain_lua_ops[] = {
	{ "lua", CHAIN_STAGES_ALL, hlua_new, hlua_free, hlua_run, NULL,
	    hlua_reads_file },
	{ NULL, 0, NULL, NULL, NULL, NULL, NULL },
};
