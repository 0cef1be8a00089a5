"""The durable suite (issue 5): JetStream on volumes, auth, TLS, graceful change and faults,
proved with real nats-py clients against the Fly stand-in (the `standin` session fixture and the
figures file are in tests/conftest.py; the readers are proved on loopback in tests/servers/durable).
The JetStream stack is driven by the real Pulumi engine; the small stacks (auth none, serverTls,
supercluster) by the components' own command lines, brought up in the background at the start so
that their deploys overlap the engine's.
"""
from __future__ import annotations

import concurrent.futures
import shutil
import tempfile
from pathlib import Path

import pytest


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
