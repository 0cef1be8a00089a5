"""fly.toml as data: built from Settings, rendered with a small TOML writer."""

from __future__ import annotations

import json
import re
import tomllib
from typing import Any, Iterable

from .natsconf import DATA_DIR, go_memory_limit
from ..config.settings import Settings

PROCESS_GROUP = "app"
VOLUME_NAME = "nats_data"


def fly_toml(s: Settings) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "app": s.app,
        "primary_region": s.primary_region,
        # DESIGN.md: Lame duck without kill_signal = "SIGUSR2"
        "kill_signal": "SIGINT",
        "kill_timeout": s.kill_timeout,
        "build": {"dockerfile": "Dockerfile"},
        "deploy": {"strategy": "rolling", "max_unavailable": 1, "wait_timeout": "5m"},
        "env": {
            "NATS_TOPOLOGY": s.topology,
            "NATS_CLUSTER_PORT": str(s.ports.cluster),
            "NATS_GATEWAY_PORT": str(s.ports.gateway),
            "NATS_PEER_WAIT": str(s.peer_wait),
            "GOMEMLIMIT": go_memory_limit(s),
        },
        "services": [_service(s, s.ports.client, [
            {"port": s.ports.public},  # no handler: raw TCP to nats-server
            {"port": s.ports.public_tls, "handlers": ["tls"]},  # Fly terminates TLS
        ])],
        # The rolling deploy's gate: plain /healthz, which with JetStream also asks for a meta leader
        # and every stream and consumer replica on the server to be current. So the next Machine
        # goes down only once the last one has caught up. (The first deploy's lone Machine can't
        # pass it: flyops.deploy_strategy picks immediate while the app has at most one Machine.)
        "checks": {
            "nats_health": {
                "type": "http", "port": s.ports.monitor, "method": "get", "path": "/healthz",
                "interval": "10s", "timeout": "5s", "grace_period": "30s",
            },
        },
        "vm": [{"size": s.vm_size, "memory": f"{s.vm_memory_mb}mb"}],
    }
    if s.websocket:
        # Browsers: wss://<app>.fly.dev. Fly's tls + http handlers on 443 terminate TLS (the shared
        # IPv4 serves them) and pass the HTTP/1.1 upgrade on to nats-server's websocket port.
        conf["services"].append(_service(s, s.ports.websocket, [{"port": 443, "handlers": ["tls", "http"]}]))
    if s.leafnodes:
        # Leaf nodes from anywhere: Fly's tls handler terminates their TLS-first handshake (the shared IPv4
        # serves tls-handler ports, routed by SNI) and passes plaintext to the leafnode listener.
        conf["services"].append(_service(s, s.ports.leafnode, [{"port": s.ports.public_leaf, "handlers": ["tls"]}]))
    if s.jetstream:
        conf["mounts"] = [{"source": VOLUME_NAME, "destination": DATA_DIR,
                           "initial_size": f"{s.volume_size_gb}gb"}]
    return conf


def _service(s: Settings, internal_port: int, ports: list[dict[str, Any]]) -> dict[str, Any]:
    """One [[services]] block: always on (no auto stop or start), the stack's connection limits, and a
    TCP check that takes a Machine out of the proxy's routing while the port does not answer."""
    return {
        "internal_port": internal_port,
        "protocol": "tcp",
        "auto_stop_machines": "off",
        "auto_start_machines": False,
        "min_machines_running": 0,
        "ports": ports,
        "concurrency": {"type": "connections", "soft_limit": s.soft_limit, "hard_limit": s.hard_limit},
        "tcp_checks": [{"grace_period": "10s", "interval": "15s", "timeout": "2s"}],
    }


def loads(text: str) -> dict[str, Any]:
    return tomllib.loads(text)


def gigabytes(value: Any) -> int:
    """A mount's initial_size as fly.toml writes it ("10gb", "10GB", 10) in GB."""
    match = re.fullmatch(r"\s*(\d+)\s*(gb|g)?\s*", str(value), re.I)
    if not match:
        raise ValueError(f"initial_size {value!r} is not a size in GB")
    return int(match.group(1))


def render(doc: dict[str, Any]) -> str:
    return "".join(_table(doc, ())).lstrip("\n")


def _table(table: dict[str, Any], path: tuple[str, ...]) -> Iterable[str]:
    scalars = {k: v for k, v in table.items() if not _is_table(v) and not _is_table_array(v)}
    for key, value in scalars.items():
        yield f"{key} = {_scalar(value)}\n"
    for key, value in table.items():
        if _is_table(value):
            yield f"\n[{'.'.join(path + (key,))}]\n"
            yield from _table(value, path + (key,))
        elif _is_table_array(value):
            for item in value:
                yield f"\n[[{'.'.join(path + (key,))}]]\n"
                yield from _table(item, path + (key,))


def _is_table(value: Any) -> bool:
    return isinstance(value, dict)


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    raise TypeError(f"cannot render {type(value).__name__} in fly.toml: {value!r}")
