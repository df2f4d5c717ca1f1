/*
 * chain/lua_box.c: a Lua function called with a JSON document as a table
 * and answering a value, in the same sandbox as the handlers (allow-list,
 * instruction budget, memory cap): what reply agents written in Lua run
 * in.  One state per box, used by one caller at a time; a call that
 * fails leaves a fresh state for the next.  Knows nothing of sessions.
 */
#include "chain/chain_private.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "chain/lua_pattern.h"
#include "config/config.h"
#include "util/util.h"

#define LBOX_BUDGET_DEFAULT	10000000
#define LBOX_MEMORY_DEFAULT	(32u * 1024 * 1024)
#define LBOX_DEPTH_MAX		16	/* nesting of tables either way */

struct chain_lua_box {
	char			*path;
	char			*chunkname;	/* "@path" */
	char			*func;
	char			*src;
	size_t			 srclen;
	bool			 unsafe;
	pthread_mutex_t		 mu;		/* one call at a time */
	lua_State		*L;		/* NULL until the first call */
	struct chain_lua_ctx	 ctx;
	/* the call in progress, for the protected trampoline */
	const json_t		*arg;
	json_t			*result;
};

static void
lbox_close(struct chain_lua_box *b)
{
	if (b->L != NULL)
		lua_close(b->L);
	b->L = NULL;
}

static int
lbox_open_tramp(lua_State *L)
{
	struct chain_lua_box *b = lua_touserdata(L, 1);

	luaL_openlibs(L);				/* [b] */
	chain_lua_bound_patterns(L, (uint64_t)b->ctx.budget *
	    CHAIN_LUA_PATTERN_STEPS);
	chain_lua_env_push(L, b->unsafe);		/* [b env] */
	chain_lua_run_chunk(L, b->src, b->srclen, b->chunkname); /* [b env] */
	lua_getfield(L, -1, b->func);			/* [b env f] */
	if (!lua_isfunction(L, -1))
		return luaL_error(L, "%s: no function \"%s\"", b->path,
		    b->func);
	return 0;
}

/* A state with the script run; -1 with *err_out (malloc'd). */
static int
lbox_open(struct chain_lua_box *b, char **err_out)
{
	b->ctx.used = 0;
	b->ctx.over_budget = false;
	if ((b->L = lua_newstate(chain_lua_alloc, &b->ctx)) == NULL) {
		*err_out = xstrdup("cannot create a Lua state");
		return -1;
	}
	lua_pushcfunction(b->L, lbox_open_tramp);	/* [f] */
	lua_pushlightuserdata(b->L, b);			/* [f b] */
	if (chain_lua_pcall(b->L, 1, err_out) != LUA_OK) {
		lbox_close(b);
		return -1;
	}
	lua_settop(b->L, 0);
	return 0;
}

void
chain_lua_box_free(struct chain_lua_box **bp)
{
	struct chain_lua_box *b = *bp;

	if (b == NULL)
		return;
	*bp = NULL;
	lbox_close(b);
	pthread_mutex_destroy(&b->mu);
	free(b->path);
	free(b->chunkname);
	free(b->func);
	free(b->src);
	free(b);
}

struct chain_lua_box *
chain_lua_box_new(const struct config *cfg, const char *path,
    const char *func, char **err_out)
{
	struct chain_lua_box *b = xcalloc(1, sizeof(*b));

	pthread_mutex_init(&b->mu, NULL);
	b->path = xstrdup(path);
	b->chunkname = xasprintf("@%s", path);
	b->func = xstrdup(func);
	b->ctx.path = b->path;
	b->ctx.budget = cfg != NULL && cfg->lua_budget != 0 ?
	    (int)cfg->lua_budget : LBOX_BUDGET_DEFAULT;
	b->ctx.cap = cfg != NULL && cfg->lua_memory != 0 ?
	    (size_t)cfg->lua_memory : LBOX_MEMORY_DEFAULT;
	b->unsafe = cfg != NULL && cfg->lua_allow_unsafe;
	if (!chain_lua_name_ok(func)) {
		*err_out = xasprintf("\"%s\" is not a Lua function name",
		    func);
		goto fail;
	}
	/* Loaded once now: syntax errors and a missing function are config
	 * errors. */
	if (chain_lua_read(path, &b->src, &b->srclen, err_out) == -1 ||
	    lbox_open(b, err_out) == -1)
		goto fail;
	return b;
fail:
	chain_lua_box_free(&b);
	return NULL;
}

/* ---- JSON <-> Lua ---- */

static void
lbox_push_json(lua_State *L, const json_t *j, int depth)
{
	const char *k;
	json_t *v;
	size_t i;

	luaL_checkstack(L, 4, "JSON too deep");
	switch (json_typeof(j)) {
	case JSON_OBJECT:
		lua_createtable(L, 0, (int)json_object_size(j));
		json_object_foreach((json_t *)j, k, v) {
			if (depth >= LBOX_DEPTH_MAX)
				break;
			lbox_push_json(L, v, depth + 1);
			lua_setfield(L, -2, k);
		}
		break;
	case JSON_ARRAY:
		lua_createtable(L, (int)json_array_size(j), 0);
		json_array_foreach(j, i, v) {
			if (depth >= LBOX_DEPTH_MAX)
				break;
			lbox_push_json(L, v, depth + 1);
			lua_rawseti(L, -2, (lua_Integer)i + 1);
		}
		break;
	case JSON_STRING:
		lua_pushlstring(L, json_string_value(j), json_string_length(j));
		break;
	case JSON_INTEGER:
		lua_pushinteger(L, (lua_Integer)json_integer_value(j));
		break;
	case JSON_REAL:
		lua_pushnumber(L, json_real_value(j));
		break;
	case JSON_TRUE:
	case JSON_FALSE:
		lua_pushboolean(L, json_is_true(j));
		break;
	default:
		lua_pushnil(L);
		break;
	}
}

static json_t *
lbox_string(lua_State *L, int idx)
{
	size_t n;
	const char *s = lua_tolstring(L, idx, &n);
	json_t *j = json_stringn(s, n);

	if (j == NULL) {	/* not UTF-8: kept readable */
		char esc[1024];

		j = json_string(log_safe_into(esc, sizeof(esc), s, n));
	}
	return j;
}

/* The value at the top as JSON (new reference).  [-0, +0, m] */
static json_t *
lbox_to_json(lua_State *L, int depth)
{
	json_t *j;

	switch (lua_type(L, -1)) {
	case LUA_TSTRING:
		return lbox_string(L, -1);
	case LUA_TNUMBER:
		return lua_isinteger(L, -1) ? json_integer(
		    (json_int_t)lua_tointeger(L, -1)) :
		    json_real(lua_tonumber(L, -1));
	case LUA_TBOOLEAN:
		return json_boolean(lua_toboolean(L, -1));
	case LUA_TTABLE:
		break;
	default:
		return json_null();
	}
	if (depth >= LBOX_DEPTH_MAX)
		return json_null();
	luaL_checkstack(L, 4, "table too deep");
	if (lua_rawlen(L, -1) > 0) {		/* a sequence */
		j = json_array();
		for (lua_Integer i = 1; i <= (lua_Integer)lua_rawlen(L, -1);
		    i++) {
			lua_rawgeti(L, -1, i);
			json_array_append_new(j, lbox_to_json(L, depth + 1));
			lua_pop(L, 1);
		}
		return j;
	}
	j = json_object();
	lua_pushnil(L);
	while (lua_next(L, -2) != 0) {		/* [t k v] */
		if (lua_type(L, -2) == LUA_TSTRING) {
			json_t *key = lbox_string(L, -2);

			json_object_set_new(j, json_string_value(key),
			    lbox_to_json(L, depth + 1));
			json_decref(key);
		}
		lua_pop(L, 1);			/* [t k] */
	}
	return j;
}

static int
lbox_call_tramp(lua_State *L)
{
	struct chain_lua_box *b = lua_touserdata(L, 1);

	lua_settop(L, 0);
	lua_getfield(L, LUA_REGISTRYINDEX, CHAIN_LUA_ENV_KEY);	/* [env] */
	lua_getfield(L, -1, b->func);			/* [env f] */
	lbox_push_json(L, b->arg, 0);			/* [env f arg] */
	chain_lua_budget_arm(L);
	lua_call(L, 1, 1);				/* [env r] */
	chain_lua_budget_disarm(L);
	b->result = lbox_to_json(L, 0);
	return 0;
}

int
chain_lua_box_call(struct chain_lua_box *b, const json_t *arg,
    json_t **result_out, char **err_out)
{
	int rc = -1;

	pthread_mutex_lock(&b->mu);
	if (b->L == NULL && lbox_open(b, err_out) == -1)
		goto out;
	b->arg = arg;
	b->result = NULL;
	b->ctx.over_budget = false;
	lua_pushcfunction(b->L, lbox_call_tramp);	/* [f] */
	lua_pushlightuserdata(b->L, b);			/* [f b] */
	if (chain_lua_pcall(b->L, 1, err_out) == LUA_OK) {
		*result_out = b->result;
		rc = 0;
		lua_settop(b->L, 0);
		lua_gc(b->L, LUA_GCCOLLECT);
	} else {
		json_decref(b->result);
		lbox_close(b);		/* the next call starts clean */
	}
	b->arg = NULL;
	b->result = NULL;
out:
	pthread_mutex_unlock(&b->mu);
	return rc;
}
