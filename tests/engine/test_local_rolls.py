"""Restarts roll on the local platform as on Fly (issue 20): a 3-region JetStream mesh with an R3 stream under
a publish load, driven by the real engine. A change that needs a restart (lameDuckGracePeriod), and a
nats-server version change (2.12.8 -> 2.15.0), go one server at a time: never two servers down at once,
each back and current before the next, no acknowledged message lost, the clients reconnected, and every
server on the new version at the end. The figures (failed publishes, the longest stall) are printed."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import nats

from nats_fly.processes.local import http_get
from nats_fly_testkit import durable as d
from nats_fly_testkit.support import answered, nats_servers

PASSWORD = "roll-system-password-Zq81"
SERVERS = ["ord-0", "syd-0", "cdg-0"]  # the chain's order: the stack's regions, then servers


@dataclass
class Connection:
    """A nats-py client of every server, as the README advises: all URLs, reconnecting for ever."""
    nc: object = None
    reconnects: list[str] = field(default_factory=list)

    async def connect(self, urls: list[str]) -> "Connection":
        async def reconnected():
            self.reconnects.append(self.nc.connected_url.netloc)
        self.nc = await nats.connect(urls, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                                     reconnected_cb=reconnected)
        return self


class Watcher(threading.Thread):
    """Every server's monitor port, asked in turn about every 50 ms: which servers are down (not answering
    /healthz?js-server-only=true) in each round."""

    def __init__(self, http_ports: dict[str, int]):
        super().__init__(daemon=True)
        self.ports, self.done = http_ports, threading.Event()
        self.rounds: list[tuple[float, frozenset]] = []

    def run(self) -> None:
        while not self.done.is_set():
            down = set()
            for name, port in self.ports.items():
                try:
                    if http_get(port, "/healthz?js-server-only=true")[0] != 200:
                        down.add(name)
                except OSError:
                    down.add(name)
            self.rounds.append((time.time(), frozenset(down)))
            time.sleep(0.05)

    def first_down(self) -> dict[str, float]:
        found: dict[str, float] = {}
        for at, down in self.rounds:
            for name in down:
                found.setdefault(name, at)
        return found


def state_dir(stack) -> Path:
    return stack.root / ".nats-fly" / stack.stack / "nats" / "local"


def http_ports(stack) -> dict[str, int]:
    return {name: json.loads((state_dir(stack) / f"{name}.json").read_text())["http_port"] for name in SERVERS}


def varz(port: int) -> dict:
    return json.loads(http_get(port, "/varz")[1])


def jetstream_stack(project, **config):
    stack = project("local")
    stack.config({"jetstream": True, "lameDuckGracePeriod": "2s", **config})
    stack.pulumi("config", "set", "--secret", "sysPassword", stdin=PASSWORD)
    stack.pulumi("up", "--yes", "--skip-preview")
    return stack


async def kv_fill(nc) -> dict[str, int]:
    """An R3 KV bucket with some history: key -> its latest revision."""
    js = nc.jetstream()
    kv = await answered(lambda: js.create_key_value(bucket="cfg", history=5, replicas=3))
    latest = {}
    for round_ in range(3):
        for i in range(10):
            # a bucket just made answers once its group has a leader: a put asked again is one more revision
            latest[f"k{i}"] = await answered(lambda i=i, r=round_: kv.put(f"k{i}", f"{r}-{i}".encode()))
    return latest


async def kv_latest(nc) -> dict[str, int]:
    kv = await answered(lambda: nc.jetstream().key_value("cfg"))
    return {f"k{i}": (await answered(lambda i=i: kv.get(f"k{i}"))).revision for i in range(10)}


def roll_under_load(stack, change: dict) -> dict:
    """`change` applied by `pulumi up` while a client publishes to an R3 stream, one message at a time,
    retrying a failed publish with the same Nats-Msg-Id. The figures, and what the assertions need."""
    urls = [u for region in stack.outputs()["serverUrls"].values() for u in region]
    ports = http_ports(stack)
    started = {name: varz(port)["start"] for name, port in ports.items()}

    async def go():
        client = await Connection().connect(urls)
        try:
            await d.ensure_stream(client.nc)
            kv_before = await kv_fill(client.nc)
            publisher = d.Publisher(client, "dur.roll", interval=0.02)
            stop = asyncio.Event()
            task = asyncio.create_task(publisher.run(stop))
            await asyncio.sleep(2)
            watcher = Watcher(ports)
            watcher.start()
            t0 = time.monotonic()
            stack.config(change)
            await asyncio.to_thread(stack.pulumi, "up", "--yes", "--skip-preview")
            rolled_s = time.monotonic() - t0
            watcher.done.set()
            await asyncio.sleep(2)
            stop.set()
            await task
            lost = await d.lost_acked(client.nc, [publisher])
            return publisher, lost, watcher, rolled_s, client.reconnects, kv_before, await kv_latest(client.nc)
        finally:
            await client.nc.close()

    publisher, lost, watcher, rolled_s, reconnects, kv_before, kv_after = asyncio.run(go())
    attempts = publisher.count + publisher.errors
    figures = {**publisher.summary(), "failed_attempts_pct": round(100 * publisher.errors / max(attempts, 1), 2),
               "lost_acked": len(lost), "up_s": round(rolled_s, 1), "client_reconnects": len(reconnects),
               "most_servers_down_at_once": max((len(down) for _, down in watcher.rounds), default=0)}
    return {"figures": figures, "lost": lost, "publisher": publisher, "watcher": watcher, "started": started,
            "ports": ports, "reconnects": reconnects, "kv": (kv_before, kv_after)}


def assert_rolled(run: dict) -> None:
    """One server at a time, in the chain's order, every one restarted; nothing acked lost."""
    watcher, ports = run["watcher"], run["ports"]
    assert run["lost"] == [], run["lost"][:10]
    assert run["publisher"].gave_up == 0 and len(run["publisher"].acked) > 0
    together = [(round(at, 2), sorted(down)) for at, down in watcher.rounds if len(down) > 1]
    assert not together, f"servers down at the same time: {together[:5]}"
    first_down = watcher.first_down()
    assert sorted(first_down, key=first_down.get) == SERVERS, first_down
    assert all(varz(port)["start"] != run["started"][name] for name, port in ports.items()), "a server kept running"
    assert run["reconnects"], "the client never had to reconnect: its server was not restarted?"
    assert run["kv"][0] == run["kv"][1]


def test_a_restart_type_change_rolls_one_server_at_a_time_under_load(project):
    stack = jetstream_stack(project)
    marker = str(stack.root)
    try:
        run = roll_under_load(stack, {"lameDuckGracePeriod": "3s"})
        d.figure("local_restart_roll", run["figures"])
        assert_rolled(run)
        for name in SERVERS:
            assert 'lame_duck_grace_period: "3s"' in (state_dir(stack) / f"{name}.conf").read_text()
    finally:
        stack.pulumi("destroy", "--yes", "--skip-preview", check=False)
    assert nats_servers(marker) == []


def test_a_version_change_rolls_from_2_12_8_to_2_15_0_under_load(project):
    stack = jetstream_stack(project, natsVersion="2.12.8")
    marker = str(stack.root)
    try:
        assert {varz(port)["version"] for port in http_ports(stack).values()} == {"2.12.8"}
        run = roll_under_load(stack, {"natsVersion": "2.15.0"})
        d.figure("local_version_roll", run["figures"])
        assert_rolled(run)
        assert {name: varz(port)["version"] for name, port in run["ports"].items()} == \
            {name: "2.15.0" for name in SERVERS}
        for name in SERVERS:  # 2.15's delete ranges stay off while a 2.12 peer may be met
            assert "js_raft_delete_range: false" in (state_dir(stack) / f"{name}.conf").read_text()
    finally:
        stack.pulumi("destroy", "--yes", "--skip-preview", check=False)
    assert nats_servers(marker) == []
