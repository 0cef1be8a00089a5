"""The JetStream assets' values and catalogue without a server (nats_fly.config.natsvalues, .jetstream):
subjects, overlaps, Go durations and sizes as nats-server and Go read them; every refusal names the field,
the value and what is allowed; unknown values pass; reading a live config back gives the inputs as
written, an edit made out of band in the input's own form, and an import only what differs from the
server's defaults. tests/servers/local/test_jetstream_rules.py holds the same tables to a real server."""

from __future__ import annotations

import pytest

from nats_fly.config import jetstream as js
from nats_fly.config import natsvalues as nv

MESH3 = js.Shape({"ord": 1, "syd": 1, "cdg": 1}, "mesh")
SUPER = js.Shape({"ord": 3, "syd": 1}, "supercluster")


@pytest.mark.parametrize("subject", ["orders", "orders.>", "orders.*.created", "*", ">", "a.*.>", "$KV.cfg.>",
                                     "ünïcode.ok", "a-b_c.d"])
def test_valid_subjects(subject):
    assert nv.subject_problem(subject) is None


@pytest.mark.parametrize("subject,problem", [
    ("", "is not a subject"), ("a..b", "empty token"), (".a", "empty token"), ("a.", "empty token"),
    ("a b", "whitespace"), ("a.\tb", "whitespace"), ("a.>.b", "'>' before its last token"),
    ("a.b*", "wildcard inside"), ("a.*b.c", "wildcard inside"), ("a.b>", "wildcard inside"), (7, "is not a subject"),
])
def test_invalid_subjects(subject, problem):
    assert problem in nv.subject_problem(subject)


@pytest.mark.parametrize("a,b,expected", [
    ("orders.>", "orders.eu", True), ("orders.>", "orders", False), ("orders.*", "orders.eu.x", False),
    ("orders.*", "orders.eu", True), ("*.eu", "orders.*", True), (">", "anything.at.all", True),
    ("a.b", "a.c", False), ("a.*.c", "a.b.>", True), ("a.*.c", "a.b.d", False), ("a", "a", True),
    ("a.>", "b.>", False),
])
def test_overlap_is_a_shared_subject(a, b, expected):
    assert nv.overlap(a, b) is expected and nv.overlap(b, a) is expected


@pytest.mark.parametrize("text,nanos", [
    ("72h", 72 * 3600 * 10**9), ("1h30m", 5400 * 10**9), ("1.5h", 5400 * 10**9), ("500ms", 5 * 10**8),
    ("2m30s", 150 * 10**9), ("0", 0), ("+5s", 5 * 10**9), ("1us", 1000), ("1µs", 1000), (".5s", 5 * 10**8),
    ("5.s", 5 * 10**9), ("10ns", 10),
])
def test_go_durations(text, nanos):
    assert nv.parse_duration(text) == nanos
    assert nv.parse_duration(nv.format_duration(nanos)) == nanos


@pytest.mark.parametrize("text", ["72", "h", "1h30", "-5s", "5 s", " 5s", "5d", "1e3s", "", "5S", 5, None, "."])
def test_not_go_durations(text):
    assert nv.parse_duration(text) is None


@pytest.mark.parametrize("nanos,text", [(72 * 3600 * 10**9, "72h"), (5400 * 10**9, "1h30m"), (1500 * 10**6, "1500ms"),
                                        (61 * 10**9, "1m1s"), (7, "7ns")])
def test_durations_read_back_in_whole_units(nanos, text):
    assert nv.format_duration(nanos) == text


@pytest.mark.parametrize("value,size", [(1024, 1024), ("1024", 1024), (1024.0, 1024), ("1KB", 1024), ("1K", 1024),
                                        ("512MiB", 512 * 1024**2), ("2g", 2 * 1024**3), (-1, -1)])
def test_sizes(value, size):
    assert nv.parse_size(value) == size


@pytest.mark.parametrize("value", ["1.5GB", "GB", "1 XB", True, 1.5, None])
def test_not_sizes(value):
    assert nv.parse_size(value) is None


def problems(kind, given, shape=MESH3, creating=True):
    return js.check(kind, {"name": "orders", **given}, shape, creating)


@pytest.mark.parametrize("kind,given,words", [
    (js.STREAM, {"subjects": ["orders..x"]}, ["subjects:", "'orders..x'", "empty token", "allowed:"]),
    (js.STREAM, {"subjects": "orders.>"}, ["subjects:", "is not a list"]),
    (js.STREAM, {"subjects": ["a.>", "a.>"]}, ["subjects:", "each once"]),
    (js.STREAM, {"maxAge": "72x"}, ["maxAge:", "'72x'", "not a duration", "'72h'"]),
    (js.STREAM, {"maxAge": "50ms"}, ["maxAge:", "too short", "100ms"]),
    (js.STREAM, {"maxAge": 72}, ["maxAge:", "not a duration"]),
    (js.STREAM, {"storage": "ssd"}, ["storage:", "'ssd'", "allowed: file, memory"]),
    (js.STREAM, {"retention": "Limits"}, ["retention:", "allowed: limits, interest, workqueue"]),
    (js.STREAM, {"replicas": 0}, ["replicas:", "out of range", "1..5"]),
    (js.STREAM, {"replicas": 2.5}, ["replicas:", "not an integer"]),
    (js.STREAM, {"maxMsgs": 0}, ["maxMsgs:", "out of range", "-1 for no limit"]),
    (js.STREAM, {"maxMsgs": -2}, ["maxMsgs:", "out of range"]),
    (js.STREAM, {"maxBytes": "lots"}, ["maxBytes:", "not a size", "'512MB'"]),
    (js.STREAM, {"placement": "lhr"}, ["placement:", "'lhr'", "not a region of the cluster", "ord, syd, cdg"]),
    (js.STREAM, {"metadata": {"_nats.x": "1"}}, ["metadata:", "'_nats.'"]),
    (js.STREAM, {"mirror": {"name": "a.b"}}, ["mirror:", "name", "'a.b'"]),
    (js.STREAM, {"mirror": {"stream": "x"}}, ["mirror:", "unknown stream", "name required"]),
    (js.STREAM, {"sources": [{"name": "x", "optStartTime": "yesterday"}]}, ["sources:", "optStartTime", "RFC 3339"]),
    (js.STREAM, {"denyDelete": "yes"}, ["denyDelete:", "not a boolean", "true or false"]),
    (js.STREAM, {"subejcts": ["a"]}, ["subejcts: not a field of Stream", "allowed: name, subjects"]),
    (js.STREAM, {"name": "a.b"}, ["name:", "'a.b'", "'.'"]),
    (js.KEY_VALUE, {"name": "my.bucket"}, ["name:", "letters, digits, '_' and '-'"]),
    (js.KEY_VALUE, {"history": 65}, ["history:", "1..64"]),
    (js.KEY_VALUE, {"subjects": ["x"]}, ["subjects: not a field of KeyValue"]),
    (js.OBJECT_STORE, {"ttl": "forever"}, ["ttl:", "not a duration"]),
    (js.CONSUMER, {"streamName": "orders", "deliverPolicy": "byStartSeq"}, ["deliverPolicy:", "byStartSequence"]),
    (js.CONSUMER, {"streamName": "orders", "ackWait": "30"}, ["ackWait:", "not a duration"]),
    (js.STREAM, {"allowReplace": "maybe"}, ["allowReplace:", "not a boolean"]),
])
def test_each_bad_value_is_named_with_what_is_allowed(kind, given, words):
    found = problems(kind, given)
    assert len(found) == 1, found
    assert all(w in found[0] for w in words), found[0]


@pytest.mark.parametrize("kind,given,shape,creating,words", [
    (js.STREAM, {"replicas": 4}, MESH3, True, ["replicas: 4", "3 server(s) the cluster has", "1..3"]),
    (js.STREAM, {"replicas": 3, "placement": "syd"}, SUPER, True, ["region syd has", "1..1"]),
    (js.STREAM, {"replicas": 2, "placement": "syd"}, js.Shape({"ord": 3, "syd": 3, "cdg": 3}, "mesh"), True,
     ["each replica goes to another region"]),
    (js.STREAM, {"maxAge": "1m", "duplicateWindow": "2m"}, MESH3, True, ["duplicateWindow: 2m", "maxAge (1m)"]),
    (js.STREAM, {"discardNewPerSubject": True}, MESH3, True, ["discardNewPerSubject", "discard: new"]),
    (js.STREAM, {"allowRollupHdrs": True, "denyPurge": True}, MESH3, True, ["allowRollupHdrs", "denyPurge"]),
    (js.STREAM, {"mirror": {"name": "x"}, "subjects": ["a"]}, MESH3, True, ["mirror:", "subjects of its own"]),
    (js.STREAM, {"sealed": True}, MESH3, True, ["sealed: true on a stream being created"]),
    (js.KEY_VALUE, {"replicas": 5}, MESH3, True, ["replicas: 5"]),
    (js.CONSUMER, {"streamName": "o", "deliverPolicy": "byStartSequence"}, MESH3, True, ["optStartSeq: missing"]),
    (js.CONSUMER, {"streamName": "o", "optStartSeq": 5}, MESH3, True, ["optStartSeq: given with deliverPolicy all"]),
    (js.CONSUMER, {"streamName": "o", "filterSubject": "a", "filterSubjects": ["b"]}, MESH3, True, ["both given"]),
    (js.CONSUMER, {"streamName": "o", "backoff": ["1s", "2s"], "maxDeliver": 1}, MESH3, True, ["backoff: 2 entries"]),
    (js.CONSUMER, {"streamName": "o", "backoff": ["1s"], "ackWait": "5s"}, MESH3, True, ["ackWait: given with backoff"]),
    (js.CONSUMER, {"streamName": "o", "flowControl": True}, MESH3, True, ["flowControl: given to a pull consumer"]),
    (js.CONSUMER, {"streamName": "o", "deliverSubject": "d", "maxWaiting": 5}, MESH3, True, ["maxWaiting", "push"]),
])
def test_fields_that_refuse_each_other(kind, given, shape, creating, words):
    found = problems(kind, given, shape, creating)
    assert len(found) == 1 and all(w in found[0] for w in words), found


def test_sealing_a_stream_that_exists_is_fine():
    assert problems(js.STREAM, {"sealed": True}, creating=False) == []


def test_placement_needs_the_topology():
    found = problems(js.STREAM, {"placement": "ord"}, js.Shape())
    assert len(found) == 1 and "topology" in found[0] and "connection" in found[0]


def test_placement_waits_for_a_connection_not_known_yet():
    """A preview before the cluster exists (a local cluster choosing its ports at its first up): the region
    is judged at up, when the connection says the cluster's regions and topology."""
    assert problems(js.STREAM, {"placement": "syd", "replicas": 3}, js.Shape(known=False)) == []
    assert problems(js.STREAM, {"placement": 7}, js.Shape(known=False))


def test_without_a_shape_replicas_are_left_to_the_server():
    assert problems(js.STREAM, {"replicas": 5}, js.Shape()) == []


def test_unknown_values_are_not_judged():
    assert problems(js.STREAM, {"subjects": [js.UNKNOWN, "a..b"], "maxAge": js.UNKNOWN, "placement": js.UNKNOWN}) == []


def test_placement_is_the_clusters_own_words():
    mesh = js.desired(js.STREAM, {"name": "o", "placement": "syd"}, MESH3)["placement"]
    sup = js.desired(js.STREAM, {"name": "o", "placement": "syd"}, SUPER)["placement"]
    assert mesh == {"tags": ["region:syd"]} and sup == {"cluster": "syd"}
    assert js.PLACEMENT.show(mesh) == js.PLACEMENT.show(sup) == "syd"


def test_the_layouts_of_buckets_are_nats_gos():
    kv = js.desired(js.KEY_VALUE, {"name": "cfg", "ttl": "30s"}, MESH3)
    assert kv["name"] == "KV_cfg" and kv["subjects"] == ["$KV.cfg.>"] and kv["allow_direct"] and kv["deny_delete"]
    assert kv["duplicate_window"] == 30 * 10**9 and kv["discard"] == "new" and kv["max_msgs_per_subject"] == 1
    obj = js.desired(js.OBJECT_STORE, {"name": "files"}, MESH3)
    assert obj["name"] == "OBJ_files" and obj["subjects"] == ["$O.files.C.>", "$O.files.M.>"]


GIVEN = {"name": "orders", "subjects": ["orders.>"], "replicas": 3, "storage": "file", "maxMsgs": 1_000_000,
         "maxAge": "72h", "metadata": {"team": "shop"}, "connection": {"servers": ["nats://x:4222"]}}


def test_a_live_config_as_asked_reads_back_as_written():
    config = {**js.desired(js.STREAM, GIVEN, MESH3), "metadata": {"team": "shop", "_nats.ver": "2.12.8"}}
    assert js.read_inputs(js.STREAM, GIVEN, config, MESH3) == GIVEN


def test_an_edit_out_of_band_reads_back_in_the_inputs_words():
    config = {**js.desired(js.STREAM, GIVEN, MESH3), "max_age": 3600 * 10**9, "description": "edited",
              "num_replicas": 1}
    read = js.read_inputs(js.STREAM, GIVEN, config, MESH3)
    assert read == {**GIVEN, "maxAge": "1h", "description": "edited", "replicas": 1}


def test_an_import_reads_only_what_differs_from_the_defaults():
    config = js.desired(js.STREAM, GIVEN, MESH3)
    read = js.read_inputs(js.STREAM, {"name": "orders"}, config, MESH3)
    assert read == {"name": "orders", "subjects": ["orders.>"], "replicas": 3, "maxMsgs": 1_000_000,
                    "maxAge": "72h", "metadata": {"team": "shop"}}
    assert not js.changes(js.STREAM, js.desired(js.STREAM, read, MESH3), js.desired(js.STREAM, GIVEN, MESH3))


def test_changes_say_replace_by_the_rules():
    base = js.desired(js.STREAM, GIVEN, MESH3)
    for given, field, replaces in [({"storage": "memory"}, "storage", True), ({"replicas": 1}, "replicas", False),
                                   ({"retention": "workqueue"}, "retention", True),
                                   ({"retention": "interest"}, "retention", False),
                                   ({"denyDelete": True}, "denyDelete", False)]:
        (change,) = js.changes(js.STREAM, base, js.desired(js.STREAM, {**GIVEN, **given}, MESH3))
        assert (change.field.name, change.replaces) == (field, replaces)
    sealed = js.desired(js.STREAM, {**GIVEN, "denyDelete": True}, MESH3)
    (change,) = js.changes(js.STREAM, sealed, base)
    assert change.replaces and change.words() == "denyDelete: True -> False"


def test_every_rule_has_its_words():
    used = {f.rule for kind in js.KINDS.values() for f in kind.fields}
    assert used <= set(js.RULES) == set(js.RULE_WORDS)


@pytest.mark.parametrize("a,b,expected", [
    ("$SYS.ACCOUNT.x", "$SYS.ACCOUNT.>", True), ("$SYS.ACCOUNT.*", "$SYS.ACCOUNT.>", True),
    ("$SYS.ACCOUNT", "$SYS.ACCOUNT.>", False), ("$SYS.*.x", "$SYS.ACCOUNT.>", False), ("a.>", "a.*", False),
    ("a.b", "a.*", True), ("a.*", "a.*", True), ("*", "a", False), ("a.b.c", "a.>", True), (">", ">", True),
])
def test_subset_is_every_subject_of_one_matched_by_the_other(a, b, expected):
    assert nv.subset(a, b) is expected


@pytest.mark.parametrize("subject,extra,words", [
    (">", {}, "captures every subject"), ("*.x", {}, "overlaps $JS.> (the JetStream API)"),
    ("$SYS.*.x", {}, "overlaps $SYS.> (the system API)"), ("$NRG.x", {}, "$NRG.>"),
    (">", {"noAck": True, "replicas": 3}, "allowed: replicas 1"),
])
def test_an_acknowledging_stream_keeps_off_the_servers_own_subjects(subject, extra, words):
    found = problems(js.STREAM, {"subjects": [subject], **extra})
    assert len(found) == 1 and words in found[0] and found[0].startswith("subjects: "), found
    if not extra:
        assert problems(js.STREAM, {"subjects": [subject], "noAck": True, "replicas": 1}) == []


def test_a_consumer_names_its_stream():
    found = problems(js.CONSUMER, {"name": "c"})
    assert found == [found[0]] and found[0].startswith("streamName: missing; allowed:"), found
