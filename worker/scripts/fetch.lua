-- fetch.lua: reliable fetch of up to N jobs in one round trip.
--
-- KEYS[1]  P:processing:<wid>   the worker's in-flight list
-- KEYS[2]  P:paused             set of paused queue names
-- ARGV[1]  N, how many jobs the worker has free slots for (at most 1000)
-- ARGV[2]  "P:queue:", the prefix of queue keys
-- ARGV[3..] queue names in the order this fetch should drain them
--
-- Returns { first_unpaused_queue or "", q1, job1, q2, job2, ... }: each job with
-- the queue it came from, oldest first. The first element tells an idle worker
-- which queue to block on.
--
-- Invariant: a job is in exactly one place. RPOP and LPUSH run in one script, so a
-- job leaves its queue only by entering the processing list.
local want = tonumber(ARGV[1])
local out = { "" }
for i = 3, #ARGV do
    local q = ARGV[i]
    if redis.call('SISMEMBER', KEYS[2], q) == 0 then
        if out[1] == "" then out[1] = q end
        if want > 0 then
            -- pcall: a queue key of the wrong type must not abort the script after
            -- earlier queues were already moved (Redis does not roll back)
            local items = redis.pcall('RPOP', ARGV[2] .. q, want)
            if type(items) == 'table' and not items.err and #items > 0 then
                redis.call('LPUSH', KEYS[1], unpack(items))
                for _, job in ipairs(items) do
                    out[#out + 1] = q
                    out[#out + 1] = job
                end
                want = want - #items
            end
        end
    end
end
return out
