/*
 * registry.c - the one place that lists the job types.
 *
 * Each jobs/ file defines a const struct job_type with the type's defaults; the
 * table below names them. reg_init() copies them into the process's table and
 * applies the config's per-type overrides, so the engine reads one effective
 * definition per type and the built-in defaults stay untouched.
 */
#include "registry.h"

#include <stdlib.h>
#include <string.h>

static const struct job_type *const reg_builtin[] = {
    &sys_noop_type,
    &sys_fail_type,
    &sys_retry_in_type,
    &sys_sleep_type,
    &sys_crash_type,
    &request_log_type,
    &reengagement_sweep_type,
    &email_welcome_type,
    &email_activation_type,
    &email_reengagement_type,
    &wallet_seed_sandbox_type,
};

#define REG_NBUILTIN (sizeof(reg_builtin) / sizeof(reg_builtin[0]))

static struct job_type reg_table[REG_NBUILTIN];
static size_t reg_count;

const struct job_type *reg_builtin_find(const char *name)
{
    for (size_t i = 0; i < REG_NBUILTIN; i++)
        if (strcmp(reg_builtin[i]->name, name) == 0)
            return reg_builtin[i];
    return NULL;
}

static void reg_apply(struct job_type *t, const struct cfg_type *o)
{
    if (o->queue)
        t->queue = o->queue;
    if (o->max_attempts > 0)
        t->max_attempts = o->max_attempts;
    if (o->timeout > 0)
        t->timeout = o->timeout;
    if (o->backoff_base >= 0)
        t->backoff.base = o->backoff_base;
    if (o->backoff_factor >= 0)
        t->backoff.factor = o->backoff_factor;
    if (o->backoff_cap >= 0)
        t->backoff.cap = o->backoff_cap;
}

int reg_init(const struct config *c, char *err, size_t errlen)
{
    reg_count = 0;
    for (int i = 0; i < c->ntypes; i++) {
        if (!reg_builtin_find(c->types[i].name)) {
            snprintf(err, errlen, "types: unknown job type '%s'", c->types[i].name);
            return -1;
        }
    }
    for (size_t i = 0; i < REG_NBUILTIN; i++) {
        const struct cfg_type *o;
        if (reg_builtin[i]->debug_only && !c->debug_jobs)
            continue;
        reg_table[reg_count] = *reg_builtin[i];
        if ((o = cfg_find_type(c, reg_builtin[i]->name)))
            reg_apply(&reg_table[reg_count], o);
        reg_count++;
    }
    return 0;
}

void reg_free(void)
{
    for (size_t i = 0; i < reg_count; i++)
        if (reg_table[i].stop)
            reg_table[i].stop();
    reg_count = 0;
}

const struct job_type *reg_find(const char *name, size_t len)
{
    for (size_t i = 0; i < reg_count; i++) {
        const char *n = reg_table[i].name;
        if (strlen(n) == len && memcmp(n, name, len) == 0)
            return &reg_table[i];
    }
    return NULL;
}

const struct job_type *reg_at(size_t i)
{
    return i < reg_count ? &reg_table[i] : NULL;
}

size_t reg_index(const struct job_type *t)
{
    return (size_t)(t - reg_table);
}
