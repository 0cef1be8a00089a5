"""The Fly path with the real engine against a stand-in as strict as Fly (issue 10; the stand-in's own
refusals are shown in tests/flystandin/fly/test_standin_strict.py):

- leases: a first up of 6 regions (3 with several Machines), a region added and one removed, with
  Machine creation slowed to Fly-like seconds: every call succeeds, no two `scale count` calls of the
  app overlap, and no Machine is lost, doubled or half made;
- JetStream switched on for a live stack works (verify whole); switched off is refused at preview
  with what to do, before any Fly call;
- passwords flyctl's `secrets import` parser would cut or swallow reach the servers byte for byte;
- a Machine someone stopped stays stopped after a deploy: the up names it, verify reports it;
- tokens: a deploy token for the app serves later ups; one for another app is refused by Fly."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections import Counter

import nats
import pytest

from nats_fly_testkit.engine import flyctl_env
from nats_fly.processes.verify import Expectation, verify

SYS_PASSWORD = "sys-" + secrets.token_hex(10)
APP_PASSWORD = "app-" + secrets.token_hex(10)


class Fly:
    def __init__(self, project, standin, app: str):
        self.project, self.standin, self.app = project, standin, app
        self.seen = len(standin.flyctl_log())

    def calls(self) -> list[dict]:
        log = self.standin.flyctl_log()
        new, self.seen = log[self.seen:], len(log)
        return [c for c in new if self.app in c["argv"]]

    def up(self, *extra: str, check: bool = True):
        return self.project.pulumi("up", "--yes", "--skip-preview", *extra, check=check)

    def machines(self) -> list[dict]:
        proc = self.standin.flyctl("machine", "list", "--app", self.app, "--json")
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def whole(self, machines: dict[str, int], jetstream: bool = False, timeout: float = 60):
        report = self.verify(machines, jetstream, timeout)
        assert report.ok, report.table()
        return report

    def verify(self, machines: dict[str, int], jetstream: bool = False, timeout: float = 60):
        urls = {r: "nats://%s:%d" % self.standin.edge(self.app, r) for r in machines}
        return asyncio.run(verify(urls, Expectation(regions=machines, jetstream=jetstream), user="sys",
                                  password=SYS_PASSWORD, timeout=timeout))


@pytest.fixture
def fly(project, standin, engine_env):
    engine_env.update(flyctl_env(standin, engine_env))
    stack = project("prod")
    app = f"real-{secrets.token_hex(4)}"
    stack.config({"app": app, "peerWait": 3, "jetstream": False, "volumeSize": None})  # no volume without JetStream
    stack.pulumi("config", "set", "--secret", "sysPassword", stdin=SYS_PASSWORD)
    stack.pulumi("config", "set", "--secret", "--path", "userPasswords.app", stdin=APP_PASSWORD)
    f = Fly(stack, standin, app)
    yield f
    standin.settings(create_delay_s=0)
    stack.env["FLY_API_TOKEN"] = "stand-in-token"
    stack.pulumi("destroy", "--yes", "--skip-preview", check=False)


def overlapping(calls: list[dict]) -> list[tuple[str, str]]:
    spans = sorted((c["start"], c["start"] + c["duration_s"], " ".join(c["argv"][:5])) for c in calls)
    return [(a[2], b[2]) for a, b in zip(spans, spans[1:]) if b[0] < a[1]]


def test_regions_in_parallel_under_real_lease_timing(fly):
    fly.standin.settings(create_delay_s=2)  # each Machine create takes Fly-like seconds
    layout = {"ord": 3, "syd": 2, "cdg": 2, "ams": 1, "sin": 1, "gru": 1}
    fly.project.config({"regions": [f"{r}={n}" for r, n in layout.items()]})
    fly.up()
    calls = fly.calls()
    assert all(c["exit"] == 0 for c in calls if c["mutates"]), [c for c in calls if c["exit"] and c["mutates"]]
    scales = [c for c in calls if c["command"] == "scale count"]
    assert len(scales) == 6 and not overlapping(scales), overlapping(scales)
    machines = fly.machines()
    assert Counter(m["region"] for m in machines) == layout
    assert len({m["id"] for m in machines}) == len(machines) and all(m["state"] == "started" for m in machines)
    fly.whole(layout)
    first_up = sum(c["duration_s"] for c in scales)

    layout = {**layout, "lhr": 2}
    del layout["sin"]
    fly.project.config({"regions": [f"{r}={n}" for r, n in layout.items()]})
    fly.up()
    calls = fly.calls()
    assert all(c["exit"] == 0 for c in calls if c["mutates"]), [c for c in calls if c["exit"] and c["mutates"]]
    scales = [c for c in calls if c["command"] == "scale count"]
    assert sorted(c["argv"][2:5] for c in scales) == [["0", "--region", "sin"], ["2", "--region", "lhr"]]
    assert not overlapping(scales)
    machines = fly.machines()
    assert Counter(m["region"] for m in machines) == layout and len({m["id"] for m in machines}) == sum(layout.values())
    fly.whole(layout)
    print(f"scale count under leases: first up {first_up:.1f} s of scale calls, one at a time")


def test_jetstream_switched_on_then_off_is_refused(fly):
    layout = {"ord": 1, "syd": 1, "cdg": 1}
    fly.up()
    fly.whole(layout)
    before = {m["id"] for m in fly.machines()}
    fly.calls()

    fly.project.config({"jetstream": True, "volumeSize": 1})
    fly.up()
    calls = fly.calls()
    deploy = next(c for c in calls if c["command"] == "deploy")
    assert deploy["argv"][deploy["argv"].index("--strategy") + 1] == "immediate"
    made = Counter(c["argv"][c["argv"].index("--region") + 1] for c in calls if c["command"] == "volumes create")
    assert made == layout  # one volume per Machine, in its region, before the deploy needed them
    machines = fly.machines()
    assert Counter(m["region"] for m in machines) == layout
    assert not before & {m["id"] for m in machines}  # each Machine replaced by one on its volume
    assert all(m["config"].get("mounts") for m in machines)
    fly.whole(layout, jetstream=True, timeout=90)

    fly.project.config({"jetstream": False})
    refused = fly.project.pulumi("preview", check=False)
    said = refused.stdout + refused.stderr
    assert refused.returncode != 0, said
    assert "nats-fly:jetstream: false, but the Machines of" in said and "To switch JetStream off" in said, said
    assert "an unhandled error occurred" not in said
    up = fly.up(check=False)
    assert up.returncode != 0
    assert not [c for c in fly.calls() if c["mutates"]]
    fly.project.config({"jetstream": True})
    fly.whole(layout, jetstream=True)


NASTY = {"quote": 'pw"with"quotes', "dquote": '""starts-with-two', "hash": "before#after",
         "triple": 'a"""b"""c', "equals": "key=value=more", "spaces": "  spaced out  ", "dollar": "$HOME${X}",
         "slash": "back\\slash\\", "unicode": "grüße-€-密码"}


def test_secrets_survive_any_value(fly):
    fly.project.config({"users": ["app", *NASTY], "regions": ["ord"]})
    for user, password in NASTY.items():
        fly.project.pulumi("config", "set", "--secret", "--path", f"userPasswords.{user}", stdin=password)
    # `config set` reads stdin up to its end: a password's own spaces survive, its last newline does not.
    stored = json.loads(fly.project.pulumi("config", "get", "userPasswords", "--json").stdout)
    assert json.loads(stored["value"]) == {"app": APP_PASSWORD, **NASTY}
    fly.up()
    fly.whole({"ord": 1})  # up and serving (the first deploy does not wait for its Machine)
    host, port = fly.standin.edge(fly.app, "ord")

    async def logins() -> dict[str, str]:
        results = {}
        for user, password in NASTY.items():
            try:
                nc = await nats.connect(f"nats://{host}:{port}", user=user, password=password,
                                        allow_reconnect=False, connect_timeout=5)
                results[user] = "ok"
                await nc.close()
            except Exception as error:  # noqa: BLE001
                results[user] = repr(error)
        try:
            await nats.connect(f"nats://{host}:{port}", user="hash", password="before", allow_reconnect=False,
                               connect_timeout=5)
            results["cut-at-#"] = "logged in with the cut value"
        except Exception:  # noqa: BLE001
            results["cut-at-#"] = "refused"
        return results

    assert asyncio.run(logins()) == {**{u: "ok" for u in NASTY}, "cut-at-#": "refused"}


def test_a_stopped_machine_stays_stopped_and_is_named(fly):
    layout = {"ord": 1, "syd": 1, "cdg": 1}
    fly.up()
    stopped = next(m for m in fly.machines() if m["region"] == "syd")
    fly.standin.stop_machine(stopped["id"])
    fly.project.config({"lameDuckGracePeriod": "12s"})
    up = fly.up()
    said = up.stdout + up.stderr
    assert f"Machine {stopped['id']} (syd) is stopped and stays so after the deploy" in said, said
    assert next(m for m in fly.machines() if m["id"] == stopped["id"])["state"] == "stopped"
    report = fly.verify(layout, timeout=10)
    assert not report.ok and "servers[syd]" in report.table() and "0/1 up" in report.table(), report.table()


def test_a_deploy_token_serves_later_ups_of_its_app_only(fly):
    fly.up()
    fly.calls()
    other = f"other-{secrets.token_hex(3)}"
    assert fly.standin.flyctl("apps", "create", other, "--org", "personal").returncode == 0
    try:
        fly.project.env["FLY_API_TOKEN"] = fly.standin.make_token("deploy", app=other)
        fly.project.config({"lameDuckGracePeriod": "12s"})
        refused = fly.up(check=False)
        said = refused.stdout + refused.stderr
        assert refused.returncode != 0 and "unauthorized" in said.lower(), said[-3000:]
        assert not [c for c in fly.calls() if c["mutates"]]  # stopped before its first Fly call
        fly.project.env["FLY_API_TOKEN"] = fly.standin.make_token("deploy", app=fly.app)
        fly.up()  # a later up: status, deploy and the regions, all within the one app
        assert [c["command"] for c in fly.calls() if c["mutates"]] == ["deploy"]
        fly.whole({"ord": 1, "syd": 1, "cdg": 1})
    finally:
        fly.project.env["FLY_API_TOKEN"] = "stand-in-token"
        fly.standin.flyctl("apps", "destroy", other, "--yes")
