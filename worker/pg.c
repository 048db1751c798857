/*
 * pg.c - non-blocking libpq connections driven by libev.
 *
 * Each connection is a small state machine: DOWN (a reconnect timer runs),
 * CONNECTING (PQconnectPoll tells which way to wait), IDLE (a read watcher
 * notices the server hanging up), BUSY (one request: send, feed COPY data,
 * collect results until PQgetResult returns NULL). libpq's socket can change
 * while connecting, so the watcher is re-armed from PQsocket() every time.
 *
 * Connect has its own deadline (libpq enforces connect_timeout only in its
 * blocking calls). A request never has one here: the caller bounds it, and a
 * statement_timeout on the server bounds what a lost client leaves running.
 *
 * pg_submit() requests that find no idle connection wait in a FIFO list on the
 * pool. A connection that turns idle serves that list before telling the idle
 * callback, so pg_run() users only get the connections the queue leaves free.
 * The list is failed with PG_LOST from a zero-delay timer, never inside
 * pg_submit() or a pool callback the caller did not expect: when a request
 * arrives while the pool is known down, and when the last open connection is
 * lost while requests wait.
 */
#include "pg.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"

#define PG_CONNECT_TIMEOUT 10.0
#define PG_COPY_CHUNK 65536

enum pgc_state { PGC_DOWN, PGC_CONNECTING, PGC_IDLE, PGC_BUSY };

struct pg_conn {
    struct pg_pool *pool;
    PGconn *conn;
    enum pgc_state state;
    ev_io io;
    ev_timer timer; /* reconnect backoff, the connect deadline, or the request deadline */
    int failures;

    /* the request in flight */
    pg_done_fn *fn;
    void *ud;
    const char *copy;
    size_t copy_len, copy_off;
    int in_copy, copy_ended, errored;
    PGresult *keep; /* the last result, or the first error */
};

/* A pg_submit() request waiting for a connection. */
struct pg_req {
    const char *sql;
    int nparams;
    const char *const *values;
    pg_done_fn *fn;
    void *ud;
    struct pg_req *next;
};

struct pg_pool {
    struct ev_loop *loop;
    char *conninfo;
    int size;
    struct pg_conn *conns;
    void (*idle_fn)(void *ud);
    void *idle_ud;
    int was_up;
    char options[128]; /* libpq "options": settings every session starts with */
    double request_deadline; /* seconds: statement_timeout plus a margin */
    int closing;
    struct pg_req *queue, *queue_tail; /* pg_submit() requests waiting, oldest first */
    ev_timer fail;                     /* fails the queue from the loop when the pool is down */
};

static void pgc_connect(struct pg_conn *c);
static void pgc_pump(struct pg_conn *c);
static void pg_serve_queue(struct pg_pool *p);
static void pg_arm_fail(struct pg_pool *p);

static void pgc_watch(struct pg_conn *c, int events)
{
    int fd = c->conn ? PQsocket(c->conn) : -1;
    /* While connecting, libpq may close a socket and open the next host's with the
     * same number: epoll forgot the old one, so re-arm even when nothing looks changed. */
    if (c->state != PGC_CONNECTING && ev_is_active(&c->io) && c->io.fd == fd &&
        (c->io.events & (EV_READ | EV_WRITE)) == events)
        return;
    ev_io_stop(c->pool->loop, &c->io);
    if (fd < 0 || !events)
        return;
    ev_io_set(&c->io, fd, events);
    ev_io_start(c->pool->loop, &c->io);
}

static void pg_pool_state(struct pg_pool *p, const char *why)
{
    int up = pg_is_up(p);
    char q[300];
    if (!up && p->queue)
        pg_arm_fail(p); /* requests wait for a connection that no longer exists */
    if (up == p->was_up)
        return;
    p->was_up = up;
    if (up)
        LOG(LOG_INFO, "postgresql connection up", NULL);
    else
        LOG(LOG_WARN, "postgresql connection down", "reason=%s",
            log_q(q, sizeof(q), why, strcspn(why, "\n")));
}

static void pgc_finish_request(struct pg_conn *c, enum pg_outcome outcome, const char *why)
{
    pg_done_fn *fn = c->fn;
    PGresult *res = c->keep;
    const char *state = NULL, *msg = why;

    c->fn = NULL;
    c->keep = NULL;
    if (!fn) {
        PQclear(res);
        return;
    }
    if (outcome == PG_OK && c->errored)
        outcome = PG_ERROR;
    if (outcome == PG_ERROR && res) {
        state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    }
    fn(c->ud, outcome, res, state ? state : "", msg ? msg : "");
    PQclear(res);
}

static void pgc_down(struct pg_conn *c, const char *why)
{
    double delay = 0.1;
    char reason[256];

    snprintf(reason, sizeof(reason), "%s", why && *why ? why : "connection lost");
    ev_io_stop(c->pool->loop, &c->io);
    ev_timer_stop(c->pool->loop, &c->timer);
    if (c->conn)
        PQfinish(c->conn);
    c->conn = NULL;
    c->state = PGC_DOWN;
    for (int i = 0; i < c->failures && delay < 5.0; i++)
        delay *= 2;
    delay = (delay > 5.0 ? 5.0 : delay) * (0.5 + (double)rand() / RAND_MAX / 2);
    c->failures++;
    ev_timer_set(&c->timer, delay, 0);
    ev_timer_start(c->pool->loop, &c->timer);
    pg_pool_state(c->pool, reason);
    pgc_finish_request(c, PG_LOST, reason);
}

static void pgc_become_idle(struct pg_conn *c)
{
    struct pg_pool *p = c->pool;
    c->state = PGC_IDLE;
    pgc_watch(c, EV_READ);
    pg_serve_queue(p);
    if (c->state == PGC_IDLE && p->idle_fn)
        p->idle_fn(p->idle_ud);
}

static void pgc_poll_connect(struct pg_conn *c)
{
    switch (PQconnectPoll(c->conn)) {
    case PGRES_POLLING_READING:
        pgc_watch(c, EV_READ);
        return;
    case PGRES_POLLING_WRITING:
        pgc_watch(c, EV_WRITE);
        return;
    case PGRES_POLLING_OK:
        ev_timer_stop(c->pool->loop, &c->timer);
        if (PQsetnonblocking(c->conn, 1) != 0) {
            pgc_down(c, PQerrorMessage(c->conn));
            return;
        }
        c->failures = 0;
        c->state = PGC_IDLE;
        pg_pool_state(c->pool, "");
        pgc_become_idle(c);
        return;
    default:
        pgc_down(c, PQerrorMessage(c->conn));
    }
}

/* Feeds COPY data; returns 1 when all is sent, 0 to wait for the socket, -1 lost. */
static int pgc_feed_copy(struct pg_conn *c)
{
    while (c->copy_off < c->copy_len) {
        size_t n = c->copy_len - c->copy_off;
        int r = PQputCopyData(c->conn, c->copy + c->copy_off, n > PG_COPY_CHUNK ? PG_COPY_CHUNK
                                                                                : (int)n);
        if (r == 0)
            return 0;
        if (r < 0)
            return -1;
        c->copy_off += n > PG_COPY_CHUNK ? PG_COPY_CHUNK : n;
    }
    if (!c->copy_ended) {
        int r = PQputCopyEnd(c->conn, c->copy ? NULL : "no data for COPY");
        if (r == 0)
            return 0;
        if (r < 0)
            return -1;
        c->copy_ended = 1;
    }
    c->in_copy = 0;
    return 1;
}

static void pgc_take_result(struct pg_conn *c, PGresult *res)
{
    ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_FATAL_ERROR || st == PGRES_BAD_RESPONSE) {
        if (!c->errored) {
            PQclear(c->keep);
            c->keep = res;
            c->errored = 1;
            return;
        }
    } else if (!c->errored) {
        PQclear(c->keep);
        c->keep = res;
        return;
    }
    PQclear(res);
}

/* Drives the request in flight as far as the socket allows. */
static void pgc_pump(struct pg_conn *c)
{
    for (;;) {
        int flush;
        if (c->in_copy) {
            int r = pgc_feed_copy(c);
            if (r < 0)
                break;
            if (r == 0) {
                pgc_watch(c, EV_READ | EV_WRITE);
                return;
            }
        }
        if ((flush = PQflush(c->conn)) < 0)
            break;
        if (!PQconsumeInput(c->conn))
            break;
        if (PQisBusy(c->conn)) {
            pgc_watch(c, flush ? EV_READ | EV_WRITE : EV_READ);
            return;
        }
        PGresult *res = PQgetResult(c->conn);
        if (!res) {
            /* the callback first, so that it may run its next request at once */
            ev_timer_stop(c->pool->loop, &c->timer);
            c->state = PGC_IDLE;
            pgc_watch(c, EV_READ);
            pgc_finish_request(c, PG_OK, NULL);
            if (c->state == PGC_IDLE)
                pg_serve_queue(c->pool);
            if (c->state == PGC_IDLE && c->pool->idle_fn)
                c->pool->idle_fn(c->pool->idle_ud);
            return;
        }
        if (PQresultStatus(res) == PGRES_COPY_IN) {
            PQclear(res);
            c->in_copy = 1;
            continue;
        }
        pgc_take_result(c, res);
    }
    pgc_down(c, PQerrorMessage(c->conn));
}

static void pgc_on_io(struct ev_loop *loop, ev_io *w, int revents)
{
    struct pg_conn *c = w->data;
    (void)loop;
    (void)revents;
    switch (c->state) {
    case PGC_CONNECTING:
        pgc_poll_connect(c);
        break;
    case PGC_BUSY:
        pgc_pump(c);
        break;
    case PGC_IDLE:
        /* nothing is expected: the server closed, or sent a notice */
        if (!PQconsumeInput(c->conn) || PQstatus(c->conn) == CONNECTION_BAD)
            pgc_down(c, PQerrorMessage(c->conn));
        break;
    default:
        ev_io_stop(loop, w);
    }
}

static void pgc_on_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct pg_conn *c = t->data;
    (void)loop;
    (void)revents;
    if (c->state == PGC_CONNECTING)
        pgc_down(c, "connect timed out");
    else if (c->state == PGC_BUSY)
        pgc_down(c, "no answer in time; dropping the connection"); /* the server stops the
                                                                     statement on its own */
    else if (c->state == PGC_DOWN)
        pgc_connect(c);
}

/* libpq prints server notices on stderr by default; they belong in our log. */
static void pgc_notice(void *arg, const char *message)
{
    char q[300];
    (void)arg;
    LOG(LOG_INFO, "postgresql notice", "text=%s",
        log_q(q, sizeof(q), message, strcspn(message, "\n")));
}

static void pgc_connect(struct pg_conn *c)
{
    /* dbname is expanded as the whole conninfo; the keys after it override it */
    const char *keys[] = {"dbname", "application_name", "options", "client_encoding",
                          "keepalives_idle", "keepalives_interval", "keepalives_count", NULL};
    const char *vals[] = {c->pool->conninfo, "steller-worker", c->pool->options, "UTF8", "30",
                          "10", "3", NULL};
    c->conn = PQconnectStartParams(keys, vals, 1);
    if (!c->conn || PQstatus(c->conn) == CONNECTION_BAD) {
        pgc_down(c, c->conn ? PQerrorMessage(c->conn) : "out of memory");
        return;
    }
    PQsetNoticeProcessor(c->conn, pgc_notice, NULL);
    c->state = PGC_CONNECTING;
    ev_timer_set(&c->timer, PG_CONNECT_TIMEOUT, 0);
    ev_timer_start(c->pool->loop, &c->timer);
    pgc_watch(c, EV_WRITE);
}

/* Ends every waiting request with PG_LOST. The list is detached first: a
 * callback that submits again lands in a fresh list, failed on a later turn. */
static void pg_fail_queue(struct pg_pool *p, const char *why)
{
    struct pg_req *r = p->queue;
    p->queue = p->queue_tail = NULL;
    while (r) {
        struct pg_req *next = r->next;
        r->fn(r->ud, PG_LOST, NULL, "", why);
        free(r);
        r = next;
    }
}

static void pg_on_fail(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct pg_pool *p = t->data;
    (void)loop;
    (void)revents;
    /* A connection came back meanwhile: it serves the queue when it turns idle. */
    if (pg_is_up(p))
        return;
    pg_fail_queue(p, "no connection to PostgreSQL");
}

static void pg_arm_fail(struct pg_pool *p)
{
    if (!p->closing && !ev_is_active(&p->fail)) {
        ev_timer_set(&p->fail, 0, 0);
        ev_timer_start(p->loop, &p->fail);
    }
}

struct pg_pool *pg_new(struct ev_loop *loop, const char *conninfo, int size,
                       int statement_timeout_ms)
{
    struct pg_pool *p = calloc(1, sizeof(*p));
    if (!p || !(p->conninfo = strdup(conninfo)) || !(p->conns = calloc(size, sizeof(*p->conns)))) {
        if (p)
            free(p->conninfo);
        free(p);
        return NULL;
    }
    p->loop = loop;
    p->size = size;
    snprintf(p->options, sizeof(p->options),
             "-c client_min_messages=warning -c statement_timeout=%d", statement_timeout_ms);
    p->request_deadline = statement_timeout_ms / 1000.0 + 10.0;
    p->was_up = -1; /* neither: the first state, up or down, is logged */
    ev_init(&p->fail, pg_on_fail);
    p->fail.data = p;
    for (int i = 0; i < size; i++) {
        struct pg_conn *c = &p->conns[i];
        c->pool = p;
        ev_init(&c->io, pgc_on_io);
        c->io.data = c;
        ev_init(&c->timer, pgc_on_timer);
        c->timer.data = c;
        pgc_connect(c);
    }
    return p;
}

void pg_free(struct pg_pool *p)
{
    if (!p)
        return;
    p->idle_fn = NULL;
    p->closing = 1; /* callbacks run below must not start new requests */
    for (int i = 0; i < p->size; i++) {
        struct pg_conn *c = &p->conns[i];
        ev_io_stop(p->loop, &c->io);
        ev_timer_stop(p->loop, &c->timer);
        if (c->conn)
            PQfinish(c->conn);
        c->conn = NULL;
        c->state = PGC_DOWN;
        pgc_finish_request(c, PG_LOST, "shutting down");
    }
    ev_timer_stop(p->loop, &p->fail);
    while (p->queue) /* a callback above, or one of these, may have submitted again */
        pg_fail_queue(p, "shutting down");
    free(p->conns);
    free(p->conninfo);
    free(p);
}

int pg_idle(const struct pg_pool *p)
{
    int n = 0;
    for (int i = 0; p && i < p->size; i++)
        n += p->conns[i].state == PGC_IDLE;
    return n;
}

int pg_is_up(const struct pg_pool *p)
{
    for (int i = 0; p && i < p->size; i++)
        if (p->conns[i].state == PGC_IDLE || p->conns[i].state == PGC_BUSY)
            return 1;
    return 0;
}

/* Takes an idle connection for a request, or NULL. */
static struct pg_conn *pg_take(struct pg_pool *p, const char *copy, size_t copy_len,
                               pg_done_fn *fn, void *ud)
{
    struct pg_conn *c = NULL;
    if (!p || p->closing)
        return NULL;
    for (int i = 0; i < p->size && !c; i++)
        if (p->conns[i].state == PGC_IDLE)
            c = &p->conns[i];
    if (!c)
        return NULL;
    c->state = PGC_BUSY;
    c->fn = fn;
    c->ud = ud;
    c->copy = copy;
    c->copy_len = copy_len;
    c->copy_off = 0;
    c->in_copy = c->copy_ended = c->errored = 0;
    ev_timer_stop(p->loop, &c->timer);
    ev_timer_set(&c->timer, p->request_deadline, 0);
    ev_timer_start(p->loop, &c->timer);
    return c;
}

/* The request goes on from the loop, never inside pg_run(): a callback that
 * runs before pg_run() returns would surprise every caller. A send that fails
 * means the connection broke while idle: it goes down, fn is not called, and
 * pg_run() returns -1 as if no connection were idle. */
static int pg_sent(struct pg_conn *c, int ok)
{
    if (!ok) {
        c->fn = NULL;
        pgc_down(c, PQerrorMessage(c->conn));
        return -1;
    }
    pgc_watch(c, EV_READ | EV_WRITE);
    return 0;
}

int pg_run(struct pg_pool *p, const char *sql, const char *copy, size_t copy_len, pg_done_fn *fn,
           void *ud)
{
    struct pg_conn *c = pg_take(p, copy, copy_len, fn, ud);
    if (!c)
        return -1;
    return pg_sent(c, PQsendQuery(c->conn, sql));
}

int pg_run_params(struct pg_pool *p, const char *sql, int nparams, const char *const *values,
                  pg_done_fn *fn, void *ud)
{
    struct pg_conn *c = pg_take(p, NULL, 0, fn, ud);
    if (!c)
        return -1;
    return pg_sent(c, PQsendQueryParams(c->conn, sql, nparams, NULL, values, NULL, NULL, 0));
}

static void pg_enqueue(struct pg_pool *p, struct pg_req *r)
{
    if (p->queue_tail)
        p->queue_tail->next = r;
    else
        p->queue = r;
    p->queue_tail = r;
}

/* Sends at once on an idle connection; 0 when sent, -1 when none is idle. */
static int pg_send_now(struct pg_pool *p, const char *sql, int nparams,
                       const char *const *values, pg_done_fn *fn, void *ud)
{
    struct pg_conn *c;
    while ((c = pg_take(p, NULL, 0, fn, ud)))
        if (pg_sent(c, PQsendQueryParams(c->conn, sql, nparams, NULL, values, NULL, NULL, 0)) == 0)
            return 0;
    return -1;
}

/* Sends waiting requests while connections are idle, oldest first. */
static void pg_serve_queue(struct pg_pool *p)
{
    struct pg_req *r;
    while ((r = p->queue) && pg_send_now(p, r->sql, r->nparams, r->values, r->fn, r->ud) == 0) {
        p->queue = r->next;
        if (!p->queue)
            p->queue_tail = NULL;
        free(r);
    }
}

void pg_submit(struct pg_pool *p, const char *sql, int nparams, const char *const *values,
               pg_done_fn *fn, void *ud)
{
    struct pg_req *r;
    /* An idle connection with nobody waiting: no queue entry, no allocation. */
    if (!p->queue && pg_send_now(p, sql, nparams, values, fn, ud) == 0)
        return;
    if (!(r = malloc(sizeof(*r)))) {
        LOG(LOG_ERROR, "out of memory queueing a postgresql request", NULL);
        fn(ud, PG_LOST, NULL, "", "out of memory"); /* the one synchronous answer: pg.h */
        return;
    }
    *r = (struct pg_req){sql, nparams, values, fn, ud, NULL};
    pg_enqueue(p, r);
    if (p->closing)
        return; /* pg_free() is running: it fails the queue before it returns */
    /* Nothing open, and the pool is not still making its first connections:
     * the caller learns at once rather than waiting out a reconnect. */
    if (!pg_is_up(p) && p->was_up != -1)
        pg_arm_fail(p);
}

void pg_on_idle(struct pg_pool *p, void (*fn)(void *ud), void *ud)
{
    p->idle_fn = fn;
    p->idle_ud = ud;
}

int pg_sqlstate_data(const char *s)
{
    return s && strlen(s) == 5 &&
           (strncmp(s, "22", 2) == 0 || (strncmp(s, "23", 2) == 0 && strcmp(s, "23505") != 0));
}

