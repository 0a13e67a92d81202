/*
 * DoH listener.  A client is admitted like a TCP one (listen_tcp_accept:
 * the client budget and the descriptor reserve) and counted against its
 * address, has 5 seconds to finish its TLS handshake (tlsaccept) and
 * then FIRST_REQUEST_MS to complete a first request, after which the idle
 * timer applies, reset only by whole requests.  Each stream carrying a DNS
 * query becomes one query_receive() whose client handle points at a
 * struct https_stream; the reply goes back on that stream, the stream's
 * reset cancels the query (query_cancel), and the record goes at done.
 *
 * Output leaves at the end of the loop's round (one TLS write for all the
 * answers of a round).  When the kernel will not take more (a client that
 * does not read), output stops at OUT_PAUSE bytes queued and so does
 * reading, until the queue drains; what waits meanwhile is bounded by the
 * stream limit and nghttp2's flow control.
 */
#include "daemon/listen_https.h"

#include "daemon/clients.h"
#include "daemon/frontend.h"
#include "daemon/listen_tcp.h"
#include "daemon/loop.h"
#include "daemon/query.h"
#include "daemon/stream.h"
#include "daemon/tlsaccept.h"
#include "daemon/tlsio.h"
#include "lib/acl.h"
#include "lib/doh_server.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/tls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
	FIRST_REQUEST_MS = 5000,
	OUT_PAUSE = 256 * 1024,
};

struct https_listener {
	uv_tcp_t tcp;
	struct query_pool *pool;
	struct https_clients *clients;
	struct tls_ctx *const *ctx;
	uint64_t fd_warned_ms;
};

struct https_stream;

struct https_conn {
	struct tlsio io;  /* first: the tcp handle's memory */
	uv_timer_t timer; /* handshake, then first request, then idle */
	struct loop_flush flush;
	struct query_pool *pool;
	struct https_clients *all;
	struct https_conn *prev, *next; /* in all */
	struct doh_server *h2;		/* owned; NULL until the handshake */
	struct https_stream *streams;	/* queries in the core */
	union {
		struct sockaddr sa;
		struct sockaddr_in in;
		struct sockaddr_in6 in6;
		struct sockaddr_storage ss;
	} peer;
	char peer_text[64]; /* "192.0.2.1#41000", for logs */
	bool admitted;	    /* counted in tlsaccept_admit() */
	bool started;	    /* the handshake is done: the session runs */
	bool allowed;	    /* the peer is in --allow (checked once) */
	bool reading;	    /* not paused for output */
	bool closing;	    /* handles closing */
	unsigned handles;   /* open: the tcp handle and the timer */
};

/* One query in the core: what its client handle points at.  Freed at done
 * (after query_receive() returns, if done came during it). */
struct https_stream {
	struct https_conn *c;
	struct query *query; /* for query_cancel(); set once query_receive() returns */
	int32_t id;
	bool replied;
	bool in_receive; /* inside query_receive() */
	bool done;	 /* done came inside query_receive() */
	struct https_stream *prev, *next;
};

static void flush(struct https_conn *c);

static struct query_env *env_of(const struct https_conn *c)
{
	return query_pool_env(c->pool);
}

/* -- closing ------------------------------------------------------------------------ */

static void handle_closed(uv_handle_t *handle)
{
	struct https_conn *c = handle->data;

	if (--c->handles)
		return;
	doh_server_free(c->h2);
	tlsio_deinit(&c->io);
	free(c);
}

/* Close now: queries in flight are cancelled (their done comes at once),
 * the places taken at accept are given back, the handles close. */
static void conn_close(struct https_conn *c)
{
	if (c->closing)
		return;
	c->closing = true;
	if (c->prev)
		c->prev->next = c->next;
	else
		c->all->head = c->next;
	if (c->next)
		c->next->prev = c->prev;
	loop_flush_cancel(env_of(c)->loop, &c->flush);
	while (c->streams) {
		struct https_stream *st = c->streams;
		query_cancel(st->query);
		require(c->streams != st); /* its done unlinked and freed it */
	}
	if (c->admitted)
		clients_release(&c->peer.sa);
	stream_sessions_unreserve();
	uv_timer_stop(&c->timer);
	uv_close((uv_handle_t *)&c->timer, handle_closed);
	tlsio_stop(&c->io); /* close_notify, once, if the socket takes it */
	tlsio_close(&c->io, handle_closed);
}

/* Before a session: a handshake that failed or took too long. */
static void drop_unstarted(struct https_conn *c, const char *why)
{
	metrics_inc(METRIC_doh_handshake_failures);
	log_debug("DoH client %s: no session: %s", c->peer_text, why);
	conn_close(c);
}

static void touch(struct https_conn *c);

static void timer_cb(uv_timer_t *timer)
{
	struct https_conn *c = timer->data;

	if (!c->started) {
		drop_unstarted(c, "handshake not done in time");
		return;
	}
	if (c->streams) {
		touch(c); /* waiting for answers is not idleness */
		return;
	}
	metrics_inc(METRIC_doh_idle_closed);
	log_debug("DoH client %s idle: closing", c->peer_text);
	doh_server_shutdown(c->h2); /* GOAWAY: the client knows it was not an error */
	flush(c);
	conn_close(c);
}

static void touch(struct https_conn *c)
{
	uv_timer_start(&c->timer, timer_cb, env_of(c)->cfg->tcp_idle_timeout_ms, 0);
}

/* -- the frontend ops: client.conn is the stream ---------------------------------------- */

static void stream_unlink(struct https_stream *st)
{
	struct https_conn *c = st->c;

	if (st->prev)
		st->prev->next = st->next;
	else
		c->streams = st->next;
	if (st->next)
		st->next->prev = st->prev;
}

static void reply(const struct frontend_client *client, const uint8_t *msg, size_t len)
{
	struct https_stream *st = client->conn;
	struct https_conn *c = st->c;

	if (c->closing)
		return;
	/* ENOENT: reset meanwhile; its CANCELLED event is on the way. */
	if (doh_server_respond(c->h2, st->id, msg, len) == 0)
		st->replied = true;
	loop_flush_queue(env_of(c)->loop, &c->flush);
}

static void done(const struct frontend_client *client)
{
	struct https_stream *st = client->conn;
	struct https_conn *c = st->c;

	if (!st->replied && !c->closing) {
		/* The core answers every query it keeps; it drops only messages
		 * lib/doh_server does not hand out.  Still, no stream waits forever. */
		doh_server_respond_status(c->h2, st->id, 400);
		loop_flush_queue(env_of(c)->loop, &c->flush);
	}
	stream_unlink(st);
	if (st->in_receive)
		st->done = true;
	else
		free(st);
	if (!c->closing && !c->streams)
		touch(c);
}

static size_t max_reply(const struct frontend_client *client, const struct wire_info *query)
{
	(void)client, (void)query;
	return WIRE_MAX_MSG;
}

static void peer(const struct frontend_client *client, char *buf, size_t cap)
{
	const struct https_stream *st = client->conn;

	snprintf(buf, cap, "%s", st->c->peer_text);
}

static bool allowed(const struct frontend_client *client)
{
	return ((const struct https_stream *)client->conn)->c->allowed;
}

static bool encrypted(const struct frontend_client *client)
{
	(void)client;
	return true;
}

/* For dnstap: DoH, from the client's address (the address it reached is not
 * kept per connection: NULL, "unknown" to dnstap). */
static void origin(const struct frontend_client *client, struct frontend_origin *o)
{
	const struct https_stream *st = client->conn;

	o->protocol = "doh";
	o->client = st->c->peer.ss.ss_family != AF_UNSPEC ? &st->c->peer.sa : NULL;
	o->local = NULL;
}

static const struct frontend_ops doh_ops = {
	.name = "doh",
	.reply = reply,
	.done = done,
	.max_reply = max_reply,
	.peer = peer,
	.allowed = allowed,
	.encrypted = encrypted,
	.origin = origin,
	/* No edns-tcp-keepalive: HTTP/2 has its own connection management. */
};

/* -- the session ------------------------------------------------------------------------ */

static void start_query(struct https_conn *c, const struct doh_server_event *ev)
{
	struct https_stream *st = calloc(1, sizeof(*st));

	require(st);
	metrics_inc(METRIC_queries_doh);
	st->c = c;
	st->id = ev->stream_id;
	st->next = c->streams;
	if (c->streams)
		c->streams->prev = st;
	c->streams = st;
	doh_server_set_user(c->h2, st->id, st);
	struct frontend_client client = { .ops = &doh_ops, .conn = st };
	st->in_receive = true;
	struct query *q = query_receive(c->pool, &client, ev->msg, ev->len);
	st->in_receive = false;
	if (st->done) {
		free(st);
		return;
	}
	require(q); /* query_receive() returns the query whose done is still to come */
	st->query = q;
}

static void handle_events(struct https_conn *c)
{
	struct doh_server_event ev;

	while (!c->closing && doh_server_next_event(c->h2, &ev)) {
		if (ev.type == DOH_SERVER_QUERY) {
			start_query(c, &ev);
		} else {
			struct https_stream *st = ev.user;
			if (st)
				query_cancel(st->query); /* its done frees it */
		}
	}
	for (unsigned n = doh_server_take_rejected(c->h2); n; n--)
		metrics_inc(METRIC_doh_http_errors);
}

/* Write what the session has to say, unless the kernel holds too much of
 * ours already; pause reading meanwhile.  Close a session that is over. */
static void flush(struct https_conn *c)
{
	if (c->closing || !c->h2)
		return;
	while (tlsio_backlog(&c->io) <= OUT_PAUSE) {
		size_t len;
		const uint8_t *out = doh_server_output(c->h2, &len);
		if (len == 0)
			break;
		if (tlsio_write(&c->io, out, len) < 0) {
			conn_close(c);
			return;
		}
	}
	if (tlsio_backlog(&c->io) > OUT_PAUSE) {
		if (c->reading)
			tlsio_pause(&c->io);
		c->reading = false;
		return;
	}
	if (!doh_server_alive(c->h2)) {
		if (doh_server_failed(c->h2)) {
			metrics_inc(METRIC_doh_protocol_errors);
			log_debug("DoH client %s broke HTTP/2 or a limit: closing", c->peer_text);
		}
		conn_close(c);
		return;
	}
	if (!c->reading && tlsio_resume(&c->io) == 0)
		c->reading = true;
}

static void flush_cb(struct loop_flush *f)
{
	flush((struct https_conn *)((char *)f - offsetof(struct https_conn, flush)));
}

/* -- TLS -------------------------------------------------------------------------------- */

static struct https_conn *from_io(struct tlsio *io)
{
	return (struct https_conn *)((char *)io - offsetof(struct https_conn, io));
}

static void handshaken_cb(struct tlsio *io)
{
	struct https_conn *c = from_io(io);
	struct query_env *env = env_of(c);
	char alpn[16];

	metrics_inc(METRIC_doh_handshakes);
	if (tls_conn_resumed(io->tls))
		metrics_inc(METRIC_doh_resumed);
	/* The context agrees to "h2" or nothing; without ALPN, the first bytes
	 * tell (an HTTP/1 request gets a 505). */
	tls_conn_alpn(io->tls, alpn, sizeof(alpn));
	c->h2 = doh_server_new(env->cfg->https_path);
	if (!c->h2) {
		drop_unstarted(c, "out of memory");
		return;
	}
	c->started = true;
	c->reading = true;
	c->allowed = acl_allows(&env->cfg->allow, &c->peer.sa);
	log_debug("DoH client %s: session (ALPN %s)", c->peer_text, alpn[0] ? alpn : "none");
	unsigned limit = env->cfg->tcp_idle_timeout_ms < FIRST_REQUEST_MS
			     ? env->cfg->tcp_idle_timeout_ms
			     : FIRST_REQUEST_MS;
	uv_timer_start(&c->timer, timer_cb, limit, 0);
	/* Our SETTINGS in this round for h2, with the session ticket and the
	 * answers of the round (one write(2)); without ALPN, only once the
	 * client's first bytes show it speaks HTTP/2 (an HTTP/1 client gets
	 * its 505 and nothing before it). */
	if (alpn[0])
		loop_flush_queue(env->loop, &c->flush);
}

static void data_cb(struct tlsio *io, uint8_t *data, size_t len)
{
	struct https_conn *c = from_io(io);

	if (c->closing || !c->h2)
		return;
	int rc = doh_server_feed(c->h2, data, len);
	handle_events(c);
	if (rc < 0) {
		/* What the session has to say about it (GOAWAY, a 505) goes first. */
		if (rc == DOH_SERVER_EPROTO)
			metrics_inc(METRIC_doh_protocol_errors);
		log_debug("DoH client %s: %s: closing", c->peer_text,
			  rc == DOH_SERVER_EPROTO ? "not HTTP/2, or broke it" : "session failed");
		while (!c->closing) {
			size_t n;
			const uint8_t *out = doh_server_output(c->h2, &n);
			if (n == 0 || tlsio_write(&c->io, out, n) < 0)
				break;
		}
		conn_close(c);
		return;
	}
	loop_flush_queue(env_of(c)->loop, &c->flush);
}

static void ended_cb(struct tlsio *io, enum tlsio_end how, const char *why)
{
	struct https_conn *c = from_io(io);

	(void)how;
	if (!c->started)
		drop_unstarted(c, why);
	else
		conn_close(c); /* HTTP/2 has no half-close: nothing can be answered */
}

static void drained_cb(struct tlsio *io)
{
	struct https_conn *c = from_io(io);

	if (!c->reading)
		loop_flush_queue(env_of(c)->loop, &c->flush);
}

static const struct tlsio_callbacks tlsio_cbs = {
	.handshaken = handshaken_cb,
	.data = data_cb,
	.ended = ended_cb,
	.drained = drained_cb,
};

/* -- accepting -------------------------------------------------------------------------- */

static void free_cb(uv_handle_t *handle)
{
	free(handle->data);
}

static void connection_cb(uv_stream_t *server, int status)
{
	struct https_listener *l = server->data;
	struct query_env *env = query_pool_env(l->pool);

	if (status < 0) {
		log_warn("DoH accept failed: %s", uv_strerror(status));
		return;
	}
	struct https_conn *c = calloc(1, sizeof(*c));
	require(c);
	c->pool = l->pool;
	c->all = l->clients;
	c->flush.cb = flush_cb;
	require(tlsio_init(&c->io, env->loop, &tlsio_cbs) == 0); /* io.tcp.data: &c->io == c */
	if (!listen_tcp_accept(server, &c->io.tcp, l->pool, &l->fd_warned_ms))
		return;
	c->next = l->clients->head;
	if (c->next)
		c->next->prev = c;
	l->clients->head = c;
	c->handles = 2;
	uv_timer_init(&env->loop->uv, &c->timer);
	c->timer.data = c;
	bool admitted = tlsaccept_admit(&c->io.tcp, &c->peer.ss, env->cfg);
	if (c->peer.sa.sa_family != AF_UNSPEC)
		frontend_addr_text(&c->peer.sa, c->peer_text, sizeof(c->peer_text));
	else
		snprintf(c->peer_text, sizeof(c->peer_text), "?");
	if (!admitted) {
		log_debug("DoH client %s: --max-clients-per-address reached", c->peer_text);
		conn_close(c);
		return;
	}
	c->admitted = true;
	metrics_inc(METRIC_doh_accepted);
	const char *why = tlsaccept_start(&c->io, *l->ctx, &c->timer, timer_cb, env->cfg);
	if (why && !c->closing)
		drop_unstarted(c, why);
}

struct https_listener *listen_https_start(struct query_pool *pool, struct https_clients *clients,
					  struct tls_ctx *const *ctx,
					  const struct options_addr *addr, bool share, int *rcp,
					  char *err, size_t errlen)
{
	struct https_listener *l = calloc(1, sizeof(*l));

	require(l);
	l->pool = pool;
	l->clients = clients;
	l->ctx = ctx;
	*rcp = listen_stream_socket(query_pool_env(pool)->loop, &l->tcp, addr, share, connection_cb,
				    "https", err, errlen);
	return *rcp < 0 ? NULL : l;
}

void listen_https_close(struct https_listener *l)
{
	uv_close((uv_handle_t *)&l->tcp, free_cb);
}

void listen_https_drain(struct https_clients *all)
{
	for (struct https_conn *c = all->head, *next; c; c = next) {
		next = c->next;
		if (!c->started)
			continue;
		doh_server_shutdown(c->h2);
		loop_flush_queue(env_of(c)->loop, &c->flush);
	}
}

void listen_https_close_all(struct https_clients *all)
{
	while (all->head) {
		struct https_conn *c = all->head;
		flush(c); /* the last answers (SERVFAIL at shutdown) go first */
		conn_close(c);
	}
}
