/*
 * One client query in flight, from the moment a listener hands it over to
 * the moment exactly one reply (answer, truncated answer or SERVFAIL) goes
 * back.  Queries live in a fixed pool with a bounded size; their deadlines
 * form one list in expiry order, served by a single timer, because every
 * query gets the same timeout.
 */
#pragma once

#include "lib/cache.h"
#include "lib/wire.h"

#include <uv.h>

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

struct server;
struct upconn;
struct upstream;
struct udp_listener;
struct tcp_client;

enum query_origin {
	QUERY_FROM_UDP,
	QUERY_FROM_TCP,
	QUERY_FROM_PREFETCH, /**< our own refresh of a cache entry: no client */
};

/** Where a query came from and where its reply goes. */
struct query_client {
	enum query_origin origin;
	struct udp_listener *udp;     /**< UDP: the socket it arrived on (not owned) */
	struct sockaddr_storage peer; /**< UDP: the sender's address */
	struct tcp_client *tcp;	      /**< TCP: the session (not owned); NULL once it closed */
};

enum {
	QUERY_INLINE_MSG = 512,
	QUERY_MAX_ATTEMPTS = 4, /**< sends over a query's life: hedges and resends */
};

/** One send of a query to one upstream connection. */
struct query_attempt {
	struct upconn *conn; /**< the connection holding the ID; NULL once over */
	struct upstream *up; /**< where it went */
	uint64_t sent_ns;    /**< uv_hrtime() when handed to the connection */
	uint16_t id;	     /**< the upstream ID on conn */
	bool measured;	     /**< conn was ready: the answer time is an RTT sample */
};

struct query {
	struct server *srv;
	struct query_client client;
	struct wire_info info; /**< the client's query: ID, question, EDNS */
	uint8_t *msg;	       /**< the message to send upstream (built from the
				       *   client's: our OPT, padded); points at
				       *   inline_msg or, when larger, owned heap memory */
	size_t len;
	uint64_t start_ns;    /**< uv_hrtime() when received, for the query log */
	uint64_t deadline_ms; /**< SERVFAIL at this loop time */
	/* upstream side, managed by upstream.c and upconn.c */
	struct query_attempt attempts[QUERY_MAX_ATTEMPTS]; /**< sends, in order */
	uint8_t n_attempts;				   /**< attempts made: the next free slot */
	uint8_t slow_stage;	   /**< what the timer checks next (upstream.c) */
	struct upstream *upstream; /**< the upstream that answered, or the last chosen */
	uint32_t tried;		   /**< bit i: upstream i failed this query */
	uint8_t resends;	   /**< times resent after a connection closed */
	/* identical questions in flight share one upstream query */
	uint64_t key_hash;	   /**< hash of its cache key (see cache_key_from()) */
	struct query *leader;	   /**< the query this one waits on, or NULL */
	struct query *followers;   /**< queries waiting on this one (not owned) */
	struct query *follow_next; /**< next in the leader's followers */
	struct query *same_next;   /**< next leader in the same collapse bucket */
	/* lists */
	struct query *dl_prev, *dl_next;   /**< deadline list (pool-owned) */
	struct query *tcp_prev, *tcp_next; /**< the TCP client's list of its queries */
	struct query *free_next;	   /**< pool free list */
	/* not reset between uses of a slot */
	uv_timer_t timer;	 /**< hedging and silence checks (upstream.c) */
	struct query_pool *pool; /**< the pool holding this slot */
	uint8_t inline_msg[QUERY_INLINE_MSG];
};

/** Arm @q's timer to call upstream_query_slow() in @ms. */
void query_arm_timer(struct query *q, uint64_t ms);

/** The attempt of @q that holds @id on @conn, or NULL. */
struct query_attempt *query_find_attempt(struct query *q, const struct upconn *conn, uint16_t id);

/** Number of attempts of @q still waiting for an answer. */
unsigned query_active_attempts(const struct query *q);

/** A pool of at most @capacity queries; its deadline timer runs on srv->loop. */
struct query_pool *query_pool_new(struct server *srv, unsigned capacity);

/** Fail every query still in flight (SERVFAIL) and free the pool. */
void query_pool_free(struct query_pool *pool);

/** Queries in flight. */
unsigned query_pool_inflight(const struct query_pool *pool);

/**
 * Entry point for a message from a client.  Validates it and either replies
 * at once (FORMERR, NOTIMP, SERVFAIL when the pool is full), drops it
 * (too short to answer, or not a query), or starts a query and hands it to
 * the upstream set.  @msg is only read during the call.
 */
void query_receive(struct server *srv, const struct query_client *client, const uint8_t *msg,
		   size_t len);

/**
 * Complete @q with the upstream answer @msg (parsed as @info, already matched
 * to @q's question), which is modified in place: the client's ID restored,
 * the OPT removed if the client sent none, truncated for UDP.  Releases @q.
 */
void query_answer(struct query *q, uint8_t *msg, size_t len, const struct wire_info *info);

/** Complete @q with SERVFAIL carrying Extended DNS Error @ede, counting it
 * under @metric (an enum metric).  Releases @q. */
void query_fail(struct query *q, int ede, int metric);

/** The TCP client of @q is gone: its reply, if any, goes nowhere. */
void query_detach_client(struct query *q);
