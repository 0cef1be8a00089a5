"""The syntax of NATS values a JetStream asset is declared with (pure): subjects and their overlap, Go
durations, byte sizes and asset names, each as nats-server reads them. Parsers return the value, or None
with the reason (what is wrong, then what is allowed) appended to `problems`."""

from __future__ import annotations

import re
from typing import Any

MAX_NAME = 255  # nats-server JSMaxNameLen
MAX_INT64 = 2**63 - 1
MAX_INT32 = 2**31 - 1

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_NANOS = {"ns": 1, "us": 10**3, "µs": 10**3, "μs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}
_SIZE = re.compile(r"(\d+)\s*([KMGTP]?)(i?)B?", re.I)
_BUCKET = re.compile(r"[a-zA-Z0-9_-]+")  # nats.go validBucketRe: KV and object store buckets

DURATION_ALLOWED = "a Go duration such as '72h', '90m', '1h30m', '500ms' or '0'"


def integer(value: Any) -> int | None:
    """An integer given as an int, an integral float (how Pulumi passes numbers) or decimal text."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"[+-]?\d{1,19}", value.strip()):
        return int(value)
    return None


# ---------------------------------------------------------------- subjects

def subject_problem(subject: Any) -> str | None:
    """Why `subject` is no NATS subject a stream may hold (nats-server sublist.go isValidSubject), or None:
    tokens separated by '.', none empty, no whitespace, '*' a whole token, '>' a whole and last token."""
    if not isinstance(subject, str) or not subject:
        return "is not a subject"
    for i, token in enumerate(tokens := subject.split(".")):
        if not token:
            return "has an empty token"
        if any(c in token for c in " \t\r\n\f\0"):
            return "holds whitespace"
        if token == ">" and i != len(tokens) - 1:
            return "has '>' before its last token"
        if len(token) > 1 and ("*" in token or ">" in token):
            return f"has a wildcard inside the token {token!r}"
    return None


SUBJECT_ALLOWED = ("tokens separated by '.', none empty, without whitespace; '*' as a whole token, '>' as "
                   "the whole last token (e.g. 'orders.*.created', 'orders.>')")


def overlap(a: str, b: str) -> bool:
    """Whether some subject a message could be published on matches both `a` and `b`."""
    return _overlap(a.split("."), b.split("."))


def subset(a: str, b: str) -> bool:
    """Whether every subject `a` matches, `b` matches too."""
    return _subset(a.split("."), b.split("."))


def _subset(a: list[str], b: list[str]) -> bool:
    if not b:
        return not a
    if b[0] == ">":
        return bool(a)
    if not a or a[0] == ">" or a[0] == "*" and b[0] != "*" or b[0] not in ("*", a[0]):
        return False
    return _subset(a[1:], b[1:])


def _overlap(a: list[str], b: list[str]) -> bool:
    if not a or not b:
        return not a and not b
    if a[0] == ">" or b[0] == ">":
        return True  # '>' takes one token or more; the other has at least one left
    if a[0] != b[0] and "*" not in (a[0], b[0]):
        return False
    return _overlap(a[1:], b[1:])


# ---------------------------------------------------------------- durations (nanoseconds)

def parse_duration(text: Any) -> int | None:
    """Nanoseconds of a Go duration (time.ParseDuration) that is not negative, or None."""
    if not isinstance(text, str):
        return None
    body = text[1:] if text.startswith("+") else text
    if body == "0":
        return 0
    if not body or not re.fullmatch(f"(?:{_DURATION_PART.pattern})+", body):
        return None
    nanos = sum(round(float(m.group(1)) * _NANOS[m.group(2)]) for m in _DURATION_PART.finditer(body))
    return nanos if nanos <= MAX_INT64 else None


def format_duration(nanos: int) -> str:
    """Go duration text for `nanos`, whole units only: '72h', '1h30m', '2m30s', '1500ms'."""
    if nanos == 0:
        return "0"
    parts = []
    for unit in ("h", "m"):
        whole, nanos = divmod(nanos, _NANOS[unit])
        if whole:
            parts.append(f"{whole}{unit}")
    if nanos:
        unit = next(u for u in ("s", "ms", "us", "ns") if nanos % _NANOS[u] == 0)
        parts.append(f"{nanos // _NANOS[unit]}{unit}")
    return "".join(parts)


# ---------------------------------------------------------------- sizes (bytes)

SIZE_ALLOWED = "a number of bytes, or text such as '512MB', '1GiB', '10K' (K, M, G, T, P: powers of 1024)"


def parse_size(value: Any) -> int | None:
    """Bytes from an integer or text with a unit (as natscli reads sizes: powers of 1024), or None."""
    number = integer(value)
    if number is not None:
        return number
    match = _SIZE.fullmatch(value.strip()) if isinstance(value, str) else None
    if not match:
        return None
    power = "KMGTP".find(match.group(2).upper()) + 1 if match.group(2) else 0
    return int(match.group(1)) * 1024**power


# ---------------------------------------------------------------- names

def name_problem(name: Any, bucket: bool) -> str | None:
    """Why `name` cannot name a stream or consumer (nats-server isValidAssetName), or a KV or object
    store bucket (nats.go validBucketRe), or None."""
    if not isinstance(name, str) or not name:
        return "is not a name"
    if len(name) > MAX_NAME:
        return f"is longer than {MAX_NAME} characters"
    if bucket and not _BUCKET.fullmatch(name):
        return "holds a character other than letters, digits, '_' and '-'"
    if not bucket and any(c in name for c in " \t\r\n\f.*>\\/"):
        return "holds whitespace, '.', '*', '>', '/' or '\\'"
    return None


def name_allowed(bucket: bool) -> str:
    if bucket:
        return f"letters, digits, '_' and '-', at most {MAX_NAME} characters"
    return f"at most {MAX_NAME} characters without whitespace, '.', '*', '>', '/' or '\\'"
