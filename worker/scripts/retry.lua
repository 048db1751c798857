-- retry.lua: move a failed or deferred job from the processing list to the retry set.
--
-- KEYS[1]  P:processing:<wid>
-- KEYS[2]  P:retry                 score = due time in ms
-- KEYS[3]  P:stats:failed
-- KEYS[4]  P:stats:failed:<YYYY-MM-DD>
-- ARGV[1]  the job's bytes as fetched
-- ARGV[2]  the rewritten envelope (a failure: attempt + 1, error, failed_at, retry_at;
--          a deferral: error and retry_at, attempt unchanged)
-- ARGV[3]  due time in ms
-- ARGV[4]  seconds the per-day counter lives
-- ARGV[5]  "1": a failed execution, counted in the failed counters; "0": a deferral
--          (job_retry_in without spending an attempt), not counted. Absent means "1".
--
-- Returns 1 if moved, 0 if the job was no longer ours (a reaper requeued it).
-- Invariant: the job is in exactly one place; running this twice moves it once
-- (and counts it once: the counters move only with the job).
if redis.call('LREM', KEYS[1], -1, ARGV[1]) == 0 then
    return 0
end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
if ARGV[5] ~= '0' then
    redis.call('INCR', KEYS[3])
    redis.call('INCR', KEYS[4])
    redis.call('EXPIRE', KEYS[4], ARGV[4])
end
return 1
