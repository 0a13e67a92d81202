/*
 * DoT listener.  A client is admitted like a TCP one (listen_tcp_accept:
 * the client budget and the descriptor reserve) and by its address, then
 * has 5 seconds to complete its TLS handshake (tlsaccept) -- a connection
 * that never does costs a descriptor for that long, not for the idle
 * timeout -- and only then
 * becomes a stream session, whose idle timer covers the wait for the first
 * query.  Replies are framed into one buffer so that each leaves as one
 * TLS record.
 */
#include "daemon/listen_tls.h"

#include "daemon/clients.h"
#include "daemon/frontend.h"
#include "daemon/listen_tcp.h"
#include "daemon/query.h"
#include "daemon/stream.h"
#include "daemon/tlsaccept.h"
#include "daemon/tlsio.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/tls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct tls_client;

struct tls_listener {
	uv_tcp_t tcp;
	struct query_pool *pool;
	struct stream_sessions *sessions;
	struct tls_ctx *const *ctx;
	uint64_t fd_warned_ms;
	struct tls_client *pending; /* clients still in their handshake */
};

struct tls_client {
	struct tlsio io; /* first: the tcp handle's memory */
	uv_timer_t timer;
	struct stream_session session;
	struct stream_sessions *sessions;
	struct query_pool *pool;
	struct tls_listener *listener;	/* while in the handshake */
	struct tls_client *prev, *next; /* in listener->pending */
	struct sockaddr_storage peer;	/* counted in tlsaccept_admit() when admitted */
	bool admitted;
	bool started;	  /* the handshake is done: the session runs */
	bool closing;	  /* handles closing */
	unsigned handles; /* open: the tcp handle and the timer */
};

static const struct stream_pipe_ops tls_pipe;

static void client_free(struct tls_client *c)
{
	if (c->admitted)
		clients_release((struct sockaddr *)&c->peer);
	tlsio_deinit(&c->io);
	free(c);
}

/* Both handles' data point at the client (the tcp handle's at c->io, its
 * first member). */
static void client_handle_closed(uv_handle_t *handle)
{
	struct tls_client *c = handle->data;

	if (--c->handles)
		return;
	if (c->started) {
		stream_session_closed(&c->session); /* releases it through pipe_release */
		return;
	}
	client_free(c);
}

static void close_handles(struct tls_client *c)
{
	if (c->closing)
		return;
	c->closing = true;
	uv_timer_stop(&c->timer);
	c->timer.data = c;
	uv_close((uv_handle_t *)&c->timer, client_handle_closed);
	tlsio_close(&c->io, client_handle_closed);
}

/* Out of the listener's pending list: the handshake is over, one way or
 * the other. */
static void unlink_pending(struct tls_client *c)
{
	if (!c->listener)
		return;
	if (c->prev)
		c->prev->next = c->next;
	else
		c->listener->pending = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->listener = NULL;
	c->prev = c->next = NULL;
}

/* Before the session: a handshake that failed or took too long.  The
 * client's place in the budget goes back here (later, the session's). */
static void drop_unstarted(struct tls_client *c, const char *why)
{
	unlink_pending(c);
	metrics_inc(METRIC_dot_handshake_failures);
	log_debug("DoT client: no session: %s", why);
	stream_sessions_unreserve();
	close_handles(c);
}

static void handshake_timer_cb(uv_timer_t *timer)
{
	struct tls_client *c = timer->data;

	if (!c->started)
		drop_unstarted(c, "handshake not done in time");
}

static struct tls_client *from_io(struct tlsio *io)
{
	return (struct tls_client *)((char *)io - offsetof(struct tls_client, io));
}

static void handshaken_cb(struct tlsio *io)
{
	struct tls_client *c = from_io(io);
	struct sockaddr_storage local;
	int local_len = sizeof(local);

	uv_timer_stop(&c->timer);
	unlink_pending(c);
	metrics_inc(METRIC_dot_handshakes);
	if (tls_conn_resumed(io->tls))
		metrics_inc(METRIC_dot_resumed);
	bool known = c->peer.ss_family != AF_UNSPEC;
	bool local_known = uv_tcp_getsockname(&io->tcp, (struct sockaddr *)&local, &local_len) == 0;
	c->started = true;
	stream_session_init(&c->session, c->sessions, c->pool, &tls_pipe, c,
			    known ? (struct sockaddr *)&c->peer : NULL,
			    local_known ? (struct sockaddr *)&local : NULL);
}

static void data_cb(struct tlsio *io, uint8_t *data, size_t len)
{
	struct tls_client *c = from_io(io);

	if (c->started)
		stream_session_data(&c->session, data, len);
}

static void ended_cb(struct tlsio *io, enum tlsio_end how, const char *why)
{
	struct tls_client *c = from_io(io);

	if (!c->started)
		drop_unstarted(c, why);
	else if (how == TLSIO_END_EOF)
		stream_session_eof(&c->session);
	else
		stream_session_close(&c->session);
}

static const struct tlsio_callbacks tlsio_cbs = {
	.handshaken = handshaken_cb,
	.data = data_cb,
	.ended = ended_cb,
};

/* -- the carrier of a stream session ---------------------------------------------- */

static int pipe_write(void *pipe, const uint8_t prefix[2], const uint8_t *msg, size_t len)
{
	struct tls_client *c = pipe;
	int rc;

	/* The tlsio coalesces (connection_cb): both parts go into the round's
	 * buffer and leave in one TLS record, so no framed copy is needed. */
	rc = tlsio_write(&c->io, prefix, 2);
	return rc < 0 ? rc : tlsio_write(&c->io, msg, len);
}

static size_t pipe_backlog(const void *pipe)
{
	return tlsio_backlog(&((const struct tls_client *)pipe)->io);
}

static void pipe_pause(void *pipe)
{
	tlsio_pause(&((struct tls_client *)pipe)->io);
}

static int pipe_resume(void *pipe)
{
	return tlsio_resume(&((struct tls_client *)pipe)->io);
}

static void pipe_close(void *pipe)
{
	struct tls_client *c = pipe;

	tlsio_stop(&c->io); /* close_notify, once, if the socket takes it */
	close_handles(c);
}

static void pipe_release(void *pipe)
{
	client_free(pipe);
}

static const struct stream_pipe_ops tls_pipe = {
	.name = "dot",
	.queries_metric = METRIC_queries_dot,
	.encrypted = true,
	.write = pipe_write,
	.backlog = pipe_backlog,
	.pause = pipe_pause,
	.resume = pipe_resume,
	.close = pipe_close,
	.release = pipe_release,
};

/* -- accepting ------------------------------------------------------------------- */

static void free_cb(uv_handle_t *handle)
{
	free(handle->data);
}

static void connection_cb(uv_stream_t *server, int status)
{
	struct tls_listener *l = server->data;
	struct query_env *env = query_pool_env(l->pool);

	if (status < 0) {
		log_warn("DoT accept failed: %s", uv_strerror(status));
		return;
	}
	struct tls_client *c = calloc(1, sizeof(*c));
	require(c);
	c->sessions = l->sessions;
	c->pool = l->pool;
	require(tlsio_init(&c->io, env->loop, &tlsio_cbs) == 0); /* io.tcp.data: &c->io == c */
	tlsio_coalesce(&c->io); /* a round's answers: one record, one write(2) */
	if (!listen_tcp_accept(server, &c->io.tcp, l->pool, &l->fd_warned_ms))
		return;
	if (!tlsaccept_admit(&c->io.tcp, &c->peer, env->cfg)) {
		stream_sessions_unreserve();
		c->io.tcp.data = c;
		uv_close((uv_handle_t *)&c->io.tcp, free_cb);
		return;
	}
	c->admitted = true;
	metrics_inc(METRIC_dot_accepted);
	c->listener = l;
	c->next = l->pending;
	if (l->pending)
		l->pending->prev = c;
	l->pending = c;
	c->handles = 2;
	uv_timer_init(&env->loop->uv, &c->timer);
	c->timer.data = c;
	const char *why = tlsaccept_start(&c->io, *l->ctx, &c->timer, handshake_timer_cb, env->cfg);
	if (why && !c->closing)
		drop_unstarted(c, why);
}

struct tls_listener *listen_tls_start(struct query_pool *pool, struct stream_sessions *sessions,
				      struct tls_ctx *const *ctx, const struct options_addr *addr,
				      bool share, int *rcp, char *err, size_t errlen)
{
	struct tls_listener *l = calloc(1, sizeof(*l));

	require(l);
	l->pool = pool;
	l->sessions = sessions;
	l->ctx = ctx;
	*rcp = listen_stream_socket(query_pool_env(pool)->loop, &l->tcp, addr, share, connection_cb,
				    "tls", err, errlen);
	return *rcp < 0 ? NULL : l;
}

void listen_tls_close(struct tls_listener *l)
{
	/* Shutting down: handshakes under way end now, not at their deadline
	 * (nothing else would close them: they are no sessions yet). */
	while (l->pending)
		drop_unstarted(l->pending, "shutting down");
	uv_close((uv_handle_t *)&l->tcp, free_cb);
}
