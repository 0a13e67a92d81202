/*
 * The request head is checked line by line, from the start, each time more
 * bytes arrive (it is at most 8 KiB).  Lines end in CRLF or a bare LF (RFC
 * 9112 §2.2 lets a server accept the latter); a CR anywhere else is an
 * error, as are control bytes other than HTAB in a header value and
 * obsolete line folding.
 */
#include "lib/http1.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* RFC 9110 §5.6.2 tchar. */
static bool tchar(char c)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
		return true;
	return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static bool token(const char *s, size_t len)
{
	if (len == 0)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!tchar(s[i]))
			return false;
	return true;
}

static bool ieq(const char *a, size_t len, const char *b)
{
	if (strlen(b) != len)
		return false;
	for (size_t i = 0; i < len; i++) {
		char x = a[i], y = b[i];
		if (x >= 'A' && x <= 'Z')
			x = (char)(x + 32);
		if (y >= 'A' && y <= 'Z')
			y = (char)(y + 32);
		if (x != y)
			return false;
	}
	return true;
}

/* The next line in @buf[@pos..@len): its length without the line end, and
 * where the next one starts.  False while it has no LF yet; true with *bad
 * set for a CR not followed by LF. */
static bool next_line(const char *buf, size_t len, size_t pos, size_t *line_len, size_t *next,
		      bool *bad)
{
	const char *lf = memchr(buf + pos, '\n', len - pos);
	const char *cr = memchr(buf + pos, '\r', lf ? (size_t)(lf - (buf + pos)) : len - pos);

	if (cr && (!lf || cr + 1 != lf)) {
		/* A CR that is not the one before the LF; at the very end it may
		 * still be followed by one. */
		if (cr + 1 < buf + len) {
			*bad = true;
			return true;
		}
		return false;
	}
	if (!lf)
		return false;
	*line_len = (size_t)(lf - (buf + pos)) - (cr ? 1 : 0);
	*next = (size_t)(lf - buf) + 1;
	return true;
}

/* "GET /metrics HTTP/1.1": 0 with the method, target and minor version, or
 * 400. */
static int request_line(const char *s, size_t len, const char **method, size_t *method_len,
			const char **target, size_t *target_len, int *minor)
{
	const char *sp1 = memchr(s, ' ', len);
	if (!sp1)
		return 400;
	const char *rest = sp1 + 1;
	const char *sp2 = memchr(rest, ' ', len - (size_t)(rest - s));
	if (!sp2)
		return 400;
	const char *version = sp2 + 1;
	size_t version_len = len - (size_t)(version - s);
	*method = s;
	*method_len = (size_t)(sp1 - s);
	*target = rest;
	*target_len = (size_t)(sp2 - rest);
	if (!token(*method, *method_len) || *target_len == 0)
		return 400;
	for (size_t i = 0; i < *target_len; i++)
		if ((unsigned char)rest[i] <= 0x20 || (unsigned char)rest[i] >= 0x7f)
			return 400;
	if (version_len != 8 || memcmp(version, "HTTP/", 5) != 0 || version[6] != '.' ||
	    version[5] < '0' || version[5] > '9' || version[7] < '0' || version[7] > '9')
		return 400;
	if (version[5] != '1' || version[7] > '1')
		return 505;
	*minor = version[7] - '0';
	return 0;
}

/* "Name: value": 0, or 400; counts Host fields. */
static int header_line(const char *s, size_t len, unsigned *hosts)
{
	const char *colon = memchr(s, ':', len);

	if (len && (s[0] == ' ' || s[0] == '\t'))
		return 400; /* obsolete line folding */
	if (!colon || !token(s, (size_t)(colon - s)))
		return 400;
	for (const char *p = colon + 1; p < s + len; p++) {
		unsigned char c = (unsigned char)*p;
		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return 400;
	}
	if (ieq(s, (size_t)(colon - s), "host"))
		(*hosts)++;
	return 0;
}

int http1_check_request(const char *buf, size_t len, const char *path)
{
	const char *method = NULL, *target = NULL;
	size_t method_len = 0, target_len = 0, pos = 0, line_len, next;
	unsigned hosts = 0, blank_lines = 0;
	int minor = 1, rc;
	bool have_request_line = false, bad = false;

	if (len > HTTP1_MAX_REQUEST)
		len = HTTP1_MAX_REQUEST;
	while (next_line(buf, len, pos, &line_len, &next, &bad)) {
		if (bad)
			return 400;
		const char *line = buf + pos;
		pos = next;
		if (!have_request_line) {
			/* RFC 9112 §2.2: empty lines before the request line are ignored. */
			if (line_len == 0 && ++blank_lines <= 4)
				continue;
			rc = request_line(line, line_len, &method, &method_len, &target,
					  &target_len, &minor);
			if (rc)
				return rc;
			have_request_line = true;
			continue;
		}
		if (line_len == 0) {
			/* The end of the head. */
			if (minor == 1 && hosts != 1)
				return 400;
			size_t plen = strlen(path);
			const char *query = memchr(target, '?', target_len);
			size_t tpath = query ? (size_t)(query - target) : target_len;
			if (tpath != plen || memcmp(target, path, plen) != 0)
				return 404;
			if (method_len != 3 || memcmp(method, "GET", 3) != 0)
				return 405;
			return 200;
		}
		rc = header_line(line, line_len, &hosts);
		if (rc)
			return rc;
	}
	/* The line not complete yet cannot become valid with a control byte
	 * in it (HTAB aside, and the CR of a CRLF): say so now. */
	for (size_t i = pos; i < len; i++) {
		unsigned char c = (unsigned char)buf[i];
		if ((c < 0x20 && c != '\t' && c != '\r') || c == 0x7f)
			return 400;
	}
	return len >= HTTP1_MAX_REQUEST ? 413 : HTTP1_INCOMPLETE;
}

const char *http1_reason(int status)
{
	switch (status) {
	case 200:
		return "OK";
	case 400:
		return "Bad Request";
	case 403:
		return "Forbidden";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 408:
		return "Request Timeout";
	case 413:
		return "Content Too Large";
	case 500:
		return "Internal Server Error";
	case 503:
		return "Service Unavailable";
	case 505:
		return "HTTP Version Not Supported";
	default:
		return "Error";
	}
}

size_t http1_response_head(int status, const char *content_type, size_t body_len, char *out,
			   size_t cap)
{
	int n = snprintf(out, cap,
			 "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s"
			 "Cache-Control: no-store\r\nConnection: close\r\n\r\n",
			 status, http1_reason(status), content_type, body_len,
			 status == 405 ? "Allow: GET\r\n" : "");

	return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}
