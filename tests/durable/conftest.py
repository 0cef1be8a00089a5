"""The durable suite (issue 5): JetStream on volumes, auth, TLS, graceful change and faults,
proved with real nats-py clients against the Fly stand-in (the `standin` session fixture is in
tests/conftest.py). The JetStream stack is driven by the real Pulumi engine; the small stacks
(auth none, serverTls, supercluster) by the components' own command lines, brought up in the
background at the start so that their deploys overlap the engine's.
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from nats_fly_testkit import durable
from nats_fly_testkit import fly as fh

FIGURES_FILE = Path(os.environ.get("NFLY_DURABLE_FIGURES", fh.REPO / "build" / "durable-figures.json"))


@pytest.fixture(scope="session", autouse=True)
def figures():
    """Measured figures, printed at the end and written to build/durable-figures.json."""
    yield durable.FIGURES
    if durable.FIGURES:
        FIGURES_FILE.parent.mkdir(parents=True, exist_ok=True)
        FIGURES_FILE.write_text(json.dumps(durable.FIGURES, indent=2, sort_keys=True))
        print(f"\n== durable figures (also in {FIGURES_FILE}) ==\n"
              f"{json.dumps(durable.FIGURES, indent=2, sort_keys=True)}")


@pytest.fixture(scope="session")
def scratch():
    """A private temp dir for the session's files (certificates, project copies), removed after."""
    path = Path(tempfile.mkdtemp(prefix="durable-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def side_stacks(standin, scratch):
    """The small stacks, brought up in parallel through the components' command lines."""
    from nats_fly_testkit import small_stacks as side
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=3)
    futures = {
        "open": pool.submit(side.open_stack, standin, scratch),
        "tls": pool.submit(side.tls_stack, standin, scratch),
        "sc": pool.submit(side.supercluster_stack, standin, scratch),
    }
    yield futures
    pool.shutdown(wait=True, cancel_futures=True)
