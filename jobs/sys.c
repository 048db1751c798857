/*
 * sys.c - the built-in job types.
 *
 * sys.noop succeeds at once: the unit of the throughput benchmark. With
 * debug_jobs = true, four more exist for recovery tests and demos: sys.fail
 * (args: message, permanent) fails as told; sys.retry_in (args: ms, spend,
 * message) ends with job_retry_in(), a retry due in ms that spends an attempt or
 * not; sys.sleep (args: ms) waits on a libev timer, never blocking the loop;
 * sys.crash kills its own worker process while holding the job, which is how the
 * poison limit is exercised.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "registry.h"

#define SYS_DEFAULTS                                                                               \
    .queue = "default", .max_attempts = 25, .timeout = 60.0, .backoff = BACKOFF_DEFAULT

static const msgpack_object *sys_arg(const struct job *job, const char *key)
{
    return env_arg(&job->env, key);
}

static void sys_noop_start(struct job *job)
{
    job_done(job, JOB_OK, NULL);
}

static void sys_fail_start(struct job *job)
{
    const msgpack_object *msg = sys_arg(job, "message"), *perm = sys_arg(job, "permanent");
    char text[256] = "sys.fail";
    int permanent = perm && perm->type == MSGPACK_OBJECT_BOOLEAN && perm->via.boolean;
    if (msg && msg->type == MSGPACK_OBJECT_STR)
        snprintf(text, sizeof(text), "%.*s", (int)msg->via.str.size, msg->via.str.ptr);
    job_done(job, permanent ? JOB_DEAD : JOB_RETRY, text);
}

/* args: ms (delay), spend (bool: spend an attempt), message. */
static void sys_retry_in_start(struct job *job)
{
    const msgpack_object *ms = sys_arg(job, "ms"), *spend = sys_arg(job, "spend");
    const msgpack_object *msg = sys_arg(job, "message");
    char text[256] = "sys.retry_in";
    if (!ms || ms->type != MSGPACK_OBJECT_POSITIVE_INTEGER || ms->via.u64 > 86400000) {
        job_done(job, JOB_DEAD, "sys.retry_in needs args.ms, an integer from 0 to 86400000");
        return;
    }
    if (msg && msg->type == MSGPACK_OBJECT_STR)
        snprintf(text, sizeof(text), "%.*s", (int)msg->via.str.size, msg->via.str.ptr);
    job_retry_in(job, (int64_t)ms->via.u64,
                 spend && spend->type == MSGPACK_OBJECT_BOOLEAN && spend->via.boolean, text);
}

static void sys_sleep_fire(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct job *job = t->data;
    (void)loop;
    (void)revents;
    free(t);
    job->data = NULL;
    job_done(job, JOB_OK, NULL);
}

static void sys_sleep_start(struct job *job)
{
    const msgpack_object *ms = sys_arg(job, "ms");
    ev_timer *t;
    if (!ms || ms->type != MSGPACK_OBJECT_POSITIVE_INTEGER || ms->via.u64 > 86400000) {
        job_done(job, JOB_DEAD, "sys.sleep needs args.ms, an integer from 0 to 86400000");
        return;
    }
    if (!(t = malloc(sizeof(*t)))) {
        job_done(job, JOB_RETRY, "out of memory");
        return;
    }
    ev_timer_init(t, sys_sleep_fire, (double)ms->via.u64 / 1000.0, 0);
    t->data = job;
    job->data = t;
    ev_timer_start(job_loop(job), t);
}

static void sys_sleep_cancel(struct job *job)
{
    ev_timer *t = job->data;
    if (!t)
        return;
    ev_timer_stop(job_loop(job), t);
    free(t);
    job->data = NULL;
}

static void sys_crash_start(struct job *job)
{
    (void)job;
    log_raw("sys.crash: killing this worker process on purpose");
    kill(getpid(), SIGKILL);
}

const struct job_type sys_noop_type = {.name = "sys.noop", SYS_DEFAULTS, .start = sys_noop_start};
const struct job_type sys_fail_type = {
    .name = "sys.fail", SYS_DEFAULTS, .debug_only = 1, .start = sys_fail_start};
const struct job_type sys_sleep_type = {.name = "sys.sleep", SYS_DEFAULTS, .debug_only = 1,
                                        .start = sys_sleep_start, .cancel = sys_sleep_cancel};
const struct job_type sys_retry_in_type = {
    .name = "sys.retry_in", SYS_DEFAULTS, .debug_only = 1, .start = sys_retry_in_start};
const struct job_type sys_crash_type = {
    .name = "sys.crash", SYS_DEFAULTS, .debug_only = 1, .start = sys_crash_start};
