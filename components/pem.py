"""The serverTls certificate and key, parsed for real: a PEM chain whose first certificate is the
server's, and the unencrypted private key that belongs to it. Problems are returned as lines that
name the key and never show the value."""

from __future__ import annotations

from typing import Any, Callable

def check_pair(cert: Any, key: Any, name: Callable[[str], str]) -> list[str]:
    """Problems with a (certificate chain, private key) pair; values that are not strings yet (secret
    Outputs, resolved later) are skipped, and so is the match when either half is unreadable."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    problems: list[str] = []
    chain = private = None
    if isinstance(cert, str):
        try:
            chain = x509.load_pem_x509_certificates(cert.encode())
        except ValueError as error:
            problems.append(f"{name('tlsCert')}: not a PEM certificate chain ({_reason(error)}); allowed: with "
                            f"serverTls, a secret PEM chain, server certificate first, set with "
                            f"`pulumi config set --secret tlsCert < cert.pem`")
    elif not _opaque(cert):
        problems.append(f"{name('tlsCert')}: missing; allowed: with serverTls, a secret PEM certificate chain, set "
                        f"with `pulumi config set --secret tlsCert < cert.pem`")
    if isinstance(key, str):
        try:
            private = serialization.load_pem_private_key(key.encode(), password=None)
        except TypeError:
            problems.append(f"{name('tlsKey')}: the private key is encrypted; allowed: an unencrypted PEM "
                            f"private key (nats-server cannot ask for its passphrase)")
        except ValueError as error:
            problems.append(f"{name('tlsKey')}: not a PEM private key ({_reason(error)}); allowed: with serverTls, "
                            f"a secret PEM private key, set with `pulumi config set --secret tlsKey < key.pem`")
    elif not _opaque(key):
        problems.append(f"{name('tlsKey')}: missing; allowed: with serverTls, a secret PEM private key, set "
                        f"with `pulumi config set --secret tlsKey < key.pem`")
    if chain and private is not None:
        spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        if chain[0].public_key().public_bytes(*spki) != private.public_key().public_bytes(*spki):
            problems.append(f"{name('tlsKey')}: does not belong to the first certificate of tlsCert "
                            f"({chain[0].subject.rfc4514_string()}); allowed: the private key of the server "
                            f"certificate, which comes first in the chain")
    return problems


def _opaque(value: Any) -> bool:
    from .settings import OPAQUE
    return value is OPAQUE


def _reason(error: Exception) -> str:
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text[:120]
