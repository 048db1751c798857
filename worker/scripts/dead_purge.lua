-- dead_purge.lua: delete given records from the dead-letter list
-- (stellerctl dead purge --older-than).
--
-- KEYS[1]  P:dead
-- ARGV[1..] the records to delete, each exactly as read from P:dead
--
-- LREM searches from the tail, where the oldest records sit. Only records the
-- caller has read and judged are named; a record pushed since is untouched
-- unless it is byte for byte a named one, and then it is as old (failed_at is
-- in the bytes).
-- Returns how many were removed; a record already gone counts 0.
local n = 0
for i = 1, #ARGV do
    n = n + redis.call('LREM', KEYS[1], -1, ARGV[i])
end
return n
