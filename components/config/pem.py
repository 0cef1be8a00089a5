"""The serverTls certificate and key, held to what nats-server can load and serve with.

nats-server loads them with Go's crypto/tls X509KeyPair (crypto/tls/tls.go): the certificate input's
`CERTIFICATE` blocks (others are skipped, so an `X509 CERTIFICATE` block is lost), the first block of
the key input labelled `PRIVATE KEY` or `... PRIVATE KEY`, parsed as PKCS #1, PKCS #8 or SEC 1
(crypto/x509: only RSA, ECDSA on a named P-224/256/384/521 curve and Ed25519 keys), and the leaf
certificate (x509.ParseCertificate: no negative serial number). A handshake then needs a signature
scheme for the key: none exists for P-224, and crypto/rsa refuses keys under 1024 bits. `cryptography`
reads much more (brainpool, secp256k1, explicit curves, DSA, Ed448, RSA-PSS), so the algorithm is read
from the DER here, by Go's rules. Problems are lines that name the key and never show the value."""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime
import re
import warnings
from typing import Callable

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.hazmat.primitives import serialization

USABLE = "RSA of 1024 bits or more, ECDSA on P-256, P-384 or P-521 (a named curve), or Ed25519"
MIN_RSA_BITS = 1024
_BLOCK = re.compile(r"-----BEGIN ([^\n-]*)-----\r?\n(.*?)-----END \1-----", re.S)
_ALGORITHMS = {
    "1.2.840.113549.1.1.1": "RSA", "1.2.840.113549.1.1.10": "RSA-PSS", "1.2.840.10040.4.1": "DSA",
    "1.2.840.10045.2.1": "ECDSA", "1.3.101.112": "Ed25519", "1.3.101.113": "Ed448", "1.3.101.110": "X25519",
    "1.3.101.111": "X448",
}
_CURVES = {
    "1.2.840.10045.3.1.7": "P-256", "1.3.132.0.34": "P-384", "1.3.132.0.35": "P-521", "1.3.132.0.33": "P-224",
    "1.3.132.0.10": "secp256k1", "1.2.156.10197.1.301": "SM2",
    **{f"1.3.36.3.3.2.8.1.1.{n}": f"brainpoolP{bits}r1"
       for n, bits in ((1, 160), (3, 192), (5, 224), (7, 256), (9, 320), (11, 384), (13, 512))},
}
_SERVED_CURVES = ("P-256", "P-384", "P-521")
Name = Callable[[str], str]


def check_pair(cert: str | None, key: str | None, name: Name) -> tuple[list[str], list[str]]:
    """(problems, warnings) of a certificate chain and private key, each a PEM text, or None where the
    value is not known here (a secret Output, an encrypted config value): that half is skipped."""
    problems: list[str] = []
    chain = _chain(cert, name, problems) if cert is not None else None
    private = _private_key(key, name, problems) if key is not None else None
    if chain and private is not None:
        spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        if chain[0].public_key().public_bytes(*spki) != private.public_key().public_bytes(*spki):
            problems.append(f"{name('tlsKey')}: does not belong to the first certificate of tlsCert "
                            f"({_cut(chain[0].subject.rfc4514_string())}); allowed: the private key of the server "
                            f"certificate, which comes first in the chain")
    return problems, _dates(name, chain or [])


def _chain(text: str, name: Name, problems: list[str]) -> list[x509.Certificate] | None:
    """The chain, leaf first, when Go would load it (checked by its rules), else None."""
    allowed = (f"with serverTls, a secret chain of PEM `CERTIFICATE` blocks, server certificate first, set with "
               f"`pulumi config set --secret tlsCert < cert.pem`")
    blocks = [(label, body) for label, body in _BLOCK.findall(text) if "CERTIFICATE" in label]
    others = sorted({label for label, _ in blocks if label != "CERTIFICATE"})
    if others:
        problems.append(f"{name('tlsCert')}: holds a PEM block labelled {_cut(', '.join(others))!r}, which nats-server "
                        f"(Go's crypto/tls) skips, losing that certificate; allowed: {allowed} (the DER inside is the "
                        f"same: relabel it)")
        return None
    try:
        with _quiet():
            chain = x509.load_pem_x509_certificates(text.encode())
        algorithm = _algorithm(*_tbs_spki_algorithm(_der(blocks[0][1])))
    except (ValueError, UnsupportedAlgorithm, IndexError) as error:
        problems.append(f"{name('tlsCert')}: not a PEM certificate chain ({_reason(error)}); allowed: {allowed}")
        return None
    refusal = _algorithm_refusal(*algorithm, lambda: chain[0].public_key())
    if refusal:
        problems.append(f"{name('tlsCert')}: the server certificate's key is {refusal}; allowed: {USABLE}")
        return None
    with _quiet():
        negative = chain[0].serial_number < 0
    if negative:
        problems.append(f"{name('tlsCert')}: the server certificate has a negative serial number, which Go's "
                        f"crypto/x509 refuses; allowed: a certificate with a positive serial number")
        return None
    return chain


def _private_key(text: str, name: Name, problems: list[str]):
    """The key Go would take (the first `PRIVATE KEY` or `... PRIVATE KEY` block), when it can, else None."""
    allowed = ("with serverTls, a secret unencrypted PEM private key, set with "
               "`pulumi config set --secret tlsKey < key.pem`")
    block = next((m for m in _BLOCK.finditer(text)
                  if m.group(1) == "PRIVATE KEY" or m.group(1).endswith(" PRIVATE KEY")), None)
    if block is None:
        problems.append(f"{name('tlsKey')}: no PEM block labelled `PRIVATE KEY` or `... PRIVATE KEY`; allowed: "
                        f"{allowed}")
        return None
    try:
        with _quiet():
            private = serialization.load_pem_private_key(block.group(0).encode(), password=None)
    except TypeError:
        problems.append(f"{name('tlsKey')}: the private key is encrypted; allowed: an unencrypted PEM private key "
                        f"(nats-server cannot ask for its passphrase)")
        return None
    except (ValueError, UnsupportedAlgorithm) as error:
        algorithm = _key_algorithm_or_none(block.group(2))
        refusal = algorithm and _algorithm_refusal(*algorithm, lambda: None)
        problems.append(f"{name('tlsKey')}: " + (f"the private key is {refusal}; allowed: {USABLE}" if refusal else
                                                 f"not a PEM private key ({_reason(error)}); allowed: {allowed}"))
        return None
    algorithm = _key_algorithm_or_none(block.group(2))
    refusal = _algorithm_refusal(*algorithm, lambda: private) if algorithm else \
        "in a form Go's crypto/x509 does not read (not PKCS #1, PKCS #8 or SEC 1)"
    if refusal:
        problems.append(f"{name('tlsKey')}: the private key is {refusal}; allowed: {USABLE}")
        return None
    return private


def _algorithm_refusal(algorithm: str, curve: str | None, key: Callable[[], object]) -> str | None:
    """Why nats-server cannot serve with a key of this algorithm (in words), or None."""
    if algorithm == "RSA":
        bits = getattr(key(), "key_size", MIN_RSA_BITS)
        return None if bits >= MIN_RSA_BITS else \
            f"RSA of {bits} bits, which nats-server loads but Go's crypto/rsa refuses to sign with"
    if algorithm == "Ed25519" or (algorithm == "ECDSA" and curve in _SERVED_CURVES):
        return None
    if algorithm == "ECDSA" and curve == "P-224":
        return "ECDSA on P-224, which nats-server loads but no TLS signature scheme serves"
    what = f"ECDSA on {curve}" if algorithm == "ECDSA" else algorithm
    return f"{what}, which nats-server (Go's crypto/tls) cannot load"


# ---------------------------------------------------------------- the algorithm, read from DER as Go reads it

def _algorithm(der: bytes, identifier: tuple[int, int, int, int]) -> tuple[str, str | None]:
    """(algorithm, curve) of an AlgorithmIdentifier (of a certificate's key, or of a PKCS #8 key)."""
    parts = _children(der, identifier[2], identifier[3])
    algorithm = _ALGORITHMS.get(_oid(der, parts[0]), f"an unknown algorithm ({_oid(der, parts[0])})")
    params = parts[1] if len(parts) > 1 else None
    return algorithm, _curve(der, params) if algorithm == "ECDSA" else None


def _curve(der: bytes, params) -> str:
    if params is None or params[0] != 0x06:
        return "explicit curve parameters" if params is not None and params[0] == 0x30 else "no named curve"
    oid = _oid(der, params)
    return _CURVES.get(oid, f"the curve {oid}")


def _key_algorithm(der: bytes) -> tuple[str, str | None]:
    """A private key's algorithm, by its structure: PKCS #1 (RSA), PKCS #8, or SEC 1 (EC)."""
    top = _children(der, *_content(der, 0))
    if top[1][0] == 0x02:
        return "RSA", None
    if top[1][0] == 0x30:
        return _algorithm(der, top[1])
    params = next((c for c in top[2:] if c[0] == 0xA0), None)
    return "ECDSA", _curve(der, _children(der, params[2], params[3])[0] if params else None)


def _key_algorithm_or_none(body: str) -> tuple[str, str | None] | None:
    try:
        return _key_algorithm(_der(body))
    except (ValueError, IndexError):
        return None


def _der(body: str) -> bytes:
    """A PEM block's body as DER (one with headers, as a legacy encrypted key has, is not)."""
    if ":" in body:
        raise ValueError("the PEM block has headers")
    try:
        return base64.b64decode(re.sub(r"\s", "", body), validate=True)
    except binascii.Error as error:
        raise ValueError(f"bad base64: {error}") from None


def _tbs_spki_algorithm(cert: bytes) -> tuple[bytes, tuple[int, int, int, int]]:
    """The AlgorithmIdentifier of a certificate's key: in tbsCertificate's 6th field after the optional
    version, the SubjectPublicKeyInfo."""
    tbs = _children(cert, *_content(cert, 0))[0]
    fields = _children(cert, tbs[2], tbs[3])
    fields = fields[1:] if fields[0][0] == 0xA0 else fields
    return cert, _children(cert, fields[5][2], fields[5][3])[0]


def _content(der: bytes, at: int) -> tuple[int, int]:
    """(start, end) of the content of the TLV at `at`."""
    return _tlv(der, at)[2:]


def _tlv(der: bytes, at: int) -> tuple[int, int, int, int]:
    """(tag, at, content start, content end) of the DER TLV at `at`."""
    tag, length, start = der[at], der[at + 1], at + 2
    if length & 0x80:
        count = length & 0x7F
        if not 0 < count <= 4:
            raise ValueError("a DER length Go would not read")
        length, start = int.from_bytes(der[start:start + count], "big"), start + count
    if start + length > len(der):
        raise ValueError("a DER length past the end")
    return tag, at, start, start + length


def _children(der: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    children, at = [], start
    while at < end:
        child = _tlv(der, at)
        children.append(child)
        at = child[3]
    return children


def _oid(der: bytes, tlv: tuple[int, int, int, int]) -> str:
    data = der[tlv[2]:tlv[3]]
    numbers, value = [], 0
    for byte in data:
        value = value << 7 | byte & 0x7F
        if not byte & 0x80:
            numbers.append(value)
            value = 0
    first = min(numbers[0] // 40, 2) if numbers else 0
    return ".".join(str(n) for n in [first, numbers[0] - 40 * first, *numbers[1:]]) if numbers else ""


# ---------------------------------------------------------------- dates and words

def _dates(name: Name, chain: list[x509.Certificate]) -> list[str]:
    """Certificates out of their validity period: nats-server serves them, clients refuse them."""
    now = datetime.datetime.now(datetime.timezone.utc)
    found = []
    for place, cert in enumerate(chain):
        which = "the server certificate" if place == 0 else f"certificate {place + 1} of the chain"
        after, before = (f"{when:%Y-%m-%d %H:%M} UTC" for when in (cert.not_valid_after_utc, cert.not_valid_before_utc))
        if cert.not_valid_after_utc < now:
            found.append(f"{name('tlsCert')}: {which} expired on {after}; clients will refuse it")
        elif cert.not_valid_before_utc > now:
            found.append(f"{name('tlsCert')}: {which} is not valid before {before}; clients will refuse it "
                         f"until then")
    return found


@contextlib.contextmanager
def _quiet():
    """cryptography's deprecation warnings (a DSA key, a negative serial): refused here in our own words."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        yield


def _cut(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _reason(error: Exception) -> str:
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return _cut(text)
