"""Multi-language components through the language hosts scripts/bootstrap provides: a tiny Python
component package of our own (PulumiPlugin.yaml `runtime: python`, a __main__.py calling
component_provider_host), run by the CLI through the Python host's RunPlugin, used from
- `pulumi package get-schema <dir>` (the schema the provider infers),
- a YAML program (`packages:` + `type: greet:Greeter`, the YAML host pulumi-language-yaml),
- a Python program after `pulumi package add <dir>` (the Python host's GeneratePackage, Link and
  InstallDependencies), through the generated SDK.
The component's child is a command:local:Command that writes a marker file on create and removes
it on delete, so up and destroy are both seen.

The component installs its own virtualenv (`venv`, the Python host's default for plugins) from the
package index. The Python consumer's virtualenv reuses this repo's packages through a .pth file
instead of downloading them again; the generated SDK is installed into it, never into .venv.

Skips when the tools are missing, unless CI=true."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import textwrap
from pathlib import Path

import pytest

from nats_fly_testkit.engine import engine_environment, find_tool, missing_tools, python_consumer, require, run_pulumi

COMPONENT_MAIN = textwrap.dedent('''\
    from typing import Optional, TypedDict

    import pulumi
    from pulumi.provider.experimental import component_provider_host
    from pulumi_command import local


    class GreeterArgs(TypedDict):
        who: pulumi.Input[str]
        """Who to greet."""
        marker: pulumi.Input[str]
        """A file the child Command writes on create and removes on delete."""


    class Greeter(pulumi.ComponentResource):
        greeting: pulumi.Output[str]
        """The greeting, from a child Command."""

        def __init__(self, name: str, args: GreeterArgs, opts: Optional[pulumi.ResourceOptions] = None):
            super().__init__("greet:index:Greeter", name, {}, opts)
            child = local.Command(f"{name}-echo", create='echo "hello $WHO" | tee "$MARKER"',
                                  delete='rm -f "$MARKER"',
                                  environment={"WHO": args["who"], "MARKER": args["marker"]},
                                  opts=pulumi.ResourceOptions(parent=self))
            self.greeting = child.stdout
            self.register_outputs({"greeting": self.greeting})


    if __name__ == "__main__":
        component_provider_host(components=[Greeter], name="greet")
    ''')


def yaml_host() -> Path | None:
    cli = find_tool("pulumi")
    host = Path(os.path.realpath(cli)).parent / "pulumi-language-yaml" if cli else None
    return host if host and os.access(host, os.X_OK) else None


class Workspace:
    """A temp dir with the component package and an engine environment of its own."""

    def __init__(self, root: Path):
        self.root = root
        self.component = root / "component"
        self.component.mkdir()
        (self.component / "PulumiPlugin.yaml").write_text("runtime: python\n")
        (self.component / "requirements.txt").write_text("pulumi>=3.159\npulumi-command==1.2.1\n")
        (self.component / "__main__.py").write_text(COMPONENT_MAIN)
        self.env = engine_environment(root)

    def pulumi(self, cwd: Path, *args: str, **options) -> subprocess.CompletedProcess:
        return run_pulumi(self.env, cwd, *args, **options)


@pytest.fixture(scope="module")
def workspace():
    require(missing_tools() + ([] if yaml_host() else ["pulumi-language-yaml"]), "the component host tests")
    with tempfile.TemporaryDirectory(prefix="nats-fly-components-") as tmp:
        yield Workspace(Path(tmp))


def test_get_schema(workspace):
    result = workspace.pulumi(workspace.root, "package", "get-schema", str(workspace.component))
    schema = json.loads(result.stdout)
    assert schema["name"] == "greet" and schema["version"] == "0.0.0"
    greeter = schema["resources"]["greet:index:Greeter"]
    assert greeter["isComponent"] is True
    assert set(greeter["inputProperties"]) == {"who", "marker"}
    assert sorted(greeter["requiredInputs"]) == ["marker", "who"]
    assert greeter["inputProperties"]["who"] == {"type": "string", "description": "Who to greet."}
    assert greeter["properties"]["greeting"]["type"] == "string"
    # The plugin ran in its own virtualenv, `venv` in its directory (the pip default for plugins).
    assert (workspace.component / "venv" / "bin" / "python").exists()


def up_and_destroy(workspace, project: Path, stack: str, marker: Path, expected: str) -> None:
    workspace.pulumi(project, "stack", "init", stack)
    up = workspace.pulumi(project, "up", "--yes", "--skip-preview", "--stack", stack)
    assert "+ 3 created" in up.stdout, up.stdout
    outputs = json.loads(workspace.pulumi(project, "stack", "output", "--json", "--stack", stack).stdout)
    assert outputs == {"greeting": expected}
    assert marker.read_text() == expected + "\n"
    state = json.loads(workspace.pulumi(project, "stack", "export", "--stack", stack).stdout)
    types = sorted(r["type"] for r in state["deployment"]["resources"] if not r["type"].startswith("pulumi:"))
    assert types == ["command:local:Command", "greet:index:Greeter"]
    workspace.pulumi(project, "preview", "--expect-no-changes", "--stack", stack)

    destroy = workspace.pulumi(project, "destroy", "--yes", "--skip-preview", "--stack", stack)
    assert "- 3 deleted" in destroy.stdout, destroy.stdout
    assert not marker.exists()
    workspace.pulumi(project, "stack", "rm", "--yes", "--stack", stack)


def test_yaml_program_up_destroy(workspace):
    project = workspace.root / "yaml-consumer"
    project.mkdir()
    marker = workspace.root / "yaml-marker"
    (project / "Pulumi.yaml").write_text(textwrap.dedent(f"""\
        name: yaml-consumer
        runtime: yaml
        packages:
          greet: ../component
        resources:
          hi:
            type: greet:Greeter
            properties:
              who: yaml
              marker: {marker}
        outputs:
          greeting: ${{hi.greeting}}
        """))
    up_and_destroy(workspace, project, "yaml", marker, "hello yaml")


def test_python_program_package_add_up_destroy(workspace):
    project = workspace.root / "py-consumer"
    python_consumer(project)
    venv = project / "venv"

    added = workspace.pulumi(project, "package", "add", "../component")
    said = added.stdout + added.stderr
    assert "import pulumi_greet as greet" in said, said
    assert "Added package greet" in said, said
    assert (project / "requirements.txt").read_text() == "pulumi>=3.159\nsdks/greet\n"
    assert "greet: ../component" in (project / "Pulumi.yaml").read_text()
    assert (project / "sdks" / "greet" / "pulumi_greet" / "pulumi-plugin.json").exists()
    installed = subprocess.run([str(venv / "bin" / "python"), "-c", "import pulumi_greet; print(pulumi_greet.__file__)"],
                               capture_output=True, text=True, timeout=60)
    assert installed.returncode == 0 and installed.stdout.startswith(str(venv)), installed

    marker = workspace.root / "py-marker"
    (project / "__main__.py").write_text(textwrap.dedent(f"""\
        import pulumi
        import pulumi_greet as greet

        hi = greet.Greeter("hi", who="python", marker="{marker}")
        pulumi.export("greeting", hi.greeting)
        """))
    up_and_destroy(workspace, project, "python", marker, "hello python")
