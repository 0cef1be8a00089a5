"""Shared test setup: Pulumi mocks with a fresh event loop per test, and helpers
the suites share: the Fly stand-in for the whole session, the durable figures file."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pulumi
import pytest
from pulumi.runtime import mocks as pulumi_mocks

from nats_fly_testkit import durable
from nats_fly_testkit.mocking import Mocks, Program
from nats_fly_testkit.standin import netns
from nats_fly_testkit.standin.api import StandIn
from nats_fly_testkit.support import REPO

TESTS = Path(__file__).resolve().parent
DURABLE_FIGURES = Path(os.environ.get("NFLY_DURABLE_FIGURES", REPO / "build" / "durable-figures.json"))


# ---------------------------------------------------------------- the tiers

def tiers(config: pytest.Config) -> list[str]:
    """The markers pyproject.toml registers as tiers: each is a folder of tests/."""
    return [name for name, _, about in (line.partition(":") for line in config.getini("markers"))
            if about.strip().startswith("tier ")]


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Each test gets its folder's tier marker; a test outside a tier folder is refused."""
    known = tiers(config)
    for item in items:
        folder = item.path.resolve().relative_to(TESTS).parts[0]
        if folder not in known:
            raise pytest.UsageError(f"{item.path.relative_to(REPO)}: a test must be in a tier folder, one of "
                                    f"{', '.join(f'tests/{tier}' for tier in known)}")
        item.add_marker(folder)


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
            return f"{tool} is missing: apt-get install {package} (see tests/kit/standin/REQUIREMENTS.txt)"
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


# ---------------------------------------------------------------- figures

@pytest.fixture(scope="session", autouse=True)
def durable_figures():
    """The durable suites' measured figures (the JetStream stack on the stand-in, the readers on
    loopback), printed at the end and written to build/durable-figures.json."""
    yield durable.FIGURES
    if durable.FIGURES:
        DURABLE_FIGURES.parent.mkdir(parents=True, exist_ok=True)
        DURABLE_FIGURES.write_text(json.dumps(durable.FIGURES, indent=2, sort_keys=True))
        print(f"\n== durable figures (also in {DURABLE_FIGURES}) ==\n"
              f"{json.dumps(durable.FIGURES, indent=2, sort_keys=True)}")
