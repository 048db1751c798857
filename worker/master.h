/*
 * master.h - the supervising process: forks the workers, restarts one that
 * dies, relays signals and reloads the configuration on SIGHUP.
 */
#ifndef STELLER_MASTER_H
#define STELLER_MASTER_H

#include "config.h"

/* Runs until the workers have stopped after SIGTERM/SIGINT, or after one of
 * them refused the Redis it found. Takes ownership of cfg (replaced on reload,
 * freed at the end). Returns the exit code: 0, 1 when workers had to be killed,
 * EX_CONFIG (78) when a worker refused Redis. */
int master_run(struct config *cfg);

#endif
