/*
 * test_cron.c - unit tests for worker/cron.c.
 *
 * Times are written as UTC ISO-8601 text both ways, so each case reads as the
 * calendar question it asks: "after this moment, when does this expression
 * match next (or last)?".
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cron.h"

static int64_t at(const char *iso)
{
    struct tm tm;

    memset(&tm, 0, sizeof tm);
    if (sscanf(iso, "%d-%d-%dT%d:%d:%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
               &tm.tm_min, &tm.tm_sec) != 6)
        fail_msg("bad time %s", iso);
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (int64_t)timegm(&tm);
}

static const char *iso(int64_t t, char *buf, size_t size)
{
    time_t tt = (time_t)t;
    struct tm tm;

    if (t < 0) {
        snprintf(buf, size, "none");
        return buf;
    }
    gmtime_r(&tt, &tm);
    strftime(buf, size, "%Y-%m-%dT%H:%M:%S", &tm);
    return buf;
}

static struct cron parse(const char *expr)
{
    struct cron c;
    char err[128] = "";

    if (cron_parse(expr, &c, err, sizeof err) != 0)
        fail_msg("cron_parse(\"%s\"): %s", expr, err);
    return c;
}

/* The successive matches after `from`, as ISO text joined by spaces. */
static void expect_next(const char *expr, const char *from, const char *want)
{
    struct cron c = parse(expr);
    char got[1024] = "", buf[32];
    int64_t t = at(from);

    for (size_t n = 0; strlen(got) < strlen(want); n++) {
        t = cron_next(&c, t);
        if (n)
            strcat(got, " ");
        strcat(got, iso(t, buf, sizeof buf));
        if (t < 0)
            break;
    }
    if (strcmp(got, want) != 0)
        fail_msg("\"%s\" after %s:\n  got  %s\n  want %s", expr, from, got, want);
}

static void expect_prev(const char *expr, const char *from, const char *want)
{
    struct cron c = parse(expr);
    char buf[32];

    iso(cron_prev(&c, at(from)), buf, sizeof buf);
    if (strcmp(buf, want) != 0)
        fail_msg("\"%s\" at or before %s: got %s, want %s", expr, from, buf, want);
}

static void expect_error(const char *expr, const char *want)
{
    struct cron c;
    char err[256] = "";

    if (cron_parse(expr, &c, err, sizeof err) == 0)
        fail_msg("\"%s\" parsed; want the error \"%s\"", expr, want);
    if (strcmp(err, want) != 0)
        fail_msg("\"%s\":\n  got  %s\n  want %s", expr, err, want);
}

static void test_every_minute_is_the_next_minute(void **state)
{
    (void)state;
    expect_next("* * * * *", "2024-03-10T09:00:00", "2024-03-10T09:01:00 2024-03-10T09:02:00");
    /* strictly after: from inside a matching minute, the next one */
    expect_next("* * * * *", "2024-03-10T09:00:59", "2024-03-10T09:01:00");
}

static void test_steps_count_from_the_start_of_the_range(void **state)
{
    (void)state;
    expect_next("*/15 * * * *", "2024-03-10T09:00:00",
                "2024-03-10T09:15:00 2024-03-10T09:30:00 2024-03-10T09:45:00 "
                "2024-03-10T10:00:00");
    expect_next("0 */6 * * *", "2024-03-10T07:00:00",
                "2024-03-10T12:00:00 2024-03-10T18:00:00 2024-03-11T00:00:00");
    expect_next("10-30/10 * * * *", "2024-03-10T09:00:00",
                "2024-03-10T09:10:00 2024-03-10T09:20:00 2024-03-10T09:30:00 "
                "2024-03-10T10:10:00");
}

static void test_number_slash_step_runs_to_the_end_of_the_field(void **state)
{
    (void)state;
    /* Vixie: "5/15" is 5-59/15 */
    expect_next("5/15 * * * *", "2024-03-10T09:00:00",
                "2024-03-10T09:05:00 2024-03-10T09:20:00 2024-03-10T09:35:00 "
                "2024-03-10T09:50:00 2024-03-10T10:05:00");
    /* a range of one with a step stays one value */
    expect_next("5-5/15 * * * *", "2024-03-10T09:00:00", "2024-03-10T09:05:00 2024-03-10T10:05:00");
}

static void test_ranges_and_lists(void **state)
{
    (void)state;
    expect_next("0 9-11 * * *", "2024-03-10T09:30:00",
                "2024-03-10T10:00:00 2024-03-10T11:00:00 2024-03-11T09:00:00");
    expect_next("7,19 * * * *", "2024-03-10T09:10:00",
                "2024-03-10T09:19:00 2024-03-10T10:07:00 2024-03-10T10:19:00");
    expect_next("0,30-31,45 8 * * *", "2024-03-10T08:00:00",
                "2024-03-10T08:30:00 2024-03-10T08:31:00 2024-03-10T08:45:00 "
                "2024-03-11T08:00:00");
}

static void test_the_31st_skips_short_months(void **state)
{
    (void)state;
    expect_next("0 0 31 * *", "2024-01-31T00:00:00",
                "2024-03-31T00:00:00 2024-05-31T00:00:00 2024-07-31T00:00:00 "
                "2024-08-31T00:00:00 2024-10-31T00:00:00");
    expect_next("0 12 30 * *", "2023-01-30T12:00:00", "2023-03-30T12:00:00");
}

static void test_feb_29_only_in_leap_years(void **state)
{
    (void)state;
    expect_next("0 0 29 2 *", "2023-01-01T00:00:00", "2024-02-29T00:00:00 2028-02-29T00:00:00");
    /* 2100 is no leap year: 2096 to 2104, eight years */
    expect_next("0 0 29 2 *", "2096-03-01T00:00:00", "2104-02-29T00:00:00");
    expect_prev("0 0 29 2 *", "2027-12-31T00:00:00", "2024-02-29T00:00:00");
}

static void test_day_of_week_0_and_7_are_sunday(void **state)
{
    (void)state;
    /* 2024-03-10 is a Sunday */
    expect_next("0 9 * * 0", "2024-03-05T00:00:00", "2024-03-10T09:00:00 2024-03-17T09:00:00");
    expect_next("0 9 * * 7", "2024-03-05T00:00:00", "2024-03-10T09:00:00 2024-03-17T09:00:00");
    /* Friday to Sunday through 7 */
    expect_next("0 9 * * 5-7", "2024-03-07T00:00:00",
                "2024-03-08T09:00:00 2024-03-09T09:00:00 2024-03-10T09:00:00 "
                "2024-03-15T09:00:00");
    expect_next("0 9 * * 1-5", "2024-03-08T10:00:00", "2024-03-11T09:00:00");
}

static void test_both_day_fields_restricted_match_either(void **state)
{
    (void)state;
    /* the 13th, or any Friday (2024-03-01 and 03-08 are Fridays; 03-13 a Wednesday) */
    expect_next("0 0 13 * 5", "2024-02-29T00:00:00",
                "2024-03-01T00:00:00 2024-03-08T00:00:00 2024-03-13T00:00:00 "
                "2024-03-15T00:00:00");
    /* one field a star: both must match, i.e. only the restricted one counts */
    expect_next("0 0 13 * *", "2024-02-29T00:00:00", "2024-03-13T00:00:00");
    expect_next("0 0 * * 5", "2024-02-29T00:00:00", "2024-03-01T00:00:00 2024-03-08T00:00:00");
    /* a stepped star still counts as a star (Vixie): odd days that are Fridays */
    expect_next("0 0 */2 * 5", "2024-02-29T00:00:00", "2024-03-01T00:00:00 2024-03-15T00:00:00");
}

static void test_months_and_year_boundaries(void **state)
{
    (void)state;
    expect_next("0 0 1 1,7 *", "2023-12-31T23:59:00", "2024-01-01T00:00:00 2024-07-01T00:00:00");
    expect_next("59 23 31 12 *", "2024-01-01T00:00:00", "2024-12-31T23:59:00");
}

static void test_impossible_expression_has_no_next(void **state)
{
    struct cron c = parse("0 0 30 2 *");

    (void)state;
    assert_int_equal(cron_next(&c, at("2024-01-01T00:00:00")), -1);
    assert_int_equal(cron_prev(&c, at("2024-01-01T00:00:00")), -1);
    c = parse("0 0 31 4,6,9,11 *");
    assert_int_equal(cron_next(&c, at("2024-01-01T00:00:00")), -1);
}

static void test_prev_is_the_latest_slot_at_or_before(void **state)
{
    (void)state;
    expect_prev("*/5 * * * *", "2024-03-10T09:07:30", "2024-03-10T09:05:00");
    expect_prev("*/5 * * * *", "2024-03-10T09:05:00", "2024-03-10T09:05:00");
    expect_prev("*/5 * * * *", "2024-03-10T09:05:59", "2024-03-10T09:05:00");
    expect_prev("0 9 * * *", "2024-03-10T08:59:59", "2024-03-09T09:00:00");
    expect_prev("0 9 * * 1-5", "2024-03-10T12:00:00", "2024-03-08T09:00:00");
    expect_prev("30 23 31 * *", "2024-03-01T00:00:00", "2024-01-31T23:30:00");
    expect_prev("0 0 13 * 5", "2024-03-12T00:00:00", "2024-03-08T00:00:00");
}

static void test_prev_and_next_agree(void **state)
{
    const char *exprs[] = {"*/5 * * * *", "7,19 * * * *", "0 9 * * 1-5",
                           "0 0 13 * 5",  "0 0 29 2 *",   "15 3 31 * *"};

    (void)state;
    for (size_t i = 0; i < sizeof exprs / sizeof exprs[0]; i++) {
        struct cron c = parse(exprs[i]);
        int64_t t = at("2023-06-01T00:00:00");
        for (int n = 0; n < 50; n++) {
            int64_t next = cron_next(&c, t);
            assert_true(next > t);
            assert_int_equal(cron_prev(&c, next), next);
            assert_int_equal(cron_prev(&c, next + 59), next);
            assert_true(cron_prev(&c, next - 1) <= t);
            t = next;
        }
    }
}

static void test_whitespace_between_fields_is_free(void **state)
{
    (void)state;
    expect_next("  0\t9 *  * *  ", "2024-03-10T00:00:00", "2024-03-10T09:00:00");
}

static void test_errors_say_which_field_and_why(void **state)
{
    (void)state;
    expect_error("0 24 * * *", "field 2 (hour): 24 is out of range 0-23");
    expect_error("60 * * * *", "field 1 (minute): 60 is out of range 0-59");
    expect_error("0 0 0 * *", "field 3 (day of month): 0 is out of range 1-31");
    expect_error("0 0 * 13 *", "field 4 (month): 13 is out of range 1-12");
    expect_error("0 0 * * 8", "field 5 (day of week): 8 is out of range 0-7");
    expect_error("0 0 1-40 * *", "field 3 (day of month): 40 is out of range 1-31");
    expect_error("30-10 * * * *", "field 1 (minute): range 30-10 runs backwards");
    expect_error("*/0 * * * *", "field 1 (minute): a step is a whole number from 1");
    expect_error("*/x * * * *", "field 1 (minute): a step is a whole number from 1");
    expect_error("0 9 * * MON",
                 "field 5 (day of week): expected *, a number or a-b, each with an optional /step");
    expect_error("-5 * * * *",
                 "field 1 (minute): expected *, a number or a-b, each with an optional /step");
    expect_error("1,,2 * * * *",
                 "field 1 (minute): expected *, a number or a-b, each with an optional /step");
    expect_error("1, * * * *",
                 "field 1 (minute): expected *, a number or a-b, each with an optional /step");
    expect_error("5x * * * *", "field 1 (minute): unexpected 'x'");
    expect_error("0 9 * *",
                 "needs five fields: minute hour day-of-month month day-of-week (got fewer)");
    expect_error("0 9 * * * *",
                 "needs five fields: minute hour day-of-month month day-of-week (got more)");
    expect_error("", "needs five fields: minute hour day-of-month month day-of-week (got fewer)");
    expect_error("99999999999999999999 * * * *",
                 "field 1 (minute): expected *, a number or a-b, each with an optional /step");
}

static void test_error_text_is_truncated_safely(void **state)
{
    struct cron c;
    char err[8];

    (void)state;
    assert_int_equal(cron_parse("0 24 * * *", &c, err, sizeof err), -1);
    assert_int_equal(strlen(err), sizeof err - 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_minute_is_the_next_minute),
        cmocka_unit_test(test_steps_count_from_the_start_of_the_range),
        cmocka_unit_test(test_number_slash_step_runs_to_the_end_of_the_field),
        cmocka_unit_test(test_ranges_and_lists),
        cmocka_unit_test(test_the_31st_skips_short_months),
        cmocka_unit_test(test_feb_29_only_in_leap_years),
        cmocka_unit_test(test_day_of_week_0_and_7_are_sunday),
        cmocka_unit_test(test_both_day_fields_restricted_match_either),
        cmocka_unit_test(test_months_and_year_boundaries),
        cmocka_unit_test(test_impossible_expression_has_no_next),
        cmocka_unit_test(test_prev_is_the_latest_slot_at_or_before),
        cmocka_unit_test(test_prev_and_next_agree),
        cmocka_unit_test(test_whitespace_between_fields_is_free),
        cmocka_unit_test(test_errors_say_which_field_and_why),
        cmocka_unit_test(test_error_text_is_truncated_safely),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
