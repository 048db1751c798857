/*
 * ops.c - stellerctl's operator verbs: dead, retry, queue and workers.
 *
 *   dead ls [--type T] [--limit N] [--json]   the dead-letter list, newest first
 *   dead show JID [--json]                    one dead record, every key
 *   dead retry JID | --all | --type T         back to their queues, attempts reset
 *   dead purge --older-than D | --yes         delete old records, or all of them
 *   retry ls [--limit N] [--json]             jobs waiting to retry, soonest first
 *   retry now JID                             make a waiting retry due now
 *   queue pause NAME | queue resume NAME      P:paused, which fetch.lua obeys
 *   workers [--json]                          P:workers and their heartbeats
 *   schedule [--json]                         the config's schedule, next and last slots
 *
 * Reading: P:dead and P:retry are read in pages (LRANGE, ZRANGE) and each
 * element decoded with msgpack-c; nothing is loaded whole. A dead element is
 * either an envelope the worker rewrote or a malformed record ("malformed":
 * true, "raw": the refused bytes); both forms are in docs/PROTOCOL.md.
 *
 * Moving: every move is one Lua script from worker/scripts, embedded at build
 * time, loaded with SCRIPT LOAD and run with EVALSHA, the calls of a page
 * pipelined (EVAL with the source when a SCRIPT FLUSH emptied the cache
 * meanwhile): dead_retry.lua (LREM from P:dead, LPUSH to the queue),
 * retry_now.lua (ZREM from P:retry, LPUSH), dead_purge.lua (LREM a record judged
 * old). Each names the exact bytes it read, so a record that another client moved
 * meanwhile is skipped, never doubled: a job stays in exactly one place.
 *
 * A sweep that takes records out of P:dead walks it from the tail (oldest
 * first) with negative indices, which the workers' LPUSHes at the head do not
 * shift, and examines at most the LLEN it saw at the start, so that a job that
 * dies again while the sweep runs is not retried again by the same sweep.
 */
#include <inttypes.h>
#include <jansson.h>
#include <msgpack.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "cron.h"
#include "envelope.h"
#include "ops.h"
#include "scheduler.h"

#define PAGE 200          /* elements per LRANGE / ZRANGE, and script calls per pipeline */
#define DEFAULT_LIMIT 100 /* rows of dead ls and retry ls */
#define DEFAULT_WIDTH 120 /* terminal columns when stdout is no terminal and COLUMNS unset */
#define MAX_COLS 9

extern const char scr_src_dead_retry[], scr_src_retry_now[], scr_src_dead_purge[];

/* ---- text ---- */

/* Length of the valid UTF-8 sequence at s (n bytes left), or 0 if invalid. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    size_t len;
    uint32_t c;

    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xc2 && s[0] <= 0xdf)
        len = 2, c = s[0] & 0x1f;
    else if (s[0] >= 0xe0 && s[0] <= 0xef)
        len = 3, c = s[0] & 0x0f;
    else if (s[0] >= 0xf0 && s[0] <= 0xf4)
        len = 4, c = s[0] & 0x07;
    else
        return 0;
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        c = c << 6 | (s[i] & 0x3f);
    }
    if ((len == 3 && c < 0x800) || (len == 4 && (c < 0x10000 || c > 0x10ffff)) ||
        (c >= 0xd800 && c <= 0xdfff))
        return 0;
    return len;
}

/*
 * Untrusted bytes as one line of a terminal, malloc'd: valid UTF-8 kept, tabs
 * and line breaks as spaces, other control characters and invalid bytes as '?'.
 * With maxw > 3, text wider than maxw characters ends in "..." at maxw. *width
 * (may be NULL) gets the width in characters (one per code point: close enough
 * for the names and messages shown here).
 */
static char *term_text(const char *s, size_t n, int maxw, int *width)
{
    const unsigned char *u = (const unsigned char *)s;
    char *out = malloc(n + 4), *p = out, *cut = NULL;
    int w = 0;

    if (!out)
        return NULL;
    for (size_t i = 0; i < n; w++) {
        size_t len = utf8_len(u + i, n - i);

        if (maxw > 3 && w == maxw - 3)
            cut = p;
        if (maxw > 3 && w == maxw) {
            memcpy(cut, "...", 4);
            if (width)
                *width = maxw;
            return out;
        }
        if (len == 1 && (u[i] == '\t' || u[i] == '\n' || u[i] == '\r'))
            *p++ = ' ';
        else if (len <= 1 && (u[i] < 0x20 || u[i] >= 0x7f))
            *p++ = '?';
        else
            p = (char *)memcpy(p, u + i, len) + len;
        i += len ? len : 1;
    }
    *p = '\0';
    if (width)
        *width = w;
    return out;
}

/* A JSON string from bytes that should be UTF-8; invalid bytes become U+FFFD. */
static json_t *json_text(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    json_t *j = json_stringn(s, n);
    char *buf, *p;

    if (j)
        return j;
    if (!(buf = malloc(3 * n + 1)))
        return NULL;
    p = buf;
    for (size_t i = 0; i < n;) {
        size_t len = utf8_len(u + i, n - i);

        if (len == 0) {
            p = (char *)memcpy(p, "\xef\xbf\xbd", 3) + 3;
            i++;
        } else {
            p = (char *)memcpy(p, u + i, len) + len;
            i += len;
        }
    }
    j = json_stringn(buf, (size_t)(p - buf));
    free(buf);
    return j;
}

static json_t *json_hex(const char *s, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    char *buf = malloc(2 * n + 1);
    json_t *j;

    if (!buf)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        buf[2 * i] = digits[(unsigned char)s[i] >> 4];
        buf[2 * i + 1] = digits[(unsigned char)s[i] & 15];
    }
    j = json_stringn(buf, 2 * n);
    free(buf);
    return j;
}

/* Prints a JSON value on one line; CTL_OK or CTL_FAILED (out of memory). */
static int print_json(json_t *v)
{
    char *text = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;

    json_decref(v);
    if (!text)
        return ctl_complain(CTL_FAILED, "out of memory");
    printf("%s\n", text);
    free(text);
    return CTL_OK;
}

/* ---- time ---- */

/* ms since the epoch as 2024-06-10T06:13:20Z (with_ms: 06:13:20.123Z), UTC. */
char *ctl_fmt_utc(int64_t ms, int with_ms, char *buf, size_t size)
{
    time_t t = (time_t)(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
    struct tm tm;
    char base[32];

    if (!gmtime_r(&t, &tm) || !strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm)) {
        snprintf(buf, size, "?");
        return buf;
    }
    if (with_ms)
        snprintf(buf, size, "%s.%03dZ", base, (int)(ms - (int64_t)t * 1000));
    else
        snprintf(buf, size, "%sZ", base);
    return buf;
}

/* A duration for a human: 0.4s, 42s, 5m07s, 3h12m, 4d06h. */
static char *fmt_age(int64_t ms, char *buf, size_t size)
{
    int64_t s = (ms < 0 ? -ms : ms) / 1000;
    const char *sign = ms < 0 ? "-" : "";

    if (s < 10)
        snprintf(buf, size, "%s%.1fs", sign, (double)(ms < 0 ? -ms : ms) / 1000);
    else if (s < 60)
        snprintf(buf, size, "%s%" PRId64 "s", sign, s);
    else if (s < 3600)
        snprintf(buf, size, "%s%" PRId64 "m%02" PRId64 "s", sign, s / 60, s % 60);
    else if (s < 86400)
        snprintf(buf, size, "%s%" PRId64 "h%02" PRId64 "m", sign, s / 3600, s / 60 % 60);
    else
        snprintf(buf, size, "%s%" PRId64 "d%02" PRId64 "h", sign, s / 86400, s / 3600 % 24);
    return buf;
}

/* "7d", "12h", "30m", "45s", "2w" to ms; -1 if it is not one of those. */
static int64_t parse_duration(const char *s)
{
    static const struct {
        char unit;
        int64_t ms;
    } units[] = {{'s', 1000}, {'m', 60000}, {'h', 3600000}, {'d', 86400000}, {'w', 604800000}};
    char *end;
    long long n;

    if (!s[0] || s[0] < '0' || s[0] > '9')
        return -1;
    n = strtoll(s, &end, 10);
    if (end == s || !end[0] || end[1] || n < 0 || n > 100LL * 365 * 86400)
        return -1;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (units[i].unit == end[0])
            return n * units[i].ms;
    }
    return -1;
}

/* ---- tables ---- */

/* Columns of the terminal stdout is on, else $COLUMNS, else DEFAULT_WIDTH. */
static int term_width(void)
{
    struct winsize ws;
    const char *env = getenv("COLUMNS");
    long long n;

    if (isatty(STDOUT_FILENO) && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
        return ws.ws_col;
    if (env && ctl_parse_ll(env, 20, 10000, &n) == 0)
        return (int)n;
    return DEFAULT_WIDTH;
}

/*
 * A table printed with aligned columns: the header row, then one row per
 * table_add(). Cells are cleaned with term_text() when added; the last column
 * is cut to what is left of the terminal line when printed. Right-aligned
 * columns are for numbers.
 */
struct table {
    int ncols;
    const char *head[MAX_COLS];
    int right[MAX_COLS];
    char **cells; /* rows * ncols, each malloc'd */
    size_t rows, cap;
};

static int table_add(struct table *t, const char *const *cells, const size_t *lens)
{
    if (t->rows == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 32;
        char **grown = realloc(t->cells, cap * t->ncols * sizeof *grown);

        if (!grown)
            return ctl_complain(CTL_FAILED, "out of memory");
        t->cells = grown;
        t->cap = cap;
    }
    for (int c = 0; c < t->ncols; c++) {
        const char *s = cells[c] ? cells[c] : "";
        size_t n = lens ? lens[c] : strlen(s);
        char *cell = term_text(s, n, 0, NULL);

        if (!cell) {
            for (int k = 0; k < c; k++)
                free(t->cells[t->rows * t->ncols + k]);
            return ctl_complain(CTL_FAILED, "out of memory");
        }
        t->cells[t->rows * t->ncols + c] = cell;
    }
    t->rows++;
    return CTL_OK;
}

static int text_width(const char *s)
{
    int w = 0;

    for (; *s; s++)
        w += ((unsigned char)*s & 0xc0) != 0x80;
    return w;
}

static void put_cell(const char *s, int width, int right, int last)
{
    int pad = width - text_width(s);

    if (right)
        printf("%*s%s", pad > 0 ? pad : 0, "", s);
    else if (last)
        fputs(s, stdout);
    else
        printf("%s%*s", s, pad > 0 ? pad : 0, "");
}

static void table_print(const struct table *t)
{
    int w[MAX_COLS], used = 0, room;

    for (int c = 0; c < t->ncols; c++) {
        w[c] = text_width(t->head[c]);
        for (size_t r = 0; r < t->rows; r++) {
            int cw = text_width(t->cells[r * t->ncols + c]);
            if (cw > w[c])
                w[c] = cw;
        }
        if (c < t->ncols - 1)
            used += w[c] + 2;
    }
    room = term_width() - used;
    if (room < 20)
        room = 20;
    for (int c = 0; c < t->ncols; c++) {
        put_cell(t->head[c], w[c], t->right[c], c == t->ncols - 1);
        fputs(c == t->ncols - 1 ? "\n" : "  ", stdout);
    }
    for (size_t r = 0; r < t->rows; r++) {
        for (int c = 0; c < t->ncols; c++) {
            const char *s = t->cells[r * t->ncols + c];
            char *cut = c == t->ncols - 1 ? term_text(s, strlen(s), room, NULL) : NULL;

            put_cell(cut ? cut : s, w[c], t->right[c], c == t->ncols - 1);
            fputs(c == t->ncols - 1 ? "\n" : "  ", stdout);
            free(cut);
        }
    }
}

static void table_free(struct table *t)
{
    for (size_t i = 0; i < t->rows * t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
    t->cells = NULL;
    t->rows = t->cap = 0;
}

/* ---- msgpack values ---- */

static int key_is(const msgpack_object *k, const char *name)
{
    size_t n = strlen(name);

    return k->type == MSGPACK_OBJECT_STR && k->via.str.size == n &&
           memcmp(k->via.str.ptr, name, n) == 0;
}

/* The value under a string key of a map, or NULL. */
static const msgpack_object *map_get(const msgpack_object *map, const char *name)
{
    for (uint32_t i = 0; map->type == MSGPACK_OBJECT_MAP && i < map->via.map.size; i++) {
        if (key_is(&map->via.map.ptr[i].key, name))
            return &map->via.map.ptr[i].val;
    }
    return NULL;
}

static int get_str(const msgpack_object *map, const char *name, struct env_str *out)
{
    const msgpack_object *v = map_get(map, name);

    if (!v || v->type != MSGPACK_OBJECT_STR)
        return 0;
    *out = (struct env_str){v->via.str.ptr, v->via.str.size};
    return 1;
}

static int get_int(const msgpack_object *map, const char *name, int64_t *out)
{
    const msgpack_object *v = map_get(map, name);

    if (v && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER && v->via.u64 <= INT64_MAX)
        *out = (int64_t)v->via.u64;
    else if (v && v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        *out = v->via.i64;
    else
        return 0;
    return 1;
}

/* Any msgpack value as JSON: bin and ext as hex strings, a non-string map key as
 * its JSON text. NULL when out of memory. */
static json_t *mp_json(const msgpack_object *o)
{
    json_t *j = NULL;

    switch (o->type) {
    case MSGPACK_OBJECT_NIL: return json_null();
    case MSGPACK_OBJECT_BOOLEAN: return json_boolean(o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        return o->via.u64 <= INT64_MAX ? json_integer((json_int_t)o->via.u64)
                                       : json_real((double)o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return json_integer(o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: return json_real(o->via.f64) ?: json_null();
    case MSGPACK_OBJECT_STR: return json_text(o->via.str.ptr, o->via.str.size);
    case MSGPACK_OBJECT_BIN: return json_hex(o->via.bin.ptr, o->via.bin.size);
    case MSGPACK_OBJECT_EXT: return json_hex(o->via.ext.ptr, o->via.ext.size);
    case MSGPACK_OBJECT_ARRAY:
        j = json_array();
        for (uint32_t i = 0; j && i < o->via.array.size; i++) {
            if (json_array_append_new(j, mp_json(&o->via.array.ptr[i])) < 0) {
                json_decref(j);
                return NULL;
            }
        }
        return j;
    case MSGPACK_OBJECT_MAP:
        j = json_object();
        for (uint32_t i = 0; j && i < o->via.map.size; i++) {
            const msgpack_object_kv *kv = &o->via.map.ptr[i];
            json_t *key = kv->key.type == MSGPACK_OBJECT_STR
                              ? json_text(kv->key.via.str.ptr, kv->key.via.str.size)
                              : mp_json(&kv->key);
            char *kt = key && !json_is_string(key) ? json_dumps(key, JSON_ENCODE_ANY) : NULL;
            int bad = !key || (!json_is_string(key) && !kt) ||
                      json_object_setn_new(j, kt ? kt : json_string_value(key),
                                           kt ? strlen(kt) : json_string_length(key),
                                           mp_json(&kv->val)) < 0;

            free(kt);
            json_decref(key);
            if (bad) {
                json_decref(j);
                return NULL;
            }
        }
        return j;
    }
    return json_null();
}

/* ---- records: one element of P:dead or P:retry ---- */

/*
 * What a listing needs of one element. The strings point into the reply the
 * bytes came from (msgpack-c does not copy them), so a rec lives no longer.
 */
struct rec {
    msgpack_unpacked unp;
    const msgpack_object *map; /* NULL: the bytes are not one msgpack map */
    int malformed;             /* "malformed": true, the worker's record of bad bytes */
    struct env_str jid, type, queue, error, raw;
    int64_t attempt, failed_at;
    int has_attempt, has_failed_at;
};

static void rec_read(struct rec *r, const char *bytes, size_t len)
{
    const msgpack_object *m;
    size_t off = 0;

    memset(r, 0, sizeof *r);
    msgpack_unpacked_init(&r->unp);
    if (msgpack_unpack_next(&r->unp, bytes, len, &off) != MSGPACK_UNPACK_SUCCESS || off != len ||
        r->unp.data.type != MSGPACK_OBJECT_MAP)
        return;
    r->map = m = &r->unp.data;
    get_str(m, "jid", &r->jid);
    get_str(m, "type", &r->type);
    get_str(m, "queue", &r->queue);
    get_str(m, "error", &r->error);
    r->has_attempt = get_int(m, "attempt", &r->attempt);
    r->has_failed_at = get_int(m, "failed_at", &r->failed_at);
    const msgpack_object *flag = map_get(m, "malformed"), *raw = map_get(m, "raw");
    r->malformed = flag && flag->type == MSGPACK_OBJECT_BOOLEAN && flag->via.boolean;
    if (raw && raw->type == MSGPACK_OBJECT_BIN)
        r->raw = (struct env_str){raw->via.bin.ptr, raw->via.bin.size};
}

static void rec_free(struct rec *r)
{
    msgpack_unpacked_destroy(&r->unp);
}

static int str_eq(struct env_str s, const char *text)
{
    return s.ptr && s.len == strlen(text) && memcmp(s.ptr, text, s.len) == 0;
}

/* A listing's JSON object for a record; score >= 0 adds due_at (retry ls). */
static json_t *rec_json(const struct rec *r, size_t bytes, int64_t score)
{
    json_t *j = json_object();
    char when[40];

#define STR_OR_NULL(s) ((s).ptr ? json_text((s).ptr, (s).len) : json_null())
    if (!r->map) {
        json_object_set_new(j, "unreadable", json_true());
        json_object_set_new(j, "bytes", json_integer((json_int_t)bytes));
        return j;
    }
    json_object_set_new(j, "jid", STR_OR_NULL(r->jid));
    json_object_set_new(j, "type", STR_OR_NULL(r->type));
    json_object_set_new(j, "queue", STR_OR_NULL(r->queue));
    json_object_set_new(j, "attempt", r->has_attempt ? json_integer(r->attempt) : json_null());
    json_object_set_new(j, "error", STR_OR_NULL(r->error));
    json_object_set_new(j, "failed_at",
                        r->has_failed_at ? json_integer(r->failed_at) : json_null());
    json_object_set_new(j, "failed_at_utc",
                        r->has_failed_at ? json_string(ctl_fmt_utc(r->failed_at, 1, when, sizeof when))
                                         : json_null());
    if (score >= 0) {
        json_object_set_new(j, "due_at", json_integer(score));
        json_object_set_new(j, "due_at_utc", json_string(ctl_fmt_utc(score, 1, when, sizeof when)));
    }
    json_object_set_new(j, "malformed", json_boolean(r->malformed));
    if (r->malformed)
        json_object_set_new(j, "raw_bytes", json_integer((json_int_t)r->raw.len));
#undef STR_OR_NULL
    return j;
}

/* ---- scripts ---- */

struct script {
    const char *name;
    const char *src;
    char sha[41];
};

static int script_load(struct ctl *ctl, struct script *s)
{
    redisReply *r = redisCommand(ctl->rc, "SCRIPT LOAD %s", s->src);
    int rc = ctl_reply_status(ctl, r, s->name);

    if (rc == CTL_OK && (r->type != REDIS_REPLY_STRING || r->len != 40))
        rc = ctl_complain(CTL_FAILED, "SCRIPT LOAD %s: unexpected reply", s->name);
    if (rc == CTL_OK)
        memcpy(s->sha, r->str, 41);
    freeReplyObject(r);
    return rc;
}

/* EVALSHA, sha, numkeys, then at most two keys and two arguments. */
#define CALL_ARGS 7

/* One script call, its words ready for redisAppendCommandArgv, and its result. */
struct call {
    int argc;
    const char *argv[CALL_ARGS];
    size_t len[CALL_ARGS];
    char nkeys[4];
    long long result; /* the script's integer reply; -1 until it ran */
};

/* Starts a call of s (whose sha must outlive the call) with nkeys keys. */
static void call_init(struct call *c, const struct script *s, int nkeys)
{
    snprintf(c->nkeys, sizeof c->nkeys, "%d", nkeys);
    c->argc = 3;
    c->argv[0] = "EVALSHA", c->len[0] = 7;
    c->argv[1] = s->sha, c->len[1] = 40;
    c->argv[2] = c->nkeys, c->len[2] = strlen(c->nkeys);
    c->result = -1;
}

static void call_arg(struct call *c, const char *p, size_t len)
{
    c->argv[c->argc] = p;
    c->len[c->argc++] = len;
}

static int call_reply(struct ctl *ctl, const struct script *s, redisReply *r, struct call *c)
{
    int rc = ctl_reply_status(ctl, r, s->name);

    if (rc == CTL_OK && r->type != REDIS_REPLY_INTEGER)
        rc = ctl_complain(CTL_FAILED, "%s: unexpected reply", s->name);
    if (rc == CTL_OK)
        c->result = r->integer;
    freeReplyObject(r);
    return rc;
}

static int is_noscript(const redisReply *r)
{
    return r && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0;
}

/* The call again as EVAL with the script's source, which needs no cache. */
static redisReply *call_eval(struct ctl *ctl, const struct script *s, const struct call *c)
{
    const char *argv[CALL_ARGS];
    size_t len[CALL_ARGS];

    memcpy(argv, c->argv, sizeof argv);
    memcpy(len, c->len, sizeof len);
    argv[0] = "EVAL", len[0] = 4;
    argv[1] = s->src, len[1] = strlen(s->src);
    return redisCommandArgv(ctl->rc, c->argc, argv, len);
}

/*
 * Runs n calls of one script pipelined; each call's result is set. A call that
 * met NOSCRIPT (the script cache was flushed since SCRIPT LOAD) did nothing, so
 * once every reply is read it runs again with EVAL and the script's source.
 */
static int calls_run(struct ctl *ctl, struct script *s, struct call *calls, int n)
{
    int rc = CTL_OK, again = 0;

    for (int i = 0; i < n; i++)
        redisAppendCommandArgv(ctl->rc, calls[i].argc, calls[i].argv, calls[i].len);
    for (int i = 0; i < n && rc != CTL_UNREACHABLE; i++) {
        redisReply *r = NULL;
        int st;

        if (redisGetReply(ctl->rc, (void **)&r) != REDIS_OK)
            r = NULL;
        if (is_noscript(r)) {
            freeReplyObject(r);
            again = 1;
            calls[i].result = -2;
            continue;
        }
        if ((st = call_reply(ctl, s, r, &calls[i])) != CTL_OK && rc == CTL_OK)
            rc = st;
    }
    for (int i = 0; again && rc == CTL_OK && i < n; i++) {
        if (calls[i].result == -2)
            rc = call_reply(ctl, s, call_eval(ctl, s, &calls[i]), &calls[i]);
    }
    return rc;
}

/* ---- walking P:dead and P:retry ---- */

/* Called with each element; returns CTL_CONTINUE to go on, or the exit code to
 * stop with (CTL_OK: stop, all is well). */
typedef int (*visit_fn)(struct ctl *ctl, const redisReply *el, int64_t score, void *arg);

/* Every element of the list P:dead, newest first (LRANGE pages). */
static int dead_read(struct ctl *ctl, visit_fn fn, void *arg)
{
    for (long long start = 0;; start += PAGE) {
        redisReply *r =
            redisCommand(ctl->rc, "LRANGE %s:dead %lld %lld", ctl->prefix, start, start + PAGE - 1);
        int rc = ctl_reply_status(ctl, r, "LRANGE dead");
        size_t n = rc == CTL_OK ? r->elements : 0;

        if (rc == CTL_OK)
            rc = CTL_CONTINUE;
        for (size_t i = 0; rc == CTL_CONTINUE && i < n; i++)
            rc = fn(ctl, r->element[i], -1, arg);
        freeReplyObject(r);
        if (rc != CTL_CONTINUE)
            return rc;
        if (n < PAGE)
            return CTL_OK;
    }
}

/* Every member of the ZSET P:retry with its score (the due time), soonest first. */
static int retry_read(struct ctl *ctl, visit_fn fn, void *arg)
{
    for (long long start = 0;; start += PAGE) {
        redisReply *r = redisCommand(ctl->rc, "ZRANGE %s:retry %lld %lld WITHSCORES", ctl->prefix,
                                     start, start + PAGE - 1);
        int rc = ctl_reply_status(ctl, r, "ZRANGE retry");
        size_t n = rc == CTL_OK ? r->elements / 2 : 0;

        if (rc == CTL_OK)
            rc = CTL_CONTINUE;
        for (size_t i = 0; rc == CTL_CONTINUE && i < n; i++) {
            const redisReply *score = r->element[2 * i + 1];
            /* RESP2: the score is a string, %.17g of a double */
            rc = fn(ctl, r->element[2 * i], (int64_t)strtod(score->str, NULL), arg);
        }
        freeReplyObject(r);
        if (rc != CTL_CONTINUE)
            return rc;
        if (n < PAGE)
            return CTL_OK;
    }
}

/*
 * A sweep that takes elements out of P:dead, oldest first. pick() decides per
 * element (1: take it out, 0: leave it, -code: stop) and queues a script call
 * for what it takes; take() runs the calls queued for one page.
 */
struct sweep {
    int (*pick)(struct ctl *ctl, struct sweep *sw, const redisReply *el);
    int (*take)(struct ctl *ctl, struct sweep *sw);
    void *arg;
    long long examined, limit; /* limit: LLEN P:dead when the sweep began */
};

static int dead_sweep(struct ctl *ctl, struct sweep *sw)
{
    redisReply *len = redisCommand(ctl->rc, "LLEN %s:dead", ctl->prefix);
    long long kept = 0;
    int rc = ctl_reply_status(ctl, len, "LLEN dead");

    sw->limit = rc == CTL_OK && len->type == REDIS_REPLY_INTEGER ? len->integer : 0;
    freeReplyObject(len);
    while (rc == CTL_OK && sw->examined < sw->limit) {
        long long want = sw->limit - sw->examined < PAGE ? sw->limit - sw->examined : PAGE;
        long long picked = 0;
        redisReply *r = redisCommand(ctl->rc, "LRANGE %s:dead %lld %lld", ctl->prefix,
                                     -(kept + want), -(kept + 1));

        rc = ctl_reply_status(ctl, r, "LRANGE dead");
        if (rc == CTL_OK && r->elements == 0) {
            freeReplyObject(r);
            break;
        }
        /* from the tail of the page: oldest first */
        for (size_t i = rc == CTL_OK ? r->elements : 0; rc == CTL_OK && i-- > 0;) {
            int p = sw->pick(ctl, sw, r->element[i]);

            if (p < 0)
                rc = -p;
            picked += p > 0;
            sw->examined++;
        }
        if (rc == CTL_OK)
            rc = sw->take(ctl, sw);
        /* what was picked left the list, taken by us or by someone before us */
        if (rc == CTL_OK)
            kept += (long long)r->elements - picked;
        freeReplyObject(r);
    }
    return rc;
}

/* ---- dead ls ---- */

struct dead_opts {
    const char *type;
    long long limit;
    int json, all, yes;
    int64_t older_than; /* ms; -1: not given */
    unsigned given;     /* bits of the options given, to refuse ones the sub-verb ignores */
};

struct ls_state {
    const struct dead_opts *o;
    struct table t;
    json_t *list;
    long long shown, more; /* more: 1 when the limit stopped the listing early */
};

static int type_matches(const struct rec *r, const char *type)
{
    return !type || (r->map && !r->malformed && str_eq(r->type, type));
}

/* The cells of one table row, as table_add() takes them. */
struct row {
    const char *cell[MAX_COLS];
    size_t len[MAX_COLS];
    int n;
};

static void row_text(struct row *w, const char *text)
{
    w->cell[w->n] = text;
    w->len[w->n++] = strlen(text);
}

static void row_str(struct row *w, struct env_str s)
{
    w->cell[w->n] = s.ptr ? s.ptr : "";
    w->len[w->n++] = s.ptr ? s.len : 0;
}

/* A retry's due time and how soon: "in 42s", or "due" once it is. */
static void row_due(struct row *w, int64_t score, char *due, char *in, size_t size)
{
    int64_t left = score - ctl_now_ms();
    char age[32];

    ctl_fmt_utc(score, 0, due, size);
    snprintf(in, size, "in %s", fmt_age(left, age, sizeof age));
    row_text(w, due);
    row_text(w, left >= 0 ? in : "due");
}

/* One line of dead ls (score < 0) or retry ls (score: when it is due). */
static int ls_row(struct ls_state *st, const struct rec *r, size_t bytes, int64_t score)
{
    char attempt[24] = "", failed[40] = "", due[40], in[40], kind[48];
    struct row w = {.n = 0};

    if (st->list)
        return json_array_append_new(st->list, rec_json(r, bytes, score)) < 0
                   ? ctl_complain(CTL_FAILED, "out of memory")
                   : CTL_OK;
    if (r->has_attempt)
        snprintf(attempt, sizeof attempt, "%" PRId64, r->attempt);
    if (r->has_failed_at)
        ctl_fmt_utc(r->failed_at, 0, failed, sizeof failed);
    /* for an element that is no record, what it is stands where type and error go */
    if (!r->map)
        snprintf(kind, sizeof kind, "not a msgpack map (%zu bytes)", bytes);
    else if (r->malformed)
        snprintf(kind, sizeof kind, "(malformed, %zu bytes)", r->raw.len);
    row_str(&w, r->jid);
    if (r->map && !r->malformed)
        row_str(&w, r->type);
    else
        row_text(&w, r->map ? kind : "(unreadable)");
    row_str(&w, r->queue);
    row_text(&w, attempt);
    if (score >= 0)
        row_due(&w, score, due, in, sizeof due);
    else
        row_text(&w, failed);
    if (r->map)
        row_str(&w, r->error);
    else
        row_text(&w, kind);
    return table_add(&st->t, w.cell, w.len);
}

static int ls_visit(struct ctl *ctl, const redisReply *el, int64_t score, void *arg)
{
    struct ls_state *st = arg;
    struct rec r;
    int rc = CTL_CONTINUE;

    (void)ctl;
    rec_read(&r, el->str, el->len);
    if (type_matches(&r, st->o->type)) {
        if (st->o->limit && st->shown == st->o->limit) {
            st->more = 1;
            rc = CTL_OK;
        } else {
            rc = ls_row(st, &r, el->len, score);
            st->shown++;
            if (rc == CTL_OK)
                rc = CTL_CONTINUE;
        }
    }
    rec_free(&r);
    return rc;
}

static const char *const dead_heads[] = {"JID", "TYPE", "QUEUE", "ATTEMPT", "FAILED AT", "ERROR"};
static const int dead_right[] = {0, 0, 0, 1, 0, 0};
static const char *const retry_heads[] = {"JID",    "TYPE", "QUEUE", "ATTEMPT",
                                          "DUE AT", "DUE",  "ERROR"};
static const int retry_right[] = {0, 0, 0, 1, 0, 1, 0};

static void ls_init(struct ls_state *st, const struct dead_opts *o, int retry)
{
    const char *const *heads = retry ? retry_heads : dead_heads;
    const int *right = retry ? retry_right : dead_right;

    memset(st, 0, sizeof *st);
    st->o = o;
    st->t.ncols = retry ? 7 : 6;
    for (int c = 0; c < st->t.ncols; c++) {
        st->t.head[c] = heads[c];
        st->t.right[c] = right[c];
    }
    if (o->json)
        st->list = json_array();
}

/* Prints the listing and, in a table, how much the limit left out. */
static int ls_finish(struct ctl *ctl, struct ls_state *st, const char *key, const char *what)
{
    redisReply *r;
    int rc = CTL_OK;

    if (st->list) {
        rc = print_json(st->list);
        st->list = NULL;
    } else if (st->shown == 0) {
        printf("no %s\n", what);
    } else {
        table_print(&st->t);
        if (st->more) {
            r = redisCommand(ctl->rc, "%s %s:%s", strcmp(key, "dead") ? "ZCARD" : "LLEN",
                             ctl->prefix, key);
            if (ctl_reply_status(ctl, r, key) == CTL_OK && r->type == REDIS_REPLY_INTEGER)
                printf("(%lld shown of %lld in %s:%s; --limit 0 shows all)\n", st->shown,
                       r->integer, ctl->prefix, key);
            freeReplyObject(r);
        }
    }
    table_free(&st->t);
    return rc;
}

static int dead_ls(struct ctl *ctl, const struct dead_opts *o)
{
    struct ls_state st;
    int rc;

    ls_init(&st, o, 0);
    rc = dead_read(ctl, ls_visit, &st);
    if (rc == CTL_OK)
        return ls_finish(ctl, &st, "dead", o->type ? "dead jobs of that type" : "dead jobs");
    json_decref(st.list);
    table_free(&st.t);
    return rc;
}

/* ---- dead show ---- */

struct find_state {
    const char *jid;
    redisReply *found; /* a copy of the newest match */
    long long matches;
};

static redisReply *reply_copy(const redisReply *el)
{
    redisReply *c = calloc(1, sizeof *c);

    if (c && !(c->str = malloc(el->len + 1))) {
        free(c);
        return NULL;
    }
    if (c) {
        c->type = REDIS_REPLY_STRING;
        memcpy(c->str, el->str, el->len);
        c->str[el->len] = '\0';
        c->len = el->len;
    }
    return c;
}

/* Is el a record (or envelope) whose jid is jid? */
int ctl_record_has_jid(const redisReply *el, const char *jid)
{
    struct rec r;
    int match;
    rec_read(&r, el->str, el->len);
    match = r.map && str_eq(r.jid, jid);
    rec_free(&r);
    return match;
}

static int find_visit(struct ctl *ctl, const redisReply *el, int64_t score, void *arg)
{
    struct find_state *st = arg;
    int match;

    (void)ctl;
    (void)score;
    match = ctl_record_has_jid(el, st->jid);
    if (match && !st->found && !(st->found = reply_copy(el)))
        return ctl_complain(CTL_FAILED, "out of memory");
    st->matches += match;
    return CTL_CONTINUE;
}

/* Prints the lines of a long value indented under its key, hex 64 digits a line. */
static void show_hex(int keyw, const char *key, const char *p, size_t n)
{
    printf("%-*s  %zu bytes:\n", keyw, key, n);
    for (size_t i = 0; i < n; i += 32) {
        printf("%*s  ", keyw, "");
        for (size_t k = i; k < n && k < i + 32; k++)
            printf("%02x", (unsigned char)p[k]);
        putchar('\n');
    }
}

/* A string value, its lines (an error may have several) aligned under the first. */
static void show_lines(int keyw, const char *key, const char *p, size_t n)
{
    const char *end = p + n;

    printf("%-*s  ", keyw, key);
    for (;;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        char *line = term_text(p, nl ? (size_t)(nl - p) : (size_t)(end - p), 0, NULL);

        printf("%s\n", line ? line : "?");
        free(line);
        if (!nl)
            return;
        p = nl + 1;
        printf("%*s  ", keyw, "");
    }
}

static void show_value(int keyw, const msgpack_object *key, const msgpack_object *v)
{
    char *name = key->type == MSGPACK_OBJECT_STR
                     ? term_text(key->via.str.ptr, key->via.str.size, 0, NULL)
                     : strdup("(non-string key)");
    char when[40], *text = NULL;
    json_t *j;

    if (!name)
        return;
    if (v->type == MSGPACK_OBJECT_BIN) {
        show_hex(keyw, name, v->via.bin.ptr, v->via.bin.size);
        free(name);
        return;
    }
    if (v->type == MSGPACK_OBJECT_STR) {
        show_lines(keyw, name, v->via.str.ptr, v->via.str.size);
        free(name);
        return;
    }
    if ((j = mp_json(v))) {
        text = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
        json_decref(j);
    }
    printf("%-*s  %s", keyw, name, text ? text : "?");
    /* times are ms since the epoch: add the date a reader wants */
    if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER && v->via.u64 > 100000000000ULL &&
        v->via.u64 < 100000000000000ULL && strlen(name) > 3 &&
        strcmp(name + strlen(name) - 3, "_at") == 0)
        printf("  (%s)", ctl_fmt_utc((int64_t)v->via.u64, 1, when, sizeof when));
    putchar('\n');
    free(text);
    free(name);
}

/* A malformed record's raw bytes, when they are msgpack, as JSON: what was sent. */
static void show_raw_decoded(int keyw, const struct rec *r)
{
    msgpack_unpacked unp;
    size_t off = 0;
    json_t *j;
    char *text;

    msgpack_unpacked_init(&unp);
    if (msgpack_unpack_next(&unp, r->raw.ptr, r->raw.len, &off) == MSGPACK_UNPACK_SUCCESS &&
        (j = mp_json(&unp.data))) {
        if ((text = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY)))
            printf("%-*s  %s%s\n", keyw, "(raw read)", text,
                   off < r->raw.len ? " and trailing bytes" : "");
        free(text);
        json_decref(j);
    }
    msgpack_unpacked_destroy(&unp);
}

static int show_record(const struct rec *r, const redisReply *el, int json)
{
    int keyw = 10;

    if (json)
        return print_json(r->map ? mp_json(r->map) : json_hex(el->str, el->len));
    if (!r->map) {
        show_hex(keyw, "(unreadable)", el->str, el->len);
        return CTL_OK;
    }
    for (uint32_t i = 0; i < r->map->via.map.size; i++) {
        const msgpack_object *k = &r->map->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && (int)k->via.str.size > keyw)
            keyw = k->via.str.size > 32 ? 32 : (int)k->via.str.size;
    }
    for (uint32_t i = 0; i < r->map->via.map.size; i++)
        show_value(keyw, &r->map->via.map.ptr[i].key, &r->map->via.map.ptr[i].val);
    if (r->malformed && r->raw.ptr)
        show_raw_decoded(keyw, r);
    return CTL_OK;
}

static int dead_show(struct ctl *ctl, const char *jid, const struct dead_opts *o)
{
    struct find_state st = {.jid = jid};
    struct rec r;
    int rc = dead_read(ctl, find_visit, &st);

    if (rc == CTL_OK && !st.found)
        rc = ctl_complain(CTL_FAILED, "no dead job with jid '%s'", jid);
    if (rc == CTL_OK) {
        rec_read(&r, st.found->str, st.found->len);
        rc = show_record(&r, st.found, o->json);
        rec_free(&r);
        if (st.matches > 1)
            fprintf(stderr, "stellerctl: %lld dead records have jid '%s'; this is the newest\n",
                    st.matches, jid);
    }
    freeReplyObject(st.found);
    return rc;
}

/* ---- dead retry ---- */

/*
 * The envelope a dead record goes back to its queue as: every key of the
 * record in its place, "attempt" set to 0, and the keys of the failures taken
 * out: error, failed_at, retry_at, and crashes (a job that killed workers gets
 * its full poison_limit again, as it gets all its attempts). The record must
 * be a valid envelope (env_decode); its queue, or "default", goes to qkey.
 */
static const char *const failure_keys[] = {"error", "failed_at", "retry_at", "crashes"};

static int is_failure_key(const msgpack_object *k)
{
    for (size_t i = 0; i < sizeof failure_keys / sizeof failure_keys[0]; i++) {
        if (key_is(k, failure_keys[i]))
            return 1;
    }
    return 0;
}

static int fresh_envelope(const struct ctl *ctl, const char *raw, size_t len, msgpack_sbuffer *out,
                          char **qkey, char *err, size_t errlen)
{
    struct env e;
    msgpack_packer pk;
    const msgpack_object_map *m;
    uint32_t keep = 0;
    int bad = 0;

    if (env_decode(&e, raw, len, SIZE_MAX, err, errlen) != ENV_OK) {
        env_free(&e);
        return -1;
    }
    m = &e.root.via.map;
    for (uint32_t i = 0; i < m->size; i++)
        keep += !is_failure_key(&m->ptr[i].key);
    msgpack_packer_init(&pk, out, msgpack_sbuffer_write);
    bad |= msgpack_pack_map(&pk, keep);
    for (uint32_t i = 0; i < m->size; i++) {
        const msgpack_object_kv *kv = &m->ptr[i];

        if (is_failure_key(&kv->key))
            continue;
        bad |= msgpack_pack_object(&pk, kv->key);
        bad |= key_is(&kv->key, "attempt") ? msgpack_pack_int(&pk, 0)
                                           : msgpack_pack_object(&pk, kv->val);
    }
    if (e.queue.ptr && e.queue.len)
        bad |= asprintf(qkey, "%s:queue:%.*s", ctl->prefix, (int)e.queue.len, e.queue.ptr) < 0;
    else
        bad |= asprintf(qkey, "%s:queue:default", ctl->prefix) < 0;
    env_free(&e);
    if (bad)
        snprintf(err, errlen, "out of memory");
    return bad ? -1 : 0;
}

/* What one move of a page queues: the job's jid for messages, its queue key and the
 * fresh envelope; the record's bytes stay in the page's reply. */
struct move {
    char jid[ENV_JID_MAX + 1];
    char *qkey;
    msgpack_sbuffer env;
};

struct retry_state {
    const char *jid, *type; /* what to retry: one jid, one type, or (both NULL) all */
    struct script scr;
    char dead_key[512];
    struct move moves[PAGE];
    struct call calls[PAGE];
    int n;
    long long moved, malformed, invalid, matched;
    int verbose; /* a line per job (a jid was named) */
};

static int retry_wanted(const struct retry_state *st, const struct rec *r)
{
    if (st->jid)
        return r->map && str_eq(r->jid, st->jid);
    return r->map && (!st->type || str_eq(r->type, st->type));
}

/* Returns 1 to take the element (a move was filled), 0 to leave it, -code to stop. */
static int retry_pick(struct ctl *ctl, struct sweep *sw, const redisReply *el)
{
    struct retry_state *st = sw->arg;
    struct move *mv = &st->moves[st->n];
    struct call *c = &st->calls[st->n];
    char err[256], jid[ENV_JID_MAX * 4 + 4];
    struct rec r;
    int take = 0;

    rec_read(&r, el->str, el->len);
    if (!retry_wanted(st, &r) || (st->type && r.malformed))
        goto out;
    st->matched++;
    env_strcpy(jid, sizeof jid, r.jid);
    if (r.malformed) {
        st->malformed++;
        fprintf(stderr,
                "stellerctl: dead record '%s' is malformed (%.*s): its bytes are no job to run, "
                "so it cannot be retried; see 'stellerctl dead show %s'\n",
                jid, (int)r.error.len, r.error.ptr ? r.error.ptr : "", jid);
        goto out;
    }
    msgpack_sbuffer_init(&mv->env);
    if (fresh_envelope(ctl, el->str, el->len, &mv->env, &mv->qkey, err, sizeof err) < 0) {
        msgpack_sbuffer_destroy(&mv->env);
        st->invalid++;
        fprintf(stderr,
                "stellerctl: dead record '%s' is not a valid envelope (%s); left in place\n", jid,
                err);
        goto out;
    }
    env_strcpy(mv->jid, sizeof mv->jid, r.jid);
    call_init(c, &st->scr, 2);
    call_arg(c, st->dead_key, strlen(st->dead_key));
    call_arg(c, mv->qkey, strlen(mv->qkey));
    call_arg(c, el->str, el->len);
    call_arg(c, mv->env.data, mv->env.size);
    st->n++;
    take = 1;
out:
    rec_free(&r);
    return take;
}

static int retry_take(struct ctl *ctl, struct sweep *sw)
{
    struct retry_state *st = sw->arg;
    int rc = calls_run(ctl, &st->scr, st->calls, st->n);

    for (int i = 0; i < st->n; i++) {
        struct move *mv = &st->moves[i];
        long long moved = st->calls[i].result;

        st->moved += moved == 1;
        if (moved == 1 && st->verbose)
            printf("retried %s: back in %s\n", mv->jid, mv->qkey);
        else if (moved == 0)
            fprintf(stderr, "stellerctl: %s left the dead list meanwhile; skipped\n", mv->jid);
        free(mv->qkey);
        msgpack_sbuffer_destroy(&mv->env);
    }
    st->n = 0;
    return rc;
}

static int dead_retry(struct ctl *ctl, const char *jid, const struct dead_opts *o)
{
    struct retry_state *st = calloc(1, sizeof *st);
    struct sweep sw = {.pick = retry_pick, .take = retry_take};
    int rc;

    if (!st)
        return ctl_complain(CTL_FAILED, "out of memory");
    *st = (struct retry_state){.jid = jid,
                               .type = o->type,
                               .verbose = !!jid,
                               .scr = {"dead_retry.lua", scr_src_dead_retry, ""}};
    snprintf(st->dead_key, sizeof st->dead_key, "%s:dead", ctl->prefix);
    sw.arg = st;
    rc = script_load(ctl, &st->scr);
    if (rc == CTL_OK)
        rc = dead_sweep(ctl, &sw);
    if (rc == CTL_OK && jid && !st->matched)
        rc = ctl_complain(CTL_FAILED, "no dead job with jid '%s'", jid);
    else if (rc == CTL_OK && jid && !st->moved)
        rc = CTL_FAILED; /* malformed, invalid or gone: said above */
    else if (rc == CTL_OK && !jid)
        printf("retried %lld dead jobs%s%s\n", st->moved, o->type ? " of type " : "",
               o->type ? o->type : "");
    if (!jid && (st->malformed || st->invalid))
        printf("left %lld malformed and %lld invalid records in the dead list\n", st->malformed,
               st->invalid);
    free(st);
    return rc;
}

/* ---- dead purge ---- */

struct purge_state {
    int64_t cutoff; /* records that failed before this go */
    struct script scr;
    char dead_key[512];
    struct call calls[PAGE];
    int n;
    long long purged;
};

static int purge_pick(struct ctl *ctl, struct sweep *sw, const redisReply *el)
{
    struct purge_state *st = sw->arg;
    struct rec r;
    int old;

    (void)ctl;
    rec_read(&r, el->str, el->len);
    old = r.map && r.has_failed_at && r.failed_at < st->cutoff;
    rec_free(&r);
    if (old) {
        struct call *c = &st->calls[st->n++];

        call_init(c, &st->scr, 1);
        call_arg(c, st->dead_key, strlen(st->dead_key));
        call_arg(c, el->str, el->len);
    }
    return old;
}

static int purge_take(struct ctl *ctl, struct sweep *sw)
{
    struct purge_state *st = sw->arg;
    int rc = calls_run(ctl, &st->scr, st->calls, st->n);

    for (int i = 0; i < st->n; i++)
        st->purged += st->calls[i].result > 0 ? st->calls[i].result : 0;
    st->n = 0;
    return rc;
}

/* Everything: LLEN and DEL in one transaction, so the count is what went. */
static int purge_all(struct ctl *ctl)
{
    redisReply *r;
    int rc;

    redisAppendCommand(ctl->rc, "MULTI");
    redisAppendCommand(ctl->rc, "LLEN %s:dead", ctl->prefix);
    redisAppendCommand(ctl->rc, "DEL %s:dead", ctl->prefix);
    redisAppendCommand(ctl->rc, "EXEC");
    for (int i = 0; i < 3; i++) {
        if (redisGetReply(ctl->rc, (void **)&r) != REDIS_OK)
            r = NULL;
        rc = ctl_reply_status(ctl, r, "purge");
        freeReplyObject(r);
        if (rc != CTL_OK)
            return rc;
    }
    if (redisGetReply(ctl->rc, (void **)&r) != REDIS_OK)
        r = NULL;
    rc = ctl_reply_status(ctl, r, "purge");
    if (rc == CTL_OK && (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
                         r->element[0]->type != REDIS_REPLY_INTEGER))
        rc = ctl_complain(CTL_FAILED, "purge: %s",
                          r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
                                  r->element[0]->type == REDIS_REPLY_ERROR
                              ? r->element[0]->str
                              : "unexpected reply");
    if (rc == CTL_OK)
        printf("purged %lld dead records (all)\n", r->element[0]->integer);
    freeReplyObject(r);
    return rc;
}

static int dead_purge(struct ctl *ctl, const struct dead_opts *o)
{
    struct purge_state *st;
    struct sweep sw = {.pick = purge_pick, .take = purge_take};
    char when[40];
    int rc;

    if (o->older_than < 0)
        return purge_all(ctl);
    if (!(st = calloc(1, sizeof *st)))
        return ctl_complain(CTL_FAILED, "out of memory");
    st->scr = (struct script){"dead_purge.lua", scr_src_dead_purge, ""};
    st->cutoff = ctl_now_ms() - o->older_than;
    snprintf(st->dead_key, sizeof st->dead_key, "%s:dead", ctl->prefix);
    sw.arg = st;
    rc = script_load(ctl, &st->scr);
    if (rc == CTL_OK)
        rc = dead_sweep(ctl, &sw);
    if (rc == CTL_OK)
        printf("purged %lld dead records that failed before %s\n", st->purged,
               ctl_fmt_utc(st->cutoff, 0, when, sizeof when));
    free(st);
    return rc;
}

/* ---- dead: options and sub-verbs ---- */

enum { G_TYPE = 1, G_LIMIT = 2, G_JSON = 4, G_ALL = 8, G_OLDER = 16, G_YES = 32 };

static const char *const given_names[] = {"--type", "--limit",      "--json",
                                          "--all",  "--older-than", "--yes"};

/* Refuses the options the sub-verb does not take. */
static int check_given(const struct ctl *ctl, const char *verb, const char *sub, unsigned given,
                       unsigned allowed)
{
    for (int i = 0; i < 6; i++) {
        if (given & ~allowed & (1u << i))
            return ctl_usage(ctl, "'%s %s' does not take %s", verb, sub, given_names[i]);
    }
    return CTL_CONTINUE;
}

static int dead_parse(struct ctl *ctl, int argc, char **argv, struct dead_opts *o)
{
    static const struct option opts[] = {
        {"type", required_argument, NULL, OPT_TYPE},
        {"limit", required_argument, NULL, OPT_LIMIT},
        {"json", no_argument, NULL, OPT_JSON},
        {"all", no_argument, NULL, OPT_ALL},
        {"older-than", required_argument, NULL, OPT_OLDER_THAN},
        {"yes", no_argument, NULL, OPT_YES},
        {NULL, 0, NULL, 0},
    };
    int opt;

    *o = (struct dead_opts){.limit = DEFAULT_LIMIT, .older_than = -1};
    while ((opt = ctl_next_opt(ctl, argc, argv, opts)) != -1) {
        switch (opt) {
        case OPT_TYPE:
            o->type = optarg;
            o->given |= G_TYPE;
            if (!optarg[0])
                return ctl_usage(ctl, "--type must not be empty");
            break;
        case OPT_LIMIT:
            o->given |= G_LIMIT;
            if (ctl_parse_ll(optarg, 0, 1000000000, &o->limit) < 0)
                return ctl_usage(ctl, "--limit wants a count (0: all), got '%s'", optarg);
            break;
        case OPT_JSON: o->json = 1, o->given |= G_JSON; break;
        case OPT_ALL: o->all = 1, o->given |= G_ALL; break;
        case OPT_YES: o->yes = 1, o->given |= G_YES; break;
        case OPT_OLDER_THAN:
            o->given |= G_OLDER;
            if ((o->older_than = parse_duration(optarg)) < 0)
                return ctl_usage(ctl,
                                 "--older-than wants a number and a unit (s, m, h, d, w), "
                                 "like 7d or 12h; got '%s'",
                                 optarg);
            break;
        default: return ctl->status;
        }
    }
    return CTL_CONTINUE;
}

/* The sub-verb's checks, then a connection; CTL_CONTINUE to run it. */
static int dead_check(struct ctl *ctl, const char *sub, int nargs, const struct dead_opts *o)
{
    static const struct {
        const char *name;
        unsigned allowed;
        int min, max; /* arguments after the sub-verb */
    } subs[] = {
        {"ls", G_TYPE | G_LIMIT | G_JSON, 0, 0},
        {"show", G_JSON, 1, 1},
        {"retry", G_ALL | G_TYPE, 0, 1},
        {"purge", G_OLDER | G_YES, 0, 0},
    };
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++) {
        if (strcmp(sub, subs[i].name) != 0)
            continue;
        if (nargs < subs[i].min)
            return ctl_usage(ctl, "'dead %s' needs a JID", sub);
        if (nargs > subs[i].max)
            return ctl_usage(ctl, "'dead %s' takes %s", sub,
                             subs[i].max ? "one JID" : "no arguments");
        return check_given(ctl, "dead", sub, o->given, subs[i].allowed);
    }
    return ctl_usage(ctl, "unknown 'dead' command '%s' (ls, show, retry, purge)", sub);
}

int cmd_dead(struct ctl *ctl, int argc, char **argv)
{
    struct dead_opts o;
    const char *sub, *jid;
    int nargs, rc = dead_parse(ctl, argc, argv, &o);

    if (rc != CTL_CONTINUE)
        return rc;
    if (optind >= argc)
        return ctl_usage(ctl, "'dead' needs a command: ls, show, retry or purge");
    sub = argv[optind];
    nargs = argc - optind - 1;
    jid = nargs ? argv[optind + 1] : NULL;
    if ((rc = dead_check(ctl, sub, nargs, &o)) != CTL_CONTINUE)
        return rc;
    if (strcmp(sub, "retry") == 0 && (!!jid + o.all + !!o.type) != 1)
        return ctl_usage(ctl, "'dead retry' wants one of: a JID, --all, --type T");
    if (strcmp(sub, "purge") == 0 && o.older_than < 0 && !o.yes)
        return ctl_usage(ctl, "'dead purge' without --older-than deletes every dead record: "
                              "add --yes to mean it");
    if ((rc = ctl_connect(ctl)) != CTL_OK)
        return rc;
    if (strcmp(sub, "ls") == 0)
        return dead_ls(ctl, &o);
    if (strcmp(sub, "show") == 0)
        return dead_show(ctl, jid, &o);
    if (strcmp(sub, "retry") == 0)
        return dead_retry(ctl, jid, &o);
    return dead_purge(ctl, &o);
}

const char dead_help[] =
    "The dead-letter list P:dead: jobs that will not run again, newest first.\n"
    "\n"
    "  dead ls [--type T] [--limit N] [--json]\n"
    "      one line per record, newest first: jid, type, queue, attempt, when it\n"
    "      failed (UTC) and the error, cut to the terminal's width. Malformed records\n"
    "      (bytes that were no valid envelope) show as \"(malformed, N bytes)\".\n"
    "      --type T keeps jobs of type T; --limit N shows N (default 100, 0: all).\n"
    "      --json: one array of {jid, type, queue, attempt, error (whole), failed_at\n"
    "      (ms), failed_at_utc, malformed, raw_bytes (malformed only)}; an element\n"
    "      that is no msgpack map at all as {unreadable: true, bytes}.\n"
    "  dead show JID [--json]\n"
    "      every key of the newest record with that jid, args as JSON, times also\n"
    "      in UTC, a malformed record's raw bytes in hex. --json: the record as one\n"
    "      JSON object (bin values as hex strings).\n"
    "  dead retry JID | --all | --type T\n"
    "      puts jobs back at the end of their queue (\"queue\" key, else default),\n"
    "      as fresh jobs: attempt 0, error, failed_at, retry_at and crashes removed,\n"
    "      every other key kept. Each move is atomic (dead_retry.lua); a record that\n"
    "      someone else moved meanwhile is skipped. Malformed records cannot be\n"
    "      retried and stay. Exit 1 when no record has that JID.\n"
    "  dead purge --older-than D | --yes\n"
    "      deletes the records that failed more than D ago (D: a number and s, m, h,\n"
    "      d or w, like 30m, 12h, 7d), or with --yes alone every record; prints how\n"
    "      many.\n";

/* ---- retry ls, retry now ---- */

static int retry_ls(struct ctl *ctl, const struct dead_opts *o)
{
    struct ls_state st;
    int rc;

    ls_init(&st, o, 1);
    rc = retry_read(ctl, ls_visit, &st);
    if (rc == CTL_OK)
        return ls_finish(ctl, &st, "retry", "jobs waiting to retry");
    json_decref(st.list);
    table_free(&st.t);
    return rc;
}

/* Members of P:retry with the jid, copied: the moves run after the walk. */
struct retry_find {
    const char *jid;
    redisReply **found;
    size_t n, cap;
};

static int retry_find_visit(struct ctl *ctl, const redisReply *el, int64_t score, void *arg)
{
    struct retry_find *st = arg;

    (void)ctl;
    (void)score;
    if (!ctl_record_has_jid(el, st->jid))
        return CTL_CONTINUE;
    if (st->n == st->cap) {
        size_t cap = st->cap ? 2 * st->cap : 4;
        redisReply **grown = realloc(st->found, cap * sizeof *grown);
        if (!grown)
            return ctl_complain(CTL_FAILED, "out of memory");
        st->found = grown;
        st->cap = cap;
    }
    if (!(st->found[st->n] = reply_copy(el)))
        return ctl_complain(CTL_FAILED, "out of memory");
    st->n++;
    return CTL_CONTINUE;
}

/* The queue key an envelope goes to, as promote.lua decides it. */
static char *queue_key_of(const struct ctl *ctl, const redisReply *el)
{
    struct rec r;
    char *key = NULL;
    int bad;

    rec_read(&r, el->str, el->len);
    if (r.queue.ptr && r.queue.len)
        bad = asprintf(&key, "%s:queue:%.*s", ctl->prefix, (int)r.queue.len, r.queue.ptr) < 0;
    else
        bad = asprintf(&key, "%s:queue:default", ctl->prefix) < 0;
    rec_free(&r);
    return bad ? NULL : key;
}

static int retry_move(struct ctl *ctl, struct script *scr, const redisReply *el, const char *jid)
{
    char retry_key[512], *qkey = queue_key_of(ctl, el);
    struct call c;
    int rc;

    if (!qkey)
        return ctl_complain(CTL_FAILED, "out of memory");
    snprintf(retry_key, sizeof retry_key, "%s:retry", ctl->prefix);
    call_init(&c, scr, 2);
    call_arg(&c, retry_key, strlen(retry_key));
    call_arg(&c, qkey, strlen(qkey));
    call_arg(&c, el->str, el->len);
    rc = calls_run(ctl, scr, &c, 1);
    if (rc == CTL_OK && c.result == 1)
        printf("%s: moved to %s\n", jid, qkey);
    else if (rc == CTL_OK)
        rc = ctl_complain(CTL_FAILED, "%s: no longer in %s (it came due and went to its queue)",
                          jid, retry_key);
    free(qkey);
    return rc;
}

static int retry_now(struct ctl *ctl, const char *jid)
{
    struct retry_find st = {.jid = jid};
    struct script scr = {"retry_now.lua", scr_src_retry_now, ""};
    int rc = retry_read(ctl, retry_find_visit, &st);

    if (rc == CTL_OK && st.n == 0)
        rc = ctl_complain(CTL_FAILED, "no job with jid '%s' waits to retry", jid);
    if (rc == CTL_OK)
        rc = script_load(ctl, &scr);
    for (size_t i = 0; rc == CTL_OK && i < st.n; i++)
        rc = retry_move(ctl, &scr, st.found[i], jid);
    for (size_t i = 0; i < st.n; i++)
        freeReplyObject(st.found[i]);
    free(st.found);
    return rc;
}

int cmd_retry(struct ctl *ctl, int argc, char **argv)
{
    struct dead_opts o;
    const char *sub;
    int nargs, rc = dead_parse(ctl, argc, argv, &o);

    if (rc != CTL_CONTINUE)
        return rc;
    if (optind >= argc)
        return ctl_usage(ctl, "'retry' needs a command: ls or now");
    sub = argv[optind];
    nargs = argc - optind - 1;
    if (strcmp(sub, "ls") == 0)
        rc = nargs ? ctl_usage(ctl, "'retry ls' takes no arguments")
                   : check_given(ctl, "retry", sub, o.given, G_LIMIT | G_JSON);
    else if (strcmp(sub, "now") == 0)
        rc = nargs != 1 ? ctl_usage(ctl, "'retry now' takes one JID")
                        : check_given(ctl, "retry", sub, o.given, 0);
    else
        rc = ctl_usage(ctl, "unknown 'retry' command '%s' (ls, now)", sub);
    if (rc != CTL_CONTINUE)
        return rc;
    if ((rc = ctl_connect(ctl)) != CTL_OK)
        return rc;
    return strcmp(sub, "ls") == 0 ? retry_ls(ctl, &o) : retry_now(ctl, argv[optind + 1]);
}

const char retry_help[] =
    "The retry set P:retry: failed jobs waiting for their next attempt.\n"
    "\n"
    "  retry ls [--limit N] [--json]\n"
    "      soonest due first: jid, type, queue, attempt (failures so far), when it\n"
    "      is due (UTC, and how soon) and the last error. --limit N shows N\n"
    "      (default 100, 0: all). --json: one array of {jid, type, queue, attempt,\n"
    "      error, failed_at, failed_at_utc, due_at (ms), due_at_utc, malformed}.\n"
    "  retry now JID\n"
    "      moves the job from P:retry to its queue at once, unchanged, as the\n"
    "      promoter does when it comes due (retry_now.lua, atomic). Exit 1 when no\n"
    "      job with that jid waits.\n";

/* ---- queue pause, queue resume ---- */

int cmd_queue(struct ctl *ctl, int argc, char **argv)
{
    redisReply *r;
    const char *sub, *name;
    int pause, rc;

    if (ctl_next_opt(ctl, argc, argv, NULL) != -1)
        return ctl->status; /* help, version or a bad option: no option of its own */
    if (optind >= argc)
        return ctl_usage(ctl, "'queue' needs a command: pause or resume");
    sub = argv[optind];
    pause = strcmp(sub, "pause") == 0;
    if (!pause && strcmp(sub, "resume") != 0)
        return ctl_usage(ctl, "unknown 'queue' command '%s' (pause, resume)", sub);
    if (argc - optind != 2)
        return ctl_usage(ctl, "'queue %s' takes one queue NAME", sub);
    name = argv[optind + 1];
    if (!name[0])
        return ctl_usage(ctl, "the queue NAME must not be empty");
    if ((rc = ctl_connect(ctl)) != CTL_OK)
        return rc;
    r = redisCommand(ctl->rc, "%s %s:paused %s", pause ? "SADD" : "SREM", ctl->prefix, name);
    rc = ctl_reply_status(ctl, r, pause ? "SADD paused" : "SREM paused");
    if (rc == CTL_OK && r->type == REDIS_REPLY_INTEGER)
        printf("queue %s %s\n", name,
               pause ? (r->integer ? "paused" : "was already paused")
                     : (r->integer ? "resumed" : "was not paused"));
    freeReplyObject(r);
    return rc;
}

const char queue_help[] =
    "Pauses or resumes a queue: its name joins or leaves the set P:paused.\n"
    "\n"
    "  queue pause NAME    workers take nothing more from P:queue:NAME (each fetch\n"
    "                      checks the set, so within a fetch cycle: well under a\n"
    "                      second); jobs already running finish, producers may go on\n"
    "                      pushing\n"
    "  queue resume NAME   workers take from it again\n"
    "\n"
    "'stellerctl stats' lists the queues, their depth and which are paused.\n";

/* ---- workers ---- */

struct wrow {
    char *wid;
    redisReply *hash;   /* HGETALL P:worker:<wid>: empty when the heartbeat expired */
    long long inflight; /* LLEN P:processing:<wid> */
};

static const char *hash_get(const redisReply *h, const char *field)
{
    for (size_t i = 0; h && i + 1 < h->elements; i += 2) {
        if (strcmp(h->element[i]->str, field) == 0)
            return h->element[i + 1]->str;
    }
    return NULL;
}

static int64_t hash_int(const redisReply *h, const char *field, int64_t dflt)
{
    const char *v = hash_get(h, field);

    return v ? strtoll(v, NULL, 10) : dflt;
}

static int wrow_cmp(const void *a, const void *b)
{
    return strcmp(((const struct wrow *)a)->wid, ((const struct wrow *)b)->wid);
}

/* A wid is host:pid:random; the host may hold colons, the last two parts do not. */
static void wid_parts(const char *wid, char *host, size_t hsize, char *pid, size_t psize)
{
    const char *last = strrchr(wid, ':'), *mid = NULL;

    for (const char *p = wid; last && p < last; p++) {
        if (*p == ':')
            mid = p;
    }
    snprintf(host, hsize, "%.*s", mid ? (int)(mid - wid) : 0, wid);
    snprintf(pid, psize, "%.*s", mid ? (int)(last - mid - 1) : 0, mid ? mid + 1 : "");
}

static json_t *worker_json(const struct wrow *w, int64_t now)
{
    const redisReply *h = w->hash;
    int alive = h->elements > 0;
    char host[256], pid[32];
    json_t *j = json_object(), *queues = json_array();
    const char *q = hash_get(h, "queues");

    wid_parts(w->wid, host, sizeof host, pid, sizeof pid);
    for (const char *p = q; p && *p;) {
        size_t n = strcspn(p, ",");
        json_array_append_new(queues, json_text(p, n));
        p += n + (p[n] == ',');
    }
    json_object_set_new(j, "wid", json_text(w->wid, strlen(w->wid)));
    json_object_set_new(j, "alive", json_boolean(alive));
    json_object_set_new(
        j, "host", json_text(hash_get(h, "host") ?: host, strlen(hash_get(h, "host") ?: host)));
    json_object_set_new(j, "pid", json_integer(hash_int(h, "pid", strtoll(pid, NULL, 10))));
    json_object_set_new(j, "queues", alive ? queues : (json_decref(queues), json_null()));
#define INT_OR_NULL(f) (alive ? json_integer(hash_int(h, f, 0)) : json_null())
    json_object_set_new(j, "busy", INT_OR_NULL("busy"));
    json_object_set_new(j, "concurrency", INT_OR_NULL("concurrency"));
    json_object_set_new(j, "started_at", INT_OR_NULL("started_at"));
    json_object_set_new(j, "beat", INT_OR_NULL("beat"));
    json_object_set_new(j, "beat_age_ms",
                        alive ? json_integer(now - hash_int(h, "beat", now)) : json_null());
#undef INT_OR_NULL
    json_object_set_new(j, "processing", json_integer(w->inflight));
    json_object_set_new(j, "mail", alive && hash_get(h, "mail")
                                       ? json_string(hash_get(h, "mail"))
                                       : json_null());
    return j;
}

/* The MAIL column shows only when a live worker has an email transport to report,
 * so that a pool without email types keeps the STATE column wide. */
static int worker_has_mail(const struct wrow *w)
{
    const char *m = w->hash->elements ? hash_get(w->hash, "mail") : NULL;
    return m && strcmp(m, "off") != 0;
}

static int worker_row(struct table *t, const struct wrow *w, int64_t now, int mail)
{
    const redisReply *h = w->hash;
    char host[256], pid[32], busy[48] = "", started[40] = "", beat[40] = "", state[96];
    const char *cells[9];

    wid_parts(w->wid, host, sizeof host, pid, sizeof pid);
    if (h->elements) {
        snprintf(busy, sizeof busy, "%s/%s", hash_get(h, "busy") ?: "?",
                 hash_get(h, "concurrency") ?: "?");
        fmt_age(now - hash_int(h, "started_at", now), started, sizeof started);
        fmt_age(now - hash_int(h, "beat", now), beat, sizeof beat);
        strcat(started, " ago");
        strcat(beat, " ago");
        snprintf(state, sizeof state, "alive");
    } else {
        snprintf(state, sizeof state, "DEAD: heartbeat expired, %lld jobs await the reaper",
                 w->inflight);
    }
    cells[0] = w->wid;
    cells[1] = hash_get(h, "host") ?: host;
    cells[2] = hash_get(h, "pid") ?: pid;
    cells[3] = hash_get(h, "queues") ?: "";
    cells[4] = busy;
    cells[5] = started;
    cells[6] = beat;
    cells[7] = h->elements ? hash_get(h, "mail") ?: "-" : "";
    cells[8] = state;
    if (!mail)
        cells[7] = state;
    return table_add(t, cells, NULL);
}

static int workers_print(struct wrow *rows, size_t n, int json)
{
    static const char *const heads[] = {"WID",     "HOST", "PID",  "QUEUES", "BUSY",
                                        "STARTED", "BEAT", "MAIL", "STATE"};
    struct table t = {.ncols = 8};
    int64_t now = ctl_now_ms();
    int rc = CTL_OK, mail = 0;

    if (json) {
        json_t *list = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(list, worker_json(&rows[i], now));
        return print_json(list);
    }
    if (n == 0) {
        printf("no workers registered\n");
        return CTL_OK;
    }
    for (size_t i = 0; i < n; i++)
        mail |= worker_has_mail(&rows[i]);
    t.ncols = mail ? 9 : 8;
    for (int c = 0; c < t.ncols; c++) {
        t.head[c] = heads[mail || c < 7 ? c : c + 1];
        t.right[c] = c == 2 || c == 4 || c == 5 || c == 6;
    }
    for (size_t i = 0; rc == CTL_OK && i < n; i++)
        rc = worker_row(&t, &rows[i], now, mail);
    if (rc == CTL_OK)
        table_print(&t);
    table_free(&t);
    return rc;
}

/* P:workers, each wid's heartbeat hash and processing list, in two round trips. */
static int workers_collect(struct ctl *ctl, struct wrow **out, size_t *n)
{
    redisReply *set = redisCommand(ctl->rc, "SMEMBERS %s:workers", ctl->prefix);
    struct wrow *rows = NULL;
    int rc = ctl_reply_status(ctl, set, "SMEMBERS workers");

    *n = 0;
    if (rc == CTL_OK && set->elements && !(rows = calloc(set->elements, sizeof *rows)))
        rc = ctl_complain(CTL_FAILED, "out of memory");
    for (size_t i = 0; rc == CTL_OK && i < set->elements; i++) {
        if (!(rows[i].wid = strndup(set->element[i]->str, set->element[i]->len)))
            rc = ctl_complain(CTL_FAILED, "out of memory");
        else
            (*n)++;
    }
    freeReplyObject(set);
    for (size_t i = 0; rc == CTL_OK && i < *n; i++) {
        redisAppendCommand(ctl->rc, "HGETALL %s:worker:%s", ctl->prefix, rows[i].wid);
        redisAppendCommand(ctl->rc, "LLEN %s:processing:%s", ctl->prefix, rows[i].wid);
    }
    for (size_t i = 0; rc == CTL_OK && i < *n; i++) {
        redisReply *len = NULL;

        if (redisGetReply(ctl->rc, (void **)&rows[i].hash) != REDIS_OK)
            rows[i].hash = NULL;
        rc = ctl_reply_status(ctl, rows[i].hash, "HGETALL worker");
        if (rc == CTL_OK && redisGetReply(ctl->rc, (void **)&len) != REDIS_OK)
            len = NULL;
        if (rc == CTL_OK)
            rc = ctl_reply_status(ctl, len, "LLEN processing");
        if (rc == CTL_OK && rows[i].hash->type != REDIS_REPLY_ARRAY)
            rc = ctl_complain(CTL_FAILED, "HGETALL worker: unexpected reply");
        if (rc == CTL_OK)
            rows[i].inflight = len->type == REDIS_REPLY_INTEGER ? len->integer : 0;
        freeReplyObject(len);
    }
    if (rc == CTL_OK && *n)
        qsort(rows, *n, sizeof *rows, wrow_cmp);
    *out = rows;
    return rc;
}

/* The verbs whose only option is --json: parses it, refuses other arguments, and
 * connects. CTL_CONTINUE, or the exit code to return now (--help gives 0). */
static int json_verb_start(struct ctl *ctl, int argc, char **argv, int *json)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, OPT_JSON},
        {NULL, 0, NULL, 0},
    };
    int opt, rc;
    *json = 0;
    while ((opt = ctl_next_opt(ctl, argc, argv, opts)) != -1) {
        if (opt != OPT_JSON)
            return ctl->status;
        *json = 1;
    }
    if (optind < argc)
        return ctl_usage(ctl, "unexpected argument '%s'", argv[optind]);
    rc = ctl_connect(ctl);
    return rc == CTL_OK ? CTL_CONTINUE : rc;
}

int cmd_workers(struct ctl *ctl, int argc, char **argv)
{
    struct wrow *rows = NULL;
    size_t n = 0;
    int json, rc;

    if ((rc = json_verb_start(ctl, argc, argv, &json)) != CTL_CONTINUE)
        return rc;
    rc = workers_collect(ctl, &rows, &n);
    if (rc == CTL_OK)
        rc = workers_print(rows, n, json);
    for (size_t i = 0; i < n; i++) {
        free(rows[i].wid);
        freeReplyObject(rows[i].hash);
    }
    free(rows);
    return rc;
}

const char workers_help[] =
    "The worker processes registered in P:workers, sorted by wid: host, pid, the\n"
    "queues they serve, busy slots out of their concurrency, when they started and\n"
    "their last heartbeat (P:worker:<wid>), and MAIL, the email transport and its\n"
    "circuit breaker (sendgrid:closed, smtp:open ...; error: the transport could not\n"
    "be set up; the column is left out when no live worker has an email job type).\n"
    "A wid whose heartbeat hash has expired\n"
    "shows as DEAD with the jobs left in its processing list: a live worker's\n"
    "reaper will hand them back to their queues and unregister it.\n"
    "\n"
    "  --json   one array of {wid, alive, host, pid, queues, busy, concurrency,\n"
    "           started_at (ms), beat (ms), beat_age_ms, processing, mail}; for a dead\n"
    "           wid host and pid are read from the wid and the rest is null\n";

/* ---- schedule ---- */

/* One entry of the config's schedule list, with what Redis says of it. */
struct srow {
    const struct cfg_schedule *e;
    const char *queue;
    int64_t next; /* s since the epoch; -1: never */
    int64_t last; /* the latest slot enqueued; -1: none recorded */
    char *jid;    /* the job of that slot while its claim lives; NULL otherwise */
};

/* MGET of one key per entry: P:schedule:<name>:<suffix>, suffix "last" or the
 * entry's last slot. The reply is the caller's to free; NULL after a complaint. */
static redisReply *schedule_mget(struct ctl *ctl, const struct srow *rows, int n, int slots,
                                 int *rc)
{
    const char **argv = calloc((size_t)n + 1, sizeof *argv);
    char **keys = calloc((size_t)n + 1, sizeof *keys);
    redisReply *r = NULL;
    int ok = argv && keys;

    for (int i = 0; ok && i < n; i++) {
        if (slots)
            ok = asprintf(&keys[i], "%s:schedule:%s:%lld", ctl->prefix, rows[i].e->name,
                          (long long)rows[i].last) >= 0;
        else
            ok = asprintf(&keys[i], "%s:schedule:%s:last", ctl->prefix, rows[i].e->name) >= 0;
        if (!ok)
            keys[i] = NULL;
        argv[i + 1] = keys[i];
    }
    if (ok) {
        argv[0] = "MGET";
        r = redisCommandArgv(ctl->rc, n + 1, argv, NULL);
        *rc = ctl_reply_status(ctl, r, "MGET schedule keys");
        if (*rc == CTL_OK && (r->type != REDIS_REPLY_ARRAY || r->elements != (size_t)n))
            *rc = ctl_complain(CTL_FAILED, "MGET schedule keys: unexpected reply");
    } else {
        *rc = ctl_complain(CTL_FAILED, "out of memory");
    }
    for (int i = 0; keys && i < n; i++)
        free(keys[i]);
    free(keys);
    free(argv);
    if (*rc != CTL_OK) {
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

/* The last slot of every entry (P:schedule:<name>:last), then the claim of each
 * (its value is the slot's jid): two round trips. */
static int schedule_read(struct ctl *ctl, struct srow *rows, int n)
{
    redisReply *r;
    int rc = CTL_OK;

    if (n == 0)
        return CTL_OK;
    if (!(r = schedule_mget(ctl, rows, n, 0, &rc)))
        return rc;
    for (int i = 0; i < n; i++)
        if (r->element[i]->type == REDIS_REPLY_STRING)
            rows[i].last = strtoll(r->element[i]->str, NULL, 10);
    freeReplyObject(r);
    if (!(r = schedule_mget(ctl, rows, n, 1, &rc)))
        return rc;
    for (int i = 0; i < n; i++)
        if (r->element[i]->type == REDIS_REPLY_STRING && rows[i].last >= 0)
            rows[i].jid = strdup(r->element[i]->str);
    freeReplyObject(r);
    return CTL_OK;
}

static json_t *schedule_json(const struct srow *w)
{
    char when[40];
    json_t *j = json_object(), *args = json_loads(w->e->args ? w->e->args : "{}", 0, NULL);

    json_object_set_new(j, "name", json_string(w->e->name));
    json_object_set_new(j, "cron", json_string(w->e->cron));
    json_object_set_new(j, "type", json_string(w->e->type));
    json_object_set_new(j, "queue", json_string(w->queue));
    json_object_set_new(j, "args", args ? args : json_null());
    json_object_set_new(j, "catch_up", json_boolean(w->e->catch_up));
    json_object_set_new(j, "next", w->next >= 0 ? json_integer(w->next) : json_null());
    json_object_set_new(j, "next_utc",
                        w->next >= 0 ? json_string(ctl_fmt_utc(w->next * 1000, 0, when, sizeof when))
                                     : json_null());
    json_object_set_new(j, "last", w->last >= 0 ? json_integer(w->last) : json_null());
    json_object_set_new(j, "last_utc",
                        w->last >= 0 ? json_string(ctl_fmt_utc(w->last * 1000, 0, when, sizeof when))
                                     : json_null());
    json_object_set_new(j, "last_jid", w->jid ? json_string(w->jid) : json_null());
    return j;
}

static int schedule_print(const struct srow *rows, int n, int json)
{
    static const char *const heads[] = {"NAME",     "CRON",       "TYPE",           "QUEUE",
                                        "CATCH_UP", "NEXT (UTC)", "LAST SLOT (UTC)"};
    struct table t = {.ncols = 7};
    int rc = CTL_OK;

    if (json) {
        json_t *a = json_array();
        for (int i = 0; i < n; i++)
            json_array_append_new(a, schedule_json(&rows[i]));
        return print_json(a);
    }
    memcpy(t.head, heads, sizeof heads);
    for (int i = 0; i < n && rc == CTL_OK; i++) {
        char next[40] = "never", last[40] = "never";
        const struct srow *w = &rows[i];
        const char *cells[7] = {
            w->e->name, w->e->cron, w->e->type, w->queue, w->e->catch_up ? "yes" : "no",
            next,       last};
        if (w->next >= 0)
            ctl_fmt_utc(w->next * 1000, 0, next, sizeof next);
        if (w->last >= 0)
            ctl_fmt_utc(w->last * 1000, 0, last, sizeof last);
        rc = table_add(&t, cells, NULL);
    }
    if (rc == CTL_OK)
        table_print(&t);
    table_free(&t);
    return rc;
}

int cmd_schedule(struct ctl *ctl, int argc, char **argv)
{
    struct config dflt, *cfg = &ctl->cfg;
    struct srow *rows;
    int json, rc, n;
    int64_t now = ctl_now_ms() / 1000;
    char err[512];

    if ((rc = json_verb_start(ctl, argc, argv, &json)) != CTL_CONTINUE)
        return rc;
    if (!ctl->have_cfg) {
        /* No -c FILE: what a daemon started without one runs. */
        if (cfg_load(&dflt, NULL, err, sizeof err) != 0)
            return ctl_complain(CTL_USAGE, "%s", err);
        fprintf(stderr, "stellerctl: no -c FILE given: the built-in default schedule\n");
        cfg = &dflt;
    }
    n = cfg->nschedule;
    rows = calloc((size_t)n + 1, sizeof *rows);
    if (!rows) {
        rc = ctl_complain(CTL_FAILED, "out of memory");
        goto out;
    }
    for (int i = 0; i < n; i++) {
        struct cron c;
        rows[i].e = &cfg->schedule[i];
        rows[i].queue = sched_queue(cfg, rows[i].e);
        rows[i].next =
            cron_parse(rows[i].e->cron, &c, err, sizeof err) == 0 ? cron_next(&c, now) : -1;
        rows[i].last = -1;
    }
    rc = schedule_read(ctl, rows, n);
    if (rc == CTL_OK)
        rc = schedule_print(rows, n, json);
    for (int i = 0; i < n; i++)
        free(rows[i].jid);
    free(rows);
out:
    if (cfg == &dflt)
        cfg_free(&dflt);
    return rc;
}

const char schedule_help[] =
    "The config's schedule entries (-c FILE; without it the built-in default) as the\n"
    "daemon's scheduler runs them: the cron expression (UTC), the job type and the\n"
    "queue its job goes to (the entry's queue, else the type's), whether a missed\n"
    "slot is caught up, the next slot after now, and the latest slot enqueued\n"
    "(P:schedule:<name>:last in Redis; \"never\" when none is recorded).\n"
    "\n"
    "  --json   one array of {name, cron, type, queue, args, catch_up, next, next_utc,\n"
    "           last, last_utc, last_jid}; times in seconds since the epoch, and\n"
    "           last_jid the job of the last slot while its claim key lives (a day)\n";
