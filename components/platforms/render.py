"""`nats-fly render`: what a stack would run, written to a folder without Pulumi: the Fly build context,
or the local servers' confs (the platform's own `files`)."""

from __future__ import annotations

import sys
from pathlib import Path

from ..config import settings as settings_mod, stackfile
from ..config.settings import SettingsError
from ..contract import operations as ops
from ..render import buildctx
from ..render.digest import content_hash
from . import get, settings


def run(op: ops.Render) -> int:
    try:
        values, given = stackfile.from_file(stackfile.stack_file(op.project_dir or Path.cwd(), op.stack))
        s = settings(values)
        # Rendering needs no secret values: one the stack uses but has not set yet passes here (up asks for
        # it), but a secret given in plain text, or given where the stack cannot use it, is refused all the same.
        later = {key.name for key in settings_mod.KEYS if key.secret and settings_mod.applies(key, s)}
        for warning in settings_mod.check_secrets(s, {
                key: (settings_mod.OPAQUE, True) if value is None and key in later else (value, secret)
                for key, (value, secret) in given.items()}):
            print(f"warning: {warning}", file=sys.stderr)
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    files = get(s.platform).files(s)
    out = buildctx.write(files, op.out)
    for name in sorted(files):
        print(out / name)
    print(f"sha256 {content_hash(files)}")
    return 0
