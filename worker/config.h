/*
 * config.h - the daemon's configuration (SPEC §7), loaded from a libconfig file.
 *
 * config.c is table-driven, as Redis's config.c is: one table lists every key
 * with its type, default, bounds, environment override and whether it is a
 * secret. Loading, validation, --check-config output, redaction and the
 * documented sample conf/steller-worker.conf all follow that table.
 *
 * Ownership: cfg_load() fills a struct config whose strings and arrays belong
 * to it until cfg_free(). The struct is plain data: a worker process gets its
 * copy through fork() and never shares it back.
 */
#ifndef STELLER_CONFIG_H
#define STELLER_CONFIG_H

#include <stdio.h>

struct cfg_queue {
    char *name;
    int weight; /* used when fetch_order = "weighted"; >= 1 */
};

/* Per job type overrides; a field left unset in the file is < 0 (or NULL). */
struct cfg_type {
    char *name;
    char *queue;
    int max_attempts;
    double timeout;     /* seconds */
    double backoff_base, backoff_factor, backoff_cap; /* seconds */
};

enum cfg_order { CFG_ORDER_STRICT = 0, CFG_ORDER_WEIGHTED = 1 };

/* A scheduled job (SPEC §5 cron scheduler): one element of the "schedule" list. */
struct cfg_schedule {
    char *name;     /* unique; part of the Redis key of each slot */
    char *cron;     /* five fields, UTC; checked with cron_parse() at load */
    char *type;     /* job type enqueued */
    char *args;     /* JSON object text, default "{}" */
    char *queue;    /* NULL: the type's queue */
    int catch_up;   /* bool: after downtime, run a missed slot once (default: skip it) */
};

/* email.transport; CFG_MAIL_AUTO is resolved at load from the environment (SPEC §5). */
enum cfg_mail_transport { CFG_MAIL_AUTO = 0, CFG_MAIL_SENDGRID, CFG_MAIL_SMTP, CFG_MAIL_LOG };
enum cfg_starttls { CFG_TLS_REQUIRED = 0, CFG_TLS_OPTIONAL, CFG_TLS_OFF };

#define CFG_MAX_STAGES 16
#define CFG_MAX_SWEEP_LANES 16 /* reengagement.parallel */

/* reengagement.stages: days after signup, strictly increasing. */
struct cfg_days {
    int n;
    int v[CFG_MAX_STAGES];
};

struct config {
    char *path; /* NULL when no file was given */

    /* pinned top-level keys */
    int workers;             /* default: number of CPUs */
    int concurrency;         /* default 32 */
    int debug_jobs;          /* bool, default false */
    double shutdown_timeout; /* seconds, default 25 */
    long max_job_bytes;      /* default 262144 */
    int poison_limit;        /* default 3 */

    char *log_level;         /* "info" */

    /* redis group */
    char *redis_url;         /* REDIS_URL, default redis://127.0.0.1:6379/0; secret inside */
    char *redis_prefix;      /* default "steller" */
    int redis_allow_eviction; /* bool, default false: run against an evicting maxmemory-policy */

    char *database_url;      /* DATABASE_URL; secret inside; empty: no PostgreSQL */
    int database_pool_size;  /* connections per worker process, default 2 */
    double database_statement_timeout; /* seconds, default 60 */

    /* request_log group: the batched writer */
    int request_log_batch_max;     /* rows per COPY, default 1000 */
    int request_log_batch_wait_ms; /* how long a partial batch waits, default 50 */
    char *http_listen;       /* default 127.0.0.1:9460 */
    long dead_max_entries;   /* default 100000 */

    /* fetch group */
    enum cfg_order fetch_order;   /* fetch.order: "strict" (default) or "weighted" */
    int fetch_idle_ms;            /* fetch.idle_ms: longest wait for a job in a lower-priority
                                     queue while idle, default 100 */
    struct cfg_queue *queues;     /* queues list; default critical, default, email, request_log */
    int nqueues;

    /* timing (group "engine"): heartbeat_interval, heartbeat_ttl, promote_interval,
       reaper_interval in seconds */
    double heartbeat_interval; /* 2 */
    double heartbeat_ttl;      /* 10 */
    double promote_interval;   /* 1 */
    double reaper_interval;    /* 5 */

    struct cfg_type *types;    /* "types" list of per-type overrides */
    int ntypes;

    /* email group (keys pinned by the email issue) */
    enum cfg_mail_transport email_transport; /* never CFG_MAIL_AUTO after cfg_load() */
    char *email_from;             /* EMAIL_FROM; "Name <addr>" or "addr" */
    char *email_support_address;  /* the {support_address} placeholder */
    char *email_activation_url;   /* the activation token is appended, URL-encoded */
    char *email_templates;        /* directory; "" = the installed templates */
    double email_timeout;         /* seconds one send may take */
    double email_rate_per_second; /* for the whole daemon, split over its workers; 0: none */
    int email_breaker_failures;   /* transient failures in a row that open the breaker */
    double email_breaker_cooloff; /* seconds the breaker stays open (plus jitter) */
    char *email_sendgrid_base_url;
    char *email_sendgrid_api_key; /* SENDGRID_API_KEY; secret */
    char *email_smtp_server;      /* EMAIL_SMTP_SERVER: host, or smtp:// / smtps:// URL */
    int email_smtp_port;          /* EMAIL_SMTP_PORT */
    char *email_smtp_user;        /* EMAIL_SMTP_USER */
    char *email_smtp_password;    /* EMAIL_SMTP_PASSWORD; secret */
    enum cfg_starttls email_smtp_starttls;
    char *email_smtp_ca_file;     /* extra CA bundle; "" = the system's */

    /* wallet group: amounts are decimal text, checked with dec_check() */
    char *wallet_default_seed_amount;
    char *wallet_max_seed_amount;

    /* reengagement group */
    struct cfg_days reengagement_stages; /* default [3, 7, 14] */
    int reengagement_quiet_days;         /* no API request within this many days */
    int reengagement_max_age_days;       /* partners older than this are left alone */
    int reengagement_batch_size;         /* partners read per statement */
    int reengagement_parallel;           /* statements in flight per stage */

    struct cfg_schedule *schedule;       /* "schedule" list */
    int nschedule;
};

/*
 * Loads defaults, then the file at path (NULL: none), then the environment.
 * c need not be initialised; load a reload into a new struct. On error returns -1
 * with "FILE:LINE: key 'x': why" (or "environment VAR: why") in err, which never
 * holds a secret, and leaves c empty: nothing to free, though cfg_free() is harmless.
 */
int cfg_load(struct config *c, const char *path, char *err, size_t errlen);
void cfg_free(struct config *c);

/* Prints the effective configuration as a valid libconfig file, secrets redacted. */
void cfg_print(const struct config *c, FILE *out);

/* "auto", "sendgrid", "smtp" or "log": the name of an email.transport value. */
const char *cfg_mail_transport_name(enum cfg_mail_transport t);

/* The override for a job type, or NULL. */
const struct cfg_type *cfg_find_type(const struct config *c, const char *name);

#endif
