"""Every stack key is validated; a bad value names the key, the value and what is allowed."""

import pytest

from nats_fly import settings
from nats_fly.settings import SettingsError

GOOD = {"app": "my-nats", "regions": ["ord", "syd", "cdg"]}


def load(**changes):
    values = {**GOOD, **changes}
    return settings.load({k: v for k, v in values.items() if v is not None})


def test_defaults_follow_the_example():
    s = load()
    assert s.regions == ("ord", "syd", "cdg") and s.primary_region == "ord"
    assert dict(s.machines) == {"ord": 1, "syd": 1, "cdg": 1}
    assert (s.ports.client, s.ports.cluster, s.ports.public, s.ports.public_tls) == (4222, 4248, 10000, 10001)
    assert s.topology == "mesh" and s.auth == "password"


def test_pulumi_strings_and_namespaced_keys_are_parsed():
    s = settings.load({"nats-fly:app": "x1", "nats-fly:regions": '["ord","syd=3"]',
                       "nats-fly:machinesPerRegion": "2", "nats-fly:jetstream": "false",
                       "nats-fly:killTimeout": "2m", "aws:region": "ignored"})
    assert dict(s.machines) == {"ord": 2, "syd": 3} and s.kill_timeout == 120 and not s.jetstream


BAD = [
    # (changes, key named in the error, fragment of what is allowed)
    ({"regions": ["ord", "xyz"]}, "nats-fly:regions", "'xyz' is not a Fly region"),
    ({"regions": ["ord", "ord"]}, "nats-fly:regions", "listed twice"),
    ({"regions": []}, "nats-fly:regions", "at least one"),
    ({"regions": None}, "nats-fly:regions", "missing"),
    ({"regions": "not a list {"}, "nats-fly:regions", "not a Fly region"),
    ({"regions": ["ord=0"]}, "nats-fly:regions[ord]", "1..100"),
    ({"app": "My_App"}, "nats-fly:app", "DNS label"),
    ({"app": "a" * 64}, "nats-fly:app", "at most 63"),
    ({"app": "-nats"}, "nats-fly:app", "starting with a letter"),
    ({"app": None}, "nats-fly:app", "missing"),
    ({"machinesPerRegion": 0}, "nats-fly:machinesPerRegion", "1..100"),
    ({"machinesPerRegion": -2}, "nats-fly:machinesPerRegion", "1..100"),
    ({"machinesPerRegion": "three"}, "nats-fly:machinesPerRegion", "an integer"),
    ({"topology": "star"}, "nats-fly:topology", "mesh, supercluster"),
    ({"platform": "k8s"}, "nats-fly:platform", "fly, local"),
    ({"clientPort": 70000}, "nats-fly:clientPort", "1..65535"),
    ({"clusterPort": 4222}, "nats-fly:clusterPort", "already used by clientPort"),
    ({"publicTlsPort": 10000}, "nats-fly:publicTlsPort", "already used by publicPort"),
    ({"lameDuckDuration": "10s"}, "nats-fly:lameDuckDuration", "at least 30s"),
    ({"lameDuckGracePeriod": "45s"}, "nats-fly:lameDuckGracePeriod", "shorter than lameDuckDuration"),
    ({"killTimeout": "30s"}, "nats-fly:killTimeout", "must outlast"),
    ({"killTimeout": "6m"}, "nats-fly:killTimeout", "at most 300s"),
    ({"killTimeout": "soon"}, "nats-fly:killTimeout", "duration"),
    ({"vmSize": "huge"}, "nats-fly:vmSize", "shared-cpu-1x"),
    ({"softLimit": 30000}, "nats-fly:softLimit", "must not exceed hardLimit"),
    ({"publicIpv4": "yes"}, "nats-fly:publicIpv4", "shared, dedicated, none"),
    ({"auth": "open"}, "nats-fly:auth", "password, none"),
    ({"users": ["app", "app"]}, "nats-fly:users", "listed twice"),
    ({"users": ["sys"]}, "nats-fly:users", "not 'sys'"),
    ({"jetstream": "yes"}, "nats-fly:jetstream", "true, false"),
    ({"jetstream": True, "regions": ["ord"]}, "nats-fly:machinesPerRegion", "too few for jetstream"),
    ({"jetstream": True, "topology": "supercluster", "machinesPerRegion": 2},
     "nats-fly:machinesPerRegion", "in each region"),
    ({"volumeSize": -1}, "nats-fly:volumeSize", "1..500"),
    ({"volumeSize": 501}, "nats-fly:volumeSize", "1..500"),
    ({"replicas": 3}, "nats-fly:replicas", "unknown key"),
    ({"platform": "local", "machinesPerRegion": 11}, "nats-fly:machinesPerRegion", "1..10 per region"),
    ({"platform": "local", "localBasePort": 65000, "machinesPerRegion": 3},
     "nats-fly:localBasePort", "leaves no room"),
]


@pytest.mark.parametrize("changes,key,allowed", BAD, ids=[f"{b[1]}-{i}" for i, b in enumerate(BAD)])
def test_bad_input_names_key_value_and_allowed(changes, key, allowed):
    with pytest.raises(SettingsError) as caught:
        load(**changes)
    message = str(caught.value)
    assert f"{key}:" in message and allowed in message
    assert len(caught.value.problems) >= 1


def test_all_problems_are_reported_at_once():
    with pytest.raises(SettingsError) as caught:
        load(app="Bad!", topology="ring", regions=["zzz"])
    assert len(caught.value.problems) == 3


def test_secrets_must_be_secret_and_complete():
    s = load(users=["alice", "bob"])
    with pytest.raises(SettingsError) as caught:
        settings.check_secrets(s, {"sysPassword": ("correct horse battery", False),
                                   "userPasswords": ({"alice": "12345678", "carol": "abcdefgh"}, True)})
    text = str(caught.value)
    assert "nats-fly:sysPassword: given in plain text" in text
    assert "correct horse" not in text
    assert "for user 'bob'" in text and "'carol' is not in users" in text
    settings.check_secrets(s, {"sysPassword": ("x" * 12, True),
                               "userPasswords": ({"alice": "a" * 8, "bob": "b" * 8}, True)})


def test_auth_none_needs_only_the_system_password():
    s = load(auth="none")
    settings.check_secrets(s, {"sysPassword": ("x" * 12, True), "userPasswords": (None, True)})
    with pytest.raises(SettingsError, match="nats-fly:sysPassword: missing"):
        settings.check_secrets(s, {"sysPassword": (None, True), "userPasswords": (None, True)})


def test_server_tls_needs_a_secret_pem_pair():
    s = load(serverTls=True, auth="none")
    ok = {"sysPassword": ("x" * 12, True)}
    with pytest.raises(SettingsError) as caught:
        settings.check_secrets(s, {**ok, "tlsCert": ("not a pem", True), "tlsKey": (None, True)})
    assert "nats-fly:tlsCert: missing or not a PEM certificate" in str(caught.value)
    assert "nats-fly:tlsKey: missing or not a PEM private key" in str(caught.value)
    with pytest.raises(SettingsError, match="nats-fly:tlsCert: given but serverTls is false"):
        settings.check_secrets(load(auth="none"), {**ok, "tlsCert": ("-----BEGIN CERTIFICATE-----", True)})
    settings.check_secrets(s, {**ok, "tlsCert": ("-----BEGIN CERTIFICATE-----\n", True),
                               "tlsKey": ("-----BEGIN PRIVATE KEY-----\n", True)})
