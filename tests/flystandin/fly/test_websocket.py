"""Issue 14, item 1: browsers at the edge. The prod stack as configured (websocket on) serves
nats-server's WebSocket listener through Fly's proxy on 443 (tls + http handlers): a real nats-py
WebSocket client at one edge and a TCP client in another region exchange messages both ways, a page
of another origin and a wrong password are refused, and verify proves the WebSocket path."""
from __future__ import annotations

import asyncio
import ssl

import nats
import pytest

from nats_fly_testkit import fly as fh
from nats_fly.processes.verify import Expectation, verify
from nats_fly_testkit.fly import Client, exchange


@pytest.fixture(scope="module")
def prod(standin, apps):
    stack = apps.get("prod")
    assert stack.settings.websocket, "config/Pulumi.prod.yaml says websocket: true"
    fh.wait_healthy(standin, stack.app)
    return stack


class WebSocketClient(Client):
    """The same client, over wss://<app>.fly.dev (the edge's 443) as a browser would reach it."""

    def __init__(self, standin, stack, region: str, origin: str | None = None, password: str | None = None,
                 anonymous: bool = False):
        super().__init__(standin, stack, region)
        self.origin, self.password, self.anonymous = origin, password, anonymous

    async def connect(self):
        host, port = self.standin.edge(self.stack.app, self.region, 443)
        context = ssl.create_default_context(cafile=self.standin.ca_file)
        headers = {"Origin": [self.origin]} if self.origin else None
        login = {} if self.anonymous else {"user": "app", "password": self.password or self.stack.user_password("app")}
        self.nc = await nats.connect(f"wss://{host}:{port}", tls=context, connect_timeout=5, allow_reconnect=False,
                                     max_reconnect_attempts=1, ws_connection_headers=headers, name=f"ws@{self.region}",
                                     **login)
        return self


def run(coro):
    return asyncio.run(coro)


def test_websocket_at_one_edge_and_tcp_in_another_region_exchange_messages(standin, prod):
    async def both_ways():
        page = WebSocketClient(standin, prod, "syd", origin=f"https://{prod.app}.fly.dev")
        await page.connect()
        tcp = await Client(standin, prod, "cdg").connect()
        try:
            assert page.nc._server_info["server_name"].startswith("syd-")  # the nearest Machine
            there = await exchange(page, tcp, "edge.ws-to-tcp")
            back = await exchange(tcp, page, "edge.tcp-to-ws")
        finally:
            await page.nc.close()
            await tcp.nc.close()
        return there, back

    there, back = run(both_ways())
    assert there == [str(i).encode() for i in range(20)] and back == there


def test_a_page_of_another_origin_and_a_wrong_password_are_refused(standin, prod):
    async def attempt(**kw) -> str:
        try:
            client = await WebSocketClient(standin, prod, "ord", **kw).connect()
        except Exception as error:  # noqa: BLE001: the refusal, in whichever shape nats-py gives it
            return f"refused: {type(error).__name__}"
        await client.nc.close()
        return "accepted"

    assert run(attempt(origin="https://evil.example")) == "refused: NoServersError"  # 403 at the upgrade
    assert run(attempt(password="not-the-password")).startswith("refused")
    assert run(attempt(anonymous=True)).startswith("refused")  # no password at all: the client port's rule
    assert run(attempt(origin=f"https://{prod.app}.fly.dev")) == "accepted"
    assert run(attempt()) == "accepted"  # no Origin: not a browser page


def test_verify_proves_the_websocket_path(standin, prod):
    urls = {r: "nats://%s:%d" % standin.edge(prod.app, r) for r in prod.regions}
    ws = {r: "wss://%s:%d" % standin.edge(prod.app, r, 443) for r in prod.regions}
    report = run(verify(urls, Expectation(regions=prod.counts, jetstream=True), user="sys",
                        password=prod.sys_password, timeout=30, tls_ca_file=standin.ca_file, websocket_urls=ws))
    assert report.ok, report.table()
    ws_checks = [c.name for c in report.checks if "websocket" in c.name]
    assert len(ws_checks) == 9, ws_checks  # per region: where it lands, and messages each way
