"""JetStream assets from a YAML program, with the real engine and pulumi-language-yaml: the component package
(a copy of provider/, `packages:`) serves NatsCluster and the assets in one plugin; `type: nats-fly:Stream`
with `connection: ${cluster.connection}`:
- up makes the cluster and a Stream, a KeyValue, an ObjectStore and a Consumer; a second up changes nothing;
- an in-place change keeps the stream's messages; a replace of a stream holding messages is refused at
  preview with our line;
- `pulumi import --provider` through an explicit `pulumi:providers:nats-fly` adopts a stream, a bucket, an
  object store and a consumer made out of band, and prints YAML for them (pulumi-language-yaml);
- destroy deletes them all; the password never shows.
Skips without the tools unless CI=true."""

from __future__ import annotations

import json
import os
import signal

import pytest

from nats_fly_testkit.assets import (APP_PASSWORD, SYS_PASSWORD, ask, one_line_error, out_of_band, publish,
                                     stream_config)
from nats_fly_testkit.engine import engine_environment, find_tool, missing_tools, provider_copy, require, run_pulumi
from nats_fly_testkit.support import managed_servers

PROGRAM = """\
name: js-yaml
runtime: yaml
packages:
  nats-fly: {package}
config:
  sysPassword: {{type: string, secret: true}}
  appPassword: {{type: string, secret: true}}
resources:
  cluster:
    type: nats-fly:NatsCluster
    properties:
      app: js-yaml
      platform: local
      regions: [ord, syd, cdg]
      jetstream: true
      sysPassword: ${{sysPassword}}
      userPasswords:
        app: ${{appPassword}}
  js:
    type: pulumi:providers:nats-fly
    properties:
      connection: ${{cluster.connection}}
  orders:
    type: nats-fly:Stream
    properties:
      connection: ${{cluster.connection}}
      subjects: ["orders.>"]
      replicas: 3
      storage: {storage}
      maxMsgs: {max_msgs}
      maxAge: 72h
  cfg:
    type: nats-fly:KeyValue
    properties:
      connection: ${{cluster.connection}}
      history: 5
{files}  billing:
    type: nats-fly:Consumer
    properties:
      connection: ${{cluster.connection}}
      streamName: ${{orders.name}}
      ackPolicy: explicit
outputs:
  connection: ${{cluster.connection}}
  provider: ${{js.urn}}
"""


FILES = """\
  files:
    type: nats-fly:ObjectStore
    properties:
      connection: ${cluster.connection}
"""


@pytest.fixture
def yaml_project(tmp_path):
    require(missing_tools() + ([] if _yaml_host() else ["pulumi-language-yaml"]), "the YAML assets test")
    package = provider_copy(tmp_path / "nats-fly-provider")
    root = tmp_path / "js-yaml"
    root.mkdir()
    env = engine_environment(tmp_path)

    def write(storage="file", max_msgs=1_000_000, files=True):
        (root / "Pulumi.yaml").write_text(PROGRAM.format(package=package, storage=storage,
                                                         max_msgs=max_msgs, files=FILES if files else ""))

    def pulumi(*args, check=True):
        return run_pulumi(env, root, *args, "--stack", "dev", check=check)
    write()
    run_pulumi(env, root, "stack", "init", "dev")
    pulumi("config", "set", "--secret", "sysPassword", SYS_PASSWORD)
    pulumi("config", "set", "--secret", "appPassword", APP_PASSWORD)
    yield write, pulumi, root
    pulumi("state", "unprotect", "--all", "--yes", check=False)
    pulumi("destroy", "--yes", "--skip-preview", check=False)
    for pid in managed_servers(root):
        os.kill(pid, signal.SIGKILL)


def _yaml_host() -> bool:
    cli = find_tool("pulumi")
    return bool(cli) and os.access(os.path.join(os.path.dirname(os.path.realpath(cli)), "pulumi-language-yaml"), os.X_OK)


def test_yaml_program(yaml_project):
    write, pulumi, root = yaml_project
    pulumi("up", "--yes")
    outputs = json.loads(pulumi("stack", "output", "--json", "--show-secrets").stdout)
    conn = outputs["connection"]
    assert stream_config(conn, "orders")["max_msgs"] == 1_000_000
    assert stream_config(conn, "KV_cfg")["max_msgs_per_subject"] == 5 and stream_config(conn, "OBJ_files")
    assert ask(conn, "CONSUMER.INFO.orders.billing")["config"]["ack_policy"] == "explicit"
    pulumi("up", "--yes", "--expect-no-changes")

    publish(conn, "orders.eu", 7)
    write(max_msgs=2_000_000, files=False)
    pulumi("up", "--yes")
    orders = stream_config(conn, "orders")
    assert orders["max_msgs"] == 2_000_000 and orders["_messages"] == 7, "an update in place kept the messages"
    assert stream_config(conn, "OBJ_files") is None, "an asset no longer declared is deleted"
    write(storage="memory", max_msgs=2_000_000, files=False)
    one_line_error(pulumi("preview", check=False), "nats-fly:index:Stream orders", "storage: 'file' -> 'memory'",
                   "its 7 messages")

    out_of_band(conn)
    for kind, name, asset, code in [("Stream", "legacy", "LEGACY", "maxMsgs: 500"),
                                    ("KeyValue", "legacykv", "legacykv", "description: old settings"),
                                    ("ObjectStore", "legacyobj", "legacyobj", "name: legacyobj"),
                                    ("Consumer", "legacyold", "LEGACY/old", "maxDeliver: 4")]:
        imported = pulumi("import", f"nats-fly:index:{kind}", name, asset, "--provider", f"js={outputs['provider']}",
                          "--yes")
        said = imported.stdout + imported.stderr
        assert f"type: nats-fly:{kind}" in said and code in said and APP_PASSWORD not in said, said
    pulumi("state", "unprotect", "--all", "--yes")
    pulumi("destroy", "--yes")
    assert not managed_servers(root)
