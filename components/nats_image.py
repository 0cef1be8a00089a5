"""NatsImage: the build context (Dockerfile, entrypoint, nats.conf, fly.toml) and its deploy."""

from __future__ import annotations

from typing import TypedDict

import pulumi
from pulumi_command import local

from . import buildctx, flyctl
from .settings import Settings


class NatsImageArgs(TypedDict):
    settings: Settings
    """The validated stack settings the context is rendered from."""
    out_dir: str
    """The per-stack folder the build context is written to."""
    secrets_version: pulumi.Input[str]
    """Changes whenever the staged secrets change, so the deploy applies them."""
    app_resource: pulumi.Resource
    """The app (and its secrets) the deploy waits for, and is deleted with."""


class NatsImage(pulumi.ComponentResource):
    path: pulumi.Output[str]
    """Where the build context was written."""
    hash: pulumi.Output[str]
    """The SHA-256 of the build context; a change redeploys, rolling."""
    nats_conf: pulumi.Output[str]
    """The rendered nats.conf (secrets appear only as $VARIABLES)."""
    fly_toml: pulumi.Output[str]
    """The rendered fly.toml."""

    def __init__(self, name: str, args: NatsImageArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("nats-fly:index:NatsImage", name, {}, opts)
        s = args["settings"]
        files = buildctx.build_context(s)
        digest = buildctx.content_hash(files)
        out = buildctx.write(files, args["out_dir"])
        # The hash sits in `environment`: a change re-runs the deploy in place (an update).
        # `triggers` would replace the resource instead.
        self.deploy = local.Command(
            f"{name}-deploy",
            create=flyctl.deploy(flyctl.python(), s.app, flyctl.portable(out)),
            environment={"NATS_FLY_IMAGE_SHA": digest, "NATS_FLY_SECRETS_VERSION": args["secrets_version"]},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[args["app_resource"]],
                                        deleted_with=args["app_resource"]),
        )
        self.path = pulumi.Output.from_input(str(out))
        self.hash = pulumi.Output.from_input(digest)
        self.nats_conf = pulumi.Output.from_input(files["nats.conf"])
        self.fly_toml = pulumi.Output.from_input(files["fly.toml"])
        self.register_outputs({"path": self.path, "hash": self.hash, "natsConf": self.nats_conf,
                               "flyToml": self.fly_toml})
