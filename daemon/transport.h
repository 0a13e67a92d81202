/*
 * The upstream transport interface: how the upstream layer (pool, policy,
 * health, hedging) talks to connections without knowing what carries them
 * (DoT, DoH and plain DNS: daemon/dot.c, daemon/doh.c and daemon/plain.c).
 *
 * Downward, ops: open a connection, send a job (the transport returns its
 * own key for it: the DNS ID for DoT, a request number for DoH), cancel a
 * key, close, and how many more jobs it takes.  Upward, events the
 * connection reports through the table it was opened with: ready,
 * answer(key, message), failed(key) for one job that ends without an
 * answer while the connection stays, closed(reason) and orphaned(job,
 * could the server have processed it).  Question checks, RTT samples,
 * silence and the routine-close rule are the upstream layer's; a transport
 * only moves messages.
 *
 * Every connection starts with a struct transport_conn, which the upstream
 * layer reads and writes (its bookkeeping) and the transport fills in at
 * open.  Its memory is the transport's and stays valid until the last
 * event about it has returned.
 */
#pragma once

#include "lib/options.h"
#include "lib/wire.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct loop;
struct tls_ctx;
struct transport_conn;

/** What a transport needs from the worker to open connections. */
struct transport_env {
	struct loop *loop;
	const struct config *cfg; /**< timeouts, resumption; outlives the connections */
	struct tls_ctx *tls;	  /**< trust anchors and profile */
	unsigned worker;	  /**< the worker's index, for its share of the metrics */
};

/** Why a connection closed (the closed event). */
enum transport_close_reason {
	TRANSPORT_CLOSED_BY_US,	    /**< transport_ops.close() was called */
	TRANSPORT_CLOSED_IDLE,	    /**< idle timeout (ours or the server's keepalive) */
	TRANSPORT_CLOSED_BY_SERVER, /**< FIN, close_notify or RST after it was ready */
	TRANSPORT_CLOSED_FAILED,    /**< never became ready: connect, TLS or auth failure */
	TRANSPORT_CLOSED_BROKEN,    /**< a protocol error or a failed write after ready */
	TRANSPORT_CLOSED_SILENT,    /**< the transport found the server silent (DoH: a PING
				     *   unanswered for a second): as when the upstream layer
				     *   finds a silence, its jobs are resent without using
				     *   their budget and the silence is held against the
				     *   upstream */
};

/** Events a connection reports upward (the upstream layer's handlers). */
struct transport_events {
	/** @c can carry queries now (handshake done, certificate verified). */
	void (*ready)(struct transport_conn *c);
	/** A well-formed response @msg (parsed as @info) arrived for @key,
	 * which was given to @job (NULL when no job holds @key).  @msg may be
	 * modified.  Returns true when the answer was taken, after cancelling
	 * @key itself (so that the key is free before anything else can be
	 * sent); false leaves @key waiting (an answer that failed the question
	 * check may be followed by the right one). */
	bool (*answer)(struct transport_conn *c, uint32_t key, void *job, uint8_t *msg, size_t len,
		       const struct wire_info *info);
	/** The server showed it is alive on @c without answering a job yet (a
	 * truncated answer about to be asked again over TCP, an HTTP/2 PING
	 * answered): @c is not silent. */
	void (*alive)(struct transport_conn *c);
	/** One attempt is over without an answer while @c stays open: @key,
	 * given to @job, was refused or answered with something that is not an
	 * answer.  The transport has forgotten @key already (no cancel
	 * follows).  @maybe_processed false: the server said it did not process
	 * it (DoH: RST_STREAM REFUSED_STREAM, or a GOAWAY before it), so the
	 * job is sent again without using its budget (a few times at most).
	 * True: that attempt failed (DoH: an HTTP error status, another content
	 * type, a body too large, malformed or for another question, a reset
	 * stream): the job goes on to another upstream, or fails with SERVFAIL
	 * when none is left.  @reason, in words, is for the log.  Never
	 * reported for a key after its cancel, nor during open() or send().
	 * (DoT drops a bad message and keeps waiting for the right one instead:
	 * a DNS ID can be answered again, a finished HTTP/2 stream cannot.) */
	void (*failed)(struct transport_conn *c, uint32_t key, void *job, bool maybe_processed,
		       const char *reason);
	/** @c closed; @why says why in words ("cannot connect: connection
	 * refused"), or is NULL.  The transport logs it at info level only:
	 * whether it is worth a warning (the first failure of an outage) is the
	 * upstream layer's call.  Comes before the orphaned events of its jobs,
	 * so that a failed upstream is known before they are sent again. */
	void (*closed)(struct transport_conn *c, enum transport_close_reason reason,
		       const char *why);
	/** @job was on @c when it closed and has no answer.  @maybe_processed:
	 * it was written, so the server may have seen it (false: never
	 * written, or the server said it did not process it). */
	void (*orphaned)(struct transport_conn *c, void *job, bool maybe_processed);
};

/** What a kind of transport does.  One static table per kind. */
struct transport_ops {
	const char *name; /**< "dot" */
	/** Per-upstream state kept across connections (TLS session to
	 * resume).  NULL on allocation failure. */
	void *(*peer_new)(const struct options_upstream *spec);
	void (*peer_free)(void *peer);
	/** Start a connection to @spec (with @peer from peer_new()).  Jobs may
	 * be sent at once; they wait for ready.  NULL if it could not even start
	 * (logged; no event follows). */
	struct transport_conn *(*open)(const struct transport_env *env,
				       const struct options_upstream *spec, void *peer,
				       const struct transport_events *ev, void *owner);
	/** Queue @msg (copied) for @job; the key is written to @key.  Returns 0,
	 * -ENOSPC when @c takes no more now, -EPIPE when it is closing.  The
	 * upstream layer sends only to a connection with capacity, except when
	 * every connection of the upstream is full and no more may open: then a
	 * transport may hold the job until a slot frees (DoH: until a stream
	 * closes) or refuse it (-ENOSPC), and another connection opens. */
	int (*send)(struct transport_conn *c, const uint8_t *msg, size_t len, void *job,
		    uint32_t *key);
	/** The job holding @key needs no answer any more: a late one is dropped. */
	void (*cancel)(struct transport_conn *c, uint32_t key);
	/** Close @c now; @why is logged when non-NULL.  Events follow at once
	 * (closed, then orphaned for each job). */
	void (*close)(struct transport_conn *c, const char *why);
	/** Jobs in flight on @c. */
	unsigned (*load)(const struct transport_conn *c);
	/** How many more jobs @c starts now: 0 when closing, or when a server
	 * limit such as SETTINGS_MAX_CONCURRENT_STREAMS is reached. */
	unsigned (*capacity)(const struct transport_conn *c);
};

/** The head of every transport's connection. */
struct transport_conn {
	const struct transport_ops *ops;   /**< set by open() */
	const struct transport_events *ev; /**< set by open() */
	void *owner;			   /**< the upstream layer's, set by open() */
	/** Set by the transport before the ready event, for the metrics:
	 * TRANSPORT_TLS_NONE (plain DNS), _FULL or _RESUMED handshake. */
	enum transport_tls {
		TRANSPORT_TLS_NONE,
		TRANSPORT_TLS_FULL,
		TRANSPORT_TLS_RESUMED,
	} tls;
	/* The upstream layer's bookkeeping; a transport never touches these. */
	uint64_t last_answer_ns; /**< uv_hrtime() of the last well-formed answer (0: none) */
	bool ready;		 /**< the ready event came */
	bool answered;		 /**< it answered at least one query: a later close is routine */
	bool retiring;		 /**< we closed it on purpose: its jobs are resent freely */
};
