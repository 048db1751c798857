/*
 * scheduler.c - see scheduler.h for what the scheduler promises.
 *
 * Each entry keeps three times, in seconds since the epoch (-1: none):
 *   next  the first slot not yet reached; when the clock passes it, the latest
 *         slot at or before now becomes due (slots skipped by a long pause
 *         are not run one by one: the latest one stands for them);
 *   due   the slot waiting to be enqueued;
 *   sent  the slot whose script call awaits its reply (at most one).
 * A due slot needs history (the script's ARGV[5]) when it was not reached
 * live: the latest slot found at start or reload, or a catch-up past the
 * grace window.
 *
 * The envelope is built by libstellerjobs (stj_job_*), the code every producer
 * uses; the entry's JSON args become msgpack once, when the entry is loaded.
 * The script is loaded on this connection each time it comes up (SCRIPT
 * LOAD), as rconn.c does for the engine's scripts; a NOSCRIPT reply drops the
 * connection through rc_note_error() and the reconnect loads it again.
 */
#include "scheduler.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cron.h"
#include "log.h"
#include "rconn.h"
#include "redisurl.h"
#include "registry.h"

extern const char scr_src_schedule[];

struct sched_entry {
    char *name, *type, *queue;
    char *cron_text;
    struct cron cron;
    int catch_up;
    char *args; /* packed msgpack map */
    size_t args_len;
    int disabled; /* its args or envelope are unusable: logged at load */
    int64_t next, due, sent;
    int due_needs_history;
    int64_t retry_at; /* after an error reply: not before this */
    int64_t warned;   /* the due slot "waits for Redis" was logged for */
    struct sched_stat st; /* this master's figures; st.name and st.next filled when read */
};

struct sched {
    struct ev_loop *loop;
    sched_clock_fn *clock;
    void *clock_ud;
    ev_periodic wake;
    struct rconn *rc;
    char *url, *prefix;
    char sha[41];
    int sha_ready;
    struct sched_entry *e;
    int n;
    int inflight;
    int closing;
};

/* One script call in flight. */
struct sched_req {
    struct sched *s;
    int64_t slot;
    char jid[STJ_JID_MAX + 1];
    char *name, *type, *queue;
};

static int64_t sched_now(struct sched *s)
{
    return s->clock ? s->clock(s->clock_ud) : (int64_t)floor(ev_time());
}

static const char *sched_iso(int64_t t, char buf[32])
{
    time_t tt = (time_t)t;
    struct tm tm;

    gmtime_r(&tt, &tm);
    strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

/* ---- entries ---- */

static void sched_entry_clear(struct sched_entry *e)
{
    free(e->name);
    free(e->type);
    free(e->queue);
    free(e->cron_text);
    free(e->args);
    memset(e, 0, sizeof *e);
}

static void sched_entries_free(struct sched_entry *e, int n)
{
    for (int i = 0; i < n; i++)
        sched_entry_clear(&e[i]);
    free(e);
}

/* Args to msgpack, and one trial envelope against max_job_bytes: a job the
 * workers would dead-letter unread is never enqueued. */
static void sched_entry_check(struct sched_entry *e, const char *json, long max_job_bytes)
{
    char err[300], q[400], *env = NULL;
    size_t len = 0;
    stj_job *j = NULL;
    int rc = stj_json_to_msgpack(json, &e->args, &e->args_len, err, sizeof err);

    if (rc == 0 && (j = stj_job_new(e->type)) == NULL)
        rc = STJ_E_NOMEM;
    if (rc == 0 && (rc = stj_job_set_queue(j, e->queue)) == 0 &&
        (rc = stj_job_set_args_msgpack(j, e->args, e->args_len, err, sizeof err)) == 0 &&
        (rc = stj_job_encode(j, &env, &len)) == 0 && (long)len > max_job_bytes) {
        snprintf(err, sizeof err, "the job is %zu bytes, over max_job_bytes (%ld)", len,
                 max_job_bytes);
        rc = STJ_E_INVAL;
    }
    if (rc != STJ_E_INVAL && rc != 0)
        snprintf(err, sizeof err, "%s", stj_strerror(rc));
    if (rc != 0) {
        e->disabled = 1;
        LOG(LOG_ERROR, "schedule entry disabled: its job cannot be built", "schedule=%s error=%s",
            e->name, log_q(q, sizeof q, err, strlen(err)));
    } else if (!reg_builtin_find(e->type)) {
        LOG(LOG_WARN, "schedule entry names a type this daemon does not know", "schedule=%s type=%s",
            e->name, e->type);
    }
    free(env);
    stj_job_free(j);
}

static int sched_entry_load(struct sched_entry *e, const struct config *cfg,
                            const struct cfg_schedule *c, long max_job_bytes)
{
    char err[128];

    memset(e, 0, sizeof *e);
    e->name = strdup(c->name);
    e->type = strdup(c->type);
    e->queue = strdup(sched_queue(cfg, c));
    e->cron_text = strdup(c->cron);
    e->catch_up = c->catch_up;
    e->next = e->due = e->sent = e->retry_at = e->warned = -1;
    if (!e->name || !e->type || !e->queue || !e->cron_text)
        return -1;
    if (cron_parse(c->cron, &e->cron, err, sizeof err) != 0) {
        e->disabled = 1; /* cfg_load() checked it: cannot happen */
        return 0;
    }
    sched_entry_check(e, c->args ? c->args : "{}", max_job_bytes);
    return 0;
}

/* A fresh entry: the latest slot at or before now may still be run, once. */
static void sched_entry_start(struct sched_entry *e, int64_t now)
{
    int64_t last = cron_prev(&e->cron, now);

    e->next = cron_next(&e->cron, now);
    if (last >= 0 && (now - last <= SCHED_GRACE_S || e->catch_up)) {
        e->due = last;
        e->due_needs_history = 1;
    }
}

static struct sched_entry *sched_find(struct sched *s, const char *name)
{
    for (int i = 0; i < s->n; i++)
        if (strcmp(s->e[i].name, name) == 0)
            return &s->e[i];
    return NULL;
}

/* ---- Redis ---- */

static void sched_req_free(struct sched_req *r)
{
    free(r->name);
    free(r->type);
    free(r->queue);
    free(r);
}

static void sched_log_result(const struct sched_req *r, long long result)
{
    char slot[32];

    sched_iso(r->slot, slot);
    switch (result) {
    case 1:
        LOG(LOG_INFO, "scheduled job enqueued", "schedule=%s slot=%s jid=%s type=%s queue=%s",
            r->name, slot, r->jid, r->type, r->queue);
        break;
    case 0:
        LOG(LOG_DEBUG, "schedule slot already enqueued", "schedule=%s slot=%s", r->name, slot);
        break;
    case -1:
        LOG(LOG_INFO, "schedule slot skipped: a later slot already ran", "schedule=%s slot=%s",
            r->name, slot);
        break;
    default:
        LOG(LOG_DEBUG, "schedule slot skipped: the entry has not run before", "schedule=%s slot=%s",
            r->name, slot);
    }
}

/* The script's answer (scripts/schedule.lua) in the entry's figures. */
static void sched_count(struct sched_entry *e, long long result)
{
    if (result == 1) {
        e->st.enqueued++;
    } else if (result == 0) {
        e->st.elsewhere++;
    } else {
        e->st.passed++;
    }
}

static void sched_on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct sched_req *r = privdata;
    struct sched *s = r->s;
    redisReply *rep = reply;
    struct sched_entry *e;
    char q[300];

    (void)ac;
    s->inflight--;
    if (s->closing) {
        sched_req_free(r);
        return;
    }
    e = sched_find(s, r->name);
    if (e && e->sent == r->slot)
        e->sent = -1;
    else
        e = NULL; /* a reload replaced the entry: the reply only gets logged */
    if (!rep) {
        /* The connection went: the script ran or not. The slot stays due; sending it
         * again is safe, the claim answers "already enqueued" if it ran. */
    } else if (rep->type == REDIS_REPLY_INTEGER) {
        sched_log_result(r, rep->integer);
        if (e)
            sched_count(e, rep->integer);
        if (e && e->due == r->slot)
            e->due = -1;
    } else {
        LOG(LOG_WARN, "schedule: Redis refused the slot; trying again", "schedule=%s error=%s",
            r->name,
            log_q(q, sizeof q, rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply",
                  rep->type == REDIS_REPLY_ERROR ? rep->len : 16));
        rc_note_error(s->rc, rep);
        if (e) {
            e->retry_at = sched_now(s) + SCHED_RETRY_S;
            e->st.errors++;
        }
    }
    sched_req_free(r);
    sched_tick(s, sched_now(s));
}

/* Builds the slot's envelope and sends the script call; 0, or -1 (not sent). */
static int sched_send(struct sched *s, struct sched_entry *e, int late)
{
    char k_claim[512], k_last[512], k_queue[512], slot[24], ttl[16], err[256];
    struct sched_req *r = calloc(1, sizeof *r);
    stj_job *j = stj_job_new(e->type);
    char *env = NULL;
    size_t env_len = 0;
    int rc = r && j ? 0 : -1;

    if (rc == 0 && (stj_job_set_queue(j, e->queue) != 0 ||
                    stj_job_set_args_msgpack(j, e->args, e->args_len, err, sizeof err) != 0 ||
                    stj_job_encode(j, &env, &env_len) != 0))
        rc = -1;
    if (rc == 0) {
        r->s = s;
        r->slot = e->due;
        snprintf(r->jid, sizeof r->jid, "%s", stj_job_jid(j));
        r->name = strdup(e->name);
        r->type = strdup(e->type);
        r->queue = strdup(e->queue);
        rc = r->name && r->type && r->queue ? 0 : -1;
    }
    if (rc == 0) {
        snprintf(k_claim, sizeof k_claim, "%s:schedule:%s:%" PRId64, s->prefix, e->name, e->due);
        snprintf(k_last, sizeof k_last, "%s:schedule:%s:last", s->prefix, e->name);
        snprintf(k_queue, sizeof k_queue, "%s:queue:%s", s->prefix, e->queue);
        snprintf(slot, sizeof slot, "%" PRId64, e->due);
        snprintf(ttl, sizeof ttl, "%d", SCHED_CLAIM_TTL_S);
        const char *argv[] = {"EVALSHA", s->sha, "3", k_claim, k_last,          k_queue,
                              slot,      r->jid, ttl, env,     late ? "1" : "0"};
        size_t lens[11];
        for (int i = 0; i < 11; i++)
            lens[i] = i == 9 ? env_len : strlen(argv[i]);
        rc = rc_cmd(s->rc, sched_on_reply, r, 11, argv, lens);
    }
    free(env);
    stj_job_free(j);
    if (rc != 0) {
        if (r)
            sched_req_free(r);
        return -1;
    }
    s->inflight++;
    e->sent = e->due;
    return 0;
}

static void sched_on_load(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct sched *s = privdata;
    redisReply *rep = reply;
    char q[300];

    (void)ac;
    s->inflight--;
    if (s->closing || !rep)
        return;
    if (rep->type != REDIS_REPLY_STRING || rep->len != 40) {
        LOG(LOG_ERROR, "schedule: cannot load the script", "error=%s",
            log_q(q, sizeof q, rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply",
                  rep->type == REDIS_REPLY_ERROR ? rep->len : 16));
        return; /* Redis refuses scripts: the next reconnect tries again */
    }
    memcpy(s->sha, rep->str, 40);
    s->sha[40] = '\0';
    s->sha_ready = 1;
    sched_tick(s, sched_now(s));
}

static void sched_on_redis(struct rconn *rc, int up, void *ud)
{
    struct sched *s = ud;
    const char *argv[] = {"SCRIPT", "LOAD", scr_src_schedule};

    s->sha_ready = 0;
    if (!up || s->n == 0)
        return;
    if (rc_cmd(rc, sched_on_load, s, 3, argv, NULL) == 0)
        s->inflight++;
}

static int sched_connect(struct sched *s, const struct config *cfg)
{
    struct rurl url;
    char err[256];

    if (rurl_parse(cfg->redis_url, &url, err, sizeof err) != 0) {
        LOG(LOG_ERROR, "schedule: no scheduler: bad Redis URL", NULL);
        return -1;
    }
    s->sha_ready = 0;
    s->url = strdup(cfg->redis_url);
    s->rc = s->url ? rc_new(s->loop, &url, "sched", sched_on_redis, s) : NULL;
    explicit_bzero(&url, sizeof url);
    return s->rc ? 0 : -1;
}

/* ---- timing ---- */

static void sched_arm(struct sched *s)
{
    int64_t wake = -1;

    if (s->clock || s->closing)
        return;
    for (int i = 0; i < s->n; i++) {
        const struct sched_entry *e = &s->e[i];
        if (e->disabled)
            continue;
        if (e->next >= 0 && (wake < 0 || e->next < wake))
            wake = e->next;
        if (e->due >= 0 && e->sent < 0 && e->retry_at >= 0 && (wake < 0 || e->retry_at < wake))
            wake = e->retry_at;
    }
    ev_periodic_stop(s->loop, &s->wake);
    if (wake < 0)
        return;
    ev_periodic_set(&s->wake, (ev_tstamp)wake, 0, 0);
    ev_periodic_start(s->loop, &s->wake);
}

static void sched_on_wake(struct ev_loop *loop, ev_periodic *w, int revents)
{
    (void)loop;
    (void)revents;
    sched_tick(w->data, sched_now(w->data));
}

/* Sends the entry's due slot if it may go now. */
static void sched_try(struct sched *s, struct sched_entry *e, int64_t now)
{
    char slot[32];
    int late;

    if (e->due < 0 || e->sent >= 0 || e->disabled)
        return;
    late = now - e->due > SCHED_GRACE_S;
    if (late && !e->catch_up) {
        LOG(LOG_WARN, "schedule slot missed; skipped (catch_up = false)",
            "schedule=%s slot=%s late_s=%" PRId64, e->name, sched_iso(e->due, slot), now - e->due);
        if (!e->due_needs_history)
            e->st.missed++; /* not the slot looked at on start: it may well have run */
        e->due = -1;
        return;
    }
    if (e->retry_at >= 0 && now < e->retry_at)
        return;
    if (!sched_ready(s) || sched_send(s, e, late || e->due_needs_history) != 0) {
        /* Said once per slot, and not for the one looked at when starting, which
         * waits for the first connection as a matter of course. */
        if (e->warned != e->due && !e->due_needs_history)
            LOG(LOG_WARN, "schedule: Redis is down; the slot waits for it",
                "schedule=%s slot=%s grace_s=%d catch_up=%d", e->name, sched_iso(e->due, slot),
                SCHED_GRACE_S, e->catch_up);
        e->warned = e->due;
        return;
    }
    e->retry_at = -1;
}

void sched_tick(struct sched *s, int64_t now)
{
    char slot[32];

    if (s->closing)
        return;
    for (int i = 0; i < s->n; i++) {
        struct sched_entry *e = &s->e[i];
        if (e->disabled)
            continue;
        if (e->next >= 0 && e->next <= now) {
            int64_t latest = cron_prev(&e->cron, now);
            if (e->due >= 0 && e->due != e->sent) {
                LOG(LOG_WARN, "schedule slot never got through; a later one replaces it",
                    "schedule=%s slot=%s", e->name, sched_iso(e->due, slot));
                e->st.missed += !e->due_needs_history;
            }
            e->due = latest;
            e->due_needs_history = 0;
            e->retry_at = -1;
            e->next = cron_next(&e->cron, now);
        }
        sched_try(s, e, now);
    }
    sched_arm(s);
}

int sched_stats(const struct sched *s, struct sched_stat *out, int max)
{
    for (int i = 0; s && i < s->n && i < max; i++) {
        out[i] = s->e[i].st;
        out[i].name = s->e[i].name;
        out[i].next = s->e[i].disabled ? -1 : s->e[i].next;
    }
    return s ? s->n : 0;
}

/* ---- life cycle ---- */

static int sched_load_entries(const struct config *cfg, struct sched_entry **out)
{
    struct sched_entry *e = calloc((size_t)cfg->nschedule + 1, sizeof *e);

    if (!e)
        return -1;
    for (int i = 0; i < cfg->nschedule; i++) {
        if (sched_entry_load(&e[i], cfg, &cfg->schedule[i], cfg->max_job_bytes) != 0) {
            sched_entries_free(e, cfg->nschedule);
            return -1;
        }
    }
    *out = e;
    return 0;
}

struct sched *sched_new(struct ev_loop *loop, const struct config *cfg, sched_clock_fn *clock,
                        void *clock_ud)
{
    struct sched *s = calloc(1, sizeof *s);
    int64_t now;

    if (!s)
        return NULL;
    s->loop = loop;
    s->clock = clock;
    s->clock_ud = clock_ud;
    ev_periodic_init(&s->wake, sched_on_wake, 0, 0, 0);
    s->wake.data = s;
    s->prefix = strdup(cfg->redis_prefix);
    if (!s->prefix || sched_load_entries(cfg, &s->e) != 0) {
        free(s->prefix);
        free(s);
        return NULL;
    }
    s->n = cfg->nschedule;
    now = sched_now(s);
    for (int i = 0; i < s->n; i++)
        sched_entry_start(&s->e[i], now);
    if (sched_connect(s, cfg) != 0) {
        sched_free(s);
        return NULL;
    }
    LOG(LOG_INFO, "scheduler started", "entries=%d grace_s=%d", s->n, SCHED_GRACE_S);
    sched_tick(s, now);
    return s;
}

/* A reloaded entry keeps its place in time when its slots are the same. */
static void sched_entry_carry(struct sched_entry *to, const struct sched_entry *from, int64_t now)
{
    if (from)
        to->st = from->st; /* the same name: its counters go on */
    if (from && strcmp(from->cron_text, to->cron_text) == 0 && from->catch_up == to->catch_up &&
        !from->disabled) {
        to->next = from->next;
        to->due = from->due;
        to->sent = from->sent;
        to->due_needs_history = from->due_needs_history;
        to->retry_at = from->retry_at;
        to->warned = from->warned;
        return;
    }
    sched_entry_start(to, now);
}

int sched_reload(struct sched *s, const struct config *cfg)
{
    struct sched_entry *e;
    char *prefix = strdup(cfg->redis_prefix);
    int64_t now = sched_now(s);

    if (!prefix || sched_load_entries(cfg, &e) != 0) {
        free(prefix);
        return -1;
    }
    for (int i = 0; i < cfg->nschedule; i++)
        sched_entry_carry(&e[i], sched_find(s, e[i].name), now);
    sched_entries_free(s->e, s->n);
    s->e = e;
    s->n = cfg->nschedule;
    if (strcmp(prefix, s->prefix) != 0 || strcmp(s->url, cfg->redis_url) != 0) {
        /* Other keys or another Redis: a reply due there says nothing here. */
        for (int i = 0; i < s->n; i++)
            s->e[i].sent = -1;
    }
    free(s->prefix);
    s->prefix = prefix;
    if (strcmp(s->url, cfg->redis_url) != 0) {
        s->closing = 1; /* the old connection's replies run now, with NULL: only freed */
        rc_free(s->rc);
        s->closing = 0;
        free(s->url);
        s->url = NULL;
        s->rc = NULL;
        if (sched_connect(s, cfg) != 0)
            LOG(LOG_ERROR, "schedule: no Redis after the reload; slots wait", NULL);
    } else if (rc_is_up(s->rc) && !s->sha_ready && s->n > 0) {
        sched_on_redis(s->rc, 1, s); /* it had no entries, so it never loaded the script */
    }
    LOG(LOG_INFO, "scheduler reloaded", "entries=%d", s->n);
    sched_tick(s, now);
    return 0;
}

int sched_ready(const struct sched *s)
{
    return s && s->sha_ready && rc_is_up(s->rc);
}

int sched_inflight(const struct sched *s)
{
    return s ? s->inflight : 0;
}

void sched_after_fork(struct sched *s)
{
    int fd;

    if (s && (fd = rc_fd(s->rc)) >= 0)
        close(fd);
}

void sched_free(struct sched *s)
{
    if (!s)
        return;
    s->closing = 1;
    ev_periodic_stop(s->loop, &s->wake);
    rc_free(s->rc); /* pending replies run now, with NULL, and free their requests */
    sched_entries_free(s->e, s->n);
    free(s->url);
    free(s->prefix);
    free(s);
}
