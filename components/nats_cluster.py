"""NatsCluster: the face of the library. Settings in; a global NATS cluster out."""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path
from typing import Any, Mapping, TypedDict

import pulumi
from pulumi_command import local

from . import flyctl, flyops, natsconf, settings as settings_mod
from .fly_app import FlyApp, FlyAppArgs
from .nats_image import NatsImage, NatsImageArgs
from .nats_region import NatsRegion, NatsRegionArgs
from .settings import Settings

_PEM = re.compile(r"-----BEGIN ([A-Z ]+)-----.*?-----END \1-----", re.S)


class NatsClusterArgs(TypedDict, total=False):
    """The stack config keys (see the README's reference), plus the secrets as Inputs."""
    app: str
    org: str
    platform: str
    regions: list[str]
    machinesPerRegion: int
    topology: str
    clientPort: int
    clusterPort: int
    gatewayPort: int
    monitorPort: int
    publicPort: int
    publicTlsPort: int
    lameDuckGracePeriod: str
    lameDuckDuration: str
    killTimeout: str
    vmSize: str
    vmMemory: int
    softLimit: int
    hardLimit: int
    peerWait: int
    publicIpv4: str
    auth: str
    users: list[str]
    jetstream: bool
    volumeSize: int
    localBasePort: int
    verify: bool
    sysPassword: pulumi.Input[str]
    """The system user's password (a secret)."""
    userPasswords: pulumi.Input[Mapping[str, str]]
    """user -> password for the client users (a secret)."""
    serverTls: bool
    tlsCert: pulumi.Input[str]
    """With serverTls: the server certificate (PEM, chain first), a secret."""
    tlsKey: pulumi.Input[str]
    """With serverTls: its private key (PEM), a secret."""
    workDir: str
    """Where per-stack files go (build context, local state). Default: ./.nats-fly/<stack>."""


class NatsCluster(pulumi.ComponentResource):
    app_name: pulumi.Output[str]
    """The Fly app name (locally: the cluster name)."""
    hostname: pulumi.Output[str]
    """Where clients connect: `<app>.fly.dev`, or 127.0.0.1 locally."""
    client_url: pulumi.Output[str]
    """`nats://<app>.fly.dev:10000`; locally, the first region's servers."""
    tls_url: pulumi.Output[str]
    """`tls://<app>.fly.dev:10001`, for TLS-first clients (empty locally)."""
    client_urls: pulumi.Output[dict]
    """region -> client URL(s) of that region's servers (locally; on Fly every region is the one URL)."""
    machines: pulumi.Output[dict]
    """region -> Machine (server) count."""
    image_hash: pulumi.Output[str]
    """SHA-256 of the build context (locally: of all server confs)."""
    nats_conf: pulumi.Output[str]
    """The rendered nats.conf (locally: the first server's). Holds no secret."""
    how_to_connect: pulumi.Output[str]
    """How a client connects, in words and a nats-py line."""

    def __init__(self, name: str, args: NatsClusterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("nats-fly:index:NatsCluster", name, {}, opts)
        plain = {k: v for k, v in args.items() if k not in settings_mod.SECRET_KEYS and k != "workDir"}
        s = settings_mod.load(plain)
        _check_given_secrets(s, args)
        self.settings = s
        work = Path(args.get("workDir") or Path.cwd() / ".nats-fly" / pulumi.get_stack())
        sys_password = pulumi.Output.secret(args["sysPassword"])
        route_password = pulumi.Output.secret(
            pulumi.Output.all(s.app, sys_password).apply(lambda v: _derive_route_password(v[0], v[1])))
        user_passwords = pulumi.Output.secret(args.get("userPasswords") or {})
        self.machines = pulumi.Output.from_input(dict(s.machines))
        if s.platform == "fly":
            servers = self._fly(name, s, work, sys_password, route_password, user_passwords, args)
        else:
            servers = self._local(name, s, work, sys_password, route_password, user_passwords)
        if s.verify:
            self._verify(name, s, servers, sys_password)
        self.how_to_connect = self.client_url.apply(lambda url: _how_to_connect(s, url))
        self.register_outputs({
            "appName": self.app_name, "hostname": self.hostname, "clientUrl": self.client_url,
            "tlsUrl": self.tls_url, "clientUrls": self.client_urls, "machines": self.machines,
            "imageHash": self.image_hash, "natsConf": self.nats_conf, "howToConnect": self.how_to_connect,
        })

    def _fly(self, name: str, s: Settings, work: Path, sys_password: pulumi.Output,
             route_password: pulumi.Output, user_passwords: pulumi.Output, args: Mapping[str, Any]) -> list:
        if s.server_tls:
            pem = pulumi.Output.secret(pulumi.Output.concat(args["tlsKey"], "\n", args["tlsCert"]))
        else:
            pem = local.Command(
                f"{name}-tls-marker",
                create=flyctl.tls_marker_cert(s.app),
                logging=local.Logging.NONE,
                opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["stdout", "stderr"]),
            ).stdout
        values = pulumi.Output.all(sys_password, route_password, user_passwords, pem).apply(
            lambda v: _fly_secrets(s, v[0], v[1], v[2], v[3]))
        secrets_text = pulumi.Output.secret(values.apply(flyctl.secrets_text))
        app = FlyApp(f"{name}-fly", FlyAppArgs(app=s.app, org=s.org, public_ipv4=s.public_ipv4,
                                                secrets=secrets_text),
                     opts=pulumi.ResourceOptions(parent=self))
        image = NatsImage(f"{name}-image", NatsImageArgs(
            settings=s, out_dir=str(work / "build"),
            secrets_version=pulumi.Output.secret(secrets_text.apply(_sha256)),
            app_resource=app.app), opts=pulumi.ResourceOptions(parent=self, depends_on=[app]))
        regions = [NatsRegion(f"{name}-{region}", NatsRegionArgs(
            app=s.app, region=region, machines=s.machines[region], app_resource=app.app,
            deploy_resource=image.deploy,
            **({"volume_size_gb": s.volume_size_gb,
                "environment": region_environment(s, region, sys_password)} if s.jetstream else {})),
            opts=pulumi.ResourceOptions(parent=self)) for region in s.regions]
        self.app_name = app.app_name
        self.hostname = app.hostname
        self.client_url = pulumi.Output.from_input(fly_client_url(s))
        self.tls_url = pulumi.Output.from_input(fly_tls_url(s))
        self.client_urls = pulumi.Output.from_input({r: fly_client_url(s) for r in s.regions})
        self.image_hash = image.hash
        self.nats_conf = image.nats_conf
        self._verify_urls = list(s.verify_urls) or [fly_client_url(s)]
        return [image.deploy, *regions]

    def _local(self, name: str, s: Settings, work: Path, sys_password: pulumi.Output,
               route_password: pulumi.Output, user_passwords: pulumi.Output) -> list:
        state_dir = work / "local"
        state_dir.mkdir(parents=True, exist_ok=True)
        servers = natsconf.local_servers(s)
        confs = {sv.name: natsconf.render(natsconf.local_conf(s, sv, str(state_dir / sv.name)))
                 for sv in servers}
        for stale in state_dir.glob("*.conf"):
            if stale.stem not in confs and not stale.name.endswith(".applied.conf"):
                stale.unlink()
        # Locally the process environment is nats-server's own: quoted, as the entrypoint does on Fly.
        env = pulumi.Output.all(sys_password, route_password, user_passwords).apply(
            lambda v: {k: natsconf.conf_string(x) for k, x in _process_secrets(s, v[0], v[1], v[2]).items()})
        commands = []
        for sv in servers:
            path = state_dir / f"{sv.name}.conf"
            path.write_text(confs[sv.name])
            commands.append(local.Command(
                f"{name}-{sv.name}",
                create=flyctl.local_ensure(sys.executable, sv.name, str(path), str(state_dir),
                                           sv.client_port, sv.monitor_port),
                delete=flyctl.local_stop(sys.executable, sv.name, str(path), str(state_dir)),
                environment=pulumi.Output.secret(env.apply(
                    lambda e, digest=_sha256(confs[sv.name]): {**e, "NATS_FLY_CONF_SHA": digest})),
                # One process per name: a replacement must stop the old one before starting anew.
                opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True),
            ))
        by_region = {r: ",".join(sv.client_url for sv in servers if sv.region == r) for r in s.regions}
        self.app_name = pulumi.Output.from_input(s.app)
        self.hostname = pulumi.Output.from_input("127.0.0.1")
        self.client_url = pulumi.Output.from_input(by_region[s.primary_region])
        self.tls_url = pulumi.Output.from_input("")
        self.client_urls = pulumi.Output.from_input(by_region)
        self.image_hash = pulumi.Output.from_input(_sha256("".join(confs[k] for k in sorted(confs))))
        self.nats_conf = pulumi.Output.from_input(confs[servers[0].name])
        self._verify_urls = list(s.verify_urls) or [f"{r}={urls.split(',')[0]}" for r, urls in by_region.items()]
        return commands

    def _verify(self, name: str, s: Settings, servers: list[pulumi.Resource], sys_password: pulumi.Output) -> None:
        """Prove the cluster whole after every change: `pulumi up` fails when it is not.
        The cluster's hash and counts sit in `environment`, so a change re-runs it in place."""
        state = pulumi.Output.all(self.image_hash, self.machines).apply(lambda v: _sha256(repr(v)))
        local.Command(
            f"{name}-verify",
            create=flyctl.verify(flyctl.python(), self._verify_urls, dict(s.machines), s.topology, s.jetstream),
            environment={natsconf.SYS_PASSWORD: sys_password, "NATS_FLY_CLUSTER_SHA": state},
            opts=pulumi.ResourceOptions(parent=self, depends_on=servers),
        )


def fly_client_url(s: Settings) -> str:
    """Fly's anycast address, raw TCP: the proxy picks the nearest healthy Machine."""
    return f"nats://{s.app}.fly.dev:{s.ports.public}"


def fly_tls_url(s: Settings) -> str:
    """The port where Fly's tls handler terminates TLS, for TLS-first clients."""
    return f"tls://{s.app}.fly.dev:{s.ports.public_tls}"


def region_environment(s: Settings, region: str, sys_password: Any) -> dict[str, Any]:
    """What a JetStream region's command needs to remove surplus servers from JetStream: the system
    password and where to reach the cluster (NatsRegionArgs' `environment`)."""
    return {natsconf.SYS_PASSWORD: sys_password, flyops.URL_ENV: scale_down_url(s, region)}


def scale_down_url(s: Settings, region: str) -> str:
    """Where flyops asks JetStream to forget a region's surplus servers: verifyUrls when set
    (REGION=URL; the region's own last, as its Machines are the ones going), else the client URL."""
    given = [u.split("=", 1) for u in s.verify_urls]
    urls = [u for r, u in given if r != region] + [u for r, u in given if r == region]
    return ",".join(urls) or fly_client_url(s)


def _how_to_connect(s: Settings, url: str) -> str:
    first = url.split(",")[0]
    login = "" if s.auth == "none" else f", user={s.users[0]!r}, password=<its userPasswords entry>"
    text = f"await nats.connect({first!r}{login})"
    if s.platform == "fly":
        text += f"; TLS-first clients: await nats.connect({fly_tls_url(s)!r}{login}, tls_handshake_first=True)"
    else:
        text += "; each region's servers are in clientUrls"
    return text


def _check_given_secrets(s: Settings, args: Mapping[str, Any]) -> None:
    """Plain values are checked now; Outputs (secret already) are opaque until they resolve."""
    given = {key: (settings_mod.OPAQUE if isinstance(args.get(key), pulumi.Output) else args.get(key), True)
             for key in settings_mod.SECRET_KEYS}
    settings_mod.check_secrets(s, given)


def _derive_route_password(app: str, sys_password: str) -> str:
    # Hex, so it can sit in a route URL; derived, so no second secret has to be kept.
    return hashlib.sha256(f"nats-fly-route\0{app}\0{sys_password}".encode()).hexdigest()


def _process_secrets(s: Settings, sys_password: str, route_password: str,
                     user_passwords: Mapping[str, str]) -> dict[str, str]:
    values = {natsconf.SYS_PASSWORD: sys_password, natsconf.ROUTE_PASSWORD: route_password}
    if s.auth == "password":
        values.update({natsconf.user_password_var(u): user_passwords[u] for u in s.users})
    return values


def _fly_secrets(s: Settings, sys_password: str, route_password: str, user_passwords: Mapping[str, str],
                 tls_pem: str) -> dict[str, str]:
    values = _process_secrets(s, sys_password, route_password, user_passwords)
    blocks = [(m.group(1), m.group(0)) for m in _PEM.finditer(tls_pem or "")]
    values["NATS_TLS_CERT"] = "\n".join(b for kind, b in blocks if kind == "CERTIFICATE")
    values["NATS_TLS_KEY"] = "\n".join(b for kind, b in blocks if kind.endswith("PRIVATE KEY"))
    return values


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
