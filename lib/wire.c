/*
 * DNS wire format.  Every read is checked against the message length before
 * it happens; compression pointers must point strictly backwards from the
 * segment being read, which bounds the walk and makes loops impossible.
 */
#include "lib/wire.h"

#include <stdio.h>
#include <string.h>

enum {
	RR_FIXED_LEN = 10,	/* type, class, TTL, RDLENGTH */
	OPT_MIN_LEN = 11,	/* root name + RR_FIXED_LEN */
	OUR_UDP_PAYLOAD = 1232, /* DNS flag day 2020 */
};

/*
 * Read the name at *pos.  With @out, copy its uncompressed wire form there
 * (WIRE_MAX_NAME bytes available).  On success *pos is just past the name as
 * it sits at the original position (after the first pointer, if any).
 */
static int read_name(const uint8_t *msg, size_t len, size_t *pos, uint8_t *out, uint16_t *out_len)
{
	size_t p = *pos, after = 0, total = 0;
	size_t limit = *pos; /* a pointer must target an offset below this */
	size_t end = len;    /* labels must end by here: once compressed, before this name */
	bool jumped = false;

	for (;;) {
		if (p >= len)
			return WIRE_EFORMAT;
		uint8_t label = msg[p];
		if ((label & 0xc0) == 0xc0) {
			if (p + 1 >= len)
				return WIRE_EFORMAT;
			size_t target = (size_t)(label & 0x3f) << 8 | msg[p + 1];
			if (target >= limit || target < WIRE_HEADER_LEN)
				return WIRE_EFORMAT; /* forward, self, or into the header */
			if (!jumped) {
				after = p + 2;
				jumped = true;
				/* What a pointer leads to must lie wholly before this name:
				 * otherwise cutting the message after the name (strip,
				 * truncation) could change it. */
				end = *pos;
			}
			limit = target;
			p = target;
			continue;
		}
		if (label & 0xc0)
			return WIRE_EFORMAT; /* 01 and 10 label types are reserved/obsolete */
		if (total + label + 1u > WIRE_MAX_NAME || p + 1u + label > end)
			return WIRE_EFORMAT;
		if (out)
			memcpy(out + total, msg + p, label + 1u);
		total += label + 1u;
		p += label + 1u;
		if (label == 0)
			break;
	}
	*pos = jumped ? after : p;
	if (out_len)
		*out_len = (uint16_t)total;
	return 0;
}

/* Skip one resource record at *pos; report an OPT found in the additional section. */
static int read_rr(const uint8_t *msg, size_t len, size_t *pos, bool additional,
		   unsigned additional_index, struct wire_info *info)
{
	size_t start = *pos;
	uint16_t name_len = 0;
	int rc = read_name(msg, len, pos, NULL, &name_len);

	if (rc)
		return rc;
	if (len - *pos < RR_FIXED_LEN)
		return WIRE_EFORMAT;
	const uint8_t *fixed = msg + *pos;
	size_t rdlen = wire_read16(fixed + 8);
	*pos += RR_FIXED_LEN;
	if (len - *pos < rdlen)
		return WIRE_EFORMAT;
	*pos += rdlen;
	if (wire_read16(fixed) != WIRE_TYPE_OPT)
		return 0;
	/* RFC 6891 §6.1.1: one OPT at most, owned by the root, in the additional
	 * section.  The owner must be the single root byte, not a pointer to
	 * one: everything that rewrites the OPT relies on its fixed layout. */
	if (!additional || info->has_edns || name_len != 1 || msg[start] != 0)
		return WIRE_EFORMAT;
	info->has_edns = true;
	info->keepalive = -1;
	/* Options must tile the RDATA exactly (RFC 6891 §6.1.2). */
	for (size_t o = 0; o < rdlen;) {
		if (rdlen - o < 4)
			return WIRE_EFORMAT;
		uint16_t code = wire_read16(fixed + RR_FIXED_LEN + o);
		uint16_t olen = wire_read16(fixed + RR_FIXED_LEN + o + 2);
		if (rdlen - o - 4 < olen)
			return WIRE_EFORMAT;
		if (code == WIRE_OPT_KEEPALIVE && olen == 2)
			info->keepalive = wire_read16(fixed + RR_FIXED_LEN + o + 4);
		else if (code == WIRE_OPT_ECS)
			info->has_ecs = true;
		else if (code == WIRE_OPT_PADDING)
			info->has_padding = true;
		o += 4u + olen;
	}
	info->edns_udp_size = wire_read16(fixed + 2);
	info->edns_ttl = (uint32_t)wire_read16(fixed + 4) << 16 | wire_read16(fixed + 6);
	info->opt_start = start;
	info->opt_end = *pos;
	info->opt_index = (uint16_t)additional_index;
	return 0;
}

int wire_parse(const uint8_t *msg, size_t len, struct wire_info *info)
{
	size_t pos = WIRE_HEADER_LEN;
	int rc;

	memset(info, 0, sizeof(*info));
	if (len < WIRE_HEADER_LEN)
		return WIRE_ESHORT;
	info->id = wire_read16(msg);
	info->flags = wire_read16(msg + 2);
	info->qdcount = wire_read16(msg + 4);
	info->ancount = wire_read16(msg + 6);
	info->nscount = wire_read16(msg + 8);
	info->arcount = wire_read16(msg + 10);
	info->has_header = true;
	if (len > WIRE_MAX_MSG)
		return WIRE_EFORMAT;
	if (info->qdcount != 1)
		return WIRE_EQDCOUNT;

	rc = read_name(msg, len, &pos, info->q.name, &info->q.name_len);
	if (rc)
		return rc;
	if (len - pos < 4)
		return WIRE_EFORMAT;
	info->q.qtype = wire_read16(msg + pos);
	info->q.qclass = wire_read16(msg + pos + 2);
	pos += 4;
	info->question_end = pos;
	info->has_question = true;

	unsigned records = (unsigned)info->ancount + info->nscount;
	for (unsigned i = 0; i < records + info->arcount; i++) {
		rc = read_rr(msg, len, &pos, i >= records, i >= records ? i - records : 0, info);
		if (rc)
			return rc;
	}
	return pos == len ? 0 : WIRE_EFORMAT;
}

static inline uint8_t ascii_lower(uint8_t c)
{
	return (c >= 'A' && c <= 'Z') ? (uint8_t)(c + ('a' - 'A')) : c;
}

bool wire_question_equal(const struct wire_question *a, const struct wire_question *b)
{
	if (a->qtype != b->qtype || a->qclass != b->qclass || a->name_len != b->name_len)
		return false;
	/* Label length bytes are below 64, so lowering them is harmless. */
	for (size_t i = 0; i < a->name_len; i++)
		if (ascii_lower(a->name[i]) != ascii_lower(b->name[i]))
			return false;
	return true;
}

size_t wire_udp_limit(const struct wire_info *query)
{
	if (!query->has_edns || query->edns_udp_size < WIRE_UDP_DEFAULT)
		return WIRE_UDP_DEFAULT;
	return query->edns_udp_size;
}

static size_t write_opt(uint8_t *p, uint16_t udp_size, uint32_t ttl, uint16_t rdlen)
{
	p[0] = 0; /* root owner name */
	wire_write16(p + 1, WIRE_TYPE_OPT);
	wire_write16(p + 3, udp_size);
	wire_write16(p + 5, (uint16_t)(ttl >> 16));
	wire_write16(p + 7, (uint16_t)ttl);
	wire_write16(p + 9, rdlen);
	return OPT_MIN_LEN;
}

size_t wire_truncate(uint8_t *msg, size_t len, const struct wire_info *info, bool keep_opt)
{
	size_t out = info->question_end;
	bool opt = keep_opt && info->has_edns;

	if (!info->has_question || out > len)
		return len; /* not a parsed response: leave it alone */
	msg[2] |= WIRE_FLAG_TC >> 8;
	wire_write16(msg + 6, 0);
	wire_write16(msg + 8, 0);
	wire_write16(msg + 10, opt ? 1 : 0);
	if (opt)
		out += write_opt(msg + out, info->edns_udp_size, info->edns_ttl, 0);
	return out;
}

size_t wire_strip_opt(uint8_t *msg, size_t len, const struct wire_info *info)
{
	if (!info->has_edns || info->opt_end > len || info->opt_index >= info->arcount)
		return len;
	/* Cut the message at the OPT.  Records after it could hold compression
	 * pointers to names that moving them would shift; they are additional
	 * data, which a reply may omit.  (Servers put the OPT last anyway.) */
	wire_write16(msg + 10, info->opt_index);
	return info->opt_start;
}

size_t wire_make_reply(const struct wire_info *query, enum wire_rcode rcode, int ede, uint8_t *out,
		       size_t cap)
{
	bool question = query->has_question;
	bool opt = query->has_edns;
	bool with_ede = opt && ede >= 0;
	size_t need = WIRE_HEADER_LEN + (question ? query->q.name_len + 4u : 0) +
		      (opt ? OPT_MIN_LEN + (with_ede ? 6u : 0) : 0);
	size_t pos = WIRE_HEADER_LEN;

	if (!query->has_header || cap < need)
		return 0;
	uint16_t kept = query->flags & (0x7800 | WIRE_FLAG_RD | WIRE_FLAG_CD); /* opcode, RD, CD */
	wire_write16(out, query->id);
	wire_write16(out + 2, (uint16_t)(WIRE_FLAG_QR | WIRE_FLAG_RA | kept | (rcode & 0xf)));
	wire_write16(out + 4, question ? 1 : 0);
	wire_write16(out + 6, 0);
	wire_write16(out + 8, 0);
	wire_write16(out + 10, opt ? 1 : 0);
	if (question) {
		memcpy(out + pos, query->q.name, query->q.name_len);
		pos += query->q.name_len;
		wire_write16(out + pos, query->q.qtype);
		wire_write16(out + pos + 2, query->q.qclass);
		pos += 4;
	}
	if (opt) {
		/* Mirror the DO bit (RFC 3225 §3); version 0, no extended rcode. */
		pos += write_opt(out + pos, OUR_UDP_PAYLOAD, query->edns_ttl & 0x8000,
				 with_ede ? 6 : 0);
		if (with_ede) {
			wire_write16(out + pos, WIRE_OPT_EDE);
			wire_write16(out + pos + 2, 2);
			wire_write16(out + pos + 4, (uint16_t)ede);
			pos += 6;
		}
	}
	return pos;
}

/* Call @fn on each resource record after the question of a parsed message:
 * @rr points at its TYPE field.  Stops early when @fn returns non-zero. */
static int for_each_rr(const uint8_t *msg, size_t len, const struct wire_info *info,
		       int (*fn)(void *arg, const uint8_t *rr, unsigned section), void *arg)
{
	size_t pos = info->question_end;
	unsigned counts[3] = { info->ancount, info->nscount, info->arcount };

	for (unsigned s = 0; s < 3; s++) {
		for (unsigned i = 0; i < counts[s]; i++) {
			if (read_name(msg, len, &pos, NULL, NULL) || len - pos < RR_FIXED_LEN)
				return -1;
			int rc = fn(arg, msg + pos, s);
			if (rc)
				return rc;
			size_t rdlen = wire_read16(msg + pos + 8);
			pos += RR_FIXED_LEN;
			if (len - pos < rdlen)
				return -1;
			pos += rdlen;
		}
	}
	return 0;
}

static inline uint32_t read32(const uint8_t *p)
{
	return (uint32_t)wire_read16(p) << 16 | wire_read16(p + 2);
}

struct ttl_scan {
	uint32_t min;
	bool have;
	uint32_t soa;
	bool have_soa;
	const uint8_t *end;
};

static int scan_ttl(void *arg, const uint8_t *rr, unsigned section)
{
	struct ttl_scan *s = arg;
	uint16_t type = wire_read16(rr);
	uint32_t ttl = read32(rr + 4);

	if (ttl & 0x80000000)
		ttl = 0; /* RFC 2181 §8: a TTL with the top bit set means 0 */
	if (type == WIRE_TYPE_OPT)
		return 0;
	if (!s->have || ttl < s->min)
		s->min = ttl;
	s->have = true;
	if (section == 1 && type == 6 /* SOA */ && !s->have_soa) {
		/* MINIMUM is the last 4 bytes of the RDATA. */
		size_t rdlen = wire_read16(rr + 8);
		if (rdlen >= 22 && rr + RR_FIXED_LEN + rdlen <= s->end) {
			uint32_t minimum = read32(rr + RR_FIXED_LEN + rdlen - 4);
			s->soa = ttl < minimum ? ttl : minimum;
			s->have_soa = true;
		}
	}
	return 0;
}

int wire_cache_ttl(const uint8_t *msg, size_t len, const struct wire_info *info, uint32_t *ttl)
{
	struct ttl_scan s = { .end = msg + len };
	unsigned rcode = info->flags & 0xf;

	if ((info->flags & WIRE_FLAG_TC) || !info->has_question)
		return -1;
	if (rcode != WIRE_RCODE_NOERROR && rcode != WIRE_RCODE_NXDOMAIN)
		return -1;
	if (for_each_rr(msg, len, info, scan_ttl, &s))
		return -1;
	if (rcode == WIRE_RCODE_NXDOMAIN || info->ancount == 0) {
		if (!s.have_soa)
			return -1; /* RFC 2308 §5: no SOA, no negative caching */
		*ttl = s.soa;
		return 0;
	}
	*ttl = s.have ? s.min : 0;
	return 0;
}

struct ttl_rewrite {
	uint32_t elapsed, fixed;
};

static int rewrite_ttl(void *arg, const uint8_t *rr, unsigned section)
{
	struct ttl_rewrite *r = arg;
	uint8_t *p = (uint8_t *)rr + 4; /* the caller owns a writable message */
	uint32_t ttl = read32(p);

	(void)section;
	if (ttl & 0x80000000)
		ttl = 0; /* RFC 2181 §8 */
	if (wire_read16(rr) == WIRE_TYPE_OPT)
		return 0;
	ttl = r->fixed ? r->fixed : ttl > r->elapsed ? ttl - r->elapsed : 0;
	wire_write16(p, (uint16_t)(ttl >> 16));
	wire_write16(p + 2, (uint16_t)ttl);
	return 0;
}

void wire_rewrite_ttls(uint8_t *msg, size_t len, const struct wire_info *info, uint32_t elapsed,
		       uint32_t fixed)
{
	struct ttl_rewrite r = { .elapsed = elapsed, .fixed = fixed };

	for_each_rr(msg, len, info, rewrite_ttl, &r);
}

/* Options a client may send upstream through us: they say nothing about who
 * is asking.  Everything else (Client Subnet, cookies, unknown options) is
 * dropped: privacy by default. */
static bool harmless_option(uint16_t code)
{
	return code == WIRE_OPT_NSID || code == WIRE_OPT_DAU || code == WIRE_OPT_DHU ||
	       code == WIRE_OPT_N3U;
}

size_t wire_make_upstream_query(const uint8_t *msg, const struct wire_info *info,
				const struct wire_upstream_opts *opts, uint8_t *out, size_t cap)
{
	size_t pos = info->question_end;

	if (!info->has_question || cap < pos + OPT_MIN_LEN)
		return 0;
	memcpy(out, msg, pos);
	wire_write16(out + 6, 0);
	wire_write16(out + 8, 0);
	wire_write16(out + 10, 1);
	size_t opt = pos;
	pos += OPT_MIN_LEN;
	if (info->has_edns) {
		const uint8_t *rdata = msg + info->opt_start + OPT_MIN_LEN;
		size_t rdlen = info->opt_end - info->opt_start - OPT_MIN_LEN;
		for (size_t o = 0; o < rdlen;) {
			uint16_t code = wire_read16(rdata + o);
			size_t olen = 4u + wire_read16(rdata + o + 2);
			if (harmless_option(code)) {
				if (cap - pos < olen)
					return 0;
				memcpy(out + pos, rdata + o, olen);
				pos += olen;
			}
			o += olen;
		}
	}
	if (opts->keepalive) {
		if (cap - pos < 4)
			return 0;
		wire_write16(out + pos, WIRE_OPT_KEEPALIVE);
		wire_write16(out + pos + 2, 0);
		pos += 4;
	}
	if (opts->pad) {
		size_t pad = (WIRE_PAD_BLOCK - (pos + 4) % WIRE_PAD_BLOCK) % WIRE_PAD_BLOCK;
		if (cap - pos < 4 + pad)
			return 0;
		wire_write16(out + pos, WIRE_OPT_PADDING);
		wire_write16(out + pos + 2, (uint16_t)pad);
		memset(out + pos + 4, 0, pad);
		pos += 4 + pad;
	}
	if (pos > WIRE_MAX_MSG)
		return 0; /* a near-64 KiB query grown past what a length prefix frames */
	/* Version 0; keep only the DO bit of the client's flags. */
	uint32_t ttl = info->has_edns ? (info->edns_ttl & 0x8000) : 0;
	write_opt(out + opt, OUR_UDP_PAYLOAD, ttl, (uint16_t)(pos - opt - OPT_MIN_LEN));
	return pos;
}

size_t wire_filter_opt(uint8_t *msg, size_t len, const struct wire_info *info)
{
	if (!info->has_edns || info->opt_end > len || info->opt_index >= info->arcount)
		return len;
	uint8_t *rdata = msg + info->opt_start + OPT_MIN_LEN;
	size_t rdlen = info->opt_end - info->opt_start - OPT_MIN_LEN, kept = 0;
	for (size_t o = 0; o < rdlen;) {
		uint16_t code = wire_read16(rdata + o);
		size_t olen = 4u + wire_read16(rdata + o + 2);
		if (code != WIRE_OPT_KEEPALIVE && code != WIRE_OPT_PADDING) {
			memmove(rdata + kept, rdata + o, olen);
			kept += olen;
		}
		o += olen;
	}
	wire_write16(rdata - 2, (uint16_t)kept);
	wire_write16(msg + 10, (uint16_t)(info->opt_index + 1)); /* records after the OPT are cut */
	return info->opt_start + OPT_MIN_LEN + kept;
}

size_t wire_add_keepalive(uint8_t *msg, size_t len, size_t cap, const struct wire_info *info,
			  uint16_t timeout)
{
	if (!info->has_edns || info->opt_end != len || len + 6 > cap || len + 6 > 65535)
		return len;
	uint8_t *rdlen = msg + info->opt_start + OPT_MIN_LEN - 2;
	wire_write16(rdlen, (uint16_t)(wire_read16(rdlen) + 6));
	wire_write16(msg + len, WIRE_OPT_KEEPALIVE);
	wire_write16(msg + len + 2, 2);
	wire_write16(msg + len + 4, timeout);
	return len + 6;
}

size_t wire_pad_reply(uint8_t *msg, size_t len, size_t cap, const struct wire_info *info,
		      size_t block)
{
	if (!info->has_edns || info->opt_start + OPT_MIN_LEN > len || block == 0)
		return len;
	uint8_t *rdlen = msg + info->opt_start + OPT_MIN_LEN - 2;
	if (info->opt_start + OPT_MIN_LEN + wire_read16(rdlen) != len)
		return len; /* the OPT is not the last record */
	size_t pad = (block - (len + 4) % block) % block;
	size_t total = len + 4 + pad;
	if (total > cap || total > 65535 || wire_read16(rdlen) + 4 + pad > 65535)
		return len;
	wire_write16(rdlen, (uint16_t)(wire_read16(rdlen) + 4 + pad));
	wire_write16(msg + len, WIRE_OPT_PADDING);
	wire_write16(msg + len + 2, (uint16_t)pad);
	memset(msg + len + 4, 0, pad);
	return total;
}

void wire_name_to_text(const uint8_t *name, size_t name_len, char *out, size_t cap)
{
	size_t o = 0, i = 0;

	if (cap < 5) {
		if (cap)
			out[0] = '\0';
		return;
	}
	if (name_len == 0 || name[0] == 0) {
		snprintf(out, cap, ".");
		return;
	}
	while (i < name_len && name[i] != 0) {
		size_t label = name[i++];
		for (size_t j = 0; j < label && i < name_len; j++, i++) {
			uint8_t c = name[i];
			char esc[5];
			size_t n = 1;
			if (c > 0x20 && c < 0x7f && c != '.' && c != '\\') {
				esc[0] = (char)c;
			} else {
				snprintf(esc, sizeof(esc), "\\%03u", c);
				n = 4;
			}
			if (o + n + 4 >= cap) {
				memcpy(out + o, "...", 4);
				return;
			}
			memcpy(out + o, esc, n);
			o += n;
		}
		out[o++] = '.';
	}
	out[o] = '\0';
}

const char *wire_type_to_text(uint16_t type, char *buf, size_t cap)
{
	static const struct {
		uint16_t type;
		const char *name;
	} types[] = {
		{ 1, "A" },	 { 2, "NS" },	 { 5, "CNAME" },  { 6, "SOA" },	   { 12, "PTR" },
		{ 15, "MX" },	 { 16, "TXT" },	 { 28, "AAAA" },  { 33, "SRV" },   { 35, "NAPTR" },
		{ 41, "OPT" },	 { 43, "DS" },	 { 46, "RRSIG" }, { 47, "NSEC" },  { 48, "DNSKEY" },
		{ 50, "NSEC3" }, { 52, "TLSA" }, { 64, "SVCB" },  { 65, "HTTPS" }, { 255, "ANY" },
		{ 257, "CAA" },
	};
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
		if (types[i].type == type)
			return types[i].name;
	snprintf(buf, cap, "TYPE%u", type);
	return buf;
}

const char *wire_rcode_to_text(unsigned rcode, char *buf, size_t cap)
{
	static const char *const names[] = { "NOERROR",	 "FORMERR", "SERVFAIL",
					     "NXDOMAIN", "NOTIMP",  "REFUSED" };
	if (rcode < sizeof(names) / sizeof(names[0]))
		return names[rcode];
	snprintf(buf, cap, "RCODE%u", rcode);
	return buf;
}

size_t wire_name_from_text(const char *text, uint8_t out[WIRE_MAX_NAME])
{
	size_t len = 0;

	if (text[0] == '.' && text[1] == '\0') {
		out[0] = 0;
		return 1;
	}
	while (*text) {
		size_t label = strcspn(text, ".");
		if (label == 0 || label > 63 || len + 1 + label + 1 > WIRE_MAX_NAME)
			return 0;
		out[len++] = (uint8_t)label;
		for (size_t i = 0; i < label; i++)
			out[len++] = ascii_lower((uint8_t)text[i]);
		text += label;
		if (*text == '.')
			text++;
	}
	if (len == 0)
		return 0;
	out[len++] = 0;
	return len;
}

bool wire_name_in_zone(const uint8_t *name, size_t name_len, const uint8_t *zone, size_t zone_len)
{
	size_t pos = 0;

	if (zone_len > name_len)
		return false;
	/* Walk the labels until the rest is as long as the zone. */
	while (name_len - pos > zone_len) {
		if (name[pos] == 0)
			return false;
		pos += 1u + name[pos];
	}
	if (name_len - pos != zone_len)
		return false;
	for (size_t i = 0; i < zone_len; i++)
		if (ascii_lower(name[pos + i]) != zone[i])
			return false;
	return true;
}
