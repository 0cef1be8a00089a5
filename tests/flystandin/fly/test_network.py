"""The private network as a Machine sees it: Fly's DNS names at fdaa::3 (started Machines
only, TTL 5, eventual consistency), fly-local-6pn, the Fly environment, the image's
files and busybox, volumes, and the optional one-way delay between regions."""
from __future__ import annotations

import re
import time

import pytest

from nats_fly.config.settings import DEFAULT_NATS_VERSION
from nats_fly_testkit import fly as fh

AAAA, TXT = 28, 16
DNS_DELAY = 10  # far longer than the two lookups made right after a start


@pytest.fixture(scope="module")
def prod(standin, apps):
    stack = apps.get("prod")
    fh.wait_healthy(standin, stack.app)
    return stack


def _one(standin, app, region):
    return next(m for m in standin.machines(app) if m["region"] == region and m["state"] == "started")


def test_machine_sees_fly_names_through_busybox_nslookup(standin, prod):
    ord_, syd = _one(standin, prod.app, "ord"), _one(standin, prod.app, "syd")
    everyone = {m["private_ip"] for m in standin.machines(prod.app) if m["state"] == "started"}

    def lookup(name, qtype="AAAA"):
        code, out, err = standin.exec(ord_["id"], f"nslookup -type={qtype} {name}")
        assert code == 0, err
        return out
    addresses = lambda out: set(re.findall(r"^Address: (\S+)$", out, re.M))  # noqa: E731
    assert addresses(lookup(f"{prod.app}.internal")) == everyone
    assert addresses(lookup(f"global.{prod.app}.internal")) == everyone
    assert addresses(lookup(f"syd.{prod.app}.internal")) == {syd["private_ip"]}
    assert addresses(lookup(f"{syd['id']}.vm.{prod.app}.internal")) == {syd["private_ip"]}
    assert addresses(lookup(f"top1.nearest.of.{prod.app}.internal")) == {ord_["private_ip"]}
    assert f'"{",".join(sorted(prod.regions))}"' in lookup(f"regions.{prod.app}.internal", "TXT")
    vms = re.search(r'text = "(.*)"', lookup(f"vms.{prod.app}.internal", "TXT")).group(1)
    assert sorted(vms.split(",")) == sorted(f"{m['id']} {m['region']}" for m in standin.machines(prod.app))
    code, out, _ = standin.exec(ord_["id"], "cat /etc/resolv.conf; getent hosts fly-local-6pn 2>/dev/null; "
                                           "grep fly-local-6pn /etc/hosts; hostname")
    assert "nameserver fdaa::3" in out and f"{ord_['private_ip']}\tfly-local-6pn" in out and ord_["id"] in out


def test_dns_ttl_is_5_and_unknown_names_fail(standin, prod):
    import struct
    from nats_fly_testkit.standin import dns
    catalogue = dns.Catalogue(lambda: [dns.Record("a", "m1", "ord", "fdaa::9", "app", 1.0)], lambda: ["a"])
    query = struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0) + b"\x01a\x08internal\x00" + struct.pack("!HH", AAAA, 1)
    reply = catalogue.respond(query, None)
    assert struct.unpack("!I", reply[-22:-18])[0] == 5  # the one AAAA answer's TTL
    assert standin.dns(f"nosuch.{prod.app}.internal")["rcode"] == dns.NXDOMAIN
    assert standin.dns("nosuchapp.internal")["rcode"] == dns.NXDOMAIN


def test_stopped_machines_leave_dns_and_own_record_is_seen_first(standin, prod):
    cdg = _one(standin, prod.app, "cdg")
    ord_ = _one(standin, prod.app, "ord")
    standin.stop_machine(cdg["id"])
    try:
        assert cdg["private_ip"] not in standin.dns(f"{prod.app}.internal")["answers"]
        assert "cdg" not in standin.dns(f"regions.{prod.app}.internal", TXT)["answers"][0]
        standin.set_dns_delay(DNS_DELAY)
        standin.start_machine(cdg["id"])
        # The Machine itself sees its record at once; the others only after the delay.
        assert cdg["private_ip"] in standin.dns(f"{prod.app}.internal", asker=cdg["private_ip"])["answers"]
        assert cdg["private_ip"] not in standin.dns(f"{prod.app}.internal", asker=ord_["private_ip"])["answers"]
        deadline = time.monotonic() + DNS_DELAY + 60
        while cdg["private_ip"] not in standin.dns(f"{prod.app}.internal", asker=ord_["private_ip"])["answers"]:
            assert time.monotonic() < deadline, f"ord never saw cdg's record after the {DNS_DELAY}s delay"
            time.sleep(0.2)
    finally:
        standin.set_dns_delay(0)
        if standin.machines(prod.app) and any(m["id"] == cdg["id"] and m["state"] != "started"
                                              for m in standin.machines(prod.app)):
            standin.start_machine(cdg["id"])
    assert fh.wait_mesh(standin, prod.app, prod.total, 120) is not None


def test_machine_runs_the_image_with_the_fly_environment(standin, prod):
    m = _one(standin, prod.app, "syd")
    code, out, err = standin.exec(m["id"], "readlink /bin/sh; ls /usr/local/bin; cat /proc/1/cmdline >/dev/null; "
                                          "env | sort; /usr/local/bin/nats-server --version")
    assert code == 0, err
    assert "/bin/busybox" in out and "nats-fly-entrypoint" in out and f"nats-server: v{DEFAULT_NATS_VERSION}" in out
    env = dict(line.split("=", 1) for line in out.splitlines() if "=" in line and line.isascii())
    assert env["FLY_APP_NAME"] == prod.app and env["FLY_REGION"] == "syd" and env["FLY_MACHINE_ID"] == m["id"]
    assert env["FLY_ALLOC_ID"] == m["id"] and env["FLY_PRIVATE_IP"] == m["private_ip"]
    assert env["PRIMARY_REGION"] == "ord" and env["FLY_PROCESS_GROUP"] == "app"
    assert re.fullmatch(r"[0-9a-f]{14}", m["id"])
    assert "NATS_PASSWORD_APP_B64" in env  # secrets arrive as environment variables (base64; see the entrypoint)


def test_digit_first_machine_id_starts(standin, prod):
    """Fly's IDs are any 14 hex digits; one like 4e4ac60f4dd674 reads as a number in nats.conf
    unless the renderer quotes it."""
    standin.next_machine_ids(["4e4ac60f4dd674"])
    fh.region_up(standin, prod, "cdg", 2)
    try:
        fh.wait_healthy(standin, prod.app)
        assert fh.wait_mesh(standin, prod.app, prod.total + 1, 120) is not None
    finally:
        fh.region_up(standin, prod, "cdg", 1)


def test_one_way_delay_between_regions(standin, prod):
    ord_, syd = _one(standin, prod.app, "ord"), _one(standin, prod.app, "syd")

    def rtt_ms():
        """The fastest of 5 round trips: a busy host delays some, never speeds one past the link's delay."""
        code, out, err = standin.exec(ord_["id"], f"ping -6 -c 5 -i 0.2 {syd['private_ip']}")
        assert code == 0, out + err
        return float(re.search(r"= ([\d.]+)/", out).group(1))
    assert rtt_ms() < 20
    standin.set_delay("ord", "syd", 80)
    try:
        assert 80 <= rtt_ms() < 200
    finally:
        standin.set_delay("ord", "syd", 0)
    assert rtt_ms() < 20


def test_udp_answers_over_512_bytes_are_truncated_with_tc_and_whole_over_tcp():
    """As a DNS server does: a UDP answer keeps the records that fit in 512 bytes (or the asker's
    EDNS0 payload size) and sets TC; TCP carries them all. 18 AAAA records do not fit."""
    import struct

    from nats_fly_testkit.standin import dns
    records = [dns.Record("big", f"{i:014x}", "ord", f"fdaa:0:1:a7b:1::{i + 2:x}", "app", 1.0) for i in range(18)]
    catalogue = dns.Catalogue(lambda: records, lambda: ["big"])
    question = b"".join(bytes([len(part)]) + part.encode() for part in ("big", "internal")) + b"\0"
    query = struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0) + question + struct.pack("!HH", dns.AAAA, 1)
    opt = b"\0" + struct.pack("!HHIH", 41, 1232, 0, 0)  # EDNS0: 1232-byte payload
    edns = struct.pack("!HHHHHH", 8, 0x0100, 1, 0, 0, 1) + query[12:] + opt

    def flags_and_count(reply: bytes) -> tuple[int, int]:
        return struct.unpack("!H", reply[2:4])[0], struct.unpack("!H", reply[6:8])[0]

    udp = catalogue.respond(query, None, limit=dns.udp_limit(query))
    flags, count = flags_and_count(udp)
    assert len(udp) <= 512 and flags & 0x0200 and 0 < count < 18
    flags, count = flags_and_count(catalogue.respond(query, None))  # TCP: no limit
    assert not flags & 0x0200 and count == 18
    assert dns.udp_limit(edns) == 1232
    flags, count = flags_and_count(catalogue.respond(edns, None, limit=dns.udp_limit(edns)))
    assert not flags & 0x0200 and count == 18


def test_machines_made_together_under_dns_delay_join_not_island(standin):
    """A new app's first Machine, then a second one at once, with DNS 3 s behind: each first looks
    alone in all.vms, asks again for the settle time, sees the other appear, and waits for it: one
    cluster of two. (Trusting the first all.vms answer, each started alone: two islands.)"""
    import secrets as random
    from nats_fly.contract import flyctl
    stack = fh.load_stack("prod", app=f"pair-{random.token_hex(3)}", regions=("ord",), machines={"ord": 2},
                          jetstream=False)
    standin.set_dns_delay(3)
    try:
        fh.components_up(standin, stack, fh.render_ours(stack, standin.root / "contexts" / stack.app))
        took = fh.wait_mesh(standin, stack.app, 2, 120)
        guard = {m["id"]: fh.console(standin, m["id"], "nats-fly: ") for m in standin.machines(stack.app)}
        assert took is not None, (fh.describe(standin.routes(stack.app)), guard)
        assert not fh.wait_routes_complete(standin, stack.app)
        assert all("peers at" in lines for lines in guard.values()), guard
    finally:
        standin.set_dns_delay(0)
        fh.sh(standin, flyctl.destroy_app(stack.app))
