"""wallet.seed_sandbox against a real PostgreSQL and Redis: fake USD credited to
a partner's sandbox wallet once per reference, the wallet created if missing.

- 50 concurrent seeds of one partner and reference: one wallet, one entry, one
  credit; distinct references: each credited once, the balance exact;
- 0.0001 and 99999999999999.9999 land exactly (numeric compared as text);
- bad amounts, a number for amount, a bad partner_id or reference_id, an
  unknown partner: dead with the reason, nothing written;
- a partner with a live wallet: the live wallet untouched, a sandbox one made;
  an existing sandbox wallet is credited rather than a second one made;
- a job that times out while PostgreSQL holds it is cancelled, retried, and
  the credit still happens once;
- PostgreSQL restarted mid-run: no seed lost, none doubled;
- one batch (schema/008) holding a seed whose balance would overflow, an
  unknown partner, and one partner three times (a replayed reference and a new
  one) next to good seeds: the bad ones dead with the reason, the rest credited
  once each, balances exact."""

import time
import uuid

from harness import *

TYPE = "wallet.seed_sandbox"
LOCK_CLASS = 1463897172  # schema/007: the advisory lock class of a partner's seeds
FAST_RETRY = {"name": TYPE, "backoff_base": 0.2, "backoff_factor": 0.1, "backoff_cap": 2.0}


def wallet_worker(rs, pg, **over):
    cfg = {"workers": 2, "concurrency": 64, "database": {"url": pg.url(), "pool_size": 4},
           "types": [dict(FAST_RETRY)]}
    cfg.update(over)
    return Worker(rs, **cfg)


def add_partners(pg, n):
    """n new partners; returns their ids."""
    rows = pg.query(
        'INSERT INTO "Partners" ("BusinessName", "RegistrationNumber", "Logo", "Address", '
        '"Phone", "Email", "RevenueSharePercentage", "IsActive", "CreatedAt", "UpdatedAt") '
        "SELECT 'Biz ' || g, 'RC' || g, '', 'Addr', '+1', 'p' || g || '@example.com', 10, "
        "true, now(), now() FROM generate_series(1, %s) g RETURNING \"Id\"", (n,))
    return [r[0] for r in rows]


def push(r, argss, prefix="seed"):
    raws = [envelope(TYPE, a, jid="%s-%d-%s" % (prefix, i, uuid.uuid4().hex[:8]),
                     queue="critical")[1] for i, a in enumerate(argss)]
    enqueue(r, raws, queue="critical")


def settled(r, n):
    s = stats(r)
    return (queue_len(r, "critical") == 0 and not processing_keys(r)
            and r.zcard("%s:retry" % PREFIX) == 0 and s["processed"] + s["dead"] >= n)


def wallets(pg, partner):
    """[(type code, balance text)] of a partner's wallets."""
    return [tuple(x) for x in pg.query(
        'SELECT t."Code", w."AvailableBalance"::text FROM "Wallets" w '
        'JOIN "WalletTypes" t ON t."Id" = w."WalletTypeId" WHERE w."PartnerId" = %s '
        'ORDER BY t."Code", w."CreatedAt"', (partner,))]


def entries(pg, partner):
    """[(amount, balance after, type, reference)] of the partner's history, oldest first."""
    return [tuple(x) for x in pg.query(
        'SELECT h."Amount"::text, h."BalanceAfter"::text, h."Type", h."ReferenceId" '
        'FROM "WalletHistories" h JOIN "Wallets" w ON w."Id" = h."WalletId" '
        'WHERE w."PartnerId" = %s ORDER BY h."BalanceAfter"', (partner,))]


def test_50_concurrent_seeds_of_one_reference_make_one_wallet_and_one_credit():
    with RedisServer() as rs, PostgresServer() as pg:
        migrate(pg)
        r = rs.client()
        p, q = add_partners(pg, 2)
        push(r, [{"partner_id": p, "amount": "25.50"}] * 50)
        # another partner, 40 references of 1.25 each, every job twice
        push(r, [{"partner_id": q, "amount": "1.25", "reference_id": "ref-%d" % (i % 40)}
                 for i in range(80)], prefix="refs")
        with wallet_worker(rs, pg) as w:
            w.wait_for(lambda: settled(r, 130), 60, "every seed done")
        assert dead_records(r) == [], dead_records(r)[:2]
        assert wallets(pg, p) == [("sandbox", "25.5000")]
        assert entries(pg, p) == [("25.5000", "25.5000", "credit", "signup-seed:%d" % p)]
        assert wallets(pg, q) == [("sandbox", "50.0000")]
        got = entries(pg, q)
        # serialized per partner: the balances after are 1.25, 2.50, ... 50.00
        assert [e[1] for e in got] == ["%.4f" % (1.25 * k) for k in range(1, 41)], got
        assert sorted(e[3] for e in got) == sorted("ref-%d" % i for i in range(40))


def test_the_smallest_and_the_largest_amounts_land_exactly():
    with RedisServer() as rs, PostgresServer() as pg:
        migrate(pg)
        r = rs.client()
        small, large, default = add_partners(pg, 3)
        push(r, [{"partner_id": small, "amount": "0.0001"},
                 {"partner_id": large, "amount": "99999999999999.9999"},
                 {"partner_id": default}])
        with wallet_worker(rs, pg, wallet={"max_seed_amount": "99999999999999.9999"}) as w:
            w.wait_for(lambda: settled(r, 3), 30, "the seeds done")
        assert dead_records(r) == [], dead_records(r)[:2]
        assert wallets(pg, small) == [("sandbox", "0.0001")]
        assert wallets(pg, large) == [("sandbox", "99999999999999.9999")]
        assert entries(pg, large) == [("99999999999999.9999", "99999999999999.9999", "credit",
                                       "signup-seed:%d" % large)]
        assert wallets(pg, default) == [("sandbox", "1000.0000")]  # wallet.default_seed_amount


def test_bad_args_and_unknown_partners_are_dead_with_the_reason():
    with RedisServer() as rs, PostgresServer() as pg:
        migrate(pg)
        r = rs.client()
        (p,) = add_partners(pg, 1)
        bad = [
            ({"partner_id": p, "amount": "0"}, "more than zero"),
            ({"partner_id": p, "amount": "0.0000"}, "more than zero"),
            ({"partner_id": p, "amount": "-1"}, "decimal number"),
            ({"partner_id": p, "amount": "abc"}, "decimal number"),
            ({"partner_id": p, "amount": "1e3"}, "decimal number"),
            ({"partner_id": p, "amount": " 5"}, "decimal number"),
            ({"partner_id": p, "amount": "1.23456"}, "more than 4 decimals"),
            ({"partner_id": p, "amount": "1000000.0001"}, "above wallet.max_seed_amount"),
            ({"partner_id": p, "amount": "123456789012345"}, "more than 14 digits"),
            ({"partner_id": p, "amount": 12.5}, "decimal string"),
            ({"partner_id": p, "amount": 12}, "decimal string"),
            ({"partner_id": p, "reference_id": ""}, "reference_id must not be empty"),
            ({"partner_id": p, "reference_id": 7}, "reference_id must be a string"),
            ({"partner_id": p, "reference_id": "x" * 201}, "reference_id is longer"),
            ({"partner_id": str(p)}, "partner_id must be a positive integer"),
            ({"partner_id": 0}, "partner_id must be a positive integer"),
            ({"partner_id": -3}, "partner_id must be a positive integer"),
            ({"amount": "5"}, "partner_id is required"),
            ({"partner_id": p + 1000}, "partner %d does not exist" % (p + 1000)),
        ]
        push(r, [a for a, _ in bad])
        with wallet_worker(rs, pg) as w:
            w.wait_for(lambda: settled(r, len(bad)), 30, "every seed dead")
        dead = {tuple(sorted((k, str(v)) for k, v in d["args"].items())): d["error"]
                for d in dead_records(r)}
        assert len(dead) == len(bad), dead
        for args, reason in bad:
            error = dead[tuple(sorted((k, str(v)) for k, v in args.items()))]
            assert reason in error, (args, error)
        assert stats(r)["processed"] == 0
        assert pg.query('SELECT count(*) FROM "Wallets"')[0][0] == 0
        assert pg.query('SELECT count(*) FROM "WalletHistories"')[0][0] == 0


def test_a_live_wallet_is_never_touched_and_a_sandbox_one_is_reused():
    with RedisServer() as rs, PostgresServer() as pg:
        migrate(pg)
        r = rs.client()
        live, sandbox = add_partners(pg, 2)
        pg.query('INSERT INTO "Wallets" ("Id", "PartnerId", "AvailableBalance", "CurrencyId", '
                 '"WalletTypeId", "CreatedAt", "UpdatedAt") '
                 'SELECT gen_random_uuid(), p.id, 500, c."Id", t."Id", '
                 "'2026-01-01Z', '2026-01-01Z' "
                 'FROM (VALUES (%s, \'live\'), (%s, \'sandbox\')) p(id, code) '
                 'JOIN "WalletTypes" t ON t."Code" = p.code '
                 'JOIN "Currencies" c ON c."Code" = \'USD\'', (live, sandbox))
        before = pg.query('SELECT w.*::text FROM "Wallets" w WHERE "PartnerId" = %s', (live,))
        push(r, [{"partner_id": live, "amount": "10"},
                 {"partner_id": sandbox, "amount": "10", "reference_id": "promo-1"}])
        with wallet_worker(rs, pg) as w:
            w.wait_for(lambda: settled(r, 2), 30, "the seeds done")
        assert dead_records(r) == [], dead_records(r)[:2]
        assert wallets(pg, live) == [("live", "500.0000"), ("sandbox", "10.0000")]
        assert pg.query('SELECT w.*::text FROM "Wallets" w WHERE "PartnerId" = %s '
                        'AND "WalletTypeId" = (SELECT "Id" FROM "WalletTypes" '
                        "WHERE \"Code\" = 'live')", (live,)) == before
        assert wallets(pg, sandbox) == [("sandbox", "510.0000")]
        assert entries(pg, sandbox) == [("10.0000", "510.0000", "credit", "promo-1")]


def test_a_seed_that_times_out_is_cancelled_and_credits_once_later():
    with RedisServer() as rs, PostgresServer() as pg:
        migrate(pg)
        r = rs.client()
        (p,) = add_partners(pg, 1)
        # Hold the partner's seed lock: the job's statement waits behind it.
        holder = pg.client(autocommit=False)
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_CLASS, p))
        push(r, [{"partner_id": p, "amount": "3"}])
        t = dict(FAST_RETRY, timeout=1.0)
        with wallet_worker(rs, pg, types=[t]) as w:
            w.wait_for(lambda: r.zcard("%s:retry" % PREFIX) > 0 or stats(r)["failed"] > 0, 20,
                       "the job timed out and went to retry")
            time.sleep(1.5)  # a retry or two queue behind the first statement
            holder.commit()  # the waiting statements now run: the first credits
            w.wait_for(lambda: settled(r, 1), 30, "the seed done")
            assert "timed out after 1 s" in w.log()
        holder.close()
        assert dead_records(r) == [], dead_records(r)[:2]
        assert wallets(pg, p) == [("sandbox", "3.0000")]
        assert len(entries(pg, p)) == 1


def test_postgresql_restart_mid_run_loses_and_doubles_no_seed():
    n = 3000
    # synchronous_commit on: a restart must not take back what a COMMIT confirmed
    with RedisServer() as rs, PostgresServer(args=["-c", "synchronous_commit=on"]) as pg:
        migrate(pg)
        r = rs.client()
        partners = add_partners(pg, n)
        # every seed twice (a replay), with amounts that tell partners apart
        amount = ["%d.%04d" % (i % 1000 + 1, i % 10000) for i in range(n)]
        args = [{"partner_id": p, "amount": amount[i]} for i, p in enumerate(partners)]
        push(r, args + args)
        with wallet_worker(rs, pg) as w:
            w.wait_for(lambda: stats(r)["processed"] > 200, 60, "the first seeds done")
            pg.restart(down_for=1.0)
            print("  postgres restarted after %d seeds" % stats(r)["processed"])
            w.wait_for(lambda: settled(r, 2 * n), 180, "every seed done after the restart")
            print("  %d failed runs retried" % stats(r)["failed"])
            assert w.running()
        assert dead_records(r) == [], dead_records(r)[:2]
        got = dict(pg.query('SELECT w."PartnerId", w."AvailableBalance"::text FROM "Wallets" w'))
        assert len(got) == n
        assert [got[p] for p in partners] == amount
        counts = pg.query('SELECT count(*), count(DISTINCT "WalletId") FROM "WalletHistories"')
        assert counts[0] == (n, n), counts
        assert pg.query('SELECT count(*) FROM "WalletHistories" h JOIN "Wallets" w '
                        'ON w."Id" = h."WalletId" WHERE h."Amount" <> w."AvailableBalance" '
                        'OR h."BalanceAfter" <> w."AvailableBalance"')[0][0] == 0


def test_a_batch_with_bad_seeds_and_one_partner_twice_credits_the_good_ones_exactly():
    with RedisServer() as rs, PostgresServer() as pg:
        migrate(pg)
        r = rs.client()
        a, b, c, full = add_partners(pg, 4)
        missing = full + 1000
        # a sandbox wallet one step from numeric(18,4)'s ceiling: +10 overflows
        pg.query('INSERT INTO "Wallets" ("Id", "PartnerId", "AvailableBalance", "CurrencyId", '
                 '"WalletTypeId", "CreatedAt", "UpdatedAt") '
                 'SELECT gen_random_uuid(), %s, 99999999999999, c."Id", t."Id", now(), now() '
                 'FROM "WalletTypes" t, "Currencies" c '
                 "WHERE t.\"Code\" = 'sandbox' AND c.\"Code\" = 'USD'", (full,))
        seeds = [{"partner_id": a, "amount": "10", "reference_id": "r1"},
                 {"partner_id": full, "amount": "10"},
                 {"partner_id": a, "amount": "10", "reference_id": "r1"},
                 {"partner_id": b, "amount": "7"},
                 {"partner_id": missing, "amount": "1"},
                 {"partner_id": a, "amount": "5", "reference_id": "r2"},
                 {"partner_id": c, "amount": "1.5"}]
        push(r, seeds)
        # One process, and batch_max (concurrency / 2) = every seed: one batch. It is
        # refused for the overflow and its seeds go again one by one, in any order.
        # Then a batch of good seeds only, one partner three times: kept in order.
        again = [{"partner_id": a, "amount": "2", "reference_id": "r3"},
                 {"partner_id": b, "amount": "1", "reference_id": "r5"},
                 {"partner_id": a, "amount": "2", "reference_id": "r3"},
                 {"partner_id": c, "amount": "1", "reference_id": "r6"},
                 {"partner_id": a, "amount": "3", "reference_id": "r4"},
                 {"partner_id": c, "amount": "1", "reference_id": "r6"},
                 {"partner_id": b, "amount": "1", "reference_id": "r7"}]
        with wallet_worker(rs, pg, workers=1, concurrency=2 * len(seeds),
                           log_level="debug") as w:
            w.wait_for(lambda: settled(r, len(seeds)), 30, "every seed done")
            push(r, again, prefix="again")
            w.wait_for(lambda: settled(r, len(seeds) + len(again)), 30, "every seed done")
            log = w.log()
        sent = [l for l in log.splitlines() if "wallet batch sent" in l]
        assert len(sent) == 2 and all("seeds=7" in l for l in sent), sent
        assert log.count("wallet batch refused for its data") == 1, log
        dead = {d["args"]["partner_id"]: d["error"] for d in dead_records(r)}
        assert sorted(dead) == sorted([full, missing]), dead
        assert "numeric field overflow" in dead[full] and "22003" in dead[full], dead[full]
        assert "partner %d does not exist" % missing in dead[missing], dead[missing]
        assert stats(r)["processed"] == 5 + 7
        assert wallets(pg, full) == [("sandbox", "99999999999999.0000")]
        assert entries(pg, full) == []
        assert wallets(pg, a) == [("sandbox", "20.0000")]
        got = entries(pg, a)
        assert sorted((e[0], e[3]) for e in got[:2]) == [("10.0000", "r1"), ("5.0000", "r2")]
        assert [e[1] for e in got[:2]] in (["10.0000", "15.0000"], ["5.0000", "15.0000"]), got
        assert got[2:] == [("2.0000", "17.0000", "credit", "r3"),
                           ("3.0000", "20.0000", "credit", "r4")], got
        assert wallets(pg, b) == [("sandbox", "9.0000")]
        assert wallets(pg, c) == [("sandbox", "2.5000")]
        assert pg.query('SELECT count(*) FROM "Wallets" WHERE "PartnerId" = %s', (missing,)) \
            == [(0,)]


def test_the_batch_function_handles_one_partner_twice_in_partner_order():
    """schema/008 called directly: outcomes by input position, a replayed reference
    a duplicate, a new one credited on top, an invalid row alone refused."""
    with PostgresServer() as pg:
        migrate(pg)
        p, q = add_partners(pg, 2)
        rows = pg.query(
            "SELECT ord, outcome, balance_after::text, wallet_created "
            "FROM steller_wallet_seed_sandbox_batch(%s, %s::numeric[], %s, 'x') ORDER BY ord",
            ([q, p, q, p, q], ["2", "1", "2", "0", "3"], ["r", "r", "r", "r2", "s\"\\"]))
        assert rows == [(1, "credited", "2.0000", True), (2, "credited", "1.0000", True),
                        (3, "duplicate", None, False), (4, "invalid", None, False),
                        (5, "credited", "5.0000", False)], rows
        assert entries(pg, q) == [("2.0000", "2.0000", "credit", "r"),
                                  ("3.0000", "5.0000", "credit", 's"\\')]


if __name__ == "__main__":
    main()
