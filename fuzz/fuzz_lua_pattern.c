/*
 * fuzz/fuzz_lua_pattern.c: the counting matcher against Lua's own.  The
 * input is an init octet, a pattern length octet, the pattern, then the
 * subject.  When chain_lua_pattern_find() says the search takes at most
 * a million steps, string.find runs too (a hang there is a miscount, and
 * libFuzzer's timeout reports it) and both must agree: the same match, no
 * match, or an error where the counter saw a pattern Lua refuses.
 */
#include "chain/lua_pattern.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int	LLVMFuzzerInitialize(int *argc, char ***argv);
int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FZ_STEPS	1000000

static lua_State *fz_L;

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	if ((fz_L = luaL_newstate()) == NULL)
		abort();
	luaL_openlibs(fz_L);		/* Lua's own string.find */
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	lua_State *L = fz_L;
	int64_t init, a = 0, b = 0;
	size_t plen;
	int mine, rc;

	if (size < 2)
		return 0;
	init = (int8_t)data[0] % 8;
	plen = data[1] % 17;
	if (size - 2 < plen || size - 2 - plen > 64)
		return 0;
	const char *pat = (const char *)data + 2, *s = pat + plen;
	size_t len = size - 2 - plen;
	mine = chain_lua_pattern_find(s, len, pat, plen, init, FZ_STEPS, &a,
	    &b);
	if (mine == -1)
		return 0;	/* too dear: the wrapper would refuse it */
	lua_settop(L, 0);
	lua_getglobal(L, "string");			/* [string] */
	lua_getfield(L, 1, "find");			/* [string find] */
	lua_pushlstring(L, s, len);
	lua_pushlstring(L, pat, plen);
	lua_pushinteger(L, init);			/* [.. find s p init] */
	rc = lua_pcall(L, 3, 2, 0);		/* [.. a b] or [.. err] */
	if (rc != LUA_OK) {
		if (mine != -2)
			abort();	/* Lua refused what the counter took */
		return 0;
	}
	if (mine == -2)
		abort();		/* the counter refused what Lua took */
	if (lua_isnil(L, -2) ? mine != 0 : mine != 1 ||
	    lua_tointeger(L, -2) != a || lua_tointeger(L, -1) != b)
		abort();
	return 0;
}
