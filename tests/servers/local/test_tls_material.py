"""serverTls material judged as nats-server judges it (issue 17, 4.3). For certificate/key pairs made by
`openssl` (every key type openssl makes, the PEM forms, chains, labels, serials, dates), our verdict
(pem.check_pair) equals the pinned nats-server's: it loads the pair when it reads its conf (`-t`,
which runs crypto/tls X509KeyPair), and, for a pair it loads, a TLS client completes a handshake with
it (P-224 and RSA under 1024 bits load, then fail every handshake)."""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from nats_fly.config import pem
from nats_fly_testkit.support import free_ports, nats_server_binary, self_signed

NAME = lambda key: f"nats-fly:{key}"  # noqa: E731


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def key(cwd: Path, name: str, *genpkey: str) -> str:
    openssl("genpkey", *genpkey, "-out", f"{name}.key", cwd=cwd)
    return f"{name}.key"


def req_x509(cwd: Path, name: str, key_file: str, *extra: str) -> str:
    openssl("req", "-x509", "-new", "-key", key_file, "-subj", f"/CN={name}.example.com", "-days", "2", *extra,
            "-out", f"{name}.crt", cwd=cwd)
    return f"{name}.crt"


def pairs(cwd: Path) -> dict[str, tuple[str, str]]:
    """name -> (certificate PEM, key PEM)."""
    made: dict[str, tuple[str, str]] = {}

    def add(name: str, cert: str, key_file: str) -> None:
        made[name] = ((cwd / cert).read_text(), (cwd / key_file).read_text())

    kinds = {
        "rsa-2048": ("-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"),
        "rsa-1024": ("-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"),
        "rsa-512": ("-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:512"),
        "rsa-pss": ("-algorithm", "RSA-PSS", "-pkeyopt", "rsa_keygen_bits:2048"),
        "p-256": ("-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"),
        "p-384": ("-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"),
        "p-521": ("-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-521"),
        "p-224": ("-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-224"),
        "secp256k1": ("-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:secp256k1"),
        "brainpoolP256r1": ("-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:brainpoolP256r1"),
        "brainpoolP384r1": ("-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:brainpoolP384r1"),
        "p-256-explicit": ("-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-pkeyopt",
                           "ec_param_enc:explicit"),
        "ed25519": ("-algorithm", "ED25519"),
        "ed448": ("-algorithm", "ED448"),
        "sm2": ("-algorithm", "SM2"),
    }
    for name, genpkey in kinds.items():
        add(name, req_x509(cwd, name, key(cwd, name, *genpkey)), f"{name}.key")
    openssl("dsaparam", "-out", "dsa.params", "2048", cwd=cwd)
    add("dsa", req_x509(cwd, "dsa", key(cwd, "dsa", "-paramfile", "dsa.params")), "dsa.key")

    # The same keys in their traditional PEM forms, and with EC PARAMETERS before the key.
    openssl("pkey", "-in", "p-256.key", "-traditional", "-out", "p-256-sec1.key", cwd=cwd)
    add("p-256 as EC PRIVATE KEY", "p-256.crt", "p-256-sec1.key")
    openssl("pkey", "-in", "rsa-2048.key", "-traditional", "-out", "rsa-pkcs1.key", cwd=cwd)
    add("rsa as RSA PRIVATE KEY", "rsa-2048.crt", "rsa-pkcs1.key")
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-out", "ecparam.key", cwd=cwd)
    add("EC PARAMETERS then EC PRIVATE KEY", req_x509(cwd, "ecparam", "ecparam.key"), "ecparam.key")
    openssl("pkey", "-in", "p-256.key", "-aes256", "-passout", "pass:secret", "-out", "p-256-pkcs8-enc.key", cwd=cwd)
    add("encrypted PKCS #8", "p-256.crt", "p-256-pkcs8-enc.key")
    openssl("pkey", "-in", "p-256.key", "-traditional", "-aes256", "-passout", "pass:secret", "-out",
            "p-256-legacy-enc.key", cwd=cwd)
    add("encrypted legacy PEM", "p-256.crt", "p-256-legacy-enc.key")

    # Labels, chains, serials, dates.
    relabelled = (cwd / "p-256.crt").read_text().replace("CERTIFICATE-----", "X509 CERTIFICATE-----")
    (cwd / "x509-label.crt").write_text(relabelled)
    add("X509 CERTIFICATE label", "x509-label.crt", "p-256.key")
    add("another certificate's key", "p-256.crt", "p-384.key")
    ca_key = key(cwd, "ca", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256")
    ca = req_x509(cwd, "ca", ca_key, "-addext", "basicConstraints=critical,CA:TRUE")
    leaf_key = key(cwd, "leaf", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384")
    openssl("req", "-new", "-key", leaf_key, "-subj", "/CN=leaf.example.com", "-out", "leaf.csr", cwd=cwd)
    openssl("x509", "-req", "-in", "leaf.csr", "-CA", ca, "-CAkey", ca_key, "-set_serial", "2", "-days", "2",
            "-out", "leaf.crt", cwd=cwd)
    (cwd / "chain.crt").write_text((cwd / "leaf.crt").read_text() + (cwd / ca).read_text())
    add("leaf then CA", "chain.crt", leaf_key)
    (cwd / "reversed.crt").write_text((cwd / ca).read_text() + (cwd / "leaf.crt").read_text())
    add("CA then leaf", "reversed.crt", leaf_key)
    (cwd / "with-key.crt").write_text((cwd / "leaf.key").read_text() + (cwd / "chain.crt").read_text())
    add("a key block inside the certificate input", "with-key.crt", leaf_key)
    add("brainpool CA over a P-384 leaf", chain_under(cwd, "brainpoolP256r1"), leaf_key)
    add("negative serial", req_x509(cwd, "negative", "p-256.key", "-set_serial", "-5"), "p-256.key")
    add("serial zero", req_x509(cwd, "zero", "p-256.key", "-set_serial", "0"), "p-256.key")
    add("expired", dated(cwd, "expired", "p-256.key", days_from_now=(-30, -1)), "p-256.key")
    add("not valid yet", dated(cwd, "future", "p-256.key", days_from_now=(10, 40)), "p-256.key")
    return made


def chain_under(cwd: Path, curve: str) -> str:
    """The P-384 leaf signed again by a CA whose own key nats-server could not load (only the leaf is parsed)."""
    ca_key = key(cwd, "odd-ca", "-algorithm", "EC", "-pkeyopt", f"ec_paramgen_curve:{curve}")
    ca = req_x509(cwd, "odd-ca", ca_key, "-addext", "basicConstraints=critical,CA:TRUE")
    openssl("x509", "-req", "-in", "leaf.csr", "-CA", ca, "-CAkey", ca_key, "-set_serial", "3", "-days", "2",
            "-out", "odd-leaf.crt", cwd=cwd)
    (cwd / "odd-chain.crt").write_text((cwd / "odd-leaf.crt").read_text() + (cwd / ca).read_text())
    return "odd-chain.crt"


def dated(cwd: Path, name: str, key_file: str, days_from_now: tuple[int, int]) -> str:
    from cryptography.hazmat.primitives import serialization
    private = serialization.load_pem_private_key((cwd / key_file).read_bytes(), None)
    (cwd / f"{name}.crt").write_text(self_signed(f"{name}.example.com", days_from_now, private)[0])
    return f"{name}.crt"


def nats_server_serves(cwd: Path, cert: str, key_text: str) -> tuple[bool, str]:
    """(whether nats-server loads the pair and completes a TLS handshake with it, what it said)."""
    (cwd / "served.crt").write_text(cert)
    (cwd / "served.key").write_text(key_text)
    port = free_ports(1)[0]
    conf = cwd / "served.conf"
    conf.write_text(f'listen: "127.0.0.1:{port}"\ntls {{\n  cert_file: "{cwd / "served.crt"}"\n'
                    f'  key_file: "{cwd / "served.key"}"\n  handshake_first: true\n}}\n')
    checked = subprocess.run([nats_server_binary(), "-t", "-c", str(conf)], capture_output=True, text=True, timeout=30)
    if checked.returncode != 0:
        return False, (checked.stdout + checked.stderr).strip()
    server = subprocess.Popen([nats_server_binary(), "-c", str(conf)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                raw = socket.create_connection(("127.0.0.1", port), timeout=2)
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "nats-server did not listen"
                time.sleep(0.05)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        try:
            with context.wrap_socket(raw) as tls:
                return tls.recv(4) == b"INFO", "handshake done"
        except (ssl.SSLError, OSError) as error:
            return False, f"handshake failed: {error}"
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    return pairs(tmp_path_factory.mktemp("tls"))


def test_our_verdict_is_nats_servers_for_every_pair(made, tmp_path):
    assert len(made) >= 30
    disagreements, ours_by_name = [], {}
    for name, (cert, key_text) in made.items():
        problems, _ = pem.check_pair(cert, key_text, NAME)
        served, said = nats_server_serves(tmp_path, cert, key_text)
        ours_by_name[name] = problems
        if served != (not problems):
            disagreements.append(f"{name}: nats-server {'serves' if served else 'refuses'} it ({said}); "
                                 f"ours: {problems or 'accepted'}")
    assert not disagreements, "\n".join(disagreements)
    # Both verdicts agree that these fail, so the test knows it meets each kind of refusal.
    refused = {name for name, problems in ours_by_name.items() if problems}
    assert {"rsa-512", "rsa-pss", "p-224", "secp256k1", "brainpoolP256r1", "p-256-explicit", "ed448", "sm2", "dsa",
            "X509 CERTIFICATE label", "negative serial", "encrypted PKCS #8", "CA then leaf"} <= refused


def test_each_refusal_says_what_go_loads_and_never_shows_the_pem(made):
    for name, expected in (("brainpoolP256r1", "tlsCert: the server certificate's key is ECDSA on brainpoolP256r1, "
                                                "which nats-server (Go's crypto/tls) cannot load"),
                           ("rsa-pss", "tlsKey: the private key is RSA-PSS"),
                           ("p-256-explicit", "ECDSA on explicit curve parameters"),
                           ("p-224", "ECDSA on P-224, which nats-server loads but no TLS signature scheme serves"),
                           ("rsa-512", "RSA of 512 bits, which nats-server loads but Go's crypto/rsa refuses"),
                           ("sm2", "ECDSA on SM2"), ("ed448", "Ed448"), ("dsa", "DSA"),
                           ("X509 CERTIFICATE label", "labelled 'X509 CERTIFICATE', which nats-server (Go's "
                                                      "crypto/tls) skips"),
                           ("encrypted legacy PEM", "tlsKey: the private key is encrypted")):
        cert, key_text = made[name]
        problems, _ = pem.check_pair(cert, key_text, NAME)
        text = "\n".join(problems)
        assert expected in text, (name, text)
        assert "allowed: " in text and "MII" not in text and "BEGIN" not in text.replace("`", "")


def test_certificates_out_of_their_dates_warn_and_are_served(made):
    for name, words in (("expired", "the server certificate expired on "), ("not valid yet", "is not valid before ")):
        problems, warnings = pem.check_pair(*made[name], NAME)
        assert not problems and len(warnings) == 1 and words in warnings[0], warnings
    assert pem.check_pair(*made["leaf then CA"], NAME) == ([], [])
