"""`python -m nats_fly` (also the `nats-fly` command): every operation of the contract, found by its path."""

from __future__ import annotations

import argparse
import sys
from importlib import import_module

from .contract.operations import OPERATIONS


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    for length in (2, 1):
        op = OPERATIONS.get(tuple(argv[:length]))
        if op is not None:
            module, function = op.handler.split(":")
            try:
                return getattr(import_module(module), function)(op.parse(argv[length:]))
            except SystemExit as done:  # argparse's usage errors (2) and --help (0)
                return done.code if isinstance(done.code, int) else int(done.code is not None)
    usage = argparse.ArgumentParser(prog="nats-fly", description="A global NATS cluster on Fly.io, as code.")
    usage.add_argument("operation", choices=sorted({" ".join(path) for path in OPERATIONS}), metavar="OPERATION",
                       help="; ".join(f"{' '.join(path)}: {op.summary.split(':')[0].split('.')[0]}"
                                      for path, op in OPERATIONS.items()))
    usage.parse_args(argv[:1])
    usage.error(f"{' '.join(argv[:2])!r} is not an operation")
    return 2


if __name__ == "__main__":
    sys.exit(main())
