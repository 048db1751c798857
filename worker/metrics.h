/*
 * metrics.h - the master's observability endpoint: /metrics (Prometheus text
 * format 0.0.4), /healthz and /stats.json, served by http.c on the master's
 * loop from figures gathered from Redis on each request (SPEC §1, §8).
 *
 * The master holds one Redis connection for this (rconn.c, which reconnects on
 * its own); workers never see it. Requests that arrive while a gather is in
 * flight share it, so a burst of scrapes costs Redis one gather.
 *
 * http.listen and redis.url are read once, at start; after a reload (SIGHUP)
 * the answers follow the new queues and prefix, on the same socket and Redis.
 */
#ifndef STELLER_METRICS_H
#define STELLER_METRICS_H

#include <ev.h>

#include "config.h"
#include "jobstats.h"
#include "scheduler.h"

/* What only the master knows; filled on each answer, so a reload is seen. */
struct metrics_view {
    const struct config *cfg; /* the running config: queues, prefix, max_job_bytes */
    int workers_expected;     /* slots */
    int workers_running;      /* slots with a live process */
    const struct js_table *types; /* per-type figures from the workers, or NULL */
    const struct sched *sched;    /* the master's cron scheduler, or NULL */
};

typedef void metrics_view_fn(void *ud, struct metrics_view *v);

struct metrics;

/*
 * Connects to cfg's Redis and listens on cfg->http_listen. When it cannot
 * listen it logs why and returns NULL: the daemon runs without the endpoint
 * rather than not at all. view(ud, ...) is called on each request.
 */
struct metrics *metrics_start(struct ev_loop *loop, const struct config *cfg, metrics_view_fn *view,
                              void *ud);

/* Stops listening, drops the Redis connection, frees. NULL is fine. */
void metrics_free(struct metrics *m);

/* In a forked child: closes the listening socket and open HTTP connections
 * without touching the parent's watchers. NULL is fine. */
void metrics_after_fork(struct metrics *m);

#endif
