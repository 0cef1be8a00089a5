"""The command plugin writes the state upstream pulumi-command v1.2.1 writes, and reads states as
upstream reads them (tools/standin-command/main.go names the upstream source of each rule).

Upstream cannot run here (the Go module proxy refuses it), so the rules are checked from both ends:
- the state our plugin writes is exactly what upstream's rules give: the inputs as the program
  passed them (no addPreviousOutputInEnv unless the program sets it), outputs = inputs + stdout and
  stderr, a secret only where an input of the same name is secret (pulumi-go-provider
  infer/resource.go markSecret), never stdout because of a secret input (only the engine's
  additionalSecretOutputs); and a preview of that state shows no change;
- a state as the old stand-in wrote it (addPreviousOutputInEnv: true written by Check, stdout/stderr
  secret whenever any input was) reads as upstream reads it: one update per Command, on
  addPreviousOutputInEnv alone (the default diff compares the old state's input fields with the new
  inputs); stdout's secretness is no input, so no diff. After that up the state is upstream's.

Skips when the tools are missing, unless CI is set."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import textwrap
from pathlib import Path

import pytest

from nats_fly_testkit.engine import engine_environment, find_tool, missing_tools

REPO = Path(__file__).resolve().parents[2]
VENV = REPO / ".venv"
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
SIG = "4dabf18193072939515e22adb298388d"
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"

PROGRAM = textwrap.dedent("""\
    import pulumi
    from pulumi_command import local

    secret = pulumi.Output.secret("s3cr3t")
    plain = local.Command("plain", create="echo out; echo err >&2", delete="true", triggers=["t1", 2])
    entry = local.Command("entry", create='echo "$TOKEN"', environment={"TOKEN": secret, "MODE": "x"})
    whole = local.Command("whole", create='echo "$TOKEN"', environment=pulumi.Output.secret({"TOKEN": "w"}))
    piped = local.Command("piped", create="cat", stdin=secret)
    hidden = local.Command("hidden", create='echo "$TOKEN"', environment={"TOKEN": secret},
                           opts=pulumi.ResourceOptions(additional_secret_outputs=["stdout"]))
    noprev = local.Command("noprev", create="echo a", add_previous_output_in_env=False)
    after = local.Command("after", create='echo "$PREV"', environment={"PREV": plain.stdout})
    pulumi.export("entry", entry.stdout)
    """)


def is_secret(value) -> bool:
    return isinstance(value, dict) and value.get(SIG) == SECRET_SIG


@pytest.fixture
def stack():
    missing = missing_tools() + ([] if (VENV / "bin" / "python").exists() else [".venv"])
    if missing:
        reason = f"Pulumi tools missing ({', '.join(missing)}): run scripts/bootstrap"
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(f"CI must run the command parity tests: {reason}")
        pytest.skip(reason)
    with tempfile.TemporaryDirectory(prefix="nats-fly-parity-") as tmp:
        root = Path(tmp)
        project = root / "project"
        project.mkdir()
        (project / "Pulumi.yaml").write_text(
            f"name: parity\nruntime:\n  name: python\n  options:\n    toolchain: pip\n    virtualenv: {VENV}\n")
        (project / "__main__.py").write_text(PROGRAM)
        env = engine_environment(root)

        def pulumi(*args: str, check: bool = True) -> subprocess.CompletedProcess:
            result = subprocess.run([find_tool("pulumi"), *args, "--non-interactive"], cwd=project, env=env,
                                    capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
            if check:
                assert result.returncode == 0, (f"pulumi {' '.join(args)} failed ({result.returncode}):\n"
                                                f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
            return result

        pulumi("stack", "init", "parity")
        try:
            yield pulumi, root
        finally:
            pulumi("destroy", "--yes", "--skip-preview", check=False)


def commands(state: dict) -> dict[str, dict]:
    return {r["urn"].rsplit("::", 1)[1]: r for r in state["deployment"]["resources"]
            if r["type"] == "command:local:Command"}


def test_preview_leaves_command_outputs_unknown(stack):
    """Create and Update previews run no command and leave stdout unknown (infer markComputed:
    outputs that mirror no input are unknown in a create preview, and in an update preview when an
    input changed), so what depends on it shows as changing."""
    pulumi, root = stack
    steps = {s["urn"].rsplit("::", 1)[1]: s for s in json.loads(pulumi("preview", "--json").stdout)["steps"]}
    assert steps["after"]["op"] == "create"
    assert steps["after"]["newState"]["inputs"]["environment"]["PREV"] == UNKNOWN

    pulumi("up", "--yes", "--skip-preview")
    program = root / "project" / "__main__.py"
    program.write_text(program.read_text().replace('create="echo out; echo err >&2"', 'create="echo OUT"'))
    steps = {s["urn"].rsplit("::", 1)[1]: s for s in json.loads(pulumi("preview", "--json", "--diff").stdout)["steps"]}
    assert steps["plain"]["op"] == "update" and set(steps["plain"]["detailedDiff"]) == {"create"}, steps["plain"]
    assert steps["after"]["op"] == "update", steps["after"]
    assert steps["after"]["detailedDiff"] == {"environment.PREV": {"kind": "update", "inputDiff": False}}
    assert steps["after"]["newState"]["inputs"]["environment"]["PREV"] == UNKNOWN
    assert {n for n, s in steps.items() if s["op"] != "same"} == {"plain", "after"}


def test_state_is_upstreams_and_reads_as_no_change(stack):
    pulumi, _ = stack
    pulumi("up", "--yes", "--skip-preview")
    cmds = commands(json.loads(pulumi("stack", "export").stdout))

    plain = cmds["plain"]
    assert plain["inputs"] == {"create": "echo out; echo err >&2", "delete": "true", "triggers": ["t1", 2]}
    assert plain["outputs"] == {**plain["inputs"], "stdout": "out", "stderr": "err"}

    entry = cmds["entry"]  # a secret entry: secret at the same path in the outputs, stdout plain
    assert set(entry["inputs"]) == {"create", "environment"}
    assert is_secret(entry["inputs"]["environment"]["TOKEN"]) and entry["inputs"]["environment"]["MODE"] == "x"
    assert not is_secret(entry["outputs"]["environment"])
    assert is_secret(entry["outputs"]["environment"]["TOKEN"]) and entry["outputs"]["environment"]["MODE"] == "x"
    assert entry["outputs"]["stdout"] == "s3cr3t" and entry["outputs"]["stderr"] == ""

    whole = cmds["whole"]  # a wholly secret input: the same-named output wholly secret
    assert is_secret(whole["outputs"]["environment"]) and whole["outputs"]["stdout"] == "w"
    piped = cmds["piped"]
    assert is_secret(piped["outputs"]["stdin"]) and piped["outputs"]["stdout"] == "s3cr3t"
    hidden = cmds["hidden"]  # additionalSecretOutputs: the engine's business
    assert is_secret(hidden["outputs"]["stdout"]) and hidden["additionalSecretOutputs"] == ["stdout"]
    assert cmds["noprev"]["inputs"]["addPreviousOutputInEnv"] is False
    assert cmds["after"]["outputs"]["stdout"] == "out"
    assert all("addPreviousOutputInEnv" not in c["inputs"] for n, c in cmds.items() if n != "noprev")
    assert json.loads(pulumi("stack", "output", "--json").stdout) == {"entry": "s3cr3t"}

    pulumi("preview", "--expect-no-changes")


def test_old_standin_state_reads_as_upstream_reads_it(stack):
    pulumi, root = stack
    pulumi("up", "--yes", "--skip-preview")
    state = json.loads(pulumi("stack", "export", "--show-secrets").stdout)
    for name, res in commands(state).items():
        if "addPreviousOutputInEnv" not in res["inputs"]:  # the old Check wrote true
            res["inputs"]["addPreviousOutputInEnv"] = res["outputs"]["addPreviousOutputInEnv"] = True
        if name in ("entry", "whole", "piped"):  # the old rule: any secret input made stdout/stderr secret
            for key in ("stdout", "stderr"):
                res["outputs"][key] = {SIG: SECRET_SIG, "plaintext": json.dumps(res["outputs"][key])}
    old = root / "old-standin.json"
    old.write_text(json.dumps(state))
    pulumi("stack", "import", "--file", str(old))

    preview = json.loads(pulumi("preview", "--json", "--diff").stdout)
    changed = {s["urn"].rsplit("::", 1)[1]: s for s in preview["steps"] if s["op"] != "same"}
    assert set(changed) == {"plain", "entry", "whole", "piped", "hidden", "after"}, changed
    for name, step in changed.items():
        assert step["op"] == "update", step
        expected = {"addPreviousOutputInEnv": {"kind": "delete", "inputDiff": False}}
        if name == "after":  # plain's update leaves its stdout unknown in the preview (infer markComputed)
            expected["environment.PREV"] = {"kind": "update", "inputDiff": False}
        assert step["detailedDiff"] == expected, step

    pulumi("up", "--yes", "--skip-preview")
    cmds = commands(json.loads(pulumi("stack", "export").stdout))
    assert all("addPreviousOutputInEnv" not in c["outputs"] for n, c in cmds.items() if n != "noprev")
    assert cmds["entry"]["outputs"]["stdout"] == "s3cr3t"  # plain again, as upstream writes it
    pulumi("preview", "--expect-no-changes")


def test_update_delete_and_errors_as_upstream(stack):
    """local/commandController.go and commandOutputs.go run(): Update starts from the old stdout
    (PULUMI_COMMAND_STDOUT), Delete runs the stored command with the stored stdout, and a failure,
    also one to start (a missing dir), reads "<err>: running \\"<command>\\":\\n<output>"."""
    pulumi, root = stack
    program = root / "project" / "__main__.py"
    log = root / "delete.log"
    program.write_text(textwrap.dedent(f"""\
        import pulumi
        from pulumi_command import local
        c = local.Command("counter", create="echo 1", update='echo "$PULUMI_COMMAND_STDOUT+"',
                          delete='echo "deleted $PULUMI_COMMAND_STDOUT" > {log}', environment={{"V": "1"}})
        pulumi.export("count", c.stdout)
        """))
    pulumi("up", "--yes", "--skip-preview")
    program.write_text(program.read_text().replace('"V": "1"', '"V": "2"'))
    pulumi("up", "--yes", "--skip-preview")
    assert json.loads(pulumi("stack", "output", "--json").stdout) == {"count": "1+"}
    pulumi("destroy", "--yes", "--skip-preview")
    assert log.read_text() == "deleted 1+\n"

    program.write_text(textwrap.dedent("""\
        from pulumi_command import local
        local.Command("fails", create="echo oops; exit 3")
        local.Command("nodir", create="true", dir="/nonexistent-nats-fly")
        """))
    failed = pulumi("up", "--yes", "--skip-preview", check=False)
    assert failed.returncode != 0
    out = failed.stdout + failed.stderr
    assert re.search(r'exit status 3: running "echo oops; exit 3":\n\s*oops\n', out), out
    assert 'chdir /nonexistent-nats-fly: no such file or directory: running "true":' in out, out
    state = json.loads(pulumi("stack", "export").stdout)
    assert not commands(state), "a failed create saves nothing"
