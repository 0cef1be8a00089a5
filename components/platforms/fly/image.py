"""NatsImage: the build context (Dockerfile, entrypoint, nats.conf, fly.toml) and its deploy."""

from typing import TypedDict

import pulumi
from pulumi_command import local

from ...config.settings import Settings
from ...contract import operations as ops
from ...render import buildctx
from ...render.digest import content_hash
from ..base import secret_outputs


class NatsImageArgs(TypedDict):
    settings: Settings
    """The validated stack settings the context is rendered from."""
    secrets_version: pulumi.Input[str]
    """Changes whenever the staged secrets change, so the deploy applies them."""
    app_resource: pulumi.Resource
    """The app (and its secrets) the deploy waits for, and is deleted with."""


class NatsImage(pulumi.ComponentResource):
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
        digest = content_hash(files)
        # The context travels on stdin and is written by the deploy itself, into a folder of its own:
        # the program (preview too) writes nothing, and two clusters never share a folder. A change
        # of it, or of the secrets, updates the deploy in place (`triggers` would replace it).
        self.deploy = local.Command(
            f"{name}-deploy",
            create=ops.FlyDeploy(app=s.app).command(),
            stdin=buildctx.to_stdin(files),
            environment={"NATS_FLY_IMAGE_SHA": digest, "NATS_FLY_SECRETS_VERSION": args["secrets_version"]},
            opts=secret_outputs(self, depends_on=[args["app_resource"]], deleted_with=args["app_resource"]),
        )
        self.hash = pulumi.Output.from_input(digest)
        self.nats_conf = pulumi.Output.from_input(files["nats.conf"])
        self.fly_toml = pulumi.Output.from_input(files["fly.toml"])
        self.register_outputs({"hash": self.hash, "natsConf": self.nats_conf, "flyToml": self.fly_toml})
