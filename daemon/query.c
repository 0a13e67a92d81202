/*
 * Query lifecycle.  A query is completed exactly once: every path that
 * replies (answer, SERVFAIL, deadline) ends in release(), which cancels its
 * upstream job, unlinks it from the deadline list and tells its frontend
 * before the slot is reused.
 */
#include "daemon/query.h"

#include "daemon/dnstap.h"
#include "daemon/loop.h"
#include "lib/cache.h"
#include "lib/localzone.h"
#include "lib/log.h"
#include "lib/metrics.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { INLINE_MSG = 512 };

struct query {
	struct query_pool *pool;
	struct frontend_client client;
	struct wire_info info; /* the client's query: ID, question, EDNS */
	uint8_t *msg;	       /* the message to send upstream (built from the
				* client's: our OPT, padded); points at
				* inline_msg or, when larger, owned heap memory */
	size_t len;
	uint64_t start_ns;    /* uv_hrtime() when received, for the query log */
	uint64_t deadline_ms; /* SERVFAIL at this loop time */
	/* identical questions in flight share one upstream job */
	uint64_t key_hash;	   /* hash of its cache key (see cache_key_from()) */
	struct query *leader;	   /* the query this one waits on, or NULL */
	struct query *followers;   /* queries waiting on this one (not owned) */
	struct query *follow_next; /* next in the leader's followers */
	struct query *same_next;   /* next leader in the same collapse bucket */
	bool has_job;		   /* job was started and not ended */
	bool waiting;		   /* between start_query() and release() */
	/* lists */
	struct query *dl_prev, *dl_next; /* deadline list, in deadline order */
	struct query *free_next;	 /* pool free list */
	/* not reset between uses of a slot (the job's timer) */
	struct upstream_job job;
	uint8_t inline_msg[INLINE_MSG];
};

struct query_pool {
	struct query_env *env;
	unsigned capacity;
	unsigned touched; /* slots handed out at least once; the rest stay untouched memory */
	unsigned inflight;
	struct query *free_list;
	struct query *dl_head, *dl_tail; /* deadline order */
	uv_timer_t timer;
	bool timer_running;
	uint64_t timer_due_ms;	/* when it fires, while running */
	unsigned closing;	/* handles still closing in query_pool_free() */
	struct query **leaders; /* queries that went upstream, by question hash */
	size_t leaders_mask;
	struct query *slots;
};

static void deadline_cb(uv_timer_t *timer);
static void query_fail(struct query *q, int ede, int metric);

/* -- prefetch: a query of our own, with nobody to answer ------------------------- */

static void prefetch_reply(const struct frontend_client *c, const uint8_t *msg, size_t len)
{
	(void)c, (void)msg, (void)len;
}

static void prefetch_done(const struct frontend_client *c)
{
	(void)c;
}

static size_t prefetch_max_reply(const struct frontend_client *c, const struct wire_info *query)
{
	(void)c, (void)query;
	return WIRE_MAX_MSG;
}

static void prefetch_peer(const struct frontend_client *c, char *buf, size_t cap)
{
	(void)c;
	snprintf(buf, cap, "prefetch");
}

static bool prefetch_allowed(const struct frontend_client *c)
{
	(void)c;
	return true;
}

static const struct frontend_ops prefetch_ops = {
	.name = "prefetch",
	.reply = prefetch_reply,
	.done = prefetch_done,
	.max_reply = prefetch_max_reply,
	.peer = prefetch_peer,
	.allowed = prefetch_allowed,
};

/* -- the pool -------------------------------------------------------------------- */

struct query_pool *query_pool_new(struct query_env *env, unsigned capacity)
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
	pool->env = env;
	pool->capacity = capacity;
	uv_timer_init(&env->loop->uv, &pool->timer);
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

void query_pool_free(struct query_pool *pool, int metric)
{
	while (pool->dl_head)
		query_fail(pool->dl_head, WIRE_EDE_NOT_READY, metric);
	pool->closing = pool->touched + 1;
	for (unsigned i = 0; i < pool->touched; i++)
		upstream_job_deinit(&pool->slots[i].job, pool_closed_cb, pool);
	uv_timer_stop(&pool->timer);
	uv_close((uv_handle_t *)&pool->timer, pool_closed_cb);
}

struct query_env *query_pool_env(struct query_pool *pool)
{
	return pool->env;
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
		upstream_job_init(&q->job, &pool->env->loop->uv);
	} else {
		return NULL;
	}
	pool->inflight++;
	metrics_gauge_set(METRIC_GAUGE_queries_in_flight, pool->inflight);
	return q;
}

static void arm_timer(struct query_pool *pool)
{
	uint64_t now = uv_now(&pool->env->loop->uv);
	uint64_t due = pool->dl_head->deadline_ms;

	uv_timer_start(&pool->timer, deadline_cb, due > now ? due - now : 0, 0);
	pool->timer_running = true;
	pool->timer_due_ms = due;
}

/* Insert @q in deadline order.  Deadlines are nearly always in arrival
 * order, so the walk from the tail ends at once; only after a reload that
 * shortened --timeout do new queries pass the older ones. */
static void deadline_insert(struct query_pool *pool, struct query *q)
{
	struct query *after = pool->dl_tail;

	while (after && after->deadline_ms > q->deadline_ms)
		after = after->dl_prev;
	q->dl_prev = after;
	q->dl_next = after ? after->dl_next : pool->dl_head;
	if (q->dl_next)
		q->dl_next->dl_prev = q;
	else
		pool->dl_tail = q;
	if (after)
		after->dl_next = q;
	else
		pool->dl_head = q;
	/* The timer need not fire exactly at the head's deadline, only not
	 * later: one armed for an earlier query still running (whose query has
	 * gone) fires, finds nothing due, and re-arms.  Re-arming per query
	 * costs a timer-heap update each time. */
	if (pool->dl_head == q && (!pool->timer_running || pool->timer_due_ms > q->deadline_ms))
		arm_timer(pool);
}

static void deadline_remove(struct query_pool *pool, struct query *q)
{
	if (q->dl_prev)
		q->dl_prev->dl_next = q->dl_next;
	else
		pool->dl_head = q->dl_next;
	if (q->dl_next)
		q->dl_next->dl_prev = q->dl_prev;
	else
		pool->dl_tail = q->dl_prev;
	q->dl_prev = q->dl_next = NULL;
}

static struct query *take_heir(struct query *q, uint64_t now);
static void start_job(struct query *q);

static void deadline_cb(uv_timer_t *timer)
{
	struct query_pool *pool = timer->data;
	uint64_t now = uv_now(&pool->env->loop->uv);

	pool->timer_running = false;
	while (pool->dl_head && pool->dl_head->deadline_ms <= now) {
		struct query *q = pool->dl_head;
		struct query *heir = q->leader ? NULL : take_heir(q, now);
		query_fail(q, WIRE_EDE_NO_REACHABLE_AUTHORITY, METRIC_servfail_timeout);
		if (heir)
			start_job(heir);
	}
	if (pool->dl_head && !pool->timer_running)
		arm_timer(pool);
}

/* -- replies -------------------------------------------------------------------- */

/* Count @metric once for each client among @q (the leader, unless it is
 * a prefetch) and its followers: how each of their queries ended. */
static void count_clients(const struct query *q, enum metric metric)
{
	if (q->client.ops != &prefetch_ops)
		metrics_inc(metric);
	for (const struct query *f = q->followers; f; f = f->follow_next)
		metrics_inc(metric);
}

/* The cache changed (or may have): its size, for the metrics. */
static void publish_cache(const struct query_env *env)
{
	metrics_gauge_set(METRIC_GAUGE_cache_entries, cache_entries(env->cache));
	metrics_gauge_set(METRIC_GAUGE_cache_bytes, cache_bytes(env->cache));
}

static void log_query(const struct frontend_client *client, const struct wire_info *info,
		      unsigned rcode, const char *source, uint64_t start_ns)
{
	char who[96], peer[80], name[1024], type_buf[16], rcode_buf[16];
	double ms = (double)(uv_hrtime() - start_ns) / 1e6;

	client->ops->peer(client, peer, sizeof(peer));
	/* The stream frontend carries TCP and DoT alike: its origin says which. */
	struct frontend_origin origin = { .protocol = client->ops->name };
	if (client->ops->origin)
		client->ops->origin(client, &origin);
	if (client->ops == &prefetch_ops)
		snprintf(who, sizeof(who), "%s", peer);
	else
		snprintf(who, sizeof(who), "%s/%s", peer,
			 origin.protocol ? origin.protocol : client->ops->name);
	wire_name_to_text(info->q.name, info->q.name_len, name, sizeof(name));
	log_tagged("query", "client=%s name=%s type=%s rcode=%s upstream=%s ms=%.2f", who, name,
		   wire_type_to_text(info->q.qtype, type_buf, sizeof(type_buf)),
		   wire_rcode_to_text(rcode, rcode_buf, sizeof(rcode_buf)), source, ms);
}

/* The options a stream client's answer gains (its OPT, parsed as @info,
 * the last record): the idle timeout (RFC 7828), then, on an encrypted
 * transport and when the query was padded, padding (RFC 8467). */
static size_t add_stream_options(const struct frontend_client *client,
				 const struct wire_info *query, uint8_t *msg, size_t len,
				 size_t cap, const struct wire_info *info)
{
	if (client->ops->keepalive)
		len = wire_add_keepalive(msg, len, cap, info, client->ops->keepalive(client));
	if (query->has_padding && client->ops->encrypted && client->ops->encrypted(client))
		len = wire_pad_reply(msg, len, cap, info, WIRE_PAD_REPLY_BLOCK);
	return len;
}

/* Every reply to a client leaves here: counted by its rcode, seen by
 * dnstap.  @start_ns: when its query came (uv_hrtime()), 0: just now, in
 * this query_receive(). */
static void send_reply(const struct frontend_client *client, const uint8_t *msg, size_t len,
		       uint64_t start_ns)
{
	static const enum metric by_rcode[] = {
		METRIC_rcode_noerror,  METRIC_rcode_formerr, METRIC_rcode_servfail,
		METRIC_rcode_nxdomain, METRIC_rcode_notimp,  METRIC_rcode_refused,
	};
	unsigned rcode = wire_rcode(msg);

	if (client->ops == &prefetch_ops)
		return;
	metrics_inc(rcode < sizeof(by_rcode) / sizeof(by_rcode[0]) ? by_rcode[rcode]
								   : METRIC_rcode_other);
	dnstap_client_response(client, msg, len, start_ns);
	client->ops->reply(client, msg, len);
}

/*
 * Answer one client from the canonical response @src (parsed as @info: an
 * upstream answer with our hop's options removed, or a cache entry): copied,
 * given the client's ID and question spelling, TTLs aged by @elapsed (or
 * set to @fixed_ttl), its OPT dropped if the client sent none, truncated if
 * over what the client may receive.
 */
static void answer_client(struct query_env *env, const struct frontend_client *client,
			  const struct wire_info *client_info, const uint8_t *src, size_t len,
			  const struct wire_info *info, uint32_t elapsed, uint32_t fixed_ttl,
			  uint64_t start_ns)
{
	uint8_t *msg = env->loop->scratch->reply;

	if (client->ops == &prefetch_ops)
		return;
	memcpy(msg, src, len);
	wire_set_id(msg, client_info->id);
	/* Same name but for case: the client gets back the spelling it sent. */
	memcpy(msg + WIRE_HEADER_LEN, client_info->q.name, client_info->q.name_len);
	if (elapsed || fixed_ttl)
		wire_rewrite_ttls(msg, len, info, elapsed, fixed_ttl);
	if (len > client->ops->max_reply(client, client_info)) {
		len = wire_truncate(msg, len, info, client_info->has_edns);
		metrics_inc(METRIC_answers_truncated);
	} else if (!client_info->has_edns) {
		len = wire_strip_opt(msg, len, info); /* RFC 6891 §7: no OPT to a non-EDNS client */
	} else {
		len = add_stream_options(client, client_info, msg, len,
					 sizeof(env->loop->scratch->reply), info);
	}
	send_reply(client, msg, len, start_ns);
}

/* Reply to a query that failed, which came at @start_ns (0: just now). */
static void reply_failed(const struct frontend_client *client, const struct wire_info *info,
			 enum wire_rcode rcode, int ede, uint64_t start_ns)
{
	uint8_t buf[WIRE_HEADER_LEN + WIRE_MAX_NAME + 4 + 64];
	size_t len = wire_make_reply(info, rcode, ede, buf, sizeof(buf));

	if (len)
		send_reply(client, buf, len, start_ns);
}

/* Reply to a message that never became a query. */
static void reply_now(const struct frontend_client *client, const struct wire_info *info,
		      enum wire_rcode rcode, int ede)
{
	reply_failed(client, info, rcode, ede, 0);
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
	struct query_env *env = pool->env;

	if (q->has_job)
		upstream_job_cancel(&q->job);
	q->has_job = false;
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
	deadline_remove(pool, q);
	if (q->msg != q->inline_msg)
		free(q->msg);
	q->msg = NULL;
	q->waiting = false;
	q->client.ops->done(&q->client);
	q->free_next = pool->free_list;
	pool->free_list = q;
	pool->inflight--;
	metrics_gauge_set(METRIC_GAUGE_queries_in_flight, pool->inflight);
	if (env->draining && pool->inflight == 0 && env->drained)
		env->drained(env->drained_arg);
}

/* Answer @q and everyone waiting on it from @msg, then release them all;
 * each client's query ended as @result. */
static void complete_all(struct query *q, const uint8_t *msg, size_t len,
			 const struct wire_info *info, uint32_t elapsed, uint32_t fixed_ttl,
			 const char *source, enum metric result)
{
	struct query_env *env = q->pool->env;
	bool log = env->cfg->log_queries;
	struct query *f = q->followers;

	count_clients(q, result);

	q->followers = NULL;
	for (struct query *next; f; f = next) {
		next = f->follow_next;
		if (log)
			log_query(&f->client, &f->info, wire_rcode(msg), source, f->start_ns);
		answer_client(env, &f->client, &f->info, msg, len, info, elapsed, fixed_ttl,
			      f->start_ns);
		release(f);
	}
	if (log && q->client.ops != &prefetch_ops)
		log_query(&q->client, &q->info, wire_rcode(msg), source, q->start_ns);
	answer_client(env, &q->client, &q->info, msg, len, info, elapsed, fixed_ttl, q->start_ns);
	release(q);
}

static bool cache_on(const struct query_env *env)
{
	return env->cfg->cache_bytes > 0;
}

static void store(struct query_env *env, const struct cache_key *key, const uint8_t *msg,
		  size_t len, const struct wire_info *info)
{
	uint32_t ttl;

	if (!cache_on(env) || wire_cache_ttl(msg, len, info, &ttl) < 0)
		return;
	if (ttl < env->cfg->cache_min_ttl)
		ttl = env->cfg->cache_min_ttl;
	if (ttl > env->cfg->cache_max_ttl)
		ttl = env->cfg->cache_max_ttl;
	if (ttl > 0) {
		cache_store(env->cache, key, msg, len, ttl, uv_now(&env->loop->uv));
		publish_cache(env);
	}
}

static struct query *of_job(struct upstream_job *job)
{
	return (struct query *)((char *)job - offsetof(struct query, job));
}

/* The upstream layer's answer to @job: matched to its question already. */
static void job_answered(struct upstream_job *job, uint8_t *msg, size_t len,
			 const struct wire_info *info)
{
	struct query *q = of_job(job);
	struct query_env *env = q->pool->env;
	struct wire_info canon;

	q->has_job = false; /* the upstream layer holds nothing of it any more */
	/* Keepalive and padding were for our hop; what is left is what we cache
	 * and what every client gets (adapted). */
	len = wire_filter_opt(msg, len, info);
	if (wire_parse(msg, len, &canon) != 0) {
		metrics_inc(METRIC_upstream_bad_answers);
		query_fail(q, WIRE_EDE_OTHER, METRIC_servfail_bad_answer);
		return;
	}
	metrics_inc(METRIC_answers_forwarded);
	struct cache_key key;
	cache_key_from(&q->info, &key);
	store(env, &key, msg, len, &canon);
	complete_all(q, msg, len, &canon, 0, 0, upstream_job_source(job), METRIC_answered);
}

static void job_failed(struct upstream_job *job, int ede, int metric)
{
	struct query *q = of_job(job);

	q->has_job = false; /* the upstream layer holds nothing of it any more */
	query_fail(q, ede, metric);
}

const struct upstream_hooks query_upstream_hooks = {
	.answered = job_answered,
	.failed = job_failed,
};

/* Serve-stale (RFC 8767): every upstream failed; an expired answer, if the
 * cache still has one within the window, is better than SERVFAIL. */
static bool serve_stale(struct query *q)
{
	struct query_env *env = q->pool->env;
	struct cache_hit hit;
	struct wire_info info;
	struct cache_key key;

	cache_key_from(&q->info, &key);
	if (!cache_on(env) || !env->cfg->serve_stale ||
	    !cache_lookup(env->cache, &key, uv_now(&env->loop->uv), true, env->cfg->serve_stale,
			  &hit) ||
	    wire_parse(hit.msg, hit.len, &info) != 0)
		return false;
	/* A copy: answering may not change the cache, but make no assumption. */
	uint8_t copy[WIRE_MAX_MSG];
	memcpy(copy, hit.msg, hit.len);
	/* An entry fresh again (stored meanwhile) is a plain cache answer. */
	complete_all(q, copy, hit.len, &info, hit.stale ? 0 : hit.age_s, hit.stale ? 30 : 0,
		     "cache-stale", hit.stale ? METRIC_cache_stale_served : METRIC_cache_hits);
	return true;
}

static void query_fail(struct query *q, int ede, int metric)
{
	struct query_env *env = q->pool->env;
	bool log = env->cfg->log_queries;
	const char *source = upstream_job_source(&q->job);

	if (q->has_job) {
		upstream_job_cancel(&q->job);
		q->has_job = false;
	}
	if (metric != METRIC_servfail_shutdown && serve_stale(q))
		return;
	count_clients(q, (enum metric)metric);
	struct query *f = q->followers;
	q->followers = NULL;
	for (struct query *next; f; f = next) {
		next = f->follow_next;
		if (log)
			log_query(&f->client, &f->info, WIRE_RCODE_SERVFAIL, source, f->start_ns);
		reply_failed(&f->client, &f->info, WIRE_RCODE_SERVFAIL, ede, f->start_ns);
		release(f);
	}
	if (log && q->client.ops != &prefetch_ops)
		log_query(&q->client, &q->info, WIRE_RCODE_SERVFAIL, source, q->start_ns);
	reply_failed(&q->client, &q->info, WIRE_RCODE_SERVFAIL, ede, q->start_ns);
	release(q);
}

/* -- new queries ------------------------------------------------------------------ */

/* The upstreams for @q: the longest forward zone that holds its name, or
 * the default set. */
static struct upstream_set *route(const struct query_env *env, const struct wire_question *q)
{
	const struct query_zone *best = NULL;

	for (unsigned i = 0; i < env->n_zones; i++) {
		const struct query_zone *z = &env->zones[i];
		if ((!best || z->name_len > best->name_len) &&
		    wire_name_in_zone(q->name, q->name_len, z->name, z->name_len))
			best = z;
	}
	return best ? best->upstreams : env->upstreams;
}

static void start_job(struct query *q)
{
	q->job.msg = q->msg;
	q->job.len = q->len;
	q->job.question = &q->info.q;
	q->has_job = true;
	upstream_job_start(route(q->pool->env, &q->info.q), &q->job);
}

/* Start a query for @info (parsed from @msg): joins an identical one in
 * flight, or goes upstream.  False when the pool is full.  *@started is the
 * query (which may have ended already, if nothing could take it), or NULL
 * when it was answered at once. */
static bool start_query(struct query_pool *pool, const struct frontend_client *client,
			const struct wire_info *info, const uint8_t *msg,
			const struct cache_key *key, uint64_t hash, struct query **started)
{
	struct query_env *env = pool->env;
	uint8_t *upstream_msg = env->loop->scratch->query;
	struct wire_upstream_opts opts = { .pad = env->cfg->padding, .keepalive = true };
	size_t upstream_len = wire_make_upstream_query(msg, info, &opts, upstream_msg,
						       sizeof(env->loop->scratch->query));

	if (upstream_len == 0) {
		/* Only a query near 64 KiB cannot take our OPT: refuse it. */
		metrics_inc(METRIC_formerr);
		reply_now(client, info, WIRE_RCODE_FORMERR, WIRE_EDE_NONE);
		client->ops->done(client);
		return true;
	}
	struct query *q = pool_get(pool);
	if (!q)
		return false;
	*started = q;
	/* The slot may have been used before: reset all but its job's timer and buffer. */
	memset(q, 0, offsetof(struct query, job));
	q->pool = pool;
	q->client = *client;
	q->info = *info;
	q->key_hash = hash;
	q->job.source = NULL;
	q->start_ns = uv_hrtime();
	q->deadline_ms = uv_now(&env->loop->uv) + env->cfg->timeout_ms;
	q->waiting = true;
	deadline_insert(pool, q);

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
	start_job(q);
	return true;
}

/* A cache hit close to expiry on a popular name: refresh it in the
 * background so clients keep hitting the cache (like unbound's prefetch). */
static void maybe_prefetch(struct query_pool *pool, const struct cache_hit *hit,
			   const struct wire_info *info, const uint8_t *msg,
			   const struct cache_key *key, uint64_t hash)
{
	if (!pool->env->cfg->prefetch || hit->hits < 2 || hit->ttl_s < 10 ||
	    (uint64_t)hit->age_s * 10 < (uint64_t)hit->ttl_s * 9)
		return;
	if (find_leader(pool, key, hash))
		return; /* already being fetched */
	struct frontend_client self = { .ops = &prefetch_ops };
	struct query *q = NULL;
	if (start_query(pool, &self, info, msg, key, hash, &q))
		metrics_inc(METRIC_cache_prefetches);
}

/* Answer from the cache if it holds a fresh answer; true when answered. */
static bool answer_from_cache(struct query_pool *pool, const struct frontend_client *client,
			      const struct wire_info *info, const uint8_t *msg,
			      const struct cache_key *key, uint64_t hash)
{
	struct query_env *env = pool->env;
	struct cache_hit hit;
	struct wire_info cached;
	uint64_t start_ns = env->cfg->log_queries ? uv_hrtime() : 0;

	if (!cache_lookup(env->cache, key, uv_now(&env->loop->uv), false, env->cfg->serve_stale,
			  &hit)) {
		metrics_inc(METRIC_cache_misses);
		publish_cache(env); /* an entry past the stale window is gone */
		return false;
	}
	if (wire_parse(hit.msg, hit.len, &cached) != 0)
		return false; /* cannot happen: it parsed when stored */
	metrics_inc(METRIC_cache_hits);
	if (env->cfg->log_queries)
		log_query(client, info, wire_rcode(hit.msg), "cache", start_ns);
	answer_client(env, client, info, hit.msg, hit.len, &cached, hit.age_s, 0, 0);
	maybe_prefetch(pool, &hit, info, msg, key, hash);
	return true;
}

/* Local data and hosts files, locally served zones (localhost, private
 * reverse zones, DDR...) and the blocklist: answered here, never sent
 * upstream.  True when answered. */
static bool answer_locally(struct query_env *env, const struct frontend_client *client,
			   const struct wire_info *info)
{
	_Static_assert(LOCALZONE_MAX_DATA_REPLY <= sizeof(env->loop->scratch->reply),
		       "a local reply fits the reply buffer");
	uint8_t *buf = env->loop->scratch->reply;
	size_t len = 0;
	uint64_t start_ns = env->cfg->log_queries ? uv_hrtime() : 0;
	enum localzone_verdict v =
	    localzone_lookup(env->localzone, info, buf, LOCALZONE_MAX_DATA_REPLY, &len);

	if (v == LOCALZONE_FORWARD)
		return false;
	metrics_inc(v == LOCALZONE_BLOCKED ? METRIC_blocked : METRIC_local_answers);
	if (len == 0) {
		reply_now(client, info, WIRE_RCODE_SERVFAIL, WIRE_EDE_OTHER);
		return true;
	}
	struct wire_info reply;
	if (len > client->ops->max_reply(client, info) && wire_parse(buf, len, &reply) == 0) {
		/* Only local data can outgrow a datagram (built-in replies fit 512). */
		len = wire_truncate(buf, len, &reply, info->has_edns);
		metrics_inc(METRIC_answers_truncated);
	} else if (info->has_edns && (client->ops->keepalive || client->ops->encrypted) &&
		   wire_parse(buf, len, &reply) == 0) {
		len = add_stream_options(client, info, buf, len, sizeof(env->loop->scratch->reply),
					 &reply);
	}
	if (env->cfg->log_queries)
		log_query(client, info, wire_rcode(buf),
			  v == LOCALZONE_BLOCKED ? "blocked" : "local", start_ns);
	send_reply(client, buf, len, 0);
	return true;
}

/* A client outside --allow: the first one is logged at once, with its
 * address; after that, one line a minute at most, with the count (a flood
 * of refused queries must not become a flood of log lines).  For the
 * whole process: workers share the budget. */
static void log_refused(const struct query_env *env, const struct frontend_client *client)
{
	enum { EVERY_MS = 60000 };
	static uint64_t next_ms, unlogged;
	uint64_t now = uv_now(&env->loop->uv);
	uint64_t due = __atomic_load_n(&next_ms, __ATOMIC_RELAXED);
	char peer[80];

	if (now < due || !__atomic_compare_exchange_n(&next_ms, &due, now + EVERY_MS, false,
						      __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
		__atomic_add_fetch(&unlogged, 1, __ATOMIC_RELAXED);
		return;
	}
	uint64_t more = __atomic_exchange_n(&unlogged, 0, __ATOMIC_RELAXED);
	client->ops->peer(client, peer, sizeof(peer));
	log_warn("refused a query from %s/%s: not in --allow (%llu more refused since the last "
		 "such line; the counter refused_clients has them all)",
		 peer, client->ops->name, (unsigned long long)more);
}

/* Everything but starting a query: true when @client got its reply (or
 * nothing, for a message not worth one) and is done. */
static bool answer_at_once(struct query_pool *pool, const struct frontend_client *client,
			   const struct wire_info *info, int rc)
{
	struct query_env *env = pool->env;

	if (!info->has_header) {
		metrics_inc(METRIC_dropped_malformed);
		return true;
	}
	if (info->flags & WIRE_FLAG_QR) {
		/* Answering a response could start a loop between two servers. */
		metrics_inc(METRIC_dropped_responses);
		return true;
	}
	if (!client->ops->allowed(client)) {
		metrics_inc(METRIC_refused_clients);
		log_refused(env, client);
		reply_now(client, info, WIRE_RCODE_REFUSED, WIRE_EDE_PROHIBITED);
		return true;
	}
	if (rc) {
		metrics_inc(METRIC_formerr);
		log_debug("malformed query (%d) from a %s client", rc, client->ops->name);
		reply_now(client, info, WIRE_RCODE_FORMERR, WIRE_EDE_NONE);
		return true;
	}
	if (wire_opcode(info->flags) != 0) {
		metrics_inc(METRIC_notimp);
		reply_now(client, info, WIRE_RCODE_NOTIMP, WIRE_EDE_NONE);
		return true;
	}
	if (env->draining) {
		/* Only stream clients still connected can get here while shutting down. */
		metrics_inc(METRIC_servfail_shutdown);
		reply_now(client, info, WIRE_RCODE_SERVFAIL, WIRE_EDE_NOT_READY);
		return true;
	}
	return answer_locally(env, client, info);
}

struct query *query_receive(struct query_pool *pool, const struct frontend_client *client,
			    const uint8_t *msg, size_t len)
{
	struct query_env *env = pool->env;
	struct wire_info info;
	int rc = wire_parse(msg, len, &info);
	struct query *q = NULL;

	dnstap_client_query(client, msg, len);
	if (answer_at_once(pool, client, &info, rc)) {
		client->ops->done(client);
		return NULL;
	}
	struct cache_key key;
	cache_key_from(&info, &key);
	uint64_t hash = cache_key_hash(env->cache, &key);
	if (cache_on(env) && answer_from_cache(pool, client, &info, msg, &key, hash)) {
		client->ops->done(client);
		return NULL;
	}
	if (!start_query(pool, client, &info, msg, &key, hash, &q)) {
		metrics_inc(METRIC_servfail_overload);
		reply_now(client, &info, WIRE_RCODE_SERVFAIL, WIRE_EDE_OTHER);
		client->ops->done(client);
		return NULL;
	}
	/* Nothing can take a slot between its release and here. */
	return q && q->waiting ? q : NULL;
}

void query_cancel(struct query *q)
{
	if (!q->waiting)
		return;
	metrics_inc(METRIC_queries_cancelled);
	if (q->leader || !q->followers) {
		release(q); /* cancels the upstream job of a leader */
		return;
	}
	/* Followers wait on this answer: the query goes on without a client,
	 * as a prefetch does. */
	struct frontend_client gone = q->client;
	q->client = (struct frontend_client){ .ops = &prefetch_ops };
	gone.ops->done(&gone);
}
