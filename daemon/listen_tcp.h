/*
 * Plain DNS over TCP from clients: accepting sockets, and each accepted
 * connection as the carrier of a stream session (stream.h), which does
 * the DNS part.  Clients beyond --max-tcp-clients, or beyond what the
 * descriptor limit leaves room for, are closed at once.
 */
#pragma once

#include "lib/options.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct loop;
struct query_pool;
struct stream_sessions;
struct tcp_listener;

/** Bind @addr and start accepting; sessions go to @sessions and queries to
 * @pool.  @share: SO_REUSEPORT (several workers on one address).  NULL on
 * failure, with the libuv error in @rc and the reason in words in @err. */
struct tcp_listener *listen_tcp_start(struct query_pool *pool, struct stream_sessions *sessions,
				      const struct options_addr *addr, bool share, int *rc,
				      char *err, size_t errlen);

/** Accept a client of a stream listener (TCP or TLS) feeding @pool into
 * @tcp, initialised and the first member of the calloc()ed client, and
 * see whether it may be served.  True with its place in the client budget
 * taken (the session gives it back); false when the accept fails, or,
 * counted in tcp_refused, when the budget (--max-tcp-clients) or the
 * descriptor limit leaves no room, or the worker is draining: then @tcp
 * closes and the client is freed.  @warned_ms: the listener's, so that
 * running out of descriptors is logged once a second at most. */
bool listen_tcp_accept(uv_stream_t *server, uv_tcp_t *tcp, struct query_pool *pool,
		       uint64_t *warned_ms);

/** Bind and listen on @addr with @tcp, the first member of a calloc()ed
 * listener whose handle data is itself, accepting with @cb; @what ("tcp",
 * "tls") names it in errors.  Returns 0, or the libuv error with the
 * reason in @err, the listener then being freed. */
int listen_stream_socket(struct loop *loop, uv_tcp_t *tcp, const struct options_addr *addr,
			 bool share, uv_connection_cb cb, const char *what, char *err,
			 size_t errlen);
/** Accept on @fd, a listening stream socket handed over by systemd (one
 * worker's dup(); the listener owns it from now on, and closes it on
 * failure too); @where is its address, for logs.  NULL on failure, as
 * above. */
struct tcp_listener *listen_tcp_open(struct query_pool *pool, struct stream_sessions *sessions,
				     int fd, const char *where, int *rc, char *err, size_t errlen);

/** Stop accepting; memory is freed in the close callback. */
void listen_tcp_close(struct tcp_listener *l);
