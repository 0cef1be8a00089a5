"""Pulumi mocks for the unit tests: every Command 'runs', and what the program registered can be read."""

from __future__ import annotations

import json
import shlex

import pulumi
from pulumi.runtime import mocks as pulumi_mocks, stack

FAKE_PEM = ("-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n"
            "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n")


class Mocks(pulumi.runtime.Mocks):
    """Every Command 'runs' successfully; the TLS marker command prints a PEM pair, the local ports
    command six ports per server from 20000 on."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        state = dict(args.inputs)
        if args.typ == "command:local:Command":
            state["stdout"] = ""
            if args.name.endswith("-tls-marker"):
                state["stdout"] = FAKE_PEM
            elif args.name.endswith("-ports"):
                argv = shlex.split(args.inputs["create"])
                servers = argv[argv.index("--servers") + 1].split(",")
                state["stdout"] = json.dumps({n: [20000 + 6 * i + k for k in range(6)] for i, n in enumerate(servers)})
            state["stderr"] = ""
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}


class Program:
    """Runs a program under the mocks to completion; then the registered resources can be read."""

    def __init__(self, monitor: pulumi_mocks.MockMonitor):
        self.monitor = monitor

    def run(self, program):
        """Run program() and wait for every registration and Output it started."""
        result = {}
        pulumi_mocks._sync_await(stack.run_pulumi_func(lambda: result.setdefault("value", program())))
        return result.get("value")

    def value(self, output: pulumi.Output):
        return pulumi_mocks._sync_await(output.future())

    def resources(self) -> dict[str, tuple[str, dict]]:
        """name -> (type token, state) of every registered resource."""
        found = {}
        for urn, registration in self.monitor.resources.items():
            type_chain, name = urn.split("::")[-2:]
            found[name] = (type_chain.split("$")[-1], registration.state)
        return found

    def commands(self) -> dict[str, dict]:
        """name -> inputs of every Command, secrets unwrapped (see `secret_paths` for which)."""
        return {n: _unwrap(st) for n, (t, st) in self.resources().items() if t == "command:local:Command"}

    def secret_paths(self, name: str) -> set[str]:
        """The input keys of one resource that the engine would store encrypted."""
        state = self.resources()[name][1]
        return {key for key, value in state.items() if _is_secret(value)}


_SECRET_SIG = "4dabf18193072939515e22adb298388d"  # the engine's marker for a secret value


def _is_secret(value) -> bool:
    return isinstance(value, dict) and value.get(_SECRET_SIG) == "1b47061264138c4ac30d75fd1eb44270"


def _unwrap(value):
    if _is_secret(value):
        return _unwrap(value["value"])
    if isinstance(value, dict):
        return {k: _unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    return value
