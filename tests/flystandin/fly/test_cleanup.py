"""Everything a stand-in creates goes away with it, and a crashed run's leftovers
(its owner dead) are swept by the next run without breaking it."""
from __future__ import annotations

import time
from pathlib import Path

from nats_fly_testkit import fly as fh
from nats_fly_testkit.standin import netns
from nats_fly_testkit.standin.api import StandIn


def _leftovers(run_id: str) -> list[str]:
    found = [ns for ns in netns.listed() if netns.run_of(ns) == run_id]
    if netns.ETC_NETNS.is_dir():
        found += [str(p) for p in netns.ETC_NETNS.glob(f"{run_id}-*")]
    return found + [str(p) for p in Path("/tmp").glob(f"{run_id}-*")]


def _alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie waiting for an init that may never reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def test_crashed_run_is_swept_by_the_next(standin, tmp_path):
    crashed = StandIn().start()
    try:
        context = fh.render_example(tmp_path / "ctx", "crash-app", "ord")
        fh.example_up(crashed, context, "crash-app", {"ord": 1})
        machine = crashed.machines("crash-app")[0]
        pids = netns.pids(f"{crashed.run_id}-{machine['id']}")
        assert pids
        crashed.proc.kill()  # the daemon dies without cleaning up
        crashed.proc.wait()
        assert _leftovers(crashed.run_id)
        nxt = StandIn().start()  # sweeps what dead owners left
        try:
            assert _leftovers(crashed.run_id) == []
            deadline = time.monotonic() + 60  # killed: gone once the kernel has torn them down
            while any(_alive(pid) for pid in pids):
                assert time.monotonic() < deadline, [pid for pid in pids if _alive(pid)]
                time.sleep(0.1)
        finally:
            nxt.close()
        assert _leftovers(nxt.run_id) == []
    finally:
        crashed.close()
    assert _leftovers(crashed.run_id) == []
