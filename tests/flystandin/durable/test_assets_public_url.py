"""JetStream assets declared beside a cluster on Fly (the stand-in), with the real engine and a user's Python
program, reached as a user on Fly reaches them: through the app's public URL (Fly's proxy at each region's
edge, given as verifyUrls, which the cluster's `connection` output then holds):
- one up declares a Stream (R3) and a KeyValue on a 3-region JetStream cluster; messages and keys go in;
- a change the server makes in place is an update, and both keep what they hold;
- a storage change (a replace) of the stream that holds messages is refused at preview, naming them;
- `pulumi destroy` of the two assets deletes them on the server; the password never shows.
One cluster bring-up. Skips without the tools unless CI=true."""

from __future__ import annotations

import secrets

import pytest

from nats_fly_testkit import fly as fh
from nats_fly_testkit.assets import (APP_PASSWORD, SYS_PASSWORD, assets_project, connection, one_line_error,
                                     public_record, publish, set_config, stream_config)
from nats_fly_testkit.engine import flyctl_env, missing_tools, require

REGIONS = ["ord", "syd", "cdg"]
PUBLIC_PORT = 10000  # the app's raw NATS port at Fly's edge (the rendered fly.toml's [[services.ports]])
ORDERS = {"subjects": ["orders.>"], "replicas": 3, "storage": "file", "maxMsgs": 1000}


def declared(orders=None, cfg=None) -> dict:
    return {"orders": {"kind": "Stream", "args": {**ORDERS, **(orders or {})}},
            "cfg": {"kind": "KeyValue", "args": {"history": 2, **(cfg or {})}}}


@pytest.fixture(scope="module")
def fly(standin, tmp_path_factory):
    """A cluster on the stand-in from the user's program, then its public URL at each edge as verifyUrls."""
    require(missing_tools(), "the Fly assets test")
    app = f"js-assets-{secrets.token_hex(3)}"
    place = {"app": app, "platform": "fly", "volumeSize": 1, "peerWait": 3, "lameDuckGracePeriod": "5s"}
    project = assets_project(tmp_path_factory.mktemp("fly-assets"), REGIONS, cluster=place)
    project.env.update(flyctl_env(standin, project.env))
    try:
        project.pulumi("up", "--yes", "--skip-preview")
        assert fh.wait_mesh(standin, app, len(REGIONS), 120) is not None, fh.describe(standin.routes(app))
        fh.wait_healthy(standin, app)
        edges = [f"{r}=nats://127.0.0.1:{standin.edge(app, r, PUBLIC_PORT)[1]}" for r in REGIONS]
        set_config(project, cluster={**place, "regions": REGIONS, "jetstream": True, "verifyUrls": edges})
        yield project, edges
    finally:
        project.pulumi("destroy", "--yes", "--skip-preview", check=False)
        gone = standin.flyctl("status", "--app", app, "--json")
        assert gone.returncode == 1 and "Could not find App" in gone.stderr, gone.stdout + gone.stderr


def test_assets_through_the_public_url(fly):
    project, edges = fly
    set_config(project, assets=declared())
    project.pulumi("up", "--yes")
    conn = connection(project)
    assert conn["servers"] == [e.split("=", 1)[1] for e in edges], "the assets reach the cluster through the edges"
    orders = stream_config(conn, "orders")
    assert orders["num_replicas"] == 3 and orders["max_msgs"] == 1000 and orders["storage"] == "file"
    assert stream_config(conn, "KV_cfg")["max_msgs_per_subject"] == 2
    publish(conn, "orders.eu", 12)
    publish(conn, "$KV.cfg.color", 3)  # three keys, color.0 .. color.2

    set_config(project, assets=declared(orders={"maxMsgs": 5000, "description": "on Fly"}, cfg={"history": 4}))
    preview = project.pulumi("preview", "--diff")
    assert "2 to update" in preview.stdout and "replace" not in preview.stdout, preview.stdout
    project.pulumi("up", "--yes")
    orders, cfg = stream_config(conn, "orders"), stream_config(conn, "KV_cfg")
    assert orders["max_msgs"] == 5000 and orders["description"] == "on Fly" and orders["_messages"] == 12
    assert cfg["max_msgs_per_subject"] == 4 and cfg["_messages"] == 3, "an update in place kept the keys"

    set_config(project, assets=declared(orders={"maxMsgs": 5000, "description": "on Fly", "storage": "memory"},
                                        cfg={"history": 4}))
    refused = project.pulumi("preview", check=False)
    one_line_error(refused, "nats-fly:index:Stream orders", "storage: 'file' -> 'memory'", "its 12 messages",
                   "allowReplace: true")
    assert stream_config(conn, "orders")["storage"] == "file"

    urn = "urn:pulumi:dev::assets::nats-fly:index:{}::{}"
    project.pulumi("destroy", "--yes", "--target", urn.format("Stream", "orders"),
                   "--target", urn.format("KeyValue", "cfg"))
    assert stream_config(conn, "orders") is None and stream_config(conn, "KV_cfg") is None
    said = public_record(project)
    assert APP_PASSWORD not in said and SYS_PASSWORD not in said
