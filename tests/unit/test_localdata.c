/*
 * Unit tests for lib/localdata: the --local-data line parser (every type,
 * TTLs, names, each error), hosts files, and the replies.  A reply is
 * compared byte for byte with one built here by msg_builder.h, so the
 * header bits, the question as the client spelled it, the order of the
 * records, the compression pointers and the OPT are all checked at once;
 * wire_parse() must also accept it.
 */
#include "lib/localdata.h"

#include "tests/unit/msg_builder.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

enum {
	T_A = 1,
	T_NS = 2,
	T_CNAME = 5,
	T_SOA = 6,
	T_PTR = 12,
	T_MX = 15,
	T_TXT = 16,
	T_AAAA = 28,
	T_SRV = 33,
	T_ANY = 255,
	QID = 0x4d2e,
	QNAME = 0xc000 | WIRE_HEADER_LEN, /* pointer to the question name */
};

/* ---- building ------------------------------------------------------------ */

static struct localdata *store(const char *const *lines)
{
	struct localdata *ld = localdata_new();
	char err[256];

	assert_non_null(ld);
	for (; *lines; lines++)
		if (localdata_add_line(ld, *lines, err, sizeof(err)) != 0)
			fail_msg("'%s' refused: %s", *lines, err);
	return ld;
}

#define LINES(...) ((const char *const[]){ __VA_ARGS__, NULL })

static void assert_contains(const char *haystack, const char *needle)
{
	if (!strstr(haystack, needle))
		fail_msg("'%s' does not contain '%s'", haystack, needle);
}

/* Adding @line fails with @rc and a reason containing @mention; the store
 * is left as it was; localdata_check_line() agrees when @rc is -EINVAL. */
static void expect_refused(struct localdata *ld, const char *line, int rc, const char *mention)
{
	char err[256] = "untouched";
	size_t before = localdata_count(ld);

	int got = localdata_add_line(ld, line, err, sizeof(err));
	if (got != rc)
		fail_msg("'%s': %d, expected %d (%s)", line, got, rc, err);
	assert_contains(err, mention);
	assert_null(strchr(err, '\n'));
	assert_int_equal(localdata_count(ld), before);
	if (rc == -EINVAL && localdata_count(ld) == 0) {
		char err2[256];
		assert_int_equal(localdata_check_line(line, err2, sizeof(err2)), -EINVAL);
		assert_string_equal(err, err2);
	}
}

/* ---- asking -------------------------------------------------------------- */

struct answer {
	enum localdata_result result;
	uint8_t b[LOCALDATA_MAX_REPLY];
	size_t len;
	struct wire_info info;
};

static void query_msg(struct msg *q, const char *name, unsigned type, unsigned flags, bool edns,
		      bool dnssec_ok)
{
	put_header(q, QID, flags, 1, 0, 0, edns ? 1 : 0);
	put_name(q, name);
	put16(q, type);
	put16(q, WIRE_CLASS_IN);
	if (edns) {
		put8(q, 0);
		put_rr_fixed(q, WIRE_TYPE_OPT, 4096, dnssec_ok ? 0x8000 : 0, 0);
	}
}

static void ask_msg(const struct localdata *ld, const struct msg *q, struct answer *a)
{
	struct wire_info qi;

	assert_int_equal(wire_parse(q->b, q->len, &qi), 0);
	memset(a->b, 0xa5, sizeof(a->b));
	a->len = 777;
	a->result = localdata_lookup(ld, &qi, a->b, sizeof(a->b), &a->len);
	if (a->result == LOCALDATA_NONE) {
		assert_int_equal(a->len, 0);
		assert_int_equal(a->b[0], 0xa5);
		return;
	}
	assert_true(a->len > 0 && a->len <= LOCALDATA_MAX_REPLY);
	assert_int_equal(wire_parse(a->b, a->len, &a->info), 0);
}

static void ask(const struct localdata *ld, const char *name, unsigned type, bool edns,
		struct answer *a)
{
	struct msg q;

	query_msg(&q, name, type, WIRE_FLAG_RD, edns, false);
	ask_msg(ld, &q, a);
}

/* The reply expected for @name/@type: header with @an records and the
 * question; records follow with exp_rr(); exp_end() adds the OPT. */
static void exp_begin(struct msg *m, const char *name, unsigned type, unsigned an, bool edns)
{
	put_header(m, QID, WIRE_FLAG_QR | WIRE_FLAG_AA | WIRE_FLAG_RD | WIRE_FLAG_RA, 1, an, 0,
		   edns ? 1 : 0);
	put_name(m, name);
	put16(m, type);
	put16(m, WIRE_CLASS_IN);
}

/* A record owned by the name at offset @owner; returns its RDATA offset. */
static size_t exp_rr(struct msg *m, size_t owner, unsigned type, uint32_t ttl, const void *rdata,
		     size_t rdlen)
{
	put_ptr(m, owner);
	put_rr_fixed(m, type, WIRE_CLASS_IN, ttl, (unsigned)rdlen);
	size_t at = m->len;
	put_raw(m, rdata, rdlen);
	return at;
}

static void exp_end(struct msg *m, bool edns, bool dnssec_ok)
{
	if (edns) {
		put8(m, 0);
		put_rr_fixed(m, WIRE_TYPE_OPT, 1232, dnssec_ok ? 0x8000 : 0, 0);
	}
}

static void assert_reply(const struct answer *a, const struct msg *want)
{
	assert_int_equal(a->result, LOCALDATA_ANSWER);
	if (a->len != want->len || memcmp(a->b, want->b, a->len) != 0) {
		for (size_t i = 0; i < a->len || i < want->len; i++)
			if (i >= a->len || i >= want->len || a->b[i] != want->b[i]) {
				fail_msg("reply differs at byte %zu (lengths %zu, expected %zu)", i,
					 a->len, want->len);
			}
	}
}

/* RDATA helpers. */
static size_t name_rdata(const char *name, uint8_t *out)
{
	struct msg m = { .len = 0 };
	put_name(&m, name);
	memcpy(out, m.b, m.len);
	return m.len;
}

static void v4(const char *ip, uint8_t out[4])
{
	assert_int_equal(inet_pton(AF_INET, ip, out), 1);
}

static void v6(const char *ip, uint8_t out[16])
{
	assert_int_equal(inet_pton(AF_INET6, ip, out), 1);
}

/* One record of @type at @name, exactly: @rdata with @ttl. */
static void expect_single(const struct localdata *ld, const char *name, unsigned type, uint32_t ttl,
			  const void *rdata, size_t rdlen)
{
	struct answer a;
	struct msg want;

	for (int edns = 0; edns < 2; edns++) {
		ask(ld, name, type, edns, &a);
		exp_begin(&want, name, type, 1, edns);
		exp_rr(&want, WIRE_HEADER_LEN, type, ttl, rdata, rdlen);
		exp_end(&want, edns, false);
		assert_reply(&a, &want);
	}
}

static void expect_nodata(const struct localdata *ld, const char *name, unsigned type)
{
	struct answer a;
	struct msg want;

	ask(ld, name, type, true, &a);
	exp_begin(&want, name, type, 0, true);
	exp_end(&want, true, false);
	assert_reply(&a, &want);
}

static void expect_none(const struct localdata *ld, const char *name, unsigned type)
{
	struct answer a;

	ask(ld, name, type, false, &a);
	if (a.result != LOCALDATA_NONE)
		fail_msg("%s type %u should not be answered from local data", name, type);
}

/* ---- the types ------------------------------------------------------------- */

static void each_type(void **state)
{
	(void)state;
	struct localdata *ld = store(LINES(
	    "nas.home.arpa A 192.168.1.10", "nas6.home.arpa AAAA 2001:db8::10",
	    "www.home.arpa CNAME nas.home.arpa.", "10.1.168.192.in-addr.arpa PTR nas.home.arpa",
	    "home.arpa MX 10 mail.home.arpa", "_sip._tcp.home.arpa SRV 1 5 5060 pbx.home.arpa.",
	    "t.home.arpa TXT \"v=spf1 -all\" \"two words\" \"quote \\\" \\\\ \\065\" \"\"",
	    "nomail.example MX 0 .", "nosrv.example SRV 0 0 0 ."));
	uint8_t rd[512];
	size_t n;

	assert_int_equal(localdata_count(ld), 9);
	v4("192.168.1.10", rd);
	expect_single(ld, "nas.home.arpa.", T_A, 3600, rd, 4);
	v6("2001:db8::10", rd);
	expect_single(ld, "nas6.home.arpa.", T_AAAA, 3600, rd, 16);
	n = name_rdata("nas.home.arpa.", rd);
	expect_single(ld, "www.home.arpa.", T_CNAME, 3600, rd, n);
	expect_single(ld, "10.1.168.192.in-addr.arpa.", T_PTR, 3600, rd, n);

	rd[0] = 0;
	rd[1] = 10;
	n = 2 + name_rdata("mail.home.arpa", rd + 2);
	expect_single(ld, "home.arpa.", T_MX, 3600, rd, n);
	static const uint8_t srv_fixed[] = { 0, 1, 0, 5, 0x13, 0xc4 };
	memcpy(rd, srv_fixed, 6);
	n = 6 + name_rdata("pbx.home.arpa", rd + 6);
	expect_single(ld, "_sip._tcp.home.arpa.", T_SRV, 3600, rd, n);

	/* TXT: several strings, escapes (\" \\ \065 = 'A'), an empty one. */
	static const uint8_t txt[] = "\013v=spf1 -all"
				     "\011two words"
				     "\013quote \" \\ A"
				     "\000";
	expect_single(ld, "t.home.arpa.", T_TXT, 3600, txt, sizeof(txt) - 1);

	/* Null MX (RFC 7505) and "no service" SRV (RFC 2782): target ".". */
	static const uint8_t null_mx[] = { 0, 0, 0 }, null_srv[] = { 0, 0, 0, 0, 0, 0, 0 };
	expect_single(ld, "nomail.example.", T_MX, 3600, null_mx, sizeof(null_mx));
	expect_single(ld, "nosrv.example.", T_SRV, 3600, null_srv, sizeof(null_srv));
	localdata_free(ld);
}

static void ttls(void **state)
{
	(void)state;
	static const struct {
		const char *line, *name, *ip;
		uint32_t ttl;
	} cases[] = {
		{ "a.example A 192.0.2.1", "a.example.", "192.0.2.1", LOCALDATA_DEFAULT_TTL },
		{ "b.example 60 A 192.0.2.2", "b.example.", "192.0.2.2", 60 },
		{ "c.example 0 A 192.0.2.3", "c.example.", "192.0.2.3", 0 },
		{ "d.example 2147483647 A 192.0.2.4", "d.example.", "192.0.2.4", 2147483647u },
		{ "e.example IN A 192.0.2.5", "e.example.", "192.0.2.5", 3600 },
		{ "f.example 30 IN A 192.0.2.6", "f.example.", "192.0.2.6", 30 },
		{ "g.example in 40 a 192.0.2.7", "g.example.", "192.0.2.7", 40 },
	};
	struct localdata *ld = localdata_new();
	char err[256];
	uint8_t rd[4];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		assert_int_equal(localdata_add_line(ld, cases[i].line, err, sizeof(err)), 0);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		v4(cases[i].ip, rd);
		expect_single(ld, cases[i].name, T_A, cases[i].ttl, rd, 4);
	}
	localdata_free(ld);
}

/* Names: with or without the trailing dot, any case, matched whatever the
 * query's case; the reply keeps the client's spelling, RDATA the line's. */
static void names_and_case(void **state)
{
	(void)state;
	struct localdata *ld =
	    store(LINES("Nas.Home.Arpa. A 192.168.1.10", "nas.home.arpa A 192.168.1.10",
			"NAS.HOME.ARPA A 192.168.1.11", "alias.home.arpa PTR Nas.Home.Arpa"));
	uint8_t rd[8], name[64];
	struct answer a;
	struct msg want;

	assert_int_equal(localdata_count(ld), 3); /* the first two are one record */
	ask(ld, "nAS.hOME.aRPA.", T_A, false, &a);
	exp_begin(&want, "nAS.hOME.aRPA.", T_A, 2, false);
	v4("192.168.1.10", rd);
	exp_rr(&want, WIRE_HEADER_LEN, T_A, 3600, rd, 4);
	v4("192.168.1.11", rd);
	exp_rr(&want, WIRE_HEADER_LEN, T_A, 3600, rd, 4);
	assert_reply(&a, &want);

	size_t n = name_rdata("Nas.Home.Arpa", name);
	expect_single(ld, "ALIAS.home.arpa.", T_PTR, 3600, name, n);
	expect_none(ld, "nas.home.arpa.example.", T_A);
	localdata_free(ld);
}

/* A name owns all its types: another type is NODATA (no SOA: see the
 * header), never "not ours". */
static void nodata_for_other_types(void **state)
{
	(void)state;
	struct localdata *ld =
	    store(LINES("v4only.home.arpa A 192.168.1.20", "t.example TXT \"x\""));

	expect_nodata(ld, "v4only.home.arpa.", T_AAAA);
	expect_nodata(ld, "v4only.home.arpa.", T_MX);
	expect_nodata(ld, "v4only.home.arpa.", T_CNAME);
	expect_nodata(ld, "V4ONLY.home.arpa.", T_SOA);
	expect_nodata(ld, "t.example.", T_A);
	localdata_free(ld);
}

static void names_not_listed(void **state)
{
	(void)state;
	struct localdata *ld = store(LINES("a.b.example A 192.0.2.1"));
	struct msg q;
	struct wire_info qi;
	uint8_t out[64];
	size_t len;

	expect_none(ld, "b.example.", T_A); /* an empty non-terminal */
	expect_none(ld, "example.", T_A);
	expect_none(ld, "x.a.b.example.", T_A);
	expect_none(ld, "c.example.", T_A);
	expect_none(ld, ".", T_NS);
	assert_true(localdata_exists(ld, (const uint8_t *)"\1a\1b\7example", 13));
	assert_true(localdata_exists(ld, (const uint8_t *)"\1B\7EXAMPLE", 11));
	assert_true(localdata_exists(ld, (const uint8_t *)"\7example", 9));
	assert_false(localdata_exists(ld, (const uint8_t *)"\1c\7example", 11));
	assert_false(localdata_exists(ld, (const uint8_t *)"", 1)); /* the root */

	/* Class other than IN, opcode other than QUERY: not ours. */
	put_header(&q, QID, 0, 1, 0, 0, 0);
	put_name(&q, "a.b.example");
	put16(&q, T_A);
	put16(&q, 3); /* CH */
	assert_int_equal(wire_parse(q.b, q.len, &qi), 0);
	len = 9;
	assert_int_equal(localdata_lookup(ld, &qi, out, sizeof(out), &len), LOCALDATA_NONE);
	assert_int_equal(len, 0);
	query_msg(&q, "a.b.example", T_A, 2 << 11, false, false);
	assert_int_equal(wire_parse(q.b, q.len, &qi), 0);
	assert_int_equal(localdata_lookup(ld, &qi, out, sizeof(out), &len), LOCALDATA_NONE);
	memset(&qi, 0, sizeof(qi));
	qi.has_header = true;
	assert_int_equal(localdata_lookup(ld, &qi, out, sizeof(out), &len), LOCALDATA_NONE);

	/* An empty store answers nothing. */
	struct localdata *empty = localdata_new();
	expect_none(empty, "a.b.example.", T_A);
	assert_false(localdata_exists(empty, (const uint8_t *)"\7example", 9));
	localdata_free(empty);
	localdata_free(ld);
	localdata_free(NULL);
}

/* ---- CNAME ------------------------------------------------------------------ */

static void cname_chains(void **state)
{
	(void)state;
	struct localdata *ld = store(
	    LINES("www.home.arpa CNAME Web.Home.Arpa", "web.home.arpa 300 CNAME nas.home.arpa.",
		  "nas.home.arpa A 192.168.1.10", "nas.home.arpa A 192.168.1.11",
		  "out.home.arpa CNAME www.example.com", "mx.home.arpa CNAME nas.home.arpa"));
	uint8_t a1[4], a2[4], web[64], nas[64];
	size_t web_len = name_rdata("Web.Home.Arpa", web),
	       nas_len = name_rdata("nas.home.arpa", nas);
	struct answer a;
	struct msg want;

	v4("192.168.1.10", a1);
	v4("192.168.1.11", a2);
	/* RFC 1034 §4.3.2: the CNAME, then its target's records, each owner
	 * a pointer to the name that precedes it in the message. */
	for (int edns = 0; edns < 2; edns++) {
		ask(ld, "WWW.home.arpa.", T_A, edns, &a);
		exp_begin(&want, "WWW.home.arpa.", T_A, 4, edns);
		size_t at = exp_rr(&want, WIRE_HEADER_LEN, T_CNAME, 3600, web, web_len);
		at = exp_rr(&want, at, T_CNAME, 300, nas, nas_len);
		exp_rr(&want, at, T_A, 3600, a1, 4);
		exp_rr(&want, at, T_A, 3600, a2, 4);
		exp_end(&want, edns, false);
		assert_reply(&a, &want);
	}
	/* The target lacks the type: the chain, then nothing (NODATA). */
	ask(ld, "www.home.arpa.", T_AAAA, false, &a);
	exp_begin(&want, "www.home.arpa.", T_AAAA, 2, false);
	size_t at = exp_rr(&want, WIRE_HEADER_LEN, T_CNAME, 3600, web, web_len);
	exp_rr(&want, at, T_CNAME, 300, nas, nas_len);
	assert_reply(&a, &want);
	/* CNAME or ANY asked: the CNAME alone, not followed. */
	expect_single(ld, "www.home.arpa.", T_CNAME, 3600, web, web_len);
	ask(ld, "www.home.arpa.", T_ANY, false, &a);
	exp_begin(&want, "www.home.arpa.", T_ANY, 1, false);
	exp_rr(&want, WIRE_HEADER_LEN, T_CNAME, 3600, web, web_len);
	assert_reply(&a, &want);
	/* A target outside local data: the CNAME alone, the client asks on. */
	uint8_t ext[64];
	size_t ext_len = name_rdata("www.example.com", ext);
	ask(ld, "out.home.arpa.", T_A, false, &a);
	exp_begin(&want, "out.home.arpa.", T_A, 1, false);
	exp_rr(&want, WIRE_HEADER_LEN, T_CNAME, 3600, ext, ext_len);
	assert_reply(&a, &want);
	localdata_free(ld);
}

static void cname_loops_and_limits(void **state)
{
	(void)state;
	struct localdata *ld =
	    store(LINES("a.example CNAME b.example", "b.example CNAME a.example"));
	uint8_t ra[32], rb[32];
	size_t la = name_rdata("a.example", ra), lb = name_rdata("b.example", rb);
	struct answer a;
	struct msg want;
	char err[256];

	/* A loop ends where it would repeat a name. */
	ask(ld, "a.example.", T_A, true, &a);
	exp_begin(&want, "a.example.", T_A, 2, true);
	size_t at = exp_rr(&want, WIRE_HEADER_LEN, T_CNAME, 3600, rb, lb);
	exp_rr(&want, at, T_CNAME, 3600, ra, la);
	exp_end(&want, true, false);
	assert_reply(&a, &want);
	/* A CNAME to its own name is refused outright. */
	expect_refused(ld, "self.example CNAME SELF.example.", -EINVAL, "CNAME to its own name");
	localdata_free(ld);

	/* A chain longer than LOCALDATA_MAX_CHAIN ends after that many. */
	ld = localdata_new();
	for (int i = 0; i < 12; i++) {
		char line[64];
		snprintf(line, sizeof(line), "c%d.example CNAME c%d.example", i, i + 1);
		assert_int_equal(localdata_add_line(ld, line, err, sizeof(err)), 0);
	}
	assert_int_equal(localdata_add_line(ld, "c12.example A 192.0.2.1", err, sizeof(err)), 0);
	ask(ld, "c0.example.", T_A, false, &a);
	assert_int_equal(a.info.ancount, LOCALDATA_MAX_CHAIN);
	ask(ld, "c5.example.", T_A, false, &a);
	assert_int_equal(a.info.ancount, 8); /* c5..c11, then c12's A */
	ask(ld, "c6.example.", T_A, false, &a);
	assert_int_equal(a.info.ancount, 7);
	localdata_free(ld);
}

/* RFC 1034 §3.6.2: a CNAME is alone at its name. */
static void cname_conflicts(void **state)
{
	(void)state;
	struct localdata *ld =
	    store(LINES("host.example A 192.0.2.1", "alias.example CNAME host.example"));

	expect_refused(ld, "host.example CNAME other.example", -EINVAL, "has other records");
	expect_refused(ld, "alias.example A 192.0.2.2", -EINVAL, "has a CNAME");
	expect_refused(ld, "alias.example TXT \"x\"", -EINVAL, "has a CNAME");
	expect_refused(ld, "alias.example CNAME other.example", -EINVAL, "has a CNAME");
	expect_refused(ld, "ALIAS.example. CNAME other.example", -EINVAL, "ALIAS.example. has");
	/* The same CNAME again, in another case: one record. */
	char err[256];
	assert_int_equal(
	    localdata_add_line(ld, "Alias.Example 60 CNAME HOST.example.", err, sizeof(err)), 0);
	assert_int_equal(localdata_count(ld), 2);
	localdata_free(ld);
}

/* ---- duplicates and TTLs ------------------------------------------------- */

static void duplicates_and_rrset_ttl(void **state)
{
	(void)state;
	struct localdata *ld = store(
	    LINES("d.example A 192.0.2.1", "d.example A 192.0.2.1", "d.example 600 A 192.0.2.1",
		  "d.example 900 A 192.0.2.2", "d.example 60 AAAA 2001:db8::1",
		  "m.example MX 10 Mail.example", "m.example MX 10 mail.EXAMPLE.",
		  "m.example MX 20 mail.example", "m.example MX 10 mail2.example"));
	uint8_t a1[4], a2[4];
	struct answer a;
	struct msg want;

	assert_int_equal(localdata_count(ld), 6);
	v4("192.0.2.1", a1);
	v4("192.0.2.2", a2);
	/* One RRset, one TTL: the smallest given (RFC 2181 §5.2). */
	ask(ld, "d.example.", T_A, false, &a);
	exp_begin(&want, "d.example.", T_A, 2, false);
	exp_rr(&want, WIRE_HEADER_LEN, T_A, 600, a1, 4);
	exp_rr(&want, WIRE_HEADER_LEN, T_A, 600, a2, 4);
	assert_reply(&a, &want);
	/* ANY: every record of the name, in the order given. */
	ask(ld, "d.example.", T_ANY, false, &a);
	assert_int_equal(a.info.ancount, 3);
	ask(ld, "m.example.", T_MX, false, &a);
	assert_int_equal(a.info.ancount, 3);
	localdata_free(ld);
}

/* ---- errors ---------------------------------------------------------------- */

static void line_errors(void **state)
{
	(void)state;
	struct localdata *ld = localdata_new();
	static const struct {
		const char *line, *mention;
	} bad[] = {
		/* types */
		{ "x.example NS ns.example", "type 'NS' is not served" },
		{ "x.example HTTPS 1 . alpn=h2", "type 'HTTPS' is not served" },
		{ "x.example TYPE65 \\# 0", "type 'TYPE65' is not served" },
		{ "x.example FOO 1", "unknown type 'FOO'" },
		{ "x.example 192.0.2.1", "bad TTL '192.0.2.1'" },
		{ "x.example", "no type" },
		{ "x.example 60", "no type" },
		{ "", "empty" },
		{ "   ", "empty" },
		/* addresses */
		{ "x.example A 1.2.3", "bad address '1.2.3' for A" },
		{ "x.example A 1.2.3.256", "bad address '1.2.3.256'" },
		{ "x.example A ::1", "bad address '::1' for A" },
		{ "x.example AAAA 192.0.2.1", "bad address '192.0.2.1' for AAAA" },
		{ "x.example AAAA fe80::1%eth0", "bad address" },
		{ "x.example A", "A needs a value" },
		{ "x.example A 192.0.2.1 192.0.2.2", "unexpected '192.0.2.2' after the value" },
		/* names */
		{ "x..example A 192.0.2.1", "empty label" },
		{ ". A 192.0.2.1", "root" },
		{ "*.example A 192.0.2.1", "wildcards" },
		{ "x!.example A 192.0.2.1", "invalid character" },
		{ "x.example CNAME a..b", "bad name 'a..b'" },
		{ "x.example CNAME .", "root" },
		{ "x.example PTR", "PTR needs a value" },
		/* TTLs and classes */
		{ "x.example 2147483648 A 192.0.2.1", "TTL '2147483648' out of range" },
		{ "x.example 99999999999999999999 A 192.0.2.1", "out of range" },
		{ "x.example 1h A 192.0.2.1", "bad TTL '1h'" },
		{ "x.example -1 A 192.0.2.1", "unknown type '-1'" },
		{ "x.example CH TXT \"x\"", "class 'CH'" },
		/* TXT */
		{ "x.example TXT hello", "TXT needs quoted strings" },
		{ "x.example TXT", "TXT needs quoted strings" },
		{ "x.example TXT \"a\" b", "'b' is not a quoted string" },
		{ "x.example TXT \"open", "not closed" },
		{ "x.example TXT \"open\\\"", "not closed" },
		{ "x.example TXT \"a\\", "not closed" },
		{ "x.example TXT \"\\256\"", "bad escape" },
		{ "x.example TXT \"\\1\"", "bad escape" },
		/* MX, SRV */
		{ "x.example MX mail.example", "MX needs PREFERENCE NAME" },
		{ "x.example MX 65536 mail.example", "MX needs" },
		{ "x.example MX 10", "MX needs a value" },
		{ "x.example SRV 1 2 mail.example", "SRV needs PRIORITY WEIGHT PORT TARGET" },
		{ "x.example SRV 1 2 3", "SRV needs a value" },
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		expect_refused(ld, bad[i].line, -EINVAL, bad[i].mention);

	/* Labels of 63 characters, not 64. */
	char line[400];
	snprintf(line, sizeof(line), "%063d.example A 192.0.2.1", 0);
	assert_int_equal(localdata_check_line(line, NULL, 0), 0);
	snprintf(line, sizeof(line), "%064d.example A 192.0.2.1", 0);
	expect_refused(ld, line, -EINVAL, "label longer than 63 characters");
	/* A TXT string of 255 bytes is fine, 256 is not. */
	snprintf(line, sizeof(line), "x.example TXT \"%0255d\"", 0);
	char err[256] = "x";
	assert_int_equal(localdata_check_line(line, err, sizeof(err)), 0);
	assert_string_equal(err, "");
	snprintf(line, sizeof(line), "x.example TXT \"%0256d\"", 0);
	expect_refused(ld, line, -EINVAL, "longer than 255 bytes");
	/* A NUL-free control byte is shown as '?', never raw, in the reason. */
	expect_refused(ld, "x.example A 1.2.3.\x01", -EINVAL, "'1.2.3.?'");
	/* err may be absent. */
	assert_int_equal(localdata_add_line(ld, "bad", NULL, 0), -EINVAL);
	assert_int_equal(localdata_add_line(ld, "ok.example A 192.0.2.1", NULL, 0), 0);
	localdata_free(ld);
}

/* ---- hosts files -------------------------------------------------------- */

static const char HOSTS[] = "\xef\xbb\xbf# /etc/hosts\n"
			    "127.0.0.1\tlocalhost\n"
			    "\n"
			    "192.168.1.10  nas.home.arpa\tnas  files.home.arpa # the NAS\r\n"
			    "  192.168.1.11 printer.home.arpa\n"
			    "192.168.1.10 second.home.arpa\n"
			    "2001:db8::10 nas.home.arpa\n"
			    "2001:DB8::0:10 v6name.home.arpa\n"
			    "192.168.1.10 nas.home.arpa\n"
			    "fe80::1%lo0 ignored.home.arpa\n"
			    "::1 localhost ip6-localhost ip6-loopback\n"
			    "#192.168.1.99 commented.home.arpa\n"
			    "\t# indented comment\n"
			    "192.168.1.12 upper.HOME.arpa";

static struct localdata *hosts_store(const char *text)
{
	struct localdata *ld = localdata_new();
	char err[256] = "untouched";

	assert_non_null(ld);
	if (localdata_load_hosts_text(ld, "hosts", text, strlen(text), err, sizeof(err)) != 0)
		fail_msg("hosts text refused: %s", err);
	assert_string_equal(err, "");
	return ld;
}

static void hosts_entries(void **state)
{
	(void)state;
	struct localdata *ld = hosts_store(HOSTS);
	uint8_t rd[16], name[64];
	struct answer a;

	/* Every name and alias of a line gets its address. */
	v4("192.168.1.10", rd);
	expect_single(ld, "files.home.arpa.", T_A, 3600, rd, 4);
	expect_single(ld, "nas.", T_A, 3600, rd, 4);
	expect_single(ld, "second.home.arpa.", T_A, 3600, rd, 4);
	v4("192.168.1.11", rd);
	expect_single(ld, "printer.home.arpa.", T_A, 3600, rd, 4);
	v4("192.168.1.12", rd);
	expect_single(ld, "upper.home.arpa.", T_A, 3600, rd, 4);
	v4("127.0.0.1", rd);
	expect_single(ld, "localhost.", T_A, 3600, rd, 4);
	/* IPv6, on a line of its own; the duplicate line is stored once. */
	v4("192.168.1.10", rd);
	expect_single(ld, "nas.home.arpa.", T_A, 3600, rd, 4);
	v6("2001:db8::10", rd);
	expect_single(ld, "nas.home.arpa.", T_AAAA, 3600, rd, 16);
	expect_single(ld, "v6name.home.arpa.", T_AAAA, 3600, rd, 16);
	v6("::1", rd);
	expect_single(ld, "ip6-loopback.", T_AAAA, 3600, rd, 16);
	/* An IPv4-only name: NODATA for AAAA, not forwarded. */
	expect_nodata(ld, "printer.home.arpa.", T_AAAA);
	expect_nodata(ld, "files.home.arpa.", T_AAAA);
	/* Comments and the scoped address are no entries. */
	expect_none(ld, "commented.home.arpa.", T_A);
	expect_none(ld, "ignored.home.arpa.", T_AAAA);
	expect_none(ld, "the.", T_A);

	/* One PTR per address: the first name of the first line with it. */
	size_t n = name_rdata("nas.home.arpa", name);
	expect_single(ld, "10.1.168.192.in-addr.arpa.", T_PTR, 3600, name, n);
	n = name_rdata("printer.home.arpa", name);
	expect_single(ld, "11.1.168.192.in-addr.arpa.", T_PTR, 3600, name, n);
	n = name_rdata("upper.HOME.arpa", name); /* the case as written */
	expect_single(ld, "12.1.168.192.IN-ADDR.ARPA.", T_PTR, 3600, name, n);
	n = name_rdata("nas.home.arpa", name);
	expect_single(ld,
		      "0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.",
		      T_PTR, 3600, name, n);
	n = name_rdata("localhost", name);
	expect_single(ld,
		      "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa.",
		      T_PTR, 3600, name, n);
	expect_single(ld, "1.0.0.127.in-addr.arpa.", T_PTR, 3600, name, n);

	/* 2001:db8::10 on two lines: one PTR. */
	ask(ld, "0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.", T_PTR,
	    false, &a);
	assert_int_equal(a.info.ancount, 1);
	/* A: localhost, nas.home.arpa, nas, files, printer, second, upper;
	 * AAAA: nas.home.arpa, v6name, three names of ::1; PTR: 127.0.0.1,
	 * .10, .11, .12, 2001:db8::10, ::1. */
	assert_int_equal(localdata_count(ld), 18);
	localdata_free(ld);
}

/* A --local-data PTR added first wins over the hosts file's. */
static void hosts_after_local_data(void **state)
{
	(void)state;
	struct localdata *ld = store(LINES("10.1.168.192.in-addr.arpa PTR explicit.home.arpa",
					   "20.1.168.192.in-addr.arpa CNAME 20.sub.example"));
	char err[256];
	static const char text[] = "192.168.1.10 nas.home.arpa\n192.168.1.20 other.home.arpa\n";
	uint8_t name[64];

	assert_int_equal(localdata_load_hosts_text(ld, "h", text, strlen(text), err, sizeof(err)),
			 0);
	size_t n = name_rdata("explicit.home.arpa", name);
	expect_single(ld, "10.1.168.192.in-addr.arpa.", T_PTR, 3600, name, n);
	n = name_rdata("20.sub.example", name);
	expect_single(ld, "20.1.168.192.in-addr.arpa.", T_CNAME, 3600, name, n);
	localdata_free(ld);

	/* A hosts name that has a CNAME in local data is a conflict. */
	ld = store(LINES("nas.home.arpa CNAME box.home.arpa"));
	assert_int_equal(localdata_load_hosts_text(ld, "h", text, strlen(text), err, sizeof(err)),
			 -EINVAL);
	assert_contains(err, "h:1: nas.home.arpa. has a CNAME already");
	localdata_free(ld);
}

static void expect_hosts_error(const char *text, const char *want)
{
	struct localdata *ld = localdata_new();
	char err[256];

	assert_int_equal(
	    localdata_load_hosts_text(ld, "/etc/hosts", text, strlen(text), err, sizeof(err)),
	    -EINVAL);
	if (strcmp(err, want) != 0)
		fail_msg("'%s', expected '%s'", err, want);
	localdata_free(ld);
}

static void hosts_errors(void **state)
{
	(void)state;
	expect_hosts_error("# header\n192.168.1.1 ok\n1.2.3 nas\n",
			   "/etc/hosts:3: bad address '1.2.3'");
	expect_hosts_error("nas 192.168.1.1\n", "/etc/hosts:1: bad address 'nas'");
	expect_hosts_error("192.168.1.1\n", "/etc/hosts:1: address '192.168.1.1' without a name");
	expect_hosts_error("192.168.1.1 # only a comment\n",
			   "/etc/hosts:1: address '192.168.1.1' without a name");
	expect_hosts_error("192.168.1.1 good bad!name\n",
			   "/etc/hosts:1: bad name 'bad!name': invalid character");
	expect_hosts_error("\n\n192.168.1.1 a..b\n", "/etc/hosts:3: bad name 'a..b': empty label");

	/* A NUL inside a line (from the buffer form, which takes a length). */
	struct localdata *ld = localdata_new();
	char err[256];
	static const char nul[] = "192.168.1.1 a\n192.168.1.2 b\0c\n";
	assert_int_equal(localdata_load_hosts_text(ld, "t", nul, sizeof(nul) - 1, err, sizeof(err)),
			 -EINVAL);
	assert_string_equal(err, "t:2: NUL byte in line");
	/* Empty text, and only comments: nothing, no error. */
	assert_int_equal(localdata_load_hosts_text(ld, "t", "", 0, err, sizeof(err)), 0);
	assert_int_equal(localdata_load_hosts_text(ld, "t", "#\n#\n", 4, err, sizeof(err)), 0);
	localdata_free(ld);
}

static void hosts_file(void **state)
{
	(void)state;
	char path[] = "/tmp/test_localdata-XXXXXX";
	int fd = mkstemp(path);
	struct localdata *ld = localdata_new();
	char err[256];
	uint8_t rd[4];

	assert_true(fd >= 0);
	assert_int_equal(write(fd, HOSTS, strlen(HOSTS)), (ssize_t)strlen(HOSTS));
	close(fd);
	assert_int_equal(localdata_load_hosts(ld, path, err, sizeof(err)), 0);
	assert_string_equal(err, "");
	assert_int_equal(localdata_count(ld), 18); /* as from the text */
	v4("192.168.1.12", rd);
	expect_single(ld, "upper.home.arpa.", T_A, 3600, rd, 4);

	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs("192.168.1.1 a\n192.168.1.300 b\n", f);
	fclose(f);
	assert_int_equal(localdata_load_hosts(ld, path, err, sizeof(err)), -EINVAL);
	char want[128];
	snprintf(want, sizeof(want), "%s:2: bad address '192.168.1.300'", path);
	assert_string_equal(err, want);
	unlink(path);

	assert_int_equal(localdata_load_hosts(ld, path, err, sizeof(err)), -ENOENT);
	snprintf(want, sizeof(want), "%s: No such file or directory", path);
	assert_string_equal(err, want);
	/* Read errors keep their errno. */
	assert_int_equal(localdata_load_hosts(ld, "/tmp", err, sizeof(err)), -EISDIR);
	assert_string_equal(err, "/tmp: Is a directory");
	/* An empty file is no error. */
	snprintf(path, sizeof(path), "/tmp/test_localdata-XXXXXX");
	fd = mkstemp(path);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(localdata_load_hosts(ld, path, err, sizeof(err)), 0);
	unlink(path);
	localdata_free(ld);
}

/* ---- replies: flags, EDNS, size ------------------------------------------ */

static void header_and_edns(void **state)
{
	(void)state;
	struct localdata *ld = store(LINES("h.example A 192.0.2.1"));
	uint8_t rd[4];
	struct msg q, want;
	struct answer a;

	v4("192.0.2.1", rd);
	/* RD and CD copied, DO mirrored in the OPT, AD never set. */
	query_msg(&q, "h.example", T_A, WIRE_FLAG_CD | WIRE_FLAG_AD, true, true);
	ask_msg(ld, &q, &a);
	put_header(&want, QID, WIRE_FLAG_QR | WIRE_FLAG_AA | WIRE_FLAG_RA | WIRE_FLAG_CD, 1, 1, 0,
		   1);
	put_name(&want, "h.example");
	put16(&want, T_A);
	put16(&want, WIRE_CLASS_IN);
	exp_rr(&want, WIRE_HEADER_LEN, T_A, 3600, rd, 4);
	exp_end(&want, true, true);
	assert_reply(&a, &want);
	localdata_free(ld);
}

/* A reply that does not fit the buffer is reported (length 0), and
 * nothing is written past the buffer; the largest possible reply fits
 * LOCALDATA_MAX_REPLY. */
static void reply_size(void **state)
{
	(void)state;
	struct localdata *ld = localdata_new();
	char err[256], line[1024], label[64];
	struct wire_info qi;
	struct msg q;
	int rc;

	/* Eight CNAMEs between names of 255 bytes, then a full RRset. */
	memset(label, 'x', 62);
	label[62] = '\0';
	for (int i = 0; i <= LOCALDATA_MAX_CHAIN; i++) {
		char next[320];
		snprintf(next, sizeof(next), "%c%s.%s.%s.%s", 'a' + i + 1, label, label, label,
			 "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghij");
		if (i < LOCALDATA_MAX_CHAIN) {
			snprintf(line, sizeof(line), "%c%s.%s.%s.%s CNAME %s", 'a' + i, label,
				 label, label,
				 "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghij",
				 next);
			assert_int_equal(localdata_add_line(ld, line, err, sizeof(err)), 0);
		}
	}
	char last[320];
	snprintf(last, sizeof(last), "%c%s.%s.%s.%s", 'a' + LOCALDATA_MAX_CHAIN, label, label,
		 label, "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghij");
	/* TXT records of 255-byte strings until the name's budget is full. */
	for (int i = 0;; i++) {
		snprintf(line, sizeof(line), "%s TXT \"%0250d\"", last, i);
		rc = localdata_add_line(ld, line, err, sizeof(err));
		if (rc)
			break;
	}
	assert_int_equal(rc, -EFBIG);
	assert_contains(err, "would take more than 16384 bytes in an answer");

	char first[320];
	snprintf(first, sizeof(first), "a%s.%s.%s.%s", label, label, label,
		 "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghij");
	query_msg(&q, first, T_TXT, 0, true, true);
	assert_int_equal(wire_parse(q.b, q.len, &qi), 0);
	uint8_t *out = malloc(LOCALDATA_MAX_REPLY + 16);
	size_t len;
	assert_non_null(out);
	memset(out, 0x5a, LOCALDATA_MAX_REPLY + 16);
	assert_int_equal(localdata_lookup(ld, &qi, out, LOCALDATA_MAX_REPLY, &len),
			 LOCALDATA_ANSWER);
	struct wire_info ri;
	assert_int_equal(wire_parse(out, len, &ri), 0);
	assert_int_equal(ri.ancount, LOCALDATA_MAX_CHAIN + 16384 / (12 + 251));
	assert_true(len > LOCALDATA_MAX_REPLY - 600 && len <= LOCALDATA_MAX_REPLY);
	for (size_t i = LOCALDATA_MAX_REPLY; i < LOCALDATA_MAX_REPLY + 16; i++)
		assert_int_equal(out[i], 0x5a);

	/* One byte short at every size down to the header: reported, and the
	 * bytes past the buffer untouched. */
	size_t full = len;
	for (size_t cap = full - 1;; cap = cap > 600 ? cap - 97 : cap - 1) {
		memset(out, 0x5a, LOCALDATA_MAX_REPLY + 16);
		len = 1;
		assert_int_equal(localdata_lookup(ld, &qi, out, cap, &len), LOCALDATA_ANSWER);
		assert_int_equal(len, 0);
		for (size_t i = cap; i < full; i++)
			if (out[i] != 0x5a)
				fail_msg("cap %zu: byte %zu written", cap, i);
		if (cap == 0)
			break;
	}
	free(out);
	localdata_free(ld);
}

/* LOCALDATA_MAX_RECORDS holds, with a reason. */
static void record_bound(void **state)
{
	(void)state;
	size_t lines = LOCALDATA_MAX_RECORDS / 2 + 1, cap = lines * 32;
	char *text = malloc(cap), err[256];
	size_t o = 0;

	assert_non_null(text);
	/* Two records a line: an A and its PTR. */
	for (size_t i = 0; i < lines; i++)
		o += (size_t)snprintf(text + o, cap - o, "10.%zu.%zu.%zu h%zu\n", i >> 16,
				      (i >> 8) & 255, i & 255, i);
	struct localdata *ld = localdata_new();
	assert_int_equal(localdata_load_hosts_text(ld, "big", text, o, err, sizeof(err)), -EFBIG);
	char want[64];
	snprintf(want, sizeof(want), "big:%zu: more than %d records", lines, LOCALDATA_MAX_RECORDS);
	assert_string_equal(err, want);
	assert_int_equal(localdata_count(ld), LOCALDATA_MAX_RECORDS);
	localdata_free(ld);
	free(text);
}

/* ---- threads ---------------------------------------------------------------- */

struct reader {
	const struct localdata *ld;
	unsigned seed, answered;
};

static void *read_many(void *arg)
{
	struct reader *r = arg;
	uint8_t out[512];

	for (unsigned i = 0; i < 20000; i++) {
		struct msg q;
		struct wire_info qi;
		char name[32];
		size_t len;
		snprintf(name, sizeof(name), "h%u.example", (r->seed + i) % 300);
		query_msg(&q, name, (i & 1) ? T_A : T_AAAA, 0, i & 2, false);
		if (wire_parse(q.b, q.len, &qi) != 0)
			return NULL;
		if (localdata_lookup(r->ld, &qi, out, sizeof(out), &len) == LOCALDATA_ANSWER &&
		    len > 0)
			r->answered++;
	}
	return NULL;
}

/* Look-ups share a built store without locks. */
static void concurrent_lookups(void **state)
{
	(void)state;
	struct localdata *ld = localdata_new();
	char err[256], line[64];
	pthread_t t[4];
	struct reader r[4];

	for (unsigned i = 0; i < 200; i++) {
		snprintf(line, sizeof(line), "h%u.example A 192.0.2.%u", i, i % 250);
		assert_int_equal(localdata_add_line(ld, line, err, sizeof(err)), 0);
	}
	for (int i = 0; i < 4; i++) {
		r[i] = (struct reader){ ld, (unsigned)i * 77, 0 };
		assert_int_equal(pthread_create(&t[i], NULL, read_many, &r[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		assert_int_equal(pthread_join(t[i], NULL), 0);
		/* Names h0..h199 of h0..h299 are listed: two in three. */
		assert_true(r[i].answered > 13000 && r[i].answered < 14000);
	}
	localdata_free(ld);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(each_type),
		cmocka_unit_test(ttls),
		cmocka_unit_test(names_and_case),
		cmocka_unit_test(nodata_for_other_types),
		cmocka_unit_test(names_not_listed),
		cmocka_unit_test(cname_chains),
		cmocka_unit_test(cname_loops_and_limits),
		cmocka_unit_test(cname_conflicts),
		cmocka_unit_test(duplicates_and_rrset_ttl),
		cmocka_unit_test(line_errors),
		cmocka_unit_test(hosts_entries),
		cmocka_unit_test(hosts_after_local_data),
		cmocka_unit_test(hosts_errors),
		cmocka_unit_test(hosts_file),
		cmocka_unit_test(header_and_edns),
		cmocka_unit_test(reply_size),
		cmocka_unit_test(record_bound),
		cmocka_unit_test(concurrent_lookups),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
