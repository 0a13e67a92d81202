/*
 * Upstream selection, health and hedging.  Everything here is per worker:
 * no locks.  The policy picks among usable upstreams (not down, not tried
 * by this query, not already holding an attempt of it).
 */
#include "daemon/upstream.h"

#include "daemon/query.h"
#include "daemon/server.h"
#include "daemon/upconn.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/random.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

enum {
	BACKOFF_FIRST_MS = 250,
	BACKOFF_MAX_MS = 4000,
	HEDGE_MIN_MS = 100,	/* below this, duplicates would be sent for nothing */
	HEDGE_MAX_MS = 800,	/* a stalled upstream must cost well under a second */
	HEDGE_UNKNOWN_MS = 400, /* before the first RTT sample */
	SILENCE_MS = 1000,	/* nothing at all received this long: the connection is dead */
	SILENCES_DOWN = 2,	/* silent connections in a row that mark an upstream down */
	BUSY_INFLIGHT = 32,	/* queries on a connection before another one opens */
	SAMPLE_EVERY = 16,	/* fastest: one query in this many samples another upstream */
};

/* What a query's timer checks next. */
enum slow_stage {
	SLOW_HEDGE = 0,	  /* send to one more upstream */
	SLOW_SILENCE = 1, /* is the first attempt's connection dead? */
	SLOW_DONE = 2,
};

struct upstream_set {
	struct server *srv;
	unsigned n;
	unsigned rr_next; /* round-robin position */
	unsigned counter; /* fastest: when to sample */
	unsigned closing; /* timers still closing in upstream_set_free() */
	struct upstream ups[OPTIONS_MAX_UPSTREAMS];
};

static void probe_cb(uv_timer_t *timer);
static void close_current(struct upstream *up, const char *why);

struct upstream_set *upstream_set_new(struct server *srv)
{
	struct upstream_set *set = calloc(1, sizeof(*set));

	if (!set)
		return NULL;
	set->srv = srv;
	set->n = srv->cfg->n_upstream;
	for (unsigned i = 0; i < set->n; i++) {
		struct upstream *up = &set->ups[i];
		up->srv = srv;
		up->spec = &srv->cfg->upstream[i];
		up->index = i;
		up->session = tls_session_new();
		require(up->session);
		uv_timer_init(srv->loop, &up->probe_timer);
		up->probe_timer.data = up;
	}
	return set;
}

static void set_closed_cb(uv_handle_t *handle)
{
	struct upstream *up = handle->data;
	/* ups[] is embedded in the set: step back from this element to it. */
	struct upstream_set *set =
	    (struct upstream_set *)((char *)(up - up->index) - offsetof(struct upstream_set, ups));

	if (--set->closing)
		return;
	for (unsigned i = 0; i < set->n; i++)
		tls_session_free(set->ups[i].session);
	free(set);
}

void upstream_set_free(struct upstream_set *set)
{
	set->closing = set->n;
	for (unsigned i = 0; i < set->n; i++) {
		struct upstream *up = &set->ups[i];
		while (up->n_conns)
			upconn_abort(up->conns[0]);
		uv_close((uv_handle_t *)&up->probe_timer, set_closed_cb);
	}
	if (set->n == 0)
		free(set);
}

static unsigned backoff_ms(const struct upstream *up)
{
	unsigned shift = up->failures ? up->failures - 1 : 0;
	unsigned ms = BACKOFF_FIRST_MS << (shift < 5 ? shift : 5);

	return ms < BACKOFF_MAX_MS ? ms : BACKOFF_MAX_MS;
}

/* A connection attempt failed, or connections went silent: down, with a
 * background probe after the backoff. */
static void mark_down(struct upstream *up, const char *why)
{
	up->failures++;
	up->down = true;
	unsigned ms = backoff_ms(up);
	uv_timer_start(&up->probe_timer, probe_cb, ms, 0);
	log_info("upstream %s is down (%s); probing again in %u ms (failure %u in a row)",
		 up->spec->label, why, ms, up->failures);
}

static void probe_cb(uv_timer_t *timer)
{
	struct upstream *up = timer->data;

	if (!up->down)
		return; /* back already */
	if (up->n_conns) {
		/* A connection attempt is under way (or an old one lingers): look
		 * again later rather than stop probing for good. */
		uv_timer_start(&up->probe_timer, probe_cb, backoff_ms(up), 0);
		return;
	}
	log_debug("upstream %s: probing", up->spec->label);
	struct upconn *conn = upconn_new(up->srv, up);
	if (conn)
		up->conns[up->n_conns++] = conn;
	else
		mark_down(up, "cannot connect");
}

static bool attempted(const struct query *q, const struct upstream *up)
{
	for (unsigned i = 0; i < q->n_attempts; i++)
		if (q->attempts[i].conn && q->attempts[i].up == up)
			return true;
	return false;
}

static bool usable(const struct upstream *up, const struct query *q)
{
	return !up->down && !(q->tried & (1u << up->index)) && !attempted(q, up);
}

static double expected_us(const struct upstream *up)
{
	return up->samples ? up->srtt_us : 0; /* unknown first: measure everyone */
}

static struct upstream *choose(struct upstream_set *set, const struct query *q)
{
	struct upstream *best = NULL;
	unsigned n_usable = 0;

	for (unsigned i = 0; i < set->n; i++)
		n_usable += usable(&set->ups[i], q);
	if (n_usable) {
		enum options_policy policy = set->srv->cfg->policy;
		/* The nth usable upstream: in order, in turn, or (fastest) a random
		 * one for one query in SAMPLE_EVERY, so that a slow upstream's
		 * estimate can improve; otherwise the lowest smoothed RTT. */
		int nth = -1;
		if (policy == OPTIONS_POLICY_FAILOVER)
			nth = 0;
		else if (policy == OPTIONS_POLICY_ROUND_ROBIN)
			nth = (int)(set->rr_next++ % n_usable);
		else if (n_usable > 1 && ++set->counter % SAMPLE_EVERY == 0)
			nth = (int)(random_u16() % n_usable);
		for (unsigned i = 0; i < set->n; i++) {
			struct upstream *up = &set->ups[i];
			if (!usable(up, q))
				continue;
			if (nth >= 0) {
				if (nth-- == 0)
					return up;
				continue;
			}
			if (!best || expected_us(up) < expected_us(best))
				best = up;
		}
		return best;
	}
	/* Every upstream left is down: probe the one whose backoff ends first,
	 * now, rather than make this client wait for it. */
	for (unsigned i = 0; i < set->n; i++) {
		struct upstream *up = &set->ups[i];
		if ((q->tried & (1u << i)) || attempted(q, up))
			continue;
		if (!best ||
		    uv_timer_get_due_in(&up->probe_timer) < uv_timer_get_due_in(&best->probe_timer))
			best = up;
	}
	return best;
}

/* The connection for a new query: the least busy ready one; another is
 * opened when all are busy and the limit allows. */
static struct upconn *pick_conn(struct upstream *up)
{
	struct upconn *best = NULL;

	for (unsigned i = 0; i < up->n_conns; i++) {
		struct upconn *c = up->conns[i];
		if (upconn_state(c) == UPCONN_CLOSED)
			continue;
		if (!best || upconn_load(c) < upconn_load(best))
			best = c;
	}
	if (best &&
	    (upconn_load(best) < BUSY_INFLIGHT || up->n_conns >= up->srv->cfg->max_connections))
		return best;
	struct upconn *conn = upconn_new(up->srv, up);
	if (!conn) {
		mark_down(up, "cannot connect");
		return best;
	}
	up->conns[up->n_conns++] = conn;
	return conn;
}

static unsigned hedge_ms(const struct upstream *up)
{
	if (!up->samples)
		return HEDGE_UNKNOWN_MS;
	double ms = (up->srtt_us + 4 * up->rttvar_us) / 1000.0;
	if (ms < HEDGE_MIN_MS)
		return HEDGE_MIN_MS;
	return ms > HEDGE_MAX_MS ? HEDGE_MAX_MS : (unsigned)ms;
}

static unsigned silence_ms(const struct server *srv)
{
	unsigned half = srv->cfg->timeout_ms / 2;

	return half < SILENCE_MS ? half : SILENCE_MS;
}

/* Send @q to @up: true on success. */
static bool send_to(struct upstream *up, struct query *q)
{
	struct upconn *conn;
	uint16_t id;

	if (q->n_attempts == QUERY_MAX_ATTEMPTS)
		return false;
	conn = pick_conn(up);
	if (!conn || upconn_send(conn, q, &id) < 0)
		return false;
	struct query_attempt *a = &q->attempts[q->n_attempts++];
	a->conn = conn;
	a->up = up;
	a->id = id;
	a->sent_ns = uv_hrtime();
	a->measured = upconn_state(conn) == UPCONN_READY;
	q->upstream = up;
	if (q->slow_stage == SLOW_HEDGE)
		query_arm_timer(q, hedge_ms(up));
	return true;
}

void upstream_dispatch(struct upstream_set *set, struct query *q)
{
	while (q->n_attempts < QUERY_MAX_ATTEMPTS) {
		struct upstream *up = choose(set, q);
		if (!up)
			break;
		if (send_to(up, q))
			return;
		q->tried |= 1u << up->index;
	}
	if (query_active_attempts(q) == 0)
		query_fail(q, WIRE_EDE_NETWORK_ERROR, METRIC_servfail_no_upstream);
}

/* The first attempt still waiting, if its connection has been silent since
 * the query went out. */
static struct query_attempt *silent_attempt(struct query *q)
{
	for (unsigned i = 0; i < q->n_attempts; i++) {
		struct query_attempt *a = &q->attempts[i];
		if (a->conn && upconn_state(a->conn) == UPCONN_READY &&
		    upconn_last_answer(a->conn) < a->sent_ns)
			return a;
	}
	return NULL;
}

void upstream_query_slow(struct upstream_set *set, struct query *q)
{
	if (q->slow_stage == SLOW_HEDGE) {
		q->slow_stage = SLOW_SILENCE;
		struct query_attempt *first = &q->attempts[0];
		uint64_t waited_ms = (uv_hrtime() - first->sent_ns) / 1000000;
		uint64_t silence = silence_ms(set->srv);
		query_arm_timer(q, silence > waited_ms ? silence - waited_ms : 0);
		struct upstream *up = choose(set, q);
		if (up && !up->down && send_to(up, q)) {
			metrics_inc(METRIC_upstream_hedged);
			log_debug("query hedged to upstream %s after %llu ms", up->spec->label,
				  (unsigned long long)waited_ms);
		}
		return;
	}
	q->slow_stage = SLOW_DONE;
	struct query_attempt *a = silent_attempt(q);
	if (!a)
		return;
	/* No answer at all came back on that connection since this query went out:
	 * after a sleep or a network change it is a dead socket; replace it. */
	struct upstream *up = a->up;
	metrics_inc(METRIC_upstream_silent);
	if (++up->silences >= SILENCES_DOWN)
		mark_down(up, "connections go silent");
	upconn_close(a->conn, "silent: no answer to a query for a second");
}

void upstream_alive(struct upstream *up)
{
	up->silences = 0;
}

void upstream_lost_race(struct upstream *up)
{
	/* Another upstream answered while this one's connection stayed silent:
	 * a stalled server would cost every query the hedge delay, so after a
	 * few of these it is marked down (and re-probed in the background). */
	if (++up->silences < SILENCES_DOWN || up->down)
		return;
	metrics_inc(METRIC_upstream_silent);
	mark_down(up, "does not answer");
	close_current(up, "does not answer");
}

void upstream_answered(struct upstream *up, double rtt_us)
{
	if (up->down || up->failures)
		log_info("upstream %s answers again", up->spec->label);
	up->down = false;
	up->failures = 0;
	up->silences = 0;
	uv_timer_stop(&up->probe_timer);
	if (rtt_us < 0)
		return;
	if (up->samples++ == 0) {
		up->srtt_us = rtt_us;
		up->rttvar_us = rtt_us / 2;
	} else {
		up->rttvar_us = 0.75 * up->rttvar_us + 0.25 * fabs(up->srtt_us - rtt_us);
		up->srtt_us = 0.875 * up->srtt_us + 0.125 * rtt_us;
	}
}

void upstream_conn_ready(struct upstream *up, struct upconn *conn)
{
	(void)conn;
	/* A handshake is not an answer: the failure count stays, so an upstream
	 * that handshakes but never answers keeps backing off. */
	if (up->down)
		log_info("upstream %s: reachable again", up->spec->label);
	up->down = false;
	uv_timer_stop(&up->probe_timer);
}

void upstream_conn_closed(struct upstream *up, struct upconn *conn, bool failed)
{
	for (unsigned i = 0; i < up->n_conns; i++) {
		if (up->conns[i] == conn) {
			up->conns[i] = up->conns[--up->n_conns];
			break;
		}
	}
	if (failed)
		mark_down(up, "connection failed");
}

void upstream_requeue(struct upstream *up, struct query *q, bool sent)
{
	if (sent && q->resends == 0) {
		/* A routine close (idle timeout, server restart): resend once. */
		q->resends++;
		metrics_inc(METRIC_upstream_resent);
	} else {
		q->tried |= 1u << up->index;
	}
	if (query_active_attempts(q) == 0)
		upstream_dispatch(up->srv->upstreams, q); /* the current set, even after a reload */
}

/* Close the connections @up has now; their queries are requeued (which may
 * open new connections: those are left alone). */
static void close_current(struct upstream *up, const char *why)
{
	struct upconn *old[UPSTREAM_MAX_CONNS];
	unsigned n = up->n_conns;

	memcpy(old, up->conns, n * sizeof(old[0]));
	for (unsigned j = 0; j < n; j++)
		upconn_retire(old[j], why);
}

void upstream_set_retire(struct upstream_set *set)
{
	for (unsigned i = 0; i < set->n; i++) {
		uv_timer_stop(&set->ups[i].probe_timer);
		close_current(&set->ups[i], "configuration reloaded");
	}
}

void upstream_set_reset(struct upstream_set *set)
{
	log_info("network change: reconnecting to every upstream");
	for (unsigned i = 0; i < set->n; i++) {
		struct upstream *up = &set->ups[i];
		up->down = false;
		up->failures = 0;
		up->silences = 0;
		up->samples = 0; /* latencies were for the old path */
		uv_timer_stop(&up->probe_timer);
		close_current(up, "network changed");
	}
}
