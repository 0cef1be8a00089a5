"""flyctl on the stand-in: Fly's semantics, output, JSON shapes, exit codes and error
strings (reference/fly.md §1 and §6), the invocation log, fault injection, latency."""
from __future__ import annotations

import json
import shutil
import time

import pytest

from nats_fly_testkit import fly as fh


def run(standin, *argv, **kw):
    return standin.flyctl(*argv, **kw)


@pytest.fixture(scope="module")
def example(standin, tmp_path_factory):
    """fly-apps/nats-cluster's config deployed with flyctl alone (one Machine in ord), so these
    tests of the stand-in do not depend on the components (whose fly.toml is changing)."""
    app = "cli-example"
    context = fh.render_example(tmp_path_factory.mktemp("example") / "ctx", app, "ord")
    assert run(standin, "apps", "create", app, "--org", "personal").returncode == 0
    proc = run(standin, "deploy", ".", "--config", "fly.toml", "--remote-only", "--ha=false", "--yes",
               "--app", app, cwd=str(context))
    assert proc.returncode == 0, proc.stderr
    return app


def test_token_is_required(standin):
    env = {k: v for k, v in standin.env().items() if k not in ("FLY_API_TOKEN", "FLY_ACCESS_TOKEN")}
    proc = run(standin, "status", "--app", "x", "--json", env=env)
    assert proc.returncode == 1
    assert proc.stderr.startswith("Error: No access token available")
    assert run(standin, "status", "--app", "x", env={**env, "FLY_ACCESS_TOKEN": "t"}).returncode == 1  # now: no app


def test_apps_create_status_and_global_names(standin):
    proc = run(standin, "status", "--app", "cli-app", "--json")
    assert (proc.returncode, proc.stderr) == (1, 'Error: Could not find App "cli-app"\n')
    assert run(standin, "apps", "create", "cli-app", "--org", "personal").stdout == "New app created: cli-app\n"
    again = run(standin, "apps", "create", "cli-app", "--org", "personal")
    assert (again.returncode, again.stderr) == (1, "Error: Validation failed: Name has already been taken\n")
    standin.reserve_name("someone-elses")
    assert "Name has already been taken" in run(standin, "apps", "create", "someone-elses", "--org", "personal").stderr
    status = json.loads(shutil.which("fly", path=str(standin.bin_dir)) and
                        run(standin, "status", "--app", "cli-app", "--json").stdout)
    assert status["Name"] == "cli-app" and status["Deployed"] is False and status["Status"] == "pending"
    assert set(status) >= {"ID", "Name", "Deployed", "Status", "Hostname", "Version", "AppURL",
                           "Organization", "PlatformVersion", "Machines"}
    assert run(standin, "status", "--app", "cli-app", "--nope").stderr == "Error: unknown flag: --nope\n"


def test_fly_is_an_alias(standin):
    import subprocess
    proc = subprocess.run([str(standin.bin_dir / "fly"), "status", "--app", "nobody"], env=standin.env(),
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert proc.stderr == 'Error: Could not find App "nobody"\n'


def test_regions_add_fails_and_list_works(standin):
    run(standin, "apps", "create", "cli-regions", "--org", "personal")
    add = run(standin, "regions", "add", "syd", "--app", "cli-regions")
    assert add.returncode == 1 and "This command is no longer supported; use fly scale count" in add.stderr
    listed = json.loads(run(standin, "regions", "list", "--app", "cli-regions", "--json").stdout)
    assert listed == {"ProcessGroupRegions": []}


def test_ips(standin):
    run(standin, "apps", "create", "cli-ips", "--org", "personal")
    assert run(standin, "ips", "allocate-v6", "--app", "cli-ips").returncode == 0
    assert run(standin, "ips", "allocate-v4", "--shared", "--app", "cli-ips").returncode == 0
    dedicated = run(standin, "ips", "allocate-v4", "--app", "cli-ips")
    assert dedicated.stderr == "Error: yes flag must be specified when not running interactively\n"
    ips = json.loads(run(standin, "ips", "list", "--app", "cli-ips", "--json").stdout)
    assert [ip["Type"] for ip in ips] == ["v6", "shared_v4"]
    assert all(set(ip) == {"ID", "Address", "Type", "Region", "CreatedAt", "ServiceName", "Network"} for ip in ips)
    assert ips[1]["ID"] == "" and ips[1]["Region"] == ""
    assert run(standin, "ips", "allocate-v4", "--app", "cli-ips", "--yes").returncode == 0
    assert len(json.loads(run(standin, "ips", "list", "--app", "cli-ips", "--json").stdout)) == 3


def test_volumes(standin):
    run(standin, "apps", "create", "cli-vols", "--org", "personal")
    first = run(standin, "volumes", "create", "data", "--region", "ord", "--size", "2", "--app", "cli-vols")
    assert first.stderr == "Error: yes flag must be specified when not running interactively\n"
    vol = json.loads(run(standin, "volumes", "create", "data", "--region", "ord", "--size", "2",
                         "--app", "cli-vols", "--yes", "--json").stdout)
    assert vol["id"].startswith("vol_") and vol["size_gb"] == 2 and vol["attached_machine_id"] is None
    run(standin, "volumes", "create", "data", "--region", "ord", "--app", "cli-vols", "--yes")  # names repeat
    listed = json.loads(run(standin, "volumes", "list", "--app", "cli-vols", "--json").stdout)
    assert [v["name"] for v in listed] == ["data", "data"]
    gone = run(standin, "volumes", "destroy", vol["id"], "--app", "cli-vols", "--yes")
    assert gone.stdout == f"Destroyed volume ID: {vol['id']} name: data\n"


def test_secrets_import_stage_and_the_log_keeps_argv_but_never_stdin(standin):
    run(standin, "apps", "create", "cli-secrets", "--org", "personal")
    text = 'A=plain\n# comment\nB="quoted#kept"\nC=cut#here\nD="""line1\nline2"""\n'
    staged = run(standin, "secrets", "import", "--stage", "--app", "cli-secrets", input=text)
    assert staged.stdout.startswith("Secrets have been staged, but not set on VMs.")
    names = [s["Name"] for s in json.loads(run(standin, "secrets", "list", "--app", "cli-secrets", "--json").stdout)]
    assert names == ["A", "B", "C", "D"]
    assert run(standin, "secrets", "set", "--stage", "--app", "cli-secrets", "E=topsecret-e").returncode == 0
    assert run(standin, "secrets", "unset", "--stage", "--app", "cli-secrets", "NOPE").returncode == 0
    log = (standin.root / "flyctl.log").read_text()
    # Values given on stdin never reach the log; one given on a command line does, as it would reach
    # a process list, so the engine tests' secret checks over this log catch a value put on argv.
    assert "quoted#kept" not in log and "line1" not in log and "E=topsecret-e" in log
    from nats_fly_testkit.standin.cmd_apps import parse_dotenv
    assert parse_dotenv(text) == {"A": "plain", "B": "quoted#kept", "C": "cut", "D": "line1\nline2"}


def test_invocation_log(standin):
    entries = standin.flyctl_log()
    assert entries and all({"argv", "exit", "duration_s", "start", "mutates", "command"} <= set(e) for e in entries)
    creates = [e for e in entries if e["command"] == "apps create"]
    assert creates and all(e["mutates"] is True for e in creates)
    assert all(e["mutates"] is False for e in entries if e["command"] == "status")


def test_scale_count_rules_and_capacity_fault(standin, example):
    no_release = run(standin, "scale", "count", "2", "--region", "ord", "--app", "cli-app", "--yes")
    assert "this app has no complete releases. Run `fly deploy` to create one" in no_release.stderr
    bad = run(standin, "scale", "count", "ams=2,syd=1", "--app", example, "--yes")
    assert bad.stderr == "Error: 'ams=2,syd=1' is not a valid process=count option\n"
    count = lambda: len(standin.machines(example))  # noqa: E731
    before = count()
    no_yes = run(standin, "scale", "count", "2", "--region", "ord", "--app", example)
    assert no_yes.stderr.endswith("Error: --yes flag must be specified when not running interactively\n")
    assert "+1 machines for group 'app' on region 'ord'" in no_yes.stdout and count() == before
    same = run(standin, "scale", "count", "1", "--region", "ord", "--app", example, "--yes")
    assert same.stdout == "App already scaled to desired state. No need for changes\n"
    standin.fail_next("scale count", region="ord")
    full = run(standin, "scale", "count", "2", "--region", "ord", "--app", example, "--yes")
    assert full.returncode == 1 and "insufficient resources available to fulfill request" in full.stderr
    assert count() == before


def test_deploy_refuses_a_nats_tag_that_does_not_exist(standin, tmp_path):
    run(standin, "apps", "create", "cli-old", "--org", "personal")
    context = fh.render_example(tmp_path / "ctx", "cli-old", "ord")
    dockerfile = context / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text().replace("nats:2.12.8-alpine", "nats:2.99.0-alpine"))
    proc = run(standin, "deploy", ".", "--config", "fly.toml", "--remote-only", "--ha=false", "--yes",
               "--app", "cli-old", cwd=str(context))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert ("failed to fetch an image or build from source: failed to solve: nats:2.99.0-alpine: failed to "
            "resolve source metadata for docker.io/library/nats:2.99.0-alpine: docker.io/library/nats:2.99.0-alpine: "
            "not found") in proc.stderr


def test_machine_list_is_snake_case(standin, example):
    machines = fh.machine_list(standin, example)
    assert machines and {"id", "name", "state", "region", "instance_id", "private_ip", "created_at",
                         "updated_at", "config", "image_ref", "checks", "host_status"} <= set(machines[0])
    assert machines[0]["config"]["metadata"]["fly_platform_version"] == "v2"
    assert machines[0]["config"]["stop_config"] == {"timeout": "5s", "signal": "SIGINT"}  # fly.toml defaults


def test_artificial_latency(standin):
    standin.set_latency(300)
    try:
        t0 = time.monotonic()
        run(standin, "status", "--app", "cli-app")
        assert time.monotonic() - t0 >= 0.3
    finally:
        standin.set_latency(0)


@pytest.mark.parametrize("argv", [["apps", "destroy", "cli-app"], ["volumes", "destroy", "vol_x", "--app", "cli-app"]])
def test_yes_is_required_without_a_terminal(standin, argv):
    proc = run(standin, *argv)
    assert proc.stderr == "Error: yes flag must be specified when not running interactively\n"
