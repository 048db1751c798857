/*
 * fetch.c - reliable fetch: jobs move from their queues into P:processing:<wid>.
 *
 * A busy worker asks for as many jobs as it has free slots with one script call
 * (scripts/fetch.lua), which drains the queues in priority order: the config's
 * order ("strict"), or an order drawn per fetch with probability proportional to
 * the queues' weights ("weighted"), so no queue starves.
 *
 * When a fetch finds nothing, the worker blocks on its second connection with
 * BLMOVE on the first unpaused queue of that order, for at most fetch.idle_ms:
 * a job pushed there wakes it at once, and every other queue is looked at again
 * when the wait ends. If that connection is down it polls on a timer instead.
 */
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "worker.h"

#define FETCH_MAX 1000 /* Lua's unpack() limit is ~8000; stay well below it */

static int fetch_free_slots(const struct worker *w)
{
    int free = w->cfg->concurrency - w->running;
    return free > FETCH_MAX ? FETCH_MAX : free;
}

/* Fills order[] with queue names: config order, or a weighted draw without
 * replacement. */
static void fetch_order(const struct worker *w, const char **order)
{
    int n = w->cfg->nqueues, total = 0;
    int used[n];
    for (int i = 0; i < n; i++) {
        order[i] = w->cfg->queues[i].name;
        used[i] = 0;
        total += w->cfg->queues[i].weight;
    }
    if (w->cfg->fetch_order != CFG_ORDER_WEIGHTED)
        return;
    for (int k = 0; k < n; k++) {
        int pick = rand() % total, i = 0;
        for (; i < n; i++) {
            if (used[i])
                continue;
            if (pick < w->cfg->queues[i].weight)
                break;
            pick -= w->cfg->queues[i].weight;
        }
        used[i] = 1;
        total -= w->cfg->queues[i].weight;
        order[k] = w->cfg->queues[i].name;
    }
}

static void fetch_on_block(redisAsyncContext *ac, void *r, void *privdata)
{
    struct worker *w = privdata;
    redisReply *reply = r;
    char q[512];
    (void)ac;
    w->blocking = 0;
    if (!reply)
        w->want_scan = 1; /* the BLMOVE may have moved a job we never saw */
    else if (reply->type == REDIS_REPLY_STRING && w->blk_queue)
        worker_run_job(w, w->blk_queue, reply->str, reply->len);
    else if (reply->type == REDIS_REPLY_ERROR)
        LOG(LOG_ERROR, "blocking fetch failed", "error=%s",
            log_q(q, sizeof(q), reply->str, reply->len));
}

static void fetch_block(struct worker *w, const char *queue)
{
    char k_queue[WORKER_KEY_MAX], timeout[24];
    w->blk_queue = worker_queue_name(w, queue, strlen(queue));
    if (w->blk_queue && rc_is_up(w->blk)) {
        snprintf(k_queue, sizeof(k_queue), "%s%s", w->k.queue_prefix, queue);
        snprintf(timeout, sizeof(timeout), "%.3f", w->cfg->fetch_idle_ms / 1000.0);
        const char *argv[6] = {"BLMOVE", k_queue, w->k.processing, "RIGHT", "LEFT", timeout};
        if (rc_cmd(w->blk, fetch_on_block, w, 6, argv, NULL) == 0) {
            w->blocking = 1;
            return;
        }
    }
    ev_timer_set(&w->idle, w->cfg->fetch_idle_ms / 1000.0, 0);
    ev_timer_start(w->loop, &w->idle);
}

static void fetch_on_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    struct worker *w = privdata;
    redisReply *reply = r;
    char q[512];
    (void)ac;
    w->fetching = 0;
    if (!reply)
        return; /* connection lost; orphan recovery after reconnect finds what moved */
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1) {
        const char *why = reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply";
        LOG(LOG_ERROR, "fetch failed", "error=%s", log_q(q, sizeof(q), why, strlen(why)));
        rc_note_error(w->cmd, reply);
        w->want_scan = 1; /* a script that failed half-way may have moved jobs */
        ev_timer_set(&w->idle, 1.0, 0);
        ev_timer_start(w->loop, &w->idle);
        return;
    }
    for (size_t i = 1; i + 1 < reply->elements; i += 2) {
        redisReply *q = reply->element[i], *job = reply->element[i + 1];
        const char *queue = worker_queue_name(w, q->str, q->len);
        worker_run_job(w, queue ? queue : "default", job->str, job->len);
    }
    if (reply->elements == 1 && !w->stopping)
        fetch_block(w, reply->element[0]->str);
}

void fetch_kick(struct worker *w)
{
    int n = w->cfg->nqueues, want = fetch_free_slots(w);
    const char *order[n];
    const char *argv[7 + n];
    char count[16];

    if (w->stopping || w->fetching || w->blocking || ev_is_active(&w->idle) || want <= 0 ||
        !w->registered || !w->redis_ok || w->want_scan || w->scanning || !rc_is_up(w->cmd))
        return;
    fetch_order(w, order);
    snprintf(count, sizeof(count), "%d", want);
    argv[0] = "EVALSHA";
    argv[1] = rc_sha(w->cmd, SCR_FETCH);
    argv[2] = "2";
    argv[3] = w->k.processing;
    argv[4] = w->k.paused;
    argv[5] = count;
    argv[6] = w->k.queue_prefix;
    for (int i = 0; i < n; i++)
        argv[7 + i] = order[i];
    if (rc_cmd(w->cmd, fetch_on_reply, w, 7 + n, argv, NULL) == 0)
        w->fetching = 1;
}

void fetch_stop(struct worker *w)
{
    ev_timer_stop(w->loop, &w->idle);
}
