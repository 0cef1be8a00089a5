"""The entrypoint under busybox sh (the alpine image's shell): what it exports makes the rendered
conf valid for nats-server, whatever digits a Machine id or a secret starts with."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from nats_fly_testkit.standin.launch import default_signals  # a test run under nohup has SIGHUP ignored
from nats_fly_testkit.support import REPO, free_ports, nats_server_binary
from nats_fly.render import buildctx
from nats_fly.contract import flyctl
from nats_fly.config.settings import load

BUSYBOX = shutil.which("busybox") or "/bin/busybox"


@pytest.mark.parametrize("topology", ["mesh", "supercluster"])
def test_entrypoint_exports_make_the_conf_valid(tmp_path, topology):
    if not Path(BUSYBOX).exists():
        pytest.fail("busybox is missing: apt-get install busybox-static (scripts/test installs it)")
    s = load({"app": "my-nats", "regions": ["ord", "syd"], "topology": topology, "users": ["app", "bob"],
              "leafnodes": True, "leafUsers": ["edge"]})
    context = buildctx.write(buildctx.build_context(s), tmp_path / "ctx")
    key, cert = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-days", "1", "-subj", "/CN=t", "-keyout", key, "-out", cert], check=True, capture_output=True)
    tls_dir = tmp_path / "tls"
    env = {
        "PATH": f"{Path(nats_server_binary()).parent}:/usr/bin:/bin",
        "FLY_APP_NAME": "my-nats", "FLY_REGION": "syd", "FLY_MACHINE_ID": "4e4ac1d2e3f4a5",
        "FLY_PRIVATE_IP": "fdaa:0:1::2", "NATS_PEER_WAIT": "0", "NATS_TOPOLOGY": topology,
        "NATS_CLUSTER_PORT": "4248", "NATS_GATEWAY_PORT": "7222", "NATS_FLY_TLS_DIR": str(tls_dir),
        **fly_secrets({"NATS_SYS_PASSWORD": '1234567890 "x" \\ y', "NATS_ROUTE_PASSWORD": "1e5f" * 16,
                       "NATS_PASSWORD_APP": "0042", "NATS_PASSWORD_BOB": "3e3", "NATS_LEAF_PASSWORD_EDGE": "7e7",
                       "NATS_TLS_CERT": cert.read_text(), "NATS_TLS_KEY": key.read_text()}),
    }
    result = subprocess.run([BUSYBOX, "sh", str(context / "entrypoint.sh"), "sh", "-c",
                             f'nats-server -t -c {context / "nats.conf"} && env'],
                            env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is valid" in result.stderr + result.stdout
    exported = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    assert exported["NATS_SERVER_NAME"] == '"syd-4e4ac1d2e3f4a5"'
    assert exported["NATS_CLUSTER_ADVERTISE"] == '"4e4ac1d2e3f4a5.vm.my-nats.internal:4248"'
    peers = "syd.my-nats.internal" if topology == "supercluster" else "my-nats.internal"
    assert exported["NATS_ROUTES"] == f'["nats-route://route:{"1e5f" * 16}@{peers}:4248"]'
    assert exported["NATS_PASSWORD_BOB"] == '"3e3"' and exported["NATS_LEAF_PASSWORD_EDGE"] == '"7e7"'
    assert exported["NATS_SYS_PASSWORD"] == '"1234567890 \\"x\\" \\\\ y"'
    assert "NATS_TLS_KEY" not in exported and not [k for k in exported if k.endswith("_B64")]
    assert (tls_dir / "key.pem").read_text() == key.read_text()
    assert oct((tls_dir / "key.pem").stat().st_mode & 0o777) == "0o600"


# --- the island guard's decisions, against a scripted resolver --------------------------------------
# The fake nslookup prints what busybox nslookup prints (checked against the real one on the Fly
# stand-in's DNS by tests/flystandin/fly): "Name:" then "Address: <ip>" lines for AAAA, and `text = "<first
# string>"` for TXT. Names it does not know fail, as NXDOMAIN does. busybox sh runs its own applets
# before PATH, so these runs use dash (an ash too) with busybox's applets for every other tool.

FAKE_NSLOOKUP = r"""#!/bin/dash
type=$1 name=$2
file="$FAKE_DNS/${type#-type=}/$name"
[ -f "$file" ] || { echo "** server can't find $name: NXDOMAIN" >&2; exit 1; }
printf 'Server:\t\tfdaa::3\nAddress:\tfdaa::3:53\n\n'
if [ "${type#-type=}" = TXT ]; then
  printf '%s\ttext = "%s"\n' "$name" "$(cat "$file")"
else
  while read -r ip; do printf 'Name:\t%s\nAddress: %s\n' "$name" "$ip"; done < "$file"
fi
"""
ME, ME_IP = "4e4ac1d2e3f4a5", "fdaa:0:1::2"
DASH = shutil.which("dash") or "/bin/dash"


def guard(tmp_path, topology: str, records: dict[tuple[str, str], str], peer_wait: int = 5,
          later: tuple[tuple[float, dict[tuple[str, str], str]], ...] = ()) -> tuple[str, dict, float]:
    """Run the entrypoint as Machine ME in syd with `records` ((type, name) -> text) in DNS, and
    `later`: (seconds, records) written while it runs; -> (its console, what it exported, seconds)."""
    s = load({"app": "my-nats", "regions": ["syd", "ord"], "topology": topology})
    context = buildctx.write(buildctx.build_context(s), tmp_path / "ctx")
    bin_dir, dns_dir = tmp_path / "bin", tmp_path / "dns"
    bin_dir.mkdir()
    for tool in ("awk", "cat", "date", "echo", "env", "grep", "mkdir", "printf", "sed", "sleep", "sort", "tr"):
        (bin_dir / tool).symlink_to(BUSYBOX)
    (bin_dir / "nslookup").write_text(FAKE_NSLOOKUP)
    (bin_dir / "nslookup").chmod(0o755)
    def publish(given: dict[tuple[str, str], str]) -> None:
        for (rtype, name), text in given.items():
            (dns_dir / rtype).mkdir(parents=True, exist_ok=True)
            (dns_dir / rtype / f".{name}").write_text(text + "\n")
            (dns_dir / rtype / f".{name}").rename(dns_dir / rtype / name)
    publish(records)
    timers = [threading.Timer(at, publish, (given,)) for at, given in later]
    env = {"PATH": str(bin_dir), "FAKE_DNS": str(dns_dir), "FLY_APP_NAME": "my-nats",
           "FLY_REGION": "syd", "FLY_MACHINE_ID": ME, "FLY_PRIVATE_IP": ME_IP, "NATS_TOPOLOGY": topology,
           "NATS_PEER_WAIT": str(peer_wait), "NATS_ROUTE_PASSWORD": "r" * 64, "NATS_TLS_CERT": "c",
           "NATS_TLS_KEY": "k", "NATS_FLY_TLS_DIR": str(tmp_path / "tls")}
    started = time.monotonic()
    for timer in timers:
        timer.start()
    try:
        result = subprocess.run([DASH, str(context / "entrypoint.sh"), "env"], env=env,
                                capture_output=True, text=True, timeout=60)
    finally:
        for timer in timers:
            timer.cancel()
    took = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    console = "\n".join(line for line in result.stdout.splitlines() if line.startswith("nats-fly: "))
    exported = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    return console, exported, took


def route_hosts(exported: dict) -> list[str]:
    return re.findall(r"@(\[[^\]]+\]|[^:\"]+):4248", exported["NATS_ROUTES"])


def test_mesh_seeds_every_peer_of_the_app_name_but_itself(tmp_path):
    console, exported, _ = guard(tmp_path, "mesh", {
        ("AAAA", "my-nats.internal"): f"{ME_IP}\nfdaa:0:2::2\nfdaa:0:1::3",
        ("TXT", "regions.my-nats.internal"): "ord,syd",  # not needed: the answer is far from full
    })
    assert "peers at my-nats.internal after 0s" in console, console
    assert route_hosts(exported) == ["[fdaa:0:1::3]", "[fdaa:0:2::2]"]


def test_mesh_answer_that_may_be_cut_short_is_completed_region_by_region(tmp_path):
    """15 addresses fill a 512-byte UDP answer: the rest of the app's Machines come from its regions."""
    ords = [f"fdaa:0:2::{i:x}" for i in range(2, 22)]  # 20 in ord
    console, exported, _ = guard(tmp_path, "mesh", {
        ("AAAA", "my-nats.internal"): "\n".join([ME_IP] + ords[:14]),  # what fit
        ("TXT", "regions.my-nats.internal"): "ord,syd",
        ("AAAA", "ord.my-nats.internal"): "\n".join(ords[:16]),  # a region's answer can be cut short too
        ("AAAA", "syd.my-nats.internal"): f"{ME_IP}\nfdaa:0:1::3",
    })
    assert "peers at my-nats.internal after 0s" in console, console
    assert sorted(route_hosts(exported)) == sorted(f"[{a}]" for a in ords[:16] + ["fdaa:0:1::3"])


@pytest.mark.parametrize("topology,vms", [
    ("mesh", f"{ME} syd"),  # a dev stack's one Machine, or a first deploy
    ("supercluster", f"0a0b0c0d0e0f10 ord,{ME} syd,1b2b3b4b5b6b7b ord"),  # a region of one
])
def test_the_only_machine_in_reach_starts_after_the_settle_time_not_peer_wait(tmp_path, topology, vms):
    console, exported, took = guard(tmp_path, topology, {("TXT", "all.vms.my-nats.internal"): vms,
                                                         ("TXT", "regions.my-nats.internal"): "syd",
                                                         ("AAAA", "syd.my-nats.internal"): ME_IP}, peer_wait=20)
    assert "the only Machine" in console and "waiting up to" not in console, console
    assert 5 <= took < 12  # it asks again for 5 s (DNS propagation); peerWait would be 20 s
    peers = "syd.my-nats.internal" if topology == "supercluster" else "my-nats.internal"
    assert route_hosts(exported) == [peers]


@pytest.mark.parametrize("topology,why,vms", [
    ("supercluster", "a region-mate exists (stopped, or not started yet)", f"{ME} syd,0a0b0c0d0e0f10 syd"),
    ("mesh", "another Machine exists, in another region", f"{ME} syd,0a0b0c0d0e0f10 ord"),
    ("supercluster", "the answer predates us", "0a0b0c0d0e0f10 ord"),
    ("supercluster", "no answer", None),
    ("supercluster", "only the first 255 characters are readable",
     ",".join([f"{ME} syd"] + [f"{i:014x} ord" for i in range(14)])),
])
def test_anything_short_of_certainty_waits_for_a_peer(tmp_path, topology, why, vms):
    records = {("AAAA", "syd.my-nats.internal"): ME_IP, ("AAAA", "my-nats.internal"): ME_IP}
    if vms is not None:
        records[("TXT", "all.vms.my-nats.internal")] = vms[:255]
    console, _, took = guard(tmp_path, topology, records, peer_wait=1)
    peers = "syd.my-nats.internal" if topology == "supercluster" else "my-nats.internal"
    assert f"waiting up to 1s" in console and f"no peer at {peers} after 1s" in console, (why, console)


def test_a_machine_made_alongside_that_dns_shows_late_ends_the_settle_and_is_waited_for(tmp_path):
    """Alone by all.vms at first; 2 s later a region-mate made with us shows up there, and at 8 s (past
    the settle time) in AAAA, once started: no island, it is waited for and seeded."""
    mate = "fdaa:0:1::9"
    console, exported, took = guard(
        tmp_path, "supercluster", {("TXT", "all.vms.my-nats.internal"): f"{ME} syd",
                                   ("AAAA", "syd.my-nats.internal"): ME_IP},
        peer_wait=20, later=((2, {("TXT", "all.vms.my-nats.internal"): f"{ME} syd,0a0b0c0d0e0f10 syd"}),
                             (8, {("AAAA", "syd.my-nats.internal"): f"{ME_IP}\n{mate}"})))
    assert "the only Machine" not in console and "waiting up to 20s" in console, console
    assert "peers at syd.my-nats.internal after" in console and 8 <= took < 15, (console, took)
    assert route_hosts(exported) == [f"[{mate}]"]


def fly_secrets(values: dict[str, str]) -> dict[str, str]:
    """The secrets as a Machine gets them: through flyctl.secrets_text and flyctl's import parser
    (here only split into lines: the encoding leaves the parser nothing to change)."""
    text = flyctl.secrets_text(values)
    pairs = dict(line.split("=", 1) for line in text.splitlines())
    assert all(re.fullmatch(r"[A-Za-z0-9+/=]*", v) for v in pairs.values()), text
    return pairs


NASTY = ['"quoted"', '""abc', 'a"#b', 'x # y', '"""', 'k=v=w', '  spaced  ', '$HOME ${X}', 'back\\slash\\',
         'grüße €', "'single'", '#start']


@pytest.mark.parametrize("value", NASTY)
def test_every_secret_reaches_the_server_byte_for_byte(tmp_path, value):
    """What nats-server makes of the exported variable is the password itself: checked by the real
    server, which logs a client in with it (see the Fly suite for the same through flyctl)."""
    env = {"PATH": "/usr/bin:/bin", **fly_secrets({"NATS_PASSWORD_APP": value, "NATS_ROUTE_PASSWORD": "r" * 64})}
    script = f"""set -eu
eval "$(sed -n '/^for name in/,/^unset encoded decoded/p' {REPO / 'nats/entrypoint.sh'})"
printf '%s' "$NATS_PASSWORD_APP"
"""
    result = subprocess.run([BUSYBOX, "sh", "-c", script], env=env, capture_output=True, timeout=10)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == value


# --- signals: Fly's kill_signal (SIGINT) becomes lame duck ---------------------------------------------

class Booted:
    """The entrypoint under busybox sh, running the real nats-server with the stack's conf."""

    def __init__(self, tmp_path: Path):
        client, monitor, cluster = free_ports(3)
        s = load({"app": "my-nats", "regions": ["syd"], "clientPort": client, "monitorPort": monitor,
                  "clusterPort": cluster, "lameDuckGracePeriod": "2s", "users": ["app"]})
        self.client_port, self.monitor_port = client, monitor
        context = buildctx.write(buildctx.build_context(s), tmp_path / "ctx")
        key, cert = tmp_path / "k.pem", tmp_path / "c.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-days", "1", "-subj", "/CN=t", "-keyout", key, "-out", cert],
                       check=True, capture_output=True)
        env = {"PATH": f"{Path(nats_server_binary()).parent}:/usr/bin:/bin", "FLY_APP_NAME": "my-nats",
               "FLY_REGION": "syd", "FLY_MACHINE_ID": "0e0d0c0b0a0908", "FLY_PRIVATE_IP": "fdaa:0:1::2",
               "NATS_PEER_WAIT": "0", "NATS_CLUSTER_PORT": str(cluster), "NATS_FLY_TLS_DIR": str(tmp_path / "tls"),
               **fly_secrets({"NATS_SYS_PASSWORD": "s" * 16, "NATS_ROUTE_PASSWORD": "r" * 64,
                              "NATS_PASSWORD_APP": "app-password", "NATS_TLS_CERT": cert.read_text(),
                              "NATS_TLS_KEY": key.read_text()})}
        self.log = open(tmp_path / "console.log", "w+")
        self.log_path = tmp_path / "console.log"
        # As Fly's init starts it: default signal dispositions, a session of its own.
        self.proc = subprocess.Popen([BUSYBOX, "sh", str(context / "entrypoint.sh"), "nats-server", "--config",
                                      str(context / "nats.conf")], env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=default_signals)
        deadline = time.monotonic() + 30
        while not self.healthy():
            assert self.proc.poll() is None and time.monotonic() < deadline, self.console()
            time.sleep(0.05)
        self.server = int(subprocess.run(["pgrep", "-P", str(self.proc.pid), "-x", "nats-server"],
                                         capture_output=True, text=True).stdout.split()[0])

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor_port}/healthz", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def console(self) -> str:
        return self.log_path.read_text(errors="replace")

    def state(self) -> str:
        """The entrypoint's and the server's state, for a failure's message."""
        def of(pid: int) -> str:
            try:
                return " ".join(line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                                if line.startswith(("State:", "SigPnd:", "ShdPnd:", "SigBlk:", "SigCgt:")))
            except OSError:
                return "gone"
        return f"entrypoint exit {self.proc.poll()}, {of(self.proc.pid)}; server {of(self.server)}"

    def alive(self, pid: int) -> bool:
        return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.log.close()


@pytest.fixture
def booted(tmp_path):
    if not Path(BUSYBOX).exists():
        pytest.fail("busybox is missing: apt-get install busybox-static (scripts/test installs it)")
    machine = Booted(tmp_path)
    yield machine
    machine.close()


def test_fly_kill_signal_puts_the_server_in_lame_duck_and_the_entrypoint_waits_for_it(booted):
    async def client_view() -> tuple[float, float, float]:
        import nats
        told, gone = asyncio.Event(), asyncio.Event()

        async def lame_duck():
            told.set()

        async def closed():
            gone.set()

        nc = await nats.connect(f"nats://127.0.0.1:{booted.client_port}", user="app", password="app-password",
                                allow_reconnect=False, lame_duck_mode_cb=lame_duck, closed_cb=closed,
                                disconnected_cb=closed)
        t0 = time.monotonic()
        os.kill(booted.proc.pid, signal.SIGINT)  # Fly's kill_signal, to the Machine's main process
        await asyncio.wait_for(told.wait(), 10)  # the server said so in INFO (ldm): clients go elsewhere
        told_at = time.monotonic() - t0
        await asyncio.sleep(1)
        assert booted.proc.poll() is None, "the entrypoint exited while its server was in lame duck"
        assert booted.alive(booted.server)
        await asyncio.wait_for(gone.wait(), 30)  # evicted after lame_duck_grace_period (2 s)
        evicted = time.monotonic() - t0
        if not nc.is_closed:
            await nc.close()
        return t0, told_at, evicted

    t0, told_at, evicted = asyncio.run(client_view())
    code = booted.proc.wait(40)
    exited = time.monotonic() - t0
    console = booted.console()
    assert "Entering lame duck mode" in console, console
    assert told_at < 1.5 and evicted >= 1.5, (told_at, evicted)  # the grace period passed first
    assert not booted.alive(booted.server) and code == 0, (code, console)
    assert exited >= evicted


def test_other_signals_are_passed_on_as_they_are(booted):
    os.kill(booted.proc.pid, signal.SIGHUP)  # reload
    deadline = time.monotonic() + 30  # a loaded machine: CI once saw no reload within 10 s
    while "Reloaded server configuration" not in booted.console():
        assert time.monotonic() < deadline, (booted.state(), booted.console())
        time.sleep(0.05)
    assert booted.proc.poll() is None and booted.alive(booted.server)
    os.kill(booted.proc.pid, signal.SIGTERM)
    code = booted.proc.wait(20)
    assert "Entering lame duck mode" not in booted.console()
    assert not booted.alive(booted.server)
    assert code == 0 and "Server Exiting" in booted.console(), (code, booted.console())


def test_the_entrypoint_exits_with_the_servers_status(booted):
    os.kill(booted.server, signal.SIGKILL)
    assert booted.proc.wait(10) == 128 + signal.SIGKILL
