/*
 * chain/lua_sandbox.c: what every Lua script of postern runs in, handler
 * or agent: a state whose allocator counts against a cap, an instruction
 * budget and a run time per call (the library functions that loop in C
 * charged to the budget, no finalizers, no xpcall handler past it), an
 * _ENV built from an allow-list (io, os, load and co. only with
 * allow-unsafe) plus postern.log, and the script read once and run in it.
 * Knows nothing of sessions or messages.
 */
#include "chain/chain_private.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log/log.h"
#include "util/util.h"

void *
chain_lua_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
	struct chain_lua_ctx *c = ud;
	size_t old = ptr != NULL ? osize : 0;

	if (nsize == 0) {
		free(ptr);
		c->used -= old;
		return NULL;
	}
	if (nsize > old && c->used - old + nsize > c->cap)
		return NULL;		/* Lua raises a memory error */
	void *p = realloc(ptr, nsize);
	if (p == NULL)
		return NULL;
	c->used = c->used - old + nsize;
	/* Grown past what the count hook's interval was set for: one
	 * instruction may now walk far more, so check at the next one. */
	if (c->L != NULL && !c->over_budget && c->used > c->check_used) {
		c->check_used = SIZE_MAX;
		c->every = 1;
		lua_sethook(c->L, chain_lua_budget_hook, LUA_MASKCOUNT, 1);
	}
	return p;
}

/* A call's run time: its budget at a microsecond an instruction, at least
 * CHAIN_LUA_TIME_MIN_MS, so what pure instructions cannot hold the loop
 * (walking long strings: comparing, converting) is bounded too. */
static uint64_t
chain_lua_time_ms(const struct chain_lua_ctx *c)
{
	uint64_t ms = (uint64_t)c->budget / 1000;

	return ms > CHAIN_LUA_TIME_MIN_MS ? ms : CHAIN_LUA_TIME_MIN_MS;
}

/*
 * End the call: it ran out of budget or time in the Lua function of ar,
 * or (ar NULL) in a C function, whose caller luaL_error names.  [-0, +0, v]
 */
static int
chain_lua_out_of_budget(lua_State *L, struct chain_lua_ctx *c, lua_Debug *ar)
{
	char what[64];

	c->over_budget = true;
	/* Every further instruction fails too, even under pcall. */
	lua_sethook(L, chain_lua_budget_hook, LUA_MASKCOUNT, 1);
	if (c->late)
		snprintf(what, sizeof(what), "run time of %llu ms",
		    (unsigned long long)chain_lua_time_ms(c));
	else
		snprintf(what, sizeof(what), "instruction budget of %d",
		    c->budget);
	if (ar == NULL)
		return luaL_error(L, "%s exceeded", what);
	/* Not luaL_error: it would add its caller's place to ar's. */
	lua_getinfo(L, "Sl", ar);
	lua_pushfstring(L, "%s:%d: %s exceeded", ar->short_src,
	    ar->currentline, what);
	return lua_error(L);
}

/*
 * Arm the count hook for the next check: after CHAIN_LUA_CHECK_EVERY
 * instructions, fewer the more bytes the state holds (an instruction may
 * compare, copy or convert its longest string), never past the budget.
 */
static void
chain_lua_check_next(lua_State *L, struct chain_lua_ctx *c)
{
	size_t n = CHAIN_LUA_CHECK_BYTES / (c->used + 1);
	int every = n < CHAIN_LUA_CHECK_EVERY ? (n > 0 ? (int)n : 1) :
	    CHAIN_LUA_CHECK_EVERY;

	if (every > c->budget - c->done)
		every = c->budget - c->done;
	c->every = every;
	c->check_used = c->used < SIZE_MAX / 2 ? 2 * c->used : SIZE_MAX;
	if (c->check_used < CHAIN_LUA_CHECK_BYTES / CHAIN_LUA_CHECK_EVERY)
		c->check_used = CHAIN_LUA_CHECK_BYTES / CHAIN_LUA_CHECK_EVERY;
	lua_sethook(L, chain_lua_budget_hook, LUA_MASKCOUNT, every);
}

/*
 * Count hook: count the instructions since the last check (an early check
 * for memory grown counts one), then end the call out of budget or past
 * its run time, or arm the next check.  [-0, +0, v]
 */
void
chain_lua_budget_hook(lua_State *L, lua_Debug *ar)
{
	struct chain_lua_ctx *c;

	lua_getallocf(L, (void **)&c);
	if (!c->over_budget) {
		c->done += c->every;
		if (c->done < c->budget) {
			if (util_now_ms() <= c->deadline_ms) {
				chain_lua_check_next(L, c);
				return;
			}
			c->late = true;
		}
	}
	chain_lua_out_of_budget(L, c, ar);
}

void
chain_lua_budget_arm(lua_State *L)
{
	struct chain_lua_ctx *c;

	lua_getallocf(L, (void **)&c);
	c->over_budget = false;
	c->late = false;
	c->steps = 0;
	c->pm_steps = 0;
	c->done = 0;
	c->L = L;
	c->deadline_ms = util_now_ms() + chain_lua_time_ms(c);
	chain_lua_check_next(L, c);
}

void
chain_lua_budget_disarm(lua_State *L)
{
	struct chain_lua_ctx *c;

	lua_getallocf(L, (void **)&c);
	lua_sethook(L, NULL, 0, 0);
	c->L = NULL;
}

/*
 * The message handler of chain_lua_pcall: an error that names no place
 * gets the one it was raised from, the first Lua function up the stack
 * (error() itself is C, and so are the library functions we wrap, which
 * leave luaL_error no Lua caller to name); a value that is no string says
 * what it was.  [-0, +1, m]
 */
static int
chain_lua_where_msgh(lua_State *L)
{
	lua_Debug ar;
	bool str = lua_type(L, 1) == LUA_TSTRING;
	const char *what;

	what = str || lua_type(L, 1) == LUA_TNUMBER ? lua_tostring(L, 1) :
	    lua_pushfstring(L, "error object is a %s value",
	    luaL_typename(L, 1));			/* [err what?] */
	for (int level = 1; lua_getstack(L, level, &ar); level++) {
		lua_getinfo(L, "Sl", &ar);
		if (ar.currentline <= 0)
			continue;
		size_t n = strlen(ar.short_src);
		if (str && strncmp(what, ar.short_src, n) == 0 &&
		    what[n] == ':')
			break;				/* placed already */
		lua_pushfstring(L, "%s:%d: %s", ar.short_src,
		    ar.currentline, what);		/* [err what? msg] */
		return 1;
	}
	lua_pushstring(L, what);			/* [err what? msg] */
	return 1;
}

int
chain_lua_pcall(lua_State *L, int nargs, char **err_out)
{
	struct chain_lua_ctx *c;
	int base = lua_gettop(L) - nargs;		/* [.. f args] */

	lua_getallocf(L, (void **)&c);
	lua_pushcfunction(L, chain_lua_where_msgh);	/* [.. f args h] */
	lua_insert(L, base);				/* [.. h f args] */
	int rc = lua_pcall(L, nargs, 0, base);		/* [.. h] or [.. h err] */
	lua_remove(L, base);				/* [..] or [.. err] */
	chain_lua_budget_disarm(L);
	if (rc == LUA_OK)
		return rc;
	const char *m = lua_tostring(L, -1);
	/* No handler runs for LUA_ERRMEM (nor could it allocate). */
	*err_out = rc == LUA_ERRMEM ? xasprintf("%s: memory cap of %zu bytes "
	    "exceeded", c->path, c->cap) : xstrdup(m != NULL ? m :
	    "script error");
	return rc;
}

void
chain_lua_check_time(lua_State *L)
{
	struct chain_lua_ctx *c;

	lua_getallocf(L, (void **)&c);
	if (util_now_ms() <= c->deadline_ms)
		return;
	c->late = true;
	chain_lua_out_of_budget(L, c, NULL);
}

/*
 * Charge n steps of work done in C (no instruction counts it) to the
 * call: more than CHAIN_LUA_C_STEPS per instruction of the budget, summed
 * over the call, ends it like the budget does, and so does a call past
 * its run time (the hook may not have looked for a while).  [-0, +0, v]
 */
static void
chain_lua_charge(lua_State *L, lua_Unsigned n)
{
	struct chain_lua_ctx *c;
	uint64_t max;

	lua_getallocf(L, (void **)&c);
	max = (uint64_t)c->budget * CHAIN_LUA_C_STEPS;
	if (n > max - c->steps)		/* c->steps <= max: cannot wrap */
		chain_lua_out_of_budget(L, c, NULL);
	c->steps += n;
	chain_lua_check_time(L);
}

/* a * b, or LUA_MAXINTEGER when that is more. */
static lua_Unsigned
chain_lua_mul(lua_Unsigned a, lua_Unsigned b)
{
	if (b != 0 && a > (lua_Unsigned)LUA_MAXINTEGER / b)
		return LUA_MAXINTEGER;
	return a * b;
}

/* lua_Integer a..b holds this many; 0 when b < a. */
static lua_Unsigned
chain_lua_span(lua_Integer a, lua_Integer b)
{
	return b < a ? 0 : (lua_Unsigned)b - (lua_Unsigned)a + 1;
}

/* #t of a table argument (its __len counts); 0 for anything else. */
static lua_Unsigned
chain_lua_len(lua_State *L, int idx)
{
	lua_Integer n = lua_istable(L, idx) ? luaL_len(L, idx) : 0;

	return n > 0 ? (lua_Unsigned)n : 0;
}

/* The length of the longest string among t[1..n], t at 1.  [-0, +0, e] */
static size_t
chain_lua_longest(lua_State *L, lua_Unsigned n)
{
	size_t max = 0;

	for (lua_Unsigned i = 1; i <= n; i++) {
		if (lua_geti(L, 1, (lua_Integer)i) == LUA_TSTRING &&
		    lua_rawlen(L, -1) > max)		/* [.. v] */
			max = lua_rawlen(L, -1);
		lua_pop(L, 1);				/* [..] */
	}
	return max;
}

/*
 * The steps a call of a library function that loops in C will take, from
 * its arguments, before it runs: string.rep repeats n times even when
 * nothing is allocated (string.rep("", 1e15)), table.move moves e-f+1
 * elements whatever the table holds, and the rest walk #t or i..j.
 */
static lua_Unsigned
chain_lua_steps(lua_State *L, int kind)
{
	lua_Unsigned len, n;

	switch (kind) {
	case 'r':		/* string.rep(s, n [, sep]) */
		return chain_lua_span(1, luaL_checkinteger(L, 2));
	case 'm':		/* table.move(a1, f, e, t [, a2]) */
		return chain_lua_span(luaL_checkinteger(L, 2),
		    luaL_checkinteger(L, 3));
	case 'c':		/* table.concat(t [, sep [, i [, j]]]) */
	case 'u':		/* table.unpack(t [, i [, j]]) */
		if (lua_isnoneornil(L, kind == 'c' ? 4 : 3))
			return chain_lua_len(L, 1);
		return chain_lua_span(luaL_optinteger(L, kind == 'c' ? 3 : 2,
		    1), luaL_checkinteger(L, kind == 'c' ? 4 : 3));
	case 's':		/* table.sort(t [, comp]): n log n */
		n = len = chain_lua_len(L, 1);
		for (lua_Unsigned k = len; k > 1; k /= 2)	/* + len a level */
			n = n > LUA_MAXINTEGER - len ? LUA_MAXINTEGER : n + len;
		if (!lua_isnoneornil(L, 2))
			return n;	/* comp's instructions are counted */
		/* Each comparison may walk the longest string of t: paid for
		 * at the rate of CHAIN_LUA_CMP_BYTES a step, after n log n
		 * for walking t to find it. */
		chain_lua_charge(L, n);
		return chain_lua_mul(n, chain_lua_longest(L, len) /
		    CHAIN_LUA_CMP_BYTES);
	default:		/* table.insert, table.remove: shift #t */
		return chain_lua_len(L, 1);
	}
}

/* A library function charged its steps first (upvalues: f, kind). */
static int
chain_lua_counted(lua_State *L)
{
	int n;

	chain_lua_charge(L, chain_lua_steps(L, (int)lua_tointeger(L,
	    lua_upvalueindex(2))));
	n = lua_gettop(L);
	lua_pushvalue(L, lua_upvalueindex(1));		/* [args f] */
	lua_insert(L, 1);				/* [f args] */
	lua_call(L, n, LUA_MULTRET);			/* [results] */
	return lua_gettop(L);
}

/*
 * setmetatable(t, mt) without __gc: a finalizer runs when the collector
 * decides, outside any call and its budget (a collection after an error,
 * lua_close at reload), so a script may not have one.  [-2, +1, e]
 */
static int
chain_lua_setmetatable(lua_State *L)
{
	if (lua_istable(L, 2)) {
		lua_pushliteral(L, "__gc");		/* [t mt "__gc"] */
		if (lua_rawget(L, 2) != LUA_TNIL)	/* [t mt gc] */
			return luaL_argerror(L, 2, "__gc is not allowed");
		lua_pop(L, 1);				/* [t mt] */
	}
	lua_pushvalue(L, lua_upvalueindex(1));		/* [t mt f] */
	lua_insert(L, 1);				/* [f t mt] */
	lua_call(L, lua_gettop(L) - 1, 1);		/* [t] */
	return 1;
}

/*
 * xpcall's message handler, upvalue 1: not run for a call out of budget.
 * Lua runs a message handler where the error is raised, and the budget's
 * is raised inside the count hook, where hooks are off: the handler
 * would run with no budget at all.  [-1, +1, e]
 */
static int
chain_lua_msgh(lua_State *L)
{
	struct chain_lua_ctx *c;

	lua_getallocf(L, (void **)&c);
	if (c->over_budget)
		return 1;				/* [err] */
	lua_pushvalue(L, lua_upvalueindex(1));		/* [err h] */
	lua_insert(L, 1);				/* [h err] */
	lua_call(L, lua_gettop(L) - 1, 1);		/* [r] */
	return 1;
}

/* xpcall(f, msgh, ...) with msgh wrapped (upvalue 1: xpcall). */
static int
chain_lua_xpcall(lua_State *L)
{
	luaL_checktype(L, 2, LUA_TFUNCTION);
	lua_pushvalue(L, 2);				/* [f h .. h] */
	lua_pushcclosure(L, chain_lua_msgh, 1);		/* [f h .. wh] */
	lua_replace(L, 2);				/* [f wh ..] */
	lua_pushvalue(L, lua_upvalueindex(1));		/* [f wh .. xp] */
	lua_insert(L, 1);				/* [xp f wh ..] */
	lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);	/* [results] */
	return lua_gettop(L);
}

/* Replace lib.name (lib NULL: the global) by fn with the old one as its
 * first upvalue and kind (when not 0) as its second.  [-0, +0, m] */
static void
chain_lua_wrap(lua_State *L, const char *lib, const char *name,
    lua_CFunction fn, int kind)
{
	if (lib != NULL)
		lua_getglobal(L, lib);			/* [lib] */
	else
		lua_pushglobaltable(L);			/* [G] */
	lua_getfield(L, -1, name);			/* [lib f] */
	if (kind != 0)
		lua_pushinteger(L, kind);		/* [lib f kind] */
	lua_pushcclosure(L, fn, kind != 0 ? 2 : 1);	/* [lib wrapped] */
	lua_setfield(L, -2, name);			/* [lib] */
	lua_pop(L, 1);					/* [] */
}

/* The library functions that loop in C, or run Lua outside the budget,
 * replaced by bounded ones.  [-0, +0, m] */
static void
chain_lua_bound_libs(lua_State *L)
{
	static const struct { const char *lib, *name; int kind; } fns[] = {
		{ "string", "rep", 'r' }, { "table", "move", 'm' },
		{ "table", "concat", 'c' }, { "table", "unpack", 'u' },
		{ "table", "sort", 's' }, { "table", "insert", 'i' },
		{ "table", "remove", 'i' },
	};

	for (size_t i = 0; i < sizeof(fns) / sizeof(fns[0]); i++)
		chain_lua_wrap(L, fns[i].lib, fns[i].name, chain_lua_counted,
		    fns[i].kind);
	chain_lua_wrap(L, NULL, "setmetatable", chain_lua_setmetatable, 0);
	chain_lua_wrap(L, NULL, "xpcall", chain_lua_xpcall, 0);
}

/* postern.log(msg)  [-1, +0, e] */
static int
chain_lua_log(lua_State *L)
{
	struct chain_lua_ctx *c;
	size_t len;
	const char *msg = luaL_checklstring(L, 1, &len);
	char path[300], safe[512];

	lua_getallocf(L, (void **)&c);
	/* Free text, often the client's: quoted, it cannot forge a key. */
	log_event(LOG_LVL_INFO, "lua", NULL, NULL, "script=\"%s\" msg=\"%s\"",
	    log_safe_into(path, sizeof(path), c->path, strlen(c->path)),
	    log_safe_into(safe, sizeof(safe), msg, len));
	return 0;
}

/* Base functions a script may use; load & co. only with allow-unsafe. */
static const char *const chain_lua_safe[] = {
	"assert", "error", "ipairs", "next", "pairs", "pcall", "select",
	"tonumber", "tostring", "type", "xpcall", "rawequal", "rawget",
	"rawset", "rawlen", "setmetatable", "getmetatable", "_VERSION",
	"string", "table", "math", "utf8", NULL,
};
static const char *const chain_lua_unsafe[] = {
	"io", "os", "require", "load", "loadfile", "dofile", "package",
	"debug", "collectgarbage", "print", NULL,
};

void
chain_lua_env_push(lua_State *L, bool unsafe)
{
	chain_lua_bound_libs(L);			/* [] */
	lua_newtable(L);				/* [env] */
	for (const char *const *n = chain_lua_safe; *n != NULL; n++) {
		lua_getglobal(L, *n);			/* [env v] */
		lua_setfield(L, -2, *n);		/* [env] */
	}
	if (unsafe)
		for (const char *const *n = chain_lua_unsafe; *n != NULL; n++) {
			lua_getglobal(L, *n);		/* [env v] */
			lua_setfield(L, -2, *n);	/* [env] */
		}
	lua_newtable(L);				/* [env postern] */
	lua_pushcfunction(L, chain_lua_log);		/* [env postern f] */
	lua_setfield(L, -2, "log");			/* [env postern] */
	lua_setfield(L, -2, "postern");			/* [env] */
	lua_pushvalue(L, -1);				/* [env env] */
	lua_setfield(L, -2, "_G");			/* [env] */
	lua_pushvalue(L, -1);				/* [env env] */
	lua_setfield(L, LUA_REGISTRYINDEX, CHAIN_LUA_ENV_KEY); /* [env] */
}

void
chain_lua_run_chunk(lua_State *L, const char *src, size_t len,
    const char *chunkname)
{
	/* Text only: no precompiled chunks.  [env] */
	if (luaL_loadbufferx(L, src, len, chunkname, "t") != LUA_OK)
		lua_error(L);				/* [env err] */
	lua_pushvalue(L, -2);				/* [env chunk env] */
	lua_setupvalue(L, -2, 1);			/* [env chunk] */
	chain_lua_budget_arm(L);
	lua_call(L, 0, 0);				/* [env] */
	chain_lua_budget_disarm(L);
}

int
chain_lua_read(const char *path, char **src_out, size_t *len_out,
    char **err_out)
{
	struct util_buf b = { 0 };
	char chunk[8192];
	size_t got;
	FILE *f = fopen(path, "re");

	if (f == NULL) {
		*err_out = xasprintf("cannot read \"%s\"", path);
		return -1;
	}
	while ((got = fread(chunk, 1, sizeof(chunk), f)) > 0 &&
	    b.len <= CHAIN_LUA_SCRIPT_MAX)
		util_buf_add(&b, chunk, got);
	fclose(f);
	if (b.len > CHAIN_LUA_SCRIPT_MAX) {
		*err_out = xasprintf("\"%s\" is larger than %u bytes", path,
		    CHAIN_LUA_SCRIPT_MAX);
		util_buf_clear(&b);
		return -1;
	}
	*len_out = b.len;
	*src_out = xmalloc(b.len + 1);
	memcpy(*src_out, b.len > 0 ? util_buf_cstr(&b) : "", b.len);
	(*src_out)[b.len] = '\0';
	util_buf_clear(&b);
	return 0;
}

bool
chain_lua_name_ok(const char *s)
{
	if (s[0] == '\0' || (s[0] >= '0' && s[0] <= '9'))
		return false;
	for (; *s != '\0'; s++)
		if (!(*s == '_' || (*s >= 'a' && *s <= 'z') ||
		    (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9')))
			return false;
	return true;
}
