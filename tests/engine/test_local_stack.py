"""The embedded default with the real engine: up -> verify -> add a region -> verify -> no-op up
-> destroy, with real nats-server processes, and nothing left behind."""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import subprocess
from pathlib import Path
from urllib.parse import quote

import pytest

from nats_fly.processes.verify import Expectation, verify
from nats_fly_testkit.support import ca_signed_pair, free_ports, nats_server_binary, nats_servers

PASSWORD = "e2e-system-password-Zq81"


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def whole(outputs: dict, topology: str = "mesh"):
    report = asyncio.run(verify(outputs["clientUrls"], Expectation(regions=outputs["machines"], topology=topology),
                                user="sys", password=PASSWORD, timeout=20))
    print(report.table())
    assert report.ok, report.table()
    return report


async def websocket_hello(ws_url: str, tcp_url: str) -> bytes:
    """What a WebSocket client hears from a TCP client of (maybe) another server: support.exchange
    probes until the subscription's interest has crossed the routes."""
    import nats
    from nats_fly_testkit.support import exchange
    ws = await nats.connect(ws_url, allow_reconnect=False)
    tcp = await nats.connect(tcp_url, allow_reconnect=False)
    try:
        return b"".join(await exchange(tcp, ws, "hello", [b"hello"]))
    finally:
        await ws.close()
        await tcp.close()


def test_local_stack_lifecycle(project, tmp_path):
    stack = project("local")
    stack.config({"localBasePort": 24000, "websocket": True})
    stack.pulumi("config", "set", "--secret", "sysPassword", stdin=PASSWORD)
    marker = str(stack.root)
    try:
        stack.pulumi("up", "--yes", "--skip-preview")
        outputs = stack.outputs()
        assert outputs["machines"] == {"ord": 1, "syd": 1, "cdg": 1}
        whole(outputs)
        # The stack's own verify (verify: true) proved each region's WebSocket path; a client here too.
        assert outputs["websocketUrl"].startswith("ws://127.0.0.1:")
        assert asyncio.run(websocket_hello(outputs["websocketUrl"], outputs["clientUrl"])) == b"hello"
        assert len(nats_servers(marker)) == 3

        stack.config({"regions": ["ord", "syd", "cdg", "lhr=2"]})
        stack.pulumi("up", "--yes", "--skip-preview")
        outputs = stack.outputs()
        assert outputs["machines"]["lhr"] == 2
        whole(outputs)
        assert len(nats_servers(marker)) == 5

        noop = stack.pulumi("up", "--yes", "--skip-preview", "--expect-no-changes")
        changes = stack.last_changes()
        assert set(changes) == {"same"}, (changes, noop.stdout)

        stack.config({"topology": "supercluster"})
        stack.pulumi("up", "--yes", "--skip-preview")
        whole(stack.outputs(), topology="supercluster")

        # The password was set with --secret: it is in no state, output or console text.
        exported = stack.pulumi("stack", "export").stdout
        assert PASSWORD not in exported
        assert all(PASSWORD not in entry for entry in stack.log)
        ports = [int(u.rsplit(":", 1)[1]) for urls in outputs["serverUrls"].values() for u in urls]
    finally:
        stack.pulumi("destroy", "--yes", "--skip-preview", check=False)
        leftover = nats_servers(marker)
        for pid in leftover:
            subprocess.run(["kill", "-9", str(pid)], check=False)
    assert not leftover, f"nats-server processes left after destroy: {leftover}"
    assert not [p for p in ports if listening(p)]
    assert not (stack.root / ".nats-fly").exists()  # the cluster's folders went with it


LEAF_PASSWORD = "leaf-password-for/the edge?"  # characters a URL's userinfo must escape


async def landed(url: str, tls: ssl.SSLContext | None, **options) -> tuple[str, int]:
    """Connect nats-py to `url`, prove a message goes through, and return the server it landed on and
    how many other servers it was told of (INFO connect_urls)."""
    import nats
    nc = await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=1, connect_timeout=5,
                            **({"tls": tls} if tls and not url.startswith("ws") else {}), **options)
    try:
        sub = await nc.subscribe("urls.hello")
        await nc.publish("urls.hello", url.encode())
        assert (await sub.next_msg(timeout=5)).data == url.encode()
        return nc._server_info["server_name"], len(nc.discovered_servers)
    finally:
        await nc.close()


def joined_leaf(tmp_path: Path, outputs: dict, tls: ssl.SSLContext | None) -> None:
    """A real leaf nats-server, its conf made of leafRemotes with the password filled in (URL-escaped):
    nats-server's own parser takes the URL (`-t`), and a message published at the hub reaches a client
    of the leaf."""
    import nats
    assert outputs["leafRemotes"].count("<its leafPasswords entry>") == 1
    assert outputs["leafUrl"].replace("://", f"://edge:<its leafPasswords entry>@") in outputs["leafRemotes"]
    client, monitor = free_ports(2)
    conf = tmp_path / "leaf.conf"
    conf.write_text(f'server_name: "leaf"\nlisten: "127.0.0.1:{client}"\nhttp: "127.0.0.1:{monitor}"\n'
                    + outputs["leafRemotes"].replace("<its leafPasswords entry>", quote(LEAF_PASSWORD, safe="")))
    checked = subprocess.run([nats_server_binary(), "-t", "-c", str(conf)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    leaf = subprocess.Popen([nats_server_binary(), "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)

    async def crossing() -> None:
        deadline = asyncio.get_running_loop().time() + 30
        while True:  # until the leaf has joined: publish again, a bounded wait on the message itself
            try:
                near = await nats.connect(f"nats://127.0.0.1:{client}", allow_reconnect=False, connect_timeout=2)
                break
            except Exception:
                assert asyncio.get_running_loop().time() < deadline, "the leaf server never listened"
                await asyncio.sleep(0.1)
        hub = await nats.connect(outputs["clientUrl"], allow_reconnect=False, **({"tls": tls} if tls else {}))
        try:
            sub = await near.subscribe("leaf.hello")
            await near.flush()
            while True:
                await hub.publish("leaf.hello", b"through the leaf")
                try:
                    assert (await sub.next_msg(timeout=0.5)).data == b"through the leaf"
                    return
                except nats.errors.TimeoutError:
                    assert asyncio.get_running_loop().time() < deadline, "no message reached the leaf"
        finally:
            await near.close()
            await hub.close()

    try:
        asyncio.run(crossing())
    finally:
        leaf.kill()
        leaf.wait()


def every_url_works(tmp_path: Path, outputs: dict, per_region: int, tls: ssl.SSLContext | None) -> None:
    scheme = "tls" if tls else "nats"
    total = per_region * len(outputs["machines"])
    assert re.fullmatch(rf"{scheme}://127\.0\.0\.1:\d+", outputs["clientUrl"]), outputs["clientUrl"]
    # One URL, yet the client learns every other server of the mesh and could fail over to it.
    assert asyncio.run(landed(outputs["clientUrl"], tls)) == ("ord-0", total - 1)
    if tls:
        assert outputs["tlsUrl"] == outputs["clientUrl"]
        assert asyncio.run(landed(outputs["tlsUrl"], tls, tls_handshake_first=True))[0] == "ord-0"
    else:
        assert outputs["tlsUrl"] == ""
    assert asyncio.run(landed(outputs["websocketUrl"], tls))[0] == "ord-0"
    assert {r: len(urls) for r, urls in outputs["serverUrls"].items()} == outputs["machines"]
    for region, urls in outputs["serverUrls"].items():
        assert outputs["clientUrls"][region] == urls[0]
        for index, url in enumerate(urls):
            assert asyncio.run(landed(url, tls))[0] == f"{region}-{index}"
    joined_leaf(tmp_path, outputs, tls)


@pytest.mark.parametrize("server_tls", [False, True], ids=["plain", "serverTls"])
def test_every_url_output_works_before_and_after_a_scale(project, tmp_path, server_tls):
    """Each URL output (each element of the list ones) takes a real nats-py client, the leaf URL a real
    leaf nats-server, at one server per region and after scaling to two; with serverTls the client
    URLs say tls:// and a client trusting the test CA connects (the stack's own verify did too)."""
    stack = project("local")
    stack.config({"regions": ["ord", "syd"], "websocket": True, "leafnodes": True, "leafUsers": ["edge"],
                  "serverTls": server_tls})
    stack.pulumi("config", "set", "--secret", "sysPassword", stdin=PASSWORD)
    stack.pulumi("config", "set", "--secret", "--path", "leafPasswords.edge", stdin=LEAF_PASSWORD)
    tls = None
    if server_tls:
        ca, cert, key = ca_signed_pair(tmp_path / "pki")
        stack.pulumi("config", "set", "--secret", "tlsCert", stdin=cert)
        stack.pulumi("config", "set", "--secret", "tlsKey", stdin=key)
        tls = ssl.create_default_context(cafile=str(ca))
    try:
        stack.pulumi("up", "--yes", "--skip-preview")
        every_url_works(tmp_path, stack.outputs(), 1, tls)
        stack.config({"machinesPerRegion": 2})
        stack.pulumi("up", "--yes", "--skip-preview")
        every_url_works(tmp_path, stack.outputs(), 2, tls)
        exported = stack.pulumi("stack", "export").stdout
        assert "PRIVATE KEY" not in exported and LEAF_PASSWORD not in exported
    finally:
        stack.pulumi("destroy", "--yes", "--skip-preview", check=False)
        for pid in nats_servers(str(stack.root)):
            subprocess.run(["kill", "-9", str(pid)], check=False)
    assert not (stack.root / ".nats-fly").exists()
