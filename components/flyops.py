"""Fly operations that must read flyctl's JSON before acting, run as `python -m nats_fly fly ...`.

Every flyctl argv comes from the flyctl module and runs without a shell. Each
operation converges: run it again and it does only what is still missing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time

from . import flyctl
from .natsconf import SYS_PASSWORD as PASSWORD_ENV, SYS_USER

GONE = {"destroyed", "destroying", "pending_destroy", "scheduling_destroy"}
UNBIND_WAIT = 90  # Fly can take about a minute to release a destroyed Machine's volume
STOP_WAIT = 330  # kill_timeout is at most 300 s
REMOVE_WAIT = 120  # the meta group may be electing a leader right after a stop
URL_ENV = "NATS_FLY_URL"
NOT_A_PEER = 10044  # JSClusterServerNotMemberErr: already removed (or never joined)


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


def live_machines(listing: str) -> list[dict]:
    """The Machines in `machine list --json` output that are not being destroyed. Anything but a JSON
    list of Machines (`[]` or `null` when there are none) is an error: never guess."""
    try:
        machines = json.loads(listing)
    except ValueError:
        raise FlyError(f"cannot read `machine list --json`: {listing.strip()[:200]!r}") from None
    if machines is None:
        machines = []
    if not isinstance(machines, list) or not all(isinstance(m, dict) and "id" in m for m in machines):
        raise FlyError(f"`machine list --json` is not a list of Machines: {listing.strip()[:200]!r}")
    return [m for m in machines if m.get("state") not in GONE]


def region_machines(app: str, region: str) -> list[dict]:
    return [m for m in live_machines(run(flyctl.machine_list(app))) if m.get("region") == region]


def surplus_machines(machines: list[dict], count: int) -> list[dict]:
    """Which Machines go: those not started first (already down), then the newest (by created_at, id)."""
    newest = sorted(machines, key=lambda m: (m.get("created_at") or "", m["id"]), reverse=True)
    ordered = sorted(newest, key=lambda m: m.get("state") == "started")
    return ordered[:max(len(machines) - count, 0)]


def wait_stopped(app: str, region: str, machine_id: str) -> None:
    deadline = time.monotonic() + STOP_WAIT
    while True:
        state = next((m.get("state") for m in region_machines(app, region) if m["id"] == machine_id), "destroyed")
        if state not in ("started", "stopping", "starting", "replacing", "updating"):
            return
        if time.monotonic() > deadline:
            raise FlyError(f"Machine {machine_id} is still {state} {STOP_WAIT}s after `machine stop`")
        time.sleep(1)


async def _remove_peer(urls: list[str], password: str, peer: str, timeout: float) -> None:
    import nats
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        nc = None
        try:
            nc = await nats.connect(servers=urls, user=SYS_USER, password=password, name="nats-fly scale-down",
                                    dont_randomize=True, allow_reconnect=False, max_reconnect_attempts=1,
                                    reconnect_time_wait=0.5, connect_timeout=3, error_cb=_quiet)
            reply = json.loads((await nc.request("$JS.API.SERVER.REMOVE", json.dumps({"peer": peer}).encode(),
                                                 timeout=5)).data)
            error = reply.get("error")
            if reply.get("success") or (error and error.get("err_code") == NOT_A_PEER):
                return
            last = (error or {}).get("description") or json.dumps(reply)
            if error and "authorization" in last.lower():
                break
        except Exception as error:  # noqa: BLE001 (no meta leader yet, a reconnect: try again)
            last = str(error) or type(error).__name__
            if "authorization" in last.lower():
                break
        finally:
            if nc is not None and not nc.is_closed:
                await nc.close()
        await asyncio.sleep(1)
    raise FlyError(f"JetStream did not remove peer {peer}: {last}")


async def _quiet(_error: Exception) -> None:
    pass


def remove_peer(urls: list[str], password: str, peer: str, timeout: float = REMOVE_WAIT) -> None:
    print(f"nats-fly: $JS.API.SERVER.REMOVE {peer}", file=sys.stderr, flush=True)
    asyncio.run(_remove_peer(urls, password, peer, timeout))


def drain_surplus(app: str, region: str, count: int, urls: list[str], password: str) -> None:
    """Each surplus Machine in turn: stop it (kill_signal: lame duck, within kill_timeout), remove its
    server (<region>-<machine id>) from JetStream's meta group, then destroy it. `scale count`
    alone would kill the Machines and leave their peers counted by JetStream."""
    for machine in surplus_machines(region_machines(app, region), count):
        if machine.get("state") == "started":
            run(flyctl.machine_stop(app, machine["id"]))
        wait_stopped(app, region, machine["id"])
        remove_peer(urls, password, f"{region}-{machine['id']}")
        run(flyctl.machine_destroy(app, machine["id"]))


def converge_region(app: str, region: str, count: int, volume: str, size_gb: int,
                    urls: list[str] | None = None, password: str | None = None) -> None:
    present = region_volumes(app, region, volume)
    for _ in range(count - len(present)):
        run(flyctl.volumes_create(app, volume, region, size_gb))
    if urls and password:
        drain_surplus(app, region, count, urls, password)
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


def deploy_strategy(listing: str) -> str:
    """The deploy strategy for an app whose `machine list --json` is `listing`. At most one live
    Machine (a first deploy, or one resumed after its Machine was made): immediate, as there is
    nothing to roll and a lone JetStream server never passes /healthz, the fly.toml check. More:
    rolling, one Machine at a time, each waiting for /healthz, which with JetStream means its
    replicas have caught up. An unreadable listing is an error (live_machines): never guess immediate."""
    return "immediate" if len(live_machines(listing)) <= 1 else "rolling"


def deploy(app: str, directory: str) -> None:
    """Pick the strategy from the Machines the app has now, then become `flyctl deploy` in `directory`."""
    strategy = deploy_strategy(run(flyctl.machine_list(app)))
    args = flyctl.deploy_argv(app, strategy)
    print(f"nats-fly: {flyctl.sh(args)} (in {directory})", file=sys.stderr, flush=True)
    os.chdir(directory)
    os.execvp(args[0], args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nats-fly fly", description="Fly operations that look first.")
    commands = parser.add_subparsers(dest="command", required=True)
    deploy_cmd = commands.add_parser("deploy", help="deploy the build context in the working directory, "
                                                    "immediate or rolling by the Machines the app has")
    deploy_cmd.add_argument("--app", required=True)
    deploy_cmd.add_argument("--dir", default=".", help="the build context (fly.toml, Dockerfile, ...)")
    region = commands.add_parser("region", help="converge a region's volumes and Machine count")
    region.add_argument("--app", required=True)
    region.add_argument("--region", required=True)
    region.add_argument("--count", required=True, type=int)
    region.add_argument("--volume", required=True, help="volume name (fly.toml [[mounts]] source)")
    region.add_argument("--size", required=True, type=int, help="size of new volumes in GB")
    region.add_argument("--url", action="append", default=[],
                        help=f"client URL for the JetStream peer removal (repeatable; default ${URL_ENV}, "
                             f"comma-separated); the sys password comes from ${PASSWORD_ENV} only")
    args = parser.parse_args(argv)
    if args.command == "deploy":
        try:
            deploy(args.app, args.dir)  # returns only on error
        except (FlyError, OSError) as error:
            print(f"nats-fly: {error}", file=sys.stderr)
        return 1
    urls = [u for value in (args.url or [os.environ.get(URL_ENV, "")]) for u in value.split(",") if u]
    password = os.environ.get(PASSWORD_ENV, "")
    try:
        if urls and not password:
            raise FlyError(f"a client URL is set but ${PASSWORD_ENV} is not: cannot remove JetStream peers")
        converge_region(args.app, args.region, args.count, args.volume, args.size, urls, password)
    except FlyError as error:
        print(f"nats-fly: {error}", file=sys.stderr)
        return 1
    return 0
