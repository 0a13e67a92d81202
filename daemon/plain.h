/*
 * Plain DNS to an upstream (RFC 1035), one transport behind transport.h,
 * allowed only for a --forward-zone (udp://IP[:PORT]).  Each query is an
 * exchange of its own: a connected UDP socket, so that it leaves from a
 * random source port the kernel picks (RFC 5452 §9.2) and the kernel drops
 * datagrams from any other address, and a random DNS ID, unique on its
 * "connection" (the transport key).  An answer with TC=1 is followed by the
 * same query over TCP to the same address, one query per connection.
 *
 * A connection (struct transport_conn) is the set of exchanges with one
 * upstream: it costs no socket of its own, only one per exchange in flight
 * (at most PLAIN_MAX_INFLIGHT, bounded by --max-inflight too).  It is ready
 * once the server has answered one of its exchanges: until then it has not
 * worked, and a refusal (ICMP port unreachable) or no answer within half the
 * query timeout closes it with TRANSPORT_CLOSED_FAILED, so that the upstream
 * is marked down.  A connection opened with nothing to send (a probe) is
 * reported ready at once and closed: plain DNS has nothing to probe without a
 * query, so the next query is the probe.  Idle connections close after
 * --idle-timeout.
 */
#pragma once

#include "daemon/transport.h"

enum {
	PLAIN_MAX_INFLIGHT = 256, /**< exchanges (sockets) per connection */
};

/** The plain-DNS transport's table. */
extern const struct transport_ops plain_transport;
