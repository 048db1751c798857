/*
 * request_log.c - the request_log job: one API request log row each, written
 * to "ApiRequestLogs" in batches.
 *
 * Jobs are not written one by one. start() checks the args (a bad entry is dead
 * on its own, with the reason) and appends the row, in COPY text format, to the
 * open batch. The batch is sent when it holds request_log.batch_max rows, when
 * the worker has no free slot left (nothing more can arrive), or after
 * request_log.batch_wait_ms. Every job of a batch is acknowledged only after the
 * batch committed.
 *
 * Rows travel in COPY's binary format: PostgreSQL then parses no text for the
 * integers, the inet and the timestamp, which is most of its cost per row.
 *
 * Writing: duplicates are rare (a replay after a crash between commit and ack),
 * so a batch first goes straight into the table with one COPY, which is atomic
 * and as fast as PostgreSQL loads rows. Only if that COPY hits the unique
 * "RequestId" index does the batch go again through a staging table with
 * INSERT ... ON CONFLICT DO NOTHING. A lost connection or a transient error
 * sends the same batch again with backoff; the rows keep their jobs in flight,
 * so nothing is acknowledged before it is written. Any other refusal splits the
 * batch in halves until the one bad row is found and dead-lettered with
 * PostgreSQL's message.
 *
 * One batcher per worker process (static below): the process is the unit that
 * owns a loop and a pool, and a job type has no other per-process home.
 */
#include <arpa/inet.h>
#include <endian.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "pg.h"
#include "registry.h"

#define RL_COLUMNS                                                                                 \
    "\"PartnerId\", \"RequestId\", \"Method\", \"Path\", \"StatusCode\", \"DurationMs\", "         \
    "\"IpAddress\", \"UserAgent\", \"RequestBytes\", \"ResponseBytes\", \"Environment\", "         \
    "\"OccurredAt\""

static const char rl_copy_sql[] =
    "COPY \"ApiRequestLogs\" (" RL_COLUMNS ") FROM STDIN WITH (FORMAT binary)";

/* One implicit transaction: stage, insert what is new, and the temp table empties at commit. */
static const char rl_dedup_sql[] =
    "CREATE TEMP TABLE IF NOT EXISTS steller_rl_stage ("
    "\"PartnerId\" integer, \"RequestId\" text, \"Method\" text, \"Path\" text, "
    "\"StatusCode\" integer, \"DurationMs\" integer, \"IpAddress\" inet, \"UserAgent\" text, "
    "\"RequestBytes\" bigint, \"ResponseBytes\" bigint, \"Environment\" text, "
    "\"OccurredAt\" timestamptz) ON COMMIT DELETE ROWS; "
    "COPY steller_rl_stage (" RL_COLUMNS ") FROM STDIN WITH (FORMAT binary); "
    "INSERT INTO \"ApiRequestLogs\" (" RL_COLUMNS ") SELECT " RL_COLUMNS
    " FROM steller_rl_stage ON CONFLICT (\"RequestId\") DO NOTHING";

#define RL_TEXT_MAX 2048 /* path and user agent are cut here, on a character boundary */

/* Binary COPY's header: signature, flags, header extension length. No trailer is
 * sent: the end of the COPY data ends the table just as well. */
static const char rl_header[19] = "PGCOPY\n\377\r\n\0\0\0\0\0\0\0\0\0";

struct rl_batch {
    struct job **jobs; /* NULL: cancelled (its row may still be written: harmless) */
    size_t *row_end;   /* where each row ends in buf */
    int n, cap;
    char *buf;
    size_t len, size;
    int dedup, tries;
    ev_timer retry;
    struct rl_batch *next; /* waiting for a connection */
};

static struct {
    struct ev_loop *loop;
    struct pg_pool *pg;
    struct rl_batch *open;
    struct rl_batch *ready, *ready_tail;
    struct rl_batch *later; /* waiting on their retry timers */
    ev_timer wait;
    int inflight; /* batches sent and not answered */
    int batch_max;
    double wait_s;
} rl;

/* ---- rows ---- */

struct rl_row {
    char *buf; /* growing text of one row */
    size_t len, size;
    const char *err;
    char why[160];
};

static void row_put(struct rl_row *r, const char *s, size_t n)
{
    if (r->len + n + 1 > r->size) {
        size_t size = (r->size ? r->size * 2 : 512) + n;
        char *b = realloc(r->buf, size);
        if (!b) {
            r->err = "out of memory";
            return;
        }
        r->buf = b;
        r->size = size;
    }
    memcpy(r->buf + r->len, s, n);
    r->len += n;
}

/* Length of the longest prefix of s (at most max bytes) that is valid UTF-8,
 * or -1 if s is not valid UTF-8 at all within its length. */
static long utf8_prefix(const unsigned char *s, size_t len, size_t max)
{
    size_t i = 0, keep = 0;
    while (i < len) {
        unsigned c = s[i];
        size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (n == 0 || i + n > len || (n == 2 && c < 0xc2) || c > 0xf4)
            return -1;
        /* no overlong forms, no surrogates, nothing above U+10FFFF */
        if ((c == 0xe0 && s[i + 1] < 0xa0) || (c == 0xed && s[i + 1] > 0x9f) ||
            (c == 0xf0 && s[i + 1] < 0x90) || (c == 0xf4 && s[i + 1] > 0x8f))
            return -1;
        for (size_t k = 1; k < n; k++)
            if ((s[i + k] & 0xc0) != 0x80)
                return -1;
        if (c == 0)
            return -1; /* PostgreSQL text cannot hold NUL */
        i += n;
        if (i <= max)
            keep = i;
    }
    return (long)keep;
}

/* Binary COPY: big-endian integers, each field as int32 length + bytes. */
static void row_i16(struct rl_row *r, int16_t v)
{
    uint16_t be = htons((uint16_t)v);
    row_put(r, (const char *)&be, 2);
}

static void row_i32(struct rl_row *r, int32_t v)
{
    uint32_t be = htonl((uint32_t)v);
    row_put(r, (const char *)&be, 4);
}

static void row_i64(struct rl_row *r, int64_t v)
{
    uint64_t be = htobe64((uint64_t)v);
    row_put(r, (const char *)&be, 8);
}

static void row_null(struct rl_row *r)
{
    row_i32(r, -1);
}

static int row_fail(struct rl_row *r, const char *fmt, const char *key)
{
    snprintf(r->why, sizeof(r->why), fmt, key);
    r->err = r->why;
    return -1;
}

/* An int4 (width 4) or int8 (width 8) column. */
static int arg_int(const struct job *job, struct rl_row *r, const char *key, int64_t min,
                   int64_t max, int nullable, int width)
{
    const msgpack_object *o = env_arg(&job->env, key);
    int64_t v;
    if (!o || o->type == MSGPACK_OBJECT_NIL) {
        if (!nullable)
            return row_fail(r, "args.%s is required", key);
        row_null(r);
        return 0;
    }
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= INT64_MAX)
        v = (int64_t)o->via.u64;
    else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        v = o->via.i64;
    else if ((o->type == MSGPACK_OBJECT_FLOAT64 || o->type == MSGPACK_OBJECT_FLOAT32) &&
             isfinite(o->via.f64) && fabs(o->via.f64) < 9e15)
        v = llround(o->via.f64); /* some producers send durations as doubles */
    else
        return row_fail(r, "args.%s must be an integer", key);
    if (v < min || v > max)
        return row_fail(r, "args.%s is out of range", key);
    row_i32(r, width);
    if (width == 4)
        row_i32(r, (int32_t)v);
    else
        row_i64(r, v);
    return 0;
}

/* A text column; truncate cuts at max bytes on a character boundary. */
static int arg_str(const struct job *job, struct rl_row *r, const char *key, size_t max,
                   int truncate, int nullable)
{
    const msgpack_object *o = env_arg(&job->env, key);
    long keep;
    if (!o || o->type == MSGPACK_OBJECT_NIL) {
        if (!nullable)
            return row_fail(r, "args.%s is required", key);
        row_null(r);
        return 0;
    }
    if (o->type != MSGPACK_OBJECT_STR)
        return row_fail(r, "args.%s must be a string", key);
    if (!nullable && o->via.str.size == 0)
        return row_fail(r, "args.%s must not be empty", key);
    if (!truncate && o->via.str.size > max)
        return row_fail(r, "args.%s is too long", key);
    keep = utf8_prefix((const unsigned char *)o->via.str.ptr, o->via.str.size, max);
    if (keep < 0)
        return row_fail(r, "args.%s is not valid UTF-8 text", key);
    row_i32(r, (int32_t)keep);
    row_put(r, o->via.str.ptr, (size_t)keep);
    return 0;
}

/* inet's binary form: family (PostgreSQL's own numbering), bits, is_cidr, length,
 * then the address bytes. */
static int arg_ip(const struct job *job, struct rl_row *r)
{
    const msgpack_object *o = env_arg(&job->env, "ip");
    char ip[64];
    unsigned char addr[4 + 16];
    int n;
    if (!o || o->type == MSGPACK_OBJECT_NIL) {
        row_null(r);
        return 0;
    }
    if (o->type != MSGPACK_OBJECT_STR || o->via.str.size >= sizeof(ip))
        return row_fail(r, "args.%s must be an IP address or nil", "ip");
    memcpy(ip, o->via.str.ptr, o->via.str.size);
    ip[o->via.str.size] = '\0';
    if (inet_pton(AF_INET, ip, addr + 4) == 1)
        n = 4;
    else if (inet_pton(AF_INET6, ip, addr + 4) == 1)
        n = 16;
    else
        return row_fail(r, "args.%s is not an IP address", "ip");
    addr[0] = n == 4 ? 2 : 3; /* PGSQL_AF_INET, PGSQL_AF_INET6 */
    addr[1] = (unsigned char)(n * 8);
    addr[2] = 0;
    addr[3] = (unsigned char)n;
    row_i32(r, 4 + n);
    row_put(r, (const char *)addr, 4 + (size_t)n);
    return 0;
}

static int arg_environment(const struct job *job, struct rl_row *r)
{
    const msgpack_object *o = env_arg(&job->env, "environment");
    if (!o || o->type != MSGPACK_OBJECT_STR ||
        !((o->via.str.size == 7 && memcmp(o->via.str.ptr, "sandbox", 7) == 0) ||
          (o->via.str.size == 10 && memcmp(o->via.str.ptr, "production", 10) == 0)))
        return row_fail(r, "args.%s must be \"sandbox\" or \"production\"", "environment");
    row_i32(r, (int32_t)o->via.str.size);
    row_put(r, o->via.str.ptr, o->via.str.size);
    return 0;
}

/* timestamptz's binary form: microseconds since 2000-01-01 00:00:00 UTC. */
static int arg_occurred_at(const struct job *job, struct rl_row *r)
{
    const msgpack_object *o = env_arg(&job->env, "occurred_at");
    /* ms since the epoch, from 2000 to 2200: anything else is a unit mistake */
    if (!o || o->type != MSGPACK_OBJECT_POSITIVE_INTEGER || o->via.u64 < 946684800000ULL ||
        o->via.u64 > 7258118400000ULL)
        return row_fail(r, "args.%s must be ms since the epoch", "occurred_at");
    row_i32(r, 8);
    row_i64(r, ((int64_t)o->via.u64 - 946684800000LL) * 1000);
    return 0;
}

/* The row as one binary COPY tuple, in column order RL_COLUMNS, or an error in r->err. */
static int rl_format(const struct job *job, struct rl_row *r)
{
    row_i16(r, 12);
    if (arg_int(job, r, "partner_id", INT32_MIN, INT32_MAX, 1, 4) ||
        arg_str(job, r, "request_id", 128, 0, 0) || arg_str(job, r, "method", 16, 0, 0) ||
        arg_str(job, r, "path", RL_TEXT_MAX, 1, 0) ||
        arg_int(job, r, "status", 100, 599, 0, 4) ||
        arg_int(job, r, "duration_ms", 0, INT32_MAX, 0, 4) || arg_ip(job, r) ||
        arg_str(job, r, "user_agent", RL_TEXT_MAX, 1, 1) ||
        arg_int(job, r, "request_bytes", 0, INT64_MAX, 0, 8) ||
        arg_int(job, r, "response_bytes", 0, INT64_MAX, 0, 8) || arg_environment(job, r) ||
        arg_occurred_at(job, r))
        return -1;
    return r->err ? -1 : 0;
}

/* ---- batches ---- */

static void rl_drain(void *ud);

static void rl_batch_free(struct rl_batch *b)
{
    ev_timer_stop(rl.loop, &b->retry);
    free(b->jobs);
    free(b->row_end);
    free(b->buf);
    free(b);
}

static int rl_batch_add(struct rl_batch *b, struct job *job, const char *row, size_t len)
{
    if (b->n == b->cap) {
        int cap = b->cap ? b->cap * 2 : 64;
        struct job **jobs = realloc(b->jobs, sizeof(*jobs) * cap);
        size_t *ends = jobs ? realloc(b->row_end, sizeof(*ends) * cap) : NULL;
        if (jobs)
            b->jobs = jobs;
        if (!ends)
            return -1;
        b->row_end = ends;
        b->cap = cap;
    }
    if (b->len + len > b->size) {
        size_t size = (b->size ? b->size * 2 : 65536) + len;
        char *buf = realloc(b->buf, size);
        if (!buf)
            return -1;
        b->buf = buf;
        b->size = size;
    }
    memcpy(b->buf + b->len, row, len);
    b->len += len;
    b->jobs[b->n] = job;
    b->row_end[b->n++] = b->len;
    job->data = b;
    return 0;
}

static void rl_on_retry(struct ev_loop *loop, ev_timer *t, int revents);

static struct rl_batch *rl_batch_new(void)
{
    struct rl_batch *b = calloc(1, sizeof(*b));
    if (!b)
        return NULL;
    ev_init(&b->retry, rl_on_retry);
    b->retry.data = b;
    b->size = 65536;
    if (!(b->buf = malloc(b->size))) {
        free(b);
        return NULL;
    }
    memcpy(b->buf, rl_header, sizeof(rl_header));
    b->len = sizeof(rl_header);
    return b;
}

/* Back to the head of the queue without draining (rl_drain is the caller). */
static void rl_submit_front_only(struct rl_batch *b)
{
    b->next = rl.ready;
    rl.ready = b;
    if (!rl.ready_tail)
        rl.ready_tail = b;
}

static void rl_submit(struct rl_batch *b, int front)
{
    b->next = NULL;
    if (front) {
        rl_submit_front_only(b);
    } else {
        if (rl.ready_tail)
            rl.ready_tail->next = b;
        else
            rl.ready = b;
        rl.ready_tail = b;
    }
    rl_drain(NULL);
}

static void rl_close_open(void)
{
    struct rl_batch *b = rl.open;
    ev_timer_stop(rl.loop, &rl.wait);
    rl.open = NULL;
    if (b)
        rl_submit(b, 0);
}

static void rl_on_wait(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)t;
    (void)revents;
    rl_close_open();
}

static void rl_finish_all(struct rl_batch *b, enum job_result r, const char *msg)
{
    for (int i = 0; i < b->n; i++) {
        struct job *job = b->jobs[i];
        if (!job)
            continue;
        job->data = NULL;
        job_done(job, r, msg);
    }
    rl_batch_free(b);
}

/* Splits a batch PostgreSQL refused into halves that are tried alone. */
static void rl_split(struct rl_batch *b)
{
    int half = b->n / 2;
    struct rl_batch *parts[2] = {rl_batch_new(), rl_batch_new()};
    for (int i = 0; i < b->n && parts[0] && parts[1]; i++) {
        size_t start = i ? b->row_end[i - 1] : sizeof(rl_header);
        struct rl_batch *p = parts[i >= half];
        if (b->jobs[i] &&
            rl_batch_add(p, b->jobs[i], b->buf + start, b->row_end[i] - start) != 0)
            break; /* out of memory: jobs not added stay with b and are retried below */
        b->jobs[i] = NULL;
    }
    for (int k = 0; k < 2; k++) {
        if (!parts[k])
            continue;
        parts[k]->dedup = b->dedup;
        if (parts[k]->n)
            rl_submit(parts[k], 1);
        else
            rl_batch_free(parts[k]);
    }
    rl_finish_all(b, JOB_RETRY, "out of memory splitting a batch");
}

static void rl_retry_later(struct rl_batch *b, const char *why)
{
    double delay = 0.1;
    char q[300];
    for (int i = 0; i < b->tries && delay < 5.0; i++)
        delay *= 2;
    b->tries++;
    if (b->tries == 1 || b->tries % 10 == 0)
        LOG(LOG_WARN, "request_log batch not written; retrying", "rows=%d tries=%d error=%s", b->n,
            b->tries, log_q(q, sizeof(q), why, strcspn(why, "\n")));
    ev_timer_set(&b->retry, delay > 5.0 ? 5.0 : delay, 0);
    ev_timer_start(rl.loop, &b->retry);
    b->next = rl.later;
    rl.later = b;
}

static void rl_on_retry(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct rl_batch *b = t->data, **pp = &rl.later;
    (void)loop;
    (void)revents;
    while (*pp && *pp != b)
        pp = &(*pp)->next;
    if (*pp)
        *pp = b->next;
    rl_submit(b, 1);
}

static int rl_live(const struct rl_batch *b)
{
    for (int i = 0; i < b->n; i++)
        if (b->jobs[i])
            return 1;
    return 0;
}

static void rl_on_written(void *ud, enum pg_outcome outcome, const PGresult *res,
                          const char *sqlstate, const char *message)
{
    struct rl_batch *b = ud;
    char msg[300];
    (void)res;
    rl.inflight--;
    if (outcome == PG_OK) {
        rl_finish_all(b, JOB_OK, NULL);
    } else if (!rl_live(b)) {
        rl_batch_free(b); /* every job was cancelled: nobody waits for this batch */
    } else if (outcome == PG_ERROR && strcmp(sqlstate, "23505") == 0 && !b->dedup) {
        b->dedup = 1; /* a replayed row: take the path that skips duplicates */
        rl_submit(b, 1);
    } else if (outcome != PG_ERROR || !pg_sqlstate_data(sqlstate)) {
        /* the connection, or the database as a whole (read-only, missing table,
         * permissions): no row is to blame, so the batch waits and tries again */
        rl_retry_later(b, message);
    } else if (b->n > 1) {
        rl_split(b);
    } else {
        snprintf(msg, sizeof(msg), "postgresql refused the row: %s (SQLSTATE %s)", message,
                 sqlstate);
        rl_finish_all(b, JOB_DEAD, msg);
    }
    rl_drain(NULL);
}

/* Sends waiting batches while connections are idle. */
static void rl_drain(void *ud)
{
    (void)ud;
    /* One COPY at a time per process: concurrent COPYs into one table contend on
     * its indexes (measured: 103,000 rows/s with one per process, 70,000 with two),
     * and the other processes' batches keep PostgreSQL busy meanwhile. */
    while (rl.ready && rl.inflight < 1 && pg_idle(rl.pg) > 0) {
        struct rl_batch *b = rl.ready;
        rl.ready = b->next;
        if (!rl.ready)
            rl.ready_tail = NULL;
        b->next = NULL;
        if (!rl_live(b)) {
            rl_batch_free(b);
            continue;
        }
        if (pg_run(rl.pg, b->dedup ? rl_dedup_sql : rl_copy_sql, b->buf, b->len, rl_on_written,
                   b) != 0) {
            rl_submit_front_only(b); /* that connection just broke: wait for another */
            break;
        }
        LOG(LOG_DEBUG, "request_log batch sent", "rows=%d dedup=%d", b->n, b->dedup);
        rl.inflight++;
    }
}

/* ---- the handler ---- */

static int rl_init(struct job *job)
{
    const struct config *c = job_config(job);
    if (rl.pg == job_pg(job) && rl.loop == job_loop(job))
        return 0;
    memset(&rl, 0, sizeof(rl));
    rl.loop = job_loop(job);
    rl.pg = job_pg(job);
    rl.batch_max = c->request_log_batch_max;
    rl.wait_s = c->request_log_batch_wait_ms / 1000.0;
    ev_timer_init(&rl.wait, rl_on_wait, rl.wait_s, 0);
    pg_on_idle(rl.pg, rl_drain, NULL);
    return 0;
}

static void rl_start(struct job *job)
{
    struct rl_row row = {0};
    if (!job_pg(job)) {
        job_done(job, JOB_RETRY, "request_log needs PostgreSQL: database.url is empty");
        return;
    }
    rl_init(job);
    if (rl_format(job, &row) != 0) {
        job_done(job, row.err == row.why ? JOB_DEAD : JOB_RETRY, row.err);
        free(row.buf);
        return;
    }
    if (!rl.open && !(rl.open = rl_batch_new())) {
        free(row.buf);
        job_done(job, JOB_RETRY, "out of memory");
        return;
    }
    if (rl_batch_add(rl.open, job, row.buf, row.len) != 0) {
        free(row.buf);
        job_done(job, JOB_RETRY, "out of memory");
        return;
    }
    free(row.buf);
    if (rl.open->n >= rl.batch_max || job_worker_full(job))
        rl_close_open();
    else if (rl.open->n >= job_config(job)->concurrency / 2 && rl.inflight == 0)
        rl_close_open();
    else if (!ev_is_active(&rl.wait)) {
        ev_timer_set(&rl.wait, rl.wait_s, 0);
        ev_timer_start(rl.loop, &rl.wait);
    }
}

/* The row stays in its batch and may still be written: a retry of this job
 * then finds it there and the dedup path skips it. */
static void rl_cancel(struct job *job)
{
    struct rl_batch *b = job->data;
    if (!b)
        return;
    for (int i = 0; i < b->n; i++)
        if (b->jobs[i] == job)
            b->jobs[i] = NULL;
    job->data = NULL;
}

/* The process is ending and every job was cancelled: free what is left. */
static void rl_stop(void)
{
    struct rl_batch *lists[3] = {rl.open, rl.ready, rl.later};
    if (rl.loop)
        ev_timer_stop(rl.loop, &rl.wait);
    for (int i = 0; i < 3; i++) {
        for (struct rl_batch *b = lists[i], *next; b; b = next) {
            next = i ? b->next : NULL;
            rl_batch_free(b);
        }
    }
    memset(&rl, 0, sizeof(rl));
}

const struct job_type request_log_type = {
    .name = "request_log",
    .queue = "request_log",
    .max_attempts = 25,
    .timeout = 300.0, /* a batch waits out a PostgreSQL restart before its jobs time out */
    .backoff = BACKOFF_DEFAULT,
    .start = rl_start,
    .cancel = rl_cancel,
    .stop = rl_stop,
};
