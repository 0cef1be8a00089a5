"""What a platform (fly_platform, local_platform) hands back to NatsCluster, and the options every
Command that carries a secret takes."""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi


@dataclass
class Built:
    app_name: pulumi.Output
    hostname: pulumi.Output
    client_url: pulumi.Output
    """One URL every NATS client accepts."""
    tls_url: pulumi.Output
    client_urls: pulumi.Output
    """region -> one URL."""
    server_urls: pulumi.Output
    """region -> [URL, ...]: every server a client can reach there."""
    image_hash: pulumi.Output
    nats_conf: pulumi.Output
    verify_urls: pulumi.Output
    """REGION=URL entries for verify."""
    websocket_url: pulumi.Output
    """Where browsers connect ("" without websocket)."""
    verify_websocket_urls: pulumi.Output
    """[REGION=]URL entries of the WebSocket path for verify ([] without websocket)."""
    leaf_url: pulumi.Output
    """Where leaf nodes connect ("" without leafnodes)."""
    leaf_remotes: pulumi.Output
    """A leaf node's `leafnodes { remotes [...] }` block, without the password ("" without leafnodes)."""
    resources: list = field(default_factory=list)
    """What verify waits for: the servers (locally) or the deploy and the regions (Fly)."""
    repair: str = ""
    """Changes when a server must be started again (locally), so verify runs again after it."""
    verify_ca: str | None = None
    """The CA file verify trusts, where the servers require TLS (locally with serverTls)."""


def secret_outputs(parent: pulumi.Resource, **options) -> pulumi.ResourceOptions:
    """Options for a Command whose inputs carry a secret. Under pulumi-command v1 only outputs named
    like a secret input turn secret, so stdout and stderr would sit in the state in plain text."""
    return pulumi.ResourceOptions(parent=parent, additional_secret_outputs=["stdout", "stderr"], **options)
