"""The entrypoint under busybox sh (the alpine image's shell): what it exports makes the rendered
conf valid for nats-server, whatever digits a Machine id or a secret starts with."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from support import REPO, nats_server_binary
from nats_fly import buildctx
from nats_fly.settings import load

BUSYBOX = shutil.which("busybox") or "/bin/busybox"


@pytest.mark.parametrize("topology", ["mesh", "supercluster"])
def test_entrypoint_exports_make_the_conf_valid(tmp_path, topology):
    if not Path(BUSYBOX).exists():
        pytest.fail("busybox is missing: apt-get install busybox-static (scripts/test installs it)")
    s = load({"app": "my-nats", "regions": ["ord", "syd"], "topology": topology, "users": ["app", "bob"]})
    context = buildctx.write(buildctx.build_context(s), tmp_path / "ctx")
    key, cert = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-days", "1", "-subj", "/CN=t", "-keyout", key, "-out", cert], check=True, capture_output=True)
    tls_dir = tmp_path / "tls"
    env = {
        "PATH": f"{Path(nats_server_binary()).parent}:/usr/bin:/bin",
        "FLY_APP_NAME": "my-nats", "FLY_REGION": "syd", "FLY_MACHINE_ID": "4e4ac1d2e3f4a5",
        "FLY_PRIVATE_IP": "fdaa:0:1::2", "NATS_PEER_WAIT": "0", "NATS_TOPOLOGY": topology,
        "NATS_CLUSTER_PORT": "4248", "NATS_GATEWAY_PORT": "7222", "NATS_FLY_TLS_DIR": str(tls_dir),
        "NATS_SYS_PASSWORD": '1234567890 "x" \\ y', "NATS_ROUTE_PASSWORD": "1e5f" * 16,
        "NATS_PASSWORD_APP": "0042", "NATS_PASSWORD_BOB": "3e3",
        "NATS_TLS_CERT": cert.read_text(), "NATS_TLS_KEY": key.read_text(),
    }
    result = subprocess.run([BUSYBOX, "sh", str(context / "entrypoint.sh"), "sh", "-c",
                             f'nats-server -t -c {context / "nats.conf"} && env'],
                            env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is valid" in result.stderr + result.stdout
    exported = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    assert exported["NATS_SERVER_NAME"] == '"syd-4e4ac1d2e3f4a5"'
    assert exported["NATS_CLUSTER_ADVERTISE"] == '"4e4ac1d2e3f4a5.vm.my-nats.internal:4248"'
    peers = "syd.my-nats.internal" if topology == "supercluster" else "my-nats.internal"
    assert exported["NATS_ROUTES"] == f'["nats-route://route:{"1e5f" * 16}@{peers}:4248"]'
    assert exported["NATS_PASSWORD_BOB"] == '"3e3"'
    assert "NATS_TLS_KEY" not in exported
    assert oct((tls_dir / "key.pem").stat().st_mode & 0o777) == "0o600"
