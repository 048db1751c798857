-- ack.lua: acknowledge a batch of finished jobs.
--
-- KEYS[1]  P:processing:<wid>
-- KEYS[2]  P:stats:processed
-- KEYS[3]  P:stats:processed:<YYYY-MM-DD>
-- ARGV[1]  seconds the per-day counter lives
-- ARGV[2..] the exact envelope bytes of each finished job
--
-- Returns how many were still in the processing list. A job that is gone was
-- reaped and requeued (its worker looked dead); it will be counted where it runs.
-- LREM scans from the tail, where the oldest jobs sit, so in-order acks are O(1).
local n = 0
for i = 2, #ARGV do
    n = n + redis.call('LREM', KEYS[1], -1, ARGV[i])
end
if n > 0 then
    redis.call('INCRBY', KEYS[2], n)
    redis.call('INCRBY', KEYS[3], n)
    redis.call('EXPIRE', KEYS[3], ARGV[1])
end
return n
