/*
 * Fuzz target for lib/wire: wire_parse() on arbitrary bytes must never read
 * out of bounds, and whatever it accepts must survive the forwarder's
 * rewrites: a truncated or OPT-stripped copy must parse again with the same
 * question, and a synthesized reply must be a well-formed answer to it.
 * Copies are exact-size heap buffers so that ASan sees any overrun.
 */
#include "tests/fuzz/fuzz.h"

#include "lib/wire.h"

#include <stdbool.h>
#include <string.h>

/* Bytes the OPT RR kept by wire_truncate() occupies. */
enum { OPT_MIN_LEN = 11 };

static uint8_t *dup_exact(const uint8_t *data, size_t size)
{
	uint8_t *p = malloc(size ? size : 1);
	CHECK(p != NULL);
	memcpy(p, data, size);
	return p;
}

static void check_truncate(const uint8_t *data, size_t size, const struct wire_info *info,
			   bool keep_opt)
{
	uint8_t *copy = dup_exact(data, size);
	struct wire_info after;

	size_t len = wire_truncate(copy, size, info, keep_opt);
	CHECK(len <= size);
	CHECK(len <= WIRE_UDP_DEFAULT);
	CHECK(wire_parse(copy, len, &after) == 0);
	CHECK(after.flags & WIRE_FLAG_TC);
	CHECK(after.id == info->id);
	CHECK(after.ancount == 0 && after.nscount == 0);
	CHECK(wire_question_equal(&after.q, &info->q));
	CHECK(after.q.name_len == info->q.name_len);
	CHECK(after.has_edns == (keep_opt && info->has_edns));
	if (after.has_edns) {
		CHECK(after.edns_udp_size == info->edns_udp_size);
		CHECK(after.opt_end - after.opt_start == OPT_MIN_LEN);
	}
	free(copy);
}

/*
 * An independent, deliberately naive reading of the records: each RR's owner
 * name expanded (pointers followed with a hop limit, not wire.c's rule),
 * its type, class, TTL and raw RDATA.  It lets the target check what a
 * rewrite did to the records' meaning, not only that the result parses.
 */
enum { MAX_RRS = 64 };

struct rr {
	uint8_t owner[WIRE_MAX_NAME];
	size_t owner_len;
	const uint8_t *fixed; /* type, class, TTL, RDLENGTH, then RDATA */
	size_t fixed_len;
};

static size_t expand(const uint8_t *msg, size_t len, size_t *pos, uint8_t *out)
{
	size_t p = *pos, n = 0, next = 0;
	unsigned hops = 0;

	while (p < len) {
		uint8_t l = msg[p];
		if ((l & 0xc0) == 0xc0) {
			if (p + 1 >= len || ++hops > 64)
				return 0;
			if (!next)
				next = p + 2;
			p = (size_t)(l & 0x3f) << 8 | msg[p + 1];
			continue;
		}
		if (l > 63 || p + 1 + l > len || n + 1 + l > WIRE_MAX_NAME)
			return 0;
		memcpy(out + n, msg + p, l + 1u);
		n += l + 1u;
		p += l + 1u;
		if (l == 0) {
			*pos = next ? next : p;
			return n;
		}
	}
	return 0;
}

/* The records of a message wire_parse() accepted; -1 when there are too
 * many to compare or the naive reading fails. */
static int walk(const uint8_t *msg, size_t len, struct rr *rrs)
{
	uint8_t scratch[WIRE_MAX_NAME];
	size_t pos = WIRE_HEADER_LEN;
	unsigned count =
	    (unsigned)wire_read16(msg + 6) + wire_read16(msg + 8) + wire_read16(msg + 10);

	if (count > MAX_RRS || !expand(msg, len, &pos, scratch) || len - pos < 4)
		return -1;
	pos += 4;
	for (unsigned i = 0; i < count; i++) {
		rrs[i].owner_len = expand(msg, len, &pos, rrs[i].owner);
		if (!rrs[i].owner_len || len - pos < 10)
			return -1;
		size_t rdlen = wire_read16(msg + pos + 8);
		if (len - pos - 10 < rdlen)
			return -1;
		rrs[i].fixed = msg + pos;
		rrs[i].fixed_len = 10 + rdlen;
		pos += 10 + rdlen;
	}
	return (int)count;
}

static bool same_rr(const struct rr *a, const struct rr *b)
{
	return a->owner_len == b->owner_len && memcmp(a->owner, b->owner, a->owner_len) == 0 &&
	       a->fixed_len == b->fixed_len && memcmp(a->fixed, b->fixed, a->fixed_len) == 0;
}

/* wire_strip_opt() cuts the message at the OPT: the OPT and any additional
 * records after it go, everything before it must keep its meaning. */
static void check_strip(const uint8_t *data, size_t size, const struct wire_info *info)
{
	static struct rr before_rrs[MAX_RRS], after_rrs[MAX_RRS];
	uint8_t *copy = dup_exact(data, size);
	struct wire_info after;
	int n_before = walk(data, size, before_rrs);

	size_t len = wire_strip_opt(copy, size, info);
	if (!info->has_edns) {
		CHECK(len == size);
		CHECK(memcmp(copy, data, size) == 0);
	} else {
		CHECK(info->opt_index < info->arcount);
		CHECK(len == info->opt_start);
		CHECK(wire_parse(copy, len, &after) == 0);
		CHECK(!after.has_edns);
		CHECK(after.arcount == info->opt_index);
		CHECK(after.ancount == info->ancount && after.nscount == info->nscount);
		CHECK(wire_question_equal(&after.q, &info->q));
		int kept = (int)info->ancount + info->nscount + info->opt_index;
		int n_after = walk(copy, len, after_rrs);
		if (n_before > 0) {
			CHECK(n_after == kept);
			CHECK(wire_read16(before_rrs[kept].fixed) == WIRE_TYPE_OPT);
			for (int i = 0; i < kept; i++)
				CHECK(same_rr(&before_rrs[i], &after_rrs[i]));
		}
	}
	free(copy);
}

static void check_reply(const struct wire_info *query, enum wire_rcode rcode, int ede)
{
	uint8_t out[WIRE_HEADER_LEN + WIRE_MAX_NAME + 4 + OPT_MIN_LEN + 6];
	struct wire_info reply;

	size_t len = wire_make_reply(query, rcode, ede, out, sizeof(out));
	if (!query->has_header) {
		CHECK(len == 0);
		return;
	}
	CHECK(len >= WIRE_HEADER_LEN && len <= sizeof(out));
	/* Any smaller buffer must be refused whole, never overrun. */
	uint8_t *tight = malloc(len - 1);
	CHECK(tight != NULL);
	CHECK(wire_make_reply(query, rcode, ede, tight, len - 1) == 0);
	free(tight);

	int rc = wire_parse(out, len, &reply);
	CHECK(reply.id == query->id);
	CHECK(reply.flags & WIRE_FLAG_QR);
	CHECK(wire_rcode(out) == (unsigned)rcode);
	CHECK(wire_opcode(reply.flags) == wire_opcode(query->flags));
	if (query->has_question) {
		CHECK(rc == 0);
		CHECK(wire_question_equal(&reply.q, &query->q));
		CHECK(reply.has_edns == query->has_edns);
		if (reply.has_edns)
			CHECK((reply.edns_ttl & 0x8000) == (query->edns_ttl & 0x8000));
	} else {
		CHECK(rc == WIRE_EQDCOUNT); /* header only, QDCOUNT 0 */
		CHECK(reply.qdcount == 0);
	}
}

static void check_text(const struct wire_question *q)
{
	char big[4 * WIRE_MAX_NAME + 8];
	char buf[16];

	wire_name_to_text(q->name, q->name_len, big, sizeof(big));
	CHECK(memchr(big, '\0', sizeof(big)) != NULL);
	/* Every small capacity: terminated, nothing past it (ASan on the heap). */
	for (size_t cap = 0; cap < 24; cap++) {
		char *p = malloc(cap ? cap : 1);
		CHECK(p != NULL);
		wire_name_to_text(q->name, q->name_len, p, cap);
		if (cap)
			CHECK(memchr(p, '\0', cap) != NULL);
		free(p);
	}
	CHECK(wire_type_to_text(q->qtype, buf, sizeof(buf)) != NULL);
	CHECK(wire_rcode_to_text(q->qtype & 0xf, buf, sizeof(buf)) != NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct wire_info info;
	uint8_t *msg = dup_exact(data, size);
	int rc = wire_parse(msg, size, &info);

	CHECK(rc == 0 || rc == WIRE_ESHORT || rc == WIRE_EFORMAT || rc == WIRE_EQDCOUNT);
	CHECK((rc == WIRE_ESHORT) == (size < WIRE_HEADER_LEN));
	CHECK(info.has_header == (size >= WIRE_HEADER_LEN));
	CHECK(memcmp(msg, data, size) == 0); /* parsing never writes */
	if (info.has_question) {
		CHECK(info.q.name_len >= 1 && info.q.name_len <= WIRE_MAX_NAME);
		CHECK(info.q.name[info.q.name_len - 1] == 0);
		CHECK(info.question_end <= size);
		CHECK(wire_question_equal(&info.q, &info.q));
		check_text(&info.q);
	}
	if (info.has_header) {
		check_reply(&info, WIRE_RCODE_SERVFAIL, WIRE_EDE_NETWORK_ERROR);
		check_reply(&info, WIRE_RCODE_FORMERR, WIRE_EDE_NONE);
	}
	if (rc == 0) {
		CHECK(info.has_question);
		CHECK(wire_udp_limit(&info) >= WIRE_UDP_DEFAULT);
		if (info.has_edns)
			CHECK(info.opt_start >= info.question_end && info.opt_end <= size &&
			      info.opt_end - info.opt_start >= OPT_MIN_LEN);
		check_truncate(msg, size, &info, false);
		check_truncate(msg, size, &info, true);
		check_strip(msg, size, &info);

		uint8_t *copy = dup_exact(msg, size);
		struct wire_info again;
		uint16_t other_id = (uint16_t)(info.id ^ 0xffff);
		wire_set_id(copy, other_id);
		CHECK(wire_parse(copy, size, &again) == 0);
		CHECK(again.id == other_id);
		CHECK(wire_question_equal(&again.q, &info.q));
		free(copy);
	}
	free(msg);
	return 0;
}
