/*
 * The event loop's runner: it sleeps in epoll like any libuv loop, except
 * right after queries went to a near upstream, when it polls for the answer
 * instead (--busy-poll).
 *
 * Why: a DoT upstream on the same host or LAN answers in tens of
 * microseconds, and putting our thread to sleep and waking it again costs
 * about as much -- much more in a virtual machine, where waking an idle
 * CPU goes through the hypervisor.  Measured on a 2-CPU VM, polling for
 * the answer halves the median time a query spends in dotproxy.
 *
 * Bounds: polling starts only after a write to an upstream whose smoothed
 * RTT is under a millisecond, lasts at most --busy-poll microseconds after
 * that write, and stops as soon as anything is ready or nothing is in
 * flight.  A far upstream, an idle proxy or --busy-poll 0 never poll.
 * Between polls the thread yields, so a process sharing its CPU (often the
 * upstream itself) runs first.
 */
#pragma once

struct server;
struct upstream;

/** Queries were just written to @up: its answer may be worth polling for. */
void busypoll_expect(struct server *srv, const struct upstream *up);

/** Run srv->loop until no handle is left (like uv_run(UV_RUN_DEFAULT)). */
void busypoll_run(struct server *srv);
