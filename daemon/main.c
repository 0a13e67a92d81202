/*
 * dotproxy: start-up, signals, threads and shutdown -- what is process-wide.
 * Everything per loop is a worker's (worker.c); this file only creates the
 * workers, drives them (reload, drain, network change) and waits for them.
 * Exit status: 0 after SIGTERM/SIGINT, 1 when start-up fails, 2 for a bad
 * argument or configuration (sockets handed over by systemd that dotproxy
 * cannot use included: a restart cannot fix those either).
 */
#include "daemon/control.h"
#include "daemon/dnstap.h"
#include "daemon/loop.h"
#include "daemon/metrics_http.h"
#include "daemon/netwatch.h"
#include "daemon/sdlisten.h"
#include "daemon/sdnotify.h"
#include "daemon/settings.h"
#include "daemon/worker.h"
#include "lib/acl.h"
#include "lib/localzone.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/options.h"
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
};

_Static_assert((int)OPTIONS_MAX_WORKERS <= (int)METRICS_MAX_WORKERS, "a counter set per worker");

/* The process: its workers (0 runs on this thread and gets the signals),
 * the settings in force, and what watches the world on worker 0's loop. */
static struct {
	struct worker *workers[OPTIONS_MAX_WORKERS];
	unsigned n_workers;
	struct settings *settings; /* held */
	int argc;		   /* the command line, read again on SIGHUP */
	char **argv;
	bool draining;
	struct sdlisten handed; /* sockets from systemd: used instead of --listen */
	uv_signal_t sig_term, sig_int, sig_usr1, sig_hup;
	struct netwatch *netwatch;
	struct metrics_http *metrics;		     /* --metrics, on worker 0's loop */
	struct control *control;		     /* --control, on worker 0's loop */
	uint64_t flush_tickets[OPTIONS_MAX_WORKERS]; /* the last control flush's, per worker */
	uint64_t flush_removed_before;		     /* entries removed by earlier flushes */
} proc;

static void log_stats(void)
{
	char line[4096];

	metrics_render(line, sizeof(line));
	log_tagged("stats", "%s", line + strlen("stats: "));
}

static void set_log_level(const struct config *cfg)
{
	log_threshold = cfg->verbosity >= 2   ? LOG_LEVEL_DEBUG
			: cfg->verbosity == 1 ? LOG_LEVEL_INFO
					      : LOG_LEVEL_WARN;
}

/* Worker 0 runs on this thread: told directly; the others through their
 * loops. */
static void tell_workers(unsigned commands, struct settings *s)
{
	worker_command(proc.workers[0], commands, s);
	for (unsigned i = 1; i < proc.n_workers; i++)
		worker_post(proc.workers[i], commands, s);
}

/*
 * SIGHUP (or `dotproxyctl reload`, as @who): read the command line and
 * config file again, once for every worker.  A bad config is logged once and
 * changes nothing anywhere; otherwise every worker takes the same new
 * settings.  Returns 0 with what was loaded in @msg, or -1 with the reason.
 */
static int reload(const char *who, char *msg, size_t cap)
{
	char err[1024];
	int status;
	FILE *devnull = fopen("/dev/null", "w");
	struct settings *s = settings_load(proc.argc, proc.argv, devnull ? devnull : stdout,
					   &status, err, sizeof(err));

	if (devnull)
		fclose(devnull);
	if (!s) {
		snprintf(msg, cap, "%s", status < 0 ? err : "nothing to run");
		log_error("%s: configuration unchanged: %s", who, msg);
		return -1;
	}
	/* Compared with what runs, not with the file as it was: after a revert
	 * nothing differs.  Not shared yet: the last moment s may be written.
	 * Handed sockets stay whatever the file says: nothing is bound again. */
	if (proc.handed.n > 0) {
		memcpy(s->cfg.listen, proc.settings->cfg.listen, sizeof(s->cfg.listen));
		s->cfg.n_listen = proc.settings->cfg.n_listen;
	}
	char changed[200];
	unsigned n_changed =
	    options_keep_running(&s->cfg, &proc.settings->cfg, changed, sizeof(changed));
	if (n_changed)
		log_warn("%s: %s change%s only on restart; still running with the old %s", who,
			 changed, n_changed == 1 ? "s" : "", n_changed == 1 ? "one" : "ones");
	set_log_level(&s->cfg);
	for (unsigned i = 0; i < s->cfg.n_warnings; i++)
		log_warn("%s: %s", who, s->cfg.warnings[i]);
	tell_workers(WORKER_RELOAD, s);
	if (proc.metrics)
		metrics_http_set_allow(proc.metrics, &s->cfg.allow);
	settings_drop(proc.settings);
	proc.settings = s;
	if (s->tls_server || s->tls_server_h2) {
		/* After a renewal, the log says the new certificate is in use. */
		char desc[512];
		tls_server_ctx_describe(s->tls_server ? s->tls_server : s->tls_server_h2, desc,
					sizeof(desc));
		log_tagged("notice", "%s: TLS listeners serve %s (%s)", who, desc,
			   s->cfg.cert_file);
	}
	snprintf(msg, cap, "configuration reloaded: %u upstream(s), policy %s", s->cfg.n_upstream,
		 s->cfg.policy == OPTIONS_POLICY_FASTEST    ? "fastest"
		 : s->cfg.policy == OPTIONS_POLICY_FAILOVER ? "failover"
							    : "round-robin");
	log_tagged("notice", "%s: %s", who, msg);
	return 0;
}

/* A reload as systemd is told of it: SIGHUP and `dotproxyctl reload` both
 * come here.  Refused during shutdown. */
static int reload_notified(const char *who, char *msg, size_t cap)
{
	char note[64];

	if (proc.draining) {
		snprintf(msg, cap, "shutting down");
		return -1;
	}
	/* MONOTONIC_USEC: systemd (253+) matches the reload by it. */
	snprintf(note, sizeof(note), "RELOADING=1\nMONOTONIC_USEC=%llu",
		 (unsigned long long)(uv_hrtime() / 1000));
	sdnotify(note);
	int rc = reload(who, msg, cap);
	sdnotify("READY=1");
	return rc;
}

static void network_changed(void *arg)
{
	(void)arg;
	if (!proc.draining)
		tell_workers(WORKER_NETWORK, NULL);
}

static void signal_cb(uv_signal_t *sig, int signum)
{
	(void)sig;
	if (signum == SIGUSR1) {
		log_stats();
		return;
	}
	if (signum == SIGHUP) {
		char msg[1024];
		reload_notified("SIGHUP", msg, sizeof(msg));
		return;
	}
	if (proc.draining) {
		log_info("second signal: stopping now");
		tell_workers(WORKER_STOP, NULL);
		return;
	}
	proc.draining = true;
	sdnotify("STOPPING=1");
	tell_workers(WORKER_DRAIN, NULL);
}

/* Worker 0 is finishing: close what this file added to its loop. */
static void close_process_handles(void *arg)
{
	uv_signal_t *sigs[] = { &proc.sig_term, &proc.sig_int, &proc.sig_usr1, &proc.sig_hup };

	(void)arg;
	for (unsigned i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
		uv_signal_stop(sigs[i]);
		uv_close((uv_handle_t *)sigs[i], NULL);
	}
	/* uv_signal_stop() put the default actions back: another SIGTERM in
	 * the last moments of a clean exit (a supervisor asking again) would
	 * kill the process instead.  The loops are ending: ignore them. */
	signal(SIGTERM, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	signal(SIGUSR1, SIG_IGN);
	netwatch_free(proc.netwatch);
	proc.netwatch = NULL;
	if (proc.metrics)
		metrics_http_close(proc.metrics);
	proc.metrics = NULL;
	if (proc.control)
		control_close(proc.control);
	proc.control = NULL;
}

/* -- what the control socket asks ------------------------------------------------- */

static int control_reload(void *arg, char *msg, size_t cap)
{
	(void)arg;
	return reload_notified("control", msg, cap);
}

/* Every worker flushes its own cache, through its inbox (worker 0's too). */
static void control_flush_start(void *arg, const uint8_t *name, size_t len)
{
	uint64_t removed;

	(void)arg;
	proc.flush_removed_before = 0;
	for (unsigned i = 0; i < proc.n_workers; i++) {
		worker_flushed(proc.workers[i], &removed);
		proc.flush_removed_before += removed;
		proc.flush_tickets[i] = worker_flush(proc.workers[i], name, len);
	}
}

static bool control_flush_done(void *arg, uint64_t *removed)
{
	bool done = true;
	uint64_t sum = 0, r;

	(void)arg;
	for (unsigned i = 0; i < proc.n_workers; i++) {
		if (worker_flushed(proc.workers[i], &r) < proc.flush_tickets[i])
			done = false;
		sum += r;
	}
	*removed = sum - proc.flush_removed_before;
	return done;
}

static const struct control_ops control_ops = {
	.reload = control_reload,
	.flush_start = control_flush_start,
	.flush_done = control_flush_done,
};

static void watch_signals(struct loop *loop)
{
	uv_signal_t *sigs[] = { &proc.sig_term, &proc.sig_int, &proc.sig_usr1, &proc.sig_hup };
	int nums[] = { SIGTERM, SIGINT, SIGUSR1, SIGHUP };

	for (unsigned i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
		uv_signal_init(&loop->uv, sigs[i]);
		uv_signal_start(sigs[i], signal_cb, nums[i]);
	}
	/* Only TERM and INT keep the loop alive: the workers' handles do. */
	uv_unref((uv_handle_t *)&proc.sig_usr1);
	uv_unref((uv_handle_t *)&proc.sig_hup);
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
	int rc = proc.control ? control_chown(proc.control, pw->pw_uid, pw->pw_gid) : 0;
	if (rc < 0) {
		fprintf(stderr,
			"dotproxy: --user %s: cannot give the control socket %s to it: %s\n", user,
			proc.settings->cfg.control, strerror(-rc));
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

/* Start-up failed after the workers were made: close everything each one
 * opened, one loop after the other (no worker thread runs yet). */
static void abandon_workers(void)
{
	for (unsigned i = 0; i < proc.n_workers; i++) {
		worker_command(proc.workers[i], WORKER_STOP, NULL);
		worker_run(proc.workers[i]);
	}
}

/* Listening beyond loopback while only loopback clients may ask is most
 * likely a missing --allow: say so once, rather than let LAN clients meet
 * REFUSED without a word.  A UDP socket on a wildcard address answers from
 * whichever address the routing picks, which need not be the one the
 * client asked (a resolver at 127.0.0.53 answered from 127.0.0.1 drops the
 * answer): say that too. */
static void warn_listener(const struct config *cfg, const struct sockaddr *sa, const char *text,
			  bool udp)
{
	if (acl_loopback_only(&cfg->allow) && !acl_is_loopback(sa))
		log_warn("listening on %s, but only loopback clients are answered "
			 "(others get REFUSED): name the clients with --allow, e.g. "
			 "--allow 192.168.0.0/16",
			 text);
	if (udp && sdlisten_is_wildcard(sa))
		log_warn("listening on %s/udp, a wildcard address: answers leave from the "
			 "address the routing table picks, which clients that asked another "
			 "address of this host ignore; listen on each address instead",
			 text);
}

static void warn_listeners(const struct config *cfg)
{
	for (unsigned i = 0; i < proc.handed.n; i++) {
		const struct sdlisten_socket *s = &proc.handed.sock[i];
		warn_listener(cfg, (const struct sockaddr *)&s->addr, s->text, !s->stream);
	}
	if (proc.handed.n > 0) {
		if (!cfg->listen_is_default)
			log_warn("--listen ignored: using the %u socket(s) systemd handed over",
				 proc.handed.n);
		return;
	}
	for (unsigned i = 0; i < cfg->n_listen; i++)
		warn_listener(cfg, (const struct sockaddr *)&cfg->listen[i].sa, cfg->listen[i].text,
			      true);
}

static void log_upstreams(const struct config *cfg)
{
	for (unsigned i = 0; i < cfg->n_upstream; i++)
		log_info("upstream %s (%s%s)", cfg->upstream[i].label,
			 cfg->upstream[i].auth_name[0] ? "certificate must match the name"
						       : "certificate must carry the IP",
			 cfg->upstream[i].n_pins ? ", key must match a pin" : "");
}

/* Make, bind and start every worker; 0 or an exit status. */
static int start(const struct config *cfg)
{
	char err[1024];

	for (unsigned i = 0; i < cfg->workers; i++) {
		struct worker *w = worker_new(i, proc.settings, err, sizeof(err));
		if (!w) {
			fprintf(stderr, "dotproxy: worker %u: %s\n", i, err);
			return EXIT_STARTUP;
		}
		proc.workers[proc.n_workers++] = w;
		if (i == 0) {
			/* Before any socket is bound: a signal from someone who saw
			 * the port open must not kill us. */
			watch_signals(worker_loop(w));
			worker_on_finish(w, close_process_handles, NULL);
		}
	}
	/* Before the DNS sockets: once a client can reach those, the metrics
	 * endpoint and the control socket are there too. */
	uv_loop_t *loop0 = &worker_loop(proc.workers[0])->uv;
	if (cfg->metrics.sa_len) {
		proc.metrics =
		    metrics_http_start(loop0, &cfg->metrics, &cfg->allow, err, sizeof(err));
		if (!proc.metrics) {
			fprintf(stderr, "dotproxy: %s\n", err);
			return EXIT_STARTUP;
		}
	}
	if (cfg->control[0]) {
		proc.control =
		    control_start(loop0, cfg->control, &control_ops, NULL, err, sizeof(err));
		if (!proc.control) {
			fprintf(stderr, "dotproxy: %s\n", err);
			return EXIT_STARTUP;
		}
	}
	for (unsigned i = 0; i < proc.n_workers; i++) {
		if (worker_listen(proc.workers[i], &proc.handed, err, sizeof(err)) < 0) {
			fprintf(stderr, "dotproxy: %s\n", err);
			return EXIT_STARTUP;
		}
	}
	/* Every worker holds its own descriptor of each handed socket now. */
	sdlisten_close(&proc.handed);
	proc.netwatch = netwatch_new(&worker_loop(proc.workers[0])->uv, network_changed, NULL);
	if (cfg->user[0] && drop_privileges(cfg->user) < 0)
		return EXIT_STARTUP;
	/* After the privileges are dropped: the receiver's socket is reached
	 * as the user that will reach it again. */
	if (dnstap_start(cfg, proc.n_workers, err, sizeof(err)) < 0) {
		fprintf(stderr, "dotproxy: dnstap: %s\n", err);
		return EXIT_STARTUP;
	}
	warn_listeners(cfg);
	log_upstreams(cfg);
	if (proc.settings->tls_server || proc.settings->tls_server_h2) {
		const struct settings *s = proc.settings;
		char desc[512];
		tls_server_ctx_describe(s->tls_server ? s->tls_server : s->tls_server_h2, desc,
					sizeof(desc));
		log_info("TLS listeners serve %s (%s)", desc, cfg->cert_file);
	}
	for (unsigned i = 1; i < proc.n_workers; i++)
		require(worker_spawn(proc.workers[i]) == 0);
	/* The addresses bound, not those configured: a default [::1]:53 on a
	 * host without IPv6 is skipped. */
	char listening[64], workers[32] = "";
	if (proc.handed.n > 0)
		snprintf(listening, sizeof(listening), "%u socket(s) from systemd (%u udp, %u tcp)",
			 proc.handed.n, proc.handed.n - proc.handed.n_stream, proc.handed.n_stream);
	else
		snprintf(listening, sizeof(listening), "%u listen address(es)",
			 worker_listening(proc.workers[0]));
	if (proc.n_workers > 1)
		snprintf(workers, sizeof(workers), ", %u workers", proc.n_workers);
	log_tagged("notice", "dotproxy %s ready: %s, %u upstream(s)%s", DOTPROXY_VERSION, listening,
		   cfg->n_upstream, workers);
	return 0;
}

int main(int argc, char **argv)
{
	char err[1024];
	int status;

	proc.argc = argc;
	proc.argv = argv;
	log_use_journal_if_stderr_is();
	proc.settings = settings_load(argc, argv, stdout, &status, err, sizeof(err));
	if (!proc.settings) {
		if (status == OPTIONS_EXIT)
			return EXIT_SUCCESS;
		fprintf(stderr, "dotproxy: %s\n", err);
		return EXIT_USAGE;
	}
	const struct config *cfg = &proc.settings->cfg;
	set_log_level(cfg);
	if (cfg->check_only) {
		for (unsigned i = 0; i < cfg->n_warnings; i++)
			fprintf(stderr, "dotproxy: warning: %s\n", cfg->warnings[i]);
		if (cfg->cli_verbosity)
			options_print(cfg, stdout);
		printf("configuration OK: %u listen address(es), %u upstream(s), %u forward "
		       "zone(s), %zu local name(s), %zu blocked name(s)\n",
		       cfg->n_listen, cfg->n_upstream, cfg->n_zones,
		       localzone_data_count(proc.settings->localzone),
		       localzone_blocked_count(proc.settings->localzone));
		settings_drop(proc.settings);
		return EXIT_SUCCESS;
	}
	/* Before any thread: this unsets LISTEN_PID and friends. */
	if (sdlisten_take(&proc.handed, err, sizeof(err)) < 0) {
		fprintf(stderr, "dotproxy: socket activation: %s\n", err);
		settings_drop(proc.settings);
		return EXIT_USAGE;
	}
	for (unsigned i = 0; i < cfg->n_warnings; i++)
		log_warn("%s", cfg->warnings[i]);
	signal(SIGPIPE, SIG_IGN);
	raise_fd_limit();
	int rc = start(cfg);
	sdlisten_close(&proc.handed); /* if start() failed before it did */
	if (rc) {
		abandon_workers(); /* worker 0 closes the signal handles, if any */
		dnstap_stop();
	} else {
		sdnotify("READY=1");
		worker_run(proc.workers[0]);
		for (unsigned i = 1; i < proc.n_workers; i++)
			worker_join(proc.workers[i]);
		dnstap_stop(); /* before the stats line, which counts what it wrote */
		log_stats();
	}
	for (unsigned i = 0; i < proc.n_workers; i++)
		worker_free(proc.workers[i]);
	settings_drop(proc.settings);
	return rc;
}
