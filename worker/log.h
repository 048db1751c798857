/*
 * log.h - one logfmt line per event on stderr (journald-friendly).
 *
 *   ts=2026-11-27T02:51:36.123Z level=info pid=4242 msg="worker started" queues=email
 *
 * LOG() checks the level before formatting anything. Fields are passed as a
 * printf-style tail of "key=value" pairs; log_q() quotes a value when it needs it.
 * The line is built in a fixed buffer and written with one write(2), so lines
 * from several processes never interleave. log_raw() is safe in signal handlers.
 */
#ifndef STELLER_LOG_H
#define STELLER_LOG_H

#include <stddef.h>

enum log_level { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 };

extern enum log_level log_threshold;

/* Parses "debug", "info", "warn", "error"; returns -1 if unknown. */
int log_level_parse(const char *s);
const char *log_level_name(enum log_level l);

/* msg is the human message; fmt (may be NULL) formats further key=value fields. */
void log_write(enum log_level l, const char *msg, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define LOG(level, msg, ...)                                                                       \
    do {                                                                                           \
        if ((level) >= log_threshold)                                                              \
            log_write((level), (msg), __VA_ARGS__);                                                \
    } while (0)

/*
 * Writes s into buf as a logfmt value: bare when it is not empty and has no space,
 * quote, '=' or control character, else quoted with \" \\ \n \r \t \u00XX escapes;
 * truncates to fit, never in the middle of an escape or a UTF-8 character.
 * len is the length of s (it need not be NUL-terminated). Returns buf.
 */
const char *log_q(char *buf, size_t size, const char *s, size_t len);

/* Moves the threshold one level: -1 towards debug (SIGUSR1), +1 towards error
 * (SIGUSR2); stays within debug..error. Logs the new level at warn. */
void log_step(int delta);

/* For signal handlers: writes msg and a newline with write(2) only. */
void log_raw(const char *msg);

#endif
