"""Issue 14, item 2: leaf nodes from outside Fly. A real nats-server runs as a leaf node on a host of
its own: a network namespace whose only way out is `<app>.fly.dev` (its /etc/hosts), forwarded to the
stand-in's edge for publicLeafPort, where Fly's tls handler terminates the leaf's TLS-first handshake.
Its remote is the stack's own leafRemotes snippet with the password filled in.

- its local clients and clients at every region of the cluster exchange messages both ways;
- a leaf with a wrong password is refused, and its clients hear nothing of the cluster;
- when the leaf's Machine goes down (`flyctl machine stop`: SIGINT, lame duck), the leaf reconnects
  through the same public address to a Machine in another region.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import quote

import nats
import pytest

from nats_fly_testkit import fly as fh
from nats_fly_testkit.standin import netns
from nats_fly.render import natsconf
from nats_fly_testkit.support import nats_server_binary
from nats_fly_testkit.fly import Client, exchange

REGIONS = ["ord", "syd", "cdg"]
LEAF_PORT = 7422


class Outside:
    """A host outside the app's network: a namespace with one veth to this machine, where a forwarder
    plays `<app>.fly.dev:<publicLeafPort>` (the stand-in's edge as seen from `region`)."""

    def __init__(self, standin, app: str, region: str, index: int):
        self.ns = f"{standin.run_id}-out{index}{secrets.token_hex(2)}"
        self.host, self.peer = f"10.239.{index}.1", f"10.239.{index}.2"
        self.outer, inner = f"nflo{index}{secrets.token_hex(2)}", f"nfli{index}{secrets.token_hex(2)}"
        netns.add(self.ns, hosts=f"127.0.0.1 localhost\n{self.host} {app}.fly.dev\n")
        netns.run(["ip", "link", "add", self.outer, "type", "veth", "peer", "name", inner, "netns", self.ns])
        netns.ip(None, "addr", "add", f"{self.host}/30", "dev", self.outer)
        netns.ip(None, "link", "set", self.outer, "up")
        netns.ip(self.ns, "addr", "add", f"{self.peer}/30", "dev", inner)
        netns.ip(self.ns, "link", "set", inner, "up")
        edge_host, edge_port = standin.edge(app, region, LEAF_PORT)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(lambda r, w: self._forward(r, w, edge_host, edge_port), self.host, LEAF_PORT),
            self.loop).result(10)
        self.processes: list[subprocess.Popen] = []

    async def _forward(self, reader, writer, host: str, port: int) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(host, port)
        except OSError:
            writer.close()
            return

        async def copy(src, dst):
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()
        await asyncio.gather(copy(reader, up_w), copy(up_r, writer))

    def leaf(self, tmp: Path, name: str, remotes: str) -> tuple[subprocess.Popen, str, Path]:
        """A nats-server in the namespace, its client port on the namespace's address."""
        client, http = 4222 + len(self.processes), 8222 + len(self.processes)
        conf = tmp / f"{name}.conf"
        conf.write_text(f'server_name: {name}\nlisten: "{self.peer}:{client}"\nhttp: "{self.peer}:{http}"\n{remotes}')
        log = tmp / f"{name}.log"
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns, nats_server_binary(), "-c", str(conf)],
                                stdout=open(log, "w"), stderr=subprocess.STDOUT)
        self.processes.append(proc)
        return proc, f"nats://{self.peer}:{client}", log

    def close(self) -> None:
        for proc in self.processes:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        netns.delete(self.ns)
        subprocess.run(["ip", "link", "del", self.outer], capture_output=True)


@pytest.fixture(scope="module")
def leafy(standin):
    stack = fh.load_stack("prod", app=f"leafy-{secrets.token_hex(3)}", regions=REGIONS, jetstream=False,
                          websocket=False, leafnodes=True, leaf_users=("edge",), peer_wait=3)
    fh.components_up(standin, stack, fh.render_ours(stack, standin.root / "contexts" / stack.app))
    fh.wait_healthy(standin, stack.app, timeout=90)
    assert fh.wait_mesh(standin, stack.app, stack.total, 120) is not None
    yield stack
    standin.flyctl("apps", "destroy", stack.app, "--yes")


def remotes_for(stack, password: str, ca_file: str) -> str:
    """The stack's leafRemotes output, password filled in (URL-escaped), trusting the stand-in's CA."""
    from nats_fly.platforms.fly.resources import leaf_url
    snippet = natsconf.leaf_remote_snippet(stack.settings, leaf_url(stack.settings), tls_first=True)
    snippet = snippet.replace("<its leafPasswords entry>", quote(password, safe=""))
    return snippet.replace("handshake_first: true", f'handshake_first: true, ca_file: "{ca_file}"')


def leaf_hub(standin, stack) -> str | None:
    """The region of the Machine the leaf is connected to (its /leafz), or None."""
    for m in standin.machines(stack.app):
        if m["state"] != "started":
            continue
        with contextlib.suppress(Exception):
            if json.loads(standin.http(m["id"], 8222, "/leafz")[1]).get("leafnodes"):
                return m["region"]
    return None


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while (value := condition()) is None:
        assert time.monotonic() < deadline, what
        time.sleep(0.25)
    return value


class LeafClient:
    def __init__(self, url: str, region: str):
        self.url, self.region = url, region

    async def connect(self):
        self.nc = await nats.connect(self.url, connect_timeout=3, allow_reconnect=True, max_reconnect_attempts=-1,
                                     reconnect_time_wait=0.25, name="leaf-client")
        return self


def test_a_leaf_outside_fly_joins_is_refused_with_a_wrong_password_and_survives_lame_duck(standin, leafy, tmp_path):
    outside = Outside(standin, leafy.app, "ord", 1)
    try:
        remotes = remotes_for(leafy, leafy.leaf_passwords["edge"], standin.ca_file)
        _, leaf_url, log = outside.leaf(tmp_path, "leaf-outside", remotes)
        assert wait_for(lambda: leaf_hub(standin, leafy), 120, "the leaf never connected:\n" + log.read_text()) == "ord"

        async def both_ways():
            leaf = await LeafClient(leaf_url, "leaf").connect()
            results = {}
            for region in REGIONS:
                edge = await Client(standin, leafy, region).connect()
                results[f"leaf->{region}"] = len(await exchange(leaf, edge, f"leaf.to.{region}"))
                results[f"{region}->leaf"] = len(await exchange(edge, leaf, f"{region}.to.leaf"))
                await edge.nc.close()
            await leaf.nc.close()
            return results

        assert asyncio.run(both_ways()) == {f"{a}->{b}": 20 for r in REGIONS for a, b in (("leaf", r), (r, "leaf"))}

        # A leaf that does not know the password: refused, and it hears nothing.
        _, wrong_url, wrong_log = outside.leaf(tmp_path, "leaf-wrong", remotes_for(leafy, "not-the-password-x",
                                                                                  standin.ca_file))
        wait_for(lambda: True if "Authorization Violation" in wrong_log.read_text() else None, 120,
                 "no refusal in the wrong leaf's log:\n" + wrong_log.read_text())

        async def heard_here_and_at_the_wrong_leaf() -> tuple[int, int]:
            """20 messages: how many a client of the joined leaf heard, and by then the wrong one's."""
            spy = await nats.connect(wrong_url, allow_reconnect=False)
            heard = []

            async def on_message(msg):
                heard.append(msg.data)
            await spy.subscribe("secret.>", cb=on_message)
            await spy.flush()
            publisher = await Client(standin, leafy, "ord").connect()
            leaf = await LeafClient(leaf_url, "leaf").connect()
            try:
                return len(await exchange(publisher, leaf, "secret.x")), len(heard)
            finally:
                for nc in (publisher.nc, leaf.nc, spy):
                    await nc.close()

        assert asyncio.run(heard_here_and_at_the_wrong_leaf()) == (20, 0)

        # Its Machine goes down (Fly's kill signal: lame duck); the leaf comes back through another region.
        hub = next(m for m in standin.machines(leafy.app) if m["region"] == "ord")
        stopped = standin.flyctl("machine", "stop", hub["id"], "--app", leafy.app)
        assert stopped.returncode == 0, stopped.stderr
        try:
            region = wait_for(lambda: leaf_hub(standin, leafy), 120, "the leaf did not reconnect:\n" + log.read_text())
            assert region in ("syd", "cdg")

            async def after_lame_duck():
                leaf = await LeafClient(leaf_url, "leaf").connect()
                edge = await Client(standin, leafy, "cdg").connect()
                got = len(await exchange(leaf, edge, "leaf.after"))
                await edge.nc.close()
                await leaf.nc.close()
                return got

            assert asyncio.run(after_lame_duck()) == 20
            console = fh.console(standin, hub["id"], "lame duck")
            assert "Entering lame duck mode" in console, console
        finally:
            standin.start_machine(hub["id"])
    finally:
        outside.close()
