/*
 * test_rcheck.c - unit tests for the rules of worker/rcheck.c: what each
 * maxmemory-policy and each persistence setting means for the jobs, and that
 * the message names the value and the remedy.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "rcheck.h"

static char msg[512];

static void test_noeviction_is_ok_with_an_empty_message(void **state)
{
    (void)state;
    strcpy(msg, "stale");
    assert_int_equal(rcheck_policy("noeviction", 0, msg, sizeof(msg)), RCHECK_OK);
    assert_string_equal(msg, "");
    assert_int_equal(rcheck_policy("noeviction", 1, msg, sizeof(msg)), RCHECK_OK);
}

static void test_allkeys_policies_are_fatal_with_the_remedy(void **state)
{
    static const char *const policies[] = {"allkeys-lru", "allkeys-lfu", "allkeys-random"};
    char want[512];
    (void)state;
    for (size_t i = 0; i < sizeof(policies) / sizeof(policies[0]); i++) {
        assert_int_equal(rcheck_policy(policies[i], 0, msg, sizeof(msg)), RCHECK_FATAL);
        snprintf(want, sizeof(want),
                 "maxmemory-policy %s lets Redis evict queued jobs under memory pressure; set "
                 "maxmemory-policy noeviction, or redis.allow_eviction = true to run anyway",
                 policies[i]);
        assert_string_equal(msg, want);
    }
}

static void test_allow_eviction_turns_allkeys_into_a_warning(void **state)
{
    (void)state;
    assert_int_equal(rcheck_policy("allkeys-lru", 1, msg, sizeof(msg)), RCHECK_WARN);
    assert_non_null(strstr(msg, "allkeys-lru"));
    assert_non_null(strstr(msg, "redis.allow_eviction = true"));
}

static void test_volatile_policies_warn_about_heartbeats_allowed_or_not(void **state)
{
    static const char *const policies[] = {"volatile-lru", "volatile-lfu", "volatile-random",
                                           "volatile-ttl"};
    (void)state;
    for (size_t i = 0; i < sizeof(policies) / sizeof(policies[0]); i++) {
        for (int allow = 0; allow <= 1; allow++) {
            assert_int_equal(rcheck_policy(policies[i], allow, msg, sizeof(msg)), RCHECK_WARN);
            assert_non_null(strstr(msg, policies[i]));
            assert_non_null(strstr(msg, "heartbeat"));
            assert_non_null(strstr(msg, "noeviction"));
        }
    }
}

static void test_unknown_policy_counts_as_evicting(void **state)
{
    (void)state;
    assert_int_equal(rcheck_policy("allkeys-future", 0, msg, sizeof(msg)), RCHECK_FATAL);
    assert_int_equal(rcheck_policy("", 0, msg, sizeof(msg)), RCHECK_FATAL);
    assert_int_equal(rcheck_policy("NoEviction", 0, msg, sizeof(msg)), RCHECK_FATAL);
    assert_int_equal(rcheck_policy("allkeys-future", 1, msg, sizeof(msg)), RCHECK_WARN);
}

static void test_a_small_buffer_is_cut_not_overrun(void **state)
{
    char small[16];
    (void)state;
    memset(small, 'x', sizeof(small));
    assert_int_equal(rcheck_policy("allkeys-lru", 0, small, sizeof(small)), RCHECK_FATAL);
    assert_int_equal(strlen(small), sizeof(small) - 1);
    assert_int_equal(rcheck_policy("allkeys-lru", 0, small, 0), RCHECK_FATAL);
}

static void test_aof_on_is_ok_whatever_the_snapshots(void **state)
{
    (void)state;
    strcpy(msg, "stale");
    assert_int_equal(rcheck_persistence("yes", "", msg, sizeof(msg)), RCHECK_OK);
    assert_string_equal(msg, "");
    assert_int_equal(rcheck_persistence("yes", "3600 1 300 100", msg, sizeof(msg)), RCHECK_OK);
}

static void test_no_aof_and_no_save_points_loses_every_job_on_restart(void **state)
{
    (void)state;
    assert_int_equal(rcheck_persistence("no", "", msg, sizeof(msg)), RCHECK_WARN);
    assert_non_null(strstr(msg, "restart loses every job"));
    assert_non_null(strstr(msg, "appendonly yes"));
    assert_int_equal(rcheck_persistence("no", "  ", msg, sizeof(msg)), RCHECK_WARN);
    assert_non_null(strstr(msg, "restart loses every job"));
}

static void test_snapshots_only_lose_up_to_the_last_snapshot(void **state)
{
    (void)state;
    assert_int_equal(rcheck_persistence("no", "3600 1 300 100", msg, sizeof(msg)), RCHECK_WARN);
    assert_non_null(strstr(msg, "save 3600 1 300 100"));
    assert_non_null(strstr(msg, "since the last snapshot"));
    assert_null(strstr(msg, "every job"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_noeviction_is_ok_with_an_empty_message),
        cmocka_unit_test(test_allkeys_policies_are_fatal_with_the_remedy),
        cmocka_unit_test(test_allow_eviction_turns_allkeys_into_a_warning),
        cmocka_unit_test(test_volatile_policies_warn_about_heartbeats_allowed_or_not),
        cmocka_unit_test(test_unknown_policy_counts_as_evicting),
        cmocka_unit_test(test_a_small_buffer_is_cut_not_overrun),
        cmocka_unit_test(test_aof_on_is_ok_whatever_the_snapshots),
        cmocka_unit_test(test_no_aof_and_no_save_points_loses_every_job_on_restart),
        cmocka_unit_test(test_snapshots_only_lose_up_to_the_last_snapshot),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
