"""JetStream assets declared beside the cluster, for Python programs: Stream, KeyValue, ObjectStore and
Consumer are custom resources of the nats-fly provider (the plugin `pulumi-resource-nats-fly` this package
installs, served by nats_fly.provider); Provider is an explicit provider with a connection of its own, which
`pulumi import` needs (the engine reads an imported asset with its id alone). The fields are the catalogue's
(nats_fly.config.jetstream); the provider checks them at preview."""

from __future__ import annotations

import functools
from importlib import metadata
from typing import Any, Mapping, Optional

import pulumi

from .config import edge
from .config import jetstream as js
from .config.settings import NAMESPACE, show

OUTPUTS = ("stream",)
"""What the provider adds to the inputs: the name of the stream on the server (KV_<bucket> for a bucket);
a Stream and a KeyValue also edgeMirrors (region -> mirror name)."""


class AssetArgsError(pulumi.RunError):
    """Arguments that are not a dict of fields: one line, no traceback."""


@functools.cache
def _version() -> str:
    """Asked once: each ask parses the package's METADATA (0.4 ms, a tenth of what a resource costs the program)."""
    return metadata.version(NAMESPACE)


class _Asset(pulumi.CustomResource):
    kind: js.Kind

    def __init__(self, name: str, args: Mapping[str, Any], opts: Optional[pulumi.ResourceOptions] = None):
        if not isinstance(args, Mapping) or not all(isinstance(key, str) for key in args):
            raise AssetArgsError(f"{self.kind.token} {name}: args {show(args)} are not fields; allowed: a dict from "
                                 f"field names ({', '.join(self.kind.by_name)}) to values")
        keys = [*self.kind.by_name, *js.OWN_INPUTS, *(OUTPUTS if self.kind is not js.CONSUMER else ()),
                *((edge.MIRRORS,) if self.kind in edge.KINDS else ())]
        props = {key: args.get(key) for key in keys} | dict(args)
        own = pulumi.ResourceOptions(version=_version(), additional_secret_outputs=["connection"])
        super().__init__(self.kind.token, name, props, pulumi.ResourceOptions.merge(own, opts))


class Stream(_Asset):
    """A JetStream stream: `Stream("orders", {"connection": cluster.connection, "subjects": ["orders.>"]})`."""

    kind = js.STREAM


class KeyValue(_Asset):
    """A KV bucket (the stream KV_<name>)."""

    kind = js.KEY_VALUE


class ObjectStore(_Asset):
    """An object store bucket (the stream OBJ_<name>)."""

    kind = js.OBJECT_STORE


class Consumer(_Asset):
    """A durable consumer of a stream (`streamName`)."""

    kind = js.CONSUMER


class Provider(pulumi.ProviderResource):
    """The nats-fly provider with a connection of its own: assets without one use it, and so does
    `pulumi import --provider <name>=<its URN>`."""

    def __init__(self, name: str, args: Mapping[str, Any], opts: Optional[pulumi.ResourceOptions] = None):
        if not isinstance(args, Mapping) or set(args) - {"connection"}:
            raise AssetArgsError(f"nats_fly.Provider {name}: args {show(args)} are not allowed; allowed: "
                                 f"{{'connection': cluster.connection}}")
        own = pulumi.ResourceOptions(version=_version(), additional_secret_outputs=["connection"])
        super().__init__(NAMESPACE, name, {"connection": pulumi.Output.secret(args.get("connection"))},
                         pulumi.ResourceOptions.merge(own, opts))
