"""The stand-in daemon: one per test session. It owns the private network, the DNS
server, the proxy and every Machine process, so Machines outlive the `flyctl`
call that made them. `flyctl` (client.py) and the test API (api.py) talk to it
over a unix socket in the state dir, one JSON line per message.

    python -m nats_fly_testkit.standin.daemon --root DIR --run-id nfly-xxxxxx [--parent PID]
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import time
import traceback
import uuid
from pathlib import Path

from . import cmd_apps, cmd_deploy, dns, image, netns, tlsca
from .cli import CAPACITY, Context, FlyError, parse, resolve
from .leases import Leases
from .machines import Runtime
from .network import DNS_IP, Network
from .proxy import Proxy
from .state import State, machine_id
from .wan import Wan

COMMANDS = cmd_apps.COMMANDS + cmd_deploy.COMMANDS
PR_SET_PDEATHSIG = 1


class Daemon:
    def __init__(self, root: Path, run_id: str):
        self.root = root
        self.run_id = run_id
        self.settings = {
            "dns_delay": 0.0, "check_interval_max": None, "latency_ms": 0,
            # Fly's Machines API refuses stop_config.signal SIGUSR2 (flyctl#4721); True accepts it.
            "accept_sigusr2": False,
            # Seconds each Machine create takes (Fly: a few); 0 = at once.
            "create_delay_s": 0.0,
            # How long flyctl retries a held lease: fly-go flaps/retry.go MaxElapsedTime, 1 minute.
            "lease_wait_s": 60.0,
            # Hardware zones per region for volume placement (zones.py): region -> count, else default.
            "zones": {}, "zones_default": 4,
        }
        self.next_ids: list[str] = []
        self.state = State(root / "state.json")
        self.network = Network(run_id)
        self.faults: list[dict] = []
        self.first_seen: dict[str, float] = {}  # Machine id -> monotonic time it was made (all.vms)
        self.leases = Leases(self.settings)
        # Tokens by SHA-256 (the client never sends a token). The default token is a user's
        # own login: it reaches every app and org, as before scopes existed.
        self.tokens: dict[str, dict] = {self._digest("stand-in-token"): {"kind": "user"}}
        self.tasks: set[asyncio.Task] = set()
        self.stopping = asyncio.Event()
        self.base = root / "base"
        image.build_base(self.base)

    # --- life ---

    async def start(self) -> None:
        netns.claim(self.run_id)
        netns.sweep()
        await asyncio.to_thread(self.network.start)
        self.runtime = Runtime(self.state, self.network, self.root, self.base, self.settings)
        self.catalogue = dns.Catalogue(self._records, lambda: list(self.state.apps))
        loop = asyncio.get_running_loop()
        udp = await self.runtime.hub_socket(socket.AF_INET6, socket.SOCK_DGRAM)
        udp.bind((DNS_IP, 53))
        await loop.create_datagram_endpoint(lambda: dns.UDPServer(self.catalogue), sock=udp)
        tcp = await self.runtime.hub_socket(socket.AF_INET6)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind((DNS_IP, 53))
        tcp.listen(64)
        self.dns_tcp = await asyncio.start_server(lambda r, w: dns.serve_tcp(self.catalogue, r, w), sock=tcp)
        ca, cert, key = await asyncio.to_thread(tlsca.make, self.root / "tls")
        self.proxy = Proxy(self, str(cert), str(key))
        self.wan = Wan(self.network, self.runtime.hub)
        sock_path = self.root / "daemon.sock"
        sock_path.unlink(missing_ok=True)
        self.server = await asyncio.start_unix_server(self._client, path=str(sock_path), limit=2**24)
        (self.root / "ready.json").write_text(json.dumps({"pid": os.getpid(), "socket": str(sock_path),
                                                          "ca": str(ca), "run_id": self.run_id}))

    async def stop(self) -> None:
        self.server.close()
        for t in list(self.tasks):
            t.cancel()
        with contextlib.suppress(Exception):
            self.proxy.close()
        with contextlib.suppress(Exception):
            self.wan.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.runtime.shutdown(), 10)
        await asyncio.to_thread(self.network.stop)
        netns.release(self.run_id)

    def background(self, coro) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    @staticmethod
    def _digest(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    def token_scope(self, digest: str) -> dict:
        """A known token's scope; any other token is treated as a user's own login (Fly would
        refuse a token it did not issue; the stand-in's tests use arbitrary ones)."""
        scope = dict(self.tokens.get(digest) or {"kind": "user"})
        scope["owner"] = f"{uuid.UUID(digest[:32])}@tokens.fly.io"
        return scope

    def make_token(self, kind: str, app: str | None = None, org: str | None = None) -> str:
        """A new token: "user" (everything), "org" (the apps of one org), "deploy" (one existing app)."""
        if kind == "deploy":
            if app not in self.state.apps:
                raise FlyError(f"failed retrieving app {app}: app not found")
            scope = {"kind": "deploy", "app": app, "org": self.state.apps[app].org}
        elif kind == "org":
            scope = {"kind": "org", "org": org or "personal"}
        elif kind == "user":
            scope = {"kind": "user"}
        else:
            raise ValueError(f"unknown token kind {kind!r}; known: user, org, deploy")
        token = "FlyV1 fm2_" + secrets.token_urlsafe(32)
        self.tokens[self._digest(token)] = scope
        return token

    def _records(self) -> list[dns.Record]:
        now = time.monotonic()
        return [dns.Record(m.app, m.id, m.region, m.private_ip, m.process_group, self.runtime.started_at(m.id),
                           self.first_seen.setdefault(m.id, now))
                for m in self.state.machines.values()]

    def new_machine_id(self) -> str:
        """14 hex digits, as Fly's; a test may queue exact IDs."""
        return self.next_ids.pop(0) if self.next_ids else machine_id()

    def forget_volume(self, vol_id: str) -> None:
        shutil.rmtree(self.root / "volumes" / vol_id, ignore_errors=True)

    def check_fault(self, command: str, regions: list[str]) -> None:
        for fault in self.faults:
            if fault["command"] == command and (fault.get("region") is None or fault["region"] in regions):
                self.faults.remove(fault)
                prefix = "error creating a new machine: " if command == "deploy" else ""
                raise FlyError(prefix + CAPACITY)

    # --- the socket ---

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = json.loads(await reader.readline())
            if request.get("op") == "flyctl":
                await self._flyctl(request, reader, writer)
            else:
                try:
                    result = await self._control(request["method"], request.get("args", {}))
                    writer.write((json.dumps({"result": result}) + "\n").encode())
                except Exception as e:  # reported to the test, which raises it
                    writer.write((json.dumps({"error": f"{type(e).__name__}: {e}"}) + "\n").encode())
                await writer.drain()
        except (ConnectionError, json.JSONDecodeError):
            pass
        finally:
            writer.close()

    async def _flyctl(self, request: dict, reader, writer) -> None:
        argv = request["argv"]
        started, t0 = time.time(), time.monotonic()

        def send(kind: str, text: str) -> None:
            if not writer.is_closing():
                writer.write((json.dumps({kind: text}) + "\n").encode())

        ctx = Context(self, request, send)
        mutates, command_name, code = None, None, 1
        latency = float(request.get("env", {}).get("NFLY_LATENCY_MS") or self.settings["latency_ms"]) / 1000
        task = None
        try:
            if latency:
                await asyncio.sleep(latency)
            command, rest = resolve(COMMANDS, argv)
            command_name, mutates = " ".join(command.path), command.mutates
            flags, args = parse(rest, command.flags)
            ctx.flags = flags
            digest = (self._digest(flags["access-token"]) if flags.get("access-token")
                      else request.get("env", {}).get("token"))
            if not digest:
                raise FlyError("No access token available. Please login with 'flyctl auth login'")
            ctx.token = self.token_scope(digest)
            if command_name not in ("deploy", "scale count"):
                self.check_fault(command_name, [flags.get("region")] if flags.get("region") else [])
            task = asyncio.create_task(command.handler(ctx, flags, args))
            watcher = asyncio.create_task(reader.read(1))  # the client hanging up cancels the command
            await asyncio.wait([task, watcher], return_when=asyncio.FIRST_COMPLETED)
            if not task.done():
                task.cancel()
                code = 127
            else:
                watcher.cancel()
                code = task.result() or 0
        except FlyError as e:
            # A Go runtime panic is printed as such, exit status 2; everything else as cobra does.
            send("err", f"{e}\n" if str(e).startswith("panic: ") else f"Error: {e}\n")
            code = e.code
        except asyncio.CancelledError:
            code = 127
        except Exception:
            send("err", f"Error: stand-in internal error\n{traceback.format_exc()}")
            code = 3
        send("exit", code)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        entry = {"start": started, "duration_s": round(time.monotonic() - t0, 4), "argv": list(argv),
                 "command": command_name, "exit": code, "mutates": mutates}
        with open(self.root / "flyctl.log", "a") as log:
            log.write(json.dumps(entry) + "\n")

    # --- the test API (see api.py) ---

    async def _control(self, method: str, args: dict):
        state, runtime = self.state, self.runtime
        if method == "ping":
            return "pong"
        if method == "settings":
            for key, value in args.items():
                if key not in self.settings:
                    raise KeyError(f"unknown setting {key}; known: {sorted(self.settings)}")
                self.settings[key] = value
            self.catalogue.delay = float(self.settings["dns_delay"])
            return self.settings
        if method == "edge":
            return list(await self.proxy.edge(args["app"], args["region"], args.get("port", 10000)))
        if method == "machines":
            return [{"id": m.id, "app": m.app, "region": m.region, "state": m.state, "private_ip": m.private_ip,
                     "private_ipv4": m.private_ipv4, "checks": m.checks, "exit_code": m.exit_code}
                    for m in state.machines.values() if args.get("app") in (None, m.app)]
        if method in ("kill_machine", "stop_machine", "start_machine"):
            m = state.machines[args["id"]]
            if method == "kill_machine":
                await runtime.kill(m)
            elif method == "stop_machine":
                await runtime.stop(m)
            elif m.state != "started":
                await runtime.start(m)
            state.save()
            return m.state
        if method == "restart_all":
            machines = [state.machines[i] for i in args["ids"]]
            await asyncio.gather(*(runtime.kill(m) for m in machines))
            await asyncio.gather(*(runtime.start(m) for m in machines))
            return time.monotonic()
        if method == "exec":
            m = state.machines[args["id"]]
            run = runtime.running.get(m.id)
            if m.state != "started" or run is None:
                raise RuntimeError(f"machine {m.id} is {m.state}")
            spec = json.loads((runtime.machine_dir(m.id) / "spec.json").read_text())
            proc = await asyncio.create_subprocess_exec(
                "nsenter", "-t", str(run.proc.pid), "-m", "-n", "-u", "-r", "-w", "--", "/bin/sh", "-c",
                args["command"], env=spec["env"], stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await asyncio.wait_for(proc.communicate(), args.get("timeout", 20))
            return [proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")]
        if method == "http":
            m = state.machines[args["id"]]
            return list(await runtime.http_get(m.private_ipv4, args["port"], args["path"], args.get("timeout", 2)))
        if method == "routes":
            async def routez(m):
                try:
                    doc = json.loads((await runtime.http_get(m.private_ipv4, 8222, "/routez", 2))[1])
                    varz = (json.loads((await runtime.http_get(m.private_ipv4, 8222, "/varz", 2))[1])
                            if args.get("pools") else {})
                    remotes: dict = {}
                    for r in doc.get("routes", []):
                        entry = remotes.setdefault(r["remote_id"], {"name": r.get("remote_name"), "pooled": 0,
                                                                   "accounts": []})
                        if r.get("account"):
                            entry["accounts"].append(r["account"])
                        else:
                            entry["pooled"] += 1
                    return {"id": m.id, "region": m.region, "server_id": doc["server_id"],
                            "server_name": doc.get("server_name"), "remotes": sorted(remotes),
                            "connections": remotes, "pool_size": varz.get("cluster", {}).get("pool_size", 3)}
                except (OSError, asyncio.TimeoutError, ValueError, KeyError, IndexError):
                    return {"id": m.id, "region": m.region, "server_id": None, "remotes": [], "connections": {}}
            machines = [m for m in state.app_machines(args["app"]) if m.state == "started"]
            return list(await asyncio.gather(*(routez(m) for m in machines)))
        if method == "make_token":
            try:
                return self.make_token(args["kind"], args.get("app"), args.get("org"))
            except FlyError as e:
                raise RuntimeError(str(e)) from None
        if method == "leases":
            return {mid: {"owner": lease.owner, "expires_at": lease.expires_iso()}
                    for mid, lease in self.leases.held.items() if lease.live()}
        if method == "next_machine_ids":
            self.next_ids.extend(args["ids"])
            return len(self.next_ids)
        if method == "fail_next":
            self.faults.append({"command": args["command"], "region": args.get("region")})
            return len(self.faults)
        if method == "reserve_name":
            state.taken.add(args["name"])
            return True
        if method == "set_delay":
            await self.wan.set_delay(args["a"], args["b"], args["ms"])
            return True
        if method == "set_link":
            await asyncio.to_thread(self.wan.set_link, args["region"], bool(args["up"]))
            return sorted(self.wan.cut)
        if method == "dns":
            rcode, answers = self.catalogue.answer(args["name"], args.get("qtype", dns.AAAA), args.get("asker"))
            return {"rcode": rcode, "answers": [v for _t, v in answers]}
        if method == "shutdown":
            self.stopping.set()
            return True
        raise KeyError(f"unknown control method {method}")


def _die_with_parent(parent: int | None) -> None:
    if parent:
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True, type=Path)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--parent", type=int)
    opts = parser.parse_args()
    daemon = Daemon(opts.root, opts.run_id)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, daemon.stopping.set)
    _die_with_parent(opts.parent)
    try:
        await daemon.start()
        await daemon.stopping.wait()
    finally:
        await daemon.stop()


if __name__ == "__main__":
    asyncio.run(main())
