/*
 * dotproxy: start-up, workers, signals and shutdown.  The only file that
 * sees every module.  Exit status: 0 after SIGTERM/SIGINT, 1 when start-up
 * fails, 2 for a bad argument or configuration.
 */
#include "daemon/busypoll.h"
#include "daemon/listen_tcp.h"
#include "daemon/listen_udp.h"
#include "daemon/netwatch.h"
#include "daemon/query.h"
#include "daemon/sdnotify.h"
#include "daemon/server.h"
#include "daemon/upconn.h"
#include "daemon/upstream.h"
#include "lib/cache.h"
#include "lib/localzone.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/options.h"
#include "lib/random.h"
#include "lib/tls.h"
#include "lib/version.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

enum {
	EXIT_STARTUP = 1,
	EXIT_USAGE = 2,
	DRAIN_GRACE_MS = 500,
};

/* What worker 0 passes on to the other workers (server.commands). */
enum {
	WORKER_RELOAD = 1,  /* SIGHUP */
	WORKER_DRAIN = 2,   /* SIGTERM, SIGINT */
	WORKER_STOP = 4,    /* the second one */
	WORKER_NETWORK = 8, /* addresses or routes changed */
};

_Static_assert((int)OPTIONS_MAX_WORKERS <= (int)METRICS_MAX_WORKERS, "a counter set per worker");

static struct server *workers[OPTIONS_MAX_WORKERS];
static unsigned n_workers;

static void log_stats(void)
{
	char line[2048];

	metrics_render(line, sizeof(line));
	log_tagged("stats", "%s", line + strlen("stats: "));
}

/* Close everything that is left; uv_run() returns once the handles are gone. */
static void finish(struct server *srv)
{
	if (srv->worker == 0) {
		uv_signal_stop(&srv->sig_term);
		uv_signal_stop(&srv->sig_int);
		uv_signal_stop(&srv->sig_usr1);
		uv_signal_stop(&srv->sig_hup);
		uv_close((uv_handle_t *)&srv->sig_term, NULL);
		uv_close((uv_handle_t *)&srv->sig_int, NULL);
		uv_close((uv_handle_t *)&srv->sig_usr1, NULL);
		uv_close((uv_handle_t *)&srv->sig_hup, NULL);
		netwatch_stop(srv->netwatch);
		srv->netwatch = NULL;
	} else {
		uv_mutex_lock(&srv->wake_lock);
		srv->wake_open = false;
		uv_close((uv_handle_t *)&srv->wake, NULL);
		uv_mutex_unlock(&srv->wake_lock);
	}
	uv_close((uv_handle_t *)&srv->drain_timer, NULL);
	listen_tcp_close_clients(srv);
	upstream_set_free(srv->upstreams);
	srv->upstreams = NULL;
	query_pool_free(srv->queries);
	srv->queries = NULL;
	listen_udp_flush_all(srv);
	for (unsigned i = 0; i < srv->n_listen; i++)
		listen_udp_close(srv->udp[i]);
	srv->n_listen = 0;
	uv_close((uv_handle_t *)&srv->flush_check, NULL);
	uv_close((uv_handle_t *)&srv->flush_idle, NULL);
}

static void flush_idle_cb(uv_idle_t *idle)
{
	(void)idle; /* its presence is the point: see server_want_flush() */
}

/* After each round of I/O: write what this round queued, in batches. */
static void flush_check_cb(uv_check_t *check)
{
	struct server *srv = check->data;

	upconn_flush_all(srv);
	listen_udp_flush_all(srv);
	uv_idle_stop(&srv->flush_idle);
}

void server_want_flush(struct server *srv)
{
	/* An active idle handle makes the loop poll without blocking, so what a
	 * timer callback queued is flushed in this iteration too. */
	uv_idle_start(&srv->flush_idle, flush_idle_cb);
}

static void flusher_init(struct server *srv)
{
	uv_check_init(srv->loop, &srv->flush_check);
	uv_idle_init(srv->loop, &srv->flush_idle);
	srv->flush_check.data = srv;
	uv_check_start(&srv->flush_check, flush_check_cb);
	/* Neither handle alone should keep the loop alive once all else closed. */
	uv_unref((uv_handle_t *)&srv->flush_check);
	uv_unref((uv_handle_t *)&srv->flush_idle);
}

static void drain_timer_cb(uv_timer_t *timer)
{
	struct server *srv = timer->data;

	if (!srv->queries)
		return; /* already finished */
	if (query_pool_inflight(srv->queries) > 0)
		log_warn("shutting down with %u queries unanswered",
			 query_pool_inflight(srv->queries));
	finish(srv);
}

void server_drained(struct server *srv)
{
	/* Called from inside a completion: finish on the next timer tick. */
	uv_timer_start(&srv->drain_timer, drain_timer_cb, 0, 0);
}

static void start_drain(struct server *srv)
{
	srv->draining = true;
	/* UDP sockets stay open (receiving nothing) until the end: the replies
	 * of queries in flight still go out through them. */
	for (unsigned i = 0; i < srv->n_listen; i++) {
		listen_udp_stop(srv->udp[i]);
		listen_tcp_close(srv->tcp[i]);
		srv->tcp[i] = NULL;
	}
	unsigned inflight = query_pool_inflight(srv->queries);
	log_info("shutting down: %u queries in flight", inflight);
	/* In-flight queries end by their deadline at the latest. */
	uv_timer_start(&srv->drain_timer, drain_timer_cb,
		       inflight ? srv->cfg->timeout_ms + DRAIN_GRACE_MS : 0, 0);
}

static void set_log_level(const struct config *cfg)
{
	log_threshold = cfg->verbosity >= 2   ? LOG_LEVEL_DEBUG
			: cfg->verbosity == 1 ? LOG_LEVEL_INFO
					      : LOG_LEVEL_WARN;
}

/* A TLS context for @cfg, or NULL with the reason in @err. */
static struct tls_ctx *make_tls(const struct config *cfg, char *err, size_t errlen)
{
	struct tls_ctx *tls = tls_ctx_new(cfg->ca_file[0] ? cfg->ca_file : NULL, err, errlen);

	if (tls && cfg->profile == OPTIONS_PROFILE_OPPORTUNISTIC)
		tls_ctx_set_opportunistic(tls);
	return tls;
}

/* Local zones plus the blocklist of @cfg, or NULL with the reason in @err. */
static struct localzone *make_localzone(const struct config *cfg, char *err, size_t errlen)
{
	struct localzone *lz = localzone_new();

	if (!lz) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	localzone_set_block_action(lz, (enum localzone_block_action)cfg->block_action);
	if (cfg->block_file[0] && localzone_load_blocklist(lz, cfg->block_file, err, errlen) < 0) {
		localzone_free(lz);
		return NULL;
	}
	return lz;
}

static bool same_listen(const struct config *a, const struct config *b)
{
	if (a->n_listen != b->n_listen)
		return false;
	for (unsigned i = 0; i < a->n_listen; i++)
		if (strcmp(a->listen[i].text, b->listen[i].text) != 0)
			return false;
	return true;
}

/*
 * SIGHUP: read the command line and config file again.  A bad config is
 * logged and changes nothing.  The new upstream set takes over at once; the
 * old set's connections close and their queries in flight are resent to the
 * new set, so none is dropped.  Sockets and the pool size stay as they are.
 */
static void reload(struct server *srv)
{
	char err[1024];
	struct config *fresh = malloc(sizeof(*fresh));
	FILE *devnull = fopen("/dev/null", "w");

	require(fresh);
	int rc = options_parse(srv->argc, srv->argv, fresh, devnull ? devnull : stdout, err,
			       sizeof(err));
	if (devnull)
		fclose(devnull);
	struct tls_ctx *tls = rc == OPTIONS_RUN ? make_tls(fresh, err, sizeof(err)) : NULL;
	struct localzone *lz = tls ? make_localzone(fresh, err, sizeof(err)) : NULL;
	if (!lz) {
		/* Every worker finds the same fault: worker 0 says it. */
		if (srv->worker == 0)
			log_error("SIGHUP: configuration unchanged: %s",
				  rc < 0 || rc == OPTIONS_RUN ? err : "nothing to run");
		tls_ctx_free(tls);
		free(fresh);
		return;
	}
	localzone_free(srv->localzone);
	srv->localzone = lz;
	if (srv->worker == 0 &&
	    (!same_listen(srv->cfg, fresh) || fresh->max_inflight != srv->cfg->max_inflight ||
	     fresh->cache_bytes != srv->cfg->cache_bytes || fresh->workers != srv->cfg->workers))
		log_warn("SIGHUP: listen addresses, --workers, --max-inflight and --cache-size "
			 "change only on restart");
	fresh->max_inflight = srv->cfg->max_inflight;
	fresh->cache_bytes = srv->cfg->cache_bytes;
	fresh->workers = srv->cfg->workers;
	struct config *old_cfg = srv->cfg_owned;
	struct tls_ctx *old_tls = srv->tls;
	struct upstream_set *old_set = srv->upstreams;
	srv->cfg = srv->cfg_owned = fresh;
	srv->tls = tls;
	if (srv->worker == 0)
		set_log_level(fresh);
	srv->upstreams = upstream_set_new(srv);
	require(srv->upstreams);
	upstream_set_retire(old_set); /* its queries move to the new set */
	upstream_set_free(old_set);
	tls_ctx_free(old_tls);
	free(old_cfg);
	if (srv->worker != 0)
		return;
	log_tagged("notice", "SIGHUP: configuration reloaded: %u upstream(s), policy %s",
		   fresh->n_upstream,
		   fresh->policy == OPTIONS_POLICY_FASTEST    ? "fastest"
		   : fresh->policy == OPTIONS_POLICY_FAILOVER ? "failover"
							      : "round-robin");
}

/* Worker 0: pass @commands on to every other worker still running. */
static void tell_workers(unsigned commands)
{
	for (unsigned i = 1; i < n_workers; i++) {
		struct server *w = workers[i];
		uv_mutex_lock(&w->wake_lock);
		if (w->wake_open) {
			__atomic_fetch_or(&w->commands, commands, __ATOMIC_RELEASE);
			uv_async_send(&w->wake);
		}
		uv_mutex_unlock(&w->wake_lock);
	}
}

/* A worker other than 0: do what worker 0 passed on. */
static void wake_cb(uv_async_t *wake)
{
	struct server *srv = wake->data;
	unsigned commands = __atomic_exchange_n(&srv->commands, 0, __ATOMIC_ACQUIRE);

	if ((commands & WORKER_NETWORK) && !srv->draining)
		upstream_set_reset(srv->upstreams);
	if ((commands & WORKER_RELOAD) && !srv->draining)
		reload(srv);
	if ((commands & (WORKER_DRAIN | WORKER_STOP)) && !srv->draining)
		start_drain(srv);
	if (commands & WORKER_STOP)
		uv_timer_start(&srv->drain_timer, drain_timer_cb, 0, 0);
}

void server_network_changed(struct server *srv)
{
	upstream_set_reset(srv->upstreams);
	tell_workers(WORKER_NETWORK);
}

static void signal_cb(uv_signal_t *sig, int signum)
{
	struct server *srv = sig->data;

	if (signum == SIGUSR1) {
		log_stats();
		return;
	}
	if (signum == SIGHUP) {
		if (!srv->draining) {
			char msg[64];
			/* MONOTONIC_USEC: systemd (253+) matches the reload by it. */
			snprintf(msg, sizeof(msg), "RELOADING=1\nMONOTONIC_USEC=%llu",
				 (unsigned long long)(uv_hrtime() / 1000));
			sdnotify(msg);
			reload(srv);
			tell_workers(WORKER_RELOAD);
			sdnotify("READY=1");
		}
		return;
	}
	if (srv->draining) {
		log_info("second signal: stopping now");
		tell_workers(WORKER_STOP);
		uv_timer_start(&srv->drain_timer, drain_timer_cb, 0, 0);
		return;
	}
	sdnotify("STOPPING=1");
	tell_workers(WORKER_DRAIN);
	start_drain(srv);
}

/*
 * --user: once the sockets are bound, become that user for good: groups,
 * then group, then user (the order in which each step is still allowed),
 * then make sure root cannot be regained.  With no capabilities kept, the
 * process can no longer bind low ports or read root-only files (a SIGHUP
 * reload needs the config readable by that user).
 */
static int drop_privileges(const char *user)
{
	struct passwd *pw = getpwnam(user);

	if (!pw) {
		fprintf(stderr, "dotproxy: --user %s: no such user\n", user);
		return -1;
	}
	if (geteuid() != 0) {
		if (pw->pw_uid == geteuid())
			return 0;
		fprintf(stderr, "dotproxy: --user %s: only root can change user\n", user);
		return -1;
	}
	if (setgroups(0, NULL) < 0 || setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0) {
		fprintf(stderr, "dotproxy: --user %s: cannot drop privileges: %s\n", user,
			strerror(errno));
		return -1;
	}
	if (pw->pw_uid != 0 && setuid(0) == 0) {
		fprintf(stderr, "dotproxy: --user %s: root could be regained; stopping\n", user);
		return -1;
	}
	prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
	log_info("running as user %s (uid %u, gid %u)", user, (unsigned)pw->pw_uid,
		 (unsigned)pw->pw_gid);
	return 0;
}

/* A thousand TCP clients need more descriptors than the usual soft limit. */
static void raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/* A default address whose family this host lacks (no IPv6 on loopback) is
 * skipped with a warning; any other failure to listen is fatal. */
static bool skippable(const struct server *srv, int rc)
{
	return srv->cfg->listen_is_default && (rc == UV_EADDRNOTAVAIL || rc == UV_EAFNOSUPPORT);
}

static int start(struct server *srv)
{
	char err[512];

	for (unsigned i = 0; i < srv->cfg->n_listen; i++) {
		const struct options_addr *addr = &srv->cfg->listen[i];
		struct udp_listener *udp;
		struct tcp_listener *tcp = NULL;
		int rc;

		udp = listen_udp_start(srv, addr, &rc, err, sizeof(err));
		if (udp)
			tcp = listen_tcp_start(srv, addr, &rc, err, sizeof(err));
		if (udp && tcp) {
			srv->udp[srv->n_listen] = udp;
			srv->tcp[srv->n_listen++] = tcp;
			continue;
		}
		if (udp)
			listen_udp_close(udp);
		if (skippable(srv, rc)) {
			log_warn("%s; going on without it", err);
			continue;
		}
		fprintf(stderr, "dotproxy: %s\n", err);
		return -1;
	}
	if (srv->n_listen == 0) {
		fprintf(stderr, "dotproxy: no address to listen on\n");
		return -1;
	}
	return 0;
}

/* Worker @index of @cfg, with its own copy of the configuration, TLS context
 * and local zones (worker 0 takes @cfg, @tls and @lz), its loop and its
 * share of the limits; not listening yet.  NULL with @err set on failure. */
static struct server *server_new(unsigned index, struct config *cfg, struct tls_ctx *tls,
				 struct localzone *lz, int argc, char **argv, char *err,
				 size_t errlen)
{
	struct server *srv = calloc(1, sizeof(*srv)); /* large (I/O buffers) */

	require(srv);
	srv->worker = index;
	srv->argc = argc;
	srv->argv = argv;
	if (index > 0) {
		struct config *copy = malloc(sizeof(*copy));
		require(copy);
		*copy = *cfg; /* flat: no pointers inside */
		cfg = copy;
		tls = make_tls(cfg, err, errlen);
		lz = tls ? make_localzone(cfg, err, errlen) : NULL;
	}
	srv->cfg = srv->cfg_owned = cfg;
	srv->tls = tls;
	srv->localzone = lz;
	int rc = uv_loop_init(&srv->loop_storage);
	if (!tls || !lz || rc < 0) {
		if (rc < 0)
			snprintf(err, errlen, "cannot create the event loop: %s", uv_strerror(rc));
		if (index > 0) { /* worker 0's parts stay the caller's */
			localzone_free(lz);
			tls_ctx_free(tls);
			free(cfg);
		}
		free(srv);
		return NULL;
	}
	srv->loop = &srv->loop_storage;
	uint64_t seed = (uint64_t)random_u16() << 48 | (uint64_t)random_u16() << 32 |
			(uint64_t)random_u16() << 16 | random_u16();
	srv->cache = cache_new(cfg->cache_bytes / cfg->workers, seed);
	require(srv->cache);
	srv->queries = query_pool_new(srv, worker_share(cfg->max_inflight, cfg->workers));
	srv->upstreams = upstream_set_new(srv);
	require(srv->queries && srv->upstreams);
	flusher_init(srv);
	uv_timer_init(srv->loop, &srv->drain_timer);
	srv->drain_timer.data = srv;
	if (index == 0) {
		uv_signal_init(srv->loop, &srv->sig_term);
		uv_signal_init(srv->loop, &srv->sig_int);
		uv_signal_init(srv->loop, &srv->sig_usr1);
		uv_signal_init(srv->loop, &srv->sig_hup);
		srv->sig_term.data = srv->sig_int.data = srv->sig_usr1.data = srv->sig_hup.data =
		    srv;
		uv_signal_start(&srv->sig_term, signal_cb, SIGTERM);
		uv_signal_start(&srv->sig_int, signal_cb, SIGINT);
		uv_signal_start(&srv->sig_usr1, signal_cb, SIGUSR1);
		uv_signal_start(&srv->sig_hup, signal_cb, SIGHUP);
		uv_unref((uv_handle_t *)&srv->sig_usr1);
		uv_unref((uv_handle_t *)&srv->sig_hup);
	} else {
		require(uv_mutex_init(&srv->wake_lock) == 0);
		uv_async_init(srv->loop, &srv->wake, wake_cb);
		srv->wake.data = srv;
		srv->wake_open = true;
	}
	return srv;
}

static void server_free(struct server *srv)
{
	if (uv_loop_close(srv->loop) < 0)
		log_debug("event loop closed with handles still open");
	if (srv->worker > 0)
		uv_mutex_destroy(&srv->wake_lock);
	tls_ctx_free(srv->tls);
	localzone_free(srv->localzone);
	cache_free(srv->cache);
	free(srv->cfg_owned);
	free(srv);
}

/* Start-up failed after the workers were made: close everything each one
 * opened, one loop after the other (no worker thread runs yet). */
static void abandon_workers(void)
{
	for (unsigned i = 0; i < n_workers; i++) {
		start_drain(workers[i]);
		uv_run(workers[i]->loop, UV_RUN_DEFAULT);
	}
}

static void worker_thread(void *arg)
{
	struct server *srv = arg;

	metrics_use_worker(srv->worker);
	busypoll_run(srv);
}

int main(int argc, char **argv)
{
	struct config *cfg = malloc(sizeof(*cfg));
	struct tls_ctx *tls;
	struct localzone *lz;
	char err[1024];
	int rc;

	require(cfg);
	rc = options_parse(argc, argv, cfg, stdout, err, sizeof(err));
	if (rc < 0) {
		fprintf(stderr, "dotproxy: %s\n", err);
		free(cfg);
		return EXIT_USAGE;
	}
	if (rc == OPTIONS_EXIT) {
		free(cfg);
		return EXIT_SUCCESS;
	}
	set_log_level(cfg);
	tls = make_tls(cfg, err, sizeof(err));
	if (!tls) {
		fprintf(stderr, "dotproxy: %s%s\n", cfg->ca_file[0] ? "--ca-file: " : "", err);
		free(cfg);
		return EXIT_USAGE;
	}
	lz = make_localzone(cfg, err, sizeof(err));
	if (!lz) {
		fprintf(stderr, "dotproxy: --block: %s\n", err);
		tls_ctx_free(tls);
		free(cfg);
		return EXIT_USAGE;
	}
	if (cfg->check_only) {
		printf("configuration OK: %u listen address(es), %u upstream(s), %zu blocked "
		       "name(s)\n",
		       cfg->n_listen, cfg->n_upstream, localzone_blocked_count(lz));
		localzone_free(lz);
		tls_ctx_free(tls);
		free(cfg);
		return EXIT_SUCCESS;
	}
	signal(SIGPIPE, SIG_IGN);
	raise_fd_limit();
	unsigned n = cfg->workers;
	for (unsigned i = 0; i < n; i++) {
		struct server *srv = server_new(i, cfg, tls, lz, argc, argv, err, sizeof(err));
		if (!srv) {
			fprintf(stderr, "dotproxy: worker %u: %s\n", i, err);
			abandon_workers();
			rc = EXIT_STARTUP;
			goto out;
		}
		workers[n_workers++] = srv;
	}
	struct server *main_srv = workers[0];
	for (unsigned i = 0; i < n_workers; i++) {
		if (start(workers[i]) < 0) {
			abandon_workers();
			rc = EXIT_STARTUP;
			goto out;
		}
	}
	main_srv->netwatch = netwatch_start(main_srv);
	if (cfg->user[0] && drop_privileges(cfg->user) < 0) {
		abandon_workers();
		rc = EXIT_STARTUP;
		goto out;
	}
	for (unsigned i = 0; i < cfg->n_upstream; i++)
		log_info("upstream %s (%s%s)", cfg->upstream[i].label,
			 cfg->upstream[i].auth_name[0] ? "certificate must match the name"
						       : "certificate must carry the IP",
			 cfg->upstream[i].n_pins ? ", key must match a pin" : "");
	for (unsigned i = 1; i < n_workers; i++)
		require(uv_thread_create(&workers[i]->thread, worker_thread, workers[i]) == 0);
	if (n_workers > 1)
		log_tagged("notice",
			   "dotproxy %s ready: %u listen address(es), %u upstream(s), %u "
			   "workers",
			   DOTPROXY_VERSION, cfg->n_listen, cfg->n_upstream, n_workers);
	else
		log_tagged("notice", "dotproxy %s ready: %u listen address(es), %u upstream(s)",
			   DOTPROXY_VERSION, cfg->n_listen, cfg->n_upstream);
	sdnotify("READY=1");
	busypoll_run(main_srv);
	for (unsigned i = 1; i < n_workers; i++)
		uv_thread_join(&workers[i]->thread);
	log_stats();
	rc = EXIT_SUCCESS;
out:
	if (n_workers == 0) { /* worker 0 never made: its parts are still ours */
		localzone_free(lz);
		tls_ctx_free(tls);
		free(cfg);
	}
	for (unsigned i = 0; i < n_workers; i++)
		server_free(workers[i]);
	return rc;
}
