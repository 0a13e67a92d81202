/*
 * Unit tests for lib/localzone: the built-in zones, blocklist files and the
 * replies written for both.  Every reply is checked as a client would see
 * it: parsed with wire_parse(), then its records decoded by a small reader
 * written here, independent of localzone.c.
 */
#include "lib/localzone.h"

#include "lib/options.h"

#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <cmocka.h>

enum {
	T_A = 1,
	T_NS = 2,
	T_CNAME = 5,
	T_SOA = 6,
	T_PTR = 12,
	T_MX = 15,
	T_TXT = 16,
	T_AAAA = 28,
	T_SVCB = 64,
	T_HTTPS = 65,
	T_ANY = 255,
	QUERY_ID = 0xbeef,
};

/* ---- queries ----------------------------------------------------------- */

struct msg {
	uint8_t b[1024];
	size_t len;
};

static void put8(struct msg *m, unsigned v)
{
	assert_true(m->len < sizeof(m->b));
	m->b[m->len++] = (uint8_t)v;
}

static void put16(struct msg *m, unsigned v)
{
	put8(m, (v >> 8) & 0xff);
	put8(m, v & 0xff);
}

/* Dotted text to wire form, case kept; "" or "." is the root. */
static size_t text_wire(const char *text, uint8_t *out)
{
	size_t n = 0;

	for (const char *p = text; *p && strcmp(p, ".") != 0;) {
		const char *dot = strchr(p, '.');
		size_t l = dot ? (size_t)(dot - p) : strlen(p);
		assert_true(l > 0 && l < 64 && n + l + 2 <= WIRE_MAX_NAME);
		out[n++] = (uint8_t)l;
		memcpy(out + n, p, l);
		n += l;
		p += l;
		if (*p == '.')
			p++;
	}
	out[n++] = 0;
	return n;
}

static void make_query(struct msg *m, const char *name, unsigned type, unsigned cls, unsigned flags,
		       bool edns, bool dnssec_ok)
{
	uint8_t wire[WIRE_MAX_NAME];
	size_t n = text_wire(name, wire);

	m->len = 0;
	put16(m, QUERY_ID);
	put16(m, flags);
	put16(m, 1);
	put16(m, 0);
	put16(m, 0);
	put16(m, edns ? 1 : 0);
	for (size_t i = 0; i < n; i++)
		put8(m, wire[i]);
	put16(m, type);
	put16(m, cls);
	if (edns) {
		put8(m, 0);
		put16(m, WIRE_TYPE_OPT);
		put16(m, 1232);
		put16(m, 0);
		put16(m, dnssec_ok ? 0x8000 : 0);
		put16(m, 0);
	}
}

/* ---- replies ----------------------------------------------------------- */

struct rr {
	uint8_t owner[WIRE_MAX_NAME];
	size_t owner_len;
	unsigned type, cls;
	uint32_t ttl;
	const uint8_t *rdata;
	size_t rdlen;
};

struct reply {
	uint8_t b[LOCALZONE_MAX_REPLY];
	size_t len;
	struct wire_info info;
	unsigned rcode;
	unsigned n_an, n_ns;
	struct rr an[8], ns[4];
	bool has_ede;
	unsigned ede;
};

/* Expand the (possibly compressed) name at *off; advance *off past it. */
static size_t read_name(const uint8_t *msg, size_t len, size_t *off, uint8_t *out)
{
	size_t p = *off, n = 0;
	bool jumped = false;

	for (unsigned hops = 0; hops < 128;) {
		assert_true(p < len);
		uint8_t l = msg[p];
		if ((l & 0xc0) == 0xc0) {
			assert_true(p + 1 < len);
			if (!jumped)
				*off = p + 2;
			jumped = true;
			p = (size_t)(l & 0x3f) << 8 | msg[p + 1];
			hops++;
			continue;
		}
		assert_true(l < 64 && p + 1 + l <= len && n + 1 + l <= WIRE_MAX_NAME);
		memcpy(out + n, msg + p, l + 1u);
		n += l + 1u;
		p += l + 1u;
		if (l == 0) {
			if (!jumped)
				*off = p;
			return n;
		}
	}
	fail_msg("compression loop");
	return 0;
}

static void read_rr(const struct reply *r, size_t *off, struct rr *rr)
{
	rr->owner_len = read_name(r->b, r->len, off, rr->owner);
	assert_true(*off + 10 <= r->len);
	rr->type = wire_read16(r->b + *off);
	rr->cls = wire_read16(r->b + *off + 2);
	rr->ttl = (uint32_t)wire_read16(r->b + *off + 4) << 16 | wire_read16(r->b + *off + 6);
	rr->rdlen = wire_read16(r->b + *off + 8);
	rr->rdata = r->b + *off + 10;
	*off += 10 + rr->rdlen;
	assert_true(*off <= r->len);
}

static uint8_t lower(uint8_t c)
{
	return (c >= 'A' && c <= 'Z') ? (uint8_t)(c + 32) : c;
}

static bool name_equal(const uint8_t *a, size_t alen, const char *text)
{
	uint8_t b[WIRE_MAX_NAME];
	size_t blen = text_wire(text, b);

	if (alen != blen)
		return false;
	for (size_t i = 0; i < alen; i++)
		if (lower(a[i]) != lower(b[i]))
			return false;
	return true;
}

/* Send @name/@type through @lz.  Checks what every reply must satisfy and
 * decodes it into @r.  Returns the verdict. */
static enum localzone_verdict ask_full(const struct localzone *lz, const char *name, unsigned type,
				       bool edns, bool dnssec_ok, struct reply *r)
{
	struct msg q;
	struct wire_info qi;

	memset(r, 0, sizeof(*r));
	make_query(&q, name, type, WIRE_CLASS_IN, WIRE_FLAG_RD | WIRE_FLAG_CD, edns, dnssec_ok);
	assert_int_equal(wire_parse(q.b, q.len, &qi), 0);
	r->len = 12345;
	enum localzone_verdict v = localzone_lookup(lz, &qi, r->b, sizeof(r->b), &r->len);
	if (v == LOCALZONE_FORWARD) {
		assert_int_equal(r->len, 0);
		return v;
	}
	assert_true(r->len > 0 && r->len <= LOCALZONE_MAX_REPLY);
	assert_int_equal(wire_parse(r->b, r->len, &r->info), 0);
	/* The client's ID and question, exactly as sent (case kept). */
	assert_int_equal(r->info.id, QUERY_ID);
	assert_int_equal(r->info.question_end, qi.question_end);
	assert_memory_equal(r->b + WIRE_HEADER_LEN, q.b + WIRE_HEADER_LEN,
			    qi.question_end - WIRE_HEADER_LEN);
	assert_true(r->info.flags & WIRE_FLAG_QR);
	assert_true(r->info.flags & WIRE_FLAG_RA);
	assert_true(r->info.flags & WIRE_FLAG_RD);
	assert_true(r->info.flags & WIRE_FLAG_CD);
	assert_false(r->info.flags & (WIRE_FLAG_TC | WIRE_FLAG_AD));
	assert_int_equal(wire_opcode(r->info.flags), 0);
	/* AA on built-in zone data and local data only. */
	assert_int_equal(!!(r->info.flags & WIRE_FLAG_AA),
			 v == LOCALZONE_LOCAL || v == LOCALZONE_DATA);
	r->rcode = r->info.flags & 0xf;

	size_t off = r->info.question_end;
	r->n_an = r->info.ancount;
	r->n_ns = r->info.nscount;
	assert_true(r->n_an <= 8 && r->n_ns <= 4);
	for (unsigned i = 0; i < r->n_an; i++)
		read_rr(r, &off, &r->an[i]);
	for (unsigned i = 0; i < r->n_ns; i++)
		read_rr(r, &off, &r->ns[i]);

	/* An OPT exactly when the query had one (RFC 6891 §7), DO mirrored. */
	assert_int_equal(r->info.has_edns, edns);
	assert_int_equal(r->info.arcount, edns ? 1 : 0);
	if (edns) {
		assert_int_equal(!!(r->info.edns_ttl & 0x8000), dnssec_ok);
		assert_int_equal(r->info.edns_ttl & 0xffff7fff, 0);
		const uint8_t *rd = r->b + r->info.opt_start + 11;
		size_t rdlen = r->info.opt_end - r->info.opt_start - 11;
		for (size_t o = 0; o + 4 <= rdlen;) {
			unsigned code = wire_read16(rd + o), olen = wire_read16(rd + o + 2);
			if (code == WIRE_OPT_EDE) {
				assert_int_equal(olen, 2);
				r->has_ede = true;
				r->ede = wire_read16(rd + o + 4);
			}
			o += 4 + olen;
		}
	}
	/* EDE "Blocked" on blocked replies only. */
	assert_int_equal(r->has_ede, edns && v == LOCALZONE_BLOCKED);
	if (r->has_ede)
		assert_int_equal(r->ede, LOCALZONE_EDE_BLOCKED);
	return v;
}

static enum localzone_verdict ask(const struct localzone *lz, const char *name, unsigned type,
				  struct reply *r)
{
	/* Alternate with and without EDNS: both must hold everywhere. */
	static unsigned n;
	return ask_full(lz, name, type, (n++ & 1) != 0, false, r);
}

/* The RFC 6303 SOA, owned by @apex. */
static void check_soa(const struct rr *rr, const char *apex)
{
	static const uint8_t rdata[] = {
		9,   'l',  'o',	 'c',  'a', 'l', 'h', 'o', 's', 't', 0, 6, 'n', 'o', 'b', 'o',
		'd', 'y',  7,	 'i',  'n', 'v', 'a', 'l', 'i', 'd', 0, 0, 0,	0,   1, /* serial */
		0,   0,	   0x0e, 0x10, /* refresh 3600 */
		0,   0,	   0x04, 0xb0, /* retry 1200 */
		0,   0x09, 0x3a, 0x80, /* expire 604800 */
		0,   0,	   0x2a, 0x30, /* minimum 10800 */
	};

	assert_int_equal(rr->type, T_SOA);
	assert_int_equal(rr->cls, WIRE_CLASS_IN);
	assert_int_equal(rr->ttl, 10800);
	if (!name_equal(rr->owner, rr->owner_len, apex))
		fail_msg("SOA owner is not %s", apex);
	assert_int_equal(rr->rdlen, sizeof(rdata));
	assert_memory_equal(rr->rdata, rdata, sizeof(rdata));
}

static void expect_forward(const struct localzone *lz, const char *name, unsigned type)
{
	struct reply r;
	if (ask(lz, name, type, &r) != LOCALZONE_FORWARD)
		fail_msg("%s type %u should be forwarded", name, type);
}

/* A negative answer from the built-in zone at @apex. */
static void expect_negative(const struct localzone *lz, const char *name, unsigned type,
			    unsigned rcode, const char *apex)
{
	struct reply r;

	if (ask(lz, name, type, &r) != LOCALZONE_LOCAL)
		fail_msg("%s type %u should be answered locally", name, type);
	if (r.rcode != rcode)
		fail_msg("%s type %u: rcode %u, expected %u", name, type, r.rcode, rcode);
	assert_int_equal(r.n_an, 0);
	assert_int_equal(r.n_ns, 1);
	check_soa(&r.ns[0], apex);
}

static void expect_nxdomain(const struct localzone *lz, const char *name, const char *apex)
{
	expect_negative(lz, name, T_A, WIRE_RCODE_NXDOMAIN, apex);
	expect_negative(lz, name, T_AAAA, WIRE_RCODE_NXDOMAIN, apex);
	expect_negative(lz, name, T_PTR, WIRE_RCODE_NXDOMAIN, apex);
}

static void expect_nodata(const struct localzone *lz, const char *name, unsigned type,
			  const char *apex)
{
	expect_negative(lz, name, type, WIRE_RCODE_NOERROR, apex);
}

/* The apex of an RFC 6303 zone: SOA and NS answered, other types NODATA. */
static void expect_apex(const struct localzone *lz, const char *apex)
{
	struct reply r;

	assert_int_equal(ask(lz, apex, T_SOA, &r), LOCALZONE_LOCAL);
	assert_int_equal(r.rcode, WIRE_RCODE_NOERROR);
	assert_int_equal(r.n_an, 1);
	assert_int_equal(r.n_ns, 0);
	check_soa(&r.an[0], apex);

	assert_int_equal(ask(lz, apex, T_NS, &r), LOCALZONE_LOCAL);
	assert_int_equal(r.rcode, WIRE_RCODE_NOERROR);
	assert_int_equal(r.n_an, 1);
	assert_int_equal(r.an[0].type, T_NS);
	assert_true(name_equal(r.an[0].owner, r.an[0].owner_len, apex));
	assert_true(name_equal(r.an[0].rdata, r.an[0].rdlen, "localhost."));

	expect_nodata(lz, apex, T_A, apex);
	expect_nodata(lz, apex, T_TXT, apex);
}

/* "a.b.c.d.in-addr.arpa." for an IPv4 address. */
static void rev4(const char *ip, char *out, size_t cap)
{
	uint8_t a[4];
	assert_int_equal(inet_pton(AF_INET, ip, a), 1);
	snprintf(out, cap, "%u.%u.%u.%u.in-addr.arpa.", a[3], a[2], a[1], a[0]);
}

/* The 32-nibble ip6.arpa name of an IPv6 address. */
static void rev6(const char *ip, char *out, size_t cap)
{
	uint8_t a[16];
	size_t o = 0;

	assert_int_equal(inet_pton(AF_INET6, ip, a), 1);
	assert_true(cap > 64 + 10);
	for (int i = 15; i >= 0; i--) {
		static const char hex[] = "0123456789abcdef";
		out[o++] = hex[a[i] & 0xf];
		out[o++] = '.';
		out[o++] = hex[a[i] >> 4];
		out[o++] = '.';
	}
	snprintf(out + o, cap - o, "ip6.arpa.");
}

/* ---- blocklist files --------------------------------------------------- */

static char tmpdir[64];
static unsigned file_seq;

static int setup_dir(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_localzone-XXXXXX");
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int remove_dir(void **state)
{
	(void)state;
	char path[128];
	for (unsigned i = 0; i < file_seq; i++) {
		snprintf(path, sizeof(path), "%s/list%u", tmpdir, i);
		unlink(path);
	}
	return rmdir(tmpdir);
}

/* A new file holding @len bytes of @content; its path in @path. */
static void write_file_n(const char *content, size_t len, char *path, size_t cap)
{
	snprintf(path, cap, "%s/list%u", tmpdir, file_seq++);
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(content, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

static void write_file(const char *content, char *path, size_t cap)
{
	write_file_n(content, strlen(content), path, cap);
}

static int load(struct localzone *lz, const char *content, char *err, size_t errlen)
{
	char path[128];
	write_file(content, path, sizeof(path));
	return localzone_load_blocklist(lz, path, err, errlen);
}

static void load_ok(struct localzone *lz, const char *content)
{
	char err[256] = "untouched";
	int rc = load(lz, content, err, sizeof(err));
	if (rc != 0)
		fail_msg("load failed (%d): %s", rc, err);
	assert_string_equal(err, "");
}

static void expect_blocked(const struct localzone *lz, const char *name)
{
	struct reply r;
	if (ask(lz, name, T_A, &r) != LOCALZONE_BLOCKED)
		fail_msg("%s should be blocked", name);
}

/* ---- built-in zones ---------------------------------------------------- */

static void localhost_zone(void **state)
{
	(void)state;
	struct localzone *lz = localzone_new();
	struct reply r;
	static const uint8_t v4[] = { 127, 0, 0, 1 }, v6[16] = { [15] = 1 };
	static const char *const names[] = { "localhost.", "LOCALHOST.", "localhost",
					     "www.LocalHost.", "a.b.c.localhost." };

	assert_non_null(lz);
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		assert_int_equal(ask(lz, names[i], T_A, &r), LOCALZONE_LOCAL);
		assert_int_equal(r.rcode, WIRE_RCODE_NOERROR);
		assert_int_equal(r.n_an, 1);
		assert_int_equal(r.n_ns, 0);
		assert_int_equal(r.an[0].type, T_A);
		assert_int_equal(r.an[0].cls, WIRE_CLASS_IN);
		assert_int_equal(r.an[0].ttl, 10800);
		assert_true(name_equal(r.an[0].owner, r.an[0].owner_len, names[i]));
		assert_int_equal(r.an[0].rdlen, 4);
		assert_memory_equal(r.an[0].rdata, v4, 4);

		assert_int_equal(ask(lz, names[i], T_AAAA, &r), LOCALZONE_LOCAL);
		assert_int_equal(r.rcode, WIRE_RCODE_NOERROR);
		assert_int_equal(r.n_an, 1);
		assert_int_equal(r.an[0].type, T_AAAA);
		assert_int_equal(r.an[0].rdlen, 16);
		assert_memory_equal(r.an[0].rdata, v6, 16);

		assert_int_equal(ask(lz, names[i], T_ANY, &r), LOCALZONE_LOCAL);
		assert_true(r.n_an >= 2);
		assert_int_equal(r.an[0].type, T_A);
		assert_int_equal(r.an[1].type, T_AAAA);

		/* Other types: NODATA with the zone's SOA. */
		expect_nodata(lz, names[i], T_MX, "localhost.");
		expect_nodata(lz, names[i], T_HTTPS, "localhost.");
	}
	/* At the apex, also SOA and NS. */
	assert_int_equal(ask(lz, "localhost.", T_SOA, &r), LOCALZONE_LOCAL);
	assert_int_equal(r.n_an, 1);
	check_soa(&r.an[0], "localhost.");
	assert_int_equal(ask(lz, "localhost.", T_ANY, &r), LOCALZONE_LOCAL);
	assert_int_equal(r.n_an, 4); /* A, AAAA, SOA, NS */
	/* Below the apex, SOA is NODATA. */
	expect_nodata(lz, "www.localhost.", T_SOA, "localhost.");

	/* Only the label "localhost" at the end counts. */
	expect_forward(lz, "notlocalhost.", T_A);
	expect_forward(lz, "localhost.example.", T_A);
	expect_forward(lz, "localhostx.", T_A);
	localzone_free(lz);
}

static void special_use_domains(void **state)
{
	(void)state;
	struct localzone *lz = localzone_new();
	static const char *const apexes[] = { "invalid.", "local.", "onion.", "home.arpa.",
					      "internal." };

	assert_non_null(lz);
	for (size_t i = 0; i < sizeof(apexes) / sizeof(apexes[0]); i++) {
		char name[128];
		expect_apex(lz, apexes[i]);
		snprintf(name, sizeof(name), "host.%s", apexes[i]);
		expect_nxdomain(lz, name, apexes[i]);
		snprintf(name, sizeof(name), "A.Deeper.Name.%s", apexes[i]);
		expect_nxdomain(lz, name, apexes[i]);
	}
	expect_nxdomain(lz, "printer.LOCAL.", "local.");
	expect_nxdomain(lz, "duckduckgogg42xjoc72x3sjasowoarfbgcmvfimaftt6twagswzczad.onion.",
			"onion.");
	expect_nxdomain(lz, "router.Home.Arpa.", "home.arpa.");
	expect_forward(lz, "local.example.", T_A);
	expect_forward(lz, "example.local.com.", T_A);
	expect_forward(lz, "arpa.", T_SOA);
	localzone_free(lz);
}

static void private_reverse_ipv4(void **state)
{
	(void)state;
	struct localzone *lz = localzone_new();
	static const struct {
		const char *ip;
		const char *apex;
	} local[] = {
		{ "10.0.0.1", "10.in-addr.arpa." },
		{ "10.255.255.255", "10.in-addr.arpa." },
		{ "172.16.0.1", "16.172.in-addr.arpa." },
		{ "172.20.1.2", "20.172.in-addr.arpa." },
		{ "172.31.255.255", "31.172.in-addr.arpa." },
		{ "192.168.1.1", "168.192.in-addr.arpa." },
		{ "0.1.2.3", "0.in-addr.arpa." },
		{ "127.0.0.2", "127.in-addr.arpa." },
		{ "127.1.2.3", "127.in-addr.arpa." },
		{ "169.254.10.20", "254.169.in-addr.arpa." },
		{ "192.0.2.7", "2.0.192.in-addr.arpa." },
		{ "198.51.100.7", "100.51.198.in-addr.arpa." },
		{ "203.0.113.7", "113.0.203.in-addr.arpa." },
		{ "100.64.0.1", "64.100.in-addr.arpa." },
		{ "100.100.100.100", "100.100.in-addr.arpa." },
		{ "100.127.255.255", "127.100.in-addr.arpa." },
	};
	static const char *const forwarded[] = {
		"8.8.8.8",     "9.9.9.9",	  "172.15.255.255", "172.32.0.1",  "192.169.0.1",
		"169.253.1.1", "192.0.3.1",	  "198.51.101.1",   "203.0.114.1", "100.63.255.255",
		"100.128.0.1", "255.255.255.254", "11.0.0.1",	    "1.0.0.128",
	};
	char name[96];

	assert_non_null(lz);
	for (size_t i = 0; i < sizeof(local) / sizeof(local[0]); i++) {
		rev4(local[i].ip, name, sizeof(name));
		expect_nxdomain(lz, name, local[i].apex);
		expect_apex(lz, local[i].apex);
	}
	expect_nxdomain(lz, "x.255.255.255.255.in-addr.arpa.", "255.255.255.255.in-addr.arpa.");
	expect_apex(lz, "255.255.255.255.in-addr.arpa.");
	/* Names between the apexes and the public tree are not ours. */
	expect_forward(lz, "172.in-addr.arpa.", T_NS);
	expect_forward(lz, "192.in-addr.arpa.", T_NS);
	expect_forward(lz, "100.in-addr.arpa.", T_NS);
	expect_forward(lz, "in-addr.arpa.", T_NS);
	for (size_t i = 0; i < sizeof(forwarded) / sizeof(forwarded[0]); i++) {
		rev4(forwarded[i], name, sizeof(name));
		expect_forward(lz, name, T_PTR);
	}
	/* Every /16 of 172.16.0.0/12 and every /16 of 100.64.0.0/10. */
	for (unsigned b = 0; b < 256; b++) {
		struct reply r;
		snprintf(name, sizeof(name), "1.1.%u.172.in-addr.arpa.", b);
		assert_int_equal(ask(lz, name, T_PTR, &r),
				 b >= 16 && b <= 31 ? LOCALZONE_LOCAL : LOCALZONE_FORWARD);
		snprintf(name, sizeof(name), "1.1.%u.100.in-addr.arpa.", b);
		assert_int_equal(ask(lz, name, T_PTR, &r),
				 b >= 64 && b <= 127 ? LOCALZONE_LOCAL : LOCALZONE_FORWARD);
	}
	localzone_free(lz);
}

static void private_reverse_ipv6(void **state)
{
	(void)state;
	struct localzone *lz = localzone_new();
	static const struct {
		const char *ip;
		const char *apex;
	} local[] = {
		{ "fd00::1", "d.f.ip6.arpa." },
		{ "fdff:ffff::1", "d.f.ip6.arpa." },
		{ "fe80::1", "8.e.f.ip6.arpa." },
		{ "fe9a::1", "9.e.f.ip6.arpa." },
		{ "feab::1", "a.e.f.ip6.arpa." },
		{ "febf:ffff::1", "b.e.f.ip6.arpa." },
		{ "2001:db8::1", "8.b.d.0.1.0.0.2.ip6.arpa." },
		{ "2001:db8:ffff::1", "8.b.d.0.1.0.0.2.ip6.arpa." },
	};
	static const char *const forwarded[] = {
		"2001:4860:4860::8888", "fc00::1", "fec0::1",	    "fe00::1",
		"2001:db9::1",		"::2",	   "::ffff:1.2.3.4"
	};
	char name[128], apex[96];

	assert_non_null(lz);
	for (size_t i = 0; i < sizeof(local) / sizeof(local[0]); i++) {
		rev6(local[i].ip, name, sizeof(name));
		expect_nxdomain(lz, name, local[i].apex);
		expect_apex(lz, local[i].apex);
	}
	/* :: is a zone of its own, apex = the full 32-nibble name. */
	rev6("::", apex, sizeof(apex));
	expect_apex(lz, apex);
	snprintf(name, sizeof(name), "x.%s", apex);
	expect_nxdomain(lz, name, apex);
	for (size_t i = 0; i < sizeof(forwarded) / sizeof(forwarded[0]); i++) {
		rev6(forwarded[i], name, sizeof(name));
		expect_forward(lz, name, T_PTR);
	}
	expect_forward(lz, "f.ip6.arpa.", T_NS);
	expect_forward(lz, "e.f.ip6.arpa.", T_NS);
	expect_forward(lz, "ip6.arpa.", T_NS);
	localzone_free(lz);
}

static void loopback_ptr(void **state)
{
	(void)state;
	struct localzone *lz = localzone_new();
	struct reply r;
	char name[96];

	assert_non_null(lz);
	assert_int_equal(ask(lz, "1.0.0.127.In-Addr.Arpa.", T_PTR, &r), LOCALZONE_LOCAL);
	assert_int_equal(r.rcode, WIRE_RCODE_NOERROR);
	assert_int_equal(r.n_an, 1);
	assert_int_equal(r.an[0].type, T_PTR);
	assert_true(name_equal(r.an[0].owner, r.an[0].owner_len, "1.0.0.127.in-addr.arpa."));
	assert_true(name_equal(r.an[0].rdata, r.an[0].rdlen, "localhost."));
	/* The name exists: other types NODATA; so do the empty non-terminals
	 * above it (RFC 8020: NXDOMAIN there would deny 1.0.0.127 itself). */
	expect_nodata(lz, "1.0.0.127.in-addr.arpa.", T_A, "127.in-addr.arpa.");
	expect_nodata(lz, "0.0.127.in-addr.arpa.", T_PTR, "127.in-addr.arpa.");
	expect_nodata(lz, "0.127.in-addr.arpa.", T_PTR, "127.in-addr.arpa.");
	expect_nxdomain(lz, "2.0.0.127.in-addr.arpa.", "127.in-addr.arpa.");
	expect_nxdomain(lz, "x.1.0.0.127.in-addr.arpa.", "127.in-addr.arpa.");
	expect_nxdomain(lz, "1.0.1.127.in-addr.arpa.", "127.in-addr.arpa.");

	/* ::1: the zone apex is the address itself. */
	rev6("::1", name, sizeof(name));
	assert_int_equal(ask(lz, name, T_PTR, &r), LOCALZONE_LOCAL);
	assert_int_equal(r.rcode, WIRE_RCODE_NOERROR);
	assert_int_equal(r.n_an, 1);
	assert_true(name_equal(r.an[0].rdata, r.an[0].rdlen, "localhost."));
	expect_apex(lz, name);
	localzone_free(lz);
}

static void resolver_arpa_ddr(void **state)
{
	(void)state;
	struct localzone *lz = localzone_new();

	assert_non_null(lz);
	/* RFC 9462: no designated resolvers from us, and none from upstream. */
	expect_nodata(lz, "_dns.resolver.arpa.", T_SVCB, "resolver.arpa.");
	expect_nodata(lz, "_DNS.Resolver.Arpa.", T_SVCB, "resolver.arpa.");
	expect_nodata(lz, "_dns.resolver.arpa.", T_A, "resolver.arpa.");
	expect_nodata(lz, "anything.resolver.arpa.", T_AAAA, "resolver.arpa.");
	expect_apex(lz, "resolver.arpa.");
	localzone_free(lz);
}

static void forwarded_names(void **state)
{
	(void)state;
	struct localzone *lz = localzone_new();
	struct msg q;
	struct wire_info qi;
	uint8_t out[LOCALZONE_MAX_REPLY];
	size_t len;

	assert_non_null(lz);
	expect_forward(lz, "www.example.", T_A);
	expect_forward(lz, "example.", T_SOA);
	expect_forward(lz, "test.", T_A); /* RFC 6761 §6.2 */
	expect_forward(lz, "dns.example.test.", T_A);
	expect_forward(lz, "router.lan.", T_A); /* reserved by no one */
	expect_forward(lz, ".", T_NS);
	expect_forward(lz, "com.", T_NS);
	expect_forward(lz, "resolver.arpa.example.", T_A);

	/* Only standard IN queries: CHAOS, opcode NOTIFY (4) go on. */
	make_query(&q, "localhost.", T_TXT, 3, WIRE_FLAG_RD, false, false);
	assert_int_equal(wire_parse(q.b, q.len, &qi), 0);
	len = 99;
	assert_int_equal(localzone_lookup(lz, &qi, out, sizeof(out), &len), LOCALZONE_FORWARD);
	assert_int_equal(len, 0);
	make_query(&q, "localhost.", T_SOA, WIRE_CLASS_IN, 4 << 11, false, false);
	assert_int_equal(wire_parse(q.b, q.len, &qi), 0);
	assert_int_equal(localzone_lookup(lz, &qi, out, sizeof(out), &len), LOCALZONE_FORWARD);
	/* No question: nothing to decide. */
	memset(&qi, 0, sizeof(qi));
	qi.has_header = true;
	assert_int_equal(localzone_lookup(lz, &qi, out, sizeof(out), &len), LOCALZONE_FORWARD);
	localzone_free(lz);
	localzone_free(NULL);
}

/* ---- blocklists -------------------------------------------------------- */

static void blocklist_plain_names(void **state)
{
	(void)state;
	struct localzone *lz = localzone_new();

	assert_non_null(lz);
	assert_int_equal(localzone_blocked_count(lz), 0);
	expect_forward(lz, "ads.example.", T_A);
	load_ok(lz, "# a comment line\n"
		    "ads.example\n"
		    "\n"
		    "   \t\n"
		    "Tracker.Example.COM.\n"
		    "  indented.example  # a comment after the name\n"
		    "tab.example\t#tab then comment\n"
		    "crlf.example\r\n"
		    "under_score.example\n"
		    "x-1.example\n"
		    "   # indented comment\n"
		    "last.example"); /* no final newline */
	assert_int_equal(localzone_blocked_count(lz), 8);

	expect_blocked(lz, "ads.example.");
	expect_blocked(lz, "ADS.EXAMPLE.");
	expect_blocked(lz, "www.ads.example.");
	expect_blocked(lz, "a.b.c.Ads.Example.");
	expect_blocked(lz, "tracker.example.com.");
	expect_blocked(lz, "cdn.TRACKER.example.com.");
	expect_blocked(lz, "indented.example.");
	expect_blocked(lz, "tab.example.");
	expect_blocked(lz, "crlf.example.");
	expect_blocked(lz, "under_score.example.");
	expect_blocked(lz, "x-1.example.");
	expect_blocked(lz, "last.example.");
	/* Same letters at the end, not a subdomain; and the parents. */
	expect_forward(lz, "bads.example.", T_A);
	expect_forward(lz, "ads.example.net.", T_A);
	expect_forward(lz, "example.", T_A);
	expect_forward(lz, "www.example.", T_A);
	expect_forward(lz, "example.com.", T_A);
	expect_forward(lz, "mytracker.example.com.", T_A);
	expect_forward(lz, "x.example.", T_A);
	localzone_free(lz);
}

static void blocklist_hosts_lines(void **state)
{
	(void)state;
	struct localzone *lz = localzone_new();

	assert_non_null(lz);
	/* The header of the common hosts-file blocklists, then entries. */
	load_ok(lz, "127.0.0.1 localhost\n"
		    "127.0.0.1 localhost.localdomain\n"
		    "127.0.0.1 local\n"
		    "255.255.255.255 broadcasthost\n"
		    "::1 localhost\n"
		    "::1 ip6-localhost\n"
		    "::1 ip6-loopback\n"
		    "fe80::1%lo0 localhost\n"
		    "ff00::0 ip6-localnet\n"
		    "ff00::0 ip6-mcastprefix\n"
		    "ff02::1 ip6-allnodes\n"
		    "ff02::2 ip6-allrouters\n"
		    "ff02::3 ip6-allhosts\n"
		    "0.0.0.0 0.0.0.0\n"
		    "# Custom host records\n"
		    "0.0.0.0 a.example\n"
		    "0.0.0.0\tb.example c.example  d.example # several names, a comment\n"
		    "127.0.0.1 e.example\n"
		    ":: f.example\n"
		    "::1 g.example LOCALHOST\n"
		    "0.0.0.0 H.Example.\n"
		    "192.0.2.1 mapped.example\n" /* a host definition, not a block */
		    "2001:db8::1 mapped6.example\n");
	assert_int_equal(localzone_blocked_count(lz), 8);
	static const char *const blocked[] = { "a.example.", "b.example.", "c.example.",
					       "d.example.", "e.example.", "f.example.",
					       "g.example.", "h.example.", "sub.h.example." };
	for (size_t i = 0; i < sizeof(blocked) / sizeof(blocked[0]); i++)
		expect_blocked(lz, blocked[i]);
	expect_forward(lz, "mapped.example.", T_A);
	expect_forward(lz, "mapped6.example.", T_A);
	expect_forward(lz, "broadcasthost.", T_A);
	expect_forward(lz, "ip6-allnodes.", T_A);
	expect_forward(lz, "localhost.localdomain.", T_A);
	expect_forward(lz, "0.0.0.0.", T_A);
	/* Still the built-in answers. */
	struct reply r;
	assert_int_equal(ask(lz, "localhost.", T_A, &r), LOCALZONE_LOCAL);
	localzone_free(lz);
}

static void blocklist_bad_lines(void **state)
{
	(void)state;
	static const struct {
		const char *content;
		unsigned line;
		const char *reason;
	} cases[] = {
		{ "ok.example\nbad!name.example\n", 2,
		  "invalid character '!' in \"bad!name.example\"" },
		{ "*.wild.example\n", 1, "wildcards are not supported" },
		{ "||ads.example^\n", 1, "adblock rules are not supported" },
		{ "a.example b.example\n", 1,
		  "expected one name, or an address and names: "
		  "\"a.example b.example\"" },
		{ "# c\n\n0.0.0.0\n", 3, "address \"0.0.0.0\" without a name" },
		{ "0.0.0.0 # only a comment\n", 1, "without a name" },
		{ "ok.example\n192.0.2.1\n", 2, "address \"192.0.2.1\" without a name" },
		{ "fe80::1%lo0\n", 1, "address \"fe80::1%lo0\" without a name" },
		{ ".\n", 1, "the root cannot be blocked" },
		{ "a..example\n", 1, "empty label" },
		{ ".example\n", 1, "empty label" },
		{ "example..\n", 1, "empty label" },
		{ "0.0.0.0 good.example bad/name\n", 1, "invalid character '/'" },
		{ "name#comment.example\n", 1, "invalid character '#'" },
		{ "http://ads.example/\n", 1, "invalid character ':'" },
		{ "caf\xc3\xa9.example\n", 1, "invalid byte 0xc3 in \"caf??.example\"" },
		{ "ok.example\n\x01.example\n", 2, "invalid byte 0x01" },
		{ "nul\0byte.example\n", 1, "NUL byte" },
		{ "1.2.3.4%eth0 x.example\n", 1, "expected one name" },
		{ "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.example\n", 1,
		  "label longer than 63 characters" },
	};
	char err[256], path[128], prefix[160];
	struct localzone *lz = localzone_new();

	assert_non_null(lz);
	load_ok(lz, "kept.example\n");
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		/* The NUL case needs its real length. */
		size_t len = strlen(cases[i].content);
		if (strncmp(cases[i].content, "nul", 3) == 0)
			len = sizeof("nul\0byte.example\n") - 1;
		write_file_n(cases[i].content, len, path, sizeof(path));
		memset(err, 'x', sizeof(err));
		int rc = localzone_load_blocklist(lz, path, err, sizeof(err));
		if (rc != -EINVAL)
			fail_msg("case %zu: rc %d, err %s", i, rc, err);
		snprintf(prefix, sizeof(prefix), "%s:%u: ", path, cases[i].line);
		if (strncmp(err, prefix, strlen(prefix)) != 0 || !strstr(err, cases[i].reason))
			fail_msg("case %zu: got \"%s\", want \"%s%s\"", i, err, prefix,
				 cases[i].reason);
		assert_null(strchr(err, '\n'));
		/* The failed file left nothing behind (not even ok.example). */
		assert_int_equal(localzone_blocked_count(lz), 1);
		expect_blocked(lz, "kept.example.");
		expect_forward(lz, "ok.example.", T_A);
		expect_forward(lz, "good.example.", T_A);
	}
	/* Too long: 254 characters give a 256-byte wire name. */
	char longname[300];
	size_t o = 0;
	for (int l = 0; l < 4; l++) {
		memset(longname + o, 'a', 62);
		o += 62;
		longname[o++] = '.';
	}
	memcpy(longname + o, "ab\n", 4); /* 4 * 63 + 2 = 254 characters */
	assert_int_equal(load(lz, longname, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, ":1: name longer than 255 bytes"));
	/* 253 characters is the longest name. */
	memcpy(longname + o, "a.\n", 4); /* the trailing dot is free */
	load_ok(lz, longname);
	assert_int_equal(localzone_blocked_count(lz), 2);

	/* A tiny error buffer is truncated, not overrun; none at all is fine. */
	char tiny[8];
	assert_int_equal(load(lz, "bad!\n", tiny, sizeof(tiny)), -EINVAL);
	assert_int_equal(strlen(tiny), sizeof(tiny) - 1);
	assert_int_equal(load(lz, "bad!\n", NULL, 0), -EINVAL);
	localzone_free(lz);
}

static void blocklist_file_errors(void **state)
{
	(void)state;
	struct localzone *lz = localzone_new();
	char err[256], path[160];

	assert_non_null(lz);
	snprintf(path, sizeof(path), "%s/does-not-exist", tmpdir);
	assert_int_equal(localzone_load_blocklist(lz, path, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, path));
	assert_non_null(strstr(err, ": No such file or directory"));
	assert_int_equal(localzone_load_blocklist(lz, tmpdir, err, sizeof(err)), -EISDIR);
	assert_int_equal(strncmp(err, tmpdir, strlen(tmpdir)), 0);
	/* An empty file is a valid, empty list. */
	load_ok(lz, "");
	assert_int_equal(localzone_blocked_count(lz), 0);
	localzone_free(lz);
}

static void blocklist_bom_dups_and_files(void **state)
{
	(void)state;
	struct localzone *lz = localzone_new();

	assert_non_null(lz);
	load_ok(lz, "\xef\xbb\xbf"
		    "bom.example\n"
		    "dup.example\n"
		    "DUP.example.\n"
		    "0.0.0.0 dup.example\n");
	assert_int_equal(localzone_blocked_count(lz), 2);
	expect_blocked(lz, "bom.example.");
	/* A second file adds to the first. */
	load_ok(lz, "second.example\ndup.example\n");
	assert_int_equal(localzone_blocked_count(lz), 3);
	expect_blocked(lz, "bom.example.");
	expect_blocked(lz, "second.example.");
	localzone_free(lz);
}

/* Enough names to grow the table many times, then a failed load after
 * thousands of good lines, which must roll all of them back. */
static void blocklist_many_names(void **state)
{
	(void)state;
	enum { N = 50000 };
	struct localzone *lz = localzone_new();
	size_t cap = (size_t)N * 32 + 64, o = 0;
	char *text = malloc(cap);

	assert_non_null(lz);
	assert_non_null(text);
	for (unsigned i = 0; i < N; i++)
		o += (size_t)snprintf(text + o, cap - o, "n%u.example\n", i);
	text[o] = '\0';
	load_ok(lz, text);
	assert_int_equal(localzone_blocked_count(lz), N);

	o = 0;
	for (unsigned i = 0; i < N; i++)
		o += (size_t)snprintf(text + o, cap - o, "m%u.example\n", i);
	memcpy(text + o, "bad name\n", 10);
	char err[256];
	assert_int_equal(load(lz, text, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, ":50001: "));
	assert_int_equal(localzone_blocked_count(lz), N);
	for (unsigned i = 0; i < N; i += 997) {
		char name[64];
		snprintf(name, sizeof(name), "x.n%u.example.", i);
		expect_blocked(lz, name);
		snprintf(name, sizeof(name), "m%u.example.", i);
		expect_forward(lz, name, T_A);
	}
	expect_blocked(lz, "n49999.example.");
	expect_forward(lz, "n50000.example.", T_A);
	free(text);
	localzone_free(lz);
}

static void block_actions(void **state)
{
	(void)state;
	struct localzone *lz = localzone_new();
	struct reply r;
	static const uint8_t zero4[4], zero6[16];

	assert_non_null(lz);
	load_ok(lz, "ads.example\n");

	/* Default: NXDOMAIN, no records at all (nothing to cache, RFC 2308 §5). */
	assert_int_equal(ask(lz, "ads.example.", T_A, &r), LOCALZONE_BLOCKED);
	assert_int_equal(r.rcode, WIRE_RCODE_NXDOMAIN);
	assert_int_equal(r.n_an + r.n_ns, 0);

	localzone_set_block_action(lz, LOCALZONE_BLOCK_REFUSED);
	assert_int_equal(ask(lz, "www.ads.example.", T_AAAA, &r), LOCALZONE_BLOCKED);
	assert_int_equal(r.rcode, WIRE_RCODE_REFUSED);
	assert_int_equal(r.n_an + r.n_ns, 0);

	localzone_set_block_action(lz, LOCALZONE_BLOCK_NULL);
	assert_int_equal(ask(lz, "ads.example.", T_A, &r), LOCALZONE_BLOCKED);
	assert_int_equal(r.rcode, WIRE_RCODE_NOERROR);
	assert_int_equal(r.n_an, 1);
	assert_int_equal(r.an[0].type, T_A);
	assert_int_equal(r.an[0].ttl, 60);
	assert_true(name_equal(r.an[0].owner, r.an[0].owner_len, "ads.example."));
	assert_int_equal(r.an[0].rdlen, 4);
	assert_memory_equal(r.an[0].rdata, zero4, 4);
	assert_int_equal(ask(lz, "Www.Ads.Example.", T_AAAA, &r), LOCALZONE_BLOCKED);
	assert_int_equal(r.n_an, 1);
	assert_int_equal(r.an[0].type, T_AAAA);
	assert_int_equal(r.an[0].rdlen, 16);
	assert_memory_equal(r.an[0].rdata, zero6, 16);
	assert_int_equal(ask(lz, "ads.example.", T_ANY, &r), LOCALZONE_BLOCKED);
	assert_int_equal(r.n_an, 2);
	assert_int_equal(ask(lz, "ads.example.", T_HTTPS, &r), LOCALZONE_BLOCKED);
	assert_int_equal(r.rcode, WIRE_RCODE_NOERROR);
	assert_int_equal(r.n_an + r.n_ns, 0);

	/* The action does not touch built-in zones. */
	assert_int_equal(ask(lz, "x.10.in-addr.arpa.", T_PTR, &r), LOCALZONE_LOCAL);
	assert_int_equal(r.rcode, WIRE_RCODE_NXDOMAIN);
	localzone_free(lz);
}

static void ede_only_with_edns(void **state)
{
	(void)state;
	struct localzone *lz = localzone_new();
	struct reply r;

	assert_non_null(lz);
	load_ok(lz, "ads.example\n");
	for (int action = 0; action < 3; action++) {
		localzone_set_block_action(lz, (enum localzone_block_action)action);
		/* ask_full() checks: OPT iff the query had one, DO mirrored, EDE 15
		 * iff blocked and EDNS. */
		assert_int_equal(ask_full(lz, "ads.example.", T_A, true, false, &r),
				 LOCALZONE_BLOCKED);
		assert_true(r.has_ede);
		assert_int_equal(ask_full(lz, "ads.example.", T_A, true, true, &r),
				 LOCALZONE_BLOCKED);
		assert_true(r.has_ede);
		assert_int_equal(ask_full(lz, "ads.example.", T_A, false, false, &r),
				 LOCALZONE_BLOCKED);
		assert_false(r.info.has_edns);
	}
	assert_int_equal(ask_full(lz, "localhost.", T_A, true, true, &r), LOCALZONE_LOCAL);
	assert_false(r.has_ede);
	assert_int_equal(ask_full(lz, "x.invalid.", T_A, true, false, &r), LOCALZONE_LOCAL);
	assert_false(r.has_ede);
	localzone_free(lz);
}

static void builtin_wins_over_blocklist(void **state)
{
	(void)state;
	struct localzone *lz = localzone_new();
	struct reply r;

	assert_non_null(lz);
	load_ok(lz, "arpa\nlocalhost\nlocal\nresolver.arpa\nexample.invalid\n");
	assert_int_equal(ask(lz, "www.localhost.", T_A, &r), LOCALZONE_LOCAL);
	assert_int_equal(r.n_an, 1);
	assert_int_equal(ask(lz, "1.0.0.127.in-addr.arpa.", T_PTR, &r), LOCALZONE_LOCAL);
	assert_int_equal(r.n_an, 1);
	expect_nxdomain(lz, "1.1.168.192.in-addr.arpa.", "168.192.in-addr.arpa.");
	expect_nodata(lz, "_dns.resolver.arpa.", T_SVCB, "resolver.arpa.");
	expect_nxdomain(lz, "example.invalid.", "invalid.");
	/* Outside the built-in zones the block applies. */
	expect_blocked(lz, "8.8.8.8.in-addr.arpa.");
	expect_blocked(lz, "arpa.");
	localzone_free(lz);
}

/* Every cap short of the reply: same verdict, length 0, nothing written
 * past the cap. */
static void reply_capacity(void **state)
{
	(void)state;
	static const struct {
		const char *name;
		unsigned type;
		bool edns;
		enum localzone_verdict v;
	} cases[] = {
		{ "localhost.", T_ANY, true, LOCALZONE_LOCAL },
		{ "x.10.in-addr.arpa.", T_PTR, false, LOCALZONE_LOCAL },
		{ "1.0.0.127.in-addr.arpa.", T_PTR, true, LOCALZONE_LOCAL },
		{ "ads.example.", T_A, true, LOCALZONE_BLOCKED },
		{ "ads.example.", T_A, false, LOCALZONE_BLOCKED },
	};
	struct localzone *lz = localzone_new();
	uint8_t out[LOCALZONE_MAX_REPLY + 16];

	assert_non_null(lz);
	load_ok(lz, "ads.example\n");
	for (int action = 0; action < 3; action++) {
		localzone_set_block_action(lz, (enum localzone_block_action)action);
		for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
			struct msg q;
			struct wire_info qi;
			size_t full, len;
			make_query(&q, cases[i].name, cases[i].type, WIRE_CLASS_IN, 0,
				   cases[i].edns, false);
			assert_int_equal(wire_parse(q.b, q.len, &qi), 0);
			assert_int_equal(localzone_lookup(lz, &qi, out, sizeof(out), &full),
					 cases[i].v);
			assert_true(full > WIRE_HEADER_LEN);
			for (size_t cap = 0; cap < full; cap++) {
				memset(out, 0xa5, sizeof(out));
				len = 777;
				assert_int_equal(localzone_lookup(lz, &qi, out, cap, &len),
						 cases[i].v);
				assert_int_equal(len, 0);
				for (size_t b = cap; b < sizeof(out); b++)
					assert_int_equal(out[b], 0xa5);
			}
			assert_int_equal(localzone_lookup(lz, &qi, out, full, &len), cases[i].v);
			assert_int_equal(len, full);
		}
	}
	localzone_free(lz);
}

/* The biggest replies: 255-byte names, ANY, EDNS.  They must fit in
 * LOCALZONE_MAX_REPLY. */
static void longest_replies_fit(void **state)
{
	(void)state;
	struct localzone *lz = localzone_new();
	struct reply r;
	char name[300], list[320];
	size_t o = 0;

	assert_non_null(lz);
	/* 3 labels of 63, one of 51, "localhost": 4*1 + 3*63 + 51 + 10 + 1 = 255. */
	for (int l = 0; l < 3; l++) {
		memset(name + o, 'a', 63);
		o += 63;
		name[o++] = '.';
	}
	memset(name + o, 'b', 51);
	o += 51;
	memcpy(name + o, ".localhost.", 12);
	assert_int_equal(ask_full(lz, name, T_ANY, true, true, &r), LOCALZONE_LOCAL);
	assert_int_equal(r.info.question_end, WIRE_HEADER_LEN + 255 + 4);
	assert_int_equal(r.n_an, 2);
	assert_int_equal(ask_full(lz, name, T_MX, true, true, &r), LOCALZONE_LOCAL);
	assert_int_equal(r.n_ns, 1);

	/* A blocked name of 255 bytes ("blocked.x" as long as "localhost"). */
	memcpy(name + o, ".blocked.x.", 12);
	snprintf(list, sizeof(list), "%s\n", name + 64 * 3);
	load_ok(lz, list);
	localzone_set_block_action(lz, LOCALZONE_BLOCK_NULL);
	assert_int_equal(ask_full(lz, name, T_ANY, true, true, &r), LOCALZONE_BLOCKED);
	assert_int_equal(r.info.question_end, WIRE_HEADER_LEN + 255 + 4);
	assert_int_equal(r.n_an, 2);
	assert_true(r.has_ede);
	localzone_free(lz);
}

/* ---- local data, forward zones, switched-off zones ------------------------ */

static void add_data(struct localzone *lz, const char *line)
{
	char err[256];

	if (localdata_add_line(localzone_data(lz), line, err, sizeof(err)) != 0)
		fail_msg("'%s' refused: %s", line, err);
}

static void add_hosts(struct localzone *lz, const char *text)
{
	char err[256];

	if (localdata_load_hosts_text(localzone_data(lz), "hosts", text, strlen(text), err,
				      sizeof(err)) != 0)
		fail_msg("hosts refused: %s", err);
}

/* Answered from local data: NOERROR, @n_an records, no SOA. */
static void expect_data(const struct localzone *lz, const char *name, unsigned type, unsigned n_an,
			struct reply *r)
{
	if (ask(lz, name, type, r) != LOCALZONE_DATA)
		fail_msg("%s type %u should be answered from local data", name, type);
	assert_int_equal(r->rcode, WIRE_RCODE_NOERROR);
	assert_int_equal(r->n_an, n_an);
	assert_int_equal(r->n_ns, 0);
}

static void must(int rc, const char *err)
{
	if (rc != 0)
		fail_msg("failed (%d): %s", rc, err);
}

/* Local data and hosts entries win over built-in zones, which still answer
 * the rest of their names, and do not deny local data's parents. */
static void local_data_over_builtin_zones(void **state)
{
	(void)state;
	struct localzone *lz = localzone_new();
	struct reply r;

	assert_non_null(lz);
	add_hosts(lz, "127.0.0.30 box.home.arpa box\n192.168.1.10 nas.home.arpa\n");
	add_data(lz, "a.b.home.arpa TXT \"deep\"");
	add_data(lz, "localhost A 127.0.0.2");
	assert_int_equal(localzone_data_count(lz), 7);

	/* The example: 127.0.0.30 lies in the loopback reverse zone. */
	expect_data(lz, "30.0.0.127.in-addr.arpa.", T_PTR, 1, &r);
	assert_int_equal(r.an[0].type, T_PTR);
	assert_int_equal(r.an[0].ttl, 3600);
	assert_true(name_equal(r.an[0].rdata, r.an[0].rdlen, "box.home.arpa."));
	expect_data(lz, "30.0.0.127.IN-ADDR.arpa.", T_A, 0, &r);
	/* The rest of the zone as before. */
	assert_int_equal(ask(lz, "1.0.0.127.in-addr.arpa.", T_PTR, &r), LOCALZONE_LOCAL);
	assert_true(name_equal(r.an[0].rdata, r.an[0].rdlen, "localhost."));
	expect_nxdomain(lz, "31.0.0.127.in-addr.arpa.", "127.in-addr.arpa.");
	expect_nodata(lz, "0.0.127.in-addr.arpa.", T_PTR, "127.in-addr.arpa.");

	/* home.arpa: the hosts names, NODATA for their other types (not
	 * forwarded); NXDOMAIN for the rest; the apex still the zone's. */
	expect_data(lz, "nas.home.arpa.", T_A, 1, &r);
	expect_data(lz, "NAS.Home.Arpa.", T_AAAA, 0, &r);
	expect_data(lz, "box.home.arpa.", T_MX, 0, &r);
	expect_nxdomain(lz, "printer.home.arpa.", "home.arpa.");
	expect_nxdomain(lz, "x.nas.home.arpa.", "home.arpa.");
	expect_apex(lz, "home.arpa.");
	/* RFC 8020: b.home.arpa exists (a.b.home.arpa is below it): NODATA. */
	expect_data(lz, "a.b.home.arpa.", T_TXT, 1, &r);
	expect_nodata(lz, "b.home.arpa.", T_A, "home.arpa.");
	expect_nodata(lz, "1.168.192.in-addr.arpa.", T_PTR, "168.192.in-addr.arpa.");
	expect_data(lz, "10.1.168.192.in-addr.arpa.", T_PTR, 1, &r);
	expect_nxdomain(lz, "2.168.192.in-addr.arpa.", "168.192.in-addr.arpa.");

	/* localhost. itself is local data now; names below it are not. */
	expect_data(lz, "localhost.", T_A, 1, &r);
	assert_int_equal(r.an[0].rdata[3], 2);
	expect_data(lz, "localhost.", T_AAAA, 0, &r);
	assert_int_equal(ask(lz, "www.localhost.", T_A, &r), LOCALZONE_LOCAL);
	assert_int_equal(r.an[0].rdata[3], 1);
	/* The box name has no dot: an absolute single-label name. */
	expect_data(lz, "box.", T_A, 1, &r);
	expect_forward(lz, "box.example.", T_A);
	localzone_free(lz);
}

static void local_data_over_blocklist(void **state)
{
	(void)state;
	struct localzone *lz = localzone_new();
	struct reply r;

	assert_non_null(lz);
	load_ok(lz, "example.com\n");
	add_data(lz, "www.example.com CNAME cdn.example.com");
	add_data(lz, "cdn.example.com A 192.0.2.7");
	expect_data(lz, "www.example.com.", T_A, 2, &r);
	assert_int_equal(r.an[0].type, T_CNAME);
	assert_int_equal(r.an[1].type, T_A);
	expect_blocked(lz, "x.example.com.");
	expect_blocked(lz, "example.com.");
	/* Local data under a blocked name, with the blocklist's answer for
	 * the rest: and its EDE only on blocked replies (checked by ask). */
	expect_data(lz, "cdn.example.com.", T_AAAA, 0, &r);
	localzone_free(lz);
}

/* A forward zone at or above a built-in zone drops it. */
static void forward_zone_drops_builtin(void **state)
{
	(void)state;
	struct localzone *lz = localzone_new();
	struct reply r;
	char err[256], name[128];

	assert_non_null(lz);
	must(localzone_forward_zone(lz, "home.arpa.", err, sizeof(err)), err);
	assert_string_equal(err, "");
	expect_forward(lz, "nas.home.arpa.", T_A);
	expect_forward(lz, "Printer.Home.Arpa.", T_AAAA);
	expect_forward(lz, "home.arpa.", T_SOA);
	/* Local data still answers inside it. */
	add_data(lz, "nas.home.arpa A 192.168.1.10");
	expect_data(lz, "nas.home.arpa.", T_A, 1, &r);
	expect_forward(lz, "printer.home.arpa.", T_A);
	/* Other built-in zones are untouched. */
	expect_nxdomain(lz, "1.1.168.192.in-addr.arpa.", "168.192.in-addr.arpa.");
	expect_nxdomain(lz, "printer.local.", "local.");
	assert_int_equal(ask(lz, "localhost.", T_A, &r), LOCALZONE_LOCAL);

	/* A zone above many: every reverse zone of IPv4, not those of IPv6. */
	must(localzone_forward_zone(lz, "In-Addr.Arpa", err, sizeof(err)), err);
	expect_forward(lz, "1.1.168.192.in-addr.arpa.", T_PTR);
	expect_forward(lz, "168.192.in-addr.arpa.", T_SOA);
	expect_forward(lz, "5.4.3.10.in-addr.arpa.", T_PTR);
	expect_forward(lz, "1.0.0.127.in-addr.arpa.", T_PTR);
	rev6("fd00::1", name, sizeof(name));
	expect_nxdomain(lz, name, "d.f.ip6.arpa.");

	/* "." is the default route: accepted, changes nothing. */
	must(localzone_forward_zone(lz, ".", err, sizeof(err)), err);
	assert_int_equal(ask(lz, "localhost.", T_A, &r), LOCALZONE_LOCAL);
	assert_int_equal(localzone_forward_zone(lz, "a..b", err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "empty label"));
	assert_int_equal(localzone_forward_zone(lz, "", err, sizeof(err)), -EINVAL);
	localzone_free(lz);
}

/* A forward zone inside a built-in zone takes its own subtree; the rest of
 * the built-in zone stays local: the longest match wins.  Reverse zones
 * alike. */
static void forward_zone_below_builtin(void **state)
{
	(void)state;
	struct localzone *lz = localzone_new();
	struct reply r;
	char err[256], name[128];

	assert_non_null(lz);
	must(localzone_forward_zone(lz, "1.168.192.in-addr.arpa", err, sizeof(err)), err);
	must(localzone_forward_zone(lz, "0.0.d.f.ip6.arpa", err, sizeof(err)), err);
	must(localzone_forward_zone(lz, "lan.home.arpa", err, sizeof(err)), err);
	expect_forward(lz, "5.1.168.192.in-addr.arpa.", T_PTR);
	expect_forward(lz, "1.168.192.in-addr.arpa.", T_NS);
	expect_nxdomain(lz, "5.2.168.192.in-addr.arpa.", "168.192.in-addr.arpa.");
	expect_nxdomain(lz, "11.168.192.in-addr.arpa.", "168.192.in-addr.arpa.");
	expect_apex(lz, "168.192.in-addr.arpa.");

	rev6("fd00::1", name, sizeof(name));
	expect_forward(lz, name, T_PTR);
	rev6("fd01::1", name, sizeof(name));
	expect_nxdomain(lz, name, "d.f.ip6.arpa.");
	expect_apex(lz, "d.f.ip6.arpa.");

	expect_forward(lz, "nas.lan.home.arpa.", T_A);
	expect_forward(lz, "lan.home.arpa.", T_SOA);
	expect_nxdomain(lz, "nas.home.arpa.", "home.arpa.");
	expect_nxdomain(lz, "xlan.home.arpa.", "home.arpa.");
	/* Local data and the blocklist still apply inside a forward zone. */
	add_data(lz, "nas.lan.home.arpa A 192.168.1.10");
	expect_data(lz, "nas.lan.home.arpa.", T_A, 1, &r);
	load_ok(lz, "tracker.lan.home.arpa\n");
	expect_blocked(lz, "x.tracker.lan.home.arpa.");
	localzone_free(lz);
}

static void disable_builtin(void **state)
{
	(void)state;
	struct localzone *lz = localzone_new();
	struct reply r;
	char err[1024];

	assert_non_null(lz);
	must(localzone_disable_builtin(lz, "Home.Arpa", err, sizeof(err)), err);
	must(localzone_disable_builtin(lz, "home.arpa.", err, sizeof(err)), err); /* again: fine */
	must(localzone_disable_builtin(lz, "16.172.in-addr.arpa.", err, sizeof(err)), err);
	assert_string_equal(err, "");
	expect_forward(lz, "router.home.arpa.", T_A);
	expect_forward(lz, "home.arpa.", T_SOA);
	expect_forward(lz, "1.1.16.172.in-addr.arpa.", T_PTR);
	expect_nxdomain(lz, "1.1.17.172.in-addr.arpa.", "17.172.in-addr.arpa.");
	expect_nxdomain(lz, "printer.local.", "local.");
	/* What is switched off may still be local data or blocked. */
	add_data(lz, "nas.home.arpa A 192.168.1.10");
	expect_data(lz, "nas.home.arpa.", T_A, 1, &r);
	load_ok(lz, "ads.home.arpa\n");
	expect_blocked(lz, "x.ads.home.arpa.");

	/* Only the apexes of built-in zones; the error lists them. */
	static const char *const bad[] = {
		"example.com", "172.in-addr.arpa", "x.home.arpa", "arpa", ".", "", "a..b"
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(localzone_disable_builtin(lz, bad[i], err, sizeof(err)), -EINVAL);
		char want[64];
		snprintf(want, sizeof(want), "'%s' is not a built-in zone; they are: localhost, ",
			 bad[i]);
		if (strncmp(err, want, strlen(want)) != 0)
			fail_msg("'%s' does not start with '%s'", err, want);
	}
	assert_non_null(strstr(err, ", home.arpa, "));
	assert_non_null(strstr(err, ", {16..31}.172.in-addr.arpa, "));
	assert_non_null(strstr(err, ", {64..127}.100.in-addr.arpa, "));
	assert_non_null(strstr(err, ", 8.b.d.0.1.0.0.2.ip6.arpa")); /* the last: nothing cut */
	localzone_free(lz);
}

/* Local data replies may pass LOCALZONE_MAX_REPLY: reported as not fitting
 * such a buffer, and fitting LOCALZONE_MAX_DATA_REPLY. */
static void data_reply_capacity(void **state)
{
	(void)state;
	struct localzone *lz = localzone_new();
	struct msg q;
	struct wire_info qi, ri;
	static uint8_t out[LOCALZONE_MAX_DATA_REPLY + 16];
	char line[512];
	size_t len;

	assert_non_null(lz);
	for (int i = 0; i < 3; i++) {
		snprintf(line, sizeof(line), "big.home.arpa TXT \"%0200d\"", i);
		add_data(lz, line);
	}
	make_query(&q, "big.home.arpa.", T_TXT, WIRE_CLASS_IN, 0, true, false);
	assert_int_equal(wire_parse(q.b, q.len, &qi), 0);
	memset(out, 0xa5, sizeof(out));
	len = 5;
	assert_int_equal(localzone_lookup(lz, &qi, out, LOCALZONE_MAX_REPLY, &len), LOCALZONE_DATA);
	assert_int_equal(len, 0);
	for (size_t i = LOCALZONE_MAX_REPLY; i < sizeof(out); i++)
		assert_int_equal(out[i], 0xa5);
	assert_int_equal(localzone_lookup(lz, &qi, out, LOCALZONE_MAX_DATA_REPLY, &len),
			 LOCALZONE_DATA);
	assert_true(len > LOCALZONE_MAX_REPLY);
	assert_int_equal(wire_parse(out, len, &ri), 0);
	assert_int_equal(ri.ancount, 3);
	assert_true(ri.flags & WIRE_FLAG_AA);
	localzone_free(lz);
}

/* ---- the whole configuration ---------------------------------------------- */

static struct config cfg; /* large: static */

static void parse_config(const char *const *args)
{
	char *argv[32], err[512];
	int argc = 0;
	FILE *devnull = fopen("/dev/null", "w");

	assert_non_null(devnull);
	argv[argc++] = (char *)"dotproxy";
	for (; *args; args++)
		argv[argc++] = (char *)*args;
	argv[argc] = NULL;
	int rc = options_parse(argc, argv, &cfg, devnull, err, sizeof(err));
	fclose(devnull);
	if (rc != OPTIONS_RUN)
		fail_msg("options refused: %s", err);
}

#define ARGS(...) ((const char *const[]){ __VA_ARGS__, NULL })

static void from_config(void **state)
{
	(void)state;
	char hosts[128], blocks[128], err[1024];
	struct reply r;

	write_file("# hosts\n127.0.0.30 box.home.arpa\n192.168.1.10\tnas.home.arpa nas\n", hosts,
		   sizeof(hosts));
	write_file("ads.example\n", blocks, sizeof(blocks));
	parse_config(ARGS("--local-data", "txt.home.arpa 60 TXT \"a b\" \"c\"", "--local-data",
			  "www.home.arpa CNAME nas.home.arpa", "--hosts", hosts,
			  "--no-builtin-zone", "local", "--forward-zone",
			  "10.in-addr.arpa=udp://10.0.0.1", "--block", blocks, "--block-action",
			  "refused"));
	struct localzone *lz = localzone_from_config(&cfg, err, sizeof(err));
	if (!lz)
		fail_msg("localzone_from_config: %s", err);
	assert_int_equal(localzone_data_count(lz), 7);
	expect_data(lz, "txt.home.arpa.", T_TXT, 1, &r);
	assert_int_equal(r.an[0].ttl, 60);
	assert_int_equal(r.an[0].rdlen, 6);
	assert_memory_equal(r.an[0].rdata, "\3a b\1c", 6);
	expect_data(lz, "www.home.arpa.", T_A, 2, &r);
	expect_data(lz, "30.0.0.127.in-addr.arpa.", T_PTR, 1, &r);
	expect_data(lz, "nas.", T_A, 1, &r);
	expect_forward(lz, "printer.local.", T_A);
	expect_forward(lz, "4.3.2.10.in-addr.arpa.", T_PTR);
	expect_nxdomain(lz, "printer.home.arpa.", "home.arpa.");
	assert_int_equal(ask(lz, "x.ads.example.", T_A, &r), LOCALZONE_BLOCKED);
	assert_int_equal(r.rcode, WIRE_RCODE_REFUSED);
	localzone_free(lz);

	/* Errors name the option, and the file and line. */
	char bad_hosts[128], want[256];
	write_file("192.168.1.1 ok\n1.2.3 nas\n", bad_hosts, sizeof(bad_hosts));
	parse_config(ARGS("--hosts", hosts, "--hosts", bad_hosts));
	assert_null(localzone_from_config(&cfg, err, sizeof(err)));
	snprintf(want, sizeof(want), "--hosts %s:2: bad address '1.2.3'", bad_hosts);
	assert_string_equal(err, want);

	parse_config(ARGS("--hosts", "/nonexistent/hosts"));
	assert_null(localzone_from_config(&cfg, err, sizeof(err)));
	assert_string_equal(err, "--hosts /nonexistent/hosts: No such file or directory");

	parse_config(ARGS("--no-builtin-zone", "Example.COM"));
	assert_null(localzone_from_config(&cfg, err, sizeof(err)));
	assert_non_null(strstr(err, "--no-builtin-zone example.com.: 'example.com.' is not a "
				    "built-in zone; they are: localhost, invalid, local, "));

	parse_config(ARGS("--local-data", "a.example CNAME b.example", "--local-data",
			  "a.example A 192.0.2.1"));
	assert_null(localzone_from_config(&cfg, err, sizeof(err)));
	assert_non_null(
	    strstr(err, "--local-data 'a.example A 192.0.2.1': a.example. has a CNAME"));

	/* A hosts name that local data made a CNAME. */
	parse_config(ARGS("--local-data", "nas.home.arpa CNAME box.home.arpa", "--hosts", hosts));
	assert_null(localzone_from_config(&cfg, err, sizeof(err)));
	snprintf(want, sizeof(want), "--hosts %s:3: nas.home.arpa. has a CNAME already", hosts);
	assert_non_null(strstr(err, want));

	parse_config(ARGS("--block", "/nonexistent/list"));
	assert_null(localzone_from_config(&cfg, err, sizeof(err)));
	assert_string_equal(err, "--block /nonexistent/list: No such file or directory");

	/* The defaults build the built-in zones alone. */
	parse_config(ARGS("-v"));
	lz = localzone_from_config(&cfg, err, sizeof(err));
	assert_non_null(lz);
	assert_int_equal(localzone_data_count(lz), 0);
	expect_nxdomain(lz, "printer.local.", "local.");
	localzone_free(lz);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(localhost_zone),
		cmocka_unit_test(special_use_domains),
		cmocka_unit_test(private_reverse_ipv4),
		cmocka_unit_test(private_reverse_ipv6),
		cmocka_unit_test(loopback_ptr),
		cmocka_unit_test(resolver_arpa_ddr),
		cmocka_unit_test(forwarded_names),
		cmocka_unit_test(blocklist_plain_names),
		cmocka_unit_test(blocklist_hosts_lines),
		cmocka_unit_test(blocklist_bad_lines),
		cmocka_unit_test(blocklist_file_errors),
		cmocka_unit_test(blocklist_bom_dups_and_files),
		cmocka_unit_test(blocklist_many_names),
		cmocka_unit_test(block_actions),
		cmocka_unit_test(ede_only_with_edns),
		cmocka_unit_test(builtin_wins_over_blocklist),
		cmocka_unit_test(reply_capacity),
		cmocka_unit_test(longest_replies_fit),
		cmocka_unit_test(local_data_over_builtin_zones),
		cmocka_unit_test(local_data_over_blocklist),
		cmocka_unit_test(forward_zone_drops_builtin),
		cmocka_unit_test(forward_zone_below_builtin),
		cmocka_unit_test(disable_builtin),
		cmocka_unit_test(data_reply_capacity),
		cmocka_unit_test(from_config),
	};

	return cmocka_run_group_tests(tests, setup_dir, remove_dir);
}
