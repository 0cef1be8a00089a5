"""The cluster's passwords as the servers read them: the environment variables their confs name, and the
route password derived from the system one."""

from __future__ import annotations

import hashlib
from typing import Mapping

from ..config.settings import Settings
from . import natsconf


def route_password(app: str, sys_password: str) -> str:
    # Hex, so it can sit in a route URL; derived, so no second secret has to be kept.
    return hashlib.sha256(f"nats-fly-route\0{app}\0{sys_password}".encode()).hexdigest()


def server_environment(s: Settings, sys_password: str, route: str, user_passwords: Mapping[str, str],
                    leaf_passwords: Mapping[str, str] | None = None) -> dict[str, str]:
    values = {natsconf.SYS_PASSWORD: sys_password, natsconf.ROUTE_PASSWORD: route}
    if s.auth == "password":
        values.update({natsconf.user_password_var(u): user_passwords[u] for u in s.users})
    if s.leafnodes:
        values.update({natsconf.leaf_password_var(u): (leaf_passwords or {})[u] for u in s.leaf_users})
    return values
