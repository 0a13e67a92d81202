/*
 * Logging: formats a whole line in memory and writes it with one write(2),
 * so lines from concurrent processes or threads never interleave.
 */
#include "lib/log.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

_Atomic enum log_level log_threshold = LOG_LEVEL_WARN;

static const char *const level_names[] = { "error", "warning", "info", "debug" };

/* sd-daemon(3) priorities of the levels, and of the tags log_tagged() uses. */
static const char level_priority[] = { '3', '4', '6', '7' };

static bool journal; /* set once at start-up, before any thread */

bool log_use_journal_if_stderr_is(void)
{
	const char *stream = getenv("JOURNAL_STREAM");
	uintmax_t dev, ino;
	struct stat st;
	char *end;

	if (!stream || fstat(STDERR_FILENO, &st) != 0)
		return false;
	dev = strtoumax(stream, &end, 10);
	if (end == stream || *end != ':')
		return false;
	ino = strtoumax(end + 1, &end, 10);
	journal = *end == '\0' && dev == (uintmax_t)st.st_dev && ino == (uintmax_t)st.st_ino;
	return journal;
}

static char tag_priority(const char *tag)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++)
		if (strcmp(tag, level_names[i]) == 0)
			return level_priority[i];
	return strcmp(tag, "notice") == 0 ? '5' : '6'; /* stats, query: info */
}

static void emit(const char *tag, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

static void emit(const char *tag, const char *fmt, va_list ap)
{
	char line[2048];
	struct timespec now;
	struct tm tm;
	size_t used;
	int n;

	if (journal) {
		n = snprintf(line, sizeof(line), "<%c>%s: ", tag_priority(tag), tag);
		used = n > 0 ? (size_t)n : 0;
		goto message;
	}
	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	used = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
	n = snprintf(line + used, sizeof(line) - used, ".%03ldZ %s: ", now.tv_nsec / 1000000L, tag);
	if (n > 0)
		used += (size_t)n;
message:
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
