"""Benchmark 7, edge reads: `kv.get` at the far edge (syd) of a KV bucket that lives in ord, with and
without edge mirrors (edgeRegions), in one run; and how stale a mirror is: the lag from a write at the
origin to its appearance in the syd mirror.

One supercluster on the Fly stand-in (ord, syd, cdg; one JetStream Machine each; the one-way delays of
bench/latency.py). Two buckets made by the provider's own handlers (nats_fly.assetprovider, as the engine
calls them) through the public URL: `far` (placement ord, no mirrors) and `near` (placement ord,
edgeRegions: true). The gets alternate between the two, one at a time, from one client at syd's edge
through nats-py's `kv.get` (a direct get when the bucket allows it: both do). Every client runs in this
one process, so write and read times come from one clock.
"""
from __future__ import annotations

import asyncio
import time
from collections import Counter

from nats.js.errors import KeyNotFoundError

import common
from common import log
from latency import DELAYS, connect, set_delays, wait_gateways

ORIGIN, EDGE = "ord", "syd"


class Bucket:
    """One KeyValue through the provider's check, create and delete."""

    def __init__(self, name: str, given: dict):
        from nats_fly.assetprovider import Assets
        self.provider, self.name, self.given = Assets("bench-edge"), name, given
        self.urn = f"urn:pulumi:bench::edge::nats-fly:index:KeyValue::{name}"
        self.state: dict = {}

    async def create(self) -> dict:
        from pulumi.provider.experimental import provider as xp

        from nats_fly.assetprovider import plain, wrap
        checked = await self.provider.check(xp.CheckRequest(self.urn, {}, wrap(self.given).value, b""))
        assert not checked.failures, [f.reason for f in checked.failures]
        done = await self.provider.create(xp.CreateRequest(self.urn, checked.inputs, 120, False))
        self.state = done.properties
        return {k: plain(v) for k, v in done.properties.items()}

    async def delete(self) -> None:
        from pulumi.provider.experimental import provider as xp
        if self.state:
            await self.provider.delete(xp.DeleteRequest(self.urn, self.name, self.state, 120))
        await self.provider.cancel()


async def answered_by(nc, stream: str, subject: str, n: int = 20) -> dict:
    """Which stream answers direct gets sent to `stream`'s name (the reply's Nats-Stream header)."""
    who = Counter()
    for _ in range(n):
        reply = await nc.request(f"$JS.API.DIRECT.GET.{stream}.{subject}", b"", timeout=5)
        who[(reply.headers or {}).get("Nats-Stream")] += 1
    return dict(who)


async def gets(reader, buckets: dict, n: int) -> dict[str, list[float]]:
    """n kv.gets of each bucket from the reader, alternating, one at a time (ms)."""
    times: dict[str, list[float]] = {name: [] for name in buckets}
    for _ in range(n):
        for name, kv in buckets.items():
            t0 = time.perf_counter_ns()
            entry = await kv.get("color")
            times[name].append((time.perf_counter_ns() - t0) / 1e6)
            assert entry.value == b"blue"
    return times


async def staleness(writer_kv, reader, mirror: str, reader_kv, n: int) -> dict:
    """For each of n writes at the origin: ms from sending the write to the syd mirror holding it (asked by
    its own name), and whether a kv.get at syd right after the write's ack still saw the old value."""
    lags, stale_after_ack = [], 0
    for i in range(n):
        value = f"v{i}-{time.monotonic_ns()}".encode()
        t0 = time.perf_counter_ns()
        await writer_kv.put("tick", value)
        try:
            seen = (await reader_kv.get("tick")).value
        except KeyNotFoundError:  # the first write: the mirror has no value yet
            seen = None
        stale_after_ack += seen != value
        while True:
            reply = await reader.request(f"$JS.API.DIRECT.GET.{mirror}.$KV.near.tick", b"", timeout=5)
            if reply.data == value:
                break
        lags.append((time.perf_counter_ns() - t0) / 1e6)
        await asyncio.sleep(0.05)
    return {"n": n, "p50_ms": common.r(common.pct(lags, 50)), "p90_ms": common.r(common.pct(lags, 90)),
            "max_ms": common.r(max(lags)), "min_ms": common.r(min(lags)), "stale_after_ack": stale_after_ack}


def main() -> None:
    opts = common.args(__doc__)
    common.require_root()
    from nats_fly_testkit import fly as fh
    started = time.monotonic()
    n = 40 if opts.quick else 200
    writes = 10 if opts.quick else 50
    results: dict = {"problems": []}
    with common.standin() as standin:
        stack = fh.load_stack("prod", app="be-sc", topology="supercluster", jetstream=True, peer_wait=3)
        fh.components_up(standin, stack, fh.render_ours(stack, standin.root / "contexts" / stack.app))
        fh.wait_healthy(standin, stack.app, timeout=120)
        if not wait_gateways(standin, stack.app, common.REGIONS):
            results["problems"].append("supercluster gateways incomplete after 30 s")
        set_delays(standin)
        host, port = standin.edge(stack.app, ORIGIN)
        connection = {"servers": [f"nats://{host}:{port}"], "user": "app", "password": stack.user_password("app"),
                      "regions": stack.counts, "topology": "supercluster"}
        log(f"up, delays set after {time.monotonic() - started:.0f}s")

        async def measure():
            far = Bucket("far", {"connection": connection, "placement": ORIGIN})
            near = Bucket("near", {"connection": connection, "placement": ORIGIN, "edgeRegions": True})
            writer = await connect(standin, stack, ORIGIN)
            reader = await connect(standin, stack, EDGE)
            try:
                await far.create()
                results["edge_mirrors"] = (await near.create())["edgeMirrors"]
                mirror = results["edge_mirrors"][EDGE]
                for name in ("far", "near"):
                    await (await writer.jetstream().key_value(name)).put("color", b"blue")
                buckets = {name: await reader.jetstream().key_value(name) for name in ("near", "far")}
                deadline = time.monotonic() + 30
                while (await reader.request(f"$JS.API.DIRECT.GET.{mirror}.$KV.near.color", b"", timeout=5)).data \
                        != b"blue":
                    assert time.monotonic() < deadline, f"{mirror} never got the first value"
                results["answered_by"] = {
                    name: await answered_by(reader, f"KV_{name}", f"$KV.{name}.color") for name in ("far", "near")}
                times = await gets(reader, buckets, n)
                results["gets"] = {name: {"n": n, "p50_ms": common.r(common.pct(v, 50)),
                                          "p99_ms": common.r(common.pct(v, 99))} for name, v in times.items()}
                log("gets", results["gets"], results["answered_by"])
                results["staleness"] = await staleness(await writer.jetstream().key_value("near"), reader, mirror,
                                                       buckets["near"], writes)
                log("staleness", results["staleness"])
            finally:
                await writer.close()
                await reader.close()
                await near.delete()
                await far.delete()
        asyncio.run(measure())
        set_delays(standin, on=False)
    report(results, n, opts.quick, started)


def report(results: dict, n: int, quick: bool, started: float) -> None:
    g, s = results["gets"], results["staleness"]
    ratio = common.ratio(g["far"]["p50_ms"], g["near"]["p50_ms"], 1)
    wire = DELAYS.get((ORIGIN, EDGE)) or DELAYS[(EDGE, ORIGIN)]
    tables = [
        common.table(f"kv.get at the {EDGE} edge of a bucket placed in {ORIGIN} ({n} each, alternating, sequential)",
                     ["bucket", "edge mirrors", "p50 ms", "p99 ms", "answered by (20 direct gets)"],
                     [["far", "none", g["far"]["p50_ms"], g["far"]["p99_ms"], results["answered_by"]["far"]],
                      ["near", ", ".join(f"{r}: {m}" for r, m in results["edge_mirrors"].items()),
                       g["near"]["p50_ms"], g["near"]["p99_ms"], results["answered_by"]["near"]]]),
        common.table(f"staleness: a put at {ORIGIN} until the {EDGE} mirror holds it ({s['n']} writes)",
                     ["p50 ms", "p90 ms", "max ms", "min ms", f"one-way {ORIGIN}->{EDGE} ms",
                      f"kv.get at {EDGE} right after the put's ack still old"],
                     [[s["p50_ms"], s["p90_ms"], s["max_ms"], s["min_ms"], wire, f"{s['stale_after_ack']}/{s['n']}"]]),
    ]
    notes = [
        "One-way delays as in bench/latency.py: " + ", ".join(f"{a}-{b} {ms} ms" for (a, b), ms in DELAYS.items())
        + f". The reader is a nats-py client at the {EDGE} edge; `far` crosses to {ORIGIN} and back for every get, "
        f"`near` is answered by the {EDGE} mirror: in a supercluster the gateways prefer the local cluster, so the "
        "bucket's own name is answered at the edge.",
        "The lag is measured from sending the put (at the origin's edge) to the first direct get of the syd "
        "mirror, by its own name, that returns the new value. The mirror's internal consumer is sent each message "
        "as soon as the origin stores it, so the lag is about the one-way delay from the origin to the mirror's "
        "region; a reader at the edge sees the old value during that window (read-your-writes holds only at "
        "the origin).",
        *[f"problem: {p}" for p in results["problems"]],
    ]
    key = (f"edge reads: kv.get p50 at {EDGE}, no mirror / edge mirror = {ratio} ({g['far']['p50_ms']} vs "
           f"{g['near']['p50_ms']} ms); mirror lag p50 {s['p50_ms']} ms, max {s['max_ms']} ms")
    common.record("edge_reads", "7. Edge reads", quick, started, tables, notes, key, results)
    log(key)


if __name__ == "__main__":
    main()
