/*
 * scheduler.h - the cron scheduler (functions prefixed sched_; not "sched.h",
 * which would hide the C library's <sched.h> from every file built with worker/
 * on the include path): enqueues the jobs of the config's `schedule`
 * list at their slots, exactly once per slot however many hosts run it.
 *
 * It runs in the master process, on the master's loop, with its own Redis
 * connection (rconn.h). A slot is a UTC minute the entry's cron matches, named
 * by its epoch seconds. Every host's master tries every slot; the Lua script
 * worker/scripts/schedule.lua lets the first one through: it claims
 * P:schedule:<name>:<slot> with SET NX (the value is the jid), records
 * P:schedule:<name>:last and LPUSHes the envelope, atomically. The others get
 * "already enqueued" and log it at debug level.
 *
 * Timing: one ev_periodic in absolute wall-clock time wakes the scheduler at
 * the earliest next slot of all entries (so a clock step or NTP slew does not
 * shift slots); sched_tick() does the work. A slot that cannot be sent (Redis
 * down, or an error reply) stays pending and is sent when Redis is back, as
 * long as it is at most SCHED_GRACE_S late; later than that it is skipped with
 * a warning, unless the entry has catch_up. Only one slot per entry is ever
 * pending: a newer slot replaces an older one that never got through.
 *
 * At start, and for an entry that a reload adds or whose cron or catch_up it
 * changes, the latest slot at or before now is tried once if it is at most
 * SCHED_GRACE_S old, or at any age with catch_up. Such a slot is enqueued only
 * for an entry that has run before (P:schedule:<name>:last exists and is older):
 * a restart across a slot does not lose it, while a new entry does not fire a
 * slot from before it existed.
 *
 * Ownership: sched_new() copies what it needs from the config; the config may
 * be freed afterwards. sched_free() closes the connection; replies still
 * pending are dropped (the script either ran in Redis or not, and the next
 * scheduler to try the slot finds out which).
 */
#ifndef STELLER_SCHEDULER_H
#define STELLER_SCHEDULER_H

#include <ev.h>
#include <stdint.h>

#include "config.h"
#include "steller/jobs.h"

#define SCHED_GRACE_S 300       /* how late a slot may still be enqueued */
#define SCHED_CLAIM_TTL_S 86400 /* how long P:schedule:<name>:<slot> lives */
#define SCHED_RETRY_S 5         /* after an error reply, try the slot again this much later */

struct sched;

/* The current time in seconds since the epoch. */
typedef int64_t sched_clock_fn(void *ud);

/*
 * Starts a scheduler for cfg->schedule on loop. clock NULL: the wall clock, and
 * the scheduler arms its own timer. clock non-NULL (tests): that clock, no
 * timer: the caller calls sched_tick() when its clock moves. Either way the
 * scheduler ticks by itself when Redis comes up and when a reply arrives.
 * Returns NULL only when out of memory or cfg's Redis URL is bad (logged).
 */
struct sched *sched_new(struct ev_loop *loop, const struct config *cfg, sched_clock_fn *clock,
                        void *clock_ud);

/* Takes the entries (and Redis URL and prefix) of a reloaded config; entries
 * whose name, cron and catch_up are unchanged keep their state. Returns 0, or
 * -1 when out of memory (the old entries stay). */
int sched_reload(struct sched *s, const struct config *cfg);

/* Does what is due at now (seconds since the epoch): notes the slots reached,
 * skips those too late, sends the pending ones if Redis is up, and re-arms the
 * timer. Never blocks. */
void sched_tick(struct sched *s, int64_t now);

/* 1 when Redis is up and the script loaded: a tick can send. */
int sched_ready(const struct sched *s);

/* Script calls sent and not yet answered. */
int sched_inflight(const struct sched *s);

/* What one entry did in this master since it started; an entry keeps its
 * figures across a reload while its name stays. */
struct sched_stat {
    const char *name;      /* valid until the next reload */
    int64_t next;          /* the next slot, seconds since the epoch; -1: none (disabled:
                              its job cannot be built) */
    long long enqueued;    /* slots this master enqueued */
    long long elsewhere;   /* slots another master had enqueued first */
    long long passed;      /* slots the script declined as past: a later one ran, or
                              a late slot of an entry that never ran (by design) */
    long long missed;      /* slots this master saw come and gave up: too late with
                              catch_up off, or replaced by a later slot before Redis
                              took them (not the past slot looked at on start) */
    long long errors;      /* Redis refused the script (the slot is tried again) */
};

/* Copies the figures of up to max entries to out (NULL only with max 0); returns
 * the number of entries. A reply that comes back after a reload changed its entry
 * is not counted; a resend after a lost reply that had enqueued counts as
 * elsewhere. */
int sched_stats(const struct sched *s, struct sched_stat *out, int max);

/* In a child after fork(): closes the inherited Redis socket, touching nothing else. */
void sched_after_fork(struct sched *s);

/* NULL is fine. */
void sched_free(struct sched *s);

/*
 * The queue a job of type goes to when its producer names none: the config's
 * queue for the type (cfg may be NULL), else the type's default from
 * stj_default_queue(), the map of docs/PROTOCOL.md that the registry's
 * built-in types follow. stellerctl enqueue and the scheduler both use it.
 * Inline so that stellerctl, which does not link the engine, shares it.
 */
static inline const char *sched_type_queue(const struct config *cfg, const char *type)
{
    const struct cfg_type *t = cfg ? cfg_find_type(cfg, type) : NULL;

    return t && t->queue && t->queue[0] ? t->queue : stj_default_queue(type);
}

/* An entry's queue: its own, else sched_type_queue(). The string belongs to cfg
 * or is static. */
static inline const char *sched_queue(const struct config *cfg, const struct cfg_schedule *e)
{
    return e->queue && e->queue[0] ? e->queue : sched_type_queue(cfg, e->type);
}

#endif
