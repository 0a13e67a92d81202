/*
 * The frontend interface: everything the query core may do to a client,
 * whatever carried its query (a UDP datagram, a frame on a TCP or, later, a
 * TLS stream, an HTTP/2 stream).  A frontend hands each message to
 * query_receive() with a small client handle; the core answers through the
 * handle's ops and never names a listener.
 *
 * Contract: for every query_receive() call the core calls ops->done()
 * exactly once (at once for a message answered or dropped on the spot,
 * later for one that went upstream), and ops->reply() at most once before
 * it.  Between the two the frontend keeps whatever the handle points at
 * alive; a client that went away meanwhile simply drops the reply.
 */
#pragma once

#include "lib/wire.h"

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

struct frontend_client;

/** Where a client's query came from, for dnstap (frontend_ops.origin).
 * Pointers stay valid as long as the client handle; NULL: unknown. */
struct frontend_origin {
	const char *protocol;	       /**< "udp", "tcp", "dot", "doh" */
	const struct sockaddr *client; /**< the client's address and port */
	const struct sockaddr *local;  /**< the address and port it reached (ours) */
};

/** What a kind of frontend does for the core.  One static table per kind. */
struct frontend_ops {
	/** "udp", "tcp": for logs. */
	const char *name;
	/** Send the reply to @c's query (@msg is only read during the call). */
	void (*reply)(const struct frontend_client *c, const uint8_t *msg, size_t len);
	/** The query of @c is over (answered, failed or dropped): release its
	 * slot, finish a half-close. */
	void (*done)(const struct frontend_client *c);
	/** The largest reply @c may get for the query @query (parsed): the
	 * EDNS UDP payload size for datagrams, 65,535 for streams.  Longer
	 * replies are truncated (TC=1) by the core. */
	size_t (*max_reply)(const struct frontend_client *c, const struct wire_info *query);
	/** The peer's address as text ("192.0.2.1#5353"), for logs. */
	void (*peer)(const struct frontend_client *c, char *buf, size_t cap);
	/** Did the peer pass --allow? */
	bool (*allowed)(const struct frontend_client *c);
	/** Streams: the idle timeout to announce in edns-tcp-keepalive (RFC
	 * 7828), in units of 100 ms.  NULL for datagrams, which announce none. */
	uint16_t (*keepalive)(const struct frontend_client *c);
	/** Does @c's transport encrypt (DoT, DoH)?  Then answers to queries
	 * that carry EDNS padding are padded too (RFC 8467).  NULL: no. */
	bool (*encrypted)(const struct frontend_client *c);
	/** What carried @c's query and between which addresses, for dnstap.
	 * NULL: nothing known (the events go without them). */
	void (*origin)(const struct frontend_client *c, struct frontend_origin *o);
};

/** A client as the core sees it: copied into each query, so it must stay
 * small and hold no pointer into the frontend's buffers. */
struct frontend_client {
	const struct frontend_ops *ops;
	void *conn; /**< the frontend's own (the listener, the session); not owned */
	union {
		struct sockaddr sa;
		struct sockaddr_in in;
		struct sockaddr_in6 in6;
	} peer; /**< datagram frontends: the sender; unused by streams */
};

/** "192.0.2.1#53" or "[2001:db8::1]#53" for @sa, for logs. */
void frontend_addr_text(const struct sockaddr *sa, char *buf, size_t cap);

/** SO_REUSEPORT on @handle's socket (created, not yet bound), so that every
 * worker binds the same address and the kernel spreads clients among them.
 * Returns 0 or a negative errno. */
int frontend_share_port(uv_handle_t *handle);
