/*
 * Fuzz target for lib/localzone's blocklist loader and look-up.  The input
 * is written verbatim to a scratch file and loaded on top of a small fixed
 * list.  Whatever the input:
 *  - the load returns 0, -EINVAL (with a one-line "PATH:LINE: reason") or
 *    -ENOMEM, and a failed load leaves the earlier list exactly as it was;
 *  - after a successful load, each line that is a single plain name is
 *    answered locally (blocked, or by a built-in zone);
 *  - every reply, for the input's own words and for fixed names, parses
 *    with wire_parse(), keeps the client's ID and question, and fits in
 *    LOCALZONE_MAX_REPLY; a short buffer gives length 0, never an overrun.
 */
#include "tests/fuzz/fuzz.h"

#include "lib/localzone.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

enum { MAX_LOOKUPS = 64, BASE_COUNT = 2 };

static char list_path[64], base_path[64];

static void remove_files(void)
{
	if (list_path[0])
		unlink(list_path);
	if (base_path[0])
		unlink(base_path);
}

static void scratch_file(char *path, size_t cap)
{
	snprintf(path, cap, "/tmp/dotproxy-fuzz-blocklist-XXXXXX");
	int fd = mkstemp(path);
	CHECK(fd >= 0);
	close(fd);
}

/* The per-process scratch files, made on first use. */
static void setup_once(void)
{
	if (list_path[0])
		return;
	scratch_file(list_path, sizeof(list_path));
	scratch_file(base_path, sizeof(base_path));
	atexit(remove_files);
	FILE *f = fopen(base_path, "w");
	CHECK(f != NULL);
	fputs("base.example\n0.0.0.0 hosts.example\n", f);
	CHECK(fclose(f) == 0);
}

static void build_query(uint8_t *q, size_t *qlen, const uint8_t *name, size_t nlen, uint16_t type,
			bool edns)
{
	memset(q, 0, WIRE_HEADER_LEN);
	wire_write16(q, 0x5a5a);
	wire_write16(q + 2, WIRE_FLAG_RD);
	wire_write16(q + 4, 1);
	wire_write16(q + 10, edns ? 1 : 0);
	memcpy(q + WIRE_HEADER_LEN, name, nlen);
	size_t p = WIRE_HEADER_LEN + nlen;
	wire_write16(q + p, type);
	wire_write16(q + p + 2, WIRE_CLASS_IN);
	p += 4;
	if (edns) {
		static const uint8_t opt[11] = { 0, 0, 41, 0x04, 0xd0, 0, 0, 0x80, 0, 0, 0 };
		memcpy(q + p, opt, sizeof(opt));
		p += sizeof(opt);
	}
	*qlen = p;
}

/* Look @name up; check the reply.  Returns the verdict. */
static enum localzone_verdict lookup(const struct localzone *lz, const uint8_t *name, size_t nlen,
				     uint16_t type, bool edns)
{
	uint8_t q[WIRE_HEADER_LEN + WIRE_MAX_NAME + 4 + 11], out[LOCALZONE_MAX_REPLY + 8];
	struct wire_info qi, ri;
	size_t qlen, len;

	build_query(q, &qlen, name, nlen, type, edns);
	CHECK(wire_parse(q, qlen, &qi) == 0);
	memset(out, 0xa5, sizeof(out));
	enum localzone_verdict v = localzone_lookup(lz, &qi, out, LOCALZONE_MAX_REPLY, &len);
	CHECK(v == LOCALZONE_FORWARD || v == LOCALZONE_LOCAL || v == LOCALZONE_BLOCKED);
	for (size_t i = LOCALZONE_MAX_REPLY; i < sizeof(out); i++)
		CHECK(out[i] == 0xa5);
	if (v == LOCALZONE_FORWARD) {
		CHECK(len == 0);
		return v;
	}
	CHECK(len >= qi.question_end && len <= LOCALZONE_MAX_REPLY);
	CHECK(wire_parse(out, len, &ri) == 0);
	CHECK(ri.id == qi.id);
	CHECK(ri.flags & WIRE_FLAG_QR);
	CHECK(ri.question_end == qi.question_end);
	CHECK(memcmp(out + WIRE_HEADER_LEN, q + WIRE_HEADER_LEN,
		     qi.question_end - WIRE_HEADER_LEN) == 0);
	CHECK(ri.has_edns == edns);
	/* One byte short: same verdict, nothing written, no length. */
	size_t full = len;
	CHECK(localzone_lookup(lz, &qi, out, full - 1, &len) == v);
	CHECK(len == 0);
	return v;
}

static void lookup_text(const struct localzone *lz, const char *text)
{
	uint8_t wire[WIRE_MAX_NAME];
	size_t n = fuzz_name_to_wire(text, strlen(text), wire);
	CHECK(n > 0);
	lookup(lz, wire, n, 1, true);
	lookup(lz, wire, n, 28, false);
}

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

/* For each line of the input: look its first word up as a name; and if
 * the load succeeded and the line is nothing but a name (no address, no
 * comment), it must be answered here. */
static void check_lines(const struct localzone *lz, const uint8_t *data, size_t size, bool loaded)
{
	const char *p = (const char *)data, *end = p + size;
	unsigned lookups = 0;

	if (size >= 3 && memcmp(p, "\xef\xbb\xbf", 3) == 0)
		p += 3;
	while (p < end && lookups < MAX_LOOKUPS) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		const char *line_end = eol ? eol : end, *s = p, *e;
		p = eol ? eol + 1 : end;
		while (s < line_end && is_space(*s))
			s++;
		for (e = s; e < line_end && !is_space(*e);)
			e++;
		if (e == s)
			continue;
		uint8_t wire[WIRE_MAX_NAME];
		size_t n = fuzz_name_to_wire(s, (size_t)(e - s), wire);
		if (!n)
			continue;
		lookups++;
		enum localzone_verdict v = lookup(lz, wire, n, 1, lookups & 1);
		const char *rest = e;
		while (rest < line_end && is_space(*rest))
			rest++;
		if (!loaded || rest != line_end || *s == '#' || memchr(s, '\0', (size_t)(e - s)))
			continue;
		/* (A lone address would have failed the load.) */
		CHECK(v != LOCALZONE_FORWARD);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[256];

	setup_once();
	FILE *f = fopen(list_path, "wb");
	CHECK(f != NULL);
	CHECK(fwrite(data, 1, size, f) == size);
	CHECK(fclose(f) == 0);

	struct localzone *lz = localzone_new();
	CHECK(lz != NULL);
	CHECK(localzone_load_blocklist(lz, base_path, err, sizeof(err)) == 0);
	CHECK(localzone_blocked_count(lz) == BASE_COUNT);
	localzone_set_block_action(lz, (enum localzone_block_action)(size % 3));

	memset(err, 0x5a, sizeof(err));
	int rc = localzone_load_blocklist(lz, list_path, err, sizeof(err));
	CHECK(rc == 0 || rc == -EINVAL || rc == -ENOMEM);
	CHECK(memchr(err, '\0', sizeof(err)) != NULL);
	CHECK(strchr(err, '\n') == NULL);
	if (rc == 0) {
		CHECK(err[0] == '\0');
		CHECK(localzone_blocked_count(lz) >= BASE_COUNT);
	} else {
		CHECK(strncmp(err, list_path, strlen(list_path)) == 0);
		CHECK(err[strlen(list_path)] == ':');
		CHECK(localzone_blocked_count(lz) == BASE_COUNT);
	}
	/* The base list survives whatever the input did. */
	uint8_t wire[WIRE_MAX_NAME];
	size_t n = fuzz_name_to_wire("x.base.example", 14, wire);
	CHECK(lookup(lz, wire, n, 1, true) == LOCALZONE_BLOCKED);
	n = fuzz_name_to_wire("hosts.example", 13, wire);
	CHECK(lookup(lz, wire, n, 28, false) == LOCALZONE_BLOCKED);
	lookup_text(lz, "www.localhost");
	lookup_text(lz, "1.0.0.127.in-addr.arpa");
	lookup_text(lz, "_dns.resolver.arpa");
	lookup_text(lz, "www.example");
	check_lines(lz, data, size, rc == 0);
	localzone_free(lz);
	return 0;
}
