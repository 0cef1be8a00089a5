"""The small stacks (see small_stacks.py), with nats-py clients through the stand-in's edges:
`auth: none` lets anonymous clients in; serverTls takes TLS-first clients straight on the raw
port; a supercluster serves a request from a region's own responder when it has one."""
from __future__ import annotations

import asyncio
import itertools
import socket
import ssl
import statistics
import time

import nats
import pytest

from nats_fly_testkit import durable as d
from nats_fly_testkit.support import exchange


def run(coro):
    return asyncio.run(coro)


async def round_trip(a, b, subject: str) -> bytes:
    """What b hears of one message published on a (support.exchange: interest crosses the routes first)."""
    return b"".join(await exchange(a, b, subject, [b"hello"]))


# --- 5: auth none ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def open_stack(side_stacks):
    return side_stacks["open"].result()


def test_auth_none_lets_anonymous_clients_in(standin, open_stack):
    app, region = open_stack.app, open_stack.regions[0]

    async def go():
        assert await d.refused(standin, app, region) == ""
        a = await d.Client(standin, app, region, name="anonymous-a").connect()
        b = await d.Client(standin, app, region, name="anonymous-b").connect()
        try:
            return await round_trip(a.nc, b.nc, "open.hello")
        finally:
            await a.close()
            await b.close()
    assert run(go()) == b"hello"


def tls_first_probe(edge: tuple[str, int], context: ssl.SSLContext, hostname: str) -> tuple[str, str]:
    """A TLS handshake first thing on the connection, then the server's first line."""
    with socket.create_connection(edge, timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=hostname) as tls:
            subject = dict(x[0] for x in tls.getpeercert()["subject"])["commonName"]
            return subject, tls.makefile("r").readline()


# --- 4: serverTls with a user certificate, TLS-first straight on :10000 ------------------------------

@pytest.fixture(scope="module")
def tls_stack(side_stacks):
    return side_stacks["tls"].result()


def test_server_tls_takes_tls_first_clients_on_the_raw_port(standin, tls_stack):
    stack, cert = tls_stack
    app, region = stack.app, stack.regions[0]
    context = ssl.create_default_context(cafile=cert.ca_file)

    async def go():
        tls = await d.Client(standin, app, region, "app", stack.user_password(), port=10000, tls=context,
                             name="tls-first@10000").connect()
        plain = await d.Client(standin, app, region, "app", stack.user_password(), name="plain@10000").connect()
        try:
            heard = await round_trip(tls.nc, plain.nc, "tls.raw")
            anonymous = await d.refused(standin, app, region, tls=context, tls_hostname=f"{app}.fly.dev",
                                        tls_handshake_first=True)
            untrusted = await d.refused(standin, app, region, tls=ssl.create_default_context(),
                                        tls_hostname=f"{app}.fly.dev", tls_handshake_first=True,
                                        user="app", password=stack.user_password())
            return heard, tls.nc.connected_url, anonymous, untrusted
        finally:
            await tls.close()
            await plain.close()
    heard, url, anonymous, untrusted = run(go())
    assert url.port == standin.edge(app, region)[1]
    # Who did the handshake on the raw port: nats-server itself, with the user's certificate.
    subject, info = tls_first_probe(standin.edge(app, region), context, f"{app}.fly.dev")
    assert subject == f"{app}.fly.dev" and info.startswith("INFO ") and '"server_name"' in info, info
    assert heard == b"hello"
    assert "Authorization Violation" in anonymous, anonymous
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted, untrusted


# --- 6: a supercluster serves requests locally ------------------------------------------------------

DELAY_MS = 60


@pytest.fixture(scope="module")
def sc_stack(standin, side_stacks):
    stack = side_stacks["sc"].result()
    regions = stack.regions
    for a, b in itertools.permutations(regions, 2):
        standin.set_delay(a, b, DELAY_MS)
    try:
        yield stack
    finally:
        for a, b in itertools.permutations(regions, 2):
            standin.set_delay(a, b, 0)


def test_supercluster_request_is_served_by_the_local_responder(standin, sc_stack):
    app = sc_stack.app
    with_responder, without = sc_stack.regions[:2], sc_stack.regions[2]

    async def go():
        responders = [await d.Client(standin, app, r, "app", sc_stack.user_password(), name=f"responder@{r}").connect()
                      for r in with_responder]
        for c in responders:
            async def reply(msg, region=c.region):
                await msg.respond(region.encode())
            await c.nc.subscribe("svc.where", queue="svc", cb=reply)
            await c.nc.flush()
        askers = {r: await d.Client(standin, app, r, "app", sc_stack.user_password(), name=f"asker@{r}").connect()
                  for r in sc_stack.regions}
        try:
            # Interest has to cross the gateways first (queue subscriptions always do).
            deadline = time.monotonic() + 120
            for r, c in askers.items():
                while True:
                    try:
                        await c.nc.request("svc.where", b"", timeout=2)
                        break
                    except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
                        assert time.monotonic() < deadline, f"no responder reachable from {r}"
                        await asyncio.sleep(0.2)
            seen = {}
            for r, c in askers.items():
                samples, served = [], []
                for _ in range(10):
                    t0 = time.perf_counter()
                    msg = await c.nc.request("svc.where", b"", timeout=30)
                    samples.append((time.perf_counter() - t0) * 1000)
                    served.append(msg.data.decode())
                seen[r] = {"served_by": sorted(set(served)), "median_ms": round(statistics.median(samples), 1),
                           "max_ms": round(max(samples), 1), "on": c.server}
            return seen
        finally:
            for c in [*responders, *askers.values()]:
                await c.close()
    seen = run(go())
    d.figure("supercluster_requests", {"one_way_delay_between_regions_ms": DELAY_MS, **seen})
    # Who answered is the proof; the medians are figures (a busy host slows them, so they are not
    # asserted, except that a crossing costs at least the delay there and back, which no load shortens).
    for r in with_responder:
        assert seen[r]["on"].startswith(f"{r}-")
        assert seen[r]["served_by"] == [r], seen
    assert set(seen[without]["served_by"]) <= set(with_responder), seen
    assert seen[without]["median_ms"] >= 2 * DELAY_MS, seen  # there and back over a delayed link
