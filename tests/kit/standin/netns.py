"""Network namespaces: the private network's plumbing, its naming and its sweeping.

Every object the stand-in creates outside its state dir carries the prefix
``nfly-<run>-`` so that a later run can tell a crashed run's leftovers (owner
process dead) from a concurrent run's live objects (owner process alive).
"""
from __future__ import annotations

import concurrent.futures
import ctypes
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

PREFIX = "nfly-"
OWNERS = Path("/run/nfly")
NETNS_DIR = Path("/var/run/netns")
ETC_NETNS = Path("/etc/netns")
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)


class CommandError(RuntimeError):
    pass


def run(argv: list[str], stdin: str | None = None) -> str:
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True)
    if proc.returncode != 0:
        raise CommandError(f"{' '.join(argv)}: {proc.stderr.strip()}")
    return proc.stdout


def ip(ns: str | None, *args: str) -> str:
    return run(["ip", *(["-n", ns] if ns else []), *args])


def ip_batch(ns: str, lines: list[str]) -> None:
    run(["ip", "-n", ns, "-batch", "-"], stdin="\n".join(lines) + "\n")


def sysctl(ns: str, **values: str) -> None:
    for key, value in values.items():
        run(["ip", "netns", "exec", ns, "sysctl", "-qw", f"{key.replace('__', '.')}={value}"])


def setns(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def executor_in(ns: str) -> concurrent.futures.ThreadPoolExecutor:
    """A one-thread executor living inside `ns`: sockets it creates belong to `ns`
    and keep working from any thread, so the root namespace gets no links."""
    return concurrent.futures.ThreadPoolExecutor(
        max_workers=1, thread_name_prefix=f"netns-{ns}", initializer=setns,
        initargs=(NETNS_DIR / ns,))


def add(ns: str, resolv_conf: str | None = None, hosts: str | None = None) -> None:
    if resolv_conf is not None or hosts is not None:
        etc = ETC_NETNS / ns
        etc.mkdir(parents=True, exist_ok=True)
        if resolv_conf is not None:
            (etc / "resolv.conf").write_text(resolv_conf)
        if hosts is not None:
            (etc / "hosts").write_text(hosts)
    run(["ip", "netns", "add", ns])
    ip(ns, "link", "set", "lo", "up")
    # Fly's 6PN addresses are usable at once: no duplicate address detection.
    sysctl(ns, net__ipv6__conf__all__accept_dad="0", net__ipv6__conf__default__accept_dad="0")


def pids(ns: str) -> list[int]:
    try:
        return [int(p) for p in run(["ip", "netns", "pids", ns]).split()]
    except CommandError:
        return []


def delete(ns: str) -> None:
    """Kill whatever still runs in `ns`, then remove it and its /etc/netns files."""
    for _ in range(3):
        left = pids(ns)
        if not left:
            break
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    if (NETNS_DIR / ns).exists():
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    shutil.rmtree(ETC_NETNS / ns, ignore_errors=True)


def listed() -> list[str]:
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(PREFIX))


# --- ownership: which run a name belongs to, and whether that run is alive ---

def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def claim(run_id: str) -> None:
    OWNERS.mkdir(parents=True, exist_ok=True)
    (OWNERS / run_id).write_text(f"{os.getpid()} {_start_time(os.getpid())}\n")


def release(run_id: str) -> None:
    (OWNERS / run_id).unlink(missing_ok=True)


def owner_alive(run_id: str) -> bool:
    try:
        pid, started = (OWNERS / run_id).read_text().split()
    except (OSError, ValueError):
        return False
    return _start_time(int(pid)) == started


def run_of(name: str) -> str:
    """`nfly-ab12cd-hub` -> `nfly-ab12cd`."""
    return "-".join(name.split("-")[:2])


def sweep(run_id: str | None = None) -> list[str]:
    """Remove leftovers of `run_id`, or of every run whose owner is dead."""
    def doomed(name: str) -> bool:
        rid = run_of(name)
        return rid == run_id if run_id else not owner_alive(rid)

    removed = []
    for ns in listed():
        if doomed(ns):
            delete(ns)
            removed.append(ns)
    if ETC_NETNS.is_dir():
        for etc in ETC_NETNS.iterdir():
            if etc.name.startswith(PREFIX) and doomed(etc.name):
                shutil.rmtree(etc, ignore_errors=True)
                removed.append(str(etc))
    tmp = Path("/tmp")
    for d in tmp.glob(PREFIX + "*"):
        if d.is_dir() and doomed(d.name):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(str(d))
    if OWNERS.is_dir():
        for owner in OWNERS.iterdir():
            if owner.name.startswith(PREFIX) and doomed(owner.name) and owner.name != run_id:
                owner.unlink(missing_ok=True)
    return removed
