"""A stack's config as the program and `render` read it: every entry of a secret map is a secret of its
own (issue 17, 4.2), and render needs no secret the stack has not set yet (4.9)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pulumi.runtime import config as runtime_config

from nats_fly import platforms
from nats_fly.config import settings, stackfile
from nats_fly.stack import stack_args
from nats_fly_testkit.support import self_signed
from nats_fly.config.settings import OPAQUE, SettingsError

SECURE = {"secure": "v1:AAAAAAAAAAAAAAAA:encrypted"}


def project(tmp_path: Path, stack: str, config: dict) -> Path:
    (tmp_path / "Pulumi.yaml").write_text("name: x\nruntime: python\nstackConfigDir: config\n")
    (tmp_path / "config").mkdir(exist_ok=True)
    path = tmp_path / "config" / f"Pulumi.{stack}.yaml"
    path.write_text(yaml.safe_dump({"config": {f"nats-fly:{k}": v for k, v in config.items() if v is not None}}))
    return path


BASE = {"app": "ok-app", "regions": ["ord"], "users": ["app", "bob"]}


def test_a_stack_file_map_with_one_plain_entry_is_refused_by_entry(tmp_path):
    path = project(tmp_path, "a", {**BASE, "sysPassword": SECURE,
                                   "userPasswords": {"app": SECURE, "bob": "bob-plain-password"}})
    values, given = stackfile.from_file(path)
    s = platforms.settings(values)
    assert given["userPasswords"] == ({"app": OPAQUE, "bob": "bob-plain-password"}, {"app": True, "bob": False})
    with pytest.raises(SettingsError) as caught:
        settings.check_secrets(s, given)
    assert caught.value.problems == [
        "nats-fly:userPasswords.bob: given in plain text; allowed: a secret, set with `pulumi config set --secret "
        "--path userPasswords.bob` for each entry (the value is not shown here)"]


def test_a_stack_file_map_of_secrets_passes_with_its_values_unread(tmp_path):
    for value in ({"app": SECURE, "bob": SECURE}, SECURE):  # --path entries, or one secret JSON map
        values, given = stackfile.from_file(project(tmp_path, "b", {**BASE, "sysPassword": SECURE,
                                                                     "userPasswords": value}))
        s = platforms.settings(values)
        settings.check_secrets(s, given)


@pytest.fixture
def running_program(tmp_path, monkeypatch, mock_program):
    """The program's view of its config, as the exec shim sets it from PULUMI_CONFIG and
    PULUMI_CONFIG_SECRET_KEYS, with the project folder the shim's --root_directory (the mocks say none;
    their stack is `test`)."""
    import pulumi.runtime.settings
    monkeypatch.setattr(pulumi.runtime.settings, "get_root_directory", lambda: str(tmp_path))

    def given(config: dict, secret_keys: list[str]):
        runtime_config.set_all_config({f"nats-fly:{k}": v for k, v in config.items()},
                                      [f"nats-fly:{k}" for k in secret_keys])
        return mock_program.run(stack_args)
    yield given
    runtime_config.set_all_config({}, [])


PROGRAM_SEES = {**{k: v for k, v in BASE.items() if k != "regions"}, "regions": '["ord"]', "users": '["app","bob"]',
                "sysPassword": "system-password-1",
                "userPasswords": '{"app":"app-password-1","bob":"bob-plain-password"}'}


def test_the_program_reads_which_entries_its_stack_file_holds_in_plain_text(tmp_path, running_program):
    project(tmp_path, "test", {**BASE, "sysPassword": SECURE,
                               "userPasswords": {"app": SECURE, "bob": "bob-plain-password"}})
    with pytest.raises(SettingsError) as caught:
        running_program(PROGRAM_SEES, ["sysPassword", "userPasswords"])
    assert [p.split(";")[0] for p in caught.value.problems] == ["nats-fly:userPasswords.bob: given in plain text"]


def test_a_stack_file_elsewhere_is_not_judged_by_the_default_one(tmp_path, running_program):
    # --config-file: the default file says something else (another value), or does not exist.
    project(tmp_path, "test", {**BASE, "sysPassword": SECURE, "userPasswords": {"app": SECURE, "bob": "other-text"}})
    args = running_program(PROGRAM_SEES, ["sysPassword", "userPasswords"])
    assert sorted(args) == ["app", "regions", "sysPassword", "userPasswords", "users"]
    (tmp_path / "config" / "Pulumi.test.yaml").unlink()
    running_program(PROGRAM_SEES, ["sysPassword", "userPasswords"])


def test_a_plain_key_is_refused_by_the_engine_flag_alone(tmp_path, running_program):
    with pytest.raises(SettingsError, match="nats-fly:sysPassword: given in plain text"):
        running_program(PROGRAM_SEES, ["userPasswords"])


def test_the_program_warns_of_a_certificate_out_of_its_dates(tmp_path, running_program, caplog):
    cert, key = self_signed("old.example.com", days=(-30, -1))
    sees = {**PROGRAM_SEES, "serverTls": "true", "tlsCert": cert, "tlsKey": key,
            "userPasswords": '{"app":"app-password-1","bob":"bob-password-1"}'}
    with caplog.at_level("WARNING"):
        args = running_program(sees, ["sysPassword", "userPasswords", "tlsCert", "tlsKey"])
    assert args["serverTls"] == "true"
    assert [r.getMessage().split(" expired on ")[0] for r in caplog.records if "expired" in r.getMessage()] == [
        "nats-fly:tlsCert: the server certificate"]


def render(tmp_path: Path, stack: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nats_fly", "render", "--stack", stack, "--out",
                           str(tmp_path / f"out-{stack}"), "--project-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)


def test_render_needs_no_secret_the_stack_has_not_set(tmp_path):
    project(tmp_path, "leaf", {**BASE, "leafnodes": True, "leafUsers": ["edge"], "serverTls": True})
    project(tmp_path, "plain", {**BASE, "leafnodes": True, "leafUsers": ["edge"],
                                "leafPasswords": {"edge": "plain-leaf-pw"}})
    project(tmp_path, "stray", {**BASE, "leafPasswords": {"edge": SECURE}})
    result = render(tmp_path, "leaf")
    assert result.returncode == 0, result.stderr
    for stack, expected in (("plain", "nats-fly:leafPasswords.edge: given in plain text"),
                            ("stray", "nats-fly:leafPasswords: given, but it has no effect without leafnodes")):
        result = render(tmp_path, stack)
        assert result.returncode == 2 and expected in result.stderr, result.stderr
        assert "plain-leaf-pw" not in result.stderr and "Traceback" not in result.stderr


def test_render_warns_of_a_certificate_out_of_its_dates(tmp_path):
    cert, key = self_signed("old.example.com", days=(-30, -1))
    project(tmp_path, "old", {**BASE, "auth": "none", "users": None, "serverTls": True, "tlsCert": cert, "tlsKey": key})
    result = render(tmp_path, "old")
    assert result.returncode == 2, result.stderr  # a plain certificate is refused, not rendered
    assert "nats-fly:tlsCert: given in plain text" in result.stderr
    s = settings.load({**BASE, "serverTls": True})
    warnings = settings.check_secrets(s, {"sysPassword": ("x" * 12, True), "userPasswords": (OPAQUE, True),
                                          "tlsCert": (cert, True), "tlsKey": (key, True)})
    assert len(warnings) == 1 and warnings[0].startswith("nats-fly:tlsCert: the server certificate expired on ")


@pytest.mark.parametrize("text,said", [
    ("config: [a, b]\n", "its config is ['a', 'b']; allowed: a map"),
    ("- just a list\n", "nats-fly:app: missing"),
    ("config: {nats-fly:app: [unclosed\n", "not YAML (expected ',' or ']', but got '<stream end>' at line 2)"),
    ("config:\n  5: five\n  nats-fly:app: ok-app\n  nats-fly:regions: [ord]\n", "nats-fly:5: unknown key"),
])
def test_a_stack_file_of_the_wrong_shape_is_one_line(tmp_path, text, said):
    project(tmp_path, "odd", {})
    (tmp_path / "config" / "Pulumi.odd.yaml").write_text(text)
    result = render(tmp_path, "odd")
    assert result.returncode == 2 and said in result.stderr and "Traceback" not in result.stderr, result.stderr
