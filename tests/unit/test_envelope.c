/*
 * test_envelope.c - unit tests for worker/envelope.c.
 *
 * The VEC_* hex strings are the test vectors of docs/PROTOCOL.md, generated
 * independently with Python's msgpack (packb on a dict in canonical order,
 * use_bin_type=True); every one is checked here byte for byte, so the document,
 * Python producers and this code cannot drift apart. Then come the rejection
 * rules of SPEC §3, one table row each, and a fuzz-like pass that feeds every
 * truncation of the vectors, mutations of them and random bytes, which must be
 * refused with a reason and never crash (run under ASan and valgrind).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "envelope.h"
#include "protocol_vectors.h"

#define MAX_BYTES (256 * 1024)

/* Vector 1 after the worker set every optional key: they follow in canonical order. */
static const char CANONICAL_APPEND[] =
    "8da36a6964d9203366326238633165396134643465366638623761366335643465336632613162a47479"
    "7065a87379732e6e6f6f70a46172677380a57175657565a171aa637265617465645f617405a761747465"
    "6d707403ac6d61785f617474656d70747304a56572726f72a4626f6f6da96661696c65645f6174cf0000"
    "019000c79c00a872657472795f6174cf0000019000c79fe8a17601ab7472616365706172656e74ab3030"
    "2d30312d30322d3031a76372617368657302";

/* Unknown keys of every msgpack type (float64, bools, nested array and map, bin,
 * ext, uint64 max, int64 min, str16) interleaved with the known keys. */
static const char ODD_UNKNOWNS[] =
    "8da36a6964a26a31a3663634cb3fb999999999999aa174c3a166c2a36172729401a374776fc09103a474"
    "797065a174a16d81a16b81a16efba46172677381a17801a162c40200ffa165d5056162a3626967cfffff"
    "ffffffffffffa36e6567d38000000000000000a3733136da012c79797979797979797979797979797979"
    "797979797979797979797979797979797979797979797979797979797979797979797979797979797979"
    "797979797979797979797979797979797979797979797979797979797979797979797979797979797979"
    "797979797979797979797979797979797979797979797979797979797979797979797979797979797979"
    "797979797979797979797979797979797979797979797979797979797979797979797979797979797979"
    "797979797979797979797979797979797979797979797979797979797979797979797979797979797979"
    "797979797979797979797979797979797979797979797979797979797979797979797979797979797979"
    "7979797979797979797979797979797979797979797979797979797979797979";

static const char *const VALID[] = {VEC_MINIMAL,  VEC_WELCOME,   VEC_REQUEST_LOG, VEC_UNICODE,
                                    VEC_RETRY_IN, VEC_RETRY_OUT, VEC_TRACED};
#define NVALID (sizeof(VALID) / sizeof(VALID[0]))

/* ---- helpers ---- */

struct bytes {
    char *p;
    size_t len;
};

static int nibble(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    return c - 'a' + 10;
}

static struct bytes unhex(const char *hex)
{
    struct bytes b = {NULL, strlen(hex) / 2};

    b.p = malloc(b.len + 1);
    assert_non_null(b.p);
    for (size_t i = 0; i < b.len; i++)
        b.p[i] = (char)(nibble(hex[2 * i]) << 4 | nibble(hex[2 * i + 1]));
    return b;
}

static char *tohex(const char *p, size_t len)
{
    static const char digits[] = "0123456789abcdef";
    char *s = malloc(2 * len + 1);

    assert_non_null(s);
    for (size_t i = 0; i < len; i++) {
        s[2 * i] = digits[(unsigned char)p[i] >> 4];
        s[2 * i + 1] = digits[(unsigned char)p[i] & 15];
    }
    s[2 * len] = '\0';
    return s;
}

/* Compares as hex so that a mismatch prints both sides readably. */
static void assert_sbuf_hex(const msgpack_sbuffer *sb, const char *hex)
{
    char *got = tohex(sb->data, sb->size);

    assert_string_equal(got, hex);
    free(got);
}

static int decode_hex(struct env *e, const char *hex, char *err, size_t errlen)
{
    struct bytes b = unhex(hex);
    int rc = env_decode(e, b.p, b.len, MAX_BYTES, err, errlen);

    free(b.p);
    return rc;
}

static void assert_slice(struct env_str s, const char *want)
{
    assert_non_null(s.ptr);
    assert_int_equal(s.len, strlen(want));
    assert_memory_equal(s.ptr, want, s.len);
}

static void assert_encodes_to(const struct env *e, const char *hex)
{
    msgpack_sbuffer sb;

    msgpack_sbuffer_init(&sb);
    assert_int_equal(env_encode(e, &sb), 0);
    assert_sbuf_hex(&sb, hex);
    msgpack_sbuffer_destroy(&sb);
}

/* An envelope the worker did not change encodes to its own bytes. */
static void assert_roundtrip(const char *hex)
{
    struct env e;
    char err[256];

    assert_int_equal(decode_hex(&e, hex, err, sizeof(err)), ENV_OK);
    assert_encodes_to(&e, hex);
    env_free(&e);
}

static void assert_env_new(const struct env_new *n, const char *hex)
{
    msgpack_sbuffer sb;

    msgpack_sbuffer_init(&sb);
    assert_int_equal(env_new(n, &sb), 0);
    assert_sbuf_hex(&sb, hex);
    msgpack_sbuffer_destroy(&sb);
}

/* The value of key name in a map object, or NULL. */
static const msgpack_object *map_get(const msgpack_object *m, const char *name)
{
    for (uint32_t i = 0; i < m->via.map.size; i++) {
        const msgpack_object *k = &m->via.map.ptr[i].key;

        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == strlen(name) &&
            memcmp(k->via.str.ptr, name, k->via.str.size) == 0)
            return &m->via.map.ptr[i].val;
    }
    return NULL;
}

/* ---- the vectors ---- */

static void test_vector_minimal_reads_defaults(void **state)
{
    struct env e;
    char err[256];

    (void)state;
    assert_int_equal(decode_hex(&e, VEC_MINIMAL, err, sizeof(err)), ENV_OK);
    assert_string_equal(err, "");
    assert_slice(e.jid, "3f2b8c1e9a4d4e6f8b7a6c5d4e3f2a1b");
    assert_slice(e.type, "sys.noop");
    assert_int_equal(e.args.type, MSGPACK_OBJECT_MAP);
    assert_int_equal(e.args.via.map.size, 0);
    assert_null(e.queue.ptr);
    assert_null(e.error.ptr);
    assert_null(e.traceparent.ptr);
    assert_int_equal(e.attempt, 0);
    assert_int_equal(e.max_attempts, -1);
    assert_int_equal(e.v, 1);
    assert_int_equal(e.crashes, 0);
    assert_int_equal(e.has, 0);
    assert_encodes_to(&e, VEC_MINIMAL);
    env_free(&e);
}

static void test_vector_welcome_is_what_env_new_writes(void **state)
{
    struct bytes args = unhex(ARGS_WELCOME);
    struct env_new n = {.jid = "a1b2c3d4e5f60718293a4b5c6d7e8f90", .type = "email.welcome",
                        .queue = "email", .args = args.p, .args_len = args.len,
                        .created_at = T0, .max_attempts = -1};
    struct env e;

    (void)state;
    assert_env_new(&n, VEC_WELCOME);
    assert_int_equal(decode_hex(&e, VEC_WELCOME, NULL, 0), ENV_OK);
    assert_slice(e.queue, "email");
    assert_int_equal(e.created_at, T0);
    assert_int_equal(e.has, ENV_HAS_CREATED_AT | ENV_HAS_ATTEMPT);
    assert_int_equal(map_get(&e.args, "partner_id")->via.u64, 42);
    assert_encodes_to(&e, VEC_WELCOME);
    env_free(&e);
    free(args.p);
}

static void test_vector_request_log_keeps_nil_args(void **state)
{
    struct bytes args = unhex(ARGS_REQUEST_LOG);
    struct env_new n = {.jid = "0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f", .type = "request_log",
                        .queue = "request_log", .args = args.p, .args_len = args.len,
                        .created_at = T0 + 125, .max_attempts = -1};
    struct env e;

    (void)state;
    assert_env_new(&n, VEC_REQUEST_LOG);
    assert_int_equal(decode_hex(&e, VEC_REQUEST_LOG, NULL, 0), ENV_OK);
    assert_int_equal(e.args.via.map.size, 12);
    assert_int_equal(map_get(&e.args, "partner_id")->type, MSGPACK_OBJECT_NIL);
    assert_int_equal(map_get(&e.args, "ip")->type, MSGPACK_OBJECT_NIL);
    assert_int_equal(map_get(&e.args, "status")->via.u64, 200);
    assert_int_equal(map_get(&e.args, "occurred_at")->via.u64, T0 + 123);
    assert_encodes_to(&e, VEC_REQUEST_LOG);
    env_free(&e);
    free(args.p);
}

static void test_vector_unicode_passes_utf8_through(void **state)
{
    struct bytes args = unhex(ARGS_UNICODE);
    struct env_new n = {.jid = "5e4d3c2b1a0918273645546372819000", .type = "sys.noop",
                        .queue = "default", .args = args.p, .args_len = args.len,
                        .created_at = T0, .max_attempts = -1};
    const msgpack_object *name;
    struct env e;

    (void)state;
    assert_env_new(&n, VEC_UNICODE);
    assert_int_equal(decode_hex(&e, VEC_UNICODE, NULL, 0), ENV_OK);
    name = map_get(&e.args, "business_name");
    assert_int_equal(name->type, MSGPACK_OBJECT_STR);
    assert_int_equal(name->via.str.size, strlen(BUSINESS_NAME));
    assert_memory_equal(name->via.str.ptr, BUSINESS_NAME, name->via.str.size);
    assert_encodes_to(&e, VEC_UNICODE);
    env_free(&e);
    free(args.p);
}

static void test_vector_retry_keeps_unknown_key_in_place(void **state)
{
    struct env e;

    (void)state;
    assert_int_equal(decode_hex(&e, VEC_RETRY_IN, NULL, 0), ENV_OK);
    e.attempt++;
    env_set_error(&e, "smtp: 421 4.7.0 try again later");
    e.failed_at = T0 + 60000;
    e.retry_at = T0 + 76000;
    e.has |= ENV_HAS_FAILED_AT | ENV_HAS_RETRY_AT;
    assert_encodes_to(&e, VEC_RETRY_OUT);
    env_free(&e);

    assert_int_equal(decode_hex(&e, VEC_RETRY_OUT, NULL, 0), ENV_OK);
    assert_int_equal(e.attempt, 1);
    assert_slice(e.error, "smtp: 421 4.7.0 try again later");
    assert_int_equal(e.failed_at, T0 + 60000);
    assert_int_equal(e.retry_at, T0 + 76000);
    assert_encodes_to(&e, VEC_RETRY_OUT);
    env_free(&e);
}

static void test_vector_malformed_record_salvages_jid(void **state)
{
    struct bytes raw = unhex(VEC_MALFORMED_RAW);
    msgpack_sbuffer sb;
    char err[256];
    struct env e;

    (void)state;
    assert_int_equal(env_decode(&e, raw.p, raw.len, MAX_BYTES, err, sizeof(err)),
                     ENV_E_MISSING);
    assert_string_equal(err, "missing required key 'type'");
    env_free(&e);
    msgpack_sbuffer_init(&sb);
    assert_int_equal(env_malformed_record(raw.p, raw.len, err, T0 + 100000, &sb), 0);
    assert_sbuf_hex(&sb, VEC_MALFORMED);
    msgpack_sbuffer_destroy(&sb);
    free(raw.p);
}

/* A producer library that knows traceparent appends it after env_new's keys:
 * that is also exactly where env_encode() puts it. */
static void test_vector_traced_is_env_new_plus_traceparent(void **state)
{
    struct bytes args = unhex(ARGS_TRACED);
    struct env_new n = {.jid = "c0ffee00c0ffee00c0ffee00c0ffee00", .type = "wallet.seed_sandbox",
                        .queue = "critical", .args = args.p, .args_len = args.len,
                        .created_at = T0, .max_attempts = 5};
    msgpack_sbuffer sb;
    struct env e;

    (void)state;
    msgpack_sbuffer_init(&sb);
    assert_int_equal(env_new(&n, &sb), 0);
    assert_int_equal(env_decode(&e, sb.data, sb.size, MAX_BYTES, NULL, 0), ENV_OK);
    e.traceparent = (struct env_str){TRACEPARENT, strlen(TRACEPARENT)};
    assert_encodes_to(&e, VEC_TRACED);
    env_free(&e);
    msgpack_sbuffer_destroy(&sb);

    assert_int_equal(decode_hex(&e, VEC_TRACED, NULL, 0), ENV_OK);
    assert_int_equal(e.max_attempts, 5);
    assert_slice(e.traceparent, TRACEPARENT);
    assert_encodes_to(&e, VEC_TRACED);
    env_free(&e);
    free(args.p);
}

static void test_every_valid_vector_roundtrips(void **state)
{
    (void)state;
    for (size_t i = 0; i < NVALID; i++)
        assert_roundtrip(VALID[i]);
}

/* ---- rejection rules ---- */

struct reject {
    const char *what;
    const char *hex;
    int code;
    const char *reason;
};

static const struct reject rejects[] = {
    {"empty", "", ENV_E_NOT_MSGPACK, "not msgpack: empty input"},
    {"never-used byte", "c1", ENV_E_NOT_MSGPACK,
     "not msgpack: byte 0xc1 at offset 0 is not a valid type"},
    {"truncated str", "81a36a", ENV_E_NOT_MSGPACK,
     "truncated msgpack: the value at offset 1 runs past the end (3 bytes)"},
    {"map claiming 4G entries", "dfffffffff", ENV_E_NOT_MSGPACK,
     "truncated msgpack: the map at offset 0 declares 4294967295 entries but only 0 bytes "
     "follow"},
    {"array", "93010203", ENV_E_NOT_MAP, "envelope must be a map, got array"},
    {"str", "a3616263", ENV_E_NOT_MAP, "envelope must be a map, got str"},
    {"trailing", "83a36a6964a26a31a474797065a174a46172677380010203", ENV_E_TRAILING,
     "trailing bytes: 3 after the envelope"},
    {"jid missing", "82a474797065a174a46172677380", ENV_E_MISSING,
     "missing required key 'jid'"},
    {"type missing", "82a36a6964a26a31a46172677380", ENV_E_MISSING,
     "missing required key 'type'"},
    {"args missing", "82a36a6964a26a31a474797065a174", ENV_E_MISSING,
     "missing required key 'args'"},
    {"args str", "83a36a6964a26a31a474797065a174a461726773a178", ENV_E_FIELD,
     "key 'args' must be a map, got str"},
    {"args nil", "83a36a6964a26a31a474797065a174a461726773c0", ENV_E_FIELD,
     "key 'args' must be a map, got nil"},
    {"jid bin", "83a36a6964c4026a31a474797065a174a46172677380", ENV_E_FIELD,
     "key 'jid' must be a str, got bin"},
    {"jid empty", "83a36a6964a0a474797065a174a46172677380", ENV_E_FIELD,
     "key 'jid' must be 1-64 bytes, got 0"},
    {"jid 65 bytes",
     "83a36a6964d941787878787878787878787878787878787878787878787878787878787878787878787878"
     "7878787878787878787878787878787878787878787878787878a474797065a174a46172677380",
     ENV_E_FIELD, "key 'jid' must be 1-64 bytes, got 65"},
    {"jid nil", "83a36a6964c0a474797065a174a46172677380", ENV_E_FIELD,
     "key 'jid' must be a str, got nil"},
    {"type empty", "83a36a6964a26a31a474797065a0a46172677380", ENV_E_FIELD,
     "key 'type' must not be empty"},
    {"type int", "83a36a6964a26a31a47479706507a46172677380", ENV_E_FIELD,
     "key 'type' must be a str, got int"},
    {"queue bin", "84a36a6964a26a31a474797065a174a46172677380a57175657565c405656d61696c",
     ENV_E_FIELD, "key 'queue' must be a str, got bin"},
    {"attempt -1", "84a36a6964a26a31a474797065a174a46172677380a7617474656d7074ff", ENV_E_FIELD,
     "key 'attempt' must be >= 0, got -1"},
    {"max_attempts 0", "84a36a6964a26a31a474797065a174a46172677380ac6d61785f617474656d70747300",
     ENV_E_FIELD, "key 'max_attempts' must be >= 1, got 0"},
    {"crashes -1", "84a36a6964a26a31a474797065a174a46172677380a763726173686573ff", ENV_E_FIELD,
     "key 'crashes' must be >= 0, got -1"},
    {"created_at float",
     "84a36a6964a26a31a474797065a174a46172677380aa637265617465645f6174cb3ff8000000000000",
     ENV_E_FIELD, "key 'created_at' must be an int, got float"},
    {"created_at over int64",
     "84a36a6964a26a31a474797065a174a46172677380aa637265617465645f6174cfffffffffffffffff",
     ENV_E_FIELD, "key 'created_at' is out of range: 18446744073709551615"},
    {"error int", "84a36a6964a26a31a474797065a174a46172677380a56572726f7205", ENV_E_FIELD,
     "key 'error' must be a str, got int"},
    {"traceparent array", "84a36a6964a26a31a474797065a174a46172677380ab7472616365706172656e749101",
     ENV_E_FIELD, "key 'traceparent' must be a str, got array"},
    {"int key", "84a36a6964a26a31a474797065a174a4617267738007a178", ENV_E_FIELD,
     "map key is not a string, got int"},
    {"duplicate jid", "84a36a6964a26a31a474797065a174a46172677380a36a6964a26a32", ENV_E_FIELD,
     "duplicate key 'jid'"},
    {"v 2", "84a36a6964a26a31a474797065a174a46172677380a17602", ENV_E_VERSION,
     "envelope version 2 is newer than this worker's 1"},
    {"v 2 is judged before other fields", "84a36a6964a26a31a474797065a174a461726773a178a17602",
     ENV_E_VERSION, "envelope version 2 is newer than this worker's 1"},
    {"v 0", "84a36a6964a26a31a474797065a174a46172677380a17600", ENV_E_FIELD,
     "key 'v' must be >= 1, got 0"},
    {"v str", "84a36a6964a26a31a474797065a174a46172677380a176a131", ENV_E_FIELD,
     "key 'v' must be an int, got str"},
};

static void test_rejections_give_code_and_reason(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(rejects) / sizeof(rejects[0]); i++) {
        const struct reject *r = &rejects[i];
        char err[256];
        struct env e;
        int rc = decode_hex(&e, r->hex, err, sizeof(err));

        if (rc != r->code || strcmp(err, r->reason) != 0)
            fail_msg("%s: got %d \"%s\", want %d \"%s\"", r->what, rc, err, r->code, r->reason);
        env_free(&e);
    }
}

static void test_too_big_is_refused_before_parsing(void **state)
{
    struct bytes b = unhex(VEC_MINIMAL);
    char err[256];
    struct env e;

    (void)state;
    assert_int_equal(env_decode(&e, b.p, b.len, b.len - 1, err, sizeof(err)), ENV_E_TOO_BIG);
    assert_string_equal(err, "envelope is 59 bytes, over the limit of 58");
    env_free(&e);
    assert_int_equal(env_decode(&e, b.p, b.len, b.len, err, sizeof(err)), ENV_OK);
    env_free(&e);
    /* Not even looked at: garbage over the limit is still "too big". */
    assert_int_equal(env_decode(&e, "\xc1\xc1", 2, 1, err, sizeof(err)), ENV_E_TOO_BIG);
    env_free(&e);
    free(b.p);
}

static void test_jid_of_64_bytes_is_accepted(void **state)
{
    struct env e;

    (void)state;
    assert_int_equal(decode_hex(&e,
                                "83a36a6964d9407878787878787878787878787878787878787878787878787878"
                                "7878787878787878787878787878787878787878787878787878787878787878"
                                "787878787878a474797065a174a46172677380",
                                NULL, 0),
                     ENV_OK);
    assert_int_equal(e.jid.len, 64);
    env_free(&e);
}

static void test_nil_optional_keys_read_as_absent(void **state)
{
    static const char hex[] =
        "89a36a6964a26a31a474797065a174a46172677380a57175657565c0a7617474656d7074c0a56572726f"
        "72c0ac6d61785f617474656d707473c0a176c0a763726173686573c0";
    struct env e;

    (void)state;
    assert_int_equal(decode_hex(&e, hex, NULL, 0), ENV_OK);
    assert_null(e.queue.ptr);
    assert_null(e.error.ptr);
    assert_int_equal(e.has, 0);
    assert_int_equal(e.max_attempts, -1);
    assert_int_equal(e.v, 1);
    /* Untouched, the nils stay nils where they were. */
    assert_encodes_to(&e, hex);
    /* Set, a value replaces the nil in its place. */
    e.attempt = 2;
    assert_encodes_to(&e, "89a36a6964a26a31a474797065a174a46172677380a57175657565c0a761747465"
                          "6d707402a56572726f72c0ac6d61785f617474656d707473c0a176c0a763726173"
                          "686573c0");
    env_free(&e);
}

static void test_duplicate_unknown_keys_are_kept(void **state)
{
    (void)state;
    assert_roundtrip("85a36a6964a26a31a17801a474797065a174a46172677380a17802");
}

static void test_explicit_v1_is_accepted_and_kept(void **state)
{
    struct env e;

    (void)state;
    assert_int_equal(decode_hex(&e, "84a36a6964a26a31a474797065a174a46172677380a17601", NULL, 0),
                     ENV_OK);
    assert_int_equal(e.v, 1);
    assert_true(e.has & ENV_HAS_V);
    assert_encodes_to(&e, "84a36a6964a26a31a474797065a174a46172677380a17601");
    env_free(&e);
}

/* The parser's stack holds 32 open containers: the root map, args, and 30 more. */
static char *nested_hex(int arrays, const char *innermost)
{
    static const char head[] = "83a36a6964a26a31a474797065a174a46172677381a161";
    size_t len = strlen(head) + 2 * (size_t)arrays + strlen(innermost) + 1;
    char *hex = malloc(len);

    assert_non_null(hex);
    strcpy(hex, head);
    for (int i = 0; i < arrays; i++)
        strcat(hex, "91");
    strcat(hex, innermost);
    return hex;
}

static void test_nesting_limit_matches_msgpack_c(void **state)
{
    char err[256], *hex;
    struct env e;

    (void)state;
    hex = nested_hex(30, "01");
    assert_int_equal(decode_hex(&e, hex, err, sizeof(err)), ENV_OK);
    env_free(&e);
    free(hex);

    hex = nested_hex(31, "01");
    assert_int_equal(decode_hex(&e, hex, err, sizeof(err)), ENV_E_NOT_MSGPACK);
    assert_string_equal(err, "not msgpack: nested deeper than 32 levels");
    env_free(&e);
    free(hex);

    /* msgpack-c refuses even an empty container past its stack. */
    hex = nested_hex(30, "90");
    assert_int_equal(decode_hex(&e, hex, err, sizeof(err)), ENV_E_NOT_MSGPACK);
    env_free(&e);
    free(hex);
}

/* args for env_new: {"a": [[...[1]...]]} with `arrays` arrays, so args are
 * arrays + 1 levels deep and the envelope one more. */
static void test_env_new_refuses_args_the_worker_would_refuse(void **state)
{
    struct bytes b;
    msgpack_sbuffer sb;
    struct env e;
    char err[256];
    struct env_new n = {.jid = "j1", .type = "t", .created_at = 1, .max_attempts = -1};
    (void)state;

    for (int arrays = 30; arrays <= 31; arrays++) {
        char *hex = malloc(2 * 40 + 8);
        assert_non_null(hex);
        strcpy(hex, "81a161");
        for (int i = 0; i < arrays; i++)
            strcat(hex, "91");
        strcat(hex, "01");
        b = unhex(hex);
        n.args = (const char *)b.p;
        n.args_len = b.len;
        msgpack_sbuffer_init(&sb);
        if (arrays == 30) {
            /* 31 levels of args + the root: exactly what a worker accepts */
            assert_int_equal(env_new(&n, &sb), 0);
            assert_int_equal(env_decode(&e, sb.data, sb.size, 1 << 20, err, sizeof(err)), ENV_OK);
            env_free(&e);
        } else {
            assert_int_equal(env_new(&n, &sb), -EINVAL);
        }
        msgpack_sbuffer_destroy(&sb);
        free(b.p);
        free(hex);
    }
}

static void test_env_waited_counts_from_created_at(void **state)
{
    msgpack_sbuffer sb;
    struct env_new n = {.jid = "j1", .type = "t", .created_at = 1000, .max_attempts = -1};
    (void)state;
    msgpack_sbuffer_init(&sb);
    assert_int_equal(env_new(&n, &sb), 0);
    assert_true(env_waited(sb.data, sb.size, 1 << 20, 3500) == 2.5);
    assert_true(env_waited(sb.data, sb.size, 1 << 20, 500) == 0.0);  /* from the future */
    assert_true(env_waited(sb.data, sb.size, 4, 3500) == 0.0);       /* over the size limit */
    assert_true(env_waited("\xc1", 1, 1 << 20, 3500) == 0.0);         /* not msgpack */
    msgpack_sbuffer_destroy(&sb);
}

/* ---- ownership ---- */

static void test_decode_does_not_keep_the_input(void **state)
{
    struct bytes b = unhex(VEC_RETRY_IN);
    struct env e;

    (void)state;
    assert_int_equal(env_decode(&e, b.p, b.len, MAX_BYTES, NULL, 0), ENV_OK);
    memset(b.p, 0xff, b.len);
    free(b.p);
    assert_slice(e.jid, "7a6b5c4d3e2f10293847566574839201");
    assert_slice(e.type, "email.activation");
    assert_memory_equal(map_get(&e.args, "activation_token")->via.str.ptr, "tok_9f8e7d6c", 12);
    assert_encodes_to(&e, VEC_RETRY_IN);
    env_free(&e);
}

static void test_set_error_copies_and_can_be_cleared(void **state)
{
    char msg[] = "first";
    struct env e;

    (void)state;
    assert_int_equal(decode_hex(&e, VEC_MINIMAL, NULL, 0), ENV_OK);
    env_set_error(&e, msg);
    strcpy(msg, "XXXXX");
    assert_slice(e.error, "first");
    env_set_error(&e, "second");
    assert_slice(e.error, "second");
    env_set_error(&e, "");
    assert_non_null(e.error.ptr);
    assert_int_equal(e.error.len, 0);
    env_set_error(&e, NULL);
    assert_null(e.error.ptr);
    assert_encodes_to(&e, VEC_MINIMAL);
    env_free(&e);
}

static void test_set_error_works_after_a_failed_decode(void **state)
{
    struct env e;

    (void)state;
    assert_int_equal(env_decode(&e, "\x80", 1, 0, NULL, 0), ENV_E_TOO_BIG);
    env_set_error(&e, "kept anyway");
    assert_slice(e.error, "kept anyway");
    env_free(&e);
    env_free(&e);
}

/* ---- encoding ---- */

static void test_encode_appends_new_keys_in_canonical_order(void **state)
{
    struct env e;

    (void)state;
    assert_int_equal(decode_hex(&e, VEC_MINIMAL, NULL, 0), ENV_OK);
    /* Set in an order unlike the canonical one, to show it does not matter. */
    e.crashes = 2;
    e.traceparent = (struct env_str){"00-01-02-01", 11};
    e.retry_at = T0 + 1000;
    e.failed_at = T0;
    env_set_error(&e, "boom");
    e.max_attempts = 4;
    e.attempt = 3;
    e.created_at = 5;
    e.queue = (struct env_str){"q", 1};
    e.has |= ENV_HAS_V; /* v equals its default, so only the bit says to write it */
    assert_encodes_to(&e, CANONICAL_APPEND);
    env_free(&e);
}

static void test_encode_writes_a_changed_int_without_its_has_bit(void **state)
{
    struct env e, again;
    msgpack_sbuffer sb;

    (void)state;
    assert_int_equal(decode_hex(&e, VEC_MINIMAL, NULL, 0), ENV_OK);
    e.attempt++;
    msgpack_sbuffer_init(&sb);
    assert_int_equal(env_encode(&e, &sb), 0);
    assert_int_equal(env_decode(&again, sb.data, sb.size, MAX_BYTES, NULL, 0), ENV_OK);
    assert_int_equal(again.attempt, 1);
    assert_true(again.has & ENV_HAS_ATTEMPT);
    env_free(&again);
    msgpack_sbuffer_destroy(&sb);
    env_free(&e);
}

static void test_encode_keeps_unknown_values_of_every_type(void **state)
{
    (void)state;
    assert_roundtrip(ODD_UNKNOWNS);
    assert_roundtrip("84a36a6964a26a31a474797065a174a46172677380a3663332ca3fc00000");
}

static void test_encode_of_a_bare_struct_writes_set_keys(void **state)
{
    struct env e;
    msgpack_sbuffer sb;

    (void)state;
    memset(&e, 0, sizeof(e));
    e.max_attempts = -1;
    e.v = 1;
    e.jid = (struct env_str){"j1", 2};
    e.type = (struct env_str){"t", 1};
    msgpack_sbuffer_init(&sb);
    assert_int_equal(env_encode(&e, &sb), 0);
    assert_sbuf_hex(&sb, "82a36a6964a26a31a474797065a174");
    msgpack_sbuffer_destroy(&sb);
}

/* ---- env_new ---- */

static void test_env_new_without_queue_or_max_attempts(void **state)
{
    struct env_new n = {.jid = "j1", .type = "sys.noop", .max_attempts = -1};

    (void)state;
    assert_env_new(&n, "85a36a6964a26a31a474797065a87379732e6e6f6f70a46172677380aa637265617465"
                       "645f617400a7617474656d707400");
    n = (struct env_new){.jid = "j1", .type = "t", .args = "\x80", .args_len = 1,
                         .created_at = -1, .max_attempts = 1};
    assert_env_new(&n, "86a36a6964a26a31a474797065a174a46172677380aa637265617465645f6174ffa761"
                       "7474656d707400ac6d61785f617474656d70747301");
}

static void test_env_new_refuses_what_decode_would_refuse(void **state)
{
    static const char jid65[] =
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
    const struct env_new bad[] = {
        {.jid = NULL, .type = "t", .max_attempts = -1},
        {.jid = "", .type = "t", .max_attempts = -1},
        {.jid = jid65, .type = "t", .max_attempts = -1},
        {.jid = "j", .type = NULL, .max_attempts = -1},
        {.jid = "j", .type = "", .max_attempts = -1},
        {.jid = "j", .type = "t", .max_attempts = 0},
        {.jid = "j", .type = "t", .args = "\x01", .args_len = 1, .max_attempts = -1},
        {.jid = "j", .type = "t", .args = "\x80\x01", .args_len = 2, .max_attempts = -1},
        {.jid = "j", .type = "t", .args = "\x81\xa1", .args_len = 2, .max_attempts = -1},
        {.jid = "j", .type = "t", .args = "", .args_len = 0, .max_attempts = -1},
    };
    msgpack_sbuffer sb;

    (void)state;
    msgpack_sbuffer_init(&sb);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (env_new(&bad[i], &sb) != -EINVAL)
            fail_msg("case %zu accepted", i);
        assert_int_equal(sb.size, 0);
    }
    msgpack_sbuffer_destroy(&sb);
}

/* ---- dead-letter records ---- */

static void test_malformed_record_of_garbage_has_empty_jid(void **state)
{
    msgpack_sbuffer sb;

    (void)state;
    msgpack_sbuffer_init(&sb);
    assert_int_equal(env_malformed_record("\xc1\x00", 2, "boom", 1, &sb), 0);
    assert_sbuf_hex(&sb, "85a36a6964a0a56572726f72a4626f6f6da96661696c65645f617401a96d616c666f72"
                         "6d6564c3a3726177c402c100");
    msgpack_sbuffer_destroy(&sb);
}

static void test_malformed_record_takes_jid_despite_trailing_bytes(void **state)
{
    msgpack_sbuffer sb;

    (void)state;
    msgpack_sbuffer_init(&sb);
    assert_int_equal(env_malformed_record("\x81\xa3jid\xa2j1\x01", 9, NULL, -1, &sb), 0);
    assert_sbuf_hex(&sb, "85a36a6964a26a31a56572726f72a0a96661696c65645f6174ffa96d616c666f726d65"
                         "64c3a3726177c40981a36a6964a26a3101");
    msgpack_sbuffer_destroy(&sb);
}

/* ---- env_strcpy ---- */

static void test_env_strcpy_truncates_and_terminates(void **state)
{
    char buf[4] = "zzz";

    (void)state;
    assert_string_equal(env_strcpy(buf, sizeof(buf), (struct env_str){"abcdef", 6}), "abc");
    assert_string_equal(env_strcpy(buf, sizeof(buf), (struct env_str){"ab", 2}), "ab");
    assert_string_equal(env_strcpy(buf, sizeof(buf), (struct env_str){NULL, 0}), "");
    buf[0] = 'q';
    assert_ptr_equal(env_strcpy(buf, 0, (struct env_str){"abc", 3}), buf);
    assert_int_equal(buf[0], 'q');
}

/* ---- never crash ---- */

/* xorshift64*: a fixed seed gives the same inputs on every run. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rng(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dULL;
}

/* Whatever the input, decode returns a known code with a reason; what it
 * accepts, it can encode, and the encoding decodes to the same bytes again. */
static void assert_sane(const char *p, size_t len)
{
    char err[256], *hex;
    struct env e, again;
    msgpack_sbuffer sb;
    int rc = env_decode(&e, p, len, MAX_BYTES, err, sizeof(err));

    assert_true(rc <= ENV_OK && rc >= ENV_E_VERSION);
    if (rc != ENV_OK) {
        assert_true(err[0] != '\0');
        assert_null(strchr(err, '\n'));
        env_free(&e);
        return;
    }
    msgpack_sbuffer_init(&sb);
    assert_int_equal(env_encode(&e, &sb), 0);
    assert_int_equal(env_decode(&again, sb.data, sb.size, MAX_BYTES, err, sizeof(err)), ENV_OK);
    hex = tohex(sb.data, sb.size);
    assert_encodes_to(&again, hex);
    free(hex);
    env_free(&again);
    msgpack_sbuffer_destroy(&sb);
    env_free(&e);
}

static void test_every_truncation_is_not_msgpack(void **state)
{
    (void)state;
    for (size_t i = 0; i < NVALID; i++) {
        struct bytes b = unhex(VALID[i]);

        for (size_t len = 0; len < b.len; len++) {
            /* A private copy of exactly len bytes, so ASan sees any overread. */
            char *cut = malloc(len ? len : 1);
            char err[256];
            struct env e;

            memcpy(cut, b.p, len);
            assert_int_equal(env_decode(&e, cut, len, MAX_BYTES, err, sizeof(err)),
                             ENV_E_NOT_MSGPACK);
            env_free(&e);
            free(cut);
        }
        free(b.p);
    }
}

static void test_mutated_vectors_never_crash(void **state)
{
    (void)state;
    for (size_t i = 0; i < NVALID; i++) {
        struct bytes b = unhex(VALID[i]);

        for (int round = 0; round < 2000; round++) {
            char *m = malloc(b.len);
            int flips = 1 + (int)(rng() % 3);

            memcpy(m, b.p, b.len);
            while (flips-- > 0)
                m[rng() % b.len] = (char)rng();
            assert_sane(m, b.len);
            free(m);
        }
        free(b.p);
    }
}

static void test_random_bytes_never_crash(void **state)
{
    (void)state;
    for (int round = 0; round < 5000; round++) {
        size_t len = rng() % 64;
        char *p = malloc(len ? len : 1);

        for (size_t j = 0; j < len; j++)
            p[j] = (char)rng();
        /* Half the time start with a small map, to get past the first check. */
        if (len > 0 && round % 2)
            p[0] = (char)(0x80 | (rng() % 4));
        assert_sane(p, len);
        free(p);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vector_minimal_reads_defaults),
        cmocka_unit_test(test_vector_welcome_is_what_env_new_writes),
        cmocka_unit_test(test_vector_request_log_keeps_nil_args),
        cmocka_unit_test(test_vector_unicode_passes_utf8_through),
        cmocka_unit_test(test_vector_retry_keeps_unknown_key_in_place),
        cmocka_unit_test(test_vector_malformed_record_salvages_jid),
        cmocka_unit_test(test_vector_traced_is_env_new_plus_traceparent),
        cmocka_unit_test(test_every_valid_vector_roundtrips),
        cmocka_unit_test(test_rejections_give_code_and_reason),
        cmocka_unit_test(test_too_big_is_refused_before_parsing),
        cmocka_unit_test(test_jid_of_64_bytes_is_accepted),
        cmocka_unit_test(test_nil_optional_keys_read_as_absent),
        cmocka_unit_test(test_duplicate_unknown_keys_are_kept),
        cmocka_unit_test(test_explicit_v1_is_accepted_and_kept),
        cmocka_unit_test(test_nesting_limit_matches_msgpack_c),
        cmocka_unit_test(test_env_new_refuses_args_the_worker_would_refuse),
        cmocka_unit_test(test_env_waited_counts_from_created_at),
        cmocka_unit_test(test_decode_does_not_keep_the_input),
        cmocka_unit_test(test_set_error_copies_and_can_be_cleared),
        cmocka_unit_test(test_set_error_works_after_a_failed_decode),
        cmocka_unit_test(test_encode_appends_new_keys_in_canonical_order),
        cmocka_unit_test(test_encode_writes_a_changed_int_without_its_has_bit),
        cmocka_unit_test(test_encode_keeps_unknown_values_of_every_type),
        cmocka_unit_test(test_encode_of_a_bare_struct_writes_set_keys),
        cmocka_unit_test(test_env_new_without_queue_or_max_attempts),
        cmocka_unit_test(test_env_new_refuses_what_decode_would_refuse),
        cmocka_unit_test(test_malformed_record_of_garbage_has_empty_jid),
        cmocka_unit_test(test_malformed_record_takes_jid_despite_trailing_bytes),
        cmocka_unit_test(test_env_strcpy_truncates_and_terminates),
        cmocka_unit_test(test_every_truncation_is_not_msgpack),
        cmocka_unit_test(test_mutated_vectors_never_crash),
        cmocka_unit_test(test_random_bytes_never_crash),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
