/* Counter names come from the same list as the enum, so they cannot drift. */
#include "lib/metrics.h"

#include <inttypes.h>
#include <stdio.h>

static uint64_t counters[METRICS_MAX_WORKERS][METRIC_COUNT];
_Thread_local uint64_t *metrics_mine = counters[0];

static const char *const names[METRIC_COUNT] = {
#define METRIC_NAME(name) #name,
	METRICS_LIST(METRIC_NAME)
#undef METRIC_NAME
};

void metrics_use_worker(unsigned index)
{
	metrics_mine = counters[index < METRICS_MAX_WORKERS ? index : 0];
}

static uint64_t total(size_t metric)
{
	uint64_t sum = 0;

	for (size_t w = 0; w < METRICS_MAX_WORKERS; w++)
		sum += __atomic_load_n(&counters[w][metric], __ATOMIC_RELAXED);
	return sum;
}

void metrics_render(char *buf, size_t cap)
{
	size_t used = 0;
	int n = snprintf(buf, cap, "stats:");

	if (n < 0 || (size_t)n >= cap)
		return;
	used = (size_t)n;
	for (size_t i = 0; i < METRIC_COUNT; i++) {
		n = snprintf(buf + used, cap - used, " %s=%" PRIu64, names[i], total(i));
		if (n < 0 || (size_t)n >= cap - used)
			return;
		used += (size_t)n;
	}
}
