/*
 * log.c - logfmt lines on stderr, one write(2) each.
 *
 *   ts=2026-11-27T02:51:36.123Z level=info pid=4242 msg="worker started" queues=email
 *
 * The whole line is built in one 4 KiB buffer on the stack and written with a single
 * write(2) to fd 2: one write per line is what keeps the lines of the master and its
 * workers from interleaving, and 4 KiB is PIPE_BUF on Linux, so a write to a pipe is
 * atomic (the loop after a partial write is only for files and sockets that do that).
 * A longer line is cut, on a UTF-8 character boundary, and ends in "…" so the reader
 * sees it was cut. No allocation and no FILE stream: the logger must work when memory
 * is short, and the daemon forks, so there is no stdio buffer to flush twice.
 *
 * Callers format their own fields and quote values with log_q(); a control character
 * that slips into the fields anyway is replaced by a space, because a raw newline
 * would let a job's data forge a log line.
 */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_BYTES 4096
#define CUT_MARK "\xe2\x80\xa6" /* "…": the line was truncated */

enum log_level log_threshold = LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

int log_level_parse(const char *s)
{
    for (int i = 0; s && i < (int)(sizeof level_names / sizeof level_names[0]); i++)
        if (strcmp(s, level_names[i]) == 0)
            return i;
    return -1;
}

const char *log_level_name(enum log_level l)
{
    if ((int)l < 0 || (size_t)l >= sizeof level_names / sizeof level_names[0])
        return "unknown";
    return level_names[l];
}

void log_step(int delta)
{
    int l = (int)log_threshold + delta;
    if (l < LOG_DEBUG)
        l = LOG_DEBUG;
    if (l > LOG_ERROR)
        l = LOG_ERROR;
    log_threshold = (enum log_level)l;
    log_write(LOG_WARN, "log level changed", "threshold=%s", log_level_name(log_threshold));
}

static int needs_quotes(const char *s, size_t len)
{
    if (len == 0)
        return 1; /* key="" reads better than key= followed by the next field */
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= ' ' || c == '"' || c == '=' || c == 0x7f)
            return 1;
    }
    return 0;
}

/*
 * How many of the first n bytes of s (total bytes long) to keep so that no UTF-8
 * sequence is cut in half. It looks only at s[0..n): vsnprintf leaves nothing past.
 */
static size_t utf8_floor(const char *s, size_t n, size_t total)
{
    size_t p = n;

    if (n >= total)
        return total;
    while (p > 0 && n - p < 3 && ((unsigned char)s[p - 1] & 0xC0) == 0x80)
        p--;
    if (p == 0)
        return n;
    unsigned char lead = (unsigned char)s[p - 1];
    size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
    return p - 1 + need > n ? p - 1 : n;
}

/* The escape for c inside quotes, written to esc; returns its length. */
static size_t escape(unsigned char c, char esc[8])
{
    switch (c) {
    case '"': return (size_t)snprintf(esc, 8, "\\\"");
    case '\\': return (size_t)snprintf(esc, 8, "\\\\");
    case '\n': return (size_t)snprintf(esc, 8, "\\n");
    case '\r': return (size_t)snprintf(esc, 8, "\\r");
    case '\t': return (size_t)snprintf(esc, 8, "\\t");
    default: break;
    }
    if (c < ' ' || c == 0x7f)
        return (size_t)snprintf(esc, 8, "\\u%04x", c);
    esc[0] = (char)c;
    return 1;
}

static const char *quote(char *buf, size_t size, const char *s, size_t len)
{
    size_t n = 0;

    if (size < 3) {
        buf[0] = '\0';
        return buf;
    }
    buf[n++] = '"';
    for (size_t i = 0; i < len; i++) {
        char esc[8];
        size_t e = escape((unsigned char)s[i], esc);
        if (e == 1 && ((unsigned char)s[i] & 0xC0) == 0xC0) {
            /* Keep a multibyte character whole or drop it. */
            size_t end = i + 1;
            while (end < len && ((unsigned char)s[end] & 0xC0) == 0x80)
                end++;
            e = end - i;
            if (n + e + 2 > size)
                break;
            memcpy(buf + n, s + i, e);
            n += e;
            i = end - 1;
            continue;
        }
        if (n + e + 2 > size)
            break;
        memcpy(buf + n, esc, e);
        n += e;
    }
    buf[n++] = '"';
    buf[n] = '\0';
    return buf;
}

const char *log_q(char *buf, size_t size, const char *s, size_t len)
{
    if (size == 0)
        return buf;
    if (!s)
        len = 0;
    if (needs_quotes(s, len))
        return quote(buf, size, s, len);
    len = utf8_floor(s, size - 1, len);
    memcpy(buf, s, len);
    buf[len] = '\0';
    return buf;
}

/*
 * The line under construction. len stays within LINE_ROOM so that the cut mark and
 * the newline always fit after it.
 */
struct line {
    char buf[LINE_MAX_BYTES];
    size_t len;
    int cut;
};

#define LINE_ROOM (LINE_MAX_BYTES - sizeof CUT_MARK) /* mark (3 bytes) and newline (1) */

static void line_put(struct line *ln, const char *s, size_t n)
{
    if (ln->cut)
        return;
    if (n > LINE_ROOM - ln->len) {
        n = utf8_floor(s, LINE_ROOM - ln->len, n);
        ln->cut = 1;
    }
    memcpy(ln->buf + ln->len, s, n);
    ln->len += n;
}

/* Length of s once log_q() has quoted and escaped it, to know whether it was cut. */
static size_t quoted_len(const char *s, size_t len)
{
    size_t n = 2;
    char esc[8];

    if (!needs_quotes(s, len))
        return len;
    for (size_t i = 0; i < len; i++)
        n += escape((unsigned char)s[i], esc);
    return n;
}

static void line_msg(struct line *ln, const char *msg)
{
    size_t len = msg ? strlen(msg) : 0;
    size_t room = LINE_ROOM - ln->len;

    log_q(ln->buf + ln->len, room + 1, msg, len);
    ln->len += strlen(ln->buf + ln->len);
    if (quoted_len(msg, len) > room)
        ln->cut = 1;
}

/* Formats the fields straight into the line, then blanks stray control characters. */
static void line_fields(struct line *ln, const char *fmt, va_list ap)
{
    line_put(ln, " ", 1);
    if (ln->cut)
        return;
    char *start = ln->buf + ln->len;
    size_t room = LINE_ROOM - ln->len;
    int n = vsnprintf(start, room + 1, fmt, ap);
    if (n < 0)
        n = 0;
    if ((size_t)n > room) {
        n = (int)utf8_floor(start, room, (size_t)n);
        ln->cut = 1;
    }
    if (n == 0) {
        ln->len--; /* no fields: no trailing space */
        return;
    }
    for (int i = 0; i < n; i++)
        if ((unsigned char)start[i] < ' ' || start[i] == 0x7f)
            start[i] = ' ';
    ln->len += (size_t)n;
}

static void line_head(struct line *ln, enum log_level l, const char *msg)
{
    struct timespec now;
    struct tm tm;
    char head[128];

    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    size_t n = strftime(head, sizeof head, "ts=%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(head + n, sizeof head - n, ".%03ldZ level=%s pid=%ld msg=", now.tv_nsec / 1000000,
             log_level_name(l), (long)getpid());
    line_put(ln, head, strlen(head));
    line_msg(ln, msg);
}

static void write_all(const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(2, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return; /* nowhere left to report it */
        p += w;
        n -= (size_t)w;
    }
}

void log_write(enum log_level l, const char *msg, const char *fmt, ...)
{
    int saved = errno;
    struct line ln;
    va_list ap;

    ln.len = 0;
    ln.cut = 0;
    line_head(&ln, l, msg);
    if (fmt) {
        va_start(ap, fmt);
        line_fields(&ln, fmt, ap);
        va_end(ap);
    }
    if (ln.cut) {
        memcpy(ln.buf + ln.len, CUT_MARK, sizeof CUT_MARK - 1);
        ln.len += sizeof CUT_MARK - 1;
    }
    ln.buf[ln.len++] = '\n';
    write_all(ln.buf, ln.len);
    errno = saved;
}

void log_raw(const char *msg)
{
    int saved = errno;
    char buf[512];
    size_t n = 0;

    /* Copied by hand: only async-signal-safe calls in here. */
    while (msg && msg[n] && n < sizeof buf - 1) {
        buf[n] = msg[n];
        n++;
    }
    buf[n++] = '\n';
    write_all(buf, n);
    errno = saved;
}
