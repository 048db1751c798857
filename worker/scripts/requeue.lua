-- requeue.lua: give a job held in a processing list back to its queue.
--
-- Used at shutdown (jobs that did not finish in time), by the reaper (jobs of a
-- worker that died) and after a reconnect (jobs a lost fetch reply moved).
--
-- KEYS[1]  P:processing:<wid>   the list holding the job
-- KEYS[2]  P:queue:<name>       its queue
-- KEYS[3]  optional P:worker:<wid>: the reaper passes the heartbeat key, and
--          nothing moves while it exists (the worker came back to life)
-- ARGV[1]  the job's bytes in the processing list
-- ARGV[2]  the bytes to queue (the same, or with "crashes" raised by the reaper)
--
-- RPUSH puts it at the right end, where workers take next: it already waited once.
-- Returns 1 if moved, 0 if someone else moved it first.
-- Invariant: the job is in exactly one place, however many reapers race.
if KEYS[3] and redis.call('EXISTS', KEYS[3]) == 1 then
    return 0
end
if redis.call('LREM', KEYS[1], -1, ARGV[1]) == 0 then
    return 0
end
redis.call('RPUSH', KEYS[2], ARGV[2])
return 1
