"""Loopback clusters for verify, run by localrun with confs written to our conventions:
server_name <region>-<i>, server_tags region:<region>, accounts SYS (user sys) and APP."""

from __future__ import annotations

from collections.abc import Iterator
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from nats_fly.config.settings import DEFAULT_NATS_VERSION
from nats_fly.processes import local as localrun
from .support import free_ports

PASSWORD = "verify-sys-secret-41"
REGIONS = ("ord", "syd", "cdg")


@dataclass
class Node:
    region: str
    index: int
    client: int
    cluster: int
    gateway: int
    http: int

    @property
    def name(self) -> str:
        return f"{self.region}-{self.index}"


@dataclass
class LocalCluster:
    nodes: list[Node]
    state_dir: Path
    nats_version: str = DEFAULT_NATS_VERSION

    @property
    def urls(self) -> dict[str, str]:
        """Each region's first server."""
        urls: dict[str, str] = {}
        for node in self.nodes:
            urls.setdefault(node.region, f"nats://127.0.0.1:{node.client}")
        return urls

    @property
    def region_urls(self) -> dict[str, str]:
        """Each region's servers, comma-separated."""
        urls: dict[str, list[str]] = {}
        for node in self.nodes:
            urls.setdefault(node.region, []).append(f"nats://127.0.0.1:{node.client}")
        return {region: ",".join(each) for region, each in urls.items()}

    @property
    def layout(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for node in self.nodes:
            counts[node.region] = counts.get(node.region, 0) + 1
        return counts


def conf(node: Node, nodes: list[Node], topology: str, jetstream_dir: Path | None,
         omit_gateways: dict[str, str], extra: dict) -> dict:
    """The server's conf as data (localrun takes nats_fly.render.natsconf's form)."""
    if topology == "mesh":
        cluster_name, peers = "verify-test", [n for n in nodes if n is not node]
    else:
        cluster_name, peers = node.region, [n for n in nodes if n.region == node.region and n is not node]
    app: dict = {"users": [{"user": "app", "password": "app-pw"}]}
    if jetstream_dir:
        app["jetstream"] = "enabled"
    data: dict = {
        "server_name": node.name, "server_tags": [f"region:{node.region}"], "listen": f"127.0.0.1:{node.client}",
        "http": f"127.0.0.1:{node.http}", "lame_duck_grace_period": "1s", "lame_duck_duration": "30s",
        "accounts": {"SYS": {"users": [{"user": "sys", "password": PASSWORD}]}, "APP": app},
        "system_account": "SYS",
        "cluster": {"name": cluster_name, "listen": f"127.0.0.1:{node.cluster}",
                    "routes": [f"nats-route://127.0.0.1:{p.cluster}" for p in peers]},
    }
    if topology == "supercluster":
        data["gateway"] = {"name": node.region, "listen": f"127.0.0.1:{node.gateway}", "gateways": [
            {"name": region, "urls": [f"nats://127.0.0.1:{n.gateway}" for n in nodes if n.region == region]}
            for region in dict.fromkeys(n.region for n in nodes) if omit_gateways.get(node.region) != region]}
    if jetstream_dir:
        data["jetstream"] = {"store_dir": str(jetstream_dir / node.name)}
    return {**data, **extra}


def start_cluster(root: Path, layout: dict[str, int], topology: str = "mesh", jetstream: bool = False,
                  omit_gateways: dict[str, str] | None = None, extra: dict | None = None,
                  nats_version: str = DEFAULT_NATS_VERSION) -> Iterator[LocalCluster]:
    """Start the servers with localrun on `nats_version`; stop them all afterwards, however the test ended."""
    slots = [(region, i) for region, count in layout.items() for i in range(count)]
    ports = free_ports(4 * len(slots))
    nodes = [Node(region, i, *ports[4 * k:4 * k + 4]) for k, (region, i) in enumerate(slots)]
    cluster = LocalCluster(nodes, root / "state", nats_version)
    try:
        for node in nodes:
            data = conf(node, nodes, topology, root / "js" if jetstream else None, omit_gateways or {}, extra or {})
            localrun.ensure(node.name, data, cluster.state_dir, node.client, node.http, nats_version=nats_version)
        yield cluster
    finally:
        with ThreadPoolExecutor(len(nodes)) as pool:  # JetStream servers take a grace period each
            list(pool.map(lambda node: localrun.stop(node.name, cluster.state_dir, timeout=5), nodes))


def wait_for_meta_peers(monitor_ports: list[int], count: int, timeout: float = 120) -> None:
    """Until the meta group has a leader and every one of `count` servers as a current peer: placing a
    stream before that finds too few peers, whatever the tags say. Only the leader lists the peers, so
    every server is asked."""
    deadline = time.monotonic() + timeout
    while True:
        metas = []
        for port in monitor_ports:
            try:
                metas.append(json.loads(localrun.http_get(port, "/jsz")[1]).get("meta_cluster") or {})
            except (OSError, ValueError):
                pass
        if any(m.get("leader") and len([r for r in m.get("replicas") or [] if r.get("current")]) == count - 1
               for m in metas):
            return
        assert time.monotonic() < deadline, f"the meta group never had {count} current peers: {metas}"
        time.sleep(0.2)
