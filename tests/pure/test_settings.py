"""Every stack key is validated; a bad value names the key, the value and what is allowed. Each class of
bad input is covered with its refusals, the inputs that are made to work, and valid look-alikes."""

import pytest

from nats_fly import platforms
from nats_fly.config import settings
from nats_fly.config.settings import OPAQUE, SettingsError
from nats_fly_testkit.support import self_signed

GOOD = {"app": "my-nats", "regions": ["ord", "syd", "cdg"]}
SYS = {"sysPassword": ("x" * 12, True)}


def load(**changes):
    values = {**GOOD, **changes}
    return platforms.settings({k: v for k, v in values.items() if v is not None})


def refusal(**changes) -> str:
    with pytest.raises(SettingsError) as caught:
        load(**changes)
    return str(caught.value)


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
    # Only the releases the tests run; their neighbours (an untested patch, a prefix, a 'v') are refused.
    ({"natsVersion": "2.15.1"}, "nats-fly:natsVersion", "is not allowed; allowed: 2.12.8, 2.15.0"),
    ({"natsVersion": "2.14.6"}, "nats-fly:natsVersion", "allowed: 2.12.8, 2.15.0"),
    ({"natsVersion": "v2.15.0"}, "nats-fly:natsVersion", "allowed: 2.12.8, 2.15.0"),
    ({"natsVersion": "2.15"}, "nats-fly:natsVersion", "allowed: 2.12.8, 2.15.0"),
    ({"natsVersion": "2.15.0\n"}, "nats-fly:natsVersion", "allowed: 2.12.8, 2.15.0"),
    ({"natsVersion": 2.15}, "nats-fly:natsVersion", "allowed: 2.12.8, 2.15.0"),
    ({"clientPort": 70000}, "nats-fly:clientPort", "1..65535"),
    ({"clusterPort": 4222}, "nats-fly:clusterPort", "already used by clientPort"),
    ({"publicTlsPort": 10000}, "nats-fly:publicTlsPort", "already used by publicPort"),
    ({"lameDuckDuration": "10s"}, "nats-fly:lameDuckDuration", "at least 30s"),
    ({"lameDuckGracePeriod": "45s"}, "nats-fly:lameDuckGracePeriod", "shorter than lameDuckDuration"),
    ({"killTimeout": "30s"}, "nats-fly:killTimeout", "must outlast"),
    ({"killTimeout": "6m"}, "nats-fly:killTimeout", "1..300"),
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
    ({"jetstream": True, "volumeSize": -1}, "nats-fly:volumeSize", "1..500"),
    ({"jetstream": True, "volumeSize": 501}, "nats-fly:volumeSize", "1..500"),
    ({"replicas": 3}, "nats-fly:replicas", "unknown key"),
    # Values with a trailing newline (a YAML `|` block) or one inside: never a hostname, a user, a key.
    ({"app": "my-nats\n"}, "nats-fly:app", "DNS label"),
    ({"org": "personal\n"}, "nats-fly:org", "organization slug"),
    ({"users": ["app\nevil"]}, "nats-fly:users", "not a valid user name"),
    ({"users": ["app\n"]}, "nats-fly:users", "not a valid user name"),
    ({"lameDuckDuration": "30s\n"}, "nats-fly:lameDuckDuration", "not a duration"),
    ({"machinesPerRegion": "three"}, "nats-fly:machinesPerRegion", "is not an integer"),
    ({"regions": ["ord=two"]}, "nats-fly:regions[ord]", "is not a count"),
    ({"clientPort": 4.5}, "nats-fly:clientPort", "is not an integer"),
    ({"clientPort": True}, "nats-fly:clientPort", "is not an integer"),
    ({"verifyUrls": ["ord=nats://127.0.0.1:70000"], "verify": True}, "nats-fly:verifyUrls", "port 1..65535"),
    ({"verifyUrls": ["ord=nats://127.0.0.1"], "verify": True}, "nats-fly:verifyUrls", "has no port"),
    ({"verifyUrls": ["lhr=nats://127.0.0.1:4222"], "verify": True}, "nats-fly:verifyUrls", "not in the stack"),
    ({"verifyUrls": ["ord=nats://a:4222", "ord=nats://b:4222"], "verify": True}, "nats-fly:verifyUrls",
     "listed twice"),
    ({"verifyUrls": ["ord=http://a:4222"], "verify": True}, "nats-fly:verifyUrls", "nats://host:port"),
    ({"verifyUrls": ["ord=nats://sys:hunter2@a:4222"], "verify": True}, "nats-fly:verifyUrls",
     "carries credentials"),
    ({"verifyUrls": ["ord=nats://a:4222\n"], "verify": True}, "nats-fly:verifyUrls", "nats://host:port"),
    ({"vmMemory": 1000}, "nats-fly:vmMemory", "multiple of 256 from 256 to 2048 MB"),
    ({"vmMemory": 65536}, "nats-fly:vmMemory", "does not fit vmSize shared-cpu-1x"),
    ({"vmSize": "performance-2x", "vmMemory": 2048}, "nats-fly:vmMemory", "from 4096 to 16384 MB"),
    ({"vmSize": "shared-cpu-8x", "vmMemory": 16640}, "nats-fly:vmMemory", "from 2048 to 16384 MB"),
    ({"websocket": True, "websocketPort": 8222}, "nats-fly:websocketPort", "already used by monitorPort"),
    ({"websocket": True, "publicTlsPort": 443}, "nats-fly:publicTlsPort", "443 is where Fly serves the websocket"),
    ({"leafnodes": True}, "nats-fly:leafUsers", "at least one leaf user"),
    ({"leafnodes": True, "leafUsers": ["edge", "edge"]}, "nats-fly:leafUsers", "listed twice"),
    ({"leafnodes": True, "leafUsers": ["Edge!"]}, "nats-fly:leafUsers", "not a valid user name"),
    ({"leafnodes": True, "leafUsers": ["e"], "leafPort": 4222}, "nats-fly:leafPort", "already used by clientPort"),
    ({"leafnodes": True, "leafUsers": ["e"], "publicLeafPort": 10001}, "nats-fly:publicLeafPort",
     "already used by publicTlsPort"),
    ({"platform": "local", "machinesPerRegion": 11}, "nats-fly:machinesPerRegion", "1..10 per region"),
    ({"platform": "local", "localBasePort": 65000, "machinesPerRegion": 3},
     "nats-fly:localBasePort", "leaves no room"),
]

# Missing caps and loose forms (issue 17, 4.8): names without a length limit, `code=` forms, numbers,
# booleans and durations in the wrong shape, empty strings, list items and YAML types a key does not take.
CAPS = [
    ({"org": "o" * 64}, "nats-fly:org", "at most 63"),
    ({"org": ""}, "nats-fly:org", "organization slug"),
    ({"org": ["personal"]}, "nats-fly:org", "organization slug"),
    ({"app": ""}, "nats-fly:app", "DNS label"),
    ({"app": 5}, "nats-fly:app", "DNS label"),
    ({"app": {"name": "x"}}, "nats-fly:app", "DNS label"),
    ({"regions": ["syd="]}, "nats-fly:regions[syd]", "'' after '=' is not a count"),
    ({"regions": ["syd==2"]}, "nats-fly:regions[syd]", "'=2' after '=' is not a count"),
    ({"regions": ["syd=+2"]}, "nats-fly:regions[syd]", "is not a count"),
    ({"regions": ["syd=-1"]}, "nats-fly:regions[syd]", "is not a count"),
    ({"regions": ["syd=2.0"]}, "nats-fly:regions[syd]", "is not a count"),
    ({"regions": ["syd= 2"]}, "nats-fly:regions[syd]", "is not a count"),
    ({"regions": ["syd=101"]}, "nats-fly:regions[syd]", "1..100"),
    ({"regions": [" syd"]}, "nats-fly:regions", "' syd' is not a Fly region"),
    ({"regions": ["SYD"]}, "nats-fly:regions", "codes are lowercase: 'syd'"),
    ({"regions": [3]}, "nats-fly:regions", "3 is not a Fly region"),
    ({"regions": [["ord"]]}, "nats-fly:regions", "is not a Fly region"),
    ({"regions": {"ord": 1}}, "nats-fly:regions", "is not a list"),
    ({"regions": ["ord=2", "syd=3"], "machinesPerRegion": 5}, "nats-fly:machinesPerRegion",
     "every region gives its own count"),
    ({"machinesPerRegion": 2.0}, "nats-fly:machinesPerRegion", "is not an integer"),
    ({"machinesPerRegion": True}, "nats-fly:machinesPerRegion", "is not an integer"),
    ({"machinesPerRegion": " 2"}, "nats-fly:machinesPerRegion", "is not an integer"),
    ({"machinesPerRegion": "2\n"}, "nats-fly:machinesPerRegion", "is not an integer"),
    ({"machinesPerRegion": "0x2"}, "nats-fly:machinesPerRegion", "is not an integer"),
    ({"clientPort": "4222.0"}, "nats-fly:clientPort", "is not an integer"),
    ({"clientPort": ""}, "nats-fly:clientPort", "is not an integer"),
    ({"clientPort": [4222]}, "nats-fly:clientPort", "is not an integer"),
    ({"clientPort": "9" * 40}, "nats-fly:clientPort", "is not an integer"),
    ({"jetstream": 1}, "nats-fly:jetstream", "true, false"),
    ({"jetstream": "yes"}, "nats-fly:jetstream", "true, false"),
    ({"jetstream": ""}, "nats-fly:jetstream", "true, false"),
    ({"killTimeout": "1h"}, "nats-fly:killTimeout", "'30s' or '2m'"),
    ({"killTimeout": "-5s"}, "nats-fly:killTimeout", "not a duration"),
    ({"killTimeout": "30 s"}, "nats-fly:killTimeout", "not a duration"),
    ({"killTimeout": "0"}, "nats-fly:killTimeout", "1..300"),
    ({"killTimeout": 59.5}, "nats-fly:killTimeout", "not a duration"),
    ({"killTimeout": True}, "nats-fly:killTimeout", "not a duration"),
    ({"killTimeout": ""}, "nats-fly:killTimeout", "not a duration"),
    ({"lameDuckGracePeriod": "0s"}, "nats-fly:lameDuckGracePeriod", "1..300"),  # 0 would mean nats' 10 s
    ({"lameDuckDuration": "9" * 20}, "nats-fly:lameDuckDuration", "not a duration"),
    ({"lameDuckDuration": "999999s"}, "nats-fly:lameDuckDuration", "1..300"),
    ({"topology": ""}, "nats-fly:topology", "mesh, supercluster"),
    ({"topology": ["mesh"]}, "nats-fly:topology", "mesh, supercluster"),
    ({"platform": "LOCAL"}, "nats-fly:platform", "fly, local"),
    ({"users": ""}, "nats-fly:users", "give at least one client user"),
    ({"users": [5]}, "nats-fly:users", "5 is not a valid user name"),
    ({"users": [None]}, "nats-fly:users", "None is not a valid user name"),
    ({"users": "app"}, None, None),  # one name in text is a list of one: no refusal
    ({"users": {"app": 1}}, "nats-fly:users", "is not a list"),
    ({"users": [f"u{i}" for i in range(101)]}, "nats-fly:users", "at most 100"),
    ({"users": ["u" * 33]}, "nats-fly:users", "at most 32"),
    ({"websocket": True, "websocketOrigins": [f"https://h{i}.example.com" for i in range(101)]},
     "nats-fly:websocketOrigins", "at most 100"),
    ({"websocket": True, "websocketOrigins": [5]}, "nats-fly:websocketOrigins", "not a string"),
    ({"verify": True, "verifyUrls": [None]}, "nats-fly:verifyUrls", "not REGION=URL"),
    ({"verify": True, "verifyUrls": ["ord=nats://" + "h" * 254 + ":4222"]}, "nats-fly:verifyUrls",
     "nats://host:port"),
    ({"localBasePort": True, "platform": "local"}, "nats-fly:localBasePort", "is not an integer"),
]

# WebSocket origins nats-server cannot use (issue 17, 4.1): what Go's net/url refuses in a host, what it
# takes but compares literally and so never matches a browser's Origin, and what nats-server drops.
ORIGINS = [
    ("https://a{b}.example.com", "Go's URL parser refuses '{}' in a host"),
    ("https://a|b.example.com", "refuses '|'"),
    ("https://a^b.example.com", "refuses '^'"),
    ("https://a`b.example.com", "refuses '`'"),
    ("https://a\\b.example.com", "refuses '\\\\'"),
    ("https://a b.example.com", "refuses ' '"),
    ("https://*.example.com", "a wildcard matches no page"),
    ("https://app*.example.com", "a wildcard matches no page"),
    ("https://", "no host"),
    ("https://:8443", "no host"),
    ("https://a.example.com:", "':' with no port after it"),
    ("https://a.example.com:0", "port '0' is not 1..65535"),
    ("https://a.example.com:99999", "port '99999' is not 1..65535"),
    ("https://a.example.com:80a", "port '80a' is not 1..65535"),
    ("https://a.example.com:-1", "is not 1..65535"),
    ("https://a.example.com/path", "no path"),
    ("https://a.example.com?q=1", "no path, query or fragment"),
    ("https://a.example.com#top", "no path, query or fragment"),
    ("ftp://a.example.com", "not http:// or https://"),
    ("wss://a.example.com", "not http:// or https://"),
    ("a.example.com", "not http:// or https://"),
    ("null", "not http:// or https://"),
    ("https://a..example.com", "not a host name"),
    ("https://" + "a" * 64 + ".example.com", "not a host name"),
    ("https://a:b:80", "not a host name"),
    ("https://a%41.example.com", "a %-escape in the host"),
    ("https://[fe80::1%25eth0]", "an IPv6 zone"),
    ("https://[::1", "not a host name"),
    ("https://[zz::1]", "not an IPv6 address"),
    ("http://127.1", "browsers read it as an IPv4 address"),
    ("http://0x7f.0.0.1", "browsers read it as an IPv4 address"),
    ("http://1.2.3.04", "browsers read it as an IPv4 address"),
    ("https://👍.example", "not an internationalised domain name"),
    ("https://user:pa55@a.example.com", "carries credentials"),
    ("*", None),  # only alone
]


@pytest.mark.parametrize("changes,key,allowed", BAD + CAPS, ids=[f"{b[1]}-{i}" for i, b in enumerate(BAD + CAPS)])
def test_bad_input_names_key_value_and_allowed(changes, key, allowed):
    if key is None:
        load(**changes)
        return
    message = refusal(**changes)
    assert f"{key}:" in message and allowed in message, message


@pytest.mark.parametrize("origin,why", ORIGINS, ids=[o for o, _ in ORIGINS])
def test_origins_nats_server_cannot_use_are_refused(origin, why):
    message = refusal(websocket=True, websocketOrigins=["https://ok.example.com", origin])
    assert "nats-fly:websocketOrigins:" in message and "is not valid" in message, message
    assert why is None or why in message, message
    assert "http(s)://host[:port]" in message


# Made to work: written as the browser sends it (origins.py's docstring says why each matters).
ORIGINS_MADE_TO_WORK = [
    ("https://bücher.example", "https://xn--bcher-kva.example"),
    ("https://BÜCHER.example:8443", "https://xn--bcher-kva.example:8443"),
    ("https://faß.de", "https://xn--fa-hia.de"),  # UTS #46 non-transitional, as browsers: not fass.de
    ("https://日本.jp", "https://xn--wgv71a.jp"),
    ("https://ｅｘａｍｐｌｅ.com", "https://example.com"),
    ("HTTPS://App.Example.COM", "https://app.example.com"),
    ("https://app.example.com:443", "https://app.example.com"),
    ("http://app.example.com:80", "http://app.example.com"),
    ("https://app.example.com:08443", "https://app.example.com:8443"),
    ("https://app.example.com/", "https://app.example.com"),
    ("https://[0:0:0:0:0:0:0:1]:8443", "https://[::1]:8443"),
    ("https://[2001:DB8:0:0:1:0:0:1]", "https://[2001:db8::1:0:0:1]"),
    ("https://[1:0:2:3:4:5:6:7]", "https://[1:0:2:3:4:5:6:7]"),
]
# Valid look-alikes: they pass as they are.
ORIGINS_AS_THEY_ARE = ["https://app.example.com", "http://localhost:3000", "https://a-b_c.example.com",
                       "http://127.0.0.1:8080", "https://[::1]", "https://xn--bcher-kva.example",
                       "https://example.com.", "http://10.0.0.1"]


def test_origins_are_written_as_browsers_send_them():
    for origin, expected in ORIGINS_MADE_TO_WORK:
        assert load(websocket=True, websocketOrigins=[origin]).websocket_origins == (expected,), origin
    assert load(websocket=True, websocketOrigins=ORIGINS_AS_THEY_ARE).websocket_origins == \
        tuple(ORIGINS_AS_THEY_ARE)
    assert load(websocket=True, websocketOrigins=["*"]).websocket_origins == ("*",)
    # Several origins of one host (schemes, ports) are several entries, as nats-server 2.12 keeps them.
    assert load(websocket=True, websocketOrigins=["http://app.example.com:3000", "https://app.example.com"]) \
        .websocket_origins == ("http://app.example.com:3000", "https://app.example.com")


def test_an_origin_written_twice_is_listed_twice():
    message = refusal(websocket=True, websocketOrigins=["https://app.example.com", "https://App.Example.com:443"])
    assert "listed twice (https://app.example.com)" in message
    assert "'*' stands alone" in refusal(websocket=True, websocketOrigins=["*", "https://a.example.com"])


# Keys that change nothing where they are given (issue 17, 4.5): each refused, naming what would give it
# an effect. Look-alikes: the same value where it takes effect, and the default anywhere.
WITHOUT_EFFECT = [
    ({"platform": "local", "org": "acme"}, "nats-fly:org", "on the local platform; allowed: platform: fly"),
    ({"platform": "local", "publicIpv4": "dedicated"}, "nats-fly:publicIpv4", "platform: fly"),
    ({"platform": "local", "vmSize": "shared-cpu-2x"}, "nats-fly:vmSize", "platform: fly"),
    ({"platform": "local", "vmMemory": 1024}, "nats-fly:vmMemory", "platform: fly"),
    ({"platform": "local", "softLimit": 100}, "nats-fly:softLimit", "platform: fly"),
    ({"platform": "local", "publicPort": 11000}, "nats-fly:publicPort", "platform: fly"),
    ({"platform": "local", "publicTlsPort": 11001}, "nats-fly:publicTlsPort", "platform: fly"),
    ({"platform": "local", "killTimeout": "90s"}, "nats-fly:killTimeout", "platform: fly"),
    ({"platform": "local", "peerWait": 5}, "nats-fly:peerWait", "platform: fly"),
    ({"platform": "local", "clientPort": 5222}, "nats-fly:clientPort", "platform: fly"),
    ({"platform": "local", "monitorPort": 9222}, "nats-fly:monitorPort", "platform: fly"),
    ({"platform": "local", "clusterPort": 5248}, "nats-fly:clusterPort", "platform: fly"),
    ({"platform": "local", "websocket": True, "websocketPort": 9090}, "nats-fly:websocketPort", "platform: fly"),
    ({"localBasePort": 20000}, "nats-fly:localBasePort", "on the fly platform; allowed: platform: local"),
    ({"websocketPort": 9090}, "nats-fly:websocketPort", "without websocket: true"),
    ({"websocketOrigins": ["https://a.example.com"]}, "nats-fly:websocketOrigins", "without websocket: true"),
    ({"leafPort": 7500}, "nats-fly:leafPort", "without leafnodes: true"),
    ({"publicLeafPort": 7500}, "nats-fly:publicLeafPort", "without leafnodes: true"),
    ({"leafUsers": ["edge"]}, "nats-fly:leafUsers", "without leafnodes: true"),
    ({"gatewayPort": 7300}, "nats-fly:gatewayPort", "without topology: supercluster"),
    ({"volumeSize": 10}, "nats-fly:volumeSize", "without jetstream: true"),
    ({"auth": "none", "users": ["alice"]}, "nats-fly:users", "without auth: password"),
    ({"verifyUrls": ["ord=nats://127.0.0.1:4222"]}, "nats-fly:verifyUrls", "without verify: true"),
    ({"platform": "local", "jetstream": True, "verifyUrls": ["ord=nats://127.0.0.1:4222"]}, "nats-fly:verifyUrls",
     "without verify: true"),
]
WITH_EFFECT = [
    {"org": "acme"}, {"publicIpv4": "dedicated"}, {"vmSize": "shared-cpu-2x"}, {"softLimit": 100, "hardLimit": 100},
    {"killTimeout": "90s"}, {"peerWait": 5}, {"clientPort": 5222},
    {"platform": "local", "localBasePort": 20000}, {"websocket": True, "websocketPort": 9090},
    {"websocket": True, "websocketOrigins": ["https://a.example.com"]},
    {"leafnodes": True, "leafUsers": ["edge"], "leafPort": 7500, "publicLeafPort": 7500},
    {"topology": "supercluster", "gatewayPort": 7300}, {"jetstream": True, "volumeSize": 10},
    {"platform": "local", "jetstream": True, "volumeSize": 10}, {"users": ["alice"]},
    {"verify": True, "verifyUrls": ["ord=nats://127.0.0.1:4222"]},
    {"jetstream": True, "verifyUrls": ["ord=nats://127.0.0.1:4222"]},  # Fly's scale-down reaches the cluster there
    {"platform": "local", "lameDuckDuration": "200s"},  # killTimeout is Fly's: no relation to it locally
    {"platform": "local", "hardLimit": 50},  # softLimit (Fly's proxy) no longer has to fit under it
    # Defaults are no refusal wherever they are (Pulumi.yaml's config block gives every key its default).
    {"platform": "local", "org": "personal", "vmSize": "shared-cpu-1x", "publicPort": "10000", "clientPort": 4222,
     "killTimeout": "60s", "volumeSize": "1", "users": ["app"], "websocketOrigins": [], "verifyUrls": "[]"},
    {"localBasePort": "0", "gatewayPort": 7222, "leafUsers": [], "websocketPort": "8080"},
]


@pytest.mark.parametrize("changes,key,allowed", WITHOUT_EFFECT, ids=[c[1] + str(i) for i, c in enumerate(WITHOUT_EFFECT)])
def test_a_key_without_effect_is_refused_naming_what_gives_it_one(changes, key, allowed):
    message = refusal(**changes)
    assert f"{key}:" in message and "has no effect" in message and allowed in message, message
    assert "or leave it at its default" in message


@pytest.mark.parametrize("changes", WITH_EFFECT, ids=[str(i) for i in range(len(WITH_EFFECT))])
def test_the_same_keys_where_they_take_effect_pass(changes):
    load(**changes)


def test_ports_collide_only_when_their_feature_is_on():
    # websocketPort defaults to 8080, leafPort to 7422, gatewayPort to 7222: off, they are in nobody's way.
    assert load(clientPort=8080).ports.client == 8080
    assert load(clientPort=7422, monitorPort=7222).ports.monitor == 7222
    assert load(publicPort=7422).ports.public == 7422  # publicLeafPort's default, leafnodes off
    assert load(publicPort=443).ports.public == 443  # 443 is Fly's WebSocket port only with websocket
    assert "already used by clientPort" in refusal(clientPort=8080, websocket=True)
    assert "already used by clientPort" in refusal(clientPort=7422, leafnodes=True, leafUsers=["e"])
    assert "already used by clientPort" in refusal(clientPort=7222, topology="supercluster")
    assert "already used by publicPort" in refusal(publicPort=7422, leafnodes=True, leafUsers=["e"])
    assert "443 is where Fly serves" in refusal(publicPort=443, websocket=True)


def test_all_problems_are_reported_at_once():
    with pytest.raises(SettingsError) as caught:
        load(app="Bad!", topology="ring", regions=["zzz"])
    assert len(caught.value.problems) == 3


# ---------------------------------------------------------------- what an error line may echo

def test_no_refusal_echoes_a_credential():
    password = "s3cr3t-Pa55word"
    cases = [
        {"verify": True, "verifyUrls": [f"ord=nats://sys:{password}@host:4222"]},
        {"verify": True, "verifyUrls": [f"ord=tls://sys:{password}@host"]},
        {"verify": True, "verifyUrls": [f"ord=nats://sys:{password}/x@host:4222"]},  # '/' inside the password
        {"verify": True, "verifyUrls": [f"ord=sys:{password}@host:4222"]},  # no scheme
        {"verify": True, "verifyUrls": [f"lhr=nats://sys:{password}@host:4222"]},
        {"verifyUrls": [f"ord=nats://sys:{password}@host:4222"]},  # refused for having no effect too
        {"websocket": True, "websocketOrigins": [f"https://u:{password}@a.example.com"]},
        {"websocket": True, "websocketOrigins": [f"https://u:{password}@a.example.com/x"]},
        {"websocketOrigins": [f"https://u:{password}@a.example.com"]},
        {"app": f"https://u:{password}@a"}, {"org": f"nats://u:{password}@h"},
        {"regions": [f"ord=nats://u:{password}@h"]}, {"users": [f"u:{password}@h"]},
        {"topology": {"url": f"nats://u:{password}@h"}},
    ]
    for changes in cases:
        message = refusal(**changes)
        assert password not in message and password[:6] not in message, message
        assert "***@" in message, message


def test_long_values_are_cut_wherever_they_are_echoed():
    message = refusal(app="a" * 100_000, org="o" * 100_000, **{"x" * 100_000: 1})
    assert len(message) < 2000, len(message)
    assert "(100000 characters)" in message


@pytest.mark.parametrize("value,shown", [
    ("plain", "'plain'"), (5, "5"), (None, "None"),
    ("nats://u:p@h:4222", "'nats://***@h:4222'"), ("ord=u:p@h", "'ord=***@h'"), ("a@b", "'***@b'"),
    (["ord=nats://u:p@h"], "['ord=nats://***@h']"),
])
def test_show_hides_userinfo(value, shown):
    assert settings.show(value) == shown


# ---------------------------------------------------------------- secrets

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


def test_every_entry_of_a_secret_map_is_a_secret_of_its_own():
    s = load(users=["alice", "bob"], leafnodes=True, leafUsers=["edge"])
    mixed = {"userPasswords": ({"alice": "a" * 8, "bob": "b" * 8}, {"alice": True, "bob": False}),
             "leafPasswords": ({"edge": OPAQUE}, {"edge": True})}
    with pytest.raises(SettingsError) as caught:
        settings.check_secrets(s, {**SYS, **mixed})
    assert caught.value.problems == [
        "nats-fly:userPasswords.bob: given in plain text; allowed: a secret, set with `pulumi config set --secret "
        "--path userPasswords.bob` for each entry (the value is not shown here)"]
    assert "b" * 8 not in str(caught.value)
    with pytest.raises(SettingsError, match="userPasswords.bob: given in plain text; allowed: a secret Output"):
        settings.check_secrets(s, {**SYS, **mixed}, library=True)
    # Look-alike: every entry secret, some unreadable here (encrypted) and some resolved.
    settings.check_secrets(s, {**SYS, "userPasswords": ({"alice": OPAQUE, "bob": "b" * 8}, {"alice": True, "bob": True}),
                               "leafPasswords": ({"edge": "e" * 12}, {"edge": True})})


def test_a_secret_given_where_it_has_no_effect_is_refused():
    ok = {**SYS, "userPasswords": ({"app": "a" * 8}, True)}
    cases = [(load(), "leafPasswords", {"edge": "e" * 12}, "without leafnodes: true"),
             (load(auth="none"), "userPasswords", {"app": "a" * 8}, "without auth: password"),
             (load(), "tlsCert", "PEM", "without serverTls: true"),
             (load(), "tlsKey", OPAQUE, "without serverTls: true")]
    for s, key, value, why in cases:
        with pytest.raises(SettingsError) as caught:
            settings.check_secrets(s, {**ok, key: (value, True)})
        assert f"nats-fly:{key}: given, but it has no effect {why}" in str(caught.value), caught.value
    # Pulumi.yaml's empty defaults are not "given".
    settings.check_secrets(load(auth="none"), {**SYS, "userPasswords": ("{}", False), "leafPasswords": ({}, False),
                                               "tlsCert": ("", False), "tlsKey": (None, True)})


def test_server_tls_needs_a_real_pem_pair_whose_key_matches():
    s = load(serverTls=True, auth="none")
    cert, key = self_signed()
    assert settings.check_secrets(s, {**SYS, "tlsCert": (cert, True), "tlsKey": (key, True)}) == []
    settings.check_secrets(s, {**SYS, "tlsCert": (OPAQUE, True), "tlsKey": (OPAQUE, True)})  # judged once known
    cases = [
        ({"tlsCert": ("not a pem", True), "tlsKey": (None, True)},
         ["tlsCert: not a PEM certificate chain", "tlsKey: missing"]),
        ({"tlsCert": ("", True), "tlsKey": (key, True)}, ["tlsCert: missing"]),
        ({"tlsCert": (["PEM"], True), "tlsKey": (5, True)}, ["tlsCert: not a text", "tlsKey: not a text"]),
        ({"tlsCert": (cert, True), "tlsKey": (self_signed()[1], True)}, ["tlsKey: does not belong to the first"]),
        ({"tlsCert": (cert, True), "tlsKey": (cert, True)}, ["tlsKey: no PEM block labelled `PRIVATE KEY`"]),
        ({"tlsCert": (cert, False), "tlsKey": (key, True)}, ["tlsCert: given in plain text"]),
        ({"tlsCert": ("-----BEGIN CERTIFICATE-----\nTUlJQmZha2U=\n-----END CERTIFICATE-----\n", True),
          "tlsKey": ("-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n", True)},
         ["tlsCert: not a PEM certificate chain", "tlsKey: not a PEM private key"]),
    ]
    for given, expected in cases:
        with pytest.raises(SettingsError) as caught:
            settings.check_secrets(s, {**SYS, **given})
        text = str(caught.value)
        assert all(f"nats-fly:{e}" in text for e in expected), text
        assert "MII" not in text and "BEGIN" not in text, text


def test_auth_none_needs_only_the_system_password():
    s = load(auth="none")
    settings.check_secrets(s, {"sysPassword": ("x" * 12, True), "userPasswords": (None, True)})
    with pytest.raises(SettingsError, match="nats-fly:sysPassword: missing"):
        settings.check_secrets(s, {"sysPassword": (None, True), "userPasswords": (None, True)})
    for bad in (5, ["x" * 12], {"a": "x" * 12}, "short"):
        with pytest.raises(SettingsError, match="nats-fly:sysPassword: missing or not a text of at least 12"):
            settings.check_secrets(s, {"sysPassword": (bad, True)})


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
    with pytest.raises(SettingsError) as caught:
        settings.check_secrets(s, {**ok, "leafPasswords": ({f"u{i}": "e" * 12 for i in range(10_000)}, True)})
    assert caught.value.problems == ["nats-fly:leafPasswords: 10000 entries is too many; allowed: one per entry "
                                     "of leafUsers (at most 100)"]


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
