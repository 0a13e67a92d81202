/*
 * Counter names come from the same list as the enum, so they cannot drift.
 * The Prometheus names are a contract (README, "Metrics"): each counter is
 * one series of a family below, and a unit test checks that every counter
 * is exported.  Per-upstream blocks live in one static table, indexed by
 * worker and by upstream slot; a slot is taken the first time a label is
 * held and kept for the life of the process, so counters survive reloads.
 */
#include "lib/metrics.h"

#include "lib/version.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t counters[METRICS_MAX_WORKERS][METRIC_COUNT];
static uint64_t gauges[METRICS_MAX_WORKERS][METRIC_GAUGE_COUNT];
_Thread_local uint64_t *metrics_mine = counters[0];
_Thread_local uint64_t *metrics_gauges_mine = gauges[0];

static const char *const names[METRIC_COUNT] = {
#define METRIC_NAME(name) #name,
	METRICS_LIST(METRIC_NAME)
#undef METRIC_NAME
};

/* Upstream slots: label and transport written once, under the lock, before
 * n_slots (read with acquire) covers them; refs changes under the lock. */
struct slot {
	char label[METRICS_LABEL_MAX];
	char transport[16];
	unsigned refs;
};

static pthread_mutex_t slots_lock = PTHREAD_MUTEX_INITIALIZER;
static struct slot slots[METRICS_MAX_UPSTREAMS];
static unsigned n_slots;
/* The extra last block of each worker is where upstreams beyond the table
 * count, unseen. */
static struct metrics_upstream blocks[METRICS_MAX_WORKERS][METRICS_MAX_UPSTREAMS + 1];
static unsigned n_workers = 1; /* workers that may have written anything */

static void saw_worker(unsigned index)
{
	unsigned seen = __atomic_load_n(&n_workers, __ATOMIC_RELAXED);

	while (index + 1 > seen && !__atomic_compare_exchange_n(&n_workers, &seen, index + 1, false,
								__ATOMIC_RELAXED, __ATOMIC_RELAXED))
		;
}

void metrics_use_worker(unsigned index)
{
	if (index >= METRICS_MAX_WORKERS)
		index = 0;
	saw_worker(index);
	metrics_mine = counters[index];
	metrics_gauges_mine = gauges[index];
}

static unsigned workers(void)
{
	return __atomic_load_n(&n_workers, __ATOMIC_RELAXED);
}

static uint64_t total(size_t metric)
{
	uint64_t sum = 0;

	for (size_t w = 0; w < METRICS_MAX_WORKERS; w++)
		sum += __atomic_load_n(&counters[w][metric], __ATOMIC_RELAXED);
	return sum;
}

static uint64_t gauge_total(size_t gauge)
{
	uint64_t sum = 0;

	for (size_t w = 0; w < METRICS_MAX_WORKERS; w++)
		sum += __atomic_load_n(&gauges[w][gauge], __ATOMIC_RELAXED);
	return sum;
}

void metrics_render(char *buf, size_t cap)
{
	size_t used = 0;
	int n = snprintf(buf, cap, "stats:");

	if (n < 0 || (size_t)n >= cap)
		return;
	used = (size_t)n;
	for (size_t i = 0; i < METRIC_COUNT; i++) {
		n = snprintf(buf + used, cap - used, " %s=%" PRIu64, names[i], total(i));
		if (n < 0 || (size_t)n >= cap - used)
			return;
		used += (size_t)n;
	}
}

/* -- per upstream ------------------------------------------------------------------------ */

double metrics_rtt_bound(unsigned i)
{
	return 0.00025 * (double)(1u << i);
}

struct metrics_upstream *metrics_upstream_hold(unsigned worker, const char *label,
					       const char *transport)
{
	unsigned i;

	if (worker >= METRICS_MAX_WORKERS)
		worker = 0;
	saw_worker(worker);
	pthread_mutex_lock(&slots_lock);
	unsigned n = __atomic_load_n(&n_slots, __ATOMIC_RELAXED);
	for (i = 0; i < n; i++)
		if (strcmp(slots[i].label, label) == 0 &&
		    strcmp(slots[i].transport, transport) == 0)
			break;
	if (i == n && n < METRICS_MAX_UPSTREAMS) {
		snprintf(slots[i].label, sizeof(slots[i].label), "%s", label);
		snprintf(slots[i].transport, sizeof(slots[i].transport), "%s", transport);
		__atomic_store_n(&n_slots, n + 1, __ATOMIC_RELEASE);
	}
	if (i < METRICS_MAX_UPSTREAMS)
		__atomic_add_fetch(&slots[i].refs, 1, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&slots_lock);
	blocks[worker][i].slot = i;
	return &blocks[worker][i];
}

void metrics_upstream_release(struct metrics_upstream *m)
{
	unsigned i = m->slot;

	if (i >= METRICS_MAX_UPSTREAMS)
		return;
	pthread_mutex_lock(&slots_lock);
	if (slots[i].refs)
		__atomic_sub_fetch(&slots[i].refs, 1, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&slots_lock);
}

static uint64_t load(const uint64_t *c)
{
	return __atomic_load_n(c, __ATOMIC_RELAXED);
}

static void add_block(struct metrics_upstream *sum, const struct metrics_upstream *b)
{
	for (unsigned k = 0; k < METRICS_OUTCOMES; k++)
		sum->requests[k] += load(&b->requests[k]);
	for (unsigned k = 0; k < METRICS_OPEN_REASONS; k++)
		sum->opened[k] += load(&b->opened[k]);
	sum->handshakes_full += load(&b->handshakes_full);
	sum->handshakes_resumed += load(&b->handshakes_resumed);
	for (unsigned k = 0; k <= METRICS_RTT_BUCKETS; k++)
		sum->duration[k] += load(&b->duration[k]);
	sum->duration_sum_ns += load(&b->duration_sum_ns);
}

size_t metrics_upstreams(struct metrics_upstream_view *out, size_t cap)
{
	unsigned n = __atomic_load_n(&n_slots, __ATOMIC_ACQUIRE);
	unsigned nw = workers();
	size_t count = 0;

	for (unsigned i = 0; i < n; i++) {
		if (__atomic_load_n(&slots[i].refs, __ATOMIC_RELAXED) == 0)
			continue;
		if (count++ >= cap)
			continue;
		struct metrics_upstream_view *v = &out[count - 1];
		memset(v, 0, sizeof(*v));
		v->label = slots[i].label;
		v->transport = slots[i].transport;
		v->up = true;
		double srtt_sum = 0;
		unsigned srtt_n = 0;
		for (unsigned w = 0; w < nw; w++) {
			const struct metrics_upstream *b = &blocks[w][i];
			add_block(&v->sum, b);
			if (load(&b->down))
				v->up = false;
			v->conns += load(&b->conns);
			uint64_t failures = load(&b->failures);
			if (failures > v->failures)
				v->failures = failures;
			uint64_t srtt = load(&b->srtt_us);
			if (srtt) {
				srtt_sum += (double)srtt;
				srtt_n++;
			}
		}
		v->srtt_s = srtt_n ? srtt_sum / srtt_n / 1e6 : -1;
	}
	return count;
}

/* -- the Prometheus families ----------------------------------------------------------------- */

enum { SUM_OF_SERVFAILS = -1 };

/* One series of a family: a counter (or a gauge, in a gauge family) and
 * the value of the family's label (NULL for a family without one). */
struct series {
	int metric;
	const char *value;
};

struct family {
	const char *name;
	const char *label;
	const char *help;
	struct series s[9];
	enum prom_type type; /* PROM_COUNTER: metric indexes counters; PROM_GAUGE, gauges */
	unsigned n;
};

#define S(m, v)                                                                                    \
	{                                                                                          \
		METRIC_##m, v                                                                      \
	}
#define G(m)                                                                                       \
	{                                                                                          \
		METRIC_GAUGE_##m, NULL                                                             \
	}
#define FAMILY(fname, ftype, flabel, fhelp, ...)                                                   \
	{                                                                                          \
		.name = fname, .type = ftype, .label = flabel, .help = fhelp,                      \
		.s = { __VA_ARGS__ },                                                              \
		.n = sizeof((struct series[]){ __VA_ARGS__ }) / sizeof(struct series)              \
	}

static const struct family families[] = {
	FAMILY("dotproxy_queries_total", PROM_COUNTER, "frontend",
	       "Messages received from clients, by the frontend that carried them.",
	       S(queries_udp, "udp"), S(queries_tcp, "tcp"), S(queries_dot, "dot"),
	       S(queries_doh, "doh")),
	FAMILY("dotproxy_queries_in_flight", PROM_GAUGE, NULL,
	       "Client queries waiting for an upstream now.", G(queries_in_flight)),
	FAMILY("dotproxy_results_total", PROM_COUNTER, "result",
	       "How client queries ended, one result each: answered (an upstream's answer), cache, "
	       "stale (serve-stale), local, blocked, refused (--allow), formerr, notimp, servfail "
	       "(all reasons; see dotproxy_servfail_total).",
	       S(answered, "answered"), S(cache_hits, "cache"), S(cache_stale_served, "stale"),
	       S(local_answers, "local"), S(blocked, "blocked"), S(refused_clients, "refused"),
	       S(formerr, "formerr"), S(notimp, "notimp"), { SUM_OF_SERVFAILS, "servfail" }),
	FAMILY("dotproxy_servfail_total", PROM_COUNTER, "reason",
	       "SERVFAIL replies made by dotproxy, by reason.", S(servfail_timeout, "timeout"),
	       S(servfail_no_upstream, "no_upstream"), S(servfail_overload, "overload"),
	       S(servfail_shutdown, "shutdown"), S(servfail_bad_answer, "bad_answer")),
	FAMILY("dotproxy_answers_total", PROM_COUNTER, "rcode",
	       "Replies sent to clients, by rcode.", S(rcode_noerror, "NOERROR"),
	       S(rcode_formerr, "FORMERR"), S(rcode_servfail, "SERVFAIL"),
	       S(rcode_nxdomain, "NXDOMAIN"), S(rcode_notimp, "NOTIMP"),
	       S(rcode_refused, "REFUSED"), S(rcode_other, "other")),
	FAMILY("dotproxy_answers_truncated_total", PROM_COUNTER, NULL,
	       "Replies truncated (TC=1) to fit a UDP client's limit.", S(answers_truncated, NULL)),
	FAMILY("dotproxy_dropped_total", PROM_COUNTER, "reason",
	       "Client messages dropped without a reply: too short to answer, or responses (QR=1).",
	       S(dropped_malformed, "malformed"), S(dropped_responses, "response")),
	FAMILY("dotproxy_queries_collapsed_total", PROM_COUNTER, NULL,
	       "Queries that waited for an identical one already on its way upstream.",
	       S(queries_collapsed, NULL)),
	FAMILY("dotproxy_ecs_stripped_total", PROM_COUNTER, NULL,
	       "Queries whose EDNS Client Subnet option was removed before forwarding.",
	       S(ecs_stripped, NULL)),
	FAMILY("dotproxy_cache_hits_total", PROM_COUNTER, NULL,
	       "Queries answered from the cache (fresh entries).", S(cache_hits, NULL)),
	FAMILY("dotproxy_cache_misses_total", PROM_COUNTER, NULL,
	       "Cache look-ups that found nothing fresh.", S(cache_misses, NULL)),
	FAMILY("dotproxy_cache_prefetches_total", PROM_COUNTER, NULL,
	       "Popular cache entries refreshed before they expired.", S(cache_prefetches, NULL)),
	FAMILY("dotproxy_cache_entries", PROM_GAUGE, NULL, "Answers in the cache.",
	       G(cache_entries)),
	FAMILY("dotproxy_cache_bytes", PROM_GAUGE, NULL,
	       "Bytes the cache uses, counted against --cache-size.", G(cache_bytes)),
	FAMILY("dotproxy_udp_send_failures_total", PROM_COUNTER, NULL,
	       "UDP replies the kernel would not take.", S(udp_send_failed, NULL)),
	FAMILY("dotproxy_tcp_connections_total", PROM_COUNTER, "outcome",
	       "TCP client connections: accepted, or refused at once (too many, descriptors, "
	       "shutdown).",
	       S(tcp_accepted, "accepted"), S(tcp_refused, "refused")),
	FAMILY("dotproxy_tcp_idle_closed_total", PROM_COUNTER, NULL,
	       "TCP client connections closed for idleness.", S(tcp_idle_closed, NULL)),
	FAMILY(
	    "dotproxy_upstream_answers_total", PROM_COUNTER, NULL,
	    "Upstream answers accepted (one per upstream query, however many clients it served).",
	    S(answers_forwarded, NULL)),
	FAMILY("dotproxy_upstream_connects_total", PROM_COUNTER, NULL,
	       "Connections opened to upstreams (TCP; a plain-DNS exchange counts as one).",
	       S(upstream_connects, NULL)),
	FAMILY("dotproxy_upstream_connect_failures_total", PROM_COUNTER, NULL,
	       "Connections to upstreams that failed before TLS, or found no session in time.",
	       S(upstream_connect_failures, NULL)),
	FAMILY("dotproxy_upstream_handshakes_total", PROM_COUNTER, NULL,
	       "TLS handshakes with upstreams completed, resumed ones included.",
	       S(upstream_handshakes, NULL)),
	FAMILY("dotproxy_upstream_handshakes_resumed_total", PROM_COUNTER, NULL,
	       "TLS handshakes with upstreams that resumed a session.", S(upstream_resumed, NULL)),
	FAMILY("dotproxy_upstream_tls_failures_total", PROM_COUNTER, NULL,
	       "TLS handshakes or verifications (certificate, name, IP, pin) that failed.",
	       S(upstream_tls_failures, NULL)),
	FAMILY("dotproxy_upstream_unauthenticated_total", PROM_COUNTER, NULL,
	       "Connections used without authentication (opportunistic profile).",
	       S(upstream_unauthenticated, NULL)),
	FAMILY("dotproxy_upstream_closed_total", PROM_COUNTER, NULL,
	       "Established upstream connections closed by either side.", S(upstream_closed, NULL)),
	FAMILY("dotproxy_upstream_resent_total", PROM_COUNTER, NULL,
	       "Queries sent again after their connection closed.", S(upstream_resent, NULL)),
	FAMILY("dotproxy_upstream_hedged_total", PROM_COUNTER, NULL,
	       "Queries also sent to a second upstream because the first was slow.",
	       S(upstream_hedged, NULL)),
	FAMILY("dotproxy_upstream_silent_total", PROM_COUNTER, NULL,
	       "Upstream connections torn down for silence, and upstreams marked down for losing "
	       "races while silent.",
	       S(upstream_silent, NULL)),
	FAMILY("dotproxy_upstream_bad_answers_total", PROM_COUNTER, NULL,
	       "Upstream messages that did not parse or were not responses: dropped.",
	       S(upstream_bad_answers, NULL)),
	FAMILY("dotproxy_upstream_unmatched_total", PROM_COUNTER, NULL,
	       "Upstream answers matching no query in flight (ID or question): dropped.",
	       S(upstream_unmatched, NULL)),
	FAMILY("dotproxy_dot_connections_total", PROM_COUNTER, "outcome",
	       "TLS client connections (--listen-tls): accepted, and of those closed before a "
	       "session (handshake failed or too slow).",
	       S(dot_accepted, "accepted"), S(dot_handshake_failures, "handshake_failed")),
	FAMILY("dotproxy_dot_handshakes_total", PROM_COUNTER, NULL,
	       "TLS handshakes with DoT clients completed, resumed ones included.",
	       S(dot_handshakes, NULL)),
	FAMILY("dotproxy_dot_handshakes_resumed_total", PROM_COUNTER, NULL,
	       "TLS handshakes with DoT clients that resumed a session.", S(dot_resumed, NULL)),
	FAMILY("dotproxy_queries_cancelled_total", PROM_COUNTER, NULL,
	       "Client queries whose client went away first (a DoH stream reset).",
	       S(queries_cancelled, NULL)),
	FAMILY("dotproxy_tls_address_refused_total", PROM_COUNTER, NULL,
	       "TLS clients (DoT, DoH) closed at once: --max-clients-per-address.",
	       S(tls_address_refused, NULL)),
	FAMILY("dotproxy_doh_connections_total", PROM_COUNTER, "outcome",
	       "HTTPS client connections (--listen-https): accepted, and of those closed before "
	       "a session, cut off for a broken protocol or a flood, closed for idleness.",
	       S(doh_accepted, "accepted"), S(doh_handshake_failures, "handshake_failed"),
	       S(doh_protocol_errors, "protocol_error"), S(doh_idle_closed, "idle")),
	FAMILY("dotproxy_doh_handshakes_total", PROM_COUNTER, NULL,
	       "TLS handshakes with DoH clients completed, resumed ones included.",
	       S(doh_handshakes, NULL)),
	FAMILY("dotproxy_doh_handshakes_resumed_total", PROM_COUNTER, NULL,
	       "TLS handshakes with DoH clients that resumed a session.", S(doh_resumed, NULL)),
	FAMILY("dotproxy_doh_http_errors_total", PROM_COUNTER, NULL,
	       "DoH requests answered with an HTTP error status (4xx, 5xx).",
	       S(doh_http_errors, NULL)),
	FAMILY("dotproxy_upstream_doh_failures_total", PROM_COUNTER, "reason",
	       "DoH attempts that got no answer: an HTTP status other than 200, another content "
	       "type, a body too large, refused unprocessed (sent again), reset by the server.",
	       S(upstream_doh_status, "status"), S(upstream_doh_content_type, "content_type"),
	       S(upstream_doh_too_large, "too_large"), S(upstream_doh_refused, "refused"),
	       S(upstream_doh_reset, "reset")),
	FAMILY("dotproxy_upstream_doh_goaways_total", PROM_COUNTER, NULL,
	       "GOAWAY frames received from DoH upstreams.", S(upstream_doh_goaway, NULL)),
	FAMILY("dotproxy_upstream_doh_pings_total", PROM_COUNTER, NULL,
	       "HTTP/2 PINGs sent to DoH upstreams silent for a second.",
	       S(upstream_doh_pings, NULL)),
	FAMILY("dotproxy_dnstap_sent_total", PROM_COUNTER, NULL,
	       "dnstap messages written to the receiver (--dnstap).", S(dnstap_sent, NULL)),
	FAMILY("dotproxy_dnstap_dropped_total", PROM_COUNTER, NULL,
	       "dnstap messages not queued: no receiver, or it is too slow.",
	       S(dnstap_dropped, NULL)),
	FAMILY("dotproxy_dnstap_lost_total", PROM_COUNTER, NULL,
	       "dnstap messages queued, then not written: the receiver went away.",
	       S(dnstap_lost, NULL)),
};

static const int servfails[] = {
	METRIC_servfail_timeout,  METRIC_servfail_no_upstream, METRIC_servfail_overload,
	METRIC_servfail_shutdown, METRIC_servfail_bad_answer,
};

static uint64_t series_value(const struct family *f, const struct series *s)
{
	if (f->type == PROM_GAUGE)
		return gauge_total((size_t)s->metric);
	if (s->metric != SUM_OF_SERVFAILS)
		return total((size_t)s->metric);
	uint64_t sum = 0;
	for (size_t i = 0; i < sizeof(servfails) / sizeof(servfails[0]); i++)
		sum += total((size_t)servfails[i]);
	return sum;
}

static void export_process(struct prom_writer *w)
{
	prom_family(w, "dotproxy_build_info", PROM_GAUGE,
		    "Always 1; the version dotproxy was built as.");
	prom_sample_u64(w, &(struct prom_label){ "version", DOTPROXY_VERSION }, 1, 1);
	for (size_t i = 0; i < sizeof(families) / sizeof(families[0]); i++) {
		const struct family *f = &families[i];
		prom_family(w, f->name, f->type, f->help);
		for (unsigned j = 0; j < f->n; j++) {
			struct prom_label label = { f->label, f->s[j].value };
			prom_sample_u64(w, &label, f->label ? 1 : 0, series_value(f, &f->s[j]));
		}
	}
}

static const char *const outcome_names[METRICS_OUTCOMES] = { "answered", "lost", "cancelled",
							     "failed", "closed" };
static const char *const reason_names[METRICS_OPEN_REASONS] = { "demand", "busy", "probe" };

/* The labels every upstream series has, with room for one more. */
static void upstream_labels(struct prom_label l[3], const struct metrics_upstream_view *v,
			    const char *name, const char *value)
{
	l[0] = (struct prom_label){ "upstream", v->label };
	l[1] = (struct prom_label){ "transport", v->transport };
	l[2] = (struct prom_label){ name, value };
}

static void export_upstreams(struct prom_writer *w, const struct metrics_upstream_view *v, size_t n)
{
	double bounds[METRICS_RTT_BUCKETS];
	struct prom_label l[3];

	for (unsigned i = 0; i < METRICS_RTT_BUCKETS; i++)
		bounds[i] = metrics_rtt_bound(i);
	prom_family(w, "dotproxy_upstream_up", PROM_GAUGE,
		    "1 while the upstream is usable, 0 while it is down (in any worker).");
	for (size_t i = 0; i < n; i++) {
		upstream_labels(l, &v[i], NULL, NULL);
		prom_sample_u64(w, l, 2, v[i].up);
	}
	prom_family(w, "dotproxy_upstream_request_duration_seconds", PROM_HISTOGRAM,
		    "Time from sending a query to an upstream to taking its answer (connection "
		    "set-up included when the query waited for it).");
	for (size_t i = 0; i < n; i++) {
		upstream_labels(l, &v[i], NULL, NULL);
		prom_histogram(w, l, 2, bounds, v[i].sum.duration, METRICS_RTT_BUCKETS,
			       (double)v[i].sum.duration_sum_ns / 1e9);
	}
	prom_family(w, "dotproxy_upstream_requests_total", PROM_COUNTER,
		    "Queries sent to an upstream, by how each ended: answered, lost (another "
		    "upstream answered first), cancelled (deadline, shutdown), failed (counted "
		    "against the query), closed (its connection closed under it; resent).");
	for (size_t i = 0; i < n; i++) {
		for (unsigned k = 0; k < METRICS_OUTCOMES; k++) {
			upstream_labels(l, &v[i], "outcome", outcome_names[k]);
			prom_sample_u64(w, l, 3, v[i].sum.requests[k]);
		}
	}
	prom_family(w, "dotproxy_upstream_connections_opened_total", PROM_COUNTER,
		    "Connections opened to an upstream, by reason: demand (no connection took the "
		    "query), busy (all had 32 in flight), probe (health check while down).");
	for (size_t i = 0; i < n; i++) {
		for (unsigned k = 0; k < METRICS_OPEN_REASONS; k++) {
			upstream_labels(l, &v[i], "reason", reason_names[k]);
			prom_sample_u64(w, l, 3, v[i].sum.opened[k]);
		}
	}
	prom_family(w, "dotproxy_upstream_tls_handshakes_total", PROM_COUNTER,
		    "TLS handshakes completed with an upstream: full, or resumed from a session "
		    "(upstreams over TLS only).");
	for (size_t i = 0; i < n; i++) {
		if (strcmp(v[i].transport, "plain") == 0)
			continue;
		upstream_labels(l, &v[i], "kind", "full");
		prom_sample_u64(w, l, 3, v[i].sum.handshakes_full);
		upstream_labels(l, &v[i], "kind", "resumed");
		prom_sample_u64(w, l, 3, v[i].sum.handshakes_resumed);
	}
	prom_family(w, "dotproxy_upstream_connections", PROM_GAUGE,
		    "Connections open to an upstream now.");
	for (size_t i = 0; i < n; i++) {
		upstream_labels(l, &v[i], NULL, NULL);
		prom_sample_u64(w, l, 2, v[i].conns);
	}
	prom_family(w, "dotproxy_upstream_failures", PROM_GAUGE,
		    "Consecutive failures of an upstream (connections, silences); 0 once it "
		    "answers.");
	for (size_t i = 0; i < n; i++) {
		upstream_labels(l, &v[i], NULL, NULL);
		prom_sample_u64(w, l, 2, v[i].failures);
	}
	prom_family(w, "dotproxy_upstream_srtt_seconds", PROM_GAUGE,
		    "Smoothed answer time of an upstream (RFC 6298 gains); absent until measured.");
	for (size_t i = 0; i < n; i++) {
		upstream_labels(l, &v[i], NULL, NULL);
		if (v[i].srtt_s >= 0)
			prom_sample(w, l, 2, v[i].srtt_s);
	}
}

static struct metrics_upstream_view *views(size_t *n)
{
	struct metrics_upstream_view *v = calloc(METRICS_MAX_UPSTREAMS, sizeof(*v));

	*n = v ? metrics_upstreams(v, METRICS_MAX_UPSTREAMS) : 0;
	if (*n > METRICS_MAX_UPSTREAMS)
		*n = METRICS_MAX_UPSTREAMS;
	return v;
}

void metrics_export(struct prom_writer *w)
{
	size_t n;
	struct metrics_upstream_view *v = views(&n);

	export_process(w);
	if (!v) {
		w->out->failed = true;
		return;
	}
	export_upstreams(w, v, n);
	free(v);
}

void metrics_export_upstreams(struct prom_buf *out, bool json)
{
	size_t n;
	struct metrics_upstream_view *v = views(&n);

	if (!v) {
		out->failed = true;
		return;
	}
	if (json)
		prom_buf_append(out, "{\"upstreams\":[", 14);
	for (size_t i = 0; i < n; i++) {
		if (!json) {
			prom_buf_printf(out, "%s %s ", v[i].label, v[i].up ? "up" : "down");
			if (v[i].srtt_s >= 0)
				prom_buf_printf(out, "%.3fms", v[i].srtt_s * 1e3);
			else
				prom_buf_append(out, "-", 1);
			prom_buf_printf(out, " %" PRIu64 " %" PRIu64 " %s\n", v[i].failures,
					v[i].conns, v[i].transport);
			continue;
		}
		prom_buf_append(out, i ? ",{\"upstream\":" : "{\"upstream\":", i ? 13 : 12);
		prom_json_string(out, v[i].label);
		prom_buf_printf(out, ",\"state\":\"%s\",\"srtt_ms\":", v[i].up ? "up" : "down");
		if (v[i].srtt_s >= 0)
			prom_buf_printf(out, "%.3f", v[i].srtt_s * 1e3);
		else
			prom_buf_append(out, "null", 4);
		prom_buf_printf(
		    out, ",\"failures\":%" PRIu64 ",\"connections\":%" PRIu64 ",\"transport\":",
		    v[i].failures, v[i].conns);
		prom_json_string(out, v[i].transport);
		prom_buf_printf(out, ",\"answered\":%" PRIu64 "}",
				v[i].sum.requests[METRICS_OUTCOME_ANSWERED]);
	}
	if (json)
		prom_buf_append(out, "]}\n", 3);
	free(v);
}
