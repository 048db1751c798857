/*
 * producer.c - libstellerjobs: build job envelopes and push them to Redis.
 *
 * A stj_job holds copies of what the producer gave: type, jid, queue, args as one
 * packed msgpack map. The envelope's bytes are made by env_new() from
 * worker/envelope.c, the same code the worker's tests check against the vectors of
 * docs/PROTOCOL.md, so a producer cannot drift from what workers read. Args are
 * validated once, when set, by decoding a trial envelope with env_decode(): the
 * worker's own rules (one map, no trailing bytes, nesting depth) decide, not a copy
 * of them here.
 *
 * Pushing is one path for one job or many: jobs are encoded in batches of
 * STJ_PIPELINE_JOBS into one buffer, turned into as few commands as possible
 * (consecutive jobs of one queue share a variadic LPUSH; a schedule is one ZADD
 * with many score/member pairs), all commands of a batch are appended to the
 * hiredis output buffer, then every reply is read. A batch thus costs one round
 * trip and, for Redis, one command per queue instead of one per job.
 */
#include "steller/jobs.h"

#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <msgpack.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "envelope.h"
#include "redisurl.h"

#define DEFAULT_URL "redis://127.0.0.1:6379/0"
#define DEFAULT_PREFIX "steller"
#define CONNECT_TIMEOUT_S 5
#define IO_TIMEOUT_S 30

/* The worker reads at most 32 nested containers (envelope.c, SCAN_MAX_DEPTH); the
 * envelope map is one of them, so args may nest 31 deep. */
#define ARGS_MAX_DEPTH 31

struct stj_client {
    redisContext *rc;
    char *prefix;
    char where[300]; /* host:port or the socket path, for messages: never the password */
};

struct stj_job {
    char jid[STJ_JID_MAX + 1];
    char *type;
    char *queue; /* NULL: the type's default */
    char *args;  /* NULL: an empty map */
    size_t args_len;
    int64_t max_attempts; /* -1: absent */
    int64_t created_at;   /* 0: when pushed */
    char traceparent[56]; /* "": absent */
};

static int fail(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t errlen, int code, const char *fmt, ...)
{
    va_list ap;

    if (err && errlen > 0) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- helpers ---- */

const char *stj_strerror(int code)
{
    switch (code) {
    case STJ_OK: return "ok";
    case STJ_E_INVAL: return "invalid argument";
    case STJ_E_NOMEM: return "out of memory";
    case STJ_E_CONN: return "Redis connection failed";
    case STJ_E_REDIS: return "Redis error";
    case STJ_E_SYS: return "system error";
    default: return "unknown error";
    }
}

/* From docs/PROTOCOL.md, Job types; a pattern ending in ".*" matches a family. */
static const struct {
    const char *pattern;
    const char *queue;
} default_queues[] = {
    {"request_log", "request_log"},      {"email.*", "email"}, {"reengagement.sweep", "default"},
    {"wallet.seed_sandbox", "critical"}, {"sys.*", "default"},
};

static int type_matches(const char *type, const char *pattern)
{
    size_t n = strlen(pattern);

    if (n >= 2 && strcmp(pattern + n - 2, ".*") == 0)
        return strncmp(type, pattern, n - 1) == 0 && type[n - 1] != '\0';
    return strcmp(type, pattern) == 0;
}

const char *stj_default_queue(const char *type)
{
    for (size_t i = 0; type && i < sizeof default_queues / sizeof default_queues[0]; i++) {
        if (type_matches(type, default_queues[i].pattern))
            return default_queues[i].queue;
    }
    return "default";
}

static int read_random(unsigned char *buf, size_t len)
{
    size_t got = 0;
    int fd;

    while (got < len) {
        ssize_t n = getrandom(buf + got, len - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            break;
        got += (size_t)n;
    }
    if (got == len)
        return 0;
    /* Kernels before 3.17 have no getrandom(). */
    fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return STJ_E_SYS;
    for (got = 0; got < len;) {
        ssize_t n = read(fd, buf + got, len - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    return got == len ? 0 : STJ_E_SYS;
}

int stj_jid_generate(char out[STJ_JID_GEN_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char raw[STJ_JID_GEN_LEN / 2];

    if (read_random(raw, sizeof raw) < 0)
        return STJ_E_SYS;
    for (size_t i = 0; i < sizeof raw; i++) {
        out[2 * i] = hex[raw[i] >> 4];
        out[2 * i + 1] = hex[raw[i] & 15];
    }
    out[STJ_JID_GEN_LEN] = '\0';
    return 0;
}

/* ---- JSON to msgpack ---- */

static const char *json_kind(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "object";
    case JSON_ARRAY: return "array";
    case JSON_STRING: return "string";
    case JSON_INTEGER: return "integer";
    case JSON_REAL: return "number";
    case JSON_TRUE:
    case JSON_FALSE: return "boolean";
    default: return "null";
    }
}

static int pack_json(msgpack_packer *pk, json_t *v, int depth, char *err, size_t errlen);

static int pack_json_object(msgpack_packer *pk, json_t *v, int depth, char *err, size_t errlen)
{
    int rc = msgpack_pack_map(pk, json_object_size(v)) ? STJ_E_NOMEM : 0;

    /* jansson keeps insertion order, so keys come out in the order the JSON had them. */
    for (void *it = json_object_iter(v); it && rc == 0; it = json_object_iter_next(v, it)) {
        const char *key = json_object_iter_key(it);
        size_t klen = strlen(key);

        if (msgpack_pack_str(pk, klen) || msgpack_pack_str_body(pk, key, klen))
            rc = STJ_E_NOMEM;
        else
            rc = pack_json(pk, json_object_iter_value(it), depth + 1, err, errlen);
    }
    return rc;
}

static int pack_json_array(msgpack_packer *pk, json_t *v, int depth, char *err, size_t errlen)
{
    int rc = msgpack_pack_array(pk, json_array_size(v)) ? STJ_E_NOMEM : 0;

    for (size_t i = 0; i < json_array_size(v) && rc == 0; i++)
        rc = pack_json(pk, json_array_get(v, i), depth + 1, err, errlen);
    return rc;
}

/* depth counts the containers v is inside, args itself being depth 0. */
static int pack_json(msgpack_packer *pk, json_t *v, int depth, char *err, size_t errlen)
{
    int bad;

    switch (json_typeof(v)) {
    case JSON_OBJECT:
    case JSON_ARRAY:
        if (depth >= ARGS_MAX_DEPTH)
            return fail(err, errlen, STJ_E_INVAL, "args nest deeper than %d objects and arrays",
                        ARGS_MAX_DEPTH);
        if (json_is_object(v))
            return pack_json_object(pk, v, depth, err, errlen);
        return pack_json_array(pk, v, depth, err, errlen);
    case JSON_STRING:
        bad = msgpack_pack_str(pk, json_string_length(v)) ||
              msgpack_pack_str_body(pk, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER: bad = msgpack_pack_int64(pk, json_integer_value(v)); break;
    case JSON_REAL: bad = msgpack_pack_double(pk, json_real_value(v)); break;
    case JSON_TRUE: bad = msgpack_pack_true(pk); break;
    case JSON_FALSE: bad = msgpack_pack_false(pk); break;
    default: bad = msgpack_pack_nil(pk); break;
    }
    return bad ? STJ_E_NOMEM : 0;
}

int stj_json_to_msgpack(const char *json, char **out, size_t *len, char *err, size_t errlen)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    json_error_t jerr;
    json_t *root;
    int rc;

    *out = NULL;
    *len = 0;
    if (!json)
        return fail(err, errlen, STJ_E_INVAL, "args: no JSON given");
    /* DECODE_ANY so that a scalar is named below rather than by jansson's parser. */
    root = json_loads(json, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!root)
        return fail(err, errlen, STJ_E_INVAL, "args: bad JSON at line %d column %d: %s", jerr.line,
                    jerr.column, jerr.text);
    if (!json_is_object(root)) {
        rc = fail(err, errlen, STJ_E_INVAL, "args must be a JSON object, got %s", json_kind(root));
        json_decref(root);
        return rc;
    }
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    rc = pack_json(&pk, root, 0, err, errlen);
    json_decref(root);
    if (rc < 0) {
        msgpack_sbuffer_destroy(&sb);
        return rc == STJ_E_NOMEM ? fail(err, errlen, rc, "out of memory") : rc;
    }
    *len = sb.size;
    *out = msgpack_sbuffer_release(&sb);
    return 0;
}

/* ---- jobs ---- */

stj_job *stj_job_new(const char *type)
{
    stj_job *j;

    if (!type || !type[0])
        return NULL;
    j = calloc(1, sizeof *j);
    if (!j)
        return NULL;
    j->type = strdup(type);
    j->max_attempts = -1;
    if (!j->type || stj_jid_generate(j->jid) < 0) {
        stj_job_free(j);
        return NULL;
    }
    return j;
}

void stj_job_free(stj_job *j)
{
    if (!j)
        return;
    free(j->type);
    free(j->queue);
    free(j->args);
    free(j);
}

int stj_job_set_jid(stj_job *j, const char *jid)
{
    size_t n;

    if (!jid)
        return stj_jid_generate(j->jid);
    n = strlen(jid);
    if (n < 1 || n > STJ_JID_MAX)
        return STJ_E_INVAL;
    memcpy(j->jid, jid, n + 1);
    return 0;
}

const char *stj_job_jid(const stj_job *j)
{
    return j->jid;
}

int stj_job_set_queue(stj_job *j, const char *queue)
{
    char *copy = NULL;

    if (queue && !queue[0])
        return STJ_E_INVAL;
    if (queue && !(copy = strdup(queue)))
        return STJ_E_NOMEM;
    free(j->queue);
    j->queue = copy;
    return 0;
}

const char *stj_job_queue(const stj_job *j)
{
    return j->queue ? j->queue : stj_default_queue(j->type);
}

int stj_job_set_max_attempts(stj_job *j, int64_t n)
{
    if (n == 0)
        return STJ_E_INVAL;
    j->max_attempts = n < 0 ? -1 : n;
    return 0;
}

void stj_job_set_created_at(stj_job *j, int64_t ms)
{
    j->created_at = ms;
}

/* n lowercase hex digits, not all zero when nonzero is set. */
static int tp_hex(const char *s, int n, int nonzero)
{
    int any = 0;
    for (int i = 0; i < n; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
        any |= s[i] != '0';
    }
    return any || !nonzero;
}

int stj_job_set_traceparent(stj_job *j, const char *tp)
{
    if (!tp || !*tp) {
        j->traceparent[0] = '\0';
        return 0;
    }
    /* W3C trace context, version 00: 00-<trace-id 32>-<parent-id 16>-<flags 2> */
    if (strlen(tp) != 55 || strncmp(tp, "00-", 3) != 0 || tp[35] != '-' || tp[52] != '-' ||
        !tp_hex(tp + 3, 32, 1) || !tp_hex(tp + 36, 16, 1) || !tp_hex(tp + 53, 2, 0))
        return STJ_E_INVAL;
    memcpy(j->traceparent, tp, 56);
    return 0;
}

static int encode_into(const stj_job *j, int64_t now, msgpack_sbuffer *sb)
{
    struct env_new n = {
        .jid = j->jid,
        .type = j->type,
        .queue = stj_job_queue(j),
        .args = j->args,
        .args_len = j->args_len,
        .created_at = j->created_at ? j->created_at : now,
        .max_attempts = j->max_attempts,
        .traceparent = j->traceparent[0] ? j->traceparent : NULL,
    };
    int rc = env_new(&n, sb);

    if (rc == -ENOMEM)
        return STJ_E_NOMEM;
    return rc < 0 ? STJ_E_INVAL : 0;
}

int stj_job_encode(const stj_job *j, char **out, size_t *len)
{
    msgpack_sbuffer sb;
    int rc;

    msgpack_sbuffer_init(&sb);
    rc = encode_into(j, now_ms(), &sb);
    if (rc < 0) {
        msgpack_sbuffer_destroy(&sb);
        return rc;
    }
    *len = sb.size;
    *out = msgpack_sbuffer_release(&sb);
    return 0;
}

/* Would a worker accept an envelope with these args? Asks the worker's decoder. */
static int check_args(const char *args, size_t len, char *err, size_t errlen)
{
    struct env_new n = {.jid = "x", .type = "t", .args = args, .args_len = len, .max_attempts = -1};
    char why[256] = "must be exactly one msgpack map, nested at most 31 levels";
    msgpack_sbuffer sb;
    struct env e;
    int rc;

    msgpack_sbuffer_init(&sb);
    rc = env_new(&n, &sb);
    if (rc == 0) {
        rc = env_decode(&e, sb.data, sb.size, (size_t)-1, why, sizeof why);
        env_free(&e);
    }
    msgpack_sbuffer_destroy(&sb);
    if (rc == -ENOMEM)
        return fail(err, errlen, STJ_E_NOMEM, "out of memory");
    return rc < 0 ? fail(err, errlen, STJ_E_INVAL, "args: %s", why) : 0;
}

int stj_job_set_args_msgpack(stj_job *j, const void *args, size_t len, char *err, size_t errlen)
{
    char *copy;
    int rc;

    if (!args || len == 0)
        return fail(err, errlen, STJ_E_INVAL, "args: empty");
    rc = check_args(args, len, err, errlen);
    if (rc < 0)
        return rc;
    copy = malloc(len);
    if (!copy)
        return fail(err, errlen, STJ_E_NOMEM, "out of memory");
    memcpy(copy, args, len);
    free(j->args);
    j->args = copy;
    j->args_len = len;
    return 0;
}

int stj_job_set_args_json(stj_job *j, const char *json, char *err, size_t errlen)
{
    char *buf = NULL;
    size_t len = 0;
    int rc = stj_json_to_msgpack(json, &buf, &len, err, errlen);

    if (rc < 0)
        return rc;
    rc = stj_job_set_args_msgpack(j, buf, len, err, errlen);
    free(buf);
    return rc;
}

/* ---- connection ---- */

static int reply_error(stj_client *c, redisReply *r, const char *what, char *err, size_t errlen)
{
    if (!r)
        return fail(err, errlen, STJ_E_CONN, "Redis at %s: %s: %s", c->where, what,
                    c->rc->errstr[0] ? c->rc->errstr : "connection lost");
    if (r->type == REDIS_REPLY_ERROR)
        return fail(err, errlen, STJ_E_REDIS, "Redis at %s: %s: %s", c->where, what, r->str);
    return 0;
}

/* AUTH [user] password, then SELECT db; Redis's answers carry no secret. */
static int handshake(stj_client *c, const struct rurl *u, char *err, size_t errlen)
{
    redisReply *r;
    int rc = 0;

    if (u->password[0]) {
        if (u->user[0])
            r = redisCommand(c->rc, "AUTH %s %s", u->user, u->password);
        else
            r = redisCommand(c->rc, "AUTH %s", u->password);
        rc = reply_error(c, r, "AUTH", err, errlen);
        freeReplyObject(r);
    }
    if (rc == 0 && u->db) {
        r = redisCommand(c->rc, "SELECT %d", u->db);
        rc = reply_error(c, r, "SELECT", err, errlen);
        freeReplyObject(r);
    }
    return rc;
}

stj_client *stj_connect(const char *redis_url, const char *prefix, char *err, size_t errlen)
{
    struct timeval connect_tv = {CONNECT_TIMEOUT_S, 0}, io_tv = {IO_TIMEOUT_S, 0};
    stj_client *c;
    struct rurl u;
    char why[256];

    if (!redis_url || !redis_url[0])
        redis_url = DEFAULT_URL;
    if (!prefix || !prefix[0])
        prefix = DEFAULT_PREFIX;
    if (rurl_parse(redis_url, &u, why, sizeof why) < 0) {
        fail(err, errlen, STJ_E_INVAL, "bad Redis URL: %s", why);
        return NULL;
    }
    c = calloc(1, sizeof *c);
    if (!c || !(c->prefix = strdup(prefix))) {
        fail(err, errlen, STJ_E_NOMEM, "out of memory");
        goto fail;
    }
    if (u.path[0]) {
        snprintf(c->where, sizeof c->where, "%s", u.path);
        c->rc = redisConnectUnixWithTimeout(u.path, connect_tv);
    } else {
        snprintf(c->where, sizeof c->where, "%s:%d", u.host, u.port);
        c->rc = redisConnectWithTimeout(u.host, u.port, connect_tv);
    }
    if (!c->rc || c->rc->err) {
        fail(err, errlen, STJ_E_CONN, "cannot connect to Redis at %s: %s", c->where,
             c->rc ? c->rc->errstr : "out of memory");
        goto fail;
    }
    redisSetTimeout(c->rc, io_tv);
    if (handshake(c, &u, err, errlen) < 0)
        goto fail;
    explicit_bzero(u.password, sizeof u.password);
    return c;
fail:
    explicit_bzero(u.password, sizeof u.password);
    stj_free(c);
    return NULL;
}

void stj_free(stj_client *c)
{
    if (!c)
        return;
    if (c->rc)
        redisFree(c->rc);
    free(c->prefix);
    free(c);
}

const char *stj_client_prefix(const stj_client *c)
{
    return c->prefix;
}

struct redisContext *stj_client_redis(stj_client *c)
{
    return c->rc;
}

/* ---- pushing ---- */

/*
 * One batch being pushed: the envelopes back to back in sb, job i at
 * off[i]..off[i+1]; argv/argvlen hold one command at a time (hiredis copies it
 * into its output buffer when appended).
 */
struct batch {
    msgpack_sbuffer sb;
    size_t off[STJ_PIPELINE_JOBS + 1];
    const char *argv[2 * STJ_PIPELINE_JOBS + 2];
    size_t argvlen[2 * STJ_PIPELINE_JOBS + 2];
    size_t cmd_jobs[STJ_PIPELINE_JOBS]; /* jobs carried by each appended command */
    size_t ncmds;
};

static char *key_join(const char *prefix, const char *middle, const char *name)
{
    size_t n = strlen(prefix) + strlen(middle) + strlen(name) + 1;
    char *key = malloc(n);

    if (key)
        snprintf(key, n, "%s%s%s", prefix, middle, name);
    return key;
}

static int encode_batch(struct batch *b, stj_job *const *jobs, size_t n, char *err, size_t errlen)
{
    int64_t now = now_ms();

    for (size_t i = 0; i < n; i++) {
        int rc;

        b->off[i] = b->sb.size;
        rc = encode_into(jobs[i], now, &b->sb);
        if (rc < 0)
            return fail(err, errlen, rc, "job %s (%s): %s", jobs[i]->jid, jobs[i]->type,
                        rc == STJ_E_NOMEM ? "out of memory" : "cannot be encoded");
    }
    b->off[n] = b->sb.size;
    return 0;
}

static void append_cmd(stj_client *c, struct batch *b, int argc, size_t jobs)
{
    redisAppendCommandArgv(c->rc, argc, b->argv, b->argvlen);
    b->cmd_jobs[b->ncmds++] = jobs;
}

/* LPUSH P:queue:<q> for each run of consecutive jobs with the same queue. */
static int append_lpushes(stj_client *c, struct batch *b, stj_job *const *jobs, size_t n)
{
    for (size_t i = 0; i < n;) {
        const char *queue = stj_job_queue(jobs[i]);
        char *key = key_join(c->prefix, ":queue:", queue);
        int argc = 2;
        size_t start = i;

        if (!key)
            return STJ_E_NOMEM;
        b->argv[0] = "LPUSH";
        b->argvlen[0] = 5;
        b->argv[1] = key;
        b->argvlen[1] = strlen(key);
        for (; i < n && strcmp(stj_job_queue(jobs[i]), queue) == 0; i++, argc++) {
            b->argv[argc] = b->sb.data + b->off[i];
            b->argvlen[argc] = b->off[i + 1] - b->off[i];
        }
        append_cmd(c, b, argc, i - start);
        free(key);
    }
    return 0;
}

/* One ZADD P:scheduled with a score/member pair per job. */
static int append_zadd(stj_client *c, struct batch *b, size_t n, int64_t at_ms)
{
    char score[24];
    char *key = key_join(c->prefix, ":scheduled", "");
    int argc = 2;

    if (!key)
        return STJ_E_NOMEM;
    snprintf(score, sizeof score, "%lld", (long long)at_ms);
    b->argv[0] = "ZADD";
    b->argvlen[0] = 4;
    b->argv[1] = key;
    b->argvlen[1] = strlen(key);
    for (size_t i = 0; i < n; i++, argc += 2) {
        b->argv[argc] = score;
        b->argvlen[argc] = strlen(score);
        b->argv[argc + 1] = b->sb.data + b->off[i];
        b->argvlen[argc + 1] = b->off[i + 1] - b->off[i];
    }
    append_cmd(c, b, argc, n);
    free(key);
    return 0;
}

/* Reads every reply of the batch, even after an error, so the connection stays in step. */
static int read_replies(stj_client *c, struct batch *b, size_t *pushed, char *err, size_t errlen)
{
    int rc = 0;

    for (size_t i = 0; i < b->ncmds; i++) {
        redisReply *r = NULL;
        int e;

        if (redisGetReply(c->rc, (void **)&r) != REDIS_OK)
            r = NULL;
        e = reply_error(c, r, "push", err, errlen);
        if (e == 0)
            *pushed += b->cmd_jobs[i];
        else if (rc == 0)
            rc = e;
        freeReplyObject(r);
        if (e == STJ_E_CONN)
            break;
    }
    return rc;
}

/* at_ms < 0: enqueue; otherwise schedule at at_ms. n <= STJ_PIPELINE_JOBS. */
static int push_batch(stj_client *c, stj_job *const *jobs, size_t n, int64_t at_ms, size_t *pushed,
                      char *err, size_t errlen)
{
    struct batch *b = malloc(sizeof *b);
    int rc;

    if (!b)
        return fail(err, errlen, STJ_E_NOMEM, "out of memory");
    msgpack_sbuffer_init(&b->sb);
    b->ncmds = 0;
    rc = encode_batch(b, jobs, n, err, errlen);
    if (rc == 0)
        rc = at_ms < 0 ? append_lpushes(c, b, jobs, n) : append_zadd(c, b, n, at_ms);
    if (rc == STJ_E_NOMEM)
        fail(err, errlen, rc, "out of memory");
    /* Commands already appended are read even when a later one could not be built. */
    if (b->ncmds > 0) {
        int r = read_replies(c, b, pushed, err, errlen);
        rc = rc ? rc : r;
    }
    msgpack_sbuffer_destroy(&b->sb);
    free(b);
    return rc;
}

static int push_many(stj_client *c, stj_job *const *jobs, size_t n, int64_t at_ms, size_t *pushed,
                     char *err, size_t errlen)
{
    size_t done = 0;
    int rc = 0;

    for (size_t i = 0; i < n && rc == 0; i += STJ_PIPELINE_JOBS) {
        size_t k = n - i < STJ_PIPELINE_JOBS ? n - i : STJ_PIPELINE_JOBS;
        rc = push_batch(c, jobs + i, k, at_ms, &done, err, errlen);
    }
    if (pushed)
        *pushed = done;
    return rc;
}

int stj_enqueue_many(stj_client *c, stj_job *const *jobs, size_t n, size_t *pushed, char *err,
                     size_t errlen)
{
    return push_many(c, jobs, n, -1, pushed, err, errlen);
}

int stj_schedule_many(stj_client *c, stj_job *const *jobs, size_t n, int64_t at_ms, size_t *pushed,
                      char *err, size_t errlen)
{
    if (at_ms < 0) {
        if (pushed)
            *pushed = 0;
        return fail(err, errlen, STJ_E_INVAL, "schedule: time %lld is before the epoch",
                    (long long)at_ms);
    }
    return push_many(c, jobs, n, at_ms, pushed, err, errlen);
}

/* The casts below are safe: pushing never writes to a job. The _many functions take
 * stj_job *const * because C, unlike C++, will not turn stj_job ** into
 * const stj_job *const * without one at every caller. */
int stj_enqueue(stj_client *c, const stj_job *j, char *err, size_t errlen)
{
    stj_job *one = (stj_job *)j;

    return stj_enqueue_many(c, &one, 1, NULL, err, errlen);
}

int stj_schedule(stj_client *c, const stj_job *j, int64_t at_ms, char *err, size_t errlen)
{
    stj_job *one = (stj_job *)j;

    return stj_schedule_many(c, &one, 1, at_ms, NULL, err, errlen);
}
