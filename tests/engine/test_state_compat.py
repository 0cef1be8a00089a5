"""State compatibility across the move of the layers into folders (issue 18): a stack brought up by main
as it was before the move reads as no change after it. The old code runs from its own commit (git
archive of BEFORE), ahead of this checkout's on PYTHONPATH, for the program and for every process its
Commands start; then the stack is previewed with this checkout's code and project files.

BEFORE's stacks ran nats-server 2.12.8, from before the version was a key (issue 20): with natsVersion
2.12.8 they read as no change; at the default they move to it by updates in place, never a replacement."""

from __future__ import annotations

import io
import json
import secrets
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from nats_fly_testkit.engine import flyctl_env
from nats_fly_testkit.support import REPO, nats_server_binary, nats_servers

BEFORE = "031d7738e71aca495b90c553fa985cc6936bff5f"
"""main before the layers became folders (the last commit whose components/ is flat)."""
SYS_PASSWORD = "compat-sys-" + secrets.token_hex(8)
APP_PASSWORD = "compat-app-" + secrets.token_hex(8)


def old_tree(root: Path) -> Path:
    """BEFORE's components/, nats/, __main__.py and Pulumi.yaml in root, and a folder whose `nats_fly` is
    that components/ (put ahead of the editable install on PYTHONPATH)."""
    try:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", BEFORE, "components", "nats", "__main__.py",
                                  "Pulumi.yaml"], capture_output=True, check=True, timeout=120).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.fail(f"the commit before the move, {BEFORE}, cannot be read from this checkout's history: {error}")
    tarfile.open(fileobj=io.BytesIO(archive)).extractall(root / "tree")
    (root / "path").mkdir()
    (root / "path" / "nats_fly").symlink_to(root / "tree" / "components")
    return root


def runs_old_code(env: dict) -> bool:
    """Whether a process with `env` imports BEFORE's nats_fly (its flat modules), not this checkout's."""
    probe = subprocess.run([sys.executable, "-c", "import nats_fly.nats_cluster"], env=env, capture_output=True,
                           timeout=60)
    return probe.returncode == 0


def use_files(project, tree: Path) -> None:
    """The project's program and Pulumi.yaml from `tree` (the venv stays this checkout's)."""
    shutil.copy(tree / "__main__.py", project.root / "__main__.py")
    manifest = yaml.safe_load((tree / "Pulumi.yaml").read_text())
    manifest["runtime"]["options"]["virtualenv"] = yaml.safe_load(
        (project.root / "Pulumi.yaml").read_text())["runtime"]["options"]["virtualenv"]
    (project.root / "Pulumi.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))


def old_environment(env: dict, tree: Path) -> None:
    """BEFORE's code ahead of this checkout's, and the nats-server it asks for (2.12.8 beside the venv's python
    or on PATH: the venv no longer carries one)."""
    env["PYTHONPATH"] = str(tree / "path")
    env["PATH"] = f"{Path(nats_server_binary('2.12.8')).parent}:{env['PATH']}"


def moves_in_place(project) -> None:
    """At the default natsVersion, the stack's servers change by updates only."""
    steps = changes(project)
    assert steps.get("update") and set(steps) == {"update"}, steps


def changes(project) -> dict:
    """What a preview with this checkout's code would do: {operation: [resource names]} without 'same'."""
    preview = json.loads(project.pulumi("preview", "--json").stdout)
    steps: dict[str, list[str]] = {}
    for step in preview.get("steps", []):
        if step["op"] != "same":
            steps.setdefault(step["op"], []).append(step["urn"].rsplit("::", 1)[1])
    return steps


def test_a_local_stack_made_before_the_move_reads_as_no_change(project, engine_env, tmp_path):
    old = old_tree(tmp_path / "before")
    stack = project("local")
    stack.config({"regions": ["ord=2", "syd"], "jetstream": True, "websocket": True})
    stack.pulumi("config", "set", "--secret", "sysPassword", stdin=SYS_PASSWORD)
    marker = str(stack.root)
    new_env = dict(engine_env)
    try:
        use_files(stack, old / "tree")
        old_environment(engine_env, old)
        assert runs_old_code(engine_env) and not runs_old_code(new_env)
        stack.pulumi("up", "--yes", "--skip-preview")
        assert len(nats_servers(marker)) == 3
        stack.env = new_env
        use_files(stack, REPO)
        moves_in_place(stack)
        stack.config({"natsVersion": "2.12.8"})
        assert changes(stack) == {}
        stack.pulumi("preview", "--expect-no-changes")
    finally:
        stack.env = new_env
        stack.pulumi("destroy", "--yes", "--skip-preview", check=False)
    assert nats_servers(marker) == []


def test_a_fly_stack_made_before_the_move_is_neither_replaced_nor_redeployed(project, engine_env, standin, tmp_path):
    old = old_tree(tmp_path / "before")
    engine_env.update(flyctl_env(standin, engine_env))
    stack = project("prod")
    app = f"compat-{secrets.token_hex(4)}"
    stack.config({"app": app, "peerWait": 3, "regions": ["ord", "syd"], "jetstream": False, "volumeSize": None,
                  "websocket": True})
    stack.pulumi("config", "set", "--secret", "sysPassword", stdin=SYS_PASSWORD)
    stack.pulumi("config", "set", "--secret", "--path", "userPasswords.app", stdin=APP_PASSWORD)
    new_env = dict(engine_env)
    try:
        use_files(stack, old / "tree")
        old_environment(engine_env, old)
        assert runs_old_code(engine_env)
        stack.pulumi("up", "--yes", "--skip-preview")
        deploys = sum(1 for call in standin.flyctl_log() if call["command"] == "deploy")
        stack.env = new_env
        use_files(stack, REPO)
        moves_in_place(stack)
        stack.config({"natsVersion": "2.12.8"})
        assert changes(stack) == {}
        stack.pulumi("up", "--yes", "--skip-preview", "--expect-no-changes")
        assert sum(1 for call in standin.flyctl_log() if call["command"] == "deploy") == deploys
    finally:
        stack.env = new_env
        stack.pulumi("destroy", "--yes", "--skip-preview", check=False)
