"""Issue 3, item 7: the supercluster topology (a cluster per region, gateways between
regions) on the stand-in: the gateways form and a message crosses regions."""
from __future__ import annotations

import asyncio
import json
import time

import pytest

from nats_fly_testkit import fly as fh
from nats_fly_testkit.standin.api import StandInError
from nats_fly_testkit.fly import Client, exchange


@pytest.fixture(scope="module")
def sc(standin, apps):
    stack = apps.get("supercluster")
    fh.wait_healthy(standin, stack.app)
    return stack


def _gateways(standin, machine_id: str) -> tuple[str, set[str], set[str]]:
    doc = json.loads(standin.http(machine_id, 8222, "/gatewayz")[1])
    return (doc.get("name"), set(doc.get("outbound_gateways", {})), set(doc.get("inbound_gateways", {})))


def wait_gateways(standin, stack, timeout: float) -> float:
    """Seconds until every server keeps one outbound gateway to every other region (inbound
    ones are whichever servers the other regions happened to pick); fails after `timeout`."""
    t0 = time.monotonic()
    while True:
        try:
            seen = {m["id"]: (m["region"], *_gateways(standin, m["id"])) for m in standin.machines(stack.app)}
        except (StandInError, ValueError, KeyError):  # a server still starting: its monitor is not up yet
            seen = {}
        whole = bool(seen) and all(name == region and outbound == set(stack.regions) - {region}
                                   for region, name, outbound, _inbound in seen.values())
        if whole:
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            missing = {i: (region, sorted(set(stack.regions) - {region} - outbound))
                       for i, (region, _n, outbound, _in) in seen.items() if outbound != set(stack.regions) - {region}}
            logs = {i: fh.console(standin, i, "ateway")[-1500:] for i in missing}
            pytest.fail(f"outbound gateways missing after {timeout}s: {missing}; gateway log lines: {logs}")
        time.sleep(0.5)


def test_gateways_form(standin, sc):
    wait_gateways(standin, sc, 120)
    # Inside a region the servers route to each other, and only to each other.
    for r in standin.routes(sc.app):
        regions = {m["region"] for m in standin.machines(sc.app) if m["id"] != r["id"]}
        assert len(r["remotes"]) == sc.settings.machines[r["region"]] - 1, (r, regions)


def test_message_crosses_regions_over_gateways(standin, sc):
    async def go():
        syd = await Client(standin, sc, "syd").connect()
        cdg = await Client(standin, sc, "cdg").connect()
        try:
            assert syd.server.startswith("syd-") and cdg.server.startswith("cdg-")
            try:
                assert len(await exchange(syd, cdg, "sc.syd-to-cdg")) == 20
                assert len(await exchange(cdg, syd, "sc.cdg-to-syd")) == 20
            except AssertionError as e:
                gateways = {m["id"]: (m["region"], *_gateways(standin, m["id"])) for m in standin.machines(sc.app)}
                raise AssertionError(f"{e}; clients on {syd.server}, {cdg.server}; gateways {gateways}; "
                                     f"gateway log lines {[fh.console(standin, i, 'ateway')[-800:] for i in gateways]}")
        finally:
            await syd.close()
            await cdg.close()
    asyncio.run(go())


def test_a_region_of_one_restarts_without_waiting_out_peer_wait(standin, apps, figures):
    """One Machine per region: its route name can never resolve to a peer, so before all.vms the
    guard waited out peerWait (20 s) on every boot, rolling deploys included. Now it sees it is its
    region's only Machine and starts at once."""
    lone = apps.get("sc-lone")
    assert lone.settings.peer_wait == 20 and set(lone.counts.values()) == {1}
    wait_gateways(standin, lone, 120)
    syd = next(m for m in standin.machines(lone.app) if m["region"] == "syd")
    seen = len(fh.console(standin, syd["id"]).splitlines())
    standin.restart_all([syd["id"]])  # stopped, then started: as a rolling deploy or a host restart does
    took = wait_gateways(standin, lone, 120)
    guard = [line for line in fh.console(standin, syd["id"]).splitlines()[seen:] if "nats-fly: " in line]
    figures["supercluster_region_of_one_restart_s"] = round(took, 2)
    assert any(f"the only Machine at syd.{lone.app}.internal" in line for line in guard), guard
    assert not any("waiting up to" in line for line in guard), guard
