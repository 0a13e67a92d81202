/*
 * TCP listener and client sessions.  Each session reassembles frames with
 * lib/framing, so a client that sends half a frame and stalls holds only
 * its own buffer; its idle timer closes it.  Replies go out in completion
 * order; a client that stops reading its replies is closed once its
 * unsent backlog passes a bound.
 */
#include "daemon/listen_tcp.h"
#include "daemon/listen_udp.h"

#include "daemon/query.h"
#include "daemon/server.h"
#include "lib/acl.h"
#include "lib/framing.h"
#include "lib/log.h"
#include "lib/metrics.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

enum {
	MAX_WRITE_BACKLOG = 1 << 20,
	FD_RESERVE = 32, /* descriptors kept for listeners, upstreams, logs, libuv */
	WORKER_FDS = 4,	 /* each further worker's epoll and wake-up descriptors */
};

/* TCP clients open in the whole process, whichever worker accepted them:
 * --max-tcp-clients and the descriptor budget are the process's, and the
 * kernel does not spread connections over the workers evenly. */
static unsigned clients_open;

struct tcp_listener {
	uv_tcp_t tcp;
	struct server *srv;
};

struct tcp_client {
	uv_tcp_t tcp;
	uv_timer_t idle;
	struct server *srv;
	struct framing reader;
	struct query *queries; /* in flight for this client (not owned) */
	unsigned inflight;
	bool reading; /* paused while inflight reaches the cap */
	bool eof;     /* client half-closed: close once answered */
	bool closing;
	bool allowed; /* the peer is in --allow (checked once, at accept) */
	unsigned handles_open;
	struct tcp_client *prev, *next; /* srv->clients */
	char peer[INET6_ADDRSTRLEN + 8];
};

struct write_req {
	uv_write_t req;
	uint8_t data[];
};

/* Close callback for handles that are the first member of a heap object. */
static void free_cb(uv_handle_t *handle)
{
	free(handle);
}

static void client_close(struct tcp_client *c);
static void read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

const char *tcp_client_peer(const struct tcp_client *c)
{
	return c->peer;
}

static void client_closed_cb(uv_handle_t *handle)
{
	struct tcp_client *c = handle->data;

	if (--c->handles_open)
		return;
	framing_deinit(&c->reader);
	free(c);
}

static void client_close(struct tcp_client *c)
{
	struct server *srv = c->srv;

	if (c->closing)
		return;
	c->closing = true;
	for (struct query *q = c->queries; q; q = q->tcp_next)
		query_detach_client(q);
	c->queries = NULL;
	c->inflight = 0;
	if (c->prev)
		c->prev->next = c->next;
	else
		srv->clients = c->next;
	if (c->next)
		c->next->prev = c->prev;
	__atomic_sub_fetch(&clients_open, 1, __ATOMIC_RELAXED);
	uv_close((uv_handle_t *)&c->tcp, client_closed_cb);
	uv_close((uv_handle_t *)&c->idle, client_closed_cb);
}

static void idle_cb(uv_timer_t *timer)
{
	struct tcp_client *c = timer->data;

	if (c->inflight > 0)
		return; /* waiting for answers is not idleness; the reply re-arms */
	metrics_inc(METRIC_tcp_idle_closed);
	log_debug("TCP client %s idle: closing", c->peer);
	client_close(c);
}

static void touch(struct tcp_client *c)
{
	uv_timer_start(&c->idle, idle_cb, c->srv->cfg->tcp_idle_timeout_ms, 0);
}

static void alloc_cb(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
	struct tcp_client *c = handle->data;

	(void)suggested;
	*buf = uv_buf_init((char *)c->srv->read_buf, sizeof(c->srv->read_buf));
}

static int frame_cb(void *arg, uint8_t *msg, size_t len)
{
	struct tcp_client *c = arg;
	struct query_client client = { .origin = QUERY_FROM_TCP, .tcp = c };

	/* Only whole queries count as activity: a client trickling bytes that
	 * never complete a frame is idle and gets closed. */
	touch(c);
	query_receive(c->srv, &client, msg, len);
	if (c->closing)
		return 1;
	if (c->reading && c->inflight >= c->srv->cfg->max_tcp_pipeline) {
		/* Back-pressure: the rest of this chunk is still served, then we wait. */
		uv_read_stop((uv_stream_t *)&c->tcp);
		c->reading = false;
	}
	return 0;
}

static void read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
	struct tcp_client *c = stream->data;

	if (nread == 0 || c->closing)
		return;
	if (nread < 0) {
		if (nread == UV_EOF && c->inflight > 0) {
			/* Half-close after pipelining (RFC 7766 §6.2.4): answer, then close. */
			c->eof = true;
			uv_read_stop(stream);
			c->reading = false;
			return;
		}
		client_close(c);
		return;
	}
	if (framing_feed(&c->reader, (uint8_t *)buf->base, (size_t)nread, frame_cb, c) < 0)
		client_close(c);
}

static void write_cb(uv_write_t *req, int status)
{
	struct tcp_client *c = req->handle->data;

	free(req);
	if (status < 0 && !c->closing)
		client_close(c);
}

void tcp_client_track(struct tcp_client *c, struct query *q)
{
	q->tcp_prev = NULL;
	q->tcp_next = c->queries;
	if (c->queries)
		c->queries->tcp_prev = q;
	c->queries = q;
	c->inflight++;
}

static void untrack(struct tcp_client *c, struct query *q)
{
	if (q->tcp_prev)
		q->tcp_prev->tcp_next = q->tcp_next;
	else
		c->queries = q->tcp_next;
	if (q->tcp_next)
		q->tcp_next->tcp_prev = q->tcp_prev;
	q->tcp_prev = q->tcp_next = NULL;
	q->client.tcp = NULL;
	c->inflight--;
}

static void send_frame(struct tcp_client *c, const uint8_t *msg, size_t len)
{
	uint8_t prefix[2];
	uv_buf_t bufs[2] = { uv_buf_init((char *)prefix, 2),
			     uv_buf_init((char *)msg, (unsigned)len) };
	size_t total = len + 2;

	wire_write16(prefix, (uint16_t)len);
	int r = uv_try_write((uv_stream_t *)&c->tcp, bufs, 2);
	if (r == (int)total)
		return;
	if (r < 0 && r != UV_EAGAIN) {
		client_close(c);
		return;
	}
	if (c->tcp.write_queue_size > MAX_WRITE_BACKLOG) {
		log_debug("TCP client %s does not read its answers: closing", c->peer);
		client_close(c);
		return;
	}
	size_t done = r > 0 ? (size_t)r : 0;
	struct write_req *w = malloc(sizeof(*w) + total - done);
	require(w);
	uint8_t *p = w->data;
	if (done < 2) {
		memcpy(p, prefix + done, 2 - done);
		p += 2 - done;
		memcpy(p, msg, len);
	} else {
		memcpy(p, msg + (done - 2), len - (done - 2));
	}
	uv_buf_t rest = uv_buf_init((char *)w->data, (unsigned)(total - done));
	r = uv_write(&w->req, (uv_stream_t *)&c->tcp, &rest, 1, write_cb);
	if (r < 0) {
		free(w);
		client_close(c);
	}
}

void tcp_client_reply(struct tcp_client *c, struct query *q, const uint8_t *msg, size_t len)
{
	if (q)
		untrack(c, q);
	if (c->closing)
		return;
	if (msg)
		send_frame(c, msg, len);
	if (c->closing)
		return;
	touch(c);
	if (c->eof && c->inflight == 0) {
		client_close(c);
	} else if (!c->reading && !c->eof && !c->srv->draining &&
		   c->inflight < c->srv->cfg->max_tcp_pipeline) {
		if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) == 0)
			c->reading = true;
	}
}

bool tcp_client_allowed(const struct tcp_client *c)
{
	return c->allowed;
}

/* Describe the peer for logs and check it against --allow. */
static void check_peer(struct tcp_client *c, char *buf, size_t cap)
{
	struct sockaddr_storage ss;
	int len = sizeof(ss);
	char ip[INET6_ADDRSTRLEN] = "?";
	unsigned port = 0;

	c->allowed = false;
	if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
		c->allowed = acl_allows(&c->srv->cfg->allow, (struct sockaddr *)&ss);
		if (ss.ss_family == AF_INET) {
			struct sockaddr_in *a = (struct sockaddr_in *)&ss;
			inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
			port = ntohs(a->sin_port);
		} else if (ss.ss_family == AF_INET6) {
			struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
			inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
			port = ntohs(a->sin6_port);
		}
	}
	snprintf(buf, cap, "%s#%u", ip, port);
}

/*
 * Descriptors: refuse a client while a reserve is still free, rather than
 * let accept(2) fail with EMFILE, which libuv handles by closing waiting
 * connections itself, silently.  The limit is read each time: it can be
 * changed under a running process (prlimit).
 */
static bool room_for_client(struct server *srv, unsigned open)
{
	const struct config *cfg = srv->cfg;
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
		return true;
	/* Every worker has its own listeners and upstream connections. */
	rlim_t workers = cfg->workers;
	rlim_t reserve = FD_RESERVE + (workers - 1) * (WORKER_FDS + 2 * (rlim_t)cfg->n_listen) +
			 workers * cfg->n_upstream * cfg->max_connections;
	if (rl.rlim_cur > reserve && open <= rl.rlim_cur - reserve)
		return true;
	uint64_t now = uv_now(srv->loop);
	if (now - srv->fd_warned_ms >= 1000 || srv->fd_warned_ms == 0) {
		srv->fd_warned_ms = now;
		log_warn("TCP accept: too many open files for another client (descriptor limit "
			 "%llu, %u clients): closing new connections",
			 (unsigned long long)rl.rlim_cur, open - 1);
	}
	return false;
}

static void connection_cb(uv_stream_t *server, int status)
{
	struct tcp_listener *l = server->data;
	struct server *srv = l->srv;

	if (status < 0) {
		log_warn("TCP accept failed: %s", uv_strerror(status));
		return;
	}
	struct tcp_client *c = calloc(1, sizeof(*c));
	require(c);
	c->srv = srv;
	uv_tcp_init(srv->loop, &c->tcp);
	c->tcp.data = c;
	if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
		uv_close((uv_handle_t *)&c->tcp, free_cb);
		return;
	}
	unsigned open = __atomic_add_fetch(&clients_open, 1, __ATOMIC_RELAXED);
	if (open > srv->cfg->max_tcp_clients || srv->draining || !room_for_client(srv, open)) {
		__atomic_sub_fetch(&clients_open, 1, __ATOMIC_RELAXED);
		metrics_inc(METRIC_tcp_refused);
		uv_close((uv_handle_t *)&c->tcp, free_cb);
		return;
	}
	metrics_inc(METRIC_tcp_accepted);
	c->next = srv->clients;
	if (srv->clients)
		srv->clients->prev = c;
	srv->clients = c;
	c->handles_open = 2;
	uv_timer_init(srv->loop, &c->idle);
	c->idle.data = c;
	framing_init(&c->reader);
	uv_tcp_nodelay(&c->tcp, 1);
	check_peer(c, c->peer, sizeof(c->peer));
	touch(c);
	if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) < 0) {
		client_close(c);
		return;
	}
	c->reading = true;
}

struct tcp_listener *listen_tcp_start(struct server *srv, const struct options_addr *addr, int *rcp,
				      char *err, size_t errlen)
{
	struct tcp_listener *l = calloc(1, sizeof(*l));
	int rc;

	require(l);
	l->srv = srv;
	/* With the address family given, the socket exists before the bind. */
	rc = uv_tcp_init_ex(srv->loop, &l->tcp, addr->sa.ss_family);
	if (rc < 0) {
		free(l);
		*rcp = rc;
		snprintf(err, errlen, "cannot listen on %s/tcp: %s", addr->text, uv_strerror(rc));
		return NULL;
	}
	l->tcp.data = l;
	if (srv->cfg->workers > 1)
		rc = listen_share_port((uv_handle_t *)&l->tcp);
	if (rc == 0)
		rc = uv_tcp_bind(&l->tcp, (const struct sockaddr *)&addr->sa,
				 addr->sa.ss_family == AF_INET6 ? UV_TCP_IPV6ONLY : 0);
	if (rc == 0)
		rc = uv_listen((uv_stream_t *)&l->tcp, 1024, connection_cb);
	if (rc < 0) {
		*rcp = rc;
		snprintf(err, errlen, "cannot listen on %s/tcp: %s%s", addr->text, uv_strerror(rc),
			 rc == UV_EACCES ? " (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
					 : "");
		uv_close((uv_handle_t *)&l->tcp, free_cb);
		return NULL;
	}
	if (srv->worker == 0) /* the others listen on the same */
		log_info("listening on %s/tcp", addr->text);
	return l;
}

void listen_tcp_close(struct tcp_listener *l)
{
	uv_close((uv_handle_t *)&l->tcp, free_cb);
}

void listen_tcp_close_clients(struct server *srv)
{
	while (srv->clients)
		client_close(srv->clients);
}
