"""JetStream assets as data (pure): the fields of Stream, KeyValue, ObjectStore and Consumer. Each field has
its input name (camelCase, as NACK's CRDs spell them), the key of nats-server's JSON config it sets, its
default there, and its rule: whether the server changes it in place or the asset must be replaced
(nats-server stream.go configUpdateCheck, consumer.go checkNewConsumerConfig; DESIGN.md: JetStream assets).
The provider checks, diffs, creates, updates and reads through these tables only, and
tests/servers/local/test_jetstream_rules.py holds them to a real nats-server."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from . import natsvalues as nv
from .settings import TOPOLOGIES, show

MAX_REPLICAS = 5  # nats-server StreamMaxReplicas
MAX_HISTORY = 64  # nats.go KeyValueMaxHistory
MAX_DESCRIPTION = 4096  # nats-server JSMaxDescriptionLen
MIN_AGE = 100 * 10**6  # 100ms: nats-server's floor for max_age and duplicate_window
DEFAULT_DUPLICATES = 120 * 10**9  # the server's duplicate window when none is given (2m)
REGION_TAG = "region:"  # the servers' tags (render/natsconf): region:<code>


class Unknown:
    """An input Pulumi does not know yet (preview): neither validated nor sent anywhere."""

    def __repr__(self) -> str:
        return "<unknown>"


UNKNOWN = Unknown()


def has_unknown(value: Any) -> bool:
    if value is UNKNOWN:
        return True
    if isinstance(value, Mapping):
        return any(has_unknown(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(has_unknown(v) for v in value)
    return False


@dataclass(frozen=True)
class Shape:
    """What the connection tells of the cluster: region -> server count, and its topology (None: not told)."""

    regions: Mapping[str, int] | None = None
    topology: str | None = None
    known: bool = True
    """False while the connection is unknown (a preview before the cluster exists): what only the cluster
    can say is judged once it is known, at up, before anything is made."""

    def servers(self, region: str | None) -> int | None:
        """Where a stream placed in `region` (None: anywhere) can put its replicas."""
        if not self.regions:
            return None
        if region is not None:
            return self.regions.get(region)
        return max(self.regions.values()) if self.topology == "supercluster" else sum(self.regions.values())


class Bad(Exception):
    """A value refused: what is wrong with it, and what is allowed."""

    def __init__(self, problem: str, allowed: str):
        super().__init__(problem)
        self.problem, self.allowed = problem, allowed


# ---------------------------------------------------------------- values: input <-> server JSON

@dataclass(frozen=True)
class Value:
    """How an input becomes the server's JSON (`parse`, refusing with Bad) and back (`show`); `canon` is
    the form two server values are compared in."""

    schema: dict
    parse: Callable[[Any, Shape], Any]
    show: Callable[[Any], Any] = lambda v: v
    canon: Callable[[Any], Any] = lambda v: v


def _text(most: int) -> Value:
    def parse(v: Any, _: Shape) -> str:
        if not isinstance(v, str) or len(v) > most:
            raise Bad("is not a text" if not isinstance(v, str) else "is too long", f"a text of at most {most} characters")
        return v
    return Value({"type": "string"}, parse)


def _int(low: int, high: int, unlimited: bool = False) -> Value:
    """-1 means no limit where `unlimited`; nats-server reads 0 there as -1 too, so 0 is refused (it would
    read back as -1)."""
    allowed = f"an integer {low}..{high}" + (", or -1 for no limit" if unlimited else "")

    def parse(v: Any, _: Shape) -> int:
        n = nv.integer(v)
        if n is None or not (low <= n <= high or unlimited and n == -1):
            raise Bad("is not an integer" if n is None else "is out of range", allowed)
        return n
    return Value({"type": "integer"}, parse)


def _size(high: int) -> Value:
    allowed = f"{nv.SIZE_ALLOWED}, 1..{high}; or -1 for no limit"

    def parse(v: Any, _: Shape) -> int:
        n = nv.parse_size(v)
        if n is None or not (1 <= n <= high or n == -1):
            raise Bad("is not a size" if n is None else "is out of range", allowed)
        return n
    return Value({"type": "integer", "description": "bytes; text such as '1GiB' is read too"}, parse)


def _duration(low: int = 0) -> Value:
    allowed = nv.DURATION_ALLOWED + (f"; 0 or at least {nv.format_duration(low)}" if low else "")

    def parse(v: Any, _: Shape) -> int:
        n = nv.parse_duration(v)
        if n is None or 0 < n < low:
            raise Bad("is not a duration" if n is None else "is too short", allowed)
        return n
    return Value({"type": "string"}, parse, nv.format_duration)


def _bool() -> Value:
    def parse(v: Any, _: Shape) -> bool:
        if isinstance(v, bool):
            return v
        if isinstance(v, str) and v.lower() in ("true", "false"):
            return v.lower() == "true"
        raise Bad("is not a boolean", "true or false")
    return Value({"type": "boolean"}, parse)


def _choice(words: Mapping[str, str]) -> Value:
    """User word -> the server's word."""
    back = {server: user for user, server in words.items()}

    def parse(v: Any, _: Shape) -> str:
        if v not in words:
            raise Bad("is not allowed", ", ".join(words))
        return words[v]
    return Value({"type": "string", "enum": list(words)}, parse, lambda s: back.get(s, s))


def _subject(v: Any, _: Shape = None) -> str:
    problem = nv.subject_problem(v)
    if problem:
        raise Bad(problem if isinstance(v, str) else "is not a subject", nv.SUBJECT_ALLOWED)
    return v


def _list(item: Callable[[Any, Shape], Any], what: str, unique: bool = True) -> Callable[[Any, Shape], list]:
    def parse(v: Any, shape: Shape) -> list:
        if not isinstance(v, (list, tuple)):
            raise Bad("is not a list", f"a list of {what}")
        items = []
        for i, x in enumerate(v):
            try:
                items.append(item(x, shape))
            except Bad as bad:
                raise Bad(f"has {show(x)} at [{i}], which {bad.problem}", bad.allowed) from None
        if unique and len(set(map(repr, items))) < len(items):
            raise Bad("names one entry twice", f"a list of {what}, each once")
        return items
    return parse


SUBJECTS = Value({"type": "array", "items": {"type": "string"}}, _list(_subject, "subjects"))


def _metadata() -> Value:
    def parse(v: Any, _: Shape) -> dict:
        if not isinstance(v, Mapping) or not all(isinstance(k, str) and isinstance(x, str) for k, x in v.items()):
            raise Bad("is not a map of texts", "a map from text to text")
        if any(k.startswith("_nats.") for k in v):
            raise Bad("names a key starting '_nats.'", "keys of your own: the server writes '_nats.' ones itself")
        return dict(v)
    own = (lambda m: {k: x for k, x in (m or {}).items() if not k.startswith("_nats.")})
    return Value({"type": "object", "additionalProperties": {"type": "string"}}, parse, own, own)


def _object(spec: Mapping[str, tuple[str, Callable[[Any, Shape], Any]]], required: tuple[str, ...], what: str,
            schema_ref: str) -> Value:
    """A JSON object: input key -> (server key, parse). Server keys may be paths ('external.api')."""
    allowed = f"{what}: {', '.join(spec)} ({', '.join(required)} required)"

    def parse(v: Any, shape: Shape) -> dict:
        if not isinstance(v, Mapping):
            raise Bad("is not an object", allowed)
        extra = sorted(set(v) - set(spec))
        missing = [k for k in required if v.get(k) is None]
        if extra or missing:
            raise Bad(f"has {'unknown ' + ', '.join(extra) if extra else 'no ' + ', '.join(missing)}", allowed)
        out: dict = {}
        for key, given in v.items():
            if given is None:
                continue
            server, item = spec[key]
            try:
                parsed = item(given, shape)
            except Bad as bad:
                raise Bad(f"has {key} {show(given)}, which {bad.problem}", bad.allowed) from None
            head, _, tail = server.partition(".")
            if tail:
                out.setdefault(head, {})[tail] = parsed
            else:
                out[server] = parsed
        return out

    def show_(s: Any) -> Any:
        if not isinstance(s, Mapping):
            return s
        out = {}
        for key, (server, _) in spec.items():
            head, _, tail = server.partition(".")
            found = (s.get(head) or {}).get(tail) if tail else s.get(head)
            if found not in (None, "", 0, False):
                out[key] = nv.format_duration(found) if server == "opt_start_time" and isinstance(found, int) else found
        return out

    def canon(s: Any) -> Any:
        if not isinstance(s, Mapping):
            return s
        kept = {k: canon(x) if isinstance(x, Mapping) else x for k, x in s.items() if x not in (None, "", 0, False, [], {})}
        if "opt_start_time" in kept:
            kept["opt_start_time"] = _time_canon(kept["opt_start_time"])
        return kept
    return Value({"$ref": f"#/types/nats-fly:index:{schema_ref}"}, parse, show_, canon)


def _time(v: Any, _: Shape = None) -> str:
    try:
        parsed = datetime.datetime.fromisoformat(v) if isinstance(v, str) else None
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise Bad("is not a time", "an RFC 3339 time with its offset, such as '2026-01-02T15:04:05Z'")
    return v


def _time_canon(v: Any) -> Any:
    try:
        return datetime.datetime.fromisoformat(v).astimezone(datetime.timezone.utc).isoformat()
    except (TypeError, ValueError):
        return v


def _asset_name(bucket: bool) -> Callable[[Any, Shape], str]:
    def parse(v: Any, _: Shape = None) -> str:
        problem = nv.name_problem(v, bucket)
        if problem:
            raise Bad(problem, nv.name_allowed(bucket))
        return v
    return parse


_stream_name = _asset_name(bucket=False)


def _seq(v: Any, _: Shape = None) -> int:
    n = nv.integer(v)
    if n is None or n < 1:
        raise Bad("is not a sequence", "an integer from 1")
    return n


_SOURCE_SPEC = {
    "name": ("name", _stream_name),
    "filterSubject": ("filter_subject", _subject),
    "optStartSeq": ("opt_start_seq", _seq),
    "optStartTime": ("opt_start_time", _time),
    "externalApiPrefix": ("external.api", lambda v, s: _text(255).parse(v, s)),
    "externalDeliverPrefix": ("external.deliver", lambda v, s: _text(255).parse(v, s)),
}
SOURCE = _object(_SOURCE_SPEC, ("name",), "a stream to copy from", "Source")
SOURCES = Value({"type": "array", "items": {"$ref": "#/types/nats-fly:index:Source"}},
                _list(SOURCE.parse, "sources (objects with name)"),
                lambda s: [SOURCE.show(x) for x in s or []], lambda s: [SOURCE.canon(x) for x in s or []])
TRANSFORM = _object({"source": ("src", _subject), "destination": ("dest", _subject)}, ("destination",),
                    "a subject transform", "SubjectTransform")
_REPUBLISH = _object({"source": ("src", _subject), "destination": ("dest", _subject),
                      "headersOnly": ("headers_only", lambda v, s: _bool().parse(v, s))},
                     ("destination",), "a republish", "Republish")
REPUBLISH = Value(_REPUBLISH.schema, _REPUBLISH.parse, _REPUBLISH.show,
                  lambda s: _REPUBLISH.canon({"src": ">", **s}) if isinstance(s, Mapping) else s)
"""Without a source the server republishes every subject of the stream: '>'."""


def _placement() -> Value:
    """A region, as the cluster places by it: the servers' tag region:<code> in a mesh, the region's
    cluster in a supercluster."""
    def parse(v: Any, shape: Shape) -> dict:
        if not isinstance(v, str) or not v:
            raise Bad("is not a region", "a region of the cluster")
        if shape.regions is not None and v not in shape.regions:
            raise Bad("is not a region of the cluster", ", ".join(shape.regions))
        if not shape.known:
            return {}
        if shape.topology not in TOPOLOGIES:
            raise Bad("cannot be placed: the connection does not say the cluster's topology",
                      "a connection from NatsCluster's `connection` output, which says it")
        return {"cluster": v} if shape.topology == "supercluster" else {"tags": [REGION_TAG + v]}

    def show_(s: Any) -> Any:
        if not isinstance(s, Mapping):
            return None
        tags = s.get("tags") or []
        if len(tags) == 1 and tags[0].startswith(REGION_TAG) and not s.get("cluster"):
            return tags[0][len(REGION_TAG):]
        return s.get("cluster") if not tags else None

    def canon(s: Any) -> Any:
        return {k: x for k, x in s.items() if x} or None if isinstance(s, Mapping) else s
    return Value({"type": "string", "description": "a region code of the cluster"}, parse, show_, canon)


PLACEMENT = _placement()


# ---------------------------------------------------------------- rules: in place or replace

def _never(old: Any, new: Any) -> bool:
    return False


RULES: dict[str, Callable[[Any, Any], bool]] = {
    "update": _never,
    "replace": lambda old, new: True,
    "one-way": lambda old, new: bool(old) and not new,  # sealed, denyDelete, denyPurge, allowMsgTtl
    "workqueue": lambda old, new: "workqueue" in (old, new),
    "mirror": lambda old, new: new is not None,  # removing the mirror promotes the stream in place
    "push-pull": lambda old, new: bool(old) != bool(new),
}
"""(old, new) of a changed field -> whether the change replaces the asset. The words say it in the README."""

RULE_WORDS = {
    "update": "in place",
    "replace": "replaces",
    "one-way": "false -> true in place; true -> false replaces",
    "workqueue": "limits <-> interest in place; to or from workqueue replaces",
    "mirror": "removing it promotes the mirror in place; any other change replaces",
    "push-pull": "another deliver subject in place; push <-> pull replaces",
}


@dataclass(frozen=True)
class Field:
    name: str
    """The input, camelCase."""
    key: str
    """The key of the server's JSON config."""
    value: Value
    default: Any
    """The server's value when the input is not given: a constant, or a function of the rest of the config."""
    rule: str = "update"
    about: str = ""


def _dup_default(c: Mapping) -> int:
    if c.get("mirror"):
        return 0
    age = c.get("max_age") or 0
    return min(age, DEFAULT_DUPLICATES) if age else DEFAULT_DUPLICATES


def _subjects_default(c: Mapping) -> list:
    return [] if c.get("mirror") or c.get("sources") else [c["name"]]


STORAGE = _choice({"file": "file", "memory": "memory"})
COMPRESSION = _choice({"none": "none", "s2": "s2"})
UNLIMITED_64 = _int(1, nv.MAX_INT64, unlimited=True)


def _name_field(bucket: bool) -> Field:
    return Field("name", "name", Value({"type": "string"}, _asset_name(bucket)), None, "replace",
                 "The asset's name; default: the resource name (no suffix).")


def _common(kind: str) -> list[Field]:
    """What every stream-backed asset says alike."""
    return [
        Field("description", "description", _text(MAX_DESCRIPTION), "", about="A description."),
        Field("storage", "storage", STORAGE, "file", "replace", "file or memory."),
        Field("replicas", "num_replicas", _int(1, MAX_REPLICAS), 1,
              about="Copies on different servers, 1..5 (at most the cluster's servers)."),
        Field("placement", "placement", PLACEMENT, None,
              about="The region the replicas live in (mesh: its servers' region tag; supercluster: its cluster)."),
        Field("maxBytes", "max_bytes", _size(nv.MAX_INT64), -1, about=f"Size limit of the {kind}; -1: none."),
        Field("metadata", "metadata", _metadata(), {}, about="Your own key/value notes."),
    ]


STREAM_FIELDS = (
    _name_field(bucket=False),
    Field("subjects", "subjects", SUBJECTS, _subjects_default, about="Subjects it stores; default: its name."),
    Field("retention", "retention", _choice({"limits": "limits", "interest": "interest", "workqueue": "workqueue"}),
          "limits", "workqueue"),
    *_common("stream"),
    Field("maxMsgs", "max_msgs", UNLIMITED_64, -1, about="Message limit; -1: none."),
    Field("maxAge", "max_age", _duration(MIN_AGE), 0, about="Age limit, e.g. '72h'; 0: none."),
    Field("maxMsgsPerSubject", "max_msgs_per_subject", UNLIMITED_64, -1, about="Messages kept per subject; -1: no limit."),
    Field("maxMsgSize", "max_msg_size", _int(1, nv.MAX_INT32, unlimited=True), -1, about="Largest message; -1: none."),
    Field("maxConsumers", "max_consumers", _int(1, nv.MAX_INT32, unlimited=True), -1, about="-1: no limit."),
    Field("discard", "discard", _choice({"old": "old", "new": "new"}), "old", about="At a limit: drop old, or refuse new."),
    Field("discardNewPerSubject", "discard_new_per_subject", _bool(), False),
    Field("duplicateWindow", "duplicate_window", _duration(MIN_AGE), _dup_default,
          about="Deduplication window; default 2m (or maxAge when shorter)."),
    Field("noAck", "no_ack", _bool(), False),
    Field("mirror", "mirror", SOURCE, None, "mirror", "The stream this one mirrors."),
    Field("sources", "sources", SOURCES, []),
    Field("compression", "compression", COMPRESSION, "none"),
    Field("subjectTransform", "subject_transform", TRANSFORM, None),
    Field("republish", "republish", REPUBLISH, None),
    Field("allowDirect", "allow_direct", _bool(), False, about="Direct get from any replica."),
    Field("allowRollupHdrs", "allow_rollup_hdrs", _bool(), False),
    Field("denyDelete", "deny_delete", _bool(), False, "one-way"),
    Field("denyPurge", "deny_purge", _bool(), False, "one-way"),
    Field("sealed", "sealed", _bool(), False, "one-way"),
    Field("allowMsgTtl", "allow_msg_ttl", _bool(), False, "one-way"),
)

KV_FIELDS = (
    _name_field(bucket=True),
    *_common("bucket"),
    Field("history", "max_msgs_per_subject", _int(1, MAX_HISTORY), 1, about="Values kept per key, 1..64."),
    Field("ttl", "max_age", _duration(MIN_AGE), 0, about="How long a value lives; 0: for ever."),
    Field("maxValueSize", "max_msg_size", _int(1, nv.MAX_INT32, unlimited=True), -1, about="-1: no limit."),
    Field("compression", "compression", COMPRESSION, "none"),
    Field("republish", "republish", REPUBLISH, None),
)

OBJECT_FIELDS = (
    _name_field(bucket=True),
    *_common("store"),
    Field("ttl", "max_age", _duration(MIN_AGE), 0, about="How long an object lives; 0: for ever."),
    Field("compression", "compression", COMPRESSION, "none"),
)


def _pull_default(value: Any) -> Callable[[Mapping], Any]:
    return lambda c: None if c.get("deliver_subject") else value


def _acked_default(value: Any) -> Callable[[Mapping], Any]:
    return lambda c: None if c.get("ack_policy", "none") == "none" else value


def _ack_wait_default(c: Mapping) -> Any:
    """The server waits the first backoff step when there is a backoff, else 30s when it waits for acks."""
    return c["backoff"][0] if c.get("backoff") else _acked_default(30 * 10**9)(c)


CONSUMER_FIELDS = (
    Field("name", "name", Value({"type": "string"}, _stream_name), None, "replace",
          "The consumer's (durable) name; default: the resource name."),
    Field("streamName", "stream_name", Value({"type": "string"}, _stream_name), None, "replace",
          "The stream it reads."),
    Field("description", "description", _text(MAX_DESCRIPTION), ""),
    Field("deliverPolicy", "deliver_policy", _choice({
        "all": "all", "last": "last", "new": "new", "byStartSequence": "by_start_sequence",
        "byStartTime": "by_start_time", "lastPerSubject": "last_per_subject"}), "all", "replace"),
    Field("optStartSeq", "opt_start_seq", Value({"type": "integer"}, _seq), None, "replace"),
    Field("optStartTime", "opt_start_time", Value({"type": "string"}, _time, canon=_time_canon), None, "replace"),
    Field("ackPolicy", "ack_policy", _choice({"none": "none", "all": "all", "explicit": "explicit"}), "none", "replace"),
    Field("ackWait", "ack_wait", _duration(), _ack_wait_default),
    Field("maxDeliver", "max_deliver", _int(1, nv.MAX_INT32, unlimited=True), -1),
    Field("backoff", "backoff", Value({"type": "array", "items": {"type": "string"}},
                                      _list(lambda v, s: _duration().parse(v, s), "durations", unique=False),
                                      lambda s: [nv.format_duration(x) for x in s or []]), None),
    Field("filterSubject", "filter_subject", Value({"type": "string"}, _subject), None),
    Field("filterSubjects", "filter_subjects", SUBJECTS, None),
    Field("replayPolicy", "replay_policy", _choice({"instant": "instant", "original": "original"}), "instant",
          "replace"),
    Field("sampleFreq", "sample_freq", _text(8), None),
    Field("rateLimitBps", "rate_limit_bps", _int(0, nv.MAX_INT64), None),
    Field("maxAckPending", "max_ack_pending", _int(1, nv.MAX_INT32, unlimited=True), _acked_default(1000)),
    Field("deliverSubject", "deliver_subject", Value({"type": "string"}, _subject), None, "push-pull",
          "Push consumers: where it delivers; none: a pull consumer."),
    Field("deliverGroup", "deliver_group", _text(255), None),
    Field("headersOnly", "headers_only", _bool(), None),
    Field("maxWaiting", "max_waiting", _int(1, nv.MAX_INT32), _pull_default(512), "replace"),
    Field("maxRequestBatch", "max_batch", _int(1, nv.MAX_INT32), None),
    Field("maxRequestExpires", "max_expires", _duration(), None),
    Field("maxRequestMaxBytes", "max_bytes", _int(1, nv.MAX_INT32), None),
    Field("inactiveThreshold", "inactive_threshold", _duration(), None),
    Field("replicas", "num_replicas", _int(0, MAX_REPLICAS), 0, about="0: as many as its stream."),
    # 2.12.8 changes it in place, 2.15 refuses: a rule holds for every release a stack may run
    Field("memStorage", "mem_storage", _bool(), None, "replace"),
    Field("metadata", "metadata", _metadata(), {}),
    Field("heartbeatInterval", "idle_heartbeat", _duration(), None, "replace"),
    Field("flowControl", "flow_control", _bool(), None, "replace"),
)


@dataclass(frozen=True)
class Kind:
    name: str
    fields: tuple[Field, ...]
    prefix: str = ""
    """The stream's name is prefix + the asset's name (KV_<bucket>, OBJ_<bucket>)."""
    fixed: Callable[[str], dict] = lambda name: {}
    """What every asset of the kind has, from its name (the KV and object store layouts of nats.go)."""
    by_name: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        self.by_name.update({f.name: f for f in self.fields})

    @property
    def token(self) -> str:
        return f"nats-fly:index:{self.name}"

    @property
    def bucket(self) -> bool:
        return bool(self.prefix)


def _kv_fixed(bucket: str) -> dict:
    """nats.go jetstream prepareKeyValueConfig: what makes a stream a KV bucket."""
    return {"subjects": [f"$KV.{bucket}.>"], "allow_rollup_hdrs": True, "deny_delete": True, "allow_direct": True,
            "discard": "new", "max_msgs": -1, "max_consumers": -1}


def _object_fixed(bucket: str) -> dict:
    """nats.go jetstream prepareObjectStoreConfig."""
    return {"subjects": [f"$O.{bucket}.C.>", f"$O.{bucket}.M.>"], "allow_rollup_hdrs": True, "allow_direct": True,
            "discard": "new"}


STREAM = Kind("Stream", STREAM_FIELDS)
KEY_VALUE = Kind("KeyValue", KV_FIELDS, "KV_", _kv_fixed)
OBJECT_STORE = Kind("ObjectStore", OBJECT_FIELDS, "OBJ_", _object_fixed)
CONSUMER = Kind("Consumer", CONSUMER_FIELDS, fixed=lambda name: {"durable_name": name})
KINDS = {k.name: k for k in (STREAM, KEY_VALUE, OBJECT_STORE, CONSUMER)}
STREAM_KINDS = (STREAM, KEY_VALUE, OBJECT_STORE)

EDGE = "edgeRegions"
OWN_INPUTS = ("connection", "allowReplace", EDGE)
"""Inputs that are not the asset's config: how to reach the server, the replace guard, and the regions that
get a mirror of it (config/edge.py)."""


# ---------------------------------------------------------------- check

def check(kind: Kind, given: Mapping[str, Any], shape: Shape, creating: bool) -> list[str]:
    """One line per problem of the inputs (key, value, what is allowed). Unknown values pass."""
    problems = []
    for key in given:
        if key not in kind.by_name and key not in OWN_INPUTS:
            problems.append(f"{_label(key)}: not a field of {kind.name}; allowed: {', '.join(kind.by_name)}")
    parsed = {}
    for f in kind.fields:
        value = given.get(f.name)
        if value is None or has_unknown(value):
            continue
        try:
            parsed[f.key] = f.value.parse(value, shape)
        except Bad as bad:
            problems.append(f"{_label(f.name)}: {show(value)} {bad.problem}; allowed: {bad.allowed}")
    if kind is CONSUMER and given.get("streamName") is None:
        problems.append("streamName: missing; allowed: the name of the stream the consumer reads (a Stream's "
                        "name output, or the stream's name on the server)")
    if "allowReplace" in given and not has_unknown(given["allowReplace"]):
        try:
            _bool().parse(given["allowReplace"], shape)
        except Bad as bad:
            problems.append(f"allowReplace: {show(given['allowReplace'])} {bad.problem}; allowed: {bad.allowed}")
    if not problems:
        known = {f.key for f in kind.fields if given.get(f.name) is not None and not has_unknown(given.get(f.name))}
        problems += (_consumer_relations if kind is CONSUMER else _stream_relations)(kind, parsed, known, shape, creating)
    return problems


def _label(key: str) -> str:
    return key if len(key) <= 60 else show(key)


def _stream_relations(kind: Kind, c: dict, known: set, shape: Shape, creating: bool) -> list[str]:
    """What nats-server's checkStreamCfg refuses across fields, said before anything is sent."""
    problems = []
    words = {f.key: f.name for f in kind.fields}
    age, dup = c.get("max_age", 0), c.get("duplicate_window")
    if age and dup and dup > age:
        problems.append(f"{words['duplicate_window']}: {nv.format_duration(dup)} is longer than {words['max_age']} "
                        f"({nv.format_duration(age)}); allowed: a window at most as long as maxAge")
    if c.get("discard_new_per_subject") and (c.get("discard") != "new" or c.get("max_msgs_per_subject", -1) <= 0):
        problems.append("discardNewPerSubject: true needs discard: new and maxMsgsPerSubject above 0; allowed: "
                        "set both, or leave discardNewPerSubject out")
    if c.get("allow_rollup_hdrs") and c.get("deny_purge"):
        problems.append("allowRollupHdrs: true with denyPurge: true: a roll-up purges; allowed: one of them")
    if c.get("mirror") and (c.get("subjects") or c.get("sources")):
        problems.append(f"mirror: a mirror holds {'subjects' if c.get('subjects') else 'sources'} of its own; "
                        f"allowed: a mirror without subjects and sources")
    if not c.get("no_ack"):
        problems += [f"subjects: {subject!r} {clash}; allowed: subjects outside it, or noAck: true"
                     for subject in c.get("subjects") or [] if (clash := _reserved(subject))]
    elif c.get("num_replicas", 1) > 1 and ">" in (c.get("subjects") or []):
        problems.append("subjects: '>' with replicas above 1: a stream of every subject has one replica; "
                        "allowed: replicas 1")
    if c.get("sealed") and creating:
        problems.append("sealed: true on a stream being created; allowed: seal a stream that exists")
    replicas, region = c.get("num_replicas", 1), _region_of(c.get("placement"))
    room = shape.servers(region)
    if room is not None and replicas > room:
        where = f"region {region} has" if region else "the cluster has"
        problems.append(f"replicas: {replicas} is more than the {room} server(s) {where}; allowed: 1..{room}")
    elif region and replicas > 1 and shape.topology == "mesh" and len(shape.regions or {}) >= 3:
        problems.append(f"replicas: {replicas} with placement {region!r}: in a mesh of 3 regions or more each "
                        f"replica goes to another region; allowed: replicas 1 with a placement, or no placement")
    return problems


RESERVED = (("$JS.>", "$JS.EVENT.>", "the JetStream API"), ("$JSC.>", None, "the JetStream API"),
            ("$NRG.>", None, "the JetStream API"), ("$SYS.>", "$SYS.ACCOUNT.>", "the system API"))
"""Subjects an acknowledging stream may not take (nats-server checkStreamCfg): a stream would answer the
requests sent there. Each with the part it may take, and whose subjects they are."""


def _reserved(subject: str) -> str | None:
    """What `subject` takes that a stream which acknowledges may not, or None."""
    if subject == ">":
        return "captures every subject, the servers' own APIs too"
    for namespace, allowed, whose in RESERVED:
        if nv.overlap(subject, namespace) and not (allowed and nv.subset(subject, allowed)):
            return f"overlaps {namespace} ({whose}), whose requests the stream would answer"
    return None


def _region_of(placement: Any) -> str | None:
    return PLACEMENT.show(placement) if placement else None


def _consumer_relations(kind: Kind, c: dict, known: set, shape: Shape, creating: bool) -> list[str]:
    problems = []
    policy = c.get("deliver_policy", "all")
    for key, needs, word in (("opt_start_seq", "by_start_sequence", "optStartSeq"),
                             ("opt_start_time", "by_start_time", "optStartTime")):
        if (policy == needs) != (key in c) and (key in known or "deliver_policy" in known):
            user = kind.by_name["deliverPolicy"].value.show(needs)
            problems.append(f"{word}: {'missing' if key not in c else 'given'} with deliverPolicy "
                            f"{kind.by_name['deliverPolicy'].value.show(policy)}; allowed: {word} exactly "
                            f"with deliverPolicy {user}")
    if "ack_wait" in known and c.get("backoff"):
        problems.append("ackWait: given with backoff; allowed: one of them (the server waits the first backoff "
                        "step and ignores ackWait)")
    if "filter_subject" in c and "filter_subjects" in c:
        problems.append("filterSubject and filterSubjects: both given; allowed: one of them")
    backoff, most = c.get("backoff") or [], c.get("max_deliver", -1)
    if backoff and most != -1 and len(backoff) > most:
        problems.append(f"backoff: {len(backoff)} entries for maxDeliver {most}; allowed: at most maxDeliver entries")
    push = bool(c.get("deliver_subject"))
    for key, word in (("deliver_group", "deliverGroup"), ("idle_heartbeat", "heartbeatInterval"),
                      ("flow_control", "flowControl")):
        if key in c and not push:
            problems.append(f"{word}: given to a pull consumer; allowed: with deliverSubject (a push consumer)")
    for key, word in (("max_waiting", "maxWaiting"), ("max_batch", "maxRequestBatch"),
                      ("max_expires", "maxRequestExpires"), ("max_bytes", "maxRequestMaxBytes")):
        if key in c and push:
            problems.append(f"{word}: given to a push consumer; allowed: without deliverSubject (a pull consumer)")
    room = shape.servers(None)
    if room is not None and c.get("num_replicas", 0) > room:
        problems.append(f"replicas: {c['num_replicas']} is more than the {room} server(s) of the cluster; "
                        f"allowed: 0..{room}")
    return problems


# ---------------------------------------------------------------- the server's config

def stream_name(kind: Kind, name: str) -> str:
    return kind.prefix + name


def desired(kind: Kind, inputs: Mapping[str, Any], shape: Shape) -> dict:
    """The server's JSON config for every field of the kind, defaults filled as the server fills them.
    `inputs` passed check and are known."""
    config: dict = {}
    for f in kind.fields:
        given = inputs.get(f.name)
        if given is not None:
            config[f.key] = f.value.parse(given, shape)
    if kind is not CONSUMER:
        config["name"] = stream_name(kind, inputs["name"])
    if inputs.get(EDGE) not in (None, False, []):
        config.setdefault("allow_direct", True)  # the edge mirrors answer the origin's direct gets only then
    config.update(kind.fixed(inputs["name"]))
    config = _with_defaults(kind, config)
    if kind.prefix:  # a bucket's window follows its ttl, as nats.go sets it (and the server refuses a longer one)
        config["duplicate_window"] = _dup_default(config)
    return config


def _with_defaults(kind: Kind, config: dict) -> dict:
    for f in kind.fields:
        if f.key not in config and not callable(f.default):
            config[f.key] = f.default
    for f in kind.fields:
        if f.key not in config:
            config[f.key] = f.default(config)
    if config.get("sealed"):
        config.update(SEALED)
    return config


SEALED = {"max_age": 0, "discard": "new", "deny_delete": True, "deny_purge": True, "allow_rollup_hdrs": False}
"""What nats-server sets on a sealed stream, whatever it is sent (configUpdateCheck)."""


def live(kind: Kind, config: Mapping[str, Any]) -> dict:
    """A live config (the server's JSON) as `desired` gives it: every field of the kind, absent ones at
    their default."""
    found = {f.key: config[f.key] for f in kind.fields if f.key in config}
    found["name"] = config.get("name")
    return _with_defaults(kind, found)


def differs(f: Field, old: Any, new: Any) -> bool:
    """Whether the server holds something else; what it leaves out of its JSON (empty, false, 0) is one."""
    def canon(v: Any) -> Any:
        v = f.value.canon(v)
        return None if v in (None, "", [], {}) or v is False or v == 0 and not isinstance(v, bool) else v
    return canon(old) != canon(new)


@dataclass(frozen=True)
class Change:
    field: Field
    old: Any
    new: Any

    @property
    def replaces(self) -> bool:
        return RULES[self.field.rule](self.old, self.new)

    def words(self) -> str:
        return f"{self.field.name}: {_shown(self.field, self.old)} -> {_shown(self.field, self.new)}"


def _shown(f: Field, value: Any) -> str:
    return "(none)" if value in (None, "", [], {}) else show(f.value.show(value))


def changes(kind: Kind, old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Change]:
    """The fields whose server config differs between two `desired` (or `live`) configs."""
    return [Change(f, old.get(f.key), new.get(f.key)) for f in kind.fields if differs(f, old.get(f.key), new.get(f.key))]


def read_inputs(kind: Kind, inputs: Mapping[str, Any], config: Mapping[str, Any], shape: Shape) -> dict:
    """The inputs that say what the live `config` says: each field as given where the server holds what
    it asks for, else the live value in the input's form (so a refresh shows an edit made out of band);
    a field not given appears only where the server holds something other than its default."""
    expected = desired(kind, inputs, shape)
    now = live(kind, config)
    out = {k: v for k, v in inputs.items() if k in OWN_INPUTS or k == "name"}
    for f in kind.fields:
        if f.name == "name":
            continue
        if not differs(f, expected[f.key], now[f.key]):
            if inputs.get(f.name) is not None:
                out[f.name] = inputs[f.name]
        else:
            shown = f.value.show(now[f.key])
            if shown is not None:
                out[f.name] = shown
    # A field read only because its default follows another read field (ackWait after ackPolicy) goes again.
    for f in kind.fields:
        if f.name in out and inputs.get(f.name) is None and f.name != "name":
            without = {k: v for k, v in out.items() if k != f.name}
            if not differs(f, desired(kind, without, shape)[f.key], now[f.key]):
                out = without
    return out


def overlay(config: Mapping[str, Any], want: Mapping[str, Any], kind: Kind) -> dict:
    """The live config with every field of the kind set as `want` says (lossless: what the kind does not
    model stays as the server has it); the server's own metadata keys are kept."""
    out = dict(config)
    for key, value in want.items():
        if value is None or value == [] and key in ("sources", "backoff", "filter_subjects"):
            out.pop(key, None)
        else:
            out[key] = value
    if "metadata" in want:
        ours = {k: v for k, v in (config.get("metadata") or {}).items() if k.startswith("_nats.")}
        out["metadata"] = {**ours, **(want["metadata"] or {})}
    out.pop("stream_name", None)
    return out
