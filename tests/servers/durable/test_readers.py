"""The durable suite's loss count (durable.lost_acked) on a real three-server JetStream cluster on
loopback, under the faults that once made it count a loss that did not happen (issue 17): a reader's
consumer on a replica that stops answering or has not applied the last entries (nats-server places
an R1 consumer on any replica of the stream), and a cluster without quorum, whose JetStream API
answers `503 JetStream system temporarily unavailable` or not at all for a while. A message really
gone is still counted, by both readers."""
from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest

from nats_fly_testkit import durable as d
from nats_fly.processes import local as localrun
from nats_fly.config.settings import DEFAULT_NATS_VERSION
from nats_fly_testkit.support import jetstream_confs

PAUSE = 7  # seconds a server is stopped: longer than a reader's 5 s wait for one answer


@dataclass
class Cluster:
    url: str  # js0's client URL: the tests' connection, never paused
    pids: dict[str, int]

    @contextlib.contextmanager
    def paused(self, *names: str):
        """SIGSTOP: the servers keep their connections open and answer nothing, as a starved or
        cut-off server does."""
        for name in names:
            os.kill(self.pids[name], signal.SIGSTOP)
        try:
            yield
        finally:
            for name in names:
                os.kill(self.pids[name], signal.SIGCONT)


@pytest.fixture
def cluster(tmp_path: Path):
    state = tmp_path / "state"
    servers = jetstream_confs(tmp_path, cluster="readers")
    pids: dict[str, int] = {}
    try:
        for name, conf, client, http in servers:
            pids[name] = localrun.ensure(name, conf, state, client, http, nats_version=DEFAULT_NATS_VERSION)["pid"]
        yield Cluster(f"nats://127.0.0.1:{servers[0][2]}", pids)
    finally:
        for pid in pids.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        for name, *_ in servers:
            localrun.stop(name, state, timeout=5)


async def stream(cluster: Cluster):
    nc = await nats.connect(cluster.url)
    await d.ensure_stream(nc)
    return nc


async def publish(nc, subject: str, count: int, first: int = 0, publisher: d.Publisher | None = None) -> d.Publisher:
    """`count` acked messages, kept as a Publisher keeps them (seq -> msg id)."""
    publisher = publisher or d.Publisher(client=None, subject=subject)
    for i in range(first, first + count):
        msg_id = f"{subject}#{i}"
        seq, _took, _errors = await d.publish_until(nc, subject, msg_id, d.READ_WINDOW)
        publisher.acked[seq] = msg_id
    return publisher


async def a_follower(nc) -> str:
    """A replica of the stream that neither leads it nor is js0."""
    _leader, followers = await d.replicas(nc)
    return next(f["name"] for f in followers if f["name"] != "js0")


def test_a_loss_counts_only_when_both_readers_see_it():
    acked = {1: "a", 2: "b", 3: "c", 4: "d"}
    first = {1: "a", 3: "x"}
    second = {1: "a", 2: "b"}
    # 2: only the first reader misses it; 3: the first reads another message there; 4: both miss it.
    assert d.confirmed_losses(acked, first, second) == ([3, 4], [2])
    assert d.confirmed_losses(acked, acked, acked) == ([], [])


def test_deleted_messages_are_counted_lost_by_both_readers(cluster):
    async def go():
        nc = await stream(cluster)
        try:
            publisher = await publish(nc, "dur.gone", 50)
            middle, last = sorted(publisher.acked)[20], max(publisher.acked)
            for seq in (middle, last):
                await nc.jetstream().delete_msg(d.STREAM, seq)
            return await d.lost_acked(nc, [publisher]), publisher.acked[middle], middle, publisher.acked[last], last
        finally:
            await nc.close()

    lost, middle_id, middle, last_id, last = asyncio.run(go())
    assert lost == [f"{middle_id}@{middle} -> None (the stream leader: 404 no message found)",
                    f"{last_id}@{last} -> None (the stream leader: 404 no message found)"]


def test_a_publish_retried_with_its_msg_id_is_acked_at_the_first_ones_seq(cluster):
    """The Publisher retries a publish whose ack did not come with the same Nats-Msg-Id: the stream's
    duplicate window answers with the seq the first one was stored at (`dedup_acks` in the figures),
    and the message is stored once."""
    async def go():
        nc = await stream(cluster)
        try:
            js = nc.jetstream()
            first = await js.publish("dur.dedup", b"dur.dedup#0", headers={"Nats-Msg-Id": "dur.dedup#0"})
            again = await js.publish("dur.dedup", b"dur.dedup#0", headers={"Nats-Msg-Id": "dur.dedup#0"})
            publisher = d.Publisher(client=None, subject="dur.dedup", acked={first.seq: "dur.dedup#0"})
            read = await d.read_twice(nc)
            stored = [seq for seq, body in read.first.contents.items() if body == "dur.dedup#0"]
            return first, again, stored, await d.lost_acked(nc, [publisher])
        finally:
            await nc.close()

    first, again, stored, lost = asyncio.run(go())
    assert not first.duplicate and again.duplicate and again.seq == first.seq
    assert stored == [first.seq] and lost == []


def test_a_replica_that_stops_answering_while_the_stream_is_read_loses_nothing(cluster):
    """A follower is stopped, the stream written without it, and both readers started while it is
    still stopped: a reader whose consumer the server placed on it gets no answer, then an answer
    from a replica that is still catching up. Tried until a reader did meet it (each consumer lands
    on it about one time in three)."""
    async def go():
        nc = await stream(cluster)
        try:
            follower = await a_follower(nc)
            publisher, trials = None, []
            while len(trials) < 10:
                with cluster.paused(follower):
                    publisher = await publish(nc, "dur.paused", 300, first=300 * len(trials), publisher=publisher)
                    reading = asyncio.create_task(d.read_twice(nc))
                    await asyncio.sleep(PAUSE)
                read = await reading
                lost, _ = d.confirmed_losses(publisher.acked, read.first.contents, read.second.contents)
                one = {seq for seq, msg_id in publisher.acked.items()
                       if read.first.contents.get(seq) != msg_id or read.second.contents.get(seq) != msg_id}
                asked = {"pull": dict(read.first.retried), "ordered": dict(read.second.retried)}
                trials.append({"lost": lost, "seen_by_one_reader_only": sorted(one), "asked_again": asked})
                if any(asked.values()):
                    break
            return follower, trials
        finally:
            await nc.close()

    follower, trials = asyncio.run(go())
    d.figure("reader_through_a_paused_replica", {"paused": follower, "trials": trials})
    assert all(t["lost"] == [] and t["seen_by_one_reader_only"] == [] for t in trials), trials
    assert any(trials[-1]["asked_again"].values()), f"no reader's consumer was on the paused {follower} in {len(trials)} trials"


def test_a_cluster_without_quorum_is_waited_out_not_read_as_loss(cluster):
    """Two of three servers stopped while the stream is read: no stream leader, no meta leader, the
    end marker cannot be acked and the API cannot place a consumer. The readers ask again until
    the servers are back, and find every acked message."""
    async def go():
        nc = await stream(cluster)
        try:
            publisher = await publish(nc, "dur.quorum", 200)
            with cluster.paused("js1", "js2"):
                reading = asyncio.create_task(d.read_twice(nc))
                await asyncio.sleep(PAUSE)
            read = await reading
            return publisher, read
        finally:
            await nc.close()

    publisher, read = asyncio.run(go())
    d.figure("reader_through_lost_quorum", {"marker_publish_retried": dict(read.marker_errors),
                                            "pull": dict(read.first.retried), "ordered": dict(read.second.retried)})
    assert read.marker_errors, "the end marker was acked without a quorum: the fault did not happen"
    assert d.confirmed_losses(publisher.acked, read.first.contents, read.second.contents) == ([], [])
