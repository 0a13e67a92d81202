/*
 * Query lifecycle.  A query is completed exactly once: every path that
 * replies (answer, SERVFAIL, deadline) ends in release(), which unlinks it
 * from its connection, its client and the deadline list before the slot is
 * reused.
 */
#include "daemon/query.h"

#include "daemon/listen_tcp.h"
#include "daemon/listen_udp.h"
#include "daemon/server.h"
#include "daemon/upconn.h"
#include "daemon/upstream.h"
#include "lib/log.h"
#include "lib/metrics.h"

#include <arpa/inet.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct query_pool {
	struct server *srv;
	unsigned capacity;
	unsigned touched;          /* slots handed out at least once; the rest stay untouched memory */
	unsigned inflight;
	struct query *free_list;
	struct query *dl_head, *dl_tail; /* deadline order == arrival order */
	uv_timer_t timer;
	bool timer_running;
	unsigned closing;          /* handles still closing in query_pool_free() */
	struct query *slots;
};

static void deadline_cb(uv_timer_t *timer);

struct query_pool *query_pool_new(struct server *srv, unsigned capacity)
{
	struct query_pool *pool = calloc(1, sizeof(*pool));

	if (!pool)
		return NULL;
	/* calloc of a large array maps zero pages: slots cost memory only once used. */
	pool->slots = calloc(capacity, sizeof(struct query));
	if (!pool->slots) {
		free(pool);
		return NULL;
	}
	pool->srv = srv;
	pool->capacity = capacity;
	uv_timer_init(srv->loop, &pool->timer);
	pool->timer.data = pool;
	return pool;
}

/* The pool goes once its timer and every slot's timer are closed. */
static void pool_closed_cb(uv_handle_t *handle)
{
	struct query_pool *pool = handle->data;

	if (--pool->closing)
		return;
	free(pool->slots);
	free(pool);
}

void query_pool_free(struct query_pool *pool)
{
	while (pool->dl_head)
		query_fail(pool->dl_head, WIRE_EDE_NOT_READY, METRIC_servfail_no_upstream);
	pool->closing = pool->touched + 1;
	for (unsigned i = 0; i < pool->touched; i++) {
		pool->slots[i].timer.data = pool;
		uv_close((uv_handle_t *)&pool->slots[i].timer, pool_closed_cb);
	}
	uv_close((uv_handle_t *)&pool->timer, pool_closed_cb);
}

unsigned query_pool_inflight(const struct query_pool *pool)
{
	return pool->inflight;
}

static struct query *pool_get(struct query_pool *pool)
{
	struct query *q = pool->free_list;

	if (q) {
		pool->free_list = q->free_next;
	} else if (pool->touched < pool->capacity) {
		q = &pool->slots[pool->touched++];
		uv_timer_init(pool->srv->loop, &q->timer);
		q->timer.data = q;
		q->pool = pool;
	} else {
		return NULL;
	}
	pool->inflight++;
	return q;
}

static void arm_timer(struct query_pool *pool)
{
	uint64_t now = uv_now(pool->srv->loop);
	uint64_t due = pool->dl_head->deadline_ms;

	uv_timer_start(&pool->timer, deadline_cb, due > now ? due - now : 0, 0);
	pool->timer_running = true;
}

static void deadline_cb(uv_timer_t *timer)
{
	struct query_pool *pool = timer->data;
	uint64_t now = uv_now(pool->srv->loop);

	pool->timer_running = false;
	while (pool->dl_head && pool->dl_head->deadline_ms <= now)
		query_fail(pool->dl_head, WIRE_EDE_NO_REACHABLE_AUTHORITY, METRIC_servfail_timeout);
	if (pool->dl_head && !pool->timer_running)
		arm_timer(pool);
}

static void client_text(const struct query *q, char *buf, size_t cap)
{
	if (q->client.origin == QUERY_FROM_TCP) {
		snprintf(buf, cap, "%s/tcp", q->client.tcp ? tcp_client_peer(q->client.tcp) : "gone");
		return;
	}
	char ip[INET6_ADDRSTRLEN] = "?";
	unsigned port = 0;
	if (q->client.peer.ss_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)&q->client.peer;
		inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
		port = ntohs(a->sin_port);
	} else if (q->client.peer.ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&q->client.peer;
		inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
		port = ntohs(a->sin6_port);
	}
	snprintf(buf, cap, "%s#%u/udp", ip, port);
}

static void log_query(const struct query *q, unsigned rcode)
{
	char client[96], name[1024], type_buf[16], rcode_buf[16];
	double ms = (double)(uv_hrtime() - q->start_ns) / 1e6;

	client_text(q, client, sizeof(client));
	wire_name_to_text(q->info.q.name, q->info.q.name_len, name, sizeof(name));
	log_tagged("query", "client=%s name=%s type=%s rcode=%s upstream=%s ms=%.2f", client, name,
		   wire_type_to_text(q->info.q.qtype, type_buf, sizeof(type_buf)),
		   wire_rcode_to_text(rcode, rcode_buf, sizeof(rcode_buf)),
		   q->upstream ? q->upstream->spec->label : "-", ms);
}

/* Send @msg to whoever asked @q (if they are still there). */
static void deliver(struct query *q, const uint8_t *msg, size_t len)
{
	if (q->client.origin == QUERY_FROM_UDP) {
		if (listen_udp_send(q->client.udp, &q->client.peer, msg, len) < 0)
			metrics_inc(METRIC_udp_send_failed);
	} else if (q->client.tcp) {
		tcp_client_reply(q->client.tcp, q, msg, len);
	}
}

struct query_attempt *query_find_attempt(struct query *q, const struct upconn *conn, uint16_t id)
{
	for (unsigned i = 0; i < q->n_attempts; i++)
		if (q->attempts[i].conn == conn && q->attempts[i].id == id)
			return &q->attempts[i];
	return NULL;
}

unsigned query_active_attempts(const struct query *q)
{
	unsigned n = 0;

	for (unsigned i = 0; i < q->n_attempts; i++)
		n += q->attempts[i].conn != NULL;
	return n;
}

static void slow_cb(uv_timer_t *timer)
{
	struct query *q = timer->data;

	upstream_query_slow(q->srv->upstreams, q);
}

void query_arm_timer(struct query *q, uint64_t ms)
{
	uv_timer_start(&q->timer, slow_cb, ms, 0);
}

static void release(struct query *q)
{
	struct query_pool *pool = q->pool;

	for (unsigned i = 0; i < q->n_attempts; i++) {
		struct query_attempt *a = &q->attempts[i];
		if (a->conn)
			upconn_forget(a->conn, a->id);
		a->conn = NULL;
	}
	uv_timer_stop(&q->timer);
	if (q->client.origin == QUERY_FROM_TCP && q->client.tcp)
		tcp_client_reply(q->client.tcp, q, NULL, 0); /* unlink without a reply */
	if (q->dl_prev)
		q->dl_prev->dl_next = q->dl_next;
	else
		pool->dl_head = q->dl_next;
	if (q->dl_next)
		q->dl_next->dl_prev = q->dl_prev;
	else
		pool->dl_tail = q->dl_prev;
	if (q->msg != q->inline_msg)
		free(q->msg);
	q->msg = NULL;
	q->free_next = pool->free_list;
	pool->free_list = q;
	pool->inflight--;
	if (q->srv->draining && pool->inflight == 0)
		server_drained(q->srv);
}

void query_answer(struct query *q, uint8_t *msg, size_t len, const struct wire_info *info)
{
	bool client_edns = q->info.has_edns;

	wire_set_id(msg, q->info.id);
	if (q->client.origin == QUERY_FROM_UDP && len > wire_udp_limit(&q->info)) {
		len = wire_truncate(msg, len, info, client_edns);
		metrics_inc(METRIC_answers_truncated);
	} else if (!client_edns) {
		len = wire_strip_opt(msg, len, info); /* RFC 6891 §7: no OPT to a non-EDNS client */
	} else {
		len = wire_filter_opt(msg, len, info); /* keepalive and padding were for our hop */
	}
	metrics_inc(METRIC_answers_forwarded);
	if (q->srv->cfg->log_queries)
		log_query(q, wire_rcode(msg));
	deliver(q, msg, len);
	release(q);
}

/* Reply to a message that never became a query (or whose query failed). */
static void reply_now(struct server *srv, const struct query_client *client,
		      const struct wire_info *info, enum wire_rcode rcode, int ede, struct query *q)
{
	uint8_t buf[WIRE_HEADER_LEN + WIRE_MAX_NAME + 4 + 64];
	size_t len = wire_make_reply(info, rcode, ede, buf, sizeof(buf));

	if (!len)
		return;
	if (client->origin == QUERY_FROM_UDP) {
		if (listen_udp_send(client->udp, &client->peer, buf, len) < 0)
			metrics_inc(METRIC_udp_send_failed);
	} else if (client->tcp) {
		tcp_client_reply(client->tcp, q, buf, len);
	}
	(void)srv;
}

void query_fail(struct query *q, int ede, int metric)
{
	metrics_inc((enum metric)metric);
	if (q->srv->cfg->log_queries)
		log_query(q, WIRE_RCODE_SERVFAIL);
	reply_now(q->srv, &q->client, &q->info, WIRE_RCODE_SERVFAIL, ede, q);
	release(q);
}

void query_detach_client(struct query *q)
{
	q->client.tcp = NULL;
}

void query_receive(struct server *srv, const struct query_client *client, const uint8_t *msg,
		   size_t len)
{
	struct query_pool *pool = srv->queries;
	struct wire_info info;
	int rc = wire_parse(msg, len, &info);

	metrics_inc(client->origin == QUERY_FROM_UDP ? METRIC_queries_udp : METRIC_queries_tcp);
	if (!info.has_header) {
		metrics_inc(METRIC_dropped_malformed);
		return;
	}
	if (info.flags & WIRE_FLAG_QR) {
		/* Answering a response could start a loop between two servers. */
		metrics_inc(METRIC_dropped_responses);
		return;
	}
	if (rc) {
		metrics_inc(METRIC_formerr);
		log_debug("malformed query (%d) from a %s client", rc,
			  client->origin == QUERY_FROM_UDP ? "UDP" : "TCP");
		reply_now(srv, client, &info, WIRE_RCODE_FORMERR, WIRE_EDE_NONE, NULL);
		return;
	}
	if (wire_opcode(info.flags) != 0) {
		metrics_inc(METRIC_notimp);
		reply_now(srv, client, &info, WIRE_RCODE_NOTIMP, WIRE_EDE_NONE, NULL);
		return;
	}
	if (srv->draining) {
		/* Only TCP clients still connected can get here while shutting down. */
		reply_now(srv, client, &info, WIRE_RCODE_SERVFAIL, WIRE_EDE_NOT_READY, NULL);
		return;
	}
	struct query *q = pool_get(pool);
	if (!q) {
		metrics_inc(METRIC_servfail_overload);
		reply_now(srv, client, &info, WIRE_RCODE_SERVFAIL, WIRE_EDE_OTHER, NULL);
		return;
	}
	/* The slot may have been used before: reset all but its timer and buffer. */
	memset(q, 0, offsetof(struct query, timer));
	q->srv = srv;
	q->client = *client;
	q->info = info;
	/* Our OPT adds at most its fixed part, keepalive and a padding block. */
	size_t cap = len + 11 + 4 + 4 + WIRE_PAD_BLOCK;
	q->msg = cap <= sizeof(q->inline_msg) ? q->inline_msg : malloc(cap);
	require(q->msg);
	struct wire_upstream_opts opts = { .pad = srv->cfg->padding, .keepalive = true };
	q->len = wire_make_upstream_query(msg, &info, &opts, q->msg, cap);
	require(q->len > 0);
	q->start_ns = uv_hrtime();
	q->deadline_ms = uv_now(srv->loop) + srv->cfg->timeout_ms;
	q->dl_prev = pool->dl_tail;
	if (pool->dl_tail)
		pool->dl_tail->dl_next = q;
	else
		pool->dl_head = q;
	pool->dl_tail = q;
	if (!pool->timer_running)
		arm_timer(pool);
	if (client->origin == QUERY_FROM_TCP)
		tcp_client_track(client->tcp, q);
	upstream_dispatch(srv->upstreams, q);
}
