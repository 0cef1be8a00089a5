"""Edge reads (pure): `edgeRegions` on a Stream or KeyValue gives each named region a mirror of it with
mirror_direct, placed in that region, so a direct get (nats-py's `kv.get`) can be answered there instead
of across the ocean. In a supercluster the gateways prefer the local cluster, so the region's mirror
answers the origin's own name; in a mesh the direct-get queue is one group across the whole cluster and
any member answers, so a client reads its region's mirror by the mirror's name (DESIGN.md: Edge reads).

The origin's resource makes, updates and deletes its mirrors: they have no life of their own."""

from __future__ import annotations

from typing import Any, Mapping

from . import jetstream as js
from .settings import show

EDGE = js.EDGE
MIRRORS = "edgeMirrors"
"""The output: region -> the name of the mirror there."""
KINDS = (js.STREAM, js.KEY_VALUE)
ALLOWED = "true (every region of the cluster but the placement's) or a list of regions of the cluster"

COPIED = ("storage", "max_msgs", "max_bytes", "max_age", "max_msgs_per_subject", "max_msg_size", "discard",
          "compression", "allow_rollup_hdrs", "deny_delete", "deny_purge", "allow_msg_ttl")
"""What a mirror holds as its origin does: its limits keep what the origin keeps (a KV mirror its history,
as nats.go makes a KV mirror). Its subjects, sources, republish and transforms are the origin's alone: a
mirror has none (the server refuses subjects on a mirror, and a republish would go out twice)."""
STREAM_FIELDS = {f.key: f for f in js.STREAM.fields}


def asked(given: Mapping[str, Any]) -> bool:
    """Whether the inputs ask for edge mirrors (a known, non-empty ask)."""
    value = given.get(EDGE)
    return value is True or isinstance(value, list) and bool(value)


def check(kind: js.Kind, given: Mapping[str, Any], shape: js.Shape) -> list[str]:
    """One line per problem of `edgeRegions` and of what it needs of the other fields."""
    value = given.get(EDGE)
    if value is None or js.has_unknown(value) or value is False:
        return []
    if kind not in KINDS:
        return [f"{EDGE}: not a field of {kind.name}; allowed: {', '.join([*kind.by_name])}"]
    if not (value is True or isinstance(value, list) and all(isinstance(r, str) for r in value)):
        return [f"{EDGE}: {show(value)} is not true or a list of regions; allowed: {ALLOWED}"]
    shown = "true" if value is True else show(value)
    home = given.get("placement")
    problems = []
    if value is True and home is None:
        problems.append(f"{EDGE}: true without placement: 'every other region' needs the origin's region; "
                        f"allowed: placement (the origin's region), or {EDGE} as a list of regions")
    if isinstance(value, list):
        if len(set(value)) < len(value):
            problems.append(f"{EDGE}: {show(value)} names one region twice; allowed: each region once")
        problems += [f"{EDGE}: {region!r} is the origin's placement; allowed: other regions, where a mirror saves "
                     f"a trip" for region in dict.fromkeys(value) if region == home]
    # an unknown shape (the cluster is not made yet) says its regions at up, where this runs again first
    if shape.known and (shape.regions is None or shape.topology is None):
        problems.append(f"{EDGE}: {shown} cannot be placed: the connection does not say the cluster's regions "
                        f"and topology; allowed: a connection from NatsCluster's `connection` output, which "
                        f"says them")
    elif shape.known and isinstance(value, list):
        problems += [f"{EDGE}: {region!r} is not a region of the cluster; allowed: {', '.join(shape.regions)}"
                     for region in dict.fromkeys(value) if region not in shape.regions and region != home]
    if given.get("allowDirect") is False or str(given.get("allowDirect")).lower() == "false":
        problems.append(f"allowDirect: false with {EDGE}: the mirrors answer the origin's direct gets only when "
                        f"it allows them; allowed: allowDirect true, or left out")
    if given.get("mirror") is not None:
        problems.append(f"{EDGE}: on a mirror; allowed: {EDGE} on the stream it mirrors")
    return problems


def regions(given: Mapping[str, Any], shape: js.Shape) -> list[str]:
    """The regions that get a mirror, once the inputs passed check and are known."""
    value = given.get(EDGE)
    if value is True:
        return [r for r in shape.regions or {} if r != given.get("placement")]
    return list(value) if isinstance(value, list) else []


def mirror_name(origin: str, region: str) -> str:
    """KV_cfg in syd -> KV_cfg_syd."""
    return f"{origin}_{region}"


def mirrors(kind: js.Kind, given: Mapping[str, Any], shape: js.Shape) -> dict[str, str]:
    """The output edgeMirrors: region -> mirror name."""
    origin = js.stream_name(kind, given["name"])
    return {region: mirror_name(origin, region) for region in regions(given, shape)}


def mirror_config(origin: Mapping[str, Any], region: str, shape: js.Shape) -> dict:
    """The server config of the origin's mirror in `region` (`origin`: the origin's desired config).
    Replicas as the origin's, as far as the region holds them: in a mesh of 3 regions or more each replica
    must be in another region (unique_tag), so a region holds one."""
    room = shape.regions[region]
    if shape.topology == "mesh" and len(shape.regions) >= 3:
        room = 1
    config = {key: origin[key] for key in COPIED if key in origin}
    config.update(
        name=mirror_name(origin["name"], region), mirror={"name": origin["name"]}, mirror_direct=True,
        allow_direct=True, retention="limits", num_replicas=min(origin.get("num_replicas", 1), room),
        placement=js.PLACEMENT.parse(region, shape), duplicate_window=0,
        description=f"Edge mirror of {origin['name']} in {region} (nats-fly)")
    return config


def stale(want: Mapping[str, Any], live: Mapping[str, Any]) -> bool:
    """Whether a live mirror differs from what it should hold, in what the origin's resource sets."""
    for key, value in want.items():
        f = STREAM_FIELDS.get(key)
        if f is None:
            if live.get(key) != value:
                return True
        elif js.differs(f, live.get(key, f.default if not callable(f.default) else None), value):
            return True
    return False


def read_value(given: Mapping[str, Any], present: list[str], shape: js.Shape) -> Any:
    """`edgeRegions` as the server has it: as given when every mirror it asks for is there, else the
    regions that have one (None when none has)."""
    if asked(given) and set(regions(given, shape)) == set(present):
        return given[EDGE]
    return sorted(present) or None
