"""nats-fly: a global NATS cluster on Fly.io, as Pulumi components.

Exports load lazily, so the command-line tools (render, verify, local) start
without importing the Pulumi SDK.
"""

from importlib import import_module

_EXPORTS = {
    "NatsCluster": "cluster", "NatsClusterArgs": "cluster", "Connection": "cluster",
    "Stream": "assets", "KeyValue": "assets", "ObjectStore": "assets", "Consumer": "assets", "Provider": "assets",
    "FlyApp": "platforms.fly.app", "FlyAppArgs": "platforms.fly.app",
    "NatsImage": "platforms.fly.image", "NatsImageArgs": "platforms.fly.image",
    "NatsRegion": "platforms.fly.region", "NatsRegionArgs": "platforms.fly.region",
    "Settings": "config.settings", "SettingsError": "config.settings",
    "verify": "processes.verify", "Expectation": "processes.verify",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'nats_fly' has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
