"""The stand-in is as strict as real Fly where a kind stand-in would hide a fault (issue 10):
each test shows a refusal or behaviour with Fly's exact words, so the stand-in cannot drift
back to being kind. Sources are named in tests/kit/standin/README.md and beside each rule.

Apps here are fly-apps/nats-cluster's example config deployed with flyctl alone, so they do
not depend on the components.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import json
import re
import time
import uuid

import pytest

from nats_fly_testkit import fly as fh
from nats_fly_testkit.standin import dotenv
from nats_fly_testkit.standin.api import StandInError
from nats_fly_testkit.standin.cmd_apps import parse_dotenv
from nats_fly_testkit.standin.cli import FlyError

MOUNTS = '\n[mounts]\n  source = "data"\n  destination = "/data"\n'
ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
HOLD = 8
"""Seconds a background command holds its lease (the stand-in's create delay): the next command,
started once the lease is seen, must meet it still held, even when a busy host starts it slowly."""


def run(standin, *argv, **kw):
    return standin.flyctl(*argv, **kw)


def owner_of(token: str) -> str:
    """The lease owner the stand-in names for a token (as Fly: <uuid>@tokens.fly.io)."""
    return f"{uuid.UUID(hashlib.sha256(token.encode()).hexdigest()[:32])}@tokens.fly.io"


def wait_leased(standin, machine_id: str, timeout: float = 60) -> None:
    """Until someone holds a lease on the Machine (the command started in the background got it)."""
    deadline = time.monotonic() + timeout
    while machine_id not in standin.leases():
        assert time.monotonic() < deadline, "the lease was never taken"
        time.sleep(0.02)


@pytest.fixture
def settings(standin):
    """Change daemon settings for one test; they go back to what they were afterwards."""
    before = standin.settings()
    yield standin.settings
    standin.settings(**{k: before[k] for k in ("accept_sigusr2", "create_delay_s", "lease_wait_s",
                                                "zones", "zones_default")})


class Example:
    """One app of the example's config, deployed and changed through flyctl."""

    def __init__(self, standin, root, app: str, region: str = "ord"):
        self.standin, self.app = standin, app
        self.context = fh.render_example(root / app, app, region)
        self.toml = self.context / "fly.toml"
        self.base = self.toml.read_text()
        assert run(standin, "apps", "create", app, "--org", "personal").returncode == 0

    def write(self, kill_signal: str | None = None, mounts: bool = False) -> None:
        text = self.base
        if kill_signal:  # a top-level key goes before the first table
            text = text.replace('primary_region = ', f'kill_signal = "{kill_signal}"\nprimary_region = ', 1)
        self.toml.write_text(text + (MOUNTS if mounts else ""))

    def deploy(self, *extra, **kw):
        self.write(**kw)
        return run(self.standin, "deploy", ".", "--config", "fly.toml", "--remote-only", "--ha=false", "--yes",
                   "--app", self.app, *extra, cwd=str(self.context))

    def machines(self) -> list[dict]:
        return sorted(self.standin.machines(self.app), key=lambda m: m["id"])

    def fly(self, *argv, **kw):
        return run(self.standin, *argv, "--app", self.app, **kw)


@pytest.fixture
def example(standin, tmp_path):
    made = []

    def make(app: str, region: str = "ord") -> Example:
        made.append(Example(standin, tmp_path, app, region))
        return made[-1]

    yield make
    for ex in made:
        run(standin, "apps", "destroy", ex.app, "--yes")


# --- 1. kill_signal SIGUSR2 (flyctl#4721) ---------------------------------------------------------

REFUSED = "invalid stop_config.signal: SIGUSR2 is not a supported signal"


def test_sigusr2_is_refused_by_the_machines_api_on_create_and_update(standin, example, settings):
    ex = example("strict-usr2")
    first = ex.deploy(kill_signal="SIGUSR2")
    assert first.returncode == 1
    assert first.stderr.endswith(f"Error: error creating a new machine: failed to launch VM: {REFUSED}\n")
    assert ex.machines() == []
    # Accepted when the daemon is told to (a Fly where PR #5210's fix had landed) ...
    settings(accept_sigusr2=True)
    assert ex.deploy(kill_signal="SIGUSR2").returncode == 0
    [m] = ex.machines()
    # ... and refused again for the Machines that config now makes: `scale count` and an update.
    settings(accept_sigusr2=False)
    scale = ex.fly("scale", "count", "2", "--region", "ord", "--yes")
    assert scale.returncode == 1 and scale.stderr.endswith(f"Error: failed to launch VM: {REFUSED}\n")
    assert len(ex.machines()) == 1
    update = ex.deploy(kill_signal="SIGUSR2")
    assert update.returncode == 1 and update.stderr.endswith(f"Error: failed to update VM {m['id']}: {REFUSED}\n")
    # SIGINT, Fly's default, always works.
    assert ex.deploy(kill_signal="SIGINT").returncode == 0
    assert [x["state"] for x in ex.machines()] == ["started"]


# --- 2. leases ------------------------------------------------------------------------------------

def test_concurrent_scale_counts_in_other_regions_wait_for_each_others_leases(standin, example, settings):
    ex = example("strict-lease")
    assert ex.deploy().returncode == 0
    [m] = ex.machines()
    settings(create_delay_s=HOLD)
    tokens = [standin.make_token("user"), standin.make_token("user")]
    env = [standin.env(FLY_API_TOKEN=t) for t in tokens]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        t0 = time.monotonic()
        first = pool.submit(ex.fly, "scale", "count", "1", "--region", "syd", "--yes", env=env[0])
        wait_leased(standin, m["id"])  # the first holds the lease on the ord Machine while it creates (3 s)
        second = pool.submit(ex.fly, "scale", "count", "1", "--region", "cdg", "--yes", env=env[1])
        a, b = first.result(), second.result()
        done = time.monotonic() - t0
    assert a.returncode == 0 and b.returncode == 0, (a.stderr, b.stderr)
    # `scale count --region cdg` leased the ord Machine too, so it waited for the syd one.
    assert f"Waiting on lease for machine {m['id']}...\n" in b.stdout
    assert f"Waiting on lease for machine" not in a.stdout
    assert done >= 2 * HOLD  # one create after the other, not side by side
    assert sorted(x["region"] for x in ex.machines()) == ["cdg", "ord", "syd"]
    assert standin.leases() == {}  # released at the end of each command


def test_a_lease_held_past_the_wait_fails_with_the_apis_words(standin, example, settings):
    ex = example("strict-lease-fail")
    assert ex.deploy().returncode == 0
    [m] = ex.machines()
    assert settings()["lease_wait_s"] == 60.0  # fly-go flaps/retry.go: one minute
    settings(create_delay_s=HOLD, lease_wait_s=1.5)  # shortened so the test need not wait a minute
    holder = standin.make_token("user")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        first = pool.submit(ex.fly, "scale", "count", "1", "--region", "syd", "--yes",
                            env=standin.env(FLY_API_TOKEN=holder))
        wait_leased(standin, m["id"])
        second = ex.fly("scale", "count", "1", "--region", "cdg", "--yes")
        assert first.result().returncode == 0
    assert second.returncode == 1
    assert re.fullmatch(
        rf"Error: failed to obtain lease: failed to get lease on VM {m['id']}: machine ID {m['id']} lease currently "
        rf"held by {re.escape(owner_of(holder))}, expires at {ISO}\n", second.stderr.splitlines(keepends=True)[-1])
    assert sorted(x["region"] for x in ex.machines()) == ["ord", "syd"]  # the second changed nothing


def test_machine_stop_waits_for_the_lease_a_running_scale_holds(standin, example, settings):
    ex = example("strict-lease-stop")
    assert ex.deploy().returncode == 0
    [m] = ex.machines()
    settings(create_delay_s=HOLD)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        scale = pool.submit(ex.fly, "scale", "count", "1", "--region", "syd", "--yes")
        wait_leased(standin, m["id"])
        t0 = time.monotonic()
        stop = ex.fly("machine", "stop", m["id"])
        waited = time.monotonic() - t0
        assert scale.result().returncode == 0
    assert stop.returncode == 0, stop.stderr
    assert stop.stdout.startswith(f"Waiting on lease for machine {m['id']}...\nSending kill signal to machine")
    assert waited >= 2
    assert {x["id"]: x["state"] for x in ex.machines()}[m["id"]] == "stopped"


def test_deploy_leases_the_machines_it_updates(standin, example, settings):
    ex = example("strict-lease-deploy")
    assert ex.deploy().returncode == 0
    [m] = ex.machines()
    settings(create_delay_s=2 * HOLD, lease_wait_s=1.5)  # the deploy builds first, then waits 1.5 s
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        scale = pool.submit(ex.fly, "scale", "count", "1", "--region", "syd", "--yes")
        wait_leased(standin, m["id"])
        deploy = ex.deploy()
        assert scale.result().returncode == 0
    assert deploy.returncode == 1
    assert f"WARN failed to acquire lease: failed to get lease on VM {m['id']}: machine ID {m['id']} lease " \
           f"currently held by {owner_of('stand-in-token')}, expires at " in deploy.stderr
    assert deploy.stderr.endswith("Error: error acquiring leases on all machines\n")


# --- 3. JetStream switched on and off on a live app ------------------------------------------------

def test_mounts_added_to_machines_without_volumes_need_volumes_first(standin, example):
    ex = example("strict-js-on")
    assert ex.deploy().returncode == 0
    [m] = ex.machines()
    releases = json.loads(ex.fly("status", "--json").stdout)["Version"]
    on = ex.deploy(mounts=True)
    assert on.returncode == 1
    assert on.stderr.endswith(
        "Error: Process group 'app' needs volumes with name 'data' to fulfill mounts defined in fly.toml; "
        "Run `fly volume create data -r REGION -n COUNT` for the following regions and counts: ord=1\n")
    assert ex.machines()[0]["id"] == m["id"] and json.loads(ex.fly("status", "--json").stdout)["Version"] == releases
    # With the volume there, the Machine is replaced by one that has it (a volume cannot be attached).
    assert ex.fly("volumes", "create", "data", "--region", "ord", "--yes").returncode == 0
    assert ex.deploy(mounts=True).returncode == 0
    [new] = fh.machine_list(standin, ex.app)
    assert new["id"] != m["id"] and new["config"]["mounts"][0]["name"] == "data"


def test_mounts_removed_from_machines_with_volumes_cannot_be_confirmed_without_a_terminal(standin, example):
    ex = example("strict-js-off")
    assert ex.deploy(mounts=True).returncode == 0
    [m] = ex.machines()
    off = ex.deploy(mounts=False)  # --yes is given (Example.deploy), and does not help
    assert off.returncode == 1
    assert off.stderr.endswith(
        f"Warning! machine {m['id']} [app] has a volume mounted but app config does not specify a volume.\n"
        "This usually indicates a misconfiguration.\n"
        "Error: yes flag must be specified when not running interactively\n")
    assert ex.machines()[0]["id"] == m["id"]


# --- 4. volumes and zones -------------------------------------------------------------------------

def test_volumes_create_wants_a_unique_zone_by_default(standin, example, settings):
    ex = example("strict-zones")
    settings(zones={"ord": 2})
    made = [json.loads(ex.fly("volumes", "create", "data", "--region", "ord", "--yes", "--json").stdout)
            for _ in range(2)]
    assert len({v["zone"] for v in made}) == 2 and all(v["size_gb"] == 3 for v in made)  # --size defaults to 3
    full = ex.fly("volumes", "create", "data", "--region", "ord", "--yes")
    assert (full.returncode, full.stderr) == (1, "Error: failed to create volume: aborted: no capacity\n")
    other = ex.fly("volumes", "create", "logs", "--region", "ord", "--yes")  # unique among same-name volumes only
    assert other.returncode == 0
    shared = ex.fly("volumes", "create", "data", "--region", "ord", "--yes", "--require-unique-zone=false", "--json")
    assert json.loads(shared.stdout)["zone"] in {v["zone"] for v in made}
    assert len(json.loads(ex.fly("volumes", "list", "--json").stdout)) == 4


def test_scale_count_does_not_ask_for_unique_zones(standin, example, settings):
    """scale/machine_defaults.go CreateVolumeRequest sends RequireUniqueZone false (the stored
    versions of flyctl read here), so a region of one zone still takes a second volume."""
    ex = example("strict-zones-scale")
    settings(zones={"ord": 1})
    assert ex.deploy(mounts=True).returncode == 0
    scale = ex.fly("scale", "count", "2", "--region", "ord", "--yes")
    assert scale.returncode == 0, scale.stderr
    vols = json.loads(ex.fly("volumes", "list", "--json").stdout)
    assert len(vols) == 2 and len({v["zone"] for v in vols}) == 1


def test_first_deploy_counts_leftover_volumes_in_any_region(standin, example):
    ex = example("strict-leftover")
    assert ex.fly("volumes", "create", "data", "--region", "syd", "--yes").returncode == 0
    first = ex.deploy(mounts=True)
    assert first.returncode == 1
    assert first.stderr.endswith("Error: New machine in group 'app' needs an unattached volume named 'data' "
                                 "in region 'ord'\n")
    assert "Creating a 1 GB volume" not in first.stdout and ex.machines() == []


# --- 5. `secrets import` parsing (secrets/parser.go) ---------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ('A=""abc\n', {"A": '""abc'}),                       # no pair of quotes around it: kept
    ('A=a"#b\n', {"A": 'a"#b'}),                          # odd quotes before "#": not a comment
    ('A="x#y"\n', {"A": "x#y"}),
    ('A="x" # note\n', {"A": "x"}),                       # even quotes: cut, then unquoted
    ('A=x # note\n', {"A": "x"}),
    ('A=""#y\n', {"A": ""}),
    ('A="x" \n', {"A": '"x" '}),                          # a trailing space keeps the quotes
    ("A='x'\n", {"A": "x"}),
    ('A=a=b==\n', {"A": "a=b=="}),                        # only the first "=" splits
    ('  A  =   v  \n', {"A": "v  "}),                     # spaces trimmed before, kept after
    ('A=\tv\n', {"A": "\tv"}),                            # only spaces are trimmed on the left
    ('A=c:\\dir\\n\\t\n', {"A": "c:\\dir\\n\\t"}),         # backslashes are not escapes
    ('A=$HOME ${X}\n', {"A": "$HOME ${X}"}),              # no expansion
    ('A=héllo wörld ✓\n', {"A": "héllo wörld ✓"}),
    ('A="""one\ntwo\n"""\n', {"A": "one\ntwo\n"}),
    ('A="""one"""\n', {"A": "one"}),
    ('A="""\nx\n"""\nB=2\n', {"A": "\nx\n", "B": "2"}),
    ('A="""abc"#x\nB=2\nC=3"""\n', {"A": 'abc"\nB=2\nC=3'}),  # cut at "#" leaves a block that swallows lines
    ('A="""open\nB=2\n', {}),                             # an unclosed block sets nothing
    ('A="""x\n""" \nB=2\n', {}),                           # `""" ` (trailing blank) does not close it
    ('A=1\r\nB=2\r\n', {"A": "1", "B": "2"}),
    ('# c\n   \n #x=1\n', {"#x": "1"}),                   # only a "#" in column 0 starts a comment
    ('A=1\nA=2\n', {"A": "2"}),
    ("A=" + "x" * 70000 + "\nB=2\n", {}),                 # over bufio.Scanner's 64 KiB: input ends there
    ("B=2\nA=" + "x" * 70000 + "\n", {"B": "2"}),
])
def test_secrets_import_parser_rules(text, expected):
    assert parse_dotenv(text) == expected


def test_secrets_import_parser_refusals(standin, example):
    with pytest.raises(FlyError, match=r"^Failed to parse secrets from stdin: Secrets must be provided as "
                                       r"NAME=VALUE pairs \(junk line is invalid\)$"):
        parse_dotenv("A=1\njunk line\n")
    with pytest.raises(FlyError, match=r"slice bounds out of range \[1:0\]"):
        parse_dotenv('A="\n')
    with pytest.raises(dotenv.GoPanic):
        dotenv.parse("A='\n")
    ex = example("strict-secrets")
    bad = ex.fly("secrets", "import", "--stage", input="GOOD=1\njunk\n")
    assert (bad.returncode, bad.stderr) == (1, "Error: Failed to parse secrets from stdin: Secrets must be provided "
                                               "as NAME=VALUE pairs (junk is invalid)\n")
    empty = ex.fly("secrets", "import", "--stage", input='A="""never closed\n')
    assert (empty.returncode, empty.stderr) == (1, "Error: requires at least one SECRET=VALUE pair\n")


# --- 6. a stopped Machine stays stopped -----------------------------------------------------------

def test_a_stopped_machine_stays_stopped_when_a_deploy_updates_it(standin, example):
    ex = example("strict-stopped")
    assert ex.deploy().returncode == 0
    assert ex.fly("scale", "count", "2", "--region", "ord", "--yes").returncode == 0
    fh_wait_started(standin, ex.app, 2)
    a, b = ex.machines()
    assert ex.fly("machine", "stop", b["id"]).returncode == 0
    deployed = ex.deploy()
    assert deployed.returncode == 0, deployed.stderr
    listed = {m["id"]: m for m in fh.machine_list(standin, ex.app)}
    version = str(json.loads(ex.fly("status", "--json").stdout)["Version"])
    assert {i: m["state"] for i, m in listed.items()} == {a["id"]: "started", b["id"]: "stopped"}
    assert all(m["config"]["metadata"]["fly_release_version"] == version for m in listed.values())


def fh_wait_started(standin, app: str, count: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while sum(m["state"] == "started" for m in standin.machines(app)) < count:
        assert time.monotonic() < deadline, standin.machines(app)
        time.sleep(0.1)


# --- 7. tokens ------------------------------------------------------------------------------------

def test_a_deploy_token_manages_its_one_app(standin, example, tmp_path):
    ex = example("strict-tokens")
    other = example("strict-tokens-other")
    missing = run(standin, "tokens", "create", "deploy", "-a", "strict-not-yet")
    assert (missing.returncode, missing.stderr) == (1, "Error: failed retrieving app strict-not-yet: app not found\n")
    (tmp_path / "fly.toml").write_text('app = "strict-not-yet"\n')  # without -a: the app named by fly.toml
    from_toml = run(standin, "tokens", "create", "deploy", cwd=str(tmp_path))
    assert (from_toml.returncode, from_toml.stderr) == (1, missing.stderr)
    with pytest.raises(StandInError, match="app not found"):
        standin.make_token("deploy", app="strict-not-yet")
    made = run(standin, "tokens", "create", "deploy", "-a", ex.app, "--json")
    token = json.loads(made.stdout)["token"]
    env = standin.env(FLY_API_TOKEN=token)
    assert run(standin, "status", "--app", ex.app, "--json", env=env).returncode == 0
    assert ex.deploy().returncode == 0  # the default token deployed it; the deploy token can too:
    again = run(standin, "deploy", ".", "--config", "fly.toml", "--remote-only", "--ha=false", "--yes",
                "--app", ex.app, cwd=str(ex.context), env=env)
    assert again.returncode == 0, again.stderr
    for argv in (["apps", "create", "strict-tokens-new", "--org", "personal"], ["apps", "list", "--json"],
                 ["status", "--app", other.app], ["secrets", "set", "--stage", "A=1", "--app", other.app],
                 ["tokens", "create", "deploy", "-a", other.app]):
        refused = run(standin, *argv, env=env)
        assert refused.returncode == 1 and refused.stderr.endswith("unauthorized\n"), (argv, refused.stderr)
    assert "strict-tokens-new" not in [a["Name"] for a in json.loads(run(standin, "apps", "list", "--json").stdout)]


def test_an_org_token_creates_apps_in_its_org_only(standin):
    made = run(standin, "tokens", "create", "org", "-o", "personal")
    assert made.returncode == 0
    env = standin.env(FLY_API_TOKEN=made.stdout.strip())
    try:
        assert run(standin, "apps", "create", "strict-org-app", "--org", "personal", env=env).returncode == 0
        elsewhere = run(standin, "apps", "create", "strict-org-app2", "--org", "someone-else", env=env)
        assert (elsewhere.returncode, elsewhere.stderr) == (1, "Error: unauthorized\n")
    finally:
        run(standin, "apps", "destroy", "strict-org-app", "--yes")
    no_org = run(standin, "tokens", "create", "org", env={k: v for k, v in standin.env().items() if k != "FLY_ORG"})
    assert no_org.stderr == "Error: failed retrieving org org slug must be specified when not running interactively\n"
