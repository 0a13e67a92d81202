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
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "fuzz check failed: %s at %s:%d\n", #cond, __FILE__,       \
				__LINE__);                                                         \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

/* Dotted text (@n bytes at @s) to wire form in @out (255 bytes), any bytes
 * in labels (look-ups take what a client could send); 0 when it is not a
 * name.  Shared by the targets that build queries from their input. */
static inline size_t fuzz_name_to_wire(const char *s, size_t n, uint8_t *out)
{
	size_t o = 0, start = 0;

	if (n && s[n - 1] == '.')
		n--;
	if (n == 0 || n + 2 > 255)
		return 0;
	for (size_t i = 0; i <= n; i++) {
		if (i < n && s[i] != '.')
			continue;
		size_t l = i - start;
		if (l == 0 || l > 63)
			return 0;
		out[o++] = (uint8_t)l;
		memcpy(out + o, s + start, l);
		o += l;
		start = i + 1;
	}
	out[o++] = 0;
	return o;
}
