/*
 * chain/lua_pattern.h: a bound on the work of Lua's pattern functions.
 * Their matcher backtracks inside C, where the instruction budget's hook
 * never runs: string.find(string.rep("a", 3000), ".-.-.-.-b") would hold
 * the event loop for hours.  So each call is first played through by a
 * counting matcher with the same backtracking (lua_pattern.c); within the
 * bound the real function runs, beyond it the call raises an error.
 */
#ifndef POSTERN_CHAIN_LUA_PATTERN_H
#define POSTERN_CHAIN_LUA_PATTERN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <lua.h>

/*
 * Wrap string.find, string.match, string.gmatch and string.gsub of L (the
 * string library's table, so s:find(...) too): once the pattern calls of
 * one call of the state (chain_lua_budget_arm to disarm) have taken
 * max_steps steps together, the next raises "pattern too complex" instead,
 * and one past the call's run time ends the call as its budget does.  A
 * plain search (find with plain, or a pattern without specials in find
 * or match) is answered in linear time, a step an octet.  L's allocator's
 * ud is its struct chain_lua_ctx.  Call it after luaL_openlibs().
 * [-0, +0, m]
 */
void	chain_lua_bound_patterns(lua_State *L, uint64_t max_steps);

/*
 * The counting matcher itself, for the tests: the first match of pat in
 * s[0..len) from 1-based init, as string.find finds it (*start_out and
 * *end_out 1-based, inclusive).  1 found, 0 not found, -1 when it took
 * more than max_steps, -2 for a pattern string.find refuses.
 */
int	chain_lua_pattern_find(const char *s, size_t len, const char *pat,
	    size_t patlen, int64_t init, uint64_t max_steps,
	    int64_t *start_out, int64_t *end_out);

#endif
