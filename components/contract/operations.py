"""Every operation of `python -m nats_fly`, defined once: what a Command (or a user) passes, what the
process gets. The resource side writes a command line with `Op(...).command(python)`, the process side
reads it with `Op.parse(argv)`; `OPERATIONS` is the registry the entry dispatches by.

The environment a Command passes is part of the contract too: its names are below."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config.settings import TOPOLOGIES
from ..render.natsconf import SYS_PASSWORD as SYS_PASSWORD_ENV
from .spec import JOINED, PAIRS, REPEAT, SWITCH, WORD, Operation, option

# The environment a Command passes to its process (never a command line: these may be secrets). The
# system user's password goes as SYS_PASSWORD_ENV, the variable the servers' confs read it from too.
URL_ENV = "NATS_FLY_URL"
"""Comma-separated client URLs where the region operation reaches the cluster."""
REPAIR_ENV = "NATS_FLY_GENERATION"
"""A local server's repair token (the name is older than tokens: a Command's stored environment keeps it)."""

# The folders a local cluster's operations act on.
WORK_ROOT = ".nats-fly"
"""The default workDir of a cluster is <project>/.nats-fly/<stack>/<resource name>."""
STATE_DIR_NAME = "local"
"""A local cluster keeps its servers in <workDir>/local."""
UNVERSIONED = "2.12.8"
"""The nats-server an ensure runs without --nats-version: the release every local server ran before the
version was a stack key (the command lines their Commands stored have no such option)."""


# ---------------------------------------------------------------- the local platform

@dataclass(frozen=True, kw_only=True)
class LocalEnsure(Operation):
    path = ("local", "ensure")
    handler = "nats_fly.processes.local:run_ensure"
    summary = "start, reload or restart a server to run the conf on stdin"
    name: str = option(help="the server's name (it names its files)")
    state_dir: Path = option(kind=Path, help="the cluster's private state folder")
    client_port: int = option(kind=int)
    http_port: int = option(kind=int)
    wait: float = option(10.0, kind=float, help="seconds to wait for /healthz")
    nats_version: str = option(UNVERSIONED, help="the nats-server release to run (from the tools cache)")


@dataclass(frozen=True, kw_only=True)
class LocalStop(Operation):
    path = ("local", "stop")
    handler = "nats_fly.processes.local:run_stop"
    summary = "lame-duck stop a server and remove its files"
    name: str = option()
    state_dir: Path = option(kind=Path)
    timeout: float = option(15.0, kind=float, help="seconds of lame duck before SIGTERM")


@dataclass(frozen=True, kw_only=True)
class LocalPorts(Operation):
    path = ("local", "ports")
    handler = "nats_fly.processes.local:run_ports"
    summary = ("print {server: [its ports]}: kept from $PULUMI_COMMAND_STDOUT (the previous run's), new ones "
               "chosen free")
    servers: tuple[str, ...] = option(style=JOINED, help="comma-separated server names")


@dataclass(frozen=True, kw_only=True)
class LocalStatus(Operation):
    path = ("local", "status")
    handler = "nats_fly.processes.local:run_status"
    summary = "list the servers of a state folder as JSON"
    state_dir: Path = option(kind=Path)


# ---------------------------------------------------------------- Fly

@dataclass(frozen=True, kw_only=True)
class FlyDeploy(Operation):
    path = ("fly", "deploy")
    handler = "nats_fly.processes.fly:run_deploy"
    summary = "deploy a build context (stdin, or --dir), immediate or rolling by the Machines the app has"
    app: str = option()
    dir: Path | None = option(None, kind=Path, help="a build context folder instead of stdin")


@dataclass(frozen=True, kw_only=True)
class FlyRegion(Operation):
    path = ("fly", "region")
    handler = "nats_fly.processes.fly:run_region"
    summary = "converge a region's Machine count (and its volumes)"
    app: str = option()
    region: str = option()
    count: int = option(kind=int)
    volume: str | None = option(None, help="with JetStream: the volume name (fly.toml [[mounts]] source)")
    size: int | None = option(None, kind=int, help="with --volume: size of new volumes in GB")
    url: tuple[str, ...] = option((), style=REPEAT, help=f"client URL for the JetStream peer removal "
                                                         f"(default ${URL_ENV}, comma-separated); the sys "
                                                         f"password comes from ${SYS_PASSWORD_ENV} only")


@dataclass(frozen=True, kw_only=True)
class FlyProbe(Operation):
    path = ("fly", "probe")
    handler = "nats_fly.processes.fly:run_probe"
    summary = "print what a preview or up must know before the first Fly call, as JSON"
    app: str = option()
    jetstream: bool = option(style=WORD)


# ---------------------------------------------------------------- for users and Commands alike

@dataclass(frozen=True, kw_only=True)
class Verify(Operation):
    path = ("verify",)
    handler = "nats_fly.processes.verify:run"
    summary = ("Prove a NATS cluster is whole: servers per region, routes and gateways, pub/sub between every "
               f"pair of regions, and (--jetstream) one meta leader. The password comes from --password-file "
               f"or ${SYS_PASSWORD_ENV}, never from the command line. Exit code: 0 whole, 1 a check failed, "
               f"2 usage error.")
    url: tuple[str, ...] = option(style=REPEAT, metavar="[REGION=]URL",
                                  help="a client URL per region (repeat: --url ord=nats://...), or one URL for all")
    ws_url: tuple[str, ...] = option((), style=REPEAT, metavar="[REGION=]URL",
                                     help="a WebSocket URL (ws:// or wss://) per region, or one: prove the "
                                          "WebSocket path too")
    expect: tuple[tuple[str, int], ...] = option(style=PAIRS, kind=int, metavar="REGION=N,...",
                                                 help="servers expected per region, e.g. ord=3,syd=1")
    topology: str = option("mesh", choices=TOPOLOGIES, always=True)
    jetstream: bool = option(False, style=SWITCH, help="expect JetStream with one meta leader")
    ca: str | None = option(None, metavar="PATH", help="CA file to trust for TLS")
    user: str = option("sys", help="a system-account user")
    password_file: Path | None = option(None, kind=Path, metavar="PATH",
                                        help=f"file holding the password (else ${SYS_PASSWORD_ENV})")
    tls_first: bool = option(False, style=SWITCH, help="TLS handshake before INFO (Fly's tls handler on :10001)")
    timeout: float = option(15.0, kind=float, help="seconds each phase waits for the cluster")
    messages: int = option(50, kind=int, help="messages per region pair")
    json: bool = option(False, style=SWITCH, help="print the report as JSON")


@dataclass(frozen=True, kw_only=True)
class Render(Operation):
    path = ("render",)
    handler = "nats_fly.platforms.render:run"
    summary = "write a stack's build context (Fly) or server confs (local), without Pulumi"
    stack: str = option(help="stack name: reads config/Pulumi.<stack>.yaml")
    out: Path = option(kind=Path, help="folder to write the files into")
    project_dir: Path | None = option(None, kind=Path, help="folder holding Pulumi.yaml (default: the current folder)")


@dataclass(frozen=True, kw_only=True)
class Reference(Operation):
    path = ("reference",)
    handler = "nats_fly.config.reference:run"
    summary = ("check (--check) or rewrite (--write) Pulumi.yaml's config block, the README's reference and "
               "NatsClusterArgs from the key catalogue")
    check: bool = option(False, style=SWITCH, help="exit 1 when one of them differs from the catalogue")
    write: bool = option(False, style=SWITCH, help="rewrite them")


@dataclass(frozen=True, kw_only=True)
class _StackAccess(Operation):
    """What backup and restore share: the stack that says where the cluster is, and who logs in."""
    stack: str = option(help="stack name: its config (config/Pulumi.<stack>.yaml) and outputs say where and as whom")
    user: str | None = option(None, help="a user of the stack's users (default: the first); none with auth: none")
    password_file: Path | None = option(None, kind=Path, metavar="PATH",
                                        help="file holding that user's password (else $NATS_PASSWORD, else the "
                                             "stack's secret userPasswords.<user>, read with `pulumi config get`)")
    ca: str | None = option(None, metavar="PATH", help="CA file to trust for TLS")
    project_dir: Path | None = option(None, kind=Path, help="folder holding Pulumi.yaml (default: the current folder)")


@dataclass(frozen=True, kw_only=True)
class Backup(_StackAccess):
    path = ("backup",)
    handler = "nats_fly.processes.backup:run_backup"
    summary = ("Save every stream of account APP (streams, KV buckets, object stores, their consumers) into a "
               "folder with natscli (`nats backup account`), each stream checked with `nats backup validate`. Run "
               "from where `pulumi up` runs; the password never goes on a command line.")
    to: Path = option(kind=Path, metavar="DIR", help="a new or empty folder")


@dataclass(frozen=True, kw_only=True)
class Restore(_StackAccess):
    path = ("restore",)
    handler = "nats_fly.processes.backup:run_restore"
    summary = ("Put the streams a backup holds into a cluster that lacks them (a fresh one: natscli refuses to "
               "overwrite a stream), with `nats backup restore stream`, one stream at a time.")
    from_: Path = option(kind=Path, metavar="DIR", help="a folder `nats-fly backup` wrote")


OPERATIONS: dict[tuple[str, ...], type[Operation]] = {
    op.path: op for op in (LocalEnsure, LocalStop, LocalPorts, LocalStatus, FlyDeploy, FlyRegion, FlyProbe,
                           Verify, Render, Reference, Backup, Restore)}
