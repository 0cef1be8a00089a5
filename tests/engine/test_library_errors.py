"""NatsCluster's refusals in a host program, with the real engine (issue 17, section 5): each mistake of a
program's own (a secret Output that resolves to something bad, a plain or non-secret password, a plain
entry in a password map, a workDir or args that are not settings) ends its preview with our line and
no traceback, as the same mistake in a stack file does."""

from __future__ import annotations

import textwrap

import pytest

from nats_fly_testkit.engine import host_project, missing_tools, require

PLAIN = "plain-text-pw-5517"
PROGRAM = textwrap.dedent('''\
    """A host program whose cluster is given one mistake, named by the config key `case`."""
    import pulumi

    from nats_fly import NatsCluster

    config = pulumi.Config()
    good = config.require_secret("sysPassword")
    base = {"app": "lib-errors", "platform": "local", "regions": ["ord"], "auth": "none", "sysPassword": good}
    case = config.require("case")
    args = {
        "short secret": {**base, "sysPassword": pulumi.Output.secret("short")},
        "secret None": {**base, "sysPassword": pulumi.Output.secret(None)},
        "secret int": {**base, "sysPassword": pulumi.Output.secret(1234567890123)},
        "secret list": {**base, "sysPassword": pulumi.Output.secret(["a-long-enough-password"])},
        "plain password": {**base, "sysPassword": "%(plain)s"},
        "output not secret": {**base, "sysPassword": pulumi.Output.from_input("%(plain)s")},
        "plain map entry": {**base, "auth": "password", "users": ["app", "bob"],
                            "userPasswords": {"app": config.require_secret("sysPassword"), "bob": "%(plain)s"}},
        "short entry of a secret map": {**base, "auth": "password",
                                        "userPasswords": pulumi.Output.secret({"app": "short"})},
        "work dir 5": {**base, "workDir": 5},
        "args None": None,
    }[case]
    NatsCluster("nats", args)
    ''' % {"plain": PLAIN})

CASES = {
    "short secret": "nats-fly:sysPassword: missing or not a text of at least 12 characters",
    "secret None": "nats-fly:sysPassword: missing or not a text of at least 12 characters",
    "secret int": "nats-fly:sysPassword: missing or not a text of at least 12 characters",
    "secret list": "nats-fly:sysPassword: missing or not a text of at least 12 characters",
    "plain password": "nats-fly:sysPassword: given in plain text; allowed: a secret Output",
    "output not secret": "nats-fly:sysPassword: given in plain text; allowed: a secret Output",
    "plain map entry": "nats-fly:userPasswords.bob: given in plain text; allowed: a secret Output",
    "short entry of a secret map": "nats-fly:userPasswords: no password of at least 8 characters for user 'app'",
    "work dir 5": "nats-fly:workDir: 5 is not a folder path",
    "args None": "nats-fly: NatsCluster args None are not settings",
}


@pytest.fixture
def host(tmp_path):
    require(missing_tools(), "the engine tests")
    return host_project(tmp_path, "library-errors", PROGRAM, "library-sys-password-1")


def test_every_refusal_of_a_host_programs_cluster_is_our_line_without_a_traceback(host):
    failures = []
    for case, line in CASES.items():
        host.pulumi("config", "set", "case", case)
        result = host.pulumi("preview", check=False)
        said = result.stdout + result.stderr
        if result.returncode == 0 or line not in said:
            failures.append(f"{case}: exit {result.returncode}, {line!r} not said:\n{said[-1500:]}")
        if "Traceback" in said or "ValueError" in said or PLAIN in said:
            failures.append(f"{case}: a traceback or the password in the output:\n{said[-1500:]}")
    assert not failures, "\n\n".join(failures)
    assert not (host.root / ".nats-fly").exists()
