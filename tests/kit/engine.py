"""The real Pulumi engine, as the e2e tests and the benchmarks drive it: the CLI, the Python
language host and the command plugin that scripts/bootstrap provides, on a copy of the project
with a file backend of its own."""

from __future__ import annotations

import importlib.resources
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

from .support import REPO

TOOLS = REPO / ".tools" / "bin"
COMMAND_PLUGIN = "pulumi-resource-command"


def command_plugin_dir() -> str:
    """The plugin cache entry the engine looks for: resource-command-v<the version pulumi_command's
    pulumi-plugin.json asks for> (sdk/go/common/workspace/plugins.go)."""
    meta = json.loads(importlib.resources.files("pulumi_command").joinpath("pulumi-plugin.json").read_text())
    return f"resource-command-v{meta['version']}"


def find_tool(name: str) -> str | None:
    if name == COMMAND_PLUGIN:
        # scripts/bootstrap installs it in the plugin cache of scripts/env.sh's PULUMI_HOME, not on PATH
        for home in (os.environ.get("PULUMI_HOME"), str(REPO / ".pulumi-state" / "home")):
            plugin = Path(home or "") / "plugins" / command_plugin_dir() / name
            if home and os.access(plugin, os.X_OK):
                return str(plugin)
        return shutil.which(name)
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




def require(missing: list[str], what: str) -> None:
    """Skip when tools are missing; under CI=true fail instead: CI must run every suite."""
    if missing:
        reason = f"missing {', '.join(missing)}: run scripts/bootstrap"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run {what}: {reason}")
        pytest.skip(reason)


def run_pulumi(env: dict[str, str], cwd: Path, *args: str, stdin: str | None = None, check: bool = True,
               timeout: float = 900) -> subprocess.CompletedProcess:
    """The CLI in a session of its own: whatever it leaves running (plugins) is killed after."""
    proc = subprocess.Popen([find_tool("pulumi"), *args, "--non-interactive"], cwd=cwd, env=env,
                            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    if check:
        assert proc.returncode == 0, f"pulumi {' '.join(args)} failed ({proc.returncode}):\n{out[-4000:]}\n{err[-4000:]}"
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def python_consumer(project: Path) -> Path:
    """An empty Python program in `project` with a virtualenv of its own (`venv`) that sees this repo's
    packages through a .pth file (no download), ready for `pulumi package add`."""
    project.mkdir()
    venv = project / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    site = subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True, timeout=60).stdout.strip()
    Path(site, "nats_fly_repo_venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    (project / "Pulumi.yaml").write_text(
        f"name: {project.name}\nruntime:\n  name: python\n  options:\n    toolchain: pip\n    virtualenv: venv\n")
    (project / "requirements.txt").write_text("pulumi>=3.159\n")
    (project / "__main__.py").write_text("import pulumi\n")
    return project


def provider_copy(package: Path) -> Path:
    """A copy of provider/ in `package` whose environment installs this checkout (editable) instead of
    the folder above the copy."""
    package.mkdir()
    for name in ("PulumiPlugin.yaml", "__main__.py"):
        shutil.copy(REPO / "provider" / name, package / name)
    pyproject = (REPO / "provider" / "pyproject.toml").read_text()
    assert pyproject.count('path = ".."') == 1, pyproject
    (package / "pyproject.toml").write_text(pyproject.replace('path = ".."', f"path = {json.dumps(str(REPO))}"))
    return package


def missing_tools() -> list[str]:
    return [t for t in ("pulumi", "pulumi-language-python", "pulumi-resource-command") if not find_tool(t)]


def engine_environment(workdir: Path) -> dict[str, str]:
    """Offline, a file backend and a passphrase in workdir; never a cloud login."""
    env = dict(os.environ)
    env.update({
        "PATH": f"{TOOLS}:{Path(sys.executable).parent}:{env.get('PATH', '')}",
        "PULUMI_BACKEND_URL": f"file://{workdir / 'state'}",
        "PULUMI_HOME": str(workdir / "pulumi-home"),
        "PULUMI_CONFIG_PASSPHRASE": "e2e-passphrase",
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
    })
    env.pop("PULUMI_CONFIG_PASSPHRASE_FILE", None)
    env.pop("PULUMI_ACCESS_TOKEN", None)
    (workdir / "state").mkdir(parents=True, exist_ok=True)
    plugin = find_tool(COMMAND_PLUGIN)
    if plugin and Path(plugin).parent.name == command_plugin_dir():  # this PULUMI_HOME's cache gets it too
        cached = workdir / "pulumi-home" / "plugins" / command_plugin_dir()  # a real directory
        cached.mkdir(parents=True, exist_ok=True)
        if not (cached / COMMAND_PLUGIN).exists():
            (cached / COMMAND_PLUGIN).symlink_to(os.path.realpath(plugin))
    return env


def copy_project(root: Path, base_stack: str, stack: str, env: dict[str, str]) -> Project:
    """A copy of the program and Pulumi.yaml in root, with stack `stack` made from a stack file."""
    (root / "config").mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "__main__.py", root / "__main__.py")
    manifest = yaml.safe_load((REPO / "Pulumi.yaml").read_text())
    manifest["runtime"]["options"]["virtualenv"] = str(Path(sys.executable).parent.parent)
    (root / "Pulumi.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    # The checkout's stack file, as committed: a salt and secrets a user's own runs wrote into it are
    # theirs (another passphrase), so they stay behind.
    document = yaml.safe_load((REPO / "config" / f"Pulumi.{base_stack}.yaml").read_text()) or {}
    document.pop("encryptionsalt", None)
    document["config"] = {k: v for k, v in (document.get("config") or {}).items() if not _secure(v)}
    (root / "config" / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    project = Project(root, stack, env)
    project.pulumi("stack", "init", stack)
    return project


def host_project(workdir: Path, name: str, program: str, sys_password: str, plugin: bool = False) -> Project:
    """A host program of its own (Pulumi.yaml, __main__.py) in workdir/host, run by this repo's venv, with
    stack `dev` and the secret `sysPassword`. With `plugin`, it finds the nats-fly provider as the README
    tells a user to (a `plugins:` entry for the venv's bin, which holds `pulumi-resource-nats-fly`), and
    the engine ignores plugins found on PATH."""
    root = workdir / "host"
    (root / "config").mkdir(parents=True)
    manifest = {"name": name, "runtime": {"name": "python", "options": {
        "toolchain": "pip", "virtualenv": str(Path(sys.executable).parent.parent)}}, "stackConfigDir": "config"}
    if plugin:
        manifest["plugins"] = {"providers": [{"name": "nats-fly", "path": str(Path(sys.executable).parent)}]}
    (root / "Pulumi.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    (root / "__main__.py").write_text(program)
    env = engine_environment(workdir)
    if plugin:
        env["PULUMI_IGNORE_AMBIENT_PLUGINS"] = "true"
    project = Project(root, "dev", env)
    project.pulumi("stack", "init", "dev")
    project.pulumi("config", "set", "--secret", "sysPassword", stdin=sys_password)
    return project


def _secure(value) -> bool:
    return isinstance(value, dict) and ("secure" in value or any(_secure(v) for v in value.values()))


def flyctl_env(standin, env: dict[str, str]) -> dict[str, str]:
    """What makes `flyctl` the stand-in's for the engine: its PATH entry, state and a token.
    Only these: the rest of standin.env() is this process's environment, whose Pulumi
    settings (a developer's backend, passphrase file) must not reach the engine."""
    ours = standin.env()
    return {"PATH": f"{standin.bin_dir}:{env['PATH']}", "NFLY_STATE": ours["NFLY_STATE"],
            "FLY_API_TOKEN": ours["FLY_API_TOKEN"]}
