/*
 * One DoT connection: a tlsio (TLS over a libuv TCP handle) plus the DNS
 * part: ID allocation, 2-byte framing, batching, idle and handshake
 * timers, RFC 7828 keepalive.  Plaintext frames of queued queries collect
 * in `out` and are encrypted together when the loop flushes, so a burst of
 * queries costs one TLS record and usually one write(2).
 */
#include "daemon/dot.h"

#include "daemon/loop.h"
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
	MIN_HANDSHAKE_MS = 100,
	MAX_CONNECT_MS = 1000,
};

enum dot_state {
	DOT_CONNECTING,
	DOT_HANDSHAKING,
	DOT_READY,
	DOT_CLOSED,
};

struct dot_conn {
	struct transport_conn base; /* first: the upstream layer's view */
	struct tlsio io;
	uv_timer_t timer; /* handshake deadline, then idle timeout */
	uv_connect_t connect_req;
	struct loop *loop;
	const struct config *cfg;
	struct tls_ctx *tls_ctx;
	const struct options_upstream *spec;
	struct tls_session *session; /* the upstream's, to resume (not owned) */
	enum dot_state state;
	bool was_ready;
	unsigned handles_open; /* tcp and timer; freed when both are closed */
	struct idmap *ids;     /* owned; DNS ID -> job */
	struct framing reader; /* answers split across TLS records */
	uint8_t *out;	       /* owned: framed queries awaiting the next flush */
	size_t out_len, out_cap;
	struct loop_flush flush;
	unsigned keepalive_ms; /* the server's idle timeout (RFC 7828) */
	bool keepalive_known;
};

static void close_conn(struct dot_conn *conn, enum transport_close_reason reason, const char *why);
static void handshake_timer_cb(uv_timer_t *timer);

static struct dot_conn *from_base(struct transport_conn *c)
{
	return (struct dot_conn *)c;
}

static void *peer_new(const struct options_upstream *spec)
{
	(void)spec;
	return tls_session_new();
}

static void peer_free(void *peer)
{
	tls_session_free(peer);
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
	uv_timer_start(&conn->timer, idle_timer_cb, ms, 0);
}

static void maybe_idle(struct dot_conn *conn)
{
	if (conn->state == DOT_READY && idmap_count(conn->ids) == 0)
		arm_idle(conn);
}

static struct dot_conn *from_io(struct tlsio *io)
{
	return (struct dot_conn *)((char *)io - offsetof(struct dot_conn, io));
}

static void handle_closed_cb(uv_handle_t *handle)
{
	struct dot_conn *conn = handle->type == UV_TIMER ? handle->data : from_io(handle->data);

	if (--conn->handles_open)
		return;
	tlsio_deinit(&conn->io);
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
	int rc = tlsio_write(&conn->io, conn->out, conn->out_len);
	conn->out_len = 0;
	if (rc < 0)
		close_conn(conn, TRANSPORT_CLOSED_BROKEN,
			   rc == -EPROTO ? tls_conn_error(conn->io.tls) : uv_strerror(rc));
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
		uv_timer_stop(&conn->timer); /* busy, not idle */
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

static void data_cb(struct tlsio *io, uint8_t *data, size_t len)
{
	struct dot_conn *conn = from_io(io);

	if (framing_feed(&conn->reader, data, len, frame_cb, conn) < 0)
		close_conn(conn, TRANSPORT_CLOSED_BROKEN, "out of memory");
}

static void handshaken_cb(struct tlsio *io)
{
	struct dot_conn *conn = from_io(io);
	struct tls_conn *tls = io->tls;
	char desc[128];

	conn->state = DOT_READY;
	conn->was_ready = true;
	uv_timer_stop(&conn->timer);
	metrics_inc(METRIC_upstream_handshakes);
	conn->base.tls = TRANSPORT_TLS_FULL;
	if (tls_conn_resumed(tls)) {
		metrics_inc(METRIC_upstream_resumed);
		conn->base.tls = TRANSPORT_TLS_RESUMED;
	}
	tls_conn_describe(tls, desc, sizeof(desc));
	const char *unauthenticated = tls_conn_auth_failure(tls);
	if (unauthenticated) {
		metrics_inc(METRIC_upstream_unauthenticated);
		log_warn("upstream %s: NOT authenticated (%s); opportunistic profile: encrypted "
			 "anyway",
			 conn->spec->label, unauthenticated);
	}
	log_info("upstream %s: connected, %s, %s", conn->spec->label, desc,
		 unauthenticated	 ? "unauthenticated"
		 : tls_conn_resumed(tls) ? "verified session"
					 : "certificate verified");
	conn->base.ev->ready(&conn->base);
	if (conn->state != DOT_READY)
		return;
	maybe_idle(conn);
	flush_cb(&conn->flush);
}

static void ended_cb(struct tlsio *io, enum tlsio_end how, const char *why)
{
	struct dot_conn *conn = from_io(io);

	if (how == TLSIO_END_HANDSHAKE) {
		char text[256];
		metrics_inc(METRIC_upstream_tls_failures);
		snprintf(text, sizeof(text), "TLS failed: %s; nothing was sent to it", why);
		close_conn(conn, TRANSPORT_CLOSED_FAILED, text);
		return;
	}
	if (!conn->was_ready) {
		char text[160];
		snprintf(text, sizeof(text), "connection failed: %s", why);
		close_conn(conn, TRANSPORT_CLOSED_FAILED, text);
		return;
	}
	close_conn(
	    conn, how == TLSIO_END_EOF ? TRANSPORT_CLOSED_BY_SERVER : TRANSPORT_CLOSED_BROKEN, why);
}

static const struct tlsio_callbacks tlsio_cbs = {
	.handshaken = handshaken_cb,
	.data = data_cb,
	.ended = ended_cb,
};

/* Half the query deadline: a dead upstream leaves time to try the next. */
static unsigned handshake_limit_ms(const struct config *cfg)
{
	unsigned limit = cfg->timeout_ms / 2;

	return limit < MIN_HANDSHAKE_MS ? MIN_HANDSHAKE_MS : limit;
}

/* A TCP connect answers within a round trip, or is refused; one that does
 * not complete in a second is being dropped (a firewall, a captive portal)
 * and waiting longer only makes every query wait. */
static unsigned connect_limit_ms(const struct config *cfg)
{
	unsigned limit = handshake_limit_ms(cfg);

	return limit < MAX_CONNECT_MS ? limit : MAX_CONNECT_MS;
}

static void connect_cb(uv_connect_t *req, int status)
{
	struct dot_conn *conn = req->data;
	const struct options_upstream *spec = conn->spec;

	if (conn->state == DOT_CLOSED)
		return;
	if (status < 0) {
		char text[128];
		metrics_inc(METRIC_upstream_connect_failures);
		snprintf(text, sizeof(text), "cannot connect: %s", uv_strerror(status));
		close_conn(conn, TRANSPORT_CLOSED_FAILED, text);
		return;
	}
	struct tls_conn *tls =
	    tls_conn_new(conn->tls_ctx, spec->auth_name[0] ? spec->auth_name : NULL, spec->ip,
			 conn->cfg->session_resumption ? conn->session : NULL);
	if (!tls) {
		close_conn(conn, TRANSPORT_CLOSED_FAILED, "cannot create a TLS session");
		return;
	}
	tls_conn_set_pins(tls, (const uint8_t(*)[32])spec->pins, spec->n_pins);
	conn->state = DOT_HANDSHAKING;
	uv_timer_start(&conn->timer, handshake_timer_cb, handshake_limit_ms(conn->cfg), 0);
	int rc = tlsio_start(&conn->io, tls);
	if (rc < 0 && conn->state != DOT_CLOSED)
		close_conn(conn, TRANSPORT_CLOSED_FAILED, "cannot start TLS");
}

static void handshake_timer_cb(uv_timer_t *timer)
{
	struct dot_conn *conn = timer->data;
	char text[96];

	if (conn->state == DOT_CONNECTING) {
		metrics_inc(METRIC_upstream_connect_failures);
		snprintf(text, sizeof(text), "cannot connect: no answer within %u ms",
			 connect_limit_ms(conn->cfg));
		close_conn(conn, TRANSPORT_CLOSED_FAILED, text);
	} else if (conn->state == DOT_HANDSHAKING) {
		metrics_inc(METRIC_upstream_connect_failures);
		snprintf(text, sizeof(text), "no TLS session within %u ms",
			 handshake_limit_ms(conn->cfg));
		close_conn(conn, TRANSPORT_CLOSED_FAILED, text);
	}
}

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
	conn->tls_ctx = env->tls;
	conn->spec = spec;
	conn->session = peer;
	conn->state = DOT_CONNECTING;
	conn->ids = idmap_new(cap);
	require(conn->ids);
	conn->flush.cb = flush_cb;
	framing_init(&conn->reader);
	tlsio_init(&conn->io, env->loop, &tlsio_cbs);
	uv_timer_init(&env->loop->uv, &conn->timer);
	conn->timer.data = conn;
	conn->connect_req.data = conn;
	conn->handles_open = 2;
	metrics_inc(METRIC_upstream_connects);
	int rc = uv_tcp_connect(&conn->connect_req, &conn->io.tcp,
				(const struct sockaddr *)&spec->addr.sa, connect_cb);
	if (rc < 0) {
		metrics_inc(METRIC_upstream_connect_failures);
		log_info("upstream %s: cannot connect: %s", spec->label, uv_strerror(rc));
		conn->state = DOT_CLOSED;
		tlsio_close(&conn->io, handle_closed_cb);
		uv_close((uv_handle_t *)&conn->timer, handle_closed_cb);
		return NULL;
	}
	uv_timer_start(&conn->timer, handshake_timer_cb, connect_limit_ms(env->cfg), 0);
	log_debug("upstream %s: connecting", spec->label);
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
	/* At info level: the upstream layer says once, at warning level, that
	 * the upstream is down and why (the first failure of an outage). */
	if (why) {
		if (!conn->was_ready)
			log_info("upstream %s: %s", conn->spec->label, why);
		else
			log_info("upstream %s: connection closed: %s (%u queries in flight)",
				 conn->spec->label, why, idmap_count(conn->ids));
	}
	if (conn->was_ready)
		metrics_inc(METRIC_upstream_closed);
	conn->state = DOT_CLOSED;
	tlsio_stop(&conn->io); /* close_notify: keeps the session resumable */
	loop_flush_cancel(conn->loop, &conn->flush);
	uv_timer_stop(&conn->timer);
	tlsio_close(&conn->io, handle_closed_cb);
	uv_close((uv_handle_t *)&conn->timer, handle_closed_cb);
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
	.peer_new = peer_new,
	.peer_free = peer_free,
	.open = open_conn,
	.send = send_job,
	.cancel = cancel,
	.close = close_op,
	.load = load,
	.capacity = capacity,
};
