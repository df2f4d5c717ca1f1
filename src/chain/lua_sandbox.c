/*
 * chain/lua_sandbox.c: what every Lua script of postern runs in, handler
 * or agent: a state whose allocator counts against a cap, an instruction
 * budget per call, an _ENV built from an allow-list (io, os, load and
 * co. only with allow-unsafe) plus postern.log, and the script read once
 * and run in it.  Knows nothing of sessions or messages.
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
	return p;
}

/* Count hook: the call ran out of instructions.  [-0, +0, v] */
void
chain_lua_budget_hook(lua_State *L, lua_Debug *ar)
{
	struct chain_lua_ctx *c;

	lua_getallocf(L, (void **)&c);
	c->over_budget = true;
	/* Every further instruction fails too, even under pcall. */
	lua_sethook(L, chain_lua_budget_hook, LUA_MASKCOUNT, 1);
	lua_getinfo(L, "Sl", ar);
	luaL_error(L, "%s:%d: instruction budget of %d exceeded",
	    ar->short_src, ar->currentline, c->budget);
}

/* postern.log(msg)  [-1, +0, e] */
static int
chain_lua_log(lua_State *L)
{
	struct chain_lua_ctx *c;
	const char *msg = luaL_checkstring(L, 1);
	char safe[512];

	lua_getallocf(L, (void **)&c);
	log_safe_into(safe, sizeof(safe), msg, strlen(msg));
	log_msg(LOG_LVL_INFO, "lua %s: %s", c->path, safe);
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
    const char *chunkname, int budget)
{
	/* Text only: no precompiled chunks.  [env] */
	if (luaL_loadbufferx(L, src, len, chunkname, "t") != LUA_OK)
		lua_error(L);				/* [env err] */
	lua_pushvalue(L, -2);				/* [env chunk env] */
	lua_setupvalue(L, -2, 1);			/* [env chunk] */
	lua_sethook(L, chain_lua_budget_hook, LUA_MASKCOUNT, budget);
	lua_call(L, 0, 0);				/* [env] */
	lua_sethook(L, NULL, 0, 0);
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
