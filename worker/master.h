/*
 * master.h - the supervising process: forks the workers, restarts one that
 * dies, relays signals and reloads the configuration on SIGHUP.
 */
#ifndef STELLER_MASTER_H
#define STELLER_MASTER_H

#include "config.h"

/* Runs until the workers have stopped after SIGTERM/SIGINT. Takes ownership of
 * cfg (replaced on reload, freed at the end). Returns the exit code. */
int master_run(struct config *cfg);

#endif
