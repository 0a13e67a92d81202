/*
 * Fuzz target for lib/http1, the metrics endpoint's request check.  The
 * input is what a client sent.  The verdict must be one of the documented
 * statuses; a verdict given for a prefix must be the verdict for the whole
 * input (the daemon asks after each read and answers at the first
 * verdict); a head of HTTP1_MAX_REQUEST bytes always gets one; and 200 only
 * for a request that starts with "GET /metrics" (after optional empty
 * lines) and contains the blank line that ends its head.
 */
#include "tests/fuzz/fuzz.h"

#include "lib/http1.h"

#include <stdbool.h>

static bool documented(int status)
{
	return status == HTTP1_INCOMPLETE || status == 200 || status == 400 || status == 404 ||
	       status == 405 || status == 413 || status == 505;
}

static bool has_blank_line(const char *s, size_t len)
{
	for (size_t i = 0; i + 1 < len; i++)
		if (s[i] == '\n' && (s[i + 1] == '\n' || (s[i + 1] == '\r' && i + 2 < len &&
							  s[i + 2] == '\n')))
			return true;
	return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *s = (const char *)data;
	int full = http1_check_request(s, size, "/metrics");

	CHECK(documented(full));
	if (size >= HTTP1_MAX_REQUEST)
		CHECK(full != HTTP1_INCOMPLETE);
	if (full == 200) {
		size_t skip = 0;
		while (skip < size && (s[skip] == '\r' || s[skip] == '\n'))
			skip++;
		CHECK(size - skip >= 13 && memcmp(s + skip, "GET /metrics", 12) == 0);
		CHECK(has_blank_line(s, size));
	}
	/* Prefixes: every one up to 64 bytes, then 64 spread over the rest. */
	size_t step = size > 64 ? (size - 64) / 64 + 1 : 1;
	for (size_t n = 0; n < size; n += n < 64 ? 1 : step) {
		int part = http1_check_request(s, n, "/metrics");
		CHECK(documented(part));
		CHECK(part == HTTP1_INCOMPLETE || part == full);
	}
	return 0;
}
