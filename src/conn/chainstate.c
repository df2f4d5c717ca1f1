/*
 * conn/chainstate.c: a loop's chain state (chain/'s resolver, state store
 * and table answers), made when the loop starts and made again when a
 * reload names another store or resolver.  Sessions hold a reference to
 * the one they started with.  When it cannot be made, the sessions that
 * need it are refused at connect; nothing here ends the process.
 */
#include "conn/conn_private.h"

#include "chain/chain.h"
#include "config/config.h"
#include "log/log.h"

#define CONN_CHAIN_RETRY_MS	1000	/* a failed one is tried again at
					   connect, at most this often */

bool
conn_rt_needs_chain_loop(const struct conn_rt *rt)
{
	const struct config *cfg = rt->cfg;

	for (unsigned st = 0; st < SMTP_STAGE_COUNT; st++)
		if (chain_set_has(rt->chains, (enum smtp_stage)st))
			return true;
	for (size_t i = 0; i < cfg->nlistens; i++)
		if (cfg->listens[i].proxy_sni != NULL ||
		    cfg->listens[i].proxy_rcpt != NULL)
			return true;
	return cfg->nauths > 0 || conn_rt_has_remote(rt);
}

static void
conn_chain_make(struct conn_ctx *ctx)
{
	const char *err = NULL;

	ctx->chain_loop = chain_loop_new(ctx->base, ctx->rt->cfg, NULL, &err);
	if (ctx->chain_loop != NULL) {
		ctx->chain_err = NULL;
		return;
	}
	ctx->chain_err = err;
	ctx->chain_retry_ms = util_now_ms() + CONN_CHAIN_RETRY_MS;
	log_msg(LOG_LVL_ERROR, "loop %u: chain state: %s: sessions that need "
	    "it get 421 until it can be made", ctx->loop_idx, err);
}

void
conn_ctx_chain_sync(struct conn_ctx *ctx)
{
	if (!conn_rt_needs_chain_loop(ctx->rt)) {
		chain_loop_unref(&ctx->chain_loop);
		ctx->chain_err = NULL;
		return;
	}
	if (ctx->chain_loop != NULL &&
	    chain_loop_is_for(ctx->chain_loop, ctx->rt->cfg))
		return;
	chain_loop_unref(&ctx->chain_loop);	/* running sessions keep it */
	conn_chain_make(ctx);
}

void
conn_ctx_chain_clear(struct conn_ctx *ctx)
{
	chain_loop_unref(&ctx->chain_loop);
}

struct chain_loop *
conn_chain_take(struct conn_ctx *ctx, const char **err_out)
{
	if (ctx->chain_loop == NULL && util_now_ms() >= ctx->chain_retry_ms)
		conn_chain_make(ctx);
	if (ctx->chain_loop == NULL) {
		*err_out = ctx->chain_err != NULL ? ctx->chain_err :
		    "no chain state";
		return NULL;
	}
	return chain_loop_ref(ctx->chain_loop);
}
