/*
 * A worker: one event loop and everything it owns -- the query pool, the
 * upstream set, the listeners and their client sessions, the cache -- and
 * its life: start, reload, network change, drain, finish.  With --workers N
 * there are N of them, one per thread, sharing nothing but the process's
 * settings (read-only) and counters.  Process-wide matters (signals,
 * privileges, threads) are main.c's, which drives the workers through the
 * calls below and never the other way round.
 */
#pragma once

#include "lib/options.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sdlisten;
struct settings;
struct worker;
struct loop;

/** What main.c can ask of a worker (bits; worker_post() merges them). */
enum worker_command {
	WORKER_RELOAD = 1,  /**< take the settings posted with it */
	WORKER_DRAIN = 2,   /**< stop listening, finish what is in flight, then stop */
	WORKER_STOP = 4,    /**< stop now */
	WORKER_NETWORK = 8, /**< the network changed: reconnect to every upstream */
	WORKER_FLUSH = 16,  /**< remove the names worker_flush() queued from the cache */
};

/** Worker @index working with @s (it takes a reference), its loop and its
 * share of the limits; not listening yet.  NULL with @err set on failure. */
struct worker *worker_new(unsigned index, struct settings *s, char *err, size_t errlen);

/** Listen on the sockets systemd handed over, if @handed has any (each
 * through a dup() of the worker's own, so all workers share each socket;
 * the --listen addresses are not used), else bind every --listen address.
 * Returns 0, or -1 with the reason in @err (a default address whose family
 * the host lacks is skipped, logged). */
int worker_listen(struct worker *w, const struct sdlisten *handed, char *err, size_t errlen);

/** Listen addresses actually bound (a default one the host lacks is not);
 * with handed sockets, the UDP ones. */
unsigned worker_listening(const struct worker *w);

/** The worker's loop (main.c adds its signal handles to worker 0's). */
struct loop *worker_loop(struct worker *w);

/** Call @cb(@arg) on the worker's thread when it finishes (its last
 * handles are closing): for the handles main.c added to its loop. */
void worker_on_finish(struct worker *w, void (*cb)(void *arg), void *arg);

/** Do @commands now; call on the worker's own thread.  With WORKER_RELOAD,
 * @s is the new settings (the worker takes a reference). */
void worker_command(struct worker *w, unsigned commands, struct settings *s);

/** Do @commands on the worker's thread, soon; from any thread.  With
 * WORKER_RELOAD, @s is the new settings (a reference is taken now). */
void worker_post(struct worker *w, unsigned commands, struct settings *s);

/** Remove @name (wire form, lower case; @len 0: everything) and every name
 * below it from @w's cache, on its own thread, soon; from any thread (worker
 * 0's included: it goes through the inbox too).  Returns a ticket: the flush
 * is done once worker_flushed() reaches it (never, for a worker that has
 * finished: UINT64_MAX). */
uint64_t worker_flush(struct worker *w, const uint8_t *name, size_t len);

/** The tickets of worker_flush() done so far, and in @removed the cache
 * entries all of them removed; from any thread. */
uint64_t worker_flushed(const struct worker *w, uint64_t *removed);

/** Run the loop until the worker has finished (on its own thread). */
void worker_run(struct worker *w);

/** Start a thread running worker_run().  Returns 0 or a libuv error. */
int worker_spawn(struct worker *w);

/** Wait for the thread of worker_spawn() to end. */
void worker_join(struct worker *w);

/** Free a worker whose loop has returned. */
void worker_free(struct worker *w);

/** A worker's share of a limit for the whole process (at least 1). */
static inline unsigned worker_share(unsigned total, unsigned workers)
{
	return (total + workers - 1) / workers;
}
