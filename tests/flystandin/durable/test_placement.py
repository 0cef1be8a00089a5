"""JetStream across regions (issue 14): in a mesh, `unique_tag: "region:"` puts each replica of an R3
stream in another region, so a region cut off loses no stream. On the Fly stand-in with real servers
and clients: a mesh of 3 regions x 3 Machines, an R3 stream, publishing through syd while ord is cut
off for 15 s: the stream stays writable and no acknowledged message is lost."""
from __future__ import annotations

import asyncio
import secrets
import time

from nats_fly_testkit import durable as d
from nats_fly_testkit import fly as fh

REGIONS = ("ord", "syd", "cdg")


def run(coro):
    return asyncio.run(coro)


def test_an_r3_stream_has_one_replica_per_region_and_outlives_a_region_cut(standin, scratch):
    stack = fh.load_stack("prod", app=f"dur-place-{secrets.token_hex(3)}", regions=REGIONS,
                          machines={r: 3 for r in REGIONS}, peer_wait=3, websocket=False)
    app = stack.app
    fh.components_up(standin, stack, fh.render_ours(stack, scratch / "contexts" / app))
    try:
        fh.wait_healthy(standin, app)

        async def placed():
            c = await d.Client(standin, app, "syd", "app", stack.user_password()).connect()
            try:
                await d.ensure_stream(c.nc, replicas=3)
                leader, followers = await d.replicas(c.nc)
                return leader, [f["name"] for f in followers]
            finally:
                await c.close()

        leader, followers = run(placed())
        holders = [leader, *followers]
        regions = sorted(name.split("-", 1)[0] for name in holders)  # server names are <region>-<machine id>
        assert regions == sorted(REGIONS), f"replicas on {holders}: two in one region"

        async def through_a_cut():
            setup = await d.Client(standin, app, "syd", "app", stack.user_password()).connect()
            publisher = d.Publisher(await d.Client(standin, app, "syd", "app", stack.user_password(),
                                                   name="publisher@syd").connect(), "dur.place", interval=0.02)
            stop = asyncio.Event()
            task = asyncio.create_task(publisher.run(stop))
            await asyncio.sleep(2)
            before_cut = len(publisher.acked)
            standin.link_down("ord")
            cut_at = time.monotonic()
            await asyncio.sleep(15)
            during = len(publisher.acked) - before_cut
            standin.link_up("ord")
            await asyncio.sleep(3)
            stop.set()
            await task
            lost = await d.lost_acked(setup.nc, [publisher])
            await publisher.client.close()
            await setup.close()
            return during, lost, publisher.summary(), time.monotonic() - cut_at

        during, lost, summary, _ = run(through_a_cut())
        d.figure("placement", {"replicas": holders, "acked_during_cut": during, "lost_acked": len(lost), **summary})
        assert during > 0, f"no message acked while ord was cut off: {summary}"
        assert lost == [], lost[:10]
    finally:
        standin.flyctl("apps", "destroy", app, "--yes")
