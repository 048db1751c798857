/*
 * test_redisurl.c - lib/redisurl.c: every form of REDIS_URL the API's .env files use,
 * the ones we refuse, and that neither an error nor a redacted URL shows a password.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "redisurl.h"

static struct rurl parse_ok(const char *url)
{
    struct rurl u;
    char err[256];

    if (rurl_parse(url, &u, err, sizeof err) != 0)
        fail_msg("%s: %s", url, err);
    return u;
}

/* Parses a URL that must be refused; returns the reason. */
static const char *parse_bad(const char *url)
{
    static char err[256];
    struct rurl u;

    assert_int_equal(rurl_parse(url, &u, err, sizeof err), -1);
    assert_true(err[0] != '\0');
    assert_string_equal(u.password, "");
    return err;
}

static void test_bare_host_gets_default_port_and_db(void **state)
{
    (void)state;
    struct rurl u = parse_ok("redis://localhost");
    assert_string_equal(u.host, "localhost");
    assert_int_equal(u.port, 6379);
    assert_int_equal(u.db, 0);
    assert_string_equal(u.path, "");
    assert_string_equal(u.user, "");
    assert_string_equal(u.password, "");
}

static void test_password_port_and_db(void **state)
{
    (void)state;
    struct rurl u = parse_ok("redis://:secret@h:6380/2");
    assert_string_equal(u.host, "h");
    assert_int_equal(u.port, 6380);
    assert_int_equal(u.db, 2);
    assert_string_equal(u.user, "");
    assert_string_equal(u.password, "secret");
}

static void test_user_and_password(void **state)
{
    (void)state;
    struct rurl u = parse_ok("redis://user:pw@h");
    assert_string_equal(u.user, "user");
    assert_string_equal(u.password, "pw");
    assert_string_equal(u.host, "h");
    assert_int_equal(u.port, 6379);
}

static void test_userinfo_is_percent_decoded(void **state)
{
    (void)state;
    struct rurl u = parse_ok("redis://app:p%40ss%2Fw%3Ad@h:1/0");
    assert_string_equal(u.user, "app");
    assert_string_equal(u.password, "p@ss/w:d");
    assert_int_equal(u.port, 1);
}

static void test_ipv6_in_brackets(void **state)
{
    (void)state;
    struct rurl u = parse_ok("redis://[::1]:6390/1");
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 6390);
    assert_int_equal(u.db, 1);
    parse_bad("redis://::1:6390");
}

static void test_query_db_and_password(void **state)
{
    (void)state;
    struct rurl u = parse_ok("redis://h?db=4&password=q");
    assert_int_equal(u.db, 4);
    assert_string_equal(u.password, "q");
}

static void test_unix_socket(void **state)
{
    (void)state;
    struct rurl u = parse_ok("unix:///tmp/r.sock");
    assert_string_equal(u.path, "/tmp/r.sock");
    assert_int_equal(u.port, 0);
    assert_string_equal(u.host, "");
    assert_int_equal(u.db, 0);
}

static void test_unix_socket_with_db(void **state)
{
    (void)state;
    struct rurl u = parse_ok("unix:///tmp/r.sock?db=3");
    assert_string_equal(u.path, "/tmp/r.sock");
    assert_int_equal(u.db, 3);
}

static void test_unix_socket_with_password(void **state)
{
    (void)state;
    struct rurl u = parse_ok("unix://:pw@/run/redis.sock");
    assert_string_equal(u.path, "/run/redis.sock");
    assert_string_equal(u.password, "pw");
    parse_bad("unix://tmp/r.sock");
}

static void test_stackexchange_style(void **state)
{
    (void)state;
    struct rurl u = parse_ok("h:6380,password=x");
    assert_string_equal(u.host, "h");
    assert_int_equal(u.port, 6380);
    assert_string_equal(u.password, "x");

    u = parse_ok("cache.local, abortConnect=false ,defaultDatabase=5,Password=y,ssl=False");
    assert_string_equal(u.host, "cache.local");
    assert_int_equal(u.port, 6379);
    assert_int_equal(u.db, 5);
    assert_string_equal(u.password, "y");
}

static void test_tls_is_refused_with_a_reason(void **state)
{
    (void)state;
    const char *why = parse_bad("rediss://:secret@h:6380");
    assert_non_null(strstr(why, "rediss://"));
    assert_non_null(strstr(why, "TLS"));
    assert_null(strstr(why, "secret"));
    why = parse_bad("h:6380,password=secret,ssl=true");
    assert_non_null(strstr(why, "ssl"));
    assert_null(strstr(why, "secret"));
}

static void test_bad_port(void **state)
{
    (void)state;
    const char *bad[] = {"redis://h:0", "redis://h:65536", "redis://h:abc", "redis://h:",
                         "redis://:secret@h:-1/0", "h:99999,password=secret"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *why = parse_bad(bad[i]);
        assert_non_null(strstr(why, "port"));
        assert_null(strstr(why, "secret"));
    }
}

static void test_garbage_is_refused_without_echo(void **state)
{
    (void)state;
    const char *bad[] = {"",          "http://h",        "redis://",        "redis://:secret@",
                         "not a url", "redis://h/x",     "redis://h?x=secret", "h,secret",
                         "redis://h:1/0?db=", "redis://:%zz@h", "unix://"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *why = parse_bad(bad[i]);
        assert_null(strstr(why, "secret"));
    }
    struct rurl u;
    char err[64];
    assert_int_equal(rurl_parse(NULL, &u, err, sizeof err), -1);
    assert_int_equal(rurl_parse("redis://h:0", &u, NULL, 0), -1);
}

static void test_overlong_parts_are_refused(void **state)
{
    (void)state;
    char url[1200], host[400];
    memset(host, 'a', sizeof host - 1);
    host[sizeof host - 1] = '\0';
    snprintf(url, sizeof url, "redis://%s", host);
    parse_bad(url);
    snprintf(url, sizeof url, "redis://:%s@h", host);
    parse_bad(url);
    snprintf(url, sizeof url, "unix:///%s", host);
    parse_bad(url);
}

static void redacts(const char *url, const char *want)
{
    char buf[256];
    rurl_redact(url, buf, sizeof buf);
    assert_string_equal(buf, want);
}

static void test_redact_hides_the_password_in_every_form(void **state)
{
    (void)state;
    redacts("redis://localhost:6379/0", "redis://localhost:6379/0");
    redacts("redis://:secret@h:6380/2", "redis://:***@h:6380/2");
    redacts("redis://user:pw@h", "redis://user:***@h");
    redacts("redis://justauser@h", "redis://***@h");
    redacts("rediss://:secret@h", "rediss://:***@h");
    redacts("unix://:secret@/tmp/r.sock?db=3", "unix://:***@/tmp/r.sock?db=3");
    redacts("unix:///tmp/r.sock?db=3&password=secret", "unix:///tmp/r.sock?db=3&password=***");
    redacts("h:6380,password=x", "h:6380,password=***");
    redacts("h:6380, Password = x ,ssl=false", "h:6380, Password =***,ssl=false");
    redacts("h,password=a,b,c,abortConnect=false", "h,password=***,abortConnect=false");
    redacts("postgresql://app:pw@db/steller?sslmode=require",
            "postgresql://app:***@db/steller?sslmode=require");
}

static void test_redact_hides_passwords_that_break_parsing(void **state)
{
    (void)state;
    char buf[256];
    const char *urls[] = {"redis://:se/cret@h", "redis://:se?cret@h:1", "redis://:secret@h:bad",
                          "redis://:sec@ret@h"};
    for (size_t i = 0; i < sizeof urls / sizeof urls[0]; i++) {
        rurl_redact(urls[i], buf, sizeof buf);
        assert_null(strstr(buf, "cret"));
        assert_null(strstr(buf, "ret@"));
    }
}

static void test_redact_truncates_safely(void **state)
{
    (void)state;
    char buf[8];
    rurl_redact("redis://:secret@h", buf, sizeof buf);
    assert_string_equal(buf, "redis:/");
    rurl_redact("redis://h", buf, 0);
    rurl_redact(NULL, buf, sizeof buf);
    assert_string_equal(buf, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bare_host_gets_default_port_and_db),
        cmocka_unit_test(test_password_port_and_db),
        cmocka_unit_test(test_user_and_password),
        cmocka_unit_test(test_userinfo_is_percent_decoded),
        cmocka_unit_test(test_ipv6_in_brackets),
        cmocka_unit_test(test_query_db_and_password),
        cmocka_unit_test(test_unix_socket),
        cmocka_unit_test(test_unix_socket_with_db),
        cmocka_unit_test(test_unix_socket_with_password),
        cmocka_unit_test(test_stackexchange_style),
        cmocka_unit_test(test_tls_is_refused_with_a_reason),
        cmocka_unit_test(test_bad_port),
        cmocka_unit_test(test_garbage_is_refused_without_echo),
        cmocka_unit_test(test_overlong_parts_are_refused),
        cmocka_unit_test(test_redact_hides_the_password_in_every_form),
        cmocka_unit_test(test_redact_hides_passwords_that_break_parsing),
        cmocka_unit_test(test_redact_truncates_safely),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
