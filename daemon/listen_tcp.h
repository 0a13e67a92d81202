/*
 * Plain DNS over TCP from clients (RFC 7766): many pipelined queries per
 * connection, answered in completion order; partial frames reassembled;
 * idle clients closed; at most max_tcp_clients at once and at most
 * max_tcp_pipeline queries in flight per client (reading pauses beyond).
 */
#pragma once

#include "lib/options.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct server;
struct tcp_listener;
struct tcp_client;
struct query;

/** Bind @addr and start accepting.  NULL on failure, with the libuv error
 * in @rc and the reason in words in @err. */
struct tcp_listener *listen_tcp_start(struct server *srv, const struct options_addr *addr, int *rc,
				      char *err, size_t errlen);

/** Stop accepting; memory is freed in the close callback. */
void listen_tcp_close(struct tcp_listener *l);

/** Close every client connection (shutdown). */
void listen_tcp_close_clients(struct server *srv);

/** A query from @c started: link it so @c can detach it if it goes away. */
void tcp_client_track(struct tcp_client *c, struct query *q);

/** Send the reply to @q (framed) and unlink @q from @c. */
void tcp_client_reply(struct tcp_client *c, struct query *q, const uint8_t *msg, size_t len);

/** Is @c's peer in --allow? */
bool tcp_client_allowed(const struct tcp_client *c);

/** A short human-readable peer address ("127.0.0.1#41000"), for logs. */
const char *tcp_client_peer(const struct tcp_client *c);
