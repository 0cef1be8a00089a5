"""Helpers every suite shares. (The conftest.py files under tests/ hold the fixtures.)"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from nats_fly.config.settings import DEFAULT_NATS_VERSION
from nats_fly.processes import tools

REPO = Path(__file__).resolve().parents[2]  # tests/kit/support.py: the kit is installed editable

ALONE = {"2.12.8": "JetStream has not established contact with a meta leader",
         "2.15.0": "JetStream is still recovering meta layer"}
"""What a JetStream server's plain /healthz says while it has no meta leader, by release."""


def nats_server_binary(version: str = DEFAULT_NATS_VERSION) -> str:
    """nats-server `version` (the stacks' default unless given) from the tools cache, as the local platform
    runs it."""
    try:
        return str(tools.nats_server(version))
    except tools.ToolError as error:
        pytest.fail(str(error))


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


def managed_servers(root: Path, cluster: str | None = None) -> dict[int, str]:
    """pid -> "cluster/server" of the local platform's nats-server processes run from the project in
    `root` (of one cluster), found by the pid file each names in its command line."""
    found = {}
    for pid in nats_servers(str(root)):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if "--pid" not in argv[:-1]:
            continue
        pid_file = Path(argv[argv.index("--pid") + 1])
        if cluster is None or pid_file.parent.parent.name == cluster:
            found[pid] = f"{pid_file.parent.parent.name}/{pid_file.stem}"
    return found


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


def ca_signed_pair(folder: Path, ip: str = "127.0.0.1") -> tuple[Path, str, str]:
    """A test CA (its certificate file) and a certificate for `ip` it signed, with its key (PEM texts),
    made by openssl."""
    import subprocess
    folder.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=folder, timeout=60)

    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
            "-subj", "/CN=nats-fly test CA", "-keyout", "ca.key", "-out", "ca.pem")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", f"/CN={ip}",
            "-keyout", "server.key", "-out", "server.csr")
    (folder / "san.ext").write_text(f"subjectAltName = IP:{ip}\nextendedKeyUsage = serverAuth\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", "san.ext", "-out", "server.pem")
    return folder / "ca.pem", (folder / "server.pem").read_text(), (folder / "server.key").read_text()


def jetstream_confs(root: Path, count: int = 3, cluster: str = "js-test") -> list[tuple[str, dict, int, int]]:
    """`count` JetStream servers routed to each other on loopback, as (name, conf in natsconf's JSON
    form for localrun.ensure, client port, monitor port); their stores under `root`."""
    ports = free_ports(3 * count)
    routes = ports[1::3]
    servers = []
    for i in range(count):
        client, cluster_port, http = ports[3 * i:3 * i + 3]
        name = f"js{i}"
        conf = {"server_name": name, "listen": f"127.0.0.1:{client}", "http": f"127.0.0.1:{http}",
                "jetstream": {"store_dir": str(root / name), "max_file_store": 64 * 1024**2,
                              "max_memory_store": 16 * 1024**2},
                "cluster": {"name": cluster, "listen": f"127.0.0.1:{cluster_port}",
                            "routes": [f"nats-route://127.0.0.1:{p}" for p in routes if p != cluster_port]}}
        servers.append((name, conf, client, http))
    return servers


async def exchange(publisher, subscriber, subject: str, messages: Sequence[bytes], timeout: float = 60) -> list[bytes]:
    """`messages` published by one nats-py connection, as another heard them. A probe goes first,
    again and again until it arrives (interest crosses routes, gateways and leaf connections a
    moment after a subscribe), then the messages, then an end marker until it arrives: one
    connection's messages keep their order, so what had not arrived by the marker was lost, not late."""
    token = secrets.token_hex(6)
    probe, end = f"probe {token}".encode(), f"end {token}".encode()
    got: list[bytes] = []
    arrived = {probe: asyncio.Event(), end: asyncio.Event()}

    async def on_message(msg):
        if msg.data in arrived:
            arrived[msg.data].set()
        else:
            got.append(msg.data)
    sub = await subscriber.subscribe(subject, cb=on_message)
    await subscriber.flush()
    try:
        await until_heard(publisher, subject, probe, arrived[probe], timeout)
        for data in messages:
            await publisher.publish(subject, data)
        await until_heard(publisher, subject, end, arrived[end], timeout)
    finally:
        await sub.unsubscribe()
    return got


async def until_heard(publisher, subject: str, data: bytes, heard: asyncio.Event, timeout: float) -> None:
    """Publish `data` again and again until `heard` is set (by the subscriber's callback)."""
    deadline = time.monotonic() + timeout
    while not heard.is_set():
        assert time.monotonic() < deadline, f"nothing published on {subject} arrived within {timeout:g}s"
        await publisher.publish(subject, data)
        await publisher.flush()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(heard.wait(), 0.25)


async def answered(call, timeout: float = 120):
    """`await call()` again until it returns: a JetStream API call a moment after a start, or during
    an election, answers `503 JetStream system temporarily unavailable`, or nothing, for a while.
    Past `timeout` the last error is raised."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await call()
        except Exception:  # noqa: BLE001 (nats-py raises many kinds for "not now")
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.25)
