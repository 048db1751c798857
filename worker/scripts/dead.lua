-- dead.lua: move a job from the processing list to the dead-letter list.
--
-- KEYS[1]  P:processing:<wid>
-- KEYS[2]  P:dead                  newest first
-- KEYS[3]  P:stats:dead
-- KEYS[4]  P:stats:dead:<YYYY-MM-DD>
-- KEYS[5]  P:stats:dead_trimmed    entries dropped by the cap, so none vanish unseen
-- KEYS[6]  P:stats:failed
-- KEYS[7]  P:stats:failed:<YYYY-MM-DD>
-- KEYS[8]  optional P:worker:<wid>: the reaper's guard, as in requeue.lua
-- ARGV[1]  the job's bytes as fetched
-- ARGV[2]  the dead-letter record (the envelope with error and failed_at, or the
--          malformed-record map that keeps the raw bytes)
-- ARGV[3]  dead.max_entries
-- ARGV[4]  seconds the per-day counters live
-- ARGV[5]  "1" if the job ran and failed (counts as failed too), "0" if never run
--
-- Returns 1 if moved, 0 if the job was no longer ours.
-- Invariant: the job is in exactly one place; running this twice moves it once.
if KEYS[8] and redis.call('EXISTS', KEYS[8]) == 1 then
    return 0
end
if redis.call('LREM', KEYS[1], -1, ARGV[1]) == 0 then
    return 0
end
redis.call('LPUSH', KEYS[2], ARGV[2])
local max = tonumber(ARGV[3])
local len = redis.call('LLEN', KEYS[2])
if len > max then
    redis.call('LTRIM', KEYS[2], 0, max - 1)
    redis.call('INCRBY', KEYS[5], len - max)
end
redis.call('INCR', KEYS[3])
redis.call('INCR', KEYS[4])
redis.call('EXPIRE', KEYS[4], ARGV[4])
if ARGV[5] == "1" then
    redis.call('INCR', KEYS[6])
    redis.call('INCR', KEYS[7])
    redis.call('EXPIRE', KEYS[7], ARGV[4])
end
return 1
