"""nats.conf as data: build a dict from Settings, then render it to NATS conf syntax.

As in the official Helm chart, one structure is the truth and the text is only
its rendering. Values the server learns at boot (its Machine id, its region)
and every secret are `Var`s: rendered as `$NAME`, resolved by nats-server from
the environment, so the rendered text never holds a secret. A secret inside a
string (a local route URL's password) is a `Secret` marker, filled in only by
the local process manager, into a conf file that only its owner can read.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import quote

from ..config.settings import NATS_VERSIONS, Settings

# Environment variables the entrypoint derives from Fly's runtime variables.
SERVER_NAME = "NATS_SERVER_NAME"
REGION_TAG = "NATS_REGION_TAG"
CLUSTER_ADVERTISE = "NATS_CLUSTER_ADVERTISE"
GATEWAY_ADVERTISE = "NATS_GATEWAY_ADVERTISE"
ROUTES = "NATS_ROUTES"  # a conf list of seed routes, one per peer found at boot
# Secrets, delivered as Fly secrets (or, locally, as the process environment).
SYS_PASSWORD = "NATS_SYS_PASSWORD"
ROUTE_PASSWORD = "NATS_ROUTE_PASSWORD"
SYS_USER = "sys"
ROUTE_USER = "route"
SYSTEM_ACCOUNT = "SYS"
APP_ACCOUNT = "APP"
DATA_DIR = "/data"  # the JetStream volume's mount point (fly.toml [[mounts]]), the store_dir
JETSTREAM_DIR = f"{DATA_DIR}/jetstream"  # where nats-server then keeps its files: <store_dir>/jetstream
TLS_CERT, TLS_KEY = "NATS_TLS_CERT", "NATS_TLS_KEY"  # the PEMs, as secrets (Fly) or environment (local)
TLS_CERT_FILE = "NATS_TLS_CERT_FILE"  # the entrypoint (locally: localrun) writes the NATS_TLS_CERT secret there
TLS_KEY_FILE = "NATS_TLS_KEY_FILE"


class Var(str):
    """A reference to an environment variable, rendered unquoted as `$NAME`.

    nats-server parses the variable's value as a conf value, not as a string: `4e4a` would
    be a number. So whoever sets one (the entrypoint, the local platform) sets `conf_string(v)`.
    """


class Secret:
    """A secret written into the conf file only by whoever holds it: the local process manager, from its
    environment (`fill`). Elsewhere (the Command's input, the state) the string holds only the marker. A
    string that is a marker alone is the secret itself (a user's password, which a reload then changes);
    a marker inside a longer string is a URL's userinfo (a route's password)."""

    PATTERN = re.compile(r"\{\{secret:([A-Z0-9_]+)\}\}")

    @staticmethod
    def mark(name: str) -> str:
        return "{{secret:%s}}" % name

    @classmethod
    def fill(cls, conf: Any, values: Mapping[str, str]) -> Any:
        """`conf` with every marker replaced by its value: as it is where the marker is the whole string,
        else percent-encoded as a URL's userinfo needs."""
        if isinstance(conf, Var):
            return conf
        if isinstance(conf, str):
            whole = cls.PATTERN.fullmatch(conf)
            if whole:
                return values[whole.group(1)]
            return cls.PATTERN.sub(lambda m: quote(values[m.group(1)], safe=""), conf)
        if isinstance(conf, dict):
            return {k: cls.fill(v, values) for k, v in conf.items()}
        if isinstance(conf, list):
            return [cls.fill(v, values) for v in conf]
        return conf

    @classmethod
    def names(cls, conf: Any) -> set[str]:
        return set(cls.PATTERN.findall(json.dumps(to_json(conf))))


def environment_names(data: Any) -> set[str]:
    """Every environment variable a conf in JSON form refers to: its Vars and its Secrets."""
    if isinstance(data, dict):
        if set(data) == {"$var"}:
            return {data["$var"]}
        return set().union(*(environment_names(v) for v in data.values()))
    if isinstance(data, list):
        return set().union(*(environment_names(v) for v in data))
    return set(Secret.PATTERN.findall(data)) if isinstance(data, str) else set()


def to_json(conf: Any) -> Any:
    """The conf as plain JSON data: a Var becomes {"$var": NAME}. (from_json reverses it.)"""
    if isinstance(conf, Var):
        return {"$var": str(conf)}
    if isinstance(conf, dict):
        return {k: to_json(v) for k, v in conf.items()}
    if isinstance(conf, list):
        return [to_json(v) for v in conf]
    return conf


def from_json(data: Any) -> Any:
    if isinstance(data, dict):
        if set(data) == {"$var"}:
            return Var(data["$var"])
        return {k: from_json(v) for k, v in data.items()}
    if isinstance(data, list):
        return [from_json(v) for v in data]
    return data


def conf_string(value: str) -> str:
    """A NATS conf double-quoted string; the server knows only these escapes."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r") + '"'


def conf_string_value(text: str) -> str:
    """The string a `conf_string` stands for (what nats-server makes of the variable)."""
    if len(text) < 2 or not (text[0] == text[-1] == '"'):
        return text
    escapes = {"\\": "\\", '"': '"', "n": "\n", "t": "\t", "r": "\r"}
    return re.sub(r'\\(.)', lambda m: escapes.get(m.group(1), m.group(0)), text[1:-1])


def user_password_var(user: str) -> str:
    return f"NATS_PASSWORD_{user.upper()}"


def leaf_password_var(user: str) -> str:
    return f"NATS_LEAF_PASSWORD_{user.upper()}"


# ---------------------------------------------------------------- building

def fly_conf(s: Settings) -> dict[str, Any]:
    """The one conf every Fly Machine of the stack runs; per-Machine values are Vars."""
    internal = f"{s.app}.internal"
    conf = _base(s, server_name=Var(SERVER_NAME), tags=[Var(REGION_TAG)], host="::",
                 client_port=s.ports.client, monitor_port=s.ports.monitor)
    # Fly's tls handler terminates TLS and forwards plaintext. TLS-first clients then need
    # INFO to say TLS is available, which takes a tls block plus allow_non_tls.
    conf["tls"] = {"cert_file": Var(TLS_CERT_FILE), "key_file": Var(TLS_KEY_FILE)}
    if s.server_tls:
        # A real certificate: TLS-first clients may also go straight to the raw port. `auto` waits
        # briefly for a ClientHello, then speaks INFO-first to everyone else.
        conf["tls"]["handshake_first"] = "auto"
    conf["allow_non_tls"] = True
    # Route URLs carry the route password, so the entrypoint builds them at boot from the
    # addresses of <app>.internal (mesh) or <region>.<app>.internal (supercluster: a cluster per region).
    name = s.cluster_name if s.topology == "mesh" else Var("FLY_REGION")
    conf["cluster"] = _cluster(name, f"[::]:{s.ports.cluster}", Var(ROUTES), Var(CLUSTER_ADVERTISE))
    conf["cluster"]["authorization"] = {"user": ROUTE_USER, "password": Var(ROUTE_PASSWORD)}
    if s.topology == "supercluster":
        conf["gateway"] = _gateway(Var("FLY_REGION"), f"[::]:{s.ports.gateway}", Var(GATEWAY_ADVERTISE), {
            r: [f"nats://{r}.{internal}:{s.ports.gateway}"] for r in s.regions})
    if s.websocket:
        # Fly's proxy terminates TLS on 443 (handlers tls + http) and passes the upgrade on in plaintext.
        conf["websocket"] = _websocket(s, "::", s.ports.websocket, (f"https://{s.app}.fly.dev",))
    if s.leafnodes:
        # Fly's tls handler terminates the remotes' TLS-first handshake: the listener speaks plaintext and
        # has no tls block (one would make INFO say tls_required, and the remote's TLS is done already).
        # The advertised URL is the public one, so what a leaf learns to reconnect to goes through Fly.
        conf["leafnodes"] = _leafnodes(s, f"0.0.0.0:{s.ports.leafnode}", f"{s.app}.fly.dev:{s.ports.public_leaf}")
    if s.jetstream:
        conf["jetstream"] = _jetstream(s, DATA_DIR)
        conf.update(_feature_flags(s))
    return conf


def _leafnodes(s: Settings, listen: str, advertise: str | None) -> dict[str, Any]:
    """The leafnode listener: each leaf user logs in with its password and lands in the app's account."""
    block: dict[str, Any] = {"listen": listen}
    if advertise:
        block["advertise"] = advertise
    block["authorization"] = {"users": [{"user": u, "password": Var(leaf_password_var(u)), "account": APP_ACCOUNT}
                                        for u in s.leaf_users]}
    return block


def leaf_remote_snippet(s: Settings, url: str, tls_first: bool) -> str:
    """A `leafnodes { remotes [...] }` block for a leaf node's own conf, its password left for the user
    to fill in (URL-escaped): `first_info_timeout` leaves room for Fly's proxy to reach a Machine."""
    user = s.leaf_users[0] if s.leaf_users else "<leaf user>"
    scheme, _, rest = url.partition("://")
    remote: dict[str, Any] = {"url": f"{scheme}://{user}:<its leafPasswords entry>@{rest}"}
    if tls_first:
        remote["tls"] = {"handshake_first": True}
        remote["first_info_timeout"] = "5s"
    return render({"leafnodes": {"remotes": [remote]}})


def _websocket(s: Settings, host: str, port: int, default_origins: tuple[str, ...]) -> dict[str, Any]:
    """The WebSocket listener, behind TLS terminated in front of it. Its Origin check: the listed
    origins, else `default_origins`, else (none) only pages of the server's own origin; `*`: none."""
    block: dict[str, Any] = {"host": host, "port": port, "no_tls": True}
    origins = s.websocket_origins or default_origins
    if origins == ("*",):
        return block
    if origins:
        block["allowed_origins"] = list(origins)
    else:
        block["same_origin"] = True
    return block


ROUTE_PING_INTERVAL, ROUTE_PING_MAX = "5s", 3


def _cluster(name: Any, listen: str, routes: list | Var, advertise: Any = None, *,
             no_advertise: bool = True) -> dict[str, Any]:
    cluster = {
        "name": name,
        "listen": listen,
        "no_advertise": no_advertise,  # on Fly, clients sit behind its proxy and cannot reach 6PN addresses
        "connect_retries": 120,
        # A route that hears nothing back for ~15 s is closed and redialled. With the default (2 min
        # x 2) a route across a partition stays open and resumes on TCP's retransmission backoff,
        # about 25 s after a 30 s cut heals.
        "ping_interval": ROUTE_PING_INTERVAL,
        "ping_max": ROUTE_PING_MAX,
        "routes": routes,
    }
    if advertise is not None:
        cluster["advertise"] = advertise
    return cluster


def _gateway(name: Any, listen: str, advertise: Any, urls: dict[str, list[str]]) -> dict[str, Any]:
    gateway = {
        "name": name,
        "listen": listen,
        "connect_retries": 120,
        "authorization": {"user": ROUTE_USER, "password": Var(ROUTE_PASSWORD)},
        "gateways": [{"name": region, "urls": region_urls} for region, region_urls in urls.items()],
    }
    if advertise is not None:
        gateway["advertise"] = advertise
    return gateway


@dataclass(frozen=True)
class LocalServer:
    """One nats-server process of the local platform, on loopback."""
    region: str
    index: int
    client_port: int
    cluster_port: int
    gateway_port: int
    monitor_port: int
    websocket_port: int
    leafnode_port: int
    tls: bool = False
    """Its client port requires TLS (serverTls): clients must use it, so its URL says tls://."""

    @property
    def name(self) -> str:
        return f"{self.region}-{self.index}"

    @property
    def client_url(self) -> str:
        return f"{'tls' if self.tls else 'nats'}://127.0.0.1:{self.client_port}"

    @property
    def websocket_url(self) -> str:
        return f"ws://127.0.0.1:{self.websocket_port}"

    @property
    def leafnode_url(self) -> str:
        return f"nats-leaf://127.0.0.1:{self.leafnode_port}"


PORTS_PER_SERVER = sum(1 for f in fields(LocalServer) if f.name.endswith("_port"))
"""A local server's loopback ports: client, cluster, gateway, monitor, websocket, leafnode."""


def local_conf(s: Settings, server: LocalServer, servers: list[LocalServer], store_dir: str) -> dict[str, Any]:
    """The conf of one local server: the same structure, explicit loopback routes. Routes and gateways
    are authorized as on Fly: each route URL carries the route password, as `Secret`s that the local
    process manager fills in from its environment when it writes the (private) conf file."""
    if s.topology == "mesh":
        cluster_name, peers = s.cluster_name, servers
    else:
        cluster_name, peers = server.region, [p for p in servers if p.region == server.region]
    # Client users' passwords in the conf file, not the environment: a reload changes them (DESIGN.md: User
    # passwords in the local conf file).
    conf = _base(s, server_name=server.name, tags=[f"region:{server.region}"], host="127.0.0.1",
                 client_port=server.client_port, monitor_port=server.monitor_port, user_password=Secret.mark)
    if s.server_tls:
        # Fly's tls block with the user's certificate, files the local process manager writes from its
        # environment. Without allow_non_tls: no proxy terminates TLS in front of a local server, so
        # every client must use TLS (INFO says tls_required, and clients upgrade), TLS-first ones too.
        conf["tls"] = {"cert_file": Var(TLS_CERT_FILE), "key_file": Var(TLS_KEY_FILE), "handshake_first": "auto"}
    # Unlike Fly's clients, behind a proxy, a local client reaches every server: told of its cluster's
    # client URLs (INFO connect_urls), a client given one URL fails over to the others.
    conf["cluster"] = _cluster(cluster_name, f"127.0.0.1:{server.cluster_port}",
                               [_route_url(p.cluster_port) for p in peers if p != server], no_advertise=False)
    conf["cluster"]["authorization"] = {"user": ROUTE_USER, "password": Var(ROUTE_PASSWORD)}
    if s.topology == "supercluster":
        conf["gateway"] = _gateway(server.region, f"127.0.0.1:{server.gateway_port}", None, {
            r: [f"nats://127.0.0.1:{p.gateway_port}" for p in servers if p.region == r] for r in s.regions})
    if s.websocket:
        conf["websocket"] = _websocket(s, "127.0.0.1", server.websocket_port, ())
    if s.leafnodes:
        conf["leafnodes"] = _leafnodes(s, f"127.0.0.1:{server.leafnode_port}", None)
    if s.jetstream:
        conf["jetstream"] = _jetstream(s, store_dir)  # nats-server adds jetstream/
        conf.update(_feature_flags(s))
    return conf


def _route_url(port: int) -> str:
    return f"nats-route://{ROUTE_USER}:{Secret.mark(ROUTE_PASSWORD)}@127.0.0.1:{port}"


def _base(s: Settings, *, server_name: Any, tags: list, host: str, client_port: int,
          monitor_port: int, user_password: Callable[[str], Any] = Var) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "server_name": server_name,
        "server_tags": tags,
        "host": host,
        "port": client_port,
        "http": f"0.0.0.0:{monitor_port}" if host == "::" else f"{host}:{monitor_port}",
        "lame_duck_grace_period": f"{s.lame_duck_grace_period}s",
        "lame_duck_duration": f"{s.lame_duck_duration}s",
        "max_connections": s.hard_limit,
    }
    conf.update(_accounts(s, user_password))
    return conf


def _accounts(s: Settings, user_password: Callable[[str], Any]) -> dict[str, Any]:
    """The system account, and account APP with the client users: each password `user_password(<its
    variable>)`, a Var (read at start) or a Secret marker (written into the conf file)."""
    sys_users = [{"user": SYS_USER, "password": Var(SYS_PASSWORD)}]
    if s.auth == "none":
        app_users = [{"user": "anonymous"}]
    else:
        app_users = [{"user": u, "password": user_password(user_password_var(u))} for u in s.users]
    app: dict[str, Any] = {"users": app_users}
    if s.jetstream:
        app["jetstream"] = "enabled"
    conf: dict[str, Any] = {
        "accounts": {SYSTEM_ACCOUNT: {"users": sys_users}, APP_ACCOUNT: app},
        "system_account": SYSTEM_ACCOUNT,
    }
    if s.auth == "none":
        conf["no_auth_user"] = "anonymous"
    return conf


UNIQUE_TAG_REGIONS = 3  # an R3 stream's replicas, one per region
FILE_STORE_SHARE = 0.9  # of the volume: a tenth is left to the filesystem and to compaction
MEMORY_STORE_SHARE = 0.5  # of the VM's memory: the rest is the server's own (connections, buffers, Raft)
GO_MEMORY_LIMIT_SHARE = 0.8  # GOMEMLIMIT: the Go runtime collects harder before the VM runs out


def _jetstream(s: Settings, store_dir: str) -> dict[str, Any]:
    # store_dir is a parent: nats-server keeps its files in <store_dir>/jetstream.
    js: dict[str, Any] = {
        "store_dir": store_dir,
        "max_file_store": int(s.volume_size_gb * 1024**3 * FILE_STORE_SHARE),
        "max_memory_store": int(s.vm_memory_mb * 1024**2 * MEMORY_STORE_SHARE),
    }
    if s.topology == "mesh" and len(s.regions) >= UNIQUE_TAG_REGIONS:
        # One cluster over every region: an R3 stream puts each replica in another region (the
        # server_tags "region:<code>"), so losing a region loses no stream. With fewer regions than
        # replicas the tag would leave every R3 stream unplaceable ("server tag not unique"), and a
        # supercluster's clusters are single regions: there replicas share a region, and it stays off.
        js["unique_tag"] = "region:"
    return js


def release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


FEATURE_FLAGS_SINCE = (2, 14)
"""nats-server refuses a `feature_flags` block before 2.14 (`unknown field`), so older versions get none."""


def _feature_flags(s: Settings) -> dict[str, Any]:
    """2.15 replicates interior deletes as delete-range entries (`js_raft_delete_range`, on by default), and a
    peer older than 2.14 panics when it applies one (a replicated mirror or source of a stream with gaps: a
    KV bucket's mirror, say). Off while such a version is allowed, so that a roll from it, or back to it, has
    no mixed moment where a 2.15 leader sends one. Reload cannot change a flag: a change restarts."""
    oldest = min(release(v) for v in NATS_VERSIONS)
    if release(s.nats_version) >= (2, 15) and oldest < FEATURE_FLAGS_SINCE:
        return {"feature_flags": {"js_raft_delete_range": False}}
    return {}


def go_memory_limit(s: Settings) -> str:
    """GOMEMLIMIT for a Machine of the stack's VM size (fly.toml [env])."""
    return f"{int(s.vm_memory_mb * GO_MEMORY_LIMIT_SHARE)}MiB"


# ---------------------------------------------------------------- rendering

_BARE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def render(conf: dict[str, Any]) -> str:
    """Render a conf dict to NATS conf text (the syntax `nats-server -t` parses)."""
    return "".join(_block(conf, 0))


def _block(items: dict[str, Any], depth: int) -> Iterable[str]:
    pad = "  " * depth
    for key, value in items.items():
        name = key if _BARE_KEY.match(key) else json.dumps(key)
        if isinstance(value, dict):
            yield f"{pad}{name} {{\n"
            yield from _block(value, depth + 1)
            yield f"{pad}}}\n"
        else:
            yield f"{pad}{name}: {_value(value, depth)}\n"


def _value(value: Any, depth: int) -> str:
    if isinstance(value, Var):
        return f"${value}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return conf_string(value)
    if isinstance(value, list):
        if not value:
            return "[]"
        pad = "  " * (depth + 1)
        inner = ",\n".join(f"{pad}{_value(v, depth + 1)}" for v in value)
        return f"[\n{inner}\n{'  ' * depth}]"
    if isinstance(value, dict):
        inner = ", ".join(f"{k}: {_value(v, depth)}" for k, v in value.items())
        return "{" + inner + "}"
    raise TypeError(f"cannot render {type(value).__name__} in nats.conf: {value!r}")
