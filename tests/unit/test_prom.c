/*
 * Unit tests for lib/prom: the exposition format byte for byte (HELP and
 * TYPE once per family and only before a sample, label and HELP escaping,
 * histograms cumulative with +Inf, _sum and _count), the refusals that keep
 * the output valid (bad names, a family twice, samples of the wrong kind),
 * the name=value lines and the JSON form, and the buffer.
 */
#include "lib/prom.h"

#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

struct out {
	struct prom_buf buf;
	struct prom_writer w;
};

static void start(struct out *o, enum prom_format f)
{
	memset(&o->buf, 0, sizeof(o->buf));
	prom_writer_init(&o->w, &o->buf, f);
}

/* End the writer and check the text, then free it. */
static void expect(struct out *o, const char *text)
{
	prom_writer_end(&o->w);
	assert_false(o->buf.failed);
	assert_string_equal(o->buf.data ? o->buf.data : "", text);
	prom_buf_free(&o->buf);
}

static void counter_and_gauge(void **state)
{
	(void)state;
	struct out o;
	struct prom_label l = { "frontend", "udp" };

	start(&o, PROM_EXPOSITION);
	assert_int_equal(prom_family(&o.w, "x_queries_total", PROM_COUNTER, "Queries."), 0);
	prom_sample_u64(&o.w, &l, 1, 12);
	l.value = "tcp";
	prom_sample_u64(&o.w, &l, 1, 18446744073709551615ull);
	assert_int_equal(prom_family(&o.w, "x_in_flight", PROM_GAUGE, "Now."), 0);
	prom_sample_u64(&o.w, NULL, 0, 3);
	assert_int_equal(prom_family(&o.w, "x_seconds", PROM_GAUGE, "Float."), 0);
	prom_sample(&o.w, NULL, 0, 0.000412);
	assert_int_equal(o.w.errors, 0);
	expect(&o, "# HELP x_queries_total Queries.\n"
		   "# TYPE x_queries_total counter\n"
		   "x_queries_total{frontend=\"udp\"} 12\n"
		   "x_queries_total{frontend=\"tcp\"} 18446744073709551615\n"
		   "# HELP x_in_flight Now.\n"
		   "# TYPE x_in_flight gauge\n"
		   "x_in_flight 3\n"
		   "# HELP x_seconds Float.\n"
		   "# TYPE x_seconds gauge\n"
		   "x_seconds 0.000412\n");
}

static void family_without_samples_leaves_nothing(void **state)
{
	(void)state;
	struct out o;

	start(&o, PROM_EXPOSITION);
	assert_int_equal(prom_family(&o.w, "a_total", PROM_COUNTER, "A."), 0);
	assert_int_equal(prom_family(&o.w, "b_total", PROM_COUNTER, "B."), 0);
	prom_sample_u64(&o.w, NULL, 0, 1);
	expect(&o, "# HELP b_total B.\n# TYPE b_total counter\nb_total 1\n");
}

static void escaping(void **state)
{
	(void)state;
	struct out o;
	struct prom_label l[2] = { { "a", "back\\slash \"quoted\"\nline" }, { "b", "" } };

	start(&o, PROM_EXPOSITION);
	assert_int_equal(prom_family(&o.w, "e", PROM_GAUGE, "Help with \\ and\nnewline \"q\"."), 0);
	prom_sample_u64(&o.w, l, 2, 1);
	expect(&o, "# HELP e Help with \\\\ and\\nnewline \"q\".\n"
		   "# TYPE e gauge\n"
		   "e{a=\"back\\\\slash \\\"quoted\\\"\\nline\",b=\"\"} 1\n");
}

static void special_values(void **state)
{
	(void)state;
	struct out o;

	start(&o, PROM_EXPOSITION);
	prom_family(&o.w, "v", PROM_GAUGE, "V.");
	prom_sample(&o.w, NULL, 0, NAN);
	prom_sample(&o.w, NULL, 0, INFINITY);
	prom_sample(&o.w, NULL, 0, -INFINITY);
	prom_sample(&o.w, NULL, 0, 1e21);
	prom_sample(&o.w, NULL, 0, 0.1);
	prom_sample(&o.w, NULL, 0, 2592000.123456789); /* a month of answer times */
	prom_sample(&o.w, NULL, 0, 1.0 / 3);
	expect(&o, "# HELP v V.\n# TYPE v gauge\nv NaN\nv +Inf\nv -Inf\nv 1e+21\nv 0.1\n"
		   "v 2592000.123456789\nv 0.3333333333333333\n");
}

static void histogram_is_cumulative(void **state)
{
	(void)state;
	struct out o;
	const double bounds[3] = { 0.00025, 0.0005, 0.001 };
	const uint64_t counts[4] = { 1, 2, 0, 3 };
	struct prom_label l = { "upstream", "127.0.0.1@853#dns.test" };

	start(&o, PROM_EXPOSITION);
	prom_family(&o.w, "d_seconds", PROM_HISTOGRAM, "Durations.");
	prom_histogram(&o.w, &l, 1, bounds, counts, 3, 12.5);
	assert_int_equal(o.w.errors, 0);
	expect(&o, "# HELP d_seconds Durations.\n"
		   "# TYPE d_seconds histogram\n"
		   "d_seconds_bucket{upstream=\"127.0.0.1@853#dns.test\",le=\"0.00025\"} 1\n"
		   "d_seconds_bucket{upstream=\"127.0.0.1@853#dns.test\",le=\"0.0005\"} 3\n"
		   "d_seconds_bucket{upstream=\"127.0.0.1@853#dns.test\",le=\"0.001\"} 3\n"
		   "d_seconds_bucket{upstream=\"127.0.0.1@853#dns.test\",le=\"+Inf\"} 6\n"
		   "d_seconds_sum{upstream=\"127.0.0.1@853#dns.test\"} 12.5\n"
		   "d_seconds_count{upstream=\"127.0.0.1@853#dns.test\"} 6\n");
}

static void refusals_keep_the_output_valid(void **state)
{
	(void)state;
	struct out o;
	struct prom_label le = { "le", "1" }, bad = { "__reserved", "x" },
			  dup[2] = { { "a", "1" }, { "a", "2" } };
	const double bounds[1] = { 1 };
	const uint64_t counts[2] = { 1, 1 };

	start(&o, PROM_EXPOSITION);
	prom_sample_u64(&o.w, NULL, 0, 1); /* no family yet */
	assert_int_equal(prom_family(&o.w, "9starts_with_digit", PROM_GAUGE, "X."), -EINVAL);
	prom_sample_u64(&o.w, NULL, 0, 1); /* dropped with its family */
	assert_int_equal(prom_family(&o.w, "has-dash", PROM_GAUGE, "X."), -EINVAL);
	assert_int_equal(prom_family(&o.w, "", PROM_GAUGE, "X."), -EINVAL);
	assert_int_equal(prom_family(&o.w, "ok:name_1", PROM_GAUGE, "X."), 0);
	prom_sample_u64(&o.w, &bad, 1, 1);
	prom_sample_u64(&o.w, dup, 2, 1);
	prom_histogram(&o.w, NULL, 0, bounds, counts, 1, 1); /* not a histogram family */
	prom_sample_u64(&o.w, NULL, 0, 7);
	assert_int_equal(prom_family(&o.w, "ok:name_1", PROM_GAUGE, "Again."), -EINVAL);
	prom_sample_u64(&o.w, NULL, 0, 8);
	assert_int_equal(prom_family(&o.w, "h", PROM_HISTOGRAM, "H."), 0);
	prom_sample_u64(&o.w, NULL, 0, 1);		    /* a histogram takes no plain sample */
	prom_histogram(&o.w, &le, 1, bounds, counts, 1, 1); /* le is the writer's */
	assert_int_equal(o.w.errors, 12);
	expect(&o, "# HELP ok:name_1 X.\n# TYPE ok:name_1 gauge\nok:name_1 7\n");
}

static void too_many_families(void **state)
{
	(void)state;
	struct out o;
	char name[32];

	start(&o, PROM_LINES);
	for (unsigned i = 0; i < PROM_MAX_FAMILIES; i++) {
		snprintf(name, sizeof(name), "f%u", i);
		assert_int_equal(prom_family(&o.w, name, PROM_GAUGE, ""), 0);
	}
	assert_int_equal(prom_family(&o.w, "one_more", PROM_GAUGE, ""), -EINVAL);
	prom_writer_end(&o.w);
	prom_buf_free(&o.buf);
}

static void lines_format(void **state)
{
	(void)state;
	struct out o;
	struct prom_label l = { "rcode", "NOERROR" };
	const double bounds[1] = { 0.5 };
	const uint64_t counts[2] = { 2, 1 };

	start(&o, PROM_LINES);
	prom_family(&o.w, "a_total", PROM_COUNTER, "A.");
	prom_sample_u64(&o.w, &l, 1, 5);
	prom_family(&o.w, "b", PROM_GAUGE, "B.");
	prom_sample_u64(&o.w, NULL, 0, 0);
	prom_family(&o.w, "h", PROM_HISTOGRAM, "H.");
	prom_histogram(&o.w, NULL, 0, bounds, counts, 1, 0.75);
	expect(&o, "a_total{rcode=\"NOERROR\"}=5\n"
		   "b=0\n"
		   "h_bucket{le=\"0.5\"}=2\n"
		   "h_bucket{le=\"+Inf\"}=3\n"
		   "h_sum=0.75\n"
		   "h_count=3\n");
}

static void json_format(void **state)
{
	(void)state;
	struct out o;
	struct prom_label l = { "upstream", "a\"b\\c\x01\xc3\xa9" };
	const double bounds[1] = { 0.5 };
	const uint64_t counts[2] = { 2, 1 };

	start(&o, PROM_JSON);
	expect(&o, "{\"metrics\":[]}\n");
	start(&o, PROM_JSON);
	prom_family(&o.w, "a_total", PROM_COUNTER, "A.");
	prom_sample_u64(&o.w, &l, 1, 5);
	prom_family(&o.w, "g", PROM_GAUGE, "G.");
	prom_sample(&o.w, NULL, 0, NAN);
	prom_family(&o.w, "h", PROM_HISTOGRAM, "H.");
	prom_histogram(&o.w, NULL, 0, bounds, counts, 1, 0.75);
	expect(&o, "{\"metrics\":["
		   "{\"name\":\"a_total\",\"type\":\"counter\",\"labels\":{\"upstream\":"
		   "\"a\\\"b\\\\c\\u0001\\u00c3\\u00a9\"},\"value\":5},"
		   "{\"name\":\"g\",\"type\":\"gauge\",\"labels\":{},\"value\":null},"
		   "{\"name\":\"h_bucket\",\"type\":\"histogram\",\"labels\":{\"le\":\"0.5\"},"
		   "\"value\":2},"
		   "{\"name\":\"h_bucket\",\"type\":\"histogram\",\"labels\":{\"le\":\"+Inf\"},"
		   "\"value\":3},"
		   "{\"name\":\"h_sum\",\"type\":\"histogram\",\"labels\":{},\"value\":0.75},"
		   "{\"name\":\"h_count\",\"type\":\"histogram\",\"labels\":{},\"value\":3}"
		   "]}\n");
}

static void names(void **state)
{
	(void)state;
	assert_true(prom_valid_metric_name("a"));
	assert_true(prom_valid_metric_name("_a:b_1"));
	assert_true(prom_valid_metric_name(":a"));
	assert_false(prom_valid_metric_name("1a"));
	assert_false(prom_valid_metric_name("a b"));
	assert_false(prom_valid_metric_name(NULL));
	assert_true(prom_valid_label_name("le"));
	assert_true(prom_valid_label_name("_x"));
	assert_false(prom_valid_label_name("__x"));
	assert_false(prom_valid_label_name("a:b"));
	assert_false(prom_valid_label_name("0"));
}

static void buffer_grows(void **state)
{
	(void)state;
	struct prom_buf b = { 0 };
	char line[300];

	memset(line, 'x', sizeof(line) - 1);
	line[sizeof(line) - 1] = '\0';
	for (unsigned i = 0; i < 1000; i++)
		prom_buf_printf(&b, "%u %s\n", i, line); /* longer than printf's small buffer */
	assert_false(b.failed);
	assert_int_equal(strlen(b.data), b.len);
	assert_true(b.len > 300000);
	assert_memory_equal(b.data, "0 xxx", 5);
	prom_buf_free(&b);
	assert_null(b.data);
	assert_int_equal(b.len, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(counter_and_gauge),
		cmocka_unit_test(family_without_samples_leaves_nothing),
		cmocka_unit_test(escaping),
		cmocka_unit_test(special_values),
		cmocka_unit_test(histogram_is_cumulative),
		cmocka_unit_test(refusals_keep_the_output_valid),
		cmocka_unit_test(too_many_families),
		cmocka_unit_test(lines_format),
		cmocka_unit_test(json_format),
		cmocka_unit_test(names),
		cmocka_unit_test(buffer_grows),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
