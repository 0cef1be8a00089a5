"""The local platform's process manager: runs, reloads and stops nats-server processes.

Pulumi ``local.Command``s call it (``ensure`` on create and update, ``stop`` on delete, ``ports``
once per cluster), so every command is idempotent and a failed one leaves no process behind.
``ensure`` reads the server's conf as JSON data on stdin (nats_fly.natsconf's form: no secret in
it, only markers), fills in the secrets it names from the environment, and writes the conf file
itself. Each server has, in ``--state-dir`` (mode 0700; every file in it 0600): ``NAME.conf``,
``NAME.pid`` (written by nats-server), ``NAME.log`` (its stdout and stderr), ``NAME.applied.json``
(the conf data it runs, to compare with next time), ``NAME.json`` (what it was started with:
binary, ports, a digest of the environment the conf refers to, the repair token), ``NAME.lock``,
and the folder ``NAME/``: its JetStream store and TLS files (nats-server runs with the state
directory as its working directory, so the conf says ``store_dir: "NAME"``). ``stop`` removes them
all. A server is found by its pid file, else by its marker: the pid file's path in the command line
of the nats-server process, which outlives the file. Rootless: it needs only the state directory and
the ports the conf names.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
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
from typing import NamedTuple

from ..contract import operations as ops
from ..render import natsconf
from . import tools

HEALTH_PATH = "/healthz?js-server-only=true"
"""Plain /healthz stays 503 on a JetStream server until the meta group has a leader, which needs
its peers: a server started alone would never look healthy. This asks only "is the server up"."""

LAME_DUCK_WAIT = 15.0
"""Seconds a stop waits for lame duck mode to end before SIGTERM. nats-server refuses a
lame_duck_duration under 30s, but a server without clients or JetStream exits at once; otherwise
it waits lame_duck_grace_period, then closes its clients at most a second apart. Local confs
therefore want a short grace period."""
CURRENT_WAIT = 120.0
"""Seconds a restarted JetStream server may take to be current again (plain /healthz) before the roll stops."""
RELOAD_WAIT = 5.0
STOP_TERM_WAIT = 5.0
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# What nats-server 2.12 applies on SIGHUP without dumping the old and new options to its log (a
# refused reload prints them, credentials included): anything else restarts the server instead.
RELOADABLE = ("cluster.routes", "accounts", "max_connections")
MOVE_WAIT = LAME_DUCK_WAIT + 2 * STOP_TERM_WAIT
"""Seconds a start waits for another server of its cluster to leave a port (its own Command is moving
it: a changed layout), as long as that server's stop may take."""


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

    @property
    def own_dir(self) -> Path:
        """Its JetStream store and TLS files (the conf's store_dir, relative to the state directory)."""
        return self.state_dir / self.name

    def files(self) -> list[Path]:
        return [self.conf_file, self.pid_file, self.log_file, self.applied_conf, self.state_file, self.lock_file,
                self._file(".conf.new")]

    def legacy_store(self, given_state_dir: Path) -> Path | None:
        """Where earlier versions kept the JetStream store: the conf named the store by the state directory's
        path relative to the project, which nats-server resolved inside the state directory."""
        return None if given_state_dir.is_absolute() else self.state_dir / given_state_dir / self.name


def running_pid(server: Server) -> int | None:
    """The pid of this server's live nats-server, or None: from its pid file, else by its marker (the
    pid file and its folder can be deleted while the server runs)."""
    try:
        pid = int(server.pid_file.read_text().strip())
    except (OSError, ValueError):
        pid = None
    if pid is not None and is_ours(pid, server):
        return pid
    return next((found for found, argv in nats_server_processes() if str(server.pid_file) in argv), None)


def is_ours(pid: int, server: Server) -> bool:
    """A pid file can outlive its process and the pid be reused, so a pid is this server's
    only while /proc shows a nats-server started with its pid file (a zombie has no cmdline)."""
    argv = _argv(pid)
    return bool(argv) and Path(argv[0]).name == "nats-server" and str(server.pid_file) in argv


def _argv(pid: int | str) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def nats_server_processes() -> Iterator[tuple[int, list[str]]]:
    """(pid, argv) of every nats-server process this user can see."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            argv = _argv(entry)
            if argv and Path(argv[0]).name == "nats-server":
                yield int(entry), argv


def server_of(argv: list[str]) -> Server | None:
    """The managed server a nats-server command line belongs to (its `--pid` file names it)."""
    if "--pid" not in argv[:-1]:
        return None
    pid_file = Path(argv[argv.index("--pid") + 1])
    return Server(pid_file.stem, pid_file.parent) if pid_file.suffix == ".pid" else None


def port_holder(port: int) -> int | None:
    """The pid of the process listening on `port` (any local address), when this user can see it."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                    inodes.add(f"socket:[{fields[9]}]")
    for entry in filter(str.isdigit, os.listdir("/proc") if inodes else []):
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{entry}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{entry}/fd/{fd}") in inodes:
                        return int(entry)
    return None


def describe_process(pid: int | None) -> str:
    if pid is None:
        return "another process"
    argv = _argv(pid)
    owner = server_of(argv) if argv and Path(argv[0]).name == "nats-server" else None
    if owner is not None:
        return f"nats-server {owner.name} of {owner.state_dir} (pid {pid})"
    return f"pid {pid} ({Path(argv[0]).name if argv else 'gone'})"


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
    conf = natsconf.from_json(data)
    missing = sorted(name for name in natsconf.Secret.names(data) if not os.environ.get(name))
    if missing:
        raise LocalRunError(f"the conf needs {', '.join(missing)} in the environment, which lacks it")
    # The environment holds each value as nats-server reads a $VARIABLE: a quoted conf string.
    values = {name: natsconf.conf_string_value(os.environ[name]) for name in natsconf.Secret.names(data)}
    return natsconf.render(natsconf.Secret.fill(conf, values))


# Vars a conf refers to that name a file: localrun writes the file from another variable of its
# environment (as the entrypoint does on Fly), into the server's own folder, and gives nats-server the path.
FILE_VARS = {"NATS_TLS_CERT_FILE": ("NATS_TLS_CERT", "cert.pem"), "NATS_TLS_KEY_FILE": ("NATS_TLS_KEY", "key.pem")}
"""var -> (the variable holding the file's content, the file's name in the server's folder)."""


STORE = "JetStream store"


def needed(server: Server, conf: dict | None) -> dict[str, Path]:
    """What a server running `conf` needs in its own folder besides its files: the files the conf names
    by variable (written by ensure) and its JetStream store (nats-server makes it at start only)."""
    if not conf:
        return {}
    needs = {FILE_VARS[var][1]: server.own_dir / FILE_VARS[var][1]
             for var in sorted(natsconf.environment_names(conf) & FILE_VARS.keys())}
    jetstream = conf.get("jetstream")
    if isinstance(jetstream, dict) and isinstance(jetstream.get("store_dir"), str):
        needs[STORE] = server.state_dir / jetstream["store_dir"] / "jetstream"
    return needs


def certificate_file(state_dir: Path, name: str) -> Path:
    """Where a server's TLS certificate chain is written (what verify trusts)."""
    return Server(name, state_dir).own_dir / FILE_VARS["NATS_TLS_CERT_FILE"][1]


def server_environment(server: Server, conf: dict) -> dict[str, str]:
    """The environment nats-server runs with: localrun's own, the files the conf names written (0600, in
    the server's private folder) and their paths in place of their contents."""
    env = {k: v for k, v in os.environ.items() if k not in {source for source, _ in FILE_VARS.values()}}
    for var in sorted(natsconf.environment_names(conf) & FILE_VARS.keys()):
        source, file_name = FILE_VARS[var]
        text = os.environ.get(source)
        if not text:
            raise LocalRunError(f"the conf needs {source} in the environment, which lacks it")
        path = private_dir(server.own_dir) / file_name
        write_private(path, text if text.endswith("\n") else text + "\n")
        env[var] = natsconf.conf_string(str(path))
    return env


def validate_conf(binary: Path, server: Server, conf: Path, env: dict[str, str]) -> None:
    test = subprocess.run([str(binary), "-t", "-c", str(conf)], capture_output=True, text=True, timeout=30,
                          env=env, cwd=server.state_dir)
    if test.returncode != 0:
        raise LocalRunError(f"the conf for {server.name} is invalid: {(test.stderr or test.stdout).strip()}")


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


def claim_port(server: Server, what: str, port: int) -> None:
    """Return once `port` is free for `server`: another server of its cluster still on it (a changed
    layout, which that server's own Command is moving) is waited for; anyone else is refused by name."""
    if not port_in_use(port):
        return
    holder = port_holder(port)
    owner = server_of(_argv(holder)) if holder is not None else None
    if owner is not None and owner.state_dir == server.state_dir and owner.name != server.name:
        deadline = time.monotonic() + MOVE_WAIT
        while port_in_use(port) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not port_in_use(port):
            return
    raise LocalRunError(f"{what} port {port} on 127.0.0.1 is in use by {describe_process(holder)}; "
                        f"{server.name} was not started")


def start(server: Server, binary: Path, client_port: int, http_port: int, wait: float,
          env: dict[str, str] | None = None) -> int:
    for what, port in (("client", client_port), ("http", http_port)):
        claim_port(server, what, port)
    server.pid_file.unlink(missing_ok=True)
    fd = os.open(server.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.chmod(server.log_file, 0o600)
    with os.fdopen(fd, "ab") as log:
        process = subprocess.Popen(
            [str(binary), "-c", str(server.conf_file), "--pid", str(server.pid_file)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True, cwd=server.state_dir, env=env,
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


def wait_current(server: Server, pid: int, http_port: int, wait: float) -> None:
    """Return once the restarted server's JetStream is current again (plain /healthz: a meta leader, and
    every stream and consumer replica it holds caught up), so that the next server of the roll goes only
    then (its Command depends on this one's). A server restarted into a running cluster gets there; one
    that does not within `wait` fails the roll here, with the servers after it left as they are."""
    deadline = time.monotonic() + wait
    status, body = None, b""
    while time.monotonic() < deadline:
        if not alive(pid, server):
            raise LocalRunError(f"{server.name}: nats-server exited while catching up after its restart; last "
                                f"lines of {server.log_file}:\n{log_tail(server)}")
        with contextlib.suppress(OSError):
            status, body = http_get(http_port, "/healthz")
            if status == 200:
                return
        time.sleep(0.1)
    said = body.decode(errors="replace").strip() or "no answer"
    raise LocalRunError(f"{server.name}: restarted, but its JetStream was not current within {wait:g}s (/healthz "
                        f"{status}: {said}); the servers after it were left as they are")


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
           generation: str = "0", nats_version: str = ops.UNVERSIONED) -> dict:
    """Make NAME run `conf` (natsconf's JSON form) on nats-server `nats_version`: start it, reload it,
    restart it, or leave it be. A server found running by its marker alone (its files deleted) is
    adopted: restarted when what it was started with is unknown, else given its pid file back. Returns
    the JSON line."""
    server = Server(check_name(name), state_dir.resolve())
    binary = tools.nats_server(nats_version)
    text = conf_text(conf)
    wanted = {"version": nats_version, "client_port": client_port, "http_port": http_port,
              "environment": environment_digest(conf)}
    try:
        with locked(server):
            env = server_environment(server, conf)
            staged = server._file(".conf.new")
            write_private(staged, text)
            try:
                validate_conf(binary, server, staged, env)
            except LocalRunError:
                staged.unlink(missing_ok=True)
                raise
            pid = running_pid(server)
            before, applying = _read_json(server.applied_conf) or {}, comparable(conf)
            action, rolling = ("started", False) if pid is None else \
                _keep_or_stop(server, pid, applying, wanted, staged, http_port)
            if staged.exists():
                os.replace(staged, server.conf_file)
            if action in ("started", "restarted"):
                _adopt_legacy_store(server, state_dir)
                pid = _start_or_forget(server, binary, client_port, http_port, wait, env)
            write_private(server.applied_conf, json.dumps(applying))
            write_private(server.state_file, json.dumps({**wanted, "generation": generation}))
            if rolling and "jetstream" in before and "jetstream" in conf:
                wait_current(server, pid, http_port, CURRENT_WAIT)
    except BaseException:
        if running_pid(server) is None and not server.state_file.exists():
            server.lock_file.unlink(missing_ok=True)  # a first start that failed: no empty folders stay behind
            _remove_folders(server, leftovers=False)
        raise
    scheme = "tls" if "tls" in conf else "nats"  # with a tls block (and no allow_non_tls) clients must use it
    return {"name": name, "pid": pid, "client_url": f"{scheme}://127.0.0.1:{client_port}", "action": action}


def _keep_or_stop(server: Server, pid: int, conf: dict, wanted: dict, staged: Path,
                  http_port: int) -> tuple[str, bool]:
    """For a running server: leave it be, reload it, or stop it to be started again (`conf` as `comparable`
    makes it, to be compared with the applied one). Returns the action, and whether it is a restart for a
    change (one step of a roll), not a repair (its files or its store gone)."""
    applied = _read_json(server.applied_conf)
    state = _read_json(server.state_file) or {}
    started_with = {k: state.get(k) for k in wanted}
    action = "restarted"
    store = needed(server, conf).get(STORE)
    repair = not state or (store is not None and not store.is_dir())
    if started_with != wanted:
        why = "changed: " + ", ".join(key for key in wanted if started_with.get(key) != wanted[key])
    elif store is not None and not store.is_dir():
        why = "its JetStream store is gone"
    elif applied == conf:
        why, action = None, "unchanged"
    elif applied is not None and reloadable(applied, conf):
        os.replace(staged, server.conf_file)
        why, action = reload(server, pid, http_port), "reloaded"
    else:
        changed = sorted(changed_paths(applied or {}, conf))
        why = "not reloadable: " + ", ".join(changed[:6]) + ("..." if len(changed) > 6 else "")
    if why is not None:
        print(f"{server.name}: restarting: {why}", file=sys.stderr)
        terminate(pid, server, lame_duck_wait=LAME_DUCK_WAIT)
        return "restarted", not repair
    if not is_ours(_read_pid(server.pid_file), server):
        write_private(server.pid_file, str(pid))  # found by its marker: its pid file back
    return action, False


def _start_or_forget(server: Server, binary: Path, client_port: int, http_port: int, wait: float,
                     env: dict[str, str]) -> int:
    try:
        return start(server, binary, client_port, http_port, wait, env)
    except BaseException:
        for path in (server.applied_conf, server.state_file, server.lock_file, server.conf_file):
            path.unlink(missing_ok=True)  # nothing runs: only the log stays, to be read
        for _, file_name in FILE_VARS.values():
            (server.own_dir / file_name).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            server.own_dir.rmdir()
        raise


def _read_pid(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return 0


def _adopt_legacy_store(server: Server, given_state_dir: Path) -> None:
    """A JetStream store an earlier version kept at its doubled path moves to the server's own folder."""
    legacy = server.legacy_store(given_state_dir)
    if legacy is not None and (legacy / "jetstream").is_dir() and not (server.own_dir / "jetstream").exists():
        private_dir(server.own_dir)
        os.replace(legacy / "jetstream", server.own_dir / "jetstream")


def environment_digest(conf: dict) -> str:
    """A digest of the environment variables the conf refers to as $NAME.

    A reload re-reads the file but not the environment, which the process got at its start:
    a changed value takes a restart. A variable that names a file counts by the file's content (a new
    certificate restarts the server too). Only the digest is kept, never a value. (A secret marker's value
    is written into the file: `comparable` counts it, and a reload takes it.)"""
    names = sorted(FILE_VARS[name][0] if name in FILE_VARS else name
                   for name in natsconf.environment_names(conf) - natsconf.Secret.names(conf))
    pairs = json.dumps([(name, os.environ.get(name)) for name in names])
    return hashlib.sha256(pairs.encode()).hexdigest()


def comparable(conf: dict) -> dict:
    """The conf as a server's applied conf keeps it, to be compared with the next: each secret marker with a
    digest of its value beside it, so a changed password is a changed conf at the marker's place (which a
    reload takes where the place is reloadable). The digest sits in the private state folder, beside the
    conf file that holds the value itself."""
    def digested(match) -> str:
        name = match.group(1)
        digest = hashlib.sha256(f"{name}\0{os.environ.get(name, '')}".encode()).hexdigest()[:16]
        return f"{match.group(0)}#{digest}"

    def walk(node):
        if isinstance(node, dict):
            return {key: walk(value) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(value) for value in node]
        return natsconf.Secret.PATTERN.sub(digested, node) if isinstance(node, str) else node
    return walk(conf)


def stop(name: str, state_dir: Path, timeout: float = LAME_DUCK_WAIT) -> dict:
    """Stop NAME (lame duck first) and remove its files and its folder; the state folder goes with its
    last server. Succeeds when it is not running. A server whose files were deleted is still found
    (by its marker) and stopped."""
    server = Server(check_name(name), state_dir.resolve())
    if not server.state_dir.exists() and running_pid(server) is None:
        return {"name": name, "action": "absent"}
    with locked(server):
        pid = running_pid(server)
        if pid is not None:
            terminate(pid, server, lame_duck_wait=timeout)
        shutil.rmtree(server.own_dir, ignore_errors=True)
        for path in server.files():
            path.unlink(missing_ok=True)
    _remove_folders(server)
    return {"name": name, "action": "absent" if pid is None else "stopped"}


def _remove_folders(server: Server, leftovers: bool = True) -> None:
    """With the cluster's last server gone, its state folder goes (with `leftovers`: with whatever is
    left in it, such as the log of a server that never started or a store an earlier version kept
    elsewhere; else only when empty), then the folders above it that are empty: the cluster's <workDir>,
    and in the default layout (.nats-fly/<stack>/<name>/local) the stack's folder and .nats-fly."""
    with contextlib.suppress(OSError):
        if any(path.suffix in (".lock", ".json", ".pid", ".conf") for path in server.state_dir.iterdir()):
            return  # another server of the cluster remains
    if any(owner and owner.state_dir == server.state_dir
           for owner in (server_of(argv) for _, argv in nats_server_processes())):
        return
    folders = [] if leftovers else [server.state_dir]
    if leftovers:
        shutil.rmtree(server.state_dir, ignore_errors=True)
    if server.state_dir.name == ops.STATE_DIR_NAME:
        folders.append(server.state_dir.parent)
        if server.state_dir.parents[2].name == ops.WORK_ROOT:
            folders += [server.state_dir.parents[1], server.state_dir.parents[2]]
    with contextlib.suppress(OSError):  # not empty: another cluster's files remain
        for folder in folders:
            folder.rmdir()


class Observed(NamedTuple):
    token: str
    """The repair token the server's Command should carry."""
    problem: str | None
    """What is wrong with the server, in words (None when it runs with all its files)."""
    known: bool
    """Whether the server left a trace here (a file, a process): a problem is then news, not a first start."""


def observe(state_dir: Path, name: str) -> Observed:
    """What a server's Command should carry, and what is wrong with the server. Reads only.

    While the server runs with its files, the token is the one it was started (or last ensured) with, so
    a no-op up stays a no-op. Otherwise it is fresh, a value no Command has carried: it differs from the
    stored one even when every local file is gone (the program cannot read Pulumi's state), so this up
    runs the server's Command, which starts it, or adopts it and restores its files."""
    server = Server(check_name(name), Path(state_dir).resolve())
    pid = running_pid(server)
    state = _read_json(server.state_file)
    files = {"conf": server.conf_file, "pid file": server.pid_file, "state": server.state_file,
             "applied conf": server.applied_conf, **needed(server, _read_json(server.applied_conf))}
    missing = [label for label, path in files.items() if not path.exists()]
    if pid is not None and state is not None and not missing:
        return Observed(str(state.get("generation", 0)), None, True)
    fresh = secrets.token_hex(8)
    if pid is None:
        known = len(missing) < len(files) or server.log_file.exists()
        return Observed(fresh, "is not running; up will start it", known)
    gone = f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} gone"
    return Observed(fresh, f"runs (pid {pid}) but its {gone}; up will restore them", True)


def choose_ports(servers: list[str], previous: dict[str, list[int]], per_server: int = natsconf.PORTS_PER_SERVER) -> dict[str, list[int]]:
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


def _report(what: str, action) -> int:
    """Run one operation: its JSON line on stdout, or its error on stderr (exit 1), no traceback."""
    try:
        result = action()
    except (LocalRunError, tools.ToolError, OSError) as error:
        print(f"nats_fly local {what}: error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


def run_ensure(op: ops.LocalEnsure) -> int:
    def act() -> dict:
        try:
            conf = json.loads(sys.stdin.read())
        except ValueError as error:
            raise LocalRunError(f"stdin is not the server's conf as JSON: {error}") from None
        return ensure(op.name, conf, op.state_dir, op.client_port, op.http_port, op.wait,
                      os.environ.get(ops.REPAIR_ENV) or "0", op.nats_version)
    return _report("ensure", act)


def run_stop(op: ops.LocalStop) -> int:
    return _report("stop", lambda: stop(op.name, op.state_dir, op.timeout))


def run_ports(op: ops.LocalPorts) -> int:
    return _report("ports", lambda: choose_ports(
        list(op.servers), _previous_layout(os.environ.get("PULUMI_COMMAND_STDOUT", ""))))


def run_status(op: ops.LocalStatus) -> int:
    return _report("status", lambda: status(op.state_dir))


def _previous_layout(text: str) -> dict[str, list[int]]:
    try:
        layout = json.loads(text) if text.strip() else {}
    except ValueError:
        return {}
    return layout if isinstance(layout, dict) else {}
