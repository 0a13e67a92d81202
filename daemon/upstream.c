/*
 * Upstream selection, health, hedging, silence and requeueing.  Everything
 * here is per worker: no locks.  The policy picks among usable upstreams
 * (not down, not failed by this job, not already holding an attempt of
 * it).  Answers are checked here, once for every transport: the key must
 * belong to an attempt of the job on that connection, and the question
 * must be the job's (RFC 5452 §9.1).
 */
#include "daemon/upstream.h"

#include "daemon/dnstap.h"
#include "daemon/loop.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/random.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
	BACKOFF_FIRST_MS = 250,
	BACKOFF_DEMAND_MS = 1000, /* probe cadence while queries want a down upstream */
	BACKOFF_IDLE_MS = 60000,  /* and while nothing wants it: once a minute */
	HEDGE_MIN_MS = 100,	  /* below this, duplicates would be sent for nothing */
	HEDGE_MAX_MS = 800,	  /* a stalled upstream must cost well under a second */
	HEDGE_UNKNOWN_MS = 400,	  /* before the first RTT sample */
	SILENCE_MS = 1000,	  /* nothing at all received this long: the connection is dead */
	SILENCES_DOWN = 2,	  /* silent connections in a row that mark an upstream down */
	ERRORS_DOWN = 5,	  /* queries in a row answered with an error: the same (erred()) */
	BUSY_INFLIGHT = 32,	  /* jobs on a connection before another one opens */
	SAMPLE_EVERY = 16,	  /* fastest: one job in this many samples another upstream */
};

/* What a job's timer checks next. */
enum slow_stage {
	SLOW_HEDGE = 0,	  /* send to one more upstream */
	SLOW_SILENCE = 1, /* is the first attempt's connection dead? */
	SLOW_DONE = 2,
};

struct upstream {
	struct upstream_set *set;
	const struct options_upstream *spec; /* &own: what transports read */
	struct options_upstream own;	     /* a copy of the configured spec,
							   * its address filled once a name
							   * resolves (upstream_set_address) */
	bool resolved;			     /* own.addr is an address */
	/* Given by name: its addresses (port 0, in the order to try them),
	 * which one own.addr is, and how many failed since it was last
	 * reachable (up to n_addrs, a new address is probed soon). */
	unsigned n_addrs, addr_i, addr_tries;
	struct sockaddr_storage addrs[UPSTREAM_MAX_ADDRS];
	const struct transport_ops *ops;		  /* how to reach it */
	void *peer;					  /* the transport's state for it (owned) */
	uint32_t identity;				  /* stable across reloads: from the spec */
	struct transport_conn *conns[UPSTREAM_MAX_CONNS]; /* open connections */
	unsigned n_conns;
	bool down;		   /* not used; probed in the background */
	bool wanted;		   /* a job wanted it since the last probe began */
	uint64_t last_answer_ns;   /* uv_hrtime() of its last well-formed answer, any connection */
	unsigned failures;	   /* consecutive failures; reset by an answer */
	unsigned silences;	   /* consecutive silent connections */
	unsigned errors;	   /* queries in a row answered with an error; reset by an answer */
	bool moving_on;		   /* down by its answers: next address, its conns gone */
	uv_timer_t probe_timer;	   /* background re-probe while down */
	double srtt_us, rttvar_us; /* smoothed answer time and its variation */
	unsigned samples;	   /* RTT samples taken (0: unknown) */
	/* The outage as the log tells it: a warning when it starts, a line a
	 * minute while it lasts, one when it answers again. */
	uint64_t down_since_ns;	    /* 0: no outage */
	uint64_t told_ns;	    /* the last line about it */
	unsigned missed;	    /* jobs that wanted it since that line */
	char why[128];		    /* its latest failure */
	struct metrics_upstream *m; /* this worker's numbers for it (lib/metrics) */
};

struct upstream_set {
	const struct transport_env *env;
	const struct upstream_hooks *hooks;
	struct upstream_set *next; /* the set that replaced this one (reload) */
	bool stopping;		   /* upstream_set_free(): fail what is left */
	unsigned n;
	unsigned rr_next; /* round-robin position */
	unsigned counter; /* fastest: when to sample */
	unsigned closing; /* timers still closing in upstream_set_free() */
	struct upstream ups[OPTIONS_MAX_UPSTREAMS];
};

unsigned upstream_outage_log_ms = 60000;

static const struct transport_events events;
static void probe_cb(uv_timer_t *timer);
static void close_current(struct upstream *up, const char *why);
static void dispatch(struct upstream_set *set, struct upstream_job *job, bool free_send);
static void unreachable(struct upstream *up, const char *why);
static void next_address(struct upstream *up, const char *why);
static void carry_addresses(const struct upstream_set *set, struct upstream_set *next);

/* Every change of `down` goes through here: the metrics count, per worker,
 * the sets in which an upstream is down. */
static void set_down(struct upstream *up, bool down)
{
	if (up->down == down)
		return;
	up->down = down;
	if (down)
		metrics_bump(&up->m->down);
	else
		metrics_drop(&up->m->down);
}

/* FNV-1a of what identifies an upstream: its spec as configured, which
 * names address, port and authentication name. */
static uint32_t identity_of(const struct options_upstream *spec)
{
	uint32_t h = 2166136261u;

	for (const char *p = spec->label; *p; p++)
		h = (h ^ (uint8_t)*p) * 16777619u;
	return h;
}

struct upstream_set *upstream_set_new(const struct transport_env *env,
				      const struct options_upstream *specs, unsigned n,
				      upstream_transport_for transport_for,
				      const struct upstream_hooks *hooks)
{
	struct upstream_set *set = calloc(1, sizeof(*set));

	if (!set)
		return NULL;
	set->env = env;
	set->hooks = hooks;
	set->n = n < OPTIONS_MAX_UPSTREAMS ? n : OPTIONS_MAX_UPSTREAMS;
	for (unsigned i = 0; i < set->n; i++) {
		struct upstream *up = &set->ups[i];
		up->set = set;
		up->own = specs[i];
		up->spec = &up->own;
		up->resolved = !up->own.hostname[0];
		up->ops = transport_for(up->spec);
		up->peer = up->ops->peer_new(up->spec);
		require(up->peer);
		up->identity = identity_of(up->spec);
		/* A new set starts afresh (a reload): so do the gauges it sets. */
		up->m = metrics_upstream_hold(env->worker, up->spec->label,
					      up->ops->name ? up->ops->name : "unknown");
		metrics_put(&up->m->failures, 0);
		metrics_put(&up->m->srtt_us, 0);
		uv_timer_init(&env->loop->uv, &up->probe_timer);
		up->probe_timer.data = up;
	}
	return set;
}

static void set_closed_cb(uv_handle_t *handle)
{
	struct upstream *up = handle->data;
	struct upstream_set *set = up->set;

	if (--set->closing)
		return;
	for (unsigned i = 0; i < set->n; i++)
		set->ups[i].ops->peer_free(set->ups[i].peer);
	free(set);
}

void upstream_set_free(struct upstream_set *set)
{
	set->stopping = true;
	set->closing = set->n;
	for (unsigned i = 0; i < set->n; i++) {
		struct upstream *up = &set->ups[i];
		while (up->n_conns)
			up->ops->close(up->conns[0], NULL);
		set_down(up, false); /* no longer held: not down in this set */
		metrics_upstream_release(up->m);
		uv_close((uv_handle_t *)&up->probe_timer, set_closed_cb);
	}
	if (set->n == 0)
		free(set);
}

/* The newest set: jobs of a retired one move there. */
static struct upstream_set *current(struct upstream_set *set)
{
	while (set->next)
		set = set->next;
	return set;
}

/* When to probe a down upstream again: soon while queries want it, so that
 * it is used within a second of coming back; once a minute while nothing
 * does, so that a dead one costs nothing. */
static unsigned backoff_ms(const struct upstream *up)
{
	unsigned shift = up->failures ? up->failures - 1 : 0;
	unsigned ms = BACKOFF_FIRST_MS << (shift < 5 ? shift : 5);

	if (!up->wanted)
		return BACKOFF_IDLE_MS;
	return ms < BACKOFF_DEMAND_MS ? ms : BACKOFF_DEMAND_MS;
}

/* While an outage lasts: one line a minute at most, not one per failure or
 * per query. */
static void tell_outage(struct upstream *up)
{
	uint64_t now = uv_hrtime();

	if (!up->down_since_ns || now - up->told_ns < upstream_outage_log_ms * 1000000ull)
		return;
	log_warn("upstream %s is still down after %llu s: %s; %u queries wanted it in the last "
		 "%llu s",
		 up->spec->label, (unsigned long long)((now - up->down_since_ns) / 1000000000ull),
		 up->why, up->missed, (unsigned long long)((now - up->told_ns) / 1000000000ull));
	up->told_ns = now;
	up->missed = 0;
}

/* A connection attempt failed, or connections went silent: down, with a
 * background probe after the backoff.  The first failure of an outage is a
 * warning; later ones are details (info). */
static void mark_down(struct upstream *up, const char *why)
{
	up->failures++;
	metrics_put(&up->m->failures, up->failures);
	set_down(up, true);
	unsigned ms = backoff_ms(up);
	up->wanted = false; /* a new wait: does anything want it before it ends? */
	uv_timer_start(&up->probe_timer, probe_cb, ms, 0);
	snprintf(up->why, sizeof(up->why), "%s", why);
	if (!up->down_since_ns) {
		up->down_since_ns = up->told_ns = uv_hrtime();
		up->missed = 0;
		log_warn("upstream %s is down: %s", up->spec->label, why);
	} else {
		tell_outage(up);
	}
	log_info("upstream %s: failure %u in a row, probing again in %u ms: %s", up->spec->label,
		 up->failures, ms, why);
}

/* Down by how it answered (silence, lost races, errors), not by a failed
 * connect: its address may be the trouble (one anycast node, one backend
 * behind it), so a named upstream's next connection, once the ones it has
 * are gone, goes to its next address (on_closed()). */
static void down_by_answers(struct upstream *up, const char *why)
{
	mark_down(up, why);
	up->moving_on = up->n_addrs > 1;
}

static struct transport_conn *open_conn(struct upstream *up, enum metrics_open_reason why)
{
	require(up->n_conns < UPSTREAM_MAX_CONNS);
	struct transport_conn *c = up->ops->open(up->set->env, up->spec, up->peer, &events, up);

	if (c) {
		up->conns[up->n_conns++] = c;
		metrics_bump(&up->m->opened[why]);
		metrics_bump(&up->m->conns);
	}
	return c;
}

static void probe_cb(uv_timer_t *timer)
{
	struct upstream *up = timer->data;

	if (!up->down || !up->resolved || up->set->next || up->set->stopping)
		return; /* back already, or retired */
	tell_outage(up);
	if (up->n_conns) {
		/* A connection attempt is under way (or an old one lingers): look
		 * again later rather than stop probing for good. */
		uv_timer_start(&up->probe_timer, probe_cb, backoff_ms(up), 0);
		return;
	}
	log_debug("upstream %s: probing", up->spec->label);
	if (!open_conn(up, METRICS_OPEN_PROBE))
		unreachable(up, "cannot connect");
}

/* -- a job's attempts ----------------------------------------------------------- */

static struct upstream_attempt *
find_attempt(struct upstream_job *job, const struct transport_conn *c, bool by_key, uint32_t key)
{
	for (unsigned i = 0; i < UPSTREAM_MAX_ACTIVE; i++) {
		struct upstream_attempt *a = &job->attempts[i];
		if (a->conn == c && (!by_key || a->key == key))
			return a;
	}
	return NULL;
}

static unsigned active_attempts(const struct upstream_job *job)
{
	unsigned n = 0;

	for (unsigned i = 0; i < UPSTREAM_MAX_ACTIVE; i++)
		n += job->attempts[i].conn != NULL;
	return n;
}

/* A job would use @up: while it is down, probe it at least every
 * BACKOFF_DEMAND_MS, so that it is used within a second of coming back. */
static void want(struct upstream *up)
{
	up->wanted = true;
	if (up->down && uv_is_active((uv_handle_t *)&up->probe_timer) &&
	    uv_timer_get_due_in(&up->probe_timer) > BACKOFF_DEMAND_MS)
		uv_timer_start(&up->probe_timer, probe_cb, BACKOFF_DEMAND_MS, 0);
}

static bool attempted(const struct upstream_job *job, const struct upstream *up)
{
	for (unsigned i = 0; i < UPSTREAM_MAX_ACTIVE; i++)
		if (job->attempts[i].conn && job->attempts[i].up == up)
			return true;
	return false;
}

static bool tried(const struct upstream_job *job, const struct upstream *up)
{
	for (unsigned i = 0; i < job->n_tried; i++)
		if (job->tried[i] == up->identity)
			return true;
	return false;
}

/* @up failed @job: it never goes there again (after a reload too, wherever
 * the upstream is then in the list). */
static void mark_tried(struct upstream_job *job, const struct upstream *up)
{
	if (!tried(job, up) && job->n_tried < OPTIONS_MAX_UPSTREAMS)
		job->tried[job->n_tried++] = up->identity;
}

/* -- choosing -------------------------------------------------------------------- */

static bool usable(const struct upstream *up, const struct upstream_job *job)
{
	return up->resolved && !up->down && !tried(job, up) && !attempted(job, up);
}

static double expected_us(const struct upstream *up)
{
	return up->samples ? up->srtt_us : 0; /* unknown first: measure everyone */
}

static struct upstream *choose(struct upstream_set *set, const struct upstream_job *job)
{
	struct upstream *best = NULL;
	unsigned n_usable = 0;

	for (unsigned i = 0; i < set->n; i++) {
		struct upstream *up = &set->ups[i];
		n_usable += usable(up, job);
		if (up->down && !tried(job, up)) {
			want(up);
			up->missed++;
		}
	}
	if (n_usable) {
		enum options_policy policy = set->env->cfg->policy;
		/* The nth usable upstream: in order, in turn, or (fastest) a random
		 * one for one job in SAMPLE_EVERY, so that a slow upstream's
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
			if (!usable(up, job))
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
	/* Every upstream left is down: none is used, so that the job fails at
	 * once (or is served stale) instead of waiting for a connection that
	 * just failed -- or hangs, on a network that drops packets.  The
	 * background probes find the way back; that jobs want these upstreams
	 * keeps them frequent. */
	return NULL;
}

/* One more connection, up to the hard bound of conns[]; NULL if none. */
static struct transport_conn *open_more(struct upstream *up, enum metrics_open_reason why)
{
	if (up->n_conns == UPSTREAM_MAX_CONNS)
		return NULL;
	struct transport_conn *c = open_conn(up, why);
	if (!c)
		unreachable(up, "cannot connect");
	return c;
}

/* The connection for a new job: the least busy one that takes jobs;
 * another is opened when all are busy and the limit allows.  When every one
 * is full (capacity 0: DoH's stream limit) and no more may open, the least
 * busy one all the same, with *@full set: see send_to(). */
static struct transport_conn *pick_conn(struct upstream *up, bool *full)
{
	struct transport_conn *best = NULL, *least = NULL;
	unsigned best_load = 0, least_load = 0;
	unsigned max = up->set->env->cfg->max_connections;

	*full = false;
	for (unsigned i = 0; i < up->n_conns; i++) {
		struct transport_conn *c = up->conns[i];
		unsigned load = up->ops->load(c);
		if (!least || load < least_load) {
			least = c;
			least_load = load;
		}
		if (up->ops->capacity(c) == 0)
			continue;
		if (!best || load < best_load) {
			best = c;
			best_load = load;
		}
	}
	if (best && (best_load < BUSY_INFLIGHT || up->n_conns >= max))
		return best;
	if (!best && least && up->n_conns >= max) {
		*full = true;
		return least;
	}
	struct transport_conn *c = open_more(up, best ? METRICS_OPEN_BUSY : METRICS_OPEN_DEMAND);
	return c ? c : best;
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

static unsigned silence_ms(const struct config *cfg)
{
	unsigned half = cfg->timeout_ms / 2;

	return half < SILENCE_MS ? half : SILENCE_MS;
}

static void slow_cb(uv_timer_t *timer);

/* Send @job to @up: true on success.  @free_send: a resend after a routine
 * close, which does not use the job's budget. */
static bool send_to(struct upstream *up, struct upstream_job *job, bool free_send)
{
	struct upstream_attempt *a = find_attempt(job, NULL, false, 0);
	struct transport_conn *c;
	uint32_t key;

	bool full;

	if (!a || (!free_send && job->sends >= UPSTREAM_MAX_SENDS))
		return false;
	c = pick_conn(up, &full);
	int rc = c ? up->ops->send(c, job->msg, job->len, job, &key) : -EPIPE;
	if (rc < 0 && full) {
		/* Every connection is full and --max-connections reached: a
		 * transport that can hold the job until a slot frees (DoH) took
		 * it; one that cannot (DoT) gets one more connection, as far as
		 * conns[] goes, rather than fail the job. */
		c = open_more(up, METRICS_OPEN_BUSY);
		rc = c ? up->ops->send(c, job->msg, job->len, job, &key) : -EPIPE;
	}
	if (rc < 0)
		return false;
	if (!free_send)
		job->sends++;
	dnstap_forwarder_query(up->ops->name, (const struct sockaddr *)&up->spec->addr.sa, job->msg,
			       job->len, key);
	want(up);
	a->conn = c;
	a->up = up;
	a->key = key;
	a->sent_ns = uv_hrtime();
	a->measured = c->ready;
	job->source = up->spec->label;
	job->set = up->set;
	if (up->samples)
		loop_expect_answer(up->set->env->loop, up->srtt_us);
	if (job->stage == SLOW_HEDGE)
		uv_timer_start(&job->timer, slow_cb, hedge_ms(up), 0);
	return true;
}

static void dispatch(struct upstream_set *set, struct upstream_job *job, bool free_send)
{
	for (;;) {
		struct upstream *up = choose(set, job);
		if (!up)
			break;
		if (send_to(up, job, free_send))
			return;
		if (!free_send && job->sends >= UPSTREAM_MAX_SENDS)
			break;
		mark_tried(job, up);
	}
	if (active_attempts(job) == 0) {
		uv_timer_stop(&job->timer);
		set->hooks->failed(job, WIRE_EDE_NETWORK_ERROR, METRIC_servfail_no_upstream);
	}
}

void upstream_job_init(struct upstream_job *job, uv_loop_t *loop)
{
	uv_timer_init(loop, &job->timer);
	job->timer.data = job;
}

void upstream_job_deinit(struct upstream_job *job, uv_close_cb close_cb, void *arg)
{
	job->timer.data = arg;
	uv_close((uv_handle_t *)&job->timer, close_cb);
}

void upstream_job_start(struct upstream_set *set, struct upstream_job *job)
{
	memset(job->attempts, 0, sizeof(job->attempts));
	job->set = set;
	job->n_tried = 0;
	job->sends = 0;
	job->silent_deaths = 0;
	job->refusals = 0;
	job->stage = SLOW_HEDGE;
	job->source = NULL;
	dispatch(set, job, false);
}

/* Forget every attempt of @job still waiting, each ending as @outcome. */
static void cancel_attempts(struct upstream_job *job, enum metrics_outcome outcome)
{
	for (unsigned i = 0; i < UPSTREAM_MAX_ACTIVE; i++) {
		struct upstream_attempt *a = &job->attempts[i];
		if (a->conn) {
			metrics_bump(&a->up->m->requests[outcome]);
			a->up->ops->cancel(a->conn, a->key);
		}
		a->conn = NULL;
	}
	uv_timer_stop(&job->timer);
}

void upstream_job_cancel(struct upstream_job *job)
{
	cancel_attempts(job, METRICS_OUTCOME_CANCELLED);
}

const char *upstream_job_source(const struct upstream_job *job)
{
	return job->source ? job->source : "-";
}

/* -- slow jobs: hedging and silence --------------------------------------------- */

/* The first attempt still waiting, if its connection has been silent since
 * the job went out. */
static struct upstream_attempt *silent_attempt(struct upstream_job *job)
{
	for (unsigned i = 0; i < UPSTREAM_MAX_ACTIVE; i++) {
		struct upstream_attempt *a = &job->attempts[i];
		if (a->conn && a->conn->ready && a->conn->last_answer_ns < a->sent_ns)
			return a;
	}
	return NULL;
}

static uint64_t first_sent_ns(const struct upstream_job *job)
{
	uint64_t first = 0;

	for (unsigned i = 0; i < UPSTREAM_MAX_ACTIVE; i++) {
		const struct upstream_attempt *a = &job->attempts[i];
		if (a->conn && (!first || a->sent_ns < first))
			first = a->sent_ns;
	}
	return first ? first : uv_hrtime();
}

static void slow_cb(uv_timer_t *timer)
{
	struct upstream_job *job = timer->data;
	struct upstream_set *set = job->set;

	if (job->stage == SLOW_HEDGE) {
		job->stage = SLOW_SILENCE;
		uint64_t waited_ms = (uv_hrtime() - first_sent_ns(job)) / 1000000;
		uint64_t silence = silence_ms(set->env->cfg);
		uv_timer_start(&job->timer, slow_cb, silence > waited_ms ? silence - waited_ms : 0,
			       0);
		struct upstream *up = choose(set, job);
		if (up && !up->down && send_to(up, job, false)) {
			metrics_inc(METRIC_upstream_hedged);
			log_debug("query hedged to upstream %s after %llu ms", up->spec->label,
				  (unsigned long long)waited_ms);
		}
		return;
	}
	job->stage = SLOW_DONE;
	struct upstream_attempt *a = silent_attempt(job);
	if (!a)
		return;
	/* No answer at all came back on that connection since this job went out:
	 * after a sleep or a network change it is a dead socket; replace it.  The
	 * silence is held against the upstream (down after SILENCES_DOWN), not
	 * against the jobs on it, which are resent: this check runs once per
	 * job, so that cannot loop. */
	struct upstream *up = a->up;
	struct transport_conn *c = a->conn;
	metrics_inc(METRIC_upstream_silent);
	if (++up->silences >= SILENCES_DOWN)
		down_by_answers(up, "connections go silent");
	c->retiring = true;
	up->ops->close(c, "silent: no answer to a query for a second");
}

/* -- events from connections ----------------------------------------------------- */

static void answered(struct upstream *up, double rtt_us)
{
	if (up->down_since_ns) {
		log_tagged("notice", "upstream %s is up again after %.1f s down", up->spec->label,
			   (double)(uv_hrtime() - up->down_since_ns) / 1e9);
		up->down_since_ns = 0;
	} else if (up->failures) {
		log_info("upstream %s answers again", up->spec->label);
	}
	set_down(up, false);
	if (up->failures)
		metrics_put(&up->m->failures, 0);
	up->failures = 0;
	up->silences = 0;
	up->errors = 0;
	up->moving_on = false;
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
	metrics_put(&up->m->srtt_us, up->srtt_us >= 1 ? (uint64_t)up->srtt_us : 1);
}

/* Another upstream answered while this one's connection stayed silent: a
 * stalled server would cost every job the hedge delay, so after a few of
 * these it is marked down (and re-probed in the background). */
static void lost_race(struct upstream *up)
{
	if (++up->silences < SILENCES_DOWN || up->down)
		return;
	metrics_inc(METRIC_upstream_silent);
	down_by_answers(up, "does not answer");
	close_current(up, "does not answer");
}

/* A query answered with an error (DoH: an HTTP error status, another
 * content type, a reset stream, a body that is no answer).  One may be the
 * question's fault; ERRORS_DOWN in a row, with no answer between them,
 * are the server's: down, and its connections closed (a new one may
 * reach a healthier backend, and the probe needs none open).  The count
 * stays until an answer, so once a probe's handshake brings the upstream
 * back, its first error sends it down again, for a longer backoff. */
static void erred(struct upstream *up, const char *reason)
{
	if (++up->errors < ERRORS_DOWN || up->down)
		return;
	char why[sizeof(up->why)]; /* what mark_down() keeps of it */
	snprintf(why, sizeof(why), "%u queries in a row answered with an error, the last: %s",
		 up->errors, reason);
	down_by_answers(up, why);
	close_current(up, why);
}

static void on_ready(struct transport_conn *c)
{
	struct upstream *up = c->owner;

	c->ready = true;
	up->addr_tries = 0; /* its address works */
	/* A handshake is not an answer: the failure count stays, so an upstream
	 * that handshakes but never answers keeps backing off. */
	if (up->down)
		log_info("upstream %s: reachable again", up->spec->label);
	set_down(up, false);
	uv_timer_stop(&up->probe_timer);
	if (c->tls == TRANSPORT_TLS_FULL)
		metrics_bump(&up->m->handshakes_full);
	else if (c->tls == TRANSPORT_TLS_RESUMED)
		metrics_bump(&up->m->handshakes_resumed);
}

static bool on_answer(struct transport_conn *c, uint32_t key, void *job_arg, uint8_t *msg,
		      size_t len, const struct wire_info *info)
{
	struct upstream *up = c->owner;
	struct upstream_job *job = job_arg;

	/* Bytes alone prove nothing (a server can trickle an endless frame): a
	 * connection is alive while well-formed answers arrive. */
	c->last_answer_ns = up->last_answer_ns = uv_hrtime();
	up->silences = 0;
	struct upstream_attempt *a = job ? find_attempt(job, c, true, key) : NULL;
	if (!a || !wire_question_equal(&info->q, job->question)) {
		/* RFC 5452 §9.1: key and question must both match, or it is not ours. */
		metrics_inc(METRIC_upstream_unmatched);
		log_debug("upstream %s: dropping an answer that matches no query in flight",
			  up->spec->label);
		return false;
	}
	c->answered = true;
	a->conn = NULL;
	dnstap_forwarder_response(up->ops->name, (const struct sockaddr *)&up->spec->addr.sa, msg,
				  len, a->sent_ns);
	up->ops->cancel(c, key);
	uint64_t took_ns = uv_hrtime() - a->sent_ns;
	metrics_bump(&up->m->requests[METRICS_OUTCOME_ANSWERED]);
	metrics_rtt_record(up->m, took_ns);
	answered(up, a->measured ? (double)took_ns / 1e3 : -1);
	job->source = up->spec->label;
	/* Attempts elsewhere still waiting on silent connections lost the race;
	 * noted after the answer, since noting may close those connections. */
	struct upstream *losers[UPSTREAM_MAX_ACTIVE];
	unsigned n_losers = 0;
	for (unsigned i = 0; i < UPSTREAM_MAX_ACTIVE; i++) {
		struct upstream_attempt *b = &job->attempts[i];
		if (b->conn && b->up != up && b->conn->last_answer_ns < b->sent_ns)
			losers[n_losers++] = b->up;
	}
	/* The job is over here, whatever its owner does next: the other
	 * attempts' keys go, so that a late answer is dropped as unmatched. */
	cancel_attempts(job, METRICS_OUTCOME_LOST);
	up->set->hooks->answered(job, msg, len, info);
	for (unsigned i = 0; i < n_losers; i++)
		lost_race(losers[i]);
	return true;
}

static void on_alive(struct transport_conn *c)
{
	struct upstream *up = c->owner;

	c->last_answer_ns = uv_hrtime();
	up->silences = 0;
}

static void on_closed(struct transport_conn *c, enum transport_close_reason reason, const char *why)
{
	struct upstream *up = c->owner;

	for (unsigned i = 0; i < up->n_conns; i++) {
		if (up->conns[i] == c) {
			up->conns[i] = up->conns[--up->n_conns];
			metrics_drop(&up->m->conns);
			break;
		}
	}
	if (reason == TRANSPORT_CLOSED_FAILED && !c->retiring && !up->set->stopping)
		unreachable(up, why ? why : "connection failed");
	if (reason == TRANSPORT_CLOSED_SILENT && !c->retiring && !up->set->stopping) {
		/* The transport found the silence (an unanswered HTTP/2 PING):
		 * as in slow_cb(), the jobs on it are resent freely and the
		 * silence is held against the upstream. */
		c->retiring = true;
		metrics_inc(METRIC_upstream_silent);
		if (++up->silences >= SILENCES_DOWN)
			down_by_answers(up, "connections go silent");
	}
	if (up->moving_on && up->n_conns == 0 && !up->set->stopping)
		next_address(up, up->why);
}

static void on_orphaned(struct transport_conn *c, void *job_arg, bool maybe_processed)
{
	struct upstream *up = c->owner;
	struct upstream_job *job = job_arg;
	struct upstream_attempt *a = find_attempt(job, c, false, 0);
	uint64_t sent_ns = a ? a->sent_ns : 0;

	if (a)
		a->conn = NULL;
	if (up->set->stopping) {
		if (a)
			metrics_bump(&up->m->requests[METRICS_OUTCOME_CANCELLED]);
		if (active_attempts(job) == 0) {
			uv_timer_stop(&job->timer);
			up->set->hooks->failed(job, WIRE_EDE_NOT_READY, METRIC_servfail_shutdown);
		}
		return;
	}
	/* The routine-close rule.  A connection that never became ready failed
	 * the job.  One that became ready, saw the job and died without
	 * answering anything counts against it too, so that a query that crashes
	 * servers cannot loop -- but only the second time for the same job, and
	 * only if the upstream has answered nothing on any connection since the
	 * job went out: a reset makes the kernel drop what it had received and
	 * we had not read yet, so a server that answered, then reset, can look
	 * like one that died on the job.  Anything else -- the server answered
	 * on it before, never saw the job, or we closed it -- costs nothing. */
	bool died_silent = !c->retiring && c->ready && maybe_processed && !c->answered &&
			   up->last_answer_ns < sent_ns;
	if (died_silent && job->silent_deaths < UINT8_MAX)
		job->silent_deaths++;
	bool counts = !c->retiring && (!c->ready || (died_silent && job->silent_deaths > 1));
	if (a)
		metrics_bump(
		    &up->m->requests[counts ? METRICS_OUTCOME_FAILED : METRICS_OUTCOME_CLOSED]);
	if (counts) {
		mark_tried(job, up);
	} else if (maybe_processed) {
		metrics_inc(METRIC_upstream_resent);
	}
	if (active_attempts(job) > 0)
		return; /* still waiting elsewhere */
	struct upstream_set *set = current(up->set);
	if (set != up->set)
		job->source = NULL; /* that upstream's config is going away */
	job->set = set;
	dispatch(set, job, !counts);
}

/* One attempt over without an answer, its connection still open: like an
 * orphan of that job alone.  Refused unprocessed: resent for free (but
 * only UPSTREAM_MAX_REFUSALS times, so that a server refusing everything
 * cannot keep a job going round until its deadline); answered with an
 * error: that upstream failed the job, which goes on to the next. */
static void on_failed(struct transport_conn *c, uint32_t key, void *job_arg, bool maybe_processed,
		      const char *reason)
{
	struct upstream *up = c->owner;
	struct upstream_job *job = job_arg;
	struct upstream_attempt *a = job ? find_attempt(job, c, true, key) : NULL;

	/* The server spoke: the connection is not silent. */
	c->last_answer_ns = uv_hrtime();
	up->silences = 0;
	if (!a)
		return;
	a->conn = NULL;
	if (up->set->stopping) {
		if (active_attempts(job) == 0) {
			uv_timer_stop(&job->timer);
			up->set->hooks->failed(job, WIRE_EDE_NOT_READY, METRIC_servfail_shutdown);
		}
		return;
	}
	bool counts = maybe_processed || ++job->refusals > UPSTREAM_MAX_REFUSALS;
	log_debug("upstream %s: %s; %s", up->spec->label, reason,
		  counts ? "trying another upstream" : "sending it again");
	if (counts)
		mark_tried(job, up);
	if (maybe_processed)
		erred(up, reason);
	if (active_attempts(job) > 0)
		return; /* still waiting elsewhere */
	struct upstream_set *set = current(up->set);
	if (set != up->set)
		job->source = NULL;
	job->set = set;
	dispatch(set, job, !counts);
}

static const struct transport_events events = {
	.ready = on_ready,
	.answer = on_answer,
	.alive = on_alive,
	.failed = on_failed,
	.closed = on_closed,
	.orphaned = on_orphaned,
};

/* -- the world changed ------------------------------------------------------------ */

/* Close the connections @up has now, as ours to close: their jobs are resent
 * freely (which may open new connections: those are left alone). */
static void close_current(struct upstream *up, const char *why)
{
	struct transport_conn *old[UPSTREAM_MAX_CONNS];
	unsigned n = up->n_conns;

	memcpy(old, up->conns, n * sizeof(old[0]));
	for (unsigned j = 0; j < n; j++) {
		old[j]->retiring = true;
		up->ops->close(old[j], why);
	}
}

void upstream_set_retire(struct upstream_set *set, struct upstream_set *next)
{
	carry_addresses(set, next); /* before the jobs move there */
	set->next = next;
	for (unsigned i = 0; i < set->n; i++) {
		uv_timer_stop(&set->ups[i].probe_timer);
		close_current(&set->ups[i], "configuration reloaded");
	}
	set->next = NULL; /* nothing refers to it now: free it quietly */
	upstream_set_free(set);
}

void upstream_set_reset(struct upstream_set *set)
{
	log_info("network change: reconnecting to every upstream");
	for (unsigned i = 0; i < set->n; i++) {
		struct upstream *up = &set->ups[i];
		set_down(up, false);
		up->failures = 0;
		up->silences = 0;
		up->samples = 0; /* latencies were for the old path */
		metrics_put(&up->m->failures, 0);
		metrics_put(&up->m->srtt_us, 0);
		uv_timer_stop(&up->probe_timer);
		close_current(up, "network changed");
	}
}

/* The IP of @sa as text: "192.0.2.1", "2001:db8::1". */
static void ip_text(const struct sockaddr_storage *sa, char *ip, size_t cap)
{
	const void *a = sa->ss_family == AF_INET6
			    ? (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr
			    : (const void *)&((const struct sockaddr_in *)sa)->sin_addr;

	if (!inet_ntop(sa->ss_family, a, ip, (socklen_t)cap))
		snprintf(ip, cap, "?");
}

/* Connect to addrs[@i] from now on. */
static void use_address(struct upstream *up, unsigned i)
{
	const struct sockaddr_storage *sa = &up->addrs[i];
	struct options_addr addr = { .sa = *sa };
	bool v6 = sa->ss_family == AF_INET6;
	char ip[INET6_ADDRSTRLEN];

	ip_text(sa, ip, sizeof(ip));
	if (v6) {
		addr.sa_len = sizeof(struct sockaddr_in6);
		((struct sockaddr_in6 *)&addr.sa)->sin6_port = htons(up->own.port);
	} else {
		addr.sa_len = sizeof(struct sockaddr_in);
		((struct sockaddr_in *)&addr.sa)->sin_port = htons(up->own.port);
	}
	snprintf(addr.text, sizeof(addr.text), "%s%s%s:%u", v6 ? "[" : "", ip, v6 ? "]" : "",
		 up->own.port);
	up->own.addr = addr;
	snprintf(up->own.ip, sizeof(up->own.ip), "%s", ip);
	up->addr_i = i;
}

/* @up could not be reached (a connection failed before it was ready, or
 * could not be opened): down, and when its name has another address and
 * no other connection is left, the next connection goes to the next
 * address.  While one is left, it is to the same address: a ready one shows
 * that the address works; one still opening decides when it ends (each
 * failing in turn must not skip an address).  Nothing is closed here: this
 * may run while a job is being sent (open_more()). */
static void unreachable(struct upstream *up, const char *why)
{
	mark_down(up, why);
	next_address(up, why);
}

/* The next connection goes to @up's next address, unless it has one alone
 * or connections (see unreachable()).  @why: what failed at the old one. */
static void next_address(struct upstream *up, const char *why)
{
	if (up->n_addrs < 2 || up->n_conns || up->set->stopping || up->set->next)
		return;
	up->moving_on = false; /* moved */
	char old[INET6_ADDRSTRLEN];
	snprintf(old, sizeof(old), "%s", up->own.ip);
	use_address(up, (up->addr_i + 1) % up->n_addrs);
	if (++up->addr_tries < up->n_addrs) {
		/* An address this outage has not tried yet: probe it soon.  Once
		 * every one failed, the usual backoff (and less said). */
		log_tagged("notice", "upstream %s: %s failed (%s); trying its next address %s",
			   up->spec->label, old, why, up->own.ip);
		uv_timer_start(&up->probe_timer, probe_cb, BACKOFF_FIRST_MS, 0);
	} else {
		log_info("upstream %s: %s failed (%s); trying its next address %s", up->spec->label,
			 old, why, up->own.ip);
	}
}

/* Reload: a named upstream of @next that has the same list as one of @set
 * and no connection yet goes on with the address @set's was using, rather
 * than its first, which may be the one that failed. */
static void carry_addresses(const struct upstream_set *set, struct upstream_set *next)
{
	for (unsigned i = 0; i < set->n; i++) {
		const struct upstream *old = &set->ups[i];
		if (!old->n_addrs || !old->resolved)
			continue;
		for (unsigned j = 0; j < next->n; j++) {
			struct upstream *up = &next->ups[j];
			if (up->n_conns || !up->resolved || up->n_addrs != old->n_addrs ||
			    strcmp(up->own.hostname, old->own.hostname) != 0 ||
			    memcmp(up->addrs, old->addrs, old->n_addrs * sizeof(old->addrs[0])) !=
				0)
				continue;
			use_address(up, old->addr_i);
		}
	}
}

void upstream_set_address(struct upstream_set *set, const char *hostname,
			  const struct sockaddr_storage *addrs, unsigned n)
{
	struct sockaddr_storage list[UPSTREAM_MAX_ADDRS];
	char text[UPSTREAM_MAX_ADDRS * (INET6_ADDRSTRLEN + 2)] = "";
	unsigned n_list = 0;
	size_t len = 0;

	/* A copy with nothing but family and address, so that lists compare
	 * with memcmp(). */
	for (unsigned i = 0; i < n && n_list < UPSTREAM_MAX_ADDRS; i++) {
		struct sockaddr_storage *sa = &list[n_list];
		char ip[INET6_ADDRSTRLEN];
		memset(sa, 0, sizeof(*sa));
		if (addrs[i].ss_family == AF_INET6) {
			sa->ss_family = AF_INET6;
			((struct sockaddr_in6 *)sa)->sin6_addr =
			    ((const struct sockaddr_in6 *)&addrs[i])->sin6_addr;
		} else if (addrs[i].ss_family == AF_INET) {
			sa->ss_family = AF_INET;
			((struct sockaddr_in *)sa)->sin_addr =
			    ((const struct sockaddr_in *)&addrs[i])->sin_addr;
		} else {
			continue;
		}
		ip_text(sa, ip, sizeof(ip));
		int w = snprintf(text + len, sizeof(text) - len, "%s%s", n_list ? ", " : "", ip);
		if (w > 0 && (size_t)w < sizeof(text) - len)
			len += (size_t)w;
		n_list++;
	}
	if (!n_list || !hostname[0])
		return;
	for (unsigned i = 0; i < set->n; i++) {
		struct upstream *up = &set->ups[i];
		if (strcmp(up->own.hostname, hostname) != 0)
			continue;
		if (up->resolved && up->n_addrs == n_list &&
		    memcmp(up->addrs, list, n_list * sizeof(list[0])) == 0)
			continue; /* the same addresses: nothing to do */
		memcpy(up->addrs, list, n_list * sizeof(list[0]));
		up->n_addrs = n_list;
		log_info("upstream %s: %s is %s", up->spec->label, hostname, text);
		bool kept = false;
		for (unsigned j = 0; up->resolved && j < n_list && !kept; j++) {
			char ip[INET6_ADDRSTRLEN];
			ip_text(&list[j], ip, sizeof(ip));
			if (strcmp(ip, up->own.ip) == 0) {
				up->addr_i = j; /* still among them: keep using it */
				kept = true;
			}
		}
		if (kept)
			continue;
		use_address(up, 0);
		up->addr_tries = 0;
		if (up->resolved) {
			/* Another address: what we knew of the old one does not
			 * apply, and its connections go (their jobs are resent). */
			set_down(up, false);
			up->failures = 0;
			up->silences = 0;
			up->samples = 0;
			up->down_since_ns = 0;
			uv_timer_stop(&up->probe_timer);
			close_current(up, "its address changed");
		}
		up->resolved = true;
	}
}
