"""fly.toml -> the app config flyctl deploys, and the Machine config it launches."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

SIGNALS = {"SIGINT", "SIGTERM", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGKILL", "SIGSTOP", "SIGHUP"}
STRATEGIES = {"rolling", "immediate", "canary", "bluegreen"}
VM_SIZES = {  # preset -> (cpu_kind, cpus, memory_mb)
    "shared-cpu-1x": ("shared", 1, 256), "shared-cpu-2x": ("shared", 2, 512),
    "shared-cpu-4x": ("shared", 4, 1024), "shared-cpu-8x": ("shared", 8, 2048),
    "performance-1x": ("performance", 1, 2048), "performance-2x": ("performance", 2, 4096),
    "performance-4x": ("performance", 4, 8192), "performance-8x": ("performance", 8, 16384),
}


class ConfigError(Exception):
    pass


def seconds(value, bare_unit: float = 1.0) -> float:
    """'15s', '1m30s', '500ms', '5m0s' -> seconds; a bare number is in `bare_unit`s."""
    if isinstance(value, (int, float)):
        return float(value) * bare_unit
    total, text = 0.0, str(value).strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text) * bare_unit
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ConfigError(f"invalid duration {value!r}")
    for number, unit in parts:
        total += float(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total


def gigabytes(value) -> int:
    if isinstance(value, int):
        return value
    m = re.fullmatch(r"(\d+)\s*(gb|g|gib)?", str(value).strip().lower())
    if not m:
        raise ConfigError(f"invalid size {value!r}")
    return int(m.group(1))


def megabytes(value) -> int:
    if isinstance(value, int):
        return value
    m = re.fullmatch(r"(\d+)\s*(mb|m|gb|g)?", str(value).strip().lower())
    if not m:
        raise ConfigError(f"invalid memory {value!r}")
    return int(m.group(1)) * (1024 if (m.group(2) or "mb").startswith("g") else 1)


def _tables(value) -> list[dict]:
    if value is None:
        return []
    return [value] if isinstance(value, dict) else list(value)


def load(path: Path) -> dict:
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"failed to parse {path}: {e}") from None
    validate(data)
    return data


def validate(cfg: dict) -> None:
    signal = cfg.get("kill_signal", "SIGINT")
    if signal not in SIGNALS:
        raise ConfigError(f"kill_signal {signal!r} is not one of {sorted(SIGNALS)}")
    if not 0 < kill_timeout(cfg) <= 300:
        raise ConfigError("kill_timeout must be between 1s and 300s")
    strategy = cfg.get("deploy", {}).get("strategy", "rolling")
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown deployment strategy {strategy!r}")
    for key, value in cfg.get("env", {}).items():
        if not isinstance(value, str):
            raise ConfigError(f"[env] {key} must be a string, got {value!r}")
    for mount in _tables(cfg.get("mounts")):
        if mount.get("destination") in (None, "", "/"):
            raise ConfigError("a [[mounts]] destination is required and must not be '/'")
        if not mount.get("source"):
            raise ConfigError("a [[mounts]] source (the volume name) is required")
    for name, check in cfg.get("checks", {}).items():
        if check.get("type", "http") not in ("http", "tcp"):
            raise ConfigError(f"[checks.{name}] type must be http or tcp")
        if "port" not in check:
            raise ConfigError(f"[checks.{name}] port is required")
    for svc in cfg.get("services", []):
        if "internal_port" not in svc:
            raise ConfigError("[[services]] internal_port is required")


def kill_timeout(cfg: dict) -> float:
    return seconds(cfg.get("kill_timeout", 5))


def mounts(cfg: dict) -> list[dict]:
    return _tables(cfg.get("mounts"))


def guest(cfg: dict) -> dict:
    vm = (_tables(cfg.get("vm")) or [{}])[0]
    kind, cpus, memory = VM_SIZES.get(vm.get("size", "shared-cpu-1x"), VM_SIZES["shared-cpu-1x"])
    return {"cpu_kind": vm.get("cpu_kind", kind), "cpus": int(vm.get("cpus", cpus)),
            "memory_mb": megabytes(vm.get("memory", vm.get("memory_mb", memory)))}


def size_name(g: dict) -> str:
    for name, (kind, cpus, _mem) in VM_SIZES.items():
        if (kind, cpus) == (g["cpu_kind"], g["cpus"]):
            return name
    return f"{g['cpu_kind']}-cpu-{g['cpus']}x"


def services(cfg: dict) -> list[dict]:
    out = []
    for svc in cfg.get("services", []):
        conc = svc.get("concurrency", {})
        out.append({
            "protocol": svc.get("protocol", "tcp"),
            "internal_port": svc["internal_port"],
            "autostop": svc.get("auto_stop_machines", "off"),
            "autostart": svc.get("auto_start_machines", False),
            "min_machines_running": svc.get("min_machines_running", 0),
            "ports": [{"port": p["port"], **({"handlers": p["handlers"]} if p.get("handlers") else {}),
                       **({"tls_options": p["tls_options"]} if p.get("tls_options") else {}),
                       **({"force_https": True} if p.get("force_https") else {})}
                      for p in svc.get("ports", [])],
            "concurrency": {"type": conc.get("type", "connections"),
                            "soft_limit": conc.get("soft_limit", 20),
                            "hard_limit": conc.get("hard_limit")},
            "checks": [{"type": "tcp", "interval": c.get("interval", "15s"), "timeout": c.get("timeout", "2s"),
                        "grace_period": c.get("grace_period", "0s")} for c in svc.get("tcp_checks", [])]
                      + [{"type": "http", "interval": c.get("interval", "15s"), "timeout": c.get("timeout", "2s"),
                          "grace_period": c.get("grace_period", "0s"), "method": c.get("method", "get"),
                          "path": c.get("path", "/")} for c in svc.get("http_checks", [])],
        })
    return out


def machine_config(cfg: dict, image_ref: str, release_version: int, release_id: str) -> dict:
    """The Machine config a deploy launches (fly-go MachineConfig, snake_case)."""
    env = dict(cfg.get("env", {}))
    env["FLY_PROCESS_GROUP"] = "app"
    env["PRIMARY_REGION"] = cfg.get("primary_region", "")
    restart = (_tables(cfg.get("restart")) or [{}])[0]
    policy = {"always": "always", "never": "no", "on-failure": "on-failure"}[restart.get("policy", "on-failure")]
    return {
        "env": env,
        "init": {},
        "guest": guest(cfg),
        "metadata": {"fly_flyctl_version": "0.3.standin", "fly_platform_version": "v2",
                     "fly_process_group": "app", "fly_release_id": release_id,
                     "fly_release_version": str(release_version)},
        "mounts": [{"name": m["source"], "path": m["destination"]} for m in mounts(cfg)],
        "services": services(cfg),
        "checks": {name: {"type": c.get("type", "http"), "port": c["port"],
                          "interval": c.get("interval", "15s"), "timeout": c.get("timeout", "2s"),
                          "grace_period": c.get("grace_period", "0s"),
                          **({"method": c.get("method", "get"), "path": c.get("path", "/")}
                             if c.get("type", "http") == "http" else {})}
                   for name, c in cfg.get("checks", {}).items()},
        "restart": {"policy": policy, **({"max_retries": restart.get("retries", 10)} if policy == "on-failure" else {})},
        "image": image_ref,
        "stop_config": {"timeout": f"{int(kill_timeout(cfg))}s", "signal": cfg.get("kill_signal", "SIGINT")},
    }
