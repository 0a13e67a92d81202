/*
 * Requests are words: options first (only --json), then the command, then
 * its argument.  Anything that is not printable ASCII is refused before
 * the words are looked at, so error messages can quote what was sent.
 */
#include "lib/ctlproto.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

enum { MAX_WORDS = 4 };

static const char *const commands[] = {
	[CTLPROTO_STATS] = "stats",
	[CTLPROTO_UPSTREAMS] = "upstreams",
	[CTLPROTO_FLUSH] = "flush",
	[CTLPROTO_RELOAD] = "reload",
};

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

const char *ctlproto_command_name(enum ctlproto_command command)
{
	return (unsigned)command < sizeof(commands) / sizeof(commands[0]) ? commands[command] : "?";
}

int ctlproto_parse(const char *line, size_t len, struct ctlproto_request *req, char *err,
		   size_t errlen)
{
	struct {
		const char *p;
		size_t len;
	} words[MAX_WORDS];
	size_t n = 0, i = 0;

	memset(req, 0, sizeof(*req));
	if (len && line[len - 1] == '\r')
		len--;
	if (len + 1 > CTLPROTO_MAX_LINE)
		return fail(err, errlen, "request too long (at most %d bytes)",
			    CTLPROTO_MAX_LINE - 1);
	for (size_t k = 0; k < len; k++) {
		unsigned char c = (unsigned char)line[k];
		if ((c < 0x20 && c != '\t') || c > 0x7e)
			return fail(err, errlen, "bad request: byte 0x%02x is not printable ASCII",
				    c);
	}
	while (i < len) {
		while (i < len && (line[i] == ' ' || line[i] == '\t'))
			i++;
		if (i == len)
			break;
		size_t start = i;
		while (i < len && line[i] != ' ' && line[i] != '\t')
			i++;
		if (n == MAX_WORDS)
			return fail(err, errlen, "bad request: too many words");
		words[n].p = line + start;
		words[n++].len = i - start;
	}
	size_t w = 0;
	for (; w < n && words[w].len > 2 && words[w].p[0] == '-' && words[w].p[1] == '-'; w++) {
		if (words[w].len == 6 && memcmp(words[w].p, "--json", 6) == 0)
			req->json = true;
		else
			return fail(err, errlen, "unknown option '%.*s'", (int)words[w].len,
				    words[w].p);
	}
	if (w == n)
		return fail(err, errlen, "no command (stats, upstreams, flush [NAME], reload)");
	size_t c = 0;
	for (; c < sizeof(commands) / sizeof(commands[0]); c++)
		if (strlen(commands[c]) == words[w].len &&
		    memcmp(commands[c], words[w].p, words[w].len) == 0)
			break;
	if (c == sizeof(commands) / sizeof(commands[0]))
		return fail(err, errlen,
			    "unknown command '%.*s' (stats, upstreams, flush [NAME], reload)",
			    (int)(words[w].len < 64 ? words[w].len : 64), words[w].p);
	req->command = (enum ctlproto_command)c;
	size_t args = n - w - 1;
	if (req->command != CTLPROTO_FLUSH && args > 0)
		return fail(err, errlen, "'%s' takes no argument", commands[c]);
	if (args > 1)
		return fail(err, errlen, "usage: flush [NAME]");
	if (args == 0)
		return 0;
	const char *name = words[w + 1].p;
	size_t name_len = words[w + 1].len;
	char text[WIRE_MAX_NAME + 2];
	if (name_len >= sizeof(text) - 1)
		return fail(err, errlen, "bad name: longer than %d characters", WIRE_MAX_NAME);
	memcpy(text, name, name_len);
	text[name_len] = '\0';
	if (memchr(text, '\\', name_len))
		return fail(err, errlen, "bad name '%s': escapes are not supported", text);
	req->name_len = wire_name_from_text(text, req->name);
	if (req->name_len == 0)
		return fail(err, errlen,
			    "bad name '%s': expected a domain name such as example.com (labels "
			    "of 1 to 63 characters, at most 253 in all)",
			    text);
	wire_name_to_text(req->name, req->name_len, req->name_text, sizeof(req->name_text));
	return 0;
}

size_t ctlproto_format(const struct ctlproto_request *req, char *out, size_t cap)
{
	int n = snprintf(out, cap, "%s%s%s%s\n", req->json ? "--json " : "",
			 ctlproto_command_name(req->command),
			 req->command == CTLPROTO_FLUSH && req->name_len ? " " : "",
			 req->command == CTLPROTO_FLUSH && req->name_len ? req->name_text : "");

	return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}
