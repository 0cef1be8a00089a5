"""Smoke test of the real Pulumi engine that scripts/bootstrap provides: the CLI, the Python
language host and the command plugin, on a throwaway one-Command project with a file backend.

Skips when the tools are missing, unless CI is set: then a missing tool fails the test."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import textwrap
from pathlib import Path

import pytest

from nats_fly_testkit.engine import COMMAND_PLUGIN, command_plugin_dir, engine_environment, find_tool, missing_tools

REPO = Path(__file__).resolve().parents[2]
VENV = REPO / ".venv"
PULUMI_VERSION = "v3.274.1"
COMMAND_VERSION = "1.2.1"
GREETING = "hello from nats-fly smoke"


def require_tools() -> None:
    missing = missing_tools() + ([] if (VENV / "bin" / "python").exists() else [".venv"])
    if missing:
        reason = f"Pulumi tools missing ({', '.join(missing)}): run scripts/bootstrap"
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(f"CI must run the engine smoke test: {reason}")
        pytest.skip(reason)


@pytest.fixture
def smoke_dir():
    require_tools()
    with tempfile.TemporaryDirectory(prefix="nats-fly-smoke-") as tmp:
        yield Path(tmp)


class Pulumi:
    """The CLI on a project in root/project, with engine_environment's offline settings (a file
    backend, a PULUMI_HOME whose plugin cache holds the command plugin)."""

    def __init__(self, root: Path):
        self.cli = find_tool("pulumi")
        self.project = root / "project"
        self.env = engine_environment(root)
        self.env["PULUMI_CONFIG_PASSPHRASE"] = "smoke-passphrase"

    def __call__(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([self.cli, *args, "--non-interactive"], cwd=self.project, env=self.env,
                                capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if check:
            assert result.returncode == 0, (f"pulumi {' '.join(args)} failed ({result.returncode}):\n"
                                            f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
        return result


def write_project(root: Path, program: str | None = None) -> Path:
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
    (project / "__main__.py").write_text(program or textwrap.dedent("""\
        import pulumi
        from pulumi_command import local

        hello = local.Command("hello", create='echo "$GREETING"', delete="true",
                              environment={"GREETING": "%s"})
        pulumi.export("greeting", hello.stdout)
        """ % GREETING))
    return project


def test_versions(smoke_dir):
    out = subprocess.run([find_tool("pulumi"), "version"], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == PULUMI_VERSION, out

    # The engine's view of the plugin cache: the command plugin at the version pulumi_command asks for.
    env = engine_environment(smoke_dir)
    listed = subprocess.run([find_tool("pulumi"), "plugin", "ls", "--json"], env=env, cwd=smoke_dir,
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed
    plugins = [(p["name"], p["kind"], p["version"]) for p in json.loads(listed.stdout or "[]")]
    assert ("command", "resource", COMMAND_VERSION) in plugins, plugins
    assert command_plugin_dir() == f"resource-command-v{COMMAND_VERSION}"

    # Like upstream's main (pulumi-go-provider RunProvider -> provider.Main's flag.Parse), the plugin
    # has no --version flag: it prints the usage and exits 2.
    refused = run_tool(COMMAND_PLUGIN, "--version")
    assert refused.returncode == 2, refused
    assert "flag provided but not defined: -version" in refused.stderr, refused
    assert refused.stdout == "", refused

    # The Python host's flags are upstream main's (pulumi:sdk/python/cmd/pulumi-language-python/main.go
    # main, Go's flag package): -version prints the version and exits 0 (pulumi/pulumi#20768); the four
    # flags upstream dropped (pulumi/pulumi#21065) are refused like any unknown flag, rc 2 and the usage.
    for spelling in ("-version", "--version"):
        answered = run_tool("pulumi-language-python", spelling)
        assert (answered.returncode, answered.stdout, answered.stderr) == (0, PULUMI_VERSION + "\n", ""), answered
    for dropped in ("virtualenv", "root", "typechecker", "toolchain"):
        refused = run_tool("pulumi-language-python", f"-{dropped}", "pip")
        assert refused.returncode == 2, refused
        assert refused.stderr.startswith(f"flag provided but not defined: -{dropped}\nUsage of "), refused
        assert "-use-executor string" in refused.stderr and "-version" in refused.stderr, refused
        assert refused.stdout == "", refused


def run_tool(tool: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([find_tool(tool), *args], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def test_engine_up_noop_destroy(smoke_dir):
    write_project(smoke_dir)
    pulumi = Pulumi(smoke_dir)
    pulumi("stack", "init", "smoke", timeout=120)

    up = pulumi("up", "--yes", "--skip-preview")
    assert "created" in up.stdout, up.stdout
    outputs = json.loads(pulumi("stack", "output", "--json", timeout=120).stdout)
    assert outputs == {"greeting": GREETING}
    # The plugin comes from the plugin cache, so the engine has no ambient plugin to warn about.
    assert "from $PATH" not in up.stdout + up.stderr, up.stdout + up.stderr

    state = json.loads(pulumi("stack", "export", timeout=120).stdout)
    providers = [r for r in state["deployment"]["resources"] if r["type"] == "pulumi:providers:command"]
    assert [p["inputs"].get("version") for p in providers] == [COMMAND_VERSION]
    assert state["deployment"]["manifest"]["version"] == PULUMI_VERSION

    # The version and path the engine got from the plugin itself (GetPluginInfo), in its -v=7 log.
    again = pulumi("up", "--yes", "--expect-no-changes", "-v=7", "--logtostderr")
    assert "2 unchanged" in again.stdout, again.stdout
    assert re.search(r"GetPluginInfo\(\) success \(#version=" + re.escape(COMMAND_VERSION) + r"\)", again.stderr), \
        again.stderr[-3000:]
    found = re.search(r'GetPluginPath\(resource, command, [^)]*\): found in cache at ([^"\s]+)', again.stderr)
    assert found, again.stderr[-3000:]
    assert Path(found.group(1)) == Path(pulumi.env["PULUMI_HOME"]) / "plugins" / command_plugin_dir() / COMMAND_PLUGIN
    assert "from $PATH" not in again.stdout + again.stderr
    history = json.loads(pulumi("stack", "history", "--json", timeout=120).stdout)
    assert history[0]["resourceChanges"] == {"same": 2}, history[0]

    pulumi("destroy", "--yes", "--skip-preview")
    state = json.loads(pulumi("stack", "export", timeout=120).stdout)
    assert not state["deployment"].get("resources"), state
    pulumi("stack", "rm", "--yes", timeout=120)


def test_import_prints_python_code(smoke_dir):
    """`pulumi import` into a Python program ends with the code to add, which the Python host writes from
    the importer's PCL (GenerateProgram, pkg/codegen/python; upstream main.go GenerateProgram). The
    resource is a builtin pulumi:index:Stash, which the engine's builtin provider lets import by id."""
    write_project(smoke_dir)
    pulumi = Pulumi(smoke_dir)
    pulumi("stack", "init", "smoke", timeout=120)
    pulumi("up", "--yes", "--skip-preview")
    imported = pulumi("import", "pulumi:index:Stash", "kept", "kept-id", "--yes")
    assert "= 1 imported" in imported.stdout, imported.stdout
    code = imported.stdout[imported.stdout.index("import pulumi\n"):]
    assert 'kept = pulumi.Stash("kept"' in code and "protect=True" in code, code
    compile(code, "imported.py", "exec")
    state = json.loads(pulumi("stack", "export", timeout=120).stdout)
    stash = [r for r in state["deployment"]["resources"] if r["type"] == "pulumi:index:Stash"]
    assert [(r["id"], r.get("protect")) for r in stash] == [("kept-id", True)], stash
    pulumi("state", "unprotect", "--all", "--yes", timeout=120)
    pulumi("destroy", "--yes", "--skip-preview")
    pulumi("stack", "rm", "--yes", timeout=120)


def test_convert_pcl_writes_a_python_project(smoke_dir):
    """`pulumi convert --language python` has the Python host write a whole project (GenerateProject,
    pkg/codegen/python; upstream main.go GenerateProject): Pulumi.yaml, requirements.txt, __main__.py."""
    source = smoke_dir / "pcl"
    source.mkdir()
    (source / "main.pp").write_text(textwrap.dedent("""\
        resource kept "pulumi:index:Stash" {
          input = "hello"
        }

        output kept {
          value = kept.output
        }
        """))
    out = smoke_dir / "converted"
    result = subprocess.run([find_tool("pulumi"), "convert", "--from", "pcl", "--language", "python", "--out",
                             str(out), "--generate-only", "--non-interactive"], cwd=source,
                            env=engine_environment(smoke_dir), capture_output=True, text=True, timeout=300,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result
    program = (out / "__main__.py").read_text()
    assert 'kept = pulumi.Stash("kept", input="hello")' in program, program
    assert 'pulumi.export("kept", kept.output)' in program, program
    compile(program, "__main__.py", "exec")
    assert (out / "Pulumi.yaml").read_text() == "name: pcl\nruntime: python\n", (out / "Pulumi.yaml").read_text()
    assert "pulumi>=" in (out / "requirements.txt").read_text()


def test_env_sh_switches_checkouts(tmp_path):
    """scripts/env.sh, sourced by POSIX sh from one checkout and then another, points the shell at the
    second one's state; a value of your own is kept, with a note on stderr."""
    for name in ("a", "b"):
        (tmp_path / name / "scripts").mkdir(parents=True)
        shutil.copy(REPO / "scripts" / "env.sh", tmp_path / name / "scripts" / "env.sh")
    show = 'echo "$PULUMI_BACKEND_URL|$PULUMI_HOME|$PULUMI_CONFIG_PASSPHRASE_FILE|$PATH"'
    script = f"""
        cd {tmp_path}/a && . scripts/env.sh && {show}
        cd {tmp_path}/b && . scripts/env.sh && {show}
        PULUMI_BACKEND_URL=s3://mine; cd {tmp_path}/a && . scripts/env.sh && {show}
    """
    sh = shutil.which("dash") or "/bin/sh"
    out = subprocess.run([sh, "-c", script], env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out
    a, b, mine = (line.split("|") for line in out.stdout.splitlines())
    for fields, name in ((a, "a"), (b, "b")):
        root = tmp_path / name
        assert fields[:3] == [f"file://{root}/.pulumi-state", f"{root}/.pulumi-state/home",
                              f"{root}/.pulumi-state/passphrase"]
        assert fields[3] == f"{root}/.tools/bin:{root}/.venv/bin:/usr/bin:/bin"
    assert mine[0] == "s3://mine" and mine[1] == f"{tmp_path}/a/.pulumi-state/home"
    assert "keeping your PULUMI_BACKEND_URL=s3://mine" in out.stderr, out.stderr
    assert out.stderr.count("env.sh:") == 1, out.stderr
