/*
 * Unit tests for lib/acl: parsing of --allow prefixes (and what it refuses),
 * the loopback-only default, IPv4-mapped IPv6 clients counted as IPv4, and
 * prefix lengths that do not fall on a byte boundary.  Client addresses are
 * written as text and turned into sockaddrs as the kernel would hand them.
 */
#include "lib/acl.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/un.h>

#include <cmocka.h>

/* ---- helpers ------------------------------------------------------------ */

/* A client address from text: AF_INET for dotted quads, else AF_INET6. */
static struct sockaddr_storage client(const char *text)
{
	struct sockaddr_storage ss;

	memset(&ss, 0, sizeof(ss));
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
	if (inet_pton(AF_INET, text, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons(53000);
	} else {
		assert_int_equal(inet_pton(AF_INET6, text, &sin6->sin6_addr), 1);
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(53000);
	}
	return ss;
}

static bool allows(const struct acl *acl, const char *text)
{
	struct sockaddr_storage ss = client(text);

	return acl_allows(acl, (const struct sockaddr *)&ss);
}

/* An ACL of the given prefixes, each of which must parse. */
static void acl_of(struct acl *acl, const char *const *prefixes, unsigned n)
{
	assert_true(n <= ACL_MAX);
	memset(acl, 0, sizeof(*acl));
	for (unsigned i = 0; i < n; i++)
		assert_int_equal(acl_parse(prefixes[i], &acl->entries[i]), 0);
	acl->n = n;
}

static void acl_one(struct acl *acl, const char *prefix)
{
	acl_of(acl, &prefix, 1);
}

/* ---- parsing ------------------------------------------------------------ */

static void parse_v4(void **state)
{
	(void)state;
	struct acl_entry e;
	static const uint8_t net[4] = { 192, 0, 2, 0 };
	static const uint8_t host[4] = { 198, 51, 100, 7 };

	assert_int_equal(acl_parse("192.0.2.0/24", &e), 0);
	assert_int_equal(e.family, AF_INET);
	assert_memory_equal(e.addr, net, 4);
	assert_int_equal(e.bits, 24);

	/* A bare address is a host. */
	assert_int_equal(acl_parse("198.51.100.7", &e), 0);
	assert_int_equal(e.family, AF_INET);
	assert_memory_equal(e.addr, host, 4);
	assert_int_equal(e.bits, 32);

	assert_int_equal(acl_parse("198.51.100.7/32", &e), 0);
	assert_int_equal(e.bits, 32);
	assert_int_equal(acl_parse("0.0.0.0/0", &e), 0);
	assert_int_equal(e.family, AF_INET);
	assert_int_equal(e.bits, 0);
	assert_int_equal(acl_parse("10.0.0.0/8", &e), 0);
	assert_int_equal(e.bits, 8);
	assert_int_equal(acl_parse("10.0.0.128/25", &e), 0);
	assert_int_equal(e.bits, 25);
}

static void parse_v6(void **state)
{
	(void)state;
	struct acl_entry e;
	static const uint8_t doc[16] = { 0x20, 0x01, 0x0d, 0xb8 };
	static const uint8_t loopback[16] = { [15] = 1 };
	static const uint8_t zero[16] = { 0 };

	assert_int_equal(acl_parse("2001:db8::/32", &e), 0);
	assert_int_equal(e.family, AF_INET6);
	assert_memory_equal(e.addr, doc, 16);
	assert_int_equal(e.bits, 32);

	assert_int_equal(acl_parse("::1", &e), 0);
	assert_int_equal(e.family, AF_INET6);
	assert_memory_equal(e.addr, loopback, 16);
	assert_int_equal(e.bits, 128);

	assert_int_equal(acl_parse("::1/128", &e), 0);
	assert_int_equal(e.bits, 128);
	assert_int_equal(acl_parse("::/0", &e), 0);
	assert_int_equal(e.family, AF_INET6);
	assert_memory_equal(e.addr, zero, 16);
	assert_int_equal(e.bits, 0);
	assert_int_equal(acl_parse("fe80::/10", &e), 0);
	assert_int_equal(e.bits, 10);
	/* The longest textual form there is (45 characters), with a prefix. */
	assert_int_equal(acl_parse("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255/128", &e), 0);
	assert_int_equal(e.family, AF_INET6);
	assert_int_equal(e.bits, 128);
}

static void parse_rejects(void **state)
{
	(void)state;
	struct acl_entry e;
	static const char *const bad[] = {
		"",
		"/",
		"/24",
		"garbage",
		"garbage/8",
		"1.2.3.4/",
		"1.2.3.4/33",
		"1.2.3.4/256",
		"1.2.3.4/99999999999999999999999",
		"1.2.3.4/x",
		"1.2.3.4/8x",
		"1.2.3.4/-1",
		"1.2.3.4/+8",
		"1.2.3.4/ 8",
		"1.2.3.4/8/8",
		"1.2.3.4 ",
		" 1.2.3.4",
		"1.2.3",
		"1.2.3.4.5",
		"256.1.1.1",
		"::/129",
		"::1/200",
		"2001:db8::/",
		"2001:db8:::1",
		"2001:db8::g",
		/* Longer than any address text: must not overflow the copy. */
		"1111:2222:3333:4444:5555:6666:7777:8888:9999:aaaa:bbbb:cccc/64",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int rc = acl_parse(bad[i], &e);
		if (rc != -EINVAL)
			fail_msg("acl_parse(\"%s\") = %d, want -EINVAL", bad[i], rc);
	}
}

/* ---- matching ----------------------------------------------------------- */

static void default_is_loopback(void **state)
{
	(void)state;
	struct acl acl;

	acl_default(&acl);
	assert_int_equal(acl.n, 2);
	assert_true(allows(&acl, "127.0.0.1"));
	assert_true(allows(&acl, "127.0.0.0"));
	assert_true(allows(&acl, "127.1.2.3"));
	assert_true(allows(&acl, "127.255.255.254"));
	assert_true(allows(&acl, "127.255.255.255"));
	assert_true(allows(&acl, "::1"));

	assert_false(allows(&acl, "10.0.0.1"));
	assert_false(allows(&acl, "126.255.255.255"));
	assert_false(allows(&acl, "128.0.0.1"));
	assert_false(allows(&acl, "0.0.0.0"));
	assert_false(allows(&acl, "::2"));
	assert_false(allows(&acl, "::"));
	assert_false(allows(&acl, "fe80::1"));
	assert_false(allows(&acl, "2001:db8::1"));
	/* IPv4-compatible (deprecated) is not IPv4-mapped: not loopback. */
	assert_false(allows(&acl, "::127.0.0.1"));
}

static void mapped_v6_counts_as_v4(void **state)
{
	(void)state;
	struct acl acl;

	acl_default(&acl);
	assert_true(allows(&acl, "::ffff:127.0.0.1"));
	assert_true(allows(&acl, "::ffff:127.255.255.254"));
	assert_false(allows(&acl, "::ffff:10.0.0.1"));
	assert_false(allows(&acl, "::ffff:0.0.0.1")); /* not ::1 in disguise */

	acl_one(&acl, "10.0.0.0/8");
	assert_true(allows(&acl, "10.1.2.3"));
	assert_true(allows(&acl, "::ffff:10.1.2.3"));
	assert_false(allows(&acl, "::ffff:11.0.0.1"));
	assert_false(allows(&acl, "::ffff:a01:203:0")); /* not the mapped form */

	/* An IPv6 /0 does not cover mapped clients: they are IPv4. */
	acl_one(&acl, "::/0");
	assert_false(allows(&acl, "::ffff:1.2.3.4"));
	assert_false(allows(&acl, "1.2.3.4"));
	assert_true(allows(&acl, "2001:db8::1"));
}

static void prefix_boundaries_v4(void **state)
{
	(void)state;
	struct acl acl;

	acl_one(&acl, "192.168.1.0/23");
	assert_true(allows(&acl, "192.168.0.0"));
	assert_true(allows(&acl, "192.168.0.1"));
	assert_true(allows(&acl, "192.168.0.255"));
	assert_true(allows(&acl, "192.168.1.0"));
	assert_true(allows(&acl, "192.168.1.77"));
	assert_true(allows(&acl, "192.168.1.255"));
	assert_false(allows(&acl, "192.168.2.0"));
	assert_false(allows(&acl, "192.168.3.1"));
	assert_false(allows(&acl, "192.167.255.255"));
	assert_false(allows(&acl, "192.169.0.0"));
	assert_false(allows(&acl, "193.168.0.1"));

	/* Host bits set in the prefix text do not matter. */
	acl_one(&acl, "192.168.1.77/23");
	assert_true(allows(&acl, "192.168.0.5"));
	assert_false(allows(&acl, "192.168.2.5"));

	acl_one(&acl, "10.0.0.128/25");
	assert_true(allows(&acl, "10.0.0.128"));
	assert_true(allows(&acl, "10.0.0.255"));
	assert_false(allows(&acl, "10.0.0.127"));
	assert_false(allows(&acl, "10.0.1.128"));

	acl_one(&acl, "172.16.0.0/12");
	assert_true(allows(&acl, "172.16.0.1"));
	assert_true(allows(&acl, "172.31.255.255"));
	assert_false(allows(&acl, "172.32.0.0"));
	assert_false(allows(&acl, "172.15.255.255"));

	acl_one(&acl, "203.0.113.9");
	assert_true(allows(&acl, "203.0.113.9"));
	assert_false(allows(&acl, "203.0.113.8"));
	assert_false(allows(&acl, "203.0.113.10"));

	acl_one(&acl, "128.0.0.0/1");
	assert_true(allows(&acl, "128.0.0.0"));
	assert_true(allows(&acl, "255.255.255.255"));
	assert_false(allows(&acl, "127.255.255.255"));
}

static void prefix_boundaries_v6(void **state)
{
	(void)state;
	struct acl acl;

	acl_one(&acl, "2001:db8::/33");
	assert_true(allows(&acl, "2001:db8::1"));
	assert_true(allows(&acl, "2001:db8:7fff:ffff:ffff:ffff:ffff:ffff"));
	assert_false(allows(&acl, "2001:db8:8000::"));
	assert_false(allows(&acl, "2001:db9::"));

	acl_one(&acl, "fe80::2/127");
	assert_true(allows(&acl, "fe80::2"));
	assert_true(allows(&acl, "fe80::3"));
	assert_false(allows(&acl, "fe80::1"));
	assert_false(allows(&acl, "fe80::4"));

	acl_one(&acl, "fe80::/10");
	assert_true(allows(&acl, "fe80::1"));
	assert_true(allows(&acl, "febf:ffff::1"));
	assert_false(allows(&acl, "fec0::1"));
	assert_false(allows(&acl, "fe7f::1"));

	acl_one(&acl, "2001:db8::5");
	assert_true(allows(&acl, "2001:db8::5"));
	assert_false(allows(&acl, "2001:db8::4"));
}

static void zero_prefix_is_per_family(void **state)
{
	(void)state;
	struct acl acl;

	acl_one(&acl, "0.0.0.0/0");
	assert_true(allows(&acl, "0.0.0.0"));
	assert_true(allows(&acl, "10.0.0.1"));
	assert_true(allows(&acl, "255.255.255.255"));
	assert_true(allows(&acl, "::ffff:8.8.8.8"));
	assert_false(allows(&acl, "::1"));
	assert_false(allows(&acl, "::"));
	assert_false(allows(&acl, "2001:db8::1"));

	acl_one(&acl, "::/0");
	assert_true(allows(&acl, "::"));
	assert_true(allows(&acl, "::1"));
	assert_true(allows(&acl, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"));
	assert_false(allows(&acl, "0.0.0.0"));
	assert_false(allows(&acl, "127.0.0.1"));
}

static void several_entries_and_empty(void **state)
{
	(void)state;
	struct acl acl;
	static const char *const prefixes[] = { "10.0.0.0/8", "2001:db8::/32", "192.0.2.1" };

	acl_of(&acl, prefixes, 3);
	assert_true(allows(&acl, "10.9.8.7"));
	assert_true(allows(&acl, "2001:db8:1::1"));
	assert_true(allows(&acl, "192.0.2.1"));
	assert_true(allows(&acl, "::ffff:192.0.2.1"));
	assert_false(allows(&acl, "192.0.2.2"));
	assert_false(allows(&acl, "127.0.0.1"));
	assert_false(allows(&acl, "::1"));

	/* No entries: nobody. */
	acl.n = 0;
	assert_false(allows(&acl, "10.9.8.7"));
	assert_false(allows(&acl, "::1"));
}

static void other_family_refused(void **state)
{
	(void)state;
	struct acl acl;
	struct sockaddr_un sun;

	acl_one(&acl, "0.0.0.0/0");
	acl_parse("::/0", &acl.entries[1]);
	acl.n = 2;
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	assert_false(acl_allows(&acl, (const struct sockaddr *)&sun));

	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	ss.ss_family = AF_UNSPEC;
	assert_false(acl_allows(&acl, (const struct sockaddr *)&ss));
}

/* What the start-up warning about unreachable listeners rests on. */
static void loopback_only_and_loopback_addresses(void **state)
{
	(void)state;
	struct acl acl;
	static const char *const lo[] = { "127.0.0.0/8", "::1", "127.0.0.53" };
	static const char *const lan[] = { "127.0.0.0/8", "192.168.0.0/16" };

	acl_default(&acl);
	assert_true(acl_loopback_only(&acl));
	acl_of(&acl, lo, 3);
	assert_true(acl_loopback_only(&acl));
	acl_of(&acl, lan, 2);
	assert_false(acl_loopback_only(&acl));
	acl_one(&acl, "126.0.0.0/7"); /* covers 127/8 and more */
	assert_false(acl_loopback_only(&acl));
	acl_one(&acl, "::/127"); /* ::1 and :: */
	assert_false(acl_loopback_only(&acl));

	struct sockaddr_storage ss = client("127.9.9.9");
	assert_true(acl_is_loopback((struct sockaddr *)&ss));
	ss = client("::1");
	assert_true(acl_is_loopback((struct sockaddr *)&ss));
	ss = client("0.0.0.0");
	assert_false(acl_is_loopback((struct sockaddr *)&ss));
	ss = client("::");
	assert_false(acl_is_loopback((struct sockaddr *)&ss));
	ss = client("192.168.1.1");
	assert_false(acl_is_loopback((struct sockaddr *)&ss));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(parse_v4),
		cmocka_unit_test(parse_v6),
		cmocka_unit_test(parse_rejects),
		cmocka_unit_test(default_is_loopback),
		cmocka_unit_test(mapped_v6_counts_as_v4),
		cmocka_unit_test(prefix_boundaries_v4),
		cmocka_unit_test(prefix_boundaries_v6),
		cmocka_unit_test(zero_prefix_is_per_family),
		cmocka_unit_test(several_entries_and_empty),
		cmocka_unit_test(other_family_refused),
		cmocka_unit_test(loopback_only_and_loopback_addresses),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
