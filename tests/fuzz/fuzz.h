/*
 * Shared by the fuzz targets: the libFuzzer entry point's prototype (the
 * same sources also build against replay_main.c, without libFuzzer) and a
 * check that reports the broken property before aborting, so a crash found
 * by the fuzzer says which invariant failed, not only where.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "fuzz check failed: %s at %s:%d\n", #cond, __FILE__,       \
				__LINE__);                                                         \
			abort();                                                                   \
		}                                                                                  \
	} while (0)
