"""A throwaway CA and the edge certificate for `*.fly.dev`, made with the openssl CLI."""
from __future__ import annotations

import subprocess
from pathlib import Path

EXTENSIONS = """basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:*.fly.dev,DNS:fly.dev,DNS:localhost,IP:127.0.0.1,IP:::1
"""


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {proc.stderr.strip()}")


def make(directory: Path) -> tuple[Path, Path, Path]:
    """-> (ca.crt, edge.crt, edge.key)."""
    directory.mkdir(parents=True, exist_ok=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=nats-fly stand-in CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory)
    _openssl("req", *ec, "-keyout", "edge.key", "-out", "edge.csr", "-subj", "/CN=*.fly.dev", cwd=directory)
    (directory / "edge.ext").write_text(EXTENSIONS)
    _openssl("x509", "-req", "-in", "edge.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "edge.crt", "-days", "2", "-extfile", "edge.ext", cwd=directory)
    return directory / "ca.crt", directory / "edge.crt", directory / "edge.key"
