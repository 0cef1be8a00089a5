"""The embedded default with the real engine: up -> verify -> add a region -> verify -> no-op up
-> destroy, with real nats-server processes, and nothing left behind."""

from __future__ import annotations

import asyncio
import socket
import subprocess

from nats_fly.verify import Expectation, verify
from support import nats_servers

PASSWORD = "e2e-system-password-Zq81"


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def whole(outputs: dict, topology: str = "mesh"):
    urls = {region: urls.split(",")[0] for region, urls in outputs["clientUrls"].items()}
    report = asyncio.run(verify(urls, Expectation(regions=outputs["machines"], topology=topology),
                                user="sys", password=PASSWORD, timeout=20))
    print(report.table())
    assert report.ok, report.table()
    return report


async def websocket_hello(ws_url: str, tcp_url: str) -> bytes:
    """What a WebSocket client hears from a TCP client of (maybe) another server: support.exchange
    probes until the subscription's interest has crossed the routes."""
    import nats
    from support import exchange
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
        ports = [int(u.rsplit(":", 1)[1]) for urls in outputs["clientUrls"].values() for u in urls.split(",")]
    finally:
        stack.pulumi("destroy", "--yes", "--skip-preview", check=False)
        leftover = nats_servers(marker)
        for pid in leftover:
            subprocess.run(["kill", "-9", str(pid)], check=False)
    assert not leftover, f"nats-server processes left after destroy: {leftover}"
    assert not [p for p in ports if listening(p)]
    assert not (stack.root / ".nats-fly").exists()  # the cluster's folders went with it
