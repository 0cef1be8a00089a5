"""The local platform: the cluster as nats-server processes on this machine's loopback, one Command per
server running `python -m nats_fly local ensure|stop` (processes/local.py). Rootless; no Fly account."""

from __future__ import annotations

from ...config.settings import Settings, label
from ...render import natsconf
from .. import Claim, Cluster
from . import ports


class LocalPlatform:
    name = "local"

    def check(self, s: Settings) -> list[str]:
        crowded = [f"{r}={n}" for r, n in s.machines.items() if n > ports.MAX_SERVERS_PER_REGION]
        if crowded:
            return [f"{label('machinesPerRegion')}: {', '.join(crowded)} is too many for the local platform; "
                    f"allowed: 1..{ports.MAX_SERVERS_PER_REGION} per region"]
        if s.local_base_port and s.local_base_port + ports.span(s) > 65535:
            return [f"{label('localBasePort')}: {s.local_base_port} leaves no room for {ports.span(s)} ports; "
                    f"allowed: 1024..{65535 - ports.span(s)}"]
        return []

    def claims(self, s: Settings, cluster: str) -> list[Claim]:
        if not s.local_base_port:
            return []  # ports chosen free at the first up: no two clusters get the same
        taken = frozenset(p for server in ports.layout(s).values() for p in server)
        return [Claim("local port", taken, f"{label('localBasePort')}: {s.local_base_port} gives {cluster} ports "
                      f"that cluster {{others}} of this program uses too; allowed: a localBasePort whose ports do "
                      f"not overlap, or 0 (ports chosen free at the first up)")]

    def files(self, s: Settings) -> dict[str, str]:
        servers = ports.servers(s)
        return {f"{sv.name}.conf": natsconf.render(natsconf.local_conf(s, sv, servers, f"<state>/{sv.name}"))
                for sv in servers}

    def build(self, cluster: Cluster):
        from .resources import build
        return build(cluster)


PLATFORM = LocalPlatform()
