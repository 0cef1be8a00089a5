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
