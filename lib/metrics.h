/*
 * Counters of what happened, rendered as one text line ("stats: k=v ...")
 * on SIGUSR1 and at exit.  Every drop, overflow and refusal has a counter:
 * what is not counted cannot be noticed.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define METRICS_LIST(X)                                                                            \
	X(queries_udp)		  /* queries received over UDP */                                  \
	X(queries_tcp)		  /* queries received over TCP */                                  \
	X(queries_dot)		  /* queries received over TLS (--listen-tls) */                   \
	X(answers_forwarded)	  /* upstream answers delivered to clients */                      \
	X(answers_truncated)	  /* of those, truncated for UDP (TC=1) */                         \
	X(local_answers)	  /* answered from a locally served zone (never forwarded) */      \
	X(blocked)		  /* names on the blocklist, answered locally */                   \
	X(cache_hits)		  /* answered from the cache */                                    \
	X(cache_misses)		  /* not in the cache (or expired) */                              \
	X(cache_stale_served)	  /* expired answers served because upstreams failed */            \
	X(cache_prefetches)	  /* popular entries refreshed before they expired */              \
	X(queries_collapsed)	  /* answered by an identical query already in flight */           \
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
	X(upstream_doh_pings)	/* PINGs sent to DoH upstreams silent for a second */

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
