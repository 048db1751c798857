/*
 * worker.h - one worker process: a libev loop running up to `concurrency` jobs.
 *
 * The worker owns two Redis connections: `cmd` carries fetches, acks and every
 * other move, pipelined in order; `blk` only waits (BLMOVE) when all queues are
 * empty, so an idle worker wakes as soon as a job arrives without polling.
 *
 * A job's life: fetch.c moves it into P:processing:<wid> and calls
 * worker_run_job(); the handler runs; job_done() hands the outcome to
 * delivery.c, which queues its move (ack, retry, dead, requeue); the moves are
 * sent in one batch per loop iteration from an ev_prepare watcher, followed by
 * the next fetch, so one write carries both. A job is freed only once Redis
 * confirmed its move; if the connection drops first, the move is sent again
 * after reconnecting (every move script is idempotent).
 *
 * upkeep.c runs the heartbeat, the promoter of retry and scheduled jobs, and
 * the reaper that gives back the jobs of dead workers.
 */
#ifndef STELLER_WORKER_H
#define STELLER_WORKER_H

#include <ev.h>
#include <signal.h>
#include <stdint.h>

#include "config.h"
#include "job.h"
#include "jobstats.h"
#include "rconn.h"
#include "redisurl.h"

#define WORKER_KEY_MAX 320
#define WORKER_WID_MAX 128
#define WORKER_PREFIX_MAX 128 /* config.c bounds redis.prefix well below this */

struct worker_keys {
    char processing[WORKER_KEY_MAX];
    char paused[WORKER_KEY_MAX];
    char retry[WORKER_KEY_MAX];
    char scheduled[WORKER_KEY_MAX];
    char dead[WORKER_KEY_MAX];
    char workers[WORKER_KEY_MAX];
    char worker[WORKER_KEY_MAX];
    char queue_prefix[WORKER_PREFIX_MAX]; /* "P:queue:" */
    char stats_prefix[WORKER_PREFIX_MAX]; /* "P:stats:" */
    char prefix[WORKER_PREFIX_MAX];       /* "P:" */
};

struct upkeep; /* upkeep.c */
struct tmpl_set; /* tmpl.h */

struct worker {
    struct ev_loop *loop;
    const struct config *cfg;
    struct rurl url;
    char wid[WORKER_WID_MAX];
    char host[64];
    int64_t started_ms;
    struct worker_keys k;

    struct rconn *cmd, *blk;
    struct pg_pool *pg;     /* NULL when database.url is empty */
    struct mail *mail;      /* the email transport; NULL when no email.* type is
                               registered or it could not be set up (logged) */
    int mail_wanted;        /* an email.* type is registered, so mail should exist */
    struct tmpl_set *tmpl;  /* the email templates (tmpl.h), loaded at start; NULL when
                               loading failed (logged) */
    int registered;         /* first heartbeat sent since start */
    int redis_ok;           /* rcheck.c passed the Redis behind cmd since it last came up */

    int running;            /* handlers started and not done */
    int held;               /* jobs held in memory (running or moving) */
    int fetching;           /* a fetch script is in flight */
    int blocking;           /* a BLMOVE is in flight on blk */
    const char *blk_queue;  /* the queue it waits on */
    int want_scan, scanning; /* orphan recovery wanted / in flight (upkeep.c) */
    int stopping;           /* 0 running, 1 draining, 2 stop now */
    int finishing;          /* the final self-requeue has been sent */
    int exit_code;

    struct job *jobs;       /* every job held: running, or waiting for its move */
    struct job *pending, *pending_tail; /* moves to send */
    int moves_in_flight;
    int64_t moves_hold_until_ms; /* after an error reply, wait before sending again */

    ev_prepare flush;
    ev_timer idle;          /* polls when blocking is not possible */
    ev_timer shutdown_timer;
    ev_timer hard_deadline;
    ev_signal sig_term, sig_int, sig_hup, sig_usr1, sig_usr2;

    struct upkeep *upkeep;
    int notify_fd;          /* pipe to the master; one byte on the first connect to Redis
                               tells it (and systemd) we are ready; -1 once written or none */
    struct js_worker stats; /* per-type counters, sent to the master each second */
};

/* Runs a worker process until it has shut down; returns the exit code.
 * pred_wid (may be NULL) names a predecessor whose jobs to reclaim at once,
 * pred_crashed whether it died holding them. notify_fd (or -1): the write end
 * of the master's readiness pipe; stats_fd (or -1): the write end of its
 * per-type statistics pipe (jobstats.h); the worker owns both and closes them. */
int worker_main(const struct config *cfg, const char *wid, const char *pred_wid,
                int pred_crashed, int notify_fd, int stats_fd);

/* fetch.c gives each fetched job here; raw is copied. */
void worker_run_job(struct worker *w, const char *queue, const char *raw, size_t len);

/* The queue name as owned by the config (stable pointer), or NULL if not configured. */
const char *worker_queue_name(const struct worker *w, const char *name, size_t len);

/* Frees a job whose move Redis confirmed. */
void worker_release_job(struct worker *w, struct job *job);

/* Called when something happened that may let the worker finish shutting down. */
void worker_check_drained(struct worker *w);

/* Stops the worker as SIGTERM does (a no-op if it is already stopping); the
 * process then exits with exit_code. */
void worker_shutdown(struct worker *w, int exit_code);

int64_t worker_now_ms(const struct worker *w);

/* The signals a worker process handles (the master blocks them across fork). */
void worker_signals(sigset_t *set);

/* fetch.c */
void fetch_kick(struct worker *w);
void fetch_stop(struct worker *w);

#endif
