"""Where a local cluster's servers listen: six loopback ports a server, from localBasePort by region slot,
or chosen free at the first up (the `ports` operation) and kept."""

from __future__ import annotations

from typing import Mapping

from ...config.regions import FLY_REGIONS
from ...config.settings import Settings
from ...render.natsconf import PORTS_PER_SERVER, LocalServer

MAX_SERVERS_PER_REGION = 10
SAMPLE_BASE_PORT = 14000
"""Where a stack without localBasePort (ports chosen free at its first up) is rendered without Pulumi."""


def slot(region: str, index: int) -> int:
    """A server's slot: by the region's place in Fly's list, so adding or removing a region never moves
    another region's ports."""
    return list(FLY_REGIONS).index(region) * MAX_SERVERS_PER_REGION + index


def span(s: Settings) -> int:
    """How many ports from localBasePort the stack's servers reach."""
    return PORTS_PER_SERVER * (1 + max(slot(r, s.machines[r] - 1) for r in s.regions))


def server_names(s: Settings) -> list[str]:
    return [f"{region}-{i}" for region in s.regions for i in range(s.machines[region])]


def layout(s: Settings) -> dict[str, list[int]]:
    """server name -> its ports from localBasePort (or, without one, SAMPLE_BASE_PORT), by region slot."""
    base = s.local_base_port or SAMPLE_BASE_PORT
    return {name: [base + PORTS_PER_SERVER * slot(*_region_and_index(name)) + k for k in range(PORTS_PER_SERVER)]
            for name in server_names(s)}


def servers(s: Settings, chosen: Mapping[str, list[int]] | None = None) -> list[LocalServer]:
    """The stack's servers with their ports: `chosen` (at the first up), else from layout."""
    ports = chosen if chosen is not None else layout(s)
    return [LocalServer(*_region_and_index(name), *ports[name], tls=s.server_tls) for name in server_names(s)]


def _region_and_index(name: str) -> tuple[str, int]:
    region, _, index = name.rpartition("-")
    return region, int(index)
