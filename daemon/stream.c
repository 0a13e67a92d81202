/*
 * Stream sessions: framing with back-pressure (FRAMING_HOLD at the
 * pipeline cap), replies in completion order, the idle timer, half-close,
 * and a lifetime that outlasts the socket until the last query is done.
 */
#include "daemon/stream.h"

#include "daemon/loop.h"
#include "daemon/query.h"
#include "lib/acl.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/wire.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

enum { MAX_WRITE_BACKLOG = 1 << 20 };

/* Stream clients open in the whole process, whichever worker accepted them:
 * --max-tcp-clients and the descriptor budget are the process's, and the
 * kernel does not spread connections over the workers evenly. */
static unsigned clients_open;

bool stream_sessions_reserve(unsigned max_clients)
{
	unsigned open = __atomic_add_fetch(&clients_open, 1, __ATOMIC_RELAXED);

	if (open <= max_clients)
		return true;
	__atomic_sub_fetch(&clients_open, 1, __ATOMIC_RELAXED);
	return false;
}

void stream_sessions_unreserve(void)
{
	__atomic_sub_fetch(&clients_open, 1, __ATOMIC_RELAXED);
}

unsigned stream_sessions_open(void)
{
	return __atomic_load_n(&clients_open, __ATOMIC_RELAXED);
}

static struct query_env *env_of(const struct stream_session *s)
{
	return query_pool_env(s->pool);
}

/* Nothing refers to @s any more once the carrier and the timer are closed
 * and no query holds it. */
static void maybe_release(struct stream_session *s)
{
	if (s->closing && s->pipe_closed && s->timer_closed && s->inflight == 0) {
		framing_deinit(&s->reader);
		s->pipe_ops->release(s->pipe);
	}
}

static void idle_closed_cb(uv_handle_t *handle)
{
	struct stream_session *s = handle->data;

	s->timer_closed = true;
	maybe_release(s);
}

void stream_session_close(struct stream_session *s)
{
	if (s->closing)
		return;
	s->closing = true;
	if (s->prev)
		s->prev->next = s->next;
	else
		s->all->head = s->next;
	if (s->next)
		s->next->prev = s->prev;
	stream_sessions_unreserve();
	loop_flush_cancel(env_of(s)->loop, &s->resume);
	uv_close((uv_handle_t *)&s->idle, idle_closed_cb);
	s->pipe_ops->close(s->pipe);
}

void stream_session_closed(struct stream_session *s)
{
	s->pipe_closed = true;
	maybe_release(s);
}

static void idle_cb(uv_timer_t *timer)
{
	struct stream_session *s = timer->data;

	if (s->inflight > 0)
		return; /* waiting for answers is not idleness; the reply re-arms */
	metrics_inc(METRIC_tcp_idle_closed);
	log_debug("%s client %s idle: closing", s->pipe_ops->name, s->peer);
	stream_session_close(s);
}

static void touch(struct stream_session *s)
{
	uv_timer_start(&s->idle, idle_cb, env_of(s)->cfg->tcp_idle_timeout_ms, 0);
}

static bool at_cap(const struct stream_session *s)
{
	return s->inflight >= env_of(s)->cfg->max_tcp_pipeline;
}

static void pause_reading(struct stream_session *s)
{
	if (!s->reading)
		return;
	s->pipe_ops->pause(s->pipe);
	s->reading = false;
}

static int frame_cb(void *arg, uint8_t *msg, size_t len)
{
	struct stream_session *s = arg;
	struct frontend_client client = { .ops = &stream_frontend_ops, .conn = s };

	/* Only whole queries count as activity: a client trickling bytes that
	 * never complete a frame is idle and gets closed. */
	touch(s);
	metrics_inc((enum metric)s->pipe_ops->queries_metric);
	s->inflight++;
	query_receive(s->pool, &client, msg, len);
	if (s->closing)
		return 1;
	if (at_cap(s)) {
		/* Back-pressure: the rest of what was read waits in the framing
		 * buffer, and nothing more is read, until a slot frees up. */
		pause_reading(s);
		return FRAMING_HOLD;
	}
	return 0;
}

static void feed(struct stream_session *s, uint8_t *data, size_t len, bool resume)
{
	int rc = resume ? framing_resume(&s->reader, frame_cb, s)
			: framing_feed(&s->reader, data, len, frame_cb, s);
	if (rc < 0)
		stream_session_close(s);
}

void stream_session_data(struct stream_session *s, uint8_t *data, size_t len)
{
	if (!s->closing)
		feed(s, data, len, false);
}

void stream_session_eof(struct stream_session *s)
{
	if (s->closing)
		return;
	if (s->inflight > 0 || framing_held(&s->reader) > 0) {
		/* Half-close after pipelining (RFC 7766 §6.2.4): answer, then close. */
		s->eof = true;
		pause_reading(s);
		return;
	}
	stream_session_close(s);
}

/* A slot freed up: serve what waits in the framing buffer, then read again.
 * Run from the loop's flush hooks, never from inside a completion: queries
 * started here must not meet the query core halfway through another. */
static void resume_cb(struct loop_flush *f)
{
	struct stream_session *s =
	    (struct stream_session *)((char *)f - offsetof(struct stream_session, resume));

	if (s->closing || env_of(s)->draining)
		return;
	if (framing_held(&s->reader) && !at_cap(s))
		feed(s, NULL, 0, true);
	if (s->closing || at_cap(s) || framing_held(&s->reader))
		return;
	if (s->eof) {
		if (s->inflight == 0)
			stream_session_close(s);
		return;
	}
	if (!s->reading && s->pipe_ops->resume(s->pipe) == 0)
		s->reading = true;
}

static void reply(const struct frontend_client *c, const uint8_t *msg, size_t len)
{
	struct stream_session *s = c->conn;
	uint8_t prefix[2];

	if (s->closing)
		return;
	wire_write16(prefix, (uint16_t)len);
	if (s->pipe_ops->write(s->pipe, prefix, msg, len) < 0) {
		stream_session_close(s);
		return;
	}
	if (s->pipe_ops->backlog(s->pipe) > MAX_WRITE_BACKLOG) {
		log_debug("%s client %s does not read its answers: closing", s->pipe_ops->name,
			  s->peer);
		stream_session_close(s);
	}
}

static void done(const struct frontend_client *c)
{
	struct stream_session *s = c->conn;

	s->inflight--;
	if (s->closing) {
		maybe_release(s);
		return;
	}
	touch(s);
	if (!s->reading || framing_held(&s->reader))
		loop_flush_queue(env_of(s)->loop, &s->resume);
}

static size_t max_reply(const struct frontend_client *c, const struct wire_info *query)
{
	(void)c, (void)query;
	return WIRE_MAX_MSG;
}

static bool encrypted(const struct frontend_client *c)
{
	return ((const struct stream_session *)c->conn)->pipe_ops->encrypted;
}

/* The idle timeout this session applies, in units of 100 ms. */
static uint16_t keepalive(const struct frontend_client *c)
{
	const struct stream_session *s = c->conn;
	unsigned units = query_pool_env(s->pool)->cfg->tcp_idle_timeout_ms / 100;

	return (uint16_t)(units < 65535 ? units : 65535);
}

static void peer(const struct frontend_client *c, char *buf, size_t cap)
{
	const struct stream_session *s = c->conn;

	snprintf(buf, cap, "%s", s->peer);
}

static bool allowed(const struct frontend_client *c)
{
	return ((const struct stream_session *)c->conn)->allowed;
}

static void origin(const struct frontend_client *c, struct frontend_origin *o)
{
	const struct stream_session *s = c->conn;

	o->protocol = s->pipe_ops->name;
	o->client = (const struct sockaddr *)&s->peer_addr;
	o->local = (const struct sockaddr *)&s->local_addr;
}

const struct frontend_ops stream_frontend_ops = {
	.name = "tcp",
	.reply = reply,
	.done = done,
	.max_reply = max_reply,
	.keepalive = keepalive,
	.encrypted = encrypted,
	.peer = peer,
	.allowed = allowed,
	.origin = origin,
};

static size_t addr_len(const struct sockaddr *sa)
{
	return sa->sa_family == AF_INET6  ? sizeof(struct sockaddr_in6)
	       : sa->sa_family == AF_INET ? sizeof(struct sockaddr_in)
					  : sizeof(sa->sa_family);
}

void stream_session_init(struct stream_session *s, struct stream_sessions *all,
			 struct query_pool *pool, const struct stream_pipe_ops *ops, void *pipe,
			 const struct sockaddr *peer_sa, const struct sockaddr *local_sa)
{
	struct query_env *env = query_pool_env(pool);

	memset(s, 0, sizeof(*s));
	s->pipe_ops = ops;
	s->pipe = pipe;
	s->pool = pool;
	s->all = all;
	s->reading = true;
	s->next = all->head;
	if (all->head)
		all->head->prev = s;
	all->head = s;
	framing_init(&s->reader);
	uv_timer_init(&env->loop->uv, &s->idle);
	s->idle.data = s;
	s->resume.cb = resume_cb;
	if (local_sa)
		memcpy(&s->local_addr, local_sa, addr_len(local_sa));
	if (peer_sa) {
		memcpy(&s->peer_addr, peer_sa, addr_len(peer_sa));
		s->allowed = acl_allows(&env->cfg->allow, peer_sa);
		frontend_addr_text(peer_sa, s->peer, sizeof(s->peer));
	} else {
		snprintf(s->peer, sizeof(s->peer), "?");
	}
	touch(s);
}

void stream_sessions_close_all(struct stream_sessions *all)
{
	while (all->head)
		stream_session_close(all->head);
}
