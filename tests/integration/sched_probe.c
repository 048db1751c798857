/*
 * sched_probe.c - drives worker/scheduler.c with a fake clock for
 * tests/integration/test_schedule.py.
 *
 *   sched_probe CONFIG N
 *
 * Loads CONFIG (its redis and schedule settings), then reads commands on stdin,
 * one per line, and answers each with one line on stdout:
 *
 *   start T     the fake clock reads T (seconds since the epoch); N schedulers start
 *               on one loop, each with its own Redis connection; waits (up to 10 s)
 *               until every one has Redis and its script, and every call is
 *               answered. "ok" or "down".
 *   tick T      the clock reads T; sched_tick() on each; waits (up to 5 s) for the
 *               replies. "ok", or "pending K" if K calls are still out.
 *   run S       runs the loop S seconds of real time (the fake clock stands still),
 *               e.g. while Redis comes back, then waits for the replies. "ok ready=R"
 *               with R the schedulers that have Redis.
 *   reload FILE sched_reload() on each with FILE. "ok" or "error ...".
 *   stats       sched_stats() summed over the schedulers: "ok" then, per entry,
 *               " NAME=enqueued,elsewhere,passed,missed,errors".
 *   stop        frees the schedulers. "ok".
 *
 * The schedulers log on stderr as the daemon does (one "scheduled job enqueued"
 * line per job pushed). End of input frees everything; exits 0.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "registry.h"
#include "scheduler.h"

#define MAX_SCHED 8

struct probe {
    struct ev_loop *loop;
    ev_timer beat; /* keeps ev_run(EVRUN_ONCE) from blocking for long */
    int64_t now;
    struct sched *s[MAX_SCHED];
    int n;
};

static int64_t probe_clock(void *ud)
{
    return ((struct probe *)ud)->now;
}

static void probe_beat(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)t;
    (void)revents;
}

static int probe_inflight(const struct probe *p)
{
    int k = 0;

    for (int i = 0; i < p->n; i++)
        k += sched_inflight(p->s[i]);
    return k;
}

static int probe_ready(const struct probe *p)
{
    int k = 0;

    for (int i = 0; i < p->n; i++)
        k += sched_ready(p->s[i]);
    return k;
}

/* Runs the loop until want() holds or `secs` of real time passed. */
static int probe_wait(struct probe *p, double secs, int need_ready)
{
    double end = ev_time() + secs;

    while (ev_time() < end) {
        if (probe_inflight(p) == 0 && (!need_ready || probe_ready(p) == p->n))
            return 1;
        ev_run(p->loop, EVRUN_ONCE);
    }
    return probe_inflight(p) == 0 && (!need_ready || probe_ready(p) == p->n);
}

static void probe_stop(struct probe *p)
{
    for (int i = 0; i < p->n; i++)
        sched_free(p->s[i]);
    p->n = 0;
}

static void probe_reload(struct probe *p, const char *path)
{
    struct config cfg;
    char err[512];

    if (cfg_load(&cfg, path, err, sizeof err) != 0) {
        printf("error %s\n", err);
        return;
    }
    for (int i = 0; i < p->n; i++)
        sched_reload(p->s[i], &cfg);
    cfg_free(&cfg);
    probe_wait(p, 5.0, 0);
    printf("ok\n");
}

/* Each entry's figures, summed over the schedulers (they share the config). */
static void probe_stats(struct probe *p)
{
    struct sched_stat sum[64] = {0}, st[64];
    int n = 0;
    for (int i = 0; i < p->n; i++) {
        n = sched_stats(p->s[i], st, 64);
        for (int k = 0; k < n && k < 64; k++) {
            sum[k].name = st[k].name;
            sum[k].enqueued += st[k].enqueued;
            sum[k].elsewhere += st[k].elsewhere;
            sum[k].passed += st[k].passed;
            sum[k].missed += st[k].missed;
            sum[k].errors += st[k].errors;
        }
    }
    printf("ok");
    for (int k = 0; k < n && k < 64; k++)
        printf(" %s=%lld,%lld,%lld,%lld,%lld", sum[k].name, sum[k].enqueued, sum[k].elsewhere,
               sum[k].passed, sum[k].missed, sum[k].errors);
    printf("\n");
}

static void probe_command(struct probe *p, const struct config *cfg, int n, char *line)
{
    char cmd[32], arg[4096] = "";
    long long v = 0;

    if (sscanf(line, "%31s %4095s", cmd, arg) < 1)
        return;
    v = strtoll(arg, NULL, 10);
    if (strcmp(cmd, "start") == 0) {
        p->now = v;
        for (p->n = 0; p->n < n; p->n++)
            p->s[p->n] = sched_new(p->loop, cfg, probe_clock, p);
        printf("%s\n", probe_wait(p, 10.0, 1) ? "ok" : "down");
    } else if (strcmp(cmd, "tick") == 0) {
        p->now = v;
        for (int i = 0; i < p->n; i++)
            sched_tick(p->s[i], p->now);
        if (probe_wait(p, 5.0, 0))
            printf("ok\n");
        else
            printf("pending %d\n", probe_inflight(p));
    } else if (strcmp(cmd, "run") == 0) {
        double end = ev_time() + (double)v;
        while (ev_time() < end)
            ev_run(p->loop, EVRUN_ONCE);
        probe_wait(p, 5.0, 0);
        printf("ok ready=%d\n", probe_ready(p));
    } else if (strcmp(cmd, "reload") == 0) {
        probe_reload(p, arg);
    } else if (strcmp(cmd, "stats") == 0) {
        probe_stats(p);
    } else if (strcmp(cmd, "stop") == 0) {
        probe_stop(p);
        printf("ok\n");
    } else {
        printf("error unknown command %s\n", cmd);
    }
    fflush(stdout);
}

int main(int argc, char **argv)
{
    struct probe p;
    struct config cfg;
    char err[512], line[8192];
    int n;

    if (argc != 3 || (n = atoi(argv[2])) < 1 || n > MAX_SCHED) {
        fprintf(stderr, "usage: sched_probe CONFIG N (1..%d)\n", MAX_SCHED);
        return 2;
    }
    if (cfg_load(&cfg, argv[1], err, sizeof err) != 0 || reg_init(&cfg, err, sizeof err) != 0) {
        fprintf(stderr, "sched_probe: %s\n", err);
        return 2;
    }
    memset(&p, 0, sizeof p);
    p.loop = ev_default_loop(0);
    ev_timer_init(&p.beat, probe_beat, 0.02, 0.02);
    ev_timer_start(p.loop, &p.beat);
    while (fgets(line, sizeof line, stdin))
        probe_command(&p, &cfg, n, line);
    probe_stop(&p);
    ev_timer_stop(p.loop, &p.beat);
    reg_free();
    cfg_free(&cfg);
    ev_loop_destroy(p.loop);
    return 0;
}
