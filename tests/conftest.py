"""Shared test setup: Pulumi mocks with a fresh event loop per test, and helpers
the suites share: the Fly stand-in for the whole session."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
from pathlib import Path

import pulumi
import pytest
from pulumi.runtime import mocks as pulumi_mocks, stack

from standin import netns
from standin.api import StandIn
from support import REPO  # noqa: F401  (re-exported for suites)

FAKE_PEM = ("-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n"
            "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n")


class Mocks(pulumi.runtime.Mocks):
    """Every Command 'runs' successfully; the TLS marker command prints a PEM pair, the local ports
    command six ports per server from 20000 on."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        state = dict(args.inputs)
        if args.typ == "command:local:Command":
            state["stdout"] = ""
            if args.name.endswith("-tls-marker"):
                state["stdout"] = FAKE_PEM
            elif args.name.endswith("-ports"):
                argv = shlex.split(args.inputs["create"])
                servers = argv[argv.index("--servers") + 1].split(",")
                state["stdout"] = json.dumps({n: [20000 + 6 * i + k for k in range(6)] for i, n in enumerate(servers)})
            state["stderr"] = ""
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}


class Program:
    """Runs a program under the mocks to completion; then the registered resources can be read."""

    def __init__(self, monitor: pulumi_mocks.MockMonitor):
        self.monitor = monitor

    def run(self, program):
        """Run program() and wait for every registration and Output it started."""
        result = {}
        pulumi_mocks._sync_await(stack.run_pulumi_func(lambda: result.setdefault("value", program())))
        return result.get("value")

    def value(self, output: pulumi.Output):
        return pulumi_mocks._sync_await(output.future())

    def resources(self) -> dict[str, tuple[str, dict]]:
        """name -> (type token, state) of every registered resource."""
        found = {}
        for urn, registration in self.monitor.resources.items():
            type_chain, name = urn.split("::")[-2:]
            found[name] = (type_chain.split("$")[-1], registration.state)
        return found

    def commands(self) -> dict[str, dict]:
        """name -> inputs of every Command, secrets unwrapped (see `secret_paths` for which)."""
        return {n: _unwrap(st) for n, (t, st) in self.resources().items() if t == "command:local:Command"}

    def secret_paths(self, name: str) -> set[str]:
        """The input keys of one resource that the engine would store encrypted."""
        state = self.resources()[name][1]
        return {key for key, value in state.items() if _is_secret(value)}


_SECRET_SIG = "4dabf18193072939515e22adb298388d"  # the engine's marker for a secret value


def _is_secret(value) -> bool:
    return isinstance(value, dict) and value.get(_SECRET_SIG) == "1b47061264138c4ac30d75fd1eb44270"


def _unwrap(value):
    if _is_secret(value):
        return _unwrap(value["value"])
    if isinstance(value, dict):
        return {k: _unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    return value


@pytest.fixture
def mock_program():
    """Pulumi mocks on an event loop of this test's own."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    mocks = Mocks()
    monitor = pulumi_mocks.MockMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, project="nats-fly", stack="test", preview=False, monitor=monitor)
    yield Program(monitor)
    pulumi.runtime.settings.reset_options()
    loop.close()
    asyncio.set_event_loop(None)


# ---------------------------------------------------------------- the Fly stand-in

def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "the Fly stand-in needs root (network namespaces, mounts); run the suite as root"
    for tool, package in (("/bin/busybox", "busybox-static"), ("/usr/sbin/ip", "iproute2"),
                          ("/usr/bin/openssl", "openssl")):
        if not Path(tool).exists() and not shutil.which(Path(tool).name):
            return f"{tool} is missing: apt-get install {package} (see tests/standin/REQUIREMENTS.txt)"
    return None


@pytest.fixture(scope="session")
def standin():
    reason = _unavailable()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the Fly stand-in tests, but: {reason}")
        pytest.skip(reason)
    s = StandIn().start()
    # Checks run on Fly's schedule (grace 30s, interval 10s in the rendered fly.toml),
    # capped here at 1s so that check-gated deploys take seconds, not minutes.
    s.set_check_interval_max(1)
    try:
        yield s
    finally:
        daemon_pid = s.proc.pid if s.proc else None
        s.close()
        _assert_clean(s.run_id, daemon_pid)


def _assert_clean(run_id: str, daemon_pid: int | None) -> None:
    left = [ns for ns in netns.listed() if netns.run_of(ns) == run_id]
    left += [str(p) for p in netns.ETC_NETNS.glob(f"{run_id}-*")] if netns.ETC_NETNS.is_dir() else []
    left += [str(p) for p in Path("/tmp").glob(f"{run_id}-*")]
    if daemon_pid and Path(f"/proc/{daemon_pid}").exists():
        left.append(f"daemon process {daemon_pid}")
    assert not left, f"the stand-in left things behind: {left}"


