/*
 * DNS over TLS from clients (RFC 7858, --listen-tls): accepting sockets,
 * the TLS handshake under a deadline, and then each connection as the
 * carrier of a stream session (stream.h) over tlsio, exactly as a plain
 * TCP client: pipelining, the pipeline cap, the idle timeout, the client
 * budget.
 */
#pragma once

#include "lib/options.h"

#include <stdbool.h>
#include <stddef.h>

struct query_pool;
struct stream_sessions;
struct tls_ctx;
struct tls_listener;

/** Bind @addr and start accepting; sessions go to @sessions and queries to
 * @pool.  Each new client gets a session of *@ctx, read at accept time, so
 * that a reload's certificate serves new connections while open ones keep
 * theirs.  @share: SO_REUSEPORT.  NULL on failure, with the libuv error in
 * @rc and the reason in words in @err. */
struct tls_listener *listen_tls_start(struct query_pool *pool, struct stream_sessions *sessions,
				      struct tls_ctx *const *ctx, const struct options_addr *addr,
				      bool share, int *rc, char *err, size_t errlen);

/** Stop accepting; memory is freed in the close callback. */
void listen_tls_close(struct tls_listener *l);
