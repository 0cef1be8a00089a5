"""nats-fly as a component package (provider/): its inferred schema, and consumers in other languages
bringing up a local cluster through it with the real engine:
- `pulumi package get-schema` gives the golden schema (tests/golden/schema.json; UPDATE_GOLDEN=1 rewrites it):
  NatsCluster and the JetStream assets, served by one plugin;
- the README's YAML example, followed word for word on a fresh clone (`packages: nats-fly:
  ../nats-fly/provider`, then stack init, config set, up), goes up on its first try: the Python host's uv
  toolchain makes the package's virtualenv on that first run and never again; it verifies whole, a second
  up changes nothing, and destroy leaves no process or folder; no command reports the package's process
  as exited prematurely. (`pulumi install` is not a step: CLI v3.274.1 runs the package during the
  install walk, whose context ends with the walk (pkg/util/pdag Walk, errgroup.WithContext), so the
  Python host's RunPlugin command is killed before host/host.go Close sends the Cancel that
  resource/plugin/plugin.go Plugin.Close wants acknowledged, and it reports "exited prematurely".);
- a Python program does the same through the SDK that `pulumi package add` generates.

Apart from the fresh clone, the package runs from a copy of provider/ whose environment installs this
checkout (editable), in a virtualenv of its own made from the package index. Skips without the tools
unless CI=true."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from nats_fly_testkit.engine import (engine_environment, find_tool, missing_tools, provider_copy, python_consumer,
                                     require, run_pulumi)
from nats_fly_testkit.support import REPO, nats_servers
from nats_fly.processes.verify import Expectation, verify

PASSWORD = "package-system-password-7"
GOLDEN = REPO / "tests" / "golden" / "schema.json"


class Workspace:
    """A temp dir holding a copy of the package and an engine environment of its own."""

    def __init__(self, root: Path):
        self.root = root
        self.package = provider_copy(root / "nats-fly-provider")
        self.env = engine_environment(root)

    def pulumi(self, cwd: Path, *args: str, **options) -> subprocess.CompletedProcess:
        result = run_pulumi(self.env, cwd, *args, **options)
        said = result.stdout + result.stderr
        assert "exited prematurely" not in said, f"pulumi {' '.join(args)}:\n{said[-4000:]}"
        return result


def yaml_host() -> bool:
    cli = find_tool("pulumi")
    return bool(cli) and os.access(Path(os.path.realpath(cli)).parent / "pulumi-language-yaml", os.X_OK)


@pytest.fixture(scope="module")
def workspace():
    require(missing_tools() + ([] if yaml_host() else ["pulumi-language-yaml"]), "the package tests")
    with tempfile.TemporaryDirectory(prefix="nats-fly-package-") as tmp:
        yield Workspace(Path(tmp))


def test_get_schema_is_the_golden_schema(workspace):
    schema = json.loads(workspace.pulumi(workspace.root, "package", "get-schema", str(workspace.package)).stdout)
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps(schema, indent=4, sort_keys=True) + "\n")
    assert schema == json.loads(GOLDEN.read_text())
    cluster = schema["resources"]["nats-fly:index:NatsCluster"]
    assert sorted(cluster["requiredInputs"]) == ["app", "regions", "sysPassword"]
    assert {k for k, v in cluster["inputProperties"].items() if v.get("secret")} == {
        "sysPassword", "userPasswords", "leafPasswords", "tlsCert", "tlsKey"}
    assert cluster["properties"]["clientUrls"]["additionalProperties"] == {"type": "string"}
    assert cluster["properties"]["machines"]["additionalProperties"] == {"type": "integer"}
    assets = {f"nats-fly:index:{kind}" for kind in ("Stream", "KeyValue", "ObjectStore", "Consumer")}
    assert assets <= set(schema["resources"]), "one plugin serves the component and the JetStream assets"
    assert cluster["properties"]["connection"]["secret"] and schema["types"]["nats-fly:index:Connection"]
    assert schema["provider"]["inputProperties"]["connection"]["secret"]
    assert all(schema["resources"][a]["inputProperties"]["connection"]["secret"] for a in assets)


def lifecycle(workspace: Workspace, project: Path, regions: dict[str, int], venv: Callable[[], dict]) -> None:
    """up -> verify whole -> a second up that changes nothing and leaves `venv()` as it was -> destroy,
    with nothing left behind."""
    workspace.pulumi(project, "stack", "init", "dev")
    workspace.pulumi(project, "config", "set", "--secret", "sysPassword", stdin=PASSWORD)
    try:
        workspace.pulumi(project, "up", "--yes")
        outputs = json.loads(workspace.pulumi(project, "stack", "output", "--json").stdout)
        assert set(outputs["clientUrls"]) == set(regions), outputs
        urls = outputs["clientUrls"]
        report = asyncio.run(verify(urls, Expectation(regions=regions), user="sys", password=PASSWORD, timeout=30))
        assert report.ok, report.table()
        assert len(nats_servers(str(project))) == sum(regions.values())
        built = venv()
        workspace.pulumi(project, "up", "--yes", "--expect-no-changes")
        assert venv() == built
        exported = workspace.pulumi(project, "stack", "export").stdout
        assert PASSWORD not in exported
    finally:
        workspace.pulumi(project, "destroy", "--yes", "--skip-preview", check=False)
    assert not nats_servers(str(project))
    assert not (project / ".nats-fly").exists()


def venv_files(package: Path) -> Callable[[], dict]:
    """The package virtualenv's interpreter and the nats-fly install in it, each file's inode and mtime:
    what a rebuild of the virtualenv or a reinstall of the library would change."""
    def snapshot() -> dict:
        venv = package / ".venv"
        files = [venv / "pyvenv.cfg", venv / "bin" / "python", *venv.glob("lib/python*/site-packages/*nats_fly*")]
        assert len(files) > 3, files
        return {str(f): (f.stat().st_ino, f.stat().st_mtime_ns) for f in files}
    return snapshot


def readme_example(language: str) -> str:
    readme = (REPO / "README.md").read_text()
    return re.search(rf"<!-- example: {language} -->\n```{language}\n(.*?)```", readme, re.S).group(1)


def test_readme_yaml_program_on_a_fresh_clone_first_try(workspace):
    clone = workspace.root / "nats-fly"   # the README's `../nats-fly/provider` is this clone's provider/
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=120)
    assert not (clone / "provider" / ".venv").exists()
    project = workspace.root / "nats-yaml"
    project.mkdir()
    (project / "Pulumi.yaml").write_text(readme_example("yaml"))
    lifecycle(workspace, project, {"ord": 1, "syd": 1}, venv_files(clone / "provider"))
    status = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True, timeout=60)
    assert status.stdout == "", status.stdout


def test_python_program_through_the_generated_sdk(workspace):
    project = workspace.root / "py-consumer"
    python_consumer(project)
    added = workspace.pulumi(project, "package", "add", str(workspace.package))
    assert "import pulumi_nats_fly as nats_fly" in added.stdout + added.stderr, added.stdout + added.stderr
    (project / "__main__.py").write_text(textwrap.dedent("""\
        import pulumi
        import pulumi_nats_fly as nats_fly

        config = pulumi.Config()
        cluster = nats_fly.NatsCluster("cluster", app="py-nats", platform="local", regions=["ord", "sin"],
                                       auth="none", sys_password=config.require_secret("sysPassword"))
        pulumi.export("clientUrls", cluster.client_urls)
        pulumi.export("machines", cluster.machines)
        """))
    lifecycle(workspace, project, {"ord": 1, "sin": 1}, venv_files(workspace.package))
