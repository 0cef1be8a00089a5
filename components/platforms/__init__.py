"""Where a cluster runs, behind one interface: `fly` (Machines of one Fly app, driven through flyctl) and
`local` (nats-server processes on this machine's loopback). NatsCluster validates, then hands over to
the platform its settings name; nothing outside a platform's folder asks which platform it is.

A platform's pure side (its rules and the files `render` writes) loads without the Pulumi SDK; its
resources load when a cluster is built."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Protocol

from ..config import settings as settings_mod
from ..config.settings import PLATFORMS, Settings, SettingsError

if TYPE_CHECKING:
    import pulumi

    from .base import Built, ClusterSecrets


@dataclass(frozen=True)
class Claim:
    """Something two clusters of one program must not share (a Fly app, a loopback port)."""

    kind: str
    things: frozenset
    refusal: str
    """The error line, with `{others}` for the clusters that hold them already."""


@dataclass(frozen=True)
class Cluster:
    """What a platform builds from: the same for every platform."""

    parent: "pulumi.Resource"
    """The NatsCluster the resources belong to."""
    name: str
    """Its resource name: every path, process and port the platform owns derives from it."""
    settings: Settings
    secrets: "ClusterSecrets"
    work_dir: Path
    """Where the cluster may keep files on this machine (workDir)."""


class Platform(Protocol):
    name: str

    def check(self, s: Settings) -> list[str]:
        """The platform's own rules: error lines (key, value, what is allowed)."""

    def claims(self, s: Settings, cluster: str) -> list[Claim]:
        """What cluster `cluster` takes that no other cluster of the program may take too."""

    def files(self, s: Settings) -> dict[str, str]:
        """What `nats-fly render` writes for the stack: name -> text."""

    def build(self, cluster: Cluster) -> "Built":
        """The cluster's resources."""


def get(name: str) -> Platform:
    if name not in PLATFORMS:
        raise SettingsError([f"{settings_mod.label('platform')}: {settings_mod.show(name)} is not allowed; "
                             f"allowed: {', '.join(PLATFORMS)}"])
    return import_module(f".{name}", __name__).PLATFORM


def settings(values: Mapping[str, Any]) -> Settings:
    """Validated settings: the catalogue's rules, then the platform's own. The one place settings are made."""
    s = settings_mod.load(values)
    problems = get(s.platform).check(s)
    if problems:
        raise SettingsError(problems)
    return s
