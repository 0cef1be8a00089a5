"""NatsRegion: the Machines of one region."""

from typing import Mapping, NotRequired, TypedDict

import pulumi
from pulumi_command import local

from ...contract import operations as ops
from ...render.flytoml import VOLUME_NAME
from ..base import secret_outputs


class NatsRegionArgs(TypedDict):
    app: str
    """The Fly app the Machines belong to."""
    region: str
    """The Fly region code."""
    machines: int
    """How many Machines run in the region (at least 1)."""
    app_resource: pulumi.Resource
    """The app: destroying it takes the region's Machines along, so no scale-down runs then."""
    deploy_resource: pulumi.Resource
    """The deploy: `scale count` clones the deployed config, so a release must exist first."""
    volume_size_gb: NotRequired[int]
    """With JetStream: one volume of this size per Machine, made before scaling, pruned after."""
    environment: NotRequired[Mapping[str, pulumi.Input[str]]]
    """With JetStream: NATS_SYS_PASSWORD and NATS_FLY_URL, for removing the surplus Machines'
    servers from JetStream before they are destroyed. Kept secret; never on the command line."""


def region_command(app: str, region: str, machines: int, volume_size_gb: int | None = None) -> str:
    """The command that converges a region to `machines`, through `python -m nats_fly fly region`: one
    region at a time per app on this machine (every `flyctl scale count` leases all the app's
    Machines), retried when a lease is held elsewhere. With JetStream (a volume size) it makes the
    volumes first and drains surplus servers, which needs NatsRegionArgs' `environment`."""
    volume = {"volume": VOLUME_NAME, "size": volume_size_gb} if volume_size_gb else {}
    return ops.FlyRegion(app=app, region=region, count=machines, **volume).command()


class NatsRegion(pulumi.ComponentResource):
    region: pulumi.Output[str]
    """The region code."""
    machines: pulumi.Output[int]
    """The Machine count the region converges to."""

    def __init__(self, name: str, args: NatsRegionArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("nats-fly:index:NatsRegion", name, {}, opts)
        app, region = args["app"], args["region"]
        # A count change updates in place: `update` is unset, so `create` runs with the new N.
        # Removing the region from the stack deletes this resource, scaling it to 0.
        size = args.get("volume_size_gb")
        create, delete = region_command(app, region, args["machines"], size), region_command(app, region, 0, size)
        environment = args.get("environment") if size else None
        owned = {"depends_on": [args["deploy_resource"]], "deleted_with": args["app_resource"]}
        self.scale = local.Command(
            f"{name}-scale",
            create=create,
            delete=delete,
            environment=pulumi.Output.secret(environment) if environment else None,
            opts=secret_outputs(self, **owned) if environment else pulumi.ResourceOptions(parent=self, **owned),
        )
        self.region = pulumi.Output.from_input(region)
        self.machines = pulumi.Output.from_input(args["machines"])
        self.register_outputs({"region": self.region, "machines": self.machines})
