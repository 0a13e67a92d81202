/*
 * Unit tests for lib/http1: a table of requests and the status each gets;
 * every prefix of a request is either "read more" or already the final
 * verdict (the daemon asks after each read); the size bound; the response
 * head.
 */
#include "lib/http1.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static const struct {
	const char *req;
	int status;
} cases[] = {
	{ "GET /metrics HTTP/1.1\r\nHost: localhost:9153\r\n\r\n", 200 },
	{ "GET /metrics HTTP/1.0\r\n\r\n", 200 },
	{ "GET /metrics HTTP/1.1\nHost: x\n\n", 200 },		      /* bare LF */
	{ "\r\nGET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 200 },      /* an empty line first */
	{ "GET /metrics?name[]=x HTTP/1.1\r\nHost: x\r\n\r\n", 200 }, /* query ignored */
	{ "GET /metrics HTTP/1.1\r\nhOsT: x\r\nAccept: text/plain;version=0.0.4;q=0.3,*/*\r\n"
	  "User-Agent: Prometheus/2.45.0\r\nX-Prometheus-Scrape-Timeout-Seconds: 10\r\n\r\n",
	  200 },
	{ "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Empty:\r\nX-Tab: a\tb\r\n\r\n", 200 },
	{ "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 404 },
	{ "GET /metricsx HTTP/1.1\r\nHost: x\r\n\r\n", 404 },
	{ "GET /metrics/ HTTP/1.1\r\nHost: x\r\n\r\n", 404 },
	{ "GET http://x/metrics HTTP/1.1\r\nHost: x\r\n\r\n", 404 },
	{ "GET * HTTP/1.1\r\nHost: x\r\n\r\n", 404 },
	{ "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405 },
	{ "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 405 },
	{ "get /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 405 }, /* methods are case-sensitive */
	{ "GET /metrics HTTP/1.1\r\n\r\n", 400 },	     /* no Host */
	{ "GET /metrics HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400 },
	{ "GET /metrics HTTP/2.0\r\nHost: x\r\n\r\n", 505 },
	{ "GET /metrics HTTP/0.9\r\n\r\n", 505 },
	{ "GET /metrics HTTP/1.x\r\n\r\n", 400 },
	{ "GET /metrics\r\n\r\n", 400 },
	{ "GET  /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 400 },
	{ "GET /metrics HTTP/1.1 \r\nHost: x\r\n\r\n", 400 },
	{ "GET /met rics HTTP/1.1\r\nHost: x\r\n\r\n", 400 },
	{ "G(T /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 400 },
	{ "GET /metrics HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400 },
	{ "GET /metrics HTTP/1.1\r\nHost : x\r\n\r\n", 400 },
	{ "GET /metrics HTTP/1.1\r\nNoColon\r\n\r\n", 400 },
	{ "GET /metrics HTTP/1.1\r\nHost: x\r\nA: b\x01\r\n\r\n", 400 },
	{ "GET /metrics HTTP/1.1\rHost: x\r\n\r\n", 400 },	 /* a bare CR */
	{ "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400 }, /* a TLS ClientHello */
	{ "\r\n\r\n\r\n\r\n\r\n\r\n", 400 },			 /* blank lines only */
};

static void table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int got = http1_check_request(cases[i].req, strlen(cases[i].req), "/metrics");
		if (got != cases[i].status)
			fail_msg("case %zu: %d, expected %d: %s", i, got, cases[i].status,
				 cases[i].req);
	}
}

/* Each prefix says "more" or the final status, never another one. */
static void prefixes_agree(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t len = strlen(cases[i].req);
		for (size_t n = 0; n <= len; n++) {
			int got = http1_check_request(cases[i].req, n, "/metrics");
			if (got != HTTP1_INCOMPLETE && got != cases[i].status)
				fail_msg("case %zu, %zu bytes: %d, expected 0 or %d", i, n, got,
					 cases[i].status);
		}
	}
	const char *head = "GET /metrics HTTP/1.1\r\nHost: x\r\n";
	assert_int_equal(http1_check_request(head, strlen(head), "/metrics"), HTTP1_INCOMPLETE);
	/* A control byte in the line being read is refused before its end. */
	assert_int_equal(http1_check_request("GET /\x01", 6, "/metrics"), 400);
}

static void size_bound(void **state)
{
	(void)state;
	size_t cap = HTTP1_MAX_REQUEST + 100, len = 0;
	char *big = malloc(cap);

	assert_non_null(big);
	len += (size_t)snprintf(big, cap, "GET /metrics HTTP/1.1\r\nHost: x\r\n");
	while (len < HTTP1_MAX_REQUEST + 50)
		len += (size_t)snprintf(big + len, cap - len, "X-A: %s\r\n",
					"aaaaaaaaaaaaaaaaaaaaaaa");
	assert_int_equal(http1_check_request(big, HTTP1_MAX_REQUEST - 1, "/metrics"),
			 HTTP1_INCOMPLETE);
	assert_int_equal(http1_check_request(big, HTTP1_MAX_REQUEST, "/metrics"), 413);
	assert_int_equal(http1_check_request(big, len, "/metrics"), 413);
	/* One endless line too. */
	memset(big, 'a', HTTP1_MAX_REQUEST + 10);
	assert_int_equal(http1_check_request(big, HTTP1_MAX_REQUEST + 10, "/metrics"), 413);
	free(big);
}

static void response_head(void **state)
{
	(void)state;
	char head[512];
	size_t n = http1_response_head(200, "text/plain; version=0.0.4", 1234, head, sizeof(head));

	assert_int_equal(n, strlen(head));
	assert_string_equal(head, "HTTP/1.1 200 OK\r\n"
				  "Content-Type: text/plain; version=0.0.4\r\n"
				  "Content-Length: 1234\r\n"
				  "Cache-Control: no-store\r\n"
				  "Connection: close\r\n\r\n");
	n = http1_response_head(405, "text/plain", 0, head, sizeof(head));
	assert_true(n > 0);
	assert_non_null(strstr(head, "HTTP/1.1 405 Method Not Allowed\r\n"));
	assert_non_null(strstr(head, "\r\nAllow: GET\r\n"));
	assert_int_equal(http1_response_head(200, "text/plain", 1, head, 20), 0);
	assert_string_equal(http1_reason(413), "Content Too Large");
	assert_string_equal(http1_reason(404), "Not Found");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(table),
		cmocka_unit_test(prefixes_agree),
		cmocka_unit_test(size_bound),
		cmocka_unit_test(response_head),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
