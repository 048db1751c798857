/*
 * metrics.c - /metrics, /healthz and /stats.json on the master.
 *
 * Each answer comes from a gather: one pipelined round of commands on the
 * master's own Redis connection (LLEN and LINDEX -1 per configured queue,
 * SMEMBERS P:paused and P:workers, ZCARD P:retry and P:scheduled, LLEN P:dead,
 * GET of the total counters), then, once P:workers is known, a second round
 * per registered worker (LLEN of its processing list, HMGET of busy,
 * concurrency and pg from its heartbeat hash; a hash that expired means the
 * worker is not live). The gather completes when every reply is in, or fails
 * after GATHER_TIMEOUT; requests that arrive meanwhile wait for the same one.
 *
 * A failed gather (Redis down or too slow) still gives /metrics a 200 with
 * steller_redis_up 0: a scrape that fails would hide that very fact from
 * alerting. /healthz and /stats.json answer 503 with the reason.
 *
 * Queue latency is the age of the oldest waiting job: the right end of the
 * list (workers take from the right), its created_at; 0 for an empty queue or
 * an envelope without created_at.
 *
 * The per-type runs and histograms do not come from Redis: the master keeps
 * them from its workers' snapshots (jobstats.h), so /metrics shows them even
 * when Redis is down.
 */
#include "metrics.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "envelope.h"
#include "http.h"
#include "log.h"
#include "rconn.h"
#include "redisurl.h"
#include "sbuf.h"

#ifndef STELLER_VERSION
#define STELLER_VERSION "unknown"
#endif

#define GATHER_TIMEOUT 2.0

enum route { R_METRICS, R_HEALTHZ, R_STATS, NROUTES };

enum counter { K_PROCESSED, K_FAILED, K_DEAD, K_DEAD_TRIMMED, NCOUNTERS };
static const char *const counter_keys[NCOUNTERS] = {"processed", "failed", "dead", "dead_trimmed"};

/* What a reply fills in. */
enum cmd_kind {
    K_DEPTH,
    K_OLDEST,
    K_PAUSED,
    K_WORKERS,
    K_RETRY,
    K_SCHEDULED,
    K_DEADLEN,
    K_COUNTER,
    K_PROCESSING,
    K_HEARTBEAT
};

struct waiter {
    struct http_resp *resp;
    enum route route;
};

struct gather {
    struct metrics *m;
    int refs;      /* replies outstanding, + 1 until answered */
    int done;      /* answered (complete or timed out) */
    char why[128]; /* first failure, "" when none */
    ev_timer timeout;
    int64_t now_ms;
    size_t max_job_bytes;
    char *prefix;
    int nq;
    char **queues;
    long long *depth;
    double *latency;
    unsigned char *paused;
    long long retry, scheduled, dead, counters[NCOUNTERS];
    long long processing, workers_registered, workers_live, busy, slots;
    int pg_up, pg_down;
    struct waiter *waiters;
    int nwaiters, capwaiters;
};

struct cmd_ctx {
    struct gather *g;
    enum cmd_kind kind;
    int idx;
};

struct metrics {
    struct ev_loop *loop;
    struct rconn *rc;
    struct http_server *http;
    struct http_route routes[NROUTES];
    struct metrics_view_src {
        metrics_view_fn *fn;
        void *ud;
    } view;
    struct gather *current; /* the gather new requests join, or NULL */
};

/* ---- text ---- */

/* A label value per the text format: backslash, double quote and newline escaped. */
static void sb_label(struct sbuf *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\')
            sb_addf(b, "\\\\");
        else if (*s == '"')
            sb_addf(b, "\\\"");
        else if (*s == '\n')
            sb_addf(b, "\\n");
        else
            sb_addn(b, s, 1);
    }
}

/* ---- gather lifetime ---- */

static void gather_free(struct gather *g)
{
    for (int i = 0; i < g->nq; i++)
        free(g->queues[i]);
    free(g->queues);
    free(g->depth);
    free(g->latency);
    free(g->paused);
    free(g->prefix);
    free(g->waiters);
    free(g);
}

static void gather_fail(struct gather *g, const char *why)
{
    if (!g->why[0])
        snprintf(g->why, sizeof(g->why), "%s", why);
}

static void gather_answer(struct gather *g);

static void gather_release(struct gather *g)
{
    if (--g->refs == 0) {
        gather_free(g);
        return;
    }
    if (g->refs == 1 && !g->done)
        gather_answer(g);
}

static int gather_add_waiter(struct gather *g, struct http_resp *resp, enum route route)
{
    if (g->nwaiters == g->capwaiters) {
        int cap = g->capwaiters ? g->capwaiters * 2 : 8;
        struct waiter *w = realloc(g->waiters, (size_t)cap * sizeof(*w));
        if (!w)
            return -1;
        g->waiters = w;
        g->capwaiters = cap;
    }
    g->waiters[g->nwaiters].resp = resp;
    g->waiters[g->nwaiters].route = route;
    g->nwaiters++;
    return 0;
}

/* ---- replies ---- */

static long long reply_int(const redisReply *r)
{
    if (r->type == REDIS_REPLY_INTEGER)
        return r->integer;
    if (r->type == REDIS_REPLY_STRING)
        return strtoll(r->str, NULL, 10);
    return 0;
}

/* Seconds the oldest job has waited, from its envelope's created_at. */
static double oldest_age(const struct gather *g, const redisReply *r)
{
    if (r->type != REDIS_REPLY_STRING)
        return 0;
    return env_waited(r->str, r->len, g->max_job_bytes, g->now_ms);
}

static void on_paused(struct gather *g, const redisReply *r)
{
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
        const redisReply *x = r->element[i];
        for (int q = 0; x->type == REDIS_REPLY_STRING && q < g->nq; q++)
            if (strlen(g->queues[q]) == x->len && memcmp(g->queues[q], x->str, x->len) == 0)
                g->paused[q] = 1;
    }
}

/* busy, concurrency, pg of one worker; all nil once its heartbeat expired. */
static void on_heartbeat(struct gather *g, const redisReply *r)
{
    const redisReply *pg;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
        (r->element[0]->type == REDIS_REPLY_NIL && r->element[1]->type == REDIS_REPLY_NIL))
        return;
    g->workers_live++;
    g->busy += reply_int(r->element[0]);
    g->slots += reply_int(r->element[1]);
    pg = r->element[2];
    if (pg->type != REDIS_REPLY_STRING)
        return;
    g->pg_up += strcmp(pg->str, "up") == 0;
    g->pg_down += strcmp(pg->str, "down") == 0;
}

static int gather_send(struct gather *g, enum cmd_kind kind, int idx, int argc, const char **argv,
                       const size_t *lens);

/* The second round: per registered worker, its processing list and heartbeat. */
static void on_workers(struct gather *g, const redisReply *r)
{
    if (r->type != REDIS_REPLY_ARRAY)
        return;
    g->workers_registered = (long long)r->elements;
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *w = r->element[i];
        char *pkey = NULL, *hkey = NULL;
        if (w->type != REDIS_REPLY_STRING)
            continue;
        if (asprintf(&pkey, "%s:processing:%.*s", g->prefix, (int)w->len, w->str) < 0)
            pkey = NULL;
        if (asprintf(&hkey, "%s:worker:%.*s", g->prefix, (int)w->len, w->str) < 0)
            hkey = NULL;
        if (!pkey || !hkey) {
            gather_fail(g, "out of memory");
        } else {
            const char *llen[2] = {"LLEN", pkey};
            const char *hmget[5] = {"HMGET", hkey, "busy", "concurrency", "pg"};
            gather_send(g, K_PROCESSING, 0, 2, llen, NULL);
            gather_send(g, K_HEARTBEAT, 0, 5, hmget, NULL);
        }
        free(pkey);
        free(hkey);
    }
}

static void gather_store(struct gather *g, enum cmd_kind kind, int idx, const redisReply *r)
{
    switch (kind) {
    case K_DEPTH: g->depth[idx] = reply_int(r); break;
    case K_OLDEST: g->latency[idx] = oldest_age(g, r); break;
    case K_PAUSED: on_paused(g, r); break;
    case K_WORKERS: on_workers(g, r); break;
    case K_RETRY: g->retry = reply_int(r); break;
    case K_SCHEDULED: g->scheduled = reply_int(r); break;
    case K_DEADLEN: g->dead = reply_int(r); break;
    case K_COUNTER: g->counters[idx] = reply_int(r); break;
    case K_PROCESSING: g->processing += reply_int(r); break;
    case K_HEARTBEAT: on_heartbeat(g, r); break;
    }
}

static void gather_on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct cmd_ctx *ctx = privdata;
    struct gather *g = ctx->g;
    redisReply *r = reply;
    (void)ac;
    if (!g->done) {
        if (!r)
            gather_fail(g, "connection lost");
        else if (r->type == REDIS_REPLY_ERROR)
            gather_fail(g, "error reply");
        else
            gather_store(g, ctx->kind, ctx->idx, r);
    }
    free(ctx);
    gather_release(g);
}

static int gather_send(struct gather *g, enum cmd_kind kind, int idx, int argc, const char **argv,
                       const size_t *lens)
{
    struct cmd_ctx *ctx = malloc(sizeof(*ctx));
    if (!ctx) {
        gather_fail(g, "out of memory");
        return -1;
    }
    ctx->g = g;
    ctx->kind = kind;
    ctx->idx = idx;
    if (rc_cmd(g->m->rc, gather_on_reply, ctx, argc, argv, lens) != 0) {
        free(ctx);
        gather_fail(g, "not connected");
        return -1;
    }
    g->refs++;
    return 0;
}

/* Sends a command on the key PREFIX:suffix (extra: one more argument or NULL). */
static void gather_key(struct gather *g, enum cmd_kind kind, int idx, const char *cmd,
                       const char *suffix, const char *extra)
{
    char *key;
    const char *argv[3] = {cmd, NULL, extra};
    if (asprintf(&key, "%s:%s", g->prefix, suffix) < 0) {
        gather_fail(g, "out of memory");
        return;
    }
    argv[1] = key;
    gather_send(g, kind, idx, extra ? 3 : 2, argv, NULL);
    free(key);
}

static void gather_first_round(struct gather *g)
{
    char suffix[512];
    for (int i = 0; i < g->nq; i++) {
        snprintf(suffix, sizeof(suffix), "queue:%s", g->queues[i]);
        gather_key(g, K_DEPTH, i, "LLEN", suffix, NULL);
        gather_key(g, K_OLDEST, i, "LINDEX", suffix, "-1");
    }
    gather_key(g, K_PAUSED, 0, "SMEMBERS", "paused", NULL);
    gather_key(g, K_WORKERS, 0, "SMEMBERS", "workers", NULL);
    gather_key(g, K_RETRY, 0, "ZCARD", "retry", NULL);
    gather_key(g, K_SCHEDULED, 0, "ZCARD", "scheduled", NULL);
    gather_key(g, K_DEADLEN, 0, "LLEN", "dead", NULL);
    for (int i = 0; i < NCOUNTERS; i++) {
        snprintf(suffix, sizeof(suffix), "stats:%s", counter_keys[i]);
        gather_key(g, K_COUNTER, i, "GET", suffix, NULL);
    }
}

static void gather_on_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct gather *g = t->data;
    (void)loop;
    (void)revents;
    gather_fail(g, "timed out");
    gather_answer(g);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct gather *gather_new(struct metrics *m, const struct config *cfg)
{
    struct gather *g = calloc(1, sizeof(*g));
    if (!g)
        return NULL;
    g->m = m;
    g->refs = 1;
    g->now_ms = now_ms();
    g->max_job_bytes = (size_t)cfg->max_job_bytes;
    g->prefix = strdup(cfg->redis_prefix);
    g->nq = cfg->nqueues;
    g->queues = calloc((size_t)g->nq + 1, sizeof(*g->queues));
    g->depth = calloc((size_t)g->nq + 1, sizeof(*g->depth));
    g->latency = calloc((size_t)g->nq + 1, sizeof(*g->latency));
    g->paused = calloc((size_t)g->nq + 1, 1);
    if (!g->prefix || !g->queues || !g->depth || !g->latency || !g->paused) {
        g->nq = 0;
        gather_free(g);
        return NULL;
    }
    for (int i = 0; i < g->nq; i++) {
        if (!(g->queues[i] = strdup(cfg->queues[i].name))) {
            gather_free(g);
            return NULL;
        }
    }
    ev_timer_init(&g->timeout, gather_on_timeout, GATHER_TIMEOUT, 0);
    g->timeout.data = g;
    return g;
}

/* ---- answers ---- */

static void metric_head(struct sbuf *b, const char *name, const char *type, const char *help)
{
    sb_addf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void metric(struct sbuf *b, const char *name, const char *type, const char *help,
                   long long v)
{
    metric_head(b, name, type, help);
    sb_addf(b, "%s %lld\n", name, v);
}

static void metrics_queues(struct sbuf *b, const struct gather *g)
{
    metric_head(b, "steller_queue_depth", "gauge", "Jobs waiting in the queue.");
    for (int i = 0; i < g->nq; i++) {
        sb_addf(b, "steller_queue_depth{queue=\"");
        sb_label(b, g->queues[i]);
        sb_addf(b, "\"} %lld\n", g->depth[i]);
    }
    metric_head(b, "steller_queue_latency_seconds", "gauge",
                "Age of the oldest waiting job in the queue (0 when empty).");
    for (int i = 0; i < g->nq; i++) {
        sb_addf(b, "steller_queue_latency_seconds{queue=\"");
        sb_label(b, g->queues[i]);
        sb_addf(b, "\"} %.3f\n", g->latency[i]);
    }
    metric_head(b, "steller_queue_paused", "gauge", "1 when the queue is paused.");
    for (int i = 0; i < g->nq; i++) {
        sb_addf(b, "steller_queue_paused{queue=\"");
        sb_label(b, g->queues[i]);
        sb_addf(b, "\"} %d\n", g->paused[i]);
    }
}

static void metrics_redis(struct sbuf *b, const struct gather *g)
{
    metrics_queues(b, g);
    metric(b, "steller_processing_jobs", "gauge", "Jobs in flight in worker processes.",
           g->processing);
    metric(b, "steller_retry_jobs", "gauge", "Jobs waiting to retry.", g->retry);
    metric(b, "steller_scheduled_jobs", "gauge", "Jobs scheduled for later.", g->scheduled);
    metric(b, "steller_dead_jobs", "gauge", "Entries in the dead-letter list.", g->dead);
    metric(b, "steller_jobs_processed_total", "counter", "Jobs that succeeded.",
           g->counters[K_PROCESSED]);
    metric(b, "steller_jobs_failed_total", "counter",
           "Failed executions, each retry and each final failure.", g->counters[K_FAILED]);
    metric(b, "steller_jobs_dead_total", "counter", "Jobs that ended in the dead-letter list.",
           g->counters[K_DEAD]);
    metric(b, "steller_dead_trimmed_total", "counter",
           "Dead-letter entries dropped by the dead.max_entries cap.", g->counters[K_DEAD_TRIMMED]);
    metric(b, "steller_workers_live", "gauge", "Worker processes with a live heartbeat.",
           g->workers_live);
    metric(b, "steller_slots_busy", "gauge", "Job slots running a job, over live workers.",
           g->busy);
    /* Not steller_slots_total: the _total suffix is reserved for counters. */
    metric(b, "steller_slots", "gauge", "Job slots (concurrency), over live workers.", g->slots);
    if (g->pg_up + g->pg_down > 0)
        metric(b, "steller_postgres_up", "gauge",
               "1 when every live worker with a database reaches PostgreSQL.", g->pg_down == 0);
}

/* The type label plus, for a bucket, the le label: `{type="x"` then `}` or `,le="y"}`. */
static void type_labels(struct sbuf *b, const char *name, const char *type, const char *le)
{
    sb_addf(b, "%s{type=\"", name);
    sb_label(b, type);
    if (le)
        sb_addf(b, "\",le=\"%s\"} ", le);
    else
        sb_addf(b, "\"} ");
}

static void metrics_hist(struct sbuf *b, const char *name, const char *help,
                         const struct js_entry *t, int n, int wait)
{
    char bucket[96], sum[96], count[96], le[32];
    snprintf(bucket, sizeof(bucket), "%s_bucket", name);
    snprintf(sum, sizeof(sum), "%s_sum", name);
    snprintf(count, sizeof(count), "%s_count", name);
    metric_head(b, name, "histogram", help);
    for (int i = 0; i < n; i++) {
        const struct js_hist *h = wait ? &t[i].f.wait : &t[i].f.run;
        for (int k = 0; k < JS_NBUCKETS; k++) {
            if (k < JS_NBUCKETS - 1)
                snprintf(le, sizeof(le), "%g", js_bounds[k]);
            else
                snprintf(le, sizeof(le), "+Inf");
            type_labels(b, bucket, t[i].name, le);
            sb_addf(b, "%llu\n", (unsigned long long)js_cumulative(h, k));
        }
        type_labels(b, sum, t[i].name, NULL);
        sb_addf(b, "%.6f\n", h->sum);
        type_labels(b, count, t[i].name, NULL);
        sb_addf(b, "%llu\n", (unsigned long long)h->count);
    }
}

static void metrics_types(struct sbuf *b, const struct metrics_view *v)
{
    struct js_entry t[JS_MAX_TYPES];
    int n = v->types ? js_table_sum(v->types, t, JS_MAX_TYPES) : 0;
    metric_head(b, "steller_job_runs_total", "counter",
                "Job runs per type by outcome: ok, retried, dead, deferred.");
    for (int i = 0; i < n; i++) {
        for (int o = 0; o < JS_NOUTCOMES; o++) {
            sb_addf(b, "steller_job_runs_total{type=\"");
            sb_label(b, t[i].name);
            sb_addf(b, "\",outcome=\"%s\"} %llu\n", js_outcome_names[o],
                      (unsigned long long)t[i].f.runs[o]);
        }
    }
    metrics_hist(b, "steller_job_duration_seconds", "Run time of jobs, start to outcome.", t, n, 0);
    metrics_hist(b, "steller_job_wait_seconds",
                 "Wait from enqueue (created_at) to start, for jobs that carry created_at.", t, n,
                 1);
}

/* One counter line of an entry: name{entry="x",outcome="y"} n. */
static void schedule_count(struct sbuf *b, const char *entry, const char *outcome, long long n)
{
    sb_addf(b, "steller_schedule_slots_total{entry=\"");
    sb_label(b, entry);
    sb_addf(b, "\",outcome=\"%s\"} %lld\n", outcome, n);
}

/* What this master's scheduler did, per schedule entry. */
static void metrics_schedule(struct sbuf *b, const struct metrics_view *v)
{
    int n = sched_stats(v->sched, NULL, 0);
    struct sched_stat *st = n > 0 ? calloc((size_t)n, sizeof(*st)) : NULL;
    if (!st)
        return;
    n = sched_stats(v->sched, st, n);
    metric_head(b, "steller_schedule_next_run_timestamp_seconds", "gauge",
                "When the entry's next slot comes (absent: disabled).");
    for (int i = 0; i < n; i++) {
        if (st[i].next < 0)
            continue;
        sb_addf(b, "steller_schedule_next_run_timestamp_seconds{entry=\"");
        sb_label(b, st[i].name);
        sb_addf(b, "\"} %" PRId64 "\n", st[i].next);
    }
    metric_head(b, "steller_schedule_slots_total", "counter",
                "Slots of the entry seen by this master, by what became of them: enqueued "
                "here, elsewhere (another host first), passed (a later slot ran), missed "
                "(late with catch_up off, or replaced before Redis took it), error.");
    for (int i = 0; i < n; i++) {
        schedule_count(b, st[i].name, "enqueued", st[i].enqueued);
        schedule_count(b, st[i].name, "elsewhere", st[i].elsewhere);
        schedule_count(b, st[i].name, "passed", st[i].passed);
        schedule_count(b, st[i].name, "missed", st[i].missed);
        schedule_count(b, st[i].name, "error", st[i].errors);
    }
    free(st);
}

static void answer_metrics(struct http_resp *resp, const struct gather *g,
                           const struct metrics_view *v)
{
    struct sbuf b = {0};
    if (!g->why[0])
        metrics_redis(&b, g);
    metrics_types(&b, v);
    metrics_schedule(&b, v);
    metric(&b, "steller_redis_up", "gauge", "1 when the master's Redis connection answers.",
           !g->why[0]);
    metric_head(&b, "steller_build_info", "gauge", "Build information; always 1.");
    sb_addf(&b, "steller_build_info{version=\"");
    sb_label(&b, STELLER_VERSION);
    sb_addf(&b, "\"} 1\n");
    if (b.failed)
        http_reply(resp, 500, "text/plain", "out of memory\n", 14);
    else
        http_reply(resp, 200, "text/plain; version=0.0.4; charset=utf-8", b.p, b.len);
    free(b.p);
}

static void answer_healthz(struct http_resp *resp, const struct gather *g,
                           const struct metrics_view *v)
{
    struct sbuf b = {0};
    if (g->why[0])
        sb_addf(&b, "redis: %s\n", g->why);
    if (v->workers_running < v->workers_expected || v->workers_expected == 0)
        sb_addf(&b, "workers: %d of %d running\n", v->workers_running, v->workers_expected);
    if (!g->why[0] && g->pg_down > 0)
        sb_addf(&b, "postgres: down in %d worker(s)\n", g->pg_down);
    if (b.failed)
        http_reply(resp, 503, "text/plain", "out of memory\n", 14);
    else if (b.len)
        http_reply(resp, 503, "text/plain; charset=utf-8", b.p, b.len);
    else
        http_reply(resp, 200, "text/plain; charset=utf-8", "ok\n", 3);
    free(b.p);
}

static json_t *stats_hist(const struct js_hist *h)
{
    json_t *buckets = json_object();
    char le[32];
    for (int k = 0; k < JS_NBUCKETS; k++) {
        if (k < JS_NBUCKETS - 1)
            snprintf(le, sizeof(le), "%g", js_bounds[k]);
        else
            snprintf(le, sizeof(le), "+Inf");
        json_object_set_new(buckets, le, json_integer((json_int_t)js_cumulative(h, k)));
    }
    return json_pack("{s:I, s:f, s:o}", "count", (json_int_t)h->count, "sum", h->sum, "buckets",
                     buckets);
}

static json_t *stats_types(const struct metrics_view *v)
{
    struct js_entry t[JS_MAX_TYPES];
    int n = v->types ? js_table_sum(v->types, t, JS_MAX_TYPES) : 0;
    json_t *types = json_object();
    for (int i = 0; i < n; i++) {
        json_t *runs = json_object();
        for (int o = 0; o < JS_NOUTCOMES; o++)
            json_object_set_new(runs, js_outcome_names[o],
                                json_integer((json_int_t)t[i].f.runs[o]));
        json_object_set_new(types, t[i].name,
                            json_pack("{s:o, s:o, s:o}", "runs", runs, "duration_seconds",
                                      stats_hist(&t[i].f.run), "wait_seconds",
                                      stats_hist(&t[i].f.wait)));
    }
    return types;
}

static json_t *stats_object(const struct gather *g, const struct metrics_view *v)
{
    json_t *root = json_object(), *queues = json_object(), *counters = json_object();
    for (int i = 0; i < g->nq; i++)
        json_object_set_new(queues, g->queues[i],
                            json_pack("{s:I, s:f, s:b}", "depth", (json_int_t)g->depth[i],
                                      "latency_seconds", g->latency[i], "paused", g->paused[i]));
    for (int i = 0; i < NCOUNTERS; i++)
        json_object_set_new(counters, counter_keys[i], json_integer(g->counters[i]));
    json_object_set_new(root, "redis_up", json_true());
    json_object_set_new(root, "now", json_integer(g->now_ms));
    json_object_set_new(root, "queues", queues);
    json_object_set_new(root, "processing", json_integer(g->processing));
    json_object_set_new(root, "retry", json_integer(g->retry));
    json_object_set_new(root, "scheduled", json_integer(g->scheduled));
    json_object_set_new(root, "dead", json_integer(g->dead));
    json_object_set_new(root, "counters", counters);
    json_object_set_new(root, "types", stats_types(v));
    json_object_set_new(root, "workers",
                        json_pack("{s:I, s:I, s:I, s:I, s:i, s:i}", "registered",
                                  (json_int_t)g->workers_registered, "live",
                                  (json_int_t)g->workers_live, "slots_busy", (json_int_t)g->busy,
                                  "slots_total", (json_int_t)g->slots, "expected",
                                  v->workers_expected, "running", v->workers_running));
    json_object_set_new(root, "postgres_up",
                        g->pg_up + g->pg_down ? json_boolean(g->pg_down == 0) : json_null());
    json_object_set_new(root, "version", json_string(STELLER_VERSION));
    return root;
}

static void answer_stats(struct http_resp *resp, const struct gather *g,
                         const struct metrics_view *v)
{
    json_t *root;
    char *text;
    int status = 200;
    if (g->why[0]) {
        root = json_pack("{s:b, s:s}", "redis_up", 0, "error", g->why);
        status = 503;
    } else {
        root = stats_object(g, v);
    }
    text = root ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    if (!text) {
        http_reply(resp, 500, "text/plain", "out of memory\n", 14);
        return;
    }
    http_reply(resp, status, "application/json", text, strlen(text));
    free(text);
}

static void answer_one(struct metrics *m, const struct gather *g, struct http_resp *resp,
                       enum route route)
{
    struct metrics_view v = {0};
    m->view.fn(m->view.ud, &v);
    switch (route) {
    case R_METRICS: answer_metrics(resp, g, &v); break;
    case R_HEALTHZ: answer_healthz(resp, g, &v); break;
    case R_STATS: answer_stats(resp, g, &v); break;
    case NROUTES: break;
    }
}

/* Answers every waiter once; the gather lives on until its last reply. */
static void gather_answer(struct gather *g)
{
    struct metrics *m = g->m;
    g->done = 1;
    ev_timer_stop(m->loop, &g->timeout);
    if (m->current == g)
        m->current = NULL;
    for (int i = 0; i < g->nwaiters; i++)
        answer_one(m, g, g->waiters[i].resp, g->waiters[i].route);
    g->nwaiters = 0;
    gather_release(g);
}

/* ---- requests ---- */

static void metrics_request(struct metrics *m, struct http_resp *resp, enum route route)
{
    struct metrics_view v = {0};
    struct gather *g = m->current;
    if (g && gather_add_waiter(g, resp, route) == 0)
        return;
    m->view.fn(m->view.ud, &v);
    g = gather_new(m, v.cfg);
    if (!g || gather_add_waiter(g, resp, route) != 0) {
        if (g)
            gather_free(g);
        http_reply(resp, 503, "text/plain", "out of memory\n", 14);
        return;
    }
    if (!rc_is_up(m->rc)) {
        gather_fail(g, "not connected");
        gather_answer(g);
        return;
    }
    m->current = g;
    ev_timer_start(m->loop, &g->timeout);
    gather_first_round(g);
    if (g->refs == 1) /* nothing was sent */
        gather_answer(g);
}

static void on_metrics(struct http_resp *resp, void *ud)
{
    metrics_request(ud, resp, R_METRICS);
}

static void on_healthz(struct http_resp *resp, void *ud)
{
    metrics_request(ud, resp, R_HEALTHZ);
}

static void on_stats(struct http_resp *resp, void *ud)
{
    metrics_request(ud, resp, R_STATS);
}

static void on_redis_state(struct rconn *rc, int up, void *ud)
{
    (void)rc;
    (void)up;
    (void)ud;
}

struct metrics *metrics_start(struct ev_loop *loop, const struct config *cfg, metrics_view_fn *view,
                              void *ud)
{
    struct metrics *m = calloc(1, sizeof(*m));
    struct rurl url;
    char err[256];

    if (!m)
        return NULL;
    if (rurl_parse(cfg->redis_url, &url, err, sizeof(err)) != 0) {
        LOG(LOG_ERROR, "http: no endpoint: bad Redis URL", NULL);
        free(m);
        return NULL;
    }
    m->loop = loop;
    m->view.fn = view;
    m->view.ud = ud;
    m->routes[R_METRICS] = (struct http_route){"/metrics", on_metrics, m};
    m->routes[R_HEALTHZ] = (struct http_route){"/healthz", on_healthz, m};
    m->routes[R_STATS] = (struct http_route){"/stats.json", on_stats, m};
    m->http = http_new(loop, cfg->http_listen, m->routes, NROUTES, err, sizeof(err));
    if (!m->http) {
        char q[300];
        LOG(LOG_ERROR, "http: no endpoint; running without it", "error=%s",
            log_q(q, sizeof(q), err, strlen(err)));
        free(m);
        return NULL;
    }
    m->rc = rc_new(loop, &url, "metrics", on_redis_state, m);
    if (!m->rc) {
        http_free(m->http);
        free(m);
        return NULL;
    }
    LOG(LOG_INFO, "http: listening", "listen=%s port=%d", cfg->http_listen, http_port(m->http));
    return m;
}

void metrics_free(struct metrics *m)
{
    if (!m)
        return;
    http_free(m->http); /* before the gathers go: pending responses become orphans */
    if (m->current) {
        struct gather *g = m->current;
        gather_fail(g, "shutting down");
        gather_answer(g); /* orphans: each reply frees its response */
    }
    rc_free(m->rc); /* pending replies run with NULL and free their gathers */
    free(m);
}

void metrics_after_fork(struct metrics *m)
{
    int fd;
    if (!m)
        return;
    http_close_fds(m->http);
    if ((fd = rc_fd(m->rc)) >= 0)
        close(fd); /* the master's Redis socket: a worker opens its own */
}
