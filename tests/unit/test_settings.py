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
    ({"softLimit": 30000}, "nats-fly:softLimit", "exceeds nats-fly:hardLimit (25000)"),
    ({"hardLimit": 100}, "nats-fly:softLimit", "exceeds nats-fly:hardLimit (100)"),
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
    # Values with a trailing newline (a YAML `|` block) or one inside: never a hostname, a user, a key.
    ({"app": "my-nats\n"}, "nats-fly:app", "DNS label"),
    ({"org": "personal\n"}, "nats-fly:org", "organization slug"),
    ({"auth": "none", "users": ["app\nevil"]}, "nats-fly:users", "not a valid user name"),
    ({"users": ["app\n"]}, "nats-fly:users", "not a valid user name"),
    ({"lameDuckDuration": "30s\n"}, "nats-fly:lameDuckDuration", "not a duration"),
    ({"machinesPerRegion": "three"}, "nats-fly:machinesPerRegion", "is not an integer"),
    ({"regions": ["ord=two"]}, "nats-fly:regions[ord]", "is not an integer"),
    ({"clientPort": 4.5}, "nats-fly:clientPort", "is not an integer"),
    ({"clientPort": True}, "nats-fly:clientPort", "is not an integer"),
    ({"verifyUrls": ["ord=nats://127.0.0.1:70000"]}, "nats-fly:verifyUrls", "port 1..65535"),
    ({"verifyUrls": ["ord=nats://127.0.0.1"]}, "nats-fly:verifyUrls", "has no port"),
    ({"verifyUrls": ["lhr=nats://127.0.0.1:4222"]}, "nats-fly:verifyUrls", "not in the stack"),
    ({"verifyUrls": ["ord=nats://a:4222", "ord=nats://b:4222"]}, "nats-fly:verifyUrls", "listed twice"),
    ({"verifyUrls": ["ord=http://a:4222"]}, "nats-fly:verifyUrls", "nats://host:port"),
    ({"verifyUrls": ["ord=nats://sys:hunter2@a:4222"]}, "nats-fly:verifyUrls", "carries credentials"),
    ({"verifyUrls": ["ord=nats://a:4222\n"]}, "nats-fly:verifyUrls", "nats://host:port"),
    ({"vmMemory": 1000}, "nats-fly:vmMemory", "multiple of 256 from 256 to 2048 MB"),
    ({"vmMemory": 65536}, "nats-fly:vmMemory", "does not fit vmSize shared-cpu-1x"),
    ({"vmSize": "performance-2x", "vmMemory": 2048}, "nats-fly:vmMemory", "from 4096 to 16384 MB"),
    ({"vmSize": "shared-cpu-8x", "vmMemory": 16640}, "nats-fly:vmMemory", "from 2048 to 16384 MB"),
    ({"websocketOrigins": ["https://a.example.com/path"]}, "nats-fly:websocketOrigins", "is not an origin"),
    ({"websocketOrigins": ["ftp://a.example.com"]}, "nats-fly:websocketOrigins", "is not an origin"),
    ({"websocketOrigins": ["https://a.example.com:99999"]}, "nats-fly:websocketOrigins", "is not an origin"),
    ({"websocketOrigins": ["*", "https://a.example.com"]}, "nats-fly:websocketOrigins", "'*' alone"),
    ({"websocketOrigins": ["https://a.example.com", "https://a.example.com"]}, "nats-fly:websocketOrigins",
     "listed twice"),
    ({"websocketPort": 8222}, "nats-fly:websocketPort", "already used by monitorPort"),
    ({"websocket": True, "publicTlsPort": 443}, "nats-fly:publicTlsPort", "443 is where Fly serves the websocket"),
    ({"leafnodes": True}, "nats-fly:leafUsers", "at least one leaf user"),
    ({"leafUsers": ["edge", "edge"]}, "nats-fly:leafUsers", "listed twice"),
    ({"leafUsers": ["Edge!"]}, "nats-fly:leafUsers", "not a valid user name"),
    ({"leafPort": 4222}, "nats-fly:leafPort", "already used by clientPort"),
    ({"publicLeafPort": 10001}, "nats-fly:publicLeafPort", "already used by publicTlsPort"),
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


def pem_pair(name: str = "nats.example.com", encrypt: bytes | None = None) -> tuple[str, str]:
    """A real self-signed certificate and its key, as PEM."""
    import datetime
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    protection = (serialization.BestAvailableEncryption(encrypt) if encrypt else serialization.NoEncryption())
    return (cert.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, protection).decode())


def test_server_tls_needs_a_real_pem_pair_whose_key_matches():
    s = load(serverTls=True, auth="none")
    ok = {"sysPassword": ("x" * 12, True)}
    cert, key = pem_pair()
    settings.check_secrets(s, {**ok, "tlsCert": (cert, True), "tlsKey": (key, True)})
    with pytest.raises(SettingsError) as caught:
        settings.check_secrets(s, {**ok, "tlsCert": ("not a pem", True), "tlsKey": (None, True)})
    assert "nats-fly:tlsCert: not a PEM certificate chain" in str(caught.value)
    assert "nats-fly:tlsKey: missing" in str(caught.value)
    garbage = "-----BEGIN CERTIFICATE-----\nTUlJQmZha2U=\n-----END CERTIFICATE-----\n"
    armour = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n"
    with pytest.raises(SettingsError) as caught:
        settings.check_secrets(s, {**ok, "tlsCert": (garbage, True), "tlsKey": (armour, True)})
    assert "tlsCert: not a PEM certificate chain" in str(caught.value)
    assert "tlsKey: not a PEM private key" in str(caught.value)
    _, other_key = pem_pair()
    with pytest.raises(SettingsError, match="nats-fly:tlsKey: does not belong to the first certificate of tlsCert"):
        settings.check_secrets(s, {**ok, "tlsCert": (cert, True), "tlsKey": (other_key, True)})
    _, locked = pem_pair(encrypt=b"passphrase")
    with pytest.raises(SettingsError, match="nats-fly:tlsKey: the private key is encrypted"):
        settings.check_secrets(s, {**ok, "tlsCert": (cert, True), "tlsKey": (locked, True)})
    with pytest.raises(SettingsError, match="nats-fly:tlsCert: given but serverTls is false"):
        settings.check_secrets(load(auth="none"), {**ok, "tlsCert": (cert, True)})
    for text in (str(caught.value),):
        assert key not in text and cert not in text


def test_memory_within_the_preset_range_is_accepted():
    assert load(vmSize="performance-2x", vmMemory=8192).vm_memory_mb == 8192
    assert load(vmSize="shared-cpu-2x", vmMemory=4096).vm_memory_mb == 4096
    assert load(vmMemory=256).vm_memory_mb == 256


def test_every_catalogue_default_is_valid_and_reaches_settings():
    s = load()
    for key in settings.KEYS:
        if key.field and key.parse and key.default not in (settings.REQUIRED, None):
            problems: list[str] = []
            parsed = key.parse(key.name, key.default, problems)
            assert not problems, (key.name, problems)
            holder, _, attr = key.field.rpartition(".")
            assert getattr(s.ports if holder else s, attr) == parsed, key.name


def test_leaf_passwords_are_secret_complete_and_only_for_leaf_users():
    s = load(leafnodes=True, leafUsers=["edge"])
    ok = {"sysPassword": ("x" * 12, True), "userPasswords": ({"app": "a" * 8}, True)}
    settings.check_secrets(s, {**ok, "leafPasswords": ({"edge": "e" * 12}, True)})
    with pytest.raises(SettingsError) as caught:
        settings.check_secrets(s, {**ok, "leafPasswords": ({"edge": "short", "other": "o" * 12}, True)})
    assert "nats-fly:leafPasswords: no password of at least 12 characters for user 'edge'" in str(caught.value)
    assert "'other' is not in leafUsers" in str(caught.value)
    with pytest.raises(SettingsError, match="nats-fly:leafPasswords: given in plain text"):
        settings.check_secrets(s, {**ok, "leafPasswords": ({"edge": "e" * 12}, False)})
    with pytest.raises(SettingsError, match="given but leafnodes is false"):
        settings.check_secrets(load(), {**ok, "leafPasswords": ({"edge": "e" * 12}, True)})
