/*
 * dnstap output (--dnstap PATH): CLIENT_QUERY and CLIENT_RESPONSE for every
 * client query, however it is answered, and FORWARDER_QUERY and
 * FORWARDER_RESPONSE for every exchange with an upstream, streamed as
 * Frame Streams to a unix socket (bidirectional handshake, content type
 * "protobuf:dnstap.Dnstap").
 *
 * A worker encodes each event (lib/dnstap) into a ring buffer of its own
 * and hands it to libfstrm's I/O thread through an input queue of its own:
 * no lock, no system call, no allocation on the worker.  Nothing ever
 * waits for the receiver: while it is absent, slow or stopped, events are
 * dropped and counted (dnstap_dropped when they could not be queued,
 * dnstap_lost when queued ones could not be written); the I/O thread
 * reconnects every DNSTAP_REOPEN_S seconds until the receiver is back.
 *
 * Off (no --dnstap), every event costs one predictable branch on
 * dnstap_on: the functions below are inline checks of it.
 */
#pragma once

#include "daemon/frontend.h"
#include "lib/options.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/** Seconds between attempts to reach an absent receiver. */
enum { DNSTAP_REOPEN_S = 2 };

/** True between a successful dnstap_start() and dnstap_stop(); never
 * changes while workers run. */
extern bool dnstap_on;

/** With --dnstap in @cfg: queues for @workers workers and the I/O thread,
 * which starts connecting at once (a receiver that is not there yet is
 * not an error: it is waited for).  0 (nothing to do without --dnstap),
 * or a negative errno with the reason in @err.  Before the workers run. */
int dnstap_start(const struct config *cfg, unsigned workers, char *err, size_t errlen);

/** This thread is worker @index from now on: its events go to that
 * worker's queue.  After metrics_use_worker(), on the worker's thread. */
void dnstap_use_worker(unsigned index);

/** Write what is queued (for a second at most: a stopped receiver cannot
 * hold the exit), close the stream and free everything.  After every
 * worker has finished. */
void dnstap_stop(void);

void dnstap_send_client_query(const struct frontend_client *c, const uint8_t *msg, size_t len);
void dnstap_send_client_response(const struct frontend_client *c, const uint8_t *msg, size_t len,
				 uint64_t query_ns);
void dnstap_send_forwarder_query(const char *transport, const struct sockaddr *server,
				 const uint8_t *msg, size_t len, uint32_t key);
void dnstap_send_forwarder_response(const char *transport, const struct sockaddr *server,
				    const uint8_t *msg, size_t len, uint64_t sent_ns);

/** CLIENT_QUERY: @c sent @msg, received just now.  The protocol and
 * addresses come from @c's origin op. */
static inline void dnstap_client_query(const struct frontend_client *c, const uint8_t *msg,
				       size_t len)
{
	if (dnstap_on)
		dnstap_send_client_query(c, msg, len);
}

/** CLIENT_RESPONSE: @msg goes to @c now.  @query_ns: uv_hrtime() when its
 * query arrived, or 0 for the query of this thread's last
 * dnstap_client_query() (a reply made before that call returned). */
static inline void dnstap_client_response(const struct frontend_client *c, const uint8_t *msg,
					  size_t len, uint64_t query_ns)
{
	if (dnstap_on)
		dnstap_send_client_response(c, msg, len, query_ns);
}

/** FORWARDER_QUERY: @msg goes to the upstream at @server over @transport
 * (its transport_ops name) with @key, which is the DNS ID it carries
 * there except over DoH (ID 0, RFC 8484).  Recorded as the transport
 * sends it (see wire_form() in dnstap.c). */
static inline void dnstap_forwarder_query(const char *transport, const struct sockaddr *server,
					  const uint8_t *msg, size_t len, uint32_t key)
{
	if (dnstap_on)
		dnstap_send_forwarder_query(transport, server, msg, len, key);
}

/** FORWARDER_RESPONSE: @msg came from @server as the answer to the query
 * sent at @sent_ns (uv_hrtime()). */
static inline void dnstap_forwarder_response(const char *transport, const struct sockaddr *server,
					     const uint8_t *msg, size_t len, uint64_t sent_ns)
{
	if (dnstap_on)
		dnstap_send_forwarder_response(transport, server, msg, len, sent_ns);
}
