/*
 * dotproxy: start-up, signals and shutdown.  The only file that sees every
 * module.  Exit status: 0 after SIGTERM/SIGINT, 1 when start-up fails,
 * 2 for a bad argument or configuration.
 */
#include "daemon/busypoll.h"
#include "daemon/listen_tcp.h"
#include "daemon/listen_udp.h"
#include "daemon/netwatch.h"
#include "daemon/query.h"
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

static void log_stats(void)
{
	char line[2048];

	metrics_render(line, sizeof(line));
	log_tagged("stats", "%s", line + strlen("stats: "));
}

/* Close everything that is left; uv_run() returns once the handles are gone. */
static void finish(struct server *srv)
{
	uv_signal_stop(&srv->sig_term);
	uv_signal_stop(&srv->sig_int);
	uv_signal_stop(&srv->sig_usr1);
	uv_signal_stop(&srv->sig_hup);
	uv_close((uv_handle_t *)&srv->sig_term, NULL);
	uv_close((uv_handle_t *)&srv->sig_int, NULL);
	uv_close((uv_handle_t *)&srv->sig_usr1, NULL);
	uv_close((uv_handle_t *)&srv->drain_timer, NULL);
	netwatch_stop(srv->netwatch);
	srv->netwatch = NULL;
	uv_close((uv_handle_t *)&srv->sig_hup, NULL);
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
		log_error("SIGHUP: configuration unchanged: %s",
			  rc < 0 || rc == OPTIONS_RUN ? err : "nothing to run");
		tls_ctx_free(tls);
		free(fresh);
		return;
	}
	localzone_free(srv->localzone);
	srv->localzone = lz;
	if (!same_listen(srv->cfg, fresh) || fresh->max_inflight != srv->cfg->max_inflight ||
	    fresh->cache_bytes != srv->cfg->cache_bytes)
		log_warn("SIGHUP: listen addresses, --max-inflight and --cache-size change only "
			 "on restart");
	fresh->max_inflight = srv->cfg->max_inflight;
	fresh->cache_bytes = srv->cfg->cache_bytes;
	struct config *old_cfg = srv->cfg_owned;
	struct tls_ctx *old_tls = srv->tls;
	struct upstream_set *old_set = srv->upstreams;
	srv->cfg = srv->cfg_owned = fresh;
	srv->tls = tls;
	set_log_level(fresh);
	srv->upstreams = upstream_set_new(srv);
	require(srv->upstreams);
	upstream_set_retire(old_set); /* its queries move to the new set */
	upstream_set_free(old_set);
	tls_ctx_free(old_tls);
	free(old_cfg);
	log_tagged("notice", "SIGHUP: configuration reloaded: %u upstream(s), policy %s",
		   fresh->n_upstream,
		   fresh->policy == OPTIONS_POLICY_FASTEST    ? "fastest"
		   : fresh->policy == OPTIONS_POLICY_FAILOVER ? "failover"
							      : "round-robin");
}

static void signal_cb(uv_signal_t *sig, int signum)
{
	struct server *srv = sig->data;

	if (signum == SIGUSR1) {
		log_stats();
		return;
	}
	if (signum == SIGHUP) {
		if (!srv->draining)
			reload(srv);
		return;
	}
	if (srv->draining) {
		log_info("second signal: stopping now");
		uv_timer_start(&srv->drain_timer, drain_timer_cb, 0, 0);
		return;
	}
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

int main(int argc, char **argv)
{
	static struct server srv; /* large (I/O buffers): not on the stack */
	struct config *cfg = malloc(sizeof(*cfg));
	char err[1024];
	uv_loop_t loop;
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
	srv.tls = make_tls(cfg, err, sizeof(err));
	if (!srv.tls) {
		fprintf(stderr, "dotproxy: %s%s\n", cfg->ca_file[0] ? "--ca-file: " : "", err);
		free(cfg);
		return EXIT_USAGE;
	}
	srv.localzone = make_localzone(cfg, err, sizeof(err));
	if (!srv.localzone) {
		fprintf(stderr, "dotproxy: --block: %s\n", err);
		tls_ctx_free(srv.tls);
		free(cfg);
		return EXIT_USAGE;
	}
	if (cfg->check_only) {
		printf("configuration OK: %u listen address(es), %u upstream(s), %zu blocked "
		       "name(s)\n",
		       cfg->n_listen, cfg->n_upstream, localzone_blocked_count(srv.localzone));
		localzone_free(srv.localzone);
		tls_ctx_free(srv.tls);
		free(cfg);
		return EXIT_SUCCESS;
	}
	signal(SIGPIPE, SIG_IGN);
	raise_fd_limit();
	rc = uv_loop_init(&loop);
	if (rc < 0) {
		fprintf(stderr, "dotproxy: cannot create the event loop: %s\n", uv_strerror(rc));
		rc = EXIT_STARTUP;
		goto out;
	}
	srv.argc = argc;
	srv.argv = argv;
	srv.loop = &loop;
	srv.cfg = srv.cfg_owned = cfg;
	uint64_t seed = (uint64_t)random_u16() << 48 | (uint64_t)random_u16() << 32 |
			(uint64_t)random_u16() << 16 | random_u16();
	srv.cache = cache_new(cfg->cache_bytes, seed);
	require(srv.cache);
	srv.queries = query_pool_new(&srv, cfg->max_inflight);
	srv.upstreams = upstream_set_new(&srv);
	require(srv.queries && srv.upstreams);
	flusher_init(&srv);
	uv_timer_init(&loop, &srv.drain_timer);
	srv.drain_timer.data = &srv;
	uv_signal_init(&loop, &srv.sig_term);
	uv_signal_init(&loop, &srv.sig_int);
	uv_signal_init(&loop, &srv.sig_usr1);
	uv_signal_init(&loop, &srv.sig_hup);
	srv.sig_term.data = srv.sig_int.data = srv.sig_usr1.data = srv.sig_hup.data = &srv;
	uv_signal_start(&srv.sig_term, signal_cb, SIGTERM);
	uv_signal_start(&srv.sig_int, signal_cb, SIGINT);
	uv_signal_start(&srv.sig_usr1, signal_cb, SIGUSR1);
	uv_signal_start(&srv.sig_hup, signal_cb, SIGHUP);
	uv_unref((uv_handle_t *)&srv.sig_usr1);
	uv_unref((uv_handle_t *)&srv.sig_hup);

	if (start(&srv) < 0) {
		start_drain(&srv);
		uv_run(&loop, UV_RUN_DEFAULT);
		rc = EXIT_STARTUP;
		goto out_loop;
	}
	srv.netwatch = netwatch_start(&srv);
	if (cfg->user[0] && drop_privileges(cfg->user) < 0) {
		start_drain(&srv);
		uv_run(&loop, UV_RUN_DEFAULT);
		rc = EXIT_STARTUP;
		goto out_loop;
	}
	for (unsigned i = 0; i < cfg->n_upstream; i++)
		log_info("upstream %s (%s%s)", cfg->upstream[i].label,
			 cfg->upstream[i].auth_name[0] ? "certificate must match the name"
						       : "certificate must carry the IP",
			 cfg->upstream[i].n_pins ? ", key must match a pin" : "");
	log_tagged("notice", "dotproxy %s ready: %u listen address(es), %u upstream(s)",
		   DOTPROXY_VERSION, cfg->n_listen, cfg->n_upstream);
	busypoll_run(&srv);
	log_stats();
	rc = EXIT_SUCCESS;
out_loop:
	if (uv_loop_close(&loop) < 0)
		log_debug("event loop closed with handles still open");
out:
	tls_ctx_free(srv.tls);
	localzone_free(srv.localzone);
	cache_free(srv.cache);
	free(srv.cfg_owned);
	return rc;
}
