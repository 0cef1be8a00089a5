"""nats-fly: a global NATS cluster on Fly.io, as Pulumi components.

Exports load lazily, so the command-line tools (render, verify, local) start
without importing the Pulumi SDK.
"""

from importlib import import_module

_EXPORTS = {
    "NatsCluster": "nats_cluster", "NatsClusterArgs": "nats_cluster",
    "FlyApp": "fly_app", "FlyAppArgs": "fly_app",
    "NatsImage": "nats_image", "NatsImageArgs": "nats_image",
    "NatsRegion": "nats_region", "NatsRegionArgs": "nats_region",
    "Settings": "settings", "SettingsError": "settings",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'nats_fly' has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
