/*
 * Cache: a chained hash table (grown by doubling, so chains stay short)
 * plus a doubly linked LRU list.  One allocation per entry holds the
 * bookkeeping, the key's name and the message, so an entry's cost is known
 * exactly and counted against the budget.
 */
#include "lib/cache.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct entry {
	struct entry *chain;		   /* next in the bucket */
	struct entry *lru_prev, *lru_next; /* lru_next: towards older */
	uint64_t hash;
	uint64_t stored_ms;
	uint32_t ttl_s;
	uint32_t hits;
	uint16_t qtype, qclass;
	uint16_t name_len;
	uint16_t len;
	uint8_t bits;
	uint8_t data[]; /* name_len bytes of name, then len bytes of message */
};

struct cache {
	struct entry **buckets;
	size_t mask;
	size_t entries;
	size_t bytes;
	size_t max_bytes;
	uint64_t seed;
	struct entry *newest, *oldest;
};

enum { FIRST_BUCKETS = 1024 };

static uint8_t lower(uint8_t ch)
{
	return ch >= 'A' && ch <= 'Z' ? (uint8_t)(ch + 32) : ch;
}

void cache_key_from(const struct wire_info *info, struct cache_key *key)
{
	key->name_len = info->q.name_len;
	for (size_t i = 0; i < key->name_len; i++)
		key->name[i] = lower(info->q.name[i]);
	key->qtype = info->q.qtype;
	key->qclass = info->q.qclass;
	key->bits = (uint8_t)(((info->has_edns && (info->edns_ttl & 0x8000)) ? CACHE_KEY_DO : 0) |
			      ((info->flags & WIRE_FLAG_CD) ? CACHE_KEY_CD : 0));
}

/* FNV-1a over the key, seeded, with a final avalanche (from MurmurHash3's
 * fmix64) so that the low bits used as the bucket index depend on all input. */
uint64_t cache_key_hash(const struct cache *c, const struct cache_key *k)
{
	uint64_t h = 0xcbf29ce484222325ULL ^ c->seed;

	for (size_t i = 0; i < k->name_len; i++)
		h = (h ^ k->name[i]) * 0x100000001b3ULL;
	h = (h ^ k->qtype) * 0x100000001b3ULL;
	h = (h ^ k->qclass) * 0x100000001b3ULL;
	h = (h ^ k->bits) * 0x100000001b3ULL;
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	return h;
}

static size_t footprint(const struct entry *e)
{
	return sizeof(*e) + e->name_len + e->len;
}

struct cache *cache_new(size_t max_bytes, uint64_t seed)
{
	struct cache *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->buckets = calloc(FIRST_BUCKETS, sizeof(*c->buckets));
	if (!c->buckets) {
		free(c);
		return NULL;
	}
	c->mask = FIRST_BUCKETS - 1;
	c->max_bytes = max_bytes;
	c->seed = seed;
	return c;
}

void cache_free(struct cache *c)
{
	if (!c)
		return;
	for (struct entry *e = c->newest, *next; e; e = next) {
		next = e->lru_next;
		free(e);
	}
	free(c->buckets);
	free(c);
}

static bool matches(const struct entry *e, uint64_t hash, const struct cache_key *k)
{
	return e->hash == hash && e->qtype == k->qtype && e->qclass == k->qclass &&
	       e->bits == k->bits && e->name_len == k->name_len &&
	       memcmp(e->data, k->name, k->name_len) == 0;
}

static void lru_unlink(struct cache *c, struct entry *e)
{
	if (e->lru_prev)
		e->lru_prev->lru_next = e->lru_next;
	else
		c->newest = e->lru_next;
	if (e->lru_next)
		e->lru_next->lru_prev = e->lru_prev;
	else
		c->oldest = e->lru_prev;
}

static void lru_push(struct cache *c, struct entry *e)
{
	e->lru_prev = NULL;
	e->lru_next = c->newest;
	if (c->newest)
		c->newest->lru_prev = e;
	c->newest = e;
	if (!c->oldest)
		c->oldest = e;
}

static void remove_entry(struct cache *c, struct entry *e)
{
	struct entry **p = &c->buckets[e->hash & c->mask];

	while (*p != e)
		p = &(*p)->chain;
	*p = e->chain;
	lru_unlink(c, e);
	c->entries--;
	c->bytes -= footprint(e);
	free(e);
}

/* Double the table when entries outnumber buckets; on ENOMEM keep going
 * with longer chains. */
static void maybe_grow(struct cache *c)
{
	if (c->entries <= c->mask + 1)
		return;
	size_t size = (c->mask + 1) * 2;
	struct entry **buckets = calloc(size, sizeof(*buckets));
	if (!buckets)
		return;
	for (size_t i = 0; i <= c->mask; i++) {
		for (struct entry *e = c->buckets[i], *next; e; e = next) {
			next = e->chain;
			e->chain = buckets[e->hash & (size - 1)];
			buckets[e->hash & (size - 1)] = e;
		}
	}
	free(c->buckets);
	c->buckets = buckets;
	c->mask = size - 1;
}

int cache_store(struct cache *c, const struct cache_key *key, const uint8_t *msg, size_t len,
		uint32_t ttl_s, uint64_t now_ms)
{
	uint64_t hash = cache_key_hash(c, key);
	size_t need = sizeof(struct entry) + key->name_len + len;

	if (need > c->max_bytes || len > UINT16_MAX)
		return -E2BIG;
	for (struct entry *e = c->buckets[hash & c->mask]; e; e = e->chain) {
		if (matches(e, hash, key)) {
			remove_entry(c, e);
			break;
		}
	}
	while (c->bytes + need > c->max_bytes && c->oldest)
		remove_entry(c, c->oldest);
	struct entry *e = malloc(need);
	if (!e)
		return -ENOMEM;
	e->hash = hash;
	e->stored_ms = now_ms;
	e->ttl_s = ttl_s;
	e->hits = 0;
	e->qtype = key->qtype;
	e->qclass = key->qclass;
	e->bits = key->bits;
	e->name_len = key->name_len;
	e->len = (uint16_t)len;
	memcpy(e->data, key->name, key->name_len);
	memcpy(e->data + key->name_len, msg, len);
	e->chain = c->buckets[hash & c->mask];
	c->buckets[hash & c->mask] = e;
	lru_push(c, e);
	c->entries++;
	c->bytes += need;
	maybe_grow(c);
	return 0;
}

bool cache_lookup(struct cache *c, const struct cache_key *key, uint64_t now_ms, bool stale_ok,
		  uint32_t stale_window_s, struct cache_hit *hit)
{
	uint64_t hash = cache_key_hash(c, key);

	for (struct entry *e = c->buckets[hash & c->mask]; e; e = e->chain) {
		if (!matches(e, hash, key))
			continue;
		uint64_t age_ms = now_ms > e->stored_ms ? now_ms - e->stored_ms : 0;
		uint64_t fresh_ms = (uint64_t)e->ttl_s * 1000;
		bool stale = age_ms >= fresh_ms;
		if (stale && age_ms - fresh_ms >= (uint64_t)stale_window_s * 1000) {
			remove_entry(c, e); /* past any use */
			return false;
		}
		if (stale && !stale_ok)
			return false;
		lru_unlink(c, e);
		lru_push(c, e);
		e->hits++;
		hit->msg = e->data + e->name_len;
		hit->len = e->len;
		hit->age_s = (uint32_t)(age_ms / 1000);
		hit->ttl_s = e->ttl_s;
		hit->stale = stale;
		hit->hits = e->hits;
		return true;
	}
	return false;
}

size_t cache_flush(struct cache *c, const uint8_t *name, size_t name_len)
{
	size_t removed = 0;

	/* Every entry is on the LRU list; remove_entry() frees it, so step first. */
	for (struct entry *e = c->newest, *next; e; e = next) {
		next = e->lru_next;
		if (name_len == 0 || wire_name_in_zone(e->data, e->name_len, name, name_len)) {
			remove_entry(c, e);
			removed++;
		}
	}
	return removed;
}

size_t cache_entries(const struct cache *c)
{
	return c->entries;
}

size_t cache_bytes(const struct cache *c)
{
	return c->bytes;
}
