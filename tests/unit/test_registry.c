/* test_registry.c - jobs/registry.c: which types exist, and config overrides. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "registry.h"

static struct config *load_defaults(void)
{
    struct config *c = calloc(1, sizeof(*c));
    char err[256];
    assert_non_null(c);
    assert_int_equal(cfg_load(c, NULL, err, sizeof(err)), 0);
    return c;
}

static void drop(struct config *c)
{
    reg_free();
    cfg_free(c);
    free(c);
}

static const struct job_type *find(const char *name)
{
    return reg_find(name, strlen(name));
}

static void test_debug_types_exist_only_with_debug_jobs(void **state)
{
    struct config *c = load_defaults();
    char err[256];
    (void)state;
    c->debug_jobs = 0;
    assert_int_equal(reg_init(c, err, sizeof(err)), 0);
    assert_non_null(find("sys.noop"));
    assert_null(find("sys.fail"));
    assert_null(find("sys.sleep"));
    assert_null(find("sys.crash"));
    c->debug_jobs = 1;
    assert_int_equal(reg_init(c, err, sizeof(err)), 0);
    assert_non_null(find("sys.fail"));
    assert_non_null(find("sys.sleep"));
    assert_non_null(find("sys.crash"));
    drop(c);
}

static void test_find_compares_whole_names(void **state)
{
    struct config *c = load_defaults();
    char err[256];
    (void)state;
    assert_int_equal(reg_init(c, err, sizeof(err)), 0);
    assert_null(reg_find("sys.no", 6));
    assert_null(find("sys.noopx"));
    /* a type name given as a slice that is not NUL-terminated */
    assert_non_null(reg_find("sys.noop-trailing", 8));
    assert_null(reg_find("", 0));
    drop(c);
}

static void test_defaults_are_sidekiq_like(void **state)
{
    struct config *c = load_defaults();
    char err[256];
    const struct job_type *t;
    (void)state;
    assert_int_equal(reg_init(c, err, sizeof(err)), 0);
    t = find("sys.noop");
    assert_int_equal(t->max_attempts, 25);
    assert_true(t->timeout == 60.0);
    assert_true(t->backoff.base == 15.0);
    assert_string_equal(t->queue, "default");
    drop(c);
}

static void test_config_overrides_apply_to_one_type(void **state)
{
    struct config *c = load_defaults();
    struct cfg_type o = {.name = "sys.noop", .queue = "critical", .max_attempts = 3,
                         .timeout = 5.0, .backoff_base = 0.5, .backoff_factor = -1,
                         .backoff_cap = 2.0};
    char err[256];
    const struct job_type *t;
    struct cfg_type *saved = c->types;
    int nsaved = c->ntypes;
    (void)state;
    c->types = &o;
    c->ntypes = 1;
    assert_int_equal(reg_init(c, err, sizeof(err)), 0);
    t = find("sys.noop");
    assert_string_equal(t->queue, "critical");
    assert_int_equal(t->max_attempts, 3);
    assert_true(t->timeout == 5.0);
    assert_true(t->backoff.base == 0.5);
    assert_true(t->backoff.factor == 1.0); /* unset: the default stays */
    assert_true(t->backoff.cap == 2.0);
    assert_int_equal(sys_noop_type.max_attempts, 25); /* the built-in is untouched */
    c->types = saved;
    c->ntypes = nsaved;
    drop(c);
}

static void test_unknown_type_in_config_is_an_error(void **state)
{
    struct config *c = load_defaults();
    struct cfg_type o = {.name = "sys.nope", .max_attempts = -1, .timeout = -1,
                         .backoff_base = -1, .backoff_factor = -1, .backoff_cap = -1};
    char err[256];
    struct cfg_type *saved = c->types;
    int nsaved = c->ntypes;
    (void)state;
    c->types = &o;
    c->ntypes = 1;
    assert_int_equal(reg_init(c, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "sys.nope"));
    c->types = saved;
    c->ntypes = nsaved;
    drop(c);
}

static void test_reg_at_lists_every_type_once(void **state)
{
    struct config *c = load_defaults();
    char err[256];
    size_t n = 0;
    (void)state;
    c->debug_jobs = 1;
    assert_int_equal(reg_init(c, err, sizeof(err)), 0);
    while (reg_at(n)) {
        /* each once: found by its name at its own place */
        assert_ptr_equal(find(reg_at(n)->name), reg_at(n));
        assert_int_equal(reg_index(reg_at(n)), n);
        n++;
    }
    assert_non_null(find("sys.retry_in"));
    assert_non_null(find("email.welcome"));
    assert_non_null(find("email.activation"));
    assert_non_null(find("email.reengagement"));
    assert_true(n >= 9);
    drop(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_debug_types_exist_only_with_debug_jobs),
        cmocka_unit_test(test_find_compares_whole_names),
        cmocka_unit_test(test_defaults_are_sidekiq_like),
        cmocka_unit_test(test_config_overrides_apply_to_one_type),
        cmocka_unit_test(test_unknown_type_in_config_is_an_error),
        cmocka_unit_test(test_reg_at_lists_every_type_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
