"""NatsCluster in a program speaks as the stack does (issue 17, section 5): every refusal is a
NatsClusterError (a RunError, which the Python exec shim prints as its lines, no traceback), whether
NatsCluster's arguments are judged at once or a secret Output is judged when it resolves; and the
rule for plain secrets is the stack's. The real engine shows the same in tests/engine/test_library_errors.py."""

from __future__ import annotations

import pulumi
import pytest

from nats_fly import NatsCluster, SettingsError
from nats_fly.cluster import NatsClusterError

ARGS = {"app": "lib-nats", "regions": ["ord"], "platform": "local", "auth": "none"}


def refused(mock_program, args) -> NatsClusterError:
    with pytest.raises(NatsClusterError) as caught:
        mock_program.run(lambda: NatsCluster("nats", args() if callable(args) else args))
    assert isinstance(caught.value, pulumi.RunError) and not isinstance(caught.value, ValueError)
    assert str(caught.value) == "\n".join(caught.value.problems)
    return caught.value


def lines(error: NatsClusterError) -> str:
    return "\n".join(error.problems)


@pytest.mark.parametrize("resolves_to,why", [
    ("short", "sysPassword: missing or not a text of at least 12"),
    (None, "sysPassword: missing or not a text of at least 12"),
    (123456789012345, "sysPassword: missing or not a text of at least 12"),
    (["x" * 12], "sysPassword: missing or not a text of at least 12"),
    ("x" * 11 + "\n", "sysPassword: holds a control character"),
])
def test_a_secret_output_that_resolves_to_something_bad_is_one_clean_error(mock_program, tmp_path, resolves_to, why):
    error = refused(mock_program, lambda: {**ARGS, "workDir": str(tmp_path),
                                           "sysPassword": pulumi.Output.secret(resolves_to)})
    assert why in lines(error) and len(error.problems) == 1
    assert not list(tmp_path.iterdir())


def test_a_secret_map_output_is_judged_when_it_resolves(mock_program, tmp_path):
    error = refused(mock_program, lambda: {**ARGS, "auth": "password", "users": ["app", "bob"], "workDir": str(tmp_path),
                                           "sysPassword": pulumi.Output.secret("s" * 16),
                                           "userPasswords": pulumi.Output.secret({"app": "short"})})
    assert "no password of at least 8 characters for user 'app'" in lines(error)
    assert "for user 'bob'" in lines(error)


@pytest.mark.parametrize("given,label", [
    ({"sysPassword": "a-plain-system-password"}, "nats-fly:sysPassword"),
    ({"sysPassword": 123456789012345}, "nats-fly:sysPassword"),
    ({"auth": "password", "userPasswords": {"app": "a-plain-password"}}, "nats-fly:userPasswords"),
])
def test_a_plain_secret_is_refused_as_the_stack_refuses_it(mock_program, tmp_path, given, label):
    error = refused(mock_program, lambda: {**ARGS, "workDir": str(tmp_path),
                                           "sysPassword": pulumi.Output.secret("s" * 16), **given})
    assert f"{label}: given in plain text; allowed: a secret Output" in lines(error)
    assert "a-plain" not in lines(error) and "123456789012345" not in lines(error)


def test_every_entry_of_a_password_map_must_be_a_secret_output(mock_program, tmp_path):
    error = refused(mock_program, lambda: {
        **ARGS, "auth": "password", "users": ["app", "bob"], "workDir": str(tmp_path),
        "sysPassword": pulumi.Output.secret("s" * 16),
        "userPasswords": {"app": pulumi.Output.secret("a" * 10), "bob": "bob-plain-password"}})
    assert error.problems == ["nats-fly:userPasswords.bob: given in plain text; allowed: a secret Output "
                              "(pulumi.Output.secret(...), Config.require_secret) for each entry (the value is not "
                              "shown here)"]


def test_a_secret_key_given_as_an_output_that_is_not_secret_is_refused_when_it_resolves(mock_program, tmp_path):
    error = refused(mock_program, lambda: {
        **ARGS, "auth": "password", "users": ["app"], "workDir": str(tmp_path),
        "sysPassword": pulumi.Output.from_input("not-a-secret-but-long"),
        "userPasswords": {"app": pulumi.Output.from_input("not-secret-either")}})
    assert sorted(error.problems) == sorted([
        "nats-fly:sysPassword: given in plain text; allowed: a secret Output (pulumi.Output.secret(...), "
        "Config.require_secret) (the value is not shown here)",
        "nats-fly:userPasswords.app: given in plain text; allowed: a secret Output (pulumi.Output.secret(...), "
        "Config.require_secret) for each entry (the value is not shown here)"])


def test_secret_outputs_everywhere_pass(mock_program, tmp_path):
    """Look-alikes: a map of secret Outputs, a secret Output of a map, an Output made secret later."""
    def program():
        NatsCluster("a", {**ARGS, "auth": "password", "users": ["app", "bob"], "workDir": str(tmp_path / "a"),
                          "sysPassword": pulumi.Output.from_input("s" * 16).apply(pulumi.Output.secret),
                          "userPasswords": {"app": pulumi.Output.secret("a" * 10),
                                            "bob": pulumi.Output.secret("b" * 10)}})
        NatsCluster("b", {**ARGS, "app": "lib-b", "auth": "password", "workDir": str(tmp_path / "b"),
                          "regions": ["syd"], "sysPassword": pulumi.Output.secret("s" * 16),
                          "userPasswords": pulumi.Output.secret({"app": "a" * 10}), "leafPasswords": {}})
    mock_program.run(program)
    assert sorted(mock_program.commands()) == ["a-ord-0", "a-ports", "b-ports", "b-syd-0"]


@pytest.mark.parametrize("args,why", [
    (None, "nats-fly: NatsCluster args None are not settings"),
    (["app", "x"], "nats-fly: NatsCluster args ['app', 'x'] are not settings"),
    ({5: "x"}, "are not settings; allowed: a dict from setting names to values"),
    ({**ARGS, "workDir": 5}, "nats-fly:workDir: 5 is not a folder path"),
    ({**ARGS, "workDir": ""}, "nats-fly:workDir: '' is not a folder path"),
    ({**ARGS, "workDir": "a\0b"}, "is not a folder path"),
    ({**ARGS, "platform": "fly", "workDir": "/tmp/x"}, "nats-fly:workDir: '/tmp/x' has no effect on the fly platform"),
    ({**ARGS, "regions": "an Output"}, "nats-fly:regions: an Output; allowed: a plain value"),
])
def test_arguments_that_are_not_settings_are_one_clean_error(mock_program, args, why):
    def make():
        if not isinstance(args, dict) or not all(isinstance(k, str) for k in args):
            return args
        outputs = {k: pulumi.Output.from_input(["ord"]) for k, v in args.items() if v == "an Output"}
        return {**args, **outputs, "sysPassword": pulumi.Output.secret("s" * 16)}
    error = refused(mock_program, make)
    assert why in lines(error), lines(error)


def test_the_stack_program_still_catches_refusals_as_settings_errors(mock_program, tmp_path):
    with pytest.raises(SettingsError):
        mock_program.run(lambda: NatsCluster("nats", {**ARGS, "regions": ["atlantis"], "workDir": str(tmp_path),
                                                      "sysPassword": pulumi.Output.secret("s" * 16)}))
