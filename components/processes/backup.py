"""`nats-fly backup` and `nats-fly restore`: every stream of account APP (its streams, KV buckets and object
stores, with their consumers) saved into a folder and put back into a fresh cluster, with natscli's own
`nats backup` (processes/tools.py has the binary), run from where `pulumi up` runs.

The stack says where and as whom: verifyUrls when set, else the servers the stack's outputs list
(`serverUrls`); a user of its `users` (the first unless --user says), whose password comes from
--password-file, else $NATS_PASSWORD, else the stack's own secret (`pulumi config get`, on a pipe).
natscli gets them as NATS_URL, NATS_USER and NATS_PASSWORD in its environment, never on a command line.

nats-server 2.15.0 writes a stream snapshot wrong when the stream has ephemeral consumers (KV watchers,
ordered consumers) at that moment: `nats backup validate` finds it (`expected consumer entry ... found
"consumers"`), and a restore would fail. Such a stream is backed up again without its consumers, and the
configs of its durable consumers are kept beside it (CONSUMERS_FILE), made again after the restore: they
then start from their deliver policy, so they deliver again what they had acknowledged. 2.15.1 fixed it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nats
from nats.js.api import ConsumerConfig
from nats.js.errors import NotFoundError

from ..config import settings as settings_mod, stackfile
from ..config.settings import SettingsError
from ..contract import operations as ops
from . import tools

CONSUMERS_FILE = "nats-fly-consumers.json"
"""Beside a stream backed up without its consumers: its durable consumers' configs."""
SNAPSHOT_BUG = "expected consumer entry"
"""What `nats backup validate` says of a 2.15.0 snapshot taken while the stream had ephemeral consumers."""
READY_WAIT = 60.0
"""Seconds a freshly restored stream may take to elect its leader and answer."""


NOT_YET = ("no responders available", "no suitable peers for placement", "temporarily unavailable")
"""What natscli relays while a new cluster's JetStream settles (routes forming, the meta leader hearing
from every server)."""


class BackupError(Exception):
    """A failure to report as it is: one line, no traceback."""


@dataclass(frozen=True)
class Target:
    """Where the cluster is, and who logs in (password None: anonymous, with auth: none)."""

    urls: tuple[str, ...]
    user: str | None
    password: str | None
    ca: str | None

    def natscli_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("NATS_USER", "NATS_PASSWORD", "NATS_CA")}
        env["NATS_URL"] = ",".join(self.urls)
        if self.user:
            env.update(NATS_USER=self.user, NATS_PASSWORD=self.password or "")
        if self.ca:
            env["NATS_CA"] = self.ca
        return env

    async def connect(self):
        options = {"user": self.user, "password": self.password} if self.user else {}
        if self.ca:
            import ssl
            options["tls"] = ssl.create_default_context(cafile=self.ca)
        return await nats.connect(list(self.urls), connect_timeout=5, max_reconnect_attempts=3, **options)


def target(op: ops._StackAccess) -> Target:
    project = Path(op.project_dir or Path.cwd())
    values, _ = stackfile.from_file(stackfile.stack_file(project, op.stack))
    s = settings_mod.load(values)
    if not s.jetstream:
        raise BackupError(f"stack {op.stack} has jetstream off: there are no streams to back up or restore into")
    urls = tuple(url for _, url in s.verify_urls) or _server_urls(project, op.stack)
    if s.auth == "none":
        if op.user:
            raise BackupError(f"--user {op.user!r}: stack {op.stack} has auth: none, its clients log in "
                              f"anonymously; allowed: no --user")
        return Target(urls, None, None, op.ca)
    user = op.user or s.users[0]
    if user not in s.users:
        raise BackupError(f"--user {user!r} is not a user of stack {op.stack}; allowed: {', '.join(s.users)}")
    return Target(urls, user, _password(op, project, user), op.ca)


def _pulumi(project: Path, *args: str) -> str:
    """What `pulumi <args>` prints (a pipe: a secret it prints never reaches a terminal or a command line)."""
    try:
        done = subprocess.run(["pulumi", *args, "--non-interactive"], cwd=project, capture_output=True, text=True,
                              timeout=120)
    except OSError as error:
        raise BackupError(f"pulumi could not run ({error}); run from where `pulumi up` runs (source "
                          f"scripts/env.sh)") from None
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()
        raise BackupError(f"`pulumi {' '.join(args[:3])}` failed: {said[-1] if said else done.returncode}")
    return done.stdout


def _server_urls(project: Path, stack: str) -> tuple[str, ...]:
    outputs = json.loads(_pulumi(project, "stack", "output", "serverUrls", "--json", "--stack", stack) or "{}")
    urls = tuple(dict.fromkeys(url for region in (outputs or {}).values() for url in region))
    if not urls:
        raise BackupError(f"stack {stack} has no serverUrls output: bring it up first, or set verifyUrls")
    return urls


def _password(op, project: Path, user: str) -> str:
    if op.password_file:
        try:
            return op.password_file.read_text().rstrip("\n")
        except OSError as error:
            raise BackupError(f"--password-file {op.password_file}: {error.strerror}") from None
    if os.environ.get("NATS_PASSWORD"):
        return os.environ["NATS_PASSWORD"]
    return _pulumi(project, "config", "get", "--path", f"userPasswords.{user}", "--stack", op.stack).rstrip("\n")


def natscli(target_: Target, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(tools.natscli()), *args], env=target_.natscli_env(), capture_output=True, text=True,
                          timeout=3600)


def _failed(what: str, done: subprocess.CompletedProcess) -> BackupError:
    said = [line for line in (done.stderr or done.stdout).strip().splitlines() if line.strip()]
    return BackupError(f"{what}: {said[-1] if said else f'exit {done.returncode}'}")


# ---------------------------------------------------------------- backup

def backup(op: ops.Backup) -> list[str]:
    """The lines to print: one per stream, then the totals."""
    where = Path(op.to)
    if where.exists() and (not where.is_dir() or any(where.iterdir())):
        raise BackupError(f"--to {where}: not an empty folder; allowed: a new or empty folder (a backup never "
                          f"mixes with another)")
    aim = target(op)
    t0 = time.monotonic()
    where.mkdir(mode=0o700, parents=True, exist_ok=True)
    done = natscli(aim, "backup", "account", str(where), "--force")
    if done.returncode != 0:
        raise _failed(f"nats backup account into {where}", done)
    version = asyncio.run(_server_version(aim))
    lines = []
    for folder in sorted(p for p in where.iterdir() if p.is_dir()):
        # natscli v0.5.0 validates the archives 2.15 writes; an older server's it calls no backup at all
        lines.append(_checked(aim, folder) if version >= (2, 15) else
                     f"{folder.name}: ok (nats-server {'.'.join(map(str, version))} archive: natscli validates only "
                     f"2.15 archives)")
    size = sum(p.stat().st_size for p in where.rglob("*") if p.is_file())
    lines.append(f"backed up {len(lines)} stream(s) of account APP into {where}: {size} bytes in "
                 f"{time.monotonic() - t0:.2f}s")
    return lines


async def _server_version(aim: Target) -> tuple[int, int]:
    """(major, minor) of the nats-server the backup was taken from."""
    nc = await aim.connect()
    try:
        version = nc.connected_server_version
        return version.major, version.minor
    finally:
        await nc.close()


def _checked(aim: Target, folder: Path) -> str:
    """Validate one stream's backup; one taken by 2.15.0 with ephemeral consumers is taken again without them."""
    checked = natscli(aim, "backup", "validate", str(folder))
    if checked.returncode == 0:
        return f"{folder.name}: ok"
    if SNAPSHOT_BUG not in checked.stderr + checked.stdout:
        raise _failed(f"nats backup validate {folder}", checked)
    durables = asyncio.run(_durable_consumers(aim, folder.name))
    shutil.rmtree(folder)
    again = natscli(aim, "backup", "stream", folder.name, str(folder), "--no-consumers", "--no-progress")
    if again.returncode != 0:
        raise _failed(f"nats backup stream {folder.name} --no-consumers", again)
    checked = natscli(aim, "backup", "validate", str(folder))
    if checked.returncode != 0:
        raise _failed(f"nats backup validate {folder}", checked)
    (folder / CONSUMERS_FILE).write_text(json.dumps(durables, indent=1, sort_keys=True))
    return (f"{folder.name}: ok without its consumers (nats-server 2.15.0 cannot snapshot a stream with ephemeral "
            f"consumers); {len(durables)} durable consumer config(s) kept, made again at restore from their "
            f"deliver policy")


async def _durable_consumers(aim: Target, stream: str) -> list[dict]:
    nc = await aim.connect()
    js, durables, offset = nc.jetstream(), [], 0
    try:
        while page := await js.consumers_info(stream, offset=offset):  # the server answers 256 at most
            durables += [info.config.as_dict() for info in page if info.config.durable_name]
            offset += len(page)
        return durables
    finally:
        await nc.close()


# ---------------------------------------------------------------- restore

def restore(op: ops.Restore) -> list[str]:
    where = Path(op.from_)
    streams = sorted(p.name for p in where.iterdir() if (p / "backup.json").is_file()) if where.is_dir() else []
    if not streams:
        raise BackupError(f"--from {where}: no stream backups in it (folders holding backup.json); allowed: a "
                          f"folder `nats-fly backup` wrote")
    aim = target(op)
    t0 = time.monotonic()
    there = asyncio.run(_existing(aim, streams))
    if there:
        raise BackupError(f"stream(s) {', '.join(there)} exist already in the cluster of stack {op.stack}; a restore "
                          f"puts streams into a cluster that lacks them (natscli refuses to overwrite one): delete "
                          f"them first, or restore into a fresh cluster")
    deadline = time.monotonic() + READY_WAIT
    for number, name in enumerate(streams):
        while (done := natscli(aim, "backup", "restore", "stream", str(where / name))).returncode != 0:
            # a cluster just brought up may not place a stream yet: asked again while none of it was made
            if (not any(words in done.stderr + done.stdout for words in NOT_YET) or time.monotonic() > deadline
                    or asyncio.run(_existing(aim, [name]))):
                restored = f" (restored before it: {', '.join(streams[:number])})" if number else ""
                raise _failed(f"nats backup restore stream {where / name}{restored}", done)
            time.sleep(1)
    counts = asyncio.run(_settled(aim, where, streams))
    lines = [f"{name}: {messages} messages" for name, messages in counts.items()]
    lines.append(f"restored {len(streams)} stream(s) into account APP from {where} in {time.monotonic() - t0:.2f}s")
    return lines


async def _existing(aim: Target, streams: list[str]) -> list[str]:
    nc = await aim.connect()
    js, there = nc.jetstream(), []
    try:
        for name in streams:
            try:
                await _answered(lambda n=name: js.stream_info(n), missing_is_an_answer=True)
                there.append(name)
            except NotFoundError:
                pass
        return there
    finally:
        await nc.close()


async def _settled(aim: Target, where: Path, streams: list[str]) -> dict[str, int]:
    """Each restored stream once it answers (its new Raft group elects first), with the durable consumers
    kept beside it made again: stream -> its message count."""
    nc = await aim.connect()
    js, counts = nc.jetstream(), {}
    try:
        for name in streams:
            info = await _answered(lambda: js.stream_info(name))
            counts[name] = info.state.messages
            kept = where / name / CONSUMERS_FILE
            for config in json.loads(kept.read_text()) if kept.is_file() else []:
                await _answered(lambda c=config: js.add_consumer(name, config=ConsumerConfig.from_response(c)))
        return counts
    finally:
        await nc.close()


async def _answered(call, missing_is_an_answer: bool = False):
    deadline = time.monotonic() + READY_WAIT
    while True:
        try:
            return await call()
        except NotFoundError:
            if missing_is_an_answer:
                raise
            if time.monotonic() > deadline:
                raise BackupError(f"the cluster still says not found after {READY_WAIT:g}s") from None
            await asyncio.sleep(0.25)
        except Exception as error:  # noqa: BLE001 (503 and timeouts while the new groups elect)
            if time.monotonic() > deadline:
                raise BackupError(f"the cluster did not answer within {READY_WAIT:g}s: {error!r}") from None
            await asyncio.sleep(0.25)


# ---------------------------------------------------------------- the operations

def _report(what: str, action) -> int:
    try:
        lines = action()
    except (BackupError, SettingsError, tools.ToolError, OSError, nats.errors.Error) as error:
        print(f"nats-fly {what}: error: {error}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


def run_backup(op: ops.Backup) -> int:
    return _report("backup", lambda: backup(op))


def run_restore(op: ops.Restore) -> int:
    return _report("restore", lambda: restore(op))
