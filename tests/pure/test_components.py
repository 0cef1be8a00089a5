"""The resource graph NatsCluster builds, and the exact flyctl command line of every Command."""

from __future__ import annotations

import base64
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pulumi
import pytest

from nats_fly import NatsCluster, SettingsError
from nats_fly.config.settings import DEFAULT_NATS_VERSION
from nats_fly.contract import spec
from nats_fly_testkit.support import ca_signed_pair
from nats_fly.contract.operations import FlyDeploy


def build(tmp_path, **config):
    secrets = {"sysPassword": pulumi.Output.secret("s" * 16),
               "userPasswords": pulumi.Output.secret({"app": "p" * 10})}
    local = {"workDir": str(tmp_path)} if config.get("platform") == "local" else {}  # Fly keeps no local files
    args = {"app": "my-nats", "regions": ["ord", "syd", "cdg"], "users": ["app"], **secrets, **local, **config}
    return NatsCluster("nats", {k: v for k, v in args.items() if v is not None})


def test_fly_graph_and_outputs(mock_program, tmp_path):
    cluster = mock_program.run(lambda: build(tmp_path))
    assert mock_program.value(cluster.client_url) == "nats://my-nats.fly.dev:10000"
    assert mock_program.value(cluster.tls_url) == "tls://my-nats.fly.dev:10001"
    assert mock_program.value(cluster.machines) == {"ord": 1, "syd": 1, "cdg": 1}
    # Fly's proxy is the only way in: one URL whatever the count, each region's list holds just it.
    assert set(mock_program.value(cluster.client_urls).values()) == {"nats://my-nats.fly.dev:10000"}
    assert mock_program.value(cluster.server_urls) == {r: ["nats://my-nats.fly.dev:10000"] for r in ("ord", "syd", "cdg")}
    assert mock_program.value(cluster.how_to_connect).startswith(
        "await nats.connect('nats://my-nats.fly.dev:10000', user='app', password=<its userPasswords entry>)")
    assert "  routes: $NATS_ROUTES\n" in mock_program.value(cluster.nats_conf)
    types = {name: typ for name, (typ, _) in mock_program.resources().items()}
    assert types["nats"] == "nats-fly:index:NatsCluster"
    assert types["nats-fly"] == "nats-fly:index:FlyApp"
    assert types["nats-image"] == "nats-fly:index:NatsImage"
    assert {types[f"nats-{r}"] for r in ("ord", "syd", "cdg")} == {"nats-fly:index:NatsRegion"}
    assert sorted(mock_program.commands()) == sorted([
        "nats-tls-marker", "nats-fly-app", "nats-fly-ips", "nats-fly-secrets", "nats-image-deploy",
        "nats-ord-scale", "nats-syd-scale", "nats-cdg-scale"])


def test_a_cluster_under_mocks_leaves_the_test_process_its_sigint(mock_program, tmp_path):
    """Run by the engine, a program gets a quiet end on the engine's SIGINT (no KeyboardInterrupt
    traceback over the engine's own lines); a test process keeps Python's handler."""
    mock_program.run(lambda: build(tmp_path))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_every_flyctl_command_line(mock_program, tmp_path):
    mock_program.run(lambda: build(tmp_path, regions=["ord", "syd=3"], publicIpv4="dedicated"))
    inputs = mock_program.commands()
    app = inputs["nats-fly-app"]
    assert app["create"] == ("flyctl status --app my-nats --json >/dev/null 2>&1 || "
                             "flyctl apps create my-nats --org personal")
    assert "flyctl apps destroy my-nats --yes" in app["delete"] and "'Could not find App'" in app["delete"]
    assert app["triggers"] == ["my-nats", "personal"]
    assert inputs["nats-fly-ips"]["create"].splitlines() == [
        "set -e",
        "ips=$(flyctl ips list --app my-nats --json)",
        "printf '%s' \"$ips\" | grep -q '\"Type\": *\"v6\"' || flyctl ips allocate-v6 --app my-nats",
        "printf '%s' \"$ips\" | grep -q '\"Type\": *\"v4\"' || flyctl ips allocate-v4 --app my-nats --yes",
    ]
    assert inputs["nats-fly-secrets"]["create"] == "flyctl secrets import --stage --app my-nats"
    deploy = inputs["nats-image-deploy"]
    assert shlex.split(deploy["create"])[1:] == ["-m", "nats_fly", "fly", "deploy", "--app", "my-nats"]
    assert "dir" not in deploy  # the command runs where Pulumi runs it; the context comes on stdin
    assert sorted(json.loads(deploy["stdin"])["files"]) == ["Dockerfile", "entrypoint.sh", "fly.toml", "nats.conf"]
    assert len(deploy["environment"]["NATS_FLY_IMAGE_SHA"]) == 64
    region = ["-m", "nats_fly", "fly", "region", "--app", "my-nats", "--region"]
    assert shlex.split(inputs["nats-ord-scale"]["create"])[1:] == [*region, "ord", "--count", "1"]
    assert shlex.split(inputs["nats-syd-scale"]["create"])[1:] == [*region, "syd", "--count", "3"]
    assert shlex.split(inputs["nats-syd-scale"]["delete"])[1:] == [*region, "syd", "--count", "0"]
    assert not list(tmp_path.iterdir())  # the program writes nothing: the deploy writes its own context
    for name, res in inputs.items():  # the token stays ambient: no Command carries it
        assert "FLY_API_TOKEN" not in str(res.get("environment", {})), name


def test_secrets_reach_fly_only_on_stdin(mock_program, tmp_path):
    mock_program.run(lambda: build(tmp_path))
    inputs = mock_program.commands()
    stdin = inputs["nats-fly-secrets"]["stdin"]
    given = {name: base64.b64decode(value).decode()
             for name, value in (line.split("_B64=", 1) for line in stdin.splitlines())}
    assert given["NATS_SYS_PASSWORD"] == "s" * 16 and given["NATS_PASSWORD_APP"] == "p" * 10
    assert given["NATS_TLS_KEY"].startswith("-----BEGIN PRIVATE KEY-----")
    assert "s" * 16 not in stdin  # base64 only: flyctl's import parser has nothing to cut
    assert inputs["nats-fly-secrets"]["logging"] == "none"
    assert "stdin" in mock_program.secret_paths("nats-fly-secrets")
    assert "environment" in mock_program.secret_paths("nats-image-deploy")
    for name, res in inputs.items():
        for field in ("create", "delete", "update"):
            assert "s" * 16 not in (res.get(field) or ""), name
    assert "s" * 16 not in inputs["nats-image-deploy"]["stdin"] and "p" * 10 not in inputs["nats-image-deploy"]["stdin"]


def test_local_platform_runs_processes_through_commands(mock_program, tmp_path):
    cluster = mock_program.run(lambda: build(tmp_path, platform="local", auth="none", userPasswords=None,
                                             users=None, regions=["ord", "syd=2"]))
    inputs = mock_program.commands()
    assert sorted(inputs) == ["nats-ord-0", "nats-ports", "nats-syd-0", "nats-syd-1"]
    assert shlex.split(inputs["nats-ports"]["create"])[1:] == ["-m", "nats_fly", "local", "ports", "--servers",
                                                               "ord-0,syd-0,syd-1"]
    create = shlex.split(inputs["nats-syd-1"]["create"])
    assert create[1:] == ["-m", "nats_fly", "local", "ensure", "--name", "syd-1", "--state-dir",
                          str(tmp_path / "local"), "--client-port", "20012", "--http-port", "20015",
                          "--nats-version", DEFAULT_NATS_VERSION]
    conf = json.loads(inputs["nats-syd-1"]["stdin"])  # the mocks' ports: 20000 + 6 a server
    assert conf["cluster"]["routes"] == ["nats-route://route:{{secret:NATS_ROUTE_PASSWORD}}@127.0.0.1:20001",
                                         "nats-route://route:{{secret:NATS_ROUTE_PASSWORD}}@127.0.0.1:20007"]
    assert conf["cluster"]["authorization"] == {"user": "route", "password": {"$var": "NATS_ROUTE_PASSWORD"}}
    assert conf["cluster"]["no_advertise"] is False  # a client given one URL learns the others
    # Never started: a fresh repair token each run, so the Command's value differs from any stored one.
    tokens = [inputs[f"nats-{n}"]["environment"]["NATS_FLY_GENERATION"] for n in ("ord-0", "syd-0", "syd-1")]
    assert len(set(tokens)) == 3 and all(len(token) == 16 for token in tokens)
    assert "stdin" not in mock_program.secret_paths("nats-syd-1")  # no secret in it, so the state may show it
    assert "flyctl" not in str(inputs)
    assert not list(tmp_path.iterdir())  # preview writes nothing: each server's command writes its conf
    assert mock_program.value(cluster.client_url) == "nats://127.0.0.1:20000"  # one URL, whatever the count
    assert mock_program.value(cluster.client_urls) == {"ord": "nats://127.0.0.1:20000", "syd": "nats://127.0.0.1:20006"}
    assert mock_program.value(cluster.server_urls) == {
        "ord": ["nats://127.0.0.1:20000"], "syd": ["nats://127.0.0.1:20006", "nats://127.0.0.1:20012"]}
    assert mock_program.value(cluster.tls_url) == ""


def test_local_server_tls_and_jetstream_reach_localrun_as_the_conf_names_them(mock_program, tmp_path):
    """With serverTls the local servers require TLS: their URLs say tls://, the conf names the files by
    variable, the PEMs travel only in the secret environment, and verify trusts the served certificate."""
    _, cert, key = ca_signed_pair(tmp_path / "pki")
    work = tmp_path / "work"
    cluster = mock_program.run(lambda: build(work, platform="local", auth="none", userPasswords=None, users=None,
                                             regions=["ord=2", "syd"], jetstream=True, verify=True, serverTls=True,
                                             tlsCert=pulumi.Output.secret(cert), tlsKey=pulumi.Output.secret(key)))
    inputs = mock_program.commands()
    conf = json.loads(inputs["nats-ord-1"]["stdin"])
    assert conf["tls"] == {"cert_file": {"$var": "NATS_TLS_CERT_FILE"}, "key_file": {"$var": "NATS_TLS_KEY_FILE"},
                           "handshake_first": "auto"}
    assert "allow_non_tls" not in conf  # no proxy terminates TLS in front of a local server
    assert conf["jetstream"]["store_dir"] == "ord-1"  # inside the state folder, nats-server's working directory
    env = inputs["nats-ord-1"]["environment"]
    assert env["NATS_TLS_CERT"] == cert and env["NATS_TLS_KEY"] == key
    assert "environment" in mock_program.secret_paths("nats-ord-1")
    assert "PRIVATE KEY" not in inputs["nats-ord-1"]["stdin"] + inputs["nats-ord-1"]["create"]
    assert mock_program.value(cluster.client_url) == "tls://127.0.0.1:20000"
    assert mock_program.value(cluster.tls_url) == "tls://127.0.0.1:20000"
    assert mock_program.value(cluster.server_urls)["ord"] == ["tls://127.0.0.1:20000", "tls://127.0.0.1:20006"]
    verify = shlex.split(inputs["nats-verify"]["create"])
    assert verify[verify.index("--ca") + 1] == str(work / "local" / "ord-0" / "cert.pem")
    assert not work.exists()  # the program writes nothing: localrun writes the files
    assert [verify[i + 1] for i, a in enumerate(verify) if a == "--url"] == [
        "ord=tls://127.0.0.1:20000", "syd=tls://127.0.0.1:20012"]
    assert "tls=<an ssl.SSLContext that trusts your CA>" in mock_program.value(cluster.how_to_connect)


def test_two_clusters_may_not_deploy_one_fly_app(mock_program, tmp_path):
    def program():
        for name in ("blue", "green"):
            NatsCluster(name, {"app": "shared-app", "regions": ["ord"], "auth": "none",
                               "sysPassword": pulumi.Output.secret("s" * 16)})
    with pytest.raises(SettingsError, match="nats-fly:app: 'shared-app' is the Fly app of cluster blue"):
        mock_program.run(program)


def test_local_fixed_ports_of_two_clusters_may_not_overlap(mock_program, tmp_path):
    def program():
        for name in ("east", "west"):
            NatsCluster(name, {"app": name, "platform": "local", "regions": ["ord"], "auth": "none",
                               "localBasePort": 24000, "sysPassword": pulumi.Output.secret("s" * 16),
                               "workDir": str(tmp_path / name)})
    with pytest.raises(SettingsError, match="nats-fly:localBasePort: 24000 gives west ports that cluster east"):
        mock_program.run(program)


def test_bad_input_fails_before_any_resource(mock_program, tmp_path):
    with pytest.raises(SettingsError, match="nats-fly:regions: 'atlantis' is not a Fly region"):
        mock_program.run(lambda: build(tmp_path, regions=["ord", "atlantis"]))
    assert not mock_program.commands()
    assert not list(tmp_path.iterdir())


def test_jetstream_scale_down_url_prefers_verify_urls_with_the_region_itself_last(mock_program, tmp_path):
    mock_program.run(lambda: build(tmp_path, jetstream=True, volumeSize=1, regions=["ord", "syd=2"],
                                   verifyUrls=["ord=nats://127.0.0.1:1001", "syd=nats://127.0.0.1:1002"]))
    env = mock_program.commands()["nats-ord-scale"]["environment"]
    assert env["NATS_FLY_URL"] == "nats://127.0.0.1:1002,nats://127.0.0.1:1001"


def test_plain_regions_have_no_scale_down_environment(mock_program, tmp_path):
    mock_program.run(lambda: build(tmp_path))
    assert not mock_program.commands()["nats-syd-scale"].get("environment")


def test_verify_runs_after_every_change_with_the_password_in_a_secret_environment(mock_program, tmp_path):
    mock_program.run(lambda: build(tmp_path, platform="local", auth="none", userPasswords=None, users=None,
                                   regions=["ord", "syd=2"], verify=True, topology="supercluster"))
    command = mock_program.commands()["nats-verify"]
    argv = shlex.split(command["create"])
    assert argv[1:4] == ["-m", "nats_fly", "verify"]
    urls = [argv[i + 1] for i, a in enumerate(argv) if a == "--url"]
    assert [u.split("=")[0] for u in urls] == ["ord", "syd"]
    assert argv[argv.index("--expect") + 1] == "ord=1,syd=2"
    assert argv[argv.index("--topology") + 1] == "supercluster"
    assert "s" * 16 not in command["create"]
    assert command["environment"]["NATS_SYS_PASSWORD"] == "s" * 16
    assert "environment" in mock_program.secret_paths("nats-verify")


def test_jetstream_regions_converge_volumes_then_count(mock_program, tmp_path):
    mock_program.run(lambda: build(tmp_path, jetstream=True, machinesPerRegion=3, volumeSize=10))
    command = mock_program.commands()["nats-syd-scale"]
    create, delete = shlex.split(command["create"]), shlex.split(command["delete"])
    assert create[1:] == ["-m", "nats_fly", "fly", "region", "--app", "my-nats", "--region", "syd",
                          "--count", "3", "--volume", "nats_data", "--size", "10"]
    assert delete[delete.index("--count") + 1] == "0"
    # Shrinking removes the surplus servers from JetStream: the sys password and URL reach flyops
    # only through the Command's secret environment.
    assert command["environment"] == {"NATS_SYS_PASSWORD": "s" * 16, "NATS_FLY_URL": "nats://my-nats.fly.dev:10000"}
    assert "environment" in mock_program.secret_paths("nats-syd-scale")
    assert "s" * 16 not in command["create"] + command["delete"]
    toml = json.loads(mock_program.commands()["nats-image-deploy"]["stdin"])["files"]["fly.toml"]
    assert 'kill_signal = "SIGINT"' in toml  # `machine stop` sends it; the entrypoint makes it lame duck
    assert 'source = "nats_data"' in toml and 'destination = "/data"' in toml


MACHINE = '{"id": "%s", "state": "%s", "region": "ord"}'


def scripted_flyctl(tmp_path, listing: str, exit_code: int = 0, deploy_exit: int = 0) -> tuple[dict, Path]:
    """A flyctl that answers `machine list` with `listing` (and `exit_code`), logs every call, and
    exits `deploy_exit` from `deploy`."""
    fake = tmp_path / "bin" / "flyctl"
    fake.parent.mkdir(exist_ok=True)
    calls = tmp_path / "calls"
    fake.write_text("#!/bin/sh\necho \"$*\" >> %s\n"
                    "if [ \"$1 $2\" = \"machine list\" ]; then printf '%%s\\n' '%s'; exit %d; fi\n"
                    "if [ \"$1\" = deploy ]; then exit %d; fi\n"
                    % (calls, listing.replace("'", "'\\''"), exit_code, deploy_exit))
    fake.chmod(0o755)
    return {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}"}, calls


def run_deploy(env: dict, **changes) -> subprocess.CompletedProcess:
    from nats_fly.config.settings import load
    from nats_fly.render import buildctx
    s = load({"app": "my-nats", "regions": ["ord"], **changes})
    return subprocess.run(["/bin/sh", "-c", FlyDeploy(app="my-nats").command(sys.executable)], capture_output=True,
                          text=True, env=env, input=buildctx.to_stdin(buildctx.build_context(s)))


@pytest.mark.parametrize("listing,exit_code,expected", [
    ("[]", 0, "immediate"),  # a first deploy: no Machine to roll, and a lone one can't pass /healthz
    ("null", 0, "immediate"),
    ("[%s]" % (MACHINE % ("4e4ac60f4dd674", "started")), 0, "immediate"),  # a first deploy resumed
    ("[%s, %s]" % (MACHINE % ("4e4ac60f4dd674", "started"), MACHINE % ("e2865013c5e686", "destroyed")), 0,
     "immediate"),
    ("[\n  %s,\n  %s\n]" % (MACHINE % ("4e4ac60f4dd674", "started"), MACHINE % ("e2865013c5e686", "stopped")), 0,
     "rolling"),
    ("Error: failed to list machines", 1, None),  # never guess: no deploy at all
    ("No machines are available on this app", 0, None),  # not JSON
    ('{"id": "4e4ac60f4dd674"}', 0, None),  # not a list
    ("", 0, None),  # nothing at all
])
def test_deploy_picks_its_strategy_from_the_machines_the_app_has(tmp_path, listing, exit_code, expected):
    env, calls = scripted_flyctl(tmp_path, listing, exit_code)
    proc = run_deploy(env)
    lines = calls.read_text().splitlines()
    assert lines[0] == "machine list --app my-nats --json"
    if expected is None:
        assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    else:
        assert proc.returncode == 0 and lines[1] == (
            "deploy . --config fly.toml --remote-only --ha=false --wait-timeout 5m "
            f"--strategy {expected} --app my-nats --yes"), (lines, proc.stderr)
        assert lines[2:] == ["machine list --app my-nats --json"]  # which Machines the deploy left stopped
        if "stopped" in listing:
            assert "Machine e2865013c5e686 (ord) is stopped and stays so after the deploy" in proc.stderr


def test_deploy_passes_on_the_exit_code_of_flyctl_deploy_and_names_a_missing_flyctl(tmp_path):
    env, _ = scripted_flyctl(tmp_path, "[]", deploy_exit=7)
    assert run_deploy(env).returncode == 7
    missing = run_deploy({**os.environ, "PATH": "/nonexistent"})
    assert missing.returncode == 1 and "nats-fly: flyctl is not on PATH" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_deploy_leaves_no_context_behind(tmp_path):
    env, _ = scripted_flyctl(tmp_path, "[]")
    before = set(Path(tempfile.gettempdir()).glob("nats-fly-deploy-my-nats-*"))
    assert run_deploy(env).returncode == 0
    assert set(Path(tempfile.gettempdir()).glob("nats-fly-deploy-my-nats-*")) == before


def test_command_paths_are_relative_to_the_project_when_under_it(tmp_path, monkeypatch):
    """A Command whose text changes runs again: paths under the project are written relative to it,
    so another checkout or a rebuilt venv keeps every command the same."""
    project = tmp_path / "project"
    (project / ".venv" / "bin").mkdir(parents=True)
    monkeypatch.chdir(project)
    assert spec.portable(project / ".venv" / "bin" / "python") == ".venv/bin/python"
    assert spec.portable(str(project / ".nats-fly" / "prod" / "build")) == ".nats-fly/prod/build"
    assert spec.portable(tmp_path / "project2" / "x") == str(tmp_path / "project2" / "x")  # a sibling
    assert spec.portable("/usr/bin/python3") == "/usr/bin/python3"




def test_without_openssl_the_marker_certificate_says_what_is_missing(tmp_path):
    from nats_fly.contract import flyctl
    empty = tmp_path / "bin"
    empty.mkdir()
    made = subprocess.run(["/bin/sh", "-c", flyctl.tls_marker_cert("my-nats")], capture_output=True, text=True,
                          env={"PATH": str(empty)})
    assert made.returncode == 127 and "nats-fly: openssl is not on PATH" in made.stderr, made.stderr
    real = subprocess.run(["/bin/sh", "-c", flyctl.tls_marker_cert("my-nats")], capture_output=True, text=True)
    assert real.returncode == 0 and "-----BEGIN CERTIFICATE-----" in real.stdout and "PRIVATE KEY" in real.stdout
