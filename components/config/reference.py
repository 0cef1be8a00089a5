"""The places a stack key is written down besides settings.KEYS, written from it: the `config:` block
of Pulumi.yaml, the README's config reference and the NatsClusterArgs TypedDict.

    python -m nats_fly reference --check    exit 1 when one of them differs from the catalogue
    python -m nats_fly reference --write    rewrite them
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .settings import KEYS, NAMESPACE, REQUIRED, Key

ROOT = Path(__file__).resolve().parents[2]  # the checkout: components/config/reference.py
README_START, README_END = "<!-- config reference: start -->", "<!-- config reference: end -->"
ARGS_START = "    # BEGIN NatsClusterArgs: written by `python -m nats_fly reference --write` from settings.KEYS\n"
ARGS_END = "    # END NatsClusterArgs\n"
CONFIG_START = "config:\n"
_PY_TYPES = {"string": "str", "integer": "int", "boolean": "bool", "list": "list[str]", "map": "dict[str, str]"}


def _scalar(value) -> str:
    return json.dumps(value) if isinstance(value, str) and (not value or ":" in value or value[0] in "*&!{[#") \
        else ("true" if value is True else "false" if value is False else str(value))


def pulumi_config() -> str:
    """The `config:` block of Pulumi.yaml: every stack key with its type, default and description."""
    lines = []
    for key in KEYS:
        if not key.stack:
            continue
        lines.append(f"  {NAMESPACE}:{key.name}:\n")
        if key.kind in ("string", "integer", "boolean"):
            lines.append(f"    type: {key.kind}\n")
        elif key.kind == "list":
            lines.append("    type: array\n    items:\n      type: string\n")
        if key.secret and key.required:  # Pulumi takes no default for a secret
            lines.append("    secret: true\n")
        lines.append(f"    description: {json.dumps(key.description)}\n")
        if key.default not in (REQUIRED, None):
            if isinstance(key.default, list):
                lines.append("    default: []\n" if not key.default else
                             "    default:\n" + "".join(f"      - {_scalar(v)}\n" for v in key.default))
            elif isinstance(key.default, dict):
                lines.append("    default: {}\n")
            else:
                lines.append(f"    default: {_scalar(key.default)}\n")
    return "".join(lines)


def _default_text(key: Key) -> str:
    if key.default_text:
        return key.default_text if key.default_text[0] in "(`" or " " in key.default_text else f"`{key.default_text}`"
    if key.required:
        return "(secret, required)" if key.secret else "(required)"
    if key.secret:
        return "(secret)"
    if key.default is None:
        return ""
    if isinstance(key.default, bool):
        return f"`{str(key.default).lower()}`"
    if isinstance(key.default, list):
        return f"`[{', '.join(key.default)}]`"
    return f"`{key.default}`"


def readme_table() -> str:
    rows = ["| key | default | meaning |\n", "|---|---|---|\n"]
    for key in KEYS:
        rows.append(f"| `{key.name}` | {_default_text(key)} | {key.description} |\n")
    return "".join(rows)


def args_block() -> str:
    """The body of NatsClusterArgs: one annotated key and its docstring per catalogue key."""
    lines = []
    for key in KEYS:
        annotation = _PY_TYPES[key.kind]
        if key.secret:
            annotation = f"pulumi.Input[{annotation}]"
        if not key.required:
            annotation = f"NotRequired[{annotation}]"
        lines.append(f"    {key.name}: {annotation}\n")
        lines.append(f'    """{key.description}"""\n')
    return "".join(lines)


def _between(text: str, start: str, end: str, new: str, where: Path) -> str:
    """`text` with what lies between the marker lines `start` and `end` ("" = the end of the file) replaced."""
    if start not in text or (end and end not in text.split(start, 1)[1]):
        raise SystemExit(f"{where}: markers {start.strip()!r} / {end.strip()!r} not found")
    head, rest = text.split(start, 1)
    tail = end + rest.split(end, 1)[1] if end else ""
    return head + start + new + tail


def rendered() -> dict[Path, str]:
    """Each file as the catalogue would have it."""
    places = [(ROOT / "Pulumi.yaml", CONFIG_START, "", pulumi_config()),
              (ROOT / "README.md", README_START + "\n", README_END, readme_table()),
              (ROOT / "components" / "cluster.py", ARGS_START, ARGS_END, args_block())]
    return {path: _between(path.read_text(), start, end, new, path) for path, start, end, new in places}


def run(op) -> int:
    """The reference operation (contract.operations.Reference): --check or --write, exactly one."""
    if op.check == op.write:
        op.parser().error("give exactly one of --check and --write")
    stale = [path for path, text in rendered().items() if path.read_text() != text]
    if op.write:
        for path in stale:
            path.write_text(rendered()[path])
            print(f"wrote {path}")
        return 0
    for path in stale:
        print(f"{path}: differs from settings.KEYS; run `python -m nats_fly reference --write`", file=sys.stderr)
    return 1 if stale else 0
