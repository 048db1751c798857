/*
 * test_decimal.c - unit tests for worker/decimal.c: which amount texts are
 * accepted as numeric(18,4) credits, why the others are refused, and how
 * amounts compare without ever becoming a float.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "decimal.h"

static void assert_ok(const char *s)
{
    char why[160] = "";
    if (dec_check(s, why, sizeof(why)) != 0)
        fail_msg("\"%s\" refused: %s", s, why);
}

static void assert_refused(const char *s, const char *reason)
{
    char why[160] = "";
    if (dec_check(s, why, sizeof(why)) != -1)
        fail_msg("\"%s\" accepted", s);
    if (!strstr(why, reason))
        fail_msg("\"%s\": \"%s\" does not say \"%s\"", s, why, reason);
}

static void test_plain_amounts_are_accepted(void **state)
{
    (void)state;
    assert_ok("1");
    assert_ok("25");
    assert_ok("25.5");
    assert_ok("25.50");
    assert_ok("1000.00");
    assert_ok("0.0001");
    assert_ok("0.5");
}

static void test_the_numeric_18_4_bounds_are_accepted(void **state)
{
    (void)state;
    assert_ok("99999999999999.9999"); /* 14 + 4 digits: the largest */
    assert_ok("99999999999999");
    /* leading zeros do not count as digits */
    assert_ok("000099999999999999.9999");
    assert_ok("00.0001");
}

static void test_zero_in_any_spelling_is_refused(void **state)
{
    (void)state;
    assert_refused("0", "more than zero");
    assert_refused("0.0", "more than zero");
    assert_refused("0.0000", "more than zero");
    assert_refused("0000", "more than zero");
    assert_refused("000.000", "more than zero");
}

static void test_signs_exponents_spaces_and_words_are_refused(void **state)
{
    (void)state;
    const char *bad[] = {"-1", "+1", "1e3", "1E3", " 5", "5 ", "abc", "", "1,5", "0x10",
                         ".5", "1.2.3", "NaN", "Infinity", "\xc2\xb9", "1_000"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_refused(bad[i], "decimal number");
}

static void test_a_dot_without_decimals_is_refused(void **state)
{
    (void)state;
    assert_refused("5.", "followed by digits");
    assert_refused(".", "followed by digits");
}

static void test_more_than_four_decimals_is_refused(void **state)
{
    (void)state;
    assert_refused("1.23456", "more than 4 decimals");
    assert_refused("0.00001", "more than 4 decimals");
    /* even trailing zeros: the producer meant a precision we do not keep */
    assert_refused("1.00000", "more than 4 decimals");
}

static void test_more_than_fourteen_integer_digits_is_refused(void **state)
{
    (void)state;
    assert_refused("100000000000000", "more than 14 digits");
    assert_refused("123456789012345.5", "more than 14 digits");
}

static void test_why_is_cut_to_its_buffer(void **state)
{
    char why[8];
    (void)state;
    assert_int_equal(dec_check("abc", why, sizeof(why)), -1);
    assert_int_equal(strlen(why), sizeof(why) - 1);
}

static void test_compare_by_value_not_by_text(void **state)
{
    (void)state;
    assert_int_equal(dec_cmp("1.5", "1.50"), 0);
    assert_int_equal(dec_cmp("1.5000", "1.5"), 0);
    assert_int_equal(dec_cmp("007", "7"), 0);
    assert_int_equal(dec_cmp("7", "7.0000"), 0);
    assert_true(dec_cmp("10", "9.9999") > 0);
    assert_true(dec_cmp("9.9999", "10") < 0);
    assert_true(dec_cmp("0.0001", "0.001") < 0);
    assert_true(dec_cmp("2", "10") < 0);
    assert_true(dec_cmp("1000000.0001", "1000000.00") > 0);
    assert_true(dec_cmp("1000000.00", "1000000.0001") < 0);
    assert_true(dec_cmp("0.5", "0.05") > 0);
    assert_true(dec_cmp("99999999999999.9999", "99999999999999.9998") > 0);
    assert_true(dec_cmp("0", "0.0001") < 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_amounts_are_accepted),
        cmocka_unit_test(test_the_numeric_18_4_bounds_are_accepted),
        cmocka_unit_test(test_zero_in_any_spelling_is_refused),
        cmocka_unit_test(test_signs_exponents_spaces_and_words_are_refused),
        cmocka_unit_test(test_a_dot_without_decimals_is_refused),
        cmocka_unit_test(test_more_than_four_decimals_is_refused),
        cmocka_unit_test(test_more_than_fourteen_integer_digits_is_refused),
        cmocka_unit_test(test_why_is_cut_to_its_buffer),
        cmocka_unit_test(test_compare_by_value_not_by_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
