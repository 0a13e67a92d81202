/*
 * The set-up and the teardown every TLS connection to an upstream has,
 * whatever it carries (DoT, DoH): the TCP connect under its deadline, the
 * TLS session for the upstream (auth name as SNI, or its IP; pins; the
 * session to resume, kept per upstream), the handshake under its deadline, what a tlsio end
 * means for the connection, and closing the TCP handle and the timer.  The
 * transports keep their state machines, their data paths and the protocol
 * they require (ALPN), which they pass to tlsconnect_open().
 */
#pragma once

#include "daemon/tlsio.h"
#include "daemon/transport.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct tls_session;
struct tlsconnect_ops;

/** Embedded in a transport's connection, which it belongs to. */
struct tlsconnect {
	struct tlsio io;
	/** The set-up deadlines (tlsconnect's), then the transport's
	 * (idle, liveness); data: the connection. */
	uv_timer_t timer;
	uv_connect_t connect_req;
	const struct tlsconnect_ops *ops;
	const struct config *cfg; /**< the deadlines, session_resumption */
	struct tls_ctx *tls_ctx;
	const struct options_upstream *spec;
	struct tls_session *session; /**< the upstream's, to resume (not owned) */
	const char *alpn;	     /**< required of the server; NULL: the context's "dot" */
	unsigned handles_open;	     /**< tcp and timer; freed when both are closed */
	bool was_ready;		     /**< the handshake completed (tlsconnect_handshaken()) */
	bool closed;		     /**< tlsconnect_close(), or tlsconnect_open() failed */
};

/** What a transport does for its connections; one static table each. */
struct tlsconnect_ops {
	/** The handshake completed (and the server verified, or the
	 * opportunistic profile let it through); tlsconnect_handshaken()
	 * comes first. */
	void (*handshaken)(struct tlsconnect *tc);
	/** Decrypted bytes from the server; @data is scratch, valid during the
	 * call only. */
	void (*data)(struct tlsconnect *tc, uint8_t *data, size_t len);
	/** Close the connection (the transport's own close, which calls
	 * tlsconnect_close()) with @reason, @why in words: the set-up failed,
	 * or the TLS stream ended (a failed handshake or connection:
	 * TRANSPORT_CLOSED_FAILED; then the server closing, or a broken
	 * stream). */
	void (*close)(struct tlsconnect *tc, enum transport_close_reason reason, const char *why);
	/** Both handles are closed and the TLS session freed: free the
	 * connection.  Comes once, after tlsconnect_close() or a failed
	 * tlsconnect_open(). */
	void (*freed)(struct tlsconnect *tc);
};

/** transport_ops.peer_new and peer_free of a TLS transport: the upstream's
 * slot for the session its next connection resumes (struct tls_session).
 * NULL on allocation failure. */
void *tlsconnect_peer_new(const struct options_upstream *spec);
void tlsconnect_peer_free(void *peer);

/**
 * Connect to @spec (counted in METRIC_upstream_connects) under the connect
 * deadline, then start TLS under the handshake deadline: with @alpn, the
 * server must select that protocol.  @owner goes into the timer's data.
 * Failures of the set-up (connect, deadlines, no TLS session, the
 * handshake) go to ops->close with TRANSPORT_CLOSED_FAILED.  Returns 0, or a libuv error when the connect
 * cannot even start (logged and counted; the handles close and ops->freed
 * follows, nothing else).
 */
int tlsconnect_open(struct tlsconnect *tc, const struct transport_env *env,
		    const struct options_upstream *spec, struct tls_session *session,
		    const char *alpn, const struct tlsconnect_ops *ops, void *owner);

/**
 * Call from the handshaken callback: stops the handshake deadline, sets
 * @base->tls, counts the handshake (and resumption, or a server not
 * authenticated: a warning) and logs "connected" with the TLS details,
 * @proto (NULL, or e.g. "HTTP/2") and how the server was verified.
 */
void tlsconnect_handshaken(struct tlsconnect *tc, struct transport_conn *base, const char *proto);

/**
 * Log the close at info level (@why, if not NULL, with the @in_flight jobs
 * once ready), count it once ready, send close_notify (which keeps the
 * session resumable), and close the handles (ops->freed follows).  No
 * callback of @tc comes after this.
 */
void tlsconnect_close(struct tlsconnect *tc, const char *why, unsigned in_flight);
