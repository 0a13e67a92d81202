/*
 * Deterministic test-side choices for the randomized unit tests (which entry
 * to remove, what to do next), so that a failure replays: xorshift32, since
 * rand() is banned.  Header-only, one state per test binary.
 */
#pragma once

#include <stdint.h>

static uint32_t rng_state = 2463534242u;

static inline uint32_t next_rand(void)
{
	uint32_t x = rng_state;
	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	rng_state = x;
	return x;
}
