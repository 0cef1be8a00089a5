"""Every key of the catalogue does something, or is refused (issue 17, 4.5): on each base stack (local,
dev, prod), a valid value other than the stack's own either changes what the program builds (every
resource and its inputs under the Pulumi mocks: confs, fly.toml, command lines, environments) or is
refused with a line that names the key. And where the key's platform and feature are on, it changes
what is built: the same walk with its needs met."""

from __future__ import annotations

import asyncio
import hashlib
import json

import pulumi
import pytest
import yaml
from pulumi.runtime import mocks as pulumi_mocks, stack

from nats_fly_testkit.mocking import Mocks, _unwrap
from nats_fly_testkit.support import REPO, self_signed
from nats_fly import NatsCluster
from nats_fly.config import settings
from nats_fly.config.settings import KEYS, SettingsError

BASES = ("local", "dev", "prod")


CERT, KEY = self_signed("walk.example.com")
OTHER_CERT, OTHER_KEY = self_signed("walk.example.com")


def flipped(base: dict, key: str, choices: tuple) -> object:
    current = base.get(key, settings.KEY_BY_NAME[key].default)
    return next(c for c in choices if str(c).lower() != str(current).lower())


# key -> (value on a base stack, keys that come with it); a callable value is computed from the base.
VALUES = {
    "app": ("other-app", {}),
    "org": ("acme", {}),
    # The other platform, with the keys of one platform back at their defaults.
    "platform": (lambda b: flipped(b, "platform", ("fly", "local")), {"localBasePort": 0, "vmMemory": 512}),
    "regions": (lambda b: [*b["regions"], "lhr"], {}),
    "machinesPerRegion": (2, {}),
    "topology": ("supercluster", {"machinesPerRegion": 3}),
    "natsVersion": ("2.12.8", {}),
    "clientPort": (5222, {}), "clusterPort": (5248, {}), "gatewayPort": (7300, {}), "monitorPort": (9222, {}),
    "publicPort": (11000, {}), "publicTlsPort": (11001, {}),
    "lameDuckGracePeriod": ("5s", {}), "lameDuckDuration": ("40s", {}), "killTimeout": ("90s", {}),
    "vmSize": ("shared-cpu-2x", {}), "vmMemory": (768, {}), "softLimit": (100, {}), "hardLimit": (30000, {}),
    "peerWait": (5, {}), "publicIpv4": ("dedicated", {}),
    "auth": (lambda b: flipped(b, "auth", ("password", "none")), {}),
    "users": (["app", "alice"], {}),
    "websocket": (lambda b: flipped(b, "websocket", (True, False)), {}),
    "websocketPort": (9090, {}), "websocketOrigins": (["https://a.example.com"], {}),
    "leafnodes": (True, {"leafUsers": ["edge"]}), "leafPort": (7500, {}), "publicLeafPort": (7500, {}),
    "leafUsers": (["edge", "plant"], {}),
    "jetstream": (lambda b: flipped(b, "jetstream", (True, False)), {"machinesPerRegion": 3, "volumeSize": 1}),
    "volumeSize": (20, {}),
    "localBasePort": (20000, {}),
    "verify": (lambda b: flipped(b, "verify", (True, False)), {}),
    "verifyUrls": (lambda b: [f"{r}=nats://127.0.0.1:{1000 + i}" for i, r in enumerate(b["regions"])], {}),
    "serverTls": (True, {}),
    "sysPassword": ("another-system-password", {}),
    "userPasswords": (lambda b: {u: "another-user-password" for u in b.get("users", ["app"])}, {}),
    "leafPasswords": ({"edge": "another-leaf-password"}, {}),
    "tlsCert": (OTHER_CERT, {"tlsKey": OTHER_KEY}),
    "tlsKey": (OTHER_KEY, {"tlsCert": OTHER_CERT}),
    "workDir": ("other-work", {}),
}
# What turns each feature on, so the same key can be seen taking effect.
NEEDS = {
    settings.WEBSOCKET: {"websocket": True},
    settings.LEAFNODES: {"leafnodes": True, "leafUsers": ["edge"]},
    settings.JETSTREAM: {"jetstream": True, "machinesPerRegion": 3},
    settings.SUPERCLUSTER: {"topology": "supercluster", "machinesPerRegion": 3},
    settings.PASSWORDS: {"auth": "password"},
    settings.SERVER_TLS: {"serverTls": True},
    settings.VERIFY: {"verify": True},
    settings.VERIFY_OR_SCALE_DOWN: {"verify": True},
}


def base_stack(name: str) -> dict:
    """The stack file's keys, bare (none of the committed stack files holds a secret)."""
    raw = yaml.safe_load((REPO / "config" / f"Pulumi.{name}.yaml").read_text())["config"]
    return {k.split(":", 1)[1]: v for k, v in raw.items()}


def outcome(values: dict, tmp_path) -> tuple[str, object]:
    """("refused", lines) or ("built", every resource's type and inputs) for a stack of `values`; the
    secrets it needs that `values` lacks are filled in, so a refusal is about what was given."""
    values = dict(values)
    secret_values = {k: values.pop(k) for k in list(values) if settings.KEY_BY_NAME[k].secret}
    work = values.pop("workDir", None)
    try:
        s = settings.load(values)
    except SettingsError as error:
        return "refused", sorted(error.problems)
    needed = {"sysPassword": "the-system-password"}
    if s.auth == "password":
        needed["userPasswords"] = {u: f"password-of-{u}" for u in s.users}
    if s.leafnodes:
        needed["leafPasswords"] = {u: f"leaf-password-of-{u}" for u in s.leaf_users}
    if s.server_tls:
        needed.update(tlsCert=CERT, tlsKey=KEY)
    secrets = {**needed, **secret_values}
    if work is None and s.platform == "local":
        work = str(tmp_path / "work")

    def program():
        args = {**values, **{k: pulumi.Output.secret(v) for k, v in secrets.items()}}
        return NatsCluster("nats", {**args, **({"workDir": work} if work is not None else {})})

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    mocks = Mocks()
    monitor = pulumi_mocks.MockMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, project="nats-fly", stack="walk", preview=False, monitor=monitor)
    try:
        pulumi_mocks._sync_await(stack.run_pulumi_func(program))
    except SettingsError as error:
        return "refused", sorted(error.problems)
    finally:
        pulumi.runtime.settings.reset_options()
        loop.close()
        asyncio.set_event_loop(None)
    graph = json.dumps({urn: _unwrap(r.state) for urn, r in sorted(monitor.resources.items())}, sort_keys=True,
                       default=str)
    return "built", hashlib.sha256(graph.encode()).hexdigest()


def case(base: str, key: str, meet_needs: bool) -> tuple[dict, dict, dict]:
    """(stack values, companions, the key's change) for one step of the walk."""
    values = base_stack(base)
    value, companions = VALUES[key]
    value = value(values) if callable(value) else value
    needs = settings.KEY_BY_NAME[key].needs_on(values.get("platform", "fly"))
    if meet_needs and needs:
        companions = {**NEEDS[needs], **companions}
    return values, {k: v for k, v in companions.items() if k != key}, {key: value}


def test_the_walk_knows_every_key():
    assert set(VALUES) == {key.name for key in KEYS}, "a new key needs a value to walk with"
    assert set(NEEDS) == {key.needs_on(platform) for key in KEYS for platform in settings.PLATFORMS
                          if key.needs_on(platform)}


WALK = [(base, key.name) for base in BASES for key in KEYS]


@pytest.mark.parametrize("base,key", WALK,
                         ids=[f"{b}-{k}" for b, k in WALK])
def test_every_key_changes_the_cluster_or_is_refused_by_name(base, key, tmp_path):
    values, companions, change = case(base, key, meet_needs=False)
    without = outcome({**values, **companions}, tmp_path)
    with_it = outcome({**values, **companions, **change}, tmp_path)
    assert with_it != without, f"{key}={change[key]!r} on {base} changed nothing and was not refused"
    if with_it[0] == "refused":
        assert any(line.startswith(f"nats-fly:{key}") for line in with_it[1]), with_it[1]


EFFECTIVE = [(base, key.name) for base in BASES for key in KEYS
             if base_stack(base).get("platform", "fly") in key.platforms]


@pytest.mark.parametrize("base,key", EFFECTIVE,
                         ids=[f"{b}-{k}" for b, k in EFFECTIVE])
def test_where_its_platform_and_feature_are_on_a_key_changes_the_cluster(base, key, tmp_path):
    values, companions, change = case(base, key, meet_needs=True)
    with_it = outcome({**values, **companions, **change}, tmp_path)
    assert with_it[0] == "built", with_it[1]
    assert with_it != outcome({**values, **companions}, tmp_path), f"{key} on {base} with {companions}"
