"""Fly's edge proxy: `<app>.fly.dev:<port>` as one loopback listener per client region.

A connection goes to the least-loaded started Machine of the client's region
whose service checks are not failing; another region (the nearest first) is used only when
that region has none left. Ports without handlers pass TCP through; a `tls`
handler terminates TLS (test CA) and forwards plaintext. Upstream sockets are
made in the hub namespace, so the root namespace needs no link to the Machines.
"""
from __future__ import annotations

import asyncio
import random
import ssl

from .regions import distance
from .state import Machine


class Proxy:
    def __init__(self, daemon, cert: str, key: str):
        self.daemon = daemon
        self.listeners: dict[tuple[str, str, int], tuple[asyncio.base_events.Server, int]] = {}
        self.load: dict[str, int] = {}
        self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.tls.load_cert_chain(cert, key)

    def _service(self, app: str, port: int) -> tuple[dict, dict] | None:
        release = self.daemon.state.apps[app].complete_release() if app in self.daemon.state.apps else None
        if release is None:
            return None
        from .flytoml import services
        for svc in services(release.config):
            for p in svc["ports"]:
                if p["port"] == port:
                    return svc, p
        return None

    async def edge(self, app: str, region: str, port: int) -> tuple[str, int]:
        if app not in self.daemon.state.apps:
            raise LookupError(f"{app}.fly.dev does not resolve: no such app")
        if not self.daemon.state.apps[app].ips:
            raise LookupError(f"{app}.fly.dev does not resolve: the app has no public IPs")
        found = self._service(app, port)
        if found is None:
            raise LookupError(f"{app} has no deployed [[services.ports]] port {port}")
        key = (app, region, port)
        if key not in self.listeners:
            tls = self.tls if "tls" in found[1].get("handlers", []) else None
            server = await asyncio.start_server(
                lambda r, w: self._serve(app, region, port, r, w), "127.0.0.1", 0, ssl=tls,
                ssl_handshake_timeout=10 if tls else None)
            self.listeners[key] = (server, server.sockets[0].getsockname()[1])
        return "127.0.0.1", self.listeners[key][1]

    def forget(self, app: str) -> None:
        for key in [k for k in self.listeners if k[0] == app]:
            self.listeners.pop(key)[0].close()

    def close(self) -> None:
        for server, _port in self.listeners.values():
            server.close()
        self.listeners.clear()

    def candidates(self, app: str, region: str, internal_port: int, hard_limit, soft_limit) -> list[Machine]:
        runtime = self.daemon.runtime
        up = [m for m in self.daemon.state.app_machines(app)
              if m.state == "started" and runtime.routable(m)
              and any(s["internal_port"] == internal_port for s in m.config.get("services", []))
              and (hard_limit is None or self.load.get(m.id, 0) < hard_limit)]

        def rank(m: Machine):
            n = self.load.get(m.id, 0)
            return (distance(region, m.region), n >= soft_limit, n, random.random())
        local = sorted((m for m in up if m.region == region), key=rank)
        return local or sorted(up, key=rank)

    def _allowed(self, app: str, handlers: list[str]) -> bool:
        kinds = {ip.type for ip in self.daemon.state.apps[app].ips}
        return bool(kinds & {"v4", "v6"}) or ("tls" in handlers and "shared_v4" in kinds)

    async def _serve(self, app: str, region: str, port: int, reader, writer) -> None:
        upstream = None
        try:
            found = self._service(app, port) if app in self.daemon.state.apps else None
            if found is None or not self._allowed(app, found[1].get("handlers", [])):
                return
            svc, _p = found
            conc = svc["concurrency"]
            for m in self.candidates(app, region, svc["internal_port"], conc.get("hard_limit"),
                                     conc.get("soft_limit") or 20):
                try:
                    upstream = await self.daemon.runtime.connect(m.private_ipv4, svc["internal_port"], 2.0)
                except (OSError, asyncio.TimeoutError):
                    continue
                self.load[m.id] = self.load.get(m.id, 0) + 1
                try:
                    await self._pipe(reader, writer, *upstream)
                finally:
                    self.load[m.id] -= 1
                return
        except (ConnectionError, ssl.SSLError, OSError):
            pass
        finally:
            writer.close()
            if upstream:
                upstream[1].close()

    @staticmethod
    async def _pipe(client_r, client_w, up_r, up_w) -> None:
        """Copy both ways; when either side goes, the connection goes (NATS never half-closes)."""
        async def copy(src, dst):
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError, ssl.SSLError):
                pass
        tasks = [asyncio.create_task(copy(client_r, up_w)), asyncio.create_task(copy(up_r, client_w))]
        _done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in pending:
            t.cancel()
