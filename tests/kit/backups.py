"""What the backup and restore proofs share: an account filled with a stream that has gaps, a KV bucket with
history, deletes and a purge, an object store and a durable consumer part-way through; and the fingerprint
each stream must still have after `nats-fly backup`, `pulumi destroy`, a new cluster and `nats-fly restore`.

Every message is read by sequence through the stream's message API ($JS.API.STREAM.MSG.GET), not through a
consumer: a consumer would itself be a thing the backup has to carry (and nats-py's kv.history() is flaky
under load). A KV key's revision is its message's sequence, so the fingerprint of KV_<bucket> holds every
key and every revision."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.errors import NotFoundError

from .support import answered

STREAM, BUCKET, STORE, DURABLE = "ORDERS", "cfg", "files", "worker"
STREAMS = (STREAM, f"KV_{BUCKET}", f"OBJ_{STORE}")


async def fill(nc, messages: int = 500) -> None:
    js = nc.jetstream()
    await answered(lambda: js.add_stream(name=STREAM, subjects=["orders.>"], num_replicas=3))
    for i in range(messages):
        await js.publish(f"orders.{i % 7}", f"order {i} ".encode() * (1 + i % 5))
    for seq in (5, 6, 7, messages // 2):  # interior deletes: the gaps must come back as gaps
        await js.delete_msg(STREAM, seq)
    kv = await answered(lambda: js.create_key_value(bucket=BUCKET, history=5, replicas=3))
    for round_ in range(3):
        for key in range(40):
            await kv.put(f"key.{key}", f"value {round_}.{key}".encode())
    for key in range(5):
        await kv.delete(f"key.{key}")
    await kv.purge("key.39")
    store = await answered(lambda: js.create_object_store(STORE, replicas=3))
    await store.put("blob", bytes(range(256)) * 1000)
    await js.add_consumer(STREAM, ConsumerConfig(durable_name=DURABLE, ack_policy=AckPolicy.EXPLICIT))
    pull = await js.pull_subscribe_bind(DURABLE, STREAM)
    for msg in await pull.fetch(37, timeout=10):
        await msg.ack_sync()


@dataclass(frozen=True)
class Fingerprint:
    messages: int
    first_seq: int
    last_seq: int
    num_deleted: int
    digest: str
    """sha256 over (seq, subject, data) of every message, in sequence order."""
    latest: str
    """subject -> its last sequence (for a KV bucket: key -> revision), as JSON."""


async def fingerprint(nc, stream: str) -> Fingerprint:
    js = nc.jetstream()
    info = await answered(lambda: js.stream_info(stream))
    digest, latest = hashlib.sha256(), {}
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            msg = await answered_or_missing(lambda s=seq: js.get_msg(stream, s))
        except NotFoundError:
            continue  # a gap: deleted, or purged
        digest.update(json.dumps([seq, msg.subject]).encode() + b"\0" + (msg.data or b"") + b"\0")
        latest[msg.subject] = seq
    return Fingerprint(info.state.messages, info.state.first_seq, info.state.last_seq, info.state.num_deleted,
                       digest.hexdigest(), json.dumps(latest, sort_keys=True))


async def answered_or_missing(call, timeout: float = 120):
    """support.answered, but a 404 is an answer (a gap), not a "not now"."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await call()
        except NotFoundError:
            raise
        except Exception:  # noqa: BLE001 (503, a timeout: the group electing)
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.25)


async def consumer_state(nc) -> dict:
    info = await answered(lambda: nc.jetstream().consumer_info(STREAM, DURABLE))
    return {"acked": info.ack_floor.consumer_seq, "ack_floor": info.ack_floor.stream_seq,
            "delivered": info.delivered.stream_seq, "num_pending": info.num_pending}


async def fingerprints(nc) -> dict[str, Fingerprint]:
    return {stream: await fingerprint(nc, stream) for stream in STREAMS}


def nats_fly(cwd: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    """`python -m nats_fly <args>` as a user runs it, from the project folder."""
    return subprocess.run([sys.executable, "-m", "nats_fly", *args], cwd=cwd, env=env, capture_output=True,
                           text=True, timeout=900)
