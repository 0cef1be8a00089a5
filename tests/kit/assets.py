"""JetStream assets as the engine tests and the benchmarks drive them: a user's Python program (a local
cluster, and the assets its stack config `assets` declares), and a look at the server through the
cluster's `connection` output."""

from __future__ import annotations

import asyncio
import json
import socket
import textwrap
from pathlib import Path

import nats
import yaml

from .engine import Project, host_project

SYS_PASSWORD = "assets-sys-password-1"
APP_PASSWORD = "assets-app-password-1"

PROGRAM = textwrap.dedent('''\
    """A user's program: a NATS cluster on this machine, and the JetStream assets that the stack config
    `assets` declares (name -> {kind, args, protect, retainOnDelete, viaProvider}); an arg "@x" is asset
    x's name."""
    import json

    import pulumi
    from nats_fly import Consumer, KeyValue, NatsCluster, ObjectStore, Provider, Stream

    KINDS = {"Stream": Stream, "KeyValue": KeyValue, "ObjectStore": ObjectStore, "Consumer": Consumer}
    config = pulumi.Config()
    cluster = NatsCluster("nats", {
        "app": "assets", "platform": "local", "regions": config.require_object("regions"), "jetstream": True,
        "localBasePort": config.require_int("basePort"), "sysPassword": config.require_secret("sysPassword"),
        "userPasswords": config.require_secret_object("userPasswords")})
    provider = Provider("js", {"connection": cluster.connection})
    made = {}
    for name, spec in json.loads(config.get("assets") or "{}").items():
        args = {k: made[v[1:]].name if isinstance(v, str) and v.startswith("@") else v
                for k, v in spec.get("args", {}).items()}
        if not spec.get("viaProvider"):
            args["connection"] = cluster.connection
        made[name] = KINDS[spec["kind"]](name, args, pulumi.ResourceOptions(
            protect=spec.get("protect", False), retain_on_delete=spec.get("retainOnDelete", False),
            provider=provider if spec.get("viaProvider") else None))
    pulumi.export("connection", cluster.connection)
    pulumi.export("provider", provider.urn)
    ''')


def free_base_port(count: int) -> int:
    """The first of `count` consecutive loopback ports free right now."""
    for base in range(21000, 60000, 97):
        sockets = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError(f"no {count} consecutive free ports")


def assets_project(workdir: Path, regions: list[str], assets: dict | None = None) -> Project:
    """The program above with its stack `dev` configured: a password user `app`, ports chosen now."""
    project = host_project(workdir, "assets", PROGRAM, SYS_PASSWORD, plugin=True)
    project.pulumi("config", "set", "--secret", "--path", "userPasswords.app", stdin=APP_PASSWORD)
    set_config(project, regions=regions, basePort=free_base_port(6 * len(regions)), assets=assets or {})
    return project


def set_config(project: Project, **values) -> None:
    path = project.root / "config" / "Pulumi.dev.yaml"
    document = yaml.safe_load(path.read_text())
    for key, value in values.items():
        document["config"][f"assets:{key}"] = json.dumps(value) if key == "assets" else value
    path.write_text(yaml.safe_dump(document, sort_keys=False))


def connection(project: Project) -> dict:
    return json.loads(project.pulumi("stack", "output", "--json", "--show-secrets", "connection").stdout)


async def api(conn: dict, subject: str, body: dict | None = None) -> dict:
    """One raw JetStream API request as the cluster's user (the test's own look at the server)."""
    client = await nats.connect(conn["servers"], user=conn.get("user"), password=conn.get("password"))
    try:
        reply = await client.request(f"$JS.API.{subject}", json.dumps(body).encode() if body else b"", timeout=10)
        return json.loads(reply.data)
    finally:
        await client.close()


def ask(conn: dict, subject: str, body: dict | None = None) -> dict:
    return asyncio.run(api(conn, subject, body))


def stream_config(conn: dict, name: str) -> dict | None:
    answer = ask(conn, f"STREAM.INFO.{name}")
    return None if answer.get("error") else answer["config"] | {"_messages": answer["state"]["messages"]}
