"""Fly operations that must read flyctl's JSON before acting, run as `python -m nats_fly fly ...`.

Every flyctl argv comes from the flyctl module and runs without a shell. Each operation converges:
run it again and it does only what is still missing. Operations on one app take a lock on this
machine first: `flyctl scale count` leases every Machine of the app while it runs, whatever
`--region` says, and a second one would wait on those leases and give up after a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Iterator

from ..contract import flyctl, operations as ops
from ..render import buildctx, flytoml
from ..render.natsconf import SYS_USER
from . import natsadmin

GONE = {"destroyed", "destroying", "pending_destroy", "scheduling_destroy"}
UNBIND_WAIT = 90  # Fly can take about a minute to release a destroyed Machine's volume
STOP_WAIT = 330  # kill_timeout is at most 300 s
REMOVE_WAIT = 120  # the meta group may be electing a leader right after a stop
LEASE_TRIES, LEASE_PAUSE = 3, 5.0  # flyctl itself waits up to a minute on a held lease each time
LEASE_HELD = "failed to get lease on VM"
NOT_A_PEER = 10044  # JSClusterServerNotMemberErr: already removed (or never joined)
NOT_FOUND = "Could not find App"


class FlyError(RuntimeError):
    pass


def run(args: list[str], stdin: str | None = None) -> str:
    """One flyctl call, its stdout; a failure is a FlyError with flyctl's words."""
    def attempt() -> subprocess.CompletedProcess:
        print(f"nats-fly: {flyctl.sh(args)}", file=sys.stderr, flush=True)
        return _spawn(args, capture_output=True, text=True, input=stdin,
                      stdin=None if stdin is not None else subprocess.DEVNULL)

    result = leased(attempt)
    if result.returncode:
        raise FlyError(f"{flyctl.sh(args)} failed ({result.returncode}): {(result.stderr or result.stdout).strip()}")
    return result.stdout


def leased(attempt: Callable[[], subprocess.CompletedProcess]) -> subprocess.CompletedProcess:
    """Run one flyctl call, again when it was refused because another client holds a Machine's lease
    (another operator, Fly itself): every call here is safe to repeat. flyctl itself waits up to a
    minute on a held lease each time."""
    for tries in range(1, LEASE_TRIES + 1):
        result = attempt()
        if result.returncode == 0 or LEASE_HELD not in f"{result.stderr}{result.stdout}" or tries == LEASE_TRIES:
            return result
        print(f"nats-fly: a lease is held elsewhere; trying again in {LEASE_PAUSE:g}s ({tries}/{LEASE_TRIES})",
              file=sys.stderr, flush=True)
        time.sleep(LEASE_PAUSE)
    raise AssertionError("unreachable")


def _spawn(args: list[str], **options) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(args, **options)
    except FileNotFoundError:
        raise FlyError(f"{args[0]} is not on PATH: install flyctl (https://fly.io/docs/flyctl/install/)") from None


@contextlib.contextmanager
def app_lock(app: str) -> Iterator[None]:
    """One operation on `app` at a time from this machine (every region command of one `pulumi up`
    runs here), held across flyctl calls that lease the app's Machines."""
    folder = Path(tempfile.gettempdir()) / f"nats-fly-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(folder / f"{app}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if _try_lock(fd) is False:
            print(f"nats-fly: waiting for another operation on {app} (one at a time: flyctl leases every "
                  f"Machine of the app)", file=sys.stderr, flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def app_volumes(app: str, name: str) -> list[dict]:
    return [v for v in json.loads(run(flyctl.volumes_list(app)) or "[]")
            if v.get("name") == name and v.get("state") not in GONE]


def region_volumes(app: str, region: str, name: str) -> list[dict]:
    return [v for v in app_volumes(app, name) if v.get("region") == region]


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


def app_machines(app: str) -> list[dict]:
    return live_machines(run(flyctl.machine_list(app)))


def region_machines(app: str, region: str) -> list[dict]:
    return [m for m in app_machines(app) if m.get("region") == region]


def has_volume(machine: dict) -> bool:
    return bool((machine.get("config") or {}).get("mounts"))


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
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        nc = None
        try:
            nc = await natsadmin.connect_once(",".join(urls), user=SYS_USER, password=password, timeout=5,
                                              name="nats-fly scale-down")
            reply = json.loads((await nc.request("$JS.API.SERVER.REMOVE", json.dumps({"peer": peer}).encode(),
                                                 timeout=5)).data)
            error = reply.get("error")
            if reply.get("success") or (error and error.get("err_code") == NOT_A_PEER):
                return
            last = (error or {}).get("description") or json.dumps(reply)
        except Exception as error:  # noqa: BLE001 (no meta leader yet, a reconnect: try again)
            last = str(error) or type(error).__name__
        finally:
            if nc is not None and not nc.is_closed:
                await nc.close()
        if "authorization" in last.lower():
            break
        await asyncio.sleep(1)
    raise FlyError(f"JetStream did not remove peer {peer}: {last}")


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


def create_volumes(app: str, name: str, region: str, size_gb: int, count: int, why: str) -> None:
    """`count` more volumes in `region`; a refusal (no zone with capacity left) names the region and the count."""
    for made in range(count):
        try:
            run(flyctl.volumes_create(app, name, region, size_gb))
        except FlyError as error:
            raise FlyError(f"region {region}: cannot place {count - made} more '{name}' volume(s) of {size_gb} GB "
                           f"({why}): Fly refused: {error}. Each volume of a region asks for a zone of its own "
                           f"(--require-unique-zone): lower the region's Machine count, or choose another "
                           f"region") from None


def converge_region(app: str, region: str, count: int, volume: str | None = None, size_gb: int | None = None,
                    urls: list[str] | None = None, password: str | None = None) -> None:
    with app_lock(app):
        if volume is None:
            run(flyctl.scale_argv(app, region, count))
            return
        present = region_volumes(app, region, volume)
        create_volumes(app, volume, region, size_gb, count - len(present), f"one per Machine, {count} in all")
        if urls and password:
            drain_surplus(app, region, count, urls, password)
        run(flyctl.scale_argv(app, region, count))
        prune_volumes(app, region, volume, count)


def prune_volumes(app: str, region: str, volume: str, count: int) -> None:
    """Destroy a region's unattached volumes beyond `count` (a destroyed Machine's volume stays)."""
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


JETSTREAM_OFF_REFUSED = (
    "jetstream: false, but the Machines of {app} hold JetStream volumes ({where}). flyctl deploy cannot "
    "detach them: it asks first, and the question fails without a terminal even with --yes; its only way "
    "round destroys every Machine, and the streams on their volumes with them. To switch JetStream off: "
    "back up your streams, then `pulumi destroy` and `pulumi up` with jetstream: false (or deploy to a new "
    "app name). To keep the streams, set jetstream: true")


def jetstream_off_refusal(app: str, machines: list[dict]) -> str | None:
    held = Counter(m.get("region") for m in machines if has_volume(m))
    if not held:
        return None
    return JETSTREAM_OFF_REFUSED.format(app=app, where=", ".join(f"{r}: {n}" for r, n in sorted(held.items())))


def prepare_volumes(app: str, mount: dict, machines: list[dict], primary: str) -> bool:
    """Volumes the deploy needs before it runs; True when Machines are switching JetStream on.

    - Machines without a volume (JetStream switched on): flyctl refuses unless each one's region holds
      an unattached volume of the mount's name (deploy/machines.go validateVolumeConfig); it then replaces
      each Machine by one on that volume. So one volume is made per such Machine, in its region.
    - No Machine yet (a first deploy): flyctl makes the first volume only when the app has no unattached
      volume of that name in any region, and otherwise wants one in primary_region
      (machines_launchinput.go). So a volume left elsewhere (a region removed, a first up cut short) is
      met by one made in primary_region."""
    name, size = mount["source"], flytoml.gigabytes(mount.get("initial_size") or 1)
    free = [v for v in app_volumes(app, name) if not v.get("attached_machine_id")]
    if not machines:
        if free and not any(v.get("region") == primary for v in free):
            create_volumes(app, name, primary, size, 1, f"the first Machine's, in primary region {primary}")
        return False
    bare = Counter(m.get("region") for m in machines if not has_volume(m))
    for region, needed in sorted(bare.items()):
        have = sum(1 for v in free if v.get("region") == region)
        create_volumes(app, name, region, size, needed - have, "one per Machine switching JetStream on")
    return bool(bare)


def deploy(app: str, files: dict[str, str]) -> int:
    """Deploy the build context `files`: write it to a private folder of its own, look at the Machines
    the app has now (JetStream switched on or off, volumes the deploy needs), pick the strategy, run
    `flyctl deploy` there, and say which Machines it left stopped. Returns flyctl's exit code."""
    config = flytoml.loads(files["fly.toml"])
    mount = (config.get("mounts") or [None])[0]
    folder = Path(tempfile.mkdtemp(prefix=f"nats-fly-deploy-{app}-"))
    try:
        buildctx.write(files, folder)
        with app_lock(app):
            listing = run(flyctl.machine_list(app))
            machines = live_machines(listing)
            if mount is None:
                refusal = jetstream_off_refusal(app, machines)
                if refusal:
                    raise FlyError(refusal)
                switching = False
            else:
                switching = prepare_volumes(app, mount, machines, config["primary_region"])
            # Switching JetStream on replaces every Machine (new ids, new servers); a rolling deploy
            # would wait on /healthz of JetStream servers whose peers do not run JetStream yet.
            strategy = "immediate" if switching else deploy_strategy(listing)
            args = flyctl.deploy_argv(app, strategy)
            print(f"nats-fly: {flyctl.sh(args)} (in {folder})", file=sys.stderr, flush=True)
            code = _deploy_call(args, folder)
            if code == 0:
                warn_stopped(app)
            return code
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _deploy_call(args: list[str], folder: Path) -> int:
    def attempt() -> subprocess.CompletedProcess:
        result = _spawn(args, cwd=folder, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        sys.stderr.write(result.stderr)
        return result

    return leased(attempt).returncode


def warn_stopped(app: str) -> None:
    """A deploy updates a stopped Machine but leaves it stopped (machines_launchinput.go): its server
    is missing from the cluster until someone starts it, which verify reports too."""
    for machine in app_machines(app):
        if machine.get("state") in ("stopped", "suspended"):
            print(f"nats-fly: warning: Machine {machine['id']} ({machine.get('region')}) is {machine['state']} and "
                  f"stays so after the deploy; its server is not in the cluster. Start it with `flyctl machine "
                  f"start {machine['id']} --app {app}`", file=sys.stderr, flush=True)


def probe(app: str, jetstream: bool) -> dict:
    """What a preview or up needs to know before the first Fly call, read-only: `problems` (flyctl or
    a token missing: preview warns, up stops) and `refusals` (the stack cannot be applied as it is)."""
    problems, refusals = [], []
    if shutil.which(flyctl.FLYCTL) is None:
        problems.append(f"{flyctl.FLYCTL} is not on PATH: install it (https://fly.io/docs/flyctl/install/)")
    if shutil.which("openssl") is None:
        problems.append("openssl is not on PATH: it makes the TLS marker certificate (apt-get install openssl)")
    if not token_available():
        problems.append("no Fly token: set FLY_API_TOKEN (or FLY_ACCESS_TOKEN), or run `flyctl auth login`; a "
                        "first up needs an org token (`flyctl tokens create org`) or your login, later ups "
                        "can use `flyctl tokens create deploy --app <app>`")
    if not problems and not jetstream:
        result = subprocess.run(flyctl.machine_list(app), capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if result.returncode == 0:
            try:
                refusal = jetstream_off_refusal(app, live_machines(result.stdout))
            except FlyError as error:
                problems.append(str(error))
            else:
                if refusal:
                    refusals.append(f"nats-fly:{refusal}")
        elif NOT_FOUND not in result.stderr:
            problems.append(f"cannot list the Machines of {app}: {(result.stderr or result.stdout).strip()[:300]}")
    return {"problems": problems, "refusals": refusals}


def token_available() -> bool:
    """flyctl's own order (internal/config/config.go): FLY_ACCESS_TOKEN, FLY_API_TOKEN, then the
    access_token of ~/.fly/config.yml (FLY_CONFIG_DIR moves it)."""
    if os.environ.get("FLY_ACCESS_TOKEN") or os.environ.get("FLY_API_TOKEN"):
        return True
    config = Path(os.environ.get("FLY_CONFIG_DIR") or Path.home() / ".fly") / "config.yml"
    try:
        import yaml
        return bool((yaml.safe_load(config.read_text()) or {}).get("access_token"))
    except (OSError, ValueError, AttributeError, ImportError):
        return False


def _report(action: Callable[[], int | None]) -> int:
    try:
        return action() or 0
    except (FlyError, OSError, ValueError) as error:
        print(f"nats-fly: {error}", file=sys.stderr)
        return 1


def run_probe(op: ops.FlyProbe) -> int:
    print(json.dumps(probe(op.app, op.jetstream)))
    return 0


def run_deploy(op: ops.FlyDeploy) -> int:
    return _report(lambda: deploy(op.app, buildctx.read(op.dir) if op.dir else buildctx.from_stdin(sys.stdin.read())))


def run_region(op: ops.FlyRegion) -> int:
    def act() -> None:
        if (op.volume is None) != (op.size is None):
            raise FlyError("--volume and --size go together")
        urls = [u for value in (op.url or [os.environ.get(ops.URL_ENV, "")]) for u in value.split(",") if u]
        password = os.environ.get(ops.SYS_PASSWORD_ENV, "")
        if op.volume and urls and not password:
            raise FlyError(f"a client URL is set but ${ops.SYS_PASSWORD_ENV} is not: cannot remove JetStream peers")
        converge_region(op.app, op.region, op.count, op.volume, op.size, urls, password)
    return _report(act)
