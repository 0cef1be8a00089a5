"""The README's promise, run as written on fresh clones: `scripts/up-local` sets everything up, brings
the local stack up and proves it whole, and leaves the checkout as it was (Pulumi's salt and the
generated password go to an untracked working copy); two clones on one machine run it at the same time,
each on ports of its own; `scripts/up-local destroy` leaves no server and no file of the cluster."""

from __future__ import annotations

import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from nats_fly_testkit.engine import missing_tools, require
from nats_fly_testkit.support import REPO, nats_servers


def up_local(clone: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(clone / "scripts" / "up-local"), *args], cwd=clone, env=env, capture_output=True,
                          text=True, timeout=1200)


def test_two_fresh_clones_run_the_quickstart_at_once_and_leave_them_clean(tmp_path):
    require(missing_tools(), "the quickstart")
    clones = [tmp_path / "first", tmp_path / "second"]
    for clone in clones:
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PULUMI_", "NATS_FLY_ROOT", "VIRTUAL_ENV"))}
    env["PATH"] = ":".join(p for p in env["PATH"].split(":") if str(REPO) not in p)
    try:
        with ThreadPoolExecutor(2) as pool:
            ups = list(pool.map(lambda clone: up_local(clone, env), clones))
        for up in ups:
            said = up.stdout + up.stderr
            assert up.returncode == 0, said[-4000:]
            assert "cluster is whole" in up.stdout and "Traceback" not in said, said[-4000:]
        urls = [json.loads(subprocess.run(
            ["bash", "-c", "source scripts/env.sh && pulumi stack output serverUrls --stack local --json"],
            cwd=clone, env=env, capture_output=True, text=True, check=True).stdout) for clone in clones]
        ports = [{url for region in found.values() for url in region} for found in urls]
        assert len(ports[0]) == len(ports[1]) == 3 and not ports[0] & ports[1]  # each clone its own
        for clone in clones:
            status = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True)
            assert status.stdout == "", status.stdout  # config/Pulumi.local.yaml untouched
        again = up_local(clones[0], env)
        assert again.returncode == 0 and "unchanged" in again.stdout, again.stdout[-3000:]
        assert "from $PATH" not in "".join(u.stdout + u.stderr for u in (*ups, again))
    finally:
        with ThreadPoolExecutor(2) as pool:
            downs = list(pool.map(lambda clone: up_local(clone, env, "destroy"), clones))
    for clone, down in zip(clones, downs):
        assert down.returncode == 0, down.stdout[-2000:] + down.stderr[-2000:]
        assert nats_servers(str(clone)) == []
        assert not (clone / ".nats-fly").exists()
        assert subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True).stdout == ""
