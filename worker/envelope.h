/*
 * envelope.h - the job envelope (SPEC §3): one msgpack map with string keys.
 *
 * env_decode() validates raw bytes taken from Redis and fills a struct env whose
 * strings point into the decoded msgpack zone; env_encode() writes the envelope
 * back with the fields the worker changed (attempt, error, failed_at, retry_at,
 * crashes) while every other key, known or not, keeps its value and its place.
 * env_new() writes a fresh envelope for producers in the canonical key order
 * documented in docs/PROTOCOL.md, so that test vectors compare byte for byte.
 *
 * Ownership: a struct env owns its msgpack_unpacked zone; everything it points to
 * lives until env_free(). The raw input buffer is not referenced after decode.
 */
#ifndef STELLER_ENVELOPE_H
#define STELLER_ENVELOPE_H

#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

#define ENV_VERSION_MAJOR 1
#define ENV_JID_MAX 64

enum env_err {
    ENV_OK = 0,
    ENV_E_TOO_BIG = -1,     /* over max_job_bytes */
    ENV_E_NOT_MSGPACK = -2, /* does not parse, or is truncated */
    ENV_E_NOT_MAP = -3,
    ENV_E_TRAILING = -4,    /* bytes after the map */
    ENV_E_MISSING = -5,     /* jid, type or args absent */
    ENV_E_FIELD = -6,       /* a known key with the wrong type or range */
    ENV_E_VERSION = -7,     /* major version newer than ours */
};

/* A string slice; ptr is NULL when the key is absent. Not NUL-terminated. */
struct env_str {
    const char *ptr;
    size_t len;
};

/* Bits of struct env.has: which optional integer keys are present. */
enum {
    ENV_HAS_CREATED_AT = 1 << 0,
    ENV_HAS_ATTEMPT = 1 << 1,
    ENV_HAS_MAX_ATTEMPTS = 1 << 2,
    ENV_HAS_FAILED_AT = 1 << 3,
    ENV_HAS_RETRY_AT = 1 << 4,
    ENV_HAS_V = 1 << 5,
    ENV_HAS_CRASHES = 1 << 6,
};

struct env {
    struct env_str jid, type, queue, error, traceparent;
    msgpack_object args; /* always a map after a successful decode */
    int64_t created_at, attempt, max_attempts, failed_at, retry_at, v, crashes;
    unsigned has;        /* ENV_HAS_* */
    msgpack_object root; /* the whole map, for env_encode */
    msgpack_unpacked unp;
};

/*
 * Decodes and validates. On error returns an enum env_err and writes a reason
 * ("key 'attempt' must be an int, got str") into err (may be NULL); the struct
 * need not be initialised before and needs env_free() either way. Absent (or
 * nil) optional keys read as NULL / 0 (max_attempts: -1, v: 1) without a has bit.
 */
int env_decode(struct env *e, const char *raw, size_t len, size_t max_bytes, char *err,
               size_t errlen);
void env_free(struct env *e);

/*
 * Sets the error string the next env_encode writes; the bytes are copied into
 * the envelope's zone, so msg may be freed after the call. NULL clears it.
 */
void env_set_error(struct env *e, const char *msg);

/*
 * Appends the envelope to out: keys of root in their order with known keys
 * taken from the struct, then known keys set in the struct but absent from
 * root, in canonical order. An int counts as set when its ENV_HAS_* bit is set
 * or it differs from its absent value, so e->attempt++ alone is written.
 * Returns 0 or a negative errno.
 */
int env_encode(const struct env *e, msgpack_sbuffer *out);

/* A fresh envelope in canonical order: jid, type, args, queue, created_at,
 * attempt, then max_attempts when >= 0, then traceparent when given. args is a
 * packed msgpack map (len bytes); args NULL means an empty map. "v" is left out: absent means 1. Returns 0, or
 * -EINVAL for what every worker would refuse (jid not 1-64 bytes, empty type,
 * args not exactly one map, max_attempts 0), or -ENOMEM. */
struct env_new {
    const char *jid, *type, *queue;
    const char *args;
    size_t args_len;
    int64_t created_at;
    int64_t max_attempts; /* -1: absent */
    const char *traceparent; /* NULL: absent */
};
int env_new(const struct env_new *n, msgpack_sbuffer *out);

/*
 * The dead-letter record for bytes that never decoded (SPEC §3): a map
 * {"jid": <jid if one could be read, else "">, "error": reason,
 *  "failed_at": now_ms, "malformed": true, "raw": bin}. Documented in PROTOCOL.md.
 */
int env_malformed_record(const char *raw, size_t len, const char *reason, int64_t now_ms,
                         msgpack_sbuffer *out);

/* Seconds a job has waited since its created_at, for queue latency; 0 when the
 * bytes are no envelope, have no created_at, or it lies in the future. */
double env_waited(const char *raw, size_t len, size_t max_bytes, int64_t now_ms);

/* The value of args[key], or NULL when args has no such key. Points into the
 * envelope's zone: valid until env_free(). */
const msgpack_object *env_arg(const struct env *e, const char *key);

/* Copies a slice into buf as a NUL-terminated string, truncating; returns buf. */
char *env_strcpy(char *buf, size_t size, struct env_str s);

#endif
