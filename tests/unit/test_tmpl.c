/*
 * test_tmpl.c - worker/tmpl.c: loading a template directory (every refusal with
 * its file:line), rendering (placeholders, `{{`, HTML escaping in the html part
 * only, CR/LF in a subject value refused) and the repo's own conf/templates.
 *
 * Each test writes a complete, valid set into a fresh temporary directory and
 * then changes the one file it is about; expected errors are whole messages,
 * with %s standing for the directory.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tmpl.h"

#define REPO_TEMPLATES SRCDIR "/conf/templates"

static const char *const kinds[] = {"welcome", "activation", "reengagement"};
static const char *const exts[] = {"subject", "txt", "html"};

static char dir[64];

static void put(const char *name, const char *text, size_t len)
{
    char path[128];
    FILE *f;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    assert_non_null(f = fopen(path, "wb"));
    assert_int_equal(fwrite(text, 1, len, f), len);
    fclose(f);
}

static void put_s(const char *name, const char *text)
{
    put(name, text, strlen(text));
}

/* A valid set: every file names the kind and the part, and the subjects name
 * the business. */
static void write_valid(void)
{
    char name[64], text[128];
    for (int k = 0; k < 3; k++) {
        for (int p = 0; p < 3; p++) {
            snprintf(name, sizeof name, "%s.%s", kinds[k], exts[p]);
            snprintf(text, sizeof text, "%s %s for {business_name}\n", kinds[k], exts[p]);
            put_s(name, text);
        }
    }
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/test_tmpl.XXXXXX");
    assert_non_null(mkdtemp(dir));
    write_valid();
    return 0;
}

static int teardown(void **state)
{
    char path[128];
    (void)state;
    for (int k = 0; k < 3; k++) {
        for (int p = 0; p < 3; p++) {
            snprintf(path, sizeof path, "%s/%s.%s", dir, kinds[k], exts[p]);
            unlink(path);
        }
    }
    assert_int_equal(rmdir(dir), 0);
    return 0;
}

static struct tmpl_set *load_ok(void)
{
    char err[512];
    struct tmpl_set *t = tmpl_load(dir, err, sizeof err);
    if (!t)
        fail_msg("load failed: %s", err);
    return t;
}

/* The directory must be refused with exactly want (%s: the directory). */
static void load_fails(const char *want)
{
    char err[512], expect[512];
    assert_null(tmpl_load(dir, err, sizeof err));
    snprintf(expect, sizeof expect, want, dir);
    assert_string_equal(err, expect);
    assert_int_equal(tmpl_check(dir, err, sizeof err), -1);
    assert_string_equal(err, expect);
}

static const struct tmpl_var acme[] = {
    {"business_name", "Acme"},
    {"email", "ops@acme.test"},
    {"support_address", "support@steller.test"},
    {"partner_id", "42"},
    {"activation_url", "https://app.test/activate?token=abc&x=1"},
    {"stage", "3"},
};
#define NACME (sizeof acme / sizeof acme[0])

static void test_placeholders_are_replaced(void **state)
{
    struct tmpl_msg m;
    char err[256];
    struct tmpl_set *t;
    (void)state;
    put_s("welcome.subject", "Welcome, {business_name}\n");
    put_s("welcome.txt", "{business_name} <{email}> #{partner_id}, ask {support_address}\n");
    put_s("activation.txt", "Open {activation_url}\n");
    put_s("reengagement.txt", "{stage} days ago, {business_name}\n");
    t = load_ok();
    assert_int_equal(tmpl_render(t, TMPL_WELCOME, acme, NACME, &m, err, sizeof err), 0);
    assert_string_equal(m.subject, "Welcome, Acme");
    assert_string_equal(m.text, "Acme <ops@acme.test> #42, ask support@steller.test\n");
    assert_string_equal(m.html, "welcome html for Acme\n");
    tmpl_msg_free(&m);
    assert_int_equal(tmpl_render(t, TMPL_ACTIVATION, acme, NACME, &m, err, sizeof err), 0);
    assert_string_equal(m.text, "Open https://app.test/activate?token=abc&x=1\n");
    tmpl_msg_free(&m);
    assert_int_equal(tmpl_render(t, TMPL_REENGAGEMENT, acme, NACME, &m, err, sizeof err), 0);
    assert_string_equal(m.text, "3 days ago, Acme\n");
    tmpl_msg_free(&m);
    assert_null(m.subject); /* tmpl_msg_free zeroes */
    tmpl_free(t);
}

static void test_first_value_of_a_name_wins_and_others_are_ignored(void **state)
{
    const struct tmpl_var vars[] = {
        {"no_such_name", "x"},
        {NULL, "y"},
        {"business_name", "First"},
        {"business_name", "Second"},
    };
    struct tmpl_msg m;
    char err[256];
    struct tmpl_set *t;
    (void)state;
    t = load_ok();
    assert_int_equal(tmpl_render(t, TMPL_WELCOME, vars, 4, &m, err, sizeof err), 0);
    assert_string_equal(m.subject, "welcome subject for First");
    tmpl_msg_free(&m);
    tmpl_free(t);
}

static void test_html_escaping_only_in_the_html_part(void **state)
{
    const struct tmpl_var vars[] = {{"business_name", "A&B <i>\"Q\" 'R'</i>"}};
    struct tmpl_msg m;
    char err[256];
    struct tmpl_set *t;
    (void)state;
    put_s("welcome.html", "<p title=\"{business_name}\">{business_name}</p>");
    t = load_ok();
    assert_int_equal(tmpl_render(t, TMPL_WELCOME, vars, 1, &m, err, sizeof err), 0);
    assert_string_equal(m.subject, "welcome subject for A&B <i>\"Q\" 'R'</i>");
    assert_string_equal(m.text, "welcome txt for A&B <i>\"Q\" 'R'</i>\n");
    assert_string_equal(m.html, "<p title=\"A&amp;B &lt;i&gt;&quot;Q&quot; &#39;R&#39;&lt;/i&gt;\">"
                                "A&amp;B &lt;i&gt;&quot;Q&quot; &#39;R&#39;&lt;/i&gt;</p>");
    tmpl_msg_free(&m);
    tmpl_free(t);
}

static void test_double_braces_are_literal(void **state)
{
    struct tmpl_msg m;
    char err[256];
    struct tmpl_set *t;
    (void)state;
    put_s("welcome.txt", "{{business_name}} {{{business_name}}} a } b }}\n");
    put_s("welcome.html", "{{");
    t = load_ok();
    assert_int_equal(tmpl_render(t, TMPL_WELCOME, acme, NACME, &m, err, sizeof err), 0);
    assert_string_equal(m.text, "{business_name} {Acme} a } b }\n");
    assert_string_equal(m.html, "{");
    tmpl_msg_free(&m);
    tmpl_free(t);
}

static void test_unknown_placeholder_is_refused_with_file_and_line(void **state)
{
    (void)state;
    put_s("welcome.txt", "Hello,\n\nopen {activation_url} now\n");
    load_fails("%s/welcome.txt:3: unknown placeholder {activation_url}; welcome has "
               "{business_name} {email} {support_address} {partner_id}");
    write_valid();
    put_s("reengagement.html", "<p>\n{Stage}</p>");
    load_fails("%s/reengagement.html:2: unknown placeholder {Stage}; reengagement has "
               "{business_name} {email} {support_address} {partner_id} {stage}");
    write_valid();
    put_s("activation.subject", "{}\n");
    load_fails("%s/activation.subject:1: unknown placeholder {}; activation has "
               "{business_name} {email} {support_address} {partner_id} {activation_url}");
}

static void test_unterminated_brace_is_refused(void **state)
{
    (void)state;
    put_s("welcome.html", "<p>\n\n{business_name\n</p>\n");
    load_fails("%s/welcome.html:3: unterminated { (write {{ for a literal brace)");
    write_valid();
    put_s("welcome.txt", "a {");
    load_fails("%s/welcome.txt:1: unterminated { (write {{ for a literal brace)");
    write_valid();
    put_s("welcome.txt", "x\n{a {email}\n");
    load_fails("%s/welcome.txt:2: unterminated { (write {{ for a literal brace)");
}

static void test_missing_file_is_refused(void **state)
{
    char path[128], err[512];
    (void)state;
    snprintf(path, sizeof path, "%s/reengagement.html", dir);
    unlink(path);
    load_fails("%s/reengagement.html: missing file");
    assert_null(tmpl_load("/nonexistent/templates", err, sizeof err));
    assert_string_equal(err, "/nonexistent/templates/welcome.subject: missing file");
}

static void test_subject_is_one_line(void **state)
{
    struct tmpl_msg m;
    char err[256];
    struct tmpl_set *t;
    (void)state;
    put_s("welcome.subject", "Hi {business_name}\r\n"); /* one CRLF at the end is fine */
    t = load_ok();
    assert_int_equal(tmpl_render(t, TMPL_WELCOME, acme, NACME, &m, err, sizeof err), 0);
    assert_string_equal(m.subject, "Hi Acme");
    tmpl_msg_free(&m);
    tmpl_free(t);
    put_s("welcome.subject", "Hi\nthere\n");
    load_fails("%s/welcome.subject:2: the subject must be one line");
    put_s("welcome.subject", "Hi\rthere");
    load_fails("%s/welcome.subject:1: the subject must be one line");
}

static void test_empty_big_and_binary_files_are_refused(void **state)
{
    char *big;
    (void)state;
    put_s("activation.txt", " \n\n");
    load_fails("%s/activation.txt: empty");
    put_s("activation.txt", "ok\n");
    big = malloc(TMPL_MAX_FILE + 1);
    assert_non_null(big);
    memset(big, 'x', TMPL_MAX_FILE + 1);
    put("activation.html", big, TMPL_MAX_FILE); /* exactly the limit loads */
    tmpl_free(load_ok());
    put("activation.html", big, TMPL_MAX_FILE + 1);
    free(big);
    load_fails("%s/activation.html: larger than 262144 bytes");
    put("activation.html", "a\nb\xc3(\n", 6);
    load_fails("%s/activation.html:2: not UTF-8");
    put("activation.html", "a\0b", 3);
    load_fails("%s/activation.html:1: NUL byte");
    put_s("activation.html", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 {email}\n");
    tmpl_free(load_ok());
}

static void test_crlf_in_a_subject_value_is_refused(void **state)
{
    const struct tmpl_var bad[] = {{"business_name", "Acme\r\nBcc: all@example.test"}};
    const struct tmpl_var lf[] = {{"business_name", "Acme\nCorp"}};
    struct tmpl_msg m;
    char err[256];
    struct tmpl_set *t;
    (void)state;
    t = load_ok();
    assert_int_equal(tmpl_render(t, TMPL_WELCOME, bad, 1, &m, err, sizeof err), TMPL_EBADVALUE);
    assert_string_equal(err, "welcome.subject: the value of {business_name} holds CR or LF, "
                             "not allowed in a subject");
    assert_null(m.subject);
    assert_null(m.text);
    assert_null(m.html);
    assert_int_equal(tmpl_render(t, TMPL_WELCOME, lf, 1, &m, err, sizeof err), TMPL_EBADVALUE);
    tmpl_free(t);
    /* In a body a line break is just text. */
    put_s("welcome.subject", "Welcome\n");
    t = load_ok();
    assert_int_equal(tmpl_render(t, TMPL_WELCOME, lf, 1, &m, err, sizeof err), 0);
    assert_string_equal(m.subject, "Welcome");
    assert_string_equal(m.text, "welcome txt for Acme\nCorp\n");
    tmpl_msg_free(&m);
    tmpl_free(t);
}

static void test_a_used_placeholder_without_value_is_an_error(void **state)
{
    const struct tmpl_var nul[] = {{"business_name", NULL}};
    struct tmpl_msg m;
    char err[256];
    struct tmpl_set *t;
    (void)state;
    put_s("activation.html", "<a href=\"{activation_url}\">go</a>");
    t = load_ok();
    assert_int_equal(tmpl_render(t, TMPL_ACTIVATION, acme, 4, &m, err, sizeof err), TMPL_ERR);
    assert_string_equal(err, "activation.html: no value for {activation_url}");
    assert_null(m.subject);
    assert_int_equal(tmpl_render(t, TMPL_WELCOME, nul, 1, &m, err, sizeof err), TMPL_ERR);
    assert_string_equal(err, "welcome.subject: no value for {business_name}");
    assert_int_equal(tmpl_render(t, TMPL_NKINDS, acme, NACME, &m, err, sizeof err), -1);
    assert_int_equal(tmpl_render(NULL, TMPL_WELCOME, acme, NACME, &m, err, sizeof err), -1);
    tmpl_free(t);
}

static void test_kind_names_and_placeholder_tables(void **state)
{
    const char *const *ph;
    (void)state;
    assert_string_equal(tmpl_kind_name(TMPL_WELCOME), "welcome");
    assert_string_equal(tmpl_kind_name(TMPL_ACTIVATION), "activation");
    assert_string_equal(tmpl_kind_name(TMPL_REENGAGEMENT), "reengagement");
    assert_null(tmpl_kind_name(TMPL_NKINDS));
    ph = tmpl_placeholders(TMPL_REENGAGEMENT);
    assert_string_equal(ph[4], "stage");
    assert_null(ph[5]);
    assert_null(tmpl_placeholders(TMPL_NKINDS));
}

static int contains(const char *hay, const char *needle)
{
    return strstr(hay, needle) != NULL;
}

/* The shipped templates load, use every placeholder of their kind somewhere,
 * render with no brace left over, and escape values in the html. */
static void test_repo_templates_load_and_render_every_kind(void **state)
{
    char err[512];
    struct tmpl_set *t;
    (void)state;
    t = tmpl_load(REPO_TEMPLATES, err, sizeof err);
    if (!t)
        fail_msg("conf/templates: %s", err);
    for (int k = 0; k < TMPL_NKINDS; k++) {
        const char *const *ph = tmpl_placeholders((enum tmpl_kind)k);
        struct tmpl_var vars[8];
        char vals[8][64];
        struct tmpl_msg m;
        size_t n = 0;
        for (; ph[n]; n++) {
            snprintf(vals[n], sizeof vals[n], "V%zu<&>", n);
            vars[n] = (struct tmpl_var){ph[n], vals[n]};
        }
        if (tmpl_render(t, (enum tmpl_kind)k, vars, n, &m, err, sizeof err) != 0)
            fail_msg("%s: %s", kinds[k], err);
        assert_null(strpbrk(m.subject, "\r\n{}"));
        assert_true(strlen(m.subject) > 5);
        assert_null(strpbrk(m.text, "{}"));
        assert_null(strpbrk(m.html, "{}"));
        assert_true(contains(m.html, "<!DOCTYPE html>") && contains(m.html, "</html>"));
        assert_null(strstr(m.html, "<&>")); /* every value went in escaped */
        for (size_t i = 0; i < n; i++) {
            char raw[64], esc[64];
            snprintf(raw, sizeof raw, "V%zu<&>", i);
            snprintf(esc, sizeof esc, "V%zu&lt;&amp;&gt;", i);
            if (!contains(m.subject, raw) && !contains(m.text, raw))
                fail_msg("%s: {%s} is used in neither the subject nor the text", kinds[k], ph[i]);
            if (!contains(m.html, esc))
                fail_msg("%s: {%s} is not used in the html", kinds[k], ph[i]);
        }
        tmpl_msg_free(&m);
    }
    tmpl_free(t);
}

/* "" means the installed templates; whether they exist here or not, the answer
 * names a file under DATADIR/steller-worker/templates. */
static void test_empty_dir_means_the_installed_templates(void **state)
{
    char err[512];
    struct tmpl_set *t;
    (void)state;
    t = tmpl_load("", err, sizeof err);
    if (!t)
        assert_non_null(strstr(err, "/steller-worker/templates/welcome.subject: "));
    tmpl_free(t);
    t = tmpl_load(NULL, err, sizeof err);
    if (!t)
        assert_non_null(strstr(err, "/steller-worker/templates/welcome.subject: "));
    tmpl_free(t);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_placeholders_are_replaced),
        T(test_first_value_of_a_name_wins_and_others_are_ignored),
        T(test_html_escaping_only_in_the_html_part),
        T(test_double_braces_are_literal),
        T(test_unknown_placeholder_is_refused_with_file_and_line),
        T(test_unterminated_brace_is_refused),
        T(test_missing_file_is_refused),
        T(test_subject_is_one_line),
        T(test_empty_big_and_binary_files_are_refused),
        T(test_crlf_in_a_subject_value_is_refused),
        T(test_a_used_placeholder_without_value_is_an_error),
        cmocka_unit_test(test_kind_names_and_placeholder_tables),
        cmocka_unit_test(test_repo_templates_load_and_render_every_kind),
        cmocka_unit_test(test_empty_dir_means_the_installed_templates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
