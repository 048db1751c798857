/*
 * wallet.c - the wallet.seed_sandbox job: credits fake USD to a partner's
 * sandbox wallet, creating the wallet if missing, once per reference.
 *
 * Args: partner_id (integer), amount (decimal string, default
 * wallet.default_seed_amount), reference_id (string, default
 * "signup-seed:<partner_id>"). start() checks them (a bad one is dead with its
 * reason) and runs one statement through pg_submit(): the function
 * steller_wallet_seed_sandbox() of schema/007, one transaction that takes a
 * per-partner advisory lock, finds or creates the sandbox wallet, and, unless
 * the (wallet, reference) entry exists, raises the balance with one UPDATE and
 * writes the "WalletHistories" entry. The migration says why it is a function.
 *
 * Amounts stay text from the envelope to PostgreSQL, where the parameter
 * becomes numeric: never a float. A JSON/msgpack number for amount is refused,
 * since the producer's number may already have been a binary float.
 *
 * Cancel (timeout, hard shutdown): the request cannot be taken back from the
 * pool, so the job's heap context stays with it, marked cancelled, and the
 * callback frees it when it runs. The statement may still commit: the retry then
 * finds the entry and changes nothing.
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

static const char ws_sql[] =
    "SELECT outcome, wallet_id, balance_after, wallet_created "
    "FROM steller_wallet_seed_sandbox($1::integer, $2::numeric, $3::text, $4::text)";

static const char ws_description[] = "Sandbox signup credit";

/* One job's request; outlives the job when the job is cancelled. */
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

static void ws_log(const struct ws_ctx *c, const char *what, const PGresult *res)
{
    const struct env *e = &c->job->env;
    char jid[ENV_JID_MAX + 8], ref[WS_REFERENCE_MAX + 8];
    LOG(LOG_INFO, what, "jid=%s type=%s partner_id=%lld amount=%s reference_id=%s wallet_id=%s "
        "balance_after=%s wallet_created=%s",
        log_q(jid, sizeof(jid), e->jid.ptr, e->jid.len), c->job->type->name, c->partner_id,
        c->amount, log_q(ref, sizeof(ref), c->reference, strlen(c->reference)),
        PQgetvalue(res, 0, 1), PQgetisnull(res, 0, 2) ? "-" : PQgetvalue(res, 0, 2),
        strcmp(PQgetvalue(res, 0, 3), "t") == 0 ? "true" : "false");
}

/* The function's outcome row: what the job ends with. */
static enum job_result ws_outcome(const struct ws_ctx *c, const PGresult *res, char *msg,
                                  size_t len)
{
    const char *o;
    if (!res || PQntuples(res) != 1 || PQnfields(res) != 4) {
        snprintf(msg, len, "unexpected answer from steller_wallet_seed_sandbox()");
        return JOB_RETRY;
    }
    o = PQgetvalue(res, 0, 0);
    if (strcmp(o, "credited") == 0 || strcmp(o, "duplicate") == 0) {
        ws_log(c, o[0] == 'c' ? "sandbox wallet credited"
                              : "sandbox credit already made; nothing changed", res);
        return JOB_OK;
    }
    if (strcmp(o, "no_partner") == 0) {
        snprintf(msg, len, "partner %lld does not exist", c->partner_id);
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

static void ws_on_done(void *ud, enum pg_outcome outcome, const PGresult *res,
                       const char *sqlstate, const char *message)
{
    struct ws_ctx *c = ud;
    struct job *job = c->job;
    enum job_result r;
    char msg[512] = "";

    if (!job) {
        free(c); /* cancelled: the job is gone */
        return;
    }
    if (outcome == PG_OK)
        r = ws_outcome(c, res, msg, sizeof(msg));
    else if (outcome == PG_ERROR)
        r = ws_error(sqlstate, message, msg, sizeof(msg));
    else {
        /* the credit may or may not have committed: a replay is harmless */
        snprintf(msg, sizeof(msg), "postgresql connection lost: %.*s",
                 (int)strcspn(message, "\n"), message);
        r = JOB_RETRY;
    }
    job->data = NULL;
    free(c);
    job_done(job, r, r == JOB_OK ? NULL : msg);
}

/* ---- the handler ---- */

static void ws_start(struct job *job)
{
    struct pg_pool *pg = job_pg(job);
    struct ws_ctx *c;
    char why[300];

    if (!pg) {
        job_done(job, JOB_RETRY, "wallet.seed_sandbox needs PostgreSQL: database.url is empty");
        return;
    }
    if (!(c = calloc(1, sizeof(*c)))) {
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
    c->values[0] = c->partner;
    c->values[1] = c->amount;
    c->values[2] = c->reference;
    c->values[3] = ws_description;
    job->data = c;
    pg_submit(pg, ws_sql, 4, c->values, ws_on_done, c);
}

static void ws_cancel(struct job *job)
{
    struct ws_ctx *c = job->data;
    if (c)
        c->job = NULL; /* the pool's callback frees it */
    job->data = NULL;
}

const struct job_type wallet_seed_sandbox_type = {
    .name = "wallet.seed_sandbox",
    .queue = "critical",
    .max_attempts = 25,
    .timeout = 60.0,
    .backoff = BACKOFF_DEFAULT,
    .start = ws_start,
    .cancel = ws_cancel,
};
