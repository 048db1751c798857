/*
 * test_config.c - worker/config.c: defaults, the sample file, every kind of error
 * with its file:line, environment overrides, lists, and cfg_print's round trip with
 * secrets redacted.
 *
 * Config text is written to a temporary file per test; expected errors are written
 * with %s for that file's path, so the whole message is compared, not a fragment.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <libconfig.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

#define SAMPLE SRCDIR "/conf/steller-worker.conf"

static char path[64];

static const char *write_conf(const char *text)
{
    snprintf(path, sizeof path, "/tmp/test_config.XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t len = strlen(text);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    close(fd);
    return path;
}

static int load_text(struct config *c, const char *text, char *err, size_t errlen)
{
    int rc = cfg_load(c, write_conf(text), err, errlen);
    unlink(path);
    return rc;
}

static void load_ok(struct config *c, const char *text)
{
    char err[512];

    if (load_text(c, text, err, sizeof err) != 0)
        fail_msg("load failed: %s", err);
}

/* The text must be refused with exactly want, where %s stands for the file's path. */
static void load_fails(const char *text, const char *want)
{
    struct config c;
    char err[512], expect[512];

    assert_int_equal(load_text(&c, text, err, sizeof err), -1);
    snprintf(expect, sizeof expect, want, path);
    assert_string_equal(err, expect);
    assert_null(c.redis_url); /* nothing is left allocated */
    cfg_free(&c);
}

/* cfg_print's output as a malloc'd string. */
static char *printed(const struct config *c)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);

    assert_non_null(f);
    cfg_print(c, f);
    fclose(f);
    return buf;
}

static int clean_env(void **state)
{
    (void)state;
    unsetenv("REDIS_URL");
    unsetenv("DATABASE_URL");
    unsetenv("SENDGRID_API_KEY");
    unsetenv("EMAIL_SMTP_SERVER");
    unsetenv("EMAIL_FROM");
    return 0;
}

static void test_email_transport_follows_the_environment(void **state)
{
    (void)state;
    struct config c;

    load_ok(&c, "workers = 1;\n");
    assert_int_equal(c.email_transport, CFG_MAIL_LOG);
    cfg_free(&c);
    setenv("EMAIL_SMTP_SERVER", "smtp.example.org", 1);
    load_ok(&c, "workers = 1;\n");
    assert_int_equal(c.email_transport, CFG_MAIL_SMTP);
    assert_string_equal(c.email_smtp_server, "smtp.example.org");
    cfg_free(&c);
    setenv("SENDGRID_API_KEY", "SG.secret-key", 1);
    setenv("EMAIL_FROM", "Ops <ops@example.org>", 1);
    load_ok(&c, "workers = 1;\n");
    assert_int_equal(c.email_transport, CFG_MAIL_SENDGRID);
    assert_string_equal(c.email_from, "Ops <ops@example.org>");
    char *out = printed(&c);
    assert_null(strstr(out, "SG.secret-key"));
    assert_non_null(strstr(out, "transport = \"sendgrid\";"));
    free(out);
    cfg_free(&c);
    load_ok(&c, "email = { transport = \"log\"; };\n"); /* the file's choice wins */
    assert_int_equal(c.email_transport, CFG_MAIL_LOG);
    cfg_free(&c);
    clean_env(NULL);
    load_fails("email = {\n transport = \"sendgrid\";\n};\n",
               "%s:2: key 'email.transport': sendgrid needs SENDGRID_API_KEY");
    load_fails("email = {\n transport = \"smtp\";\n};\n",
               "%s:2: key 'email.transport': smtp needs EMAIL_SMTP_SERVER");
    load_fails("email = {\n from = \"a@b\\r\\nBcc: x@y\";\n};\n",
               "%s:2: key 'email.from': must not contain a line break");
    load_fails("email = {\n smtp = {\n  starttls = \"maybe\";\n };\n};\n",
               "%s:3: key 'email.smtp.starttls': must be one of required, optional, off");
}

static void test_wallet_amounts_and_stages(void **state)
{
    (void)state;
    struct config c;

    load_ok(&c, "wallet = { max_seed_amount = \"99999999999999.9999\"; };\n"
                "reengagement = { stages = [1, 2]; max_age_days = 3; };\n");
    assert_string_equal(c.wallet_max_seed_amount, "99999999999999.9999");
    assert_int_equal(c.reengagement_stages.n, 2);
    assert_int_equal(c.reengagement_stages.v[1], 2);
    cfg_free(&c);
    load_fails("wallet = {\n default_seed_amount = \"1.23456\";\n};\n",
               "%s:2: key 'wallet.default_seed_amount': has more than 4 decimals");
    load_fails("wallet = {\n max_seed_amount = \"10\";\n};\n",
               "default of key 'wallet.default_seed_amount': must not be more than "
               "wallet.max_seed_amount");
    load_fails("reengagement = {\n stages = [7, 3];\n};\n",
               "%s:2: key 'reengagement.stages': days must be strictly increasing");
    load_fails("reengagement = {\n stages = [3, 40];\n};\n",
               "default of key 'reengagement.max_age_days': must be more than the last of "
               "reengagement.stages");
}

static void test_schedule_list(void **state)
{
    (void)state;
    struct config c;

    load_ok(&c, "schedule = ( { name = \"a\"; cron = \"*/5 * * * *\"; type = \"sys.noop\";"
                " args = \"{\\\"x\\\": 1}\"; catch_up = true; } );\n");
    assert_int_equal(c.nschedule, 1);
    assert_string_equal(c.schedule[0].args, "{\"x\": 1}");
    assert_int_equal(c.schedule[0].catch_up, 1);
    assert_null(c.schedule[0].queue);
    cfg_free(&c);
    load_fails("schedule = (\n { name = \"a\"; cron = \"0 25 * * *\"; type = \"t\"; }\n);\n",
               "%s:2: key 'schedule[0].cron': field 2 (hour): 25 is out of range 0-23");
    load_fails("schedule = (\n { name = \"a\"; type = \"t\"; }\n);\n",
               "%s:2: key 'schedule[0]': cron is required");
}

static void test_defaults_without_a_file(void **state)
{
    (void)state;
    struct config c;
    char err[256];
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);

    assert_int_equal(cfg_load(&c, NULL, err, sizeof err), 0);
    assert_null(c.path);
    assert_int_equal(c.workers, cpus < 1 ? 1 : cpus > 256 ? 256 : cpus);
    assert_int_equal(c.concurrency, 32);
    assert_int_equal(c.debug_jobs, 0);
    assert_true(c.shutdown_timeout == 25.0);
    assert_int_equal(c.max_job_bytes, 262144);
    assert_int_equal(c.poison_limit, 3);
    assert_string_equal(c.log_level, "info");
    assert_string_equal(c.redis_url, "redis://127.0.0.1:6379/0");
    assert_string_equal(c.redis_prefix, "steller");
    assert_string_equal(c.database_url, "");
    assert_string_equal(c.http_listen, "127.0.0.1:9460");
    assert_int_equal(c.dead_max_entries, 100000);
    assert_int_equal(c.fetch_order, CFG_ORDER_STRICT);
    assert_int_equal(c.fetch_idle_ms, 100);
    assert_true(c.heartbeat_interval == 2.0);
    assert_true(c.heartbeat_ttl == 10.0);
    assert_true(c.promote_interval == 1.0);
    assert_true(c.reaper_interval == 5.0);
    assert_int_equal(c.nqueues, 4);
    const char *names[] = {"critical", "default", "email", "request_log"};
    const int weights[] = {4, 2, 2, 1};
    for (int i = 0; i < 4; i++) {
        assert_string_equal(c.queues[i].name, names[i]);
        assert_int_equal(c.queues[i].weight, weights[i]);
    }
    assert_int_equal(c.ntypes, 0);
    assert_null(cfg_find_type(&c, "email.welcome"));
    cfg_free(&c);
    cfg_free(&c); /* a freed config is empty, and freeing it again is harmless */
}

static void test_sample_conf_loads_and_states_the_defaults(void **state)
{
    (void)state;
    struct config dflt, sample;
    char err[512];

    assert_int_equal(cfg_load(&dflt, NULL, err, sizeof err), 0);
    if (cfg_load(&sample, SAMPLE, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_string_equal(sample.path, SAMPLE);
    char *a = printed(&dflt), *b = printed(&sample);
    assert_string_equal(a, b);
    assert_non_null(strstr(a, "\n    heartbeat_ttl = 10.0;\n"));
    assert_non_null(strstr(a, "\nshutdown_timeout = 25.0;\n"));
    free(a);
    free(b);
    cfg_free(&dflt);
    cfg_free(&sample);
}

/* Every setting cfg_print writes must also be written (and so documented) in the sample. */
static void check_documented(const config_setting_t *s, const char *prefix, const config_t *sample)
{
    for (int i = 0; i < config_setting_length(s); i++) {
        const config_setting_t *m = config_setting_get_elem(s, i);
        char p[256];
        snprintf(p, sizeof p, "%s%s", prefix, config_setting_name(m));
        if (!config_lookup(sample, p))
            fail_msg("key '%s' is missing from %s", p, SAMPLE);
        if (config_setting_type(m) == CONFIG_TYPE_GROUP) {
            strncat(p, ".", sizeof p - strlen(p) - 1);
            check_documented(m, p, sample);
        }
    }
}

static void test_sample_conf_names_every_key(void **state)
{
    (void)state;
    struct config c;
    config_t printed_cf, sample_cf;
    char err[256];

    assert_int_equal(cfg_load(&c, NULL, err, sizeof err), 0);
    char *text = printed(&c);
    config_init(&printed_cf);
    config_init(&sample_cf);
    assert_int_equal(config_read_string(&printed_cf, text), CONFIG_TRUE);
    assert_int_equal(config_read_file(&sample_cf, SAMPLE), CONFIG_TRUE);
    check_documented(config_root_setting(&printed_cf), "", &sample_cf);
    assert_non_null(config_lookup(&sample_cf, "queues"));
    assert_non_null(config_lookup(&sample_cf, "types"));
    config_destroy(&printed_cf);
    config_destroy(&sample_cf);
    free(text);
    cfg_free(&c);
}

static void test_values_from_the_file(void **state)
{
    (void)state;
    struct config c;

    load_ok(&c, "workers = 3;\n"
                "concurrency = 100;\n"
                "debug_jobs = true;\n"
                "shutdown_timeout = 2.5;\n"
                "max_job_bytes = 1024;\n"
                "poison_limit = 7;\n"
                "log_level = \"debug\";\n"
                "redis = { url = \"redis://r:6380/1\"; prefix = \"st:test\"; };\n"
                "database = { url = \"postgresql://u@db/steller\"; };\n"
                "http = { listen = \"[::1]:0\"; };\n"
                "dead = { max_entries = 5; };\n"
                "fetch = { order = \"weighted\"; idle_ms = 7; };\n"
                "engine = { heartbeat_interval = 0.5; heartbeat_ttl = 3.0;\n"
                "           promote_interval = 0.25; reaper_interval = 1.5; };\n");
    assert_int_equal(c.workers, 3);
    assert_int_equal(c.concurrency, 100);
    assert_int_equal(c.debug_jobs, 1);
    assert_true(c.shutdown_timeout == 2.5);
    assert_int_equal(c.max_job_bytes, 1024);
    assert_int_equal(c.poison_limit, 7);
    assert_string_equal(c.log_level, "debug");
    assert_string_equal(c.redis_url, "redis://r:6380/1");
    assert_string_equal(c.redis_prefix, "st:test");
    assert_string_equal(c.database_url, "postgresql://u@db/steller");
    assert_string_equal(c.http_listen, "[::1]:0");
    assert_int_equal(c.dead_max_entries, 5);
    assert_int_equal(c.fetch_order, CFG_ORDER_WEIGHTED);
    assert_int_equal(c.fetch_idle_ms, 7);
    assert_true(c.heartbeat_interval == 0.5);
    assert_true(c.heartbeat_ttl == 3.0);
    assert_true(c.promote_interval == 0.25);
    assert_true(c.reaper_interval == 1.5);
    cfg_free(&c);
}

static void test_integers_where_seconds_and_longs_are_expected(void **state)
{
    (void)state;
    struct config c;

    load_ok(&c, "shutdown_timeout = 25;\nmax_job_bytes = 65536L;\n"
                "dead = { max_entries = 100000000L; };\nengine = { heartbeat_ttl = 30; };\n");
    assert_true(c.shutdown_timeout == 25.0);
    assert_int_equal(c.max_job_bytes, 65536);
    assert_int_equal(c.dead_max_entries, 100000000);
    assert_true(c.heartbeat_ttl == 30.0);
    cfg_free(&c);
    load_fails("max_job_bytes = 5000000000L;\n",
               "%s:1: key 'max_job_bytes': must be from 64 to 67108864");
    load_fails("concurrency = 2.0;\n", "%s:1: key 'concurrency': must be an integer");
}

static void test_workers_zero_means_one_per_cpu(void **state)
{
    (void)state;
    struct config c;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);

    load_ok(&c, "workers = 0;\n");
    assert_int_equal(c.workers, cpus < 1 ? 1 : cpus > 256 ? 256 : cpus);
    cfg_free(&c);
    load_ok(&c, "workers = 256;\n");
    assert_int_equal(c.workers, 256);
    cfg_free(&c);
    load_fails("\nworkers = 257;\n", "%s:2: key 'workers': must be from 0 to 256");
    load_fails("workers = -1;\n", "%s:1: key 'workers': must be from 0 to 256");
}

static void test_value_errors_name_file_line_and_key(void **state)
{
    (void)state;
    load_fails("concurrency = 0;\n", "%s:1: key 'concurrency': must be from 1 to 10000");
    load_fails("debug_jobs = 1;\n", "%s:1: key 'debug_jobs': must be true or false");
    load_fails("shutdown_timeout = 3600.5;\n",
               "%s:1: key 'shutdown_timeout': must be from 0 to 3600 seconds");
    load_fails("poison_limit = \"3\";\n", "%s:1: key 'poison_limit': must be an integer");
    load_fails("log_level = \"verbose\";\n",
               "%s:1: key 'log_level': must be one of debug, info, warn, error");
    load_fails("redis = {\n  prefix = \"\";\n};\n",
               "%s:2: key 'redis.prefix': must not be empty");
    load_fails("redis = { prefix = \"a b\"; };\n",
               "%s:1: key 'redis.prefix': must not contain spaces or control characters");
    load_fails("http = { listen = \"localhost\"; };\n",
               "%s:1: key 'http.listen': must be HOST:PORT with a port from 0 to 65535");
    load_fails("dead = { max_entries = 0; };\n",
               "%s:1: key 'dead.max_entries': must be from 1 to 100000000");
    load_fails("fetch = { order = \"random\"; };\n",
               "%s:1: key 'fetch.order': must be one of strict, weighted");
    load_fails("fetch = { idle_ms = 0; };\n", "%s:1: key 'fetch.idle_ms': must be from 1 to 10000");
    load_fails("engine = { promote_interval = 0.0; };\n",
               "%s:1: key 'engine.promote_interval': must be more than 0 and at most 3600 "
               "seconds");
    load_fails("database = { url = \"localhost\"; };\n",
               "%s:1: key 'database.url': must be a libpq URI (postgresql://...) or a conninfo "
               "string (host=... dbname=...)");
}

static void test_unknown_keys_and_groups_are_errors(void **state)
{
    (void)state;
    load_fails("workers = 1;\nfoo = 2;\n", "%s:2: unknown key 'foo'");
    load_fails("redis = {\n  url = \"redis://h\";\n  prefx = \"s\";\n};\n",
               "%s:3: unknown key 'redis.prefx'");
    load_fails("mail = { from = \"a@b\"; };\n", "%s:1: unknown key 'mail'");
    load_fails("email = {\n smtp = {\n  prot = 25;\n };\n};\n",
               "%s:3: unknown key 'email.smtp.prot'");
    load_fails("redis = \"redis://h\";\n",
               "%s:1: key 'redis': must be a group: redis = { ... };");
    load_fails("engine = { reaper = { x = 1; }; };\n", "%s:1: unknown key 'engine.reaper'");
    load_fails("queues = ( { name = \"a\"; wieght = 2; } );\n",
               "%s:1: unknown key 'queues[0].wieght'");
}

static void test_syntax_error_and_missing_file(void **state)
{
    (void)state;
    struct config c;
    char err[512];

    load_fails("workers = 1;\nconcurrency = ;\n", "%s:2: syntax error");
    load_fails("workers = 1;\nworkers = 2;\n", "%s:2: duplicate setting name");
    assert_int_equal(cfg_load(&c, "/nonexistent/steller.conf", err, sizeof err), -1);
    assert_string_equal(err, "/nonexistent/steller.conf: cannot read: No such file or directory");
    cfg_free(&c);
}

static void test_secrets_never_appear_in_errors(void **state)
{
    (void)state;
    struct config c;
    char err[512];

    assert_int_equal(load_text(&c, "redis = { url = \"redis://:hunter2@h:99999/0\"; };\n", err,
                               sizeof err),
                     -1);
    assert_null(strstr(err, "hunter2"));
    assert_non_null(strstr(err, ":1: key 'redis.url': bad port"));
    assert_int_equal(load_text(&c, "redis = { url = \"rediss://:hunter2@h\"; };\n", err,
                               sizeof err),
                     -1);
    assert_null(strstr(err, "hunter2"));
    assert_non_null(strstr(err, "rediss://"));
    assert_int_equal(load_text(&c, "database = { url = \"hunter2\"; };\n", err, sizeof err), -1);
    assert_null(strstr(err, "hunter2"));
}

static void test_environment_overrides_the_file(void **state)
{
    (void)state;
    struct config c;
    const char *text = "redis = { url = \"redis://file:6379/0\"; };\n"
                       "database = { url = \"host=file\"; };\n";

    setenv("REDIS_URL", "redis://:pw@env:6390/3", 1);
    setenv("DATABASE_URL", "postgresql://env/db", 1);
    load_ok(&c, text);
    assert_string_equal(c.redis_url, "redis://:pw@env:6390/3");
    assert_string_equal(c.database_url, "postgresql://env/db");
    cfg_free(&c);

    setenv("REDIS_URL", "", 1); /* empty counts as unset */
    setenv("DATABASE_URL", "", 1);
    load_ok(&c, text);
    assert_string_equal(c.redis_url, "redis://file:6379/0");
    assert_string_equal(c.database_url, "host=file");
    cfg_free(&c);
    clean_env(NULL);
}

static void test_bad_environment_value_is_named_without_its_value(void **state)
{
    (void)state;
    struct config c;
    char err[512];

    setenv("REDIS_URL", "redis://:hunter2@h:0", 1);
    assert_int_equal(cfg_load(&c, NULL, err, sizeof err), -1);
    assert_string_equal(err, "environment REDIS_URL: bad port: must be a number from 1 to 65535");
    clean_env(NULL);

    setenv("DATABASE_URL", "hunter2", 1);
    assert_int_equal(cfg_load(&c, NULL, err, sizeof err), -1);
    assert_null(strstr(err, "hunter2"));
    assert_true(strncmp(err, "environment DATABASE_URL: ", 26) == 0);
    clean_env(NULL);
}

static void test_heartbeat_ttl_must_exceed_two_intervals(void **state)
{
    (void)state;
    load_fails("engine = {\n  heartbeat_ttl = 4.0;\n};\n",
               "%s:2: key 'engine.heartbeat_ttl': must be more than twice "
               "engine.heartbeat_interval");
    load_fails("engine = {\n  heartbeat_interval = 5.0;\n};\n",
               "%s:2: key 'engine.heartbeat_interval': must be less than half "
               "engine.heartbeat_ttl");
    struct config c;
    load_ok(&c, "engine = { heartbeat_interval = 1.0; heartbeat_ttl = 2.5; };\n");
    cfg_free(&c);
}

static void test_queues_list(void **state)
{
    (void)state;
    struct config c;

    load_ok(&c, "queues = (\n  { name = \"hi\"; weight = 10; },\n"
                "  { name = \"a.b:c-d_e\"; }\n);\n");
    assert_int_equal(c.nqueues, 2);
    assert_string_equal(c.queues[0].name, "hi");
    assert_int_equal(c.queues[0].weight, 10);
    assert_string_equal(c.queues[1].name, "a.b:c-d_e");
    assert_int_equal(c.queues[1].weight, 1);
    cfg_free(&c);
}

static void test_queue_errors(void **state)
{
    (void)state;
    load_fails("queues = ( );\n", "%s:1: key 'queues': needs at least 1 queue");
    load_fails("queues = 3;\n",
               "%s:1: key 'queues': must be a list of groups: ( { name = ...; }, ... )");
    load_fails("queues = ( \"critical\" );\n",
               "%s:1: key 'queues[0]': must be a group: { name = ...; }");
    load_fails("queues = (\n  { weight = 2; }\n);\n", "%s:2: key 'queues[0]': name is required");
    load_fails("queues = ( { name = \"\"; } );\n", "%s:1: key 'queues[0].name': must not be empty");
    load_fails("queues = ( { name = \"a b\"; } );\n",
               "%s:1: key 'queues[0].name': may hold only letters, digits and _ . : -");
    load_fails("queues = (\n  { name = \"a\"; },\n  { name = \"b\"; },\n  { name = \"a\"; }\n);\n",
               "%s:4: key 'queues[2].name': a second queue named 'a'");
    load_fails("queues = ( { name = \"a\"; weight = 0; } );\n",
               "%s:1: key 'queues[0].weight': must be from 1 to 1000");
    load_fails("queues = ( { name = \"a\"; weight = 1001; } );\n",
               "%s:1: key 'queues[0].weight': must be from 1 to 1000");
}

static void test_types_list(void **state)
{
    (void)state;
    struct config c;

    load_ok(&c, "types = (\n"
                "  { name = \"sys.fail\"; max_attempts = 3; timeout = 5.0; queue = \"default\";\n"
                "    backoff_base = 0.05; backoff_factor = 0.001; backoff_cap = 1.0; },\n"
                "  { name = \"email.welcome\"; timeout = 30; }\n"
                ");\n");
    assert_int_equal(c.ntypes, 2);
    const struct cfg_type *t = cfg_find_type(&c, "sys.fail");
    assert_non_null(t);
    assert_string_equal(t->queue, "default");
    assert_int_equal(t->max_attempts, 3);
    assert_true(t->timeout == 5.0);
    assert_true(t->backoff_base == 0.05);
    assert_true(t->backoff_factor == 0.001);
    assert_true(t->backoff_cap == 1.0);
    t = cfg_find_type(&c, "email.welcome");
    assert_non_null(t);
    assert_true(t->timeout == 30.0);
    assert_null(t->queue); /* unset fields */
    assert_int_equal(t->max_attempts, -1);
    assert_true(t->backoff_base < 0 && t->backoff_factor < 0 && t->backoff_cap < 0);
    assert_null(cfg_find_type(&c, "email"));
    cfg_free(&c);
}

static void test_type_errors(void **state)
{
    (void)state;
    load_fails("types = ( { name = \"x\"; max_attempts = 0; } );\n",
               "%s:1: key 'types[0].max_attempts': must be from 1 to 1000");
    load_fails("types = ( { name = \"x\"; timeout = 0.0; } );\n",
               "%s:1: key 'types[0].timeout': must be more than 0 and at most 86400 seconds");
    load_fails("types = ( { name = \"x\"; timeout = -1; } );\n",
               "%s:1: key 'types[0].timeout': must be more than 0 and at most 86400 seconds");
    load_fails("types = ( { name = \"x\"; backoff_cap = 0; } );\n",
               "%s:1: key 'types[0].backoff_cap': must be more than 0 and at most 31536000 "
               "seconds");
    load_fails("types = ( { name = \"x\"; queue = \"\"; } );\n",
               "%s:1: key 'types[0].queue': must not be empty");
    load_fails("types = ( { timeout = 1.0; } );\n", "%s:1: key 'types[0]': name is required");
    load_fails("types = ( { name = \"x\"; }, { name = \"x\"; } );\n",
               "%s:1: key 'types[1].name': a second type named 'x'");
    load_fails("types = ( { name = \"x\"; retries = 3; } );\n",
               "%s:1: unknown key 'types[0].retries'");
}

static void test_print_round_trips(void **state)
{
    (void)state;
    struct config a, b;
    char err[512];

    load_ok(&a, "workers = 2;\nmax_job_bytes = 67108864;\nshutdown_timeout = 0.1;\n"
                "redis = { url = \"redis://:s3cret@h:6380/2\"; prefix = \"p\\\"q\\\\r\"; };\n"
                "database = { url = \"postgresql://app:dbpw@db:5432/steller?sslmode=disable\"; "
                "};\n"
                "fetch = { order = \"weighted\"; };\n"
                "engine = { heartbeat_interval = 0.3; heartbeat_ttl = 0.7; };\n"
                "queues = ( { name = \"q1\"; weight = 3; } );\n"
                "types = ( { name = \"t\"; timeout = 1.5; }, { name = \"u\"; queue = \"q1\"; "
                "max_attempts = 9; backoff_base = 0; backoff_factor = 0.001; "
                "backoff_cap = 7; } );\n");
    char *first = printed(&a);
    assert_null(strstr(first, "s3cret"));
    assert_null(strstr(first, "dbpw"));
    assert_non_null(strstr(first, "\n    heartbeat_ttl = 0.7;\n"));
    assert_non_null(strstr(first, "{ name = \"t\"; timeout = 1.5; }"));
    assert_non_null(strstr(first, "url = \"redis://:***@h:6380/2\";"));
    assert_non_null(
        strstr(first, "url = \"postgresql://app:***@db:5432/steller?sslmode=disable\";"));

    assert_int_equal(cfg_load(&b, write_conf(first), err, sizeof err), 0);
    unlink(path);
    char *second = printed(&b);
    assert_string_equal(first, second);
    assert_string_equal(b.redis_prefix, "p\"q\\r");
    assert_true(b.shutdown_timeout == 0.1);
    assert_true(b.heartbeat_interval == 0.3);
    assert_int_equal(b.max_job_bytes, 67108864);
    assert_int_equal(b.ntypes, 2);
    assert_true(b.types[1].backoff_factor == 0.001);
    free(first);
    free(second);
    cfg_free(&a);
    cfg_free(&b);
}

static void expect_database_url_printed(const char *url, const char *want)
{
    struct config c;
    char err[512], line[512];

    setenv("DATABASE_URL", url, 1);
    assert_int_equal(cfg_load(&c, NULL, err, sizeof err), 0);
    char *out = printed(&c);
    snprintf(line, sizeof line, "    url = \"%s\";\n", want);
    if (!strstr(out, line))
        fail_msg("want %s in:\n%s", line, out);
    free(out);
    cfg_free(&c);
    clean_env(NULL);
}

static void test_print_redacts_every_database_url_form(void **state)
{
    (void)state;
    expect_database_url_printed("postgresql://u:pw@h/db", "postgresql://u:***@h/db");
    expect_database_url_printed("postgres://h/db?user=u&password=pw",
                                "postgres://h/db?user=u&password=***");
    expect_database_url_printed("host=h password=pw dbname=d", "host=h password=*** dbname=d");
    expect_database_url_printed("host=h password = 'p w\\' x' dbname=d",
                                "host=h password = *** dbname=d");
    expect_database_url_printed("sslpassword=k password=pw", "sslpassword=*** password=***");
    expect_database_url_printed("host=h oops pw", "host=h ***");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_without_a_file),
        cmocka_unit_test(test_sample_conf_loads_and_states_the_defaults),
        cmocka_unit_test(test_sample_conf_names_every_key),
        cmocka_unit_test(test_values_from_the_file),
        cmocka_unit_test(test_integers_where_seconds_and_longs_are_expected),
        cmocka_unit_test(test_workers_zero_means_one_per_cpu),
        cmocka_unit_test(test_value_errors_name_file_line_and_key),
        cmocka_unit_test(test_unknown_keys_and_groups_are_errors),
        cmocka_unit_test(test_syntax_error_and_missing_file),
        cmocka_unit_test(test_secrets_never_appear_in_errors),
        cmocka_unit_test(test_environment_overrides_the_file),
        cmocka_unit_test(test_bad_environment_value_is_named_without_its_value),
        cmocka_unit_test(test_heartbeat_ttl_must_exceed_two_intervals),
        cmocka_unit_test(test_queues_list),
        cmocka_unit_test(test_queue_errors),
        cmocka_unit_test(test_types_list),
        cmocka_unit_test(test_email_transport_follows_the_environment),
        cmocka_unit_test(test_wallet_amounts_and_stages),
        cmocka_unit_test(test_schedule_list),
        cmocka_unit_test(test_type_errors),
        cmocka_unit_test(test_print_round_trips),
        cmocka_unit_test(test_print_redacts_every_database_url_form),
    };
    return cmocka_run_group_tests(tests, clean_env, NULL);
}
