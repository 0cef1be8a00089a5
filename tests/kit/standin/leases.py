"""Machine leases, as the Machines API keeps them and flyctl asks for them.

The API holds at most one lease per Machine. A request for a Machine leased by someone
else is refused (HTTP 409 with "machine ID <id> lease currently held by <owner>, expires at
<time>"); flyctl's client retries that with exponential backoff, 100 ms doubling to at most
500 ms, randomised by half, for one minute in all, and then gives up with the last error
(fly-go flaps/retry.go `Retry`; flaps/flaps_machines.go `AcquireLease`, which wraps each
failure as "failed to get lease on VM <id>: ..."). The held-lease text is the API's own,
as a real deploy printed it: "machine ID 2879325b42d318 lease currently held by
9af60c27-...@tokens.fly.io, expires at 2026-05-14T10:41:08Z" (quoted in a public project's
notes found by the code search; the community thread "409 Conflict error from Machines
API" shows the same JSON shape, `{"status":"error","message":"machine ID ... lease currentl...`).

One lease request is one API request, atomic here because the daemon is one asyncio loop.
There is no app-wide lock: two commands on one app run side by side and meet only on the
Machines they both lease, as on Fly.
"""
from __future__ import annotations

import asyncio
import random
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone


@dataclass
class Lease:
    owner: str
    nonce: str
    ttl: float
    refreshed: bool  # deploy refreshes its leases in the background (13 s TTL, every ~4 s)
    acquired: float = field(default_factory=time.monotonic)

    def expires(self) -> float:
        return (time.monotonic() if self.refreshed else self.acquired) + self.ttl

    def live(self) -> bool:
        return self.expires() > time.monotonic()

    def expires_iso(self) -> str:
        wall = time.time() + (self.expires() - time.monotonic())
        return datetime.fromtimestamp(wall, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class LeaseHeld(Exception):
    """The API's 409 for a Machine leased by someone else."""

    def __init__(self, machine_id: str, lease: Lease):
        super().__init__(f"failed to get lease on VM {machine_id}: machine ID {machine_id} lease currently held "
                         f"by {lease.owner}, expires at {lease.expires_iso()}")


class Leases:
    def __init__(self, settings: dict):
        self.settings = settings
        self.held: dict[str, Lease] = {}  # Machine id -> lease

    def try_acquire(self, machine_id: str, owner: str, ttl: float, refreshed: bool) -> str:
        """One POST /machines/<id>/lease: a nonce, or LeaseHeld."""
        lease = self.held.get(machine_id)
        if lease is not None and lease.live():
            raise LeaseHeld(machine_id, lease)
        nonce = secrets.token_hex(6)
        self.held[machine_id] = Lease(owner, nonce, ttl, refreshed)
        return nonce

    def release(self, machine_id: str, nonce: str) -> None:
        lease = self.held.get(machine_id)
        if lease is not None and lease.nonce == nonce:
            del self.held[machine_id]

    def holder(self, machine_id: str) -> Lease | None:
        lease = self.held.get(machine_id)
        return lease if lease is not None and lease.live() else None

    async def acquire(self, machine_id: str, owner: str, ttl: float, refreshed: bool = False,
                      on_wait=None) -> str:
        """fly-go's AcquireLease: retry a held lease with backoff (100 ms doubling to 500 ms, +-50 %)
        until `lease_wait_s` (Fly: 60 s, backoff.MaxElapsedTime) has passed, then raise the last
        LeaseHeld. `on_wait` runs once after 2 s of waiting (flyctl's "Waiting on lease" line,
        internal/machine/lease.go AcquireLease)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        limit = float(self.settings.get("lease_wait_s", 60.0))
        interval, told = 0.1, False
        while True:
            try:
                return self.try_acquire(machine_id, owner, ttl, refreshed)
            except LeaseHeld:
                elapsed = loop.time() - start
                wait = interval * random.uniform(0.5, 1.5)
                if elapsed + wait > limit:
                    raise
            if on_wait is not None and not told and elapsed >= 2:
                told = True
                on_wait()
            await asyncio.sleep(wait)
            interval = min(interval * 2, 0.5)
