/*
 * delivery.c - the moves that take a job out of P:processing:<wid>.
 *
 * Outcomes become moves here and nowhere else: ok -> ack; transient with
 * attempts left -> retry at now + backoff; transient on the last attempt or
 * permanent -> dead. The rewritten envelope is prepared when the outcome is
 * known, so a resend after a lost reply sends the same bytes.
 *
 * Acks are the hot path: every ack queued during one loop iteration goes out in
 * a single EVALSHA (up to DLV_ACK_BATCH jobs), which keeps Redis's CPU per job
 * to a few microseconds.
 */
#include "delivery.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "registry.h"

#define DLV_ACK_BATCH 1000
#define DLV_DAY_TTL "34560000" /* per-day counters live 400 days */

struct dlv_batch {
    struct worker *w;
    int n;
    struct job *jobs[];
};

static void dlv_day_key(const struct worker *w, const char *what, char *buf, size_t size)
{
    time_t now = (time_t)(worker_now_ms(w) / 1000);
    struct tm tm;
    gmtime_r(&now, &tm);
    snprintf(buf, size, "%s%s:%04d-%02d-%02d", w->k.stats_prefix, what, tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday);
}

static void dlv_total_key(const struct worker *w, const char *what, char *buf, size_t size)
{
    snprintf(buf, size, "%s%s", w->k.stats_prefix, what);
}

static void dlv_push(struct worker *w, struct job *job)
{
    job->next_pending = NULL;
    if (w->pending_tail)
        w->pending_tail->next_pending = job;
    else
        w->pending = job;
    w->pending_tail = job;
}

static int dlv_take_payload(struct job *job, msgpack_sbuffer *sb)
{
    free(job->payload);
    job->payload = sb->data;
    job->payload_len = sb->size;
    sb->data = NULL;
    sb->size = sb->alloc = 0;
    return 0;
}

int dlv_dead_record(struct env *e, const char *error, int64_t now_ms, int bump_attempt,
                    msgpack_sbuffer *out)
{
    if (bump_attempt) {
        e->attempt++;
        e->has |= ENV_HAS_ATTEMPT;
    }
    env_set_error(e, error);
    e->failed_at = now_ms;
    e->has |= ENV_HAS_FAILED_AT;
    return env_encode(e, out);
}

static int64_t dlv_max_attempts(const struct job *job)
{
    if (job->env.has & ENV_HAS_MAX_ATTEMPTS)
        return job->env.max_attempts;
    return job->type->max_attempts;
}

static void dlv_log_failure(const struct job *job, const char *outcome, const char *msg)
{
    char jid[ENV_JID_MAX + 8], type[96], m[512], tp[128];
    const struct env *e = &job->env;
    /* a deferral is the transport telling us to wait, not a failure of the job */
    int deferred = strcmp(outcome, "deferred") == 0;
    LOG(deferred ? LOG_INFO : LOG_WARN, deferred ? "job deferred" : "job failed",
        "jid=%s type=%s queue=%s attempt=%lld duration_ms=%lld outcome=%s error=%s%s%s",
        log_q(jid, sizeof(jid), e->jid.ptr, e->jid.len),
        log_q(type, sizeof(type), e->type.ptr, e->type.len), job->queue,
        (long long)e->attempt + 1, (long long)(worker_now_ms(job->w) - job->started_ms),
        outcome, log_q(m, sizeof(m), msg, strlen(msg)), e->traceparent.ptr ? " traceparent=" : "",
        e->traceparent.ptr ? log_q(tp, sizeof(tp), e->traceparent.ptr, e->traceparent.len) : "");
}

/* The move found the job gone: a reaper took it while we ran it, thinking us dead. */
static void dlv_log_lost(const struct job *job)
{
    char jid[ENV_JID_MAX + 8];
    LOG(LOG_WARN, "job was reclaimed while it ran here; this outcome is dropped",
        "jid=%s move=%d", log_q(jid, sizeof(jid), job->env.jid.ptr, job->env.jid.len),
        job->move);
}

static void dlv_to_dead(struct worker *w, struct job *job, const char *msg, int bump)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    dlv_dead_record(&job->env, msg, worker_now_ms(w), bump, &sb);
    dlv_take_payload(job, &sb);
    msgpack_sbuffer_destroy(&sb);
    job->move = DLV_DEAD;
    job->count_failed = bump;
}

/* The retry envelope, due at due_ms. spend: a failed execution (attempt + 1,
 * failed_at, counted as failed); else a deferral that leaves attempt alone and is
 * not counted (job_retry_in with spend_attempt = 0). job->count_failed carries
 * that to retry.lua, as it does for dead.lua. */
static void dlv_to_retry(struct worker *w, struct job *job, const char *msg, int64_t due_ms,
                         int spend)
{
    msgpack_sbuffer sb;
    struct env *e = &job->env;

    if (spend) {
        e->attempt++;
        e->failed_at = worker_now_ms(w);
        e->has |= ENV_HAS_ATTEMPT | ENV_HAS_FAILED_AT;
    }
    e->has |= ENV_HAS_RETRY_AT;
    env_set_error(e, msg);
    job->due_ms = due_ms;
    e->retry_at = due_ms;
    msgpack_sbuffer_init(&sb);
    env_encode(e, &sb);
    dlv_take_payload(job, &sb);
    msgpack_sbuffer_destroy(&sb);
    job->move = DLV_RETRY;
    job->count_failed = spend;
}

static int64_t dlv_backoff_due(struct worker *w, const struct job *job)
{
    double r01 = (double)rand() / ((double)RAND_MAX + 1.0);
    /* the attempt this retry will be: backoff grows with the failures so far */
    return worker_now_ms(w) + backoff_ms(&job->type->backoff, job->env.attempt + 1, r01);
}

/* A failure (r = JOB_RETRY or JOB_DEAD); due_ms < 0: the type's backoff. */
static enum js_outcome dlv_fail(struct worker *w, struct job *job, enum job_result r,
                                const char *msg, int64_t due_ms)
{
    if (!msg || !*msg)
        msg = "failed without a message";
    if (r == JOB_RETRY && job->env.attempt + 1 < dlv_max_attempts(job)) {
        dlv_log_failure(job, "retry", msg);
        dlv_to_retry(w, job, msg, due_ms >= 0 ? due_ms : dlv_backoff_due(w, job), 1);
        return JS_RETRIED;
    }
    dlv_log_failure(job, "dead", msg);
    dlv_to_dead(w, job, msg, 1);
    return JS_DEAD;
}

void dlv_finish(struct worker *w, struct job *job, enum job_result r, const char *msg)
{
    enum js_outcome o = JS_OK;
    if (r == JOB_OK)
        job->move = DLV_ACK;
    else
        o = dlv_fail(w, job, r, msg, -1);
    js_run_ended(&w->stats, job, o, worker_now_ms(w));
    dlv_push(w, job);
}

void dlv_finish_in(struct worker *w, struct job *job, int64_t delay_ms, int spend_attempt,
                   const char *msg)
{
    enum js_outcome o = JS_DEFERRED;
    int64_t due;
    if (delay_ms < 0)
        delay_ms = 0;
    due = worker_now_ms(w) + delay_ms;
    if (spend_attempt) {
        o = dlv_fail(w, job, JOB_RETRY, msg, due);
    } else {
        if (!msg || !*msg)
            msg = "deferred without a message";
        dlv_log_failure(job, "deferred", msg);
        dlv_to_retry(w, job, msg, due, 0);
    }
    js_run_ended(&w->stats, job, o, worker_now_ms(w));
    dlv_push(w, job);
}

void dlv_reject(struct worker *w, struct job *job, const char *reason, int malformed)
{
    msgpack_sbuffer sb;
    char q[512];
    LOG(LOG_WARN, "job rejected", "queue=%s error=%s", job->queue,
        log_q(q, sizeof(q), reason, strlen(reason)));
    if (!malformed) {
        dlv_to_dead(w, job, reason, 0);
    } else {
        msgpack_sbuffer_init(&sb);
        env_malformed_record(job->raw, job->raw_len, reason, worker_now_ms(w), &sb);
        dlv_take_payload(job, &sb);
        msgpack_sbuffer_destroy(&sb);
        job->move = DLV_DEAD;
        job->count_failed = 0;
    }
    dlv_push(w, job);
}

void dlv_requeue(struct worker *w, struct job *job)
{
    job->move = DLV_REQUEUE;
    dlv_push(w, job);
}

/* A lost reply (NULL) or an error puts the moves back; they are idempotent. */
static int dlv_reply_ok(struct worker *w, redisReply *reply, const char *what)
{
    if (reply && reply->type != REDIS_REPLY_ERROR)
        return 1;
    if (reply) {
        rc_note_error(w->cmd, reply);
        char q[512];
        LOG(LOG_ERROR, "redis refused a move", "move=%s error=%s", what,
            log_q(q, sizeof(q), reply->str, reply->len));
        w->moves_hold_until_ms = worker_now_ms(w) + 1000;
    }
    return 0;
}

static void dlv_on_batch(redisAsyncContext *ac, void *r, void *privdata)
{
    struct dlv_batch *b = privdata;
    struct worker *w = b->w;
    int ok = dlv_reply_ok(w, r, "ack");
    (void)ac;
    w->moves_in_flight--;
    for (int i = 0; i < b->n; i++) {
        if (ok)
            worker_release_job(w, b->jobs[i]);
        else
            dlv_push(w, b->jobs[i]);
    }
    free(b);
    worker_check_drained(w);
}

static void dlv_on_single(redisAsyncContext *ac, void *r, void *privdata)
{
    struct job *job = privdata;
    struct worker *w = job->w;
    (void)ac;
    w->moves_in_flight--;
    if (!dlv_reply_ok(w, r, "single")) {
        dlv_push(w, job);
    } else {
        redisReply *reply = r;
        if (reply->type == REDIS_REPLY_INTEGER && reply->integer == 0)
            dlv_log_lost(job);
        worker_release_job(w, job);
    }
    worker_check_drained(w);
}

static int dlv_send_acks(struct worker *w, struct job **jobs, int n)
{
    char k_total[WORKER_KEY_MAX], k_day[WORKER_KEY_MAX];
    int argc = 7 + n;
    const char **argv = malloc(sizeof(*argv) * argc);
    size_t *lens = malloc(sizeof(*lens) * argc);
    struct dlv_batch *b = malloc(sizeof(*b) + sizeof(struct job *) * n);
    int rc = -1;

    if (!argv || !lens || !b)
        goto out;
    dlv_total_key(w, "processed", k_total, sizeof(k_total));
    dlv_day_key(w, "processed", k_day, sizeof(k_day));
    const char *head[7] = {"EVALSHA", rc_sha(w->cmd, SCR_ACK), "3", w->k.processing, k_total,
                           k_day, DLV_DAY_TTL};
    for (int i = 0; i < 7; i++) {
        argv[i] = head[i];
        lens[i] = strlen(head[i]);
    }
    for (int i = 0; i < n; i++) {
        argv[7 + i] = jobs[i]->raw;
        lens[7 + i] = jobs[i]->raw_len;
        b->jobs[i] = jobs[i];
    }
    b->w = w;
    b->n = n;
    rc = rc_cmd(w->cmd, dlv_on_batch, b, argc, argv, lens);
    if (rc == 0) {
        b = NULL;
        w->moves_in_flight++;
    }
out:
    free(argv);
    free(lens);
    free(b);
    return rc;
}

/* An argument vector for one command: strings by strlen, bytes by length. */
struct dlv_argv {
    const char *v[20];
    size_t len[20];
    int n;
};

static void dlv_str(struct dlv_argv *a, const char *s)
{
    a->v[a->n] = s;
    a->len[a->n++] = strlen(s);
}

static void dlv_bin(struct dlv_argv *a, const char *b, size_t len)
{
    a->v[a->n] = b;
    a->len[a->n++] = len;
}

static int dlv_send(struct worker *w, struct dlv_argv *a, redisCallbackFn *fn, void *privdata)
{
    return rc_cmd(w->cmd, fn, privdata, a->n, a->v, a->len);
}

int dlv_send_requeue(struct worker *w, const char *proc_key, const char *queue, const char *raw,
                     size_t len, const char *new_raw, size_t new_len, const char *guard,
                     redisCallbackFn *fn, void *privdata)
{
    char k_queue[WORKER_KEY_MAX];
    struct dlv_argv a = {.n = 0};
    snprintf(k_queue, sizeof(k_queue), "%s%s", w->k.queue_prefix, queue);
    dlv_str(&a, "EVALSHA");
    dlv_str(&a, rc_sha(w->cmd, SCR_REQUEUE));
    dlv_str(&a, guard ? "3" : "2");
    dlv_str(&a, proc_key);
    dlv_str(&a, k_queue);
    if (guard)
        dlv_str(&a, guard);
    dlv_bin(&a, raw, len);
    dlv_bin(&a, new_raw, new_len);
    return dlv_send(w, &a, fn, privdata);
}

int dlv_send_dead(struct worker *w, const char *proc_key, const char *raw, size_t len,
                  const char *record, size_t record_len, int count_failed, const char *guard,
                  redisCallbackFn *fn, void *privdata)
{
    char k_dead[WORKER_KEY_MAX], k_dead_day[WORKER_KEY_MAX], k_trim[WORKER_KEY_MAX];
    char k_failed[WORKER_KEY_MAX], k_failed_day[WORKER_KEY_MAX], max[24];
    struct dlv_argv a = {.n = 0};
    dlv_total_key(w, "dead", k_dead, sizeof(k_dead));
    dlv_day_key(w, "dead", k_dead_day, sizeof(k_dead_day));
    dlv_total_key(w, "dead_trimmed", k_trim, sizeof(k_trim));
    dlv_total_key(w, "failed", k_failed, sizeof(k_failed));
    dlv_day_key(w, "failed", k_failed_day, sizeof(k_failed_day));
    snprintf(max, sizeof(max), "%ld", w->cfg->dead_max_entries);
    dlv_str(&a, "EVALSHA");
    dlv_str(&a, rc_sha(w->cmd, SCR_DEAD));
    dlv_str(&a, guard ? "8" : "7");
    const char *keys[7] = {proc_key, w->k.dead, k_dead, k_dead_day, k_trim, k_failed,
                           k_failed_day};
    for (int i = 0; i < 7; i++)
        dlv_str(&a, keys[i]);
    if (guard)
        dlv_str(&a, guard);
    dlv_bin(&a, raw, len);
    dlv_bin(&a, record, record_len);
    dlv_str(&a, max);
    dlv_str(&a, DLV_DAY_TTL);
    dlv_str(&a, count_failed ? "1" : "0");
    return dlv_send(w, &a, fn, privdata);
}

static int dlv_send_retry(struct worker *w, struct job *job)
{
    char k_failed[WORKER_KEY_MAX], k_day[WORKER_KEY_MAX], due[24];
    struct dlv_argv a = {.n = 0};
    dlv_total_key(w, "failed", k_failed, sizeof(k_failed));
    dlv_day_key(w, "failed", k_day, sizeof(k_day));
    snprintf(due, sizeof(due), "%lld", (long long)job->due_ms);
    const char *head[7] = {"EVALSHA", rc_sha(w->cmd, SCR_RETRY), "4", w->k.processing,
                           w->k.retry, k_failed, k_day};
    for (int i = 0; i < 7; i++)
        dlv_str(&a, head[i]);
    dlv_bin(&a, job->raw, job->raw_len);
    dlv_bin(&a, job->payload, job->payload_len);
    dlv_str(&a, due);
    dlv_str(&a, DLV_DAY_TTL);
    dlv_str(&a, job->count_failed ? "1" : "0");
    return dlv_send(w, &a, dlv_on_single, job);
}

static int dlv_send_one(struct worker *w, struct job *job)
{
    switch (job->move) {
    case DLV_RETRY:
        return dlv_send_retry(w, job);
    case DLV_DEAD:
        return dlv_send_dead(w, w->k.processing, job->raw, job->raw_len, job->payload,
                             job->payload_len, job->count_failed, NULL, dlv_on_single, job);
    case DLV_REQUEUE:
        return dlv_send_requeue(w, w->k.processing, job->queue, job->raw, job->raw_len, job->raw,
                                job->raw_len, NULL, dlv_on_single, job);
    default:
        return -1;
    }
}

void dlv_flush(struct worker *w)
{
    struct job *acks[DLV_ACK_BATCH];
    int nacks = 0;
    struct job *job, *rest = NULL;

    if (!w->pending || !rc_is_up(w->cmd) || worker_now_ms(w) < w->moves_hold_until_ms)
        return;
    job = w->pending;
    w->pending = w->pending_tail = NULL;
    for (; job; job = rest) {
        rest = job->next_pending;
        if (job->move != DLV_ACK) {
            if (dlv_send_one(w, job) != 0)
                goto failed;
            w->moves_in_flight++;
            continue;
        }
        acks[nacks++] = job;
        if (nacks == DLV_ACK_BATCH) {
            if (dlv_send_acks(w, acks, nacks) != 0) {
                job = rest;
                goto failed;
            }
            nacks = 0;
        }
    }
    if (nacks == 0 || dlv_send_acks(w, acks, nacks) == 0)
        return;
failed:
    /* The connection went down mid-flush: what was not sent waits for the next flush. */
    for (int i = 0; i < nacks; i++)
        dlv_push(w, acks[i]);
    for (; job; job = rest) {
        rest = job->next_pending;
        dlv_push(w, job);
    }
}

int dlv_idle(const struct worker *w)
{
    return !w->pending && w->moves_in_flight == 0;
}
