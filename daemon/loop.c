/*
 * The loop's services: flush hooks run by a uv_check after each round of
 * I/O (a uv_idle keeps the loop from blocking while some wait), and the
 * runner that busy-polls the epoll descriptor for a near upstream's answer.
 */
#include "daemon/loop.h"

#include "lib/log.h"

#include <poll.h>
#include <sched.h>
#include <stdlib.h>

/* A server is "near" when its answers take less than this: loopback or LAN.
 * Internet resolvers (several milliseconds) are never polled for. */
enum { NEAR_RTT_US = 1000 };

static void flush_idle_cb(uv_idle_t *idle)
{
	(void)idle; /* its presence is the point: see loop_flush_queue() */
}

/* After each round of I/O: write what this round queued, in batches.  A
 * flush may queue another (a write that completes a handshake): loop until
 * the list stays empty. */
static void flush_check_cb(uv_check_t *check)
{
	struct loop *l = check->data;

	while (l->flush_list) {
		struct loop_flush *f = l->flush_list;
		l->flush_list = f->next;
		f->queued = false;
		f->cb(f);
	}
	uv_idle_stop(&l->flush_idle);
}

int loop_init(struct loop *l, unsigned busy_poll_us)
{
	int rc = uv_loop_init(&l->uv);

	if (rc < 0)
		return rc;
	l->scratch = malloc(sizeof(*l->scratch));
	require(l->scratch);
	l->busy_poll_us = busy_poll_us;
	l->flush_list = NULL;
	l->poll_until_ns = 0;
	uv_check_init(&l->uv, &l->flush_check);
	uv_idle_init(&l->uv, &l->flush_idle);
	l->flush_check.data = l;
	uv_check_start(&l->flush_check, flush_check_cb);
	/* Neither handle alone should keep the loop alive once all else closed. */
	uv_unref((uv_handle_t *)&l->flush_check);
	uv_unref((uv_handle_t *)&l->flush_idle);
	return 0;
}

void loop_close_handles(struct loop *l)
{
	/* What is still queued goes out first: replies of the last queries. */
	flush_check_cb(&l->flush_check);
	uv_close((uv_handle_t *)&l->flush_check, NULL);
	uv_close((uv_handle_t *)&l->flush_idle, NULL);
}

void loop_deinit(struct loop *l)
{
	if (uv_loop_close(&l->uv) < 0)
		log_debug("event loop closed with handles still open");
	free(l->scratch);
	l->scratch = NULL;
}

void loop_flush_queue(struct loop *l, struct loop_flush *f)
{
	if (f->queued)
		return;
	f->queued = true;
	f->next = l->flush_list;
	l->flush_list = f;
	/* An active idle handle makes the loop poll without blocking, so what a
	 * timer callback queued is flushed in this iteration too. */
	uv_idle_start(&l->flush_idle, flush_idle_cb);
}

void loop_flush_cancel(struct loop *l, struct loop_flush *f)
{
	struct loop_flush **p = &l->flush_list;

	if (!f->queued)
		return;
	while (*p && *p != f)
		p = &(*p)->next;
	if (*p)
		*p = f->next;
	f->queued = false;
}

void loop_expect_answer(struct loop *l, double srtt_us)
{
	if (l->busy_poll_us == 0 || srtt_us <= 0 || srtt_us >= NEAR_RTT_US)
		return;
	l->poll_until_ns = uv_hrtime() + (uint64_t)l->busy_poll_us * 1000;
}

/* Poll without blocking until the loop has something to do, nothing is in
 * flight any more, or the time for which an answer was expected is over. */
static void poll_for_answer(struct loop *l)
{
	struct pollfd backend = { .fd = uv_backend_fd(&l->uv), .events = POLLIN };

	/* epoll's descriptor is readable when one of its descriptors is ready;
	 * polling it does not consume the events, uv_run() still sees them.
	 * Between polls the thread yields, so a process sharing its CPU (often
	 * the upstream itself) runs first. */
	while (uv_hrtime() < l->poll_until_ns && l->busy && l->busy(l->busy_arg)) {
		if (poll(&backend, 1, 0) > 0)
			return;
		sched_yield();
	}
}

void loop_run(struct loop *l)
{
	do
		poll_for_answer(l);
	while (uv_run(&l->uv, UV_RUN_ONCE));
}
