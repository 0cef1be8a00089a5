"""flyops looks before it acts: volumes are created only when missing, and only unattached
surplus volumes are destroyed. A scripted flyctl on PATH records every argv."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

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


# --- a JetStream region shrinking: stop (lame duck) -> remove the peer -> destroy -> prune ----------

FAKE_MACHINES = r'''
if args[:2] == ["machine", "list"]:
    out = json.dumps(state["machines"])
elif args[:2] == ["machine", "stop"]:
    for m in state["machines"]:
        if m["id"] == args[2]:
            m["state"] = "stopped"
elif args[:2] == ["machine", "destroy"]:
    state["machines"] = [m for m in state["machines"] if m["id"] != args[2]]
    for vol in state["volumes"]:
        if vol["attached_machine_id"] == args[2]:
            vol["attached_machine_id"] = None
elif args[:2] == ["scale", "count"]:
    count, region = int(args[2]), args[args.index("--region") + 1]
    assert len([m for m in state["machines"] if m["region"] == region]) == count, "scale count would kill"
'''


class FakeNats(threading.Thread):
    """Just enough NATS protocol for one request: answers `$JS.API.SERVER.REMOVE` with success and
    appends ["nats", subject, peer, user, password-given] to the fake flyctl's log, so the order shows."""

    def __init__(self, state_path: Path):
        super().__init__(daemon=True)
        self.state_path = state_path
        self.ready = threading.Event()
        self.port = 0

    def run(self) -> None:
        asyncio.run(self.serve())

    async def serve(self) -> None:
        server = await asyncio.start_server(self.client, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self.ready.set()
        async with server:
            await server.serve_forever()

    async def client(self, reader, writer) -> None:
        writer.write(b'INFO {"server_id":"fake","server_name":"fake","version":"2.12.8","proto":1,'
                     b'"max_payload":1048576,"auth_required":true}\r\n')
        subs, user, password = {}, None, None
        while line := await reader.readline():
            words = line.decode().split()
            if not words:
                continue
            if words[0] == "CONNECT":
                options = json.loads(line.decode()[len("CONNECT "):])
                user, password = options.get("user"), options.get("pass")
            elif words[0] == "PING":
                writer.write(b"PONG\r\n")
            elif words[0] == "SUB":
                subs[words[1]] = words[-1]
            elif words[0] == "PUB":
                subject, reply, size = words[1], words[2], int(words[3])
                payload = json.loads((await reader.readexactly(size + 2))[:-2] or b"{}")
                state = json.loads(self.state_path.read_text())
                state["log"].append(["nats", subject, payload.get("peer"), user, password])
                self.state_path.write_text(json.dumps(state))
                body = b'{"type":"io.nats.jetstream.api.v1.meta_server_remove_response","success":true}'
                sid = next(s for pattern, s in subs.items() if reply.startswith(pattern.rstrip("*")))
                writer.write(f"MSG {reply} {sid} {len(body)}\r\n".encode() + body + b"\r\n")
            await writer.drain()
        writer.close()


def run_shrink(tmp_path: Path, state: dict, count: int, password: str) -> tuple[dict, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    flyctl = bin_dir / "flyctl"
    script = FAKE_FLYCTL.replace("PYTHON", sys.executable)
    script = script.replace('json.dump(state, open(state_path, "w"))', FAKE_MACHINES + 'json.dump(state, open(state_path, "w"))')
    script = script.replace('elif args[:2] == ["scale", "count"]:\n    count, region = int(args[2]), '
                            'args[args.index("--region") + 1]\n    mine', 'elif False:\n    mine')
    flyctl.write_text(script)
    flyctl.chmod(0o755)
    state_path = tmp_path / "state.json"
    state_path.write_text(json.dumps({**state, "log": []}))
    fake = FakeNats(state_path)
    fake.start()
    assert fake.ready.wait(10)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_FLY_STATE": str(state_path),
           "NATS_SYS_PASSWORD": password, "NATS_FLY_URL": f"nats://127.0.0.1:{fake.port}"}
    result = subprocess.run([sys.executable, "-m", "nats_fly", "fly", "region", "--app", "a", "--region", "ord",
                             "--count", str(count), "--volume", "nats_data", "--size", "10"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(state_path.read_text()), result.stdout + result.stderr


def machine(i, region="ord", state="started"):
    return {"id": f"m{i}", "region": region, "state": state, "created_at": f"2026-01-0{i + 1}T00:00:00Z"}


def test_shrinking_a_jetstream_region_stops_removes_destroys_then_prunes(tmp_path):
    password = "sys-" + "p" * 20
    machines = [machine(i) for i in range(5)] + [machine(7, region="syd")]
    volumes = [vol(i, attached=f"m{i}") for i in range(5)] + [vol(7, region="syd", attached="m7")]
    state, output = run_shrink(tmp_path, {"volumes": volumes, "machines": machines}, 3, password)
    steps = [a[:3] for a in state["log"] if a[:2] not in (["volumes", "list"], ["machine", "list"])]
    # Newest first, each one stopped (lame duck), forgotten by JetStream, then destroyed.
    assert steps == [["machine", "stop", "m4"], ["nats", "$JS.API.SERVER.REMOVE", "ord-m4"],
                     ["machine", "destroy", "m4"],
                     ["machine", "stop", "m3"], ["nats", "$JS.API.SERVER.REMOVE", "ord-m3"],
                     ["machine", "destroy", "m3"],
                     ["scale", "count", "3"], ["volumes", "destroy", "vol_3"], ["volumes", "destroy", "vol_4"]], steps
    assert ["machine", "stop", "m4", "--app", "a"] in state["log"]
    assert ["machine", "destroy", "m4", "--force", "--app", "a"] in state["log"]
    removal = next(a for a in state["log"] if a[0] == "nats")
    assert removal[3:] == ["sys", password]  # the system user, the password from the environment
    assert not [a for a in state["log"] if a[0] != "nats" and password in " ".join(a)]
    assert password not in output
    assert {m["id"] for m in state["machines"]} == {"m0", "m1", "m2", "m7"}
    assert {v["id"] for v in state["volumes"]} == {"vol_0", "vol_1", "vol_2", "vol_7"}


def test_a_stopped_machine_goes_first_and_removal_to_zero_drains_all(tmp_path):
    machines = [machine(0), machine(1, state="stopped"), machine(2)]
    volumes = [vol(i, attached=f"m{i}") for i in range(3)]
    state, _ = run_shrink(tmp_path, {"volumes": volumes, "machines": machines}, 0, "sys-" + "q" * 20)
    order = [a[2] for a in state["log"] if a[:2] == ["machine", "destroy"]]
    assert order == ["m1", "m2", "m0"]
    assert ["machine", "stop", "m1", "--app", "a"] not in state["log"]  # already stopped
    assert [a[2] for a in state["log"] if a[0] == "nats"] == ["ord-m1", "ord-m2", "ord-m0"]
    assert state["machines"] == [] and state["volumes"] == []


def test_growing_or_no_password_keeps_plain_scale_count(tmp_path):
    machines = [machine(0)]
    state, _ = run_shrink(tmp_path, {"volumes": [vol(0, attached="m0")], "machines": machines}, 1, "sys-" + "r" * 20)
    assert not [a for a in state["log"] if a[0] == "nats" or a[:2] in (["machine", "stop"], ["machine", "destroy"])]


# --- leases, the per-app lock, and what a deploy needs first -----------------------------------------

SCRIPTED = r'''#!PYTHON
import fcntl, json, os, sys, time
state_path = os.environ["FAKE_FLY_STATE"]
args = sys.argv[1:]
lock = open(state_path + ".lock", "w")  # calls of the two apps run alongside: one state file, in turns
fcntl.flock(lock, fcntl.LOCK_EX)
with open(state_path) as f:
    state = json.load(f)
state["log"].append([time.time(), args])
failures = state.get("lease_failures", 0)
out, code, err = "", 0, ""
if args[:2] == ["scale", "count"]:
    if failures:
        state["lease_failures"] = failures - 1
        code, err = 1, "Error: failed to obtain lease: failed to get lease on VM 0e0d0c: machine ID 0e0d0c lease currently held by x@tokens.fly.io"
elif args[:2] == ["machine", "list"]:
    out = json.dumps(state.get("machines", []))
elif args[:2] == ["volumes", "list"]:
    out = json.dumps(state.get("volumes", []))
elif args[:2] == ["volumes", "create"]:
    region = args[args.index("--region") + 1]
    if region in state.get("full", []):
        code, err = 1, "Error: failed to create volume: aborted: no capacity"
    else:
        vol = {"id": "vol_%d" % len(state.setdefault("volumes", [])), "name": args[2], "region": region,
               "state": "created", "attached_machine_id": None}
        state["volumes"].append(vol)
        out = json.dumps(vol)
with open(state_path, "w") as f:
    json.dump(state, f)
fcntl.flock(lock, fcntl.LOCK_UN)
if args[:2] == ["scale", "count"] and not code:
    time.sleep(float(os.environ.get("FAKE_SCALE_SECONDS", "0")))
    fcntl.flock(lock, fcntl.LOCK_EX)
    with open(state_path) as f:
        state = json.load(f)
    state["log"].append([time.time(), ["done", *args]])
    with open(state_path, "w") as f:
        json.dump(state, f)
sys.stdout.write(out + "\n")
sys.stderr.write(err + ("\n" if err else ""))
sys.exit(code)
'''


def scripted(tmp_path: Path, state: dict, **env) -> tuple[dict, Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "flyctl").write_text(SCRIPTED.replace("PYTHON", sys.executable))
    (bin_dir / "flyctl").chmod(0o755)
    state_path = tmp_path / "state.json"
    state_path.write_text(json.dumps({**state, "log": []}))
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_FLY_STATE": str(state_path),
            **env}, state_path


def fly(env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "nats_fly", "fly", *args], env=env, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def fly_deploy(env: dict, files: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nats_fly", "fly", "deploy", "--app", "a"], env=env, text=True,
                          input=files, capture_output=True, timeout=60)


def test_region_commands_of_one_app_take_turns(tmp_path):
    """Every `scale count` leases all the app's Machines: two at once would wait on each other's leases
    and give up after a minute. Here they take turns; another app's goes alongside."""
    env, state_path = scripted(tmp_path, {}, FAKE_SCALE_SECONDS="1")
    runs = [fly(env, "region", "--app", app, "--region", region, "--count", "2")
            for app, region in (("a", "ord"), ("a", "syd"), ("a", "cdg"), ("b", "ord"))]
    for run in runs:
        _, err = run.communicate(timeout=60)
        assert run.returncode == 0, err
    log = json.loads(state_path.read_text())["log"]
    spans = {}
    for at, args in log:
        key = (args[args.index("--app") + 1], args[args.index("--region") + 1])
        spans.setdefault(key, []).append(at)
    a = sorted(v for (app, _), v in spans.items() if app == "a")
    assert all(first[1] <= second[0] for first, second in zip(a, a[1:])), a  # one after another
    b = spans[("b", "ord")]
    assert any(b[0] < other[1] and other[0] < b[1] for other in a)  # app b did not wait for app a


def test_a_lease_held_elsewhere_is_tried_again(tmp_path, monkeypatch):
    from nats_fly.processes import fly as flyops
    env, state_path = scripted(tmp_path, {"lease_failures": 1})
    monkeypatch.setattr(flyops, "LEASE_PAUSE", 0.1)
    monkeypatch.setenv("PATH", env["PATH"])
    monkeypatch.setenv("FAKE_FLY_STATE", str(state_path))
    flyops.converge_region("a", "ord", 2)
    scales = [args for _, args in json.loads(state_path.read_text())["log"] if args[:2] == ["scale", "count"]]
    assert len(scales) == 2
    state = json.loads(state_path.read_text())
    state["lease_failures"] = 5
    state_path.write_text(json.dumps(state))
    with pytest.raises(flyops.FlyError, match="failed to get lease on VM 0e0d0c"):
        flyops.converge_region("a", "ord", 2)


def deploy_files(**changes) -> str:
    from nats_fly.render import buildctx
    from nats_fly.config.settings import load
    return buildctx.to_stdin(buildctx.build_context(load({"app": "a", "regions": ["ord", "syd"], **changes})))


def mounted(i: int, region: str, volume: bool) -> dict:
    return {**machine(i, region), "config": {"mounts": [{"volume": f"vol_{i}", "path": "/data"}] if volume else []}}


def test_jetstream_switched_on_makes_one_volume_per_machine_then_deploys_immediate(tmp_path):
    machines = [mounted(0, "ord", False), mounted(1, "syd", False), mounted(2, "syd", False)]
    env, state_path = scripted(tmp_path, {"machines": machines, "volumes": [vol(9, region="syd")]})
    run = fly_deploy(env, deploy_files(jetstream=True, regions=["ord", "syd=2"]))
    assert run.returncode == 0, run.stderr
    calls = [args for _, args in json.loads(state_path.read_text())["log"]]
    creates = [c[c.index("--region") + 1] for c in calls if c[:2] == ["volumes", "create"]]
    assert creates == ["ord", "syd"]  # syd had one unattached volume already
    deploy = next(c for c in calls if c[0] == "deploy")
    assert deploy[deploy.index("--strategy") + 1] == "immediate"
    assert calls.index(deploy) > max(i for i, c in enumerate(calls) if c[:2] == ["volumes", "create"])


def test_jetstream_switched_off_is_refused_before_the_deploy(tmp_path):
    machines = [mounted(0, "ord", True), mounted(1, "syd", True)]
    env, state_path = scripted(tmp_path, {"machines": machines})
    run = fly_deploy(env, deploy_files())
    assert run.returncode == 1
    assert "jetstream: false, but the Machines of a hold JetStream volumes (ord: 1, syd: 1)" in run.stderr
    assert not [args for _, args in json.loads(state_path.read_text())["log"] if args[0] == "deploy"]
    probe = subprocess.run([sys.executable, "-m", "nats_fly", "fly", "probe", "--app", "a", "--jetstream", "false"],
                           env={**env, "FLY_API_TOKEN": "t"}, capture_output=True, text=True, timeout=60)
    assert json.loads(probe.stdout)["refusals"][0].startswith("nats-fly:jetstream: false, but the Machines of a")


def test_a_first_deploy_with_a_volume_left_elsewhere_gets_one_in_the_primary_region(tmp_path):
    """flyctl makes the first volume only when the app has no unattached one of the mount's name in any
    region; one left in syd would make it ask for one in ord (primary_region) instead."""
    env, state_path = scripted(tmp_path, {"machines": [], "volumes": [vol(5, region="syd")]})
    run = fly_deploy(env, deploy_files(jetstream=True, regions=["ord=3"]))
    assert run.returncode == 0, run.stderr
    calls = [args for _, args in json.loads(state_path.read_text())["log"]]
    assert [c[c.index("--region") + 1] for c in calls if c[:2] == ["volumes", "create"]] == ["ord"]
    (tmp_path / "fresh").mkdir()
    env, state_path = scripted(tmp_path / "fresh", {"machines": [], "volumes": []})
    assert fly_deploy(env, deploy_files(jetstream=True, regions=["ord=3"])).returncode == 0
    calls = [args for _, args in json.loads(state_path.read_text())["log"]]
    assert not [c for c in calls if c[:2] == ["volumes", "create"]]  # none anywhere: the deploy makes it


def test_a_region_re_created_reuses_the_volumes_left_behind(tmp_path):
    state = run_region(tmp_path, {"volumes": [vol(0, region="ord"), vol(1, region="ord")]}, 2)
    assert not [a for a in state["log"] if a[:2] == ["volumes", "create"]]


def test_a_region_without_room_is_named_with_its_count(tmp_path):
    env, _ = scripted(tmp_path, {"full": ["syd"]})
    run = fly(env, "region", "--app", "a", "--region", "syd", "--count", "3", "--volume", "nats_data", "--size", "10")
    _, err = run.communicate(timeout=60)
    assert run.returncode == 1
    assert "region syd: cannot place 3 more 'nats_data' volume(s) of 10 GB (one per Machine, 3 in all)" in err
    assert "failed to create volume: aborted: no capacity" in err


def test_the_probe_names_what_is_missing(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    probe = subprocess.run([sys.executable, "-m", "nats_fly", "fly", "probe", "--app", "a", "--jetstream", "true"],
                           env={"PATH": str(empty), "HOME": str(tmp_path)}, capture_output=True, text=True, timeout=60)
    problems = json.loads(probe.stdout)["problems"]
    assert [p.split(" ")[0] for p in problems] == ["flyctl", "openssl", "no"], problems
    assert "FLY_API_TOKEN" in problems[2]
