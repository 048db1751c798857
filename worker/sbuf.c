/* sbuf.c - see sbuf.h. Capacity doubles from 256 bytes. */
#include "sbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sb_addn(struct sbuf *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        char *p;
        while (cap < b->len + n + 1)
            cap *= 2;
        if (!(p = realloc(b->p, cap))) {
            free(b->p);
            *b = (struct sbuf){.failed = 1};
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void sb_add(struct sbuf *b, const char *s)
{
    sb_addn(b, s, strlen(s));
}

/* Short texts go through the stack; a longer one is formatted again at its size. */
void sb_addf(struct sbuf *b, const char *fmt, ...)
{
    char tmp[512], *big;
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n < sizeof(tmp)) {
        sb_addn(b, tmp, n < 0 ? 0 : (size_t)n);
        return;
    }
    if (!(big = malloc((size_t)n + 1))) {
        free(b->p);
        *b = (struct sbuf){.failed = 1};
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    sb_addn(b, big, (size_t)n);
    free(big);
}

char *sb_take(struct sbuf *b)
{
    if (b->failed || !b->p)
        return b->failed ? NULL : strdup("");
    return b->p;
}
