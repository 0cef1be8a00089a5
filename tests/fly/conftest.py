"""The Fly stand-in for the whole session: one daemon, its private network, and the
apps the suites share, brought up in parallel at the start (each first deploy pays
the entrypoint's lone-Machine peer wait, so they pay it together).

Needs root (network namespaces, mounts). Without it the tests skip, except under
CI=true, where a skip would hide the Fly path: there they fail.
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the `standin` package
sys.path.insert(0, str(HERE))  # flyhelpers

import flyhelpers as fh  # noqa: E402
from standin import netns  # noqa: E402
from standin.api import StandIn  # noqa: E402

FIGURES = Path(os.environ.get("NFLY_FIGURES", fh.REPO / "build" / "standin-figures.json"))
REGIONS = ["ord", "syd", "cdg"]
COLD_APPS = int(os.environ.get("NFLY_COLD_APPS", 5))  # per kind; x 4 rounds = 20 cold starts per delay


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


@pytest.fixture(scope="session")
def figures():
    """Measured figures, printed at the end and written to build/standin-figures.json."""
    found: dict = {}
    yield found
    if found:
        FIGURES.parent.mkdir(parents=True, exist_ok=True)
        FIGURES.write_text(json.dumps(found, indent=2, sort_keys=True))
        print(f"\n== Fly stand-in figures (also in {FIGURES}) ==\n{json.dumps(found, indent=2, sort_keys=True)}")


class Apps:
    """The session's apps, brought up in parallel through the components' commands."""

    def __init__(self, standin: StandIn):
        self.standin = standin
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=16)
        self.futures: dict[str, concurrent.futures.Future] = {}
        self.stacks: dict[str, fh.Stack] = {}

    def ours(self, key: str, **changes) -> None:
        stack = fh.load_stack("prod", **changes)
        self.stacks[key] = stack
        context = fh.render_ours(stack, self.standin.root / "contexts" / stack.app)
        self.futures[key] = self.pool.submit(fh.components_up, self.standin, stack, context)

    def example(self, key: str, app: str, counts: dict[str, int]) -> None:
        context = fh.render_example(self.standin.root / "contexts" / app, app, next(iter(counts)))
        self.futures[key] = self.pool.submit(fh.example_up, self.standin, context, app, counts)

    def get(self, key: str):
        self.futures[key].result()
        return self.stacks.get(key)


@pytest.fixture(scope="session")
def apps(standin):
    a = Apps(standin)
    a.ours("prod")  # the prod stack exactly as configured
    a.ours("supercluster", app="nats-fly-sc", topology="supercluster", machines={r: 2 for r in REGIONS})
    for i in range(COLD_APPS):
        a.ours(f"cold-ours-{i}", app=f"cold-ours-{i}", machines={r: 3 for r in REGIONS})
        a.example(f"cold-example-{i}", f"cold-example-{i}", {r: 3 for r in REGIONS})
    yield a
    a.pool.shutdown(wait=True, cancel_futures=True)

