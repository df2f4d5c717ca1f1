/*
 * chain/lua_pattern.c: Lua's pattern functions under a step bound (see
 * lua_pattern.h).  The counting matcher follows the Lua 5.4 reference
 * manual (6.4.1): single-character classes, sets, the repetitions * + - ?,
 * captures and position captures, %1-%9, %b and %f, anchors; it tries the
 * same alternatives in the same order as Lua's, so it takes as many steps.
 * It only counts: every result a script sees comes from Lua's own
 * function, called once the count is known to be small, but a plain
 * search's, found here in linear time (Lua's compares at every position).
 */
#include "chain/lua_pattern.h"

#include <ctype.h>
#include <lauxlib.h>
#include <string.h>

#include "chain/chain_private.h"
#include "util/util.h"

#define PM_CAPS		32	/* Lua's LUA_MAXCAPTURES */
#define PM_DEPTH	200	/* Lua's MAXCCALLS: deeper is Lua's error */
#define PM_OPEN		(-1)	/* capture not closed yet */
#define PM_POSITION	(-2)	/* a () capture */
#define PM_CLOCK_EVERY	65536	/* steps between looks at the clock */

struct pm {
	const char	*src, *end;		/* the subject */
	const char	*pend;			/* the pattern's end */
	int		 level;			/* captures open or closed */
	struct {
		const char	*init;
		ptrdiff_t	 len;
	}		 cap[PM_CAPS];
	uint64_t	 steps, max;
	uint64_t	 deadline_ms;		/* monotonic; 0: none */
	uint64_t	 clock_at;		/* look at the clock past it */
	int		 depth;
	bool		 over;			/* more than max steps, or late */
	bool		 late;			/* past deadline_ms */
	bool		 bad;			/* Lua would raise an error */
};

static const char *pm_match(struct pm *m, const char *s, const char *p);

/* Past the single-character class at p; NULL when it is malformed. */
static const char *
pm_class_end(struct pm *m, const char *p)
{
	if (*p == '%')
		return p + 1 < m->pend ? p + 2 : NULL;
	if (*p != '[')
		return p + 1;
	p++;
	if (p < m->pend && *p == '^')
		p++;
	do {	/* the first character is never the closing ']' */
		if (p >= m->pend)
			return NULL;
		if (*p++ == '%' && p < m->pend)
			p++;
	} while (p >= m->pend || *p != ']');
	return p + 1;
}

/* %a, %d... (an upper-case letter: the complement); other: itself. */
static bool
pm_class(int c, int cl)
{
	bool r;

	switch (tolower(cl)) {
	case 'a': r = isalpha(c); break;
	case 'c': r = iscntrl(c); break;
	case 'd': r = isdigit(c); break;
	case 'g': r = isgraph(c); break;
	case 'l': r = islower(c); break;
	case 'p': r = ispunct(c); break;
	case 's': r = isspace(c); break;
	case 'u': r = isupper(c); break;
	case 'w': r = isalnum(c); break;
	case 'x': r = isxdigit(c); break;
	case 'z': r = c == '\0'; break;	/* still in Lua 5.4 */
	default: return cl == c;
	}
	return isupper(cl) ? !r : r;
}

/* c in the set [p..last], where *p is '[' and *last is ']'. */
static bool
pm_set(int c, const char *p, const char *last)
{
	bool in = true;

	if (*++p == '^') {
		in = false;
		p++;
	}
	for (; p < last; p++) {
		if (*p == '%') {
			if (pm_class(c, (unsigned char)*++p))
				return in;
		} else if (p[1] == '-' && p + 2 < last) {
			if ((unsigned char)*p <= c && c <= (unsigned char)p[2])
				return in;
			p += 2;
		} else if ((unsigned char)*p == c)
			return in;
	}
	return !in;
}

static bool
pm_step(struct pm *m, uint64_t n)
{
	m->steps += n;
	if (m->steps > m->max)
		m->over = true;
	/* Within the bound or not, never past the run time of the call
	 * the count is for (a slow machine, a long count). */
	if (m->steps > m->clock_at && m->deadline_ms != 0) {
		m->clock_at = m->steps + PM_CLOCK_EVERY;
		if (util_now_ms() > m->deadline_ms)
			m->over = m->late = true;
	}
	return !m->over && !m->bad;
}

/* Does the class p..ep match at s?  A set costs a step per octet. */
static bool
pm_single(struct pm *m, const char *s, const char *p, const char *ep)
{
	int c;

	if (s >= m->end || m->over || m->bad)
		return false;
	c = (unsigned char)*s;
	switch (*p) {
	case '.':
		return true;
	case '%':
		return pm_class(c, (unsigned char)p[1]);
	case '[':
		return pm_step(m, (uint64_t)(ep - p)) && pm_set(c, p, ep - 1);
	default:
		return (unsigned char)*p == c;
	}
}

static const char *
pm_max_expand(struct pm *m, const char *s, const char *p, const char *ep)
{
	ptrdiff_t i = 0;

	while (pm_single(m, s + i, p, ep))
		i++;
	if (!pm_step(m, (uint64_t)i))
		return NULL;
	for (; i >= 0 && !m->over && !m->bad; i--) {
		const char *r = pm_match(m, s + i, ep + 1);
		if (r != NULL)
			return r;
	}
	return NULL;
}

static const char *
pm_min_expand(struct pm *m, const char *s, const char *p, const char *ep)
{
	for (;;) {
		const char *r = pm_match(m, s, ep + 1);
		if (r != NULL || m->over || m->bad)
			return r;
		if (!pm_single(m, s, p, ep))
			return NULL;
		s++;
	}
}

static const char *
pm_capture(struct pm *m, const char *s, const char *p, ptrdiff_t what)
{
	const char *r;

	if (m->level >= PM_CAPS) {
		m->bad = true;
		return NULL;
	}
	m->cap[m->level].init = s;
	m->cap[m->level].len = what;
	m->level++;
	if ((r = pm_match(m, s, p)) == NULL)
		m->level--;
	return r;
}

static const char *
pm_close(struct pm *m, const char *s, const char *p)
{
	int l = m->level - 1;
	const char *r;

	while (l >= 0 && m->cap[l].len != PM_OPEN)
		l--;
	if (l < 0) {
		m->bad = true;
		return NULL;
	}
	m->cap[l].len = s - m->cap[l].init;
	if ((r = pm_match(m, s, p)) == NULL)
		m->cap[l].len = PM_OPEN;
	return r;
}

/* %bxy at p (pointing at x): past the balanced run at s, or NULL. */
static const char *
pm_balance(struct pm *m, const char *s, const char *p)
{
	int depth = 1;
	const char *t;

	if (p + 1 >= m->pend) {
		m->bad = true;
		return NULL;
	}
	/* The end of a Lua string reads as its terminating NUL. */
	if ((s < m->end ? *s : '\0') != *p)
		return NULL;
	for (t = s + 1; t < m->end; t++) {
		if (*t == p[1]) {
			if (--depth == 0)
				break;
		} else if (*t == *p)
			depth++;
	}
	if (!pm_step(m, (uint64_t)(t - s)) || t >= m->end)
		return NULL;
	return t + 1;
}

/* %1..%9 at s: past the repeat of that capture, or NULL. */
static const char *
pm_backref(struct pm *m, const char *s, int digit)
{
	int l = digit - '1';
	ptrdiff_t len;

	if (l < 0 || l >= m->level || m->cap[l].len == PM_OPEN) {
		m->bad = true;
		return NULL;
	}
	len = m->cap[l].len;
	if (len >= 0 && m->end - s >= len && pm_step(m, (uint64_t)len) &&
	    memcmp(m->cap[l].init, s, (size_t)len) == 0)
		return s + len;
	return NULL;
}

/* %f[set] at p (pointing at '['): the frontier between s-1 and s. */
static const char *
pm_frontier(struct pm *m, const char *s, const char *p)
{
	const char *ep;
	int prev, cur;

	if (p >= m->pend || *p != '[' || (ep = pm_class_end(m, p)) == NULL) {
		m->bad = true;
		return NULL;
	}
	prev = s == m->src ? '\0' : (unsigned char)s[-1];
	cur = s < m->end ? (unsigned char)*s : '\0';
	if (!pm_set(prev, p, ep - 1) && pm_set(cur, p, ep - 1))
		return ep;
	return NULL;
}

/* One item at p, then the rest: what a repetition does after it. */
static const char *
pm_item(struct pm *m, const char *s, const char *p, const char **next)
{
	const char *ep = pm_class_end(m, p);
	char q;

	*next = NULL;
	if (ep == NULL) {
		m->bad = true;
		return NULL;
	}
	q = ep < m->pend ? *ep : '\0';	/* a Lua string ends in a NUL */
	if (!pm_single(m, s, p, ep)) {
		if (q == '*' || q == '?' || q == '-')
			*next = ep + 1;		/* zero of them */
		return NULL;
	}
	switch (q) {
	case '?': {
		const char *r = pm_match(m, s + 1, ep + 1);
		if (r == NULL && !m->over && !m->bad)
			*next = ep + 1;
		return r;
	}
	case '+':
		return pm_max_expand(m, s + 1, p, ep);
	case '*':
		return pm_max_expand(m, s, p, ep);
	case '-':
		return pm_min_expand(m, s, p, ep);
	default:
		*next = ep;			/* one, then go on at s + 1 */
		return s + 1;
	}
}

static const char *
pm_match(struct pm *m, const char *s, const char *p)
{
	const char *r = NULL, *next;

	if (!pm_step(m, 1))
		return NULL;
	if (++m->depth > PM_DEPTH) {
		m->bad = true;
		m->depth--;
		return NULL;
	}
	while (s != NULL && pm_step(m, 1)) {
		if (p == m->pend) {
			r = s;
			break;
		}
		if (*p == '(') {
			r = p + 1 < m->pend && p[1] == ')' ? pm_capture(m, s,
			    p + 2, PM_POSITION) : pm_capture(m, s, p + 1,
			    PM_OPEN);
			break;
		}
		if (*p == ')') {
			r = pm_close(m, s, p + 1);
			break;
		}
		if (*p == '$' && p + 1 == m->pend) {
			r = s == m->end ? s : NULL;
			break;
		}
		if (*p == '%' && p + 1 < m->pend && p[1] == 'b') {
			s = pm_balance(m, s, p + 2);
			p += 4;
			continue;
		}
		if (*p == '%' && p + 1 < m->pend && p[1] == 'f') {
			p = pm_frontier(m, s, p + 2);
			if (p == NULL)
				s = NULL;
			continue;
		}
		if (*p == '%' && p + 1 < m->pend &&
		    isdigit((unsigned char)p[1])) {
			s = pm_backref(m, s, (unsigned char)p[1]);
			p += 2;
			continue;
		}
		const char *t = pm_item(m, s, p, &next);
		if (next == NULL) {
			r = t;
			break;
		}
		s = t != NULL ? t : s;
		p = next;
	}
	m->depth--;
	return r;
}

/* Lua 5.4's reading of an init argument (posrelatI): 1..len + 1 or past. */
static int64_t
pm_init(int64_t init, size_t len)
{
	if (init > 0)
		return init;
	if (init == 0 || init < -(int64_t)len)
		return 1;
	return (int64_t)len + init + 1;
}

/* Set m (zeroed, its bound and deadline set) on a subject. */
static void
pm_start(struct pm *m, const char *s, size_t len, const char *pend)
{
	m->src = s;
	m->end = s + len;
	m->pend = pend;
}

/* string.find searches for a pattern without these as plain text. */
static bool
pm_plain(const char *p, size_t plen)
{
	for (size_t i = 0; i < plen; i++)
		if (strchr("^$*+?.([%-", p[i]) != NULL && p[i] != '\0')
			return false;
	return true;
}

/*
 * The first pat in s[init - 1..len), init 1..len + 1, or NULL: memmem
 * takes linear time where Lua's plain search (lmemfind), or its matcher on
 * a pattern without specials, compares at every position.
 */
static const char *
pm_memfind(const char *s, size_t len, int64_t init, const char *pat,
    size_t patlen)
{
	if (patlen == 0)
		return s + init - 1;
	return memmem(s + init - 1, len - (size_t)(init - 1), pat, patlen);
}

/* chain_lua_pattern_find on m (zeroed, its bound and deadline set). */
static int
pm_find(struct pm *m, const char *s, size_t len, const char *pat,
    size_t patlen, int64_t init, int64_t *start_out, int64_t *end_out)
{
	const char *p = pat, *s1, *e = NULL;
	bool anchor = patlen > 0 && *p == '^';

	init = pm_init(init, len);
	if (init > (int64_t)len + 1)
		return 0;
	if (pm_plain(pat, patlen)) {
		const char *hit = pm_memfind(s, len, init, pat, patlen);
		if (hit == NULL)
			return 0;
		*start_out = hit - s + 1;
		*end_out = *start_out + (int64_t)patlen - 1;
		return 1;
	}
	pm_start(m, s, len, pat + patlen);
	if (anchor)
		p++;
	s1 = s + init - 1;
	do {
		m->level = 0;
		e = pm_match(m, s1, p);
	} while (e == NULL && !m->over && !m->bad && s1++ < m->end && !anchor);
	if (m->over)
		return -1;
	for (int l = 0; e != NULL && l < m->level; l++)
		if (m->cap[l].len == PM_OPEN)
			m->bad = true;	/* Lua: "unfinished capture" */
	if (m->bad)
		return -2;
	if (e == NULL)
		return 0;
	*start_out = s1 - s + 1;
	*end_out = e - s;
	return 1;
}

int
chain_lua_pattern_find(const char *s, size_t len, const char *pat,
    size_t patlen, int64_t init, uint64_t max_steps, int64_t *start_out,
    int64_t *end_out)
{
	struct pm m;

	memset(&m, 0, sizeof(m));
	m.max = max_steps;
	return pm_find(&m, s, len, pat, patlen, init, start_out, end_out);
}

/*
 * The steps of every match gsub (gmatch: gm) makes over the subject, up to
 * max_n matches; false when over m->max (or Lua would refuse it).
 */
static bool
pm_all(struct pm *m, const char *from, const char *p, int64_t max_n, bool gm)
{
	const char *src = from, *last = NULL, *e;
	bool anchor = !gm && p < m->pend && *p == '^';
	int64_t n = 0;

	if (anchor)
		p++;
	while (n < max_n && !m->over && !m->bad) {
		m->level = 0;
		if ((e = pm_match(m, src, p)) != NULL && e != last) {
			n++;
			src = last = e;
		} else if (src < m->end)
			src++;
		else
			break;
		if (anchor)
			break;
	}
	return !m->over;
}

/*
 * A plain search: find(s, p, init, true), or find or match of a pattern
 * without specials, answered here with pm_memfind at a step an octet,
 * as Lua's functions would answer.  -1 for any other call; else the
 * results pushed, none when that is over m's bound.  [-0, +(0|1|2), e]
 */
static int
pm_plain_call(lua_State *L, int kind, struct pm *m)
{
	size_t len, plen;
	const char *s = lua_tolstring(L, 1, &len);
	const char *p = lua_tolstring(L, 2, &plen), *hit;
	int64_t init;

	if (s == NULL || p == NULL || (kind != 'f' && kind != 'm') ||
	    (!(kind == 'f' && lua_toboolean(L, 4)) && !pm_plain(p, plen)))
		return -1;
	init = pm_init(luaL_optinteger(L, 3, 1), len);
	if (init > (int64_t)len + 1) {
		luaL_pushfail(L);			/* [args nil] */
		return 1;
	}
	if (!pm_step(m, len - (size_t)(init - 1) + plen))
		return 0;
	if ((hit = pm_memfind(s, len, init, p, plen)) == NULL) {
		luaL_pushfail(L);			/* [args nil] */
		return 1;
	}
	if (kind == 'm') {
		lua_pushlstring(L, hit, plen);		/* [args match] */
		return 1;
	}
	lua_pushinteger(L, hit - s + 1);		/* [args start] */
	lua_pushinteger(L, hit - s + (lua_Integer)plen); /* [.. start end] */
	return 2;
}

/* Would this call of upvalue 2's kind stay under m's bound?  Its count in
 * m->steps.  [-0, +0, e] */
static bool
pm_cheap(lua_State *L, int kind, struct pm *m)
{
	size_t len, plen;
	const char *s = lua_tolstring(L, 1, &len);
	const char *p = lua_tolstring(L, 2, &plen);
	int64_t a, b, init;

	if (s == NULL || p == NULL)
		return true;	/* Lua's own function says what is wrong */
	switch (kind) {
	case 'f':	/* find of a pattern; match */
	case 'm':
		return pm_find(m, s, len, p, plen, luaL_optinteger(L, 3, 1),
		    &a, &b) != -1;
	case 'g':	/* gmatch: from init, '^' is no anchor */
		init = pm_init(luaL_optinteger(L, 3, 1), len);
		if (init > (int64_t)len + 1)
			return true;		/* past the end: nothing */
		pm_start(m, s, len, p + plen);
		return pm_all(m, s + init - 1, p, INT64_MAX, true);
	default:	/* gsub */
		pm_start(m, s, len, p + plen);
		return pm_all(m, s, p, luaL_optinteger(L, 4, (lua_Integer)len +
		    1), false);
	}
}

/*
 * The wrapper: upvalues Lua's function, its kind, the bound of a handler
 * call (what its pattern calls may take together).  A call past the
 * call's run time ends it as the budget does.  [-0, +r, e]
 */
static int
pm_call(lua_State *L)
{
	int kind = (int)lua_tointeger(L, lua_upvalueindex(2));
	uint64_t max = (uint64_t)lua_tointeger(L, lua_upvalueindex(3));
	int n = lua_gettop(L), r;
	struct chain_lua_ctx *c;
	struct pm m;

	lua_getallocf(L, (void **)&c);
	memset(&m, 0, sizeof(m));
	m.max = c->pm_steps < max ? max - c->pm_steps : 0;
	m.deadline_ms = c->deadline_ms;
	if ((r = pm_plain_call(L, kind, &m)) == -1 && pm_cheap(L, kind, &m))
		r = -1;				/* Lua's function runs */
	c->pm_steps = m.steps < max - c->pm_steps ? c->pm_steps + m.steps :
	    max;
	if (m.late)
		chain_lua_check_time(L);
	if (m.over)
		return luaL_error(L, "pattern too complex for its subject "
		    "(over %I matching steps in the call)", (lua_Integer)max);
	if (r >= 0)
		return r;
	lua_pushvalue(L, lua_upvalueindex(1));		/* [args f] */
	lua_insert(L, 1);				/* [f args] */
	lua_call(L, n, LUA_MULTRET);			/* [results] */
	return lua_gettop(L);
}

void
chain_lua_bound_patterns(lua_State *L, uint64_t max_steps)
{
	static const struct { const char *name; int kind; } fns[] = {
		{ "find", 'f' }, { "match", 'm' }, { "gmatch", 'g' },
		{ "gsub", 's' },
	};

	if (max_steps > INT64_MAX)
		max_steps = INT64_MAX;
	lua_getglobal(L, "string");			/* [string] */
	for (size_t i = 0; i < sizeof(fns) / sizeof(fns[0]); i++) {
		lua_getfield(L, -1, fns[i].name);	/* [string f] */
		lua_pushinteger(L, fns[i].kind);	/* [string f kind] */
		lua_pushinteger(L, (lua_Integer)max_steps);
		lua_pushcclosure(L, pm_call, 3);	/* [string wrapped] */
		lua_setfield(L, -2, fns[i].name);	/* [string] */
	}
	lua_pop(L, 1);					/* [] */
}
