"""The local platform's resources: a `ports` Command (when ports are chosen free) and one Command per
server (`python -m nats_fly local ensure|stop`)."""

from __future__ import annotations

import json

import pulumi
from pulumi_command import local

from ...config.settings import NAMESPACE
from ...contract import operations as ops
from ...contract.spec import portable
from ...processes import local as localrun
from ...render import natsconf
from ...render.digest import sha256
from ..base import Built, secret_outputs
from .. import Cluster
from . import ports


def build(cluster: Cluster) -> Built:
    s, name, parent = cluster.settings, cluster.name, cluster.parent
    state_dir = cluster.work_dir / ops.STATE_DIR_NAME
    names = ports.server_names(s)
    env = cluster.secrets.values(s).apply(lambda v: {k: natsconf.conf_string(x) for k, x in v.items()})
    if s.server_tls:
        # The certificate and key reach the process only here; it writes them into the server's folder.
        env = pulumi.Output.all(env, cluster.secrets.tls_cert, cluster.secrets.tls_key).apply(
            lambda v: {**v[0], natsconf.TLS_CERT: v[1], natsconf.TLS_KEY: v[2]})
    if s.local_base_port:
        layout: pulumi.Output = pulumi.Output.from_input(ports.layout(s))
    else:
        # Ports free on this machine at the first up, kept in the state: two clusters never share one.
        chosen = local.Command(f"{name}-ports", create=ops.LocalPorts(servers=tuple(names)).command(),
                               opts=pulumi.ResourceOptions(parent=parent))
        layout = chosen.stdout.apply(json.loads)
    servers = layout.apply(lambda found: ports.servers(s, found))
    # The store is named relative to the state folder, nats-server's working directory.
    confs = servers.apply(lambda found: {sv.name: natsconf.local_conf(s, sv, found, sv.name) for sv in found})
    commands: list[local.Command] = []
    tokens = {}
    for server_name in names:
        tokens[server_name] = repair_token(name, state_dir, server_name)
        server = servers.apply(lambda found, n=server_name: next(sv for sv in found if sv.name == n))
        commands.append(local.Command(
            f"{name}-{server_name}",
            create=server.apply(lambda sv: ops.LocalEnsure(
                name=sv.name, state_dir=portable(state_dir), client_port=sv.client_port,
                http_port=sv.monitor_port, nats_version=s.nats_version).command()),
            delete=ops.LocalStop(name=server_name, state_dir=portable(state_dir)).command(),
            stdin=confs.apply(lambda c, n=server_name: json.dumps(natsconf.to_json(c[n]), sort_keys=True)),
            environment=pulumi.Output.secret(env.apply(lambda e, t=tokens[server_name]: {
                **e, ops.REPAIR_ENV: t})),
            # One process per name: a replacement must stop the old one before starting anew. Each server
            # waits for the one before it (DESIGN.md: Restarts roll), so a restart goes one server at a time.
            opts=secret_outputs(parent, delete_before_replace=True, depends_on=commands[-1:]),
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
        image_hash=rendered.apply(lambda r: sha256("".join(r[k] for k in sorted(r)))),
        nats_conf=rendered.apply(lambda r: r[names[0]]),
        verify_urls=client_urls.apply(lambda urls: [f"{r}={u}" for r, u in s.verify_urls] or
                                      [f"{r}={u}" for r, u in urls.items()]),
        # The servers' own certificate is what verify trusts: the chain may not reach a root it knows.
        verify_ca=portable(localrun.certificate_file(state_dir, names[0])) if s.server_tls else None,
        websocket_url=websockets.apply(lambda urls: urls.get(s.primary_region, "")),
        verify_websocket_urls=websockets.apply(lambda urls: [f"{r}={u}" for r, u in urls.items()]),
        leaf_url=primary.apply(lambda sv: sv.leafnode_url if s.leafnodes else ""),
        leaf_remotes=primary.apply(lambda sv: natsconf.leaf_remote_snippet(s, sv.leafnode_url, tls_first=False)
                                   if s.leafnodes else ""),
        connection_urls=server_urls.apply(lambda urls: [u for _, u in s.verify_urls] or
                                          [u for r in s.regions for u in urls[r]]),
        connect_hint="it tells the client of its cluster's other servers; every server is in serverUrls",
        resources=commands,
        repair=json.dumps(tokens, sort_keys=True),
    )


def repair_token(cluster: str, state_dir, server_name: str) -> str:
    """The token server_name's Command carries (localrun.observe); a server that is down, or whose files
    are gone, is named in words, so a preview says what up will do."""
    observed = localrun.observe(state_dir, server_name)
    if observed.problem:
        say = pulumi.log.warn if observed.known else pulumi.log.info
        say(f"{NAMESPACE}: cluster {cluster}: {server_name} {observed.problem}")
    return observed.token
