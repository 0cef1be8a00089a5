"""Golden renders of nats.conf, fly.toml and the Dockerfile, each conf checked by `nats-server -t` of the
nats-server version it is rendered for."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from nats_fly_testkit.support import REPO, nats_server_binary
from nats_fly import platforms
from nats_fly.config import stackfile
from nats_fly.config.settings import DEFAULT_NATS_VERSION, NATS_VERSIONS, load
from nats_fly.platforms.local import ports as local_ports
from nats_fly.render import buildctx, digest, flytoml, natsconf

GOLDEN = REPO / "tests" / "golden"
STACKS = sorted(p.name.split(".")[1] for p in (REPO / "config").glob("Pulumi.*.yaml"))
VARIANTS = {
    "supercluster": {"topology": "supercluster"},
    "jetstream": {"jetstream": True, "machinesPerRegion": 3, "volumeSize": 10},
    "supercluster-jetstream": {"topology": "supercluster", "jetstream": True, "machinesPerRegion": 3},
    "servertls": {"serverTls": True},
    "websocket": {"websocket": True, "websocketOrigins": ["https://app.example.com"]},
    "leafnodes": {"leafnodes": True, "leafUsers": ["edge", "plant"]},
    **{f"{label}{version}": {**changes, "natsVersion": version}
       for version in NATS_VERSIONS if version != DEFAULT_NATS_VERSION
       for label, changes in (("", {}), ("jetstream-", {"jetstream": True, "machinesPerRegion": 3, "volumeSize": 10}))},
}


def stack_settings(stack: str, **changes):
    s = platforms.settings(stackfile.from_file(REPO / "config" / f"Pulumi.{stack}.yaml")[0])
    if not changes:
        return s
    raw = {"app": s.app, "regions": list(s.regions), "platform": s.platform, "auth": s.auth,
           "topology": s.topology, "localBasePort": s.local_base_port, **changes}
    raw = {k: v for k, v in raw.items() if v is not None}
    return load(raw)


def renders():
    """(case name, file name, text, nats-server version) for every stack file and every variant."""
    cases = []
    for stack in STACKS:
        base = stack_settings(stack)
        variants = {stack: base}
        for suffix, changes in VARIANTS.items():
            variants[f"{stack}-{suffix}"] = stack_settings(stack, **changes)
        for case, s in variants.items():
            if s.platform == "fly":
                files = buildctx.build_context(s)
                cases += [(case, name, files[name], s.nats_version) for name in ("nats.conf", "fly.toml", "Dockerfile")]
            else:
                servers = local_ports.servers(s)
                for sv in servers:
                    text = natsconf.render(natsconf.local_conf(s, sv, servers, f"/tmp/nats-fly-test/{sv.name}"))
                    cases.append((case, f"{sv.name}.conf", text, s.nats_version))
    return cases


CASES = renders()


@pytest.mark.parametrize("case,name,text,version", CASES, ids=[f"{c}/{n}" for c, n, _, _ in CASES])
def test_golden(case, name, text, version):
    golden = GOLDEN / case / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert golden.exists(), f"no golden file {golden}; run with UPDATE_GOLDEN=1 and review the diff"
    assert text == golden.read_text()


def boot_env(tmp_path: Path) -> dict[str, str]:
    """The environment the entrypoint gives nats-server on a Machine, with throwaway secrets."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-days", "1", "-subj", "/CN=test", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    # Values as the entrypoint exports them: quoted, digit-first Machine id and secrets included.
    values = {"NATS_SERVER_NAME": "ord-4e4ac1d2e3f4a5", "NATS_REGION_TAG": "region:ord",
              "NATS_CLUSTER_ADVERTISE": "4e4ac1d2e3f4a5.vm.app.internal:4248",
              "NATS_GATEWAY_ADVERTISE": "4e4ac1d2e3f4a5.vm.app.internal:7222",

              "NATS_SYS_PASSWORD": '12345 "quoted" \\ pw', "NATS_ROUTE_PASSWORD": "1e5" + "f" * 61,
              "NATS_TLS_CERT_FILE": str(cert), "NATS_TLS_KEY_FILE": str(key)}
    values.update({natsconf.user_password_var(u): "007" for u in ("app", "alice", "bob")})
    values.update({natsconf.leaf_password_var(u): "0leaf" for u in ("edge", "plant")})
    routes = "[" + ", ".join(natsconf.conf_string(f"nats-route://route:1e5f@[fdaa::{i}]:4248") for i in (2, 3)) + "]"
    return {**os.environ, "FLY_REGION": "ord", "NATS_ROUTES": routes,
            **{k: natsconf.conf_string(v) for k, v in values.items()}}


@pytest.mark.parametrize("case,name,text,version", [c for c in CASES if c[1].endswith(".conf")],
                         ids=[f"{c}/{n}" for c, n, _, _ in CASES if n.endswith(".conf")])
def test_nats_server_accepts_every_render(case, name, text, version, tmp_path):
    conf = tmp_path / "nats.conf"
    # A local conf's route passwords are markers until the process manager fills them in.
    filled = natsconf.Secret.PATTERN.sub("1e5f", text)
    conf.write_text(filled.replace("/data/jetstream", str(tmp_path / "js")))
    result = subprocess.run([nats_server_binary(version), "-t", "-c", str(conf)], env=boot_env(tmp_path),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is valid" in result.stdout + result.stderr


def test_rendered_conf_holds_no_secret_and_no_per_machine_value():
    for case, name, text, _ in CASES:
        assert "password: $NATS_" in text or "password" not in text.replace("$NATS_", ""), (case, name)
        assert not re.search(r'password: "', text), (case, name)


def test_fly_toml_is_valid_toml_with_the_services_the_example_promises():
    s = stack_settings("prod", jetstream=True, machinesPerRegion=3, volumeSize=10)
    doc = tomllib.loads(flytoml.render(flytoml.fly_toml(s)))
    assert doc["kill_signal"] == "SIGINT" and doc["kill_timeout"] > 40  # the entrypoint makes it lame duck
    service = doc["services"][0]
    assert service["internal_port"] == 4222
    assert service["ports"] == [{"port": 10000}, {"port": 10001, "handlers": ["tls"]}]
    assert doc["checks"]["nats_health"]["path"] == "/healthz"  # with JetStream: replicas current too
    assert doc["mounts"] == [{"source": "nats_data", "destination": "/data", "initial_size": "10gb"}]
    assert doc["deploy"]["strategy"] == "rolling"


@pytest.mark.parametrize("version", NATS_VERSIONS)
def test_the_image_is_the_official_one_of_the_stacks_nats_version(version):
    s = stack_settings("prod", natsVersion=version)
    dockerfile = buildctx.build_context(s)["Dockerfile"]
    assert re.findall(r"^FROM (\S+)$", dockerfile, re.M) == [f"nats:{version}-alpine"]
    out = subprocess.run([nats_server_binary(version), "--version"], capture_output=True, text=True).stdout
    assert out.strip() == f"nats-server: v{version}"  # what the local platform runs for the same stack


def test_feature_flags_only_where_the_version_reads_them():
    """2.12 refuses the block; 2.15 gets js_raft_delete_range off while 2.12 may still be a peer."""
    js = {"jetstream": True, "machinesPerRegion": 3}
    new, old = stack_settings("prod", **js), stack_settings("prod", natsVersion="2.12.8", **js)
    assert natsconf.fly_conf(new)["feature_flags"] == {"js_raft_delete_range": False}
    assert "feature_flags" not in natsconf.fly_conf(old)
    assert "feature_flags" not in natsconf.fly_conf(stack_settings("prod", jetstream=False))
    local = stack_settings("local", **js)
    servers = local_ports.servers(local)
    assert natsconf.local_conf(local, servers[0], servers, "/tmp/x")["feature_flags"] == {"js_raft_delete_range": False}


def test_a_2_12_conf_with_feature_flags_is_refused_by_2_12(tmp_path):
    """Why the block is left out for 2.12: its own -t refuses it (and a downgrade must drop it)."""
    s = stack_settings("local", jetstream=True, machinesPerRegion=3)
    servers = local_ports.servers(s)
    conf = tmp_path / "nats.conf"
    conf.write_text(natsconf.Secret.PATTERN.sub("1e5f", natsconf.render(
        natsconf.local_conf(s, servers[0], servers, str(tmp_path / "js")))))
    env = boot_env(tmp_path)
    refused = subprocess.run([nats_server_binary("2.12.8"), "-t", "-c", str(conf)], env=env, capture_output=True,
                             text=True, timeout=30)
    assert refused.returncode != 0 and 'unknown field "feature_flags"' in refused.stdout + refused.stderr
    taken = subprocess.run([nats_server_binary("2.15.0"), "-t", "-c", str(conf)], env=env, capture_output=True,
                           text=True, timeout=30)
    assert taken.returncode == 0, taken.stdout + taken.stderr


def test_render_cli_writes_the_build_context(tmp_path):
    out = tmp_path / "ctx"
    result = subprocess.run([sys.executable, "-m", "nats_fly", "render", "--stack", "prod", "--out", str(out)],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["Dockerfile", "entrypoint.sh", "fly.toml", "nats.conf"]
    assert os.access(out / "entrypoint.sh", os.X_OK)
    files = {p.name: p.read_text() for p in out.iterdir()}
    assert f"sha256 {digest.content_hash(files)}" in result.stdout


def test_render_cli_refuses_bad_stack(tmp_path):
    (tmp_path / "Pulumi.yaml").write_text("name: x\nruntime: python\nstackConfigDir: config\n")
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "Pulumi.bad.yaml").write_text(
        "config:\n  nats-fly:app: ok-app\n  nats-fly:regions: [ord, mars]\n  nats-fly:sysPassword: plain-text-pw\n")
    result = subprocess.run([sys.executable, "-m", "nats_fly", "render", "--stack", "bad", "--out",
                             str(tmp_path / "out"), "--project-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "nats-fly:regions: 'mars' is not a Fly region" in result.stderr
    assert not (tmp_path / "out").exists()


def test_render_cli_refuses_plaintext_secret_and_duplicate_keys(tmp_path):
    (tmp_path / "Pulumi.yaml").write_text("name: x\nruntime: python\nstackConfigDir: config\n")
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "Pulumi.a.yaml").write_text(
        "config:\n  nats-fly:app: ok-app\n  nats-fly:regions: [ord]\n  nats-fly:sysPassword: plain-text-pw\n")
    (tmp_path / "config" / "Pulumi.b.yaml").write_text(
        "config:\n  nats-fly:app: ok-app\n  nats-fly:app: other\n  nats-fly:regions: [ord]\n")
    for stack, expected in (("a", "nats-fly:sysPassword: given in plain text"), ("b", "defined twice")):
        result = subprocess.run([sys.executable, "-m", "nats_fly", "render", "--stack", stack, "--out",
                                 str(tmp_path / "out"), "--project-dir", str(tmp_path)],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and expected in result.stderr, result.stderr
        assert "plain-text-pw" not in result.stderr


def test_websocket_is_served_on_443_by_fly_and_checks_origins():
    s = stack_settings("prod")  # prod says websocket: true
    doc = tomllib.loads(flytoml.render(flytoml.fly_toml(s)))
    web = next(svc for svc in doc["services"] if svc["internal_port"] == 8080)
    assert web["ports"] == [{"port": 443, "handlers": ["tls", "http"]}]  # the shared IPv4 serves it
    conf = natsconf.fly_conf(s)["websocket"]
    assert conf == {"host": "::", "port": 8080, "no_tls": True, "allowed_origins": [f"https://{s.app}.fly.dev"]}
    listed = stack_settings("prod", websocket=True, websocketOrigins=["https://app.example.com"])
    assert natsconf.fly_conf(listed)["websocket"]["allowed_origins"] == ["https://app.example.com"]
    anyone = stack_settings("prod", websocket=True, websocketOrigins=["*"])
    assert "allowed_origins" not in natsconf.fly_conf(anyone)["websocket"]
    local = stack_settings("local", websocket=True)
    servers = local_ports.servers(local)
    block = natsconf.local_conf(local, servers[0], servers, "/tmp/x")["websocket"]
    assert block == {"host": "127.0.0.1", "port": servers[0].websocket_port, "no_tls": True, "same_origin": True}
    assert "websocket" not in natsconf.fly_conf(stack_settings("dev"))


def test_jetstream_places_replicas_across_regions_in_a_mesh_only():
    mesh = stack_settings("prod")
    assert natsconf.fly_conf(mesh)["jetstream"]["unique_tag"] == "region:"
    assert natsconf.fly_conf(mesh)["server_tags"] == [natsconf.Var(natsconf.REGION_TAG)]  # region:<code>
    sc = stack_settings("prod", topology="supercluster", jetstream=True, machinesPerRegion=3)
    assert "unique_tag" not in natsconf.fly_conf(sc)["jetstream"]


def test_memory_rules_follow_the_vm_and_the_volume():
    s = stack_settings("prod")  # 1024 MB VMs, 10 GB volumes
    js = natsconf.fly_conf(s)["jetstream"]
    assert js["max_file_store"] == int(10 * 1024**3 * 0.9) and js["max_memory_store"] == 512 * 1024**2
    assert tomllib.loads(flytoml.render(flytoml.fly_toml(s)))["env"]["GOMEMLIMIT"] == "819MiB"


def test_leaf_nodes_come_in_through_fly_tls_handler_in_the_app_account():
    s = stack_settings("prod", leafnodes=True, leafUsers=["edge"])
    block = natsconf.fly_conf(s)["leafnodes"]
    assert block == {"listen": "0.0.0.0:7422", "advertise": f"{s.app}.fly.dev:7422", "authorization": {"users": [
        {"user": "edge", "password": natsconf.Var("NATS_LEAF_PASSWORD_EDGE"), "account": "APP"}]}}
    assert "tls" not in block  # Fly's tls handler did the TLS; a block here would make INFO say tls_required
    doc = tomllib.loads(flytoml.render(flytoml.fly_toml(s)))
    leaf = next(svc for svc in doc["services"] if svc["internal_port"] == 7422)
    assert leaf["ports"] == [{"port": 7422, "handlers": ["tls"]}]
    snippet = natsconf.leaf_remote_snippet(s, f"tls://{s.app}.fly.dev:7422", tls_first=True)
    assert f'"tls://edge:<its leafPasswords entry>@{s.app}.fly.dev:7422"' in snippet
    assert "handshake_first: true" in snippet and 'first_info_timeout: "5s"' in snippet
    local = stack_settings("local", leafnodes=True, leafUsers=["edge"])
    servers = local_ports.servers(local)
    assert natsconf.local_conf(local, servers[0], servers, "/tmp/x")["leafnodes"]["listen"] == \
        f"127.0.0.1:{servers[0].leafnode_port}"
