/*
 * One plain-DNS "connection": the exchanges in flight with one upstream,
 * each with a connected UDP socket of its own (then a TCP one after TC=1),
 * found by its DNS ID in an idmap.  Nothing is batched: every exchange has
 * its own socket, so send() writes the datagram itself and a flush hook
 * would have nothing to gather.  The connection's one timer is first a
 * 0 ms check for probes, then the set-up deadline while nothing has been
 * answered, then the idle timeout while nothing is in flight.
 */
#include "daemon/plain.h"

#include "daemon/loop.h"
#include "lib/framing.h"
#include "lib/idmap.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/wire.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

enum {
	MIN_SETUP_MS = 100,
};

enum plain_state {
	PLAIN_OPEN,  /* nothing answered yet: it has not worked */
	PLAIN_READY, /* the server answered one of its exchanges */
	PLAIN_CLOSED,
};

enum xfer_state {
	XFER_UDP,    /* the query went out over UDP; waiting */
	XFER_TCP,    /* the answer was truncated: asking again over TCP */
	XFER_STUCK,  /* TCP failed and the truncated answer was not taken: until cancel */
	XFER_CLOSED, /* cancelled, or its connection closed; freed once its handles are */
};

/* One query in flight: its sockets, its ID, its job. */
struct xfer {
	struct plain_conn *conn;
	struct xfer *prev, *next; /* the connection's exchanges, oldest first */
	struct xfer *orphan_next; /* close_conn's list of jobs to report */
	void *job;		  /* the upstream layer's (borrowed) */
	uint16_t id;		  /* the DNS ID, our key */
	enum xfer_state state;
	bool written;		 /* the datagram left: the server may have processed it */
	bool refused;		 /* ICMP port unreachable: the server did not */
	bool udp_open, tcp_open; /* handles initialised and not yet closed (tcp: and its timer) */
	unsigned handles;	 /* handles whose close callback is still due */
	uint64_t sent_ms;	 /* uv_now() when sent */
	uv_udp_t udp;		 /* connected to the upstream: a random source port */
	uv_udp_send_t send_req;	 /* only when the datagram could not leave at once */
	uv_tcp_t tcp;		 /* after TC=1 */
	uv_timer_t tcp_timer;	 /* how long TCP may take */
	uv_connect_t connect_req;
	uv_write_t write_req;
	struct framing reader; /* the answer over TCP */
	uint8_t *truncated;    /* owned: the TC=1 answer, reported if TCP fails */
	size_t truncated_len;
	size_t len;	 /* of the query */
	uint8_t frame[]; /* 2-byte length, then the query with our ID */
};

struct plain_conn {
	struct transport_conn base; /* first: the upstream layer's view */
	struct loop *loop;
	const struct config *cfg;
	const struct options_upstream *spec;
	enum plain_state state;
	bool ever_sent;	   /* a job was offered: not a probe */
	struct idmap *ids; /* owned; DNS ID -> struct xfer */
	struct xfer *first, *last;
	uv_timer_t timer;
	unsigned live; /* the timer and the exchanges not freed yet; freed at 0 once closed */
};

static void close_conn(struct plain_conn *conn, enum transport_close_reason reason,
		       const char *why);
static void timer_cb(uv_timer_t *timer);

static struct plain_conn *from_base(struct transport_conn *c)
{
	return (struct plain_conn *)c;
}

static unsigned max_inflight(const struct config *cfg)
{
	return cfg->max_inflight < PLAIN_MAX_INFLIGHT ? cfg->max_inflight : PLAIN_MAX_INFLIGHT;
}

/* Half the query deadline, as for a DoT handshake: a dead upstream leaves
 * time to try the next one. */
static unsigned setup_limit_ms(const struct config *cfg)
{
	unsigned limit = cfg->timeout_ms / 2;

	return limit < MIN_SETUP_MS ? MIN_SETUP_MS : limit;
}

/* Nothing is kept across connections; peer_new() must not return NULL. */
static char no_peer;

static void *peer_new(const struct options_upstream *spec)
{
	(void)spec;
	return &no_peer;
}

static void peer_free(void *peer)
{
	(void)peer;
}

static void maybe_free(struct plain_conn *conn)
{
	if (conn->state != PLAIN_CLOSED || conn->live)
		return;
	idmap_free(conn->ids);
	free(conn);
}

static void timer_closed_cb(uv_handle_t *handle)
{
	struct plain_conn *conn = handle->data;

	conn->live--;
	maybe_free(conn);
}

static void xfer_handle_closed_cb(uv_handle_t *handle)
{
	struct xfer *x = handle->data;
	struct plain_conn *conn = x->conn;

	if (--x->handles)
		return;
	framing_deinit(&x->reader);
	free(x->truncated);
	free(x);
	conn->live--;
	maybe_free(conn);
}

/* Forget @x: off the list, its sockets closed (a late answer is dropped by
 * the kernel).  Its memory stays until the handles' close callbacks, so a
 * callback of @x that led here may go on reading it. */
static void xfer_close(struct xfer *x)
{
	struct plain_conn *conn = x->conn;

	if (x->state == XFER_CLOSED)
		return;
	x->state = XFER_CLOSED;
	if (x->prev)
		x->prev->next = x->next;
	else
		conn->first = x->next;
	if (x->next)
		x->next->prev = x->prev;
	else
		conn->last = x->prev;
	x->prev = x->next = NULL;
	if (x->udp_open) {
		uv_udp_recv_stop(&x->udp);
		uv_close((uv_handle_t *)&x->udp, xfer_handle_closed_cb);
		x->udp_open = false;
	}
	if (x->tcp_open) {
		uv_close((uv_handle_t *)&x->tcp, xfer_handle_closed_cb);
		uv_close((uv_handle_t *)&x->tcp_timer, xfer_handle_closed_cb);
		x->tcp_open = false;
	}
}

/* The timer for what the connection waits for now: the idle timeout when
 * nothing is in flight; while nothing has been answered, the set-up
 * deadline of the oldest exchange; none otherwise (the upstream layer
 * watches a ready connection for silence). */
static void arm_timer(struct plain_conn *conn)
{
	if (conn->state == PLAIN_CLOSED)
		return;
	if (!conn->first) {
		uv_timer_start(&conn->timer, timer_cb, conn->cfg->idle_timeout_ms, 0);
		return;
	}
	if (conn->state == PLAIN_READY) {
		uv_timer_stop(&conn->timer);
		return;
	}
	uint64_t due = conn->first->sent_ms + setup_limit_ms(conn->cfg);
	uint64_t now = uv_now(&conn->loop->uv);
	uv_timer_start(&conn->timer, timer_cb, due > now ? due - now : 0, 0);
}

static void set_ready(struct plain_conn *conn)
{
	if (conn->state != PLAIN_OPEN)
		return;
	conn->state = PLAIN_READY;
	log_debug("upstream %s: answering", conn->spec->label);
	conn->base.ev->ready(&conn->base);
	arm_timer(conn);
}

static void timer_cb(uv_timer_t *timer)
{
	struct plain_conn *conn = timer->data;

	if (conn->state == PLAIN_CLOSED)
		return;
	if (!conn->first) {
		if (!conn->ever_sent) {
			/* Opened with nothing to send: a probe of a down upstream.
			 * Plain DNS cannot check a server without asking it
			 * something, and a name of our own could leave the zone:
			 * say it may be tried again, and let the next query be
			 * the probe (on a connection of its own, which has to
			 * work before it is ready). */
			log_debug("upstream %s: probe: the next query will tell",
				  conn->spec->label);
			set_ready(conn);
			if (conn->state == PLAIN_CLOSED)
				return;
		}
		close_conn(conn, TRANSPORT_CLOSED_IDLE, NULL);
		return;
	}
	if (conn->state == PLAIN_OPEN &&
	    uv_now(&conn->loop->uv) - conn->first->sent_ms >= setup_limit_ms(conn->cfg)) {
		char text[64];
		snprintf(text, sizeof(text), "no answer within %u ms", setup_limit_ms(conn->cfg));
		close_conn(conn, TRANSPORT_CLOSED_FAILED, text);
		return;
	}
	arm_timer(conn);
}

static void alloc_cb(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
	struct xfer *x = handle->data;
	struct loop_scratch *scratch = x->conn->loop->scratch;

	(void)suggested;
	*buf = uv_buf_init((char *)scratch->read, sizeof(scratch->read));
}

static bool same_address(const struct sockaddr *a, const struct sockaddr_storage *b)
{
	if (a->sa_family != b->ss_family)
		return false;
	if (a->sa_family == AF_INET) {
		const struct sockaddr_in *x = (const struct sockaddr_in *)a;
		const struct sockaddr_in *y = (const struct sockaddr_in *)b;
		return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	if (a->sa_family == AF_INET6) {
		const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)a;
		const struct sockaddr_in6 *y = (const struct sockaddr_in6 *)b;
		return x->sin6_port == y->sin6_port &&
		       memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
	}
	return false;
}

/* The question of @info is the one @x asked. */
static bool same_question(const struct xfer *x, const struct wire_info *info)
{
	struct wire_info query;

	return wire_parse(x->frame + 2, x->len, &query) == 0 &&
	       wire_question_equal(&query.q, &info->q);
}

/* An error on @x's UDP socket: an ICMP error the kernel reported on the
 * connected socket, or a failed send.  It says something about the server,
 * not about this query: the connection closes. */
static void udp_failed(struct xfer *x, int err)
{
	struct plain_conn *conn = x->conn;
	bool worked = conn->state == PLAIN_READY;

	x->refused = err == UV_ECONNREFUSED;
	close_conn(conn,
		   !worked	? TRANSPORT_CLOSED_FAILED
		   : x->refused ? TRANSPORT_CLOSED_BY_SERVER
				: TRANSPORT_CLOSED_BROKEN,
		   !x->refused ? uv_strerror(err)
		   : worked    ? "port unreachable (ICMP): no DNS server there any more"
			       : "port unreachable (ICMP): no DNS server there");
}

/* TCP after a truncated answer failed: report the truncated answer, which
 * is the server's own and matched (ID, address, question).  Failing the
 * query instead would have it resent (for free, on a connection that
 * answered before) into the same failure, over and over until its deadline;
 * the client gets TC=1 and the records that fitted, and the query core does
 * not cache a truncated answer. */
static void tcp_failed(struct xfer *x, int err)
{
	struct plain_conn *conn = x->conn;
	struct wire_info info;

	if (x->state != XFER_TCP)
		return;
	x->state = XFER_STUCK;
	if (x->tcp_open) {
		uv_read_stop((uv_stream_t *)&x->tcp);
		uv_timer_stop(&x->tcp_timer);
	}
	log_warn("upstream %s: no answer over TCP after a truncated one (%s); passing the "
		 "truncated answer on",
		 conn->spec->label, err == UV_EOF ? "closed" : uv_strerror(err));
	if (wire_parse(x->truncated, x->truncated_len, &info) == 0)
		conn->base.ev->answer(&conn->base, x->id, x->job, x->truncated, x->truncated_len,
				      &info);
}

static void tcp_written_cb(uv_write_t *req, int status)
{
	struct xfer *x = req->data;

	if (status < 0)
		tcp_failed(x, status);
}

/* Length prefix and query in one write (RFC 7766 §8). */
static int write_frame(struct xfer *x)
{
	uv_buf_t buf = uv_buf_init((char *)x->frame, (unsigned)(x->len + 2));
	int n = uv_try_write((uv_stream_t *)&x->tcp, &buf, 1);

	if (n == UV_EAGAIN)
		n = 0;
	if (n < 0)
		return n;
	if ((size_t)n == x->len + 2)
		return 0;
	buf.base += n;
	buf.len -= (size_t)n;
	x->write_req.data = x;
	return uv_write(&x->write_req, (uv_stream_t *)&x->tcp, &buf, 1, tcp_written_cb);
}

static void on_response(struct xfer *x, uint8_t *msg, size_t len, bool over_tcp);

static int tcp_frame_cb(void *arg, uint8_t *msg, size_t len)
{
	struct xfer *x = arg;

	on_response(x, msg, len, true);
	return x->state != XFER_TCP;
}

static void tcp_read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
	struct xfer *x = stream->data;

	if (x->state != XFER_TCP)
		return;
	if (nread < 0) {
		tcp_failed(x, (int)nread);
		return;
	}
	if (framing_feed(&x->reader, (uint8_t *)buf->base, (size_t)nread, tcp_frame_cb, x) ==
	    -ENOMEM)
		tcp_failed(x, UV_ENOMEM);
}

static void tcp_connect_cb(uv_connect_t *req, int status)
{
	struct xfer *x = req->data;
	int rc;

	if (x->state != XFER_TCP)
		return;
	if (status < 0) {
		metrics_inc(METRIC_upstream_connect_failures);
		tcp_failed(x, status);
		return;
	}
	uv_tcp_nodelay(&x->tcp, 1);
	rc = uv_read_start((uv_stream_t *)&x->tcp, alloc_cb, tcp_read_cb);
	if (rc == 0)
		rc = write_frame(x);
	if (rc < 0)
		tcp_failed(x, rc);
}

static void tcp_timer_cb(uv_timer_t *timer)
{
	tcp_failed(timer->data, UV_ETIMEDOUT);
}

/* TC=1 over UDP: the same query (same ID) over TCP to the same address,
 * on a connection of its own that closes with the exchange, within half
 * the query timeout (a firewall that drops TCP must not cost all of it). */
static void retry_over_tcp(struct xfer *x, const uint8_t *msg, size_t len)
{
	struct plain_conn *conn = x->conn;

	x->truncated = malloc(len);
	require(x->truncated);
	memcpy(x->truncated, msg, len);
	x->truncated_len = len;
	x->state = XFER_TCP;
	int rc = uv_tcp_init(&conn->loop->uv, &x->tcp);
	if (rc < 0) {
		tcp_failed(x, rc); /* the UDP handle stays until the exchange closes */
		return;
	}
	uv_timer_init(&conn->loop->uv, &x->tcp_timer);
	x->tcp.data = x;
	x->tcp_timer.data = x;
	x->tcp_open = true;
	x->handles += 2;
	uv_timer_start(&x->tcp_timer, tcp_timer_cb, setup_limit_ms(conn->cfg), 0);
	uv_udp_recv_stop(&x->udp);
	uv_close((uv_handle_t *)&x->udp, xfer_handle_closed_cb);
	x->udp_open = false;
	metrics_inc(METRIC_upstream_connects);
	log_debug("upstream %s: truncated answer to ID %u; asking again over TCP",
		  conn->spec->label, x->id);
	x->connect_req.data = x;
	rc = uv_tcp_connect(&x->connect_req, &x->tcp, (const struct sockaddr *)&conn->spec->addr.sa,
			    tcp_connect_cb);
	if (rc < 0) {
		metrics_inc(METRIC_upstream_connect_failures);
		tcp_failed(x, rc);
	}
}

/* A message from the upstream's address for @x: it is an answer to @x only
 * with @x's ID (answers are never matched across exchanges: the source port
 * is half of what a forger must guess).  The upstream layer checks the
 * question of what is reported. */
static void on_response(struct xfer *x, uint8_t *msg, size_t len, bool over_tcp)
{
	struct plain_conn *conn = x->conn;
	struct wire_info info;

	if (wire_parse(msg, len, &info) != 0 || !(info.flags & WIRE_FLAG_QR)) {
		metrics_inc(METRIC_upstream_bad_answers);
		log_debug("upstream %s: ignoring a malformed message of %zu bytes",
			  conn->spec->label, len);
		return;
	}
	if (info.id != x->id) {
		metrics_inc(METRIC_upstream_unmatched);
		log_debug("upstream %s: dropping an answer with ID %u (the query had %u)",
			  conn->spec->label, info.id, x->id);
		return;
	}
	set_ready(conn);
	if (x->state == XFER_CLOSED)
		return;
	if (!over_tcp && (info.flags & WIRE_FLAG_TC)) {
		if (!same_question(x, &info)) {
			metrics_inc(METRIC_upstream_unmatched);
			log_debug("upstream %s: dropping a truncated answer to another question",
				  conn->spec->label);
			return;
		}
		/* An answer, if not the whole one: the server is there, and the
		 * connection must not look silent while TCP fetches the rest. */
		conn->base.ev->alive(&conn->base);
		if (x->state == XFER_CLOSED)
			return;
		retry_over_tcp(x, msg, len);
		return;
	}
	/* Taken: the upstream layer cancelled the key, which closed @x. */
	conn->base.ev->answer(&conn->base, x->id, x->job, msg, len, &info);
}

static void udp_recv_cb(uv_udp_t *udp, ssize_t nread, const uv_buf_t *buf,
			const struct sockaddr *from, unsigned flags)
{
	struct xfer *x = udp->data;

	if (x->state != XFER_UDP)
		return;
	if (nread < 0) {
		udp_failed(x, (int)nread);
		return;
	}
	if (!from)
		return; /* nothing more to read */
	/* The kernel drops datagrams from other addresses on a connected
	 * socket; checked again here, for nothing else may be believed. */
	if (!same_address(from, &x->conn->spec->addr.sa)) {
		metrics_inc(METRIC_upstream_unmatched);
		log_debug("upstream %s: dropping a datagram from another address",
			  x->conn->spec->label);
		return;
	}
	if (flags & UV_UDP_PARTIAL) {
		metrics_inc(METRIC_upstream_bad_answers);
		return;
	}
	on_response(x, (uint8_t *)buf->base, (size_t)nread, false);
}

static void udp_sent_cb(uv_udp_send_t *req, int status)
{
	struct xfer *x = req->handle->data;

	if (status < 0 && status != UV_ECANCELED && x->state == XFER_UDP)
		udp_failed(x, status);
}

static int send_datagram(struct xfer *x)
{
	uv_buf_t buf = uv_buf_init((char *)x->frame + 2, (unsigned)x->len);
	int rc = uv_udp_try_send(&x->udp, &buf, 1, NULL);

	if (rc >= 0) {
		x->written = true;
		return 0;
	}
	if (rc != UV_EAGAIN)
		return rc;
	/* A new socket's buffer is full only under memory pressure: queue it. */
	rc = uv_udp_send(&x->send_req, &x->udp, &buf, 1, NULL, udp_sent_cb);
	x->written = rc == 0; /* may have left: the server may see it */
	return rc;
}

static int send_job(struct transport_conn *c, const uint8_t *msg, size_t len, void *job,
		    uint32_t *key)
{
	struct plain_conn *conn = from_base(c);
	const struct options_upstream *spec = conn->spec;
	struct wire_info info;
	uint16_t id;
	int rc;

	if (conn->state == PLAIN_CLOSED)
		return -EPIPE;
	conn->ever_sent = true;
	if (len < WIRE_HEADER_LEN || len > WIRE_MAX_MSG)
		return -EINVAL;
	struct xfer *x = calloc(1, sizeof(*x) + 2 + len);
	require(x);
	memcpy(x->frame + 2, msg, len);
	/* RFC 7828 §3.2.1: no edns-tcp-keepalive over UDP; and padding hides
	 * nothing in cleartext.  Both go (the TCP retry is a one-off too). */
	if (wire_parse(x->frame + 2, len, &info) == 0)
		len = wire_filter_opt(x->frame + 2, len, &info);
	rc = idmap_alloc(conn->ids, x, &id);
	if (rc < 0) {
		free(x);
		return rc;
	}
	wire_write16(x->frame, (uint16_t)len);
	wire_set_id(x->frame + 2, id);
	x->conn = conn;
	x->job = job;
	x->id = id;
	x->len = len;
	framing_init(&x->reader);
	rc = uv_udp_init_ex(&conn->loop->uv, &x->udp, spec->addr.sa.ss_family);
	if (rc < 0) {
		log_warn("upstream %s: cannot open a UDP socket: %s", spec->label, uv_strerror(rc));
		idmap_remove(conn->ids, id);
		free(x);
		return rc;
	}
	x->udp.data = x;
	x->udp_open = true;
	x->handles = 1;
	conn->live++;
	x->prev = conn->last;
	if (conn->last)
		conn->last->next = x;
	else
		conn->first = x;
	conn->last = x;
	x->state = XFER_UDP;
	x->sent_ms = uv_now(&conn->loop->uv);
	/* connect(2) binds the socket to a port the kernel picks at random. */
	rc = uv_udp_connect(&x->udp, (const struct sockaddr *)&spec->addr.sa);
	if (rc == 0)
		rc = uv_udp_recv_start(&x->udp, alloc_cb, udp_recv_cb);
	if (rc == 0)
		rc = send_datagram(x);
	if (rc < 0) {
		log_warn("upstream %s: cannot send: %s", spec->label, uv_strerror(rc));
		idmap_remove(conn->ids, id);
		xfer_close(x);
		arm_timer(conn);
		return rc;
	}
	*key = id;
	arm_timer(conn);
	return 0;
}

static void cancel(struct transport_conn *c, uint32_t key)
{
	struct plain_conn *conn = from_base(c);
	struct xfer *x = key <= UINT16_MAX ? idmap_remove(conn->ids, (uint16_t)key) : NULL;

	if (!x)
		return;
	xfer_close(x);
	arm_timer(conn);
}

static unsigned load(const struct transport_conn *c)
{
	return idmap_count(((const struct plain_conn *)c)->ids);
}

static unsigned capacity(const struct transport_conn *c)
{
	const struct plain_conn *conn = (const struct plain_conn *)c;
	unsigned cap = max_inflight(conn->cfg);
	unsigned used = idmap_count(conn->ids);

	return conn->state == PLAIN_CLOSED || used >= cap ? 0 : cap - used;
}

static struct transport_conn *open_conn(const struct transport_env *env,
					const struct options_upstream *spec, void *peer,
					const struct transport_events *ev, void *owner)
{
	struct plain_conn *conn = calloc(1, sizeof(*conn));

	(void)peer;
	require(conn);
	conn->base.ops = &plain_transport;
	conn->base.ev = ev;
	conn->base.owner = owner;
	conn->loop = env->loop;
	conn->cfg = env->cfg;
	conn->spec = spec;
	conn->state = PLAIN_OPEN;
	conn->ids = idmap_new(max_inflight(env->cfg));
	require(conn->ids);
	uv_timer_init(&env->loop->uv, &conn->timer);
	conn->timer.data = conn;
	conn->live = 1;
	/* After this round: a connection given no job by then is a probe. */
	uv_timer_start(&conn->timer, timer_cb, 0, 0);
	return &conn->base;
}

/* Close, then report: closed, and every job in flight orphaned -- as
 * processed unless its datagram never left or the server refused it. */
static void close_conn(struct plain_conn *conn, enum transport_close_reason reason, const char *why)
{
	struct xfer *orphans = NULL, **tail = &orphans;

	if (conn->state == PLAIN_CLOSED)
		return;
	/* At info level: the upstream layer says once, at warning level, that
	 * the upstream is down and why. */
	if (why)
		log_info("upstream %s: closed: %s (%u queries in flight)", conn->spec->label, why,
			 idmap_count(conn->ids));
	conn->state = PLAIN_CLOSED;
	uv_timer_stop(&conn->timer);
	uv_close((uv_handle_t *)&conn->timer, timer_closed_cb);
	while (conn->first) {
		struct xfer *x = conn->first;
		idmap_remove(conn->ids, x->id);
		xfer_close(x);
		*tail = x;
		tail = &x->orphan_next;
	}
	conn->base.ev->closed(&conn->base, reason, why);
	for (struct xfer *x = orphans; x; x = x->orphan_next)
		conn->base.ev->orphaned(&conn->base, x->job, x->written && !x->refused);
}

static void close_op(struct transport_conn *c, const char *why)
{
	close_conn(from_base(c), TRANSPORT_CLOSED_BY_US, why);
}

const struct transport_ops plain_transport = {
	.name = "plain",
	.peer_new = peer_new,
	.peer_free = peer_free,
	.open = open_conn,
	.send = send_job,
	.cancel = cancel,
	.close = close_op,
	.load = load,
	.capacity = capacity,
};
