/*
 * TCP listener and the plain-TCP carrier of stream sessions.  Replies are
 * written with uv_try_write first; only what the kernel does not take is
 * copied into a write request.
 */
#include "daemon/listen_tcp.h"

#include "daemon/query.h"
#include "daemon/stream.h"
#include "lib/log.h"
#include "lib/metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

enum {
	FD_RESERVE = 32, /* descriptors kept for listeners, upstreams, logs, libuv */
	WORKER_FDS = 4,	 /* each further worker's epoll and wake-up descriptors */
};

struct tcp_listener {
	uv_tcp_t tcp;
	struct query_pool *pool;
	struct stream_sessions *sessions;
	uint64_t fd_warned_ms; /* when running out of descriptors was last logged */
};

/* One accepted connection: the socket and the session it carries. */
struct tcp_conn {
	uv_tcp_t tcp;
	struct stream_session session;
	struct loop *loop;
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

static void conn_closed_cb(uv_handle_t *handle)
{
	struct tcp_conn *c = (struct tcp_conn *)handle;

	stream_session_closed(&c->session);
}

static void alloc_cb(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
	struct tcp_conn *c = handle->data;

	(void)suggested;
	*buf = uv_buf_init((char *)c->loop->scratch->read, sizeof(c->loop->scratch->read));
}

static void read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
	struct tcp_conn *c = stream->data;

	if (nread == 0)
		return;
	if (nread == UV_EOF) {
		uv_read_stop(stream);
		stream_session_eof(&c->session);
	} else if (nread < 0) {
		stream_session_close(&c->session);
	} else {
		stream_session_data(&c->session, (uint8_t *)buf->base, (size_t)nread);
	}
}

static void write_cb(uv_write_t *req, int status)
{
	struct tcp_conn *c = req->handle->data;

	free(req);
	if (status < 0 && status != UV_ECANCELED)
		stream_session_close(&c->session);
}

static int pipe_write(void *pipe, const uint8_t prefix[2], const uint8_t *msg, size_t len)
{
	struct tcp_conn *c = pipe;
	uv_buf_t bufs[2] = { uv_buf_init((char *)prefix, 2),
			     uv_buf_init((char *)msg, (unsigned)len) };
	size_t total = len + 2;
	int r = uv_try_write((uv_stream_t *)&c->tcp, bufs, 2);

	if (r == (int)total)
		return 0;
	if (r < 0 && r != UV_EAGAIN)
		return r;
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
	if (r < 0)
		free(w);
	return r;
}

static size_t pipe_backlog(const void *pipe)
{
	return ((const struct tcp_conn *)pipe)->tcp.write_queue_size;
}

static void pipe_pause(void *pipe)
{
	uv_read_stop((uv_stream_t *)&((struct tcp_conn *)pipe)->tcp);
}

static int pipe_resume(void *pipe)
{
	return uv_read_start((uv_stream_t *)&((struct tcp_conn *)pipe)->tcp, alloc_cb, read_cb);
}

static void pipe_close(void *pipe)
{
	uv_close((uv_handle_t *)&((struct tcp_conn *)pipe)->tcp, conn_closed_cb);
}

static void pipe_release(void *pipe)
{
	free(pipe);
}

static const struct stream_pipe_ops tcp_pipe = {
	.name = "tcp",
	.queries_metric = METRIC_queries_tcp,
	.write = pipe_write,
	.backlog = pipe_backlog,
	.pause = pipe_pause,
	.resume = pipe_resume,
	.close = pipe_close,
	.release = pipe_release,
};

/*
 * Descriptors: refuse a client while a reserve is still free, rather than
 * let accept(2) fail with EMFILE, which libuv handles by closing waiting
 * connections itself, silently.  The limit is read each time: it can be
 * changed under a running process (prlimit).
 */
static bool room_for_client(struct query_pool *pool, uint64_t *warned_ms)
{
	struct query_env *env = query_pool_env(pool);
	const struct config *cfg = env->cfg;
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
		return true;
	/* Every worker has its own listeners and upstream connections. */
	rlim_t workers = cfg->workers;
	rlim_t reserve = FD_RESERVE + (workers - 1) * (WORKER_FDS + 2 * (rlim_t)cfg->n_listen) +
			 workers * cfg->n_upstream * cfg->max_connections;
	unsigned open = stream_sessions_open();
	if (rl.rlim_cur > reserve && open <= rl.rlim_cur - reserve)
		return true;
	uint64_t now = uv_now(&env->loop->uv);
	if (now - *warned_ms >= 1000 || *warned_ms == 0) {
		*warned_ms = now;
		log_warn("TCP accept: too many open files for another client (descriptor limit "
			 "%llu, %u clients): closing new connections",
			 (unsigned long long)rl.rlim_cur, open - 1);
	}
	return false;
}

static bool admit(struct query_pool *pool, uint64_t *warned_ms)
{
	struct query_env *env = query_pool_env(pool);

	if (!stream_sessions_reserve(env->cfg->max_tcp_clients)) {
		metrics_inc(METRIC_tcp_refused);
		return false;
	}
	if (env->draining || !room_for_client(pool, warned_ms)) {
		stream_sessions_unreserve();
		metrics_inc(METRIC_tcp_refused);
		return false;
	}
	return true;
}

bool listen_tcp_accept(uv_stream_t *server, uv_tcp_t *tcp, struct query_pool *pool,
		       uint64_t *warned_ms)
{
	if (uv_accept(server, (uv_stream_t *)tcp) < 0 || !admit(pool, warned_ms)) {
		uv_close((uv_handle_t *)tcp, free_cb);
		return false;
	}
	return true;
}

static void connection_cb(uv_stream_t *server, int status)
{
	struct tcp_listener *l = server->data;
	struct query_env *env = query_pool_env(l->pool);

	if (status < 0) {
		log_warn("TCP accept failed: %s", uv_strerror(status));
		return;
	}
	struct tcp_conn *c = calloc(1, sizeof(*c));
	require(c);
	c->loop = env->loop;
	uv_tcp_init(&env->loop->uv, &c->tcp);
	c->tcp.data = c;
	if (!listen_tcp_accept(server, &c->tcp, l->pool, &l->fd_warned_ms))
		return;
	metrics_inc(METRIC_tcp_accepted);
	struct sockaddr_storage ss, local;
	int len = sizeof(ss), local_len = sizeof(local);
	bool known = uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0;
	bool local_known = uv_tcp_getsockname(&c->tcp, (struct sockaddr *)&local, &local_len) == 0;
	stream_session_init(&c->session, l->sessions, l->pool, &tcp_pipe, c,
			    known ? (struct sockaddr *)&ss : NULL,
			    local_known ? (struct sockaddr *)&local : NULL);
	if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) < 0)
		stream_session_close(&c->session);
}

int listen_stream_socket(struct loop *loop, uv_tcp_t *tcp, const struct options_addr *addr,
			 bool share, uv_connection_cb cb, const char *what, char *err,
			 size_t errlen)
{
	/* With the address family given, the socket exists before the bind. */
	int rc = uv_tcp_init_ex(&loop->uv, tcp, addr->sa.ss_family);

	if (rc < 0) {
		free(tcp);
		snprintf(err, errlen, "cannot listen on %s/%s: %s", addr->text, what,
			 uv_strerror(rc));
		return rc;
	}
	tcp->data = tcp;
	if (share)
		rc = frontend_share_port((uv_handle_t *)tcp);
	if (rc == 0)
		rc = uv_tcp_bind(tcp, (const struct sockaddr *)&addr->sa,
				 addr->sa.ss_family == AF_INET6 ? UV_TCP_IPV6ONLY : 0);
	/* Accepted sockets inherit TCP_NODELAY from the listener (Linux): one
	 * setsockopt(2) here rather than one per connection. */
	if (rc == 0)
		rc = uv_tcp_nodelay(tcp, 1);
	if (rc == 0)
		rc = uv_listen((uv_stream_t *)tcp, 1024, cb);
	if (rc < 0) {
		snprintf(
		    err, errlen, "cannot listen on %s/%s: %s%s", addr->text, what, uv_strerror(rc),
		    rc == UV_EACCES ? " (ports below 1024 need root or CAP_NET_BIND_SERVICE)" : "");
		uv_close((uv_handle_t *)tcp, free_cb);
	}
	return rc;
}

struct tcp_listener *listen_tcp_start(struct query_pool *pool, struct stream_sessions *sessions,
				      const struct options_addr *addr, bool share, int *rcp,
				      char *err, size_t errlen)
{
	struct tcp_listener *l = calloc(1, sizeof(*l));

	require(l);
	l->pool = pool;
	l->sessions = sessions;
	*rcp = listen_stream_socket(query_pool_env(pool)->loop, &l->tcp, addr, share, connection_cb,
				    "tcp", err, errlen);
	return *rcp < 0 ? NULL : l;
}

struct tcp_listener *listen_tcp_open(struct query_pool *pool, struct stream_sessions *sessions,
				     int fd, const char *where, int *rcp, char *err, size_t errlen)
{
	struct tcp_listener *l = calloc(1, sizeof(*l));
	int rc;

	require(l);
	l->pool = pool;
	l->sessions = sessions;
	rc = uv_tcp_init(&query_pool_env(pool)->loop->uv, &l->tcp);
	if (rc < 0) {
		free(l);
		close(fd);
		goto fail;
	}
	l->tcp.data = l;
	rc = uv_tcp_open(&l->tcp, fd);
	if (rc < 0)
		close(fd); /* not the handle's yet */
	else
		rc = uv_tcp_nodelay(&l->tcp, 1); /* inherited: listen_stream_socket() */
	/* listen(2) again on a listening socket only sets the backlog, the
	 * same as on the sockets dotproxy binds itself. */
	if (rc == 0)
		rc = uv_listen((uv_stream_t *)&l->tcp, 1024, connection_cb);
	if (rc < 0)
		uv_close((uv_handle_t *)&l->tcp, free_cb);
fail:
	if (rc < 0) {
		*rcp = rc;
		snprintf(err, errlen, "cannot listen on %s/tcp: %s", where, uv_strerror(rc));
		return NULL;
	}
	return l;
}

void listen_tcp_close(struct tcp_listener *l)
{
	uv_close((uv_handle_t *)&l->tcp, free_cb);
}
