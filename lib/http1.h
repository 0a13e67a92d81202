/*
 * Just enough HTTP/1.1 (RFC 9112) for the metrics endpoint: decide what to
 * answer to the bytes a client sent, and write the response head.  Only
 * "GET /metrics" (any query string) is served; everything else gets the
 * status that says why.  The request head is bounded: past
 * HTTP1_MAX_REQUEST bytes without its end, 413.  Request bodies are never
 * read (the server closes after one response).
 *
 * Stateless: the daemon keeps what a client sent so far in one buffer and
 * asks again after each read; a verdict, once given for some bytes, stays
 * the same whatever follows them.
 */
#pragma once

#include <stddef.h>

enum {
	HTTP1_MAX_REQUEST = 8192, /**< bytes of request head accepted */
	HTTP1_INCOMPLETE = 0,	  /**< http1_check_request(): not enough bytes yet */
};

/**
 * What to answer to the first @len bytes of a request, @path being the one
 * path served (e.g. "/metrics"):
 *   0     the head is not complete yet: read more
 *   200   GET @path, HTTP/1.0 or 1.1, well-formed head
 *   400   malformed: request line, a header line, a bare CR, control bytes,
 *         an HTTP/1.1 request without exactly one Host
 *   404   another path (or a target that is not a path)
 *   405   @path with another method (the response says Allow: GET)
 *   413   no end of the head within HTTP1_MAX_REQUEST bytes
 *   505   an HTTP version other than 1.0 and 1.1
 * A malformed request line or header line is reported as soon as its line
 * is complete.
 */
int http1_check_request(const char *buf, size_t len, const char *path);

/** The reason phrase of @status ("Not Found"). */
const char *http1_reason(int status);

/** Write the head of a response with @status and a body of @body_len bytes
 * of @content_type ("Connection: close"; "Allow: GET" with 405) into @out.
 * Returns its length, or 0 if @cap is too small. */
size_t http1_response_head(int status, const char *content_type, size_t body_len, char *out,
			   size_t cap);
