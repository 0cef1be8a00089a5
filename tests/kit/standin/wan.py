"""One-way delay between regions, for runs that want real intercontinental latency, and
regions cut off from the others (a dead backhaul link).

`tc netem` would be the natural tool, but this kernel is built without it
(CONFIG_NET_SCH_NETEM unset). So traffic between a delayed pair of regions is
policy-routed in the hub through a TUN device whose reader holds each packet
for the pair's delay and writes it back, where it is routed on as usual.
Pairs without a delay never touch the TUN.

A cut region gets two `blackhole` rules in the hub, ahead of the delay rules: packets
between it and any other region vanish, as on a dead link (no ICMP, so open TCP
connections stall and retransmit rather than fail). Its Machines still reach each other
(switched on the region's bridge) and the DNS server; the proxy, which dials Machines' private
IPv4s from the hub, is not cut.
"""
from __future__ import annotations

import asyncio
import fcntl
import ipaddress
import os
import struct

from . import netns

TUNSETIFF, IFF_TUN, IFF_NO_PI = 0x400454CA, 0x0001, 0x1000
DEVICE, TABLE = "wan0", "100"
CUT_PREF = "50"  # before the delay rules (100, 200)


class Wan:
    def __init__(self, network, hub_executor):
        self.network = network
        self.hub = hub_executor
        self.delays: dict[tuple[str, str], float] = {}
        self.cut: set[str] = set()
        self.fd: int | None = None

    def _open(self) -> int:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", DEVICE.encode(), IFF_TUN | IFF_NO_PI))
        return fd

    async def _ensure(self) -> None:
        if self.fd is not None:
            return
        self.fd = await asyncio.get_running_loop().run_in_executor(self.hub, self._open)
        hub = self.network.hub
        netns.ip(hub, "link", "set", DEVICE, "up")
        netns.ip(hub, "-6", "route", "add", "default", "dev", DEVICE, "table", TABLE)
        netns.ip(hub, "-6", "rule", "add", "iif", DEVICE, "lookup", "main", "pref", "100")
        asyncio.get_running_loop().add_reader(self.fd, self._on_packet)

    def _region_of(self, addr: bytes) -> str | None:
        ip = ipaddress.IPv6Address(addr)
        for region in self.network.regions:
            if ip in self.network.region_net(region):
                return region
        return None

    def _on_packet(self) -> None:
        try:
            packet = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        if len(packet) < 40 or packet[0] >> 4 != 6:
            return
        pair = (self._region_of(packet[8:24]), self._region_of(packet[24:40]))
        delay = self.delays.get(pair, 0.0)
        asyncio.get_running_loop().call_later(delay, self._write, packet)

    def _write(self, packet: bytes) -> None:
        if self.fd is not None:
            try:
                os.write(self.fd, packet)
            except OSError:
                pass

    async def set_delay(self, a: str, b: str, ms: float) -> None:
        """Delay packets from region `a` to region `b` by `ms` (0 removes the delay)."""
        await self._ensure()
        for region in (a, b):
            self.network.ensure_region(region)
        def rule(verb: str) -> None:
            netns.ip(self.network.hub, "-6", "rule", verb, "from", str(self.network.region_net(a)),
                     "to", str(self.network.region_net(b)), "lookup", TABLE, "pref", "200")
        if (a, b) in self.delays:
            rule("del")
            del self.delays[(a, b)]
        if ms > 0:
            self.delays[(a, b)] = ms / 1000
            rule("add")

    def set_link(self, region: str, up: bool) -> None:
        """Cut `region` off from every other region (up=False), or restore its link."""
        self.network.ensure_region(region)
        if up == (region not in self.cut):
            return
        own, everyone = str(self.network.region_net(region)), self.network.all_regions_net()
        for src, dst in ((own, everyone), (everyone, own)):
            netns.ip(self.network.hub, "-6", "rule", "add" if not up else "del", "from", src, "to", dst,
                     "blackhole", "pref", CUT_PREF)
        if up:
            self.cut.discard(region)
        else:
            self.cut.add(region)

    def close(self) -> None:
        if self.fd is not None:
            asyncio.get_running_loop().remove_reader(self.fd)
            os.close(self.fd)
            self.fd = None
