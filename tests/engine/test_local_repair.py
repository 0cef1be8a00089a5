"""Repair that always repairs, on the local platform with the real engine: a 2-region x 2-server stack
with JetStream. Whatever was killed or deleted before it (every server killed with kill -9, the state
folder removed under running servers, both, the pid files, a conf, a server's store), a preview names
each server that needs repair and writes nothing, the next `up` leaves every server running and the
cluster whole, the up after it is a no-op, and destroy leaves no file and no process. A port another
checkout holds is named, without a traceback."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import signal
import time
from pathlib import Path

import pytest

from nats_fly_testkit.engine import copy_project, engine_environment
from nats_fly.processes.verify import Expectation, verify
from nats_fly_testkit.support import managed_servers

PASSWORD = "repair-system-password-71"
NAMES = ["ord-0", "ord-1", "syd-0", "syd-1"]


@pytest.fixture
def stack(project):
    made = project("local")
    # lameDuckGracePeriod 1s: a JetStream server in lame duck waits that long before it exits.
    made.config({"regions": ["ord=2", "syd=2"], "jetstream": True, "lameDuckGracePeriod": "1s"})
    made.pulumi("config", "set", "--secret", "sysPassword", stdin=PASSWORD)
    yield made
    made.pulumi("destroy", "--yes", "--skip-preview", check=False)
    for pid in managed_servers(made.root):
        os.kill(pid, signal.SIGKILL)


def state_dir(stack) -> Path:
    return stack.root / ".nats-fly" / stack.stack / "nats" / "local"


def running(stack) -> dict[str, int]:
    """server name -> pid."""
    return {name.split("/")[1]: pid for pid, name in managed_servers(stack.root).items()}


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    folder = root / ".nats-fly"
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()} if folder.exists() else {}


def whole(stack) -> None:
    outputs = stack.outputs()
    report = asyncio.run(verify(outputs["clientUrls"], Expectation(regions=outputs["machines"], jetstream=True),
                                user="sys", password=PASSWORD, timeout=30))
    assert report.ok, report.table()


def kill_all(stack) -> None:
    pids = running(stack).values()
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while set(pids) & set(running(stack).values()):
        assert time.monotonic() < deadline, "killed servers still listed"
        time.sleep(0.05)


def repaired(stack, said: dict[str, str]) -> dict[str, int]:
    """A preview names each server of `said` with its problem (and no other server), writing nothing;
    the up then brings every server back, whole; the up after it is a no-op. Returns the new pids."""
    before, pids = snapshot(stack.root), running(stack)
    preview = stack.pulumi("preview")
    named = dict(re.findall(r"cluster nats: (\S+) ((?:is not running|runs \(pid \d+\) but its)[^;]*; up will \w+ \w+)",
                            preview.stdout))
    assert {n: text.split(";")[0] for n, text in named.items()} == said, preview.stdout
    assert "Traceback" not in preview.stdout + preview.stderr
    assert snapshot(stack.root) == before and running(stack) == pids  # the program reads only
    up = stack.pulumi("up", "--yes", "--skip-preview")
    assert "Traceback" not in up.stdout + up.stderr
    assert sorted(running(stack)) == NAMES
    whole(stack)
    stack.pulumi("up", "--yes", "--skip-preview", "--expect-no-changes")
    return running(stack)


async def stream(url: str, publish: bool) -> bytes:
    """Publish a message to an R2 stream, or read it back once JetStream answers again after a repair."""
    import nats
    from nats.js.errors import APIError
    nc = await nats.connect(url)
    js = nc.jetstream(timeout=5)
    try:
        if publish:
            await js.add_stream(name="REPAIR", subjects=["repair.>"], num_replicas=2)
            await js.publish("repair.kept", b"kept")
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            try:
                return (await js.get_msg("REPAIR", 1)).data
            except (APIError, nats.errors.TimeoutError):
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.2)
    finally:
        await nc.close()


def test_every_kind_of_loss_is_repaired_by_the_next_up(stack):
    stack.pulumi("up", "--yes", "--skip-preview")
    assert sorted(running(stack)) == NAMES
    whole(stack)
    url = stack.outputs()["clientUrl"]
    assert asyncio.run(stream(url, publish=True)) == b"kept"
    stack.pulumi("up", "--yes", "--skip-preview", "--expect-no-changes")
    down = {name: "is not running" for name in NAMES}

    # Every server killed: each is started again, on its store (the stream is still there). A refresh
    # that runs the program names them too (a plain refresh cannot: a Command reads back its stored state).
    kill_all(stack)
    refresh = stack.pulumi("refresh", "--yes", "--run-program")
    assert all(f"cluster nats: {name} is not running; up will start it" in refresh.stdout for name in NAMES), \
        refresh.stdout
    repaired(stack, down)
    assert asyncio.run(stream(url, publish=False)) == b"kept"

    # The state folder removed under running servers: each is found by its marker and restarted
    # (what it was started with is unknown), never reported as a stranger holding its own port.
    pids = running(stack)
    shutil.rmtree(state_dir(stack))
    after = repaired(stack, {name: f"runs (pid {pid}) but its conf, pid file, state, applied conf are gone"
                             for name, pid in pids.items()})
    assert not set(after.values()) & set(pids.values())

    # Both: all killed and the folder gone (no local file says what ran, or which value each Command had).
    kill_all(stack)
    shutil.rmtree(state_dir(stack))
    repaired(stack, down)

    # Pid files deleted: adopted by marker, not restarted.
    pids = running(stack)
    for name in NAMES:
        (state_dir(stack) / f"{name}.pid").unlink()
    assert repaired(stack, {name: f"runs (pid {pid}) but its pid file is gone" for name, pid in pids.items()}) == pids

    # One conf deleted: written back, the server left running.
    (state_dir(stack) / "syd-1.conf").unlink()
    assert repaired(stack, {"syd-1": f"runs (pid {pids['syd-1']}) but its conf is gone"}) == pids

    # One server's own folder (its JetStream store) deleted under it: restarted onto a new store.
    shutil.rmtree(state_dir(stack) / "ord-1")
    after = repaired(stack, {"ord-1": f"runs (pid {pids['ord-1']}) but its JetStream store is gone"})
    assert after["ord-1"] != pids["ord-1"] and (state_dir(stack) / "ord-1" / "jetstream").is_dir()

    stack.pulumi("destroy", "--yes", "--skip-preview")
    assert running(stack) == {}
    assert not (stack.root / ".nats-fly").exists()  # no file of the cluster: stores and TLS files included


def test_a_port_another_checkout_holds_is_named_without_a_traceback(project, tmp_path):
    """Two checkouts with one fixed localBasePort: the second up fails with one line naming the other
    checkout's server, no traceback (the engine's SIGINT to a program still waiting on a registration),
    and leaves no folder behind."""
    first = project("local")
    fixed = {"regions": ["ord"], "localBasePort": 27400}
    first.config(fixed)
    first.pulumi("config", "set", "--secret", "sysPassword", stdin=PASSWORD)
    second = copy_project(tmp_path / "second", "local", "e2e", engine_environment(tmp_path / "second-engine"))
    second.config(fixed)
    second.pulumi("config", "set", "--secret", "sysPassword", stdin=PASSWORD)
    try:
        first.pulumi("up", "--yes", "--skip-preview")
        port = first.outputs()["clientUrl"].rsplit(":", 1)[1]
        holder = f"client port {port} on 127.0.0.1 is in use by nats-server ord-0 of {state_dir(first)} (pid "
        for _ in range(3):  # the engine's SIGINT lands at a different point each time
            failed = second.pulumi("up", "--yes", "--skip-preview", check=False)
            said = failed.stdout + failed.stderr
            assert failed.returncode != 0 and holder in said, said[-3000:]
            assert "Traceback" not in said and "KeyboardInterrupt" not in said, said[-3000:]
            assert not (second.root / ".nats-fly").exists()
        second.pulumi("destroy", "--yes", "--skip-preview")
        assert sorted(running(first)) == ["ord-0"]
    finally:
        for made in (second, first):
            made.pulumi("destroy", "--yes", "--skip-preview", check=False)
    assert running(first) == {} and not (first.root / ".nats-fly").exists()
