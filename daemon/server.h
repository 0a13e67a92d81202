/*
 * The worker: one libuv loop and everything it owns (listeners, TCP
 * clients, the query pool, the upstream set, the cache).  Every daemon
 * module reaches its siblings through this struct; nothing is global except
 * the counters (one set per worker), the log threshold and the number of
 * TCP clients (listen_tcp).  With --workers
 * N there are N of them, one per thread, sharing nothing but the process:
 * worker 0 runs in the main thread, gets the signals and the network
 * changes, and passes them on (main.c).
 */
#pragma once

#include "lib/options.h"
#include "lib/tls.h"
#include "lib/wire.h"

#include <stdbool.h>
#include <uv.h>

struct query_pool;
struct upstream_set;
struct udp_listener;
struct tcp_listener;
struct tcp_client;
struct upconn;
struct netwatch;
struct localzone;

struct server {
	uv_loop_t *loop; /**< &loop_storage */
	uv_loop_t loop_storage;
	unsigned worker;      /**< index; 0: the main thread's */
	uv_thread_t thread;   /**< workers other than 0 */
	uv_async_t wake;      /**< commands from worker 0 (workers other than 0) */
	unsigned commands;    /**< WORKER_* bits (main.c), set and taken atomically */
	uv_mutex_t wake_lock; /**< wake may be signalled only while open */
	bool wake_open;
	const struct config *cfg; /**< the configuration in force; replaced whole on
				        *   SIGHUP, never modified */
	struct config *cfg_owned; /**< the same, owned (heap) */
	int argc;		  /**< the command line, read again on SIGHUP */
	char **argv;
	struct tls_ctx *tls;		/**< owned */
	struct query_pool *queries;	/**< owned */
	struct upstream_set *upstreams; /**< owned */
	struct cache *cache;		/**< owned; its budget may be 0 (no caching) */
	struct localzone *localzone;	/**< owned: local zones and the blocklist */
	struct udp_listener *udp[OPTIONS_MAX_LISTEN]; /**< owned, n_listen of them */
	struct tcp_listener *tcp[OPTIONS_MAX_LISTEN]; /**< owned, n_listen of them */
	unsigned n_listen;
	uint64_t fd_warned_ms;		     /**< when running out of descriptors was last logged */
	struct tcp_client *clients;	     /**< every open TCP client (owned by listen_tcp) */
	struct upconn *flush_list;	     /**< connections with queries to write (upconn) */
	struct udp_listener *udp_flush_list; /**< listeners with replies to send */
	uv_check_t flush_check;		     /**< writes them after each round of I/O */
	uv_idle_t flush_idle;		     /**< keeps the loop from blocking while some wait */
	uint64_t poll_until_ns;		     /**< busy-poll for an answer until then (busypoll) */
	bool draining;			     /**< SIGTERM seen: no new queries, finish in-flight */
	struct netwatch *netwatch;	     /**< owned; NULL where unavailable */
	uv_timer_t drain_timer;		     /**< bounds the drain */
	uv_signal_t sig_term, sig_int, sig_usr1, sig_hup;
	/** One read buffer shared by every stream read: libuv hands it back in
	 * the same loop iteration, and readers keep nothing pointing into it. */
	uint8_t read_buf[65536];
	/** Decrypted upstream data, handed to framing (same reasoning). */
	uint8_t plain_buf[16384];
	/** A reply being adapted for one client (ID, case, TTLs, truncation). */
	uint8_t reply_buf[65536];
	/** The query being built for upstreams (our OPT, padding). */
	uint8_t query_buf[65536];
	/** Ciphertext on its way to an upstream socket. */
	uint8_t cipher_buf[65536];
};

/** Called when the last in-flight query completes during a drain. */
void server_drained(struct server *srv);

/** The network changed (netwatch, worker 0): every worker reconnects. */
void server_network_changed(struct server *srv);

/** A worker's share of a limit for the whole process (at least 1). */
static inline unsigned worker_share(unsigned total, unsigned workers)
{
	return (total + workers - 1) / workers;
}

/** Something was queued for the end of this loop iteration (batched writes):
 * make sure the loop gets there without blocking first. */
void server_want_flush(struct server *srv);
