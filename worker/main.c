/*
 * main.c - steller-worker's command line: load and check the config, then hand
 * over to the master. Stays in the foreground; systemd supervises.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "config.h"
#include "log.h"
#include "master.h"
#include "redisurl.h"
#include "registry.h"
#include "tmpl.h"

static void usage(FILE *out)
{
    fprintf(out, "usage: steller-worker [-c FILE] [--check-config] [--version]\n"
                 "  -c, --config FILE   libconfig file (default: built-in defaults + env)\n"
                 "      --check-config  validate, print the effective config "
                 "(secrets redacted), exit\n"
                 "      --version       print the version and exit\n");
}

/* Whether the file itself holds a secret: a value the environment overrides
 * (non-empty, as config.c reads it) came from there, not from the file. */
static int file_holds_secret(const struct config *cfg)
{
    const char *env;
    struct rurl u;
    char err[128];
    env = getenv("DATABASE_URL");
    if ((!env || !*env) && cfg->database_url && cfg->database_url[0])
        return 1;
    env = getenv("REDIS_URL");
    return (!env || !*env) && cfg->redis_url &&
           rurl_parse(cfg->redis_url, &u, err, sizeof(err)) == 0 && u.password[0];
}

/* Names the file and the remedy, never the secret. */
static void warn_if_exposed(const struct config *cfg)
{
    struct stat st;
    char remedy[400], q1[300], q2[500];
    if (!cfg->path || stat(cfg->path, &st) != 0 || !(st.st_mode & S_IROTH) ||
        !file_holds_secret(cfg))
        return;
    snprintf(remedy, sizeof(remedy), "chmod 640 %s (group of the service user)", cfg->path);
    LOG(LOG_WARN, "config file holds a secret and is readable by others", "file=%s remedy=%s",
        log_q(q1, sizeof(q1), cfg->path, strlen(cfg->path)),
        log_q(q2, sizeof(q2), remedy, strlen(remedy)));
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check-config", no_argument, NULL, 'k'},
        {"version", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *path = NULL;
    int check = 0, opt, level;
    char err[512];
    struct config *cfg;

    while ((opt = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (opt) {
        case 'c': path = optarg; break;
        case 'k': check = 1; break;
        case 'v': printf("steller-worker %s\n", STELLER_VERSION); return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }
    if (!(cfg = calloc(1, sizeof(*cfg))))
        return 1;
    if (cfg_load(cfg, path, err, sizeof(err)) != 0 || reg_init(cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "steller-worker: %s\n", err);
        cfg_free(cfg);
        free(cfg);
        return 1;
    }
    reg_free();
    /* The templates are part of the config: a bad one is refused the same way. */
    if (tmpl_check(cfg->email_templates, err, sizeof(err)) != 0) {
        fprintf(stderr, "steller-worker: email template: %s\n", err);
        cfg_free(cfg);
        free(cfg);
        return 1;
    }
    if (check) {
        cfg_print(cfg, stdout);
        cfg_free(cfg);
        free(cfg);
        return 0;
    }
    if ((level = log_level_parse(cfg->log_level)) >= 0)
        log_threshold = (enum log_level)level;
    warn_if_exposed(cfg);
    return master_run(cfg);
}
