"""A password rotation with no refused client, on the local platform (issue 20), as the README documents it:
add a second user, move each client to it (the new connection up and subscribed in the same queue group,
then the old one drained), remove the first user. Locally each step is a reload (the passwords live in the
servers' private conf files), so no server restarts; a live subscriber loses no message, and the first
user's credentials are refused at the end."""

from __future__ import annotations

import asyncio

import nats

from nats_fly_testkit import durable as d
from nats_fly_testkit.support import nats_servers

PASSWORD = "rotate-system-password-Zq81"
OLD, NEW = ("app", "rotate-old-password-1"), ("app2", "rotate-new-password-2")


async def login(url: str, user: tuple[str, str]) -> str:
    """One connection attempt, no retry: '' when the server took it, else its words."""
    try:
        nc = await nats.connect(url, user=user[0], password=user[1], allow_reconnect=False,
                                max_reconnect_attempts=0, connect_timeout=3)
    except Exception as error:  # noqa: BLE001 (the server closes the connection after -ERR)
        return f"{type(error).__name__}: {error}"
    await nc.close()
    return ""


class Mover:
    """A publisher of numbered core messages and a queue subscriber, each on a connection of its own user."""

    def __init__(self, urls: list[str]):
        self.urls, self.sent, self.received = urls, 0, []
        self.refusals: list[str] = []
        self.publisher = self.subscriber = None

    async def connection(self, user: tuple[str, str]):
        async def error(e):
            if "Authorization" in str(e):
                self.refusals.append(f"{user[0]}: {e}")
        return await nats.connect(self.urls, user=user[0], password=user[1], max_reconnect_attempts=-1,
                                  reconnect_time_wait=0.5, error_cb=error)

    async def on_message(self, msg):
        self.received.append(int(msg.data))

    async def subscribe(self, user):
        nc = await self.connection(user)
        await nc.subscribe("orders", queue="workers", cb=self.on_message)
        await nc.flush()
        return nc

    async def publish(self, stop: asyncio.Event):
        while not stop.is_set():
            await self.publisher.publish("orders", str(self.sent).encode())
            self.sent += 1
            await asyncio.sleep(0.005)

    async def move_to(self, user) -> None:
        """Make before break: the new subscriber in the group and the new publisher up, then the old drained."""
        subscriber = await self.subscribe(user)
        publisher = await self.connection(user)
        old_subscriber, old_publisher = self.subscriber, self.publisher
        self.subscriber, self.publisher = subscriber, publisher
        await old_publisher.drain()
        await old_subscriber.drain()


def test_a_second_user_then_move_then_remove_the_first_loses_nothing_and_restarts_nothing(project):
    stack = project("local")
    stack.config({"auth": "password", "users": [OLD[0]]})
    stack.pulumi("config", "set", "--secret", "sysPassword", stdin=PASSWORD)
    stack.pulumi("config", "set", "--secret", "--path", f"userPasswords.{OLD[0]}", stdin=OLD[1])
    marker = str(stack.root)
    try:
        stack.pulumi("up", "--yes", "--skip-preview")
        servers = sorted(nats_servers(marker))
        urls = [u for region in stack.outputs()["serverUrls"].values() for u in region]

        async def rotate():
            mover = Mover(urls)
            mover.subscriber, mover.publisher = await mover.subscribe(OLD), await mover.connection(OLD)
            stop = asyncio.Event()
            task = asyncio.create_task(mover.publish(stop))
            await asyncio.sleep(1)
            stack.config({"users": [OLD[0], NEW[0]]})
            stack.pulumi("config", "set", "--secret", "--path", f"userPasswords.{NEW[0]}", stdin=NEW[1])
            await asyncio.to_thread(stack.pulumi, "up", "--yes", "--skip-preview")
            added = sorted(nats_servers(marker))
            await mover.move_to(NEW)
            await asyncio.sleep(1)
            stack.config({"users": [NEW[0]]})
            stack.pulumi("config", "rm", "--path", f"userPasswords.{OLD[0]}")
            await asyncio.to_thread(stack.pulumi, "up", "--yes", "--skip-preview")
            removed = sorted(nats_servers(marker))
            await asyncio.sleep(1)
            stop.set()
            await task
            await mover.publisher.flush()
            for _ in range(100):  # the last messages cross a route
                if len(mover.received) >= mover.sent:
                    break
                await asyncio.sleep(0.1)
            refused = await login(urls[0], OLD)
            await mover.publisher.close()
            await mover.subscriber.close()
            return mover, added, removed, refused

        mover, added, removed, refused = asyncio.run(rotate())
        lost = sorted(set(range(mover.sent)) - set(mover.received))
        duplicates = len(mover.received) - len(set(mover.received))
        d.figure("local_rotation", {"sent": mover.sent, "received": len(mover.received), "lost": len(lost),
                                    "duplicates": duplicates, "servers_restarted": len(set(servers) - set(removed))})
        assert added == servers and removed == servers  # reloads: the same processes throughout
        assert lost == [] and duplicates == 0, (lost[:10], duplicates)
        assert mover.refusals == []
        assert "Authorization Violation" in refused
    finally:
        stack.pulumi("destroy", "--yes", "--skip-preview", check=False)
    assert nats_servers(marker) == []
