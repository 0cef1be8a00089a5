"""A prod-like JetStream stack (ord, syd, cdg; one Machine each, a mesh) driven by the real
Pulumi engine against the Fly stand-in, and proved with nats-py clients through the edges:

first `up` interrupted by a flyctl failure, then completed (on nats-server 2.12.8) -> one volume per
Machine at /data -> auth refuses strangers -> TLS-first through :10001 -> kill the stream leader -> cut a
region off for 30 s -> a rolling deploy under load -> the version roll to 2.15.0 under load -> scale a
region down, remove one -> a password rotation through rolling deploys -> backup, destroy, a new cluster,
restore -> destroy.

The tests run in this order on one stack; each states its own figures (see durable.FIGURES).
"""
from __future__ import annotations

import asyncio
import json
import os
import secrets
import ssl
import threading
import time
from collections import Counter

import pytest

from nats_fly_testkit import durable as d
from nats_fly_testkit import fly as fh
from nats_fly_testkit.engine import copy_project, engine_environment, flyctl_env, missing_tools
from nats_fly_testkit.support import exchange

SYS_PASSWORD = "sys-" + secrets.token_hex(10)
APP_PASSWORD = "app-" + secrets.token_hex(10)
REGIONS = ["ord", "syd", "cdg"]
VOLUME = "nats_data"


class JsStack:
    """The engine project plus what the stand-in says about the app."""

    def __init__(self, standin, project, app: str):
        self.standin, self.project, self.app = standin, project, app
        self.facts: dict = {}
        self.login = ("app", APP_PASSWORD)
        """Who the clients log in as: the rotation moves them to another user."""

    def up(self, check: bool = True):
        return self.project.pulumi("up", "--yes", "--skip-preview", check=check)

    def flyctl_json(self, *argv: str):
        proc = self.standin.flyctl(*argv, "--app", self.app, "--json")
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout or "[]")

    def volumes(self, name: str | None = VOLUME) -> list[dict]:
        return [v for v in self.flyctl_json("volumes", "list") if name is None or v["name"] == name]

    def machines(self) -> list[dict]:
        return self.flyctl_json("machine", "list")

    def ips(self) -> list[dict]:
        return self.flyctl_json("ips", "list")

    def calls(self) -> list[dict]:
        """The stand-in's flyctl log, only this app's calls (the small stacks deploy meanwhile)."""
        return [c for c in self.standin.flyctl_log() if self.app in c["argv"]]

    def client(self, region: str, timeline=None, name: str = "", login: tuple[str, str] | None = None,
               **kw) -> d.Client:
        user, password = login or self.login
        return d.Client(self.standin, self.app, region, user, password, timeline=timeline, name=name or region, **kw)

    def machine_of(self, server_name: str) -> str:
        return server_name.split("-", 1)[1]


class HealthWatcher(threading.Thread):
    """The Machines' plain /healthz (the fly.toml gate) and /healthz?js-enabled-only=true (the old
    one), polled about every 0.1 s: (time, machine id, full status, js-enabled-only status), None
    when it does not answer (stopped, or booting)."""

    def __init__(self, standin, machine_ids: list[str]):
        super().__init__(daemon=True)
        self.standin, self.ids = standin, list(machine_ids)
        self.done = threading.Event()
        self.polls: list[tuple[float, str, int | None, int | None]] = []

    def run(self) -> None:
        while not self.done.is_set():
            for machine_id in self.ids:
                codes = []
                for path in ("/healthz", "/healthz?js-enabled-only=true"):
                    try:
                        codes.append(self.standin.http(machine_id, 8222, path, timeout=0.5)[0])
                    except Exception:  # noqa: BLE001 (stopped, or its monitor port not up yet)
                        codes.append(None)
                self.polls.append((time.time(), machine_id, *codes))
            time.sleep(0.05)

    def first_ok(self, machine_id: str, since: float, column: int = 2) -> tuple[float, float | None]:
        """(the last poll that saw it not OK, the first that saw it OK), from `since` on: the
        moment it became OK lies between the two."""
        last_bad = since
        for at, mid, *codes in self.polls:
            if mid == machine_id and at >= since:
                if codes[column - 2] == 200:
                    return last_bad, at
                last_bad = at
        return last_bad, None


@pytest.fixture(scope="module")
def js(standin, scratch, side_stacks):
    missing = missing_tools()
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the engine tests: Pulumi tools missing ({', '.join(missing)})")
        pytest.skip(f"Pulumi tools missing ({', '.join(missing)}): run scripts/bootstrap")
    root = scratch / "js"
    env = engine_environment(root)
    env.update(flyctl_env(standin, env))
    project = copy_project(root / "project", "prod", "durable", env)
    app = f"dur-js-{secrets.token_hex(3)}"
    project.config({"app": app, "jetstream": True, "volumeSize": 1, "peerWait": 3, "lameDuckGracePeriod": "5s",
                    "natsVersion": "2.12.8"})
    project.pulumi("config", "set", "--secret", "sysPassword", stdin=SYS_PASSWORD)
    project.pulumi("config", "set", "--secret", "--path", "userPasswords.app", stdin=APP_PASSWORD)
    stack = JsStack(standin, project, app)

    # The first `up`, with no capacity in syd when its Machines are asked for.
    standin.fail_next("scale count", region="syd")
    t0 = time.monotonic()
    stack.facts["first_up"] = stack.up(check=False)
    stack.facts["first_up_s"] = round(time.monotonic() - t0, 1)
    stack.facts["after_failure"] = {
        "machines": Counter(m["region"] for m in stack.machines()),
        "volumes": Counter(v["region"] for v in stack.volumes()),
        "unattached": Counter(v["region"] for v in stack.volumes() if not v["attached_machine_id"]),
    }
    t0 = time.monotonic()
    stack.up()
    stack.facts["second_up_s"] = round(time.monotonic() - t0, 1)
    assert fh.wait_mesh(standin, app, 3, 120) is not None, (
        fh.describe(standin.routes(app)) + "\n" + "\n".join(
            f"--- {m['region']}-{m['id']} {m['state']}\n{fh.console(standin, m['id'])[-3000:]}"
            for m in stack.machines()))
    fh.wait_healthy(standin, app)
    # Scale-downs remove their servers from JetStream through a client URL: here the edges.
    project.config({"verifyUrls": [f"{r}=nats://127.0.0.1:{standin.edge(app, r, 10000)[1]}" for r in REGIONS]})
    try:
        yield stack
    finally:
        stack.project.pulumi("destroy", "--yes", "--skip-preview", check=False)
        gone = standin.flyctl("status", "--app", app, "--json")
        assert gone.returncode == 1 and "Could not find App" in gone.stderr, gone.stdout + gone.stderr


def run(coro):
    return asyncio.run(coro)


# --- 3c, and the first deploy's gate ---------------------------------------------------------------

def test_first_up_fails_halfway_and_the_next_up_completes_without_duplicates(js):
    first = js.facts["first_up"]
    output = first.stdout + first.stderr
    assert first.returncode != 0 and "insufficient resources" in output, output[-3000:]
    after = js.facts["after_failure"]
    # Halfway: the deploy is done and so is ord (the deployed Machine); syd has its volume, made
    # before `scale count` failed, but no Machine (cdg ran alongside syd: done, unless the
    # engine stopped before it began).
    assert after["machines"]["ord"] == 1 and after["machines"]["syd"] == 0, after
    assert after["volumes"]["syd"] == 1 and after["unattached"]["syd"] == 1, after

    machines, volumes, ips = js.machines(), js.volumes(), js.ips()
    assert Counter(m["region"] for m in machines) == {r: 1 for r in REGIONS}
    assert Counter(v["region"] for v in volumes) == {r: 1 for r in REGIONS}
    assert sorted(v["attached_machine_id"] for v in volumes) == sorted(m["id"] for m in machines)
    assert sorted(ip["Type"] for ip in ips) == ["shared_v4", "v6"]
    calls = js.calls()
    made = Counter(" ".join(c["argv"][:2]) for c in calls if c["exit"] == 0 and c["mutates"])
    assert made["volumes create"] == 2  # syd and cdg; ord's came with the first deploy
    assert made["ips allocate-v6"] == 1 and made["ips allocate-v4"] == 1
    deploys = [c for c in calls if c["command"] == "deploy"]
    assert [c["exit"] for c in deploys] == [0]

    # The first deploy's lone Machine can't pass the fly.toml check (plain /healthz: no meta leader
    # without peers; tests/servers/local/test_health_gate.py), so it ran with the immediate strategy.
    argv = deploys[0]["argv"]
    assert argv[argv.index("--strategy") + 1] == "immediate", argv
    d.figure("first_up", {
        "failed_up_s": js.facts["first_up_s"], "completing_up_s": js.facts["second_up_s"],
        "after_failure": {k: dict(v) for k, v in after.items()},
        "final": {"machines": len(machines), "volumes": len(volumes), "ips": sorted(ip["Type"] for ip in ips)},
        "mutating_calls": dict(made), "deploy_s": deploys[0]["duration_s"]})


# --- 1: volumes ------------------------------------------------------------------------------------

def test_one_volume_per_machine_bound_at_data_with_the_store_on_it(js):
    volumes = {v["id"]: v for v in js.volumes()}
    for m in js.machines():
        mounts = m["config"]["mounts"]
        assert len(mounts) == 1 and mounts[0]["path"] == "/data" and mounts[0]["volume"] in volumes, mounts
        assert volumes[mounts[0]["volume"]]["attached_machine_id"] == m["id"]
        assert volumes[mounts[0]["volume"]]["region"] == m["region"]
        code, out, _ = js.standin.exec(m["id"], "grep -E '^ +store_dir' /etc/nats/nats.conf; grep ' /data ' /proc/mounts")
        assert code == 0 and 'store_dir: "/data"' in out and " /data " in out, out
        # nats-server keeps its files in <store_dir>/jetstream: /data/jetstream, on the volume.
        jsz = json.loads(js.standin.http(m["id"], 8222, "/jsz")[1])
        assert jsz["config"]["store_dir"] == "/data/jetstream", jsz["config"]

    async def go():
        c = await js.client("ord").connect()
        try:
            await d.ensure_stream(c.nc)
            await c.nc.jetstream().publish("dur.volume", b"on the volume")
        finally:
            await c.close()
    run(go())
    # The stream's files are on each Machine's volume (the stand-in keeps a volume's data on the
    # host, apart from the Machine's root filesystem, which is fresh on every start).
    for vol_id in volumes:
        stored = js.standin.root / "volumes" / vol_id / "jetstream" / "APP" / "streams" / d.STREAM
        assert stored.is_dir(), f"no {d.STREAM} files on volume {vol_id}: {sorted((stored.parents[3]).rglob('*'))[:10]}"


# --- 5: auth on the default stack ------------------------------------------------------------------

def test_anonymous_and_wrong_password_are_refused(js):
    async def go():
        anonymous = await d.refused(js.standin, js.app, "ord")
        wrong = await d.refused(js.standin, js.app, "syd", user="app", password="not-the-password")
        sys_as_app = await d.refused(js.standin, js.app, "cdg", user="sys", password=APP_PASSWORD)
        right = await d.refused(js.standin, js.app, "cdg", user="app", password=APP_PASSWORD)
        return anonymous, wrong, sys_as_app, right
    anonymous, wrong, sys_as_app, right = run(go())
    assert "Authorization Violation" in anonymous, anonymous
    assert "Authorization Violation" in wrong, wrong
    assert "Authorization Violation" in sys_as_app, sys_as_app
    assert right == ""


# --- 4: TLS-first through Fly's tls handler ----------------------------------------------------------

def test_tls_first_client_on_10001_end_to_end(js):
    async def go():
        context = ssl.create_default_context(cafile=js.standin.ca_file)
        tls = await js.client("syd", port=10001, tls=context, name="syd-tls").connect()
        plain = await js.client("ord").connect()
        try:
            assert tls.server.startswith("syd-"), tls.server
            got = await exchange(tls.nc, plain.nc, "tls.check", [b"over tls"])
            seq, _took, _errors = await d.publish_until(tls.nc, "dur.tls", "acked over tls", d.READ_WINDOW)
            return got, await d.leader_says(tls.nc, seq)
        finally:
            await tls.close()
            await plain.close()
    got, stored = run(go())
    assert got == [b"over tls"]
    assert stored == repr("acked over tls")


# --- 3a: kill the stream leader ------------------------------------------------------------------

def test_killed_leader_publishing_goes_on_and_it_catches_up(js):
    standin = js.standin

    async def go():
        tl = d.Timeline()
        client = await js.client("cdg", timeline=tl, name="publisher@cdg").connect()
        try:
            await d.ensure_stream(client.nc)
            leader, _ = await d.replicas(client.nc)
            pub = d.Publisher(client, "dur.kill")
            stop = asyncio.Event()
            task = asyncio.create_task(pub.run(stop))
            await asyncio.sleep(2)
            victim = js.machine_of(leader)
            killed_at = time.time()
            tl.add(f"killing {leader} (the stream leader)")
            await asyncio.to_thread(standin.kill_machine, victim)
            acked_before = len(pub.acked)
            # Down until publishing has clearly gone on without it: 100 more acks (or 120 s).
            resumed = None
            while len(pub.acked) - acked_before < 100 and time.time() - killed_at < 120:
                if resumed is None and len(pub.acked) - acked_before >= 10:
                    resumed = time.time() - killed_at
                    tl.add("publishing goes on (10 acks since the kill)")
                await asyncio.sleep(0.05)
            acked_while_down = len(pub.acked) - acked_before
            new_leader, followers = await d.replicas(client.nc)
            tl.add(f"stream leader now {new_leader}; {acked_while_down} acks while {victim} was down")
            await asyncio.to_thread(standin.start_machine, victim)
            started_at = time.time()
            tl.add(f"started {victim} again (same volume)")
            caught_up = await d.wait_converged(standin, js.app, client.nc)
            tl.add("every replica current, lag 0, all copies at the same sequence")
            stop.set()
            await task
            lost = await d.lost_acked(client.nc, [pub])
            return pub, acked_while_down, lost, caught_up, tl, leader, new_leader, started_at - killed_at, resumed
        finally:
            await client.close()

    pub, acked_while_down, lost, caught_up, tl, leader, new_leader, down_s, resumed = run(go())
    print(f"kill timeline:\n{tl.text()}")
    summary = pub.summary()
    d.figure("kill_leader", {**summary, "killed": leader, "new_leader": new_leader, "down_s": round(down_s, 1),
                             "acked_while_down": acked_while_down, "catch_up_s": round(caught_up, 2),
                             "publishing_resumed_after_s": resumed and round(resumed, 2)})
    assert lost == [], lost[:10]
    assert pub.gave_up == 0
    assert acked_while_down >= 100, summary  # publishing went on while the leader was dead
    assert new_leader != leader


# --- 3b: a region cut off for 30 s ------------------------------------------------------------------

def test_region_cut_off_for_30s_heals_and_replicas_converge(js):
    standin, cut = js.standin, "syd"

    async def go():
        tl = d.Timeline()
        client = await js.client("ord", timeline=tl, name="publisher@ord").connect()
        local = await js.client(cut, timeline=tl, name=f"subscriber@{cut}").connect()
        try:
            await d.ensure_stream(client.nc)
            await d.wait_converged(standin, js.app, client.nc)
            # A core-NATS beacon from inside the cut region, heard (or not) in ord.
            heard: list[float] = []

            async def on_beacon(_msg):
                if not heard:
                    tl.add(f"ord hears {cut}'s beacon")
                heard.append(time.time())
            await client.nc.subscribe(f"beacon.{cut}", cb=on_beacon)
            await client.nc.flush()
            stop = asyncio.Event()

            async def beacon():
                while not stop.is_set():
                    await local.nc.publish(f"beacon.{cut}", b"")
                    await asyncio.sleep(0.1)
            pub = d.Publisher(client, "dur.cut")
            tasks = [asyncio.create_task(pub.run(stop)), asyncio.create_task(beacon())]
            await asyncio.sleep(1)
            assert heard, f"{cut}'s beacon never reached ord before the cut"
            await asyncio.to_thread(standin.link_down, cut)
            cut_at = time.time()
            tl.add(f"{cut} cut off")
            acked_before = len(pub.acked)
            await asyncio.sleep(28)
            _leader, followers = await d.replicas(client.nc)
            cut_replica = [f for f in followers if f["name"].startswith(cut)]
            tl.add(f"{cut} replica as the leader sees it: {cut_replica}")
            await asyncio.sleep(2)
            acked_during = len(pub.acked) - acked_before
            heard_during = len([h for h in heard if cut_at + 1 < h])
            heard.clear()
            await asyncio.to_thread(standin.link_up, cut)
            up_at = time.time()
            tl.add(f"{cut} link restored")
            t_up = time.monotonic()
            mesh = await asyncio.to_thread(fh.wait_mesh, standin, js.app, 3, d.READ_WINDOW)
            tl.add("full mesh (routez)")
            await d.wait_converged(standin, js.app, client.nc)
            healed_s = time.monotonic() - t_up
            tl.add("stream replicas converged")
            # Core traffic rides other route connections than JetStream's: each resumes on its
            # own retransmission timer.
            while not heard and time.time() - up_at < d.READ_WINDOW:
                await asyncio.sleep(0.1)
            stop.set()
            await asyncio.gather(*tasks)
            lost = await d.lost_acked(client.nc, [pub])
            beacon_back = round(heard[0] - up_at, 2) if heard else None
            # The route ping (cluster ping_interval x ping_max) closed the routes across the cut
            # while it lasted, so they were redialled at once after it, not on TCP's backoff.
            stale = sorted(at for m in js.machines() if m["region"] != cut
                           for at, _ in d.console_events(standin, m["id"], {"stale": "Stale Connection"}, cut_at)
                           if at < up_at)
            for at in stale[:1]:
                tl.add("first route closed as stale, during the cut", at)
            return (pub, acked_during, cut_replica, mesh, healed_s, lost, tl, len(local.disconnects), heard_during,
                    beacon_back, stale)
        finally:
            await client.close()
            await local.close()

    try:
        (pub, acked_during, cut_replica, mesh, healed_s, lost, tl, local_disconnects, heard_during,
         beacon_back, stale) = run(go())
    finally:
        standin.link_up(cut)
    print(f"cut timeline:\n{tl.text()}")
    d.figure("region_cut_30s", {**pub.summary(), "acked_during_cut": acked_during,
                                "cut_replica_at_28s": cut_replica, "mesh_after_restore_s": mesh and round(mesh, 2),
                                "converged_after_restore_s": round(healed_s, 2),
                                f"{cut}_beacons_heard_in_ord_during_cut": heard_during,
                                f"{cut}_beacon_heard_again_after_restore_s": beacon_back,
                                f"client_disconnects_inside_{cut}": local_disconnects,
                                "routes_closed_as_stale_during_cut": len(stale)})
    assert heard_during == 0  # the cut was real
    assert beacon_back is not None  # and core traffic crosses again
    assert lost == [], lost[:10]
    assert pub.gave_up == 0
    assert cut_replica and (not cut_replica[0]["current"] or cut_replica[0]["lag"] > 0), cut_replica
    assert acked_during > 100  # the majority side kept taking writes
    assert mesh is not None
    assert stale, "no route across the cut was closed as stale while it lasted"


# --- 2: a rolling deploy under load ----------------------------------------------------------------

LDM_LINES = {"entered lame duck mode": "Entering lame duck mode", "closing its clients": "Closing existing clients",
             "exited": "Server Exiting"}


def gated_one_at_a_time(machines: list[dict], health: HealthWatcher, started: float) -> tuple[dict, int]:
    """Each Machine's update since `started` (Fly's events: down at its update, up at the start after
    it), asserting that each went down only after the one before it answered plain /healthz (meta and
    stream replicas current) again. -> (seconds from each restart to its gates, how many times the next
    Machine was seen waiting while the old gate, js-enabled-only, already said 200)."""
    order = []
    for m in machines:
        events = [e for e in m.get("events", []) if e["timestamp"] / 1000 >= started]
        down = min(e["timestamp"] / 1000 for e in events if e["type"] == "update")
        up = min(e["timestamp"] / 1000 for e in events if e["type"] == "start" and e["timestamp"] / 1000 >= down)
        order.append((down, up, m))
    order.sort(key=lambda o: o[0])
    catch_up, held_back = {}, 0
    for (down, up, m), nxt in zip(order, order[1:] + [None]):
        unhealthy, healthy = health.first_ok(m["id"], up)
        _, enabled = health.first_ok(m["id"], up, column=3)
        assert healthy is not None, f"{m['id']} never answered /healthz 200 after its restart"
        # Up, JetStream enabled (the old gate would pass), but not current yet (plain /healthz fails).
        catching_up = [at for at, mid, full, js_only in health.polls
                       if mid == m["id"] and up <= at < healthy and js_only == 200 and full not in (None, 200)]
        catch_up[f"{m['region']}-{m['id']}"] = {"js_enabled_only_200_s": round(enabled - up, 2) if enabled else None,
                                                 "healthz_200_s": round(healthy - up, 2),
                                                 "polls_catching_up": len(catching_up)}
        if nxt is not None:
            assert unhealthy > up, f"{m['id']}: no failing /healthz poll between its restart and its 200"
            assert nxt[0] > unhealthy, (f"{nxt[2]['id']} went down at {nxt[0]:.2f}, while {m['id']} still "
                                        f"answered /healthz with an error at {unhealthy:.2f}")
            held_back += bool(catching_up)
    return catch_up, held_back


def test_rolling_deploy_under_load_loses_no_acked_message_and_clients_reconnect(js):
    standin = js.standin
    before = sorted(m["id"] for m in js.machines())
    health = HealthWatcher(standin, before)

    async def go():
        tl = d.Timeline()
        setup = await js.client("ord").connect()
        await d.ensure_stream(setup.nc)
        await setup.close()
        publishers = [d.Publisher(await js.client(r, timeline=tl, name=f"js-publisher@{r}").connect(),
                      f"dur.roll.{r}", interval=0.02) for r in ("ord", "syd")]
        core = [await js.client(r, timeline=tl, name=f"core-sub@{r}").connect() for r in REGIONS]
        ticker = await js.client("cdg", timeline=tl, name="core-pub@cdg").connect()
        received = {c.label: 0 for c in core}

        def counter(label):
            async def on_message(_msg):
                received[label] += 1
            return on_message
        for c in core:
            await c.nc.subscribe("core.tick", cb=counter(c.label))
            await c.nc.flush()
        stop = asyncio.Event()

        async def tick():
            while not stop.is_set():
                try:
                    await ticker.nc.publish("core.tick", b"t")
                except Exception:  # noqa: BLE001 (reconnecting: nats-py buffers or refuses)
                    pass
                await asyncio.sleep(0.05)
        tasks = [asyncio.create_task(p.run(stop)) for p in publishers] + [asyncio.create_task(tick())]
        await asyncio.sleep(2)
        tl.add("pulumi up (lameDuckGracePeriod 5s -> 4s) starts")
        js.project.config({"lameDuckGracePeriod": "4s"})
        started = time.time()
        health.start()
        try:
            await asyncio.to_thread(js.up)
        finally:
            health.done.set()
        tl.add("pulumi up done")
        # Every client back, and every core client hearing the ticker again, wherever it ended up.
        clients = core + [ticker] + [p.client for p in publishers]
        settled = dict(received)
        deadline = time.monotonic() + d.READ_WINDOW
        while time.monotonic() < deadline and not (
                all(c.nc.is_connected and len(c.reconnects) == len(c.disconnects) for c in clients)
                and all(received[k] > settled[k] for k in received)):
            await asyncio.sleep(0.1)
        hearing = {k: received[k] - settled[k] for k in received}
        stop.set()
        await asyncio.gather(*tasks)
        lost = await d.lost_acked(publishers[0].client.nc, publishers)
        state = {c.label: {"connected": c.nc.is_connected, "disconnects": len(c.disconnects),
                           "reconnects": len(c.reconnects), "ldm_notices": len(c.ldm_notices),
                           "now_on": c.server} for c in clients}
        for c in clients:
            await c.close()
        return tl, started, publishers, lost, state, hearing

    tl, started, publishers, lost, state, hearing = run(go())
    machines = js.machines()
    for m in machines:
        for at, what in d.console_events(standin, m["id"], LDM_LINES, started):
            tl.add(f"{m['region']}-{m['id']}: {what}", at)
        for e in m.get("events", []):
            if e["timestamp"] / 1000 >= started and e["type"] in ("update", "start"):
                tl.add(f"{m['region']}-{m['id']}: Fly {e['type']} ({e['status']})", e["timestamp"] / 1000)
    print(f"rolling deploy timeline (lame duck):\n{tl.text()}")
    ldm = {}
    for m in machines:
        events = {what: at for at, what in d.console_events(standin, m["id"], LDM_LINES, started)}
        if {"entered lame duck mode", "exited"} <= set(events):
            ldm[m["region"]] = {"ldm_to_close_clients_s": round(events.get("closing its clients", 0) -
                                                                 events["entered lame duck mode"], 2),
                                "ldm_to_exit_s": round(events["exited"] - events["entered lame duck mode"], 2)}
    # The gate: each Machine went down only after the one before it answered plain /healthz
    # (meta and stream replicas current) again. js-enabled-only, the old gate, passes sooner.
    health.join(5)
    catch_up, held_back = gated_one_at_a_time(machines, health, started)
    # At least once the next Machine waited while the old gate (js-enabled-only) already said 200.
    assert held_back, f"no Machine was seen catching up before the next went down: {catch_up}"
    print(f"rolling deploy gate, seconds from each restart: {json.dumps(catch_up)}")
    d.figure("rolling_deploy", {"publishers": {p.subject: p.summary() for p in publishers},
                                "lost_acked": len(lost), "clients": state, "lame_duck": ldm,
                                "core_ticks_heard_after": hearing, "gate_after_restart_s": catch_up})
    assert sorted(m["id"] for m in machines) == before  # updated in place
    for m in machines:
        code, out, _ = standin.exec(m["id"], "grep lame_duck_grace_period /etc/nats/nats.conf")
        assert '"4s"' in out, out
    assert lost == [], lost[:10]
    assert all(p.gave_up == 0 for p in publishers)
    assert len(ldm) == 3, ldm  # each Machine went through lame duck mode and exited
    for label, s in state.items():
        assert s["connected"], (label, s)
        assert s["disconnects"] >= 1 and s["reconnects"] == s["disconnects"], (label, s)
    assert all(n > 0 for n in hearing.values()), hearing


# --- issue 20: a nats-server version change rolls, under load ---------------------------------------

def versions(stack) -> dict[str, str]:
    return {f"{m['region']}-{m['id']}": json.loads(stack.standin.http(m["id"], 8222, "/varz")[1])["version"]
            for m in stack.machines()}


def test_version_roll_from_2_12_8_to_2_15_0_under_load(js):
    standin = js.standin
    assert set(versions(js).values()) == {"2.12.8"}
    before = sorted(m["id"] for m in js.machines())
    health = HealthWatcher(standin, before)
    mark, started = len(js.calls()), time.time()

    async def go():
        setup = await js.client("ord").connect()
        await d.ensure_stream(setup.nc)
        await setup.close()
        publishers = [d.Publisher(await js.client(r, name=f"js-publisher@{r}").connect(), f"dur.version.{r}",
                                  interval=0.02) for r in ("ord", "cdg")]
        stop = asyncio.Event()
        tasks = [asyncio.create_task(p.run(stop)) for p in publishers]
        await asyncio.sleep(2)
        js.project.config({"natsVersion": "2.15.0"})
        health.start()
        try:
            await asyncio.to_thread(js.up)
        finally:
            health.done.set()
        clients = [p.client for p in publishers]
        deadline = time.monotonic() + d.READ_WINDOW
        while time.monotonic() < deadline and not all(
                c.nc.is_connected and len(c.reconnects) == len(c.disconnects) for c in clients):
            await asyncio.sleep(0.1)
        await asyncio.sleep(1)
        stop.set()
        await asyncio.gather(*tasks)
        lost = await d.lost_acked(publishers[0].client.nc, publishers)
        state = {c.label: {"disconnects": len(c.disconnects), "reconnects": len(c.reconnects),
                           "connected": c.nc.is_connected} for c in clients}
        for c in clients:
            await c.close()
        return publishers, lost, state

    publishers, lost, state = run(go())
    health.join(5)
    deploys = [c for c in js.calls()[mark:] if c["command"] == "deploy"]
    gate, _ = gated_one_at_a_time(js.machines(), health, started)  # one Machine at a time, each current first
    attempts = sum(p.count + p.errors for p in publishers)
    d.figure("version_roll_fly", {"publishers": {p.subject: p.summary() for p in publishers},
                                  "failed_attempts_pct": round(100 * sum(p.errors for p in publishers) / attempts, 2),
                                  "lost_acked": len(lost), "clients": state, "versions": versions(js),
                                  "deploy_s": deploys[-1]["duration_s"] if deploys else None,
                                  "gate_after_restart_s": gate})
    assert set(versions(js).values()) == {"2.15.0"}, versions(js)
    assert sorted(m["id"] for m in js.machines()) == before  # updated in place
    argv = deploys[-1]["argv"]
    assert argv[argv.index("--strategy") + 1] == "rolling", argv
    for m in js.machines():
        code, out, _ = standin.exec(m["id"], "grep -A1 feature_flags /etc/nats/nats.conf")
        assert "js_raft_delete_range: false" in out, out
    assert lost == [], lost[:10]
    assert all(p.gave_up == 0 and p.acked for p in publishers)
    for label, s in state.items():
        assert s["connected"] and s["disconnects"] >= 1 and s["reconnects"] == s["disconnects"], (label, s)


# --- 1: scaling down and removing a region prune only our unattached volumes -----------------------

def test_scale_down_and_region_removal_destroy_only_surplus_unattached_volumes(js):
    standin = js.standin

    async def ensure():
        c = await js.client("ord").connect()
        try:
            await d.ensure_stream(c.nc)
            return await d.replicas(c.nc)
        finally:
            await c.close()
    before = run(ensure())
    js.project.config({"regions": ["ord", "syd", "cdg=2", "lhr"]})
    js.up()
    grown = js.volumes()
    assert Counter(v["region"] for v in grown) == {"ord": 1, "syd": 1, "cdg": 2, "lhr": 1}
    assert all(v["attached_machine_id"] for v in grown)
    # Someone else's volume in cdg, which no scale-down of ours may touch.
    foreign = standin.flyctl("volumes", "create", "other_data", "--region", "cdg", "--size", "1",
                             "--app", js.app, "--json", "--yes")
    assert foreign.returncode == 0, foreign.stderr
    foreign_id = json.loads(foreign.stdout)["id"]
    log_mark = len(js.calls())

    js.project.config({"regions": REGIONS})
    js.up()
    kept, machines = js.volumes(), js.machines()
    destroyed = [c["argv"][2] for c in js.calls()[log_mark:] if c["command"] == "volumes destroy" and c["exit"] == 0]
    assert Counter(v["region"] for v in kept) == {r: 1 for r in REGIONS}
    assert sorted(v["attached_machine_id"] for v in kept) == sorted(m["id"] for m in machines)
    assert not [v for v in js.volumes(None) if v["region"] == "lhr"]
    assert foreign_id in {v["id"] for v in js.volumes("other_data")}
    surplus = {v["id"] for v in grown} - {v["id"] for v in kept}
    assert sorted(destroyed) == sorted(surplus) and len(surplus) == 2, (destroyed, surplus)

    async def after():
        c = await js.client("ord").connect()
        try:
            seq, writable_after, errors = await d.publish_until(c.nc, "dur.after-scale", "after-scale", d.READ_WINDOW)
            leader, followers = await d.replicas(c.nc)
            _peers, meta = await asyncio.to_thread(meta_peers, standin, js.app, expect=live_servers(js))
            # What the scale-down left for the next fault: stop one more holder of the stream
            # (as a rolling deploy or a host restart would) and see what still works.
            other = next(m for m in machines if m["region"] == "syd")
            await asyncio.to_thread(standin.stop_machine, other["id"])
            outcome = {}
            try:  # an election may come first: a quorum is writable again within the window
                _seq, took, errors = await d.publish_until(c.nc, "dur.after-scale", "one more down", d.READ_WINDOW)
                outcome.update(publish="acked", publish_after_s=round(took, 2), publish_errors=dict(errors))
            except AssertionError as e:
                outcome["publish"] = str(e)
            await asyncio.to_thread(standin.start_machine, other["id"])
            _seq, back_after, _errors = await d.publish_until(c.nc, "dur.after-scale", "after-restart", d.READ_WINDOW)
            outcome["writable_again_after_restart_s"] = round(back_after, 2)
            return seq, writable_after, errors, leader, followers, meta, outcome
        finally:
            await c.close()
    seq, writable_after, errors, leader, followers, meta, outcome = run(after())
    d.figure("scale_down", {
        "volumes_destroyed": len(destroyed), "foreign_volume_kept": True,
        "stream_before": {"leader": before[0], "followers": [f["name"] for f in before[1]]},
        "stream_writable_after_up_s": round(writable_after, 2), "publish_errors": dict(errors),
        "stream_after": {"leader": leader, "followers": [(f["name"], f"current={f['current']}", f"lag={f['lag']}")
                                                          for f in followers]},
        "meta_cluster_size": meta.get("cluster_size"),
        "meta_peers": [(r["name"], f"current={r.get('current')}", f"offline={r.get('offline', False)}")
                       for r in meta.get("replicas", [])],
        "syd_stopped_after_scale_down": outcome})
    assert seq > 0 and leader
    # The drained servers left the meta group, so one more Machine down still leaves a quorum.
    assert meta.get("cluster_size") == 3 and outcome["publish"] == "acked", (meta, outcome)


# --- 1b: a JetStream region shrinks 3 -> 5 -> 3: the drained servers leave the meta group -------

def meta_peers(standin, app: str, timeout: float = d.READ_WINDOW, expect: set | None = None) -> tuple[set, dict]:
    """The meta group as its leader's /jsz reports it: (peer names, the raw meta_cluster); waits
    until it matches `expect` when given. The leader's view, not any server's: a server that has
    just restarted or rejoined reports a group of one until it hears from the leader."""
    deadline = time.monotonic() + timeout
    while True:
        peers, meta = set(), {}
        for m in standin.machines(app):
            if m["state"] != "started":
                continue
            try:
                view = json.loads(standin.http(m["id"], 8222, "/jsz", timeout=3)[1]).get("meta_cluster", {})
            except Exception:  # noqa: BLE001 (a Machine booting)
                continue
            if not meta or view.get("leader") == f"{m['region']}-{m['id']}":
                meta = view
                peers = {r["name"] for r in view.get("replicas", [])} | ({view["leader"]} if view.get("leader") else set())
        if expect is None or peers == expect or time.monotonic() > deadline:
            return peers, meta
        time.sleep(0.5)


def live_servers(stack) -> set:
    return {f"{m['region']}-{m['id']}" for m in stack.machines() if m["state"] == "started"}


def test_jetstream_region_3_to_5_to_3_leaves_only_live_peers_and_survives_one_more_stop(js):
    standin = js.standin
    js.project.config({"regions": ["ord=3", "syd", "cdg"]})
    js.up()
    # Each volume of a region asks for a zone of its own (`volumes create` defaults to
    # --require-unique-zone): ord has 4 here, so a fifth Machine is refused by name, before any
    # Machine is made, and the up goes through once the region has the room.
    standin.call("settings", zones={"ord": 4})
    js.project.config({"regions": ["ord=5", "syd", "cdg"]})
    refused = js.up(check=False)
    said = refused.stdout + refused.stderr
    assert refused.returncode != 0 and "region ord: cannot place 1 more 'nats_data' volume(s)" in said, said[-3000:]
    assert "failed to create volume: aborted: no capacity" in said
    assert len([m for m in js.machines() if m["region"] == "ord"]) == 3
    standin.call("settings", zones={"ord": 6})
    js.up()
    grown = live_servers(js)
    peers_grown, _ = meta_peers(standin, js.app, expect=grown)
    assert peers_grown == grown and len(grown) == 7, (peers_grown, grown)
    ord_grown = [m for m in js.machines() if m["region"] == "ord"]
    mark = len(js.calls())

    async def shrink():
        setup = await js.client("syd").connect()
        await d.ensure_stream(setup.nc)
        await setup.close()
        publisher = d.Publisher(await js.client("syd", name="js-publisher@syd").connect(), "dur.shrink",
                                interval=0.02)
        stop = asyncio.Event()
        task = asyncio.create_task(publisher.run(stop))
        await asyncio.sleep(2)
        js.project.config({"regions": ["ord=3", "syd", "cdg"]})
        await asyncio.to_thread(js.up)
        await asyncio.sleep(2)
        stop.set()
        await task
        lost = await d.lost_acked(publisher.client.nc, [publisher])
        leader, followers = await d.replicas(publisher.client.nc)
        return publisher, lost, leader, followers

    publisher, lost, leader, followers = run(shrink())
    live = live_servers(js)
    peers, meta = meta_peers(standin, js.app, expect=live)
    calls = [c for c in js.calls()[mark:] if c["command"] in ("machine stop", "machine destroy", "scale count")]
    drained = [c["argv"][2] for c in calls if c["command"] == "machine destroy"]
    ord_kept = {m["id"] for m in js.machines() if m["region"] == "ord"}
    newest = [m["id"] for m in sorted(ord_grown, key=lambda m: (m["created_at"], m["id"]), reverse=True)]

    # One more Machine down (a holder of the stream, not its leader): publishing must go on.
    victim = next((f["name"] for f in followers if f["name"] in live), None) or next(iter(live - {leader}))
    standin.stop_machine(js.machine_of(victim))

    async def one_more():
        c = await js.client("syd").connect()
        try:
            return await d.publish_until(c.nc, "dur.shrink", "after-one-more-stop", d.READ_WINDOW)
        finally:
            await c.close()
    try:
        seq, took, errors = run(one_more())
    finally:
        standin.start_machine(js.machine_of(victim))
    d.figure("jetstream_shrink_3_5_3", {
        "meta_peers_at_5": len(peers_grown), "meta_peers_after_3": len(peers), "live_servers": len(live),
        "meta_cluster_size": meta.get("cluster_size"), "drained": drained,
        "flyctl": [" ".join(c["argv"][:3]) for c in calls], "publisher": publisher.summary(),
        "lost_acked": len(lost), "one_more_stopped": victim,
        "publish_after_one_more_stop": {"seq": seq, "took_s": round(took, 2), "errors": dict(errors)}})
    assert peers == live and len(live) == 5, (peers, live)
    assert meta.get("cluster_size") == 5, meta
    assert sorted(drained) == sorted(newest[:2]) and ord_kept == set(newest[2:]), (drained, newest)
    assert [c["command"] for c in calls] == ["machine stop", "machine destroy"] * 2 + ["scale count"], calls
    assert lost == [], lost[:10]
    assert publisher.gave_up == 0 and len(publisher.acked) > 0
    assert seq > 0


# --- issue 20: a password rotation through rolling deploys ----------------------------------------

NEW_LOGIN = ("app2", "app2-" + secrets.token_hex(10))


class Service:
    """A request/reply service through the edges: responders in one queue group record each request's id
    and answer; a requester asks again with the same id until it is answered. On Fly every secret change
    restarts the Machines, and core NATS drops what is in flight while a client reconnects: asking again
    is how a client of a rolling cluster loses no message, whatever the rotation does."""

    def __init__(self, stack):
        self.stack, self.heard, self.asked, self.again, self.gave_up = stack, set(), 0, 0, 0
        self.refusals: list[str] = []
        self.responders: list = []
        self.requester = None

    async def client(self, region: str, login: tuple[str, str]):
        async def on_error(e):
            if "Authorization" in str(e):
                self.refusals.append(f"{login[0]}@{region}: {e}")
        return await self.stack.client(region, name=f"{login[0]}@{region}", login=login).connect(error_cb=on_error)

    async def respond(self, region: str, login):
        c = await self.client(region, login)

        async def on_request(msg):
            self.heard.add(int(msg.data))
            await msg.respond(b"ok")
        await c.nc.subscribe("rotate.rpc", queue="workers", cb=on_request)
        await c.nc.flush()
        return c

    async def move_to(self, login) -> None:
        """Make before break: new responders in the group and a new requester, then the old ones drained."""
        responders = [await self.respond(r, login) for r in ("ord", "syd")]
        requester = await self.client("cdg", login)
        old = [*self.responders, self.requester]
        self.responders, self.requester = responders, requester
        for c in old:
            await c.nc.drain()

    async def ask(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            started = time.monotonic()
            while True:
                try:
                    await self.requester.nc.request("rotate.rpc", str(self.asked).encode(), timeout=1)
                    break
                except Exception:  # noqa: BLE001 (no responders, a timeout: a Machine restarting)
                    self.again += 1
                    if time.monotonic() - started > d.READ_WINDOW:
                        self.gave_up += 1
                        break
                    await asyncio.sleep(0.1)
            self.asked += 1
            await asyncio.sleep(0.01)


def test_password_rotation_through_rolling_deploys_refuses_no_client_and_loses_nothing(js):
    standin = js.standin

    async def go():
        service = Service(js)
        service.responders = [await service.respond(r, js.login) for r in ("ord", "syd")]
        service.requester = await service.client("cdg", js.login)
        stop = asyncio.Event()
        task = asyncio.create_task(service.ask(stop))
        await asyncio.sleep(1)
        js.project.config({"users": ["app", NEW_LOGIN[0]]})
        js.project.pulumi("config", "set", "--secret", "--path", f"userPasswords.{NEW_LOGIN[0]}", stdin=NEW_LOGIN[1])
        await asyncio.to_thread(js.up)
        await service.move_to(NEW_LOGIN)
        js.login = NEW_LOGIN
        await asyncio.sleep(1)
        js.project.config({"users": [NEW_LOGIN[0]]})
        js.project.pulumi("config", "rm", "--path", "userPasswords.app")
        await asyncio.to_thread(js.up)
        await asyncio.sleep(1)
        stop.set()
        await task
        old = await d.refused(standin, js.app, "ord", user="app", password=APP_PASSWORD)
        new = await d.refused(standin, js.app, "ord", user=NEW_LOGIN[0], password=NEW_LOGIN[1])
        for c in [*service.responders, service.requester]:
            await c.close()
        return service, old, new

    service, old, new = run(go())
    lost = sorted(set(range(service.asked)) - service.heard)
    d.figure("rotation_fly", {"requests": service.asked, "heard": len(service.heard), "lost": len(lost),
                              "asked_again": service.again, "gave_up": service.gave_up,
                              "refused_clients": len(service.refusals)})
    assert service.refusals == []  # no client was ever refused: each moved before its user went
    assert lost == [] and service.gave_up == 0, lost[:10]
    assert "Authorization Violation" in old, old
    assert new == ""


# --- issue 20: backup, destroy, a new cluster, restore ---------------------------------------------

def test_backup_destroy_up_restore_brings_back_every_message_key_and_revision(js, scratch):
    from nats_fly_testkit import backups as b
    standin, folder = js.standin, scratch / "backup"

    async def filled():
        c = await js.client("ord").connect()
        try:
            await b.fill(c.nc)
            streams = sorted({*b.STREAMS, d.STREAM})
            return {s: await b.fingerprint(c.nc, s) for s in streams}, await b.consumer_state(c.nc)
        finally:
            await c.close()
    before, consumer = run(filled())
    t0 = time.monotonic()
    saved = b.nats_fly(js.project.root, js.project.env, "backup", "--stack", js.project.stack, "--to", str(folder))
    backup_s = time.monotonic() - t0
    assert saved.returncode == 0, saved.stdout + saved.stderr
    assert NEW_LOGIN[1] not in saved.stdout + saved.stderr
    assert sorted(p.name for p in folder.iterdir()) == sorted(before)
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())

    js.project.config({"regions": REGIONS})
    js.project.pulumi("destroy", "--yes", "--skip-preview")
    assert standin.machines(js.app) == []
    js.up()  # a new app of the same name: new Machines, new volumes, empty stores
    assert fh.wait_mesh(standin, js.app, 3, 120) is not None
    fh.wait_healthy(standin, js.app)
    # The new app's edges (the old app's closed with it): where backup and restore reach the cluster.
    js.project.config({"verifyUrls": [f"{r}=nats://127.0.0.1:{standin.edge(js.app, r, 10000)[1]}" for r in REGIONS]})
    t0 = time.monotonic()
    put_back = b.nats_fly(js.project.root, js.project.env, "restore", "--stack", js.project.stack,
                          "--from", str(folder))
    restore_s = time.monotonic() - t0
    assert put_back.returncode == 0, put_back.stdout + put_back.stderr

    async def after():
        c = await js.client("syd").connect()
        try:
            return {s: await b.fingerprint(c.nc, s) for s in before}, await b.consumer_state(c.nc)
        finally:
            await c.close()
    found, state = run(after())
    d.figure("backup_restore_fly", {"backup_s": round(backup_s, 2), "restore_s": round(restore_s, 2),
                                    "backup_bytes": size, "streams": {s: f.messages for s, f in before.items()},
                                    "backup_said": saved.stdout.splitlines()})
    assert found == before
    assert state == consumer
