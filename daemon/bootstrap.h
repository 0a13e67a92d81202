/*
 * Resolving the upstreams given by name (https://NAME/..., tls://NAME)
 * through --bootstrap: plain DNS over UDP to those servers, for those
 * names alone (A and AAAA), never the system resolver.  One per worker, on
 * its loop.  Each name is resolved at once (start-up does not wait for it),
 * again when its TTL runs out (clamped to BOOTSTRAP_MIN_TTL ..
 * BOOTSTRAP_MAX_TTL seconds), and after a failure with a backoff; an
 * address, once known, is kept until another answer replaces it.  What it
 * learns goes to the callback it was given: the worker passes it on to its
 * upstream sets (upstream_set_address).
 */
#pragma once

#include "daemon/loop.h"
#include "lib/options.h"

#include <sys/socket.h>

enum {
	BOOTSTRAP_MIN_TTL = 1,		/**< s: a TTL of 0 still holds for a second */
	BOOTSTRAP_MAX_TTL = 86400,	/**< s: asked again at least once a day */
	BOOTSTRAP_TIMEOUT_MS = 2000,	/**< per exchange; then the next server */
	BOOTSTRAP_RETRY_MIN_MS = 1000,	/**< after a failure, doubling ... */
	BOOTSTRAP_RETRY_MAX_MS = 60000, /**< ... up to this */
};

struct bootstrap;

/** @hostname (as in options_upstream.hostname) has the address @sa (its
 * port 0); called on every answer, whether the address changed or not. */
typedef void (*bootstrap_cb)(void *arg, const char *hostname, const struct sockaddr *sa);

/**
 * Resolve every upstream name of @cfg (default upstreams and forward zones)
 * through @cfg->bootstrap, on @loop; @cfg must outlive the object.  NULL
 * when @cfg names no upstream by name.  @old (may be NULL), the bootstrap
 * of the configuration before a reload, lends the addresses it knows for
 * the same names: they are reported by bootstrap_replay() and kept until
 * their TTL runs out.  The first queries go out at once.
 */
struct bootstrap *bootstrap_new(struct loop *loop, const struct config *cfg, bootstrap_cb cb,
				void *arg, const struct bootstrap *old);

/** Call the callback at once for every name whose address is known. */
void bootstrap_replay(struct bootstrap *b);

/** Stop and free (asynchronously: its handles close first); the callback
 * is not called again.  NULL is fine. */
void bootstrap_free(struct bootstrap *b);
