/*
 * Local policy: names answered here and never sent upstream.  Three
 * sources, in this order of precedence: the operator's local data
 * (--local-data, --hosts: lib/localdata.h); built-in zones that only mean
 * something on this host or this network (localhost, private reverse
 * zones, .local, ... per RFC 6761, RFC 6303 and their successors), less
 * those switched off or covered by a forward zone; and an operator's
 * blocklist of names, each blocking itself and every name below it.  The
 * decision runs on every query, so it is a few hash look-ups; the reply is
 * written into the caller's buffer.
 *
 * A struct localzone is built once (localzone_from_config(), or
 * localzone_new() then any number of localzone_load_blocklist(),
 * localzone_forward_zone(), localzone_disable_builtin() and additions to
 * localzone_data()) and then only read: localzone_lookup() takes it const
 * and may run in several workers at once.  To reload, build a new one and
 * swap it in.
 */
#pragma once

#include "lib/localdata.h"
#include "lib/wire.h"

#include <stddef.h>
#include <stdint.h>

struct localzone;
struct config;

enum {
	/** Every reply localzone_lookup() writes for a built-in zone or the
	 * blocklist fits in this many bytes, so a buffer this big never fails
	 * for those, and they never need truncation, even for a UDP client
	 * without EDNS (RFC 1035 §4.2.1). */
	LOCALZONE_MAX_REPLY = 512,
	/** Every reply, local data's (LOCALZONE_DATA) included, fits in this
	 * many bytes.  Local data can pass a client's UDP limit: such a reply
	 * is the caller's to truncate (TC=1) as it truncates upstream answers. */
	LOCALZONE_MAX_DATA_REPLY = LOCALDATA_MAX_REPLY,
	/** Most names one localzone holds from blocklists (memory cap). */
	LOCALZONE_MAX_BLOCKED = 1 << 24,
	/** Extended DNS Error "Blocked" (RFC 8914 §4.16), on blocked replies. */
	LOCALZONE_EDE_BLOCKED = 15,
};

/** How a blocked name is answered.  The values are those of the
 * --block-action option (config.block_action): keep them stable. */
enum localzone_block_action {
	LOCALZONE_BLOCK_NXDOMAIN = 0, /**< NXDOMAIN, no records (the default) */
	LOCALZONE_BLOCK_REFUSED = 1,  /**< REFUSED, no records */
	LOCALZONE_BLOCK_NULL = 2,     /**< NOERROR: A 0.0.0.0, AAAA ::, other types
				       *   no data; for software that retries on
				       *   NXDOMAIN but gives up on an unroutable
				       *   address */
};

/** What localzone_lookup() decided for a query. */
enum localzone_verdict {
	LOCALZONE_FORWARD = 0, /**< not ours: send it upstream */
	LOCALZONE_LOCAL,       /**< in a built-in zone: answered here */
	LOCALZONE_BLOCKED,     /**< the name or a parent is blocklisted: answered here */
	LOCALZONE_DATA,	       /**< the name holds local data: answered here (AA=1) */
};

/**
 * A policy with the built-in zones and an empty blocklist, block action
 * LOCALZONE_BLOCK_NXDOMAIN.  NULL when out of memory.  The caller owns it and
 * frees it with localzone_free().
 */
struct localzone *localzone_new(void);

/** Free @lz and everything it holds; NULL is allowed. */
void localzone_free(struct localzone *lz);

/**
 * Everything @cfg asks of local policy, built at once, for start-up and
 * each SIGHUP: the built-in zones less each --no-builtin-zone, every
 * --forward-zone applied (localzone_forward_zone()), the --local-data lines
 * then the --hosts files in the order given (so an explicit PTR wins over
 * a hosts file's), the --block file and --block-action.  Returns the
 * policy, owned by the caller, or NULL with one line in @err naming the
 * option and the cause: "--hosts /etc/hosts:12: bad address '1.2.3'",
 * "--local-data 'a.example CNAME b.example': a.example. has other records
 * already: ...", "--no-builtin-zone foo.: not a built-in zone; they are
 * ...", "--block /x: No such file or directory", "out of memory".
 */
struct localzone *localzone_from_config(const struct config *cfg, char *err, size_t errlen);

/** The local data of @lz, owned by @lz, to add records to while it is
 * being built (lib/localdata.h): they take precedence over built-in zones
 * and the blocklist. */
struct localdata *localzone_data(struct localzone *lz);

/** Number of records of local data (localdata_count()). */
size_t localzone_data_count(const struct localzone *lz);

/**
 * Let the names at and below @zone (text, trailing dot optional, any
 * case) go to the upstreams of a forward zone: built-in zones at or below
 * it no longer answer (its names are LOCALZONE_FORWARD), and when it lies
 * inside a built-in zone only its own subtree is forwarded while the rest
 * of that zone stays local, so the longest match wins.  Local data and
 * the blocklist still apply to its names.  "." is the default route, not
 * a zone that overrides anything: accepted, and changes nothing.  Returns
 * 0, -EINVAL with the reason in @err for a bad name, or -ENOMEM.  Same
 * threading rule as loading.
 */
int localzone_forward_zone(struct localzone *lz, const char *zone, char *err, size_t errlen);

/**
 * Switch off the built-in zone whose apex is @zone (text, trailing dot
 * optional, any case; e.g. "home.arpa", "168.192.in-addr.arpa",
 * "16.172.in-addr.arpa"): its names are no longer answered here (unless
 * local data or the blocklist has them).  Returns 0, or -EINVAL when
 * @zone is not the apex of a built-in zone, with the list of them in
 * @err.  Same threading rule as loading.
 */
int localzone_disable_builtin(struct localzone *lz, const char *zone, char *err, size_t errlen);

/**
 * Add the names of the blocklist file @path to @lz.  A name blocks itself
 * and every name below it ("ads.example" blocks "x.ads.example", not
 * "bads.example").  The file is text, one entry per line:
 *  - a domain name, case-insensitive, with or without the trailing dot;
 *  - a hosts-file line: "0.0.0.0", "127.0.0.1", "::" or "::1" followed by
 *    one or more names, each of which is blocked, except the names hosts
 *    files map for the host itself ("localhost", "broadcasthost",
 *    "ip6-allnodes", ...), which are skipped;
 *  - a hosts-file line for any other address ("255.255.255.255
 *    broadcasthost", "ff02::1 ip6-allnodes" in the usual hosts-file
 *    header) defines a host rather than a block and is skipped whole;
 *    an address with no name after it is an error;
 *  - '#' starts a comment at the beginning of a line or after a space or
 *    tab; blank lines, CRLF line ends and a leading UTF-8 BOM are accepted.
 * Names are letters, digits, '-' and '_' in labels of 1..63 characters,
 * 255 bytes at most in wire form; wildcards and adblock rules are refused
 * with a reason (a name already covers its subdomains).  Duplicates are
 * stored once.
 *
 * Returns 0; -EINVAL for a bad line, with "PATH:LINE: reason" in @err;
 * -EFBIG past LOCALZONE_MAX_BLOCKED names; -ENOMEM; or the -errno of
 * opening or reading the file, with "PATH: reason" in @err.  On any error
 * @lz is left as it was before the call.  @err (@errlen bytes, may be NULL
 * when @errlen is 0) receives one line without a newline.  Not to be
 * called while another thread runs localzone_lookup() on @lz.
 */
int localzone_load_blocklist(struct localzone *lz, const char *path, char *err, size_t errlen);

/** Number of distinct names blocked, over every file loaded. */
size_t localzone_blocked_count(const struct localzone *lz);

/** Choose how blocked names are answered (the default is
 * LOCALZONE_BLOCK_NXDOMAIN).  Same threading rule as loading. */
void localzone_set_block_action(struct localzone *lz, enum localzone_block_action action);

/**
 * Decide what to do with the query described by @info (from a successful
 * wire_parse() of the client's message).  Only standard queries (opcode 0)
 * of class IN are ever answered here; anything else is LOCALZONE_FORWARD.
 * A name that holds local data is answered from it (LOCALZONE_DATA: see
 * localdata_lookup() for that reply, which may be up to
 * LOCALZONE_MAX_DATA_REPLY bytes); a built-in zone does not deny the empty
 * non-terminals above local data (RFC 8020: NODATA, not NXDOMAIN).
 * Built-in zones take precedence over the blocklist: blocking "arpa" does
 * not change how 10.in-addr.arpa is answered.
 *
 * Unless the verdict is LOCALZONE_FORWARD, the whole reply is written to
 * @out (@cap bytes) and its length to *@len: the query's ID, RD and CD; QR
 * and RA; AA for data of a built-in zone; the question as the client sent
 * it (case kept); the answer, and for negative answers from a built-in
 * zone the zone's SOA in the authority section so that clients cache them
 * (RFC 2308); an OPT only if the query had one (RFC 6891 §7), mirroring its
 * DO bit, carrying Extended DNS Error LOCALZONE_EDE_BLOCKED on blocked
 * replies.  When @cap is too small (it never is at LOCALZONE_MAX_REPLY but
 * for LOCALZONE_DATA, and never at LOCALZONE_MAX_DATA_REPLY), the verdict
 * is still returned, nothing past @cap is written and *@len is 0: the
 * query must then fail (SERVFAIL) or be dropped, never be forwarded.
 * For LOCALZONE_FORWARD, *@len is set to 0 and @out is untouched.
 */
enum localzone_verdict localzone_lookup(const struct localzone *lz, const struct wire_info *info,
					uint8_t *out, size_t cap, size_t *len);
