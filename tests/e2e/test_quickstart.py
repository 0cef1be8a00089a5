"""The README's promise, run as written on a fresh clone: `scripts/up-local` sets everything up,
brings the local stack up and proves it whole, and leaves the checkout as it was (Pulumi's salt and
the generated password go to an untracked working copy); `scripts/up-local destroy` leaves no server."""

from __future__ import annotations

import os
import subprocess

from engine import missing_tools, require
from support import REPO, nats_servers


def test_up_local_on_a_fresh_clone_leaves_it_clean(tmp_path):
    require(missing_tools(), "the quickstart")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PULUMI_", "NATS_FLY_ROOT", "VIRTUAL_ENV"))}
    env["PATH"] = ":".join(p for p in env["PATH"].split(":") if str(REPO) not in p)
    try:
        up = subprocess.run([str(clone / "scripts" / "up-local")], cwd=clone, env=env, capture_output=True,
                            text=True, timeout=900)
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        assert "cluster is whole" in up.stdout, up.stdout[-3000:]
        status = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True)
        assert status.stdout == "", status.stdout  # config/Pulumi.local.yaml untouched
        again = subprocess.run([str(clone / "scripts" / "up-local")], cwd=clone, env=env, capture_output=True,
                               text=True, timeout=900)
        assert again.returncode == 0 and "unchanged" in again.stdout, again.stdout[-3000:]
        assert "from $PATH" not in up.stdout + up.stderr + again.stdout + again.stderr
    finally:
        down = subprocess.run([str(clone / "scripts" / "up-local"), "destroy"], cwd=clone, env=env,
                              capture_output=True, text=True, timeout=900)
    assert down.returncode == 0, down.stdout[-2000:] + down.stderr[-2000:]
    assert nats_servers(str(clone)) == []
    assert subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True).stdout == ""
