"""A catalogue of invalid stacks, each refused at `pulumi preview` with an error naming the key,
and each making no flyctl call at all (the stand-in's log stays as it was)."""

from __future__ import annotations

from engine import flyctl_env

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
]


def test_every_bad_stack_fails_at_preview_naming_the_key_and_touching_no_fly(project, standin, engine_env):
    assert len(CATALOGUE) >= 25
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
        stack.config(changes)
        result = stack.pulumi("preview", check=False)
        text = result.stdout + result.stderr
        if result.returncode == 0 or key not in text:
            failures.append(f"{name}: exit {result.returncode}, key {key} not named:\n{text[-1500:]}")
        if PLAIN_SECRET in text:
            failures.append(f"{name}: the plain secret was echoed")
    assert not failures, "\n\n".join(failures)
    assert len(standin.flyctl_log()) == calls_before, "a refused stack made flyctl calls"
    assert not (stack.root / ".nats-fly").exists(), "a refused stack wrote a build context"
