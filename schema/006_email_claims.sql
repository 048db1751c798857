-- 006_email_claims: a lease on an "EmailDeliveries" row while one job sends it.
--
-- A job claims the row for its DedupKey by setting "ClaimedUntil" (now + the
-- email timeout and a margin) in the same statement that creates or re-opens the
-- row; another job of the same intent that arrives meanwhile (the job enqueued
-- twice) finds the lease and does not send. A lease left by a worker that died
-- expires, so the job's retry can claim it again. NULL: nobody holds the row
-- (rows the re-engagement sweep creates before enqueueing their emails).

ALTER TABLE "EmailDeliveries" ADD COLUMN IF NOT EXISTS "ClaimedUntil" timestamp with time zone NULL;

-- The sweep re-enqueues claims it made whose job never ran (Redis lost the push):
-- a small partial index, since nearly every row is 'sent'.
CREATE INDEX IF NOT EXISTS "IX_EmailDeliveries_Unclaimed"
    ON "EmailDeliveries" ("CreatedAt")
    WHERE "Status" = 'pending' AND "Attempts" = 0;
