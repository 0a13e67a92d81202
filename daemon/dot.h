/*
 * DNS over TLS to an upstream (RFC 7858), one transport behind
 * transport.h: many pipelined queries per connection (RFC 7766), each
 * with a random DNS ID unique on that connection (the transport key).
 * SETUP (TCP connect and TLS handshake, through tlsconnect) -> READY ->
 * CLOSED.  Queries may be sent in any state before CLOSED; they are
 * written only once the handshake has completed and the certificate
 * verified, so a server that fails authentication never sees a query.
 * Writes are batched: queries sent in one round of the loop go out in one
 * TLS record.
 */
#pragma once

#include "daemon/transport.h"

/** The DoT transport's table. */
extern const struct transport_ops dot_transport;
