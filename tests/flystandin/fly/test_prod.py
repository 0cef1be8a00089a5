"""The prod stack (ord, syd, cdg) on the Fly stand-in, brought up by the components'
own flyctl command lines, exercised with real nats-py clients through the proxy."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nats
import pytest

from nats_fly_testkit import fly as fh
from nats_fly_testkit import support
from nats_fly_testkit.fly import Client, exchange
from nats_fly.contract.operations import FlyDeploy


@pytest.fixture(scope="module")
def prod(standin, apps):
    stack = apps.get("prod")
    assert fh.wait_mesh(standin, stack.app, stack.total, 120) is not None, fh.describe(standin.routes(stack.app))
    fh.wait_healthy(standin, stack.app)
    return stack


def require_complete_routes(standin, stack) -> None:
    """Messaging between servers needs every route connection (pool + pinned accounts)."""
    short = fh.wait_routes_complete(standin, stack.app)
    assert not short, f"route connections missing: {short}"


def test_every_route_connection_is_there(standin, prod):
    require_complete_routes(standin, prod)


def test_full_mesh(standin, prod):
    routes = standin.routes(prod.app)
    assert fh.full_mesh(routes, prod.total)
    assert sorted(r["region"] for r in routes) == sorted(prod.regions)


def test_message_crosses_edges_both_ways(standin, prod):
    require_complete_routes(standin, prod)

    async def go():
        syd = await Client(standin, prod, "syd").connect()
        ord_ = await Client(standin, prod, "ord").connect()
        try:
            assert syd.server.startswith("syd-") and ord_.server.startswith("ord-"), (syd.server, ord_.server)
            assert await exchange(syd, ord_, "edge.syd-to-ord") == [str(i).encode() for i in range(20)]
            assert await exchange(ord_, syd, "edge.ord-to-syd") == [str(i).encode() for i in range(20)]
        finally:
            await syd.close()
            await ord_.close()
    asyncio.run(go())


def test_tls_first_client_on_10001(standin, prod):
    require_complete_routes(standin, prod)

    async def go():
        tls = await Client(standin, prod, "cdg", tls=True).connect()
        plain = await Client(standin, prod, "ord").connect()
        try:
            assert tls.server.startswith("cdg-")
            assert len(await exchange(tls, plain, "tls.cdg-to-ord")) == 20
            assert len(await exchange(plain, tls, "tls.ord-to-cdg")) == 20
        finally:
            await tls.close()
            await plain.close()
    asyncio.run(go())


def test_library_verify_through_the_edge(standin, prod):
    """`nats-fly verify` (the library's own proof) agrees, run against the syd edge."""
    require_complete_routes(standin, prod)
    host, port = standin.edge(prod.app, "syd")
    expect = ",".join(f"{r}={n}" for r, n in prod.counts.items())
    proc = subprocess.run([sys.executable, "-m", "nats_fly", "verify", "--url", f"nats://{host}:{port}",
                           "--expect", expect, "--topology", "mesh", "--timeout", "20", "--json",
                           *(["--jetstream"] if prod.settings.jetstream else [])],
                          env={**os.environ, "NATS_SYS_PASSWORD": prod.sys_password},
                          capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_prod_keeps_jetstream_on_one_volume_per_machine(standin, prod):
    """prod is durable as configured: every Machine has its own volume of the configured size in its
    region, and an R3 stream written through syd is read back, whole, through cdg."""
    from nats_fly.contract import flyctl
    from nats_fly.render import flytoml
    assert prod.settings.jetstream and prod.settings.volume_size_gb == 10
    machines = fh.machine_list(standin, prod.app)
    volumes = json.loads(fh.sh(standin, flyctl.sh(flyctl.volumes_list(prod.app))).stdout)
    attached = {v["attached_machine_id"]: v for v in volumes if v["name"] == flytoml.VOLUME_NAME}
    assert sorted(attached) == sorted(m["id"] for m in machines), volumes
    for m in machines:
        assert (attached[m["id"]]["region"], attached[m["id"]]["size_gb"]) == (m["region"], 10)
        assert m["config"]["mounts"][0]["path"] == "/data"

    async def go():
        syd = await Client(standin, prod, "syd").connect()
        cdg = await Client(standin, prod, "cdg").connect()
        js = syd.nc.jetstream()
        try:
            await support.answered(lambda: js.add_stream(name="PROD", subjects=["prod.>"], num_replicas=3))
            # A publish asked again keeps its Nats-Msg-Id: stored once, at the seq the first one got.
            acks = [await support.answered(lambda i=i: js.publish(f"prod.{i}", str(i).encode(),
                                                                  headers={"Nats-Msg-Id": f"prod.{i}"}))
                    for i in range(50)]
            sub = await support.answered(lambda: cdg.nc.jetstream().pull_subscribe("prod.>", durable="reader",
                                                                                   stream="PROD"))
            got: list[int] = []
            deadline = time.monotonic() + 120
            while len(got) < 50:
                try:
                    msgs = await sub.fetch(50 - len(got), timeout=5)
                except nats.errors.TimeoutError:
                    assert time.monotonic() < deadline, f"{len(got)} of 50 read through cdg in 120s"
                    continue
                for m in msgs:  # acked, so that a slow read is not sent them again
                    await m.ack()
                    got.append(int(m.data))
            info = await support.answered(lambda: cdg.nc.jetstream().stream_info("PROD"))
            return acks, got, info
        finally:
            await support.answered(lambda: js.delete_stream("PROD"))
            await syd.close()
            await cdg.close()
    acks, got, info = asyncio.run(go())
    assert [a.seq for a in acks] == list(range(1, 51)) and got == list(range(50))
    assert info.state.messages == 50 and len(info.cluster.replicas) == 2, info.cluster


def test_killed_machine_clients_reconnect_and_mesh_stays_whole(standin, prod):
    require_complete_routes(standin, prod)

    async def go():
        syd = await Client(standin, prod, "syd").connect()
        ord_ = await Client(standin, prod, "ord").connect()
        try:
            victim = syd.server.split("-", 1)[1]
            standin.kill_machine(victim)
            await asyncio.wait_for(syd.reconnected.wait(), 120)
            # syd has no other Machine: the proxy falls back to the nearest region, ord.
            assert syd.server.startswith("ord-"), syd.server
            assert len(await exchange(syd, ord_, "kill.syd-to-ord")) == 20
            assert ord_.disconnects == 0
            assert fh.wait_mesh(standin, prod.app, prod.total - 1, 120) is not None
        finally:
            await syd.close()
            await ord_.close()
        return victim
    victim = asyncio.run(go())
    standin.start_machine(victim)
    assert fh.wait_mesh(standin, prod.app, prod.total, 120) is not None


def test_region_added_joins_and_removed_region_goes_unnoticed(standin, prod):
    fh.region_up(standin, prod, "ams", 1)  # NatsRegion create
    assert fh.wait_mesh(standin, prod.app, prod.total + 1, 120) is not None
    assert "ams" in standin.dns(f"regions.{prod.app}.internal", qtype=16)["answers"][0]
    require_complete_routes(standin, prod)

    async def go():
        syd = await Client(standin, prod, "syd").connect()
        ord_ = await Client(standin, prod, "ord").connect()
        received: list[int] = []
        ended = asyncio.Event()

        async def on_message(msg):
            if msg.data == b"end":
                ended.set()
            else:
                received.append(int(msg.data))
        sub = await ord_.nc.subscribe("stream.syd", cb=on_message)
        await ord_.nc.flush()
        await exchange(syd, ord_, "stream.warmup", count=1)
        sent = 0
        stop = asyncio.Event()

        async def publish():
            nonlocal sent
            while not stop.is_set():
                await syd.nc.publish("stream.syd", str(sent).encode())
                sent += 1
                await asyncio.sleep(0.01)
        task = asyncio.create_task(publish())
        await asyncio.sleep(0.5)
        await asyncio.to_thread(fh.region_up, standin, prod, "ams", 0)  # NatsRegion delete
        await asyncio.sleep(1.0)
        stop.set()
        await task
        # One connection's messages keep their order: once the end marker is heard, whatever has not
        # come was lost, not late.
        await support.until_heard(syd.nc, "stream.syd", b"end", ended, 60)
        await sub.unsubscribe()
        try:
            return sent, received, syd.disconnects + ord_.disconnects
        finally:
            await syd.close()
            await ord_.close()

    sent, received, disconnects = asyncio.run(go())
    assert received == list(range(sent)), f"lost {sorted(set(range(sent)) - set(received))[:10]}"
    assert disconnects == 0
    listed = fh.machine_list(standin, prod.app)
    assert "ams" not in {m["region"] for m in listed}
    assert "ams" not in standin.dns(f"regions.{prod.app}.internal", qtype=16)["answers"][0]
    assert fh.wait_mesh(standin, prod.app, prod.total, 120) is not None


def test_rolling_redeploy_replaces_one_machine_at_a_time(standin, prod, tmp_path):
    before = {m["id"]: m["region"] for m in fh.machine_list(standin, prod.app)}
    changed = fh.Stack(dataclasses.replace(prod.settings, peer_wait=prod.settings.peer_wait + 1),
                       prod.sys_password, prod.user_passwords)
    context = fh.render_ours(changed, tmp_path / "build")
    started = time.time() * 1000
    out = fh.sh(standin, FlyDeploy(app=prod.app, dir=Path(context)).command(sys.executable)).stdout
    assert "with rolling strategy" in out
    after = fh.machine_list(standin, prod.app)
    assert {m["id"]: m["region"] for m in after} == before  # updated in place, counts kept
    # Each Machine's window from its update to its start again: they never overlap.
    windows = []
    for m in after:
        events = [e for e in reversed(m["events"]) if e["timestamp"] >= started]
        update = next(e["timestamp"] for e in events if e["type"] == "update")
        restart = next(e["timestamp"] for e in events if e["type"] == "start" and e["timestamp"] >= update)
        windows.append((update, restart))
    windows.sort()
    assert all(a[1] <= b[0] for a, b in zip(windows, windows[1:])), windows
    versions = {m["config"]["metadata"]["fly_release_version"] for m in after}
    assert len(versions) == 1 and all(c["status"] == "passing" for m in after for c in m["checks"])
    assert fh.wait_mesh(standin, prod.app, prod.total, 120) is not None
