/*
 * The set of upstream resolvers, in configured order: which one a query
 * goes to, and what happens when one cannot be reached.  An upstream whose
 * connection fails before it is ready (refused, unreachable, TLS failure)
 * is "down" for an exponentially growing time; queries skip it while
 * another is usable, and when none is, the next query probes again at once.
 */
#pragma once

#include "lib/options.h"
#include "lib/tls.h"

#include <stdbool.h>
#include <stdint.h>

struct server;
struct query;
struct upconn;

struct upstream {
	struct server *srv;
	const struct options_upstream *spec; /**< from the config (not owned) */
	unsigned index;               /**< position in the configured order */
	struct upconn *conn;          /**< the current connection, or NULL (owned) */
	struct tls_session *session;  /**< the TLS session to resume (owned) */
	unsigned failures;            /**< consecutive failed attempts */
	uint64_t retry_at_ms;         /**< down until this loop time */
};

struct upstream_set;

/** The upstreams of srv->cfg, none connected yet. */
struct upstream_set *upstream_set_new(struct server *srv);

/** Close every connection (queries in them are failed) and free the set. */
void upstream_set_free(struct upstream_set *set);

/**
 * Send @q to the first usable upstream it has not failed on, opening a
 * connection when needed.  When none is left, @q gets SERVFAIL.
 */
void upstream_dispatch(struct upstream_set *set, struct query *q);

/** Called by upconn: @up's connection reached READY (resets its failures). */
void upstream_conn_ready(struct upstream *up);

/**
 * Called by upconn when @conn closed.  @failed: it never became ready
 * (marks @up down).  The connection's queries have already been detached
 * and are passed one by one to upstream_requeue().
 */
void upstream_conn_closed(struct upstream *up, struct upconn *conn, bool failed);

/**
 * A query whose connection closed before its answer came.  @sent: its
 * bytes had reached the upstream (a routine close: resend once, that
 * upstream included: usually it is picked again); otherwise (connection
 * failed) try the next upstream.
 */
void upstream_requeue(struct upstream *up, struct query *q, bool sent);
