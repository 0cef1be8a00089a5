"""How an operator's process reaches a cluster: one nats-py connection, bounded, its failure one line.
verify, the JetStream peer removal of a Fly region and the other operations all connect here."""

from __future__ import annotations

import asyncio
import ssl
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from nats.aio.client import Client


class ConnectError(Exception):
    """Why a URL could not be connected to, in words (no credential in them)."""


def tls_context(ca_file: str | None, handshake_first: bool) -> ssl.SSLContext | None:
    if ca_file is None and not handshake_first:
        return None
    context = ssl.create_default_context(cafile=ca_file)
    # Any certificate in the CA file is an anchor, as in Go's crypto/x509: a server's own certificate
    # (the local platform's serverTls) as much as a root.
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return context


def display(url: str) -> str:
    """The URL (or comma-separated URLs) without any user or password in it."""
    shown = []
    for part in url.split(","):
        parts = urlsplit(part.strip())
        host = parts.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        shown.append(urlunsplit(parts._replace(netloc=f"{netloc}:{parts.port}" if parts.port else netloc)))
    return ",".join(shown)


async def connect_once(url: str, *, user: str | None, password: str | None, timeout: float, name: str,
                       tls: ssl.SSLContext | None = None, tls_handshake_first: bool = False) -> Client:
    """One attempt over the comma-separated `url`s, in their order, within `timeout`."""
    # Imported at the first connection, not with this module: nats-py brings aiohttp (0.15 s), and the asset
    # provider, which starts on every `pulumi up`, connects only when a change or a read needs the server.
    import nats
    errors: list[Exception] = []

    async def remember(error: Exception) -> None:
        errors.append(error)

    options: dict = {"tls": tls} if tls else {}
    if tls_handshake_first:
        options["tls_handshake_first"] = True
    # allow_reconnect=False alone does not stop nats-py from retrying a first connect forever;
    # one retry, then NoServersError, does.
    try:
        return await asyncio.wait_for(nats.connect(
            servers=url.split(","), user=user, password=password, name=name, allow_reconnect=False,
            dont_randomize=True, max_reconnect_attempts=1, reconnect_time_wait=0.5,
            connect_timeout=max(1, min(5, int(timeout))), error_cb=remember, **options), timeout)
    except Exception as error:  # nats-py raises many types here; the caller gets one line
        cause = errors[-1] if errors else error
        text = str(cause) or type(cause).__name__
        for part in url.split(","):
            text = text.replace(part, display(part))
        if "authorization violation" in text.lower():
            text = f"authorization violation: the server refused user {user!r} with this password"
        raise ConnectError(text) from error


async def connect(url: str, *, user: str | None, password: str | None, timeout: float, name: str,
                  tls: ssl.SSLContext | None = None, tls_handshake_first: bool = False) -> Client:
    """Connect, trying again until `timeout`: a server just started may not listen yet. A refused
    password is final at once."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        left = deadline - asyncio.get_running_loop().time()
        try:
            return await connect_once(url, user=user, password=password, timeout=max(left, 0.5), name=name,
                                      tls=tls, tls_handshake_first=tls_handshake_first)
        except ConnectError as error:
            if str(error).startswith("authorization violation") or left <= 1:
                raise
        await asyncio.sleep(0.5)
