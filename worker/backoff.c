/*
 * backoff.c - the retry delay of a failed job (see backoff.h for the formula).
 *
 * The random part is passed in as r01 so that the function is pure and tests
 * can pin exact figures. Arithmetic is in double: attempt^4 overflows int64 for
 * attempts past 55108, whereas a double only loses precision far beyond any cap,
 * and every result past the cap is replaced by the jittered cap anyway.
 */
#include "backoff.h"

#include <math.h>

int64_t backoff_ms(const struct backoff *b, int64_t attempt, double r01)
{
    double a, delay;

    if (attempt < 1)
        attempt = 1;
    /* NaN fails both comparisons and lands on 0. */
    if (!(r01 >= 0.0))
        r01 = 0.0;
    if (r01 > 1.0)
        r01 = 1.0;
    a = (double)attempt;
    delay = b->factor * a * a * a * a + b->base + b->factor * (r01 * 10.0) * (a + 1.0);
    /* Jitter below the cap: jobs that all hit the cap must not all wake together. */
    if (delay >= b->cap)
        delay = b->cap - b->cap * 0.1 * r01;
    if (!(delay > 0.0))
        return 0;
    /* Only a nonsensical cap gets here, but llround's overflow is unspecified. */
    if (delay * 1000.0 >= 9.2e18)
        return INT64_MAX;
    return llround(delay * 1000.0);
}
