"""Fly operations that must read flyctl's JSON before acting, run as `python -m nats_fly fly ...`.

Every flyctl argv comes from the flyctl module and runs without a shell. Each
operation converges: run it again and it does only what is still missing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from . import flyctl

GONE = {"destroyed", "destroying", "pending_destroy", "scheduling_destroy"}
UNBIND_WAIT = 90  # Fly can take about a minute to release a destroyed Machine's volume


class FlyError(RuntimeError):
    pass


def run(args: list[str]) -> str:
    print(f"nats-fly: {flyctl.sh(args)}", file=sys.stderr, flush=True)
    result = subprocess.run(args, capture_output=True, text=True)
    if result.returncode != 0:
        raise FlyError(f"{flyctl.sh(args)} failed ({result.returncode}): "
                       f"{(result.stderr or result.stdout).strip()}")
    return result.stdout


def region_volumes(app: str, region: str, name: str) -> list[dict]:
    return [v for v in json.loads(run(flyctl.volumes_list(app)) or "[]")
            if v.get("name") == name and v.get("region") == region and v.get("state") not in GONE]


def converge_region(app: str, region: str, count: int, volume: str, size_gb: int) -> None:
    present = region_volumes(app, region, volume)
    for _ in range(count - len(present)):
        run(flyctl.volumes_create(app, volume, region, size_gb))
    run(flyctl.scale_argv(app, region, count))
    deadline = time.monotonic() + UNBIND_WAIT
    while True:
        present = region_volumes(app, region, volume)
        surplus = len(present) - count
        spare = [v for v in present if not v.get("attached_machine_id")][:max(surplus, 0)]
        if surplus <= 0:
            return
        for vol in spare:
            try:
                run(flyctl.volumes_destroy(app, vol["id"]))
            except FlyError as error:
                if "currently bound" not in str(error) or time.monotonic() > deadline:
                    raise
        if len(spare) < surplus:
            if time.monotonic() > deadline:
                raise FlyError(f"{surplus - len(spare)} surplus volume(s) in {region} are still attached "
                               f"after {UNBIND_WAIT}s")
            time.sleep(3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nats-fly fly", description="Fly operations that look first.")
    commands = parser.add_subparsers(dest="command", required=True)
    region = commands.add_parser("region", help="converge a region's volumes and Machine count")
    region.add_argument("--app", required=True)
    region.add_argument("--region", required=True)
    region.add_argument("--count", required=True, type=int)
    region.add_argument("--volume", required=True, help="volume name (fly.toml [[mounts]] source)")
    region.add_argument("--size", required=True, type=int, help="size of new volumes in GB")
    args = parser.parse_args(argv)
    try:
        converge_region(args.app, args.region, args.count, args.volume, args.size)
    except FlyError as error:
        print(f"nats-fly: {error}", file=sys.stderr)
        return 1
    return 0
