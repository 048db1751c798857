/*
 * envelope.c - decode, validate and re-encode the job envelope (SPEC §3).
 *
 * Decoding runs in three steps. scan_object() walks the bytes once without
 * allocating: it finds where the first object ends and refuses anything msgpack-c
 * would choke on or over-allocate for (a 5-byte map header may claim four billion
 * entries, and msgpack-c would try to allocate them before noticing the input is
 * short). Only then does msgpack_unpack_next() build the object tree in the
 * envelope's zone. msgpack-c leaves strings pointing into the input buffer, so
 * the bytes are copied into the same zone and every pointer is moved onto the
 * copy: the caller may free its buffer (a hiredis reply) as soon as decode
 * returns. Last, the root map's keys are checked against the table of known keys
 * below; unknown keys are left alone.
 *
 * Encoding walks the root map in its original order so that unknown keys keep
 * their place, writing known keys from the struct, and appends the known keys
 * the worker set that the producer did not send, in canonical order. Scalars are
 * re-packed in their shortest form, as every msgpack library writes them anyway.
 */
#include "envelope.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* msgpack-c's parser has a fixed stack of 32 open containers (unpack_define.h,
 * MSGPACK_EMBED_STACK_SIZE, fixed when the library was built) and fails beyond it. */
#define SCAN_MAX_DEPTH 32

/* Known keys, in canonical order: the order env_new() writes and env_encode()
 * appends in. */
enum key_id {
    K_JID,
    K_TYPE,
    K_ARGS,
    K_QUEUE,
    K_CREATED_AT,
    K_ATTEMPT,
    K_MAX_ATTEMPTS,
    K_ERROR,
    K_FAILED_AT,
    K_RETRY_AT,
    K_V,
    K_TRACEPARENT,
    K_CRASHES,
    K_COUNT,
    K_UNKNOWN = K_COUNT,
};

enum key_kind { KIND_STR, KIND_INT, KIND_MAP };

struct known_key {
    const char *name;
    enum key_kind kind;
    size_t off;       /* the field in struct env */
    unsigned has;     /* ENV_HAS_* bit, ints only */
    int64_t min, max; /* ints: least value; strs: length bounds */
    int64_t absent;   /* ints: the value an absent key reads as */
    int required;
};

#define STR_KEY(n, f, lo, hi, req) {n, KIND_STR, offsetof(struct env, f), 0, lo, hi, 0, req}
#define INT_KEY(n, f, bit, lo, dflt) {n, KIND_INT, offsetof(struct env, f), bit, lo, 0, dflt, 0}

static const struct known_key keys[K_COUNT] = {
    [K_JID] = STR_KEY("jid", jid, 1, ENV_JID_MAX, 1),
    [K_TYPE] = STR_KEY("type", type, 1, INT64_MAX, 1),
    [K_ARGS] = {"args", KIND_MAP, offsetof(struct env, args), 0, 0, 0, 0, 1},
    [K_QUEUE] = STR_KEY("queue", queue, 0, INT64_MAX, 0),
    [K_CREATED_AT] = INT_KEY("created_at", created_at, ENV_HAS_CREATED_AT, INT64_MIN, 0),
    [K_ATTEMPT] = INT_KEY("attempt", attempt, ENV_HAS_ATTEMPT, 0, 0),
    [K_MAX_ATTEMPTS] = INT_KEY("max_attempts", max_attempts, ENV_HAS_MAX_ATTEMPTS, 1, -1),
    [K_ERROR] = STR_KEY("error", error, 0, INT64_MAX, 0),
    [K_FAILED_AT] = INT_KEY("failed_at", failed_at, ENV_HAS_FAILED_AT, INT64_MIN, 0),
    [K_RETRY_AT] = INT_KEY("retry_at", retry_at, ENV_HAS_RETRY_AT, INT64_MIN, 0),
    [K_V] = INT_KEY("v", v, ENV_HAS_V, 1, 1),
    [K_TRACEPARENT] = STR_KEY("traceparent", traceparent, 0, INT64_MAX, 0),
    [K_CRASHES] = INT_KEY("crashes", crashes, ENV_HAS_CRASHES, 0, 0),
};

static int is_key(const char *s, const char *name, size_t n)
{
    return memcmp(s, name, n) == 0;
}

/* Switch on length first: most keys are rejected or found with one memcmp. */
static enum key_id key_lookup(const char *s, size_t n)
{
    switch (n) {
    case 1:
        return s[0] == 'v' ? K_V : K_UNKNOWN;
    case 3:
        return is_key(s, "jid", 3) ? K_JID : K_UNKNOWN;
    case 4:
        if (is_key(s, "type", 4))
            return K_TYPE;
        return is_key(s, "args", 4) ? K_ARGS : K_UNKNOWN;
    case 5:
        if (is_key(s, "queue", 5))
            return K_QUEUE;
        return is_key(s, "error", 5) ? K_ERROR : K_UNKNOWN;
    case 7:
        if (is_key(s, "attempt", 7))
            return K_ATTEMPT;
        return is_key(s, "crashes", 7) ? K_CRASHES : K_UNKNOWN;
    case 8:
        return is_key(s, "retry_at", 8) ? K_RETRY_AT : K_UNKNOWN;
    case 9:
        return is_key(s, "failed_at", 9) ? K_FAILED_AT : K_UNKNOWN;
    case 10:
        return is_key(s, "created_at", 10) ? K_CREATED_AT : K_UNKNOWN;
    case 11:
        return is_key(s, "traceparent", 11) ? K_TRACEPARENT : K_UNKNOWN;
    case 12:
        return is_key(s, "max_attempts", 12) ? K_MAX_ATTEMPTS : K_UNKNOWN;
    }
    return K_UNKNOWN;
}

static enum key_id obj_key(const msgpack_object *key)
{
    if (key->type != MSGPACK_OBJECT_STR)
        return K_UNKNOWN;
    return key_lookup(key->via.str.ptr, key->via.str.size);
}

static const char *type_name(msgpack_object_type t)
{
    switch (t) {
    case MSGPACK_OBJECT_NIL:
        return "nil";
    case MSGPACK_OBJECT_BOOLEAN:
        return "bool";
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return "int";
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        return "float";
    case MSGPACK_OBJECT_STR:
        return "str";
    case MSGPACK_OBJECT_BIN:
        return "bin";
    case MSGPACK_OBJECT_ARRAY:
        return "array";
    case MSGPACK_OBJECT_MAP:
        return "map";
    case MSGPACK_OBJECT_EXT:
        return "ext";
    }
    return "unknown";
}

__attribute__((format(printf, 4, 5))) static int fail(char *err, size_t errlen, int code,
                                                      const char *fmt, ...)
{
    va_list ap;

    if (err && errlen > 0) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

/* ---- scanning: where the first object ends, without allocating ---- */

struct scan {
    const unsigned char *p;
    size_t len, pos;
    char *err;
    size_t errlen;
};

static uint64_t read_be(const unsigned char *p, unsigned n)
{
    uint64_t v = 0;

    for (unsigned i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

static int scan_truncated(struct scan *s, size_t at)
{
    return fail(s->err, s->errlen, ENV_E_NOT_MSGPACK,
                "truncated msgpack: the value at offset %zu runs past the end (%zu bytes)", at,
                s->len);
}

/* Skips a header of hdr bytes whose last lenbytes give a payload length, plus
 * extra fixed bytes (the ext type), plus the payload. */
static int scan_sized(struct scan *s, unsigned hdr, unsigned lenbytes, unsigned extra)
{
    size_t at = s->pos;
    uint64_t n;

    if (s->len - at < hdr + extra)
        return scan_truncated(s, at);
    n = read_be(s->p + at + hdr - lenbytes, lenbytes);
    if (n > s->len - at - hdr - extra)
        return scan_truncated(s, at);
    s->pos = at + hdr + extra + n;
    return 0;
}

static int scan_fixed(struct scan *s, unsigned n)
{
    if (s->len - s->pos < n)
        return scan_truncated(s, s->pos);
    s->pos += n;
    return 0;
}

/* Reads a container header: *items is the number of objects inside (two per
 * map entry). Every object takes at least a byte, so a count larger than what
 * is left is a truncation, found here before anything is allocated for it. */
static int scan_container(struct scan *s, unsigned hdr, uint64_t count, unsigned per,
                          uint64_t *items)
{
    size_t at = s->pos;

    if (scan_fixed(s, hdr) < 0)
        return ENV_E_NOT_MSGPACK;
    if (hdr > 1)
        count = read_be(s->p + at + 1, hdr - 1);
    if (count > (s->len - s->pos) / per)
        return fail(s->err, s->errlen, ENV_E_NOT_MSGPACK,
                    "truncated msgpack: the %s at offset %zu declares %llu entries but only "
                    "%zu bytes follow",
                    per == 2 ? "map" : "array", at, (unsigned long long)count,
                    s->len - s->pos);
    *items = count * per;
    return 1;
}

/* One header and whatever it carries. Returns 0 for a complete scalar, 1 for a
 * container (its object count in *items), or a negative env_err. */
static int scan_one(struct scan *s, uint64_t *items)
{
    unsigned char b = s->p[s->pos];

    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3)
        return scan_fixed(s, 1);
    if (b >= 0xa0 && b <= 0xbf)
        return scan_fixed(s, 1 + (b & 0x1f));
    if (b >= 0x90 && b <= 0x9f)
        return scan_container(s, 1, b & 0x0f, 1, items);
    if (b >= 0x80 && b <= 0x8f)
        return scan_container(s, 1, b & 0x0f, 2, items);
    switch (b) {
    case 0xcc: case 0xd0:
        return scan_fixed(s, 2);
    case 0xcd: case 0xd1:
        return scan_fixed(s, 3);
    case 0xca: case 0xce: case 0xd2:
        return scan_fixed(s, 5);
    case 0xcb: case 0xcf: case 0xd3:
        return scan_fixed(s, 9);
    case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8:
        return scan_fixed(s, 2 + (1u << (b - 0xd4)));
    case 0xc4: case 0xd9:
        return scan_sized(s, 2, 1, 0);
    case 0xc5: case 0xda:
        return scan_sized(s, 3, 2, 0);
    case 0xc6: case 0xdb:
        return scan_sized(s, 5, 4, 0);
    case 0xc7:
        return scan_sized(s, 2, 1, 1);
    case 0xc8:
        return scan_sized(s, 3, 2, 1);
    case 0xc9:
        return scan_sized(s, 5, 4, 1);
    case 0xdc:
        return scan_container(s, 3, 0, 1, items);
    case 0xdd:
        return scan_container(s, 5, 0, 1, items);
    case 0xde:
        return scan_container(s, 3, 0, 2, items);
    case 0xdf:
        return scan_container(s, 5, 0, 2, items);
    }
    return fail(s->err, s->errlen, ENV_E_NOT_MSGPACK,
                "not msgpack: byte 0x%02x at offset %zu is not a valid type", b, s->pos);
}

/*
 * Finds the end of the first object in p[0..len) and stores it in *end. The
 * stack holds, per open container, how many objects it still expects; an
 * object that completes pops every container it was the last one of.
 */
static int scan_object(const unsigned char *p, size_t len, size_t *end, unsigned max_depth,
                       char *err, size_t errlen)
{
    struct scan s = {p, len, 0, err, errlen};
    uint64_t left[SCAN_MAX_DEPTH];
    unsigned depth = 0;

    if (len == 0)
        return fail(err, errlen, ENV_E_NOT_MSGPACK, "not msgpack: empty input");
    for (;;) {
        uint64_t items = 0;
        int rc;

        if (s.pos == len)
            return scan_truncated(&s, s.pos);
        rc = scan_one(&s, &items);
        if (rc < 0)
            return rc;
        if (rc == 1 && depth == max_depth)
            return fail(err, errlen, ENV_E_NOT_MSGPACK,
                        "not msgpack: nested deeper than %u levels", max_depth);
        if (rc == 1 && items > 0) {
            left[depth++] = items;
            continue;
        }
        while (depth > 0 && --left[depth - 1] == 0)
            depth--;
        if (depth == 0)
            break;
    }
    *end = s.pos;
    return 0;
}

/* ---- decoding ---- */

/* Moves every string, bin and ext pointer from the input onto the zone copy.
 * Recursion is bounded by SCAN_MAX_DEPTH. */
static void rebase(msgpack_object *o, const char *from, const char *to)
{
    switch (o->type) {
    case MSGPACK_OBJECT_STR:
        o->via.str.ptr = to + (o->via.str.ptr - from);
        break;
    case MSGPACK_OBJECT_BIN:
        o->via.bin.ptr = to + (o->via.bin.ptr - from);
        break;
    case MSGPACK_OBJECT_EXT:
        o->via.ext.ptr = to + (o->via.ext.ptr - from);
        break;
    case MSGPACK_OBJECT_ARRAY:
        for (uint32_t i = 0; i < o->via.array.size; i++)
            rebase(&o->via.array.ptr[i], from, to);
        break;
    case MSGPACK_OBJECT_MAP:
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            rebase(&o->via.map.ptr[i].key, from, to);
            rebase(&o->via.map.ptr[i].val, from, to);
        }
        break;
    default:
        break;
    }
}

/* Builds the object tree of raw[0..len), a range scan_object() accepted, and
 * makes it independent of raw. */
static int unpack_owned(msgpack_unpacked *unp, const char *raw, size_t len, char *err,
                        size_t errlen)
{
    size_t off = 0;
    char *copy;

    if (msgpack_unpack_next(unp, raw, len, &off) != MSGPACK_UNPACK_SUCCESS || off != len)
        return fail(err, errlen, ENV_E_NOT_MSGPACK, "not msgpack: the parser rejected it");
    /* msgpack-c makes the zone with the first container: a scalar root has none. */
    if (!unp->zone)
        unp->zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
    copy = unp->zone ? msgpack_zone_malloc(unp->zone, len) : NULL;
    if (!copy)
        return fail(err, errlen, ENV_E_NOT_MSGPACK, "out of memory decoding %zu bytes", len);
    memcpy(copy, raw, len);
    rebase(&unp->data, raw, copy);
    return 0;
}

/* A producer newer than us may have changed what any field means, so the
 * version is judged before any other field. */
static int check_version(const msgpack_object *root, char *err, size_t errlen)
{
    for (uint32_t i = 0; i < root->via.map.size; i++) {
        const msgpack_object_kv *kv = &root->via.map.ptr[i];

        if (obj_key(&kv->key) != K_V || kv->val.type != MSGPACK_OBJECT_POSITIVE_INTEGER)
            continue;
        if (kv->val.via.u64 > ENV_VERSION_MAJOR)
            return fail(err, errlen, ENV_E_VERSION,
                        "envelope version %llu is newer than this worker's %d",
                        (unsigned long long)kv->val.via.u64, ENV_VERSION_MAJOR);
    }
    return 0;
}

static int take_str(struct env *e, const struct known_key *k, const msgpack_object *o,
                    char *err, size_t errlen)
{
    struct env_str *s = (struct env_str *)((char *)e + k->off);

    if (o->type != MSGPACK_OBJECT_STR)
        return fail(err, errlen, ENV_E_FIELD, "key '%s' must be a str, got %s", k->name,
                    type_name(o->type));
    if (o->via.str.size < k->min || o->via.str.size > k->max) {
        if (k->max == INT64_MAX)
            return fail(err, errlen, ENV_E_FIELD, "key '%s' must not be empty", k->name);
        return fail(err, errlen, ENV_E_FIELD, "key '%s' must be %lld-%lld bytes, got %u",
                    k->name, (long long)k->min, (long long)k->max, o->via.str.size);
    }
    s->ptr = o->via.str.ptr;
    s->len = o->via.str.size;
    return 0;
}

static int take_int(struct env *e, const struct known_key *k, const msgpack_object *o,
                    char *err, size_t errlen)
{
    int64_t v;

    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        v = o->via.i64;
    else if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return fail(err, errlen, ENV_E_FIELD, "key '%s' must be an int, got %s", k->name,
                    type_name(o->type));
    else if (o->via.u64 > INT64_MAX)
        return fail(err, errlen, ENV_E_FIELD, "key '%s' is out of range: %llu", k->name,
                    (unsigned long long)o->via.u64);
    else
        v = (int64_t)o->via.u64;
    if (v < k->min)
        return fail(err, errlen, ENV_E_FIELD, "key '%s' must be >= %lld, got %lld", k->name,
                    (long long)k->min, (long long)v);
    *(int64_t *)((char *)e + k->off) = v;
    e->has |= k->has;
    return 0;
}

static int take_map(struct env *e, const struct known_key *k, const msgpack_object *o,
                    char *err, size_t errlen)
{
    if (o->type != MSGPACK_OBJECT_MAP)
        return fail(err, errlen, ENV_E_FIELD, "key '%s' must be a map, got %s", k->name,
                    type_name(o->type));
    e->args = *o;
    return 0;
}

static int take_key(struct env *e, const msgpack_object_kv *kv, unsigned *seen, char *err,
                    size_t errlen)
{
    const struct known_key *k;
    enum key_id id;

    if (kv->key.type != MSGPACK_OBJECT_STR)
        return fail(err, errlen, ENV_E_FIELD, "map key is not a string, got %s",
                    type_name(kv->key.type));
    id = key_lookup(kv->key.via.str.ptr, kv->key.via.str.size);
    if (id == K_UNKNOWN)
        return 0;
    k = &keys[id];
    if (*seen & 1u << id)
        return fail(err, errlen, ENV_E_FIELD, "duplicate key '%s'", k->name);
    *seen |= 1u << id;
    if (kv->val.type == MSGPACK_OBJECT_NIL && !k->required)
        return 0;
    switch (k->kind) {
    case KIND_STR:
        return take_str(e, k, &kv->val, err, errlen);
    case KIND_INT:
        return take_int(e, k, &kv->val, err, errlen);
    case KIND_MAP:
        return take_map(e, k, &kv->val, err, errlen);
    }
    return 0;
}

static int take_fields(struct env *e, char *err, size_t errlen)
{
    const msgpack_object *root = &e->root;
    unsigned seen = 0;
    int rc;

    if (root->type != MSGPACK_OBJECT_MAP)
        return fail(err, errlen, ENV_E_NOT_MAP, "envelope must be a map, got %s",
                    type_name(root->type));
    rc = check_version(root, err, errlen);
    if (rc < 0)
        return rc;
    for (uint32_t i = 0; i < root->via.map.size; i++) {
        rc = take_key(e, &root->via.map.ptr[i], &seen, err, errlen);
        if (rc < 0)
            return rc;
    }
    for (int id = 0; id < K_COUNT; id++) {
        if (keys[id].required && !(seen & 1u << id))
            return fail(err, errlen, ENV_E_MISSING, "missing required key '%s'", keys[id].name);
    }
    return 0;
}

static void env_init(struct env *e)
{
    memset(e, 0, sizeof(*e));
    msgpack_unpacked_init(&e->unp);
    e->max_attempts = -1;
    e->v = 1;
}

int env_decode(struct env *e, const char *raw, size_t len, size_t max_bytes, char *err,
               size_t errlen)
{
    size_t end;
    int rc;

    env_init(e);
    if (err && errlen > 0)
        err[0] = '\0';
    if (len > max_bytes)
        return fail(err, errlen, ENV_E_TOO_BIG, "envelope is %zu bytes, over the limit of %zu",
                    len, max_bytes);
    rc = scan_object((const unsigned char *)raw, len, &end, SCAN_MAX_DEPTH, err, errlen);
    if (rc < 0)
        return rc;
    rc = unpack_owned(&e->unp, raw, end, err, errlen);
    if (rc < 0)
        return rc;
    e->root = e->unp.data;
    rc = take_fields(e, err, errlen);
    if (rc < 0)
        return rc;
    if (end < len)
        return fail(err, errlen, ENV_E_TRAILING, "trailing bytes: %zu after the envelope",
                    len - end);
    return ENV_OK;
}

void env_free(struct env *e)
{
    msgpack_unpacked_destroy(&e->unp);
    env_init(e);
}

void env_set_error(struct env *e, const char *msg)
{
    static const char lost[] = "error message lost: out of memory";
    size_t len;
    char *copy;

    if (!msg) {
        e->error = (struct env_str){NULL, 0};
        return;
    }
    len = strlen(msg);
    if (!e->unp.zone)
        e->unp.zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
    copy = e->unp.zone ? msgpack_zone_malloc(e->unp.zone, len + 1) : NULL;
    if (!copy) {
        e->error = (struct env_str){lost, sizeof(lost) - 1};
        return;
    }
    memcpy(copy, msg, len + 1);
    e->error = (struct env_str){copy, len};
}

/* ---- encoding ---- */

/* An int is written when its key was present or when the worker changed it
 * from the value an absent key reads as, so that e->attempt++ alone is enough. */
static int int_is_set(const struct env *e, const struct known_key *k)
{
    return (e->has & k->has) || *(const int64_t *)((const char *)e + k->off) != k->absent;
}

static int key_is_set(const struct env *e, enum key_id id)
{
    const struct known_key *k = &keys[id];

    switch (k->kind) {
    case KIND_STR:
        return ((const struct env_str *)((const char *)e + k->off))->ptr != NULL;
    case KIND_INT:
        return int_is_set(e, k);
    case KIND_MAP:
        return e->args.type == MSGPACK_OBJECT_MAP;
    }
    return 0;
}

static int pack_str(msgpack_packer *pk, const char *s, size_t len)
{
    return msgpack_pack_str(pk, len) | msgpack_pack_str_body(pk, s, len);
}

static int pack_value(msgpack_packer *pk, const struct env *e, enum key_id id)
{
    const struct known_key *k = &keys[id];
    const char *field = (const char *)e + k->off;

    if (!key_is_set(e, id))
        return msgpack_pack_nil(pk);
    switch (k->kind) {
    case KIND_STR:
        return pack_str(pk, ((const struct env_str *)field)->ptr,
                        ((const struct env_str *)field)->len);
    case KIND_INT:
        return msgpack_pack_int64(pk, *(const int64_t *)field);
    case KIND_MAP:
        return msgpack_pack_object(pk, e->args);
    }
    return 0;
}

/* Which known keys the original map carries. */
static unsigned root_known(const msgpack_object *root)
{
    unsigned seen = 0;

    for (uint32_t i = 0; i < root->via.map.size; i++) {
        enum key_id id = obj_key(&root->via.map.ptr[i].key);

        if (id != K_UNKNOWN)
            seen |= 1u << id;
    }
    return seen;
}

int env_encode(const struct env *e, msgpack_sbuffer *out)
{
    static const msgpack_object_map empty = {0, NULL};
    const msgpack_object_map *m = e->root.type == MSGPACK_OBJECT_MAP ? &e->root.via.map : &empty;
    unsigned seen = root_known(&e->root), extra = 0;
    msgpack_packer pk;
    int bad;

    for (int id = 0; id < K_COUNT; id++)
        extra += !(seen & 1u << id) && key_is_set(e, id);
    msgpack_packer_init(&pk, out, msgpack_sbuffer_write);
    bad = msgpack_pack_map(&pk, m->size + extra);
    for (uint32_t i = 0; i < m->size; i++) {
        const msgpack_object_kv *kv = &m->ptr[i];
        enum key_id id = obj_key(&kv->key);

        bad |= msgpack_pack_object(&pk, kv->key);
        bad |= id == K_UNKNOWN ? msgpack_pack_object(&pk, kv->val) : pack_value(&pk, e, id);
    }
    for (int id = 0; id < K_COUNT; id++) {
        if (seen & 1u << id || !key_is_set(e, id))
            continue;
        bad |= pack_str(&pk, keys[id].name, strlen(keys[id].name));
        bad |= pack_value(&pk, e, id);
    }
    return bad ? -ENOMEM : 0;
}

/* ---- producers and dead letters ---- */

static int args_ok(const char *args, size_t len)
{
    size_t end;

    /* args sit one level inside the envelope, so they get one level less */
    if (scan_object((const unsigned char *)args, len, &end, SCAN_MAX_DEPTH - 1, NULL, 0) < 0 ||
        end != len)
        return 0;
    return ((unsigned char)args[0] >= 0x80 && (unsigned char)args[0] <= 0x8f) ||
           (unsigned char)args[0] == 0xde || (unsigned char)args[0] == 0xdf;
}

int env_new(const struct env_new *n, msgpack_sbuffer *out)
{
    size_t jid_len = n->jid ? strlen(n->jid) : 0;
    msgpack_packer pk;
    int bad;

    /* max_attempts 0 would make an envelope every worker refuses. */
    if (jid_len < 1 || jid_len > ENV_JID_MAX || !n->type || !n->type[0] || n->max_attempts == 0)
        return -EINVAL;
    if (n->args && !args_ok(n->args, n->args_len))
        return -EINVAL;
    msgpack_packer_init(&pk, out, msgpack_sbuffer_write);
    bad = msgpack_pack_map(&pk, 5 + (n->queue != NULL) + (n->max_attempts >= 0) +
                                    (n->traceparent != NULL));
    bad |= pack_str(&pk, "jid", 3) | pack_str(&pk, n->jid, jid_len);
    bad |= pack_str(&pk, "type", 4) | pack_str(&pk, n->type, strlen(n->type));
    bad |= pack_str(&pk, "args", 4);
    bad |= n->args ? msgpack_sbuffer_write(out, n->args, n->args_len) : msgpack_pack_map(&pk, 0);
    if (n->queue)
        bad |= pack_str(&pk, "queue", 5) | pack_str(&pk, n->queue, strlen(n->queue));
    bad |= pack_str(&pk, "created_at", 10) | msgpack_pack_int64(&pk, n->created_at);
    bad |= pack_str(&pk, "attempt", 7) | msgpack_pack_int64(&pk, 0);
    if (n->max_attempts >= 0)
        bad |= pack_str(&pk, "max_attempts", 12) | msgpack_pack_int64(&pk, n->max_attempts);
    if (n->traceparent)
        bad |= pack_str(&pk, "traceparent", 11) |
               pack_str(&pk, n->traceparent, strlen(n->traceparent));
    return bad ? -ENOMEM : 0;
}

/* The jid of bytes that failed validation, if they hold a map with a str jid. */
static struct env_str salvage_jid(msgpack_unpacked *unp, const char *raw, size_t len)
{
    struct env_str none = {"", 0};
    const msgpack_object *root = &unp->data;
    size_t end, off = 0;

    if (scan_object((const unsigned char *)raw, len, &end, SCAN_MAX_DEPTH, NULL, 0) < 0)
        return none;
    if (msgpack_unpack_next(unp, raw, end, &off) != MSGPACK_UNPACK_SUCCESS)
        return none;
    if (root->type != MSGPACK_OBJECT_MAP)
        return none;
    for (uint32_t i = 0; i < root->via.map.size; i++) {
        const msgpack_object_kv *kv = &root->via.map.ptr[i];

        if (obj_key(&kv->key) == K_JID && kv->val.type == MSGPACK_OBJECT_STR)
            return (struct env_str){kv->val.via.str.ptr, kv->val.via.str.size};
    }
    return none;
}

int env_malformed_record(const char *raw, size_t len, const char *reason, int64_t now_ms,
                         msgpack_sbuffer *out)
{
    msgpack_unpacked unp;
    struct env_str jid;
    msgpack_packer pk;
    int bad;

    if (!reason)
        reason = "";
    msgpack_unpacked_init(&unp);
    jid = salvage_jid(&unp, raw, len);
    msgpack_packer_init(&pk, out, msgpack_sbuffer_write);
    bad = msgpack_pack_map(&pk, 5);
    bad |= pack_str(&pk, "jid", 3) | pack_str(&pk, jid.ptr, jid.len);
    bad |= pack_str(&pk, "error", 5) | pack_str(&pk, reason, strlen(reason));
    bad |= pack_str(&pk, "failed_at", 9) | msgpack_pack_int64(&pk, now_ms);
    bad |= pack_str(&pk, "malformed", 9) | msgpack_pack_true(&pk);
    bad |= pack_str(&pk, "raw", 3) | msgpack_pack_bin(&pk, len) |
           msgpack_pack_bin_body(&pk, raw, len);
    msgpack_unpacked_destroy(&unp);
    return bad ? -ENOMEM : 0;
}

char *env_strcpy(char *buf, size_t size, struct env_str s)
{
    size_t n;

    if (size == 0)
        return buf;
    n = s.ptr ? s.len : 0;
    if (n > size - 1)
        n = size - 1;
    if (n > 0)
        memcpy(buf, s.ptr, n);
    buf[n] = '\0';
    return buf;
}

const msgpack_object *env_arg(const struct env *e, const char *key)
{
    const msgpack_object_map *m = &e->args.via.map;
    size_t klen = strlen(key);
    if (e->args.type != MSGPACK_OBJECT_MAP)
        return NULL;
    for (uint32_t i = 0; i < m->size; i++) {
        const msgpack_object *k = &m->ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == klen &&
            memcmp(k->via.str.ptr, key, klen) == 0)
            return &m->ptr[i].val;
    }
    return NULL;
}

double env_waited(const char *raw, size_t len, size_t max_bytes, int64_t now_ms)
{
    struct env e;
    double age = 0;
    if (env_decode(&e, raw, len, max_bytes, NULL, 0) == ENV_OK &&
        (e.has & ENV_HAS_CREATED_AT) && e.created_at < now_ms)
        age = (double)(now_ms - e.created_at) / 1000.0;
    env_free(&e);
    return age;
}
