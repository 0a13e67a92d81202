/*
 * Unit tests for lib/metrics: every counter and gauge is exported (each set
 * to a value of its own, which must appear), one HELP and TYPE per family,
 * the answer-time buckets, and the per-upstream blocks: summed over
 * workers, shown while held, kept across a release and a new hold (a
 * reload), and rendered as the upstreams table.  The counters are the
 * process's, so each test puts back what it changed.
 */
#include "lib/metrics.h"

#include "lib/prom.h"

#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static char *render(enum prom_format f)
{
	struct prom_buf b = { 0 };
	struct prom_writer w;

	prom_writer_init(&w, &b, f);
	metrics_export(&w);
	assert_int_equal(w.errors, 0);
	prom_writer_end(&w);
	assert_false(b.failed);
	assert_non_null(b.data);
	return b.data;
}

static uint64_t value_of(size_t i)
{
	return 1000003u + (uint64_t)i * 7919u;
}

static void every_counter_and_gauge_is_exported(void **state)
{
	(void)state;
	char needle[64];

	for (size_t i = 0; i < METRIC_COUNT; i++)
		metrics_mine[i] = value_of(i);
	for (size_t i = 0; i < METRIC_GAUGE_COUNT; i++)
		metrics_gauges_mine[i] = value_of(METRIC_COUNT + i);
	char *text = render(PROM_EXPOSITION);
	char *lines = render(PROM_LINES);
	for (size_t i = 0; i < METRIC_COUNT + METRIC_GAUGE_COUNT; i++) {
		snprintf(needle, sizeof(needle), " %" PRIu64 "\n", value_of(i));
		if (!strstr(text, needle))
			fail_msg("metric %zu (value %" PRIu64 ") is not exported", i, value_of(i));
		snprintf(needle, sizeof(needle), "=%" PRIu64 "\n", value_of(i));
		assert_non_null(strstr(lines, needle));
	}
	/* The servfail result is the sum of the reasons. */
	uint64_t sum =
	    metrics_mine[METRIC_servfail_timeout] + metrics_mine[METRIC_servfail_no_upstream] +
	    metrics_mine[METRIC_servfail_overload] + metrics_mine[METRIC_servfail_shutdown] +
	    metrics_mine[METRIC_servfail_bad_answer];
	snprintf(needle, sizeof(needle),
		 "dotproxy_results_total{result=\"servfail\"} %" PRIu64 "\n", sum);
	assert_non_null(strstr(text, needle));
	/* The contract's names. */
	snprintf(needle, sizeof(needle), "dotproxy_cache_hits_total %" PRIu64 "\n",
		 value_of(METRIC_cache_hits));
	assert_non_null(strstr(text, needle));
	snprintf(needle, sizeof(needle), "dotproxy_queries_total{frontend=\"udp\"} %" PRIu64 "\n",
		 value_of(METRIC_queries_udp));
	assert_non_null(strstr(text, needle));
	for (size_t i = 0; i < METRIC_COUNT; i++)
		metrics_mine[i] = 0;
	for (size_t i = 0; i < METRIC_GAUGE_COUNT; i++)
		metrics_gauges_mine[i] = 0;
	free(text);
	free(lines);
}

/* Each family's TYPE line once, with its HELP line just before it. */
static void one_help_and_type_per_family(void **state)
{
	(void)state;
	char *text = render(PROM_EXPOSITION);
	char *seen[256];
	unsigned n = 0;
	const char *prev = NULL;

	for (char *line = text, *end; *line; line = end + 1) {
		end = strchr(line, '\n');
		assert_non_null(end);
		*end = '\0';
		if (strncmp(line, "# TYPE ", 7) == 0) {
			const char *name = line + 7;
			size_t len = strcspn(name, " ");
			for (unsigned i = 0; i < n; i++)
				assert_false(strlen(seen[i]) == len &&
					     memcmp(seen[i], name, len) == 0);
			assert_true(n < 256);
			seen[n++] = strndup(name, len);
			assert_non_null(prev);
			assert_int_equal(strncmp(prev, "# HELP ", 7), 0);
			assert_int_equal(strncmp(prev + 7, name, len), 0);
			assert_int_equal(prev[7 + len], ' ');
		}
		prev = line;
	}
	assert_true(n > 30);
	for (unsigned i = 0; i < n; i++)
		free(seen[i]);
	free(text);
}

static void answer_time_buckets(void **state)
{
	(void)state;
	assert_int_equal(metrics_rtt_bucket(0), 0);
	assert_int_equal(metrics_rtt_bucket(250000), 0);
	assert_int_equal(metrics_rtt_bucket(250001), 1);
	assert_int_equal(metrics_rtt_bucket(500000), 1);
	assert_int_equal(metrics_rtt_bucket(500001), 2);
	assert_int_equal(metrics_rtt_bucket(1000000), 2);
	assert_int_equal(metrics_rtt_bucket(8192000000ull), 15);
	assert_int_equal(metrics_rtt_bucket(8192000001ull), METRICS_RTT_BUCKETS);
	assert_int_equal(metrics_rtt_bucket(UINT64_MAX / 2), METRICS_RTT_BUCKETS);
	for (unsigned i = 0; i < METRICS_RTT_BUCKETS; i++) {
		uint64_t bound_ns = 250000ull << i;
		assert_int_equal(metrics_rtt_bucket(bound_ns), i);
		assert_int_equal(metrics_rtt_bucket(bound_ns + 1), i + 1);
		assert_true(metrics_rtt_bound(i) > 0.00025 * (1u << i) * 0.999999);
		assert_true(metrics_rtt_bound(i) < 0.00025 * (1u << i) * 1.000001);
	}
}

static const struct metrics_upstream_view *find(struct metrics_upstream_view *v, size_t n,
						const char *label)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(v[i].label, label) == 0)
			return &v[i];
	return NULL;
}

static void upstreams_summed_over_workers(void **state)
{
	(void)state;
	static struct metrics_upstream_view v[METRICS_MAX_UPSTREAMS];
	const char *a = "192.0.2.1@853#a.test", *a2 = "192.0.2.1@8853#a.test";
	struct metrics_upstream *m0 = metrics_upstream_hold(0, a, "dot");
	struct metrics_upstream *m1 = metrics_upstream_hold(1, a, "dot");
	struct metrics_upstream *other = metrics_upstream_hold(0, a2, "dot");

	assert_ptr_not_equal(m0, m1);
	assert_ptr_not_equal(m0, other); /* another port: another upstream */
	metrics_bump(&m0->conns);
	metrics_bump(&m0->conns);
	metrics_bump(&m1->conns);
	metrics_put(&m0->failures, 3);
	metrics_put(&m1->failures, 1);
	metrics_put(&m0->srtt_us, 1000);
	metrics_put(&m1->srtt_us, 3000);
	metrics_bump(&m1->requests[METRICS_OUTCOME_ANSWERED]);
	metrics_bump(&m0->requests[METRICS_OUTCOME_ANSWERED]);
	metrics_bump(&m0->requests[METRICS_OUTCOME_LOST]);
	size_t n = metrics_upstreams(v, METRICS_MAX_UPSTREAMS);
	const struct metrics_upstream_view *x = find(v, n, a);
	assert_non_null(x);
	assert_string_equal(x->transport, "dot");
	assert_true(x->up);
	assert_int_equal(x->conns, 3);
	assert_int_equal(x->failures, 3);
	assert_true(x->srtt_s > 0.00199 && x->srtt_s < 0.00201);
	assert_int_equal(x->sum.requests[METRICS_OUTCOME_ANSWERED], 2);
	assert_int_equal(x->sum.requests[METRICS_OUTCOME_LOST], 1);
	x = find(v, n, a2);
	assert_non_null(x);
	assert_true(x->srtt_s < 0); /* not measured */

	metrics_bump(&m1->down); /* down in one worker: down */
	n = metrics_upstreams(v, METRICS_MAX_UPSTREAMS);
	assert_false(find(v, n, a)->up);
	metrics_drop(&m1->down);
	metrics_drop(&m1->down); /* never below 0 */
	n = metrics_upstreams(v, METRICS_MAX_UPSTREAMS);
	assert_true(find(v, n, a)->up);

	/* A reload: the old sets release, the new ones hold the same label. */
	metrics_upstream_release(m0);
	n = metrics_upstreams(v, METRICS_MAX_UPSTREAMS);
	assert_non_null(find(v, n, a)); /* worker 1 still holds it */
	metrics_upstream_release(m1);
	n = metrics_upstreams(v, METRICS_MAX_UPSTREAMS);
	assert_null(find(v, n, a));
	assert_ptr_equal(metrics_upstream_hold(0, a, "dot"), m0);
	n = metrics_upstreams(v, METRICS_MAX_UPSTREAMS);
	assert_int_equal(find(v, n, a)->sum.requests[METRICS_OUTCOME_ANSWERED], 2);
	/* The same label over another transport is another upstream. */
	struct metrics_upstream *plain = metrics_upstream_hold(0, a, "plain");
	assert_ptr_not_equal(plain, m0);
	metrics_upstream_release(plain);
	metrics_upstream_release(m0);
	metrics_upstream_release(other);
}

static void upstream_histogram_and_table(void **state)
{
	(void)state;
	const char *label = "198.51.100.7@853#h.test";
	struct metrics_upstream *m = metrics_upstream_hold(0, label, "dot");
	struct metrics_upstream *m1 = metrics_upstream_hold(1, label, "dot");
	struct prom_buf b = { 0 };

	metrics_rtt_record(m, 100000);	   /* 0.1 ms: bucket 0 */
	metrics_rtt_record(m1, 300000);	   /* 0.3 ms: bucket 1 */
	metrics_rtt_record(m, 900000);	   /* 0.9 ms: bucket 2 */
	metrics_rtt_record(m, 9000000000); /* 9 s: above */
	metrics_put(&m->srtt_us, 2000);
	metrics_bump(&m->conns);
	char *text = render(PROM_EXPOSITION);
	const char *pre = "dotproxy_upstream_request_duration_seconds_bucket{upstream=\""
			  "198.51.100.7@853#h.test\",transport=\"dot\",";
	char needle[256];
	const char *want[][2] = { { "0.00025", "1" },
				  { "0.0005", "2" },
				  { "0.001", "3" },
				  { "8.192", "3" },
				  { "+Inf", "4" } };
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		snprintf(needle, sizeof(needle), "%sle=\"%s\"} %s\n", pre, want[i][0], want[i][1]);
		if (!strstr(text, needle))
			fail_msg("missing: %s", needle);
	}
	assert_non_null(strstr(text, "dotproxy_upstream_request_duration_seconds_count{upstream=\""
				     "198.51.100.7@853#h.test\",transport=\"dot\"} 4\n"));
	assert_non_null(strstr(text, "dotproxy_upstream_request_duration_seconds_sum{upstream=\""
				     "198.51.100.7@853#h.test\",transport=\"dot\"} 9.0013\n"));
	assert_non_null(strstr(text, "dotproxy_upstream_up{upstream=\"198.51.100.7@853#h.test\","
				     "transport=\"dot\"} 1\n"));
	assert_non_null(strstr(text, "dotproxy_upstream_srtt_seconds{upstream=\"198.51.100.7@853#"
				     "h.test\",transport=\"dot\"} 0.002\n"));
	free(text);

	metrics_export_upstreams(&b, false);
	assert_non_null(strstr(b.data, "198.51.100.7@853#h.test up 2.000ms 0 1 dot\n"));
	prom_buf_free(&b);
	metrics_bump(&m->down);
	metrics_put(&m->srtt_us, 0);
	metrics_export_upstreams(&b, true);
	assert_non_null(strstr(b.data,
			       "{\"upstream\":\"198.51.100.7@853#h.test\",\"state\":\"down\","
			       "\"srtt_ms\":null,\"failures\":0,\"connections\":1,"
			       "\"transport\":\"dot\",\"answered\":0}"));
	assert_int_equal(strncmp(b.data, "{\"upstreams\":[", 14), 0);
	prom_buf_free(&b);
	metrics_drop(&m->down);
	metrics_drop(&m->conns);
	metrics_upstream_release(m);
	metrics_upstream_release(m1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(every_counter_and_gauge_is_exported),
		cmocka_unit_test(one_help_and_type_per_family),
		cmocka_unit_test(answer_time_buckets),
		cmocka_unit_test(upstreams_summed_over_workers),
		cmocka_unit_test(upstream_histogram_and_table),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
