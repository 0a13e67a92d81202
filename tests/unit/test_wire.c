/*
 * Unit tests for lib/wire: parsing and validation of whole messages, and the
 * rewrites the forwarder makes on them.  Messages are assembled byte by byte
 * with a small builder so that each test states exactly what is on the wire,
 * including the malformed parts.
 */
#include "lib/wire.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "tests/unit/msg_builder.h"

static void put_a_rdata(struct msg *m, unsigned last_octet)
{
	put_rr_fixed(m, 1, WIRE_CLASS_IN, 300, 4);
	put8(m, 192);
	put8(m, 0);
	put8(m, 2);
	put8(m, last_octet);
}

/* A root-owned OPT; ttl = extended rcode << 24 | version << 16 | DO << 15. */
static void put_opt(struct msg *m, unsigned udp_size, uint32_t ttl)
{
	put8(m, 0);
	put_rr_fixed(m, WIRE_TYPE_OPT, udp_size, ttl, 0);
}

static void make_query(struct msg *m, const char *name, unsigned type, bool edns, unsigned udp_size,
		       bool dnssec_ok)
{
	put_header(m, 0x1234, WIRE_FLAG_RD, 1, 0, 0, edns ? 1 : 0);
	put_name(m, name);
	put16(m, type);
	put16(m, WIRE_CLASS_IN);
	if (edns)
		put_opt(m, udp_size, dnssec_ok ? 0x8000 : 0);
}

static int parse(const struct msg *m, struct wire_info *info)
{
	return wire_parse(m->b, m->len, info);
}

/* Expand the (possibly compressed) name at @off into @out; its length, or 0
 * when it cannot be followed.  Independent of wire.c on purpose: it lets a
 * test check what a rewrite did to names, not only that the result parses. */
static size_t expand_name(const uint8_t *msg, size_t len, size_t off, uint8_t *out)
{
	size_t n = 0;

	for (unsigned hops = 0; hops < 128 && off < len;) {
		uint8_t label = msg[off];
		if ((label & 0xc0) == 0xc0) {
			if (off + 1 >= len)
				return 0;
			off = (size_t)(label & 0x3f) << 8 | msg[off + 1];
			hops++;
			continue;
		}
		if (label > 63 || off + 1 + label > len || n + 1 + label > WIRE_MAX_NAME)
			return 0;
		memcpy(out + n, msg + off, label + 1u);
		n += label + 1u;
		if (label == 0)
			return n;
		off += label + 1u;
	}
	return 0;
}

/* ---- parsing valid messages --------------------------------------------- */

static void parse_plain_query(void **state)
{
	(void)state;
	struct msg m;
	struct wire_info info;
	static const uint8_t wire_name[] = "\3www\7example\3com";

	make_query(&m, "www.example.com.", 1, false, 0, false);
	assert_int_equal(parse(&m, &info), 0);
	assert_true(info.has_header);
	assert_true(info.has_question);
	assert_int_equal(info.id, 0x1234);
	assert_int_equal(info.flags, WIRE_FLAG_RD);
	assert_int_equal(info.qdcount, 1);
	assert_int_equal(info.ancount, 0);
	assert_int_equal(info.nscount, 0);
	assert_int_equal(info.arcount, 0);
	/* sizeof includes the string's NUL, which is the root label. */
	assert_int_equal(info.q.name_len, sizeof(wire_name));
	assert_memory_equal(info.q.name, wire_name, sizeof(wire_name));
	assert_int_equal(info.q.qtype, 1);
	assert_int_equal(info.q.qclass, WIRE_CLASS_IN);
	assert_int_equal(info.question_end, m.len);
	assert_false(info.has_edns);
	assert_int_equal(wire_opcode(info.flags), 0);
}

static void parse_root_query(void **state)
{
	(void)state;
	struct msg m;
	struct wire_info info;

	make_query(&m, ".", 2, false, 0, false);
	assert_int_equal(parse(&m, &info), 0);
	assert_int_equal(info.q.name_len, 1);
	assert_int_equal(info.q.name[0], 0);
	assert_int_equal(info.q.qtype, 2);
}

static void parse_query_edns(void **state)
{
	(void)state;
	struct msg m;
	struct wire_info info;

	make_query(&m, "example.org.", 28, true, 4096, true);
	assert_int_equal(parse(&m, &info), 0);
	assert_true(info.has_edns);
	assert_int_equal(info.edns_udp_size, 4096);
	assert_true(info.edns_ttl & 0x8000);
	assert_int_equal(info.opt_start, info.question_end);
	assert_int_equal(info.opt_end, m.len);
	assert_int_equal(info.opt_end - info.opt_start, 11);

	make_query(&m, "example.org.", 28, true, 1232, false);
	assert_int_equal(parse(&m, &info), 0);
	assert_true(info.has_edns);
	assert_int_equal(info.edns_udp_size, 1232);
	assert_false(info.edns_ttl & 0x8000);
}

static void parse_edns_with_options(void **state)
{
	(void)state;
	struct msg m;
	struct wire_info info;

	/* OPT carrying a cookie option: RDATA is skipped by length, not interpreted. */
	put_header(&m, 1, 0, 1, 0, 0, 1);
	put_name(&m, "example.");
	put16(&m, 1);
	put16(&m, 1);
	size_t opt = m.len;
	put8(&m, 0);
	put_rr_fixed(&m, WIRE_TYPE_OPT, 1232, 0x01008000, 12);
	put16(&m, 10); /* COOKIE */
	put16(&m, 8);
	put_raw(&m, "\1\2\3\4\5\6\7\10", 8);
	assert_int_equal(parse(&m, &info), 0);
	assert_true(info.has_edns);
	assert_int_equal(info.edns_ttl, 0x01008000);
	assert_int_equal(info.opt_start, opt);
	assert_int_equal(info.opt_end, m.len);
}

static void parse_response_compressed(void **state)
{
	(void)state;
	struct msg m;
	struct wire_info info;

	/* www.example.com CNAME web.example.com (compressed against the question),
	 * web.example.com A, then NS and glue in the other sections. */
	put_header(&m, 0xbeef, WIRE_FLAG_QR | WIRE_FLAG_RD | WIRE_FLAG_RA, 1, 2, 1, 2);
	put_name(&m, "www.example.com.");
	put16(&m, 1);
	put16(&m, 1);
	put_ptr(&m, 12);
	put_rr_fixed(&m, 5, 1, 60, 6);
	size_t web = m.len;
	put8(&m, 3);
	put_raw(&m, "web", 3);
	put_ptr(&m, 16);  /* -> example.com in the question */
	put_ptr(&m, web); /* pointer to a name that itself ends in a pointer */
	put_a_rdata(&m, 1);
	put_ptr(&m, 16);
	put_rr_fixed(&m, 2, 1, 3600, 6);
	size_t ns = m.len;
	put8(&m, 3);
	put_raw(&m, "ns1", 3);
	put_ptr(&m, 16);
	put_ptr(&m, ns);
	put_a_rdata(&m, 53);
	put_opt(&m, 1232, 0);
	assert_int_equal(parse(&m, &info), 0);
	assert_int_equal(info.ancount, 2);
	assert_int_equal(info.nscount, 1);
	assert_int_equal(info.arcount, 2);
	assert_true(info.has_edns);
	assert_int_equal(info.edns_udp_size, 1232);
	assert_int_equal(info.q.name_len, 17);
}

/* ---- rejections --------------------------------------------------------- */

static void reject_short(void **state)
{
	(void)state;
	struct wire_info info;
	uint8_t buf[12] = { 0x12, 0x34, 0x01, 0x00, 0x00, 0x01 };

	for (size_t len = 0; len < WIRE_HEADER_LEN; len++) {
		memset(&info, 0xa5, sizeof(info));
		assert_int_equal(wire_parse(buf, len, &info), WIRE_ESHORT);
		assert_false(info.has_header);
		assert_false(info.has_question);
	}
	/* A bare header with QDCOUNT 1 is readable but the question is missing. */
	assert_int_equal(wire_parse(buf, sizeof(buf), &info), WIRE_EFORMAT);
	assert_true(info.has_header);
	assert_false(info.has_question);
	assert_int_equal(info.id, 0x1234);
}

static void reject_qdcount(void **state)
{
	(void)state;
	struct msg m;
	struct wire_info info;

	put_header(&m, 7, WIRE_FLAG_RD, 0, 0, 0, 0);
	assert_int_equal(parse(&m, &info), WIRE_EQDCOUNT);
	assert_true(info.has_header);
	assert_false(info.has_question);
	assert_int_equal(info.id, 7);

	put_header(&m, 8, 0, 2, 0, 0, 0);
	put_name(&m, "a.example.");
	put16(&m, 1);
	put16(&m, 1);
	put_name(&m, "b.example.");
	put16(&m, 1);
	put16(&m, 1);
	assert_int_equal(parse(&m, &info), WIRE_EQDCOUNT);
	assert_true(info.has_header);
	assert_false(info.has_question);
	assert_int_equal(info.qdcount, 2);
}

static void reject_oversized(void **state)
{
	(void)state;
	static uint8_t big[WIRE_MAX_MSG + 1];
	struct wire_info info;

	big[5] = 1;
	assert_int_equal(wire_parse(big, sizeof(big), &info), WIRE_EFORMAT);
	assert_true(info.has_header);
}

static void reject_pointer_loops(void **state)
{
	(void)state;
	struct msg m;
	struct wire_info info;

	/* The question name is a pointer to itself. */
	put_header(&m, 1, 0, 1, 0, 0, 0);
	put_ptr(&m, 12);
	put16(&m, 1);
	put16(&m, 1);
	assert_int_equal(parse(&m, &info), WIRE_EFORMAT);
	assert_true(info.has_header);
	assert_false(info.has_question);

	/* A forward pointer, to a valid name later in the message. */
	put_header(&m, 1, 0, 1, 0, 0, 0);
	put_ptr(&m, 18);
	put16(&m, 1);
	put16(&m, 1);
	put_name(&m, "x.");
	assert_int_equal(m.b[18], 1);
	assert_int_equal(parse(&m, &info), WIRE_EFORMAT);

	/* Two pointers pointing at each other, in the answer section. */
	put_header(&m, 1, WIRE_FLAG_QR, 1, 1, 0, 0);
	put_name(&m, "a.");
	put16(&m, 1);
	put16(&m, 1);
	size_t a = m.len;
	put_ptr(&m, a + 2);
	put_ptr(&m, a);
	put_rr_fixed(&m, 1, 1, 0, 0);
	assert_int_equal(parse(&m, &info), WIRE_EFORMAT);
	assert_true(info.has_question);

	/* A pointer chain that stays strictly backwards is fine. */
	put_header(&m, 1, WIRE_FLAG_QR, 1, 2, 0, 0);
	put_name(&m, "a.example.");
	put16(&m, 1);
	put16(&m, 1);
	size_t first = m.len;
	put_ptr(&m, 12);
	put_a_rdata(&m, 1);
	put_ptr(&m, first);
	put_a_rdata(&m, 2);
	assert_int_equal(parse(&m, &info), 0);

	/* A pointer cut off by the end of the message. */
	put_header(&m, 1, 0, 1, 0, 0, 0);
	put8(&m, 0xc0);
	assert_int_equal(parse(&m, &info), WIRE_EFORMAT);
}

static void reject_label_types(void **state)
{
	(void)state;
	struct msg m;
	struct wire_info info;
	static const unsigned bad[] = { 0x40, 0x41, 0x7f, 0x80, 0xbf };

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		/* As many bytes as the value would cover as a plain length, so that
		 * only the label type check can reject it. */
		put_header(&m, 1, 0, 1, 0, 0, 0);
		put8(&m, bad[i]);
		for (unsigned j = 0; j < bad[i]; j++)
			put8(&m, 'a');
		put8(&m, 0);
		put16(&m, 1);
		put16(&m, 1);
		assert_int_equal(parse(&m, &info), WIRE_EFORMAT);
	}
	/* 63 is the longest label and is accepted. */
	put_header(&m, 1, 0, 1, 0, 0, 0);
	put8(&m, 63);
	for (unsigned j = 0; j < 63; j++)
		put8(&m, 'a');
	put8(&m, 0);
	put16(&m, 1);
	put16(&m, 1);
	assert_int_equal(parse(&m, &info), 0);
	assert_int_equal(info.q.name_len, 65);
}

/* A name of @labels labels of 63 bytes, then one of @last bytes (if any). */
static void put_long_name(struct msg *m, unsigned labels, unsigned last)
{
	for (unsigned i = 0; i < labels; i++) {
		put8(m, 63);
		for (unsigned j = 0; j < 63; j++)
			put8(m, 'a' + i);
	}
	if (last) {
		put8(m, last);
		for (unsigned j = 0; j < last; j++)
			put8(m, 'z');
	}
	put8(m, 0);
}

static void reject_long_names(void **state)
{
	(void)state;
	struct msg m;
	struct wire_info info;

	/* 3 * 64 + 62 + 1 = 255: the longest legal name. */
	put_header(&m, 1, 0, 1, 0, 0, 0);
	put_long_name(&m, 3, 61);
	put16(&m, 1);
	put16(&m, 1);
	assert_int_equal(parse(&m, &info), 0);
	assert_int_equal(info.q.name_len, 255);

	/* One byte more. */
	put_header(&m, 1, 0, 1, 0, 0, 0);
	put_long_name(&m, 3, 62);
	put16(&m, 1);
	put16(&m, 1);
	assert_int_equal(parse(&m, &info), WIRE_EFORMAT);

	/* Too long only once a pointer is followed: 64 + 254 in an answer owner. */
	put_header(&m, 1, WIRE_FLAG_QR, 1, 1, 0, 0);
	put_long_name(&m, 3, 60);
	put16(&m, 1);
	put16(&m, 1);
	put8(&m, 63);
	for (unsigned j = 0; j < 63; j++)
		put8(&m, 'q');
	put_ptr(&m, 12);
	put_a_rdata(&m, 1);
	assert_int_equal(parse(&m, &info), WIRE_EFORMAT);
	assert_true(info.has_question);
}

static void reject_truncated_records(void **state)
{
	(void)state;
	struct msg m;
	struct wire_info info;

	/* Question without its class. */
	put_header(&m, 1, 0, 1, 0, 0, 0);
	put_name(&m, "example.");
	put16(&m, 1);
	put8(&m, 0);
	assert_int_equal(parse(&m, &info), WIRE_EFORMAT);
	assert_false(info.has_question);

	/* Name running off the end. */
	put_header(&m, 1, 0, 1, 0, 0, 0);
	put8(&m, 7);
	put_raw(&m, "exam", 4);
	assert_int_equal(parse(&m, &info), WIRE_EFORMAT);

	/* RDLENGTH one past the end. */
	put_header(&m, 1, WIRE_FLAG_QR, 1, 1, 0, 0);
	put_name(&m, "example.");
	put16(&m, 1);
	put16(&m, 1);
	put_ptr(&m, 12);
	put_rr_fixed(&m, 1, 1, 0, 5);
	put_raw(&m, "\1\2\3\4", 4);
	assert_int_equal(parse(&m, &info), WIRE_EFORMAT);
	assert_true(info.has_question);
	m.b[m.len - 5] = 4; /* now exact */
	assert_int_equal(parse(&m, &info), 0);

	/* RDLENGTH 0xffff in a short message. */
	set16(&m, m.len - 6, 0xffff);
	assert_int_equal(parse(&m, &info), WIRE_EFORMAT);

	/* Fixed part of an RR cut short. */
	put_header(&m, 1, WIRE_FLAG_QR, 1, 1, 0, 0);
	put_name(&m, "example.");
	put16(&m, 1);
	put16(&m, 1);
	put_ptr(&m, 12);
	put16(&m, 1);
	put16(&m, 1);
	put16(&m, 0);
	assert_int_equal(parse(&m, &info), WIRE_EFORMAT);

	/* Counts promising more records than there are. */
	put_header(&m, 1, WIRE_FLAG_QR, 1, 0, 0, 3);
	put_name(&m, "example.");
	put16(&m, 1);
	put16(&m, 1);
	put_opt(&m, 1232, 0);
	assert_int_equal(parse(&m, &info), WIRE_EFORMAT);
}

static void reject_trailing_bytes(void **state)
{
	(void)state;
	struct msg m;
	struct wire_info info;

	make_query(&m, "example.", 1, true, 1232, false);
	assert_int_equal(parse(&m, &info), 0);
	put8(&m, 0);
	assert_int_equal(parse(&m, &info), WIRE_EFORMAT);
	assert_true(info.has_question);
}

static void reject_bad_opt(void **state)
{
	(void)state;
	struct msg m;
	struct wire_info info;

	/* Two OPT RRs. */
	put_header(&m, 1, 0, 1, 0, 0, 2);
	put_name(&m, "example.");
	put16(&m, 1);
	put16(&m, 1);
	put_opt(&m, 1232, 0);
	put_opt(&m, 4096, 0);
	assert_int_equal(parse(&m, &info), WIRE_EFORMAT);

	/* OPT owned by a name other than the root. */
	put_header(&m, 1, 0, 1, 0, 0, 1);
	put_name(&m, "example.");
	put16(&m, 1);
	put16(&m, 1);
	put_ptr(&m, 12);
	put_rr_fixed(&m, WIRE_TYPE_OPT, 1232, 0, 0);
	assert_int_equal(parse(&m, &info), WIRE_EFORMAT);

	/* OPT in the answer section. */
	put_header(&m, 1, WIRE_FLAG_QR, 1, 1, 0, 0);
	put_name(&m, "example.");
	put16(&m, 1);
	put16(&m, 1);
	put_opt(&m, 1232, 0);
	assert_int_equal(parse(&m, &info), WIRE_EFORMAT);
	assert_false(info.has_edns);

	/* OPT in the authority section. */
	put_header(&m, 1, WIRE_FLAG_QR, 1, 0, 1, 0);
	put_name(&m, "example.");
	put16(&m, 1);
	put16(&m, 1);
	put_opt(&m, 1232, 0);
	assert_int_equal(parse(&m, &info), WIRE_EFORMAT);

	/* An OPT RR among other additional records is fine. */
	put_header(&m, 1, WIRE_FLAG_QR, 1, 0, 0, 3);
	put_name(&m, "example.");
	put16(&m, 1);
	put16(&m, 1);
	put_ptr(&m, 12);
	put_a_rdata(&m, 1);
	put_opt(&m, 1400, 0);
	put_ptr(&m, 12);
	put_a_rdata(&m, 2);
	assert_int_equal(parse(&m, &info), 0);
	assert_true(info.has_edns);
	assert_int_equal(info.edns_udp_size, 1400);
}

/* ---- helpers over parsed messages --------------------------------------- */

static void question_of(const char *name, unsigned type, unsigned cls, struct wire_question *q)
{
	struct msg m;
	struct wire_info info;

	put_header(&m, 1, 0, 1, 0, 0, 0);
	put_name(&m, name);
	put16(&m, type);
	put16(&m, cls);
	assert_int_equal(parse(&m, &info), 0);
	*q = info.q;
}

static void question_equal(void **state)
{
	(void)state;
	struct wire_question a, b;

	question_of("WWW.Example.", 1, 1, &a);
	question_of("www.example.", 1, 1, &b);
	assert_true(wire_question_equal(&a, &b));
	assert_true(wire_question_equal(&b, &a));
	assert_true(wire_question_equal(&a, &a));

	question_of("www.example.", 28, 1, &b);
	assert_false(wire_question_equal(&a, &b));
	question_of("www.example.", 1, 3, &b);
	assert_false(wire_question_equal(&a, &b));
	question_of("www.exampla.", 1, 1, &b);
	assert_false(wire_question_equal(&a, &b));
	question_of("www.example.com.", 1, 1, &b);
	assert_false(wire_question_equal(&a, &b));
	/* Same bytes, different label boundaries: "ab.c" vs "a.bc". */
	question_of("ab.c.", 1, 1, &a);
	question_of("a.bc.", 1, 1, &b);
	assert_false(wire_question_equal(&a, &b));
	/* Only ASCII letters fold: '[' (0x5b) is not '{' (0x7b). */
	question_of("[.", 1, 1, &a);
	question_of("{.", 1, 1, &b);
	assert_false(wire_question_equal(&a, &b));
	/* '@' (0x40) and '`' (0x60) sit just outside A-Z and a-z. */
	question_of("@.", 1, 1, &a);
	question_of("`.", 1, 1, &b);
	assert_false(wire_question_equal(&a, &b));
}

static void set_id(void **state)
{
	(void)state;
	struct msg m;
	struct wire_info info;

	make_query(&m, "example.", 1, false, 0, false);
	wire_set_id(m.b, 0xabcd);
	assert_int_equal(m.b[0], 0xab);
	assert_int_equal(m.b[1], 0xcd);
	assert_int_equal(parse(&m, &info), 0);
	assert_int_equal(info.id, 0xabcd);
	assert_int_equal(info.flags, WIRE_FLAG_RD);
	assert_int_equal(wire_read16(m.b), 0xabcd);
}

static void udp_limit(void **state)
{
	(void)state;
	struct msg m;
	struct wire_info info;

	make_query(&m, "example.", 1, false, 0, false);
	assert_int_equal(parse(&m, &info), 0);
	assert_int_equal(wire_udp_limit(&info), 512);

	make_query(&m, "example.", 1, true, 4096, false);
	assert_int_equal(parse(&m, &info), 0);
	assert_int_equal(wire_udp_limit(&info), 4096);

	make_query(&m, "example.", 1, true, 100, false);
	assert_int_equal(parse(&m, &info), 0);
	assert_int_equal(wire_udp_limit(&info), 512);

	make_query(&m, "example.", 1, true, 0, false);
	assert_int_equal(parse(&m, &info), 0);
	assert_int_equal(wire_udp_limit(&info), 512);

	make_query(&m, "example.", 1, true, 65535, false);
	assert_int_equal(parse(&m, &info), 0);
	assert_int_equal(wire_udp_limit(&info), 65535);
}

/* A response to www.example.com/A with @answers A records and an OPT. */
static void make_big_response(struct msg *m, unsigned answers, bool opt, unsigned udp_size)
{
	put_header(m, 0x4242, WIRE_FLAG_QR | WIRE_FLAG_RD | WIRE_FLAG_RA | WIRE_FLAG_AD, 1, answers,
		   1, opt ? 2 : 1);
	put_name(m, "www.example.com.");
	put16(m, 1);
	put16(m, 1);
	for (unsigned i = 0; i < answers; i++) {
		put_ptr(m, 12);
		put_a_rdata(m, i & 0xff);
	}
	put_ptr(m, 16);
	put_rr_fixed(m, 2, 1, 3600, 2);
	put_ptr(m, 16);
	put_ptr(m, 16);
	put_a_rdata(m, 53);
	if (opt)
		put_opt(m, udp_size, 0x8000);
}

static void truncate_response(void **state)
{
	(void)state;
	struct msg m;
	struct wire_info info, after;
	struct wire_question q;

	make_big_response(&m, 40, true, 4096);
	assert_true(m.len > 512);
	assert_int_equal(parse(&m, &info), 0);
	q = info.q;

	size_t len = wire_truncate(m.b, m.len, &info, false);
	assert_true(len <= 512);
	assert_int_equal(len, info.question_end);
	assert_int_equal(wire_parse(m.b, len, &after), 0);
	assert_true(after.flags & WIRE_FLAG_TC);
	assert_true(after.flags & WIRE_FLAG_QR);
	assert_true(after.flags & WIRE_FLAG_AD); /* other bits untouched */
	assert_int_equal(after.id, 0x4242);
	assert_int_equal(after.qdcount, 1);
	assert_int_equal(after.ancount, 0);
	assert_int_equal(after.nscount, 0);
	assert_int_equal(after.arcount, 0);
	assert_false(after.has_edns);
	assert_true(wire_question_equal(&q, &after.q));
	assert_memory_equal(after.q.name, q.name, q.name_len);
}

static void truncate_keep_opt(void **state)
{
	(void)state;
	struct msg m;
	struct wire_info info, after;

	make_big_response(&m, 40, true, 4096);
	assert_int_equal(parse(&m, &info), 0);
	size_t len = wire_truncate(m.b, m.len, &info, true);
	assert_int_equal(len, info.question_end + 11);
	assert_true(len <= 512);
	assert_int_equal(wire_parse(m.b, len, &after), 0);
	assert_true(after.flags & WIRE_FLAG_TC);
	assert_int_equal(after.ancount, 0);
	assert_int_equal(after.nscount, 0);
	assert_int_equal(after.arcount, 1);
	assert_true(after.has_edns);
	assert_int_equal(after.edns_udp_size, 4096);
	assert_int_equal(after.edns_ttl, 0x8000);
	assert_int_equal(after.opt_end - after.opt_start, 11);
	/* Root owner, type OPT, no options. */
	assert_int_equal(m.b[after.opt_start], 0);
	assert_int_equal(wire_read16(m.b + after.opt_start + 1), WIRE_TYPE_OPT);
	assert_int_equal(wire_read16(m.b + after.opt_start + 9), 0);

	/* keep_opt without an OPT in the response keeps none. */
	make_big_response(&m, 40, false, 0);
	assert_int_equal(parse(&m, &info), 0);
	len = wire_truncate(m.b, m.len, &info, true);
	assert_int_equal(len, info.question_end);
	assert_int_equal(wire_parse(m.b, len, &after), 0);
	assert_int_equal(after.arcount, 0);
	assert_false(after.has_edns);
}

static void truncate_longest_question(void **state)
{
	(void)state;
	struct msg m;
	struct wire_info info, after;

	/* The worst case for the 512-byte promise: a 255-byte name with OPT. */
	put_header(&m, 1, WIRE_FLAG_QR, 1, 10, 0, 1);
	put_long_name(&m, 3, 61);
	put16(&m, 16);
	put16(&m, 1);
	for (unsigned i = 0; i < 10; i++) {
		put_ptr(&m, 12);
		put_rr_fixed(&m, 16, 1, 0, 64);
		put8(&m, 63);
		for (unsigned j = 0; j < 63; j++)
			put8(&m, 't');
	}
	put_opt(&m, 1232, 0);
	assert_int_equal(parse(&m, &info), 0);
	size_t len = wire_truncate(m.b, m.len, &info, true);
	assert_true(len <= 512);
	assert_int_equal(wire_parse(m.b, len, &after), 0);
	assert_true(wire_question_equal(&info.q, &after.q));
}

/*
 * Compression pointers into the 12-byte header: the header words they would
 * read (ID, counts, TC) are exactly what the forwarder rewrites, so such a
 * name would change under wire_set_id/wire_truncate/wire_strip_opt.  The
 * parser refuses them (found by fuzz_wire_parse, corpus crash_ptr_into_*).
 */
/* A pointer may only lead to labels that end before the pointing name.
 * Here the second answer's owner points into the first answer's RDATA at
 * a 5-byte label of which only 2 bytes lie before the pointer: the rest,
 * and further labels, are read from the second record itself. */
static void reject_pointer_labels_running_forward(void **state)
{
	(void)state;
	struct msg m;
	struct wire_info info;

	put_header(&m, 7, WIRE_FLAG_QR, 1, 2, 0, 0);
	put_name(&m, "a.");
	put16(&m, 1);
	put16(&m, 1);
	put8(&m, 0); /* first answer: root owner, TXT */
	put_rr_fixed(&m, 16, 1, 60, 3);
	size_t target = m.len;
	put8(&m, 5);
	put8(&m, 'x');
	put8(&m, 'y');
	put_ptr(&m, target); /* second answer's owner */
	put_rr_fixed(&m, 1, 1, 60, 4);
	put32(&m, 0x7f000001);
	assert_int_equal(parse(&m, &info), WIRE_EFORMAT);
}

static void reject_pointer_into_header(void **state)
{
	(void)state;
	struct msg m;
	struct wire_info info;

	for (unsigned target = 0; target < WIRE_HEADER_LEN; target++) {
		/* Byte 3 is 0 (no RA, NOERROR), so a pointer to offset 5 reads as a
		 * valid name: labels over QDCOUNT/ANCOUNT, ended by NSCOUNT. */
		put_header(&m, 1, WIRE_FLAG_QR, 1, 1, 0, 0);
		put_ptr(&m, target);
		put16(&m, 1);
		put16(&m, 1);
		put8(&m, 0);
		put_a_rdata(&m, 1);
		assert_int_equal(parse(&m, &info), WIRE_EFORMAT);
		assert_false(info.has_question);

		/* The same from an answer's owner name. */
		put_header(&m, 0x0000, WIRE_FLAG_QR, 1, 1, 0, 0);
		put_name(&m, "example.");
		put16(&m, 1);
		put16(&m, 1);
		put_ptr(&m, target);
		put_a_rdata(&m, 1);
		assert_int_equal(parse(&m, &info), WIRE_EFORMAT);
		assert_true(info.has_question);
	}
	/* The first byte after the header is the lowest valid target. */
	put_header(&m, 1, WIRE_FLAG_QR, 1, 1, 0, 0);
	put_name(&m, "example.");
	put16(&m, 1);
	put16(&m, 1);
	put_ptr(&m, WIRE_HEADER_LEN);
	put_a_rdata(&m, 1);
	assert_int_equal(parse(&m, &info), 0);
}

static void truncate_unparsed_is_noop(void **state)
{
	(void)state;
	struct msg m;
	struct wire_info info;

	put_header(&m, 1, WIRE_FLAG_QR, 0, 0, 0, 0);
	assert_int_equal(parse(&m, &info), WIRE_EQDCOUNT);
	uint8_t copy[12];
	memcpy(copy, m.b, sizeof(copy));
	assert_int_equal(wire_truncate(m.b, m.len, &info, true), m.len);
	assert_memory_equal(copy, m.b, sizeof(copy));
}

static void strip_opt(void **state)
{
	(void)state;
	struct msg m;
	struct wire_info info, after;

	/* The usual layout: the OPT last. */
	put_header(&m, 9, WIRE_FLAG_QR | WIRE_FLAG_RA, 1, 1, 0, 2);
	put_name(&m, "example.");
	put16(&m, 1);
	put16(&m, 1);
	put_ptr(&m, 12);
	put_a_rdata(&m, 1);
	put_ptr(&m, 12);
	put_a_rdata(&m, 2);
	size_t opt = m.len;
	put_opt(&m, 1232, 0x8000);
	assert_int_equal(parse(&m, &info), 0);
	size_t len = wire_strip_opt(m.b, m.len, &info);
	assert_int_equal(len, m.len - 11);
	assert_int_equal(len, opt);
	assert_int_equal(wire_parse(m.b, len, &after), 0);
	assert_false(after.has_edns);
	assert_int_equal(after.arcount, 1);
	assert_int_equal(after.ancount, 1);
	assert_int_equal(m.b[len - 1], 2); /* the glue before the OPT is intact */

	/* No OPT: nothing changes. */
	make_query(&m, "example.", 1, false, 0, false);
	assert_int_equal(parse(&m, &info), 0);
	assert_int_equal(wire_strip_opt(m.b, m.len, &info), m.len);
	assert_int_equal(wire_read16(m.b + 10), 0);
}

/*
 * An OPT that is not the last record: moving the records after it back
 * would leave their compression pointers aimed at the old offsets (an early
 * version turned ns1.example. into "." this way).  The contract is now to
 * cut the message at the OPT; what remains must parse and keep its names.
 */
static void strip_opt_not_last(void **state)
{
	(void)state;
	struct msg m;
	struct wire_info info, after;

	put_header(&m, 9, WIRE_FLAG_QR | WIRE_FLAG_RA, 1, 0, 0, 4);
	put_name(&m, "example.");
	put16(&m, 1);
	put16(&m, 1);
	size_t first = m.len;
	put8(&m, 2);
	put_raw(&m, "ns", 2);
	put_ptr(&m, 12);
	put_a_rdata(&m, 7);
	size_t opt = m.len;
	put_opt(&m, 1232, 0);
	size_t ns1 = m.len;
	put8(&m, 3);
	put_raw(&m, "ns1", 3);
	put_ptr(&m, 12);
	put_a_rdata(&m, 1);
	put_ptr(&m, ns1);
	put_a_rdata(&m, 2);
	assert_int_equal(parse(&m, &info), 0);
	uint8_t before_name[WIRE_MAX_NAME], after_name[WIRE_MAX_NAME];
	size_t before_len = expand_name(m.b, m.len, first, before_name);
	assert_int_equal(before_len, 12); /* ns.example. */

	size_t len = wire_strip_opt(m.b, m.len, &info);
	assert_int_equal(len, opt);
	assert_int_equal(wire_parse(m.b, len, &after), 0);
	assert_false(after.has_edns);
	assert_int_equal(after.arcount, 1); /* the record before the OPT */
	size_t after_len = expand_name(m.b, len, first, after_name);
	assert_int_equal(after_len, before_len);
	assert_memory_equal(after_name, before_name, before_len);

	/* OPT first in the section: nothing of it is left. */
	put_header(&m, 9, WIRE_FLAG_QR, 1, 0, 0, 2);
	put_name(&m, "example.");
	put16(&m, 1);
	put16(&m, 1);
	opt = m.len;
	put_opt(&m, 4096, 0);
	put_ptr(&m, 12);
	put_a_rdata(&m, 1);
	assert_int_equal(parse(&m, &info), 0);
	len = wire_strip_opt(m.b, m.len, &info);
	assert_int_equal(len, opt);
	assert_int_equal(wire_parse(m.b, len, &after), 0);
	assert_int_equal(after.arcount, 0);
}

/* ---- synthesized replies ------------------------------------------------ */

static void make_reply_servfail_ede(void **state)
{
	(void)state;
	struct msg m;
	struct wire_info query, reply;
	uint8_t out[512];

	make_query(&m, "www.example.", 1, true, 4096, true);
	set16(&m, 2, WIRE_FLAG_RD | WIRE_FLAG_CD | WIRE_FLAG_AD);
	assert_int_equal(parse(&m, &query), 0);
	size_t len =
	    wire_make_reply(&query, WIRE_RCODE_SERVFAIL, WIRE_EDE_NETWORK_ERROR, out, sizeof(out));
	assert_true(len > WIRE_HEADER_LEN);
	assert_int_equal(wire_parse(out, len, &reply), 0);
	assert_int_equal(wire_rcode(out), WIRE_RCODE_SERVFAIL);
	assert_int_equal(reply.id, 0x1234);
	assert_true(reply.flags & WIRE_FLAG_QR);
	assert_true(reply.flags & WIRE_FLAG_RA);
	assert_true(reply.flags & WIRE_FLAG_RD);
	assert_true(reply.flags & WIRE_FLAG_CD);
	assert_false(reply.flags & WIRE_FLAG_AA);
	assert_false(reply.flags & WIRE_FLAG_TC);
	assert_false(reply.flags & WIRE_FLAG_AD); /* a failure authenticates nothing */
	assert_int_equal(wire_opcode(reply.flags), 0);
	assert_int_equal(reply.ancount, 0);
	assert_int_equal(reply.nscount, 0);
	assert_int_equal(reply.arcount, 1);
	assert_true(wire_question_equal(&query.q, &reply.q));
	assert_true(reply.has_edns);
	assert_true(reply.edns_udp_size >= 512);
	assert_true(reply.edns_ttl & 0x8000);		   /* DO mirrored */
	assert_int_equal(reply.edns_ttl & 0xffff7fffu, 0); /* version 0, no ext rcode */
	/* RDATA: one option, code 15 (EDE), length 2, the info code. */
	const uint8_t *rdata = out + reply.opt_start + 11;
	assert_int_equal(wire_read16(out + reply.opt_start + 9), 6);
	assert_int_equal(wire_read16(rdata), 15);
	assert_int_equal(wire_read16(rdata + 2), 2);
	assert_int_equal(wire_read16(rdata + 4), WIRE_EDE_NETWORK_ERROR);
	assert_int_equal(reply.opt_end, len);
}

static void make_reply_variants(void **state)
{
	(void)state;
	struct msg m;
	struct wire_info query, reply;
	uint8_t out[512];
	size_t len;

	/* No EDNS in the query: no OPT, the EDE is dropped. */
	make_query(&m, "example.", 28, false, 0, false);
	assert_int_equal(parse(&m, &query), 0);
	len = wire_make_reply(&query, WIRE_RCODE_REFUSED, WIRE_EDE_PROHIBITED, out, sizeof(out));
	assert_int_equal(len, m.len);
	assert_int_equal(wire_parse(out, len, &reply), 0);
	assert_false(reply.has_edns);
	assert_int_equal(reply.arcount, 0);
	assert_int_equal(wire_rcode(out), WIRE_RCODE_REFUSED);

	/* EDNS without DO and WIRE_EDE_NONE: a bare OPT. */
	make_query(&m, "example.", 28, true, 1232, false);
	assert_int_equal(parse(&m, &query), 0);
	len = wire_make_reply(&query, WIRE_RCODE_SERVFAIL, WIRE_EDE_NONE, out, sizeof(out));
	assert_int_equal(wire_parse(out, len, &reply), 0);
	assert_true(reply.has_edns);
	assert_false(reply.edns_ttl & 0x8000);
	assert_int_equal(reply.opt_end - reply.opt_start, 11);

	/* Opcode kept (NOTIMP for an UPDATE). */
	make_query(&m, "example.", 6, false, 0, false);
	set16(&m, 2, 5u << 11);
	assert_int_equal(parse(&m, &query), 0);
	len = wire_make_reply(&query, WIRE_RCODE_NOTIMP, WIRE_EDE_NONE, out, sizeof(out));
	assert_int_equal(wire_parse(out, len, &reply), 0);
	assert_int_equal(wire_opcode(reply.flags), 5);
	assert_false(reply.flags & WIRE_FLAG_RD);
	assert_int_equal(wire_rcode(out), WIRE_RCODE_NOTIMP);
}

static void make_reply_formerr_without_question(void **state)
{
	(void)state;
	struct msg m;
	struct wire_info query;
	uint8_t out[512];

	put_header(&m, 0x5151, WIRE_FLAG_RD, 1, 0, 0, 0);
	put8(&m, 0x40); /* reserved label type */
	put8(&m, 0);
	put16(&m, 1);
	put16(&m, 1);
	assert_int_equal(parse(&m, &query), WIRE_EFORMAT);
	assert_true(query.has_header);
	assert_false(query.has_question);
	size_t len = wire_make_reply(&query, WIRE_RCODE_FORMERR, WIRE_EDE_NONE, out, sizeof(out));
	assert_int_equal(len, WIRE_HEADER_LEN);
	assert_int_equal(wire_read16(out), 0x5151);
	assert_int_equal(wire_read16(out + 2),
			 WIRE_FLAG_QR | WIRE_FLAG_RA | WIRE_FLAG_RD | WIRE_RCODE_FORMERR);
	assert_int_equal(wire_read16(out + 4), 0);
	assert_int_equal(wire_read16(out + 6), 0);
	assert_int_equal(wire_read16(out + 8), 0);
	assert_int_equal(wire_read16(out + 10), 0);

	/* QDCOUNT 2: FORMERR without a question either. */
	put_header(&m, 0x5152, 0, 2, 0, 0, 0);
	assert_int_equal(parse(&m, &query), WIRE_EQDCOUNT);
	len = wire_make_reply(&query, WIRE_RCODE_FORMERR, WIRE_EDE_NONE, out, sizeof(out));
	assert_int_equal(len, WIRE_HEADER_LEN);
	assert_int_equal(wire_rcode(out), WIRE_RCODE_FORMERR);

	/* Nothing to answer without a header. */
	assert_int_equal(wire_parse(m.b, 5, &query), WIRE_ESHORT);
	assert_int_equal(
	    wire_make_reply(&query, WIRE_RCODE_FORMERR, WIRE_EDE_NONE, out, sizeof(out)), 0);
}

static void make_reply_capacity(void **state)
{
	(void)state;
	struct msg m;
	struct wire_info query;
	uint8_t out[512];

	make_query(&m, "www.example.", 1, true, 1232, false);
	assert_int_equal(parse(&m, &query), 0);
	size_t need =
	    wire_make_reply(&query, WIRE_RCODE_SERVFAIL, WIRE_EDE_OTHER, out, sizeof(out));
	assert_int_equal(need, m.len + 6);
	for (size_t cap = 0; cap < need; cap++) {
		memset(out, 0xee, sizeof(out));
		assert_int_equal(
		    wire_make_reply(&query, WIRE_RCODE_SERVFAIL, WIRE_EDE_OTHER, out, cap), 0);
		for (size_t i = cap; i < sizeof(out); i++)
			assert_int_equal(out[i], 0xee); /* nothing written past cap */
	}
	assert_int_equal(wire_make_reply(&query, WIRE_RCODE_SERVFAIL, WIRE_EDE_OTHER, out, need),
			 need);
}

/* ---- text --------------------------------------------------------------- */

static void name_to_text(void **state)
{
	(void)state;
	char out[300];
	static const uint8_t www[] = "\3www\7example\3com";
	static const uint8_t odd[] = "\3a.b\2\\\x01\1 ";

	wire_name_to_text(www, sizeof(www), out, sizeof(out));
	assert_string_equal(out, "www.example.com.");
	wire_name_to_text((const uint8_t *)"", 1, out, sizeof(out));
	assert_string_equal(out, ".");
	wire_name_to_text(NULL, 0, out, sizeof(out));
	assert_string_equal(out, ".");
	wire_name_to_text(odd, sizeof(odd), out, sizeof(out));
	assert_string_equal(out, "a\\046b.\\092\\001.\\032.");

	/* Small buffers: truncated with "...", never written past cap. */
	for (size_t cap = 0; cap < 20; cap++) {
		char buf[32];
		memset(buf, 'X', sizeof(buf));
		wire_name_to_text(www, sizeof(www), buf, cap);
		for (size_t i = cap; i < sizeof(buf); i++)
			assert_int_equal(buf[i], 'X');
		if (cap == 0)
			continue;
		assert_non_null(memchr(buf, '\0', cap));
		if (cap >= 5 && cap <= sizeof("www.example.com.") - 1)
			assert_non_null(strstr(buf, "..."));
	}
	wire_name_to_text(www, sizeof(www), out, 64);
	assert_string_equal(out, "www.example.com.");

	/* The longest name, all escaped, into a small buffer. */
	uint8_t longest[255];
	memset(longest, 0x01, sizeof(longest));
	for (size_t i = 0; i + 64 < sizeof(longest); i += 64)
		longest[i] = 63;
	longest[192] = 61;
	longest[254] = 0;
	char small[64];
	memset(small, 'X', sizeof(small));
	wire_name_to_text(longest, sizeof(longest), small, 40);
	assert_non_null(memchr(small, '\0', 40));
	for (size_t i = 40; i < sizeof(small); i++)
		assert_int_equal(small[i], 'X');
}

static void type_and_rcode_text(void **state)
{
	(void)state;
	char buf[16];

	assert_string_equal(wire_type_to_text(1, buf, sizeof(buf)), "A");
	assert_string_equal(wire_type_to_text(28, buf, sizeof(buf)), "AAAA");
	assert_string_equal(wire_type_to_text(65, buf, sizeof(buf)), "HTTPS");
	assert_string_equal(wire_type_to_text(41, buf, sizeof(buf)), "OPT");
	assert_string_equal(wire_type_to_text(999, buf, sizeof(buf)), "TYPE999");
	assert_string_equal(wire_type_to_text(65535, buf, sizeof(buf)), "TYPE65535");
	char tiny[5];
	assert_string_equal(wire_type_to_text(65535, tiny, sizeof(tiny)), "TYPE");

	assert_string_equal(wire_rcode_to_text(0, buf, sizeof(buf)), "NOERROR");
	assert_string_equal(wire_rcode_to_text(1, buf, sizeof(buf)), "FORMERR");
	assert_string_equal(wire_rcode_to_text(2, buf, sizeof(buf)), "SERVFAIL");
	assert_string_equal(wire_rcode_to_text(3, buf, sizeof(buf)), "NXDOMAIN");
	assert_string_equal(wire_rcode_to_text(4, buf, sizeof(buf)), "NOTIMP");
	assert_string_equal(wire_rcode_to_text(5, buf, sizeof(buf)), "REFUSED");
	assert_string_equal(wire_rcode_to_text(9, buf, sizeof(buf)), "RCODE9");
	assert_string_equal(wire_rcode_to_text(15, buf, sizeof(buf)), "RCODE15");
}

/* Zone names from text, and names at or below them (forward zones). */
static void name_from_text_and_zones(void **state)
{
	(void)state;
	uint8_t zone[WIRE_MAX_NAME], name[WIRE_MAX_NAME];
	char long_label[70];

	assert_int_equal(wire_name_from_text("Home.ARPA", zone), 11);
	assert_memory_equal(zone, "\x04home\x04" "arpa\x00", 11);
	assert_int_equal(wire_name_from_text("home.arpa.", name), 11);
	assert_memory_equal(zone, name, 11);
	assert_int_equal(wire_name_from_text(".", zone), 1);
	assert_int_equal(zone[0], 0);
	assert_int_equal(wire_name_from_text("", zone), 0);
	assert_int_equal(wire_name_from_text("a..b", zone), 0);
	memset(long_label, 'a', 64);
	long_label[64] = '\0';
	assert_int_equal(wire_name_from_text(long_label, zone), 0);

	size_t zl = wire_name_from_text("home.arpa", zone);
	size_t nl = wire_name_from_text("printer.home.arpa", name);
	assert_true(wire_name_in_zone(name, nl, zone, zl));
	name[1] = 'P'; /* case does not matter in the name */
	assert_true(wire_name_in_zone(name, nl, zone, zl));
	assert_true(wire_name_in_zone(zone, zl, zone, zl)); /* the apex itself */
	nl = wire_name_from_text("xhome.arpa", name);
	assert_false(wire_name_in_zone(name, nl, zone, zl)); /* not at a label boundary */
	nl = wire_name_from_text("arpa", name);
	assert_false(wire_name_in_zone(name, nl, zone, zl));
	nl = wire_name_from_text("home.arpa.example", name);
	assert_false(wire_name_in_zone(name, nl, zone, zl));
	zl = wire_name_from_text(".", zone);
	assert_true(wire_name_in_zone(name, nl, zone, zl)); /* everything is below the root */
	/* A label that looks like the zone's bytes at a non-boundary offset. */
	zl = wire_name_from_text("b.c", zone);
	nl = wire_name_from_text("x\001b.c", name); /* label "x\1b" then "c" */
	assert_false(wire_name_in_zone(name, nl, zone, zl));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(parse_plain_query),
		cmocka_unit_test(parse_root_query),
		cmocka_unit_test(parse_query_edns),
		cmocka_unit_test(parse_edns_with_options),
		cmocka_unit_test(parse_response_compressed),
		cmocka_unit_test(reject_short),
		cmocka_unit_test(reject_qdcount),
		cmocka_unit_test(reject_oversized),
		cmocka_unit_test(reject_pointer_loops),
		cmocka_unit_test(reject_pointer_into_header),
		cmocka_unit_test(reject_pointer_labels_running_forward),
		cmocka_unit_test(reject_label_types),
		cmocka_unit_test(reject_long_names),
		cmocka_unit_test(reject_truncated_records),
		cmocka_unit_test(reject_trailing_bytes),
		cmocka_unit_test(reject_bad_opt),
		cmocka_unit_test(question_equal),
		cmocka_unit_test(set_id),
		cmocka_unit_test(udp_limit),
		cmocka_unit_test(truncate_response),
		cmocka_unit_test(truncate_keep_opt),
		cmocka_unit_test(truncate_longest_question),
		cmocka_unit_test(truncate_unparsed_is_noop),
		cmocka_unit_test(strip_opt),
		cmocka_unit_test(strip_opt_not_last),
		cmocka_unit_test(make_reply_servfail_ede),
		cmocka_unit_test(make_reply_variants),
		cmocka_unit_test(make_reply_formerr_without_question),
		cmocka_unit_test(make_reply_capacity),
		cmocka_unit_test(name_to_text),
		cmocka_unit_test(type_and_rcode_text),
		cmocka_unit_test(name_from_text_and_zones),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
