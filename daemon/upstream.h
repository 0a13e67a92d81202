/*
 * The set of upstream resolvers: which one a query goes to (--policy),
 * how healthy each is, and what happens when one is slow, silent or down.
 *
 * Health: an upstream whose connection fails before it is ready (refused,
 * unreachable, TLS failure) or goes silent twice in a row is "down": no
 * query is sent to it while another is usable, and it is re-probed in the
 * background (a TLS handshake) after an exponential backoff capped at
 * 4 s.  When every upstream a query could use is down, that query probes
 * one at once.  An answer from an upstream makes it fully healthy again.
 *
 * Speed: each upstream keeps a smoothed RTT (RFC 6298 style).  A query
 * whose upstream has not answered within an adaptive delay (bounded below
 * and above) is also sent to the next usable upstream; the first valid
 * answer wins.  A connection on which nothing at all arrives for a second
 * after a query went out is torn down and replaced.
 */
#pragma once

#include "lib/options.h"
#include "lib/tls.h"

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

struct server;
struct query;
struct upconn;

enum { UPSTREAM_MAX_CONNS = 64 };

struct upstream {
	struct server *srv;
	const struct options_upstream *spec;	  /**< from the config (not owned) */
	unsigned index;				  /**< position in the configured order */
	struct upconn *conns[UPSTREAM_MAX_CONNS]; /**< open connections (owned) */
	unsigned n_conns;
	struct tls_session *session; /**< TLS sessions to resume (owned) */
	bool down;		     /**< skipped while another upstream is usable */
	unsigned failures;	     /**< consecutive failures; reset by an answer */
	unsigned silences;	     /**< consecutive silent connections */
	uv_timer_t probe_timer;	     /**< background re-probe while down */
	double srtt_us, rttvar_us;   /**< smoothed answer time and its variation */
	unsigned samples;	     /**< RTT samples taken (0: unknown) */
};

struct upstream_set;

/** The upstreams of srv->cfg, none connected yet. */
struct upstream_set *upstream_set_new(struct server *srv);

/** Close every connection (queries in them are failed) and free the set
 * (asynchronously: its timers close first). */
void upstream_set_free(struct upstream_set *set);

/**
 * Send @q to an upstream chosen by the policy among those it is not already
 * waiting on and has not failed on, opening a connection when needed.  When
 * none is left and @q waits on nothing, it gets SERVFAIL.
 */
void upstream_dispatch(struct upstream_set *set, struct query *q);

/** @q's timer fired: hedge to another upstream, or check for silence. */
void upstream_query_slow(struct upstream_set *set, struct query *q);

/** Something that parses as an answer came from @up, even one no longer
 * wanted: it is alive. */
void upstream_alive(struct upstream *up);

/** A query was answered elsewhere while its attempt on @up waited on a
 * connection that had received nothing since. */
void upstream_lost_race(struct upstream *up);

/** An answer came from @up; @rtt_us is an RTT sample when >= 0. */
void upstream_answered(struct upstream *up, double rtt_us);

/** Called by upconn: @conn to @up reached READY. */
void upstream_conn_ready(struct upstream *up, struct upconn *conn);

/** Called by upconn when @conn closed, before its queries are requeued.
 * @failed: it never became ready (marks @up down). */
void upstream_conn_closed(struct upstream *up, struct upconn *conn, bool failed);

/**
 * A query whose attempt on a connection of @up ended without an answer
 * (the connection closed).  @sent: a routine close after the query went
 * out: resend once (that upstream included); otherwise @up failed it.
 * Nothing more is sent while @q still waits on another attempt.
 */
void upstream_requeue(struct upstream *up, struct query *q, bool sent);

/** SIGHUP: @set is being replaced by srv->upstreams.  Close its connections;
 * their queries are resent through the new set. */
void upstream_set_retire(struct upstream_set *set);

/** The network changed (addresses, routes): close every connection (their
 * queries are resent) and forget every upstream's health. */
void upstream_set_reset(struct upstream_set *set);
