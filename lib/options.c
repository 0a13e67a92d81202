/*
 * Options.  Every option is one row of `table`; the command line and the
 * config file both end in apply(), so the two syntaxes cannot disagree.
 */
#include "lib/options.h"

#include "lib/localdata.h"
#include "lib/version.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum opt_id {
	OPT_CONFIG,
	OPT_LISTEN,
	OPT_LISTEN_TLS,
	OPT_LISTEN_HTTPS,
	OPT_HTTPS_PATH,
	OPT_CERT_FILE,
	OPT_KEY_FILE,
	OPT_UPSTREAM,
	OPT_FORWARD_ZONE,
	OPT_BOOTSTRAP,
	OPT_MAX_UDP_SIZE,
	OPT_CA_FILE,
	OPT_TIMEOUT,
	OPT_TCP_IDLE_TIMEOUT,
	OPT_MAX_INFLIGHT,
	OPT_MAX_TCP_CLIENTS,
	OPT_MAX_CLIENTS_PER_ADDRESS,
	OPT_MAX_TCP_PIPELINE,
	OPT_IDLE_TIMEOUT,
	OPT_BUSY_POLL,
	OPT_WORKERS,
	OPT_MAX_CONNECTIONS,
	OPT_POLICY,
	OPT_PROFILE,
	OPT_NO_PADDING,
	OPT_DOH_METHOD,
	OPT_DOH_KEEPALIVE,
	OPT_NO_SESSION_RESUMPTION,
	OPT_CACHE_SIZE,
	OPT_UDP_RECV_BUFFER,
	OPT_CACHE_MIN_TTL,
	OPT_CACHE_MAX_TTL,
	OPT_SERVE_STALE,
	OPT_NO_PREFETCH,
	OPT_BLOCK,
	OPT_BLOCK_ACTION,
	OPT_LOCAL_DATA,
	OPT_HOSTS,
	OPT_NO_BUILTIN_ZONE,
	OPT_ALLOW,
	OPT_USER,
	OPT_METRICS,
	OPT_CONTROL,
	OPT_LOG_QUERIES,
	OPT_DNSTAP,
	OPT_DNSTAP_IDENTITY,
	OPT_VERBOSE,
	OPT_CHECK_CONFIG,
	OPT_HELP,
	OPT_VERSION,
};

struct option_def {
	enum opt_id id;
	char short_name; /* 0: none */
	bool cli_only;	 /* not allowed in a config file */
	const char *name;
	const char *arg; /* NULL: a flag without a value */
	const char *help;
};

static const struct option_def table[] = {
	{ OPT_CONFIG, 0, true, "config", "FILE",
	  "read options from FILE (same names, no dashes, one per line)" },
	{ OPT_LISTEN, 0, false, "listen", "ADDR:PORT",
	  "listen for plain DNS on UDP and TCP (repeatable; IPv6 as [::1]:53)\n"
	  "default: 127.0.0.1:53 and [::1]:53" },
	{ OPT_LISTEN_TLS, 0, false, "listen-tls", "ADDR:PORT",
	  "serve DNS over TLS (RFC 7858) on this address (repeatable; usually\n"
	  "port 853); needs --cert-file and --key-file" },
	{ OPT_LISTEN_HTTPS, 0, false, "listen-https", "ADDR:PORT",
	  "serve DNS over HTTPS (RFC 8484, HTTP/2) on this address (repeatable;\n"
	  "usually port 443); needs --cert-file and --key-file" },
	{ OPT_HTTPS_PATH, 0, false, "https-path", "PATH",
	  "the path of --listen-https's DNS API (default /dns-query)" },
	{ OPT_CERT_FILE, 0, false, "cert-file", "FILE",
	  "PEM certificate chain (leaf first) served by --listen-tls and\n"
	  "--listen-https; read again on SIGHUP" },
	{ OPT_KEY_FILE, 0, false, "key-file", "FILE",
	  "PEM private key of --cert-file (not encrypted); read again on SIGHUP" },
	{ OPT_UPSTREAM, 0, false, "upstream", "IP[@PORT][#AUTH-NAME][^PIN]...",
	  "forward over TLS to this resolver (repeatable); port 853 by default;\n"
	  "AUTH-NAME is sent as SNI and must match the certificate, without it\n"
	  "the certificate must carry the IP address; each PIN is the base64\n"
	  "SHA-256 of an acceptable SubjectPublicKeyInfo (RFC 7858 SPKI pin);\n"
	  "https://HOST[:PORT][/PATH][#AUTH-NAME][^PIN]... forwards over HTTPS\n"
	  "instead (DoH, RFC 8484, HTTP/2; port 443, path /dns-query; IPv6 as\n"
	  "[2620:fe::fe]), AUTH-NAME also being the HTTP authority;\n"
	  "tls://HOST[:PORT][#AUTH-NAME][^PIN]... is DoT as a URL; a HOST that\n"
	  "is a name is resolved through --bootstrap and is the AUTH-NAME\n"
	  "unless one is given\n"
	  "default: 9.9.9.9@853#dns.quad9.net 1.1.1.1@853#cloudflare-dns.com\n"
	  "         8.8.8.8@853#dns.google https://9.9.9.9/dns-query#dns.quad9.net\n"
	  "         https://1.1.1.1/dns-query#cloudflare-dns.com\n"
	  "         https://8.8.8.8/dns-query#dns.google" },
	{ OPT_FORWARD_ZONE, 0, false, "forward-zone", "ZONE=SPEC[,SPEC...]",
	  "send queries for ZONE and every name below it to these upstreams\n"
	  "(repeatable; the longest matching zone wins; '.' sets the default\n"
	  "upstreams); SPEC is an --upstream spec or udp://IP[:PORT], plain DNS,\n"
	  "allowed only here (e.g. home.arpa=udp://192.168.1.1)" },
	{ OPT_CA_FILE, 0, false, "ca-file", "FILE",
	  "PEM trust anchors for upstream certificates; default: the system store" },
	{ OPT_TIMEOUT, 0, false, "timeout", "MSEC",
	  "answer SERVFAIL when no upstream answered within MSEC (default 4000)" },
	{ OPT_TCP_IDLE_TIMEOUT, 0, false, "tcp-idle-timeout", "MSEC",
	  "close TCP clients idle for MSEC (default 10000)" },
	{ OPT_WORKERS, 0, false, "workers", "N",
	  "threads, each with its own event loop, sockets (SO_REUSEPORT),\n"
	  "upstream connections and share of the cache and --max-inflight\n"
	  "(default 1)" },
	{ OPT_MAX_INFLIGHT, 0, false, "max-inflight", "N",
	  "queries in flight at once; beyond, SERVFAIL (default 8192)" },
	{ OPT_MAX_TCP_CLIENTS, 0, false, "max-tcp-clients", "N",
	  "TCP client connections at once; beyond, closed (default 1000)" },
	{ OPT_MAX_CLIENTS_PER_ADDRESS, 0, false, "max-clients-per-address", "N",
	  "TLS client connections (DoT and DoH) at once from one IP address;\n"
	  "beyond, closed (default 32)" },
	{ OPT_BOOTSTRAP, 0, false, "bootstrap", "IP[:PORT]",
	  "plain DNS server (port 53) asked for the A and AAAA records of the\n"
	  "upstreams given by name, and for nothing else (repeatable); without\n"
	  "it, names are resolved through the upstreams given by address; the\n"
	  "system resolver is never used" },
	{ OPT_MAX_UDP_SIZE, 0, false, "max-udp-size", "BYTES",
	  "largest answer sent to a UDP client, whatever it advertises; longer\n"
	  "ones are truncated (TC=1) (512-65535, default 1232)" },
	{ OPT_MAX_TCP_PIPELINE, 0, false, "max-tcp-pipeline", "N",
	  "queries in flight per TCP client before reading pauses (default 128)" },
	{ OPT_POLICY, 0, false, "policy", "fastest|failover|round-robin",
	  "how to choose an upstream (default fastest: lowest latency, the\n"
	  "others sampled now and then; failover: in the order given)" },
	{ OPT_PROFILE, 0, false, "profile", "strict|opportunistic",
	  "strict (default): use an upstream only if it authenticates;\n"
	  "opportunistic: encrypt even when authentication fails (logged);\n"
	  "neither ever sends a query in cleartext (RFC 8310)" },
	{ OPT_IDLE_TIMEOUT, 0, false, "idle-timeout", "MSEC",
	  "close upstream connections idle for MSEC, or sooner if the server\n"
	  "asks (edns-tcp-keepalive, RFC 7828) (default 10000)" },
	{ OPT_BUSY_POLL, 0, false, "busy-poll", "USEC",
	  "after sending queries to an upstream that answers within a\n"
	  "millisecond, poll for the answer for up to USEC instead of sleeping\n"
	  "(0-1000, default 200; 0: always sleep)" },
	{ OPT_MAX_CONNECTIONS, 0, false, "max-connections", "N",
	  "TLS connections per upstream; another opens when one is busy (default 4)" },
	{ OPT_NO_PADDING, 0, false, "no-padding", NULL,
	  "do not pad queries to 128-byte blocks (RFC 8467 padding is on by default)" },
	{ OPT_DOH_METHOD, 0, false, "doh-method", "post|get",
	  "how DoH upstreams are asked: post (default) sends the query as the\n"
	  "request body, get base64url-encoded in the URL (?dns=)" },
	{ OPT_DOH_KEEPALIVE, 0, false, "doh-keepalive", "MSEC",
	  "keep idle DoH upstream connections open, with an HTTP/2 PING every\n"
	  "MSEC, instead of closing them after --idle-timeout (1000-3600000;\n"
	  "default 0: off)" },
	{ OPT_NO_SESSION_RESUMPTION, 0, false, "no-session-resumption", NULL,
	  "always do a full TLS handshake (session tickets can link connections)" },
	{ OPT_CACHE_SIZE, 0, false, "cache-size", "BYTES",
	  "answer cache budget, with an optional K, M or G suffix; 0 disables\n"
	  "the cache (default 32M)" },
	{ OPT_UDP_RECV_BUFFER, 0, false, "udp-recv-buffer", "BYTES",
	  "receive buffer of each UDP listening socket (SO_RCVBUF, forced past\n"
	  "net.core.rmem_max when run as root), so that bursts wait instead of\n"
	  "being dropped; K, M or G suffix; 0 keeps the system default (default 8M)" },
	{ OPT_CACHE_MIN_TTL, 0, false, "cache-min-ttl", "SECONDS",
	  "cache answers at least this long (default 0)" },
	{ OPT_CACHE_MAX_TTL, 0, false, "cache-max-ttl", "SECONDS",
	  "cache answers at most this long (default 86400)" },
	{ OPT_SERVE_STALE, 0, false, "serve-stale", "SECONDS",
	  "when every upstream fails, answer from entries expired less than\n"
	  "SECONDS ago, with TTL 30 (RFC 8767); 0 disables (default 0)" },
	{ OPT_NO_PREFETCH, 0, false, "no-prefetch", NULL,
	  "do not refresh popular cache entries shortly before they expire" },
	{ OPT_BLOCK, 0, false, "block", "FILE",
	  "answer names listed in FILE (and names below them) locally; one\n"
	  "name per line, or hosts-file lines such as '0.0.0.0 name'" },
	{ OPT_BLOCK_ACTION, 0, false, "block-action", "nxdomain|refused|null",
	  "how blocked names are answered (default nxdomain; null: 0.0.0.0 / ::)" },
	{ OPT_LOCAL_DATA, 0, false, "local-data", "'NAME [TTL] TYPE VALUE'",
	  "answer NAME here (AA=1) with this record, in zone-file syntax: A,\n"
	  "AAAA, CNAME, TXT (quoted: 'n.home.arpa TXT \"a b\"'), PTR, MX or SRV;\n"
	  "TTL 3600 by default; other types of NAME get NODATA; wins over the\n"
	  "built-in zones (repeatable, up to 256 lines of 511 bytes)" },
	{ OPT_HOSTS, 0, false, "hosts", "FILE",
	  "answer the names of hosts(5) FILE here: A or AAAA for every name\n"
	  "and alias, PTR for every address; read again on SIGHUP (repeatable)" },
	{ OPT_NO_BUILTIN_ZONE, 0, false, "no-builtin-zone", "ZONE",
	  "stop answering the built-in zone ZONE here (e.g. home.arpa or\n"
	  "168.192.in-addr.arpa): its queries are forwarded (repeatable)" },
	{ OPT_ALLOW, 0, false, "allow", "CIDR",
	  "answer clients from this prefix (repeatable); others get REFUSED\n"
	  "default: 127.0.0.0/8 and ::1 only (an open resolver is an attack tool)" },
	{ OPT_USER, 0, false, "user", "NAME",
	  "after binding, drop root privileges for this user (and its group)" },
	{ OPT_METRICS, 0, false, "metrics", "ADDR:PORT",
	  "serve Prometheus metrics at http://ADDR:PORT/metrics (to clients\n"
	  "in --allow; e.g. 127.0.0.1:9153); default: none" },
	{ OPT_CONTROL, 0, false, "control", "PATH",
	  "unix socket for dotproxyctl (mode 0600; root and dotproxy's own\n"
	  "user only): stats, upstreams, flush [NAME], reload; default: none" },
	{ OPT_LOG_QUERIES, 0, false, "log-queries", NULL,
	  "log one line per query: client, name, type, rcode, upstream, time" },
	{ OPT_DNSTAP, 0, false, "dnstap", "PATH",
	  "stream every query and answer as dnstap to the Frame Streams unix\n"
	  "socket PATH (e.g. fstrm_capture -t protobuf:dnstap.Dnstap -u PATH);\n"
	  "never waits for it: while it is away, events are dropped and counted" },
	{ OPT_DNSTAP_IDENTITY, 0, false, "dnstap-identity", "NAME",
	  "the identity dnstap messages carry (default: the host name)" },
	{ OPT_VERBOSE, 'v', false, "verbose", NULL, "log more (repeatable: -v info, -vv debug)" },
	{ OPT_CHECK_CONFIG, 0, true, "check-config", NULL, "validate the configuration and exit" },
	{ OPT_HELP, 'h', true, "help", NULL, "show this help and exit" },
	{ OPT_VERSION, 'V', true, "version", NULL, "show the version and exit" },
};

enum source { SRC_DEFAULT, SRC_FILE, SRC_CLI };

struct parse_state {
	struct config *cfg;
	FILE *out;
	enum source source;
	enum source listen_from; /* where the current listen list came from */
	enum source listen_tls_from;
	enum source listen_https_from;
	enum source upstream_from; /* where the current upstream list came from */
	enum source allow_from;	   /* where the current allow list came from */
	enum source zones_from;	   /* where the current forward zones came from */
	enum source bootstrap_from;
	enum source local_data_from;
	enum source hosts_from;
	enum source no_builtin_from;
	bool exit_now;
	char *err;
	size_t errlen;
	const char *file; /* the config file being read, NULL: the command line */
	unsigned line;	  /* and its line */
	/* Where each option was last set, for messages about two of them. */
	struct {
		bool given;
		const char *file; /* NULL: the command line */
		unsigned line;
	} set[OPT_VERSION + 1];
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

static int parse_port(const char *text, uint16_t *port)
{
	char *end;

	if (!isdigit((unsigned char)text[0]))
		return -EINVAL;
	errno = 0;
	unsigned long v = strtoul(text, &end, 10);
	if (errno || *end || v == 0 || v > 65535)
		return -EINVAL;
	*port = (uint16_t)v;
	return 0;
}

/* Fill @addr from an IP literal and a port; false if @ip is not an address. */
static bool make_addr(const char *ip, uint16_t port, struct options_addr *addr)
{
	memset(addr, 0, sizeof(*addr));
	struct sockaddr_in *v4 = (struct sockaddr_in *)&addr->sa;
	struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&addr->sa;
	if (inet_pton(AF_INET, ip, &v4->sin_addr) == 1) {
		v4->sin_family = AF_INET;
		v4->sin_port = htons(port);
		addr->sa_len = sizeof(*v4);
		snprintf(addr->text, sizeof(addr->text), "%s:%u", ip, port);
		return true;
	}
	if (inet_pton(AF_INET6, ip, &v6->sin6_addr) == 1) {
		v6->sin6_family = AF_INET6;
		v6->sin6_port = htons(port);
		addr->sa_len = sizeof(*v6);
		snprintf(addr->text, sizeof(addr->text), "[%s]:%u", ip, port);
		return true;
	}
	return false;
}

static bool valid_hostname(const char *name)
{
	size_t label = 0, len = strlen(name);

	if (len == 0 || len > OPTIONS_MAX_AUTH_NAME)
		return false;
	for (const char *p = name; *p; p++) {
		if (*p == '.') {
			if (label == 0)
				return false;
			label = 0;
		} else if (isalnum((unsigned char)*p) || *p == '-' || *p == '_') {
			if (++label > 63)
				return false;
		} else {
			return false;
		}
	}
	return true;
}

/* The address bytes of @a (4 or 16 of them, by family). */
static const uint8_t *addr_bytes(const struct options_addr *a, size_t *len)
{
	if (a->sa.ss_family == AF_INET6) {
		*len = 16;
		return ((const struct sockaddr_in6 *)&a->sa)->sin6_addr.s6_addr;
	}
	*len = 4;
	return (const uint8_t *)&((const struct sockaddr_in *)&a->sa)->sin_addr;
}

static uint16_t addr_port(const struct options_addr *a)
{
	return ntohs(a->sa.ss_family == AF_INET6 ? ((const struct sockaddr_in6 *)&a->sa)->sin6_port
						 : ((const struct sockaddr_in *)&a->sa)->sin_port);
}

/* Same family, address and port, however each was written ("::1" and
 * "0::1", "53" and "0053"). */
static bool same_addr(const struct options_addr *a, const struct options_addr *b)
{
	size_t la, lb;
	const uint8_t *ba = addr_bytes(a, &la), *bb = addr_bytes(b, &lb);

	return a->sa.ss_family == b->sa.ss_family && addr_port(a) == addr_port(b) && la == lb &&
	       memcmp(ba, bb, la) == 0;
}

/* 0.0.0.0 or :: */
static bool is_wildcard(const struct options_addr *a)
{
	size_t len;
	const uint8_t *b = addr_bytes(a, &len);

	for (size_t i = 0; i < len; i++)
		if (b[i])
			return false;
	return true;
}

/* The same server reached the same way: transport, address, port and auth
 * name (case-insensitive); pins do not make it another one. */
static bool same_upstream(const struct options_upstream *a, const struct options_upstream *b)
{
	if (a->transport != b->transport || strcasecmp(a->auth_name, b->auth_name) != 0)
		return false;
	if (a->hostname[0] || b->hostname[0])
		return strcmp(a->hostname, b->hostname) == 0 && a->port == b->port;
	return same_addr(&a->addr, &b->addr);
}

/* Decode standard base64 (with '=' padding) into exactly @len bytes. */
static bool base64_decode_exact(const char *text, size_t text_len, uint8_t *out, size_t len)
{
	static const char alphabet[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	uint32_t acc = 0;
	size_t bits = 0, n = 0, i;

	for (i = 0; i < text_len && text[i] != '='; i++) {
		const char *p = strchr(alphabet, text[i]);
		if (!p || !text[i])
			return false;
		acc = acc << 6 | (uint32_t)(p - alphabet);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (n == len)
				return false;
			out[n++] = (uint8_t)(acc >> bits);
		}
	}
	for (; i < text_len; i++)
		if (text[i] != '=')
			return false;
	return n == len && text_len % 4 == 0;
}

/* The ^PIN^PIN... tail of an upstream spec. */
static int parse_pins(const char *spec, const char *pins, struct options_upstream *up, char *err,
		      size_t errlen)
{
	while (*pins == '^') {
		const char *start = pins + 1, *end = strchr(start, '^');
		size_t len = end ? (size_t)(end - start) : strlen(start);
		if (up->n_pins == OPTIONS_MAX_PINS)
			return fail(err, errlen, "bad upstream '%s': at most %d pins", spec,
				    OPTIONS_MAX_PINS);
		if (!base64_decode_exact(start, len, up->pins[up->n_pins], OPTIONS_PIN_LEN))
			return fail(err, errlen,
				    "bad upstream '%s': pin '%.*s' is not the base64 of a SHA-256 "
				    "digest (44 characters)",
				    spec, (int)len, start);
		up->n_pins++;
		pins = start + len;
	}
	return 0;
}

/* udp://IP[:PORT], [IPv6] bracketed when a port follows. */
static int parse_plain_upstream(const char *spec, struct options_upstream *up, char *err,
				size_t errlen)
{
	const char *rest = spec + strlen("udp://");
	char addr[INET6_ADDRSTRLEN + 16];
	const char *colon = strrchr(rest, ':');
	bool bracketed = rest[0] == '[';
	bool has_port =
	    colon && (bracketed ? colon > strchr(rest, ']') : strchr(rest, ':') == colon);

	memset(up, 0, sizeof(*up));
	if (strlen(rest) + 8 >= sizeof(addr))
		return fail(err, errlen, "bad upstream '%s': too long", spec);
	if (has_port)
		snprintf(addr, sizeof(addr), "%s", rest);
	else if (strchr(rest, ':') && !bracketed)
		snprintf(addr, sizeof(addr), "[%s]:%u", rest, (unsigned)OPTIONS_DEFAULT_PORT_PLAIN);
	else
		snprintf(addr, sizeof(addr), "%s:%u", rest, (unsigned)OPTIONS_DEFAULT_PORT_PLAIN);
	if (options_parse_listen(addr, &up->addr, err, errlen) < 0)
		return fail(err, errlen,
			    "bad upstream '%s': expected udp://IP[:PORT] (IPv6 as udp://[::1]:53)",
			    spec);
	up->transport = OPTIONS_TRANSPORT_PLAIN;
	up->port = ntohs(up->addr.sa.ss_family == AF_INET6
			     ? ((struct sockaddr_in6 *)&up->addr.sa)->sin6_port
			     : ((struct sockaddr_in *)&up->addr.sa)->sin_port);
	if (up->addr.sa.ss_family == AF_INET6)
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&up->addr.sa)->sin6_addr, up->ip,
			  sizeof(up->ip));
	else
		inet_ntop(AF_INET, &((struct sockaddr_in *)&up->addr.sa)->sin_addr, up->ip,
			  sizeof(up->ip));
	snprintf(up->label, sizeof(up->label), "udp://%s", up->addr.text);
	return 0;
}

/* Is @text a port number, 1-65535? */
static bool is_port(const char *text, size_t len)
{
	char buf[8];
	uint16_t port;

	if (len == 0 || len >= sizeof(buf))
		return false;
	memcpy(buf, text, len);
	buf[len] = '\0';
	return parse_port(buf, &port) == 0;
}

/*
 * The IP part of an upstream spec, @ip, written as elsewhere: 9.9.9.9:853
 * (dnsdist, stubby), [2620:fe::fe]:853 or [2620:fe::fe].  If so, write into
 * @fix the same in our notation, followed by @rest (the spec after @ip), and
 * return true.
 */
static bool suggest_upstream(const char *ip, const char *rest, char *fix, size_t cap)
{
	char addr[INET6_ADDRSTRLEN + 1];
	uint8_t bytes[16];
	const char *port = NULL;
	size_t addr_len, port_len = 0;

	if (ip[0] == '[') {
		const char *close = strchr(ip, ']');
		if (!close)
			return false;
		addr_len = (size_t)(close - ip - 1);
		if (close[1] == ':') {
			port = close + 2;
			port_len = strlen(port);
		} else if (close[1]) {
			return false;
		}
		ip++;
	} else {
		const char *colon = strchr(ip, ':');
		if (!colon || strchr(colon + 1, ':'))
			return false;
		addr_len = (size_t)(colon - ip);
		port = colon + 1;
		port_len = strlen(port);
	}
	if (addr_len == 0 || addr_len >= sizeof(addr) || (port && !is_port(port, port_len)))
		return false;
	memcpy(addr, ip, addr_len);
	addr[addr_len] = '\0';
	if (inet_pton(AF_INET, addr, bytes) != 1 && inet_pton(AF_INET6, addr, bytes) != 1)
		return false;
	snprintf(fix, cap, "%s%s%.*s%s", addr, port ? "@" : "", (int)port_len, port ? port : "",
		 rest);
	return true;
}

/* A URL path (and query) as RFC 3986 allows it: pchar, '/' and '?', with
 * percent-encodings complete; nothing that needs quoting in HTTP/2. */
static bool valid_url_path(const char *path)
{
	if (path[0] != '/')
		return false;
	for (const char *p = path; *p; p++) {
		if (isalnum((unsigned char)*p) || strchr("-._~!$&'()*+,;=:@/?", *p))
			continue;
		if (*p == '%' && isxdigit((unsigned char)p[1]) && isxdigit((unsigned char)p[2])) {
			p += 2;
			continue;
		}
		return false;
	}
	return true;
}

/* https://HOST[:PORT][/PATH][#AUTH-NAME] (DoH) or tls://HOST[:PORT][#AUTH-NAME]
 * (DoT), the pins already cut off.  HOST is an IP literal (IPv6 in brackets)
 * or a name, to be resolved through --bootstrap. */
static int parse_url_upstream(const char *spec, bool doh, struct options_upstream *up, char *err,
			      size_t errlen)
{
	const char *form = doh ? "expected https://HOST[:PORT][/PATH][#AUTH-NAME], IPv6 as "
				 "https://[2620:fe::fe]/dns-query"
			       : "expected tls://HOST[:PORT][#AUTH-NAME], IPv6 as "
				 "tls://[2620:fe::fe]:853";
	const char *host = spec + strlen(doh ? "https://" : "tls://"), *host_end, *rest;
	char name[OPTIONS_MAX_AUTH_NAME + 2];
	const char *hash = strchr(host, '#');
	size_t host_len;

	if (host[0] == '[') {
		host++;
		host_end = strchr(host, ']');
		if (!host_end || (hash && host_end > hash))
			return fail(err, errlen, "bad upstream '%s': %s", spec, form);
		rest = host_end + 1;
	} else {
		host_end = host + strcspn(host, ":/#");
		rest = host_end;
	}
	host_len = (size_t)(host_end - host);
	if (host_len == 0 || host_len >= sizeof(name))
		return fail(err, errlen, "bad upstream '%s': %s", spec, form);
	memcpy(name, host, host_len);
	name[host_len] = '\0';
	up->port = doh ? OPTIONS_DEFAULT_PORT_DOH : OPTIONS_DEFAULT_PORT_DOT;
	if (*rest == ':') {
		char port[8];
		size_t port_len = strcspn(rest + 1, "/#");
		if (port_len == 0 || port_len >= sizeof(port))
			return fail(err, errlen, "bad upstream '%s': bad port", spec);
		memcpy(port, rest + 1, port_len);
		port[port_len] = '\0';
		if (parse_port(port, &up->port))
			return fail(err, errlen, "bad upstream '%s': port '%s' is not 1-65535",
				    spec, port);
		rest += 1 + port_len;
	}
	if (doh)
		snprintf(up->path, sizeof(up->path), "/dns-query");
	if (doh && *rest == '/') {
		size_t path_len = strcspn(rest, "#");
		if (path_len >= sizeof(up->path))
			return fail(err, errlen, "bad upstream '%s': path longer than %d bytes",
				    spec, OPTIONS_MAX_DOH_PATH - 1);
		memcpy(up->path, rest, path_len);
		up->path[path_len] = '\0';
		if (!valid_url_path(up->path))
			return fail(err, errlen,
				    "bad upstream '%s': '%s' is not a URL path (percent-encode "
				    "other characters)",
				    spec, up->path);
		rest += path_len;
	}
	if (*rest == '#') {
		if (!valid_hostname(rest + 1))
			return fail(err, errlen, "bad upstream '%s': '%s' is not a host name", spec,
				    rest + 1);
		snprintf(up->auth_name, sizeof(up->auth_name), "%s", rest + 1);
	} else if (*rest) {
		return fail(err, errlen, "bad upstream '%s': %s", spec, form);
	}
	up->transport = doh ? OPTIONS_TRANSPORT_DOH : OPTIONS_TRANSPORT_DOT;
	if (!make_addr(name, up->port, &up->addr) ||
	    (host[-1] == '[') != (up->addr.sa.ss_family == AF_INET6)) {
		if (host[-1] == '[' || !valid_hostname(name) || strchr(name, ':') ||
		    strspn(name, "0123456789.") == host_len)
			return fail(err, errlen, "bad upstream '%s': '%s' is not an IP address",
				    spec, name);
		/* A name: resolved later (--bootstrap), authenticated as itself. */
		memset(&up->addr, 0, sizeof(up->addr));
		for (size_t i = 0; i < host_len; i++)
			name[i] = (char)tolower((unsigned char)name[i]);
		if (name[host_len - 1] == '.')
			name[host_len - 1] = '\0';
		/* valid_hostname(): at most OPTIONS_MAX_AUTH_NAME bytes, so it fits */
		memcpy(up->hostname, name, strlen(name) + 1);
		if (!up->auth_name[0])
			memcpy(up->auth_name, name, strlen(name) + 1);
		bool other = strcasecmp(up->auth_name, up->hostname) != 0;
		snprintf(up->label, sizeof(up->label), "%s://%s:%u%s%s%s", doh ? "https" : "tls",
			 up->hostname, up->port, up->path, other ? "#" : "",
			 other ? up->auth_name : "");
		return 0;
	}
	memcpy(up->ip, name, host_len + 1); /* inet_pton accepted it: it fits */
	bool v6 = up->addr.sa.ss_family == AF_INET6;
	if (doh)
		snprintf(up->label, sizeof(up->label), "https://%s%s%s:%u%s%s%s", v6 ? "[" : "",
			 up->ip, v6 ? "]" : "", up->port, up->path, up->auth_name[0] ? "#" : "",
			 up->auth_name);
	else /* the same upstream as IP@PORT#NAME: the same label and identity */
		snprintf(up->label, sizeof(up->label), "%s@%u%s%s", up->ip, up->port,
			 up->auth_name[0] ? "#" : "", up->auth_name);
	return 0;
}

int options_parse_upstream(const char *full_spec, struct options_upstream *up, char *err,
			   size_t errlen)
{
	char ip[INET6_ADDRSTRLEN + 1];
	char spec[sizeof(up->label)];
	size_t spec_len = strcspn(full_spec, "^");
	size_t ip_len;
	int rc;

	if (strncmp(full_spec, "udp://", 6) == 0)
		return parse_plain_upstream(full_spec, up, err, errlen);
	memset(up, 0, sizeof(*up));
	if (spec_len >= sizeof(spec))
		return fail(err, errlen, "bad upstream '%s': too long", full_spec);
	memcpy(spec, full_spec, spec_len);
	spec[spec_len] = '\0';
	rc = parse_pins(full_spec, full_spec + spec_len, up, err, errlen);
	if (rc)
		return rc;
	if (strncmp(spec, "https://", 8) == 0)
		return parse_url_upstream(spec, true, up, err, errlen);
	if (strncmp(spec, "tls://", 6) == 0)
		return parse_url_upstream(spec, false, up, err, errlen);
	const char *hash = strchr(spec, '#');
	const char *at = strchr(spec, '@');
	if (at && hash && at > hash)
		at = NULL; /* an '@' inside the auth name is not a port */
	ip_len = (size_t)((at ? at : hash ? hash : spec + strlen(spec)) - spec);
	if (ip_len == 0 || ip_len >= sizeof(ip))
		return fail(err, errlen, "bad upstream '%s': expected IP[@PORT][#AUTH-NAME]", spec);
	memcpy(ip, spec, ip_len);
	ip[ip_len] = '\0';
	up->port = OPTIONS_DEFAULT_PORT_DOT;
	if (at) {
		char port[8];
		size_t port_len = (size_t)((hash ? hash : at + strlen(at)) - (at + 1));
		if (port_len == 0 || port_len >= sizeof(port))
			return fail(err, errlen, "bad upstream '%s': bad port", spec);
		memcpy(port, at + 1, port_len);
		port[port_len] = '\0';
		if (parse_port(port, &up->port))
			return fail(err, errlen, "bad upstream '%s': port '%s' is not 1-65535",
				    spec, port);
	}
	if (hash) {
		if (!valid_hostname(hash + 1))
			return fail(err, errlen, "bad upstream '%s': '%s' is not a host name", spec,
				    hash + 1);
		snprintf(up->auth_name, sizeof(up->auth_name), "%s", hash + 1);
	}
	if (!make_addr(ip, up->port, &up->addr)) {
		char fix[1024];
		if (suggest_upstream(ip, full_spec + ip_len, fix, sizeof(fix)))
			return fail(err, errlen, "bad upstream '%s': %s: write %s", full_spec,
				    ip[0] == '[' ? "an IPv6 upstream is written without brackets, "
						   "the port after '@'"
						 : "the port follows '@', as in unbound",
				    fix);
		return fail(err, errlen,
			    "bad upstream '%s': '%s' is not an IP address (an upstream given by "
			    "name is written tls://%s, with --bootstrap)",
			    spec, ip, ip);
	}
	memcpy(up->ip, ip, ip_len + 1); /* inet_pton accepted it: it fits */
	snprintf(up->label, sizeof(up->label), "%s@%u%s%s", ip, up->port,
		 up->auth_name[0] ? "#" : "", up->auth_name);
	return 0;
}

int options_parse_listen(const char *spec, struct options_addr *addr, char *err, size_t errlen)
{
	char ip[INET6_ADDRSTRLEN + 1];
	const char *colon, *ip_start = spec;
	size_t ip_len;
	uint16_t port;

	if (spec[0] == '[') {
		const char *close = strchr(spec, ']');
		if (!close || close[1] != ':')
			return fail(err, errlen, "bad listen address '%s': expected [IPv6]:PORT",
				    spec);
		ip_start = spec + 1;
		ip_len = (size_t)(close - ip_start);
		colon = close + 1;
	} else {
		colon = strrchr(spec, ':');
		const char *at = strchr(spec, '@');
		if (at && at - spec < (ptrdiff_t)sizeof(ip) && is_port(at + 1, strlen(at + 1))) {
			/* IP@PORT, an upstream's notation. */
			struct options_addr probe;
			memcpy(ip, spec, (size_t)(at - spec));
			ip[at - spec] = '\0';
			if (make_addr(ip, 53, &probe))
				return fail(err, errlen,
					    "bad listen address '%s': the port follows ':' here: "
					    "write %s%s%s:%s",
					    spec, probe.sa.ss_family == AF_INET6 ? "[" : "", ip,
					    probe.sa.ss_family == AF_INET6 ? "]" : "", at + 1);
		}
		if (!colon || strchr(spec, ':') != colon)
			return fail(err, errlen,
				    "bad listen address '%s': expected ADDR:PORT or [IPv6]:PORT",
				    spec);
		ip_len = (size_t)(colon - spec);
	}
	if (ip_len == 0 || ip_len >= sizeof(ip))
		return fail(err, errlen, "bad listen address '%s'", spec);
	memcpy(ip, ip_start, ip_len);
	ip[ip_len] = '\0';
	if (parse_port(colon + 1, &port))
		return fail(err, errlen, "bad listen address '%s': port '%s' is not 1-65535", spec,
			    colon + 1);
	if (!make_addr(ip, port, addr) || (spec[0] == '[') != (addr->sa.ss_family == AF_INET6))
		return fail(err, errlen, "bad listen address '%s': '%s' is not an IP address", spec,
			    ip);
	return 0;
}

static int parse_uint(const char *name, const char *value, unsigned lo, unsigned hi, unsigned *out,
		      char *err, size_t errlen)
{
	char *end;

	if (!isdigit((unsigned char)value[0]))
		return fail(err, errlen, "bad --%s '%s': expected a number", name, value);
	errno = 0;
	unsigned long v = strtoul(value, &end, 10);
	if (errno || *end || v < lo || v > hi)
		return fail(err, errlen, "bad --%s '%s': expected a number from %u to %u", name,
			    value, lo, hi);
	*out = (unsigned)v;
	return 0;
}

/* A byte count with an optional K, M or G suffix (powers of 1024). */
static int parse_size(const char *name, const char *value, size_t *out, char *err, size_t errlen)
{
	char *end;

	if (!isdigit((unsigned char)value[0]))
		return fail(err, errlen, "bad --%s '%s': expected a size such as 64M", name, value);
	errno = 0;
	unsigned long long v = strtoull(value, &end, 10);
	unsigned shift = 0;
	if (*end == 'K' || *end == 'k')
		shift = 10;
	else if (*end == 'M' || *end == 'm')
		shift = 20;
	else if (*end == 'G' || *end == 'g')
		shift = 30;
	if (shift)
		end++;
	if (errno || *end || v > (1ULL << 40) >> shift)
		return fail(err, errlen, "bad --%s '%s': expected a size such as 64M (at most 1T)",
			    name, value);
	*out = (size_t)(v << shift);
	return 0;
}

static void set_defaults(struct config *cfg)
{
	static const char *const listens[] = { "127.0.0.1:53", "[::1]:53" };
	/* Each provider over DoT and over DoH: on a network that blocks port
	 * 853 the DoT ones go down at the first failed connect and the DoH ones
	 * carry on (one detection, not an outage). */
	static const char *const upstreams[] = {
		"9.9.9.9@853#dns.quad9.net",
		"1.1.1.1@853#cloudflare-dns.com",
		"8.8.8.8@853#dns.google",
		"https://9.9.9.9/dns-query#dns.quad9.net",
		"https://1.1.1.1/dns-query#cloudflare-dns.com",
		"https://8.8.8.8/dns-query#dns.google",
	};
	char err[16];

	memset(cfg, 0, sizeof(*cfg));
	for (size_t i = 0; i < sizeof(listens) / sizeof(listens[0]); i++)
		if (options_parse_listen(listens[i], &cfg->listen[cfg->n_listen], err,
					 sizeof(err)) == 0)
			cfg->n_listen++;
	cfg->listen_is_default = true;
	for (size_t i = 0; i < sizeof(upstreams) / sizeof(upstreams[0]); i++)
		if (options_parse_upstream(upstreams[i], &cfg->upstream[cfg->n_upstream], err,
					   sizeof(err)) == 0)
			cfg->n_upstream++;
	cfg->timeout_ms = 4000;
	cfg->tcp_idle_timeout_ms = 10000;
	cfg->max_inflight = 8192;
	cfg->max_tcp_clients = 1000;
	cfg->max_clients_per_address = 32;
	snprintf(cfg->https_path, sizeof(cfg->https_path), "/dns-query");
	cfg->max_tcp_pipeline = 128;
	cfg->idle_timeout_ms = 10000;
	cfg->max_connections = 4;
	cfg->busy_poll_us = 200;
	cfg->workers = 1;
	cfg->policy = OPTIONS_POLICY_FASTEST;
	cfg->profile = OPTIONS_PROFILE_STRICT;
	cfg->padding = true;
	cfg->session_resumption = true;
	cfg->cache_bytes = 32u << 20;
	cfg->udp_recv_buffer = 8u << 20;
	cfg->max_udp_size = 1232;
	cfg->cache_max_ttl = 86400;
	cfg->prefetch = true;
	acl_default(&cfg->allow);
}

static void print_help(FILE *out)
{
	fprintf(out, "Usage: dotproxy [--config FILE] [options]\n"
		     "Forward plain DNS (UDP and TCP) to resolvers over DNS-over-TLS or\n"
		     "DNS-over-HTTPS.\n\n");
	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
		const struct option_def *o = &table[i];
		char head[64];
		if (o->short_name)
			snprintf(head, sizeof(head), "-%c, --%s%s%s", o->short_name, o->name,
				 o->arg ? " " : "", o->arg ? o->arg : "");
		else
			snprintf(head, sizeof(head), "    --%s%s%s", o->name, o->arg ? " " : "",
				 o->arg ? o->arg : "");
		fprintf(out, "  %-34s ", head);
		for (const char *p = o->help; *p; p++) {
			fputc(*p, out);
			if (*p == '\n')
				fprintf(out, "  %-34s ", "");
		}
		fputc('\n', out);
	}
	fprintf(out, "\nExit status: 0 after SIGTERM/SIGINT, 1 if start-up fails, 2 for a bad "
		     "argument.\nSee dotproxy(8).\n");
}

static int read_file(struct parse_state *st, const char *path);

/* Is @list[@n] (just parsed from @value) already among @list[0..@n)?  A
 * server listed twice gets twice the connections and counts twice in every
 * policy (failover's order, round-robin's turns): almost always a typo for
 * another server.  0, or -EINVAL naming both. */
static int check_duplicate_upstream(struct parse_state *st, const struct options_upstream *list,
				    unsigned n, const char *what, const char *value)
{
	for (unsigned i = 0; i < n; i++) {
		if (!same_upstream(&list[i], &list[n]))
			continue;
		bool plain = list[n].transport == OPTIONS_TRANSPORT_PLAIN;
		bool pins = list[i].n_pins || list[n].n_pins;
		return fail(st->err, st->errlen,
			    "%s %s: the same upstream as %s, given before (same address, port%s): "
			    "give each upstream once%s",
			    what, value, list[i].label, plain ? "" : " and auth name",
			    pins ? ", with all its pins" : "");
	}
	return 0;
}

/* ZONE as given, into the canonical absolute lower-case form ("home.arpa."). */
static int zone_name(const char *text, size_t len, char *out, size_t cap)
{
	char name[OPTIONS_MAX_AUTH_NAME + 2];

	if (len == 1 && text[0] == '.') {
		snprintf(out, cap, ".");
		return 0;
	}
	if (len && text[len - 1] == '.')
		len--;
	if (len == 0 || len > OPTIONS_MAX_AUTH_NAME)
		return -EINVAL;
	for (size_t i = 0; i < len; i++)
		name[i] = (char)tolower((unsigned char)text[i]);
	name[len] = '\0';
	if (!valid_hostname(name) || len + 2 > cap)
		return -EINVAL;
	memcpy(out, name, len);
	out[len] = '.';
	out[len + 1] = '\0';
	return 0;
}

/* --forward-zone ZONE=SPEC[,SPEC...].  Zones from a stronger source (the
 * command line) replace the weaker's list, as --upstream does; '.' sets the
 * default upstreams. */
static int parse_forward_zone(struct parse_state *st, const char *value)
{
	struct config *cfg = st->cfg;
	const char *eq = strchr(value, '=');
	char name[OPTIONS_MAX_AUTH_NAME + 2];

	if (!eq || zone_name(value, (size_t)(eq - value), name, sizeof(name)) < 0)
		return fail(st->err, st->errlen,
			    "bad --forward-zone '%s': expected ZONE=SPEC[,SPEC...], ZONE a domain "
			    "name such as home.arpa or '.'",
			    value);
	if (!eq[1])
		return fail(st->err, st->errlen, "bad --forward-zone '%s': no upstream after '='",
			    value);
	if (st->zones_from != st->source) {
		cfg->n_zones = 0;
		st->zones_from = st->source;
	}
	bool is_default = strcmp(name, ".") == 0;
	struct options_zone *zone = NULL;
	for (unsigned i = 0; i < cfg->n_zones && !is_default; i++)
		if (strcmp(cfg->zones[i].name, name) == 0)
			return fail(st->err, st->errlen,
				    "--forward-zone %s: zone %s is given twice (list all its "
				    "upstreams in one, separated by commas)",
				    value, name);
	if (!is_default) {
		if (cfg->n_zones == OPTIONS_MAX_ZONES)
			return fail(st->err, st->errlen, "too many --forward-zone (at most %d)",
				    OPTIONS_MAX_ZONES);
		zone = &cfg->zones[cfg->n_zones];
		memset(zone, 0, sizeof(*zone));
		snprintf(zone->name, sizeof(zone->name), "%s", name);
	}
	struct options_upstream *list = is_default ? cfg->upstream : zone->upstream;
	unsigned *n = is_default ? &cfg->n_upstream : &zone->n_upstream;
	unsigned max = is_default ? OPTIONS_MAX_UPSTREAMS : OPTIONS_MAX_ZONE_UPSTREAMS;
	*n = 0;
	for (const char *spec = eq + 1; spec;) {
		const char *comma = strchr(spec, ',');
		size_t len = comma ? (size_t)(comma - spec) : strlen(spec);
		char one[1024];
		if (len == 0 || len >= sizeof(one))
			return fail(st->err, st->errlen,
				    "bad --forward-zone '%s': empty or overlong "
				    "upstream spec",
				    value);
		if (*n == max)
			return fail(st->err, st->errlen,
				    "--forward-zone %s: at most %u upstreams per zone", value, max);
		memcpy(one, spec, len);
		one[len] = '\0';
		if (options_parse_upstream(one, &list[*n], st->err, st->errlen))
			return -EINVAL;
		if (is_default && list[*n].transport == OPTIONS_TRANSPORT_PLAIN)
			return fail(
			    st->err, st->errlen,
			    "--forward-zone %s: plain DNS for '.' would send every query in "
			    "cleartext; name the zones that may go that way",
			    value);
		if (check_duplicate_upstream(st, list, *n, "--forward-zone", value) < 0)
			return -EINVAL;
		(*n)++;
		spec = comma ? comma + 1 : NULL;
	}
	if (is_default)
		st->upstream_from = st->source;
	else
		cfg->n_zones++;
	return 0;
}

/* Room for one more item of a list option --@name holding *@n of @max: a
 * list from a stronger source (*@from) replaces the weaker's, as for
 * --upstream.  0, or -EINVAL when full. */
static int list_room(struct parse_state *st, enum source *from, unsigned *n, unsigned max,
		     const char *name)
{
	if (*from != st->source) {
		*n = 0;
		*from = st->source;
	}
	if (*n == max)
		return fail(st->err, st->errlen, "too many --%s (at most %u)", name, max);
	return 0;
}

/* --local-data: checked now, so that a bad line fails --check-config and
 * start-up naming it; stored as given. */
static int parse_local_data(struct parse_state *st, const char *value)
{
	struct config *cfg = st->cfg;
	char why[256];

	if (list_room(st, &st->local_data_from, &cfg->n_local_data, OPTIONS_MAX_LOCAL_DATA,
		      "local-data"))
		return -EINVAL;
	if (strlen(value) >= OPTIONS_LOCAL_DATA_LEN)
		return fail(st->err, st->errlen,
			    "bad --local-data '%.40s...': longer than %d bytes", value,
			    OPTIONS_LOCAL_DATA_LEN - 1);
	if (localdata_check_line(value, why, sizeof(why)))
		return fail(st->err, st->errlen, "bad --local-data '%s': %s", value, why);
	snprintf(cfg->local_data[cfg->n_local_data++], sizeof(cfg->local_data[0]), "%s", value);
	return 0;
}

/* --no-builtin-zone ZONE, canonical; a repeated zone is kept once. */
static int parse_no_builtin(struct parse_state *st, const char *value)
{
	struct config *cfg = st->cfg;
	char name[OPTIONS_MAX_AUTH_NAME + 2];

	if (list_room(st, &st->no_builtin_from, &cfg->n_no_builtin, OPTIONS_MAX_NO_BUILTIN,
		      "no-builtin-zone"))
		return -EINVAL;
	if (zone_name(value, strlen(value), name, sizeof(name)) < 0 || strcmp(name, ".") == 0)
		return fail(st->err, st->errlen,
			    "bad --no-builtin-zone '%s': expected a zone name such as home.arpa",
			    value);
	for (unsigned i = 0; i < cfg->n_no_builtin; i++)
		if (strcmp(cfg->no_builtin[i], name) == 0)
			return 0;
	snprintf(cfg->no_builtin[cfg->n_no_builtin++], sizeof(cfg->no_builtin[0]), "%s", name);
	return 0;
}

/* --listen: one more address of the list, which must not bind what another
 * of the list binds already (start-up would fail against itself). */
static int parse_listen_option(struct parse_state *st, const char *value)
{
	struct config *cfg = st->cfg;
	struct options_addr addr = { .sa_len = 0 };

	if (st->listen_from != st->source) {
		cfg->n_listen = 0; /* a list from a stronger source replaces the weaker */
		cfg->listen_is_default = false;
		st->listen_from = st->source;
	}
	if (cfg->n_listen == OPTIONS_MAX_LISTEN)
		return fail(st->err, st->errlen, "too many --listen (at most %d)",
			    OPTIONS_MAX_LISTEN);
	if (options_parse_listen(value, &addr, st->err, st->errlen) < 0)
		return -EINVAL;
	if (addr.sa.ss_family == AF_INET6 &&
	    IN6_IS_ADDR_V4MAPPED(&((struct sockaddr_in6 *)&addr.sa)->sin6_addr)) {
		char v4[INET_ADDRSTRLEN];
		inet_ntop(AF_INET, ((struct sockaddr_in6 *)&addr.sa)->sin6_addr.s6_addr + 12, v4,
			  sizeof(v4));
		return fail(st->err, st->errlen,
			    "bad listen address '%s': an IPv4-mapped address cannot be bound "
			    "(IPv6 sockets here are IPv6-only): write %s:%u",
			    value, v4, addr_port(&addr));
	}
	for (unsigned i = 0; i < cfg->n_listen; i++) {
		const struct options_addr *other = &cfg->listen[i];
		if (same_addr(&addr, other))
			return fail(st->err, st->errlen,
				    "--listen %s: the same address as %s, given before: give each "
				    "listen address once",
				    value, other->text);
		if (addr.sa.ss_family != other->sa.ss_family ||
		    addr_port(&addr) != addr_port(other) ||
		    is_wildcard(&addr) == is_wildcard(other))
			continue;
		const char *family = addr.sa.ss_family == AF_INET ? "IPv4" : "IPv6";
		if (is_wildcard(other))
			return fail(
			    st->err, st->errlen,
			    "--listen %s: %s, given before, already listens on every %s "
			    "address at port %u: give either the wildcard or single addresses",
			    value, other->text, family, addr_port(&addr));
		return fail(st->err, st->errlen,
			    "--listen %s listens on every %s address at port %u, %s (given before) "
			    "included: give either the wildcard or single addresses",
			    value, family, addr_port(&addr), other->text);
	}
	cfg->listen[cfg->n_listen++] = addr;
	return 0;
}

/* --https-path: an absolute path without a query, fragment, spaces or
 * control characters, which a request's :path must equal up to its '?'. */
static int parse_https_path(const char *value, struct config *cfg, char *err, size_t errlen)
{
	size_t n = strlen(value);

	if (value[0] != '/' || n >= sizeof(cfg->https_path))
		return fail(err, errlen,
			    "bad --https-path '%s': an absolute path of at most %zu "
			    "bytes, such as /dns-query",
			    value, sizeof(cfg->https_path) - 1);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)value[i];
		if (c <= ' ' || c >= 0x7f || c == '?' || c == '#')
			return fail(err, errlen,
				    "bad --https-path '%s': no query, fragment, spaces or "
				    "non-ASCII characters",
				    value);
	}
	memcpy(cfg->https_path, value, n + 1);
	return 0;
}

/* --bootstrap IP[:PORT]: one more plain DNS server for the upstreams' names. */
static int parse_bootstrap(struct parse_state *st, const char *value)
{
	struct config *cfg = st->cfg;
	char url[INET6_ADDRSTRLEN + 32];
	struct options_upstream up;

	if (list_room(st, &st->bootstrap_from, &cfg->n_bootstrap, OPTIONS_MAX_BOOTSTRAP,
		      "bootstrap"))
		return -EINVAL;
	if (strlen(value) + 7 >= sizeof(url) || strncmp(value, "udp://", 6) == 0)
		return fail(st->err, st->errlen,
			    "bad --bootstrap '%s': expected IP[:PORT] (IPv6 as [::1]:53)", value);
	snprintf(url, sizeof(url), "udp://%s", value);
	if (parse_plain_upstream(url, &up, st->err, st->errlen) < 0)
		return fail(st->err, st->errlen,
			    "bad --bootstrap '%s': expected IP[:PORT] (IPv6 as [::1]:53)", value);
	for (unsigned i = 0; i < cfg->n_bootstrap; i++)
		if (same_addr(&cfg->bootstrap[i], &up.addr))
			return fail(st->err, st->errlen,
				    "--bootstrap %s: the same server as %s, given before", value,
				    cfg->bootstrap[i].text);
	cfg->bootstrap[cfg->n_bootstrap++] = up.addr;
	return 0;
}

/* Apply one option from the current source; @value is NULL for flags. */
static int apply(struct parse_state *st, const struct option_def *o, const char *value)
{
	struct config *cfg = st->cfg;
	char *err = st->err;
	size_t errlen = st->errlen;

	if (o->arg && !value)
		return fail(err, errlen, "option --%s needs a value (%s)", o->name, o->arg);
	if (!value)
		value = ""; /* flags: never read, but no case below need check for NULL */
	st->set[o->id].given = true;
	st->set[o->id].file = st->file;
	st->set[o->id].line = st->line;
	switch (o->id) {
	case OPT_CONFIG:
		return read_file(st, value);
	case OPT_LISTEN:
		return parse_listen_option(st, value);
	case OPT_LISTEN_TLS:
		if (list_room(st, &st->listen_tls_from, &cfg->n_listen_tls, OPTIONS_MAX_LISTEN,
			      o->name))
			return -EINVAL;
		return options_parse_listen(value, &cfg->listen_tls[cfg->n_listen_tls++], err,
					    errlen);
	case OPT_LISTEN_HTTPS:
		if (list_room(st, &st->listen_https_from, &cfg->n_listen_https, OPTIONS_MAX_LISTEN,
			      o->name))
			return -EINVAL;
		return options_parse_listen(value, &cfg->listen_https[cfg->n_listen_https++], err,
					    errlen);
	case OPT_HTTPS_PATH:
		return parse_https_path(value, cfg, err, errlen);
	case OPT_CERT_FILE:
	case OPT_KEY_FILE: {
		char *dst = o->id == OPT_CERT_FILE ? cfg->cert_file : cfg->key_file;
		if (!value[0] || strlen(value) >= OPTIONS_MAX_PATH)
			return fail(err, errlen, "bad --%s '%s'", o->name, value);
		snprintf(dst, OPTIONS_MAX_PATH, "%s", value);
		return 0;
	}
	case OPT_UPSTREAM:
		if (st->upstream_from != st->source) {
			cfg->n_upstream = 0;
			st->upstream_from = st->source;
		}
		if (cfg->n_upstream == OPTIONS_MAX_UPSTREAMS)
			return fail(err, errlen, "too many --upstream (at most %d)",
				    OPTIONS_MAX_UPSTREAMS);
		if (options_parse_upstream(value, &cfg->upstream[cfg->n_upstream], err, errlen))
			return -EINVAL;
		if (cfg->upstream[cfg->n_upstream].transport == OPTIONS_TRANSPORT_PLAIN)
			return fail(err, errlen,
				    "--upstream %s: plain DNS would send every query in cleartext; "
				    "it is allowed only for a zone you name, with "
				    "--forward-zone ZONE=%s",
				    value, value);
		if (check_duplicate_upstream(st, cfg->upstream, cfg->n_upstream, "--upstream",
					     value) < 0)
			return -EINVAL;
		cfg->n_upstream++;
		return 0;
	case OPT_FORWARD_ZONE:
		return parse_forward_zone(st, value);
	case OPT_BOOTSTRAP:
		return parse_bootstrap(st, value);
	case OPT_MAX_UDP_SIZE:
		return parse_uint(o->name, value, 512, 65535, &cfg->max_udp_size, err, errlen);
	case OPT_CA_FILE:
		if (!value[0] || strlen(value) >= sizeof(cfg->ca_file))
			return fail(err, errlen, "bad --ca-file '%s'", value);
		snprintf(cfg->ca_file, sizeof(cfg->ca_file), "%s", value);
		return 0;
	case OPT_TIMEOUT:
		return parse_uint(o->name, value, 10, 600000, &cfg->timeout_ms, err, errlen);
	case OPT_TCP_IDLE_TIMEOUT:
		return parse_uint(o->name, value, 10, 3600000, &cfg->tcp_idle_timeout_ms, err,
				  errlen);
	case OPT_MAX_INFLIGHT:
		return parse_uint(o->name, value, 1, 1000000, &cfg->max_inflight, err, errlen);
	case OPT_MAX_TCP_CLIENTS:
		return parse_uint(o->name, value, 1, 1000000, &cfg->max_tcp_clients, err, errlen);
	case OPT_MAX_CLIENTS_PER_ADDRESS:
		return parse_uint(o->name, value, 1, 1000000, &cfg->max_clients_per_address, err,
				  errlen);
	case OPT_MAX_TCP_PIPELINE:
		return parse_uint(o->name, value, 1, 65535, &cfg->max_tcp_pipeline, err, errlen);
	case OPT_IDLE_TIMEOUT:
		return parse_uint(o->name, value, 10, 3600000, &cfg->idle_timeout_ms, err, errlen);
	case OPT_WORKERS:
		return parse_uint(o->name, value, 1, OPTIONS_MAX_WORKERS, &cfg->workers, err,
				  errlen);
	case OPT_BUSY_POLL:
		return parse_uint(o->name, value, 0, 1000, &cfg->busy_poll_us, err, errlen);
	case OPT_MAX_CONNECTIONS:
		return parse_uint(o->name, value, 1, 64, &cfg->max_connections, err, errlen);
	case OPT_POLICY:
		if (strcmp(value, "fastest") == 0)
			cfg->policy = OPTIONS_POLICY_FASTEST;
		else if (strcmp(value, "failover") == 0)
			cfg->policy = OPTIONS_POLICY_FAILOVER;
		else if (strcmp(value, "round-robin") == 0)
			cfg->policy = OPTIONS_POLICY_ROUND_ROBIN;
		else
			return fail(err, errlen,
				    "bad --policy '%s': expected fastest, failover or round-robin",
				    value);
		return 0;
	case OPT_PROFILE:
		if (strcmp(value, "strict") == 0)
			cfg->profile = OPTIONS_PROFILE_STRICT;
		else if (strcmp(value, "opportunistic") == 0)
			cfg->profile = OPTIONS_PROFILE_OPPORTUNISTIC;
		else
			return fail(err, errlen,
				    "bad --profile '%s': expected strict or opportunistic", value);
		return 0;
	case OPT_NO_PADDING:
		cfg->padding = false;
		return 0;
	case OPT_NO_SESSION_RESUMPTION:
		cfg->session_resumption = false;
		return 0;
	case OPT_DOH_METHOD:
		if (strcmp(value, "post") == 0)
			cfg->doh_method = OPTIONS_DOH_POST;
		else if (strcmp(value, "get") == 0)
			cfg->doh_method = OPTIONS_DOH_GET;
		else
			return fail(err, errlen, "bad --doh-method '%s': expected post or get",
				    value);
		return 0;
	case OPT_DOH_KEEPALIVE:
		if (parse_uint(o->name, value, 0, 3600000, &cfg->doh_keepalive_ms, err, errlen) <
			0 ||
		    (cfg->doh_keepalive_ms && cfg->doh_keepalive_ms < 1000))
			return fail(err, errlen,
				    "bad --doh-keepalive '%s': expected 0 (off) or a number from "
				    "1000 to 3600000",
				    value);
		return 0;
	case OPT_CACHE_SIZE:
		return parse_size(o->name, value, &cfg->cache_bytes, err, errlen);
	case OPT_UDP_RECV_BUFFER:
		if (parse_size(o->name, value, &cfg->udp_recv_buffer, err, errlen) < 0)
			return -EINVAL;
		if (cfg->udp_recv_buffer > (size_t)1 << 30)
			return fail(err, errlen, "bad --%s '%s': at most 1G", o->name, value);
		return 0;
	case OPT_CACHE_MIN_TTL:
		return parse_uint(o->name, value, 0, 604800, &cfg->cache_min_ttl, err, errlen);
	case OPT_CACHE_MAX_TTL:
		return parse_uint(o->name, value, 0, 604800, &cfg->cache_max_ttl, err, errlen);
	case OPT_SERVE_STALE:
		return parse_uint(o->name, value, 0, 604800, &cfg->serve_stale, err, errlen);
	case OPT_NO_PREFETCH:
		cfg->prefetch = false;
		return 0;
	case OPT_BLOCK:
		if (!value[0] || strlen(value) >= sizeof(cfg->block_file))
			return fail(err, errlen, "bad --block '%s'", value);
		snprintf(cfg->block_file, sizeof(cfg->block_file), "%s", value);
		return 0;
	case OPT_BLOCK_ACTION:
		if (strcmp(value, "nxdomain") == 0)
			cfg->block_action = 0;
		else if (strcmp(value, "refused") == 0)
			cfg->block_action = 1;
		else if (strcmp(value, "null") == 0)
			cfg->block_action = 2;
		else
			return fail(err, errlen,
				    "bad --block-action '%s': expected nxdomain, refused or null",
				    value);
		return 0;
	case OPT_LOCAL_DATA:
		return parse_local_data(st, value);
	case OPT_HOSTS:
		if (list_room(st, &st->hosts_from, &cfg->n_hosts, OPTIONS_MAX_HOSTS, o->name))
			return -EINVAL;
		if (!value[0] || strlen(value) >= sizeof(cfg->hosts[0]))
			return fail(err, errlen, "bad --hosts '%s'", value);
		snprintf(cfg->hosts[cfg->n_hosts++], sizeof(cfg->hosts[0]), "%s", value);
		return 0;
	case OPT_NO_BUILTIN_ZONE:
		return parse_no_builtin(st, value);
	case OPT_ALLOW:
		if (st->allow_from != st->source) {
			cfg->allow.n = 0;
			st->allow_from = st->source;
		}
		if (cfg->allow.n == ACL_MAX)
			return fail(err, errlen, "too many --allow (at most %d)", ACL_MAX);
		if (acl_parse(value, &cfg->allow.entries[cfg->allow.n]) < 0)
			return fail(err, errlen,
				    "bad --allow '%s': expected ADDR/BITS, e.g. "
				    "192.168.1.0/24",
				    value);
		cfg->allow.n++;
		return 0;
	case OPT_USER:
		if (!value[0] || strlen(value) >= sizeof(cfg->user))
			return fail(err, errlen, "bad --user '%s'", value);
		snprintf(cfg->user, sizeof(cfg->user), "%s", value);
		return 0;
	case OPT_METRICS:
		return options_parse_listen(value, &cfg->metrics, err, errlen);
	case OPT_CONTROL:
		if (!value[0] || strlen(value) >= sizeof(cfg->control))
			return fail(err, errlen,
				    "bad --control '%s': expected a path of 1 to %d bytes", value,
				    OPTIONS_MAX_UNIX_PATH - 1);
		snprintf(cfg->control, sizeof(cfg->control), "%s", value);
		return 0;
	case OPT_LOG_QUERIES:
		cfg->log_queries = true;
		return 0;
	case OPT_DNSTAP:
		if (!value[0] || strlen(value) >= sizeof(cfg->dnstap))
			return fail(err, errlen,
				    "bad --dnstap '%s': expected a unix socket path of "
				    "at most %zu bytes",
				    value, sizeof(cfg->dnstap) - 1);
		snprintf(cfg->dnstap, sizeof(cfg->dnstap), "%s", value);
		return 0;
	case OPT_DNSTAP_IDENTITY:
		if (!value[0] || strlen(value) >= sizeof(cfg->dnstap_identity))
			return fail(err, errlen,
				    "bad --dnstap-identity '%s': expected 1 to %zu bytes", value,
				    sizeof(cfg->dnstap_identity) - 1);
		snprintf(cfg->dnstap_identity, sizeof(cfg->dnstap_identity), "%s", value);
		return 0;
	case OPT_VERBOSE:
		cfg->verbosity++;
		if (st->source == SRC_CLI)
			cfg->cli_verbosity++;
		return 0;
	case OPT_CHECK_CONFIG:
		cfg->check_only = true;
		return 0;
	case OPT_HELP:
		print_help(st->out);
		st->exit_now = true;
		return 0;
	case OPT_VERSION:
		fprintf(st->out, "dotproxy %s\n", DOTPROXY_VERSION);
		st->exit_now = true;
		return 0;
	}
	return fail(err, errlen, "internal error: unhandled option --%s", o->name);
}

static const struct option_def *find_long(const char *name, size_t len)
{
	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
		if (strlen(table[i].name) == len && strncmp(table[i].name, name, len) == 0)
			return &table[i];
	return NULL;
}

static const struct option_def *find_short(char c)
{
	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
		if (table[i].short_name == c)
			return &table[i];
	return NULL;
}

static char *trim(char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	size_t n = strlen(s);
	while (n && isspace((unsigned char)s[n - 1]))
		s[--n] = '\0';
	return s;
}

/* Options whose values may hold spaces, quotes and '#' (a TXT record), so
 * the file may quote them whole. */
static bool takes_quotes(enum opt_id id)
{
	return id == OPT_LOCAL_DATA || id == OPT_HOSTS || id == OPT_NO_BUILTIN_ZONE;
}

/* Does the config line @line set an option of takes_quotes()? */
static bool quoted_value(const char *line)
{
	while (isspace((unsigned char)*line))
		line++;
	const struct option_def *o = find_long(line, strcspn(line, " \t\r\n\v\f"));
	return o && takes_quotes(o->id);
}

/* Cut @line at its comment: a '#' at the start of a word (the one in
 * "upstream 9.9.9.9@853#dns.quad9.net" is part of the value); with
 * @quotes, not inside '...' or "..." (where \" does not close), as in
 * local-data 'x.home.arpa TXT "#1"'.  Returns the comment's text after the
 * '#', or NULL if there is none. */
static const char *strip_comment(char *line, bool quotes)
{
	char open = 0;

	for (char *p = line; *p; p++) {
		if (open) {
			if (*p == '\\' && open == '"' && p[1])
				p++;
			else if (*p == open)
				open = 0;
		} else if (quotes && (*p == '"' || *p == '\'')) {
			open = *p;
		} else if (*p == '#' && (p == line || isspace((unsigned char)p[-1]))) {
			*p = '\0';
			return p + 1;
		}
	}
	return NULL;
}

/*
 * "upstream 127.0.0.1@8853 #dns.example": the comment rule drops the auth
 * name, and the upstream would be verified by its IP instead, without a
 * word.  A comment right after an upstream spec that has no auth name yet,
 * starting with a host name of two labels or more glued to its '#', is
 * refused, saying both ways to write what was meant.  "# dns.example" and
 * "#primary" stay comments.
 */
static int check_cut_auth_name(struct parse_state *st, const struct option_def *o,
			       const char *value, const char *comment)
{
	char word[OPTIONS_MAX_AUTH_NAME + 1];
	size_t len = comment ? strcspn(comment, " \t\r\n\v\f") : 0;

	if ((o->id != OPT_UPSTREAM && o->id != OPT_FORWARD_ZONE) || len == 0 || len >= sizeof(word))
		return 0;
	memcpy(word, comment, len);
	word[len] = '\0';
	const char *comma = strrchr(value, ',');
	const char *spec = comma		       ? comma + 1
			   : o->id == OPT_FORWARD_ZONE ? strchr(value, '=')
						       : value;
	if (!spec)
		return 0;
	if (*spec == '=')
		spec++;
	if (strchr(spec, '#') || strncmp(spec, "udp://", 6) == 0 || !strchr(word, '.') ||
	    !valid_hostname(word))
		return 0;
	/* The name goes before the pins: IP@PORT#NAME^PIN. */
	size_t head = (size_t)(spec - value) + strcspn(spec, "^");
	return fail(st->err, st->errlen,
		    "%s %s #%s: a '#' after white space starts a comment, which would drop the "
		    "auth name %s: write %.*s#%s%s (no space before '#'), or '# %s' for a comment",
		    o->name, value, word, word, (int)head, value, word, value + head, word);
}

/* A value wholly in single or double quotes loses them, as in a shell:
 * local-data "nas.home.arpa A 192.168.1.10".  (A value holding double
 * quotes goes in single ones.) */
static char *unquote(char *value)
{
	size_t n = strlen(value);

	if (n >= 2 && (value[0] == '"' || value[0] == '\'') && value[n - 1] == value[0]) {
		value[n - 1] = '\0';
		return value + 1;
	}
	return value;
}

static int read_file(struct parse_state *st, const char *path)
{
	char line[8192];
	unsigned lineno = 0;
	int rc = 0;
	enum source saved = st->source;

	FILE *f = fopen(path, "r");
	if (!f)
		return fail(st->err, st->errlen, "cannot read config file %s: %s", path,
			    strerror(errno));
	st->source = SRC_FILE;
	st->file = path;
	while (fgets(line, sizeof(line), f)) {
		lineno++;
		st->line = lineno;
		if (!strchr(line, '\n') && !feof(f)) {
			rc = fail(st->err, st->errlen, "%s:%u: line too long", path, lineno);
			break;
		}
		const char *comment = strip_comment(line, quoted_value(line));
		char *name = trim(line);
		if (!*name)
			continue;
		char *value = name;
		while (*value && !isspace((unsigned char)*value))
			value++;
		if (*value)
			*value++ = '\0';
		value = trim(value);
		const struct option_def *o = find_long(name, strlen(name));
		if (o && takes_quotes(o->id))
			value = unquote(value);
		if (o && o->id == OPT_CONFIG) {
			rc = fail(st->err, st->errlen,
				  "%s:%u: 'config' cannot be used in a config file", path, lineno);
			break;
		}
		if (!o || o->cli_only) {
			rc = fail(st->err, st->errlen, "%s:%u: unknown option '%s'", path, lineno,
				  name);
			break;
		}
		if (o->arg && !*value) {
			rc = fail(st->err, st->errlen, "%s:%u: '%s' needs a value (%s)", path,
				  lineno, name, o->arg);
			break;
		}
		if (!o->arg && *value) {
			rc = fail(st->err, st->errlen, "%s:%u: '%s' takes no value", path, lineno,
				  name);
			break;
		}
		char reason[1024];
		char *outer_err = st->err;
		size_t outer_len = st->errlen;
		st->err = reason;
		st->errlen = sizeof(reason);
		rc = check_cut_auth_name(st, o, value, comment);
		if (!rc)
			rc = apply(st, o, o->arg ? value : NULL);
		st->err = outer_err;
		st->errlen = outer_len;
		if (rc) {
			fail(st->err, st->errlen, "%s:%u: %s", path, lineno, reason);
			break;
		}
	}
	if (!rc && ferror(f))
		rc = fail(st->err, st->errlen, "cannot read config file %s: %s", path,
			  strerror(errno));
	fclose(f);
	st->source = saved;
	st->file = NULL;
	st->line = 0;
	return rc;
}

/* The command line, in two passes: --config first (whatever its position),
 * so that every other option on the command line overrides the file. */
static int parse_argv(struct parse_state *st, int argc, char **argv, bool config_pass)
{
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i];
		const struct option_def *o = NULL;
		const char *value = NULL;

		if (strncmp(arg, "--", 2) == 0 && arg[2]) {
			const char *eq = strchr(arg + 2, '=');
			size_t len = eq ? (size_t)(eq - arg - 2) : strlen(arg + 2);
			o = find_long(arg + 2, len);
			if (!o)
				return fail(st->err, st->errlen, "unknown option '%s' (see --help)",
					    arg);
			if (eq) {
				if (!o->arg)
					return fail(st->err, st->errlen,
						    "option --%s takes no value", o->name);
				value = eq + 1;
			}
		} else if (arg[0] == '-' && arg[1] && arg[1] != '-') {
			/* Short flags may be bundled: -vv. */
			for (const char *c = arg + 1; *c; c++) {
				o = find_short(*c);
				if (!o || o->arg)
					return fail(st->err, st->errlen,
						    "unknown option '-%c' (see --help)", *c);
				if (!config_pass) {
					int rc = apply(st, o, NULL);
					if (rc)
						return rc;
				}
			}
			continue;
		} else {
			return fail(st->err, st->errlen, "unexpected argument '%s' (see --help)",
				    arg);
		}
		if (o->arg && !value) {
			if (i + 1 >= argc)
				return fail(st->err, st->errlen, "option --%s needs a value (%s)",
					    o->name, o->arg);
			value = argv[++i];
		}
		if (config_pass != (o->id == OPT_CONFIG))
			continue;
		int rc = apply(st, o, value);
		if (rc)
			return rc;
	}
	return 0;
}

static const char *name_of(enum opt_id id)
{
	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
		if (table[i].id == id)
			return table[i].name;
	return "?";
}

/* Where option @id got its value, for a message: "FILE:LINE", "command line"
 * or "default". */
static const char *origin(const struct parse_state *st, enum opt_id id, char *buf, size_t cap)
{
	if (!st->set[id].given)
		return "default";
	if (!st->set[id].file)
		return "command line";
	snprintf(buf, cap, "%s:%u", st->set[id].file, st->set[id].line);
	return buf;
}

static void warn(struct config *cfg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void warn(struct config *cfg, const char *fmt, ...)
{
	va_list ap;

	if (cfg->n_warnings == OPTIONS_MAX_WARNINGS)
		return;
	va_start(ap, fmt);
	vsnprintf(cfg->warnings[cfg->n_warnings++], OPTIONS_WARNING_LEN, fmt, ap);
	va_end(ap);
}

/*
 * What no single value shows.  Two values that cannot both hold are an
 * error: dotproxy would have to pick one behind the user's back.  An
 * option that does nothing because another turned its feature off is a
 * warning: turning the cache or the blocklist off for a while (say
 * --cache-size 0 on the command line) should not mean editing the rest of
 * the file.
 */
/* The first upstream given by name, default or in a zone; NULL if none. */
static const struct options_upstream *first_named(const struct config *cfg)
{
	for (unsigned i = 0; i < cfg->n_upstream; i++)
		if (cfg->upstream[i].hostname[0])
			return &cfg->upstream[i];
	for (unsigned z = 0; z < cfg->n_zones; z++)
		for (unsigned i = 0; i < cfg->zones[z].n_upstream; i++)
			if (cfg->zones[z].upstream[i].hostname[0])
				return &cfg->zones[z].upstream[i];
	return NULL;
}

/* The first DoH upstream, default or in a zone; NULL if none. */
static const struct options_upstream *first_doh(const struct config *cfg)
{
	for (unsigned i = 0; i < cfg->n_upstream; i++)
		if (cfg->upstream[i].transport == OPTIONS_TRANSPORT_DOH)
			return &cfg->upstream[i];
	for (unsigned z = 0; z < cfg->n_zones; z++)
		for (unsigned i = 0; i < cfg->zones[z].n_upstream; i++)
			if (cfg->zones[z].upstream[i].transport == OPTIONS_TRANSPORT_DOH)
				return &cfg->zones[z].upstream[i];
	return NULL;
}

static int check_whole(struct parse_state *st)
{
	struct config *cfg = st->cfg;
	char a[OPTIONS_MAX_PATH + 16], b[OPTIONS_MAX_PATH + 16];
	static const char *const actions[] = { "nxdomain", "refused", "null" };
	const struct options_upstream *named = first_named(cfg);

	bool by_address = false;
	for (unsigned i = 0; i < cfg->n_upstream; i++)
		by_address |= !cfg->upstream[i].hostname[0];
	if (named && !cfg->n_bootstrap && !by_address)
		return fail(st->err, st->errlen,
			    "upstream %s is given by name, and no --upstream is given by address "
			    "to resolve it through: add --bootstrap IP[:PORT] (a plain DNS server "
			    "asked for upstream names alone; the system resolver is never used) "
			    "or an upstream given by address",
			    named->label);
	if (!named && cfg->n_bootstrap)
		warn(cfg, "--bootstrap %s (%s) does nothing: no upstream is given by name",
		     cfg->bootstrap[0].text, origin(st, OPT_BOOTSTRAP, a, sizeof(a)));

	if (cfg->cache_min_ttl > cfg->cache_max_ttl)
		return fail(st->err, st->errlen,
			    "--cache-min-ttl %u (%s) is above --cache-max-ttl %u (%s): the "
			    "minimum cannot be above the maximum",
			    cfg->cache_min_ttl, origin(st, OPT_CACHE_MIN_TTL, a, sizeof(a)),
			    cfg->cache_max_ttl, origin(st, OPT_CACHE_MAX_TTL, b, sizeof(b)));
	if (cfg->cache_bytes == 0) {
		if (cfg->serve_stale)
			warn(cfg,
			     "--serve-stale %u (%s) does nothing with --cache-size 0 (%s): no "
			     "answer is kept to serve",
			     cfg->serve_stale, origin(st, OPT_SERVE_STALE, a, sizeof(a)),
			     origin(st, OPT_CACHE_SIZE, b, sizeof(b)));
		static const enum opt_id ttls[] = { OPT_CACHE_MIN_TTL, OPT_CACHE_MAX_TTL };
		for (size_t i = 0; i < sizeof(ttls) / sizeof(ttls[0]); i++)
			if (st->set[ttls[i]].given)
				warn(cfg, "--%s (%s) does nothing with --cache-size 0 (%s)",
				     name_of(ttls[i]), origin(st, ttls[i], a, sizeof(a)),
				     origin(st, OPT_CACHE_SIZE, b, sizeof(b)));
	}
	if (st->set[OPT_BLOCK_ACTION].given && !cfg->block_file[0])
		warn(cfg, "--block-action %s (%s) does nothing without --block",
		     actions[cfg->block_action], origin(st, OPT_BLOCK_ACTION, a, sizeof(a)));
	if (cfg->doh_keepalive_ms && !first_doh(cfg))
		warn(cfg, "--doh-keepalive %u (%s) does nothing: no upstream is a DoH upstream",
		     cfg->doh_keepalive_ms, origin(st, OPT_DOH_KEEPALIVE, a, sizeof(a)));
	if (cfg->dnstap_identity[0] && !cfg->dnstap[0])
		warn(cfg, "--dnstap-identity %s (%s) does nothing without --dnstap",
		     cfg->dnstap_identity, origin(st, OPT_DNSTAP_IDENTITY, a, sizeof(a)));
	if (cfg->profile == OPTIONS_PROFILE_OPPORTUNISTIC) {
		const struct options_upstream *pinned = NULL;
		for (unsigned i = 0; i < cfg->n_upstream && !pinned; i++)
			if (cfg->upstream[i].n_pins)
				pinned = &cfg->upstream[i];
		for (unsigned z = 0; z < cfg->n_zones && !pinned; z++)
			for (unsigned i = 0; i < cfg->zones[z].n_upstream && !pinned; i++)
				if (cfg->zones[z].upstream[i].n_pins)
					pinned = &cfg->zones[z].upstream[i];
		if (pinned)
			warn(cfg,
			     "upstream %s has pins, but with --profile opportunistic (%s) a key "
			     "that matches none is only logged: the upstream is used anyway",
			     pinned->label, origin(st, OPT_PROFILE, a, sizeof(a)));
	}
	return 0;
}

int options_parse(int argc, char **argv, struct config *cfg, FILE *out, char *err, size_t errlen)
{
	struct parse_state st = {
		.cfg = cfg,
		.out = out,
		.source = SRC_CLI,
		.listen_from = SRC_DEFAULT,
		.listen_tls_from = SRC_DEFAULT,
		.listen_https_from = SRC_DEFAULT,
		.upstream_from = SRC_DEFAULT,
		.allow_from = SRC_DEFAULT,
		.zones_from = SRC_DEFAULT,
		.local_data_from = SRC_DEFAULT,
		.hosts_from = SRC_DEFAULT,
		.no_builtin_from = SRC_DEFAULT,
		.err = err,
		.errlen = errlen,
	};
	int rc;

	set_defaults(cfg);
	rc = parse_argv(&st, argc, argv, true);
	if (rc)
		return rc;
	rc = parse_argv(&st, argc, argv, false);
	if (rc)
		return rc;
	if (st.exit_now)
		return OPTIONS_EXIT;
	if ((cfg->n_listen_tls || cfg->n_listen_https) && (!cfg->cert_file[0] || !cfg->key_file[0]))
		return fail(err, errlen,
			    "--listen-%s needs a certificate: give --cert-file and "
			    "--key-file",
			    cfg->n_listen_tls ? "tls" : "https");
	/* TCP underneath: each address once, and none that another listener binds. */
	struct options_addr *streams[3 * OPTIONS_MAX_LISTEN];
	const char *kinds[3 * OPTIONS_MAX_LISTEN];
	unsigned n = 0;
	for (unsigned j = 0; j < cfg->n_listen; j++, n++)
		streams[n] = &cfg->listen[j], kinds[n] = "--listen";
	for (unsigned j = 0; j < cfg->n_listen_tls; j++, n++)
		streams[n] = &cfg->listen_tls[j], kinds[n] = "--listen-tls";
	for (unsigned j = 0; j < cfg->n_listen_https; j++, n++)
		streams[n] = &cfg->listen_https[j], kinds[n] = "--listen-https";
	for (unsigned i = cfg->n_listen; i < n; i++)
		for (unsigned j = 0; j < i; j++)
			if (same_addr(streams[i], streams[j]))
				return fail(err, errlen,
					    "%s %s: %s %s takes that address and port already: "
					    "give each stream address once (853 is DoT's port, "
					    "443 DoH's)",
					    kinds[i], streams[i]->text, kinds[j], streams[j]->text);
	rc = check_whole(&st);
	if (rc)
		return rc;
	return OPTIONS_RUN;
}

/* Standard base64 with padding, of @len bytes, into @out (4 * ceil(len / 3)
 * + 1 bytes). */
static void base64_encode(const uint8_t *in, size_t len, char *out)
{
	static const char alphabet[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t i, n = 0;

	for (i = 0; i + 2 < len; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
		out[n++] = alphabet[v >> 18 & 63];
		out[n++] = alphabet[v >> 12 & 63];
		out[n++] = alphabet[v >> 6 & 63];
		out[n++] = alphabet[v & 63];
	}
	if (i < len) {
		uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0);
		out[n++] = alphabet[v >> 18 & 63];
		out[n++] = alphabet[v >> 12 & 63];
		out[n++] = i + 1 < len ? alphabet[v >> 6 & 63] : '=';
		out[n++] = '=';
	}
	out[n] = '\0';
}

/* An upstream as written in a spec: its label and its pins. */
static void print_upstream(FILE *out, const struct options_upstream *up)
{
	char pin[4 * ((OPTIONS_PIN_LEN + 2) / 3) + 1];

	fputs(up->label, out);
	for (unsigned i = 0; i < up->n_pins; i++) {
		base64_encode(up->pins[i], OPTIONS_PIN_LEN, pin);
		fprintf(out, "^%s", pin);
	}
}

/* A byte count with the largest suffix that keeps it exact. */
static void print_size(FILE *out, const char *name, size_t bytes)
{
	static const char suffix[] = "GMK";

	for (unsigned i = 0; i < 3 && bytes; i++) {
		size_t unit = (size_t)1 << (10 * (3 - i));
		if (bytes % unit == 0) {
			fprintf(out, "%s %zu%c\n", name, bytes / unit, suffix[i]);
			return;
		}
	}
	fprintf(out, "%s %zu\n", name, bytes);
}

/* A file name, quoted where the file syntax allows it (options of
 * takes_quotes()) and the name needs it. */
static void print_path(FILE *out, const char *name, const char *path, bool quotable)
{
	bool plain = !strpbrk(path, " \t#'\"");

	if (plain || !quotable)
		fprintf(out, "%s %s\n", name, path);
	else
		fprintf(out, "%s %c%s%c\n", name, strchr(path, '\'') ? '"' : '\'', path,
			strchr(path, '\'') ? '"' : '\'');
}

/* A value, as a comment when another option makes it unused (so that the
 * listing read back does not warn about what it did not set); a value set
 * although unused stays, and warns again. */
static void print_uint_used(FILE *out, const char *name, unsigned value, bool used, const char *why)
{
	if (used)
		fprintf(out, "%s %u\n", name, value);
	else
		fprintf(out, "# %s %u (unused: %s)\n", name, value, why);
}

static void print_unset(FILE *out, const char *name, const char *meaning)
{
	fprintf(out, "# %s not set%s%s\n", name, meaning ? ": " : "", meaning ? meaning : "");
}

void options_print(const struct config *cfg, FILE *out)
{
	static const char *const policies[] = { "fastest", "failover", "round-robin" };
	static const char *const profiles[] = { "strict", "opportunistic" };
	static const char *const actions[] = { "nxdomain", "refused", "null" };

	for (size_t t = 0; t < sizeof(table) / sizeof(table[0]); t++) {
		const struct option_def *o = &table[t];
		const char *name = o->name;
		switch (o->id) {
		case OPT_CONFIG:
		case OPT_CHECK_CONFIG:
		case OPT_HELP:
		case OPT_VERSION:
			break; /* the command line's business */
		case OPT_LISTEN:
			for (unsigned i = 0; i < cfg->n_listen; i++)
				fprintf(out, "%s %s\n", name, cfg->listen[i].text);
			break;
		case OPT_LISTEN_TLS:
			if (!cfg->n_listen_tls)
				print_unset(out, name, NULL);
			for (unsigned i = 0; i < cfg->n_listen_tls; i++)
				fprintf(out, "%s %s\n", name, cfg->listen_tls[i].text);
			break;
		case OPT_LISTEN_HTTPS:
			if (!cfg->n_listen_https)
				print_unset(out, name, NULL);
			for (unsigned i = 0; i < cfg->n_listen_https; i++)
				fprintf(out, "%s %s\n", name, cfg->listen_https[i].text);
			break;
		case OPT_HTTPS_PATH:
			fprintf(out, "%s %s\n", name, cfg->https_path);
			break;
		case OPT_MAX_CLIENTS_PER_ADDRESS:
			fprintf(out, "%s %u\n", name, cfg->max_clients_per_address);
			break;
		case OPT_CERT_FILE:
		case OPT_KEY_FILE: {
			const char *path = o->id == OPT_CERT_FILE ? cfg->cert_file : cfg->key_file;
			if (path[0])
				print_path(out, name, path, false);
			else
				print_unset(out, name, NULL);
			break;
		}
		case OPT_UPSTREAM:
			for (unsigned i = 0; i < cfg->n_upstream; i++) {
				fprintf(out, "%s ", name);
				print_upstream(out, &cfg->upstream[i]);
				fputc('\n', out);
			}
			break;
		case OPT_BOOTSTRAP:
			if (!cfg->n_bootstrap)
				print_unset(out, name,
					    "names go through the upstreams given by address");
			for (unsigned i = 0; i < cfg->n_bootstrap; i++)
				fprintf(out, "%s %s\n", name, cfg->bootstrap[i].text);
			break;
		case OPT_FORWARD_ZONE:
			if (!cfg->n_zones)
				print_unset(out, name, NULL);
			for (unsigned z = 0; z < cfg->n_zones; z++) {
				fprintf(out, "%s %s=", name, cfg->zones[z].name);
				for (unsigned i = 0; i < cfg->zones[z].n_upstream; i++) {
					if (i)
						fputc(',', out);
					print_upstream(out, &cfg->zones[z].upstream[i]);
				}
				fputc('\n', out);
			}
			break;
		case OPT_MAX_UDP_SIZE:
			fprintf(out, "%s %u\n", name, cfg->max_udp_size);
			break;
		case OPT_CA_FILE:
			if (cfg->ca_file[0])
				print_path(out, name, cfg->ca_file, false);
			else
				print_unset(out, name, "the system trust store");
			break;
		case OPT_TIMEOUT:
			fprintf(out, "%s %u\n", name, cfg->timeout_ms);
			break;
		case OPT_TCP_IDLE_TIMEOUT:
			fprintf(out, "%s %u\n", name, cfg->tcp_idle_timeout_ms);
			break;
		case OPT_MAX_INFLIGHT:
			fprintf(out, "%s %u\n", name, cfg->max_inflight);
			break;
		case OPT_MAX_TCP_CLIENTS:
			fprintf(out, "%s %u\n", name, cfg->max_tcp_clients);
			break;
		case OPT_MAX_TCP_PIPELINE:
			fprintf(out, "%s %u\n", name, cfg->max_tcp_pipeline);
			break;
		case OPT_IDLE_TIMEOUT:
			fprintf(out, "%s %u\n", name, cfg->idle_timeout_ms);
			break;
		case OPT_BUSY_POLL:
			fprintf(out, "%s %u\n", name, cfg->busy_poll_us);
			break;
		case OPT_WORKERS:
			fprintf(out, "%s %u\n", name, cfg->workers);
			break;
		case OPT_MAX_CONNECTIONS:
			fprintf(out, "%s %u\n", name, cfg->max_connections);
			break;
		case OPT_POLICY:
			fprintf(out, "%s %s\n", name, policies[cfg->policy]);
			break;
		case OPT_METRICS:
			if (cfg->metrics.sa_len)
				fprintf(out, "%s %s\n", name, cfg->metrics.text);
			else
				print_unset(out, name, NULL);
			break;
		case OPT_CONTROL:
			if (cfg->control[0])
				print_path(out, name, cfg->control, false);
			else
				print_unset(out, name, NULL);
			break;
		case OPT_DOH_METHOD:
			fprintf(out, "%s %s\n", name,
				cfg->doh_method == OPTIONS_DOH_GET ? "get" : "post");
			break;
		case OPT_DOH_KEEPALIVE:
			fprintf(out, "%s %u\n", name, cfg->doh_keepalive_ms);
			break;
		case OPT_PROFILE:
			fprintf(out, "%s %s\n", name, profiles[cfg->profile]);
			break;
		case OPT_NO_PADDING:
			if (cfg->padding)
				print_unset(out, name, "queries are padded");
			else
				fprintf(out, "%s\n", name);
			break;
		case OPT_NO_SESSION_RESUMPTION:
			if (cfg->session_resumption)
				print_unset(out, name, "TLS sessions are resumed");
			else
				fprintf(out, "%s\n", name);
			break;
		case OPT_CACHE_SIZE:
			print_size(out, name, cfg->cache_bytes);
			break;
		case OPT_UDP_RECV_BUFFER:
			print_size(out, name, cfg->udp_recv_buffer);
			break;
		case OPT_CACHE_MIN_TTL:
			print_uint_used(out, name, cfg->cache_min_ttl, cfg->cache_bytes > 0,
					"cache-size 0");
			break;
		case OPT_CACHE_MAX_TTL:
			print_uint_used(out, name, cfg->cache_max_ttl, cfg->cache_bytes > 0,
					"cache-size 0");
			break;
		case OPT_SERVE_STALE:
			print_uint_used(out, name, cfg->serve_stale,
					cfg->cache_bytes > 0 || cfg->serve_stale, "cache-size 0");
			break;
		case OPT_NO_PREFETCH:
			if (cfg->prefetch)
				print_unset(out, name, "popular entries are prefetched");
			else
				fprintf(out, "%s\n", name);
			break;
		case OPT_BLOCK:
			if (cfg->block_file[0])
				print_path(out, name, cfg->block_file, false);
			else
				print_unset(out, name, NULL);
			break;
		case OPT_BLOCK_ACTION:
			fprintf(out, "%s%s %s%s\n", cfg->block_file[0] ? "" : "# ", name,
				actions[cfg->block_action],
				cfg->block_file[0] ? "" : " (unused: no block file)");
			break;
		case OPT_LOCAL_DATA:
			if (!cfg->n_local_data)
				print_unset(out, name, NULL);
			/* Single quotes keep a TXT record's double quotes and '#'. */
			for (unsigned i = 0; i < cfg->n_local_data; i++)
				fprintf(out,
					strchr(cfg->local_data[i], '\'') ? "%s %s\n" : "%s '%s'\n",
					name, cfg->local_data[i]);
			break;
		case OPT_HOSTS:
			if (!cfg->n_hosts)
				print_unset(out, name, NULL);
			for (unsigned i = 0; i < cfg->n_hosts; i++)
				print_path(out, name, cfg->hosts[i], true);
			break;
		case OPT_NO_BUILTIN_ZONE:
			if (!cfg->n_no_builtin)
				print_unset(out, name, NULL);
			for (unsigned i = 0; i < cfg->n_no_builtin; i++)
				fprintf(out, "%s %s\n", name, cfg->no_builtin[i]);
			break;
		case OPT_ALLOW:
			for (unsigned i = 0; i < cfg->allow.n; i++) {
				const struct acl_entry *e = &cfg->allow.entries[i];
				char text[INET6_ADDRSTRLEN];
				inet_ntop(e->family, e->addr, text, sizeof(text));
				fprintf(out, "%s %s/%u\n", name, text, (unsigned)e->bits);
			}
			break;
		case OPT_USER:
			if (cfg->user[0])
				fprintf(out, "%s %s\n", name, cfg->user);
			else
				print_unset(out, name, "the user dotproxy was started as");
			break;
		case OPT_LOG_QUERIES:
			if (cfg->log_queries)
				fprintf(out, "%s\n", name);
			else
				print_unset(out, name, NULL);
			break;
		case OPT_DNSTAP:
			if (cfg->dnstap[0])
				print_path(out, name, cfg->dnstap, false);
			else
				print_unset(out, name, NULL);
			break;
		case OPT_DNSTAP_IDENTITY:
			if (cfg->dnstap_identity[0])
				fprintf(out, "%s %s\n", name, cfg->dnstap_identity);
			else
				print_unset(out, name, "the host name");
			break;
		case OPT_VERBOSE:
			for (int i = cfg->cli_verbosity; i < cfg->verbosity; i++)
				fprintf(out, "%s\n", name);
			if (cfg->verbosity == cfg->cli_verbosity)
				print_unset(out, name, "errors and warnings only");
			break;
		}
	}
}

/* The same addresses, in any order (each is there once). */
static bool same_addrs(const struct options_addr *a, unsigned na, const struct options_addr *b,
		       unsigned nb)
{
	if (na != nb)
		return false;
	for (unsigned i = 0; i < na; i++) {
		bool found = false;
		for (unsigned j = 0; j < nb && !found; j++)
			found = same_addr(&a[i], &b[j]);
		if (!found)
			return false;
	}
	return true;
}

static bool same_listen(const struct config *a, const struct config *b)
{
	return same_addrs(a->listen, a->n_listen, b->listen, b->n_listen);
}

unsigned options_keep_running(struct config *next, const struct config *running, char *changed,
			      size_t cap)
{
	const char *names[12];
	unsigned n = 0;

	if (!same_listen(next, running))
		names[n++] = "--listen";
	if (!same_addrs(next->listen_tls, next->n_listen_tls, running->listen_tls,
			running->n_listen_tls))
		names[n++] = "--listen-tls";
	if (!same_addrs(next->listen_https, next->n_listen_https, running->listen_https,
			running->n_listen_https))
		names[n++] = "--listen-https";
	if (next->workers != running->workers)
		names[n++] = "--workers";
	if (next->max_inflight != running->max_inflight)
		names[n++] = "--max-inflight";
	if (next->cache_bytes != running->cache_bytes)
		names[n++] = "--cache-size";
	if (next->udp_recv_buffer != running->udp_recv_buffer)
		names[n++] = "--udp-recv-buffer";
	if (strcmp(next->user, running->user) != 0)
		names[n++] = "--user";
	if (strcmp(next->metrics.text, running->metrics.text) != 0)
		names[n++] = "--metrics";
	if (strcmp(next->control, running->control) != 0)
		names[n++] = "--control";
	if (strcmp(next->dnstap, running->dnstap) != 0)
		names[n++] = "--dnstap";
	if (strcmp(next->dnstap_identity, running->dnstap_identity) != 0)
		names[n++] = "--dnstap-identity";

	memcpy(next->listen, running->listen, sizeof(next->listen));
	next->n_listen = running->n_listen;
	next->listen_is_default = running->listen_is_default;
	memcpy(next->listen_tls, running->listen_tls, sizeof(next->listen_tls));
	next->n_listen_tls = running->n_listen_tls;
	memcpy(next->listen_https, running->listen_https, sizeof(next->listen_https));
	next->n_listen_https = running->n_listen_https;
	next->workers = running->workers;
	next->max_inflight = running->max_inflight;
	next->cache_bytes = running->cache_bytes;
	next->udp_recv_buffer = running->udp_recv_buffer;
	memcpy(next->user, running->user, sizeof(next->user));
	next->metrics = running->metrics;
	memcpy(next->control, running->control, sizeof(next->control));
	memcpy(next->dnstap, running->dnstap, sizeof(next->dnstap));
	memcpy(next->dnstap_identity, running->dnstap_identity, sizeof(next->dnstap_identity));

	size_t len = 0;
	if (cap)
		changed[0] = '\0';
	for (unsigned i = 0; i < n && len < cap; i++) {
		const char *sep = i == 0 ? "" : i + 1 < n ? ", " : " and ";
		int w = snprintf(changed + len, cap - len, "%s%s", sep, names[i]);
		if (w < 0)
			break;
		len += (size_t)w;
	}
	return n;
}
