/*
 * pg.h - PostgreSQL on a worker's libev loop: a small pool of non-blocking
 * libpq connections.
 *
 * A request that gets no answer within statement_timeout + 10 s drops its
 * connection and ends as PG_LOST (PQcancel would block the loop); the server
 * stops the statement itself at statement_timeout.
 *
 * Connections are opened with PQconnectStart/PQconnectPoll and then run in
 * non-blocking mode; every socket wait is an ev_io watcher, so nothing here ever
 * blocks the loop. A lost connection is reopened with backoff (100 ms doubling to
 * 5 s, with jitter). A request is one simple-query string, optionally with COPY
 * FROM STDIN data: "COPY t FROM STDIN; INSERT ... SELECT ..." runs as one
 * implicit transaction in one round trip.
 *
 * Ownership: pg_run() copies nothing; sql and copy data must stay valid until the
 * callback. The callback runs exactly once, from the loop: with the outcome, or with
 * PG_LOST when the connection died under the request (its fate is unknown: the
 * transaction may or may not have committed). The PGresult passed to it belongs
 * to the pool and is freed after the callback returns.
 */
#ifndef STELLER_PG_H
#define STELLER_PG_H

#include <ev.h>
#include <libpq-fe.h>
#include <stddef.h>

enum pg_outcome {
    PG_OK = 0,
    PG_ERROR = 1, /* the server refused the statement: see sqlstate */
    PG_LOST = 2,  /* the connection went away; retry later */
};

struct pg_pool;

/* res: the last result (PG_OK) or the error result (PG_ERROR), else NULL. */
typedef void pg_done_fn(void *ud, enum pg_outcome outcome, const PGresult *res,
                        const char *sqlstate, const char *message);

/* A pool of `size` connections to conninfo (a libpq URI or key=value string). */
/* statement_timeout_ms is set on every connection (0: the server's default). */
struct pg_pool *pg_new(struct ev_loop *loop, const char *conninfo, int size,
                       int statement_timeout_ms);
void pg_free(struct pg_pool *p);

/* How many connections are ready for a request now. */
int pg_idle(const struct pg_pool *p);

/* 1 when at least one connection is open. */
int pg_is_up(const struct pg_pool *p);

/* Runs sql on an idle connection. copy (may be NULL) is the data for a COPY
 * FROM STDIN in sql. Returns 0, or -1 when no connection is idle (fn not called).
 * fn never runs before pg_run() returns. */
int pg_run(struct pg_pool *p, const char *sql, const char *copy, size_t copy_len, pg_done_fn *fn,
           void *ud);

/* Runs one parameterized statement ($1, $2 ... in sql; values as text, NULL for
 * SQL NULL) with the extended protocol, so values are never spliced into SQL.
 * values must stay valid until fn runs. Same return and callback rules as pg_run. */
int pg_run_params(struct pg_pool *p, const char *sql, int nparams, const char *const *values,
                  pg_done_fn *fn, void *ud);

/* Like pg_run_params(), but when no connection is idle the request waits in a
 * FIFO queue for one (queued requests go before the pg_on_idle callback). When no
 * connection is open at all, fn gets PG_LOST on the next loop iteration, so a
 * handler retries with backoff instead of waiting for a database that is down.
 * Never fails synchronously. To abandon a request (job cancelled), let fn find
 * out through its ud that nobody waits any more: it still runs exactly once.
 *
 * Details: requests that wait when the last open connection is lost end with
 * PG_LOST (from the loop, not inside the callback that saw the loss); so do
 * those still waiting at pg_free(), inside it. While the pool is still making
 * its first connections after pg_new() (up or down not yet known, at most the
 * 10 s connect deadline), requests wait instead of failing, so that jobs fetched
 * at start-up do not all go to retry. A waiting request has no deadline of its
 * own: the caller's timeout bounds it. sql and values must stay valid until fn
 * runs; p must not be NULL. The one exception to "never synchronously": if the
 * queue entry cannot be allocated, fn gets PG_LOST ("out of memory") before
 * pg_submit() returns. */
void pg_submit(struct pg_pool *p, const char *sql, int nparams, const char *const *values,
               pg_done_fn *fn, void *ud);

/* Called whenever a connection becomes idle, so a waiting user can run. */
void pg_on_idle(struct pg_pool *p, void (*fn)(void *ud), void *ud);

/* A data error: this statement's data is wrong (classes 22 and 23, except a
 * unique violation); the same data will fail again. */
int pg_sqlstate_data(const char *sqlstate);

#endif
