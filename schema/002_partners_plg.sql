-- 002_partners_plg: the product-led-growth columns on "Partners" (SPEC §6):
-- where a self-service partner is in onboarding, how it signed up, its referral
-- code and who referred it.
--
-- ADD COLUMN with a constant default does not rewrite the table (PostgreSQL 11+),
-- so existing partners get 'signed_up' at once. Constraints are added only if
-- missing: ALTER TABLE has no ADD CONSTRAINT IF NOT EXISTS.

ALTER TABLE "Partners"
    ADD COLUMN IF NOT EXISTS "OnboardingState" text NOT NULL DEFAULT 'signed_up',
    ADD COLUMN IF NOT EXISTS "SignupSource" text NULL,
    ADD COLUMN IF NOT EXISTS "ReferralCode" text NULL,
    ADD COLUMN IF NOT EXISTS "ReferredByPartnerId" integer NULL;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conrelid = '"Partners"'::regclass
                     AND conname = 'CK_Partners_OnboardingState') THEN
        ALTER TABLE "Partners" ADD CONSTRAINT "CK_Partners_OnboardingState"
            CHECK ("OnboardingState" IN ('signed_up', 'email_verified', 'sandbox_active',
                                         'activated'));
    END IF;
    -- A referrer that is deleted leaves its referrals without one, not deleted.
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conrelid = '"Partners"'::regclass
                     AND conname = 'FK_Partners_Partners_ReferredByPartnerId') THEN
        ALTER TABLE "Partners" ADD CONSTRAINT "FK_Partners_Partners_ReferredByPartnerId"
            FOREIGN KEY ("ReferredByPartnerId") REFERENCES "Partners" ("Id") ON DELETE SET NULL;
    END IF;
END
$$;

-- Unique referral codes; NULLs (no code yet) do not collide.
CREATE UNIQUE INDEX IF NOT EXISTS "IX_Partners_ReferralCode" ON "Partners" ("ReferralCode");

-- "Who did X refer", and the ON DELETE SET NULL above without a scan of Partners.
CREATE INDEX IF NOT EXISTS "IX_Partners_ReferredByPartnerId" ON "Partners" ("ReferredByPartnerId");

-- The re-engagement sweep: active partners not yet activated, by signup time
-- ("CreatedAt" between two stage boundaries). Partial, so it holds only the
-- partners still in onboarding, which are few beside the activated ones. The
-- sweep's WHERE must contain both conditions for the planner to use it.
CREATE INDEX IF NOT EXISTS "IX_Partners_CreatedAt_Onboarding" ON "Partners" ("CreatedAt")
    WHERE "IsActive" AND "OnboardingState" <> 'activated';
