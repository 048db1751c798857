-- 003_wallet_histories: one row per credit or debit of a wallet (SPEC §6). The
-- worker's wallet.seed_sandbox writes a credit here in the same transaction
-- that raises "Wallets"."AvailableBalance"; the unique ("WalletId",
-- "ReferenceId") makes a replayed job a no-op (INSERT ... ON CONFLICT DO
-- NOTHING, and only a row actually inserted moves the balance).
--
-- Amounts are numeric(18,4) like the balance: never a float on the way.

CREATE TABLE IF NOT EXISTS "WalletHistories" (
    "Id" uuid NOT NULL DEFAULT gen_random_uuid(),
    "WalletId" uuid NOT NULL,
    "Amount" numeric(18,4) NOT NULL,
    "BalanceAfter" numeric(18,4) NOT NULL,
    "Type" text NOT NULL,
    "Description" text NULL,
    "ReferenceId" text NULL,
    "CreatedAt" timestamp with time zone NOT NULL DEFAULT now(),
    CONSTRAINT "PK_WalletHistories" PRIMARY KEY ("Id"),
    CONSTRAINT "FK_WalletHistories_Wallets_WalletId" FOREIGN KEY ("WalletId")
        REFERENCES "Wallets" ("Id") ON DELETE CASCADE
);

-- Once per reference and wallet. Rows without a reference (NULL) never collide.
-- Its leading column also serves a wallet's history and the cascade from Wallets.
CREATE UNIQUE INDEX IF NOT EXISTS "IX_WalletHistories_WalletId_ReferenceId"
    ON "WalletHistories" ("WalletId", "ReferenceId");
