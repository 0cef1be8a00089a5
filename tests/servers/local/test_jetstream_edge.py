"""Edge reads (edgeRegions) held to real nats-servers: the provider's own create, update, read and delete
(nats_fly.assetprovider.Assets, called as the engine calls it) on a local supercluster of 3 regions
(one cluster per region, gateways between them) and on a mesh of 3 regions (one cluster, tags
region:<code>).

Which server answers a direct get is what the reply's Nats-Stream header names (nats-server stream.go
getDirectRequest); nats-py's `kv.get` sends exactly this request ($JS.API.DIRECT.GET.KV_<b>.$KV.<b>.<key>,
empty body) when the bucket allows direct gets."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import nats
import pytest
from nats.js.errors import NotFoundError
from pulumi.provider.experimental import provider as xp

from nats_fly.assetprovider import AssetError, Assets, plain, wrap
from nats_fly.config import edge
from nats_fly_testkit.verify_clusters import start_cluster, wait_for_meta_peers

MESH = {"ord": 1, "syd": 1, "cdg": 1}
SUPERCLUSTER = {"ord": 2, "syd": 2, "cdg": 2}
"""Two servers a region: a JetStream cluster needs a route (nats-server refuses to start one without)."""
GETS = 30


@pytest.fixture(scope="module")
def supercluster(tmp_path_factory):
    for cluster in start_cluster(tmp_path_factory.mktemp("edge-sc"), SUPERCLUSTER, "supercluster", jetstream=True):
        wait_for_meta_peers([n.http for n in cluster.nodes], len(cluster.nodes))
        yield cluster


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    for cluster in start_cluster(tmp_path_factory.mktemp("edge-mesh"), MESH, "mesh", jetstream=True):
        wait_for_meta_peers([n.http for n in cluster.nodes], len(cluster.nodes))
        yield cluster


def connection(cluster, topology: str) -> dict:
    return {"servers": [cluster.urls["ord"]], "user": "app", "password": "app-pw", "regions": cluster.layout,
            "topology": topology}


def urn(kind: str, name: str) -> str:
    return f"urn:pulumi:test::edge::nats-fly:index:{kind}::{name}"


class Driver:
    """The provider's handlers as the engine calls them for one resource: check, then create/update/read/delete,
    the state kept between calls."""

    def __init__(self, kind: str, name: str):
        self.provider, self.urn, self.state, self.inputs = Assets("test-edge"), urn(kind, name), {}, {}

    async def check(self, given: dict) -> list[str]:
        answer = await self.provider.check(xp.CheckRequest(self.urn, self.inputs, wrap(given).value, b""))
        self.checked = answer.inputs
        return [f.reason for f in answer.failures]

    async def up(self, given: dict) -> dict:
        assert await self.check(given) == []
        if not self.state:
            done = await self.provider.create(xp.CreateRequest(self.urn, self.checked, 60, False))
        else:
            diff = await self.provider.diff(xp.DiffRequest(self.urn, "id", self.state, self.checked, []))
            assert diff.changes and not diff.replaces, diff
            done = await self.provider.update(xp.UpdateRequest(self.urn, "id", self.state, self.checked, 60, [], False))
        self.state, self.inputs = done.properties, self.checked
        return {k: plain(v) for k, v in done.properties.items()}

    async def refresh(self) -> dict:
        read = await self.provider.read(xp.ReadRequest(self.urn, "id", self.state, self.inputs))
        self.state, self.inputs = read.properties, read.inputs
        return {k: plain(v) for k, v in read.inputs.items()}

    async def destroy(self) -> None:
        await self.provider.delete(xp.DeleteRequest(self.urn, "id", self.state, 60))
        await self.provider.cancel()


async def answered_by(url: str, stream: str, subject: str, count: int = GETS) -> Counter:
    """Which stream answered `count` direct gets of `subject` sent to `stream`'s name from a client at `url`."""
    nc = await nats.connect(url, user="app", password="app-pw")
    try:
        who = Counter()
        for _ in range(count):
            reply = await nc.request(f"$JS.API.DIRECT.GET.{stream}.{subject}", b"", timeout=5)
            who[(reply.headers or {}).get("Nats-Stream")] += 1
        return who
    finally:
        await nc.close()


async def kv_get(url: str, bucket: str, key: str) -> bytes:
    nc = await nats.connect(url, user="app", password="app-pw")
    try:
        return (await (await nc.jetstream().key_value(bucket)).get(key)).value
    finally:
        await nc.close()


async def until_mirrored(url: str, mirror: str, subject: str, value: bytes, timeout: float = 30) -> None:
    """Until the mirror, asked by its own name, holds `value` as the last of `subject`."""
    nc = await nats.connect(url, user="app", password="app-pw")
    try:
        deadline = time.monotonic() + timeout
        while True:
            reply = await nc.request(f"$JS.API.DIRECT.GET.{mirror}.{subject}", b"", timeout=5)
            if reply.data == value:
                return
            assert time.monotonic() < deadline, f"{mirror} never held {value!r} at {subject}: {reply.headers}"
            await asyncio.sleep(0.1)
    finally:
        await nc.close()


async def stream_info(url: str, name: str) -> dict | None:
    nc = await nats.connect(url, user="app", password="app-pw")
    try:
        try:
            info = await nc.jetstream().stream_info(name)
        except NotFoundError:
            return None
        return {"cluster": info.cluster.name, "leader": info.cluster.leader, "config": info.config}
    finally:
        await nc.close()


def test_a_supercluster_answers_kv_get_in_the_readers_region(supercluster):
    urls = supercluster.urls

    async def run():
        kv = Driver("KeyValue", "cfg")
        conn = connection(supercluster, "supercluster")
        try:
            out = await kv.up({"connection": conn, "placement": "ord", "history": 3, "edgeRegions": True})
            assert out[edge.MIRRORS] == {"syd": "KV_cfg_syd", "cdg": "KV_cfg_cdg"}
            for region, mirror in out[edge.MIRRORS].items():
                info = await stream_info(urls["ord"], mirror)
                assert info["cluster"] == region and info["leader"].startswith(f"{region}-"), info
                assert info["config"].mirror.name == "KV_cfg" and info["config"].max_msgs_per_subject == 3
            nc = await nats.connect(urls["ord"], user="app", password="app-pw")
            await (await nc.jetstream().key_value("cfg")).put("color", b"blue")
            await nc.close()
            for mirror in out[edge.MIRRORS].values():
                await until_mirrored(urls["ord"], mirror, "$KV.cfg.color", b"blue")
            for region in ("syd", "cdg"):
                assert await kv_get(urls[region], "cfg", "color") == b"blue"
                assert await answered_by(urls[region], "KV_cfg", "$KV.cfg.color") == {f"KV_cfg_{region}": GETS}
            assert await answered_by(urls["ord"], "KV_cfg", "$KV.cfg.color") == {"KV_cfg": GETS}

            # In place: one region fewer, and the history follows the origin's.
            out = await kv.up({"connection": conn, "placement": "ord", "history": 5, "edgeRegions": ["syd"]})
            assert out[edge.MIRRORS] == {"syd": "KV_cfg_syd"}
            assert await stream_info(urls["ord"], "KV_cfg_cdg") is None
            assert (await stream_info(urls["ord"], "KV_cfg_syd"))["config"].max_msgs_per_subject == 5
            assert set(await answered_by(urls["cdg"], "KV_cfg", "$KV.cfg.color")) <= {"KV_cfg", "KV_cfg_syd"}

            # A mirror deleted out of band reads as gone; the next up makes it again.
            nc = await nats.connect(urls["ord"], user="app", password="app-pw")
            await nc.jetstream().delete_stream("KV_cfg_syd")
            await nc.close()
            read = await kv.refresh()
            assert edge.EDGE not in read and plain(kv.state[edge.MIRRORS]) == {}
            out = await kv.up({"connection": conn, "placement": "ord", "history": 5, "edgeRegions": ["syd"]})
            assert out[edge.MIRRORS] == {"syd": "KV_cfg_syd"}
            assert (await kv.refresh())[edge.EDGE] == ["syd"]
        finally:
            await kv.destroy()
        for name in ("KV_cfg", "KV_cfg_syd", "KV_cfg_cdg"):
            assert await stream_info(urls["ord"], name) is None
    asyncio.run(run())


def test_a_stream_mirror_answers_direct_gets_in_its_region(supercluster):
    urls = supercluster.urls

    async def run():
        orders = Driver("Stream", "orders")
        try:
            out = await orders.up({"connection": connection(supercluster, "supercluster"), "subjects": ["orders.>"],
                                   "placement": "cdg", "edgeRegions": ["syd"]})
            assert out[edge.MIRRORS] == {"syd": "orders_syd"}
            nc = await nats.connect(urls["ord"], user="app", password="app-pw")
            await nc.jetstream().publish("orders.1", b"one")
            await nc.close()
            await until_mirrored(urls["ord"], "orders_syd", "orders.1", b"one")
            assert await answered_by(urls["syd"], "orders", "orders.1") == {"orders_syd": GETS}
        finally:
            await orders.destroy()
    asyncio.run(run())


def test_a_name_held_by_another_stream_leaves_nothing_behind(supercluster):
    urls = supercluster.urls

    async def run():
        nc = await nats.connect(urls["ord"], user="app", password="app-pw")
        await nc.jetstream().add_stream(name="KV_held_syd", subjects=["held.syd"])
        kv = Driver("KeyValue", "held")
        try:
            assert await kv.check({"connection": connection(supercluster, "supercluster"), "placement": "ord",
                                   "edgeRegions": True}) == []
            with pytest.raises(AssetError, match="KV_held_syd is held by another stream"):
                await kv.provider.create(xp.CreateRequest(kv.urn, kv.checked, 60, False))
            for name in ("KV_held", "KV_held_cdg"):
                assert await stream_info(urls["ord"], name) is None
            assert (await stream_info(urls["ord"], "KV_held_syd"))["config"].subjects == ["held.syd"]
        finally:
            await nc.jetstream().delete_stream("KV_held_syd")
            await nc.close()
            await kv.provider.cancel()
    asyncio.run(run())


def test_a_mesh_answers_from_any_region_so_readers_name_their_mirror(mesh):
    """One cluster: the direct-get queue group spans every region, so the origin's name is answered by any
    member; the region's mirror, asked by its own name, answers from the region."""
    urls = mesh.urls

    async def run():
        kv = Driver("KeyValue", "cfg")
        try:
            out = await kv.up({"connection": connection(mesh, "mesh"), "placement": "ord", "edgeRegions": True})
            assert out[edge.MIRRORS] == {"syd": "KV_cfg_syd", "cdg": "KV_cfg_cdg"}
            info = await stream_info(urls["ord"], "KV_cfg_syd")
            assert info["leader"] == "syd-0" and info["config"].placement.tags == ["region:syd"], info
            nc = await nats.connect(urls["ord"], user="app", password="app-pw")
            await (await nc.jetstream().key_value("cfg")).put("color", b"red")
            await nc.close()
            await until_mirrored(urls["ord"], "KV_cfg_syd", "$KV.cfg.color", b"red")
            by_name = await answered_by(urls["syd"], "KV_cfg_syd", "$KV.cfg.color")
            assert by_name == {"KV_cfg_syd": GETS}
            assert len(await answered_by(urls["syd"], "KV_cfg", "$KV.cfg.color", 60)) > 1
        finally:
            await kv.destroy()
    asyncio.run(run())


def named(value, name: str):
    """The case's value with {name} standing for the asset's name."""
    if isinstance(value, str):
        return value.format(name=name)
    if isinstance(value, list):
        return [named(v, name) for v in value]
    if isinstance(value, dict):
        return {k: named(v, name) for k, v in value.items()}
    return value


@pytest.mark.parametrize("kind, given, subject", [
    ("KeyValue", {"ttl": "1h", "history": 10, "maxBytes": "1MiB", "compression": "s2", "storage": "memory",
                  "maxValueSize": 1024}, "$KV.{name}.k"),
    ("Stream", {"subjects": ["{name}.>"], "retention": "workqueue", "allowMsgTtl": True, "maxAge": "1h",
                "republish": {"destination": "seen.{name}.>"}, "denyPurge": True, "discard": "new",
                "maxMsgsPerSubject": 5}, "{name}.k"),
], ids=["kv with limits", "workqueue stream"])
def test_an_origin_with_any_limits_gets_mirrors_that_hold_its_messages(supercluster, kind, given, subject):
    urls, name = supercluster.urls, f"limits{kind.lower()}"
    subject = named(subject, name)

    async def run():
        asset = Driver(kind, name)
        try:
            out = await asset.up({"connection": connection(supercluster, "supercluster"), "placement": "ord",
                                  "edgeRegions": ["syd"], **named(given, name)})
            nc = await nats.connect(urls["ord"], user="app", password="app-pw")
            await nc.jetstream().publish(subject, b"v")
            await nc.close()
            await until_mirrored(urls["ord"], out[edge.MIRRORS]["syd"], subject, b"v")
        finally:
            await asset.destroy()
    asyncio.run(run())


def test_an_import_reads_the_mirrors_present(supercluster):
    """`pulumi import` reads with the id alone, through the provider's connection: edgeRegions lists the
    regions whose mirror of the bucket is there, and edgeMirrors names them."""
    conn = connection(supercluster, "supercluster")

    async def run():
        kv = Driver("KeyValue", "adopted")
        try:
            await kv.up({"connection": conn, "placement": "ord", "edgeRegions": ["cdg"]})
            importer = Assets("test-edge-import")
            await importer.configure(xp.ConfigureRequest({}, {"connection": wrap(conn)}, True, True))
            read = await importer.read(xp.ReadRequest(kv.urn, "adopted", {}, {}))
            await importer.cancel()
            assert plain(read.inputs[edge.EDGE]) == ["cdg"]
            assert plain(read.properties[edge.MIRRORS]) == {"cdg": "KV_adopted_cdg"}
        finally:
            await kv.destroy()
    asyncio.run(run())
