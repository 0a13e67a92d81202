/*
 * Watch the host's addresses and routes (Linux rtnetlink).  After a change
 * (a laptop waking on another network, a VPN coming up) the paths to the
 * upstreams may be dead or different: every upstream connection is closed
 * (queries in flight are resent) and health and latency are forgotten.
 * Changes are coalesced over a short delay, since one event brings many
 * messages.
 */
#pragma once

struct server;
struct netwatch;

/** Start watching; NULL (logged, not fatal) where netlink is unavailable. */
struct netwatch *netwatch_start(struct server *srv);

/** Stop; memory is freed once libuv has closed the handles. */
void netwatch_stop(struct netwatch *nw);
