/*
 * email.c - email.welcome, email.activation and email.reengagement: one email to
 * a partner, sent at most once per intent however often its job runs.
 *
 * The three types share one path; they differ only in their arguments, the
 * template kind and the dedup key:
 *   welcome       partner_id                    'welcome:<pid>'
 *   activation    partner_id, activation_token  'activation:<pid>:<token>'
 *   reengagement  partner_id, stage (days)      'reengagement:<pid>:d<stage>'
 *
 * A job goes through four steps, each a callback on the worker's loop:
 *   1. load the partner ("Email", "BusinessName", "IsActive", "OnboardingState" from
 *      "Partners"); a job that ends here (bad partner or address, or a nudge for a
 *      partner who has activated) settles the sweep's unclaimed row as 'failed';
 *      unknown, inactive, a bad address or CR/LF in a header value is dead;
 *   2. render the templates (worker/tmpl.h);
 *   3. claim the "EmailDeliveries" row of the dedup key: one statement inserts
 *      it, or re-opens it when it is not 'sent' and nobody holds its lease
 *      ("ClaimedUntil"), and says what the row was before. 'sent' already: done,
 *      nothing sent. Leased by another job that is still alive: try again later;
 *   4. send (worker/mail.h), then record the outcome on the row.
 *
 * The lease ("ClaimedUntil" = now + lease) outlives this job: the engine cancels
 * a job at its timeout, so no job of ours holds a claim longer than
 * max(job timeout, email.timeout) + EM_LEASE_MARGIN_S. "Attempts" counts claims;
 * each claim's value is its token, so the 'failed' and release updates touch the
 * row only while the claim is still ours; 'sent' is recorded whoever holds it.
 *
 * What exactly-once rests on: the row says 'sent' before the job is
 * acknowledged. A job that runs again (a crash before the ack, the job enqueued
 * twice) finds 'sent' and sends nothing. The windows that remain, both needing
 * the provider to accept an email whose outcome we then lose:
 *   - the worker dies (or the job times out) after the provider accepted the
 *     email and before the row says 'sent': once the lease expires, a retry
 *     sends it again;
 *   - PostgreSQL refuses the 'sent' update for as long as the job may run: the
 *     job is acknowledged anyway (no retry of ours sends it again) and the row
 *     stays 'pending'; a later job for the same key (a replay, the sweep) would
 *     send a second email.
 *
 * Cancel (timeout, hard shutdown): the send is cancelled with mail_cancel(); a
 * PostgreSQL request cannot be, so its context stays on the heap, orphaned
 * (job = NULL), and the callback frees it when it runs (request_log's rule).
 */
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "mail.h"
#include "pg.h"
#include "registry.h"
#include "tmpl.h"

#define EM_TOKEN_MAX 512
#define EM_ADDR_MAX 254        /* RFC 5321's limit on a forward path, less the brackets */
#define EM_LEASE_MARGIN_S 15   /* PostgreSQL round trips around the send */
#define EM_HELD_DEFER_MS 5000  /* a key leased by another job: look again this soon */
#define EM_RECORD_WAIT_MS 2000 /* longest pause between tries of the 'sent' update */

/* What the row update after a send is for. */
enum em_record { EM_REC_SENT, EM_REC_FAILED, EM_REC_RELEASE };

struct em_ctx {
    struct job *job; /* NULL once cancelled: the pending callback frees this */
    enum tmpl_kind kind; /* its name is the "Kind" column */
    long long partner_id;
    int stage;
    char token[EM_TOKEN_MAX + 1];

    char pid[24], dedup[EM_TOKEN_MAX + 64], lease[32];
    char *addr, *name; /* from "Partners" */
    struct tmpl_msg msg;

    char row_id[24], claim[24]; /* the claimed row and its "Attempts" (the claim token) */
    struct mail_req *req;       /* the send in flight */
    int pg_busy;                /* a PostgreSQL request in flight */

    /* the outcome of the send, kept while it is recorded */
    struct mail_outcome out;
    char *provider_id, *error;
    enum em_record record;
    enum job_result drop_result; /* how a job ending before its claim ends */
    ev_timer retry; /* the 'sent' update, tried again */
    int64_t record_deadline_ms;
    int record_tries;
    const char *values[7]; /* the parameters of the request in flight */
};

/* ---- arguments ---- */

static int em_arg_int(struct job *job, const char *key, long long min, long long max,
                      long long *out)
{
    const msgpack_object *o = env_arg(&job->env, key);
    if (o && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 >= (uint64_t)min &&
        o->via.u64 <= (uint64_t)max) {
        *out = (long long)o->via.u64;
        return 0;
    }
    return -1;
}

static int em_stage_known(const struct config *c, long long days)
{
    for (int i = 0; i < c->reengagement_stages.n; i++)
        if (c->reengagement_stages.v[i] == days)
            return 1;
    return 0;
}

/* Reads the args into ctx: 0, or -1 with the reason for the dead letter in why. */
static int em_args(struct em_ctx *ctx, struct job *job, char *why, size_t size)
{
    const msgpack_object *tok;
    long long stage;
    if (em_arg_int(job, "partner_id", 1, INT32_MAX, &ctx->partner_id) != 0) {
        snprintf(why, size, "args.partner_id must be a positive integer");
        return -1;
    }
    snprintf(ctx->pid, sizeof(ctx->pid), "%lld", ctx->partner_id);
    switch (ctx->kind) {
    case TMPL_WELCOME:
        snprintf(ctx->dedup, sizeof(ctx->dedup), "welcome:%lld", ctx->partner_id);
        return 0;
    case TMPL_ACTIVATION:
        tok = env_arg(&job->env, "activation_token");
        if (!tok || tok->type != MSGPACK_OBJECT_STR || tok->via.str.size == 0 ||
            tok->via.str.size > EM_TOKEN_MAX || memchr(tok->via.str.ptr, 0, tok->via.str.size)) {
            snprintf(why, size, "args.activation_token must be a string of 1 to %d bytes",
                     EM_TOKEN_MAX);
            return -1;
        }
        memcpy(ctx->token, tok->via.str.ptr, tok->via.str.size);
        ctx->token[tok->via.str.size] = '\0';
        snprintf(ctx->dedup, sizeof(ctx->dedup), "activation:%lld:%s", ctx->partner_id,
                 ctx->token);
        return 0;
    case TMPL_REENGAGEMENT:
        if (em_arg_int(job, "stage", 1, 36500, &stage) != 0 ||
            !em_stage_known(job_config(job), stage)) {
            snprintf(why, size, "args.stage must be one of reengagement.stages (days)");
            return -1;
        }
        ctx->stage = (int)stage;
        snprintf(ctx->dedup, sizeof(ctx->dedup), "reengagement:%lld:d%d", ctx->partner_id,
                 ctx->stage);
        return 0;
    case TMPL_NKINDS:
        break;
    }
    return -1;
}

/* ---- checks on what goes into headers ---- */

/* One simple strict check: printable ASCII without spaces or the characters that
 * delimit addresses in a header, one '@' with something before it, a dot inside
 * the domain, at most 254 bytes. NULL when good, else why not. */
static const char *em_addr_problem(const char *a)
{
    const char *at = strchr(a, '@'), *dot;
    size_t n = strlen(a);
    if (n == 0)
        return "it is empty";
    if (n > EM_ADDR_MAX)
        return "it is longer than 254 bytes";
    for (const unsigned char *p = (const unsigned char *)a; *p; p++) {
        if (*p <= ' ' || *p >= 0x7f)
            return "it holds a space, a control character or a non-ASCII byte";
        if (strchr("<>()[],;:\"\\", *p))
            return "it holds a character not allowed in a plain address";
    }
    if (!at || strchr(at + 1, '@'))
        return "it must hold exactly one '@'";
    if (at == a)
        return "nothing before the '@'";
    dot = strchr(at + 1, '.');
    if (!dot || dot == at + 1 || a[n - 1] == '.')
        return "the domain has no dot inside it";
    return NULL;
}

static int em_has_crlf(const char *s)
{
    return strpbrk(s, "\r\n") != NULL;
}

/* ---- the end of a job ---- */

static void em_free(struct em_ctx *ctx)
{
    free(ctx->addr);
    free(ctx->name);
    tmpl_msg_free(&ctx->msg);
    free(ctx->provider_id);
    free(ctx->error);
    free(ctx);
}

static void em_end(struct em_ctx *ctx, enum job_result r, const char *msg)
{
    struct job *job = ctx->job;
    job->data = NULL;
    em_free(ctx);
    job_done(job, r, msg);
}

/* job_retry_in(): the job waits delay_ms; spend: it counts as a failed attempt. */
static void em_end_in(struct em_ctx *ctx, int64_t delay_ms, int spend, const char *msg)
{
    struct job *job = ctx->job;
    job->data = NULL;
    em_free(ctx);
    job_retry_in(job, delay_ms, spend, msg);
}

static void em_endf(struct em_ctx *ctx, enum job_result r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void em_endf(struct em_ctx *ctx, enum job_result r, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    em_end(ctx, r, msg);
}

/* A PostgreSQL callback: 1 when the job is still there to hear it; else frees the
 * orphaned context (the job was cancelled) and returns 0. */
static int em_pg_back(struct em_ctx *ctx)
{
    ctx->pg_busy = 0;
    if (ctx->job)
        return 1;
    em_free(ctx);
    return 0;
}

static void em_log(const struct em_ctx *ctx, enum log_level level, const char *what,
                   const char *extra)
{
    char jid[ENV_JID_MAX + 8];
    const struct env *e = &ctx->job->env;
    LOG(level, what, "jid=%s type=%s partner_id=%lld kind=%s%s%s",
        log_q(jid, sizeof(jid), e->jid.ptr, e->jid.len), ctx->job->type->name, ctx->partner_id,
        tmpl_kind_name(ctx->kind), extra ? " " : "", extra ? extra : "");
}

static void em_submit(struct em_ctx *ctx, const char *sql, int n, pg_done_fn *fn)
{
    ctx->pg_busy = 1;
    pg_submit(job_pg(ctx->job), sql, n, ctx->values, fn, ctx);
}

/* ---- ending before the claim ---- */

/*
 * A job that ends before it claims (bad partner or address, an activated partner)
 * may still have a row: the one the re-engagement sweep made, 'pending' with no
 * claim yet. Left so, the sweep would take it for an orphan and enqueue it again
 * every day; marked 'failed' with the reason, it is settled. Ends the job with r
 * and msg whatever PostgreSQL answers.
 */
static const char em_drop_sql[] =
    "UPDATE \"EmailDeliveries\" SET \"Status\" = 'failed', \"LastError\" = $2 "
    "WHERE \"DedupKey\" = $1 AND \"Status\" = 'pending' AND \"Attempts\" = 0 "
    "AND \"ClaimedUntil\" IS NULL";

static void em_on_drop(void *ud, enum pg_outcome outcome, const PGresult *res,
                       const char *sqlstate, const char *message)
{
    struct em_ctx *ctx = ud;
    char msg[512];
    (void)outcome, (void)res, (void)sqlstate, (void)message;
    if (!em_pg_back(ctx))
        return;
    snprintf(msg, sizeof(msg), "%s", ctx->error); /* em_end frees ctx->error */
    em_end(ctx, ctx->drop_result, msg);
}

static void em_dropf(struct em_ctx *ctx, enum job_result r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void em_dropf(struct em_ctx *ctx, enum job_result r, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    free(ctx->error);
    if (!(ctx->error = strdup(msg))) {
        em_end(ctx, r, "out of memory");
        return;
    }
    ctx->drop_result = r;
    ctx->values[0] = ctx->dedup;
    ctx->values[1] = ctx->error;
    em_submit(ctx, em_drop_sql, 2, em_on_drop);
}

/* ---- step 4: recording the outcome ---- */

static const char em_sent_sql[] =
    "UPDATE \"EmailDeliveries\" SET \"Status\" = 'sent', \"ProviderMessageId\" = $2, "
    "\"SentAt\" = now(), \"ClaimedUntil\" = NULL "
    "WHERE \"Id\" = $1::bigint AND \"Status\" <> 'sent'";

/* Only while the claim is ours (the same "Attempts"), and never over a 'sent'. */
static const char em_failed_sql[] =
    "UPDATE \"EmailDeliveries\" SET \"Status\" = 'failed', \"LastError\" = $3, "
    "\"ClaimedUntil\" = NULL "
    "WHERE \"Id\" = $1::bigint AND \"Attempts\" = $2::integer AND \"Status\" = 'pending'";

static const char em_release_sql[] =
    "UPDATE \"EmailDeliveries\" SET \"LastError\" = COALESCE($3, \"LastError\"), "
    "\"ClaimedUntil\" = NULL "
    "WHERE \"Id\" = $1::bigint AND \"Attempts\" = $2::integer AND \"Status\" = 'pending'";

static void em_record(struct em_ctx *ctx);

/* How the job ends once the row says what happened (or could not be told). */
static void em_finish(struct em_ctx *ctx)
{
    char msg[512];
    const char *err = ctx->error ? ctx->error : "no reason given";
    switch (ctx->out.result) {
    case MAIL_SENT:
        em_end(ctx, JOB_OK, NULL);
        return;
    case MAIL_PERMANENT:
        snprintf(msg, sizeof(msg), "email refused for good: %s", err);
        em_end(ctx, JOB_DEAD, msg);
        return;
    case MAIL_TRANSIENT:
        snprintf(msg, sizeof(msg), "email not sent: %s", err);
        if (ctx->out.delay_ms > 0)
            em_end_in(ctx, ctx->out.delay_ms, 1, msg); /* the provider's Retry-After */
        else
            em_end(ctx, JOB_RETRY, msg);
        return;
    case MAIL_WAIT:
        snprintf(msg, sizeof(msg), "email transport not available now: %s", err);
        em_end_in(ctx, ctx->out.delay_ms > 100 ? ctx->out.delay_ms : 100, 0, msg);
        return;
    }
}

static void em_on_record_retry(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    em_record(t->data);
}

/* The 'sent' update failed: try again until shortly before the job's timeout. A
 * failed job would send the email again once the lease expires; an acknowledged
 * one whose row still says 'pending' sends nothing more by itself. */
static void em_record_sent_again(struct em_ctx *ctx, const char *why)
{
    int64_t now = job_now_ms(ctx->job), delay = 100;
    char extra[600], q[400];
    for (int i = 0; i < ctx->record_tries && delay < EM_RECORD_WAIT_MS; i++)
        delay *= 2;
    if (delay > EM_RECORD_WAIT_MS)
        delay = EM_RECORD_WAIT_MS;
    ctx->record_tries++;
    snprintf(extra, sizeof(extra), "tries=%d error=%s", ctx->record_tries,
             log_q(q, sizeof(q), why, strcspn(why, "\n")));
    if (now + delay >= ctx->record_deadline_ms) {
        em_log(ctx, LOG_ERROR,
               "email sent but PostgreSQL did not record it; the row stays 'pending'", extra);
        em_end(ctx, JOB_OK, NULL);
        return;
    }
    if (ctx->record_tries == 1)
        em_log(ctx, LOG_WARN, "email sent; recording it failed, trying again", extra);
    ev_timer_set(&ctx->retry, (double)delay / 1000.0, 0);
    ev_timer_start(job_loop(ctx->job), &ctx->retry);
}

static void em_on_recorded(void *ud, enum pg_outcome outcome, const PGresult *res,
                           const char *sqlstate, const char *message)
{
    struct em_ctx *ctx = ud;
    char extra[400], q[300];
    (void)res;
    (void)sqlstate;
    if (!em_pg_back(ctx))
        return;
    if (outcome != PG_OK && ctx->record == EM_REC_SENT) {
        em_record_sent_again(ctx, message ? message : "connection lost");
        return;
    }
    if (outcome != PG_OK) {
        /* the lease expires on its own; the job's outcome stands */
        snprintf(extra, sizeof(extra), "error=%s",
                 log_q(q, sizeof(q), message ? message : "connection lost",
                       strcspn(message ? message : "connection lost", "\n")));
        em_log(ctx, LOG_WARN, "could not record the email's outcome", extra);
    }
    em_finish(ctx);
}

static void em_record(struct em_ctx *ctx)
{
    const char *sql = ctx->record == EM_REC_SENT     ? em_sent_sql
                      : ctx->record == EM_REC_FAILED ? em_failed_sql
                                                     : em_release_sql;
    ctx->values[0] = ctx->row_id;
    if (ctx->record == EM_REC_SENT) {
        ctx->values[1] = ctx->provider_id;
        em_submit(ctx, sql, 2, em_on_recorded);
        return;
    }
    ctx->values[1] = ctx->claim;
    ctx->values[2] = ctx->error;
    em_submit(ctx, sql, 3, em_on_recorded);
}

/* A copy of at most max bytes, cut on a character boundary: the "LastError" column. */
static char *em_text(const char *s, size_t max)
{
    size_t n = strlen(s);
    char *t;
    if (n > max) {
        n = max;
        while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
            n--;
    }
    if (!(t = malloc(n + 1)))
        return NULL;
    memcpy(t, s, n);
    t[n] = '\0';
    return t;
}

static void em_on_mail(void *ud, const struct mail_outcome *o)
{
    struct em_ctx *ctx = ud;
    ctx->req = NULL;
    ctx->out = *o;
    ctx->out.provider_id = ctx->out.error = NULL; /* valid only now: copied below */
    ctx->provider_id = o->provider_id ? em_text(o->provider_id, 256) : NULL;
    ctx->error = o->error ? em_text(o->error, 500) : NULL;
    switch (o->result) {
    case MAIL_SENT:
        ctx->record = EM_REC_SENT;
        em_log(ctx, LOG_DEBUG, "email sent", NULL);
        break;
    case MAIL_PERMANENT:
        ctx->record = EM_REC_FAILED;
        break;
    default:
        ctx->record = EM_REC_RELEASE;
        break;
    }
    em_record(ctx);
}

/* ---- step 3: the claim ---- */

/* One row always: the claimed row's "Id" and "Attempts" (NULL when not claimed),
 * the row's "Status" before this statement (NULL: there was none) and how many ms
 * its lease had left. A row another statement inserts meanwhile is not in `old`
 * and not claimed: both NULL, read as held by another job. */
static const char em_claim_sql[] =
    "WITH old AS (SELECT \"Status\", \"ClaimedUntil\" FROM \"EmailDeliveries\" "
    "WHERE \"DedupKey\" = $1), "
    "claim AS (INSERT INTO \"EmailDeliveries\" AS d (\"PartnerId\", \"Kind\", \"DedupKey\", "
    "\"ToAddress\", \"Subject\", \"Transport\", \"Status\", \"Attempts\", \"ClaimedUntil\") "
    "VALUES ($2::integer, $3, $1, $4, $5, $6, 'pending', 1, "
    "now() + $7::float8 * interval '1 second') "
    "ON CONFLICT (\"DedupKey\") DO UPDATE SET \"Status\" = 'pending', "
    "\"Attempts\" = d.\"Attempts\" + 1, \"ClaimedUntil\" = EXCLUDED.\"ClaimedUntil\", "
    "\"ToAddress\" = EXCLUDED.\"ToAddress\", \"Subject\" = EXCLUDED.\"Subject\", "
    "\"Transport\" = EXCLUDED.\"Transport\" "
    "WHERE d.\"Status\" <> 'sent' AND (d.\"ClaimedUntil\" IS NULL OR d.\"ClaimedUntil\" < now()) "
    "RETURNING d.\"Id\", d.\"Attempts\") "
    "SELECT c.\"Id\", c.\"Attempts\", o.\"Status\", "
    "GREATEST(0, EXTRACT(EPOCH FROM (o.\"ClaimedUntil\" - now())) * 1000)::bigint "
    "FROM (SELECT 1) AS one LEFT JOIN claim c ON true LEFT JOIN old o ON true";

static void em_send(struct em_ctx *ctx)
{
    struct mail_msg m = {.to = ctx->addr,
                         .to_name = ctx->name[0] ? ctx->name : NULL,
                         .subject = ctx->msg.subject,
                         .text = ctx->msg.text,
                         .html = ctx->msg.html};
    ctx->req = mail_send(job_mail(ctx->job), &m, em_on_mail, ctx);
    if (!ctx->req) {
        /* out of memory: give the claim back before retrying */
        ctx->out = (struct mail_outcome){.result = MAIL_TRANSIENT};
        ctx->error = em_text("out of memory starting the send", 100);
        ctx->record = EM_REC_RELEASE;
        em_record(ctx);
    }
}

static void em_on_claim(void *ud, enum pg_outcome outcome, const PGresult *res,
                        const char *sqlstate, const char *message)
{
    struct em_ctx *ctx = ud;
    int64_t left;
    (void)sqlstate;
    if (!em_pg_back(ctx))
        return;
    if (outcome != PG_OK || PQntuples(res) != 1) {
        em_endf(ctx, JOB_RETRY, "postgresql: claiming the delivery row failed: %s",
                outcome == PG_OK ? "no answer row" : message ? message : "connection lost");
        return;
    }
    if (!PQgetisnull(res, 0, 0)) {
        snprintf(ctx->row_id, sizeof(ctx->row_id), "%s", PQgetvalue(res, 0, 0));
        snprintf(ctx->claim, sizeof(ctx->claim), "%s", PQgetvalue(res, 0, 1));
        em_send(ctx);
        return;
    }
    if (!PQgetisnull(res, 0, 2) && strcmp(PQgetvalue(res, 0, 2), "sent") == 0) {
        em_log(ctx, LOG_INFO, "email already sent; nothing to do", NULL);
        em_end(ctx, JOB_OK, NULL);
        return;
    }
    /* Another job holds the lease: it is sending this very email now, or died
     * doing so and its lease runs out. Look again soon, without spending an
     * attempt: this job has not failed. */
    left = PQgetisnull(res, 0, 3) ? EM_HELD_DEFER_MS : strtoll(PQgetvalue(res, 0, 3), NULL, 10);
    if (left > EM_HELD_DEFER_MS || left < 500)
        left = left < 500 ? 500 : EM_HELD_DEFER_MS;
    em_end_in(ctx, left + rand() % 500, 0, "another job is sending this email");
}

static void em_claim(struct em_ctx *ctx)
{
    const struct config *c = job_config(ctx->job);
    double lease = fmax(ctx->job->type->timeout, c->email_timeout) + EM_LEASE_MARGIN_S;
    snprintf(ctx->lease, sizeof(ctx->lease), "%.3f", lease);
    ctx->values[0] = ctx->dedup;
    ctx->values[1] = ctx->pid;
    ctx->values[2] = tmpl_kind_name(ctx->kind);
    ctx->values[3] = ctx->addr;
    ctx->values[4] = ctx->msg.subject;
    ctx->values[5] = mail_transport(job_mail(ctx->job));
    ctx->values[6] = ctx->lease;
    em_submit(ctx, em_claim_sql, 7, em_on_claim);
}

/* ---- step 2: rendering ---- */

/* RFC 3986: everything but the unreserved characters as %XX. */
static char *em_url_encode(const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    char *out = malloc(strlen(s) * 3 + 1), *o = out;
    if (!out)
        return NULL;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
            strchr("-._~", *p)) {
            *o++ = (char)*p;
        } else {
            *o++ = '%';
            *o++ = hex[*p >> 4];
            *o++ = hex[*p & 15];
        }
    }
    *o = '\0';
    return out;
}

/* 0, or -1 having ended the job. */
static int em_render(struct em_ctx *ctx)
{
    const struct config *c = job_config(ctx->job);
    const struct tmpl_set *t = job_templates(ctx->job);
    char days[16], err[256], *token = NULL, *url = NULL;
    struct tmpl_var vars[7];
    size_t n = 0;
    int rc;

    if (!t) {
        em_end(ctx, JOB_RETRY, "email templates are not loaded (see the worker log)");
        return -1;
    }
    vars[n++] = (struct tmpl_var){"business_name", ctx->name};
    vars[n++] = (struct tmpl_var){"email", ctx->addr};
    vars[n++] = (struct tmpl_var){"support_address", c->email_support_address};
    vars[n++] = (struct tmpl_var){"partner_id", ctx->pid};
    if (ctx->kind == TMPL_ACTIVATION) {
        size_t base = strlen(c->email_activation_url);
        if (!(token = em_url_encode(ctx->token)) ||
            !(url = malloc(base + strlen(token) + 1))) {
            free(token);
            em_end(ctx, JOB_RETRY, "out of memory");
            return -1;
        }
        memcpy(url, c->email_activation_url, base);
        strcpy(url + base, token);
        vars[n++] = (struct tmpl_var){"activation_url", url};
    }
    if (ctx->kind == TMPL_REENGAGEMENT) {
        snprintf(days, sizeof(days), "%d", ctx->stage);
        vars[n++] = (struct tmpl_var){"stage", days};
    }
    rc = tmpl_render(t, ctx->kind, vars, n, &ctx->msg, err, sizeof(err));
    free(token);
    free(url);
    if (rc == TMPL_EBADVALUE) { /* a value would put CR/LF into the subject: bad input */
        em_dropf(ctx, JOB_DEAD, "refused: %s", err);
        return -1;
    }
    if (rc != 0) {
        /* templates are checked at load; this is a bug or out of memory: keep the job */
        em_endf(ctx, JOB_RETRY, "rendering the email failed: %s", err);
        return -1;
    }
    if (em_has_crlf(ctx->msg.subject)) {
        em_dropf(ctx, JOB_DEAD, "partner %lld: the rendered subject holds CR or LF "
                               "(header injection refused); nothing sent", ctx->partner_id);
        return -1;
    }
    return 0;
}

/* ---- step 1: the partner ---- */

static const char em_partner_sql[] =
    "SELECT \"Email\", \"BusinessName\", \"IsActive\", \"OnboardingState\" FROM \"Partners\" "
    "WHERE \"Id\" = $1::integer";

/* 0, or -1 having ended the job dead with the reason. */
static int em_check_partner(struct em_ctx *ctx, const PGresult *res)
{
    const char *why;
    if (PQntuples(res) == 0) {
        em_dropf(ctx, JOB_DEAD, "partner %lld does not exist; nothing sent", ctx->partner_id);
        return -1;
    }
    if (PQgetisnull(res, 0, 2) || strcmp(PQgetvalue(res, 0, 2), "t") != 0) {
        em_dropf(ctx, JOB_DEAD, "partner %lld is not active; nothing sent", ctx->partner_id);
        return -1;
    }
    if (ctx->kind == TMPL_REENGAGEMENT && !PQgetisnull(res, 0, 3) &&
        strcmp(PQgetvalue(res, 0, 3), "activated") == 0) {
        /* activated since the sweep chose it: the nudge has no point any more */
        em_dropf(ctx, JOB_OK, "partner %lld has activated; nothing sent", ctx->partner_id);
        return -1;
    }
    if (em_has_crlf(ctx->addr)) {
        em_dropf(ctx, JOB_DEAD, "partner %lld: the email address holds CR or LF "
                               "(header injection refused); nothing sent", ctx->partner_id);
        return -1;
    }
    if ((why = em_addr_problem(ctx->addr))) {
        em_dropf(ctx, JOB_DEAD, "partner %lld: the email address is not valid (%s); nothing sent",
                ctx->partner_id, why);
        return -1;
    }
    if (em_has_crlf(ctx->name)) {
        em_dropf(ctx, JOB_DEAD, "partner %lld: the business name holds CR or LF "
                               "(header injection refused); nothing sent", ctx->partner_id);
        return -1;
    }
    return 0;
}

static void em_on_partner(void *ud, enum pg_outcome outcome, const PGresult *res,
                          const char *sqlstate, const char *message)
{
    struct em_ctx *ctx = ud;
    (void)sqlstate;
    if (!em_pg_back(ctx))
        return;
    if (outcome != PG_OK) {
        em_endf(ctx, JOB_RETRY, "postgresql: loading the partner failed: %s",
                message ? message : "connection lost");
        return;
    }
    if (PQntuples(res) == 1) {
        ctx->addr = strdup(PQgetisnull(res, 0, 0) ? "" : PQgetvalue(res, 0, 0));
        ctx->name = strdup(PQgetisnull(res, 0, 1) ? "" : PQgetvalue(res, 0, 1));
        if (!ctx->addr || !ctx->name) {
            em_end(ctx, JOB_RETRY, "out of memory");
            return;
        }
    }
    if (em_check_partner(ctx, res) != 0 || em_render(ctx) != 0)
        return;
    em_claim(ctx);
}

/* ---- the handler ---- */

/* The breaker is open: wait, without touching the database, for about as long as
 * it stays open (the jitter spreads the jobs out when it closes). */
static int64_t em_breaker_wait_ms(const struct config *c)
{
    double u = (double)rand() / ((double)RAND_MAX + 1.0);
    return (int64_t)(c->email_breaker_cooloff * 1000.0 * (0.5 + 0.5 * u)) + 100;
}

static void em_start(struct job *job, enum tmpl_kind kind)
{
    struct em_ctx *ctx;
    char why[256];
    struct mail *m = job_mail(job);

    if (!job_pg(job)) {
        job_done(job, JOB_RETRY, "email jobs need PostgreSQL: database.url is empty");
        return;
    }
    if (!(ctx = calloc(1, sizeof(*ctx)))) {
        job_done(job, JOB_RETRY, "out of memory");
        return;
    }
    ctx->kind = kind;
    if (em_args(ctx, job, why, sizeof(why)) != 0) {
        free(ctx);
        job_done(job, JOB_DEAD, why);
        return;
    }
    if (!m) {
        free(ctx);
        job_done(job, JOB_RETRY, "the email transport could not be set up (see the worker log)");
        return;
    }
    if (strcmp(mail_breaker_state(m), "open") == 0) {
        free(ctx);
        job_retry_in(job, em_breaker_wait_ms(job_config(job)), 0,
                     "the email transport's circuit breaker is open");
        return;
    }
    ctx->job = job;
    job->data = ctx;
    ev_init(&ctx->retry, em_on_record_retry);
    ctx->retry.data = ctx;
    /* the 'sent' update may be retried until 1 s before the engine's timeout */
    ctx->record_deadline_ms = job->started_ms + (int64_t)(job->type->timeout * 1000.0) - 1000;
    ctx->values[0] = ctx->pid;
    em_submit(ctx, em_partner_sql, 1, em_on_partner);
}

static void em_cancel(struct job *job)
{
    struct em_ctx *ctx = job->data;
    if (!ctx)
        return;
    job->data = NULL;
    ev_timer_stop(job_loop(job), &ctx->retry);
    if (ctx->req) {
        mail_cancel(ctx->req);
        ctx->req = NULL;
    }
    if (ctx->pg_busy) {
        ctx->job = NULL; /* its callback frees ctx */
        return;
    }
    em_free(ctx);
}

static void em_welcome_start(struct job *job)
{
    em_start(job, TMPL_WELCOME);
}

static void em_activation_start(struct job *job)
{
    em_start(job, TMPL_ACTIVATION);
}

static void em_reengagement_start(struct job *job)
{
    em_start(job, TMPL_REENGAGEMENT);
}

/* 10 attempts: the backoff's 9th retry comes about 4 hours after the first try;
 * an email later than that has lost its point. */
#define EM_DEFAULTS                                                                                \
    .queue = "email", .max_attempts = 10, .timeout = 60.0, .backoff = BACKOFF_DEFAULT,             \
    .cancel = em_cancel

const struct job_type email_welcome_type = {
    .name = "email.welcome", EM_DEFAULTS, .start = em_welcome_start};
const struct job_type email_activation_type = {
    .name = "email.activation", EM_DEFAULTS, .start = em_activation_start};
const struct job_type email_reengagement_type = {
    .name = "email.reengagement", EM_DEFAULTS, .start = em_reengagement_start};
