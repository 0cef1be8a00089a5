"""Edge reads as rules (nats_fly.config.edge): what edgeRegions accepts and refuses, which regions get a
mirror, and what each mirror is (tests/servers/local/test_jetstream_edge.py holds them to real servers)."""

from __future__ import annotations

import asyncio

import pytest
from pulumi.provider.experimental import provider as xp
from pulumi.runtime import rpc

from nats_fly.assetprovider import Assets, resource_schemas, wrap
from nats_fly.config import edge
from nats_fly.config import jetstream as js

SUPERCLUSTER = js.Shape({"ord": 3, "syd": 2, "cdg": 1}, "supercluster")
MESH = js.Shape({"ord": 1, "syd": 1, "cdg": 1}, "mesh")


def kv(**given) -> dict:
    return {"name": "cfg", "placement": "ord", **given}


@pytest.mark.parametrize("kind", [js.STREAM, js.KEY_VALUE])
def test_true_means_every_region_but_the_origins(kind):
    given = {"name": "cfg", "placement": "syd", "edgeRegions": True}
    assert edge.check(kind, given, SUPERCLUSTER) == []
    assert edge.regions(given, SUPERCLUSTER) == ["ord", "cdg"]
    origin = js.stream_name(kind, "cfg")
    assert edge.mirrors(kind, given, SUPERCLUSTER) == {"ord": f"{origin}_ord", "cdg": f"{origin}_cdg"}


def test_a_list_names_the_regions_and_needs_no_placement():
    given = {"name": "orders", "edgeRegions": ["syd"]}
    assert edge.check(js.STREAM, given, SUPERCLUSTER) == []
    assert edge.mirrors(js.STREAM, given, SUPERCLUSTER) == {"syd": "orders_syd"}


@pytest.mark.parametrize("value", [None, False, []])
def test_no_ask_no_mirrors(value):
    given = kv(edgeRegions=value)
    assert edge.check(js.KEY_VALUE, given, SUPERCLUSTER) == [] and edge.regions(given, SUPERCLUSTER) == []
    assert not edge.asked(given)


@pytest.mark.parametrize("kind, given, shape, words", [
    (js.OBJECT_STORE, kv(edgeRegions=True), SUPERCLUSTER, "edgeRegions: not a field of ObjectStore; allowed: name"),
    (js.CONSUMER, {"edgeRegions": True}, SUPERCLUSTER, "edgeRegions: not a field of Consumer; allowed: name"),
    (js.KEY_VALUE, kv(edgeRegions="syd"), SUPERCLUSTER, "edgeRegions: 'syd' is not true or a list of regions; allowed: "
                                                        "true (every region"),
    (js.KEY_VALUE, kv(edgeRegions=[1]), SUPERCLUSTER, "edgeRegions: [1] is not true or a list of regions"),
    (js.KEY_VALUE, kv(edgeRegions=["iad"]), SUPERCLUSTER, "edgeRegions: 'iad' is not a region of the cluster; allowed: "
                                                          "ord, syd, cdg"),
    (js.KEY_VALUE, kv(edgeRegions=["ord"]), SUPERCLUSTER, "edgeRegions: 'ord' is the origin's placement; allowed: "
                                                          "other regions"),
    (js.KEY_VALUE, kv(edgeRegions=["syd", "syd"]), SUPERCLUSTER, "names one region twice; allowed: each region once"),
    (js.KEY_VALUE, {"name": "cfg", "edgeRegions": True}, SUPERCLUSTER, "edgeRegions: true without placement"),
    (js.KEY_VALUE, kv(edgeRegions=True), js.Shape(), "edgeRegions: true cannot be placed: the connection does not "
                                                     "say the cluster's regions and topology"),
    (js.STREAM, kv(edgeRegions=True, allowDirect=False), SUPERCLUSTER, "allowDirect: false with edgeRegions"),
    (js.STREAM, {"name": "copy", "mirror": {"name": "orders"}, "edgeRegions": ["syd"]}, SUPERCLUSTER,
     "edgeRegions: on a mirror; allowed: edgeRegions on the stream it mirrors"),
])
def test_refusals_name_the_key_the_value_and_what_is_allowed(kind, given, shape, words):
    problems = edge.check(kind, given, shape)
    assert len(problems) == 1 and words in problems[0], problems


def test_unknown_values_wait_until_known():
    assert edge.check(js.KEY_VALUE, kv(edgeRegions=js.UNKNOWN), SUPERCLUSTER) == []
    assert edge.check(js.KEY_VALUE, {"name": "cfg", "placement": js.UNKNOWN, "edgeRegions": True}, SUPERCLUSTER) == []


def test_the_catalogue_takes_edge_regions_on_every_kind_and_edge_judges_it():
    assert js.check(js.KEY_VALUE, kv(edgeRegions=True), SUPERCLUSTER, creating=True) == []


def test_an_origin_with_edge_mirrors_allows_direct_gets():
    stream = {"name": "orders", "subjects": ["orders.>"]}
    assert js.desired(js.STREAM, stream, SUPERCLUSTER)["allow_direct"] is False
    assert js.desired(js.STREAM, {**stream, "edgeRegions": ["syd"]}, SUPERCLUSTER)["allow_direct"] is True


def test_a_kv_mirror_keeps_the_buckets_history_and_limits_and_nothing_of_its_subjects():
    origin = js.desired(js.KEY_VALUE, kv(history=5, ttl="1h", maxBytes="1MiB", storage="memory", replicas=3),
                        SUPERCLUSTER)
    mirror = edge.mirror_config(origin, "syd", SUPERCLUSTER)
    assert mirror["name"] == "KV_cfg_syd" and mirror["mirror"] == {"name": "KV_cfg"}
    assert mirror["mirror_direct"] is True and mirror["allow_direct"] is True
    assert (mirror["max_msgs_per_subject"], mirror["max_age"], mirror["max_bytes"], mirror["storage"]) == \
        (5, 3600 * 10**9, 1 << 20, "memory")
    assert "subjects" not in mirror and "sources" not in mirror and "republish" not in mirror
    assert mirror["placement"] == {"cluster": "syd"}
    assert mirror["num_replicas"] == 2  # the origin's 3, as far as syd's 2 servers hold them


def test_a_mesh_mirror_is_placed_by_the_region_tag_with_one_replica():
    origin = js.desired(js.KEY_VALUE, kv(replicas=3), MESH)
    mirror = edge.mirror_config(origin, "cdg", MESH)
    assert mirror["placement"] == {"tags": ["region:cdg"]} and mirror["num_replicas"] == 1


def test_a_stream_mirror_goes_without_retention_republish_or_transform():
    origin = js.desired(js.STREAM, {"name": "jobs", "subjects": ["jobs.>"], "retention": "workqueue",
                                    "republish": {"destination": "seen.>"},
                                    "subjectTransform": {"source": "jobs.>", "destination": "j.>"}}, SUPERCLUSTER)
    mirror = edge.mirror_config(origin, "cdg", SUPERCLUSTER)
    assert mirror["retention"] == "limits"
    assert not {"subjects", "republish", "subject_transform"} & set(mirror)


def test_stale_compares_what_the_origin_sets():
    origin = js.desired(js.KEY_VALUE, kv(history=5), SUPERCLUSTER)
    want = edge.mirror_config(origin, "syd", SUPERCLUSTER)
    live = {**want, "mirror": {"name": "KV_cfg", "opt_start_seq": 0}, "sources": None, "metadata": {"_nats.ver": "2"}}
    assert not edge.stale(want, live)
    assert edge.stale(want, {**live, "max_msgs_per_subject": 3})
    assert edge.stale(want, {**live, "mirror_direct": False})


@pytest.mark.parametrize("given, present, read", [
    (kv(edgeRegions=True), ["syd", "cdg"], True),
    (kv(edgeRegions=True), ["cdg"], ["cdg"]),
    (kv(edgeRegions=["syd"]), ["syd"], ["syd"]),
    (kv(edgeRegions=["syd"]), [], None),
    (kv(), ["syd"], ["syd"]),
])
def test_a_read_says_which_mirrors_the_server_holds(given, present, read):
    assert edge.read_value(given, present, SUPERCLUSTER) == read


def test_the_schema_offers_edge_reads_on_streams_and_buckets_only():
    schemas = resource_schemas()
    for kind in js.KINDS.values():
        has = edge.EDGE in schemas[kind.token]["inputProperties"]
        assert has == (kind in edge.KINDS)
        assert (edge.MIRRORS in schemas[kind.token]["properties"]) == has


CONNECTION = {"servers": ["nats://127.0.0.1:4222"], "user": "app", "password": "pw",
              "regions": {"ord": 1, "syd": 1, "cdg": 1}, "topology": "supercluster"}


def diff(old_inputs: dict, mirrors: dict, news: dict) -> xp.DiffResponse:
    """The provider's Diff of a bucket whose state holds `mirrors`: no server is asked unless a replace comes."""
    state = wrap({"connection": CONNECTION, **old_inputs, "stream": "KV_cfg", edge.MIRRORS: mirrors}).value
    return asyncio.run(Assets("test").diff(xp.DiffRequest(
        "urn:pulumi:t::p::nats-fly:index:KeyValue::cfg", "cfg", state, wrap({"connection": CONNECTION, **news}).value, [])))


def test_the_same_mirrors_are_no_change():
    same = diff(kv(edgeRegions=True), {"syd": "KV_cfg_syd", "cdg": "KV_cfg_cdg"}, kv(edgeRegions=["cdg", "syd"]))
    assert not same.changes


@pytest.mark.parametrize("news", [kv(), kv(edgeRegions=["syd"]), kv(edgeRegions=rpc.UNKNOWN)])
def test_other_mirrors_are_an_update_in_place(news):
    changed = diff(kv(edgeRegions=True), {"syd": "KV_cfg_syd", "cdg": "KV_cfg_cdg"}, news)
    assert changed.changes and not changed.replaces
    assert changed.detailed_diff[edge.EDGE].kind == xp.PropertyDiffKind.UPDATE


def test_an_unknown_placement_without_edge_regions_says_nothing_of_them():
    answer = diff(kv(), {}, {"name": "cfg", "placement": rpc.UNKNOWN})
    assert edge.EDGE not in (answer.detailed_diff or {})
