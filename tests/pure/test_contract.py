"""The contract between a Command and the process it runs: one definition per operation writes the
command line and parses it, so every operation round-trips, and the entry finds each by its path."""

from __future__ import annotations

import dataclasses
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from nats_fly.contract import operations as ops
from nats_fly.contract.spec import ENTRY, JOINED, PAIRS, REPEAT, SWITCH, WORD, flag as flag_of, python

# One instance per operation with every option away from its default, and one with only what is required.
FULL = {
    ops.LocalEnsure: dict(name="ord-0", state_dir=Path(".nats-fly/dev/nats/local"), client_port=4222, http_port=8222,
                          wait=2.5, nats_version="2.15.0"),
    ops.LocalStop: dict(name="syd-1", state_dir=Path("/tmp/x y/local"), timeout=3.0),
    ops.LocalPorts: dict(servers=("ord-0", "ord-1", "syd-0")),
    ops.LocalStatus: dict(state_dir=Path("state")),
    ops.FlyDeploy: dict(app="my-nats", dir=Path("/tmp/context")),
    ops.FlyRegion: dict(app="my-nats", region="syd", count=3, volume="nats_data", size=10,
                        url=("nats://a:10000", "nats://b:10000")),
    ops.FlyProbe: dict(app="my-nats", jetstream=True),
    ops.Verify: dict(url=("ord=nats://127.0.0.1:1", "syd=nats://127.0.0.1:2"), ws_url=("ord=ws://127.0.0.1:3",),
                     expect=(("ord", 2), ("syd", 1)), topology="supercluster", jetstream=True, ca="ca.pem",
                     user="admin", password_file=Path("/run/secret"), tls_first=True, timeout=30.0, messages=7,
                     json=True),
    ops.Render: dict(stack="prod", out=Path("/tmp/out"), project_dir=Path("/src")),
    ops.Reference: dict(check=True),
    ops.Backup: dict(stack="prod", to=Path("/tmp/backup"), user="alice", password_file=Path("/run/pw"), ca="ca.pem",
                     project_dir=Path("/src")),
    ops.Restore: dict(stack="prod", from_=Path("/tmp/backup"), user="alice", password_file=Path("/run/pw"),
                      ca="ca.pem", project_dir=Path("/src")),
}
REQUIRED = {op: {f.name: value for f, value in ((f, FULL[op][f.name]) for f in dataclasses.fields(op)
                                                 if f.name in FULL[op]) if f.default is dataclasses.MISSING}
            for op in FULL}


def test_every_operation_is_in_the_registry_and_here():
    assert set(ops.OPERATIONS.values()) == set(FULL)
    assert all(ops.OPERATIONS[op.path] is op for op in FULL)


@pytest.mark.parametrize("op", FULL, ids=lambda op: " ".join(op.path))
@pytest.mark.parametrize("given", [FULL, REQUIRED], ids=["every option", "required only"])
def test_an_operation_round_trips_through_its_command_line(op, given):
    sent = op(**given[op])
    words = shlex.split(sent.command())
    assert words[:1 + len(ENTRY) + len(op.path)] == [python(), *ENTRY, *op.path]
    assert op.parse(words[1 + len(ENTRY) + len(op.path):]) == sent


@pytest.mark.parametrize("op", FULL, ids=lambda op: " ".join(op.path))
def test_each_option_is_written_as_its_style_says(op):
    """Optional options at their default are left out (a Command's text is its input: adding one would
    run it again), WORD options always say true or false, REPEAT options repeat their flag."""
    defaults = op(**REQUIRED[op])
    words = defaults.argv()
    for f in dataclasses.fields(op):
        flag = flag_of(f.name)
        style = f.metadata["style"]
        if style == WORD:
            assert words[words.index(flag) + 1] in ("true", "false")
        elif f.default is not dataclasses.MISSING and not f.metadata["always"]:
            assert flag not in words, f"{flag} written at its default"
    full = op(**FULL[op]).argv()
    for f in dataclasses.fields(op):
        flag = flag_of(f.name)
        if f.metadata["style"] == REPEAT:
            assert full.count(flag) == len(FULL[op][f.name])
        elif f.metadata["style"] in (JOINED, PAIRS) and f.name in FULL[op]:
            assert "," in full[full.index(flag) + 1] or len(FULL[op][f.name]) == 1
        elif f.metadata["style"] == SWITCH and FULL[op].get(f.name):
            assert flag in full


def test_command_lines_stay_as_stacks_stored_them():
    """A Command's text is part of its state: these are the lines stacks made before the contract hold."""
    assert ops.LocalEnsure(name="ord-0", state_dir=Path("s/local"), client_port=1, http_port=2).argv() == [
        "--name", "ord-0", "--state-dir", "s/local", "--client-port", "1", "--http-port", "2"]
    # Those stacks ran 2.12.8: a server of theirs pinned to it keeps its line (and so runs nothing).
    assert ops.LocalEnsure(name="ord-0", state_dir=Path("s/local"), client_port=1, http_port=2,
                           nats_version="2.12.8").argv() == ops.LocalEnsure(
        name="ord-0", state_dir=Path("s/local"), client_port=1, http_port=2).argv()
    assert ops.Restore(stack="s", from_=Path("b")).argv() == ["--stack", "s", "--from", "b"]
    assert ops.LocalStop(name="ord-0", state_dir=Path("s/local")).argv() == ["--name", "ord-0", "--state-dir", "s/local"]
    assert ops.LocalPorts(servers=("a-0", "b-0")).argv() == ["--servers", "a-0,b-0"]
    assert ops.FlyDeploy(app="x").argv() == ["--app", "x"]
    assert ops.FlyRegion(app="x", region="ord", count=2, volume="nats_data", size=1).argv() == [
        "--app", "x", "--region", "ord", "--count", "2", "--volume", "nats_data", "--size", "1"]
    assert ops.FlyProbe(app="x", jetstream=False).argv() == ["--app", "x", "--jetstream", "false"]
    assert ops.Verify(url=("ord=nats://h:1",), expect=(("ord", 1),), jetstream=True).argv() == [
        "--url", "ord=nats://h:1", "--expect", "ord=1", "--topology", "mesh", "--jetstream"]


def test_the_entry_dispatches_by_path_and_refuses_what_it_does_not_know():
    def entry(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "nats_fly", *args], capture_output=True, text=True, timeout=60)

    listing = entry("local", "status", "--state-dir", "/nonexistent-nats-fly-state")
    assert listing.returncode == 0 and listing.stdout.strip() == "[]", listing.stderr
    assert entry("local", "ensure").returncode == 2  # its required options missing: argparse's usage
    unknown = entry("local", "explode")
    assert unknown.returncode == 2 and "OPERATION" in unknown.stderr
    helped = entry("--help")
    assert helped.returncode == 0 and all(" ".join(path) in helped.stdout for path in ops.OPERATIONS)
