/*
 * upkeep.c - heartbeat, promoter, reaper and orphan recovery for one worker.
 *
 * Heartbeat: every heartbeat_interval, HSET P:worker:<wid> (host, pid,
 * started_at, queues, concurrency, busy, beat, pg, mail), PEXPIRE it to heartbeat_ttl and SADD
 * the wid to P:workers. The TTL is the liveness signal: a worker whose hash
 * expired is dead to everyone else.
 *
 * Reaper: every reaper_interval, any wid in P:workers without a live hash is
 * reaped: each job in its processing list gets "crashes" raised and goes back to
 * the right end of its queue, or to the dead list as "worker crashed while
 * processing" once it reached poison_limit; then the wid leaves P:workers. Each
 * job moves with requeue.lua or dead.lua, so racing reapers move it once. The
 * master also names the previous worker of a slot that died, and the new worker
 * reaps it at once instead of waiting for the TTL.
 *
 * Orphans: when a fetch reply is lost to a dropped connection, its jobs sit in
 * our own processing list unknown to us. After each reconnect we list it and
 * requeue every entry that no job we hold accounts for.
 *
 * Each time cmd comes up, rcheck.c first checks that this Redis keeps jobs
 * (maxmemory-policy, persistence); everything above, and fetching, waits for
 * it. A Redis that may evict jobs stops the worker with EX_CONFIG.
 */
#include "upkeep.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#include "delivery.h"
#include "log.h"
#include "mail.h"
#include "pg.h"
#include "rcheck.h"
#include "registry.h"

#define REAP_BATCH 200
#define PROMOTE_BATCH 500
#define REAP_QUEUE_MAX 64

struct reap {
    struct worker *w;
    char wid[WORKER_WID_MAX];
    char proc[WORKER_KEY_MAX];
    char guard[WORKER_KEY_MAX]; /* P:worker:<wid> when reaping on an expired heartbeat */
    int crashed, self;
    int outstanding, full, failed, moved;
};

struct upkeep {
    struct worker *w;
    ev_timer heartbeat, promote, reaper;
    int ever_up;
    char pred_wid[WORKER_WID_MAX];
    int pred_crashed;
    struct reap *reap;                      /* the reap in progress, one at a time */
    char *waiting[REAP_QUEUE_MAX];          /* wids to reap next */
    int nwaiting;
};

static double upkeep_jitter(double s)
{
    return s * (0.9 + 0.2 * (double)rand() / RAND_MAX);
}

/* ---- moving one held entry (reaper and orphans share this) ---- */

static void upkeep_queue_of(const struct env *e, char *buf, size_t size)
{
    const struct job_type *type;
    if (e->queue.ptr && e->queue.len) {
        env_strcpy(buf, size, e->queue);
        return;
    }
    type = reg_find(e->type.ptr, e->type.len);
    snprintf(buf, size, "%s", type ? type->queue : "default");
}

/* Sends the move for raw, held in proc: requeue (crashes raised when crashed),
 * or dead once poisoned or when it is no envelope. Returns rc_cmd's result. */
static int upkeep_move_held(struct worker *w, const char *proc, const char *raw, size_t len,
                            int crashed, const char *guard, redisCallbackFn *fn, void *privdata)
{
    struct env e;
    char err[256], queue[256];
    msgpack_sbuffer sb;
    int rc;

    msgpack_sbuffer_init(&sb);
    if (env_decode(&e, raw, len, (size_t)w->cfg->max_job_bytes, err, sizeof(err)) != 0) {
        env_malformed_record(raw, len, err, worker_now_ms(w), &sb);
        rc = dlv_send_dead(w, proc, raw, len, sb.data, sb.size, 0, guard, fn, privdata);
    } else if (crashed && e.crashes + 1 >= w->cfg->poison_limit) {
        e.crashes++;
        e.has |= ENV_HAS_CRASHES;
        dlv_dead_record(&e, "worker crashed while processing", worker_now_ms(w), 1, &sb);
        rc = dlv_send_dead(w, proc, raw, len, sb.data, sb.size, 1, guard, fn, privdata);
    } else {
        upkeep_queue_of(&e, queue, sizeof(queue));
        if (crashed) {
            e.crashes++;
            e.has |= ENV_HAS_CRASHES;
            env_encode(&e, &sb);
        }
        rc = dlv_send_requeue(w, proc, queue, raw, len, crashed ? sb.data : raw,
                              crashed ? sb.size : len, guard, fn, privdata);
    }
    env_free(&e);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

/* ---- reaping one worker's processing list ---- */

static void upkeep_reap_next(struct upkeep *u);
static void upkeep_self_reap(struct worker *w);
static void reap_range(struct reap *r);

static void reap_end(struct reap *r)
{
    struct upkeep *u = r->w->upkeep;
    struct worker *w = r->w;
    int self = r->self;
    if (r->moved || !r->failed)
        LOG(r->moved ? LOG_INFO : LOG_DEBUG, "reaped worker", "wid=%s jobs=%d crashed=%d",
            r->wid, r->moved, r->crashed);
    if (u->reap == r)
        u->reap = NULL;
    free(r);
    if (self)
        ev_break(w->loop, EVBREAK_ALL);
    else
        upkeep_reap_next(u);
}

static void reap_on_unregister(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    (void)reply;
    reap_end(privdata);
}

static void reap_step(struct reap *r)
{
    struct worker *w = r->w;
    char k_worker[WORKER_KEY_MAX];
    if (r->failed) {
        reap_end(r);
        return;
    }
    if (r->full) {
        reap_range(r);
        return;
    }
    snprintf(k_worker, sizeof(k_worker), "%sworker:%s", w->k.prefix, r->wid);
    const char *argv[8] = {"EVALSHA", rc_sha(w->cmd, SCR_UNREGISTER), "3", r->proc,
                           w->k.workers, k_worker, r->wid, r->guard[0] ? "guard" : ""};
    if (rc_cmd(w->cmd, reap_on_unregister, r, 8, argv, NULL) != 0)
        reap_end(r);
}

static void reap_on_move(redisAsyncContext *ac, void *r_, void *privdata)
{
    struct reap *r = privdata;
    redisReply *reply = r_;
    (void)ac;
    if (!reply || reply->type == REDIS_REPLY_ERROR)
        r->failed = 1; /* try again on the next reaper tick */
    else if (reply->type == REDIS_REPLY_INTEGER && reply->integer == 1)
        r->moved++;
    if (--r->outstanding == 0)
        reap_step(r);
}

static void reap_on_range(redisAsyncContext *ac, void *r_, void *privdata)
{
    struct reap *r = privdata;
    redisReply *reply = r_;
    (void)ac;
    if (!reply || reply->type != REDIS_REPLY_ARRAY) {
        r->failed = 1;
        reap_step(r);
        return;
    }
    r->full = reply->elements == REAP_BATCH;
    for (size_t i = 0; i < reply->elements; i++) {
        redisReply *el = reply->element[i];
        if (upkeep_move_held(r->w, r->proc, el->str, el->len, r->crashed,
                             r->guard[0] ? r->guard : NULL, reap_on_move, r) == 0)
            r->outstanding++;
        else
            r->failed = 1;
    }
    if (r->outstanding == 0)
        reap_step(r);
}

static void reap_range(struct reap *r)
{
    char stop[16];
    snprintf(stop, sizeof(stop), "%d", REAP_BATCH - 1);
    const char *argv[4] = {"LRANGE", r->proc, "0", stop};
    if (rc_cmd(r->w->cmd, reap_on_range, r, 4, argv, NULL) != 0) {
        r->failed = 1;
        reap_end(r);
    }
}

/* guarded: the wid looked dead only because its heartbeat expired, so every
 * move checks the heartbeat is still gone (the master's word needs no guard). */
static void upkeep_reap(struct upkeep *u, const char *wid, int crashed, int guarded)
{
    struct reap *r = calloc(1, sizeof(*r));
    if (!r)
        return;
    r->w = u->w;
    snprintf(r->wid, sizeof(r->wid), "%s", wid);
    snprintf(r->proc, sizeof(r->proc), "%sprocessing:%s", u->w->k.prefix, wid);
    r->crashed = crashed;
    if (guarded)
        snprintf(r->guard, sizeof(r->guard), "%sworker:%s", u->w->k.prefix, wid);
    u->reap = r;
    reap_range(r);
}

static void upkeep_reap_next(struct upkeep *u)
{
    if (u->reap || u->nwaiting == 0 || u->w->stopping)
        return;
    char *wid = u->waiting[--u->nwaiting];
    upkeep_reap(u, wid, 1, 1);
    free(wid);
}

static void upkeep_want_reap(struct upkeep *u, const char *wid)
{
    if (u->reap && strcmp(u->reap->wid, wid) == 0)
        return;
    for (int i = 0; i < u->nwaiting; i++)
        if (strcmp(u->waiting[i], wid) == 0)
            return;
    if (u->nwaiting < REAP_QUEUE_MAX)
        u->waiting[u->nwaiting++] = strdup(wid);
    upkeep_reap_next(u);
}

/* ---- the periodic reaper: which wids lost their heartbeat ---- */

struct reaper_probe {
    struct upkeep *u;
    char wid[WORKER_WID_MAX];
};

static void reaper_on_exists(redisAsyncContext *ac, void *r_, void *privdata)
{
    struct reaper_probe *p = privdata;
    redisReply *reply = r_;
    (void)ac;
    if (reply && reply->type == REDIS_REPLY_INTEGER && reply->integer == 0)
        upkeep_want_reap(p->u, p->wid);
    free(p);
}

static void reaper_on_members(redisAsyncContext *ac, void *r_, void *privdata)
{
    struct upkeep *u = privdata;
    redisReply *reply = r_;
    char key[WORKER_KEY_MAX];
    (void)ac;
    if (!reply || reply->type != REDIS_REPLY_ARRAY)
        return;
    for (size_t i = 0; i < reply->elements; i++) {
        redisReply *el = reply->element[i];
        struct reaper_probe *p;
        if (el->type != REDIS_REPLY_STRING || strcmp(el->str, u->w->wid) == 0 ||
            el->len >= WORKER_WID_MAX || !(p = malloc(sizeof(*p))))
            continue;
        p->u = u;
        memcpy(p->wid, el->str, el->len + 1);
        snprintf(key, sizeof(key), "%sworker:%s", u->w->k.prefix, el->str);
        const char *argv[2] = {"EXISTS", key};
        if (rc_cmd(u->w->cmd, reaper_on_exists, p, 2, argv, NULL) != 0)
            free(p);
    }
}

static void upkeep_on_reaper(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct upkeep *u = t->data;
    (void)revents;
    ev_timer_set(t, upkeep_jitter(u->w->cfg->reaper_interval), 0);
    ev_timer_start(loop, t);
    if (u->w->stopping || u->reap || !rc_is_up(u->w->cmd))
        return;
    const char *argv[2] = {"SMEMBERS", u->w->k.workers};
    rc_cmd(u->w->cmd, reaper_on_members, u, 2, argv, NULL);
}

/* ---- heartbeat ---- */

/* "transport:breaker" (e.g. "sendgrid:closed"); "off" without an email type,
 * "error" when the transport could not be set up. */
static void upkeep_mail_state(const struct worker *w, char *buf, size_t size)
{
    if (w->mail)
        snprintf(buf, size, "%s:%s", mail_transport(w->mail), mail_breaker_state(w->mail));
    else
        snprintf(buf, size, "%s", w->mail_wanted ? "error" : "off");
}

static void upkeep_beat(struct upkeep *u)
{
    struct worker *w = u->w;
    char pid[16], started[24], conc[16], busy[16], beat[24], ttl[24], queues[1024];
    size_t off = 0;
    queues[0] = '\0';
    for (int i = 0; i < w->cfg->nqueues && off < sizeof(queues); i++)
        off += snprintf(queues + off, sizeof(queues) - off, "%s%s", i ? "," : "",
                        w->cfg->queues[i].name);
    snprintf(pid, sizeof(pid), "%d", (int)getpid());
    snprintf(started, sizeof(started), "%lld", (long long)w->started_ms);
    snprintf(conc, sizeof(conc), "%d", w->cfg->concurrency);
    snprintf(busy, sizeof(busy), "%d", w->running);
    snprintf(beat, sizeof(beat), "%lld", (long long)worker_now_ms(w));
    snprintf(ttl, sizeof(ttl), "%lld", (long long)(w->cfg->heartbeat_ttl * 1000));
    const char *pg = !w->pg ? "off" : pg_is_up(w->pg) ? "up" : "down";
    char mail[48];
    upkeep_mail_state(w, mail, sizeof(mail));
    const char *hset[20] = {"HSET", w->k.worker, "host", w->host, "pid", pid, "started_at",
                            started, "queues", queues, "concurrency", conc, "busy", busy,
                            "beat", beat, "pg", pg, "mail", mail};
    const char *pexp[3] = {"PEXPIRE", w->k.worker, ttl};
    const char *sadd[3] = {"SADD", w->k.workers, w->wid};
    if (rc_cmd(w->cmd, NULL, NULL, 20, hset, NULL) != 0)
        return;
    rc_cmd(w->cmd, NULL, NULL, 3, pexp, NULL);
    rc_cmd(w->cmd, NULL, NULL, 3, sadd, NULL);
    w->registered = 1;
}

static void upkeep_on_heartbeat(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct upkeep *u = t->data;
    (void)loop;
    (void)revents;
    if (!u->w->finishing)
        upkeep_beat(u);
}

/* ---- promoter ---- */

static void upkeep_promote_one(struct upkeep *u, const char *key);

static void promote_on_reply(redisAsyncContext *ac, void *r_, void *privdata)
{
    struct upkeep *u = privdata;
    redisReply *reply = r_;
    (void)ac;
    if (reply && reply->type == REDIS_REPLY_INTEGER && reply->integer >= PROMOTE_BATCH) {
        /* more are due: come back on the next loop iteration, not in a tight loop */
        ev_timer_stop(u->w->loop, &u->promote);
        ev_timer_set(&u->promote, 0.001, 0);
        ev_timer_start(u->w->loop, &u->promote);
    }
}

static void upkeep_promote_one(struct upkeep *u, const char *key)
{
    struct worker *w = u->w;
    char now[24], limit[16];
    snprintf(now, sizeof(now), "%lld", (long long)worker_now_ms(w));
    snprintf(limit, sizeof(limit), "%d", PROMOTE_BATCH);
    const char *argv[8] = {"EVALSHA", rc_sha(w->cmd, SCR_PROMOTE), "1", key, now, limit,
                           w->k.queue_prefix, "default"};
    rc_cmd(w->cmd, promote_on_reply, u, 8, argv, NULL);
}

static void upkeep_on_promote(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct upkeep *u = t->data;
    (void)revents;
    ev_timer_set(t, upkeep_jitter(u->w->cfg->promote_interval), 0);
    ev_timer_start(loop, t);
    if (u->w->stopping || !rc_is_up(u->w->cmd))
        return;
    upkeep_promote_one(u, u->w->k.retry);
    upkeep_promote_one(u, u->w->k.scheduled);
}

/* ---- orphans after a reconnect ---- */

static void orphan_on_move(redisAsyncContext *ac, void *r_, void *privdata)
{
    redisReply *reply = r_;
    (void)ac;
    (void)privdata;
    if (reply && reply->type == REDIS_REPLY_INTEGER && reply->integer == 1)
        LOG(LOG_INFO, "requeued a job whose fetch reply was lost", NULL);
}

static int upkeep_holds(struct worker *w, const char *raw, size_t len)
{
    for (struct job *job = w->jobs; job; job = job->next) {
        if (!job->matched && job->raw_len == len && memcmp(job->raw, raw, len) == 0) {
            job->matched = 1;
            return 1;
        }
    }
    return 0;
}

static void orphan_on_range(redisAsyncContext *ac, void *r_, void *privdata)
{
    struct worker *w = privdata;
    redisReply *reply = r_;
    (void)ac;
    w->scanning = 0;
    if (!reply || reply->type != REDIS_REPLY_ARRAY) {
        w->want_scan = 1;
        return;
    }
    for (struct job *job = w->jobs; job; job = job->next)
        job->matched = 0;
    for (size_t i = 0; i < reply->elements; i++) {
        redisReply *el = reply->element[i];
        if (!upkeep_holds(w, el->str, el->len))
            upkeep_move_held(w, w->k.processing, el->str, el->len, 0, NULL, orphan_on_move,
                             NULL);
    }
}

/* The scan waits while a BLMOVE is out: a job it moved but whose reply is still
 * on its way would look like an orphan and run twice. fetch_kick() waits for the
 * scan in turn. */
void upkeep_scan_orphans(struct worker *w)
{
    const char *argv[4] = {"LRANGE", w->k.processing, "0", "-1"};
    if (!w->want_scan || w->scanning || w->blocking || w->finishing || !rc_is_up(w->cmd))
        return;
    if (rc_cmd(w->cmd, orphan_on_range, w, 4, argv, NULL) == 0) {
        w->want_scan = 0;
        w->scanning = 1;
    }
}

/* ---- lifecycle ---- */

/* Redis answered for the first time: one byte tells the master, which tells
 * systemd (READY=1). The pipe is non-blocking and the master drains it, so
 * this never waits; a failed write only delays readiness to another worker. */
static void upkeep_tell_ready(struct worker *w)
{
    if (w->notify_fd < 0)
        return;
    if (write(w->notify_fd, "r", 1) != 1)
        LOG(LOG_DEBUG, "cannot tell the master we are ready", "errno=%d", errno);
    close(w->notify_fd);
    w->notify_fd = -1;
}

/* The Redis behind cmd may keep jobs: the rest of coming up. */
static void upkeep_went_up(struct worker *w)
{
    struct upkeep *u = w->upkeep;
    upkeep_beat(u);
    if (u->ever_up) {
        w->want_scan = 1; /* a fetch reply may have been lost with the connection */
        return;
    }
    u->ever_up = 1;
    upkeep_tell_ready(w);
    ev_timer_start(w->loop, &u->heartbeat);
    ev_timer_set(&u->promote, 0.0, 0);
    ev_timer_start(w->loop, &u->promote);
    ev_timer_set(&u->reaper, upkeep_jitter(w->cfg->reaper_interval), 0);
    ev_timer_start(w->loop, &u->reaper);
    if (u->pred_wid[0])
        upkeep_reap(u, u->pred_wid, u->pred_crashed, 0);
}

static void upkeep_on_checked(struct worker *w, enum rcheck_result r)
{
    if (r == RCHECK_LOST || w->finishing)
        return; /* the next connect checks again; or shutdown swept up meanwhile */
    if (r == RCHECK_FAILED) {
        /* Restarting would find the same Redis: the master stops on this exit code. */
        worker_shutdown(w, EX_CONFIG);
        return;
    }
    w->redis_ok = 1;
    upkeep_went_up(w);
}

/* Nothing is fetched, and on the first connect nothing registered or reaped,
 * until rcheck.c has seen that this Redis keeps jobs. */
void upkeep_on_up(struct worker *w)
{
    w->redis_ok = 0;
    if (w->finishing) {
        upkeep_self_reap(w); /* shutdown was waiting for Redis */
        return;
    }
    rcheck_start(w, upkeep_on_checked);
}

static void upkeep_self_reap(struct worker *w)
{
    struct reap *r = calloc(1, sizeof(*r));
    if (!r) {
        ev_break(w->loop, EVBREAK_ALL);
        return;
    }
    r->w = w;
    snprintf(r->wid, sizeof(r->wid), "%s", w->wid);
    snprintf(r->proc, sizeof(r->proc), "%s", w->k.processing);
    r->self = 1;
    reap_range(r);
}

void upkeep_finish(struct worker *w)
{
    struct upkeep *u = w->upkeep;
    ev_timer_stop(w->loop, &u->promote);
    ev_timer_stop(w->loop, &u->reaper);
    if (!w->registered) {
        ev_break(w->loop, EVBREAK_ALL); /* never fetched, so it holds nothing in Redis */
        return;
    }
    /* While Redis is away this waits for upkeep_on_up(); the hard deadline bounds it. */
    if (rc_is_up(w->cmd))
        upkeep_self_reap(w);
}

int upkeep_start(struct worker *w, const char *pred_wid, int pred_crashed)
{
    struct upkeep *u = calloc(1, sizeof(*u));
    if (!u)
        return -1;
    u->w = w;
    w->upkeep = u;
    if (pred_wid)
        snprintf(u->pred_wid, sizeof(u->pred_wid), "%s", pred_wid);
    u->pred_crashed = pred_crashed;
    ev_timer_init(&u->heartbeat, upkeep_on_heartbeat, w->cfg->heartbeat_interval,
                  w->cfg->heartbeat_interval);
    u->heartbeat.data = u;
    ev_timer_init(&u->promote, upkeep_on_promote, 0, 0);
    u->promote.data = u;
    ev_timer_init(&u->reaper, upkeep_on_reaper, 0, 0);
    u->reaper.data = u;
    return 0;
}

void upkeep_free(struct worker *w)
{
    struct upkeep *u = w->upkeep;
    if (!u)
        return;
    ev_timer_stop(w->loop, &u->heartbeat);
    ev_timer_stop(w->loop, &u->promote);
    ev_timer_stop(w->loop, &u->reaper);
    for (int i = 0; i < u->nwaiting; i++)
        free(u->waiting[i]);
    free(u->reap);
    free(u);
    w->upkeep = NULL;
}
