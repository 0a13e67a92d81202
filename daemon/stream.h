/*
 * A DNS stream session (RFC 7766): the part of a client connection that
 * does not care what carries the bytes -- plain TCP today, TLS for the DoT
 * listener.  It reassembles 2-byte-framed queries, hands them to the query
 * core (a frontend: see frontend.h), frames the replies, which go out in
 * completion order, and enforces the limits: at most --max-tcp-pipeline
 * queries in flight (bytes already read beyond that wait in the framing
 * buffer, reading pauses), an idle timer that only whole queries reset, a
 * bound on the unsent backlog of a client that does not read, and a
 * half-close answered before closing.  Every session of every stream
 * frontend counts against --max-tcp-clients, for the whole process.
 *
 * The carrier is below, behind struct stream_pipe_ops; the session is
 * embedded in the carrier's connection object, whose memory must stay
 * until the session says it may go (pipe_ops.release).
 */
#pragma once

#include "daemon/frontend.h"
#include "daemon/loop.h"
#include "lib/framing.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct query_pool;
struct stream_session;

/** What a carrier does for a session.  @pipe is the carrier's connection. */
struct stream_pipe_ops {
	const char *name;   /**< "tcp", "dot": the frontend's name in logs */
	int queries_metric; /**< the counter of queries received (enum metric) */
	bool encrypted;	    /**< TLS: answers to padded queries are padded */
	/** Send one reply with its 2-byte prefix (@prefix).  Returns 0 or a
	 * negative error (the session then closes). */
	int (*write)(void *pipe, const uint8_t prefix[2], const uint8_t *msg, size_t len);
	/** Bytes accepted by write() and not yet taken by the kernel. */
	size_t (*backlog)(const void *pipe);
	/** Stop reading (the pipeline is full) / read again.  resume returns
	 * 0 or a negative error. */
	void (*pause)(void *pipe);
	int (*resume)(void *pipe);
	/** Close the connection; once its handles are closed the carrier
	 * calls stream_session_closed(). */
	void (*close)(void *pipe);
	/** The session is over and nothing refers to it: free the carrier's
	 * connection (which holds the session). */
	void (*release)(void *pipe);
};

/** Every open session of one worker, for closing them all at shutdown. */
struct stream_sessions {
	struct stream_session *head;
};

struct stream_session {
	const struct stream_pipe_ops *pipe_ops;
	void *pipe;
	struct query_pool *pool;     /**< where queries go (not owned) */
	struct stream_sessions *all; /**< the list it is in */
	struct stream_session *prev, *next;
	uv_timer_t idle;
	struct loop_flush resume; /**< serve held frames / read again, at the end of the round */
	struct framing reader;
	unsigned inflight; /**< queries handed to the core and not done */
	bool reading;	   /**< the carrier reads (paused at the cap) */
	bool eof;	   /**< the client half-closed: close once answered */
	bool closing;	   /**< close requested: replies go nowhere */
	bool pipe_closed;  /**< the carrier's handles are closed */
	bool timer_closed; /**< the idle timer is closed */
	bool allowed;	   /**< the peer is in --allow (checked once) */
	char peer[64];	   /**< "192.0.2.1#41000", for logs */
	/** The client's address and ours on this connection, for dnstap
	 * (family AF_UNSPEC when unknown). */
	struct sockaddr_storage peer_addr, local_addr;
};

/** The frontend ops of stream sessions (client.conn is the session). */
extern const struct frontend_ops stream_frontend_ops;

/** Take one place in the process-wide client budget (--max-tcp-clients).
 * False when none is left. */
bool stream_sessions_reserve(unsigned max_clients);

/** Give a place back (a connection refused after reserve). */
void stream_sessions_unreserve(void);

/** Places taken in the whole process. */
unsigned stream_sessions_open(void);

/** Start @s (embedded in the carrier's connection, which has reserved a
 * place) for a client at @peer that reached us at @local (either NULL when
 * unknown), reading already.  Arms its idle timer. */
void stream_session_init(struct stream_session *s, struct stream_sessions *all,
			 struct query_pool *pool, const struct stream_pipe_ops *ops, void *pipe,
			 const struct sockaddr *peer, const struct sockaddr *local);

/** Bytes read from the client. */
void stream_session_data(struct stream_session *s, uint8_t *data, size_t len);

/** The client closed its side (EOF): answer what is in flight, then close. */
void stream_session_eof(struct stream_session *s);

/** Close @s now (error, shutdown); queries in flight are answered nowhere. */
void stream_session_close(struct stream_session *s);

/** The carrier's handles are closed (after pipe_ops.close). */
void stream_session_closed(struct stream_session *s);

/** Close every session of @all (shutdown). */
void stream_sessions_close_all(struct stream_sessions *all);
