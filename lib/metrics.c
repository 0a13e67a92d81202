/* Counter names come from the same list as the enum, so they cannot drift. */
#include "lib/metrics.h"

#include <inttypes.h>
#include <stdio.h>

uint64_t metrics[METRIC_COUNT];

static const char *const names[METRIC_COUNT] = {
#define METRIC_NAME(name) #name,
	METRICS_LIST(METRIC_NAME)
#undef METRIC_NAME
};

void metrics_render(char *buf, size_t cap)
{
	size_t used = 0;
	int n = snprintf(buf, cap, "stats:");

	if (n < 0 || (size_t)n >= cap)
		return;
	used = (size_t)n;
	for (size_t i = 0; i < METRIC_COUNT; i++) {
		n = snprintf(buf + used, cap - used, " %s=%" PRIu64, names[i], metrics[i]);
		if (n < 0 || (size_t)n >= cap - used)
			return;
		used += (size_t)n;
	}
}
