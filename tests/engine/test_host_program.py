"""NatsCluster inside a larger program, with the real engine: a host program of its own (Pulumi.yaml,
__main__.py) with two local clusters at default options and a Command that uses one's output.

- both come up whole, with no shared file, folder, process or port, and a second up is a no-op;
- a preview of a changed stack leaves every file and process of the running clusters as they were;
- changing one (a region more) or removing it leaves the other's servers untouched;
- a server killed with kill -9 is started again by the next up, and the up after that is a no-op;
- every Command whose inputs carry a secret has its stdout and stderr stored as secrets;
- destroy leaves no process and no folder behind."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import signal
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from nats_fly_testkit.engine import Project, host_project, missing_tools, require
from nats_fly_testkit.support import managed_servers
from nats_fly.processes.verify import Expectation, verify

PASSWORD = "host-program-sys-password-3"
PROGRAM = textwrap.dedent('''\
    """A larger program: two NATS clusters, and something that uses one of them."""
    import pulumi
    from pulumi_command import local

    from nats_fly import NatsCluster

    config = pulumi.Config()
    password = config.require_secret("sysPassword")
    clusters = {}
    for name, regions in config.require_object("clusters").items():
        clusters[name] = NatsCluster(name, {"app": f"{name}-nats", "platform": "local", "regions": regions,
                                            "auth": "none", "sysPassword": password})
        pulumi.export(f"{name}Urls", clusters[name].client_urls)
        pulumi.export(f"{name}Machines", clusters[name].machines)
    consumer = local.Command("consumer", create='echo "would connect to $NATS_URL"',
                             environment={"NATS_URL": clusters["east"].client_url})
    pulumi.export("consumer", consumer.stdout)
    ''')
SECRET_SIG = "4dabf18193072939515e22adb298388d"


@pytest.fixture
def host(tmp_path):
    require(missing_tools(), "the engine tests")
    project = host_project(tmp_path, "host-program", PROGRAM, PASSWORD)
    yield project
    project.pulumi("destroy", "--yes", "--skip-preview", check=False)
    for pid in managed_servers(project.root):
        os.kill(pid, signal.SIGKILL)


def set_clusters(project: Project, clusters: dict) -> None:
    path = project.root / "config" / "Pulumi.dev.yaml"
    document = yaml.safe_load(path.read_text())
    document["config"]["host-program:clusters"] = clusters
    path.write_text(yaml.safe_dump(document, sort_keys=False))


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every file the clusters keep: path -> (content digest, mtime)."""
    folder = root / ".nats-fly"
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def whole(outputs: dict, name: str) -> None:
    report = asyncio.run(verify(outputs[f"{name}Urls"], Expectation(regions=outputs[f"{name}Machines"]), user="sys",
                                password=PASSWORD, timeout=30))
    assert report.ok, report.table()


def test_two_clusters_in_one_program(host):
    root = host.root
    set_clusters(host, {"east": ["ord", "iad"], "west": ["sjc", "sea"]})
    host.pulumi("up", "--yes", "--skip-preview")
    outputs = host.outputs()
    whole(outputs, "east")
    whole(outputs, "west")
    assert outputs["consumer"] == f"would connect to {outputs['eastUrls']['ord']}"
    ports = [u for name in ("east", "west") for u in outputs[f"{name}Urls"].values()]
    assert len(set(ports)) == 4
    assert sorted(managed_servers(root).values()) == ["east/iad-0", "east/ord-0", "west/sea-0", "west/sjc-0"]
    assert sorted(p.name for p in (root / ".nats-fly" / "dev").iterdir()) == ["east", "west"]
    host.pulumi("up", "--yes", "--skip-preview", "--expect-no-changes")

    # Every Command with a secret input keeps its stdout/stderr secret in the state (pulumi-command v1
    # marks only outputs named like a secret input: the components must say so themselves).
    state = json.loads(host.pulumi("stack", "export").stdout)
    checked = 0
    for resource in state["deployment"]["resources"]:
        if resource["type"] != "command:local:Command" or SECRET_SIG not in json.dumps(resource.get("inputs")):
            continue
        checked += 1
        for output in ("stdout", "stderr"):
            value = resource["outputs"].get(output)
            assert value is None or (isinstance(value, dict) and value.get(SECRET_SIG)), (resource["urn"], output)
    assert checked == 4  # the four servers
    assert PASSWORD not in json.dumps(state)

    # A preview of a changed stack writes nothing and touches no process.
    before, pids = snapshot(root), managed_servers(root)
    set_clusters(host, {"east": ["ord", "iad", "lhr"], "west": ["sjc"]})
    preview = host.pulumi("preview")
    assert "to create" in preview.stdout and "to delete" in preview.stdout, preview.stdout
    assert snapshot(root) == before and managed_servers(root) == pids

    # Changing one cluster (a region more) leaves the other's servers as they were.
    west_pids = managed_servers(root, "west")
    set_clusters(host, {"east": ["ord", "iad", "lhr"], "west": ["sjc", "sea"]})
    host.pulumi("up", "--yes", "--skip-preview")
    outputs = host.outputs()
    whole(outputs, "east")
    assert managed_servers(root, "west") == west_pids
    host.pulumi("up", "--yes", "--skip-preview", "--expect-no-changes")

    # A server killed with kill -9 comes back with the next up; the one after is a no-op again.
    victim = next(pid for pid, name in managed_servers(root).items() if name == "east/iad-0")
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while victim in managed_servers(root):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    preview = host.pulumi("preview")
    assert "nats-fly: cluster east: iad-0 is not running; up will start it" in preview.stdout, preview.stdout
    assert set(re.findall(r"cluster (\w+): (\S+) is not running", preview.stdout)) == {("east", "iad-0")}
    host.pulumi("up", "--yes", "--skip-preview")
    assert "east/iad-0" in managed_servers(root).values()
    whole(host.outputs(), "east")
    host.pulumi("up", "--yes", "--skip-preview", "--expect-no-changes")

    # Removing one cluster from the program stops only its servers and takes only its folder.
    east_pids = managed_servers(root, "east")
    set_clusters(host, {"east": ["ord", "iad", "lhr"]})
    host.pulumi("up", "--yes", "--skip-preview")
    assert managed_servers(root, "west") == {} and managed_servers(root, "east") == east_pids
    assert sorted(p.name for p in (root / ".nats-fly" / "dev").iterdir()) == ["east"]
    whole(host.outputs(), "east")

    # A bad cluster in a host program: its lines, no traceback, and nothing touched.
    set_clusters(host, {"east": ["ord", "iad", "lhr"], "broken": ["ord", "atlantis"]})
    refused = host.pulumi("up", "--yes", "--skip-preview", check=False)
    said = refused.stdout + refused.stderr
    assert refused.returncode != 0 and "nats-fly:regions: 'atlantis' is not a Fly region" in said, said[-2000:]
    assert "Traceback" not in said and managed_servers(root, "east") == east_pids
    set_clusters(host, {"east": ["ord", "iad", "lhr"]})

    host.pulumi("destroy", "--yes", "--skip-preview")
    assert managed_servers(root) == {}
    assert not (root / ".nats-fly").exists()
