/*
 * Unit tests for lib/ctlproto: each command with and without --json, the
 * flush name (trailing dot or not, any case, the root), and every way a
 * line can be refused, with the reason; and format() giving back a line
 * that parses to the same request.
 */
#include "lib/ctlproto.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static struct ctlproto_request req;
static char err[256];

static int parse(const char *line)
{
	err[0] = '\0';
	return ctlproto_parse(line, strlen(line), &req, err, sizeof(err));
}

static void commands(void **state)
{
	(void)state;
	assert_int_equal(parse("stats"), 0);
	assert_int_equal(req.command, CTLPROTO_STATS);
	assert_false(req.json);
	assert_int_equal(parse("--json stats"), 0);
	assert_true(req.json);
	assert_int_equal(parse("  \t--json \t upstreams \r"), 0); /* blanks and a CR */
	assert_int_equal(req.command, CTLPROTO_UPSTREAMS);
	assert_true(req.json);
	assert_int_equal(parse("reload"), 0);
	assert_int_equal(req.command, CTLPROTO_RELOAD);
	assert_int_equal(parse("flush"), 0);
	assert_int_equal(req.command, CTLPROTO_FLUSH);
	assert_int_equal(req.name_len, 0);
	assert_string_equal(ctlproto_command_name(CTLPROTO_UPSTREAMS), "upstreams");
}

static void flush_names(void **state)
{
	(void)state;
	static const uint8_t wire[] = "\x07"
				      "example"
				      "\x03"
				      "com";
	const char *forms[] = { "flush example.com", "flush example.com.", "flush EXAMPLE.Com",
				"--json flush Example.COM." };

	for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
		assert_int_equal(parse(forms[i]), 0);
		assert_int_equal(req.name_len, sizeof(wire)); /* the root label's 0 included */
		assert_memory_equal(req.name, wire, sizeof(wire));
		assert_string_equal(req.name_text, "example.com.");
	}
	assert_int_equal(parse("flush ."), 0);
	assert_int_equal(req.name_len, 1);
	assert_string_equal(req.name_text, ".");
	assert_int_equal(parse("flush _sip._udp.example"), 0);
}

static void refusals(void **state)
{
	(void)state;
	static const struct {
		const char *line;
		const char *why;
	} bad[] = {
		{ "", "no command" },
		{ "   ", "no command" },
		{ "--json", "no command" },
		{ "status", "unknown command 'status'" },
		{ "STATS", "unknown command" },
		{ "--yaml stats", "unknown option '--yaml'" },
		{ "stats --json", "takes no argument" }, /* options come first */
		{ "stats now", "'stats' takes no argument" },
		{ "reload x", "'reload' takes no argument" },
		{ "flush a b", "usage: flush [NAME]" },
		{ "flush a..b", "bad name 'a..b'" },
		{ "flush ..", "bad name" },
		{ "flush a\\.b", "escapes are not supported" },
		{ "flush 0123456789012345678901234567890123456789012345678901234567890123.x",
		  "bad name" },
		{ "a b c d e", "too many words" },
		{ "stats\x01", "byte 0x01 is not printable" },
		{ "st\xc3\xa4ts", "byte 0xc3" },
		{ "stats\n", "byte 0x0a" }, /* the caller cuts the line at its LF */
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(parse(bad[i].line), -EINVAL);
		if (!strstr(err, bad[i].why))
			fail_msg("'%s': '%s' does not say '%s'", bad[i].line, err, bad[i].why);
	}
	assert_int_equal(ctlproto_parse("stats\0x", 7, &req, err, sizeof(err)), -EINVAL);
}

static void long_lines(void **state)
{
	(void)state;
	char line[CTLPROTO_MAX_LINE + 10];
	char name[300];

	/* A name of 253 characters is the longest there is. */
	size_t n = 0;
	for (unsigned i = 0; i < 4; i++)
		n += (size_t)snprintf(
		    name + n, sizeof(name) - n, "%s%.63s", i ? "." : "",
		    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
	name[253] = '\0';
	snprintf(line, sizeof(line), "flush %s", name);
	assert_int_equal(parse(line), 0);
	assert_int_equal(req.name_len, 255);
	snprintf(line, sizeof(line), "flush %sa", name);
	assert_int_equal(parse(line), -EINVAL);
	memset(line, ' ', sizeof(line));
	memcpy(line, "stats", 5);
	assert_int_equal(ctlproto_parse(line, CTLPROTO_MAX_LINE - 1, &req, err, sizeof(err)), 0);
	assert_int_equal(ctlproto_parse(line, CTLPROTO_MAX_LINE, &req, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "too long"));
}

static void format_round_trip(void **state)
{
	(void)state;
	const char *lines[] = { "stats",  "--json stats", "upstreams",
				"reload", "flush",	  "--json flush Example.ORG",
				"flush ." };
	char out[CTLPROTO_MAX_LINE];

	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
		struct ctlproto_request first;
		assert_int_equal(parse(lines[i]), 0);
		first = req;
		size_t n = ctlproto_format(&first, out, sizeof(out));
		assert_true(n > 0 && out[n - 1] == '\n');
		assert_int_equal(ctlproto_parse(out, n - 1, &req, err, sizeof(err)), 0);
		assert_int_equal(req.command, first.command);
		assert_int_equal(req.json, first.json);
		assert_int_equal(req.name_len, first.name_len);
		assert_memory_equal(req.name, first.name, first.name_len);
	}
	assert_int_equal(parse("--json flush Example.ORG"), 0);
	ctlproto_format(&req, out, sizeof(out));
	assert_string_equal(out, "--json flush example.org.\n");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(commands),	     cmocka_unit_test(flush_names),
		cmocka_unit_test(refusals),	     cmocka_unit_test(long_lines),
		cmocka_unit_test(format_round_trip),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
