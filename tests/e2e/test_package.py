"""nats-fly as a component package (provider/): its inferred schema, and consumers in other languages
bringing up a local cluster through it with the real engine:
- `pulumi package get-schema` gives the golden schema (tests/golden/schema.json; UPDATE_GOLDEN=1 rewrites it);
- a YAML program (`packages:` + `type: nats-fly:NatsCluster`, the README's example) goes up, verifies
  whole, previews as no change and is destroyed, leaving no process or folder;
- a Python program does the same through the SDK that `pulumi package add` generates.

The package runs from a copy of provider/ whose requirements install this checkout (editable), in a
virtualenv of its own made from the package index. Skips without the tools unless CI=true."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import tempfile
import textwrap
from pathlib import Path

import pytest
import yaml

from engine import engine_environment, find_tool, missing_tools, python_consumer, require, run_pulumi
from support import REPO, nats_servers
from nats_fly.processes.verify import Expectation, verify

PASSWORD = "package-system-password-7"
GOLDEN = REPO / "tests" / "golden" / "schema.json"


class Workspace:
    """A temp dir holding a copy of the package and an engine environment of its own."""

    def __init__(self, root: Path):
        self.root = root
        self.package = root / "nats-fly-provider"
        self.package.mkdir()
        for name in ("PulumiPlugin.yaml", "__main__.py"):
            shutil.copy(REPO / "provider" / name, self.package / name)
        (self.package / "requirements.txt").write_text(f"-e {REPO}\n")
        self.env = engine_environment(root)

    def pulumi(self, cwd: Path, *args: str, **options) -> subprocess.CompletedProcess:
        return run_pulumi(self.env, cwd, *args, **options)


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


def lifecycle(workspace: Workspace, project: Path, regions: dict[str, int]) -> None:
    """up -> verify whole -> no-op preview -> destroy, with nothing left behind."""
    workspace.pulumi(project, "stack", "init", "dev")
    workspace.pulumi(project, "config", "set", "--secret", "sysPassword", stdin=PASSWORD)
    try:
        workspace.pulumi(project, "up", "--yes", "--skip-preview")
        outputs = json.loads(workspace.pulumi(project, "stack", "output", "--json").stdout)
        assert outputs["machines"] == regions
        urls = {r: u.split(",")[0] for r, u in outputs["clientUrls"].items()}
        report = asyncio.run(verify(urls, Expectation(regions=regions), user="sys", password=PASSWORD, timeout=30))
        assert report.ok, report.table()
        assert len(nats_servers(str(project))) == sum(regions.values())
        workspace.pulumi(project, "preview", "--expect-no-changes")
        exported = workspace.pulumi(project, "stack", "export").stdout
        assert PASSWORD not in exported
    finally:
        workspace.pulumi(project, "destroy", "--yes", "--skip-preview", check=False)
    assert not nats_servers(str(project))
    assert not (project / ".nats-fly").exists()


def readme_example(language: str) -> str:
    readme = (REPO / "README.md").read_text()
    return re.search(rf"<!-- example: {language} -->\n```{language}\n(.*?)```", readme, re.S).group(1)


def test_yaml_program_brings_up_a_whole_local_cluster(workspace):
    project = workspace.root / "yaml-consumer"
    project.mkdir()
    program = yaml.safe_load(readme_example("yaml"))  # the README's own example, pointed at the copy
    program["packages"]["nats-fly"] = str(workspace.package)
    program["outputs"]["machines"] = "${cluster.machines}"
    (project / "Pulumi.yaml").write_text(yaml.safe_dump(program, sort_keys=False))
    lifecycle(workspace, project, {"ord": 1, "syd": 1})


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
    lifecycle(workspace, project, {"ord": 1, "sin": 1})
