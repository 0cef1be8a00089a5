"""Issue 3, item 7: the supercluster topology (a cluster per region, gateways between
regions) on the stand-in: the gateways form and a message crosses regions."""
from __future__ import annotations

import asyncio
import json
import time

import pytest

import flyhelpers as fh
from test_prod import Client, exchange


@pytest.fixture(scope="module")
def sc(standin, apps):
    stack = apps.get("supercluster")
    fh.wait_healthy(standin, stack.app)
    return stack


def _gateways(standin, machine_id: str) -> tuple[str, set[str], set[str]]:
    doc = json.loads(standin.http(machine_id, 8222, "/gatewayz")[1])
    return (doc.get("name"), set(doc.get("outbound_gateways", {})), set(doc.get("inbound_gateways", {})))


def test_gateways_form(standin, sc):
    deadline = time.monotonic() + 30
    while True:
        seen = {m["id"]: (m["region"], *_gateways(standin, m["id"])) for m in standin.machines(sc.app)}
        # Each server keeps one outbound gateway to every other region (inbound ones are
        # whichever servers the other regions happened to pick).
        whole = all(name == region and outbound == set(sc.regions) - {region}
                    for region, name, outbound, _inbound in seen.values())
        if whole:
            break
        if time.monotonic() > deadline:
            missing = {i: (region, sorted(set(sc.regions) - {region} - outbound))
                       for i, (region, _n, outbound, _in) in seen.items() if outbound != set(sc.regions) - {region}}
            logs = {i: fh.console(standin, i, "ateway")[-1500:] for i in missing}
            pytest.fail(f"outbound gateways missing after 30s: {missing}; gateway log lines: {logs}")
        time.sleep(0.5)
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
                assert len(await exchange(syd, cdg, "sc.syd-to-cdg", timeout=20)) == 20
                assert len(await exchange(cdg, syd, "sc.cdg-to-syd", timeout=20)) == 20
            except AssertionError as e:
                gateways = {m["id"]: (m["region"], *_gateways(standin, m["id"])) for m in standin.machines(sc.app)}
                raise AssertionError(f"{e}; clients on {syd.server}, {cdg.server}; gateways {gateways}; "
                                     f"gateway log lines {[fh.console(standin, i, 'ateway')[-800:] for i in gateways]}")
        finally:
            await syd.close()
            await cdg.close()
    asyncio.run(go())
