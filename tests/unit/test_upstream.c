/*
 * Unit tests for daemon/upstream: policy, health and backoff, hedging,
 * silence, the routine-close rule, failed attempts, full connections,
 * answer matching and reloads, through a fake transport (no sockets, no
 * TLS).  Its connections only record what the upstream layer sends, cancels
 * and closes; each test plays the server by driving the events by hand
 * (ready, answer, failed, closed, orphaned).  Timers run
 * on a real libuv loop, so the timed tests wait for real, a few hundred
 * milliseconds at most: each checks that nothing happened shortly before
 * the due time and that it happened shortly after.
 */
#include "daemon/upstream.h"

#include "daemon/loop.h"
#include "daemon/transport.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/options.h"
#include "lib/wire.h"
#include "tests/unit/msg_builder.h"

#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include <cmocka.h>

enum {
	MAX_CONNS = 64,	 /* fake connections one test may open */
	MAX_SENDS = 512, /* jobs one fake connection may be given */
	MAX_JOBS = 16,	 /* jobs one test may use at once */
	MSG_CAP = 128,	 /* our queries are short */
	CAPACITY = 100,	 /* jobs a fake connection takes at once */
	TYPE_A = 1,
	TYPE_AAAA = 28,
	PORT_A = 8531, /* upstream "a"; "b" and "c" follow */
};

/* -- the fake transport ----------------------------------------------------------- */

/* One job handed to a fake connection. */
struct sent {
	void *job;
	uint32_t key;
	uint8_t msg[MSG_CAP]; /* a copy, as send() promises */
	size_t len;
	bool written;	/* the server could have seen it: the connection was ready */
	bool cancelled; /* cancel(key) came */
	bool done;	/* no longer on the connection: taken, cancelled or orphaned */
};

struct fake_conn {
	struct transport_conn base; /* first: what the upstream layer sees */
	const struct transport_env *env;
	const struct options_upstream *spec;
	char ip[INET6_ADDRSTRLEN]; /* spec->ip when it was opened */
	unsigned index;		   /* in conns[], in the order opened */
	struct sent sent[MAX_SENDS];
	unsigned n_sent;
	unsigned close_calls; /* close() by the upstream layer */
	bool ready;
	bool closed;
};

static struct fake_conn *conns[MAX_CONNS]; /* every connection opened by this test */
static unsigned n_conns;
static unsigned fake_cap = CAPACITY; /* jobs a connection starts at once */
static bool fake_queues;	     /* beyond that, it holds jobs (as DoH does) */
static int peers;		     /* peer_new() minus peer_free() */
static char peer_token;

static struct fake_conn *fake(const struct transport_conn *c)
{
	return (struct fake_conn *)c;
}

static void *fake_peer_new(const struct options_upstream *spec)
{
	(void)spec;
	peers++;
	return &peer_token;
}

static void fake_peer_free(void *peer)
{
	assert_ptr_equal(peer, &peer_token);
	peers--;
}

static const struct transport_ops fake_ops;

static struct transport_conn *fake_open(const struct transport_env *env,
					const struct options_upstream *spec, void *peer,
					const struct transport_events *ev, void *owner)
{
	assert_ptr_equal(peer, &peer_token);
	assert_true(n_conns < MAX_CONNS);
	struct fake_conn *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	f->base.ops = &fake_ops;
	f->base.ev = ev;
	f->base.owner = owner;
	f->env = env;
	f->spec = spec;
	snprintf(f->ip, sizeof(f->ip), "%s", spec->ip);
	f->index = n_conns;
	conns[n_conns++] = f;
	return &f->base;
}

static unsigned fake_load(const struct transport_conn *c)
{
	const struct fake_conn *f = fake(c);
	unsigned n = 0;

	for (unsigned i = 0; i < f->n_sent; i++)
		n += !f->sent[i].done;
	return n;
}

static unsigned fake_capacity(const struct transport_conn *c)
{
	unsigned load = fake_load(c);

	return fake(c)->closed || load >= fake_cap ? 0 : fake_cap - load;
}

static int fake_send(struct transport_conn *c, const uint8_t *msg, size_t len, void *job,
		     uint32_t *key)
{
	struct fake_conn *f = fake(c);

	if (f->closed)
		return -EPIPE;
	if (fake_capacity(c) == 0 && !fake_queues)
		return -ENOSPC;
	assert_true(f->n_sent < MAX_SENDS && len <= MSG_CAP);
	struct sent *s = &f->sent[f->n_sent];
	/* Keys unique across connections: one valid elsewhere is not valid here. */
	s->key = 1000 * (f->index + 1) + f->n_sent;
	s->job = job;
	memcpy(s->msg, msg, len);
	s->len = len;
	s->written = f->ready;
	f->n_sent++;
	*key = s->key;
	return 0;
}

static struct sent *by_key(struct fake_conn *f, uint32_t key)
{
	for (unsigned i = 0; i < f->n_sent; i++)
		if (f->sent[i].key == key)
			return &f->sent[i];
	return NULL;
}

static void fake_cancel(struct transport_conn *c, uint32_t key)
{
	struct sent *s = by_key(fake(c), key);

	/* Strict: the layer cancels only keys it holds, once. */
	assert_non_null(s);
	assert_false(s->done);
	s->cancelled = true;
	s->done = true;
}

/* What a real transport does when it closes: closed, then orphaned for each
 * job still on it. */
static void shut(struct fake_conn *f, enum transport_close_reason reason)
{
	if (f->closed)
		return;
	f->closed = true;
	f->base.ev->closed(&f->base, reason, NULL);
	for (unsigned i = 0; i < f->n_sent; i++) {
		struct sent *s = &f->sent[i];
		if (s->done)
			continue;
		s->done = true;
		f->base.ev->orphaned(&f->base, s->job, s->written);
	}
}

static void fake_close(struct transport_conn *c, const char *why)
{
	(void)why;
	fake(c)->close_calls++;
	shut(fake(c), TRANSPORT_CLOSED_BY_US);
}

static const struct transport_ops fake_ops = {
	.name = "fake",
	.peer_new = fake_peer_new,
	.peer_free = fake_peer_free,
	.open = fake_open,
	.send = fake_send,
	.cancel = fake_cancel,
	.close = fake_close,
	.load = fake_load,
	.capacity = fake_capacity,
};

static const struct transport_ops *fake_transport_for(const struct options_upstream *spec)
{
	(void)spec;
	return &fake_ops;
}

/* Which upstream @f goes to: 'a', 'b' or 'c', whatever its place in the set. */
static char which(const struct fake_conn *f)
{
	return (char)('a' + (f->spec->port - PORT_A));
}

/* -- the world a test runs in ------------------------------------------------------- */

/* A query, the job that carries it, and how the job ended. */
struct tjob {
	struct upstream_job job; /* first: the hooks get &job */
	struct msg query;
	struct wire_info info;
	unsigned answered, failed;
	int ede, metric;
};

static struct loop loop;
static struct config cfg, cfg2; /* large (16 upstreams, paths): static */
static struct transport_env env, env2;
static struct upstream_set *set; /* the newest set: teardown frees it */
static struct tjob jobs[MAX_JOBS];
static unsigned n_jobs;
static uv_timer_t clock_timer; /* run_for() */
static bool clock_fired;
static bool world;

/* As the query core does: the job is over, forget every attempt. */
static void job_answered(struct upstream_job *job, uint8_t *msg, size_t len,
			 const struct wire_info *info)
{
	struct tjob *t = (struct tjob *)job;

	(void)msg;
	(void)len;
	assert_true(wire_question_equal(&info->q, &t->info.q));
	t->answered++;
	upstream_job_cancel(job);
}

static void job_failed(struct upstream_job *job, int ede, int metric)
{
	struct tjob *t = (struct tjob *)job;

	t->failed++;
	t->ede = ede;
	t->metric = metric;
	upstream_job_cancel(job);
}

static const struct upstream_hooks hooks = {
	.answered = job_answered,
	.failed = job_failed,
};

/* @upstreams: letters from "abcd", in the order the set lists them ("d" is
 * given by name, tls://d.test:8534). */
static void configure(struct config *c, const char *upstreams, const char *policy,
		      const char *timeout_ms)
{
	static const char *const specs[] = { "127.0.0.1@8531#a.test", "127.0.0.2@8532#b.test",
					     "127.0.0.3@8533#c.test", "tls://d.test:8534" };
	char *argv[16];
	int argc = 0;
	char err[256];

	argv[argc++] = (char *)"dotproxy";
	for (const char *u = upstreams; *u; u++) {
		argv[argc++] = (char *)"--upstream";
		argv[argc++] = (char *)specs[*u - 'a'];
	}
	if (strchr(upstreams, 'd')) { /* given by name */
		argv[argc++] = (char *)"--bootstrap";
		argv[argc++] = (char *)"192.0.2.1";
	}
	argv[argc++] = (char *)"--policy";
	argv[argc++] = (char *)policy;
	argv[argc++] = (char *)"--timeout";
	argv[argc++] = (char *)timeout_ms;
	argv[argc] = NULL;
	assert_int_equal(options_parse(argc, argv, c, stdout, err, sizeof(err)), OPTIONS_RUN);
	assert_int_equal(c->n_upstream, strlen(upstreams));
}

static void start_world(const char *upstreams, const char *policy, const char *timeout_ms)
{
	configure(&cfg, upstreams, policy, timeout_ms);
	assert_int_equal(loop_init(&loop, 0), 0);
	uv_timer_init(&loop.uv, &clock_timer);
	world = true;
	env = (struct transport_env){ .loop = &loop, .cfg = &cfg, .tls = NULL };
	set = upstream_set_new(&env, cfg.upstream, cfg.n_upstream, fake_transport_for, &hooks);
	assert_non_null(set);
}

static int teardown(void **state)
{
	(void)state;
	if (!world)
		return 0;
	for (unsigned i = 0; i < n_jobs; i++)
		upstream_job_cancel(&jobs[i].job);
	upstream_set_free(set);
	for (unsigned i = 0; i < n_jobs; i++)
		upstream_job_deinit(&jobs[i].job, NULL, NULL);
	uv_close((uv_handle_t *)&clock_timer, NULL);
	loop_close_handles(&loop);
	uv_run(&loop.uv, UV_RUN_DEFAULT);
	loop_deinit(&loop);
	for (unsigned i = 0; i < n_conns; i++)
		free(conns[i]);
	n_conns = 0;
	n_jobs = 0;
	fake_cap = CAPACITY;
	fake_queues = false;
	memset(jobs, 0, sizeof(jobs));
	world = false;
	return peers == 0 ? 0 : -1; /* every set freed its peers */
}

static void clock_cb(uv_timer_t *timer)
{
	(void)timer;
	clock_fired = true;
}

/* Run the loop for @ms of real time: every timer due before then fires. */
static void run_for(unsigned ms)
{
	uv_update_time(&loop.uv);
	clock_fired = false;
	uv_timer_start(&clock_timer, clock_cb, ms, 0);
	while (!clock_fired)
		uv_run(&loop.uv, UV_RUN_ONCE);
}

static uint64_t metric(enum metric m)
{
	return metrics_mine[m];
}

/* A question as a DNS message, or its answer (QR set, no records). */
static void build(struct msg *m, const char *name, unsigned qtype, bool response)
{
	put_header(m, 0x1234, response ? WIRE_FLAG_QR | WIRE_FLAG_RD | WIRE_FLAG_RA : WIRE_FLAG_RD,
		   1, 0, 0, 0);
	put_name(m, name);
	put16(m, qtype);
	put16(m, WIRE_CLASS_IN);
}

static struct tjob *job_new(const char *name, unsigned qtype)
{
	assert_true(n_jobs < MAX_JOBS);
	struct tjob *t = &jobs[n_jobs++];
	build(&t->query, name, qtype, false);
	assert_int_equal(wire_parse(t->query.b, t->query.len, &t->info), 0);
	upstream_job_init(&t->job, &loop.uv);
	t->job.msg = t->query.b;
	t->job.len = t->query.len;
	t->job.question = &t->info.q;
	return t;
}

/* Start (or start again) @t in the newest set. */
static void job_start(struct tjob *t)
{
	uv_update_time(&loop.uv); /* timers count from now, not the last round */
	t->answered = 0;
	t->failed = 0;
	upstream_job_start(set, &t->job);
}

/* The live entry of @t on @f, or NULL. */
static struct sent *entry(struct fake_conn *f, const struct tjob *t)
{
	for (unsigned i = 0; i < f->n_sent; i++)
		if (f->sent[i].job == &t->job && !f->sent[i].done)
			return &f->sent[i];
	return NULL;
}

/* How many connections hold @t; the newest of them in @last. */
static unsigned holders(const struct tjob *t, struct fake_conn **last)
{
	unsigned n = 0;

	for (unsigned i = 0; i < n_conns; i++) {
		if (entry(conns[i], t)) {
			n++;
			if (last)
				*last = conns[i];
		}
	}
	return n;
}

/* The one connection holding @t, which carries @t's message. */
static struct fake_conn *holder(const struct tjob *t)
{
	struct fake_conn *f = NULL;

	assert_int_equal(holders(t, &f), 1);
	struct sent *s = entry(f, t);
	assert_int_equal(s->len, t->query.len);
	assert_memory_equal(s->msg, t->query.b, t->query.len);
	return f;
}

static void drive_ready(struct fake_conn *f)
{
	uv_update_time(&loop.uv);
	f->ready = true;
	for (unsigned i = 0; i < f->n_sent; i++)
		f->sent[i].written = true; /* queued jobs leave once ready */
	f->base.ev->ready(&f->base);
}

/* The closed event alone; the test sends orphaned events itself. */
static void drive_closed(struct fake_conn *f, enum transport_close_reason reason)
{
	uv_update_time(&loop.uv);
	f->closed = true;
	f->base.ev->closed(&f->base, reason, NULL);
}

static void drive_orphaned(struct fake_conn *f, struct tjob *t, bool maybe_processed)
{
	struct sent *s = entry(f, t);

	assert_non_null(s);
	s->done = true;
	f->base.ev->orphaned(&f->base, &t->job, maybe_processed);
}

/* The failed event for @t on @f: the transport forgets the key first. */
static void drive_failed(struct fake_conn *f, struct tjob *t, bool maybe_processed)
{
	struct sent *s = entry(f, t);

	assert_non_null(s);
	s->done = true;
	uv_update_time(&loop.uv);
	f->base.ev->failed(&f->base, s->key, &t->job, maybe_processed,
			   maybe_processed ? "HTTP status 503" : "refused");
}

/* The server ends @f: closed, then every job on it orphaned (maybe
 * processed when it was written). */
static void server_closes(struct fake_conn *f, enum transport_close_reason reason)
{
	uv_update_time(&loop.uv);
	shut(f, reason);
}

/* The answer event for @key on @f with @job as given (a transport passes the
 * job holding the key).  When taken, @key must have been cancelled first. */
static bool drive_answer(struct fake_conn *f, uint32_t key, struct tjob *job, const struct msg *m)
{
	uint8_t buf[MSG_CAP];
	struct wire_info info;

	memcpy(buf, m->b, m->len); /* the layer may modify it */
	assert_int_equal(wire_parse(buf, m->len, &info), 0);
	uv_update_time(&loop.uv);
	bool taken = f->base.ev->answer(&f->base, key, job ? &job->job : NULL, buf, m->len, &info);
	if (taken) {
		struct sent *s = by_key(f, key);
		assert_non_null(s);
		assert_true(s->cancelled);
	}
	return taken;
}

/* The response to @t's question (QR set, no records). */
static void answer_to(struct msg *m, const struct tjob *t)
{
	put_header(m, 0x1234, WIRE_FLAG_QR | WIRE_FLAG_RD | WIRE_FLAG_RA, 1, 0, 0, 0);
	put_raw(m, t->query.b + WIRE_HEADER_LEN, t->info.question_end - WIRE_HEADER_LEN);
}

/* @t's right answer arrives on @f, with its key. */
static bool answer(struct fake_conn *f, struct tjob *t)
{
	struct sent *s = entry(f, t);
	struct msg m;

	assert_non_null(s);
	answer_to(&m, t);
	return drive_answer(f, s->key, t, &m);
}

/* An answer for @key on @f, given to the job holding @key as a transport
 * would (none once the key is cancelled). */
static bool answer_key(struct fake_conn *f, uint32_t key, const struct msg *m)
{
	struct sent *s = by_key(f, key);

	return drive_answer(f, key, s && !s->done ? (struct tjob *)s->job : NULL, m);
}

/* @f fails before it is ready, with @t on it (not written). */
static void connect_fails(struct fake_conn *f, struct tjob *t)
{
	drive_closed(f, TRANSPORT_CLOSED_FAILED);
	drive_orphaned(f, t, false);
}

/* Start @t and make the connection it went to ready: @t is written. */
static struct fake_conn *start_ready(struct tjob *t)
{
	job_start(t);
	struct fake_conn *f = holder(t);
	drive_ready(f);
	return f;
}

/* Give the upstream the policy picks for @t an RTT sample of about
 * @delay_ms: @t goes out before its connection is ready (no sample), then
 * again on the ready connection, answered after @delay_ms.  Returns that
 * connection. */
static struct fake_conn *take_sample(struct tjob *t, unsigned delay_ms)
{
	job_start(t);
	struct fake_conn *f = holder(t);
	if (!f->ready) {
		drive_ready(f);
		assert_true(answer(f, t));
		job_start(t);
		assert_ptr_equal(holder(t), f);
	}
	if (delay_ms)
		uv_sleep(delay_ms);
	assert_true(answer(f, t));
	assert_int_equal(t->answered, 1);
	return f;
}

/* The bootstrap's answer for @hostname: the space-separated IPs @ips. */
static void resolve(const char *hostname, const char *ips)
{
	struct sockaddr_storage addrs[UPSTREAM_MAX_ADDRS + 2];
	char copy[256], *save = NULL;
	unsigned n = 0;

	snprintf(copy, sizeof(copy), "%s", ips);
	for (char *ip = strtok_r(copy, " ", &save); ip; ip = strtok_r(NULL, " ", &save)) {
		assert_true(n < UPSTREAM_MAX_ADDRS + 2);
		struct sockaddr_storage *sa = &addrs[n++];
		memset(sa, 0, sizeof(*sa));
		if (strchr(ip, ':')) {
			sa->ss_family = AF_INET6;
			assert_int_equal(
			    inet_pton(AF_INET6, ip, &((struct sockaddr_in6 *)sa)->sin6_addr), 1);
		} else {
			sa->ss_family = AF_INET;
			assert_int_equal(
			    inet_pton(AF_INET, ip, &((struct sockaddr_in *)sa)->sin_addr), 1);
		}
	}
	upstream_set_address(set, hostname, addrs, n);
}

/* -- policy ------------------------------------------------------------------------ */

static void failover_always_picks_first_healthy_upstream(void **state)
{
	(void)state;
	start_world("abc", "failover", "2000");
	struct tjob *t[4];

	for (unsigned i = 0; i < 4; i++) {
		t[i] = job_new("example.com", TYPE_A);
		job_start(t[i]);
		assert_int_equal(which(holder(t[i])), 'a');
	}
	assert_int_equal(n_conns, 1); /* one connection takes them all */
	drive_ready(conns[0]);
	for (unsigned i = 0; i < 4; i++) {
		assert_true(answer(conns[0], t[i]));
		assert_int_equal(t[i]->answered, 1);
	}
	/* Answers change nothing: "a" stays first. */
	for (unsigned i = 0; i < 4; i++) {
		job_start(t[i]);
		assert_ptr_equal(holder(t[i]), conns[0]);
	}
}

/* An upstream given by name is not used until upstream_set_address(); then
 * its connections go to that address, and a new address replaces them. */
static void named_upstream_is_used_once_its_address_is_known(void **state)
{
	(void)state;
	start_world("d", "failover", "2000");
	struct tjob *t = job_new("example.com", TYPE_A);

	job_start(t);
	assert_int_equal(t->failed, 1); /* at once, as when every upstream is down */
	assert_int_equal(t->ede, WIRE_EDE_NETWORK_ERROR);
	assert_int_equal(n_conns, 0);

	resolve("other.test", "127.0.0.4");
	job_start(t);
	assert_int_equal(t->failed, 1); /* another name: still unknown */
	assert_int_equal(n_conns, 0);
	resolve("d.test", "127.0.0.4");
	job_start(t);
	assert_int_equal(n_conns, 1);
	struct fake_conn *f = conns[0];
	assert_string_equal(f->spec->ip, "127.0.0.4");
	assert_string_equal(f->spec->auth_name, "d.test");
	assert_int_equal(f->spec->addr.sa.ss_family, AF_INET);
	assert_int_equal(ntohs(((const struct sockaddr_in *)&f->spec->addr.sa)->sin_port), 8534);
	assert_string_equal(f->spec->addr.text, "127.0.0.4:8534");
	drive_ready(f);
	assert_true(answer(f, t));

	/* The same address again changes nothing. */
	resolve("d.test", "127.0.0.4");
	assert_int_equal(f->close_calls, 0);
	/* Another one: the old connection goes, new ones use the new address. */
	resolve("d.test", "::1");
	assert_int_equal(f->close_calls, 1);
	job_start(t);
	assert_int_equal(n_conns, 2);
	assert_string_equal(conns[1]->spec->ip, "::1");
	assert_string_equal(conns[1]->spec->addr.text, "[::1]:8534");
}

/* A name with several addresses: a connection that fails before it is
 * ready moves the upstream to the next address, probed soon since it is
 * new; an answer that still holds the address in use keeps it; one that
 * does not starts at its first; the last address fails over to the
 * first. */
static void named_upstream_tries_its_next_address_when_one_fails(void **state)
{
	(void)state;
	start_world("d", "failover", "2000");
	struct tjob *t = job_new("example.com", TYPE_A);

	resolve("d.test", "127.0.0.4 127.0.0.5");
	job_start(t);
	assert_int_equal(n_conns, 1);
	assert_string_equal(conns[0]->ip, "127.0.0.4");
	connect_fails(conns[0], t);
	assert_int_equal(t->failed, 1); /* its only upstream is down */
	/* No job wants it, yet the new address is probed after 250 ms, not
	 * in a minute. */
	run_for(200);
	assert_int_equal(n_conns, 1);
	run_for(100);
	assert_int_equal(n_conns, 2);
	struct fake_conn *f = conns[1];
	assert_string_equal(f->ip, "127.0.0.5");
	assert_string_equal(f->spec->addr.text, "127.0.0.5:8534");
	drive_ready(f);
	job_start(t);
	assert_ptr_equal(holder(t), f);
	assert_true(answer(f, t));

	/* The same list again, or another that holds 127.0.0.5: it stays. */
	resolve("d.test", "127.0.0.4 127.0.0.5");
	resolve("d.test", "127.0.0.6 127.0.0.5");
	assert_int_equal(f->close_calls, 0);
	job_start(t);
	assert_ptr_equal(holder(t), f);
	assert_true(answer(f, t));
	/* A list without it: its first address. */
	resolve("d.test", "127.0.0.7 127.0.0.8");
	assert_int_equal(f->close_calls, 1);
	job_start(t);
	f = holder(t);
	assert_string_equal(f->ip, "127.0.0.7");

	/* 127.0.0.7 fails, then 127.0.0.8: back to 127.0.0.7. */
	connect_fails(f, t);
	run_for(300);
	assert_int_equal(n_conns, 4);
	assert_string_equal(conns[3]->ip, "127.0.0.8");
	drive_closed(conns[3], TRANSPORT_CLOSED_FAILED);
	assert_string_equal(conns[3]->spec->ip, "127.0.0.7"); /* the next connection's */
	assert_string_equal(conns[3]->spec->addr.text, "127.0.0.7:8534");
}

/* A name with two addresses, the first of which completes handshakes but
 * answers only errors: down after five, its connection closed, and the
 * probe goes to the second address. */
static void named_upstream_down_by_errors_tries_its_next_address(void **state)
{
	(void)state;
	start_world("d", "failover", "2000");
	char name[32];

	resolve("d.test", "127.0.0.4 127.0.0.5");
	struct fake_conn *f = NULL;
	for (unsigned i = 0; i < 5; i++) {
		snprintf(name, sizeof(name), "q%u.example.com", i);
		struct tjob *t = job_new(name, TYPE_A);
		if (!f)
			f = start_ready(t);
		else
			job_start(t);
		assert_ptr_equal(holder(t), f);
		drive_failed(f, t, true);
	}
	assert_string_equal(f->ip, "127.0.0.4");
	assert_int_equal(f->close_calls, 1);
	assert_int_equal(n_conns, 1);
	run_for(300); /* a new address: probed after 250 ms */
	assert_int_equal(n_conns, 2);
	assert_string_equal(conns[1]->ip, "127.0.0.5");
}

/* Whether upstream @label is down in any worker, as /metrics shows it. */
static bool shown_down(const char *label)
{
	struct metrics_upstream_view views[64];
	size_t n = metrics_upstreams(views, 64);

	for (size_t i = 0; i < n && i < 64; i++)
		if (strcmp(views[i].label, label) == 0)
			return !views[i].up;
	fail_msg("upstream %s is not in the metrics", label);
	return false;
}

/* A down named upstream whose name moves to another address starts
 * afresh: up, and so in the metrics too (the per-upstream down gauge). */
static void new_address_of_a_down_upstream_is_shown_up(void **state)
{
	(void)state;
	start_world("d", "failover", "2000");
	struct tjob *t = job_new("example.com", TYPE_A);

	resolve("d.test", "127.0.0.4");
	job_start(t);
	connect_fails(conns[0], t);
	assert_true(shown_down("tls://d.test:8534"));
	resolve("d.test", "127.0.0.9");
	assert_false(shown_down("tls://d.test:8534"));
}

/* A connection of a named upstream that fails while another one is ready:
 * the address works, it stays. */
static void a_failure_beside_a_ready_connection_keeps_the_address(void **state)
{
	(void)state;
	start_world("d", "failover", "2000");
	cfg.max_connections = 2;
	fake_cap = 1; /* a second job opens a second connection */
	struct tjob *t = job_new("example.com", TYPE_A);
	struct tjob *u = job_new("example.net", TYPE_A);

	resolve("d.test", "127.0.0.4 127.0.0.5");
	struct fake_conn *f = start_ready(t);
	assert_string_equal(f->ip, "127.0.0.4");
	job_start(u);
	assert_int_equal(n_conns, 2);
	connect_fails(conns[1], u);
	assert_string_equal(f->spec->ip, "127.0.0.4");
	assert_int_equal(f->close_calls, 0);
	assert_true(answer(f, t));
}

/* Two connections opening to a dead address: the first failure leaves the
 * address to the second, whose failure moves on, to the next address and
 * not past it. */
static void connections_opening_to_a_dead_address_move_on_once(void **state)
{
	(void)state;
	start_world("d", "failover", "2000");
	cfg.max_connections = 2;
	fake_cap = 1;
	struct tjob *t = job_new("example.com", TYPE_A);
	struct tjob *u = job_new("example.net", TYPE_A);

	resolve("d.test", "127.0.0.4 127.0.0.5 127.0.0.6");
	job_start(t);
	job_start(u);
	assert_int_equal(n_conns, 2);
	assert_string_equal(conns[1]->ip, "127.0.0.4");
	connect_fails(conns[0], t);
	assert_string_equal(conns[1]->spec->ip, "127.0.0.4");
	assert_int_equal(conns[1]->close_calls, 0);
	connect_fails(conns[1], u);
	assert_string_equal(conns[1]->spec->ip, "127.0.0.5");
	run_for(300);
	assert_int_equal(n_conns, 3);
	assert_string_equal(conns[2]->ip, "127.0.0.5");
}

/* Until its name resolves, the jobs go to the other upstreams. */
static void jobs_skip_a_named_upstream_without_address(void **state)
{
	(void)state;
	start_world("da", "failover", "2000");
	struct tjob *t = job_new("example.com", TYPE_A);

	job_start(t);
	assert_int_equal(n_conns, 1);
	assert_int_equal(which(holder(t)), 'a');
}

static void round_robin_rotates_through_upstreams(void **state)
{
	(void)state;
	start_world("abc", "round-robin", "2000");
	static const char expect[] = "abcabc";

	for (unsigned i = 0; i < 6; i++) {
		struct tjob *t = job_new("example.com", TYPE_A);
		job_start(t);
		assert_int_equal(which(holder(t)), expect[i]);
	}
	assert_int_equal(n_conns, 3); /* one connection per upstream */
}

static void fastest_prefers_lowest_srtt_and_samples_others_one_in_16(void **state)
{
	(void)state;
	start_world("abc", "fastest", "2000");
	struct tjob *t = job_new("example.com", TYPE_A);

	/* An upstream without a sample goes first, in order: each gets measured. */
	assert_int_equal(which(take_sample(t, 40)), 'a');
	assert_int_equal(which(take_sample(t, 0)), 'b');
	assert_int_equal(which(take_sample(t, 20)), 'c');
	job_start(t);
	assert_int_equal(which(holder(t)), 'b');
	upstream_job_cancel(&t->job);

	/* Cancelled jobs give no samples: "b" stays fastest, and every 16th
	 * choice is random among the three. */
	enum { ROUNDS = 16 * 20 };
	unsigned others = 0;
	for (unsigned i = 0; i < ROUNDS; i++) {
		job_start(t);
		others += which(holder(t)) != 'b';
		upstream_job_cancel(&t->job);
	}
	/* At least one of 20 random picks is not "b" (all are with p = 3^-20). */
	assert_in_range(others, 1, ROUNDS / 16);
}

/* -- health ------------------------------------------------------------------------ */

static void failed_connect_moves_job_to_next_upstream_and_marks_first_down(void **state)
{
	(void)state;
	start_world("ab", "failover", "2000");
	struct tjob *t = job_new("example.com", TYPE_A);

	job_start(t);
	struct fake_conn *a0 = holder(t);
	assert_int_equal(which(a0), 'a');
	connect_fails(a0, t);
	struct fake_conn *b0 = holder(t);
	assert_int_equal(which(b0), 'b');
	assert_int_equal(t->failed, 0);
	assert_int_equal(t->job.sends, 2); /* a failure uses the budget */

	/* "a" is down: the next job goes straight to "b", not trying "a". */
	struct tjob *u = job_new("example.net", TYPE_A);
	job_start(u);
	assert_ptr_equal(holder(u), b0);
	assert_int_equal(n_conns, 2);
}

static void down_upstream_probed_after_250ms_and_ready_answer_heal_it(void **state)
{
	(void)state;
	start_world("ab", "failover", "2000");
	struct tjob *t = job_new("example.com", TYPE_A);

	job_start(t);
	connect_fails(holder(t), t);
	struct fake_conn *b0 = holder(t);
	drive_ready(b0);
	assert_true(answer(b0, t));
	assert_int_equal(n_conns, 2);

	/* No job at all: the probe timer opens a connection on its own. */
	run_for(200);
	assert_int_equal(n_conns, 2);
	run_for(100);
	assert_int_equal(n_conns, 3);
	struct fake_conn *probe = conns[2];
	assert_int_equal(which(probe), 'a');
	assert_int_equal(probe->n_sent, 0);

	/* Until the probe is ready, "a" stays down. */
	job_start(t);
	assert_ptr_equal(holder(t), b0);
	assert_true(answer(b0, t));
	drive_ready(probe);
	job_start(t);
	assert_ptr_equal(holder(t), probe);
	assert_true(answer(probe, t));
	job_start(t);
	assert_ptr_equal(holder(t), probe);
}

/* Every upstream down: a job fails at once and opens nothing (on a network
 * that drops packets, a connection would only make it wait); the jobs that
 * wanted the upstream keep its background probes frequent. */
static void down_upstream_fails_jobs_at_once_and_demand_doubles_the_backoff(void **state)
{
	(void)state;
	start_world("a", "failover", "2000");
	struct tjob *t = job_new("example.com", TYPE_A);

	job_start(t);
	connect_fails(holder(t), t); /* failure 1: probe in 250 ms */
	assert_int_equal(t->failed, 1);
	assert_int_equal(t->metric, METRIC_servfail_no_upstream);
	job_start(t);
	assert_int_equal(t->failed, 1); /* at once */
	assert_int_equal(n_conns, 1);	/* no connection for it */

	run_for(300);
	assert_int_equal(n_conns, 2); /* the probe */
	struct fake_conn *probe = conns[1];
	assert_int_equal(probe->n_sent, 0);
	job_start(t); /* wanted while the probe is under way */
	assert_int_equal(t->failed, 1);
	drive_closed(probe, TRANSPORT_CLOSED_FAILED); /* failure 2 */
	run_for(400);
	assert_int_equal(n_conns, 2); /* not at 250 ms */
	run_for(200);
	assert_int_equal(n_conns, 3); /* at 500 ms */
}

/* Nothing wants a down upstream: it is probed once a minute, not more. */
static void unwanted_down_upstream_is_probed_once_a_minute(void **state)
{
	(void)state;
	start_world("a", "failover", "2000");
	struct tjob *t = job_new("example.com", TYPE_A);

	job_start(t);
	connect_fails(holder(t), t);
	run_for(300);
	assert_int_equal(n_conns, 2);
	drive_closed(conns[1], TRANSPORT_CLOSED_FAILED); /* no job wanted it meanwhile */
	run_for(1200);
	assert_int_equal(n_conns, 2); /* with demand it would have come at 500 ms */
	assert_int_equal(t->failed, 1);
}

/* The log tells an outage in three lines, whatever the failures and jobs in
 * between: down (why), still down (a line per interval, with the jobs that
 * wanted it), up again (how long). */
static void an_outage_is_logged_when_it_starts_lasts_and_ends(void **state)
{
	(void)state;
	char text[4096];
	FILE *tmp = tmpfile();
	int saved = dup(STDERR_FILENO);

	assert_non_null(tmp);
	assert_true(saved >= 0);
	fflush(stderr);
	assert_true(dup2(fileno(tmp), STDERR_FILENO) >= 0);
	enum log_level threshold = log_threshold;
	log_threshold = LOG_LEVEL_WARN;
	upstream_outage_log_ms = 1500;
	start_world("a", "failover", "2000");
	struct tjob *t = job_new("example.com", TYPE_A);

	/* Probes at 250, 750 and 1750 ms (the backoff doubles while jobs want
	 * it), each wanted by a job that fails at once; the one at 1750 ms is
	 * the first 1.5 s after "down": it tells the two jobs before it. */
	job_start(t);
	connect_fails(holder(t), t);
	for (int i = 0; i < 4; i++) {
		unsigned before = n_conns;
		while (n_conns == before)
			run_for(50);
		if (i == 3)
			break; /* the probe at 2750 ms works */
		job_start(t);
		drive_closed(conns[n_conns - 1], TRANSPORT_CLOSED_FAILED);
	}
	drive_ready(conns[n_conns - 1]);
	struct fake_conn *c = start_ready(t);
	assert_true(answer(c, t));

	fflush(stderr);
	dup2(saved, STDERR_FILENO);
	close(saved);
	log_threshold = threshold;
	upstream_outage_log_ms = 60000;
	rewind(tmp);
	size_t n = fread(text, 1, sizeof(text) - 1, tmp);
	text[n] = 0;
	fclose(tmp);
	const char *down =
	    strstr(text, "warning: upstream 127.0.0.1@8531#a.test is down: connection failed\n");
	const char *still =
	    strstr(text, "warning: upstream 127.0.0.1@8531#a.test is still down after 1 s: "
			 "connection failed; 2 queries wanted it in the last 1 s\n");
	const char *up = strstr(text, "notice: upstream 127.0.0.1@8531#a.test is up again after ");
	assert_non_null(down);
	assert_non_null(still);
	assert_non_null(up);
	assert_true(down < still && still < up);
	assert_null(strstr(strchr(still, '\n'), "still down")); /* once per interval */
	unsigned lines = 0;
	for (const char *p = text; *p; p++)
		lines += *p == '\n';
	assert_int_equal(lines, 3);
}

static void answer_resets_backoff_to_250ms(void **state)
{
	(void)state;
	start_world("a", "failover", "2000");
	struct tjob *t = job_new("example.com", TYPE_A);

	job_start(t);
	connect_fails(holder(t), t); /* failure 1 */
	run_for(300);
	struct fake_conn *probe = conns[1];
	job_start(t);				      /* wanted */
	drive_closed(probe, TRANSPORT_CLOSED_FAILED); /* failure 2: 500 ms */
	run_for(600);
	assert_int_equal(n_conns, 3);
	/* This probe works: the upstream is up, a job is answered on it, then
	 * the server closes it, idle: routine. */
	drive_ready(conns[2]);
	struct fake_conn *c = start_ready(t);
	assert_ptr_equal(c, conns[2]);
	assert_true(answer(c, t));
	server_closes(c, TRANSPORT_CLOSED_BY_SERVER);
	/* The next failure is the first again: 250 ms. */
	job_start(t);
	connect_fails(holder(t), t);
	assert_int_equal(n_conns, 4);
	run_for(200);
	assert_int_equal(n_conns, 4);
	run_for(100);
	assert_int_equal(n_conns, 5);
}

/* -- hedging ----------------------------------------------------------------------- */

static void hedge_after_400ms_without_sample_first_answer_wins(void **state)
{
	(void)state;
	start_world("ab", "failover", "2000"); /* silence after 1 s: out of the way */
	uint64_t hedged = metric(METRIC_upstream_hedged);
	struct tjob *t = job_new("example.com", TYPE_A);
	struct fake_conn *b0 = NULL;

	struct fake_conn *a0 = start_ready(t);
	run_for(350);
	assert_int_equal(holders(t, NULL), 1);
	run_for(100);
	assert_int_equal(holders(t, &b0), 2);
	assert_int_equal(which(b0), 'b');
	assert_int_equal(metric(METRIC_upstream_hedged), hedged + 1);

	uint32_t a_key = entry(a0, t)->key;
	assert_true(answer(b0, t));
	assert_int_equal(t->answered, 1);
	assert_true(by_key(a0, a_key)->cancelled);
	/* The loser's late answer finds no job. */
	struct msg m;
	answer_to(&m, t);
	assert_false(answer_key(a0, a_key, &m));
	assert_int_equal(t->answered, 1);
}

static void hedge_after_100ms_minimum_original_answer_wins(void **state)
{
	(void)state;
	start_world("ab", "failover", "2000");
	struct tjob *t = job_new("example.com", TYPE_A);
	struct fake_conn *b0 = NULL;
	struct msg m;

	/* A sample of microseconds: the hedge delay is its floor. */
	struct fake_conn *a0 = take_sample(t, 0);
	job_start(t);
	assert_ptr_equal(holder(t), a0);
	run_for(70);
	assert_int_equal(holders(t, NULL), 1);
	run_for(60);
	assert_int_equal(holders(t, &b0), 2);
	assert_int_equal(which(b0), 'b');
	uint32_t b_key = entry(b0, t)->key;

	build(&m, "example.org", TYPE_A, true); /* not the question: not an answer */
	assert_false(answer_key(b0, b_key, &m));
	assert_int_equal(t->answered, 0);
	assert_true(answer(a0, t));
	assert_int_equal(t->answered, 1);
	assert_true(by_key(b0, b_key)->cancelled);
	answer_to(&m, t);
	assert_false(answer_key(b0, b_key, &m));
	assert_int_equal(t->answered, 1);
}

/* -- the routine-close rule -------------------------------------------------------- */

static void routine_close_resends_without_budget_every_time(void **state)
{
	(void)state;
	start_world("a", "failover", "2000");
	uint64_t resent = metric(METRIC_upstream_resent);
	struct tjob *w = job_new("warm.example", TYPE_A);
	struct tjob *t = job_new("example.com", TYPE_A);

	job_start(w);
	struct fake_conn *c = holder(w);
	drive_ready(c);
	assert_true(answer(c, w));
	job_start(t);
	assert_ptr_equal(holder(t), c);
	for (unsigned round = 1; round <= 12; round++) {
		/* The server closes a connection that answered before: routine. */
		server_closes(c, TRANSPORT_CLOSED_BY_SERVER);
		struct fake_conn *next = holder(t);
		assert_ptr_not_equal(next, c);
		assert_int_equal(t->failed, 0);
		assert_int_equal(t->job.sends, 1);
		assert_int_equal(metric(METRIC_upstream_resent), resent + round);
		c = next;
		drive_ready(c);
		job_start(w);
		assert_ptr_equal(holder(w), c);
		assert_true(answer(c, w));
	}
	assert_true(answer(c, t));
	assert_int_equal(t->answered, 1);
}

static void death_without_answer_fails_job_on_only_upstream(void **state)
{
	(void)state;
	start_world("a", "failover", "2000");
	struct tjob *t = job_new("example.com", TYPE_A);

	struct fake_conn *c = start_ready(t);
	/* Ready, saw the job, died without answering anything: once may be a
	 * reset that wiped answers unread, and costs nothing... */
	server_closes(c, TRANSPORT_CLOSED_BY_SERVER);
	assert_int_equal(t->failed, 0);
	struct fake_conn *c2 = holder(t);
	assert_ptr_not_equal(c2, c);
	drive_ready(c2);
	/* ...twice, with nothing answered meanwhile, counts against it. */
	server_closes(c2, TRANSPORT_CLOSED_BY_SERVER);
	assert_int_equal(t->failed, 1);
	assert_int_equal(t->ede, WIRE_EDE_NETWORK_ERROR);
	assert_int_equal(t->metric, METRIC_servfail_no_upstream);
	assert_int_equal(n_conns, 2);
}

/* A connection that dies silent while the upstream answers on another one
 * costs the job nothing, however often: the upstream is alive. */
static void silent_death_while_the_upstream_answers_elsewhere_is_free(void **state)
{
	(void)state;
	start_world("a", "failover", "2000");
	struct tjob *t = job_new("example.com", TYPE_A);
	struct tjob *u = job_new("example.net", TYPE_A);

	for (int i = 0; i < 5; i++) {
		struct fake_conn *c = i == 0 ? start_ready(t) : holder(t);
		if (i > 0)
			drive_ready(c);
		/* Another job answered after t went out (on a connection the
		 * fake shares; what matters is the upstream's last answer). */
		job_start(u);
		assert_true(answer(holder(u), u));
		server_closes(c, TRANSPORT_CLOSED_BY_SERVER);
		assert_int_equal(t->failed, 0);
	}
}

static void job_never_returns_to_upstream_that_died_on_it(void **state)
{
	(void)state;
	start_world("ab", "failover", "2000");
	struct tjob *t = job_new("example.com", TYPE_A);

	struct fake_conn *a0 = start_ready(t);
	server_closes(a0, TRANSPORT_CLOSED_BY_SERVER); /* once: resent to "a" */
	struct fake_conn *a1 = holder(t);
	assert_int_equal(which(a1), 'a');
	drive_ready(a1);
	server_closes(a1, TRANSPORT_CLOSED_BY_SERVER); /* twice: "a" failed it */
	struct fake_conn *b0 = holder(t);
	assert_int_equal(which(b0), 'b');
	assert_int_equal(t->job.sends, 2);

	/* A free resend (never written on b0) still skips "a", first and healthy. */
	drive_ready(b0);
	drive_closed(b0, TRANSPORT_CLOSED_BY_SERVER);
	drive_orphaned(b0, t, false);
	struct fake_conn *b1 = holder(t);
	assert_int_equal(which(b1), 'b');
	assert_int_equal(t->job.sends, 2);
	/* "a" failed this job only: another goes there. */
	struct tjob *u = job_new("example.net", TYPE_A);
	job_start(u);
	assert_int_equal(which(holder(u)), 'a');

	/* "b" dies on it too: nothing is left. */
	drive_ready(b1);
	server_closes(b1, TRANSPORT_CLOSED_BY_SERVER);
	assert_int_equal(t->failed, 1);
	assert_int_equal(t->metric, METRIC_servfail_no_upstream);
	assert_int_equal(u->failed, 0);
}

static void unwritten_job_costs_nothing_when_connection_closes(void **state)
{
	(void)state;
	start_world("a", "failover", "2000");
	uint64_t resent = metric(METRIC_upstream_resent);
	struct tjob *t = job_new("example.com", TYPE_A);

	job_start(t);
	struct fake_conn *c = holder(t);
	for (unsigned round = 0; round < 10; round++) {
		/* Never answered anything, but never saw the job either. */
		drive_ready(c);
		drive_closed(c, TRANSPORT_CLOSED_BY_SERVER);
		drive_orphaned(c, t, false);
		struct fake_conn *next = holder(t);
		assert_ptr_not_equal(next, c);
		assert_int_equal(t->failed, 0);
		assert_int_equal(t->job.sends, 1);
		c = next;
	}
	assert_int_equal(metric(METRIC_upstream_resent), resent); /* nothing was resent */
}

/* -- silence ----------------------------------------------------------------------- */

static void silent_connection_closed_and_upstream_down_after_two(void **state)
{
	(void)state;
	start_world("ab", "failover", "400"); /* silence: half of it, 200 ms */
	uint64_t silent = metric(METRIC_upstream_silent);
	struct tjob *s = job_new("sample.example", TYPE_A);
	struct fake_conn *b0 = NULL;

	/* A sample, so that the hedge comes at 100 ms, before the silence. */
	struct fake_conn *a0 = take_sample(s, 0);
	struct tjob *t = job_new("example.com", TYPE_A);
	job_start(t);
	assert_ptr_equal(holder(t), a0);
	run_for(150);
	assert_int_equal(holders(t, NULL), 2); /* hedged */
	assert_int_equal(a0->close_calls, 0);
	run_for(100);
	assert_int_equal(a0->close_calls, 1);
	assert_int_equal(metric(METRIC_upstream_silent), silent + 1);
	/* The job waits on "b"; its attempt on the dead connection cost nothing. */
	assert_int_equal(holders(t, &b0), 1);
	assert_int_equal(which(b0), 'b');
	assert_int_equal(t->failed, 0);

	/* One silence does not make "a" down. */
	struct tjob *u = job_new("example.net", TYPE_A);
	job_start(u);
	struct fake_conn *a1 = holder(u);
	assert_int_equal(which(a1), 'a');
	assert_ptr_not_equal(a1, a0);
	drive_ready(a1);
	run_for(150);
	assert_int_equal(a1->close_calls, 0);
	run_for(100);
	assert_int_equal(a1->close_calls, 1);
	assert_int_equal(metric(METRIC_upstream_silent), silent + 2);

	/* Two in a row: down. */
	struct tjob *v = job_new("example.org", TYPE_A);
	job_start(v);
	assert_int_equal(which(holder(v)), 'b');
}

/* -- answers ----------------------------------------------------------------------- */

static void answer_with_wrong_key_or_question_not_taken(void **state)
{
	(void)state;
	start_world("a", "failover", "2000");
	uint64_t unmatched = metric(METRIC_upstream_unmatched);
	struct tjob *ta = job_new("example.com", TYPE_A);
	struct tjob *tb = job_new("example.net", TYPE_A);
	struct msg m;

	job_start(ta);
	job_start(tb);
	struct fake_conn *c = holder(ta);
	assert_ptr_equal(holder(tb), c);
	drive_ready(c);
	uint32_t ka = entry(c, ta)->key, kb = entry(c, tb)->key;

	answer_to(&m, ta);
	assert_false(answer_key(c, kb, &m));		  /* under tb's key */
	assert_false(drive_answer(c, ka + 7777, ta, &m)); /* a key ta does not hold */
	build(&m, "example.com", TYPE_AAAA, true);
	assert_false(answer_key(c, ka, &m)); /* other type */
	build(&m, "example.org", TYPE_A, true);
	assert_false(answer_key(c, ka, &m)); /* other name */
	assert_int_equal(metric(METRIC_upstream_unmatched), unmatched + 4);
	assert_int_equal(ta->answered + tb->answered, 0);
	assert_non_null(entry(c, ta)); /* both still waiting */
	assert_non_null(entry(c, tb));

	answer_to(&m, ta);
	assert_true(answer_key(c, ka, &m));
	assert_int_equal(ta->answered, 1);
	assert_null(entry(c, ta));
	assert_int_equal(tb->answered, 0);
	answer_to(&m, tb);
	assert_true(answer_key(c, kb, &m));
	assert_int_equal(tb->answered, 1);
}

/* -- one attempt failed, the connection stays ------------------------------------ */

/* REFUSED_STREAM: the server did not process it; sent again at once, free,
 * and the connection is not closed. */
static void refused_job_is_resent_free(void **state)
{
	(void)state;
	start_world("ab", "failover", "2000");
	struct tjob *t = job_new("example.com", TYPE_A);
	struct tjob *u = job_new("example.net", TYPE_A);

	struct fake_conn *c = start_ready(t);
	job_start(u);
	assert_ptr_equal(holder(u), c);
	drive_failed(c, t, false);
	assert_ptr_equal(holder(t), c); /* the same upstream, the same connection */
	assert_int_equal(t->job.sends, 1);
	assert_int_equal(t->job.n_tried, 0);
	assert_int_equal(t->failed, 0);
	assert_int_equal(c->close_calls, 0);
	assert_true(answer(c, t));
	assert_true(answer(c, u));
	assert_int_equal(t->answered + u->answered, 2);
}

/* An HTTP error fails that attempt only: the job goes to the next upstream
 * (a budgeted send); when none is left, SERVFAIL with an EDE.  Other jobs on
 * the connection carry on. */
static void http_error_moves_job_on_then_fails_it(void **state)
{
	(void)state;
	start_world("ab", "failover", "2000");
	struct tjob *t = job_new("example.com", TYPE_A);
	struct tjob *u = job_new("example.net", TYPE_A);

	struct fake_conn *a0 = start_ready(t);
	job_start(u);
	drive_failed(a0, t, true);
	struct fake_conn *b0 = holder(t);
	assert_int_equal(which(b0), 'b');
	assert_int_equal(t->job.sends, 2);
	assert_int_equal(t->failed, 0);
	assert_int_equal(a0->close_calls, 0);
	drive_ready(b0);
	drive_failed(b0, t, true);
	assert_int_equal(t->failed, 1);
	assert_int_equal(t->ede, WIRE_EDE_NETWORK_ERROR);
	assert_int_equal(t->metric, METRIC_servfail_no_upstream);
	assert_int_equal(holders(t, NULL), 0);
	/* "a" is still healthy: u is answered there, and new jobs go there. */
	assert_true(answer(a0, u));
	assert_int_equal(u->answered, 1);
	struct tjob *v = job_new("example.org", TYPE_A);
	job_start(v);
	assert_ptr_equal(holder(v), a0);
}

/* Five jobs in a row answered with an error (DoH: an HTTP error status):
 * the server is failing, not the questions.  Down, its connection closed;
 * an answer between errors resets the count. */
static void five_errors_in_a_row_mark_down(void **state)
{
	(void)state;
	start_world("ab", "failover", "2000");
	char name[32];
	struct fake_conn *a0 = NULL;

	for (unsigned i = 0; i < 9; i++) {
		snprintf(name, sizeof(name), "q%u.example.com", i);
		struct tjob *t = job_new(name, TYPE_A);
		if (!a0) {
			a0 = start_ready(t);
		} else {
			job_start(t);
			assert_ptr_equal(holder(t), a0);
		}
		if (i == 4) { /* four errors, then an answer */
			assert_true(answer(a0, t));
			continue;
		}
		drive_failed(a0, t, true);
		assert_int_equal(which(holder(t)), 'b');
	}
	/* Four after the answer: still in use. */
	assert_int_equal(a0->close_calls, 0);
	struct tjob *u = job_new("u.example.com", TYPE_A);
	job_start(u);
	assert_ptr_equal(holder(u), a0);
	drive_failed(a0, u, true); /* the fifth in a row */
	assert_int_equal(a0->close_calls, 1);
	struct tjob *v = job_new("v.example.com", TYPE_A);
	job_start(v);
	assert_int_equal(which(holder(v)), 'b');
}

/* A server that refuses everything: free resends, but only so many. */
static void refusals_are_free_only_so_often(void **state)
{
	(void)state;
	start_world("ab", "failover", "2000");
	struct tjob *t = job_new("example.com", TYPE_A);

	struct fake_conn *a0 = start_ready(t);
	for (unsigned i = 0; i < UPSTREAM_MAX_REFUSALS; i++) {
		drive_failed(a0, t, false);
		assert_ptr_equal(holder(t), a0);
		assert_int_equal(t->job.sends, 1);
	}
	drive_failed(a0, t, false);
	assert_int_equal(which(holder(t)), 'b');
	assert_int_equal(t->job.sends, 2);
	assert_int_equal(t->failed, 0);
}

/* A failed attempt while a hedge waits elsewhere: nothing is sent, the
 * hedge carries on; a failure is a sign of life, so the connection is not
 * silent. */
static void failed_attempt_with_hedge_waiting(void **state)
{
	(void)state;
	start_world("ab", "failover", "2000");
	struct tjob *t = job_new("example.com", TYPE_A);
	struct fake_conn *b0 = NULL;

	struct fake_conn *a0 = start_ready(t);
	run_for(450); /* hedged to "b" at 400 ms */
	assert_int_equal(holders(t, &b0), 2);
	drive_failed(a0, t, true);
	assert_int_equal(holders(t, NULL), 1);
	assert_ptr_equal(holder(t), b0);
	assert_int_equal(t->job.sends, 2);
	assert_true(a0->base.last_answer_ns > 0);
	drive_ready(b0);
	assert_true(answer(b0, t));
	assert_int_equal(t->answered, 1);
}

/* The transport found the connection silent (an unanswered PING): its jobs
 * are resent without using their budget, even on a connection that never
 * answered, and the silence counts against the upstream. */
static void transport_silence_resends_free(void **state)
{
	(void)state;
	start_world("ab", "failover", "2000");
	uint64_t silent = metric(METRIC_upstream_silent);
	struct tjob *t = job_new("example.com", TYPE_A);

	for (unsigned round = 0; round < 2; round++) {
		struct fake_conn *c = round == 0 ? start_ready(t) : holder(t);
		assert_int_equal(which(c), 'a');
		if (round)
			drive_ready(c);
		server_closes(c, TRANSPORT_CLOSED_SILENT);
		assert_int_equal(t->failed, 0);
		assert_int_equal(t->job.sends, 1);
		assert_int_equal(metric(METRIC_upstream_silent), silent + round + 1);
	}
	/* Two silences in a row: "a" is down, t went to "b" for free. */
	assert_int_equal(which(holder(t)), 'b');
	assert_int_equal(t->job.sends, 1);
	assert_int_equal(t->job.n_tried, 0);
}

/* -- full connections --------------------------------------------------------------- */

/* Connections full (a server allowing one stream each): more open up to
 * --max-connections, then jobs wait on the least busy one, if the
 * transport holds them (DoH); one that does not (DoT) gets a connection
 * more, as before. */
static void full_connections_open_more_then_queue(void **state)
{
	(void)state;
	start_world("a", "failover", "2000");
	cfg.max_connections = 2;
	fake_cap = 1;
	fake_queues = true;
	struct tjob *t[5];

	for (unsigned i = 0; i < 5; i++)
		t[i] = job_new("example.com", TYPE_A);
	job_start(t[0]);
	job_start(t[1]);
	assert_int_equal(n_conns, 2);
	assert_ptr_not_equal(holder(t[0]), holder(t[1]));
	job_start(t[2]);
	job_start(t[3]);
	assert_int_equal(n_conns, 2); /* held, two on each */
	assert_int_equal(fake_load(&conns[0]->base), 2);
	assert_int_equal(fake_load(&conns[1]->base), 2);
	for (unsigned i = 0; i < 4; i++)
		assert_int_equal(t[i]->failed, 0);

	fake_queues = false; /* DoT: refuses beyond capacity */
	job_start(t[4]);
	assert_int_equal(n_conns, 3);
	assert_ptr_equal(holder(t[4]), conns[2]);
	assert_int_equal(t[4]->failed, 0);
}

/* -- reload ------------------------------------------------------------------------ */

static void reload_resends_by_identity_not_position(void **state)
{
	(void)state;
	start_world("ab", "failover", "2000");
	struct tjob *t = job_new("example.com", TYPE_A);

	struct fake_conn *a0 = start_ready(t);
	server_closes(a0, TRANSPORT_CLOSED_BY_SERVER);
	struct fake_conn *a1 = holder(t);
	drive_ready(a1);
	server_closes(a1, TRANSPORT_CLOSED_BY_SERVER); /* "a" failed t */
	struct fake_conn *b0 = holder(t);
	assert_int_equal(which(b0), 'b');
	drive_ready(b0);

	/* The new set lists "b" first: what failed t is "a", not position 0. */
	configure(&cfg2, "ba", "failover", "2000");
	env2 = (struct transport_env){ .loop = &loop, .cfg = &cfg2, .tls = NULL };
	struct upstream_set *next =
	    upstream_set_new(&env2, cfg2.upstream, cfg2.n_upstream, fake_transport_for, &hooks);
	assert_non_null(next);
	upstream_set_retire(set, next);
	set = next;
	assert_int_equal(b0->close_calls, 1);
	struct fake_conn *b1 = holder(t);
	assert_int_equal(which(b1), 'b');
	assert_ptr_equal(b1->env, &env2);
	assert_int_equal(t->failed, 0);

	/* "b" fails it too: "a" is still out, wherever it is listed. */
	drive_ready(b1);
	server_closes(b1, TRANSPORT_CLOSED_BY_SERVER);
	assert_int_equal(t->failed, 1);
	assert_int_equal(t->metric, METRIC_servfail_no_upstream);
	for (unsigned i = 0; i < n_conns; i++)
		assert_false(conns[i]->env == &env2 && which(conns[i]) == 'a');
}

/* A reload: the new set's named upstream, given the same addresses (the
 * bootstrap lends them), goes on with the one that worked, not the first
 * one, which failed. */
static void reload_keeps_the_address_a_named_upstream_moved_to(void **state)
{
	(void)state;
	start_world("d", "failover", "2000");
	struct tjob *t = job_new("example.com", TYPE_A);

	resolve("d.test", "127.0.0.4 127.0.0.5");
	job_start(t);
	connect_fails(holder(t), t);
	run_for(300);
	assert_int_equal(n_conns, 2);
	assert_string_equal(conns[1]->ip, "127.0.0.5");
	drive_ready(conns[1]);

	configure(&cfg2, "d", "failover", "2000");
	env2 = (struct transport_env){ .loop = &loop, .cfg = &cfg2, .tls = NULL };
	struct upstream_set *old = set;
	set = upstream_set_new(&env2, cfg2.upstream, cfg2.n_upstream, fake_transport_for, &hooks);
	assert_non_null(set);
	resolve("d.test", "127.0.0.4 127.0.0.5"); /* as bootstrap_start() does */
	upstream_set_retire(old, set);
	job_start(t);
	struct fake_conn *f = holder(t);
	assert_ptr_equal(f->env, &env2);
	assert_string_equal(f->ip, "127.0.0.5");
}

#define TEST(f) cmocka_unit_test_teardown(f, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		TEST(failover_always_picks_first_healthy_upstream),
		TEST(named_upstream_is_used_once_its_address_is_known),
		TEST(named_upstream_tries_its_next_address_when_one_fails),
		TEST(named_upstream_down_by_errors_tries_its_next_address),
		TEST(new_address_of_a_down_upstream_is_shown_up),
		TEST(a_failure_beside_a_ready_connection_keeps_the_address),
		TEST(connections_opening_to_a_dead_address_move_on_once),
		TEST(jobs_skip_a_named_upstream_without_address),
		TEST(round_robin_rotates_through_upstreams),
		TEST(fastest_prefers_lowest_srtt_and_samples_others_one_in_16),
		TEST(failed_connect_moves_job_to_next_upstream_and_marks_first_down),
		TEST(down_upstream_probed_after_250ms_and_ready_answer_heal_it),
		TEST(down_upstream_fails_jobs_at_once_and_demand_doubles_the_backoff),
		TEST(unwanted_down_upstream_is_probed_once_a_minute),
		TEST(answer_resets_backoff_to_250ms),
		TEST(an_outage_is_logged_when_it_starts_lasts_and_ends),
		TEST(hedge_after_400ms_without_sample_first_answer_wins),
		TEST(hedge_after_100ms_minimum_original_answer_wins),
		TEST(routine_close_resends_without_budget_every_time),
		TEST(death_without_answer_fails_job_on_only_upstream),
		TEST(silent_death_while_the_upstream_answers_elsewhere_is_free),
		TEST(job_never_returns_to_upstream_that_died_on_it),
		TEST(unwritten_job_costs_nothing_when_connection_closes),
		TEST(silent_connection_closed_and_upstream_down_after_two),
		TEST(answer_with_wrong_key_or_question_not_taken),
		TEST(refused_job_is_resent_free),
		TEST(http_error_moves_job_on_then_fails_it),
		TEST(five_errors_in_a_row_mark_down),
		TEST(refusals_are_free_only_so_often),
		TEST(failed_attempt_with_hedge_waiting),
		TEST(transport_silence_resends_free),
		TEST(full_connections_open_more_then_queue),
		TEST(reload_resends_by_identity_not_position),
		TEST(reload_keeps_the_address_a_named_upstream_moved_to),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
