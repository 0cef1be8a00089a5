"""What the durable suite shares: nats-py clients through the stand-in's edges that record
what happens to them, a JetStream publish load that keeps every acknowledgement, the proof
that no acknowledged message was lost, and a timeline of what happened when.

Everything is measured against real nats-server Machines in the Fly stand-in; the figures
land in `FIGURES` and are printed at the end of the session.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import ssl
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone

import nats
from nats.js.api import ConsumerConfig, AckPolicy, DeliverPolicy, StorageType
from nats.js.errors import APIError, NotFoundError

from .support import answered

STREAM = "DUR"
FIGURES: dict = {}
READ_WINDOW = 180
"""Seconds the suite keeps asking JetStream before it gives up: through elections, `503 JetStream
system temporarily unavailable` after a heal, a replica still catching up. A slow machine makes a
test slower; it never turns an unanswered question into a missing message."""


def figure(key: str, value) -> None:
    FIGURES[key] = value
    print(f"figure {key}: {json.dumps(value)}", flush=True)


# --- a timeline: wall clock, so it lines up with the Machines' console logs (UTC) --------------

class Timeline:
    def __init__(self):
        self.t0 = time.time()
        self.events: list[tuple[float, str]] = []

    def add(self, what: str, at: float | None = None) -> None:
        self.events.append((time.time() if at is None else at, what))

    def text(self) -> str:
        return "\n".join(f"  {t - self.t0:8.2f}s  {what}" for t, what in sorted(self.events))


_LOG_TIME = re.compile(r"^\[\d+\] (\d{4}/\d\d/\d\d \d\d:\d\d:\d\d\.\d+) \[\w+\] (.*)$")


def console_events(standin, machine_id: str, patterns: dict[str, str], since: float) -> list[tuple[float, str]]:
    """(epoch, label) for each console line (nats-server's own log, UTC) matching a pattern."""
    path = standin.root / "machines" / machine_id / "console.log"
    found = []
    for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
        m = _LOG_TIME.match(line)
        if not m:
            continue
        at = datetime.strptime(m.group(1), "%Y/%m/%d %H:%M:%S.%f").replace(tzinfo=timezone.utc).timestamp()
        if at < since:
            continue
        for label, needle in patterns.items():
            if needle in m.group(2):
                found.append((at, label))
    return found


# --- clients ------------------------------------------------------------------------------------

@dataclass
class Client:
    """One nats-py connection through `<app>.fly.dev:<port>` as seen from `region`."""
    standin: object
    app: str
    region: str
    user: str | None = None
    password: str | None = None
    port: int = 10000
    tls: ssl.SSLContext | None = None
    tls_hostname: str | None = None
    name: str = ""
    timeline: Timeline | None = None
    disconnects: list[float] = field(default_factory=list)
    reconnects: list[tuple[float, str]] = field(default_factory=list)
    ldm_notices: list[float] = field(default_factory=list)
    nc: object = None
    closing: bool = False

    async def connect(self, **extra) -> "Client":
        host, port = self.standin.edge(self.app, self.region, self.port)
        opts = dict(connect_timeout=3, allow_reconnect=True, max_reconnect_attempts=-1, reconnect_time_wait=0.25,
                    name=self.name or self.region, disconnected_cb=self._disconnected,
                    reconnected_cb=self._reconnected, lame_duck_mode_cb=self._ldm, error_cb=self._error)
        if self.user:
            opts.update(user=self.user, password=self.password)
        scheme = "nats"
        if self.tls:
            scheme = "tls"
            opts.update(tls=self.tls, tls_hostname=self.tls_hostname or f"{self.app}.fly.dev",
                        tls_handshake_first=True)
        opts.update(extra)
        self.nc = await nats.connect(f"{scheme}://{host}:{port}", **opts)
        return self

    @property
    def label(self) -> str:
        return self.name or self.region

    @property
    def server(self) -> str:
        return (self.nc._server_info or {}).get("server_name", "") if self.nc else ""

    async def _disconnected(self):
        if self.closing:
            return
        self.disconnects.append(time.time())
        if self.timeline:
            self.timeline.add(f"client {self.label}: disconnected")

    async def _reconnected(self):
        self.reconnects.append((time.time(), self.server))
        if self.timeline:
            self.timeline.add(f"client {self.label}: reconnected to {self.server}")

    async def _ldm(self):
        self.ldm_notices.append(time.time())
        if self.timeline:
            self.timeline.add(f"client {self.label}: told its server ({self.server}) is in lame duck mode")

    async def _error(self, error):
        pass  # reconnect attempts against a stopped upstream; the callbacks above tell the story

    async def close(self) -> None:
        self.closing = True
        if self.nc and not self.nc.is_closed:
            await self.nc.close()


async def refused(standin, app: str, region: str, **opts) -> str:
    """Connect once, no retry: the server's reason for refusing ('' when it accepted)."""
    host, port = standin.edge(app, region, opts.pop("port", 10000))
    scheme = "tls" if opts.get("tls") else "nats"
    errors: list[str] = []

    async def on_error(e):
        errors.append(str(e))
    try:
        nc = await nats.connect(f"{scheme}://{host}:{port}", allow_reconnect=False, max_reconnect_attempts=0,
                                connect_timeout=3, error_cb=on_error, **opts)
    except Exception as e:  # the server closes the connection after -ERR
        return f"{type(e).__name__}: {e} {errors}"
    await nc.close()
    return ""


# --- JetStream -----------------------------------------------------------------------------------

async def ensure_stream(nc, replicas: int = 3, timeout: float = READ_WINDOW) -> None:
    js = nc.jetstream()

    async def add() -> None:
        try:
            await js.add_stream(name=STREAM, subjects=[f"{STREAM.lower()}.>"], num_replicas=replicas,
                                storage=StorageType.FILE, duplicate_window=600)
        except APIError as e:
            if "already in use" not in str(e):
                raise
    await answered(add, timeout)


@dataclass
class Publisher:
    """Publishes to the stream one message at a time, awaiting each ack. A failed publish is
    retried with the same Nats-Msg-Id (deduplicated), so a message is counted once it is acked."""
    client: Client
    subject: str
    interval: float = 0.01
    retry_window: float = READ_WINDOW
    acked: dict[int, str] = field(default_factory=dict)
    errors: int = 0
    gave_up: int = 0
    duplicates: int = 0
    stalls: list[tuple[float, float]] = field(default_factory=list)  # (start, seconds) of publishes >1s
    count: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        js = self.client.nc.jetstream()
        while not stop.is_set():
            msg_id = f"{self.subject}#{self.count}"
            started = time.time()
            while True:
                try:
                    ack = await js.publish(self.subject, msg_id.encode(), timeout=2,
                                           headers={"Nats-Msg-Id": msg_id})
                except asyncio.CancelledError:
                    raise
                except Exception:
                    self.errors += 1
                    if time.time() - started > self.retry_window:
                        self.gave_up += 1
                        break
                    await asyncio.sleep(0.1)
                    continue
                if ack.duplicate:
                    self.duplicates += 1
                previous = self.acked.setdefault(ack.seq, msg_id)
                assert previous == msg_id, f"seq {ack.seq} acked for {previous} and {msg_id}"
                break
            took = time.time() - started
            if took > 1:
                self.stalls.append((started, took))
            self.count += 1
            await asyncio.sleep(self.interval)

    def summary(self) -> dict:
        return {"published": self.count, "acked": len(self.acked), "publish_errors_retried": self.errors,
                "gave_up": self.gave_up, "dedup_acks": self.duplicates,
                "longest_stall_s": round(max((s for _t, s in self.stalls), default=0), 2)}


def answer(error: Exception) -> str:
    """An error as the figures count it: a JetStream API error with its code and words."""
    if isinstance(error, APIError) and error.code:
        return f"{error.code} {error.description}"
    return type(error).__name__


async def publish_until(nc, subject: str, msg_id: str, window: float) -> tuple[int, float, Counter]:
    """Publish one message until it is acked: -> (seq, seconds it took, errors by kind)."""
    t0, errors = time.monotonic(), Counter()
    while True:
        try:
            ack = await nc.jetstream().publish(subject, msg_id.encode(), timeout=2, headers={"Nats-Msg-Id": msg_id})
            return ack.seq, time.monotonic() - t0, errors
        except Exception as e:  # noqa: BLE001
            errors[answer(e)] += 1
            if time.monotonic() - t0 > window:
                raise AssertionError(f"{subject} not writable within {window}s: {dict(errors)}") from e
            await asyncio.sleep(0.25)


@dataclass
class Reading:
    """What one reader found: seq -> payload up to the end marker, and the answers it asked again."""
    contents: dict[int, str] = field(default_factory=dict)
    retried: Counter = field(default_factory=Counter)

    def last(self) -> int:
        return max(self.contents, default=0)

    def again(self, error: Exception, what: str, deadline: float) -> None:
        """Count an answer that only means "not now"; past the deadline, fail as unreadable, not lost."""
        self.retried[answer(error)] += 1
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: the stream was still unreadable after {READ_WINDOW}s (read up to "
                                 f"seq {self.last()}; answers asked again: {dict(self.retried)}): {error!r}")


async def read_pulling(nc, end: int, deadline: float) -> Reading:
    """The stream up to seq `end`, through an ephemeral R1 pull consumer. The server places an R1
    consumer on any replica, a follower that has not applied the last entries included, and that
    one says num_pending 0 early: so the read ends at `end` (an acked marker), not at num_pending.
    A consumer that does not answer is replaced by one that starts where it stopped: its server
    may be stopped, cut off, or still catching up."""
    js, reading, sub = nc.jetstream(), Reading(), None
    try:
        while reading.last() < end:
            try:
                if sub is None:
                    sub = await js.pull_subscribe(f"{STREAM.lower()}.>", stream=STREAM, config=ConsumerConfig(
                        ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                        opt_start_seq=reading.last() + 1, mem_storage=True, num_replicas=1, inactive_threshold=60))
                msgs = await sub.fetch(1000, timeout=5)
            except Exception as e:  # noqa: BLE001 (503, no responders, a timeout, a consumer lost with its server)
                reading.again(e, "pull reader", deadline)
                sub = await _dropped(sub)
                await asyncio.sleep(0.25)
                continue
            for m in msgs:
                reading.contents[m.metadata.sequence.stream] = m.data.decode()
    finally:
        await _dropped(sub)
    return reading


async def read_ordered(nc, end: int, deadline: float) -> Reading:
    """The stream up to seq `end`, through nats-py's ordered consumer (R1, push, flow control): it
    recreates itself after a gap or two missed heartbeats, so it only has to be made once."""
    js, reading, sub = nc.jetstream(), Reading(), None
    try:
        while sub is None:
            try:
                sub = await js.subscribe(f"{STREAM.lower()}.>", stream=STREAM, ordered_consumer=True,
                                         idle_heartbeat=1)
            except Exception as e:  # noqa: BLE001
                reading.again(e, "ordered reader", deadline)
                await asyncio.sleep(0.25)
        while reading.last() < end:
            try:
                m = await sub.next_msg(timeout=5)
            except nats.errors.TimeoutError as e:
                reading.again(e, "ordered reader", deadline)
                continue
            reading.contents[m.metadata.sequence.stream] = m.data.decode()
    finally:
        await _dropped(sub)
    return reading


async def _dropped(sub) -> None:
    if sub is not None:
        with contextlib.suppress(Exception):  # its connection or consumer may be gone already
            await sub.unsubscribe()


def confirmed_losses(acked: dict[int, str], first: dict[int, str],
                     second: dict[int, str]) -> tuple[list[int], list[int]]:
    """(acked seqs both readers find missing or different, seqs only one of them does)."""
    suspects = {seq for seq, msg_id in acked.items() if first.get(seq) != msg_id or second.get(seq) != msg_id}
    both = sorted(seq for seq in suspects if first.get(seq) != acked[seq] and second.get(seq) != acked[seq])
    return both, sorted(suspects - set(both))


@dataclass
class Readings:
    """The stream read twice, each reader up to the same end marker."""
    first: Reading
    second: Reading
    marker_errors: Counter


async def read_twice(nc) -> Readings:
    """The whole stream as a pull consumer and an ordered consumer see it. Both read up to an end
    marker published now and acked, so neither stops at a replica's early end."""
    end, _took, errors = await publish_until(nc, f"{STREAM.lower()}.end", f"end-{secrets.token_hex(4)}", READ_WINDOW)
    deadline = time.monotonic() + READ_WINDOW
    first, second = await asyncio.gather(read_pulling(nc, end, deadline), read_ordered(nc, end, deadline))
    return Readings(first, second, errors)


async def lost_acked(nc, publishers: list[Publisher]) -> list[str]:
    """Every acked (seq, message) that the stream no longer holds, or holds as something else, as
    both readers of `read_twice` find it. A loss one reader alone sees is printed and kept in
    FIGURES["unconfirmed_losses"], not counted."""
    acked = {seq: msg_id for p in publishers for seq, msg_id in p.acked.items()}
    read = await read_twice(nc)
    first, second = read.first.contents, read.second.contents
    both, one = confirmed_losses(acked, first, second)
    if one:
        seen = [f"{acked[seq]}@{seq}: pull {first.get(seq)!r}, ordered {second.get(seq)!r}" for seq in one]
        FIGURES.setdefault("unconfirmed_losses", []).extend(seen)
        print(f"readers disagree (not counted as lost): {seen[:10]}", flush=True)
    retried = {"marker": dict(read.marker_errors), "pull": dict(read.first.retried),
               "ordered": dict(read.second.retried)}
    if any(retried.values()):
        print(f"answers asked again while reading: {retried}", flush=True)
    return [f"{acked[seq]}@{seq} -> {first.get(seq)!r} (the stream leader: {await leader_says(nc, seq)})"
            for seq in both]


async def leader_says(nc, seq: int) -> str:
    """What the stream's leader answers for one seq (its message API is answered by the leader
    alone): evidence beside a confirmed loss."""
    deadline = time.monotonic() + READ_WINDOW
    while True:
        try:
            return repr((await nc.jetstream().get_msg(STREAM, seq)).data.decode())
        except NotFoundError as e:
            return f"{e.code} {e.description}"
        except Exception as e:  # noqa: BLE001 (an election, a 503)
            if time.monotonic() > deadline:
                return f"no answer in {READ_WINDOW}s: {answer(e)}"
            await asyncio.sleep(0.25)


async def replicas(nc, timeout: float = READ_WINDOW) -> tuple[str, list[dict]]:
    """The stream's leader and its followers as the leader sees them (retried while there is no leader)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            info = await nc.jetstream().stream_info(STREAM)
            if info.cluster and info.cluster.leader:
                break
        except Exception:  # noqa: BLE001 (an election, a reconnect)
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"stream {STREAM} has no leader after {timeout}s")
        await asyncio.sleep(0.25)
    return info.cluster.leader, [{"name": r.name, "current": r.current, "offline": bool(r.offline),
                                  "lag": r.lag or 0, "active": r.active} for r in info.cluster.replicas or []]


def server_stream_states(standin, app: str) -> dict[str, dict]:
    """Each started Machine's own view of the stream (/jsz on its monitoring port)."""
    states = {}
    for m in standin.machines(app):
        if m["state"] != "started":
            continue
        try:
            doc = json.loads(standin.http(m["id"], 8222, "/jsz?accounts=true&streams=true", timeout=3)[1])
        except Exception as e:  # noqa: BLE001 (a Machine booting)
            states[m["id"]] = {"error": str(e)}
            continue
        for account in doc.get("account_details", []):
            for s in account.get("stream_detail", []):
                if s["name"] == STREAM:
                    states[m["id"]] = {"region": m["region"], "last_seq": s["state"]["last_seq"],
                                       "messages": s["state"]["messages"]}
        states.setdefault(m["id"], {"region": m["region"], "last_seq": None})
    return states


async def wait_converged(standin, app: str, nc, timeout: float = READ_WINDOW) -> float:
    """Seconds until the stream has a leader, both followers are current with lag 0 as the leader
    sees them, and the three Machines holding it end their own copies at the same sequence."""
    t0 = time.monotonic()
    last = None
    while time.monotonic() - t0 < timeout:
        try:
            leader, followers = await replicas(nc, timeout=2)
            states = await asyncio.to_thread(server_stream_states, standin, app)
            held = {s["region"] + "-" + i: s["last_seq"] for i, s in states.items() if s.get("last_seq") is not None}
            last = {"leader": leader, "followers": followers, "copies": held}
            if (leader and len(followers) == 2 and len(held) == 3 and len(set(held.values())) == 1
                    and all(f["current"] and not f["offline"] and f["lag"] == 0 for f in followers)):
                return time.monotonic() - t0
        except Exception as e:  # noqa: BLE001 (no leader for a moment)
            last = repr(e)
        await asyncio.sleep(0.25)
    raise AssertionError(f"the stream's replicas did not converge in {timeout}s: {last}")
