#include "daemon/busypoll.h"

#include "daemon/query.h"
#include "daemon/server.h"
#include "daemon/upstream.h"

#include <poll.h>
#include <sched.h>

/* An upstream is "near" when its answers take less than this: loopback or
 * LAN.  Internet resolvers (several milliseconds) are never polled for. */
enum { NEAR_RTT_US = 1000 };

void busypoll_expect(struct server *srv, const struct upstream *up)
{
	unsigned budget_us = srv->cfg->busy_poll_us;

	if (budget_us == 0 || up->samples == 0 || up->srtt_us >= NEAR_RTT_US)
		return;
	srv->poll_until_ns = uv_hrtime() + (uint64_t)budget_us * 1000;
}

/* Poll without blocking until the loop has something to do, nothing is in
 * flight any more, or the time for which an answer was expected is over. */
static void poll_for_answer(struct server *srv)
{
	struct pollfd backend = { .fd = uv_backend_fd(srv->loop), .events = POLLIN };

	/* epoll's descriptor is readable when one of its descriptors is ready;
	 * polling it does not consume the events, uv_run() still sees them. */
	while (uv_hrtime() < srv->poll_until_ns && srv->queries &&
	       query_pool_inflight(srv->queries) > 0) {
		if (poll(&backend, 1, 0) > 0)
			return;
		sched_yield();
	}
}

void busypoll_run(struct server *srv)
{
	do
		poll_for_answer(srv);
	while (uv_run(srv->loop, UV_RUN_ONCE));
}
