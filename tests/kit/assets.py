"""JetStream assets as the engine tests and the benchmarks drive them: a user's Python program (a local
cluster, and the assets its stack config `assets` declares), and a look at the server through the
cluster's `connection` output."""

from __future__ import annotations

import asyncio
import json
import textwrap
from pathlib import Path

import nats
import yaml

from .engine import Project, host_project

SYS_PASSWORD = "assets-sys-password-1"
APP_PASSWORD = "assets-app-password-1"

PROGRAM = textwrap.dedent('''\
    """A user's program: a NATS cluster (its args the stack config `cluster`), and the JetStream assets that
    the stack config `assets` declares (name -> {kind, args, protect, retainOnDelete, viaProvider}); an arg
    "@x" is asset x's name."""
    import json

    import pulumi
    from nats_fly import Consumer, KeyValue, NatsCluster, ObjectStore, Provider, Stream

    KINDS = {"Stream": Stream, "KeyValue": KeyValue, "ObjectStore": ObjectStore, "Consumer": Consumer}
    config = pulumi.Config()
    cluster = NatsCluster("nats", {
        **config.require_object("cluster"), "sysPassword": config.require_secret("sysPassword"),
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


def assets_project(workdir: Path, regions: list[str], assets: dict | None = None,
                   cluster: dict | None = None) -> Project:
    """The program above with its stack `dev` configured: a JetStream cluster in `regions` with a password
    user `app`; `cluster` gives its other args (default: on this machine, its ports chosen free by the
    cluster at its first up, as a program without localBasePort gets them)."""
    project = host_project(workdir, "assets", PROGRAM, SYS_PASSWORD, plugin=True)
    project.pulumi("config", "set", "--secret", "--path", "userPasswords.app", stdin=APP_PASSWORD)
    place = cluster or {"app": "assets", "platform": "local"}
    set_config(project, cluster={**place, "regions": regions, "jetstream": True}, assets=assets or {})
    return project


def set_config(project: Project, **values) -> None:
    path = project.root / "config" / "Pulumi.dev.yaml"
    document = yaml.safe_load(path.read_text())
    for key, value in values.items():
        document["config"][f"assets:{key}"] = json.dumps(value) if key in ("assets", "cluster") else value
    path.write_text(yaml.safe_dump(document, sort_keys=False))


def connection(project: Project) -> dict:
    return json.loads(project.pulumi("stack", "output", "--json", "--show-secrets", "connection").stdout)


def public_record(project: Project) -> str:
    """The state and everything the engine printed, but for the test's own `--show-secrets` reads: where
    no password may appear."""
    printed = (entry for entry in project.log if "--show-secrets" not in entry.splitlines()[0])
    return project.pulumi("stack", "export").stdout + "\n".join(printed)


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


def publish(conn: dict, stream_subject: str, count: int) -> None:
    """`count` messages published to JetStream on <stream_subject>.<i>, each acknowledged."""
    async def go():
        client = await nats.connect(conn["servers"], user=conn.get("user"), password=conn.get("password"))
        try:
            for i in range(count):
                await client.jetstream().publish(f"{stream_subject}.{i}", b"order")
        finally:
            await client.close()
    asyncio.run(go())


def fetch(conn: dict, stream: str, consumer: str, count: int) -> int:
    """Pull `count` messages through `consumer` of `stream` and ack them; how many came."""
    async def go():
        client = await nats.connect(conn["servers"], user=conn.get("user"), password=conn.get("password"))
        try:
            sub = await client.jetstream().pull_subscribe_bind(consumer, stream)
            messages = await sub.fetch(count, timeout=10)
            for message in messages:
                await message.ack()
            return len(messages)
        finally:
            await client.close()
    return asyncio.run(go())


def out_of_band(conn: dict) -> None:
    """Assets made without Pulumi, as another tool (or a person) would, through nats-py's manager: the
    stream LEGACY (R3, 500 messages, 1h), the bucket legacykv, the object store legacyobj, the consumer
    LEGACY/old."""
    async def go():
        client = await nats.connect(conn["servers"], user=conn.get("user"), password=conn.get("password"))
        try:
            js = client.jetstream()
            await js.add_stream(name="LEGACY", subjects=["legacy.>"], max_msgs=500, num_replicas=3, max_age=3600)
            await js.create_key_value(bucket="legacykv", history=3, description="old settings")
            await js.create_object_store("legacyobj")
            await js.add_consumer("LEGACY", durable_name="old", ack_policy="explicit", max_deliver=4)
        finally:
            await client.close()
    asyncio.run(go())


def one_line_error(result, *words: str) -> None:
    """The command failed, without a traceback, with a line that holds every one of `words`."""
    said = result.stdout + result.stderr
    assert result.returncode != 0, said
    assert "Traceback" not in said, said[-3000:]
    assert any(all(w in line for w in words) for line in said.splitlines()), f"no line with {words}:\n{said[-3000:]}"
