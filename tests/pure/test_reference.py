"""One catalogue of stack keys (settings.KEYS): Pulumi.yaml's config block, the README's reference and
NatsClusterArgs agree with it on every key, its type, its default and its description."""

from __future__ import annotations

import subprocess
import sys
import typing

import yaml

from nats_fly_testkit.support import REPO
from nats_fly.config import reference
from nats_fly.config import settings
from nats_fly.cluster import NatsCluster, NatsClusterArgs

PY = {"string": str, "integer": int, "boolean": bool, "list": list, "map": dict}


def test_every_place_is_written_from_the_catalogue():
    result = subprocess.run([sys.executable, "-m", "nats_fly", "reference", "--check"], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_pulumi_yaml_types_defaults_and_descriptions():
    config = yaml.safe_load((REPO / "Pulumi.yaml").read_text())["config"]
    stack_keys = [k for k in settings.KEYS if k.stack]
    assert list(config) == [f"nats-fly:{k.name}" for k in stack_keys]
    for key in stack_keys:
        entry = config[f"nats-fly:{key.name}"]
        assert entry["description"] == key.description
        assert entry.get("type") == {"list": "array", "map": None}.get(key.kind, key.kind), key.name
        if key.default in (settings.REQUIRED, None):
            assert "default" not in entry, key.name
        else:
            assert entry["default"] == key.default, key.name
        assert entry.get("secret", False) == (key.secret and key.required), key.name


def test_the_readme_lists_every_key_with_its_description():
    readme = (REPO / "README.md").read_text()
    table = readme.split(reference.README_START)[1].split(reference.README_END)[0]
    rows = [line.split(" | ") for line in table.strip().splitlines()[2:]]
    assert [row[0].strip("| `") for row in rows] == [k.name for k in settings.KEYS]
    assert [row[2].rstrip(" |") for row in rows] == [k.description for k in settings.KEYS]


def test_nats_cluster_args_annotations_and_docstrings():
    hints = NatsClusterArgs.__annotations__  # objects, not strings: the analyzer reads them as types
    assert list(hints) == [k.name for k in settings.KEYS]
    assert NatsClusterArgs.__required_keys__ == {k.name for k in settings.KEYS if k.required}
    for key in settings.KEYS:
        hint = hints[key.name]
        if typing.get_origin(hint) is typing.NotRequired:
            hint = typing.get_args(hint)[0]
        # a secret is an Input (a Union with Output/Awaitable); the plain type is its first member
        plain = typing.get_args(hint)[0] if key.secret else hint
        assert (typing.get_origin(plain) or plain) is PY[key.kind], key.name
    from pulumi.provider.experimental.analyzer import Analyzer
    analyzer = Analyzer("nats-fly")
    inputs = analyzer.analyze_component(NatsCluster).inputs
    for key in settings.KEYS:
        assert inputs[key.name].description == key.description, key.name
        assert bool(inputs[key.name].optional) == (not key.required), key.name
