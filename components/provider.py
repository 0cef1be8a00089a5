"""nats-fly as a component package for every Pulumi language: the NatsCluster component served as
`nats-fly:index:NatsCluster` by pulumi's component provider, its schema inferred from NatsClusterArgs
and NatsCluster's annotations (provider/ holds the plugin's entry point)."""

import json
import sys
from importlib import metadata

from pulumi.provider import main as serve
from pulumi.provider.experimental.component import ComponentProvider

from .cluster import NatsCluster
from .config.settings import SECRET_KEYS

NAME = "nats-fly"


class Provider(ComponentProvider):
    """The inferred schema, plus what inference cannot say yet: which inputs are secrets (the
    analyzer of pulumi 3.272 has no marker for them)."""

    def __init__(self, version: str):
        super().__init__([NatsCluster], NAME, None, version)
        schema = json.loads(self.schema)
        schema.update(displayName="NATS on Fly.io", license="Apache-2.0",
                      description="A global NATS cluster on Fly.io (or on this machine), as a component.")
        inputs = schema["resources"][f"{NAME}:index:NatsCluster"]["inputProperties"]
        for key in SECRET_KEYS:
            inputs[key]["secret"] = True
        self.schema = json.dumps(schema)


def version() -> str:
    return metadata.version(NAME)


def main(args: list[str] | None = None) -> None:
    serve(Provider(version()), sys.argv[1:] if args is None else args)
