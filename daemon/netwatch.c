/*
 * rtnetlink watcher.  Only the message types matter (address or route
 * added or removed); their contents are not parsed.
 */
#include "daemon/netwatch.h"

#include "lib/log.h"

#include <errno.h>
#include <stdbool.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum { SETTLE_MS = 300 };

struct netwatch {
	uv_poll_t poll;
	uv_timer_t settle;
	netwatch_cb cb;
	void *arg;
	int fd;
	unsigned handles_open;
};

static void settle_cb(uv_timer_t *timer)
{
	struct netwatch *nw = timer->data;

	nw->cb(nw->arg);
}

static bool relevant(const struct nlmsghdr *h)
{
	switch (h->nlmsg_type) {
	case RTM_NEWADDR:
	case RTM_DELADDR:
	case RTM_NEWROUTE:
	case RTM_DELROUTE:
		return true;
	default:
		return false;
	}
}

static void poll_cb(uv_poll_t *poll, int status, int events)
{
	struct netwatch *nw = poll->data;
	uint8_t buf[8192] __attribute__((aligned(NLMSG_ALIGNTO)));
	bool changed = false;
	ssize_t n;

	(void)events;
	if (status < 0)
		return;
	while ((n = recv(nw->fd, buf, sizeof(buf), 0)) > 0) {
		size_t len = (size_t)n;
		for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, len);
		     h = NLMSG_NEXT(h, len))
			changed |= relevant(h);
	}
	if (n < 0 && errno == ENOBUFS)
		changed = true; /* the kernel dropped messages: assume a change */
	if (changed) {
		log_debug("network change seen; settling for %d ms", SETTLE_MS);
		uv_timer_start(&nw->settle, settle_cb, SETTLE_MS, 0);
	}
}

struct netwatch *netwatch_new(uv_loop_t *loop, netwatch_cb cb, void *arg)
{
	struct sockaddr_nl addr = {
		.nl_family = AF_NETLINK,
		.nl_groups =
		    RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE,
	};
	int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_ROUTE);

	if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		log_info("not watching network changes: %s", strerror(errno));
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	struct netwatch *nw = calloc(1, sizeof(*nw));
	require(nw);
	nw->cb = cb;
	nw->arg = arg;
	nw->fd = fd;
	uv_poll_init(loop, &nw->poll, fd);
	uv_timer_init(loop, &nw->settle);
	nw->poll.data = nw->settle.data = nw;
	nw->handles_open = 2;
	uv_poll_start(&nw->poll, UV_READABLE, poll_cb);
	return nw;
}

static void closed_cb(uv_handle_t *handle)
{
	struct netwatch *nw = handle->data;

	if (--nw->handles_open)
		return;
	close(nw->fd);
	free(nw);
}

void netwatch_free(struct netwatch *nw)
{
	if (!nw)
		return;
	uv_poll_stop(&nw->poll);
	uv_close((uv_handle_t *)&nw->poll, closed_cb);
	uv_close((uv_handle_t *)&nw->settle, closed_cb);
}
