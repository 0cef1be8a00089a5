"""The local platform: the cluster as nats-server processes on this machine's loopback, one
Command per server (`python -m nats_fly local ensure|stop`, see localrun)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

import pulumi
from pulumi_command import local

from . import flyctl, localrun, natsconf
from .platform import Built, secret_outputs
from .settings import NAMESPACE, Settings


def build(parent: pulumi.Resource, name: str, s: Settings, work: Path, env: pulumi.Output,
          given: Mapping[str, Any]) -> Built:
    """The servers of `s` under `parent`. `work` is this cluster's own folder; `env` (secret) is what
    every server process gets in its environment: the passwords its conf refers to (and, with
    serverTls, the certificate and key from `given`, which localrun writes into the server's folder)."""
    state_dir = work / localrun.STATE_DIR_NAME
    names = natsconf.local_server_names(s)
    if s.server_tls:
        env = pulumi.Output.all(env, given["tlsCert"], given["tlsKey"]).apply(
            lambda v: {**v[0], natsconf.TLS_CERT: v[1], natsconf.TLS_KEY: v[2]})
    if s.local_base_port:
        layout: pulumi.Output = pulumi.Output.from_input(natsconf.local_layout(s))
    else:
        # Ports free on this machine at the first up, kept in the state: two clusters never share one.
        ports = local.Command(f"{name}-ports", create=flyctl.local_ports(flyctl.python(), names),
                              opts=pulumi.ResourceOptions(parent=parent))
        layout = ports.stdout.apply(json.loads)
    servers = layout.apply(lambda chosen: natsconf.local_servers(s, chosen))
    # The store is named relative to the state folder, nats-server's working directory.
    confs = servers.apply(lambda found: {sv.name: natsconf.local_conf(s, sv, found, sv.name) for sv in found})
    commands = []
    tokens = {}
    for server_name in names:
        tokens[server_name] = repair_token(name, state_dir, server_name)
        server = servers.apply(lambda found, n=server_name: next(sv for sv in found if sv.name == n))
        commands.append(local.Command(
            f"{name}-{server_name}",
            create=server.apply(lambda sv: flyctl.local_ensure(flyctl.python(), sv.name, flyctl.portable(state_dir),
                                                               sv.client_port, sv.monitor_port)),
            delete=flyctl.local_stop(flyctl.python(), server_name, flyctl.portable(state_dir)),
            stdin=confs.apply(lambda c, n=server_name: json.dumps(natsconf.to_json(c[n]), sort_keys=True)),
            environment=pulumi.Output.secret(env.apply(lambda e, t=tokens[server_name]: {
                **e, localrun.GENERATION_ENV: t})),
            # One process per name: a replacement must stop the old one before starting anew.
            opts=secret_outputs(parent, delete_before_replace=True),
        ))
    by_region = servers.apply(lambda found: {r: [sv for sv in found if sv.region == r] for r in s.regions})
    server_urls = by_region.apply(lambda regions: {r: [sv.client_url for sv in found] for r, found in regions.items()})
    first = by_region.apply(lambda regions: {r: found[0] for r, found in regions.items()})
    client_urls = first.apply(lambda firsts: {r: sv.client_url for r, sv in firsts.items()})
    websockets = first.apply(lambda firsts: {r: sv.websocket_url for r, sv in firsts.items()} if s.websocket else {})
    rendered = confs.apply(lambda c: {n: natsconf.render(conf) for n, conf in c.items()})
    primary = first.apply(lambda firsts: firsts[s.primary_region])
    return Built(
        app_name=pulumi.Output.from_input(s.app),
        hostname=pulumi.Output.from_input("127.0.0.1"),
        client_url=primary.apply(lambda sv: sv.client_url),
        # With serverTls, TLS-first clients (tls_handshake_first) use the client port too: handshake_first auto.
        tls_url=primary.apply(lambda sv: sv.client_url if s.server_tls else ""),
        client_urls=client_urls,
        server_urls=server_urls,
        image_hash=rendered.apply(lambda r: _sha256("".join(r[k] for k in sorted(r)))),
        nats_conf=rendered.apply(lambda r: r[names[0]]),
        verify_urls=client_urls.apply(lambda urls: [f"{r}={u}" for r, u in s.verify_urls] or
                                      [f"{r}={u}" for r, u in urls.items()]),
        # The servers' own certificate is what verify trusts: the chain may not reach a root it knows.
        verify_ca=flyctl.portable(localrun.certificate_file(state_dir, names[0])) if s.server_tls else None,
        websocket_url=websockets.apply(lambda urls: urls.get(s.primary_region, "")),
        verify_websocket_urls=websockets.apply(lambda urls: [f"{r}={u}" for r, u in urls.items()]),
        leaf_url=primary.apply(lambda sv: sv.leafnode_url if s.leafnodes else ""),
        leaf_remotes=primary.apply(lambda sv: natsconf.leaf_remote_snippet(s, sv.leafnode_url, tls_first=False)
                                   if s.leafnodes else ""),
        resources=commands,
        repair=json.dumps(tokens, sort_keys=True),
    )


def repair_token(cluster: str, state_dir: Path, server_name: str) -> str:
    """The token server_name's Command carries (localrun.observe); a server that is down, or whose files
    are gone, is named in words, so a preview says what up will do."""
    observed = localrun.observe(state_dir, server_name)
    if observed.problem:
        say = pulumi.log.warn if observed.known else pulumi.log.info
        say(f"{NAMESPACE}: cluster {cluster}: {server_name} {observed.problem}")
    return observed.token


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
