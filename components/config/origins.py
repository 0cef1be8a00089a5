"""WebSocket origins as nats-server compares them, written in the form browsers send.

nats-server (server/websocket.go) parses each `allowed_origins` entry with Go's net/url when it starts
(the pinned 2.12.8 refuses to start on one it cannot parse; `-t` does not check them), and lets a page
in only when the Origin header's lowercased host, its scheme and its port (default 80/443) equal an
entry's, compared as text. So an entry a browser never sends (a wildcard, a Unicode host, a port
written `08080`) silently lets no page in. Each origin is therefore parsed here by Go's rules (net/url:
parseHost, validOptionalPort, the host characters of shouldEscape) and written as a browser serialises
it (the URL Standard: IDNA UTS #46 non-transitional, canonical IPv4 and IPv6, no default port).
tests/servers/local/test_websocket_origins.py holds both to the pinned nats-server."""

from __future__ import annotations

import ipaddress
import re

import idna

DEFAULT_PORTS = {"http": 80, "https": 443}
# Bytes Go's url parser takes in a host (shouldEscape in encodeHost mode), besides letters and digits.
_GO_HOST_PUNCTUATION = set("-_.~!$&'()*+,;=:[]<>\"")
_LABEL = re.compile(r"[a-z0-9_-]{1,63}")
_NUMERIC = re.compile(r"(0[xX][0-9a-fA-F]*|\d+)")


class OriginError(ValueError):
    """Why an origin cannot be used; the words follow 'is not valid (...)'."""


def normalise(text: str) -> str:
    """`text` as the Origin header a browser sends for that page, or OriginError."""
    scheme, sep, rest = text.partition("://")
    if not sep or scheme.lower() not in DEFAULT_PORTS:
        raise OriginError("not http:// or https://")
    scheme = scheme.lower()
    authority, slash, path = rest.partition("/")
    if path or "?" in authority or "#" in authority:
        raise OriginError("an origin has no path, query or fragment")
    if "@" in authority:
        raise OriginError("it carries credentials; an origin never does")
    host, port = _split_port(authority)
    host = _host(host)
    if port is None or port == DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def _split_port(authority: str) -> tuple[str, int | None]:
    colon = authority.rfind(":")
    if colon <= authority.rfind("]"):  # no port: an IPv6 literal's colons sit inside [...]
        return authority, None
    host, port_text = authority[:colon], authority[colon + 1:]
    if not re.fullmatch(r"\d{1,5}", port_text) or not 1 <= int(port_text) <= 65535:
        raise OriginError(f"port {port_text!r} is not 1..65535" if port_text else "':' with no port after it")
    return host, int(port_text)


def _host(host: str) -> str:
    if not host:
        raise OriginError("no host")
    if "*" in host:
        raise OriginError("nats-server compares origins literally, so a wildcard matches no page; "
                          "list each origin")
    if "%" in host:
        raise OriginError("an IPv6 zone; browsers never send one" if host.startswith("[") else
                          "a %-escape in the host; write the name itself (a Unicode name is converted)")
    bad = sorted({c for c in host if c < "\x80" and not c.isalnum() and c not in _GO_HOST_PUNCTUATION})
    if bad:
        raise OriginError(f"Go's URL parser refuses {''.join(bad)!r} in a host, so nats-server drops the entry")
    if host.startswith("[") and host.endswith("]"):
        return _ipv6(host[1:-1])
    if host.isascii():
        return _ascii_host(host.lower())
    try:
        return idna.encode(host, uts46=True, transitional=False).decode()
    except idna.IDNAError as error:
        raise OriginError(f"not an internationalised domain name a browser can send ({error})") from None


def _ascii_host(host: str) -> str:
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if _NUMERIC.fullmatch(labels[-1]):
        # Browsers read a host whose last label is a number as an IPv4 address and send it dotted.
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            raise OriginError("browsers read it as an IPv4 address and send it as a.b.c.d; write it so") from None
    if not all(_LABEL.fullmatch(label) for label in labels) or len(host) > 253:
        raise OriginError("not a host name (labels of letters, digits, '-' and '_', 1..63 characters)")
    return host


def _ipv6(text: str) -> str:
    """The address as browsers write it: lowercase hex, the longest run of 2+ zero groups as '::'."""
    try:
        packed = ipaddress.IPv6Address(text).packed
    except ValueError:
        raise OriginError("not an IPv6 address inside [...]") from None
    groups = [int.from_bytes(packed[i:i + 2], "big") for i in range(0, 16, 2)]
    best, start = (0, 0), None
    for i, group in enumerate(groups + [1]):
        if group == 0 and start is None:
            start = i
        elif group and start is not None:
            best = max(best, (i - start, -start))
            start = None
    length, first = best[0], -best[1]
    if length < 2:
        return "[" + ":".join(f"{g:x}" for g in groups) + "]"
    head = ":".join(f"{g:x}" for g in groups[:first])
    tail = ":".join(f"{g:x}" for g in groups[first + length:])
    return f"[{head}::{tail}]"
