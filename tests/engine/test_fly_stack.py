"""The Fly path with the real engine, against the Fly stand-in, on the prod stack as configured
(JetStream on, a volume per Machine): up -> verify -> add a region -> change a nats setting (it
rolls) -> no-op up -> destroy. The flyctl operations of every step are counted from the stand-in's
log and printed: the project's operations figure."""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
from collections import Counter

import pytest

from nats_fly_testkit.engine import flyctl_env
from nats_fly.processes.verify import Expectation, verify

SYS_PASSWORD = "sys-" + secrets.token_hex(10)
APP_PASSWORD = "app-" + secrets.token_hex(10)


class Ops:
    """flyctl calls per step, from the stand-in's invocation log."""

    def __init__(self, standin):
        self.standin, self.seen, self.steps = standin, 0, {}

    def step(self, name: str) -> list[dict]:
        log = self.standin.flyctl_log()
        calls, self.seen = log[self.seen:], len(log)
        mutating = [c for c in calls if c["mutates"]]
        self.steps[name] = {"mutating": len(mutating), "read_only": len(calls) - len(mutating),
                            "flyctl_seconds": round(sum(c["duration_s"] for c in calls), 2),
                            "commands": sorted({c["command"] for c in mutating})}
        print(f"flyctl operations, {name}: {json.dumps(self.steps[name])}")
        return calls


def strategy(call: dict) -> str:
    """The --strategy of a logged `flyctl deploy` call."""
    return call["argv"][call["argv"].index("--strategy") + 1]


def whole(standin, app: str, machines: dict[str, int]):
    urls = {r: "nats://%s:%d" % standin.edge(app, r) for r in machines}
    report = asyncio.run(verify(urls, Expectation(regions=machines, jetstream=True), user="sys",
                                password=SYS_PASSWORD, timeout=30))
    print(report.table())
    assert report.ok, report.table()


@pytest.fixture
def fly_project(project, standin, engine_env):
    engine_env.update(flyctl_env(standin, engine_env))
    return project("prod")


def test_fly_stack_lifecycle(fly_project, standin):
    stack, app = fly_project, f"e2e-{secrets.token_hex(4)}"
    stack.config({"app": app, "peerWait": 3})
    stack.pulumi("config", "set", "--secret", "sysPassword", stdin=SYS_PASSWORD)
    stack.pulumi("config", "set", "--secret", "--path", "userPasswords.app", stdin=APP_PASSWORD)
    ops = Ops(standin)
    ops.step("before")
    try:
        stack.pulumi("up", "--yes", "--skip-preview")
        first = ops.step("first up (3 regions)")
        made = Counter(c["command"] for c in first if c["mutates"])
        # ord's volume comes with the first deploy (fly.toml [[mounts]] initial_size); syd's and cdg's
        # are made before their Machines; `scale count` per region, ord's a no-op.
        assert made == {"apps create": 1, "ips allocate-v6": 1, "ips allocate-v4": 1, "secrets import": 1,
                        "deploy": 1, "volumes create": 2, "scale count": 3}, made
        deploy = next(c for c in first if c["command"] == "deploy")
        assert strategy(deploy) == "immediate"  # a lone Machine: nothing to roll
        assert sorted(v["region"] for v in json.loads(standin.flyctl("volumes", "list", "--app", app,
                                                                     "--json").stdout)) == ["cdg", "ord", "syd"]
        outputs = stack.outputs()
        assert outputs["clientUrl"] == f"nats://{app}.fly.dev:10000"
        whole(standin, app, {"ord": 1, "syd": 1, "cdg": 1})

        stack.config({"regions": ["ord", "syd", "cdg", "lhr"]})
        stack.pulumi("up", "--yes", "--skip-preview")
        added = ops.step("add a region")
        assert [c["argv"] for c in added if c["mutates"]] == [
            ["volumes", "create", "nats_data", "--region", "lhr", "--size", "10", "--app", app, "--json", "--yes"],
            ["scale", "count", "1", "--region", "lhr", "--app", app, "--yes"]]
        whole(standin, app, {"ord": 1, "syd": 1, "cdg": 1, "lhr": 1})

        before = sorted(m["id"] for m in standin.machines(app))
        stack.config({"lameDuckGracePeriod": "12s"})
        stack.pulumi("up", "--yes", "--skip-preview")
        rolled = ops.step("change a nats setting")
        assert [c["command"] for c in rolled if c["mutates"]] == ["deploy"]
        assert strategy(next(c for c in rolled if c["mutates"])) == "rolling"
        after = standin.machines(app)
        assert sorted(m["id"] for m in after) == before  # updated in place, one at a time
        for machine in after:
            assert machine["state"] == "started"
            code, out, _ = standin.exec(machine["id"], "grep lame_duck_grace_period /etc/nats/nats.conf")
            assert code == 0 and '"12s"' in out, out
        whole(standin, app, {"ord": 1, "syd": 1, "cdg": 1, "lhr": 1})

        stack.pulumi("up", "--yes", "--skip-preview", "--expect-no-changes")
        noop = ops.step("no-op up")
        assert not [c for c in noop if c["mutates"]], noop
        assert set(stack.last_changes()) == {"same"}

        # The same project from another checkout path (a CI runner, a colleague's clone): still a no-op.
        moved = stack.root.with_name(stack.root.name + "-elsewhere")
        shutil.move(stack.root, moved)
        stack.root = moved
        stack.pulumi("up", "--yes", "--skip-preview", "--expect-no-changes")
        elsewhere = ops.step("no-op up, moved checkout")
        assert not [c for c in elsewhere if c["mutates"]], elsewhere

        exported = stack.pulumi("stack", "export").stdout
        for secret in (SYS_PASSWORD, APP_PASSWORD):
            assert secret not in exported
            assert all(secret not in entry for entry in stack.log)
            assert secret not in json.dumps(standin.flyctl_log())
            for path in (stack.root / ".nats-fly").rglob("*"):
                assert not path.is_file() or secret not in path.read_text(errors="replace"), path
    finally:
        stack.pulumi("destroy", "--yes", "--skip-preview", check=False)
        destroyed = ops.step("destroy")
    assert [c["command"] for c in destroyed if c["mutates"]] == ["apps destroy"]
    gone = standin.flyctl("status", "--app", app, "--json")
    assert gone.returncode == 1 and f'Could not find App "{app}"' in gone.stderr
    print("flyctl operations per step:", json.dumps(ops.steps, indent=2))
