/*
 * UDP listener.  Datagrams arrive in batches (recvmmsg, through libuv) and
 * replies leave in batches: queued during a round of the event loop and
 * sent with one sendmmsg(2) at its end, so under load a reply costs a
 * fraction of a system call.  Nothing waits beyond that round: a reply the
 * kernel will not take is dropped and counted (the client asks again),
 * because a queue of unsendable replies would grow without bound under a
 * flood.
 */
#include "daemon/listen_udp.h"

#include "daemon/frontend.h"
#include "daemon/loop.h"
#include "daemon/query.h"
#include "lib/acl.h"
#include "lib/log.h"
#include "lib/metrics.h"

#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum {
	RECV_BATCH = 16,   /* datagrams per recvmmsg */
	DGRAM_MAX = 65536, /* libuv's per-datagram slot in a recvmmsg buffer */
	SEND_BATCH = 64,   /* replies per sendmmsg */
	SEND_SLOT = 2048,  /* larger replies (rare over UDP) go out on their own */
};

struct pending_reply {
	struct sockaddr_storage peer;
	size_t offset, len; /* in send_buf */
};

struct udp_listener {
	uv_udp_t udp;
	struct query_pool *pool;
	struct loop *loop;
	uint8_t *recv_buf; /* RECV_BATCH slots; pages touched only as used */
	/* Room for SEND_BATCH replies of SEND_SLOT bytes, filled back to back so
	 * that the pages touched follow the bytes queued, not the replies. */
	uint8_t *send_buf;
	size_t send_used;
	struct pending_reply pending[SEND_BATCH];
	unsigned n_pending;
	struct loop_flush flush;
	struct sockaddr_storage local; /* the address bound (a wildcard stays one), for dnstap */
};

static void listener_free(struct udp_listener *l)
{
	free(l->recv_buf);
	free(l->send_buf);
	free(l);
}

/* Close callback: the handle is the first member of the listener. */
static void free_cb(uv_handle_t *handle)
{
	listener_free((struct udp_listener *)handle);
}

static socklen_t peer_len(const struct sockaddr *peer)
{
	return peer->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
					   : sizeof(struct sockaddr_in);
}

/* Send every queued reply with as few sendmmsg calls as the kernel allows. */
static void flush(struct udp_listener *l)
{
	struct mmsghdr msgs[SEND_BATCH];
	struct iovec iov[SEND_BATCH];
	uv_os_fd_t fd;
	unsigned done = 0;

	if (l->n_pending == 0 || uv_fileno((uv_handle_t *)&l->udp, &fd) != 0) {
		l->n_pending = 0;
		l->send_used = 0;
		return;
	}
	memset(msgs, 0, l->n_pending * sizeof(msgs[0]));
	for (unsigned i = 0; i < l->n_pending; i++) {
		iov[i].iov_base = l->send_buf + l->pending[i].offset;
		iov[i].iov_len = l->pending[i].len;
		msgs[i].msg_hdr.msg_name = &l->pending[i].peer;
		msgs[i].msg_hdr.msg_namelen = peer_len((struct sockaddr *)&l->pending[i].peer);
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
	}
	while (done < l->n_pending) {
		int n = sendmmsg(fd, msgs + done, l->n_pending - done, MSG_DONTWAIT);
		if (n > 0) {
			done += (unsigned)n;
		} else if (n < 0 && errno == EINTR) {
			continue;
		} else {
			/* Socket buffer full, or this datagram refused: drop it, go on. */
			metrics_inc(METRIC_udp_send_failed);
			done++;
		}
	}
	l->n_pending = 0;
	l->send_used = 0;
}

static void flush_cb(struct loop_flush *f)
{
	flush((struct udp_listener *)((char *)f - offsetof(struct udp_listener, flush)));
}

/* -- the frontend ops: client.conn is the listener, client.peer the sender -- */

static void reply(const struct frontend_client *c, const uint8_t *msg, size_t len)
{
	struct udp_listener *l = c->conn;

	if (len > SEND_SLOT) {
		uv_buf_t buf = uv_buf_init((char *)msg, (unsigned)len);
		if (uv_udp_try_send(&l->udp, &buf, 1, &c->peer.sa) < 0)
			metrics_inc(METRIC_udp_send_failed);
		return;
	}
	if (l->n_pending == SEND_BATCH)
		flush(l);
	struct pending_reply *p = &l->pending[l->n_pending];
	memcpy(&p->peer, &c->peer, peer_len(&c->peer.sa));
	p->offset = l->send_used;
	p->len = len;
	memcpy(l->send_buf + p->offset, msg, len);
	l->send_used += len;
	l->n_pending++;
	loop_flush_queue(l->loop, &l->flush);
}

static void done(const struct frontend_client *c)
{
	(void)c; /* a datagram holds no slot */
}

/* What the client advertised (512 without EDNS), but never more than
 * --max-udp-size: larger datagrams fragment, and fragments get lost or
 * forged (DNS Flag Day 2020). */
static size_t max_reply(const struct frontend_client *c, const struct wire_info *query)
{
	struct udp_listener *l = c->conn;
	size_t limit = wire_udp_limit(query);
	size_t cap = query_pool_env(l->pool)->cfg->max_udp_size;

	return limit < cap ? limit : cap;
}

static void peer(const struct frontend_client *c, char *buf, size_t cap)
{
	frontend_addr_text(&c->peer.sa, buf, cap);
}

static bool allowed(const struct frontend_client *c)
{
	struct udp_listener *l = c->conn;

	return acl_allows(&query_pool_env(l->pool)->cfg->allow, &c->peer.sa);
}

static void origin(const struct frontend_client *c, struct frontend_origin *o)
{
	const struct udp_listener *l = c->conn;

	o->protocol = "udp";
	o->client = &c->peer.sa;
	o->local = (const struct sockaddr *)&l->local;
}

static const struct frontend_ops udp_ops = {
	.name = "udp",
	.reply = reply,
	.done = done,
	.max_reply = max_reply,
	.peer = peer,
	.allowed = allowed,
	.origin = origin,
};

/* -- receiving -------------------------------------------------------------- */

static void alloc_cb(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
	struct udp_listener *l = handle->data;

	(void)suggested;
	*buf = uv_buf_init((char *)l->recv_buf, (size_t)RECV_BATCH * DGRAM_MAX);
}

static void recv_cb(uv_udp_t *udp, ssize_t nread, const uv_buf_t *buf, const struct sockaddr *addr,
		    unsigned flags)
{
	struct udp_listener *l = udp->data;
	struct frontend_client client = { .ops = &udp_ops, .conn = l };

	if (nread <= 0 || !addr)
		return; /* nothing read, the end of a batch, or a transient error */
	if (flags & UV_UDP_PARTIAL) {
		metrics_inc(METRIC_dropped_malformed);
		return;
	}
	metrics_inc(METRIC_queries_udp);
	memcpy(&client.peer, addr, peer_len(addr));
	query_receive(l->pool, &client, (const uint8_t *)buf->base, (size_t)nread);
}

/* Size the receive buffer: a burst arriving while the loop is busy waits
 * there instead of being dropped by the kernel.  As root, SO_RCVBUFFORCE
 * passes net.core.rmem_max; otherwise the kernel caps SO_RCVBUF at it,
 * which is logged once (the operator may raise the sysctl).  A socket
 * handed over by systemd keeps a larger buffer its socket unit gave it
 * (ReceiveBuffer=): @raise_only. */
static void size_receive_buffer(struct udp_listener *l, size_t bytes, bool raise_only,
				const char *where)
{
	static bool warned;
	uv_os_fd_t fd;
	int want = bytes > INT_MAX / 2 ? INT_MAX / 2 : (int)bytes;
	int got = 0;
	socklen_t len = sizeof(got);

	if (bytes == 0 || uv_fileno((uv_handle_t *)&l->udp, &fd) != 0)
		return;
	if (raise_only && getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &got, &len) == 0 && got / 2 >= want)
		return;
	len = sizeof(got);
	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &want, sizeof(want)) < 0)
		(void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &want, sizeof(want));
	/* Linux reports twice what was set (it counts its bookkeeping too). */
	if (getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &got, &len) == 0 && got / 2 < want &&
	    !__atomic_exchange_n(&warned, true, __ATOMIC_RELAXED))
		log_warn("%s/udp: receive buffer is %d bytes, not the %d of --udp-recv-buffer "
			 "(raise net.core.rmem_max, run as root%s)",
			 where, got / 2, want,
			 raise_only ? ", or set ReceiveBuffer= in the socket unit" : "");
}

static struct udp_listener *listener_new(struct query_pool *pool)
{
	struct query_env *env = query_pool_env(pool);
	struct udp_listener *l = calloc(1, sizeof(*l));

	require(l);
	l->pool = pool;
	l->loop = env->loop;
	l->flush.cb = flush_cb;
	l->recv_buf = malloc((size_t)RECV_BATCH * DGRAM_MAX);
	l->send_buf = malloc((size_t)SEND_BATCH * SEND_SLOT);
	require(l->recv_buf && l->send_buf);
	return l;
}

/* The socket is there (bound or handed over): size it and receive.  On
 * failure the handle is closed and the listener freed with it. */
static int start(struct udp_listener *l, bool handed, const char *where)
{
	int len = sizeof(l->local);

	if (uv_udp_getsockname(&l->udp, (struct sockaddr *)&l->local, &len) < 0)
		l->local.ss_family = AF_UNSPEC;
	size_receive_buffer(l, query_pool_env(l->pool)->cfg->udp_recv_buffer, handed, where);
	int rc = uv_udp_recv_start(&l->udp, alloc_cb, recv_cb);
	if (rc < 0)
		uv_close((uv_handle_t *)&l->udp, free_cb);
	return rc;
}

static void describe_failure(int rc, int *rcp, const char *where, char *err, size_t errlen)
{
	*rcp = rc;
	snprintf(err, errlen, "cannot listen on %s/udp: %s%s", where, uv_strerror(rc),
		 rc == UV_EACCES ? " (ports below 1024 need root or CAP_NET_BIND_SERVICE)" : "");
}

struct udp_listener *listen_udp_start(struct query_pool *pool, const struct options_addr *addr,
				      bool share, int *rcp, char *err, size_t errlen)
{
	struct query_env *env = query_pool_env(pool);
	struct udp_listener *l = listener_new(pool);
	int rc = uv_udp_init_ex(&env->loop->uv, &l->udp, addr->sa.ss_family | UV_UDP_RECVMMSG);

	if (rc < 0) {
		listener_free(l);
		describe_failure(rc, rcp, addr->text, err, errlen);
		return NULL;
	}
	l->udp.data = l;
	if (share)
		rc = frontend_share_port((uv_handle_t *)&l->udp);
	if (rc == 0)
		rc = uv_udp_bind(&l->udp, (const struct sockaddr *)&addr->sa,
				 addr->sa.ss_family == AF_INET6 ? UV_UDP_IPV6ONLY : 0);
	if (rc < 0)
		uv_close((uv_handle_t *)&l->udp, free_cb);
	else
		rc = start(l, false, addr->text);
	if (rc < 0) {
		describe_failure(rc, rcp, addr->text, err, errlen);
		return NULL;
	}
	return l;
}

struct udp_listener *listen_udp_open(struct query_pool *pool, int fd, const char *where, int *rcp,
				     char *err, size_t errlen)
{
	struct query_env *env = query_pool_env(pool);
	struct udp_listener *l = listener_new(pool);
	/* AF_UNSPEC: no socket of libuv's own, the handed one comes next. */
	int rc = uv_udp_init_ex(&env->loop->uv, &l->udp, AF_UNSPEC | UV_UDP_RECVMMSG);

	if (rc < 0) {
		listener_free(l);
		close(fd);
		describe_failure(rc, rcp, where, err, errlen);
		return NULL;
	}
	l->udp.data = l;
	rc = uv_udp_open(&l->udp, fd);
	if (rc < 0) {
		close(fd); /* not the handle's yet */
		uv_close((uv_handle_t *)&l->udp, free_cb);
	} else {
		rc = start(l, true, where);
	}
	if (rc < 0) {
		describe_failure(rc, rcp, where, err, errlen);
		return NULL;
	}
	return l;
}

void listen_udp_stop(struct udp_listener *l)
{
	uv_udp_recv_stop(&l->udp);
}

void listen_udp_close(struct udp_listener *l)
{
	uv_udp_recv_stop(&l->udp);
	loop_flush_cancel(l->loop, &l->flush);
	flush(l);
	uv_close((uv_handle_t *)&l->udp, free_cb);
}
