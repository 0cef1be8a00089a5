"""nats-fly as a Pulumi plugin for every Pulumi language, in one process: the NatsCluster component served as
`nats-fly:index:NatsCluster` by pulumi's component provider (its schema inferred from NatsClusterArgs and
NatsCluster's annotations), and the JetStream assets Stream, KeyValue, ObjectStore and Consumer as custom
resources (assetprovider.py, their schema written from the catalogue). provider/ holds the component
package's entry point; the wheel's console script `pulumi-resource-nats-fly` runs main() too."""

import asyncio
import json
import sys
from importlib import metadata

import grpc
from pulumi.provider import server as legacy
from pulumi.provider.experimental import server as xserver
from pulumi.provider.experimental.component import ComponentProvider
from pulumi.runtime._grpc_settings import _GRPC_CHANNEL_OPTIONS
from pulumi.runtime.proto import provider_pb2_grpc

from . import assetprovider
from .cluster import NatsCluster
from .config.settings import SECRET_KEYS
from .processes.jetstream import JetStreamError

NAME = "nats-fly"


class Provider(ComponentProvider):
    """The inferred schema, plus what inference cannot say: which inputs and outputs are secrets (the
    analyzer of pulumi 3.272 has no marker for them), and the custom resources with their provider config."""

    def __init__(self, version: str):
        super().__init__([NatsCluster], NAME, None, version)
        schema = json.loads(self.schema)
        schema.update(displayName="NATS on Fly.io", license="Apache-2.0",
                      description="A global NATS cluster on Fly.io (or on this machine), as a component, and the "
                                  "JetStream assets declared beside it.")
        cluster = schema["resources"][f"{NAME}:index:NatsCluster"]
        for key in SECRET_KEYS:
            cluster["inputProperties"][key]["secret"] = True
        cluster["properties"]["connection"]["secret"] = True
        schema["types"]["nats-fly:index:Connection"]["properties"]["password"]["secret"] = True
        schema["resources"].update(assetprovider.resource_schemas())
        schema["types"].update(assetprovider.type_schemas())
        schema["config"] = {"variables": {"connection": assetprovider.CONNECTION_REF}}
        schema["provider"] = {"description": "The nats-fly provider; its connection serves assets without one "
                                             "and `pulumi import`.",
                              "inputProperties": {"connection": assetprovider.CONNECTION_REF}}
        self.schema = json.dumps(schema)


class Servicer(xserver.ProviderServicer):
    """The assets' CRUD through the SDK's experimental servicer; NatsCluster's Construct and the schema
    through the component provider's. An AssetError becomes a gRPC abort: one line, no traceback."""

    def __init__(self, args: list[str], engine_address: str):
        super().__init__(args, version(), assetprovider.Assets("nats-fly provider"), engine_address)
        self.components = legacy.ProviderServicer(Provider(version()), args, engine_address)

    async def Construct(self, request, context):
        return await self.components.Construct(request, context)

    async def GetSchema(self, request, context):
        return await self.components.GetSchema(request, context)

    async def _guarded(self, handler, request, context):
        try:
            return await handler(request, context)
        except Exception as error:  # the SDK wraps ours in an Exception with a traceback; ours is inside
            refusal = _refusal(error)
            if refusal is None:
                raise
            await context.abort(refusal.code, str(refusal))

    async def CheckConfig(self, request, context):
        return await self._guarded(super().CheckConfig, request, context)

    async def Check(self, request, context):
        return await self._guarded(super().Check, request, context)

    async def Diff(self, request, context):
        return await self._guarded(super().Diff, request, context)

    async def Create(self, request, context):
        return await self._guarded(super().Create, request, context)

    async def Read(self, request, context):
        return await self._guarded(super().Read, request, context)

    async def Update(self, request, context):
        return await self._guarded(super().Update, request, context)

    async def Delete(self, request, context):
        return await self._guarded(super().Delete, request, context)


def _refusal(error: BaseException | None) -> assetprovider.AssetError | None:
    """Ours, inside the SDK's wrapper: an AssetError, or a JetStream failure (the server did not answer)."""
    while error is not None and not isinstance(error, (assetprovider.AssetError, JetStreamError)):
        error = error.__cause__ or error.__context__
    if isinstance(error, JetStreamError):
        return assetprovider.AssetError(str(error), grpc.StatusCode.UNAVAILABLE)
    return error


def version() -> str:
    return metadata.version(NAME)


def main(args: list[str] | None = None) -> None:
    """Serve the plugin: print the port the engine connects to, then answer until the engine is done."""
    args = sys.argv[1:] if args is None else args
    engine = next((a for a in args if not a.startswith("-")), "")

    async def serve() -> None:
        server = grpc.aio.server(options=_GRPC_CHANNEL_OPTIONS)
        provider_pb2_grpc.add_ResourceProviderServicer_to_server(Servicer(args, engine), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        sys.stdout.buffer.write(f"{port}\n".encode())
        sys.stdout.buffer.flush()
        await server.wait_for_termination()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass
