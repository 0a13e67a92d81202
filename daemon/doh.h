/*
 * DNS over HTTPS to an upstream (RFC 8484) over HTTP/2, one transport
 * behind transport.h: TCP, TLS with ALPN "h2" (tlsconnect, tlsio), and
 * lib/doh.  Each query is one stream, so answers come in any order and a
 * slow one holds up no other.  SETUP (TCP connect and TLS handshake) ->
 * READY -> (DRAINING) -> CLOSED:
 * queries wait until the certificate is verified and the server selected
 * h2, so a server that fails authentication never sees one.  No more
 * streams are open at once than the server's SETTINGS_MAX_CONCURRENT_STREAMS
 * allows (capacity() says how many are left; jobs beyond wait for a stream
 * to end); after a GOAWAY, or when the stream IDs run out, the connection
 * takes no new job (DRAINING) and closes when its last stream ends.  A
 * connection with a stream outstanding and nothing received for a second
 * gets a PING, and is closed (TRANSPORT_CLOSED_SILENT) if nothing answers
 * it within a second.
 */
#pragma once

#include "daemon/transport.h"

/** The DoH transport's table. */
extern const struct transport_ops doh_transport;
