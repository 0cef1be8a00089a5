"""`python -m nats_fly render`: write a stack's build context without Pulumi."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import buildctx, natsconf, settings as settings_mod, stack_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stack", required=True, help="stack name: reads config/Pulumi.<stack>.yaml")
    parser.add_argument("--out", required=True, type=Path, help="folder to write the files into")
    parser.add_argument("--project-dir", type=Path, default=Path.cwd(),
                        help="folder holding Pulumi.yaml (default: the current folder)")


def run(args: argparse.Namespace) -> int:
    s, given = stack_config.from_file(stack_config.stack_file(args.project_dir, args.stack))
    # Rendering needs no secret values: one the stack uses but has not set yet passes here (up asks for
    # it), but a secret given in plain text, or given where the stack cannot use it, is refused all the same.
    later = {key.name for key in settings_mod.KEYS if key.secret and settings_mod.applies(key, s)}
    for warning in settings_mod.check_secrets(s, {
            key: (settings_mod.OPAQUE, True) if value is None and key in later else (value, secret)
            for key, (value, secret) in given.items()}):
        print(f"warning: {warning}", file=sys.stderr)
    if s.platform == "fly":
        files = buildctx.build_context(s)
    else:
        servers = natsconf.local_servers(s)
        files = {f"{sv.name}.conf": natsconf.render(natsconf.local_conf(s, sv, servers, f"<state>/{sv.name}"))
                 for sv in servers}
    out = buildctx.write(files, args.out)
    for name in sorted(files):
        print(out / name)
    print(f"sha256 {buildctx.content_hash(files)}")
    return 0

