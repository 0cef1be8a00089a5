"""Benchmark 8, edge reads: `kv.get` at the far edge (syd) of a KV bucket that lives in ord, with and
without edge mirrors (edgeRegions), in one run; how stale a mirror is (the lag from a write at the origin
to its appearance in the syd mirror); and, in a mesh, the bucket's own name against the syd mirror's.

A supercluster and a mesh on the Fly stand-in (ord, syd, cdg; one JetStream Machine each; the one-way
delays of bench/latency.py). The buckets are made by the provider's own handlers (nats_fly.assetprovider,
as the engine calls them) through the public URL. Supercluster: `far` (placement ord, no mirrors) and
`near` (placement ord, edgeRegions: true), read alternately, one get at a time, from one client at syd's
edge through nats-py's `kv.get` (a direct get when the bucket allows it: both do). Mesh: `near`, read at
syd alternately by `kv.get` and by a direct get addressed to the syd mirror's name. Every client runs in
this one process, so write and read times come from one clock.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
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


async def gets(reads: dict, n: int) -> dict[str, dict]:
    """n of each read (name -> a coroutine function giving the value), alternating, one at a time: p50/p99 ms."""
    times: dict[str, list[float]] = {name: [] for name in reads}
    for _ in range(n):
        for name, read in reads.items():
            t0 = time.perf_counter_ns()
            value = await read()
            times[name].append((time.perf_counter_ns() - t0) / 1e6)
            assert value == b"blue", value
    return {name: {"n": n, "p50_ms": common.r(common.pct(v, 50)), "p99_ms": common.r(common.pct(v, 99))}
            for name, v in times.items()}


def by_name(nc, stream: str, subject: str):
    """A direct get of `subject` addressed to `stream` (a mirror, by its own name)."""
    async def read() -> bytes:
        return (await nc.request(f"$JS.API.DIRECT.GET.{stream}.{subject}", b"", timeout=5)).data
    return read


def kv_get(kv, key: str):
    async def read() -> bytes:
        return (await kv.get(key)).value
    return read


async def until_mirrored(nc, mirror: str, subject: str, value: bytes, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while await by_name(nc, mirror, subject)() != value:
        assert time.monotonic() < deadline, f"{mirror} never got {value!r}"


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
        while await by_name(reader, mirror, "$KV.near.tick")() != value:
            pass
        lags.append((time.perf_counter_ns() - t0) / 1e6)
        await asyncio.sleep(0.05)
    return {"n": n, "p50_ms": common.r(common.pct(lags, 50)), "p90_ms": common.r(common.pct(lags, 90)),
            "max_ms": common.r(max(lags)), "min_ms": common.r(min(lags)), "stale_after_ack": stale_after_ack}


def connection_of(standin, stack) -> dict:
    """NatsCluster's connection as it is from where `pulumi up` runs: the public URL (the origin's edge)."""
    host, port = standin.edge(stack.app, ORIGIN)
    return {"servers": [f"nats://{host}:{port}"], "user": "app", "password": stack.user_password("app"),
            "regions": stack.counts, "topology": stack.settings.topology}


async def supercluster(standin, stack, n: int, writes: int, results: dict) -> None:
    """far (no mirrors) and near (edge mirrors) read alternately at syd by the bucket's name; the lag."""
    conn = connection_of(standin, stack)
    far = Bucket("far", {"connection": conn, "placement": ORIGIN})
    near = Bucket("near", {"connection": conn, "placement": ORIGIN, "edgeRegions": True})
    writer, reader = await connect(standin, stack, ORIGIN), await connect(standin, stack, EDGE)
    try:
        await far.create()
        results["edge_mirrors"] = (await near.create())["edgeMirrors"]
        mirror = results["edge_mirrors"][EDGE]
        for name in ("far", "near"):
            await (await writer.jetstream().key_value(name)).put("color", b"blue")
        buckets = {name: await reader.jetstream().key_value(name) for name in ("near", "far")}
        await until_mirrored(reader, mirror, "$KV.near.color", b"blue")
        results["answered_by"] = {
            name: await answered_by(reader, f"KV_{name}", f"$KV.{name}.color") for name in ("far", "near")}
        results["gets"] = await gets({name: kv_get(kv, "color") for name, kv in buckets.items()}, n)
        log("supercluster gets", results["gets"], results["answered_by"])
        results["staleness"] = await staleness(await writer.jetstream().key_value("near"), reader, mirror,
                                               buckets["near"], writes)
        log("staleness", results["staleness"])
    finally:
        await writer.close()
        await reader.close()
        await near.delete()
        await far.delete()


async def mesh(standin, stack, n: int, results: dict) -> None:
    """One bucket with edge mirrors, read at syd alternately by its own name (kv.get) and by the syd
    mirror's name."""
    near = Bucket("near", {"connection": connection_of(standin, stack), "placement": ORIGIN, "edgeRegions": True})
    writer, reader = await connect(standin, stack, ORIGIN), await connect(standin, stack, EDGE)
    try:
        mirrors = (await near.create())["edgeMirrors"]
        await (await writer.jetstream().key_value("near")).put("color", b"blue")
        for each in mirrors.values():  # any of them may answer the bucket's name
            await until_mirrored(reader, each, "$KV.near.color", b"blue")
        mirror = mirrors[EDGE]
        kv = await reader.jetstream().key_value("near")
        results["mesh_answered_by"] = await answered_by(reader, "KV_near", "$KV.near.color", 60)
        results["mesh_gets"] = await gets({"bucket": kv_get(kv, "color"),
                                           "mirror": by_name(reader, mirror, "$KV.near.color")}, n)
        log("mesh gets", results["mesh_gets"], results["mesh_answered_by"])
    finally:
        await writer.close()
        await reader.close()
        await near.delete()


def main() -> None:
    opts = common.args(__doc__)
    common.require_root()
    from nats_fly_testkit import fly as fh
    started = time.monotonic()
    n = 40 if opts.quick else 200
    writes = 10 if opts.quick else 50
    results: dict = {"problems": []}
    with common.standin() as standin:
        stacks = {"supercluster": fh.load_stack("prod", app="be-sc", topology="supercluster", peer_wait=3),
                  "mesh": fh.load_stack("prod", app="be-mesh", peer_wait=3)}
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            for f in [pool.submit(fh.components_up, standin, s, fh.render_ours(s, standin.root / "contexts" / s.app))
                      for s in stacks.values()]:
                f.result()
        for s in stacks.values():
            fh.wait_healthy(standin, s.app, timeout=120)
        if not wait_gateways(standin, stacks["supercluster"].app, common.REGIONS):
            results["problems"].append("supercluster gateways incomplete after 30 s")
        set_delays(standin)
        log(f"up, delays set after {time.monotonic() - started:.0f}s")
        asyncio.run(supercluster(standin, stacks["supercluster"], n, writes, results))
        asyncio.run(mesh(standin, stacks["mesh"], n, results))
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
    m, who = results["mesh_gets"], results["mesh_answered_by"]
    tables.append(common.table(
        f"mesh: one bucket in {ORIGIN} with edge mirrors, read at {EDGE} by its own name and by the {EDGE} mirror's "
        f"({n} each, alternating)", ["read", "p50 ms", "p99 ms", "answered by (60 direct gets to the bucket's name)"],
        [["kv.get (the bucket's name)", m["bucket"]["p50_ms"], m["bucket"]["p99_ms"], who],
         [f"direct get to KV_near_{EDGE}", m["mirror"]["p50_ms"], m["mirror"]["p99_ms"], "-"]]))
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
        "In the mesh the direct-get queue group spans the one cluster and its member is picked at random, so "
        "the bucket's own name is answered from every region (its p50 is a round trip to wherever the pick "
        f"fell); asking the {EDGE} mirror by its name stays in {EDGE}.",
        *[f"problem: {p}" for p in results["problems"]],
    ]
    key = (f"edge reads: kv.get p50 at {EDGE}, no mirror / edge mirror = {ratio} ({g['far']['p50_ms']} vs "
           f"{g['near']['p50_ms']} ms); mirror lag p50 {s['p50_ms']} ms, max {s['max_ms']} ms; mesh, bucket's name / "
           f"mirror's name = {common.ratio(m['bucket']['p50_ms'], m['mirror']['p50_ms'], 1)}")
    common.record("edge_reads", "8. Edge reads", quick, started, tables, notes, key, results)
    log(key)


if __name__ == "__main__":
    main()
