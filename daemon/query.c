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
#include "lib/acl.h"
#include "lib/localzone.h"
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
	unsigned touched; /* slots handed out at least once; the rest stay untouched memory */
	unsigned inflight;
	struct query *free_list;
	struct query *dl_head, *dl_tail; /* deadline order == arrival order */
	uv_timer_t timer;
	bool timer_running;
	unsigned closing;	/* handles still closing in query_pool_free() */
	struct query **leaders; /* queries that went upstream, by question hash */
	size_t leaders_mask;
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
	size_t buckets = 64;
	while (buckets < capacity)
		buckets <<= 1;
	pool->leaders = calloc(buckets, sizeof(*pool->leaders));
	if (!pool->leaders) {
		free(pool->slots);
		free(pool);
		return NULL;
	}
	pool->leaders_mask = buckets - 1;
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
	free(pool->leaders);
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

static struct query *take_heir(struct query *q, uint64_t now);

static void deadline_cb(uv_timer_t *timer)
{
	struct query_pool *pool = timer->data;
	uint64_t now = uv_now(pool->srv->loop);

	pool->timer_running = false;
	while (pool->dl_head && pool->dl_head->deadline_ms <= now) {
		struct query *q = pool->dl_head;
		struct query *heir = q->leader ? NULL : take_heir(q, now);
		query_fail(q, WIRE_EDE_NO_REACHABLE_AUTHORITY, METRIC_servfail_timeout);
		if (heir)
			upstream_dispatch(pool->srv->upstreams, heir);
	}
	if (pool->dl_head && !pool->timer_running)
		arm_timer(pool);
}

static void client_text(const struct query_client *client, char *buf, size_t cap)
{
	if (client->origin == QUERY_FROM_PREFETCH) {
		snprintf(buf, cap, "prefetch");
		return;
	}
	if (client->origin == QUERY_FROM_TCP) {
		snprintf(buf, cap, "%s/tcp", client->tcp ? tcp_client_peer(client->tcp) : "gone");
		return;
	}
	char ip[INET6_ADDRSTRLEN] = "?";
	unsigned port = 0;
	if (client->peer.ss_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)&client->peer;
		inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
		port = ntohs(a->sin_port);
	} else if (client->peer.ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&client->peer;
		inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
		port = ntohs(a->sin6_port);
	}
	snprintf(buf, cap, "%s#%u/udp", ip, port);
}

static void log_query(const struct query_client *client, const struct wire_info *info,
		      unsigned rcode, const char *source, uint64_t start_ns)
{
	char who[96], name[1024], type_buf[16], rcode_buf[16];
	double ms = (double)(uv_hrtime() - start_ns) / 1e6;

	client_text(client, who, sizeof(who));
	wire_name_to_text(info->q.name, info->q.name_len, name, sizeof(name));
	log_tagged("query", "client=%s name=%s type=%s rcode=%s upstream=%s ms=%.2f", who, name,
		   wire_type_to_text(info->q.qtype, type_buf, sizeof(type_buf)),
		   wire_rcode_to_text(rcode, rcode_buf, sizeof(rcode_buf)), source, ms);
}

static const char *source_of(const struct query *q)
{
	return q->upstream ? q->upstream->spec->label : "-";
}

/* Send a finished reply to @client; @q (may be NULL) is the TCP query to unlink. */
static void send_reply(const struct query_client *client, struct query *q, const uint8_t *msg,
		       size_t len)
{
	if (client->origin == QUERY_FROM_UDP) {
		if (listen_udp_send(client->udp, &client->peer, msg, len) < 0)
			metrics_inc(METRIC_udp_send_failed);
	} else if (client->origin == QUERY_FROM_TCP && client->tcp) {
		tcp_client_reply(client->tcp, q, msg, len);
	}
}

/*
 * Answer one client from the canonical response @src (parsed as @info: an
 * upstream answer with our hop's options removed, or a cache entry): copied,
 * given the client's ID and question spelling, TTLs aged by @elapsed (or
 * set to @fixed_ttl), its OPT dropped if the client sent none, truncated if
 * over the client's UDP limit.
 */
static void answer_client(struct server *srv, const struct query_client *client,
			  const struct wire_info *client_info, struct query *q, const uint8_t *src,
			  size_t len, const struct wire_info *info, uint32_t elapsed,
			  uint32_t fixed_ttl)
{
	uint8_t *msg = srv->reply_buf;

	if (client->origin == QUERY_FROM_PREFETCH)
		return;
	memcpy(msg, src, len);
	wire_set_id(msg, client_info->id);
	/* Same name but for case: the client gets back the spelling it sent. */
	memcpy(msg + WIRE_HEADER_LEN, client_info->q.name, client_info->q.name_len);
	if (elapsed || fixed_ttl)
		wire_rewrite_ttls(msg, len, info, elapsed, fixed_ttl);
	if (client->origin == QUERY_FROM_UDP && len > wire_udp_limit(client_info)) {
		len = wire_truncate(msg, len, info, client_info->has_edns);
		metrics_inc(METRIC_answers_truncated);
	} else if (!client_info->has_edns) {
		len = wire_strip_opt(msg, len, info); /* RFC 6891 §7: no OPT to a non-EDNS client */
	}
	send_reply(client, q, msg, len);
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

/* -- identical questions in flight ------------------------------------------------ */

static struct query **bucket_of(struct query_pool *pool, uint64_t hash)
{
	return &pool->leaders[hash & pool->leaders_mask];
}

/* Does @q ask what @key describes?  (Queries keep no key of their own: it
 * is derived from their question, which saves a name per slot.) */
static bool same_key(const struct query *q, const struct cache_key *key)
{
	struct cache_key k;

	cache_key_from(&q->info, &k);
	return k.qtype == key->qtype && k.qclass == key->qclass && k.bits == key->bits &&
	       k.name_len == key->name_len && memcmp(k.name, key->name, key->name_len) == 0;
}

static struct query *find_leader(struct query_pool *pool, const struct cache_key *key,
				 uint64_t hash)
{
	for (struct query *l = *bucket_of(pool, hash); l; l = l->same_next)
		if (l->key_hash == hash && same_key(l, key))
			return l;
	return NULL;
}

static void add_leader(struct query_pool *pool, struct query *q)
{
	struct query **b = bucket_of(pool, q->key_hash);

	q->same_next = *b;
	*b = q;
}

static void remove_leader(struct query_pool *pool, struct query *q)
{
	struct query **p = bucket_of(pool, q->key_hash);

	while (*p && *p != q)
		p = &(*p)->same_next;
	if (*p)
		*p = q->same_next;
}

/*
 * Leader @q has reached its deadline, but queries that joined it later
 * have not: they must not fail with it, after waiting a fraction of their
 * own timeout.  The first of them becomes the leader of the others, with a
 * copy of @q's upstream message, and is returned, to be sent upstream once
 * @q is gone; those whose time is up too stay with @q.  NULL when none.
 */
static struct query *take_heir(struct query *q, uint64_t now)
{
	struct query *heir = NULL, **tail = NULL, *expired = NULL;

	for (struct query *f = q->followers, *next; f; f = next) {
		next = f->follow_next;
		if (f->deadline_ms <= now) {
			f->follow_next = expired;
			expired = f;
		} else if (!heir) {
			heir = f;
			heir->leader = NULL;
			heir->followers = NULL;
			tail = &heir->followers;
		} else {
			f->leader = heir;
			f->follow_next = NULL;
			*tail = f;
			tail = &f->follow_next;
		}
	}
	q->followers = expired;
	if (!heir)
		return NULL;
	heir->follow_next = NULL;
	heir->msg = q->len <= sizeof(heir->inline_msg) ? heir->inline_msg : malloc(q->len);
	require(heir->msg);
	memcpy(heir->msg, q->msg, q->len);
	heir->len = q->len;
	remove_leader(q->pool, q);
	add_leader(q->pool, heir);
	return heir;
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
	if (q->leader) {
		/* Normally the leader releases its followers itself; be safe anyway. */
		struct query **p = &q->leader->followers;
		while (*p && *p != q)
			p = &(*p)->follow_next;
		if (*p)
			*p = q->follow_next;
	} else {
		remove_leader(pool, q);
	}
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

/* Answer @q and everyone waiting on it from @msg, then release them all. */
static void complete_all(struct query *q, const uint8_t *msg, size_t len,
			 const struct wire_info *info, uint32_t elapsed, uint32_t fixed_ttl,
			 const char *source)
{
	struct server *srv = q->srv;
	struct query *f = q->followers;

	q->followers = NULL;
	/* Log before replying: a TCP reply unlinks the query from its client. */
	for (struct query *next; f; f = next) {
		next = f->follow_next;
		if (srv->cfg->log_queries)
			log_query(&f->client, &f->info, wire_rcode(msg), source, f->start_ns);
		answer_client(srv, &f->client, &f->info, f, msg, len, info, elapsed, fixed_ttl);
		release(f);
	}
	if (srv->cfg->log_queries && q->client.origin != QUERY_FROM_PREFETCH)
		log_query(&q->client, &q->info, wire_rcode(msg), source, q->start_ns);
	answer_client(srv, &q->client, &q->info, q, msg, len, info, elapsed, fixed_ttl);
	release(q);
}

static bool cache_on(const struct server *srv)
{
	return srv->cfg->cache_bytes > 0;
}

static void store(struct server *srv, const struct cache_key *key, const uint8_t *msg, size_t len,
		  const struct wire_info *info)
{
	uint32_t ttl;

	if (!cache_on(srv) || wire_cache_ttl(msg, len, info, &ttl) < 0)
		return;
	if (ttl < srv->cfg->cache_min_ttl)
		ttl = srv->cfg->cache_min_ttl;
	if (ttl > srv->cfg->cache_max_ttl)
		ttl = srv->cfg->cache_max_ttl;
	if (ttl > 0)
		cache_store(srv->cache, key, msg, len, ttl, uv_now(srv->loop));
}

void query_answer(struct query *q, uint8_t *msg, size_t len, const struct wire_info *info)
{
	struct wire_info canon;

	/* Keepalive and padding were for our hop; what is left is what we cache
	 * and what every client gets (adapted). */
	len = wire_filter_opt(msg, len, info);
	if (wire_parse(msg, len, &canon) != 0) {
		query_fail(q, WIRE_EDE_OTHER, METRIC_upstream_bad_answers);
		return;
	}
	metrics_inc(METRIC_answers_forwarded);
	struct cache_key key;
	cache_key_from(&q->info, &key);
	store(q->srv, &key, msg, len, &canon);
	complete_all(q, msg, len, &canon, 0, 0, source_of(q));
}

/* Reply to a message that never became a query (or whose query failed). */
static void reply_now(const struct query_client *client, const struct wire_info *info,
		      enum wire_rcode rcode, int ede, struct query *q)
{
	uint8_t buf[WIRE_HEADER_LEN + WIRE_MAX_NAME + 4 + 64];
	size_t len = wire_make_reply(info, rcode, ede, buf, sizeof(buf));

	if (len)
		send_reply(client, q, buf, len);
}

/* Serve-stale (RFC 8767): every upstream failed; an expired answer, if the
 * cache still has one within the window, is better than SERVFAIL. */
static bool serve_stale(struct query *q)
{
	struct server *srv = q->srv;
	struct cache_hit hit;
	struct wire_info info;

	struct cache_key key;
	cache_key_from(&q->info, &key);
	if (!cache_on(srv) || !srv->cfg->serve_stale ||
	    !cache_lookup(srv->cache, &key, uv_now(srv->loop), true, srv->cfg->serve_stale, &hit) ||
	    wire_parse(hit.msg, hit.len, &info) != 0)
		return false;
	if (hit.stale)
		metrics_inc(METRIC_cache_stale_served);
	/* A copy: answering may not change the cache, but make no assumption. */
	uint8_t copy[WIRE_MAX_MSG];
	memcpy(copy, hit.msg, hit.len);
	complete_all(q, copy, hit.len, &info, hit.stale ? 0 : hit.age_s, hit.stale ? 30 : 0,
		     "cache-stale");
	return true;
}

void query_fail(struct query *q, int ede, int metric)
{
	if (serve_stale(q))
		return;
	metrics_inc((enum metric)metric);
	struct query *f = q->followers;
	q->followers = NULL;
	for (struct query *next; f; f = next) {
		next = f->follow_next;
		if (q->srv->cfg->log_queries)
			log_query(&f->client, &f->info, WIRE_RCODE_SERVFAIL, source_of(q),
				  f->start_ns);
		reply_now(&f->client, &f->info, WIRE_RCODE_SERVFAIL, ede, f);
		release(f);
	}
	if (q->srv->cfg->log_queries && q->client.origin != QUERY_FROM_PREFETCH)
		log_query(&q->client, &q->info, WIRE_RCODE_SERVFAIL, source_of(q), q->start_ns);
	reply_now(&q->client, &q->info, WIRE_RCODE_SERVFAIL, ede, q);
	release(q);
}

void query_detach_client(struct query *q)
{
	q->client.tcp = NULL;
}

/* Start a query for @info (parsed from @msg): joins an identical one in
 * flight, or goes upstream.  False when the pool is full. */
static bool start_query(struct server *srv, const struct query_client *client,
			const struct wire_info *info, const uint8_t *msg, size_t len,
			const struct cache_key *key, uint64_t hash)
{
	struct query_pool *pool = srv->queries;
	uint8_t *upstream_msg = srv->query_buf;
	struct wire_upstream_opts opts = { .pad = srv->cfg->padding, .keepalive = true };
	size_t upstream_len =
	    wire_make_upstream_query(msg, info, &opts, upstream_msg, sizeof(srv->query_buf));

	(void)len;
	if (upstream_len == 0) {
		/* Only a query near 64 KiB cannot take our OPT: refuse it. */
		metrics_inc(METRIC_formerr);
		reply_now(client, info, WIRE_RCODE_FORMERR, WIRE_EDE_NONE, NULL);
		return true;
	}
	struct query *q = pool_get(pool);
	if (!q)
		return false;
	/* The slot may have been used before: reset all but its timer and buffer. */
	memset(q, 0, offsetof(struct query, timer));
	q->srv = srv;
	q->client = *client;
	q->info = *info;
	q->key_hash = hash;
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

	struct query *leader = find_leader(pool, key, hash);
	if (leader) {
		/* The same question is on its way: wait for that answer. */
		metrics_inc(METRIC_queries_collapsed);
		q->leader = leader;
		q->follow_next = leader->followers;
		leader->followers = q;
		return true;
	}
	if (info->has_ecs)
		metrics_inc(METRIC_ecs_stripped); /* wire_make_upstream_query drops it */
	q->msg = upstream_len <= sizeof(q->inline_msg) ? q->inline_msg : malloc(upstream_len);
	require(q->msg);
	memcpy(q->msg, upstream_msg, upstream_len);
	q->len = upstream_len;
	add_leader(pool, q);
	upstream_dispatch(srv->upstreams, q);
	return true;
}

/* A cache hit close to expiry on a popular name: refresh it in the
 * background so clients keep hitting the cache (like unbound's prefetch). */
static void maybe_prefetch(struct server *srv, const struct cache_hit *hit,
			   const struct wire_info *info, const uint8_t *msg, size_t len,
			   const struct cache_key *key, uint64_t hash)
{
	if (!srv->cfg->prefetch || hit->hits < 2 || hit->ttl_s < 10 ||
	    (uint64_t)hit->age_s * 10 < (uint64_t)hit->ttl_s * 9)
		return;
	if (find_leader(srv->queries, key, hash))
		return; /* already being fetched */
	struct query_client self = { .origin = QUERY_FROM_PREFETCH };
	if (start_query(srv, &self, info, msg, len, key, hash))
		metrics_inc(METRIC_cache_prefetches);
}

/* Answer from the cache if it holds a fresh answer; true when answered. */
static bool answer_from_cache(struct server *srv, const struct query_client *client,
			      const struct wire_info *info, const uint8_t *msg, size_t len,
			      const struct cache_key *key, uint64_t hash)
{
	struct cache_hit hit;
	struct wire_info cached;
	uint64_t start_ns = srv->cfg->log_queries ? uv_hrtime() : 0;

	if (!cache_lookup(srv->cache, key, uv_now(srv->loop), false, srv->cfg->serve_stale, &hit)) {
		metrics_inc(METRIC_cache_misses);
		return false;
	}
	if (wire_parse(hit.msg, hit.len, &cached) != 0)
		return false; /* cannot happen: it parsed when stored */
	metrics_inc(METRIC_cache_hits);
	if (srv->cfg->log_queries)
		log_query(client, info, wire_rcode(hit.msg), "cache", start_ns);
	answer_client(srv, client, info, NULL, hit.msg, hit.len, &cached, hit.age_s, 0);
	maybe_prefetch(srv, &hit, info, msg, len, key, hash);
	return true;
}

/* Locally served zones (localhost, private reverse zones, DDR...) and the
 * blocklist: answered here, never sent upstream.  True when answered. */
static bool answer_locally(struct server *srv, const struct query_client *client,
			   const struct wire_info *info)
{
	uint8_t buf[LOCALZONE_MAX_REPLY];
	size_t len = 0;
	uint64_t start_ns = srv->cfg->log_queries ? uv_hrtime() : 0;
	enum localzone_verdict v = localzone_lookup(srv->localzone, info, buf, sizeof(buf), &len);

	if (v == LOCALZONE_FORWARD)
		return false;
	metrics_inc(v == LOCALZONE_BLOCKED ? METRIC_blocked : METRIC_local_answers);
	if (len == 0) {
		reply_now(client, info, WIRE_RCODE_SERVFAIL, WIRE_EDE_OTHER, NULL);
		return true;
	}
	if (srv->cfg->log_queries)
		log_query(client, info, wire_rcode(buf),
			  v == LOCALZONE_BLOCKED ? "blocked" : "local", start_ns);
	send_reply(client, NULL, buf, len);
	return true;
}

static bool client_allowed(const struct server *srv, const struct query_client *client)
{
	if (client->origin == QUERY_FROM_UDP)
		return acl_allows(&srv->cfg->allow, (const struct sockaddr *)&client->peer);
	return client->origin != QUERY_FROM_TCP || !client->tcp || tcp_client_allowed(client->tcp);
}

void query_receive(struct server *srv, const struct query_client *client, const uint8_t *msg,
		   size_t len)
{
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
	if (!client_allowed(srv, client)) {
		metrics_inc(METRIC_refused_clients);
		reply_now(client, &info, WIRE_RCODE_REFUSED, WIRE_EDE_PROHIBITED, NULL);
		return;
	}
	if (rc) {
		metrics_inc(METRIC_formerr);
		log_debug("malformed query (%d) from a %s client", rc,
			  client->origin == QUERY_FROM_UDP ? "UDP" : "TCP");
		reply_now(client, &info, WIRE_RCODE_FORMERR, WIRE_EDE_NONE, NULL);
		return;
	}
	if (wire_opcode(info.flags) != 0) {
		metrics_inc(METRIC_notimp);
		reply_now(client, &info, WIRE_RCODE_NOTIMP, WIRE_EDE_NONE, NULL);
		return;
	}
	if (srv->draining) {
		/* Only TCP clients still connected can get here while shutting down. */
		metrics_inc(METRIC_servfail_shutdown);
		reply_now(client, &info, WIRE_RCODE_SERVFAIL, WIRE_EDE_NOT_READY, NULL);
		return;
	}
	if (answer_locally(srv, client, &info))
		return;
	struct cache_key key;
	cache_key_from(&info, &key);
	uint64_t hash = cache_key_hash(srv->cache, &key);
	if (cache_on(srv) && answer_from_cache(srv, client, &info, msg, len, &key, hash))
		return;
	if (!start_query(srv, client, &info, msg, len, &key, hash)) {
		metrics_inc(METRIC_servfail_overload);
		reply_now(client, &info, WIRE_RCODE_SERVFAIL, WIRE_EDE_OTHER, NULL);
	}
}
