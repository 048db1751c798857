/*
 * rconn.h - one asynchronous Redis connection on a libev loop that survives
 * Redis going away.
 *
 * Wraps a hiredis async context with its libev adapter. On connect it sends
 * AUTH and SELECT when the URL asks, loads the engine's Lua scripts (SCRIPT LOAD,
 * so commands can use EVALSHA), and only then reports the connection up. When
 * the connection drops or cannot be made, it reports down, and tries again
 * with exponential backoff and jitter (100 ms doubling to 5 s).
 *
 * Callbacks follow hiredis: (context, reply, privdata), the reply belongs to
 * hiredis and is freed after the callback returns; a NULL reply means the
 * command's fate is unknown because the connection went away. Every callback
 * runs exactly once.
 */
#ifndef STELLER_RCONN_H
#define STELLER_RCONN_H

#include <ev.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "redisurl.h"

/* The engine's scripts, in worker/scripts/. */
enum scr_id {
    SCR_FETCH,
    SCR_ACK,
    SCR_RETRY,
    SCR_DEAD,
    SCR_REQUEUE,
    SCR_PROMOTE,
    SCR_UNREGISTER,
    SCR_COUNT
};

struct rconn;

/* up is 1 when the connection is ready for commands, 0 when it went down. */
typedef void rc_state_fn(struct rconn *rc, int up, void *ud);

/* name labels log lines ("cmd", "block"). url is copied. */
struct rconn *rc_new(struct ev_loop *loop, const struct rurl *url, const char *name,
                     rc_state_fn *on_state, void *ud);

/* Disconnects; pending callbacks run with a NULL reply. */
void rc_free(struct rconn *rc);

int rc_is_up(const struct rconn *rc);

/* The socket, or -1 when down: a forked child closes its copy (never used there). */
int rc_fd(const struct rconn *rc);

/* Sends a command; returns 0, or -1 when the connection is not up (fn not called). */
int rc_cmd(struct rconn *rc, redisCallbackFn *fn, void *privdata, int argc, const char **argv,
           const size_t *argvlen);

/* Looks at an error reply: NOSCRIPT (SCRIPT FLUSH, a failover) drops the
 * connection so that the reconnect loads the scripts again. */
void rc_note_error(struct rconn *rc, const redisReply *reply);

/* The SHA1 of a loaded script, valid while the connection is up. */
const char *rc_sha(const struct rconn *rc, enum scr_id id);

#endif
