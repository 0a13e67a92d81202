/*
 * One DoH connection: a tlsio (TLS over a libuv TCP handle, ALPN h2) plus
 * lib/doh, the HTTP/2 session.  The transport key is a request number from
 * an idmap, since a job may have to wait for a stream; requests beyond the
 * server's stream limit wait in order in `waiting`.  HTTP/2 output
 * collects in `out` and leaves when the loop flushes, so the queries of one
 * round go out in one TLS record.  After each read and each flush, the
 * session's events are handled (pump()): answers and failures are reported
 * upward, waiting requests get the streams that freed, and a connection
 * that is done closes.  One timer serves the set-up deadline, then the
 * liveness checks (PING) while jobs are out, then the idle timeout.
 */
#include "daemon/doh.h"

#include "daemon/loop.h"
#include "daemon/tlsconnect.h"
#include "daemon/tlsio.h"
#include "lib/doh.h"
#include "lib/idmap.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/tls.h"
#include "lib/wire.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
	MAX_REQS_PER_CONN = 1024,     /* jobs on a connection: in streams or waiting for one */
	OUT_BACKLOG_MAX = 256 * 1024, /* bytes the kernel did not take: no new job meanwhile */
	LIVENESS_MS = 1000,	      /* silent this long with jobs out: PING; then close */
};

enum h2_state {
	H2_SETUP, /* TCP connect and TLS handshake (tlsconnect) */
	H2_READY,
	H2_DRAINING, /* GOAWAY, or the stream IDs used up: no new job; closes when empty */
	H2_CLOSED,
};

/* One job on the connection. */
struct doh_req {
	struct doh_req *next; /* in `waiting` */
	void *job;	      /* the upstream layer's (borrowed) */
	int32_t stream;	      /* its HTTP/2 stream; 0 while it waits for one */
	uint16_t key;	      /* in `ids` */
	bool sent;	      /* close_conn(): its request left, the server may have seen it */
	size_t len;
	uint8_t msg[]; /* the query as sent: ID 0, no keepalive option */
};

struct doh_conn {
	struct transport_conn base; /* first: the upstream layer's view */
	struct tlsconnect tc;	    /* its timer: the set-up deadlines, then liveness and idle */
	struct loop *loop;
	const struct config *cfg;
	const struct options_upstream *spec;
	enum h2_state state;
	enum transport_close_reason drain_reason; /* how a DRAINING one closes */
	bool in_pump;				  /* pump() is running: do not nest it */
	bool warned;				  /* an HTTP error was logged as a warning once */
	struct doh_session *h2;
	struct idmap *ids; /* owned; key -> struct doh_req (owned) */
	struct doh_req *waiting, **waiting_tail;
	unsigned n_waiting;
	uint8_t *out; /* owned: HTTP/2 output awaiting the next flush */
	size_t out_len, out_cap;
	struct loop_flush flush;
	uint64_t last_frame_ms; /* uv_now() when the server last sent anything */
	uint64_t ping_ms;	/* uv_now() when our PING left; 0: none waiting */
	uint64_t idle_since_ms; /* uv_now() when the last job ended */
	bool idle;
};

static void close_conn(struct doh_conn *conn, enum transport_close_reason reason, const char *why);
static void flush_cb(struct loop_flush *f);

static struct doh_conn *from_base(struct transport_conn *c)
{
	return (struct doh_conn *)c;
}

static struct doh_conn *from_tc(struct tlsconnect *tc)
{
	return (struct doh_conn *)((char *)tc - offsetof(struct doh_conn, tc));
}

static unsigned max_reqs(const struct config *cfg)
{
	return cfg->max_inflight < MAX_REQS_PER_CONN ? cfg->max_inflight : MAX_REQS_PER_CONN;
}

/* -- timers ------------------------------------------------------------------------ */

static void timer_cb(uv_timer_t *timer);

/* --doh-keepalive: an idle connection stays open, and a PING every so
 * often proves it still works (and keeps NAT state and the server's idle
 * timer fresh); a DRAINING one closes as usual. */
static bool keeps_alive(const struct doh_conn *conn)
{
	return conn->cfg->doh_keepalive_ms && conn->state == H2_READY;
}

/* While jobs are out: the next liveness check; otherwise the idle timeout,
 * or with --doh-keepalive the next PING (a DRAINING connection with
 * nothing left closes at once instead). */
static void arm_timer(struct doh_conn *conn)
{
	uint64_t now = uv_now(&conn->loop->uv), due;

	if (conn->state != H2_READY && conn->state != H2_DRAINING)
		return;
	if (idmap_count(conn->ids) == 0) {
		if (!conn->idle) {
			conn->idle = true;
			conn->idle_since_ms = now;
		}
		if (!keeps_alive(conn))
			due = conn->idle_since_ms + conn->cfg->idle_timeout_ms;
		else if (conn->ping_ms > conn->last_frame_ms)
			due = conn->ping_ms + LIVENESS_MS; /* the PING's answer */
		else
			due = (conn->idle_since_ms > conn->last_frame_ms ? conn->idle_since_ms
									 : conn->last_frame_ms) +
			      conn->cfg->doh_keepalive_ms;
	} else {
		if (conn->idle) {
			/* Busy again: silence counts from now, not from the
			 * last frame of the previous busy spell. */
			conn->idle = false;
			conn->last_frame_ms = now;
		}
		due = (conn->ping_ms > conn->last_frame_ms ? conn->ping_ms : conn->last_frame_ms) +
		      LIVENESS_MS;
	}
	uv_timer_start(&conn->tc.timer, timer_cb, due > now ? due - now : 0, 0);
}

/* Liveness: a connection with jobs out from which nothing has come for a
 * second gets a PING; if nothing at all comes in the second after it, the
 * server is gone (the upstream layer resends its jobs for free). */
static void check_liveness(struct doh_conn *conn, uint64_t now)
{
	if (now - conn->last_frame_ms < LIVENESS_MS)
		return;
	if (conn->ping_ms > conn->last_frame_ms) {
		if (now - conn->ping_ms >= LIVENESS_MS)
			close_conn(conn, TRANSPORT_CLOSED_SILENT,
				   "silent: no answer to an HTTP/2 PING within a second");
		return;
	}
	if (doh_ping(conn->h2) < 0) {
		close_conn(conn, TRANSPORT_CLOSED_BROKEN, doh_error(conn->h2));
		return;
	}
	metrics_inc(METRIC_upstream_doh_pings);
	log_debug("upstream %s: nothing received for %u ms with %u queries out: PING",
		  conn->spec->label, LIVENESS_MS, idmap_count(conn->ids));
	conn->ping_ms = now;
	loop_flush_queue(conn->loop, &conn->flush);
}

/* An idle connection kept open: a PING when nothing has come for
 * --doh-keepalive; a PING unanswered for a second means the server (or the
 * path to it) is gone, found before a query has to find it. */
static void keep_alive(struct doh_conn *conn, uint64_t now)
{
	uint64_t quiet_since =
	    conn->idle_since_ms > conn->last_frame_ms ? conn->idle_since_ms : conn->last_frame_ms;

	if (conn->ping_ms > conn->last_frame_ms) {
		if (now - conn->ping_ms >= LIVENESS_MS)
			close_conn(conn, TRANSPORT_CLOSED_SILENT,
				   "silent: an idle connection's HTTP/2 PING went unanswered "
				   "for a second");
		return;
	}
	if (now - quiet_since < conn->cfg->doh_keepalive_ms)
		return;
	if (doh_ping(conn->h2) < 0) {
		close_conn(conn, TRANSPORT_CLOSED_BROKEN, doh_error(conn->h2));
		return;
	}
	metrics_inc(METRIC_upstream_doh_pings);
	log_debug("upstream %s: idle for %u ms: keepalive PING", conn->spec->label,
		  (unsigned)(now - quiet_since));
	conn->ping_ms = now;
	loop_flush_queue(conn->loop, &conn->flush);
}

static void timer_cb(uv_timer_t *timer)
{
	struct doh_conn *conn = timer->data;
	uint64_t now = uv_now(&conn->loop->uv);

	switch (conn->state) {
	case H2_SETUP: /* the set-up's deadlines are tlsconnect's */
		return;
	case H2_READY:
	case H2_DRAINING:
		if (idmap_count(conn->ids) == 0 && keeps_alive(conn)) {
			keep_alive(conn, now);
			if (conn->state == H2_CLOSED)
				return;
		} else if (idmap_count(conn->ids) == 0) {
			if (now - conn->idle_since_ms >= conn->cfg->idle_timeout_ms) {
				close_conn(conn, TRANSPORT_CLOSED_IDLE, "idle");
				return;
			}
		} else {
			check_liveness(conn, now);
			if (conn->state == H2_CLOSED)
				return;
		}
		arm_timer(conn);
		return;
	case H2_CLOSED:
		return;
	}
}

/* -- jobs ---------------------------------------------------------------------------- */

/* Give @req a stream; false when none may open now. */
static bool start_req(struct doh_conn *conn, struct doh_req *req)
{
	int32_t id = doh_submit(conn->h2, req->msg, req->len, req);

	if (id < 0)
		return false;
	req->stream = id;
	return true;
}

/* No stream will open here again: the jobs still waiting for one go back
 * up, unprocessed (the upstream layer sends them elsewhere for free). */
static void fail_waiting(struct doh_conn *conn, const char *why)
{
	while (conn->waiting && conn->state != H2_CLOSED) {
		struct doh_req *req = conn->waiting;
		conn->waiting = req->next;
		if (!conn->waiting)
			conn->waiting_tail = &conn->waiting;
		conn->n_waiting--;
		uint16_t key = req->key;
		void *job = req->job;
		idmap_remove(conn->ids, key);
		free(req);
		metrics_inc(METRIC_upstream_doh_refused);
		conn->base.ev->failed(&conn->base, key, job, false, why);
	}
}

static void start_draining(struct doh_conn *conn, enum transport_close_reason reason,
			   const char *why)
{
	if (conn->state != H2_READY)
		return;
	conn->state = H2_DRAINING;
	conn->drain_reason = reason;
	fail_waiting(conn, why);
}

static void log_failure(struct doh_conn *conn, const char *why)
{
	/* A server answering every query with an error (a wrong path, an
	 * overload) would fill the log: one warning per connection. */
	if (!conn->warned) {
		conn->warned = true;
		log_warn("upstream %s: %s (the query tries another upstream, if any)",
			 conn->spec->label, why);
	} else {
		log_debug("upstream %s: %s", conn->spec->label, why);
	}
}

/* A stream ended: an answer to take, or a failed attempt to report. */
static void stream_ended(struct doh_conn *conn, const struct doh_event *ev)
{
	struct doh_req *req = ev->user;
	uint16_t key = req->key;
	void *job = req->job;
	bool processed = true;
	const char *why = NULL;
	char text[96];

	switch (ev->result) {
	case DOH_ANSWER: {
		struct wire_info info;
		if (doh_check_answer(ev->body, ev->body_len, ev->age, &info) != 0) {
			metrics_inc(METRIC_upstream_bad_answers);
			why = "a response that is not a DNS answer to our query (malformed, QR=0 "
			      "or ID other than 0)";
			break;
		}
		/* Taken: the upstream layer cancelled the key, which freed @req. */
		if (conn->base.ev->answer(&conn->base, key, job, ev->body, ev->body_len, &info))
			return;
		why = "an answer to another question";
		break;
	}
	case DOH_HTTP_STATUS:
		metrics_inc(METRIC_upstream_doh_status);
		snprintf(text, sizeof(text), "HTTP status %u", ev->status);
		why = text;
		break;
	case DOH_CONTENT_TYPE:
		metrics_inc(METRIC_upstream_doh_content_type);
		why = "a response that is not application/dns-message";
		break;
	case DOH_TOO_LARGE:
		metrics_inc(METRIC_upstream_doh_too_large);
		why = "a response over 65,535 bytes";
		break;
	case DOH_REFUSED:
		metrics_inc(METRIC_upstream_doh_refused);
		processed = false;
		why = "stream refused unprocessed";
		break;
	case DOH_RESET:
		metrics_inc(METRIC_upstream_doh_reset);
		snprintf(text, sizeof(text), "stream reset by the server (%s)",
			 doh_error_code_name(ev->error_code));
		why = text;
		break;
	}
	if (conn->state == H2_CLOSED || idmap_get(conn->ids, key) != req)
		return; /* orphaned or cancelled meanwhile */
	idmap_remove(conn->ids, key);
	free(req);
	if (processed)
		log_failure(conn, why);
	else
		log_debug("upstream %s: %s", conn->spec->label, why);
	conn->base.ev->failed(&conn->base, key, job, processed, why);
}

/* Whatever the session has to say: events upward, streams to the jobs that
 * wait, and the end of a connection that is done. */
static void pump(struct doh_conn *conn)
{
	struct doh_event ev;

	if (conn->in_pump || conn->state == H2_CLOSED)
		return;
	conn->in_pump = true;
	while (conn->state != H2_CLOSED && doh_next_event(conn->h2, &ev)) {
		switch (ev.type) {
		case DOH_EV_PING_ACK:
			conn->ping_ms = 0;
			conn->base.ev->alive(&conn->base);
			break;
		case DOH_EV_GOAWAY:
			metrics_inc(METRIC_upstream_doh_goaway);
			log_info("upstream %s: GOAWAY (%s, last stream %d): no new queries on this "
				 "connection",
				 conn->spec->label, doh_error_code_name(ev.error_code),
				 (int)ev.last_stream_id);
			start_draining(conn, TRANSPORT_CLOSED_BY_SERVER, "GOAWAY before a stream");
			break;
		case DOH_EV_STREAM:
			stream_ended(conn, &ev);
			break;
		}
	}
	conn->in_pump = false;
	if (conn->state == H2_CLOSED)
		return;
	bool started = false;
	while (conn->waiting && start_req(conn, conn->waiting)) {
		struct doh_req *req = conn->waiting;
		conn->waiting = req->next;
		if (!conn->waiting)
			conn->waiting_tail = &conn->waiting;
		conn->n_waiting--;
		started = true;
	}
	if (started)
		loop_flush_queue(conn->loop, &conn->flush);
	if (doh_closing(conn->h2))
		start_draining(conn, TRANSPORT_CLOSED_IDLE, "no stream IDs left");
	if (conn->state == H2_CLOSED)
		return;
	if (conn->state == H2_DRAINING && idmap_count(conn->ids) == 0) {
		close_conn(conn, conn->drain_reason, NULL);
		return;
	}
	if (doh_finished(conn->h2)) {
		close_conn(conn, TRANSPORT_CLOSED_BROKEN, doh_error(conn->h2));
		return;
	}
	arm_timer(conn);
}

/* The job's message as DoH sends it (doh_make_query()); NULL if it does
 * not parse. */
static struct doh_req *make_req(const struct doh_conn *conn, const uint8_t *msg, size_t len)
{
	struct doh_req *req = malloc(sizeof(*req) + len + DOH_QUERY_SLACK);

	require(req);
	req->len = doh_make_query(msg, len, conn->cfg->padding, req->msg, len + DOH_QUERY_SLACK);
	if (req->len == 0) {
		free(req);
		return NULL;
	}
	req->next = NULL;
	req->stream = 0;
	return req;
}

static int send_job(struct transport_conn *c, const uint8_t *msg, size_t len, void *job,
		    uint32_t *key)
{
	struct doh_conn *conn = from_base(c);
	uint16_t id;

	if (conn->state == H2_CLOSED || conn->state == H2_DRAINING || doh_closing(conn->h2))
		return -EPIPE;
	if (tlsio_backlog(&conn->tc.io) > OUT_BACKLOG_MAX)
		return -ENOSPC;
	struct doh_req *req = make_req(conn, msg, len);
	if (!req)
		return -EINVAL;
	if (idmap_alloc(conn->ids, req, &id) < 0) {
		free(req);
		return -ENOSPC;
	}
	req->job = job;
	req->key = id;
	if (conn->waiting || !start_req(conn, req)) {
		/* Every stream the server allows is taken: it waits its turn
		 * (the upstream layer sends here only when nothing else can). */
		*conn->waiting_tail = req;
		conn->waiting_tail = &req->next;
		conn->n_waiting++;
	}
	*key = id;
	if (conn->state == H2_READY) {
		loop_flush_queue(conn->loop, &conn->flush);
		arm_timer(conn);
	}
	return 0;
}

static void cancel(struct transport_conn *c, uint32_t key)
{
	struct doh_conn *conn = from_base(c);
	struct doh_req *req = key <= UINT16_MAX ? idmap_remove(conn->ids, (uint16_t)key) : NULL;

	if (!req)
		return;
	if (req->stream) {
		/* A stream still open is reset, which frees its slot at the
		 * server; one that has its answer is left alone. */
		doh_cancel(conn->h2, req->stream);
		if (conn->state == H2_READY || conn->state == H2_DRAINING)
			loop_flush_queue(conn->loop, &conn->flush);
	} else {
		struct doh_req **p = &conn->waiting;
		while (*p && *p != req)
			p = &(*p)->next;
		if (*p) {
			*p = req->next;
			if (conn->waiting_tail == &req->next)
				conn->waiting_tail = p;
			conn->n_waiting--;
		}
	}
	free(req);
	if (conn->state == H2_DRAINING && idmap_count(conn->ids) == 0 && !conn->in_pump)
		loop_flush_queue(conn->loop, &conn->flush); /* pump() there closes it */
	arm_timer(conn);
}

static unsigned load(const struct transport_conn *c)
{
	return idmap_count(((const struct doh_conn *)c)->ids);
}

static unsigned capacity(const struct transport_conn *c)
{
	struct doh_conn *conn = (struct doh_conn *)c;
	unsigned used = idmap_count(conn->ids), cap = max_reqs(conn->cfg);

	if (conn->state == H2_CLOSED || conn->state == H2_DRAINING || used >= cap ||
	    tlsio_backlog(&conn->tc.io) > OUT_BACKLOG_MAX)
		return 0;
	unsigned room = doh_room(conn->h2);
	room = room > conn->n_waiting ? room - conn->n_waiting : 0;
	return room < cap - used ? room : cap - used;
}

/* -- I/O --------------------------------------------------------------------------- */

static void append_out(struct doh_conn *conn, const uint8_t *data, size_t len)
{
	size_t need = conn->out_len + len;

	if (need > conn->out_cap) {
		size_t cap = conn->out_cap ? conn->out_cap * 2 : 4096;
		while (cap < need)
			cap *= 2;
		uint8_t *p = realloc(conn->out, cap);
		require(p);
		conn->out = p;
		conn->out_cap = cap;
	}
	memcpy(conn->out + conn->out_len, data, len);
	conn->out_len = need;
}

/* Everything the session has to send, in one TLS write.  0 or an error. */
static int write_out(struct doh_conn *conn)
{
	const uint8_t *p;
	size_t n;

	while ((n = doh_output(conn->h2, &p)) > 0)
		append_out(conn, p, n);
	if (conn->out_len == 0)
		return 0;
	int rc = tlsio_write(&conn->tc.io, conn->out, conn->out_len);
	conn->out_len = 0;
	return rc;
}

static void flush_cb(struct loop_flush *f)
{
	struct doh_conn *conn = (struct doh_conn *)((char *)f - offsetof(struct doh_conn, flush));

	if (conn->state != H2_READY && conn->state != H2_DRAINING)
		return;
	int rc = write_out(conn);
	if (rc < 0) {
		close_conn(conn, TRANSPORT_CLOSED_BROKEN,
			   rc == -EPROTO ? tls_conn_error(conn->tc.io.tls) : uv_strerror(rc));
		return;
	}
	pump(conn); /* requests not sent (after a GOAWAY), slots freed by resets */
}

static void data_cb(struct tlsconnect *tc, uint8_t *data, size_t len)
{
	struct doh_conn *conn = from_tc(tc);

	if (conn->state != H2_READY && conn->state != H2_DRAINING)
		return;
	conn->last_frame_ms = uv_now(&conn->loop->uv);
	if (doh_feed(conn->h2, data, len) < 0) {
		(void)write_out(conn); /* the GOAWAY that says why */
		close_conn(conn, TRANSPORT_CLOSED_BROKEN, doh_error(conn->h2));
		return;
	}
	pump(conn);
	if (conn->state != H2_CLOSED)
		loop_flush_queue(conn->loop, &conn->flush); /* acks, window updates */
}

static void handshaken_cb(struct tlsconnect *tc)
{
	struct doh_conn *conn = from_tc(tc);

	conn->state = H2_READY;
	tlsconnect_handshaken(tc, &conn->base, "HTTP/2");
	conn->last_frame_ms = uv_now(&conn->loop->uv);
	conn->base.ev->ready(&conn->base);
	if (conn->state != H2_READY)
		return;
	flush_cb(&conn->flush); /* the preface, and the queries that waited */
	if (conn->state == H2_READY)
		arm_timer(conn);
}

static void tc_close(struct tlsconnect *tc, enum transport_close_reason reason, const char *why)
{
	close_conn(from_tc(tc), reason, why);
}

static void freed(struct tlsconnect *tc)
{
	struct doh_conn *conn = from_tc(tc);

	doh_session_free(conn->h2);
	idmap_free(conn->ids);
	free(conn->out);
	free(conn);
}

static const struct tlsconnect_ops tlsconnect_ops = {
	.handshaken = handshaken_cb,
	.data = data_cb,
	.close = tc_close,
	.freed = freed,
};

/* :authority: the name that is authenticated, or the IP (RFC 3986: IPv6 in
 * brackets), with the port unless it is https's. */
static void make_authority(const struct options_upstream *spec, char *out, size_t cap)
{
	bool v6 = !spec->auth_name[0] && strchr(spec->ip, ':');
	char port[8] = "";

	if (spec->port != OPTIONS_DEFAULT_PORT_DOH)
		snprintf(port, sizeof(port), ":%u", spec->port);
	snprintf(out, cap, "%s%s%s%s", v6 ? "[" : "",
		 spec->auth_name[0] ? spec->auth_name : spec->ip, v6 ? "]" : "", port);
}

static struct transport_conn *open_conn(const struct transport_env *env,
					const struct options_upstream *spec, void *peer,
					const struct transport_events *ev, void *owner)
{
	struct doh_conn *conn = calloc(1, sizeof(*conn));
	char authority[OPTIONS_MAX_AUTH_NAME + 16];

	require(conn);
	make_authority(spec, authority, sizeof(authority));
	conn->h2 = doh_session_new(authority, spec->path,
				   env->cfg->doh_method == OPTIONS_DOH_GET ? DOH_GET : DOH_POST);
	require(conn->h2);
	conn->base.ops = &doh_transport;
	conn->base.ev = ev;
	conn->base.owner = owner;
	conn->loop = env->loop;
	conn->cfg = env->cfg;
	conn->spec = spec;
	conn->state = H2_SETUP;
	conn->ids = idmap_new(max_reqs(env->cfg));
	require(conn->ids);
	conn->waiting_tail = &conn->waiting;
	conn->flush.cb = flush_cb;
	/* ALPN "h2" required: a server that does not speak HTTP/2 cannot be
	 * used, authenticated or not. */
	if (tlsconnect_open(&conn->tc, env, spec, peer, "h2", &tlsconnect_ops, conn) < 0) {
		conn->state = H2_CLOSED;
		return NULL;
	}
	return &conn->base;
}

/* Close, then report: closed, and every job orphaned -- those waiting for a
 * stream, or whose request never left, were not seen by the server. */
static void close_conn(struct doh_conn *conn, enum transport_close_reason reason, const char *why)
{
	struct doh_req *orphans = NULL, **tail = &orphans, *req;
	uint16_t key;

	if (conn->state == H2_CLOSED)
		return;
	/* Say goodbye in HTTP/2 too, while the stream can carry it. */
	if (conn->tc.was_ready && reason != TRANSPORT_CLOSED_BY_SERVER &&
	    reason != TRANSPORT_CLOSED_BROKEN) {
		doh_shutdown(conn->h2);
		(void)write_out(conn);
	}
	conn->state = H2_CLOSED;
	loop_flush_cancel(conn->loop, &conn->flush);
	tlsconnect_close(&conn->tc, why, idmap_count(conn->ids));
	while ((req = idmap_pop(conn->ids, &key)) != NULL) {
		req->sent = req->stream && doh_stream_sent(conn->h2, req->stream);
		req->next = NULL;
		*tail = req;
		tail = &req->next;
	}
	conn->waiting = NULL;
	conn->waiting_tail = &conn->waiting;
	conn->n_waiting = 0;
	conn->base.ev->closed(&conn->base, reason, why);
	while (orphans) {
		req = orphans;
		orphans = req->next;
		void *job = req->job;
		bool maybe_processed = req->sent;
		free(req);
		conn->base.ev->orphaned(&conn->base, job, maybe_processed);
	}
}

static void close_op(struct transport_conn *c, const char *why)
{
	close_conn(from_base(c), TRANSPORT_CLOSED_BY_US, why);
}

const struct transport_ops doh_transport = {
	.name = "doh",
	.peer_new = tlsconnect_peer_new,
	.peer_free = tlsconnect_peer_free,
	.open = open_conn,
	.send = send_job,
	.cancel = cancel,
	.close = close_op,
	.load = load,
	.capacity = capacity,
};
