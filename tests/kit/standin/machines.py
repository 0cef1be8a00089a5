"""Machines: boot the image in the Machine's namespace, supervise it (restart
policy), run its checks, stop it the way Fly does (kill_signal, kill_timeout, kill)."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import netns
from .flytoml import seconds
from .network import Address, Network
from .state import Machine, State, now_iso

LAUNCHER = Path(__file__).with_name("launch.py")


@dataclass
class Running:
    proc: asyncio.subprocess.Process
    started_at: float
    expected_stop: bool = False
    tasks: list = field(default_factory=list)
    exited: asyncio.Event = field(default_factory=asyncio.Event)


class Runtime:
    def __init__(self, state: State, network: Network, root: Path, base: Path, settings: dict):
        self.state = state
        self.network = network
        self.root = root
        self.base = base
        self.settings = settings
        self.running: dict[str, Running] = {}
        self.restarts: dict[str, int] = {}
        self.hub = netns.executor_in(network.hub)

    # --- sockets in the hub namespace (where the "Fly hosts" are) ---

    async def hub_socket(self, family: int, kind: int = socket.SOCK_STREAM) -> socket.socket:
        sock = await asyncio.get_running_loop().run_in_executor(self.hub, socket.socket, family, kind)
        sock.setblocking(False)
        return sock

    async def connect(self, ip: str, port: int, timeout: float = 2.0):
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        sock = await self.hub_socket(family)
        try:
            await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (ip, port)), timeout)
        except BaseException:
            sock.close()
            raise
        return await asyncio.open_connection(sock=sock)

    async def http_get(self, ip: str, port: int, path: str, timeout: float = 2.0) -> tuple[int, str]:
        async def go():
            reader, writer = await self.connect(ip, port, timeout)
            try:
                writer.write(f"GET {path} HTTP/1.0\r\nHost: {ip}:{port}\r\n\r\n".encode())
                await writer.drain()
                raw = await reader.read(-1)
            finally:
                writer.close()
            head, _, body = raw.partition(b"\r\n\r\n")
            return int(head.split()[1]), body.decode(errors="replace")
        return await asyncio.wait_for(go(), timeout)

    # --- the Machine's life ---

    def machine_dir(self, machine_id: str) -> Path:
        return self.root / "machines" / machine_id

    def console_tail(self, machine_id: str, lines: int = 15) -> str:
        """The Machine's last log lines (what `fly logs` would show)."""
        try:
            text = (self.machine_dir(machine_id) / "console.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(f"{machine_id} | {ln}" for ln in text.splitlines()[-lines:])

    def started_at(self, machine_id: str) -> float:
        run = self.running.get(machine_id)
        m = self.state.machines.get(machine_id)
        return run.started_at if run and m and m.state == "started" else 0.0

    def _env(self, m: Machine) -> dict:
        env = {"HOME": "/root", **m.image.get("env", {}), **m.config.get("env", {}), **m.secrets}
        env.update({
            "FLY_APP_NAME": m.app, "FLY_MACHINE_ID": m.id, "FLY_ALLOC_ID": m.id,
            "FLY_REGION": m.region, "FLY_PRIVATE_IP": m.private_ip,
            "FLY_PUBLIC_IP": f"2605:4c40:{m.id[:4]}:{m.id[4:8]}::1",
            "FLY_IMAGE_REF": m.image["ref"], "FLY_MACHINE_VERSION": m.instance_id,
            "FLY_PROCESS_GROUP": m.process_group, "FLY_VM_MEMORY_MB": str(m.config["guest"]["memory_mb"]),
        })
        env.setdefault("PRIMARY_REGION", m.config.get("env", {}).get("PRIMARY_REGION", ""))
        return env

    async def start(self, m: Machine) -> None:
        """created/stopped -> started. The root filesystem is fresh on every start."""
        m.state = "starting"
        d = self.machine_dir(m.id)
        for sub in ("upper", "work"):
            shutil.rmtree(d / sub, ignore_errors=True)
        for sub in ("upper", "work", "root"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        ns = self.network.ns_of(m.id)
        if not (netns.NETNS_DIR / ns).exists():
            await asyncio.to_thread(self.network.attach, m.id, m.region, Address(m.private_ip, m.private_ipv4))
        binds = [["/etc/resolv.conf", "/etc/resolv.conf"], ["/etc/hosts", "/etc/hosts"]]
        for mount in m.config.get("mounts", []):
            vol = self.root / "volumes" / mount["volume"]
            vol.mkdir(parents=True, exist_ok=True)
            binds.append([str(vol), mount["path"]])
        spec = {"lower": [m.image["layer"], m.image["base_layer"], str(self.base)], "upper": str(d / "upper"),
                "work": str(d / "work"), "root": str(d / "root"), "binds": binds,
                "hostname": m.id, "env": self._env(m), "argv": m.image["entrypoint"] + m.image["cmd"],
                "workdir": m.image.get("workdir", "/")}
        (d / "spec.json").write_text(json.dumps(spec))
        with open(d / "console.log", "ab") as console:
            console.write(f"--- {now_iso()} starting machine {m.id} ({m.image['ref']})\n".encode())
            console.flush()
            proc = await asyncio.create_subprocess_exec(
                "ip", "netns", "exec", ns, sys.executable, "-S", str(LAUNCHER), str(d / "spec.json"),
                stdin=asyncio.subprocess.DEVNULL, stdout=console, stderr=console)
        run = Running(proc, time.monotonic())
        self.running[m.id] = run
        m.state, m.exit_code, m.updated_at = "started", None, now_iso()
        m.event("start", "started")
        m.checks = {name: {"status": "warning", "output": "waiting for status update",
                           "updated_at": now_iso()} for name in self._checks(m)}
        run.tasks.append(asyncio.create_task(self._watch(m, run)))
        for name, check in self._checks(m).items():
            run.tasks.append(asyncio.create_task(self._run_check(m, run, name, check)))

    async def _watch(self, m: Machine, run: Running) -> None:
        code = await run.proc.wait()
        await asyncio.to_thread(self._kill_rest, m.id)
        run.exited.set()
        for t in run.tasks[1:]:
            t.cancel()
        m.event("exit", "stopped", exit_event={"exit_code": code})
        if run.expected_stop or self.running.get(m.id) is not run:
            return
        m.state, m.exit_code, m.updated_at = "stopped", code, now_iso()
        for c in m.checks.values():
            c.update(status="critical", output="machine stopped")
        self.state.save()
        policy = m.config.get("restart", {})
        tries = self.restarts.get(m.id, 0)
        if policy.get("policy") == "always" or (
                policy.get("policy", "on-failure") == "on-failure" and code != 0
                and tries < policy.get("max_retries", 10)):
            self.restarts[m.id] = tries + 1
            await asyncio.sleep(1)
            if m.state == "stopped":
                await self.start(m)
                self.state.save()

    def _kill_rest(self, machine_id: str) -> None:
        for pid in netns.pids(self.network.ns_of(machine_id)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    async def stop(self, m: Machine, sig: str | None = None, timeout: float | None = None) -> None:
        """Send kill_signal, wait kill_timeout, then kill whatever is left."""
        run = self.running.get(m.id)
        m.state, m.updated_at = "stopping", now_iso()
        m.event("stop", "stopping", source="user", signal=sig or m.kill_signal)
        if run and not run.exited.is_set():
            run.expected_stop = True
            try:
                os.kill(run.proc.pid, getattr(signal, sig or m.kill_signal))
            except ProcessLookupError:
                pass
            try:
                await asyncio.wait_for(run.exited.wait(), m.kill_timeout if timeout is None else timeout)
            except asyncio.TimeoutError:
                await asyncio.to_thread(self._kill_rest, m.id)
                await run.exited.wait()
            m.exit_code = run.proc.returncode
        m.state, m.updated_at = "stopped", now_iso()
        for c in m.checks.values():
            c.update(status="critical", output="machine stopped", updated_at=now_iso())

    async def destroy(self, m: Machine, kill: bool = True) -> None:
        m.state = "destroying"
        await self.stop(m, sig="SIGKILL" if kill else None, timeout=0 if kill else None)
        self.running.pop(m.id, None)
        await asyncio.to_thread(self.network.detach, m.id)
        self.network.free(m.region, Address(m.private_ip, m.private_ipv4))
        for vol in self.state.volumes.values():
            if vol.attached_machine_id == m.id:
                vol.attached_machine_id = None
        shutil.rmtree(self.machine_dir(m.id), ignore_errors=True)
        m.state, m.updated_at = "destroyed", now_iso()
        del self.state.machines[m.id]

    async def kill(self, m: Machine) -> None:
        """A crash that Fly does not restart (the host went away): SIGKILL, stopped."""
        run = self.running.get(m.id)
        if run:
            run.expected_stop = True
        await self.stop(m, sig="SIGKILL", timeout=0)

    async def shutdown(self) -> None:
        for m in list(self.state.machines.values()):
            if m.id in self.running:
                await self.kill(m)
        self.hub.shutdown(wait=False)

    # --- checks ---

    @staticmethod
    def _checks(m: Machine) -> dict:
        checks = dict(m.config.get("checks", {}))
        for i, svc in enumerate(m.config.get("services", [])):
            for j, c in enumerate(svc.get("checks", [])):
                checks[f"servicecheck-{i:02d}-{c['type']}-{svc['internal_port']}"] = {
                    **c, "port": svc["internal_port"], "service": True}
        return checks

    def _cap(self, value: float) -> float:
        cap = self.settings.get("check_interval_max")
        return min(value, cap) if cap is not None else value

    async def _run_check(self, m: Machine, run: Running, name: str, check: dict) -> None:
        service = check.get("service", False)
        bare = 0.001 if service else 1.0  # service check durations: bare ints are ms
        await asyncio.sleep(self._cap(seconds(check.get("grace_period", "0s"), bare)))
        interval = self._cap(max(seconds(check.get("interval", "15s"), bare), 0.1))
        timeout = seconds(check.get("timeout", "2s"), bare)
        while not run.exited.is_set():
            status, output = await self._probe(m, check, timeout)
            m.checks[name] = {"status": status, "output": output, "updated_at": now_iso()}
            await asyncio.sleep(interval)

    async def _probe(self, m: Machine, check: dict, timeout: float) -> tuple[str, str]:
        try:
            if check.get("type", "http") == "tcp":
                _r, w = await self.connect(m.private_ipv4, check["port"], timeout)
                w.close()
                return "passing", "Success"
            code, body = await self.http_get(m.private_ipv4, check["port"], check.get("path", "/"), timeout)
            return ("passing" if 200 <= code < 400 else "critical"), f"[{code}] {body.strip()[:200]}"
        except (OSError, asyncio.TimeoutError, ValueError, IndexError) as e:
            return "critical", f"{type(e).__name__}: {e}"

    def healthy(self, m: Machine) -> bool:
        """All checks pass: what a deploy waits for."""
        return all(m.checks.get(n, {}).get("status") == "passing" for n in self._checks(m))

    def routable(self, m: Machine) -> bool:
        """No failing service check: the proxy's view (top-level [checks] do not count)."""
        return all(m.checks.get(n, {}).get("status") != "critical"
                   for n, c in self._checks(m).items() if c.get("service"))
