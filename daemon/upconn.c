/*
 * One upstream TLS connection over a libuv TCP handle, with lib/tls doing
 * the cryptography on memory buffers.  Plaintext frames of queued queries
 * collect in `out` and are encrypted together when the loop flushes, so a
 * burst of queries costs one TLS record and usually one write(2).
 */
#include "daemon/upconn.h"

#include "daemon/busypoll.h"
#include "daemon/query.h"
#include "daemon/server.h"
#include "daemon/upstream.h"
#include "lib/framing.h"
#include "lib/idmap.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/tls.h"
#include "lib/wire.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>

enum {
	MAX_INFLIGHT_PER_CONN = 1024, /* with 4 connections, 4096 per upstream; a small ID table */
	MIN_HANDSHAKE_MS = 100,
};

struct upconn {
	uv_tcp_t tcp;
	uv_timer_t timer; /* handshake deadline, then idle timeout */
	uv_connect_t connect_req;
	struct server *srv;
	struct upstream *up;
	enum upconn_state state;
	bool was_ready;	       /* reached READY: a later close is routine */
	bool aborting;	       /* shutting down: fail queries, do not requeue */
	bool retiring;	       /* closed by us (reload, network change): not a failure */
	unsigned handles_open; /* tcp and timer; freed when both are closed */
	struct tls_conn *tls;  /* owned; NULL until connected */
	struct idmap *ids;     /* owned; upstream ID -> struct query */
	struct framing reader; /* answers split across TLS records */
	uint8_t *out;	       /* owned: framed queries awaiting the next flush */
	size_t out_len, out_cap;
	struct upconn *flush_next; /* srv->flush_list */
	bool flush_queued;
	uint64_t last_answer_ns; /* uv_hrtime() of the last well-formed answer */
	unsigned keepalive_ms;	 /* the server's idle timeout (RFC 7828), 0: none said */
	bool keepalive_known;
};

struct write_req {
	uv_write_t req;
	struct upconn *conn;
	size_t len;
	uint8_t data[];
};

static void close_conn(struct upconn *conn, const char *reason);

enum upconn_state upconn_state(const struct upconn *conn)
{
	return conn->state;
}

unsigned upconn_load(const struct upconn *conn)
{
	return idmap_count(conn->ids);
}

uint64_t upconn_last_answer(const struct upconn *conn)
{
	return conn->last_answer_ns;
}

static void idle_timer_cb(uv_timer_t *timer);

/* Idle: keep the connection for --idle-timeout, or less if the server said
 * it closes sooner (RFC 7828 §3.2.2: close before the server does). */
static void arm_idle(struct upconn *conn)
{
	uint64_t ms = conn->srv->cfg->idle_timeout_ms;

	if (conn->keepalive_known && conn->keepalive_ms < ms)
		ms = conn->keepalive_ms;
	uv_timer_start(&conn->timer, idle_timer_cb, ms, 0);
}

static void handle_closed_cb(uv_handle_t *handle)
{
	struct upconn *conn = handle->data;

	if (--conn->handles_open)
		return;
	tls_conn_free(conn->tls);
	idmap_free(conn->ids);
	framing_deinit(&conn->reader);
	free(conn->out);
	free(conn);
}

static void write_cb(uv_write_t *req, int status)
{
	struct write_req *w = (struct write_req *)req;
	struct upconn *conn = w->conn;

	free(w);
	if (status < 0 && conn->state != UPCONN_CLOSED)
		close_conn(conn, uv_strerror(status));
}

/* Send whatever ciphertext the TLS session has produced.  uv_try_write first
 * (no copy, no allocation); only what the kernel did not take is copied into
 * a write request, and everything after it must queue behind it. */
static int send_cipher(struct upconn *conn)
{
	struct server *srv = conn->srv;

	while (tls_conn_out_pending(conn->tls) > 0) {
		size_t n = tls_conn_out_take(conn->tls, srv->cipher_buf, sizeof(srv->cipher_buf));
		uv_buf_t buf = uv_buf_init((char *)srv->cipher_buf, (unsigned)n);
		int r = uv_try_write((uv_stream_t *)&conn->tcp, &buf, 1);
		if (r == (int)n)
			continue;
		if (r < 0 && r != UV_EAGAIN) {
			close_conn(conn, uv_strerror(r));
			return -1;
		}
		size_t done = r > 0 ? (size_t)r : 0;
		size_t rest = n - done + tls_conn_out_pending(conn->tls);
		struct write_req *w = malloc(sizeof(*w) + rest);
		require(w);
		w->conn = conn;
		memcpy(w->data, srv->cipher_buf + done, n - done);
		w->len = n - done;
		w->len += tls_conn_out_take(conn->tls, w->data + w->len, rest - w->len);
		buf = uv_buf_init((char *)w->data, (unsigned)w->len);
		r = uv_write(&w->req, (uv_stream_t *)&conn->tcp, &buf, 1, write_cb);
		if (r < 0) {
			free(w);
			close_conn(conn, uv_strerror(r));
			return -1;
		}
	}
	return 0;
}

static void queue_flush(struct upconn *conn)
{
	struct server *srv = conn->srv;

	if (conn->flush_queued)
		return;
	conn->flush_queued = true;
	conn->flush_next = srv->flush_list;
	srv->flush_list = conn;
	server_want_flush(srv);
}

static void flush(struct upconn *conn)
{
	if (conn->state != UPCONN_READY || conn->out_len == 0)
		return;
	if (tls_conn_write(conn->tls, conn->out, conn->out_len) < 0) {
		close_conn(conn, tls_conn_error(conn->tls));
		return;
	}
	conn->out_len = 0;
	if (send_cipher(conn) == 0)
		busypoll_expect(conn->srv, conn->up);
}

void upconn_flush_all(struct server *srv)
{
	while (srv->flush_list) {
		struct upconn *conn = srv->flush_list;
		srv->flush_list = conn->flush_next;
		conn->flush_queued = false;
		flush(conn);
	}
}

int upconn_send(struct upconn *conn, struct query *q, uint16_t *idp)
{
	uint16_t id;

	if (conn->state == UPCONN_CLOSED)
		return -EPIPE;
	if (idmap_alloc(conn->ids, q, &id) < 0)
		return -ENOSPC;
	size_t need = conn->out_len + 2 + q->len;
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
	wire_write16(frame, (uint16_t)q->len);
	memcpy(frame + 2, q->msg, q->len);
	wire_set_id(frame + 2, id);
	conn->out_len = need;
	*idp = id;
	if (conn->state == UPCONN_READY) {
		uv_timer_stop(&conn->timer); /* busy, not idle */
		queue_flush(conn);
	}
	return 0;
}

void upconn_forget(struct upconn *conn, uint16_t id)
{
	idmap_remove(conn->ids, id);
	if (conn->state == UPCONN_READY && idmap_count(conn->ids) == 0)
		arm_idle(conn);
}

/* One DNS message from the upstream. */
static int frame_cb(void *arg, uint8_t *msg, size_t len)
{
	struct upconn *conn = arg;
	struct wire_info info;

	if (wire_parse(msg, len, &info) != 0 || !(info.flags & WIRE_FLAG_QR)) {
		metrics_inc(METRIC_upstream_bad_answers);
		log_debug("upstream %s: ignoring a malformed message of %zu bytes",
			  conn->up->spec->label, len);
		return 0;
	}
	/* Bytes alone prove nothing (a server can trickle an endless frame):
	 * a connection is alive while well-formed answers arrive. */
	conn->last_answer_ns = uv_hrtime();
	upstream_alive(conn->up);
	struct query *q = idmap_get(conn->ids, info.id);
	struct query_attempt *a = q ? query_find_attempt(q, conn, info.id) : NULL;
	if (!a || !wire_question_equal(&info.q, &q->info.q)) {
		/* RFC 5452 §9.1: ID and question must both match, or it is not ours. */
		metrics_inc(METRIC_upstream_unmatched);
		log_debug("upstream %s: dropping an answer that matches no query in flight",
			  conn->up->spec->label);
		return 0;
	}
	if (info.keepalive >= 0) {
		conn->keepalive_known = true;
		conn->keepalive_ms = (unsigned)info.keepalive * 100;
	}
	idmap_remove(conn->ids, info.id);
	a->conn = NULL;
	upstream_answered(conn->up, a->measured ? (double)(uv_hrtime() - a->sent_ns) / 1e3 : -1);
	q->upstream = conn->up;
	/* Attempts elsewhere still waiting on silent connections lost the race;
	 * noted after the answer, since noting may close those connections. */
	struct upstream *losers[QUERY_MAX_ATTEMPTS];
	unsigned n_losers = 0;
	for (unsigned i = 0; i < q->n_attempts; i++) {
		struct query_attempt *b = &q->attempts[i];
		if (b->conn && b->up != conn->up && upconn_last_answer(b->conn) < b->sent_ns)
			losers[n_losers++] = b->up;
	}
	query_answer(q, msg, len, &info);
	for (unsigned i = 0; i < n_losers; i++)
		upstream_lost_race(losers[i]);
	if (conn->state == UPCONN_READY && idmap_count(conn->ids) == 0)
		arm_idle(conn);
	return conn->state == UPCONN_CLOSED;
}

static void read_plain(struct upconn *conn)
{
	struct server *srv = conn->srv;

	while (conn->state == UPCONN_READY) {
		int n = tls_conn_read(conn->tls, srv->plain_buf, sizeof(srv->plain_buf));
		if (n == TLS_EAGAIN)
			return;
		if (n == TLS_ECLOSED) {
			upconn_close(conn, "closed by the server");
			return;
		}
		if (n < 0) {
			upconn_close(conn, tls_conn_error(conn->tls));
			return;
		}
		if (framing_feed(&conn->reader, srv->plain_buf, (size_t)n, frame_cb, conn) < 0)
			upconn_close(conn, "out of memory");
	}
}

static void drive_handshake(struct upconn *conn)
{
	char desc[128];
	int rc = tls_conn_handshake(conn->tls);

	if (send_cipher(conn) < 0)
		return;
	if (rc == TLS_EAGAIN)
		return;
	if (rc < 0) {
		metrics_inc(METRIC_upstream_tls_failures);
		log_error("upstream %s: TLS failed: %s; nothing was sent to it",
			  conn->up->spec->label, tls_conn_error(conn->tls));
		close_conn(conn, NULL);
		return;
	}
	conn->state = UPCONN_READY;
	conn->was_ready = true;
	uv_timer_stop(&conn->timer);
	metrics_inc(METRIC_upstream_handshakes);
	if (tls_conn_resumed(conn->tls))
		metrics_inc(METRIC_upstream_resumed);
	tls_conn_describe(conn->tls, desc, sizeof(desc));
	const char *unauthenticated = tls_conn_auth_failure(conn->tls);
	if (unauthenticated) {
		metrics_inc(METRIC_upstream_unauthenticated);
		log_warn("upstream %s: NOT authenticated (%s); opportunistic profile: encrypted "
			 "anyway",
			 conn->up->spec->label, unauthenticated);
	}
	log_info("upstream %s: connected, %s, %s", conn->up->spec->label, desc,
		 unauthenticated	       ? "unauthenticated"
		 : tls_conn_resumed(conn->tls) ? "verified session"
					       : "certificate verified");
	upstream_conn_ready(conn->up, conn);
	if (idmap_count(conn->ids) == 0)
		arm_idle(conn);
	flush(conn);
}

static void alloc_cb(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
	struct upconn *conn = handle->data;

	(void)suggested;
	*buf = uv_buf_init((char *)conn->srv->read_buf, sizeof(conn->srv->read_buf));
}

static void read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
	struct upconn *conn = stream->data;

	if (nread == 0 || conn->state == UPCONN_CLOSED)
		return;
	if (nread < 0) {
		upconn_close(conn,
			     nread == UV_EOF ? "closed by the server" : uv_strerror((int)nread));
		return;
	}
	/* Acknowledge at once: servers without TCP_NODELAY hold their next answer
	 * until our ACK arrives, and a delayed ACK costs up to 40 ms. */
	uv_os_fd_t fd;
	if (uv_fileno((uv_handle_t *)stream, &fd) == 0) {
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof(one));
	}
	if (tls_conn_feed(conn->tls, (const uint8_t *)buf->base, (size_t)nread) < 0) {
		upconn_close(conn, "out of memory");
		return;
	}
	if (conn->state == UPCONN_HANDSHAKING)
		drive_handshake(conn);
	if (conn->state == UPCONN_READY) {
		read_plain(conn);
		if (conn->state == UPCONN_READY)
			send_cipher(conn); /* e.g. a key update answered */
	}
}

static void connect_cb(uv_connect_t *req, int status)
{
	struct upconn *conn = req->data;
	const struct options_upstream *spec = conn->up->spec;

	if (conn->state == UPCONN_CLOSED)
		return;
	if (status < 0) {
		metrics_inc(METRIC_upstream_connect_failures);
		log_warn("upstream %s: cannot connect: %s", spec->label, uv_strerror(status));
		close_conn(conn, NULL);
		return;
	}
	uv_tcp_nodelay(&conn->tcp, 1);
	conn->tls =
	    tls_conn_new(conn->srv->tls, spec->auth_name[0] ? spec->auth_name : NULL, spec->ip,
			 conn->srv->cfg->session_resumption ? conn->up->session : NULL);
	if (!conn->tls) {
		close_conn(conn, "cannot create a TLS session");
		return;
	}
	tls_conn_set_pins(conn->tls, (const uint8_t(*)[32])spec->pins, spec->n_pins);
	int rc = uv_read_start((uv_stream_t *)&conn->tcp, alloc_cb, read_cb);
	if (rc < 0) {
		close_conn(conn, uv_strerror(rc));
		return;
	}
	conn->state = UPCONN_HANDSHAKING;
	drive_handshake(conn);
}

/* Half the query deadline: a dead upstream leaves time to try the next. */
static unsigned handshake_limit_ms(const struct server *srv)
{
	unsigned limit = srv->cfg->timeout_ms / 2;

	return limit < MIN_HANDSHAKE_MS ? MIN_HANDSHAKE_MS : limit;
}

static void idle_timer_cb(uv_timer_t *timer)
{
	struct upconn *conn = timer->data;

	if (conn->state == UPCONN_READY && idmap_count(conn->ids) == 0)
		close_conn(conn, "idle");
}

static void timer_cb(uv_timer_t *timer)
{
	struct upconn *conn = timer->data;

	if (conn->state == UPCONN_CONNECTING || conn->state == UPCONN_HANDSHAKING) {
		metrics_inc(METRIC_upstream_connect_failures);
		log_warn("upstream %s: no TLS session within %u ms", conn->up->spec->label,
			 handshake_limit_ms(conn->srv));
		close_conn(conn, NULL);
	}
}

struct upconn *upconn_new(struct server *srv, struct upstream *up)
{
	struct upconn *conn = calloc(1, sizeof(*conn));
	unsigned capacity = srv->cfg->max_inflight < MAX_INFLIGHT_PER_CONN ? srv->cfg->max_inflight
									   : MAX_INFLIGHT_PER_CONN;
	int rc;

	require(conn);
	conn->srv = srv;
	conn->up = up;
	conn->state = UPCONN_CONNECTING;
	conn->ids = idmap_new(capacity);
	require(conn->ids);
	framing_init(&conn->reader);
	uv_tcp_init(srv->loop, &conn->tcp);
	uv_timer_init(srv->loop, &conn->timer);
	conn->tcp.data = conn;
	conn->timer.data = conn;
	conn->connect_req.data = conn;
	conn->handles_open = 2;
	metrics_inc(METRIC_upstream_connects);
	rc = uv_tcp_connect(&conn->connect_req, &conn->tcp,
			    (const struct sockaddr *)&up->spec->addr.sa, connect_cb);
	if (rc < 0) {
		metrics_inc(METRIC_upstream_connect_failures);
		log_warn("upstream %s: cannot connect: %s", up->spec->label, uv_strerror(rc));
		conn->state = UPCONN_CLOSED;
		uv_close((uv_handle_t *)&conn->tcp, handle_closed_cb);
		uv_close((uv_handle_t *)&conn->timer, handle_closed_cb);
		return NULL;
	}
	uv_timer_start(&conn->timer, timer_cb, handshake_limit_ms(srv), 0);
	log_debug("upstream %s: connecting", up->spec->label);
	return conn;
}

static void unlink_flush(struct upconn *conn)
{
	struct upconn **p = &conn->srv->flush_list;

	if (!conn->flush_queued)
		return;
	while (*p && *p != conn)
		p = &(*p)->flush_next;
	if (*p)
		*p = conn->flush_next;
	conn->flush_queued = false;
}

/* An orderly TLS close: best effort, one try, no queue (the socket closes
 * next).  It also keeps the session resumable for the next connection. */
static void say_goodbye(struct upconn *conn)
{
	tls_conn_shutdown(conn->tls);
	size_t n =
	    tls_conn_out_take(conn->tls, conn->srv->cipher_buf, sizeof(conn->srv->cipher_buf));
	uv_buf_t buf = uv_buf_init((char *)conn->srv->cipher_buf, (unsigned)n);
	if (n)
		(void)uv_try_write((uv_stream_t *)&conn->tcp, &buf, 1);
}

/* Close, then hand every query in flight back: requeued, or failed when
 * aborting.  @reason is logged when non-NULL. */
static void close_conn(struct upconn *conn, const char *reason)
{
	struct query *q;
	uint16_t id;
	bool failed = !conn->was_ready && !conn->retiring;

	if (conn->state == UPCONN_CLOSED)
		return;
	if (reason) {
		if (failed)
			log_warn("upstream %s: connection failed: %s", conn->up->spec->label,
				 reason);
		else
			log_info("upstream %s: connection closed: %s (%u queries in flight)",
				 conn->up->spec->label, reason, idmap_count(conn->ids));
	}
	if (conn->state == UPCONN_READY)
		say_goodbye(conn);
	if (conn->was_ready)
		metrics_inc(METRIC_upstream_closed);
	conn->state = UPCONN_CLOSED;
	unlink_flush(conn);
	uv_timer_stop(&conn->timer);
	uv_close((uv_handle_t *)&conn->tcp, handle_closed_cb);
	uv_close((uv_handle_t *)&conn->timer, handle_closed_cb);
	upstream_conn_closed(conn->up, conn, failed);
	while ((q = idmap_pop(conn->ids, &id)) != NULL) {
		struct query_attempt *a = query_find_attempt(q, conn, id);
		if (a)
			a->conn = NULL;
		if (conn->aborting)
			query_fail(q, WIRE_EDE_NETWORK_ERROR, METRIC_servfail_no_upstream);
		else
			upstream_requeue(conn->up, q, !failed || conn->retiring);
	}
}

void upconn_close(struct upconn *conn, const char *reason)
{
	close_conn(conn, reason);
}

void upconn_retire(struct upconn *conn, const char *reason)
{
	conn->retiring = true;
	close_conn(conn, reason);
}

void upconn_abort(struct upconn *conn)
{
	conn->aborting = true;
	close_conn(conn, NULL);
}
