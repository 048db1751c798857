/*
 * sweep.h - `stellerctl sweep`: runs a re-engagement sweep now by enqueueing a
 * reengagement.sweep job (jobs/sweep.c holds the one implementation).
 */
#ifndef STELLER_CTL_SWEEP_H
#define STELLER_CTL_SWEEP_H

#include <stdint.h>

#include "ops.h"

int cmd_sweep(struct ctl *ctl, int argc, char **argv);
extern const char sweep_help[];

/* TIME of --as-of: epoch ms (digits only) or ISO-8601 UTC ("2026-03-01",
 * "2026-03-01T09:00", "2026-03-01T09:00:00.250Z", "+00:00" for Z). 0 or -1. */
int sweep_parse_time(const char *s, int64_t *ms);

#endif
