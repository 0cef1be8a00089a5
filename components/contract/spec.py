"""The machinery of the contract: an operation is a frozen dataclass whose fields are its options.
The one definition writes the Command's command line (`command`) and parses it in the process
(`parse`), so the two sides cannot drift. Fields are written in their declared order, and an
optional one only when it differs from its default: a command line is a Command's input, and a
changed text runs the Command again."""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
from typing import Any, Callable, ClassVar, TypeVar

REQUIRED: Any = dataclasses.MISSING
ENTRY = ("-m", "nats_fly")  # the package's entry: `python -m nats_fly <path> <options>`

# How a field is written on the command line.
VALUE = "value"      # --flag V
SWITCH = "switch"    # --flag, when true
WORD = "word"        # --flag true|false, always
REPEAT = "repeat"    # --flag A --flag B
JOINED = "joined"    # --flag A,B
PAIRS = "pairs"      # --flag K=V,K2=V2 (a mapping of names to whole numbers)


def option(default: Any = REQUIRED, *, help: str = "", style: str = VALUE, kind: Callable[[str], Any] = str,
           choices: tuple[str, ...] | None = None, metavar: str | None = None, always: bool = False) -> Any:
    """A field of an operation. `kind` turns the text back into the value (int, float, Path...); `always`
    writes it even at its default."""
    metadata = {"help": help, "style": style, "kind": kind, "choices": choices, "metavar": metavar,
                "always": always}
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple for a repeated or joined option")
    return dataclasses.field(default=default, metadata=metadata)


O = TypeVar("O", bound="Operation")


class Operation:
    """One operation of `python -m nats_fly`. Subclasses are frozen dataclasses of `option`s."""

    path: ClassVar[tuple[str, ...]]
    """The words after `python -m nats_fly` that name it, e.g. ("local", "ensure")."""
    handler: ClassVar[str]
    """`module:function` that runs it in the process; the function takes the operation, returns an exit code."""
    summary: ClassVar[str]

    def argv(self) -> list[str]:
        """The options as command-line words."""
        words: list[str] = []
        for f in dataclasses.fields(self):
            value, meta = getattr(self, f.name), f.metadata
            name = flag(f.name)
            style = meta["style"]
            if style == WORD:
                words += [name, "true" if value else "false"]
            elif f.default is not REQUIRED and value == f.default and not meta["always"]:
                continue
            elif style == SWITCH:
                words.append(name)
            elif style == REPEAT:
                for item in value:
                    words += [name, str(item)]
            elif style == JOINED:
                words += [name, ",".join(str(item) for item in value)]
            elif style == PAIRS:
                words += [name, ",".join(f"{k}={v}" for k, v in value)]
            else:
                words += [name, str(value)]
        return words

    def command(self, interpreter: str | None = None) -> str:
        """The shell text a Command runs: `<this interpreter> -m nats_fly <path> <options>`."""
        return shlex.join([interpreter or python(), *ENTRY, *self.path, *self.argv()])

    @classmethod
    def parser(cls, prog: str = "nats-fly") -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(prog=f"{prog} {' '.join(cls.path)}", description=cls.summary)
        for f in dataclasses.fields(cls):
            meta = f.metadata
            name, style, required = flag(f.name), meta["style"], f.default is REQUIRED
            common = {"dest": f.name, "help": _help(f), "metavar": meta["metavar"]}
            if style == SWITCH:
                parser.add_argument(name, dest=f.name, action="store_true", help=meta["help"])
            elif style == WORD:
                parser.add_argument(name, required=True, choices=("true", "false"), dest=f.name, help=meta["help"])
            elif style == REPEAT:
                parser.add_argument(name, action="append", required=required, type=meta["kind"], **common)
            else:
                parser.add_argument(name, required=required, type=str if style in (JOINED, PAIRS) else meta["kind"],
                                    choices=meta["choices"], **common)
        return parser

    @classmethod
    def parse(cls: type[O], argv: list[str], prog: str = "nats-fly") -> O:
        """The operation a command line names (argparse's exit 2 and usage on a bad one)."""
        parser = cls.parser(prog)
        parsed = vars(parser.parse_args(argv))
        values = {}
        for f in dataclasses.fields(cls):
            value, meta = parsed[f.name], f.metadata
            style = meta["style"]
            if style == WORD:
                value = value == "true"
            elif style == REPEAT:
                value = tuple(value) if value is not None else f.default
            elif value is None:
                value = f.default
            elif style == JOINED:
                value = tuple(meta["kind"](item) for item in value.split(",") if item)
            elif style == PAIRS:
                value = _pairs(parser, f.name, value, meta["kind"], meta["metavar"])
            values[f.name] = value
        return cls(**values)


def flag(field: str) -> str:
    """A field's option: `--<its name>`, `_` as `-`; a field named after a Python keyword (`from_`) loses its `_`."""
    return "--" + field.rstrip("_").replace("_", "-")


def _help(f: dataclasses.Field) -> str:
    text = f.metadata["help"]
    if f.default not in (REQUIRED, None, ()) and f.metadata["style"] == VALUE:
        text += f" (default {f.default})"
    return text


def _pairs(parser: argparse.ArgumentParser, name: str, text: str, kind: Callable[[str], Any],
           metavar: str | None) -> tuple:
    pairs = []
    for item in (part for part in text.split(",") if part.strip()):
        key, sep, value = item.partition("=")
        try:
            if not sep or not key.strip():
                raise ValueError
            pairs.append((key.strip(), kind(value)))
        except ValueError:
            parser.error(f"{flag(name)} {text!r}: write {metavar or 'NAME=VALUE,...'}")
    return tuple(pairs)


def python() -> str:
    """This interpreter, as command lines name it (see portable)."""
    return portable(sys.executable)


def portable(path: str | os.PathLike) -> str:
    """`path` relative to the working directory (the project's, where Pulumi runs commands) when it
    lies under it. Commands keep their text from one checkout, CI runner or venv rebuild to the
    next: a Command whose text changed runs again, and the deploy would roll every Machine."""
    absolute, here = os.path.abspath(path), os.getcwd()
    return os.path.relpath(absolute, here) if absolute.startswith(here + os.sep) else absolute
