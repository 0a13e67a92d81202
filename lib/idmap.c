/*
 * Open addressing with linear probing over a power-of-two table at most half
 * full.  Keys are random, so the low bits index well without hashing;
 * removal shifts later entries back, so there are no tombstones to age.
 */
#include "lib/idmap.h"

#include "lib/random.h"

#include <errno.h>
#include <stdlib.h>

struct slot {
	void *value; /* NULL: empty */
	uint16_t id;
};

struct idmap {
	unsigned capacity; /* entries allowed */
	unsigned count;
	unsigned mask;	 /* table size - 1 */
	unsigned cursor; /* where idmap_pop() resumes its scan */
	struct slot slots[];
};

struct idmap *idmap_new(unsigned capacity)
{
	unsigned size = 2;

	if (capacity == 0 || capacity > 32768)
		return NULL;
	while (size < 2 * capacity)
		size <<= 1;
	struct idmap *map = calloc(1, sizeof(*map) + size * sizeof(struct slot));
	if (!map)
		return NULL;
	map->capacity = capacity;
	map->mask = size - 1;
	return map;
}

void idmap_free(struct idmap *map)
{
	free(map);
}

static unsigned find(const struct idmap *map, uint16_t id)
{
	unsigned i = id & map->mask;

	while (map->slots[i].value && map->slots[i].id != id)
		i = (i + 1) & map->mask;
	return i;
}

int idmap_alloc(struct idmap *map, void *value, uint16_t *id)
{
	if (map->count >= map->capacity)
		return -ENOSPC;
	for (;;) {
		uint16_t candidate = random_u16();
		unsigned i = find(map, candidate);
		if (map->slots[i].value)
			continue; /* in use: draw again (at most half the IDs are taken) */
		map->slots[i].value = value;
		map->slots[i].id = candidate;
		map->count++;
		*id = candidate;
		return 0;
	}
}

void *idmap_get(const struct idmap *map, uint16_t id)
{
	return map->slots[find(map, id)].value;
}

static void remove_at(struct idmap *map, unsigned hole)
{
	unsigned i = hole;

	map->slots[hole].value = NULL;
	map->count--;
	/* Backward-shift: move up any later entry whose home is at or before the hole. */
	for (;;) {
		i = (i + 1) & map->mask;
		if (!map->slots[i].value)
			return;
		unsigned home = map->slots[i].id & map->mask;
		if (((i - home) & map->mask) >= ((i - hole) & map->mask)) {
			map->slots[hole] = map->slots[i];
			map->slots[i].value = NULL;
			hole = i;
		}
	}
}

void *idmap_remove(struct idmap *map, uint16_t id)
{
	unsigned i = find(map, id);
	void *value = map->slots[i].value;

	if (value)
		remove_at(map, i);
	return value;
}

unsigned idmap_count(const struct idmap *map)
{
	return map->count;
}

void *idmap_pop(struct idmap *map, uint16_t *id)
{
	if (map->count == 0)
		return NULL;
	/* Resume where the last pop stopped, so draining the map is linear. */
	for (unsigned n = 0; n <= map->mask; n++) {
		unsigned i = (map->cursor + n) & map->mask;
		if (map->slots[i].value) {
			void *value = map->slots[i].value;
			*id = map->slots[i].id;
			map->cursor = i;
			remove_at(map, i);
			return value;
		}
	}
	return NULL;
}
