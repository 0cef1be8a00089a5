"""Stack settings: one validated, immutable model of everything a stack may say.

Every key is checked before any resource exists. A bad value raises
`SettingsError`, whose message names the key, the value and what is allowed,
so `pulumi preview` fails before anything touches Fly.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from .regions import FLY_REGIONS

NAMESPACE = "nats-fly"
TOPOLOGIES = ("mesh", "supercluster")
PLATFORMS = ("fly", "local")
AUTH_MODES = ("password", "none")
PUBLIC_IPV4 = ("shared", "dedicated", "none")
MAX_KILL_TIMEOUT = 300  # Fly's ceiling for kill_timeout
MIN_LAME_DUCK_DURATION = 30  # nats-server refuses less
MAX_VOLUME_GB = 500
MAX_LOCAL_SERVERS_PER_REGION = 10  # Fly's ceiling for one volume
VM_SIZES = (
    "shared-cpu-1x", "shared-cpu-2x", "shared-cpu-4x", "shared-cpu-8x",
    "performance-1x", "performance-2x", "performance-4x", "performance-8x", "performance-16x",
)

_APP_NAME = re.compile(r"^[a-z]([a-z0-9-]*[a-z0-9])?$")
_USER_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_ORG = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_DURATION = re.compile(r"^(\d+)(s|m)?$")


class SettingsError(ValueError):
    """One or more stack keys are invalid. Each line names key, value and what is allowed."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid stack settings:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True)
class Ports:
    client: int = 4222
    cluster: int = 4248
    gateway: int = 7222
    monitor: int = 8222
    public: int = 10000
    public_tls: int = 10001


@dataclass(frozen=True)
class Settings:
    app: str
    regions: tuple[str, ...]
    machines: Mapping[str, int]
    platform: str = "fly"
    org: str = "personal"
    topology: str = "mesh"
    ports: Ports = field(default_factory=Ports)
    lame_duck_grace_period: int = 10
    lame_duck_duration: int = 30
    kill_timeout: int = 60
    vm_size: str = "shared-cpu-1x"
    vm_memory_mb: int = 512
    soft_limit: int = 20000
    hard_limit: int = 25000
    peer_wait: int = 20
    public_ipv4: str = "shared"
    auth: str = "password"
    users: tuple[str, ...] = ("app",)
    jetstream: bool = False
    volume_size_gb: int = 1
    local_base_port: int = 14000
    verify: bool = False
    verify_urls: tuple[str, ...] = ()
    server_tls: bool = False

    @property
    def primary_region(self) -> str:
        return self.regions[0]

    @property
    def total_machines(self) -> int:
        return sum(self.machines.values())

    @property
    def cluster_name(self) -> str:
        return self.app


# key -> (Settings field, parser, default shown in the reference). The order is the README's.
def _keys() -> dict[str, tuple[str, Callable[[str, Any, list[str]], Any]]]:
    return {
        "app": ("app", _app),
        "org": ("org", _pattern(_ORG, "a Fly organization slug (lowercase letters, digits and '-')")),
        "platform": ("platform", _choice(PLATFORMS)),
        "regions": ("regions", None),  # parsed together with machinesPerRegion
        "machinesPerRegion": ("machines", None),
        "topology": ("topology", _choice(TOPOLOGIES)),
        "clientPort": ("ports.client", _port),
        "clusterPort": ("ports.cluster", _port),
        "gatewayPort": ("ports.gateway", _port),
        "monitorPort": ("ports.monitor", _port),
        "publicPort": ("ports.public", _port),
        "publicTlsPort": ("ports.public_tls", _port),
        "lameDuckGracePeriod": ("lame_duck_grace_period", _duration),
        "lameDuckDuration": ("lame_duck_duration", _duration),
        "killTimeout": ("kill_timeout", _duration),
        "vmSize": ("vm_size", _choice(VM_SIZES)),
        "vmMemory": ("vm_memory_mb", _int_range(256, 65536, "MB")),
        "softLimit": ("soft_limit", _int_range(1, 1_000_000, "connections")),
        "hardLimit": ("hard_limit", _int_range(1, 1_000_000, "connections")),
        "peerWait": ("peer_wait", _int_range(0, 600, "seconds")),
        "publicIpv4": ("public_ipv4", _choice(PUBLIC_IPV4)),
        "auth": ("auth", _choice(AUTH_MODES)),
        "users": ("users", _users),
        "jetstream": ("jetstream", _bool),
        "volumeSize": ("volume_size_gb", _int_range(1, MAX_VOLUME_GB, "GB")),
        "localBasePort": ("local_base_port", _int_range(1024, 65000, "")),
        "verify": ("verify", _bool),
        "verifyUrls": ("verify_urls", _verify_urls),
        "serverTls": ("server_tls", _bool),
    }





def load(values: Mapping[str, Any]) -> Settings:
    """Validate raw stack config (keys with or without the `nats-fly:` prefix) into Settings."""
    problems: list[str] = []
    raw = {}
    for key, value in values.items():
        bare = key.split(":", 1)[1] if key.startswith(NAMESPACE + ":") else key
        if ":" in bare:
            continue  # another namespace's key (aws:region, ...) is not ours to judge
        raw[bare] = value
    known = _keys()
    for key in raw:
        if key not in known and key not in SECRET_KEYS:
            problems.append(f"{_k(key)}: unknown key; allowed keys: {', '.join(known)}")

    kwargs: dict[str, Any] = {}
    ports: dict[str, int] = {}
    for key, (target, parse) in known.items():
        if parse is None or key not in raw:
            continue
        value = parse(key, raw[key], problems)
        if value is None:
            continue
        if target.startswith("ports."):
            ports[target.split(".", 1)[1]] = value
        else:
            kwargs[target] = value

    if "app" not in raw:
        problems.append(f"{_k('app')}: missing; set a Fly app name (a DNS label, at most 63 characters)")
    regions, machines = _regions(raw.get("regions"), raw.get("machinesPerRegion", 1), problems)
    kwargs["regions"], kwargs["machines"] = regions, machines
    kwargs["ports"] = Ports(**ports)
    if problems:
        raise SettingsError(problems)
    settings = Settings(**kwargs)
    _relations(settings, problems)
    if problems:
        raise SettingsError(problems)
    return settings


def _relations(s: Settings, problems: list[str]) -> None:
    lame_duck_total = s.lame_duck_grace_period + s.lame_duck_duration
    if s.lame_duck_duration < MIN_LAME_DUCK_DURATION:
        problems.append(f"{_k('lameDuckDuration')}: {s.lame_duck_duration}s is too short; "
                        f"nats-server allows at least {MIN_LAME_DUCK_DURATION}s")
    if s.lame_duck_grace_period >= s.lame_duck_duration:
        problems.append(f"{_k('lameDuckGracePeriod')}: {s.lame_duck_grace_period}s must be shorter than "
                        f"lameDuckDuration ({s.lame_duck_duration}s)")
    if not lame_duck_total < s.kill_timeout <= MAX_KILL_TIMEOUT:
        problems.append(f"{_k('killTimeout')}: {s.kill_timeout}s must outlast lameDuckGracePeriod + "
                        f"lameDuckDuration ({lame_duck_total}s) and be at most {MAX_KILL_TIMEOUT}s (Fly's limit)")
    if s.soft_limit > s.hard_limit:
        problems.append(f"{_k('softLimit')}: {s.soft_limit} must not exceed hardLimit ({s.hard_limit})")
    internal = {"clientPort": s.ports.client, "clusterPort": s.ports.cluster,
                "gatewayPort": s.ports.gateway, "monitorPort": s.ports.monitor}
    public = {"publicPort": s.ports.public, "publicTlsPort": s.ports.public_tls}
    for group in (internal, public):
        seen: dict[int, str] = {}
        for key, port in group.items():
            if port in seen:
                problems.append(f"{_k(key)}: {port} is already used by {seen[port]}; ports must differ")
            seen[port] = key
    if s.platform == "local":
        crowded = [f"{r}={n}" for r, n in s.machines.items() if n > MAX_LOCAL_SERVERS_PER_REGION]
        if crowded:
            problems.append(f"{_k('machinesPerRegion')}: {', '.join(crowded)} is too many for the local "
                            f"platform; allowed: 1..{MAX_LOCAL_SERVERS_PER_REGION} per region")
        span = local_port_span(s)
        if s.local_base_port + span > 65535:
            problems.append(f"{_k('localBasePort')}: {s.local_base_port} leaves no room for {span} ports; "
                            f"allowed: 1024..{65535 - span}")
    if s.jetstream:
        need = 3
        if s.topology == "supercluster":
            short = [r for r in s.regions if s.machines[r] < need]
            if short:
                problems.append(f"{_k('machinesPerRegion')}: {', '.join(f'{r}={s.machines[r]}' for r in short)} "
                                f"is too few for jetstream in the supercluster topology; R3 streams need "
                                f"at least {need} servers in each region")
        elif s.total_machines < need:
            problems.append(f"{_k('machinesPerRegion')}: {s.total_machines} servers in all is too few for "
                            f"jetstream; R3 streams need at least {need}")


def local_port_slot(region: str, index: int) -> int:
    """A local server's slot: by the region's place in Fly's list, so adding or removing
    a region never moves another region's ports. Four ports per slot."""
    return list(FLY_REGIONS).index(region) * MAX_LOCAL_SERVERS_PER_REGION + index


def local_port_span(s: Settings) -> int:
    return 4 * (1 + max(local_port_slot(r, s.machines[r] - 1) for r in s.regions))


def _k(key: str) -> str:
    return f"{NAMESPACE}:{key}"


def _regions(value: Any, per_region: Any, problems: list[str]) -> tuple[tuple[str, ...], dict[str, int]]:
    default = _count("machinesPerRegion", per_region, problems)
    if value is None:
        problems.append(f"{_k('regions')}: missing; give a list of Fly region codes, the first is primary")
        return (), {}
    items = _list("regions", value, problems)
    if items is None:
        return (), {}
    if not items:
        problems.append(f"{_k('regions')}: [] is empty; give at least one Fly region code")
    regions: list[str] = []
    machines: dict[str, int] = {}
    for item in items:
        code, _, count = str(item).partition("=")
        code = code.strip()
        if code not in FLY_REGIONS:
            problems.append(f"{_k('regions')}: {code!r} is not a Fly region; allowed: {', '.join(FLY_REGIONS)}")
            continue
        if code in machines:
            problems.append(f"{_k('regions')}: {code!r} is listed twice; each region may appear once")
            continue
        n = _count(f"regions[{code}]", count.strip(), problems) if count else default
        regions.append(code)
        machines[code] = n if n is not None else 1
    return tuple(regions), machines


def _count(key: str, value: Any, problems: list[str]) -> int | None:
    return _int_range(1, 100, "machines")(key, value, problems)


def _list(key: str, value: Any, problems: list[str]) -> list | None:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            value = [v for v in value.split(",") if v.strip()]
    if not isinstance(value, list):
        problems.append(f"{_k(key)}: {value!r} is not a list")
        return None
    return value


def _app(key: str, value: Any, problems: list[str]) -> str | None:
    if not isinstance(value, str) or len(value) > 63 or not _APP_NAME.match(value):
        problems.append(f"{_k(key)}: {value!r} is not a valid app name; allowed: a DNS label of lowercase "
                        f"letters, digits and '-', starting with a letter, at most 63 characters")
        return None
    return value


def _pattern(regex: re.Pattern, allowed: str):
    def parse(key: str, value: Any, problems: list[str]) -> str | None:
        if not isinstance(value, str) or not regex.match(value):
            problems.append(f"{_k(key)}: {value!r} is not valid; allowed: {allowed}")
            return None
        return value
    return parse


def _choice(choices: tuple[str, ...]):
    def parse(key: str, value: Any, problems: list[str]) -> str | None:
        if value not in choices:
            problems.append(f"{_k(key)}: {value!r} is not allowed; allowed: {', '.join(choices)}")
            return None
        return value
    return parse


def _int_range(low: int, high: int, unit: str):
    def parse(key: str, value: Any, problems: list[str]) -> int | None:
        number = value
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
            number = int(value)
        if isinstance(number, bool) or not isinstance(number, int) or not low <= number <= high:
            problems.append(f"{_k(key)}: {value!r} is out of range; allowed: an integer {low}..{high} {unit}".rstrip())
            return None
        return number
    return parse


def _port(key: str, value: Any, problems: list[str]) -> int | None:
    return _int_range(1, 65535, "")(key, value, problems)


def _duration(key: str, value: Any, problems: list[str]) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    match = _DURATION.match(value.strip()) if isinstance(value, str) else None
    if not match:
        problems.append(f"{_k(key)}: {value!r} is not a duration; allowed: whole seconds like 30, '30s' or '2m'")
        return None
    seconds = int(match.group(1)) * (60 if match.group(2) == "m" else 1)
    return seconds


def _bool(key: str, value: Any, problems: list[str]) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    problems.append(f"{_k(key)}: {value!r} is not a boolean; allowed: true, false")
    return None


def _users(key: str, value: Any, problems: list[str]) -> tuple[str, ...] | None:
    items = _list(key, value, problems)
    if items is None:
        return None
    users: list[str] = []
    for name in items:
        if not isinstance(name, str) or not _USER_NAME.match(name) or name == "sys":
            problems.append(f"{_k(key)}: {name!r} is not a valid user name; allowed: lowercase letters, digits "
                            f"and '_', starting with a letter, at most 32, and not 'sys' (the system user)")
        elif name in users:
            problems.append(f"{_k(key)}: {name!r} is listed twice; each user may appear once")
        else:
            users.append(name)
    if not users and not problems:
        problems.append(f"{_k(key)}: [] is empty; give at least one client user")
    return tuple(users)
# Keys whose values must be Pulumi secrets (`pulumi config set --secret`). They never
# enter Settings: they travel as secret Outputs to Fly secrets and process environments.
SECRET_KEYS = ("sysPassword", "userPasswords", "tlsCert", "tlsKey")
OPAQUE = object()  # a secret given as an Output: present, checked when it resolves


def check_secrets(s: Settings, given: Mapping[str, tuple[Any, bool]]) -> None:
    """Validate the secret keys: `given` maps key -> (value, whether it was stored as a secret)."""
    problems: list[str] = []
    for key, (value, is_secret) in given.items():
        if value not in (None, "", {}, "{}") and not is_secret:
            problems.append(f"{_k(key)}: given in plain text; allowed: a secret, set it with "
                            f"`pulumi config set --secret {key}` (the value is not shown here)")
    for key in ("sysPassword", "userPasswords"):
        value = given.get(key, (None, True))[0]
        texts = value.values() if isinstance(value, dict) else [value]
        if any(isinstance(t, str) and re.search(r"[\x00-\x1f\x7f]", t) for t in texts):
            problems.append(f"{_k(key)}: holds a control character (newline, tab...); allowed: printable "
                            f"characters only (the value is not shown here)")
    sys_password = given.get("sysPassword", (None, True))[0]
    if sys_password is OPAQUE:
        pass
    elif not sys_password or not isinstance(sys_password, str) or len(sys_password) < 12:
        problems.append(f"{_k('sysPassword')}: missing or shorter than 12 characters; allowed: a secret "
                        f"of at least 12 characters for the system user (verify and monitoring)")
    passwords = given.get("userPasswords", (None, True))[0]
    if isinstance(passwords, str):
        try:
            passwords = json.loads(passwords)
        except json.JSONDecodeError:
            passwords = None
    if s.auth == "password" and passwords is not OPAQUE:
        if not isinstance(passwords, dict):
            problems.append(f"{_k('userPasswords')}: missing; allowed: a secret map of user -> password, "
                            f"set with `pulumi config set --secret --path userPasswords.<user>`")
        else:
            for user in s.users:
                if not isinstance(passwords.get(user), str) or len(passwords[user]) < 8:
                    problems.append(f"{_k('userPasswords')}: no password of at least 8 characters for user "
                                    f"{user!r}; allowed: one per entry of users")
            for user in passwords:
                if user not in s.users:
                    problems.append(f"{_k('userPasswords')}: {user!r} is not in users {list(s.users)}; "
                                    f"allowed: passwords for listed users only")
    pem = {"tlsCert": "CERTIFICATE", "tlsKey": "PRIVATE KEY"}
    for key, kind in pem.items():
        value = given.get(key, (None, True))[0]
        if s.server_tls and value is not OPAQUE and (not isinstance(value, str) or "-----BEGIN" not in value
                                                      or kind not in value):
            problems.append(f"{_k(key)}: missing or not a PEM {kind.lower()}; allowed: with serverTls, a secret "
                            f"PEM set with `pulumi config set --secret {key} < file.pem`")
        elif not s.server_tls and value not in (None, ""):
            problems.append(f"{_k(key)}: given but serverTls is false; allowed: set serverTls: true to use it")
    if problems:
        raise SettingsError(problems)


def _verify_urls(key: str, value: Any, problems: list[str]) -> tuple[str, ...] | None:
    items = _list(key, value, problems)
    if items is None:
        return None
    urls = []
    for item in items:
        region, sep, url = str(item).partition("=")
        if not sep or region not in FLY_REGIONS or not re.match(r"^(nats|tls)://[^\s]+$", url):
            problems.append(f"{_k(key)}: {item!r} is not valid; allowed: REGION=nats://host:port "
                            f"(or tls://), with a Fly region code")
        else:
            urls.append(f"{region}={url}")
    return tuple(urls)
