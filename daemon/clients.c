/*
 * The table of open TLS clients per address: a chained hash table under
 * one lock, touched only at accept and close.  Entries exist only while
 * their count is above zero, so it holds at most as many as there are
 * clients (--max-tcp-clients).  The hash is keyed with a random seed, so
 * that addresses chosen to collide (a LAN host may pick any address in its
 * /64) cannot be predicted.
 */
#include "daemon/clients.h"

#include "lib/random.h"

#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { BUCKETS = 1024 };

struct entry {
	uint8_t addr[16]; /* IPv6, or IPv4 mapped */
	unsigned count;
	struct entry *next;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct entry *table[BUCKETS];
static uint64_t seed;

/* @sa's address as 16 bytes, IPv4 mapped into IPv6; false for others. */
static bool key_of(const struct sockaddr *sa, uint8_t key[16])
{
	if (sa->sa_family == AF_INET) {
		memset(key, 0, 10);
		key[10] = key[11] = 0xff;
		memcpy(key + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		return true;
	}
	if (sa->sa_family == AF_INET6) {
		memcpy(key, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
		return true;
	}
	return false;
}

/* FNV-1a over the seed and the key; call with the lock held. */
static struct entry **bucket(const uint8_t key[16])
{
	uint64_t h = 0xcbf29ce484222325ull;

	if (!seed)
		seed = (uint64_t)random_u16() << 48 | (uint64_t)random_u16() << 32 |
		       (uint64_t)random_u16() << 16 | random_u16() | 1;
	for (unsigned i = 0; i < 8; i++)
		h = (h ^ (uint8_t)(seed >> (8 * i))) * 0x100000001b3ull;
	for (unsigned i = 0; i < 16; i++)
		h = (h ^ key[i]) * 0x100000001b3ull;
	return &table[h % BUCKETS];
}

static struct entry **find(const uint8_t key[16])
{
	struct entry **p = bucket(key);

	while (*p && memcmp((*p)->addr, key, 16) != 0)
		p = &(*p)->next;
	return p;
}

bool clients_admit(const struct sockaddr *sa, unsigned cap)
{
	uint8_t key[16];

	if (!key_of(sa, key))
		return true;
	pthread_mutex_lock(&lock);
	struct entry *e = *find(key);
	if (!e && cap > 0) {
		e = calloc(1, sizeof(*e));
		if (e) {
			memcpy(e->addr, key, 16);
			e->next = *bucket(key);
			*bucket(key) = e;
		}
	}
	bool ok = e && e->count < cap;
	if (ok)
		e->count++;
	pthread_mutex_unlock(&lock);
	return ok;
}

void clients_release(const struct sockaddr *sa)
{
	uint8_t key[16];

	if (!key_of(sa, key))
		return;
	pthread_mutex_lock(&lock);
	struct entry **p = find(key);
	struct entry *e = *p;
	if (e && --e->count == 0) {
		*p = e->next;
		free(e);
	}
	pthread_mutex_unlock(&lock);
}

unsigned clients_from(const struct sockaddr *sa)
{
	uint8_t key[16];
	unsigned n = 0;

	if (!key_of(sa, key))
		return 0;
	pthread_mutex_lock(&lock);
	struct entry *e = *find(key);
	if (e)
		n = e->count;
	pthread_mutex_unlock(&lock);
	return n;
}
