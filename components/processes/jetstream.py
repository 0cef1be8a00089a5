"""JetStream's API as the asset provider calls it: raw `$JS.API.*` JSON requests over one nats-py connection
per cluster and user, kept for the life of the process (DESIGN.md: JetStream assets). Raw requests keep every
field of a config the server returns, so an update sends back what it does not model untouched. No Pulumi."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import natsadmin

if TYPE_CHECKING:
    from nats.aio.client import Client

REQUEST_TIMEOUT = 10.0
CONNECT_TIMEOUT = 20.0
SETTLE = 60.0
"""How long a call waits for JetStream to answer at all (just started, or electing a leader)."""

NOT_READY = frozenset({10008})  # JetStream system temporarily unavailable (no meta leader yet)
NO_PEERS = 10005
"""No suitable peers for placement: what a cluster that has just started answers while its servers' news
has not reached the meta leader. The check at preview has refused what no cluster could place (replicas
above its servers, an unknown region), so a create asks again while JetStream settles."""
STREAM_NOT_FOUND = 10059
CONSUMER_NOT_FOUND = 10014


class JetStreamError(Exception):
    """A refusal or failure, as one line without a credential."""


class ApiError(JetStreamError):
    def __init__(self, subject: str, error: dict):
        self.code, self.err_code = error.get("code"), error.get("err_code")
        self.description = error.get("description", "")
        super().__init__(self.description)


@dataclass(frozen=True)
class Target:
    """Where and as whom: the connection a resource (or its provider) was given."""

    servers: tuple[str, ...]
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None

    def key(self) -> tuple:
        digest = hashlib.sha256((self.password or "").encode()).hexdigest()
        return self.servers, self.user, self.ca_file, digest

    def shown(self) -> str:
        return natsadmin.display(",".join(self.servers))


class Api:
    """The JetStream API of one account, through one connection."""

    def __init__(self, client: Client, target: Target):
        self.client, self.target = client, target

    async def request(self, subject: str, body: Any = None, *, settle: float = SETTLE,
                      not_ready: frozenset[int] = NOT_READY) -> dict:
        """The answer to one API request; an API error raises ApiError. While JetStream is not ready (no
        responders, no answer, an error code of `not_ready`) the request is sent again until `settle`
        seconds have passed; then the last API error is raised as it is."""
        from nats.errors import NoRespondersError, TimeoutError as NatsTimeout  # loaded by the connection (natsadmin)
        payload = b"" if body is None else json.dumps(body).encode()
        deadline = time.monotonic() + settle
        while True:
            try:
                message = await self.client.request(f"$JS.API.{subject}", payload, timeout=REQUEST_TIMEOUT)
                answer = json.loads(message.data)
                error = answer.get("error")
                if not error:
                    return answer
                if error.get("err_code") not in not_ready or time.monotonic() > deadline:
                    raise ApiError(subject, error)
                last = error.get("description", "")
            except (NoRespondersError, NatsTimeout) as problem:
                last = "no answer" if isinstance(problem, NatsTimeout) else "no JetStream in this account"
            if time.monotonic() > deadline:
                raise JetStreamError(f"JetStream at {self.target.shown()} did not answer {subject} within "
                                     f"{settle:g}s: {last}")
            await asyncio.sleep(0.5)

    async def stream_info(self, name: str) -> dict | None:
        try:
            return await self.request(f"STREAM.INFO.{name}")
        except ApiError as error:
            if error.err_code == STREAM_NOT_FOUND:
                return None
            raise

    async def stream_create(self, config: dict) -> dict:
        return await self.request(f"STREAM.CREATE.{config['name']}", config, not_ready=NOT_READY | {NO_PEERS})

    async def stream_update(self, config: dict) -> dict:
        return await self.request(f"STREAM.UPDATE.{config['name']}", config)

    async def stream_delete(self, name: str) -> bool:
        try:
            return (await self.request(f"STREAM.DELETE.{name}")).get("success", False)
        except ApiError as error:
            if error.err_code == STREAM_NOT_FOUND:
                return False
            raise

    async def stream_names(self, subject: str) -> list[str]:
        return (await self.request("STREAM.NAMES", {"subject": subject})).get("streams") or []

    async def consumer_info(self, stream: str, name: str) -> dict | None:
        try:
            return await self.request(f"CONSUMER.INFO.{stream}.{name}")
        except ApiError as error:
            if error.err_code in (CONSUMER_NOT_FOUND, STREAM_NOT_FOUND):
                return None
            raise

    async def consumer_put(self, stream: str, config: dict, action: str) -> dict:
        """action: 'create' (refused when it exists with another config) or 'update' (refused when missing)."""
        return await self.request(f"CONSUMER.CREATE.{stream}.{config['name']}",
                                  {"stream_name": stream, "config": config, "action": action})

    async def consumer_delete(self, stream: str, name: str) -> bool:
        try:
            return (await self.request(f"CONSUMER.DELETE.{stream}.{name}")).get("success", False)
        except ApiError as error:
            if error.err_code in (CONSUMER_NOT_FOUND, STREAM_NOT_FOUND):
                return False
            raise

    async def account_info(self) -> dict:
        return await self.request("INFO")


class Connections:
    """One connection per (servers, user, password), made on first use. A changed password is another
    key: the connection of the old one is closed. Used from one asyncio loop."""

    def __init__(self, name: str):
        self.name = name
        self._open: dict[tuple, Api] = {}
        self._locks: dict[tuple, asyncio.Lock] = {}

    async def api(self, target: Target) -> Api:
        key = target.key()
        async with self._locks.setdefault(key, asyncio.Lock()):
            found = self._open.get(key)
            if found and found.client.is_connected:
                return found
            for old in [k for k in self._open if k[:3] == key[:3] and k != key]:
                await self._close(old)
            tls = natsadmin.tls_context(target.ca_file, False)
            try:
                client = await natsadmin.connect(",".join(target.servers), user=target.user, password=target.password,
                                                 timeout=CONNECT_TIMEOUT, name=self.name, tls=tls)
            except natsadmin.ConnectError as error:
                raise JetStreamError(f"cannot reach the cluster at {target.shown()}: {error}") from None
            self._open[key] = Api(client, target)
            return self._open[key]

    async def _close(self, key: tuple) -> None:
        api = self._open.pop(key, None)
        if api and not api.client.is_closed:
            await api.client.close()

    async def close(self) -> None:
        for key in list(self._open):
            await self._close(key)
