/*
 * pg_probe.c - drives worker/pg.c on a libev loop for tests/integration/test_pg.py.
 *
 *   pg_probe CONNINFO SQL [PARAM...]
 *
 * Waits (up to 20 s) for a connection, runs SQL with pg_run_params, prints the
 * outcome and the first row's columns separated by '|', and exits 0 on PG_OK,
 * 1 on PG_ERROR (printing the SQLSTATE), 2 on PG_LOST or when no connection came.
 *
 *   pg_probe --submit N [--pool K] [--now] [--free-after MS] CONNINFO SQL
 *
 * Runs N requests through pg_submit() on a pool of K connections (default 1),
 * all at once, the request's index (0..N-1) as $1. They go when the first
 * connection is idle, or with --now straight after pg_new() (the pool still
 * connecting). --free-after calls pg_free() after MS milliseconds whatever is
 * still out. Prints one line per callback, in callback order: "INDEX ok COLS",
 * "INDEX error SQLSTATE MESSAGE" or "INDEX lost MESSAGE", then "done MS" (time
 * from submit to the last callback). Exits 0 when every request ran its callback
 * exactly once, 3 otherwise.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pg.h"

struct sub {
    struct probe *p;
    int i;
};

struct probe {
    struct ev_loop *loop;
    struct pg_pool *pg;
    const char *sql;
    int nparams;
    const char *const *params;
    int sent, rc;

    /* --submit */
    int submit, pool, now, free_after_ms;
    int finished;
    int *calls;
    struct sub *subs;
    char (*index)[16];
    const char **vals;
    ev_tstamp t0;
    ev_timer free_timer;
};

static void print_row(const PGresult *res)
{
    for (int i = 0; res && PQntuples(res) > 0 && i < PQnfields(res); i++)
        printf("%s%s", i ? "|" : " ", PQgetisnull(res, 0, i) ? "NULL" : PQgetvalue(res, 0, i));
}

static void on_done(void *ud, enum pg_outcome outcome, const PGresult *res, const char *state,
                    const char *message)
{
    struct probe *p = ud;
    if (outcome == PG_OK) {
        printf("ok");
        print_row(res);
        printf("\n");
        p->rc = 0;
    } else {
        printf("%s %s %s\n", outcome == PG_ERROR ? "error" : "lost", state, message);
        p->rc = outcome == PG_ERROR ? 1 : 2;
    }
    ev_break(p->loop, EVBREAK_ALL);
}

static void on_sub_done(void *ud, enum pg_outcome outcome, const PGresult *res, const char *state,
                        const char *message)
{
    struct sub *s = ud;
    struct probe *p = s->p;
    p->calls[s->i]++;
    if (outcome == PG_OK) {
        printf("%d ok", s->i);
        print_row(res);
        printf("\n");
    } else {
        /* one line per request: libpq's messages may go on over several */
        int len = (int)strcspn(message, "\n");
        if (outcome == PG_ERROR)
            printf("%d error %s %.*s\n", s->i, state, len, message);
        else
            printf("%d lost %.*s\n", s->i, len, message);
    }
    if (++p->finished == p->submit) {
        printf("done %.0f\n", (ev_time() - p->t0) * 1000);
        ev_break(p->loop, EVBREAK_ALL);
    }
}

static void submit_all(struct probe *p)
{
    p->subs = calloc(p->submit, sizeof(*p->subs));
    p->calls = calloc(p->submit, sizeof(*p->calls));
    p->index = calloc(p->submit, sizeof(*p->index));
    p->vals = calloc(p->submit, sizeof(*p->vals));
    p->t0 = ev_time();
    p->sent = 1;
    for (int i = 0; i < p->submit; i++) {
        p->subs[i] = (struct sub){p, i};
        snprintf(p->index[i], sizeof(p->index[i]), "%d", i);
        p->vals[i] = p->index[i]; /* $1; stays valid until the callback */
        pg_submit(p->pg, p->sql, 1, &p->vals[i], on_sub_done, &p->subs[i]);
    }
}

static void on_idle(void *ud)
{
    struct probe *p = ud;
    if (p->sent)
        return;
    if (p->submit) {
        submit_all(p);
        return;
    }
    p->sent = 1;
    if (pg_run_params(p->pg, p->sql, p->nparams, p->params, on_done, p) != 0)
        p->sent = 0;
}

static void on_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)t;
    (void)revents;
    printf("lost no connection in time\n");
    ev_break(loop, EVBREAK_ALL);
}

static void on_free(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct probe *p = t->data;
    (void)loop;
    (void)revents;
    pg_free(p->pg);
    p->pg = NULL;
    ev_break(p->loop, EVBREAK_ALL);
}

static int parse_submit(struct probe *p, int *argc, char ***argv)
{
    while (*argc > 1 && strncmp((*argv)[1], "--", 2) == 0) {
        const char *o = (*argv)[1];
        if (strcmp(o, "--now") == 0) {
            p->now = 1;
        } else if (*argc > 2 && strcmp(o, "--submit") == 0) {
            p->submit = atoi((*argv)[2]);
        } else if (*argc > 2 && strcmp(o, "--pool") == 0) {
            p->pool = atoi((*argv)[2]);
        } else if (*argc > 2 && strcmp(o, "--free-after") == 0) {
            p->free_after_ms = atoi((*argv)[2]);
        } else {
            return -1;
        }
        int used = strcmp(o, "--now") == 0 ? 1 : 2;
        *argc -= used;
        *argv += used;
    }
    return 0;
}

static int submit_result(const struct probe *p)
{
    for (int i = 0; i < p->submit; i++)
        if (!p->calls || p->calls[i] != 1)
            return 3;
    return 0;
}

int main(int argc, char **argv)
{
    struct probe p = {.rc = 2, .pool = 1};
    ev_timer deadline;
    if (parse_submit(&p, &argc, &argv) != 0 || argc < 3 || p.pool < 1 || p.submit < 0) {
        fprintf(stderr, "usage: pg_probe [--submit N [--pool K] [--now] [--free-after MS]] "
                        "CONNINFO SQL [PARAM...]\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    log_threshold = LOG_WARN;
    p.loop = ev_loop_new(EVFLAG_AUTO);
    p.sql = argv[2];
    p.nparams = argc - 3;
    p.params = (const char *const *)argv + 3;
    p.pg = pg_new(p.loop, argv[1], p.pool, 5000);
    pg_on_idle(p.pg, on_idle, &p);
    if (p.submit && p.now)
        submit_all(&p);
    if (p.free_after_ms) {
        ev_timer_init(&p.free_timer, on_free, p.free_after_ms / 1000.0, 0);
        p.free_timer.data = &p;
        ev_timer_start(p.loop, &p.free_timer);
    }
    ev_timer_init(&deadline, on_timeout, 20.0, 0);
    ev_timer_start(p.loop, &deadline);
    ev_run(p.loop, 0);
    pg_free(p.pg);
    ev_loop_destroy(p.loop);
    if (p.submit) {
        int rc = submit_result(&p);
        free(p.subs);
        free(p.calls);
        free(p.index);
        free(p.vals);
        return rc;
    }
    return p.rc;
}
