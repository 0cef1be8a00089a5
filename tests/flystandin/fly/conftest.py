"""The Fly stand-in for the whole session: one daemon, its private network, and the
apps the suites share, brought up in parallel at the start (each first deploy pays
the entrypoint's lone-Machine peer wait, so they pay it together).

The `standin` fixture itself lives in tests/conftest.py (the engine tests use it too).
"""
from __future__ import annotations

import concurrent.futures
import json
import os
from pathlib import Path

import pytest

from nats_fly_testkit import fly as fh
from nats_fly_testkit.standin.api import StandIn

FIGURES = Path(os.environ.get("NFLY_FIGURES", fh.REPO / "build" / "standin-figures.json"))
REGIONS = ["ord", "syd", "cdg"]
BIG_REGIONS = ("ord", "syd", "cdg", "ams", "sin", "gru")  # x 3 Machines: one AAAA answer over 512 bytes
COLD_APPS = fh.COLD_APPS


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
    a.ours("prod")  # the prod stack exactly as configured: JetStream on, a volume per Machine
    # Core NATS only from here: the route and gateway meshes, and the cold start compared
    # like for like with the example's config (which has no JetStream).
    a.ours("supercluster", app="nats-fly-sc", topology="supercluster", jetstream=False,
           machines={r: 2 for r in REGIONS})
    a.ours("sc-lone", app="nats-fly-sc1", topology="supercluster", jetstream=False)  # one Machine per region
    a.ours("cold-big", app="cold-big", jetstream=False, regions=BIG_REGIONS, machines={r: 3 for r in BIG_REGIONS})
    for i in range(COLD_APPS):
        a.ours(f"cold-ours-{i}", app=f"cold-ours-{i}", jetstream=False, machines={r: 3 for r in REGIONS})
        a.example(f"cold-example-{i}", f"cold-example-{i}", {r: 3 for r in REGIONS})
    yield a
    a.pool.shutdown(wait=True, cancel_futures=True)

