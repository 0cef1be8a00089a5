"""Backup and restore on the local platform, end to end with the real engine (issue 20): fill an account (a
stream with gaps, a KV bucket with history, deletes and a purge, an object store, a durable consumer
part-way), `nats-fly backup`, `pulumi destroy`, `pulumi up` a new cluster, `nats-fly restore`, and every
message (count, gaps, sha256 over seq, subject and data), every key and revision and the consumer's place
are back. The user's password comes from the stack (`pulumi config get`), on no command line.

A KV watcher stays open through the backup: nats-server 2.15.0 cannot snapshot a stream with an ephemeral
consumer, so that bucket is backed up again without its consumers (and says so)."""

from __future__ import annotations

import asyncio
import time

import nats

from nats_fly_testkit import backups as b
from nats_fly_testkit import durable as d
from nats_fly_testkit.support import answered, nats_servers

PASSWORD = "backup-system-password-Zq81"
APP_PASSWORD = "backup-app-password-7Hq2"


def urls(stack) -> list[str]:
    return [u for region in stack.outputs()["serverUrls"].values() for u in region]


async def connect(stack):
    return await nats.connect(urls(stack), user="app", password=APP_PASSWORD, max_reconnect_attempts=-1)


def test_backup_destroy_up_restore_brings_back_every_message_key_and_revision(project, tmp_path):
    stack = project("local")
    stack.config({"jetstream": True, "auth": "password", "users": ["app"]})
    stack.pulumi("config", "set", "--secret", "sysPassword", stdin=PASSWORD)
    stack.pulumi("config", "set", "--secret", "--path", "userPasswords.app", stdin=APP_PASSWORD)
    marker, folder = str(stack.root), tmp_path / "backup"
    try:
        stack.pulumi("up", "--yes", "--skip-preview")

        async def filled():
            nc = await connect(stack)
            await b.fill(nc)
            return nc, await b.fingerprints(nc), await b.consumer_state(nc)
        loop = asyncio.new_event_loop()
        nc, before, consumer = loop.run_until_complete(filled())

        async def watched():  # an ephemeral consumer on the bucket's stream while the backup runs
            kv = await nc.jetstream().key_value(b.BUCKET)
            return await kv.watchall()
        watcher = loop.run_until_complete(watched())
        t0 = time.monotonic()
        saved = b.nats_fly(stack.root, stack.env, "backup", "--stack", stack.stack, "--to", str(folder))
        backup_s = time.monotonic() - t0
        loop.run_until_complete(watcher.stop())
        loop.run_until_complete(nc.close())
        assert saved.returncode == 0, saved.stdout + saved.stderr
        assert APP_PASSWORD not in saved.stdout + saved.stderr
        lines = saved.stdout.splitlines()
        assert sorted(line.split(":")[0] for line in lines[:-1]) == sorted(b.STREAMS), lines
        assert f"{b.STREAM}: ok" in lines
        assert f"KV_{b.BUCKET}: ok without its consumers" in saved.stdout
        assert sorted(p.name for p in folder.iterdir()) == sorted(b.STREAMS)
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())

        stack.pulumi("destroy", "--yes", "--skip-preview")
        assert nats_servers(marker) == []
        stack.pulumi("up", "--yes", "--skip-preview")  # a new cluster: new processes, empty stores

        t0 = time.monotonic()
        put_back = b.nats_fly(stack.root, stack.env, "restore", "--stack", stack.stack, "--from", str(folder))
        restore_s = time.monotonic() - t0
        assert put_back.returncode == 0, put_back.stdout + put_back.stderr

        async def after():
            nc = await connect(stack)
            try:
                found = await b.fingerprints(nc)
                state = await b.consumer_state(nc)
                next_seq = (await answered(lambda: nc.jetstream().publish("orders.next", b"after"))).seq
                return found, state, next_seq
            finally:
                await nc.close()
        after_fp, after_consumer, next_seq = loop.run_until_complete(after())
        loop.close()
        d.figure("local_backup_restore", {"backup_s": round(backup_s, 2), "restore_s": round(restore_s, 2),
                                          "backup_bytes": size, "streams": {s: f.messages for s, f in before.items()}})
        assert after_fp == before
        assert after_consumer == consumer and consumer["acked"] == 37
        assert next_seq == before[b.STREAM].last_seq + 1

        again = b.nats_fly(stack.root, stack.env, "restore", "--stack", stack.stack, "--from", str(folder))
        assert again.returncode == 1 and "exist already in the cluster of stack e2e" in again.stderr, again.stderr
        assert len(again.stderr.strip().splitlines()) == 1
    finally:
        stack.pulumi("destroy", "--yes", "--skip-preview", check=False)
    assert nats_servers(marker) == []
