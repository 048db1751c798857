/*
 * delivery.h - how a job leaves the processing list: ack, retry, dead, requeue.
 *
 * dlv_finish() classifies a handler's outcome once (ok, transient with attempts
 * left, or dead) and queues the move; dlv_flush() sends every queued move, acks
 * batched into one script call. Each move is one Lua script (worker/scripts/),
 * atomic and idempotent, so a move whose reply was lost is simply sent again.
 */
#ifndef STELLER_DELIVERY_H
#define STELLER_DELIVERY_H

#include <msgpack.h>

#include "job.h"
#include "worker.h"

enum dlv_move { DLV_NONE = 0, DLV_ACK, DLV_RETRY, DLV_DEAD, DLV_REQUEUE };

/* The outcome of a handler (or a timeout). msg may be NULL for JOB_OK. */
void dlv_finish(struct worker *w, struct job *job, enum job_result r, const char *msg);

/* job_retry_in(): due in delay_ms. spend_attempt = 1 is a JOB_RETRY at that time
 * (dead once attempts run out); 0 defers the job: back to P:retry with its attempt
 * count unchanged, not counted as failed, counted as "deferred" per type. */
void dlv_finish_in(struct worker *w, struct job *job, int64_t delay_ms, int spend_attempt,
                   const char *msg);

/* Dead without running: bytes that are no envelope (malformed=1 keeps the raw
 * bytes in the record) or a valid envelope nobody can run (unknown type). */
void dlv_reject(struct worker *w, struct job *job, const char *reason, int malformed);

/* Back to the right end of its queue, unchanged (shutdown). */
void dlv_requeue(struct worker *w, struct job *job);

/* Sends the queued moves; a no-op while Redis is down. */
void dlv_flush(struct worker *w);

/* 1 when no move is queued or waiting for Redis. */
int dlv_idle(const struct worker *w);

/* Moves for bytes held in any processing list (the reaper, orphan recovery).
 * guard (may be NULL) is a heartbeat key: the move happens only while it is absent,
 * so a reaper never takes jobs from a worker that turned out to be alive. */
int dlv_send_requeue(struct worker *w, const char *proc_key, const char *queue, const char *raw,
                     size_t len, const char *new_raw, size_t new_len, const char *guard,
                     redisCallbackFn *fn, void *privdata);
int dlv_send_dead(struct worker *w, const char *proc_key, const char *raw, size_t len,
                  const char *record, size_t record_len, int count_failed, const char *guard,
                  redisCallbackFn *fn, void *privdata);

/* Writes the dead record for a valid envelope into out: the envelope with attempt,
 * error and failed_at set. */
int dlv_dead_record(struct env *e, const char *error, int64_t now_ms, int bump_attempt,
                    msgpack_sbuffer *out);

#endif
