/*
 * backoff.h - how long a failed job waits before its next attempt.
 *
 * Sidekiq-compatible by default: attempt^4 + 15 + rand(0..10) * (attempt + 1)
 * seconds. Each term scales: delay = factor * attempt^4 + base
 * + factor * r * (attempt + 1), r uniform in [0, 10], then capped at cap with
 * jitter below the cap so that capped jobs do not all wake at once.
 */
#ifndef STELLER_BACKOFF_H
#define STELLER_BACKOFF_H

#include <stdint.h>

struct backoff {
    double base;   /* seconds, default 15 */
    double factor; /* seconds, default 1 */
    double cap;    /* seconds, default 604800 (7 days) */
};

#define BACKOFF_DEFAULT ((struct backoff){.base = 15.0, .factor = 1.0, .cap = 604800.0})

/* Delay in milliseconds before retry number `attempt` (1 = first retry).
 * r01 is a uniform random number in [0, 1), passed in so tests are exact. */
int64_t backoff_ms(const struct backoff *b, int64_t attempt, double r01);

#endif
