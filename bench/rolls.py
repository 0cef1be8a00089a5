"""Benchmark 7, a restart under load (issue 20): a restart-type change (lameDuckGracePeriod) on a local
3-region JetStream mesh with an R3 stream, while a client publishes one message at a time (retrying a
failed publish with the same Nats-Msg-Id), done two ways in the same run, alternately:
- the roll: `pulumi up`, each server's Command after the one before it, behind plain /healthz;
- all at once: the three servers' `python -m nats_fly local ensure` started together with the changed
  conf, as the engine ran them before the chain.
Per run: publish attempts that failed, the longest a publish took, acknowledged messages lost.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nats

import common
from common import log
from nats_fly.contract import operations as ops
from nats_fly.render import natsconf
from nats_fly.render.secrets import route_password
from nats_fly_testkit import durable as d
from nats_fly_testkit.engine import copy_project, engine_environment

SERVERS = ["ord-0", "syd-0", "cdg-0"]
APP = "nats-local"  # config/Pulumi.local.yaml's app
WINDOW = 3.0  # seconds of publishing before and after each change


def all_at_once(state: Path, sys_password: str, grace: str) -> None:
    """Each server's applied conf with the new grace period, ensured by three processes started together."""
    env = {**os.environ, natsconf.SYS_PASSWORD: natsconf.conf_string(sys_password),
           natsconf.ROUTE_PASSWORD: natsconf.conf_string(route_password(APP, sys_password))}
    runs = []
    for name in SERVERS:
        applied = (state / f"{name}.applied.json").read_text()
        conf = {**json.loads(re.sub(r"(\{\{secret:[A-Z0-9_]+\}\})#[0-9a-f]{16}", r"\1", applied)),
                "lame_duck_grace_period": grace}
        started = json.loads((state / f"{name}.json").read_text())
        op = ops.LocalEnsure(name=name, state_dir=state, client_port=started["client_port"],
                             http_port=started["http_port"], nats_version=started["version"])
        runs.append((subprocess.Popen([sys.executable, "-m", "nats_fly", *op.path, *op.argv()], stdin=subprocess.PIPE,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                      env={**env, ops.REPAIR_ENV: str(started["generation"])}), json.dumps(conf)))
    for proc, conf in runs:
        proc.stdin.write(conf)
        proc.stdin.close()
    for proc, _ in runs:
        if proc.wait(timeout=300) != 0:
            raise SystemExit(f"local ensure failed: {proc.stderr.read()}")


async def measured(urls: list[str], change) -> dict:
    """`change()` (blocking) in a thread, with the publisher running WINDOW seconds before and after."""
    nc = await nats.connect(urls, max_reconnect_attempts=-1, reconnect_time_wait=0.5)
    client = type("Client", (), {"nc": nc})()
    try:
        await d.ensure_stream(nc)
        publisher = d.Publisher(client, f"dur.bench.{secrets.token_hex(3)}", interval=0.02)
        stop = asyncio.Event()
        task = asyncio.create_task(publisher.run(stop))
        await asyncio.sleep(WINDOW)
        t0 = time.monotonic()
        await asyncio.to_thread(change)
        took = time.monotonic() - t0
        await asyncio.sleep(WINDOW)
        stop.set()
        await task
        lost = await d.lost_acked(nc, [publisher])
        attempts = publisher.count + publisher.errors
        return {"messages": publisher.count, "failed_attempts": publisher.errors,
                "failed_pct": round(100 * publisher.errors / attempts, 2), "gave_up": publisher.gave_up,
                "longest_publish_s": round(max((s for _t, s in publisher.stalls), default=0), 2),
                "acked_lost": len(lost), "change_s": round(took, 1)}
    finally:
        await nc.close()


def main() -> None:
    args = common.args(__doc__)
    started = time.monotonic()
    runs = 1 if args.quick else 3
    workdir = Path(tempfile.mkdtemp(prefix="nats-fly-bench-rolls-"))
    project = copy_project(workdir / "project", "local", "bench", engine_environment(workdir))
    sys_password = "sys-" + secrets.token_hex(10)
    project.config({"jetstream": True, "lameDuckGracePeriod": "2s"})
    project.pulumi("config", "set", "--secret", "sysPassword", stdin=sys_password)
    state = project.root / ".nats-fly" / "bench" / "nats" / "local"
    results: dict[str, list[dict]] = {"roll": [], "all at once": []}
    try:
        project.pulumi("up", "--yes", "--skip-preview")
        urls = [u for region in project.outputs()["serverUrls"].values() for u in region]
        grace = 2
        for run in range(runs):
            for way in ("roll", "all at once"):
                grace += 1  # a value the servers do not run yet: every change restarts them all
                if way == "roll":
                    def change(g=grace):
                        project.config({"lameDuckGracePeriod": f"{g}s"})
                        project.pulumi("up", "--yes", "--skip-preview")
                else:
                    def change(g=grace):
                        all_at_once(state, sys_password, f"{g}s")
                found = asyncio.run(measured(urls, change))
                log(f"run {run + 1} {way}: {found}")
                results[way].append(found)
    finally:
        project.pulumi("destroy", "--yes", "--skip-preview", check=False)
        shutil.rmtree(workdir, ignore_errors=True)
    columns = ["way", "failed attempts % (median)", "longest publish over 1 s, s (median; 0: none)", "acked lost (sum)",
               "gave up (sum)", "change s (median)"]
    rows = [[way, statistics.median(r["failed_pct"] for r in found),
             statistics.median(r["longest_publish_s"] for r in found), sum(r["acked_lost"] for r in found),
             sum(r["gave_up"] for r in found), statistics.median(r["change_s"] for r in found)]
            for way, found in results.items()]
    key = (f"failed publish attempts, roll / all at once: {rows[0][1]}% / {rows[1][1]}%; longest publish over 1 s: "
           f"{rows[0][2] or 'none'} / {rows[1][2]} s")
    common.record("rolls", "7. A restart under load: the roll against all at once (local, 3 regions, R3)",
                  args.quick, started, [common.table(f"{runs} run(s) each, alternating", columns, rows)],
                  [f"Publishing {WINDOW:g} s before and after each change, one message at a time every 20 ms, a "
                   "failed publish retried after 0.1 s with the same Nats-Msg-Id."], key,
                  {"runs": results})
    print(key)


if __name__ == "__main__":
    main()
