/*
 * job.h - the handler contract: the only part of the engine a job type sees.
 *
 * The engine calls type->start(job) once. The handler starts its work on the
 * worker's loop (job_loop()) and later calls job_done() exactly once, from any
 * callback, or before start returns. If the job overruns its timeout or the
 * worker is shutting down hard, the engine calls type->cancel(job) instead:
 * cancel must stop every watcher and request of the job at once and must not
 * call job_done() afterwards; the engine then fails the job itself. A handler
 * that always finishes inside start() needs no cancel.
 *
 * Ownership: the engine owns struct job and everything in it. job->data is the
 * handler's, for its own state; it must free it before job_done() or in cancel.
 * After job_done() or cancel() the handler must not touch the job again.
 */
#ifndef STELLER_JOB_H
#define STELLER_JOB_H

#include <ev.h>
#include <stdint.h>

#include "backoff.h"
#include "envelope.h"

enum job_result {
    JOB_OK = 0,
    JOB_RETRY = 1, /* transient: retried with backoff while attempts remain */
    JOB_DEAD = 2,  /* permanent: straight to the dead-letter list */
};

struct job;
struct pg_pool;
struct config;
struct mail;
struct tmpl_set;

struct job_type {
    const char *name;
    const char *queue;  /* default queue producers push it to */
    int max_attempts;   /* default 25 */
    double timeout;     /* seconds, default 60 */
    struct backoff backoff;
    int debug_only;     /* registered only when debug_jobs = true */
    void (*start)(struct job *job);
    void (*cancel)(struct job *job);
    /* Optional: the worker process is ending and every job of this type was
     * cancelled or finished; free what the type keeps for the process. */
    void (*stop)(void);
};

struct worker;

struct job {
    struct env env;
    const struct job_type *type; /* the effective type (config overrides applied) */
    char *raw;                   /* exact bytes as in the processing list */
    size_t raw_len;
    struct worker *w;
    void *data;                  /* handler-private */
    ev_timer timer;              /* the engine's timeout timer */
    int64_t started_ms;
    int done;                    /* set once job_done() ran */

    /* Engine-private from here on: how the job leaves the processing list. */
    const char *queue;           /* the queue it was fetched from (owned by the worker) */
    int move;                    /* enum dlv_move */
    char *payload;               /* rewritten envelope or dead record, malloc'd */
    size_t payload_len;
    int64_t due_ms;              /* retry: when it runs again */
    int count_failed;            /* dead: the job ran and failed */
    int matched;                 /* scratch for orphan recovery */
    struct job *prev, *next;     /* the worker's list of every job it holds */
    struct job *next_pending;    /* moves waiting to be sent */
};

/* Reports the outcome. msg (may be NULL for JOB_OK) is copied. */
void job_done(struct job *job, enum job_result r, const char *msg);

/*
 * Reports a failure whose next try should come after delay_ms rather than after
 * the type's backoff: a provider's Retry-After (spend_attempt = 1: counts like
 * JOB_RETRY and goes dead once attempts run out), or a transport that is known to
 * be down (spend_attempt = 0: the job waits, its attempt count unchanged, and is
 * not counted as failed). Ends the job like job_done(). msg is copied.
 */
void job_retry_in(struct job *job, int64_t delay_ms, int spend_attempt, const char *msg);

/*
 * Pushes n ready-made envelopes (bytes, e.g. from env_encode) onto PREFIX:queue:<queue>
 * with one LPUSH on the worker's Redis connection: all or none. fn(ud, 0) when
 * Redis took them, fn(ud, -1) when it did not (Redis down or an error): the caller
 * decides whether to retry. fn runs exactly once, from the loop, never inside
 * job_push(); it does not run if the worker process ends first. Returns 0, or -1
 * (fn not called) when Redis is not connected. The bytes are copied.
 */
int job_push(struct job *job, const char *queue, const char *const *envs, const size_t *lens,
             int n, void (*fn)(void *ud, int rc), void *ud);

/*
 * Keeps a short result of the job for tools such as `stellerctl sweep --wait`:
 * SET PREFIX:result:<jid> text EX JOB_RESULT_TTL on the worker's Redis
 * connection. Call it before job_done(): it is sent ahead of the job's ack on
 * the same connection, so whoever sees the job gone finds its result. Best
 * effort, for reading by people: returns -1 when Redis is not connected, and a
 * refusal is only logged. The bytes are copied.
 */
#define JOB_RESULT_TTL 86400
int job_set_result(struct job *job, const char *text, size_t len);

/* The Redis key prefix (redis.prefix), for handlers that name keys. */
const char *job_prefix(struct job *job);

/* The worker process's email transport (worker/mail.h) and templates (worker/tmpl.h),
 * created at worker start; NULL when no email type is registered. */
struct mail *job_mail(struct job *job);
const struct tmpl_set *job_templates(struct job *job);

/* The worker process's event loop, for the handler's watchers. */
struct ev_loop *job_loop(struct job *job);

/* Milliseconds since the epoch, from the loop's clock. */
int64_t job_now_ms(struct job *job);

/* The worker process's PostgreSQL pool (worker/pg.h), or NULL when database.url
 * is empty. Shared by every job of the process. */
struct pg_pool *job_pg(struct job *job);

/* 1 when every slot of the worker is taken, so nothing new will arrive until a
 * job finishes: a batching handler should write what it holds now. */
int job_worker_full(struct job *job);

/* The configuration the worker runs with. */
const struct config *job_config(struct job *job);

#endif
