-- retry_now.lua: run a job waiting in the retry set now (stellerctl retry now).
--
-- KEYS[1]  P:retry
-- KEYS[2]  P:queue:<name>   the queue the envelope names, "default" when none
-- ARGV[1]  the member's bytes, exactly as read from P:retry
--
-- The envelope moves unchanged and to the same end of the queue as promote.lua
-- moves it when it comes due: this only makes it due now.
-- Returns 1 if moved, 0 if the member was gone (a promoter moved it first).
-- Invariant: the job is in exactly one place, however the promoters race.
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then
    return 0
end
redis.call('LPUSH', KEYS[2], ARGV[1])
return 1
