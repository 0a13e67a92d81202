/*
 * Watch the host's addresses and routes (Linux rtnetlink).  After a change
 * (a laptop waking on another network, a VPN coming up) the paths to the
 * upstreams may be dead or different: the callback's owner closes every
 * upstream connection (queries in flight are resent) and forgets health and
 * latency.  Changes are coalesced over a short delay, since one event
 * brings many messages.
 */
#pragma once

#include <uv.h>

struct netwatch;

/** Called on @loop once a change has settled. */
typedef void (*netwatch_cb)(void *arg);

/** Start watching on @loop; NULL (logged, not fatal) where netlink is
 * unavailable. */
struct netwatch *netwatch_new(uv_loop_t *loop, netwatch_cb cb, void *arg);

/** Stop (NULL is fine); memory is freed once libuv has closed the handles. */
void netwatch_free(struct netwatch *nw);
