/*
 * Upstream selection: the configured order, skipping upstreams that are
 * down (in backoff) or that already failed this query.  When every
 * remaining upstream is down, the one that comes back first is probed at
 * once rather than making the client wait out a backoff it cannot see.
 */
#include "daemon/upstream.h"

#include "daemon/query.h"
#include "daemon/server.h"
#include "daemon/upconn.h"
#include "lib/log.h"
#include "lib/metrics.h"

#include <stdlib.h>

enum {
	BACKOFF_FIRST_MS = 250,
	BACKOFF_MAX_MS = 4000,
};

struct upstream_set {
	struct server *srv;
	unsigned n;
	struct upstream ups[OPTIONS_MAX_UPSTREAMS];
};

struct upstream_set *upstream_set_new(struct server *srv)
{
	struct upstream_set *set = calloc(1, sizeof(*set));

	if (!set)
		return NULL;
	set->srv = srv;
	set->n = srv->cfg->n_upstream;
	for (unsigned i = 0; i < set->n; i++) {
		set->ups[i].srv = srv;
		set->ups[i].spec = &srv->cfg->upstream[i];
		set->ups[i].index = i;
		set->ups[i].session = tls_session_new();
		require(set->ups[i].session);
	}
	return set;
}

void upstream_set_free(struct upstream_set *set)
{
	for (unsigned i = 0; i < set->n; i++)
		if (set->ups[i].conn)
			upconn_abort(set->ups[i].conn);
	/* The aborted connections are done with TLS: their sessions can go. */
	for (unsigned i = 0; i < set->n; i++)
		tls_session_free(set->ups[i].session);
	free(set);
}

static struct upstream *choose(struct upstream_set *set, const struct query *q)
{
	uint64_t now = uv_now(set->srv->loop);
	struct upstream *soonest = NULL;

	for (unsigned i = 0; i < set->n; i++) {
		struct upstream *up = &set->ups[i];
		if (q->tried & (1u << i))
			continue;
		if (up->conn || up->retry_at_ms <= now)
			return up;
		if (!soonest || up->retry_at_ms < soonest->retry_at_ms)
			soonest = up;
	}
	return soonest;
}

void upstream_dispatch(struct upstream_set *set, struct query *q)
{
	for (;;) {
		struct upstream *up = choose(set, q);
		if (!up) {
			query_fail(q, WIRE_EDE_NETWORK_ERROR, METRIC_servfail_no_upstream);
			return;
		}
		if (!up->conn)
			up->conn = upconn_new(set->srv, up);
		if (up->conn && upconn_send(up->conn, q) == 0) {
			q->upstream = up;
			return;
		}
		q->tried |= 1u << up->index;
	}
}

void upstream_conn_ready(struct upstream *up)
{
	if (up->failures)
		log_info("upstream %s is back", up->spec->label);
	up->failures = 0;
	up->retry_at_ms = 0;
}

void upstream_conn_closed(struct upstream *up, struct upconn *conn, bool failed)
{
	if (up->conn == conn)
		up->conn = NULL;
	if (!failed)
		return;
	unsigned shift = up->failures < 5 ? up->failures : 5;
	unsigned backoff = BACKOFF_FIRST_MS << shift;
	if (backoff > BACKOFF_MAX_MS)
		backoff = BACKOFF_MAX_MS;
	up->failures++;
	up->retry_at_ms = uv_now(up->srv->loop) + backoff;
	log_info("upstream %s is down; next attempt in %u ms (failure %u in a row)",
		 up->spec->label, backoff, up->failures);
}

void upstream_requeue(struct upstream *up, struct query *q, bool sent)
{
	if (sent && q->resends == 0) {
		/* A routine close (idle timeout, server restart): resend once, anywhere. */
		q->resends++;
		metrics_inc(METRIC_upstream_resent);
	} else {
		q->tried |= 1u << up->index;
	}
	upstream_dispatch(up->srv->upstreams, q);
}
