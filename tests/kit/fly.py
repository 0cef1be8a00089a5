"""What the Fly stand-in tests share: the build contexts they deploy, the flyctl
command lines the components run, what "full mesh" means, and nats-py clients at the edges.

"ours" is the library's own rendering (nats_fly.render.buildctx) of a stack; "example" is
fly-apps/nats-cluster's original config, kept as a fixture. The components' shell
commands come from nats_fly.contract.flyctl and run under `sh -c` exactly as
pulumi_command's local.Command runs them, with the stand-in's environment.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import secrets
import shutil
import ssl
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nats

from nats_fly.contract.operations import FlyDeploy

from . import support
from .support import REPO

FIXTURES = Path(__file__).parent / "fixtures"
COLD_APPS = int(os.environ.get("NFLY_COLD_APPS", 5))  # per kind; x 4 rounds = 20 cold starts per delay


@dataclass
class Stack:
    """A stack as the components see it, plus the secrets its Machines need."""
    settings: object  # nats_fly.config.settings.Settings
    sys_password: str
    user_passwords: dict[str, str]
    leaf_passwords: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def app(self) -> str:
        return self.settings.app

    @property
    def regions(self) -> list[str]:
        return list(self.settings.regions)

    @property
    def counts(self) -> dict[str, int]:
        return {r: self.settings.machines[r] for r in self.settings.regions}

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def user_password(self, user: str = "app") -> str:
        return self.user_passwords[user]


def load_stack(name: str = "prod", **changes) -> Stack:
    """config/Pulumi.<name>.yaml through the library's own loader, with `changes` applied
    (app=..., regions=(...), machines={...}, topology=...)."""
    from nats_fly import platforms
    from nats_fly.config import stackfile
    s = platforms.settings(stackfile.from_file(stackfile.stack_file(REPO, name))[0])
    if "regions" in changes and "machines" not in changes:
        changes["machines"] = {r: s.machines.get(r, 1) for r in changes["regions"]}
    s = dataclasses.replace(s, **changes)
    return Stack(s, secrets.token_hex(12), {u: secrets.token_hex(12) for u in s.users},
                 {u: secrets.token_hex(12) for u in s.leaf_users})


def render_ours(stack: Stack, out: Path) -> Path:
    from nats_fly.render import buildctx
    if out.exists():
        shutil.rmtree(out)
    return buildctx.write(buildctx.build_context(stack.settings), out)


def render_example(out: Path, app: str, primary_region: str) -> Path:
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(FIXTURES / "example", out)
    toml = out / "fly.toml"
    toml.write_text(toml.read_text().replace("APP_NAME", app).replace("PRIMARY_REGION", primary_region))
    return out


# --- the components' commands -------------------------------------------------------------------

class CommandFailed(AssertionError):
    pass


def sh(standin, script: str, cwd: Path | None = None, stdin: str | None = None,
       env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run one component command line as local.Command does: `sh -c` in the ambient environment,
    plus the Command's own `environment` (env)."""
    proc = subprocess.run(["/bin/sh", "-c", script], cwd=cwd, env={**standin.env(), **(env or {})}, input=stdin,
                          capture_output=True, text=True, timeout=600,
                          stdin=None if stdin is not None else subprocess.DEVNULL)
    if proc.returncode != 0:
        raise CommandFailed(f"$ {script}\n-> exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def secrets_text(standin, stack: Stack, pem: str | None = None) -> str:
    """The `secrets import` stdin FlyApp stages: the library's own values and format. `pem`: a
    certificate and key of the test's own (serverTls); else the marker certificate, as FlyApp makes it."""
    from nats_fly.contract import flyctl
    from nats_fly.platforms.fly.resources import fly_secrets
    from nats_fly.render.secrets import server_environment, route_password
    pem = pem or sh(standin, flyctl.tls_marker_cert(stack.app)).stdout
    values = server_environment(stack.settings, stack.sys_password, route_password(stack.app, stack.sys_password),
                             stack.user_passwords, stack.leaf_passwords)
    return flyctl.secrets_text(fly_secrets(values, pem))


def components_up(standin, stack: Stack, context: Path, secrets: str | None = None) -> None:
    """FlyApp (app, IPs, staged secrets) -> NatsImage (deploy) -> NatsRegion x N. `secrets`: the
    staged text when the test brings its own (a user certificate, say)."""
    from nats_fly.contract import flyctl
    s = stack.settings
    sh(standin, flyctl.ensure_app(s.app, s.org))
    sh(standin, flyctl.ensure_ips(s.app, s.public_ipv4))
    sh(standin, flyctl.import_secrets(s.app), stdin=secrets or secrets_text(standin, stack))
    sh(standin, FlyDeploy(app=s.app, dir=Path(context)).command(sys.executable))
    for region in s.regions:
        region_up(standin, stack, region, s.machines[region])


def region_up(standin, stack: Stack, region: str, count: int) -> subprocess.CompletedProcess:
    """NatsRegion's command for `count` Machines in `region`, with the environment NatsRegion gives it
    (with JetStream: the sys password, and the edges for removing surplus servers, the region's own last)."""
    from nats_fly.platforms.fly.resources import region_environment
    from nats_fly.platforms.fly.region import region_command
    s = stack.settings
    env = {}
    if s.jetstream:
        edges = dataclasses.replace(s, verify_urls=tuple(
            (r, f"nats://127.0.0.1:{standin.edge(s.app, r, s.ports.public)[1]}") for r in s.regions))
        env = region_environment(edges, region, stack.sys_password)
    return sh(standin, region_command(s.app, region, count, s.volume_size_gb if s.jetstream else None), env=env)


def example_up(standin, context: Path, app: str, counts: dict[str, int]) -> None:
    """The example's config brought up with the same command lines (it needs no secrets)."""
    from nats_fly.contract import flyctl
    sh(standin, flyctl.ensure_app(app, "personal"))
    sh(standin, flyctl.ensure_ips(app, "shared"))
    sh(standin, FlyDeploy(app=app, dir=Path(context)).command(sys.executable))
    for region, count in counts.items():
        sh(standin, flyctl.sh(flyctl.scale_argv(app, region, count)))


def machine_list(standin, app: str) -> list[dict]:
    from nats_fly.contract import flyctl
    return json.loads(sh(standin, flyctl.sh(flyctl.machine_list(app))).stdout)


# --- the mesh -----------------------------------------------------------------------------------

def full_mesh(routes: list[dict], expected: int) -> bool:
    """Every server lists every other server among its routes' remote ids."""
    ids = {r["server_id"] for r in routes}
    if len(routes) != expected or None in ids or len(ids) != expected:
        return False
    return all(ids - {r["server_id"]} <= set(r["remotes"]) for r in routes)


def incomplete_pairs(routes: list[dict]) -> list[str]:
    """Server pairs whose route connections are not all there: each pair should have
    `pool_size` pooled connections plus one per pinned account (e.g. the system account).
    A pair short of one loses every message of the accounts hashed onto the missing one."""
    pinned = {a for r in routes for c in r["connections"].values() for a in c["accounts"]}
    short = []
    for r in routes:
        pool = r.get("pool_size", 3)
        want_pooled = pool if pool > 0 else 1
        for remote, c in r["connections"].items():
            if c["pooled"] < want_pooled or not pinned <= set(c["accounts"]):
                short.append(f"{r.get('server_name')}->{c['name']}: {c['pooled']}/{want_pooled} pooled, "
                             f"pinned {sorted(c['accounts'])} of {sorted(pinned)}")
    return short


def wait_routes_complete(standin, app: str, timeout: float = 60) -> list[str]:
    """[] once every pair has all its route connections; else what is still missing."""
    deadline = time.monotonic() + timeout
    while True:
        short = incomplete_pairs(standin.routes(app, pools=True))
        if not short or time.monotonic() > deadline:
            return short
        time.sleep(0.25)


def wait_mesh(standin, app: str, expected: int, timeout: float, poll: float = 0.25) -> float | None:
    """Seconds until the full mesh (None on timeout)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if full_mesh(standin.routes(app), expected):
            return time.monotonic() - t0
        time.sleep(poll)
    return None


def wait_healthy(standin, app: str, timeout: float = 120) -> None:
    """Every Machine started with every check passing (what connyay's e2e polls for)."""
    deadline = time.monotonic() + timeout
    while True:
        machines = standin.machines(app)
        if machines and all(m["state"] == "started" and all(c["status"] == "passing" for c in m["checks"].values())
                            for m in machines):
            return
        assert time.monotonic() < deadline, f"{app} not healthy: {machines}"
        time.sleep(0.2)


def describe(routes: list[dict]) -> str:
    """Who routes to whom, for failure messages."""
    names = {r["server_id"]: r.get("server_name") for r in routes}
    return "; ".join(f"{r.get('server_name') or r['id']} -> "
                     f"{sorted(names.get(x, x[:8]) for x in r['remotes'])}" for r in routes)


def console(standin, machine_id: str, grep: str = "") -> str:
    """A Machine's console log (what `fly logs` shows), optionally only lines containing `grep`."""
    path = standin.root / "machines" / machine_id / "console.log"
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    return "\n".join(line for line in lines if grep in line)


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 2) if values else None


def by_region(standin, app: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for m in standin.machines(app):
        out.setdefault(m["region"], []).append(m)
    return out


# --- clients at the edges -----------------------------------------------------------------------

class Client:
    """A nats-py connection through one edge, recording its disconnects and reconnects."""

    def __init__(self, standin, stack, region: str, tls: bool = False):
        self.standin, self.stack, self.region, self.tls = standin, stack, region, tls
        self.disconnects = 0
        self.reconnected = asyncio.Event()

    async def connect(self):
        host, port = self.standin.edge(self.stack.app, self.region, 10001 if self.tls else 10000)
        opts = dict(user="app", password=self.stack.user_password("app"), connect_timeout=3,
                    allow_reconnect=True, max_reconnect_attempts=-1, reconnect_time_wait=0.2,
                    disconnected_cb=self._disconnected, reconnected_cb=self._reconnected, name=self.region)
        if self.tls:
            context = ssl.create_default_context(cafile=self.standin.ca_file)
            opts.update(tls=context, tls_hostname=f"{self.stack.app}.fly.dev", tls_handshake_first=True)
        self.nc = await nats.connect(f"{'tls' if self.tls else 'nats'}://{host}:{port}", **opts)
        return self

    async def _disconnected(self):
        self.disconnects += 1

    async def _reconnected(self):
        self.reconnected.set()

    @property
    def server(self) -> str:
        return self.nc._server_info.get("server_name", "")

    async def close(self):
        await self.nc.close()


async def exchange(pub: Client, sub: Client, subject: str, count: int = 20, timeout: float = 60) -> list[bytes]:
    """`count` numbered messages from one client to the other, as support.exchange delivers them."""
    return await support.exchange(pub.nc, sub.nc, subject, [str(i).encode() for i in range(count)], timeout)
