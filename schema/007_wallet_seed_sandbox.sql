-- 007_wallet_seed_sandbox: steller_wallet_seed_sandbox(), the one statement the
-- wallet.seed_sandbox job runs (jobs/wallet.c): credit fake USD to a partner's
-- sandbox wallet, creating the wallet if missing, once per reference.
--
-- Why a function: two seeds of one partner that both find no sandbox wallet
-- would both create one. "Wallets" has no unique index that could arbitrate
-- (production's table is EF's; a unique index there could fail on existing rows
-- or break the API's own wallet creation), so seeds of one partner are
-- serialized with pg_advisory_xact_lock. The lookup after the lock must then see
-- what the previous holder committed, which in READ COMMITTED needs a snapshot
-- taken after the lock: a later statement, not a CTE of the statement that
-- takes it. PL/pgSQL gives each statement its own snapshot, all in the caller's
-- one transaction, and the job still sends its values as parameters in one
-- round trip.
--
-- CREATE OR REPLACE: idempotent, and safe on production (no table is locked or
-- changed). Never edit this file once applied anywhere: a change is a new
-- migration with CREATE OR REPLACE.

CREATE OR REPLACE FUNCTION steller_wallet_seed_sandbox(
    p_partner_id integer, p_amount numeric, p_reference_id text, p_description text)
RETURNS TABLE (outcome text, wallet_id uuid, balance_after numeric, wallet_created boolean)
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    v_type integer;
    v_currency integer;
    v_wallet uuid;
    v_balance numeric;
    v_created boolean := false;
    v_now timestamptz := now();
BEGIN
    -- The worker checks amounts too; this keeps any other caller honest.
    IF p_amount IS NULL OR p_amount <= 0 THEN
        RAISE EXCEPTION 'a sandbox credit must be more than zero' USING ERRCODE = '22023';
    END IF;
    IF p_amount <> round(p_amount, 4) THEN  -- numeric(18,4) would round it silently
        RAISE EXCEPTION 'a sandbox credit has at most 4 decimals' USING ERRCODE = '22023';
    END IF;
    IF p_reference_id IS NULL OR p_reference_id = '' THEN
        RAISE EXCEPTION 'a sandbox credit needs a reference' USING ERRCODE = '22023';
    END IF;

    -- Two-key form, class 0x57414C54 ('WALT'): a space of its own, apart from the
    -- one-key locks (stellerctl migrate's among them). Held until commit.
    PERFORM pg_advisory_xact_lock(1463897172, p_partner_id);

    PERFORM 1 FROM "Partners" WHERE "Id" = p_partner_id;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'no_partner'::text, NULL::uuid, NULL::numeric, false;
        RETURN;
    END IF;
    SELECT "Id" INTO v_currency FROM "Currencies" WHERE "Code" = 'USD';
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'no_usd'::text, NULL::uuid, NULL::numeric, false;
        RETURN;
    END IF;

    -- Only a wallet whose type is a sandbox type: a live wallet is never touched.
    SELECT w."Id" INTO v_wallet
    FROM "Wallets" w JOIN "WalletTypes" t ON t."Id" = w."WalletTypeId"
    WHERE w."PartnerId" = p_partner_id AND w."CurrencyId" = v_currency AND t."IsSandbox"
    ORDER BY w."CreatedAt", w."Id"
    LIMIT 1;

    IF NOT FOUND THEN
        SELECT "Id" INTO v_type FROM "WalletTypes" WHERE "IsSandbox" ORDER BY "Id" LIMIT 1;
        IF NOT FOUND THEN
            RETURN QUERY SELECT 'no_sandbox_type'::text, NULL::uuid, NULL::numeric, false;
            RETURN;
        END IF;
        -- A new wallet starts with the credit: no UPDATE of a row just inserted.
        INSERT INTO "Wallets" ("Id", "PartnerId", "AvailableBalance", "CurrencyId",
                               "WalletTypeId", "CreatedAt", "UpdatedAt")
        VALUES (gen_random_uuid(), p_partner_id, p_amount, v_currency, v_type, v_now, v_now)
        RETURNING "Id", "AvailableBalance" INTO v_wallet, v_balance;
        v_created := true;
    ELSIF EXISTS (SELECT 1 FROM "WalletHistories"
                  WHERE "WalletId" = v_wallet AND "ReferenceId" = p_reference_id) THEN
        -- A replay: credited before. Success, and nothing changes.
        RETURN QUERY SELECT 'duplicate'::text, v_wallet, NULL::numeric, false;
        RETURN;
    END IF;

    IF NOT v_created THEN
        -- One atomic UPDATE: the API may move the same balance meanwhile.
        UPDATE "Wallets" SET "AvailableBalance" = "AvailableBalance" + p_amount,
                             "UpdatedAt" = v_now
        WHERE "Id" = v_wallet
        RETURNING "AvailableBalance" INTO v_balance;
    END IF;

    -- No ON CONFLICT: a writer outside the lock that took this reference meanwhile
    -- makes this a unique violation, the whole transaction rolls back (the UPDATE
    -- above with it), and the retry finds the entry.
    INSERT INTO "WalletHistories" ("WalletId", "Amount", "BalanceAfter", "Type", "Description",
                                   "ReferenceId", "CreatedAt")
    VALUES (v_wallet, p_amount, v_balance, 'credit', p_description, p_reference_id, v_now);

    RETURN QUERY SELECT 'credited'::text, v_wallet, v_balance, v_created;
END
$fn$;
