/*
 * master.c - supervision: one master, `workers` worker processes.
 *
 * The master runs no job; it forks, waits and signals, so it has little that
 * can fail. Its Redis connections serve the HTTP endpoint (metrics.c) and the
 * cron scheduler (scheduler.c), which enqueues the `schedule` entries' jobs at
 * their slots; SIGHUP hands the scheduler the reloaded entries, and it stops
 * when shutdown starts, so that draining workers see no new scheduled job. Each worker gets a wid
 * (host:pid:random) before it starts; when a worker dies, the master starts a
 * replacement at once (after repeated quick deaths, after at most a second)
 * and hands it the dead worker's wid, so that its jobs are reclaimed at once
 * instead of when the heartbeat expires.
 *
 * A worker that exits EX_CONFIG (78) found a Redis that may evict jobs: it is
 * not restarted; the master stops the others as on SIGTERM and exits 78.
 *
 * SIGTERM/SIGINT: relayed to the workers, which drain and exit; the master
 * exits 0 when all are gone. A second signal is relayed too: workers requeue
 * at once. SIGHUP: the config and the email templates are loaded again; if
 * both are valid, a new set of workers starts with them and the old ones
 * drain and exit, so a reload loses no job. Workers sit in their own process
 * group, so a terminal's Ctrl-C reaches them once, through the master, and
 * they die with the master (PR_SET_PDEATHSIG) if it is killed.
 *
 * systemd (Type=notify): the master holds a pipe whose write end every worker
 * inherits; a worker writes one byte once Redis first answers it, and the
 * master then sends READY=1. It sends STOPPING=1 when it starts to shut down.
 * Outside systemd (no NOTIFY_SOCKET) sd_notify() does nothing.
 *
 * Per-type statistics (jobstats.h) come over a second pipe: each worker writes
 * its cumulative figures once a second and at exit. When a worker is reaped,
 * the pipe is drained first (its last record is already in it), then its
 * figures join the sums of exited workers.
 */
#include "master.h"

#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "jobstats.h"
#include "log.h"
#include "metrics.h"
#include "scheduler.h"
#include "tmpl.h"
#include "worker.h"

#define MASTER_MAX_PROCS 1024

struct slot {
    pid_t pid;                    /* 0 while waiting to be restarted */
    char wid[WORKER_WID_MAX];
    char pred_wid[WORKER_WID_MAX]; /* the worker this one replaces after a death */
    int pred_crashed;
    int quick_deaths;
    double started;
    ev_timer restart;
    struct master *m;
};

struct master {
    struct ev_loop *loop;
    struct config *cfg;
    struct slot *slots;
    int nslots;
    pid_t retiring[MASTER_MAX_PROCS]; /* old workers draining after a reload */
    int nretiring;
    int stopping;
    pid_t pid;
    char host[64];
    ev_signal sig_term, sig_int, sig_hup, sig_usr1, sig_usr2;
    ev_child child;
    ev_timer deadline;
    int notify_rd, notify_wr; /* readiness pipe: workers write, the master reads */
    int ready;                /* READY=1 sent */
    ev_io notify;
    int stats_rd, stats_wr;   /* per-type statistics: workers write records, the master reads */
    ev_io stats;
    struct js_table types;
    int exit_code;            /* EX_CONFIG once a worker refused the Redis it found */
    struct metrics *metrics;  /* the HTTP endpoint, NULL when it could not listen */
    struct sched *sched;      /* the cron scheduler; NULL once stopping, or if it could not start */
};

static void master_spawn(struct master *m, struct slot *s);
static void master_stop(struct master *m);

static void master_child_setup(struct master *m)
{
    ev_signal *sigs[5] = {&m->sig_term, &m->sig_int, &m->sig_hup, &m->sig_usr1, &m->sig_usr2};
    for (int i = 0; i < 5; i++)
        ev_signal_stop(m->loop, sigs[i]);
    ev_child_stop(m->loop, &m->child);
    close(m->notify_rd); /* the watcher stays: this process never runs the master's loop */
    close(m->stats_rd);
    metrics_after_fork(m->metrics);
    sched_after_fork(m->sched);
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != m->pid)
        _exit(0); /* the master died while we were being born */
}

/* The signals a worker handles. They stay blocked across fork() until the
 * worker's own watchers exist (worker_main unblocks them), so a SIGTERM relayed
 * to a newborn worker waits for it instead of landing on the master's copy. */
static void master_block_signals(int how)
{
    sigset_t set;
    worker_signals(&set);
    sigprocmask(how, &set, NULL);
}

static void master_spawn(struct master *m, struct slot *s)
{
    unsigned suffix = (unsigned)rand() & 0xffffff;
    pid_t pid;
    master_block_signals(SIG_BLOCK);
    pid = fork();
    if (pid != 0)
        master_block_signals(SIG_UNBLOCK);
    if (pid < 0) {
        LOG(LOG_ERROR, "fork failed", "errno=%d", errno);
        ev_timer_set(&s->restart, 1.0, 0);
        ev_timer_start(m->loop, &s->restart);
        return;
    }
    if (pid == 0) {
        char wid[WORKER_WID_MAX];
        master_child_setup(m);
        snprintf(wid, sizeof(wid), "%s:%d:%06x", m->host, (int)getpid(), suffix);
        _exit(worker_main(m->cfg, wid, s->pred_wid[0] ? s->pred_wid : NULL, s->pred_crashed,
                          m->notify_wr, m->stats_wr));
    }
    s->pid = pid;
    s->started = ev_now(m->loop);
    snprintf(s->wid, sizeof(s->wid), "%s:%d:%06x", m->host, (int)pid, suffix);
    s->pred_wid[0] = '\0';
}

static void master_on_restart(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct slot *s = t->data;
    (void)loop;
    (void)revents;
    if (!s->m->stopping)
        master_spawn(s->m, s);
}

static int master_start_slots(struct master *m)
{
    m->nslots = m->cfg->workers;
    m->slots = calloc((size_t)m->nslots, sizeof(*m->slots));
    if (!m->slots)
        return -1;
    for (int i = 0; i < m->nslots; i++) {
        struct slot *s = &m->slots[i];
        s->m = m;
        ev_timer_init(&s->restart, master_on_restart, 0, 0);
        s->restart.data = s;
        master_spawn(m, s);
    }
    return 0;
}

static int master_live(const struct master *m)
{
    int n = m->nretiring;
    for (int i = 0; i < m->nslots; i++)
        n += m->slots[i].pid > 0;
    return n;
}

static void master_signal_all(struct master *m, int sig)
{
    for (int i = 0; i < m->nslots; i++)
        if (m->slots[i].pid > 0)
            kill(m->slots[i].pid, sig);
    for (int i = 0; i < m->nretiring; i++)
        kill(m->retiring[i], sig);
}

static void master_describe_exit(int status, char *buf, size_t size)
{
    if (WIFSIGNALED(status))
        snprintf(buf, size, "signal %d", WTERMSIG(status));
    else
        snprintf(buf, size, "exit %d", WEXITSTATUS(status));
}

/* The worker found a Redis that may evict jobs (rcheck.c). A replacement would
 * find the same Redis: stop everything and exit EX_CONFIG, which the unit's
 * RestartPreventExitStatus= keeps systemd from restarting in a loop. */
static void master_refuse(struct master *m, const struct slot *s)
{
    m->exit_code = EX_CONFIG;
    if (m->stopping)
        return;
    LOG(LOG_ERROR, "a worker refused to run against this Redis; stopping", "wid=%s exit=%d",
        s->wid, EX_CONFIG);
    master_stop(m);
}

static void master_slot_died(struct master *m, struct slot *s, int status)
{
    double lived = ev_now(m->loop) - s->started, delay = 0;
    char how[32];
    /* Only a signal means it died mid-job; an exit (even non-zero, e.g. the shutdown
     * deadline) did not crash on the jobs it left. */
    int crashed = WIFSIGNALED(status);

    master_describe_exit(status, how, sizeof(how));
    snprintf(s->pred_wid, sizeof(s->pred_wid), "%s", s->wid);
    s->pred_crashed = crashed;
    s->pid = 0;
    if (WIFEXITED(status) && WEXITSTATUS(status) == EX_CONFIG) {
        master_refuse(m, s);
        return;
    }
    if (m->stopping)
        return;
    s->quick_deaths = lived < 10.0 ? s->quick_deaths + 1 : 0;
    /* The first restart is immediate; a crash loop backs off, never past a second. */
    for (int i = 1; i < s->quick_deaths && delay < 1.0; i++)
        delay = delay ? delay * 2 : 0.05;
    if (delay > 1.0)
        delay = 1.0;
    LOG(LOG_WARN, "worker died; restarting", "wid=%s how=\"%s\" restart_in=%.2f", s->wid, how,
        delay);
    ev_timer_set(&s->restart, delay, 0);
    ev_timer_start(m->loop, &s->restart);
}

static void master_on_child(struct ev_loop *loop, ev_child *c, int revents)
{
    struct master *m = c->data;
    (void)revents;
    js_table_read(&m->types, m->stats_rd);
    js_table_exited(&m->types, c->rpid);
    for (int i = 0; i < m->nretiring; i++) {
        if (m->retiring[i] == c->rpid) {
            m->retiring[i] = m->retiring[--m->nretiring];
            goto done;
        }
    }
    for (int i = 0; i < m->nslots; i++) {
        if (m->slots[i].pid == c->rpid) {
            master_slot_died(m, &m->slots[i], c->rstatus);
            break;
        }
    }
done:
    if (m->stopping && master_live(m) == 0)
        ev_break(loop, EVBREAK_ALL);
}

static void master_on_deadline(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct master *m = t->data;
    (void)revents;
    LOG(LOG_ERROR, "workers did not stop in time; killing them", "live=%d", master_live(m));
    master_signal_all(m, SIGKILL);
    ev_break(loop, EVBREAK_ALL);
}

static void master_stop(struct master *m)
{
    m->stopping++;
    if (m->stopping == 1) {
        sd_notify(0, "STOPPING=1\nSTATUS=Stopping: draining workers");
        sched_free(m->sched);
        m->sched = NULL;
        LOG(LOG_INFO, "stopping workers", "live=%d", master_live(m));
        for (int i = 0; i < m->nslots; i++)
            ev_timer_stop(m->loop, &m->slots[i].restart);
        ev_timer_set(&m->deadline, m->cfg->shutdown_timeout + 15.0, 0);
        ev_timer_start(m->loop, &m->deadline);
    }
    master_signal_all(m, SIGTERM);
    if (master_live(m) == 0)
        ev_break(m->loop, EVBREAK_ALL);
}

static void master_retire_all(struct master *m)
{
    for (int i = 0; i < m->nslots; i++) {
        struct slot *s = &m->slots[i];
        ev_timer_stop(m->loop, &s->restart);
        if (s->pid <= 0)
            continue;
        kill(s->pid, SIGTERM);
        if (m->nretiring < MASTER_MAX_PROCS)
            m->retiring[m->nretiring++] = s->pid;
        else
            LOG(LOG_WARN, "too many draining workers to track", "pid=%d", (int)s->pid);
    }
    free(m->slots);
    m->slots = NULL;
    m->nslots = 0;
}

static void master_reload(struct master *m)
{
    struct config *next = calloc(1, sizeof(*next));
    char err[512], q[600];
    int level;
    if (!next)
        return;
    /* Templates are checked with the config, so that a bad one is refused here
     * rather than met by every new worker. */
    if (cfg_load(next, m->cfg->path, err, sizeof(err)) != 0 ||
        tmpl_check(next->email_templates, err, sizeof(err)) != 0) {
        LOG(LOG_ERROR, "reload refused; keeping the running config", "error=%s",
            log_q(q, sizeof(q), err, strlen(err)));
        cfg_free(next);
        free(next);
        return;
    }
    LOG(LOG_INFO, "reloading: replacing workers", "workers=%d", next->workers);
    master_retire_all(m);
    cfg_free(m->cfg);
    free(m->cfg);
    m->cfg = next;
    if (!m->sched)
        m->sched = sched_new(m->loop, next, NULL, NULL);
    else if (sched_reload(m->sched, next) != 0)
        LOG(LOG_ERROR, "scheduler kept its old entries: out of memory", NULL);
    if ((level = log_level_parse(next->log_level)) >= 0)
        log_threshold = (enum log_level)level;
    master_start_slots(m);
}

static void master_on_signal(struct ev_loop *loop, ev_signal *sig, int revents)
{
    struct master *m = sig->data;
    (void)loop;
    (void)revents;
    switch (sig->signum) {
    case SIGHUP:
        if (!m->stopping)
            master_reload(m);
        break;
    case SIGUSR1:
    case SIGUSR2:
        log_step(sig->signum == SIGUSR1 ? -1 : 1);
        master_signal_all(m, sig->signum);
        break;
    default:
        master_stop(m);
    }
}

/* A worker reached Redis. Every new worker writes one byte (restarts and reloads
 * too), so the pipe is drained each time; only the first byte matters. */
static void master_on_notify(struct ev_loop *loop, ev_io *io, int revents)
{
    struct master *m = io->data;
    char buf[256];
    (void)loop;
    (void)revents;
    while (read(m->notify_rd, buf, sizeof(buf)) > 0)
        ;
    if (m->ready || m->stopping)
        return;
    m->ready = 1;
    sd_notifyf(0, "READY=1\nSTATUS=Running: %d workers, Redis answering", m->nslots);
    LOG(LOG_INFO, "ready: Redis answers", NULL);
}

static int master_notify_pipe(struct master *m)
{
    int fds[2];
    /* Non-blocking: a worker never waits on it; CLOEXEC: nothing we exec inherits it. */
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) {
        LOG(LOG_ERROR, "cannot create the readiness pipe", "errno=%d", errno);
        return -1;
    }
    m->notify_rd = fds[0];
    m->notify_wr = fds[1];
    ev_io_init(&m->notify, master_on_notify, m->notify_rd, EV_READ);
    m->notify.data = m;
    ev_io_start(m->loop, &m->notify);
    return 0;
}

static void master_on_stats(struct ev_loop *loop, ev_io *io, int revents)
{
    struct master *m = io->data;
    (void)loop;
    (void)revents;
    js_table_read(&m->types, m->stats_rd);
}

static int master_stats_pipe(struct master *m)
{
    int fds[2];
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) {
        LOG(LOG_ERROR, "cannot create the statistics pipe", "errno=%d", errno);
        return -1;
    }
    m->stats_rd = fds[0];
    m->stats_wr = fds[1];
    ev_io_init(&m->stats, master_on_stats, m->stats_rd, EV_READ);
    m->stats.data = m;
    ev_io_start(m->loop, &m->stats);
    return 0;
}

static void master_watch(struct master *m)
{
    ev_signal *sigs[5] = {&m->sig_term, &m->sig_int, &m->sig_hup, &m->sig_usr1, &m->sig_usr2};
    int nums[5] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2};
    for (int i = 0; i < 5; i++) {
        ev_signal_init(sigs[i], master_on_signal, nums[i]);
        sigs[i]->data = m;
        ev_signal_start(m->loop, sigs[i]);
    }
    ev_child_init(&m->child, master_on_child, 0, 0);
    m->child.data = m;
    ev_child_start(m->loop, &m->child);
    ev_timer_init(&m->deadline, master_on_deadline, 0, 0);
    m->deadline.data = m;
}

/* What /healthz and /metrics need from the master: the running config and
 * whether every slot has a process. */
static void master_view(void *ud, struct metrics_view *v)
{
    const struct master *m = ud;
    v->cfg = m->cfg;
    v->workers_expected = m->nslots;
    v->workers_running = 0;
    v->types = &m->types;
    v->sched = m->sched;
    for (int i = 0; i < m->nslots; i++)
        v->workers_running += m->slots[i].pid > 0;
}

int master_run(struct config *cfg)
{
    struct master m;
    int rc;
    memset(&m, 0, sizeof(m));
    m.loop = ev_default_loop(0);
    m.cfg = cfg;
    m.pid = getpid();
    if (gethostname(m.host, sizeof(m.host)) != 0)
        snprintf(m.host, sizeof(m.host), "unknown");
    srand((unsigned)m.pid ^ (unsigned)time(NULL));
    signal(SIGPIPE, SIG_IGN);
    master_watch(&m);
    m.metrics = metrics_start(m.loop, cfg, master_view, &m);
    m.sched = sched_new(m.loop, cfg, NULL, NULL);
    if (master_notify_pipe(&m) != 0 || master_stats_pipe(&m) != 0)
        return 1;
    LOG(LOG_INFO, "master started", "workers=%d concurrency=%d version=%s", cfg->workers,
        cfg->concurrency, STELLER_VERSION);
    if (master_start_slots(&m) != 0)
        return 1;
    ev_run(m.loop, 0);
    rc = master_live(&m) == 0 ? 0 : 1;
    if (m.exit_code)
        rc = m.exit_code;
    LOG(LOG_INFO, "master stopped", "exit=%d", rc);
    metrics_free(m.metrics);
    sched_free(m.sched);
    ev_io_stop(m.loop, &m.notify);
    close(m.notify_rd);
    close(m.notify_wr);
    ev_io_stop(m.loop, &m.stats);
    close(m.stats_rd);
    close(m.stats_wr);
    js_table_free(&m.types);
    free(m.slots);
    cfg_free(m.cfg);
    free(m.cfg);
    return rc;
}
