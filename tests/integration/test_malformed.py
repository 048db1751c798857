"""Malformed envelopes (SPEC section 3) are never executed and never crash a
worker: each goes to P:dead as a record that keeps the exact bytes and says
why; an unknown type goes dead too. The pool keeps working afterwards."""

import msgpack

from harness import *

MAX_JOB_BYTES = 1024
MISSING = ("missing", "absent", "required", "lacks", "no ")


def _pack(m):
    return msgpack.packb(m, use_bin_type=True)


def _env(jid_, **over):
    """A valid envelope map in canonical order; over replaces or (None) drops keys."""
    m = {"jid": jid_, "type": "sys.noop", "args": {}, "queue": "default",
         "created_at": now_ms(), "attempt": 0}
    for k, v in over.items():
        if v is None:
            m.pop(k, None)
        else:
            m[k] = v
    return m


def _cases():
    """(label, queue, raw bytes, [groups of words: each group needs one hit])."""
    valid = _pack(_env("m-truncated"))
    big = _pack(_env("m-oversized", args={"pad": "x" * (MAX_JOB_BYTES + 100)}))
    assert len(big) > MAX_JOB_BYTES
    return [
        ("not msgpack", "default", b"\xc1garbage",
         [("msgpack", "parse", "decode", "invalid", "malformed", "unpack")]),
        ("not a map", "default", _pack(["jid", "m-list", "type", "sys.noop"]),
         [("map",)]),
        ("truncated", "default", valid[:-3],
         [("truncat", "incomplete", "short", "msgpack", "parse", "decode", "unpack",
           "end of")]),
        ("missing jid", "default", _pack(_env("m-nojid", jid=None)), [("jid",), MISSING]),
        ("missing type", "critical", _pack(_env("m-notype", type=None)),
         [("type",), MISSING]),
        ("missing args", "default", _pack(_env("m-noargs", args=None)), [("args",), MISSING]),
        ("attempt is a string", "default", _pack(_env("m-attempt-str", attempt="1")),
         [("attempt",)]),
        ("args is a string", "critical", _pack(_env("m-args-str", args="nope")), [("args",)]),
        ("jid is an int", "default", _pack(_env(12345)), [("jid",)]),
        ("jid is empty", "default", _pack(_env("")), [("jid",)]),
        ("jid over 64 bytes", "default", _pack(_env("j" * 65)),
         [("jid",), ("64", "long", "length", "size", "bytes")]),
        ("oversized", "default", big,
         [("max_job_bytes", "too big", "too large", "oversize", "size", "bytes", "exceed",
           "1024", "limit")]),
        ("trailing bytes", "default", _pack(_env("m-trailing")) + b"\x00",
         [("trailing", "extra", "after")]),
    ]


def test_malformed_envelopes_go_dead_with_reason_and_raw():
    with RedisServer() as rs, \
            Worker(rs, workers=2, max_job_bytes=MAX_JOB_BYTES, poison_limit=3) as w:
        r = rs.client()
        kids = w.wait_children(2)
        cases = _cases()
        for label, queue, raw, _ in cases:
            enqueue(r, [raw], queue=queue)
        unknown_jid, unknown_raw = envelope("no.such.type", {"a": 1}, jid="m-unknown-type")
        enqueue(r, [unknown_raw])
        total = len(cases) + 1

        w.wait_for(lambda: r.llen("%s:dead" % PREFIX) >= total, 20,
                   "%d records in P:dead" % total)
        records = dead_records(r)
        problems = []
        by_raw = {}
        for rec in records:
            if isinstance(rec, dict) and isinstance(rec.get("raw"), bytes):
                by_raw.setdefault(rec["raw"], rec)
        for label, queue, raw, words in cases:
            rec = by_raw.get(raw)
            if rec is None:
                problems.append("%s: no dead record whose raw equals the %d bytes pushed"
                                % (label, len(raw)))
                continue
            err = rec.get("error")
            if not isinstance(err, str) or not err:
                problems.append("%s: error %r is not a non-empty string" % (label, err))
                continue
            low = err.lower()
            for group in words:
                if not any(word in low for word in group):
                    problems.append("%s: error %r mentions none of %r" % (label, err, group))
            if rec.get("malformed") is not True:
                problems.append("%s: malformed is %r, want true" % (label, rec.get("malformed")))
            if not isinstance(rec.get("jid"), str):
                problems.append("%s: jid %r is not a string" % (label, rec.get("jid")))
            if not isinstance(rec.get("failed_at"), int):
                problems.append("%s: failed_at %r is not an int" % (label, rec.get("failed_at")))

        unknown = [x for x in records if isinstance(x, dict) and x.get("jid") == unknown_jid]
        if len(unknown) != 1:
            problems.append("unknown type: %d dead records with jid %s" % (len(unknown),
                                                                           unknown_jid))
        else:
            err = unknown[0].get("error")
            if not isinstance(err, str) or "no.such.type" not in err:
                problems.append("unknown type: error %r does not name the type" % (err,))
            if unknown[0].get("args") != {"a": 1}:
                problems.append("unknown type: args not kept: %r" % (unknown[0],))
        if len(records) != total:
            problems.append("P:dead holds %d records, want %d" % (len(records), total))
        assert not problems, "\n  " + "\n  ".join(problems)

        # Nothing crashed: the same worker processes, and they still work.
        assert w.children() == kids, "worker processes changed: %r -> %r" % (
            sorted(kids), sorted(w.children()))
        jid, raw = envelope("sys.noop", jid="after-malformed")
        enqueue(r, [raw])
        w.wait_for(lambda: stats(r)["processed"] >= 1, 10, "the sys.noop to be processed")
        w.wait_for(lambda: queue_len(r) == 0 and queue_len(r, "critical") == 0
                   and not processing_keys(r), 5, "queues and processing lists empty")
        assert not locate_jids(r, [jid])
        assert stats(r)["dead"] == total, stats(r)


def test_newer_envelope_version_goes_dead_unread():
    with RedisServer() as rs, Worker(rs, workers=1) as w:
        r = rs.client()
        jid, raw = envelope("sys.noop", jid="m-v2", v=2)
        enqueue(r, [raw])
        rec = w.wait_for(lambda: next((x for x in dead_records(r) if x.get("jid") == jid
                                       or x.get("raw") == raw), None), 10,
                         "the v=2 envelope in P:dead")
        assert rec.get("error"), rec
        assert stats(r)["processed"] == 0, stats(r)


if __name__ == "__main__":
    main()
