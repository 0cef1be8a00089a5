"""The local platform closed as Fly is, with the real engine and real servers: a local stack with
`auth: password` (the default), attacked from this machine.

- A rogue nats-server with a route to a cluster port (no credentials, or wrong ones) is refused, and
  an anonymous client on it receives nothing that a logged-in user publishes.
- The same for a rogue gateway to a supercluster's gateway port.
- After changes that reload (a region more) and restart (the topology: gateways), no file under the
  stack's work folder holds the system password; none but a server's own conf (owner only) holds the
  route password or a client user's password (filled in there so that a password change is a reload);
  and every folder and file there is readable by its owner only."""

from __future__ import annotations

import asyncio
import socket
import stat
import subprocess
import time
from pathlib import Path

import nats
import pytest

from nats_fly.render.secrets import route_password
from nats_fly.processes.verify import Expectation, verify
from nats_fly_testkit.support import exchange, free_ports, nats_server_binary, until_heard

SYS = "closed-sys-password-91"
USERS = {"app": "closed-app-password-1", "ops": "closed-ops-password-2"}


@pytest.fixture
def stack(project):
    stack = project("local")
    stack.config({"auth": "password", "users": list(USERS), "verify": True})
    stack.pulumi("config", "set", "--secret", "sysPassword", stdin=SYS)
    for user, password in USERS.items():
        stack.pulumi("config", "set", "--secret", "--path", f"userPasswords.{user}", stdin=password)
    yield stack
    stack.pulumi("destroy", "--yes", "--skip-preview", check=False)


def rogue(tmp_path: Path, name: str, block: str) -> subprocess.Popen:
    client, http = free_ports(2)
    conf = tmp_path / f"{name}.conf"
    # Its anonymous clients land in an account named as ours (APP), where our users' messages live.
    conf.write_text(f"server_name: {name}\nlisten: 127.0.0.1:{client}\nhttp: 127.0.0.1:{http}\n"
                    f"accounts {{ APP {{ users: [{{user: spy}}] }} }}\nno_auth_user: spy\n{block}\n")
    log = open(tmp_path / f"{name}.log", "w")
    proc = subprocess.Popen([nats_server_binary(), "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15
    while True:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", client)) == 0:
                break
        assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / f"{name}.log").read_text()
        time.sleep(0.05)
    proc.client_port = client  # type: ignore[attr-defined]
    proc.log_path = tmp_path / f"{name}.log"  # type: ignore[attr-defined]
    return proc


def refused(server: subprocess.Popen, timeout: float = 60) -> None:
    """Until the rogue's log shows our server refusing its route or gateway: it has tried."""
    deadline = time.monotonic() + timeout
    while "authorization" not in server.log_path.read_text().lower():
        assert server.poll() is None and time.monotonic() < deadline, server.log_path.read_text()[-2000:]
        time.sleep(0.1)


async def overheard(rogue_port: int, cluster_url: str, subject: str, admitted: bool) -> list[bytes]:
    """What a spy on the rogue server hears of 20 messages a user publishes on the cluster, counted once a
    witness on the cluster has heard them all and the end marker (exchange): not a moment to wait, but the
    proof that the messages went round. For the admitted control, the spy first hears a probe: interest
    crossed the rogue's route."""
    heard: list[bytes] = []
    probe, arrived = b"probe", asyncio.Event()

    async def spied(msg) -> None:
        if msg.data == probe:
            arrived.set()
        else:
            heard.append(msg.data)

    spy = await nats.connect(f"nats://127.0.0.1:{rogue_port}", allow_reconnect=False)
    user = await nats.connect(cluster_url, user="app", password=USERS["app"], allow_reconnect=False)
    witness = await nats.connect(cluster_url, user="ops", password=USERS["ops"], allow_reconnect=False)
    try:
        await spy.subscribe(subject, cb=spied)
        await spy.flush()
        if admitted:
            await until_heard(user, subject.replace(">", "probe"), probe, arrived, timeout=60)
        messages = [f"secret-{i}".encode() for i in range(20)]
        got = await exchange(user, witness, subject.replace(">", "x"), messages)
        assert got == messages, f"the witness on the cluster heard {len(got)}/20: the test could not tell"
        await spy.flush()
        return [m for m in heard if m.startswith(b"secret-")]
    finally:
        for nc in (spy, user, witness):
            await nc.close()


def listens(server, url: str, admitted: bool, rogue_words: str, control_words: str) -> None:
    """A stranger's server joined to the cluster: refused, it hears nothing of what is published at `url`;
    the control (admitted) hears all 20, or the test could not tell. The server is stopped either way."""
    try:
        if not admitted:
            refused(server)
        heard = asyncio.run(overheard(server.client_port, url, "orders.>", admitted))
        if admitted:
            assert len(heard) == 20, f"{control_words} heard {len(heard)}/20: the test could not tell"
        else:
            assert heard == [], f"{rogue_words} heard {heard}"
    finally:
        server.terminate()
        server.wait(10)


def test_local_routes_and_gateways_refuse_strangers_and_keep_secrets_out_of_files(stack, tmp_path):
    stack.pulumi("up", "--yes", "--skip-preview")
    work = stack.root / ".nats-fly" / "e2e" / "nats"
    conf = (work / "local" / "ord-0.conf").read_text()
    cluster_listen = [line for line in conf.split("cluster {")[1].splitlines() if "listen" in line][0]
    cluster_port = int(cluster_listen.split(":")[-1].strip().strip('"'))
    url = stack.outputs()["clientUrl"]

    # The control first: with the route password, such a server would hear everything.
    attempts = [("with-the-password", f"route:{route_password('nats-local', SYS)}@", True),
                ("no-creds", "", False), ("wrong-creds", "route:not-the-password@", False)]
    for name, creds, admitted in attempts:
        server = rogue(tmp_path, name, f'cluster {{ name: nats-local, listen: "127.0.0.1:{free_ports(1)[0]}", '
                                       f'routes: ["nats-route://{creds}127.0.0.1:{cluster_port}"] }}')
        listens(server, url, admitted, f"{name}: the rogue server", "the control")

    # A region more (routes reload) and the supercluster topology (gateways: a restart).
    stack.config({"regions": ["ord", "syd", "cdg", "lhr"]})
    stack.pulumi("up", "--yes", "--skip-preview")
    stack.config({"topology": "supercluster"})
    stack.pulumi("up", "--yes", "--skip-preview")
    outputs = stack.outputs()
    urls = outputs["clientUrls"]
    report = asyncio.run(verify(urls, Expectation(regions=outputs["machines"], topology="supercluster"),
                                user="sys", password=SYS, timeout=30))
    assert report.ok, report.table()

    conf = (work / "local" / "ord-0.conf").read_text()
    gateway_listen = [line for line in conf.split("gateway {")[1].splitlines() if "listen" in line][0]
    gateway_port = int(gateway_listen.split(":")[-1].strip().strip('"'))
    # A cluster of its own (a gateway named as ours would be its own, and never dial), with the control first.
    for name, creds, admitted in attempts:
        server = rogue(tmp_path, f"gateway-{name}", f'gateway {{ name: rogue, listen: "127.0.0.1:{free_ports(1)[0]}", '
                                                    f'gateways: [{{name: ord, urls: ["nats://{creds}127.0.0.1:{gateway_port}"]}}] }}')
        listens(server, urls["ord"], admitted, f"{name}: the rogue gateway", "the gateway control")

    route = route_password("nats-local", SYS)
    for path in sorted(work.rglob("*")):
        mode = path.stat().st_mode
        assert mode & (stat.S_IRWXG | stat.S_IRWXO) == 0, (path, oct(mode))
        if not path.is_file():
            continue
        text = path.read_bytes().decode(errors="replace")
        assert SYS not in text, (path, "holds the system password")
        if path.name.endswith(".conf"):  # a server's own conf: what it must be able to reload
            continue
        for secret in (route, *USERS.values()):
            assert secret not in text, (path, "holds a secret only a server's conf may hold")
    logs = "".join(p.read_text(errors="replace") for p in (work / "local").glob("*.log"))
    assert "Failed to reload" not in logs
