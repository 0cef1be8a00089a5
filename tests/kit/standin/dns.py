"""Fly's internal DNS at fdaa::3: the `.internal` names, TTL 5, started Machines only.

The catalogue is eventually consistent, as Fly's is: the asker (known by its
source address) sees its own record at once and other Machines' records only
`delay` seconds after they started.
"""
from __future__ import annotations

import asyncio
import ipaddress
import re
import struct
import time
from dataclasses import dataclass
from typing import Callable, Iterable

from .regions import distance

TTL = 5
A, AAAA, TXT, ANY = 1, 28, 16, 255
NOERROR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 2, 3, 4, 5


@dataclass(frozen=True)
class Record:
    """What the catalogue knows of one Machine."""
    app: str
    machine_id: str
    region: str
    ip: str
    process_group: str
    started_at: float  # monotonic; 0 when not started
    created_at: float = 0.0  # monotonic: when the stand-in first saw the Machine


# --- wire format ---------------------------------------------------------------

def parse_query(data: bytes) -> tuple[int, int, str, int, bytes]:
    """-> (id, flags, qname, qtype, question section); ValueError when malformed."""
    if len(data) < 12:
        raise ValueError("short packet")
    qid, flags, qdcount = struct.unpack("!HHH", data[:6])
    if qdcount != 1:
        raise ValueError("expected one question")
    labels, pos = [], 12
    while True:
        n = data[pos]
        pos += 1
        if n == 0:
            break
        if n & 0xC0:
            raise ValueError("compressed question")
        labels.append(data[pos:pos + n].decode("ascii", "replace"))
        pos += n
    qtype, _qclass = struct.unpack("!HH", data[pos:pos + 4])
    return qid, flags, ".".join(labels).lower(), qtype, data[12:pos + 4]


def udp_limit(data: bytes) -> int:
    """The largest UDP answer the asker takes: 512 bytes, or the payload size of its EDNS0 OPT
    record (an additional record named root, type 41) when the query carries one."""
    try:
        arcount = struct.unpack("!H", data[10:12])[0]
        pos = data.index(b"\0", 12) + 5  # past the question's name, type and class
        if arcount and data[pos] == 0 and struct.unpack("!H", data[pos + 1:pos + 3])[0] == 41:
            return max(512, struct.unpack("!H", data[pos + 3:pos + 5])[0])
    except (ValueError, IndexError, struct.error):
        pass
    return 512


def _rdata(rtype: int, value: str) -> bytes:
    if rtype == AAAA:
        return ipaddress.IPv6Address(value).packed
    if rtype == A:
        return ipaddress.IPv4Address(value).packed
    # TXT: one value as strings of at most 255 bytes, which clients join.
    raw = value.encode()
    chunks = [raw[i:i + 255] for i in range(0, len(raw), 255)] or [b""]
    return b"".join(bytes([len(c)]) + c for c in chunks)


def build_response(qid: int, qflags: int, question: bytes, rcode: int,
                   answers: Iterable[tuple[int, str]], authoritative: bool, limit: int | None = None) -> bytes:
    """The answer; with `limit` (UDP), records that do not fit are left out and TC is set, as a
    DNS server does, so the asker may retry over TCP."""
    answers = list(answers)
    if limit is not None:
        sizes = [12 + len(_rdata(rtype, value)) for rtype, value in answers]  # name: a 2-byte pointer
        room, keep = limit - 12 - len(question), 0
        while keep < len(answers) and sizes[keep] <= room:
            room -= sizes[keep]
            keep += 1
        truncated, answers = keep < len(answers), answers[:keep]
    else:
        truncated = False
    flags = 0x8000 | (qflags & 0x0100) | 0x0080 | rcode  # QR, RD copied, RA
    if truncated:
        flags |= 0x0200
    if authoritative:
        flags |= 0x0400
    out = [struct.pack("!HHHHHH", qid, flags, 1, len(answers), 0, 0), question]
    for rtype, value in answers:
        rdata = _rdata(rtype, value)
        out.append(struct.pack("!HHHIH", 0xC00C, rtype, 1, TTL, len(rdata)) + rdata)
    return b"".join(out)


# --- Fly's names -----------------------------------------------------------------

_TOPN = re.compile(r"^top(\d+)\.nearest\.of$")


class Catalogue:
    def __init__(self, records: Callable[[], list[Record]], apps: Callable[[], list[str]]):
        self.records = records
        self.apps = apps
        self.delay = 0.0

    def visible(self, asker_ip: str | None) -> list[Record]:
        now = time.monotonic()
        return [r for r in self.records() if r.started_at
                and (r.ip == asker_ip or now >= r.started_at + self.delay)]

    def answer(self, name: str, qtype: int, asker_ip: str | None) -> tuple[int, list[tuple[int, str]]]:
        name = name.rstrip(".")
        if not name.endswith(".internal"):
            return SERVFAIL, []  # no recursion here: nothing outside is reachable
        if name == "_apps.internal":
            return self._txt(qtype, ",".join(sorted(self.apps())))
        stem = name[: -len(".internal")]
        app, sub = None, ""
        for candidate in sorted(self.apps(), key=len, reverse=True):
            if stem == candidate or stem.endswith("." + candidate):
                app, sub = candidate, stem[: -len(candidate)].rstrip(".")
                break
        if app is None:
            return NXDOMAIN, []
        asker = next((r for r in self.records() if r.ip == asker_ip), None)
        mine = sorted((r for r in self.visible(asker_ip) if r.app == app), key=lambda r: r.machine_id)
        regions = sorted({r.region for r in self.records() if r.app == app})

        if sub == "regions":
            return self._txt(qtype, ",".join(sorted({r.region for r in mine})))
        if sub == "vms":
            return self._txt(qtype, ",".join(f"{r.machine_id} {r.region}" for r in mine))
        if sub == "all.vms":  # every Machine of the app, stopped and not yet started ones too, each
            now = time.monotonic()  # seen `delay` seconds after it was made (the asker's own at once)
            everyone = sorted((r for r in self.records() if r.app == app
                               and (r.ip == asker_ip or now >= r.created_at + self.delay)), key=lambda r: r.machine_id)
            return self._txt(qtype, ",".join(f"{r.machine_id} {r.region}" for r in everyone))
        if sub in ("", "global"):
            chosen = mine
        elif sub in regions:
            chosen = [r for r in mine if r.region == sub]
        elif sub.endswith(".vm"):
            chosen = [r for r in mine if r.machine_id == sub[:-3]]
        elif sub.endswith(".process"):
            chosen = [r for r in mine if r.process_group == sub[:-8]]
        elif m := _TOPN.match(sub):
            here = asker.region if asker else None
            ranked = sorted(mine, key=lambda r: (distance(here, r.region) if here else 0, r.machine_id))
            chosen = ranked[: int(m.group(1))]
        else:
            return NXDOMAIN, []
        if qtype in (AAAA, ANY):
            return NOERROR, [(AAAA, r.ip) for r in chosen]
        return NOERROR, []

    @staticmethod
    def _txt(qtype: int, value: str) -> tuple[int, list[tuple[int, str]]]:
        return NOERROR, ([(TXT, value)] if qtype in (TXT, ANY) else [])

    def respond(self, data: bytes, asker_ip: str | None, limit: int | None = None) -> bytes | None:
        try:
            qid, flags, name, qtype, question = parse_query(data)
        except (ValueError, IndexError, struct.error):
            return None
        rcode, answers = self.answer(name, qtype, asker_ip)
        return build_response(qid, flags, question, rcode, answers,
                              authoritative=name.rstrip(".").endswith(".internal"), limit=limit)


class UDPServer(asyncio.DatagramProtocol):
    def __init__(self, catalogue: Catalogue):
        self.catalogue = catalogue

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        reply = self.catalogue.respond(data, addr[0], limit=udp_limit(data))
        if reply:
            self.transport.sendto(reply, addr)


async def serve_tcp(catalogue: Catalogue, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
    asker = writer.get_extra_info("peername")[0]
    try:
        while True:
            size = struct.unpack("!H", await reader.readexactly(2))[0]
            reply = catalogue.respond(await reader.readexactly(size), asker)
            if reply is None:
                break
            writer.write(struct.pack("!H", len(reply)) + reply)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()
