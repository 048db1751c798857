/*
 * ops.h - what stellerctl.c shares with its operator verbs in ops.c.
 *
 * stellerctl.c owns the command line: global options, where Redis is, the
 * connection, messages and exit codes. ops.c holds the verbs that look at jobs
 * and move them: dead, retry, queue and workers. A verb gets the run's struct
 * ctl, parses its own options with ctl_next_opt() and connects with
 * ctl_connect(); after that ctl->rc is a blocking hiredis context and
 * ctl->prefix the key prefix, both owned by main() and valid until it returns.
 *
 * Every function here that returns an int returns an enum ctl_exit; the
 * message, if any, is already on stderr.
 */
#ifndef STELLER_CTL_OPS_H
#define STELLER_CTL_OPS_H

#include <getopt.h>
#include <hiredis/hiredis.h>
#include <stdint.h>

#include "config.h"
#include "redisurl.h"
#include "steller/jobs.h"

enum ctl_exit {
    CTL_CONTINUE = -1, /* not an exit code: a verb's parser says "go on" */
    CTL_OK = 0,
    CTL_FAILED = 1, /* not found, or Redis answered with an error */
    CTL_USAGE = 2,
    CTL_UNREACHABLE = 3,
};

/* Long-only option codes, out of the range of short option characters; one list for
 * every verb, so that no two options share a code. */
enum {
    OPT_STOP = 0x100, /* ctl_next_opt(): return ctl->status now */
    OPT_REDIS,
    OPT_PREFIX,
    OPT_QUEUE,
    OPT_ARGS,
    OPT_IN,
    OPT_JID,
    OPT_COUNT,
    OPT_MAX_ATTEMPTS,
    OPT_TRACEPARENT,
    OPT_JSON,
    OPT_WATCH,
    OPT_ITERATIONS,
    OPT_INTERVAL,
    OPT_TYPE,
    OPT_LIMIT,
    OPT_ALL,
    OPT_OLDER_THAN,
    OPT_YES,
};

struct verb;

struct ctl {
    const struct verb *verb; /* the verb being run, NULL while parsing global options */
    int status;              /* exit code to return when ctl_next_opt() says OPT_STOP */

    /* as given on the command line */
    const char *config_path;
    const char *opt_redis;
    const char *opt_prefix;

    /* resolved by ctl_settings() */
    int resolved;
    struct config cfg;
    int have_cfg;
    const char *url;
    const char *url_source; /* where url came from, for messages */
    const char *prefix;
    struct rurl where; /* parsed url: host, port, path, db; password never printed */

    stj_client *client;
    redisContext *rc;
};

/* "stellerctl: <message>" on stderr; returns status. */
int ctl_complain(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The message and the verb's usage line on stderr; returns CTL_USAGE. */
/* ms since the epoch as 2024-06-10T06:13:20Z (with_ms: 06:13:20.123Z), UTC; returns buf. */
char *ctl_fmt_utc(int64_t ms, int with_ms, char *buf, size_t size);

int ctl_usage(const struct ctl *ctl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * getopt_long over the verb's options (NULL-terminated, may be NULL) plus the
 * global ones. Returns the next verb option, -1 when there are no more, or
 * OPT_STOP when the caller should return ctl->status (help, version, error).
 * Arguments that are not options are left from argv[optind] on.
 */
int ctl_next_opt(struct ctl *ctl, int argc, char **argv, const struct option *verb_opts);

/* A whole decimal number in [lo, hi]; 0, or -1 without touching *out. */
int ctl_parse_ll(const char *s, long long lo, long long hi, long long *out);

/* Opens ctl->rc (once): CTL_OK, CTL_USAGE (bad settings), CTL_UNREACHABLE. */
int ctl_connect(struct ctl *ctl);

/* CTL_OK for a usable reply read from ctl->rc; otherwise says why and returns
 * CTL_UNREACHABLE (r is NULL: the connection broke) or CTL_FAILED (an error reply). */
int ctl_reply_status(struct ctl *ctl, const redisReply *r, const char *what);

int64_t ctl_now_ms(void); /* wall clock, ms since the epoch */

/* 1 when el (a P:dead or P:retry entry) is a record whose jid is exactly jid. */
int ctl_record_has_jid(const redisReply *el, const char *jid);

/* The verbs of ops.c, each with the help text of its verbs[] row. */
int cmd_dead(struct ctl *ctl, int argc, char **argv);
int cmd_retry(struct ctl *ctl, int argc, char **argv);
int cmd_queue(struct ctl *ctl, int argc, char **argv);
int cmd_workers(struct ctl *ctl, int argc, char **argv);
int cmd_schedule(struct ctl *ctl, int argc, char **argv);
extern const char dead_help[], retry_help[], queue_help[], workers_help[], schedule_help[];

#endif
