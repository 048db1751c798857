/*
 * upkeep.h - a worker's background duties on its `cmd` connection:
 * the heartbeat (P:worker:<wid> with a TTL, and membership of P:workers), the
 * promoter (due jobs from P:retry and P:scheduled to their queues), the reaper
 * (jobs of workers whose heartbeat expired go back to their queues, or to the
 * dead list once they crashed poison_limit workers), and recovery of jobs a
 * lost fetch reply left in our own processing list.
 */
#ifndef STELLER_UPKEEP_H
#define STELLER_UPKEEP_H

#include "worker.h"

/* pred_wid (may be NULL): a predecessor to reap as soon as Redis answers. */
int upkeep_start(struct worker *w, const char *pred_wid, int pred_crashed);
void upkeep_free(struct worker *w);

/* The cmd connection is up (again): check the Redis (rcheck.h), then beat,
 * reap the predecessor the first time, recover orphans after a reconnect, and
 * let fetching start (w->redis_ok). A Redis that fails the check shuts the
 * worker down with exit code EX_CONFIG (78). */
void upkeep_on_up(struct worker *w);

/* Requeues what our processing list holds that no held job accounts for, when
 * w->want_scan asks for it (after a reconnect or a failed fetch). */
void upkeep_scan_orphans(struct worker *w);

/* Shutdown's last step: requeue whatever is left in our processing list,
 * leave P:workers, then stop the loop. */
void upkeep_finish(struct worker *w);

#endif
