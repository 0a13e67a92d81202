/*
 * Levelled logging to stderr, one line per event, and the always-on
 * invariant check `require`.  Every line carries a UTC timestamp and a
 * level so that a log read after the fact tells what happened in order.
 */
#pragma once

#include <stdbool.h>

#include <stdarg.h>
#include <stdnoreturn.h>

/** Log levels, most severe first.  `-v` raises the threshold by one step. */
enum log_level {
	LOG_LEVEL_ERROR = 0,
	LOG_LEVEL_WARN = 1,
	LOG_LEVEL_INFO = 2,
	LOG_LEVEL_DEBUG = 3,
};

/** Messages above this level are discarded.  Default: LOG_LEVEL_WARN. */
extern _Atomic enum log_level log_threshold; /* workers read it, worker 0 sets it */

/** Write one line at @level.  The format must not end in a newline. */
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/**
 * When stderr is the journal ($JOURNAL_STREAM names its device and inode),
 * write each line with an sd-daemon priority prefix ("<4>warning: ...")
 * and no timestamp of our own, so that journalctl -p works and shows one
 * time.  Returns whether it did.  Call once, before threads start.
 */
bool log_use_journal_if_stderr_is(void);

/** Write one line tagged @tag instead of a level, whatever the threshold
 * (the query log: wanted by whoever turned it on, at any verbosity). */
void log_tagged(const char *tag, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/** True when a message at @level would be written (to skip costly formatting). */
static inline int log_enabled(enum log_level level)
{
	return level <= log_threshold;
}

#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warn(...)                                                                              \
	do {                                                                                       \
		if (log_enabled(LOG_LEVEL_WARN))                                                   \
			log_msg(LOG_LEVEL_WARN, __VA_ARGS__);                                      \
	} while (0)
#define log_info(...)                                                                              \
	do {                                                                                       \
		if (log_enabled(LOG_LEVEL_INFO))                                                   \
			log_msg(LOG_LEVEL_INFO, __VA_ARGS__);                                      \
	} while (0)
#define log_debug(...)                                                                             \
	do {                                                                                       \
		if (log_enabled(LOG_LEVEL_DEBUG))                                                  \
			log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__);                                     \
	} while (0)

/** Report a broken invariant and abort.  Used by `require`. */
noreturn void log_require_failed(const char *expr, const char *file, int line);

/**
 * Always-on check for invariants whose violation would corrupt memory.
 * Unlike assert(), it is never compiled out.
 */
#define require(cond)                                                                              \
	do {                                                                                       \
		if (__builtin_expect(!(cond), 0))                                                  \
			log_require_failed(#cond, __FILE__, __LINE__);                             \
	} while (0)
