/* tests/unit/chain/harness.h: a config, a loop and a session for tests. */
struct h {
	struct event_base	*base;
	struct config		*cfg;
	struct chain_set	*set;
	struct chain_loop	*loop;
	struct chain_session	*cs;
};
