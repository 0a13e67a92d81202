/*
 * Fuzz target for lib/localdata: the --local-data line parser, the hosts
 * parser and the replies.  The input is used three ways:
 *  - each line (cut at a NUL, as a command line would be) is a --local-data
 *    line added to one store: the result is 0, -EINVAL or -EFBIG with a
 *    one-line reason, localdata_check_line() agrees on what is malformed, a
 *    refused line adds nothing, and an accepted line's name is answered;
 *  - the whole input is a hosts file, loaded from memory and from a scratch
 *    file: both give the same result, count and reason ("LABEL:LINE: ..."),
 *    and after a successful load the first name of each address line is
 *    answered;
 *  - the lines go into a localzone's local data as well, so that the same
 *    names are looked up through localzone_lookup().
 * Every reply parses with wire_parse(), keeps the query's ID and question,
 * has QR and AA, an OPT exactly when the query had one, fits in
 * LOCALDATA_MAX_REPLY; one byte less gives length 0 and no write past it.
 */
#include "tests/fuzz/fuzz.h"

#include "lib/localdata.h"
#include "lib/localzone.h"

#include <arpa/inet.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>

enum { MAX_LINES = 64, MAX_LOOKUPS = 48, LINE_MAX_BYTES = 1024 };

static char hosts_path[64];
static uint8_t *reply; /* LOCALDATA_MAX_REPLY + 16: too big for the stack */

static void remove_file(void)
{
	if (hosts_path[0])
		unlink(hosts_path);
}

static void setup_once(void)
{
	if (reply)
		return;
	reply = malloc(LOCALDATA_MAX_REPLY + 16);
	CHECK(reply != NULL);
	/* tmpfs if there is one: the file is written and read for every input. */
	snprintf(hosts_path, sizeof(hosts_path), "%s/dotproxy-fuzz-hosts-XXXXXX",
		 access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
	int fd = mkstemp(hosts_path);
	CHECK(fd >= 0);
	close(fd);
	atexit(remove_file);
}

static bool blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

static bool one_line(const char *err, size_t cap)
{
	return memchr(err, '\0', cap) != NULL && strchr(err, '\n') == NULL;
}

static void make_query(uint8_t *q, size_t *qlen, const uint8_t *name, size_t nlen, uint16_t type,
		       bool edns)
{
	memset(q, 0, WIRE_HEADER_LEN);
	wire_write16(q, 0xa55a);
	wire_write16(q + 2, WIRE_FLAG_RD | WIRE_FLAG_CD);
	wire_write16(q + 4, 1);
	wire_write16(q + 10, edns ? 1 : 0);
	memcpy(q + WIRE_HEADER_LEN, name, nlen);
	size_t p = WIRE_HEADER_LEN + nlen;
	wire_write16(q + p, type);
	wire_write16(q + p + 2, WIRE_CLASS_IN);
	p += 4;
	if (edns) {
		static const uint8_t opt[11] = { 0, 0, 41, 0x10, 0x00, 0, 0, 0x80, 0, 0, 0 };
		memcpy(q + p, opt, sizeof(opt));
		p += sizeof(opt);
	}
	*qlen = p;
}

/* The properties every reply has, whoever wrote it. */
static void check_reply(const uint8_t *q, const struct wire_info *qi, size_t len)
{
	struct wire_info ri;

	CHECK(len >= qi->question_end && len <= LOCALDATA_MAX_REPLY);
	CHECK(wire_parse(reply, len, &ri) == 0);
	CHECK(ri.id == qi->id);
	CHECK(ri.flags & WIRE_FLAG_QR);
	CHECK((ri.flags & WIRE_FLAG_CD) && (ri.flags & WIRE_FLAG_RD));
	CHECK(ri.question_end == qi->question_end);
	CHECK(memcmp(reply + WIRE_HEADER_LEN, q + WIRE_HEADER_LEN,
		     qi->question_end - WIRE_HEADER_LEN) == 0);
	CHECK(ri.has_edns == qi->has_edns);
	if (ri.has_edns)
		CHECK((ri.edns_ttl & 0x8000) != 0);
}

/* Ask @ld and @lz for @name/@type; returns whether local data answered. */
static bool lookup(const struct localdata *ld, const struct localzone *lz, const uint8_t *name,
		   size_t nlen, uint16_t type, bool edns)
{
	uint8_t q[WIRE_HEADER_LEN + WIRE_MAX_NAME + 4 + 11];
	struct wire_info qi;
	size_t qlen, len;

	make_query(q, &qlen, name, nlen, type, edns);
	CHECK(wire_parse(q, qlen, &qi) == 0);
	/* Only the bytes that must stay untouched are poisoned: a memset of
	 * the whole buffer per look-up would be most of the run time. */
	memset(reply + LOCALDATA_MAX_REPLY, 0x5a, 16);
	enum localdata_result r = localdata_lookup(ld, &qi, reply, LOCALDATA_MAX_REPLY, &len);
	for (size_t i = LOCALDATA_MAX_REPLY; i < LOCALDATA_MAX_REPLY + 16; i++)
		CHECK(reply[i] == 0x5a);
	if (r == LOCALDATA_NONE) {
		CHECK(len == 0);
	} else {
		CHECK(r == LOCALDATA_ANSWER);
		CHECK(len > 0);
		check_reply(q, &qi, len);
		struct wire_info ri;
		CHECK(wire_parse(reply, len, &ri) == 0);
		CHECK(ri.flags & WIRE_FLAG_AA);
		CHECK(wire_rcode(reply) == WIRE_RCODE_NOERROR);
		CHECK(ri.ancount <= LOCALDATA_MAX_CHAIN + LOCALDATA_MAX_NAME_BYTES / 12);
		/* One byte short: reported, nothing past the cap. */
		size_t full = len, cap = full - 1 - (full * 7919u) % (full < 64 ? full : 64);
		memset(reply + cap, 0x5a, full - cap);
		CHECK(localdata_lookup(ld, &qi, reply, cap, &len) == LOCALDATA_ANSWER);
		CHECK(len == 0);
		for (size_t i = cap; i < full; i++)
			CHECK(reply[i] == 0x5a);
	}
	if (lz) {
		enum localzone_verdict v =
		    localzone_lookup(lz, &qi, reply, LOCALZONE_MAX_DATA_REPLY, &len);
		CHECK(v == LOCALZONE_FORWARD || v == LOCALZONE_LOCAL || v == LOCALZONE_BLOCKED ||
		      v == LOCALZONE_DATA);
		if (v == LOCALZONE_FORWARD)
			CHECK(len == 0);
		else
			check_reply(q, &qi, len);
		if (v == LOCALZONE_LOCAL)
			CHECK(len <= LOCALZONE_MAX_REPLY);
		/* @lz's data is @ld's: local data comes first there. */
		CHECK((v == LOCALZONE_DATA) == (r == LOCALDATA_ANSWER));
	}
	return r == LOCALDATA_ANSWER;
}

/* The first blank-separated word of [s, end), or false. */
static bool first_word(const char *s, const char *end, const char **w, size_t *n)
{
	while (s < end && blank(*s))
		s++;
	*w = s;
	while (s < end && !blank(*s))
		s++;
	*n = (size_t)(s - *w);
	return *n > 0;
}

/* Each line as --local-data into @ld and @lz's data; look up its name. */
static void local_data_lines(struct localdata *ld, struct localzone *lz, const uint8_t *data,
			     size_t size)
{
	const char *p = (const char *)data, *end = p + size;
	char line[LINE_MAX_BYTES], err[256], err2[256];
	unsigned n_lines = 0, lookups = 0;

	while (p < end && n_lines++ < MAX_LINES) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		size_t n = (size_t)((eol ? eol : end) - p);
		if (n >= sizeof(line))
			n = sizeof(line) - 1;
		memcpy(line, p, n);
		line[n] = '\0';
		n = strlen(line); /* cut at a NUL */
		p = eol ? eol + 1 : end;

		size_t before = localdata_count(ld);
		memset(err, 0x5a, sizeof(err));
		int rc = localdata_add_line(ld, line, err, sizeof(err));
		CHECK(rc == 0 || rc == -EINVAL || rc == -EFBIG);
		CHECK(one_line(err, sizeof(err)));
		int check = localdata_check_line(line, err2, sizeof(err2));
		CHECK(check == 0 || check == -EINVAL);
		CHECK(one_line(err2, sizeof(err2)));
		if (check) {
			/* Malformed: refused alike, for the same reason. */
			CHECK(rc == check && strcmp(err, err2) == 0);
		}
		if (rc) {
			CHECK(err[0] != '\0');
			CHECK(localdata_count(ld) == before);
		} else {
			CHECK(err[0] == '\0');
			CHECK(localdata_count(ld) <= before + 1);
		}
		(void)localdata_add_line(localzone_data(lz), line, NULL, 0);

		const char *w;
		size_t wn;
		uint8_t wire[WIRE_MAX_NAME];
		if (!first_word(line, line + n, &w, &wn) || !(wn = fuzz_name_to_wire(w, wn, wire)))
			continue;
		if (lookups++ >= MAX_LOOKUPS)
			continue;
		static const uint16_t types[] = { 1, 28, 5, 16, 12, 15, 33, 255, 6 };
		uint16_t type = types[(n + lookups) % (sizeof(types) / sizeof(types[0]))];
		bool answered = lookup(ld, lz, wire, wn, type, lookups & 1);
		/* An accepted line's name owns data: it is answered, whatever
		 * the type (NODATA included). */
		if (rc == 0)
			CHECK(answered && localdata_exists(ld, wire, wn));
		lookup(ld, lz, wire, wn, 255, !(lookups & 1));
	}
}

/* The whole input as a hosts file, from memory and from a file. */
static void hosts_text(const uint8_t *data, size_t size)
{
	struct localdata *mem = localdata_new(), *file = localdata_new();
	char err[256], err2[256];

	CHECK(mem && file);
	memset(err, 0x5a, sizeof(err));
	int rc =
	    localdata_load_hosts_text(mem, hosts_path, (const char *)data, size, err, sizeof(err));
	CHECK(rc == 0 || rc == -EINVAL || rc == -EFBIG);
	CHECK(one_line(err, sizeof(err)));
	if (rc) {
		CHECK(strncmp(err, hosts_path, strlen(hosts_path)) == 0);
		CHECK(err[strlen(hosts_path)] == ':');
	} else {
		CHECK(err[0] == '\0');
	}

	FILE *f = fopen(hosts_path, "wb");
	CHECK(f != NULL);
	CHECK(fwrite(data, 1, size, f) == size);
	CHECK(fclose(f) == 0);
	int rc2 = localdata_load_hosts(file, hosts_path, err2, sizeof(err2));
	CHECK(rc2 == rc);
	CHECK(strcmp(err, err2) == 0);
	CHECK(localdata_count(mem) == localdata_count(file));

	/* After a good load, each address line's first name is answered. */
	const char *p = (const char *)data, *end = p + size;
	unsigned lookups = 0;
	if (size >= 3 && memcmp(p, "\xef\xbb\xbf", 3) == 0)
		p += 3;
	while (rc == 0 && p < end && lookups < MAX_LOOKUPS) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		const char *line_end = eol ? eol : end,
			   *hash = memchr(p, '#', (size_t)(line_end - p));
		const char *stop = hash ? hash : line_end, *w, *name;
		size_t wn, nn;
		char addr[64];
		uint8_t buf[16], wire[WIRE_MAX_NAME];
		const char *s = p;
		p = eol ? eol + 1 : end;
		if (!first_word(s, stop, &w, &wn) || wn >= sizeof(addr))
			continue;
		memcpy(addr, w, wn);
		addr[wn] = '\0';
		bool v4 = inet_pton(AF_INET, addr, buf) == 1;
		if (!v4 && inet_pton(AF_INET6, addr, buf) != 1)
			continue;
		if (!first_word(w + wn, stop, &name, &nn) ||
		    !(nn = fuzz_name_to_wire(name, nn, wire)))
			continue;
		lookups++;
		CHECK(lookup(mem, NULL, wire, nn, v4 ? 1 : 28, lookups & 1));
	}
	localdata_free(mem);
	localdata_free(file);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	setup_once();

	struct localdata *ld = localdata_new();
	struct localzone *lz = localzone_new();
	CHECK(ld && lz);
	local_data_lines(ld, lz, data, size);
	localdata_free(ld);
	localzone_free(lz);

	hosts_text(data, size);
	return 0;
}
