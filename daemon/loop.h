/*
 * The event loop and the services every layer above shares: end-of-round
 * flush hooks (writes queued during a round of I/O leave together when it
 * ends), busy polling for a near upstream's answer, and scratch buffers.
 * One per worker; nothing here knows what a query, a client or an upstream
 * is.
 *
 * Busy polling (--busy-poll): a DoT upstream on the same host or LAN
 * answers in tens of microseconds, and putting the thread to sleep and
 * waking it again costs about as much -- more in a virtual machine, where
 * waking an idle CPU goes through the hypervisor.  So after a write to an
 * upstream whose smoothed RTT is under a millisecond, the loop polls (and
 * yields) instead of sleeping, for at most --busy-poll microseconds, and
 * stops as soon as anything is ready or nothing is in flight.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

/** Something with output to write once the current round of I/O is over.
 * Embedded in its owner; zero-initialised is idle. */
struct loop_flush {
	void (*cb)(struct loop_flush *f); /**< writes the owner's queued output */
	struct loop_flush *next;	  /**< in the loop's list while queued */
	bool queued;
};

/** Scratch buffers, valid only within one callback: nobody keeps a pointer
 * into them past the call that filled them. */
struct loop_scratch {
	uint8_t read[65536];   /**< one stream read (libuv hands it back at once) */
	uint8_t plain[16384];  /**< decrypted TLS data on its way to framing */
	uint8_t reply[65536];  /**< a reply being adapted for one client */
	uint8_t query[65536];  /**< a query being built for upstreams */
	uint8_t cipher[65536]; /**< ciphertext on its way to a socket */
};

struct loop {
	uv_loop_t uv;		      /**< the libuv loop */
	struct loop_scratch *scratch; /**< owned */
	uv_check_t flush_check;	      /**< runs the flush list after each round of I/O */
	uv_idle_t flush_idle;	      /**< keeps the loop from blocking while flushes wait */
	struct loop_flush *flush_list;
	unsigned busy_poll_us;	/**< --busy-poll; 0: never */
	uint64_t poll_until_ns; /**< busy-poll until then */
	/** Is anything still waiting for an answer?  Busy polling stops when not. */
	bool (*busy)(void *arg);
	void *busy_arg;
};

/** Initialise @l (embedded in its owner).  Returns 0 or a libuv error. */
int loop_init(struct loop *l, unsigned busy_poll_us);

/** Close the loop's own handles; call before the last loop_run() returns. */
void loop_close_handles(struct loop *l);

/** Free what loop_init() allocated, once uv_run() returned. */
void loop_deinit(struct loop *l);

/** Run @f->cb at the end of this round of I/O (once, however often queued). */
void loop_flush_queue(struct loop *l, struct loop_flush *f);

/** Forget @f if queued (its owner is closing). */
void loop_flush_cancel(struct loop *l, struct loop_flush *f);

/** Queries were just written to a server whose smoothed RTT is @srtt_us
 * (0: unknown): its answer may be worth busy-polling for. */
void loop_expect_answer(struct loop *l, double srtt_us);

/** Run until no active handle is left (uv_run(UV_RUN_DEFAULT) with busy
 * polling). */
void loop_run(struct loop *l);
