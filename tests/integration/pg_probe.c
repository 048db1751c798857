/*
 * pg_probe.c - drives worker/pg.c on a libev loop for tests/integration/test_pg.py.
 *
 *   pg_probe CONNINFO SQL [PARAM...]
 *
 * Waits (up to 20 s) for a connection, runs SQL with pg_run_params, prints the
 * outcome and the first row's columns separated by '|', and exits 0 on PG_OK,
 * 1 on PG_ERROR (printing the SQLSTATE), 2 on PG_LOST or when no connection came.
 */
#include <stdio.h>
#include <stdlib.h>

#include "log.h"
#include "pg.h"

struct probe {
    struct ev_loop *loop;
    struct pg_pool *pg;
    const char *sql;
    int nparams;
    const char *const *params;
    int sent, rc;
};

static void on_done(void *ud, enum pg_outcome outcome, const PGresult *res, const char *state,
                    const char *message)
{
    struct probe *p = ud;
    if (outcome == PG_OK) {
        printf("ok");
        for (int i = 0; res && PQntuples(res) > 0 && i < PQnfields(res); i++)
            printf("%s%s", i ? "|" : " ", PQgetisnull(res, 0, i) ? "NULL" : PQgetvalue(res, 0, i));
        printf("\n");
        p->rc = 0;
    } else {
        printf("%s %s %s\n", outcome == PG_ERROR ? "error" : "lost", state, message);
        p->rc = outcome == PG_ERROR ? 1 : 2;
    }
    ev_break(p->loop, EVBREAK_ALL);
}

static void on_idle(void *ud)
{
    struct probe *p = ud;
    if (p->sent)
        return;
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

int main(int argc, char **argv)
{
    struct probe p = {.rc = 2};
    ev_timer deadline;
    if (argc < 3) {
        fprintf(stderr, "usage: pg_probe CONNINFO SQL [PARAM...]\n");
        return 2;
    }
    log_threshold = LOG_WARN;
    p.loop = ev_loop_new(EVFLAG_AUTO);
    p.sql = argv[2];
    p.nparams = argc - 3;
    p.params = (const char *const *)argv + 3;
    p.pg = pg_new(p.loop, argv[1], 1, 5000);
    pg_on_idle(p.pg, on_idle, &p);
    ev_timer_init(&deadline, on_timeout, 20.0, 0);
    ev_timer_start(p.loop, &deadline);
    ev_run(p.loop, 0);
    pg_free(p.pg);
    ev_loop_destroy(p.loop);
    return p.rc;
}
