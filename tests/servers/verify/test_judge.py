"""The judging half of verify, on replies shaped like nats-server 2.12.8's, for the failures a
real loopback cluster cannot easily be made to show."""

from __future__ import annotations

from nats_fly.processes.verify import Expectation, check_jetstream, check_routes, servers_seen

NAMES = ("ord-0", "syd-0", "cdg-0")


def pings(cluster: str = "app") -> dict[str, dict]:
    return {f"id-{n}": {"server": {"id": f"id-{n}", "name": n, "cluster": cluster, "tags": [f"region:{n[:3]}"]}}
            for n in NAMES}


def routez(links: dict[str, list[str]]) -> dict[str, dict]:
    # Route pooling: three pooled connections plus the system account's pinned one per peer.
    return {f"id-{n}": {"data": {"routes": [{"remote_name": peer} for peer in peers for _ in range(4)]}}
            for n, peers in links.items()}


def test_pooled_routes_count_each_peer_once_and_a_missing_peer_is_named():
    seen = servers_seen(pings())
    expect = Expectation({"ord": 1, "syd": 1, "cdg": 1})
    whole = check_routes(expect, seen, routez({n: [p for p in NAMES if p != n] for n in NAMES}))
    assert all(check.ok for check in whole)
    assert whole[0].detail == "cluster app: 1 server(s), each routed to all 2 peer(s) (8 route connections)"
    broken = check_routes(expect, seen, routez({"ord-0": ["syd-0"], "syd-0": ["ord-0", "cdg-0"], "cdg-0": ["syd-0"]}))
    assert [(c.name, c.ok, c.detail) for c in broken if not c.ok] == [
        ("routes[ord]", False, "ord-0 has no route to cdg-0"),
        ("routes[cdg]", False, "cdg-0 has no route to ord-0"),
    ]


def test_a_mesh_split_into_two_clusters_fails_routes():
    replies = pings()
    replies["id-cdg-0"]["server"]["cluster"] = "other"
    seen = servers_seen(replies)
    checks = check_routes(Expectation({"ord": 1, "syd": 1, "cdg": 1}), seen, routez({n: [] for n in NAMES}))
    assert checks[0].detail.startswith("servers are in clusters app, other; a mesh is one cluster")


def jsz(leaders: dict[str, str], cluster_size: int = 3) -> dict[str, dict]:
    replies = {}
    for name, leader in leaders.items():
        meta = {"leader": leader, "cluster_size": cluster_size,
                "replicas": [{"name": n, "current": True} for n in NAMES if n != name]}
        replies[f"id-{name}"] = {"data": {"config": {"store_dir": "/x"}, "meta_cluster": meta}}
    return replies


def test_jetstream_needs_one_agreed_leader_and_no_stale_peer():
    seen = servers_seen(pings())
    assert check_jetstream(seen, jsz(dict.fromkeys(NAMES, "syd-0"))).ok
    split = check_jetstream(seen, jsz({"ord-0": "ord-0", "syd-0": "syd-0", "cdg-0": "syd-0"}))
    assert split.detail == "servers disagree on the meta leader (cdg-0: syd-0, ord-0: ord-0, syd-0: syd-0)"
    assert check_jetstream(seen, jsz(dict.fromkeys(NAMES, ""))).detail == "no meta leader elected"
    stale = check_jetstream(seen, jsz(dict.fromkeys(NAMES, "syd-0"), cluster_size=4))
    assert stale.detail.startswith("meta group has 4 peers but 3 servers are up")
