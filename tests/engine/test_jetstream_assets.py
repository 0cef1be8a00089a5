"""JetStream assets declared beside a local cluster, from a user's Python program, with the real engine, the
real nats-server and the nats-fly plugin found as the README tells a user (a `plugins:` entry for the venv's
bin; ambient plugins ignored):
- one up makes the cluster, then a Stream, a KeyValue, an ObjectStore and a Consumer on it, as declared;
  a second up changes nothing and sends the server no JetStream request;
- a change the server makes in place is an update, and the stream keeps its messages;
- a change it cannot make (storage; a consumer's ackPolicy) is refused at preview while the asset holds
  messages (the consumer its place), naming the field and what would be lost; with allowReplace it is
  replaced (delete before create, the consumer with its stream);
- an edit made out of band with natscli (`nats stream edit`) shows in `pulumi refresh`, and the next up
  puts it back;
- an asset the program stops declaring is deleted; `protect` refuses that; `retainOnDelete` keeps it;
- neither the state nor any output holds the password in plain text; destroy deletes every asset first.
Skips without the tools unless CI=true."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from nats_fly_testkit.assets import APP_PASSWORD, SYS_PASSWORD, ask, assets_project, connection, set_config, stream_config
from nats_fly_testkit.engine import missing_tools, require
from nats_fly_testkit.support import managed_servers

NATSCLI = Path.home() / ".cache" / "nats-fly" / "tools" / "natscli-v0.5.0" / "nats"
REGIONS = ["ord", "syd", "cdg"]
ORDERS = {"subjects": ["orders.>"], "replicas": 3, "storage": "file", "maxMsgs": 1_000_000, "maxAge": "72h"}


def declared(orders=None, billing=None, cfg=None, files=True, **extra) -> dict:
    assets = {"orders": {"kind": "Stream", "args": {**ORDERS, **(orders or {})}},
              "cfg": {"kind": "KeyValue", "args": {"history": 5}, **(cfg or {})},
              "billing": {"kind": "Consumer", "args": {"streamName": "@orders", "ackPolicy": "explicit",
                                                       **(billing or {})}}}
    if files:
        assets["files"] = {"kind": "ObjectStore", "args": {"ttl": "24h"}}
    return {**assets, **extra}


@pytest.fixture
def project(tmp_path):
    require(missing_tools(), "the engine tests")
    project = assets_project(tmp_path, REGIONS, declared())
    yield project
    project.pulumi("state", "unprotect", "--all", "--yes", check=False)
    project.pulumi("destroy", "--yes", "--skip-preview", check=False)
    for pid in managed_servers(project.root):
        os.kill(pid, signal.SIGKILL)


def publish(conn: dict, count: int) -> None:
    for i in range(count):
        assert ask(conn, "STREAM.INFO.orders") and not _publish(conn, f"orders.eu.{i}")


def _publish(conn: dict, subject: str) -> dict | None:
    import asyncio

    import nats

    async def go():
        client = await nats.connect(conn["servers"], user=conn["user"], password=conn["password"])
        try:
            await client.jetstream().publish(subject, b"order")
        finally:
            await client.close()
    asyncio.run(go())


def fetch(conn: dict, consumer: str, count: int) -> int:
    """Pull `count` messages through `consumer` of orders and ack them; how many came."""
    import asyncio

    import nats

    async def go():
        client = await nats.connect(conn["servers"], user=conn["user"], password=conn["password"])
        try:
            sub = await client.jetstream().pull_subscribe_bind(consumer, "orders")
            messages = await sub.fetch(count, timeout=10)
            for message in messages:
                await message.ack()
            return len(messages)
        finally:
            await client.close()
    return asyncio.run(go())


def api_total(conn: dict) -> int:
    """The JetStream API requests account APP has made so far (this one included)."""
    return ask(conn, "INFO")["api"]["total"]


def one_line_error(result, *words: str) -> None:
    said = result.stdout + result.stderr
    assert result.returncode != 0, said
    assert "Traceback" not in said, said[-3000:]
    lines = [line for line in said.splitlines() if all(w in line for w in words)]
    assert lines, f"no line with {words}:\n{said[-3000:]}"


def test_python_program_lifecycle(project):
    project.pulumi("up", "--yes")
    conn = connection(project)
    assert conn["user"] == "app" and conn["regions"] == {r: 1 for r in REGIONS} and conn["topology"] == "mesh"
    orders = stream_config(conn, "orders")
    assert orders["subjects"] == ["orders.>"] and orders["num_replicas"] == 3 and orders["storage"] == "file"
    assert orders["max_msgs"] == 1_000_000 and orders["max_age"] == 72 * 3600 * 10**9
    assert stream_config(conn, "KV_cfg")["max_msgs_per_subject"] == 5
    assert stream_config(conn, "OBJ_files")["max_age"] == 24 * 3600 * 10**9
    assert ask(conn, "CONSUMER.INFO.orders.billing")["config"]["ack_policy"] == "explicit"
    exported = project.pulumi("stack", "export").stdout
    assert APP_PASSWORD not in exported and SYS_PASSWORD not in exported

    before = api_total(conn)
    project.pulumi("up", "--yes", "--expect-no-changes")
    assert api_total(conn) == before + 1, "a no-op up sent the server JetStream requests"

    publish(conn, 25)
    set_config(project, assets=declared(orders={"maxMsgs": 2_000_000, "description": "the shop's orders"}))
    preview = project.pulumi("preview", "--diff")
    assert "maxMsgs" in preview.stdout and "1 to update" in preview.stdout, preview.stdout
    project.pulumi("up", "--yes")
    orders = stream_config(conn, "orders")
    assert orders["max_msgs"] == 2_000_000 and orders["description"] == "the shop's orders"
    assert orders["_messages"] == 25, "an update in place kept the messages"

    set_config(project, assets=declared(orders={"storage": "memory"}))
    refused = project.pulumi("preview", check=False)
    one_line_error(refused, "nats-fly:index:Stream orders", "storage: 'file' -> 'memory'", "25 messages",
                   "allowReplace: true")
    assert fetch(conn, "billing", 5) == 5
    set_config(project, assets=declared(billing={"ackPolicy": "all"}))
    refused = project.pulumi("up", "--yes", check=False)
    one_line_error(refused, "nats-fly:index:Consumer billing", "ackPolicy: 'explicit' -> 'all'",
                   "5 messages delivered")
    assert ask(conn, "CONSUMER.INFO.orders.billing")["config"]["ack_policy"] == "explicit"

    replace = {"storage": "memory", "allowReplace": True}
    set_config(project, assets=declared(orders=replace, billing={"allowReplace": True}))
    up = project.pulumi("up", "--yes")
    assert "deleted original" in up.stdout and "created replacement" in up.stdout, up.stdout
    orders = stream_config(conn, "orders")
    assert orders["storage"] == "memory" and orders["_messages"] == 0
    assert ask(conn, "CONSUMER.INFO.orders.billing")["delivered"]["consumer_seq"] == 0

    env = {**os.environ, "NATS_USER": conn["user"], "NATS_PASSWORD": conn["password"]}
    subprocess.run([str(NATSCLI), "-s", ",".join(conn["servers"]), "stream", "edit", "orders", "--description",
                    "edited by hand", "--max-age", "1h", "-f"], env=env, check=True, capture_output=True, timeout=60)
    refreshed = project.pulumi("refresh", "--yes", "--diff")
    assert 'maxAge     : "72h" => "1h"' in refreshed.stdout and '"edited by hand"' in refreshed.stdout, refreshed.stdout
    back = project.pulumi("preview", "--diff")
    assert 'maxAge     : "1h" => "72h"' in back.stdout, back.stdout
    project.pulumi("up", "--yes")
    orders = stream_config(conn, "orders")
    assert orders["max_age"] == 72 * 3600 * 10**9 and "description" not in orders

    set_config(project, assets=declared(orders=replace, billing={"allowReplace": True}, files=False,
                                        cfg={"protect": True}))
    project.pulumi("up", "--yes")
    assert stream_config(conn, "OBJ_files") is None, "an asset no longer declared is deleted"
    kept = declared(orders=replace, billing={"allowReplace": True}, files=False)
    del kept["cfg"]
    set_config(project, assets=kept)
    refused = project.pulumi("up", "--yes", check=False)
    assert refused.returncode != 0 and "protect" in refused.stdout + refused.stderr
    assert stream_config(conn, "KV_cfg") is not None
    set_config(project, assets=declared(orders=replace, billing={"allowReplace": True}, files=False,
                                        cfg={"retainOnDelete": True}))
    project.pulumi("up", "--yes")
    set_config(project, assets=kept)
    project.pulumi("up", "--yes")
    assert stream_config(conn, "KV_cfg") is not None, "retainOnDelete kept the bucket"
    assert "KeyValue" not in project.pulumi("stack", "export").stdout

    project.pulumi("destroy", "--yes")
    assert not managed_servers(project.root)
    logs = "\n".join(entry for entry in project.log if "--show-secrets" not in entry.splitlines()[0])
    assert APP_PASSWORD not in logs and SYS_PASSWORD not in logs
