/*
 * rcheck.c - the Redis sanity check a worker runs each time its cmd
 * connection comes up (see rcheck.h for what it checks and why).
 *
 * One check is one struct rcheck_run: three CONFIG GETs pipelined on the cmd
 * connection, one struct rcheck_ask per setting as their privdata. Each reply
 * records its value, or that there was none (an error reply: CONFIG renamed or
 * not permitted; an empty array: a setting this Redis does not show); the
 * last reply judges them all, logs the findings and calls done. A NULL reply
 * means the connection dropped: the findings are not logged, since the next
 * connect asks again, perhaps another Redis. hiredis runs every callback of a
 * dropped connection before reporting it down, so two runs never overlap.
 *
 * The policy and persistence rules are pure functions, so that a unit test
 * can walk every value without a Redis.
 */
#include "rcheck.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "worker.h"

enum { ASK_POLICY, ASK_AOF, ASK_SAVE, ASK_COUNT };

static const char *const ask_names[ASK_COUNT] = {"maxmemory-policy", "appendonly", "save"};

struct rcheck_run;

struct rcheck_ask {
    struct rcheck_run *run;
    int known;       /* the value arrived */
    char value[256]; /* a longer save list is cut, which changes no verdict */
};

struct rcheck_run {
    struct worker *w;
    rcheck_done_fn *done;
    int outstanding;
    int lost;
    char why[256]; /* why the first unknown setting is unknown */
    struct rcheck_ask ask[ASK_COUNT];
};

/* ---- the rules ---- */

static int starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

enum rcheck_level rcheck_policy(const char *policy, int allow_eviction, char *msg, size_t size)
{
    if (size)
        msg[0] = '\0';
    if (strcmp(policy, "noeviction") == 0)
        return RCHECK_OK;
    /* Of our keys only heartbeats and day counters carry a TTL, so no job goes;
     * but a live worker whose heartbeat went looks dead, and its jobs run twice. */
    if (starts_with(policy, "volatile-")) {
        snprintf(msg, size,
                 "maxmemory-policy %s lets Redis evict keys with a TTL under "
                 "memory pressure: a live worker's heartbeat (its jobs would run "
                 "twice) and day counters; set maxmemory-policy noeviction",
                 policy);
        return RCHECK_WARN;
    }
    /* allkeys-*, or a policy newer than this code: assume the worst. */
    if (allow_eviction) {
        snprintf(msg, size,
                 "maxmemory-policy %s lets Redis evict queued jobs under memory "
                 "pressure; running anyway because redis.allow_eviction = true",
                 policy);
        return RCHECK_WARN;
    }
    snprintf(msg, size,
             "maxmemory-policy %s lets Redis evict queued jobs under memory "
             "pressure; set maxmemory-policy noeviction, or redis.allow_eviction "
             "= true to run anyway",
             policy);
    return RCHECK_FATAL;
}

enum rcheck_level rcheck_persistence(const char *appendonly, const char *save, char *msg,
                                     size_t size)
{
    if (size)
        msg[0] = '\0';
    if (strcmp(appendonly, "yes") == 0)
        return RCHECK_OK;
    if (!save[strspn(save, " ")]) {
        snprintf(msg, size,
                 "Redis persists nothing (appendonly no, no save points): a Redis "
                 "restart loses every job; set appendonly yes");
        return RCHECK_WARN;
    }
    snprintf(msg, size,
             "Redis has no append-only file (appendonly no), only RDB snapshots "
             "(save %s): a Redis crash loses the enqueues, acks and retries since the "
             "last snapshot, up to one snapshot interval; set appendonly yes",
             save);
    return RCHECK_WARN;
}

/* ---- judging the answers ---- */

static void rcheck_log(enum rcheck_level level, const char *msg)
{
    if (level != RCHECK_OK)
        LOG(level == RCHECK_FATAL ? LOG_ERROR : LOG_WARN, msg, NULL);
}

static void rcheck_log_unknown(const struct rcheck_run *run)
{
    char names[64] = "", q[300];
    size_t off = 0;
    for (int i = 0; i < ASK_COUNT; i++)
        if (!run->ask[i].known)
            off += snprintf(names + off, sizeof(names) - off, "%s%s", off ? "," : "", ask_names[i]);
    LOG(LOG_WARN,
        "could not check that Redis keeps jobs: CONFIG GET returned no value; "
        "make sure maxmemory-policy is noeviction and appendonly is yes",
        "unchecked=%s error=%s", names, log_q(q, sizeof(q), run->why, strlen(run->why)));
}

/* Logs every finding; returns whether the worker may go on. */
static int rcheck_judge(const struct rcheck_run *run)
{
    const struct rcheck_ask *a = run->ask;
    enum rcheck_level policy = RCHECK_OK;
    char msg[512];

    if (a[ASK_POLICY].known) {
        policy =
            rcheck_policy(a[ASK_POLICY].value, run->w->cfg->redis_allow_eviction, msg, sizeof(msg));
        rcheck_log(policy, msg);
    }
    if (a[ASK_AOF].known && a[ASK_SAVE].known)
        rcheck_log(rcheck_persistence(a[ASK_AOF].value, a[ASK_SAVE].value, msg, sizeof(msg)), msg);
    if (!a[ASK_POLICY].known || !a[ASK_AOF].known || !a[ASK_SAVE].known)
        rcheck_log_unknown(run);
    return policy != RCHECK_FATAL;
}

static void rcheck_end(struct rcheck_run *run)
{
    struct worker *w = run->w;
    rcheck_done_fn *done = run->done;
    enum rcheck_result r = RCHECK_LOST;
    if (!run->lost)
        r = rcheck_judge(run) ? RCHECK_PASSED : RCHECK_FAILED;
    free(run);
    done(w, r);
}

static void rcheck_note_unknown(struct rcheck_run *run, const char *why, size_t len)
{
    if (!run->why[0])
        snprintf(run->why, sizeof(run->why), "%.*s", (int)len, why);
}

/* CONFIG GET answers [name, value] (RESP2), or [] for a setting it does not show. */
static void rcheck_on_reply(redisAsyncContext *ac, void *r_, void *privdata)
{
    struct rcheck_ask *ask = privdata;
    struct rcheck_run *run = ask->run;
    redisReply *reply = r_;
    (void)ac;
    if (!reply)
        run->lost = 1;
    else if (reply->type == REDIS_REPLY_ERROR)
        rcheck_note_unknown(run, reply->str, reply->len);
    else if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 2 ||
             reply->element[1]->type != REDIS_REPLY_STRING)
        rcheck_note_unknown(run, "no value", 8);
    else {
        snprintf(ask->value, sizeof(ask->value), "%.*s", (int)reply->element[1]->len,
                 reply->element[1]->str);
        ask->known = 1;
    }
    if (--run->outstanding == 0)
        rcheck_end(run);
}

int rcheck_start(struct worker *w, rcheck_done_fn *done)
{
    struct rcheck_run *run = calloc(1, sizeof(*run));
    if (!run)
        return -1;
    run->w = w;
    run->done = done;
    for (int i = 0; i < ASK_COUNT; i++) {
        const char *argv[3] = {"CONFIG", "GET", ask_names[i]};
        run->ask[i].run = run;
        if (rc_cmd(w->cmd, rcheck_on_reply, &run->ask[i], 3, argv, NULL) == 0)
            run->outstanding++;
        else
            run->lost = 1; /* the connection is going down: its up-call checks again */
    }
    if (run->outstanding == 0) {
        free(run);
        return -1;
    }
    return 0;
}
