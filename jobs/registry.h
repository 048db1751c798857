/*
 * registry.h - the one list of job types. Adding a type is one file in jobs/
 * and one line in registry.c.
 *
 * reg_init() builds the process's table from the built-in definitions and the
 * config's per-type overrides; sys.fail, sys.retry_in, sys.sleep and sys.crash are included
 * only with debug_jobs = true. The table lives until reg_free().
 */
#ifndef STELLER_REGISTRY_H
#define STELLER_REGISTRY_H

#include <stddef.h>

#include "config.h"
#include "job.h"

int reg_init(const struct config *c, char *err, size_t errlen);
/* Calls every type's stop hook, then forgets the table. */
void reg_free(void);

/* The type named by the len bytes at name, or NULL. */
const struct job_type *reg_find(const char *name, size_t len);

/* The built-in definition named name, whether or not reg_init() ran (the master
 * never runs one, yet checks the schedule's types), or NULL. */
const struct job_type *reg_builtin_find(const char *name);

/* Iterates: returns the i-th registered type or NULL past the end. */
const struct job_type *reg_at(size_t i);

/* The position in the table of a type returned by reg_find() or reg_at(). */
size_t reg_index(const struct job_type *t);

/* Built-in definitions, one per jobs/ file. */
extern const struct job_type sys_noop_type, sys_fail_type, sys_sleep_type, sys_crash_type;
extern const struct job_type sys_retry_in_type;
extern const struct job_type request_log_type;
extern const struct job_type reengagement_sweep_type;
extern const struct job_type email_welcome_type, email_activation_type, email_reengagement_type;
extern const struct job_type wallet_seed_sandbox_type;

#endif
