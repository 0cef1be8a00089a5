"""flyctl's command line: pflag-style parsing, the command table, and the rules that
apply to every command (token, app resolution, `Error: ...` with exit 1)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable

from . import flytoml

GLOBAL = {"access-token": ("str", "t"), "verbose": ("bool", None), "debug": ("bool", None),
          "help": ("bool", "h")}
APP = {"app": ("str", "a"), "config": ("str", "c")}
JSON = {"json": ("bool", "j")}
YES = {"yes": ("bool", "y")}

CAPACITY = ("failed to launch VM: aborted: insufficient resources available to fulfill request: "
            "could not reserve resource for machine: insufficient memory available to fulfill request")
NON_INTERACTIVE = "yes flag must be specified when not running interactively"
# What the API answers a token that does not reach the app: fly-go flaps/flaps_apps.go
# AppNameAvailable reads the error text "unauthorized" as "the app exists, in an org we do not
# have access to". (GraphQL-backed commands may word it otherwise, e.g. "Not authorized to
# deploy this app." in superfly/fly-pr-review-apps#60; the stand-in uses the one text.)
UNAUTHORIZED = "unauthorized"


class FlyError(Exception):
    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


@dataclass
class Command:
    path: tuple[str, ...]
    flags: dict
    handler: Callable[..., Awaitable[int | None]]
    mutates: bool
    aliases: dict = field(default_factory=dict)  # word -> canonical word at that depth


def _truthy(value: str, name: str) -> bool:
    if value.lower() in ("true", "1", "t"):
        return True
    if value.lower() in ("false", "0", "f"):
        return False
    raise FlyError(f'invalid argument "{value}" for "--{name}" flag: strconv.ParseBool: parsing "{value}": invalid syntax')


def parse(argv: list[str], spec: dict) -> tuple[dict, list[str]]:
    spec = {**GLOBAL, **spec}
    shorts = {short: name for name, (_kind, short) in spec.items() if short}
    flags: dict = {}
    args: list[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        i += 1
        if word == "--":
            args.extend(argv[i:])
            break
        if word.startswith("--"):
            name, eq, value = word[2:].partition("=")
            if name not in spec:
                raise FlyError(f"unknown flag: --{name}")
        elif word.startswith("-") and len(word) > 1:
            short, rest = word[1], word[2:]
            if short not in shorts:
                raise FlyError(f"unknown shorthand flag: '{short}' in {word}")
            name = shorts[short]
            eq, value = ("=", rest.lstrip("=")) if rest else ("", "")
        else:
            args.append(word)
            continue
        kind = spec[name][0]
        if kind == "bool":
            flags[name] = _truthy(value, name) if eq else True
            continue
        if not eq:
            if i >= len(argv):
                raise FlyError(f"flag needs an argument: --{name}")
            value = argv[i]
            i += 1
        if kind == "int":
            try:
                flags[name] = int(value)
            except ValueError:
                raise FlyError(f'invalid argument "{value}" for "--{name}" flag: strconv.ParseInt: '
                               f'parsing "{value}": invalid syntax') from None
        elif kind == "list":
            flags.setdefault(name, []).append(value)
        else:
            flags[name] = value
    return flags, args


class Context:
    """One flyctl invocation as the daemon runs it."""

    def __init__(self, daemon, request: dict, send: Callable[[str, str], None]):
        self.daemon = daemon
        self.state = daemon.state
        self.runtime = daemon.runtime
        self.cwd = Path(request.get("cwd") or "/")
        self.interactive = bool(request.get("tty"))
        self.stdin = request.get("stdin")
        self.env = request.get("env", {})
        self._send = send
        self.flags: dict = {}
        self.token: dict = {"kind": "user"}  # set by the daemon from the caller's token

    # --- what the caller's token may touch (see daemon.Daemon.token_scope) ---

    @property
    def owner(self) -> str:
        """Who a lease taken by this call is held by, as the API names it."""
        return self.token.get("owner", "stand-in@tokens.fly.io")

    def authorize_app(self, app) -> None:
        """A deploy token reaches its one app; an org token the apps of its org."""
        kind = self.token.get("kind")
        if kind == "deploy" and app.name != self.token.get("app"):
            raise FlyError(UNAUTHORIZED)
        if kind == "org" and app.org != self.token.get("org"):
            raise FlyError(UNAUTHORIZED)

    def authorize_org(self, org: str | None) -> None:
        """Org-wide actions (apps create, apps list): not for a deploy token, which is "limited to
        managing a single app" (internal/command/tokens/create.go newDeploy)."""
        kind = self.token.get("kind")
        if kind == "deploy" or (kind == "org" and org is not None and org != self.token.get("org")):
            raise FlyError(UNAUTHORIZED)

    def out(self, text: str = "") -> None:
        self._send("out", text + "\n")

    def err(self, text: str) -> None:
        self._send("err", text + "\n")

    def json(self, value) -> None:
        self.out(json.dumps(value, indent=2))

    def path(self, p: str) -> Path:
        return (self.cwd / p).resolve()

    def require_yes(self, message: str = NON_INTERACTIVE) -> None:
        if not self.flags.get("yes") and not self.interactive:
            raise FlyError(message)
        if not self.flags.get("yes"):
            raise FlyError("the stand-in cannot prompt; pass --yes")

    def config_path(self) -> Path:
        return self.path(self.flags.get("config") or "fly.toml")

    def app_name(self) -> str:
        name = self.flags.get("app") or self.env.get("FLY_APP")
        if not name:
            path = self.config_path()
            if path.is_file():
                name = flytoml.load(path).get("app")
        if not name:
            raise FlyError("the config for your app is missing an app name, add an app field to the "
                           "fly.toml file or specify with the -a flag")
        return name

    def app(self):
        name = self.app_name()
        app = self.state.apps.get(name)
        if app is None:
            raise FlyError(f'Could not find App "{name}"')
        self.authorize_app(app)
        return app


def resolve(table: list[Command], argv: list[str]) -> tuple[Command, list[str]]:
    """Find the command named by the leading words of argv (aliases allowed)."""
    words = [w for w in argv if not w.startswith("-")]
    for cmd in sorted(table, key=lambda c: -len(c.path)):
        canon = [cmd.aliases.get(w, w) for w in words[: len(cmd.path)]]
        if tuple(canon) == cmd.path:
            rest, dropped = [], 0
            for w in argv:
                if dropped < len(cmd.path) and not w.startswith("-"):
                    dropped += 1
                    continue
                rest.append(w)
            return cmd, rest
    if not words:
        raise FlyError("no command given")
    known = {c.path[0] for c in table} | {a for c in table for a, v in c.aliases.items() if v == c.path[0]}
    if words[0] not in known:
        raise FlyError(f'unknown command "{words[0]}" for "flyctl"')
    raise FlyError(f'unknown command "{words[1] if len(words) > 1 else ""}" for "flyctl {words[0]}"')
