/*
 * Unit tests for lib/idmap.  IDs come from the kernel's CSPRNG, so the tests
 * cannot choose them; instead every operation is mirrored in a plain array
 * indexed by ID (the "shadow"), and the map must agree with it after each
 * step.  Removal by backward shift is where open addressing usually goes
 * wrong, hence the long random churn on small tables.
 */
#include "lib/idmap.h"
#include "tests/unit/test_rng.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

enum { ID_SPACE = 65536, MAX_CAPACITY = 32768 };

/* Distinct addresses to bind: the map stores pointers it does not own. */
static char tokens[MAX_CAPACITY];

static void new_rejects_bad_capacity(void **state)
{
	(void)state;
	assert_null(idmap_new(0));
	assert_null(idmap_new(MAX_CAPACITY + 1));
	struct idmap *map = idmap_new(MAX_CAPACITY);
	assert_non_null(map);
	idmap_free(map);
	idmap_free(NULL); /* like free(): a no-op */
}

static void fill_until_full(void **state)
{
	(void)state;
	enum { CAP = 200 };
	static void *shadow[ID_SPACE];
	uint16_t ids[CAP];
	struct idmap *map = idmap_new(CAP);

	memset(shadow, 0, sizeof(shadow));
	assert_non_null(map);
	for (unsigned i = 0; i < CAP; i++) {
		assert_int_equal(idmap_alloc(map, &tokens[i], &ids[i]), 0);
		assert_null(shadow[ids[i]]); /* unique among those in flight */
		shadow[ids[i]] = &tokens[i];
		assert_int_equal(idmap_count(map), i + 1);
	}
	uint16_t id = 0;
	assert_int_equal(idmap_alloc(map, &tokens[CAP], &id), -ENOSPC);
	assert_int_equal(idmap_count(map), CAP);
	for (unsigned i = 0; i < CAP; i++)
		assert_ptr_equal(idmap_get(map, ids[i]), &tokens[i]);
	/* Every ID not handed out is absent. */
	for (unsigned v = 0; v < ID_SPACE; v++)
		if (!shadow[v])
			assert_null(idmap_get(map, (uint16_t)v));
	idmap_free(map);
}

static void get_and_remove(void **state)
{
	(void)state;
	struct idmap *map = idmap_new(8);
	uint16_t a, b;

	assert_non_null(map);
	assert_int_equal(idmap_alloc(map, &tokens[0], &a), 0);
	assert_int_equal(idmap_alloc(map, &tokens[1], &b), 0);
	assert_int_not_equal(a, b);
	assert_ptr_equal(idmap_get(map, a), &tokens[0]);
	assert_ptr_equal(idmap_get(map, b), &tokens[1]);

	/* An ID never allocated (the map holds two of 65536). */
	uint16_t absent = (uint16_t)(a + 1);
	if (absent == b)
		absent++;
	assert_null(idmap_get(map, absent));
	assert_null(idmap_remove(map, absent));
	assert_int_equal(idmap_count(map), 2);

	assert_ptr_equal(idmap_remove(map, a), &tokens[0]);
	assert_null(idmap_get(map, a));
	assert_null(idmap_remove(map, a)); /* twice: already gone */
	assert_ptr_equal(idmap_get(map, b), &tokens[1]);
	assert_int_equal(idmap_count(map), 1);
	assert_ptr_equal(idmap_remove(map, b), &tokens[1]);
	assert_int_equal(idmap_count(map), 0);
	idmap_free(map);
}

static void remove_then_realloc(void **state)
{
	(void)state;
	enum { CAP = 16 };
	struct idmap *map = idmap_new(CAP);
	uint16_t ids[CAP], id;

	assert_non_null(map);
	for (unsigned i = 0; i < CAP; i++)
		assert_int_equal(idmap_alloc(map, &tokens[i], &ids[i]), 0);
	assert_int_equal(idmap_alloc(map, &tokens[CAP], &id), -ENOSPC);
	/* Freeing one slot makes room for exactly one more. */
	assert_ptr_equal(idmap_remove(map, ids[5]), &tokens[5]);
	assert_int_equal(idmap_alloc(map, &tokens[CAP], &id), 0);
	assert_ptr_equal(idmap_get(map, id), &tokens[CAP]);
	for (unsigned i = 0; i < CAP; i++)
		if (i != 5 && ids[i] != id)
			assert_ptr_equal(idmap_get(map, ids[i]), &tokens[i]);
	assert_int_equal(idmap_alloc(map, &tokens[CAP + 1], &id), -ENOSPC);
	idmap_free(map);
}

static void pop_drains_once(void **state)
{
	(void)state;
	enum { CAP = 300 };
	static unsigned popped[CAP];
	uint16_t ids[CAP], id;
	struct idmap *map = idmap_new(CAP);

	assert_non_null(map);
	memset(popped, 0, sizeof(popped));
	assert_null(idmap_pop(map, &id)); /* empty */
	for (unsigned i = 0; i < CAP; i++)
		assert_int_equal(idmap_alloc(map, &tokens[i], &ids[i]), 0);
	for (unsigned n = 0; n < CAP; n++) {
		char *v = idmap_pop(map, &id);
		assert_non_null(v);
		size_t i = (size_t)(v - tokens);
		assert_true(i < CAP);
		assert_int_equal(ids[i], id); /* the ID it was bound to */
		popped[i]++;
		assert_null(idmap_get(map, id));
		assert_int_equal(idmap_count(map), CAP - n - 1);
	}
	for (unsigned i = 0; i < CAP; i++)
		assert_int_equal(popped[i], 1);
	assert_null(idmap_pop(map, &id));
	/* Usable again after draining. */
	assert_int_equal(idmap_alloc(map, &tokens[0], &id), 0);
	assert_ptr_equal(idmap_pop(map, &id), &tokens[0]);
	idmap_free(map);
}

/* Check the whole map against the shadow. */
static void check_against_shadow(const struct idmap *map, void *const *shadow, unsigned live)
{
	assert_int_equal(idmap_count(map), live);
	for (unsigned v = 0; v < ID_SPACE; v++)
		assert_ptr_equal(idmap_get(map, (uint16_t)v), shadow[v]);
}

static void churn(unsigned capacity, unsigned steps)
{
	static void *shadow[ID_SPACE];
	static uint16_t live_ids[MAX_CAPACITY]; /* the IDs bound, in no order */
	unsigned live = 0;
	struct idmap *map = idmap_new(capacity);

	assert_non_null(map);
	memset(shadow, 0, sizeof(shadow));
	for (unsigned step = 0; step < steps; step++) {
		uint32_t r = next_rand();
		/* Bias towards a nearly full table, where probe runs are long. */
		bool add = live == 0 || (live < capacity && (r % 8) < 5);
		if (add) {
			uint16_t id;
			void *v = &tokens[step % MAX_CAPACITY];
			assert_int_equal(idmap_alloc(map, v, &id), 0);
			assert_null(shadow[id]);
			shadow[id] = v;
			live_ids[live++] = id;
		} else if ((r >> 8) % 16 == 0) {
			uint16_t id;
			void *v = idmap_pop(map, &id);
			assert_non_null(v);
			assert_ptr_equal(shadow[id], v);
			shadow[id] = NULL;
			for (unsigned i = 0; i < live; i++) {
				if (live_ids[i] == id) {
					live_ids[i] = live_ids[--live];
					break;
				}
			}
		} else {
			unsigned k = (r >> 8) % live;
			uint16_t id = live_ids[k];
			assert_ptr_equal(idmap_remove(map, id), shadow[id]);
			shadow[id] = NULL;
			live_ids[k] = live_ids[--live];
			/* Removing it again finds nothing. */
			assert_null(idmap_remove(map, id));
		}
		if (live == capacity) {
			uint16_t id;
			assert_int_equal(idmap_alloc(map, tokens, &id), -ENOSPC);
		}
		/* A full check is 64k lookups: do it now and then. */
		if (step % 997 == 0)
			check_against_shadow(map, shadow, live);
		else
			for (unsigned i = 0; i < live; i++)
				assert_ptr_equal(idmap_get(map, live_ids[i]), shadow[live_ids[i]]);
	}
	check_against_shadow(map, shadow, live);
	idmap_free(map);
}

static void churn_small(void **state)
{
	(void)state;
	churn(1, 2000);
	churn(2, 5000);
	churn(7, 20000);
	churn(64, 30000);
}

static void churn_medium(void **state)
{
	(void)state;
	churn(1000, 30000);
}

static void capacity_one(void **state)
{
	(void)state;
	struct idmap *map = idmap_new(1);
	uint16_t a, b;

	assert_non_null(map);
	for (unsigned round = 0; round < 100; round++) {
		assert_int_equal(idmap_alloc(map, &tokens[1], &a), 0);
		assert_int_equal(idmap_alloc(map, &tokens[2], &b), -ENOSPC);
		assert_ptr_equal(idmap_get(map, a), &tokens[1]);
		assert_null(idmap_get(map, (uint16_t)(a ^ 1)));
		assert_ptr_equal(idmap_remove(map, a), &tokens[1]);
		assert_int_equal(idmap_count(map), 0);
	}
	idmap_free(map);
}

static void capacity_max(void **state)
{
	(void)state;
	static void *shadow[ID_SPACE];
	struct idmap *map = idmap_new(MAX_CAPACITY);
	uint16_t id;

	assert_non_null(map);
	memset(shadow, 0, sizeof(shadow));
	for (unsigned i = 0; i < MAX_CAPACITY; i++) {
		assert_int_equal(idmap_alloc(map, &tokens[i], &id), 0);
		assert_null(shadow[id]);
		shadow[id] = &tokens[i];
	}
	assert_int_equal(idmap_alloc(map, &tokens[0], &id), -ENOSPC);
	check_against_shadow(map, shadow, MAX_CAPACITY);
	/* Remove every other ID, then fill up again. */
	unsigned live = MAX_CAPACITY;
	for (unsigned v = 0; v < ID_SPACE; v += 2) {
		if (shadow[v]) {
			assert_ptr_equal(idmap_remove(map, (uint16_t)v), shadow[v]);
			shadow[v] = NULL;
			live--;
		}
	}
	check_against_shadow(map, shadow, live);
	while (live < MAX_CAPACITY) {
		assert_int_equal(idmap_alloc(map, &tokens[live], &id), 0);
		assert_null(shadow[id]);
		shadow[id] = &tokens[live];
		live++;
	}
	check_against_shadow(map, shadow, live);
	/* Drain. */
	while (live) {
		void *v = idmap_pop(map, &id);
		assert_non_null(v);
		assert_ptr_equal(shadow[id], v);
		shadow[id] = NULL;
		live--;
	}
	assert_int_equal(idmap_count(map), 0);
	assert_null(idmap_pop(map, &id));
	idmap_free(map);
}

static void ids_look_random(void **state)
{
	(void)state;
	enum { N = 4096 };
	struct idmap *map = idmap_new(N);
	uint16_t id;
	unsigned buckets[16] = { 0 };

	/* Not a statistical test of the CSPRNG, only a guard against IDs that are
	 * sequential or stuck in one range (a broken draw would fail this). */
	assert_non_null(map);
	for (unsigned i = 0; i < N; i++) {
		assert_int_equal(idmap_alloc(map, &tokens[i], &id), 0);
		buckets[id >> 12]++;
	}
	for (unsigned b = 0; b < 16; b++)
		assert_in_range(buckets[b], N / 16 / 2, N / 16 * 2);
	idmap_free(map);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(new_rejects_bad_capacity),
		cmocka_unit_test(fill_until_full),
		cmocka_unit_test(get_and_remove),
		cmocka_unit_test(remove_then_realloc),
		cmocka_unit_test(pop_drains_once),
		cmocka_unit_test(churn_small),
		cmocka_unit_test(churn_medium),
		cmocka_unit_test(capacity_one),
		cmocka_unit_test(capacity_max),
		cmocka_unit_test(ids_look_random),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
