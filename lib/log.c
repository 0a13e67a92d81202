/*
 * Logging: formats a whole line in memory and writes it with one write(2),
 * so lines from concurrent processes or threads never interleave.
 */
#include "lib/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

_Atomic enum log_level log_threshold = LOG_LEVEL_WARN;

static const char *const level_names[] = { "error", "warning", "info", "debug" };

static void emit(const char *tag, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

static void emit(const char *tag, const char *fmt, va_list ap)
{
	char line[2048];
	struct timespec now;
	struct tm tm;
	size_t used;
	int n;

	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	used = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
	n = snprintf(line + used, sizeof(line) - used, ".%03ldZ %s: ", now.tv_nsec / 1000000L, tag);
	if (n > 0)
		used += (size_t)n;
	n = vsnprintf(line + used, sizeof(line) - used, fmt, ap);
	if (n > 0)
		used += (size_t)n;
	if (used > sizeof(line) - 2)
		used = sizeof(line) - 2; /* truncated: keep room for the newline */
	line[used++] = '\n';
	/* A failed log write has nowhere to be reported. */
	if (write(STDERR_FILENO, line, used) < 0)
		return;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	va_list ap;

	if (level > log_threshold)
		return;
	va_start(ap, fmt);
	emit(level_names[level], fmt, ap);
	va_end(ap);
}

void log_tagged(const char *tag, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	emit(tag, fmt, ap);
	va_end(ap);
}

void log_require_failed(const char *expr, const char *file, int line)
{
	log_msg(LOG_LEVEL_ERROR, "internal error: requirement '%s' failed at %s:%d", expr, file,
		line);
	abort();
}
