/*
 * Local policy.  The built-in zone apexes and the blocked names are two sets
 * of lowercased wire-form names in open-addressing hash tables.  A query
 * name is checked suffix by suffix from its top-level label down, each
 * suffix's hash extended from its parent's, so a decision costs one pass
 * over the name and one short probe per label; no allocation per query.
 */
#include "lib/localzone.h"

#include "lib/log.h"
#include "lib/options.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum {
	TYPE_A = 1,
	TYPE_NS = 2,
	TYPE_SOA = 6,
	TYPE_PTR = 12,
	TYPE_AAAA = 28,
	TYPE_ANY = 255,
	/* RFC 6303 §3 gives its zones TTL and negative TTL 10800; localhost's
	 * addresses are just as permanent. */
	LOCAL_TTL = 10800,
	/* Short, so that unblocking a name takes effect soon; long enough
	 * that a client does not ask again for every connection. */
	BLOCK_TTL = 60,
	OUR_UDP_PAYLOAD = 1232, /* DNS flag day 2020, as in wire.c */
	MAX_LABELS = 128,	/* 127 one-byte labels and the root fill 255 bytes */
	ZONE_OFF = 255,		/* a zone's index in zone_defs when it is switched off */
	PTR_TO_QNAME = 0xc000 | WIRE_HEADER_LEN, /* the question name, right after the header */
};

/* ---- name sets -------------------------------------------------------- */

/*
 * Names are records [wire length][lowercased wire name][extra bytes] packed
 * in one arena; a slot holds a record's offset and its name's hash.  The
 * hash in the slot lets probes skip other names without touching the arena
 * and lets the table grow without rehashing names.  At most 3/4 full.
 *
 * Memory per blocked name: the record (1 + wire length: a name of N
 * characters without trailing dot takes N + 3 bytes), plus 8 bytes per slot
 * at a load of 3/8..3/4, i.e. 11..21 bytes; all records in one allocation.
 * Measured: 1M names of 28.7 characters on average take 48.4 MB (31.7 of
 * records, 16.8 of slots), 48 bytes per name; loading them takes 0.4 s.
 */
struct slot {
	uint32_t hash;
	uint32_t ref; /* offset of the record in the arena; 0: empty */
};

struct nameset {
	struct slot *slots;
	size_t mask;  /* slot count - 1 (a power of two minus one) */
	size_t count; /* names held */
	uint8_t *arena;
	size_t used;  /* arena bytes in use; byte 0 is never a record, so ref 0 is free */
	size_t cap;   /* arena bytes allocated */
	size_t extra; /* bytes of extra data after each name */
};

static int set_init(struct nameset *s, size_t slots, size_t extra)
{
	memset(s, 0, sizeof(*s));
	s->slots = calloc(slots, sizeof(*s->slots));
	if (!s->slots)
		return -ENOMEM;
	s->mask = slots - 1;
	s->used = 1;
	s->extra = extra;
	return 0;
}

static void set_deinit(struct nameset *s)
{
	free(s->slots);
	free(s->arena);
}

static inline uint8_t lower(uint8_t c)
{
	return (c >= 'A' && c <= 'Z') ? (uint8_t)(c + ('a' - 'A')) : c;
}

/* FNV-1a over the @n bytes of a label: its length byte and (lowercased)
 * characters.  Hashing proceeds from the top-level label down, so the hash
 * of a name is that of its parent extended by one label. */
static uint32_t hash_label(uint32_t h, const uint8_t *label, size_t n)
{
	for (size_t i = 0; i < n; i++)
		h = (h ^ label[i]) * 16777619u;
	return h;
}

static const uint32_t HASH_SEED = 2166136261u; /* FNV's offset basis (too big for an enum) */

/* FNV's low bits are weak; the table indexes by them (murmur3's finalizer). */
static uint32_t mix(uint32_t h)
{
	h ^= h >> 16;
	h *= 0x85ebca6bu;
	h ^= h >> 13;
	h *= 0xc2b2ae35u;
	h ^= h >> 16;
	return h;
}

/* Offsets of the labels of a wire-form name, root excluded; their number,
 * or -1 when the name does not end with the root label exactly at @len. */
static int label_offsets(const uint8_t *name, size_t len, uint8_t offs[MAX_LABELS])
{
	int n = 0;

	for (size_t p = 0; p < len; p += name[p] + 1u) {
		if (name[p] == 0)
			return p + 1 == len ? n : -1;
		if (name[p] > 63 || n == MAX_LABELS - 1)
			return -1;
		offs[n++] = (uint8_t)p;
	}
	return -1;
}

/* Bytes in label @i of the @n labels at @offs, of a name of @len bytes. */
static size_t label_size(const uint8_t *offs, int i, int n, size_t len)
{
	return (i + 1 < n ? offs[i + 1] : len - 1) - offs[i];
}

static uint32_t name_hash(const uint8_t *name, size_t len)
{
	uint8_t offs[MAX_LABELS];
	uint32_t h = HASH_SEED;
	int n = label_offsets(name, len, offs);

	for (int i = n; i-- > 0;)
		h = hash_label(h, name + offs[i], label_size(offs, i, n, len));
	return mix(h);
}

/* The record of @name (lowercased), or 0. */
static uint32_t set_find(const struct nameset *s, const uint8_t *name, size_t len, uint32_t hash)
{
	for (size_t i = hash & s->mask;; i = (i + 1) & s->mask) {
		const struct slot *slot = &s->slots[i];
		if (!slot->ref)
			return 0;
		const uint8_t *rec = s->arena + slot->ref;
		if (slot->hash == hash && rec[0] == len && memcmp(rec + 1, name, len) == 0)
			return slot->ref;
	}
}

/* Put a record in the first free slot of its probe sequence (the caller
 * knows it is absent and that a slot is free). */
static void place(struct nameset *s, uint32_t hash, uint32_t ref)
{
	size_t i = hash & s->mask;

	while (s->slots[i].ref)
		i = (i + 1) & s->mask;
	s->slots[i].hash = hash;
	s->slots[i].ref = ref;
}

static int set_grow(struct nameset *s)
{
	size_t size = (s->mask + 1) * 2;
	struct slot *old = s->slots;
	size_t old_size = s->mask + 1;

	s->slots = calloc(size, sizeof(*s->slots));
	if (!s->slots) {
		s->slots = old;
		return -ENOMEM;
	}
	s->mask = size - 1;
	for (size_t i = 0; i < old_size; i++)
		if (old[i].ref)
			place(s, old[i].hash, old[i].ref);
	free(old);
	return 0;
}

/* Add @name (lowercased) with s->extra bytes of @extra.  Returns 0 when
 * added, 1 when already there, -EFBIG beyond @max names or 4 GiB of
 * records, -ENOMEM. */
static int set_add(struct nameset *s, const uint8_t *name, size_t len, uint32_t hash,
		   const uint8_t *extra, size_t max)
{
	size_t rec = 1 + len + s->extra;

	if (set_find(s, name, len, hash))
		return 1;
	if (s->count >= max || s->used + rec > UINT32_MAX)
		return -EFBIG;
	if ((s->count + 1) * 4 > (s->mask + 1) * 3 && set_grow(s))
		return -ENOMEM;
	if (s->used + rec > s->cap) {
		size_t cap = s->cap ? s->cap : 4096;
		while (cap < s->used + rec)
			cap *= 2;
		uint8_t *arena = realloc(s->arena, cap);
		if (!arena)
			return -ENOMEM;
		s->arena = arena;
		s->cap = cap;
	}
	uint8_t *p = s->arena + s->used;
	p[0] = (uint8_t)len;
	memcpy(p + 1, name, len);
	if (s->extra && extra)
		memcpy(p + 1 + len, extra, s->extra);
	place(s, hash, (uint32_t)s->used);
	s->used += rec;
	s->count++;
	return 0;
}

/* Forget every record from arena offset @used on (a failed load), leaving
 * @count names.  Linear probing cannot simply clear slots (later entries of
 * a probe sequence would become unreachable), so the table is rebuilt: an
 * error path, run at most once per failed file. */
static void set_truncate(struct nameset *s, size_t used, size_t count)
{
	if (s->count == count)
		return;
	memset(s->slots, 0, (s->mask + 1) * sizeof(*s->slots));
	for (size_t off = 1; off < used; off += 1u + s->arena[off] + s->extra)
		place(s, name_hash(s->arena + off + 1, s->arena[off]), (uint32_t)off);
	s->used = used;
	s->count = count;
}

/* Give back the arena's spare room (up to half of it, or a failed file's
 * names) once a file is loaded. */
static void set_shrink(struct nameset *s)
{
	if (s->used == s->cap || !s->arena)
		return;
	uint8_t *arena = realloc(s->arena, s->used);
	if (arena) {
		s->arena = arena;
		s->cap = s->used;
	}
}

/* ---- built-in zones ---------------------------------------------------- */

enum zone_kind {
	ZONE_EMPTY,	/* RFC 6303 §3: the apex has SOA and NS, nothing exists below */
	ZONE_NODATA,	/* every name exists, and has no data */
	ZONE_LOCALHOST, /* every name has A 127.0.0.1 and AAAA ::1 */
};

struct zone_def {
	const char *apex;
	enum zone_kind kind;
	/* When @last is non-zero, one zone per number first..last as a label
	 * in front of @apex (the /12 and /10 IPv4 blocks). */
	unsigned first, last;
	/* A name of the zone (or its apex) with "PTR localhost.", or NULL. */
	const char *ptr;
};

#define ZEROS8		"0.0.0.0.0.0.0.0."
#define ZEROS7		"0.0.0.0.0.0.0."
#define IP6_UNSPECIFIED ZEROS8 ZEROS8 ZEROS8 ZEROS8 "ip6.arpa"
#define IP6_LOOPBACK	"1." ZEROS7 ZEROS8 ZEROS8 ZEROS8 "ip6.arpa"

/*
 * Deliberately absent: "test." and "example." (RFC 6761 §6.2, §6.5 let
 * them reach resolvers, and tests may rely on that); ".lan", ".home",
 * ".corp" (customary, but reserved by no one: a conditional-forwarding
 * option, not a hard-coded answer, is the tool for them).
 * No zone may lie inside another (localzone_new() checks).
 */
static const struct zone_def zone_defs[] = {
	/* RFC 6761 §6.3: localhost names are the loopback addresses, answered
	 * here whatever an upstream might say. */
	{ "localhost", ZONE_LOCALHOST, 0, 0, NULL },
	/* RFC 6761 §6.4: "invalid" names never exist. */
	{ "invalid", ZONE_EMPTY, 0, 0, NULL },
	/* RFC 6762 §22.1: .local is resolved by multicast DNS on the link;
	 * unicast resolvers answer NXDOMAIN. */
	{ "local", ZONE_EMPTY, 0, 0, NULL },
	/* RFC 7686 §2: .onion names belong to Tor; resolvers MUST answer
	 * NXDOMAIN (sending them upstream names the hidden service sought). */
	{ "onion", ZONE_EMPTY, 0, 0, NULL },
	/* RFC 8375 §6: home.arpa is a locally served zone (RFC 6303) for
	 * resolvers not configured to serve it. */
	{ "home.arpa", ZONE_EMPTY, 0, 0, NULL },
	/* No RFC: ICANN reserved .internal for private use (board resolution
	 * 2024.07.29.06); it will never be delegated, and names under it are
	 * internal host names that have no business upstream. */
	{ "internal", ZONE_EMPTY, 0, 0, NULL },
	/* RFC 9462 §6.4: resolver.arpa is locally served, every name NODATA.
	 * That includes SVCB for _dns.resolver.arpa: the proxy designates no
	 * encrypted resolver, and the upstream's designation, passed through,
	 * would lead clients to bypass the proxy. */
	{ "resolver.arpa", ZONE_NODATA, 0, 0, NULL },
	/* RFC 6303 §4.1: RFC 1918 private space. */
	{ "10.in-addr.arpa", ZONE_EMPTY, 0, 0, NULL },
	{ "172.in-addr.arpa", ZONE_EMPTY, 16, 31, NULL },
	{ "168.192.in-addr.arpa", ZONE_EMPTY, 0, 0, NULL },
	/* RFC 6303 §4.2: special IPv4 blocks (RFC 5735). */
	{ "0.in-addr.arpa", ZONE_EMPTY, 0, 0, NULL },			    /* "this" network */
	{ "127.in-addr.arpa", ZONE_EMPTY, 0, 0, "1.0.0.127.in-addr.arpa" }, /* loopback */
	{ "254.169.in-addr.arpa", ZONE_EMPTY, 0, 0, NULL },		    /* link-local */
	{ "2.0.192.in-addr.arpa", ZONE_EMPTY, 0, 0, NULL },		    /* TEST-NET-1 */
	{ "100.51.198.in-addr.arpa", ZONE_EMPTY, 0, 0, NULL },		    /* TEST-NET-2 */
	{ "113.0.203.in-addr.arpa", ZONE_EMPTY, 0, 0, NULL },		    /* TEST-NET-3 */
	{ "255.255.255.255.in-addr.arpa", ZONE_EMPTY, 0, 0, NULL },	    /* broadcast */
	/* RFC 7793: RFC 6598 shared address space 100.64.0.0/10 (CGNAT). */
	{ "100.in-addr.arpa", ZONE_EMPTY, 64, 127, NULL },
	/* RFC 6303 §4.3: the unspecified and loopback IPv6 addresses. */
	{ IP6_UNSPECIFIED, ZONE_EMPTY, 0, 0, NULL },
	{ IP6_LOOPBACK, ZONE_EMPTY, 0, 0, IP6_LOOPBACK },
	/* RFC 6303 §4.4: unique local addresses fd00::/8 (RFC 4193). */
	{ "d.f.ip6.arpa", ZONE_EMPTY, 0, 0, NULL },
	/* RFC 6303 §4.5: link-local fe80::/10. */
	{ "8.e.f.ip6.arpa", ZONE_EMPTY, 0, 0, NULL },
	{ "9.e.f.ip6.arpa", ZONE_EMPTY, 0, 0, NULL },
	{ "a.e.f.ip6.arpa", ZONE_EMPTY, 0, 0, NULL },
	{ "b.e.f.ip6.arpa", ZONE_EMPTY, 0, 0, NULL },
	/* RFC 6303 §4.6: documentation prefix 2001:db8::/32 (RFC 3849). */
	{ "8.b.d.0.1.0.0.2.ip6.arpa", ZONE_EMPTY, 0, 0, NULL },
};

enum { N_ZONE_DEFS = sizeof(zone_defs) / sizeof(zone_defs[0]) };

struct wire_name {
	uint8_t len; /* 0: none */
	uint8_t name[WIRE_MAX_NAME];
};

struct localzone {
	struct nameset zones;		   /* zone apexes; extra byte: index in zone_defs,
					    * or ZONE_OFF */
	struct nameset forward;		   /* forward zones: no built-in zone at or below */
	struct nameset blocked;		   /* blocklisted names */
	struct localdata *data;		   /* owned; first in precedence */
	struct wire_name ptr[N_ZONE_DEFS]; /* zone_defs[i].ptr in wire form */
	enum localzone_block_action action;
};

/* ---- text names -------------------------------------------------------- */

/* @s (@n bytes) as a quoted, printable, bounded string for an error
 * message (@cap >= 8): the input is a file's content, the message goes to
 * a log. */
static const char *quote(const char *s, size_t n, char *buf, size_t cap)
{
	size_t room = cap - 3, o = 0; /* two quotes and the NUL */
	bool cut = n > room;

	if (cut)
		n = room - 3;
	buf[o++] = '"';
	for (size_t i = 0; i < n; i++)
		buf[o++] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
	if (cut) {
		memcpy(buf + o, "...", 3);
		o += 3;
	}
	buf[o++] = '"';
	buf[o] = '\0';
	return buf;
}

static bool name_char(uint8_t c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '_';
}

/*
 * The text name @s (@n > 0 bytes, trailing dot optional) in lowercased wire
 * form into @out; its length, or 0 with a reason in @why.  Stricter than
 * DNS (which allows any byte): blocklists hold host names, and anything else
 * on a line is more likely a format this parser does not know than a name.
 */
static size_t text_to_wire(const char *s, size_t n, uint8_t *out, char *why, size_t whylen)
{
	char q[80];
	size_t len_at = 0, pos = 1;

	if (n >= 2 && s[0] == '|' && s[1] == '|') {
		snprintf(why, whylen, "adblock rules are not supported, list the name alone: %s",
			 quote(s, n, q, sizeof(q)));
		return 0;
	}
	if (n == 1 && s[0] == '.') {
		snprintf(why, whylen, "the root cannot be blocked");
		return 0;
	}
	if (s[n - 1] == '.')
		n--;
	/* Each character becomes one byte, each dot a length byte; add the
	 * first length byte and the root label. */
	if (n + 2 > WIRE_MAX_NAME) {
		snprintf(why, whylen, "name longer than 255 bytes: %s", quote(s, n, q, sizeof(q)));
		return 0;
	}
	for (size_t i = 0; i <= n; i++) {
		uint8_t c = i < n ? (uint8_t)s[i] : '.';
		if (c == '.') {
			size_t label = pos - len_at - 1;
			if (label == 0) {
				snprintf(why, whylen, "empty label in %s",
					 quote(s, n, q, sizeof(q)));
				return 0;
			}
			if (label > 63) {
				snprintf(why, whylen, "label longer than 63 characters in %s",
					 quote(s, n, q, sizeof(q)));
				return 0;
			}
			out[len_at] = (uint8_t)label;
			len_at = pos++;
		} else if (c == '*') {
			snprintf(why, whylen,
				 "wildcards are not supported (a name blocks the names below "
				 "it): %s",
				 quote(s, n, q, sizeof(q)));
			return 0;
		} else if (!name_char(c)) {
			if (c > 0x20 && c < 0x7f)
				snprintf(why, whylen, "invalid character '%c' in %s", c,
					 quote(s, n, q, sizeof(q)));
			else
				snprintf(why, whylen, "invalid byte 0x%02x in %s", c,
					 quote(s, n, q, sizeof(q)));
			return 0;
		} else {
			out[pos++] = lower(c);
		}
	}
	out[len_at] = 0;
	return pos;
}

/* ---- blocklist files --------------------------------------------------- */

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

enum addr_kind { NOT_ADDRESS, SINK_ADDRESS, OTHER_ADDRESS };

/* Whether a token is an address, and one that hosts-file blocklists map
 * names to so that connections fail at once. */
static enum addr_kind classify_address(const char *tok, size_t n)
{
	char buf[64];
	struct in_addr a4;
	struct in6_addr a6;

	if (n >= sizeof(buf))
		return NOT_ADDRESS;
	memcpy(buf, tok, n);
	buf[n] = '\0';
	if (inet_pton(AF_INET, buf, &a4) == 1) {
		uint32_t a = ntohl(a4.s_addr);
		return (a == 0 || a == 0x7f000001) ? SINK_ADDRESS : OTHER_ADDRESS;
	}
	char *zone = strchr(buf, '%'); /* "fe80::1%lo0" in the usual hosts header */
	if (zone)
		*zone = '\0';
	if (inet_pton(AF_INET6, buf, &a6) != 1)
		return NOT_ADDRESS;
	static const uint8_t unspecified[16], loopback[16] = { [15] = 1 };
	if (!zone && (!memcmp(&a6, unspecified, 16) || !memcmp(&a6, loopback, 16)))
		return SINK_ADDRESS;
	return OTHER_ADDRESS;
}

/* Names hosts files give the host itself (the header of the common
 * blocklists carries them): never a block. */
static bool host_self_name(const char *tok, size_t n)
{
	static const char *const names[] = {
		"localhost",	 "localhost.localdomain", "local",	  "broadcasthost",
		"ip6-localhost", "ip6-loopback",	  "ip6-localnet", "ip6-mcastprefix",
		"ip6-allnodes",	 "ip6-allrouters",	  "ip6-allhosts", "0.0.0.0",
	};

	if (n > 1 && tok[n - 1] == '.')
		n--;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strlen(names[i]) == n && strncasecmp(tok, names[i], n) == 0)
			return true;
	return false;
}

static int block_name(struct localzone *lz, const char *tok, size_t n, char *why, size_t whylen)
{
	uint8_t wire[WIRE_MAX_NAME];
	size_t len = text_to_wire(tok, n, wire, why, whylen);

	if (!len)
		return -EINVAL;
	int rc =
	    set_add(&lz->blocked, wire, len, name_hash(wire, len), NULL, LOCALZONE_MAX_BLOCKED);
	if (rc == -EFBIG)
		snprintf(why, whylen, "more than %d names", LOCALZONE_MAX_BLOCKED);
	else if (rc == -ENOMEM)
		snprintf(why, whylen, "out of memory");
	return rc < 0 ? rc : 0;
}

/* The next whitespace-separated token of [*p, end), or false at the end. */
static bool next_token(const char **p, const char *end, const char **tok, size_t *n)
{
	const char *s = *p;

	while (s < end && is_space(*s))
		s++;
	if (s == end)
		return false;
	*tok = s;
	while (s < end && !is_space(*s))
		s++;
	*n = (size_t)(s - *tok);
	*p = s;
	return true;
}

static int parse_line(struct localzone *lz, const char *line, size_t n, char *why, size_t whylen)
{
	const char *tok, *tok2;
	size_t tlen, tlen2;

	if (memchr(line, '\0', n)) {
		snprintf(why, whylen, "NUL byte in line");
		return -EINVAL;
	}
	/* '#' inside a token is not a comment: "a#b" is a bad name, not "a". */
	for (size_t i = 0; i < n; i++) {
		if (line[i] == '#' && (i == 0 || is_space(line[i - 1]))) {
			n = i;
			break;
		}
	}
	const char *p = line, *end = line + n;
	if (!next_token(&p, end, &tok, &tlen))
		return 0;

	enum addr_kind kind = classify_address(tok, tlen);
	if (kind == NOT_ADDRESS) {
		if (next_token(&p, end, &tok2, &tlen2)) {
			char q[80];
			while (end > tok && is_space(end[-1]))
				end--;
			snprintf(why, whylen, "expected one name, or an address and names: %s",
				 quote(tok, (size_t)(end - tok), q, sizeof(q)));
			return -EINVAL;
		}
		return block_name(lz, tok, tlen, why, whylen);
	}
	bool named = false;
	while (next_token(&p, end, &tok2, &tlen2)) {
		named = true;
		/* Names mapped to a real address are host definitions, not blocks:
		 * not ours to check either. */
		if (kind == OTHER_ADDRESS || host_self_name(tok2, tlen2))
			continue;
		int rc = block_name(lz, tok2, tlen2, why, whylen);
		if (rc)
			return rc;
	}
	if (!named) {
		char q[80];
		snprintf(why, whylen, "address %s without a name", quote(tok, tlen, q, sizeof(q)));
		return -EINVAL;
	}
	return 0;
}

static void report(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void report(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

int localzone_load_blocklist(struct localzone *lz, const char *path, char *err, size_t errlen)
{
	size_t used = lz->blocked.used, count = lz->blocked.count, lineno = 0;
	char *line = NULL, why[256];
	size_t linecap = 0;
	int rc = 0;

	report(err, errlen, "%s", "");
	FILE *f = fopen(path, "re");
	if (!f) {
		rc = -errno;
		report(err, errlen, "%s: %s", path, strerror(errno));
		return rc;
	}
	for (;;) {
		errno = 0;
		ssize_t n = getline(&line, &linecap, f);
		if (n < 0) {
			if (!feof(f)) {
				rc = errno ? -errno : -EIO;
				report(err, errlen, "%s: %s", path, strerror(-rc));
			}
			break;
		}
		lineno++;
		const char *p = line;
		size_t len = (size_t)n;
		/* A UTF-8 byte order mark, as editors on Windows write. */
		if (lineno == 1 && len >= 3 && memcmp(p, "\xef\xbb\xbf", 3) == 0) {
			p += 3;
			len -= 3;
		}
		rc = parse_line(lz, p, len, why, sizeof(why));
		if (rc) {
			report(err, errlen, "%s:%zu: %s", path, lineno, why);
			break;
		}
	}
	free(line);
	fclose(f);
	if (rc)
		set_truncate(&lz->blocked, used, count);
	set_shrink(&lz->blocked);
	return rc;
}

size_t localzone_blocked_count(const struct localzone *lz)
{
	return lz->blocked.count;
}

void localzone_set_block_action(struct localzone *lz, enum localzone_block_action action)
{
	lz->action = action;
}

/* ---- construction ------------------------------------------------------ */

static void add_zone(struct localzone *lz, const char *apex, size_t index)
{
	uint8_t wire[WIRE_MAX_NAME];
	char why[160];
	size_t len = text_to_wire(apex, strlen(apex), wire, why, sizeof(why));
	uint8_t extra = (uint8_t)index;

	require(len != 0 && index < 256);
	/* A duplicate or too many zones is a bug in the table; -ENOMEM is
	 * left for localzone_new() to notice in the count. */
	int rc = set_add(&lz->zones, wire, len, name_hash(wire, len), &extra, 256);
	require(rc == 0 || rc == -ENOMEM);
}

struct localzone *localzone_new(void)
{
	struct localzone *lz = calloc(1, sizeof(*lz));
	size_t expected = 0;

	if (!lz)
		return NULL;
	lz->action = LOCALZONE_BLOCK_NXDOMAIN;
	/* 256 slots: the ~110 built-in apexes at a load under one half. */
	if (set_init(&lz->zones, 256, 1) || set_init(&lz->blocked, 16, 0) ||
	    set_init(&lz->forward, 16, 0))
		goto fail;
	lz->data = localdata_new();
	if (!lz->data)
		goto fail;
	for (size_t i = 0; i < N_ZONE_DEFS; i++) {
		const struct zone_def *z = &zone_defs[i];
		if (!z->last) {
			add_zone(lz, z->apex, i);
			expected++;
		}
		for (unsigned v = z->first; z->last && v <= z->last; v++) {
			char apex[64];
			snprintf(apex, sizeof(apex), "%u.%s", v, z->apex);
			add_zone(lz, apex, i);
			expected++;
		}
		if (z->ptr) {
			char why[160];
			size_t len =
			    text_to_wire(z->ptr, strlen(z->ptr), lz->ptr[i].name, why, sizeof(why));
			require(len != 0);
			lz->ptr[i].len = (uint8_t)len;
		}
	}
	if (lz->zones.count != expected)
		goto fail; /* out of memory on the way */
	/* A zone inside another would never be found (look-ups stop at the
	 * first apex from the top), so the table must not have any. */
	for (size_t off = 1; off < lz->zones.used; off += 2u + lz->zones.arena[off]) {
		const uint8_t *name = lz->zones.arena + off + 1;
		size_t len = lz->zones.arena[off];
		uint8_t offs[MAX_LABELS];
		int n = label_offsets(name, len, offs);
		require(n > 0);
		for (int i = 1; i < n; i++)
			require(!set_find(&lz->zones, name + offs[i], len - offs[i],
					  name_hash(name + offs[i], len - offs[i])));
	}
	return lz;
fail:
	localzone_free(lz);
	return NULL;
}

void localzone_free(struct localzone *lz)
{
	if (!lz)
		return;
	set_deinit(&lz->zones);
	set_deinit(&lz->blocked);
	set_deinit(&lz->forward);
	localdata_free(lz->data);
	free(lz);
}

/* ---- forward zones, switches, configuration ------------------------------ */

struct localdata *localzone_data(struct localzone *lz)
{
	return lz->data;
}

size_t localzone_data_count(const struct localzone *lz)
{
	return localdata_count(lz->data);
}

int localzone_forward_zone(struct localzone *lz, const char *zone, char *err, size_t errlen)
{
	uint8_t wire[WIRE_MAX_NAME];
	size_t n = strlen(zone), len;

	report(err, errlen, "%s", "");
	if (n == 1 && zone[0] == '.')
		return 0;
	len = n ? text_to_wire(zone, n, wire, err, errlen) : 0;
	if (!len) {
		if (!n)
			report(err, errlen, "empty zone name");
		return -EINVAL;
	}
	int rc = set_add(&lz->forward, wire, len, name_hash(wire, len), NULL, 1 << 16);
	if (rc < 0)
		report(err, errlen, "%s",
		       rc == -ENOMEM ? "out of memory" : "too many forward zones");
	return rc < 0 ? rc : 0;
}

/* The built-in apexes, for an error message: "localhost, invalid, ...". */
static void list_builtin(char *buf, size_t cap)
{
	size_t o = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < N_ZONE_DEFS && o < cap; i++) {
		const struct zone_def *z = &zone_defs[i];
		const char *sep = i ? ", " : "";
		int k = z->last ? snprintf(buf + o, cap - o, "%s{%u..%u}.%s", sep, z->first,
					   z->last, z->apex)
				: snprintf(buf + o, cap - o, "%s%s", sep, z->apex);
		if (k < 0)
			break;
		o += (size_t)k;
	}
}

int localzone_disable_builtin(struct localzone *lz, const char *zone, char *err, size_t errlen)
{
	uint8_t wire[WIRE_MAX_NAME];
	char why[160], list[1024];
	size_t n = strlen(zone);
	size_t len =
	    n && strcmp(zone, ".") != 0 ? text_to_wire(zone, n, wire, why, sizeof(why)) : 0;
	uint32_t ref = len ? set_find(&lz->zones, wire, len, name_hash(wire, len)) : 0;

	if (!ref) {
		list_builtin(list, sizeof(list));
		report(err, errlen, "'%.*s' is not a built-in zone; they are: %s", 255, zone, list);
		return -EINVAL;
	}
	lz->zones.arena[ref + 1 + len] = ZONE_OFF;
	report(err, errlen, "%s", "");
	return 0;
}

struct localzone *localzone_from_config(const struct config *cfg, char *err, size_t errlen)
{
	struct localzone *lz = localzone_new();
	char why[1536];

	if (!lz) {
		report(err, errlen, "out of memory");
		return NULL;
	}
	localzone_set_block_action(lz, (enum localzone_block_action)cfg->block_action);
	for (unsigned i = 0; i < cfg->n_no_builtin; i++) {
		if (localzone_disable_builtin(lz, cfg->no_builtin[i], why, sizeof(why))) {
			report(err, errlen, "--no-builtin-zone %s: %s", cfg->no_builtin[i], why);
			goto fail;
		}
	}
	for (unsigned i = 0; i < cfg->n_zones; i++) {
		if (localzone_forward_zone(lz, cfg->zones[i].name, why, sizeof(why))) {
			report(err, errlen, "--forward-zone %s: %s", cfg->zones[i].name, why);
			goto fail;
		}
	}
	for (unsigned i = 0; i < cfg->n_local_data; i++) {
		if (localdata_add_line(lz->data, cfg->local_data[i], why, sizeof(why))) {
			report(err, errlen, "--local-data '%s': %s", cfg->local_data[i], why);
			goto fail;
		}
	}
	for (unsigned i = 0; i < cfg->n_hosts; i++) {
		if (localdata_load_hosts(lz->data, cfg->hosts[i], why, sizeof(why))) {
			report(err, errlen, "--hosts %s", why);
			goto fail;
		}
	}
	if (cfg->block_file[0] && localzone_load_blocklist(lz, cfg->block_file, why, sizeof(why))) {
		report(err, errlen, "--block %s", why);
		goto fail;
	}
	return lz;
fail:
	localzone_free(lz);
	return NULL;
}

/* ---- replies ----------------------------------------------------------- */

/* Appends to a caller's buffer; once something does not fit, nothing more
 * is written and the reply is abandoned. */
struct writer {
	uint8_t *p;
	size_t cap, len;
	bool full;
};

static void put(struct writer *w, const void *src, size_t n)
{
	if (w->full || w->cap - w->len < n) {
		w->full = true;
		return;
	}
	memcpy(w->p + w->len, src, n);
	w->len += n;
}

static void put16(struct writer *w, unsigned v)
{
	uint8_t b[2] = { (uint8_t)(v >> 8), (uint8_t)v };
	put(w, b, 2);
}

static void put32(struct writer *w, uint32_t v)
{
	put16(w, v >> 16);
	put16(w, v & 0xffff);
}

static const uint8_t localhost_wire[] = "\11localhost"; /* sizeof includes the root */
static const uint8_t nobody_invalid_wire[] = "\6nobody\7invalid";

/* The header (counts filled in by finish()) and the question as sent. */
static void begin(struct writer *w, const struct wire_info *info, unsigned flags)
{
	put16(w, info->id);
	put16(w,
	      WIRE_FLAG_QR | WIRE_FLAG_RA | (info->flags & (WIRE_FLAG_RD | WIRE_FLAG_CD)) | flags);
	put16(w, 1);
	put32(w, 0);
	put16(w, 0);
	put(w, info->q.name, info->q.name_len);
	put16(w, info->q.qtype);
	put16(w, info->q.qclass);
}

/* A record owned by the name at message offset @owner (a compression
 * pointer: every owner is the question name or one of its suffixes). */
static void put_rr(struct writer *w, size_t owner, unsigned type, uint32_t ttl, const void *rdata,
		   size_t rdlen)
{
	put16(w, 0xc000 | (unsigned)owner);
	put16(w, type);
	put16(w, WIRE_CLASS_IN);
	put32(w, ttl);
	put16(w, (unsigned)rdlen);
	put(w, rdata, rdlen);
}

/* RFC 6303 §3: "@ 10800 IN SOA <server> nobody.invalid. 1 3600 1200 604800 10800",
 * with localhost. as the server name. */
static void put_soa(struct writer *w, size_t owner)
{
	put16(w, 0xc000 | (unsigned)owner);
	put16(w, TYPE_SOA);
	put16(w, WIRE_CLASS_IN);
	put32(w, LOCAL_TTL);
	put16(w, sizeof(localhost_wire) + sizeof(nobody_invalid_wire) + 20);
	put(w, localhost_wire, sizeof(localhost_wire));
	put(w, nobody_invalid_wire, sizeof(nobody_invalid_wire));
	put32(w, 1);	     /* serial */
	put32(w, 3600);	     /* refresh */
	put32(w, 1200);	     /* retry */
	put32(w, 604800);    /* expire */
	put32(w, LOCAL_TTL); /* minimum: the negative TTL (RFC 2308 §4) */
}

/* The OPT when the query had one (RFC 6891 §7), mirroring DO (RFC 3225 §3),
 * with an Extended DNS Error when @ede >= 0. */
static void put_opt(struct writer *w, const struct wire_info *info, int ede)
{
	if (!info->has_edns)
		return;
	uint8_t root = 0;
	put(w, &root, 1);
	put16(w, WIRE_TYPE_OPT);
	put16(w, OUR_UDP_PAYLOAD);
	put16(w, 0); /* extended rcode 0, version 0 */
	put16(w, info->edns_ttl & 0x8000);
	put16(w, ede >= 0 ? 6 : 0);
	if (ede >= 0) {
		put16(w, WIRE_OPT_EDE);
		put16(w, 2);
		put16(w, (unsigned)ede);
	}
}

static void finish(struct writer *w, unsigned rcode, unsigned an, unsigned ns, bool opt,
		   size_t *len)
{
	if (w->full) {
		*len = 0;
		return;
	}
	w->p[3] = (uint8_t)((w->p[3] & 0xf0) | rcode);
	wire_write16(w->p + 6, (uint16_t)an);
	wire_write16(w->p + 8, (uint16_t)ns);
	wire_write16(w->p + 10, opt ? 1 : 0);
	*len = w->len;
}

/* Is @name (@len bytes) @other or one of its ancestors?  Both lowercased. */
static bool ancestor_or_self(const uint8_t *name, size_t len, const struct wire_name *other)
{
	for (size_t p = 0; p < other->len; p += other->name[p] + 1u) {
		if (other->len - p == len)
			return memcmp(other->name + p, name, len) == 0;
		if (other->name[p] == 0)
			break;
	}
	return false;
}

/* The answer from zone @zi, whose apex starts @apex_off bytes into the
 * (lowercased) question name @name. */
static void answer_local(const struct localzone *lz, size_t zi, const struct wire_info *info,
			 const uint8_t *name, size_t apex_off, struct writer *w, size_t *len)
{
	const struct zone_def *z = &zone_defs[zi];
	const struct wire_name *ptr = &lz->ptr[zi];
	size_t nlen = info->q.name_len;
	uint16_t t = info->q.qtype;
	bool any = t == TYPE_ANY, apex = apex_off == 0;
	bool ptr_node = ptr->len == nlen && memcmp(ptr->name, name, nlen) == 0;
	bool exists = apex || z->kind != ZONE_EMPTY ||
		      (ptr->len && ancestor_or_self(name, nlen, ptr)) ||
		      localdata_exists(lz->data, name, nlen);
	unsigned an = 0, ns = 0;

	begin(w, info, WIRE_FLAG_AA);
	if (exists && z->kind == ZONE_LOCALHOST) {
		static const uint8_t v4[4] = { 127, 0, 0, 1 }, v6[16] = { [15] = 1 };
		if (t == TYPE_A || any) {
			put_rr(w, PTR_TO_QNAME, TYPE_A, LOCAL_TTL, v4, sizeof(v4));
			an++;
		}
		if (t == TYPE_AAAA || any) {
			put_rr(w, PTR_TO_QNAME, TYPE_AAAA, LOCAL_TTL, v6, sizeof(v6));
			an++;
		}
	}
	if (ptr_node && (t == TYPE_PTR || any)) {
		put_rr(w, PTR_TO_QNAME, TYPE_PTR, LOCAL_TTL, localhost_wire,
		       sizeof(localhost_wire));
		an++;
	}
	if (apex && (t == TYPE_SOA || any)) {
		put_soa(w, PTR_TO_QNAME);
		an++;
	}
	if (apex && (t == TYPE_NS || any)) {
		put_rr(w, PTR_TO_QNAME, TYPE_NS, LOCAL_TTL, localhost_wire, sizeof(localhost_wire));
		an++;
	}
	if (!an) {
		/* NXDOMAIN or NODATA: the SOA makes it cacheable (RFC 2308 §3). */
		put_soa(w, WIRE_HEADER_LEN + apex_off);
		ns++;
	}
	put_opt(w, info, WIRE_EDE_NONE);
	finish(w, exists ? WIRE_RCODE_NOERROR : WIRE_RCODE_NXDOMAIN, an, ns, info->has_edns, len);
}

static void answer_blocked(const struct localzone *lz, const struct wire_info *info,
			   struct writer *w, size_t *len)
{
	uint16_t t = info->q.qtype;
	bool any = t == TYPE_ANY;
	unsigned rcode = WIRE_RCODE_NOERROR, an = 0;

	/* No AA: this is policy, not zone data.  No SOA either: a negative
	 * answer without one is not cached (RFC 2308 §5), so unblocking a
	 * name takes effect at once. */
	begin(w, info, 0);
	switch (lz->action) {
	case LOCALZONE_BLOCK_NXDOMAIN:
		rcode = WIRE_RCODE_NXDOMAIN;
		break;
	case LOCALZONE_BLOCK_REFUSED:
		rcode = WIRE_RCODE_REFUSED;
		break;
	case LOCALZONE_BLOCK_NULL: {
		static const uint8_t v4[4], v6[16];
		if (t == TYPE_A || any) {
			put_rr(w, PTR_TO_QNAME, TYPE_A, BLOCK_TTL, v4, sizeof(v4));
			an++;
		}
		if (t == TYPE_AAAA || any) {
			put_rr(w, PTR_TO_QNAME, TYPE_AAAA, BLOCK_TTL, v6, sizeof(v6));
			an++;
		}
		break;
	}
	}
	put_opt(w, info, LOCALZONE_EDE_BLOCKED);
	finish(w, rcode, an, 0, info->has_edns, len);
}

enum localzone_verdict localzone_lookup(const struct localzone *lz, const struct wire_info *info,
					uint8_t *out, size_t cap, size_t *len)
{
	uint8_t name[WIRE_MAX_NAME], offs[MAX_LABELS];
	size_t nlen = info->q.name_len;
	bool blocked = false;

	*len = 0;
	if (!info->has_question || wire_opcode(info->flags) != 0 ||
	    info->q.qclass != WIRE_CLASS_IN || nlen > WIRE_MAX_NAME)
		return LOCALZONE_FORWARD;
	/* Local data owns its names, whatever zone they lie in. */
	if (localdata_lookup(lz->data, info, out, cap, len) == LOCALDATA_ANSWER)
		return LOCALZONE_DATA;
	for (size_t i = 0; i < nlen; i++)
		name[i] = lower(info->q.name[i]);
	int n = label_offsets(name, nlen, offs);
	uint32_t h = HASH_SEED, hashes[MAX_LABELS];

	if (n < 0)
		return LOCALZONE_FORWARD; /* not from wire_parse(): not ours to judge */
	/* Hash every suffix first and prefetch its slot in the blocklist: with
	 * a large list each probe is a cache miss, and this way the misses of
	 * all the labels overlap instead of following one another (measured
	 * on 1M names: 770 ns down to 450 ns per look-up). */
	for (int i = n; i-- > 0;) {
		h = hash_label(h, name + offs[i], label_size(offs, i, n, nlen));
		hashes[i] = mix(h);
		if (lz->blocked.count)
			__builtin_prefetch(&lz->blocked.slots[hashes[i] & lz->blocked.mask]);
	}
	/* From the top-level label down: a built-in zone found at any depth
	 * wins over a blocked parent (blocking "arpa" must not turn private
	 * reverse look-ups into blocked ones, nor break localhost), unless a
	 * forward zone covers the name: at or above the built-in zone it
	 * drops the zone, below it it takes its own subtree. */
	int zone_at = -1;
	uint8_t zone = 0;
	bool forwarded = false;
	for (int i = n; i-- > 0;) {
		const uint8_t *suffix = name + offs[i];
		size_t slen = nlen - offs[i];
		uint32_t ref = zone_at < 0 ? set_find(&lz->zones, suffix, slen, hashes[i]) : 0;
		if (ref && lz->zones.arena[ref + 1 + slen] != ZONE_OFF) {
			zone_at = i;
			zone = lz->zones.arena[ref + 1 + slen];
			if (!lz->forward.count)
				break;
		}
		if (lz->forward.count && set_find(&lz->forward, suffix, slen, hashes[i]))
			forwarded = true;
		if (!blocked && lz->blocked.count &&
		    set_find(&lz->blocked, suffix, slen, hashes[i]))
			blocked = true;
	}
	if (zone_at >= 0 && !forwarded) {
		struct writer w = { out, cap, 0, false };
		answer_local(lz, zone, info, name, offs[zone_at], &w, len);
		return LOCALZONE_LOCAL;
	}
	if (!blocked)
		return LOCALZONE_FORWARD;
	struct writer w = { out, cap, 0, false };
	answer_blocked(lz, info, &w, len);
	return LOCALZONE_BLOCKED;
}
