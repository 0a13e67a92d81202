/*
 * Local data.  Names (lowercased wire form) are nodes of one open-addressing
 * hash table; a node's records form a linked list in insertion order, so an
 * answer writes them as they were given.  Every ancestor of a name with
 * records is a node too (an empty non-terminal, without records) whose name
 * points into its descendant's bytes: localzone asks about those so that a
 * built-in zone does not deny them.  Names and RDATA live in one arena.
 */
#include "lib/localdata.h"

#include "lib/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum {
	TYPE_A = 1,
	TYPE_CNAME = 5,
	TYPE_PTR = 12,
	TYPE_MX = 15,
	TYPE_TXT = 16,
	TYPE_AAAA = 28,
	TYPE_SRV = 33,
	TYPE_ANY = 255,
	OUR_UDP_PAYLOAD = 1232, /* as in wire.c and localzone.c */
	RR_FIXED = 12,		/* compressed owner, type, class, TTL, RDLENGTH */
	MAX_RDATA = LOCALDATA_MAX_NAME_BYTES - RR_FIXED,
	MAX_TXT_STRING = 255,
	NONE = UINT32_MAX, /* no node, no record */
	PTR_TO_QNAME = 0xc000 | WIRE_HEADER_LEN,
};

/* A name: its bytes are arena[name .. name + len). */
struct node {
	uint32_t hash;
	uint32_t name;
	uint8_t len;
	uint32_t first, last; /* its records, NONE for an empty non-terminal */
};

struct rec {
	uint32_t next; /* the next record of the same name, or NONE */
	uint32_t rdata;
	uint32_t ttl;
	uint16_t type;
	uint16_t rdlen;
};

struct localdata {
	uint32_t *slots; /* node index + 1; 0 is free.  At most half full. */
	size_t mask;
	struct node *nodes;
	size_t n_nodes, cap_nodes;
	struct rec *recs;
	size_t n_recs, cap_recs;
	uint8_t *arena;
	size_t used, cap;
};

/* One record as parsed, before it is stored. */
struct parsed {
	uint8_t owner[WIRE_MAX_NAME]; /* case kept */
	size_t owner_len;
	uint16_t type;
	uint32_t ttl;
	uint8_t rdata[MAX_RDATA];
	size_t rdlen;
};

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

static inline uint8_t fold(uint8_t c)
{
	return (c >= 'A' && c <= 'Z') ? (uint8_t)(c | 0x20) : c;
}

static bool blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

/* @s (@n bytes) in single quotes for a message, printable and bounded (the
 * text comes from files and command lines, the message goes to a log). */
static const char *shown(const char *s, size_t n, char *buf, size_t cap)
{
	size_t o = 0, keep = n + 2 < cap ? n : cap - 6;

	buf[o++] = '\'';
	for (size_t i = 0; i < keep; i++)
		buf[o++] = (s[i] > 0x20 && s[i] < 0x7f) || s[i] == ' ' ? s[i] : '?';
	if (keep < n)
		for (int i = 0; i < 3; i++)
			buf[o++] = '.';
	buf[o++] = '\'';
	buf[o] = '\0';
	return buf;
}

/* ---- the table ----------------------------------------------------------- */

static uint32_t hash_name(const uint8_t *name, size_t len)
{
	uint64_t h = 0xcbf29ce484222325u;

	for (size_t i = 0; i < len; i++)
		h = (h ^ fold(name[i])) * 0x100000001b3u;
	h ^= h >> 31;
	h *= 0xbf58476d1ce4e5b9u;
	h ^= h >> 29;
	return (uint32_t)h;
}

static bool same_name(const uint8_t *a, const uint8_t *b, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (fold(a[i]) != fold(b[i]))
			return false;
	return true;
}

/* The node of @name (@len bytes, any case), or NONE. */
static uint32_t find(const struct localdata *ld, const uint8_t *name, size_t len, uint32_t hash)
{
	for (size_t i = hash & ld->mask;; i = (i + 1) & ld->mask) {
		uint32_t s = ld->slots[i];
		if (!s)
			return NONE;
		const struct node *n = &ld->nodes[s - 1];
		if (n->hash == hash && n->len == len && same_name(ld->arena + n->name, name, len))
			return s - 1;
	}
}

static void place(struct localdata *ld, uint32_t index)
{
	size_t i = ld->nodes[index].hash & ld->mask;

	while (ld->slots[i])
		i = (i + 1) & ld->mask;
	ld->slots[i] = index + 1;
}

/* Make room for @names more nodes, @recs more records and @bytes more arena
 * bytes, changing nothing else: once it succeeded, adding cannot fail. */
static int reserve(struct localdata *ld, size_t names, size_t recs, size_t bytes)
{
	size_t want = ld->n_nodes + names;

	if ((ld->mask + 1) < want * 2) {
		size_t size = ld->mask + 1;
		while (size < want * 2)
			size *= 2;
		uint32_t *slots = calloc(size, sizeof(*slots));
		if (!slots)
			return -ENOMEM;
		free(ld->slots);
		ld->slots = slots;
		ld->mask = size - 1;
		for (size_t i = 0; i < ld->n_nodes; i++)
			place(ld, (uint32_t)i);
	}
	if (want > ld->cap_nodes) {
		size_t cap = ld->cap_nodes * 2 > want ? ld->cap_nodes * 2 : want;
		struct node *nodes = realloc(ld->nodes, cap * sizeof(*nodes));
		if (!nodes)
			return -ENOMEM;
		ld->nodes = nodes;
		ld->cap_nodes = cap;
	}
	if (ld->n_recs + recs > ld->cap_recs) {
		size_t cap = ld->cap_recs ? ld->cap_recs * 2 : 64;
		struct rec *r = realloc(ld->recs, cap * sizeof(*r));
		if (!r)
			return -ENOMEM;
		ld->recs = r;
		ld->cap_recs = cap;
	}
	if (ld->used + bytes > ld->cap) {
		size_t cap = ld->cap ? ld->cap : 4096;
		while (cap < ld->used + bytes)
			cap *= 2;
		uint8_t *arena = realloc(ld->arena, cap);
		if (!arena)
			return -ENOMEM;
		ld->arena = arena;
		ld->cap = cap;
	}
	return 0;
}

static uint32_t new_node(struct localdata *ld, uint32_t name, size_t len, uint32_t hash)
{
	uint32_t i = (uint32_t)ld->n_nodes++;

	ld->nodes[i] = (struct node){ hash, name, (uint8_t)len, NONE, NONE };
	place(ld, i);
	return i;
}

struct localdata *localdata_new(void)
{
	struct localdata *ld = calloc(1, sizeof(*ld));

	if (!ld)
		return NULL;
	ld->slots = calloc(64, sizeof(*ld->slots));
	if (!ld->slots) {
		free(ld);
		return NULL;
	}
	ld->mask = 63;
	return ld;
}

void localdata_free(struct localdata *ld)
{
	if (!ld)
		return;
	free(ld->slots);
	free(ld->nodes);
	free(ld->recs);
	free(ld->arena);
	free(ld);
}

size_t localdata_count(const struct localdata *ld)
{
	return ld->n_recs;
}

bool localdata_exists(const struct localdata *ld, const uint8_t *name, size_t name_len)
{
	return ld->n_nodes && name_len <= WIRE_MAX_NAME &&
	       find(ld, name, name_len, hash_name(name, name_len)) != NONE;
}

/* ---- adding records -------------------------------------------------------- */

/* Where the name inside a type's RDATA starts, or -1 for RDATA without one. */
static int rdata_name_at(uint16_t type)
{
	switch (type) {
	case TYPE_CNAME:
	case TYPE_PTR:
		return 0;
	case TYPE_MX:
		return 2;
	case TYPE_SRV:
		return 6;
	default:
		return -1;
	}
}

/* Same RDATA: fixed fields to the byte, a name in it whatever its case. */
static bool same_rdata(uint16_t type, const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
	int at = rdata_name_at(type);

	if (alen != blen)
		return false;
	if (at < 0)
		return memcmp(a, b, alen) == 0;
	return memcmp(a, b, (size_t)at) == 0 && same_name(a + at, b + at, alen - (size_t)at);
}

/* Add @p unless held.  0 when added or already held, else an error with
 * the reason in @why and nothing changed. */
static int add_parsed(struct localdata *ld, const struct parsed *p, char *why, size_t whylen)
{
	uint32_t hash = hash_name(p->owner, p->owner_len);
	uint32_t ni = find(ld, p->owner, p->owner_len, hash);
	size_t bytes = RR_FIXED + p->rdlen, names = 0;
	uint32_t ttl = p->ttl, dup = NONE;
	char owner[100]; /* long names are cut: the reason must fit a message */

	wire_name_to_text(p->owner, p->owner_len, owner, sizeof(owner));
	for (uint32_t r = ni == NONE ? NONE : ld->nodes[ni].first; r != NONE;
	     r = ld->recs[r].next) {
		const struct rec *rec = &ld->recs[r];
		bool cname = rec->type == TYPE_CNAME, new_cname = p->type == TYPE_CNAME;
		if (rec->type == p->type &&
		    same_rdata(p->type, ld->arena + rec->rdata, rec->rdlen, p->rdata, p->rdlen)) {
			dup = r;
		} else if (cname || new_cname) {
			report(why, whylen,
			       "%s has %s already: a CNAME shares its name with no other record "
			       "(RFC 1034 §3.6.2)",
			       owner, cname ? "a CNAME" : "other records");
			return -EINVAL;
		}
		if (rec->type == p->type && rec->ttl < ttl)
			ttl = rec->ttl;
		bytes += RR_FIXED + rec->rdlen;
	}
	if (dup == NONE && bytes > LOCALDATA_MAX_NAME_BYTES) {
		report(why, whylen, "the records of %s would take more than %d bytes in an answer",
		       owner, LOCALDATA_MAX_NAME_BYTES);
		return -EFBIG;
	}
	if (dup == NONE && ld->n_recs >= LOCALDATA_MAX_RECORDS) {
		report(why, whylen, "more than %d records", LOCALDATA_MAX_RECORDS);
		return -EFBIG;
	}
	/* The name and each ancestor not known yet (once one is, so are all
	 * of its own ancestors). */
	if (ni == NONE)
		for (size_t off = 0; p->owner[off] != 0; off += p->owner[off] + 1u, names++)
			if (find(ld, p->owner + off, p->owner_len - off,
				 hash_name(p->owner + off, p->owner_len - off)) != NONE)
				break;
	if (ld->n_nodes + names > LOCALDATA_MAX_NAMES) {
		report(why, whylen, "more than %d names", LOCALDATA_MAX_NAMES);
		return -EFBIG;
	}
	if (ld->used + p->owner_len + p->rdlen > UINT32_MAX) {
		report(why, whylen, "more than 4 GiB of names and data");
		return -EFBIG;
	}
	if (reserve(ld, names, dup == NONE, (names ? p->owner_len : 0) + p->rdlen)) {
		report(why, whylen, "out of memory");
		return -ENOMEM;
	}
	/* Committed: the RRset's TTL is its smallest. */
	for (uint32_t r = ni == NONE ? NONE : ld->nodes[ni].first; r != NONE; r = ld->recs[r].next)
		if (ld->recs[r].type == p->type)
			ld->recs[r].ttl = ttl;
	if (dup != NONE)
		return 0;
	if (ni == NONE) {
		uint32_t name = (uint32_t)ld->used;
		for (size_t i = 0; i < p->owner_len; i++)
			ld->arena[ld->used++] = fold(p->owner[i]);
		ni = new_node(ld, name, p->owner_len, hash);
		size_t off = p->owner[0] + 1u;
		for (size_t k = 1; k < names; k++, off += p->owner[off] + 1u)
			new_node(ld, name + (uint32_t)off, p->owner_len - off,
				 hash_name(p->owner + off, p->owner_len - off));
	}
	uint32_t ri = (uint32_t)ld->n_recs++;
	struct rec *rec = &ld->recs[ri];
	*rec = (struct rec){ NONE, (uint32_t)ld->used, ttl, p->type, (uint16_t)p->rdlen };
	memcpy(ld->arena + ld->used, p->rdata, p->rdlen);
	ld->used += p->rdlen;
	struct node *n = &ld->nodes[ni];
	if (n->last == NONE)
		n->first = ri;
	else
		ld->recs[n->last].next = ri;
	n->last = ri;
	return 0;
}

/* ---- parsing --------------------------------------------------------------- */

static bool host_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '_';
}

/*
 * The text name @s (@n bytes, trailing dot optional, absolute) in wire form
 * into @out, case kept; its length, or 0 with a reason in @why.  "." is the
 * root only where @root_ok.
 */
static size_t parse_name(const char *s, size_t n, bool root_ok, uint8_t *out, char *why,
			 size_t whylen)
{
	char q[96];
	size_t len_at = 0, pos = 1;

	if (n == 1 && s[0] == '.') {
		if (root_ok) {
			out[0] = 0;
			return 1;
		}
		report(why, whylen, "bad name '.': the root is not allowed here");
		return 0;
	}
	if (n && s[n - 1] == '.')
		n--;
	if (n == 0 || n + 2 > WIRE_MAX_NAME) {
		report(why, whylen, "bad name %s: %s", shown(s, n, q, sizeof(q)),
		       n ? "longer than 255 bytes" : "empty");
		return 0;
	}
	for (size_t i = 0; i <= n; i++) {
		char c = i < n ? s[i] : '.';
		if (c != '.' && host_char(c)) {
			out[pos++] = (uint8_t)c;
			continue;
		}
		if (c != '.') {
			report(why, whylen, "bad name %s: %s", shown(s, n, q, sizeof(q)),
			       c == '*' ? "wildcards are not supported" : "invalid character");
			return 0;
		}
		size_t label = pos - len_at - 1;
		if (label == 0 || label > 63) {
			report(why, whylen, "bad name %s: %s", shown(s, n, q, sizeof(q)),
			       label ? "label longer than 63 characters" : "empty label");
			return 0;
		}
		out[len_at] = (uint8_t)label;
		len_at = pos++;
	}
	out[len_at] = 0;
	return pos;
}

/* The first byte from @s on that is not (@blanks: that is) blank, or @end. */
static const char *skip(const char *s, const char *end, bool blanks)
{
	while (s < end && blank(*s) == blanks)
		s++;
	return s;
}

/* The next blank-separated token of [*p, end), or false at the end. */
static bool token(const char **p, const char *end, const char **tok, size_t *n)
{
	*tok = skip(*p, end, true);
	*p = skip(*tok, end, false);
	*n = (size_t)(*p - *tok);
	return *n > 0;
}

static bool token_is(const char *tok, size_t n, const char *word)
{
	return strlen(word) == n && strncasecmp(tok, word, n) == 0;
}

/* A decimal number of at most @max; false when @tok is anything else. */
static bool number(const char *tok, size_t n, uint64_t max, uint64_t *v)
{
	*v = 0;
	if (n == 0 || n > 12)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (tok[i] < '0' || tok[i] > '9')
			return false;
		*v = *v * 10 + (uint64_t)(tok[i] - '0');
	}
	return *v <= max;
}

static const char SUPPORTED[] = "A, AAAA, CNAME, TXT, PTR, MX or SRV";

/* The type @tok names, or 0 with the reason. */
static uint16_t parse_type(const char *tok, size_t n, char *why, size_t whylen)
{
	static const struct {
		const char *name;
		uint16_t type;
	} types[] = {
		{ "A", TYPE_A },     { "AAAA", TYPE_AAAA }, { "CNAME", TYPE_CNAME },
		{ "TXT", TYPE_TXT }, { "PTR", TYPE_PTR },   { "MX", TYPE_MX },
		{ "SRV", TYPE_SRV },
	};
	/* Types a zone file may hold that local data does not serve. */
	static const char *const other[] = {
		"NS",	   "SOA",    "HTTPS", "SVCB",  "CAA",	"DS",	      "DNSKEY",
		"RRSIG",   "NSEC",   "NSEC3", "TLSA",  "SSHFP", "NAPTR",      "HINFO",
		"DNAME",   "LOC",    "SPF",   "OPT",   "ANY",	"URI",	      "CDS",
		"CDNSKEY", "ZONEMD", "RP",    "AFSDB", "CERT",	"OPENPGPKEY",
	};
	char q[64];

	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
		if (token_is(tok, n, types[i].name))
			return types[i].type;
	bool known = n > 4 && strncasecmp(tok, "TYPE", 4) == 0;
	for (size_t i = 0; i < sizeof(other) / sizeof(other[0]); i++)
		known = known || token_is(tok, n, other[i]);
	if (known)
		report(why, whylen, "type %s is not served as local data (only %s)",
		       shown(tok, n, q, sizeof(q)), SUPPORTED);
	else
		report(why, whylen, "unknown type %s (expected %s)", shown(tok, n, q, sizeof(q)),
		       SUPPORTED);
	return 0;
}

/* TXT: one or more quoted character-strings, with zone-file escapes (\X for
 * the character X, \DDD for the byte DDD). */
static int parse_txt(const char *s, const char *end, struct parsed *p, char *why, size_t whylen)
{
	s = skip(s, end, true);
	if (s == end || *s != '"') {
		report(why, whylen, "TXT needs quoted strings, as in TXT \"some text\"");
		return -EINVAL;
	}
	while (s < end) {
		if (*s != '"') {
			char q[64];
			report(why, whylen, "TXT: %s is not a quoted string",
			       shown(s, (size_t)(end - s), q, sizeof(q)));
			return -EINVAL;
		}
		size_t len_at = p->rdlen++, n = 0;
		for (s++;; s++) {
			if (s == end) {
				report(why, whylen, "TXT: a quoted string is not closed");
				return -EINVAL;
			}
			if (*s == '"')
				break;
			uint8_t c = (uint8_t)*s;
			if (c == '\\') {
				if (++s == end) {
					report(why, whylen, "TXT: a quoted string is not closed");
					return -EINVAL;
				}
				c = (uint8_t)*s;
				if (c >= '0' && c <= '9') {
					uint64_t v;
					if (end - s < 3 || !number(s, 3, 255, &v)) {
						report(
						    why, whylen,
						    "TXT: bad escape (\\DDD is a byte, 000-255)");
						return -EINVAL;
					}
					c = (uint8_t)v;
					s += 2;
				}
			}
			if (n == MAX_TXT_STRING || p->rdlen == MAX_RDATA) {
				if (n == MAX_TXT_STRING)
					report(why, whylen, "TXT: a string is longer than %d bytes",
					       MAX_TXT_STRING);
				else
					report(why, whylen, "TXT: more than %d bytes", MAX_RDATA);
				return -EINVAL;
			}
			p->rdata[p->rdlen++] = c;
			n++;
		}
		p->rdata[len_at] = (uint8_t)n;
		s = skip(s + 1, end, true);
		if (s < end && p->rdlen == MAX_RDATA) {
			report(why, whylen, "TXT: more than %d bytes", MAX_RDATA);
			return -EINVAL;
		}
	}
	return 0;
}

/* The VALUE of @p->type from [s, end). */
static int parse_value(const char *s, const char *end, struct parsed *p, char *why, size_t whylen)
{
	const char *tok;
	size_t n;
	char q[96], buf[16];
	uint64_t v;
	int fields = p->type == TYPE_MX ? 1 : p->type == TYPE_SRV ? 3 : 0;

	if (p->type == TYPE_TXT)
		return parse_txt(s, end, p, why, whylen);
	const char *t = wire_type_to_text(p->type, buf, sizeof(buf));
	for (int i = 0; i < fields; i++) {
		if (!token(&s, end, &tok, &n) || !number(tok, n, 65535, &v)) {
			report(why, whylen, "%s needs %s", t,
			       p->type == TYPE_MX ? "PREFERENCE NAME (0-65535)"
						  : "PRIORITY WEIGHT PORT TARGET (0-65535)");
			return -EINVAL;
		}
		wire_write16(p->rdata + p->rdlen, (uint16_t)v);
		p->rdlen += 2;
	}
	if (!token(&s, end, &tok, &n)) {
		report(why, whylen, "%s needs a value", t);
		return -EINVAL;
	}
	if (p->type == TYPE_A || p->type == TYPE_AAAA) {
		char text[INET6_ADDRSTRLEN + 1];
		int af = p->type == TYPE_A ? AF_INET : AF_INET6;
		bool ok = n < sizeof(text);
		if (ok) {
			memcpy(text, tok, n);
			text[n] = '\0';
			ok = inet_pton(af, text, p->rdata) == 1;
		}
		if (!ok) {
			report(why, whylen, "bad address %s for %s", shown(tok, n, q, sizeof(q)),
			       t);
			return -EINVAL;
		}
		p->rdlen = af == AF_INET ? 4 : 16;
	} else {
		size_t len = parse_name(tok, n, p->type == TYPE_MX || p->type == TYPE_SRV,
					p->rdata + p->rdlen, why, whylen);
		if (!len)
			return -EINVAL;
		p->rdlen += len;
		if (p->type == TYPE_CNAME && len == p->owner_len &&
		    same_name(p->rdata, p->owner, len)) {
			report(why, whylen, "CNAME to its own name");
			return -EINVAL;
		}
	}
	if (token(&s, end, &tok, &n)) {
		report(why, whylen, "unexpected %s after the value",
		       shown(tok, (size_t)(end - tok), q, sizeof(q)));
		return -EINVAL;
	}
	return 0;
}

/* "NAME [TTL] [IN] TYPE VALUE" (IN may also come first) into @p. */
static int parse_line(const char *line, struct parsed *p, char *why, size_t whylen)
{
	const char *s = line, *end = line + strlen(line), *tok;
	size_t n;
	bool have_ttl = false, have_class = false;
	uint64_t v;
	char q[64];

	p->rdlen = 0;
	p->ttl = LOCALDATA_DEFAULT_TTL;
	if (!token(&s, end, &tok, &n)) {
		report(why, whylen, "empty: expected NAME [TTL] TYPE VALUE");
		return -EINVAL;
	}
	p->owner_len = parse_name(tok, n, false, p->owner, why, whylen);
	if (!p->owner_len)
		return -EINVAL;
	for (;;) {
		if (!token(&s, end, &tok, &n)) {
			report(why, whylen, "no type: expected NAME [TTL] TYPE VALUE");
			return -EINVAL;
		}
		if (!have_ttl && tok[0] >= '0' && tok[0] <= '9') {
			if (!number(tok, n, LOCALDATA_MAX_TTL, &v)) {
				bool digits = strspn(tok, "0123456789") >= n;
				report(why, whylen, "%s %s%s (seconds, 0-%d)",
				       digits ? "TTL" : "bad TTL", shown(tok, n, q, sizeof(q)),
				       digits ? " out of range" : "", LOCALDATA_MAX_TTL);
				return -EINVAL;
			}
			p->ttl = (uint32_t)v;
			have_ttl = true;
		} else if (!have_class && token_is(tok, n, "IN")) {
			have_class = true;
		} else if (!have_class && (token_is(tok, n, "CH") || token_is(tok, n, "HS") ||
					   token_is(tok, n, "CS") || token_is(tok, n, "CHAOS"))) {
			report(why, whylen, "class %s: local data is of class IN only",
			       shown(tok, n, q, sizeof(q)));
			return -EINVAL;
		} else {
			break;
		}
	}
	p->type = parse_type(tok, n, why, whylen);
	if (!p->type)
		return -EINVAL;
	return parse_value(s, end, p, why, whylen);
}

int localdata_check_line(const char *line, char *err, size_t errlen)
{
	struct parsed p;
	int rc = parse_line(line, &p, err, errlen);

	if (!rc)
		report(err, errlen, "%s", "");
	return rc;
}

int localdata_add_line(struct localdata *ld, const char *line, char *err, size_t errlen)
{
	struct parsed p;
	int rc = parse_line(line, &p, err, errlen);

	if (!rc)
		rc = add_parsed(ld, &p, err, errlen);
	if (!rc)
		report(err, errlen, "%s", "");
	return rc;
}

/* ---- hosts files ----------------------------------------------------------- */

/* The reverse name of a 4- or 16-byte address, in wire form. */
static size_t reverse_name(const uint8_t *addr, size_t alen, uint8_t *out)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;

	for (size_t i = alen; i-- > 0;) {
		if (alen == 4) {
			int k = snprintf((char *)out + o + 1, 4, "%u", addr[i]);
			out[o] = (uint8_t)k;
			o += 1 + (size_t)k;
			continue;
		}
		out[o++] = 1;
		out[o++] = (uint8_t)hex[addr[i] & 15];
		out[o++] = 1;
		out[o++] = (uint8_t)hex[addr[i] >> 4];
	}
	const char *tail = alen == 4 ? "\7in-addr\4arpa" : "\3ip6\4arpa";
	size_t tn = strlen(tail) + 1;
	memcpy(out + o, tail, tn);
	return o + tn;
}

/* Does the node of @name hold a record of type @a or @b? */
static bool has_type(const struct localdata *ld, const uint8_t *name, size_t len, uint16_t a,
		     uint16_t b)
{
	uint32_t ni = find(ld, name, len, hash_name(name, len));

	for (uint32_t r = ni == NONE ? NONE : ld->nodes[ni].first; r != NONE; r = ld->recs[r].next)
		if (ld->recs[r].type == a || ld->recs[r].type == b)
			return true;
	return false;
}

static int hosts_line(struct localdata *ld, const char *line, size_t n, char *why, size_t whylen)
{
	const char *s, *end, *tok;
	size_t tn;
	char text[INET6_ADDRSTRLEN + 1], q[96];
	struct parsed p;
	uint8_t first[WIRE_MAX_NAME];
	size_t first_len = 0;

	if (memchr(line, '\0', n)) {
		report(why, whylen, "NUL byte in line");
		return -EINVAL;
	}
	const char *hash = memchr(line, '#', n);
	s = line;
	end = hash ? hash : line + n;
	if (!token(&s, end, &tok, &tn))
		return 0;
	bool ok = tn < sizeof(text);
	if (ok) {
		memcpy(text, tok, tn);
		text[tn] = '\0';
		if (strchr(text, '%') && strchr(text, ':'))
			return 0; /* scoped IPv6: meaningless to anyone else */
		p.type = TYPE_A;
		p.rdlen = 4;
		if (inet_pton(AF_INET, text, p.rdata) != 1) {
			p.type = TYPE_AAAA;
			p.rdlen = 16;
			ok = inet_pton(AF_INET6, text, p.rdata) == 1;
		}
	}
	if (!ok) {
		report(why, whylen, "bad address %s", shown(tok, tn, q, sizeof(q)));
		return -EINVAL;
	}
	p.ttl = LOCALDATA_DEFAULT_TTL;
	const char *names = s;
	/* Every name checked before any is added. */
	while (token(&s, end, &tok, &tn)) {
		size_t l = parse_name(tok, tn, false, p.owner, why, whylen);
		if (!l)
			return -EINVAL;
		if (!first_len) {
			memcpy(first, p.owner, l);
			first_len = l;
		}
	}
	if (!first_len) {
		report(why, whylen, "address %s without a name",
		       shown(text, strlen(text), q, sizeof(q)));
		return -EINVAL;
	}
	for (s = names; token(&s, end, &tok, &tn);) {
		p.owner_len = parse_name(tok, tn, false, p.owner, why, whylen);
		int rc = add_parsed(ld, &p, why, whylen);
		if (rc)
			return rc;
	}
	uint8_t addr[16];
	size_t alen = p.rdlen;
	memcpy(addr, p.rdata, alen);
	p.owner_len = reverse_name(addr, alen, p.owner);
	if (has_type(ld, p.owner, p.owner_len, TYPE_PTR, TYPE_CNAME))
		return 0; /* an earlier line (or --local-data) named this address */
	p.type = TYPE_PTR;
	memcpy(p.rdata, first, first_len);
	p.rdlen = first_len;
	return add_parsed(ld, &p, why, whylen);
}

int localdata_load_hosts_text(struct localdata *ld, const char *label, const char *text, size_t len,
			      char *err, size_t errlen)
{
	char why[512];
	size_t lineno = 0;

	if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0) {
		text += 3;
		len -= 3;
	}
	for (const char *p = text, *end = text + len; p < end;) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		const char *line_end = eol ? eol : end;
		lineno++;
		int rc = hosts_line(ld, p, (size_t)(line_end - p), why, sizeof(why));
		if (rc) {
			report(err, errlen, "%s:%zu: %s", label, lineno, why);
			return rc;
		}
		p = eol ? eol + 1 : end;
	}
	report(err, errlen, "%s", "");
	return 0;
}

int localdata_load_hosts(struct localdata *ld, const char *path, char *err, size_t errlen)
{
	size_t len = 0, cap = 0;
	char *text = NULL;
	int rc = 0;

	FILE *f = fopen(path, "re");
	if (!f) {
		rc = -errno;
		report(err, errlen, "%s: %s", path, strerror(errno));
		return rc;
	}
	/* Read whole, then parsed as text: one parser for files and buffers. */
	while (!rc) {
		if (len == cap) {
			size_t want = cap ? cap * 2 : 65536;
			if (want > LOCALDATA_MAX_HOSTS_FILE + 1)
				want = LOCALDATA_MAX_HOSTS_FILE + 1; /* one more byte tells */
			char *more = cap > LOCALDATA_MAX_HOSTS_FILE ? NULL : realloc(text, want);
			if (!more) {
				rc = cap > LOCALDATA_MAX_HOSTS_FILE ? -EFBIG : -ENOMEM;
				break;
			}
			text = more;
			cap = want;
		}
		errno = 0;
		size_t got = fread(text + len, 1, cap - len, f);
		len += got;
		if (!got && ferror(f))
			rc = errno ? -errno : -EIO;
		else if (!got)
			break;
	}
	fclose(f);
	if (rc == -EFBIG)
		report(err, errlen, "%s: larger than %d MiB", path, LOCALDATA_MAX_HOSTS_FILE >> 20);
	else if (rc)
		report(err, errlen, "%s: %s", path, strerror(-rc));
	else
		rc = localdata_load_hosts_text(ld, path, text ? text : "", len, err, errlen);
	free(text);
	return rc;
}

/* ---- answers --------------------------------------------------------------- */

/* The reply under construction: once something does not fit, nothing more
 * is written and the reply is abandoned. */
struct out {
	uint8_t *buf;
	size_t cap, len;
	bool full;
};

/* @n bytes to write at, or NULL when they do not fit (nothing fits a NULL
 * buffer). */
static uint8_t *grab(struct out *o, size_t n)
{
	if (o->full || !o->buf || o->cap - o->len < n) {
		o->full = true;
		return NULL;
	}
	uint8_t *p = o->buf + o->len;
	o->len += n;
	return p;
}

/* One record owned by the name at message offset @owner; the offset of its
 * RDATA in the message. */
static size_t emit(struct out *o, size_t owner, const struct localdata *ld, const struct rec *r)
{
	uint8_t *p = grab(o, RR_FIXED + r->rdlen);

	if (!p)
		return 0;
	wire_write16(p, (uint16_t)(0xc000 | owner));
	wire_write16(p + 2, r->type);
	wire_write16(p + 4, WIRE_CLASS_IN);
	wire_write16(p + 6, (uint16_t)(r->ttl >> 16));
	wire_write16(p + 8, (uint16_t)r->ttl);
	wire_write16(p + 10, r->rdlen);
	memcpy(p + RR_FIXED, ld->arena + r->rdata, r->rdlen);
	return (size_t)(p - o->buf) + RR_FIXED;
}

/* The CNAME of node @ni, or NONE (a CNAME is alone at its name). */
static uint32_t cname_of(const struct localdata *ld, uint32_t ni)
{
	uint32_t r = ld->nodes[ni].first;
	return r != NONE && ld->recs[r].type == TYPE_CNAME ? r : NONE;
}

enum localdata_result localdata_lookup(const struct localdata *ld, const struct wire_info *info,
				       uint8_t *out, size_t cap, size_t *len)
{
	const struct wire_question *q = &info->q;
	uint32_t ni, chain[LOCALDATA_MAX_CHAIN + 1];
	size_t owner = WIRE_HEADER_LEN;
	unsigned an = 0, hops = 0;

	*len = 0;
	if (!ld->n_recs || !info->has_question || wire_opcode(info->flags) != 0 ||
	    q->qclass != WIRE_CLASS_IN || q->name_len > WIRE_MAX_NAME)
		return LOCALDATA_NONE;
	ni = find(ld, q->name, q->name_len, hash_name(q->name, q->name_len));
	if (ni == NONE || ld->nodes[ni].first == NONE)
		return LOCALDATA_NONE;

	struct out o = { out, cap, 0, false };
	uint8_t *h = grab(&o, WIRE_HEADER_LEN + q->name_len + 4u);
	if (h) {
		memset(h, 0, WIRE_HEADER_LEN);
		wire_write16(h, info->id);
		wire_write16(h + 2, (uint16_t)(WIRE_FLAG_QR | WIRE_FLAG_AA | WIRE_FLAG_RA |
					       (info->flags & (WIRE_FLAG_RD | WIRE_FLAG_CD))));
		wire_write16(h + 4, 1);
		memcpy(h + WIRE_HEADER_LEN, q->name, q->name_len);
		wire_write16(h + WIRE_HEADER_LEN + q->name_len, q->qtype);
		wire_write16(h + WIRE_HEADER_LEN + q->name_len + 2, q->qclass);
	}
	for (;;) {
		uint32_t cn = cname_of(ld, ni);
		chain[hops] = ni;
		if (cn != NONE && hops == LOCALDATA_MAX_CHAIN)
			break; /* the chain ends with the last CNAME written */
		if (cn == NONE || q->qtype == TYPE_CNAME || q->qtype == TYPE_ANY) {
			for (uint32_t r = ld->nodes[ni].first; r != NONE; r = ld->recs[r].next) {
				if (ld->recs[r].type != q->qtype && q->qtype != TYPE_ANY)
					continue;
				emit(&o, owner, ld, &ld->recs[r]);
				an++;
			}
			break;
		}
		/* The target's name is the CNAME's RDATA, now in the message:
		 * the owner of what follows points there. */
		const struct rec *r = &ld->recs[cn];
		owner = emit(&o, owner, ld, r);
		an++;
		hops++;
		ni = find(ld, ld->arena + r->rdata, r->rdlen,
			  hash_name(ld->arena + r->rdata, r->rdlen));
		if (ni == NONE || ld->nodes[ni].first == NONE || o.full)
			break;
		bool seen = false;
		for (unsigned i = 0; i < hops; i++)
			seen = seen || chain[i] == ni;
		if (seen)
			break;
		require(owner < 0x4000); /* the chain is short: a pointer reaches it */
	}
	if (info->has_edns) {
		uint8_t *opt = grab(&o, 11);
		if (opt) {
			memset(opt, 0, 11);
			wire_write16(opt + 1, WIRE_TYPE_OPT);
			wire_write16(opt + 3, OUR_UDP_PAYLOAD);
			wire_write16(opt + 7, (uint16_t)(info->edns_ttl & 0x8000));
		}
	}
	if (o.full)
		return LOCALDATA_ANSWER;
	wire_write16(out + 6, (uint16_t)an);
	wire_write16(out + 10, info->has_edns ? 1 : 0);
	*len = o.len;
	return LOCALDATA_ANSWER;
}
