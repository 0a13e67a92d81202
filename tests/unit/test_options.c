/*
 * Unit tests for lib/options: defaults, each accepted and rejected form of
 * the address options, the command-line syntax, and the config file with its
 * precedence rules.  Config files are written to temporary files; --help and
 * --version output goes to an in-memory stream.
 */
#include "lib/options.h"

#include "lib/version.h"

#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

/* Large: the config holds 4 KiB of CA path and 16 upstreams. */
static struct config cfg;
static char err[512];

/* options_parse() on a NULL-terminated argument list (argv[0] added). */
static int parse_args_out(FILE *out, const char *const *args)
{
	char *argv[128];
	int argc = 0;

	argv[argc++] = (char *)"dotproxy";
	for (; *args; args++) {
		assert_true(argc < 127);
		argv[argc++] = (char *)*args;
	}
	argv[argc] = NULL;
	err[0] = '\0';
	return options_parse(argc, argv, &cfg, out, err, sizeof(err));
}

static int parse_args(const char *const *args)
{
	FILE *out = fopen("/dev/null", "w");
	assert_non_null(out);
	int rc = parse_args_out(out, args);
	fclose(out);
	return rc;
}

#define ARGS(...) ((const char *const[]){ __VA_ARGS__, NULL })

/* A temporary config file holding @text; the path is written to @path. */
static void write_config(char *path, size_t cap, const char *text)
{
	snprintf(path, cap, "/tmp/dotproxy-test-XXXXXX");
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	FILE *f = fdopen(fd, "w");
	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
}

static void assert_contains(const char *haystack, const char *needle)
{
	if (!strstr(haystack, needle))
		fail_msg("'%s' does not contain '%s'", haystack, needle);
}

static uint16_t port_of(const struct options_addr *a)
{
	if (a->sa.ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)&a->sa)->sin_port);
	return ntohs(((const struct sockaddr_in6 *)&a->sa)->sin6_port);
}

static void defaults(void **state)
{
	(void)state;
	assert_int_equal(parse_args(ARGS(NULL)), OPTIONS_RUN);
	assert_int_equal(cfg.n_listen, 2);
	assert_string_equal(cfg.listen[0].text, "127.0.0.1:53");
	assert_int_equal(cfg.listen[0].sa.ss_family, AF_INET);
	assert_int_equal(cfg.listen[0].sa_len, sizeof(struct sockaddr_in));
	assert_int_equal(port_of(&cfg.listen[0]), 53);
	assert_string_equal(cfg.listen[1].text, "[::1]:53");
	assert_int_equal(cfg.listen[1].sa.ss_family, AF_INET6);
	assert_int_equal(cfg.listen[1].sa_len, sizeof(struct sockaddr_in6));
	assert_int_equal(port_of(&cfg.listen[1]), 53);
	assert_true(cfg.listen_is_default);

	/* Each provider over DoT, then over DoH (a blocked port 853 is then one
	 * detection, not an outage). */
	assert_int_equal(cfg.n_upstream, 6);
	static const char *const ips[] = { "9.9.9.9", "1.1.1.1", "8.8.8.8" };
	static const char *const names[] = { "dns.quad9.net", "cloudflare-dns.com", "dns.google" };
	for (unsigned i = 0; i < 6; i++) {
		bool doh = i >= 3;
		assert_string_equal(cfg.upstream[i].ip, ips[i % 3]);
		assert_string_equal(cfg.upstream[i].auth_name, names[i % 3]);
		assert_int_equal(cfg.upstream[i].transport,
				 doh ? OPTIONS_TRANSPORT_DOH : OPTIONS_TRANSPORT_DOT);
		assert_int_equal(cfg.upstream[i].port, doh ? 443 : 853);
		assert_int_equal(port_of(&cfg.upstream[i].addr), doh ? 443 : 853);
		assert_int_equal(cfg.upstream[i].addr.sa.ss_family, AF_INET);
		if (doh)
			assert_string_equal(cfg.upstream[i].path, "/dns-query");
	}
	assert_string_equal(cfg.upstream[0].label, "9.9.9.9@853#dns.quad9.net");
	assert_string_equal(cfg.upstream[3].label, "https://9.9.9.9:443/dns-query#dns.quad9.net");
	assert_string_equal(cfg.ca_file, "");
	assert_int_equal(cfg.verbosity, 0);
	assert_false(cfg.log_queries);
	assert_false(cfg.check_only);
	assert_int_equal(cfg.timeout_ms, 4000);
	assert_int_equal(cfg.tcp_idle_timeout_ms, 10000);
	assert_true(cfg.max_inflight > 0);
	assert_true(cfg.max_tcp_clients > 0);
	assert_true(cfg.max_tcp_pipeline > 0);
}

static void upstream_forms(void **state)
{
	(void)state;
	struct options_upstream up;

	assert_int_equal(options_parse_upstream("1.2.3.4", &up, err, sizeof(err)), 0);
	assert_string_equal(up.ip, "1.2.3.4");
	assert_int_equal(up.port, 853);
	assert_string_equal(up.auth_name, "");
	assert_string_equal(up.addr.text, "1.2.3.4:853");

	assert_int_equal(options_parse_upstream("1.2.3.4@8853", &up, err, sizeof(err)), 0);
	assert_int_equal(up.port, 8853);
	assert_int_equal(port_of(&up.addr), 8853);
	assert_string_equal(up.auth_name, "");

	assert_int_equal(options_parse_upstream("1.2.3.4#dns.example", &up, err, sizeof(err)), 0);
	assert_int_equal(up.port, 853);
	assert_string_equal(up.auth_name, "dns.example");
	assert_string_equal(up.label, "1.2.3.4@853#dns.example");

	assert_int_equal(options_parse_upstream("1.2.3.4@8853#dns.example", &up, err, sizeof(err)),
			 0);
	assert_int_equal(up.port, 8853);
	assert_string_equal(up.ip, "1.2.3.4");
	assert_string_equal(up.auth_name, "dns.example");

	assert_int_equal(
	    options_parse_upstream("2620:fe::fe@853#dns.quad9.net", &up, err, sizeof(err)), 0);
	assert_int_equal(up.addr.sa.ss_family, AF_INET6);
	assert_int_equal(up.addr.sa_len, sizeof(struct sockaddr_in6));
	assert_string_equal(up.ip, "2620:fe::fe");
	assert_int_equal(up.port, 853);
	assert_string_equal(up.auth_name, "dns.quad9.net");
	assert_string_equal(up.addr.text, "[2620:fe::fe]:853");

	assert_int_equal(options_parse_upstream("::1@65535", &up, err, sizeof(err)), 0);
	assert_int_equal(up.port, 65535);

	/* The same through the command line, twice: a list. */
	assert_int_equal(
	    parse_args(ARGS("--upstream", "1.2.3.4@8853#dns.example", "--upstream", "2620:fe::fe")),
	    OPTIONS_RUN);
	assert_int_equal(cfg.n_upstream, 2);
	assert_string_equal(cfg.upstream[0].auth_name, "dns.example");
	assert_string_equal(cfg.upstream[1].ip, "2620:fe::fe");
	assert_string_equal(cfg.upstream[1].auth_name, "");
	assert_int_equal(cfg.n_listen, 2); /* untouched */
}

/* https://HOST[:PORT][/PATH][#NAME]: DoH, port 443 and /dns-query by default,
 * pins as for DoT, and a label that names everything but the pins. */
static void doh_upstream_forms(void **state)
{
	(void)state;
	struct options_upstream up;
	static const char pin[] = "^AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
	char spec[256];

	assert_int_equal(options_parse_upstream("https://1.1.1.1/dns-query#cloudflare-dns.com", &up,
						err, sizeof(err)),
			 0);
	assert_int_equal(up.transport, OPTIONS_TRANSPORT_DOH);
	assert_string_equal(up.ip, "1.1.1.1");
	assert_int_equal(up.port, 443);
	assert_int_equal(port_of(&up.addr), 443);
	assert_string_equal(up.path, "/dns-query");
	assert_string_equal(up.auth_name, "cloudflare-dns.com");
	assert_string_equal(up.hostname, "");
	assert_string_equal(up.label, "https://1.1.1.1:443/dns-query#cloudflare-dns.com");

	/* Everything optional: the defaults; the IP is what is authenticated. */
	assert_int_equal(options_parse_upstream("https://9.9.9.9", &up, err, sizeof(err)), 0);
	assert_int_equal(up.port, 443);
	assert_string_equal(up.path, "/dns-query");
	assert_string_equal(up.auth_name, "");
	assert_string_equal(up.label, "https://9.9.9.9:443/dns-query");

	assert_int_equal(options_parse_upstream("https://127.0.0.1:8443#dns.example.test", &up, err,
						sizeof(err)),
			 0);
	assert_int_equal(up.port, 8443);
	assert_string_equal(up.path, "/dns-query");
	assert_string_equal(up.auth_name, "dns.example.test");

	snprintf(spec, sizeof(spec), "https://[2620:fe::fe]:5443/q?ct=1&x=%%2F#dns.quad9.net%s%s",
		 pin, pin);
	assert_int_equal(options_parse_upstream(spec, &up, err, sizeof(err)), 0);
	assert_int_equal(up.addr.sa.ss_family, AF_INET6);
	assert_string_equal(up.ip, "2620:fe::fe");
	assert_int_equal(up.port, 5443);
	assert_string_equal(up.path, "/q?ct=1&x=%2F");
	assert_string_equal(up.auth_name, "dns.quad9.net");
	assert_int_equal(up.n_pins, 2);
	assert_string_equal(up.label, "https://[2620:fe::fe]:5443/q?ct=1&x=%2F#dns.quad9.net");

	assert_int_equal(options_parse_upstream("https://[::1]/", &up, err, sizeof(err)), 0);
	assert_string_equal(up.path, "/");

	/* Through the command line and inside a forward zone; --doh-method. */
	assert_int_equal(cfg.doh_method, OPTIONS_DOH_POST);
	assert_int_equal(
	    parse_args(ARGS("--upstream", "https://8.8.8.8/dns-query#dns.google", "--forward-zone",
			    "home.arpa=https://192.168.1.1:8443/dq,127.0.0.1@853", "--doh-method",
			    "get")),
	    OPTIONS_RUN);
	assert_int_equal(cfg.n_upstream, 1);
	assert_int_equal(cfg.upstream[0].transport, OPTIONS_TRANSPORT_DOH);
	assert_int_equal(cfg.n_zones, 1);
	assert_int_equal(cfg.zones[0].n_upstream, 2);
	assert_int_equal(cfg.zones[0].upstream[0].transport, OPTIONS_TRANSPORT_DOH);
	assert_string_equal(cfg.zones[0].upstream[0].path, "/dq");
	assert_int_equal(cfg.zones[0].upstream[1].transport, OPTIONS_TRANSPORT_DOT);
	assert_int_equal(cfg.doh_method, OPTIONS_DOH_GET);
	assert_int_equal(parse_args(ARGS("--doh-method", "post")), OPTIONS_RUN);
	assert_int_equal(cfg.doh_method, OPTIONS_DOH_POST);
	assert_int_equal(parse_args(ARGS("--doh-method", "put")), -EINVAL);
	assert_contains(err, "--doh-method 'put'");

	/* --doh-keepalive: off by default; 0 or at least a second. */
	assert_int_equal(cfg.doh_keepalive_ms, 0);
	assert_int_equal(parse_args(ARGS("--doh-keepalive", "25000")), OPTIONS_RUN);
	assert_int_equal(cfg.doh_keepalive_ms, 25000);
	assert_int_equal(parse_args(ARGS("--doh-keepalive", "0")), OPTIONS_RUN);
	assert_int_equal(cfg.doh_keepalive_ms, 0);
	assert_int_equal(parse_args(ARGS("--doh-keepalive", "999")), -EINVAL);
	assert_contains(err, "bad --doh-keepalive '999': expected 0 (off) or a number from 1000");
	assert_int_equal(parse_args(ARGS("--doh-keepalive", "1h")), -EINVAL);
	assert_contains(err, "--doh-keepalive '1h'");

	/* In a config file: the URL's '#' is not a comment, the next one is. */
	char path[64];
	write_config(path, sizeof(path),
		     "upstream https://1.1.1.1/dns-query#cloudflare-dns.com # comment\n"
		     "doh-method get\n");
	assert_int_equal(parse_args(ARGS("--config", path)), OPTIONS_RUN);
	unlink(path);
	assert_int_equal(cfg.n_upstream, 1);
	assert_string_equal(cfg.upstream[0].auth_name, "cloudflare-dns.com");
	assert_string_equal(cfg.upstream[0].path, "/dns-query");
	assert_int_equal(cfg.doh_method, OPTIONS_DOH_GET);
}

static void doh_upstream_rejects(void **state)
{
	(void)state;
	static const struct {
		const char *spec;
		const char *mention;
	} bad[] = {
		{ "https://", "expected https://HOST" },
		{ "https:///dns-query", "expected https://HOST" },
		{ "https://1.2.3.4:0/", "port '0'" },
		{ "https://1.2.3.4:/", "bad port" },
		{ "https://1.2.3.4:99999", "99999" },
		{ "https://1.2.3.4/a b", "'/a b' is not a URL path" },
		{ "https://1.2.3.4/a%zz", "not a URL path" },
		{ "https://1.2.3.4/dns-query#", "'' is not a host name" },
		{ "https://1.2.3.4/dns-query#bad name", "bad name" },
		{ "https://[1.2.3.4]/", "not an IP address" },
		{ "https://[::1/", "expected https://HOST" },
		{ "https://::1/dns-query", "expected https://HOST" },
		{ "https://1.2.3/", "not an IP address" },
		{ "https://dns_.goo gle/", "not an IP address" },
		{ "https://1.2.3.4/dns-query^AAAA", "pin" },
	};
	struct options_upstream up;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		if (options_parse_upstream(bad[i].spec, &up, err, sizeof(err)) != -EINVAL)
			fail_msg("'%s' was accepted", bad[i].spec);
		assert_contains(err, bad[i].mention);
		assert_null(strchr(err, '\n'));
		assert_int_equal(parse_args(ARGS("--upstream", bad[i].spec)), -EINVAL);
		assert_contains(err, bad[i].mention);
	}
	char spec[400];
	snprintf(spec, sizeof(spec), "https://1.2.3.4/%0300d", 0);
	assert_int_equal(options_parse_upstream(spec, &up, err, sizeof(err)), -EINVAL);
	assert_contains(err, "path longer than 255 bytes");
}

/* A HOST given by name (https://, tls://) is kept in hostname, without an
 * address, and is its own authentication name unless '#' gives another. */
static void named_upstreams(void **state)
{
	(void)state;
	struct options_upstream up;

	assert_int_equal(
	    options_parse_upstream("https://DNS.Quad9.net./dns-query", &up, err, sizeof(err)), 0);
	assert_int_equal(up.transport, OPTIONS_TRANSPORT_DOH);
	assert_string_equal(up.hostname, "dns.quad9.net");
	assert_string_equal(up.auth_name, "dns.quad9.net");
	assert_string_equal(up.ip, "");
	assert_int_equal(up.addr.sa.ss_family, AF_UNSPEC);
	assert_int_equal(up.port, 443);
	assert_string_equal(up.label, "https://dns.quad9.net:443/dns-query");

	assert_int_equal(options_parse_upstream("tls://dns.google", &up, err, sizeof(err)), 0);
	assert_int_equal(up.transport, OPTIONS_TRANSPORT_DOT);
	assert_string_equal(up.hostname, "dns.google");
	assert_string_equal(up.auth_name, "dns.google");
	assert_int_equal(up.port, 853);
	assert_string_equal(up.label, "tls://dns.google:853");

	assert_int_equal(
	    options_parse_upstream("tls://dot.example:8853#other.example", &up, err, sizeof(err)),
	    0);
	assert_string_equal(up.auth_name, "other.example");
	assert_int_equal(up.port, 8853);
	assert_string_equal(up.label, "tls://dot.example:8853#other.example");

	/* tls:// with an IP is the IP@PORT#NAME upstream, label and all. */
	assert_int_equal(
	    options_parse_upstream("tls://9.9.9.9#dns.quad9.net", &up, err, sizeof(err)), 0);
	assert_string_equal(up.hostname, "");
	assert_string_equal(up.ip, "9.9.9.9");
	assert_string_equal(up.label, "9.9.9.9@853#dns.quad9.net");
	assert_int_equal(options_parse_upstream("tls://[2620:fe::fe]:853", &up, err, sizeof(err)),
			 0);
	assert_string_equal(up.label, "2620:fe::fe@853");

	static const struct {
		const char *spec;
		const char *mention;
	} bad[] = {
		{ "tls://dns.google/dns-query", "expected tls://HOST" },
		{ "tls://", "expected tls://HOST" },
		{ "tls://dns.google:0", "port '0'" },
		{ "tls://[dns.google]", "not an IP address" },
		{ "dns.google", "tls://dns.google" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (options_parse_upstream(bad[i].spec, &up, err, sizeof(err)) != -EINVAL)
			fail_msg("'%s' was accepted", bad[i].spec);
		assert_contains(err, bad[i].mention);
	}

	/* A name needs --bootstrap, or an --upstream given by address. */
	assert_int_equal(parse_args(ARGS("--upstream", "tls://dns.google")), -EINVAL);
	assert_contains(err, "tls://dns.google:853 is given by name");
	assert_contains(err, "--bootstrap");
	assert_int_equal(parse_args(ARGS("--upstream", "tls://dns.google", "--upstream",
					 "https://dns.google/dns-query")),
			 -EINVAL);
	assert_int_equal(parse_args(ARGS("--upstream", "tls://dns.google", "--upstream",
					 "9.9.9.9#dns.quad9.net")),
			 OPTIONS_RUN);
	assert_int_equal(cfg.n_bootstrap, 0);
	assert_int_equal(parse_args(ARGS("--forward-zone", "corp=https://doh.corp/q")),
			 OPTIONS_RUN); /* the default upstreams are given by address */
	assert_int_equal(parse_args(ARGS("--upstream", "tls://dns.google", "--forward-zone",
					 "corp=192.0.2.1#x.corp")),
			 -EINVAL);
	assert_contains(err, "--bootstrap");
	assert_int_equal(parse_args(ARGS("--upstream", "tls://dns.google", "--upstream",
					 "https://dns.google/dns-query", "--bootstrap", "192.0.2.1",
					 "--bootstrap", "[2001:db8::1]:5353")),
			 OPTIONS_RUN);
	assert_int_equal(cfg.n_bootstrap, 2);
	assert_string_equal(cfg.bootstrap[0].text, "192.0.2.1:53");
	assert_string_equal(cfg.bootstrap[1].text, "[2001:db8::1]:5353");
	assert_int_equal(cfg.n_warnings, 0);

	/* The same name twice, however spelled, is the same upstream. */
	assert_int_equal(parse_args(ARGS("--upstream", "tls://dns.google", "--upstream",
					 "tls://DNS.google.:853", "--bootstrap", "192.0.2.1")),
			 -EINVAL);
	assert_contains(err, "the same upstream");

	/* --bootstrap: checked, and a warning when nothing needs it. */
	assert_int_equal(parse_args(ARGS("--bootstrap", "192.0.2.1")), OPTIONS_RUN);
	assert_int_equal(cfg.n_warnings, 1);
	assert_contains(cfg.warnings[0], "--bootstrap 192.0.2.1:53");
	assert_int_equal(parse_args(ARGS("--bootstrap", "dns.google")), -EINVAL);
	assert_contains(err, "bad --bootstrap 'dns.google'");
	assert_int_equal(parse_args(ARGS("--bootstrap", "udp://1.2.3.4")), -EINVAL);
	assert_int_equal(
	    parse_args(ARGS("--bootstrap", "192.0.2.1", "--bootstrap", "192.0.2.1:53")), -EINVAL);
	assert_contains(err, "the same server");
}

static void upstream_rejects(void **state)
{
	(void)state;
	static const struct {
		const char *spec;
		const char *mention; /* the error must name this */
	} bad[] = {
		{ "dns.example", "dns.example" },
		{ "1.2.3.4@0", "1.2.3.4@0" },
		{ "1.2.3.4@70000", "70000" },
		{ "1.2.3.4@", "1.2.3.4@" },
		{ "1.2.3.4@x53", "x53" },
		{ "1.2.3.4@-1", "-1" },
		{ "1.2.3.4#bad name", "bad name" },
		{ "1.2.3.4#", "1.2.3.4#" },
		{ "1.2.3.4#a..b", "a..b" },
		{ "1.2.3.4#dns@example", "dns@example" },
		{ "1.2.3.4.5", "1.2.3.4.5" },
		{ "[::1]@853", "[::1]" },
		{ "@853", "@853" },
		{ "#dns.example", "#dns.example" },
		{ "", "upstream" },
	};
	struct options_upstream up;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		assert_int_equal(options_parse_upstream(bad[i].spec, &up, err, sizeof(err)),
				 -EINVAL);
		assert_contains(err, bad[i].mention);
		assert_true(strlen(err) < sizeof(err) - 1);
		assert_null(strchr(err, '\n')); /* one line */

		assert_int_equal(parse_args(ARGS("--upstream", bad[i].spec)), -EINVAL);
		assert_contains(err, bad[i].mention);
	}

	/* A 64-character label is one too many; 63 is fine. */
	char spec[128];
	snprintf(spec, sizeof(spec), "1.2.3.4#%063d.example", 0);
	assert_int_equal(options_parse_upstream(spec, &up, err, sizeof(err)), 0);
	snprintf(spec, sizeof(spec), "1.2.3.4#%064d.example", 0);
	assert_int_equal(options_parse_upstream(spec, &up, err, sizeof(err)), -EINVAL);
}

static void listen_forms(void **state)
{
	(void)state;
	struct options_addr a;
	static const char *const bad[] = {
		"::1:53",  "127.0.0.1",	   "[127.0.0.1]:53", "[::1]",
		"[::1]53", "[::1]:",	   "127.0.0.1:0",    "127.0.0.1:65536",
		":53",	   "localhost:53", "[::1:53",	     "1.2.3.4:53x",
		""
	};

	assert_int_equal(options_parse_listen("[::1]:5353", &a, err, sizeof(err)), 0);
	assert_int_equal(a.sa.ss_family, AF_INET6);
	assert_int_equal(port_of(&a), 5353);
	assert_string_equal(a.text, "[::1]:5353");

	assert_int_equal(options_parse_listen("127.0.0.1:5353", &a, err, sizeof(err)), 0);
	assert_int_equal(a.sa.ss_family, AF_INET);
	assert_int_equal(port_of(&a), 5353);
	assert_string_equal(a.text, "127.0.0.1:5353");
	struct in_addr lo;
	inet_pton(AF_INET, "127.0.0.1", &lo);
	assert_memory_equal(&((struct sockaddr_in *)&a.sa)->sin_addr, &lo, sizeof(lo));

	assert_int_equal(options_parse_listen("0.0.0.0:53", &a, err, sizeof(err)), 0);
	assert_int_equal(options_parse_listen("[::]:53", &a, err, sizeof(err)), 0);
	assert_int_equal(options_parse_listen("[::ffff:127.0.0.1]:53", &a, err, sizeof(err)), 0);
	assert_int_equal(a.sa.ss_family, AF_INET6);

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		assert_int_equal(options_parse_listen(bad[i], &a, err, sizeof(err)), -EINVAL);
		assert_contains(err, bad[i]);
		assert_int_equal(parse_args(ARGS("--listen", bad[i])), -EINVAL);
		assert_contains(err, bad[i]);
	}

	assert_int_equal(parse_args(ARGS("--listen", "[::1]:5353")), OPTIONS_RUN);
	assert_int_equal(cfg.n_listen, 1);
	assert_string_equal(cfg.listen[0].text, "[::1]:5353");
	assert_false(cfg.listen_is_default);
	/* Other options leave the default listen list marked as such. */
	assert_int_equal(parse_args(ARGS("--upstream", "1.2.3.4", "-v")), OPTIONS_RUN);
	assert_true(cfg.listen_is_default);
}

static void equals_form(void **state)
{
	(void)state;
	assert_int_equal(
	    parse_args(ARGS("--listen=127.0.0.1:5300", "--upstream=1.2.3.4@8853", "--timeout=1500",
			    "--ca-file=/etc/ssl/x.pem", "--max-inflight=10", "--max-tcp-clients=20",
			    "--max-tcp-pipeline=30", "--tcp-idle-timeout=40")),
	    OPTIONS_RUN);
	assert_int_equal(cfg.n_listen, 1);
	assert_int_equal(port_of(&cfg.listen[0]), 5300);
	assert_int_equal(cfg.n_upstream, 1);
	assert_int_equal(cfg.upstream[0].port, 8853);
	assert_int_equal(cfg.timeout_ms, 1500);
	assert_string_equal(cfg.ca_file, "/etc/ssl/x.pem");
	assert_int_equal(cfg.max_inflight, 10);
	assert_int_equal(cfg.max_tcp_clients, 20);
	assert_int_equal(cfg.max_tcp_pipeline, 30);
	assert_int_equal(cfg.tcp_idle_timeout_ms, 40);

	/* A value containing '=' keeps everything after the first one. */
	assert_int_equal(parse_args(ARGS("--ca-file=/tmp/a=b.pem")), OPTIONS_RUN);
	assert_string_equal(cfg.ca_file, "/tmp/a=b.pem");

	/* Separate-argument form for the same options. */
	assert_int_equal(parse_args(ARGS("--timeout", "2500", "--log-queries", "--check-config")),
			 OPTIONS_RUN);
	assert_int_equal(cfg.timeout_ms, 2500);
	assert_true(cfg.log_queries);
	assert_true(cfg.check_only);
}

static void bad_arguments(void **state)
{
	(void)state;
	assert_int_equal(parse_args(ARGS("--bogus")), -EINVAL);
	assert_contains(err, "--bogus");
	assert_int_equal(parse_args(ARGS("--bogus=1")), -EINVAL);
	assert_contains(err, "bogus");
	assert_int_equal(parse_args(ARGS("-x")), -EINVAL);
	assert_contains(err, "-x");
	assert_int_equal(parse_args(ARGS("-vx")), -EINVAL);
	assert_contains(err, "-x");
	assert_int_equal(parse_args(ARGS("stray")), -EINVAL);
	assert_contains(err, "stray");
	assert_int_equal(parse_args(ARGS("-")), -EINVAL);
	assert_int_equal(parse_args(ARGS("--")), -EINVAL);
	assert_int_equal(parse_args(ARGS("--verbose=2")), -EINVAL);
	assert_contains(err, "verbose");
	/* An abbreviation is not an option. */
	assert_int_equal(parse_args(ARGS("--upstr", "1.2.3.4")), -EINVAL);
	assert_contains(err, "--upstr");

	/* Missing values. */
	assert_int_equal(parse_args(ARGS("--upstream")), -EINVAL);
	assert_contains(err, "upstream");
	assert_contains(err, "needs a value");
	assert_int_equal(parse_args(ARGS("--timeout")), -EINVAL);
	assert_contains(err, "timeout");
	assert_int_equal(parse_args(ARGS("--config")), -EINVAL);
	assert_contains(err, "config");
	assert_int_equal(parse_args(ARGS("--upstream=")), -EINVAL);
	assert_int_equal(parse_args(ARGS("--ca-file=")), -EINVAL);

	/* Numbers out of range or not numbers. */
	static const char *const bad_numbers[][2] = {
		{ "--timeout", "9" },	     { "--timeout", "600001" },
		{ "--timeout", "abc" },	     { "--timeout", "-5" },
		{ "--timeout", "10ms" },     { "--timeout", "99999999999999999999999" },
		{ "--max-inflight", "0" },   { "--max-tcp-pipeline", "65536" },
		{ "--max-tcp-clients", "" }, { "--tcp-idle-timeout", " 100" },
		{ "--busy-poll", "1001" },   { "--busy-poll", "-1" },
		{ "--workers", "0" },	     { "--workers", "65" },
	};
	for (size_t i = 0; i < sizeof(bad_numbers) / sizeof(bad_numbers[0]); i++) {
		assert_int_equal(parse_args(ARGS(bad_numbers[i][0], bad_numbers[i][1])), -EINVAL);
		assert_contains(err, bad_numbers[i][0] + 2);
		assert_contains(err, bad_numbers[i][1]);
	}
	assert_int_equal(parse_args(ARGS("--timeout", "10")), OPTIONS_RUN);
	assert_int_equal(cfg.timeout_ms, 10);
	assert_int_equal(parse_args(ARGS(NULL)), OPTIONS_RUN);
	assert_int_equal(cfg.busy_poll_us, 200);
	assert_int_equal(parse_args(ARGS("--busy-poll", "0")), OPTIONS_RUN);
	assert_int_equal(cfg.busy_poll_us, 0); /* 0 turns it off */
	assert_int_equal(parse_args(ARGS("--busy-poll=1000")), OPTIONS_RUN);
	assert_int_equal(cfg.busy_poll_us, 1000);
	assert_int_equal(cfg.workers, 1);
	assert_int_equal(parse_args(ARGS("--workers", "64")), OPTIONS_RUN);
	assert_int_equal(cfg.workers, 64);

	/* Too many list entries. */
	const char *args[2 * OPTIONS_MAX_UPSTREAMS + 3];
	unsigned n = 0;
	static char ips[OPTIONS_MAX_UPSTREAMS + 1][16];
	for (unsigned i = 0; i <= OPTIONS_MAX_UPSTREAMS; i++) {
		snprintf(ips[i], sizeof(ips[i]), "192.0.2.%u", i + 1);
		args[n++] = "--upstream";
		args[n++] = ips[i];
	}
	args[n] = NULL;
	assert_int_equal(parse_args(args), -EINVAL);
	assert_contains(err, "too many");
	args[n - 2] = NULL; /* exactly the maximum */
	assert_int_equal(parse_args(args), OPTIONS_RUN);
	assert_int_equal(cfg.n_upstream, OPTIONS_MAX_UPSTREAMS);
}

static void verbose_bundling(void **state)
{
	(void)state;
	assert_int_equal(parse_args(ARGS("-vv")), OPTIONS_RUN);
	assert_int_equal(cfg.verbosity, 2);
	assert_int_equal(parse_args(ARGS("-v", "--verbose", "-vvv")), OPTIONS_RUN);
	assert_int_equal(cfg.verbosity, 5);
	assert_int_equal(parse_args(ARGS(NULL)), OPTIONS_RUN);
	assert_int_equal(cfg.verbosity, 0); /* reset on each parse */
}

/* Run with output captured in memory; returns the text (caller frees). */
static char *captured(const char *const *args, int *rc)
{
	char *text = NULL;
	size_t size = 0;
	FILE *out = open_memstream(&text, &size);

	assert_non_null(out);
	*rc = parse_args_out(out, args);
	assert_int_equal(fclose(out), 0);
	return text;
}

static void help_and_version(void **state)
{
	(void)state;
	int rc;
	char *text;

	text = captured(ARGS("--help"), &rc);
	assert_int_equal(rc, OPTIONS_EXIT);
	assert_contains(text, "Usage: dotproxy");
	assert_contains(text, "--upstream");
	assert_contains(text, "--listen");
	assert_contains(text, "--config");
	assert_contains(text, "--ca-file");
	free(text);

	text = captured(ARGS("-h"), &rc);
	assert_int_equal(rc, OPTIONS_EXIT);
	assert_contains(text, "Usage: dotproxy");
	free(text);

	text = captured(ARGS("--version"), &rc);
	assert_int_equal(rc, OPTIONS_EXIT);
	assert_string_equal(text, "dotproxy " DOTPROXY_VERSION "\n");
	free(text);

	text = captured(ARGS("-V"), &rc);
	assert_int_equal(rc, OPTIONS_EXIT);
	assert_contains(text, DOTPROXY_VERSION);
	free(text);

	/* A bad argument anywhere still fails, help or not. */
	text = captured(ARGS("--help", "--bogus"), &rc);
	assert_int_equal(rc, -EINVAL);
	free(text);

	/* Nothing is printed for a normal run. */
	text = captured(ARGS("-v"), &rc);
	assert_int_equal(rc, OPTIONS_RUN);
	assert_string_equal(text, "");
	free(text);
}

static void config_file(void **state)
{
	(void)state;
	char path[64];

	write_config(path, sizeof(path),
		     "# dotproxy test configuration\n"
		     "\n"
		     "listen 127.0.0.1:5300\n"
		     "   listen    [::1]:5300   \n"
		     "\t\n"
		     "upstream 1.2.3.4@8853   # trailing comment\n"
		     "upstream 5.6.7.8\n"
		     "timeout 1500\n"
		     "ca-file /etc/ssl/certs/ca.pem\n"
		     "log-queries\n"
		     "verbose\n"
		     "max-inflight 77");
	assert_int_equal(parse_args(ARGS("--config", path)), OPTIONS_RUN);
	assert_int_equal(cfg.n_listen, 2);
	assert_string_equal(cfg.listen[0].text, "127.0.0.1:5300");
	assert_string_equal(cfg.listen[1].text, "[::1]:5300");
	assert_false(cfg.listen_is_default);
	assert_int_equal(cfg.n_upstream, 2); /* the file's list replaced the defaults */
	assert_string_equal(cfg.upstream[0].ip, "1.2.3.4");
	assert_int_equal(cfg.upstream[0].port, 8853);
	assert_string_equal(cfg.upstream[1].ip, "5.6.7.8");
	assert_int_equal(cfg.timeout_ms, 1500);
	assert_string_equal(cfg.ca_file, "/etc/ssl/certs/ca.pem");
	assert_true(cfg.log_queries);
	assert_int_equal(cfg.verbosity, 1);
	assert_int_equal(cfg.max_inflight, 77); /* last line without a newline */

	/* The command line wins over the file, wherever --config stands. */
	assert_int_equal(parse_args(ARGS("--timeout", "2500", "--config", path, "-v")),
			 OPTIONS_RUN);
	assert_int_equal(cfg.timeout_ms, 2500);
	assert_int_equal(cfg.verbosity, 2); /* flags add up */
	assert_int_equal(cfg.n_upstream, 2);

	/* A list on the command line replaces the file's list, not appends. */
	assert_int_equal(parse_args(ARGS("--config", path, "--upstream", "9.9.9.9#dns.quad9.net")),
			 OPTIONS_RUN);
	assert_int_equal(cfg.n_upstream, 1);
	assert_string_equal(cfg.upstream[0].ip, "9.9.9.9");
	assert_int_equal(cfg.n_listen, 2); /* the file's, not the defaults */
	assert_string_equal(cfg.listen[0].text, "127.0.0.1:5300");

	/* --config=FILE, after a list option. */
	char arg[80];
	snprintf(arg, sizeof(arg), "--config=%s", path);
	assert_int_equal(parse_args(ARGS("--listen", "[::1]:9", arg)), OPTIONS_RUN);
	assert_int_equal(cfg.n_listen, 1);
	assert_string_equal(cfg.listen[0].text, "[::1]:9");
	assert_int_equal(cfg.n_upstream, 2);

	unlink(path);
}

static void expect_file_error(const char *text, unsigned line, const char *mention);

/*
 * The upstream syntax IP[@PORT][#AUTH-NAME] uses '#', which is also the
 * config file's comment character.  The help text says the file takes "the
 * same names", so the natural line is `upstream IP#NAME`: it must keep the
 * authentication name, not silently fall back to IP verification.
 */
static void config_file_auth_name(void **state)
{
	(void)state;
	char path[64];

	write_config(path, sizeof(path),
		     "upstream 1.2.3.4@8853#dns.example\n"
		     "upstream 9.9.9.9#dns.quad9.net # Quad9\n");
	int rc = parse_args(ARGS("--config", path));
	unlink(path);
	assert_int_equal(rc, OPTIONS_RUN);
	assert_int_equal(cfg.n_upstream, 2);
	assert_string_equal(cfg.upstream[0].auth_name, "dns.example");
	assert_string_equal(cfg.upstream[1].auth_name, "dns.quad9.net");

	/* A space before the '#' would make the name a comment and the
	 * upstream verified by its IP: refused, with both ways to write it. */
	expect_file_error("upstream 127.0.0.1@8853 #dns.example\n", 1,
			  "upstream 127.0.0.1@8853 #dns.example: a '#' after white space starts a "
			  "comment, which would drop the auth name dns.example: write "
			  "127.0.0.1@8853#dns.example (no space before '#'), or '# dns.example' "
			  "for a comment");
	expect_file_error(
	    "# x\nupstream 1.2.3.4^47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\t"
	    "#dns.example # more\n",
	    2, "write 1.2.3.4#dns.example^47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU= ");
	expect_file_error("forward-zone corp.example=10.0.0.1,10.0.0.2 #dns.corp.example\n", 1,
			  "write corp.example=10.0.0.1,10.0.0.2#dns.corp.example (no space");
	expect_file_error("forward-zone corp.example=10.0.0.1 #dns.corp.example\n", 1,
			  "write corp.example=10.0.0.1#dns.corp.example (no space");

	/* Comments that cannot be a lost name stay comments: a space after the
	 * '#', one word without a dot, an upstream that has its name already,
	 * plain DNS (no name), another option. */
	write_config(path, sizeof(path),
		     "upstream 1.2.3.4@8853 # dns.example\n"
		     "upstream 1.2.3.5 #primary\n"
		     "upstream 1.2.3.6#dns.example #backup.example\n"
		     "forward-zone lan=udp://192.168.1.1 #router.lan\n"
		     "listen 127.0.0.1:5353 #lan.example\n");
	rc = parse_args(ARGS("--config", path));
	unlink(path);
	assert_int_equal(rc, OPTIONS_RUN);
	assert_int_equal(cfg.n_upstream, 3);
	assert_string_equal(cfg.upstream[0].auth_name, "");
	assert_string_equal(cfg.upstream[1].auth_name, "");
	assert_string_equal(cfg.upstream[2].auth_name, "dns.example");
	assert_int_equal(cfg.n_listen, 1);
}

/* Parse a config made of @text and expect -EINVAL with "PATH:LINE: ..." */
static void expect_file_error(const char *text, unsigned line, const char *mention)
{
	char path[64], prefix[96];

	write_config(path, sizeof(path), text);
	int rc = parse_args(ARGS("--config", path));
	unlink(path);
	assert_int_equal(rc, -EINVAL);
	snprintf(prefix, sizeof(prefix), "%s:%u: ", path, line);
	if (strncmp(err, prefix, strlen(prefix)) != 0)
		fail_msg("'%s' does not start with '%s'", err, prefix);
	assert_contains(err, mention);
	assert_null(strchr(err, '\n'));
}

static void config_file_errors(void **state)
{
	(void)state;
	expect_file_error("# ok\n\nbogus 1\n", 3, "unknown option 'bogus'");
	expect_file_error("timeout 100\nlisten\n", 2, "listen");
	expect_file_error("log-queries yes\n", 1, "log-queries");
	expect_file_error("\n\n\n\ntimeout abc\n", 5, "abc");
	expect_file_error("upstream dns.example\n", 1, "dns.example");
	expect_file_error("listen ::1:53\n", 1, "::1:53");
	/* Options that only make sense on the command line. */
	expect_file_error("help\n", 1, "help");
	expect_file_error("config /etc/other.conf\n", 1, "config");
	/* Dashes belong to the command line. */
	expect_file_error("--timeout 100\n", 1, "--timeout");

	/* A line longer than the reader's buffer is refused, not split. */
	size_t n = 10000;
	char *text = malloc(n + 16);
	assert_non_null(text);
	memcpy(text, "ca-file /", 9);
	memset(text + 9, 'a', n - 9);
	memcpy(text + n, "\n", 2);
	expect_file_error(text, 1, "too long");
	free(text);

	/* A missing file is named. */
	assert_int_equal(parse_args(ARGS("--config", "/nonexistent/dotproxy.conf")), -EINVAL);
	assert_contains(err, "/nonexistent/dotproxy.conf");
}

/*
 * The example config shipped in contrib/ says that as shipped it changes
 * nothing, and that removing the "# " of an option line sets it.  Check both,
 * so the example cannot drift from the parser.  Skipped when the tests are
 * not run from the source tree.
 */
static void example_config(void **state)
{
	(void)state;
	static const char *const names[] = { "listen",		"upstream",	    "ca-file",
					     "timeout",		"tcp-idle-timeout", "max-inflight",
					     "max-tcp-clients", "max-tcp-pipeline", "log-queries",
					     "verbose",		"doh-method",	    "metrics",
					     "control" };
	const char *example = "contrib/dotproxy.conf";
	FILE *f = fopen(example, "r");
	if (!f)
		skip();

	struct config defaults_cfg;
	assert_int_equal(parse_args(ARGS(NULL)), OPTIONS_RUN);
	defaults_cfg = cfg;
	assert_int_equal(parse_args(ARGS("--config", example)), OPTIONS_RUN);
	assert_int_equal(cfg.n_listen, defaults_cfg.n_listen);
	for (unsigned i = 0; i < cfg.n_listen; i++)
		assert_string_equal(cfg.listen[i].text, defaults_cfg.listen[i].text);
	assert_int_equal(cfg.n_upstream, defaults_cfg.n_upstream);
	for (unsigned i = 0; i < cfg.n_upstream; i++)
		assert_string_equal(cfg.upstream[i].label, defaults_cfg.upstream[i].label);
	assert_int_equal(cfg.timeout_ms, defaults_cfg.timeout_ms);
	assert_int_equal(cfg.verbosity, 0);
	assert_false(cfg.log_queries);
	assert_string_equal(cfg.ca_file, "");

	char line[512];
	unsigned tried = 0;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, "# ", 2) != 0)
			continue;
		const char *opt = line + 2;
		size_t word = strcspn(opt, " \n");
		bool known = false;
		for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
			if (strlen(names[i]) == word && strncmp(opt, names[i], word) == 0)
				known = true;
		if (!known)
			continue;
		char path[64];
		write_config(path, sizeof(path), opt);
		int rc = parse_args(ARGS("--config", path));
		unlink(path);
		if (rc != OPTIONS_RUN)
			fail_msg("example line '%.*s' does not parse: %s", (int)strcspn(opt, "\n"),
				 opt, err);
		tried++;
	}
	fclose(f);
	assert_true(tried >= sizeof(names) / sizeof(names[0]));
}

/* --local-data: checked as parsed, stored as given, a list. */
static void local_data_option(void **state)
{
	(void)state;
	assert_int_equal(parse_args(ARGS(NULL)), OPTIONS_RUN);
	assert_int_equal(cfg.n_local_data, 0);

	assert_int_equal(
	    parse_args(ARGS("--local-data", "nas.home.arpa A 192.168.1.10",
			    "--local-data=nas.home.arpa. 60 AAAA 2001:db8::10", "--local-data",
			    "txt.home.arpa TXT \"a b\" \"say \\\"hi\\\" #1\"", "--local-data",
			    "x.example TXT \"k=v\"")),
	    OPTIONS_RUN);
	assert_int_equal(cfg.n_local_data, 4);
	assert_string_equal(cfg.local_data[0], "nas.home.arpa A 192.168.1.10");
	assert_string_equal(cfg.local_data[1], "nas.home.arpa. 60 AAAA 2001:db8::10");
	assert_string_equal(cfg.local_data[2], "txt.home.arpa TXT \"a b\" \"say \\\"hi\\\" #1\"");
	assert_string_equal(cfg.local_data[3], "x.example TXT \"k=v\"");

	/* A bad line fails the parse, naming the line and the cause. */
	static const struct {
		const char *line, *cause;
	} bad[] = {
		{ "nas.home.arpa A 1.2.3", "bad address '1.2.3' for A" },
		{ "nas.home.arpa FOO 1", "unknown type 'FOO'" },
		{ "nas.home.arpa NS ns.example", "type 'NS' is not served" },
		{ "t.home.arpa TXT unquoted", "TXT needs quoted strings" },
		{ "t.home.arpa 4294967296 TXT \"x\"", "TTL '4294967296' out of range" },
		{ "bad_name!.home.arpa A 192.0.2.1", "invalid character" },
		{ "", "empty" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char want[256];
		assert_int_equal(parse_args(ARGS("--local-data", bad[i].line)), -EINVAL);
		snprintf(want, sizeof(want), "bad --local-data '%s': ", bad[i].line);
		if (strncmp(err, want, strlen(want)) != 0)
			fail_msg("'%s' does not start with '%s'", err, want);
		assert_contains(err, bad[i].cause);
	}

	/* Bounds: 511 bytes a line, 256 lines. */
	char line[600];
	snprintf(line, sizeof(line), "t.example TXT \"%0200d\" \"%0200d\" \"%089d\"", 0, 0, 0);
	assert_int_equal(strlen(line), 511);
	assert_int_equal(parse_args(ARGS("--local-data", line)), OPTIONS_RUN);
	snprintf(line, sizeof(line), "t.example TXT \"%0200d\" \"%0200d\" \"%090d\"", 0, 0, 0);
	assert_int_equal(parse_args(ARGS("--local-data", line)), -EINVAL);
	assert_contains(err, "longer than 511 bytes");

	static char lines[OPTIONS_MAX_LOCAL_DATA + 1][48];
	char *argv[2 * (OPTIONS_MAX_LOCAL_DATA + 1) + 2];
	int argc = 0;
	argv[argc++] = (char *)"dotproxy";
	for (int i = 0; i <= OPTIONS_MAX_LOCAL_DATA; i++) {
		snprintf(lines[i], sizeof(lines[i]), "h%d.example A 192.0.2.1", i);
		argv[argc++] = (char *)"--local-data";
		argv[argc++] = lines[i];
	}
	argv[argc] = NULL;
	FILE *out = fopen("/dev/null", "w");
	assert_int_equal(options_parse(argc - 2, argv, &cfg, out, err, sizeof(err)), OPTIONS_RUN);
	assert_int_equal(cfg.n_local_data, OPTIONS_MAX_LOCAL_DATA);
	assert_int_equal(options_parse(argc, argv, &cfg, out, err, sizeof(err)), -EINVAL);
	fclose(out);
	assert_contains(err, "too many --local-data (at most 256)");
}

/*
 * The config file form: the same line without dashes, quoted whole or not.
 * A TXT record's double quotes, spaces and '#' survive when the value is in
 * single quotes or unquoted; '#' after a space outside quotes still starts
 * a comment.
 */
static void local_data_config_file(void **state)
{
	(void)state;
	char path[64];

	write_config(
	    path, sizeof(path),
	    "local-data \"nas.home.arpa A 192.168.1.10\"\n"
	    "local-data 'txt.home.arpa TXT \"hello world\" \"# not a comment\"' # comment\n"
	    "  local-data   t2.home.arpa 60 TXT \"a  b\" \"c#d\"   # comment\n"
	    "local-data t3.home.arpa TXT \"say \\\"hi\\\" # still text\"\n"
	    "local-data 'single.home.arpa A 192.168.1.11'\n"
	    "hosts \"/etc/my hosts\"\n"
	    "hosts /etc/hosts # the system's\n"
	    "no-builtin-zone \"home.arpa\"\n");
	assert_int_equal(parse_args(ARGS("--config", path)), OPTIONS_RUN);
	assert_int_equal(cfg.n_local_data, 5);
	assert_string_equal(cfg.local_data[0], "nas.home.arpa A 192.168.1.10");
	assert_string_equal(cfg.local_data[1],
			    "txt.home.arpa TXT \"hello world\" \"# not a comment\"");
	assert_string_equal(cfg.local_data[2], "t2.home.arpa 60 TXT \"a  b\" \"c#d\"");
	assert_string_equal(cfg.local_data[3], "t3.home.arpa TXT \"say \\\"hi\\\" # still text\"");
	assert_string_equal(cfg.local_data[4], "single.home.arpa A 192.168.1.11");
	assert_int_equal(cfg.n_hosts, 2);
	assert_string_equal(cfg.hosts[0], "/etc/my hosts");
	assert_string_equal(cfg.hosts[1], "/etc/hosts");
	assert_int_equal(cfg.n_no_builtin, 1);
	assert_string_equal(cfg.no_builtin[0], "home.arpa.");

	/* The command line's list replaces the file's, as for --upstream. */
	assert_int_equal(parse_args(ARGS("--config", path, "--local-data", "x.example A 192.0.2.1",
					 "--hosts", "/tmp/h")),
			 OPTIONS_RUN);
	assert_int_equal(cfg.n_local_data, 1);
	assert_string_equal(cfg.local_data[0], "x.example A 192.0.2.1");
	assert_int_equal(cfg.n_hosts, 1);
	assert_string_equal(cfg.hosts[0], "/tmp/h");
	assert_int_equal(cfg.n_no_builtin, 1);
	unlink(path);

	/* A bad line names the file, the line and the cause. */
	expect_file_error("# x\nlocal-data \"nas.home.arpa A 1.2.3\"\n", 2,
			  "bad --local-data 'nas.home.arpa A 1.2.3': bad address '1.2.3' for A");
	expect_file_error("local-data 't.home.arpa TXT unquoted'\n", 1, "TXT needs quoted strings");
	expect_file_error("local-data\n", 1, "'local-data' needs a value");
	/* Quotes that do not close leave the value as written: a bad name. */
	expect_file_error("local-data \"nas.home.arpa A 192.168.1.10\n", 1, "bad name");
	/* Other options keep their '#' rule: a comment after a space. */
	write_config(path, sizeof(path), "ca-file \"/x\" # c\nblock '/y'\n");
	assert_int_equal(parse_args(ARGS("--config", path)), OPTIONS_RUN);
	assert_string_equal(cfg.ca_file, "\"/x\"");
	assert_string_equal(cfg.block_file, "'/y'");
	unlink(path);
}

static void hosts_and_builtin_options(void **state)
{
	(void)state;
	assert_int_equal(
	    parse_args(ARGS("--hosts", "/etc/hosts", "--hosts=/srv/lan.hosts", "--no-builtin-zone",
			    "Home.Arpa", "--no-builtin-zone", "home.arpa.", "--no-builtin-zone",
			    "168.192.in-addr.arpa")),
	    OPTIONS_RUN);
	assert_int_equal(cfg.n_hosts, 2);
	assert_string_equal(cfg.hosts[0], "/etc/hosts");
	assert_string_equal(cfg.hosts[1], "/srv/lan.hosts");
	assert_int_equal(cfg.n_no_builtin, 2); /* the same zone twice is kept once */
	assert_string_equal(cfg.no_builtin[0], "home.arpa.");
	assert_string_equal(cfg.no_builtin[1], "168.192.in-addr.arpa.");

	assert_int_equal(parse_args(ARGS("--hosts", "")), -EINVAL);
	assert_contains(err, "bad --hosts ''");
	assert_int_equal(parse_args(ARGS("--hosts", "1", "--hosts", "2", "--hosts", "3", "--hosts",
					 "4", "--hosts", "5", "--hosts", "6", "--hosts", "7",
					 "--hosts", "8", "--hosts", "9")),
			 -EINVAL);
	assert_contains(err, "too many --hosts (at most 8)");
	static const char *const bad_zones[] = { ".", "", "a..b", "bad zone", "*.example" };
	for (size_t i = 0; i < sizeof(bad_zones) / sizeof(bad_zones[0]); i++) {
		assert_int_equal(parse_args(ARGS("--no-builtin-zone", bad_zones[i])), -EINVAL);
		assert_contains(err, "bad --no-builtin-zone");
	}
	/* Whether a zone is built in is checked where the zones are: by
	 * localzone_from_config(), at start-up and --check-config. */
	assert_int_equal(parse_args(ARGS("--no-builtin-zone", "example.com")), OPTIONS_RUN);

	int rc;
	char *text = captured(ARGS("--help"), &rc);
	assert_contains(text, "--local-data 'NAME [TTL] TYPE VALUE'");
	assert_contains(text, "--hosts FILE");
	assert_contains(text, "--no-builtin-zone ZONE");
	free(text);
}

/*
 * The same listen address twice, however it is written, would make
 * start-up fail against itself, and so would a wildcard next to a single
 * address of its family and port: both are refused at parse time, naming
 * the two.  A list on the command line replaces the file's, so the same
 * address in both places is not a duplicate.
 */
static void listen_duplicates(void **state)
{
	(void)state;
	static const struct {
		const char *first, *second, *mention;
	} bad[] = {
		{ "127.0.0.1:53", "127.0.0.1:53", "the same address as 127.0.0.1:53" },
		{ "127.0.0.1:53", "127.0.0.1:0053", "the same address as 127.0.0.1:53" },
		{ "[::1]:53", "[0:0::1]:53", "the same address as [::1]:53" },
		{ "0.0.0.0:53", "127.0.0.1:53", "0.0.0.0:53, given before, already listens" },
		{ "[::1]:5353", "[::]:5353", "every IPv6 address at port 5353, [::1]:5353" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(
		    parse_args(ARGS("--listen", bad[i].first, "--listen", bad[i].second)), -EINVAL);
		assert_contains(err, "--listen ");
		assert_contains(err, bad[i].second);
		assert_contains(err, bad[i].mention);
	}
	/* Not the same: another port, another family, a wildcard of the other
	 * family (the IPv6 sockets are IPv6-only). */
	assert_int_equal(parse_args(ARGS("--listen", "127.0.0.1:53", "--listen", "127.0.0.1:54",
					 "--listen", "[::]:53", "--listen", "0.0.0.0:55")),
			 OPTIONS_RUN);
	assert_int_equal(cfg.n_listen, 4);

	/* An IPv4-mapped address cannot be bound; the error says what to write. */
	assert_int_equal(parse_args(ARGS("--listen", "[::ffff:127.0.0.1]:5353")), -EINVAL);
	assert_contains(err, "write 127.0.0.1:5353");

	/* The file's list and the command line's are not one list. */
	char path[64];
	write_config(path, sizeof(path), "listen 127.0.0.1:5300\nlisten [::1]:5300\n");
	assert_int_equal(parse_args(ARGS("--config", path, "--listen", "127.0.0.1:5300")),
			 OPTIONS_RUN);
	assert_int_equal(cfg.n_listen, 1);
	unlink(path);
	expect_file_error("listen 127.0.0.1:5300\n# x\nlisten 127.0.0.1:05300\n", 3,
			  "the same address as 127.0.0.1:5300");
}

/* The same upstream twice (address, port and auth name, however written)
 * is refused in the default list and within one forward zone; the same
 * server in two zones, or in a zone and the default list, is fine. */
static void upstream_duplicates(void **state)
{
	(void)state;
	static const struct {
		const char *first, *second;
	} same[] = {
		{ "1.2.3.4", "1.2.3.4@853" },
		{ "1.2.3.4#dns.example", "1.2.3.4@853#DNS.example" },
		{ "2001:db8::1@853", "2001:0db8:0::1" },
		{ "1.2.3.4#dns.example^47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
		  "1.2.3.4#dns.example" },
	};
	for (size_t i = 0; i < sizeof(same) / sizeof(same[0]); i++) {
		assert_int_equal(
		    parse_args(ARGS("--upstream", same[i].first, "--upstream", same[i].second)),
		    -EINVAL);
		assert_contains(err, "--upstream ");
		assert_contains(err, same[i].second);
		assert_contains(err, "the same upstream as");
		char zone[256];
		snprintf(zone, sizeof(zone), "corp.example=%s,%s", same[i].first, same[i].second);
		assert_int_equal(parse_args(ARGS("--forward-zone", zone)), -EINVAL);
		assert_contains(err, "--forward-zone corp.example=");
		assert_contains(err, "the same upstream as");
	}
	assert_int_equal(parse_args(ARGS("--upstream", "1.2.3.4", "--upstream", "1.2.3.4#x.example",
					 "--upstream", "1.2.3.4@8853", "--upstream", "1.2.3.5")),
			 OPTIONS_RUN);
	assert_int_equal(cfg.n_upstream, 4);
	assert_int_equal(
	    parse_args(ARGS("--upstream", "1.2.3.4", "--forward-zone", "a.example=1.2.3.4",
			    "--forward-zone", "b.example=1.2.3.4,udp://1.2.3.4:853")),
	    OPTIONS_RUN);
	assert_int_equal(cfg.n_zones, 2);
	/* '.' and --upstream make one list. */
	assert_int_equal(parse_args(ARGS("--forward-zone", ".=1.2.3.4", "--upstream", "1.2.3.4")),
			 -EINVAL);
	assert_contains(err, "the same upstream as 1.2.3.4@853");

	/* In a file: named with its line; against the command line: replaced. */
	expect_file_error("upstream 9.9.9.9#dns.quad9.net\nupstream 9.9.9.9@853#dns.quad9.net\n", 2,
			  "the same upstream as 9.9.9.9@853#dns.quad9.net");
	char path[64];
	write_config(path, sizeof(path), "upstream 9.9.9.9#dns.quad9.net\n");
	assert_int_equal(parse_args(ARGS("--config", path, "--upstream", "9.9.9.9#dns.quad9.net")),
			 OPTIONS_RUN);
	assert_int_equal(cfg.n_upstream, 1);
	unlink(path);
}

/* Two values that cannot both hold are an error naming both and where
 * each was set; an option without effect is a warning kept with the config. */
static void contradictions(void **state)
{
	(void)state;
	char path[64], want[256];

	assert_int_equal(parse_args(ARGS("--cache-min-ttl", "3600", "--cache-max-ttl", "60")),
			 -EINVAL);
	assert_string_equal(err, "--cache-min-ttl 3600 (command line) is above --cache-max-ttl 60 "
				 "(command line): the minimum cannot be above the maximum");
	assert_int_equal(parse_args(ARGS("--cache-min-ttl", "100000")), -EINVAL);
	assert_contains(err, "above --cache-max-ttl 86400 (default)");
	write_config(path, sizeof(path), "# ttl\n\ncache-min-ttl 600\n");
	assert_int_equal(parse_args(ARGS("--config", path, "--cache-max-ttl", "60")), -EINVAL);
	snprintf(want, sizeof(want),
		 "--cache-min-ttl 600 (%s:3) is above --cache-max-ttl 60 (command line)", path);
	assert_contains(err, want);
	/* The command line's value wins, and then they agree. */
	assert_int_equal(parse_args(ARGS("--config", path, "--cache-min-ttl", "60")), OPTIONS_RUN);
	unlink(path);
	assert_int_equal(parse_args(ARGS("--cache-min-ttl", "60", "--cache-max-ttl", "60")),
			 OPTIONS_RUN);
	assert_int_equal(cfg.n_warnings, 0);

	/* No warning for the defaults, nor for what works. */
	assert_int_equal(parse_args(ARGS(NULL)), OPTIONS_RUN);
	assert_int_equal(cfg.n_warnings, 0);
	assert_int_equal(parse_args(ARGS("--serve-stale", "60", "--block", "/x", "--block-action",
					 "null", "--cache-min-ttl", "5")),
			 OPTIONS_RUN);
	assert_int_equal(cfg.n_warnings, 0);
	assert_int_equal(parse_args(ARGS("--cache-size", "0", "--serve-stale", "0")), OPTIONS_RUN);
	assert_int_equal(cfg.n_warnings, 0);

	assert_int_equal(parse_args(ARGS("--serve-stale", "86400", "--cache-size", "0")),
			 OPTIONS_RUN);
	assert_int_equal(cfg.n_warnings, 1);
	assert_string_equal(cfg.warnings[0], "--serve-stale 86400 (command line) does nothing with "
					     "--cache-size 0 (command line): no answer is kept "
					     "to serve");
	assert_int_equal(parse_args(ARGS("--cache-size", "0", "--cache-max-ttl", "300")),
			 OPTIONS_RUN);
	assert_int_equal(cfg.n_warnings, 1);
	assert_contains(cfg.warnings[0], "--cache-max-ttl (command line) does nothing with "
					 "--cache-size 0");
	assert_int_equal(parse_args(ARGS("--block-action", "refused")), OPTIONS_RUN);
	assert_int_equal(cfg.n_warnings, 1);
	assert_string_equal(cfg.warnings[0],
			    "--block-action refused (command line) does nothing without --block");
	assert_int_equal(parse_args(ARGS("--dnstap-identity", "ns1")), OPTIONS_RUN);
	assert_int_equal(cfg.n_warnings, 1);
	assert_string_equal(cfg.warnings[0],
			    "--dnstap-identity ns1 (command line) does nothing without --dnstap");
	/* The defaults include DoH upstreams; a DoT-only list has none. */
	assert_int_equal(parse_args(ARGS("--doh-keepalive", "20000")), OPTIONS_RUN);
	assert_int_equal(cfg.n_warnings, 0);
	assert_int_equal(
	    parse_args(ARGS("--doh-keepalive", "20000", "--upstream", "127.0.0.1@853#x.example")),
	    OPTIONS_RUN);
	assert_int_equal(cfg.n_warnings, 1);
	assert_string_equal(cfg.warnings[0], "--doh-keepalive 20000 (command line) does nothing: "
					     "no upstream is a DoH upstream");
	assert_int_equal(
	    parse_args(ARGS("--doh-keepalive", "20000", "--upstream", "127.0.0.1@853#x.example",
			    "--forward-zone", "lan=https://192.168.1.1/dns-query")),
	    OPTIONS_RUN);
	assert_int_equal(cfg.n_warnings, 0);
	assert_int_equal(
	    parse_args(
		ARGS("--profile", "opportunistic", "--forward-zone",
		     "a.example=1.2.3.4#x.example^47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=")),
	    OPTIONS_RUN);
	assert_int_equal(cfg.n_warnings, 1);
	assert_contains(cfg.warnings[0], "upstream 1.2.3.4@853#x.example has pins, but with "
					 "--profile opportunistic");

	/* Several at once, each on its own line; the file is named. */
	write_config(path, sizeof(path), "cache-size 0\nserve-stale 10\nblock-action null\n");
	assert_int_equal(parse_args(ARGS("--config", path)), OPTIONS_RUN);
	assert_int_equal(cfg.n_warnings, 2);
	snprintf(want, sizeof(want),
		 "--serve-stale 10 (%s:2) does nothing with --cache-size 0 (%s:1)", path, path);
	assert_contains(cfg.warnings[0], want);
	snprintf(want, sizeof(want), "--block-action null (%s:3)", path);
	assert_contains(cfg.warnings[1], want);
	for (unsigned i = 0; i < cfg.n_warnings; i++)
		assert_null(strchr(cfg.warnings[i], '\n'));
	unlink(path);
}

/* Another tool's notation gets an error that says how to write it here. */
static void other_notations(void **state)
{
	(void)state;
	static const struct {
		const char *option, *value, *fix;
	} cases[] = {
		{ "--upstream", "9.9.9.9:853",
		  "the port follows '@', as in unbound: write 9.9.9.9@853" },
		{ "--upstream", "9.9.9.9:853#dns.quad9.net", "write 9.9.9.9@853#dns.quad9.net" },
		{ "--upstream", "[2620:fe::fe]:853",
		  "an IPv6 upstream is written without brackets, the port after '@': write "
		  "2620:fe::fe@853" },
		{ "--upstream", "[2620:fe::fe]@853#dns.quad9.net",
		  "write 2620:fe::fe@853#dns.quad9.net" },
		{ "--upstream", "[2620:fe::fe]", "write 2620:fe::fe" },
		{ "--upstream", "[::1]:8853#x.example^47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
		  "write ::1@8853#x.example^47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=" },
		{ "--forward-zone", "corp.example=10.0.0.1:853", "write 10.0.0.1@853" },
		{ "--listen", "127.0.0.1@5353", "the port follows ':' here: write 127.0.0.1:5353" },
		{ "--listen", "::1@5353", "write [::1]:5353" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *spec = strchr(cases[i].value, '=');
		assert_int_equal(parse_args(ARGS(cases[i].option, cases[i].value)), -EINVAL);
		assert_contains(err, spec ? spec + 1 : cases[i].value);
		assert_contains(err, cases[i].fix);
	}
	/* No suggestion where there is nothing right to suggest. */
	static const char *const plain[] = { "9.9.9.9:99999", "dns.quad9.net:853", "[x]:853",
					     "1.2.3.4:5:6" };
	for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++) {
		assert_int_equal(parse_args(ARGS("--upstream", plain[i])), -EINVAL);
		assert_contains(err, "is not an IP address");
	}
}

/* options_print() of the current cfg, in memory (caller frees). */
static char *printed(void)
{
	char *text = NULL;
	size_t size = 0;
	FILE *out = open_memstream(&text, &size);

	assert_non_null(out);
	options_print(&cfg, out);
	assert_int_equal(fclose(out), 0);
	return text;
}

static void assert_line(const char *text, const char *line)
{
	size_t n = strlen(line);

	for (const char *p = text; p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
		if (strncmp(p, line, n) == 0 && (p[n] == '\n' || p[n] == '\0'))
			return;
	fail_msg("no line '%s' in:\n%s", line, text);
}

/*
 * --check-config -v: every setting in the file's syntax.  Read back with
 * --config, the listing gives the same listing: nothing is lost, quoted
 * wrong or warned about that was not there.
 */
static void print_settings(void **state)
{
	(void)state;
	char path[64];

	assert_int_equal(parse_args(ARGS(NULL)), OPTIONS_RUN);
	char *text = printed();
	assert_line(text, "listen 127.0.0.1:53");
	assert_line(text, "listen [::1]:53");
	assert_line(text, "upstream 9.9.9.9@853#dns.quad9.net");
	assert_line(text, "# ca-file not set: the system trust store");
	assert_line(text, "timeout 4000");
	assert_line(text, "cache-size 32M");
	assert_line(text, "udp-recv-buffer 8M");
	assert_line(text, "# no-padding not set: queries are padded");
	assert_line(text, "# block-action nxdomain (unused: no block file)");
	assert_line(text, "allow 127.0.0.0/8");
	assert_line(text, "allow ::1/128");
	assert_line(text, "# verbose not set: errors and warnings only");
	/* Every option of the file appears, set or as a comment. */
	static const char *const all[] = {
		"listen",
		"upstream",
		"forward-zone",
		"ca-file",
		"timeout",
		"tcp-idle-timeout",
		"workers",
		"max-inflight",
		"max-tcp-clients",
		"max-udp-size",
		"max-tcp-pipeline",
		"policy",
		"profile",
		"idle-timeout",
		"busy-poll",
		"max-connections",
		"no-padding",
		"no-session-resumption",
		"cache-size",
		"udp-recv-buffer",
		"cache-min-ttl",
		"cache-max-ttl",
		"serve-stale",
		"no-prefetch",
		"block",
		"block-action",
		"local-data",
		"hosts",
		"no-builtin-zone",
		"allow",
		"user",
		"log-queries",
		"verbose",
	};
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
		char line[64];
		snprintf(line, sizeof(line), "\n%s ", all[i]);
		char comment[64];
		snprintf(comment, sizeof(comment), "\n# %s ", all[i]);
		char flag[64];
		snprintf(flag, sizeof(flag), "\n%s\n", all[i]);
		if (!strstr(text, line) && !strstr(text, comment) && !strstr(text, flag) &&
		    strncmp(text, line + 1, strlen(line + 1)) != 0)
			fail_msg("no line for '%s' in:\n%s", all[i], text);
	}
	assert_null(strstr(text, "check-config"));
	assert_null(strstr(text, "\nconfig"));
	free(text);

	/* Everything away from its default, and back through a file. */
	write_config(path, sizeof(path), "verbose\n");
	assert_int_equal(
	    parse_args(ARGS(
		"--config", path, "-v", "--listen", "127.0.0.1:5300", "--listen", "[::1]:05300",
		"--upstream",
		"1.2.3.4@8853#dns.example^47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
		"--upstream", "2001:db8::1", "--forward-zone",
		"Corp.Example=10.0.0.1#dns.corp.example,udp://[fd00::1]:5353", "--forward-zone",
		"lan=udp://192.168.1.1", "--ca-file", "/etc/ssl/ca.pem", "--timeout", "1500",
		"--tcp-idle-timeout", "2000", "--workers", "2", "--max-inflight", "99",
		"--max-tcp-clients", "98", "--max-udp-size", "1400", "--max-tcp-pipeline", "97",
		"--policy", "round-robin", "--profile", "opportunistic", "--idle-timeout", "3000",
		"--busy-poll", "0", "--max-connections", "2", "--no-padding",
		"--no-session-resumption", "--cache-size", "1536K", "--udp-recv-buffer", "1000",
		"--cache-min-ttl", "5", "--cache-max-ttl", "600", "--serve-stale", "3600",
		"--no-prefetch", "--block", "/etc/block list", "--block-action", "null",
		"--local-data", "x.home.arpa TXT \"a #b\" \"c\"", "--local-data",
		"y.home.arpa TXT \"it's\"", "--local-data", "z.home.arpa 60 A 192.168.1.1",
		"--hosts", "/etc/my hosts", "--hosts", "/etc/o'hosts", "--hosts", "/etc/hosts",
		"--no-builtin-zone", "home.arpa", "--allow", "192.168.1.0/24", "--allow", "::1",
		"--user", "dotproxy", "--log-queries")),
	    OPTIONS_RUN);
	unlink(path);
	assert_int_equal(cfg.n_warnings, 1); /* pins under opportunistic: said again below */
	text = printed();
	assert_line(text, "listen [::1]:5300");
	assert_line(
	    text, "upstream 1.2.3.4@8853#dns.example^47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
	assert_line(
	    text, "forward-zone corp.example.=10.0.0.1@853#dns.corp.example,udp://[fd00::1]:5353");
	assert_line(text, "cache-size 1536K");
	assert_line(text, "udp-recv-buffer 1000");
	assert_line(text, "local-data 'x.home.arpa TXT \"a #b\" \"c\"'");
	assert_line(text, "local-data y.home.arpa TXT \"it's\"");
	assert_line(text, "hosts '/etc/my hosts'");
	assert_line(text, "hosts \"/etc/o'hosts\"");
	assert_line(text, "block /etc/block list");
	assert_line(text, "block-action null");
	assert_line(text, "allow ::1/128");
	assert_line(text, "no-padding");
	assert_line(text, "verbose"); /* the file's; the command line's -v is not listed */
	assert_null(strstr(text, "verbose\nverbose"));

	write_config(path, sizeof(path), text);
	struct config first = cfg;
	assert_int_equal(parse_args(ARGS("--config", path)), OPTIONS_RUN);
	unlink(path);
	char *again = printed();
	assert_string_equal(again, text);
	assert_int_equal(cfg.n_warnings, first.n_warnings);
	assert_int_equal(cfg.verbosity, 1);
	free(again);
	free(text);

	/* Options made unused by another are listed as comments, so that
	 * reading the listing back does not warn about them. */
	assert_int_equal(parse_args(ARGS("--cache-size", "0")), OPTIONS_RUN);
	text = printed();
	assert_line(text, "cache-size 0");
	assert_line(text, "# cache-min-ttl 0 (unused: cache-size 0)");
	assert_line(text, "# serve-stale 0 (unused: cache-size 0)");
	write_config(path, sizeof(path), text);
	assert_int_equal(parse_args(ARGS("--config", path)), OPTIONS_RUN);
	unlink(path);
	assert_int_equal(cfg.n_warnings, 0);
	free(text);
}

/* A reload keeps what only a restart changes, and names what differed
 * from what runs. */
static void keep_running(void **state)
{
	(void)state;
	static struct config running, next;
	char changed[128];

	assert_int_equal(parse_args(ARGS("--listen", "127.0.0.1:5300", "--listen", "[::1]:5300",
					 "--workers", "2", "--cache-size", "1M")),
			 OPTIONS_RUN);
	running = cfg;

	/* Everything at once, and what is reloaded comes through. */
	assert_int_equal(
	    parse_args(ARGS("--listen", "127.0.0.1:5301", "--workers", "3", "--max-inflight", "10",
			    "--cache-size", "0", "--udp-recv-buffer", "0", "--user", "nobody",
			    "--timeout", "1500")),
	    OPTIONS_RUN);
	next = cfg;
	assert_int_equal(options_keep_running(&next, &running, changed, sizeof(changed)), 6);
	assert_string_equal(changed, "--listen, --workers, --max-inflight, --cache-size, "
				     "--udp-recv-buffer and --user");
	assert_int_equal(next.n_listen, 2);
	assert_string_equal(next.listen[0].text, "127.0.0.1:5300");
	assert_false(next.listen_is_default);
	assert_int_equal(next.workers, 2);
	assert_int_equal(next.max_inflight, running.max_inflight);
	assert_int_equal(next.cache_bytes, 1u << 20);
	assert_int_equal(next.udp_recv_buffer, running.udp_recv_buffer);
	assert_string_equal(next.user, "");
	assert_int_equal(next.timeout_ms, 1500);

	/* Two. */
	assert_int_equal(
	    parse_args(ARGS("--listen", "127.0.0.1:5301", "--workers", "3", "--cache-size", "1M")),
	    OPTIONS_RUN);
	next = cfg;
	assert_int_equal(options_keep_running(&next, &running, changed, sizeof(changed)), 2);
	assert_string_equal(changed, "--listen and --workers");

	/* One; the listen addresses in another order and spelling are the same. */
	assert_int_equal(
	    parse_args(ARGS("--listen", "[0::1]:5300", "--listen", "127.0.0.1:05300", "--workers",
			    "2", "--cache-size", "1024K", "--max-inflight", "5")),
	    OPTIONS_RUN);
	next = cfg;
	assert_int_equal(options_keep_running(&next, &running, changed, sizeof(changed)), 1);
	assert_string_equal(changed, "--max-inflight");

	/* None: a reload back to what runs says nothing. */
	assert_int_equal(
	    parse_args(ARGS("--listen", "127.0.0.1:5300", "--listen", "[::1]:5300", "--workers",
			    "2", "--cache-size", "1M", "--timeout", "900")),
	    OPTIONS_RUN);
	next = cfg;
	assert_int_equal(options_keep_running(&next, &running, changed, sizeof(changed)), 0);
	assert_string_equal(changed, "");

	/* What the reload kept is what the next one compares with. */
	assert_int_equal(parse_args(ARGS("--listen", "127.0.0.1:5301", "--cache-size", "1M")),
			 OPTIONS_RUN);
	next = cfg;
	assert_int_equal(options_keep_running(&next, &running, changed, sizeof(changed)), 2);
	running = next;
	assert_int_equal(parse_args(ARGS("--listen", "127.0.0.1:5300", "--listen", "[::1]:5300",
					 "--workers", "2", "--cache-size", "1M")),
			 OPTIONS_RUN);
	next = cfg;
	assert_int_equal(options_keep_running(&next, &running, changed, sizeof(changed)), 0);

	/* dnstap's socket and identity are read at start only. */
	assert_int_equal(parse_args(ARGS("--listen", "127.0.0.1:5300", "--listen", "[::1]:5300",
					 "--workers", "2", "--cache-size", "1M", "--dnstap",
					 "/run/tap.sock", "--dnstap-identity", "b")),
			 OPTIONS_RUN);
	next = cfg;
	assert_int_equal(options_keep_running(&next, &running, changed, sizeof(changed)), 2);
	assert_string_equal(changed, "--dnstap and --dnstap-identity");
	assert_string_equal(next.dnstap, "");
	assert_string_equal(next.dnstap_identity, "");
}

/* --metrics ADDR:PORT and --control PATH: off by default, checked. */
static void metrics_and_control_options(void **state)
{
	(void)state;
	char path[64];

	assert_int_equal(parse_args(ARGS(NULL)), OPTIONS_RUN);
	assert_int_equal(cfg.metrics.sa_len, 0);
	assert_string_equal(cfg.control, "");
	assert_int_equal(
	    parse_args(ARGS("--metrics", "127.0.0.1:9153", "--control", "/run/dotproxy/control")),
	    OPTIONS_RUN);
	assert_string_equal(cfg.metrics.text, "127.0.0.1:9153");
	assert_true(cfg.metrics.sa_len > 0);
	assert_string_equal(cfg.control, "/run/dotproxy/control");
	assert_int_equal(parse_args(ARGS("--metrics=[::1]:9153")), OPTIONS_RUN);
	assert_string_equal(cfg.metrics.text, "[::1]:9153");

	assert_int_equal(parse_args(ARGS("--metrics", "localhost:9153")), -EINVAL);
	assert_contains(err, "localhost:9153");
	assert_int_equal(parse_args(ARGS("--metrics", "127.0.0.1")), -EINVAL);
	assert_int_equal(parse_args(ARGS("--control", "")), -EINVAL);
	assert_contains(err, "bad --control");
	char long_path[200];
	memset(long_path, 'a', sizeof(long_path) - 1);
	long_path[0] = '/';
	long_path[sizeof(long_path) - 1] = '\0';
	assert_int_equal(parse_args(ARGS("--control", long_path)), -EINVAL);
	assert_contains(err, "1 to 107 bytes");

	write_config(path, sizeof(path), "metrics 127.0.0.1:9100\ncontrol /tmp/ctl\n");
	assert_int_equal(parse_args(ARGS("--config", path)), OPTIONS_RUN);
	assert_string_equal(cfg.metrics.text, "127.0.0.1:9100");
	assert_string_equal(cfg.control, "/tmp/ctl");
	assert_int_equal(parse_args(ARGS("--config", path, "--control", "/tmp/other")),
			 OPTIONS_RUN);
	assert_string_equal(cfg.control, "/tmp/other"); /* the command line wins */
	unlink(path);

	int rc;
	char *text = captured(ARGS("--help"), &rc);
	assert_contains(text, "--metrics ADDR:PORT");
	assert_contains(text, "--control PATH");
	free(text);
}

/* --listen-https, --https-path and --max-clients-per-address. */
static void https_listener_options(void **state)
{
	(void)state;
	assert_int_equal(parse_args(ARGS(NULL)), OPTIONS_RUN);
	assert_int_equal(cfg.n_listen_https, 0);
	assert_string_equal(cfg.https_path, "/dns-query");
	assert_int_equal(cfg.max_clients_per_address, 32);

	assert_int_equal(
	    parse_args(ARGS("--listen-https", "127.0.0.1:443", "--listen-https", "[::1]:8443",
			    "--https-path", "/resolve", "--cert-file", "c.pem", "--key-file",
			    "k.pem", "--max-clients-per-address", "4")),
	    OPTIONS_RUN);
	assert_int_equal(cfg.n_listen_https, 2);
	assert_string_equal(cfg.listen_https[0].text, "127.0.0.1:443");
	assert_int_equal(port_of(&cfg.listen_https[1]), 8443);
	assert_int_equal(cfg.listen_https[1].sa.ss_family, AF_INET6);
	assert_string_equal(cfg.https_path, "/resolve");
	assert_int_equal(cfg.max_clients_per_address, 4);

	/* A certificate is needed, as for --listen-tls. */
	assert_int_equal(parse_args(ARGS("--listen-https", "127.0.0.1:443")), -EINVAL);
	assert_contains(err, "--listen-https needs a certificate");
	assert_int_equal(parse_args(ARGS("--listen-https", "127.0.0.1")), -EINVAL);
	static const char *const bad_paths[] = { "dns-query", "",     "/dns query",
						 "/q?dns=x",  "/q#x", "/caf\xc3\xa9" };
	for (size_t i = 0; i < sizeof(bad_paths) / sizeof(bad_paths[0]); i++) {
		assert_int_equal(parse_args(ARGS("--https-path", bad_paths[i])), -EINVAL);
		assert_contains(err, "bad --https-path");
	}
	char longest[300];
	memset(longest, 'a', sizeof(longest));
	longest[0] = '/';
	longest[255] = 0;
	assert_int_equal(parse_args(ARGS("--https-path", longest)), OPTIONS_RUN);
	longest[255] = 'a';
	longest[256] = 0;
	assert_int_equal(parse_args(ARGS("--https-path", longest)), -EINVAL);
	assert_int_equal(parse_args(ARGS("--max-clients-per-address", "0")), -EINVAL);

	int rc;
	char *text = captured(ARGS("--help"), &rc);
	assert_contains(text, "--listen-https ADDR:PORT");
	assert_contains(text, "--https-path PATH");
	assert_contains(text, "--max-clients-per-address N");
	free(text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(defaults),
		cmocka_unit_test(upstream_forms),
		cmocka_unit_test(upstream_rejects),
		cmocka_unit_test(doh_upstream_forms),
		cmocka_unit_test(doh_upstream_rejects),
		cmocka_unit_test(listen_forms),
		cmocka_unit_test(equals_form),
		cmocka_unit_test(bad_arguments),
		cmocka_unit_test(verbose_bundling),
		cmocka_unit_test(help_and_version),
		cmocka_unit_test(config_file),
		cmocka_unit_test(config_file_auth_name),
		cmocka_unit_test(config_file_errors),
		cmocka_unit_test(example_config),
		cmocka_unit_test(local_data_option),
		cmocka_unit_test(local_data_config_file),
		cmocka_unit_test(hosts_and_builtin_options),
		cmocka_unit_test(listen_duplicates),
		cmocka_unit_test(upstream_duplicates),
		cmocka_unit_test(contradictions),
		cmocka_unit_test(other_notations),
		cmocka_unit_test(named_upstreams),
		cmocka_unit_test(print_settings),
		cmocka_unit_test(keep_running),
		cmocka_unit_test(metrics_and_control_options),
		cmocka_unit_test(https_listener_options),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
