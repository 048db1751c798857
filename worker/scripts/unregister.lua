-- unregister.lua: forget a worker once its processing list is empty.
--
-- KEYS[1]  P:processing:<wid>
-- KEYS[2]  P:workers
-- KEYS[3]  P:worker:<wid>
-- ARGV[1]  wid
-- ARGV[2]  "guard" from the reaper: leave a worker whose heartbeat came back alone
--
-- Returns 1 if the worker was removed, 0 if jobs remain (reap again later).
-- Invariant: a wid leaves P:workers only when no job is left under it, so the
-- reaper can always find the jobs of a dead worker.
if ARGV[2] == 'guard' and redis.call('EXISTS', KEYS[3]) == 1 then
    return 0
end
if redis.call('LLEN', KEYS[1]) > 0 then
    return 0
end
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[3])
return 1
