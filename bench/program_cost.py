"""Benchmark 4, program cost over size: the time to evaluate the program under Pulumi's mocks,
and `pulumi preview` with the real engine, for 1, 5, 15 and 35 regions x 3 Machines; the
growth ratio, and where the time goes (cProfile of the mock evaluation, and a linear fit of
the preview's time over its resource count).
"""
from __future__ import annotations

import asyncio
import cProfile
import io
import pstats
import sys
import time
from collections import defaultdict

import common
from common import log

SIZES = [1, 5, 15, 35]


def regions(n: int) -> list[str]:
    from nats_fly.config.regions import FLY_REGIONS
    primary = ["ord", "syd", "cdg"]
    rest = [r for r in FLY_REGIONS if r not in primary]
    return (primary + rest)[:n]


class Mocks:
    """As tests/conftest.py: every Command 'runs'; the TLS marker prints a PEM pair."""

    def __new__(cls):
        import pulumi

        class _Mocks(pulumi.runtime.Mocks):
            def new_resource(self, args):
                state = dict(args.inputs)
                if args.typ == "command:local:Command":
                    state["stdout"] = ("-----BEGIN PRIVATE KEY-----\nMC4=\n-----END PRIVATE KEY-----\n"
                                       "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
                                       if args.name.endswith("-tls-marker") else "")
                    state["stderr"] = ""
                return f"{args.name}-id", state

            def call(self, args):
                return {}
        return _Mocks()


def evaluate(n: int, profile: cProfile.Profile | None = None) -> tuple[float, int]:
    """Run NatsCluster for n regions x 3 Machines under the mocks to completion: (seconds, resources)."""
    import pulumi
    from nats_fly import NatsCluster

    def program():
        return NatsCluster("nats", {
            "app": "bench-cost", "regions": regions(n), "machinesPerRegion": 3, "users": ["app"],
            "sysPassword": pulumi.Output.secret("s" * 16), "userPasswords": pulumi.Output.secret({"app": "p" * 10})})
    return under_mocks(program, profile)


def under_mocks(program, profile: cProfile.Profile | None = None) -> tuple[float, int]:
    """Run a Pulumi program (a function) under the mocks to completion: (seconds, resources)."""
    import pulumi
    from pulumi.runtime import mocks as pulumi_mocks, stack
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    monitor = pulumi_mocks.MockMonitor(Mocks())
    pulumi.runtime.set_mocks(monitor.mocks, project="nats-fly", stack="bench", preview=False, monitor=monitor)
    try:
        if profile:
            profile.enable()
        t0 = time.perf_counter()
        pulumi_mocks._sync_await(stack.run_pulumi_func(program))
        took = time.perf_counter() - t0
        if profile:
            profile.disable()
        return took, len(monitor.resources)
    finally:
        pulumi.runtime.settings.reset_options()
        loop.close()
        asyncio.set_event_loop(None)


def where(profile: cProfile.Profile) -> tuple[dict, list]:
    """Self time by package, and the top functions by cumulative time."""
    stats = pstats.Stats(profile, stream=io.StringIO())
    total = sum(v[2] for v in stats.stats.values())
    by_package: dict = defaultdict(float)
    for (filename, _line, _name), (_cc, _nc, tt, _ct, _callers) in stats.stats.items():
        f = filename.replace("\\", "/")
        if "/components/" in f or "/nats_fly/" in f:
            key = "nats_fly (our components)"
        elif "/pulumi_command/" in f:
            key = "pulumi_command SDK"
        elif "/pulumi/" in f:
            key = "pulumi SDK"
        elif "/grpc/" in f or "/google/protobuf/" in f:
            key = "grpc / protobuf"
        elif "/asyncio/" in f or "selectors" in f:
            key = "asyncio"
        elif "/yaml/" in f or "semver" in f:
            key = "yaml / other libraries"
        elif filename.startswith("<") or filename == "~":
            key = "builtins"
        else:
            key = "python stdlib and other"
        by_package[key] += tt
    shares = {k: round(100 * v / total, 1) for k, v in sorted(by_package.items(), key=lambda kv: -kv[1])}
    top = []
    ordered = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])
    for (filename, line, name), (_cc, nc, tt, ct, _callers) in ordered[:10]:
        short = (filename.split("site-packages/")[-1].replace(str(common.REPO) + "/", "")
                 .replace(sys.base_prefix + "/lib/", ""))
        top.append([f"{short}:{line} {name}", nc, round(tt * 1000, 1), round(ct * 1000, 1)])
    return shares, top


def preview(n: int, reps: int) -> dict:
    from enginestack import Stack
    stack = Stack(None, "bench-cost", {"regions": regions(n), "machinesPerRegion": 3})
    try:
        times = []
        for _ in range(reps):
            t0 = time.monotonic()
            out = stack.project.pulumi("preview", "--json")
            times.append(time.monotonic() - t0)
        import json
        steps = json.loads(out.stdout).get("steps", [])
        return {"s": min(times), "all_s": [round(t, 2) for t in times], "steps": len(steps)}
    finally:
        stack.close()


def fit(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Least squares y = a + b x: (a, b, r^2)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
    a = my - b * mx
    ss = sum((y - my) ** 2 for y in ys)
    r2 = 1 - sum((y - a - b * x) ** 2 for x, y in zip(xs, ys)) / ss if ss else 1.0
    return a, b, r2


def main() -> None:
    opts = common.args(__doc__)
    started = time.monotonic()
    reps = 3 if opts.quick else 7
    preview_reps = 1 if opts.quick else 3
    results: dict = {}
    evaluate(1)  # warm imports
    for n in SIZES:
        runs = [evaluate(n) for _ in range(reps)]
        results[n] = {"regions": n, "machines": 3 * n, "resources": runs[0][1],
                      "mock_s": round(common.med([t for t, _ in runs]), 4),
                      "mock_all_s": [round(t, 4) for t, _ in runs]}
        log(f"mocks {n} regions: {results[n]}")
    profile = cProfile.Profile()
    evaluate(SIZES[-1], profile)
    shares, top = where(profile)
    for n in SIZES:
        results[n]["preview"] = preview(n, preview_reps)
        log(f"preview {n} regions: {results[n]['preview']}")

    first, last = results[SIZES[0]], results[SIZES[-1]]
    size_ratio = last["resources"] / first["resources"]
    mock_growth = last["mock_s"] / first["mock_s"]
    preview_growth = last["preview"]["s"] / first["preview"]["s"]
    a, b, r2 = fit([results[n]["resources"] for n in SIZES], [results[n]["preview"]["s"] for n in SIZES])
    ma, mb, mr2 = fit([results[n]["resources"] for n in SIZES], [results[n]["mock_s"] for n in SIZES])
    rows = [[n, results[n]["machines"], results[n]["resources"], round(results[n]["mock_s"] * 1000, 1),
             round(results[n]["mock_s"] * 1000 / results[n]["resources"], 2), round(results[n]["preview"]["s"], 2),
             round(results[n]["preview"]["s"] * 1000 / results[n]["resources"], 1)] for n in SIZES]
    tables = [
        common.table("Evaluation under mocks and `pulumi preview` (3 Machines per region)",
                     ["regions", "Machines", "resources", "mocks ms (median)", "mocks ms / resource",
                      "preview s (best)", "preview ms / resource"], rows),
        common.table("Growth from 1 to 35 regions",
                     ["", "resources", "mocks", "preview"],
                     [["ratio 35/1", round(size_ratio, 2), round(mock_growth, 2), round(preview_growth, 2)],
                      ["linear fit over resources", "", f"{ma * 1000:.1f} ms + {mb * 1000:.2f} ms x resources "
                       f"(r2 {mr2:.3f})", f"{a:.2f} s + {b * 1000:.1f} ms x resources (r2 {r2:.3f})"]]),
        common.table("Mock evaluation at 35 regions, self time by package (cProfile)",
                     ["package", "% of self time"], [[k, v] for k, v in shares.items()]),
        common.table("Top functions by self time (35 regions, one evaluation under cProfile)",
                     ["function", "calls", "self ms", "cumulative ms"], top),
    ]
    notes = [
        f"Mocks: NatsCluster built under pulumi.runtime.set_mocks (the tests/conftest.py pattern), {reps} runs "
        f"per size, median. Preview: `pulumi preview` on a copy of the project with a file backend, best of "
        f"{preview_reps}, with the Pulumi CLI, its Python language host and the command plugin from scripts/bootstrap.",
        f"The preview's fixed cost (the fit's intercept, {a:.2f} s: CLI start, plugin and language host start, "
        f"the Python program's imports) dominates at every size here; each resource adds about {b * 1000:.0f} ms.",
    ]
    key = (f"program cost 1->35 regions ({size_ratio:.1f}x resources): mocks x{mock_growth:.1f}, preview "
           f"x{preview_growth:.2f}; growth ratio (preview growth / size growth) = {preview_growth / size_ratio:.2f}")
    common.record("program_cost", "4. Program cost over size", opts.quick, started, tables, notes, key,
                  {str(k): v for k, v in results.items()} | {"profile_shares": shares})
    log(key)


if __name__ == "__main__":
    sys.setrecursionlimit(10000)
    main()
