"""The nats-fly provider's custom resources: Stream, KeyValue, ObjectStore and Consumer, checked, diffed,
created, read, updated and deleted through the catalogue (config/jetstream.py) with raw JetStream API
calls (processes/jetstream.py) over one connection per cluster and user for the process's life. Their
schema is written here from the catalogue; provider.py serves them beside NatsCluster's construct.

Every refusal is an AssetError: one line, which the servicer turns into a gRPC abort (no traceback).
Nothing here logs an input, the provider's configuration or the environment: the engine hands the
provider every `nats-fly:*` stack value, decrypted."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import grpc
from pulumi.provider.experimental import provider as xp
from pulumi.provider.experimental.property_value import Computed, PropertyValue
from pulumi.runtime import rpc

from . import edgemirrors
from .config import edge
from .config import jetstream as js
from .config import natsvalues as nv
from .config.settings import TOPOLOGIES, show
from .processes.jetstream import ApiError, Connections, JetStreamError, Target

CONNECTION_KEYS = ("servers", "user", "password", "regions", "topology", "caFile", "jetstream")
CONNECTION_ALLOWED = ("NatsCluster's connection output (connection: cluster.connection, or ${cluster.connection} in "
                      "YAML): {servers: [nats:// or tls:// URLs], user, password, regions, topology, jetstream}")
SUBJECT_OVERLAP = 10065  # nats-server JSStreamSubjectOverlapErr
NAME_IN_USE = 10058  # JSStreamNameExistErr: another config under the name
CONSUMER_EXISTS = 10148  # JSConsumerAlreadyExists: another config under the name


class AssetError(Exception):
    """A refusal or failure in one line, and the gRPC status it goes back with."""

    def __init__(self, line: str, code: grpc.StatusCode = grpc.StatusCode.FAILED_PRECONDITION):
        super().__init__(line)
        self.code = code


# ---------------------------------------------------------------- property values <-> plain values

def plain(value: PropertyValue | None) -> Any:
    """Python values; what Pulumi does not know yet (preview) becomes js.UNKNOWN."""
    if value is None:
        return None
    v = value.value
    if isinstance(v, Computed) or v == rpc.UNKNOWN:
        return js.UNKNOWN
    if isinstance(v, Mapping):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def plain_map(values: Mapping[str, PropertyValue] | None) -> dict[str, Any]:
    return {k: plain(v) for k, v in (values or {}).items()}


def wrap(value: Any) -> PropertyValue:
    if isinstance(value, Mapping):
        return PropertyValue({k: wrap(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return PropertyValue([wrap(v) for v in value])
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return PropertyValue(float(value))
    return PropertyValue(value)


def kind_of(urn: str) -> js.Kind:
    return js.KINDS[urn.split("::")[-2].rsplit(":", 1)[-1]]


def resource_name(urn: str) -> str:
    return urn.split("::")[-1]


# ---------------------------------------------------------------- the connection

def connection_problem(value: Any) -> str | None:
    """Why `value` is no connection (never echoing its password), or None."""
    if not isinstance(value, Mapping):
        return f"connection: {'a text' if isinstance(value, str) else type(value).__name__} is not a connection; " \
               f"allowed: {CONNECTION_ALLOWED}"
    unknown = sorted(set(value) - set(CONNECTION_KEYS))
    servers = value.get("servers")
    if unknown:
        return f"connection: has unknown keys {', '.join(map(show, unknown))}; allowed: {CONNECTION_ALLOWED}"
    if (not isinstance(servers, list) or not servers or not all(isinstance(u, str) for u in servers)
            or any(urlsplit(u).scheme not in ("nats", "tls") or not urlsplit(u).hostname for u in servers)):
        return f"connection: servers {show(servers)} are not client URLs; allowed: {CONNECTION_ALLOWED}"
    for key in ("user", "password", "caFile"):
        if value.get(key) is not None and not isinstance(value[key], str):
            return f"connection: {key} is not a text; allowed: {CONNECTION_ALLOWED}"
    regions = value.get("regions")
    if regions is not None and (not isinstance(regions, Mapping) or not all(
            isinstance(k, str) and nv.integer(n) is not None and nv.integer(n) >= 1 for k, n in regions.items())):
        return f"connection: regions {show(regions)} are not region -> server count; allowed: {CONNECTION_ALLOWED}"
    if value.get("jetstream") is not None and not isinstance(value["jetstream"], bool):
        return f"connection: jetstream {show(value['jetstream'])} is not true or false; allowed: {CONNECTION_ALLOWED}"
    if value.get("topology") is not None and value["topology"] not in TOPOLOGIES:
        return f"connection: topology {show(value['topology'])} is not allowed; allowed: {', '.join(TOPOLOGIES)}"
    return None


def provider_connection(value: PropertyValue | None) -> Any:
    """A provider's connection: an object, or the JSON text stack config gives (`nats-fly:connection`)."""
    given = plain(value)
    if isinstance(given, str) and given is not js.UNKNOWN:
        try:
            return json.loads(given)
        except ValueError:
            return given
    return given


def target_of(conn: Mapping[str, Any]) -> Target:
    return Target(tuple(conn["servers"]), conn.get("user"), conn.get("password"), conn.get("caFile"))


def shape_of(conn: Mapping[str, Any] | None) -> js.Shape:
    if js.has_unknown(conn):
        return js.Shape(known=False)
    if not isinstance(conn, Mapping) or connection_problem(conn):
        return js.Shape()
    regions = conn.get("regions")
    return js.Shape({k: nv.integer(n) for k, n in regions.items()} if regions else None, conn.get("topology"))


def cluster_key(conn: Mapping[str, Any]) -> tuple:
    return tuple(sorted(conn["servers"])), conn.get("user")


# ---------------------------------------------------------------- schema

def _property(f: js.Field) -> dict:
    return {**f.value.schema, "description": f.about} if f.about else dict(f.value.schema)


CONNECTION_REF = {"$ref": "#/types/nats-fly:index:Connection", "secret": True,
                  "description": "How to reach the cluster: NatsCluster's `connection` output. Default: the provider's."}
ALLOW_REPLACE = {"type": "boolean", "description": "Let a change the server cannot make in place delete and "
                 "recreate the asset even when it holds messages (or a consumer its place). Default: refused."}

EDGE_REGIONS = {"oneOf": [{"type": "boolean"}, {"type": "array", "items": {"type": "string"}}],
                "description": "Regions that get a mirror of it answering direct gets (kv.get) there: true for every "
                               "region of the cluster but its placement's, or a list of regions."}
EDGE_MIRRORS = {"type": "object", "additionalProperties": {"type": "string"},
                "description": "Region -> the name of its edge mirror (in a mesh a client reads its region's mirror "
                               "by this name)."}


def resource_schemas() -> dict[str, dict]:
    schemas = {}
    for kind in js.KINDS.values():
        inputs = {f.name: _property(f) for f in kind.fields}
        inputs.update(connection=CONNECTION_REF, allowReplace=ALLOW_REPLACE)
        if kind in edge.KINDS:
            inputs[edge.EDGE] = EDGE_REGIONS
        outputs = dict(inputs)
        if kind is not js.CONSUMER:
            outputs["stream"] = {"type": "string", "description": "The stream's name on the server."}
        if kind in edge.KINDS:
            outputs[edge.MIRRORS] = EDGE_MIRRORS
        schemas[kind.token] = {
            "description": f"A JetStream {kind.name}, managed by the server's own update rules.",
            "inputProperties": inputs, "requiredInputs": ["streamName"] if kind is js.CONSUMER else [],
            "properties": outputs, "required": ["name", *(["stream"] if kind is not js.CONSUMER else [])]}
    return schemas


def type_schemas() -> dict[str, dict]:
    text, number, flag = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}

    def obj(description: str, properties: dict) -> dict:
        return {"type": "object", "description": description, "properties": properties}
    return {
        "nats-fly:index:Source": obj("A stream to mirror or source from.", {
            "name": text, "filterSubject": text, "optStartSeq": number, "optStartTime": text,
            "externalApiPrefix": text, "externalDeliverPrefix": text}),
        "nats-fly:index:SubjectTransform": obj("A subject transform.", {"source": text, "destination": text}),
        "nats-fly:index:Republish": obj("Republish stored messages to other subjects.", {
            "source": text, "destination": text, "headersOnly": flag}),
    }


# ---------------------------------------------------------------- the provider

class Assets(xp.Provider):
    def __init__(self, name: str):
        self.connections = Connections(name)
        self.provider_connection: Any = None
        self.declared: dict[str, tuple[tuple, str, list[str]]] = {}
        """urn -> (cluster, name on the server, subjects) of the assets checked in this run: clashes are said at
        preview."""

    async def configure(self, request: xp.ConfigureRequest) -> xp.ConfigureResponse:
        self.provider_connection = provider_connection(request.args.get("connection"))
        # No preview of Create/Update (the SDK cannot send an unknown back); Check and Diff still run.
        return xp.ConfigureResponse(accept_secrets=True, supports_preview=False, accept_resources=True,
                                    accept_outputs=False)

    async def check_config(self, request: xp.CheckRequest) -> xp.CheckResponse:
        given = provider_connection(request.new_inputs.get("connection"))
        problem = None if given is None or js.has_unknown(given) else connection_problem(given)
        return xp.CheckResponse(inputs=request.new_inputs, failures=[xp.CheckFailure("", problem)] if problem else [])

    async def diff_config(self, request: xp.DiffRequest) -> xp.DiffResponse:
        """A new connection (another password, say) reconfigures the provider in place: never a replace,
        which would replace every asset it serves."""
        old, new = plain(request.old_state.get("connection")), plain(request.new_inputs.get("connection"))
        changed = old != new
        # diffs, not detailed_diff: the SDK's DiffConfig reads PropertyDiff.inputDiff, which does not exist (3.272)
        return xp.DiffResponse(changes=changed, diffs=["connection"] if changed else [])

    # ---- check

    async def check(self, request: xp.CheckRequest) -> xp.CheckResponse:
        kind, news = kind_of(request.urn), dict(request.new_inputs)
        news.setdefault("name", PropertyValue(resource_name(request.urn)))
        given = plain_map(news)
        conn = given.get("connection", self.provider_connection)
        problems = []
        if conn is None:
            problems.append(f"connection: missing; allowed: {CONNECTION_ALLOWED}, or a provider that has one")
        elif not js.has_unknown(conn):
            problems += filter(None, [connection_problem(conn)])
            if isinstance(conn, Mapping) and conn.get("jetstream") is False:
                problems.append("connection: the cluster runs without JetStream, where no stream, bucket or "
                                "consumer can live; allowed: a cluster with jetstream: true")
        shape = shape_of(conn)
        problems += js.check(kind, given, shape, creating=not request.old_inputs)
        problems += edge.check(kind, given, shape)
        if not problems and conn is not None and not js.has_unknown([conn, given]):
            problems += self._clashes(request.urn, kind, given, conn, shape)
        return xp.CheckResponse(inputs=news, failures=[xp.CheckFailure("", p) for p in problems])

    def _clashes(self, urn: str, kind: js.Kind, given: dict, conn: Mapping, shape: js.Shape) -> list[str]:
        """What another asset of the same cluster, checked in this run, holds too: the name on the server (a
        consumer's within its stream), or a subject of a stream."""
        cluster = cluster_key(conn)
        if kind is js.CONSUMER:
            name, subjects = f"{given['streamName']}/{given['name']}", []
        else:
            name, subjects = js.stream_name(kind, given["name"]), js.desired(kind, given, shape)["subjects"]
        problems = []
        for other_urn, (other_cluster, other_name, others) in self.declared.items():
            if other_urn == urn or other_cluster != cluster:
                continue
            if other_name == name:
                what = "consumer" if kind is js.CONSUMER else "stream"
                problems.append(f"name: {given['name']!r} makes the {what} {name}, which resource "
                                f"{resource_name(other_urn)} makes too; allowed: a name no other asset of the "
                                f"cluster has")
            for mine in subjects:
                theirs = next((s for s in others if nv.overlap(mine, s)), None)
                if theirs:
                    problems.append(f"subjects: {mine!r} overlaps {theirs!r} of stream {other_name} (resource "
                                    f"{resource_name(other_urn)}); allowed: subjects no other stream of the cluster "
                                    f"holds")
        self.declared[urn] = (cluster, name, subjects)
        return problems

    # ---- diff

    async def diff(self, request: xp.DiffRequest) -> xp.DiffResponse:
        kind = kind_of(request.urn)
        olds, news = plain_map(request.old_state), plain_map(request.new_inputs)
        shape = shape_of(news.get("connection"))
        shape = shape if shape.topology else shape_of(olds.get("connection"))
        unknown = [f for f in kind.fields if js.has_unknown(news.get(f.name))]
        known = {**news, **{f.name: olds.get(f.name) for f in unknown}}
        found = js.changes(kind, js.desired(kind, olds, shape), js.desired(kind, known, shape))
        detailed = {c.field.name: c.replaces for c in found}
        detailed.update({f.name: f.rule == "replace" for f in unknown})
        if "connection" in olds and olds["connection"] != news.get("connection", olds["connection"]):
            detailed["connection"] = False
        if kind in edge.KINDS and (js.has_unknown(news.get(edge.EDGE))
                                   or sorted(edge.regions(news, shape)) != sorted(olds.get(edge.MIRRORS) or {})):
            detailed[edge.EDGE] = False
        replaces = [name for name, replace in detailed.items() if replace]
        # Only a known change is judged: an unknown one is judged when its value is known, and a consumer
        # whose stream is replaced (its streamName unknown here) goes with the stream, which was judged.
        known_replaces = [c for c in found if c.replaces]
        if known_replaces and not _bool(news.get("allowReplace")):
            await self._refuse_replace(request.urn, kind, olds, news, known_replaces)
        return xp.DiffResponse(
            changes=bool(detailed), replaces=replaces, delete_before_replace=bool(replaces),
            detailed_diff={k: xp.PropertyDiff(xp.PropertyDiffKind.UPDATE_REPLACE if r else xp.PropertyDiffKind.UPDATE,
                                              True) for k, r in detailed.items()})

    async def _refuse_replace(self, urn: str, kind: js.Kind, olds: dict, news: dict, changes: list[js.Change]) -> None:
        """A replace of an asset that holds something is refused, naming what it would destroy. The server
        is asked only here, so a no-op up sends no request."""
        conn = news.get("connection") if not js.has_unknown(news.get("connection")) else None
        api = await self._api(urn, kind, conn or olds.get("connection"))
        held = await held_by(api, kind, olds)
        if not held:
            return
        what = ", ".join(c.words() for c in changes)
        keep = " and ".join(c.field.name for c in changes)
        raise AssetError(f"{kind.token} {resource_name(urn)}: {what} cannot be changed in place: {asset_words(kind, olds)} "
                         f"would be deleted and made anew, losing {held}; allowed: keep {keep} as it is, or set "
                         f"allowReplace: true on it to replace it anyway")

    # ---- create, update, delete, read

    async def create(self, request: xp.CreateRequest) -> xp.CreateResponse:
        kind, props = kind_of(request.urn), plain_map(request.properties)
        conn = props.get("connection") or self.provider_connection
        api, shape = await self._api(request.urn, kind, conn), shape_of(conn)
        want = js.overlay({}, js.desired(kind, props, shape), kind)
        try:
            if kind is js.CONSUMER:
                await api.consumer_put(props["streamName"], want, "create")
            else:
                await api.stream_create(want)
        except ApiError as error:
            raise AssetError(await self._refused(api, request.urn, kind, props, error)) from None
        out = with_outputs(kind, request.properties)
        if kind in edge.KINDS:
            try:
                out[edge.MIRRORS] = wrap(await edgemirrors.sync(api, want, {}, edge.regions(props, shape), shape))
            except edgemirrors.MirrorError as error:  # nothing half-made: the mirrors made and the origin go
                await edgemirrors.remove(api, want["name"], edge.mirrors(kind, props, shape))
                await api.stream_delete(want["name"])
                raise AssetError(f"{kind.token} {resource_name(request.urn)}: {error}") from None
        return xp.CreateResponse(resource_id=asset_id(kind, props), properties=out)

    async def update(self, request: xp.UpdateRequest) -> xp.UpdateResponse:
        kind, olds, news = kind_of(request.urn), plain_map(request.olds), plain_map(request.news)
        conn = news.get("connection") or self.provider_connection
        shape = shape_of(conn)
        want = js.desired(kind, news, shape)
        if js.changes(kind, js.desired(kind, olds, shape), want):
            api = await self._api(request.urn, kind, conn)
            try:
                await self._send(api, request.urn, kind, news, want)
            except ApiError as error:
                raise AssetError(await self._refused(api, request.urn, kind, news, error)) from None
        out = with_outputs(kind, request.news)
        had, asked = olds.get(edge.MIRRORS) or {}, edge.regions(news, shape)
        if had or asked:
            try:
                mirrors = await edgemirrors.sync(await self._api(request.urn, kind, conn), want, had, asked, shape)
            except edgemirrors.MirrorError as error:
                raise AssetError(f"{kind.token} {resource_name(request.urn)}: {error}") from None
            out[edge.MIRRORS] = wrap(mirrors)
        elif kind in edge.KINDS:
            out[edge.MIRRORS] = wrap({})
        return xp.UpdateResponse(properties=out)

    async def _send(self, api, urn: str, kind: js.Kind, news: dict, want: dict) -> None:
        """The live config with the catalogue's fields overlaid. The server cannot move a stream (placement)
        and change its replicas or retention in one update: the move goes second."""
        live = await live_config(api, kind, news)
        if live is None:
            raise AssetError(f"{kind.token} {resource_name(urn)}: {asset_words(kind, news)} is gone from the server; "
                             f"allowed: `pulumi refresh` (it then drops it), and the next `pulumi up` makes it anew")
        if kind is js.CONSUMER:
            await api.consumer_put(news["streamName"], js.overlay(live, want, kind), "update")
            return
        moves = js.differs(js.STREAM.by_name["placement"], live.get("placement"), want["placement"])
        # A bucket has no retention field: only what the kind declares can scale.
        scales = any(k in want and live.get(k) != want[k] for k in ("num_replicas", "retention"))
        if moves and scales:
            live = (await api.stream_update(js.overlay(live, {**want, "placement": live.get("placement")}, kind)))["config"]
        await api.stream_update(js.overlay(live, want, kind))

    async def delete(self, request: xp.DeleteRequest) -> None:
        kind, props = kind_of(request.urn), plain_map(request.properties)
        api = await self._api(request.urn, kind, props.get("connection") or self.provider_connection)
        if kind is js.CONSUMER:
            await api.consumer_delete(props["streamName"], props["name"])
        else:
            await edgemirrors.remove(api, js.stream_name(kind, props["name"]), props.get(edge.MIRRORS) or {})
            await api.stream_delete(js.stream_name(kind, props["name"]))

    async def read(self, request: xp.ReadRequest) -> xp.ReadResponse:
        """Refresh (the stored inputs and state) and import (the id alone): the live config in the inputs'
        words. An asset gone from the server reads as gone."""
        kind = kind_of(request.urn)
        inputs = dict(request.inputs or {})
        given = plain_map(inputs) or identity(kind, request.resource_id, request.urn)
        conn = given.get("connection") or plain(request.properties.get("connection")) or self.provider_connection
        if conn is None:
            raise AssetError(f"{kind.token} {resource_name(request.urn)}: no connection to read it with; allowed: "
                             f"import with a provider that has one (`pulumi import ... --provider "
                             f"<name>=<its URN>`, a nats-fly Provider given connection: cluster.connection)")
        api, shape = await self._api(request.urn, kind, conn), shape_of(conn)
        live = await live_config(api, kind, given)
        if live is None:
            return xp.ReadResponse(resource_id="", properties={}, inputs={})
        read = {k: wrap(v) for k, v in js.read_inputs(kind, given, live, shape).items() if k not in js.OWN_INPUTS}
        read.update({k: inputs[k] for k in js.OWN_INPUTS if k in inputs})
        out = with_outputs(kind, read)
        if kind in edge.KINDS:
            had = plain(request.properties.get(edge.MIRRORS)) or {}
            found = await edgemirrors.present(api, live["name"], sorted(
                {*had, *edge.regions(given, shape)} if inputs else set(shape.regions or {})))
            value = edge.read_value(given, list(found), shape)
            read.pop(edge.EDGE, None)
            if value is not None:
                read[edge.EDGE] = wrap(value)
            out = {**with_outputs(kind, read), edge.MIRRORS: wrap(found)}
        return xp.ReadResponse(resource_id=request.resource_id, properties=out, inputs=read)

    # ---- reaching the server

    async def _api(self, urn: str, kind: js.Kind, conn: Any):
        if conn is None or js.has_unknown(conn) or connection_problem(conn):
            raise AssetError(f"{kind.token} {resource_name(urn)}: no connection to the cluster; allowed: "
                             f"{CONNECTION_ALLOWED}, or a provider that has one")
        try:
            return await self.connections.api(target_of(conn))
        except JetStreamError as error:
            raise AssetError(f"{kind.token} {resource_name(urn)}: {error}", grpc.StatusCode.UNAVAILABLE) from None

    async def _refused(self, api, urn: str, kind: js.Kind, props: dict, error: ApiError) -> str:
        line = f"{kind.token} {resource_name(urn)}: the server refused {asset_words(kind, props)}: {error.description}"
        if error.err_code == SUBJECT_OVERLAP:
            holders = {n for s in js.desired(kind, props, js.Shape())["subjects"] for n in await api.stream_names(s)}
            holders.discard(js.stream_name(kind, props["name"]))
            return f"{line} ({', '.join(sorted(holders)) or 'another stream'} holds them); allowed: subjects no other " \
                   f"stream of the cluster holds"
        if error.err_code in (NAME_IN_USE, CONSUMER_EXISTS):
            return f"{line}; allowed: adopt it (`pulumi import {kind.token} {resource_name(urn)} " \
                   f"{asset_id(kind, props)} --provider <name>=<URN>`, or the import resource option), or another name"
        return line

    async def cancel(self) -> None:
        await self.connections.close()


def _bool(value: Any) -> bool:
    return value is True or isinstance(value, str) and value.lower() == "true"


def asset_id(kind: js.Kind, props: Mapping[str, Any]) -> str:
    return f"{props['streamName']}/{props['name']}" if kind is js.CONSUMER else props["name"]


def identity(kind: js.Kind, resource_id: str, urn: str) -> dict:
    """The inputs an import starts from: the name (and a consumer's stream) from the id."""
    if kind is js.CONSUMER:
        stream, _, name = resource_id.partition("/")
        if not (stream and name) or nv.name_problem(stream, False) or nv.name_problem(name, False):
            raise AssetError(f"{kind.token} {resource_name(urn)}: import id {show(resource_id)} is not allowed; "
                             f"allowed: <stream>/<consumer>")
        return {"name": name, "streamName": stream}
    problem = nv.name_problem(resource_id, kind.bucket)
    if problem:
        raise AssetError(f"{kind.token} {resource_name(urn)}: import id {show(resource_id)} {problem}; allowed: "
                         f"{nv.name_allowed(kind.bucket)}")
    return {"name": resource_id}


NOUNS = {"Stream": "stream", "KeyValue": "KV bucket", "ObjectStore": "object store"}


def asset_words(kind: js.Kind, props: Mapping[str, Any]) -> str:
    if kind is js.CONSUMER:
        return f"consumer {props.get('name')} of stream {props.get('streamName')}"
    return f"{NOUNS[kind.name]} {props.get('name')}"


def with_outputs(kind: js.Kind, props: Mapping[str, PropertyValue]) -> dict[str, PropertyValue]:
    out = dict(props)
    if kind is not js.CONSUMER:
        out["stream"] = PropertyValue(js.stream_name(kind, plain(props["name"])))
    return out


async def live_config(api, kind: js.Kind, props: Mapping[str, Any]) -> dict | None:
    """The asset's config on the server (a consumer's with its stream's name), or None when it is gone."""
    if kind is js.CONSUMER:
        info = await api.consumer_info(props["streamName"], props["name"])
        return {**info["config"], "stream_name": props["streamName"]} if info else None
    info = await api.stream_info(js.stream_name(kind, props["name"]))
    return info["config"] if info else None


async def held_by(api, kind: js.Kind, props: Mapping[str, Any]) -> str | None:
    """What deleting the asset now would destroy, in words; None when nothing."""
    if kind is js.CONSUMER:
        info = await api.consumer_info(props["streamName"], props["name"])
        delivered = (info or {}).get("delivered", {}).get("consumer_seq", 0)
        pending = (info or {}).get("num_ack_pending", 0)
        return f"its place in the stream ({delivered} messages delivered, {pending} awaiting ack)" if delivered else None
    info = await api.stream_info(js.stream_name(kind, props["name"]))
    count = (info or {}).get("state", {}).get("messages", 0)
    return f"its {count} messages" if count else None
