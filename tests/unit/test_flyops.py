"""flyops looks before it acts: volumes are created only when missing, and only unattached
surplus volumes are destroyed. A scripted flyctl on PATH records every argv."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

FAKE_FLYCTL = r'''#!PYTHON
import json, sys, os
state_path = os.environ["FAKE_FLY_STATE"]
state = json.load(open(state_path))
args = sys.argv[1:]
state["log"].append(args)
out = ""
if args[:2] == ["volumes", "list"]:
    out = json.dumps(state["volumes"])
elif args[:2] == ["volumes", "create"]:
    vol = {"id": f"vol_{len(state['volumes'])}", "name": args[2], "region": args[args.index("--region") + 1],
           "state": "created", "attached_machine_id": None}
    state["volumes"].append(vol)
    out = json.dumps(vol)
elif args[:2] == ["volumes", "destroy"]:
    state["volumes"] = [v for v in state["volumes"] if v["id"] != args[2]]
elif args[:2] == ["scale", "count"]:
    count, region = int(args[2]), args[args.index("--region") + 1]
    mine = [v for v in state["volumes"] if v["region"] == region]
    for i, vol in enumerate(mine):
        vol["attached_machine_id"] = f"m{i}" if i < count else None
json.dump(state, open(state_path, "w"))
print(out)
'''


def run_region(tmp_path: Path, state: dict, count: int) -> dict:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    flyctl = bin_dir / "flyctl"
    flyctl.write_text(FAKE_FLYCTL.replace("PYTHON", sys.executable))
    flyctl.chmod(0o755)
    state_path = tmp_path / "state.json"
    state_path.write_text(json.dumps({**state, "log": []}))
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_FLY_STATE": str(state_path)}
    result = subprocess.run([sys.executable, "-m", "nats_fly", "fly", "region", "--app", "a", "--region", "ord",
                             "--count", str(count), "--volume", "nats_data", "--size", "10"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(state_path.read_text())


def vol(i, region="ord", attached=None):
    return {"id": f"vol_{i}", "name": "nats_data", "region": region, "state": "created",
            "attached_machine_id": attached}


def test_scale_up_creates_only_the_missing_volumes(tmp_path):
    state = run_region(tmp_path, {"volumes": [vol(0, attached="m0"), vol(9, region="syd")]}, 3)
    creates = [a for a in state["log"] if a[:2] == ["volumes", "create"]]
    assert creates == [["volumes", "create", "nats_data", "--region", "ord", "--size", "10", "--app", "a",
                        "--json", "--yes"]] * 2
    assert ["scale", "count", "3", "--region", "ord", "--app", "a", "--yes"] in state["log"]
    assert not [a for a in state["log"] if a[:2] == ["volumes", "destroy"]]


def test_running_again_changes_nothing(tmp_path):
    volumes = [vol(i, attached=f"m{i}") for i in range(3)]
    state = run_region(tmp_path, {"volumes": volumes}, 3)
    assert [a[:2] for a in state["log"]] == [["volumes", "list"], ["scale", "count"], ["volumes", "list"]]


def test_scale_down_destroys_only_unattached_surplus_in_the_region(tmp_path):
    volumes = [vol(i, attached=f"m{i}") for i in range(3)] + [vol(7, region="syd")]
    state = run_region(tmp_path, {"volumes": volumes}, 1)
    destroyed = [a[2] for a in state["log"] if a[:2] == ["volumes", "destroy"]]
    assert sorted(destroyed) == ["vol_1", "vol_2"]
    assert {v["id"] for v in state["volumes"]} == {"vol_0", "vol_7"}
