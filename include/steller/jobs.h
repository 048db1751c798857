/*
 * steller/jobs.h - libstellerjobs, the C producer library for steller-worker.
 *
 * A producer builds a job (type, args, optional jid, queue and max_attempts),
 * then pushes it to Redis: stj_enqueue() runs it as soon as a worker is free,
 * stj_schedule() at a given time, stj_enqueue_many() pushes many jobs in a few
 * round trips. The bytes written are the envelope of docs/PROTOCOL.md in its
 * canonical key order, so they match that document's test vectors.
 *
 *     char err[256];
 *     stj_client *c = stj_connect(getenv("REDIS_URL"), NULL, err, sizeof err);
 *     stj_job *j = stj_job_new("email.welcome");
 *     if (!c || !j || stj_job_set_args_json(j, "{\"partner_id\": 42}", err, sizeof err) ||
 *         stj_enqueue(c, j, err, sizeof err))
 *         fprintf(stderr, "enqueue: %s\n", err);
 *     stj_job_free(j);
 *     stj_free(c);
 *
 * The connection is synchronous (hiredis, blocking): producers are not on the
 * worker's event loop. A client is not thread-safe; use one per thread. Never
 * share one across fork().
 *
 * Ownership, as in hiredis: stj_connect() and stj_job_new() allocate; the
 * caller frees with stj_free() and stj_job_free(). Every const char * passed in
 * is copied before the call returns. Pointers handed out (stj_job_jid(),
 * stj_client_prefix(), stj_client_redis()) belong to their object and stay valid
 * until it is freed or, for the jid, until the next stj_job_set_jid().
 *
 * Errors are return values: 0, or a negative enum stj_err with a message in the
 * caller's err buffer (err may be NULL when errlen is 0). No message ever holds
 * a password.
 */
#ifndef STELLER_JOBS_H
#define STELLER_JOBS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum stj_err {
    STJ_OK = 0,
    STJ_E_INVAL = -1, /* a bad argument: type, jid, queue, args, a time */
    STJ_E_NOMEM = -2,
    STJ_E_CONN = -3,  /* could not connect, or the connection broke */
    STJ_E_REDIS = -4, /* Redis answered with an error (AUTH, WRONGTYPE, OOM ...) */
    STJ_E_SYS = -5,   /* no randomness for a jid */
};

#define STJ_JID_MAX 64     /* longest jid the workers accept, in bytes */
#define STJ_JID_GEN_LEN 20 /* length of a generated jid: 80 random bits in hex */

/* Jobs per round trip in stj_enqueue_many() and stj_schedule_many(). */
#define STJ_PIPELINE_JOBS 1000

typedef struct stj_client stj_client;
typedef struct stj_job stj_job;
struct redisContext;

/* ---- connection ---- */

/*
 * Connects to redis_url (the REDIS_URL forms of lib/redisurl.h; NULL or "" means
 * redis://127.0.0.1:6379/0), sends AUTH and SELECT when the URL has a password
 * or a database, and uses prefix for every key (NULL or "" means "steller").
 * Returns NULL with the reason in err, naming host:port or the socket path.
 */
stj_client *stj_connect(const char *redis_url, const char *prefix, char *err, size_t errlen);
void stj_free(stj_client *c);

const char *stj_client_prefix(const stj_client *c);

/* The hiredis connection, for reading other keys (stellerctl stats). It stays
 * owned by the client: do not free it, do not use it after stj_free(). */
struct redisContext *stj_client_redis(stj_client *c);

/* ---- jobs ---- */

/*
 * A new job of the given type, with a generated jid, the type's default queue,
 * empty args, created_at taken when it is pushed and no max_attempts. NULL when
 * type is NULL or empty, or on ENOMEM or a failing random source.
 */
stj_job *stj_job_new(const char *type);
void stj_job_free(stj_job *j);

/* jid NULL draws a fresh random one; otherwise 1-64 bytes, else STJ_E_INVAL. */
int stj_job_set_jid(stj_job *j, const char *jid);
const char *stj_job_jid(const stj_job *j);

/* A non-empty queue name; NULL restores the type's default. */
int stj_job_set_queue(stj_job *j, const char *queue);
const char *stj_job_queue(const stj_job *j);

/*
 * args as one packed msgpack map of exactly len bytes (copied), checked against
 * the workers' rules (one map, nothing after it, at most 31 levels of nesting);
 * STJ_E_INVAL with the reason in err otherwise.
 */
int stj_job_set_args_msgpack(stj_job *j, const void *args, size_t len, char *err, size_t errlen);

/* args from a JSON object text; see stj_json_to_msgpack() for the mapping. */
int stj_job_set_args_json(stj_job *j, const char *json, char *err, size_t errlen);

/* n >= 1 overrides the type's default number of attempts; n < 0 removes it. */
int stj_job_set_max_attempts(stj_job *j, int64_t n);

/* The producer's W3C trace context (version 00: "00-<32 hex>-<16 hex>-<2 hex>"),
 * carried into every log line of the job; NULL or "" removes it. STJ_E_INVAL if
 * malformed. */
int stj_job_set_traceparent(stj_job *j, const char *traceparent);

/* Fixes created_at (ms since the epoch); 0 means "when pushed". For tests and replays. */
void stj_job_set_created_at(stj_job *j, int64_t ms);

/*
 * The envelope's bytes, in *out (malloc'd, the caller frees it with free()) and
 * *len. created_at is the current time unless it was fixed.
 */
int stj_job_encode(const stj_job *j, char **out, size_t *len);

/* ---- pushing ---- */

/* LPUSH P:queue:<queue> <envelope>. */
int stj_enqueue(stj_client *c, const stj_job *j, char *err, size_t errlen);

/* ZADD P:scheduled <at_ms> <envelope>: the job runs once at_ms (ms since the epoch) is due. */
int stj_schedule(stj_client *c, const stj_job *j, int64_t at_ms, char *err, size_t errlen);

/*
 * Pushes n jobs as stj_enqueue() would, in order, STJ_PIPELINE_JOBS jobs per round
 * trip (consecutive jobs of one queue share one LPUSH). *pushed (may be NULL)
 * receives how many jobs Redis accepted, also on error: a batch that failed half
 * way may have been stored in part.
 */
int stj_enqueue_many(stj_client *c, stj_job *const *jobs, size_t n, size_t *pushed, char *err,
                     size_t errlen);

/* The same for stj_schedule(): all n jobs due at at_ms. */
int stj_schedule_many(stj_client *c, stj_job *const *jobs, size_t n, int64_t at_ms, size_t *pushed,
                      char *err, size_t errlen);

/* ---- helpers, exposed for tools and tests ---- */

/* The default queue of a job type (docs/PROTOCOL.md, Job types); "default" for others. */
const char *stj_default_queue(const char *type);

/* Writes STJ_JID_GEN_LEN lowercase hex characters and a NUL into out, from getrandom(). */
int stj_jid_generate(char out[STJ_JID_GEN_LEN + 1]);

/*
 * Converts a JSON object text to one packed msgpack map: objects become maps (keys
 * in their JSON order; a key twice is an error), arrays arrays, strings str,
 * integers int (shortest form), reals float64, true/false bool, null nil. Any other
 * top level, bad JSON, integers beyond 64 bits or nesting deeper than the workers
 * read are STJ_E_INVAL with the reason (and JSON line:column) in err, and *out NULL.
 * On success *out is malloc'd (free() it) and holds *len bytes.
 */
int stj_json_to_msgpack(const char *json, char **out, size_t *len, char *err, size_t errlen);

/* A short English text for an enum stj_err. */
const char *stj_strerror(int code);

#ifdef __cplusplus
}
#endif

#endif
