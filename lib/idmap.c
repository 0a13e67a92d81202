/*
 * Open addressing with linear probing over a power-of-two table at most half
 * full.  Keys are random, so the low bits index well without hashing;
 * removal shifts later entries back, so there are no tombstones to age.
 * The table starts small and doubles as entries are added: a connection
 * with a few queries in flight should not carry a table sized for 1024.
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
	struct slot *slots;
};

enum { INITIAL_SIZE = 32 };

struct idmap *idmap_new(unsigned capacity)
{
	if (capacity == 0 || capacity > 32768)
		return NULL;
	struct idmap *map = calloc(1, sizeof(*map));
	if (!map)
		return NULL;
	map->slots = calloc(INITIAL_SIZE, sizeof(struct slot));
	if (!map->slots) {
		free(map);
		return NULL;
	}
	map->capacity = capacity;
	map->mask = INITIAL_SIZE - 1;
	return map;
}

void idmap_free(struct idmap *map)
{
	if (map)
		free(map->slots);
	free(map);
}

static unsigned find(const struct idmap *map, uint16_t id)
{
	unsigned i = id & map->mask;

	while (map->slots[i].value && map->slots[i].id != id)
		i = (i + 1) & map->mask;
	return i;
}

/* Double the table; -ENOMEM leaves it as it was. */
static int grow(struct idmap *map)
{
	unsigned size = (map->mask + 1) * 2;
	struct slot *slots = calloc(size, sizeof(*slots));

	if (!slots)
		return -ENOMEM;
	for (unsigned i = 0; i <= map->mask; i++) {
		if (!map->slots[i].value)
			continue;
		unsigned j = map->slots[i].id & (size - 1);
		while (slots[j].value)
			j = (j + 1) & (size - 1);
		slots[j] = map->slots[i];
	}
	free(map->slots);
	map->slots = slots;
	map->mask = size - 1;
	map->cursor = 0;
	return 0;
}

int idmap_alloc(struct idmap *map, void *value, uint16_t *id)
{
	if (map->count >= map->capacity)
		return -ENOSPC;
	/* At most half full, so probes stay short and a random draw hits a free
	 * ID at least half the time. */
	if (2 * (map->count + 1) > map->mask + 1 && grow(map) < 0)
		return -ENOMEM;
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
