"""The edge mirrors of a Stream or KeyValue on the server (config/edge.py says what they are): made after
their origin, brought in line with it on each update, deleted before it, read on refresh and import.
Only a stream that mirrors the origin is ever changed or deleted under a mirror's name."""

from __future__ import annotations

from typing import Any, Mapping

from .config import edge
from .config import jetstream as js
from .processes.jetstream import Api, ApiError


class MirrorError(Exception):
    """A mirror the server refused, or a name another stream holds: one line."""


def _ours(info: Mapping[str, Any] | None, origin: str) -> bool:
    return bool(info) and (info["config"].get("mirror") or {}).get("name") == origin


async def sync(api: Api, origin: Mapping[str, Any], had: Mapping[str, str], regions: list[str],
               shape: js.Shape) -> dict[str, str]:
    """Mirrors in `regions` made or updated from the origin's desired config; those in `had` (region ->
    name, the last output) but no longer asked deleted first. The new output."""
    name = origin["name"]
    for region, mirror in had.items():
        if region not in regions:
            await _delete(api, mirror, name)
    made = {}
    for region in regions:
        want = edge.mirror_config(origin, region, shape)
        try:
            info = await api.stream_info(want["name"])
            if info is None:
                await api.stream_create(want)
            elif not _ours(info, name):
                raise MirrorError(f"the edge mirror's name {want['name']} is held by another stream; allowed: "
                                  f"remove {region} from {edge.EDGE}, or delete or rename that stream")
            elif edge.stale(want, info["config"]):
                await api.stream_update(js.overlay(info["config"], want, js.STREAM))
        except ApiError as error:
            raise MirrorError(f"the server refused the edge mirror {want['name']} in {region}: "
                              f"{error.description}") from None
        made[region] = want["name"]
    return made


async def remove(api: Api, origin: str, mirrors: Mapping[str, str]) -> None:
    for mirror in mirrors.values():
        await _delete(api, mirror, origin)


async def _delete(api: Api, mirror: str, origin: str) -> None:
    if _ours(await api.stream_info(mirror), origin):
        await api.stream_delete(mirror)


async def present(api: Api, origin: str, regions: list[str]) -> dict[str, str]:
    """Which of `regions` hold a mirror of the origin now: region -> name."""
    found = {}
    for region in regions:
        mirror = edge.mirror_name(origin, region)
        if _ours(await api.stream_info(mirror), origin):
            found[region] = mirror
    return found
