/*
 * One request, one response.  A connection goes READING -> (PAUSED) ->
 * WRITING -> DRAINING -> CLOSED; it keeps reading in every state, so that
 * the client's close is seen and nothing it sends stays unread when the
 * socket closes.  The connection's memory goes when its two handles (the
 * socket and the timer) are closed; the server's when its listener and
 * every connection are.
 */
#include "daemon/oneshot.h"

#include "lib/log.h"

#include <stdlib.h>
#include <string.h>

enum state {
	READING,  /* waiting for the whole request */
	PAUSED,	  /* the owner has it and will reply */
	WRITING,  /* the response is being written */
	DRAINING, /* written and FIN sent: waiting for the client to close */
	CLOSED,
};

struct oneshot_server {
	union {
		uv_handle_t handle;
		uv_stream_t stream;
		uv_tcp_t tcp;
		uv_pipe_t pipe;
	} listener;
	uv_handle_type type;
	struct oneshot_config cfg;
	const struct oneshot_ops *ops;
	struct oneshot *conns; /* open connections */
	unsigned n_conns;
	bool closing; /* oneshot_server_close() was called */
	bool listener_closed;
	char discard[4096]; /* where bytes read after the request go */
};

static void maybe_free_server(struct oneshot_server *s)
{
	if (s->closing && s->listener_closed && s->conns == NULL)
		free(s);
}

static void conn_handle_closed_cb(uv_handle_t *handle)
{
	struct oneshot *c = handle->data;

	if (--c->open_handles)
		return;
	struct oneshot_server *s = c->server;
	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	s->n_conns--;
	free(c->out[1].base);
	free(c->buf);
	free(c);
	maybe_free_server(s);
}

void oneshot_close(struct oneshot *c)
{
	if (c->state == CLOSED)
		return;
	c->state = CLOSED;
	if (c->server->ops->closed)
		c->server->ops->closed(c);
	uv_timer_stop(&c->timer);
	uv_close((uv_handle_t *)&c->timer, conn_handle_closed_cb);
	uv_close(&c->h.handle, conn_handle_closed_cb);
}

static void timer_cb(uv_timer_t *timer)
{
	struct oneshot *c = timer->data;

	if (c->state == READING && c->server->ops->timeout) {
		c->server->ops->timeout(c);
		if (c->state != READING && c->state != CLOSED)
			return; /* it replied, and its own timer runs */
	}
	oneshot_close(c);
}

static void alloc_cb(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
	struct oneshot *c = handle->data;
	struct oneshot_server *s = c->server;

	(void)suggested;
	if (c->state == READING && c->len < s->cfg.max_request)
		*buf = uv_buf_init(c->buf + c->len, (unsigned)(s->cfg.max_request - c->len));
	else
		*buf = uv_buf_init(s->discard, sizeof(s->discard));
}

static void read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
	struct oneshot *c = stream->data;
	struct oneshot_server *s = c->server;

	(void)buf;
	if (nread == 0 || c->state == CLOSED)
		return;
	if (nread < 0 && nread != UV_EOF) {
		oneshot_close(c);
		return;
	}
	if (nread == UV_EOF) {
		c->eof = true;
		uv_read_stop(stream);
		if (c->state == DRAINING) {
			oneshot_close(c);
			return;
		}
	} else if (c->state == READING) {
		c->len += (size_t)nread;
		c->buf[c->len] = '\0';
	} else {
		return; /* after the request: discarded */
	}
	if (c->state != READING)
		return;
	s->ops->data(c);
	if (c->state == READING && (c->eof || c->len >= s->cfg.max_request))
		oneshot_close(c); /* the owner had nothing to say */
}

static void shutdown_cb(uv_shutdown_t *req, int status)
{
	struct oneshot *c = req->data;

	if (c->state != DRAINING)
		return;
	if (status < 0 || c->eof)
		oneshot_close(c);
}

static void write_cb(uv_write_t *req, int status)
{
	struct oneshot *c = req->data;

	if (c->state != WRITING)
		return;
	if (status < 0) {
		oneshot_close(c);
		return;
	}
	c->state = DRAINING;
	c->shutdown_req.data = c;
	if (uv_shutdown(&c->shutdown_req, &c->h.stream, shutdown_cb) < 0)
		oneshot_close(c);
}

void oneshot_pause(struct oneshot *c)
{
	if (c->state != READING)
		return;
	c->state = PAUSED;
	uv_timer_start(&c->timer, timer_cb, c->server->cfg.reply_ms, 0);
}

void oneshot_reply(struct oneshot *c, const char *head, size_t head_len, char *body,
		   size_t body_len)
{
	if (c->state != READING && c->state != PAUSED) {
		free(body);
		return;
	}
	if (head_len > sizeof(c->head))
		head_len = sizeof(c->head);
	memcpy(c->head, head, head_len);
	c->out[0] = uv_buf_init(c->head, (unsigned)head_len);
	c->out[1] = uv_buf_init(body, body ? (unsigned)body_len : 0);
	if (c->state == READING)
		uv_timer_start(&c->timer, timer_cb, c->server->cfg.reply_ms, 0);
	c->state = WRITING;
	c->write_req.data = c;
	if (uv_write(&c->write_req, &c->h.stream, c->out, body ? 2 : 1, write_cb) < 0)
		oneshot_close(c);
}

static void listener_closed_cb(uv_handle_t *handle)
{
	struct oneshot_server *s = handle->data;

	s->listener_closed = true;
	maybe_free_server(s);
}

static void connection_cb(uv_stream_t *listener, int status)
{
	struct oneshot_server *s = listener->data;

	if (status < 0) {
		log_warn("%s: accept failed: %s", s->cfg.name, uv_strerror(status));
		return;
	}
	struct oneshot *c = calloc(1, sizeof(*c));
	require(c);
	c->buf = malloc(s->cfg.max_request + 1);
	require(c->buf);
	c->buf[0] = '\0';
	c->server = s;
	if (s->type == UV_TCP)
		uv_tcp_init(listener->loop, &c->h.tcp);
	else
		uv_pipe_init(listener->loop, &c->h.pipe, 0);
	uv_timer_init(listener->loop, &c->timer);
	c->h.handle.data = c;
	c->timer.data = c;
	c->open_handles = 2;
	c->state = READING;
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	s->n_conns++;
	if (uv_accept(listener, &c->h.stream) < 0) {
		oneshot_close(c);
		return;
	}
	if (s->n_conns > s->cfg.max_conns) {
		log_debug("%s: %u connections already: closing a new one", s->cfg.name,
			  s->n_conns - 1);
		oneshot_close(c);
		return;
	}
	uv_timer_start(&c->timer, timer_cb, s->cfg.request_ms, 0);
	if (s->ops->accepted) {
		s->ops->accepted(c);
		if (c->state != READING)
			return;
	}
	if (uv_read_start(&c->h.stream, alloc_cb, read_cb) < 0)
		oneshot_close(c);
}

struct oneshot_server *oneshot_server_new(uv_loop_t *loop, uv_handle_type type,
					  const struct oneshot_config *cfg,
					  const struct oneshot_ops *ops)
{
	struct oneshot_server *s = calloc(1, sizeof(*s));

	require(s);
	s->type = type;
	s->cfg = *cfg;
	s->ops = ops;
	if (type == UV_TCP)
		uv_tcp_init(loop, &s->listener.tcp);
	else
		uv_pipe_init(loop, &s->listener.pipe, 0);
	s->listener.handle.data = s;
	return s;
}

uv_handle_t *oneshot_server_listener(struct oneshot_server *s)
{
	return &s->listener.handle;
}

int oneshot_server_listen(struct oneshot_server *s)
{
	return uv_listen(&s->listener.stream, 16, connection_cb);
}

void *oneshot_server_arg(const struct oneshot_server *s)
{
	return s->cfg.arg;
}

void oneshot_server_close(struct oneshot_server *s)
{
	if (s->closing)
		return;
	s->closing = true;
	uv_close(&s->listener.handle, listener_closed_cb);
	for (struct oneshot *c = s->conns; c; c = c->next)
		oneshot_close(c);
}
