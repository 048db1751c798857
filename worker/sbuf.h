/*
 * sbuf.h - a growing string for building messages (MIME, templates, the metrics text).
 *
 * After an allocation failure the buffer stays failed: further appends do
 * nothing, p is NULL, and the caller checks once at the end (sb_take) instead of
 * after every append. Ownership: the buffer owns p until sb_take() hands it over;
 * a buffer never taken is released with free(b.p).
 */
#ifndef STELLER_SBUF_H
#define STELLER_SBUF_H

#include <stddef.h>

struct sbuf {
    char *p; /* NUL-terminated once anything was appended */
    size_t len, cap;
    int failed;
};

void sb_addn(struct sbuf *b, const char *s, size_t n);
void sb_add(struct sbuf *b, const char *s);
/* Appends formatted text, of any length. */
void sb_addf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The string (malloc'd, "" when nothing was appended), or NULL after a failure. */
char *sb_take(struct sbuf *b);

#endif
