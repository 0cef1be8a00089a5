"""Smoke test of the real Pulumi engine that scripts/bootstrap provides: the CLI, the Python
language host and the command plugin, on a throwaway one-Command project with a file backend.

Skips when the tools are missing, unless CI is set: then a missing tool fails the test."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOLS_BIN = REPO / ".tools" / "bin"
VENV = REPO / ".venv"
PULUMI_VERSION = "v3.274.1"
COMMAND_VERSION = "1.2.1"
TOOLS = ("pulumi", "pulumi-language-python", "pulumi-resource-command")
GREETING = "hello from nats-fly smoke"


def _tool(name: str) -> str | None:
    local = TOOLS_BIN / name
    if os.access(local, os.X_OK):
        return str(local)
    return shutil.which(name)


def _plugin_cache_dir() -> Path:
    home = os.environ.get("PULUMI_HOME") or str(REPO / ".pulumi-state" / "home")
    return Path(home) / "plugins" / f"resource-command-v{COMMAND_VERSION}"


def _missing() -> list[str]:
    missing = [t for t in TOOLS if not _tool(t)]
    if "pulumi-resource-command" in missing and (_plugin_cache_dir() / "pulumi-resource-command").exists():
        missing.remove("pulumi-resource-command")
    if not (VENV / "bin" / "python").exists():
        missing.append(".venv")
    return missing


@pytest.fixture
def smoke_dir():
    missing = _missing()
    if missing:
        reason = f"Pulumi tools missing ({', '.join(missing)}): run scripts/bootstrap"
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(f"CI must run the engine smoke test: {reason}")
        pytest.skip(reason)
    with tempfile.TemporaryDirectory(prefix="nats-fly-smoke-") as tmp:
        yield Path(tmp)


class Pulumi:
    def __init__(self, root: Path):
        self.cli = _tool("pulumi")
        self.project = root / "project"
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("PULUMI_CONFIG_PASSPHRASE_FILE", "PULUMI_ACCESS_TOKEN", "PULUMI_BACKEND_URL")}
        self.env.update({
            "PATH": f"{TOOLS_BIN}:{VENV / 'bin'}:{os.environ.get('PATH', '')}",
            "PULUMI_HOME": str(root / "home"),
            "PULUMI_BACKEND_URL": f"file://{root / 'state'}",
            "PULUMI_CONFIG_PASSPHRASE": secrets.token_hex(16),
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
        })
        (root / "state").mkdir()
        plugins = root / "home" / "plugins"
        plugins.mkdir(parents=True)
        if not _tool("pulumi-resource-command"):  # bootstrap left it in the plugin cache instead
            (plugins / _plugin_cache_dir().name).symlink_to(_plugin_cache_dir())

    def __call__(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        result = subprocess.run([self.cli, *args, "--non-interactive"], cwd=self.project, env=self.env,
                                capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        assert result.returncode == 0, (
            f"pulumi {' '.join(args)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
        return result


def write_project(root: Path) -> Path:
    project = root / "project"
    project.mkdir()
    (project / "Pulumi.yaml").write_text(textwrap.dedent(f"""\
        name: nats-fly-smoke
        runtime:
          name: python
          options:
            toolchain: pip
            virtualenv: {VENV}
        """))
    (project / "__main__.py").write_text(textwrap.dedent("""\
        import pulumi
        from pulumi_command import local

        hello = local.Command("hello", create='echo "$GREETING"', delete="true",
                              environment={"GREETING": "%s"})
        pulumi.export("greeting", hello.stdout)
        """ % GREETING))
    return project


def test_versions(smoke_dir):
    out = subprocess.run([_tool("pulumi"), "version"], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == PULUMI_VERSION, out
    command = _tool("pulumi-resource-command")
    if command:
        out = subprocess.run([command, "--version"], capture_output=True, text=True, timeout=60,
                             stdin=subprocess.DEVNULL)
        assert out.stdout.split()[:1] == [COMMAND_VERSION], out


def test_engine_up_noop_destroy(smoke_dir):
    write_project(smoke_dir)
    pulumi = Pulumi(smoke_dir)
    pulumi("stack", "init", "smoke", timeout=120)

    up = pulumi("up", "--yes", "--skip-preview")
    assert "created" in up.stdout, up.stdout
    outputs = json.loads(pulumi("stack", "output", "--json", timeout=120).stdout)
    assert outputs == {"greeting": GREETING}

    # The engine used our command plugin (an ambient one is named in a warning) at the version
    # that pulumi_command's pulumi-plugin.json asks for.
    command = _tool("pulumi-resource-command")
    if command:
        assert f"using pulumi-resource-command from $PATH at {command}" in up.stdout + up.stderr
    state = json.loads(pulumi("stack", "export", timeout=120).stdout)
    providers = [r for r in state["deployment"]["resources"] if r["type"] == "pulumi:providers:command"]
    assert [p["inputs"].get("version") for p in providers] == [COMMAND_VERSION]
    assert state["deployment"]["manifest"]["version"] == PULUMI_VERSION

    again = pulumi("up", "--yes", "--expect-no-changes")
    assert "2 unchanged" in again.stdout, again.stdout
    history = json.loads(pulumi("stack", "history", "--json", timeout=120).stdout)
    assert history[0]["resourceChanges"] == {"same": 2}, history[0]

    pulumi("destroy", "--yes", "--skip-preview")
    state = json.loads(pulumi("stack", "export", timeout=120).stdout)
    assert not state["deployment"].get("resources"), state
    pulumi("stack", "rm", "--yes", timeout=120)
