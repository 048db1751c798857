/*
 * stellerctl.c - the ops command line for steller-worker.
 *
 *   stellerctl [GLOBAL OPTIONS] VERB [ARGS]
 *
 * Each verb is one row of the verbs[] table (name, function, usage, help) and one
 * cmd_<verb>() function; adding a verb (dead, retry, queue, workers, migrate,
 * sweep) adds a row and a function, nothing else. A verb parses its own options
 * with ctl_next_opt(), which also accepts the global ones anywhere on the line, so
 * `stellerctl stats --prefix x` works as well as `stellerctl --prefix x stats`.
 *
 * Where Redis is: --redis URL, else (with -c FILE) the file's redis.url, which
 * REDIS_URL overrides as it does for the daemon (config.c), else REDIS_URL, else
 * redis://127.0.0.1:6379/0. The prefix: --prefix, else the file's redis.prefix,
 * else "steller". The connection is opened only by verbs that need it, so --help
 * works anywhere.
 *
 * The verbs that look at jobs and move them (dead, retry, queue, workers) live in
 * ops.c; ops.h is what the two files share (struct ctl, exit codes, option codes,
 * the helpers for options, messages and replies).
 *
 * Jobs are pushed with libstellerjobs (include/steller/jobs.h), the same library
 * producers link. Everything else reads keys directly with hiredis, pipelining
 * the commands of one verb so that a stats call costs a few round trips.
 *
 * Exit codes: 0 ok, 1 not found or Redis refused a command, 2 usage or config
 * error, 3 Redis unreachable (or the connection broke).
 */
#include <errno.h>
#include <getopt.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "envelope.h"
#include "migrate.h"
#include "redisurl.h"
#include "ops.h"
#include "scheduler.h"
#include "steller/jobs.h"
#include "sweep.h"

#define DEFAULT_URL "redis://127.0.0.1:6379/0"
#define DEFAULT_PREFIX "steller"
#define MAX_OPTS 32
#define MAX_COUNT 1000000000LL
#define DEFAULT_MAX_JOB_BYTES 262144 /* max_job_bytes when no config file says otherwise */

struct verb {
    const char *name;
    int (*fn)(struct ctl *ctl, int argc, char **argv);
    const char *usage;   /* what follows the verb's name */
    const char *summary; /* one line, for the global --help */
    const char *help;    /* the rest of `stellerctl VERB --help` */
};

static const struct verb verbs[];

/* ---- messages ---- */

int ctl_complain(int status, const char *fmt, ...)
{
    va_list ap;

    fputs("stellerctl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return status;
}

int ctl_usage(const struct ctl *ctl, const char *fmt, ...)
{
    va_list ap;

    fputs("stellerctl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    if (ctl->verb)
        fprintf(stderr, "\nusage: stellerctl %s %s\n", ctl->verb->name, ctl->verb->usage);
    else
        fputs("\nTry 'stellerctl --help'.\n", stderr);
    return CTL_USAGE;
}

static const char global_help[] =
    "Global options (before or after the verb):\n"
    "  -c, --config FILE   read redis.url and redis.prefix from the daemon's config file\n"
    "      --redis URL     Redis to use (overrides the file and REDIS_URL)\n"
    "      --prefix P      key prefix (overrides the file; default steller)\n"
    "  -h, --help          show help (for a verb: stellerctl VERB --help)\n"
    "  -V, --version       print the version\n"
    "\n"
    "Redis is found from --redis, else the config file's redis.url (REDIS_URL overrides\n"
    "it, as for the daemon), else REDIS_URL, else redis://127.0.0.1:6379/0.\n"
    "\n"
    "Exit codes: 0 ok, 1 not found or Redis refused a command, 2 usage or config error,\n"
    "3 Redis unreachable.\n";

static void print_global_help(FILE *out)
{
    fputs("usage: stellerctl [GLOBAL OPTIONS] VERB [ARGS]\n\nVerbs:\n", out);
    for (const struct verb *v = verbs; v->name; v++)
        fprintf(out, "  %-10s %s\n", v->name, v->summary);
    fprintf(out, "\n%s", global_help);
}

static void print_verb_help(const struct verb *v, FILE *out)
{
    fprintf(out, "usage: stellerctl %s %s\n\n%s\n%s", v->name, v->usage, v->help, global_help);
}

/* ---- option parsing ---- */

static const struct option global_opts[] = {
    {"config", required_argument, NULL, 'c'},
    {"redis", required_argument, NULL, OPT_REDIS},
    {"prefix", required_argument, NULL, OPT_PREFIX},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, 'V'},
};
#define NGLOBAL (sizeof global_opts / sizeof global_opts[0])

/* Handles a global option, or getopt's '?' and ':' for the bad_option; returns 0, or
 * OPT_STOP with ctl->status set. */
static int global_opt(struct ctl *ctl, int opt, const char *bad_option)
{
    switch (opt) {
    case 'c': ctl->config_path = optarg; return 0;
    case OPT_REDIS: ctl->opt_redis = optarg; return 0;
    case OPT_PREFIX: ctl->opt_prefix = optarg; return 0;
    case 'h':
        if (ctl->verb)
            print_verb_help(ctl->verb, stdout);
        else
            print_global_help(stdout);
        ctl->status = CTL_OK;
        return OPT_STOP;
    case 'V':
        printf("stellerctl %s\n", STELLER_VERSION);
        ctl->status = CTL_OK;
        return OPT_STOP;
    case ':':
        ctl->status = ctl_usage(ctl, "option '%s' needs a value", bad_option);
        return OPT_STOP;
    default:
        /* '?': unknown here, though maybe an option of another verb */
        ctl->status = ctl_usage(ctl, "unknown option '%s'", bad_option);
        return OPT_STOP;
    }
}

/*
 * getopt_long over the verb's options (NULL-terminated, may be NULL) plus the
 * global ones. Returns the next verb option, -1 when there are no more, or
 * OPT_STOP when the caller should return ctl->status (help, version, error).
 */
int ctl_next_opt(struct ctl *ctl, int argc, char **argv, const struct option *verb_opts)
{
    struct option all[MAX_OPTS];
    char bad[8];
    size_t n = 0;
    int opt;

    for (; verb_opts && verb_opts[n].name && n < MAX_OPTS - NGLOBAL - 1; n++)
        all[n] = verb_opts[n];
    memcpy(all + n, global_opts, sizeof global_opts);
    memset(all + n + NGLOBAL, 0, sizeof all[0]);
    opterr = 0; /* our messages say "stellerctl", getopt's would say the verb's name */
    for (;;) {
        /* Before the verb, "+" stops at its name; after, options may follow arguments.
         * The ':' makes a missing value ':' rather than '?'. */
        opt = getopt_long(argc, argv, ctl->verb ? ":c:hV" : "+:c:hV", all, NULL);
        if (opt == -1)
            return -1;
        for (size_t i = 0; i < n; i++) {
            if (verb_opts[i].val == opt)
                return opt;
        }
        /* optopt names a bad short option; a long one is only in argv. */
        snprintf(bad, sizeof bad, "-%c", optopt);
        if (global_opt(ctl, opt, optopt > 0 && optopt < 128 ? bad : argv[optind - 1]) == OPT_STOP)
            return OPT_STOP;
    }
}

int ctl_parse_ll(const char *s, long long lo, long long hi, long long *out)
{
    char *end;
    long long v;

    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

/* ---- connection ---- */

int64_t ctl_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static const char *nonempty_env(const char *name)
{
    const char *v = getenv(name);

    return v && v[0] ? v : NULL;
}

/* Loads the config file if any and decides which Redis and prefix to use; once. */
static int ctl_settings(struct ctl *ctl)
{
    char err[512];

    if (ctl->resolved)
        return CTL_OK;
    if (ctl->config_path) {
        if (cfg_load(&ctl->cfg, ctl->config_path, err, sizeof err) != 0)
            return ctl_complain(CTL_USAGE, "%s", err);
        ctl->have_cfg = 1;
    }
    if (ctl->opt_redis) {
        ctl->url = ctl->opt_redis;
        ctl->url_source = "--redis";
    } else if (ctl->have_cfg) {
        ctl->url = ctl->cfg.redis_url;
        ctl->url_source = nonempty_env("REDIS_URL") ? "REDIS_URL" : "redis.url";
    } else if (nonempty_env("REDIS_URL")) {
        ctl->url = getenv("REDIS_URL");
        ctl->url_source = "REDIS_URL";
    } else {
        ctl->url = DEFAULT_URL;
        ctl->url_source = "the default";
    }
    ctl->prefix = ctl->opt_prefix ? ctl->opt_prefix
                  : ctl->have_cfg ? ctl->cfg.redis_prefix
                                  : DEFAULT_PREFIX;
    if (!ctl->prefix[0])
        return ctl_complain(CTL_USAGE, "the key prefix must not be empty");
    if (rurl_parse(ctl->url, &ctl->where, err, sizeof err) < 0)
        return ctl_complain(CTL_USAGE, "bad Redis URL in %s: %s", ctl->url_source, err);
    explicit_bzero(ctl->where.password, sizeof ctl->where.password);
    ctl->resolved = 1;
    return CTL_OK;
}

int ctl_connect(struct ctl *ctl)
{
    char err[512];
    int rc = ctl_settings(ctl);

    if (rc != CTL_OK || ctl->client)
        return rc;
    /* The URL was parsed above, so any failure here is Redis's, not the user's. */
    ctl->client = stj_connect(ctl->url, ctl->prefix, err, sizeof err);
    if (!ctl->client)
        return ctl_complain(CTL_UNREACHABLE, "%s", err);
    ctl->rc = stj_client_redis(ctl->client);
    return CTL_OK;
}

/* Where Redis is, for messages and headers: host:port/db or the socket path. */
static void describe_redis(const struct ctl *ctl, char *buf, size_t size)
{
    if (ctl->where.path[0])
        snprintf(buf, size, "%s db %d", ctl->where.path, ctl->where.db);
    else
        snprintf(buf, size, "%s:%d db %d", ctl->where.host, ctl->where.port, ctl->where.db);
}

/* The exit code for an enum stj_err from libstellerjobs. */
static int status_of(int code)
{
    switch (code) {
    case STJ_OK: return CTL_OK;
    case STJ_E_INVAL: return CTL_USAGE;
    case STJ_E_CONN: return CTL_UNREACHABLE;
    default: return CTL_FAILED;
    }
}

/* ---- Redis reading helpers ---- */

/* Checks one reply read from ctl->rc; prints why it is unusable. */
int ctl_reply_status(struct ctl *ctl, const redisReply *r, const char *what)
{
    char where[400];

    if (r && r->type != REDIS_REPLY_ERROR)
        return CTL_OK;
    describe_redis(ctl, where, sizeof where);
    if (!r)
        return ctl_complain(CTL_UNREACHABLE, "Redis at %s: %s: %s", where, what,
                            ctl->rc->errstr[0] ? ctl->rc->errstr : "connection lost");
    return ctl_complain(CTL_FAILED, "Redis at %s: %s: %s", where, what, r->str);
}

/* Reads the next pipelined reply into *out; the caller frees it. */
static int read_reply(struct ctl *ctl, redisReply **out, const char *what)
{
    void *r = NULL;

    if (redisGetReply(ctl->rc, &r) != REDIS_OK)
        r = NULL;
    *out = r;
    return ctl_reply_status(ctl, r, what);
}

/* An integer reply, or a counter stored as a string (nil counts as 0). */
static long long reply_number(const redisReply *r)
{
    if (r->type == REDIS_REPLY_INTEGER)
        return r->integer;
    if (r->type == REDIS_REPLY_STRING)
        return strtoll(r->str, NULL, 10);
    return 0;
}

/* Reads n pipelined replies as numbers into out[0..n). */
static int read_numbers(struct ctl *ctl, long long *out, size_t n, const char *what)
{
    int rc = CTL_OK;

    for (size_t i = 0; i < n; i++) {
        redisReply *r;
        int s = read_reply(ctl, &r, what);

        if (s == CTL_OK && r)
            out[i] = reply_number(r);
        else if (rc == CTL_OK)
            rc = s;
        freeReplyObject(r);
        if (s == CTL_UNREACHABLE)
            break;
    }
    return rc;
}

/* A growable list of strings, each owned by the list. */
struct strlist {
    char **v;
    size_t n, cap;
};

static int strlist_find(const struct strlist *l, const char *s)
{
    for (size_t i = 0; i < l->n; i++) {
        if (strcmp(l->v[i], s) == 0)
            return (int)i;
    }
    return -1;
}

static int strlist_add(struct strlist *l, const char *s, size_t len)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        char **v = realloc(l->v, cap * sizeof *v);
        if (!v)
            return -1;
        l->v = v;
        l->cap = cap;
    }
    if (!(l->v[l->n] = strndup(s, len)))
        return -1;
    l->n++;
    return 0;
}

static void strlist_free(struct strlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof *l);
}

/* prefix + middle + "*" as a SCAN pattern, with glob characters in the prefix escaped. */
static char *scan_pattern(const char *prefix, const char *middle)
{
    char *pat = malloc(2 * strlen(prefix) + strlen(middle) + 2), *p = pat;

    if (!pat)
        return NULL;
    for (const char *s = prefix; *s; s++) {
        if (strchr("*?[]\\", *s))
            *p++ = '\\';
        *p++ = *s;
    }
    sprintf(p, "%s*", middle);
    return pat;
}

/*
 * Every key P<middle>* of the given Redis type, appended to out without the
 * P<middle> part. SCAN may return a key twice; duplicates are dropped.
 */
static int scan_names(struct ctl *ctl, const char *middle, const char *type, struct strlist *out)
{
    size_t skip = strlen(ctl->prefix) + strlen(middle);
    char *pat = scan_pattern(ctl->prefix, middle);
    char cursor[32] = "0";
    int rc = CTL_OK;

    if (!pat)
        return ctl_complain(CTL_FAILED, "out of memory");
    do {
        redisReply *r =
            redisCommand(ctl->rc, "SCAN %s MATCH %s COUNT 1000 TYPE %s", cursor, pat, type);

        rc = ctl_reply_status(ctl, r, "SCAN");
        if (rc == CTL_OK && (r->type != REDIS_REPLY_ARRAY || r->elements != 2))
            rc = ctl_complain(CTL_FAILED, "SCAN: unexpected reply");
        for (size_t i = 0; rc == CTL_OK && i < r->element[1]->elements; i++) {
            const redisReply *k = r->element[1]->element[i];
            if (k->len > skip && strlist_find(out, k->str + skip) < 0 &&
                strlist_add(out, k->str + skip, k->len - skip) < 0)
                rc = ctl_complain(CTL_FAILED, "out of memory");
        }
        if (rc == CTL_OK)
            snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
        freeReplyObject(r);
    } while (rc == CTL_OK && strcmp(cursor, "0") != 0);
    free(pat);
    return rc;
}

/* ---- enqueue ---- */

struct enqueue_opts {
    const char *type, *queue, *args, *jid, *traceparent;
    double in;              /* seconds; < 0: enqueue now */
    long long count;        /* 0: not given */
    long long max_attempts; /* -1: absent */
};

/* Returns CTL_CONTINUE, or the exit code (help, version, usage error). */
static int enqueue_parse(struct ctl *ctl, int argc, char **argv, struct enqueue_opts *o)
{
    static const struct option opts[] = {
        {"queue", required_argument, NULL, OPT_QUEUE},
        {"args", required_argument, NULL, OPT_ARGS},
        {"in", required_argument, NULL, OPT_IN},
        {"jid", required_argument, NULL, OPT_JID},
        {"count", required_argument, NULL, OPT_COUNT},
        {"max-attempts", required_argument, NULL, OPT_MAX_ATTEMPTS},
        {"traceparent", required_argument, NULL, OPT_TRACEPARENT},
        {NULL, 0, NULL, 0},
    };
    char *end;
    int opt;

    *o = (struct enqueue_opts){.in = -1, .max_attempts = -1};
    while ((opt = ctl_next_opt(ctl, argc, argv, opts)) != -1) {
        switch (opt) {
        case OPT_QUEUE: o->queue = optarg; break;
        case OPT_ARGS: o->args = optarg; break;
        case OPT_JID: o->jid = optarg; break;
        case OPT_TRACEPARENT: o->traceparent = optarg; break;
        case OPT_IN:
            o->in = strtod(optarg, &end);
            if (end == optarg || *end || !isfinite(o->in) || o->in < 0 || o->in > 1e10)
                return ctl_usage(ctl, "--in wants seconds >= 0, got '%s'", optarg);
            break;
        case OPT_COUNT:
            if (ctl_parse_ll(optarg, 1, MAX_COUNT, &o->count) < 0)
                return ctl_usage(ctl, "--count wants 1..%lld, got '%s'", MAX_COUNT, optarg);
            break;
        case OPT_MAX_ATTEMPTS:
            if (ctl_parse_ll(optarg, 1, INT_MAX, &o->max_attempts) < 0)
                return ctl_usage(ctl, "--max-attempts wants 1..%d, got '%s'", INT_MAX, optarg);
            break;
        default: return ctl->status;
        }
    }
    if (optind >= argc)
        return ctl_usage(ctl, "enqueue needs a job TYPE");
    if (optind + 1 < argc)
        return ctl_usage(ctl, "unexpected argument '%s'", argv[optind + 1]);
    o->type = argv[optind];
    if (!o->type[0])
        return ctl_usage(ctl, "the job TYPE must not be empty");
    if (o->queue && !o->queue[0])
        return ctl_usage(ctl, "--queue must not be empty");
    if (o->jid && (!o->jid[0] || strlen(o->jid) > STJ_JID_MAX))
        return ctl_usage(ctl, "--jid must be 1-%d bytes", STJ_JID_MAX);
    if (o->jid && o->count > 1)
        return ctl_usage(ctl, "--jid names one job; it cannot go with --count %lld", o->count);
    return CTL_CONTINUE;
}

/* Reads all of f into a NUL-terminated malloc'd string; NULL on error. */
static char *read_all(FILE *f)
{
    size_t len = 0, cap = 4096;
    char *buf = malloc(cap), *grown;

    while (buf) {
        len += fread(buf + len, 1, cap - len - 1, f);
        if (ferror(f) || feof(f))
            break;
        grown = realloc(buf, cap *= 2);
        if (!grown)
            free(buf);
        buf = grown;
    }
    if (buf && ferror(f)) {
        free(buf);
        return NULL;
    }
    if (buf)
        buf[len] = '\0';
    return buf;
}

/* --args TEXT, --args @FILE or --args - (stdin): the JSON text, malloc'd, in *json. */
static int args_text(const char *arg, char **json)
{
    FILE *f = stdin;

    if (arg[0] != '@' && strcmp(arg, "-") != 0) {
        *json = strdup(arg);
        return *json ? CTL_OK : ctl_complain(CTL_FAILED, "out of memory");
    }
    if (arg[0] == '@' && !(f = fopen(arg + 1, "r")))
        return ctl_complain(CTL_USAGE, "--args %s: %s", arg, strerror(errno));
    *json = read_all(f);
    if (f != stdin)
        fclose(f);
    return *json ? CTL_OK : ctl_complain(CTL_USAGE, "--args %s: cannot read it", arg);
}

/* The queue a job goes to: --queue, else the type's (scheduler.h: the config's per-type
 * queue, else the built-in map), as the daemon's scheduler decides it. */
static const char *enqueue_queue(const struct ctl *ctl, const struct enqueue_opts *o)
{
    return o->queue ? o->queue : sched_type_queue(ctl->have_cfg ? &ctl->cfg : NULL, o->type);
}

/* Makes n jobs that differ only in their jid. */
static int make_jobs(const struct ctl *ctl, const struct enqueue_opts *o, const char *args,
                     size_t args_len, stj_job **jobs, size_t n)
{
    char err[512];

    for (size_t i = 0; i < n; i++) {
        stj_job *j = jobs[i] = stj_job_new(o->type);
        int rc;

        if (!j)
            return ctl_complain(CTL_FAILED, "cannot make a job (out of memory or no randomness)");
        rc = stj_job_set_queue(j, enqueue_queue(ctl, o));
        if (rc == 0 && o->jid)
            rc = stj_job_set_jid(j, o->jid);
        if (rc == 0)
            rc = stj_job_set_max_attempts(j, o->max_attempts);
        if (rc == 0 && stj_job_set_traceparent(j, o->traceparent) != 0)
            return ctl_usage(ctl, "--traceparent wants 00-<32 hex>-<16 hex>-<2 hex>");
        if (rc == 0 && args &&
            (rc = stj_job_set_args_msgpack(j, args, args_len, err, sizeof err)) < 0)
            return ctl_complain(status_of(rc), "%s", err);
        if (rc < 0)
            return ctl_complain(status_of(rc), "%s", stj_strerror(rc));
    }
    return CTL_OK;
}

/*
 * A job over max_job_bytes would go straight to the dead list: refuse it here. The
 * jobs of one call differ only in their jid, which does not change the size.
 */
static int check_size(const struct ctl *ctl, const stj_job *j)
{
    long limit = ctl->have_cfg ? ctl->cfg.max_job_bytes : DEFAULT_MAX_JOB_BYTES;
    char *buf;
    size_t len;
    int rc = stj_job_encode(j, &buf, &len);

    if (rc < 0)
        return ctl_complain(status_of(rc), "cannot encode the job: %s", stj_strerror(rc));
    free(buf);
    if ((long)len > limit)
        return ctl_complain(CTL_USAGE,
                            "the job is %zu bytes, over max_job_bytes (%ld): workers would "
                            "dead-letter it unread",
                            len, limit);
    return CTL_OK;
}

/* Pushes count jobs, reusing one batch of job objects with a fresh jid each round. */
static int push_jobs(struct ctl *ctl, stj_job **jobs, size_t batch, long long count, int64_t at_ms,
                     long long *pushed)
{
    char err[512];

    *pushed = 0;
    while (*pushed < count) {
        size_t n = count - *pushed < (long long)batch ? (size_t)(count - *pushed) : batch;
        size_t done = 0;
        int rc;

        for (size_t i = 0; *pushed > 0 && i < n; i++) {
            if ((rc = stj_job_set_jid(jobs[i], NULL)) < 0)
                return ctl_complain(status_of(rc), "cannot make a jid: %s", stj_strerror(rc));
        }
        rc = at_ms < 0 ? stj_enqueue_many(ctl->client, jobs, n, &done, err, sizeof err)
                       : stj_schedule_many(ctl->client, jobs, n, at_ms, &done, err, sizeof err);
        *pushed += done;
        if (rc < 0)
            return ctl_complain(status_of(rc), "%s (%lld of %lld jobs pushed)", err, *pushed,
                                count);
    }
    return CTL_OK;
}

static void print_bulk(const char *queue, long long n, int64_t at_ms, double ms)
{
    double rate = ms > 0 ? n / (ms / 1e3) : 0;

    if (at_ms < 0) {
        printf("enqueued %lld jobs to queue %s in %.1f ms (%.0f jobs/s)\n", n, queue, ms, rate);
    } else {
        char when[32];
        time_t t = (time_t)(at_ms / 1000);
        struct tm tm;

        strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
        printf("scheduled %lld jobs for queue %s at %s in %.1f ms (%.0f jobs/s)\n", n, queue, when,
               ms, rate);
    }
}

/* --args to one packed msgpack map in *args (malloc'd). */
static int parse_args(const struct ctl *ctl, const char *arg, char **args, size_t *len)
{
    char err[512], *json = NULL;
    int rc = args_text(arg, &json);

    if (rc != CTL_OK)
        return rc;
    if (stj_json_to_msgpack(json, args, len, err, sizeof err) < 0)
        rc = ctl_usage(ctl, "%s", err);
    free(json);
    return rc;
}

/* Pushes the jobs (count of them, batch objects reused) and prints the jid or the summary. */
static int enqueue_run(struct ctl *ctl, const struct enqueue_opts *o, stj_job **jobs, size_t batch)
{
    int64_t at_ms = o->in >= 0 ? ctl_now_ms() + llround(o->in * 1000) : -1;
    long long pushed;
    double t0 = mono_ms();
    int rc = push_jobs(ctl, jobs, batch, o->count ? o->count : 1, at_ms, &pushed);

    if (rc == CTL_OK && o->count)
        print_bulk(stj_job_queue(jobs[0]), pushed, at_ms, mono_ms() - t0);
    else if (rc == CTL_OK)
        printf("%s\n", stj_job_jid(jobs[0]));
    return rc;
}

static int cmd_enqueue(struct ctl *ctl, int argc, char **argv)
{
    struct enqueue_opts o;
    char *args = NULL;
    size_t args_len = 0, batch;
    stj_job **jobs = NULL;
    int rc = enqueue_parse(ctl, argc, argv, &o);

    if (rc != CTL_CONTINUE)
        return rc;
    rc = o.args ? parse_args(ctl, o.args, &args, &args_len) : CTL_OK;
    if (rc != CTL_OK)
        return rc;
    batch = o.count == 0 ? 1 : o.count < STJ_PIPELINE_JOBS ? (size_t)o.count : STJ_PIPELINE_JOBS;
    jobs = calloc(batch, sizeof *jobs);
    if (!jobs)
        rc = ctl_complain(CTL_FAILED, "out of memory");
    if (rc == CTL_OK)
        rc = ctl_settings(ctl);
    if (rc == CTL_OK)
        rc = make_jobs(ctl, &o, args, args_len, jobs, batch);
    if (rc == CTL_OK)
        rc = check_size(ctl, jobs[0]);
    if (rc == CTL_OK)
        rc = ctl_connect(ctl);
    if (rc == CTL_OK)
        rc = enqueue_run(ctl, &o, jobs, batch);
    for (size_t i = 0; jobs && i < batch; i++)
        stj_job_free(jobs[i]);
    free(jobs);
    free(args);
    return rc;
}

static const char enqueue_help[] =
    "Pushes a job of type TYPE onto its queue and prints its jid.\n"
    "\n"
    "  --queue Q          queue to push to (default: the type's queue: request_log for\n"
    "                     request_log, email for email.*, critical for wallet.seed_sandbox,\n"
    "                     default otherwise; with -c, the config's types list first)\n"
    "  --args JSON        the job's args, a JSON object (default {}): objects become maps,\n"
    "                     arrays arrays, strings str, integers int, reals float64,\n"
    "                     true/false bool, null nil; @FILE reads it from FILE, - from stdin\n"
    "  --in SECONDS       run it SECONDS from now (P:scheduled) instead of now\n"
    "  --jid ID           the job id (1-64 bytes; default 20 random hex characters)\n"
    "  --count N          push N jobs with their own jids, pipelined, and print\n"
    "                     \"enqueued N jobs to queue Q in X ms (Y jobs/s)\"\n"
    "  --max-attempts N   override the type's number of attempts\n"
    "  --traceparent TP   the W3C trace context to carry (00-<trace id>-<parent id>-<flags>)\n";

/* ---- stats ---- */

static const char *const default_queues[] = {"critical", "default", "email", "request_log"};
#define NDEFAULT_QUEUES (sizeof default_queues / sizeof default_queues[0])

enum counter { C_PROCESSED, C_FAILED, C_DEAD, NCOUNTERS };
static const char *const counter_names[NCOUNTERS] = {"processed", "failed", "dead"};

struct stats {
    int64_t now;
    char today[11]; /* YYYY-MM-DD, UTC */
    struct strlist queues;
    long long *depth;
    double *latency; /* seconds the oldest job of each queue has waited; 0 when empty */
    unsigned char *paused;
    long long enqueued, processing, scheduled, retry, dead;
    long long workers_registered, workers_live;
    long long pg_up, pg_down; /* live workers whose PostgreSQL pool is up / down */
    /* live workers by the state of their email breaker; "error": no transport */
    long long mail_closed, mail_open, mail_half_open, mail_error;
    char mail_transport[16]; /* "" none seen, "mixed" when workers differ */
    long long total[NCOUNTERS], daily[NCOUNTERS];
};

static void stats_free(struct stats *s)
{
    strlist_free(&s->queues);
    free(s->depth);
    free(s->latency);
    free(s->paused);
}

/* The default queues, then every P:queue:* list and every paused queue, sorted after them. */
static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int stats_queue_names(struct ctl *ctl, struct stats *s, struct strlist *paused)
{
    struct strlist found = {0};
    redisReply *r = NULL;
    int rc;

    for (size_t i = 0; i < NDEFAULT_QUEUES; i++) {
        if (strlist_add(&s->queues, default_queues[i], strlen(default_queues[i])) < 0)
            return ctl_complain(CTL_FAILED, "out of memory");
    }
    rc = scan_names(ctl, ":queue:", "list", &found);
    if (rc == CTL_OK)
        r = redisCommand(ctl->rc, "SMEMBERS %s:paused", ctl->prefix);
    if (rc == CTL_OK && (rc = ctl_reply_status(ctl, r, "SMEMBERS paused")) == CTL_OK) {
        for (size_t i = 0; i < r->elements && rc == CTL_OK; i++) {
            const redisReply *m = r->element[i];
            if (strlist_add(paused, m->str, m->len) < 0 ||
                (strlist_find(&found, m->str) < 0 && strlist_add(&found, m->str, m->len) < 0))
                rc = ctl_complain(CTL_FAILED, "out of memory");
        }
    }
    freeReplyObject(r);
    if (found.n)
        qsort(found.v, found.n, sizeof *found.v, cmp_str);
    for (size_t i = 0; rc == CTL_OK && i < found.n; i++) {
        if (strlist_find(&s->queues, found.v[i]) < 0 &&
            strlist_add(&s->queues, found.v[i], strlen(found.v[i])) < 0)
            rc = ctl_complain(CTL_FAILED, "out of memory");
    }
    strlist_free(&found);
    return rc;
}

/* Queue latency: how long the job workers take next (the right end) has waited,
 * from its created_at. An envelope without created_at counts as not waiting. */
static int stats_latency(struct ctl *ctl, struct stats *s)
{
    if (!(s->latency = calloc(s->queues.n ? s->queues.n : 1, sizeof *s->latency)))
        return ctl_complain(CTL_FAILED, "out of memory");
    for (size_t i = 0; i < s->queues.n; i++)
        redisAppendCommand(ctl->rc, "LINDEX %s:queue:%s -1", ctl->prefix, s->queues.v[i]);
    for (size_t i = 0; i < s->queues.n; i++) {
        redisReply *r = NULL;
        if (redisGetReply(ctl->rc, (void **)&r) != REDIS_OK)
            return ctl_reply_status(ctl, NULL, "LINDEX queue");
        if (r && r->type == REDIS_REPLY_STRING)
            s->latency[i] = env_waited(r->str, r->len, r->len, s->now);
        freeReplyObject(r);
    }
    return CTL_OK;
}

static int stats_queues(struct ctl *ctl, struct stats *s)
{
    struct strlist paused = {0};
    int rc = stats_queue_names(ctl, s, &paused);

    if (rc == CTL_OK) {
        s->depth = calloc(s->queues.n, sizeof *s->depth);
        s->paused = calloc(s->queues.n, sizeof *s->paused);
        if (!s->depth || !s->paused)
            rc = ctl_complain(CTL_FAILED, "out of memory");
    }
    for (size_t i = 0; rc == CTL_OK && i < s->queues.n; i++) {
        redisAppendCommand(ctl->rc, "LLEN %s:queue:%s", ctl->prefix, s->queues.v[i]);
        s->paused[i] = strlist_find(&paused, s->queues.v[i]) >= 0;
    }
    if (rc == CTL_OK)
        rc = read_numbers(ctl, s->depth, s->queues.n, "LLEN queue");
    for (size_t i = 0; rc == CTL_OK && i < s->queues.n; i++)
        s->enqueued += s->depth[i];
    if (rc == CTL_OK)
        rc = stats_latency(ctl, s);
    strlist_free(&paused);
    return rc;
}

/* The sum of every P:processing:<wid> list. */
static int stats_processing(struct ctl *ctl, struct stats *s)
{
    struct strlist wids = {0};
    long long *len = NULL;
    int rc = scan_names(ctl, ":processing:", "list", &wids);

    if (rc == CTL_OK && wids.n && !(len = calloc(wids.n, sizeof *len)))
        rc = ctl_complain(CTL_FAILED, "out of memory");
    for (size_t i = 0; rc == CTL_OK && i < wids.n; i++)
        redisAppendCommand(ctl->rc, "LLEN %s:processing:%s", ctl->prefix, wids.v[i]);
    if (rc == CTL_OK)
        rc = read_numbers(ctl, len, wids.n, "LLEN processing");
    for (size_t i = 0; rc == CTL_OK && i < wids.n; i++)
        s->processing += len[i];
    free(len);
    strlist_free(&wids);
    return rc;
}

/* A heartbeat's "mail" field: "transport:breaker", "error", or "off" (no email type). */
static void stats_count_mail(struct stats *s, const redisReply *m)
{
    const char *colon;
    size_t n;
    if (m->type != REDIS_REPLY_STRING || strcmp(m->str, "off") == 0)
        return;
    if (strcmp(m->str, "error") == 0) {
        s->mail_error++;
        return;
    }
    if (!(colon = strchr(m->str, ':')))
        return;
    n = (size_t)(colon - m->str);
    if (!s->mail_transport[0] && n < sizeof s->mail_transport)
        snprintf(s->mail_transport, sizeof s->mail_transport, "%.*s", (int)n, m->str);
    else if (strlen(s->mail_transport) != n || strncmp(s->mail_transport, m->str, n) != 0)
        snprintf(s->mail_transport, sizeof s->mail_transport, "mixed");
    s->mail_closed += strcmp(colon + 1, "closed") == 0;
    s->mail_open += strcmp(colon + 1, "open") == 0;
    s->mail_half_open += strcmp(colon + 1, "half-open") == 0;
}

/* One worker's heartbeat: [EXISTS, [pg, mail]]. Nil when the hash expired; "pg" is
 * "up", "down", or "off" when no database is configured. */
static void stats_count_worker(struct stats *s, const redisReply *x)
{
    const redisReply *f;
    if (x->type != REDIS_REPLY_ARRAY || x->elements != 2 ||
        x->element[0]->type != REDIS_REPLY_INTEGER || !x->element[0]->integer)
        return;
    s->workers_live++;
    f = x->element[1];
    if (f->type != REDIS_REPLY_ARRAY || f->elements != 2)
        return;
    if (f->element[0]->type == REDIS_REPLY_STRING) {
        s->pg_up += strcmp(f->element[0]->str, "up") == 0;
        s->pg_down += strcmp(f->element[0]->str, "down") == 0;
    }
    stats_count_mail(s, f->element[1]);
}

/* Registered workers, how many still have their heartbeat hash, and what
 * they last said of PostgreSQL. */
static int stats_workers(struct ctl *ctl, struct stats *s)
{
    redisReply *r = redisCommand(ctl->rc, "SMEMBERS %s:workers", ctl->prefix);
    int rc = ctl_reply_status(ctl, r, "SMEMBERS workers");
    size_t sent = 0;

    for (size_t i = 0; rc == CTL_OK && i < r->elements; i++, sent++) {
        const redisReply *wid = r->element[i];
        redisAppendCommand(ctl->rc, "MULTI");
        redisAppendCommand(ctl->rc, "EXISTS %s:worker:%b", ctl->prefix, wid->str, wid->len);
        redisAppendCommand(ctl->rc, "HMGET %s:worker:%b pg mail", ctl->prefix, wid->str,
                           wid->len);
        redisAppendCommand(ctl->rc, "EXEC");
    }
    for (size_t i = 0; i < sent * 4; i++) {
        redisReply *x = NULL;
        if (redisGetReply(ctl->rc, (void **)&x) != REDIS_OK) {
            rc = ctl_reply_status(ctl, NULL, "EXEC worker");
            break;
        }
        if (i % 4 == 3 && x && x->type == REDIS_REPLY_ARRAY)
            stats_count_worker(s, x);
        freeReplyObject(x);
    }
    if (rc == CTL_OK)
        s->workers_registered = (long long)r->elements;
    freeReplyObject(r);
    return rc;
}

/* Sizes of the retry, scheduled and dead sets and the counters, in one round trip. */
static int stats_totals(struct ctl *ctl, struct stats *s)
{
    long long v[3 + 2 * NCOUNTERS];
    const char *p = ctl->prefix;
    int rc;

    redisAppendCommand(ctl->rc, "ZCARD %s:retry", p);
    redisAppendCommand(ctl->rc, "ZCARD %s:scheduled", p);
    redisAppendCommand(ctl->rc, "LLEN %s:dead", p);
    for (int i = 0; i < NCOUNTERS; i++) {
        redisAppendCommand(ctl->rc, "GET %s:stats:%s", p, counter_names[i]);
        redisAppendCommand(ctl->rc, "GET %s:stats:%s:%s", p, counter_names[i], s->today);
    }
    rc = read_numbers(ctl, v, sizeof v / sizeof v[0], "stats");
    if (rc != CTL_OK)
        return rc;
    s->retry = v[0];
    s->scheduled = v[1];
    s->dead = v[2];
    for (int i = 0; i < NCOUNTERS; i++) {
        s->total[i] = v[3 + 2 * i];
        s->daily[i] = v[4 + 2 * i];
    }
    return CTL_OK;
}

static int stats_collect(struct ctl *ctl, struct stats *s)
{
    time_t t;
    struct tm tm;
    int rc;

    s->now = ctl_now_ms();
    t = (time_t)(s->now / 1000);
    strftime(s->today, sizeof s->today, "%Y-%m-%d", gmtime_r(&t, &tm));
    rc = stats_queues(ctl, s);
    if (rc == CTL_OK)
        rc = stats_processing(ctl, s);
    if (rc == CTL_OK)
        rc = stats_workers(ctl, s);
    if (rc == CTL_OK)
        rc = stats_totals(ctl, s);
    return rc;
}

/* Per-second rates of the counters between two reads, for stats --watch. */
struct rates {
    int known; /* 0 on the first read: nothing to compare with yet */
    double per_sec[NCOUNTERS];
};

static json_t *rates_json(const struct rates *rt)
{
    json_t *o = json_object();

    for (int i = 0; i < NCOUNTERS; i++)
        json_object_set_new(o, counter_names[i],
                            rt->known ? json_real(rt->per_sec[i]) : json_null());
    return o;
}

/* rt: NULL, or the rates of stats --watch, which add a "rates" object. */
static json_t *stats_json(const struct ctl *ctl, const struct stats *s, const struct rates *rt)
{
    json_t *root = json_object(), *queues = json_object(), *counters = json_object(),
           *today = json_object();

    for (size_t i = 0; i < s->queues.n; i++)
        json_object_set_new(
            queues, s->queues.v[i],
            json_pack("{s:I,s:f,s:b}", "depth", (json_int_t)s->depth[i], "latency_s",
                      s->latency[i], "paused", s->paused[i]));
    json_object_set_new(today, "date", json_string(s->today));
    for (int i = 0; i < NCOUNTERS; i++) {
        json_object_set_new(counters, counter_names[i], json_integer(s->total[i]));
        json_object_set_new(today, counter_names[i], json_integer(s->daily[i]));
    }
    json_object_set_new(root, "prefix", json_string(ctl->prefix));
    json_object_set_new(root, "time_ms", json_integer(s->now));
    json_object_set_new(root, "queues", queues);
    json_object_set_new(root, "enqueued", json_integer(s->enqueued));
    json_object_set_new(root, "processing", json_integer(s->processing));
    json_object_set_new(root, "scheduled", json_integer(s->scheduled));
    json_object_set_new(root, "retry", json_integer(s->retry));
    json_object_set_new(root, "dead", json_integer(s->dead));
    json_object_set_new(root, "workers",
                        json_pack("{s:I,s:I}", "registered", (json_int_t)s->workers_registered,
                                  "live", (json_int_t)s->workers_live));
    json_object_set_new(root, "postgresql",
                        json_pack("{s:I,s:I}", "up", (json_int_t)s->pg_up, "down",
                                  (json_int_t)s->pg_down));
    json_object_set_new(root, "email",
                        json_pack("{s:s?,s:I,s:I,s:I,s:I}", "transport",
                                  s->mail_transport[0] ? s->mail_transport : NULL, "closed",
                                  (json_int_t)s->mail_closed, "open", (json_int_t)s->mail_open,
                                  "half_open", (json_int_t)s->mail_half_open, "error",
                                  (json_int_t)s->mail_error));
    json_object_set_new(root, "counters", counters);
    json_object_set_new(root, "today", today);
    if (rt)
        json_object_set_new(root, "rates", rates_json(rt));
    return root;
}

static int print_stats_json(const struct ctl *ctl, const struct stats *s, const struct rates *rt)
{
    json_t *root = stats_json(ctl, s, rt);
    char *text = json_dumps(root, JSON_COMPACT);

    json_decref(root);
    if (!text)
        return ctl_complain(CTL_FAILED, "out of memory");
    printf("%s\n", text);
    free(text);
    return CTL_OK;
}

static int num_width(long long v)
{
    char buf[24];

    return snprintf(buf, sizeof buf, "%lld", v);
}

/* The email line: live workers with their breaker closed, and those not sending. */
static void print_stats_email(const struct stats *s, int name_w, int num_w)
{
    long long n = s->mail_closed + s->mail_open + s->mail_half_open;
    if (n + s->mail_error == 0) {
        printf("%-*s  %*s  no email type\n", name_w, "email", num_w, "-");
        return;
    }
    printf("%-*s  %*lld  %s, breaker closed (%lld open, %lld half-open", name_w, "email", num_w,
           s->mail_closed, s->mail_transport[0] ? s->mail_transport : "?", s->mail_open,
           s->mail_half_open);
    if (s->mail_error)
        printf(", %lld without a transport", s->mail_error);
    printf(")\n");
}

/* Name column wide enough for every queue and label; numbers right-aligned under a header.
 * rt: NULL, or the rates of stats --watch, shown as a PER SEC column ("-" until known). */
static void print_stats_table(const struct ctl *ctl, const struct stats *s, const struct rates *rt)
{
    char where[400], when[32];
    time_t t = (time_t)(s->now / 1000);
    struct tm tm;
    int name_w = 12, num_w = 5, day_w = 5;

    for (size_t i = 0; i < s->queues.n; i++) {
        if ((int)strlen(s->queues.v[i]) > name_w)
            name_w = (int)strlen(s->queues.v[i]);
        if (num_width(s->depth[i]) > num_w)
            num_w = num_width(s->depth[i]);
    }
    long long others[] = {s->enqueued,     s->processing, s->scheduled, s->retry,   s->dead,
                          s->workers_live, s->total[0],   s->total[1],  s->total[2]};
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
        if (num_width(others[i]) > num_w)
            num_w = num_width(others[i]);
    }
    for (int i = 0; i < NCOUNTERS; i++) {
        if (num_width(s->daily[i]) > day_w)
            day_w = num_width(s->daily[i]);
    }
    describe_redis(ctl, where, sizeof where);
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", gmtime_r(&t, &tm));
    printf("Redis %s, prefix %s, %s\n\n", where, ctl->prefix, when);

    printf("%-*s  %*s  %9s  %s\n", name_w, "QUEUE", num_w, "JOBS", "LATENCY", "STATE");
    for (size_t i = 0; i < s->queues.n; i++)
        printf("%-*s  %*lld  %8.1fs%s\n", name_w, s->queues.v[i], num_w, s->depth[i],
               s->latency[i], s->paused[i] ? "  paused" : "");
    printf("%-*s  %*lld\n\n", name_w, "(all queues)", num_w, s->enqueued);

    printf("%-*s  %*lld\n", name_w, "processing", num_w, s->processing);
    printf("%-*s  %*lld\n", name_w, "scheduled", num_w, s->scheduled);
    printf("%-*s  %*lld\n", name_w, "retry", num_w, s->retry);
    printf("%-*s  %*lld\n", name_w, "dead", num_w, s->dead);
    printf("%-*s  %*lld  live (%lld registered)\n", name_w, "workers", num_w, s->workers_live,
           s->workers_registered);
    if (s->pg_up + s->pg_down == 0)
        printf("%-*s  %*s  not configured\n", name_w, "postgresql", num_w, "-");
    else
        printf("%-*s  %*lld  up (%lld down)\n", name_w, "postgresql", num_w, s->pg_up,
               s->pg_down);
    print_stats_email(s, name_w, num_w);
    putchar('\n');

    printf("%-*s  %*s  %*s%s\n", name_w, "COUNTER", num_w, "TOTAL", day_w, "TODAY",
           rt ? "   PER SEC" : "");
    for (int i = 0; i < NCOUNTERS; i++) {
        printf("%-*s  %*lld  %*lld", name_w, counter_names[i], num_w, s->total[i], day_w,
               s->daily[i]);
        if (rt && rt->known)
            printf("  %8.1f", rt->per_sec[i]);
        else if (rt)
            printf("  %8s", "-");
        putchar('\n');
    }
}

/* ---- stats --watch ---- */

static volatile sig_atomic_t watch_stop;

static void on_watch_signal(int sig)
{
    (void)sig;
    watch_stop = 1;
}

/* Sleeps until the monotonic time until_ms, or until Ctrl-C. */
static void watch_sleep(double until_ms)
{
    double left;

    while (!watch_stop && (left = until_ms - mono_ms()) > 0) {
        struct timespec ts = {(time_t)(left / 1e3), (long)(fmod(left, 1e3) * 1e6)};
        nanosleep(&ts, NULL); /* EINTR on Ctrl-C: the loop sees the flag */
    }
}

static void watch_rates(const struct stats *prev, const struct stats *cur, double ms,
                        struct rates *rt)
{
    rt->known = ms > 0;
    for (int i = 0; i < NCOUNTERS && rt->known; i++) {
        long long d = cur->total[i] - prev->total[i];
        rt->per_sec[i] = d > 0 ? d * 1e3 / ms : 0; /* a counter reset is no negative rate */
    }
}

/*
 * Reads and prints the stats every interval seconds, like top: on a terminal each
 * frame replaces the last, elsewhere frames follow each other (tables separated by a
 * blank line, JSON one object a line). Stops after iterations frames (0: never) or
 * at Ctrl-C / SIGTERM, which is a normal end: exit 0.
 */
static int stats_watch(struct ctl *ctl, int json, long long iterations, double interval)
{
    struct sigaction sa = {.sa_handler = on_watch_signal}; /* no SA_RESTART: wake nanosleep */
    struct stats prev = {0}, cur;
    struct rates rt = {0};
    double t_prev = 0, t;
    int tty = !json && isatty(STDOUT_FILENO), rc = CTL_OK;

    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    for (long long n = 0; !watch_stop && (iterations == 0 || n < iterations); n++) {
        if (n)
            watch_sleep(t_prev + interval * 1e3);
        if (watch_stop)
            break;
        memset(&cur, 0, sizeof cur);
        rc = stats_collect(ctl, &cur);
        t = mono_ms();
        if (rc != CTL_OK) {
            stats_free(&cur);
            break;
        }
        if (n)
            watch_rates(&prev, &cur, t - t_prev, &rt);
        if (json) {
            rc = print_stats_json(ctl, &cur, &rt);
        } else {
            fputs(tty ? "\033[H\033[2J" : n ? "\n" : "", stdout);
            print_stats_table(ctl, &cur, &rt);
            printf("\nevery %gs; Ctrl-C to stop\n", interval);
        }
        fflush(stdout);
        stats_free(&prev);
        prev = cur;
        t_prev = t;
    }
    stats_free(&prev);
    return rc;
}

static int cmd_stats(struct ctl *ctl, int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, OPT_JSON},
        {"watch", no_argument, NULL, OPT_WATCH},
        {"iterations", required_argument, NULL, OPT_ITERATIONS},
        {"interval", required_argument, NULL, OPT_INTERVAL},
        {NULL, 0, NULL, 0},
    };
    struct stats s = {0};
    int json = 0, watch = 0, opt, rc;
    long long iterations = 0;
    double interval = 1.0;
    char *end;

    while ((opt = ctl_next_opt(ctl, argc, argv, opts)) != -1) {
        switch (opt) {
        case OPT_JSON: json = 1; break;
        case OPT_WATCH: watch = 1; break;
        case OPT_ITERATIONS:
            if (ctl_parse_ll(optarg, 1, MAX_COUNT, &iterations) < 0)
                return ctl_usage(ctl, "--iterations wants 1..%lld, got '%s'", MAX_COUNT, optarg);
            break;
        case OPT_INTERVAL:
            interval = strtod(optarg, &end);
            if (end == optarg || *end || !isfinite(interval) || interval < 0.1 || interval > 3600)
                return ctl_usage(ctl, "--interval wants seconds from 0.1 to 3600, got '%s'",
                                 optarg);
            break;
        default: return ctl->status;
        }
    }
    if (optind < argc)
        return ctl_usage(ctl, "unexpected argument '%s'", argv[optind]);
    if (!watch && (iterations || interval != 1.0))
        return ctl_usage(ctl, "--iterations and --interval go with --watch");
    rc = ctl_connect(ctl);
    if (rc == CTL_OK && watch)
        return stats_watch(ctl, json, iterations, interval);
    if (rc == CTL_OK)
        rc = stats_collect(ctl, &s);
    if (rc == CTL_OK && json)
        rc = print_stats_json(ctl, &s, NULL);
    else if (rc == CTL_OK)
        print_stats_table(ctl, &s, NULL);
    stats_free(&s);
    return rc;
}

static const char stats_help[] =
    "Prints the state of the queues: jobs waiting per queue (every P:queue:* list, plus\n"
    "critical, default, email and request_log even when empty) and whether the queue is\n"
    "paused, jobs in flight (all P:processing:* lists), scheduled, waiting to retry,\n"
    "dead, live workers, PostgreSQL and the email transport as the workers see them,\n"
    "and the processed/failed/dead counters, total and for today (UTC).\n"
    "\n"
    "  --json   print one JSON object on one line instead of a table:\n"
    "    prefix       the key prefix\n"
    "    time_ms      when the numbers were read (ms since the epoch)\n"
    "    queues       {\"<name>\": {\"depth\": int, \"latency_s\": float, \"paused\": bool}, ...}\n"
    "                 latency_s: how long the next job to run has waited (0: empty)\n"
    "    enqueued     jobs waiting in all queues\n"
    "    processing   jobs in flight\n"
    "    scheduled    jobs in P:scheduled\n"
    "    retry        jobs in P:retry\n"
    "    dead         entries in P:dead\n"
    "    workers      {\"registered\": int, \"live\": int}: in P:workers, and of those,\n"
    "                 with a live P:worker:<wid> heartbeat\n"
    "    postgresql   {\"up\": int, \"down\": int}: live workers whose PostgreSQL\n"
    "                 connections are up / down (both 0: no database configured)\n"
    "    email        {\"transport\": \"sendgrid\"|\"smtp\"|\"log\"|\"mixed\"|null,\n"
    "                  \"closed\": int, \"open\": int, \"half_open\": int, \"error\": int}:\n"
    "                 live workers by the state of their email circuit breaker (open:\n"
    "                 email jobs wait in retry); error: the transport could not be set\n"
    "                 up; all 0: no email job type registered\n"
    "    counters     {\"processed\": int, \"failed\": int, \"dead\": int} since the start\n"
    "    today        {\"date\": \"YYYY-MM-DD\", \"processed\": int, \"failed\": int,\n"
    "                  \"dead\": int} for the current UTC day\n"
    "\n"
    "  --watch            redraw every second, like top, with the processed, failed and\n"
    "                     dead counters per second over the last interval (PER SEC;\n"
    "                     with --json, one object a line with \"rates\": {\"processed\":\n"
    "                     x, \"failed\": y, \"dead\": z}, null in the first); Ctrl-C stops\n"
    "  --interval S       seconds between frames (default 1)\n"
    "  --iterations N     stop after N frames\n";

/* ---- migrate ---- */

/* Option codes of migrate alone, above the shared list in ops.h. */
enum { OPT_MIG_DRY_RUN = 0x200, OPT_MIG_DATABASE };

static int cmd_migrate(struct ctl *ctl, int argc, char **argv)
{
    static const struct option opts[] = {
        {"dry-run", no_argument, NULL, OPT_MIG_DRY_RUN},
        {"database", required_argument, NULL, OPT_MIG_DATABASE},
        {NULL, 0, NULL, 0},
    };
    const char *url = NULL;
    char err[1024];
    int dry_run = 0, opt, rc;

    while ((opt = ctl_next_opt(ctl, argc, argv, opts)) != -1) {
        switch (opt) {
        case OPT_MIG_DRY_RUN: dry_run = 1; break;
        case OPT_MIG_DATABASE: url = optarg; break;
        default: return ctl->status;
        }
    }
    if (optind < argc)
        return ctl_usage(ctl, "unexpected argument '%s'", argv[optind]);
    if (!url && ctl->config_path && (rc = ctl_settings(ctl)) != CTL_OK)
        return rc;
    if (!url && ctl->have_cfg && ctl->cfg.database_url && ctl->cfg.database_url[0])
        url = ctl->cfg.database_url; /* DATABASE_URL already applied by cfg_load */
    if (!url && getenv("DATABASE_URL") && getenv("DATABASE_URL")[0])
        url = getenv("DATABASE_URL");
    if (!url)
        return ctl_usage(ctl, "no database: give --database URL, database.url in the config "
                              "file (-c), or DATABASE_URL");
    rc = mig_run(url, dry_run, stdout, err, sizeof err);
    if (rc == MIG_OK)
        return CTL_OK;
    return ctl_complain(rc == MIG_EBADURL        ? CTL_USAGE
                        : rc == MIG_EUNREACHABLE ? CTL_UNREACHABLE
                                                 : CTL_FAILED,
                        "migrate: %s", err);
}

static const char migrate_help[] =
    "Applies the schema migrations this stellerctl was built with (schema/*.sql) that the\n"
    "database has not had yet, in name order, each in its own transaction, and records\n"
    "them in the table steller_schema_migrations. Prints \"applied NAME\" per migration,\n"
    "or \"up to date\". Refuses to run if an applied migration has changed since. Two\n"
    "runs at once are safe: the second waits for the first (an advisory lock).\n"
    "\n"
    "  --dry-run        print \"pending NAME\" for what would be applied; change nothing\n"
    "  --database URL   PostgreSQL to migrate (libpq URI or conninfo string); else the\n"
    "                   config file's database.url (DATABASE_URL overrides it), else\n"
    "                   DATABASE_URL\n"
    "\n"
    "Exit codes here: 0 ok, 1 a migration failed (it was rolled back) or changed,\n"
    "2 usage, config or bad URL, 3 database unreachable.\n";

/* ---- help ---- */

static const struct verb *find_verb(const char *name);

static int cmd_help(struct ctl *ctl, int argc, char **argv)
{
    const struct verb *v;

    if (argc < 2) {
        print_global_help(stdout);
        return CTL_OK;
    }
    v = find_verb(argv[1]);
    if (!v)
        return ctl_usage(ctl, "unknown verb '%s'", argv[1]);
    print_verb_help(v, stdout);
    return CTL_OK;
}

/* ---- main ---- */

static const struct verb verbs[] = {
    {"enqueue", cmd_enqueue,
     "TYPE [--queue Q] [--args JSON] [--in SECONDS] [--jid ID] [--count N] [--max-attempts N] "
     "[--traceparent TP]",
     "push a job (or --count N jobs) to its queue, or schedule it (--in)", enqueue_help},
    {"stats", cmd_stats, "[--json] [--watch [--interval S] [--iterations N]]",
     "queue depths, in-flight, scheduled, retry, dead, workers, counters", stats_help},
    {"dead", cmd_dead,
     "ls [--type T] [--limit N] [--json] | show JID [--json] | retry JID|--all|--type T | "
     "purge --older-than D|--yes",
     "list, show, retry or purge dead jobs", dead_help},
    {"retry", cmd_retry, "ls [--limit N] [--json] | now JID",
     "list jobs waiting to retry, or run one now", retry_help},
    {"queue", cmd_queue, "pause NAME | resume NAME", "pause or resume a queue", queue_help},
    {"workers", cmd_workers, "[--json]", "live worker processes and their heartbeats",
     workers_help},
    {"schedule", cmd_schedule, "[--json]",
     "the config's scheduled jobs: cron, type, queue, next run, last slot enqueued",
     schedule_help},
    {"migrate", cmd_migrate, "[--dry-run] [--database URL]",
     "apply pending PostgreSQL schema migrations", migrate_help},
    {"sweep", cmd_sweep, "[--dry-run] [--as-of TIME] [--wait [--timeout S]]",
     "run a re-engagement sweep now (enqueues reengagement.sweep)", sweep_help},
    {"help", cmd_help, "[VERB]", "this text, or a verb's options", ""},
    {NULL, NULL, NULL, NULL, NULL},
};

static const struct verb *find_verb(const char *name)
{
    for (const struct verb *v = verbs; v->name; v++) {
        if (strcmp(v->name, name) == 0)
            return v;
    }
    return NULL;
}

/* Global options up to the verb's name. */
static int parse_globals(struct ctl *ctl, int argc, char **argv)
{
    int opt;

    while ((opt = ctl_next_opt(ctl, argc, argv, NULL)) != -1) {
        if (opt == OPT_STOP)
            return ctl->status;
    }
    return -1;
}

int main(int argc, char **argv)
{
    struct ctl ctl = {0};
    int rc = parse_globals(&ctl, argc, argv);

    if (rc >= 0)
        return rc;
    if (optind >= argc)
        return ctl_usage(&ctl, "no verb given");
    ctl.verb = find_verb(argv[optind]);
    if (!ctl.verb)
        return ctl_usage(&ctl, "unknown verb '%s'", argv[optind]);
    argc -= optind;
    argv += optind;
    optind = 0; /* glibc: start afresh on the verb's arguments */
    rc = ctl.verb->fn(&ctl, argc, argv);
    stj_free(ctl.client);
    if (ctl.have_cfg)
        cfg_free(&ctl.cfg);
    return rc;
}
