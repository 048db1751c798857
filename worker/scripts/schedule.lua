-- schedule.lua: enqueue the job of one schedule slot, once however many schedulers try.
--
-- KEYS[1]  P:schedule:<name>:<slot>  the slot's claim; holds the jid, expires after ARGV[3]
-- KEYS[2]  P:schedule:<name>:last    the latest slot enqueued, seconds since the epoch
-- KEYS[3]  P:queue:<queue>           where the job goes
-- ARGV[1]  the slot: seconds since the epoch of a minute the entry's cron matches
-- ARGV[2]  the jid of the envelope
-- ARGV[3]  seconds the claim lives
-- ARGV[4]  the envelope
-- ARGV[5]  "1" for a catch-up: the slot is past its grace window, and runs only
--          for an entry that has run before (a P:schedule:<name>:last exists)
--
-- Returns 1 enqueued; 0 this slot was enqueued already (by this scheduler or another);
-- -1 a later slot is recorded, so this one is stale; -2 a catch-up for an entry that
-- never ran: nothing was missed.
-- Invariant: a slot's envelope is pushed at most once: the claim is SET NX, and no
-- slot at or before the recorded last one is ever pushed, even after its claim
-- expired. Claim, last and push happen together or not at all.
local slot = tonumber(ARGV[1])
local last = tonumber(redis.call('GET', KEYS[2]) or '')
if last and last == slot then
    return 0
end
if last and last > slot then
    return -1
end
if ARGV[5] == '1' and not last then
    return -2
end
if not redis.call('SET', KEYS[1], ARGV[2], 'NX', 'EX', tonumber(ARGV[3])) then
    return 0
end
redis.call('SET', KEYS[2], ARGV[1])
redis.call('LPUSH', KEYS[3], ARGV[4])
return 1
