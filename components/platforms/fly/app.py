"""FlyApp: the Fly app itself, its public IPs and its secrets."""

from typing import TypedDict

import pulumi
from pulumi_command import local

from ...contract import flyctl


class FlyAppArgs(TypedDict):
    app: str
    """The Fly app name: a DNS label, globally unique on Fly."""
    org: str
    """The Fly organization slug the app is created in."""
    public_ipv4: str
    """`shared` (free; serves the tls port), `dedicated` (raw TCP over IPv4 too) or `none`."""
    secrets: pulumi.Input[str]
    """The app's secrets in `flyctl secrets import` format; staged, applied by the next deploy."""


class FlyApp(pulumi.ComponentResource):
    app_name: pulumi.Output[str]
    """The app's name."""
    hostname: pulumi.Output[str]
    """The public hostname, `<app>.fly.dev`."""

    def __init__(self, name: str, args: FlyAppArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("nats-fly:index:FlyApp", name, {}, opts)
        app = args["app"]
        # The name is global on Fly: a new name is a new app, and the old one must go
        # first, since its delete and the new create address apps by name.
        self.app = local.Command(
            f"{name}-app",
            create=flyctl.ensure_app(app, args["org"]),
            delete=flyctl.destroy_app(app),
            triggers=[app, args["org"]],
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True),
        )
        owned = pulumi.ResourceOptions(parent=self, depends_on=[self.app], deleted_with=self.app)
        self.ips = local.Command(f"{name}-ips", create=flyctl.ensure_ips(app, args["public_ipv4"]), opts=owned)
        self.secrets = local.Command(
            f"{name}-secrets",
            create=flyctl.import_secrets(app),
            stdin=args["secrets"],
            logging=local.Logging.NONE,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.app], deleted_with=self.app,
                                        additional_secret_outputs=["stdout", "stderr"]),
        )
        self.app_name = pulumi.Output.from_input(app)
        self.hostname = pulumi.Output.from_input(f"{app}.fly.dev")
        self.register_outputs({"appName": self.app_name, "hostname": self.hostname})
