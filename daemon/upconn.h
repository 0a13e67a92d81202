/*
 * One TLS connection to an upstream (RFC 7858), carrying many pipelined
 * queries (RFC 7766): CONNECTING -> HANDSHAKING -> READY -> CLOSED.
 * Queries may be handed over in any state before CLOSED; they are written
 * only once the handshake has completed and the certificate verified, so a
 * server that fails authentication never sees a query.  Writes are batched:
 * queries handed over in one loop iteration go out in one TLS record.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

struct upstream;
struct query;
struct server;

enum upconn_state {
	UPCONN_CONNECTING,
	UPCONN_HANDSHAKING,
	UPCONN_READY,
	UPCONN_CLOSED,
};

struct upconn;

/** Start connecting to @up; the caller adds it to @up's connections.  An
 * idle ready connection closes after --idle-timeout (or the server's
 * edns-tcp-keepalive, if shorter).  NULL if it could not even start (logged;
 * @up is not told). */
struct upconn *upconn_new(struct server *srv, struct upstream *up);

/** Current state. */
enum upconn_state upconn_state(const struct upconn *conn);

/** Queries in flight on @conn. */
unsigned upconn_load(const struct upconn *conn);

/** uv_hrtime() when @conn last received a well-formed answer (0: never). */
uint64_t upconn_last_answer(const struct upconn *conn);

/** Give @q an ID on @conn (written to @id) and queue it for sending.
 * Returns 0, or -ENOSPC when @conn has as many queries in flight as it may. */
int upconn_send(struct upconn *conn, struct query *q, uint16_t *id);

/** The query holding @id completed elsewhere (answered via another
 * attempt, deadline): forget the ID, so a late answer is dropped. */
void upconn_forget(struct upconn *conn, uint16_t id);

/** Close @conn now; queries in flight go back to the upstream set
 * (upstream_requeue).  Memory is freed later, in libuv's close callback. */
void upconn_close(struct upconn *conn, const char *reason);

/** Close @conn because the world changed (reload, network change): like
 * upconn_close(), but no failure is held against the upstream or the
 * queries, which are resent. */
void upconn_retire(struct upconn *conn, const char *reason);

/** Close @conn and fail its queries without requeueing (shutdown). */
void upconn_abort(struct upconn *conn);

/** Write every connection's queued queries: called once per loop iteration. */
void upconn_flush_all(struct server *srv);
