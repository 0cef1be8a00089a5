"""The JetStream assets' field catalogue and diff rules (nats_fly.config.jetstream) held to a real nats-server
(each release a stack may run, a mesh of 3 JetStream servers on loopback, tags region:<code>):
- every field the catalogue knows, created as the catalogue says, reads back as the catalogue expects it
  (its defaults are the server's: a no-op refresh or import shows nothing);
- for each field, a change is sent to the server as the provider sends it (the live config with the
  catalogue's fields overlaid): the server accepts it in place exactly when the rules call it in place,
  and refuses it when they call it a replace; what it accepted reads back as asked.
The API calls go through nats_fly.processes.jetstream, as the provider makes them."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from nats_fly.config import jetstream as js
from nats_fly.config.settings import NATS_VERSIONS
from nats_fly.processes.jetstream import ApiError, Connections, Target
from nats_fly_testkit.verify_clusters import start_cluster

SHAPE = js.Shape({"ord": 1, "syd": 1, "cdg": 1}, "mesh")
NAMES = itertools.count()

# (kind, field, old value, new value); None: the field not given. The rules decide in place or replace.
STREAM_CHANGES = [
    ("description", None, "orders of the shop"),
    ("subjects", ["{s}.a"], ["{s}.a", "{s}.b.*"]),
    ("retention", "limits", "interest"),
    ("retention", "interest", "limits"),
    ("retention", "limits", "workqueue"),
    ("retention", "workqueue", "limits"),
    ("retention", "interest", "workqueue"),
    ("storage", "file", "memory"),
    ("storage", "memory", "file"),
    ("replicas", 1, 3),
    ("replicas", 3, 1),
    ("placement", None, "syd"),
    ("placement", "ord", "cdg"),
    ("maxBytes", None, "1MiB"),
    ("maxBytes", 4096, -1),
    ("metadata", None, {"team": "shop"}),
    ("maxMsgs", None, 1000),
    ("maxAge", None, "72h"),
    ("maxAge", "72h", "1m"),
    ("maxMsgsPerSubject", None, 10),
    ("maxMsgSize", None, 1024),
    ("maxConsumers", None, 5),
    ("discard", "old", "new"),
    ("discardNewPerSubject", None, True),
    ("duplicateWindow", None, "30s"),
    ("noAck", None, True),
    ("sources", None, [{"name": "ORIGIN1"}]),
    ("sources", [{"name": "ORIGIN1"}], [{"name": "ORIGIN1", "filterSubject": "origin1.a"}]),
    ("compression", "none", "s2"),
    ("subjectTransform", None, {"source": "{s}.>", "destination": "x{s}.>"}),
    ("republish", None, {"source": "{s}.>", "destination": "re{s}.>"}),
    ("allowDirect", None, True),
    ("allowDirect", True, False),
    ("allowRollupHdrs", None, True),
    ("denyDelete", None, True),
    ("denyDelete", True, False),
    ("denyPurge", None, True),
    ("denyPurge", True, False),
    ("sealed", None, True),
    ("sealed", True, False),
    ("allowMsgTtl", None, True),
    ("allowMsgTtl", True, False),
]
STREAM_BASE = {"subjects": ["{s}.>"]}
STREAM_BASES = {"discardNewPerSubject": {"discard": "new", "maxMsgsPerSubject": 5},
                "subjects": {}, "sources": {"subjects": []}}

MIRROR_CHANGES = [
    ("mirror", {"name": "ORIGIN1"}, {"name": "ORIGIN2"}),
    ("mirror", {"name": "ORIGIN1"}, {"name": "ORIGIN1", "filterSubject": "origin1.a"}),
    ("mirror", {"name": "ORIGIN1"}, None),
]

KV_CHANGES = [
    ("description", None, "settings"),
    ("storage", "file", "memory"),
    ("replicas", 1, 3),
    ("placement", None, "syd"),
    ("maxBytes", None, "1MiB"),
    ("metadata", None, {"team": "shop"}),
    ("history", 1, 5),
    ("ttl", None, "1h"),
    ("ttl", "1h", "30s"),
    ("maxValueSize", None, 1024),
    ("compression", "none", "s2"),
    ("republish", None, {"destination": "kv.changes.>"}),
]

OBJECT_CHANGES = [
    ("description", None, "files"),
    ("storage", "file", "memory"),
    ("replicas", 1, 3),
    ("placement", None, "cdg"),
    ("maxBytes", None, "1MiB"),
    ("metadata", None, {"team": "shop"}),
    ("ttl", None, "24h"),
    ("compression", "none", "s2"),
]

PUSH = {"deliverSubject": "push.{s}"}
CONSUMER_CHANGES = [
    ("description", None, "billing", {}),
    ("deliverPolicy", "all", "new", {}),
    ("deliverPolicy", "all", "lastPerSubject", {}),
    ("optStartSeq", 1, 5, {"deliverPolicy": "byStartSequence"}),
    ("optStartTime", "2026-01-01T00:00:00Z", "2026-01-02T00:00:00+01:00", {"deliverPolicy": "byStartTime"}),
    ("ackPolicy", "none", "explicit", {}),
    ("ackPolicy", "explicit", "all", {}),
    ("ackWait", None, "1m", {"ackPolicy": "explicit"}),
    ("maxDeliver", None, 5, {}),
    ("backoff", None, ["1s", "5s"], {"ackPolicy": "explicit", "maxDeliver": 5}),
    ("backoff", ["1s", "5s"], ["2s"], {"ackPolicy": "explicit", "maxDeliver": 5}),
    ("ackWait", "10s", "20s", {"ackPolicy": "all"}),
    ("filterSubject", None, "orders.a", {}),
    ("filterSubjects", None, ["orders.a", "orders.b"], {}),
    ("replayPolicy", "instant", "original", {}),
    ("sampleFreq", None, "50%", {}),
    ("rateLimitBps", None, 1000000, PUSH),
    ("maxAckPending", None, 50, {"ackPolicy": "explicit"}),
    ("deliverSubject", "push.{s}", "push2.{s}", {}),
    ("deliverSubject", None, "push.{s}", {}),
    ("deliverSubject", "push.{s}", None, {}),
    ("deliverGroup", None, "workers", PUSH),
    ("headersOnly", None, True, {}),
    ("maxWaiting", None, 10, {}),
    ("maxRequestBatch", None, 10, {}),
    ("maxRequestExpires", None, "5s", {}),
    ("maxRequestMaxBytes", None, 1024, {}),
    ("inactiveThreshold", None, "1h", {}),
    ("replicas", 0, 1, {}),
    ("memStorage", None, True, {}),
    ("metadata", None, {"team": "billing"}, {}),
    ("heartbeatInterval", None, "5s", PUSH),
    ("flowControl", None, True, {**PUSH, "heartbeatInterval": "5s"}),
]


KINDER = {("memStorage", "2.12.8")}
"""(field, release) where the release changes in place what a newer one refuses: the rules follow the
strictest release a stack may run, so there alone a replace rule meets a server that would not need it."""


@pytest.fixture(scope="module", params=NATS_VERSIONS)
def cluster(tmp_path_factory, request):
    """A 3-server JetStream cluster on each release a stack may run: the rules must hold on all of them."""
    yield from start_cluster(tmp_path_factory.mktemp("jsrules"), {"ord": 1, "syd": 1, "cdg": 1}, jetstream=True,
                             nats_version=request.param)


def target(cluster) -> Target:
    return Target(tuple(cluster.urls.values()), "app", "app-pw")


def fill(value, s: str):
    """The case's value with {s} standing for the stream's own subject prefix."""
    if isinstance(value, str):
        return value.replace("{s}", s)
    if isinstance(value, list):
        return [fill(v, s) for v in value]
    if isinstance(value, dict):
        return {k: fill(v, s) for k, v in value.items()}
    return value


def inputs(base: dict, field: str, value, name: str) -> dict:
    given = {**fill(base, name.lower()), "name": name}
    if value is not None:
        given[field] = fill(value, name.lower())
    return {k: v for k, v in given.items() if v != []}


async def with_api(cluster, work):
    connections = Connections("test-jetstream-rules")
    try:
        api = await connections.api(target(cluster))
        return await work(api)
    finally:
        await connections.close()


async def ensure_origins(api) -> None:
    for origin in ("ORIGIN1", "ORIGIN2"):
        if not await api.stream_info(origin):
            await api.stream_create(js.desired(js.STREAM, {"name": origin, "subjects": [f"{origin.lower()}.>"]}, SHAPE))


async def create_stream(api, kind: js.Kind, given: dict) -> dict:
    """Created as the provider creates it; a sealed stream is sealed after (the server refuses a sealed create)."""
    want = js.desired(kind, {**given, "sealed": False} if given.get("sealed") else given, SHAPE)
    info = await api.stream_create(js.overlay({}, want, kind))
    if given.get("sealed"):
        info = await api.stream_update(js.overlay(info["config"], js.desired(kind, given, SHAPE), kind))
    return info["config"]


def assert_reads_back(kind: js.Kind, given: dict, config: dict) -> None:
    expected, now = js.desired(kind, given, SHAPE), js.live(kind, config)
    assert not js.changes(kind, expected, now), [c.words() for c in js.changes(kind, expected, now)]


def judge(kind: js.Kind, old: dict, new: dict, field: str) -> bool:
    """The rules' verdict on the change: True when it replaces. The changed field must be among the changes."""
    found = js.changes(kind, js.desired(kind, old, SHAPE), js.desired(kind, new, SHAPE))
    assert field in [c.field.name for c in found], (field, [c.words() for c in found])
    return any(c.replaces for c in found)


async def try_stream_change(cluster, kind: js.Kind, base: dict, field: str, old_value, new_value) -> None:
    name = f"R{next(NAMES)}"
    old, new = inputs(base, field, old_value, name), inputs(base, field, new_value, name)
    if kind.prefix:  # a bucket's name is letters, digits, '_' and '-'
        old["name"] = new["name"] = name

    async def work(api):
        await ensure_origins(api)
        config = await create_stream(api, kind, old)
        assert_reads_back(kind, old, config)
        replaces = judge(kind, old, new, field)
        try:
            info = await api.stream_update(js.overlay(config, js.desired(kind, new, SHAPE), kind))
        except ApiError as refusal:
            assert replaces, f"{field}: {old_value!r} -> {new_value!r}: the rules say in place, the server refused: {refusal}"
            return
        finally:
            await api.stream_delete(js.stream_name(kind, name))
        assert not replaces or (field, cluster.nats_version) in KINDER, \
            f"{field}: {old_value!r} -> {new_value!r}: the rules say replace, the server accepted it"
        assert_reads_back(kind, new, info["config"])
    await with_api(cluster, work)


@pytest.mark.parametrize("field,old,new", STREAM_CHANGES, ids=lambda v: repr(v)[:30])
def test_stream_field_rules_match_the_server(cluster, field, old, new):
    asyncio.run(try_stream_change(cluster, js.STREAM, {**STREAM_BASE, **STREAM_BASES.get(field, {})}, field, old, new))


@pytest.mark.parametrize("field,old,new", MIRROR_CHANGES, ids=lambda v: repr(v)[:30])
def test_mirror_rules_match_the_server(cluster, field, old, new):
    asyncio.run(try_stream_change(cluster, js.STREAM, {}, field, old, new))


def test_a_mirror_answers_direct_gets_as_its_origin_allows(cluster):
    """Why mirrorDirect is no field: the server sets a mirror's mirror_direct to its origin's allow_direct,
    whatever it is sent."""
    async def work(api):
        origin = await api.stream_create(js.desired(js.STREAM, {"name": "DIRECT", "subjects": ["direct.>"],
                                                                 "allowDirect": True}, SHAPE))
        try:
            for asked in (False, True):
                mirror = {**js.desired(js.STREAM, {"name": f"DIRECT_M{asked}", "mirror": {"name": "DIRECT"}}, SHAPE),
                          "mirror_direct": asked}
                created = await api.stream_create(js.overlay({}, mirror, js.STREAM))
                await api.stream_delete(mirror["name"])
                assert created["config"]["mirror_direct"] is origin["config"]["allow_direct"] is True
        finally:
            await api.stream_delete("DIRECT")
    asyncio.run(with_api(cluster, work))


@pytest.mark.parametrize("field,old,new", KV_CHANGES, ids=lambda v: repr(v)[:30])
def test_key_value_field_rules_match_the_server(cluster, field, old, new):
    asyncio.run(try_stream_change(cluster, js.KEY_VALUE, {}, field, old, new))


@pytest.mark.parametrize("field,old,new", OBJECT_CHANGES, ids=lambda v: repr(v)[:30])
def test_object_store_field_rules_match_the_server(cluster, field, old, new):
    asyncio.run(try_stream_change(cluster, js.OBJECT_STORE, {}, field, old, new))


@pytest.mark.parametrize("field,old,new,base", CONSUMER_CHANGES, ids=lambda v: repr(v)[:30])
def test_consumer_field_rules_match_the_server(cluster, field, old, new, base):
    name = f"C{next(NAMES)}"
    stream = f"S{name}"
    old_inputs = inputs({**base, "streamName": stream}, field, old, name)
    new_inputs = inputs({**base, "streamName": stream}, field, new, name)

    async def work(api):
        await api.stream_create(js.desired(js.STREAM, {"name": stream, "subjects": ["orders.>"]}, SHAPE))
        try:
            want = js.desired(js.CONSUMER, old_inputs, SHAPE)
            info = await api.consumer_put(stream, js.overlay({}, want, js.CONSUMER), "create")
            assert_reads_back(js.CONSUMER, old_inputs, {**info["config"], "stream_name": stream})
            replaces = judge(js.CONSUMER, old_inputs, new_inputs, field)
            sent = js.overlay(info["config"], js.desired(js.CONSUMER, new_inputs, SHAPE), js.CONSUMER)
            try:
                info = await api.consumer_put(stream, sent, "update")
            except ApiError as refusal:
                assert replaces, f"{field}: {old!r} -> {new!r}: the rules say in place, the server refused: {refusal}"
                return
            assert not replaces or (field, cluster.nats_version) in KINDER, \
                f"{field}: {old!r} -> {new!r}: the rules say replace, the server accepted it"
            assert_reads_back(js.CONSUMER, new_inputs, {**info["config"], "stream_name": stream})
        finally:
            await api.stream_delete(stream)
    asyncio.run(with_api(cluster, work))


def test_every_field_is_tried(cluster):
    """No field of the catalogue escapes the oracle (the name is a replace by definition: another asset)."""
    tried = {
        "Stream": {c[0] for c in STREAM_CHANGES + MIRROR_CHANGES},
        "KeyValue": {c[0] for c in KV_CHANGES},
        "ObjectStore": {c[0] for c in OBJECT_CHANGES},
        "Consumer": {c[0] for c in CONSUMER_CHANGES} | {"streamName"},
    }
    for kind, fields in tried.items():
        assert {f.name for f in js.KINDS[kind].fields} - {"name"} == fields, kind


RESERVED_CASES = [
    (">", {}), (">", {"noAck": True}), (">", {"noAck": True, "replicas": 3}), ("*.>", {}), ("*.x", {}), ("*", {}),
    ("$JS.API.>", {}), ("$JS.API.>", {"noAck": True}), ("$JS.*.x", {}), ("$JS.EVENT.ADVISORY.>", {}), ("$JSC.x", {}),
    ("$NRG.>", {}), ("$SYS.>", {}), ("$SYS.*.x", {}), ("$SYS.ACCOUNT.>", {}), ("$SYS.ACCOUNT.*", {}),
    ("$KV.x.>", {}), ("_INBOX.>", {}),
]


@pytest.mark.parametrize("subject,extra", RESERVED_CASES, ids=lambda v: repr(v)[:30])
def test_subjects_the_server_keeps_for_itself_are_refused_as_the_server_does(cluster, subject, extra):
    """A stream that acknowledges may not take the servers' own API subjects: the check refuses exactly
    what the server refuses."""
    given = {"name": f"X{next(NAMES)}", "subjects": [subject], **extra}
    refused = js.check(js.STREAM, given, SHAPE, creating=True)

    async def work(api):
        if subject == ">":  # every other stream would overlap it (the origins come back when a test needs them)
            for other in (await api.request("STREAM.NAMES")).get("streams") or []:
                await api.stream_delete(other)
        try:
            await api.stream_create(js.overlay({}, js.desired(js.STREAM, given, SHAPE), js.STREAM))
        except ApiError as refusal:
            assert refused, f"{subject} {extra}: the check passed it, the server refused: {refusal}"
            return
        await api.stream_delete(given["name"])
        assert not refused, f"{subject} {extra}: the check refused it ({refused}), the server took it"
    asyncio.run(with_api(cluster, work))
