/*
 * The set of upstream resolvers: which one a job goes to (--policy), how
 * healthy each is, and what happens when one is slow, silent or down.  It
 * talks to connections only through transport.h, so it works unchanged for
 * any transport; it knows nothing of clients or queries either: the query
 * core hands it a job (a message to send, the question its answer must
 * carry) and gets the answer or the failure back through hooks.
 *
 * Health: an upstream whose connection fails before it is ready (refused,
 * unreachable, TLS failure) or goes silent twice in a row is "down": no job
 * is sent to it, and it is re-probed in the background (a new connection)
 * after a backoff: 250 ms doubling up to 1 s while jobs want it, 60 s while
 * nothing does.  When every upstream a job could use is down, the job fails
 * at once.  An answer from an upstream makes it fully healthy again.  An
 * upstream given by name is not used before its addresses are known
 * (upstream_set_address(), from the worker's bootstrap); it uses one of
 * them at a time, and when a connection to that one fails before it is
 * ready, the next one (in turn) for the next connection and probe.
 *
 * Speed: each upstream keeps a smoothed RTT (RFC 6298 style).  A job whose
 * upstream has not answered within an adaptive delay (bounded below and
 * above) is also sent to the next usable upstream; the first valid answer
 * wins.  A connection on which nothing at all arrives for a second after a
 * job went out is torn down and replaced.
 *
 * Routine closes: when a server closes a connection (or refuses a job)
 * after it answered on it, or we close it (reload, network change), its
 * unanswered jobs go to a fresh connection without using their budget, as
 * often as needed until the job is cancelled (the query's deadline).  Only
 * a connection that fails without answering anything counts against the
 * jobs on it (a silent death: the second one, while the upstream answers
 * nothing elsewhere): those never go to that upstream again.  A job that
 * one server refuses unprocessed (DoH's REFUSED_STREAM) is sent again for
 * free too, up to UPSTREAM_MAX_REFUSALS times; one it answers with an
 * error (an HTTP status) goes on to the next upstream.
 */
#pragma once

#include "daemon/transport.h"
#include "lib/options.h"
#include "lib/wire.h"

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

struct upstream;
struct upstream_set;

enum {
	UPSTREAM_MAX_CONNS = 64,
	UPSTREAM_MAX_ACTIVE = 4,   /**< attempts of one job waiting at once (hedges) */
	UPSTREAM_MAX_SENDS = 4,	   /**< budgeted sends of one job: hedges and failures */
	UPSTREAM_MAX_REFUSALS = 8, /**< free resends of one job after refusals (REFUSED_STREAM);
				    *   beyond, a refusal counts as a failure */
	UPSTREAM_MAX_ADDRS = 8,	   /**< addresses kept for an upstream given by name */
};

/** One send of a job to one connection. */
struct upstream_attempt {
	struct transport_conn *conn; /**< where it waits; NULL once over */
	struct upstream *up;	     /**< the upstream of conn */
	uint64_t sent_ns;	     /**< uv_hrtime() when handed to the connection */
	uint32_t key;		     /**< the transport's key for it on conn */
	bool measured;		     /**< conn was ready: the answer time is an RTT sample */
};

/**
 * A message to resolve upstream, embedded in its owner (a query).  The
 * owner fills msg, len and question, then calls upstream_job_start();
 * everything else is this layer's.
 */
struct upstream_job {
	const uint8_t *msg; /**< the message to send (owner's; valid until the end) */
	size_t len;
	const struct wire_question *question; /**< what the answer must ask (owner's) */
	/* upstream layer's */
	struct upstream_set *set; /**< the set it is dispatched in (the newest one) */
	struct upstream_attempt attempts[UPSTREAM_MAX_ACTIVE];
	uint32_t tried[OPTIONS_MAX_UPSTREAMS]; /**< identities of upstreams that failed it */
	uint8_t n_tried;
	uint8_t sends;	       /**< budgeted sends so far */
	uint8_t silent_deaths; /**< connections that died on it without answering anything */
	uint8_t refusals;      /**< servers that refused it unprocessed (failed, not processed) */
	uint8_t stage;	       /**< what the timer checks next */
	const char *source;    /**< label of the upstream that answered or was last chosen */
	uv_timer_t timer;      /**< hedging and silence checks; data: the job */
};

/** How jobs end, reported to the owner.  Each job ends through exactly one
 * of these, or by upstream_job_cancel(); when a hook runs, the job holds no
 * attempt and no timer any more (cancelling it again is harmless). */
struct upstream_hooks {
	/** An answer that matches the job's question: @msg (parsed as @info)
	 * may be modified during the call. */
	void (*answered)(struct upstream_job *job, uint8_t *msg, size_t len,
			 const struct wire_info *info);
	/** No upstream is left for it: SERVFAIL with Extended DNS Error @ede,
	 * counted as @metric (an enum metric). */
	void (*failed)(struct upstream_job *job, int ede, int metric);
};

/** The transport for @spec. */
typedef const struct transport_ops *(*upstream_transport_for)(const struct options_upstream *spec);

/** A set of the @n upstreams @specs (the default ones, or a forward zone's),
 * none connected yet; the policy and limits come from @env->cfg.  @env,
 * @specs and @hooks must outlive the set.  NULL on allocation failure. */
struct upstream_set *upstream_set_new(const struct transport_env *env,
				      const struct options_upstream *specs, unsigned n,
				      upstream_transport_for transport_for,
				      const struct upstream_hooks *hooks);

/** Close every connection and free the set (asynchronously: its timers
 * close first).  Jobs still on a connection fail (servfail_shutdown). */
void upstream_set_free(struct upstream_set *set);

/** Reload: @set gives way to @next.  An upstream of @next given by name,
 * with the same addresses as in @set and no connection yet, goes on with
 * the address @set's was using.  Then @set's connections close, and the
 * jobs on them move to @next without using their budget; then free @set. */
void upstream_set_retire(struct upstream_set *set, struct upstream_set *next);

/** The network changed (addresses, routes): close every connection (jobs
 * are resent) and forget every upstream's health and latency. */
void upstream_set_reset(struct upstream_set *set);

/**
 * The name @hostname resolved to the @n addresses @addrs (AF_INET or
 * AF_INET6, in the order to try them; their ports are not used; beyond
 * UPSTREAM_MAX_ADDRS, or of another family, ignored; @n 0: nothing
 * happens): every upstream of @set given by that name connects to one of
 * them from now on (an upstream given by name is not used until this is
 * called).  It starts with the first.  When a connection to the address in
 * use fails before it is ready (cannot connect, refused, timed out, TLS
 * failure) and the upstream has no other connection left (none ready, none
 * still opening), the next address (after the last, the first) is used for
 * the next connection and probe: logged at notice ("ADDRESS failed (why); trying its next address
 * ADDRESS2"), and probed after the shortest backoff while the outage has
 * not tried it yet.  A list that holds the address in use keeps it; one
 * that does not makes the upstream use its first, forget its health and
 * latency and close its connections, whose jobs are resent.
 */
void upstream_set_address(struct upstream_set *set, const char *hostname,
			  const struct sockaddr_storage *addrs, unsigned n);

/** How often a lasting outage is logged ("still down after N s"): once a
 * minute.  A variable only so that the unit tests can shorten it. */
extern unsigned upstream_outage_log_ms;

/** Prepare @job's timer on @loop, once per slot. */
void upstream_job_init(struct upstream_job *job, uv_loop_t *loop);

/** Close @job's timer; @close_cb gets the handle with data set to @arg. */
void upstream_job_deinit(struct upstream_job *job, uv_close_cb close_cb, void *arg);

/** Send @job (msg, len, question filled in) to an upstream chosen by the
 * policy.  When none can be used, the failed hook runs before this returns. */
void upstream_job_start(struct upstream_set *set, struct upstream_job *job);

/** The owner no longer wants an answer (answered elsewhere, deadline):
 * forget every attempt; a late answer is dropped.  No hook runs. */
void upstream_job_cancel(struct upstream_job *job);

/** The upstream that answered @job or was last chosen for it, as
 * configured ("-" when none), for logs. */
const char *upstream_job_source(const struct upstream_job *job);
