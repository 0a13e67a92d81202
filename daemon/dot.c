/*
 * One DoT connection: a tlsio (TLS over a libuv TCP handle) plus the DNS
 * part: ID allocation, 2-byte framing, batching, idle and handshake
 * timers, RFC 7828 keepalive.  Plaintext frames of queued queries collect
 * in `out` and are encrypted together when the loop flushes, so a burst of
 * queries costs one TLS record and usually one write(2).
 */
#include "daemon/dot.h"

#include "daemon/loop.h"
#include "daemon/tlsconnect.h"
#include "daemon/tlsio.h"
#include "lib/framing.h"
#include "lib/idmap.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/tls.h"
#include "lib/wire.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

enum {
	MAX_INFLIGHT_PER_CONN = 1024, /* with 4 connections, 4096 per upstream; a small ID table */
};

enum dot_state {
	DOT_SETUP, /* TCP connect and TLS handshake (tlsconnect) */
	DOT_READY,
	DOT_CLOSED,
};

struct dot_conn {
	struct transport_conn base; /* first: the upstream layer's view */
	struct tlsconnect tc;	    /* its timer: the set-up deadlines, then the idle timeout */
	struct loop *loop;
	const struct config *cfg;
	const struct options_upstream *spec;
	enum dot_state state;
	struct idmap *ids;     /* owned; DNS ID -> job */
	struct framing reader; /* answers split across TLS records */
	uint8_t *out;	       /* owned: framed queries awaiting the next flush */
	size_t out_len, out_cap;
	struct loop_flush flush;
	unsigned keepalive_ms; /* the server's idle timeout (RFC 7828) */
	bool keepalive_known;
};

static void close_conn(struct dot_conn *conn, enum transport_close_reason reason, const char *why);

static struct dot_conn *from_base(struct transport_conn *c)
{
	return (struct dot_conn *)c;
}

static void idle_timer_cb(uv_timer_t *timer)
{
	struct dot_conn *conn = timer->data;

	if (conn->state == DOT_READY && idmap_count(conn->ids) == 0)
		close_conn(conn, TRANSPORT_CLOSED_IDLE, "idle");
}

/* Idle: keep the connection for --idle-timeout, or less if the server said
 * it closes sooner (RFC 7828 §3.2.2: close before the server does). */
static void arm_idle(struct dot_conn *conn)
{
	uint64_t ms = conn->cfg->idle_timeout_ms;

	if (conn->keepalive_known && conn->keepalive_ms < ms)
		ms = conn->keepalive_ms;
	uv_timer_start(&conn->tc.timer, idle_timer_cb, ms, 0);
}

static void maybe_idle(struct dot_conn *conn)
{
	if (conn->state == DOT_READY && idmap_count(conn->ids) == 0)
		arm_idle(conn);
}

static struct dot_conn *from_tc(struct tlsconnect *tc)
{
	return (struct dot_conn *)((char *)tc - offsetof(struct dot_conn, tc));
}

static void freed(struct tlsconnect *tc)
{
	struct dot_conn *conn = from_tc(tc);

	idmap_free(conn->ids);
	framing_deinit(&conn->reader);
	free(conn->out);
	free(conn);
}

static void flush_cb(struct loop_flush *f)
{
	struct dot_conn *conn = (struct dot_conn *)((char *)f - offsetof(struct dot_conn, flush));

	if (conn->state != DOT_READY || conn->out_len == 0)
		return;
	int rc = tlsio_write(&conn->tc.io, conn->out, conn->out_len);
	conn->out_len = 0;
	if (rc < 0)
		close_conn(conn, TRANSPORT_CLOSED_BROKEN,
			   rc == -EPROTO ? tls_conn_error(conn->tc.io.tls) : uv_strerror(rc));
}

static int send_job(struct transport_conn *c, const uint8_t *msg, size_t len, void *job,
		    uint32_t *key)
{
	struct dot_conn *conn = from_base(c);
	uint16_t id;

	if (conn->state == DOT_CLOSED)
		return -EPIPE;
	if (idmap_alloc(conn->ids, job, &id) < 0)
		return -ENOSPC;
	size_t need = conn->out_len + 2 + len;
	if (need > conn->out_cap) {
		size_t cap = conn->out_cap ? conn->out_cap * 2 : 4096;
		while (cap < need)
			cap *= 2;
		uint8_t *p = realloc(conn->out, cap);
		require(p);
		conn->out = p;
		conn->out_cap = cap;
	}
	/* Length prefix and message in one buffer: one TLS record, not two. */
	uint8_t *frame = conn->out + conn->out_len;
	wire_write16(frame, (uint16_t)len);
	memcpy(frame + 2, msg, len);
	wire_set_id(frame + 2, id);
	conn->out_len = need;
	*key = id;
	if (conn->state == DOT_READY) {
		uv_timer_stop(&conn->tc.timer); /* busy, not idle */
		loop_flush_queue(conn->loop, &conn->flush);
	}
	return 0;
}

static void cancel(struct transport_conn *c, uint32_t key)
{
	struct dot_conn *conn = from_base(c);

	idmap_remove(conn->ids, (uint16_t)key);
	maybe_idle(conn);
}

static unsigned load(const struct transport_conn *c)
{
	return idmap_count(((const struct dot_conn *)c)->ids);
}

static unsigned capacity(const struct transport_conn *c)
{
	const struct dot_conn *conn = (const struct dot_conn *)c;
	unsigned cap = conn->cfg->max_inflight < MAX_INFLIGHT_PER_CONN ? conn->cfg->max_inflight
								       : MAX_INFLIGHT_PER_CONN;
	unsigned used = idmap_count(conn->ids);

	return conn->state == DOT_CLOSED || used >= cap ? 0 : cap - used;
}

/* One DNS message from the upstream. */
static int frame_cb(void *arg, uint8_t *msg, size_t len)
{
	struct dot_conn *conn = arg;
	struct wire_info info;

	if (wire_parse(msg, len, &info) != 0 || !(info.flags & WIRE_FLAG_QR)) {
		metrics_inc(METRIC_upstream_bad_answers);
		log_debug("upstream %s: ignoring a malformed message of %zu bytes",
			  conn->spec->label, len);
		return 0;
	}
	void *job = idmap_get(conn->ids, info.id);
	/* Taken, the ID was cancelled (and the idle timer armed if need be). */
	if (conn->base.ev->answer(&conn->base, info.id, job, msg, len, &info) &&
	    info.keepalive >= 0) {
		conn->keepalive_known = true;
		conn->keepalive_ms = (unsigned)info.keepalive * 100;
		maybe_idle(conn);
	}
	return conn->state == DOT_CLOSED;
}

static void data_cb(struct tlsconnect *tc, uint8_t *data, size_t len)
{
	struct dot_conn *conn = from_tc(tc);

	if (framing_feed(&conn->reader, data, len, frame_cb, conn) < 0)
		close_conn(conn, TRANSPORT_CLOSED_BROKEN, "out of memory");
}

static void handshaken_cb(struct tlsconnect *tc)
{
	struct dot_conn *conn = from_tc(tc);

	conn->state = DOT_READY;
	tlsconnect_handshaken(tc, &conn->base, NULL);
	conn->base.ev->ready(&conn->base);
	if (conn->state != DOT_READY)
		return;
	maybe_idle(conn);
	flush_cb(&conn->flush);
}

static void tc_close(struct tlsconnect *tc, enum transport_close_reason reason, const char *why)
{
	close_conn(from_tc(tc), reason, why);
}

static const struct tlsconnect_ops tlsconnect_ops = {
	.handshaken = handshaken_cb,
	.data = data_cb,
	.close = tc_close,
	.freed = freed,
};

static struct transport_conn *open_conn(const struct transport_env *env,
					const struct options_upstream *spec, void *peer,
					const struct transport_events *ev, void *owner)
{
	struct dot_conn *conn = calloc(1, sizeof(*conn));
	unsigned cap = env->cfg->max_inflight < MAX_INFLIGHT_PER_CONN ? env->cfg->max_inflight
								      : MAX_INFLIGHT_PER_CONN;

	require(conn);
	conn->base.ops = &dot_transport;
	conn->base.ev = ev;
	conn->base.owner = owner;
	conn->loop = env->loop;
	conn->cfg = env->cfg;
	conn->spec = spec;
	conn->state = DOT_SETUP;
	conn->ids = idmap_new(cap);
	require(conn->ids);
	conn->flush.cb = flush_cb;
	framing_init(&conn->reader);
	/* ALPN: the context's "dot", offered, not required (RFC 7858
	 * predates it: a server that selects none is used too). */
	if (tlsconnect_open(&conn->tc, env, spec, peer, NULL, &tlsconnect_ops, conn) < 0) {
		conn->state = DOT_CLOSED;
		return NULL;
	}
	return &conn->base;
}

/* Close, then report: closed, and every job in flight orphaned -- those
 * still waiting in `out` were never written, the server never saw them. */
static void close_conn(struct dot_conn *conn, enum transport_close_reason reason, const char *why)
{
	void *job;
	uint16_t id;

	if (conn->state == DOT_CLOSED)
		return;
	conn->state = DOT_CLOSED;
	loop_flush_cancel(conn->loop, &conn->flush);
	tlsconnect_close(&conn->tc, why, idmap_count(conn->ids));
	conn->base.ev->closed(&conn->base, reason, why);
	for (size_t off = 0; off + 2 + WIRE_HEADER_LEN <= conn->out_len;) {
		size_t len = wire_read16(conn->out + off);
		id = wire_read16(conn->out + off + 2);
		off += 2 + len;
		if ((job = idmap_remove(conn->ids, id)) != NULL)
			conn->base.ev->orphaned(&conn->base, job, false);
	}
	conn->out_len = 0;
	while ((job = idmap_pop(conn->ids, &id)) != NULL)
		conn->base.ev->orphaned(&conn->base, job, true);
}

static void close_op(struct transport_conn *c, const char *why)
{
	close_conn(from_base(c), TRANSPORT_CLOSED_BY_US, why);
}

const struct transport_ops dot_transport = {
	.name = "dot",
	.peer_new = tlsconnect_peer_new,
	.peer_free = tlsconnect_peer_free,
	.open = open_conn,
	.send = send_job,
	.cancel = cancel,
	.close = close_op,
	.load = load,
	.capacity = capacity,
};
