"""The cluster's passwords: given (system, users) and derived (routes and gateways), as secret Outputs
and as the environment a server process reads them from."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Mapping

import pulumi

from . import natsconf
from .settings import Settings


@dataclass
class ClusterSecrets:
    sys_password: pulumi.Output
    route_password: pulumi.Output
    user_passwords: pulumi.Output
    leaf_passwords: pulumi.Output
    checked: pulumi.Output
    """Resolves once the given secrets passed settings.check_secrets (fails otherwise)."""

    @classmethod
    def given(cls, s: Settings, args: Mapping[str, Any], checked: pulumi.Output) -> "ClusterSecrets":
        sys_password = pulumi.Output.secret(args["sysPassword"])
        return cls(sys_password=sys_password,
                   route_password=pulumi.Output.secret(sys_password.apply(lambda p: route_password(s.app, p))),
                   user_passwords=pulumi.Output.secret(args.get("userPasswords") or {}),
                   leaf_passwords=pulumi.Output.secret(args.get("leafPasswords") or {}), checked=checked)

    def values(self, s: Settings) -> pulumi.Output:
        """variable -> password, for every password a server's conf refers to (secret)."""
        return pulumi.Output.secret(
            pulumi.Output.all(self.sys_password, self.route_password, self.user_passwords, self.leaf_passwords,
                              self.checked)
            .apply(lambda v: process_secrets(s, v[0], v[1], v[2], v[3])))


def route_password(app: str, sys_password: str) -> str:
    # Hex, so it can sit in a route URL; derived, so no second secret has to be kept.
    return hashlib.sha256(f"nats-fly-route\0{app}\0{sys_password}".encode()).hexdigest()


def process_secrets(s: Settings, sys_password: str, route: str, user_passwords: Mapping[str, str],
                    leaf_passwords: Mapping[str, str] | None = None) -> dict[str, str]:
    values = {natsconf.SYS_PASSWORD: sys_password, natsconf.ROUTE_PASSWORD: route}
    if s.auth == "password":
        values.update({natsconf.user_password_var(u): user_passwords[u] for u in s.users})
    if s.leafnodes:
        values.update({natsconf.leaf_password_var(u): (leaf_passwords or {})[u] for u in s.leaf_users})
    return values
