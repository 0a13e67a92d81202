/*
 * Unit tests for the lib/wire helpers around caching and the upstream hop:
 * wire_cache_ttl() (how long an answer may be kept, RFC 2308),
 * wire_rewrite_ttls() (ageing a cached answer), wire_make_upstream_query()
 * (our own OPT, the client's identifying options removed, padding) and
 * wire_filter_opt() (hop-by-hop options removed from an answer).  Messages
 * are built byte by byte, as in test_wire.c, and results are read back with
 * wire_parse() plus a small independent walk over the OPT's options.
 */
#include "lib/wire.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "tests/unit/msg_builder.h"

static int parse(const struct msg *m, struct wire_info *info)
{
	return wire_parse(m->b, m->len, info);
}

/* ---- records ------------------------------------------------------------ */

enum { QNAME = 12 }; /* offset of the question name, the usual pointer target */

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)wire_read16(p) << 16 | wire_read16(p + 2);
}

/* Header and question "example. A IN" (or @name). */
static void start(struct msg *m, unsigned flags, unsigned an, unsigned ns, unsigned ar,
		  const char *name)
{
	put_header(m, 0x4242, flags, 1, an, ns, ar);
	put_name(m, name);
	put16(m, 1);
	put16(m, WIRE_CLASS_IN);
}

/* An A record owned by the question name; returns its TTL field's offset. */
static size_t put_a(struct msg *m, uint32_t ttl, unsigned last_octet)
{
	put_ptr(m, QNAME);
	size_t at = m->len + 4;
	put_rr_fixed(m, 1, WIRE_CLASS_IN, ttl, 4);
	put8(m, 192);
	put8(m, 0);
	put8(m, 2);
	put8(m, last_octet);
	return at;
}

/* An NS record for the question name (RDATA: a pointer to it). */
static size_t put_ns(struct msg *m, uint32_t ttl)
{
	put_ptr(m, QNAME);
	size_t at = m->len + 4;
	put_rr_fixed(m, 2, WIRE_CLASS_IN, ttl, 2);
	put_ptr(m, QNAME);
	return at;
}

/* An SOA for the question name; names uncompressed unless @compress. */
static size_t put_soa(struct msg *m, uint32_t ttl, uint32_t minimum, bool compress)
{
	put_ptr(m, QNAME);
	size_t at = m->len + 4;
	put_rr_fixed(m, 6, WIRE_CLASS_IN, ttl, 0);
	size_t rdata = m->len;
	if (compress) {
		put_ptr(m, QNAME);
		put_ptr(m, QNAME);
	} else {
		put_name(m, "ns1.example.");
		put_name(m, "hostmaster.example.");
	}
	put32(m, 2024010101); /* serial */
	put32(m, 7200);	      /* refresh */
	put32(m, 3600);	      /* retry */
	put32(m, 1209600);    /* expire */
	put32(m, minimum);
	set16(m, rdata - 2, (unsigned)(m->len - rdata));
	return at;
}

/* An OPT: root owner, payload size, TTL field, then options added with
 * put_option() (which patch RDLENGTH).  Returns the OPT's offset. */
static size_t put_opt(struct msg *m, unsigned udp_size, uint32_t ttl)
{
	size_t at = m->len;
	put8(m, 0);
	put_rr_fixed(m, WIRE_TYPE_OPT, udp_size, ttl, 0);
	return at;
}

static void put_option(struct msg *m, size_t opt, unsigned code, const void *data, unsigned len)
{
	put16(m, code);
	put16(m, len);
	if (len)
		put_raw(m, data, len);
	set16(m, opt + 9, (unsigned)(m->len - opt - 11));
}

/* The options of the parsed message's OPT, read independently of wire.c. */
enum { MAX_OPTIONS = 32 };

struct options {
	unsigned n;
	uint16_t code[MAX_OPTIONS];
	uint16_t len[MAX_OPTIONS];
	const uint8_t *data[MAX_OPTIONS];
};

static void read_options(const uint8_t *msg, size_t len, const struct wire_info *info,
			 struct options *o)
{
	memset(o, 0, sizeof(*o));
	assert_true(info->has_edns);
	assert_true(info->opt_end <= len);
	assert_int_equal(msg[info->opt_start], 0); /* a plain root owner */
	size_t rdlen = wire_read16(msg + info->opt_start + 9);
	assert_int_equal(info->opt_start + 11 + rdlen, info->opt_end);
	const uint8_t *p = msg + info->opt_start + 11;
	for (size_t off = 0; off < rdlen;) {
		assert_true(o->n < MAX_OPTIONS);
		assert_true(rdlen - off >= 4);
		o->code[o->n] = wire_read16(p + off);
		o->len[o->n] = wire_read16(p + off + 2);
		o->data[o->n] = p + off + 4;
		assert_true(rdlen - off - 4 >= o->len[o->n]);
		off += 4u + o->len[o->n];
		o->n++;
	}
}

static unsigned count_option(const struct options *o, uint16_t code)
{
	unsigned n = 0;

	for (unsigned i = 0; i < o->n; i++)
		n += o->code[i] == code;
	return n;
}

/* ---- wire_cache_ttl ----------------------------------------------------- */

static void cache_ttl_positive(void **state)
{
	(void)state;
	struct msg m;
	struct wire_info info;
	uint32_t ttl = 12345;

	/* The smallest TTL in every section; the OPT's TTL field (0 here) is
	 * flags, not a TTL. */
	start(&m, WIRE_FLAG_QR | WIRE_FLAG_RA, 2, 1, 2, "example.");
	put_a(&m, 300, 1);
	put_a(&m, 100, 2);
	put_ns(&m, 200);
	put_a(&m, 150, 3);
	put_opt(&m, 1232, 0);
	assert_int_equal(parse(&m, &info), 0);
	assert_int_equal(wire_cache_ttl(m.b, m.len, &info, &ttl), 0);
	assert_int_equal(ttl, 100);

	/* The minimum may sit in the additional section. */
	start(&m, WIRE_FLAG_QR | WIRE_FLAG_RA, 1, 0, 2, "example.");
	put_a(&m, 3600, 1);
	put_opt(&m, 1232, 0x8000);
	put_a(&m, 40, 2);
	assert_int_equal(parse(&m, &info), 0);
	assert_int_equal(wire_cache_ttl(m.b, m.len, &info, &ttl), 0);
	assert_int_equal(ttl, 40);

	/* Only an answer and an OPT: the OPT does not count. */
	start(&m, WIRE_FLAG_QR | WIRE_FLAG_RA | WIRE_FLAG_AD, 1, 0, 1, "example.");
	put_a(&m, 86400, 1);
	put_opt(&m, 4096, 0);
	assert_int_equal(parse(&m, &info), 0);
	assert_int_equal(wire_cache_ttl(m.b, m.len, &info, &ttl), 0);
	assert_int_equal(ttl, 86400);

	/* A zero TTL is zero. */
	start(&m, WIRE_FLAG_QR, 2, 0, 0, "example.");
	put_a(&m, 60, 1);
	put_a(&m, 0, 2);
	assert_int_equal(parse(&m, &info), 0);
	assert_int_equal(wire_cache_ttl(m.b, m.len, &info, &ttl), 0);
	assert_int_equal(ttl, 0);

	/* The largest valid TTL (2^31 - 1). */
	start(&m, WIRE_FLAG_QR, 1, 0, 0, "example.");
	put_a(&m, 0x7fffffff, 1);
	assert_int_equal(parse(&m, &info), 0);
	assert_int_equal(wire_cache_ttl(m.b, m.len, &info, &ttl), 0);
	assert_int_equal(ttl, 0x7fffffff);

	/* A positive answer with an SOA in authority is still positive. */
	start(&m, WIRE_FLAG_QR, 1, 1, 0, "example.");
	put_a(&m, 500, 1);
	put_soa(&m, 900, 30, true);
	assert_int_equal(parse(&m, &info), 0);
	assert_int_equal(wire_cache_ttl(m.b, m.len, &info, &ttl), 0);
	assert_int_equal(ttl, 500);
}

/*
 * RFC 2181 §8: a TTL with the most significant bit set is to be treated as
 * if the whole value were zero -- not as its low 31 bits.
 */
static void cache_ttl_top_bit_is_zero(void **state)
{
	(void)state;
	struct msg m;
	struct wire_info info;
	uint32_t ttl = 12345;

	start(&m, WIRE_FLAG_QR | WIRE_FLAG_RA, 2, 0, 0, "example.");
	put_a(&m, 3600, 1);
	put_a(&m, 0x80000000u | 600, 2);
	assert_int_equal(parse(&m, &info), 0);
	assert_int_equal(wire_cache_ttl(m.b, m.len, &info, &ttl), 0);
	assert_int_equal(ttl, 0);

	start(&m, WIRE_FLAG_QR | WIRE_FLAG_RA, 1, 0, 0, "example.");
	put_a(&m, 0xffffffffu, 1);
	assert_int_equal(parse(&m, &info), 0);
	assert_int_equal(wire_cache_ttl(m.b, m.len, &info, &ttl), 0);
	assert_int_equal(ttl, 0);
}

static void cache_ttl_negative(void **state)
{
	(void)state;
	struct msg m;
	struct wire_info info;
	uint32_t ttl = 12345;

	/* NXDOMAIN: min(SOA TTL, MINIMUM), MINIMUM the smaller. */
	start(&m, WIRE_FLAG_QR | WIRE_FLAG_RA | WIRE_RCODE_NXDOMAIN, 0, 1, 0, "nx.example.");
	put_soa(&m, 900, 60, false);
	assert_int_equal(parse(&m, &info), 0);
	assert_int_equal(wire_cache_ttl(m.b, m.len, &info, &ttl), 0);
	assert_int_equal(ttl, 60);

	/* ... the SOA's TTL the smaller. */
	start(&m, WIRE_FLAG_QR | WIRE_FLAG_RA | WIRE_RCODE_NXDOMAIN, 0, 1, 1, "nx.example.");
	put_soa(&m, 30, 3600, true);
	put_opt(&m, 1232, 0);
	assert_int_equal(parse(&m, &info), 0);
	assert_int_equal(wire_cache_ttl(m.b, m.len, &info, &ttl), 0);
	assert_int_equal(ttl, 30);

	/* NODATA (NOERROR, no answers) works the same. */
	start(&m, WIRE_FLAG_QR | WIRE_FLAG_RA, 0, 1, 1, "example.");
	put_soa(&m, 7200, 300, false);
	put_opt(&m, 1232, 0x8000);
	assert_int_equal(parse(&m, &info), 0);
	assert_int_equal(wire_cache_ttl(m.b, m.len, &info, &ttl), 0);
	assert_int_equal(ttl, 300);

	/* NXDOMAIN after a CNAME in the answer: still negative, the SOA rules. */
	start(&m, WIRE_FLAG_QR | WIRE_FLAG_RA | WIRE_RCODE_NXDOMAIN, 1, 1, 0, "alias.example.");
	put_ptr(&m, QNAME);
	put_rr_fixed(&m, 5, WIRE_CLASS_IN, 3600, 2);
	put_ptr(&m, QNAME + 6); /* "example." inside the question name */
	put_soa(&m, 120, 45, true);
	assert_int_equal(parse(&m, &info), 0);
	assert_int_equal(wire_cache_ttl(m.b, m.len, &info, &ttl), 0);
	assert_int_equal(ttl, 45);

	/* The first SOA in authority counts, next to other records. */
	start(&m, WIRE_FLAG_QR, 0, 2, 0, "example.");
	put_ns(&m, 5);
	put_soa(&m, 600, 600, true);
	assert_int_equal(parse(&m, &info), 0);
	assert_int_equal(wire_cache_ttl(m.b, m.len, &info, &ttl), 0);
	assert_int_equal(ttl, 600);
}

static void cache_ttl_uncacheable(void **state)
{
	(void)state;
	struct msg m;
	struct wire_info info;
	uint32_t ttl;

	/* Negative without an SOA (RFC 2308 §5). */
	start(&m, WIRE_FLAG_QR | WIRE_RCODE_NXDOMAIN, 0, 0, 0, "nx.example.");
	assert_int_equal(parse(&m, &info), 0);
	assert_int_equal(wire_cache_ttl(m.b, m.len, &info, &ttl), -1);

	start(&m, WIRE_FLAG_QR | WIRE_RCODE_NXDOMAIN, 0, 0, 1, "nx.example.");
	put_opt(&m, 1232, 0);
	assert_int_equal(parse(&m, &info), 0);
	assert_int_equal(wire_cache_ttl(m.b, m.len, &info, &ttl), -1);

	/* NODATA with only an NS (a referral) in authority. */
	start(&m, WIRE_FLAG_QR, 0, 1, 0, "example.");
	put_ns(&m, 3600);
	assert_int_equal(parse(&m, &info), 0);
	assert_int_equal(wire_cache_ttl(m.b, m.len, &info, &ttl), -1);

	/* An SOA in the additional section is not an authority SOA. */
	start(&m, WIRE_FLAG_QR, 0, 0, 1, "example.");
	put_soa(&m, 300, 300, true);
	assert_int_equal(parse(&m, &info), 0);
	assert_int_equal(wire_cache_ttl(m.b, m.len, &info, &ttl), -1);

	/* Truncated, even with answers in it. */
	start(&m, WIRE_FLAG_QR | WIRE_FLAG_TC, 1, 0, 0, "example.");
	put_a(&m, 300, 1);
	assert_int_equal(parse(&m, &info), 0);
	assert_int_equal(wire_cache_ttl(m.b, m.len, &info, &ttl), -1);

	start(&m, WIRE_FLAG_QR | WIRE_FLAG_TC | WIRE_RCODE_NXDOMAIN, 0, 1, 0, "example.");
	put_soa(&m, 300, 300, true);
	assert_int_equal(parse(&m, &info), 0);
	assert_int_equal(wire_cache_ttl(m.b, m.len, &info, &ttl), -1);

	/* Other rcodes, with or without records. */
	static const unsigned rcodes[] = { WIRE_RCODE_FORMERR, WIRE_RCODE_SERVFAIL,
					   WIRE_RCODE_NOTIMP, WIRE_RCODE_REFUSED, 9 };
	for (size_t i = 0; i < sizeof(rcodes) / sizeof(rcodes[0]); i++) {
		start(&m, WIRE_FLAG_QR | WIRE_FLAG_RA | rcodes[i], 0, 0, 0, "example.");
		assert_int_equal(parse(&m, &info), 0);
		assert_int_equal(wire_cache_ttl(m.b, m.len, &info, &ttl), -1);

		start(&m, WIRE_FLAG_QR | WIRE_FLAG_RA | rcodes[i], 1, 1, 0, "example.");
		put_a(&m, 300, 1);
		put_soa(&m, 300, 300, true);
		assert_int_equal(parse(&m, &info), 0);
		assert_int_equal(wire_cache_ttl(m.b, m.len, &info, &ttl), -1);
	}
}

/* ---- wire_rewrite_ttls -------------------------------------------------- */

/* Answers 300 and 10, an NS of 3600 in authority, glue of 50 and an OPT
 * whose TTL field carries extended rcode 1, version 0 and DO. */
struct aged {
	struct msg m;
	struct wire_info info;
	size_t ttl_at[4];
	size_t opt;
};

enum { OPT_FLAGS = 0x01008000 };

static void make_aged(struct aged *a)
{
	struct msg *m = &a->m;

	start(m, WIRE_FLAG_QR | WIRE_FLAG_RA, 2, 1, 2, "example.");
	a->ttl_at[0] = put_a(m, 300, 1);
	a->ttl_at[1] = put_a(m, 10, 2);
	a->ttl_at[2] = put_ns(m, 3600);
	a->ttl_at[3] = put_a(m, 50, 3);
	a->opt = put_opt(m, 1232, OPT_FLAGS);
	static const uint8_t nsid[] = "upstream-1";
	put_option(m, a->opt, WIRE_OPT_NSID, nsid, sizeof(nsid) - 1);
	assert_int_equal(parse(m, &a->info), 0);
}

static void check_ttls(const struct aged *a, uint32_t t0, uint32_t t1, uint32_t t2, uint32_t t3)
{
	struct wire_info after;

	assert_int_equal(get32(a->m.b + a->ttl_at[0]), t0);
	assert_int_equal(get32(a->m.b + a->ttl_at[1]), t1);
	assert_int_equal(get32(a->m.b + a->ttl_at[2]), t2);
	assert_int_equal(get32(a->m.b + a->ttl_at[3]), t3);
	/* The OPT's TTL field is extended rcode, version and flags: untouched. */
	assert_int_equal(get32(a->m.b + a->opt + 5), OPT_FLAGS);
	assert_int_equal(wire_parse(a->m.b, a->m.len, &after), 0);
	assert_int_equal(after.edns_ttl, OPT_FLAGS);
	assert_int_equal(after.edns_udp_size, 1232);
}

static void rewrite_ttls_subtract(void **state)
{
	(void)state;
	struct aged a;

	make_aged(&a);
	wire_rewrite_ttls(a.m.b, a.m.len, &a.info, 0, 0);
	check_ttls(&a, 300, 10, 3600, 50);

	make_aged(&a);
	wire_rewrite_ttls(a.m.b, a.m.len, &a.info, 20, 0);
	check_ttls(&a, 280, 0, 3580, 30);

	/* Exactly used up, and past: zero, not a wrapped-around huge TTL. */
	make_aged(&a);
	wire_rewrite_ttls(a.m.b, a.m.len, &a.info, 300, 0);
	check_ttls(&a, 0, 0, 3300, 0);

	make_aged(&a);
	wire_rewrite_ttls(a.m.b, a.m.len, &a.info, 0xffffffffu, 0);
	check_ttls(&a, 0, 0, 0, 0);

	/* The rest of the message is byte for byte what it was. */
	struct aged orig;
	make_aged(&orig);
	make_aged(&a);
	wire_rewrite_ttls(a.m.b, a.m.len, &a.info, 1, 0);
	for (size_t i = 0; i < a.m.len; i++) {
		bool in_ttl = false;
		for (unsigned r = 0; r < 4; r++)
			in_ttl |= i >= a.ttl_at[r] && i < a.ttl_at[r] + 4;
		if (!in_ttl && a.m.b[i] != orig.m.b[i])
			fail_msg("byte %zu changed: %#x -> %#x", i, orig.m.b[i], a.m.b[i]);
	}
}

static void rewrite_ttls_fixed(void **state)
{
	(void)state;
	struct aged a;

	/* Serve-stale: every record gets 30, the short one included. */
	make_aged(&a);
	wire_rewrite_ttls(a.m.b, a.m.len, &a.info, 0, 30);
	check_ttls(&a, 30, 30, 30, 30);

	/* A fixed TTL wins over the elapsed time. */
	make_aged(&a);
	wire_rewrite_ttls(a.m.b, a.m.len, &a.info, 100000, 30);
	check_ttls(&a, 30, 30, 30, 30);

	/* Negative answers: the SOA is rewritten too. */
	struct msg m;
	struct wire_info info;
	start(&m, WIRE_FLAG_QR | WIRE_RCODE_NXDOMAIN, 0, 1, 1, "nx.example.");
	size_t soa = put_soa(&m, 900, 60, false);
	size_t opt = put_opt(&m, 1232, 0x8000);
	assert_int_equal(parse(&m, &info), 0);
	wire_rewrite_ttls(m.b, m.len, &info, 0, 30);
	assert_int_equal(get32(m.b + soa), 30);
	assert_int_equal(get32(m.b + opt + 5), 0x8000);
	/* MINIMUM, in the RDATA, is not a TTL to rewrite. */
	assert_int_equal(get32(m.b + m.len - 11 - 4), 60);
}

/* RFC 2181 §8 again: a TTL with the top bit set means 0, so ageing it
 * must give 0, not (low 31 bits - elapsed). */
static void rewrite_ttls_top_bit_is_zero(void **state)
{
	(void)state;
	struct msg m;
	struct wire_info info;

	start(&m, WIRE_FLAG_QR | WIRE_FLAG_RA, 2, 0, 0, "example.");
	size_t t0 = put_a(&m, 300, 1);
	size_t t1 = put_a(&m, 0x80000000u | 600, 2);
	assert_int_equal(parse(&m, &info), 0);
	wire_rewrite_ttls(m.b, m.len, &info, 10, 0);
	assert_int_equal(get32(m.b + t0), 290);
	assert_int_equal(get32(m.b + t1), 0);
}

/* ---- wire_make_upstream_query ------------------------------------------- */

static const uint8_t ecs[] = { 0, 1, 24, 0, 198, 51, 100 }; /* IPv4 /24 */
static const uint8_t cookie[] = { 1, 2, 3, 4, 5, 6, 7, 8 };
static const uint8_t dau[] = { 8, 13, 15 };

/* A query as a privacy-unaware client sends it: ECS, a cookie, NSID, DAU,
 * an unknown option, its own keepalive and padding; an extra record before
 * the OPT; DO and a Z bit set; a mixed-case name. */
static void make_client_query(struct msg *m, size_t *qend)
{
	put_header(m, 0xbeef, WIRE_FLAG_RD | WIRE_FLAG_AD | WIRE_FLAG_CD, 1, 0, 0, 2);
	put_name(m, "Www.ExAmple.COM.");
	put16(m, 28);
	put16(m, WIRE_CLASS_IN);
	*qend = m->len;
	put_a(m, 300, 9);
	size_t opt = put_opt(m, 4096, 0x8000 | 0x0001);
	put_option(m, opt, WIRE_OPT_ECS, ecs, sizeof(ecs));
	put_option(m, opt, WIRE_OPT_COOKIE, cookie, sizeof(cookie));
	put_option(m, opt, WIRE_OPT_NSID, NULL, 0);
	put_option(m, opt, 65001, "abc", 3);
	put_option(m, opt, WIRE_OPT_DAU, dau, sizeof(dau));
	put_option(m, opt, WIRE_OPT_KEEPALIVE, "\0\x64", 2);
	put_option(m, opt, WIRE_OPT_PADDING, "\0\0\0\0\0", 5);
}

static void upstream_query_options(void **state)
{
	(void)state;
	struct msg m;
	struct wire_info info, out_info;
	uint8_t out[1024];
	struct options o;
	size_t qend;

	make_client_query(&m, &qend);
	assert_int_equal(parse(&m, &info), 0);
	assert_true(info.has_ecs);
	const struct wire_upstream_opts opts = { .pad = true, .keepalive = true };
	size_t len = wire_make_upstream_query(m.b, &info, &opts, out, sizeof(out));
	assert_true(len > 0);
	assert_int_equal(wire_parse(out, len, &out_info), 0);

	/* Header and question as received: ID, flags, the name's spelling. */
	assert_int_equal(out_info.id, 0xbeef);
	assert_int_equal(out_info.flags, WIRE_FLAG_RD | WIRE_FLAG_AD | WIRE_FLAG_CD);
	assert_memory_equal(out + 4, m.b + 4, 2); /* QDCOUNT */
	assert_memory_equal(out + WIRE_HEADER_LEN, m.b + WIRE_HEADER_LEN, qend - WIRE_HEADER_LEN);
	assert_int_equal(out_info.question_end, qend);

	/* Nothing but our OPT after the question. */
	assert_int_equal(out_info.ancount, 0);
	assert_int_equal(out_info.nscount, 0);
	assert_int_equal(out_info.arcount, 1);
	assert_true(out_info.has_edns);
	assert_int_equal(out_info.opt_start, qend);
	assert_int_equal(out_info.opt_end, len);
	assert_int_equal(out_info.edns_ttl, 0x8000); /* DO kept, Z and version not */
	assert_true(out_info.edns_udp_size >= WIRE_UDP_DEFAULT);
	assert_false(out_info.has_ecs);

	read_options(out, len, &out_info, &o);
	assert_int_equal(count_option(&o, WIRE_OPT_ECS), 0);
	assert_int_equal(count_option(&o, WIRE_OPT_COOKIE), 0);
	assert_int_equal(count_option(&o, 65001), 0);
	assert_int_equal(o.n, 4);
	assert_int_equal(o.code[0], WIRE_OPT_NSID);
	assert_int_equal(o.len[0], 0);
	assert_int_equal(o.code[1], WIRE_OPT_DAU);
	assert_int_equal(o.len[1], sizeof(dau));
	assert_memory_equal(o.data[1], dau, sizeof(dau));
	/* Ours: an empty keepalive (a query carries no timeout, RFC 7828 §3.2.1),
	 * then padding, last, all zeros. */
	assert_int_equal(o.code[2], WIRE_OPT_KEEPALIVE);
	assert_int_equal(o.len[2], 0);
	assert_int_equal(o.code[3], WIRE_OPT_PADDING);
	for (unsigned i = 0; i < o.len[3]; i++)
		assert_int_equal(o.data[3][i], 0);
	assert_true(o.len[3] < WIRE_PAD_BLOCK);
	assert_int_equal(len % WIRE_PAD_BLOCK, 0);

	/* The client's message is left as it was. */
	struct wire_info again;
	assert_int_equal(parse(&m, &again), 0);
	assert_true(again.has_ecs);
}

static void upstream_query_plain_client(void **state)
{
	(void)state;
	struct msg m;
	struct wire_info info, out_info;
	uint8_t out[1024];
	struct options o;

	/* No EDNS from the client: we add an OPT, without DO. */
	start(&m, WIRE_FLAG_RD, 0, 0, 0, "example.");
	size_t qend = m.len;
	assert_int_equal(parse(&m, &info), 0);
	struct wire_upstream_opts opts = { .pad = true, .keepalive = true };
	size_t len = wire_make_upstream_query(m.b, &info, &opts, out, sizeof(out));
	assert_int_equal(len, WIRE_PAD_BLOCK);
	assert_int_equal(wire_parse(out, len, &out_info), 0);
	assert_true(out_info.has_edns);
	assert_int_equal(out_info.arcount, 1);
	assert_int_equal(out_info.edns_ttl, 0);
	read_options(out, len, &out_info, &o);
	assert_int_equal(o.n, 2);
	assert_int_equal(o.code[0], WIRE_OPT_KEEPALIVE);
	assert_int_equal(o.code[1], WIRE_OPT_PADDING);

	/* Neither padding nor keepalive: a bare OPT. */
	opts = (struct wire_upstream_opts){ .pad = false, .keepalive = false };
	len = wire_make_upstream_query(m.b, &info, &opts, out, sizeof(out));
	assert_int_equal(len, qend + 11);
	assert_int_equal(wire_parse(out, len, &out_info), 0);
	assert_true(out_info.has_edns);
	read_options(out, len, &out_info, &o);
	assert_int_equal(o.n, 0);

	/* Keepalive alone: no padding option, length not rounded. */
	opts = (struct wire_upstream_opts){ .pad = false, .keepalive = true };
	len = wire_make_upstream_query(m.b, &info, &opts, out, sizeof(out));
	assert_int_equal(len, qend + 11 + 4);
	assert_int_equal(wire_parse(out, len, &out_info), 0);
	read_options(out, len, &out_info, &o);
	assert_int_equal(o.n, 1);
	assert_int_equal(o.code[0], WIRE_OPT_KEEPALIVE);

	/* A DO query with an empty OPT: DO carried over. */
	start(&m, WIRE_FLAG_RD, 0, 0, 1, "example.");
	put_opt(&m, 512, 0x8000);
	assert_int_equal(parse(&m, &info), 0);
	opts = (struct wire_upstream_opts){ .pad = true, .keepalive = false };
	len = wire_make_upstream_query(m.b, &info, &opts, out, sizeof(out));
	assert_int_equal(len % WIRE_PAD_BLOCK, 0);
	assert_int_equal(wire_parse(out, len, &out_info), 0);
	assert_int_equal(out_info.edns_ttl, 0x8000);
	read_options(out, len, &out_info, &o);
	assert_int_equal(o.n, 1);
	assert_int_equal(o.code[0], WIRE_OPT_PADDING);
}

/* Padding rounds every length up to the block, for questions of all sizes
 * and with client options of various lengths. */
static void upstream_query_padding_sizes(void **state)
{
	(void)state;
	char name[300];
	uint8_t out[1024];
	struct msg m;
	struct wire_info info, out_info;
	struct options o;

	for (unsigned n = 1; n <= 200; n++) {
		/* Labels of up to 63 characters adding up to n. */
		size_t p = 0;
		for (unsigned left = n; left > 0;) {
			unsigned label = left > 63 ? 63 : left;
			memset(name + p, 'a' + (char)(left % 26), label);
			p += label;
			name[p++] = '.';
			left -= label;
		}
		name[p] = '\0';
		for (unsigned variant = 0; variant < 4; variant++) {
			put_header(&m, n, WIRE_FLAG_RD, 1, 0, 0, variant ? 1 : 0);
			put_name(&m, name);
			put16(&m, 1);
			put16(&m, WIRE_CLASS_IN);
			if (variant) {
				size_t opt = put_opt(&m, 1232, 0);
				uint8_t nsid_data[64] = { 0 };
				put_option(&m, opt, WIRE_OPT_NSID, nsid_data, (n * variant) % 64);
				put_option(&m, opt, WIRE_OPT_ECS, ecs, sizeof(ecs));
			}
			assert_int_equal(parse(&m, &info), 0);
			struct wire_upstream_opts opts = { .pad = true, .keepalive = variant & 1 };
			size_t len = wire_make_upstream_query(m.b, &info, &opts, out, sizeof(out));
			if (len == 0 || len % WIRE_PAD_BLOCK != 0)
				fail_msg("name of %u, variant %u: length %zu", n, variant, len);
			assert_int_equal(wire_parse(out, len, &out_info), 0);
			read_options(out, len, &out_info, &o);
			assert_true(o.n >= 1);
			assert_int_equal(o.code[o.n - 1], WIRE_OPT_PADDING);
			assert_true(o.len[o.n - 1] < WIRE_PAD_BLOCK);
			assert_int_equal(count_option(&o, WIRE_OPT_ECS), 0);
		}
	}
}

/* The query as built with ample room, to compare smaller buffers against. */
static size_t reference_query(const struct msg *m, const struct wire_info *info,
			      const struct wire_upstream_opts *opts, uint8_t *out)
{
	size_t len = wire_make_upstream_query(m->b, info, opts, out, 4096);
	assert_true(len > 0);
	return len;
}

enum { CANARY = 0xa5 };

static void upstream_query_small_cap(void **state)
{
	(void)state;
	struct msg m;
	struct wire_info info;
	static uint8_t want[4096], out[4096];

	for (unsigned variant = 0; variant < 8; variant++) {
		start(&m, WIRE_FLAG_RD, 0, 0, variant & 4 ? 1 : 0, "www.example.");
		if (variant & 4) {
			size_t opt = put_opt(&m, 1232, 0x8000);
			put_option(&m, opt, WIRE_OPT_NSID, NULL, 0);
			put_option(&m, opt, WIRE_OPT_COOKIE, cookie, sizeof(cookie));
		}
		assert_int_equal(parse(&m, &info), 0);
		struct wire_upstream_opts opts = { .pad = variant & 1, .keepalive = variant & 2 };
		size_t need = reference_query(&m, &info, &opts, want);
		for (size_t cap = 0; cap < need; cap++) {
			memset(out, CANARY, sizeof(out));
			size_t len = wire_make_upstream_query(m.b, &info, &opts, out, cap);
			if (len != 0)
				fail_msg("variant %u: cap %zu < %zu gave %zu", variant, cap, need,
					 len);
			for (size_t i = cap; i < sizeof(out); i++)
				if (out[i] != CANARY)
					fail_msg("variant %u: cap %zu, byte %zu written", variant,
						 cap, i);
		}
		/* With room to spare, the same bytes. */
		for (size_t cap = need + 8; cap < need + 40; cap++) {
			size_t len = wire_make_upstream_query(m.b, &info, &opts, out, cap);
			assert_int_equal(len, need);
			assert_memory_equal(out, want, need);
		}
	}

	/* No question, no query. */
	struct wire_info none;
	memset(&none, 0, sizeof(none));
	none.has_header = true;
	struct wire_upstream_opts opts = { .pad = true, .keepalive = true };
	assert_int_equal(wire_make_upstream_query(m.b, &none, &opts, out, sizeof(out)), 0);
}

/* "0 when @cap is too small": a buffer of exactly the size needed is not too
 * small.  wire.c reserves slack first (4 bytes before any option, 8 after
 * each copied client option), so an exact fit is refused in some layouts. */
static void upstream_query_exact_cap(void **state)
{
	(void)state;
	struct msg m;
	struct wire_info info;
	static uint8_t want[4096], out[4096];
	unsigned failures = 0;

	for (unsigned variant = 0; variant < 8; variant++) {
		start(&m, WIRE_FLAG_RD, 0, 0, variant & 4 ? 1 : 0, "www.example.");
		if (variant & 4) {
			size_t opt = put_opt(&m, 1232, 0);
			put_option(&m, opt, WIRE_OPT_NSID, NULL, 0);
		}
		assert_int_equal(parse(&m, &info), 0);
		struct wire_upstream_opts opts = { .pad = variant & 1, .keepalive = variant & 2 };
		size_t need = reference_query(&m, &info, &opts, want);
		size_t len = wire_make_upstream_query(m.b, &info, &opts, out, need);
		if (len != need) {
			print_error("pad %d, keepalive %d, client NSID %d: cap %zu (exactly the "
				    "length needed) gave %zu\n",
				    opts.pad, opts.keepalive, (variant & 4) != 0, need, len);
			failures++;
		}
	}
	assert_int_equal(failures, 0);
}

/* ---- wire_add_keepalive -------------------------------------------------- */

static void add_keepalive(void **state)
{
	(void)state;
	struct msg m;
	struct wire_info info, after;
	struct options o;

	start(&m, WIRE_FLAG_QR | WIRE_FLAG_RA, 1, 0, 1, "example.");
	put_a(&m, 300, 1);
	size_t opt = put_opt(&m, 1232, 0);
	put_option(&m, opt, WIRE_OPT_NSID, "ns1", 3);
	assert_int_equal(parse(&m, &info), 0);
	size_t len = wire_add_keepalive(m.b, m.len, sizeof(m.b), &info, 100);
	assert_int_equal(len, m.len + 6);
	assert_int_equal(wire_parse(m.b, len, &after), 0);
	assert_int_equal(after.keepalive, 100);
	read_options(m.b, len, &after, &o);
	assert_int_equal(o.n, 2);
	assert_int_equal(o.code[0], WIRE_OPT_NSID);
	assert_int_equal(o.code[1], WIRE_OPT_KEEPALIVE);

	/* No room, or a record after the OPT: unchanged. */
	assert_int_equal(wire_add_keepalive(m.b, m.len, m.len + 5, &info, 100), m.len);
	start(&m, WIRE_FLAG_QR, 0, 0, 2, "example.");
	put_opt(&m, 1232, 0);
	put_a(&m, 300, 3);
	assert_int_equal(parse(&m, &info), 0);
	assert_int_equal(wire_add_keepalive(m.b, m.len, sizeof(m.b), &info, 100), m.len);
	/* No OPT at all. */
	start(&m, WIRE_FLAG_QR, 1, 0, 0, "example.");
	put_a(&m, 300, 1);
	assert_int_equal(parse(&m, &info), 0);
	assert_int_equal(wire_add_keepalive(m.b, m.len, sizeof(m.b), &info, 100), m.len);
}

/* ---- wire_pad_reply ------------------------------------------------------ */

static void pad_reply(void **state)
{
	(void)state;
	struct msg m;
	struct wire_info info, after;

	start(&m, WIRE_FLAG_QR | WIRE_FLAG_RA, 1, 0, 1, "example.");
	put_a(&m, 300, 1);
	put_opt(&m, 1232, 0);
	assert_int_equal(parse(&m, &info), 0);
	/* After a keepalive was added (the OPT grew since it was parsed). */
	size_t len = wire_add_keepalive(m.b, m.len, sizeof(m.b), &info, 100);
	len = wire_pad_reply(m.b, len, sizeof(m.b), &info, WIRE_PAD_REPLY_BLOCK);
	assert_int_equal(len, WIRE_PAD_REPLY_BLOCK);
	assert_int_equal(wire_parse(m.b, len, &after), 0);
	assert_true(after.has_padding);
	assert_int_equal(after.keepalive, 100);
	/* No room for another option: unchanged. */
	assert_int_equal(wire_pad_reply(m.b, len, len + 3, &after, WIRE_PAD_REPLY_BLOCK), len);
	/* A record after the OPT: unchanged. */
	start(&m, WIRE_FLAG_QR, 0, 0, 2, "example.");
	put_opt(&m, 1232, 0);
	put_a(&m, 300, 3);
	assert_int_equal(parse(&m, &info), 0);
	assert_int_equal(wire_pad_reply(m.b, m.len, sizeof(m.b), &info, WIRE_PAD_REPLY_BLOCK),
			 m.len);
}

/* ---- wire_filter_opt ---------------------------------------------------- */

static void filter_opt(void **state)
{
	(void)state;
	struct msg m;
	struct wire_info info, after;
	struct options o;
	static const uint8_t ede[] = { 0, 22, 'n', 'o', ' ', 'n', 's' };

	start(&m, WIRE_FLAG_QR | WIRE_FLAG_RA | WIRE_RCODE_SERVFAIL, 1, 0, 3, "example.");
	put_a(&m, 300, 1);
	size_t glue = put_a(&m, 300, 2) - 6; /* the record's start */
	size_t opt = put_opt(&m, 1232, 0x00008000);
	put_option(&m, opt, WIRE_OPT_KEEPALIVE, "\x01\x2c", 2);
	put_option(&m, opt, WIRE_OPT_EDE, ede, sizeof(ede));
	static const uint8_t pad[40] = { 0 };
	put_option(&m, opt, WIRE_OPT_PADDING, pad, sizeof(pad));
	put_option(&m, opt, WIRE_OPT_NSID, "ns1", 3);
	put_option(&m, opt, WIRE_OPT_PADDING, pad, 0);
	put_option(&m, opt, WIRE_OPT_COOKIE, cookie, sizeof(cookie));
	put_option(&m, opt, WIRE_OPT_KEEPALIVE, NULL, 0);
	put_a(&m, 300, 3); /* after the OPT: cut */
	assert_int_equal(parse(&m, &info), 0);
	assert_int_equal(info.keepalive, 300);
	uint8_t before[8192];
	memcpy(before, m.b, m.len);

	size_t len = wire_filter_opt(m.b, m.len, &info);
	size_t kept = 4 + sizeof(ede) + 4 + 3 + 4 + sizeof(cookie);
	assert_int_equal(len, opt + 11 + kept);
	assert_int_equal(wire_parse(m.b, len, &after), 0);
	assert_int_equal(after.arcount, 2); /* the glue and the OPT */
	assert_int_equal(after.ancount, 1);
	assert_true(after.has_edns);
	assert_int_equal(after.opt_start, opt);
	assert_int_equal(after.opt_end, len);
	assert_int_equal(after.edns_ttl, 0x8000);
	assert_int_equal(after.edns_udp_size, 1232);
	assert_int_equal(after.keepalive, -1);
	assert_int_equal(after.flags & 0xf, WIRE_RCODE_SERVFAIL);
	/* Everything before the OPT is untouched, the glue included. */
	assert_memory_equal(m.b, before, 10);
	assert_memory_equal(m.b + 12, before + 12, opt - 12);
	assert_true(glue < opt);

	read_options(m.b, len, &after, &o);
	assert_int_equal(o.n, 3);
	assert_int_equal(o.code[0], WIRE_OPT_EDE);
	assert_int_equal(o.len[0], sizeof(ede));
	assert_memory_equal(o.data[0], ede, sizeof(ede));
	assert_int_equal(o.code[1], WIRE_OPT_NSID);
	assert_int_equal(o.len[1], 3);
	assert_memory_equal(o.data[1], "ns1", 3);
	assert_int_equal(o.code[2], WIRE_OPT_COOKIE);
	assert_memory_equal(o.data[2], cookie, sizeof(cookie));
	assert_int_equal(count_option(&o, WIRE_OPT_KEEPALIVE), 0);
	assert_int_equal(count_option(&o, WIRE_OPT_PADDING), 0);
}

static void filter_opt_edge_cases(void **state)
{
	(void)state;
	struct msg m;
	struct wire_info info, after;
	struct options o;

	/* Only hop-by-hop options: an OPT with empty RDATA remains. */
	start(&m, WIRE_FLAG_QR, 1, 0, 1, "example.");
	put_a(&m, 60, 1);
	size_t opt = put_opt(&m, 1232, 0);
	put_option(&m, opt, WIRE_OPT_PADDING, "\0\0\0", 3);
	put_option(&m, opt, WIRE_OPT_KEEPALIVE, "\0\x10", 2);
	assert_int_equal(parse(&m, &info), 0);
	size_t len = wire_filter_opt(m.b, m.len, &info);
	assert_int_equal(len, opt + 11);
	assert_int_equal(wire_parse(m.b, len, &after), 0);
	assert_true(after.has_edns);
	read_options(m.b, len, &after, &o);
	assert_int_equal(o.n, 0);

	/* Nothing to remove: the same message. */
	start(&m, WIRE_FLAG_QR, 1, 0, 1, "example.");
	put_a(&m, 60, 1);
	opt = put_opt(&m, 1232, 0);
	put_option(&m, opt, WIRE_OPT_NSID, "x", 1);
	assert_int_equal(parse(&m, &info), 0);
	uint8_t before[256];
	size_t before_len = m.len;
	memcpy(before, m.b, m.len);
	len = wire_filter_opt(m.b, m.len, &info);
	assert_int_equal(len, before_len);
	assert_memory_equal(m.b, before, before_len);

	/* No OPT at all: untouched. */
	start(&m, WIRE_FLAG_QR, 1, 0, 1, "example.");
	put_a(&m, 60, 1);
	put_a(&m, 60, 2);
	assert_int_equal(parse(&m, &info), 0);
	before_len = m.len;
	memcpy(before, m.b, m.len);
	len = wire_filter_opt(m.b, m.len, &info);
	assert_int_equal(len, before_len);
	assert_memory_equal(m.b, before, before_len);
}

/* ---- an OPT whose root owner is a compression pointer ------------------- */

/*
 * wire_parse() accepts an OPT whose owner is a pointer to a root label (the
 * owner's expanded length is 1), but wire_make_upstream_query() and
 * wire_filter_opt() assume the owner is one byte and find the RDATA at
 * opt_start + 11, one byte early: the RDLENGTH's low byte is read as the
 * first option byte, and option walks run past opt_end (and past the
 * message).  Either the parse must refuse such an OPT, or the helpers must
 * handle it.  Bytes after the message are set so that the misreading is
 * visible without a sanitizer.
 */
static void make_ptr_owner_opt(struct msg *m, unsigned flags, const uint8_t *after, size_t n)
{
	start(m, flags, flags & WIRE_FLAG_QR ? 1 : 0, 0, 1, "example.");
	if (flags & WIRE_FLAG_QR)
		put_a(m, 60, 1);
	put_ptr(m, QNAME + 8); /* the question name's root label */
	put_rr_fixed(m, WIRE_TYPE_OPT, 1232, 0x8000, 0);
	memset(m->b + m->len, 0, sizeof(m->b) - m->len);
	memcpy(m->b + m->len, after, n);
}

static void upstream_query_ptr_owner_opt(void **state)
{
	(void)state;
	struct msg m;
	struct wire_info info, out_info;
	uint8_t out[1024];
	struct options o;
	static const uint8_t after[] = { 0x03, 0x00, 0x00, 0x00 }; /* "NSID, length 0" */

	make_ptr_owner_opt(&m, WIRE_FLAG_RD, after, sizeof(after));
	assert_int_equal(m.b[QNAME + 8], 0);
	int rc = parse(&m, &info);
	if (rc == WIRE_EFORMAT)
		return; /* refused: fine */
	assert_int_equal(rc, 0);
	assert_true(info.has_edns);
	const struct wire_upstream_opts opts = { .pad = false, .keepalive = false };
	size_t len = wire_make_upstream_query(m.b, &info, &opts, out, sizeof(out));
	assert_true(len > 0);
	assert_int_equal(wire_parse(out, len, &out_info), 0);
	assert_int_equal(out_info.edns_ttl, 0x8000);
	read_options(out, len, &out_info, &o);
	/* The client sent no options; any here came from beyond its message. */
	assert_int_equal(o.n, 0);
}

/*
 * The same, with nothing but the client's own bytes: an OPT of 256 bytes of
 * RDATA (one unknown option, code 0x03ff, 252 bytes) is read one byte early
 * as an NSID option of 65280 bytes, which does not fit the buffer the daemon
 * gives (daemon/query.c sizes it as len + 11 + 4 + 4 + WIRE_PAD_BLOCK), so
 * 0 comes back, and the daemon's require(q->len > 0) aborts the process.
 */
static void upstream_query_ptr_owner_opt_daemon_cap(void **state)
{
	(void)state;
	struct msg m;
	struct wire_info info, out_info;
	static uint8_t out[8192];
	struct options o;
	static const uint8_t filler[252] = { 0 };

	start(&m, WIRE_FLAG_RD, 0, 0, 1, "example.");
	put_ptr(&m, QNAME + 8);
	size_t opt = m.len - 2;
	put_rr_fixed(&m, WIRE_TYPE_OPT, 1232, 0, 0);
	/* put_option() assumes a one-byte owner: patch RDLENGTH by hand. */
	put16(&m, 0x03ff);
	put16(&m, sizeof(filler));
	put_raw(&m, filler, sizeof(filler));
	set16(&m, opt + 10, 256);
	int rc = parse(&m, &info);
	if (rc == WIRE_EFORMAT)
		return; /* refused: fine */
	assert_int_equal(rc, 0);
	assert_true(info.has_edns);
	const struct wire_upstream_opts opts = { .pad = true, .keepalive = true };
	size_t cap = m.len + 11 + 4 + 4 + WIRE_PAD_BLOCK;
	size_t len = wire_make_upstream_query(m.b, &info, &opts, out, cap);
	if (len == 0)
		fail_msg("a %zu-byte client query gave no upstream query with cap %zu", m.len, cap);
	assert_int_equal(wire_parse(out, len, &out_info), 0);
	read_options(out, len, &out_info, &o);
	assert_int_equal(o.n, 2); /* the unknown option dropped; ours added */
	assert_int_equal(o.code[0], WIRE_OPT_KEEPALIVE);
	assert_int_equal(o.code[1], WIRE_OPT_PADDING);
}

static void filter_opt_ptr_owner_opt(void **state)
{
	(void)state;
	struct msg m;
	struct wire_info info, after_info;
	static const uint8_t after[] = { 0x05, 0x00, 0x10 }; /* "DAU, 16 bytes" */

	make_ptr_owner_opt(&m, WIRE_FLAG_QR | WIRE_FLAG_RA, after, sizeof(after));
	int rc = parse(&m, &info);
	if (rc == WIRE_EFORMAT)
		return; /* refused: fine */
	assert_int_equal(rc, 0);
	assert_true(info.has_edns);
	size_t len = wire_filter_opt(m.b, m.len, &info);
	if (len > m.len)
		fail_msg("wire_filter_opt grew a %zu-byte message to %zu bytes", m.len, len);
	assert_int_equal(wire_parse(m.b, len, &after_info), 0);
	assert_true(after_info.has_edns);
	assert_int_equal(after_info.edns_ttl, 0x8000);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(cache_ttl_positive),
		cmocka_unit_test(cache_ttl_top_bit_is_zero),
		cmocka_unit_test(cache_ttl_negative),
		cmocka_unit_test(cache_ttl_uncacheable),
		cmocka_unit_test(rewrite_ttls_subtract),
		cmocka_unit_test(rewrite_ttls_fixed),
		cmocka_unit_test(rewrite_ttls_top_bit_is_zero),
		cmocka_unit_test(upstream_query_options),
		cmocka_unit_test(upstream_query_plain_client),
		cmocka_unit_test(upstream_query_padding_sizes),
		cmocka_unit_test(upstream_query_small_cap),
		cmocka_unit_test(upstream_query_exact_cap),
		cmocka_unit_test(add_keepalive),
		cmocka_unit_test(pad_reply),
		cmocka_unit_test(filter_opt),
		cmocka_unit_test(filter_opt_edge_cases),
		cmocka_unit_test(upstream_query_ptr_owner_opt),
		cmocka_unit_test(upstream_query_ptr_owner_opt_daemon_cap),
		cmocka_unit_test(filter_opt_ptr_owner_opt),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
