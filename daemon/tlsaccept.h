/*
 * What the DoT and DoH listeners do alike with a client they accepted
 * (listen_tcp_accept()): its address and its place among the TLS clients
 * of that address, then the server TLS session and the handshake under its
 * deadline.  Each listener keeps its own client struct, its texts and
 * metrics, and what it starts once the handshake is done.
 */
#pragma once

#include "lib/options.h"

#include <stdbool.h>
#include <sys/socket.h>
#include <uv.h>

struct tls_ctx;
struct tlsio;

/** The peer's address of the accepted @tcp into @peer (AF_UNSPEC when it
 * cannot be read), and a place among the clients of that address
 * (clients_admit(), --max-clients-per-address).  False, counted in
 * tls_address_refused, when the address has none left: the caller closes
 * the client and gives back its place in the client budget. */
bool tlsaccept_admit(uv_tcp_t *tcp, struct sockaddr_storage *peer, const struct config *cfg);

/** Start the handshake on @io, whose socket is accepted: a server session
 * of @ctx (NULL after a reload that took the certificate away, the
 * listener staying until a restart), the deadline on @timer (initialised)
 * with @cb, 5 seconds or --tcp-idle-timeout if that is less, then
 * tlsio_start().  NULL, or why it could not start: the caller drops the
 * client (unless a tlsio callback has already closed it). */
const char *tlsaccept_start(struct tlsio *io, struct tls_ctx *ctx, uv_timer_t *timer,
			    uv_timer_cb cb, const struct config *cfg);
