/* Buffered getrandom(2); one buffer per thread, so workers never share state. */
#include "lib/random.h"

#include "lib/log.h"

#include <errno.h>
#include <sys/random.h>

static _Thread_local uint16_t pool[256];
static _Thread_local unsigned pool_left;

uint16_t random_u16(void)
{
	if (pool_left == 0) {
		ssize_t n;
		do
			n = getrandom(pool, sizeof(pool), 0);
		while (n < 0 && errno == EINTR);
		require(n == (ssize_t)sizeof(pool));
		pool_left = sizeof(pool) / sizeof(pool[0]);
	}
	return pool[--pool_left];
}
