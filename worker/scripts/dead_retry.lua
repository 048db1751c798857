-- dead_retry.lua: give a dead job back to its queue (stellerctl dead retry).
--
-- KEYS[1]  P:dead
-- KEYS[2]  P:queue:<name>   the queue the envelope names, "default" when none
-- ARGV[1]  the dead record's bytes, exactly as read from P:dead
-- ARGV[2]  the envelope to queue: the record with attempt 0 and error, failed_at,
--          retry_at and crashes taken out, every other key kept in its place
--
-- LPUSH, as a producer does: the job joins the back of its queue.
-- Returns 1 if moved, 0 if the record was no longer in P:dead (retried or purged
-- by someone else, or trimmed by the cap meanwhile); nothing is pushed then.
-- Invariant: the job is in exactly one place; running this twice moves it once.
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then
    return 0
end
redis.call('LPUSH', KEYS[2], ARGV[2])
return 1
