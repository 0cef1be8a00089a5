"""Reading a stack's config: its YAML file, and what the running program can know of it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from . import settings as settings_mod
from .settings import NAMESPACE, SECRET_KEYS, SettingsError


def entries_from_stack_file(given: dict[str, tuple[Any, Any]], project_dir: Path, stack: str) -> dict:
    """Per-entry secretness of the secret maps, which the program is not told: the engine marks a whole
    key secret when one entry is (PULUMI_CONFIG_SECRET_KEYS lists keys, not entries). So the stack file
    at its default place is read, and an entry it holds in plain text, with the very value the program
    got, is plain. A stack run with --config-file elsewhere goes unread (the program cannot know it)."""
    try:
        config = (_load_yaml(stack_file(project_dir, stack)) or {}).get("config") or {}
    except (OSError, SettingsError):
        return given
    judged = dict(given)
    for key in (k.name for k in settings_mod.KEYS if k.secret and k.kind == "map"):
        value, secret = given.get(key, (None, True))
        written = config.get(f"{NAMESPACE}:{key}", config.get(key))
        if isinstance(value, dict) and isinstance(written, dict) and secret is True:
            judged[key] = (value, {entry: not (entry in written and not _is_secure(written[entry])
                                               and written[entry] == text) for entry, text in value.items()})
    return judged


def stack_file(project_dir: Path, stack: str) -> Path:
    project = _load_yaml(project_dir / "Pulumi.yaml")
    return project_dir / project.get("stackConfigDir", ".") / f"Pulumi.{stack}.yaml"


def from_file(path: Path) -> tuple[dict[str, Any], dict[str, tuple[Any, Any]]]:
    """A stack file's keys (for platforms.settings to validate), and its secret keys as (value,
    stored-as-secret); a map's entries are judged one by one, each unreadable (OPAQUE) when it is a secret."""
    if not path.exists():
        raise SettingsError([f"stack file {path}: not found"])
    document = _load_yaml(path) or {}
    config = (document.get("config") if isinstance(document, dict) else None) or {}
    if not isinstance(config, dict):
        raise SettingsError([f"stack file {path}: its config is {settings_mod.show(config)}; allowed: a map of "
                             f"keys to values"])
    values = {str(k): v for k, v in config.items()}
    bare = {k.split(":", 1)[1] if k.startswith(NAMESPACE + ":") else k: v for k, v in values.items()}
    given = {}
    for key in SECRET_KEYS:
        value = bare.pop(key, None)
        for other in (f"{NAMESPACE}:{key}", key):
            values.pop(other, None)
        if isinstance(value, dict) and value and not _is_secure(value):
            given[key] = ({e: settings_mod.OPAQUE if _is_secure(v) else v for e, v in value.items()},
                          {e: _is_secure(v) for e, v in value.items()})
        else:
            given[key] = (settings_mod.OPAQUE if _is_secure(value) else value, value is None or _is_secure(value))
    return values, given


def _is_secure(value: Any) -> bool:
    """A value `pulumi config set --secret` wrote: {secure: ...}."""
    return isinstance(value, dict) and set(value) == {"secure"}


def decode(value: Any) -> Any:
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
                shown = key if len(str(key)) <= settings_mod.SHOWN_CHARS else settings_mod.show(str(key))
                raise SettingsError([f"{shown}: defined twice at line {key_node.start_mark.line + 1}; "
                                     f"each key may appear once"])
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _load_yaml(path: Path) -> Any:
    with open(path) as handle:
        try:
            return yaml.load(handle, Loader=_UniqueKeyLoader)
        except yaml.YAMLError as error:
            where = getattr(error, "problem_mark", None)
            raise SettingsError([f"{path}: not YAML ({getattr(error, 'problem', None) or 'unreadable'}"
                                 f"{f' at line {where.line + 1}' if where else ''}); allowed: a Pulumi stack "
                                 f"file"]) from None
