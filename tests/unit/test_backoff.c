/*
 * test_backoff.c - unit tests for worker/backoff.c.
 *
 * The random part is an argument, so every figure here is exact: each test
 * states the formula's terms in seconds and expects their sum in milliseconds.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>

#include "backoff.h"

static const struct backoff dflt = BACKOFF_DEFAULT;

static void test_first_retry_without_jitter_is_16_seconds(void **state)
{
    (void)state;
    /* 1^4 + 15 + 0 */
    assert_int_equal(backoff_ms(&dflt, 1, 0.0), 16000);
}

static void test_second_retry_with_half_jitter_is_46_seconds(void **state)
{
    (void)state;
    /* 2^4 + 15 + 5 * 3 */
    assert_int_equal(backoff_ms(&dflt, 2, 0.5), 46000);
}

static void test_sidekiq_figures_below_the_cap(void **state)
{
    (void)state;
    /* 3^4 + 15 + 2.5 * 4 */
    assert_int_equal(backoff_ms(&dflt, 3, 0.25), 106000);
    /* 10^4 + 15 + 10 * 11, r01 at its top */
    assert_int_equal(backoff_ms(&dflt, 10, 1.0), 10125000);
    /* 25^4 + 15 + 9.9 * 26: the 25th attempt, still under 7 days */
    assert_int_equal(backoff_ms(&dflt, 25, 0.99), 390897400);
}

static void test_attempt_below_one_counts_as_one(void **state)
{
    (void)state;
    assert_int_equal(backoff_ms(&dflt, 0, 0.0), 16000);
    assert_int_equal(backoff_ms(&dflt, -7, 0.5), backoff_ms(&dflt, 1, 0.5));
    assert_int_equal(backoff_ms(&dflt, INT64_MIN, 0.0), 16000);
}

static void test_base_and_factor_scale_their_terms(void **state)
{
    const struct backoff b = {.base = 1.0, .factor = 2.0, .cap = 1e9};

    (void)state;
    /* 2 * 3^4 + 1 + 2 * 2.5 * 4 */
    assert_int_equal(backoff_ms(&b, 3, 0.25), 183000);
}

static void test_result_is_rounded_to_the_millisecond(void **state)
{
    const struct backoff tiny = {.base = 0.0, .factor = 0.0002, .cap = 1e9};

    (void)state;
    /* 0.0002 * 1 + 0 + 0.0002 * 1 * 2 = 0.6 ms */
    assert_int_equal(backoff_ms(&tiny, 1, 0.1), 1);
    /* 0.0002 s = 0.2 ms */
    assert_int_equal(backoff_ms(&tiny, 1, 0.0), 0);
}

static void test_cap_is_jittered_downwards(void **state)
{
    (void)state;
    /* 30^4 + 15 = 810015 s, over the 604800 s cap: cap - cap * 0.1 * r01 */
    assert_int_equal(backoff_ms(&dflt, 30, 0.0), 604800000);
    assert_int_equal(backoff_ms(&dflt, 30, 0.5), 574560000);
    assert_int_equal(backoff_ms(&dflt, 30, 1.0), 544320000);
}

static void test_exactly_the_cap_counts_as_capped(void **state)
{
    const struct backoff b = {.base = 5.0, .factor = 1.0, .cap = 16.0};

    (void)state;
    /* 1 + 5 + 5 * 2 = 16, not below the cap: 16 - 16 * 0.1 * 0.5 */
    assert_int_equal(backoff_ms(&b, 1, 0.5), 15200);
}

static void test_huge_attempts_stay_at_the_cap(void **state)
{
    (void)state;
    assert_int_equal(backoff_ms(&dflt, 100000, 0.0), 604800000);
    assert_int_equal(backoff_ms(&dflt, INT64_MAX, 0.0), 604800000);
}

static void test_out_of_range_random_is_clamped(void **state)
{
    (void)state;
    assert_int_equal(backoff_ms(&dflt, 1, -3.0), 16000);
    assert_int_equal(backoff_ms(&dflt, 1, NAN), 16000);
    assert_int_equal(backoff_ms(&dflt, 1, 7.0), backoff_ms(&dflt, 1, 1.0));
}

static void test_delay_grows_with_attempts_until_the_cap(void **state)
{
    int64_t prev = 0;

    (void)state;
    for (int64_t a = 1; a <= 27; a++) {
        int64_t d = backoff_ms(&dflt, a, 0.3);

        assert_true(d > prev);
        assert_true(d <= 604800000);
        prev = d;
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_first_retry_without_jitter_is_16_seconds),
        cmocka_unit_test(test_second_retry_with_half_jitter_is_46_seconds),
        cmocka_unit_test(test_sidekiq_figures_below_the_cap),
        cmocka_unit_test(test_attempt_below_one_counts_as_one),
        cmocka_unit_test(test_base_and_factor_scale_their_terms),
        cmocka_unit_test(test_result_is_rounded_to_the_millisecond),
        cmocka_unit_test(test_cap_is_jittered_downwards),
        cmocka_unit_test(test_exactly_the_cap_counts_as_capped),
        cmocka_unit_test(test_huge_attempts_stay_at_the_cap),
        cmocka_unit_test(test_out_of_range_random_is_clamped),
        cmocka_unit_test(test_delay_grows_with_attempts_until_the_cap),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
