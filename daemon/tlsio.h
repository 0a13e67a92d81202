/*
 * TLS over a libuv TCP handle: the plumbing between lib/tls (which works on
 * memory buffers) and a socket.  Ciphertext received is fed to the session;
 * ciphertext produced is written with uv_try_write first and queued only
 * for what the kernel does not take; plaintext comes out through a
 * callback.  What TLS says by itself once the handshake is over (a
 * server's session tickets, a client's Finished, an answer to a key
 * update) waits for the owner's next write of the loop round, or for the
 * round's end: one write(2) for both.  Used by the DoT and DoH upstream
 * transports (through tlsconnect) and the DoT and DoH listeners: nothing
 * here knows which side it is on.
 */
#pragma once

#include "daemon/loop.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct tls_conn;
struct tlsio;

/** How a TLS stream ended (tlsio_callbacks.ended). */
enum tlsio_end {
	TLSIO_END_EOF,	     /**< the peer closed (FIN, close_notify or RST) */
	TLSIO_END_HANDSHAKE, /**< the handshake or verification failed */
	TLSIO_END_ERROR,     /**< a TLS or socket error after the handshake */
};

struct tlsio_callbacks {
	/** The handshake completed (and the peer verified). */
	void (*handshaken)(struct tlsio *io);
	/** Decrypted bytes; @data is scratch, valid during the call only. */
	void (*data)(struct tlsio *io, uint8_t *data, size_t len);
	/** The stream ended; @why in words.  The owner closes @io. */
	void (*ended)(struct tlsio *io, enum tlsio_end how, const char *why);
	/** Optional: everything queued (tlsio_backlog()) has gone to the
	 * kernel.  For owners that hold output back while the peer does not
	 * read. */
	void (*drained)(struct tlsio *io);
};

/** Embedded in its owner, which initialises tcp (uv_tcp_init) and closes
 * it (uv_close) itself; tcp.data points at this struct. */
struct tlsio {
	uv_tcp_t tcp;
	struct loop *loop;
	struct tls_conn *tls; /**< owned once started; freed by tlsio_deinit() */
	const struct tlsio_callbacks *cb;
	/** tlsio_coalesce(): what was written this loop round, not yet
	 * encrypted; it leaves in one record and one write(2) when the loop
	 * flushes (and the handshake's output with it). */
	uint8_t *pending;
	size_t pending_len, pending_cap;
	struct loop_flush flush;
	bool coalesce;
	bool ready;   /**< handshake complete */
	bool stopped; /**< tlsio_stop() called: no more callbacks */
};

/** Prepare @io on @loop (the tcp handle is initialised too). */
int tlsio_init(struct tlsio *io, struct loop *loop, const struct tlsio_callbacks *cb);

/** The socket is connected (or accepted): take @tls, start reading, send
 * the first handshake flight.  Returns 0 or a libuv error. */
int tlsio_start(struct tlsio *io, struct tls_conn *tls);

/** From now on, hold what is written until the end of the loop round:
 * many small messages (answers to pipelined queries, a handshake's session
 * tickets and the first answer) then go out as one TLS record in one
 * write(2).  A write that fails at the flush ends the stream (ended). */
void tlsio_coalesce(struct tlsio *io);

/** Encrypt @len bytes and send them (with tlsio_coalesce(), queue them for
 * the end of the round).  Returns 0, or a negative error (ended is not
 * called: the caller decides). */
int tlsio_write(struct tlsio *io, const uint8_t *data, size_t len);

/** Stop reading from the socket (a stream session at its pipeline cap);
 * tlsio_resume() reads again.  Plaintext already decrypted has been handed
 * over: nothing waits inside. */
void tlsio_pause(struct tlsio *io);
int tlsio_resume(struct tlsio *io);

/** Bytes queued in the kernel's stead: a peer not reading.  What
 * tlsio_coalesce() holds for the end of the round is not counted: it
 * leaves at the flush, and a round's answers are bounded by the pipeline
 * cap, whether the peer reads or not. */
size_t tlsio_backlog(const struct tlsio *io);

/** An orderly end: one try at sending close_notify, no queue.  It keeps
 * the session resumable.  No callback comes after this. */
void tlsio_stop(struct tlsio *io);

/** Close the tcp handle (@close_cb gets it); free the TLS session in it. */
void tlsio_close(struct tlsio *io, uv_close_cb close_cb);

/** Free the TLS session; call from the close callback. */
void tlsio_deinit(struct tlsio *io);
