"""What every platform's resources share: the cluster's secrets as Outputs, what a platform hands back to
NatsCluster, and the options every Command that carries a secret takes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import pulumi

from ..config.settings import Settings
from ..render.secrets import route_password, server_environment


@dataclass
class ClusterSecrets:
    sys_password: pulumi.Output
    route_password: pulumi.Output
    user_passwords: pulumi.Output
    leaf_passwords: pulumi.Output
    tls_cert: pulumi.Output
    """With serverTls: the PEM certificate chain ("" without)."""
    tls_key: pulumi.Output
    checked: pulumi.Output
    """Resolves once the given secrets passed settings.check_secrets (fails otherwise)."""

    @classmethod
    def given(cls, s: Settings, args: Mapping[str, Any], checked: pulumi.Output) -> "ClusterSecrets":
        sys_password = pulumi.Output.secret(args["sysPassword"])
        return cls(sys_password=sys_password,
                   route_password=pulumi.Output.secret(sys_password.apply(lambda p: route_password(s.app, p))),
                   user_passwords=pulumi.Output.secret(args.get("userPasswords") or {}),
                   leaf_passwords=pulumi.Output.secret(args.get("leafPasswords") or {}),
                   tls_cert=pulumi.Output.secret(args.get("tlsCert") or ""),
                   tls_key=pulumi.Output.secret(args.get("tlsKey") or ""), checked=checked)

    def values(self, s: Settings) -> pulumi.Output:
        """variable -> password, for every password a server's conf refers to (secret)."""
        return pulumi.Output.secret(
            pulumi.Output.all(self.sys_password, self.route_password, self.user_passwords, self.leaf_passwords,
                              self.checked)
            .apply(lambda v: server_environment(s, v[0], v[1], v[2], v[3])))


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
    connection_urls: pulumi.Output
    """Where the place that runs `pulumi up` reaches the cluster: verifyUrls when set, else every server
    (locally) or the public client URL (Fly)."""
    resources: list = field(default_factory=list)
    """What verify waits for: the servers (locally) or the deploy and the regions (Fly)."""
    repair: str = ""
    """Changes when a server must be started again (locally), so verify runs again after it."""
    verify_ca: str | None = None
    """The CA file verify trusts, where the servers require TLS (locally with serverTls)."""
    connect_hint: str = ""
    """The platform's own line for howToConnect; `{login}` stands for the user and password arguments."""


def secret_outputs(parent: pulumi.Resource, **options) -> pulumi.ResourceOptions:
    """Options for a Command whose inputs carry a secret. Under pulumi-command v1 only outputs named
    like a secret input turn secret, so stdout and stderr would sit in the state in plain text."""
    return pulumi.ResourceOptions(parent=parent, additional_secret_outputs=["stdout", "stderr"], **options)
