"""Prove a NATS cluster is whole: every server up by region, routes and gateways complete,
messages flowing between every ordered pair of regions, and one JetStream meta leader.

It asks the servers themselves through the system account's `$SYS.REQ.SERVER.PING[.ROUTEZ|
.GATEWAYZ|.JSZ]` requests, which every server answers, and repeats them until the cluster
matches the expectation or `timeout` runs out: run right after `pulumi up`, it waits for the
cluster to form instead of failing on a half-formed one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import ssl
import statistics
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from nats.aio.client import Client

from ..config.settings import TOPOLOGIES
from ..contract import operations as ops
from ..render import natsconf
from .natsadmin import ConnectError, connect, connect_once, display, tls_context

PASSWORD_ENV = ops.SYS_PASSWORD_ENV
DEFAULT_USER = natsconf.SYS_USER
CLIENT_NAME = "nats-fly verify"
SINGLE = "*"
"""The key of the one connection when verify is given a single URL instead of one per region."""

REPLY_QUIET = 0.2
"""Seconds of silence, once every expected server has answered, before a request counts as
complete: a server that should not be there gets that long to show up too."""
REPLY_WINDOW = 1.0
POLL_PAUSE = 0.25
MESSAGE_GAP = 0.002


@dataclass
class Expectation:
    """What a whole cluster looks like."""

    regions: dict[str, int]
    """Servers expected in each region, e.g. {"ord": 3, "syd": 1}."""
    topology: str = "mesh"
    """"mesh" (one cluster over all regions) or "supercluster" (a cluster per region, gateways between)."""
    jetstream: bool = False
    """Whether every server runs JetStream, with one meta leader they all agree on."""

    def __post_init__(self) -> None:
        if self.topology not in TOPOLOGIES:
            raise ValueError(f"topology {self.topology!r} is not one of {', '.join(TOPOLOGIES)}")
        if not self.regions:
            raise ValueError("regions is empty: expect at least one region with one server")
        for region, count in self.regions.items():
            if not isinstance(count, int) or count < 1:
                raise ValueError(f"regions[{region!r}] = {count!r}: expect a whole number of servers >= 1")

    @property
    def servers(self) -> int:
        return sum(self.regions.values())


@dataclass
class Check:
    """One row of the report."""

    name: str
    ok: bool
    detail: str


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(check.ok for check in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [check for check in self.checks if not check.ok]

    def summary(self) -> str:
        if self.ok:
            return f"cluster is whole: all {len(self.checks)} checks passed"
        names = ", ".join(check.name for check in self.failed)
        return f"cluster is NOT whole: {len(self.failed)} of {len(self.checks)} checks failed: {names}"

    def table(self) -> str:
        """The checks as an aligned table, the summary as its last line."""
        rows = [("CHECK", "RESULT", "DETAIL")] + [
            (check.name, "ok" if check.ok else "FAIL", check.detail) for check in self.checks]
        width = max(len(row[0]) for row in rows)
        lines = [f"{name:<{width}}  {result:<6}  {detail}" for name, result, detail in rows]
        return "\n".join(lines + [self.summary()])

    def to_dict(self) -> dict:
        return {"ok": self.ok, "checks": [asdict(check) for check in self.checks], "summary": self.summary()}


@dataclass
class ServerSeen:
    """One server as its PING reply describes it."""

    id: str
    name: str
    cluster: str
    region: str


# ---------------------------------------------------------------- judging what the servers said

def region_of(tags: list[str]) -> str:
    for tag in tags or []:
        if tag.startswith("region:"):
            return tag.removeprefix("region:")
    return "?"


def servers_seen(pings: Mapping[str, dict]) -> list[ServerSeen]:
    seen = [ServerSeen(s["id"], s["name"], s.get("cluster", ""), region_of(s.get("tags", [])))
            for s in (reply["server"] for reply in pings.values())]
    return sorted(seen, key=lambda server: server.name)


def check_servers(expect: Expectation, seen: list[ServerSeen]) -> list[Check]:
    checks = []
    regions = list(expect.regions) + sorted({s.region for s in seen} - set(expect.regions))
    for region in regions:
        wanted = expect.regions.get(region, 0)
        names = [s.name for s in seen if s.region == region]
        listed = ", ".join(names) or "none"
        if region not in expect.regions:
            where = "servers without a region: tag" if region == "?" else "a region not expected"
            checks.append(Check(f"servers[{region}]", False, f"{len(names)} up in {where}: {listed}"))
        else:
            checks.append(Check(f"servers[{region}]", len(names) == wanted, f"{len(names)}/{wanted} up: {listed}"))
    return checks


def check_routes(expect: Expectation, seen: list[ServerSeen], routez: Mapping[str, dict]) -> list[Check]:
    """Mesh: every server routes to every other. Supercluster: to every other in its region.

    Route pooling (3 by default) plus the system account's pinned route give several
    connections per peer, so peers are counted by distinct remote server name."""
    checks = []
    clusters = cluster_names(seen)
    for region in expect.regions:
        problems, connections = [], 0
        members = [s for s in seen if s.region == region]
        for server in members:
            peers = {p.name for p in seen if p is not server and (expect.topology == "mesh" or p.region == region)}
            if server.id not in routez:
                problems.append(f"{server.name} did not answer ROUTEZ")
                continue
            routes = routez[server.id]["data"].get("routes") or []
            connections += len(routes)
            missing = sorted(peers - {route.get("remote_name") for route in routes})
            if missing:
                problems.append(f"{server.name} has no route to {', '.join(missing)}")
        wrong = cluster_problem(expect, region, members, clusters)
        if wrong:
            problems.insert(0, wrong)
        if not members:
            checks.append(Check(f"routes[{region}]", False, "no server up to ask"))
        elif problems:
            checks.append(Check(f"routes[{region}]", False, "; ".join(problems)))
        else:
            peers = len(seen) - 1 if expect.topology == "mesh" else len(members) - 1
            detail = (f"cluster {members[0].cluster}: {len(members)} server(s), each routed to all {peers} "
                      f"peer(s) ({connections} route connections)" if peers else
                      f"cluster {members[0].cluster}: one server, no peer to route to")
            checks.append(Check(f"routes[{region}]", True, detail))
    return checks


def cluster_names(seen: list[ServerSeen]) -> dict[str, set[str]]:
    clusters: dict[str, set[str]] = {}
    for server in seen:
        clusters.setdefault(server.region, set()).add(server.cluster)
    return clusters


def cluster_problem(expect: Expectation, region: str, members: list[ServerSeen],
                    clusters: dict[str, set[str]]) -> str | None:
    names = {s.cluster for s in members}
    if expect.topology == "mesh":
        everywhere = set().union(*clusters.values()) if clusters else set()
        if len(everywhere) > 1:
            return f"servers are in clusters {', '.join(sorted(everywhere))}; a mesh is one cluster"
        return None
    if len(names) > 1:
        return f"its servers are in clusters {', '.join(sorted(names))}; a region is one cluster"
    shared = sorted(r for r, other in clusters.items() if r != region and other & names)
    if shared:
        return f"cluster {', '.join(names)} also spans {', '.join(shared)}; each region is its own cluster"
    return None


def check_gateways(expect: Expectation, seen: list[ServerSeen], gatewayz: Mapping[str, dict]) -> list[Check]:
    """Every server has a connected outbound gateway, from its own conf, to every other region.

    A gateway missing from a conf still connects once the other side dials in (nats-server
    learns gateways by gossip), but then the cluster holds together only while that gossip
    does: such a gateway counts as missing."""
    clusters = cluster_names(seen)
    checks = []
    for region in expect.regions:
        others = {r: (sorted(clusters.get(r, ())) or [r])[0] for r in expect.regions if r != region}
        problems, members = [], [s for s in seen if s.region == region]
        for server in members:
            if server.id not in gatewayz:
                problems.append(f"{server.name} did not answer GATEWAYZ")
                continue
            outbound = gatewayz[server.id]["data"].get("outbound_gateways") or {}
            for other, gateway in sorted(others.items()):
                link = outbound.get(gateway)
                if link is None:
                    problems.append(f"{server.name} has no gateway to {gateway}")
                elif not link.get("connection"):
                    problems.append(f"{server.name}'s gateway to {gateway} is not connected")
                elif not link.get("configured"):
                    problems.append(f"{server.name}'s gateway to {gateway} is only learned by gossip, not in its conf")
        if not members:
            checks.append(Check(f"gateways[{region}]", False, "no server up to ask"))
        elif problems:
            checks.append(Check(f"gateways[{region}]", False, "; ".join(problems)))
        else:
            checks.append(Check(f"gateways[{region}]", True,
                                f"{len(members)} server(s) each connected to {', '.join(sorted(others.values())) or 'no other region'}"))
    return checks


def check_jetstream(seen: list[ServerSeen], jsz: Mapping[str, dict]) -> Check:
    off, leaders, leader_view = [], {}, None
    for server in seen:
        data = (jsz.get(server.id) or {}).get("data")
        if data is None:
            off.append(f"{server.name} (no JSZ answer)")
        elif data.get("disabled") or not data.get("config"):
            off.append(server.name)
        else:
            meta = data.get("meta_cluster") or {}
            leaders[server.name] = meta.get("leader") or ""
            if meta.get("leader") == server.name:
                leader_view = meta
    if off:
        return Check("jetstream", False, f"JetStream is off on {', '.join(off)}")
    agreed = set(leaders.values())
    if agreed == {""}:
        return Check("jetstream", False, "no meta leader elected")
    if len(agreed) > 1:
        views = ", ".join(f"{name}: {leader or 'none'}" for name, leader in leaders.items())
        return Check("jetstream", False, f"servers disagree on the meta leader ({views})")
    if leader_view is None:
        return Check("jetstream", False, f"meta leader {agreed.pop()} is not among the servers that answered")
    behind = [r["name"] for r in leader_view.get("replicas") or [] if not r.get("current")]
    size = leader_view.get("cluster_size", 0)
    if behind:
        return Check("jetstream", False, f"meta leader {leader_view['leader']}: peers not current: {', '.join(behind)}")
    if size != len(seen):
        return Check("jetstream", False,
                     f"meta group has {size} peers but {len(seen)} servers are up "
                     f"(a replaced server stays a peer until `nats server raft peer-remove`)")
    return Check("jetstream", True, f"meta leader {leader_view['leader']}, agreed by all {len(seen)} servers")


def judge(expect: Expectation, replies: Mapping[str, Mapping[str, dict]]) -> tuple[list[ServerSeen], list[Check]]:
    seen = servers_seen(replies["PING"])
    checks = check_servers(expect, seen)
    if not seen:
        return seen, checks
    checks += check_routes(expect, seen, replies["ROUTEZ"])
    if expect.topology == "supercluster":
        checks += check_gateways(expect, seen, replies["GATEWAYZ"])
    if expect.jetstream:
        checks.append(check_jetstream(seen, replies["JSZ"]))
    return seen, checks


# ---------------------------------------------------------------- talking to the servers

async def ask_all(nc: Client, subject: str, expected: int, window: float) -> dict[str, dict]:
    """Replies to one $SYS request, by server id: until every expected server has answered
    and REPLY_QUIET has passed, or until the window closes."""
    replies: dict[str, dict] = {}
    arrived = asyncio.Event()

    async def on_reply(msg) -> None:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            reply = json.loads(msg.data)
            replies[reply["server"]["id"]] = reply
            arrived.set()

    sub = await nc.subscribe(nc.new_inbox(), cb=on_reply)
    try:
        await nc.publish(subject, b"", reply=sub.subject)
        deadline = time.monotonic() + window
        while (left := deadline - time.monotonic()) > 0:
            arrived.clear()
            try:
                await asyncio.wait_for(arrived.wait(), REPLY_QUIET if len(replies) >= expected else left)
            except TimeoutError:
                if len(replies) >= expected:
                    break
    finally:
        await sub.unsubscribe()
    return replies


async def poll_cluster(nc: Client, expect: Expectation, timeout: float) -> tuple[list[ServerSeen], list[Check]]:
    subjects = {"PING": "$SYS.REQ.SERVER.PING", "ROUTEZ": "$SYS.REQ.SERVER.PING.ROUTEZ"}
    if expect.topology == "supercluster":
        subjects["GATEWAYZ"] = "$SYS.REQ.SERVER.PING.GATEWAYZ"
    if expect.jetstream:
        subjects["JSZ"] = "$SYS.REQ.SERVER.PING.JSZ"
    deadline = time.monotonic() + timeout
    while True:
        window = max(0.5, min(REPLY_WINDOW, deadline - time.monotonic()))
        answers = await asyncio.gather(*(ask_all(nc, s, expect.servers, window) for s in subjects.values()))
        seen, checks = judge(expect, dict(zip(subjects, answers)))
        if not seen:
            checks = [Check("servers", False, "no server answered $SYS.REQ.SERVER.PING: is the user "
                                              "in the system account (system_account in the conf)?")]
        if all(check.ok for check in checks) or time.monotonic() >= deadline:
            return seen, checks
        await asyncio.sleep(POLL_PAUSE)


def landed_on(nc: Client) -> str:
    # nats-py keeps the server's INFO, which names the server, only in this attribute.
    return nc._server_info.get("server_name", "?")


async def land_in_region(connections: dict[str, Client], stack: contextlib.AsyncExitStack,
                         targets: dict[str, str], seen: list[ServerSeen], timeout: float, **options) -> None:
    """Reconnect, until `timeout`, a connection that landed outside its region: Fly's proxy sends a
    client elsewhere while its region's new Machines are not healthy yet."""
    region = {s.name: s.region for s in seen}
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        astray = [k for k, nc in connections.items() if k != SINGLE and region.get(landed_on(nc)) != k]
        if not astray or asyncio.get_running_loop().time() >= deadline:
            return
        await asyncio.sleep(0.5)
        for key in astray:
            try:
                again = await connect_once(targets[key], timeout=2, name=CLIENT_NAME, **options)
            except ConnectError:
                continue
            stack.push_async_callback(again.close)
            await connections[key].close()
            connections[key] = again


def check_connection(key: str, url: str, nc: Client, seen: list[ServerSeen]) -> Check:
    name = landed_on(nc)
    region = next((s.region for s in seen if s.name == name), None)
    where = f"{name} (region {region or 'unknown: it did not answer PING'}) via {display(url)}"
    if key != SINGLE and region != key:
        return Check(connect_label(key), False, f"landed on {where}, not in {key}")
    return Check(connect_label(key), True, f"landed on {where}")


def connect_label(key: str) -> str:
    return "connect" if key == SINGLE else f"connect[{key}]"


async def pubsub(source: Client, target: Client, label: str, messages: int, timeout: float) -> Check:
    """Messages published through `source` and delivered through `target`, with latency.

    A probe is repeated until it arrives, so interest has reached the publisher's side (over
    routes, or a gateway's interest-only mode) before the counted messages go out."""
    subject = f"_nats_fly.verify.{secrets.token_hex(6)}"
    probed, done = asyncio.Event(), asyncio.Event()
    latencies: dict[int, float] = {}

    async def on_message(msg) -> None:
        received = time.perf_counter_ns()
        if msg.data == b"probe":
            probed.set()
            return
        index, sent = (int(part) for part in msg.data.split())
        latencies.setdefault(index, (received - sent) / 1e6)
        if len(latencies) == messages:
            done.set()

    sub = await target.subscribe(subject, cb=on_message)
    await target.flush()
    try:
        deadline = time.monotonic() + timeout
        while not probed.is_set():
            if time.monotonic() >= deadline:
                return Check(label, False, f"no message got through within {timeout:g}s (interest never arrived)")
            await source.publish(subject, b"probe")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(probed.wait(), 0.1)
        for index in range(messages):
            await source.publish(subject, f"{index} {time.perf_counter_ns()}".encode())
            await asyncio.sleep(MESSAGE_GAP)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), max(0.5, deadline - time.monotonic()))
    finally:
        await sub.unsubscribe()
    got = sorted(latencies.values())
    figures = f", p50 {statistics.median(got):.2f} ms, max {got[-1]:.2f} ms" if got else ""
    return Check(label, len(got) == messages, f"{len(got)}/{messages} received{figures}")


async def verify(
    urls: Mapping[str, str] | str,
    expect: Expectation,
    *,
    user: str | None = None,
    password: str | None = None,
    timeout: float = 15.0,
    messages: int = 50,
    tls_handshake_first: bool = False,
    tls_ca_file: str | None = None,
    websocket_urls: Mapping[str, str] | str | None = None,
) -> Report:
    """Prove the cluster behind `urls` matches `expect`.

    `urls` maps each expected region to a client URL that lands in that region (or several,
    comma-separated, all in that region), or is one URL (Fly's anycast address, say): then
    messages go through that one URL and no cross-region path is proved. `user`/`password`
    must be a system-account user; messages travel in its account. `timeout` bounds each
    phase's wait for the cluster to come whole (connect, cluster state, pub/sub). No
    credential appears in the report: URLs are shown without their user information.

    `websocket_urls` (ws:// or wss://, per region or one) adds a WebSocket path: messages published
    over WebSocket in a region reach a client of another region's client port, and the reverse."""
    targets = {SINGLE: urls} if isinstance(urls, str) else dict(urls)
    if SINGLE not in targets and set(targets) != set(expect.regions):
        raise ValueError(
            f"urls name regions {', '.join(sorted(targets)) or 'none'} but the expectation names "
            f"{', '.join(sorted(expect.regions))}: give one URL per expected region, or a single URL")
    if messages < 1:
        raise ValueError(f"messages = {messages}: send at least 1")
    tls = tls_context(tls_ca_file, tls_handshake_first)
    report = Report()
    async with contextlib.AsyncExitStack() as stack:
        attempts = await asyncio.gather(*(
            connect(url, user=user, password=password, timeout=timeout, tls=tls, name=CLIENT_NAME,
                    tls_handshake_first=tls_handshake_first) for url in targets.values()), return_exceptions=True)
        connections: dict[str, Client] = {}
        refused: dict[str, Check] = {}
        for (key, url), attempt in zip(targets.items(), attempts):
            if isinstance(attempt, ConnectError):
                refused[key] = Check(connect_label(key), False, f"{display(url)}: {attempt}")
            elif isinstance(attempt, BaseException):
                raise attempt
            else:
                stack.push_async_callback(attempt.close)
                connections[key] = attempt
        seen, cluster_checks = [], []
        if connections:
            seen, cluster_checks = await poll_cluster(next(iter(connections.values())), expect, timeout)
            await land_in_region(connections, stack, targets, seen, timeout, user=user, password=password,
                                 tls=tls, tls_handshake_first=tls_handshake_first)
        report.checks += [refused.get(key) or check_connection(key, targets[key], connections[key], seen)
                          for key in targets]
        if connections:
            report.checks += cluster_checks
            report.checks += await pubsub_checks(connections, list(targets), messages, timeout)
        if websocket_urls:
            report.checks += await websocket_checks(stack, websocket_urls, connections, seen, messages, timeout,
                                                    user=user, password=password, tls_ca_file=tls_ca_file)
    return report


async def websocket_checks(stack: contextlib.AsyncExitStack, urls: Mapping[str, str] | str,
                           connections: Mapping[str, Client], seen: list[ServerSeen], messages: int,
                           timeout: float, **login) -> list[Check]:
    """Each WebSocket URL: where it lands, and messages both ways between it and another region's
    client-port connection (its own region's when it is the only one)."""
    targets = {SINGLE: urls} if isinstance(urls, str) else dict(urls)
    checks: list[Check] = []
    for key, url in targets.items():
        label = "websocket" if key == SINGLE else f"websocket[{key}]"
        tls = ssl.create_default_context(cafile=login["tls_ca_file"]) if url.startswith("wss://") else None
        try:
            ws = await connect(url, user=login["user"], password=login["password"], timeout=timeout, tls=tls,
                               name=CLIENT_NAME)
        except ConnectError as error:
            checks.append(Check(label, False, f"{display(url)}: {error}"))
            continue
        stack.push_async_callback(ws.close)
        name = landed_on(ws)
        region = next((s.region for s in seen if s.name == name), None)
        checks.append(Check(label, key in (SINGLE, region), f"landed on {name} (region {region}) via {display(url)}"))
        other = next((k for k in connections if k != key), key if key in connections else None)
        if other is None:
            checks.append(Check(f"{label}:pubsub", False, "not run: no client-port connection to pair it with"))
            continue
        there = "" if other == SINGLE else other
        checks.append(await pubsub(ws, connections[other], f"{label}->tcp[{there or 'client url'}]", messages, timeout))
        checks.append(await pubsub(connections[other], ws, f"tcp[{there or 'client url'}]->{label}", messages, timeout))
    return checks


async def pubsub_checks(connections: Mapping[str, Client], keys: list[str], messages: int, timeout: float) -> list[Check]:
    """One check per ordered pair of regions, run together so a slow pair costs no extra time."""
    if keys == [SINGLE]:
        check = await pubsub(connections[SINGLE], connections[SINGLE], "pubsub", messages, timeout)
        check.detail += "; over one URL, so no cross-region path is proved: give one URL per region"
        return [check]

    async def pair(source: str, target: str) -> Check:
        label = f"pubsub[{source}->{target}]"
        missing = [key for key in (source, target) if key not in connections]
        if missing:
            return Check(label, False, f"not run: no connection to {missing[0]}")
        return await pubsub(connections[source], connections[target], label, messages, timeout)

    pairs = [(a, b) for a in keys for b in keys if a != b] or [(keys[0], keys[0])]
    return list(await asyncio.gather(*(pair(a, b) for a, b in pairs)))


# ---------------------------------------------------------------- the command

def parse_urls(values: list[str]) -> dict[str, str] | str:
    """REGION=URL values (or one plain URL); a URL with a password in it is refused."""
    by_region, plain = {}, []
    for value in values:
        found = re.match(r"^([A-Za-z0-9_-]+)=(.+)$", value)
        if found:
            by_region[found.group(1)] = found.group(2)
        else:
            plain.append(value)
    for url in list(by_region.values()) + plain:
        if any(urlsplit(part.strip()).password for part in url.split(",")):
            raise ValueError(f"--url {display(url)}: a URL must not carry a password; "
                             f"use --password-file or {PASSWORD_ENV}")
    if plain and (by_region or len(plain) > 1):
        raise ValueError("--url: give either one URL, or REGION=URL for every region, not both")
    return plain[0] if plain else by_region


def read_password(path: Path | None) -> str:
    if path is not None:
        try:
            return path.read_text().rstrip("\r\n")
        except OSError as error:
            raise ValueError(f"--password-file {path}: {error.strerror}") from None
    if os.environ.get(PASSWORD_ENV):
        return os.environ[PASSWORD_ENV]
    raise ValueError(f"no password: pass --password-file PATH or set {PASSWORD_ENV}")


def run(op: ops.Verify) -> int:
    """The verify operation: the report as a table (or JSON); exit 0 whole, 1 a check failed, 2 usage."""
    try:
        urls = parse_urls(list(op.url))
        expect = Expectation(dict(op.expect), op.topology, op.jetstream)
        password = read_password(op.password_file)
        ws_urls = parse_urls(list(op.ws_url)) if op.ws_url else None
        report = asyncio.run(verify(urls, expect, user=op.user, password=password, timeout=op.timeout,
                                    messages=op.messages, tls_handshake_first=op.tls_first, tls_ca_file=op.ca,
                                    websocket_urls=ws_urls))
    except ValueError as error:
        op.parser().error(str(error))
    print(json.dumps(report.to_dict(), indent=2) if op.json else report.table())
    return 0 if report.ok else 1
