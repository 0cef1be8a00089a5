"""The Fly platform's resources: the read-only probe, then FlyApp -> NatsImage -> NatsRegion per region."""

from __future__ import annotations

import json
import re
from typing import Any, Mapping

import pulumi
from pulumi_command import local

from ...config.settings import NAMESPACE, Settings, SettingsError
from ...contract import flyctl, operations as ops
from ...render import natsconf
from ...render.digest import sha256
from .. import Cluster
from ..base import Built, secret_outputs
from .app import FlyApp, FlyAppArgs
from .image import NatsImage, NatsImageArgs
from .region import NatsRegion, NatsRegionArgs

_PEM = re.compile(r"-----BEGIN ([A-Z ]+)-----.*?-----END \1-----", re.S)


def check_ready(s: Settings) -> None:
    """What flyctl needs before the first call, and the live app's state the stack depends on, asked
    once per preview and up (read-only). Preview warns; up stops here, before any Fly call, with
    one line per problem. Under unit-test mocks the probe answers nothing and nothing is checked."""
    answer = local.run(command=ops.FlyProbe(app=s.app, jetstream=s.jetstream).command(),
                       logging=local.Logging.NONE)
    try:
        found = json.loads(answer.stdout) if answer.stdout else {}
    except ValueError:
        found = {"problems": [f"the Fly probe printed no JSON: {answer.stdout[:200]!r}"]}
    refusals = list(found.get("refusals", []))
    if refusals:
        raise SettingsError(refusals)
    problems = list(found.get("problems", []))
    if problems and pulumi.runtime.is_dry_run():
        for problem in problems:
            pulumi.warn(f"{NAMESPACE}: {problem} (`pulumi up` stops here until it is fixed)")
    elif problems:
        raise SettingsError(problems)


def build(cluster: Cluster) -> Built:
    s, name, parent, secrets = cluster.settings, cluster.name, cluster.parent, cluster.secrets
    check_ready(s)
    if s.server_tls:
        pem = pulumi.Output.secret(pulumi.Output.concat(secrets.tls_key, "\n", secrets.tls_cert))
    else:
        pem = local.Command(
            f"{name}-tls-marker",
            create=flyctl.tls_marker_cert(s.app),
            logging=local.Logging.NONE,
            opts=secret_outputs(parent),
        ).stdout
    values = pulumi.Output.all(secrets.values(s), pem).apply(lambda v: fly_secrets(v[0], v[1]))
    secrets_text = pulumi.Output.secret(values.apply(flyctl.secrets_text))
    app = FlyApp(f"{name}-fly", FlyAppArgs(app=s.app, org=s.org, public_ipv4=s.public_ipv4, secrets=secrets_text),
                 opts=pulumi.ResourceOptions(parent=parent))
    image = NatsImage(f"{name}-image", NatsImageArgs(
        settings=s, secrets_version=pulumi.Output.secret(secrets_text.apply(sha256)),
        app_resource=app.app), opts=pulumi.ResourceOptions(parent=parent, depends_on=[app]))
    regions = [NatsRegion(f"{name}-{region}", NatsRegionArgs(
        app=s.app, region=region, machines=s.machines[region], app_resource=app.app,
        deploy_resource=image.deploy,
        **({"volume_size_gb": s.volume_size_gb,
            "environment": region_environment(s, region, secrets.sys_password)} if s.jetstream else {})),
        opts=pulumi.ResourceOptions(parent=parent)) for region in s.regions]
    return Built(
        app_name=app.app_name,
        hostname=app.hostname,
        client_url=pulumi.Output.from_input(client_url(s)),
        tls_url=pulumi.Output.from_input(tls_url(s)),
        client_urls=pulumi.Output.from_input({r: client_url(s) for r in s.regions}),
        # Fly's proxy is the only way in: every region is the one anycast URL.
        server_urls=pulumi.Output.from_input({r: [client_url(s)] for r in s.regions}),
        image_hash=image.hash,
        nats_conf=image.nats_conf,
        verify_urls=pulumi.Output.from_input([f"{r}={u}" for r, u in s.verify_urls] or [client_url(s)]),
        websocket_url=pulumi.Output.from_input(websocket_url(s) if s.websocket else ""),
        verify_websocket_urls=pulumi.Output.from_input([websocket_url(s)] if s.websocket else []),
        leaf_url=pulumi.Output.from_input(leaf_url(s) if s.leafnodes else ""),
        leaf_remotes=pulumi.Output.from_input(
            natsconf.leaf_remote_snippet(s, leaf_url(s), tls_first=True) if s.leafnodes else ""),
        connection_urls=pulumi.Output.from_input([u for _, u in s.verify_urls] or [client_url(s)]),
        connect_hint=f"TLS-first clients: await nats.connect({tls_url(s)!r}{{login}}, tls_handshake_first=True)",
        resources=[image.deploy, *regions],
    )


def client_url(s: Settings) -> str:
    """Fly's anycast address, raw TCP: the proxy picks the nearest healthy Machine."""
    return f"nats://{s.app}.fly.dev:{s.ports.public}"


def tls_url(s: Settings) -> str:
    """The port where Fly's tls handler terminates TLS, for TLS-first clients."""
    return f"tls://{s.app}.fly.dev:{s.ports.public_tls}"


def websocket_url(s: Settings) -> str:
    """Fly's proxy on 443 (tls + http handlers), for browsers and other WebSocket clients."""
    return f"wss://{s.app}.fly.dev"


def leaf_url(s: Settings) -> str:
    """Fly's tls handler on publicLeafPort: leaf remotes do TLS first (`tls { handshake_first: true }`)."""
    return f"tls://{s.app}.fly.dev:{s.ports.public_leaf}"


def region_environment(s: Settings, region: str, sys_password: Any) -> dict[str, Any]:
    """What a JetStream region's command needs to remove surplus servers from JetStream: the system
    password and where to reach the cluster (NatsRegionArgs' `environment`)."""
    return {ops.SYS_PASSWORD_ENV: sys_password, ops.URL_ENV: scale_down_url(s, region)}


def scale_down_url(s: Settings, region: str) -> str:
    """Where flyops asks JetStream to forget a region's surplus servers: verifyUrls when set
    (the region's own last, as its Machines are the ones going), else the client URL."""
    urls = [u for r, u in s.verify_urls if r != region] + [u for r, u in s.verify_urls if r == region]
    return ",".join(urls) or client_url(s)


def fly_secrets(values: Mapping[str, str], tls_pem: str) -> dict[str, str]:
    """The app's Fly secrets: the process secrets, and the TLS certificate and key split from one PEM."""
    blocks = [(m.group(1), m.group(0)) for m in _PEM.finditer(tls_pem or "")]
    return {**values,
            natsconf.TLS_CERT: "\n".join(b for kind, b in blocks if kind == "CERTIFICATE"),
            natsconf.TLS_KEY: "\n".join(b for kind, b in blocks if kind.endswith("PRIVATE KEY"))}
