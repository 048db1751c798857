/* test_jobstats.c - worker/jobstats.c: buckets, the pipe records, and sums that
 * survive a worker's exit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "jobstats.h"
#include "registry.h"

static struct config *setup_registry(void)
{
    struct config *c = calloc(1, sizeof(*c));
    char err[256];
    assert_non_null(c);
    assert_int_equal(cfg_load(c, NULL, err, sizeof(err)), 0);
    c->debug_jobs = 1;
    assert_int_equal(reg_init(c, err, sizeof(err)), 0);
    return c;
}

static void drop(struct config *c)
{
    reg_free();
    cfg_free(c);
    free(c);
}

static const struct js_entry *named(const struct js_entry *e, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcmp(e[i].name, name) == 0)
            return &e[i];
    return NULL;
}

/* Records one run of the type: started at 1000 ms, created at 900, ended after run_ms. */
static void one_run(struct js_worker *s, const char *type, enum js_outcome o, int64_t run_ms)
{
    struct job job;
    memset(&job, 0, sizeof(job));
    job.type = reg_find(type, strlen(type));
    assert_non_null(job.type);
    job.env.has = ENV_HAS_CREATED_AT;
    job.env.created_at = 900;
    job.started_ms = 1000;
    js_run_started(s, &job, 1000);
    js_run_ended(s, &job, o, 1000 + run_ms);
}

static void test_snapshot_reaches_the_table_and_survives_exit(void **state)
{
    struct config *c = setup_registry();
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct js_worker s;
    struct js_table t;
    struct js_entry sum[JS_MAX_TYPES];
    const struct js_entry *e;
    int fds[2], n;
    (void)state;
    memset(&s, 0, sizeof(s));
    memset(&t, 0, sizeof(t));
    assert_int_equal(pipe(fds), 0);
    js_worker_start(&s, loop, fds[1]);
    one_run(&s, "sys.sleep", JS_OK, 200);
    one_run(&s, "sys.fail", JS_RETRIED, 3);
    one_run(&s, "sys.fail", JS_DEAD, 3);
    js_worker_stop(&s, loop); /* the last snapshot, and closes fds[1] */
    js_table_read(&t, fds[0]);

    n = js_table_sum(&t, sum, JS_MAX_TYPES);
    assert_non_null(e = named(sum, n, "sys.sleep"));
    assert_int_equal(e->f.runs[JS_OK], 1);
    assert_int_equal(js_cumulative(&e->f.run, 4), 0); /* le 0.1 */
    assert_int_equal(js_cumulative(&e->f.run, 5), 1); /* le 0.25 */
    assert_int_equal(e->f.wait.count, 1);
    assert_int_equal(js_cumulative(&e->f.wait, 4), 1); /* 0.1 s waited: le 0.1 */
    assert_non_null(e = named(sum, n, "sys.fail"));
    assert_int_equal(e->f.runs[JS_RETRIED], 1);
    assert_int_equal(e->f.runs[JS_DEAD], 1);

    js_table_exited(&t, getpid());
    js_table_exited(&t, getpid()); /* twice: nothing more to fold */
    n = js_table_sum(&t, sum, JS_MAX_TYPES);
    assert_non_null(e = named(sum, n, "sys.fail"));
    assert_int_equal(e->f.runs[JS_RETRIED], 1);
    assert_int_equal(e->f.run.count, 2);

    close(fds[0]);
    js_table_free(&t);
    ev_loop_destroy(loop);
    drop(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_snapshot_reaches_the_table_and_survives_exit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
