"""The clusters verify is tried on, one of each kind per module, stopped however the tests end."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from nats_fly_testkit.verify_clusters import REGIONS, LocalCluster, start_cluster


@pytest.fixture(scope="module")
def mesh(tmp_path_factory) -> Iterator[LocalCluster]:
    yield from start_cluster(tmp_path_factory.mktemp("mesh"), {r: 1 for r in REGIONS})


@pytest.fixture(scope="module")
def supercluster(tmp_path_factory) -> Iterator[LocalCluster]:
    yield from start_cluster(tmp_path_factory.mktemp("super"), {"ord": 2, "syd": 1, "cdg": 1}, "supercluster")


@pytest.fixture(scope="module")
def supercluster_without_cdg_to_ord(tmp_path_factory) -> Iterator[LocalCluster]:
    yield from start_cluster(tmp_path_factory.mktemp("gapped"), {r: 1 for r in REGIONS}, "supercluster",
                             omit_gateways={"cdg": "ord"})


@pytest.fixture(scope="module")
def jetstream_mesh(tmp_path_factory) -> Iterator[LocalCluster]:
    yield from start_cluster(tmp_path_factory.mktemp("js"), {r: 1 for r in REGIONS}, jetstream=True)


@pytest.fixture(scope="module")
def tls_first(tmp_path_factory) -> Iterator[tuple[LocalCluster, Path]]:
    """One server that expects the TLS handshake before INFO, and the CA (its own cert) to trust."""
    root = tmp_path_factory.mktemp("tls")
    cert, key = root / "cert.pem", root / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    tls = {"tls": {"cert_file": str(cert), "key_file": str(key), "handshake_first": True}}
    for cluster in start_cluster(root, {"ord": 1}, extra=tls):
        yield cluster, cert
