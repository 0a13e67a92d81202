/*
 * Plain DNS over UDP from clients: receive datagrams in batches, hand them
 * to the query core as a frontend, send replies in batches without blocking
 * (a reply the kernel will not take is dropped and counted; the client
 * retries).  The socket's receive buffer (--udp-recv-buffer) absorbs
 * bursts while the loop is busy.
 */
#pragma once

#include "lib/options.h"

#include <stdbool.h>
#include <stddef.h>

struct query_pool;
struct udp_listener;

/** Bind @addr and start receiving; queries go to @pool.  @share:
 * SO_REUSEPORT (several workers on one address).  NULL on failure, with
 * the libuv error in @rc and the reason in words in @err. */
struct udp_listener *listen_udp_start(struct query_pool *pool, const struct options_addr *addr,
				      bool share, int *rc, char *err, size_t errlen);

/** Receive on @fd, a bound datagram socket handed over by systemd (one
 * worker's dup(); the listener owns it from now on, and closes it on
 * failure too); @where is its address, for logs.  Its receive buffer is
 * raised to --udp-recv-buffer, never lowered.  NULL on failure, as above. */
struct udp_listener *listen_udp_open(struct query_pool *pool, int fd, const char *where, int *rc,
				     char *err, size_t errlen);

/** Stop receiving; replies can still be sent until listen_udp_close(). */
void listen_udp_stop(struct udp_listener *l);

/** Stop receiving, send what is queued, and close; memory is freed in the
 * close callback. */
void listen_udp_close(struct udp_listener *l);
