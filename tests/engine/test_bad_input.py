"""A catalogue of invalid stacks, each refused at `pulumi preview` with an error naming the key,
and each making no flyctl call at all (the stand-in's log stays as it was)."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from nats_fly_testkit.engine import flyctl_env

PLAIN_SECRET = "plain-text-pw-4417"

# (name, config changes, key the error must name)
CATALOGUE = [
    ("unknown region", {"regions": ["ord", "xyz"]}, "nats-fly:regions"),
    ("duplicate region", {"regions": ["ord", "syd", "ord"]}, "nats-fly:regions"),
    ("no regions", {"regions": []}, "nats-fly:regions"),
    ("zero machines in a region", {"regions": ["ord=0"]}, "nats-fly:regions[ord]"),
    ("bad app name", {"app": "Nats_Prod"}, "nats-fly:app"),
    ("app name too long", {"app": "n" * 64}, "nats-fly:app"),
    ("negative machines", {"machinesPerRegion": -1}, "nats-fly:machinesPerRegion"),
    ("unknown topology", {"topology": "ring"}, "nats-fly:topology"),
    ("unknown platform", {"platform": "k8s"}, "nats-fly:platform"),
    ("a nats-server version no test runs", {"natsVersion": "2.15.1"}, "nats-fly:natsVersion"),
    ("a nats-server version written with a v", {"platform": "local", "natsVersion": "v2.15.0"}, "nats-fly:natsVersion"),
    ("port out of range", {"clientPort": 70000}, "nats-fly:clientPort"),
    ("ports collide", {"monitorPort": 4222}, "nats-fly:monitorPort"),
    ("public ports collide", {"publicTlsPort": 10000}, "nats-fly:publicTlsPort"),
    ("lame duck too short", {"lameDuckDuration": "20s"}, "nats-fly:lameDuckDuration"),
    ("grace outlasts duration", {"lameDuckGracePeriod": "40s"}, "nats-fly:lameDuckGracePeriod"),
    ("kill timeout too short", {"killTimeout": "35s"}, "nats-fly:killTimeout"),
    ("kill timeout over Fly's limit", {"killTimeout": "400s"}, "nats-fly:killTimeout"),
    ("unknown vm size", {"vmSize": "mega-cpu"}, "nats-fly:vmSize"),
    ("soft over hard limit", {"softLimit": 30000}, "nats-fly:softLimit"),
    ("negative volume size", {"jetstream": True, "machinesPerRegion": 3, "volumeSize": -5},
     "nats-fly:volumeSize"),
    ("volume over Fly's limit", {"jetstream": True, "machinesPerRegion": 3, "volumeSize": 900},
     "nats-fly:volumeSize"),
    ("jetstream with too few servers", {"jetstream": True, "regions": ["ord"]}, "nats-fly:machinesPerRegion"),
    ("jetstream supercluster short in a region",
     {"jetstream": True, "topology": "supercluster", "regions": ["ord=3", "syd=2"]}, "nats-fly:machinesPerRegion"),
    ("duplicate user", {"users": ["app", "app"]}, "nats-fly:users"),
    ("reserved user", {"users": ["sys"]}, "nats-fly:users"),
    ("unknown key", {"replicas": 3}, "nats-fly:replicas"),
    ("bad ipv4 mode", {"publicIpv4": "maybe"}, "nats-fly:publicIpv4"),
    ("bad auth mode", {"auth": "open"}, "nats-fly:auth"),
    ("secret in plain text (Pulumi refuses it)", {"sysPassword": PLAIN_SECRET}, "nats-fly:sysPassword"),
    ("user passwords in plain text", {"userPasswords": {"app": PLAIN_SECRET}}, "nats-fly:userPasswords"),
    ("server tls without a certificate", {"serverTls": True}, "nats-fly:tlsCert"),
    ("bad verify url", {"verifyUrls": ["ord=http://x"]}, "nats-fly:verifyUrls"),
    # A YAML `|` block ends in a newline: never part of a hostname, a user or a slug.
    ("app name with a trailing newline", {"app": "bad-input-app\n"}, "nats-fly:app"),
    ("org with a trailing newline", {"org": "personal\n"}, "nats-fly:org"),
    ("user name with a newline, auth none", {"auth": "none", "users": ["app\nroot"]}, "nats-fly:users"),
    ("verify url port over 65535", {"verifyUrls": ["ord=nats://127.0.0.1:70000"]}, "nats-fly:verifyUrls"),
    ("verify url for a region not in the stack", {"verifyUrls": ["lhr=nats://127.0.0.1:4222"]}, "nats-fly:verifyUrls"),
    ("verify url region twice", {"verifyUrls": ["ord=nats://a:1", "ord=nats://b:2"]}, "nats-fly:verifyUrls"),
    ("memory not a multiple of 256", {"vmMemory": 1000}, "nats-fly:vmMemory"),
    ("memory over the preset's ceiling", {"vmMemory": 65536}, "nats-fly:vmMemory"),
    ("memory under a performance preset's floor", {"vmSize": "performance-2x", "vmMemory": 2048}, "nats-fly:vmMemory"),
    ("count that is not a number", {"machinesPerRegion": "three"}, "nats-fly:machinesPerRegion"),
    ("hard limit under the soft limit", {"hardLimit": 100}, "nats-fly:hardLimit"),
    ("port that is not a number", {"clientPort": "4222a"}, "nats-fly:clientPort"),
    ("duration with a trailing newline", {"killTimeout": "60s\n"}, "nats-fly:killTimeout"),
    ("local base port out of range", {"platform": "local", "localBasePort": 80}, "nats-fly:localBasePort"),
    ("certificate armour around garbage", {"serverTls": True, "tlsCert": {"secure": "garbage.crt"},
                                           "tlsKey": {"secure": "garbage.key"}}, "nats-fly:tlsCert"),
    # Issue 17, section 4, by class. WebSocket origins nats-server cannot use:
    ("origin with a brace in its host", {"websocketOrigins": ["https://a{b}.example.com"]}, "nats-fly:websocketOrigins"),
    ("wildcard origin", {"websocketOrigins": ["https://*.example.com"]}, "nats-fly:websocketOrigins"),
    ("origin with an empty port", {"websocketOrigins": ["https://a.example.com:"]}, "nats-fly:websocketOrigins"),
    ("origin browsers read as IPv4", {"websocketOrigins": ["http://127.1"]}, "nats-fly:websocketOrigins"),
    # A plain entry beside a secret one in a password map (the engine marks the whole key secret):
    ("plain entry in a secret map", {"users": ["app", "bob"], "userPasswords.bob": PLAIN_SECRET},
     "nats-fly:userPasswords.bob"),
    ("plain leaf password beside a secret one", {"leafnodes": True, "leafUsers": ["edge", "plant"],
                                                 "leafPasswords.edge": {"secure": "leaf-password-edge-1"},
                                                 "leafPasswords.plant": PLAIN_SECRET}, "nats-fly:leafPasswords.plant"),
    # TLS material Go's crypto/tls cannot load (or sign with), while `cryptography` can read it:
    *((f"{kind} certificate and key", {"serverTls": True, "tlsCert": {"secure": f"{kind}.crt"},
                                       "tlsKey": {"secure": f"{kind}.key"}}, "nats-fly:tlsCert")
      for kind in ("brainpoolP256r1", "secp256k1", "p-256-explicit", "ed448", "dsa", "rsa-pss", "sm2", "p-224",
                   "x509-label")),
    # Keys the platform or the stack ignores:
    ("local base port on fly", {"localBasePort": 20000}, "nats-fly:localBasePort"),
    ("leaf port without leaf nodes", {"leafPort": 7500}, "nats-fly:leafPort"),
    ("gateway port on a mesh", {"gatewayPort": 7300}, "nats-fly:gatewayPort"),
    ("websocket port without websocket", {"websocket": False, "websocketPort": 9090}, "nats-fly:websocketPort"),
    ("vm memory on the local platform", {"platform": "local"}, "nats-fly:vmMemory"),
    ("leaf passwords without leaf nodes", {"leafPasswords.edge": {"secure": "leaf-password-edge-1"}},
     "nats-fly:leafPasswords"),
    # Credentials in a refused value, never echoed:
    ("verify url with credentials", {"verifyUrls": [f"ord=nats://sys:{PLAIN_SECRET}@127.0.0.1:4222"]},
     "nats-fly:verifyUrls"),
    ("origin with credentials", {"websocketOrigins": [f"https://u:{PLAIN_SECRET}@a.example.com"]},
     "nats-fly:websocketOrigins"),
    # Missing caps:
    ("org over 63 characters", {"org": "o" * 64}, "nats-fly:org"),
    ("region with an empty count", {"regions": ["ord", "syd=", "cdg"]}, "nats-fly:regions[syd]"),
    ("region count written +2", {"regions": ["ord", "syd=+2", "cdg"]}, "nats-fly:regions[syd]"),
    ("region in capitals", {"regions": ["ord", "SYD", "cdg"]}, "nats-fly:regions"),
    ("lame duck grace of 0 (nats-server's default, 10 s)", {"lameDuckGracePeriod": "0s"},
     "nats-fly:lameDuckGracePeriod"),
    ("a hundred-and-one users", {"users": [f"u{i}" for i in range(101)]}, "nats-fly:users"),
    ("an app name of 100 kB", {"app": "a" * 100_000}, "nats-fly:app"),
]
BAD_PEM = "-----BEGIN CERTIFICATE-----\nTUlJQmZha2U=\n-----END CERTIFICATE-----\n"
BAD_KEY = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n"


@pytest.fixture(scope="module")
def tls_material(tmp_path_factory) -> dict[str, str]:
    """file name -> PEM, made by openssl: pairs of each key type nats-server cannot serve, and garbage."""
    folder = tmp_path_factory.mktemp("tls")
    kinds = {
        "brainpoolP256r1": ("-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:brainpoolP256r1"),
        "secp256k1": ("-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:secp256k1"),
        "p-256-explicit": ("-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-pkeyopt",
                           "ec_param_enc:explicit"),
        "p-224": ("-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-224"),
        "x509-label": ("-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"),
        "ed448": ("-algorithm", "ED448"), "sm2": ("-algorithm", "SM2"),
        "rsa-pss": ("-algorithm", "RSA-PSS", "-pkeyopt", "rsa_keygen_bits:2048"),
    }
    run = lambda *args: subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)  # noqa: E731
    run("dsaparam", "-out", "dsa.params", "2048")
    kinds["dsa"] = ("-paramfile", "dsa.params")
    for kind, genpkey in kinds.items():
        run("genpkey", *genpkey, "-out", f"{kind}.key")
        run("req", "-x509", "-new", "-key", f"{kind}.key", "-subj", "/CN=bad.example.com", "-days", "2",
            "-out", f"{kind}.crt")
    relabelled = (folder / "x509-label.crt").read_text().replace("CERTIFICATE-----", "X509 CERTIFICATE-----")
    (folder / "x509-label.crt").write_text(relabelled)
    made = {p.name: p.read_text() for pattern in ("*.crt", "*.key") for p in folder.glob(pattern)}
    return {**made, "garbage.crt": BAD_PEM, "garbage.key": BAD_KEY}


def test_every_bad_stack_fails_at_preview_naming_the_key_and_touching_no_fly(project, standin, engine_env,
                                                                           tls_material):
    assert len(CATALOGUE) >= 78
    engine_env.update(flyctl_env(standin, engine_env))
    stack = project("prod")
    stack.config({"app": "bad-input-app"})
    stack.pulumi("config", "set", "--secret", "--path", "userPasswords.app", stdin="app-password-1")
    stack_file = stack.root / "config" / "Pulumi.e2e.yaml"
    good = stack_file.read_text()  # with its encryptionsalt: the secrets stay readable
    calls_before = len(standin.flyctl_log())
    failures = []
    for name, changes, key in CATALOGUE:
        stack_file.write_text(good)
        if "sysPassword" not in changes:
            stack.pulumi("config", "set", "--secret", "sysPassword", stdin="system-password-1")
        secrets = {k: v for k, v in changes.items() if isinstance(v, dict) and "secure" in v}
        entries = {k: v for k, v in changes.items() if "." in k and k not in secrets}
        stack.config({k: v for k, v in changes.items() if k not in secrets and k not in entries})
        for where, value in secrets.items():  # set by the CLI, as a user would: real secrets, maybe wrong text
            stack.pulumi("config", "set", "--secret", *(["--path"] if "." in where else []), where,
                         stdin=tls_material.get(value["secure"], value["secure"]))
        set_entries(stack_file, entries)
        result = stack.pulumi("preview", check=False)
        text = result.stdout + result.stderr
        if result.returncode == 0 or key not in text:
            failures.append(f"{name}: exit {result.returncode}, key {key} not named:\n{text[-1500:]}")
        if PLAIN_SECRET in text:
            failures.append(f"{name}: the plain secret was echoed")
        if "an unhandled error occurred" in text or "Traceback" in text:
            failures.append(f"{name}: the refusal ends with a traceback or the engine's own line:\n{text[-800:]}")
        mine = [line for line in text.splitlines() if "nats-fly:" in line and "error" in line.lower()]
        if not mine:
            failures.append(f"{name}: no error line of ours:\n{text[-800:]}")
        if any(len(line) > 1000 for line in mine):
            failures.append(f"{name}: an error line of {max(len(line) for line in mine)} characters")
    assert not failures, "\n\n".join(failures)
    assert len(standin.flyctl_log()) == calls_before, "a refused stack made flyctl calls"
    assert not (stack.root / ".nats-fly").exists(), "a refused stack wrote a build context"


def set_entries(stack_file, entries: dict) -> None:
    """Map entries written into the stack file as they are (`key.entry: value`), beside the others."""
    if not entries:
        return
    document = yaml.safe_load(stack_file.read_text())
    for where, value in entries.items():
        key, entry = where.split(".", 1)
        document["config"].setdefault(f"nats-fly:{key}", {})[entry] = value
    stack_file.write_text(yaml.safe_dump(document, sort_keys=False))


def test_without_flyctl_or_a_token_preview_warns_and_up_stops_before_any_call(project, standin, engine_env):
    stack = project("prod")
    stack.config({"app": "no-tools-app"})
    stack.pulumi("config", "set", "--secret", "sysPassword", stdin="system-password-1")
    stack.pulumi("config", "set", "--secret", "--path", "userPasswords.app", stdin="app-password-1")
    calls_before = len(standin.flyctl_log())
    with_flyctl = flyctl_env(standin, engine_env)
    cases = {"no flyctl on PATH": ({k: v for k, v in with_flyctl.items() if k != "PATH"}, "flyctl is not on PATH"),
             "no token": ({k: v for k, v in with_flyctl.items() if k != "FLY_API_TOKEN"}, "no Fly token")}
    for name, (env, problem) in cases.items():
        stack.env = {**engine_env, **env}
        stack.env.pop("FLY_API_TOKEN", None) if name == "no token" else None
        preview = stack.pulumi("preview", check=False)
        said = preview.stdout + preview.stderr
        assert preview.returncode == 0 and "warning: nats-fly: " + problem in said, (name, said[-2000:])
        up = stack.pulumi("up", "--yes", "--skip-preview", check=False)
        said = up.stdout + up.stderr
        assert up.returncode != 0 and problem in said and "an unhandled error occurred" not in said, (name, said[-2000:])
        assert "flyctl: not found" not in said
    assert len(standin.flyctl_log()) == calls_before, "a call reached Fly"
    assert "+ " not in "".join(line for line in said.splitlines() if "command:local:Command" in line)
