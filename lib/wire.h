/*
 * DNS wire format: bounds-checked parsing of whole messages and the few
 * rewrites a forwarder makes (message ID, truncation, OPT removal,
 * synthesized error replies).  Pure functions over caller-owned buffers:
 * nothing here allocates, and no input can make a read go out of bounds.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum {
	WIRE_HEADER_LEN = 12,
	WIRE_MAX_NAME = 255,	/**< RFC 1035 §2.3.4, wire form including the root label */
	WIRE_MAX_MSG = 65535,	/**< largest message a 2-byte length prefix can frame */
	WIRE_UDP_DEFAULT = 512, /**< RFC 1035 §4.2.1 limit for clients without EDNS */
	WIRE_TYPE_OPT = 41,
	WIRE_CLASS_IN = 1,
	WIRE_PAD_BLOCK = 128,	    /**< RFC 8467 §4.1: queries padded to a multiple of this */
	WIRE_PAD_REPLY_BLOCK = 468, /**< RFC 8467 §4.1: and responses to a multiple of this */
};

/** EDNS option codes we act on. */
enum {
	WIRE_OPT_NSID = 3,
	WIRE_OPT_DAU = 5,
	WIRE_OPT_DHU = 6,
	WIRE_OPT_N3U = 7,
	WIRE_OPT_ECS = 8,
	WIRE_OPT_COOKIE = 10,
	WIRE_OPT_KEEPALIVE = 11,
	WIRE_OPT_PADDING = 12,
	WIRE_OPT_EDE = 15,
};

/** Header flag bits (in host order, as returned by wire_flags()). */
enum {
	WIRE_FLAG_QR = 0x8000,
	WIRE_FLAG_AA = 0x0400,
	WIRE_FLAG_TC = 0x0200,
	WIRE_FLAG_RD = 0x0100,
	WIRE_FLAG_RA = 0x0080,
	WIRE_FLAG_AD = 0x0020,
	WIRE_FLAG_CD = 0x0010,
};

enum wire_rcode {
	WIRE_RCODE_NOERROR = 0,
	WIRE_RCODE_FORMERR = 1,
	WIRE_RCODE_SERVFAIL = 2,
	WIRE_RCODE_NXDOMAIN = 3,
	WIRE_RCODE_NOTIMP = 4,
	WIRE_RCODE_REFUSED = 5,
};

/** Extended DNS Error info codes we synthesize (RFC 8914 §4). */
enum wire_ede {
	WIRE_EDE_NONE = -1,
	WIRE_EDE_OTHER = 0,
	WIRE_EDE_NOT_READY = 14,
	WIRE_EDE_PROHIBITED = 18,
	WIRE_EDE_NO_REACHABLE_AUTHORITY = 22,
	WIRE_EDE_NETWORK_ERROR = 23,
};

/** Parse results (negative, below -1000 as project codes). */
enum {
	WIRE_ESHORT = -1001,   /**< no complete header: nothing to answer, drop */
	WIRE_EFORMAT = -1002,  /**< header readable, message malformed: FORMERR */
	WIRE_EQDCOUNT = -1003, /**< QDCOUNT other than 1 (RFC 9619): FORMERR */
};

/** A question: the name in uncompressed wire form, as received (case kept). */
struct wire_question {
	uint8_t name[WIRE_MAX_NAME]; /**< labels, each length-prefixed, ending with 0 */
	uint16_t name_len;	     /**< bytes used in name, including the root label */
	uint16_t qtype;
	uint16_t qclass;
};

/** What wire_parse() learned about a message.  Fields fill in as parsing gets
 * that far, so a failed parse still says whether a header and a question were
 * read (enough to build a FORMERR reply). */
struct wire_info {
	uint16_t id;
	uint16_t flags; /**< header bits 16..31 (QR, opcode, AA, TC, RD, RA, Z, AD, CD, rcode) */
	uint16_t qdcount, ancount, nscount, arcount;
	bool has_header;   /**< the 12-byte header was read */
	bool has_question; /**< @q is valid */
	struct wire_question q;
	size_t question_end;	   /**< offset just past the question */
	bool has_edns;		   /**< the additional section holds an OPT RR */
	uint16_t edns_udp_size;	   /**< the OPT's advertised payload size, as sent */
	uint32_t edns_ttl;	   /**< the OPT's TTL field: extended rcode, version, DO */
	size_t opt_start, opt_end; /**< the OPT RR's position in the message */
	uint16_t opt_index;	   /**< how many additional records precede the OPT */
	int32_t keepalive;	   /**< edns-tcp-keepalive timeout in units of 100 ms
				      *   (RFC 7828), -1 when absent or empty */
	bool has_ecs;		   /**< the OPT carries an EDNS Client Subnet option */
	bool has_padding;	   /**< the OPT carries a Padding option (RFC 7830) */
};

/**
 * Parse and validate a whole message: header, exactly one question, every
 * resource record (names with compression, loops and lengths checked, RDATA
 * within bounds), at most one OPT (RFC 6891 §6.1.1), no trailing bytes.
 * Returns 0, WIRE_ESHORT, WIRE_EQDCOUNT or WIRE_EFORMAT.
 */
int wire_parse(const uint8_t *msg, size_t len, struct wire_info *info);

static inline uint16_t wire_read16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static inline void wire_write16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

/** The opcode from a flags word. */
static inline unsigned wire_opcode(uint16_t flags)
{
	return (flags >> 11) & 0xf;
}

/** The (4-bit header) rcode of a message of at least WIRE_HEADER_LEN bytes. */
static inline unsigned wire_rcode(const uint8_t *msg)
{
	return msg[3] & 0xf;
}

/** Overwrite the message ID of a message of at least WIRE_HEADER_LEN bytes. */
static inline void wire_set_id(uint8_t *msg, uint16_t id)
{
	wire_write16(msg, id);
}

/** Write the text name @text ("home.arpa", "home.arpa." or "." for the
 * root) in wire form, lower case, to @out (WIRE_MAX_NAME bytes).  Returns
 * the length, root label included, or 0 for an empty label or a name or
 * label too long.  No escapes: names with dots inside labels are not
 * written this way. */
size_t wire_name_from_text(const char *text, uint8_t out[WIRE_MAX_NAME]);

/** Is the wire name @name (@name_len bytes, from wire_parse()) @zone or a
 * name below it?  @zone in wire form, lower case (wire_name_from_text());
 * @name is compared without regard to ASCII case, at label boundaries
 * only ("xhome.arpa" is not below "home.arpa"). */
bool wire_name_in_zone(const uint8_t *name, size_t name_len, const uint8_t *zone, size_t zone_len);

/** Questions are equal when type, class and name match, the name compared
 * ASCII-case-insensitively (RFC 4343). */
bool wire_question_equal(const struct wire_question *a, const struct wire_question *b);

/** The largest UDP reply the querier of @query can take: its EDNS payload
 * size (never below 512), or 512 without EDNS (RFC 6891 §6.2.5). */
size_t wire_udp_limit(const struct wire_info *query);

/**
 * Truncate the parsed response @msg in place for a UDP client: keep the
 * header and question, set TC=1, drop every record except a minimal OPT
 * (kept only when @keep_opt and the response has one, without options).
 * Returns the new length (always <= 512 for a valid question).
 */
size_t wire_truncate(uint8_t *msg, size_t len, const struct wire_info *info, bool keep_opt);

/** Remove the OPT RR from the parsed message @msg in place, with any
 * additional records after it; returns the new length.  Used when the
 * client sent no OPT (RFC 6891 §7). */
size_t wire_strip_opt(uint8_t *msg, size_t len, const struct wire_info *info);

/**
 * Build a reply with @rcode to the query described by @query (whose header
 * must have been read): same ID, opcode, RD and CD, QR and RA set, the
 * question when it was parsed, and an OPT when the query had one, carrying
 * an Extended DNS Error @ede unless WIRE_EDE_NONE.  Returns the length
 * written to @out, or 0 if @cap is too small.
 */
size_t wire_make_reply(const struct wire_info *query, enum wire_rcode rcode, int ede, uint8_t *out,
		       size_t cap);

/** How the query sent upstream is built (see wire_make_upstream_query()). */
struct wire_upstream_opts {
	bool pad;	/**< EDNS padding to a multiple of WIRE_PAD_BLOCK (RFC 8467) */
	bool keepalive; /**< ask for the server's idle timeout (RFC 7828) */
};

/**
 * Build the query to send upstream from the parsed client query @msg: the
 * header and question as received, then one OPT of our own (RFC 6891),
 * whether or not the client sent one: the client's DO bit, and of its
 * options only those that identify nothing (NSID, DAU, DHU, N3U) -- no
 * Client Subnet (RFC 7871 §11.1), no cookie; then keepalive and padding as
 * @opts asks.  Any other records of the query are dropped.  Returns the
 * length written to @out, or 0 when @cap is too small or the result would
 * exceed WIRE_MAX_MSG.
 */
size_t wire_make_upstream_query(const uint8_t *msg, const struct wire_info *info,
				const struct wire_upstream_opts *opts, uint8_t *out, size_t cap);

/**
 * Remove the hop-by-hop EDNS options (keepalive, padding) from the OPT of the
 * parsed response @msg in place, cutting any records after the OPT (as
 * wire_strip_opt() does).  Returns the new length.
 */
size_t wire_filter_opt(uint8_t *msg, size_t len, const struct wire_info *info);

/**
 * Add an edns-tcp-keepalive option with @timeout (units of 100 ms) to the
 * OPT of the parsed message @msg (RFC 7828 §3.3.2: a server's idle timeout,
 * for clients on a stream), which must be its last record, as after
 * wire_filter_opt().  @cap is the room at @msg.  Returns the new length, or
 * @len unchanged when there is no OPT, it is not last, or no room.
 */
size_t wire_add_keepalive(uint8_t *msg, size_t len, size_t cap, const struct wire_info *info,
			  uint16_t timeout);

/**
 * Pad the parsed message @msg with an EDNS Padding option (RFC 7830) to a
 * multiple of @block bytes (RFC 8467: 468 for responses).  Its OPT must be
 * the last record; it may have grown since @info was parsed (its RDLENGTH
 * is read again).  @cap is the room at @msg.  Returns the new length, or
 * @len unchanged when there is no OPT, it is not last, or no room.
 */
size_t wire_pad_reply(uint8_t *msg, size_t len, size_t cap, const struct wire_info *info,
		      size_t block);

/**
 * How long the parsed response @msg may be cached (RFC 2308), in seconds:
 * the smallest TTL of its records for a positive answer; for NXDOMAIN and
 * NODATA, the SOA's TTL capped by its MINIMUM field.  Returns 0 with
 * *@ttl set, or -1 when it must not be cached: TC set, an rcode other than
 * NOERROR or NXDOMAIN, or a negative answer without an SOA.
 */
int wire_cache_ttl(const uint8_t *msg, size_t len, const struct wire_info *info, uint32_t *ttl);

/** Rewrite the TTL of every record of the parsed message @msg except the
 * OPT: reduced by @elapsed (not below 0), or set to @fixed when @fixed is
 * non-zero (serve-stale answers carry a TTL of 30, RFC 8767 §4). */
void wire_rewrite_ttls(uint8_t *msg, size_t len, const struct wire_info *info, uint32_t elapsed,
		       uint32_t fixed);

/** Render a wire-form name as text ("www.example." or "." for the root) into
 * @out; never fails, truncates with "..." when @cap is small. */
void wire_name_to_text(const uint8_t *name, size_t name_len, char *out, size_t cap);

/** A type mnemonic ("A", "AAAA", ...) or "TYPEnnn" written into @buf. */
const char *wire_type_to_text(uint16_t type, char *buf, size_t cap);

/** An rcode mnemonic ("NOERROR", "SERVFAIL", ...) or "RCODEnn" into @buf. */
const char *wire_rcode_to_text(unsigned rcode, char *buf, size_t cap);
