/*
 * The answer cache: complete DNS responses keyed by question (name without
 * regard to case, type, class) and the DO and CD bits, each fresh for its
 * TTL and then kept, stale, for a configurable window (RFC 8767).  Memory
 * is bounded by a byte budget that counts every entry's whole footprint;
 * the least recently used entries go first.  Pure data structure: times are
 * passed in, nothing here knows about the event loop.
 */
#pragma once

#include "lib/wire.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/** What an answer is cached under. */
struct cache_key {
	uint8_t name[WIRE_MAX_NAME]; /**< wire form, lower case */
	uint16_t name_len;
	uint16_t qtype;
	uint16_t qclass;
	uint8_t bits; /**< CACHE_KEY_DO | CACHE_KEY_CD */
};

enum {
	CACHE_KEY_DO = 1, /**< the client asked for DNSSEC records */
	CACHE_KEY_CD = 2, /**< the client disabled validation */
};

/** A found entry.  @msg stays valid until the next call that changes the cache. */
struct cache_hit {
	const uint8_t *msg; /**< the stored response (its ID is meaningless) */
	size_t len;
	uint32_t age_s; /**< seconds since it was stored */
	uint32_t ttl_s; /**< the TTL it was stored with */
	bool stale;	/**< past its TTL (served only when upstreams fail) */
	uint32_t hits;	/**< lookups that found it, this one included */
};

struct cache;

/** A cache of at most @max_bytes; @seed keys the hash (take it from a CSPRNG
 * so that clients cannot aim queries at one bucket).  NULL on ENOMEM. */
struct cache *cache_new(size_t max_bytes, uint64_t seed);
void cache_free(struct cache *c);

/** The (seeded) hash of @key, as the cache computes it: for other tables
 * keyed the same way. */
uint64_t cache_key_hash(const struct cache *c, const struct cache_key *key);

/** The key of the parsed query @info (name lowered). */
void cache_key_from(const struct wire_info *info, struct cache_key *key);

/**
 * Store a copy of @msg for @key, fresh for @ttl_s seconds from @now_ms,
 * replacing any entry for that key; older entries are evicted to stay in
 * budget.  Returns 0, -E2BIG (larger than the whole budget) or -ENOMEM.
 */
int cache_store(struct cache *c, const struct cache_key *key, const uint8_t *msg, size_t len,
		uint32_t ttl_s, uint64_t now_ms);

/**
 * Find @key at @now_ms.  A fresh entry is found; an expired one only when
 * @stale_ok and it expired less than @stale_window_s ago.  Entries past the
 * stale window are removed (so pass the configured window even when
 * @stale_ok is false).  Returns true and fills @hit when found.
 */
bool cache_lookup(struct cache *c, const struct cache_key *key, uint64_t now_ms, bool stale_ok,
		  uint32_t stale_window_s, struct cache_hit *hit);

/**
 * Remove every entry for @name (wire form, lower case, as from
 * wire_name_from_text()) and for every name below it, whatever its type,
 * class and bits; with @name_len 0, every entry.  The root name (one zero
 * byte) is above every name: everything goes too.  Walks the whole cache
 * once.  Returns the number of entries removed.
 */
size_t cache_flush(struct cache *c, const uint8_t *name, size_t name_len);

/** Entries held, and bytes they use (within the budget). */
size_t cache_entries(const struct cache *c);
size_t cache_bytes(const struct cache *c);
