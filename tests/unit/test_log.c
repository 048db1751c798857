/*
 * test_log.c - worker/log.c: the exact line format, level filtering, quoting,
 * truncation of overlong lines, and that errno survives a log call.
 *
 * Each test points fd 2 at a temporary file with dup2(), logs, puts fd 2 back and
 * reads what was written. The timestamp is checked for shape and then cut off, so
 * the rest of the line can be compared exactly.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

#define CUT_MARK "\xe2\x80\xa6"

static int saved_fd = -1, tmp_fd = -1;
static char captured[16384];

static void capture_start(void)
{
    char path[] = "/tmp/test_log.XXXXXX";

    tmp_fd = mkstemp(path);
    assert_true(tmp_fd >= 0);
    unlink(path);
    fflush(stderr);
    saved_fd = dup(2);
    assert_true(saved_fd >= 0);
    assert_int_equal(dup2(tmp_fd, 2), 2);
}

/* Restores fd 2 and returns everything written to it since capture_start(). */
static const char *capture_end(void)
{
    ssize_t n;

    assert_int_equal(dup2(saved_fd, 2), 2);
    close(saved_fd);
    n = pread(tmp_fd, captured, sizeof captured - 1, 0);
    assert_true(n >= 0);
    captured[n] = '\0';
    close(tmp_fd);
    return captured;
}

/* Checks the timestamp's shape and returns the line after "ts=... ". */
static const char *after_ts(const char *line)
{
    regex_t re;

    assert_int_equal(regcomp(&re, "^ts=[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
                                  "\\.[0-9]{3}Z ",
                             REG_EXTENDED | REG_NOSUB),
                     0);
    int rc = regexec(&re, line, 0, NULL, 0);
    regfree(&re);
    if (rc != 0)
        fail_msg("bad timestamp in: %s", line);
    return strchr(line, ' ') + 1;
}

static void expect_line(const char *got, const char *rest_fmt)
{
    char want[512];

    snprintf(want, sizeof want, rest_fmt, (long)getpid());
    assert_string_equal(after_ts(got), want);
}

static void test_line_format(void **state)
{
    (void)state;
    capture_start();
    log_write(LOG_INFO, "worker started", "queues=%s concurrency=%d", "email", 32);
    expect_line(capture_end(),
                "level=info pid=%ld msg=\"worker started\" queues=email concurrency=32\n");
}

static void test_without_fields(void **state)
{
    (void)state;
    capture_start();
    log_write(LOG_ERROR, "boom", NULL);
    expect_line(capture_end(), "level=error pid=%ld msg=boom\n");
    capture_start();
    log_write(LOG_DEBUG, "", "%s", "");
    expect_line(capture_end(), "level=debug pid=%ld msg=\"\"\n");
}

static void test_message_is_quoted_and_escaped(void **state)
{
    (void)state;
    capture_start();
    log_write(LOG_WARN, "say \"hi\"\nback\\slash", NULL);
    expect_line(capture_end(), "level=warn pid=%ld msg=\"say \\\"hi\\\"\\nback\\\\slash\"\n");
}

static void test_newline_in_fields_cannot_forge_a_line(void **state)
{
    (void)state;
    capture_start();
    log_write(LOG_INFO, "x", "a=%s", "1\nts=fake level=error");
    expect_line(capture_end(), "level=info pid=%ld msg=x a=1 ts=fake level=error\n");
}

static void test_level_filter(void **state)
{
    (void)state;
    enum log_level old = log_threshold;

    log_threshold = LOG_WARN;
    capture_start();
    LOG(LOG_INFO, "hidden", "n=%d", 1);
    LOG(LOG_DEBUG, "hidden", NULL);
    LOG(LOG_WARN, "shown", "n=%d", 2);
    const char *out = capture_end();
    log_threshold = old;
    expect_line(out, "level=warn pid=%ld msg=shown n=2\n");
}

static void test_errno_is_preserved(void **state)
{
    (void)state;
    capture_start();
    errno = ENOSPC;
    log_write(LOG_INFO, "x", NULL);
    assert_int_equal(errno, ENOSPC);
    log_raw("raw");
    assert_int_equal(errno, ENOSPC);
    capture_end();
}

static void test_overlong_line_is_cut_with_a_marker(void **state)
{
    (void)state;
    char *big = malloc(10000);
    assert_non_null(big);
    memset(big, 'x', 9999);
    big[9999] = '\0';

    capture_start();
    log_write(LOG_INFO, "long", "data=%s", big);
    log_write(LOG_INFO, big, NULL);
    const char *out = capture_end();
    free(big);

    const char *second = strchr(out, '\n');
    assert_non_null(second);
    size_t first_len = (size_t)(second - out) + 1;
    assert_int_equal(first_len, 4096);
    assert_memory_equal(out + first_len - 4, CUT_MARK "\n", 4);
    assert_int_equal(strlen(second + 1), 4096);
    assert_memory_equal(second + 1 + 4096 - 4, CUT_MARK "\n", 4);
    assert_non_null(strstr(second + 1, " msg=xxx"));
}

static void test_cut_never_splits_a_utf8_character(void **state)
{
    (void)state;
    char *big = malloc(6000);
    assert_non_null(big);
    for (int i = 0; i < 5998; i += 2)
        memcpy(big + i, "\xc3\xa9", 2); /* é */
    big[5998] = '\0';

    for (int shift = 0; shift < 2; shift++) {
        capture_start();
        log_write(LOG_INFO, "u", "%.*sd=%s", shift, "y", big);
        const char *out = capture_end();
        size_t len = strlen(out);
        assert_memory_equal(out + len - 4, CUT_MARK "\n", 4);
        /* The byte before the mark ends a character: the second byte of an é. */
        unsigned char last = (unsigned char)out[len - 5];
        assert_true(last == 0xa9);
    }
    free(big);
}

static void test_log_q(void **state)
{
    (void)state;
    char buf[64];

    assert_string_equal(log_q(buf, sizeof buf, "plain", 5), "plain");
    assert_string_equal(log_q(buf, sizeof buf, "two words", 9), "\"two words\"");
    assert_string_equal(log_q(buf, sizeof buf, "a=b", 3), "\"a=b\"");
    assert_string_equal(log_q(buf, sizeof buf, "q\"t", 3), "\"q\\\"t\"");
    assert_string_equal(log_q(buf, sizeof buf, "l\nm\\", 4), "\"l\\nm\\\\\"");
    assert_string_equal(log_q(buf, sizeof buf, "t\tc\x01", 4), "\"t\\tc\\u0001\"");
    assert_string_equal(log_q(buf, sizeof buf, "", 0), "\"\"");
    assert_string_equal(log_q(buf, sizeof buf, "abcdef", 3), "abc"); /* len, not NUL */
    assert_string_equal(log_q(buf, sizeof buf, "caf\xc3\xa9", 5), "caf\xc3\xa9");
}

static void test_log_q_truncates_to_fit(void **state)
{
    (void)state;
    char buf[8];

    assert_string_equal(log_q(buf, sizeof buf, "abcdefghij", 10), "abcdefg");
    assert_string_equal(log_q(buf, sizeof buf, "ab cd efgh", 10), "\"ab cd\"");
    assert_string_equal(log_q(buf, sizeof buf, "a\"\"\"\"\"", 6), "\"a\\\"\\\"\"");
    assert_string_equal(log_q(buf, 7, "abcde\xc3\xa9", 7), "abcde");
    assert_string_equal(log_q(buf, 3, "a b", 3), "\"\"");
    assert_string_equal(log_q(buf, 2, "a b", 3), "");
}

static void test_level_names(void **state)
{
    (void)state;
    assert_int_equal(log_level_parse("debug"), LOG_DEBUG);
    assert_int_equal(log_level_parse("info"), LOG_INFO);
    assert_int_equal(log_level_parse("warn"), LOG_WARN);
    assert_int_equal(log_level_parse("error"), LOG_ERROR);
    assert_int_equal(log_level_parse("verbose"), -1);
    assert_int_equal(log_level_parse(NULL), -1);
    assert_string_equal(log_level_name(LOG_WARN), "warn");
    assert_string_equal(log_level_name((enum log_level)9), "unknown");
}

static void test_log_raw(void **state)
{
    (void)state;
    capture_start();
    log_raw("second signal: exiting now");
    assert_string_equal(capture_end(), "second signal: exiting now\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_line_format),
        cmocka_unit_test(test_without_fields),
        cmocka_unit_test(test_message_is_quoted_and_escaped),
        cmocka_unit_test(test_newline_in_fields_cannot_forge_a_line),
        cmocka_unit_test(test_level_filter),
        cmocka_unit_test(test_errno_is_preserved),
        cmocka_unit_test(test_overlong_line_is_cut_with_a_marker),
        cmocka_unit_test(test_cut_never_splits_a_utf8_character),
        cmocka_unit_test(test_log_q),
        cmocka_unit_test(test_log_q_truncates_to_fit),
        cmocka_unit_test(test_level_names),
        cmocka_unit_test(test_log_raw),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
