/*
 * Counters of what happened, rendered as one text line ("stats: k=v ...")
 * on SIGUSR1 and at exit, and as Prometheus metrics (metrics_export()).
 * Every drop, overflow and refusal has a counter: what is not counted cannot
 * be noticed.
 *
 * Each worker thread has its own set of everything (counters, gauges, the
 * per-upstream blocks) and is the only one to write it, with relaxed atomic
 * stores; readers on other threads sum the sets.  Nothing on the query path
 * takes a lock or a locked instruction.
 */
#pragma once

#include "lib/prom.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define METRICS_LIST(X)                                                                            \
	X(queries_udp)		  /* queries received over UDP */                                  \
	X(queries_tcp)		  /* queries received over TCP */                                  \
	X(queries_dot)		  /* queries received over TLS (--listen-tls) */                   \
	X(queries_doh)		  /* queries received over HTTPS (--listen-https) */               \
	X(answers_forwarded)	  /* upstream answers delivered to clients */                      \
	X(answers_truncated)	  /* of those, truncated for UDP (TC=1) */                         \
	X(local_answers)	  /* answered from a locally served zone (never forwarded) */      \
	X(blocked)		  /* names on the blocklist, answered locally */                   \
	X(cache_hits)		  /* answered from the cache */                                    \
	X(cache_misses)		  /* not in the cache (or expired) */                              \
	X(cache_stale_served)	  /* expired answers served because upstreams failed */            \
	X(cache_prefetches)	  /* popular entries refreshed before they expired */              \
	X(queries_collapsed)	  /* answered by an identical query already in flight */           \
	X(queries_cancelled)	  /* queries whose client went away first (a DoH stream reset) */  \
	X(ecs_stripped)		  /* queries whose Client Subnet option was removed */             \
	X(servfail_timeout)	  /* SERVFAIL because the deadline passed */                       \
	X(servfail_no_upstream)	  /* SERVFAIL because no upstream could be used */                 \
	X(servfail_overload)	  /* SERVFAIL because the in-flight table was full */              \
	X(servfail_shutdown)	  /* SERVFAIL (EDE 14) to TCP clients querying during shutdown */  \
	X(refused_clients)	  /* queries from clients outside --allow: REFUSED */              \
	X(formerr)		  /* malformed queries answered with FORMERR */                    \
	X(notimp)		  /* queries with an opcode other than QUERY */                    \
	X(dropped_malformed)	  /* client datagrams too short to answer */                       \
	X(dropped_responses)	  /* messages with QR=1 sent to us by clients */                   \
	X(udp_send_failed)	  /* replies the kernel would not take */                          \
	X(dnstap_sent)		  /* dnstap events written to the receiver (--dnstap) */           \
	X(dnstap_dropped)	  /* dnstap events not queued: no receiver, or it is too slow */   \
	X(dnstap_lost)		  /* dnstap events queued, then not written: the receiver left */  \
	X(tcp_accepted)		  /* TCP client connections accepted */                            \
	X(tcp_refused)		  /* TCP clients closed at once: too many */                       \
	X(tcp_idle_closed)	  /* TCP clients closed for idleness */                            \
	X(dot_accepted)		  /* TLS client connections accepted (--listen-tls) */             \
	X(dot_handshakes)	  /* of those, handshakes completed */                             \
	X(dot_resumed)		  /* of those, resumed sessions */                                 \
	X(dot_handshake_failures) /* TLS clients closed before a session: failed or too slow */    \
	X(tls_address_refused)	  /* TLS clients closed at once: --max-clients-per-address */      \
	X(doh_accepted)		  /* HTTPS client connections accepted (--listen-https) */         \
	X(doh_handshakes)	  /* of those, handshakes completed */                             \
	X(doh_resumed)		  /* of those, resumed sessions */                                 \
	X(doh_handshake_failures) /* HTTPS clients closed before a session: failed or too slow */  \
	X(doh_http_errors)	  /* DoH requests answered with an HTTP error status */            \
	X(doh_protocol_errors)	  /* DoH clients cut off: HTTP/2 broken, or a flood */             \
	X(doh_idle_closed)	  /* DoH clients closed for idleness */                            \
	X(upstream_connects)	  /* TCP connections opened to upstreams */                        \
	X(upstream_handshakes)	  /* TLS handshakes completed */                                   \
	X(upstream_resumed)	  /* of those, resumed sessions */                                 \
	X(upstream_tls_failures)  /* handshakes or verifications that failed */                    \
	X(upstream_connect_failures) /* TCP connects that failed */                                \
	X(upstream_closed)	     /* established connections closed by either side */           \
	X(upstream_resent)	     /* queries resent after their connection closed */            \
	X(upstream_hedged) /* queries also sent to another upstream: the first was slow */         \
	X(upstream_silent) /* connections torn down: nothing came back for a second */             \
	X(upstream_unauthenticated) /* opportunistic profile: used without authentication */       \
	X(upstream_bad_answers)	    /* upstream messages that did not parse */                     \
	X(upstream_unmatched)  /* answers matching no query in flight (ID or question): dropped */ \
	X(upstream_doh_status) /* DoH responses with an HTTP status other than 200 */              \
	X(upstream_doh_content_type) /* DoH 200 responses not of type application/dns-message */   \
	X(upstream_doh_too_large)    /* DoH response bodies over 65,535 bytes */                   \
	X(upstream_doh_refused) /* DoH streams refused unprocessed (REFUSED_STREAM, GOAWAY) */     \
	X(upstream_doh_reset)	/* DoH streams reset by the server before the response ended */    \
	X(upstream_doh_goaway)	/* GOAWAY frames from DoH upstreams */                             \
	X(upstream_doh_pings)	/* PINGs sent to DoH upstreams silent for a second */              \
	X(answered)		/* client queries answered with an upstream's answer */            \
	X(servfail_bad_answer)	/* SERVFAIL: the upstream answer no longer parsed, filtered */     \
	X(rcode_noerror)	/* replies to clients by rcode: NOERROR */                         \
	X(rcode_formerr)	/* FORMERR */                                                      \
	X(rcode_servfail)	/* SERVFAIL */                                                     \
	X(rcode_nxdomain)	/* NXDOMAIN */                                                     \
	X(rcode_notimp)		/* NOTIMP */                                                       \
	X(rcode_refused)	/* REFUSED */                                                      \
	X(rcode_other)		/* any other rcode */

enum metric {
#define METRIC_ENUM(name) METRIC_##name,
	METRICS_LIST(METRIC_ENUM)
#undef METRIC_ENUM
	    METRIC_COUNT
};

enum { METRICS_MAX_WORKERS = 64 };

/** The counters this thread adds to: worker 0's until metrics_use_worker(). */
extern _Thread_local uint64_t *metrics_mine;

static inline void metrics_inc(enum metric m)
{
	/* Only this thread writes its counters, but metrics_render() may read
	 * them from another: relaxed atomic load and store (plain moves on x86),
	 * not a locked add. */
	uint64_t *c = &metrics_mine[m];
	__atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
}

/** From now on this thread counts as worker @index (< METRICS_MAX_WORKERS). */
void metrics_use_worker(unsigned index);

/** Render every counter, summed over the workers, as "stats: name=value ..."
 * (no newline) into @buf. */
void metrics_render(char *buf, size_t cap);

/* -- gauges: one value per worker, summed -------------------------------------------- */

#define METRICS_GAUGES(X)                                                                          \
	X(queries_in_flight) /* queries holding a slot (waiting for an upstream) */                \
	X(cache_entries)     /* answers in the cache */                                            \
	X(cache_bytes)	     /* bytes they use, counted against --cache-size */

enum metric_gauge {
#define METRIC_GAUGE_ENUM(name) METRIC_GAUGE_##name,
	METRICS_GAUGES(METRIC_GAUGE_ENUM)
#undef METRIC_GAUGE_ENUM
	    METRIC_GAUGE_COUNT
};

/** The gauges this thread sets: worker 0's until metrics_use_worker(). */
extern _Thread_local uint64_t *metrics_gauges_mine;

/** Set this worker's share of gauge @g. */
static inline void metrics_gauge_set(enum metric_gauge g, uint64_t value)
{
	__atomic_store_n(&metrics_gauges_mine[g], value, __ATOMIC_RELAXED);
}

/* -- per upstream ---------------------------------------------------------------------- */

enum {
	METRICS_MAX_UPSTREAMS = 256, /**< distinct upstream specs over the life of the process */
	METRICS_LABEL_MAX = 512,     /**< an upstream's label, its NUL included */
	/** Buckets of the answer-time histogram: 0.25 ms doubling to 8.192 s,
	 * plus one above (+Inf). */
	METRICS_RTT_BUCKETS = 16,
};

/** How an attempt (one send of a query to one upstream) ended. */
enum metrics_outcome {
	METRICS_OUTCOME_ANSWERED,  /**< its answer was taken */
	METRICS_OUTCOME_LOST,	   /**< another upstream answered first (a hedge race) */
	METRICS_OUTCOME_CANCELLED, /**< the query ended otherwise: deadline, shutdown */
	METRICS_OUTCOME_FAILED,	   /**< its connection failed it: counted against the query */
	METRICS_OUTCOME_CLOSED,	   /**< its connection closed under it: resent at no cost */
	METRICS_OUTCOMES,
};

/** Why a connection to an upstream was opened. */
enum metrics_open_reason {
	METRICS_OPEN_DEMAND, /**< a query found no connection that takes it */
	METRICS_OPEN_BUSY,   /**< every open one had 32 queries in flight */
	METRICS_OPEN_PROBE,  /**< a health probe of a down upstream */
	METRICS_OPEN_REASONS,
};

/** One worker's numbers for one upstream.  Written by that worker only
 * (metrics_bump(), metrics_put()); read by anyone. */
struct metrics_upstream {
	uint64_t requests[METRICS_OUTCOMES];
	uint64_t opened[METRICS_OPEN_REASONS];
	uint64_t handshakes_full, handshakes_resumed;
	uint64_t duration[METRICS_RTT_BUCKETS + 1]; /**< answered attempts, per bucket */
	uint64_t duration_sum_ns;
	/* gauges */
	uint64_t down;	   /**< this worker's sets in which it is down (0: up) */
	uint64_t conns;	   /**< open connections */
	uint64_t failures; /**< consecutive failures, as last set */
	uint64_t srtt_us;  /**< smoothed answer time, as last set (0: unknown) */
	unsigned slot;	   /**< which upstream: set by metrics_upstream_hold() */
};

/** Add @n to a counter or gauge of this worker's. */
static inline void metrics_add(uint64_t *c, uint64_t n)
{
	__atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}

static inline void metrics_bump(uint64_t *c)
{
	metrics_add(c, 1);
}

/** Take one from a gauge of this worker's (never below 0). */
static inline void metrics_drop(uint64_t *c)
{
	uint64_t v = __atomic_load_n(c, __ATOMIC_RELAXED);
	__atomic_store_n(c, v ? v - 1 : 0, __ATOMIC_RELAXED);
}

static inline void metrics_put(uint64_t *c, uint64_t v)
{
	__atomic_store_n(c, v, __ATOMIC_RELAXED);
}

/** The histogram bucket of an answer that took @ns: the first i with
 * @ns <= 0.25 ms * 2^i, or METRICS_RTT_BUCKETS above 8.192 s. */
static inline unsigned metrics_rtt_bucket(uint64_t ns)
{
	uint64_t quarters = (ns + 249999) / 250000; /* in 0.25 ms, rounded up */

	if (quarters <= 1)
		return 0;
	unsigned i = 64u - (unsigned)__builtin_clzll(quarters - 1);
	return i < METRICS_RTT_BUCKETS ? i : METRICS_RTT_BUCKETS;
}

/** Upper bound of bucket @i (< METRICS_RTT_BUCKETS), in seconds. */
double metrics_rtt_bound(unsigned i);

/** Record an answer that took @ns in @m. */
static inline void metrics_rtt_record(struct metrics_upstream *m, uint64_t ns)
{
	metrics_bump(&m->duration[metrics_rtt_bucket(ns)]);
	metrics_add(&m->duration_sum_ns, ns);
}

/**
 * Worker @worker's block for the upstream @label (as configured, e.g.
 * "127.0.0.1@853#dns.example.test") reached over @transport ("dot"), which
 * it now holds: an upstream is shown while some set holds it.  The same
 * label and transport get the same numbers across reloads.  Takes a lock:
 * call when a set is made, not per query.  Never NULL: past
 * METRICS_MAX_UPSTREAMS labels, a block that is never shown.
 */
struct metrics_upstream *metrics_upstream_hold(unsigned worker, const char *label,
					       const char *transport);

/** The set that held @m is gone. */
void metrics_upstream_release(struct metrics_upstream *m);

/** One upstream, summed over the workers. */
struct metrics_upstream_view {
	const char *label; /**< valid as long as the process */
	const char *transport;
	bool up;		     /**< no worker has it down */
	double srtt_s;		     /**< mean of the workers' estimates; < 0: none yet */
	uint64_t failures;	     /**< the most any worker counts */
	uint64_t conns;		     /**< open connections, all workers */
	struct metrics_upstream sum; /**< the counters summed */
};

/** The upstreams held now, in the order they were first held; at most
 * @cap into @out.  Returns how many there are. */
size_t metrics_upstreams(struct metrics_upstream_view *out, size_t cap);

/* -- output ----------------------------------------------------------------------------- */

/** Every metric, summed over the workers, into @w: the process's counters
 * and gauges and the families of every upstream held. */
void metrics_export(struct prom_writer *w);

/** The upstreams as text, one line each ("LABEL up|down SRTT FAILURES
 * CONNECTIONS TRANSPORT", SRTT in ms or "-"), or as JSON with @json. */
void metrics_export_upstreams(struct prom_buf *out, bool json);
