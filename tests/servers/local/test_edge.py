"""The edge on the local platform, with real servers run by localrun from the library's own confs:
WebSocket clients and leaf nodes, with the users and passwords of the client port."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

import nats
import pytest

from nats_fly.config.settings import load
from nats_fly.platforms.local import ports as local_ports
from nats_fly.processes import local as localrun
from nats_fly.render import natsconf
from nats_fly.render.secrets import route_password, server_environment
from nats_fly_testkit.support import exchange, free_ports, nats_server_binary

PASSWORDS = {"app": "edge-app-password-1"}
LEAF = {"edge": "edge-leaf-password-1"}
SYS = "edge-sys-password-1"


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    s = load({"app": "edge-local", "platform": "local", "regions": ["ord", "syd"], "websocket": True,
              "leafnodes": True, "leafUsers": ["edge"]})
    for name, value in server_environment(s, SYS, route_password(s.app, SYS), PASSWORDS, LEAF).items():
        monkeypatch.setenv(name, natsconf.conf_string(value))
    servers = local_ports.servers(s, localrun.choose_ports(local_ports.server_names(s), {}))
    state = tmp_path / "local"
    for sv in servers:
        conf = natsconf.to_json(natsconf.local_conf(s, sv, servers, str(state / sv.name)))
        localrun.ensure(sv.name, conf, state, sv.client_port, sv.monitor_port, nats_version=s.nats_version)
    yield s, servers
    for sv in servers:
        localrun.stop(sv.name, state, timeout=5)


async def deliver(publisher, subscriber, subject: str) -> bytes:
    return b"".join(await exchange(publisher, subscriber, subject, [b"over the edge"]))


def test_websocket_and_tcp_clients_of_two_regions_meet(cluster):
    s, (ord_server, syd_server) = cluster

    async def meet():
        ws = await nats.connect(ord_server.websocket_url, user="app", password=PASSWORDS["app"], allow_reconnect=False)
        tcp = await nats.connect(syd_server.client_url, user="app", password=PASSWORDS["app"], allow_reconnect=False)
        there, back = await deliver(ws, tcp, "ws.to.tcp"), await deliver(tcp, ws, "tcp.to.ws")
        await ws.close()
        await tcp.close()
        with pytest.raises(Exception):
            await nats.connect(ord_server.websocket_url, user="app", password="wrong-password", allow_reconnect=False,
                               max_reconnect_attempts=1)
        return there, back

    assert asyncio.run(meet()) == (b"over the edge", b"over the edge")


def test_a_leaf_node_joins_with_its_password_and_not_without(cluster, tmp_path):
    s, (ord_server, syd_server) = cluster
    procs = []

    def leaf(name: str, password: str) -> tuple[str, Path]:
        client, http = free_ports(2)
        snippet = natsconf.leaf_remote_snippet(s, ord_server.leafnode_url, tls_first=False)
        conf = tmp_path / f"{name}.conf"
        conf.write_text(f"server_name: {name}\nlisten: 127.0.0.1:{client}\nhttp: 127.0.0.1:{http}\n"
                        + snippet.replace("<its leafPasswords entry>", quote(password, safe="")))
        log = tmp_path / f"{name}.log"
        procs.append(subprocess.Popen([nats_server_binary(), "-c", str(conf)], stdout=open(log, "w"),
                                      stderr=subprocess.STDOUT))
        return f"nats://127.0.0.1:{client}", log

    try:
        good, _ = leaf("leaf-good", LEAF["edge"])
        bad, bad_log = leaf("leaf-bad", "not-the-password")

        async def run():
            local = await nats.connect(good, allow_reconnect=True, max_reconnect_attempts=20, reconnect_time_wait=0.2)
            hub = await nats.connect(syd_server.client_url, user="app", password=PASSWORDS["app"])
            results = (await deliver(local, hub, "leaf.to.hub"), await deliver(hub, local, "hub.to.leaf"))
            spy = await nats.connect(bad, allow_reconnect=True, max_reconnect_attempts=20, reconnect_time_wait=0.2)
            heard = []

            async def on_message(msg):
                heard.append(msg.data)
            await spy.subscribe("hub.>", cb=on_message)
            await spy.flush()
            # All 20 reach the joined leaf's client; by then, none has reached the refused one's.
            joined = await exchange(hub, local, "hub.secret", [b"not for strangers"] * 20)
            for nc in (local, hub, spy):
                await nc.close()
            return results, len(joined), heard

        (there, back), joined, heard = asyncio.run(run())
        assert (there, back) == (b"over the edge", b"over the edge")
        assert joined == 20 and heard == []
        deadline = time.monotonic() + 60
        while "Authorization Violation" not in bad_log.read_text():
            assert time.monotonic() < deadline, bad_log.read_text()
            time.sleep(0.1)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
