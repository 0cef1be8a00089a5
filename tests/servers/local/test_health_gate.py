"""The health endpoints the Fly deploy relies on, asked of real nats-server processes with
JetStream in a three-server cluster (the fly.toml check is plain /healthz):

- a lone server never passes /healthz: it has no meta leader (each release says so in its own words). So a first deploy, whose one Machine
  is alone, cannot roll on that check and uses `--strategy immediate` (flyops.deploy_strategy);
- /healthz?js-enabled-only=true passes at once, alone or not: it can't tell a server that has
  caught up from one that has not, so it is no gate for a rolling deploy;
- with its peers up, every server passes /healthz.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request

import pytest

from nats_fly.processes import local as localrun
from nats_fly.config.settings import NATS_VERSIONS
from nats_fly_testkit.support import ALONE, jetstream_confs


def health(http_port: int, query: str = "") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/healthz{query}", timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.fixture
def cluster(tmp_path):
    """Three JetStream servers' confs (explicit loopback routes), none started; all stopped at the end."""
    state = tmp_path / "state"
    made = jetstream_confs(tmp_path, cluster="gate-test")
    yield state, made
    for name, *_ in made:
        localrun.stop(name, state, timeout=5)


@pytest.mark.parametrize("version", NATS_VERSIONS)
def test_a_lone_jetstream_server_fails_healthz_and_passes_once_its_peers_are_up(cluster, version):
    state, servers = cluster
    name, conf, client, http = servers[0]
    localrun.ensure(name, conf, state, client, http, nats_version=version)
    deadline = time.monotonic() + 60
    while health(http, "?js-enabled-only=true")[0] != 200:
        assert time.monotonic() < deadline, health(http, "?js-enabled-only=true")
        time.sleep(0.1)
    time.sleep(2)  # alone for a while: still no meta leader
    code, body = health(http)
    assert code == 503 and ALONE[version] in body, (code, body)
    assert health(http, "?js-enabled-only=true")[0] == 200

    for other, other_conf, other_client, other_http in servers[1:]:
        localrun.ensure(other, other_conf, state, other_client, other_http, nats_version=version)
    deadline = time.monotonic() + 120
    while any(health(h)[0] != 200 for *_, h in servers):
        assert time.monotonic() < deadline, {n: health(h) for n, *_, h in servers}
        time.sleep(0.2)
