"""The README's TypeScript example against the TypeScript SDK of our component package.

The Node.js language host cannot be built here (the Go module proxy refuses its module), so the SDK
comes from .tools/bin/nats-fly-gen-nodejs-sdk (tools/gen-nodejs-sdk), which runs what that host's
GeneratePackage runs (pkg/codegen/nodejs), given tests/golden/schema.json, in the shape
`pulumi package add` asks for (a local SDK). The consumer is laid out as `package add` leaves a Node.js
project: the SDK in sdks/nats-fly, a `file:` dependency on it allowed to run its install script (which
compiles it), then `npm install` from the npm registry: @pulumi/pulumi in the range the generated
package.json asks for, and typescript. Then:
- the README's example (taken from README.md by its marker), as index.ts, passes `tsc --noEmit`;
- programs that are wrong in ways the SDK's types must catch fail it, each with its own error.
With a real pulumi-language-nodejs (on PATH or beside the CLI, and not one of ours), the example is also
run, turned into a local cluster, through `pulumi package add`, up and destroy; without one, that part
skips and says why.

Everything lives in a temp dir (node_modules included); npm uses its default cache. Skips without the
generator, node or npm, unless CI=true."""

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

from nats_fly_testkit.engine import (TOOLS, engine_environment, find_tool, missing_tools, provider_copy, require,
                                     run_pulumi)
from nats_fly_testkit.support import REPO

GENERATOR = "nats-fly-gen-nodejs-sdk"
SCHEMA = REPO / "tests" / "golden" / "schema.json"
SDK_DIR = "sdks/nats-fly"   # where `pulumi package add` puts it (<project>/sdks/<package name>)
PASSWORD = "typescript-system-password-7"

# The project's tsconfig.json, as upstream's Node.js program generator writes one (codegen/nodejs
# gen_program.go generateTSConfig), for index.ts alone.
TSCONFIG = {
    "compilerOptions": {
        "outDir": "bin", "sourceMap": True, "target": "ES2022", "module": "nodenext",
        "moduleResolution": "nodenext", "moduleDetection": "force", "types": ["node"],
        "strict": True, "noFallthroughCasesInSwitch": True, "noImplicitReturns": True, "skipLibCheck": True,
    },
    "files": ["index.ts"],
}

# Programs the SDK's types must refuse: file -> (NatsCluster arguments, tsc's error codes (either, as
# typescript versions differ), text of the error).
WRONG = {
    "misspelled.ts": ('app: "wrong", regions: ["ord"], sysPasword: "x".repeat(12)', ("TS2561", "TS2345"),
                      "'sysPasword' does not exist in type 'NatsClusterArgs'"),
    "number-app.ts": ('app: 42, regions: ["ord"], sysPassword: "x".repeat(12)', ("TS2322",),
                      "Type 'number' is not assignable to type 'string'"),
    "secret-map.ts": ('app: "wrong", regions: ["ord"], sysPassword: "x".repeat(12),\n'
                      '    userPasswords: new pulumi.Config().requireSecretObject<Record<string, number>>("p")',
                      ("TS2322",), "is not assignable to type 'Input<{ [key: string]: string; } | undefined>'"),
    "no-regions.ts": ('app: "wrong", sysPassword: "x".repeat(12)', ("TS2345",), "Property 'regions' is missing"),
}


def wrong_program(args: str) -> str:
    return ('import * as pulumi from "@pulumi/pulumi";\nimport * as natsFly from "@pulumi/nats-fly";\n\n'
            f'new natsFly.NatsCluster("wrong", {{\n    {args},\n}});\n')


def diagnostics(output: str) -> dict[str, list[str]]:
    """tsc's output by file: each diagnostic starts `file(line,col): error TSnnnn: ...`, then indented lines."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in output.splitlines():
        head = re.match(r"([^\s(]+)\(\d+,\d+\): ", line)
        if head:
            current = found.setdefault(head.group(1), [])
            current.append(line)
        elif current is not None and line.startswith(" "):
            current[-1] += "\n" + line
    return found


def readme_example() -> str:
    readme = (REPO / "README.md").read_text()
    found = re.search(r"<!-- example: typescript -->\n```typescript\n(.*?)```", readme, re.S)
    assert found, "README.md has no ```typescript block after <!-- example: typescript -->"
    return found.group(1)


def missing() -> list[str]:
    return [t for t in (GENERATOR, "node", "npm") if not find_tool(t)]


def run(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)


def npm_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(npm_config_update_notifier="false", npm_config_fund="false", npm_config_audit="false")
    return env


def write_json(path: Path, value: dict) -> None:
    path.write_text(json.dumps(value, indent=4) + "\n")


def consumer_manifest(name: str, sdk: dict) -> dict:
    """The project's package.json: @pulumi/pulumi and @types/node in the generated SDK's ranges, typescript
    as `pulumi new typescript` has it, and the SDK as `pulumi package add` links it (npm's Link:
    dependencies[<package>]=file:<path>, and that path in allowScripts so its postinstall runs)."""
    wants = {**sdk.get("devDependencies", {}), **sdk["dependencies"]}
    return {
        "name": name,
        "devDependencies": {"@types/node": wants["@types/node"]},
        "dependencies": {"@pulumi/pulumi": wants["@pulumi/pulumi"], "typescript": "^5",
                         sdk["name"]: f"file:{SDK_DIR}"},
        "allowScripts": {f"file:{SDK_DIR}": True},
    }


class Consumer:
    """A TypeScript project in a temp dir with the generated SDK installed."""

    def __init__(self, root: Path):
        self.root, self.env = root, npm_env()
        sdk = root / SDK_DIR
        generated = run([find_tool(GENERATOR), "-package-add", str(SCHEMA), str(sdk)], root, self.env, timeout=120)
        assert generated.returncode == 0, generated.stderr
        self.sdk = json.loads((sdk / "package.json").read_text())
        write_json(root / "package.json", consumer_manifest("ts-consumer", self.sdk))
        write_json(root / "tsconfig.json", TSCONFIG)
        installed = run(["npm", "install", "--prefer-offline", "--no-audit", "--no-fund"], root, self.env)
        assert installed.returncode == 0, f"npm install failed:\n{installed.stdout[-3000:]}\n{installed.stderr[-3000:]}"
        self.install_log = installed.stdout + installed.stderr

    def version(self, package: str) -> str:
        return json.loads((self.root / "node_modules" / package / "package.json").read_text())["version"]

    def tsc(self, *args: str) -> subprocess.CompletedProcess:
        return run(["npx", "--no-install", "tsc", "--noEmit", *args], self.root, self.env, timeout=300)


@pytest.fixture(scope="module")
def consumer():
    require(missing(), "the TypeScript SDK tests")  # scripts/bootstrap builds the generator; node and npm are the system's
    with tempfile.TemporaryDirectory(prefix="nats-fly-typescript-") as tmp:
        yield Consumer(Path(tmp))


def test_generated_sdk_is_the_package_add_shape(consumer):
    sdk = consumer.sdk
    assert sdk["name"] == "@pulumi/nats-fly" and sdk["version"] == "0.1.0"
    assert sdk["pulumi"] == {"resource": True, "name": "nats-fly", "version": "0.1.0"}
    assert sdk["main"] == "bin/index.js" and "postinstall" in sdk["scripts"]   # a local SDK
    source = (consumer.root / SDK_DIR / "natsCluster.ts").read_text()
    assert "export class NatsCluster extends pulumi.ComponentResource" in source
    assert "'nats-fly:index:NatsCluster'" in source
    # npm linked it (not a copy from the registry) and its postinstall compiled it.
    link = consumer.root / "node_modules" / "@pulumi" / "nats-fly"
    assert link.is_symlink() and link.resolve() == (consumer.root / SDK_DIR).resolve()
    assert (consumer.root / SDK_DIR / "bin" / "natsCluster.d.ts").exists()
    # One @pulumi/pulumi for the program and the SDK: their types must be the same ones.
    assert not (consumer.root / SDK_DIR / "node_modules" / "@pulumi" / "pulumi").exists()


def test_readme_example_type_checks(consumer):
    (consumer.root / "index.ts").write_text(readme_example())
    checked = consumer.tsc()
    assert checked.returncode == 0, (
        f"the README's TypeScript example does not type-check against the generated SDK "
        f"(@pulumi/pulumi {consumer.version('@pulumi/pulumi')}, typescript {consumer.version('typescript')}):\n"
        f"{checked.stdout}{checked.stderr}")


def test_wrong_programs_fail_type_check(consumer):
    for name, (args, _, _) in WRONG.items():
        (consumer.root / name).write_text(wrong_program(args))
    write_json(consumer.root / "tsconfig.wrong.json", {**TSCONFIG, "files": list(WRONG)})
    checked = consumer.tsc("-p", "tsconfig.wrong.json")
    said = checked.stdout + checked.stderr
    assert checked.returncode != 0, said
    found = diagnostics(said)
    assert set(found) == set(WRONG), said
    for name, (_, codes, text) in WRONG.items():
        assert len(found[name]) == 1, found[name]
        error = found[name][0]
        assert any(f"error {code}:" in error for code in codes) and text in error, f"{name}:\n{error}"


# ---------------------------------------------------------------- run it, with a real Node.js host

def ours(path: str) -> bool:
    real = os.path.realpath(path)
    cache = os.environ.get("NATS_FLY_CACHE", str(Path.home() / ".cache" / "nats-fly"))
    return any(real.startswith(os.path.realpath(d) + os.sep) for d in (TOOLS, cache))


def node_host(env: dict[str, str]) -> str | None:
    """A pulumi-language-nodejs the CLI would use: beside its resolved executable, or on PATH."""
    cli = find_tool("pulumi")
    candidates = [str(Path(os.path.realpath(cli)).parent / "pulumi-language-nodejs")] if cli else []
    candidates.append(shutil.which("pulumi-language-nodejs", path=env["PATH"]) or "")
    return next((c for c in candidates if c and os.access(c, os.X_OK) and not ours(c)), None)


def local_variant(example: str) -> str:
    """The example as a local cluster: the same program with the NatsCluster arguments replaced."""
    pattern = re.compile(r'(const (\w+) = new \w+\.NatsCluster\("[^"]+",\s*)\{.*?\n\}\);', re.S)
    found = pattern.search(example)
    assert found, f"no `const x = new y.NatsCluster(\"name\", {{...}});` in the example:\n{example}"
    local = textwrap.dedent("""\
        {
            app: "ts-nats",
            platform: "local",
            regions: ["ord", "syd"],
            auth: "none",
            sysPassword: config.requireSecret("natsSysPassword"),
        });""")
    program = example[:found.start()] + found.group(1) + local + example[found.end():]
    return program + f"export const machines = {found.group(2)}.machines;\n"


def our_servers(marker: str) -> list[int]:
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if (argv.startswith("nats-server") or "/nats-server\0" in argv) and marker in argv:
            pids.append(int(pid))
    return pids


def test_readme_example_runs_as_a_local_cluster(consumer):
    require(missing_tools(), "the TypeScript example")
    with tempfile.TemporaryDirectory(prefix="nats-fly-typescript-run-") as tmp:
        root = Path(tmp)
        env = engine_environment(root)
        host = node_host(env)
        if not host:
            pytest.skip("no upstream pulumi-language-nodejs on PATH or beside the CLI (it cannot be built "
                        "here: the proxy refuses its Go module): the example was type-checked only")
        env.update(npm_config_update_notifier="false", npm_config_fund="false", npm_config_audit="false")
        package = provider_copy(root / "nats-fly-provider")

        project = root / "ts-consumer"
        project.mkdir()
        (project / "Pulumi.yaml").write_text(
            "name: ts-consumer\nruntime:\n  name: nodejs\n  options:\n    packagemanager: npm\n")
        manifest = consumer_manifest("ts-consumer", consumer.sdk)
        del manifest["dependencies"][consumer.sdk["name"]], manifest["allowScripts"]
        write_json(project / "package.json", manifest)
        write_json(project / "tsconfig.json", TSCONFIG)
        (project / "index.ts").write_text('import * as pulumi from "@pulumi/pulumi";\n')
        added = run_pulumi(env, project, "package", "add", str(package))
        said = added.stdout + added.stderr
        assert 'import * as natsFly from "@pulumi/nats-fly";' in said, said   # the README's import line
        (project / "index.ts").write_text(local_variant(readme_example()))

        run_pulumi(env, project, "stack", "init", "dev")
        run_pulumi(env, project, "config", "set", "--secret", "natsSysPassword", stdin=PASSWORD)
        try:
            run_pulumi(env, project, "up", "--yes", "--skip-preview")
            outputs = json.loads(run_pulumi(env, project, "stack", "output", "--json").stdout)
            assert outputs["machines"] == {"ord": 1, "syd": 1}
            assert set(outputs["regions"]) == {"ord", "syd"} and "127.0.0.1" in outputs["natsUrl"]
            assert len(our_servers(str(project))) == 2
            run_pulumi(env, project, "preview", "--expect-no-changes")
            assert PASSWORD not in run_pulumi(env, project, "stack", "export").stdout
        finally:
            run_pulumi(env, project, "destroy", "--yes", "--skip-preview", check=False)
        assert not our_servers(str(project))
        assert not (project / ".nats-fly").exists()
        run_pulumi(env, project, "stack", "rm", "--yes")
