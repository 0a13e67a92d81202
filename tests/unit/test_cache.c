/*
 * Unit tests for lib/cache.  Keys come from parsed queries (so case folding
 * and the DO and CD bits go through cache_key_from() as in the daemon) or,
 * for the bulk tests, are filled in directly.  The byte budget is tested
 * against a shadow model: a plain LRU list that mirrors every store and
 * lookup and must agree with the cache on what is present after each step.
 * Times are plain numbers: the cache never reads a clock.
 */
#include "lib/cache.h"

#include "lib/wire.h"
#include "tests/unit/test_rng.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

enum { T0 = 1000000 }; /* an arbitrary "now", in ms */

#include "tests/unit/msg_builder.h"

/* A query for @name; @edns_ttl < 0 means no OPT, else the OPT's TTL field
 * (0x8000 is DO). */
static void make_query(struct msg *m, const char *name, unsigned type, unsigned cls, unsigned flags,
		       long edns_ttl)
{
	put_header(m, 0x1234, WIRE_FLAG_RD | flags, 1, 0, 0, edns_ttl >= 0 ? 1 : 0);
	put_name(m, name);
	put16(m, type);
	put16(m, cls);
	if (edns_ttl >= 0) {
		put8(m, 0);
		put16(m, WIRE_TYPE_OPT);
		put16(m, 1232);
		put32(m, (uint32_t)edns_ttl);
		put16(m, 0);
	}
}

/* ---- helpers ------------------------------------------------------------ */

/* The cache key of a query for @name, as the daemon computes it. */
static void key_of(struct cache_key *key, const char *name, unsigned type, unsigned cls,
		   unsigned flags, long edns_ttl)
{
	struct msg m;
	struct wire_info info;

	make_query(&m, name, type, cls, flags, edns_ttl);
	assert_int_equal(wire_parse(m.b, m.len, &info), 0);
	memset(key, 0xa5, sizeof(*key)); /* no reliance on a zeroed key */
	cache_key_from(&info, key);
}

static void simple_key(struct cache_key *key, const char *name)
{
	key_of(key, name, 1, WIRE_CLASS_IN, 0, -1);
}

/* A key for bulk tests: "k<i>.test." with a name length that varies with @i. */
static void numbered_key(struct cache_key *key, unsigned i)
{
	char name[64];

	snprintf(name, sizeof(name), "k%u.%.*s.test.", i, (int)(i % 13) + 1, "abcdefghijklm");
	key_of(key, name, 1 + i % 3, WIRE_CLASS_IN, 0, -1);
}

/* A response-like payload of @len bytes whose content depends on @tag. */
static void fill(uint8_t *buf, size_t len, unsigned tag)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = (uint8_t)(tag * 31u + i * 7u);
}

static bool found(struct cache *c, const struct cache_key *key, uint64_t now_ms)
{
	struct cache_hit hit;

	return cache_lookup(c, key, now_ms, false, 0, &hit);
}

/* The bytes one entry of @name_len and @len costs: measured, since the
 * per-entry overhead is private to cache.c. */
static size_t footprint(const struct cache_key *key, size_t len)
{
	struct cache *c = cache_new(1u << 20, 1);
	uint8_t buf[2048];

	assert_non_null(c);
	assert_true(len <= sizeof(buf));
	fill(buf, len, 0);
	assert_int_equal(cache_store(c, key, buf, len, 60, T0), 0);
	size_t bytes = cache_bytes(c);
	cache_free(c);
	assert_true(bytes >= key->name_len + len);
	return bytes;
}

/* ---- store and lookup --------------------------------------------------- */

static void new_and_free(void **state)
{
	(void)state;
	struct cache *c = cache_new(4096, 42);

	assert_non_null(c);
	assert_int_equal(cache_entries(c), 0);
	assert_int_equal(cache_bytes(c), 0);
	struct cache_key key;
	simple_key(&key, "example.");
	assert_false(found(c, &key, T0));
	cache_free(c);
	cache_free(NULL);
}

static void store_and_hit(void **state)
{
	(void)state;
	struct cache *c = cache_new(1u << 20, 7);
	struct cache_key key;
	struct cache_hit hit;
	uint8_t msg[300];

	assert_non_null(c);
	simple_key(&key, "www.example.");
	fill(msg, sizeof(msg), 1);
	assert_int_equal(cache_store(c, &key, msg, sizeof(msg), 300, T0), 0);
	assert_int_equal(cache_entries(c), 1);
	assert_true(cache_bytes(c) >= sizeof(msg) + key.name_len);

	memset(&hit, 0, sizeof(hit));
	assert_true(cache_lookup(c, &key, T0, false, 60, &hit));
	assert_int_equal(hit.len, sizeof(msg));
	assert_memory_equal(hit.msg, msg, sizeof(msg));
	assert_ptr_not_equal(hit.msg, msg); /* a copy */
	assert_int_equal(hit.age_s, 0);
	assert_int_equal(hit.ttl_s, 300);
	assert_false(hit.stale);
	assert_int_equal(hit.hits, 1);

	/* The caller's buffer is not referenced. */
	memset(msg, 0, sizeof(msg));
	uint8_t want[300];
	fill(want, sizeof(want), 1);
	assert_true(cache_lookup(c, &key, T0 + 1999, false, 60, &hit));
	assert_memory_equal(hit.msg, want, sizeof(want));
	assert_int_equal(hit.age_s, 1); /* whole seconds, rounded down */
	assert_int_equal(hit.hits, 2);

	assert_true(cache_lookup(c, &key, T0 + 299999, false, 60, &hit));
	assert_int_equal(hit.age_s, 299);
	assert_int_equal(hit.ttl_s, 300);
	assert_false(hit.stale);
	assert_int_equal(hit.hits, 3);

	/* A clock that went backwards gives age 0, not a huge one. */
	assert_true(cache_lookup(c, &key, T0 - 5000, false, 60, &hit));
	assert_int_equal(hit.age_s, 0);
	assert_int_equal(hit.hits, 4);
	assert_int_equal(cache_entries(c), 1);
	cache_free(c);
}

static void key_ignores_case(void **state)
{
	(void)state;
	struct cache *c = cache_new(1u << 20, 7);
	struct cache_key upper, lower, other;
	struct cache_hit hit;
	uint8_t msg[40];

	assert_non_null(c);
	key_of(&upper, "WWW.Example.", 1, WIRE_CLASS_IN, 0, -1);
	key_of(&lower, "www.example.", 1, WIRE_CLASS_IN, 0, -1);
	key_of(&other, "www.exbmple.", 1, WIRE_CLASS_IN, 0, -1);
	assert_int_equal(upper.name_len, lower.name_len);
	assert_memory_equal(upper.name, lower.name, lower.name_len);
	assert_memory_equal(upper.name, "\3www\7example", 13); /* lowered */
	assert_true(cache_key_hash(c, &upper) == cache_key_hash(c, &lower));

	fill(msg, sizeof(msg), 2);
	assert_int_equal(cache_store(c, &upper, msg, sizeof(msg), 60, T0), 0);
	assert_true(cache_lookup(c, &lower, T0, false, 0, &hit));
	assert_memory_equal(hit.msg, msg, sizeof(msg));
	assert_false(found(c, &other, T0));

	/* Storing under the other spelling replaces, it does not add. */
	assert_int_equal(cache_store(c, &lower, msg, 20, 60, T0), 0);
	assert_int_equal(cache_entries(c), 1);
	assert_true(cache_lookup(c, &upper, T0, false, 0, &hit));
	assert_int_equal(hit.len, 20);
	cache_free(c);
}

static void distinct_keys(void **state)
{
	(void)state;
	struct cache *c = cache_new(1u << 20, 99);
	enum { N = 8 };
	struct cache_key keys[N];
	struct cache_hit hit;

	assert_non_null(c);
	key_of(&keys[0], "example.", 1, WIRE_CLASS_IN, 0, -1);
	key_of(&keys[1], "example.", 28, WIRE_CLASS_IN, 0, -1);		  /* qtype */
	key_of(&keys[2], "example.", 1, 3, 0, -1);			  /* qclass CH */
	key_of(&keys[3], "example.", 1, WIRE_CLASS_IN, 0, 0x8000);	  /* DO */
	key_of(&keys[4], "example.", 1, WIRE_CLASS_IN, WIRE_FLAG_CD, -1); /* CD */
	key_of(&keys[5], "example.", 1, WIRE_CLASS_IN, WIRE_FLAG_CD, 0x8000);
	key_of(&keys[6], "example.com.", 1, WIRE_CLASS_IN, 0, -1);
	key_of(&keys[7], "xample.", 1, WIRE_CLASS_IN, 0, -1);
	assert_int_equal(keys[0].bits, 0);
	assert_int_equal(keys[3].bits, CACHE_KEY_DO);
	assert_int_equal(keys[4].bits, CACHE_KEY_CD);
	assert_int_equal(keys[5].bits, CACHE_KEY_DO | CACHE_KEY_CD);

	/* EDNS without DO, and flags that are not CD, leave the key alone. */
	struct cache_key same;
	key_of(&same, "example.", 1, WIRE_CLASS_IN, WIRE_FLAG_AD, 0);
	assert_int_equal(same.bits, 0);
	assert_true(cache_key_hash(c, &same) == cache_key_hash(c, &keys[0]));

	for (unsigned i = 0; i < N; i++) {
		uint8_t msg[16];
		fill(msg, sizeof(msg), i);
		assert_int_equal(cache_store(c, &keys[i], msg, sizeof(msg), 60, T0), 0);
	}
	assert_int_equal(cache_entries(c), N);
	for (unsigned i = 0; i < N; i++) {
		uint8_t msg[16];
		fill(msg, sizeof(msg), i);
		assert_true(cache_lookup(c, &keys[i], T0, false, 0, &hit));
		assert_int_equal(hit.len, sizeof(msg));
		assert_memory_equal(hit.msg, msg, sizeof(msg));
	}
	assert_true(cache_lookup(c, &same, T0, false, 0, &hit));
	assert_int_equal(hit.msg[0], 0); /* keys[0]'s payload, tag 0 */
	cache_free(c);
}

static void replace_existing(void **state)
{
	(void)state;
	struct cache *c = cache_new(1u << 20, 3);
	struct cache_key key;
	struct cache_hit hit;
	uint8_t a[500], b[100];

	assert_non_null(c);
	simple_key(&key, "replace.example.");
	fill(a, sizeof(a), 1);
	fill(b, sizeof(b), 2);
	assert_int_equal(cache_store(c, &key, a, sizeof(a), 60, T0), 0);
	size_t bytes_a = cache_bytes(c);
	assert_true(cache_lookup(c, &key, T0 + 1000, false, 0, &hit));
	assert_true(cache_lookup(c, &key, T0 + 2000, false, 0, &hit));
	assert_int_equal(hit.hits, 2);

	assert_int_equal(cache_store(c, &key, b, sizeof(b), 10, T0 + 5000), 0);
	assert_int_equal(cache_entries(c), 1);
	assert_int_equal(cache_bytes(c), bytes_a - (sizeof(a) - sizeof(b)));
	assert_true(cache_lookup(c, &key, T0 + 5000, false, 0, &hit));
	assert_int_equal(hit.len, sizeof(b));
	assert_memory_equal(hit.msg, b, sizeof(b));
	assert_int_equal(hit.ttl_s, 10);
	assert_int_equal(hit.age_s, 0); /* counted from the new store */
	assert_int_equal(hit.hits, 1);	/* a new entry */

	/* The new TTL applies: 10 s after the replacement it is expired. */
	assert_false(cache_lookup(c, &key, T0 + 15000, false, 60, &hit));
	cache_free(c);
}

/* ---- expiry and serve-stale --------------------------------------------- */

static void expiry_and_stale_window(void **state)
{
	(void)state;
	struct cache *c = cache_new(1u << 20, 5);
	struct cache_key key;
	struct cache_hit hit;
	uint8_t msg[64];
	const uint32_t ttl = 10, window = 60;

	assert_non_null(c);
	simple_key(&key, "stale.example.");
	fill(msg, sizeof(msg), 3);
	assert_int_equal(cache_store(c, &key, msg, sizeof(msg), ttl, T0), 0);

	/* Fresh up to the last millisecond of the TTL. */
	assert_true(cache_lookup(c, &key, T0 + ttl * 1000 - 1, false, window, &hit));
	assert_false(hit.stale);
	assert_int_equal(hit.age_s, ttl - 1);

	/* At the TTL: expired.  Without stale_ok a miss, but kept. */
	assert_false(cache_lookup(c, &key, T0 + ttl * 1000, false, window, &hit));
	assert_int_equal(cache_entries(c), 1);
	assert_false(cache_lookup(c, &key, T0 + (ttl + 30) * 1000, false, window, &hit));
	assert_int_equal(cache_entries(c), 1);

	/* With stale_ok, within the window: found, marked stale. */
	memset(&hit, 0, sizeof(hit));
	assert_true(cache_lookup(c, &key, T0 + ttl * 1000, true, window, &hit));
	assert_true(hit.stale);
	assert_int_equal(hit.age_s, ttl);
	assert_int_equal(hit.ttl_s, ttl);
	assert_int_equal(hit.len, sizeof(msg));
	assert_memory_equal(hit.msg, msg, sizeof(msg));
	uint64_t last = T0 + (uint64_t)(ttl + window) * 1000 - 1;
	assert_true(cache_lookup(c, &key, last, true, window, &hit));
	assert_true(hit.stale);
	assert_int_equal(hit.age_s, ttl + window - 1);
	assert_int_equal(cache_entries(c), 1);

	/* Past the window: removed, even for a caller that would take stale. */
	assert_false(cache_lookup(c, &key, last + 1, true, window, &hit));
	assert_int_equal(cache_entries(c), 0);
	assert_int_equal(cache_bytes(c), 0);
	assert_false(cache_lookup(c, &key, T0, true, window, &hit)); /* really gone */

	/* A lookup without stale_ok also removes an entry past the window. */
	assert_int_equal(cache_store(c, &key, msg, sizeof(msg), ttl, T0), 0);
	assert_false(cache_lookup(c, &key, T0 + (ttl + window) * 1000, false, window, &hit));
	assert_int_equal(cache_entries(c), 0);
	assert_int_equal(cache_bytes(c), 0);

	/* No stale window: an expired entry goes at once. */
	assert_int_equal(cache_store(c, &key, msg, sizeof(msg), ttl, T0), 0);
	assert_false(cache_lookup(c, &key, T0 + ttl * 1000, true, 0, &hit));
	assert_int_equal(cache_entries(c), 0);
	cache_free(c);
}

static void expired_entry_among_others(void **state)
{
	(void)state;
	struct cache *c = cache_new(1u << 20, 5);
	struct cache_key a, b, d;
	struct cache_hit hit;
	uint8_t msg[32];

	assert_non_null(c);
	simple_key(&a, "a.example.");
	simple_key(&b, "b.example.");
	simple_key(&d, "d.example.");
	fill(msg, sizeof(msg), 4);
	assert_int_equal(cache_store(c, &a, msg, sizeof(msg), 5, T0), 0);
	assert_int_equal(cache_store(c, &b, msg, sizeof(msg), 500, T0), 0);
	assert_int_equal(cache_store(c, &d, msg, sizeof(msg), 5, T0), 0);
	size_t before = cache_bytes(c);

	/* Removing the middle of the LRU list keeps the rest consistent. */
	assert_false(cache_lookup(c, &a, T0 + 100000, true, 30, &hit));
	assert_int_equal(cache_entries(c), 2);
	assert_int_equal(cache_bytes(c), before / 3 * 2);
	assert_true(cache_lookup(c, &b, T0 + 100000, false, 30, &hit));
	assert_false(cache_lookup(c, &d, T0 + 100000, true, 30, &hit));
	assert_int_equal(cache_entries(c), 1);
	assert_true(cache_lookup(c, &b, T0 + 100000, false, 30, &hit));
	assert_int_equal(hit.hits, 2);
	cache_free(c);
}

/* ---- budget and LRU ----------------------------------------------------- */

static void lru_eviction(void **state)
{
	(void)state;
	struct cache_key k[6];
	uint8_t msg[200];

	/* Same-length names, same-length messages: every entry costs @one. */
	for (unsigned i = 0; i < 6; i++) {
		char name[32];
		snprintf(name, sizeof(name), "host%u.example.", i);
		simple_key(&k[i], name);
	}
	size_t one = footprint(&k[0], sizeof(msg));
	struct cache *c = cache_new(3 * one, 11);
	assert_non_null(c);
	fill(msg, sizeof(msg), 5);

	for (unsigned i = 0; i < 3; i++)
		assert_int_equal(cache_store(c, &k[i], msg, sizeof(msg), 60, T0 + i), 0);
	assert_int_equal(cache_entries(c), 3);
	assert_int_equal(cache_bytes(c), 3 * one);

	/* A fourth: the oldest (k0) goes. */
	assert_int_equal(cache_store(c, &k[3], msg, sizeof(msg), 60, T0 + 3), 0);
	assert_int_equal(cache_entries(c), 3);
	assert_int_equal(cache_bytes(c), 3 * one);
	assert_false(found(c, &k[0], T0 + 4));
	/* Now k1 is the oldest; looking it up makes it the most recent. */
	assert_true(found(c, &k[1], T0 + 4));
	/* LRU order, newest first: k1 k3 k2.  A fifth evicts k2, not k1. */
	assert_int_equal(cache_store(c, &k[4], msg, sizeof(msg), 60, T0 + 5), 0);
	assert_int_equal(cache_entries(c), 3);
	assert_false(found(c, &k[2], T0 + 6));
	/* Order: k4 k1 k3.  A sixth evicts k3. */
	assert_int_equal(cache_store(c, &k[5], msg, sizeof(msg), 60, T0 + 6), 0);
	assert_false(found(c, &k[3], T0 + 7));
	assert_true(found(c, &k[1], T0 + 7));
	assert_true(found(c, &k[4], T0 + 7));
	assert_true(found(c, &k[5], T0 + 7));
	assert_int_equal(cache_entries(c), 3);
	cache_free(c);
}

static void large_entry_evicts_several(void **state)
{
	(void)state;
	struct cache_key k[5], big;
	uint8_t msg[100], large[1000];

	for (unsigned i = 0; i < 5; i++) {
		char name[32];
		snprintf(name, sizeof(name), "n%u.example.", i);
		simple_key(&k[i], name);
	}
	simple_key(&big, "nb.example.");
	size_t small = footprint(&k[0], sizeof(msg));
	size_t one_big = footprint(&big, sizeof(large));
	/* Room for the big entry and exactly one small one. */
	struct cache *c = cache_new(one_big + small, 13);
	assert_non_null(c);
	fill(msg, sizeof(msg), 6);
	fill(large, sizeof(large), 7);
	unsigned fit = (unsigned)((one_big + small) / small);
	assert_true(fit >= 5); /* the test assumes all five fit first */
	for (unsigned i = 0; i < 5; i++)
		assert_int_equal(cache_store(c, &k[i], msg, sizeof(msg), 60, T0), 0);
	assert_int_equal(cache_entries(c), 5);

	assert_int_equal(cache_store(c, &big, large, sizeof(large), 60, T0), 0);
	assert_int_equal(cache_entries(c), 2);
	assert_int_equal(cache_bytes(c), one_big + small);
	assert_true(found(c, &k[4], T0)); /* the newest small one survived */
	for (unsigned i = 0; i < 4; i++)
		assert_false(found(c, &k[i], T0));
	assert_true(found(c, &big, T0));
	cache_free(c);
}

static void too_big(void **state)
{
	(void)state;
	struct cache_key key, other;
	static uint8_t huge[70000];
	struct cache_hit hit;

	simple_key(&key, "big.example.");
	simple_key(&other, "small.example.");
	size_t one = footprint(&key, 100);
	struct cache *c = cache_new(one, 17);
	assert_non_null(c);
	fill(huge, sizeof(huge), 8);

	/* Exactly the budget fits. */
	assert_int_equal(cache_store(c, &key, huge, 100, 60, T0), 0);
	assert_int_equal(cache_bytes(c), one);
	/* One byte more than the whole budget cannot be stored, and evicts nothing. */
	assert_int_equal(cache_store(c, &other, huge, 101, 60, T0), -E2BIG);
	assert_int_equal(cache_store(c, &other, huge, 5000, 60, T0), -E2BIG);
	assert_int_equal(cache_entries(c), 1);
	assert_true(cache_lookup(c, &key, T0, false, 0, &hit));
	assert_int_equal(hit.len, 100);
	cache_free(c);

	/* Larger than any DNS message, whatever the budget. */
	c = cache_new(1u << 24, 17);
	assert_non_null(c);
	assert_int_equal(cache_store(c, &key, huge, sizeof(huge), 60, T0), -E2BIG);
	assert_int_equal(cache_entries(c), 0);
	assert_int_equal(cache_bytes(c), 0);
	assert_int_equal(cache_store(c, &key, huge, WIRE_MAX_MSG, 60, T0), 0);
	assert_true(cache_lookup(c, &key, T0, false, 0, &hit));
	assert_int_equal(hit.len, WIRE_MAX_MSG);
	assert_memory_equal(hit.msg, huge, WIRE_MAX_MSG);
	cache_free(c);

	/* A zero budget stores nothing. */
	c = cache_new(0, 17);
	assert_non_null(c);
	assert_int_equal(cache_store(c, &key, huge, 12, 60, T0), -E2BIG);
	assert_int_equal(cache_entries(c), 0);
	cache_free(c);
}

/*
 * Random churn on a small budget: stores of random sizes (some over the
 * whole budget), lookups, expiries.  A shadow LRU list predicts exactly what
 * the cache holds; after every step the byte count, the entry count and the
 * budget are checked, and every few steps each key's presence.
 */
enum { SHADOW_KEYS = 48 };

struct shadow {
	bool present[SHADOW_KEYS];
	size_t size[SHADOW_KEYS];
	uint64_t used[SHADOW_KEYS]; /* LRU clock of the last store or hit */
	size_t bytes, entries;
};

static void shadow_remove(struct shadow *s, unsigned i)
{
	assert_true(s->present[i]);
	s->present[i] = false;
	s->bytes -= s->size[i];
	s->entries--;
}

static int shadow_oldest(const struct shadow *s)
{
	int oldest = -1;

	for (unsigned i = 0; i < SHADOW_KEYS; i++)
		if (s->present[i] && (oldest < 0 || s->used[i] < s->used[oldest]))
			oldest = (int)i;
	return oldest;
}

static void budget_churn(void **state)
{
	(void)state;
	enum { BUDGET = 24 * 1024, STEPS = 20000 };
	struct cache_key keys[SHADOW_KEYS];
	static uint8_t payload[BUDGET + 2048];
	struct shadow s;
	uint64_t clock = 0;
	struct cache_hit hit;

	memset(&s, 0, sizeof(s));
	for (unsigned i = 0; i < SHADOW_KEYS; i++)
		numbered_key(&keys[i], i);
	/* The fixed per-entry cost, beyond name and message. */
	size_t overhead = footprint(&keys[0], 100) - keys[0].name_len - 100;
	struct cache *c = cache_new(BUDGET, 0x5eed);
	assert_non_null(c);
	fill(payload, sizeof(payload), 9);

	for (unsigned step = 0; step < STEPS; step++) {
		unsigned i = next_rand() % SHADOW_KEYS;
		uint32_t what = next_rand() % 100;
		if (what < 55) {
			/* Mostly DNS-sized messages, now and then one over budget. */
			size_t len = next_rand() % 10 == 0 ? next_rand() % sizeof(payload)
							   : 12 + next_rand() % 1500;
			size_t need = overhead + keys[i].name_len + len;
			int rc = cache_store(c, &keys[i], payload + (i % 7), len, 3600, T0);
			if (need > BUDGET) {
				/* Refused before anything changes: an older entry
				 * for the key stays (as cache.c does today). */
				assert_int_equal(rc, -E2BIG);
			} else {
				assert_int_equal(rc, 0);
				if (s.present[i])
					shadow_remove(&s, i);
				while (s.bytes + need > BUDGET)
					shadow_remove(&s, (unsigned)shadow_oldest(&s));
				s.present[i] = true;
				s.size[i] = need;
				s.used[i] = ++clock;
				s.bytes += need;
				s.entries++;
			}
		} else {
			bool hit_found = cache_lookup(c, &keys[i], T0 + 1000, false, 60, &hit);
			assert_int_equal(hit_found, s.present[i]);
			if (hit_found) {
				assert_int_equal(hit.len + overhead + keys[i].name_len, s.size[i]);
				assert_memory_equal(hit.msg, payload + (i % 7), hit.len);
				s.used[i] = ++clock;
			}
		}
		assert_true(cache_bytes(c) <= BUDGET);
		assert_int_equal(cache_bytes(c), s.bytes);
		assert_int_equal(cache_entries(c), s.entries);
		if (step % 97 == 0) {
			/* Every key, in a fixed order; hits are mirrored as uses. */
			for (unsigned j = 0; j < SHADOW_KEYS; j++) {
				bool f = found(c, &keys[j], T0 + 2000);
				if (f != s.present[j])
					fail_msg("step %u: key %u present=%d, shadow says %d", step,
						 j, f, s.present[j]);
				if (f)
					s.used[j] = ++clock;
			}
		}
	}
	cache_free(c);
}

static void grows_past_first_table(void **state)
{
	(void)state;
	enum { N = 5000 };
	struct cache *c = cache_new(64u << 20, 0xabcdef);
	struct cache_key key;
	struct cache_hit hit;

	assert_non_null(c);
	for (unsigned i = 0; i < N; i++) {
		uint8_t msg[24];
		numbered_key(&key, i);
		fill(msg, sizeof(msg), i);
		assert_int_equal(cache_store(c, &key, msg, sizeof(msg), 600, T0), 0);
	}
	assert_int_equal(cache_entries(c), N);
	for (unsigned i = 0; i < N; i++) {
		uint8_t msg[24];
		numbered_key(&key, i);
		fill(msg, sizeof(msg), i);
		if (!cache_lookup(c, &key, T0 + 1, false, 0, &hit))
			fail_msg("key %u lost after growth", i);
		assert_int_equal(hit.len, sizeof(msg));
		assert_memory_equal(hit.msg, msg, sizeof(msg));
		assert_int_equal(hit.hits, 1);
	}
	/* Replacing and expiring still find the right chain after growth. */
	numbered_key(&key, 4321);
	assert_int_equal(cache_store(c, &key, (const uint8_t *)"replaced", 8, 1, T0), 0);
	assert_int_equal(cache_entries(c), N);
	assert_true(cache_lookup(c, &key, T0, false, 0, &hit));
	assert_memory_equal(hit.msg, "replaced", 8);
	assert_false(cache_lookup(c, &key, T0 + 1000, false, 0, &hit));
	assert_int_equal(cache_entries(c), N - 1);
	cache_free(c);
}

/* ---- the hash ----------------------------------------------------------- */

static void hash_stable_and_seeded(void **state)
{
	(void)state;
	struct cache *c1 = cache_new(4096, 1);
	struct cache *c1b = cache_new(1u << 20, 1);
	struct cache *c2 = cache_new(4096, 2);
	struct cache_key a, b;

	assert_non_null(c1);
	assert_non_null(c1b);
	assert_non_null(c2);
	for (unsigned i = 0; i < 64; i++) {
		numbered_key(&a, i);
		/* The same key built again, with different garbage past the name. */
		numbered_key(&b, i);
		memset(b.name + b.name_len, 0x5a, sizeof(b.name) - b.name_len);
		uint64_t h = cache_key_hash(c1, &a);
		assert_true(h == cache_key_hash(c1, &a));
		assert_true(h == cache_key_hash(c1, &b));
		assert_true(h == cache_key_hash(c1b, &b)); /* the seed, not the cache */
		assert_true(h != cache_key_hash(c2, &a));
	}

	/* Each field of the key feeds the hash. */
	numbered_key(&a, 1);
	uint64_t h = cache_key_hash(c1, &a);
	b = a;
	b.qtype++;
	assert_true(cache_key_hash(c1, &b) != h);
	b = a;
	b.qclass++;
	assert_true(cache_key_hash(c1, &b) != h);
	b = a;
	b.bits = CACHE_KEY_DO;
	assert_true(cache_key_hash(c1, &b) != h);
	b = a;
	b.name[1] ^= 1;
	assert_true(cache_key_hash(c1, &b) != h);

	/* Low bits (the bucket index) differ between seeds for most keys. */
	unsigned same_bucket = 0;
	for (unsigned i = 0; i < 256; i++) {
		numbered_key(&a, i);
		if ((cache_key_hash(c1, &a) & 1023) == (cache_key_hash(c2, &a) & 1023))
			same_bucket++;
	}
	assert_true(same_bucket < 16);
	cache_free(c1);
	cache_free(c1b);
	cache_free(c2);
}

/* ---- flush by name ------------------------------------------------------ */

static void flush_name_and_below(void **state)
{
	(void)state;
	struct cache *c = cache_new(1u << 20, 5);
	struct cache_key k;
	uint8_t msg[100], zone[WIRE_MAX_NAME];
	const char *gone[] = { "a.example.", "b.a.example.", "x.y.A.EXAMPLE." };
	const char *kept[] = { "example.", "xa.example.", "a.example.org.", "other." };

	assert_non_null(c);
	fill(msg, sizeof(msg), 3);
	for (size_t i = 0; i < 3; i++) {
		simple_key(&k, gone[i]);
		assert_int_equal(cache_store(c, &k, msg, sizeof(msg), 60, T0), 0);
	}
	/* Other types, classes and bits of the same name go too. */
	key_of(&k, "a.example.", 28, WIRE_CLASS_IN, WIRE_FLAG_CD, 0x8000);
	assert_int_equal(cache_store(c, &k, msg, sizeof(msg), 60, T0), 0);
	key_of(&k, "A.Example.", 16, 3, 0, -1);
	assert_int_equal(cache_store(c, &k, msg, sizeof(msg), 60, T0), 0);
	for (size_t i = 0; i < 4; i++) {
		simple_key(&k, kept[i]);
		assert_int_equal(cache_store(c, &k, msg, sizeof(msg), 60, T0), 0);
	}
	size_t kept_bytes = 0;
	for (size_t i = 0; i < 4; i++) {
		simple_key(&k, kept[i]);
		kept_bytes += footprint(&k, sizeof(msg));
	}
	assert_int_equal(cache_entries(c), 9);
	size_t zone_len = wire_name_from_text("a.example", zone);
	assert_int_equal(cache_flush(c, zone, zone_len), 5);
	assert_int_equal(cache_entries(c), 4);
	assert_int_equal(cache_bytes(c), kept_bytes);
	for (size_t i = 0; i < 3; i++) {
		simple_key(&k, gone[i]);
		assert_false(found(c, &k, T0));
	}
	for (size_t i = 0; i < 4; i++) {
		simple_key(&k, kept[i]);
		assert_true(found(c, &k, T0));
	}
	/* Nothing there: nothing removed. */
	zone_len = wire_name_from_text("nothing.example", zone);
	assert_int_equal(cache_flush(c, zone, zone_len), 0);
	/* The cache still works: store again, then the root takes everything. */
	simple_key(&k, gone[0]);
	assert_int_equal(cache_store(c, &k, msg, sizeof(msg), 60, T0), 0);
	zone_len = wire_name_from_text(".", zone);
	assert_int_equal(cache_flush(c, zone, zone_len), 5);
	assert_int_equal(cache_entries(c), 0);
	assert_int_equal(cache_bytes(c), 0);
	cache_free(c);
}

static void flush_everything(void **state)
{
	(void)state;
	struct cache *c = cache_new(1u << 20, 6);
	struct cache_key k;
	uint8_t msg[64];

	assert_non_null(c);
	fill(msg, sizeof(msg), 4);
	assert_int_equal(cache_flush(c, NULL, 0), 0);
	for (unsigned i = 0; i < 3000; i++) { /* past the first table size */
		numbered_key(&k, i);
		assert_int_equal(cache_store(c, &k, msg, sizeof(msg), 60, T0), 0);
	}
	assert_int_equal(cache_flush(c, NULL, 0), 3000);
	assert_int_equal(cache_entries(c), 0);
	assert_int_equal(cache_bytes(c), 0);
	numbered_key(&k, 7);
	assert_false(found(c, &k, T0));
	assert_int_equal(cache_store(c, &k, msg, sizeof(msg), 60, T0), 0);
	assert_true(found(c, &k, T0));
	cache_free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(new_and_free),
		cmocka_unit_test(store_and_hit),
		cmocka_unit_test(key_ignores_case),
		cmocka_unit_test(distinct_keys),
		cmocka_unit_test(replace_existing),
		cmocka_unit_test(expiry_and_stale_window),
		cmocka_unit_test(expired_entry_among_others),
		cmocka_unit_test(lru_eviction),
		cmocka_unit_test(large_entry_evicts_several),
		cmocka_unit_test(too_big),
		cmocka_unit_test(budget_churn),
		cmocka_unit_test(grows_past_first_table),
		cmocka_unit_test(hash_stable_and_seeded),
		cmocka_unit_test(flush_name_and_below),
		cmocka_unit_test(flush_everything),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
