"""Reading a stack's config: from the running Pulumi program, or from its YAML file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from . import settings as settings_mod
from .settings import NAMESPACE, SECRET_KEYS, Settings, SettingsError


def from_pulumi() -> dict[str, Any]:
    """The stack's nats-fly config as NatsClusterArgs, validated, secrets wrapped as secret Outputs."""
    import pulumi
    from pulumi.runtime import config as runtime_config

    raw = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    values = {k.split(":", 1)[1]: v for k, v in raw.items() if k.startswith(NAMESPACE + ":")}
    given = {key: (_decode(values.pop(key, None)), runtime_config.is_config_secret(f"{NAMESPACE}:{key}"))
             for key in SECRET_KEYS}
    s = settings_mod.load(values)
    settings_mod.check_secrets(s, given)
    args: dict[str, Any] = dict(values)
    for key, (value, _) in given.items():
        if value not in (None, "", {}):  # Pulumi.yaml's empty defaults mean "not given"
            args[key] = pulumi.Output.secret(value)
    return args


def stack_file(project_dir: Path, stack: str) -> Path:
    project = _load_yaml(project_dir / "Pulumi.yaml")
    return project_dir / project.get("stackConfigDir", ".") / f"Pulumi.{stack}.yaml"


def from_file(path: Path) -> tuple[Settings, dict[str, tuple[Any, bool]]]:
    """Settings from a stack file, and its secret keys as (value, stored-as-secret)."""
    if not path.exists():
        raise SettingsError([f"stack file {path}: not found"])
    config = (_load_yaml(path) or {}).get("config") or {}
    values = {k: v for k, v in config.items()}
    bare = {k.split(":", 1)[1] if k.startswith(NAMESPACE + ":") else k: v for k, v in values.items()}
    given = {}
    for key in SECRET_KEYS:
        value = bare.pop(key, None)
        for other in (f"{NAMESPACE}:{key}", key):
            values.pop(other, None)
        is_secret = _is_secure(value)
        given[key] = (settings_mod.OPAQUE if is_secret else value, is_secret or value is None)
    return settings_mod.load(values), given


def _is_secure(value: Any) -> bool:
    """A value `pulumi config set --secret` wrote: {secure: ...}, or a map of them (`--path k.x`)."""
    if isinstance(value, dict) and set(value) == {"secure"}:
        return True
    return isinstance(value, dict) and bool(value) and all(_is_secure(v) for v in value.values())


def _decode(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate keys, as Pulumi's own parser does."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise SettingsError([f"{key}: defined twice at line {key_node.start_mark.line + 1}; "
                                     f"each key may appear once"])
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _load_yaml(path: Path) -> Any:
    with open(path) as handle:
        return yaml.load(handle, Loader=_UniqueKeyLoader)
