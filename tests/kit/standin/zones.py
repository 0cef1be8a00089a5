"""Hardware zones: where the Machines API puts a volume.

A volume lives on one host, in one of its region's zones. `require_unique_zone` asks for a
zone that no other volume of the same name (same app, same region) is in (flyctl PR #623,
"Create volumes in unique zones": "we ensure that the new volume is on different hardware
than existing volumes of the same name"; Fly's volume docs: "This setting does limit the
number of volumes your app can have in a region"). `fly volumes create` asks for it by
default (internal/command/volumes/create.go, flag `require-unique-zone`, Default: true);
`scale count` does not (internal/command/scale/machine_defaults.go CreateVolumeRequest,
`RequireUniqueZone: fly.Pointer(false)`), nor does the first deploy's seed volume
(internal/command/deploy/deploy_first.go provisionVolumesOnFirstDeploy leaves it unset).

Each stand-in region has a fixed number of zones: settings `zones` (region -> count) or
else `zones_default`. When no zone qualifies the API refuses; flyctl shows it as
"failed to create volume: aborted: no capacity". The wrapper is fly-go's
(flaps/flaps_volumes.go CreateVolume); "aborted: no capacity" is what flaps answers when
every candidate host refused a volume create (fly-go flaps/flaps_error.go,
flydNoCapacityPhrase). Whether a unique-zone miss gives exactly that text is not written
anywhere public: it is the closest real text found.
"""
from __future__ import annotations

import hashlib

NO_CAPACITY = "failed to create volume: aborted: no capacity"


def zones_of(settings: dict, region: str) -> list[str]:
    count = int((settings.get("zones") or {}).get(region, settings.get("zones_default", 4)))
    return [hashlib.sha1(f"{region}:{i}".encode()).hexdigest()[:4] for i in range(count)]


def place(settings: dict, region: str, siblings: list, unique: bool) -> str | None:
    """A zone for a new volume, given the zones of the existing same-name volumes of the app in
    the region; None when `unique` and every zone already holds one."""
    zones = zones_of(settings, region)
    used = [v.zone for v in siblings]
    free = [z for z in zones if z not in used]
    if unique:
        return free[0] if free else None
    if not zones:
        return None
    return min(zones, key=lambda z: (used.count(z), zones.index(z)))
