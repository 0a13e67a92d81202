/*
 * Resolving the upstreams given by name (https://NAME/..., tls://NAME)
 * through --bootstrap: plain DNS over UDP to those servers, for those
 * names alone (A and AAAA), never the system resolver.  Without
 * --bootstrap, the questions go inward instead, through a send function
 * the worker gives (the query core, hence the upstreams that can be used:
 * those given by address, until the names resolve), and the answers come
 * back through bootstrap_answer().  One per worker, on
 * its loop.  Each name is resolved at once (start-up does not wait for it),
 * again when its TTL runs out (clamped to BOOTSTRAP_MIN_TTL ..
 * BOOTSTRAP_MAX_TTL seconds), and after a failure with a backoff; the
 * addresses, once known, are kept until another answer replaces them.  A
 * name's addresses are every A of the answer, then every AAAA (up to
 * BOOTSTRAP_MAX_PER_FAMILY each), in the order the server gave them: what
 * it learns goes to the callback it was given, and the worker passes the
 * list on to its upstream sets (upstream_set_address), which use the first
 * and move to the next when one cannot be reached.
 */
#pragma once

#include "daemon/loop.h"
#include "lib/options.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

enum {
	BOOTSTRAP_MIN_TTL = 1,		/**< s: a TTL of 0 still holds for a second */
	BOOTSTRAP_MAX_TTL = 86400,	/**< s: asked again at least once a day */
	BOOTSTRAP_TIMEOUT_MS = 2000,	/**< per exchange; then the next server */
	BOOTSTRAP_RETRY_MIN_MS = 1000,	/**< after a failure, doubling ... */
	BOOTSTRAP_RETRY_MAX_MS = 60000, /**< ... up to this */
	BOOTSTRAP_AAAA_WAIT_MS = 50,	/**< once the A answer came with addresses, how
					 *   long the AAAA may still take (RFC 8305 §3) */
	BOOTSTRAP_MAX_PER_FAMILY = 4,	/**< A (or AAAA) addresses kept for one name */
	BOOTSTRAP_MAX_ADDRS = 2 * BOOTSTRAP_MAX_PER_FAMILY, /**< addresses of one name */
};

struct bootstrap;

/** @hostname (as in options_upstream.hostname) has the @n addresses
 * @addrs (AF_INET first, then AF_INET6, each in the server's order; port
 * 0; 1 <= @n <= BOOTSTRAP_MAX_ADDRS; valid during the call); called on
 * every answer, whether the addresses changed or not. */
typedef void (*bootstrap_cb)(void *arg, const char *hostname, const struct sockaddr_storage *addrs,
			     unsigned n);

/** Without --bootstrap: send the query @msg inward; its answer is to reach
 * bootstrap_answer() (at once or later; never is fine: the round times
 * out).  @arg is bootstrap_new()'s.  0 or a negative errno. */
typedef int (*bootstrap_send_fn)(void *arg, const uint8_t *msg, size_t len);

/**
 * Resolve every upstream name of @cfg (default upstreams and forward zones)
 * through @cfg->bootstrap, or, without it, through @send, on @loop; @cfg
 * must outlive the object.  NULL when @cfg names no upstream by name (or
 * has no --bootstrap and @send is NULL).  @old (may be NULL), the bootstrap
 * of the configuration before a reload, lends the addresses it knows for
 * the same names: they are reported by bootstrap_start() and kept until
 * their TTL runs out.  Nothing is sent before bootstrap_start().
 */
struct bootstrap *bootstrap_new(struct loop *loop, const struct config *cfg, bootstrap_cb cb,
				bootstrap_send_fn send, void *arg, const struct bootstrap *old);

/** An answer to a query that @send sent: taken if it is the answer to a
 * question still asked (ID and question), ignored otherwise.  @b may be
 * NULL. */
void bootstrap_answer(struct bootstrap *b, const uint8_t *msg, size_t len);

/** Call the callback at once for every name whose addresses are known, and
 * ask for the others (the callback may run before this returns: an inward
 * answer may come from the cache).  @b may be NULL. */
void bootstrap_start(struct bootstrap *b);

/** Stop and free (asynchronously: its handles close first); the callback
 * is not called again.  NULL is fine. */
void bootstrap_free(struct bootstrap *b);
