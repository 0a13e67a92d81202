/*
 * A worker's life.  Everything per loop is created here and wired
 * together: the query core gets its environment, the upstream layer its
 * transports, the frontends the pool they feed.  Reload swaps the settings
 * and the upstream set between two callbacks; drain and finish tear down in
 * the order that lets every reply still leave.
 */
#include "daemon/worker.h"

#include "daemon/bootstrap.h"
#include "daemon/dnstap.h"
#include "daemon/doh.h"
#include "daemon/dot.h"
#include "daemon/listen_https.h"
#include "daemon/listen_tcp.h"
#include "daemon/listen_tls.h"
#include "daemon/listen_udp.h"
#include "daemon/loop.h"
#include "daemon/plain.h"
#include "daemon/query.h"
#include "daemon/sdlisten.h"
#include "daemon/settings.h"
#include "daemon/stream.h"
#include "daemon/transport.h"
#include "daemon/upstream.h"
#include "lib/cache.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/random.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
	DRAIN_GRACE_MS = 500,
	FLUSH_QUEUE = 8, /* names queued to flush; beyond, the whole cache goes */
};

/* A name to flush from the cache (--control flush), in wire form. */
struct flush_name {
	uint8_t name[WIRE_MAX_NAME];
	size_t len;
};

struct worker {
	unsigned index;	       /* 0: the main thread's */
	unsigned n_zone_sets;  /* in zone_sets[] */
	unsigned n_udp;	       /* in udp[] */
	unsigned n_tcp;	       /* in tcp[] */
	unsigned n_dot;	       /* in dot[] */
	unsigned n_doh;	       /* in doh[] */
	unsigned commands;     /* WORKER_* bits, under wake_lock */
	unsigned n_flushes;    /* in flushes[], under wake_lock */
	bool finishing;	       /* finish() began: its handles are closing */
	bool wake_open;	       /* wake may be signalled (under wake_lock) */
	bool flush_everything; /* the flush queue overflowed; under wake_lock */
	struct loop loop;
	struct settings *settings;	/* held: the configuration in force */
	struct transport_env tenv;	/* what transports see of the settings */
	struct query_env qenv;		/* what the query core sees */
	struct cache *cache;		/* owned; its budget may be 0 (no caching) */
	struct query_pool *pool;	/* owned */
	struct upstream_set *upstreams; /* owned: the default set */
	struct upstream_set *zone_sets[OPTIONS_MAX_ZONES]; /* owned: settings->cfg.zones[i]'s */
	struct bootstrap *bootstrap; /* owned: resolves the upstreams given by name; NULL: none */
	struct udp_listener *udp[OPTIONS_MAX_LISTEN];
	struct tcp_listener *tcp[OPTIONS_MAX_LISTEN]; /* NULL once closed (drain) */
	struct tls_listener *dot[OPTIONS_MAX_LISTEN]; /* --listen-tls */
	struct tls_ctx *tls_server;	 /* the settings' server context: new DoT clients get it */
	struct stream_sessions sessions; /* every open TCP client */
	uv_timer_t drain_timer;		 /* bounds the drain, then finishes */
	void (*on_finish)(void *arg);
	void *on_finish_arg;
	/* commands from other threads */
	uv_async_t wake;
	uv_mutex_t wake_lock;			/* wake may be signalled only while open */
	struct settings *pending;		/* with WORKER_RELOAD, under wake_lock (held) */
	struct flush_name flushes[FLUSH_QUEUE]; /* with WORKER_FLUSH, under wake_lock */
	uint64_t flush_posted;			/* tickets handed out, under wake_lock */
	uint64_t flush_done;			/* tickets done (atomic) */
	uint64_t flush_removed;			/* entries removed by every flush (atomic) */
	uv_thread_t thread;
	/* --listen-https: the listeners, every open DoH connection, and the
	 * settings' h2 context, which new DoH clients get */
	struct https_listener *doh[OPTIONS_MAX_LISTEN];
	struct https_clients doh_clients;
	struct tls_ctx *tls_server_h2;
};

/* How each upstream spec is reached: https:// is DoH, udp:// (only ever in
 * a forward zone) plain DNS, everything else DoT. */
static const struct transport_ops *transport_for(const struct options_upstream *spec)
{
	switch (spec->transport) {
	case OPTIONS_TRANSPORT_DOH:
		return &doh_transport;
	case OPTIONS_TRANSPORT_PLAIN:
		return &plain_transport;
	case OPTIONS_TRANSPORT_DOT:
		break;
	}
	return &dot_transport;
}

static bool busy(void *arg)
{
	struct worker *w = arg;

	return w->pool && query_pool_inflight(w->pool) > 0;
}

static void finish(struct worker *w);

static void drain_timer_cb(uv_timer_t *timer)
{
	finish(timer->data);
}

/* The last query in flight ended during a drain (called from inside its
 * completion): finish on the next timer tick. */
static void drained(void *arg)
{
	struct worker *w = arg;

	if (!w->finishing)
		uv_timer_start(&w->drain_timer, drain_timer_cb, 0, 0);
}

static void wake_cb(uv_async_t *wake);

/* Without --bootstrap, the bootstrap's questions are queries of our own
 * through the query core, so they go to the upstreams that can be used
 * (those given by address, until the names resolve) and use the cache;
 * the answer goes back to the worker's bootstrap of the moment. */
static void inward_reply(const struct frontend_client *c, const uint8_t *msg, size_t len)
{
	struct worker *w = c->conn;

	bootstrap_answer(w->bootstrap, msg, len);
}

static void inward_done(const struct frontend_client *c)
{
	(void)c;
}

static size_t inward_max_reply(const struct frontend_client *c, const struct wire_info *query)
{
	(void)c, (void)query;
	return WIRE_MAX_MSG;
}

static void inward_peer(const struct frontend_client *c, char *buf, size_t cap)
{
	(void)c;
	snprintf(buf, cap, "bootstrap");
}

static bool inward_allowed(const struct frontend_client *c)
{
	(void)c;
	return true;
}

static const struct frontend_ops inward_ops = {
	.name = "bootstrap",
	.reply = inward_reply,
	.done = inward_done,
	.max_reply = inward_max_reply,
	.peer = inward_peer,
	.allowed = inward_allowed,
};

static int inward_send(void *arg, const uint8_t *msg, size_t len)
{
	struct worker *w = arg;
	struct frontend_client self = { .ops = &inward_ops, .conn = w };

	if (!w->pool)
		return -ESHUTDOWN;
	query_receive(w->pool, &self, msg, len);
	return 0;
}

/* An upstream name resolved: every set learns its addresses. */
static void resolved_cb(void *arg, const char *hostname, const struct sockaddr_storage *addrs,
			unsigned n)
{
	struct worker *w = arg;

	if (w->upstreams)
		upstream_set_address(w->upstreams, hostname, addrs, n);
	for (unsigned i = 0; i < w->n_zone_sets; i++)
		upstream_set_address(w->zone_sets[i], hostname, addrs, n);
}

/* The upstream sets of the settings in force: the default one and one per
 * forward zone, and the query core's routes to them; and the bootstrap that
 * resolves their names, which keeps what the previous one knew, so that a
 * reload does not make a named upstream unusable for a moment. */
static void make_sets(struct worker *w)
{
	const struct settings *s = w->settings;
	const struct config *cfg = &s->cfg;
	struct bootstrap *old_bootstrap = w->bootstrap;

	w->upstreams = upstream_set_new(&w->tenv, cfg->upstream, cfg->n_upstream, transport_for,
					&query_upstream_hooks);
	require(w->upstreams);
	w->qenv.upstreams = w->upstreams;
	for (unsigned i = 0; i < cfg->n_zones; i++) {
		w->zone_sets[i] =
		    upstream_set_new(&w->tenv, cfg->zones[i].upstream, cfg->zones[i].n_upstream,
				     transport_for, &query_upstream_hooks);
		require(w->zone_sets[i]);
		w->qenv.zones[i] = (struct query_zone){ .name = s->zone_wire[i],
							.name_len = s->zone_wire_len[i],
							.upstreams = w->zone_sets[i] };
	}
	w->n_zone_sets = w->qenv.n_zones = cfg->n_zones;
	/* The sets first: an inward question goes through them. */
	w->bootstrap = bootstrap_new(&w->loop, cfg, resolved_cb, inward_send, w, old_bootstrap);
	bootstrap_free(old_bootstrap);
	bootstrap_start(w->bootstrap);
}

/* Every upstream set, for what applies to all of them. */
static void for_each_set(struct worker *w, void (*fn)(struct upstream_set *set))
{
	if (w->upstreams)
		fn(w->upstreams);
	for (unsigned i = 0; i < w->n_zone_sets; i++)
		fn(w->zone_sets[i]);
}

static void use_settings(struct worker *w, struct settings *s)
{
	w->settings = s;
	w->tenv.cfg = &s->cfg;
	w->tenv.tls = s->tls;
	w->tls_server = s->tls_server;
	w->tls_server_h2 = s->tls_server_h2;
	w->qenv.cfg = &s->cfg;
	w->qenv.localzone = s->localzone;
	w->loop.busy_poll_us = s->cfg.busy_poll_us;
}

struct worker *worker_new(unsigned index, struct settings *s, char *err, size_t errlen)
{
	struct worker *w = calloc(1, sizeof(*w));
	const struct config *cfg = &s->cfg;

	require(w);
	w->index = index;
	int rc = loop_init(&w->loop, cfg->busy_poll_us);
	if (rc < 0) {
		snprintf(err, errlen, "cannot create the event loop: %s", uv_strerror(rc));
		free(w);
		return NULL;
	}
	w->loop.busy = busy;
	w->loop.busy_arg = w;
	use_settings(w, settings_hold(s));
	w->tenv.loop = &w->loop;
	w->tenv.worker = index;
	uint64_t seed = (uint64_t)random_u16() << 48 | (uint64_t)random_u16() << 32 |
			(uint64_t)random_u16() << 16 | random_u16();
	w->cache = cache_new(cfg->cache_bytes / cfg->workers, seed);
	require(w->cache);
	w->qenv.loop = &w->loop;
	w->qenv.cache = w->cache;
	w->qenv.drained = drained;
	w->qenv.drained_arg = w;
	w->pool = query_pool_new(&w->qenv, worker_share(cfg->max_inflight, cfg->workers));
	require(w->pool);
	make_sets(w);
	uv_timer_init(&w->loop.uv, &w->drain_timer);
	w->drain_timer.data = w;
	require(uv_mutex_init(&w->wake_lock) == 0);
	uv_async_init(&w->loop.uv, &w->wake, wake_cb);
	w->wake.data = w;
	w->wake_open = true;
	return w;
}

/* A default address whose family this host lacks (no IPv6 on loopback) is
 * skipped with a warning; any other failure to listen is fatal. */
static bool skippable(const struct config *cfg, int rc)
{
	return cfg->listen_is_default && (rc == UV_EADDRNOTAVAIL || rc == UV_EAFNOSUPPORT);
}

/* Bind every --listen address, with SO_REUSEPORT when other workers bind
 * them too. */
static int bind_listen(struct worker *w, char *err, size_t errlen)
{
	const struct config *cfg = &w->settings->cfg;
	bool share = cfg->workers > 1;

	for (unsigned i = 0; i < cfg->n_listen; i++) {
		const struct options_addr *addr = &cfg->listen[i];
		struct tcp_listener *tcp = NULL;
		int rc;
		struct udp_listener *udp = listen_udp_start(w->pool, addr, share, &rc, err, errlen);
		if (udp)
			tcp =
			    listen_tcp_start(w->pool, &w->sessions, addr, share, &rc, err, errlen);
		if (udp && tcp) {
			w->udp[w->n_udp++] = udp;
			w->tcp[w->n_tcp++] = tcp;
			if (w->index == 0) /* the others listen on the same */
				log_info("listening on %s/udp, %s/tcp", addr->text, addr->text);
			continue;
		}
		if (udp)
			listen_udp_close(udp);
		if (skippable(cfg, rc)) {
			if (w->index == 0)
				log_warn("%s; going on without it", err);
			continue;
		}
		return -1;
	}
	if (w->n_udp == 0) {
		snprintf(err, errlen, "no address to listen on");
		return -1;
	}
	return 0;
}

/* --listen-tls and --listen-https: bound here, socket activation or not. */
static int bind_tls(struct worker *w, char *err, size_t errlen)
{
	const struct config *cfg = &w->settings->cfg;

	for (unsigned i = 0; i < cfg->n_listen_tls; i++) {
		const struct options_addr *addr = &cfg->listen_tls[i];
		int rc;
		struct tls_listener *l = listen_tls_start(w->pool, &w->sessions, &w->tls_server,
							  addr, cfg->workers > 1, &rc, err, errlen);
		if (!l)
			return -1;
		w->dot[w->n_dot++] = l;
		if (w->index == 0)
			log_info("listening on %s/tls (DNS over TLS)", addr->text);
	}
	for (unsigned i = 0; i < cfg->n_listen_https; i++) {
		const struct options_addr *addr = &cfg->listen_https[i];
		int rc;
		struct https_listener *l =
		    listen_https_start(w->pool, &w->doh_clients, &w->tls_server_h2, addr,
				       cfg->workers > 1, &rc, err, errlen);
		if (!l)
			return -1;
		w->doh[w->n_doh++] = l;
		if (w->index == 0)
			log_info("listening on %s/https (DNS over HTTPS at %s)", addr->text,
				 cfg->https_path);
	}
	return 0;
}

/* Use the sockets systemd handed over, each through a descriptor of this
 * worker's own: every worker waits on every socket, and the kernel gives
 * each datagram and connection to one of them (SO_REUSEPORT cannot apply
 * to sockets bound before dotproxy started). */
static int open_handed(struct worker *w, const struct sdlisten *handed, char *err, size_t errlen)
{
	for (unsigned i = 0; i < handed->n; i++) {
		const struct sdlisten_socket *s = &handed->sock[i];
		int rc, fd = fcntl(s->fd, F_DUPFD_CLOEXEC, 3);
		if (fd < 0) {
			snprintf(err, errlen, "cannot listen on %s/%s: %s", s->text,
				 s->stream ? "tcp" : "udp", strerror(errno));
			return -1;
		}
		if (s->stream) {
			struct tcp_listener *tcp =
			    listen_tcp_open(w->pool, &w->sessions, fd, s->text, &rc, err, errlen);
			if (!tcp)
				return -1;
			w->tcp[w->n_tcp++] = tcp;
		} else {
			struct udp_listener *udp =
			    listen_udp_open(w->pool, fd, s->text, &rc, err, errlen);
			if (!udp)
				return -1;
			w->udp[w->n_udp++] = udp;
		}
		if (w->index == 0)
			log_info("listening on %s/%s (socket from systemd)", s->text,
				 s->stream ? "tcp" : "udp");
	}
	return 0;
}

int worker_listen(struct worker *w, const struct sdlisten *handed, char *err, size_t errlen)
{
	int rc = handed && handed->n > 0 ? open_handed(w, handed, err, errlen)
					 : bind_listen(w, err, errlen);
	return rc < 0 ? rc : bind_tls(w, err, errlen);
}

unsigned worker_listening(const struct worker *w)
{
	return w->n_udp;
}

struct loop *worker_loop(struct worker *w)
{
	return &w->loop;
}

void worker_on_finish(struct worker *w, void (*cb)(void *arg), void *arg)
{
	w->on_finish = cb;
	w->on_finish_arg = arg;
}

/*
 * Reload: the settings change as a whole.  The new upstream set takes over
 * at once; the old set's connections close and the jobs on them move to the
 * new set, so no query is dropped.  Sockets, the pool and the cache stay
 * (main.c keeps their options as they were).
 */
static void reload(struct worker *w, struct settings *s)
{
	struct settings *old = w->settings;
	struct upstream_set *old_default = w->upstreams;
	struct upstream_set *old_zones[OPTIONS_MAX_ZONES];
	unsigned n_old = w->n_zone_sets;

	memcpy(old_zones, w->zone_sets, n_old * sizeof(old_zones[0]));
	use_settings(w, settings_hold(s));
	make_sets(w);
	/* A zone's jobs move to the same zone's new set; those of a zone that is
	 * gone, to the set their names are routed to now. */
	for (unsigned i = 0; i < n_old; i++) {
		struct upstream_set *next = w->upstreams;
		for (unsigned j = 0; j < w->n_zone_sets; j++)
			if (strcmp(old->cfg.zones[i].name, s->cfg.zones[j].name) == 0)
				next = w->zone_sets[j];
		upstream_set_retire(old_zones[i], next);
	}
	upstream_set_retire(old_default, w->upstreams);
	settings_drop(old);
}

static void start_drain(struct worker *w)
{
	w->qenv.draining = true;
	/* UDP sockets stay open (receiving nothing) until the end: the replies
	 * of queries in flight still go out through them. */
	for (unsigned i = 0; i < w->n_udp; i++)
		listen_udp_stop(w->udp[i]);
	for (unsigned i = 0; i < w->n_tcp; i++) {
		if (w->tcp[i])
			listen_tcp_close(w->tcp[i]);
		w->tcp[i] = NULL;
	}
	for (unsigned i = 0; i < w->n_dot; i++)
		listen_tls_close(w->dot[i]);
	w->n_dot = 0;
	for (unsigned i = 0; i < w->n_doh; i++)
		listen_https_close(w->doh[i]);
	w->n_doh = 0;
	listen_https_drain(&w->doh_clients);
	unsigned inflight = query_pool_inflight(w->pool);
	log_info("shutting down: %u queries in flight", inflight);
	/* In-flight queries end by their deadline at the latest. */
	uv_timer_start(&w->drain_timer, drain_timer_cb,
		       inflight ? w->settings->cfg.timeout_ms + DRAIN_GRACE_MS : 0, 0);
}

/* Close everything; the loop returns once the handles are gone.  Queries
 * still in flight fail first, while their clients' sockets are open. */
static void finish(struct worker *w)
{
	if (w->finishing)
		return;
	w->finishing = true;
	w->qenv.draining = true;
	unsigned inflight = query_pool_inflight(w->pool);
	if (inflight > 0)
		log_warn("shutting down with %u queries unanswered", inflight);
	uv_timer_stop(&w->drain_timer);
	uv_close((uv_handle_t *)&w->drain_timer, NULL);
	uv_mutex_lock(&w->wake_lock);
	w->wake_open = false;
	settings_drop(w->pending);
	w->pending = NULL;
	uv_close((uv_handle_t *)&w->wake, NULL);
	uv_mutex_unlock(&w->wake_lock);
	query_pool_free(w->pool, METRIC_servfail_shutdown);
	w->pool = NULL;
	stream_sessions_close_all(&w->sessions);
	listen_https_close_all(&w->doh_clients);
	for_each_set(w, upstream_set_free);
	w->upstreams = w->qenv.upstreams = NULL;
	bootstrap_free(w->bootstrap);
	w->bootstrap = NULL;
	w->n_zone_sets = w->qenv.n_zones = 0;
	for (unsigned i = 0; i < w->n_tcp; i++)
		if (w->tcp[i])
			listen_tcp_close(w->tcp[i]);
	for (unsigned i = 0; i < w->n_udp; i++)
		listen_udp_close(w->udp[i]);
	w->n_udp = w->n_tcp = 0;
	for (unsigned i = 0; i < w->n_dot; i++)
		listen_tls_close(w->dot[i]);
	w->n_dot = 0;
	for (unsigned i = 0; i < w->n_doh; i++)
		listen_https_close(w->doh[i]);
	w->n_doh = 0;
	if (w->on_finish)
		w->on_finish(w->on_finish_arg);
	loop_close_handles(&w->loop);
}

void worker_command(struct worker *w, unsigned commands, struct settings *s)
{
	if (w->finishing)
		return;
	if ((commands & WORKER_NETWORK) && !w->qenv.draining)
		for_each_set(w, upstream_set_reset);
	if ((commands & WORKER_RELOAD) && s && !w->qenv.draining)
		reload(w, s);
	if ((commands & (WORKER_DRAIN | WORKER_STOP)) && !w->qenv.draining)
		start_drain(w);
	if (commands & WORKER_STOP)
		uv_timer_start(&w->drain_timer, drain_timer_cb, 0, 0);
}

/* The names of a WORKER_FLUSH, taken from the queue under wake_lock. */
struct flush_batch {
	struct flush_name names[FLUSH_QUEUE];
	unsigned n;
	bool everything;
	uint64_t upto; /* the last ticket they cover */
};

static void flush(struct worker *w, const struct flush_batch *b)
{
	size_t removed = 0;

	if (b->everything) {
		removed = cache_flush(w->cache, NULL, 0);
	} else {
		for (unsigned i = 0; i < b->n; i++)
			removed += cache_flush(w->cache, b->names[i].name, b->names[i].len);
	}
	metrics_gauge_set(METRIC_GAUGE_cache_entries, cache_entries(w->cache));
	metrics_gauge_set(METRIC_GAUGE_cache_bytes, cache_bytes(w->cache));
	__atomic_add_fetch(&w->flush_removed, removed, __ATOMIC_RELAXED);
	__atomic_store_n(&w->flush_done, b->upto, __ATOMIC_RELEASE);
}

static void wake_cb(uv_async_t *wake)
{
	struct worker *w = wake->data;
	struct flush_batch batch = { 0 };

	uv_mutex_lock(&w->wake_lock);
	unsigned commands = w->commands;
	struct settings *s = w->pending;
	w->commands = 0;
	w->pending = NULL;
	if (commands & WORKER_FLUSH) {
		batch.n = w->n_flushes;
		memcpy(batch.names, w->flushes, sizeof(batch.names));
		batch.everything = w->flush_everything;
		batch.upto = w->flush_posted;
		w->n_flushes = 0;
		w->flush_everything = false;
	}
	uv_mutex_unlock(&w->wake_lock);
	if (commands & WORKER_FLUSH)
		flush(w, &batch);
	worker_command(w, commands, s);
	settings_drop(s);
}

uint64_t worker_flush(struct worker *w, const uint8_t *name, size_t len)
{
	uint64_t ticket = UINT64_MAX;

	uv_mutex_lock(&w->wake_lock);
	if (w->wake_open) {
		if (len == 0 || len > WIRE_MAX_NAME || w->n_flushes == FLUSH_QUEUE) {
			w->flush_everything = true;
		} else {
			memcpy(w->flushes[w->n_flushes].name, name, len);
			w->flushes[w->n_flushes++].len = len;
		}
		ticket = ++w->flush_posted;
		w->commands |= WORKER_FLUSH;
		uv_async_send(&w->wake);
	}
	uv_mutex_unlock(&w->wake_lock);
	return ticket;
}

uint64_t worker_flushed(const struct worker *w, uint64_t *removed)
{
	*removed = __atomic_load_n(&w->flush_removed, __ATOMIC_RELAXED);
	return __atomic_load_n(&w->flush_done, __ATOMIC_ACQUIRE);
}

void worker_post(struct worker *w, unsigned commands, struct settings *s)
{
	uv_mutex_lock(&w->wake_lock);
	if (w->wake_open) {
		if ((commands & WORKER_RELOAD) && s) {
			settings_drop(w->pending); /* an older reload not yet taken */
			w->pending = settings_hold(s);
		}
		w->commands |= commands;
		uv_async_send(&w->wake);
	}
	uv_mutex_unlock(&w->wake_lock);
}

void worker_run(struct worker *w)
{
	metrics_use_worker(w->index);
	dnstap_use_worker(w->index);
	loop_run(&w->loop);
}

static void thread_main(void *arg)
{
	worker_run(arg);
}

int worker_spawn(struct worker *w)
{
	return uv_thread_create(&w->thread, thread_main, w);
}

void worker_join(struct worker *w)
{
	uv_thread_join(&w->thread);
}

void worker_free(struct worker *w)
{
	loop_deinit(&w->loop);
	uv_mutex_destroy(&w->wake_lock);
	cache_free(w->cache);
	settings_drop(w->settings);
	settings_drop(w->pending);
	free(w);
}
