-- promote.lua: move due jobs from a ZSET (P:retry or P:scheduled) to their queues.
--
-- KEYS[1]  P:retry or P:scheduled   score = due time in ms
-- ARGV[1]  now in ms
-- ARGV[2]  the most jobs to move in this call
-- ARGV[3]  "P:queue:", the prefix of queue keys
-- ARGV[4]  queue for an envelope that names none (or cannot be read)
--
-- The envelope's "queue" key says where it goes; cmsgpack reads it. Bytes that
-- are not an envelope still move, so that a worker dead-letters them with a
-- reason instead of them sitting here forever.
-- Returns how many moved; the caller calls again at once when it hit the limit.
-- Safe from many processes at once: the script is atomic, so each job moves once.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, job in ipairs(due) do
    local q = ARGV[4]
    local ok, env = pcall(cmsgpack.unpack, job)
    if ok and type(env) == 'table' and type(env.queue) == 'string' and #env.queue > 0 then
        q = env.queue
    end
    redis.call('ZREM', KEYS[1], job)
    redis.call('LPUSH', ARGV[3] .. q, job)
end
return #due
