/*
 * Local data: records the operator gives by hand (--local-data lines in
 * zone-file syntax) or through hosts files (--hosts), answered here with
 * AA=1 and never sent upstream.  A name listed here owns all its types: a
 * type it lacks is NODATA, not a question for anyone else.
 *
 * A struct localdata is built once (localdata_new(), then any number of
 * localdata_add_line() and localdata_load_hosts*()) and then only read:
 * localdata_lookup() and localdata_exists() take it const and may run in
 * several threads at once.  To reload, build a new one.
 */
#pragma once

#include "lib/wire.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct localdata;

enum {
	/** TTL of a --local-data line that gives none, and of hosts records. */
	LOCALDATA_DEFAULT_TTL = 3600,
	/** Largest TTL a line may give (RFC 2181 §8). */
	LOCALDATA_MAX_TTL = 2147483647,
	/** Most records one store holds (-EFBIG beyond): 256 Ki, some 25 MB
	 * at most, ample for a hosts file of every machine of a site. */
	LOCALDATA_MAX_RECORDS = 1 << 18,
	/** Most names, counting the empty non-terminals above the names that
	 * own records ("b.example" above "a.b.example"): -EFBIG beyond. */
	LOCALDATA_MAX_NAMES = 1 << 21,
	/** The records of one name take at most this many bytes in an answer
	 * (12 + RDATA length each; about 1,000 A or 560 AAAA records): a line
	 * that would pass it is refused.  Bounds every reply, below. */
	LOCALDATA_MAX_NAME_BYTES = 16384,
	/** CNAMEs followed for one answer (the query name's included); a
	 * chain that is longer, or loops, ends its answer there. */
	LOCALDATA_MAX_CHAIN = 8,
	/** Largest hosts file localdata_load_hosts() reads (-EFBIG beyond). */
	LOCALDATA_MAX_HOSTS_FILE = 64 << 20,
	/** Every reply localdata_lookup() writes fits in this many bytes, so
	 * a buffer this big never fails: header, question, the CNAME chain,
	 * the records of the last name, an OPT.  Replies past a client's UDP
	 * limit are the caller's to truncate (TC=1), as upstream answers are. */
	LOCALDATA_MAX_REPLY = WIRE_HEADER_LEN + WIRE_MAX_NAME + 4 +
			      LOCALDATA_MAX_CHAIN * (12 + WIRE_MAX_NAME) +
			      LOCALDATA_MAX_NAME_BYTES + 11,
};

/** What localdata_lookup() found. */
enum localdata_result {
	LOCALDATA_NONE = 0, /**< the name holds no local data: nothing written */
	LOCALDATA_ANSWER,   /**< answered (records, or NODATA): the reply is written */
};

/** An empty store; NULL when out of memory.  The caller owns it and frees
 * it with localdata_free(). */
struct localdata *localdata_new(void);

/** Free @ld and everything it holds; NULL is allowed. */
void localdata_free(struct localdata *ld);

/**
 * Add the record of one --local-data line, "NAME [TTL] [IN] TYPE VALUE":
 *  - NAME is absolute, with or without its trailing dot; letters, digits,
 *    '-' and '_' in labels of 1..63 characters, case-insensitive (kept as
 *    written in answers' RDATA, folded for matching);
 *  - TTL in seconds, 0..LOCALDATA_MAX_TTL, LOCALDATA_DEFAULT_TTL if absent
 *    (an IN class may stand before or after it, as in zone files);
 *  - TYPE and VALUE in zone-file syntax, names in VALUE absolute too:
 *      A 192.0.2.1             AAAA 2001:db8::1
 *      CNAME target.example    PTR host.example
 *      MX 10 mail.example      SRV 0 5 5060 sip.example
 *      TXT "one string" "another, with \"quotes\" and \059 escapes"
 *    (TXT strings are quoted, 255 bytes each at most; "." is allowed as
 *    an MX or SRV target: RFC 7505, RFC 2782).
 * A record already held (same name, type and RDATA, names in it compared
 * case-insensitively) is stored once.  Records of one name and type given
 * different TTLs are answered with the smallest (RFC 2181 §5.2).  A CNAME
 * shares its name with no other record, nor another CNAME (RFC 1034
 * §3.6.2), and does not point to its own name.
 *
 * Returns 0; -EINVAL with the reason in @err (the cause alone, without the
 * line: "unknown type 'FOO' (...)", "bad address '1.2.3' for A", "TXT
 * needs quoted strings ...", "TTL 4294967296 out of range (...)", "bad
 * name ..."); -EFBIG past a LOCALDATA_MAX_* bound; -ENOMEM.  On error
 * nothing is added.  @err (@errlen bytes, may be NULL when @errlen is 0)
 * receives one line without a newline, "" on success.  Not to be called
 * while another thread reads @ld.
 */
int localdata_add_line(struct localdata *ld, const char *line, char *err, size_t errlen);

/** Whether localdata_add_line() would accept @line into an empty store:
 * 0 or -EINVAL with the same reasons (for checking options as they are
 * parsed).  Allocates nothing. */
int localdata_check_line(const char *line, char *err, size_t errlen);

/**
 * Add the entries of hosts(5) text @text (@len bytes, need not be
 * NUL-terminated; @label names it in errors, a path for instance): lines
 * of an IPv4 or IPv6 address then one or more names (the canonical name
 * and its aliases), separated by spaces or tabs; '#' starts a comment
 * anywhere; blank lines, CRLF ends and a leading UTF-8 BOM are accepted.
 * Every name gets the line's address as A or AAAA, with
 * LOCALDATA_DEFAULT_TTL; each address gets one PTR, to the first name of
 * the first line that has it, unless its reverse name has a PTR or CNAME
 * already (a --local-data line added before wins).  Lines whose address
 * has a zone index ("fe80::1%eth0") are skipped: no one else on the
 * network can use it.  Names follow localdata_add_line()'s rules and
 * duplicates are stored once.
 *
 * Returns 0; -EINVAL with "LABEL:LINE: reason" in @err ("bad address
 * '1.2.3'", "address '192.0.2.1' without a name", a name's fault, a CNAME
 * conflict); -EFBIG or -ENOMEM likewise.  On error the lines before the
 * bad one (and part of it) may stay added: discard the store.
 */
int localdata_load_hosts_text(struct localdata *ld, const char *label, const char *text, size_t len,
			      char *err, size_t errlen);

/** localdata_load_hosts_text() on the file at @path, read whole (at most
 * LOCALDATA_MAX_HOSTS_FILE bytes); errors are "PATH:LINE: reason", or
 * "PATH: reason" with the -errno of opening or reading it (-EFBIG for a
 * larger file). */
int localdata_load_hosts(struct localdata *ld, const char *path, char *err, size_t errlen);

/** Number of records held (duplicates counted once). */
size_t localdata_count(const struct localdata *ld);

/**
 * Answer the query described by @info (from a successful wire_parse() of
 * the client's message) if its name holds local data.  Only standard
 * queries (opcode 0) of class IN are answered; anything else is
 * LOCALDATA_NONE, as is a name without records of its own (an empty
 * non-terminal is no answer here: see localdata_exists()).
 *
 * For LOCALDATA_ANSWER the whole reply is written to @out (@cap bytes) and
 * its length to *@len: the query's ID, RD and CD; QR, RA and AA; rcode
 * NOERROR; the question as the client sent it (case kept); the records of
 * the name of the type asked (every type for ANY).  A CNAME is followed
 * within local data (RFC 1034 §4.3.2): the answer holds it and the records
 * of its target, up to LOCALDATA_MAX_CHAIN CNAMEs; a chain that leaves
 * local data, loops or runs longer ends with the last CNAME written (the
 * client may ask on from there).  A name without the type asked gets
 * NODATA: NOERROR, an empty answer, and no SOA in the authority section.
 * Local data is no zone, so an SOA would have to be invented; without one
 * the negative answer is not cached downstream (RFC 2308 §5), so an edit
 * of the hosts file takes effect on SIGHUP rather than after a negative
 * TTL, and asking again costs a look-up in memory.  An OPT is added only
 * if the query had one (RFC 6891 §7), mirroring its DO bit.
 *
 * When the reply does not fit @cap (it always fits LOCALDATA_MAX_REPLY),
 * LOCALDATA_ANSWER is still returned with *@len 0 and nothing past @cap
 * written: the query must then fail, never be forwarded.  For
 * LOCALDATA_NONE *@len is 0 and @out untouched.
 */
enum localdata_result localdata_lookup(const struct localdata *ld, const struct wire_info *info,
				       uint8_t *out, size_t cap, size_t *len);

/** Whether the wire-form name @name (@name_len bytes, any case) owns
 * records or lies above a name that does (an empty non-terminal, RFC 8020:
 * a zone containing it must not deny that it exists). */
bool localdata_exists(const struct localdata *ld, const uint8_t *name, size_t name_len);
