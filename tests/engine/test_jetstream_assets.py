"""JetStream assets declared beside a local cluster, from a user's Python program, with the real engine, the
real nats-server and the nats-fly plugin found as the README tells a user (a `plugins:` entry for the venv's
bin; ambient plugins ignored):
- one up makes the cluster, then a Stream, a KeyValue, an ObjectStore and a Consumer on it, as declared;
  a second up changes nothing and sends the server no JetStream request;
- a change the server makes in place is an update, and the stream keeps its messages, the bucket its keys;
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

from nats_fly_testkit.assets import (APP_PASSWORD, SYS_PASSWORD, ask, assets_project, connection, fetch, one_line_error,
                                     out_of_band, public_record, publish, set_config, stream_config)
from nats_fly_testkit.engine import missing_tools, require
from nats_fly_testkit.support import managed_servers

NATSCLI = Path.home() / ".cache" / "nats-fly" / "tools" / "natscli-v0.5.0" / "nats"
REGIONS = ["ord", "syd", "cdg"]
ORDERS = {"subjects": ["orders.>"], "replicas": 3, "storage": "file", "maxMsgs": 1_000_000, "maxAge": "72h"}


def declared(orders=None, billing=None, cfg=None, files=None, **extra) -> dict:
    """The program's assets: the args of orders, billing and files changed as given, cfg's whole spec (args,
    protect, retainOnDelete); files=False leaves the object store out."""
    assets = {"orders": {"kind": "Stream", "args": {**ORDERS, **(orders or {})}},
              "cfg": {"kind": "KeyValue", "args": {"history": 5}, **(cfg or {})},
              "billing": {"kind": "Consumer", "args": {"streamName": "@orders", "ackPolicy": "explicit",
                                                       **(billing or {})}}}
    if files is not False:
        assets["files"] = {"kind": "ObjectStore", "args": {"ttl": "24h", **(files or {})}}
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


def api_total(conn: dict) -> int:
    """The JetStream API requests account APP has made so far (this one included)."""
    return ask(conn, "INFO")["api"]["total"]


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

    publish(conn, "orders.eu", 25)
    publish(conn, "$KV.cfg.color", 2)
    publish(conn, "$O.files.C.chunk", 1)
    set_config(project, assets=declared(orders={"maxMsgs": 2_000_000, "description": "the shop's orders"},
                                        cfg={"args": {"history": 7}}, files={"ttl": "48h"}))
    preview = project.pulumi("preview", "--diff")
    assert "maxMsgs" in preview.stdout and "history" in preview.stdout and "3 to update" in preview.stdout, \
        preview.stdout
    project.pulumi("up", "--yes")
    orders = stream_config(conn, "orders")
    assert orders["max_msgs"] == 2_000_000 and orders["description"] == "the shop's orders"
    assert orders["_messages"] == 25, "an update in place kept the messages"
    cfg = stream_config(conn, "KV_cfg")
    assert cfg["max_msgs_per_subject"] == 7 and cfg["_messages"] == 2, "a bucket's update in place kept its keys"
    files = stream_config(conn, "OBJ_files")
    assert files["max_age"] == 48 * 3600 * 10**9 and files["_messages"] == 1, "so did the object store's"

    set_config(project, assets=declared(orders={"storage": "memory"}))
    refused = project.pulumi("preview", check=False)
    one_line_error(refused, "nats-fly:index:Stream orders", "storage: 'file' -> 'memory'", "25 messages",
                   "allowReplace: true")
    assert fetch(conn, "orders", "billing", 5) == 5
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
    said = public_record(project)
    assert APP_PASSWORD not in said and SYS_PASSWORD not in said


def regions_of(info: dict) -> list[str]:
    """The regions of a stream's servers (leader and replicas), by their names <region>-<i>."""
    cluster = info["cluster"]
    servers = [cluster.get("leader")] + [r["name"] for r in cluster.get("replicas") or []]
    return sorted(s.rpartition("-")[0] for s in servers if s)


def placed(conn: dict, stream: str, count: int) -> list[str]:
    """The regions of the stream's servers once all `count` report."""
    import time
    deadline = time.monotonic() + 60
    while True:
        found = regions_of(ask(conn, f"STREAM.INFO.{stream}"))
        if len(found) == count or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


IMPORTS = [("Stream", "legacy", "LEGACY", 'nats_fly.Stream("legacy"', "max_msgs=500"),
           ("KeyValue", "legacykv", "legacykv", 'nats_fly.KeyValue("legacykv"', 'description="old settings"'),
           ("ObjectStore", "legacyobj", "legacyobj", 'nats_fly.ObjectStore("legacyobj"', 'name="legacyobj"'),
           ("Consumer", "legacyold", "LEGACY/old", 'nats_fly.Consumer("legacyold"', "max_deliver=4")]


def test_placement_by_region_and_import(project):
    """Replicas 3 in a mesh of 3 regions land in 3 regions (the servers' tags); placement puts an R1 stream in
    the region it names; `pulumi import --provider` adopts a stream, a bucket, an object store and a consumer
    made out of band, and the program that then declares them as imported changes nothing."""
    set_config(project, assets={"spread": {"kind": "Stream", "args": {"subjects": ["spread.>"], "replicas": 3}},
                                "syd": {"kind": "Stream", "args": {"subjects": ["syd.>"], "placement": "syd"}}})
    project.pulumi("up", "--yes")
    conn = connection(project)
    assert placed(conn, "spread", 3) == ["cdg", "ord", "syd"]
    assert placed(conn, "syd", 1) == ["syd"]
    assert stream_config(conn, "syd")["placement"] == {"tags": ["region:syd"]}

    out_of_band(conn)
    provider = project.outputs()["provider"]
    for kind, name, asset, code, field in IMPORTS:
        imported = project.pulumi("import", f"nats-fly:index:{kind}", name, asset, "--provider", f"js={provider}",
                                  "--yes")
        assert code in imported.stdout and field in imported.stdout, imported.stdout
        assert APP_PASSWORD not in imported.stdout + imported.stderr
    declared_as_imported = {
        "legacy": {"kind": "Stream", "args": {"name": "LEGACY", "subjects": ["legacy.>"], "replicas": 3,
                                              "maxMsgs": 500, "maxAge": "1h"}},
        "legacykv": {"kind": "KeyValue", "args": {"name": "legacykv", "history": 3, "description": "old settings"}},
        "legacyobj": {"kind": "ObjectStore", "args": {"name": "legacyobj"}},
        "legacyold": {"kind": "Consumer", "args": {"name": "old", "streamName": "LEGACY", "ackPolicy": "explicit",
                                                   "maxDeliver": 4}},
    }
    set_config(project, assets={"spread": {"kind": "Stream", "args": {"subjects": ["spread.>"], "replicas": 3}},
                                "syd": {"kind": "Stream", "args": {"subjects": ["syd.>"], "placement": "syd"}},
                                **{k: {**v, "viaProvider": True, "protect": True}
                                   for k, v in declared_as_imported.items()}})
    project.pulumi("up", "--yes", "--expect-no-changes")
    assert stream_config(conn, "LEGACY")["max_msgs"] == 500


BAD = [
    ({"subjects": ["orders..eu"]}, "subjects: ['orders..eu'] has 'orders..eu' at [0], which has an empty token"),
    ({"subjects": ["orders.eu.*"]}, "overlaps"),  # said of whichever of the two the engine checks second
    ({"name": "orders", "subjects": ["y.>"]}, "same name"),
    ({"subjects": ["x.>"], "replicas": 4}, "replicas: 4 is more than the 3 server(s) the cluster has"),
    ({"subjects": ["x.>"], "placement": "lhr"}, "placement: 'lhr' is not a region of the cluster"),
    ({"subjects": ["x.>"], "maxAge": "3d"}, "maxAge: '3d' is not a duration; allowed: a Go duration"),
    ({"subjects": ["x.>"], "retention": "forever"}, "retention: 'forever' is not allowed; allowed: limits"),
    ({"subjects": ["x.>"], "maxBytes": "1 elephant"}, "maxBytes: '1 elephant' is not a size"),
    ({"subjects": ["x.>"], "maxMsg": 5}, "maxMsg: not a field of Stream"),
]


def test_bad_assets_are_refused_at_preview_and_an_unreachable_cluster_is_an_error(project):
    set_config(project, assets={"orders": {"kind": "Stream", "args": ORDERS}})
    project.pulumi("up", "--yes")
    conn = connection(project)
    for args, line in BAD:
        set_config(project, assets={"orders": {"kind": "Stream", "args": ORDERS},
                                    "bad": {"kind": "Stream", "args": args}})
        words = {"overlaps": ("'orders.eu.*'", "'orders.>'", "allowed: subjects no other stream"),
                 "same name": ("makes the stream orders, which resource", "allowed: a name no other asset")
                 }.get(line, ("nats-fly:index:Stream resource 'bad'", line))
        one_line_error(project.pulumi("preview", check=False), *words)
    assert ask(conn, "STREAM.NAMES")["streams"] == ["orders"], "a refused preview made nothing"

    ask(conn, "STREAM.CREATE.LIVE", {"name": "LIVE", "subjects": ["live.>"]})
    set_config(project, assets={"orders": {"kind": "Stream", "args": ORDERS},
                                "bad": {"kind": "Stream", "args": {"subjects": ["live.eu"]}}})
    one_line_error(project.pulumi("up", "--yes", check=False), "nats-fly:index:Stream bad",
                   "subjects overlap with an existing stream", "(LIVE holds them)")

    set_config(project, assets={"orders": {"kind": "Stream", "args": ORDERS}})
    for pid in managed_servers(project.root):
        os.kill(pid, signal.SIGKILL)
    refresh = project.pulumi("refresh", "--yes", check=False)
    one_line_error(refresh, "nats-fly:index:Stream orders: cannot reach the cluster at nats://127.0.0.1:")
    assert APP_PASSWORD not in refresh.stdout + refresh.stderr
