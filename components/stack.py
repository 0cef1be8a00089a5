"""The stack program's side of the library (the project's __main__.py): a stack's `nats-fly:` config as
NatsCluster arguments, validated once, in the stack's words."""

from __future__ import annotations

from pathlib import Path

import pulumi
from pulumi.runtime import config as runtime_config, settings as runtime_settings

from . import platforms
from .cluster import StackArgs
from .config import settings as settings_mod, stackfile
from .config.settings import NAMESPACE, SECRET_KEYS


def stack_args() -> StackArgs:
    """The stack's config as NatsClusterArgs, secrets wrapped as secret Outputs. Refused here, before any
    resource: a bad key (SettingsError), a secret given in plain text, an entry of a secret map left plain
    in the stack file."""
    raw = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    values = {k.split(":", 1)[1]: v for k, v in raw.items() if k.startswith(NAMESPACE + ":")}
    given = {key: (stackfile.decode(values.pop(key, None)), runtime_config.is_config_secret(f"{NAMESPACE}:{key}"))
             for key in SECRET_KEYS}
    given = stackfile.entries_from_stack_file(given, Path(runtime_settings.get_root_directory() or "."), pulumi.get_stack())
    s = platforms.settings(values)
    for warning in settings_mod.check_secrets(s, given):
        pulumi.log.warn(warning)
    args = StackArgs(values)
    for key, (value, _) in given.items():
        if value not in (None, "", {}):  # Pulumi.yaml's empty defaults mean "not given"
            args[key] = pulumi.Output.secret(value)
    args.settings = s
    return args
