"""The private network: a hub namespace (the "Fly hosts") with one bridge per region,
and one namespace per Machine hanging off its region's bridge.

6PN addresses follow Fly's layout fdaa:<network 32>:<host 32>:<machine 32>:2, one
host block per region. Machines of a region are switched on its bridge; regions
are routed through the hub (where the optional WAN delay hooks in). The DNS
server's fdaa::3 lives on the hub. Each Machine also gets a private IPv4 that only
the hub can reach (a /32 with a host route), as Fly's proxy and checks use one.
Nothing is added to the root namespace.
"""
from __future__ import annotations

import ipaddress
import secrets
import threading
from dataclasses import dataclass

from . import netns

NETWORK = "fdaa:0:1"
DNS_IP = "fdaa::3"


@dataclass(frozen=True)
class Address:
    v6: str
    v4: str


class Network:
    def __init__(self, run_id: str):
        self.run_id = run_id
        self.hub = f"{run_id}-hub"
        self.regions: dict[str, int] = {}
        self.v4_used: dict[int, set[int]] = {}
        self.lock = threading.Lock()

    def ns_of(self, machine_id: str) -> str:
        return f"{self.run_id}-{machine_id}"

    def start(self) -> None:
        netns.add(self.hub)
        netns.sysctl(self.hub, net__ipv6__conf__all__forwarding="1")
        netns.ip(self.hub, "addr", "add", f"{DNS_IP}/128", "dev", "lo", "nodad")

    def stop(self) -> None:
        netns.sweep(self.run_id)

    def region_prefix(self, region: str) -> str:
        return f"{NETWORK}:a7b:{self.regions[region]:x}"

    def region_net(self, region: str) -> ipaddress.IPv6Network:
        return ipaddress.IPv6Network(f"{self.region_prefix(region)}::/80")

    @staticmethod
    def all_regions_net() -> str:
        """Every region's 6PN addresses (not the DNS server's fdaa::3)."""
        return f"{NETWORK}::/48"

    def _ensure_region(self, region: str) -> int:
        if region in self.regions:
            return self.regions[region]
        idx = len(self.regions) + 1
        self.regions[region] = idx
        self.v4_used[idx] = {1}
        bridge = f"br-{region}"
        # A fixed MAC: a Linux bridge otherwise takes the lowest MAC of its ports, so every
        # Machine created or destroyed in the region could change the gateway's MAC, and the
        # region's other Machines would lose their gateway (DNS, other regions, the proxy)
        # until their neighbour entry expires, up to ~45 s. Fly's gateway never changes.
        netns.ip_batch(self.hub, [
            f"link add {bridge} address 02:6e:66:6c:79:{idx:02x} type bridge",
            f"link set {bridge} up",
            f"addr add {self.region_prefix(region)}::1/80 dev {bridge} nodad",
            f"addr add 172.19.{idx}.1/24 dev {bridge}",
        ])
        return idx

    def ensure_region(self, region: str) -> int:
        with self.lock:
            return self._ensure_region(region)

    def allocate(self, region: str) -> Address:
        with self.lock:
            idx = self._ensure_region(region)
            n = min(set(range(2, 255)) - self.v4_used[idx])
            self.v4_used[idx].add(n)
        machine = secrets.token_hex(4)
        v6 = ipaddress.IPv6Address(f"{self.region_prefix(region)}:{machine[:4]}:{machine[4:]}:2")
        return Address(v6=v6.compressed, v4=f"172.19.{idx}.{n}")

    def free(self, region: str, address: Address) -> None:
        with self.lock:
            self.v4_used[self.regions[region]].discard(int(address.v4.rsplit(".", 1)[1]))

    def attach(self, machine_id: str, region: str, address: Address) -> str:
        """Create the Machine's namespace and cable it to its region's bridge."""
        ns = self.ns_of(machine_id)
        netns.delete(ns)
        hosts = (f"127.0.0.1\tlocalhost localhost.localdomain\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                 f"{address.v6}\tfly-local-6pn\n{address.v6}\t{machine_id}\n{address.v4}\t{machine_id}\n")
        netns.add(ns, resolv_conf=f"nameserver {DNS_IP}\n", hosts=hosts)
        veth = f"m{machine_id[:12]}"
        bridge = f"br-{region}"
        # A private IPv4 is reused after its Machine is destroyed: forget the hub's neighbour entry
        # for it, or checks and the proxy keep sending to the old Machine's MAC until the entry
        # expires (REACHABLE lasts 15-45 s): a new Machine's checks then fail for ~40 s.
        netns.ip_batch(self.hub, [
            f"neigh flush to {address.v4}",
            f"link add {veth} type veth peer name eth0 netns {ns}",
            f"link set {veth} master {bridge} up",
        ])
        gateway = f"{self.region_prefix(region)}::1"
        netns.ip_batch(ns, [
            "link set eth0 up",
            f"addr add {address.v6}/80 dev eth0 nodad",
            f"route add default via {gateway} dev eth0",
            f"addr add {address.v4}/32 dev eth0",
            f"route add 172.19.{self.regions[region]}.1/32 dev eth0 scope link",
        ])
        return ns

    def detach(self, machine_id: str) -> None:
        netns.delete(self.ns_of(machine_id))
