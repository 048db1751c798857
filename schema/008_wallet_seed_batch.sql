-- 008_wallet_seed_batch: steller_wallet_seed_sandbox_batch(), many seeds in one
-- transaction. jobs/wallet.c gathers the seeds that arrive together in a worker
-- process and sends them in one call: one transaction per seed cost about 1 ms
-- of server CPU (commit, and the MultiXacts that concurrent foreign-key checks
-- of "Wallets" make on the one USD and sandbox-type rows), which capped the
-- worker near 1,200 seeds/s on 2 cores.
--
-- Each seed keeps the semantics of steller_wallet_seed_sandbox() (007): under
-- its partner's advisory lock, find or create the sandbox wallet, and unless the
-- (wallet, reference) entry exists, raise the balance and write the entry. Seeds
-- are handled in partner order, input order within a partner, so the same
-- partner twice with one reference is credited once (the second sees the first's
-- entry: its own transaction's earlier statement), and with two references both
-- are credited, the second on top of the first.
--
-- Locks: every partner's lock is taken first, in ascending partner id, by one
-- statement, and held to commit: two batches never wait on each other in a
-- cycle. The seeds are then handled by later statements, whose snapshots see
-- what the previous holders of those locks committed (see 007).
--
-- Result: one row per input, with ord its position (1-based) in the arrays.
-- A seed whose values are wrong returns 'invalid' (no exception: the other seeds
-- of the batch go on). An error that is raised anyway (a balance that overflows
-- numeric(18,4), a reference that is not valid text) rolls back the whole batch;
-- the worker then sends its seeds one by one through the single function.
--
-- CREATE OR REPLACE: idempotent, and safe on production (no table is locked or
-- changed). Never edit this file once applied anywhere.

CREATE OR REPLACE FUNCTION steller_wallet_seed_sandbox_batch(
    p_partner_ids integer[], p_amounts numeric[], p_reference_ids text[], p_description text)
RETURNS TABLE (ord integer, outcome text, wallet_id uuid, balance_after numeric,
               wallet_created boolean)
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    v_n integer := coalesce(array_length(p_partner_ids, 1), 0);
    v_type integer;
    v_currency integer;
    v_partner integer;
    v_amount numeric;
    v_reference text;
    v_wallet uuid;
    v_balance numeric;
    v_created boolean;
    v_now timestamptz := now();
    v_last integer;
    v_known boolean;
    i integer;
BEGIN
    IF coalesce(array_length(p_amounts, 1), 0) <> v_n
       OR coalesce(array_length(p_reference_ids, 1), 0) <> v_n THEN
        RAISE EXCEPTION 'the three arrays must have the same length' USING ERRCODE = '22023';
    END IF;

    -- Same lock class as 007 ('WALT'), so batches and single calls exclude each other.
    PERFORM pg_advisory_xact_lock(1463897172, s.p)
    FROM (SELECT DISTINCT u.p FROM unnest(p_partner_ids) u(p) WHERE u.p IS NOT NULL
          ORDER BY u.p) s;

    SELECT "Id" INTO v_currency FROM "Currencies" WHERE "Code" = 'USD';
    SELECT "Id" INTO v_type FROM "WalletTypes" WHERE "IsSandbox" ORDER BY "Id" LIMIT 1;

    FOR i IN SELECT o.i FROM generate_subscripts(p_partner_ids, 1) o(i)
             ORDER BY p_partner_ids[o.i], o.i LOOP
        v_partner := p_partner_ids[i];
        v_amount := p_amounts[i];
        v_reference := p_reference_ids[i];
        v_created := false;

        IF v_partner IS NULL OR v_amount IS NULL OR v_amount <= 0
           OR v_amount <> round(v_amount, 4) OR v_reference IS NULL OR v_reference = '' THEN
            RETURN QUERY SELECT i, 'invalid'::text, NULL::uuid, NULL::numeric, false;
            CONTINUE;
        END IF;

        IF v_last IS DISTINCT FROM v_partner THEN
            v_known := EXISTS (SELECT 1 FROM "Partners" WHERE "Id" = v_partner);
            v_last := v_partner;
        END IF;
        IF NOT v_known THEN
            RETURN QUERY SELECT i, 'no_partner'::text, NULL::uuid, NULL::numeric, false;
            CONTINUE;
        END IF;
        IF v_currency IS NULL THEN
            RETURN QUERY SELECT i, 'no_usd'::text, NULL::uuid, NULL::numeric, false;
            CONTINUE;
        END IF;

        -- Only a wallet whose type is a sandbox type: a live wallet is never touched.
        -- "+ 0" keeps the currency and type indexes out of the cached generic plan:
        -- on a "Wallets" without statistics (new, or just emptied) the planner may
        -- otherwise scan every USD wallet by "IX_Wallets_CurrencyId" for each seed
        -- (measured on 20,000 new wallets: 1,700 seeds/s against 15,000). Only the
        -- partner's few wallets are ever wanted.
        SELECT w."Id" INTO v_wallet
        FROM "Wallets" w JOIN "WalletTypes" t ON t."Id" = w."WalletTypeId" + 0
        WHERE w."PartnerId" = v_partner AND w."CurrencyId" + 0 = v_currency AND t."IsSandbox"
        ORDER BY w."CreatedAt", w."Id"
        LIMIT 1;

        IF NOT FOUND THEN
            IF v_type IS NULL THEN
                RETURN QUERY SELECT i, 'no_sandbox_type'::text, NULL::uuid, NULL::numeric, false;
                CONTINUE;
            END IF;
            INSERT INTO "Wallets" ("Id", "PartnerId", "AvailableBalance", "CurrencyId",
                                   "WalletTypeId", "CreatedAt", "UpdatedAt")
            VALUES (gen_random_uuid(), v_partner, v_amount, v_currency, v_type, v_now, v_now)
            RETURNING "Id", "AvailableBalance" INTO v_wallet, v_balance;
            v_created := true;
        ELSIF EXISTS (SELECT 1 FROM "WalletHistories"
                      WHERE "WalletId" = v_wallet AND "ReferenceId" = v_reference) THEN
            RETURN QUERY SELECT i, 'duplicate'::text, v_wallet, NULL::numeric, false;
            CONTINUE;
        ELSE
            UPDATE "Wallets" SET "AvailableBalance" = "AvailableBalance" + v_amount,
                                 "UpdatedAt" = v_now
            WHERE "Id" = v_wallet
            RETURNING "AvailableBalance" INTO v_balance;
        END IF;

        -- No ON CONFLICT, as in 007: a writer outside the lock that took this
        -- reference makes the batch fail and be retried.
        INSERT INTO "WalletHistories" ("WalletId", "Amount", "BalanceAfter", "Type",
                                       "Description", "ReferenceId", "CreatedAt")
        VALUES (v_wallet, v_amount, v_balance, 'credit', p_description, v_reference, v_now);

        RETURN QUERY SELECT i, 'credited'::text, v_wallet, v_balance, v_created;
    END LOOP;
END
$fn$;
