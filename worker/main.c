/*
 * main.c - steller-worker's command line: load and check the config, then hand
 * over to the master. Stays in the foreground; systemd supervises.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "master.h"
#include "registry.h"

static void usage(FILE *out)
{
    fprintf(out, "usage: steller-worker [-c FILE] [--check-config] [--version]\n"
                 "  -c, --config FILE   libconfig file (default: built-in defaults + env)\n"
                 "      --check-config  validate, print the effective config "
                 "(secrets redacted), exit\n"
                 "      --version       print the version and exit\n");
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
    if (check) {
        cfg_print(cfg, stdout);
        cfg_free(cfg);
        free(cfg);
        return 0;
    }
    if ((level = log_level_parse(cfg->log_level)) >= 0)
        log_threshold = (enum log_level)level;
    return master_run(cfg);
}
