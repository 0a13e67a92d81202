/*
 * DNS over HTTPS from clients (RFC 8484 over HTTP/2, --listen-https):
 * accepting sockets, the TLS handshake under a deadline with ALPN "h2",
 * then one lib/doh_server session per connection, whose DNS queries go to
 * the query core one stream each.  The client handle of a query points at
 * a small record of its stream, so that answers go back by connection and
 * stream, never by DNS ID; a stream the client resets cancels its query.
 */
#pragma once

#include "lib/options.h"

#include <stdbool.h>
#include <stddef.h>

struct https_conn;
struct https_listener;
struct query_pool;
struct tls_ctx;

/** Every DoH connection of one worker, from accept to close. */
struct https_clients {
	struct https_conn *head;
};

/** Bind @addr and start accepting; connections go to @clients and queries
 * to @pool.  Each new client gets a session of *@ctx (an "h2" server
 * context), read at accept time, so that a reload's certificate serves new
 * connections while open ones keep theirs.  @share: SO_REUSEPORT.  NULL on
 * failure, with the libuv error in @rc and the reason in words in @err. */
struct https_listener *listen_https_start(struct query_pool *pool, struct https_clients *clients,
					  struct tls_ctx *const *ctx,
					  const struct options_addr *addr, bool share, int *rc,
					  char *err, size_t errlen);

/** Stop accepting; memory is freed in the close callback. */
void listen_https_close(struct https_listener *l);

/** Shutting down: tell every client to open no new stream (GOAWAY); the
 * streams open are still answered, then each connection closes. */
void listen_https_drain(struct https_clients *all);

/** Close every client now; queries in flight are cancelled. */
void listen_https_close_all(struct https_clients *all);
