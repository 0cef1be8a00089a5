"""The local platform: the cluster as nats-server processes on this machine's loopback, one
Command per server (`python -m nats_fly local ensure|stop`, see localrun)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pulumi
from pulumi_command import local

from . import flyctl, localrun, natsconf
from .platform import Built, secret_outputs
from .settings import Settings


def build(parent: pulumi.Resource, name: str, s: Settings, work: Path, env: pulumi.Output) -> Built:
    """The servers of `s` under `parent`. `work` is this cluster's own folder; `env` (secret) is what
    every server process gets in its environment: the passwords its conf refers to."""
    state_dir = work / localrun.STATE_DIR_NAME
    names = natsconf.local_server_names(s)
    if s.local_base_port:
        layout: pulumi.Output = pulumi.Output.from_input(natsconf.local_layout(s))
    else:
        # Ports free on this machine at the first up, kept in the state: two clusters never share one.
        ports = local.Command(f"{name}-ports", create=flyctl.local_ports(flyctl.python(), names),
                              opts=pulumi.ResourceOptions(parent=parent))
        layout = ports.stdout.apply(json.loads)
    servers = layout.apply(lambda chosen: natsconf.local_servers(s, chosen))
    confs = servers.apply(lambda found: {sv.name: natsconf.local_conf(s, sv, found, str(state_dir / sv.name))
                                         for sv in found})
    commands = []
    generations = {}
    for server_name in names:
        # A server that died since the last up (kill -9, a crash) carries the next generation, so this
        # up starts it again; while it runs the value stays, and a no-op up stays a no-op.
        generations[server_name] = localrun.observed_generation(state_dir, server_name)
        server = servers.apply(lambda found, n=server_name: next(sv for sv in found if sv.name == n))
        commands.append(local.Command(
            f"{name}-{server_name}",
            create=server.apply(lambda sv: flyctl.local_ensure(flyctl.python(), sv.name, flyctl.portable(state_dir),
                                                               sv.client_port, sv.monitor_port)),
            delete=flyctl.local_stop(flyctl.python(), server_name, flyctl.portable(state_dir)),
            stdin=confs.apply(lambda c, n=server_name: json.dumps(natsconf.to_json(c[n]), sort_keys=True)),
            environment=pulumi.Output.secret(env.apply(lambda e, g=generations[server_name]: {
                **e, localrun.GENERATION_ENV: str(g)})),
            # One process per name: a replacement must stop the old one before starting anew.
            opts=secret_outputs(parent, delete_before_replace=True),
        ))
    by_region = servers.apply(lambda found: {
        r: ",".join(sv.client_url for sv in found if sv.region == r) for r in s.regions})
    websockets = servers.apply(lambda found: {
        r: next(sv.websocket_url for sv in found if sv.region == r) for r in s.regions} if s.websocket else {})
    rendered = confs.apply(lambda c: {n: natsconf.render(conf) for n, conf in c.items()})
    return Built(
        app_name=pulumi.Output.from_input(s.app),
        hostname=pulumi.Output.from_input("127.0.0.1"),
        client_url=by_region.apply(lambda urls: urls[s.primary_region]),
        tls_url=pulumi.Output.from_input(""),
        client_urls=by_region,
        image_hash=rendered.apply(lambda r: _sha256("".join(r[k] for k in sorted(r)))),
        nats_conf=rendered.apply(lambda r: r[names[0]]),
        verify_urls=by_region.apply(lambda urls: [f"{r}={u}" for r, u in s.verify_urls] or
                                    [f"{r}={u.split(',')[0]}" for r, u in urls.items()]),
        websocket_url=websockets.apply(lambda urls: urls.get(s.primary_region, "")),
        verify_websocket_urls=websockets.apply(lambda urls: [f"{r}={u}" for r, u in urls.items()]),
        leaf_url=servers.apply(lambda found: found[0].leafnode_url if s.leafnodes else ""),
        leaf_remotes=servers.apply(lambda found: natsconf.leaf_remote_snippet(s, found[0].leafnode_url, tls_first=False)
                                   if s.leafnodes else ""),
        resources=commands,
        repair=json.dumps(generations, sort_keys=True),
    )


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
