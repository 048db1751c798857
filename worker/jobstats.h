/*
 * jobstats.h - per-type run counters and histograms, kept by each worker in
 * plain arrays and summed by the master for /metrics and /stats.json.
 *
 * Worker side: js_run_started() and js_run_ended() are the hot path: a few
 * array increments, no allocation, no lock, no syscall. Once a second (a
 * timer) and once at exit the worker writes its cumulative figures to the
 * master over a non-blocking pipe, one fixed-size record per type; each record
 * is one write(2) of less than PIPE_BUF bytes, so records from several workers
 * never interleave. A record that does not fit in the pipe is dropped: the
 * next one carries the same cumulative values.
 *
 * Master side: a js_table keeps the latest record per (worker pid, type) and,
 * under pid 0, the sum of the last records of workers that exited, so a
 * counter never goes backwards across a restart or a reload. Types are keyed
 * by name: a reload may change the registry's order.
 */
#ifndef STELLER_JOBSTATS_H
#define STELLER_JOBSTATS_H

#include <ev.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "job.h"

#define JS_MAX_TYPES 32
#define JS_NAME_MAX 48
#define JS_NBUCKETS 14 /* the last is +Inf */

enum js_outcome {
    JS_OK,       /* succeeded */
    JS_RETRIED,  /* transient failure, goes to retry */
    JS_DEAD,     /* ran and went to the dead-letter list */
    JS_DEFERRED, /* waits in retry without spending an attempt (job_retry_in) */
    JS_NOUTCOMES
};

extern const char *const js_outcome_names[JS_NOUTCOMES];
/* Upper bounds in seconds of the finite buckets. */
extern const double js_bounds[JS_NBUCKETS - 1];

struct js_hist {
    uint64_t buckets[JS_NBUCKETS]; /* per bucket, not cumulative */
    double sum;
    uint64_t count;
};

struct js_figures {
    uint64_t runs[JS_NOUTCOMES];
    struct js_hist run, wait;
};

/* ---- worker side ---- */

struct js_worker {
    struct js_figures t[JS_MAX_TYPES]; /* by registry index */
    int fd;                            /* the pipe's write end, -1 when none */
    ev_timer timer;
};

/* Takes ownership of fd (-1: nothing is sent) and starts the 1 s timer. */
void js_worker_start(struct js_worker *s, struct ev_loop *loop, int fd);
/* Sends a last snapshot, stops the timer and closes the pipe. */
void js_worker_stop(struct js_worker *s, struct ev_loop *loop);
/* The job starts now (now_ms): its wait since created_at, when known and past. */
void js_run_started(struct js_worker *s, const struct job *job, int64_t now_ms);
/* The job's outcome is known. (Jobs rejected unread have no type to count under:
 * steller_jobs_dead_total counts them.) */
void js_run_ended(struct js_worker *s, const struct job *job, enum js_outcome o, int64_t now_ms);

/* ---- master side ---- */

struct js_entry {
    pid_t pid; /* 0: the sum over exited workers */
    char name[JS_NAME_MAX];
    struct js_figures f;
};

struct js_record; /* the wire format, jobstats.c */

struct js_table {
    struct js_entry *e; /* malloc'd, owned by the table */
    int n, cap;
    unsigned char buf[512]; /* a partly read record */
    size_t have;
};

/* Reads every complete record waiting on fd (non-blocking). */
void js_table_read(struct js_table *t, int fd);
/* The worker pid exited: its last figures join the pid 0 sums. */
void js_table_exited(struct js_table *t, pid_t pid);
/* Fills out (up to max) with one entry per type name, summed over every worker,
 * sorted by name; returns how many. */
int js_table_sum(const struct js_table *t, struct js_entry *out, int max);
void js_table_free(struct js_table *t);

/* Cumulative count of observations <= bucket i. */
uint64_t js_cumulative(const struct js_hist *h, int i);

#endif
