"""Edge reads from a user's Python program, with the real engine, the real nats-server and the nats-fly plugin
found as the README tells a user: a KeyValue declared with `edgeRegions: true` on a local mesh of 3
regions gets a mirror in each other region (placed by its region tag), the resource's output edgeMirrors
names them, a second up changes nothing, dropping a region deletes its mirror in place, and a bucket the
program stops declaring goes with its mirrors. Who answers reads is proved in tests/servers/local/test_jetstream_edge.py.
Skips without the tools unless CI=true."""

from __future__ import annotations

import json
import os
import signal

import pytest

from nats_fly_testkit.assets import assets_project, connection, set_config, stream_config
from nats_fly_testkit.engine import missing_tools, require
from nats_fly_testkit.support import managed_servers

REGIONS = ["ord", "syd", "cdg"]


def declared(edge_regions) -> dict:
    return {"cfg": {"kind": "KeyValue", "args": {"placement": "ord", "history": 3, "edgeRegions": edge_regions}}}


@pytest.fixture
def project(tmp_path):
    require(missing_tools(), "the engine tests")
    project = assets_project(tmp_path, REGIONS, declared(True))
    yield project
    project.pulumi("destroy", "--yes", "--skip-preview", check=False)
    for pid in managed_servers(project.root):
        os.kill(pid, signal.SIGKILL)


def edge_mirrors(project) -> dict:
    """The KeyValue's output edgeMirrors, as the state holds it."""
    state = json.loads(project.pulumi("stack", "export").stdout)
    cfg = next(r for r in state["deployment"]["resources"] if r["type"] == "nats-fly:index:KeyValue")
    return cfg["outputs"]["edgeMirrors"]


def test_a_buckets_edge_mirrors_live_and_die_with_it(project):
    project.pulumi("up", "--yes")
    conn = connection(project)
    assert edge_mirrors(project) == {"syd": "KV_cfg_syd", "cdg": "KV_cfg_cdg"}
    assert stream_config(conn, "KV_cfg")["allow_direct"] is True
    for region in ("syd", "cdg"):
        mirror = stream_config(conn, f"KV_cfg_{region}")
        assert mirror["mirror"]["name"] == "KV_cfg" and mirror["mirror_direct"] is True
        assert mirror["placement"] == {"tags": [f"region:{region}"]} and mirror["max_msgs_per_subject"] == 3
    project.pulumi("up", "--yes", "--expect-no-changes")

    set_config(project, assets=declared(["syd"]))
    preview = project.pulumi("preview", "--diff").stdout
    assert "edgeRegions" in preview and "replace" not in preview, preview
    project.pulumi("up", "--yes")
    assert edge_mirrors(project) == {"syd": "KV_cfg_syd"}
    assert stream_config(conn, "KV_cfg_cdg") is None and stream_config(conn, "KV_cfg_syd")

    set_config(project, assets={})  # the bucket no longer declared: deleted, and its mirror first
    project.pulumi("up", "--yes")
    for name in ("KV_cfg", "KV_cfg_syd"):
        assert stream_config(conn, name) is None
