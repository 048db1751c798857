/*
 * sweep.c - `stellerctl sweep [--dry-run] [--as-of TIME] [--wait [--timeout S]]`.
 *
 * The sweep is not run here: this verb enqueues one reengagement.sweep job, so
 * that the SQL lives once (jobs/sweep.c) and a manual sweep runs with the
 * daemon's own reengagement settings, timeout and retries, exactly as the
 * scheduled one does. Its queue is the one the daemon would use (the config's
 * per-type queue with -c, else "default").
 *
 * --wait follows the job until its first run ends. The job is looked for along
 * the way it travels, in this order: its queue (LPOS of the exact bytes pushed),
 * the processing lists, P:retry (ZSCAN MATCH on the jid), the newest P:dead
 * records. Looking later in the path than the job can move meanwhile means a
 * job that moves is found further on, never missed; a job found nowhere twice in
 * a row was acknowledged. The counts per stage are then read from the job's
 * result, PREFIX:result:<jid>, which the worker sets just before the ack (the
 * same fields as its log line "reengagement sweep done"); without one (an older
 * worker, Redis restarted) it says where the log line is.
 */
#include "sweep.h"

#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "envelope.h"
#include "scheduler.h"

#define SWEEP_TYPE "reengagement.sweep"
#define SWEEP_MIN_MS 946684800000LL  /* 2000-01-01: what the job accepts */
#define SWEEP_MAX_MS 7258118400000LL /* 2200-01-01 */
#define SWEEP_POLL_NS 200000000L
#define SWEEP_DEAD_LOOK 200 /* newest dead records searched for the jid */

/* Option codes of sweep alone, above the shared list in ops.h. */
enum { OPT_SW_DRY_RUN = 0x400, OPT_SW_AS_OF, OPT_SW_WAIT, OPT_SW_TIMEOUT };

struct sweep_opts {
    int dry_run, wait, have_as_of;
    int64_t as_of;
    long long timeout; /* seconds */
};

/* ---- TIME ---- */

static int all_digits(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return 0;
    return 1;
}

int sweep_parse_time(const char *s, int64_t *ms)
{
    struct tm tm = {0};
    int n = 0, frac_ms = 0, digits = 0;
    const char *p;
    if (all_digits(s)) {
        long long v;
        if (ctl_parse_ll(s, 0, SWEEP_MAX_MS, &v) < 0)
            return -1;
        *ms = v;
        return 0;
    }
    if (sscanf(s, "%4d-%2d-%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &n) != 3 || n != 10)
        return -1;
    p = s + n;
    if (*p == 'T' || *p == ' ') {
        if (sscanf(p + 1, "%2d:%2d%n", &tm.tm_hour, &tm.tm_min, &n) != 2 || n != 5)
            return -1;
        p += 1 + n;
        if (*p == ':') {
            if (sscanf(p + 1, "%2d%n", &tm.tm_sec, &n) != 1 || n != 2)
                return -1;
            p += 1 + n;
            if (*p == '.') {
                for (p++; *p >= '0' && *p <= '9'; p++, digits++)
                    if (digits < 3)
                        frac_ms = frac_ms * 10 + (*p - '0');
                if (!digits)
                    return -1;
                for (; digits < 3; digits++)
                    frac_ms *= 10;
            }
        }
    }
    if (strcmp(p, "Z") != 0 && strcmp(p, "+00:00") != 0 && strcmp(p, "+0000") != 0 && *p)
        return -1; /* UTC only: an offset is easy to get wrong by an hour */
    if (tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 || tm.tm_mday > 31 ||
        tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 60)
        return -1;
    {
        int day = tm.tm_mday, mon = tm.tm_mon;
        tm.tm_year -= 1900;
        tm.tm_mon -= 1;
        *ms = (int64_t)timegm(&tm) * 1000 + frac_ms;
        if (tm.tm_mday != day || tm.tm_mon != mon - 1)
            return -1; /* 2026-02-30: timegm normalised it */
    }
    return 0;
}

/* ---- options ---- */

static int sweep_parse(struct ctl *ctl, int argc, char **argv, struct sweep_opts *o)
{
    static const struct option opts[] = {
        {"dry-run", no_argument, NULL, OPT_SW_DRY_RUN},
        {"as-of", required_argument, NULL, OPT_SW_AS_OF},
        {"wait", no_argument, NULL, OPT_SW_WAIT},
        {"timeout", required_argument, NULL, OPT_SW_TIMEOUT},
        {NULL, 0, NULL, 0},
    };
    int opt, have_timeout = 0;

    o->timeout = 1800;
    while ((opt = ctl_next_opt(ctl, argc, argv, opts)) != -1) {
        switch (opt) {
        case OPT_SW_DRY_RUN: o->dry_run = 1; break;
        case OPT_SW_WAIT: o->wait = 1; break;
        case OPT_SW_AS_OF:
            if (sweep_parse_time(optarg, &o->as_of) < 0 || o->as_of < SWEEP_MIN_MS ||
                o->as_of >= SWEEP_MAX_MS)
                return ctl_usage(ctl, "--as-of wants epoch ms or an ISO-8601 UTC time "
                                      "(2026-03-01T09:00:00Z), years 2000-2199; got '%s'",
                                 optarg);
            o->have_as_of = 1;
            break;
        case OPT_SW_TIMEOUT:
            if (ctl_parse_ll(optarg, 1, 86400, &o->timeout) < 0)
                return ctl_usage(ctl, "--timeout wants seconds from 1 to 86400, got '%s'",
                                 optarg);
            have_timeout = 1;
            break;
        default: return ctl->status;
        }
    }
    if (optind < argc)
        return ctl_usage(ctl, "unexpected argument '%s'", argv[optind]);
    if (have_timeout && !o->wait)
        return ctl_usage(ctl, "--timeout goes with --wait");
    return CTL_CONTINUE;
}

/* ---- waiting ---- */

enum where { W_NOWHERE, W_QUEUED, W_RUNNING, W_RETRY, W_DEAD, W_ERROR };

struct sweep_job {
    const char *jid, *queue;
    char *raw;
    size_t len;
    char key[512];
    char error[512]; /* the failure, from its retry or dead record */
};

static void copy_error(struct sweep_job *j, const char *raw, size_t len)
{
    struct env e;
    char err[8];
    if (env_decode(&e, raw, len, SIZE_MAX, err, sizeof(err)) == 0 && e.error.ptr)
        env_strcpy(j->error, sizeof(j->error), e.error);
    else
        snprintf(j->error, sizeof(j->error), "(no reason recorded)");
    env_free(&e);
}

/* 1 when list key holds the exact bytes, 0 when not, -1 on error. */
static int list_has(struct ctl *ctl, const char *key, const struct sweep_job *j, int *rc)
{
    redisReply *r = redisCommand(ctl->rc, "LPOS %s %b", key, j->raw, j->len);
    int found;
    if ((*rc = ctl_reply_status(ctl, r, "LPOS")) != CTL_OK) {
        freeReplyObject(r);
        return -1;
    }
    found = r->type == REDIS_REPLY_INTEGER;
    freeReplyObject(r);
    return found;
}

static enum where in_processing(struct ctl *ctl, const struct sweep_job *j, int *rc)
{
    char cursor[32] = "0", pat[300];
    enum where w = W_NOWHERE;
    snprintf(pat, sizeof(pat), "%s:processing:*", ctl->prefix);
    do {
        redisReply *r = redisCommand(ctl->rc, "SCAN %s MATCH %s COUNT 1000 TYPE list", cursor, pat);
        if ((*rc = ctl_reply_status(ctl, r, "SCAN")) != CTL_OK) {
            freeReplyObject(r);
            return W_ERROR;
        }
        for (size_t i = 0; w == W_NOWHERE && i < r->element[1]->elements; i++) {
            int has = list_has(ctl, r->element[1]->element[i]->str, j, rc);
            if (has < 0)
                w = W_ERROR;
            else if (has)
                w = W_RUNNING;
        }
        snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
        freeReplyObject(r);
    } while (w == W_NOWHERE && strcmp(cursor, "0") != 0);
    return w;
}

static enum where in_retry(struct ctl *ctl, struct sweep_job *j, int *rc)
{
    char cursor[32] = "0", key[300], pat[100];
    enum where w = W_NOWHERE;
    snprintf(key, sizeof(key), "%s:retry", ctl->prefix);
    snprintf(pat, sizeof(pat), "*%s*", j->jid); /* a generated jid is hex: no glob character */
    do {
        redisReply *r = redisCommand(ctl->rc, "ZSCAN %s %s MATCH %s COUNT 1000", key, cursor, pat);
        if ((*rc = ctl_reply_status(ctl, r, "ZSCAN")) != CTL_OK) {
            freeReplyObject(r);
            return W_ERROR;
        }
        if (r->element[1]->elements >= 2) {
            copy_error(j, r->element[1]->element[0]->str, r->element[1]->element[0]->len);
            w = W_RETRY;
        }
        snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
        freeReplyObject(r);
    } while (w == W_NOWHERE && strcmp(cursor, "0") != 0);
    return w;
}

static enum where in_dead(struct ctl *ctl, struct sweep_job *j, int *rc)
{
    redisReply *r = redisCommand(ctl->rc, "LRANGE %s:dead 0 %d", ctl->prefix, SWEEP_DEAD_LOOK - 1);
    enum where w = W_NOWHERE;
    if ((*rc = ctl_reply_status(ctl, r, "LRANGE")) != CTL_OK) {
        freeReplyObject(r);
        return W_ERROR;
    }
    for (size_t i = 0; i < r->elements && w == W_NOWHERE; i++) {
        const redisReply *e = r->element[i];
        if (ctl_record_has_jid(e, j->jid)) {
            copy_error(j, e->str, e->len);
            w = W_DEAD;
        }
    }
    freeReplyObject(r);
    return w;
}

/* Where the job is now, looked for in the order it travels. */
static enum where locate(struct ctl *ctl, struct sweep_job *j, int *rc)
{
    int has = list_has(ctl, j->key, j, rc);
    enum where w;
    if (has)
        return has < 0 ? W_ERROR : W_QUEUED;
    if ((w = in_processing(ctl, j, rc)) != W_NOWHERE)
        return w;
    if ((w = in_retry(ctl, j, rc)) != W_NOWHERE)
        return w;
    return in_dead(ctl, j, rc);
}

/* The field after p in a line "k=v k=v ...", or NULL at the end. */
static const char *next_field(const char *p)
{
    p = strchr(p, ' ');
    return p ? p + 1 : NULL;
}

/* The value of key in such a line, copied to buf; NULL when absent. */
static const char *field(const char *line, const char *key, char *buf, size_t size)
{
    size_t klen = strlen(key);
    for (const char *p = line; p; p = next_field(p)) {
        if (strncmp(p, key, klen) == 0 && p[klen] == '=') {
            snprintf(buf, size, "%.*s", (int)strcspn(p + klen + 1, " "), p + klen + 1);
            return buf;
        }
    }
    return NULL;
}

/* The stages ("d<days>=N d<days>_ms=T") in the order the result lists them. */
static void print_stages(const char *res, int dry_run)
{
    char key[16], ms_key[24], n[32], ms[32];
    for (const char *p = res; p; p = next_field(p)) {
        size_t digits = p[0] == 'd' ? strspn(p + 1, "0123456789") : 0;
        if (digits == 0 || digits > 8 || p[1 + digits] != '=')
            continue;
        snprintf(key, sizeof(key), "%.*s", (int)digits + 1, p);
        snprintf(ms_key, sizeof(ms_key), "%s_ms", key);
        if (!field(res, key, n, sizeof(n)) || !field(res, ms_key, ms, sizeof(ms)))
            continue;
        printf("  %-6s %9s %-9s %8.2f s\n", key, n, dry_run ? "due" : "enqueued",
               strtod(ms, NULL) / 1000.0);
    }
}

/* What the job left in PREFIX:result:<jid> (job.h: job_set_result), printed as
 * a table; 0 when there is none (an older worker, or Redis lost it). */
static int print_result(struct ctl *ctl, const struct sweep_job *j)
{
    redisReply *r = redisCommand(ctl->rc, "GET %s:result:%s", ctl->prefix, j->jid);
    char total[32], orphans[32], dry[8];
    int shown = 0;
    if (r && r->type == REDIS_REPLY_STRING && field(r->str, "total", total, sizeof(total))) {
        int dry_run = field(r->str, "dry_run", dry, sizeof(dry)) && strcmp(dry, "true") == 0;
        printf("done:\n");
        print_stages(r->str, dry_run);
        printf("  %-6s %9s\n", "total", total);
        if (field(r->str, "orphans", orphans, sizeof(orphans)))
            printf("  orphaned claims %s: %s\n", dry_run ? "found" : "re-enqueued", orphans);
        shown = 1;
    }
    freeReplyObject(r);
    return shown;
}

static int sweep_wait(struct ctl *ctl, struct sweep_job *j, long long timeout)
{
    struct timespec pause = {0, SWEEP_POLL_NS};
    int64_t deadline = ctl_now_ms() + timeout * 1000;
    int nowhere = 0, rc = CTL_OK;

    for (;;) {
        enum where w = locate(ctl, j, &rc);
        if (w == W_ERROR)
            return rc;
        if (w == W_RETRY || w == W_DEAD) {
            printf("failed%s: %s\n", w == W_RETRY ? " (it will be retried)" : " (dead)",
                   j->error);
            return CTL_FAILED;
        }
        nowhere = w == W_NOWHERE ? nowhere + 1 : 0;
        if (nowhere >= 2) {
            if (!print_result(ctl, j))
                printf("done: the counts per stage are in the worker log, "
                       "msg=\"reengagement sweep done\" jid=%s\n", j->jid);
            return CTL_OK;
        }
        if (ctl_now_ms() > deadline) {
            printf("still %s after %llds\n", w == W_QUEUED ? "queued" : "running", timeout);
            return CTL_FAILED;
        }
        nanosleep(&pause, NULL);
    }
}

/* ---- the verb ---- */

static int sweep_job_build(struct ctl *ctl, const struct sweep_opts *o, stj_job **out,
                           struct sweep_job *sj)
{
    char args[96], err[256];
    stj_job *j = stj_job_new(SWEEP_TYPE);

    *out = j;
    if (!j)
        return ctl_complain(CTL_FAILED, "out of memory");
    snprintf(args, sizeof(args), "{\"as_of\": %" PRId64 ", \"dry_run\": %s}", o->as_of,
             o->dry_run ? "true" : "false");
    sj->queue = sched_type_queue(ctl->have_cfg ? &ctl->cfg : NULL, SWEEP_TYPE);
    if (stj_job_set_args_json(j, args, err, sizeof(err)) != 0 ||
        stj_job_set_queue(j, sj->queue) != 0)
        return ctl_complain(CTL_FAILED, "cannot build the job: %s", err);
    /* A fixed created_at makes the bytes pushed the bytes stj_job_encode gives. */
    stj_job_set_created_at(j, ctl_now_ms());
    if (stj_job_encode(j, &sj->raw, &sj->len) != 0)
        return ctl_complain(CTL_FAILED, "out of memory");
    sj->jid = stj_job_jid(j);
    snprintf(sj->key, sizeof(sj->key), "%s:queue:%s", ctl->prefix, sj->queue);
    return CTL_OK;
}

int cmd_sweep(struct ctl *ctl, int argc, char **argv)
{
    struct sweep_opts o = {0};
    struct sweep_job sj = {0};
    stj_job *j = NULL;
    char err[256], when[64];
    int rc = sweep_parse(ctl, argc, argv, &o);

    if (rc != CTL_CONTINUE)
        return rc;
    if (!o.have_as_of)
        o.as_of = ctl_now_ms(); /* fixed here, so a retry of the job sweeps the same moment */
    if ((rc = ctl_connect(ctl)) != CTL_OK)
        return rc;
    rc = sweep_job_build(ctl, &o, &j, &sj);
    if (rc == CTL_OK && stj_enqueue(ctl->client, j, err, sizeof(err)) != 0)
        rc = ctl_complain(CTL_FAILED, "enqueue: %s", err);
    if (rc == CTL_OK) {
        printf("%s enqueued to %s (as_of %s%s): jid %s\n", SWEEP_TYPE, sj.queue,
               ctl_fmt_utc(o.as_of, 1, when, sizeof(when)), o.dry_run ? ", dry run" : "", sj.jid);
        fflush(stdout);
        if (o.wait)
            rc = sweep_wait(ctl, &sj, o.timeout);
    }
    free(sj.raw);
    stj_job_free(j);
    return rc;
}

const char sweep_help[] =
    "Runs a re-engagement sweep now: enqueues one reengagement.sweep job, which a\n"
    "worker runs with the daemon's reengagement settings (stages, quiet_days,\n"
    "max_age_days, batch_size, parallel). It finds the partners due for a stage and\n"
    "enqueues one email.reengagement job each, once per partner and stage, however\n"
    "often it runs. Its result, the count per stage, is one worker log line\n"
    "(msg=\"reengagement sweep done\" jid=<the jid printed here>), which --wait\n"
    "prints as a table.\n"
    "\n"
    "  --dry-run       only count the partners due per stage; insert and enqueue nothing\n"
    "  --as-of TIME    measure the stage windows from TIME instead of now: epoch ms, or\n"
    "                  ISO-8601 UTC (2026-03-01, 2026-03-01T09:00:00Z). Default: now,\n"
    "                  fixed when the job is enqueued, so a retry sweeps the same moment\n"
    "  --wait          wait until the job has run: exit 0 when it succeeded, 1 when it\n"
    "                  failed (the reason is printed) or is still running at --timeout\n"
    "  --timeout S     seconds --wait waits (default 1800, the job's own timeout)\n"
    "\n"
    "The job goes to the type's queue: the config's per-type queue with -c, else\n"
    "\"default\"; it runs only where a worker takes that queue and has database.url.\n";
