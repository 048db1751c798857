/*
 * sweep.c - the reengagement.sweep job: finds the partners due for a
 * re-engagement stage and enqueues one email.reengagement job for each, once
 * per partner and stage.
 *
 * Args (all optional): as_of (int, ms since the epoch; default now) fixes the
 * clock the windows are measured from, so a run can be repeated; dry_run (bool)
 * only counts.
 *
 * A partner is due for stage d (reengagement.stages, days) at as_of when it is
 * active, not 'activated', signed up d days or more but less than the next
 * stage's days before as_of (the last stage: max_age_days), has no
 * "EmailDeliveries" row 'reengagement:<pid>:d<d>', and made no API request in
 * the quiet_days before as_of. Each stage is one statement, run in batches: it
 * reads the next batch_size partners of the window from the partial index on
 * "CreatedAt" in ("CreatedAt", "Id") order after the last batch's (keyset, so
 * each partner of a window is read once however many batches it takes), probes
 * the unique "DedupKey" index and the ("PartnerId", "OccurredAt") index of
 * "ApiRequestLogs" for each, and INSERTs the 'pending' rows of the due ones
 * itself (ON CONFLICT ("DedupKey") DO NOTHING), returning the partners it took.
 * Those are pushed with one LPUSH before the lane's next batch runs.
 *
 * Lanes: reengagement.parallel statements of a stage are in flight at once, so
 * the stage uses that many PostgreSQL backends (and cores) rather than one. The
 * window is cut at equal times into SW_CHUNKS_PER_LANE chunks per lane, each
 * read with its own keyset cursor; a lane takes the next chunk when its own is
 * done, so a crowded stretch of signups is shared out. Chunks are disjoint, so
 * lanes never compete for a partner.
 *
 * Exactly once: the row is the claim. A second sweep finds the row and skips
 * the partner; a push lost after the commit (Redis down, the worker killed)
 * leaves a 'pending' row with "Attempts" 0 that no job will claim. Every sweep
 * therefore first re-enqueues such orphans older than SW_ORPHAN_MINUTES (by
 * wall clock, not as_of), read through IX_EmailDeliveries_Unclaimed. A job
 * enqueued twice this way is harmless: the email handler's claim on the row lets
 * one of them send.
 *
 * Failures: a statement that fails or a lost connection fails the job as
 * transient (retried with backoff; rows already inserted are skipped or
 * re-enqueued as orphans by a later run). The other lanes first push what their
 * statements in flight inserted. A push that Redis refuses is tried again
 * SW_PUSH_TRIES times with backoff before the job fails the same way.
 *
 * The result (counts and seconds per stage) is one log line, "reengagement sweep
 * done", and the job's result in Redis (job_set_result). Live sweeps are kept
 * on a list so that stop() can free those whose callback will never come (the
 * process ended while they waited).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "pg.h"
#include "registry.h"
#include "sbuf.h"
#include "steller/jobs.h"

#define SW_DAY_MS 86400000LL
#define SW_ORPHAN_MINUTES 30 /* a 'pending' row this old with no claim lost its job */
#define SW_PUSH_TRIES 6      /* 0.2 s doubling: about 6 s of Redis trouble is ridden out */
#define SW_NPARAMS 9
#define SW_TS_MAX 64
#define SW_CHUNKS_PER_LANE 4 /* so a lane that drew a crowded chunk is helped by the others */

/* Partner p is in the window: $1 < "CreatedAt" <= $2. The first two conditions
 * are those of the partial index IX_Partners_CreatedAt_Onboarding. */
#define SW_WINDOW                                                                                  \
    "p.\"IsActive\" AND p.\"OnboardingState\" <> 'activated' "                                    \
    "AND p.\"CreatedAt\" > $1::timestamptz AND p.\"CreatedAt\" <= $2::timestamptz"

/* ... and has no row for stage $5 and no request in ($3, $4]. */
#define SW_UNSENT                                                                                  \
    "NOT EXISTS (SELECT 1 FROM \"EmailDeliveries\" e "                                            \
    "WHERE e.\"DedupKey\" = 'reengagement:' || p.\"Id\" || ':d' || $5::integer) "                 \
    "AND NOT EXISTS (SELECT 1 FROM \"ApiRequestLogs\" l WHERE l.\"PartnerId\" = p.\"Id\" "        \
    "AND l.\"OccurredAt\" > $3::timestamptz AND l.\"OccurredAt\" <= $4::timestamptz)"

static const char sw_count_sql[] =
    "SELECT count(*) FROM \"Partners\" p WHERE " SW_WINDOW " AND " SW_UNSENT;

/*
 * One batch: the next $7 partners of the window after the cursor ($6, $9) in
 * ("CreatedAt", "Id") order, read from the index alone (cand); those of them that
 * are due get their row. The limit applies before the NOT EXISTS probes, so a
 * batch costs the same wherever it is in the window, and every partner of the
 * window is read once. One row per partner taken ("PartnerId" NULL when none
 * was), each with the number of candidates read and the last one's key.
 */
static const char sw_batch_sql[] =
    "WITH cand AS (SELECT p.\"Id\", p.\"Email\", p.\"CreatedAt\" FROM \"Partners\" p WHERE "
    SW_WINDOW " AND p.\"CreatedAt\" >= $6::timestamptz "
    "AND (p.\"CreatedAt\", p.\"Id\") > ($6::timestamptz, $9::integer) "
    "ORDER BY p.\"CreatedAt\", p.\"Id\" LIMIT $7::integer), "
    "due AS (SELECT p.\"Id\", p.\"Email\" FROM cand p WHERE " SW_UNSENT "), "
    "ins AS (INSERT INTO \"EmailDeliveries\" (\"PartnerId\", \"Kind\", \"DedupKey\", "
    "\"ToAddress\", \"Subject\", \"Transport\", \"Status\", \"Attempts\", \"ClaimedUntil\") "
    "SELECT \"Id\", 'reengagement', 'reengagement:' || \"Id\" || ':d' || $5::integer, \"Email\", "
    "'', $8::text, 'pending', 0, NULL FROM due "
    "ON CONFLICT (\"DedupKey\") DO NOTHING RETURNING \"PartnerId\") "
    "SELECT s.found, k.last, k.last_id, ins.\"PartnerId\" FROM "
    "(SELECT count(*) AS found FROM cand) s "
    "LEFT JOIN (SELECT \"CreatedAt\"::text AS last, \"Id\" AS last_id FROM cand "
    "ORDER BY \"CreatedAt\" DESC, \"Id\" DESC LIMIT 1) k ON true LEFT JOIN ins ON true";

#define SW_ORPHAN_WHERE                                                                            \
    "e.\"Status\" = 'pending' AND e.\"Attempts\" = 0 AND e.\"Kind\" = 'reengagement' "            \
    "AND e.\"ClaimedUntil\" IS NULL AND e.\"CreatedAt\" < now() - $1::integer * interval '1 minute'"

static const char sw_orphan_count_sql[] =
    "SELECT count(*) FROM \"EmailDeliveries\" e WHERE " SW_ORPHAN_WHERE;

/* Keyset on ("CreatedAt", "Id"): one INSERT gives a whole batch the same "CreatedAt". */
static const char sw_orphan_sql[] =
    "SELECT e.\"PartnerId\", substring(e.\"DedupKey\" from ':d([0-9]+)$'), "
    "e.\"CreatedAt\"::text, e.\"Id\" FROM \"EmailDeliveries\" e WHERE " SW_ORPHAN_WHERE
    " AND e.\"CreatedAt\" >= $2::timestamptz AND (e.\"CreatedAt\", e.\"Id\") > "
    "($2::timestamptz, $3::bigint) ORDER BY e.\"CreatedAt\", e.\"Id\" LIMIT $4::integer";

struct sweep;

/* One statement, then its push, in flight at a time. A lane works through the
 * chunks of a phase one after the other, each with its own keyset cursor. */
struct sw_lane {
    struct sweep *s;
    int busy;      /* a statement or a push is out */
    int chunk;     /* of the phase; -1: idle */
    int more;      /* the last batch was full: the chunk goes on */
    ev_timer retry; /* between tries of a push */
    int tries;
    char cursor[SW_TS_MAX], cursor_id[24];
    char val[SW_NPARAMS][SW_TS_MAX];
    const char *params[SW_NPARAMS];

    msgpack_sbuffer buf; /* the envelopes of the batch, back to back */
    const char **envs;   /* into buf, set when pushed */
    size_t *lens;
    int n, cap;
};

struct sweep {
    struct job *job;           /* NULL once cancelled or finished */
    struct ev_loop *loop;
    int busy;                  /* callbacks due over all lanes; the last one frees us */
    struct sweep *prev, *next; /* sw_all */

    int64_t as_of;
    int dry_run;
    int stage;      /* -1: the orphans; then 0 .. stages.n - 1 */
    int chunks;     /* of this phase's window, cut at equal times */
    int next_chunk; /* the next one a lane takes */
    int lanes;      /* in use in this phase */
    const char *queue; /* of email.reengagement */
    const char *transport;
    int64_t phase_started;
    char failed[400]; /* why the run fails, once its lanes are back; "" while fine */

    long long orphans, counts[CFG_MAX_STAGES];
    int64_t ms[CFG_MAX_STAGES + 1]; /* per phase; [0] the orphans */

    struct sw_lane lane[CFG_MAX_SWEEP_LANES];
};

static struct sweep *sw_all;

static void sw_send(struct sw_lane *l);
static void sw_push(struct sw_lane *l);
static void sw_lane_next(struct sw_lane *l);

/* ---- life ---- */

static void sw_free(struct sweep *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        sw_all = s->next;
    if (s->next)
        s->next->prev = s->prev;
    for (int i = 0; i < CFG_MAX_SWEEP_LANES; i++) {
        struct sw_lane *l = &s->lane[i];
        ev_timer_stop(s->loop, &l->retry);
        msgpack_sbuffer_destroy(&l->buf);
        free(l->envs);
        free(l->lens);
    }
    free(s);
}

static void sw_stop_timers(struct sweep *s)
{
    for (int i = 0; i < CFG_MAX_SWEEP_LANES; i++)
        ev_timer_stop(s->loop, &s->lane[i].retry);
}

/* Ends the job; the state goes with it unless callbacks are still due. Not
 * sw_cancel() then job_done(): msg may be s->failed, and the job is not ours
 * once done. */
static void sw_finish(struct sweep *s, enum job_result r, const char *msg)
{
    struct job *job = s->job;
    s->job = NULL;
    job->data = NULL;
    sw_stop_timers(s);
    job_done(job, r, msg);
    if (!s->busy)
        sw_free(s);
}

static void sw_out(struct sw_lane *l)
{
    l->busy = 1;
    l->s->busy++;
}

/* A callback came back: 1 when the job still waits for it, else the state is
 * freed once no other callback is due. Outside ev_run() the callback comes from
 * the teardown of the process (pg_free): nothing is touched then, and stop()
 * frees the state. */
static int sw_back(struct sw_lane *l)
{
    struct sweep *s = l->s;
    l->busy = 0;
    s->busy--;
    if (ev_depth(s->loop) == 0)
        return 0;
    if (s->job)
        return 1;
    if (!s->busy)
        sw_free(s);
    return 0;
}

/* ms since the epoch as a timestamptz literal in UTC, to the millisecond. */
static const char *sw_ts(char *buf, int64_t ms)
{
    time_t t = (time_t)(ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000));
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(buf, SW_TS_MAX, "%04d-%02d-%02d %02d:%02d:%02d.%03d+00", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (int)(ms - (int64_t)t * 1000));
    return buf;
}

/* ---- the result ---- */

/* The result: one log line, and the same fields as the job's result (job.h) for
 * `stellerctl sweep --wait`. */
static void sw_report(struct sweep *s)
{
    const struct config *c = job_config(s->job);
    struct sbuf out = {0};
    char jid[80];
    int64_t total = 0;
    for (int i = 0; i < c->reengagement_stages.n; i++)
        total += s->counts[i];
    sb_addf(&out, "as_of=%" PRId64 " dry_run=%s total=%" PRId64, s->as_of,
            s->dry_run ? "true" : "false", total);
    for (int i = 0; i < c->reengagement_stages.n; i++)
        sb_addf(&out, " d%d=%lld d%d_ms=%" PRId64, c->reengagement_stages.v[i], s->counts[i],
                c->reengagement_stages.v[i], s->ms[i + 1]);
    sb_addf(&out, " orphans=%lld orphans_ms=%" PRId64 " parallel=%d", s->orphans, s->ms[0],
            c->reengagement_parallel);
    LOG(LOG_INFO, "reengagement sweep done", "jid=%s type=%s %s",
        log_q(jid, sizeof(jid), s->job->env.jid.ptr, s->job->env.jid.len), s->job->type->name,
        out.p ? out.p : "(out of memory)");
    if (out.p)
        job_set_result(s->job, out.p, out.len);
    free(out.p);
}

/* Starts the phase s->stage: its window in chunks, one lane per chunk at first.
 * The orphans and the counts of a dry run are one statement each: one chunk. */
static void sw_phase(struct sweep *s)
{
    int par = job_config(s->job)->reengagement_parallel;
    s->chunks = s->stage < 0 || s->dry_run || par == 1 ? 1 : par * SW_CHUNKS_PER_LANE;
    s->lanes = s->chunks < par ? s->chunks : par;
    s->next_chunk = 0;
    s->busy++; /* a synchronous failure in the loop (pg.h: out of memory) must not free us */
    for (int i = 0; i < s->lanes && s->job; i++)
        sw_lane_next(&s->lane[i]);
    s->busy--;
    if (!s->job && !s->busy)
        sw_free(s);
}

/* Moves to the next phase (orphans, then each stage), or ends the job. */
static void sw_advance(struct sweep *s)
{
    const struct config *c = job_config(s->job);
    int64_t now;
    ev_now_update(s->loop); /* the loop's clock stands still while we work */
    now = job_now_ms(s->job);
    s->ms[s->stage + 1] += now - s->phase_started;
    s->phase_started = now;
    s->stage++;
    if (s->stage < c->reengagement_stages.n) {
        sw_phase(s);
        return;
    }
    sw_report(s);
    sw_finish(s, JOB_OK, NULL);
}

/* The lane's chunk is done: it takes the next one, or idles; the phase ends
 * with its last lane. After a failure lanes take nothing new, and the last one
 * ends the run: the other lanes' batches in flight are still pushed. (Rows of
 * the failed statement itself, if it committed before the connection was lost,
 * wait for the orphan pass.) */
static void sw_lane_next(struct sw_lane *l)
{
    struct sweep *s = l->s;
    l->more = 0;
    snprintf(l->cursor, sizeof(l->cursor), "-infinity");
    snprintf(l->cursor_id, sizeof(l->cursor_id), "0");
    if (s->next_chunk < s->chunks && !s->failed[0]) {
        l->chunk = s->next_chunk++;
        sw_send(l);
        return;
    }
    l->chunk = -1;
    for (int i = 0; i < s->lanes; i++)
        if (s->lane[i].chunk >= 0)
            return;
    if (s->failed[0])
        sw_finish(s, JOB_RETRY, s->failed);
    else
        sw_advance(s);
}

/* The first failure is the job's error; later ones of the same run are logged. */
static void sw_fail(struct sw_lane *l, const char *msg)
{
    char jid[80];
    if (!l->s->failed[0])
        snprintf(l->s->failed, sizeof(l->s->failed), "%s", msg);
    else
        LOG(LOG_WARN, "reengagement sweep: another lane failed", "jid=%s error=%s",
            log_q(jid, sizeof(jid), l->s->job->env.jid.ptr, l->s->job->env.jid.len), msg);
    sw_lane_next(l);
}

/* The lane's batch is settled: the same chunk goes on, or the next. */
static void sw_continue(struct sw_lane *l)
{
    if (l->more && !l->s->failed[0])
        sw_send(l);
    else
        sw_lane_next(l);
}

/* ---- envelopes ---- */

static int sw_grow(struct sw_lane *l, int want)
{
    size_t *lens;
    const char **envs;
    if (want <= l->cap)
        return 0;
    envs = realloc(l->envs, sizeof(*envs) * (size_t)want);
    if (envs)
        l->envs = envs;
    lens = realloc(l->lens, sizeof(*lens) * (size_t)want);
    if (lens)
        l->lens = lens;
    if (!envs || !lens)
        return -1;
    l->cap = want;
    return 0;
}

/* Appends one email.reengagement envelope; jid: the batch's random jid
 * (stj_jid_generate) and the envelope's place in it. */
static int sw_add(struct sw_lane *l, const char *base, long long pid, long long stage)
{
    char args[64], jid[STJ_JID_GEN_LEN + 8];
    size_t start = l->buf.size;
    msgpack_sbuffer ab = {.data = args, .alloc = sizeof(args)};
    msgpack_packer pk;
    struct env_new n = {.jid = jid, .type = "email.reengagement", .queue = l->s->queue,
                        .created_at = job_now_ms(l->s->job), .max_attempts = -1};
    if (sw_grow(l, l->n + 1) != 0)
        return -1;
    /* Fixed buffer: a map of two small ints never reaches 64 bytes, so the
     * sbuffer never reallocates it. */
    msgpack_packer_init(&pk, &ab, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    msgpack_pack_str_with_body(&pk, "partner_id", 10);
    msgpack_pack_long_long(&pk, pid);
    msgpack_pack_str_with_body(&pk, "stage", 5);
    msgpack_pack_long_long(&pk, stage);
    snprintf(jid, sizeof(jid), "%s%06x", base, (unsigned)l->n);
    n.args = ab.data;
    n.args_len = ab.size;
    if (env_new(&n, &l->buf) != 0)
        return -1;
    l->lens[l->n++] = l->buf.size - start;
    return 0;
}

static void sw_batch_reset(struct sw_lane *l)
{
    l->buf.size = 0;
    l->n = 0;
}

/* ---- results ---- */

/* A stage batch: candidates read, the last one's "CreatedAt" and "Id", and
 * "PartnerId" (NULL: none taken). */
static int sw_take_batch(struct sw_lane *l, const PGresult *res)
{
    struct sweep *s = l->s;
    const struct config *c = job_config(s->job);
    char base[STJ_JID_GEN_LEN + 1];
    long long found;
    if (PQntuples(res) < 1 || PQnfields(res) != 4 || stj_jid_generate(base) < 0)
        return -1;
    found = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    l->more = found >= c->reengagement_batch_size;
    if (!PQgetisnull(res, 0, 1)) {
        snprintf(l->cursor, sizeof(l->cursor), "%s", PQgetvalue(res, 0, 1));
        snprintf(l->cursor_id, sizeof(l->cursor_id), "%s", PQgetvalue(res, 0, 2));
    }
    for (int i = 0; i < PQntuples(res); i++) {
        if (PQgetisnull(res, i, 3))
            continue;
        if (sw_add(l, base, strtoll(PQgetvalue(res, i, 3), NULL, 10),
                   c->reengagement_stages.v[s->stage]) != 0)
            return -1;
        s->counts[s->stage]++;
    }
    return 0;
}

/* Orphans: "PartnerId", stage, "CreatedAt", "Id", in keyset order. */
static int sw_take_orphans(struct sw_lane *l, const PGresult *res)
{
    int rows = PQntuples(res);
    char base[STJ_JID_GEN_LEN + 1];
    if (PQnfields(res) != 4 || stj_jid_generate(base) < 0)
        return -1;
    l->more = rows >= job_config(l->s->job)->reengagement_batch_size;
    for (int i = 0; i < rows; i++) {
        if (PQgetisnull(res, i, 1))
            continue; /* not a key this sweep wrote */
        if (sw_add(l, base, strtoll(PQgetvalue(res, i, 0), NULL, 10),
                   strtoll(PQgetvalue(res, i, 1), NULL, 10)) != 0)
            return -1;
        l->s->orphans++;
    }
    if (rows > 0) {
        snprintf(l->cursor, sizeof(l->cursor), "%s", PQgetvalue(res, rows - 1, 2));
        snprintf(l->cursor_id, sizeof(l->cursor_id), "%s", PQgetvalue(res, rows - 1, 3));
    }
    return 0;
}

static void sw_on_result(void *ud, enum pg_outcome outcome, const PGresult *res,
                         const char *sqlstate, const char *message)
{
    struct sw_lane *l = ud;
    struct sweep *s = l->s;
    char msg[400];
    int rc;
    if (!sw_back(l))
        return;
    if (outcome != PG_OK) {
        snprintf(msg, sizeof(msg), "reengagement sweep: %s%s%s%s",
                 outcome == PG_LOST ? "PostgreSQL connection lost: " : "",
                 message ? message : "", sqlstate && *sqlstate ? " SQLSTATE " : "",
                 sqlstate ? sqlstate : "");
        sw_fail(l, msg);
        return;
    }
    if (s->dry_run) {
        long long n = PQntuples(res) > 0 ? strtoll(PQgetvalue(res, 0, 0), NULL, 10) : 0;
        if (s->stage < 0)
            s->orphans = n;
        else
            s->counts[s->stage] = n;
        sw_lane_next(l);
        return;
    }
    sw_batch_reset(l);
    rc = s->stage < 0 ? sw_take_orphans(l, res) : sw_take_batch(l, res);
    if (rc != 0) {
        sw_fail(l, "reengagement sweep: out of memory or an unexpected result");
        return;
    }
    if (l->n > 0) {
        l->tries = 0;
        sw_push(l);
    } else {
        sw_continue(l);
    }
}

/* ---- pushing ---- */

static void sw_on_pushed(void *ud, int rc)
{
    struct sw_lane *l = ud;
    if (!sw_back(l))
        return;
    if (rc == 0) {
        LOG(LOG_DEBUG, "reengagement sweep batch enqueued", "stage=%d count=%d", l->s->stage,
            l->n);
        sw_batch_reset(l);
        sw_continue(l);
        return;
    }
    if (++l->tries >= SW_PUSH_TRIES) {
        /* The rows stay 'pending' with no job: a later sweep re-enqueues them. */
        sw_fail(l, "reengagement sweep: Redis did not take the email jobs");
        return;
    }
    ev_timer_set(&l->retry, 0.1 * (1 << l->tries), 0);
    ev_timer_start(l->s->loop, &l->retry);
}

static void sw_on_retry(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    sw_push(t->data);
}

static void sw_push(struct sw_lane *l)
{
    /* Set here, not in sw_add: the buffer may move while the batch grows. */
    for (size_t i = 0, at = 0; i < (size_t)l->n; at += l->lens[i++])
        l->envs[i] = l->buf.data + at;
    sw_out(l);
    if (job_push(l->s->job, l->s->queue, l->envs, l->lens, l->n, sw_on_pushed, l) != 0)
        sw_on_pushed(l, -1); /* not connected: a failed try */
}

/* ---- statements ---- */

/* The lane's chunk of the stage window (as_of - next days, as_of - days days]:
 * chunk k of n starts k/n of the way. Adjacent chunks share their bound, so
 * they cover the window exactly once whatever the rounding. */
static void sw_chunk_bounds(struct sw_lane *l, int days, int next)
{
    struct sweep *s = l->s;
    int64_t lo = s->as_of - next * SW_DAY_MS, span = (int64_t)(next - days) * SW_DAY_MS;
    sw_ts(l->val[0], lo + span * l->chunk / s->chunks);
    sw_ts(l->val[1], lo + span * (l->chunk + 1) / s->chunks);
}

static void sw_send(struct sw_lane *l)
{
    struct sweep *s = l->s;
    const struct config *c = job_config(s->job);
    const char *sql;
    int n;
    if (s->stage < 0) {
        snprintf(l->val[0], SW_TS_MAX, "%d", SW_ORPHAN_MINUTES);
        snprintf(l->val[1], SW_TS_MAX, "%s", l->cursor);
        snprintf(l->val[2], SW_TS_MAX, "%s", l->cursor_id);
        snprintf(l->val[3], SW_TS_MAX, "%d", c->reengagement_batch_size);
        sql = s->dry_run ? sw_orphan_count_sql : sw_orphan_sql;
        n = s->dry_run ? 1 : 4;
    } else {
        int days = c->reengagement_stages.v[s->stage];
        int next = s->stage + 1 < c->reengagement_stages.n
                       ? c->reengagement_stages.v[s->stage + 1]
                       : c->reengagement_max_age_days;
        sw_chunk_bounds(l, days, next);
        sw_ts(l->val[2], s->as_of - c->reengagement_quiet_days * SW_DAY_MS);
        sw_ts(l->val[3], s->as_of);
        snprintf(l->val[4], SW_TS_MAX, "%d", days);
        snprintf(l->val[5], SW_TS_MAX, "%s", l->cursor);
        snprintf(l->val[6], SW_TS_MAX, "%d", c->reengagement_batch_size);
        snprintf(l->val[7], SW_TS_MAX, "%s", s->transport);
        snprintf(l->val[8], SW_TS_MAX, "%s", l->cursor_id);
        sql = s->dry_run ? sw_count_sql : sw_batch_sql;
        n = s->dry_run ? 5 : 9;
    }
    sw_out(l);
    pg_submit(job_pg(s->job), sql, n, l->params, sw_on_result, l);
}

/* ---- the handler ---- */

/* Reads the optional args; returns NULL or why they are unusable. */
static const char *sw_args(struct sweep *s, const struct job *job)
{
    const msgpack_object *o = env_arg(&job->env, "as_of");
    if (o && o->type != MSGPACK_OBJECT_NIL) {
        /* ms since the epoch, from 2000 to 2200: anything else is a unit mistake */
        if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER || o->via.u64 < 946684800000ULL ||
            o->via.u64 > 7258118400000ULL)
            return "args.as_of must be ms since the epoch (an integer, years 2000-2200)";
        s->as_of = (int64_t)o->via.u64;
    }
    o = env_arg(&job->env, "dry_run");
    if (o && o->type != MSGPACK_OBJECT_NIL) {
        if (o->type != MSGPACK_OBJECT_BOOLEAN)
            return "args.dry_run must be a boolean";
        s->dry_run = o->via.boolean;
    }
    return NULL;
}

static void sw_start(struct job *job)
{
    const struct job_type *mail_type = reg_find("email.reengagement", 18);
    struct sweep *s;
    const char *why;
    if (!job_pg(job)) {
        job_done(job, JOB_RETRY, "reengagement.sweep needs PostgreSQL: database.url is empty");
        return;
    }
    if (!(s = calloc(1, sizeof(*s)))) {
        job_done(job, JOB_RETRY, "out of memory");
        return;
    }
    s->as_of = job_now_ms(job);
    if ((why = sw_args(s, job))) {
        free(s);
        job_done(job, JOB_DEAD, why);
        return;
    }
    s->job = job;
    s->loop = job_loop(job);
    job->data = s;
    s->next = sw_all;
    if (sw_all)
        sw_all->prev = s;
    sw_all = s;
    for (int i = 0; i < CFG_MAX_SWEEP_LANES; i++) {
        struct sw_lane *l = &s->lane[i];
        l->s = s;
        l->chunk = -1;
        msgpack_sbuffer_init(&l->buf);
        ev_init(&l->retry, sw_on_retry);
        l->retry.data = l;
        for (int k = 0; k < SW_NPARAMS; k++)
            l->params[k] = l->val[k];
    }
    s->queue = mail_type ? mail_type->queue : "email";
    s->transport = cfg_mail_transport_name(job_config(job)->email_transport);
    s->stage = -1;
    s->phase_started = job_now_ms(job);
    sw_phase(s);
}

/* A statement or push still out keeps the state until its callback. */
static void sw_cancel(struct job *job)
{
    struct sweep *s = job->data;
    if (!s)
        return;
    s->job = NULL;
    job->data = NULL;
    sw_stop_timers(s);
    if (!s->busy)
        sw_free(s);
}

/* The process is ending: sweeps whose callbacks will not come are freed here. */
static void sw_stop(void)
{
    while (sw_all)
        sw_free(sw_all);
}

const struct job_type reengagement_sweep_type = {
    .name = "reengagement.sweep",
    .queue = "default",
    .max_attempts = 5,
    /* Batches of 1000 take a few ms each; the whole run on a million partners is
     * seconds per stage. The margin is for a large backlog after downtime. */
    .timeout = 1800.0,
    .backoff = BACKOFF_DEFAULT,
    .start = sw_start,
    .cancel = sw_cancel,
    .stop = sw_stop,
};
