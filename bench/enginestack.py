"""The real Pulumi engine on a copy of the project, pointed at the Fly stand-in (as
tests/engine/test_fly_stack.py does), and the flyctl calls of each step from the stand-in's log."""
from __future__ import annotations

import secrets
import shutil
import tempfile
import time
from pathlib import Path

from nats_fly_testkit.engine import copy_project, engine_environment, missing_tools


class Stack:
    def __init__(self, standin, app: str, config: dict, base_stack: str = "prod"):
        missing = missing_tools()
        if missing:
            raise SystemExit(f"Pulumi tools missing ({', '.join(missing)}): run scripts/bootstrap")
        self.standin, self.app = standin, app
        self.workdir = Path(tempfile.mkdtemp(prefix="nats-fly-bench-"))
        env = engine_environment(self.workdir)
        if standin is not None:  # only the stand-in's own keys: its env() also carries this shell's Pulumi backend
            fly = standin.env()
            env.update({k: fly[k] for k in ("NFLY_STATE", "FLY_API_TOKEN")}, PATH=f"{standin.bin_dir}:{env['PATH']}")
        self.project = copy_project(self.workdir / "project", base_stack, "bench", env)
        self.project.config({"app": app, **config})
        self.project.pulumi("config", "set", "--secret", "sysPassword", stdin="sys-" + secrets.token_hex(10))
        self.project.pulumi("config", "set", "--secret", "--path", "userPasswords.app",
                            stdin="app-" + secrets.token_hex(10))
        self.seen = len(standin.flyctl_log()) if standin is not None else 0
        self.created = False
        self.output = ""  # stdout + stderr of the last up

    def up(self, *extra: str) -> float:
        t0 = time.monotonic()
        self.created = True
        result = self.project.pulumi("up", "--yes", "--skip-preview", *extra)
        self.output = result.stdout + result.stderr
        return time.monotonic() - t0

    def destroy(self) -> float:
        t0 = time.monotonic()
        self.project.pulumi("destroy", "--yes", "--skip-preview", check=False)
        return time.monotonic() - t0

    def calls(self) -> list[dict]:
        """The flyctl calls since the last time this was asked."""
        log = self.standin.flyctl_log()
        new, self.seen = log[self.seen:], len(log)
        return new

    def close(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


def regions_of(calls: list[dict]) -> list[str]:
    found = []
    for c in calls:
        argv = c["argv"]
        if "--region" in argv:
            found.extend(argv[argv.index("--region") + 1].split(","))
    return sorted(set(found))


def summary(calls: list[dict]) -> dict:
    mutating = [c for c in calls if c["mutates"]]
    return {"mutating": len(mutating), "read_only": len(calls) - len(mutating),
            "flyctl_s": round(sum(c["duration_s"] for c in calls), 2),
            "commands": [c["command"] for c in mutating],
            "read_only_commands": [c["command"] for c in calls if not c["mutates"]],
            "failed": [f"{c['command']} (exit {c['exit']})" for c in calls if c.get("exit")],
            "regions_touched": regions_of(mutating)}
