"""verify against real loopback clusters: it passes on whole ones and names the check that
fails on broken ones."""

from __future__ import annotations

import asyncio
import json

import pytest
from nats_fly_testkit.verify_clusters import PASSWORD, REGIONS

from nats_fly.__main__ import main as nats_fly
from nats_fly.processes.verify import Expectation, verify

PAIRS = [f"pubsub[{a}->{b}]" for a in REGIONS for b in REGIONS if a != b]
NEVER_WHOLE = 5.0
"""verify's timeout where one check can never pass, so the run takes all of it: long enough for every
other check (which returns as soon as it passes) to pass on a busy host too."""


def run(urls, expect: Expectation, password: str = PASSWORD, timeout: float = 60.0):
    return asyncio.run(verify(urls, expect, user="sys", password=password, timeout=timeout))


def names(checks) -> list[str]:
    return [check.name for check in checks]


def test_whole_mesh_passes_every_check(mesh):
    report = run(mesh.urls, Expectation(mesh.layout))
    print(report.table())
    assert report.ok, report.table()
    assert names(report.checks) == (
        [f"connect[{r}]" for r in REGIONS] + [f"servers[{r}]" for r in REGIONS]
        + [f"routes[{r}]" for r in REGIONS] + PAIRS)
    by_name = {check.name: check.detail for check in report.checks}
    assert by_name["connect[syd]"].startswith("landed on syd-0 (region syd)")
    assert by_name["routes[ord]"].startswith("cluster verify-test: 1 server(s), each routed to all 2 peer(s)")
    assert all(by_name[pair].startswith("50/50 received, p50 ") for pair in PAIRS)


def test_whole_supercluster_passes_routes_and_gateways(supercluster):
    report = run(supercluster.region_urls, Expectation(supercluster.layout, "supercluster"))
    print(report.table())
    assert report.ok, report.table()
    by_name = {check.name: check.detail for check in report.checks}
    assert by_name["servers[ord]"] == "2/2 up: ord-0, ord-1"
    assert by_name["routes[ord]"].startswith("cluster ord: 2 server(s), each routed to all 1 peer(s)")
    assert by_name["gateways[ord]"] == "2 server(s) each connected to cdg, syd"
    assert set(PAIRS) <= set(by_name)


def test_whole_jetstream_mesh_has_one_meta_leader(jetstream_mesh):
    report = run(jetstream_mesh.urls, Expectation(jetstream_mesh.layout, jetstream=True))
    print(report.table())
    assert report.ok, report.table()
    assert [c.detail for c in report.checks if c.name == "jetstream"][0].endswith("agreed by all 3 servers")


def test_a_missing_server_fails_servers_of_its_region(mesh):
    report = run(mesh.urls, Expectation({**mesh.layout, "ord": 2}), timeout=NEVER_WHOLE)
    assert names(report.failed) == ["servers[ord]"], report.table()
    assert report.failed[0].detail == "1/2 up: ord-0"


def test_a_gateway_missing_from_a_conf_fails_gateways_of_that_region(supercluster_without_cdg_to_ord):
    cluster = supercluster_without_cdg_to_ord
    report = run(cluster.urls, Expectation(cluster.layout, "supercluster"), timeout=NEVER_WHOLE)
    assert names(report.failed) == ["gateways[cdg]"], report.table()
    assert "cdg-0's gateway to ord is only learned by gossip" in report.failed[0].detail


def test_a_wrong_password_fails_every_connection_and_is_not_shown(mesh):
    report = run(mesh.urls, Expectation(mesh.layout), password="not-the-password")
    assert names(report.failed) == [f"connect[{r}]" for r in REGIONS], report.table()
    assert "authorization violation" in report.failed[0].detail
    assert "not-the-password" not in report.table()


def test_jetstream_expected_but_off_fails_jetstream(mesh):
    report = run(mesh.urls, Expectation(mesh.layout, jetstream=True), timeout=NEVER_WHOLE)
    assert names(report.failed) == ["jetstream"], report.table()
    assert report.failed[0].detail == "JetStream is off on cdg-0, ord-0, syd-0"


def test_a_url_that_lands_in_another_region_fails_its_connect(mesh):
    urls = {**mesh.urls, "ord": mesh.urls["syd"]}
    report = run(urls, Expectation(mesh.layout), timeout=NEVER_WHOLE)
    assert names(report.failed) == ["connect[ord]"], report.table()
    assert report.failed[0].detail.startswith("landed on syd-0 (region syd)")


def test_a_single_url_says_no_cross_region_path_was_proved(mesh):
    report = run(mesh.urls["ord"], Expectation(mesh.layout))
    assert report.ok, report.table()
    assert names(report.checks)[0] == "connect" and names(report.checks)[-1] == "pubsub"
    assert "no cross-region path is proved" in report.checks[-1].detail


def test_tls_first_with_a_ca_file(tls_first):
    cluster, ca = tls_first
    url = cluster.urls["ord"].replace("nats://", "tls://")
    report = asyncio.run(verify(url, Expectation({"ord": 1}), user="sys", password=PASSWORD,
                                tls_handshake_first=True, tls_ca_file=str(ca), timeout=60))
    assert report.ok, report.table()
    plain = asyncio.run(verify(url, Expectation({"ord": 1}), user="sys", password=PASSWORD, timeout=2))
    assert names(plain.failed) == ["connect"], plain.table()


def test_an_unreachable_url_fails_its_connect_with_the_cause():
    report = asyncio.run(verify({"ord": "nats://127.0.0.1:1"}, Expectation({"ord": 1}), timeout=2))
    assert [(c.name, c.ok, c.detail) for c in report.checks] == [
        ("connect[ord]", False, "nats://127.0.0.1:1: [Errno 111] Connect call failed ('127.0.0.1', 1)")]


def test_urls_must_match_the_expected_regions(mesh):
    with pytest.raises(ValueError, match="urls name regions cdg, ord, syd but the expectation names ord, syd"):
        run(mesh.urls, Expectation({"ord": 1, "syd": 1}))


# ---------------------------------------------------------------- the command

def cli_args(cluster, *extra: str) -> list[str]:
    return [arg for region, url in cluster.urls.items() for arg in ("--url", f"{region}={url}")] + [
        "--expect", ",".join(f"{r}={n}" for r, n in cluster.layout.items()), *extra]


def test_cli_prints_the_table_and_exits_0_when_whole(mesh, monkeypatch, capsys):
    monkeypatch.setenv("NATS_SYS_PASSWORD", PASSWORD)
    assert nats_fly(["verify", *cli_args(mesh, "--messages", "10")]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["CHECK", "RESULT", "DETAIL"]
    assert lines[-1] == "cluster is whole: all 15 checks passed"
    assert len({line.index(" ok ") for line in lines[1:-1]}) == 1  # one aligned RESULT column
    assert PASSWORD not in out


def test_cli_exits_1_and_names_the_failing_check(mesh, tmp_path, capsys):
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    args = cli_args(mesh, "--password-file", str(secret), "--timeout", str(NEVER_WHOLE), "--jetstream")
    assert nats_fly(["verify", *args]) == 1
    assert capsys.readouterr().out.splitlines()[-1] == "cluster is NOT whole: 1 of 16 checks failed: jetstream"


def test_cli_json_report(mesh, monkeypatch, capsys):
    monkeypatch.setenv("NATS_SYS_PASSWORD", PASSWORD)
    assert nats_fly(["verify", *cli_args(mesh, "--json", "--messages", "5")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
    assert {"name": "servers[ord]", "ok": True, "detail": "1/1 up: ord-0"} in report["checks"]


@pytest.mark.parametrize("args, error", [
    (["--url", "nats://127.0.0.1:1", "--expect", "ord=1"], "no password: pass --password-file PATH or set NATS_SYS_PASSWORD"),
    (["--url", "nats://a:1", "--url", "ord=nats://b:1", "--expect", "ord=1"], "give either one URL, or REGION=URL"),
    (["--url", "nats://sys:hunter2@a:1", "--expect", "ord=1"], "--url nats://a:1: a URL must not carry a password"),
    (["--url", "nats://a:1", "--expect", "ord"], "--expect 'ord': write REGION=N,..."),
    (["--url", "nats://a:1", "--expect", "ord=0"], "regions['ord'] = 0: expect a whole number of servers >= 1"),
    (["--url", "ord=nats://a:1", "--expect", "ord=1,syd=1"], "urls name regions ord but the expectation names ord, syd"),
    (["--url", "nats://a:1", "--expect", "ord=1", "--topology", "ring"], "invalid choice: 'ring'"),
    (["--url", "nats://a:1", "--expect", "ord=1", "--password-file", "/nonexistent"], "--password-file /nonexistent: No such file"),
])
def test_cli_usage_errors_exit_2_and_name_the_problem(args, error, monkeypatch, capsys):
    monkeypatch.delenv("NATS_SYS_PASSWORD", raising=False)
    if "--password-file" not in args and not error.startswith("no password"):
        monkeypatch.setenv("NATS_SYS_PASSWORD", "x")
    assert nats_fly(["verify", *args]) == 2
    err = capsys.readouterr().err
    assert error in err
    assert "hunter2" not in err


def test_cli_help_names_the_password_variable(capsys):
    assert nats_fly(["verify", "--help"]) == 0
    assert "NATS_SYS_PASSWORD" in capsys.readouterr().out
