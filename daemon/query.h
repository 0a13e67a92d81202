/*
 * The query core: one client query from the moment a frontend hands it over
 * to the moment exactly one reply (answer, truncated answer or SERVFAIL)
 * goes back through the frontend interface.  Checks the message, answers
 * from local zones, the blocklist or the cache, merges identical questions
 * in flight, and hands the rest to the upstream layer as jobs.
 *
 * Queries live in a fixed pool of bounded size; outside query.c a query is
 * opaque.  Each has its own deadline (a reload may change --timeout), kept
 * in one list in expiry order served by a single timer.
 */
#pragma once

#include "daemon/frontend.h"
#include "daemon/upstream.h"
#include "lib/options.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct loop;
struct cache;
struct localzone;
struct query_pool;

/** What the core works with: owned by the worker, which may replace the
 * pointers between two callbacks (reload); the core never keeps them. */
struct query_env {
	struct loop *loop;
	const struct config *cfg;
	struct cache *cache;		/**< its budget may be 0 (no caching) */
	struct localzone *localzone;	/**< local zones and the blocklist */
	struct upstream_set *upstreams; /**< the default set */
	/** Forward zones: a query whose name is a zone's name or below it goes
	 * to that zone's set (the longest zone wins), others to upstreams. */
	struct query_zone {
		const uint8_t *name; /**< wire form, lower case (the settings') */
		size_t name_len;
		struct upstream_set *upstreams;
	} zones[OPTIONS_MAX_ZONES];
	unsigned n_zones;
	bool draining; /**< shutting down: no new queries */
	/** Called (from a completion) when the last query in flight ends
	 * while draining. */
	void (*drained)(void *arg);
	void *drained_arg;
};

/** The hooks through which the upstream layer ends the core's jobs: pass
 * them to upstream_set_new(). */
extern const struct upstream_hooks query_upstream_hooks;

/** A pool of at most @capacity queries working with @env. */
struct query_pool *query_pool_new(struct query_env *env, unsigned capacity);

/** Fail every query still in flight (SERVFAIL, counted as @metric), then
 * free the pool once its timers have closed. */
void query_pool_free(struct query_pool *pool, int metric);

/** The environment @pool works with. */
struct query_env *query_pool_env(struct query_pool *pool);

/** Queries in flight. */
unsigned query_pool_inflight(const struct query_pool *pool);

/**
 * Entry point for a message from a client.  Validates it and either replies
 * at once (FORMERR, NOTIMP, REFUSED, local data, cache, SERVFAIL when the
 * pool is full), drops it (too short to answer, or not a query), or starts
 * a query.  @msg is only read during the call; @client is copied.  Either
 * way @client->ops->done() is called exactly once, now or later.
 *
 * Returns the query when it is still waiting for its answer (done not
 * called yet), for query_cancel(); valid until its done.  NULL when done
 * was called already.  Frontends that never cancel ignore it.
 */
struct query *query_receive(struct query_pool *pool, const struct frontend_client *client,
			    const uint8_t *msg, size_t len);

/**
 * The client of @q went away (an HTTP/2 stream reset before its answer):
 * no reply, and its client's done is called now.  Its upstream work stops,
 * unless other clients wait on the same answer: then it carries on for
 * them, as a query of nobody's.
 */
void query_cancel(struct query *q);
