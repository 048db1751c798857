/*
 * rcheck.h - whether the Redis behind a worker's cmd connection keeps jobs.
 *
 * Each time the connection comes up (Redis may have been replaced meanwhile),
 * the worker asks CONFIG GET maxmemory-policy, appendonly and save. A policy
 * that may evict any key (allkeys-*) can delete queued jobs under memory
 * pressure: the worker refuses to run against it unless redis.allow_eviction
 * is set. volatile-* policies evict only keys with a TTL (heartbeats, day
 * counters), and a Redis without AOF loses jobs when it restarts: warnings.
 * A Redis that refuses CONFIG (managed services rename or disable it) gets a
 * warning that the check could not run, and the worker goes on.
 */
#ifndef STELLER_RCHECK_H
#define STELLER_RCHECK_H

#include <stddef.h>

struct worker;

enum rcheck_level { RCHECK_OK = 0, RCHECK_WARN, RCHECK_FATAL };

/* What a maxmemory-policy value means for the jobs. For WARN and FATAL, msg
 * gets one line saying why and what to do; for OK it is emptied. Pure. */
enum rcheck_level rcheck_policy(const char *policy, int allow_eviction, char *msg, size_t size);

/* The same for the values of appendonly ("yes"/"no") and save ("" or
 * "3600 1 300 100"); never FATAL. Pure. */
enum rcheck_level rcheck_persistence(const char *appendonly, const char *save, char *msg,
                                     size_t size);

enum rcheck_result {
    RCHECK_PASSED, /* go on; warnings, if any, are logged */
    RCHECK_FAILED, /* the policy may evict jobs and that is not allowed; logged */
    RCHECK_LOST    /* the connection went away first; the next connect checks again */
};

typedef void rcheck_done_fn(struct worker *w, enum rcheck_result r);

/* Sends the three CONFIG GETs on w->cmd, never waiting on them; done runs
 * exactly once, from a reply callback. Returns -1 when the connection is not
 * up (done is not called). */
int rcheck_start(struct worker *w, rcheck_done_fn *done);

#endif
