"""The assets' Check as the engine calls it, on what only the provider sees: the connection (a cluster
without JetStream, a malformed one, none) and two assets of one program that would make one stream or one
consumer. No server is asked."""

from __future__ import annotations

import asyncio

import pytest
from pulumi.provider.experimental import provider as xp

from nats_fly.assetprovider import Assets, wrap

CONNECTION = {"servers": ["nats://127.0.0.1:4222"], "user": "app", "password": "pw",
              "regions": {"ord": 1, "syd": 1, "cdg": 1}, "topology": "mesh", "jetstream": True}


def check(provider: Assets, kind: str, name: str, inputs: dict) -> list[str]:
    request = xp.CheckRequest(f"urn:pulumi:t::p::nats-fly:index:{kind}::{name}", {}, wrap(inputs).value, b"")
    return [failure.reason for failure in asyncio.run(provider.check(request)).failures or []]


@pytest.mark.parametrize("kind,inputs", [("Stream", {"subjects": ["a.>"]}), ("KeyValue", {}),
                                         ("ObjectStore", {}), ("Consumer", {"streamName": "a"})])
def test_an_asset_on_a_cluster_without_jetstream_is_refused(kind, inputs):
    found = check(Assets("t"), kind, "x", {"connection": {**CONNECTION, "jetstream": False}, **inputs})
    assert found == ["connection: the cluster runs without JetStream, where no stream, bucket or consumer can "
                     "live; allowed: a cluster with jetstream: true"]
    assert check(Assets("t"), kind, "x", {"connection": CONNECTION, **inputs}) == []


@pytest.mark.parametrize("connection,words", [
    (None, "connection: missing"), ("nats://127.0.0.1:4222", "connection: a text is not a connection"),
    ({**CONNECTION, "jetstream": "yes"}, "connection: jetstream 'yes' is not true or false"),
    ({**CONNECTION, "servers": ["http://x"]}, "connection: servers ['http://x'] are not client URLs"),
    ({**CONNECTION, "token": "t"}, "connection: has unknown keys 'token'"),
])
def test_a_connection_that_is_none_is_refused_without_its_password(connection, words):
    given = {"subjects": ["a.>"]} if connection is None else {"connection": connection, "subjects": ["a.>"]}
    found = check(Assets("t"), "Stream", "x", given)
    assert len(found) == 1 and found[0].startswith(words) and "'pw'" not in found[0], found


@pytest.mark.parametrize("first,second,words", [
    (("Stream", "orders", {"subjects": ["a.>"]}), ("Stream", "other", {"name": "orders", "subjects": ["b.>"]}),
     "name: 'orders' makes the stream orders, which resource orders makes too"),
    (("KeyValue", "cfg", {}), ("Stream", "raw", {"name": "KV_cfg", "subjects": ["c.>"]}),
     "name: 'KV_cfg' makes the stream KV_cfg, which resource cfg makes too"),
    (("Consumer", "billing", {"streamName": "orders"}), ("Consumer", "again", {"name": "billing", "streamName": "orders"}),
     "name: 'billing' makes the consumer orders/billing, which resource billing makes too"),
])
def test_two_assets_that_make_one_are_refused(first, second, words):
    provider = Assets("t")
    kind, name, inputs = first
    assert check(provider, kind, name, {"connection": CONNECTION, **inputs}) == []
    kind, name, inputs = second
    found = check(provider, kind, name, {"connection": CONNECTION, **inputs})
    assert len(found) == 1 and found[0].startswith(words), found


def test_a_consumer_of_the_same_name_on_another_stream_is_another_consumer():
    provider = Assets("t")
    assert check(provider, "Consumer", "a", {"connection": CONNECTION, "name": "c", "streamName": "one"}) == []
    assert check(provider, "Consumer", "b", {"connection": CONNECTION, "name": "c", "streamName": "two"}) == []
