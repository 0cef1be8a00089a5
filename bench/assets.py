"""Benchmark 9, JetStream assets as code, on one local cluster of 3 regions (one server each, JetStream on):
100 streams (R3, file) made by one `pulumi up` of a Python program that declares 100 Stream resources, against
the same 100 made by a loop of natscli `nats stream add` (v0.5.0, built from Go modules; the same config, given
as the JSON the server holds for a stream the up made); and a no-op `up` with the 100 declared against a no-op
`up` with none, on the same cluster stack (goal <= 1.5). The cases alternate within each round.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common
from common import log, r

STREAMS = 100
CONFIG = {"replicas": 3, "storage": "file", "maxMsgs": 1_000_000, "maxAge": "72h"}
SERVER_WRITTEN = ("created", "ts")
"""Keys of a stream's config that the server writes and a create does not send."""


def declared(count: int) -> dict:
    """The stack config `assets` of tests/kit/assets.py's program: `count` streams, each its own subjects."""
    return {f"s{i:03d}": {"kind": "Stream", "args": {"subjects": [f"bench.{i}.>"], **CONFIG}} for i in range(count)}


def up(project, expect: dict | None = None) -> float:
    """Seconds of one `pulumi up` (no preview, as bench 2); with `expect`, the resource changes it must show."""
    t0 = time.monotonic()
    project.pulumi("up", "--yes", "--skip-preview")
    took = time.monotonic() - t0
    if expect is not None:
        changes = project.last_changes()
        if changes != expect:
            raise SystemExit(f"pulumi up changed {changes}, expected {expect}")
    return took


def comparable(config: dict) -> dict:
    """A stream's config without what differs by name or is written by the server."""
    meta = {k: v for k, v in (config.get("metadata") or {}).items() if not k.startswith("_nats")}
    rest = {k: v for k, v in config.items() if k not in ("name", "subjects", "metadata", *SERVER_WRITTEN)}
    return rest | ({"metadata": meta} if meta else {})


def cli_configs(template: dict, folder: Path) -> list[Path]:
    """The natscli loop's input: one JSON file per stream, the config of a stream the up made, renamed."""
    files = []
    for i in range(STREAMS):
        path = folder / f"cli{i:03d}.json"
        path.write_text(json.dumps(comparable(template) | {"name": f"cli{i:03d}", "subjects": [f"cli.{i}.>"]}))
        files.append(path)
    return files


def natscli_add(binary: str, conn: dict, files: list[Path], home: Path) -> float:
    """Seconds of the loop `nats stream add --config FILE`, credentials by environment (never the command line)."""
    env = {**os.environ, "NATS_URL": ",".join(conn["servers"]), "NATS_USER": conn["user"],
           "NATS_PASSWORD": conn["password"], "XDG_CONFIG_HOME": str(home)}  # no natscli context of this machine
    t0 = time.monotonic()
    for path in files:
        done = subprocess.run([binary, "stream", "add", "--config", str(path)], env=env, capture_output=True,
                              text=True, timeout=120)
        if done.returncode:
            raise SystemExit(f"nats stream add --config {path.name} failed: {(done.stdout + done.stderr)[-500:]}")
    return time.monotonic() - t0


def streams(conn: dict, prefix: str) -> dict[str, dict]:
    """name -> config of the account's streams whose name starts with `prefix`."""
    from nats_fly_testkit.assets import ask
    found, offset = {}, 0
    while True:
        page = ask(conn, "STREAM.LIST", {"offset": offset})
        for info in page.get("streams") or []:
            if info["config"]["name"].startswith(prefix):
                found[info["config"]["name"]] = info["config"]
        offset += page.get("limit", 0)
        if not page.get("streams") or offset >= page.get("total", 0):
            return found


def remove(conn: dict, names: list[str]) -> None:
    from nats_fly_testkit.assets import ask
    for name in names:
        ask(conn, f"STREAM.DELETE.{name}")


def same_config(conn: dict) -> str:
    """Whether natscli's streams hold the very config of the up's, apart from name and subjects; raises when not."""
    ours, theirs = streams(conn, "s"), streams(conn, "cli")
    if len(ours) != STREAMS or len(theirs) != STREAMS:
        raise SystemExit(f"expected {STREAMS} streams each, found {len(ours)} by the up and {len(theirs)} by natscli")
    a, b = comparable(ours["s000"]), comparable(theirs["cli000"])
    if a != b:
        differ = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        raise SystemExit(f"natscli's streams differ from the up's in {differ}")
    return f"{len(a)} config keys equal"


def provider_start() -> float:
    """Seconds for a fresh interpreter to load the plugin's code (what the engine waits for at each start)."""
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-c", "import nats_fly.provider"], check=True, timeout=60)
    return time.monotonic() - t0


def program_side(count: int) -> float:
    """Seconds the Python SDK spends declaring `count` streams, under Pulumi's mocks (no engine, no provider)."""
    import pulumi
    from nats_fly import Stream
    from program_cost import under_mocks

    def program():
        conn = pulumi.Output.secret({"servers": ["nats://127.0.0.1:4222"], "user": "app", "password": "p" * 10})
        for name, spec in declared(count).items():
            Stream(name, {"connection": conn, **spec["args"]})
    return under_mocks(program)[0]


def handlers(count: int) -> float:
    """Seconds our provider's own Check and Diff take for `count` unchanged streams, in process (no gRPC, no
    engine); raises when a Diff sees a change."""
    from pulumi.provider.experimental import provider as xp
    from nats_fly.assetprovider import Assets, wrap
    conn = {"servers": ["nats://127.0.0.1:4222"], "user": "app", "password": "p" * 10,
            "regions": {region: 1 for region in common.REGIONS}, "topology": "mesh"}
    provider = Assets("bench")

    async def go() -> float:
        t0 = time.perf_counter()
        for name, spec in declared(count).items():
            urn = f"urn:pulumi:bench::assets::nats-fly:index:Stream::{name}"
            inputs = {k: wrap(v) for k, v in {"connection": conn, **spec["args"]}.items()}
            checked = await provider.check(xp.CheckRequest(urn, inputs, inputs, b""))
            diff = await provider.diff(xp.DiffRequest(urn, name, {**checked.inputs, "stream": wrap(name)},
                                                      checked.inputs, []))
            if checked.failures or diff.changes:
                raise SystemExit(f"{name}: the provider saw {checked.failures or diff.detailed_diff} in a no-op")
        return time.perf_counter() - t0
    return asyncio.run(go())


def run(opts, binary: str, workdir: Path) -> dict:
    from nats_fly_testkit.assets import assets_project, connection, set_config
    rounds, noops = (1, 2) if opts.quick else (3, 3)
    project = assets_project(workdir, common.REGIONS, {})
    times: dict[str, list[float]] = {"cluster_up": [], "noop_0": [], "create_up": [], "noop_100": [],
                                     "natscli": [], "delete_up": []}
    try:
        times["cluster_up"].append(up(project))
        base = sum(project.last_changes().values())
        conn = connection(project)
        files, check = None, ""
        for i in range(rounds):
            times["noop_0"] += [up(project, {"same": base}) for _ in range(noops)]
            set_config(project, assets=declared(STREAMS))
            times["create_up"].append(up(project, {"same": base, "create": STREAMS}))
            times["noop_100"] += [up(project, {"same": base + STREAMS}) for _ in range(noops)]
            if files is None:
                files = cli_configs(streams(conn, "s000")["s000"], workdir)
            times["natscli"].append(natscli_add(binary, conn, files, workdir))
            check = same_config(conn)
            remove(conn, list(streams(conn, "cli")))
            set_config(project, assets={})
            times["delete_up"].append(up(project, {"same": base, "delete": STREAMS}))
            log(f"round {i + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()))
        times["provider_start"] = [provider_start() for _ in range(3)]
        program_side(1)  # warm: the SDK's imports
        times["program_100"] = [program_side(STREAMS) for _ in range(3)]
        times["handlers_100"] = [handlers(STREAMS) for _ in range(3)]
        return {"times": {k: [round(t, 2) for t in v] for k, v in times.items()}, "base_resources": base,
                "config_check": check, "noops_per_round": noops, "rounds": rounds}
    finally:
        project.pulumi("destroy", "--yes", "--skip-preview", check=False)
        from nats_fly_testkit.support import managed_servers
        for pid in managed_servers(project.root):
            os.kill(pid, signal.SIGKILL)


def main() -> None:
    opts = common.args(__doc__)
    started = time.monotonic()
    from throughput import natscli
    binary = natscli()
    if not binary:
        raise SystemExit("natscli could not be built (Go and the module proxy are needed once)")
    workdir = Path(tempfile.mkdtemp(prefix="nats-fly-bench-assets-"))
    try:
        result = run(opts, binary, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    med = {k: common.med(v) for k, v in result["times"].items()}
    create_ratio = common.ratio(med["create_up"], med["natscli"])
    noop_ratio = common.ratio(med["noop_100"], med["noop_0"])
    holds = noop_ratio is not None and noop_ratio <= 1.5
    t = result["times"]
    rows = [
        ["no-op up, 0 assets declared", len(t["noop_0"]), r(med["noop_0"]), ""],
        [f"up that creates {STREAMS} streams", len(t["create_up"]), r(med["create_up"]),
         r(1000 * (med["create_up"] - med["noop_0"]) / STREAMS, 1)],
        [f"loop of `nats stream add` x {STREAMS}", len(t["natscli"]), r(med["natscli"]), r(1000 * med["natscli"] / STREAMS, 1)],
        [f"no-op up, {STREAMS} streams declared", len(t["noop_100"]), r(med["noop_100"]),
         r(1000 * (med["noop_100"] - med["noop_0"]) / STREAMS, 1)],
        [f"up that deletes {STREAMS} streams", len(t["delete_up"]), r(med["delete_up"]),
         r(1000 * (med["delete_up"] - med["noop_0"]) / STREAMS, 1)],
    ]
    extra = med["noop_100"] - med["noop_0"]
    rest = extra - med["provider_start"] - med["program_100"] - med["handlers_100"]
    where = [
        [f"no-op up: {STREAMS} streams declared minus 0 assets", r(extra), 100.0],
        ["a second start of the plugin (the streams' default provider; the 0-asset stack starts only the explicit "
         "Provider): a fresh interpreter loading nats_fly.provider", r(med["provider_start"]),
         r(100 * med["provider_start"] / extra, 0)],
        [f"the program declaring the {STREAMS} streams (Pulumi's Python SDK, under its mocks)", r(med["program_100"]),
         r(100 * med["program_100"] / extra, 0)],
        [f"our provider's Check and Diff of the {STREAMS} (nats_fly.assetprovider, in process)",
         r(med["handlers_100"], 3), r(100 * med["handlers_100"] / extra, 0)],
        [f"the rest: the engine's {STREAMS} steps and their Check and Diff calls over gRPC (the Python SDK's "
         f"provider server included)", r(rest), r(100 * rest / extra, 0)],
    ]
    tables = [
        common.table(f"Seconds, median (local cluster: {', '.join(common.REGIONS)}, one server each; streams R3, file)",
                     ["case", "runs", "s (median)", "ms per stream (above the 0-asset no-op for an up)"], rows),
        common.table("Ratios (same run)", ["ratio", "value", "goal"],
                     [[f"{STREAMS} streams: one up / natscli loop", create_ratio, "-"],
                      [f"no-op up: {STREAMS} streams / 0 assets", noop_ratio, f"<= 1.5: {'holds' if holds else 'missed'}"]]),
        common.table("Where a no-op up's time for the streams goes (medians of this run)", ["part", "s", "%"], where),
    ]
    notes = [
        f"One stack (tests/kit/assets.py's program: a NatsCluster on the local platform with JetStream, a nats-fly "
        f"Provider, and the streams its stack config declares; {result['base_resources']} resources without assets), "
        f"the nats-fly plugin found as a user finds it (a `plugins:` entry for the venv's bin, "
        f"PULUMI_IGNORE_AMBIENT_PLUGINS=true). `pulumi up --yes --skip-preview`, default parallelism (8). "
        f"{result['rounds']} rounds, each: {result['noops_per_round']} no-op ups with 0 assets, the up that creates "
        f"the {STREAMS}, {result['noops_per_round']} no-op ups with them, the natscli loop, the up that deletes them.",
        f"Each up is checked by its resource changes (a no-op: only `same`). The natscli loop is one process per "
        f"stream (`nats stream add --config FILE`, URL and credentials in NATS_URL, NATS_USER, NATS_PASSWORD), as a "
        f"shell loop runs it; its config is the JSON the server holds for a stream the up made, renamed, and the "
        f"streams it makes are checked against the up's ({result['config_check']}, apart from name and subjects).",
        "An up's time includes the engine's start, the Python program (the cluster's own resources too) and the "
        "plugin's start; the natscli loop has none of that, so the ratio is what a user sees, not the cost per call.",
    ]
    key = (f"assets: {STREAMS} streams by one up / natscli loop = {create_ratio}; no-op up {STREAMS} streams / 0 "
           f"assets = {noop_ratio} (goal <= 1.5: {'holds' if holds else 'missed'})")
    common.record("assets", "9. JetStream assets as code", opts.quick, started, tables, notes, key,
                  result | {"median_s": {k: r(v) for k, v in med.items()}},
                  extra_versions={"natscli": common.NATSCLI_VERSION})
    log(key)


if __name__ == "__main__":
    main()
