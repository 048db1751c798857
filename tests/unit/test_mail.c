/*
 * test_mail.c - unit tests for the pure parts of worker/mail.c: the circuit
 * breaker (with a clock passed in), Retry-After, email.from, the SendGrid body,
 * the MIME message and RFC 2047, and the rate bucket. No loop, no network.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "mail.h"

static const struct mail_msg ada = {
    .to = "ada@example.com",
    .to_name = "Ada Lovelace",
    .subject = "Welcome to Steller",
    .text = "Hello Ada,\nwelcome.\n",
    .html = "<p>Hello Ada</p>",
};

/* ---------------------------------------------------------------- breaker */

static void fail_n(struct mail_breaker *b, int64_t now, int n)
{
    for (int i = 0; i < n; i++) {
        int probe;
        assert_int_equal(mail_breaker_admit(b, now, &probe), 0);
        mail_breaker_record(b, now, MAIL_TRANSIENT, probe, 0.0);
    }
}

static void test_breaker_opens_after_threshold_transient_failures_in_a_row(void **state)
{
    struct mail_breaker b;
    (void)state;
    mail_breaker_init(&b, 3, 30000);
    fail_n(&b, 1000, 2);
    assert_int_equal(b.state, MAIL_BRK_CLOSED);
    fail_n(&b, 1000, 1);
    assert_int_equal(b.state, MAIL_BRK_OPEN);
    assert_string_equal(mail_breaker_name(b.state), "open");
}

static void test_breaker_success_or_permanent_resets_the_run(void **state)
{
    struct mail_breaker b;
    int probe;
    (void)state;
    mail_breaker_init(&b, 3, 30000);
    fail_n(&b, 0, 2);
    mail_breaker_admit(&b, 0, &probe);
    mail_breaker_record(&b, 0, MAIL_SENT, probe, 0.0);
    fail_n(&b, 0, 2);
    mail_breaker_admit(&b, 0, &probe);
    mail_breaker_record(&b, 0, MAIL_PERMANENT, probe, 0.0);
    fail_n(&b, 0, 2);
    assert_int_equal(b.state, MAIL_BRK_CLOSED);
    assert_int_equal(b.failures, 2);
}

static void test_breaker_open_answers_wait_with_the_time_left(void **state)
{
    struct mail_breaker b;
    int probe = 7;
    (void)state;
    mail_breaker_init(&b, 1, 10000);
    fail_n(&b, 5000, 1);
    assert_int_equal(mail_breaker_wait(&b, 6000), 9000);
    assert_int_equal(mail_breaker_admit(&b, 6000, &probe), 9000);
    assert_int_equal(probe, 0);
    assert_int_equal(mail_breaker_admit(&b, 14999, &probe), 1);
}

static void test_breaker_jitter_adds_at_most_a_fifth_of_the_cooloff(void **state)
{
    struct mail_breaker b;
    int probe;
    (void)state;
    mail_breaker_init(&b, 1, 10000);
    mail_breaker_admit(&b, 0, &probe);
    mail_breaker_record(&b, 0, MAIL_TRANSIENT, probe, 0.999999);
    assert_true(b.until_ms > 11900 && b.until_ms <= 12000);
    mail_breaker_init(&b, 1, 10000);
    mail_breaker_admit(&b, 0, &probe);
    mail_breaker_record(&b, 0, MAIL_TRANSIENT, probe, 0.5);
    assert_int_equal(b.until_ms, 11000);
}

static void test_breaker_half_open_lets_exactly_one_probe_out(void **state)
{
    struct mail_breaker b;
    int probe;
    (void)state;
    mail_breaker_init(&b, 1, 1000);
    fail_n(&b, 0, 1);
    assert_int_equal(mail_breaker_admit(&b, 1000, &probe), 0);
    assert_int_equal(probe, 1);
    assert_int_equal(b.state, MAIL_BRK_HALF_OPEN);
    assert_string_equal(mail_breaker_name(b.state), "half-open");
    /* others wait while the probe is out */
    assert_true(mail_breaker_admit(&b, 1001, &probe) > 0);
    assert_int_equal(probe, 0);
    assert_true(mail_breaker_wait(&b, 1001) > 0);
}

static void test_breaker_probe_success_closes_it(void **state)
{
    struct mail_breaker b;
    int probe;
    (void)state;
    mail_breaker_init(&b, 2, 1000);
    fail_n(&b, 0, 2);
    mail_breaker_admit(&b, 2000, &probe);
    mail_breaker_record(&b, 2100, MAIL_SENT, probe, 0.0);
    assert_int_equal(b.state, MAIL_BRK_CLOSED);
    assert_int_equal(b.failures, 0);
    assert_int_equal(mail_breaker_admit(&b, 2100, &probe), 0);
    assert_int_equal(probe, 0);
}

static void test_breaker_probe_permanent_answer_closes_it(void **state)
{
    struct mail_breaker b;
    int probe;
    (void)state;
    mail_breaker_init(&b, 1, 1000);
    fail_n(&b, 0, 1);
    mail_breaker_admit(&b, 2000, &probe);
    mail_breaker_record(&b, 2000, MAIL_PERMANENT, probe, 0.0);
    assert_int_equal(b.state, MAIL_BRK_CLOSED);
}

static void test_breaker_probe_failure_reopens_for_a_new_cooloff(void **state)
{
    struct mail_breaker b;
    int probe;
    (void)state;
    mail_breaker_init(&b, 1, 1000);
    fail_n(&b, 0, 1);
    mail_breaker_admit(&b, 5000, &probe);
    mail_breaker_record(&b, 5500, MAIL_TRANSIENT, probe, 0.0);
    assert_int_equal(b.state, MAIL_BRK_OPEN);
    assert_int_equal(b.until_ms, 6500);
    assert_int_equal(mail_breaker_wait(&b, 6000), 500);
}

static void test_breaker_cancelled_probe_lets_the_next_request_probe(void **state)
{
    struct mail_breaker b;
    int probe;
    (void)state;
    mail_breaker_init(&b, 1, 1000);
    fail_n(&b, 0, 1);
    mail_breaker_admit(&b, 1000, &probe);
    mail_breaker_release(&b, probe);
    assert_int_equal(mail_breaker_admit(&b, 1000, &probe), 0);
    assert_int_equal(probe, 1);
}

static void test_breaker_ignores_requests_admitted_before_it_opened(void **state)
{
    struct mail_breaker b;
    int p1, p2;
    (void)state;
    mail_breaker_init(&b, 1, 1000);
    mail_breaker_admit(&b, 0, &p1);
    mail_breaker_admit(&b, 0, &p2);
    mail_breaker_record(&b, 10, MAIL_TRANSIENT, p1, 0.0);
    assert_int_equal(b.state, MAIL_BRK_OPEN);
    mail_breaker_record(&b, 20, MAIL_SENT, p2, 0.0); /* a straggler: not the probe */
    assert_int_equal(b.state, MAIL_BRK_OPEN);
}

static void test_breaker_tick_moves_open_to_half_open_when_cooloff_ends(void **state)
{
    struct mail_breaker b;
    (void)state;
    mail_breaker_init(&b, 1, 1000);
    fail_n(&b, 0, 1);
    mail_breaker_tick(&b, 999);
    assert_int_equal(b.state, MAIL_BRK_OPEN);
    mail_breaker_tick(&b, 1000);
    assert_int_equal(b.state, MAIL_BRK_HALF_OPEN);
    assert_int_equal(mail_breaker_wait(&b, 1000), 0);
}

/* ---------------------------------------------------------------- Retry-After */

static void test_retry_after_seconds(void **state)
{
    (void)state;
    assert_int_equal(mail_retry_after_ms("120", 0), 120000);
    assert_int_equal(mail_retry_after_ms(" 0 ", 0), 0);
    assert_int_equal(mail_retry_after_ms("99999999999999999999", 0), 86400000);
}

static void test_retry_after_http_date_is_relative_to_now(void **state)
{
    /* Sun, 06 Nov 1994 08:49:37 GMT = 784111777 */
    int64_t now = 784111777LL * 1000 - 30000;
    (void)state;
    assert_int_equal(mail_retry_after_ms("Sun, 06 Nov 1994 08:49:37 GMT", now), 30000);
    assert_int_equal(mail_retry_after_ms("Sunday, 06-Nov-94 08:49:37 GMT", now), 30000);
    assert_int_equal(mail_retry_after_ms("Sun Nov  6 08:49:37 1994", now), 30000);
    /* in the past: retry now */
    assert_int_equal(mail_retry_after_ms("Sun, 06 Nov 1994 08:49:37 GMT", now + 60000), 0);
}

static void test_retry_after_garbage_is_minus_one(void **state)
{
    (void)state;
    assert_int_equal(mail_retry_after_ms("", 0), -1);
    assert_int_equal(mail_retry_after_ms(NULL, 0), -1);
    assert_int_equal(mail_retry_after_ms("-5", 0), -1);
    assert_int_equal(mail_retry_after_ms("soon", 0), -1);
    assert_int_equal(mail_retry_after_ms("1.5", 0), -1);
}

/* ---------------------------------------------------------------- From */

static void test_from_with_name_and_angle_address(void **state)
{
    char name[64], addr[64];
    (void)state;
    assert_int_equal(mail_parse_from("Steller <no-reply@steller.io>", name, sizeof(name), addr,
                                     sizeof(addr)),
                     0);
    assert_string_equal(name, "Steller");
    assert_string_equal(addr, "no-reply@steller.io");
    assert_int_equal(mail_parse_from("  \"Steller, Inc.\"  < a@b.io > ", name, sizeof(name), addr,
                                     sizeof(addr)),
                     0);
    assert_string_equal(name, "Steller, Inc.");
    assert_string_equal(addr, "a@b.io");
}

static void test_from_bare_address_has_no_name(void **state)
{
    char name[64], addr[64];
    (void)state;
    assert_int_equal(mail_parse_from(" a@b.io ", name, sizeof(name), addr, sizeof(addr)), 0);
    assert_string_equal(name, "");
    assert_string_equal(addr, "a@b.io");
}

static void test_from_without_address_or_too_long_is_refused(void **state)
{
    char name[8], addr[8];
    (void)state;
    assert_int_equal(mail_parse_from("Steller <>", name, sizeof(name), addr, sizeof(addr)), -1);
    assert_int_equal(mail_parse_from("nobody", name, sizeof(name), addr, sizeof(addr)), -1);
    assert_int_equal(mail_parse_from("long@example.com", name, sizeof(name), addr, sizeof(addr)),
                     -1);
}

/* ---------------------------------------------------------------- SendGrid */

static void test_sendgrid_body_has_the_v3_shape(void **state)
{
    char *s = mail_sendgrid_json(&ada, "Steller", "no-reply@steller.io");
    json_t *j = json_loads(s, 0, NULL), *to, *content;
    (void)state;
    assert_non_null(j);
    to = json_array_get(json_object_get(json_array_get(json_object_get(j, "personalizations"), 0),
                                        "to"),
                        0);
    assert_string_equal(json_string_value(json_object_get(to, "email")), "ada@example.com");
    assert_string_equal(json_string_value(json_object_get(to, "name")), "Ada Lovelace");
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "from"), "email")),
                        "no-reply@steller.io");
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "from"), "name")),
                        "Steller");
    assert_string_equal(json_string_value(json_object_get(j, "subject")), "Welcome to Steller");
    content = json_object_get(j, "content");
    assert_int_equal(json_array_size(content), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(content, 0), "type")),
                        "text/plain");
    assert_string_equal(json_string_value(json_object_get(json_array_get(content, 0), "value")),
                        ada.text);
    assert_string_equal(json_string_value(json_object_get(json_array_get(content, 1), "type")),
                        "text/html");
    json_decref(j);
    free(s);
}

static void test_sendgrid_body_leaves_out_empty_names(void **state)
{
    struct mail_msg m = ada;
    char *s;
    (void)state;
    m.to_name = NULL;
    s = mail_sendgrid_json(&m, "", "a@b.io");
    assert_non_null(s);
    assert_null(strstr(s, "\"name\""));
    free(s);
}

static void test_sendgrid_body_escapes_and_refuses_bad_utf8(void **state)
{
    struct mail_msg m = ada;
    char *s;
    (void)state;
    m.subject = "Quote \" and \\ and caf\xc3\xa9";
    s = mail_sendgrid_json(&m, "S", "a@b.io");
    assert_non_null(strstr(s, "\"subject\":\"Quote \\\" and \\\\ and caf\xc3\xa9\""));
    free(s);
    m.subject = "bad \xff byte";
    assert_null(mail_sendgrid_json(&m, "S", "a@b.io"));
}

/* ---------------------------------------------------------------- MIME */

static char *mime(const struct mail_msg *m)
{
    /* 2024-01-02T03:04:05Z */
    return mail_mime(m, "Steller", "no-reply@steller.io", 1704164645, "id.1@steller.io", "=_b");
}

static void test_mime_headers(void **state)
{
    char *s = mime(&ada);
    (void)state;
    assert_non_null(s);
    assert_non_null(strstr(s, "Date: Tue, 02 Jan 2024 03:04:05 +0000\r\n"));
    assert_non_null(strstr(s, "\r\nFrom: Steller <no-reply@steller.io>\r\n"));
    assert_non_null(strstr(s, "\r\nTo: Ada Lovelace <ada@example.com>\r\n"));
    assert_non_null(strstr(s, "\r\nSubject: Welcome to Steller\r\n"));
    assert_non_null(strstr(s, "\r\nMessage-ID: <id.1@steller.io>\r\n"));
    assert_non_null(strstr(s, "\r\nMIME-Version: 1.0\r\n"));
    assert_non_null(
        strstr(s, "\r\nContent-Type: multipart/alternative; boundary=\"=_b\"\r\n\r\n--=_b\r\n"));
    free(s);
}

static void test_mime_has_both_parts_with_crlf_only(void **state)
{
    char *s = mime(&ada);
    (void)state;
    assert_non_null(strstr(s, "--=_b\r\nContent-Type: text/plain; charset=UTF-8\r\n"
                              "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
                              "Hello Ada,\r\nwelcome.\r\n"));
    assert_non_null(strstr(s, "--=_b\r\nContent-Type: text/html; charset=UTF-8\r\n"
                              "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
                              "<p>Hello Ada</p>\r\n--=_b--\r\n"));
    for (char *p = s; (p = strchr(p, '\n')); p++)
        assert_true(p > s && p[-1] == '\r');
    free(s);
}

static void test_mime_single_part_without_html(void **state)
{
    struct mail_msg m = ada;
    char *s;
    (void)state;
    m.html = NULL;
    s = mime(&m);
    assert_null(strstr(s, "multipart"));
    assert_non_null(strstr(s, "Content-Type: text/plain; charset=UTF-8\r\n"));
    free(s);
}

static void test_mime_quoted_printable_encodes_and_wraps(void **state)
{
    struct mail_msg m = ada;
    char text[300], *s, *body;
    (void)state;
    memset(text, 'a', 200);
    strcpy(text + 200, "\ncaf\xc3\xa9 = x \n.dot");
    m.text = text;
    m.html = NULL;
    s = mime(&m);
    body = strstr(s, "\r\n\r\n") + 4;
    /* 75 characters and a soft break, never a line over 76 */
    for (char *line = body, *e; (e = strstr(line, "\r\n")); line = e + 2)
        assert_true(e - line <= 76);
    assert_non_null(strstr(body, "=\r\n"));
    assert_non_null(strstr(body, "caf=C3=A9 =3D x=20\r\n.dot\r\n"));
    free(s);
}

static void test_rfc2047_for_non_ascii_subject_and_names(void **state)
{
    struct mail_msg m = ada;
    char *s;
    (void)state;
    m.subject = "Gr\xc3\xbc\xc3\x9f" "e";
    m.to_name = "J\xc3\xb6rg";
    s = mime(&m);
    assert_non_null(strstr(s, "\r\nSubject: =?UTF-8?B?R3LDvMOfZQ==?=\r\n"));
    assert_non_null(strstr(s, "\r\nTo: =?UTF-8?B?SsO2cmc=?= <ada@example.com>\r\n"));
    free(s);
}

static void test_rfc2047_long_text_folds_without_cutting_a_character(void **state)
{
    char in[200], *s;
    size_t n = 0;
    (void)state;
    while (n + 2 < 150) { /* "é" x 75: 150 bytes */
        in[n++] = '\xc3';
        in[n++] = '\xa9';
    }
    in[n] = 0;
    s = mail_header_text(in);
    /* 45-byte chunks: an even count of bytes, so 44 bytes = 22 characters a word */
    assert_non_null(strstr(s, "?=\r\n =?UTF-8?B?"));
    for (char *w = s; (w = strstr(w, "=?UTF-8?B?")); w++) {
        char *end = strstr(w, "?=");
        assert_true(end - w + 2 <= 75);
    }
    free(s);
    s = mail_header_text("plain ascii");
    assert_string_equal(s, "plain ascii");
    free(s);
    s = mail_header_text("looks =?like?= a word");
    assert_non_null(strstr(s, "=?UTF-8?B?"));
    free(s);
}

static void test_display_name_with_specials_is_quoted(void **state)
{
    struct mail_msg m = ada;
    char *s;
    (void)state;
    m.to_name = "Lovelace, Ada \"Countess\"";
    s = mime(&m);
    assert_non_null(strstr(s, "\r\nTo: \"Lovelace, Ada \\\"Countess\\\"\" <ada@example.com>\r\n"));
    free(s);
    m.to_name = NULL;
    s = mime(&m);
    assert_non_null(strstr(s, "\r\nTo: ada@example.com\r\n"));
    free(s);
}

/* ---------------------------------------------------------------- bucket */

static void test_bucket_without_rate_never_waits(void **state)
{
    struct mail_bucket b;
    (void)state;
    mail_bucket_init(&b, 0, 0);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(mail_bucket_take(&b, 0), 0);
}

static void test_bucket_spaces_sends_at_the_rate(void **state)
{
    struct mail_bucket b;
    (void)state;
    mail_bucket_init(&b, 2.0, 0); /* burst 1 */
    assert_int_equal(mail_bucket_take(&b, 0), 0);
    assert_int_equal(mail_bucket_take(&b, 0), 500);
    assert_int_equal(mail_bucket_take(&b, 100), 400);
    assert_int_equal(mail_bucket_take(&b, 500), 0);
    assert_int_equal(mail_bucket_take(&b, 500), 500);
}

static void test_bucket_burst_is_a_tenth_of_a_second(void **state)
{
    struct mail_bucket b;
    int n = 0;
    (void)state;
    mail_bucket_init(&b, 100.0, 0);
    while (mail_bucket_take(&b, 0) == 0)
        n++;
    assert_int_equal(n, 10);
    /* idle for a minute: still only the burst */
    n = 0;
    while (mail_bucket_take(&b, 60000) == 0)
        n++;
    assert_int_equal(n, 10);
    /* a second at the steady rate */
    n = 0;
    for (int64_t t = 60001; t <= 61000; t++)
        while (mail_bucket_take(&b, t) == 0)
            n++;
    assert_int_equal(n, 100);
}

static void test_bucket_slow_rate_waits_whole_seconds(void **state)
{
    struct mail_bucket b;
    (void)state;
    mail_bucket_init(&b, 0.25, 0); /* rate 1/s split over 4 workers */
    assert_int_equal(mail_bucket_take(&b, 0), 0);
    assert_int_equal(mail_bucket_take(&b, 0), 4000);
    assert_int_equal(mail_bucket_take(&b, 4000), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_breaker_opens_after_threshold_transient_failures_in_a_row),
        cmocka_unit_test(test_breaker_success_or_permanent_resets_the_run),
        cmocka_unit_test(test_breaker_open_answers_wait_with_the_time_left),
        cmocka_unit_test(test_breaker_jitter_adds_at_most_a_fifth_of_the_cooloff),
        cmocka_unit_test(test_breaker_half_open_lets_exactly_one_probe_out),
        cmocka_unit_test(test_breaker_probe_success_closes_it),
        cmocka_unit_test(test_breaker_probe_permanent_answer_closes_it),
        cmocka_unit_test(test_breaker_probe_failure_reopens_for_a_new_cooloff),
        cmocka_unit_test(test_breaker_cancelled_probe_lets_the_next_request_probe),
        cmocka_unit_test(test_breaker_ignores_requests_admitted_before_it_opened),
        cmocka_unit_test(test_breaker_tick_moves_open_to_half_open_when_cooloff_ends),
        cmocka_unit_test(test_retry_after_seconds),
        cmocka_unit_test(test_retry_after_http_date_is_relative_to_now),
        cmocka_unit_test(test_retry_after_garbage_is_minus_one),
        cmocka_unit_test(test_from_with_name_and_angle_address),
        cmocka_unit_test(test_from_bare_address_has_no_name),
        cmocka_unit_test(test_from_without_address_or_too_long_is_refused),
        cmocka_unit_test(test_sendgrid_body_has_the_v3_shape),
        cmocka_unit_test(test_sendgrid_body_leaves_out_empty_names),
        cmocka_unit_test(test_sendgrid_body_escapes_and_refuses_bad_utf8),
        cmocka_unit_test(test_mime_headers),
        cmocka_unit_test(test_mime_has_both_parts_with_crlf_only),
        cmocka_unit_test(test_mime_single_part_without_html),
        cmocka_unit_test(test_mime_quoted_printable_encodes_and_wraps),
        cmocka_unit_test(test_rfc2047_for_non_ascii_subject_and_names),
        cmocka_unit_test(test_rfc2047_long_text_folds_without_cutting_a_character),
        cmocka_unit_test(test_display_name_with_specials_is_quoted),
        cmocka_unit_test(test_bucket_without_rate_never_waits),
        cmocka_unit_test(test_bucket_spaces_sends_at_the_rate),
        cmocka_unit_test(test_bucket_burst_is_a_tenth_of_a_second),
        cmocka_unit_test(test_bucket_slow_rate_waits_whole_seconds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
