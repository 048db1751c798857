/*
 * test_producer.c - unit tests for lib/producer.c (libstellerjobs), without Redis.
 *
 * What a producer builds must be what a worker reads: jobs made through the public
 * API are compared byte for byte with the vectors of docs/PROTOCOL.md, with args
 * given as JSON so that the JSON to msgpack mapping is checked on real payloads.
 * The expected bytes of the mapping test come from Python's msgpack
 * (packb(..., use_bin_type=True)). Then the default queue map, jid generation, and
 * the arguments the library refuses before anything reaches Redis.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ctype.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envelope.h"
#include "protocol_vectors.h"
#include "steller/jobs.h"

/* Every JSON type, keys in JSON order, from Python's msgpack. */
static const char JSON_ALL_TYPES[] =
    "{\"s\":\"x\",\"i\":-5,\"u\":300,\"big\":9223372036854775807,"
    "\"neg\":-9223372036854775808,\"r\":2.5,\"t\":true,\"f\":false,\"n\":null,"
    "\"a\":[1,\"two\",[]],\"o\":{\"k\":{}},\"e\":\"\\u00e9\"}";
static const char MSGPACK_ALL_TYPES[] =
    "8ca173a178a169fba175cd012ca3626967cf7fffffffffffffffa36e6567d38000000000000000a172cb40"
    "04000000000000a174c3a166c2a16ec0a1619301a374776f90a16f81a16b80a165a2c3a9";

/* ---- helpers ---- */

static char *hex(const char *buf, size_t len)
{
    char *out = malloc(2 * len + 1);

    for (size_t i = 0; i < len; i++)
        sprintf(out + 2 * i, "%02x", (unsigned char)buf[i]);
    out[2 * len] = '\0';
    return out;
}

static void assert_bytes_hex(const char *buf, size_t len, const char *expected)
{
    char *got = hex(buf, len);

    assert_string_equal(got, expected);
    free(got);
}

static stj_job *job_from_json(const char *type, const char *jid, const char *json)
{
    stj_job *j = stj_job_new(type);
    char err[256];

    assert_non_null(j);
    assert_int_equal(stj_job_set_jid(j, jid), 0);
    if (stj_job_set_args_json(j, json, err, sizeof err) != 0)
        fail_msg("args %s: %s", json, err);
    stj_job_set_created_at(j, T0);
    return j;
}

static void assert_job_encodes_to(const stj_job *j, const char *expected)
{
    char *buf;
    size_t len;

    assert_int_equal(stj_job_encode(j, &buf, &len), 0);
    assert_bytes_hex(buf, len, expected);
    free(buf);
}

/* The reason stj_json_to_msgpack gives for refusing json. */
static const char *json_refused(const char *json)
{
    static char err[256];
    char *out = NULL;
    size_t len;

    err[0] = '\0';
    assert_int_equal(stj_json_to_msgpack(json, &out, &len, err, sizeof err), STJ_E_INVAL);
    assert_null(out);
    assert_true(err[0] != '\0');
    return err;
}

/* JSON of depth nested objects: {"a":{"a":...{}}}; depth 1 is {}. */
static char *nested_json(int depth)
{
    char *s = malloc(8 * (size_t)depth + 1), *p = s;

    for (int i = 1; i < depth; i++)
        p += sprintf(p, "{\"a\":");
    p += sprintf(p, "{}");
    for (int i = 1; i < depth; i++)
        *p++ = '}';
    *p = '\0';
    return s;
}

/* ---- envelopes match the protocol's vectors ---- */

static void test_welcome_job_matches_protocol_vector_2(void **state)
{
    stj_job *j =
        job_from_json("email.welcome", "a1b2c3d4e5f60718293a4b5c6d7e8f90", "{\"partner_id\": 42}");

    (void)state;
    assert_string_equal(stj_job_queue(j), "email");
    assert_job_encodes_to(j, VEC_WELCOME);
    stj_job_free(j);
}

static void test_request_log_json_with_nulls_matches_vector_3(void **state)
{
    stj_job *j = job_from_json(
        "request_log", "0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f",
        "{\"request_id\": \"req_7d3f9a2c\", \"partner_id\": null, \"method\": \"GET\","
        " \"path\": \"/api/wallet/me\", \"status\": 200, \"duration_ms\": 12, \"ip\": null,"
        " \"user_agent\": \"Steller-SDK/2.1 (.NET 8)\", \"request_bytes\": 0,"
        " \"response_bytes\": 187, \"environment\": \"sandbox\","
        " \"occurred_at\": 1718000000123}");

    (void)state;
    stj_job_set_created_at(j, T0 + 125);
    assert_job_encodes_to(j, VEC_REQUEST_LOG);
    stj_job_free(j);
}

static void test_utf8_args_match_vector_4(void **state)
{
    stj_job *j = job_from_json("sys.noop", "5e4d3c2b1a0918273645546372819000",
                               "{\"business_name\": \"Caf\\u00e9 Z\xc3\xbcrich & S\xc3\xb6hne "
                               "\xe2\x80\x94 \xe6\x9d\xb1\xe4\xba\xac\xe6\x94\xaf\xe5\xba\x97 "
                               "\xf0\x9f\x9a\x80\"}");

    (void)state;
    assert_job_encodes_to(j, VEC_UNICODE);
    stj_job_free(j);
}

static void test_max_attempts_and_queue_reach_the_envelope(void **state)
{
    stj_job *j = job_from_json("wallet.seed_sandbox", "c0ffee", "{\"partner_id\": 1007}");
    struct env e;
    char *buf, err[256];
    size_t len;

    (void)state;
    assert_int_equal(stj_job_set_max_attempts(j, 5), 0);
    assert_int_equal(stj_job_set_queue(j, "vip"), 0);
    assert_int_equal(stj_job_encode(j, &buf, &len), 0);
    if (env_decode(&e, buf, len, 262144, err, sizeof err) != 0)
        fail_msg("decode: %s", err);
    assert_int_equal(e.max_attempts, 5);
    assert_int_equal(e.created_at, T0);
    assert_int_equal(e.attempt, 0);
    assert_int_equal(e.queue.len, 3);
    assert_memory_equal(e.queue.ptr, "vip", 3);
    assert_int_equal(e.args.via.map.size, 1);
    env_free(&e);
    free(buf);
    stj_job_free(j);
}

static void test_traceparent_is_checked_and_reaches_the_envelope_last(void **state)
{
    static const char tp[] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    stj_job *j = job_from_json("email.welcome", "c0ffee", "{\"partner_id\": 1007}");
    struct env e;
    char *buf, err[256];
    size_t len;

    (void)state;
    assert_int_equal(stj_job_set_traceparent(j, "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
                     STJ_E_INVAL); /* uppercase */
    assert_int_equal(stj_job_set_traceparent(j, "00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
                     STJ_E_INVAL); /* all-zero trace id */
    assert_int_equal(stj_job_set_traceparent(j, "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
                     STJ_E_INVAL); /* unknown version */
    assert_int_equal(stj_job_set_traceparent(j, "00-4bf92f"), STJ_E_INVAL);
    assert_int_equal(stj_job_set_traceparent(j, tp), 0);
    assert_int_equal(stj_job_encode(j, &buf, &len), 0);
    if (env_decode(&e, buf, len, 262144, err, sizeof err) != 0)
        fail_msg("decode: %s", err);
    assert_int_equal(e.traceparent.len, 55);
    assert_memory_equal(e.traceparent.ptr, tp, 55);
    /* canonical order: the last key, so the bytes end with its value */
    assert_memory_equal(buf + len - 55, tp, 55);
    env_free(&e);
    free(buf);
    assert_int_equal(stj_job_set_traceparent(j, NULL), 0);
    assert_int_equal(stj_job_encode(j, &buf, &len), 0);
    assert_int_equal(env_decode(&e, buf, len, 262144, err, sizeof err), 0);
    assert_null(e.traceparent.ptr);
    env_free(&e);
    free(buf);
    stj_job_free(j);
}

static void test_new_job_has_defaults_and_empty_args(void **state)
{
    stj_job *j = stj_job_new("sys.noop");
    struct env e;
    char *buf, err[256];
    size_t len;

    (void)state;
    assert_non_null(j);
    assert_int_equal(strlen(stj_job_jid(j)), STJ_JID_GEN_LEN);
    assert_int_equal(stj_job_encode(j, &buf, &len), 0);
    if (env_decode(&e, buf, len, 262144, err, sizeof err) != 0)
        fail_msg("decode: %s", err);
    assert_int_equal(e.args.type, MSGPACK_OBJECT_MAP);
    assert_int_equal(e.args.via.map.size, 0);
    assert_false(e.has & ENV_HAS_MAX_ATTEMPTS);
    assert_true(e.created_at > T0); /* now, not a fixed time */
    assert_memory_equal(e.queue.ptr, "default", 7);
    env_free(&e);
    free(buf);
    stj_job_free(j);
}

/* ---- JSON to msgpack ---- */

static void test_json_types_map_to_msgpack_types_in_key_order(void **state)
{
    char *out, err[256];
    size_t len;

    (void)state;
    if (stj_json_to_msgpack(JSON_ALL_TYPES, &out, &len, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_bytes_hex(out, len, MSGPACK_ALL_TYPES);
    free(out);
}

static void test_json_top_level_must_be_an_object(void **state)
{
    (void)state;
    assert_non_null(strstr(json_refused("[1, 2]"), "got array"));
    assert_non_null(strstr(json_refused("\"text\""), "got string"));
    assert_non_null(strstr(json_refused("42"), "got integer"));
    assert_non_null(strstr(json_refused("null"), "got null"));
}

static void test_bad_json_is_refused_with_position(void **state)
{
    (void)state;
    assert_non_null(strstr(json_refused("{\"a\": }"), "line 1 column"));
    assert_non_null(strstr(json_refused(""), "bad JSON"));
    assert_non_null(strstr(json_refused("{\"a\": 1} trailing"), "bad JSON"));
    json_refused("{\"a\": 1, \"a\": 2}");          /* a key twice */
    json_refused("{\"a\": 99999999999999999999}"); /* beyond 64 bits */
    json_refused("{\"a\": \"\\u0000\"}");          /* NUL inside a string */
}

static void test_json_nesting_stops_where_the_worker_stops(void **state)
{
    char *ok = nested_json(31), *deep = nested_json(32), *out, err[256];
    size_t len;
    stj_job *j = stj_job_new("sys.noop");

    (void)state;
    /* 31 levels of args plus the envelope map is the worker's limit of 32. */
    assert_int_equal(stj_json_to_msgpack(ok, &out, &len, err, sizeof err), 0);
    free(out);
    assert_int_equal(stj_job_set_args_json(j, ok, err, sizeof err), 0);
    assert_non_null(strstr(json_refused(deep), "deeper"));
    free(ok);
    free(deep);
    stj_job_free(j);
}

/* ---- args given as msgpack ---- */

static void test_msgpack_args_must_be_exactly_one_map(void **state)
{
    static const struct {
        const char *bytes;
        size_t len;
        const char *why;
    } bad[] = {
        {"\x92\x01\x02", 3, "an array"},
        {"\xa3\x61\x62\x63", 4, "a string"},
        {"\x81\xa1\x61\x01\x01", 5, "a map then trailing bytes"},
        {"\x81\xa1\x61", 3, "a truncated map"},
        {"\xc1", 1, "a byte that is no msgpack type"},
        {"", 0, "nothing"},
    };
    stj_job *j = stj_job_new("sys.noop");
    char err[256];

    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        if (stj_job_set_args_msgpack(j, bad[i].bytes, bad[i].len, err, sizeof err) != STJ_E_INVAL)
            fail_msg("accepted %s", bad[i].why);
        assert_true(err[0] != '\0');
    }
    assert_int_equal(stj_job_set_args_msgpack(j, "\x81\xa1\x61\x01", 4, err, sizeof err), 0);
    assert_int_equal(stj_job_set_args_msgpack(j, "\x80", 1, err, sizeof err), 0);
    stj_job_free(j);
}

/* levels nested one-key maps {"a": {"a": ... {}}} in msgpack; *len gets the size. */
static char *nested_msgpack(int levels, size_t *len)
{
    char *buf = malloc(3 * (size_t)levels), *p = buf;

    for (int i = 1; i < levels; i++, p += 3)
        memcpy(p, "\x81\xa1\x61", 3);
    *p++ = '\x80';
    *len = (size_t)(p - buf);
    return buf;
}

static void test_msgpack_args_nested_past_the_worker_limit_are_refused(void **state)
{
    size_t ok_len, deep_len;
    char *ok = nested_msgpack(31, &ok_len), *deep = nested_msgpack(32, &deep_len), err[256];
    stj_job *j = stj_job_new("sys.noop");

    (void)state;
    assert_int_equal(stj_job_set_args_msgpack(j, ok, ok_len, err, sizeof err), 0);
    assert_int_equal(stj_job_set_args_msgpack(j, deep, deep_len, err, sizeof err), STJ_E_INVAL);
    assert_non_null(strstr(err, "nested"));
    free(ok);
    free(deep);
    stj_job_free(j);
}

/* ---- the other fields ---- */

static void test_jid_and_queue_and_attempts_are_checked(void **state)
{
    char long_jid[STJ_JID_MAX + 2], prev[STJ_JID_MAX + 1];
    stj_job *j = stj_job_new("email.activation");

    (void)state;
    assert_null(stj_job_new(""));
    assert_null(stj_job_new(NULL));
    memset(long_jid, 'j', sizeof long_jid - 1);
    long_jid[sizeof long_jid - 1] = '\0';
    assert_int_equal(stj_job_set_jid(j, long_jid), STJ_E_INVAL);
    long_jid[STJ_JID_MAX] = '\0';
    assert_int_equal(stj_job_set_jid(j, long_jid), 0);
    assert_string_equal(stj_job_jid(j), long_jid);
    assert_int_equal(stj_job_set_jid(j, ""), STJ_E_INVAL);
    strcpy(prev, stj_job_jid(j));
    assert_int_equal(stj_job_set_jid(j, NULL), 0);
    assert_string_not_equal(stj_job_jid(j), prev);
    assert_int_equal(strlen(stj_job_jid(j)), STJ_JID_GEN_LEN);

    assert_int_equal(stj_job_set_queue(j, ""), STJ_E_INVAL);
    assert_int_equal(stj_job_set_queue(j, "bulk"), 0);
    assert_string_equal(stj_job_queue(j), "bulk");
    assert_int_equal(stj_job_set_queue(j, NULL), 0);
    assert_string_equal(stj_job_queue(j), "email");

    assert_int_equal(stj_job_set_max_attempts(j, 0), STJ_E_INVAL);
    assert_int_equal(stj_job_set_max_attempts(j, 1), 0);
    assert_int_equal(stj_job_set_max_attempts(j, -1), 0);
    stj_job_free(j);
}

static void test_default_queues_follow_the_job_type_table(void **state)
{
    static const char *const map[][2] = {
        {"request_log", "request_log"},
        {"email.welcome", "email"},
        {"email.activation", "email"},
        {"email.reengagement", "email"},
        {"email.anything_new", "email"},
        {"reengagement.sweep", "default"},
        {"wallet.seed_sandbox", "critical"},
        {"sys.noop", "default"},
        {"sys.crash", "default"},
        {"email", "default"}, /* the family needs a member after the dot */
        {"email.", "default"},
        {"emails.x", "default"},
        {"request_log.x", "default"},
        {"wallet.other", "default"},
        {"unknown", "default"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        if (strcmp(stj_default_queue(map[i][0]), map[i][1]) != 0)
            fail_msg("%s -> %s, want %s", map[i][0], stj_default_queue(map[i][0]), map[i][1]);
    }
    assert_string_equal(stj_default_queue(NULL), "default");
}

static int cmp_jid(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void test_generated_jids_are_20_lowercase_hex_and_distinct(void **state)
{
    enum { N = 2000 };
    char(*jids)[STJ_JID_GEN_LEN + 1] = malloc(N * sizeof *jids);

    (void)state;
    for (int i = 0; i < N; i++) {
        assert_int_equal(stj_jid_generate(jids[i]), 0);
        assert_int_equal(strlen(jids[i]), STJ_JID_GEN_LEN);
        for (int k = 0; k < STJ_JID_GEN_LEN; k++)
            assert_true(isxdigit((unsigned char)jids[i][k]) && !isupper((unsigned char)jids[i][k]));
    }
    qsort(jids, N, sizeof *jids, cmp_jid);
    for (int i = 1; i < N; i++)
        assert_string_not_equal(jids[i - 1], jids[i]);
    free(jids);
}

static void test_bad_url_is_refused_without_showing_the_password(void **state)
{
    char err[256] = "";

    (void)state;
    assert_null(stj_connect("rediss://user:hunter2@example.com:6380/0", NULL, err, sizeof err));
    assert_true(err[0] != '\0');
    assert_null(strstr(err, "hunter2"));
    assert_null(stj_connect("redis://:hunter2@host:notaport/0", NULL, err, sizeof err));
    assert_null(strstr(err, "hunter2"));
}

static void test_strerror_names_every_code(void **state)
{
    (void)state;
    for (int c = STJ_E_SYS; c <= STJ_OK; c++)
        assert_string_not_equal(stj_strerror(c), "unknown error");
    assert_string_equal(stj_strerror(-99), "unknown error");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_welcome_job_matches_protocol_vector_2),
        cmocka_unit_test(test_request_log_json_with_nulls_matches_vector_3),
        cmocka_unit_test(test_utf8_args_match_vector_4),
        cmocka_unit_test(test_max_attempts_and_queue_reach_the_envelope),
        cmocka_unit_test(test_new_job_has_defaults_and_empty_args),
        cmocka_unit_test(test_traceparent_is_checked_and_reaches_the_envelope_last),
        cmocka_unit_test(test_json_types_map_to_msgpack_types_in_key_order),
        cmocka_unit_test(test_json_top_level_must_be_an_object),
        cmocka_unit_test(test_bad_json_is_refused_with_position),
        cmocka_unit_test(test_json_nesting_stops_where_the_worker_stops),
        cmocka_unit_test(test_msgpack_args_must_be_exactly_one_map),
        cmocka_unit_test(test_msgpack_args_nested_past_the_worker_limit_are_refused),
        cmocka_unit_test(test_jid_and_queue_and_attempts_are_checked),
        cmocka_unit_test(test_default_queues_follow_the_job_type_table),
        cmocka_unit_test(test_generated_jids_are_20_lowercase_hex_and_distinct),
        cmocka_unit_test(test_bad_url_is_refused_without_showing_the_password),
        cmocka_unit_test(test_strerror_names_every_code),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
