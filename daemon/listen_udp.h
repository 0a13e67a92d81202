/*
 * Plain DNS over UDP from clients: receive datagrams in batches, hand them to
 * query_receive(), send replies in batches without blocking (a reply the
 * kernel will not take is dropped and counted; the client retries).
 */
#pragma once

#include "lib/options.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

struct server;
struct udp_listener;

/** Bind @addr and start receiving.  NULL on failure, with the libuv error
 * in @rc and the reason in words in @err. */
struct udp_listener *listen_udp_start(struct server *srv, const struct options_addr *addr, int *rc,
				      char *err, size_t errlen);

/** Send every queued reply of every listener (end of a loop round). */
void listen_udp_flush_all(struct server *srv);

/** Stop receiving; replies can still be sent until listen_udp_close(). */
void listen_udp_stop(struct udp_listener *l);

/** Stop receiving and close; memory is freed in the close callback. */
void listen_udp_close(struct udp_listener *l);

/** Queue @msg (copied) for @peer; it leaves at the end of this loop round.
 * Returns 0, or a libuv error for a large reply sent at once. */
int listen_udp_send(struct udp_listener *l, const struct sockaddr_storage *peer, const uint8_t *msg,
		    size_t len);

/** SO_REUSEPORT on @handle's socket (created, not yet bound), so that every
 * worker binds the same address and the kernel spreads clients among them.
 * Used by listen_tcp too.  Returns 0 or a negative errno. */
int listen_share_port(uv_handle_t *handle);
