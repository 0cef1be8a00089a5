"""`python -m nats_fly` (also the `nats-fly` command): render, verify, local."""

from __future__ import annotations

import argparse
import sys

from .settings import SettingsError


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["verify"]:
        from . import verify
        return verify.main(argv[1:])
    if argv[:1] == ["fly"]:
        from . import flyops
        return flyops.main(argv[1:])
    if argv[:1] == ["local"]:
        from . import localrun
        return localrun.main(argv[1:])
    if argv[:1] == ["reference"]:
        from . import reference
        return reference.main(argv[1:])
    parser = argparse.ArgumentParser(prog="nats-fly", description="A global NATS cluster on Fly.io as code.")
    commands = parser.add_subparsers(dest="command", required=True)
    from . import render
    render.add_arguments(commands.add_parser("render", help="write a stack's build context (no Pulumi)"))
    commands.add_parser("verify", help="prove a running cluster is whole (see `verify --help`)")
    commands.add_parser("local", help="run local nats-server processes (used by the local platform)")
    commands.add_parser("fly", help="Fly operations that look first (used by the components)")
    commands.add_parser("reference", help="check or rewrite Pulumi.yaml's config block, the README's reference "
                                          "and NatsClusterArgs from the key catalogue")
    args = parser.parse_args(argv)
    try:
        return render.run(args)
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
