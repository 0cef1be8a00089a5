"""R3 streams in a mesh of fewer than 3 regions (issue 17, 4.4), with real servers run by localrun from
the library's own confs: `unique_tag: "region:"` is rendered only for 3 regions or more, so a mesh of
one or two regions places R3 streams (replicas share a region), where the tag made every R3 stream fail
(`no suitable peers for placement`, shown here with the tag put back); and a mesh of 3 regions puts
each replica in another region."""

from __future__ import annotations

import asyncio
import json
import time

import nats
import pytest
from nats.js.errors import APIError

from nats_fly.processes import local as localrun
from nats_fly.processes.jetstream import Connections, Target
from nats_fly.render import natsconf
from nats_fly.render.secrets import server_environment, route_password
from nats_fly.config.settings import load
from nats_fly.platforms.local import ports as local_ports
from nats_fly_testkit.verify_clusters import wait_for_meta_peers

SYS = "placement-sys-password-1"


@pytest.fixture
def mesh(tmp_path, monkeypatch):
    """start(regions, unique_tag=None, settled=True) -> the client URLs of a local JetStream mesh (auth none);
    settled: once the meta group knows every server."""
    started: list[tuple[str, object]] = []

    def start(regions: list[str], unique_tag: str | None = None, settled: bool = True,
              held: int = 0) -> list[str]:
        """held: the last `held` servers wait for start.release() (which returns once they run)."""
        s = load({"app": f"js-{len(started)}", "platform": "local", "regions": regions, "auth": "none",
                  "jetstream": True})
        for name, value in server_environment(s, SYS, route_password(s.app, SYS), {}).items():
            monkeypatch.setenv(name, natsconf.conf_string(value))
        servers = local_ports.servers(s, localrun.choose_ports(local_ports.server_names(s), {}))
        state = tmp_path / s.app

        def run(chosen):
            for sv in chosen:
                conf = natsconf.local_conf(s, sv, servers, str(state / sv.name))
                if unique_tag:
                    conf["jetstream"]["unique_tag"] = unique_tag
                localrun.ensure(sv.name, natsconf.to_json(conf), state, sv.client_port, sv.monitor_port,
                                nats_version=s.nats_version)
                started.append((sv.name, state))
        run(servers[:len(servers) - held])
        start.release = lambda: run(servers[len(servers) - held:])
        if settled:
            wait_for_meta_peers([sv.monitor_port for sv in servers], len(servers))
        return [sv.client_url for sv in servers]
    yield start
    for name, state in started:
        localrun.stop(name, state, timeout=5)


async def r3_stream(urls: list[str], name: str) -> dict:
    """Create an R3 stream once the meta group answers; its cluster info (leader, replicas), or APIError."""
    nc = await nats.connect(urls, allow_reconnect=False)
    try:
        js = nc.jetstream(timeout=5)
        deadline = time.monotonic() + 30
        while True:
            try:
                await js.add_stream(name=name, subjects=[f"{name}.>"], num_replicas=3)
                break
            except APIError as error:
                # 10008: JetStream not ready yet. 10005 lists its reasons: "peer offline" (or no reason at all)
                # is a peer whose info has not reached the meta leader yet; the tags alone to blame is final
                not_yet = error.err_code == 10008 or (error.err_code == 10005 and (
                    "peer offline" in str(error) or "tag" not in str(error)))
                if not not_yet or time.monotonic() > deadline:
                    raise
            except nats.errors.TimeoutError:
                assert time.monotonic() < deadline, "JetStream never answered"
            await asyncio.sleep(0.2)
        while True:  # every replica reports once the stream's group has formed
            info = await js.stream_info(name)
            peers = [info.cluster.leader] + [r.name for r in info.cluster.replicas or []]
            if len([p for p in peers if p]) == 3 or time.monotonic() > deadline:
                return {"servers": peers}
            await asyncio.sleep(0.2)
    finally:
        await nc.close()


def regions_of(servers: list[str]) -> list[str]:
    return sorted(server.rpartition("-")[0] for server in servers)


@pytest.mark.parametrize("regions", [["ord=3"], ["ord=2", "syd"]], ids=["one region", "two regions"])
def test_fewer_than_3_regions_place_r3_streams(mesh, regions):
    s = load({"app": "x", "platform": "local", "regions": regions, "auth": "none", "jetstream": True})
    servers = local_ports.servers(s)
    assert "unique_tag" not in natsconf.local_conf(s, servers[0], servers, "/tmp/x")["jetstream"]
    placed = asyncio.run(r3_stream(mesh(regions), "orders"))
    assert len(placed["servers"]) == 3


def test_the_region_tag_would_leave_two_regions_without_r3(mesh):
    with pytest.raises(APIError) as caught:
        asyncio.run(r3_stream(mesh(["ord=2", "syd"], unique_tag="region:"), "orders"))
    assert "no suitable peers for placement" in str(caught.value) and "tag" in str(caught.value)


def test_three_regions_put_each_replica_in_another_region(mesh):
    urls = mesh(["ord=2", "syd=2", "cdg=2"])
    for stream in ("a", "b", "c", "d"):
        placed = asyncio.run(r3_stream(urls, stream))
        assert regions_of(placed["servers"]) == ["cdg", "ord", "syd"], placed


async def no_suitable_peers(api) -> None:
    """Until the two servers' meta group answers an R3 create with 10005 (it has a leader, and no third peer)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            answer = json.loads((await api.client.request("$JS.API.STREAM.CREATE.probe", json.dumps(
                {"name": "probe", "subjects": ["probe.>"], "num_replicas": 3}).encode(), timeout=2)).data)
            if (answer.get("error") or {}).get("err_code") == 10005:
                return
        except nats.errors.Error:
            pass
        assert time.monotonic() < deadline, "the two servers never answered with 10005"
        await asyncio.sleep(0.2)


def test_the_assets_create_of_an_r3_stream_waits_for_a_server_the_cluster_has_not_heard_yet(mesh):
    """What an asset meets on a cluster's first up: a server not heard from yet (started last, or its news
    not yet at the meta leader) makes a create hear 'no suitable peers for placement'. The provider's create
    asks again while JetStream settles: here the third server starts 2 s after the create was first sent,
    and the stream lands in 3 regions."""
    urls = mesh(["ord", "syd", "cdg"], settled=False, held=1)

    async def create() -> dict:
        connections = Connections("test-first-up")
        try:
            api = await connections.api(Target(tuple(urls[:2])))
            await no_suitable_peers(api)
            asking = asyncio.create_task(api.stream_create({"name": "first", "subjects": ["first.>"],
                                                            "num_replicas": 3}))
            await asyncio.sleep(2)
            assert not asking.done(), asking.result()
            await asyncio.to_thread(mesh.release)
            return await asking
        finally:
            await connections.close()

    info = asyncio.run(create())
    assert info["config"]["num_replicas"] == 3
