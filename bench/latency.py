"""Benchmark 5, latency against the wire: with one-way delays between the stand-in's regions
(set_delay, both ways), the p50/p99 publish->deliver latency across each region pair against the
configured delay, for the mesh and the supercluster; request->reply to the nearest responder in
the supercluster (the mesh beside it); and within one region, against a single server.

Clients connect through the stand-in's edge (`<app>.fly.dev:10000` as seen from a region), so a
client in a region reaches a server of that region without delay; only traffic between regions
crosses the delayed links. Every client runs in this one process and event loop, so send and
receive times come from one clock.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import json
import struct
import time

import common
from common import log

DELAYS = {("ord", "cdg"): 45, ("ord", "syd"): 90, ("syd", "cdg"): 135}  # one-way ms, set both ways
RATE = 500  # messages per second per direction (paced; latency, not throughput)


def delay_of(a: str, b: str) -> float:
    return 0 if a == b else DELAYS.get((a, b)) or DELAYS.get((b, a))


async def connect(standin, stack, region: str):
    import nats
    host, port = standin.edge(stack.app, region)
    nc = await nats.connect(f"nats://{host}:{port}", user="app", password=stack.user_password("app"),
                            connect_timeout=5, allow_reconnect=False, name=f"bench-{region}")
    return nc


def server_of(nc) -> str:
    return nc._server_info.get("server_name", "?")


async def one_way(standin, stack, pub_region: str, sub_region: str, n: int) -> dict:
    sub_nc = await connect(standin, stack, sub_region)
    pub_nc = await connect(standin, stack, pub_region)
    subject = f"lat.{pub_region}.{sub_region}.{time.monotonic_ns()}"
    got: dict[int, float] = {}
    first = asyncio.Event()
    done = asyncio.Event()

    async def on_message(msg):
        now = time.perf_counter_ns()
        seq, sent = struct.unpack("!qq", msg.data[:16])
        if seq >= 0:
            got[seq] = (now - sent) / 1e6
            if len(got) >= n:
                done.set()
        first.set()
    try:
        await sub_nc.subscribe(subject, cb=on_message)
        await sub_nc.flush()
        deadline = time.monotonic() + 20
        while not first.is_set():  # until interest has crossed the routes or gateways
            if time.monotonic() > deadline:
                return {"error": "no message crossed in 20 s"}
            await pub_nc.publish(subject, struct.pack("!qq", -1, 0))
            await pub_nc.flush()
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        interval = 1 / RATE
        t0 = time.perf_counter()
        for seq in range(n):
            wait = t0 + seq * interval - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            await pub_nc.publish(subject, struct.pack("!qq", seq, time.perf_counter_ns()) + b"x" * 112)
        await pub_nc.flush()
        try:
            await asyncio.wait_for(done.wait(), 10)
        except asyncio.TimeoutError:
            pass
        values = list(got.values())
        return {"n": n, "received": len(values), "p50_ms": common.r(common.pct(values, 50), 2),
                "p99_ms": common.r(common.pct(values, 99), 2), "max_ms": common.r(max(values) if values else None),
                "servers": f"{server_of(pub_nc)} -> {server_of(sub_nc)}"}
    finally:
        await pub_nc.close()
        await sub_nc.close()


async def request_reply(standin, stack, regions: list[str], from_region: str, n: int) -> dict:
    """A responder in every region (one queue group); n sequential requests from from_region."""
    responders = []
    subject = f"svc.echo.{time.monotonic_ns()}"
    for region in regions:
        nc = await connect(standin, stack, region)

        async def answer(msg, region=region):
            await msg.respond(region.encode())
        await nc.subscribe(subject, queue="svc", cb=answer)
        await nc.flush()
        responders.append(nc)
    requester = await connect(standin, stack, from_region)
    try:
        deadline = time.monotonic() + 20
        while True:  # until the queue group's interest is known everywhere
            try:
                await requester.request(subject, b"warm", timeout=2)
                break
            except Exception:
                if time.monotonic() > deadline:
                    return {"error": "no reply in 20 s"}
        await asyncio.sleep(0.5)
        times, who = [], {}
        for _ in range(n):
            t0 = time.perf_counter_ns()
            reply = await requester.request(subject, b"ping", timeout=5)
            times.append((time.perf_counter_ns() - t0) / 1e6)
            who[reply.data.decode()] = who.get(reply.data.decode(), 0) + 1
        return {"n": n, "p50_ms": common.r(common.pct(times, 50)), "p99_ms": common.r(common.pct(times, 99)),
                "answered_by": who}
    finally:
        await requester.close()
        for nc in responders:
            await nc.close()


def gateways_whole(standin, app: str, regions: list[str]) -> bool:
    for m in standin.machines(app):
        try:
            doc = json.loads(standin.http(m["id"], 8222, "/gatewayz")[1])
        except Exception:
            return False
        if set(doc.get("outbound_gateways", {})) != set(regions) - {m["region"]}:
            return False
    return True


def main() -> None:
    opts = common.args(__doc__)
    common.require_root()
    import flyhelpers as fh
    started = time.monotonic()
    n = 500 if opts.quick else 2000
    rr = 100 if opts.quick else 300
    regions = common.REGIONS
    counts = {"ord": 2, "syd": 1, "cdg": 1}  # two in ord: the in-region pair crosses a route
    results: dict = {"mesh": {}, "supercluster": {}, "single": {}, "request_reply": {}, "problems": []}
    with common.standin() as standin:
        stacks = {
            "mesh": fh.load_stack("prod", jetstream=False, app="bl-mesh", peer_wait=3, machines=dict(counts)),
            "supercluster": fh.load_stack("prod", jetstream=False, app="bl-sc", topology="supercluster", peer_wait=3,
                                          machines=dict(counts)),
            "single": fh.load_stack("prod", jetstream=False, app="bl-single", peer_wait=0, regions=("ord",), machines={"ord": 1}),
        }
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            for f in [pool.submit(fh.components_up, standin, s, fh.render_ours(s, standin.root / "contexts" / s.app))
                      for s in stacks.values()]:
                f.result()
        for kind in ("mesh", "supercluster", "single"):
            fh.wait_healthy(standin, stacks[kind].app, timeout=60)
        if fh.wait_mesh(standin, "bl-mesh", 4, 30) is None:
            results["problems"].append("mesh not full after 30 s: " + fh.describe(standin.routes("bl-mesh")))
        short = fh.wait_routes_complete(standin, "bl-mesh", timeout=10)
        if short:
            results["problems"].append(f"mesh route connections missing (known defect): {short}")
        deadline = time.monotonic() + 30
        while not gateways_whole(standin, "bl-sc", regions) and time.monotonic() < deadline:
            time.sleep(0.5)
        if not gateways_whole(standin, "bl-sc", regions):
            results["problems"].append("supercluster gateways incomplete after 30 s")
        for (a, b), ms in DELAYS.items():
            standin.set_delay(a, b, ms)
            standin.set_delay(b, a, ms)
        log(f"apps up and delays set after {time.monotonic() - started:.0f}s; problems: {results['problems']}")

        async def measure():
            # Interleaved, so that the shared machine's load falls on both topologies alike; the
            # single-server floor is taken three times (start, middle, end) and its median kept.
            floors = []
            pairs = [(a, b) for a in regions for b in regions]
            for i, (a, b) in enumerate(pairs):
                if i in (0, len(pairs) // 2):
                    floors.append(await one_way(standin, stacks["single"], "ord", "ord", n))
                    log("single", floors[-1])
                for kind in ("mesh", "supercluster"):
                    results[kind][f"{a}->{b}"] = out = await one_way(standin, stacks[kind], a, b, n)
                    log(kind, f"{a}->{b}", out)
            floors.append(await one_way(standin, stacks["single"], "ord", "ord", n))
            log("single", floors[-1])
            results["single"]["runs"] = floors
            results["single"]["ord->ord"] = sorted(floors, key=lambda f: f["p50_ms"])[1]
            results["request_reply"]["single ord"] = await request_reply(
                standin, stacks["single"], ["ord"], "ord", rr)
            for origin in ("ord", "syd"):
                for kind in ("supercluster", "mesh"):
                    results["request_reply"][f"{kind} from {origin}"] = out = await request_reply(
                        standin, stacks[kind], regions, origin, rr if kind == "supercluster" else rr // 3)
                    log("request/reply", kind, origin, out)
        asyncio.run(measure())
        for (a, b) in DELAYS:
            standin.set_delay(a, b, 0)
            standin.set_delay(b, a, 0)

    base = results["single"]["ord->ord"]
    rows = []
    for kind in ("mesh", "supercluster"):
        for pair, v in results[kind].items():
            a, b = pair.split("->")
            d = delay_of(a, b)
            if "error" in v:
                rows.append([kind, pair, d, "-", "-", "-", "-", "-", v["error"]])
                continue
            rows.append([kind, pair, d, v["p50_ms"], v["p99_ms"],
                         common.ratio(v["p50_ms"], d) if d else common.ratio(v["p50_ms"], base["p50_ms"]),
                         common.r(v["p50_ms"] - d), common.r(v["p99_ms"] - d), f"{v['received']}/{v['n']} "
                         f"({v['servers']})"])
    rows.append(["single server", "ord->ord", 0, base["p50_ms"], base["p99_ms"], 1.0, base["p50_ms"], base["p99_ms"],
                 f"{base['received']}/{base['n']} ({base['servers']})"])
    rr_rows = [[k, v.get("p50_ms"), v.get("p99_ms"),
                common.ratio(v.get("p50_ms"), results["request_reply"]["single ord"]["p50_ms"]),
                json.dumps(v.get("answered_by", v.get("error")))] for k, v in results["request_reply"].items()]
    tables = [
        common.table(f"publish -> deliver, {n} messages per direction at {RATE}/s, 128-byte payloads",
                     ["topology", "pair", "one-way delay ms", "p50 ms", "p99 ms",
                      "p50 / delay (in-region: / single server)", "p50 excess ms", "p99 excess ms",
                      "received (pub server -> sub server)"], rows),
        common.table("request -> reply, a responder in every region (one queue group), sequential requests",
                     ["setup", "p50 ms", "p99 ms", "p50 / single-server p50", "answered by"], rr_rows),
    ]
    cross = [(k, p, v) for k in ("mesh", "supercluster") for p, v in results[k].items()
             if "error" not in v and delay_of(*p.split("->"))]
    excess = {k: common.r(common.med([v["p50_ms"] - delay_of(*p.split("->")) for kk, p, v in cross if kk == k]))
              for k in ("mesh", "supercluster")}
    ratios = {k: common.r(common.med([v["p50_ms"] / delay_of(*p.split("->")) for kk, p, v in cross if kk == k]), 3)
              for k in ("mesh", "supercluster")}
    plot = plot_latency(results)
    notes = [
        "One-way delays, set both ways with set_delay: " + ", ".join(f"{a}-{b} {ms} ms" for (a, b), ms in DELAYS.items())
        + ". The stand-in has no netem: a TUN reader in its daemon (Python) holds each delayed packet, and the "
        "same daemon relays every client byte through its edge proxy, so some of the excess is the stand-in's "
        "own, and it grows with the machine's load (other engineers' test runs share its 2 cores). The "
        "single-server row (median of 3 runs spread over the measurement: "
        + ", ".join(f"{f['p50_ms']}/{f['p99_ms']}" for f in results["single"]["runs"]) + " ms p50/p99) is the "
        "floor of client + edge proxy + server.",
        "Ratios across regions: p50 / configured one-way delay. A publish crosses one link once: routes (mesh) and "
        "gateways (supercluster) are direct between regions, so the wire is the floor.",
        f"Median p50 excess over the wire across the 6 directed pairs: mesh {excess['mesh']} ms, supercluster "
        f"{excess['supercluster']} ms.",
        "In-region p50 is bimodal in the stand-in (about 0.6 ms or about 8.5 ms per run, on one server as on two), "
        "with the same server pair in different runs: it follows the machine's load, not the topology.",
        "Across regions the mesh's p99 ran to 1.5-2.8x the delay on some pairs where the supercluster's stayed "
        "within 1.1-1.4x (a mesh pair carries pooled route connections; the cause was not isolated and may be the "
        "stand-in's delay line under load). In the mesh, a queue group answers from any region (requests from ord "
        "went to all three); in the supercluster the nearest region answers.",
    ] + [f"problem: {p}" for p in results["problems"]]
    key = (f"latency vs wire: median p50/delay mesh {ratios['mesh']}, supercluster {ratios['supercluster']} "
           f"(excess {excess['mesh']} / {excess['supercluster']} ms); single-server p50 {base['p50_ms']} ms")
    common.record("latency", "5. Latency against the wire", opts.quick, started, tables, notes, key, results,
                  plots=[plot] if plot else [])
    log(key)


def plot_latency(results: dict) -> str | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4))
    top = max(DELAYS.values())
    ax.plot([0, top], [0, top], color="grey", linestyle=":", label="the wire (one-way delay)")
    for kind, marker in (("mesh", "o"), ("supercluster", "s")):
        pts = sorted((delay_of(*p.split("->")), v["p50_ms"], v["p99_ms"]) for p, v in results[kind].items()
                     if "error" not in v)
        xs = [p[0] for p in pts]
        line = ax.scatter(xs, [p[1] for p in pts], marker=marker, label=f"{kind} p50")
        ax.scatter(xs, [p[2] for p in pts], marker=marker, facecolors="none",
                   edgecolors=line.get_facecolor(), label=f"{kind} p99")
    ax.set_xlabel("configured one-way delay between the regions (ms)")
    ax.set_ylabel("publish -> deliver (ms)")
    ax.set_title("Latency against link delay (6 directed pairs + in-region)")
    return common.save_plot(fig, ax, "latency.png")


if __name__ == "__main__":
    main()
