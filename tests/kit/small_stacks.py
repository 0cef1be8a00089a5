"""The durable suite's small stacks, each brought up by the components' own command lines
(fly.py): `auth: none`, serverTls with a user certificate made here by the
openssl CLI, and a supercluster with JetStream off. Each gets regions of its own, so the
faults and delays the other tests inject never touch it."""
from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

from . import fly as fh


@dataclass
class Certificate:
    ca_file: str
    cert_pem: str
    key_pem: str


def make_certificate(out: Path, hostname: str) -> Certificate:
    """A CA and a server certificate for `hostname` signed by it (openssl CLI, files in `out`)."""
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=out, check=True, capture_output=True, timeout=30)
    openssl("req", "-x509", *ec, "-days", "2", "-subj", "/CN=nats-fly durable test CA",
            "-keyout", "ca.key", "-out", "ca.pem")
    openssl("req", *ec, "-subj", f"/CN={hostname}", "-keyout", "server.key", "-out", "server.csr")
    (out / "san.cnf").write_text(f"subjectAltName=DNS:{hostname}\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", "san.cnf", "-out", "server.pem")
    return Certificate(str(out / "ca.pem"), (out / "server.pem").read_text(), (out / "server.key").read_text())


def _up(standin, stack: fh.Stack, scratch: Path, secrets_text: str | None = None) -> None:
    s = stack.settings
    fh.components_up(standin, stack, fh.render_ours(stack, scratch / "contexts" / s.app), secrets_text)
    fh.wait_healthy(standin, s.app, timeout=60)


def open_stack(standin, scratch: Path) -> fh.Stack:
    """One Machine in iad with `auth: none`: anonymous clients are welcome."""
    stack = fh.load_stack("dev", app=f"dur-open-{secrets.token_hex(3)}", regions=("iad",), auth="none",
                          peer_wait=0)
    _up(standin, stack, scratch)
    return stack


def tls_stack(standin, scratch: Path) -> tuple[fh.Stack, Certificate]:
    """One Machine in fra with serverTls and a user certificate; auth stays on (the default)."""
    app = f"dur-tls-{secrets.token_hex(3)}"
    stack = fh.load_stack("dev", app=app, regions=("fra",), server_tls=True, peer_wait=0)
    cert = make_certificate(scratch / "certs", f"{app}.fly.dev")
    _up(standin, stack, scratch, fh.secrets_text(standin, stack, cert.key_pem + "\n" + cert.cert_pem))
    return stack, cert


def supercluster_stack(standin, scratch: Path) -> fh.Stack:
    """A cluster per region (ams, sin, gru; one Machine each), gateways between them, no JetStream."""
    stack = fh.load_stack("prod", app=f"dur-sc-{secrets.token_hex(3)}", regions=("ams", "sin", "gru"),
                          topology="supercluster", jetstream=False, peer_wait=0)
    _up(standin, stack, scratch)
    return stack
