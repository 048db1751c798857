/*
 * rconn.c - a hiredis async connection that reconnects, on the worker's loop.
 *
 * States: DOWN (a reconnect timer is armed), CONNECTING (TCP connect, then AUTH,
 * SELECT and SCRIPT LOAD are pipelined), UP. Only UP accepts commands from the
 * engine; the scripts are loaded on every connect because a restarted Redis has
 * an empty script cache. hiredis frees its context after the disconnect
 * callback, so we drop our pointer there and never touch it again.
 */
#include "rconn.h"

#include <hiredis/adapters/libev.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

extern const char scr_src_fetch[], scr_src_ack[], scr_src_retry[], scr_src_dead[],
    scr_src_requeue[], scr_src_promote[], scr_src_unregister[];

static const char *const scr_sources[SCR_COUNT] = {
    [SCR_FETCH] = scr_src_fetch,       [SCR_ACK] = scr_src_ack,
    [SCR_RETRY] = scr_src_retry,       [SCR_DEAD] = scr_src_dead,
    [SCR_REQUEUE] = scr_src_requeue,   [SCR_PROMOTE] = scr_src_promote,
    [SCR_UNREGISTER] = scr_src_unregister,
};

enum rc_state { RC_DOWN, RC_CONNECTING, RC_UP };

struct rconn {
    struct ev_loop *loop;
    struct rurl url;
    char name[16];
    rc_state_fn *on_state;
    void *ud;
    redisAsyncContext *ac;
    enum rc_state state;
    int failures;     /* consecutive failed connects, for the backoff */
    int loading;      /* setup replies still expected */
    int setup_failed;
    ev_timer retry;
    char sha[SCR_COUNT][41];
};

static void rc_connect(struct rconn *rc);

static void rc_schedule(struct rconn *rc)
{
    double delay = 0.1;
    for (int i = 0; i < rc->failures && delay < 5.0; i++)
        delay *= 2;
    if (delay > 5.0)
        delay = 5.0;
    delay *= 0.5 + (double)rand() / RAND_MAX / 2; /* jitter: workers must not reconnect in step */
    rc->failures++;
    ev_timer_set(&rc->retry, delay, 0);
    ev_timer_start(rc->loop, &rc->retry);
}

static void rc_went_down(struct rconn *rc, const char *why)
{
    int was_up = rc->state == RC_UP;
    rc->state = RC_DOWN;
    rc->ac = NULL;
    if (was_up || rc->failures == 0)
        LOG(LOG_WARN, "redis connection down", "conn=%s reason=\"%s\"", rc->name, why);
    rc_schedule(rc);
    if (was_up)
        rc->on_state(rc, 0, rc->ud);
}

static void rc_on_retry(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    rc_connect(t->data);
}

static void rc_on_disconnect(const redisAsyncContext *ac, int status)
{
    struct rconn *rc = ac->data;
    (void)status;
    if (!rc)
        return; /* rc_free() detached us */
    rc_went_down(rc, ac->errstr[0] ? ac->errstr : "closed");
}

static void rc_on_connect(const redisAsyncContext *ac, int status)
{
    struct rconn *rc = ac->data;
    if (!rc || status == REDIS_OK)
        return;
    rc_went_down(rc, ac->errstr[0] ? ac->errstr : "connect failed");
}

static void rc_setup_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    struct rconn *rc = ac->data;
    redisReply *reply = r;
    long id = (long)privdata;
    if (!rc || !reply)
        return;
    if (reply->type == REDIS_REPLY_ERROR) {
        /* Never echo AUTH's argument; the error text from Redis carries no secret. */
        char q[512];
        LOG(LOG_ERROR, "redis setup failed", "conn=%s error=%s", rc->name,
            log_q(q, sizeof(q), reply->str, reply->len));
        rc->setup_failed = 1;
    } else if (id >= 0 && reply->type == REDIS_REPLY_STRING && reply->len == 40) {
        memcpy(rc->sha[id], reply->str, 40);
        rc->sha[id][40] = '\0';
    }
    if (--rc->loading > 0)
        return;
    if (rc->setup_failed) {
        rc->setup_failed = 0;
        redisAsyncDisconnect(ac);
        return;
    }
    if (rc->failures > 0)
        LOG(LOG_INFO, "redis connection up", "conn=%s", rc->name);
    rc->failures = 0;
    rc->state = RC_UP;
    rc->on_state(rc, 1, rc->ud);
}

static void rc_send_setup(struct rconn *rc)
{
    char db[16];
    rc->loading = 0;
    if (rc->url.password[0]) {
        const char *argv[3] = {"AUTH", rc->url.user, rc->url.password};
        int argc = rc->url.user[0] ? 3 : 2;
        if (argc == 2)
            argv[1] = rc->url.password;
        redisAsyncCommandArgv(rc->ac, rc_setup_reply, (void *)-1L, argc, argv, NULL);
        rc->loading++;
    }
    if (rc->url.db) {
        snprintf(db, sizeof(db), "%d", rc->url.db);
        redisAsyncCommand(rc->ac, rc_setup_reply, (void *)-1L, "SELECT %s", db);
        rc->loading++;
    }
    for (long i = 0; i < SCR_COUNT; i++) {
        redisAsyncCommand(rc->ac, rc_setup_reply, (void *)i, "SCRIPT LOAD %s", scr_sources[i]);
        rc->loading++;
    }
}

static void rc_connect(struct rconn *rc)
{
    redisAsyncContext *ac;
    if (rc->url.path[0])
        ac = redisAsyncConnectUnix(rc->url.path);
    else
        ac = redisAsyncConnect(rc->url.host, rc->url.port);
    if (!ac) {
        rc_went_down(rc, "out of memory");
        return;
    }
    if (ac->err) {
        char why[128];
        snprintf(why, sizeof(why), "%s", ac->errstr);
        redisAsyncFree(ac);
        rc_went_down(rc, why);
        return;
    }
    ac->data = rc;
    rc->ac = ac;
    rc->state = RC_CONNECTING;
    redisEnableKeepAlive(&ac->c);
    redisLibevAttach(rc->loop, ac);
    redisAsyncSetConnectCallback(ac, rc_on_connect);
    redisAsyncSetDisconnectCallback(ac, rc_on_disconnect);
    rc_send_setup(rc);
}

struct rconn *rc_new(struct ev_loop *loop, const struct rurl *url, const char *name,
                     rc_state_fn *on_state, void *ud)
{
    struct rconn *rc = calloc(1, sizeof(*rc));
    if (!rc)
        return NULL;
    rc->loop = loop;
    rc->url = *url;
    snprintf(rc->name, sizeof(rc->name), "%s", name);
    rc->on_state = on_state;
    rc->ud = ud;
    ev_timer_init(&rc->retry, rc_on_retry, 0, 0);
    rc->retry.data = rc;
    rc_connect(rc);
    return rc;
}

void rc_free(struct rconn *rc)
{
    if (!rc)
        return;
    ev_timer_stop(rc->loop, &rc->retry);
    rc->state = RC_DOWN; /* callbacks run by redisAsyncFree must not send */
    if (rc->ac) {
        redisAsyncContext *ac = rc->ac;
        rc->ac = NULL;
        ac->data = NULL;
        redisAsyncFree(ac);
    }
    free(rc);
}

int rc_fd(const struct rconn *rc)
{
    return rc && rc->ac ? rc->ac->c.fd : -1;
}

int rc_is_up(const struct rconn *rc)
{
    return rc && rc->state == RC_UP;
}

int rc_cmd(struct rconn *rc, redisCallbackFn *fn, void *privdata, int argc, const char **argv,
           const size_t *argvlen)
{
    if (!rc_is_up(rc))
        return -1;
    if (redisAsyncCommandArgv(rc->ac, fn, privdata, argc, argv, argvlen) != REDIS_OK)
        return -1;
    return 0;
}

void rc_note_error(struct rconn *rc, const redisReply *reply)
{
    if (!rc || !reply || reply->type != REDIS_REPLY_ERROR || rc->state != RC_UP)
        return;
    if (strncmp(reply->str, "NOSCRIPT", 8) != 0)
        return;
    LOG(LOG_WARN, "redis lost our scripts; reconnecting to load them", "conn=%s", rc->name);
    redisAsyncDisconnect(rc->ac);
}

const char *rc_sha(const struct rconn *rc, enum scr_id id)
{
    return rc->sha[id];
}
