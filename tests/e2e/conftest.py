"""The real Pulumi engine: the CLI, the Python language host and the command plugin that
scripts/bootstrap builds. A project copy per test, a file backend in its temp folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from support import REPO

TOOLS = REPO / ".tools" / "bin"


def find_tool(name: str) -> str | None:
    local = TOOLS / name
    return str(local) if local.exists() else shutil.which(name)


class Project:
    """A copy of the project (program, Pulumi.yaml, one stack file) driven by the pulumi CLI."""

    def __init__(self, root: Path, stack: str, env: dict[str, str]):
        self.root, self.stack, self.env = root, stack, env
        self.log: list[str] = []

    def pulumi(self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 600):
        scoped = [] if args[:2] == ("stack", "init") else ["--stack", self.stack]
        result = subprocess.run([find_tool("pulumi"), *args, *scoped, "--non-interactive"],
                                cwd=self.root, env=self.env, input=stdin, capture_output=True, text=True,
                                timeout=timeout)
        self.log.append(f"$ pulumi {' '.join(args)}\n{result.stdout}{result.stderr}")
        if check and result.returncode != 0:
            raise AssertionError(f"pulumi {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
        return result

    def config(self, values: dict) -> None:
        path = self.root / "config" / f"Pulumi.{self.stack}.yaml"
        document = yaml.safe_load(path.read_text()) if path.exists() else {}
        document = document or {}
        document.setdefault("config", {}).update({f"nats-fly:{k}": v for k, v in values.items()})
        for key in [k for k, v in document["config"].items() if v is None]:
            del document["config"][key]
        path.write_text(yaml.safe_dump(document, sort_keys=False))

    def outputs(self) -> dict:
        return json.loads(self.pulumi("stack", "output", "--json", "--show-secrets").stdout)

    def last_changes(self) -> dict:
        """The resource changes of the last update, e.g. {"same": 9} for a no-op."""
        history = json.loads(self.pulumi("stack", "history", "--json").stdout)
        return history[0].get("resourceChanges", {})


@pytest.fixture
def engine_env(tmp_path):
    missing = [t for t in ("pulumi", "pulumi-language-python", "pulumi-resource-command") if not find_tool(t)]
    if missing:
        reason = f"Pulumi tools missing ({', '.join(missing)}): run scripts/bootstrap"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the engine tests: {reason}")
        pytest.skip(reason)
    env = dict(os.environ)
    env.update({
        "PATH": f"{TOOLS}:{Path(sys.executable).parent}:{env.get('PATH', '')}",
        "PULUMI_BACKEND_URL": f"file://{tmp_path / 'state'}",
        "PULUMI_HOME": str(tmp_path / "pulumi-home"),
        "PULUMI_CONFIG_PASSPHRASE": "e2e-passphrase",
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
    })
    env.pop("PULUMI_CONFIG_PASSPHRASE_FILE", None)
    env.pop("PULUMI_ACCESS_TOKEN", None)
    (tmp_path / "state").mkdir()
    return env


@pytest.fixture
def project(tmp_path, engine_env):
    """A project copy with stack `e2e`, whose config starts from the given stack file."""
    root = tmp_path / "project"
    (root / "config").mkdir(parents=True)
    shutil.copy(REPO / "__main__.py", root / "__main__.py")
    manifest = yaml.safe_load((REPO / "Pulumi.yaml").read_text())
    manifest["runtime"]["options"]["virtualenv"] = str(Path(sys.executable).parent.parent)
    (root / "Pulumi.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))

    def make(base_stack: str, stack: str = "e2e") -> Project:
        shutil.copy(REPO / "config" / f"Pulumi.{base_stack}.yaml", root / "config" / f"Pulumi.{stack}.yaml")
        proj = Project(root, stack, engine_env)
        proj.pulumi("stack", "init", stack)
        return proj

    return make
