/*
 * UDP listener.  Replies go out with uv_udp_try_send: no allocation and no
 * queue, because a DNS client that misses a reply simply asks again, while a
 * queue of unsendable replies would grow without bound under a flood.
 */
#include "daemon/listen_udp.h"

#include "daemon/query.h"
#include "daemon/server.h"
#include "lib/log.h"
#include "lib/metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct udp_listener {
	uv_udp_t udp;
	struct server *srv;
	uint8_t buf[65536]; /* one datagram at a time, consumed within recv_cb */
};

/* Close callback for handles that are the first member of a heap object. */
static void free_cb(uv_handle_t *handle)
{
	free(handle);
}

static void alloc_cb(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
	struct udp_listener *l = handle->data;

	(void)suggested;
	*buf = uv_buf_init((char *)l->buf, sizeof(l->buf));
}

static void recv_cb(uv_udp_t *udp, ssize_t nread, const uv_buf_t *buf, const struct sockaddr *addr,
		    unsigned flags)
{
	struct udp_listener *l = udp->data;
	struct query_client client = { .origin = QUERY_FROM_UDP, .udp = l };

	if (nread <= 0 || !addr)
		return; /* nothing read, or a transient receive error */
	if (flags & UV_UDP_PARTIAL) {
		metrics_inc(METRIC_dropped_malformed);
		return;
	}
	memcpy(&client.peer, addr,
	       addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
					   : sizeof(struct sockaddr_in));
	query_receive(l->srv, &client, (const uint8_t *)buf->base, (size_t)nread);
}

struct udp_listener *listen_udp_start(struct server *srv, const struct options_addr *addr, int *rcp,
				      char *err, size_t errlen)
{
	struct udp_listener *l = calloc(1, sizeof(*l));
	int rc;

	require(l);
	l->srv = srv;
	rc = uv_udp_init_ex(srv->loop, &l->udp, addr->sa.ss_family);
	if (rc < 0)
		goto fail;
	l->udp.data = l;
	rc = uv_udp_bind(&l->udp, (const struct sockaddr *)&addr->sa,
			 addr->sa.ss_family == AF_INET6 ? UV_UDP_IPV6ONLY : 0);
	if (rc == 0)
		rc = uv_udp_recv_start(&l->udp, alloc_cb, recv_cb);
	if (rc < 0) {
		uv_close((uv_handle_t *)&l->udp, free_cb);
		goto fail_closed;
	}
	log_info("listening on %s/udp", addr->text);
	return l;
fail:
	free(l);
fail_closed:
	*rcp = rc;
	snprintf(err, errlen, "cannot listen on %s/udp: %s%s", addr->text, uv_strerror(rc),
		 rc == UV_EACCES ? " (ports below 1024 need root or CAP_NET_BIND_SERVICE)" : "");
	return NULL;
}

void listen_udp_stop(struct udp_listener *l)
{
	uv_udp_recv_stop(&l->udp);
}

void listen_udp_close(struct udp_listener *l)
{
	uv_udp_recv_stop(&l->udp);
	uv_close((uv_handle_t *)&l->udp, free_cb);
}

int listen_udp_send(struct udp_listener *l, const struct sockaddr_storage *peer, const uint8_t *msg,
		    size_t len)
{
	uv_buf_t buf = uv_buf_init((char *)msg, (unsigned)len);
	int rc = uv_udp_try_send(&l->udp, &buf, 1, (const struct sockaddr *)peer);

	return rc < 0 ? rc : 0;
}
