/*
 * wallet.c - the wallet.seed_sandbox job: credits fake USD to a partner's
 * sandbox wallet, creating the wallet if missing, once per reference.
 *
 * Args: partner_id (integer), amount (decimal string, default
 * wallet.default_seed_amount), reference_id (string, default
 * "signup-seed:<partner_id>"). start() checks them (a bad one is dead with its
 * reason) and adds the seed to the process's open batch.
 *
 * Batches: one transaction per seed cost about 1 ms of server CPU, so the seeds
 * that arrive together are sent as one call of steller_wallet_seed_sandbox_batch()
 * (schema/008): arrays in, one outcome row per seed out, every seed with the
 * semantics of the single function steller_wallet_seed_sandbox() (schema/007),
 * in one transaction. A batch is closed when it holds batch_max seeds (half the
 * worker's concurrency, at most WS_BATCH_MAX, so that one batch fills while the
 * other runs), when the worker has no free slot (nothing more can arrive), or
 * WS_BATCH_WAIT after its first seed. At most WS_INFLIGHT batches per process are
 * sent at once; the others wait in order.
 *
 * A batch that PostgreSQL refuses for its data (class 22/23: a balance that
 * would overflow, a reference that is not valid text) rolled back whole; its
 * seeds are then sent one by one through the single function, so only the bad
 * one is dead, with PostgreSQL's message. Any other error or a lost connection
 * sends every seed of the batch to retry: a seed is idempotent per reference.
 *
 * Amounts stay text from the envelope to PostgreSQL, where they become numeric:
 * never a float. A JSON/msgpack number for amount is refused, since the
 * producer's number may already have been a binary float.
 *
 * Cancel (timeout, hard shutdown): the seed's context stays in its batch, marked
 * cancelled. Not yet sent, it is dropped from the batch; sent, the statement may
 * still commit it, and the retry then finds the entry and changes nothing.
 *
 * One batcher per worker process (static below), as in request_log.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decimal.h"
#include "log.h"
#include "pg.h"
#include "registry.h"

#define WS_AMOUNT_MAX 40     /* longer than any numeric(18,4) text */
#define WS_REFERENCE_MAX 200 /* bytes; WalletHistories."ReferenceId" is text */
#define WS_BATCH_MAX 128     /* seeds per call; each holds an advisory lock to commit */
#define WS_BATCH_WAIT 0.005  /* s: how long the first seed of a batch waits for others */
#define WS_INFLIGHT 2        /* batches sent and not answered, per process */

static const char ws_sql[] =
    "SELECT outcome, wallet_id, balance_after, wallet_created "
    "FROM steller_wallet_seed_sandbox($1::integer, $2::numeric, $3::text, $4::text)";

static const char ws_batch_sql[] =
    "SELECT ord, outcome, wallet_id, balance_after, wallet_created "
    "FROM steller_wallet_seed_sandbox_batch($1::integer[], $2::numeric[], $3::text[], $4::text)";

static const char ws_description[] = "Sandbox signup credit";

/* One job's seed; outlives the job when the job is cancelled. Owned by its
 * batch, or, sent alone, by the callback of its statement. */
struct ws_ctx {
    struct job *job; /* NULL: cancelled, nobody waits for the answer */
    long long partner_id;
    char partner[24];
    char amount[WS_AMOUNT_MAX];
    char reference[WS_REFERENCE_MAX + 1];
    const char *values[4];
};

/* ---- args ---- */

static int ws_fail(char *why, size_t len, const char *fmt, const char *detail)
{
    snprintf(why, len, fmt, detail);
    return -1;
}

static int ws_arg_partner(const struct job *job, struct ws_ctx *c, char *why, size_t len)
{
    const msgpack_object *o = env_arg(&job->env, "partner_id");
    if (!o || o->type == MSGPACK_OBJECT_NIL)
        return ws_fail(why, len, "args.%s is required", "partner_id");
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER || o->via.u64 < 1 || o->via.u64 > INT32_MAX)
        return ws_fail(why, len, "args.%s must be a positive integer", "partner_id");
    c->partner_id = (long long)o->via.u64;
    snprintf(c->partner, sizeof(c->partner), "%lld", c->partner_id);
    return 0;
}

/* Copies a msgpack string into buf (size bytes with the NUL); -1 when it does not fit
 * or holds a NUL byte, which a text parameter cannot carry. */
static int ws_copy_str(const msgpack_object *o, char *buf, size_t size)
{
    if (o->via.str.size >= size || memchr(o->via.str.ptr, '\0', o->via.str.size))
        return -1;
    memcpy(buf, o->via.str.ptr, o->via.str.size);
    buf[o->via.str.size] = '\0';
    return 0;
}

static int ws_arg_amount(struct job *job, struct ws_ctx *c, char *why, size_t len)
{
    const struct config *cfg = job_config(job);
    const msgpack_object *o = env_arg(&job->env, "amount");
    char reason[160];

    if (!o || o->type == MSGPACK_OBJECT_NIL) {
        snprintf(c->amount, sizeof(c->amount), "%s", cfg->wallet_default_seed_amount);
        return 0;
    }
    if (o->type != MSGPACK_OBJECT_STR)
        return ws_fail(why, len, "args.amount must be a decimal string such as \"25.00\", %s",
                       "not a number: a number may have been a binary float on the way");
    if (ws_copy_str(o, c->amount, sizeof(c->amount)) != 0)
        return ws_fail(why, len, "args.amount %s", "is too long or not text");
    if (dec_check(c->amount, reason, sizeof(reason)) != 0)
        return ws_fail(why, len, "args.amount %s", reason);
    if (dec_cmp(c->amount, cfg->wallet_max_seed_amount) > 0) {
        snprintf(why, len, "args.amount %s is above wallet.max_seed_amount (%s)", c->amount,
                 cfg->wallet_max_seed_amount);
        return -1;
    }
    return 0;
}

static int ws_arg_reference(const struct job *job, struct ws_ctx *c, char *why, size_t len)
{
    const msgpack_object *o = env_arg(&job->env, "reference_id");
    if (!o || o->type == MSGPACK_OBJECT_NIL) {
        snprintf(c->reference, sizeof(c->reference), "signup-seed:%lld", c->partner_id);
        return 0;
    }
    if (o->type != MSGPACK_OBJECT_STR)
        return ws_fail(why, len, "args.%s must be a string", "reference_id");
    if (o->via.str.size == 0)
        return ws_fail(why, len, "args.%s must not be empty", "reference_id");
    if (ws_copy_str(o, c->reference, sizeof(c->reference)) != 0)
        return ws_fail(why, len, "args.reference_id is longer than %s bytes or holds a NUL",
                       "200");
    return 0;
}

/* ---- the answer ---- */

/* res row `row`, from column `col` on: outcome, wallet_id, balance_after, wallet_created. */
static void ws_log(const struct ws_ctx *c, const char *what, const PGresult *res, int row,
                   int col)
{
    const struct env *e = &c->job->env;
    char jid[ENV_JID_MAX + 8], ref[WS_REFERENCE_MAX + 8];
    LOG(LOG_INFO, what, "jid=%s type=%s partner_id=%lld amount=%s reference_id=%s wallet_id=%s "
        "balance_after=%s wallet_created=%s",
        log_q(jid, sizeof(jid), e->jid.ptr, e->jid.len), c->job->type->name, c->partner_id,
        c->amount, log_q(ref, sizeof(ref), c->reference, strlen(c->reference)),
        PQgetvalue(res, row, col + 1),
        PQgetisnull(res, row, col + 2) ? "-" : PQgetvalue(res, row, col + 2),
        strcmp(PQgetvalue(res, row, col + 3), "t") == 0 ? "true" : "false");
}

/* A seed's outcome row: what the job ends with. */
static enum job_result ws_outcome(const struct ws_ctx *c, const PGresult *res, int row, int col,
                                  char *msg, size_t len)
{
    const char *o = PQgetvalue(res, row, col);
    if (strcmp(o, "credited") == 0 || strcmp(o, "duplicate") == 0) {
        ws_log(c, o[0] == 'c' ? "sandbox wallet credited"
                              : "sandbox credit already made; nothing changed", res, row, col);
        return JOB_OK;
    }
    if (strcmp(o, "no_partner") == 0) {
        snprintf(msg, len, "partner %lld does not exist", c->partner_id);
        return JOB_DEAD;
    }
    if (strcmp(o, "invalid") == 0) { /* start() checked the args: not reached */
        snprintf(msg, len, "postgresql refused the seed's values as invalid");
        return JOB_DEAD;
    }
    /* The database lacks its reference rows: fixable by an operator, so the job waits. */
    if (strcmp(o, "no_usd") == 0)
        snprintf(msg, len, "no currency with \"Code\" 'USD' in \"Currencies\"");
    else if (strcmp(o, "no_sandbox_type") == 0)
        snprintf(msg, len, "no wallet type with \"IsSandbox\" true in \"WalletTypes\"");
    else
        snprintf(msg, len, "unknown outcome '%.40s' from steller_wallet_seed_sandbox()", o);
    return JOB_RETRY;
}

/* A data error (bad value, overflowing balance) fails again the same way: dead.
 * Anything else is the connection or the database as a whole (serialization
 * failure, deadlock, lock or statement timeout, shutdown, a missing migration,
 * a unique race with another writer): retried. */
static enum job_result ws_error(const char *sqlstate, const char *message, char *msg, size_t len)
{
    snprintf(msg, len, "postgresql refused the credit: %s (SQLSTATE %s)", message, sqlstate);
    return pg_sqlstate_data(sqlstate) ? JOB_DEAD : JOB_RETRY;
}

static void ws_lost(const char *message, char *msg, size_t len)
{
    /* the credit may or may not have committed: a replay is harmless */
    snprintf(msg, len, "postgresql connection lost: %.*s", (int)strcspn(message, "\n"), message);
}

/* Ends the seed's job (unless cancelled) and frees the seed. */
static void ws_finish(struct ws_ctx *c, enum job_result r, const char *msg)
{
    struct job *job = c->job;
    free(c);
    if (!job)
        return;
    job->data = NULL;
    job_done(job, r, r == JOB_OK ? NULL : msg);
}

/* The answer to a seed sent alone (a batch's fallback). */
static void ws_on_done(void *ud, enum pg_outcome outcome, const PGresult *res,
                       const char *sqlstate, const char *message)
{
    struct ws_ctx *c = ud;
    enum job_result r = JOB_RETRY;
    char msg[512] = "";

    if (!c->job)
        ; /* cancelled: nobody reads the answer */
    else if (outcome == PG_OK && (PQntuples(res) != 1 || PQnfields(res) != 4))
        snprintf(msg, sizeof(msg), "unexpected answer from steller_wallet_seed_sandbox()");
    else if (outcome == PG_OK)
        r = ws_outcome(c, res, 0, 0, msg, sizeof(msg));
    else if (outcome == PG_ERROR)
        r = ws_error(sqlstate, message, msg, sizeof(msg));
    else
        ws_lost(message, msg, sizeof(msg));
    ws_finish(c, r, msg);
}

static void ws_send_one(struct pg_pool *pg, struct ws_ctx *c)
{
    c->values[0] = c->partner;
    c->values[1] = c->amount;
    c->values[2] = c->reference;
    c->values[3] = ws_description;
    pg_submit(pg, ws_sql, 4, c->values, ws_on_done, c);
}

/* ---- batches ---- */

struct ws_batch {
    struct ws_ctx *seeds[WS_BATCH_MAX]; /* NULL once answered */
    int n;
    char *partners, *amounts, *references; /* array literals, built when sent */
    const char *values[4];
    struct ws_batch *next; /* waiting to be sent */
};

static struct {
    struct ev_loop *loop;
    struct pg_pool *pg;
    struct ws_batch *open;
    struct ws_batch *ready, *ready_tail;
    ev_timer wait;
    int inflight;
    int batch_max;
} ws;

static void ws_batch_free(struct ws_batch *b)
{
    for (int i = 0; i < b->n; i++)
        free(b->seeds[i]); /* only cancelled or unanswered seeds are left */
    free(b->partners);
    free(b->amounts);
    free(b->references);
    free(b);
}

/* Drops the seeds cancelled before the batch was sent. */
static void ws_batch_compact(struct ws_batch *b)
{
    int k = 0;
    for (int i = 0; i < b->n; i++) {
        if (b->seeds[i]->job)
            b->seeds[k++] = b->seeds[i];
        else
            free(b->seeds[i]);
    }
    b->n = k;
}

/* An array literal element in double quotes: only " and \ need a backslash. */
static char *ws_quote(char *out, const char *s)
{
    *out++ = '"';
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            *out++ = '\\';
        *out++ = *s;
    }
    *out++ = '"';
    return out;
}

/* The three array literals: '{1,2}', '{25.00,1}', '{"a","b"}'. */
static int ws_batch_build(struct ws_batch *b)
{
    size_t n = (size_t)b->n;
    char *p, *a, *r;
    if (!(b->partners = malloc(n * (sizeof(b->seeds[0]->partner) + 1) + 3)) ||
        !(b->amounts = malloc(n * (WS_AMOUNT_MAX + 1) + 3)) ||
        !(b->references = malloc(n * (2 * WS_REFERENCE_MAX + 3) + 3)))
        return -1;
    p = b->partners, a = b->amounts, r = b->references;
    *p++ = *a++ = *r++ = '{';
    for (int i = 0; i < b->n; i++) {
        const struct ws_ctx *c = b->seeds[i];
        if (i)
            *p++ = *a++ = *r++ = ',';
        p += sprintf(p, "%s", c->partner);
        a += sprintf(a, "%s", c->amount);
        r = ws_quote(r, c->reference);
    }
    strcpy(p, "}");
    strcpy(a, "}");
    strcpy(r, "}");
    b->values[0] = b->partners;
    b->values[1] = b->amounts;
    b->values[2] = b->references;
    b->values[3] = ws_description;
    return 0;
}

static void ws_drain(void);

/* Every seed still in the batch ends with r. */
static void ws_batch_finish(struct ws_batch *b, enum job_result r, const char *msg)
{
    for (int i = 0; i < b->n; i++) {
        if (b->seeds[i])
            ws_finish(b->seeds[i], r, msg);
        b->seeds[i] = NULL;
    }
    ws_batch_free(b);
}

/* One outcome row per seed, matched by ord (1-based position in the arrays). */
static void ws_batch_answer(struct ws_batch *b, const PGresult *res)
{
    char msg[512];
    if (PQnfields(res) != 5) {
        ws_batch_finish(b, JOB_RETRY, "unexpected answer from steller_wallet_seed_sandbox_batch()");
        return;
    }
    for (int row = 0; row < PQntuples(res); row++) {
        int i = atoi(PQgetvalue(res, row, 0)) - 1;
        struct ws_ctx *c;
        if (i < 0 || i >= b->n || !(c = b->seeds[i]))
            continue;
        b->seeds[i] = NULL;
        if (!c->job) {
            free(c);
            continue;
        }
        msg[0] = '\0';
        ws_finish(c, ws_outcome(c, res, row, 1, msg, sizeof(msg)), msg);
    }
    ws_batch_finish(b, JOB_RETRY,
                    "no answer for this seed from steller_wallet_seed_sandbox_batch()");
}

/* The batch rolled back on bad data: every live seed goes again on its own. */
static void ws_batch_split(struct ws_batch *b, const char *sqlstate, const char *message)
{
    char q[300];
    LOG(LOG_INFO, "wallet batch refused for its data; sending its seeds one by one",
        "seeds=%d sqlstate=%s error=%s", b->n, sqlstate,
        log_q(q, sizeof(q), message, strcspn(message, "\n")));
    for (int i = 0; i < b->n; i++) {
        struct ws_ctx *c = b->seeds[i];
        b->seeds[i] = NULL;
        if (c->job)
            ws_send_one(ws.pg, c);
        else
            free(c);
    }
    ws_batch_free(b);
}

static void ws_on_batch(void *ud, enum pg_outcome outcome, const PGresult *res,
                        const char *sqlstate, const char *message)
{
    struct ws_batch *b = ud;
    char msg[512];
    ws.inflight--;
    if (outcome == PG_OK) {
        ws_batch_answer(b, res);
    } else if (outcome == PG_ERROR && pg_sqlstate_data(sqlstate)) {
        ws_batch_split(b, sqlstate, message);
    } else {
        if (outcome == PG_ERROR)
            ws_error(sqlstate, message, msg, sizeof(msg));
        else
            ws_lost(message, msg, sizeof(msg));
        ws_batch_finish(b, JOB_RETRY, msg);
    }
    ws_drain();
}

/* Sends waiting batches, WS_INFLIGHT at a time; pg_submit queues them for a
 * connection when none is idle. */
static void ws_drain(void)
{
    while (ws.ready && ws.inflight < WS_INFLIGHT) {
        struct ws_batch *b = ws.ready;
        ws.ready = b->next;
        if (!ws.ready)
            ws.ready_tail = NULL;
        b->next = NULL;
        ws_batch_compact(b);
        if (!b->n) {
            ws_batch_free(b);
            continue;
        }
        if (ws_batch_build(b) != 0) {
            ws_batch_finish(b, JOB_RETRY, "out of memory");
            continue;
        }
        LOG(LOG_DEBUG, "wallet batch sent", "seeds=%d", b->n);
        ws.inflight++;
        pg_submit(ws.pg, ws_batch_sql, 4, b->values, ws_on_batch, b);
    }
}

static void ws_close_open(void)
{
    struct ws_batch *b = ws.open;
    ev_timer_stop(ws.loop, &ws.wait);
    ws.open = NULL;
    if (!b)
        return;
    if (ws.ready_tail)
        ws.ready_tail->next = b;
    else
        ws.ready = b;
    ws.ready_tail = b;
    ws_drain();
}

static void ws_on_wait(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)t;
    (void)revents;
    ws_close_open();
}

static void ws_init(struct job *job)
{
    int half = job_config(job)->concurrency / 2;
    if (ws.pg == job_pg(job) && ws.loop == job_loop(job))
        return;
    memset(&ws, 0, sizeof(ws));
    ws.loop = job_loop(job);
    ws.pg = job_pg(job);
    ws.batch_max = half < 1 ? 1 : half > WS_BATCH_MAX ? WS_BATCH_MAX : half;
    ev_timer_init(&ws.wait, ws_on_wait, WS_BATCH_WAIT, 0);
}

/* ---- the handler ---- */

static void ws_start(struct job *job)
{
    struct ws_ctx *c;
    char why[300];

    if (!job_pg(job)) {
        job_done(job, JOB_RETRY, "wallet.seed_sandbox needs PostgreSQL: database.url is empty");
        return;
    }
    ws_init(job);
    if (!(c = calloc(1, sizeof(*c))) || (!ws.open && !(ws.open = calloc(1, sizeof(*ws.open))))) {
        free(c);
        job_done(job, JOB_RETRY, "out of memory");
        return;
    }
    if (ws_arg_partner(job, c, why, sizeof(why)) || ws_arg_amount(job, c, why, sizeof(why)) ||
        ws_arg_reference(job, c, why, sizeof(why))) {
        free(c);
        job_done(job, JOB_DEAD, why);
        return;
    }
    c->job = job;
    job->data = c;
    ws.open->seeds[ws.open->n++] = c;
    if (ws.open->n >= ws.batch_max || job_worker_full(job))
        ws_close_open();
    else if (!ev_is_active(&ws.wait))
        ev_timer_start(ws.loop, &ws.wait);
}

static void ws_cancel(struct job *job)
{
    struct ws_ctx *c = job->data;
    if (c)
        c->job = NULL; /* its batch or its callback frees it */
    job->data = NULL;
}

/* The process is ending, every job cancelled and the pool freed (batches sent
 * were answered with PG_LOST): free the batches never sent. */
static void ws_stop(void)
{
    struct ws_batch *lists[2] = {ws.open, ws.ready};
    if (ws.loop)
        ev_timer_stop(ws.loop, &ws.wait);
    for (int i = 0; i < 2; i++) {
        for (struct ws_batch *b = lists[i], *next; b; b = next) {
            next = i ? b->next : NULL;
            ws_batch_free(b);
        }
    }
    memset(&ws, 0, sizeof(ws));
}

const struct job_type wallet_seed_sandbox_type = {
    .name = "wallet.seed_sandbox",
    .queue = "critical",
    .max_attempts = 25,
    .timeout = 60.0,
    .backoff = BACKOFF_DEFAULT,
    .start = ws_start,
    .cancel = ws_cancel,
    .stop = ws_stop,
};
