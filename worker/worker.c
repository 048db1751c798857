/*
 * worker.c - one worker process: its loop, its jobs, its shutdown.
 *
 * Shutdown (SIGTERM or SIGINT): stop fetching and drop the blocking connection,
 * let running jobs finish for up to shutdown_timeout, then cancel the rest and
 * requeue them unchanged to the right end of their queues; once every move is
 * confirmed, upkeep_finish() sweeps our processing list (a BLMOVE may have
 * landed a job there as we hung up) and unregisters us. A second signal skips
 * the wait. If Redis stays away, a hard deadline ends the process anyway: its
 * jobs stay in P:processing:<wid> and the reaper of another worker returns them.
 */
#include "worker.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "delivery.h"
#include "pg.h"
#include "log.h"
#include "mail.h"
#include "registry.h"
#include "tmpl.h"
#include "upkeep.h"

int64_t worker_now_ms(const struct worker *w)
{
    return (int64_t)(ev_now(w->loop) * 1000.0);
}

struct ev_loop *job_loop(struct job *job)
{
    return job->w->loop;
}

int64_t job_now_ms(struct job *job)
{
    return worker_now_ms(job->w);
}

struct pg_pool *job_pg(struct job *job)
{
    return job->w->pg;
}

struct mail *job_mail(struct job *job)
{
    return job->w->mail;
}

const struct tmpl_set *job_templates(struct job *job)
{
    return job->w->tmpl;
}

const char *job_prefix(struct job *job)
{
    return job->w->cfg->redis_prefix;
}

/* One job_push() in flight: whom to tell. */
struct worker_push {
    struct worker *w;
    void (*fn)(void *ud, int rc);
    void *ud;
};

static void worker_on_pushed(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct worker_push *p = privdata;
    const redisReply *r = reply;
    (void)ac;
    if (r && r->type == REDIS_REPLY_ERROR) {
        char q[300];
        LOG(LOG_WARN, "redis refused a push", "error=%s", log_q(q, sizeof(q), r->str, r->len));
    }
    /* A NULL reply outside ev_run() comes from rc_free() in worker_cleanup(): the
     * process is ending and job.h promises the handler no callback then. */
    if (r || ev_depth(p->w->loop) > 0)
        p->fn(p->ud, r && r->type == REDIS_REPLY_INTEGER ? 0 : -1);
    free(p);
}

int job_push(struct job *job, const char *queue, const char *const *envs, const size_t *lens,
             int n, void (*fn)(void *ud, int rc), void *ud)
{
    struct worker *w = job->w;
    struct worker_push *p = NULL;
    const char **argv = NULL;
    size_t *argvlen = NULL;
    char key[WORKER_KEY_MAX];
    int rc = -1;

    if (n < 1 || !w->cmd || !rc_is_up(w->cmd))
        return -1;
    snprintf(key, sizeof(key), "%s%s", w->k.queue_prefix, queue);
    p = malloc(sizeof(*p));
    argv = malloc(sizeof(*argv) * ((size_t)n + 2));
    argvlen = malloc(sizeof(*argvlen) * ((size_t)n + 2));
    if (!p || !argv || !argvlen)
        goto out;
    argv[0] = "LPUSH";
    argvlen[0] = 5;
    argv[1] = key;
    argvlen[1] = strlen(key);
    for (int i = 0; i < n; i++) {
        argv[i + 2] = envs[i];
        argvlen[i + 2] = lens[i];
    }
    *p = (struct worker_push){w, fn, ud};
    /* hiredis formats the command into its output buffer here: the bytes are copied. */
    rc = rc_cmd(w->cmd, worker_on_pushed, p, n + 2, argv, argvlen);
    if (rc == 0)
        p = NULL;
out:
    free(p);
    free(argv);
    free(argvlen);
    return rc;
}

static void worker_on_result(redisAsyncContext *ac, void *reply, void *privdata)
{
    const redisReply *r = reply;
    char q[300];
    (void)ac;
    (void)privdata;
    if (r && r->type == REDIS_REPLY_ERROR)
        LOG(LOG_WARN, "redis refused a job result", "error=%s", log_q(q, sizeof(q), r->str, r->len));
}

int job_set_result(struct job *job, const char *text, size_t len)
{
    struct worker *w = job->w;
    char key[WORKER_KEY_MAX + 80], ttl[16];
    const char *argv[5] = {"SET", key, text, "EX", ttl};
    size_t lens[5] = {3, 0, len, 2, 0};
    int head = snprintf(key, sizeof(key), "%s:result:", w->cfg->redis_prefix);
    /* A jid is 1-64 bytes of anything, NUL included: copied by length. */
    if (!w->cmd || head < 0 || (size_t)head + job->env.jid.len > sizeof(key))
        return -1;
    memcpy(key + head, job->env.jid.ptr, job->env.jid.len);
    lens[1] = (size_t)head + job->env.jid.len;
    lens[4] = (size_t)snprintf(ttl, sizeof(ttl), "%d", JOB_RESULT_TTL);
    return rc_cmd(w->cmd, worker_on_result, NULL, 5, argv, lens);
}

int job_worker_full(struct job *job)
{
    return job->w->running >= job->w->cfg->concurrency;
}

const struct config *job_config(struct job *job)
{
    return job->w->cfg;
}

const char *worker_queue_name(const struct worker *w, const char *name, size_t len)
{
    for (int i = 0; i < w->cfg->nqueues; i++) {
        const char *q = w->cfg->queues[i].name;
        if (strlen(q) == len && memcmp(q, name, len) == 0)
            return q;
    }
    return NULL;
}

static void worker_hold(struct worker *w, struct job *job)
{
    job->prev = NULL;
    job->next = w->jobs;
    if (w->jobs)
        w->jobs->prev = job;
    w->jobs = job;
    w->held++;
}

void worker_release_job(struct worker *w, struct job *job)
{
    if (job->prev)
        job->prev->next = job->next;
    else
        w->jobs = job->next;
    if (job->next)
        job->next->prev = job->prev;
    w->held--;
    env_free(&job->env);
    free(job->raw);
    free(job->payload);
    free(job);
}

static void worker_end_run(struct job *job)
{
    job->done = 1;
    ev_timer_stop(job->w->loop, &job->timer);
    job->w->running--;
}

void job_done(struct job *job, enum job_result r, const char *msg)
{
    if (job->done)
        return;
    worker_end_run(job);
    dlv_finish(job->w, job, r, msg);
}

void job_retry_in(struct job *job, int64_t delay_ms, int spend_attempt, const char *msg)
{
    if (job->done)
        return;
    worker_end_run(job);
    dlv_finish_in(job->w, job, delay_ms, spend_attempt, msg);
}

static void worker_on_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct job *job = t->data;
    char msg[96];
    (void)loop;
    (void)revents;
    if (!job->type->cancel) {
        /* A handler without cancel promised to finish inside start(); it did not. */
        LOG(LOG_ERROR, "job overran its timeout and cannot be cancelled", "type=%s",
            job->type->name);
        return;
    }
    job->type->cancel(job);
    snprintf(msg, sizeof(msg), "timed out after %g s", job->type->timeout);
    job_done(job, JOB_RETRY, msg);
}

static void worker_start_job(struct worker *w, struct job *job, const struct job_type *type)
{
    job->type = type;
    job->started_ms = worker_now_ms(w);
    ev_timer_init(&job->timer, worker_on_timeout, type->timeout, 0);
    job->timer.data = job;
    ev_timer_start(w->loop, &job->timer);
    w->running++;
    js_run_started(&w->stats, job, job->started_ms);
    type->start(job);
}

void worker_run_job(struct worker *w, const char *queue, const char *raw, size_t len)
{
    struct job *job = calloc(1, sizeof(*job));
    const struct job_type *type;
    char err[256];

    if (!job || !(job->raw = malloc(len ? len : 1))) {
        /* It stays in the processing list; orphan recovery or the reaper returns it. */
        LOG(LOG_ERROR, "out of memory taking a job", NULL);
        free(job);
        return;
    }
    memcpy(job->raw, raw, len);
    job->raw_len = len;
    job->w = w;
    job->queue = queue;
    worker_hold(w, job);
    if (w->stopping) {
        dlv_requeue(w, job);
        return;
    }
    if (env_decode(&job->env, raw, len, (size_t)w->cfg->max_job_bytes, err, sizeof(err)) != 0) {
        dlv_reject(w, job, err, 1);
        return;
    }
    type = reg_find(job->env.type.ptr, job->env.type.len);
    if (!type) {
        snprintf(err, sizeof(err), "unknown job type '%.*s'", (int)job->env.type.len,
                 job->env.type.ptr);
        dlv_reject(w, job, err, 0);
        return;
    }
    worker_start_job(w, job, type);
}

/* Cancels every running job and hands it back to its queue unchanged. */
static void worker_cancel_all(struct worker *w)
{
    for (struct job *job = w->jobs; job; job = job->next) {
        if (job->done || !job->type || !job->type->cancel)
            continue;
        job->type->cancel(job);
        worker_end_run(job);
        dlv_requeue(w, job);
    }
}

void worker_check_drained(struct worker *w)
{
    if (!w->stopping || w->finishing || w->running > 0 || !dlv_idle(w))
        return;
    w->finishing = 1;
    upkeep_finish(w);
}

static void worker_stop_now(struct worker *w)
{
    w->stopping = 2;
    ev_timer_stop(w->loop, &w->shutdown_timer);
    if (w->running)
        LOG(LOG_WARN, "requeueing unfinished jobs", "count=%d", w->running);
    worker_cancel_all(w);
    worker_check_drained(w);
}

static void worker_begin_drain(struct worker *w)
{
    w->stopping = 1;
    LOG(LOG_INFO, "shutting down", "running=%d timeout=%g", w->running,
        w->cfg->shutdown_timeout);
    fetch_stop(w);
    rc_free(w->blk);
    w->blk = NULL;
    ev_timer_set(&w->shutdown_timer, w->cfg->shutdown_timeout, 0);
    ev_timer_start(w->loop, &w->shutdown_timer);
    ev_timer_set(&w->hard_deadline, w->cfg->shutdown_timeout + 10.0, 0);
    ev_timer_start(w->loop, &w->hard_deadline);
    worker_check_drained(w);
}

void worker_shutdown(struct worker *w, int exit_code)
{
    w->exit_code = exit_code;
    if (!w->stopping)
        worker_begin_drain(w);
}

static void worker_on_signal(struct ev_loop *loop, ev_signal *s, int revents)
{
    struct worker *w = s->data;
    (void)loop;
    (void)revents;
    if (s->signum == SIGHUP)
        return; /* the master reloads by replacing its workers */
    if (s->signum == SIGUSR1 || s->signum == SIGUSR2) {
        log_step(s->signum == SIGUSR1 ? -1 : 1);
        return;
    }
    if (!w->stopping)
        worker_begin_drain(w);
    else if (w->stopping == 1)
        worker_stop_now(w);
}

static void worker_on_shutdown_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    worker_stop_now(t->data);
}

static void worker_on_hard_deadline(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct worker *w = t->data;
    (void)revents;
    LOG(LOG_ERROR, "could not hand back every job before the deadline; the reaper will",
        "held=%d", w->held);
    if (!w->exit_code)
        w->exit_code = 1; /* keep a reason to stop given earlier (worker_shutdown) */
    ev_break(loop, EVBREAK_ALL);
}

static void worker_on_prepare(struct ev_loop *loop, ev_prepare *p, int revents)
{
    struct worker *w = p->data;
    (void)loop;
    (void)revents;
    dlv_flush(w);
    upkeep_scan_orphans(w);
    fetch_kick(w);
}

static void worker_on_idle(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    fetch_kick(t->data);
}

static void worker_on_cmd_state(struct rconn *rc, int up, void *ud)
{
    struct worker *w = ud;
    (void)rc;
    if (up)
        upkeep_on_up(w);
    else
        w->fetching = 0;
}

static void worker_on_blk_state(struct rconn *rc, int up, void *ud)
{
    struct worker *w = ud;
    (void)rc;
    if (!up)
        w->blocking = 0;
}

static void worker_keys(struct worker *w)
{
    const char *p = w->cfg->redis_prefix;
    struct worker_keys *k = &w->k;
    snprintf(k->prefix, sizeof(k->prefix), "%s:", p);
    snprintf(k->processing, sizeof(k->processing), "%s:processing:%s", p, w->wid);
    snprintf(k->paused, sizeof(k->paused), "%s:paused", p);
    snprintf(k->retry, sizeof(k->retry), "%s:retry", p);
    snprintf(k->scheduled, sizeof(k->scheduled), "%s:scheduled", p);
    snprintf(k->dead, sizeof(k->dead), "%s:dead", p);
    snprintf(k->workers, sizeof(k->workers), "%s:workers", p);
    snprintf(k->worker, sizeof(k->worker), "%s:worker:%s", p, w->wid);
    snprintf(k->queue_prefix, sizeof(k->queue_prefix), "%s:queue:", p);
    snprintf(k->stats_prefix, sizeof(k->stats_prefix), "%s:stats:", p);
}

void worker_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGHUP);
    sigaddset(set, SIGUSR1);
    sigaddset(set, SIGUSR2);
}

static void worker_unblock_signals(void)
{
    sigset_t set;
    worker_signals(&set);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
}

static void worker_watchers(struct worker *w)
{
    ev_signal *sigs[5] = {&w->sig_term, &w->sig_int, &w->sig_hup, &w->sig_usr1, &w->sig_usr2};
    int nums[5] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2};
    for (int i = 0; i < 5; i++) {
        ev_signal_init(sigs[i], worker_on_signal, nums[i]);
        sigs[i]->data = w;
        ev_signal_start(w->loop, sigs[i]);
    }
    ev_prepare_init(&w->flush, worker_on_prepare);
    w->flush.data = w;
    ev_prepare_start(w->loop, &w->flush);
    ev_timer_init(&w->idle, worker_on_idle, 0, 0);
    w->idle.data = w;
    ev_timer_init(&w->shutdown_timer, worker_on_shutdown_timer, 0, 0);
    w->shutdown_timer.data = w;
    ev_timer_init(&w->hard_deadline, worker_on_hard_deadline, 0, 0);
    w->hard_deadline.data = w;
    worker_unblock_signals(); /* the master blocked them across fork(); see master.c */
}

/* The master checked the templates just before forking us; they fail to load
 * here only if the files changed in between. The worker still runs its other
 * job types; email handlers find job_templates() NULL until a reload brings
 * workers with good templates. */
static void worker_tmpl_load(struct worker *w)
{
    char err[512], q[600];
    if (!(w->tmpl = tmpl_load(w->cfg->email_templates, err, sizeof(err))))
        LOG(LOG_ERROR, "email templates not loaded; email jobs cannot render", "error=%s",
            log_q(q, sizeof(q), err, strlen(err)));
}

static int worker_init(struct worker *w, const struct config *cfg, const char *wid)
{
    char err[256];
    w->loop = ev_loop_new(EVFLAG_AUTO);
    if (!w->loop) {
        LOG(LOG_ERROR, "cannot create an event loop", NULL);
        return -1;
    }
    w->cfg = cfg;
    snprintf(w->wid, sizeof(w->wid), "%s", wid);
    if (gethostname(w->host, sizeof(w->host)) != 0)
        snprintf(w->host, sizeof(w->host), "unknown");
    w->started_ms = worker_now_ms(w);
    if (rurl_parse(cfg->redis_url, &w->url, err, sizeof(err)) != 0 ||
        reg_init(cfg, err, sizeof(err)) != 0) {
        char q[300];
        LOG(LOG_ERROR, "worker cannot start", "error=%s", log_q(q, sizeof(q), err, strlen(err)));
        return -1;
    }
    worker_keys(w);
    worker_watchers(w);
    worker_tmpl_load(w);
    return 0;
}

/* The email transport, when an email type is registered. A failure does not stop
 * the worker: its other job types run, and email jobs fail as transient (retried
 * with backoff, the reason in the log) until a restart or reload sets it up. */
static void worker_mail_start(struct worker *w)
{
    const struct job_type *t;
    char err[256], q[300];
    for (size_t i = 0; (t = reg_at(i)); i++)
        w->mail_wanted |= strncmp(t->name, "email.", 6) == 0;
    if (!w->mail_wanted)
        return;
    w->mail = mail_new(w->loop, w->cfg, err, sizeof(err));
    if (!w->mail)
        LOG(LOG_ERROR, "email transport not available; email jobs will be retried",
            "error=%s", log_q(q, sizeof(q), err, strlen(err)));
}

static void worker_cleanup(struct worker *w)
{
    rc_free(w->cmd);
    rc_free(w->blk);
    w->cmd = w->blk = NULL;
    pg_free(w->pg); /* requests still out end with PG_LOST; their jobs are cancelled */
    w->pg = NULL;
    mail_free(w->mail); /* after pg: a PG_LOST callback of a cancelled job sends nothing */
    w->mail = NULL;
    upkeep_free(w);
    while (w->jobs)
        worker_release_job(w, w->jobs);
    tmpl_free(w->tmpl); /* after the jobs: none renders any more */
    w->tmpl = NULL;
    reg_free();
    if (w->loop)
        ev_loop_destroy(w->loop);
}

int worker_main(const struct config *cfg, const char *wid, const char *pred_wid,
                int pred_crashed, int notify_fd, int stats_fd)
{
    struct worker w;
    memset(&w, 0, sizeof(w));
    w.notify_fd = notify_fd;
    w.stats.fd = -1;
    signal(SIGPIPE, SIG_IGN);
    srand((unsigned)getpid() ^ (unsigned)time(NULL));
    if (worker_init(&w, cfg, wid) != 0 || upkeep_start(&w, pred_wid, pred_crashed) != 0) {
        if (stats_fd >= 0)
            close(stats_fd);
        worker_cleanup(&w);
        return 1;
    }
    js_worker_start(&w.stats, w.loop, stats_fd);
    if (cfg->database_url[0])
        w.pg = pg_new(w.loop, cfg->database_url, cfg->database_pool_size,
                      (int)(cfg->database_statement_timeout * 1000));
    worker_mail_start(&w);
    w.cmd = rc_new(w.loop, &w.url, "cmd", worker_on_cmd_state, &w);
    w.blk = rc_new(w.loop, &w.url, "block", worker_on_blk_state, &w);
    LOG(LOG_INFO, "worker started", "wid=%s concurrency=%d", w.wid, cfg->concurrency);
    ev_run(w.loop, 0);
    LOG(LOG_INFO, "worker stopped", "wid=%s exit=%d", w.wid, w.exit_code);
    js_worker_stop(&w.stats, w.loop); /* before reg_free(): it names the types */
    worker_cleanup(&w);
    return w.exit_code;
}
