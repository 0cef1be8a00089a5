"""The stand-in as tests see it: start the daemon, get an environment in which
`flyctl` is the stand-in, and reach into "Fly" where a real test could not."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import netns


class StandInError(RuntimeError):
    pass


class StandIn:
    def __init__(self):
        self.run_id = f"{netns.PREFIX}{secrets.token_hex(3)}"
        self.root: Path | None = None
        self.proc: subprocess.Popen | None = None

    # --- life ---

    def start(self, timeout: float = 60) -> "StandIn":
        if os.geteuid() != 0:
            raise PermissionError("the Fly stand-in needs root (network namespaces, mounts)")
        netns.sweep()
        self.root = Path(tempfile.mkdtemp(prefix=f"{self.run_id}-"))
        bin_dir = self.root / "bin"
        bin_dir.mkdir()
        flyctl = bin_dir / "flyctl"
        # The tests' own interpreter, site-packages included: scripts/bootstrap installs the kit there.
        flyctl.write_text(f"#!{sys.executable}\nfrom nats_fly_testkit.standin.client import main\nmain()\n")
        flyctl.chmod(0o755)
        (bin_dir / "fly").symlink_to("flyctl")
        log = open(self.root / "daemon.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nats_fly_testkit.standin.daemon", "--root", str(self.root),
             "--run-id", self.run_id, "--parent", str(os.getpid())],
            cwd=self.root,
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not (self.root / "ready.json").exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = (self.root / "daemon.log").read_text()[-3000:]
                self.close()
                raise StandInError(f"the stand-in daemon did not start:\n{tail}")
            time.sleep(0.05)
        self.ready = json.loads((self.root / "ready.json").read_text())
        return self

    def close(self) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                self.call("shutdown")
                self.proc.wait(30)
            except (OSError, StandInError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        netns.sweep(self.run_id)
        netns.release(self.run_id)
        if self.root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "StandIn":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # --- running flyctl ---

    @property
    def bin_dir(self) -> Path:
        return self.root / "bin"

    def env(self, **extra: str) -> dict[str, str]:
        """The environment in which `flyctl`/`fly` are the stand-in (for pulumi too)."""
        return {**os.environ, "PATH": f"{self.bin_dir}:{os.environ.get('PATH', '')}",
                "NFLY_STATE": str(self.root), "FLY_API_TOKEN": "stand-in-token", **extra}

    def flyctl(self, *argv: str, input: str | None = None, env: dict | None = None,
               timeout: float = 600, cwd: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.bin_dir / "flyctl"), *argv], input=input, capture_output=True,
                              text=True, env=env or self.env(), timeout=timeout, cwd=cwd,
                              stdin=None if input is not None else subprocess.DEVNULL)

    def flyctl_log(self) -> list[dict]:
        path = self.root / "flyctl.log"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    @property
    def ca_file(self) -> str:
        return self.ready["ca"]

    # --- reaching into "Fly" ---

    def call(self, method: str, **args):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(self.root / "daemon.sock"))
            sock.sendall((json.dumps({"op": "ctl", "method": method, "args": args}) + "\n").encode())
            reply = json.loads(sock.makefile("r").readline() or "{}")
        finally:
            sock.close()
        if "error" in reply or "result" not in reply:
            raise StandInError(reply.get("error", "no reply from the stand-in daemon"))
        return reply["result"]

    def edge(self, app: str, region: str, port: int = 10000) -> tuple[str, int]:
        """The client side of `<app>.fly.dev:<port>` as seen from `region`."""
        host, p = self.call("edge", app=app, region=region, port=port)
        return host, p

    def machines(self, app: str | None = None) -> list[dict]:
        return self.call("machines", app=app)

    def kill_machine(self, machine_id: str) -> str:
        return self.call("kill_machine", id=machine_id)

    def stop_machine(self, machine_id: str) -> str:
        return self.call("stop_machine", id=machine_id)

    def start_machine(self, machine_id: str) -> str:
        return self.call("start_machine", id=machine_id)

    def restart_all(self, ids: list[str]) -> float:
        """Kill the Machines, then start them all at once (a simultaneous cold start)."""
        return self.call("restart_all", ids=ids)

    def exec(self, machine_id: str, command: str, timeout: float = 20) -> tuple[int, str, str]:
        """Run `/bin/sh -c command` inside a started Machine (like `fly ssh console -C`)."""
        code, out, err = self.call("exec", id=machine_id, command=command, timeout=timeout)
        return code, out, err

    def http(self, machine_id: str, port: int, path: str, timeout: float = 2) -> tuple[int, str]:
        code, body = self.call("http", id=machine_id, port=port, path=path, timeout=timeout)
        return code, body

    def routes(self, app: str, pools: bool = False) -> list[dict]:
        """Every started Machine's /routez, read on its monitoring port: id, server_id, remotes,
        connections per remote; with pools, also the route pool size from /varz."""
        return self.call("routes", app=app, pools=pools)

    def set_dns_delay(self, seconds: float) -> None:
        self.call("settings", dns_delay=seconds)

    def set_check_interval_max(self, seconds: float | None) -> None:
        """Cap checks' grace period and interval (speed; off = Fly's timing)."""
        self.call("settings", check_interval_max=seconds)

    def set_latency(self, ms: float) -> None:
        """Artificial latency added to every flyctl call (benchmarks)."""
        self.call("settings", latency_ms=ms)

    def set_delay(self, region_a: str, region_b: str, ms: float) -> None:
        """One-way delay for packets from region_a to region_b."""
        self.call("set_delay", a=region_a, b=region_b, ms=ms)

    def link_down(self, region: str) -> list[str]:
        """Cut `region` off from every other region: packets between them vanish (a dead
        backhaul). Inside the region, DNS and the proxy keep working. -> the regions cut."""
        return self.call("set_link", region=region, up=False)

    def link_up(self, region: str) -> list[str]:
        """Restore the region's link (see link_down)."""
        return self.call("set_link", region=region, up=True)

    def settings(self, **values) -> dict:
        """Change daemon settings, e.g. accept_sigusr2=True, create_delay_s=2, lease_wait_s=5,
        zones={"ord": 2}, zones_default=4 (daemon.Daemon.settings lists them). -> all settings."""
        return self.call("settings", **values)

    def make_token(self, kind: str, app: str | None = None, org: str | None = None) -> str:
        """A new token: "user" (everything, like the default stand-in-token), "org" (the apps of
        `org`, default "personal"), "deploy" (the one existing `app`). Use it as FLY_API_TOKEN."""
        return self.call("make_token", kind=kind, app=app, org=org)

    def leases(self) -> dict:
        """Machine id -> {owner, expires_at} of the leases held now."""
        return self.call("leases")

    def next_machine_ids(self, ids: list[str]) -> None:
        """The next Machines created get exactly these IDs (14 hex digits each)."""
        self.call("next_machine_ids", ids=ids)

    def fail_next(self, command: str, region: str | None = None) -> None:
        """The next `command` (e.g. "scale count", "deploy") touching `region` fails for lack of capacity."""
        self.call("fail_next", command=command, region=region)

    def reserve_name(self, name: str) -> None:
        """Make an app name taken by "another Fly customer"."""
        self.call("reserve_name", name=name)

    def dns(self, name: str, qtype: int = 28, asker: str | None = None) -> dict:
        return self.call("dns", name=name, qtype=qtype, asker=asker)
